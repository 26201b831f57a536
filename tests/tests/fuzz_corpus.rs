//! Replays the committed fuzz corpora through the fuzz-target bodies on stable Rust, so CI runs
//! every target's code without a nightly toolchain.
//!
//! `CYPHERWIRE_BLESS=1 cargo test -p cypherwire-tests --test fuzz_corpus` (re)writes the seed
//! files of the session targets from real handshakes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "test code"
)]

use cypherwire::session::{
    Argon2Cost, ClientAuth, IdentityKey, Password, PasswordVerifier, PeerTrust, Psk, ServerAuth,
    SessionConfig,
};
use cypherwire_test_support::{corpus, fuzz, handshake, workspace_root};

fn replay(target: &str, body: fn(&[u8])) {
    if std::env::var_os("CYPHERWIRE_BLESS").is_some() {
        bless_session_seeds();
    }
    let files = corpus::load(target).unwrap_or_else(|e| panic!("corpus {target}: {e}"));
    assert!(
        files.len() >= 6,
        "corpus {target} has only {} files",
        files.len()
    );
    for (name, data) in &files {
        let outcome = std::panic::catch_unwind(|| body(data));
        assert!(
            outcome.is_ok(),
            "{target}: input {name} triggered a finding"
        );
    }
}

#[test]
fn frame_envelope_corpus() {
    replay("frame_envelope", fuzz::frame_envelope);
}

#[test]
fn payload_value_corpus() {
    replay("payload_value", fuzz::payload_value);
}

#[test]
fn handshake_responder_corpus() {
    replay("handshake_responder", fuzz::handshake_responder);
}

#[test]
fn handshake_initiator_corpus() {
    replay("handshake_initiator", fuzz::handshake_initiator);
}

#[test]
fn record_open_corpus() {
    replay("record_open", fuzz::record_open);
}

/// Length-prefixes messages the way the session targets split their input.
fn chunks(mode: u8, msgs: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![mode];
    for m in msgs {
        out.push(u8::try_from(m.len()).unwrap());
        out.extend_from_slice(m);
    }
    out
}

/// Runs a real handshake with the fuzz fixtures' credentials; returns (to responder, to
/// initiator) message lists.
fn transcript(mode: u8) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let psk = Psk::from_bytes([0x42; 32]);
    let (ic, is) = (
        IdentityKey::from_private([0x33; 32]).unwrap(),
        IdentityKey::from_private([0x44; 32]).unwrap(),
    );
    let verifier = PasswordVerifier::create("fuzz", Argon2Cost::new(8, 1, 1)).unwrap();
    let (client, server) = match mode {
        0 => (ClientAuth::Psk(psk.clone()), ServerAuth::Psk(psk)),
        1 => (
            ClientAuth::Identity(ic, PeerTrust::AnyKey),
            ServerAuth::Identity(is, PeerTrust::AnyKey),
        ),
        _ => (
            ClientAuth::Password(Password::new("fuzz")),
            ServerAuth::Password(verifier),
        ),
    };
    let cfg = SessionConfig::default();
    let h = handshake::run(&client, &server, &cfg, &cfg, Default::default()).unwrap();
    (h.to_server, h.to_client)
}

fn bless_session_seeds() {
    let root = workspace_root().join("fuzz/corpus");
    for dir in ["handshake_responder", "handshake_initiator", "record_open"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    for mode in 0..3u8 {
        let (to_r, to_i) = transcript(mode);
        let write = |dir: &str, name: String, bytes: Vec<u8>| {
            std::fs::write(root.join(dir).join(name), bytes).unwrap();
        };
        write(
            "handshake_responder",
            format!("mode{mode}-genuine"),
            chunks(mode, &to_r),
        );
        write(
            "handshake_responder",
            format!("mode{mode}-hello-only"),
            chunks(mode, &to_r[..1]),
        );
        let mut flipped = to_r.clone();
        flipped[0][6] ^= 0xff;
        write(
            "handshake_responder",
            format!("mode{mode}-bad-counts"),
            chunks(mode, &flipped),
        );
        write(
            "handshake_initiator",
            format!("mode{mode}-genuine"),
            chunks(mode, &to_i),
        );
        let mut short = to_i.clone();
        short[0].truncate(10);
        write(
            "handshake_initiator",
            format!("mode{mode}-short"),
            chunks(mode, &short),
        );
    }
    let messages: Vec<Vec<u8>> = vec![
        b"hello".to_vec(),
        vec![],
        vec![7; 200],
        b"/NUMBER READ".to_vec(),
    ];
    for (i, ctl) in [1u8, 3, 77, 255].into_iter().enumerate() {
        std::fs::write(
            root.join("record_open").join(format!("sealed-{i}")),
            chunks(ctl, &messages),
        )
        .unwrap();
    }
    for (i, raw) in [
        vec![
            0u8, 0, 0, 0, 0, 0, 0, 20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17,
            18, 19, 20,
        ],
        vec![0, 0, 0, 0, 17, 0xff],
        vec![2, 0xff, 0xff, 0xff, 0xff],
    ]
    .into_iter()
    .enumerate()
    {
        std::fs::write(root.join("record_open").join(format!("raw-{i}")), raw).unwrap();
    }
}
