//! The real server and the real reconnecting client in virtual time, over a simulated network
//! with latency, packet loss (2–10 % of chunks arrive a 200 ms retransmission later), cut links
//! and partitions (`cypherwire_test_support::simnet`): 20 clients × 300 requests, 8 in flight
//! each, per seed; 20 seeds.
//!
//! Invariants, for every seed: each request resolves exactly once, with its own answer (none
//! lost, none wrong), and runs on the server exactly once (cuts never make the server run a
//! request twice: resumption answers resends from its cache). Faults come from a seeded
//! generator; the seed is printed, and `CYPHERWIRE_SIM_SEED=N` replays one.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failure should abort the test"
)]

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cypherwire::client::{Backoff, Client};
use cypherwire::server::{Ctx, HandlerError, Reply, ResumePolicy, Server};
use cypherwire::session::Psk;
use cypherwire::wire::{Request, Value};
use cypherwire_test_support::rng::SeededRng;
use cypherwire_test_support::simnet::{NetStats, SimNet};
use tokio::task::JoinSet;

const CLIENTS: u64 = 20;
const REQUESTS: u64 = 300;
const IN_FLIGHT: usize = 8;

#[derive(Debug, Default)]
struct Outcome {
    ok: u64,
    wrong: u64,
    errors: u64,
    executed_twice: u64,
    executed: u64,
    net: NetStats,
    virtual_secs: f64,
}

/// One seed's run; `session_ttl` overrides how long the server keeps a detached session.
fn run_seed(seed: u64, session_ttl: Option<Duration>) -> Outcome {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async move {
        let start = tokio::time::Instant::now();
        let mut rng = SeededRng::new(seed);
        let net = SimNet::new(Duration::from_millis(1 + rng.below(20))).with_loss(
            20 + rng.below(80),
            Duration::from_millis(200),
            rng.next_u64(),
        );
        let psk = Psk::from_bytes([0x33; 32]);
        // How many times each request (by its payload) ran on the server.
        let runs: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
        let runs2 = runs.clone();
        let mut resume = ResumePolicy::default();
        if let Some(ttl) = session_ttl {
            resume.ttl = ttl;
        }
        let server = Server::builder(psk.clone())
            .resume_policy(resume)
            .route("/WORK", "RUN", move |req: Request, _: Ctx| {
                let runs = runs2.clone();
                async move {
                    let key = req.data.as_u64().unwrap_or(u64::MAX);
                    *runs.lock().unwrap().entry(key).or_insert(0) += 1;
                    // Some work takes (virtual) time, so cuts catch requests mid-flight.
                    let ms = key % 7 * 5;
                    if ms > 0 {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                    Ok::<_, HandlerError>(Reply::new(req.data))
                }
            })
            .serve_on(net.listen())
            .await
            .unwrap();

        // The fault schedule: runs until the clients are done.
        let faults_net = net.clone();
        let mut fault_rng = SeededRng::new(rng.next_u64());
        let faults = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(20 + fault_rng.below(300))).await;
                match fault_rng.below(10) {
                    0..=4 => {
                        faults_net.cut_one(usize::try_from(fault_rng.below(1024)).unwrap());
                    }
                    5..=6 => faults_net.cut_all(),
                    _ => faults_net.partition(Duration::from_millis(50 + fault_rng.below(1_500))),
                }
            }
        });

        let mut backoff = Backoff::default();
        backoff.initial = Duration::from_millis(20);
        backoff.max = Duration::from_millis(400);
        let mut clients = JoinSet::new();
        for c in 0..CLIENTS {
            let ip = Ipv4Addr::new(10, 0, 1, u8::try_from(c + 1).unwrap());
            let client = Client::builder(psk.clone())
                .backoff(backoff)
                .connect_with(net.connector(ip))
                .unwrap();
            clients.spawn(async move {
                let mut results = Vec::new();
                let mut in_flight = JoinSet::new();
                for i in 0..REQUESTS {
                    let key = c * 1_000_000 + i;
                    if in_flight.len() >= IN_FLIGHT {
                        results.push(in_flight.join_next().await.unwrap().unwrap());
                    }
                    let call = client.request("/WORK", "RUN").data(Value::from(key)).send();
                    in_flight.spawn(async move { (key, call.await) });
                }
                while let Some(r) = in_flight.join_next().await {
                    results.push(r.unwrap());
                }
                client.close_within(Duration::from_secs(1)).await;
                results
            });
        }
        let mut out = Outcome::default();
        // Bounded in virtual time: far beyond what the faults can delay.
        let all = tokio::time::timeout(Duration::from_secs(3_600), async {
            let mut all = Vec::new();
            while let Some(r) = clients.join_next().await {
                all.extend(r.unwrap());
            }
            all
        })
        .await
        .expect("every request resolves within an hour of virtual time");
        faults.abort();
        let mut answered: HashMap<u64, u32> = HashMap::new();
        for (key, result) in all {
            *answered.entry(key).or_insert(0) += 1;
            match result {
                Ok(reply) if reply.data == Value::from(key) => out.ok += 1,
                Ok(_) => out.wrong += 1,
                Err(e) => {
                    eprintln!("seed {seed}: request {key} failed: {e}");
                    out.errors += 1;
                }
            }
        }
        assert_eq!(
            answered.len() as u64,
            CLIENTS * REQUESTS,
            "every request resolved"
        );
        assert!(answered.values().all(|n| *n == 1), "each exactly once");
        {
            let runs = runs.lock().unwrap();
            out.executed = runs.len() as u64;
            out.executed_twice = runs.values().filter(|n| **n > 1).count() as u64;
        }
        out.net = net.stats();
        out.virtual_secs = start.elapsed().as_secs_f64();
        server.handle().shutdown_now().await;
        out
    })
}

#[test]
fn client_and_server_survive_a_faulty_network_in_virtual_time() {
    let seeds: Vec<u64> = match std::env::var("CYPHERWIRE_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("CYPHERWIRE_SIM_SEED is a number")],
        Err(_) => {
            let base = u64::from(std::process::id()) << 20
                ^ std::time::SystemTime::UNIX_EPOCH
                    .elapsed()
                    .map_or(0, |d| d.as_secs());
            (0..20).map(|i| base.wrapping_add(i * 7919)).collect()
        }
    };
    for seed in seeds {
        println!("seed {seed} (replay with CYPHERWIRE_SIM_SEED={seed})");
        let o = run_seed(seed, None);
        println!(
            "  {} requests: {} ok, {} wrong, {} failed; executed {} distinct, {} twice; {} connections, {} cuts, {} partitions, {} refused; {:.1} s virtual",
            CLIENTS * REQUESTS,
            o.ok,
            o.wrong,
            o.errors,
            o.executed,
            o.executed_twice,
            o.net.connections,
            o.net.cuts,
            o.net.partitions,
            o.net.refused,
            o.virtual_secs
        );
        assert_eq!(o.wrong, 0, "seed {seed}: wrong answers");
        assert_eq!(o.errors, 0, "seed {seed}: failed requests");
        assert_eq!(o.ok, CLIENTS * REQUESTS, "seed {seed}: lost requests");
        assert_eq!(
            o.executed,
            CLIENTS * REQUESTS,
            "seed {seed}: requests never run"
        );
        assert_eq!(o.executed_twice, 0, "seed {seed}: requests run twice");
        assert!(o.net.cuts > 0, "seed {seed}: the faults never hit a link");
    }
}

/// The checks above can fail: with sessions that expire at once (no resumption), requests
/// caught by a cut are run again on the fresh session — the simulation sees it, while every
/// caller still gets exactly one right answer.
#[test]
fn without_resumption_the_simulation_sees_requests_run_twice() {
    let mut twice = 0;
    for seed in [1, 2, 3] {
        let o = run_seed(seed, Some(Duration::from_millis(1)));
        println!(
            "seed {seed}, sessions expiring after 1 ms: {} ok, {} wrong, {} run twice, {} cuts",
            o.ok, o.wrong, o.executed_twice, o.net.cuts
        );
        assert_eq!(o.ok, CLIENTS * REQUESTS);
        assert_eq!(o.wrong, 0);
        twice += o.executed_twice;
    }
    assert!(
        twice > 0,
        "cuts without resumption must re-run some requests"
    );
}
