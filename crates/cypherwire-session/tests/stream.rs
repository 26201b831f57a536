//! The tokio adapter over real loopback TCP (and in-memory pipes where virtual time is needed),
//! for every cipher suite and codec.

#![allow(clippy::unwrap_used, reason = "test code")]

use std::sync::LazyLock;
use std::time::Duration;

use cypherwire_session::{
    CipherSuite, ClientAuth, Error, Psk, SecureStream, ServerAuth, SessionConfig, accept,
    accept_guarded, connect,
};
use cypherwire_wire::{CodecId, Message, Request, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn psk() -> &'static Psk {
    static KEY: LazyLock<Psk> =
        LazyLock::new(|| Psk::from_passphrase("2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U").unwrap());
    &KEY
}

fn client_auth() -> &'static ClientAuth {
    static AUTH: LazyLock<ClientAuth> = LazyLock::new(|| ClientAuth::Psk(psk().clone()));
    &AUTH
}

fn server_auth() -> &'static ServerAuth {
    static AUTH: LazyLock<ServerAuth> = LazyLock::new(|| ServerAuth::Psk(psk().clone()));
    &AUTH
}

fn config(suite: CipherSuite, codec: CodecId) -> SessionConfig {
    SessionConfig::builder()
        .suites([suite])
        .codecs([codec])
        .build()
        .unwrap()
}

/// Both ends of a PSK session: the client over `a`, the server over `b`.
async fn establish<A, B>(
    a: A,
    b: B,
    client: &SessionConfig,
    server: &SessionConfig,
) -> (SecureStream<A>, SecureStream<B>)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (c, s) = tokio::join!(
        connect(a, client_auth(), client),
        accept(b, server_auth(), server)
    );
    (c.unwrap(), s.unwrap())
}

async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (client.unwrap(), server.unwrap().0)
}

#[tokio::test]
async fn request_response_over_tcp_for_every_suite_and_codec() {
    for suite in CipherSuite::ALL {
        for codec in [CodecId::MsgPack, CodecId::Json] {
            let cfg = config(suite, codec);
            let (a, b) = tcp_pair().await;
            let (mut c, mut s) = establish(a, b, &cfg, &cfg).await;
            assert_eq!(c.info().suite, suite);
            assert_eq!(s.info().codec, codec);
            assert_eq!(c.info().handshake_hash, s.info().handshake_hash);

            let server = tokio::spawn(async move {
                let mut n = 0;
                while let Some(Message::Request(r)) = s.recv_message().await.unwrap() {
                    let reply = cypherwire_wire::Response::ok(r.id, r.data);
                    s.send_message(&reply.into()).await.unwrap();
                    n += 1;
                }
                s.close().await.unwrap();
                n
            });
            for i in 0..50u64 {
                let req = Request::new(i, "/ECHO", "PUT").with_data(Value::from(vec![i; 3]));
                c.send_message(&req.into()).await.unwrap();
                match c.recv_message().await.unwrap() {
                    Some(Message::Response(r)) => {
                        assert_eq!(r.id, i);
                        assert_eq!(r.data, Value::from(vec![i; 3]));
                    }
                    other => panic!("{other:?}"),
                }
            }
            c.close().await.unwrap();
            assert_eq!(c.recv().await.unwrap(), None);
            assert_eq!(server.await.unwrap(), 50);
        }
    }
}

#[tokio::test]
async fn large_messages_cross_in_chunks() {
    for suite in CipherSuite::ALL {
        let cfg = config(suite, CodecId::MsgPack);
        let (a, b) = tcp_pair().await;
        let (mut c, mut s) = establish(a, b, &cfg, &cfg).await;
        let big: Vec<u8> = (0..5_000_000u32).map(|i| (i % 253) as u8).collect();
        let expected = big.clone();
        let sender = tokio::spawn(async move {
            c.send(&big).await.unwrap();
            c.close().await.unwrap();
        });
        let got = s.recv().await.unwrap().unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got[..] == expected[..], "{suite:?}");
        assert_eq!(s.recv().await.unwrap(), None);
        sender.await.unwrap();
    }
}

#[tokio::test]
async fn eof_without_close_is_truncation() {
    let cfg = SessionConfig::default();
    let (a, b) = tcp_pair().await;
    let (mut c, s) = establish(a, b, &cfg, &cfg).await;
    let (_r, mut w) = s.into_split();
    w.send(b"last words").await.unwrap();
    drop(w);
    drop(_r);
    assert_eq!(c.recv().await.unwrap().as_deref(), Some(&b"last words"[..]));
    assert!(matches!(c.recv().await, Err(Error::Truncated)));
}

#[tokio::test]
async fn wrong_psk_is_refused() {
    let cfg = SessionConfig::default();
    let (a, b) = tcp_pair().await;
    let other = ClientAuth::Psk(Psk::from_bytes([1; 32]));
    let (c, s) = tokio::join!(connect(a, &other, &cfg), accept(b, server_auth(), &cfg));
    assert!(matches!(s, Err(Error::AuthenticationFailed)));
    // The server's refusal says only what its closing the connection would say: the
    // credentials failed. The client reports that, not a dead connection.
    assert!(matches!(c, Err(Error::AuthenticationFailed)), "{c:?}");
}

#[tokio::test]
async fn a_banned_client_is_told_until_when_and_the_server_does_no_work() {
    use cypherwire_session::{AttemptLimiter, BanPolicy};
    let cfg = SessionConfig::default();
    let limiter = std::sync::Mutex::new(AttemptLimiter::new(BanPolicy::default()).unwrap());
    let t0 = tokio::time::Instant::now().into_std();
    limiter
        .lock()
        .unwrap()
        .ban(&"10.0.0.9", Duration::from_secs(60), t0);
    let (a, b) = tcp_pair().await;
    let (c, s) = tokio::join!(
        connect(a, client_auth(), &cfg),
        accept_guarded(b, server_auth(), &cfg, &limiter, &"10.0.0.9")
    );
    assert!(matches!(s, Err(Error::Banned)), "{s:?}");
    match c {
        Err(Error::Refused(r)) => {
            assert_eq!(r.code, cypherwire_wire::CloseCode::BANNED);
            let wait = r.retry_after.expect("a ban says when it ends");
            assert!(
                wait > Duration::from_secs(55) && wait <= Duration::from_secs(60),
                "{wait:?}"
            );
        }
        other => panic!("expected a ban refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_mode_the_server_does_not_take_is_refused_as_unsupported() {
    let cfg = SessionConfig::default();
    let (a, b) = tcp_pair().await;
    let password = ClientAuth::Password(cypherwire_session::Password::new("pw"));
    let (c, s) = tokio::join!(connect(a, &password, &cfg), accept(b, server_auth(), &cfg));
    assert!(s.is_err());
    match c {
        Err(Error::Refused(r)) => assert_eq!(r.code, cypherwire_wire::CloseCode::UNSUPPORTED),
        other => panic!("expected an UNSUPPORTED refusal, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn silent_client_hits_the_handshake_timeout() {
    let cfg = SessionConfig::builder()
        .handshake_timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let (_client, server) = tokio::io::duplex(1024);
    let started = tokio::time::Instant::now();
    let res = accept(server, server_auth(), &cfg).await;
    assert!(matches!(res, Err(Error::HandshakeTimeout)));
    assert_eq!(started.elapsed(), Duration::from_secs(3));
}

#[tokio::test]
async fn garbage_instead_of_a_hello_is_rejected() {
    let cfg = SessionConfig::default();
    let (mut a, b) = tcp_pair().await;
    let server = tokio::spawn(async move { accept(b, server_auth(), &cfg).await });
    a.write_all(b"\x00\x00\x00\x10GET / HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let res = server.await.unwrap();
    assert!(matches!(res, Err(Error::Handshake(_))), "{res:?}");
    // And an oversize length prefix before the handshake hits the 64 KiB limit.
    let cfg = SessionConfig::default();
    let (mut a, b) = tcp_pair().await;
    let server = tokio::spawn(async move { accept(b, server_auth(), &cfg).await });
    a.write_all(&[0x00, 0x01, 0x00, 0x01]).await.unwrap();
    let res = server.await.unwrap();
    assert!(
        matches!(
            res,
            Err(Error::Wire(cypherwire_wire::Error::FrameTooLarge {
                max: 65536,
                ..
            }))
        ),
        "{res:?}"
    );
}

/// A man in the middle that flips one bit of the first record after the handshake: the
/// receiver reports a decryption failure and delivers nothing.
#[tokio::test]
async fn flipped_bit_in_transit_is_detected() {
    for suite in CipherSuite::ALL {
        let cfg = config(suite, CodecId::MsgPack);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (server_addr, proxy_addr) =
            (listener.local_addr().unwrap(), proxy.local_addr().unwrap());
        let mitm = tokio::spawn(async move {
            let (mut from_client, _) = proxy.accept().await.unwrap();
            let mut to_server = TcpStream::connect(server_addr).await.unwrap();
            let (mut cr, mut cw) = from_client.split();
            let (mut sr, mut sw) = to_server.split();
            // Server to client: forward untouched.
            let down = async {
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
            };
            // Client to server: forward the hello, then flip a bit in the next record.
            let up = async {
                let mut buf = vec![0u8; 65536];
                let mut total = 0usize;
                let mut flipped = false;
                loop {
                    let n = cr.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    // The hello is 4 + 8 + 3 + 2 + 48 bytes at most; flip well after it.
                    if !flipped && total + n > 100 {
                        let at = 100usize.saturating_sub(total);
                        buf[at] ^= 0x04;
                        flipped = true;
                    }
                    total += n;
                    if sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            };
            tokio::join!(down, up);
        });
        let server = tokio::spawn({
            let cfg = cfg.clone();
            async move {
                let (s, _) = listener.accept().await.unwrap();
                let mut s = accept(s, server_auth(), &cfg).await.unwrap();
                s.recv().await
            }
        });
        let mut c = connect(
            TcpStream::connect(proxy_addr).await.unwrap(),
            client_auth(),
            &cfg,
        )
        .await
        .unwrap();
        c.send(&[0x55; 200]).await.unwrap();
        let got = server.await.unwrap();
        assert!(matches!(got, Err(Error::Decrypt)), "{suite:?}: {got:?}");
        drop(c);
        mitm.abort();
    }
}

#[tokio::test]
async fn split_halves_work_from_two_tasks() {
    let cfg = SessionConfig::default();
    let (a, b) = tcp_pair().await;
    let (c, s) = establish(a, b, &cfg, &cfg).await;
    let (mut s_r, mut s_w) = s.into_split();
    let (mut c_r, mut c_w) = c.into_split();
    let echo = tokio::spawn(async move {
        while let Some(m) = s_r.recv().await.unwrap() {
            s_w.queue(&m).unwrap();
            s_w.flush().await.unwrap();
        }
        s_w.close().await.unwrap();
    });
    let reader = tokio::spawn(async move {
        let mut n = 0u32;
        while let Some(m) = c_r.recv().await.unwrap() {
            assert_eq!(&m[..], n.to_be_bytes());
            n += 1;
        }
        n
    });
    for i in 0..1000u32 {
        c_w.queue(&i.to_be_bytes()).unwrap();
        if i % 64 == 63 {
            c_w.flush().await.unwrap();
        }
    }
    c_w.flush().await.unwrap();
    c_w.close().await.unwrap();
    echo.await.unwrap();
    assert_eq!(reader.await.unwrap(), 1000);
}

/// Forwards `from` to `to`, holding back everything after the first `pause_at` bytes until
/// `resume` fires.
async fn forward_with_pause(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    pause_at: usize,
    resume: tokio::sync::oneshot::Receiver<()>,
) {
    let mut resume = Some(resume);
    let mut sent = 0;
    let mut buf = vec![0u8; 8192];
    loop {
        let n = from.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            let _ = to.shutdown().await;
            return;
        }
        let mut chunk = &buf[..n];
        if sent + chunk.len() >= pause_at
            && let Some(r) = resume.take()
        {
            let first = pause_at - sent;
            to.write_all(&chunk[..first]).await.unwrap();
            sent += first;
            chunk = &chunk[first..];
            r.await.unwrap();
        }
        to.write_all(chunk).await.unwrap();
        sent += chunk.len();
    }
}

/// A large message's records are read straight into the reassembly buffer; a `recv` dropped
/// while one of them is half read (here: the link stalls mid-record and a timeout cancels the
/// call) resumes where it stopped, for every suite.
#[tokio::test]
async fn a_large_message_survives_a_recv_cancelled_mid_record() {
    for suite in CipherSuite::ALL {
        let cfg = config(suite, CodecId::MsgPack);
        let (client_io, relay_c) = tokio::io::duplex(64 * 1024);
        let (server_io, relay_s) = tokio::io::duplex(64 * 1024);
        let (c_read, c_write) = tokio::io::split(relay_c);
        let (s_read, s_write) = tokio::io::split(relay_s);
        let (resume, resumed) = tokio::sync::oneshot::channel();
        // About 200 KB in: inside the message's fourth 64 KiB record.
        let up = tokio::spawn(forward_with_pause(c_read, s_write, 200_000, resumed));
        let down = tokio::spawn(async move {
            let (mut r, mut w) = (s_read, c_write);
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
        let (mut c, mut s) = establish(client_io, server_io, &cfg, &cfg).await;
        let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let expected = big.clone();
        let sender = tokio::spawn(async move {
            c.send(&big).await.unwrap();
            c.send(b"after").await.unwrap();
            c.close().await.unwrap();
        });
        let stalled = tokio::time::timeout(Duration::from_millis(100), s.recv()).await;
        assert!(
            stalled.is_err(),
            "{suite:?}: the link is stalled mid-message"
        );
        resume.send(()).unwrap();
        let got = s.recv().await.unwrap().unwrap();
        assert!(got[..] == expected[..], "{suite:?}");
        assert_eq!(s.recv().await.unwrap().as_deref(), Some(&b"after"[..]));
        assert_eq!(s.recv().await.unwrap(), None);
        sender.await.unwrap();
        drop(s);
        up.await.unwrap();
        down.await.unwrap();
    }
}

/// A message over the receiver's limit fails with `MessageTooLarge` as soon as a record's
/// header shows it (before that record's body is read or reserved); one exactly at the limit
/// passes, whatever the suite's padding.
#[tokio::test]
async fn the_message_limit_holds_for_records_read_in_place() {
    const LIMIT: usize = 300_000;
    for suite in CipherSuite::ALL {
        let sender_cfg = config(suite, CodecId::MsgPack);
        let receiver_cfg = SessionConfig::builder()
            .suites([suite])
            .codecs([CodecId::MsgPack])
            .max_message_len(LIMIT)
            .build()
            .unwrap();
        let (a, b) = tcp_pair().await;
        let (mut c, mut s) = establish(a, b, &sender_cfg, &receiver_cfg).await;
        let sender = tokio::spawn(async move {
            c.send(&vec![7u8; LIMIT]).await.unwrap();
            // Ignored if the receiver already hung up.
            let _ = c.send(&vec![7u8; LIMIT + 1]).await;
            c
        });
        assert_eq!(s.recv().await.unwrap().unwrap().len(), LIMIT, "{suite:?}");
        let err = s.recv().await.unwrap_err();
        assert!(
            matches!(err, Error::MessageTooLarge { max: LIMIT, .. }),
            "{suite:?}: {err:?}"
        );
        drop(s);
        sender.await.unwrap();
    }
}

/// Reads at most `sizes[i % len]` bytes per call (cycling), so a stream arrives in every kind of
/// piece: a header split, a body split anywhere, a read ending exactly at a record's end or a
/// few bytes into the next header.
struct Chunky<IO> {
    io: IO,
    sizes: &'static [usize],
    next: usize,
}

impl<IO: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Chunky<IO> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let max = self.sizes[self.next % self.sizes.len()];
        let n = max.min(buf.remaining());
        let mut part = tokio::io::ReadBuf::new(buf.initialize_unfilled_to(n));
        let poll = std::pin::Pin::new(&mut self.io).poll_read(cx, &mut part);
        if let std::task::Poll::Ready(Ok(())) = poll {
            let got = part.filled().len();
            buf.advance(got);
            self.next += 1;
        }
        poll
    }
}

impl<IO: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Chunky<IO> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Large and small messages, back to back, arrive intact however the stream is cut into
/// reads (records of large messages are read straight into the reassembly buffer), for every
/// suite.
#[tokio::test]
async fn messages_arrive_intact_whatever_the_read_sizes() {
    const SIZES: &[usize] = &[1, 3, 4, 5, 4096, 7, 65_536, 65_557, 65_558, 2, 100_000, 17];
    for suite in CipherSuite::ALL {
        let cfg = config(suite, CodecId::MsgPack);
        let (a, b) = tokio::io::duplex(8 << 20);
        let b = Chunky {
            io: b,
            sizes: SIZES,
            next: 0,
        };
        let (mut c, mut s) = establish(a, b, &cfg, &cfg).await;
        let messages: Vec<Vec<u8>> = [300_000, 10, 65_536, 65_537, 5, 1_000_000, 200_000]
            .iter()
            .enumerate()
            .map(|(i, &n)| (0..n).map(|j| ((i * 31 + j) % 251) as u8).collect())
            .collect();
        for m in &messages {
            c.queue(m).unwrap();
        }
        c.flush().await.unwrap();
        c.close().await.unwrap();
        for (i, m) in messages.iter().enumerate() {
            let got = s.recv().await.unwrap().unwrap();
            assert!(got[..] == m[..], "{suite:?}: message {i}");
        }
        assert_eq!(s.recv().await.unwrap(), None, "{suite:?}");
    }
}
