//! Helpers of the CLI's end-to-end tests.

#![allow(dead_code, reason = "each test file uses some of them")]
#![allow(clippy::unwrap_used, reason = "test code")]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;

/// A file named `name` holding `contents`, in this process's temporary directory.
pub(crate) fn temp_file(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cypherwire-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// Lines of a child's stdout, read on a thread so waits can time out.
pub(crate) fn line_reader(out: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// The first line satisfying `want` within 20 s (panics with what was seen otherwise).
pub(crate) fn expect_line(
    rx: &std::sync::mpsc::Receiver<String>,
    want: impl Fn(&str) -> bool,
) -> String {
    let mut seen = Vec::new();
    let deadline = std::time::Duration::from_secs(20);
    loop {
        match rx.recv_timeout(deadline) {
            Ok(l) if want(&l) => return l,
            Ok(l) => seen.push(l),
            Err(e) => panic!("no expected line ({e}); saw {seen:?}"),
        }
    }
}
