//! Session resumption (`docs/protocol.md` §3.7): a client that loses its connection resumes
//! its session over a fresh handshake; resent requests are answered without running twice and
//! missed pushes are replayed in order.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use cypherwire_server::{
    Ctx, DisconnectReason, EventKind, HandlerError, ResumePolicy, Server, ServerHandle,
};
use cypherwire_session::{ClientAuth, Psk, SecureStream, SessionConfig, connect};
use cypherwire_wire::{CloseCode, Message, Request, Response, Resume, Value, Welcome};
use tokio::net::TcpStream;

static PSK: LazyLock<Psk> = LazyLock::new(|| Psk::from_bytes([0x77; 32]));

type Stream = SecureStream<TcpStream>;

async fn dial(h: &ServerHandle) -> Stream {
    let tcp = TcpStream::connect(h.local_addr()).await.unwrap();
    connect(
        tcp,
        &ClientAuth::Psk(PSK.clone()),
        &SessionConfig::default(),
    )
    .await
    .unwrap()
}

async fn recv(s: &mut Stream) -> Message {
    tokio::time::timeout(Duration::from_secs(10), s.recv_message())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
}

async fn welcome(s: &mut Stream) -> Welcome {
    match recv(s).await {
        Message::Welcome(w) => w,
        other => panic!("expected a Welcome, got {other:?}"),
    }
}

async fn response(s: &mut Stream, id: u64) -> Response {
    loop {
        if let Message::Response(r) = recv(s).await
            && r.id == id
        {
            return r;
        }
    }
}

/// A server whose `/COUNT INC` handler counts its executions (after an optional delay).
async fn counting_server(policy: ResumePolicy) -> (ServerHandle, Arc<AtomicU64>) {
    let runs = Arc::new(AtomicU64::new(0));
    let r = runs.clone();
    let server = Server::builder(PSK.clone())
        .route("/COUNT", "INC", move |req: Request, _ctx: Ctx| {
            let runs = r.clone();
            async move {
                let ms = req.data.as_u64().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok::<_, HandlerError>(Value::from(runs.fetch_add(1, Ordering::SeqCst) + 1))
            }
        })
        .resume_policy(policy)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    (server.handle(), runs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumed_session_answers_resends_once_and_replays_missed_pushes() {
    let (h, runs) = counting_server(ResumePolicy::default()).await;
    let mut a = dial(&h).await;
    let w1 = welcome(&mut a).await;
    assert!(!w1.resumed);

    // Request 1 completes normally.
    a.send_message(&Request::new(1, "/COUNT", "INC").into())
        .await
        .unwrap();
    assert_eq!(response(&mut a, 1).await.data, Value::from(1));
    // Request 2 is still running when the connection dies.
    a.send_message(
        &Request::new(2, "/COUNT", "INC")
            .with_data(Value::from(300))
            .into(),
    )
    .await
    .unwrap();
    let conn = h.connections()[0].id;
    for i in 1..=3 {
        h.send_to(conn, Value::from(i)).unwrap();
    }
    // The client saw push 1 only, then the connection vanished (no close).
    match recv(&mut a).await {
        Message::Push(p) => assert_eq!(p.seq, 1),
        other => panic!("{other:?}"),
    }
    drop(a);

    // Reconnect: fresh handshake, then Resume as the first message.
    let mut b = dial(&h).await;
    let provisional = welcome(&mut b).await;
    assert!(!provisional.resumed);
    b.send_message(&Resume::new(w1.token.0, 1).into())
        .await
        .unwrap();
    let w2 = welcome(&mut b).await;
    assert!(w2.resumed, "the session must resume");
    assert_ne!(w2.token, w1.token, "tokens are single-use and rotate");
    // Pushes 2 and 3 are replayed, in order.
    for want in 2..=3 {
        match recv(&mut b).await {
            Message::Push(p) => assert_eq!((p.seq, p.data), (want, Value::from(want))),
            other => panic!("{other:?}"),
        }
    }
    // Resending both requests runs neither again.
    b.send_message(
        &Request::new(2, "/COUNT", "INC")
            .with_data(Value::from(300))
            .into(),
    )
    .await
    .unwrap();
    assert_eq!(response(&mut b, 2).await.data, Value::from(2));
    b.send_message(&Request::new(1, "/COUNT", "INC").into())
        .await
        .unwrap();
    assert_eq!(response(&mut b, 1).await.data, Value::from(1));
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "each request ran exactly once"
    );
    // New requests run as usual, and push numbering continues.
    b.send_message(&Request::new(3, "/COUNT", "INC").into())
        .await
        .unwrap();
    assert_eq!(response(&mut b, 3).await.data, Value::from(3));
    let conn_b = h.connections()[0].id;
    h.send_to(conn_b, Value::from("next")).unwrap();
    match recv(&mut b).await {
        Message::Push(p) => assert_eq!(p.seq, 4),
        other => panic!("{other:?}"),
    }

    // Spec §3.7 rule 5: the token a resume presented stays valid until its successor is used
    // (the successor's Welcome may have been lost to a cut). Presenting w1 again still resumes
    // (and replaces b's connection)...
    let mut c = dial(&h).await;
    welcome(&mut c).await;
    c.send_message(&Resume::new(w1.token.0, 4).into())
        .await
        .unwrap();
    let w3 = welcome(&mut c).await;
    assert!(
        w3.resumed,
        "the predecessor resumes while its successor is unused"
    );
    // ...but once the successor is used, w1 is spent and starts nothing.
    let mut d = dial(&h).await;
    welcome(&mut d).await;
    d.send_message(&Resume::new(w3.token.0, 4).into())
        .await
        .unwrap();
    assert!(welcome(&mut d).await.resumed);
    let mut e = dial(&h).await;
    welcome(&mut e).await;
    e.send_message(&Resume::new(w1.token.0, 4).into())
        .await
        .unwrap();
    assert!(!welcome(&mut e).await.resumed, "w1 is spent");
    // w2, revoked when w1 was presented again, never resumes.
    let mut f = dial(&h).await;
    welcome(&mut f).await;
    f.send_message(&Resume::new(w2.token.0, 4).into())
        .await
        .unwrap();
    assert!(!welcome(&mut f).await.resumed, "w2 was revoked");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_expired_tokens_do_not_resume() {
    let mut policy = ResumePolicy::default();
    policy.ttl = Duration::from_millis(200);
    let (h, _) = counting_server(policy).await;
    // Garbage token.
    let mut a = dial(&h).await;
    welcome(&mut a).await;
    a.send_message(&Resume::new([9; 16], 0).into())
        .await
        .unwrap();
    assert!(!welcome(&mut a).await.resumed);
    // A genuine token past its time to live.
    let mut b = dial(&h).await;
    let w = welcome(&mut b).await;
    drop(b);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut c = dial(&h).await;
    welcome(&mut c).await;
    c.send_message(&Resume::new(w.token.0, 0).into())
        .await
        .unwrap();
    assert!(!welcome(&mut c).await.resumed);
    // A client that claims pushes the session never sent cannot resume either.
    let mut d = dial(&h).await;
    let w = welcome(&mut d).await;
    drop(d);
    let mut e = dial(&h).await;
    welcome(&mut e).await;
    e.send_message(&Resume::new(w.token.0, 99).into())
        .await
        .unwrap();
    assert!(!welcome(&mut e).await.resumed);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_replaces_a_half_open_predecessor() {
    let (h, _) = counting_server(ResumePolicy::default()).await;
    let mut events = h.events();
    let mut a = dial(&h).await;
    let w = welcome(&mut a).await;
    // `a` stays open (half-open from the client's point of view); `b` resumes its session.
    let mut b = dial(&h).await;
    welcome(&mut b).await;
    b.send_message(&Resume::new(w.token.0, 0).into())
        .await
        .unwrap();
    assert!(welcome(&mut b).await.resumed);
    match recv(&mut a).await {
        Message::Close(c) => assert_eq!(c.code, CloseCode::GOING_AWAY),
        other => panic!("{other:?}"),
    }
    loop {
        let e = events.next().await.unwrap();
        if let EventKind::Disconnected { reason, .. } = e.kind {
            assert_eq!(reason, DisconnectReason::Replaced);
            break;
        }
    }
    assert_eq!(h.count(), 1);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_is_only_valid_as_the_first_message() {
    let (h, _) = counting_server(ResumePolicy::default()).await;
    let mut a = dial(&h).await;
    let w = welcome(&mut a).await;
    a.send_message(&Request::new(1, "/COUNT", "INC").into())
        .await
        .unwrap();
    response(&mut a, 1).await;
    a.send_message(&Resume::new(w.token.0, 0).into())
        .await
        .unwrap();
    match recv(&mut a).await {
        Message::Close(c) => assert_eq!(c.code, CloseCode::PROTOCOL_ERROR),
        other => panic!("{other:?}"),
    }
    h.shutdown().await;
}
