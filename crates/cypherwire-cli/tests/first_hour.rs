//! What a new user sees in the first hour, with the real binaries as separate processes: a
//! mistyped key, a ban, a kick from the console, the chat host's kick, ban and unban, and
//! error lines that say each thing once.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::Receiver;

use common::{BIN, KEY, Served, expect_line, line_reader, temp_file};

const WRONG: &str = "3ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U\n";

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_owned()
}

#[test]
fn a_mistyped_key_costs_one_attempt_and_a_ban_says_until_when() {
    let served = Served::start("psk-first-hour", &["--ban-attempts", "2"]);
    let wrong = temp_file("psk-wrong", WRONG);
    let right = temp_file("psk-right", KEY);
    let o = served.request(wrong.to_str().unwrap());
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        "error: authentication failed (wrong key or password?)"
    );
    // One typo is one failed attempt: the right key still works.
    let o = served.request(right.to_str().unwrap());
    assert!(o.status.success(), "{}", stderr(&o));
    // Two typos within the window ban the address (--ban-attempts 2): the right key is then
    // refused, and told so, with the ban's end.
    for _ in 0..2 {
        assert_eq!(
            served.request(wrong.to_str().unwrap()).status.code(),
            Some(3)
        );
    }
    let o = served.request(right.to_str().unwrap());
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.starts_with("error: banned by the server for another "),
        "{err}"
    );
    served.quit();
}

#[test]
fn a_kick_from_the_console_ends_the_clients_program() {
    let mut served = Served::start("psk-kick", &[]);
    let key = temp_file("psk-watch", KEY);
    let watcher = Command::new(BIN)
        .args(["watch", "--connect", &served.addr, "--psk-file"])
        .arg(&key)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once it is connected, its id is listed.
    let mut connected = false;
    for _ in 0..100 {
        writeln!(served.input, "list").unwrap();
        if expect_line(&served.out, |l| l.ends_with(" connected")) == "1 connected" {
            connected = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(connected, "the watcher never connected");
    let line = expect_line(&served.out, |l| l.starts_with('#'));
    let id = line.split(' ').next().unwrap().to_owned();
    writeln!(served.input, "kick {id}").unwrap();
    expect_line(&served.out, |l| l == format!("kicked {id}"));
    let o = watcher.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.ends_with("error: kicked by the server: kicked by the operator"),
        "{err}"
    );
    // It did not come back.
    writeln!(served.input, "list").unwrap();
    expect_line(&served.out, |l| l == "0 connected");
    served.quit();
}

#[test]
fn error_lines_say_each_thing_once() {
    // An address of its own in 127.0.0.0/8: once released, no other test's `127.0.0.1:0` listener
    // can be given its port, so "nobody listening" stays true.
    let taken = std::net::TcpListener::bind("127.0.0.9:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let psk = temp_file("psk-taken", KEY);
    let o = Command::new(BIN)
        .args(["serve", "--listen", &addr, "--psk-file"])
        .arg(&psk)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(err.matches("Address already in use").count(), 1, "{err}");
    // A bare word is not JSON: the error says how to send it as a string.
    let o = Command::new(BIN)
        .args([
            "request",
            "--psk-file",
            psk.to_str().unwrap(),
            "/ECHO",
            "ANY",
            "hello",
        ])
        .output()
        .unwrap();
    assert_eq!(
        stderr(&o),
        "error: not valid JSON: hello (to send the string, quote it as JSON: '\"hello\"')"
    );
    // Nobody listening: it says it could not connect, and why.
    drop(taken);
    let o = Command::new(BIN)
        .args([
            "request",
            "--connect",
            &addr,
            "--psk-file",
            psk.to_str().unwrap(),
        ])
        .args(["/ECHO", "ANY"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.starts_with("error: cannot reach the server (cannot connect: ")
            && err.ends_with("gave up reconnecting after 3 attempts"),
        "{err}"
    );
}

impl Drop for Chat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `chat` child: its stdin and stdout lines.
struct Chat {
    child: Child,
    input: std::process::ChildStdin,
    out: Receiver<String>,
}

impl Chat {
    fn start(args: &[&str], file: &std::path::Path) -> Self {
        let mut child = Command::new(BIN)
            .arg("chat")
            .args(args)
            .arg("--password-file")
            .arg(file)
            .args(["--heartbeat-ms", "300"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = line_reader(child.stdout.take().unwrap());
        let input = child.stdin.take().unwrap();
        Self { child, input, out }
    }

    fn say(&mut self, line: &str) {
        writeln!(self.input, "{line}").unwrap();
    }
}

#[test]
fn the_chat_hosts_kick_ban_and_unban_reach_the_member() {
    let verifier = cypherwire::session::PasswordVerifier::create(
        "network password",
        cypherwire::session::Argon2Cost::new(64, 1, 1),
    )
    .unwrap();
    let host_file = temp_file("chat-host-verifier", verifier.to_phc().as_str());
    let join_file = temp_file("chat-member-password", "network password\n");
    let mut host = Chat::start(&["host", "--listen", "127.0.0.1:0"], &host_file);
    let first = expect_line(&host.out, |l| l.starts_with("listening on "));
    let addr = first.split(' ').nth(2).unwrap().to_owned();
    let join = |host: &Chat| {
        let member = Chat::start(&["join", "--auth", &addr], &join_file);
        let joined = expect_line(&member.out, |l| l.starts_with("joined as "));
        let id = joined.split(' ').nth(2).unwrap().to_owned();
        expect_line(&host.out, |l| l.starts_with(&format!("* {id} joined")));
        (member, id)
    };

    // A kick by a unique prefix of the id: the member is told, exits non-zero, and stays out.
    let (mut member, id) = join(&host);
    host.say(&format!("/msg {} hello", &id[..4]));
    expect_line(&host.out, |l| l == format!("(sent to {id})"));
    expect_line(&member.out, |l| l.ends_with("→ you] hello"));
    host.say(&format!("/kick {}", &id[..4]));
    expect_line(&host.out, |l| l == format!("kicked {id}"));
    expect_line(&member.out, |l| l.starts_with("* the host removed you"));
    let status = member.child.wait().unwrap();
    assert_eq!(status.code(), Some(5));
    // Several heartbeats later it is still not listed.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    host.say("/peers");
    expect_line(&host.out, |l| l == "(1 members)");

    // A ban closes the member's link (it is told, and exits with the ban's code); /bans shows
    // it by id with its end; /unban lifts it.
    let (mut member, id) = join(&host);
    host.say(&format!("/ban {id} 5"));
    expect_line(&host.out, |l| l == format!("banned {id} for 5 min"));
    expect_line(&member.out, |l| l.starts_with("* the host banned you"));
    let status = member.child.wait().unwrap();
    assert_eq!(status.code(), Some(4));
    host.say("/bans");
    let line = expect_line(&host.out, |l| l.starts_with(&id));
    assert!(
        line.contains(" until ")
            && (line.ends_with(" UTC (in 5 min)") || line.contains(" UTC (in 4 min 5")),
        "{line}"
    );
    host.say(&format!("/unban {}", &id[..6]));
    expect_line(&host.out, |l| l == "unbanned");
    host.say("/bans");
    expect_line(&host.out, |l| l == "no bans");
    host.say("/exit");
    expect_line(&host.out, |l| l == "left");
    assert!(host.child.wait().unwrap().success());
}
