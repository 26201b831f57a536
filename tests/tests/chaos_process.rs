//! Reconnect chaos with the server as a separate process, killed with SIGKILL and restarted
//! on the same port, and every connection also cut by a proxy between kills, while 100 clients
//! × 1,000 requests run (8 in flight each). The CI tier: 5 kills and 5 cuts. Reports attempts, ok, lost, wrong, executed twice (allowed by the delivery contract
//! only for requests in flight when the process died), clients recovered, and reconnect time
//! p50/p99; asserts nothing lost, nothing wrong, everything executed.
//!
//! Soak: `CYPHERWIRE_CHAOS_CLIENTS=1000 CYPHERWIRE_CHAOS_REQUESTS=10000
//! CYPHERWIRE_CHAOS_KILLS=20 CYPHERWIRE_CHAOS_GAP_MS=5000 cargo nextest run --profile soak
//! -p cypherwire-tests --test chaos_process --no-capture` (a cut and a kill every 2 × gap).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    reason = "test code"
)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cypherwire::client::{Backoff, Client, Error, Status};
use cypherwire::session::Psk;

const BIN: &str = env!("CARGO_BIN_EXE_chaos-server");

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// Starts the server on `addr` (retrying while the port is still held); returns it and the
/// address it listens on.
fn start(addr: &str, log: &Path) -> (Child, String) {
    for _ in 0..250 {
        let mut child = Command::new(BIN)
            .args([addr, log.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line);
        if let Some(a) = line.trim().strip_prefix("listening on ") {
            return (child, a.to_owned());
        }
        let _ = child.wait();
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the chaos server did not start on {addr}");
}

fn percentile(v: &mut [Duration], q: f64) -> Duration {
    v.sort();
    v.get(((v.len() as f64 - 1.0) * q) as usize)
        .copied()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_server_process_loses_no_request() {
    let clients = env_or("CYPHERWIRE_CHAOS_CLIENTS", 100);
    let per_client = env_or("CYPHERWIRE_CHAOS_REQUESTS", 1_000);
    let kills = env_or("CYPHERWIRE_CHAOS_KILLS", 5);
    let gap = Duration::from_millis(env_or("CYPHERWIRE_CHAOS_GAP_MS", 200));
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("chaos-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("executions.log");
    let _ = std::fs::remove_file(&log);
    let (mut server, addr) = start("127.0.0.1:0", &log);
    // Clients go through a fault proxy, so connections are also cut while the process lives.
    let proxy = cypherwire_test_support::proxy::FaultProxy::start(addr.parse().unwrap())
        .await
        .unwrap();
    let via = proxy.addr().to_string();

    let mut backoff = Backoff::default();
    backoff.initial = Duration::from_millis(20);
    backoff.max = Duration::from_millis(200);
    let mut tasks = tokio::task::JoinSet::new();
    for who in 1..=clients {
        let c = Client::builder(Psk::from_bytes([0x5c; 32]))
            .backoff(backoff)
            .heartbeat(Duration::from_millis(500), 3)
            .connect(via.clone())
            .unwrap();
        // Status changes with the time they were seen.
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log_status = seen.clone();
        // The ordered event stream (a watch would coalesce quick Offline → Online pairs).
        let mut events = c.status_events();
        let watcher = tokio::spawn(async move {
            while let Some(s) = events.next().await {
                log_status.lock().unwrap().push((now(), s));
            }
        });
        tasks.spawn(async move {
            let (mut ok, mut lost, mut wrong) = (0u64, 0u64, 0u64);
            let mut in_flight = tokio::task::JoinSet::new();
            let mut tally = |i: u64, r: Result<cypherwire::client::Reply, Error>| match r
                .map(|r| r.data::<u64>())
            {
                Ok(Ok(v)) if v == i + 1 => ok += 1,
                Ok(_) => wrong += 1,
                Err(_) => lost += 1,
            };
            for i in 0..per_client {
                if in_flight.len() >= 8 {
                    let (i, r) = in_flight.join_next().await.unwrap().unwrap();
                    tally(i, r);
                }
                let f = c.request("/ADD", "ONE").data(i).metadata(who).send();
                in_flight.spawn(async move { (i, f.await) });
            }
            while let Some(r) = in_flight.join_next().await {
                let (i, r) = r.unwrap();
                tally(i, r);
            }
            c.close_within(Duration::from_millis(100)).await;
            watcher.abort();
            // Reconnect times: from each loss to the next Online.
            let mut reconnects = Vec::new();
            let mut lost_at = None;
            for (t, s) in seen.lock().unwrap().iter() {
                match s {
                    Status::Offline { .. } if lost_at.is_none() => lost_at = Some(*t),
                    Status::Online { .. } => {
                        if let Some(at) = lost_at.take() {
                            reconnects.push(*t - at);
                        }
                    }
                    _ => {}
                }
            }
            (ok, lost, wrong, reconnects)
        });
    }
    for _ in 0..kills {
        tokio::time::sleep(gap).await;
        proxy.cut_all();
        tokio::time::sleep(gap).await;
        server.kill().unwrap(); // SIGKILL
        let _ = server.wait();
        let t = now();
        let (s, again) = start(&addr, &log);
        assert_eq!(again, addr);
        server = s;
        println!("kill → restarted in {:?}", now() - t);
    }
    let (mut ok, mut lost, mut wrong, mut recovered) = (0, 0, 0, 0);
    let mut outages = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (o, l, w, reconnects) = r.unwrap();
        ok += o;
        lost += l;
        wrong += w;
        recovered += u64::from(!reconnects.is_empty());
        outages.extend(reconnects);
    }
    server.kill().unwrap();
    let _ = server.wait();
    let mut runs: HashMap<(u64, u64), u32> = HashMap::new();
    for line in std::fs::read_to_string(&log).unwrap().lines() {
        let mut p = line.split(' ');
        let (Some(a), Some(b)) = (p.next(), p.next()) else {
            continue;
        };
        *runs
            .entry((a.parse().unwrap(), b.parse().unwrap()))
            .or_default() += 1;
    }
    let twice = runs.values().filter(|n| **n > 1).count();
    let attempts = clients * per_client;
    println!(
        "chaos (process, SIGKILL ×{kills}, proxy cuts ×{}): attempts {attempts}, ok {ok}, lost {lost}, wrong {wrong}, \
         executed {} distinct / {} in all (executed twice: {twice}), clients recovered \
         {recovered}/{clients}, {} reconnects: offline→online p50 {:?} p99 {:?}",
        proxy.cuts(),
        runs.len(),
        runs.values().map(|n| u64::from(*n)).sum::<u64>(),
        outages.len(),
        percentile(&mut outages.clone(), 0.5),
        percentile(&mut outages, 0.99),
    );
    assert_eq!((lost, wrong), (0, 0));
    assert_eq!(ok, attempts);
    assert_eq!(runs.len() as u64, attempts, "every request executed");
    assert!(recovered > 0, "the kills must hit live clients");
    let _ = std::fs::remove_dir_all(&dir);
}
