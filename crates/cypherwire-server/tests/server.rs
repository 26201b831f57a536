//! The server over real loopback TCP with real handshakes, for every suite and codec.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use cypherwire_server::{
    ConnectionId, Ctx, DisconnectReason, Error, EventKind, Events, HandlerError, Refusal, Reply,
    Server, ServerHandle, ServerLimits,
};
use cypherwire_session::{CipherSuite, ClientAuth, Psk, SecureStream, SessionConfig, connect};
use cypherwire_wire::{
    Action, Cancel, CloseCode, CodecId, Message, Ping, Request, Response, StatusCode, Value,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

static PSK: LazyLock<Psk> =
    LazyLock::new(|| Psk::from_passphrase("2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U").unwrap());

type Stream = SecureStream<TcpStream>;

async fn client(server: &ServerHandle, cfg: &SessionConfig) -> Stream {
    let tcp = TcpStream::connect(server.local_addr()).await.unwrap();
    connect(tcp, &ClientAuth::Psk(PSK.clone()), cfg)
        .await
        .unwrap()
}

/// A connected client and the address the server sees it at (connection ids are given when
/// the server finishes a handshake, not in connect order: tests find a client's id by it).
async fn client_at(server: &ServerHandle) -> (Stream, SocketAddr) {
    let tcp = TcpStream::connect(server.local_addr()).await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let auth = ClientAuth::Psk(PSK.clone());
    let stream = connect(tcp, &auth, &SessionConfig::default())
        .await
        .unwrap();
    (stream, addr)
}

/// The ids of the connections from `addrs`, in that order, once all are registered.
async fn ids_of(server: &ServerHandle, addrs: &[SocketAddr]) -> Vec<ConnectionId> {
    loop {
        let conns = server.connections();
        let ids: Vec<_> = addrs
            .iter()
            .filter_map(|a| conns.iter().find(|c| c.peer == *a).map(|c| c.id))
            .collect();
        if ids.len() == addrs.len() {
            return ids;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The next message other than the session's Welcome.
async fn next(s: &mut Stream) -> Option<Message> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.recv_message())
            .await
            .unwrap()
            .unwrap()
        {
            Some(Message::Welcome(_)) => {}
            other => return other,
        }
    }
}

/// Sends a request and waits for its response (skipping pushes and actions).
async fn call(s: &mut Stream, req: Request) -> Response {
    let id = req.id;
    s.send_message(&req.into()).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.recv_message())
            .await
            .unwrap()
            .unwrap()
        {
            Some(Message::Response(r)) if r.id == id => return r,
            Some(_) => {}
            None => panic!("closed while waiting for response {id}"),
        }
    }
}

async fn next_event(events: &mut Events, want: impl Fn(&EventKind) -> bool) -> EventKind {
    loop {
        let e = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .unwrap()
            .unwrap();
        if want(&e.kind) {
            return e.kind;
        }
    }
}

fn demo_server() -> cypherwire_server::ServerBuilder {
    let seq: Arc<Mutex<Vec<i64>>> = Arc::default();
    let seq2 = seq.clone();
    Server::builder(PSK.clone())
        .route("/SEQUENCE", "UPDATE", move |req: Request, _ctx: Ctx| {
            let seq = seq.clone();
            async move {
                let items: Vec<i64> = cypherwire_wire::from_value(req.data)?;
                seq.lock().unwrap().extend(items);
                Ok::<_, HandlerError>(Value::from("UPDATED"))
            }
        })
        .route("/SEQUENCE", "READ", move |_req: Request, _ctx: Ctx| {
            let seq = seq2.clone();
            async move { Ok::<_, HandlerError>(Value::from(seq.lock().unwrap().clone())) }
        })
        .route("/ECHO", "PUT", |req: Request, ctx: Ctx| async move {
            assert_eq!(ctx.request_id, Some(req.id));
            Ok::<_, HandlerError>(Reply::new(req.data).with_metadata(req.metadata))
        })
        .route("/FAIL", "NOW", |_req: Request, _ctx: Ctx| async move {
            Err::<Value, _>(HandlerError::new(StatusCode(1042), "nope"))
        })
        .route("/PANIC", "NOW", |_req: Request, _ctx: Ctx| async move {
            if true {
                panic!("handler bug");
            }
            Ok::<Value, HandlerError>(Value::Nil)
        })
        .route("/SLOW", "WAIT", |req: Request, _ctx: Ctx| async move {
            let ms = req.data.as_u64().unwrap_or(100);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, HandlerError>(Value::from("done"))
        })
        .action("chat", |act: Action, ctx: Ctx| async move {
            ctx.server.broadcast_action(&act);
        })
}

/// `Reply::then_close`: the peer reads the answer, then `Close` (KICKED), then the end of the
/// stream; other connections are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_can_close_the_connection_after_it_is_read() {
    let server = demo_server()
        .route("/BYE", "NOW", |_req: Request, _ctx: Ctx| async move {
            tokio::task::yield_now().await;
            Ok::<_, HandlerError>(Reply::new("bye").then_close())
        })
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let h = server.handle();
    let mut other = client(&h, &SessionConfig::default()).await;
    let mut s = client(&h, &SessionConfig::default()).await;
    s.send_message(&Request::new(1, "/BYE", "NOW").into())
        .await
        .unwrap();
    match next(&mut s).await {
        Some(Message::Response(r)) => assert_eq!(r.data, Value::from("bye")),
        other => panic!("the answer first: {other:?}"),
    }
    match next(&mut s).await {
        Some(Message::Close(c)) => assert_eq!(c.code, CloseCode::KICKED),
        other => panic!("then Close: {other:?}"),
    }
    let r = call(
        &mut other,
        Request::new(2, "/ECHO", "PUT").with_data(Value::from(5u64)),
    )
    .await;
    assert_eq!(r.data, Value::from(5u64), "other connections are untouched");
    h.shutdown().await;
}

/// Handlers that finish at once are answered on the connection's task; one that waits goes on
/// in its own task without holding up the requests behind it, and a panic in either place is
/// answered `INTERNAL` with the connection still serving. The waiting handlers wait on a gate
/// the test opens only after every immediate answer arrived (no timing assumptions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_handlers_do_not_hold_up_immediate_ones() {
    let (gate, gate_rx) = tokio::sync::watch::channel(false);
    let (gate_a, gate_b) = (gate_rx.clone(), gate_rx);
    let server = demo_server()
        .route("/GATE", "WAIT", move |_req: Request, _ctx: Ctx| {
            let mut open = gate_a.clone();
            async move {
                let _ = open.wait_for(|o| *o).await;
                Ok::<_, HandlerError>(Value::from("done"))
            }
        })
        .route("/GATE", "PANIC", move |_req: Request, _ctx: Ctx| {
            let mut open = gate_b.clone();
            async move {
                let _ = open.wait_for(|o| *o).await;
                if true {
                    panic!("handler bug after waiting");
                }
                Ok::<Value, HandlerError>(Value::Nil)
            }
        })
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let h = server.handle();
    let mut s = client(&h, &SessionConfig::default()).await;
    s.queue_message(&Request::new(1, "/GATE", "WAIT").into())
        .unwrap();
    s.queue_message(&Request::new(2, "/GATE", "PANIC").into())
        .unwrap();
    s.queue_message(&Request::new(3, "/PANIC", "NOW").into())
        .unwrap();
    for id in 4..54 {
        let req = Request::new(id, "/ECHO", "PUT").with_data(Value::from(id));
        s.queue_message(&req.into()).unwrap();
    }
    s.flush().await.unwrap();
    let mut answered = Vec::new();
    // Everything behind the two waiting requests is answered while they still wait.
    while answered.len() < 51 {
        match next(&mut s).await {
            Some(Message::Response(r)) => {
                match r.id {
                    3 => assert_eq!(r.status.code, StatusCode::INTERNAL, "{r:?}"),
                    id @ 4..54 => {
                        assert!(r.status.code.is_ok());
                        assert_eq!(r.data, Value::from(id));
                    }
                    id => panic!("request {id} was answered before its gate opened"),
                }
                answered.push(r.id);
            }
            other => panic!("{other:?}"),
        }
    }
    answered.sort_unstable();
    assert_eq!(answered, (3..54).collect::<Vec<_>>());
    gate.send_replace(true);
    let mut late = Vec::new();
    while late.len() < 2 {
        match next(&mut s).await {
            Some(Message::Response(r)) => {
                match r.id {
                    1 => assert_eq!(r.data, Value::from("done")),
                    2 => assert_eq!(r.status.code, StatusCode::INTERNAL, "{r:?}"),
                    id => panic!("unexpected answer {id}"),
                }
                late.push(r.id);
            }
            other => panic!("{other:?}"),
        }
    }
    // Still serving.
    let r = call(
        &mut s,
        Request::new(99, "/ECHO", "PUT").with_data(Value::from(7u64)),
    )
    .await;
    assert_eq!(r.data, Value::from(7u64));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_errors_and_panics_for_every_suite_and_codec() {
    for suite in CipherSuite::ALL {
        for codec in [CodecId::MsgPack, CodecId::Json] {
            let cfg = SessionConfig::builder()
                .suites([suite])
                .codecs([codec])
                .build()
                .unwrap();
            let server = demo_server()
                .session_config(cfg.clone())
                .bind("127.0.0.1:0")
                .await
                .unwrap();
            let mut c = client(&server.handle(), &cfg).await;
            assert_eq!(c.info().suite, suite);
            assert_eq!(c.info().codec, codec);

            let r = call(
                &mut c,
                Request::new(1, "/SEQUENCE", "UPDATE").with_data(Value::from(vec![1, 2, 3])),
            )
            .await;
            assert_eq!(r.data, Value::from("UPDATED"));
            let r = call(&mut c, Request::new(2, "/SEQUENCE", "READ")).await;
            assert_eq!(r.data, Value::from(vec![1, 2, 3]));
            let meta = Value::map([("k", Value::bytes(*b"\x00\x01"))]);
            let r = call(
                &mut c,
                Request::new(3, "/ECHO", "PUT")
                    .with_data(Value::from(-5))
                    .with_metadata(meta.clone()),
            )
            .await;
            assert_eq!(
                (r.status.code, r.data, r.metadata),
                (StatusCode::OK, Value::from(-5), meta)
            );
            let r = call(&mut c, Request::new(4, "/FAIL", "NOW")).await;
            assert_eq!(
                (r.status.code, r.status.message.as_str()),
                (StatusCode(1042), "nope")
            );
            let r = call(&mut c, Request::new(5, "/PANIC", "NOW")).await;
            assert_eq!(r.status.code, StatusCode::INTERNAL);
            let r = call(&mut c, Request::new(6, "/NOWHERE", "GET")).await;
            assert_eq!(r.status.code, StatusCode::NOT_FOUND);
            let r = call(
                &mut c,
                Request::new(7, "/SEQUENCE", "UPDATE").with_data(Value::from("not a list")),
            )
            .await;
            assert_eq!(r.status.code, StatusCode::BAD_REQUEST);
            // The connection survived the panic and the errors.
            let r = call(&mut c, Request::new(8, "/SEQUENCE", "READ")).await;
            assert_eq!(r.data, Value::from(vec![1, 2, 3]));
            server.handle().shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_takes_every_unmatched_request() {
    let server = Server::builder(PSK.clone())
        .fallback(|req: Request, _ctx: Ctx| async move {
            Ok::<_, HandlerError>(Value::from(format!("{} {}", req.path, req.operation)))
        })
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let mut c = client(&server.handle(), &SessionConfig::default()).await;
    let r = call(&mut c, Request::new(1, "/ANY", "THING")).await;
    assert_eq!(r.data, Value::from("/ANY THING"));
    server.handle().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_clients_with_pipelined_requests() {
    let server = demo_server().bind("127.0.0.1:0").await.unwrap();
    let handle = server.handle();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..50u64 {
        let handle = handle.clone();
        tasks.spawn(async move {
            let mut s = client(&handle, &SessionConfig::default()).await;
            for i in 0..20u64 {
                let req = Request::new(i, "/ECHO", "PUT").with_data(Value::from(c * 1000 + i));
                s.queue_message(&req.into()).unwrap();
            }
            s.flush().await.unwrap();
            let mut seen = 0;
            while seen < 20 {
                if let Some(Message::Response(r)) = next(&mut s).await {
                    assert_eq!(r.data, Value::from(c * 1000 + r.id));
                    seen += 1;
                }
            }
            s.close().await.unwrap();
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    assert_eq!(handle.stats().requests, 1000);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_broadcast_reaches_100_clients() {
    let server = demo_server().bind("127.0.0.1:0").await.unwrap();
    let handle = server.handle();
    let mut clients = Vec::new();
    for _ in 0..100 {
        clients.push(client(&handle, &SessionConfig::default()).await);
    }
    // Wait until all are registered.
    for _ in 0..100 {
        if handle.count() == 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(handle.count(), 100);
    let chat = Action::new("chat", Value::from("hello all"), 1);
    clients[0].send_message(&chat.clone().into()).await.unwrap();
    let mut got = 0;
    for c in &mut clients {
        match next(c).await {
            Some(Message::Action(a)) => {
                assert_eq!(a, chat);
                got += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, 100);
    // Server-initiated broadcast: a Push with the next sequence number on each connection.
    assert_eq!(handle.broadcast(Value::from(7)), 100);
    for c in &mut clients {
        match next(c).await {
            Some(Message::Push(p)) => assert_eq!((p.seq, p.data), (1, Value::from(7))),
            other => panic!("{other:?}"),
        }
    }
    handle.shutdown().await;
}

/// The demo server on a free port with outboxes of `capacity` messages.
async fn with_outbox(capacity: usize) -> Server {
    let mut limits = ServerLimits::default();
    limits.outbox_capacity = capacity;
    demo_server()
        .limits(limits)
        .bind("127.0.0.1:0")
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_that_find_the_outbox_full_wait_for_room_and_all_arrive_once() {
    // A client that sends a burst of large requests before reading anything: the answers
    // fill the socket and the outbox of 2, so most of them wait for room (in a task of their
    // own once their handler finished at once); when the client reads, every one arrives.
    let server = with_outbox(2).await;
    let handle = server.handle();
    let (mut s, _) = client_at(&handle).await;
    const N: u64 = 48;
    let blob = Value::bytes(vec![0x5a; 256 * 1024]);
    for id in 1..=N {
        s.send_message(
            &Request::new(id, "/ECHO", "PUT")
                .with_data(blob.clone())
                .into(),
        )
        .await
        .unwrap();
    }
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < N as usize {
        match next(&mut s).await {
            Some(Message::Response(r)) => {
                assert!(r.status.code.is_ok(), "{r:?}");
                assert_eq!(r.data, blob);
                assert!(seen.insert(r.id), "answer {} arrived twice", r.id);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(seen, (1..=N).collect());
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_cut_while_others_keep_receiving() {
    let server = with_outbox(8).await;
    let handle = server.handle();
    let mut events = handle.events();
    let (_sleeper, sleeper_addr) = client_at(&handle).await; // never reads
    let (mut reader, reader_addr) = client_at(&handle).await;
    let ids = ids_of(&handle, &[sleeper_addr, reader_addr]).await;
    let (sleeper_id, reader_id) = (ids[0], ids[1]);
    let blob = Value::bytes(vec![0xab; 60 * 1024]);
    let mut cut = false;
    let mut delivered = 0u64;
    for _ in 0..10_000 {
        if handle.send_to(sleeper_id, blob.clone()).is_err() {
            cut = true;
            break;
        }
        handle.send_to(reader_id, Value::from(delivered)).unwrap();
        delivered += 1;
        // The reader keeps up.
        match next(&mut reader).await {
            Some(Message::Push(p)) => assert_eq!(p.data, Value::from(delivered - 1)),
            other => panic!("{other:?}"),
        }
    }
    assert!(cut, "the non-reading client was never cut");
    let kind = next_event(&mut events, |k| matches!(k, EventKind::Disconnected { .. })).await;
    assert!(
        matches!(kind, EventKind::Disconnected { id, reason: DisconnectReason::SlowConsumer, .. } if id == sleeper_id),
        "{kind:?}"
    );
    // The reader is unaffected.
    handle
        .send_to(reader_id, Value::from("still here"))
        .unwrap();
    match next(&mut reader).await {
        Some(Message::Push(p)) => assert_eq!(p.data, Value::from("still here")),
        other => panic!("{other:?}"),
    }
    assert_eq!(handle.stats().slow_consumers, 1);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_push_fails_at_the_caller_and_the_connection_keeps_working() {
    let max = 64 * 1024;
    let server = demo_server()
        .session_config(
            SessionConfig::builder()
                .max_message_len(max)
                .build()
                .unwrap(),
        )
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let handle = server.handle();
    let (mut c, addr) = client_at(&handle).await;
    let id = ids_of(&handle, &[addr]).await[0];
    let too_big = Value::bytes(vec![1; max]);
    let err = handle.send_to(id, too_big.clone()).unwrap_err();
    let Error::MessageTooLarge { len, max: limit } = err else {
        panic!("{err:?}")
    };
    assert!(len > max, "{len}");
    assert_eq!(limit, max);
    assert_eq!(
        err.to_string(),
        format!("message too large: {len} bytes, the maximum is {max}")
    );
    assert!(matches!(
        handle.try_broadcast(too_big.clone()),
        Err(Error::MessageTooLarge { .. })
    ));
    assert_eq!(handle.broadcast(too_big.clone()), 0);
    let action = Action::new("big", too_big, 0);
    assert!(matches!(
        handle.try_broadcast_action(&action),
        Err(Error::MessageTooLarge { .. })
    ));
    assert_eq!(handle.stats().pushes, 0);
    // Nothing was queued: the first push the client sees is the next one, numbered 1.
    handle.send_to(id, Value::from("fits")).unwrap();
    match next(&mut c).await {
        Some(Message::Push(p)) => {
            assert_eq!(p.data, Value::from("fits"));
            assert_eq!(p.seq, 1);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(handle.broadcast(Value::from("all")), 1);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_events_kick_and_disconnect() {
    let server = demo_server().bind("127.0.0.1:0").await.unwrap();
    let handle = server.handle();
    let mut events = handle.events();
    let mut a = client(&handle, &SessionConfig::default()).await;
    let mut b = client(&handle, &SessionConfig::default()).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        if let EventKind::Authenticated { id, .. } = next_event(&mut events, |k| {
            matches!(k, EventKind::Authenticated { .. })
        })
        .await
        {
            ids.push(id);
        }
    }
    assert_eq!(handle.count(), 2);
    let info = handle.connection(ids[0]).unwrap();
    assert!(handle.connection_by_peer(info.peer).is_some());
    call(&mut a, Request::new(1, "/ECHO", "PUT")).await;
    call(&mut b, Request::new(1, "/ECHO", "PUT")).await;
    // Out: the Welcome and the response.
    let infos = handle.connections();
    assert!(
        infos
            .iter()
            .all(|i| i.messages_in == 1 && i.messages_out == 2),
        "{infos:?}"
    );

    // A kicked client gets Close(KICKED), then the authenticated end.
    let target = ids[1];
    handle.kick(target).unwrap();
    let kicked = next_event(&mut events, |k| matches!(k, EventKind::Disconnected { .. })).await;
    assert!(
        matches!(kicked, EventKind::Disconnected { id, reason: DisconnectReason::Kicked, .. } if id == target)
    );
    // Whichever client was kicked sees the Close.
    let (victim, other) = if handle.connection(ids[0]).is_some() {
        (&mut b, &mut a)
    } else {
        (&mut a, &mut b)
    };
    match next(victim).await {
        Some(Message::Close(c)) => assert_eq!(c.code, CloseCode::KICKED),
        x => panic!("{x:?}"),
    }
    assert_eq!(next(victim).await, None);
    // The other closes cleanly.
    other.close().await.unwrap();
    let closed = next_event(&mut events, |k| matches!(k, EventKind::Disconnected { .. })).await;
    assert!(
        matches!(
            closed,
            EventKind::Disconnected {
                reason: DisconnectReason::Closed,
                ..
            }
        ),
        "{closed:?}"
    );
    assert_eq!(handle.count(), 0);
    assert!(handle.kick(target).is_err());
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_at_the_socket_leaves_the_server_serving() {
    let cfg = SessionConfig::builder()
        .handshake_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let mut limits = ServerLimits::default();
    limits.idle_timeout = Duration::from_millis(400);
    let server = demo_server()
        .session_config(cfg.clone())
        .limits(limits)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let handle = server.handle();
    let mut events = handle.events();
    let addr = handle.local_addr();

    // Garbage before the handshake.
    let mut g = TcpStream::connect(addr).await.unwrap();
    g.write_all(b"\x00\x00\x00\x10GET / HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    assert!(matches!(
        next_event(&mut events, |k| matches!(
            k,
            EventKind::AuthenticationFailed { .. }
        ))
        .await,
        EventKind::AuthenticationFailed { .. }
    ));
    // An oversize length prefix.
    let mut o = TcpStream::connect(addr).await.unwrap();
    o.write_all(&[0xff, 0xff, 0xff, 0xff]).await.unwrap();
    next_event(&mut events, |k| {
        matches!(k, EventKind::AuthenticationFailed { .. })
    })
    .await;
    // Truncated hello then silence: the handshake timeout closes it.
    let mut t = TcpStream::connect(addr).await.unwrap();
    t.write_all(&[0, 0, 0, 60, b'C', b'Y']).await.unwrap();
    next_event(&mut events, |k| {
        matches!(k, EventKind::AuthenticationFailed { .. })
    })
    .await;
    // Wrong PSK.
    let tcp = TcpStream::connect(addr).await.unwrap();
    assert!(
        connect(tcp, &ClientAuth::Psk(Psk::from_bytes([1; 32])), &cfg)
            .await
            .is_err()
    );
    next_event(&mut events, |k| {
        matches!(k, EventKind::AuthenticationFailed { .. })
    })
    .await;

    // A legitimate client is served throughout.
    let mut c = client(&handle, &cfg).await;
    let r = call(
        &mut c,
        Request::new(1, "/ECHO", "PUT").with_data(Value::from(1)),
    )
    .await;
    assert_eq!(r.data, Value::from(1));
    // And an idle one is closed with TIMEOUT.
    match next(&mut c).await {
        Some(Message::Close(close)) => assert_eq!(close.code, CloseCode::TIMEOUT),
        x => panic!("{x:?}"),
    }
    let idle = next_event(&mut events, |k| matches!(k, EventKind::Disconnected { .. })).await;
    assert!(matches!(
        idle,
        EventKind::Disconnected {
            reason: DisconnectReason::IdleTimeout,
            ..
        }
    ));
    assert_eq!(handle.stats().handshakes_failed, 4);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_handshake_flood_is_bounded_and_refused_early() {
    let cfg = SessionConfig::builder()
        .handshake_timeout(Duration::from_millis(800))
        .build()
        .unwrap();
    let mut limits = ServerLimits::default();
    limits.max_handshakes = 4;
    let server = demo_server()
        .session_config(cfg.clone())
        .limits(limits)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let handle = server.handle();
    let mut events = handle.events();
    let mut silent = Vec::new();
    for _ in 0..10 {
        silent.push(TcpStream::connect(handle.local_addr()).await.unwrap());
    }
    let mut reasons = Vec::new();
    while reasons.len() < 6 {
        if let EventKind::Refused { reason, .. } =
            next_event(&mut events, |k| matches!(k, EventKind::Refused { .. })).await
        {
            reasons.push(reason);
        }
    }
    // 4 slots: the first 4 silent connections hold them. Under load (2+ busy) the address gets
    // a burst of 5 handshakes: connections 3 to 5 find the slots full, 6 to 10 exceed the rate.
    // Both refusals happen before any work.
    assert!(
        reasons
            .iter()
            .all(|r| matches!(r, Refusal::TooManyHandshakes | Refusal::RateLimited)),
        "{reasons:?}"
    );
    assert!(reasons.contains(&Refusal::RateLimited), "{reasons:?}");
    assert!(reasons.contains(&Refusal::TooManyHandshakes), "{reasons:?}");
    // After the handshake timeout frees the slots, a legitimate client gets in.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut c = client(&handle, &cfg).await;
    assert_eq!(
        call(&mut c, Request::new(1, "/ECHO", "PUT"))
            .await
            .status
            .code,
        StatusCode::OK
    );
    drop(silent);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_ban_the_source_before_any_work() {
    let mut policy = cypherwire_session::BanPolicy::default();
    policy.max_attempts = 3;
    let server = demo_server()
        .ban_policy(policy)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let handle = server.handle();
    let mut events = handle.events();
    let wrong = ClientAuth::Psk(Psk::from_bytes([3; 32]));
    for _ in 0..3 {
        let tcp = TcpStream::connect(handle.local_addr()).await.unwrap();
        assert!(
            connect(tcp, &wrong, &SessionConfig::default())
                .await
                .is_err()
        );
    }
    next_event(&mut events, |k| matches!(k, EventKind::Banned { .. })).await;
    assert_eq!(handle.bans().len(), 1);
    // Even the right key is refused now, before the handshake.
    let tcp = TcpStream::connect(handle.local_addr()).await.unwrap();
    assert!(
        connect(
            tcp,
            &ClientAuth::Psk(PSK.clone()),
            &SessionConfig::default()
        )
        .await
        .is_err()
    );
    let refused = next_event(&mut events, |k| matches!(k, EventKind::Refused { .. })).await;
    assert!(matches!(
        refused,
        EventKind::Refused {
            reason: Refusal::Banned,
            ..
        }
    ));
    assert!(handle.unban("127.0.0.1".parse().unwrap()));
    let mut c = client(&handle, &SessionConfig::default()).await;
    assert_eq!(
        call(&mut c, Request::new(1, "/ECHO", "PUT"))
            .await
            .status
            .code,
        StatusCode::OK
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_and_cancellation() {
    let counter = Arc::new(AtomicUsize::new(0));
    let c2 = counter.clone();
    let server = Server::builder(PSK.clone())
        .route("/WORK", "DO", move |req: Request, _ctx: Ctx| {
            let c = c2.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(req.data.as_u64().unwrap_or(0))).await;
                c.fetch_add(1, Ordering::SeqCst);
                Ok::<_, HandlerError>(Value::Nil)
            }
        })
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let mut s = client(&server.handle(), &SessionConfig::default()).await;
    // Past its deadline: DEADLINE_EXCEEDED, and the work is stopped.
    let req = Request::new(1, "/WORK", "DO")
        .with_data(Value::from(400))
        .with_deadline(Duration::from_millis(50));
    assert_eq!(
        call(&mut s, req).await.status.code,
        StatusCode::DEADLINE_EXCEEDED
    );
    // Cancelled: no answer, work stopped. A ping after it is answered first.
    let req = Request::new(2, "/WORK", "DO").with_data(Value::from(400));
    s.send_message(&req.into()).await.unwrap();
    s.send_message(&Cancel::new(2).into()).await.unwrap();
    s.send_message(&Ping::new(9).into()).await.unwrap();
    match next(&mut s).await {
        Some(Message::Pong(p)) => assert_eq!(p.nonce, 9),
        x => panic!("{x:?}"),
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        counter.load(Ordering::SeqCst),
        0,
        "stopped work must not complete"
    );
    // A zero deadline is never started.
    let req = Request::new(3, "/WORK", "DO").with_deadline(Duration::ZERO);
    assert_eq!(
        call(&mut s, req).await.status.code,
        StatusCode::DEADLINE_EXCEEDED
    );
    let req = Request::new(4, "/WORK", "DO");
    assert_eq!(call(&mut s, req).await.status.code, StatusCode::OK);
    assert_eq!(counter.load(Ordering::SeqCst), 1);
    server.handle().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_work_then_closes() {
    let server = demo_server().bind("127.0.0.1:0").await.unwrap();
    let handle = server.handle();
    let mut c = client(&handle, &SessionConfig::default()).await;
    c.send_message(
        &Request::new(1, "/SLOW", "WAIT")
            .with_data(Value::from(300))
            .into(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let h2 = handle.clone();
    let stopping = tokio::spawn(async move { h2.shutdown().await });
    match next(&mut c).await {
        Some(Message::Response(r)) => assert_eq!(r.data, Value::from("done")),
        x => panic!("{x:?}"),
    }
    match next(&mut c).await {
        Some(Message::Close(close)) => assert_eq!(close.code, CloseCode::GOING_AWAY),
        x => panic!("{x:?}"),
    }
    assert_eq!(next(&mut c).await, None);
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .unwrap()
        .unwrap();
    assert!(handle.is_stopped());
    assert!(
        TcpStream::connect(handle.local_addr()).await.is_err(),
        "new connections must be refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_takes_what_no_handler_does() {
    let server = Server::builder(PSK.clone())
        .route("/HANDLED", "GET", |_r: Request, _c: Ctx| async move {
            Ok::<_, HandlerError>(Value::from(1))
        })
        .inbox(16)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let handle = server.handle();
    let mut inbox = handle.take_inbox().unwrap();
    assert!(handle.take_inbox().is_none(), "one consumer only");
    let mut c = client(&handle, &SessionConfig::default()).await;
    // Routed requests still go to their handler.
    assert_eq!(
        call(&mut c, Request::new(1, "/HANDLED", "GET")).await.data,
        Value::from(1)
    );
    // Unrouted requests and unbound actions arrive in order in the inbox.
    c.send_message(&Action::new("note", Value::from("a"), 5).into())
        .await
        .unwrap();
    c.send_message(
        &Request::new(2, "/PULL", "ME")
            .with_data(Value::from(41))
            .into(),
    )
    .await
    .unwrap();
    let first = inbox.next().await.unwrap();
    assert!(matches!(&first.message, Message::Action(a) if a.name == "note"));
    let second = inbox.next().await.unwrap();
    let Message::Request(req) = second.message else {
        panic!()
    };
    assert_eq!((req.id, second.connection), (2, first.connection));
    // The application answers it.
    let answer = Response::ok(req.id, Value::from(req.data.as_i64().unwrap() + 1));
    handle
        .send_message(second.connection, answer.into())
        .unwrap();
    match next(&mut c).await {
        Some(Message::Response(r)) => assert_eq!((r.id, r.data), (2, Value::from(42))),
        x => panic!("{x:?}"),
    }
    assert!(inbox.try_next().is_none());
    // Byte counters follow the traffic.
    let info = handle.connection(first.connection).unwrap();
    assert_eq!(info.messages_in, 3);
    assert!(info.bytes_in > 0 && info.bytes_out > 0, "{info:?}");
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_broadcast_reaches_members_only() {
    let server = demo_server().bind("127.0.0.1:0").await.unwrap();
    let handle = server.handle();
    let mut cs = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..4 {
        let (c, addr) = client_at(&handle).await;
        cs.push(c);
        addrs.push(addr);
    }
    let ids = ids_of(&handle, &addrs).await;
    handle.join_group(ids[0], "red").unwrap();
    handle.join_group(ids[2], "red").unwrap();
    // A name too long for a cluster's topics is refused, typed, and creates nothing.
    let long = "r".repeat(cypherwire_server::MAX_GROUP_NAME_LEN + 1);
    assert!(matches!(
        handle.join_group(ids[1], &long),
        Err(Error::GroupNameTooLong {
            len: 1025,
            max: 1024
        })
    ));
    assert!(handle.group_members(&long).is_empty());
    let mut red = vec![ids[0], ids[2]];
    red.sort();
    assert_eq!(handle.group_members("red"), red);
    assert_eq!(handle.broadcast_group("red", Value::from("to red")), 2);
    assert_eq!(handle.broadcast(Value::from("to all")), 4);
    // Members see the group push first; the others only the broadcast.
    for (i, c) in cs.iter_mut().enumerate() {
        let Some(Message::Push(p)) = next(c).await else {
            panic!()
        };
        let want = if i == 0 || i == 2 { "to red" } else { "to all" };
        assert_eq!(p.data, Value::from(want), "client {i}");
    }
    assert!(handle.leave_group(ids[0], "red"));
    assert!(!handle.leave_group(ids[0], "red"));
    // A member that disconnects leaves its groups.
    cs[2].close().await.unwrap();
    for _ in 0..100 {
        if handle.group_members("red").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(handle.group_members("red").is_empty());
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_and_password_modes_serve_too() {
    use cypherwire_session::{
        Argon2Cost, IdentityKey, Password, PasswordVerifier, PeerTrust, ServerAuth,
    };
    let (alice, srv) = (
        IdentityKey::generate().unwrap(),
        IdentityKey::generate().unwrap(),
    );
    let verifier = PasswordVerifier::create("network password", Argon2Cost::new(64, 1, 1)).unwrap();
    let cases = [
        (
            ServerAuth::Identity(srv.clone(), PeerTrust::AllowList(vec![alice.public()])),
            ClientAuth::Identity(alice.clone(), PeerTrust::AllowList(vec![srv.public()])),
            Some(alice.public()),
        ),
        (
            ServerAuth::Password(verifier),
            ClientAuth::Password(Password::new("network password")),
            None,
        ),
    ];
    for (server_auth, client_auth, identity) in cases {
        let server = Server::builder(server_auth)
            .route("/WHO", "AMI", |_r: Request, ctx: Ctx| async move {
                Ok::<_, HandlerError>(Value::from(ctx.identity.map(|k| k.to_text())))
            })
            .bind("127.0.0.1:0")
            .await
            .unwrap();
        let tcp = TcpStream::connect(server.local_addr()).await.unwrap();
        let mut c = connect(tcp, &client_auth, &SessionConfig::default())
            .await
            .unwrap();
        let r = call(&mut c, Request::new(1, "/WHO", "AMI")).await;
        assert_eq!(r.data, Value::from(identity.map(|k| k.to_text())));
        server.handle().shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_keep_their_order_under_connection_churn() {
    use std::collections::HashMap;
    let server = demo_server().bind("127.0.0.1:0").await.unwrap();
    let handle = server.handle();
    let mut events = handle.events();
    // 60 clients arrive and leave in overlapping waves; some close cleanly, some vanish.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..60u64 {
        let handle = handle.clone();
        tasks.spawn(async move {
            tokio::time::sleep(Duration::from_millis(i % 7 * 3)).await;
            let mut c = client(&handle, &SessionConfig::default()).await;
            call(&mut c, Request::new(1, "/ECHO", "PUT")).await;
            if i % 2 == 0 {
                c.close().await.unwrap();
                // Read to the end so the server's close completes.
                while next(&mut c).await.is_some() {}
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    // Per peer: Accepted, then Authenticated, then Disconnected, in that order.
    let mut stage: HashMap<SocketAddr, u8> = HashMap::new();
    let mut disconnected = 0;
    while disconnected < 60 {
        let e = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .unwrap()
            .unwrap();
        let (peer, expect_before, now) = match e.kind {
            EventKind::Accepted { peer } => (peer, 0, 1),
            EventKind::Authenticated { peer, .. } => (peer, 1, 2),
            EventKind::Disconnected { peer, .. } => {
                disconnected += 1;
                (peer, 2, 3)
            }
            other => panic!("unexpected {other:?}"),
        };
        let s = stage.entry(peer).or_insert(0);
        assert_eq!(*s, expect_before, "{peer}: out of order");
        *s = now;
    }
    assert!(stage.values().all(|s| *s == 3));
    assert_eq!(handle.count(), 0, "no leaked registry entries");
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_handles_send_and_close() {
    let server = demo_server().bind("127.0.0.1:0").await.unwrap();
    let handle = server.handle();
    let mut c = client(&handle, &SessionConfig::default()).await;
    call(&mut c, Request::new(1, "/ECHO", "PUT")).await;
    let id = handle.connections()[0].id;
    let conn = handle.connection_handle(id).unwrap();
    assert_eq!(conn.info().unwrap().id, id);
    conn.send(Value::from("hi")).unwrap();
    match next(&mut c).await {
        Some(Message::Push(p)) => assert_eq!(p.data, Value::from("hi")),
        x => panic!("{x:?}"),
    }
    conn.close().unwrap();
    match next(&mut c).await {
        Some(Message::Close(close)) => assert_eq!(close.code, CloseCode::KICKED),
        x => panic!("{x:?}"),
    }
    for _ in 0..100 {
        if conn.info().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(conn.info().is_none());
    assert!(conn.send(Value::Nil).is_err());
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_connection_can_have_its_own_receive_queue() {
    let server = Server::builder(PSK.clone())
        .connection_queue(4)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let handle = server.handle();
    let mut a = client(&handle, &SessionConfig::default()).await;
    let mut b = client(&handle, &SessionConfig::default()).await;
    a.send_message(&Action::new("from", Value::from("a"), 0).into())
        .await
        .unwrap();
    b.send_message(&Action::new("from", Value::from("b"), 0).into())
        .await
        .unwrap();
    b.send_message(&Request::new(7, "/ASK", "B").into())
        .await
        .unwrap();
    let ids = loop {
        let conns = handle.connections();
        if conns.len() == 2 {
            break conns;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // Each queue holds only its own connection's messages, oldest first.
    for info in ids {
        let conn = handle.connection_handle(info.id).unwrap();
        let first = conn.recv().await.unwrap().unwrap();
        let Message::Action(act) = &first.message else {
            panic!("{first:?}")
        };
        assert_eq!(first.connection, info.id);
        if act.data == Value::from("b") {
            let second = conn.recv().await.unwrap().unwrap();
            let Message::Request(req) = second.message else {
                panic!()
            };
            handle
                .send_message(
                    info.id,
                    Response::ok(req.id, Value::from("answered")).into(),
                )
                .unwrap();
        }
    }
    // The application's answer reaches the client that asked.
    loop {
        match next(&mut b).await {
            Some(Message::Response(r)) => {
                assert_eq!((r.id, r.data), (7, Value::from("answered")));
                break;
            }
            Some(_) => {}
            None => panic!("closed"),
        }
    }
    // Without connection queues, recv says so.
    let plain = demo_server().bind("127.0.0.1:0").await.unwrap();
    let _c = client(&plain.handle(), &SessionConfig::default()).await;
    let id = loop {
        if let Some(i) = plain.handle().connections().first() {
            break i.id;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        plain
            .handle()
            .connection_handle(id)
            .unwrap()
            .recv()
            .await
            .is_err()
    );
    drop(a);
    plain.handle().shutdown().await;
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_stop_ends_everything_at_once() {
    let server = demo_server().bind("127.0.0.1:0").await.unwrap();
    let handle = server.handle();
    let mut c = client(&handle, &SessionConfig::default()).await;
    call(
        &mut c,
        Request::new(1, "/ECHO", "PUT").with_data(Value::bytes(vec![1; 100])),
    )
    .await;
    let stats = handle.stats();
    assert!(stats.bytes_in > 100 && stats.bytes_out > 100, "{stats:?}");
    // A slow request is in flight; an immediate stop does not wait for it.
    c.send_message(
        &Request::new(2, "/SLOW", "WAIT")
            .with_data(Value::from(5_000))
            .into(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    tokio::time::timeout(Duration::from_secs(2), handle.shutdown_now())
        .await
        .expect("immediate");
    assert!(handle.is_stopped());
    assert_eq!(handle.count(), 0);
    // The peer sees its stream end without an authenticated close.
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match c.recv_message().await {
                Ok(Some(Message::Welcome(_))) => {}
                other => return other,
            }
        }
    })
    .await
    .unwrap();
    assert!(end.is_err(), "{end:?}");
}

#[tokio::test]
async fn invalid_configuration_is_refused_at_bind() {
    let mut limits = ServerLimits::default();
    limits.max_connections = 0;
    let err = demo_server()
        .limits(limits)
        .bind("127.0.0.1:0")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    let mut limits = ServerLimits::default();
    limits.handshake_rate_per_ip = cypherwire_server::RateLimit::new(f64::NAN, 5.0);
    assert!(
        demo_server()
            .limits(limits)
            .bind("127.0.0.1:0")
            .await
            .is_err()
    );
    let err = demo_server()
        .inbox(0)
        .bind("127.0.0.1:0")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)));
    let err = demo_server().bind("256.0.0.1:0").await.unwrap_err();
    assert!(matches!(err, Error::Bind { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_and_the_accept_hook_refuse_before_any_work() {
    // Total connections.
    let mut limits = ServerLimits::default();
    limits.max_connections = 2;
    let server = demo_server()
        .limits(limits)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let h = server.handle();
    let mut events = h.events();
    let _a = client(&h, &SessionConfig::default()).await;
    let _b = client(&h, &SessionConfig::default()).await;
    let _c = TcpStream::connect(h.local_addr()).await.unwrap();
    let refused = next_event(&mut events, |k| matches!(k, EventKind::Refused { .. })).await;
    assert!(matches!(
        refused,
        EventKind::Refused {
            reason: Refusal::TooManyConnections,
            ..
        }
    ));
    h.shutdown().await;

    // Per address.
    let mut limits = ServerLimits::default();
    limits.max_connections_per_ip = 1;
    let server = demo_server()
        .limits(limits)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let h = server.handle();
    let mut events = h.events();
    let _a = client(&h, &SessionConfig::default()).await;
    let _b = TcpStream::connect(h.local_addr()).await.unwrap();
    let refused = next_event(&mut events, |k| matches!(k, EventKind::Refused { .. })).await;
    assert!(matches!(
        refused,
        EventKind::Refused {
            reason: Refusal::TooManyFromAddress,
            ..
        }
    ));
    h.shutdown().await;

    // The accept hook.
    let seen = Arc::new(AtomicUsize::new(0));
    let s2 = seen.clone();
    let server = demo_server()
        .accept_hook(move |incoming| {
            s2.fetch_add(1, Ordering::SeqCst);
            !incoming.peer.ip().is_loopback()
        })
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let h = server.handle();
    let mut events = h.events();
    let tcp = TcpStream::connect(h.local_addr()).await.unwrap();
    assert!(
        connect(
            tcp,
            &ClientAuth::Psk(PSK.clone()),
            &SessionConfig::default()
        )
        .await
        .is_err()
    );
    let refused = next_event(&mut events, |k| matches!(k, EventKind::Refused { .. })).await;
    assert!(matches!(
        refused,
        EventKind::Refused {
            reason: Refusal::Hook,
            ..
        }
    ));
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    assert_eq!(
        h.stats().handshakes_ok + h.stats().handshakes_failed,
        0,
        "no handshake was attempted"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_per_connection_are_bounded() {
    let mut limits = ServerLimits::default();
    limits.max_in_flight = 2;
    let started = Arc::new(AtomicUsize::new(0));
    let s2 = started.clone();
    let server = Server::builder(PSK.clone())
        .route("/HOLD", "ON", move |_r: Request, _c: Ctx| {
            let s = s2.clone();
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok::<_, HandlerError>(Value::Nil)
            }
        })
        .limits(limits)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let h = server.handle();
    let mut c = client(&h, &SessionConfig::default()).await;
    for id in 1..=5 {
        c.queue_message(&Request::new(id, "/HOLD", "ON").into())
            .unwrap();
    }
    c.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        started.load(Ordering::SeqCst),
        2,
        "only max_in_flight run at once"
    );
    let mut answered = 0;
    while answered < 5 {
        if let Some(Message::Response(_)) = next(&mut c).await {
            answered += 1;
        }
    }
    assert_eq!(started.load(Ordering::SeqCst), 5);
    h.shutdown().await;
}
