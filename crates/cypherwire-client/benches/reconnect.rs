//! Reconnect figures: time from a server restart until 100 clients are all online again, and
//! the request latency seen across the restart (a steady stream of sequential requests from
//! each client), against the same stream's latency without a restart, in the same run.
//! 5 rounds; medians with min–max.
//!
//! Run: `cargo bench -p cypherwire-client --bench reconnect`.

#![allow(missing_docs, reason = "benchmark binary")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    clippy::cast_precision_loss,
    reason = "benchmark code: a failure should abort, wall-clock timing is the point"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cypherwire_client::{Backoff, Client};
use cypherwire_server::{Ctx, HandlerError, Reply, Server, ServerHandle};
use cypherwire_session::Psk;
use cypherwire_wire::{Request, Value};

const CLIENTS: usize = 100;
const ROUNDS: usize = 5;

fn psk() -> Psk {
    Psk::from_bytes([0x44; 32])
}

async fn server(addr: &str) -> ServerHandle {
    Server::builder(psk())
        .route("/ECHO", "PUT", |req: Request, _ctx: Ctx| async move {
            Ok::<_, HandlerError>(Reply::new(req.data))
        })
        .bind(addr)
        .await
        .unwrap()
        .handle()
}

fn percentile(v: &mut [Duration], q: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * q) as usize]
}

/// Runs sequential requests from every client until `stop`; returns all latencies.
async fn load(clients: &[Client], stop: Arc<AtomicBool>) -> Vec<Duration> {
    let mut set = tokio::task::JoinSet::new();
    for c in clients {
        let (c, stop) = (c.clone(), stop.clone());
        set.spawn(async move {
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                c.request("/ECHO", "PUT")
                    .data(Value::bytes(vec![1; 100]))
                    .send()
                    .await
                    .unwrap();
                lat.push(t.elapsed());
            }
            lat
        });
    }
    let mut all = Vec::new();
    while let Some(l) = set.join_next().await {
        all.extend(l.unwrap());
    }
    all
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut h = server("127.0.0.1:0").await;
        let addr = h.local_addr().to_string();
        let mut backoff = Backoff::default();
        backoff.initial = Duration::from_millis(50);
        backoff.max = Duration::from_millis(500);
        let clients: Vec<Client> = (0..CLIENTS)
            .map(|_| {
                Client::builder(psk())
                    .backoff(backoff)
                    .connect(addr.clone())
                    .unwrap()
            })
            .collect();
        for c in &clients {
            c.wait_online().await.unwrap();
        }
        let (mut back_online, mut p99_base, mut p99_restart, mut max_restart) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            // Baseline: the same load for 1 s without a restart.
            let stop = Arc::new(AtomicBool::new(false));
            let run = tokio::spawn(load_owned(clients.clone(), stop.clone()));
            tokio::time::sleep(Duration::from_secs(1)).await;
            stop.store(true, Ordering::Relaxed);
            let mut lat = run.await.unwrap();
            p99_base.push(percentile(&mut lat, 0.99));

            // The same load across a restart.
            let stop = Arc::new(AtomicBool::new(false));
            let run = tokio::spawn(load_owned(clients.clone(), stop.clone()));
            tokio::time::sleep(Duration::from_millis(300)).await;
            h.shutdown_now().await;
            let restarted = Instant::now();
            h = server(&addr).await;
            for c in &clients {
                let mut st = c.status();
                let _ = st.wait_for(|s| s.is_online()).await;
            }
            // All online again: but a client may still have been online on the dead server for
            // a moment; wait until the new server holds every connection.
            while h.count() < CLIENTS {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            back_online.push(restarted.elapsed());
            tokio::time::sleep(Duration::from_millis(300)).await;
            stop.store(true, Ordering::Relaxed);
            let mut lat = run.await.unwrap();
            p99_restart.push(percentile(&mut lat, 0.99));
            max_restart.push(percentile(&mut lat, 1.0));
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let med = |v: &mut Vec<Duration>| {
            v.sort();
            (v[v.len() / 2], v[0], v[v.len() - 1])
        };
        let (b, bmin, bmax) = med(&mut back_online);
        let (p, pmin, pmax) = med(&mut p99_base);
        let (r, rmin, rmax) = med(&mut p99_restart);
        let (m, mmin, mmax) = med(&mut max_restart);
        println!("| figure ({CLIENTS} clients, {ROUNDS} rounds) | median | min–max |");
        println!("| --- | --- | --- |");
        println!(
            "| restart → all clients online on the new server | {:.1} ms | {:.1}–{:.1} ms |",
            ms(b),
            ms(bmin),
            ms(bmax)
        );
        println!(
            "| request p99 latency, steady | {:.2} ms | {:.2}–{:.2} ms |",
            ms(p),
            ms(pmin),
            ms(pmax)
        );
        println!(
            "| request p99 latency, across a restart | {:.2} ms | {:.2}–{:.2} ms |",
            ms(r),
            ms(rmin),
            ms(rmax)
        );
        println!(
            "| worst request latency across a restart | {:.1} ms | {:.1}–{:.1} ms |",
            ms(m),
            ms(mmin),
            ms(mmax)
        );
        for c in &clients {
            c.close_within(Duration::from_millis(100)).await;
        }
        h.shutdown().await;
    });
}

async fn load_owned(clients: Vec<Client>, stop: Arc<AtomicBool>) -> Vec<Duration> {
    load(&clients, stop).await
}
