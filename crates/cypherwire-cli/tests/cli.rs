//! The `cypherwire` command end to end, as a user runs it: separate processes on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};

mod common;

use common::{BIN, Served, expect_line, line_reader, temp_file};

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

#[test]
fn keygen_prints_keys_in_their_text_forms() {
    let o = run(&["keygen", "--identity"]);
    assert!(o.status.success());
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    cypherwire::session::Psk::parse(lines[0]).unwrap();
    let id = cypherwire::session::IdentityKey::parse(lines[1]).unwrap();
    assert_eq!(id.public().to_text(), lines[2]);
    // Fresh every time.
    assert_ne!(stdout(&run(&["keygen"])), lines[0]);
}

#[test]
fn hash_password_reads_stdin_and_prints_a_verifier() {
    let mut child = Command::new(BIN)
        .args(["hash-password", "--memory-kib", "64", "--passes", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"network password\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    let phc = stdout(&o);
    assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{phc}");
    cypherwire::session::PasswordVerifier::parse(&phc).unwrap();
    // Never from the command line: an empty stdin is an error.
    let mut child = Command::new(BIN)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdin.take());
    let o = child.wait_with_output().unwrap();
    assert!(!o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        "error: empty password"
    );
}

#[test]
fn serve_and_request_in_separate_processes() {
    // CYPHER_PROTOCOL's key string works as the PSK file's content.
    let psk = temp_file("psk", "2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U\n");
    let mut server = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--psk-file",
            psk.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("readiness line")
        .to_owned();
    let psk_path = psk.to_str().unwrap().to_owned();
    let request = |args: &[&str]| {
        let mut all = vec!["request", "--connect", &addr, "--psk-file", &psk_path];
        all.extend_from_slice(args);
        run(&all)
    };
    let o = request(&["/NUMBER", "UPDATE", "5"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(stdout(&o), "\"UPDATED\"");
    assert_eq!(stdout(&request(&["/NUMBER", "READ"])), "5");
    request(&["/SEQUENCE", "UPDATE", "\"a\""]);
    request(&["/SEQUENCE", "UPDATE", "[1,2]"]);
    assert_eq!(stdout(&request(&["/SEQUENCE", "READ"])), "[\"a\",[1,2]]");
    let o = request(&[
        "/ECHO",
        "ANY",
        "{\"k\":[true,null,1.5]}",
        "--metadata",
        "{\"m\":1}",
    ]);
    assert_eq!(stdout(&o), "{\"k\":[true,null,1.5]}");
    // Errors are one line and a non-zero exit code.
    let o = request(&["/NOWHERE", "GET"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: server answered NOT_FOUND (2)"),
        "{err}"
    );
    let o = request(&["/ECHO", "X", "{not json"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("error: not valid JSON"));
    // A wrong key: refused, clear error, non-zero exit.
    let wrong = temp_file("wrong", "another-passphrase-of-32-chars!!\n");
    let o = run(&[
        "request",
        "--connect",
        &addr,
        "--psk-file",
        wrong.to_str().unwrap(),
        "--timeout",
        "5",
        "/NUMBER",
        "READ",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error:"), "{err}");
    // SIGTERM: graceful shutdown, exit 0.
    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(server.wait().unwrap().success());
}

#[test]
fn demo_runs_and_exits_zero() {
    let o = run(&["demo", "--requests", "2000"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = stdout(&o);
    assert!(out.contains("0 lost"), "{out}");
    assert!(out.contains("summary"), "{out}");
}

#[test]
fn every_subcommand_has_help_and_bad_usage_fails() {
    for sub in [
        "demo",
        "keygen",
        "hash-password",
        "serve",
        "request",
        "bench",
    ] {
        let o = run(&[sub, "--help"]);
        assert!(o.status.success(), "{sub}");
        assert!(stdout(&o).contains("Usage"), "{sub}");
    }
    assert!(!run(&["no-such-command"]).status.success());
    let o = run(&["serve", "--psk-file", "/nonexistent/key"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("error: cannot read /nonexistent/key"));
}

#[test]
fn bench_prints_figures() {
    let o = run(&[
        "bench",
        "--requests",
        "300",
        "--bulk-mib",
        "4",
        "--handshakes",
        "20",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = stdout(&o);
    // Every figure has a value, a plain-TCP baseline and a positive ratio.
    for figure in [
        "sequential round trips",
        "sequential p50 latency",
        "64 requests in flight",
        "bulk, 64 KiB messages",
        "PSK handshake + 1 round trip",
    ] {
        let row = out
            .lines()
            .find(|l| l.starts_with(&format!("| {figure} |")))
            .unwrap_or_else(|| panic!("no row {figure:?} in {out}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let ratio: f64 = cells[4].parse().unwrap_or_else(|_| panic!("{row}"));
        assert!(ratio > 0.0 && ratio.is_finite(), "{row}");
        assert_ne!(cells[3], "—", "{row}");
    }
    // Progress bars are drawn only on a terminal: not into a pipe or a file.
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("[##"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!out.contains("heartbeat RTT: not measured"), "{out}");
    // 0 skips the bulk and handshake figures.
    let o = run(&[
        "bench",
        "--requests",
        "100",
        "--bulk-mib",
        "0",
        "--handshakes",
        "0",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = stdout(&o);
    assert!(out.contains("| sequential round trips |"), "{out}");
    assert!(
        !out.contains("| bulk,") && !out.contains("| PSK handshake"),
        "{out}"
    );
    // --connect without a key file is a usage error.
    assert!(!run(&["bench", "--connect", "127.0.0.1:1"]).status.success());
}

#[test]
fn bench_against_a_running_server_says_what_it_does_not_measure() {
    let server = Served::start("psk-bench", &[]);
    let key = temp_file("psk-bench", common::KEY);
    let bench = |extra: &[&str]| {
        let mut args = vec!["bench", "--connect", &server.addr, "--psk-file"];
        args.push(key.to_str().unwrap());
        args.extend_from_slice(&["--requests", "200"]);
        args.extend_from_slice(extra);
        run(&args)
    };
    let o = bench(&[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = stdout(&o);
    for figure in ["sequential round trips", "64 requests in flight"] {
        let row = out
            .lines()
            .find(|l| l.starts_with(&format!("| {figure} |")))
            .unwrap_or_else(|| panic!("no row {figure:?} in {out}"));
        // No baseline against a remote server: the row says so instead of a ratio.
        assert!(row.ends_with("| — | — |"), "{row}");
    }
    assert!(
        !out.contains("| bulk,") && !out.contains("| PSK handshake"),
        "{out}"
    );
    assert!(
        out.contains("bulk and handshake figures are not measured with --connect"),
        "{out}"
    );
    // Asked for none, nothing is said about them.
    let o = bench(&["--bulk-mib", "0", "--handshakes", "0"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        !stdout(&o).contains("not measured with --connect"),
        "{}",
        stdout(&o)
    );
    server.quit();
}

#[test]
fn chat_host_and_join_talk_in_separate_processes() {
    // The host holds only the verifier (cheap argon2 to keep the test fast).
    let verifier = cypherwire::session::PasswordVerifier::create(
        "network password",
        cypherwire::session::Argon2Cost::new(64, 1, 1),
    )
    .unwrap();
    let host_file = temp_file("chat-verifier", verifier.to_phc().as_str());
    let join_file = temp_file("chat-password", "network password\n");
    let wrong_file = temp_file("chat-wrong", "not the password\n");
    let mut host = Command::new(BIN)
        .args(["chat", "host", "--listen", "127.0.0.1:0", "--password-file"])
        .arg(&host_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let host_out = line_reader(host.stdout.take().unwrap());
    let first = expect_line(&host_out, |l| l.starts_with("listening on "));
    let addr = first.split(' ').nth(2).unwrap().to_owned();

    // The wrong password: one clear line, non-zero exit.
    let o = Command::new(BIN)
        .args(["chat", "join", "--auth", &addr, "--password-file"])
        .arg(&wrong_file)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("error: not admitted"), "{err}");

    let mut peer = Command::new(BIN)
        .args(["chat", "join", "--auth", &addr, "--password-file"])
        .arg(&join_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let peer_out = line_reader(peer.stdout.take().unwrap());
    let joined = expect_line(&peer_out, |l| l.starts_with("joined as "));
    assert!(joined.ends_with("(2 members)"), "{joined}");
    let peer_id = joined.split(' ').nth(2).unwrap().to_owned();
    expect_line(&host_out, |l| l.starts_with(&format!("* {peer_id} joined")));

    // Type to broadcast; the host sees it tagged with the sender's id.
    let mut peer_in = peer.stdin.take().unwrap();
    writeln!(peer_in, "hello mesh").unwrap();
    expect_line(&host_out, |l| l == format!("[{peer_id}] hello mesh"));
    // The host answers directly.
    let mut host_in = host.stdin.take().unwrap();
    writeln!(host_in, "/msg {peer_id} hi back").unwrap();
    expect_line(&peer_out, |l| l.ends_with("→ you] hi back"));
    // The peer leaves; the host sees it go, then exits too.
    writeln!(peer_in, "/exit").unwrap();
    expect_line(&peer_out, |l| l == "left");
    assert!(peer.wait().unwrap().success());
    expect_line(&host_out, |l| l == format!("* {peer_id} left (Left)"));
    writeln!(host_in, "/exit").unwrap();
    expect_line(&host_out, |l| l == "left");
    assert!(host.wait().unwrap().success());
}

#[test]
fn serve_console_lists_bans_kicks_and_quits() {
    let mut server = Served::start("psk-console", &[]);
    let (out, input) = (&server.out, &mut server.input);
    expect_line(out, |l| l.starts_with("commands: help, list"));
    writeln!(input, "list").unwrap();
    expect_line(out, |l| l == "0 connected");
    writeln!(input, "ban 127.0.0.9 5").unwrap();
    expect_line(out, |l| l == "banned 127.0.0.9 for 5 min");
    writeln!(input, "bans").unwrap();
    expect_line(out, |l| l.starts_with("127.0.0.9 for "));
    writeln!(input, "unban 127.0.0.9").unwrap();
    expect_line(out, |l| l == "unbanned");
    writeln!(input, "kick 99").unwrap();
    expect_line(out, |l| l.starts_with("! "));
    writeln!(input, "broadcast hello").unwrap();
    expect_line(out, |l| l == "sent to 0 connections");
    writeln!(input, "frobnicate").unwrap();
    expect_line(out, |l| l.starts_with("! unknown command"));
    server.quit();
}

#[test]
fn serve_answers_cypher_protocol_clients_on_the_compat_port() {
    let psk = temp_file("psk-compat", "2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U\n");
    let key = "2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U";
    let mut server = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--cypher-compat",
            "127.0.0.1:0",
            "--cypher-key",
            key,
            "--psk-file",
        ])
        .arg(&psk)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = line_reader(server.stdout.take().unwrap());
    expect_line(&out, |l| l.starts_with("listening on "));
    let compat = expect_line(&out, |l| l.starts_with("compat listening on "));
    let addr = compat.rsplit(' ').next().unwrap().to_owned();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use cypherwire::client::compat::CompatClient;
        use cypherwire::session::compat::CypherKeys;
        use cypherwire::wire::Value;
        let c = CompatClient::builder(CypherKeys::same(key).unwrap())
            .connect(addr)
            .unwrap();
        let r = c.request("/NUMBER", "UPDATE", 9, Value::Nil).await.unwrap();
        assert_eq!(r.data, Value::from("UPDATED"));
        let r = c
            .request("/NUMBER", "READ", Value::Nil, Value::Nil)
            .await
            .unwrap();
        assert_eq!(r.data, Value::from(9));
    });
    server.kill().unwrap();
    let _ = server.wait();
}

/// One `serve --cluster --console` process: its stdin, its stdout lines, its node and address.
struct Instance {
    child: std::process::Child,
    input: std::process::ChildStdin,
    out: std::sync::mpsc::Receiver<String>,
    node: String,
    addr: String,
}

fn clustered_serve(redis_url: &str, key: &std::path::Path, prefix: &str) -> Instance {
    let psk = temp_file("psk-cluster", "2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U\n");
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--console",
            "--psk-file",
        ])
        .arg(&psk)
        .args([
            "--cluster",
            redis_url,
            "--cluster-prefix",
            prefix,
            "--cluster-key-file",
        ])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = line_reader(child.stdout.take().unwrap());
    let node = expect_line(&out, |l| l.starts_with("cluster node "));
    let node = node.split(' ').nth(2).unwrap().to_owned();
    let addr = expect_line(&out, |l| l.starts_with("listening on "))
        .trim_start_matches("listening on ")
        .to_owned();
    expect_line(&out, |l| l.starts_with("commands: help"));
    let input = child.stdin.take().unwrap();
    Instance {
        child,
        input,
        out,
        node,
        addr,
    }
}

#[test]
fn serve_instances_on_one_redis_act_as_one_and_survive_one_being_killed() {
    use cypherwire::client::{Client, Incoming};
    let Some(redis) = cypherwire_test_support::redis::RedisServer::start() else {
        return;
    };
    let key = run(&["keygen", "--cluster"]);
    assert!(key.status.success());
    assert_eq!(stdout(&key).len(), 64, "a cluster key is 64 hex digits");
    let key = temp_file("cluster.key", &stdout(&key));
    let prefix = format!("cw:cli{:x}:", cypherwire_test_support::redis::rand_suffix());
    let mut a = clustered_serve(&redis.url(), &key, &prefix);
    let mut b = clustered_serve(&redis.url(), &key, &prefix);
    assert_ne!(a.node, b.node);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let psk =
            cypherwire::session::Psk::from_passphrase("2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U").unwrap();
        // The client lands on b (and, once b is gone, on a). It comes back after the kick
        // (by choice: a kicked client stops by default) for the rest of the test.
        let client = Client::builder(psk)
            .reconnect_after_kick(true)
            .connect_with(cypherwire_test_support::balance::FirstAlive(vec![
                b.addr.parse().unwrap(),
                a.addr.parse().unwrap(),
            ]))
            .unwrap();
        let mut incoming = client.take_incoming().unwrap();
        client.wait_online().await.unwrap();
        let mut status = client.status_events();
        // a's console reaches b's client: a broadcast, then a kick by b's connection id.
        writeln!(a.input, "broadcast hello from a").unwrap();
        expect_line(&a.out, |l| l.starts_with("sent to 0 connections"));
        let pushed = tokio::time::timeout(std::time::Duration::from_secs(5), incoming.next())
            .await
            .unwrap();
        assert!(
            matches!(&pushed, Some(Incoming::Push(p)) if p.data.as_str() == Some("hello from a")),
            "{pushed:?}"
        );
        writeln!(b.input, "list").unwrap();
        expect_line(&b.out, |l| l == "1 connected");
        let line = expect_line(&b.out, |l| l.starts_with('#'));
        let id = line.split(' ').next().unwrap().to_owned();
        assert!(id.starts_with(&format!("#{}.", b.node)), "{id}");
        writeln!(a.input, "kick {id}").unwrap();
        expect_line(&a.out, |l| l == format!("kicked {id}"));
        let reason = cypherwire_test_support::cluster::offline_reason(&mut status).await;
        assert!(reason.contains("kick"), "{reason}");
        client.wait_online().await.unwrap();
        // b is killed (SIGKILL): the client lands on a, is told its session is new, and its
        // requests are answered there.
        let mut status = client.status_events();
        b.child.kill().unwrap();
        b.child.wait().unwrap();
        let resumed = cypherwire_test_support::cluster::online_after_a_drop(&mut status).await;
        assert!(!resumed, "b's sessions died with it");
        let reply = client
            .request("/NUMBER", "UPDATE")
            .data(3)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.data.as_str(), Some("UPDATED"));
        writeln!(a.input, "list").unwrap();
        expect_line(&a.out, |l| l == "1 connected");
    });
    writeln!(a.input, "quit").unwrap();
    assert!(a.child.wait().unwrap().success());
}
