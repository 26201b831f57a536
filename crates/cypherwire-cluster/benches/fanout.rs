//! Cross-instance broadcast on loopback, one run, rounds interleaved (medians with min–max):
//! - throughput: a burst of broadcasts from one instance, until every client has every one;
//!   3 instances (Redis in between) against the same load on 1 instance, and against raw
//!   Redis pub/sub to 3 subscribers (the engine's ceiling on this machine);
//! - latency: paced broadcasts, the time from `broadcast` to the push at a client on another
//!   instance (p50/p99), against a client on the broadcasting instance.
//!
//! Run: `cargo bench -p cypherwire-cluster --bench fanout` (needs `redis-server`).

#![allow(missing_docs, reason = "benchmark binary")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    reason = "benchmark code: a failure should abort, wall-clock timing is the point"
)]

use std::time::{Duration, Instant};

use cypherwire_client::{Client, Incoming};
use cypherwire_cluster::{ClusterKey, RedisBackplane, RedisOptions};
use cypherwire_server::{Server, ServerHandle};
use cypherwire_session::Psk;
use cypherwire_test_support::redis::{RedisServer, rand_suffix};
use cypherwire_wire::Value;
use tokio::sync::mpsc;

const ROUNDS: usize = 5;
/// Broadcasts per throughput run.
const BURST: usize = 20_480;
/// Broadcasts in flight at most (half a connection's default outbox).
const WINDOW: usize = 512;
/// Paced broadcasts per latency run, one every 500 µs.
const PACED: usize = 2_000;
/// Clients per setup (one per instance in the cluster).
const CLIENTS: usize = 3;
const PAYLOAD: usize = 100;

fn psk() -> Psk {
    Psk::from_passphrase("2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U").unwrap()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(v: &mut [Duration], q: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * q) as usize]
}

fn row(name: &str, unit: &str, mut v: Vec<f64>) -> f64 {
    let m = median(&mut v);
    let (lo, hi) = (v[0], v[v.len() - 1]);
    println!("| {name} | {m:.1} {unit} | {lo:.1}–{hi:.1} |");
    m
}

/// A setup: servers and one client on each (round-robin), with their push streams read by
/// tasks that report (index, send time) of each push.
struct Setup {
    servers: Vec<Server>,
    _clients: Vec<Client>,
    pushes: mpsc::Receiver<(usize, u64)>,
    /// Which server each client is on.
    on: Vec<usize>,
}

async fn setup(redis: Option<&RedisServer>, instances: usize) -> Setup {
    let key = ClusterKey::generate().unwrap();
    let mut options = RedisOptions::default();
    options.prefix = format!("cw:b{:x}:", rand_suffix());
    let mut servers = Vec::new();
    for _ in 0..instances {
        let mut b = Server::builder(psk());
        if let Some(r) = redis {
            let bp =
                RedisBackplane::connect_with(&r.url(), std::slice::from_ref(&key), options.clone())
                    .await
                    .unwrap();
            b = b.cluster(bp);
        }
        servers.push(b.bind("127.0.0.1:0").await.unwrap());
    }
    let (tx, pushes) = mpsc::channel(2 * BURST * CLIENTS);
    let mut clients = Vec::new();
    let mut on = Vec::new();
    for i in 0..CLIENTS {
        let s = i % instances;
        let c = Client::builder(psk())
            .incoming_capacity(65_536)
            .connect(servers[s].local_addr().to_string())
            .unwrap();
        c.wait_online().await.unwrap();
        let mut incoming = c.take_incoming().unwrap();
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(Incoming::Push(p)) = incoming.next().await {
                let sent = p.data.as_array().and_then(|a| a[0].as_u64()).unwrap_or(0);
                if tx.send((i, sent)).await.is_err() {
                    break;
                }
            }
        });
        clients.push(c);
        on.push(s);
    }
    let total: usize = loop {
        let n = servers.iter().map(|s| s.handle().count()).sum();
        if n == CLIENTS {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(total, CLIENTS);
    Setup {
        servers,
        _clients: clients,
        pushes,
        on,
    }
}

fn payload(start: Instant) -> Value {
    let ns = start.elapsed().as_nanos() as u64;
    Value::from(vec![Value::from(ns), Value::bytes(vec![0u8; PAYLOAD])])
}

/// Broadcasts from the first server in windows of [`WINDOW`] (each waits until every client
/// has every push of the window: outboxes are bounded, so an unbounded burst would only
/// measure slow-consumer disconnects); seconds for [`BURST`] broadcasts.
async fn burst(s: &mut Setup, start: Instant) -> f64 {
    let h: ServerHandle = s.servers[0].handle();
    let t0 = Instant::now();
    for _ in 0..BURST / WINDOW {
        for _ in 0..WINDOW {
            h.broadcast(payload(start));
        }
        for _ in 0..WINDOW * CLIENTS {
            tokio::time::timeout(Duration::from_secs(30), s.pushes.recv())
                .await
                .expect("every push arrives")
                .unwrap();
        }
    }
    t0.elapsed().as_secs_f64()
}

/// Paced broadcasts; latencies at clients on other instances and on the broadcasting one.
async fn paced(s: &mut Setup, start: Instant) -> (Vec<Duration>, Vec<Duration>) {
    let h = s.servers[0].handle();
    let sender = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_micros(500));
        for _ in 0..PACED {
            tick.tick().await;
            h.broadcast(payload(start));
        }
    });
    let (mut remote, mut local) = (Vec::new(), Vec::new());
    for _ in 0..PACED * CLIENTS {
        let (client, sent) = tokio::time::timeout(Duration::from_secs(60), s.pushes.recv())
            .await
            .expect("every push arrives")
            .unwrap();
        let lat = start.elapsed().saturating_sub(Duration::from_nanos(sent));
        if s.on[client] == 0 {
            &mut local
        } else {
            &mut remote
        }
        .push(lat);
    }
    sender.await.unwrap();
    (remote, local)
}

/// Raw Redis pub/sub: one publisher pipelining PUBLISH in windows of [`WINDOW`] (each waits
/// until every subscriber has it), 3 subscribers; seconds for [`BURST`] messages.
async fn raw_redis(redis: &RedisServer) -> f64 {
    use futures::StreamExt as _;
    let client = redis::Client::open(redis.url()).unwrap();
    let channel = format!("raw:{:x}", rand_suffix());
    let (tx, mut got) = mpsc::channel(2 * BURST * CLIENTS);
    let mut readers = Vec::new();
    for _ in 0..CLIENTS {
        let mut sub = client.get_async_pubsub().await.unwrap();
        sub.subscribe(&channel).await.unwrap();
        let tx = tx.clone();
        readers.push(tokio::spawn(async move {
            let mut stream = sub.on_message();
            let mut n = 0;
            while stream.next().await.is_some() {
                let _ = tx.send(()).await;
                n += 1;
                if n == BURST {
                    break;
                }
            }
        }));
    }
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let body = vec![7u8; PAYLOAD + 90]; // about the size of a sealed publication
    let t0 = Instant::now();
    for _ in 0..BURST / WINDOW {
        let mut pipe = redis::pipe();
        for _ in 0..WINDOW {
            pipe.publish(&channel, &body).ignore();
        }
        let () = pipe.query_async(&mut con).await.unwrap();
        for _ in 0..WINDOW * CLIENTS {
            got.recv().await.unwrap();
        }
    }
    let t = t0.elapsed().as_secs_f64();
    for r in readers {
        let _ = r.await;
    }
    t
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(redis) = RedisServer::start() else {
        eprintln!("redis-server is needed for this benchmark");
        return;
    };
    let start = Instant::now();
    let (mut three, mut one, mut raw) = (Vec::new(), Vec::new(), Vec::new());
    let (mut remote_p50, mut remote_p99, mut local_p50, mut local_p99) =
        (vec![], vec![], vec![], vec![]);
    for round in 0..ROUNDS {
        // Interleaved: each round measures every setup once.
        let mut c = setup(Some(&redis), 3).await;
        three.push((BURST * CLIENTS) as f64 / burst(&mut c, start).await / 1e3);
        let (mut r, mut l) = paced(&mut c, start).await;
        remote_p50.push(percentile(&mut r, 0.5).as_secs_f64() * 1e3);
        remote_p99.push(percentile(&mut r, 0.99).as_secs_f64() * 1e3);
        local_p50.push(percentile(&mut l, 0.5).as_secs_f64() * 1e3);
        local_p99.push(percentile(&mut l, 0.99).as_secs_f64() * 1e3);
        for s in &c.servers {
            s.handle().shutdown_now().await;
        }
        let mut s = setup(None, 1).await;
        one.push((BURST * CLIENTS) as f64 / burst(&mut s, start).await / 1e3);
        for s in &s.servers {
            s.handle().shutdown_now().await;
        }
        raw.push((BURST * CLIENTS) as f64 / raw_redis(&redis).await / 1e3);
        eprintln!("round {} of {ROUNDS} done", round + 1);
    }
    println!("| figure | median | min–max |");
    println!("| --- | --- | --- |");
    let t3 = row(
        "3 instances: deliveries to clients /s (thousands)",
        "k/s",
        three.clone(),
    );
    let t1 = row(
        "1 instance: deliveries to clients /s (thousands)",
        "k/s",
        one.clone(),
    );
    let tr = row(
        "raw Redis pub/sub, 3 subscribers: deliveries /s (thousands)",
        "k/s",
        raw.clone(),
    );
    row(
        "3 instances: broadcast → push at another instance, p50",
        "ms",
        remote_p50,
    );
    row(
        "3 instances: broadcast → push at another instance, p99",
        "ms",
        remote_p99,
    );
    row(
        "3 instances: broadcast → push on the same instance, p50",
        "ms",
        local_p50,
    );
    row(
        "3 instances: broadcast → push on the same instance, p99",
        "ms",
        local_p99,
    );
    let ratio = |a: &[f64], b: &[f64]| {
        let mut r: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
        median(&mut r)
    };
    println!();
    println!(
        "ratios (median of per-round ratios): 3 instances / raw Redis {:.2}x, 3 instances / 1 instance {:.2}x (medians {t3:.1}, {t1:.1}, {tr:.1} k/s)",
        ratio(&three, &raw),
        ratio(&three, &one)
    );
}
