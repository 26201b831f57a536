//! A real `redis-server` for the cluster tests: started as a child process on a Unix socket
//! in a fresh directory (no persistence), stopped when dropped, and killable, pausable and
//! restartable for fault tests.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `redis-server` this process started.
#[derive(Debug)]
pub struct RedisServer {
    dir: PathBuf,
    child: Option<Child>,
    /// Extra `redis-server` arguments (e.g. `--requirepass`).
    args: Vec<String>,
}

/// Whether tests must have their components (`CI=true`).
fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

impl RedisServer {
    /// Starts one; `None` (with the reason printed) if `redis-server` is not installed or
    /// `CW_BACKPLANE_TESTS=skip` is set, outside CI.
    ///
    /// # Panics
    /// Under `CI=true` when `redis-server` is missing, and whenever it does not start.
    #[allow(
        clippy::expect_used,
        clippy::panic,
        reason = "test helper: failing loudly is the point"
    )]
    pub fn start() -> Option<Self> {
        Self::start_with(&[])
    }

    /// Starts one with extra `redis-server` arguments, as [`start`](Self::start) does.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    #[allow(
        clippy::expect_used,
        clippy::panic,
        reason = "test helper: failing loudly is the point"
    )]
    pub fn start_with(args: &[&str]) -> Option<Self> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed || std::env::var("CW_BACKPLANE_TESTS").is_ok_and(|v| v == "skip") {
            assert!(
                !required(),
                "CI=true: redis-server is required (apt-get install redis-server)"
            );
            eprintln!("skipping: redis-server is not installed (apt-get install redis-server)");
            return None;
        }
        let n: u64 = rand_suffix();
        let dir = std::env::temp_dir().join(format!("cw-redis-{}-{n:x}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut server = Self {
            dir,
            child: None,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        };
        server.spawn();
        Some(server)
    }

    #[allow(
        clippy::expect_used,
        clippy::panic,
        reason = "test helper: failing loudly is the point"
    )]
    fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.socket());
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--save",
                "",
                "--appendonly",
                "no",
                "--unixsocket",
            ])
            .arg(self.socket())
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        for _ in 0..500 {
            if std::os::unix::net::UnixStream::connect(self.socket()).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "redis-server did not open {} within 5 s",
            self.socket().display()
        );
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("redis.sock")
    }

    /// The URL to connect to.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }

    /// The URL with a user and password (`AUTH`).
    pub fn url_with_auth(&self, user: &str, password: &str) -> String {
        format!("{}?user={user}&pass={password}", self.url())
    }

    /// Kills it with SIGKILL (its data is gone: it keeps nothing on disk).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same socket (empty).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Sends it a signal (`STOP` to pause it, `CONT` to resume).
    pub fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(child.id().to_string())
                .status();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.signal("CONT");
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A random number for names (directories, key prefixes).
pub fn rand_suffix() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}
