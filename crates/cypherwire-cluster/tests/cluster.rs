//! Three server instances and a real `redis-server` on this machine, clients spread over them:
//! what every client receives is counted.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::collections::HashMap;
use std::time::Duration;

use cypherwire_client::{Client, Incoming, IncomingStream, Status};
use cypherwire_cluster::{ClusterKey, RedisBackplane, RedisOptions};
use cypherwire_server::{Backplane, ClusterError, ConnectionId, NodeId, Server, ServerHandle};
use cypherwire_session::{BanPolicy, Psk};
use cypherwire_test_support::cluster::{numbers, online_after_a_drop, settle};
use cypherwire_test_support::proxy::FaultProxy;
use cypherwire_test_support::redis::{RedisServer, rand_suffix};
use cypherwire_wire::Value;

const PASSPHRASE: &str = "2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U";

fn psk() -> Psk {
    Psk::from_passphrase(PASSPHRASE).unwrap()
}

/// A Redis, a key and a fresh prefix: the nodes made from it form one cluster.
struct Fixture {
    redis: RedisServer,
    key: ClusterKey,
    prefix: String,
}

impl Fixture {
    fn new() -> Option<Self> {
        Some(Self {
            redis: RedisServer::start()?,
            key: ClusterKey::generate().unwrap(),
            prefix: format!("cw:t{:x}:", rand_suffix()),
        })
    }

    fn options(&self) -> RedisOptions {
        let mut o = RedisOptions::default();
        o.prefix = self.prefix.clone();
        o.heartbeat = Duration::from_millis(500);
        o
    }

    async fn backplane(&self) -> RedisBackplane {
        RedisBackplane::connect_with(
            &self.redis.url(),
            std::slice::from_ref(&self.key),
            self.options(),
        )
        .await
        .unwrap()
    }

    async fn node_with(&self, bans: BanPolicy) -> (Server, RedisBackplane) {
        let backplane = self.backplane().await;
        let server = Server::builder(psk())
            .ban_policy(bans)
            .cluster(backplane.clone())
            .bind("127.0.0.1:0")
            .await
            .unwrap();
        (server, backplane)
    }

    async fn node(&self) -> (Server, RedisBackplane) {
        self.node_with(BanPolicy::default()).await
    }

    /// A node `b` on `backplane` (reaching Redis its own way) with one client, and a node `a`
    /// of the fixture, settled: `(a, b, (the client, its incoming stream))`.
    async fn pair_with(
        &self,
        backplane: RedisBackplane,
    ) -> (Server, Server, (Client, IncomingStream)) {
        let b = Server::builder(psk())
            .cluster(backplane)
            .bind("127.0.0.1:0")
            .await
            .unwrap();
        let (a, _) = self.node().await;
        let client = client(&b).await;
        settle(&[a.handle(), b.handle()], 1).await;
        (a, b, client)
    }

    fn redis(&self) -> redis::Connection {
        redis::Client::open(self.redis.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }
}

async fn client(server: &Server) -> (Client, IncomingStream) {
    let c = Client::builder(psk())
        .connect(server.local_addr().to_string())
        .unwrap();
    let incoming = c.take_incoming().unwrap();
    tokio::time::timeout(Duration::from_secs(10), c.wait_online())
        .await
        .unwrap()
        .unwrap();
    (c, incoming)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_reaches_every_connection_of_every_node_once_in_order() {
    let Some(fx) = Fixture::new() else { return };
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(fx.node().await);
    }
    let mut clients = Vec::new();
    for i in 0..6 {
        clients.push(client(&nodes[i % 3].0).await);
    }
    let handles: Vec<ServerHandle> = nodes.iter().map(|(s, _)| s.handle()).collect();
    settle(&handles, 6).await;
    let from = &handles[0];
    const N: i64 = 300;
    for i in 0..N {
        // Half pushes, half actions: both kinds cross the backplane.
        if i % 2 == 0 {
            from.broadcast(i);
        } else {
            from.broadcast_action(&cypherwire_wire::Action::new("n", i, 0));
        }
    }
    for (_, incoming) in &mut clients {
        let got = numbers(incoming, N as usize, Duration::from_secs(3)).await;
        assert_eq!(
            got,
            (0..N).collect::<Vec<_>>(),
            "every number once, in order"
        );
    }
    for (c, incoming) in &mut clients {
        let extra = numbers(incoming, 1, Duration::from_millis(100)).await;
        assert!(extra.is_empty(), "nothing twice: {extra:?}");
        c.close_within(Duration::ZERO).await;
    }
    let stats: Vec<_> = handles
        .iter()
        .map(|h| h.cluster().unwrap().stats())
        .collect();
    assert_eq!(stats[0].published, N as u64);
    for s in &stats[1..] {
        assert_eq!(s.received, N as u64);
        assert_eq!((s.lossy_gaps, s.closed_for_loss), (0, 0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_message_reaches_members_on_other_nodes_and_only_member_nodes_listen() {
    let Some(fx) = Fixture::new() else { return };
    let (a, _) = fx.node().await;
    let (b, _) = fx.node().await;
    let (c, _) = fx.node().await;
    let (_ca, mut in_a) = client(&a).await;
    let (_cb, mut in_b) = client(&b).await;
    let (_cc, mut in_c) = client(&c).await;
    let hs = [a.handle(), b.handle(), c.handle()];
    settle(&hs, 3).await;
    for h in &hs[..2] {
        let id = h.connections()[0].id;
        h.join_group(id, "room").unwrap();
    }
    // Joining is followed by a subscription: wait until both member nodes listen.
    let listeners = |r: &mut redis::Connection| -> Vec<usize> {
        let channels: Vec<String> = redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .arg(format!("{}t:*", fx.prefix))
            .query(r)
            .unwrap();
        let mut v: Vec<usize> = channels
            .iter()
            .map(|ch| {
                let (_, n): (String, usize) =
                    redis::cmd("PUBSUB").arg("NUMSUB").arg(ch).query(r).unwrap();
                n
            })
            .collect();
        v.sort_unstable();
        v
    };
    let mut r = fx.redis();
    let mut counts = Vec::new();
    for _ in 0..200 {
        counts = listeners(&mut r);
        if counts == [2, 3, 3] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        counts.len(),
        3,
        "the all topic, the bans topic and the room topic"
    );
    assert_eq!(counts.iter().max(), Some(&3));
    assert_eq!(
        counts,
        [2, 3, 3],
        "room: the two member nodes; all and bans: every node"
    );
    // A node without members publishes to the group.
    for i in 0..50 {
        assert_eq!(hs[2].broadcast_group("room", i), 0);
    }
    let want: Vec<i64> = (0..50).collect();
    assert_eq!(numbers(&mut in_a, 50, Duration::from_secs(2)).await, want);
    assert_eq!(numbers(&mut in_b, 50, Duration::from_secs(2)).await, want);
    assert!(
        numbers(&mut in_a, 1, Duration::from_millis(100))
            .await
            .is_empty()
    );
    assert!(
        numbers(&mut in_b, 1, Duration::from_millis(100))
            .await
            .is_empty()
    );
    assert!(
        numbers(&mut in_c, 1, Duration::from_millis(300))
            .await
            .is_empty(),
        "not a member"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_to_and_kick_reach_a_connection_on_another_node() {
    let Some(fx) = Fixture::new() else { return };
    let (a, _) = fx.node().await;
    let (b, bp_b) = fx.node().await;
    let (cb, mut in_b) = client(&b).await;
    settle(&[a.handle(), b.handle()], 1).await;
    let id = b.handle().connections()[0].id;
    assert_eq!(id.node(), Some(bp_b.node()), "the id names its node");
    let cluster = a.handle().cluster().unwrap();
    assert!(matches!(
        a.handle().send_to(id, 1),
        Err(cypherwire_server::Error::Remote(_))
    ));
    cluster.send_to(id, Value::from(7)).await.unwrap();
    assert_eq!(numbers(&mut in_b, 1, Duration::from_secs(2)).await, [7]);
    let unknown = ConnectionId(id.0 + 1000);
    assert_eq!(
        cluster.send_to(unknown, 1).await,
        Err(ClusterError::UnknownConnection(unknown))
    );
    // A node id nobody holds.
    let ghost_node = (1..=NodeId::MAX)
        .find(|n| Some(*n) != id.node().map(NodeId::get) && *n != cluster.node().get())
        .unwrap();
    let ghost = ConnectionId((u64::from(ghost_node) << 40) | 1);
    assert_eq!(
        cluster.send_to(ghost, 1).await,
        Err(ClusterError::NoSuchNode(NodeId::new(ghost_node).unwrap()))
    );
    // The kick reaches the client: it stops, told why.
    let mut status = cb.status_events();
    cluster.kick(id).await.unwrap();
    let offline = cypherwire_test_support::cluster::kicked_reason(&mut status).await;
    assert!(offline.contains("kick"), "{offline}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_does_not_answer_is_an_unknown_outcome_and_a_named_gap_in_counts() {
    let Some(fx) = Fixture::new() else { return };
    let (a, _) = fx.node().await;
    let (b, _) = fx.node().await;
    let _c1 = client(&a).await;
    let _c2 = client(&b).await;
    let _c3 = client(&b).await;
    settle(&[a.handle(), b.handle()], 3).await;
    let cluster = a.handle().cluster().unwrap();
    let all = cluster.count(Duration::from_secs(1)).await.unwrap();
    assert_eq!((all.value, all.is_complete()), (3, true));
    let list = cluster.connections(Duration::from_secs(1)).await.unwrap();
    assert_eq!(list.value.len(), 3);
    let on_b = b.handle().connections().remove(0);
    let found = cluster
        .connection_by_peer(on_b.peer, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(
        found.value.map(|c| c.id),
        Some(on_b.id),
        "found on the other node"
    );
    let from = cluster
        .connections_from("127.0.0.1".parse().unwrap(), Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(from.value.len(), 3);
    let none = cluster
        .connections_from("127.0.0.2".parse().unwrap(), Duration::from_secs(1))
        .await
        .unwrap();
    assert!(none.value.is_empty());
    // A live node (its backplane connected and subscribed) that never reads its events.
    let stuck = fx.backplane().await;
    let count = cluster.count(Duration::from_millis(300)).await.unwrap();
    assert_eq!(count.value, 3);
    assert_eq!(count.missing, [stuck.node()]);
    let id = ConnectionId((u64::from(stuck.node().get()) << 40) | 1);
    assert!(matches!(
        cluster.send_to(id, 1).await,
        Err(ClusterError::Indeterminate(n, _)) if n == stuck.node()
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_on_one_node_refuses_the_source_on_every_node() {
    let Some(fx) = Fixture::new() else { return };
    let (a, _) = fx.node().await;
    let (b, _) = fx.node().await;
    a.handle()
        .ban("127.0.0.1".parse().unwrap(), Duration::from_secs(60));
    let mut banned_on_b = false;
    for _ in 0..200 {
        if b.handle()
            .bans()
            .iter()
            .any(|(ip, _)| ip.to_string() == "127.0.0.1")
        {
            banned_on_b = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(banned_on_b, "the ban reached the other node");
    // What the client sees on the other node: it never gets online.
    let c = Client::builder(psk())
        .backoff({
            let mut b = cypherwire_client::Backoff::default();
            b.give_up_after_attempts = Some(1);
            b
        })
        .connect(b.local_addr().to_string())
        .unwrap();
    let online = tokio::time::timeout(Duration::from_secs(3), c.wait_online()).await;
    assert!(!matches!(online, Ok(Ok(()))), "a banned source is refused");
    assert_eq!(b.handle().stats().handshakes_ok, 0);
    // A node that joins later loads the bans in force.
    let (late, _) = fx.node().await;
    assert!(
        late.handle()
            .bans()
            .iter()
            .any(|(ip, _)| ip.to_string() == "127.0.0.1")
    );
    // Unbanning on one lifts it everywhere.
    assert!(a.handle().unban("127.0.0.1".parse().unwrap()));
    let mut lifted = false;
    for _ in 0..200 {
        if b.handle().bans().is_empty() && late.handle().bans().is_empty() {
            lifted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(lifted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_on_one_node_closes_the_sources_connection_on_another() {
    let Some(fx) = Fixture::new() else { return };
    let (a, _) = fx.node().await;
    let (b, _) = fx.node().await;
    let (c, _incoming) = client(&b).await;
    let mut status = c.status();
    assert_eq!(a.handle().stats().connections, 0);
    // Issued on a, which holds no connection from the source: b closes its own.
    a.handle()
        .ban("127.0.0.1".parse().unwrap(), Duration::from_secs(60));
    // What the client sees: told it is banned (a Close says no more than that), and it stops.
    let stopped = tokio::time::timeout(Duration::from_secs(10), status.wait_for(|s| s.is_final()))
        .await
        .expect("the client on the other node is closed within 10 s")
        .unwrap()
        .clone();
    assert_eq!(stopped, Status::GaveUp);
    let err = c.request("/ECHO", "ANY").send().await.unwrap_err();
    assert!(
        matches!(err, cypherwire_client::Error::Banned { .. }),
        "{err:?}"
    );
    for _ in 0..200 {
        if b.handle().stats().connections == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(b.handle().stats().connections, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_handshakes_count_over_the_whole_cluster() {
    let Some(fx) = Fixture::new() else { return };
    let mut policy = BanPolicy::default();
    policy.max_attempts = 4;
    let (a, _) = fx.node_with(policy).await;
    let (b, _) = fx.node_with(policy).await;
    // Two failures on each node: under the local limit of either, at the cluster's.
    for server in [&a, &b, &a, &b] {
        fail_handshake(server).await;
    }
    let mut banned = false;
    for _ in 0..300 {
        if !a.handle().bans().is_empty() && !b.handle().bans().is_empty() {
            banned = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        banned,
        "four failures over two nodes ban the source on both"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sees_only_ciphertext_and_forged_or_replayed_publications_are_refused() {
    let Some(fx) = Fixture::new() else { return };
    let (a, _) = fx.node().await;
    let (b, bp_b) = fx.node().await;
    let (_c, mut in_b) = client(&b).await;
    settle(&[a.handle(), b.handle()], 1).await;
    a.handle()
        .join_group(
            a.handle()
                .connections()
                .first()
                .map_or(ConnectionId(0), |c| c.id),
            "x",
        )
        .ok();
    // A listener on every channel of the cluster, recording what goes by.
    let mut sniffer = fx.redis();
    let mut pubsub = sniffer.as_pubsub();
    pubsub.psubscribe(format!("{}*", fx.prefix)).unwrap();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    const SECRET: &str = "the-plaintext-nobody-may-read";
    a.handle().broadcast(SECRET);
    a.handle()
        .ban("192.0.2.77".parse().unwrap(), Duration::from_secs(60));
    assert_eq!(numbers_text(&mut in_b).await, SECRET);
    let mut captured = None;
    for _ in 0..10 {
        let Ok(msg) = pubsub.get_message() else { break };
        let payload: Vec<u8> = msg.get_payload().unwrap();
        assert!(!contains(&payload, SECRET.as_bytes()) && !contains(&payload, b"192.0.2.77"));
        if msg.get_channel_name().contains(":t:") && !msg.get_channel_name().ends_with("t:bans") {
            captured = Some((msg.get_channel_name().to_owned(), payload));
        }
    }
    drop(pubsub);
    // Every key and every value: digests and ciphertext only.
    let mut r = fx.redis();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", fx.prefix))
        .query(&mut r)
        .unwrap();
    assert!(!keys.is_empty());
    for k in &keys {
        assert!(!k.contains("192.0.2") && !k.contains("127.0.0.1"), "{k}");
        let dump: Vec<u8> = redis::cmd("DUMP").arg(k).query(&mut r).unwrap();
        assert!(
            !contains(&dump, SECRET.as_bytes()),
            "{k} holds the plaintext"
        );
        assert!(
            !contains(&dump, b"192.0.2.77"),
            "{k} holds the banned address"
        );
    }
    // A forgery and a replay written straight into Redis.
    let (channel, real) = captured.expect("a publication went by");
    let body_at = real
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b':')
        .nth(1)
        .unwrap()
        .0
        + 1;
    let mut forged = [b"1:999:".as_slice(), &real[body_at..]].concat();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let replayed = [b"1:1000:".as_slice(), &real[body_at..]].concat();
    let before = bp_b.seal_stats();
    let _: () = redis::cmd("PUBLISH")
        .arg(&channel)
        .arg(forged)
        .query(&mut r)
        .unwrap();
    let _: () = redis::cmd("PUBLISH")
        .arg(&channel)
        .arg(replayed)
        .query(&mut r)
        .unwrap();
    let mut after = bp_b.seal_stats();
    for _ in 0..200 {
        if after.forged > before.forged && after.replayed > before.replayed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        after = bp_b.seal_stats();
    }
    assert_eq!(after.forged, before.forged + 1, "the forgery was refused");
    assert!(after.malformed == before.malformed);
    assert_eq!(
        after.replayed + after.stale,
        before.replayed + before.stale + 1,
        "the replay was refused"
    );
    assert!(
        numbers(&mut in_b, 1, Duration::from_millis(500))
            .await
            .is_empty(),
        "nothing reached the client"
    );
}

async fn numbers_text(incoming: &mut IncomingStream) -> String {
    match tokio::time::timeout(Duration::from_secs(3), incoming.next()).await {
        Ok(Some(Incoming::Push(p))) => p.data.as_str().unwrap().to_owned(),
        other => panic!("no push: {other:?}"),
    }
}

/// One handshake with the wrong key.
async fn fail_handshake(server: &Server) {
    let wrong = Psk::from_passphrase("a wrong passphrase, long enough 123").unwrap();
    let stream = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    let r = cypherwire_session::connect(
        stream,
        &cypherwire_session::ClientAuth::Psk(wrong),
        &cypherwire_session::SessionConfig::default(),
    )
    .await;
    assert!(r.is_err());
}

/// Broadcasts 0, 1, … n−1 from `h`, one every 2 ms.
fn paced_broadcasts(h: ServerHandle, n: i64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for i in 0..n {
            h.broadcast(i);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Cuts every pub/sub connection Redis holds (each instance's subscription: at least two).
fn kill_subscriptions(r: &mut redis::Connection) {
    let killed: u32 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query(r)
        .unwrap();
    assert!(killed >= 2, "{killed} subscriptions cut");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_subscription_is_filled_from_the_history_without_loss_or_duplicates() {
    let Some(fx) = Fixture::new() else { return };
    let (a, _) = fx.node().await;
    let (b, bp_b) = fx.node().await;
    let (_c, mut in_b) = client(&b).await;
    settle(&[a.handle(), b.handle()], 1).await;
    let mut r = fx.redis();
    const N: i64 = 400;
    let publisher = paced_broadcasts(a.handle(), N);
    // Cut every subscription connection three times while publications flow.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        kill_subscriptions(&mut r);
    }
    publisher.await.unwrap();
    let mut got = numbers(&mut in_b, N as usize, Duration::from_secs(5)).await;
    got.extend(numbers(&mut in_b, 1, Duration::from_millis(200)).await);
    let mut seen = HashMap::new();
    for n in &got {
        *seen.entry(*n).or_insert(0) += 1;
    }
    let duplicated = seen.values().filter(|c| **c > 1).count();
    let lost = (0..N).filter(|n| !seen.contains_key(n)).count();
    let stats = b.handle().cluster().unwrap().stats();
    eprintln!(
        "cut subscriptions: lost {lost}, duplicated {duplicated}, recovered {}, link downs {}",
        stats.recovered,
        bp_b.seal_stats().link_downs
    );
    assert_eq!((lost, duplicated), (0, 0));
    assert_eq!(got, (0..N).collect::<Vec<_>>(), "in order");
    assert!(bp_b.seal_stats().link_downs >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_travel_as_few_publications_and_are_refilled_whole_and_in_order() {
    let Some(fx) = Fixture::new() else { return };
    let (a, _) = fx.node().await;
    let (b, _) = fx.node().await;
    let (_c, mut in_b) = client(&b).await;
    settle(&[a.handle(), b.handle()], 1).await;
    let mut r = fx.redis();
    const BURSTS: i64 = 6;
    const EACH: i64 = 200;
    let h = a.handle();
    for burst in 0..BURSTS {
        if burst % 2 == 1 {
            // The burst goes out while `b` hears nothing: it comes from the history.
            kill_subscriptions(&mut r);
        }
        for i in 0..EACH {
            h.broadcast(burst * EACH + i);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let n = (BURSTS * EACH) as usize;
    let mut got = numbers(&mut in_b, n, Duration::from_secs(5)).await;
    got.extend(numbers(&mut in_b, 1, Duration::from_millis(200)).await);
    assert_eq!(
        got,
        (0..BURSTS * EACH).collect::<Vec<_>>(),
        "all, once, in order"
    );
    let stats = b.handle().cluster().unwrap().stats();
    assert!(
        stats.recovered > 0,
        "some frames came from the history: {stats:?}"
    );
    // Frames queued together went as one publication: the topic's history holds fewer
    // entries than there were broadcasts.
    let logs: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}{{t:*}}:log", fx.prefix))
        .query(&mut r)
        .unwrap();
    assert_eq!(logs.len(), 1, "{logs:?}");
    let entries: usize = redis::cmd("XLEN").arg(&logs[0]).query(&mut r).unwrap();
    assert!(
        entries > 0 && entries < n / 2,
        "{entries} publications for {n} broadcasts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_backplane_data_closes_the_affected_sessions_instead_of_skipping() {
    let Some(fx) = Fixture::new() else { return };
    let (a, _) = fx.node().await;
    let (b, _) = fx.node().await;
    let (cb, mut in_b) = client(&b).await;
    settle(&[a.handle(), b.handle()], 1).await;
    for i in 0..5 {
        a.handle().broadcast(i);
    }
    assert_eq!(
        numbers(&mut in_b, 5, Duration::from_secs(2)).await,
        [0, 1, 2, 3, 4]
    );
    // Redis loses everything (a restart without persistence looks the same).
    let mut r = fx.redis();
    let _: () = redis::cmd("FLUSHALL").query(&mut r).unwrap();
    let mut status = cb.status_events();
    a.handle().broadcast(5);
    // What the client sees: the connection closes, and the next session is a new one.
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        let mut offline = None;
        loop {
            match status.next().await {
                Some(Status::Offline { reason }) => offline = Some(reason),
                Some(Status::Online { resumed }) if offline.is_some() => return (offline, resumed),
                _ => {}
            }
        }
    })
    .await
    .unwrap();
    assert!(
        seen.0.unwrap().to_string().contains("lost"),
        "the close says why"
    );
    assert!(!seen.1, "the session does not resume past the hole");
    let stats = b.handle().cluster().unwrap().stats();
    assert_eq!((stats.lossy_gaps, stats.closed_for_loss), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_instance_leaves_its_clients_told_and_its_requests_answered_elsewhere() {
    let Some(fx) = Fixture::new() else { return };
    let route = |b: cypherwire_server::ServerBuilder| {
        b.route(
            "/ECHO",
            "GET",
            |req: cypherwire_wire::Request, _ctx: cypherwire_server::Ctx| async move {
                Ok::<_, cypherwire_server::HandlerError>(req.data)
            },
        )
    };
    let bp_a = fx.backplane().await;
    let a = route(Server::builder(psk()).cluster(bp_a.clone()))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let bp_b = fx.backplane().await;
    let b = route(Server::builder(psk()).cluster(bp_b))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let client = Client::builder(psk())
        .connect_with(cypherwire_test_support::balance::FirstAlive(vec![
            a.local_addr(),
            b.local_addr(),
        ]))
        .unwrap();
    client.wait_online().await.unwrap();
    assert_eq!(a.handle().count(), 1);
    let id = a.handle().connections()[0].id;
    let mut status = client.status_events();
    // The instance dies: its connections drop, its backplane goes with it.
    a.handle().shutdown_now().await;
    drop(a);
    drop(bp_a);
    let resumed = online_after_a_drop(&mut status).await;
    assert_eq!(
        b.handle().count(),
        1,
        "the client landed on the other instance"
    );
    assert!(
        !resumed,
        "the session died with its instance, and the client is told so"
    );
    let reply = client.request("/ECHO", "GET").data(5).send().await.unwrap();
    assert_eq!(reply.data, Value::from(5));
    // The dead node's connections are reported as such, not as unknown outcomes.
    let cluster = b.handle().cluster().unwrap();
    let mut gone = None;
    for _ in 0..100 {
        match cluster.send_to(id, 1).await {
            Err(ClusterError::NoSuchNode(n)) => {
                gone = Some(n);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert_eq!(gone, id.node());
    // It left the node directory when it stopped, not only after the node TTL.
    let nodes = cluster.nodes().await.unwrap();
    assert!(!nodes.contains(&id.node().unwrap()), "{nodes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_under_load_loses_nothing_silently() {
    let Some(mut fx) = Fixture::new() else { return };
    let (a, _) = fx.node().await;
    let (b, _) = fx.node().await;
    let (cb, mut in_b) = client(&b).await;
    settle(&[a.handle(), b.handle()], 1).await;
    let mut status = cb.status_events();
    const N: i64 = 600;
    let publisher = paced_broadcasts(a.handle(), N);
    tokio::time::sleep(Duration::from_millis(300)).await;
    fx.redis.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    fx.redis.restart();
    publisher.await.unwrap();
    // Wait for the backlog to drain, then read what the client got.
    for _ in 0..300 {
        let s = a.handle().cluster().unwrap().stats();
        if s.published + s.publish_failed == N as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = numbers(&mut in_b, N as usize, Duration::from_secs(2)).await;
    let mut told = false;
    while let Some(s) = status.try_next() {
        if let Status::Offline { reason } = s {
            told |= reason.to_string().contains("lost");
        }
    }
    let a_stats = a.handle().cluster().unwrap().stats();
    let b_stats = b.handle().cluster().unwrap().stats();
    let mut sorted = got.clone();
    sorted.dedup();
    let duplicated = got.len() - sorted.len();
    let gaps = got.windows(2).filter(|w| w[1] != w[0] + 1).count();
    eprintln!(
        "redis restart: received {} of {N}, duplicated {duplicated}, gaps {gaps}, told {told}, \
         published {}, failed {}, lossy gaps at b {}, closed {}",
        got.len(),
        a_stats.published,
        a_stats.publish_failed,
        b_stats.lossy_gaps,
        b_stats.closed_for_loss
    );
    assert_eq!(duplicated, 0, "nothing twice");
    // Publications made while Redis was gone (about 150 of them: refused connections) waited
    // and went out when it was back; only those in flight at the kill have unknown outcomes.
    assert!(
        a_stats.publish_failed < 10,
        "refused publications were retried: {} failed",
        a_stats.publish_failed
    );
    assert_eq!(
        got,
        {
            let mut s = got.clone();
            s.sort_unstable();
            s
        },
        "in order"
    );
    // Redis came back empty: the topic's epoch changed, so the client was told (its
    // connection closed with PUSHES_LOST, its next session new) rather than left with a hole.
    assert!(b_stats.lossy_gaps >= 1 && b_stats.closed_for_loss >= 1);
    assert!(told, "the client saw the reason");
    assert!(gaps == 0 || told, "any hole is announced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_delays_but_loses_nothing() {
    let Some(fx) = Fixture::new() else { return };
    let (a, _) = fx.node().await;
    let (b, _) = fx.node().await;
    let (_cb, mut in_b) = client(&b).await;
    settle(&[a.handle(), b.handle()], 1).await;
    const N: i64 = 300;
    let publisher = paced_broadcasts(a.handle(), N);
    tokio::time::sleep(Duration::from_millis(200)).await;
    fx.redis.signal("STOP");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    fx.redis.signal("CONT");
    publisher.await.unwrap();
    let got = numbers(&mut in_b, N as usize, Duration::from_secs(5)).await;
    let stats = a.handle().cluster().unwrap().stats();
    eprintln!(
        "redis paused 1 s: received {} of {N}, published {}, failed {}",
        got.len(),
        stats.published,
        stats.publish_failed
    );
    // Commands wait in the socket while Redis is stopped and run when it resumes (the pause
    // is shorter than the 2 s command timeout): every publication arrives, once, in order.
    assert_eq!(stats.publish_failed, 0);
    assert_eq!(got, (0..N).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_moved_to_another_instance_resumes_there_losing_nothing_and_running_nothing_twice()
{
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    let Some(fx) = Fixture::new() else { return };
    let runs = Arc::new(AtomicU32::new(0));
    let node = |runs: Arc<AtomicU32>| {
        let fx = &fx;
        async move {
            Server::builder(psk())
                .route(
                    "/SLOW",
                    "GET",
                    move |req: cypherwire_wire::Request, _ctx: cypherwire_server::Ctx| {
                        let runs = runs.clone();
                        async move {
                            runs.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(400)).await;
                            Ok::<_, cypherwire_server::HandlerError>(req.data)
                        }
                    },
                )
                .cluster(fx.backplane().await)
                .bind("127.0.0.1:0")
                .await
                .unwrap()
        }
    };
    let a = node(runs.clone()).await;
    let b = node(runs.clone()).await;
    // The load balancer: a proxy that sends new connections where it is told.
    let lb = FaultProxy::start(a.local_addr()).await.unwrap();
    let c = Client::builder(psk())
        .connect(lb.addr().to_string())
        .unwrap();
    let mut incoming = c.take_incoming().unwrap();
    c.wait_online().await.unwrap();
    let mut status = c.status_events();
    let on_a = a.handle().connections()[0].id;
    // Pushes queued on A (some may still be in flight when the connection is cut) and a
    // request still running on A.
    for i in 0..20 {
        a.handle().send_to(on_a, i).unwrap();
    }
    let slow = tokio::spawn(c.request("/SLOW", "GET").data(7).send());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1, "running on A");
    lb.set_target(b.local_addr());
    lb.cut_all();
    let resumed = online_after_a_drop(&mut status).await;
    assert!(resumed, "the session continued on B");
    assert_eq!(b.handle().count(), 1);
    // The request that was running on A is answered (through B), and ran once.
    let reply = tokio::time::timeout(Duration::from_secs(5), slow)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(reply.data, Value::from(7));
    assert_eq!(runs.load(Ordering::SeqCst), 1, "not run again on B");
    // Every push once, in order; then B pushes on the same session.
    assert_eq!(
        numbers(&mut incoming, 20, Duration::from_secs(3)).await,
        (0..20).collect::<Vec<_>>()
    );
    let on_b = b.handle().connections()[0].id;
    b.handle().send_to(on_b, 99).unwrap();
    assert_eq!(
        numbers(&mut incoming, 2, Duration::from_millis(500)).await,
        [99]
    );
    // A no longer keeps the session once its request was answered.
    let mut gone = false;
    for _ in 0..100 {
        if a.handle().stats().sessions == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "the old instance dropped the handed-over session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_requires_a_password_takes_the_right_one_only() {
    let Some(redis) = RedisServer::start_with(&["--requirepass", "s3cret-pass"]) else {
        return;
    };
    let key = ClusterKey::generate().unwrap();
    let wrong =
        RedisBackplane::connect(&redis.url_with_auth("default", "wrong"), key.clone()).await;
    let e = wrong.unwrap_err().to_string();
    assert!(e.contains("redis"), "{e}");
    let none = RedisBackplane::connect(&redis.url(), key.clone()).await;
    assert!(none.is_err(), "no password, no cluster");
    let ok = RedisBackplane::connect(&redis.url_with_auth("default", "s3cret-pass"), key).await;
    assert!(ok.is_ok(), "{:?}", ok.err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_without_a_split_and_a_node_without_the_key_closes_rather_than_skips() {
    let Some(fx) = Fixture::new() else { return };
    let (old, new) = (
        ClusterKey::generate().unwrap(),
        ClusterKey::generate().unwrap(),
    );
    let connect = |keys: Vec<ClusterKey>| {
        let (url, options) = (fx.redis.url(), fx.options());
        async move {
            let bp = RedisBackplane::connect_with(&url, &keys, options)
                .await
                .unwrap();
            let server = Server::builder(psk())
                .cluster(bp.clone())
                .bind("127.0.0.1:0")
                .await
                .unwrap();
            (server, bp)
        }
    };
    // Mid-rotation: one node seals with the old key, one with the new; both open both.
    let (a, _) = connect(vec![old.clone(), new.clone()]).await;
    let (b, _) = connect(vec![new.clone(), old.clone()]).await;
    // A node that never got the new key.
    let (c, bp_c) = connect(vec![old.clone()]).await;
    let (_ca, mut in_a) = client(&a).await;
    let (_cb, mut in_b) = client(&b).await;
    let (cc, mut in_c) = client(&c).await;
    settle(&[a.handle(), b.handle(), c.handle()], 3).await;
    let mut status_c = cc.status_events();
    a.handle().broadcast(1);
    for incoming in [&mut in_a, &mut in_b, &mut in_c] {
        assert_eq!(numbers(incoming, 1, Duration::from_secs(2)).await, [1]);
    }
    b.handle().broadcast(2);
    assert_eq!(numbers(&mut in_a, 1, Duration::from_secs(2)).await, [2]);
    assert_eq!(numbers(&mut in_b, 1, Duration::from_secs(2)).await, [2]);
    // c cannot open b's publication (sealed with the new key): refused and counted.
    assert!(
        numbers(&mut in_c, 1, Duration::from_millis(300))
            .await
            .is_empty()
    );
    assert!(bp_c.seal_stats().forged >= 1);
    // The next publication shows c the hole it cannot fill: it closes its connection rather
    // than skip, and its client is told.
    a.handle().broadcast(3);
    assert_eq!(numbers(&mut in_b, 1, Duration::from_secs(2)).await, [3]);
    let told = cypherwire_test_support::cluster::offline_reason(&mut status_c).await;
    assert!(told.contains("lost"), "{told}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_gone_each_instance_still_bans_by_itself() {
    let Some(mut fx) = Fixture::new() else { return };
    let mut policy = BanPolicy::default();
    policy.max_attempts = 2;
    let (a, _) = fx.node_with(policy).await;
    fx.redis.kill();
    for _ in 0..2 {
        fail_handshake(&a).await;
    }
    assert!(
        a.handle()
            .bans()
            .iter()
            .any(|(ip, _)| ip.to_string() == "127.0.0.1"),
        "the local limiter banned the source"
    );
    // What the banned client sees: refused, even with the right key.
    let c = Client::builder(psk())
        .backoff({
            let mut b = cypherwire_client::Backoff::default();
            b.give_up_after_attempts = Some(1);
            b
        })
        .connect(a.local_addr().to_string())
        .unwrap();
    let online = tokio::time::timeout(Duration::from_secs(3), c.wait_online()).await;
    assert!(!matches!(online, Ok(Ok(()))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_that_stays_connected_but_delivers_nothing_is_caught_and_renewed() {
    // Redis on a TCP port too, so that one node can reach it through a proxy that can stall.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let Some(redis) = RedisServer::start_with(&["--port", &port.to_string()]) else {
        return;
    };
    let fx = Fixture {
        redis,
        key: ClusterKey::generate().unwrap(),
        prefix: format!("cw:t{:x}:", rand_suffix()),
    };
    let proxy = FaultProxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    let mut options = fx.options();
    options.heartbeat = Duration::from_millis(200);
    options.command_timeout = Duration::from_millis(300);
    let url = format!("redis://{}", proxy.addr());
    let bp_b = RedisBackplane::connect_with(&url, std::slice::from_ref(&fx.key), options)
        .await
        .unwrap();
    let (a, _b, (_c, mut in_b)) = fx.pair_with(bp_b.clone()).await;
    a.handle().broadcast(1);
    assert_eq!(numbers(&mut in_b, 1, Duration::from_secs(5)).await, [1]);

    // The link to Redis stays open but carries nothing: no error, no close, just silence.
    proxy.set_stalled(true);
    let caught = tokio::time::timeout(Duration::from_secs(10), async {
        while bp_b.seal_stats().probes_missed == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(caught.is_ok(), "the silent subscription was not noticed");

    // Once the link carries bytes again, the renewed subscription delivers.
    proxy.set_stalled(false);
    let delivered = tokio::time::timeout(Duration::from_secs(15), async {
        for n in 2.. {
            a.handle().broadcast(n);
            let got = numbers(&mut in_b, 1, Duration::from_millis(300)).await;
            if !got.is_empty() {
                return got;
            }
        }
        unreachable!()
    })
    .await
    .expect("deliveries resume after the stall");
    assert!(delivered[0] >= 2, "{delivered:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_members_are_listed_over_the_whole_cluster() {
    let Some(fx) = Fixture::new() else { return };
    let (a, _) = fx.node().await;
    let (b, _) = fx.node().await;
    let _ca = client(&a).await;
    let _cb = [client(&b).await, client(&b).await];
    settle(&[a.handle(), b.handle()], 3).await;
    let on_a = a.handle().connections()[0].id;
    let on_b: Vec<_> = b.handle().connections().iter().map(|c| c.id).collect();
    a.handle().join_group(on_a, "red").unwrap();
    b.handle().join_group(on_b[1], "red").unwrap();
    b.handle().join_group(on_b[0], "blue").unwrap();
    let mut red = vec![on_a, on_b[1]];
    red.sort();
    for from in [&a, &b] {
        let cluster = from.handle().cluster().unwrap();
        let members = cluster
            .group_members("red", Duration::from_secs(2))
            .await
            .unwrap();
        assert!(members.missing.is_empty(), "{:?}", members.missing);
        assert_eq!(members.value, red, "asked on node {}", cluster.node().get());
        let none = cluster
            .group_members("green", Duration::from_secs(2))
            .await
            .unwrap();
        assert!(none.value.is_empty());
    }
    // Each node alone still lists only its own.
    assert_eq!(a.handle().group_members("red"), [on_a]);
}

/// A certificate authority and a certificate for `localhost` it signed: (CA PEM, cert PEM,
/// key PEM).
#[cfg(feature = "tls")]
fn test_ca() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

#[cfg(feature = "tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reaches_redis_over_tls_trusting_only_the_given_authority() {
    let (ca, cert, key) = test_ca();
    let dir = std::env::temp_dir().join(format!("cw-tls-{:x}", rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let (ca_file, cert_file, key_file) = (
        path("ca.pem", &ca),
        path("cert.pem", &cert),
        path("key.pem", &key),
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let Some(redis) = RedisServer::start_with(&[
        "--tls-port",
        &port,
        "--tls-cert-file",
        &cert_file,
        "--tls-key-file",
        &key_file,
        "--tls-ca-cert-file",
        &ca_file,
        "--tls-auth-clients",
        "no",
    ]) else {
        return;
    };
    let fx = Fixture {
        redis,
        key: ClusterKey::generate().unwrap(),
        prefix: format!("cw:t{:x}:", rand_suffix()),
    };
    let url = format!("rediss://localhost:{port}");
    // The platform's roots do not know this authority: refused, not silently accepted.
    let untrusted =
        RedisBackplane::connect_with(&url, std::slice::from_ref(&fx.key), fx.options()).await;
    assert!(
        untrusted.is_err(),
        "a certificate from an unknown authority was accepted"
    );
    let mut options = fx.options();
    options.tls_root_cert = Some(ca.into_bytes());
    let bp = RedisBackplane::connect_with(&url, std::slice::from_ref(&fx.key), options)
        .await
        .unwrap();
    // The other node talks to the same Redis over its unix socket: one cluster.
    let (a, _b, (_c, mut in_b)) = fx.pair_with(bp).await;
    for n in 0..3 {
        a.handle().broadcast(n);
    }
    assert_eq!(
        numbers(&mut in_b, 3, Duration::from_secs(5)).await,
        [0, 1, 2]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
