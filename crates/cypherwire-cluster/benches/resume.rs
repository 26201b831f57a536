//! What a resume costs when the client lands on another instance (a handoff) against landing
//! on the same one, on loopback, interleaved: the time from the connection's cut to the
//! client being online again with its session (`resumed: true`), p50/p99 per round.
//!
//! Run: `cargo bench -p cypherwire-cluster --bench resume` (needs `redis-server`).

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

use cypherwire_client::{Client, Status};
use cypherwire_cluster::{ClusterKey, RedisBackplane, RedisOptions};
use cypherwire_server::Server;
use cypherwire_session::Psk;
use cypherwire_test_support::proxy::FaultProxy;
use cypherwire_test_support::redis::{RedisServer, rand_suffix};

const ROUNDS: usize = 5;
/// Resumes of each kind per round.
const RESUMES: usize = 100;
/// Pushes buffered in the session at each cut (replayed or carried over).
const PUSHES: usize = 10;

fn psk() -> Psk {
    Psk::from_passphrase("2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U").unwrap()
}

fn percentile(v: &mut [Duration], q: f64) -> f64 {
    v.sort();
    v[((v.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1e3
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Cuts the client's connection, pointing the proxy at `to` first; the time until it is
/// online again with its session.
async fn resume_once(
    client: &Client,
    lb: &FaultProxy,
    to: std::net::SocketAddr,
    server: &Server,
) -> Duration {
    let mut status = client.status_events();
    // Pushes the client has not acknowledged travel with the session.
    if let Some(c) = server.handle().connections().first() {
        for i in 0..PUSHES {
            let _ = server.handle().send_to(c.id, i as i64);
        }
    }
    lb.set_target(to);
    let t0 = Instant::now();
    lb.cut_all();
    let mut dropped = false;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), status.next())
            .await
            .expect("back online")
        {
            Some(Status::Offline { .. } | Status::Reconnecting { .. }) => dropped = true,
            Some(Status::Online { resumed }) if dropped => {
                assert!(resumed, "the session resumed");
                return t0.elapsed();
            }
            _ => {}
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(redis) = RedisServer::start() else {
        eprintln!("redis-server is needed for this benchmark");
        return;
    };
    let key = ClusterKey::generate().unwrap();
    let mut options = RedisOptions::default();
    options.prefix = format!("cw:r{:x}:", rand_suffix());
    let mut servers = Vec::new();
    for _ in 0..2 {
        let bp =
            RedisBackplane::connect_with(&redis.url(), std::slice::from_ref(&key), options.clone())
                .await
                .unwrap();
        servers.push(
            Server::builder(psk())
                .cluster(bp)
                .bind("127.0.0.1:0")
                .await
                .unwrap(),
        );
    }
    let lb = FaultProxy::start(servers[0].local_addr()).await.unwrap();
    let client = Client::builder(psk())
        .connect(lb.addr().to_string())
        .unwrap();
    let mut incoming = client.take_incoming().unwrap();
    tokio::spawn(async move { while incoming.next().await.is_some() {} });
    client.wait_online().await.unwrap();
    let (mut same50, mut same99, mut other50, mut other99) = (vec![], vec![], vec![], vec![]);
    let mut at = 0;
    for round in 0..ROUNDS {
        let (mut same, mut other) = (Vec::new(), Vec::new());
        for _ in 0..RESUMES {
            // Interleaved: back onto the same instance, then over to the other one.
            let here = servers[at].local_addr();
            same.push(resume_once(&client, &lb, here, &servers[at]).await);
            let next = 1 - at;
            other.push(resume_once(&client, &lb, servers[next].local_addr(), &servers[at]).await);
            at = next;
        }
        same50.push(percentile(&mut same, 0.5));
        same99.push(percentile(&mut same, 0.99));
        other50.push(percentile(&mut other, 0.5));
        other99.push(percentile(&mut other, 0.99));
        eprintln!("round {} of {ROUNDS} done", round + 1);
    }
    let ratio: Vec<f64> = other50.iter().zip(&same50).map(|(o, s)| o / s).collect();
    println!("| figure | median | min–max |");
    println!("| --- | --- | --- |");
    for (name, mut v) in [
        ("resume on the same instance, p50", same50),
        ("resume on the same instance, p99", same99),
        ("resume on another instance (handoff), p50", other50),
        ("resume on another instance (handoff), p99", other99),
    ] {
        let m = median(&mut v);
        println!(
            "| {name} | {m:.3} ms | {:.3}–{:.3} ms |",
            v[0],
            v[v.len() - 1]
        );
    }
    let mut ratio = ratio;
    println!();
    println!(
        "ratio (median of per-round p50 ratios): another instance / same instance {:.2}x",
        median(&mut ratio)
    );
}
