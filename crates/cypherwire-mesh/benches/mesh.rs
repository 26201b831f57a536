//! Mesh figures on loopback, in one run, 5 rounds (medians with min–max):
//! - join time of a member (PAKE with argon2 at the default cost, list, first heartbeat state),
//!   against one bare password-mode handshake with the same cost (the floor);
//! - broadcast fan-out across 10 other members: time until every member acknowledged, and the
//!   delivery latency at each receiver (p50/p99), against a single direct message's round trip
//!   on an open channel.
//!
//! Run: `cargo bench -p cypherwire-mesh --bench mesh`.

#![allow(missing_docs, reason = "benchmark binary")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    clippy::cast_precision_loss,
    reason = "benchmark code: a failure should abort, wall-clock timing is the point"
)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cypherwire_mesh::{AuthPeer, Event, JoinPeer, MeshConfig};
use cypherwire_session::{Argon2Cost, ClientAuth, Password, PasswordVerifier, SessionConfig};
use cypherwire_wire::Value;

const PASSWORD: &str = "correct horse battery staple";
const ROUNDS: usize = 5;
const MEMBERS: usize = 10;
const BROADCASTS: usize = 200;

fn percentile(v: &mut [Duration], q: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * q) as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn summary(name: &str, mut v: Vec<f64>) {
    v.sort_by(f64::total_cmp);
    println!(
        "{name:<58} median {:>9.3} ms  (min {:.3}, max {:.3})",
        v[v.len() / 2],
        v[0],
        v[v.len() - 1]
    );
}

/// One round's figures, in milliseconds.
#[derive(Clone, Copy)]
struct Round {
    bare: f64,
    join_p50: f64,
    fanout_p50: f64,
    fanout_p99: f64,
    delivery_p50: f64,
    delivery_p99: f64,
    single_p50: f64,
}

async fn round(cost: Argon2Cost) -> Round {
    let verifier = PasswordVerifier::create(PASSWORD, cost).unwrap();
    let auth = AuthPeer::builder(verifier)
        .listen("127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let addr = auth.local_addr().to_string();

    // Floor: one bare password-mode handshake.
    let t = Instant::now();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let s = cypherwire_session::connect(
        tcp,
        &ClientAuth::Password(Password::new(PASSWORD)),
        &SessionConfig::default(),
    )
    .await
    .unwrap();
    let bare = t.elapsed();
    drop(s);

    let mut joins = Vec::new();
    let mut peers = Vec::new();
    for _ in 0..MEMBERS {
        let t = Instant::now();
        let p = JoinPeer::join(addr.clone(), Password::new(PASSWORD), MeshConfig::default())
            .await
            .unwrap();
        joins.push(t.elapsed());
        peers.push(p);
    }
    while !peers.iter().all(|p| p.peers().len() == MEMBERS + 1) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Receivers stamp arrival; payloads carry the send instant's offset from `epoch`.
    let epoch = Instant::now();
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    for p in &peers[1..] {
        let mut ev = p.take_events().unwrap();
        let arrivals = arrivals.clone();
        tokio::spawn(async move {
            while let Some(e) = ev.next().await {
                if let Event::Message { data, .. } = e {
                    let sent = Duration::from_nanos(data.as_u64().unwrap());
                    arrivals.lock().unwrap().push(epoch.elapsed() - sent);
                }
            }
        });
    }
    let mut auth_events = auth.take_events().unwrap();
    tokio::spawn(async move { while auth_events.next().await.is_some() {} });
    let sender = &peers[0];
    // Warm the channels.
    sender.broadcast(Value::from(0u64)).await.unwrap();
    arrivals.lock().unwrap().clear();
    let mut fanout = Vec::new();
    for _ in 0..BROADCASTS {
        let t = Instant::now();
        let stamp = u64::try_from(epoch.elapsed().as_nanos()).unwrap();
        let r = sender.broadcast(Value::from(stamp)).await.unwrap();
        assert!(r.is_complete());
        fanout.push(t.elapsed());
    }
    // Baseline: one direct message's round trip on an open channel.
    let target = peers[1].id();
    let mut single = Vec::new();
    for _ in 0..BROADCASTS {
        let t = Instant::now();
        let stamp = u64::try_from(epoch.elapsed().as_nanos()).unwrap();
        sender.send(target, Value::from(stamp)).await.unwrap();
        single.push(t.elapsed());
    }
    let mut delivery = arrivals.lock().unwrap().clone();
    for p in peers {
        p.leave().await;
    }
    auth.leave().await;
    Round {
        bare: ms(bare),
        join_p50: ms(percentile(&mut joins, 0.5)),
        fanout_p50: ms(percentile(&mut fanout, 0.5)),
        fanout_p99: ms(percentile(&mut fanout, 0.99)),
        delivery_p50: ms(percentile(&mut delivery, 0.5)),
        delivery_p99: ms(percentile(&mut delivery, 0.99)),
        single_p50: ms(percentile(&mut single, 0.5)),
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let cost = Argon2Cost::default();
    println!(
        "mesh on 127.0.0.1: {MEMBERS} members + the authenticating peer; argon2id m={} KiB t={} p={}; {BROADCASTS} broadcasts per round; {ROUNDS} rounds",
        cost.m_kib, cost.t, cost.p
    );
    let rows: Vec<Round> = (0..ROUNDS).map(|_| rt.block_on(round(cost))).collect();
    let col = |f: fn(&Round) -> f64| rows.iter().map(f).collect::<Vec<_>>();
    summary("bare password handshake (floor)", col(|r| r.bare));
    summary(
        "join (handshake + JOIN + signed list), p50 of 10",
        col(|r| r.join_p50),
    );
    summary(
        "broadcast to 10, all acknowledged: p50",
        col(|r| r.fanout_p50),
    );
    summary(
        "broadcast to 10, all acknowledged: p99",
        col(|r| r.fanout_p99),
    );
    summary(
        "broadcast delivery at each receiver: p50",
        col(|r| r.delivery_p50),
    );
    summary(
        "broadcast delivery at each receiver: p99",
        col(|r| r.delivery_p99),
    );
    summary(
        "one direct message, acknowledged: p50 (baseline)",
        col(|r| r.single_p50),
    );
    let ratio = |a: fn(&Round) -> f64, b: fn(&Round) -> f64| {
        let mut v: Vec<f64> = rows.iter().map(|r| a(r) / b(r)).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "join / bare handshake: {:.2}x",
        ratio(|r| r.join_p50, |r| r.bare)
    );
    println!(
        "broadcast to 10 (p50) / one direct message (p50): {:.2}x",
        ratio(|r| r.fanout_p50, |r| r.single_p50)
    );
}
