//! Server benchmarks against a plain-TCP length-prefixed echo measured in the same run:
//! sequential round trips on one connection, 64 requests in flight on one connection, and 100
//! concurrent connections (100-byte payloads), each repeated 5 times with the two systems
//! interleaved; then memory per idle authenticated connection (RSS of a separate server
//! process holding N connections, default 10,000).
//!
//! Run: `cargo bench -p cypherwire-server --bench server` (the figures are printed as a
//! Markdown table and written to `target/bench-server.json`). Set `CYPHERWIRE_BENCH_IDLE` to
//! change the number of idle connections.

#![allow(missing_docs, reason = "benchmark binary")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    clippy::cast_precision_loss,
    reason = "benchmark code: a failure should abort, wall-clock timing is the point"
)]

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use cypherwire_server::{Ctx, HandlerError, Reply, Server, ServerLimits};
use cypherwire_session::wire::{Message, Request, Value};
use cypherwire_session::{ClientAuth, Psk, SessionConfig, connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PAYLOAD: usize = 100;
const REPEATS: usize = 5;

fn psk() -> Psk {
    Psk::from_bytes([0x5a; 32])
}

// ---------------------------------------------------------------------------------------------
// Plain TCP: 4-byte big-endian length + body, echoed.

async fn plain_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            s.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let (r, mut w) = s.split();
                let mut r = tokio::io::BufReader::new(r);
                let mut out = Vec::with_capacity(64 * 1024);
                let mut buf = vec![0u8; 4 + PAYLOAD];
                loop {
                    if r.read_exact(&mut buf).await.is_err() {
                        return;
                    }
                    out.extend_from_slice(&buf);
                    // Batch whatever else is already buffered, like the server does.
                    while r.buffer().len() >= buf.len() {
                        r.read_exact(&mut buf).await.unwrap();
                        out.extend_from_slice(&buf);
                    }
                    if w.write_all(&out).await.is_err() {
                        return;
                    }
                    out.clear();
                }
            });
        }
    });
    addr
}

struct PlainClient(TcpStream, Vec<u8>);

impl PlainClient {
    async fn new(addr: std::net::SocketAddr) -> Self {
        let s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        let mut frame = (PAYLOAD as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&[0xab; PAYLOAD]);
        Self(s, frame)
    }
    async fn send(&mut self, n: usize) {
        let batch: Vec<u8> = self
            .1
            .iter()
            .copied()
            .cycle()
            .take(self.1.len() * n)
            .collect();
        self.0.write_all(&batch).await.unwrap();
    }
    async fn recv(&mut self) {
        let mut buf = [0u8; 4 + PAYLOAD];
        self.0.read_exact(&mut buf).await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// cypherwire: /ECHO PUT with 100 bytes of data.

async fn cw_server(limits: ServerLimits) -> cypherwire_server::ServerHandle {
    let server = Server::builder(psk())
        .route("/ECHO", "PUT", |req: Request, _ctx: Ctx| async move {
            Ok::<_, HandlerError>(Reply::new(req.data))
        })
        .limits(limits)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    server.handle()
}

struct CwClient {
    s: cypherwire_session::SecureStream<TcpStream>,
    next: u64,
}

impl CwClient {
    async fn new(addr: std::net::SocketAddr) -> Self {
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let s = connect(tcp, &ClientAuth::Psk(psk()), &SessionConfig::default())
            .await
            .unwrap();
        Self { s, next: 0 }
    }
    async fn send(&mut self, n: usize) {
        for _ in 0..n {
            self.next += 1;
            let req = Request::new(self.next, "/ECHO", "PUT")
                .with_data(Value::bytes(vec![0xab; PAYLOAD]));
            self.s.queue_message(&req.into()).unwrap();
        }
        self.s.flush().await.unwrap();
    }
    async fn recv(&mut self) {
        loop {
            match self.s.recv_message().await.unwrap() {
                Some(Message::Response(_)) => return,
                Some(Message::Welcome(_)) => {}
                other => panic!("{other:?}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
}

fn percentiles(mut lat: Vec<Duration>, total: Duration) -> Figures {
    lat.sort();
    let pick = |q: f64| lat[((lat.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1e6;
    Figures {
        rate: lat.len() as f64 / total.as_secs_f64(),
        p50_us: pick(0.50),
        p99_us: pick(0.99),
    }
}

macro_rules! workloads {
    ($client:ident, $new:expr) => {{
        /// Sequential round trips on one connection.
        async fn sequential(addr: std::net::SocketAddr, n: usize) -> Figures {
            let mut c = $client::new(addr).await;
            let mut lat = Vec::with_capacity(n);
            let start = Instant::now();
            for _ in 0..n {
                let t = Instant::now();
                c.send(1).await;
                c.recv().await;
                lat.push(t.elapsed());
            }
            percentiles(lat, start.elapsed())
        }
        /// `depth` requests in flight on one connection, `n` in total.
        async fn pipelined(addr: std::net::SocketAddr, n: usize, depth: usize) -> Figures {
            let mut c = $client::new(addr).await;
            let start = Instant::now();
            c.send(depth).await;
            let mut sent = depth;
            for done in 1..=n {
                c.recv().await;
                if sent < n && done % (depth / 2) == 0 {
                    let more = (depth / 2).min(n - sent);
                    c.send(more).await;
                    sent += more;
                }
            }
            let total = start.elapsed();
            Figures {
                rate: n as f64 / total.as_secs_f64(),
                p50_us: 0.0,
                p99_us: 0.0,
            }
        }
        /// `conns` connections, each `n` sequential round trips, concurrently.
        async fn concurrent(addr: std::net::SocketAddr, conns: usize, n: usize) -> Figures {
            let mut clients = Vec::new();
            for _ in 0..conns {
                clients.push($client::new(addr).await);
            }
            let start = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for mut c in clients {
                set.spawn(async move {
                    let mut lat = Vec::with_capacity(n);
                    for _ in 0..n {
                        let t = Instant::now();
                        c.send(1).await;
                        c.recv().await;
                        lat.push(t.elapsed());
                    }
                    lat
                });
            }
            let mut all = Vec::new();
            while let Some(l) = set.join_next().await {
                all.extend(l.unwrap());
            }
            percentiles(all, start.elapsed())
        }
        (sequential, pipelined, concurrent)
    }};
}

fn median(mut v: Vec<Figures>) -> (Figures, f64, f64) {
    v.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    let (min, max) = (v[0].rate, v[v.len() - 1].rate);
    (v[v.len() / 2], min, max)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Child mode: a server with limits large enough for the idle test; prints its address.
fn serve_idle() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut limits = ServerLimits::default();
        limits.max_connections = 100_000;
        limits.max_connections_per_ip = 100_000;
        limits.idle_timeout = Duration::from_secs(3600);
        let handle = cw_server(limits).await;
        println!("{}", handle.local_addr());
        // Exit when the parent closes our stdin.
        let mut line = String::new();
        let _ = tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut line)).await;
    });
}

fn main() {
    if std::env::args().any(|a| a == "--serve-idle") {
        serve_idle();
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut results = serde_json_like::Obj::default();
    rt.block_on(async {
        let plain_addr = plain_server().await;
        let cw = cw_server(ServerLimits::default()).await;
        let cw_addr = cw.local_addr();
        let (p_seq, p_pipe, p_conc) = workloads!(PlainClient, PlainClient::new);
        let (c_seq, c_pipe, c_conc) = workloads!(CwClient, CwClient::new);

        let mut rows: Vec<(&str, Vec<Figures>, Vec<Figures>)> = vec![
            ("sequential, 1 connection", vec![], vec![]),
            ("64 in flight, 1 connection", vec![], vec![]),
            ("100 connections, sequential each", vec![], vec![]),
        ];
        for _ in 0..REPEATS {
            rows[0].1.push(p_seq(plain_addr, 5_000).await);
            rows[0].2.push(c_seq(cw_addr, 5_000).await);
            rows[1].1.push(p_pipe(plain_addr, 50_000, 64).await);
            rows[1].2.push(c_pipe(cw_addr, 50_000, 64).await);
            rows[2].1.push(p_conc(plain_addr, 100, 200).await);
            rows[2].2.push(c_conc(cw_addr, 100, 200).await);
        }
        println!("| workload | plain TCP req/s (min–max) | cypherwire req/s (min–max) | rate ratio | plain p50 / p99 µs | cypherwire p50 / p99 µs | p50 ratio |");
        println!("| --- | --- | --- | --- | --- | --- | --- |");
        for (name, plain, ours) in rows {
            let ((p, pmin, pmax), (c, cmin, cmax)) = (median(plain), median(ours));
            let lat = |f: Figures| if f.p50_us > 0.0 { format!("{:.1} / {:.1}", f.p50_us, f.p99_us) } else { "—".into() };
            let p50_ratio = if p.p50_us > 0.0 { format!("{:.2}", c.p50_us / p.p50_us) } else { "—".into() };
            println!(
                "| {name} | {:.0} ({:.0}–{:.0}) | {:.0} ({:.0}–{:.0}) | {:.2} | {} | {} | {} |",
                p.rate, pmin, pmax, c.rate, cmin, cmax, c.rate / p.rate, lat(p), lat(c), p50_ratio
            );
            results.push(name, p.rate, c.rate, p.p50_us, c.p50_us, p.p99_us, c.p99_us);
        }
        cw.shutdown().await;
    });

    // Memory per idle authenticated connection, in a separate server process.
    let n: usize = std::env::var("CYPHERWIRE_BENCH_IDLE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--serve-idle")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: std::net::SocketAddr = line.trim().parse().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_kib(child.id());
    let held = rt.block_on(async {
        let mut held = Vec::with_capacity(n);
        for _ in 0..n {
            held.push(CwClient::new(addr).await);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        held
    });
    let after = rss_kib(child.id());
    let per = (after.saturating_sub(before)) as f64 / n as f64;
    println!(
        "\nidle authenticated connections: {n}; server RSS {before} KiB -> {after} KiB; {per:.1} KiB per connection"
    );
    results.idle(n, before, after, per);
    drop(held);
    drop(child.stdin.take());
    let _ = child.wait();
    std::fs::write(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../target/bench-server.json"
        ),
        results.finish(),
    )
    .unwrap();
}

/// A tiny JSON writer, so the bench needs no extra dependency.
mod serde_json_like {
    #[derive(Default)]
    pub(super) struct Obj(Vec<String>);

    impl Obj {
        #[expect(clippy::too_many_arguments, reason = "one row of figures")]
        pub(super) fn push(
            &mut self,
            name: &str,
            p: f64,
            c: f64,
            p50p: f64,
            p50c: f64,
            p99p: f64,
            p99c: f64,
        ) {
            self.0.push(format!(
                "{{\"workload\":\"{name}\",\"plain_rps\":{p:.0},\"cypherwire_rps\":{c:.0},\"ratio\":{:.3},\"plain_p50_us\":{p50p:.1},\"cypherwire_p50_us\":{p50c:.1},\"plain_p99_us\":{p99p:.1},\"cypherwire_p99_us\":{p99c:.1}}}",
                c / p
            ));
        }
        pub(super) fn idle(&mut self, n: usize, before: u64, after: u64, per: f64) {
            self.0.push(format!(
                "{{\"workload\":\"idle connections\",\"connections\":{n},\"rss_before_kib\":{before},\"rss_after_kib\":{after},\"kib_per_connection\":{per:.1}}}"
            ));
        }
        pub(super) fn finish(&self) -> String {
            format!("[\n{}\n]\n", self.0.join(",\n"))
        }
    }
}
