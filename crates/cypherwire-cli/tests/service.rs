//! `serve` as an operator runs it, with the real binaries: a configuration file (defaults,
//! errors naming the key, flags over the file, secrets never shown) and every auth mode with
//! `request` holding the right and the wrong credentials.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::{BIN, KEY, Served, temp_file};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_owned()
}

fn cypherwire(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// `request /ECHO ANY 1` against `addr` with the client credential flags `auth`.
fn request(addr: &str, auth: &[&str]) -> Output {
    Command::new(BIN)
        .args(["request", "--connect", addr])
        .args(auth)
        .args(["/ECHO", "ANY", "1"])
        .output()
        .unwrap()
}

/// With `bans.attempts = 1`: one wrong key fails (exit 3) and bans the address, so the right
/// credentials `right` are then refused as banned (exit 4).
fn wrong_key_then_banned(addr: &str, right: &[&str]) {
    let wrong = temp_file("psk-wrong", "3ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U\n");
    let o = request(addr, &["--psk-file", wrong.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    let o = request(addr, right);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o.stderr));
}

const SECRET_COMPAT_KEY: &str = "Zk9q2LmN4pR7sT1vW3xY5zA8bC0dE6fG";

#[test]
fn print_config_shows_the_file_with_flags_over_it_and_no_secrets() {
    let psk = temp_file("psk-config", KEY);
    let file = temp_file(
        "config-print.toml",
        &format!(
            "listen = \"127.0.0.1:4000\"\n\
             [auth]\npsk_file = {psk:?}\n\
             [limits]\nmax_connections = 77\n\
             [bans]\nattempts = 9\n\
             [compat]\nlisten = \"127.0.0.1:0\"\nkey = \"{SECRET_COMPAT_KEY}\"\n\
             [cluster]\nredis = \"redis://ops:hunter2@10.9.9.9:6379\"\nkey_file = \"/nowhere\"\n"
        ),
    );
    let o = cypherwire(&[
        "serve",
        "--config",
        file.to_str().unwrap(),
        "--ban-attempts",
        "3",
        "--print-config",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let shown = text(&o.stdout);
    assert!(shown.contains("listen = \"127.0.0.1:4000\""), "{shown}");
    assert!(shown.contains("max_connections = 77"), "{shown}");
    assert!(
        shown.contains("attempts = 3"),
        "the flag wins over the file: {shown}"
    );
    assert!(
        shown.contains("max_connections_per_ip = 256"),
        "defaults filled in: {shown}"
    );
    for secret in [SECRET_COMPAT_KEY, "hunter2"] {
        assert!(!shown.contains(secret), "{secret} shown: {shown}");
        assert!(!text(&o.stderr).contains(secret));
    }
    assert!(
        shown.contains("redis://<redacted>@10.9.9.9:6379"),
        "{shown}"
    );
}

#[test]
fn a_bad_configuration_is_refused_before_anything_starts_and_names_the_key() {
    let psk = temp_file("psk-bad-config", KEY);
    let psk = psk.to_str().unwrap();
    let cases = [
        ("[limits]\nmax_conections = 5\n", "max_conections"),
        ("[limits]\nmax_connections = \"many\"\n", "max_connections"),
        ("[bans]\nmax_ban_secs = 1\n", "bans.max_ban_secs"),
        ("[limits]\nmax_frame_len = 1\n", "limits.max_frame_len"),
        ("[log]\nlevel = \"info,=[\"\n", "log.level"),
    ];
    for (n, (body, key)) in cases.iter().enumerate() {
        let file = temp_file(
            &format!("config-bad-{n}.toml"),
            &format!("[auth]\npsk_file = {psk:?}\n{body}"),
        );
        let o = cypherwire(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--config",
            file.to_str().unwrap(),
        ]);
        assert!(!o.status.success(), "{body} was accepted");
        let err = text(&o.stderr);
        assert!(err.contains(key), "{body}: {err}");
        assert!(
            !text(&o.stdout).contains("listening on"),
            "{body}: it started"
        );
    }
    // No credentials at all: told which keys or flags give them.
    let o = cypherwire(&["serve", "--listen", "127.0.0.1:0"]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("--psk-file"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn a_configuration_file_runs_the_server_it_describes() {
    let psk = temp_file("psk-config-run", KEY);
    let file = temp_file(
        "config-run.toml",
        &format!("[auth]\npsk_file = {psk:?}\n[bans]\nattempts = 1\n"),
    );
    let served = Served::start_with(&["--config", file.to_str().unwrap()]);
    let right = ["--psk-file", psk.to_str().unwrap()];
    let o = request(&served.addr, &right);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "1");
    // bans.attempts = 1 from the file: one wrong key bans the address.
    wrong_key_then_banned(&served.addr, &right);
    served.quit();
}

#[test]
fn password_mode_admits_the_password_and_refuses_another() {
    let mut hash = Command::new(BIN)
        .args(["hash-password", "--memory-kib", "64", "--passes", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(hash.stdin.take().unwrap(), "correct horse battery").unwrap();
    let o = hash.wait_with_output().unwrap();
    assert!(o.status.success());
    let verifier = temp_file("verifier", &String::from_utf8(o.stdout).unwrap());
    let served = Served::start_with(&["--password-verifier-file", verifier.to_str().unwrap()]);
    let right = temp_file("password-right", "correct horse battery\n");
    let o = request(&served.addr, &["--password-file", right.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "1");
    let wrong = temp_file("password-wrong", "correct horse staple\n");
    let o = request(&served.addr, &["--password-file", wrong.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    // bench --connect takes the same credentials.
    let o = cypherwire(&[
        "bench",
        "--connect",
        &served.addr,
        "--password-file",
        right.to_str().unwrap(),
        "--requests",
        "100",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("requests"), "{}", text(&o.stdout));
    served.quit();
}

/// A fresh identity key pair from `keygen --identity`: (a file with the private key, the
/// public key's text).
fn identity(name: &str) -> (std::path::PathBuf, String) {
    let o = cypherwire(&["keygen", "--identity"]);
    assert!(o.status.success());
    let out = String::from_utf8(o.stdout).unwrap();
    let public = out
        .lines()
        .find(|l| l.starts_with("idpk:"))
        .unwrap()
        .to_owned();
    (temp_file(name, &out), public)
}

#[test]
fn identity_mode_admits_listed_keys_only_and_the_client_checks_the_server() {
    let (server_key, server_pub) = identity("server.id");
    let (client_key, client_pub) = identity("client.id");
    let (stranger_key, _) = identity("stranger.id");
    let allowed = temp_file("allowed.idpk", &format!("# clients\n{client_pub}\n"));
    let server_pub_file = temp_file("server.idpk", &format!("{server_pub}\n"));
    let served = Served::start_with(&[
        "--identity-key-file",
        server_key.to_str().unwrap(),
        "--allow-keys-file",
        allowed.to_str().unwrap(),
    ]);
    let as_client = |key: &std::path::Path, server: &std::path::Path| {
        request(
            &served.addr,
            &[
                "--identity-key-file",
                key.to_str().unwrap(),
                "--server-key-file",
                server.to_str().unwrap(),
            ],
        )
    };
    let o = as_client(&client_key, &server_pub_file);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "1");
    // A key the server does not list is refused.
    assert_eq!(
        as_client(&stranger_key, &server_pub_file).status.code(),
        Some(3)
    );
    // A client expecting another server's key refuses this one.
    let (_, other_pub) = identity("other.id");
    let other = temp_file("other.idpk", &format!("{other_pub}\n"));
    assert_ne!(as_client(&client_key, &other).status.code(), Some(0));
    served.quit();
}

/// `GET path` on `addr`: the status line and the body.
fn http_get(addr: &str, path: &str) -> (String, String) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    let (head, body) = all.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// The value of the sample `name{labels}` in a scrape.
fn sample(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{scrape}"))
}

#[test]
fn metrics_count_what_clients_did_and_readiness_flips_at_shutdown() {
    let psk = temp_file("psk-metrics", KEY);
    let file = temp_file(
        "config-metrics.toml",
        &format!(
            "[auth]\npsk_file = {psk:?}\n[bans]\nattempts = 1\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\nready_drain_secs = 2\n"
        ),
    );
    let mut served = Served::start_with(&["--config", file.to_str().unwrap()]);
    let line = common::expect_line(&served.out, |l| l.starts_with("metrics on http://"));
    let metrics = line
        .trim_start_matches("metrics on http://")
        .trim_end_matches("/metrics")
        .to_owned();
    assert_eq!(http_get(&metrics, "/healthz").0, "HTTP/1.1 200 OK");
    assert_eq!(http_get(&metrics, "/readyz").0, "HTTP/1.1 200 OK");

    let right = ["--psk-file", psk.to_str().unwrap()];
    for n in 0..5 {
        let o = Command::new(BIN)
            .args(["request", "--connect", &served.addr])
            .args(right)
            .args(["/NUMBER", "UPDATE", &n.to_string()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o.stderr));
    }
    assert!(request(&served.addr, &right).status.success()); // /ECHO: the fallback route
    let o = Command::new(BIN)
        .args(["request", "--connect", &served.addr])
        .args(right)
        .args(["/NOPE", "READ"])
        .output()
        .unwrap();
    assert!(!o.status.success(), "an unknown path fails");
    // One wrong key (a failed handshake, and with bans.attempts = 1 a ban), then a refusal.
    wrong_key_then_banned(&served.addr, &right);

    let (status, scrape) = http_get(&metrics, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let route = "path=\"/NUMBER\",operation=\"UPDATE\"";
    assert_eq!(
        sample(
            &scrape,
            &format!("cypherwire_requests_total{{{route},status=\"OK\"}}")
        ),
        5.0
    );
    assert_eq!(
        sample(
            &scrape,
            &format!("cypherwire_request_duration_seconds_count{{{route}}}")
        ),
        5.0
    );
    assert_eq!(
        sample(
            &scrape,
            &format!("cypherwire_request_duration_seconds_bucket{{{route},le=\"+Inf\"}}")
        ),
        5.0
    );
    let fallback = "path=\"*\",operation=\"*\"";
    assert_eq!(
        sample(
            &scrape,
            &format!("cypherwire_requests_total{{{fallback},status=\"OK\"}}")
        ),
        1.0
    );
    assert_eq!(
        sample(
            &scrape,
            &format!("cypherwire_requests_total{{{fallback},status=\"NOT_FOUND\"}}")
        ),
        1.0
    );
    assert_eq!(
        sample(
            &scrape,
            "cypherwire_handshakes_total{mode=\"psk\",result=\"failed\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &scrape,
            "cypherwire_handshakes_total{mode=\"psk\",result=\"ok\"}"
        ),
        7.0
    );
    assert_eq!(
        sample(&scrape, "cypherwire_refused_total{reason=\"banned\"}"),
        1.0
    );
    assert_eq!(sample(&scrape, "cypherwire_bans_active"), 1.0);
    // Each `request` is a new session: nothing resumed; no compat listener configured.
    assert_eq!(
        sample(&scrape, "cypherwire_resumes_total{result=\"ok\"}"),
        0.0
    );
    assert_eq!(sample(&scrape, "cypherwire_compat_connections_total"), 0.0);
    // Every family is declared before its samples.
    for name in [
        "cypherwire_requests_total",
        "cypherwire_request_duration_seconds",
    ] {
        assert!(scrape.contains(&format!("# TYPE {name} ")), "{name}");
    }

    // A graceful shutdown: not ready at once, for the drain time, then the process ends.
    writeln!(served.input, "quit").unwrap();
    let mut flipped = false;
    for _ in 0..100 {
        if http_get(&metrics, "/readyz").0 == "HTTP/1.1 503 Service Unavailable" {
            flipped = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(flipped, "/readyz stayed ready after quit");
    assert_eq!(
        http_get(&metrics, "/healthz").0,
        "HTTP/1.1 200 OK",
        "still alive while draining"
    );
    assert!(served.child.wait().unwrap().success());
}

#[test]
fn json_logs_are_one_object_per_line_and_never_carry_secrets() {
    let psk = temp_file("psk-json-logs", KEY);
    let file = temp_file(
        "config-json-logs.toml",
        &format!(
            "[auth]\npsk_file = {psk:?}\n[compat]\nlisten = \"127.0.0.1:0\"\nkey = \"{SECRET_COMPAT_KEY}\"\n\
             [log]\nformat = \"json\"\nlevel = \"debug\"\n"
        ),
    );
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--console", "--config"])
        .arg(&file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = common::line_reader(child.stdout.take().unwrap());
    let addr = common::expect_line(&out, |l| l.starts_with("listening on "))
        .trim_start_matches("listening on ")
        .to_owned();
    assert!(
        request(&addr, &["--psk-file", psk.to_str().unwrap()])
            .status
            .success()
    );
    writeln!(child.stdin.take().unwrap(), "quit").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    let stderr = String::from_utf8(o.stderr).unwrap();
    assert!(
        !stderr.contains(SECRET_COMPAT_KEY),
        "the compat key was logged"
    );
    let logs: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert!(
        logs.iter()
            .any(|l| l["level"] == "INFO" || l["level"] == "DEBUG"),
        "no debug or info line (log.level = debug) in:\n{stderr}"
    );
}

#[test]
fn sighup_reloads_the_deny_list_from_the_file() {
    let psk = temp_file("psk-reload", KEY);
    let body = |deny: &str| format!("[auth]\npsk_file = {psk:?}\n[bans]\ndeny = [{deny}]\n");
    let file = temp_file("config-reload.toml", &body(""));
    let mut served = Served::start_with(&["--config", file.to_str().unwrap()]);
    let right = ["--psk-file", psk.to_str().unwrap()];
    let send_hup = |served: &Served| {
        let pid = served.child.id().to_string();
        let sent = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
        assert!(sent.success());
    };
    let hangup = |served: &Served| {
        send_hup(served);
        common::expect_line(&served.out, |l| l.starts_with("configuration reloaded: "))
    };
    assert!(request(&served.addr, &right).status.success());
    // Denied by a reload: told banned (exit 4), before any handshake.
    std::fs::write(&file, body("\"127.0.0.1\"")).unwrap();
    let line = hangup(&served);
    assert!(line.contains("bans.deny"), "{line}");
    let o = request(&served.addr, &right);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o.stderr));
    // A broken file is reported and changes nothing.
    std::fs::write(&file, "[bans]\ndeny = 5\n").unwrap();
    send_hup(&served);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(
        request(&served.addr, &right).status.code(),
        Some(4),
        "still denied"
    );
    // Lifted by the next reload.
    std::fs::write(&file, body("")).unwrap();
    hangup(&served);
    assert!(request(&served.addr, &right).status.success());
    writeln!(served.input, "quit").unwrap();
    assert!(served.child.wait().unwrap().success());
}
