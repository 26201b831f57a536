//! Python virtualenvs for compatibility tests and benchmarks against the real packages the
//! seeds describe: created on first use under a cache directory, shared by parallel test
//! processes through a lock file.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The pip requirement of the CYPHER_PROTOCOL package the compat mode speaks with.
pub const CYPHER_PROTOCOL: &str = "cypher-protocol-p-y-r-o-b-o-t==1.5.0";

/// The python of the CYPHER_PROTOCOL virtualenv under `tmp` (a test's or bench's
/// `CARGO_TARGET_TMPDIR`, so tests and benches share one): see [`venv`].
pub fn cypher_protocol(tmp: &Path) -> Option<PathBuf> {
    venv(
        &tmp.join("compat-venv"),
        CYPHER_PROTOCOL,
        "CYPHER_PROTOCOL.CYPHER_SERVER.cypher_server",
    )
}

/// The python of a virtualenv at `dir` holding `package` (a pip requirement), created (once,
/// under a lock) if `import` fails there; `None`, with the reason printed, only if pip cannot
/// reach the package index.
///
/// # Panics
/// If python3 cannot make a virtualenv, or pip fails for any reason but an unreachable index:
/// a test that needs the package must then fail, not pass silently.
#[allow(
    clippy::expect_used,
    reason = "test helper: failing loudly is the point"
)]
pub fn venv(dir: &Path, package: &str, import: &str) -> Option<PathBuf> {
    let py = dir.join("bin").join("python");
    if let Some(parent) = dir.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let lock = dir.with_extension("lock");
    // nextest runs tests as parallel processes: one installs, the others wait.
    let mut waited = 0;
    let _guard = loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock)
        {
            Ok(f) => break LockGuard(lock, f),
            Err(_) if waited < 600 => {
                std::thread::sleep(Duration::from_secs(1));
                waited += 1;
            }
            Err(_) => {
                // A lock older than 10 minutes was left by a killed run.
                let _ = std::fs::remove_file(&lock);
            }
        }
    };
    let ready = || {
        Command::new(&py)
            .args(["-c", &format!("import {import}")])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if ready() {
        return Some(py);
    }
    let venv = Command::new("python3")
        .args(["-m", "venv"])
        .arg(dir)
        .output()
        .expect("python3 runs");
    assert!(
        venv.status.success(),
        "python3 -m venv failed: {}",
        String::from_utf8_lossy(&venv.stderr)
    );
    let pip = Command::new(dir.join("bin").join("pip"))
        .args(["install", "--disable-pip-version-check", "-q", package])
        .output()
        .expect("pip runs");
    if !pip.status.success() {
        let err = String::from_utf8_lossy(&pip.stderr);
        let unreachable = [
            "NewConnectionError",
            "Temporary failure in name resolution",
            "Network is unreachable",
            "Connection refused",
            "No matching distribution found",
        ]
        .iter()
        .any(|s| err.contains(s));
        assert!(unreachable, "pip install {package} failed: {err}");
        println!("SKIPPED: pip cannot reach the package index: {err}");
        return None;
    }
    assert!(ready(), "the package installed but does not import");
    Some(py)
}

struct LockGuard(
    PathBuf,
    #[allow(dead_code, reason = "held open")] std::fs::File,
);

impl Drop for LockGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
