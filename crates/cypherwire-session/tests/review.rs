//! Regression tests for the security review's session-layer findings (`docs/security.md`,
//! "Review findings"), written against the public API as the reviewer's programs were.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cypherwire_session::{
    Argon2Cost, AttemptLimiter, BanPolicy, ClientAuth, Error, Password, PasswordVerifier, Psk,
    ServerAuth, SessionConfig, accept, accept_guarded, connect,
};

const CHEAP: Argon2Cost = Argon2Cost::new(64, 1, 1);

/// Opens 40 connections from one source first, then runs 39 wrong guesses on them in parallel
/// and the right credential on the 40th; returns how many guesses the server tested and how the
/// 40th ended.
async fn parallel_guesses(
    server: ServerAuth,
    wrong: ClientAuth,
    right: ClientAuth,
) -> (usize, Result<(), Error>) {
    let mut policy = BanPolicy::default();
    policy.max_attempts = 5;
    let limiter = Arc::new(Mutex::new(AttemptLimiter::<&str>::new(policy).unwrap()));
    let cfg = SessionConfig::default();
    let mut servers = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..40 {
        let (c_io, s_io) = tokio::io::duplex(64 * 1024);
        let (server, cfg, limiter) = (server.clone(), cfg.clone(), limiter.clone());
        servers.push(tokio::spawn(async move {
            accept_guarded(s_io, &server, &cfg, &limiter, &"198.51.100.7")
                .await
                .map(drop)
        }));
        clients.push(c_io);
    }
    // Every connection is open (and past its first ban check) before any guess is made.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let last = clients.pop().unwrap();
    let guesses: Vec<_> = clients
        .into_iter()
        .map(|io| {
            let (wrong, cfg) = (wrong.clone(), cfg.clone());
            tokio::spawn(async move { connect(io, &wrong, &cfg).await.map(drop) })
        })
        .collect();
    for g in guesses {
        let _ = g.await.unwrap();
    }
    let right_client = tokio::spawn(async move { connect(last, &right, &cfg).await.map(drop) });
    let mut tested = 0;
    let mut outcomes = Vec::new();
    for s in servers {
        outcomes.push(s.await.unwrap());
    }
    let _ = right_client.await.unwrap();
    let last = outcomes.pop().unwrap();
    for o in &outcomes {
        if matches!(o, Err(Error::AuthenticationFailed | Error::Handshake(_))) {
            tested += 1;
        }
    }
    (tested, last)
}

/// Finding 1 (PSK mode): the ban was checked once per connection and failures recorded when
/// handshakes ended, so parallel handshakes tested 39 guesses under a policy of 5, and the
/// right key on a connection opened before the ban got in while the source was banned.
#[tokio::test]
async fn parallel_handshakes_cannot_outrun_the_attempt_limit_psk() {
    let psk = Psk::generate().unwrap();
    let (tested, last) = parallel_guesses(
        ServerAuth::Psk(psk.clone()),
        ClientAuth::Psk(Psk::generate().unwrap()),
        ClientAuth::Psk(psk),
    )
    .await;
    assert!(tested <= 5, "{tested} guesses tested; the policy allows 5");
    assert!(
        matches!(last, Err(Error::Banned)),
        "the right key got in while the source was banned: {last:?}"
    );
}

/// Finding 1 in password mode, the mode the reviewer used.
#[tokio::test]
async fn parallel_handshakes_cannot_outrun_the_attempt_limit_password() {
    let verifier = PasswordVerifier::create("right", CHEAP).unwrap();
    let (tested, last) = parallel_guesses(
        ServerAuth::Password(verifier),
        ClientAuth::Password(Password::new("wrong")),
        ClientAuth::Password(Password::new("right")),
    )
    .await;
    assert!(tested <= 5, "{tested} guesses tested; the policy allows 5");
    assert!(matches!(last, Err(Error::Banned)), "{last:?}");
}

/// Finding 6: once full of bans the limiter grew past its capacity (102,000 entries with a
/// capacity of 100,000). Capacity is a hard bound.
#[test]
#[allow(clippy::disallowed_methods, reason = "test epoch")]
fn the_limiter_stays_within_its_capacity_when_full_of_bans() {
    let mut policy = BanPolicy::default();
    policy.capacity = 1_000;
    let mut l = AttemptLimiter::<u32>::new(policy).unwrap();
    let t0 = Instant::now();
    for k in 0..1_020 {
        l.ban(&k, Duration::from_secs(3_600), t0);
    }
    assert!(l.len() <= 1_000, "{} sources tracked", l.len());
    for k in 1_020..1_040 {
        for _ in 0..5 {
            l.record_failure(&k, t0);
        }
    }
    assert!(l.len() <= 1_000, "{} sources tracked", l.len());
    assert!(l.check(&1_039, t0).is_err(), "the newest ban holds");
}

/// The process's peak resident memory, from `/proc/self/status` (Linux).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Finding 9: a handshake timeout released the argon2 slot while the computation went on, so
/// `MAX_CONCURRENT_ARGON2 = 2` did not bound memory: six timed-out handshakes ran six argon2
/// computations at once. The slot is now held until the computation ends.
#[tokio::test]
async fn timed_out_handshakes_do_not_run_more_argon2_than_the_bound() {
    const M_KIB: u32 = 64 * 1024;
    let Some(_) = peak_rss_kib() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "no /proc/self/status under CI"
        );
        eprintln!("skipped: no /proc/self/status on this system");
        return;
    };
    let verifier = PasswordVerifier::create("pw", Argon2Cost::new(M_KIB, 1, 1)).unwrap();
    let server = ServerAuth::Password(verifier);
    let hurried = SessionConfig::builder()
        .handshake_timeout(Duration::from_millis(5))
        .build()
        .unwrap();
    let before = peak_rss_kib().unwrap();
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (c_io, s_io) = tokio::io::duplex(64 * 1024);
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let _ = accept(s_io, &server, &SessionConfig::default()).await;
        }));
        let res = connect(c_io, &ClientAuth::Password(Password::new("pw")), &hurried).await;
        assert!(matches!(res, Err(Error::HandshakeTimeout)), "{res:?}");
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Let whatever computations were started finish.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let grown = peak_rss_kib().unwrap().saturating_sub(before);
    assert!(
        grown < u64::from(M_KIB) * 5 / 2,
        "peak memory grew by {grown} KiB: more than 2 argon2 computations of {M_KIB} KiB ran at once"
    );
}

/// Finding 9: a client's default cap on a server's argon2 memory is lower than the hard cap,
/// configurable, and a challenge above it fails the handshake before any argon2 work.
#[tokio::test]
async fn a_challenge_above_the_clients_argon2_cap_is_refused() {
    use cypherwire_session::{
        DEFAULT_MAX_ARGON2_KIB, HandshakeFailure, MAX_CLIENT_ARGON2_KIB, SessionConfig,
    };
    assert_eq!(
        SessionConfig::default().max_argon2_kib(),
        DEFAULT_MAX_ARGON2_KIB
    );
    const { assert!(DEFAULT_MAX_ARGON2_KIB < MAX_CLIENT_ARGON2_KIB) };
    for bad in [0, 7, MAX_CLIENT_ARGON2_KIB + 1] {
        assert!(
            SessionConfig::builder()
                .max_argon2_kib(bad)
                .build()
                .is_err(),
            "{bad}"
        );
    }
    let server =
        ServerAuth::Password(PasswordVerifier::create("pw", Argon2Cost::new(128, 1, 1)).unwrap());
    let capped = SessionConfig::builder().max_argon2_kib(64).build().unwrap();
    let (client, plain) = (
        ClientAuth::Password(Password::new("pw")),
        SessionConfig::default(),
    );
    let (c_io, s_io) = tokio::io::duplex(64 * 1024);
    let (c, _s) = tokio::join!(
        connect(c_io, &client, &capped),
        accept(s_io, &server, &plain)
    );
    assert!(
        matches!(
            c,
            Err(Error::Handshake(HandshakeFailure::UnacceptableParameters))
        ),
        "{c:?}"
    );
    // At the cap it is accepted.
    let at_cap = SessionConfig::builder()
        .max_argon2_kib(128)
        .build()
        .unwrap();
    let (c_io, s_io) = tokio::io::duplex(64 * 1024);
    let (c, s) = tokio::join!(
        connect(c_io, &client, &at_cap),
        accept(s_io, &server, &plain)
    );
    assert!(c.is_ok() && s.is_ok());
}
