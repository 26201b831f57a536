//! `cypherwire demo`: the whole system in one process, nothing to install.
//!
//! A server and clients on 127.0.0.1: CYPHER_PROTOCOL's request/response example, an action
//! broadcast (pnetwork), a server restart the clients ride through without losing a request,
//! a P2P mesh (pyile-protocol: password admission with a ban after wrong passwords, a signed
//! peer list, broadcasts counted, a dead member removed by heartbeats), the wire layer
//! refusing hostile input, and two server instances acting as one (a local backplane; across
//! processes the same runs over Redis). Prints what happens and a summary with figures measured in
//! the run.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use cypherwire::client::{Backoff, Client, Incoming};
use cypherwire::mesh::{AuthPeer, Event as MeshEvent, JoinPeer, MeshConfig};
use cypherwire::server::ServerHandle;
use cypherwire::session::{Argon2Cost, BanPolicy, Password, PasswordVerifier, Psk};
use cypherwire::wire::{Codec, Limits, Message, Value};

use super::service;

/// Arguments of `cypherwire demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Requests in the throughput and restart parts.
    #[arg(long, default_value_t = 10_000)]
    requests: usize,
}

/// CYPHER_PROTOCOL's README uses this 32-character key string on both sides.
const SEED_KEY: &str = "2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U";

fn fast_backoff() -> Backoff {
    let mut b = Backoff::default();
    b.initial = Duration::from_millis(20);
    b.max = Duration::from_millis(200);
    b
}

#[expect(
    clippy::disallowed_methods,
    reason = "the demo reports wall-clock figures"
)]
pub(crate) async fn run(args: &Args) -> anyhow::Result<()> {
    let started = Instant::now();
    println!("cypherwire demo: everything runs in this process on 127.0.0.1\n");
    let psk = Psk::from_passphrase(SEED_KEY)?;
    let state = Arc::new(Mutex::new(service::State::default()));
    let server = service::builder(psk.clone(), state.clone())
        .bind("127.0.0.1:0")
        .await?;
    let handle = server.handle();
    let addr = handle.local_addr();

    // 1. CYPHER_PROTOCOL's example, encrypted both ways with a key per direction.
    println!("1. request/response (CYPHER_PROTOCOL's /SEQUENCE and /NUMBER) on {addr}");
    let client = Client::builder(psk.clone())
        .backoff(fast_backoff())
        .connect(addr.to_string())?;
    client.wait_online().await?;
    for n in [7, 3, 9] {
        let r = client.request("/SEQUENCE", "UPDATE").data(n).send().await?;
        ensure!(
            r.data == Value::from("UPDATED"),
            "unexpected answer {:?}",
            r.data
        );
    }
    let seq: Vec<i64> = client.request("/SEQUENCE", "READ").send().await?.data()?;
    client.request("/NUMBER", "UPDATE").data(42).send().await?;
    let number: i64 = client.request("/NUMBER", "READ").send().await?.data()?;
    println!("   /SEQUENCE READ -> {seq:?}   /NUMBER READ -> {number}");
    ensure!(seq == [7, 3, 9] && number == 42, "wrong state");
    let info = handle
        .connections()
        .first()
        .cloned()
        .context("no connection")?;
    let hs = cypherwire::session::CipherSuite::default_preference()[0];
    println!("   session: Noise NNpsk0, {hs:?} records with a key per direction, MessagePack");
    let _ = info;

    // Round trips and throughput, measured now.
    let t = Instant::now();
    let rounds = 1_000;
    for _ in 0..rounds {
        client.request("/NUMBER", "READ").send().await?;
    }
    let rtt = t.elapsed() / rounds;
    let n = args.requests;
    let t = Instant::now();
    // Each request is its own task, so 64 are really in flight at once.
    let mut in_flight = tokio::task::JoinSet::new();
    for i in 0..n {
        if in_flight.len() == 64
            && let Some(r) = in_flight.join_next().await
        {
            r??;
        }
        in_flight.spawn(client.request("/ECHO", "PUT").data(i as u64).send());
    }
    while let Some(r) = in_flight.join_next().await {
        r??;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    println!(
        "   {rounds} sequential round trips: {:.0} µs each; {n} requests 64 in flight: {rate:.0} req/s",
        rtt.as_secs_f64() * 1e6
    );

    // 2. Actions, broadcast by the server to everyone.
    println!("\n2. named actions (pnetwork): one client says hello, the server broadcasts it");
    let others: Vec<Client> = (0..3)
        .map(|_| Client::builder(psk.clone()).connect(addr.to_string()))
        .collect::<Result<_, _>>()?;
    let mut inboxes = Vec::new();
    for c in &others {
        c.wait_online().await?;
        inboxes.push(c.take_incoming().context("incoming taken")?);
    }
    client.emit("chat", "hello from the first client").await?;
    let mut heard = 0;
    for inbox in &mut inboxes {
        if let Some(Incoming::Action(a)) =
            tokio::time::timeout(Duration::from_secs(5), inbox.next()).await?
        {
            heard += 1;
            if heard == 1 {
                println!(
                    "   received: {} {:?}",
                    a.name,
                    a.data.as_str().unwrap_or_default()
                );
            }
        }
    }
    println!("   {heard} of {} other clients received it", others.len());
    for c in &others {
        c.close_within(Duration::from_millis(100)).await;
    }

    // 3. A server restart under load: nothing is lost.
    println!("\n3. a server restart while 3 clients keep 8 requests in flight each");
    let (restart_stats, handle) = restart_under_load(handle, &psk, state, n / 10).await?;
    println!(
        "   {} requests answered, {} lost; the clients were back online {:.0} ms after the restart",
        restart_stats.answered, restart_stats.lost, restart_stats.back_online_ms
    );
    client.close_within(Duration::from_millis(200)).await;
    handle.shutdown().await;

    // 4. The mesh: password admission with bans, signed peer list, broadcast, heartbeats.
    println!(
        "\n4. a P2P mesh (pyile-protocol): an authenticating peer and {MESH_MEMBERS} members, admitted by password (SPAKE2 + argon2id)"
    );
    let mesh = mesh_demo().await?;
    println!(
        "   {} wrong passwords refused, then the address was banned and even the right password refused: {}",
        mesh.failures, mesh.banned
    );
    println!(
        "   joins took {:.0} ms each (median, incl. argon2); every member holds the same signed list of {}",
        mesh.join_ms, mesh.listed
    );
    println!(
        "   {} broadcasts, {} deliveries expected, {} delivered, {} duplicates",
        mesh.broadcasts, mesh.expected, mesh.delivered, mesh.duplicates
    );
    println!(
        "   a member killed without goodbye was gone from every list after {:.1} s (heartbeat 0.5 s × 3)",
        mesh.gone_after_s
    );

    // 5. The wire layer refuses hostile input with typed errors.
    println!("\n5. hostile input at the wire layer");
    let limits = Limits::default();
    let bomb = [vec![0x01, 0x06], vec![0x91; 100_000], vec![0x01]].concat();
    let e1 = Message::decode(&Codec::MsgPack, &bomb, &limits)
        .err()
        .context("nesting bomb accepted")?;
    let e2 = Message::decode(
        &Codec::MsgPack,
        &[1, 6, 0x91, 0xdb, 0xff, 0xff, 0xff, 0xff, b'x'],
        &limits,
    )
    .err()
    .context("length bomb accepted")?;
    println!("   100,000-deep nesting -> {e1}\n   \"4 GiB\" string in 9 bytes -> {e2}");

    // 6. Two instances as one: a local backplane (across processes and machines, Redis).
    println!(
        "\n6. two server instances as one cluster (a local backplane; `serve --cluster` uses Redis)"
    );
    let cluster = cluster_demo(&psk).await?;
    println!(
        "   {} broadcasts from instance 1: {}/{} delivered at a client of instance 2, in order: {}",
        cluster.broadcasts, cluster.delivered, cluster.broadcasts, cluster.in_order
    );
    println!(
        "   instance 1 pushed to a connection of instance 2 (#{}); connections over the cluster: {}",
        cluster.remote_id, cluster.counted
    );

    println!("\nsummary");
    println!(
        "  request/response: ok ({:.0} µs per round trip, {rate:.0} req/s pipelined)",
        rtt.as_secs_f64() * 1e6
    );
    println!("  action broadcast: {heard}/{} clients", others.len());
    println!(
        "  server restart: {}/{} requests answered, {} lost, back online in {:.0} ms",
        restart_stats.answered,
        restart_stats.answered + restart_stats.lost,
        restart_stats.lost,
        restart_stats.back_online_ms
    );
    println!(
        "  mesh: {}/{} broadcast deliveries, {} duplicates; ban enforced before any work: {}; dead member removed in {:.1} s",
        mesh.delivered, mesh.expected, mesh.duplicates, mesh.banned, mesh.gone_after_s
    );
    println!(
        "  cluster of 2: {}/{} broadcasts crossed instances in order; a push routed to the other instance: {}",
        cluster.delivered, cluster.broadcasts, cluster.routed
    );
    println!("  total time: {:.1} s", started.elapsed().as_secs_f64());
    ensure!(restart_stats.lost == 0, "requests were lost");
    ensure!(heard == others.len(), "an action did not arrive");
    ensure!(
        mesh.delivered == mesh.expected && mesh.duplicates == 0 && mesh.banned,
        "the mesh did not behave"
    );
    ensure!(
        cluster.delivered == cluster.broadcasts && cluster.in_order && cluster.routed,
        "the cluster did not behave"
    );
    Ok(())
}

struct ClusterStats {
    broadcasts: usize,
    delivered: usize,
    in_order: bool,
    remote_id: String,
    routed: bool,
    counted: usize,
}

/// Two servers on one [`LocalHub`](cypherwire::server::LocalHub), a client on each.
async fn cluster_demo(psk: &Psk) -> anyhow::Result<ClusterStats> {
    use cypherwire::server::{LocalHub, Server};
    const BROADCASTS: usize = 100;
    let hub = LocalHub::new();
    let one = Server::builder(psk.clone())
        .cluster(hub.join())
        .bind("127.0.0.1:0")
        .await?;
    let two = Server::builder(psk.clone())
        .cluster(hub.join())
        .bind("127.0.0.1:0")
        .await?;
    let client = Client::builder(psk.clone()).connect(two.local_addr().to_string())?;
    let mut incoming = client.take_incoming().context("incoming taken")?;
    client.wait_online().await?;
    let cluster = one.handle().cluster().context("clustered")?;
    for i in 0..BROADCASTS {
        one.handle().broadcast(i as i64);
    }
    let mut got = Vec::new();
    while got.len() < BROADCASTS {
        match tokio::time::timeout(Duration::from_secs(5), incoming.next()).await {
            Ok(Some(Incoming::Push(p))) => got.push(p.data.as_i64().unwrap_or(-1)),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    let in_order = got.iter().enumerate().all(|(i, n)| *n == i as i64);
    let remote = two
        .handle()
        .connections()
        .first()
        .map(|c| c.id)
        .context("a connection on instance 2")?;
    cluster.send_to(remote, "routed").await?;
    let routed = matches!(
        tokio::time::timeout(Duration::from_secs(5), incoming.next()).await,
        Ok(Some(Incoming::Push(p))) if p.data.as_str() == Some("routed")
    );
    let counted = cluster.count(Duration::from_secs(1)).await?.value;
    client.close_within(Duration::from_millis(100)).await;
    one.handle().shutdown().await;
    two.handle().shutdown().await;
    Ok(ClusterStats {
        broadcasts: BROADCASTS,
        delivered: got.len(),
        in_order,
        remote_id: remote.to_string().trim_start_matches('#').to_owned(),
        routed,
        counted,
    })
}

struct RestartStats {
    answered: u64,
    lost: u64,
    back_online_ms: f64,
}

#[expect(
    clippy::disallowed_methods,
    reason = "the demo reports wall-clock figures"
)]
async fn restart_under_load(
    handle: ServerHandle,
    psk: &Psk,
    state: Arc<Mutex<service::State>>,
    per_client: usize,
) -> anyhow::Result<(RestartStats, ServerHandle)> {
    let addr = handle.local_addr();
    let clients: Vec<Client> = (0..3)
        .map(|_| {
            Client::builder(psk.clone())
                .backoff(fast_backoff())
                .connect(addr.to_string())
        })
        .collect::<Result<_, _>>()?;
    for c in &clients {
        c.wait_online().await?;
    }
    let mut tasks = tokio::task::JoinSet::new();
    for c in &clients {
        let c = c.clone();
        tasks.spawn(async move {
            let (mut ok, mut lost) = (0u64, 0u64);
            let mut in_flight = tokio::task::JoinSet::new();
            let mut count =
                |r: Result<Result<_, cypherwire::client::Error>, tokio::task::JoinError>| match r {
                    Ok(Ok(_)) => ok += 1,
                    _ => lost += 1,
                };
            for i in 0..per_client {
                if in_flight.len() == 8
                    && let Some(r) = in_flight.join_next().await
                {
                    count(r);
                }
                in_flight.spawn(c.request("/ECHO", "PUT").data(i as u64).send());
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            while let Some(r) = in_flight.join_next().await {
                count(r);
            }
            (ok, lost)
        });
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    handle.shutdown_now().await;
    let restarted = Instant::now();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let new = service::builder(psk.clone(), state)
        .bind(&addr.to_string())
        .await?
        .handle();
    for c in &clients {
        c.wait_online().await?;
    }
    let back_online_ms = restarted.elapsed().as_secs_f64() * 1e3;
    let (mut answered, mut lost) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        let (ok, l) = r?;
        answered += ok;
        lost += l;
    }
    for c in &clients {
        c.close_within(Duration::from_millis(100)).await;
    }
    Ok((
        RestartStats {
            answered,
            lost,
            back_online_ms,
        },
        new,
    ))
}

const MESH_MEMBERS: usize = 4;

struct MeshStats {
    failures: u32,
    banned: bool,
    join_ms: f64,
    listed: usize,
    broadcasts: usize,
    expected: usize,
    delivered: usize,
    duplicates: usize,
    gone_after_s: f64,
}

async fn mesh_demo() -> anyhow::Result<MeshStats> {
    const PASSWORD: &str = "correct horse battery staple";
    let verifier = PasswordVerifier::create(PASSWORD, Argon2Cost::default())?;
    let mut bans = BanPolicy::default();
    bans.max_attempts = 3;
    let config = || MeshConfig::default().with_heartbeat(Duration::from_millis(500), 3);
    let auth = AuthPeer::builder(verifier)
        .listen("127.0.0.1:0")
        .config(config())
        .ban_policy(bans)
        .start()
        .await?;
    let addr = auth.local_addr().to_string();
    // Wrong passwords from this address, until it is banned.
    let mut failures = 0;
    for _ in 0..3 {
        if JoinPeer::join(addr.clone(), Password::new("password123"), config())
            .await
            .is_err()
        {
            failures += 1;
        }
    }
    let refused = JoinPeer::join(addr.clone(), Password::new(PASSWORD), config())
        .await
        .is_err();
    let before = auth.listener_stats();
    let banned = refused && !auth.bans().is_empty() && before.handshakes_ok == 0;
    auth.unban_addr("127.0.0.1".parse()?);

    let mut members = Vec::new();
    let mut join_times = Vec::new();
    for _ in 0..MESH_MEMBERS {
        let t = tokio::time::Instant::now();
        members.push(JoinPeer::join(addr.clone(), Password::new(PASSWORD), config()).await?);
        join_times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    join_times.sort_by(f64::total_cmp);
    let everyone = MESH_MEMBERS + 1;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while members.iter().any(|m| m.peers().len() != everyone) {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "lists did not converge"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let listed = auth.peers().len();
    // Every member (and the authenticating peer) broadcasts 10 numbered messages; count what
    // each receives.
    let mut logs = vec![auth.take_events().context("events")?];
    for m in &members {
        logs.push(m.take_events().context("events")?);
    }
    let rounds = 10;
    for r in 0..rounds {
        auth.broadcast(format!("auth-{r}")).await?;
        for (i, m) in members.iter().enumerate() {
            m.broadcast(format!("m{i}-{r}")).await?;
        }
    }
    let broadcasts = rounds * everyone;
    let expected = broadcasts * (everyone - 1);
    let (mut delivered, mut duplicates) = (0, 0);
    for log in &mut logs {
        let mut seen = std::collections::HashSet::new();
        let wait = tokio::time::Instant::now() + Duration::from_secs(5);
        while seen.len() < broadcasts - rounds && tokio::time::Instant::now() < wait {
            match tokio::time::timeout(Duration::from_millis(200), log.next()).await {
                Ok(Some(MeshEvent::Message { data, .. })) => {
                    if seen.insert(format!("{data:?}")) {
                        delivered += 1;
                    } else {
                        duplicates += 1;
                    }
                }
                Ok(Some(_)) | Err(_) => {}
                Ok(None) => break,
            }
        }
    }
    // Kill one member without a goodbye; the heartbeats remove it everywhere.
    let victim = members.pop().context("a member")?;
    let victim_id = victim.id();
    let t = tokio::time::Instant::now();
    victim.abort().await;
    let deadline = t + Duration::from_secs(10);
    while auth.peers().iter().any(|p| p.id == victim_id)
        || members
            .iter()
            .any(|m| m.peers().iter().any(|p| p.id == victim_id))
    {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the dead member stayed listed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let gone_after_s = t.elapsed().as_secs_f64();
    for m in members {
        m.leave().await;
    }
    auth.leave().await;
    Ok(MeshStats {
        failures,
        banned,
        join_ms: join_times[join_times.len() / 2],
        listed,
        broadcasts,
        expected,
        delivered,
        duplicates,
        gone_after_s,
    })
}
