//! Runs every example against loopback with a timeout; each must exit 0.

#![allow(
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "test code with a wall-clock timeout"
)]

use std::process::Command;
use std::time::{Duration, Instant};

fn run(bin: &str) {
    let started = Instant::now();
    let mut child = Command::new(bin).spawn().expect("example starts");
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "{bin} failed: {status}");
            return;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("{bin} did not finish within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn structured_data() {
    run(env!("CARGO_BIN_EXE_structured_data"));
}

#[test]
fn cypher_protocol() {
    run(env!("CARGO_BIN_EXE_cypher_protocol"));
}

#[test]
fn aesm_events() {
    run(env!("CARGO_BIN_EXE_aesm_events"));
}

#[test]
fn pnetwork_actions() {
    run(env!("CARGO_BIN_EXE_pnetwork_actions"));
}

#[test]
fn codec_and_suite() {
    run(env!("CARGO_BIN_EXE_codec_and_suite"));
}

#[test]
fn pyile_mesh() {
    run(env!("CARGO_BIN_EXE_pyile_mesh"));
}
