//! The signed peer-list vector of `docs/protocol.md` §7.3, checked byte for byte.
//! Regenerate with `CYPHERWIRE_BLESS=1` (then review the diff).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::fmt::Write as _;
use std::path::PathBuf;

use cypherwire_mesh::{LeaveReason, ListLimits, ListSigner, PeerEntry, PeerId, PeerList};
use cypherwire_session::PublicKey;
use serde_json::{Value, json};

fn hex(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/test-vectors/mesh-peer-list.json")
}

/// The inputs: fixed, documented, and independent of the code under test.
fn inputs() -> ([u8; 32], PeerList) {
    let seed = [0x42; 32];
    let mut entries: Vec<PeerEntry> = [
        ([0x11; 32], "127.0.0.1:4702"),
        ([0x22; 32], "192.0.2.10:40001"),
        ([0x33; 32], "[2001:db8::1]:40002"),
    ]
    .into_iter()
    .map(|(k, a)| PeerEntry::new(PublicKey::from_bytes(k), a.parse().unwrap()))
    .collect();
    entries.sort_by_key(|e| e.id);
    let departed = vec![(PeerId::from_bytes([0x44; 8]), LeaveReason::HeartbeatTimeout)];
    (
        seed,
        PeerList {
            epoch: 0x0102_0304_0506_0708,
            version: 9,
            entries,
            departed,
        },
    )
}

#[test]
fn signed_peer_list_vector() {
    let (seed, list) = inputs();
    let signer = ListSigner::from_seed(seed);
    let signed = signer.sign(&list).unwrap();
    let actual = json!({
        "description": "docs/protocol.md §7.3: a peer list body and its Ed25519 signature",
        "signer_seed": hex(&seed),
        "signer_public": hex(&signer.verifier().to_bytes()),
        "epoch": list.epoch,
        "version": list.version,
        "entries": list.entries.iter().map(|e| json!({
            "id": e.id.to_string(),
            "key": hex(e.key.as_bytes()),
            "addr": e.addr.to_string(),
        })).collect::<Vec<_>>(),
        "departed": [{"id": "4444444444444444", "reason": 2}],
        "body": hex(&signed.body),
        "signature": hex(&signed.signature),
    });
    if std::env::var_os("CYPHERWIRE_BLESS").is_some() {
        std::fs::write(
            path(),
            serde_json::to_string_pretty(&actual).unwrap() + "\n",
        )
        .unwrap();
    }
    let stored: Value =
        serde_json::from_str(&std::fs::read_to_string(path()).expect("vector file")).unwrap();
    assert_eq!(stored, actual, "the vector changed: review, then bless");

    // Bytes → list, through the public verifier bytes stored in the file.
    let public: [u8; 32] = unhex(stored["signer_public"].as_str().unwrap())
        .try_into()
        .unwrap();
    let verifier = cypherwire_mesh::ListVerifier::from_bytes(&public).unwrap();
    let wire = cypherwire_mesh::SignedPeerList {
        body: unhex(stored["body"].as_str().unwrap()),
        signature: unhex(stored["signature"].as_str().unwrap())
            .try_into()
            .unwrap(),
    };
    assert_eq!(wire.verify(&verifier, ListLimits::default()).unwrap(), list);
    // Spot-check the layout by hand: magic, epoch, version, count.
    assert_eq!(&wire.body[..4], b"CWPL");
    assert_eq!(&wire.body[4..12], &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(&wire.body[12..20], &9u64.to_be_bytes());
    assert_eq!(&wire.body[20..22], &3u16.to_be_bytes());
}
