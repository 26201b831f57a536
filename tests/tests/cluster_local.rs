//! Servers of one process on a `LocalHub`: the cluster rules without Redis (fan-out once and
//! in order, routed sends and kicks, bans on every instance, a client moved between
//! instances resuming there), as the clients see them.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cypherwire::client::{Backoff, Client, IncomingStream};
use cypherwire::server::{ClusterError, Ctx, HandlerError, LocalHub, NodeId, Server};
use cypherwire::session::Psk;
use cypherwire::wire::{Request, Value};
use cypherwire_test_support::cluster::{numbers, online_after_a_drop, settle};
use cypherwire_test_support::proxy::FaultProxy;

fn psk() -> Psk {
    Psk::from_passphrase("2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U").unwrap()
}

async fn node(hub: &LocalHub, runs: Arc<AtomicU32>) -> Server {
    Server::builder(psk())
        .route("/SLOW", "GET", move |req: Request, _ctx: Ctx| {
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok::<_, HandlerError>(req.data)
            }
        })
        .cluster(hub.join())
        .bind("127.0.0.1:0")
        .await
        .unwrap()
}

async fn client(addr: String) -> (Client, IncomingStream) {
    let c = Client::builder(psk()).connect(addr).unwrap();
    let incoming = c.take_incoming().unwrap();
    c.wait_online().await.unwrap();
    (c, incoming)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_on_one_hub_act_as_one() {
    let hub = LocalHub::new();
    let runs = Arc::new(AtomicU32::new(0));
    let a = node(&hub, runs.clone()).await;
    let b = node(&hub, runs.clone()).await;
    let c = node(&hub, runs).await;
    let mut incoming = Vec::new();
    let mut clients = Vec::new();
    for s in [&a, &b, &c] {
        let (cl, inc) = client(s.local_addr().to_string()).await;
        clients.push(cl);
        incoming.push(inc);
    }
    let hs = [a.handle(), b.handle(), c.handle()];
    settle(&hs, 3).await;
    for i in 0..200 {
        hs[0].broadcast(i);
    }
    for inc in &mut incoming {
        assert_eq!(
            numbers(inc, 200, Duration::from_secs(3)).await,
            (0..200).collect::<Vec<_>>()
        );
    }
    // Groups: members on b and c; a publishes without a member.
    for h in &hs[1..] {
        h.join_group(h.connections()[0].id, "room").unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    hs[0].broadcast_group("room", 7);
    assert!(
        numbers(&mut incoming[0], 1, Duration::from_millis(200))
            .await
            .is_empty()
    );
    assert_eq!(
        numbers(&mut incoming[1], 1, Duration::from_secs(2)).await,
        [7]
    );
    assert_eq!(
        numbers(&mut incoming[2], 1, Duration::from_secs(2)).await,
        [7]
    );
    // A send and a kick routed to the owner; a node that is not there.
    let cluster = hs[0].cluster().unwrap();
    let on_c = hs[2].connections()[0].id;
    cluster.send_to(on_c, 9).await.unwrap();
    assert_eq!(
        numbers(&mut incoming[2], 1, Duration::from_secs(2)).await,
        [9]
    );
    let ghost = cypherwire::server::ConnectionId((u64::from(NodeId::MAX) << 40) | 1);
    assert_eq!(
        cluster.send_to(ghost, 1).await,
        Err(ClusterError::NoSuchNode(NodeId::new(NodeId::MAX).unwrap()))
    );
    let count = cluster.count(Duration::from_secs(1)).await.unwrap();
    assert_eq!((count.value, count.missing.len()), (3, 0));
    let mut status = clients[2].status_events();
    cluster.kick(on_c).await.unwrap();
    let reason = cypherwire_test_support::cluster::kicked_reason(&mut status).await;
    assert!(reason.contains("kick"), "{reason}");
    // A ban on a holds on b: a new client there is refused.
    hs[0].ban("127.0.0.1".parse().unwrap(), Duration::from_secs(60));
    for _ in 0..100 {
        if !hs[1].bans().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!hs[1].bans().is_empty());
    let refused = Client::builder(psk())
        .backoff({
            let mut b = Backoff::default();
            b.give_up_after_attempts = Some(1);
            b
        })
        .connect(b.local_addr().to_string())
        .unwrap();
    let online = tokio::time::timeout(Duration::from_secs(3), refused.wait_online()).await;
    assert!(!matches!(online, Ok(Ok(()))), "banned everywhere");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_moved_between_instances_of_one_hub_resumes_and_runs_nothing_twice() {
    let hub = LocalHub::new();
    let runs = Arc::new(AtomicU32::new(0));
    let a = node(&hub, runs.clone()).await;
    let b = node(&hub, runs.clone()).await;
    let lb = FaultProxy::start(a.local_addr()).await.unwrap();
    let (c, mut incoming) = client(lb.addr().to_string()).await;
    let on_a = a.handle().connections()[0].id;
    for i in 0..10 {
        a.handle().send_to(on_a, i).unwrap();
    }
    let slow = tokio::spawn(c.request("/SLOW", "GET").data(4).send());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut status = c.status_events();
    lb.set_target(b.local_addr());
    lb.cut_all();
    let resumed = online_after_a_drop(&mut status).await;
    assert!(resumed);
    let reply = slow.await.unwrap().unwrap();
    assert_eq!(reply.data, Value::from(4));
    assert_eq!(runs.load(Ordering::SeqCst), 1, "ran once, on a");
    assert_eq!(
        numbers(&mut incoming, 10, Duration::from_secs(2)).await,
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(b.handle().count(), 1);
    // The hub's nodes are the live servers: one leaves with its server.
    let before = b.handle().cluster().unwrap().nodes().await.unwrap().len();
    a.handle().shutdown_now().await;
    drop(a);
    let mut after = before;
    for _ in 0..100 {
        after = b.handle().cluster().unwrap().nodes().await.unwrap().len();
        if after < before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!((before, after), (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_left_running_on_an_instance_that_dies_after_a_move_runs_again_on_the_new_one() {
    let hub = LocalHub::new();
    let runs = Arc::new(AtomicU32::new(0));
    // a's handler takes long enough for a to die first.
    let a = Server::builder(psk())
        .route("/SLOW", "GET", {
            let runs = runs.clone();
            move |req: Request, _ctx: Ctx| {
                let runs = runs.clone();
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Ok::<_, HandlerError>(req.data)
                }
            }
        })
        .cluster(hub.join())
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let b = node(&hub, runs.clone()).await;
    let lb = FaultProxy::start(a.local_addr()).await.unwrap();
    let (c, _incoming) = client(lb.addr().to_string()).await;
    let slow = tokio::spawn(c.request("/SLOW", "GET").data(5).send());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut status = c.status_events();
    lb.set_target(b.local_addr());
    lb.cut_all();
    assert!(
        online_after_a_drop(&mut status).await,
        "moved to b with its session"
    );
    // a dies with the request still running there.
    a.handle().shutdown_now().await;
    drop(a);
    // b gives it up, closes the connection, the client resumes and resends, b runs it.
    let reply = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .expect("answered, not left waiting")
        .unwrap()
        .unwrap();
    assert_eq!(reply.data, Value::from(5));
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "once on a (lost with it), once on b"
    );
}
