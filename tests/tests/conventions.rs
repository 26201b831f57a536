//! The API conventions a Rust user expects, as an application uses them over real loopback
//! TCP: every stream is a `futures` `Stream`, actions go out through a `Sink`, payloads are
//! typed end to end, handlers share state, the lifecycle (`bind` over any address,
//! `connect_and_wait`, graceful shutdown on a signal) and the seeds' pieces (client action
//! handlers, the session id, connections by IP, newest-first inbox).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cypherwire::client::{Client, Error, Incoming, Status};
use cypherwire::server::{Ctx, EventKind, HandlerError, Reply, Server, ServerHandle};
use cypherwire::session::Psk;
use cypherwire::wire::{Action, Message, Request, StatusCode, Value};
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};

fn psk() -> Psk {
    Psk::from_passphrase("2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U").unwrap()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Point {
    x: i32,
    y: i32,
}

/// A type whose serialization always fails.
struct Unencodable;

impl Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("refuses to be encoded"))
    }
}

/// Polls `check` every 10 ms for up to 5 s.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what} did not happen within 5 s");
}

async fn client(server: &ServerHandle) -> Client {
    Client::builder(psk())
        .connect_and_wait(server.local_addr().to_string())
        .await
        .unwrap()
}

/// The session id `/SESSION` answers for `c` (the route returns `ctx.session` as text).
async fn session_of(c: &Client) -> String {
    let s: Option<String> = c
        .request("/SESSION", "GET")
        .send()
        .await
        .unwrap()
        .data()
        .unwrap();
    s.expect("a session")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_are_typed_end_to_end() {
    let server = Server::builder(psk())
        .route("/FLIP", "GET", |req: Request, _ctx: Ctx| async move {
            let p: Point = req.data()?;
            Ok::<_, HandlerError>(Point { x: p.y, y: p.x })
        })
        .route("/TEXT", "GET", |_req: Request, _ctx: Ctx| async move {
            Ok::<_, HandlerError>(Reply::from("plain text").with_metadata("meta"))
        })
        .route("/BROKEN", "GET", |_req: Request, _ctx: Ctx| async move {
            Ok::<_, HandlerError>(Unencodable)
        })
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let h = server.handle();
    let c = client(&h).await;

    let flipped: Point = c
        .request("/FLIP", "GET")
        .data_serde(&Point { x: 1, y: 2 })
        .send()
        .await
        .unwrap()
        .data()
        .unwrap();
    assert_eq!(flipped, Point { x: 2, y: 1 });

    let text = c.request("/TEXT", "GET").send().await.unwrap();
    assert_eq!(text.data, Value::from("plain text"));
    assert_eq!(text.metadata, Value::from("meta"));

    // Data of the wrong shape is the caller's fault; an answer that does not encode is not.
    let err = c
        .request("/FLIP", "GET")
        .data("nope")
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Status {
                code: StatusCode::BAD_REQUEST,
                ..
            }
        ),
        "{err:?}"
    );
    let err = c.request("/BROKEN", "GET").send().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Status {
                code: StatusCode::INTERNAL,
                ..
            }
        ),
        "{err:?}"
    );

    // Data that does not convert fails at the caller: nothing reaches the server.
    let before = h.stats().messages_in;
    let err = c
        .request("/FLIP", "GET")
        .data_serde(&Unencodable)
        .send()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Data(_)), "{err:?}");
    assert!(err.to_string().contains("refuses to be encoded"), "{err}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(h.stats().messages_in, before);

    c.close().await;
    h.shutdown().await;
}

#[derive(Default)]
struct Hits(AtomicU64);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_share_state_and_see_their_session() {
    let server = Server::builder(psk())
        .state(Hits::default())
        .state(String::from("the name"))
        .route("/HITS", "ADD", |_req: Request, ctx: Ctx| async move {
            let hits = ctx.state::<Hits>()?;
            let name = ctx.state::<String>()?;
            let n = hits.0.fetch_add(1, Ordering::SeqCst) + 1;
            Ok::<_, HandlerError>((name.as_str().to_owned(), n))
        })
        .route("/MISSING", "GET", |_req: Request, ctx: Ctx| async move {
            ctx.state::<Vec<u8>>()?;
            Ok::<_, HandlerError>(())
        })
        .route("/SESSION", "GET", |_req: Request, ctx: Ctx| async move {
            Ok::<_, HandlerError>(ctx.session.map(|s| s.to_string()))
        })
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let h = server.handle();
    let a = client(&h).await;
    let b = client(&h).await;

    for expected in 1..=3u64 {
        let (name, n): (String, u64) = a
            .request("/HITS", "ADD")
            .send()
            .await
            .unwrap()
            .data()
            .unwrap();
        assert_eq!((name.as_str(), n), ("the name", expected));
    }
    assert_eq!(h.state::<Hits>().unwrap().0.load(Ordering::SeqCst), 3);
    let err = a.request("/MISSING", "GET").send().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Status {
                code: StatusCode::INTERNAL,
                ..
            }
        ),
        "{err:?}"
    );

    let a1 = session_of(&a).await;
    assert_eq!(
        session_of(&a).await,
        a1,
        "one session for the whole connection"
    );
    assert_ne!(session_of(&b).await, a1, "each client has its own");
    assert!(a1.starts_with('s'), "{a1}");

    a.close().await;
    b.close().await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stream_works_with_stream_ext_and_actions_go_out_through_a_sink() {
    let server = Server::builder(psk())
        .inbox(64)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let h = server.handle();
    let inbox = h.take_inbox().unwrap();
    let mut events = h.events();
    let c = client(&h).await;
    let mut statuses = c.status_events();
    let mut incoming = c.take_incoming().unwrap();
    assert!(c.take_incoming().is_none(), "a single consumer: taken once");

    // Server events as a Stream.
    let first = tokio::time::timeout(
        Duration::from_secs(5),
        (&mut events)
            .filter(|e| std::future::ready(matches!(e.kind, EventKind::Authenticated { .. })))
            .next(),
    )
    .await
    .unwrap();
    assert!(first.is_some());

    // A Sink of actions, fed from a Stream: all arrive, in order.
    let mut sink = c.emitter();
    let mut items = futures::stream::iter(1..=20i64).map(|n| Ok::<_, Error>(("n", n)));
    sink.send_all(&mut items).await.unwrap();
    SinkExt::<(&str, i64)>::close(&mut sink).await.unwrap();
    assert!(
        matches!(sink.send(("n", 0i64)).await, Err(Error::Closed)),
        "a closed sink takes nothing more"
    );
    // The inbox as a Stream: the actions in the order they were sent.
    let got: Vec<i64> = tokio::time::timeout(
        Duration::from_secs(5),
        inbox
            .map(|item| match item.message {
                Message::Action(a) => a.data::<i64>().unwrap(),
                other => panic!("{other:?}"),
            })
            .take(20)
            .collect(),
    )
    .await
    .unwrap();
    assert_eq!(got, (1..=20).collect::<Vec<_>>());

    // The client's incoming stream with StreamExt combinators.
    for n in 1..=3 {
        h.broadcast(n);
    }
    let pushes: Vec<i64> = tokio::time::timeout(
        Duration::from_secs(5),
        (&mut incoming)
            .filter_map(|i| {
                std::future::ready(match i {
                    Incoming::Push(p) => p.data::<i64>().ok(),
                    _ => None,
                })
            })
            .take(3)
            .collect(),
    )
    .await
    .unwrap();
    assert_eq!(pushes, [1, 2, 3]);

    // Status events as a Stream: the server going away takes the client offline.
    h.shutdown().await;
    let offline = tokio::time::timeout(
        Duration::from_secs(5),
        (&mut statuses)
            .filter(|s| std::future::ready(matches!(s, Status::Offline { .. })))
            .next(),
    )
    .await
    .unwrap();
    assert!(offline.is_some());
    c.close_within(Duration::ZERO).await;

    // The mesh's events are a Stream too (checked by the compiler).
    fn is_stream<S: futures::Stream>() {}
    is_stream::<cypherwire::mesh::Events>();
    is_stream::<cypherwire::server::Inbox>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_messages_can_be_taken_newest_first_and_connections_found_by_ip() {
    let server = Server::builder(psk())
        .inbox(16)
        .bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let h = server.handle();
    let mut inbox = h.take_inbox().unwrap();
    let a = client(&h).await;
    let b = client(&h).await;

    for n in 1..=3 {
        a.emit("note", n).await.unwrap();
    }
    eventually("three messages in the inbox", || inbox.len() == 3).await;
    let order: Vec<i64> = inbox
        .drain_newest_first()
        .into_iter()
        .map(|item| match item.message {
            Message::Action(a) => a.data().unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(order, [3, 2, 1]);
    assert!(inbox.is_empty());

    let mut incoming = b.take_incoming().unwrap();
    for n in 1..=3 {
        h.broadcast(n);
    }
    eventually("three pushes at the client", || incoming.len() == 3).await;
    let newest_first: Vec<i64> = incoming
        .drain_newest_first()
        .into_iter()
        .map(|i| match i {
            Incoming::Push(p) => p.data().unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(newest_first, [3, 2, 1]);

    let here = h.connections_from(IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!(here.len(), 2);
    assert!(here.windows(2).all(|w| w[0].id < w[1].id));
    assert!(
        h.connections_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9)))
            .is_empty()
    );

    a.close().await;
    b.close().await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_action_handlers_take_their_actions_and_the_rest_stay_in_the_stream() {
    let server = Server::builder(psk())
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let h = server.handle();
    let (chat_tx, mut chats) = tokio::sync::mpsc::channel::<String>(8);
    let c = Client::builder(psk())
        .on_action("chat", move |a: Action| {
            let chat_tx = chat_tx.clone();
            async move {
                chat_tx.send(a.data().unwrap()).await.unwrap();
            }
        })
        .connect_and_wait(h.local_addr().to_string())
        .await
        .unwrap();
    let mut incoming = c.take_incoming().unwrap();

    h.broadcast_action(&Action::new("chat", "hello", 0));
    h.broadcast_action(&Action::new("other", 7, 0));
    h.broadcast_action(&Action::new("chat", "again", 0));
    let wait = Duration::from_secs(5);
    assert_eq!(
        tokio::time::timeout(wait, chats.recv())
            .await
            .unwrap()
            .unwrap(),
        "hello"
    );
    assert_eq!(
        tokio::time::timeout(wait, chats.recv())
            .await
            .unwrap()
            .unwrap(),
        "again"
    );
    match tokio::time::timeout(wait, incoming.next())
        .await
        .unwrap()
        .unwrap()
    {
        Incoming::Action(a) => assert_eq!((a.name.as_str(), a.data), ("other", Value::from(7))),
        other => panic!("{other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        incoming.try_next().is_none(),
        "the chats did not reach the stream"
    );

    c.close().await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_shuts_the_server_down_gracefully_and_the_client_is_told() {
    let server = Server::builder(psk())
        .route("/SLOW", "GET", |_req: Request, _ctx: Ctx| async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<_, HandlerError>("done")
        })
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let h = server.handle();
    let c = client(&h).await;
    let mut statuses = c.status_events();
    let (signal, signalled) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.with_graceful_shutdown(async {
        let _ = signalled.await;
    }));
    let slow = tokio::spawn(c.request("/SLOW", "GET").send());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!h.is_stopped());
    signal.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .unwrap()
        .unwrap();
    assert!(h.is_stopped());
    // The request in flight was let finish; then the client was told the server went away.
    assert_eq!(slow.await.unwrap().unwrap().data, Value::from("done"));
    let offline = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(Status::Offline { reason }) = statuses.next().await {
                return reason.to_string();
            }
        }
    })
    .await
    .unwrap();
    assert!(offline.contains("GOING_AWAY"), "{offline}");
    c.close_within(Duration::ZERO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_wait_reports_a_wrong_key_instead_of_waiting() {
    let server = Server::builder(psk()).bind("127.0.0.1:0").await.unwrap();
    let h = server.handle();
    let wrong = Psk::from_passphrase("a different key entirely, 32 bytes").unwrap();
    let err = Client::builder(wrong)
        .connect_and_wait(h.local_addr().to_string())
        .await
        .unwrap_err();
    assert_eq!(err, Error::AuthenticationFailed);
    let bad = Server::builder(psk())
        .bind("256.0.0.1:1")
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("256.0.0.1:1"), "{bad}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_id_survives_a_resume_and_another_client_has_another() {
    use cypherwire_test_support::proxy::FaultProxy;
    let server = Server::builder(psk())
        .route("/SESSION", "GET", |_req: Request, ctx: Ctx| async move {
            Ok::<_, HandlerError>(ctx.session.map(|s| s.to_string()))
        })
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let h = server.handle();
    let proxy = FaultProxy::start(h.local_addr()).await.unwrap();
    let c = Client::builder(psk())
        .connect_and_wait(proxy.addr().to_string())
        .await
        .unwrap();
    let before = session_of(&c).await;
    let mut statuses = c.status_events();
    proxy.cut_all();
    let resumed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(Status::Online { resumed }) = statuses.next().await {
                return resumed;
            }
        }
    })
    .await
    .unwrap();
    assert!(resumed, "the client resumed its session");
    assert_eq!(session_of(&c).await, before, "same session, new connection");
    // Another client has a session of its own.
    let other = Client::builder(psk())
        .connect_and_wait(h.local_addr().to_string())
        .await
        .unwrap();
    assert_ne!(session_of(&other).await, before);
    c.close().await;
    other.close().await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_graceful_shutdown_also_returns_when_the_server_is_stopped_another_way() {
    let server = Server::builder(psk()).bind("127.0.0.1:0").await.unwrap();
    let h = server.handle();
    // A signal that never comes: the server stops through a handle instead.
    let serving = tokio::spawn(server.with_graceful_shutdown(std::future::pending()));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!serving.is_finished());
    h.shutdown().await;
    tokio::time::timeout(Duration::from_secs(5), serving)
        .await
        .expect("returned once stopped")
        .unwrap();
    assert!(h.is_stopped());
}
