//! Golden handshake transcripts (`docs/test-vectors/handshake-*.json`): with fixed keys and
//! fixed ephemerals, every handshake message, the handshake hash and the first record in each
//! direction must reproduce byte for byte, for each suite.
//!
//! `CYPHERWIRE_BLESS=1 cargo test -p cypherwire-tests --test handshake_vectors` rewrites the
//! files; review the diff. In password mode the SPAKE2 scalars come from a generator seeded
//! with `0xee × 32` (initiator) and `0xdd × 32` (responder).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "test code"
)]

use std::fmt::Write as _;

use bytes::BytesMut;
use cypherwire::session::handshake::HandshakeOptions;
use cypherwire::session::{
    Argon2Cost, CipherSuite, ClientAuth, IdentityKey, Password, PasswordVerifier, PeerTrust, Psk,
    ServerAuth, SessionConfig,
};
use cypherwire::wire::CodecId;
use cypherwire_test_support::{handshake, workspace_root};
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Transcript {
    suite: String,
    /// Frame bodies in order, initiator first, hex.
    messages: Vec<String>,
    handshake_hash: String,
    /// The record (frame body) carrying "hello" from the initiator, then from the responder.
    first_record_i2r: String,
    first_record_r2i: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct File {
    description: String,
    mode: String,
    inputs: serde_json::Value,
    transcripts: Vec<Transcript>,
}

fn hex(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

fn opts(byte: u8) -> HandshakeOptions {
    let mut o = HandshakeOptions::default();
    o.fixed_ephemeral = Some([byte; 32]);
    o.spake_seed = Some([byte ^ 0xff; 32]);
    o
}

fn transcript(client: &ClientAuth, server: &ServerAuth, suite: CipherSuite) -> Transcript {
    let cfg = SessionConfig::builder()
        .suites([suite])
        .codecs([CodecId::MsgPack])
        .build()
        .unwrap();
    let h = handshake::run(client, server, &cfg, &cfg, (opts(0x11), opts(0x22))).unwrap();
    // Messages alternate, initiator first.
    let mut messages = Vec::new();
    for i in 0..h.to_server.len().max(h.to_client.len()) {
        messages.extend(h.to_server.get(i).map(|m| hex(m)));
        messages.extend(h.to_client.get(i).map(|m| hex(m)));
    }
    let (mut c, mut s) = (h.client, h.server);
    assert_eq!(c.handshake_hash, s.handshake_hash);
    let now = cypherwire_test_support::epoch();
    let mut a = BytesMut::new();
    c.sealer.seal_message(b"hello", now, &mut a).unwrap();
    let mut b = BytesMut::new();
    s.sealer.seal_message(b"hello", now, &mut b).unwrap();
    Transcript {
        suite: format!("{suite:?}"),
        messages,
        handshake_hash: hex(&c.handshake_hash),
        first_record_i2r: hex(&a[4..]),
        first_record_r2i: hex(&b[4..]),
    }
}

fn check(
    name: &str,
    mode: &str,
    inputs: serde_json::Value,
    client: &ClientAuth,
    server: &ServerAuth,
) {
    let path = workspace_root().join("docs/test-vectors").join(name);
    let computed: Vec<Transcript> = CipherSuite::ALL
        .into_iter()
        .map(|suite| transcript(client, server, suite))
        .collect();
    // Determinism first: a second run gives the same bytes.
    let again: Vec<Transcript> = CipherSuite::ALL
        .into_iter()
        .map(|suite| transcript(client, server, suite))
        .collect();
    assert_eq!(computed, again, "transcripts are not reproducible");
    if std::env::var_os("CYPHERWIRE_BLESS").is_some() {
        let file = File {
            description: format!(
                "cypherwire {mode} handshake transcripts (docs/protocol.md §3): fixed keys, \
                 initiator ephemeral private key 0x11 × 32, responder ephemeral 0x22 × 32; \
                 password mode: SPAKE2 scalars from the ChaCha20 keystream (zero nonce) of \
                 0xee × 32 (initiator) and 0xdd × 32 (responder); offer = one suite, \
                 MessagePack. Messages are frame bodies in order."
            ),
            mode: mode.into(),
            inputs,
            transcripts: computed,
        };
        std::fs::write(&path, serde_json::to_string_pretty(&file).unwrap() + "\n").unwrap();
        return;
    }
    let file: File = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(file.transcripts.len(), CipherSuite::ALL.len());
    assert_eq!(
        file.transcripts, computed,
        "{name} differs from the recorded transcript"
    );
}

#[test]
fn psk_mode_transcripts() {
    let psk = Psk::from_bytes([0x42; 32]);
    check(
        "handshake-psk.json",
        "PSK (NNpsk0)",
        serde_json::json!({ "psk": psk.to_text() }),
        &ClientAuth::Psk(psk.clone()),
        &ServerAuth::Psk(psk),
    );
}

#[test]
fn identity_mode_transcripts() {
    let i = IdentityKey::from_private([0x33; 32]).unwrap();
    let r = IdentityKey::from_private([0x44; 32]).unwrap();
    check(
        "handshake-identity.json",
        "identity (XX)",
        serde_json::json!({
            "initiator_private": *i.to_text(),
            "initiator_public": i.public().to_text(),
            "responder_private": *r.to_text(),
            "responder_public": r.public().to_text(),
        }),
        &ClientAuth::Identity(i.clone(), PeerTrust::AllowList(vec![r.public()])),
        &ServerAuth::Identity(r, PeerTrust::AllowList(vec![i.public()])),
    );
}

#[test]
fn password_mode_transcripts() {
    let salt = [0x55u8; 16];
    let cost = Argon2Cost::new(64, 1, 1);
    let verifier = PasswordVerifier::with_salt("correct horse", &salt, cost).unwrap();
    check(
        "handshake-password.json",
        "password (SPAKE2 + NNpsk0)",
        serde_json::json!({
            "password": "correct horse",
            "verifier": *verifier.to_phc(),
        }),
        &ClientAuth::Password(Password::new("correct horse")),
        &ServerAuth::Password(verifier),
    );
}
