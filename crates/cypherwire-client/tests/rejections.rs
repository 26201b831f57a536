//! What a client's application sees when the server rejects, kicks, bans or restarts: typed
//! statuses and errors, one offline signal per outage, and no retry that costs the server a
//! handshake for the same answer. Real server, loopback TCP.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::Duration;

use cypherwire_client::StatusEvents;
use cypherwire_client::{Backoff, Client, Error, OfflineReason, Status};
use cypherwire_server::{Ctx, HandlerError, Server, ServerHandle, ServerLimits};
use cypherwire_session::{Psk, SessionConfig};
use cypherwire_wire::{CloseCode, Request, Value};

static PSK: LazyLock<Psk> = LazyLock::new(|| Psk::from_bytes([0x52; 32]));

async fn server_on(addr: &str) -> ServerHandle {
    Server::builder(PSK.clone())
        .route("/ECHO", "ANY", |req: Request, _ctx: Ctx| async move {
            Ok::<_, HandlerError>(req.data)
        })
        .bind(addr)
        .await
        .unwrap()
        .handle()
}

fn fast_backoff() -> Backoff {
    let mut b = Backoff::default();
    b.initial = Duration::from_millis(20);
    b.max = Duration::from_millis(100);
    b
}

fn client(addr: SocketAddr, psk: Psk) -> Client {
    Client::builder(psk)
        .backoff(fast_backoff())
        .connect(addr.to_string())
        .unwrap()
}

/// Statuses until one satisfies `last` (included), within 10 s.
async fn statuses_until(events: &mut StatusEvents, last: impl Fn(&Status) -> bool) -> Vec<Status> {
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let s = events.next().await.unwrap();
            let done = last(&s);
            seen.push(s);
            if done {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("statuses so far: {seen:?}"));
    seen
}

/// Waits until `c` (just started) is online, and returns its status events from then on.
async fn online(c: &Client) -> StatusEvents {
    let mut events = c.status_events();
    if c.status().borrow().is_online() {
        // Online before the subscription was taken (a busy test machine): drop what the
        // subscription may have caught of it.
        while let Some(s) = events.try_next() {
            if s.is_online() {
                break;
            }
        }
        return events;
    }
    let seen = statuses_until(&mut events, Status::is_online).await;
    assert_eq!(seen.last(), Some(&Status::Online { resumed: false }));
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_and_restart_reads_online_offline_once_reconnecting_online() {
    let h = server_on("127.0.0.1:0").await;
    let addr = h.local_addr();
    let c = client(addr, PSK.clone());
    let mut events = online(&c).await;
    // The server dies without a word, and comes back on the same port a little later.
    h.shutdown_now().await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let h = server_on(&addr.to_string()).await;
    let seen = statuses_until(&mut events, Status::is_online).await;
    let Status::Offline { reason } = &seen[0] else {
        panic!("the outage starts with Offline: {seen:?}");
    };
    assert!(
        matches!(
            reason,
            OfflineReason::ConnectionLost(_)
                | OfflineReason::ServerClosed {
                    code: CloseCode::GOING_AWAY,
                    ..
                }
        ),
        "{reason:?}"
    );
    let middle = &seen[1..seen.len() - 1];
    assert!(!middle.is_empty(), "at least one retry: {seen:?}");
    for (i, s) in middle.iter().enumerate() {
        let attempt = u32::try_from(i + 1).unwrap();
        assert_eq!(*s, Status::Reconnecting { attempt }, "{seen:?}");
    }
    assert_eq!(seen.last(), Some(&Status::Online { resumed: false }));
    // The new server is reachable through the same client.
    let r = c.request("/ECHO", "ANY").data(5).send().await.unwrap();
    assert_eq!(r.data::<u64>().unwrap(), 5);
    c.close_within(Duration::from_millis(100)).await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_costs_one_handshake_and_says_so() {
    let h = server_on("127.0.0.1:0").await;
    let c = client(h.local_addr(), Psk::from_bytes([0x53; 32]));
    let mut events = c.status_events();
    let err = c.request("/ECHO", "ANY").send().await.unwrap_err();
    assert_eq!(err, Error::AuthenticationFailed);
    assert_eq!(
        err.to_string(),
        "authentication failed (wrong key or password?)"
    );
    assert!(err.is_closed());
    assert_eq!(c.wait_online().await, Err(Error::AuthenticationFailed));
    let seen = statuses_until(&mut events, Status::is_final).await;
    assert_eq!(
        seen[seen.len() - 2..],
        [
            Status::Offline {
                reason: OfflineReason::AuthenticationFailed
            },
            Status::GaveUp
        ]
    );
    // No retry followed: the server saw exactly one failed handshake.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.stats().handshakes_failed, 1);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_client_is_told_until_when_and_costs_no_handshake() {
    let h = server_on("127.0.0.1:0").await;
    h.ban("127.0.0.1".parse().unwrap(), Duration::from_secs(600));
    let c = client(h.local_addr(), PSK.clone());
    let err = c.wait_online().await.unwrap_err();
    let Error::Banned {
        retry_after: Some(wait),
    } = err
    else {
        panic!("expected a ban with its end, got {err:?}");
    };
    assert!(
        wait > Duration::from_secs(590) && wait <= Duration::from_secs(600),
        "{wait:?}"
    );
    assert_eq!(err.to_string(), "banned by the server for another 10 min");
    let stats = h.stats();
    assert_eq!(stats.refused_by.banned, 1);
    assert_eq!((stats.handshakes_ok, stats.handshakes_failed), (0, 0));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_closes_the_open_connection_and_the_client_stops() {
    let h = server_on("127.0.0.1:0").await;
    let c = client(h.local_addr(), PSK.clone());
    let mut events = online(&c).await;
    assert_eq!(
        h.ban("127.0.0.1".parse().unwrap(), Duration::from_secs(60)),
        1
    );
    let seen = statuses_until(&mut events, Status::is_final).await;
    assert!(
        matches!(
            &seen[..],
            [
                Status::Offline {
                    reason: OfflineReason::Banned { .. }
                },
                Status::GaveUp
            ]
        ),
        "{seen:?}"
    );
    let err = c.request("/ECHO", "ANY").send().await.unwrap_err();
    assert!(matches!(err, Error::Banned { .. }), "{err:?}");
    // Its session is gone with it.
    for _ in 0..100 {
        if h.stats().sessions == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.stats().sessions, 0);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kicked_client_stops_and_its_session_cannot_be_resumed() {
    let h = server_on("127.0.0.1:0").await;
    let c = client(h.local_addr(), PSK.clone());
    let mut events = online(&c).await;
    h.kick(h.connections()[0].id).unwrap();
    let seen = statuses_until(&mut events, Status::is_final).await;
    assert_eq!(
        seen,
        [Status::Kicked {
            reason: "kicked by the operator".into()
        }]
    );
    let err = c.request("/ECHO", "ANY").send().await.unwrap_err();
    assert_eq!(
        err,
        Error::Kicked {
            reason: "kicked by the operator".into()
        }
    );
    assert_eq!(c.wait_online().await, Err(err));
    // No reconnect happened.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.stats().handshakes_ok, 1);

    // A client that chose to come back gets a new session, not the kicked one.
    let c = Client::builder(PSK.clone())
        .backoff(fast_backoff())
        .reconnect_after_kick(true)
        .connect(h.local_addr().to_string())
        .unwrap();
    let mut events = c.status_events();
    let seen = statuses_until(&mut events, Status::is_online).await;
    assert_eq!(seen.last(), Some(&Status::Online { resumed: false }));
    let id = h.connections().into_iter().map(|i| i.id).max().unwrap();
    h.kick(id).unwrap();
    let seen = statuses_until(&mut events, Status::is_online).await;
    assert!(
        matches!(
            &seen[0],
            Status::Offline {
                reason: OfflineReason::ServerClosed {
                    code: CloseCode::KICKED,
                    ..
                }
            }
        ),
        "{seen:?}"
    );
    assert_eq!(seen.last(), Some(&Status::Online { resumed: false }));
    h.shutdown().await;
}

// One thread: the second client's driver cannot run (and be refused) before the test has
// subscribed to its statuses.
#[tokio::test(flavor = "current_thread")]
async fn an_over_capacity_refusal_is_retried_and_admitted_once_there_is_room() {
    let mut limits = ServerLimits::default();
    limits.max_connections = 1;
    let h = Server::builder(PSK.clone())
        .limits(limits)
        .bind("127.0.0.1:0")
        .await
        .unwrap()
        .handle();
    let first = client(h.local_addr(), PSK.clone());
    first.wait_online().await.unwrap();
    let second = client(h.local_addr(), PSK.clone());
    let mut events = second.status_events();
    let seen = statuses_until(&mut events, |s| matches!(s, Status::Offline { .. })).await;
    let Some(Status::Offline {
        reason: OfflineReason::Refused(r),
    }) = seen.last()
    else {
        panic!("{seen:?}");
    };
    assert_eq!(r.code, CloseCode::OVERLOADED);
    assert!(r.retry_after.is_some());
    assert!(h.stats().refused_by.over_capacity >= 1);
    // Room again: the second client gets in by itself.
    first.close_within(Duration::from_millis(100)).await;
    tokio::time::timeout(Duration::from_secs(10), second.wait_online())
        .await
        .unwrap()
        .unwrap();
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_fails_at_the_caller_and_nothing_reaches_the_server() {
    let h = server_on("127.0.0.1:0").await;
    let c = Client::builder(PSK.clone())
        .session_config(
            SessionConfig::builder()
                .max_message_len(64 * 1024)
                .build()
                .unwrap(),
        )
        .connect(h.local_addr().to_string())
        .unwrap();
    c.wait_online().await.unwrap();
    let before = h.stats().messages_in;
    let err = c
        .request("/ECHO", "ANY")
        .data(Value::bytes(vec![7; 100_000]))
        .send()
        .await
        .unwrap_err();
    let Error::MessageTooLarge { len, max } = err else {
        panic!("{err:?}");
    };
    assert_eq!(max, 64 * 1024);
    assert!(len >= 100_000, "{len}");
    assert!(err.to_string().starts_with("message too large: "), "{err}");
    // The connection is fine and the next request passes.
    let r = c
        .request("/ECHO", "ANY")
        .data(Value::bytes(vec![7; 1000]))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.data::<Value>().unwrap().as_bytes().map(<[u8]>::len),
        Some(1000)
    );
    assert_eq!(h.stats().messages_in, before + 1);
    // The limit is on the encoding, not on the estimate: ten thousand small integers are
    // estimated at 16 bytes each (over the limit) but encode in far less, and are sent.
    let ints = Value::Array((0..10_000).map(|i| Value::from(i % 100)).collect());
    assert!(ints.approx_size() > 64 * 1024);
    let r = c
        .request("/ECHO", "ANY")
        .data(ints.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.data::<Value>().unwrap(), ints);
    h.shutdown().await;
}
