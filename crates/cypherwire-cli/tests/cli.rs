//! The `cypherwire` command end to end, as a user runs it: separate processes on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_cypherwire");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

fn temp_file(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cypherwire-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
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
    assert!(err.starts_with("error: server error"), "{err}");
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
    let o = run(&["bench", "--requests", "300"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = stdout(&o);
    assert!(
        out.contains("sequential:") && out.contains("64 in flight:"),
        "{out}"
    );
    // --connect without a key file is a usage error.
    assert!(!run(&["bench", "--connect", "127.0.0.1:1"]).status.success());
}
