//! The accept loop survives running out of file descriptors (EMFILE): the server runs as a
//! separate process under `ulimit -n 48`, 200 idle connections exhaust its descriptors, and
//! once they go away a legitimate client is served as before.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use cypherwire::client::Client;
use cypherwire::session::Psk;

const BIN: &str = env!("CARGO_BIN_EXE_chaos-server");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_loop_survives_emfile() {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("emfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("executions.log");
    let mut server = Command::new("sh")
        .args([
            "-c",
            &format!(
                "ulimit -n 48 && exec '{BIN}' 127.0.0.1:0 '{}'",
                log.display()
            ),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    let client = || {
        Client::builder(Psk::from_bytes([0x5c; 32]))
            .connect(addr.clone())
            .unwrap()
    };
    let first = client();
    let r = first
        .request("/ADD", "ONE")
        .data(1)
        .metadata(1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.data::<u64>().unwrap(), 2);
    first.close_within(Duration::from_millis(100)).await;

    // Exhaust the server's descriptors with idle connections (the kernel completes them;
    // the server's accept() fails with EMFILE for most).
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The process really ran out: its descriptor table is (nearly) full.
    let open = std::fs::read_dir(format!("/proc/{}/fd", server.id()))
        .map(Iterator::count)
        .unwrap_or(48);
    assert!(
        open >= 44,
        "only {open} descriptors open: the limit was not reached"
    );
    assert!(
        server.try_wait().unwrap().is_none(),
        "the server died of descriptor exhaustion"
    );
    drop(idle);

    // Descriptors come back as the server sees those connections end; a new client is served.
    let again = client();
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        again.request("/ADD", "ONE").data(41).metadata(2).send(),
    )
    .await
    .expect("served within 30 s after the flood")
    .unwrap();
    assert_eq!(r.data::<u64>().unwrap(), 42);
    again.close_within(Duration::from_millis(100)).await;
    server.kill().unwrap();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
