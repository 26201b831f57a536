//! Identity mode (Noise XX with pinned keys) and password mode (SPAKE2 + NNpsk0), sans-IO and
//! over loopback TCP.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "test code"
)]

use std::time::Instant;

use cypherwire_session::{
    Argon2Cost, ClientAuth, Error, Established, HandshakeFailure, IdentityKey, Initiator, Password,
    PasswordVerifier, PeerTrust, Responder, ServerAuth, SessionConfig, Step, accept, connect,
};
use tokio::net::{TcpListener, TcpStream};

const CHEAP: Argon2Cost = Argon2Cost::new(64, 1, 1);

/// Runs a whole handshake in memory, passing messages back and forth; returns both ends, or
/// the first error with the side that raised it.
fn run(
    client: &ClientAuth,
    server: &ServerAuth,
) -> Result<(Established, Established), (&'static str, Error)> {
    let cfg = SessionConfig::default();
    let now = Instant::now();
    let (init, mut msg) = Initiator::start(client, &cfg).map_err(|e| ("client", e))?;
    let (mut init, mut resp) = (Some(init), Some(Responder::new(server, &cfg)));
    let (mut client_done, mut server_done) = (None, None);
    for _ in 0..4 {
        if let Some(r) = resp.take() {
            match r.handle(&msg, now).map_err(|e| ("server", e.error))? {
                Step::Continue { state, send } => (resp, msg) = (Some(state), send),
                Step::Done { established, send } => {
                    server_done = Some(*established);
                    msg = send.unwrap_or_default();
                }
            }
        }
        if let Some(i) = init.take() {
            match i.handle(&msg, now).map_err(|e| ("client", e.error))? {
                Step::Continue { state, send } => (init, msg) = (Some(state), send),
                Step::Done { established, send } => {
                    client_done = Some(*established);
                    msg = send.unwrap_or_default();
                }
            }
        }
        if let (Some(_), Some(_)) = (&client_done, &server_done) {
            break;
        }
    }
    Ok((
        client_done.expect("client finished"),
        server_done.expect("server finished"),
    ))
}

#[test]
fn identity_mode_authenticates_pinned_keys_both_ways() {
    let (alice, bob) = (
        IdentityKey::generate().unwrap(),
        IdentityKey::generate().unwrap(),
    );
    let client = ClientAuth::Identity(alice.clone(), PeerTrust::AllowList(vec![bob.public()]));
    let server = ServerAuth::Identity(bob.clone(), PeerTrust::AllowList(vec![alice.public()]));
    let (c, s) = run(&client, &server).unwrap();
    assert_eq!(c.peer_identity, Some(bob.public()));
    assert_eq!(s.peer_identity, Some(alice.public()));
    assert_eq!(c.handshake_hash, s.handshake_hash);
}

#[test]
fn identity_mode_rejects_keys_outside_the_allow_list() {
    let (alice, bob, mallory) = (
        IdentityKey::generate().unwrap(),
        IdentityKey::generate().unwrap(),
        IdentityKey::generate().unwrap(),
    );
    // The client expects bob but reaches mallory.
    let client = ClientAuth::Identity(alice.clone(), PeerTrust::AllowList(vec![bob.public()]));
    let server = ServerAuth::Identity(mallory.clone(), PeerTrust::AnyKey);
    let err = run(&client, &server).unwrap_err();
    assert!(
        matches!(
            err,
            ("client", Error::Handshake(HandshakeFailure::UntrustedKey))
        ),
        "{err:?}"
    );
    // The server admits only alice; mallory knocks.
    let client = ClientAuth::Identity(mallory, PeerTrust::AnyKey);
    let server = ServerAuth::Identity(bob, PeerTrust::AllowList(vec![alice.public()]));
    let err = run(&client, &server).unwrap_err();
    assert!(
        matches!(
            err,
            ("server", Error::Handshake(HandshakeFailure::UntrustedKey))
        ),
        "{err:?}"
    );
}

#[test]
fn a_run_time_key_check_is_asked_on_every_handshake() {
    use std::sync::{Arc, Mutex};

    use cypherwire_session::KeyCheck;

    let (alice, bob) = (
        IdentityKey::generate().unwrap(),
        IdentityKey::generate().unwrap(),
    );
    let allowed = Arc::new(Mutex::new(vec![alice.public()]));
    let set = allowed.clone();
    let check = KeyCheck::new(move |k| set.lock().unwrap().contains(k));
    let server = ServerAuth::Identity(bob.clone(), PeerTrust::Check(check));
    let client = ClientAuth::Identity(alice.clone(), PeerTrust::AllowList(vec![bob.public()]));
    let (_, s) = run(&client, &server).unwrap();
    assert_eq!(s.peer_identity, Some(alice.public()));
    // Removed from the set: the very next handshake is refused.
    allowed.lock().unwrap().clear();
    let err = run(&client, &server).unwrap_err();
    assert!(
        matches!(
            err,
            ("server", Error::Handshake(HandshakeFailure::UntrustedKey))
        ),
        "{err:?}"
    );
}

#[test]
fn password_mode_admits_the_right_password_only() {
    let verifier = PasswordVerifier::create("correct horse battery", CHEAP).unwrap();
    let server = ServerAuth::Password(verifier);
    let (c, s) = run(
        &ClientAuth::Password(Password::new("correct horse battery")),
        &server,
    )
    .unwrap();
    assert_eq!(c.handshake_hash, s.handshake_hash);
    let err = run(
        &ClientAuth::Password(Password::new("correct horse battery!")),
        &server,
    )
    .unwrap_err();
    assert!(
        matches!(err, ("server", Error::AuthenticationFailed)),
        "{err:?}"
    );
}

#[test]
fn password_mode_with_the_default_argon2_cost() {
    let verifier = PasswordVerifier::create("password", Argon2Cost::default()).unwrap();
    assert!(verifier.to_phc().contains("m=19456,t=2,p=1"));
    run(
        &ClientAuth::Password(Password::new("password")),
        &ServerAuth::Password(verifier),
    )
    .unwrap();
}

#[test]
fn client_refuses_hostile_argon2_parameters() {
    let huge = Argon2Cost::new(4 * 1024 * 1024, 1, 1);
    // Build a verifier claiming a huge cost without paying for it: parse a PHC string.
    let phc = PasswordVerifier::create("pw", CHEAP)
        .unwrap()
        .to_phc()
        .replace("m=64", &format!("m={}", huge.m_kib));
    let server = ServerAuth::Password(PasswordVerifier::parse(&phc).unwrap());
    let err = run(&ClientAuth::Password(Password::new("pw")), &server).unwrap_err();
    assert!(
        matches!(
            err,
            (
                "client",
                Error::Handshake(HandshakeFailure::UnacceptableParameters)
            )
        ),
        "{err:?}"
    );
}

#[test]
fn mode_mismatch_is_refused_before_any_crypto() {
    let verifier = PasswordVerifier::create("pw", CHEAP).unwrap();
    let psk = cypherwire_session::Psk::generate().unwrap();
    let err = run(&ClientAuth::Psk(psk), &ServerAuth::Password(verifier)).unwrap_err();
    assert!(matches!(
        err,
        (
            "server",
            Error::Handshake(HandshakeFailure::UnsupportedMode(1))
        )
    ));
}

/// A recorded password-mode handshake gives no offline test for password guesses: an attacker
/// who knows every message and even guesses the right password cannot reproduce the key that
/// authenticates the recorded Noise message, because SPAKE2 hides each side's secret scalar.
#[test]
fn recorded_password_handshake_is_no_guessing_oracle() {
    use spake2::{Ed25519Group, Identity, Password as P, Spake2};

    let verifier = PasswordVerifier::create("hunter22", CHEAP).unwrap();
    let server = ServerAuth::Password(verifier);
    let cfg = SessionConfig::default();
    let now = Instant::now();
    // Record a successful handshake.
    let (init, hello) =
        Initiator::start(&ClientAuth::Password(Password::new("hunter22")), &cfg).unwrap();
    let Step::Continue {
        state: resp,
        send: challenge,
    } = Responder::new(&server, &cfg).handle(&hello, now).unwrap()
    else {
        panic!()
    };
    let Step::Continue {
        send: client_msg, ..
    } = init.handle(&challenge, now).unwrap()
    else {
        panic!()
    };
    let Step::Done { .. } = resp.handle(&client_msg, now).unwrap() else {
        panic!()
    };

    // The attacker's harness: for a guess, derive w like the client, run SPAKE2 as the client
    // against the recorded server message, and test the result against the recorded Noise
    // message 1 (the last 48 bytes of the client message).
    let salt_len = usize::from(challenge[12]);
    let salt = &challenge[13..13 + salt_len];
    let server_spake = &challenge[13 + salt_len..];
    let recorded_noise = &client_msg[33..];
    let verified = |guess: &str| {
        let mut w = [0u8; 32];
        argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(64, 1, 1, Some(32)).unwrap(),
        )
        .hash_password_into(guess.as_bytes(), salt, &mut w)
        .unwrap();
        let (s, _) = Spake2::<Ed25519Group>::start_a(
            &P::new(w),
            &Identity::new(b"cypherwire/v1 password client"),
            &Identity::new(b"cypherwire/v1 password server"),
        );
        let key = s.finish(server_spake).unwrap();
        let mut psk = [0u8; 32];
        hkdf::Hkdf::<sha2::Sha256>::new(None, &key)
            .expand(b"cypherwire/v1 password psk", &mut psk)
            .unwrap();
        let mut prologue = b"cypherwire/v1 handshake".to_vec();
        prologue.extend_from_slice(&hello);
        prologue.extend_from_slice(&challenge);
        prologue.extend_from_slice(&client_msg[..33]);
        let mut noise = snow::Builder::new("Noise_NNpsk0_25519_ChaChaPoly_SHA256".parse().unwrap())
            .psk(0, &psk)
            .unwrap()
            .prologue(&prologue)
            .unwrap()
            .build_responder()
            .unwrap();
        let mut out = [0u8; 256];
        noise.read_message(recorded_noise, &mut out).is_ok()
    };
    assert!(!verified("wrong guess"));
    assert!(
        !verified("hunter22"),
        "the right guess must not be confirmable offline"
    );
}

#[tokio::test]
async fn identity_and_password_modes_over_tcp() {
    let (alice, bob) = (
        IdentityKey::generate().unwrap(),
        IdentityKey::generate().unwrap(),
    );
    let verifier = PasswordVerifier::create("pw-over-tcp", CHEAP).unwrap();
    let cases = [
        (
            ClientAuth::Identity(alice.clone(), PeerTrust::AllowList(vec![bob.public()])),
            ServerAuth::Identity(bob.clone(), PeerTrust::AllowList(vec![alice.public()])),
            true,
        ),
        (
            ClientAuth::Password(Password::new("pw-over-tcp")),
            ServerAuth::Password(verifier.clone()),
            true,
        ),
        (
            ClientAuth::Password(Password::new("nope")),
            ServerAuth::Password(verifier),
            false,
        ),
    ];
    let cfg = SessionConfig::default();
    for (client, server, ok) in cases {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (c, s) = tokio::join!(
            async { connect(TcpStream::connect(addr).await.unwrap(), &client, &cfg).await },
            async { accept(listener.accept().await.unwrap().0, &server, &cfg).await }
        );
        if ok {
            let (mut c, mut s) = (c.unwrap(), s.unwrap());
            c.send(b"ping").await.unwrap();
            assert_eq!(s.recv().await.unwrap().as_deref(), Some(&b"ping"[..]));
            assert_eq!(c.info().handshake_hash, s.info().handshake_hash);
        } else {
            assert!(matches!(s, Err(Error::AuthenticationFailed)), "{s:?}");
            assert!(c.is_err());
        }
    }
}

/// After `max_attempts` wrong passwords from one source, the next attempt is refused before the
/// server reads anything: a client that sends nothing at all gets `Banned` at once instead of
/// waiting out the handshake timeout.
#[tokio::test]
async fn banned_sources_are_refused_before_any_work() {
    use std::sync::Mutex;
    use std::time::Duration;

    use cypherwire_session::{AttemptLimiter, BanPolicy, accept_guarded};

    let mut policy = BanPolicy::default();
    policy.max_attempts = 3;
    let limiter = Mutex::new(AttemptLimiter::<&str>::new(policy).unwrap());
    let server = ServerAuth::Password(PasswordVerifier::create("right", CHEAP).unwrap());
    let cfg = SessionConfig::default();
    for attempt in 1..=3 {
        let (c_io, s_io) = tokio::io::duplex(4096);
        let wrong = ClientAuth::Password(Password::new("wrong"));
        let (c, s) = tokio::join!(
            connect(c_io, &wrong, &cfg),
            accept_guarded(s_io, &server, &cfg, &limiter, &"10.0.0.1")
        );
        assert!(
            matches!(s, Err(Error::AuthenticationFailed)),
            "attempt {attempt}: {s:?}"
        );
        assert!(c.is_err());
    }
    // Banned now: even the right password is refused, and without reading the hello.
    let (_silent_client, s_io) = tokio::io::duplex(4096);
    let res = tokio::time::timeout(
        Duration::from_secs(1),
        accept_guarded(s_io, &server, &cfg, &limiter, &"10.0.0.1"),
    )
    .await
    .expect("a banned source must be refused at once");
    assert!(matches!(res, Err(Error::Banned)));
    // Another source is unaffected.
    let (c_io, s_io) = tokio::io::duplex(4096);
    let right = ClientAuth::Password(Password::new("right"));
    let (c, s) = tokio::join!(
        connect(c_io, &right, &cfg),
        accept_guarded(s_io, &server, &cfg, &limiter, &"10.0.0.2")
    );
    assert!(c.is_ok() && s.is_ok());
}

/// Steps are transactional for unauthenticated input: a forged or damaged message is rejected
/// with the state handed back unchanged, and the genuine message then completes the handshake.
#[test]
fn rejected_messages_leave_the_state_usable() {
    use cypherwire_session::handshake::Rejected;

    let cfg = SessionConfig::default();
    let now = Instant::now();
    let flip = |m: &[u8], i: usize| {
        let mut v = m.to_vec();
        v[i] ^= 0x01;
        v
    };

    // PSK: the initiator survives a damaged ServerHello.
    let psk = cypherwire_session::Psk::generate().unwrap();
    let (init, hello) = Initiator::start(&ClientAuth::Psk(psk.clone()), &cfg).unwrap();
    let Step::Done {
        send: Some(reply), ..
    } = Responder::new(&ServerAuth::Psk(psk), &cfg)
        .handle(&hello, now)
        .unwrap()
    else {
        panic!()
    };
    let Err(Rejected {
        error,
        state: Some(init),
    }) = init.handle(&flip(&reply, 40), now)
    else {
        panic!("expected a rejection with the state kept")
    };
    assert!(matches!(error, Error::AuthenticationFailed));
    assert!(matches!(init.handle(&reply, now), Ok(Step::Done { .. })));

    // Identity: the responder survives a damaged message 3.
    let (a, b) = (
        IdentityKey::generate().unwrap(),
        IdentityKey::generate().unwrap(),
    );
    let (init, hello) =
        Initiator::start(&ClientAuth::Identity(a.clone(), PeerTrust::AnyKey), &cfg).unwrap();
    let Step::Continue {
        state: resp,
        send: m2,
    } = Responder::new(&ServerAuth::Identity(b, PeerTrust::AnyKey), &cfg)
        .handle(&hello, now)
        .unwrap()
    else {
        panic!()
    };
    let Ok(Step::Done { send: Some(m3), .. }) = init.handle(&m2, now) else {
        panic!()
    };
    let Err(Rejected {
        state: Some(resp), ..
    }) = resp.handle(&flip(&m3, 10), now)
    else {
        panic!("expected a rejection with the state kept")
    };
    let Ok(Step::Done { established, .. }) = resp.handle(&m3, now) else {
        panic!()
    };
    assert_eq!(established.peer_identity, Some(a.public()));

    // Password: the initiator survives a damaged challenge; the responder survives a damaged
    // SPAKE2 element, but a wrong password spends its single-use SPAKE2 state.
    let verifier = PasswordVerifier::create("pw", CHEAP).unwrap();
    let server = ServerAuth::Password(verifier);
    let (init, hello) = Initiator::start(&ClientAuth::Password(Password::new("pw")), &cfg).unwrap();
    let Step::Continue {
        state: resp,
        send: challenge,
    } = Responder::new(&server, &cfg).handle(&hello, now).unwrap()
    else {
        panic!()
    };
    let Err(Rejected {
        state: Some(init), ..
    }) = init.handle(&challenge[..20], now)
    else {
        panic!("expected a rejection with the state kept")
    };
    let Ok(Step::Continue {
        state: init,
        send: answer,
    }) = init.handle(&challenge, now)
    else {
        panic!()
    };
    let mut bad_point = answer.clone();
    bad_point[0] = b'B'; // wrong SPAKE2 side
    let Err(Rejected {
        state: Some(resp), ..
    }) = resp.handle(&bad_point, now)
    else {
        panic!("expected a rejection with the state kept")
    };
    let Ok(Step::Done {
        send: Some(last), ..
    }) = resp.handle(&answer, now)
    else {
        panic!()
    };
    assert!(matches!(init.handle(&last, now), Ok(Step::Done { .. })));

    let (init, hello) =
        Initiator::start(&ClientAuth::Password(Password::new("not pw")), &cfg).unwrap();
    let Step::Continue {
        state: resp,
        send: challenge,
    } = Responder::new(&server, &cfg).handle(&hello, now).unwrap()
    else {
        panic!()
    };
    let Ok(Step::Continue { send: answer, .. }) = init.handle(&challenge, now) else {
        panic!()
    };
    let Err(Rejected { error, state: None }) = resp.handle(&answer, now) else {
        panic!("a wrong password must end the attempt")
    };
    assert!(matches!(error, Error::AuthenticationFailed));
}

#[tokio::test]
async fn an_untrusted_client_key_is_told_as_a_failed_authentication_over_tcp() {
    let (alice, bob, mallory) = (
        IdentityKey::generate().unwrap(),
        IdentityKey::generate().unwrap(),
        IdentityKey::generate().unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = ServerAuth::Identity(bob.clone(), PeerTrust::AllowList(vec![alice.public()]));
    let served = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        accept(tcp, &server, &SessionConfig::default()).await.err()
    });
    // Mallory knows the server's key, but is not on its list. The XX handshake ends with
    // mallory's message, so the server's refusal is the first frame mallory reads after it.
    let client = ClientAuth::Identity(mallory, PeerTrust::AllowList(vec![bob.public()]));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut stream = connect(tcp, &client, &SessionConfig::default())
        .await
        .unwrap();
    let err = stream.recv_message().await.unwrap_err();
    assert!(matches!(err, Error::AuthenticationFailed), "{err:?}");
    assert!(
        matches!(
            served.await.unwrap(),
            Some(Error::Handshake(HandshakeFailure::UntrustedKey))
        ),
        "the server refused the key"
    );
}
