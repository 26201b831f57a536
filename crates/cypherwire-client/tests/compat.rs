//! The CYPHER_PROTOCOL compat client's bounds against a hostile or broken server (raw TCP):
//! it gives up after `max_attempts` sends without an answer, and refuses an answer longer
//! than `max_message_len`. (Against the real Python server: `tests/tests/compat_python.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cypherwire_client::Error;
use cypherwire_client::compat::CompatClient;
use cypherwire_session::compat::CypherKeys;
use cypherwire_wire::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const KEY: &str = "2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U";

fn fast() -> cypherwire_client::Backoff {
    let mut b = cypherwire_client::Backoff::default();
    b.initial = Duration::from_millis(10);
    b.max = Duration::from_millis(20);
    b
}

#[tokio::test]
async fn gives_up_after_max_attempts_without_an_answer() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(AtomicU32::new(0));
    let count = seen.clone();
    // Reads each request, then hangs up without answering (as the Python server does on a
    // handler error).
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = [0u8; 4096];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 || buf[..n].contains(&0) {
                    break;
                }
            }
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    let c = CompatClient::builder(CypherKeys::same(KEY).unwrap())
        .backoff(fast())
        .max_attempts(3)
        .connect(addr.to_string())
        .unwrap();
    let r = c.request("/X", "Y", Value::Nil, Value::Nil).await;
    assert!(matches!(r, Err(Error::GaveUp { attempts: 3 })), "{r:?}");
    assert_eq!(seen.load(Ordering::SeqCst), 3, "sent exactly three times");
}

#[tokio::test]
async fn refuses_an_oversized_answer() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            // 1 MiB without a NUL.
            let _ = s.write_all(&vec![b'A'; 1 << 20]).await;
        }
    });
    let c = CompatClient::builder(CypherKeys::same(KEY).unwrap())
        .backoff(fast())
        .max_attempts(1)
        .max_message_len(4096)
        .timeout(Duration::from_secs(5))
        .connect(addr.to_string())
        .unwrap();
    let r = c.request("/X", "Y", Value::Nil, Value::Nil).await;
    assert!(matches!(r, Err(Error::GaveUp { attempts: 1 })), "{r:?}");
    let mut status = c.status();
    let s = status.borrow_and_update().clone();
    assert!(
        matches!(&s, cypherwire_client::Status::Offline { reason } if reason.to_string().contains("exceeds the maximum")),
        "{s:?}"
    );
}
