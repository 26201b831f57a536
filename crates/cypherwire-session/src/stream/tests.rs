//! Stream behaviour that needs the private state: cancelled flushes, large records, buffer
//! release.

use super::state::RETAINED_SEND_BUFFER;
use super::*;
use crate::{CipherSuite, Psk, SessionConfig};

type Pipe = SecureStream<tokio::io::DuplexStream>;

/// A PSK session over an in-memory pipe of `capacity` bytes.
async fn pair(capacity: usize) -> (Pipe, Pipe) {
    pair_with(capacity, &SessionConfig::default()).await
}

/// As [`pair`], with `config` on both sides.
async fn pair_with(capacity: usize, config: &SessionConfig) -> (Pipe, Pipe) {
    let psk = Psk::from_bytes([3; 32]);
    let (client_auth, server_auth) = (psk.clone().into(), psk.into());
    let (a, b) = tokio::io::duplex(capacity);
    let (client, server) = tokio::join!(
        connect(a, &client_auth, config),
        accept(b, &server_auth, config)
    );
    (client.unwrap(), server.unwrap())
}

/// A flush dropped midway (its peer not reading, the write blocked) resumes where it
/// stopped: the peer then gets every message once, intact and in order.
#[tokio::test]
async fn a_cancelled_flush_resumes_without_writing_twice() {
    // A 4 KiB pipe: a 200 KiB flush blocks until the peer reads.
    let (mut client, mut server) = pair(4 * 1024).await;
    let big: Vec<u8> = (0..200 * 1024u32).map(|i| (i % 251) as u8).collect();
    client.queue(&big).unwrap();
    client.queue(b"after").unwrap();
    let cut = tokio::time::timeout(std::time::Duration::from_millis(50), client.flush()).await;
    assert!(cut.is_err(), "the flush should still be blocked");
    assert!(
        client.send.written > 0,
        "part of the buffer went out before the cut"
    );
    let resumed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        tokio::join!(client.flush(), server.recv())
    });
    let (flushed, first) = resumed.await.expect("the resumed flush completes");
    flushed.unwrap();
    assert_eq!(first.unwrap().unwrap(), &big[..]);
    assert_eq!(server.recv().await.unwrap().unwrap(), &b"after"[..]);
}

/// A peer may chunk with records larger than this implementation's 64 KiB (protocol §3.4:
/// any size within the frame limit): 256 KiB records, read into the reassembly buffer in
/// place, give back the message intact, for every suite.
#[tokio::test]
async fn records_larger_than_our_chunks_are_reassembled() {
    for suite in CipherSuite::ALL {
        let config = SessionConfig::builder().suites([suite]).build().unwrap();
        let (mut client, mut server) = pair_with(64 * 1024, &config).await;
        client.send.sealer.set_max_chunk(256 * 1024);
        let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 241) as u8).collect();
        let (sent, got) = tokio::join!(client.send(&big), server.recv());
        sent.unwrap();
        assert!(got.unwrap().unwrap()[..] == big[..], "{suite:?}");
    }
}

/// After a large message is written the connection gives its buffer back: an idle
/// connection keeps at most `RETAINED_SEND_BUFFER` of send capacity; small messages keep
/// theirs (no allocation per message).
#[tokio::test]
async fn send_buffer_is_released_after_a_large_message() {
    let (mut client, mut server) = pair(64 * 1024).await;
    let big = vec![7u8; 3 * 1024 * 1024];
    let (sent, got) = tokio::join!(client.send(&big), server.recv());
    sent.unwrap();
    assert_eq!(got.unwrap().unwrap().len(), big.len());
    assert!(client.send.buf.capacity() <= RETAINED_SEND_BUFFER);
    let (sent, got) = tokio::join!(client.send(&[1; 1000]), server.recv());
    sent.unwrap();
    assert_eq!(got.unwrap().unwrap().len(), 1000);
    let kept = client.send.buf.capacity();
    assert!(kept >= 1000, "{kept}");
}
