//! The CYPHER_PROTOCOL compat listener at the byte level: repeats answered from the cache,
//! bad input closing only the offending connection. (Against the real Python package:
//! `tests/tests/compat_python.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cypherwire_server::{Ctx, CypherCompat, HandlerError, Reply, Server};
use cypherwire_session::Psk;
use cypherwire_session::compat::{self, CompatMessage, CypherKeys, NulFramer};
use cypherwire_wire::{Request, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U";

async fn server(counter: Arc<AtomicU64>, max: usize) -> std::net::SocketAddr {
    let mut cfg = CypherCompat::new("127.0.0.1:0", CypherKeys::same(KEY).unwrap());
    cfg.max_message_len = max;
    let s = Server::builder(Psk::from_bytes([1; 32]))
        .route("/COUNT", "UP", move |_: Request, _: Ctx| {
            let c = counter.clone();
            async move { Ok::<_, HandlerError>(Reply::new(c.fetch_add(1, Ordering::SeqCst) + 1)) }
        })
        .route("/PANIC", "NOW", |_: Request, _: Ctx| async move {
            if true {
                panic!("handler bug");
            }
            Ok::<Value, HandlerError>(Value::Nil)
        })
        .cypher_compat(cfg)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    s.compat_addr().unwrap()
}

fn request() -> Vec<u8> {
    request_to("/COUNT", "UP")
}

fn request_to(path: &str, operation: &str) -> Vec<u8> {
    let keys = CypherKeys::same(KEY).unwrap();
    let m = CompatMessage {
        path: path.into(),
        operation: operation.into(),
        data: Value::Nil,
        metadata: Value::Nil,
    };
    compat::encode(&m, &keys.encryption, 0).unwrap()
}

/// A panicking handler is answered with an `INTERNAL` error in `METADATA.ERROR`, and the same
/// connection keeps being served.
#[tokio::test]
async fn a_panicking_handler_is_an_internal_error() {
    let counter = Arc::new(AtomicU64::new(0));
    let addr = server(counter, 1 << 20).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&request_to("/PANIC", "NOW")).await.unwrap();
    let answer = read_answer(&mut s).await.unwrap();
    let code = answer
        .metadata
        .get("ERROR")
        .and_then(|e| e.get("code"))
        .and_then(Value::as_u64);
    assert_eq!(
        code,
        Some(u64::from(cypherwire_wire::StatusCode::INTERNAL.0)),
        "{answer:?}"
    );
    s.write_all(&request()).await.unwrap();
    assert_eq!(read_answer(&mut s).await.unwrap().data, Value::from(1));
}

async fn read_answer(s: &mut TcpStream) -> Option<CompatMessage> {
    let keys = CypherKeys::same(KEY).unwrap();
    let mut f = NulFramer::new(1 << 20);
    let mut buf = [0u8; 4096];
    loop {
        if let Some(t) = f.next_message().unwrap() {
            return Some(compat::decode(&t, &keys.decryption).unwrap());
        }
        let n = s.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            return None;
        }
        f.push(&buf[..n]);
    }
}

#[tokio::test]
async fn a_resent_token_is_answered_from_the_cache_not_run_twice() {
    let counter = Arc::new(AtomicU64::new(0));
    let addr = server(counter.clone(), 1 << 20).await;
    let token = request();
    let mut a = TcpStream::connect(addr).await.unwrap();
    a.write_all(&token).await.unwrap();
    let first = read_answer(&mut a).await.unwrap();
    // The Python client resends the identical token after a lost answer, on a new connection.
    drop(a);
    let mut b = TcpStream::connect(addr).await.unwrap();
    b.write_all(&token).await.unwrap();
    let again = read_answer(&mut b).await.unwrap();
    assert_eq!(first.data, Value::from(1));
    assert_eq!(again, first);
    assert_eq!(counter.load(Ordering::SeqCst), 1, "the handler ran once");
    // A new request (new token) runs.
    b.write_all(&request()).await.unwrap();
    assert_eq!(read_answer(&mut b).await.unwrap().data, Value::from(2));
}

#[tokio::test]
async fn bad_input_closes_only_that_connection() {
    let counter = Arc::new(AtomicU64::new(0));
    let addr = server(counter.clone(), 4096).await;
    let mut good = TcpStream::connect(addr).await.unwrap();
    for bad in [
        b"not a token\0".to_vec(),
        // A token under another key.
        {
            let other = CypherKeys::same("0123456789abcdef0123456789abcdef").unwrap();
            let m = CompatMessage {
                path: "/COUNT".into(),
                operation: "UP".into(),
                data: Value::Nil,
                metadata: Value::Nil,
            };
            compat::encode(&m, &other.encryption, 0).unwrap()
        },
        // No NUL within the limit.
        vec![b'A'; 10_000],
    ] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&bad).await.unwrap();
        assert!(
            read_answer(&mut s).await.is_none(),
            "closed without an answer"
        );
    }
    good.write_all(&request()).await.unwrap();
    assert_eq!(read_answer(&mut good).await.unwrap().data, Value::from(1));
}

#[tokio::test]
async fn shutdown_returns_with_the_compat_port_free() {
    let counter = Arc::new(AtomicU64::new(0));
    let mut cfg = CypherCompat::new("127.0.0.1:0", CypherKeys::same(KEY).unwrap());
    cfg.max_message_len = 1 << 20;
    let s = Server::builder(Psk::from_bytes([1; 32]))
        .route("/COUNT", "UP", move |_: Request, _: Ctx| {
            let c = counter.clone();
            async move { Ok::<_, HandlerError>(Reply::new(c.fetch_add(1, Ordering::SeqCst))) }
        })
        .route("/PANIC", "NOW", |_: Request, _: Ctx| async move {
            if true {
                panic!("handler bug");
            }
            Ok::<Value, HandlerError>(Value::Nil)
        })
        .cypher_compat(cfg)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = s.compat_addr().unwrap();
    let _open = TcpStream::connect(addr).await.unwrap();
    s.handle().shutdown().await;
    std::net::TcpListener::bind(addr).expect("the compat port is free once shutdown returns");
}
