//! Small request/response, in one run (the second part of the performance suite): 100-byte
//! payloads over 127.0.0.1 for
//!
//! - **plain TCP**: a tokio echo server for 4-byte-length-prefixed frames that batches whatever
//!   it has buffered into one write (the floor for any framed protocol);
//! - **length prefix + AEAD**: the same echo with every frame sealed and opened with `ring`'s
//!   AES-256-GCM, one key per direction, counter nonces (the floor for any encrypted framed
//!   protocol on the backend cypherwire uses by default);
//! - **tarpc** 0.38 with its bincode serde transport (an RPC framework a Rust engineer would
//!   reach for; no encryption);
//! - **cypherwire, session client**: the real server (`/ECHO PUT`, PSK handshake, default suite
//!   and backend, MessagePack) driven by a bare `SecureStream` that queues `Request` messages
//!   and reads `Response`s;
//! - **cypherwire, `Client`**: the same server driven by the reconnecting client crate.
//!
//! Workloads, each 5 times with all transports interleaved (median, min–max): sequential round
//! trips on one connection (each call awaited where it is made); the same pinned to one CPU (`taskset -c 0`, a child process whose
//! current-thread runtime runs client, server and every task on one thread, so neither the
//! wake-up latency of idle virtual CPUs nor cross-thread hand-offs are in the picture); 64 requests in
//! flight on one connection; 100 connections each doing sequential round trips. Then memory per
//! idle authenticated connection: RSS of a separate server process holding 10,000 connections.
//!
//! Run: `cargo bench -p cypherwire-tests --bench reqresp` (prints Markdown tables and writes
//! `target/bench-reqresp.json`). `CYPHERWIRE_BENCH_IDLE` changes the number of idle
//! connections; `CYPHERWIRE_BENCH_QUICK=1` runs 1 round of smaller workloads;
//! `CYPHERWIRE_BENCH_PROFILE=KEY` (`plain`, `aead`, `tarpc`, `cypherwire-session`,
//! `cypherwire-client`) runs only 1,000,000 requests 64 in flight of that transport, for a
//! profiler (`KEY:sequential`: 200,000 sequential round trips; run it under `taskset -c 0`
//! with `CYPHERWIRE_BENCH_THREADS=0` (one thread for everything, as in the pinned row) to
//! profile the pinned case; `CYPHERWIRE_BENCH_PROFILE_N` changes the count, e.g. 20,000 under
//! callgrind; `CYPHERWIRE_BENCH_DEADLINE=1` gives every `Client` request a 30 s deadline).

#![allow(missing_docs, reason = "benchmark binary")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    reason = "benchmark code: a failure should abort, wall-clock timing is the point"
)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use cypherwire::server::{Ctx, HandlerError, Reply, Server, ServerHandle, ServerLimits};
use cypherwire::session::{ClientAuth, Psk, SecureStream, SessionConfig, connect};
use cypherwire::wire::{Message, Request, Value};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::net::{TcpListener, TcpStream};

mod common;
use common::echo::{FrameClient, echo_server};

const PAYLOAD: usize = 100;

fn psk() -> Psk {
    Psk::from_bytes([0x5a; 32])
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Plain,
    Aead,
    Tarpc,
    CwSession,
    CwClient,
}

const KINDS: [Kind; 5] = [
    Kind::Plain,
    Kind::Aead,
    Kind::Tarpc,
    Kind::CwSession,
    Kind::CwClient,
];

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Self::Plain => "plain TCP (length prefix)",
            Self::Aead => "length prefix + AEAD (ring AES-256-GCM)",
            Self::Tarpc => "tarpc 0.38 (bincode)",
            Self::CwSession => "cypherwire, session client",
            Self::CwClient => "cypherwire, Client",
        }
    }
    fn key(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Aead => "aead",
            Self::Tarpc => "tarpc",
            Self::CwSession => "cypherwire-session",
            Self::CwClient => "cypherwire-client",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Plain TCP and length prefix + AEAD: 4-byte big-endian length + body, echoed.

// ---------------------------------------------------------------------------------------------
// tarpc with its bincode transport.

#[tarpc::service]
trait Echo {
    async fn echo(data: Vec<u8>) -> Vec<u8>;
}

#[derive(Clone)]
struct EchoService;

impl Echo for EchoService {
    async fn echo(self, _: tarpc::context::Context, data: Vec<u8>) -> Vec<u8> {
        data
    }
}

async fn tarpc_server() -> SocketAddr {
    use tarpc::server::{BaseChannel, Channel};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let framed = tokio_util::codec::LengthDelimitedCodec::builder().new_framed(tcp);
            let transport = tarpc::serde_transport::new(
                framed,
                tarpc::tokio_serde::formats::Bincode::default(),
            );
            // tarpc's documented pattern: each response future on its own task.
            tokio::spawn(
                BaseChannel::with_defaults(transport)
                    .execute(EchoService.serve())
                    .for_each(|response| async move {
                        tokio::spawn(response);
                    }),
            );
        }
    });
    addr
}

type Pending = Pin<Box<dyn Future<Output = ()> + Send>>;

struct TarpcConn {
    client: EchoClient,
    pending: FuturesUnordered<Pending>,
}

impl TarpcConn {
    async fn new(addr: SocketAddr) -> Self {
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let framed = tokio_util::codec::LengthDelimitedCodec::builder().new_framed(tcp);
        let transport =
            tarpc::serde_transport::new(framed, tarpc::tokio_serde::formats::Bincode::default());
        let client = EchoClient::new(tarpc::client::Config::default(), transport).spawn();
        Self {
            client,
            pending: FuturesUnordered::new(),
        }
    }
    fn send(&mut self, n: usize) {
        for _ in 0..n {
            let c = self.client.clone();
            self.pending.push(Box::pin(async move {
                let got = c
                    .echo(tarpc::context::current(), vec![0xab; PAYLOAD])
                    .await
                    .unwrap();
                assert_eq!(got.len(), PAYLOAD);
            }));
        }
    }
    async fn recv(&mut self) {
        self.pending.next().await.unwrap();
    }
    /// One call, awaited where it is made (as sequential application code does).
    async fn round_trip(&mut self) {
        let got = self
            .client
            .echo(tarpc::context::current(), vec![0xab; PAYLOAD])
            .await
            .unwrap();
        assert_eq!(got.len(), PAYLOAD);
    }
}

// ---------------------------------------------------------------------------------------------
// cypherwire: the real server with a `/ECHO PUT` route.

async fn cw_server(limits: ServerLimits) -> ServerHandle {
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

/// A bare session that queues `Request` messages and reads `Response`s.
struct CwSession {
    s: SecureStream<TcpStream>,
    next: u64,
}

impl CwSession {
    async fn new(addr: SocketAddr) -> Self {
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

/// The reconnecting client crate.
struct CwClient {
    client: cypherwire::client::Client,
    pending: FuturesUnordered<Pending>,
    /// Every request carries a 30 s deadline (`CYPHERWIRE_BENCH_DEADLINE`, profile mode).
    deadline: bool,
}

impl CwClient {
    async fn new(addr: SocketAddr) -> Self {
        let client = cypherwire::client::Client::builder(psk())
            .connect(addr.to_string())
            .unwrap();
        client.wait_online().await.unwrap();
        Self {
            client,
            pending: FuturesUnordered::new(),
            deadline: std::env::var_os("CYPHERWIRE_BENCH_DEADLINE").is_some(),
        }
    }
    fn request(&self) -> cypherwire::client::RequestBuilder {
        let request = self
            .client
            .request("/ECHO", "PUT")
            .data(Value::bytes(vec![0xab; PAYLOAD]));
        if self.deadline {
            request.deadline(Duration::from_secs(30))
        } else {
            request
        }
    }
    fn send(&mut self, n: usize) {
        for _ in 0..n {
            let reply = self.request().send();
            self.pending.push(Box::pin(async move {
                reply.await.unwrap();
            }));
        }
    }
    async fn recv(&mut self) {
        self.pending.next().await.unwrap();
    }
    /// One request, awaited where it is made (as sequential application code does).
    async fn round_trip(&mut self) {
        self.request().send().await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// One connection of any kind.

#[allow(
    clippy::large_enum_variant,
    reason = "a handful of connections, never moved in a hot loop"
)]
enum Conn {
    Frame(FrameClient),
    Tarpc(TarpcConn),
    CwSession(CwSession),
    CwClient(CwClient),
}

impl Conn {
    async fn new(kind: Kind, addr: SocketAddr) -> Self {
        match kind {
            Kind::Plain => Self::Frame(FrameClient::new(addr, false, PAYLOAD).await),
            Kind::Aead => Self::Frame(FrameClient::new(addr, true, PAYLOAD).await),
            Kind::Tarpc => Self::Tarpc(TarpcConn::new(addr).await),
            Kind::CwSession => Self::CwSession(CwSession::new(addr).await),
            Kind::CwClient => Self::CwClient(CwClient::new(addr).await),
        }
    }
    /// Sends `n` requests (without waiting for answers).
    async fn send(&mut self, n: usize) {
        match self {
            Self::Frame(c) => c.send(n).await,
            Self::Tarpc(c) => c.send(n),
            Self::CwSession(c) => c.send(n).await,
            Self::CwClient(c) => c.send(n),
        }
    }
    /// One request and its answer. Callers that hand each call to a set of futures for the
    /// pipelined workloads await it directly here: a set for one call at a time is bench
    /// overhead (a boxed future and a task node per request) that sequential code does not pay.
    async fn round_trip(&mut self) {
        match self {
            Self::Tarpc(c) => c.round_trip().await,
            Self::CwClient(c) => c.round_trip().await,
            _ => {
                self.send(1).await;
                self.recv().await;
            }
        }
    }
    /// Waits for one answer.
    async fn recv(&mut self) {
        match self {
            Self::Frame(c) => c.recv().await,
            Self::Tarpc(c) => c.recv().await,
            Self::CwSession(c) => c.recv().await,
            Self::CwClient(c) => c.recv().await,
        }
    }
}

/// A server of every kind, started once.
struct Servers {
    addrs: Vec<(Kind, SocketAddr)>,
    cw: ServerHandle,
}

impl Servers {
    async fn start() -> Self {
        let cw = cw_server(ServerLimits::default()).await;
        let addrs = vec![
            (Kind::Plain, echo_server(false).await),
            (Kind::Aead, echo_server(true).await),
            (Kind::Tarpc, tarpc_server().await),
            (Kind::CwSession, cw.local_addr()),
            (Kind::CwClient, cw.local_addr()),
        ];
        Self { addrs, cw }
    }
}

// ---------------------------------------------------------------------------------------------
// Workloads.

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

/// Sequential round trips on one connection.
async fn sequential(kind: Kind, addr: SocketAddr, n: usize) -> Figures {
    let mut c = Conn::new(kind, addr).await;
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        c.round_trip().await;
        lat.push(t.elapsed());
    }
    percentiles(lat, start.elapsed())
}

/// `depth` requests in flight on one connection (refilled by halves), `n` in total.
async fn pipelined(kind: Kind, addr: SocketAddr, n: usize, depth: usize) -> Figures {
    let mut c = Conn::new(kind, addr).await;
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
    Figures {
        rate: n as f64 / start.elapsed().as_secs_f64(),
        ..Figures::default()
    }
}

/// `conns` connections, each doing `n` sequential round trips, all at once.
async fn concurrent(kind: Kind, addr: SocketAddr, conns: usize, n: usize) -> Figures {
    let mut clients = Vec::new();
    for _ in 0..conns {
        clients.push(Conn::new(kind, addr).await);
    }
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for mut c in clients {
        set.spawn(async move {
            let mut lat = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                c.round_trip().await;
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

fn median(mut v: Vec<Figures>) -> (Figures, f64, f64) {
    v.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    let (min, max) = (v[0].rate, v[v.len() - 1].rate);
    (v[v.len() / 2], min, max)
}

struct Sizes {
    rounds: usize,
    sequential: usize,
    pipelined: usize,
    conns: usize,
    per_conn: usize,
}

fn sizes() -> Sizes {
    if std::env::var_os("CYPHERWIRE_BENCH_QUICK").is_some() {
        Sizes {
            rounds: 1,
            sequential: 1_000,
            pipelined: 10_000,
            conns: 20,
            per_conn: 100,
        }
    } else {
        Sizes {
            rounds: 5,
            sequential: 5_000,
            pipelined: 50_000,
            conns: 100,
            per_conn: 200,
        }
    }
}

/// Child mode (run under `taskset -c 0`): sequential round trips for every kind, interleaved,
/// on a current-thread runtime; prints `key rate p50 p99` lines.
fn pinned_child() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sz = sizes();
    rt.block_on(async {
        let servers = Servers::start().await;
        for _ in 0..sz.rounds {
            for &(kind, addr) in &servers.addrs {
                let f = sequential(kind, addr, sz.sequential).await;
                println!("{} {} {} {}", kind.key(), f.rate, f.p50_us, f.p99_us);
            }
        }
        servers.cw.shutdown().await;
    });
}

/// Runs the pinned child and collects its figures per kind (`None` without `taskset`).
fn pinned_sequential() -> Option<Vec<Vec<Figures>>> {
    let out = std::process::Command::new("taskset")
        .arg("-c")
        .arg("0")
        .arg(std::env::current_exe().unwrap())
        .arg("--pinned-child")
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "pinned run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let mut per: Vec<Vec<Figures>> = vec![Vec::new(); KINDS.len()];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let Some(i) = KINDS.iter().position(|k| k.key() == f[0]) else {
            continue;
        };
        per[i].push(Figures {
            rate: f[1].parse().unwrap(),
            p50_us: f[2].parse().unwrap(),
            p99_us: f[3].parse().unwrap(),
        });
    }
    Some(per)
}

// ---------------------------------------------------------------------------------------------
// Memory per idle authenticated connection.

/// Child mode: a server with limits large enough for the idle test; prints its address and
/// exits when its stdin closes.
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
        let mut line = String::new();
        let _ = tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut line)).await;
    });
}

/// RSS of a separate server process before and after `n` idle authenticated connections.
fn idle_rss(rt: &tokio::runtime::Runtime, n: usize) -> (u64, u64) {
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
    let addr: SocketAddr = line.trim().parse().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let before = cypherwire_tests::bench::rss_kib(child.id());
    let held = rt.block_on(async {
        let mut held = Vec::with_capacity(n);
        for _ in 0..n {
            held.push(CwSession::new(addr).await);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        held
    });
    let after = cypherwire_tests::bench::rss_kib(child.id());
    drop(held);
    drop(child.stdin.take());
    let _ = child.wait();
    (before, after)
}

/// For `perf record`: one workload of one transport (`KEY` = 1,000,000 requests 64 in flight,
/// `KEY:sequential` = 200,000 sequential round trips).
fn profile(rt: &tokio::runtime::Runtime, spec: &str) {
    let (key, sequential_mode) = match spec.strip_suffix(":sequential") {
        Some(key) => (key, true),
        None => (spec, false),
    };
    let kind = *KINDS
        .iter()
        .find(|k| k.key() == key)
        .expect("CYPHERWIRE_BENCH_PROFILE names a transport key");
    rt.block_on(async {
        let servers = Servers::start().await;
        let addr = servers.addrs.iter().find(|(k, _)| *k == kind).unwrap().1;
        let n = std::env::var("CYPHERWIRE_BENCH_PROFILE_N")
            .ok()
            .and_then(|v| v.parse().ok());
        let f = if sequential_mode {
            sequential(kind, addr, n.unwrap_or(200_000)).await
        } else {
            pipelined(kind, addr, n.unwrap_or(1_000_000), 64).await
        };
        println!("{}: {:.0} req/s", kind.label(), f.rate);
        servers.cw.shutdown().await;
    });
}

// ---------------------------------------------------------------------------------------------

fn main() {
    if std::env::args().any(|a| a == "--serve-idle") {
        serve_idle();
        return;
    }
    if std::env::args().any(|a| a == "--pinned-child") {
        pinned_child();
        return;
    }
    let sz = sizes();
    let threads = std::env::var("CYPHERWIRE_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let rt = if threads == 0 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .unwrap()
    };
    if let Ok(key) = std::env::var("CYPHERWIRE_BENCH_PROFILE") {
        profile(&rt, &key);
        return;
    }
    println!(
        "small request/response over 127.0.0.1, {PAYLOAD}-byte payloads, {} interleaved round(s)",
        sz.rounds
    );
    // rows[workload][kind] = figures of each round
    let names = [
        "sequential, 1 connection, pinned to one CPU",
        "sequential, 1 connection, unpinned",
        "64 in flight, 1 connection",
        "100 connections, sequential each",
    ];
    let mut rows: Vec<Vec<Vec<Figures>>> = vec![vec![Vec::new(); KINDS.len()]; names.len()];
    match pinned_sequential() {
        Some(per) => rows[0] = per,
        None => println!("(no taskset here: the pinned row is skipped)"),
    }
    rt.block_on(async {
        let servers = Servers::start().await;
        for _ in 0..sz.rounds {
            for (i, &(kind, addr)) in servers.addrs.iter().enumerate() {
                rows[1][i].push(sequential(kind, addr, sz.sequential).await);
                rows[2][i].push(pipelined(kind, addr, sz.pipelined, 64).await);
                rows[3][i].push(concurrent(kind, addr, sz.conns, sz.per_conn).await);
            }
        }
        servers.cw.shutdown().await;
    });

    let mut json = Vec::new();
    for (w, name) in names.iter().enumerate() {
        if rows[w].iter().any(Vec::is_empty) {
            continue;
        }
        let med: Vec<(Figures, f64, f64)> = rows[w].iter().cloned().map(median).collect();
        let (plain, aead, tarpc) = (med[0].0, med[1].0, med[2].0);
        println!("\n{name}:");
        println!(
            "| transport | req/s median (min–max) | p50 / p99 µs | × plain | × plain+AEAD | × tarpc | p50 ÷ plain |"
        );
        println!("| --- | --- | --- | --- | --- | --- | --- |");
        for (i, kind) in KINDS.iter().enumerate() {
            let (f, lo, hi) = med[i];
            let lat = if f.p50_us > 0.0 {
                format!("{:.1} / {:.1}", f.p50_us, f.p99_us)
            } else {
                "—".into()
            };
            let p50 = if f.p50_us > 0.0 {
                format!("{:.2}", f.p50_us / plain.p50_us)
            } else {
                "—".into()
            };
            println!(
                "| {} | {:.0} ({lo:.0}–{hi:.0}) | {lat} | {:.2} | {:.2} | {:.2} | {p50} |",
                kind.label(),
                f.rate,
                f.rate / plain.rate,
                f.rate / aead.rate,
                f.rate / tarpc.rate,
            );
            json.push(format!(
                "{{\"workload\":\"{name}\",\"transport\":\"{}\",\"rps_median\":{:.0},\"rps_min\":{lo:.0},\"rps_max\":{hi:.0},\"p50_us\":{:.1},\"p99_us\":{:.1},\"ratio_to_plain\":{:.4},\"ratio_to_aead_echo\":{:.4},\"ratio_to_tarpc\":{:.4}}}",
                kind.key(),
                f.rate,
                f.p50_us,
                f.p99_us,
                f.rate / plain.rate,
                f.rate / aead.rate,
                f.rate / tarpc.rate
            ));
        }
    }

    let n: usize = std::env::var("CYPHERWIRE_BENCH_IDLE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if sz.rounds == 1 { 1_000 } else { 10_000 });
    let (before, after) = idle_rss(&rt, n);
    let per = after.saturating_sub(before) as f64 / n as f64;
    println!(
        "\nidle authenticated connections: {n}; server RSS {before} KiB -> {after} KiB; {per:.1} KiB per connection (target ≤ 32)"
    );
    json.push(format!(
        "{{\"workload\":\"idle connections\",\"connections\":{n},\"rss_before_kib\":{before},\"rss_after_kib\":{after},\"kib_per_connection\":{per:.1}}}"
    ));
    let out = cypherwire_tests::bench::write_json("reqresp", &json).unwrap();
    println!("\nwritten: {}", out.display());
}
