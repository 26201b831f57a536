//! The server over a transport other than TCP (`ServerBuilder::serve_on`, here the simulated
//! network in virtual time): limits apply by the address each connection reports, and the one
//! idle timer per connection is postponed by activity.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failure should abort the test"
)]

use std::net::Ipv4Addr;
use std::time::Duration;

use cypherwire::client::Connect;
use cypherwire::server::{Ctx, EventKind, HandlerError, Refusal, Server, ServerLimits};
use cypherwire::session::{ClientAuth, Psk, SecureStream, SessionConfig};
use cypherwire::wire::{CloseCode, Message, Request, Value};
use cypherwire_test_support::simnet::{SimConnector, SimNet};
use tokio::io::DuplexStream;

fn psk() -> Psk {
    Psk::from_bytes([0x44; 32])
}

async fn session(c: &SimConnector) -> Result<SecureStream<DuplexStream>, String> {
    let io = c.connect().await.map_err(|e| e.to_string())?;
    cypherwire::session::connect(io, &ClientAuth::Psk(psk()), &SessionConfig::default())
        .await
        .map_err(|e| e.to_string())
}

/// The next message other than a Welcome.
async fn next(s: &mut SecureStream<DuplexStream>) -> Option<Message> {
    loop {
        match s.recv_message().await.unwrap() {
            Some(Message::Welcome(_)) => {}
            other => return other,
        }
    }
}

fn server(limits: ServerLimits) -> cypherwire::server::ServerBuilder {
    Server::builder(psk())
        .route("/ECHO", "PUT", |req: Request, _: Ctx| async move {
            Ok::<_, HandlerError>(req.data)
        })
        .limits(limits)
}

#[tokio::test(start_paused = true)]
async fn limits_apply_by_the_reported_address() {
    let net = SimNet::new(Duration::from_millis(1));
    let mut limits = ServerLimits::default();
    limits.max_connections_per_ip = 2;
    let srv = server(limits).serve_on(net.listen()).await.unwrap();
    let h = srv.handle();
    let mut events = h.events();
    let one = net.connector(Ipv4Addr::new(10, 0, 1, 1));
    let a = session(&one).await.unwrap();
    let b = session(&one).await.unwrap();
    assert!(
        session(&one).await.is_err(),
        "a third from the same address"
    );
    loop {
        let e = events.next().await.unwrap();
        if let EventKind::Refused { peer, reason } = e.kind {
            assert_eq!(reason, Refusal::TooManyFromAddress);
            assert_eq!(peer.ip(), Ipv4Addr::new(10, 0, 1, 1));
            break;
        }
    }
    let other = net.connector(Ipv4Addr::new(10, 0, 1, 2));
    assert!(
        session(&other).await.is_ok(),
        "another address still gets in"
    );
    drop((a, b));
    h.shutdown_now().await;
}

#[tokio::test(start_paused = true)]
async fn activity_postpones_the_idle_timeout() {
    let net = SimNet::new(Duration::from_millis(1));
    let mut limits = ServerLimits::default();
    limits.idle_timeout = Duration::from_secs(1);
    let srv = server(limits).serve_on(net.listen()).await.unwrap();
    let mut s = session(&net.connector(Ipv4Addr::new(10, 0, 1, 1)))
        .await
        .unwrap();
    // Ten requests 600 ms apart: 6 s in all, six idle timeouts' worth, never 1 s of silence.
    for id in 1..=10u64 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let req = Request::new(id, "/ECHO", "PUT").with_data(Value::from(id));
        s.send_message(&req.into()).await.unwrap();
        match next(&mut s).await {
            Some(Message::Response(r)) => assert_eq!(r.data, Value::from(id)),
            other => panic!("request {id}: {other:?}"),
        }
    }
    // Then silence: closed with TIMEOUT one idle timeout after the last message.
    let quiet_since = tokio::time::Instant::now();
    match next(&mut s).await {
        Some(Message::Close(c)) => assert_eq!(c.code, CloseCode::TIMEOUT),
        other => panic!("{other:?}"),
    }
    let waited = quiet_since.elapsed();
    assert!(
        waited >= Duration::from_millis(990) && waited < Duration::from_millis(1_100),
        "closed after {waited:?} of silence"
    );
    srv.handle().shutdown_now().await;
}
