//! Helpers of the CLI's end-to-end tests.

#![allow(dead_code, reason = "each test file uses some of them")]
#![allow(clippy::unwrap_used, reason = "test code")]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::Receiver;

/// The `cypherwire` binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_cypherwire");
/// A PSK in its text form (CYPHER_PROTOCOL's key string works as one).
pub(crate) const KEY: &str = "2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U\n";

/// A file named `name` holding `contents`, in this process's temporary directory.
pub(crate) fn temp_file(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cypherwire-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// Lines of a child's stdout, read on a thread so waits can time out.
pub(crate) fn line_reader(out: std::process::ChildStdout) -> Receiver<String> {
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
pub(crate) fn expect_line(rx: &Receiver<String>, want: impl Fn(&str) -> bool) -> String {
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

/// A `serve --console` child with `extra` flags, its stdin, its stdout lines and its address.
pub(crate) struct Served {
    pub(crate) child: Child,
    pub(crate) input: std::process::ChildStdin,
    pub(crate) out: Receiver<String>,
    pub(crate) addr: String,
}

impl Served {
    pub(crate) fn start(name: &str, extra: &[&str]) -> Self {
        let psk = temp_file(name, KEY);
        Self::start_with_key(&psk, extra)
    }

    /// Like [`start`](Self::start), with the PSK file at `psk`.
    pub(crate) fn start_with_key(psk: &std::path::Path, extra: &[&str]) -> Self {
        let mut args = vec!["--psk-file", psk.to_str().unwrap()];
        args.extend_from_slice(extra);
        Self::start_with(&args)
    }

    /// `serve --listen 127.0.0.1:0 --console` with `args` (credentials among them).
    pub(crate) fn start_with(args: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--console"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = line_reader(child.stdout.take().unwrap());
        let input = child.stdin.take().unwrap();
        let first = expect_line(&out, |l| l.starts_with("listening on "));
        let addr = first.trim_start_matches("listening on ").to_owned();
        Self {
            child,
            input,
            out,
            addr,
        }
    }

    pub(crate) fn request(&self, key_file: &str) -> Output {
        Command::new(BIN)
            .args(["request", "--connect", &self.addr, "--psk-file", key_file])
            .args(["/ECHO", "ANY", "1"])
            .output()
            .unwrap()
    }

    pub(crate) fn quit(mut self) {
        writeln!(self.input, "quit").unwrap();
        assert!(self.child.wait().unwrap().success());
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // A failed test must not leave its server running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
