//! Every failure after the handshake closes with the code `docs/protocol.md` names for it:
//! unknown envelope versions and kinds `UNSUPPORTED` (§4.1), an oversize frame or message
//! `FRAME_TOO_LARGE` (§2.2, §3.4), a malformed envelope or a kind a client may not send
//! `PROTOCOL_ERROR` (§6). Each drives a real server over TCP on loopback, and checks that the
//! other connections keep working.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::io::Write as _;
use std::sync::LazyLock;
use std::time::Duration;

use cypherwire_server::{Ctx, DisconnectReason, EventKind, HandlerError, Server, ServerHandle};
use cypherwire_session::{ClientAuth, Psk, SecureStream, SessionConfig, connect};
use cypherwire_wire::{CloseCode, Message, Request, Value};
use tokio::net::TcpStream;

static PSK: LazyLock<Psk> = LazyLock::new(|| Psk::from_bytes([0x3c; 32]));

/// The server's message limit in these tests: small, so an over-limit message is cheap.
const MAX_MESSAGE: usize = 100_000;

type Stream = SecureStream<TcpStream>;

async fn server() -> ServerHandle {
    let config = SessionConfig::builder()
        .max_message_len(MAX_MESSAGE)
        .build()
        .unwrap();
    Server::builder(PSK.clone())
        .session_config(config)
        .route("/ECHO", "PUT", |req: Request, _ctx: Ctx| async move {
            Ok::<_, HandlerError>(req.data)
        })
        .bind("127.0.0.1:0")
        .await
        .unwrap()
        .handle()
}

/// A connected session, past its `Welcome`, and a second handle on its socket for raw bytes.
async fn dial(h: &ServerHandle) -> (Stream, std::net::TcpStream) {
    let tcp = TcpStream::connect(h.local_addr()).await.unwrap();
    let std = tcp.into_std().unwrap();
    let raw = std.try_clone().unwrap();
    let tcp = TcpStream::from_std(std).unwrap();
    let mut s = connect(
        tcp,
        &ClientAuth::Psk(PSK.clone()),
        &SessionConfig::default(),
    )
    .await
    .unwrap();
    match next(&mut s).await {
        Some(Message::Welcome(_)) => {}
        other => panic!("expected a Welcome, got {other:?}"),
    }
    (s, raw)
}

async fn next(s: &mut Stream) -> Option<Message> {
    tokio::time::timeout(Duration::from_secs(10), s.recv_message())
        .await
        .expect("nothing within 10 s")
        .unwrap()
}

/// The code of the `Close` the server sends next (messages before it are skipped).
async fn close_code(s: &mut Stream) -> CloseCode {
    loop {
        match next(s).await {
            Some(Message::Close(c)) => return c.code,
            Some(_) => {}
            None => panic!("the stream ended without a Close"),
        }
    }
}

/// The reason the server gives for the next connection that ends.
async fn disconnected(events: &mut cypherwire_server::Events) -> DisconnectReason {
    loop {
        let e = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .unwrap()
            .unwrap();
        if let EventKind::Disconnected { reason, .. } = e.kind {
            return reason;
        }
    }
}

/// A healthy connection opened before the faults is still answered after them.
async fn still_answered(s: &mut Stream) {
    s.send_message(
        &Request::new(99, "/ECHO", "PUT")
            .with_data(Value::from(7))
            .into(),
    )
    .await
    .unwrap();
    match next(s).await {
        Some(Message::Response(r)) => {
            assert_eq!(r.id, 99);
            assert_eq!(r.data, Value::from(7));
        }
        other => panic!("expected the echo, got {other:?}"),
    }
}

/// The server closes `s` with `FRAME_TOO_LARGE` and reports the disconnect as too large.
async fn closed_as_too_large(s: &mut Stream, events: &mut cypherwire_server::Events) {
    assert_eq!(close_code(s).await, CloseCode::FRAME_TOO_LARGE);
    assert!(matches!(
        disconnected(events).await,
        DisconnectReason::TooLarge(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kinds_in_every_reserved_range_close_with_unsupported() {
    let h = server().await;
    let (mut bystander, _) = dial(&h).await;
    let mut events = h.events();
    // The first and last kind of each reserved range (§4.1).
    for kind in [0x09u8, 0x3f, 0x42, 0x7f, 0x80, 0xbf, 0xc0, 0xff] {
        let (mut s, _raw) = dial(&h).await;
        // Version 1, the kind, an empty MessagePack array.
        s.send(&[1, kind, 0x90]).await.unwrap();
        assert_eq!(
            close_code(&mut s).await,
            CloseCode::UNSUPPORTED,
            "kind {kind:#04x}"
        );
        assert!(
            matches!(
                disconnected(&mut events).await,
                DisconnectReason::Unsupported(_)
            ),
            "kind {kind:#04x}"
        );
    }
    still_answered(&mut bystander).await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_envelope_version_or_value_type_closes_with_unsupported() {
    let h = server().await;
    let (mut bystander, _) = dial(&h).await;
    for version in [0u8, 2, 0xff] {
        let (mut s, _raw) = dial(&h).await;
        // A Ping with nonce 42 under another version.
        s.send(&[version, 0x06, 0x91, 0x2a]).await.unwrap();
        assert_eq!(
            close_code(&mut s).await,
            CloseCode::UNSUPPORTED,
            "v{version}"
        );
    }
    // MessagePack types this protocol does not support (§4.3 rule 2): the marker 0xc1 and an
    // extension value (fixext 1).
    for payload in [&[0x91, 0xc1][..], &[0x91, 0xd4, 0x01, 0x00]] {
        let (mut s, _raw) = dial(&h).await;
        s.send(&[&[1u8, 0x06][..], payload].concat()).await.unwrap();
        assert_eq!(
            close_code(&mut s).await,
            CloseCode::UNSUPPORTED,
            "{payload:02x?}"
        );
    }
    still_answered(&mut bystander).await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_frame_closes_with_frame_too_large() {
    let h = server().await;
    let (mut bystander, _) = dial(&h).await;
    let mut events = h.events();
    let (mut s, mut raw) = dial(&h).await;
    // A frame header announcing 2 MiB, over the 1 MiB post-handshake limit; no body follows
    // (the server must decide from the header alone, §2.2 rule 1).
    raw.write_all(&(2u32 << 20).to_be_bytes()).unwrap();
    closed_as_too_large(&mut s, &mut events).await;
    still_answered(&mut bystander).await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_message_limit_closes_with_frame_too_large() {
    let h = server().await;
    let (mut bystander, _) = dial(&h).await;
    let mut events = h.events();
    let (mut s, _raw) = dial(&h).await;
    // Each record is within the frame limit; together they exceed the server's message limit.
    let big = Request::new(1, "/ECHO", "PUT").with_data(Value::Bytes(vec![0xab; 2 * MAX_MESSAGE]));
    s.send_message(&big.into()).await.unwrap();
    closed_as_too_large(&mut s, &mut events).await;
    still_answered(&mut bystander).await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_envelope_or_a_servers_kind_closes_with_protocol_error() {
    let h = server().await;
    let (mut bystander, _) = dial(&h).await;
    let cases: [&[u8]; 3] = [
        // A Ping whose payload array ends before its element.
        &[1, 0x06, 0x91],
        // A Ping with trailing bytes after its one value.
        &[1, 0x06, 0x91, 0x2a, 0x00],
        // A Push (server → client only), well formed: `[seq 1, nil, nil]`.
        &[1, 0x04, 0x93, 0x01, 0xc0, 0xc0],
    ];
    for bytes in cases {
        let (mut s, _raw) = dial(&h).await;
        s.send(bytes).await.unwrap();
        assert_eq!(
            close_code(&mut s).await,
            CloseCode::PROTOCOL_ERROR,
            "{bytes:02x?}"
        );
    }
    still_answered(&mut bystander).await;
    h.shutdown().await;
}
