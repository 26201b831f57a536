//! A real mesh on 127.0.0.1: admission, bans, broadcast counts, heartbeats, poisoning, leave.
//!
//! Waits are bounded polls (they end by themselves); the one time bound asserted is the
//! issue's functional requirement that a killed member is gone from every list within
//! 3 × heartbeat interval + 1 s.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cypherwire_mesh::{
    AuthPeer, BanTarget, Error, Event, Events, JoinPeer, LeaveReason, MeshConfig, PeerId,
};
use cypherwire_session::{
    Argon2Cost, BanPolicy, ClientAuth, IdentityKey, Password, PasswordVerifier, SessionConfig,
};
use cypherwire_wire::Value;
use tokio::net::TcpSocket;

const PASSWORD: &str = "correct horse battery staple";

fn verifier() -> PasswordVerifier {
    // Cheap argon2 keeps the suite fast; the cost is not what these tests are about.
    PasswordVerifier::create(PASSWORD, Argon2Cost::new(64, 1, 1)).unwrap()
}

fn config(hb_ms: u64) -> MeshConfig {
    MeshConfig::default().with_heartbeat(Duration::from_millis(hb_ms), 3)
}

fn bans(max_attempts: u32) -> BanPolicy {
    let mut p = BanPolicy::default();
    p.max_attempts = max_attempts;
    p
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// Polls `cond` every 20 ms for at most `limit`; returns whether it became true.
async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = now() + limit;
    loop {
        if cond() {
            return true;
        }
        if now() > end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Collects a node's events in the background.
fn collect(mut events: Events) -> Arc<Mutex<Vec<Event>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    tokio::spawn(async move {
        while let Some(e) = events.next().await {
            out.lock().unwrap().push(e);
        }
    });
    seen
}

async fn start_auth(hb_ms: u64, max_attempts: u32) -> AuthPeer {
    AuthPeer::builder(verifier())
        .listen("127.0.0.1:0")
        .config(config(hb_ms))
        .ban_policy(bans(max_attempts))
        .start()
        .await
        .unwrap()
}

async fn join(auth: &AuthPeer, cfg: MeshConfig) -> Result<JoinPeer, Error> {
    JoinPeer::join(auth.local_addr().to_string(), Password::new(PASSWORD), cfg).await
}

/// One password handshake from a chosen loopback source address (an attacker's tool).
async fn raw_attempt(auth: SocketAddr, source: &str, password: &str) -> bool {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let Ok(tcp) = sock.connect(auth).await else {
        return false;
    };
    cypherwire_session::connect(
        tcp,
        &ClientAuth::Password(Password::new(password)),
        &SessionConfig::default(),
    )
    .await
    .is_ok()
}

fn ids(list: &[cypherwire_mesh::PeerEntry]) -> Vec<PeerId> {
    list.iter().map(|e| e.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_peers_join_and_every_broadcast_arrives_exactly_once() {
    let auth = start_auth(1000, 5).await;
    let mut peers = Vec::new();
    for _ in 0..10 {
        peers.push(join(&auth, config(1000)).await.unwrap());
    }
    let all: Vec<PeerId> = std::iter::once(auth.id())
        .chain(peers.iter().map(|p| p.id()))
        .collect();
    assert!(
        eventually(Duration::from_secs(10), || {
            peers.iter().all(|p| p.peers().len() == 11) && auth.peers().len() == 11
        })
        .await,
        "every member holds the full list"
    );
    let mut logs = vec![collect(auth.take_events().unwrap())];
    logs.extend(peers.iter().map(|p| collect(p.take_events().unwrap())));

    // Every member broadcasts 5 messages (55 in all); each must reach the 10 others once.
    for round in 0..5 {
        let report = auth.broadcast(format!("auth-{round}")).await.unwrap();
        assert_eq!(report.delivered.len(), 10, "{:?}", report.failed);
        for (i, p) in peers.iter().enumerate() {
            let report = p.broadcast(format!("p{i}-{round}")).await.unwrap();
            assert!(report.is_complete(), "{:?}", report.failed);
            assert_eq!(report.delivered.len(), 10);
        }
    }
    let messages = |log: &Arc<Mutex<Vec<Event>>>| {
        log.lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::Message {
                    from,
                    data,
                    broadcast: true,
                } => Some((*from, data.clone())),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(Duration::from_secs(10), || logs
            .iter()
            .all(|l| messages(l).len() >= 50))
        .await
    );
    // Give stray duplicates a moment to show up, then count.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (me, log) in all.iter().zip(&logs) {
        let got = messages(log);
        assert_eq!(got.len(), 50, "member {me} got {} messages", got.len());
        let mut per_sender: HashMap<PeerId, usize> = HashMap::new();
        for (from, _) in &got {
            *per_sender.entry(*from).or_default() += 1;
        }
        assert!(!per_sender.contains_key(me), "no echo to the sender");
        assert_eq!(per_sender.len(), 10);
        assert!(per_sender.values().all(|n| *n == 5), "{per_sender:?}");
        let mut texts: Vec<String> = got
            .iter()
            .map(|(_, d)| d.as_str().unwrap().to_owned())
            .collect();
        texts.sort();
        texts.dedup();
        assert_eq!(texts.len(), 50, "no message delivered twice");
    }
    // A direct message reaches exactly its addressee.
    peers[0]
        .send(peers[9].id(), Value::from("just for you"))
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || {
            logs[10].lock().unwrap().iter().any(
            |e| matches!(e, Event::Message { from, broadcast: false, .. } if *from == peers[0].id())
        )
        })
        .await
    );
    let unknown = PeerId::from_bytes([0; 8]);
    assert!(matches!(
        peers[0].send(unknown, Value::Nil).await,
        Err(Error::PeerUnknown(id)) if id == unknown
    ));
    // Leave: everyone sees it promptly (no heartbeat timeout needed).
    let leaver = peers.pop().unwrap();
    let gone = leaver.id();
    leaver.leave().await;
    assert!(
        eventually(Duration::from_secs(5), || logs[..10].iter().all(|l| l
            .lock()
            .unwrap()
            .contains(&Event::PeerLeft {
                id: gone,
                reason: LeaveReason::Left
            })))
        .await
    );
    // The authenticating peer leaves: members are told.
    auth.leave().await;
    assert!(
        eventually(Duration::from_secs(5), || logs[1..10]
            .iter()
            .all(|l| l.lock().unwrap().contains(&Event::AuthPeerLeft)))
        .await
    );
    for p in peers {
        p.leave().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_ban_the_address_before_any_handshake_work() {
    let auth = start_auth(1000, 3).await;
    let log = collect(auth.take_events().unwrap());
    let addr = auth.local_addr();

    // A join peer with the wrong password: a typed authentication error.
    let wrong = JoinPeer::join(addr.to_string(), Password::new("wrong"), config(1000)).await;
    assert!(
        matches!(wrong, Err(Error::Authentication { .. })),
        "{wrong:?}"
    );

    // An attacker on another address: 3 wrong passwords → banned.
    for _ in 0..3 {
        assert!(!raw_attempt(addr, "127.0.0.2", "guess").await);
    }
    let attacker: IpAddr = "127.0.0.2".parse().unwrap();
    assert!(
        eventually(Duration::from_secs(5), || log.lock().unwrap().contains(
            &Event::Banned {
                addr: Some(attacker),
                peer: None
            }
        ))
        .await
    );
    assert!(
        auth.bans()
            .iter()
            .any(|b| b.target == BanTarget::Addr(attacker))
    );
    let before = auth.listener_stats();
    assert_eq!(before.handshakes_failed, 4);
    // Banned: even the right password is refused, and no handshake work is done at all.
    for _ in 0..10 {
        assert!(!raw_attempt(addr, "127.0.0.2", "guess").await);
    }
    assert!(!raw_attempt(addr, "127.0.0.2", PASSWORD).await);
    let after = auth.listener_stats();
    assert_eq!(
        after.handshakes_failed, before.handshakes_failed,
        "no PAKE ran"
    );
    assert_eq!(after.handshakes_ok, before.handshakes_ok);
    // Others are unaffected.
    let honest = join(&auth, config(1000)).await.unwrap();
    assert_eq!(honest.peers().len(), 2);
    honest.leave().await;
    auth.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persisted_bans_survive_a_restart() {
    let dir = std::env::temp_dir().join(format!("cw-mesh-bans-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bans.txt");
    let _ = std::fs::remove_file(&file);
    let start = || async {
        AuthPeer::builder(verifier())
            .listen("127.0.0.1:0")
            .config(config(1000))
            .ban_policy(bans(2))
            .ban_file(&file)
            .start()
            .await
            .unwrap()
    };
    let auth = start().await;
    // A member whose key the operator bans, an address banned by hand, one by wrong passwords.
    let key = IdentityKey::generate().unwrap();
    let member = join(&auth, config(1000).with_identity(key.clone()))
        .await
        .unwrap();
    let member_id = member.id();
    auth.ban_peer(member_id, Duration::from_secs(3600)).unwrap();
    auth.ban_addr("127.0.0.4".parse().unwrap(), Duration::from_secs(3600));
    for _ in 0..2 {
        assert!(!raw_attempt(auth.local_addr(), "127.0.0.3", "guess").await);
    }
    assert!(
        eventually(Duration::from_secs(5), || auth.bans().len() == 3).await,
        "{:?}",
        auth.bans()
    );
    member.abort().await;
    auth.leave().await;

    // Restart on the same file: all three bans hold.
    let auth = start().await;
    let targets: Vec<BanTarget> = auth.bans().iter().map(|b| b.target).collect();
    for t in [
        BanTarget::Peer(member_id),
        BanTarget::Addr("127.0.0.3".parse().unwrap()),
        BanTarget::Addr("127.0.0.4".parse().unwrap()),
    ] {
        assert!(
            targets.contains(&t),
            "{t:?} lost in the restart: {targets:?}"
        );
    }
    for source in ["127.0.0.3", "127.0.0.4"] {
        assert!(!raw_attempt(auth.local_addr(), source, PASSWORD).await);
    }
    assert_eq!(auth.listener_stats().handshakes_ok, 0);
    assert_eq!(
        auth.listener_stats().handshakes_failed,
        0,
        "refused before the PAKE"
    );
    let again = join(&auth, config(1000).with_identity(key)).await;
    assert!(matches!(again, Err(Error::Banned { .. })), "{again:?}");
    assert!(auth.unban_peer(member_id));
    auth.leave().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_peer_is_gone_everywhere_within_three_heartbeats_and_can_rejoin() {
    let hb = Duration::from_millis(1000);
    let auth = start_auth(1000, 5).await;
    let victim_key = IdentityKey::generate().unwrap();
    let mut peers = Vec::new();
    for _ in 0..9 {
        peers.push(join(&auth, config(1000)).await.unwrap());
    }
    let victim = join(&auth, config(1000).with_identity(victim_key.clone()))
        .await
        .unwrap();
    let victim_id = victim.id();
    assert!(
        eventually(Duration::from_secs(10), || peers
            .iter()
            .all(|p| p.peers().len() == 11))
        .await
    );
    let killed_at = now();
    victim.abort().await;
    let listed = |p: &[cypherwire_mesh::PeerEntry]| ids(p).contains(&victim_id);
    assert!(
        eventually(3 * hb + Duration::from_secs(1), || {
            !listed(&auth.peers()) && peers.iter().all(|p| !listed(&p.peers()))
        })
        .await,
        "still listed {:?} after the kill",
        now() - killed_at
    );
    // Back with the right password: in everyone's list again.
    let back = join(&auth, config(1000).with_identity(victim_key))
        .await
        .unwrap();
    assert_eq!(back.id(), victim_id);
    assert!(
        eventually(Duration::from_secs(10), || {
            listed(&auth.peers()) && peers.iter().all(|p| listed(&p.peers()))
        })
        .await
    );
    back.leave().await;
    for p in peers {
        p.leave().await;
    }
    auth.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_peer_can_no_longer_reach_the_others() {
    let auth = start_auth(1000, 5).await;
    let mut short = config(1000);
    short.send_timeout = Duration::from_secs(1);
    let a = join(&auth, short).await.unwrap();
    let b = join(&auth, config(1000)).await.unwrap();
    let b_log = collect(b.take_events().unwrap());
    assert!(
        eventually(Duration::from_secs(5), || a.peers().len() == 3
            && b.peers().len() == 3)
        .await
    );
    // Before: a reaches b.
    a.send(b.id(), Value::from("before")).await.unwrap();
    // The operator bans a's key: removed from the list, its re-join refused.
    auth.ban_peer(a.id(), Duration::from_secs(3600)).unwrap();
    assert!(eventually(Duration::from_secs(5), || b.peers().len() == 2).await);
    // a still holds a list with b in it, but b's listener asks its current list during the
    // handshake and refuses a's key: the send fails (typed), nothing is delivered.
    let attempt = a.send(b.id(), Value::from("after")).await;
    assert!(
        matches!(
            attempt,
            Err(Error::SendFailed { .. } | Error::PeerUnknown(_))
        ),
        "{attempt:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let texts: Vec<String> = b_log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::Message { data, .. } => data.as_str().map(str::to_owned),
            _ => None,
        })
        .collect();
    assert_eq!(texts, vec!["before".to_owned()]);
    a.abort().await;
    b.leave().await;
    auth.leave().await;
}

/// A member that sends malformed direct messages on its own channel gets `BAD_REQUEST` for
/// each, nothing reaches the receiver's application, and well-formed messages still flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_direct_messages_are_refused_and_break_nothing() {
    use cypherwire_session::PeerTrust;
    use cypherwire_wire::{Message, Request, StatusCode};
    let auth = start_auth(1000, 5).await;
    // The test keeps a's key, so it can speak on a's behalf over a raw session.
    let a_key = IdentityKey::generate().unwrap();
    let a = join(&auth, config(1000).with_identity(a_key.clone()))
        .await
        .unwrap();
    let b = join(&auth, config(1000)).await.unwrap();
    let b_log = collect(b.take_events().unwrap());
    assert!(
        eventually(Duration::from_secs(5), || a.peers().len() == 3
            && b.peers().len() == 3)
        .await
    );
    let tcp = tokio::net::TcpStream::connect(b.direct_addr())
        .await
        .unwrap();
    let mut raw = cypherwire_session::connect(
        tcp,
        &ClientAuth::Identity(a_key, PeerTrust::AnyKey),
        &SessionConfig::default(),
    )
    .await
    .unwrap();
    let bodies = [
        Value::from("not a map"),
        Value::map([("b", Value::from(false)), ("i", Value::from(1u64))]),
        Value::map([
            ("b", Value::from("yes")),
            ("i", Value::from(1u64)),
            ("s", Value::from(1u64)),
        ]),
        Value::Nil,
    ];
    for (n, body) in bodies.iter().enumerate() {
        let id = n as u64 + 1;
        let req = Request::new(id, "/mesh", "SEND").with_data(body.clone());
        raw.send_message(&req.into()).await.unwrap();
        let resp = loop {
            match tokio::time::timeout(Duration::from_secs(5), raw.recv_message())
                .await
                .unwrap()
                .unwrap()
            {
                Some(Message::Response(r)) if r.id == id => break r,
                Some(_) => {}
                None => panic!("closed after malformed message {n}"),
            }
        };
        assert_eq!(
            resp.status.code,
            StatusCode::BAD_REQUEST,
            "body {n}: {resp:?}"
        );
    }
    // The real thing still works, on the same member pair.
    a.send(b.id(), Value::from("fine")).await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || {
            b_log
                .lock()
                .unwrap()
                .iter()
                .any(|e| matches!(e, Event::Message { data, .. } if data.as_str() == Some("fine")))
        })
        .await
    );
    let delivered = b_log
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, Event::Message { .. }))
        .count();
    assert_eq!(delivered, 1, "only the well-formed message was delivered");
    a.leave().await;
    b.leave().await;
    auth.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kicked_member_is_told_and_stays_out_and_a_banned_one_is_told_once() {
    let auth = start_auth(200, 5).await;
    let a = join(&auth, config(200)).await.unwrap();
    let a_log = collect(a.take_events().unwrap());
    let b = join(&auth, config(200)).await.unwrap();
    let b_log = collect(b.take_events().unwrap());
    assert!(eventually(Duration::from_secs(5), || auth.peers().len() == 3).await);
    let listed = |id| auth.peers().iter().any(|p| p.id == id);

    auth.kick(a.id()).unwrap();
    let kicked = |log: &Arc<Mutex<Vec<Event>>>| {
        log.lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(e, Event::Kicked { .. }))
            .count()
    };
    assert!(eventually(Duration::from_secs(5), || kicked(&a_log) == 1).await);
    // Five heartbeats later it has not come back by itself.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!listed(a.id()), "a kicked member rejoined");
    let rejoined = a_log
        .lock()
        .unwrap()
        .iter()
        .skip_while(|e| !matches!(e, Event::Kicked { .. }))
        .any(|e| matches!(e, Event::Joined { .. }));
    assert!(!rejoined);

    auth.ban_peer(b.id(), Duration::from_secs(3600)).unwrap();
    let banned = |log: &Arc<Mutex<Vec<Event>>>| {
        log.lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(e, Event::BannedByAuthPeer { .. }))
            .count()
    };
    assert!(eventually(Duration::from_secs(5), || banned(&b_log) == 1).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(banned(&b_log), 1, "told once, not on every heartbeat");
    assert!(!listed(b.id()));
    a.abort().await;
    b.abort().await;
    auth.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_fails_at_the_sender_and_nothing_is_delivered() {
    let max = 64 * 1024;
    let mut small = config(1000);
    small.session = SessionConfig::builder()
        .max_message_len(max)
        .build()
        .unwrap();
    let auth = start_auth(1000, 5).await;
    let a = join(&auth, small).await.unwrap();
    let b = join(&auth, config(1000)).await.unwrap();
    let b_log = collect(b.take_events().unwrap());
    assert!(
        eventually(Duration::from_secs(5), || a.peers().len() == 3
            && b.peers().len() == 3)
        .await
    );
    let too_big = Value::bytes(vec![3; max]);
    let err = a.send(b.id(), too_big.clone()).await.unwrap_err();
    let Error::MessageTooLarge { len, max: limit } = err else {
        panic!("{err:?}")
    };
    assert!(len > max && limit == max, "{len} {limit}");
    assert!(matches!(
        a.broadcast(too_big).await,
        Err(Error::MessageTooLarge { .. })
    ));
    // The links are fine: the next message arrives, and it is the only one.
    a.send(b.id(), Value::from("fits")).await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || b_log
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, Event::Message { .. })))
        .await
    );
    let messages: Vec<Value> = b_log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::Message { data, .. } => Some(data.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(messages, vec![Value::from("fits")]);
    auth.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exempt_address_is_never_banned_and_the_others_still_are() {
    let auth = AuthPeer::builder(verifier())
        .listen("127.0.0.1:0")
        .config(config(1000))
        .ban_policy(bans(2))
        .ban_exempt(|ip| ip == IpAddr::from([127, 0, 0, 3]))
        .start()
        .await
        .unwrap();
    let addr = auth.local_addr();
    // Five wrong passwords from the exempt address, then the right one: admitted.
    for _ in 0..5 {
        assert!(!raw_attempt(addr, "127.0.0.3", "typo").await);
    }
    assert!(raw_attempt(addr, "127.0.0.3", PASSWORD).await);
    // Two from another address ban it: even the right password is refused.
    for _ in 0..2 {
        assert!(!raw_attempt(addr, "127.0.0.4", "typo").await);
    }
    assert!(
        eventually(Duration::from_secs(5), || auth
            .bans()
            .iter()
            .any(|b| b.target == BanTarget::Addr(IpAddr::from([127, 0, 0, 4]))))
        .await
    );
    assert!(!raw_attempt(addr, "127.0.0.4", PASSWORD).await);
    assert!(
        !auth
            .bans()
            .iter()
            .any(|b| b.target == BanTarget::Addr(IpAddr::from([127, 0, 0, 3])))
    );
    auth.leave().await;
}
