//! Regression tests for the security review's server findings (`docs/security.md`, "Review
//! findings"): each drives a real server over TCP on loopback, as the attacker did.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::net::{IpAddr, SocketAddr};
use std::sync::LazyLock;
use std::time::Duration;

use cypherwire_server::{Ctx, HandlerError, ResumePolicy, Server, ServerHandle};
use cypherwire_session::{
    ClientAuth, IdentityKey, PeerTrust, Psk, SecureStream, ServerAuth, SessionConfig, connect,
};
use cypherwire_wire::{Message, Request, Response, Resume, Value, Welcome};
use tokio::net::TcpStream;

static PSK: LazyLock<Psk> = LazyLock::new(|| Psk::from_bytes([0x5a; 32]));

type Stream = SecureStream<TcpStream>;

async fn dial_as(addr: SocketAddr, auth: &ClientAuth) -> Stream {
    let tcp = TcpStream::connect(addr).await.unwrap();
    connect(tcp, auth, &SessionConfig::default()).await.unwrap()
}

async fn recv(s: &mut Stream) -> Message {
    tokio::time::timeout(Duration::from_secs(10), s.recv_message())
        .await
        .expect("no message within 10 s")
        .unwrap()
        .expect("closed")
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

/// Resumes with `token` on a fresh connection; returns the second Welcome and the stream.
async fn resume(addr: SocketAddr, auth: &ClientAuth, token: [u8; 16]) -> (Welcome, Stream) {
    let mut s = dial_as(addr, auth).await;
    let provisional = welcome(&mut s).await;
    assert!(!provisional.resumed);
    s.send_message(&Resume::new(token, 0).into()).await.unwrap();
    (welcome(&mut s).await, s)
}

async fn echo_server(auth: impl Into<ServerAuth>, policy: ResumePolicy) -> ServerHandle {
    Server::builder(auth)
        .route("/ECHO", "READ", |req: Request, _ctx: Ctx| async move {
            Ok::<_, HandlerError>(req.data)
        })
        .resume_policy(policy)
        .bind("127.0.0.1:0")
        .await
        .unwrap()
        .handle()
}

/// Finding 2: the token's lifetime counted from its issue, so a client whose connection lived
/// longer than the TTL could not resume after the drop. The TTL now starts at the drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_older_than_the_ttl_still_resumes_after_a_drop() {
    let mut policy = ResumePolicy::default();
    policy.ttl = Duration::from_millis(800);
    let h = echo_server(PSK.clone(), policy).await;
    let auth = ClientAuth::Psk(PSK.clone());
    let mut a = dial_as(h.local_addr(), &auth).await;
    let w = welcome(&mut a).await;
    // The connection lives twice the TTL, in use.
    for id in 1..=4 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        a.send_message(&Request::new(id, "/ECHO", "READ").into())
            .await
            .unwrap();
        response(&mut a, id).await;
    }
    drop(a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (again, _b) = resume(h.local_addr(), &auth, w.token.0).await;
    assert!(
        again.resumed,
        "a session must stay resumable for its TTL after the drop"
    );
}

/// Finding 2: the token a resume replaced stayed valid for as long as the session was attached,
/// and presenting it took the live session over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_token_expires_while_the_session_is_attached() {
    let mut policy = ResumePolicy::default();
    policy.ttl = Duration::from_millis(500);
    let h = echo_server(PSK.clone(), policy).await;
    let auth = ClientAuth::Psk(PSK.clone());
    let mut a = dial_as(h.local_addr(), &auth).await;
    let w1 = welcome(&mut a).await;
    drop(a);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (w2, mut b) = resume(h.local_addr(), &auth, w1.token.0).await;
    assert!(w2.resumed);
    // The resumed connection lives well past the TTL.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (old, _c) = resume(h.local_addr(), &auth, w1.token.0).await;
    assert!(!old.resumed, "an already redeemed token must expire");
    // The live connection was not taken over: it still answers.
    b.send_message(&Request::new(9, "/ECHO", "READ").into())
        .await
        .unwrap();
    assert_eq!(response(&mut b, 9).await.id, 9);
}

/// Finding 3: in identity mode another allowed key presenting a session's token received that
/// session's replayed pushes and cached responses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_resumes_only_for_the_identity_that_opened_the_session() {
    let server_key = IdentityKey::generate().unwrap();
    let (alice, bob) = (
        IdentityKey::generate().unwrap(),
        IdentityKey::generate().unwrap(),
    );
    let trust = PeerTrust::AllowList(vec![alice.public(), bob.public()]);
    let h = echo_server(
        ServerAuth::Identity(server_key.clone(), trust),
        ResumePolicy::default(),
    )
    .await;
    let pin = PeerTrust::AllowList(vec![server_key.public()]);
    let as_alice = ClientAuth::Identity(alice, pin.clone());
    let as_bob = ClientAuth::Identity(bob, pin);
    let mut a = dial_as(h.local_addr(), &as_alice).await;
    let w = welcome(&mut a).await;
    a.send_message(
        &Request::new(1, "/ECHO", "READ")
            .with_data(Value::from("alice's secret"))
            .into(),
    )
    .await
    .unwrap();
    response(&mut a, 1).await;
    // A push Alice never reads before her connection drops.
    h.send_to(h.connections()[0].id, Value::from("for alice only"))
        .unwrap();
    drop(a);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let (stolen, mut b) = resume(h.local_addr(), &as_bob, w.token.0).await;
    assert!(!stolen.resumed, "Bob must not resume Alice's session");
    b.send_message(&Request::new(1, "/ECHO", "READ").into())
        .await
        .unwrap();
    assert_eq!(
        response(&mut b, 1).await.data,
        Value::Nil,
        "Bob's request runs as his own, not answered from Alice's cache"
    );
    // Alice's token was not used up by Bob's attempt.
    let (mine, mut a) = resume(h.local_addr(), &as_alice, w.token.0).await;
    assert!(mine.resumed);
    match recv(&mut a).await {
        Message::Push(p) => assert_eq!(p.data, Value::from("for alice only")),
        other => panic!("expected the replayed push, got {other:?}"),
    }
}

/// Finding 4: connect-and-drop cycles from one address filled the session table, and the next
/// client from elsewhere was refused (`Truncated`). A source now has a quota and the sessions
/// detached longest ago make room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_fill_the_session_table() {
    let mut policy = ResumePolicy::default();
    policy.max_sessions = 50;
    let h = echo_server(PSK.clone(), policy).await;
    let auth = ClientAuth::Psk(PSK.clone());
    for _ in 0..120 {
        let mut s = dial_as(h.local_addr(), &auth).await;
        welcome(&mut s).await;
        let _ = s.close().await;
    }
    // A client from another address on the loopback network: welcomed, served, resumable.
    let from_other = || async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::new(IpAddr::from([127, 0, 0, 2]), 0))
            .unwrap();
        let tcp = socket.connect(h.local_addr()).await.unwrap();
        connect(tcp, &auth, &SessionConfig::default())
            .await
            .unwrap()
    };
    let mut s = from_other().await;
    let w = welcome(&mut s).await;
    s.send_message(&Request::new(1, "/ECHO", "READ").into())
        .await
        .unwrap();
    response(&mut s, 1).await;
    drop(s);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut s = from_other().await;
    welcome(&mut s).await;
    s.send_message(&Resume::new(w.token.0, 0).into())
        .await
        .unwrap();
    assert!(welcome(&mut s).await.resumed);
}

/// Finding 6: on a dual-stack socket an IPv4 client arrives as `::ffff:127.0.0.1`, and a ban of
/// `127.0.0.1` did not apply to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_of_an_ipv4_address_holds_on_a_dual_stack_socket() {
    let server = match Server::builder(PSK.clone()).bind("[::]:0").await {
        Ok(s) => s,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "no IPv6 socket under CI: {e}"
            );
            eprintln!("skipped: this machine has no IPv6 socket ({e})");
            return;
        }
    };
    let h = server.handle();
    let v4: SocketAddr = SocketAddr::new(IpAddr::from([127, 0, 0, 1]), h.local_addr().port());
    let auth = ClientAuth::Psk(PSK.clone());
    // Reachable before the ban.
    let mut s = dial_as(v4, &auth).await;
    welcome(&mut s).await;
    drop(s);
    h.ban("127.0.0.1".parse().unwrap(), Duration::from_secs(60));
    let tcp = TcpStream::connect(v4).await.unwrap();
    let refused = connect(tcp, &auth, &SessionConfig::default()).await;
    assert!(
        refused.is_err(),
        "the banned address got in through its mapped form"
    );
    assert!(
        h.unban("::ffff:127.0.0.1".parse().unwrap()),
        "one source, either spelling"
    );
    let mut s = dial_as(v4, &auth).await;
    welcome(&mut s).await;
}

mod compat {
    use super::*;
    use cypherwire_server::CypherCompat;
    use cypherwire_session::compat::{self, CompatMessage, CypherKeys};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const KEY: &str = "2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U";

    async fn server(cfg: CypherCompat) -> SocketAddr {
        let s = Server::builder(PSK.clone())
            .route("/ECHO", "READ", |req: Request, _ctx: Ctx| async move {
                Ok::<_, HandlerError>(req.data)
            })
            .cypher_compat(cfg)
            .bind("127.0.0.1:0")
            .await
            .unwrap();
        let addr = s.compat_addr().unwrap();
        // The server lives for the rest of the test.
        std::mem::forget(s);
        addr
    }

    fn keys() -> CypherKeys {
        CypherKeys::same(KEY).unwrap()
    }

    fn request() -> Vec<u8> {
        let m = CompatMessage {
            path: "/ECHO".into(),
            operation: "READ".into(),
            data: Value::from(7),
            metadata: Value::Nil,
        };
        // NUL-terminated, as the package sends it.
        compat::encode(&m, &keys().encryption, 0).unwrap()
    }

    /// Whether the server closes `s` within `wait` (EOF or a reset).
    async fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
        let mut buf = [0u8; 1024];
        loop {
            match tokio::time::timeout(wait, s.read(&mut buf)).await {
                Err(_) => return false,
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(_)) => {}
            }
        }
    }

    async fn answered(addr: SocketAddr) -> bool {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&request()).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.contains(&0) {
            match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
                _ => return false,
            }
        }
        let answer = compat::decode(&got[..got.len() - 1], &keys().decryption).unwrap();
        answer.data == Value::from(7)
    }

    /// Finding 5: each unauthenticated compat connection could buffer up to 16 MiB, with no
    /// bound over all of them (24 connections held 368 MiB). A budget over all connections
    /// (64 MiB by default) closes the connection that would pass it; others are still served.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_compat_listener_bounds_buffered_bytes_over_all_connections() {
        let addr = server(CypherCompat::new("127.0.0.1:0", keys())).await;
        let chunk = vec![b'A'; 15 * 1024 * 1024];
        let mut conns = Vec::new();
        for _ in 0..6 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            // A cut write means the server closed this one.
            let _ = tokio::time::timeout(Duration::from_secs(10), s.write_all(&chunk)).await;
            conns.push(s);
        }
        let mut closed = 0;
        for s in &mut conns {
            if closed_within(s, Duration::from_millis(500)).await {
                closed += 1;
            }
        }
        assert!(
            closed >= 2,
            "90 MiB buffered in 6 connections; {closed} closed"
        );
        assert!(answered(addr).await, "a legitimate client is still served");
    }

    /// Finding 5: compat connections had no read or idle timeout.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn compat_connections_that_send_nothing_or_too_slowly_are_closed() {
        let mut cfg = CypherCompat::new("127.0.0.1:0", keys());
        cfg.idle_timeout = Duration::from_millis(400);
        cfg.message_timeout = Duration::from_millis(400);
        let addr = server(cfg).await;
        let mut idle = TcpStream::connect(addr).await.unwrap();
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"gAAAAA").await.unwrap();
        assert!(
            closed_within(&mut idle, Duration::from_secs(5)).await,
            "idle connection kept"
        );
        assert!(
            closed_within(&mut slow, Duration::from_secs(5)).await,
            "slow request kept"
        );
        // A client that asks in time is answered, and again after a pause shorter than the
        // idle timeout.
        let mut s = TcpStream::connect(addr).await.unwrap();
        for round in 0..2 {
            s.write_all(&request()).await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed at round {round}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(answered(addr).await);
    }
}
