//! 50 sources × many wrong passwords against a password-mode server: each source gets exactly
//! `max_attempts` handshakes' worth of work, then is refused before any cryptography; a
//! legitimate client on another address is admitted throughout. CI tier: 200 attempts per
//! source (`CYPHERWIRE_FLOOD_ATTEMPTS=1000` for the full battery).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::net::SocketAddr;

use cypherwire::server::{Ctx, HandlerError, Server};
use cypherwire::session::{
    Argon2Cost, BanPolicy, ClientAuth, Password, PasswordVerifier, SessionConfig,
};
use cypherwire::wire::{Request, Value};
use tokio::net::TcpSocket;

/// One attempt: `None` if no TCP connection could be made (so the server never saw it),
/// otherwise whether the handshake succeeded.
async fn attempt(server: SocketAddr, source: [u8; 4], password: &str) -> Option<bool> {
    let sock = TcpSocket::new_v4().ok()?;
    sock.bind(SocketAddr::from((source, 0))).ok()?;
    let tcp = sock.connect(server).await.ok()?;
    Some(
        cypherwire::session::connect(
            tcp,
            &ClientAuth::Password(Password::new(password)),
            &SessionConfig::default(),
        )
        .await
        .is_ok(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_sources_of_wrong_passwords_get_max_attempts_handshakes_each() {
    let per_source: u32 = std::env::var("CYPHERWIRE_FLOOD_ATTEMPTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let verifier = PasswordVerifier::create("right", Argon2Cost::new(64, 1, 1)).unwrap();
    let mut bans = BanPolicy::default();
    bans.max_attempts = 5;
    let mut limits = cypherwire::server::ServerLimits::default();
    // The flood is the point here; the per-address rate limit would hide the ban logic.
    limits.handshake_rate_per_ip = cypherwire::server::RateLimit::new(1e6, 1e6);
    let server = Server::builder(verifier)
        .ban_policy(bans)
        .limits(limits)
        .route("/HELLO", "GET", |_: Request, _: Ctx| async move {
            Ok::<_, HandlerError>(Value::from("welcome"))
        })
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let h = server.handle();
    let addr = h.local_addr();
    let mut set = tokio::task::JoinSet::new();
    for s in 0..50u8 {
        set.spawn(async move {
            let (mut admitted, mut reached) = (0u64, 0u64);
            for _ in 0..per_source {
                if let Some(ok) = attempt(addr, [127, 0, 1, s + 1], "wrong").await {
                    reached += 1;
                    admitted += u64::from(ok);
                }
            }
            (admitted, reached)
        });
    }
    // Meanwhile a legitimate client on its own address is admitted.
    let mut legit_ok = 0;
    for _ in 0..20 {
        legit_ok += u32::from(attempt(addr, [127, 0, 0, 1], "right").await == Some(true));
    }
    let (mut admitted, mut reached) = (0, 0);
    while let Some(r) = set.join_next().await {
        let (a, r) = r.unwrap();
        admitted += a;
        reached += r;
    }
    // The server's counters are updated by its connection tasks: let the last ones finish.
    let expected = reached + 20;
    let mut stats = h.stats();
    for _ in 0..100 {
        if stats.refused + stats.handshakes_failed + stats.handshakes_ok >= expected {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        stats = h.stats();
    }
    println!(
        "50 sources × {per_source} wrong passwords ({reached} reached the server): {} handshakes ran and failed, {} refused before any work; legit {legit_ok}/20 admitted",
        stats.handshakes_failed, stats.refused
    );
    assert_eq!(admitted, 0);
    assert_eq!(legit_ok, 20);
    assert_eq!(
        stats.handshakes_failed,
        50 * u64::from(bans.max_attempts),
        "each source got exactly max_attempts handshakes' worth of work"
    );
    assert_eq!(
        stats.refused,
        reached - 50 * u64::from(bans.max_attempts),
        "every later attempt refused before any work"
    );
    assert_eq!(h.bans().len(), 50);
    h.shutdown().await;
}
