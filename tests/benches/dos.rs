//! The DoS battery (threats-and-tests): the server as a separate process, a legitimate load of
//! 10 clients measured (sequential requests, p50/p99) unloaded and under each attack in the
//! same run, legitimate failures counted, and the server's RSS sampled (before, peak, after).
//!
//! Attacks, from 127.0.0.1 and 127.0.0.2–127.0.0.21 (so per-address limits do not simply
//! absorb them; the broadcast flood, which comes after attacks that get those addresses banned,
//! from 127.0.1.x and 127.0.2.x): 10,000 oversize length prefixes; 5,000 slowloris connections (one byte, then
//! silence); 10,000 garbage handshakes; 2,000 well-formed handshakes with the wrong key;
//! 1,000 nesting bombs from authenticated peers; a broadcast load (200 actions of 1 KiB to every
//! connection, the legitimate clients included, every 50 ms) alone and then with 50
//! authenticated subscribers that never read — compare those two rows for the cost of the
//! subscribers. (Wrong-password floods and
//! descriptor exhaustion have their own tests: `mesh.rs`, `fd_exhaustion.rs`.)
//!
//! Run: `cargo bench -p cypherwire-tests --bench dos`.

#![allow(missing_docs, reason = "benchmark binary")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    clippy::cast_precision_loss,
    reason = "benchmark code: a failure should abort, wall-clock timing is the point"
)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cypherwire::client::Client;
use cypherwire::session::{ClientAuth, Psk, SessionConfig};
use cypherwire_tests::bench::rss_kib;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const BIN: &str = env!("CARGO_BIN_EXE_chaos-server");
const KEY: [u8; 32] = [0x5c; 32];
const LEGIT: usize = 10;
const WINDOW: Duration = Duration::from_millis(2_000);

/// Flood requests the server answered (each broadcast 200 actions of 1 KiB).
static FLOODS_ANSWERED: AtomicU64 = AtomicU64::new(0);

fn percentile(v: &mut [Duration], q: f64) -> Duration {
    v.sort();
    v.get(((v.len() as f64 - 1.0) * q) as usize)
        .copied()
        .unwrap_or_default()
}

/// Sequential requests from every legitimate client for the window: latencies and failures.
async fn legit_window(clients: &[Client]) -> (Vec<Duration>, u64) {
    let stop = Instant::now() + WINDOW;
    let mut set = tokio::task::JoinSet::new();
    for (n, c) in clients.iter().enumerate() {
        let c = c.clone();
        set.spawn(async move {
            let (mut lat, mut failed) = (Vec::new(), 0u64);
            let mut i = 0u64;
            while Instant::now() < stop {
                let t = Instant::now();
                match c
                    .request("/ADD", "ONE")
                    .data(i)
                    .metadata(n as u64)
                    .deadline(Duration::from_secs(5))
                    .send()
                    .await
                    .map(|r| r.data::<u64>().ok())
                {
                    Ok(Some(v)) if v == i + 1 => lat.push(t.elapsed()),
                    _ => failed += 1,
                }
                i += 1;
            }
            (lat, failed)
        });
    }
    let (mut all, mut failed) = (Vec::new(), 0);
    while let Some(r) = set.join_next().await {
        let (l, f) = r.unwrap();
        all.extend(l);
        failed += f;
    }
    (all, failed)
}

async fn dial_from(source: u32, addr: SocketAddr) -> Option<TcpStream> {
    dial_from_subnet(0, source, addr).await
}

/// Dials from 127.0.`subnet`.(1 + source % 21): attacks after the ones that get
/// 127.0.0.x banned use their own addresses.
async fn dial_from_subnet(subnet: u8, source: u32, addr: SocketAddr) -> Option<TcpStream> {
    let sock = TcpSocket::new_v4().ok()?;
    let ip = std::net::Ipv4Addr::new(127, 0, subnet, u8::try_from(1 + source % 21).unwrap_or(1));
    sock.bind(SocketAddr::new(ip.into(), 0)).ok()?;
    sock.connect(addr).await.ok()
}

/// Runs `count` attack connections, `parallel` at a time, until done or `stop`.
async fn attack<F, Fut>(
    count: u32,
    parallel: u32,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    f: F,
) where
    F: Fn(u32) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let f = Arc::new(f);
    let next = Arc::new(AtomicU64::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..parallel {
        let (f, next, stop, done) = (f.clone(), next.clone(), stop.clone(), done.clone());
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= u64::from(count) || stop.load(Ordering::Relaxed) {
                    return;
                }
                f(u32::try_from(i).unwrap_or(0)).await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while set.join_next().await.is_some() {}
}

/// Reads until the peer closes (or 10 s pass).
async fn drain(mut s: TcpStream) {
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
}

struct Row {
    name: &'static str,
    /// Actions broadcast during the row (the broadcast-load rows).
    broadcast: u64,
    attempted: u64,
    p50: Duration,
    p99: Duration,
    failed: u64,
    rss_peak: u64,
    rss_after: u64,
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dos");
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("executions.log");
    let _ = std::fs::remove_file(&log);
    let mut server: Child = Command::new(BIN)
        .args(["127.0.0.1:0", log.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .parse()
        .unwrap();
    let pid = server.id();
    rt.block_on(async move {
        let clients: Vec<Client> = (0..LEGIT)
            .map(|_| Client::builder(Psk::from_bytes(KEY)).connect(addr.to_string()).unwrap())
            .collect();
        for c in &clients {
            c.wait_online().await.unwrap();
        }
        let rss_start = rss_kib(pid);
        let (mut lat, failed) = legit_window(&clients).await;
        let base = Row {
            name: "none (baseline)",
            broadcast: 0,
            attempted: 0,
            p50: percentile(&mut lat, 0.5),
            p99: percentile(&mut lat, 0.99),
            failed,
            rss_peak: rss_kib(pid),
            rss_after: rss_kib(pid),
        };
        let mut rows = vec![base];

        type Attack = (&'static str, u32, u32, Arc<dyn Fn(u32) -> BoxFut + Send + Sync>);
        let attacks: Vec<Attack> = vec![
            ("10,000 oversize length prefixes", 10_000, 100, Arc::new(move |i| {
                Box::pin(async move {
                    if let Some(mut s) = dial_from(i, addr).await {
                        let _ = s.write_all(&[0xff, 0xff, 0xff, 0xff]).await;
                        drain(s).await;
                    }
                })
            })),
            ("5,000 slowloris connections", 5_000, 5_000, Arc::new(move |i| {
                Box::pin(async move {
                    if let Some(mut s) = dial_from(i, addr).await {
                        let _ = s.write_all(&[0x00]).await;
                        tokio::time::sleep(WINDOW).await;
                        drop(s);
                    }
                })
            })),
            ("10,000 garbage handshakes", 10_000, 100, Arc::new(move |i| {
                Box::pin(async move {
                    if let Some(mut s) = dial_from(i, addr).await {
                        let mut junk = vec![0u8, 0, 0, 60];
                        junk.extend((0..60u32).map(|k| (k.wrapping_mul(31).wrapping_add(i) % 251) as u8));
                        let _ = s.write_all(&junk).await;
                        drain(s).await;
                    }
                })
            })),
            ("2,000 handshakes with the wrong key", 2_000, 32, Arc::new(move |i| {
                Box::pin(async move {
                    if let Some(s) = dial_from(i, addr).await {
                        let wrong = ClientAuth::Psk(Psk::from_bytes([0x11; 32]));
                        let _ = cypherwire::session::connect(s, &wrong, &SessionConfig::default()).await;
                    }
                })
            })),
            ("1,000 nesting bombs (authenticated)", 1_000, 32, Arc::new(move |i| {
                Box::pin(async move {
                    if let Some(s) = dial_from(i, addr).await {
                        let auth = ClientAuth::Psk(Psk::from_bytes(KEY));
                        if let Ok(mut s) = cypherwire::session::connect(s, &auth, &SessionConfig::default()).await {
                            let bomb = [vec![0x01, 0x06], vec![0x91; 100_000], vec![0x01]].concat();
                            let _ = s.send(&bomb).await;
                            while matches!(s.recv().await, Ok(Some(_))) {}
                        }
                    }
                })
            })),
            ("broadcast load alone: 200 actions of 1 KiB to every connection every 50 ms", 2_000, 1, flood(addr, 0)),
            ("the same broadcast load + 50 never-reading subscribers", 50 + 2_000, 51, flood(addr, 50)),
        ];
        for (name, count, parallel, f) in attacks {
            let stop = Arc::new(AtomicBool::new(false));
            let done = Arc::new(AtomicU64::new(0));
            let peak = Arc::new(AtomicU64::new(0));
            let sampler = {
                let (stop, peak) = (stop.clone(), peak.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                })
            };
            let f2 = f.clone();
            let att = tokio::spawn(attack(count, parallel, stop.clone(), done.clone(), move |i| f2(i)));
            // Let the attack build up, then measure the legitimate load under it.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (mut lat, failed) = legit_window(&clients).await;
            stop.store(true, Ordering::Relaxed);
            let _ = att.await;
            let _ = sampler.await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            rows.push(Row {
                name,
                broadcast: FLOODS_ANSWERED.swap(0, Ordering::Relaxed) * 200,
                attempted: done.load(Ordering::Relaxed),
                p50: percentile(&mut lat, 0.5),
                p99: percentile(&mut lat, 0.99),
                failed,
                rss_peak: peak.load(Ordering::Relaxed),
                rss_after: rss_kib(pid),
            });
        }
        let base_p99 = rows[0].p99;
        println!("server RSS at start: {rss_start} KiB; legitimate load: {LEGIT} clients, sequential requests, {WINDOW:?} per window");
        println!(
            "| attack | attack connections made | legit p50 | legit p99 | p99 / baseline | legit failures | RSS peak | RSS after |"
        );
        println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
        for r in &rows {
            println!(
                "| {} | {} | {:.0} µs | {:.0} µs | {:.2}× | {} | {} KiB | {} KiB |",
                r.name,
                r.attempted,
                r.p50.as_secs_f64() * 1e6,
                r.p99.as_secs_f64() * 1e6,
                r.p99.as_secs_f64() / base_p99.as_secs_f64(),
                r.failed,
                r.rss_peak,
                r.rss_after
            );
        }
        for r in rows.iter().filter(|r| r.broadcast > 0) {
            println!("{}: {} actions of 1 KiB broadcast", r.name, r.broadcast);
        }
        for c in clients {
            c.close_within(Duration::from_millis(100)).await;
        }
    });
    let _ = server.kill();
    let _ = server.wait();
}

/// A boxed attack future.
type BoxFut = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// The broadcast load: attack indices below `subscribers` are subscribers that authenticate
/// and never read (their outboxes fill; the server must cut them without anyone else
/// waiting), from 127.0.1.x; the others, from 127.0.2.x, each ask the server for 200
/// broadcasts of 1 KiB, wait for the answer, then pause 50 ms.
fn flood(addr: SocketAddr, subscribers: u32) -> Arc<dyn Fn(u32) -> BoxFut + Send + Sync> {
    Arc::new(move |i| {
        Box::pin(async move {
            let auth = ClientAuth::Psk(Psk::from_bytes(KEY));
            let cfg = SessionConfig::default();
            if i < subscribers {
                if let Some(s) = dial_from_subnet(1, i, addr).await
                    && let Ok(s) = cypherwire::session::connect(s, &auth, &cfg).await
                {
                    tokio::time::sleep(WINDOW + Duration::from_millis(500)).await;
                    drop(s);
                }
            } else if let Some(s) = dial_from_subnet(2, i, addr).await
                && let Ok(mut s) = cypherwire::session::connect(s, &auth, &cfg).await
            {
                let req = cypherwire::wire::Request::new(1, "/FLOOD", "GO").with_data(200u64);
                let _ = s.send_message(&req.into()).await;
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    while let Ok(Some(m)) = s.recv_message().await {
                        if matches!(m, cypherwire::wire::Message::Response(_)) {
                            FLOODS_ANSWERED.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                })
                .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    })
}
