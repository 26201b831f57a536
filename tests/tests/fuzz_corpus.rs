//! Replays the committed fuzz corpora through the fuzz-target bodies as plain tests, so every
//! seed's invariant is checked by `cargo nextest` too (the fuzzing itself: `scripts/fuzz-all.py`).
//!
//! `CYPHERWIRE_BLESS=1 cargo test -p cypherwire-tests --test fuzz_corpus` (re)writes every
//! target's seed files; the session and compat seeds come from fresh handshakes and random
//! IVs, so they change on every bless (keep the committed ones unless they must change).

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
        bless_compat_and_mesh_seeds();
        bless_server_seeds();
        bless_client_seeds();
        bless_compat_listener_seeds();
        bless_cluster_seeds();
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

#[test]
fn compat_decode_corpus() {
    replay("compat_decode", fuzz::compat_decode);
}

#[test]
fn fernet_token_corpus() {
    replay("fernet_token", fuzz::fernet_token);
}

#[test]
fn mesh_peer_list_corpus() {
    replay("mesh_peer_list", fuzz::mesh_peer_list);
}

#[test]
fn server_connection_corpus() {
    replay("server_connection", fuzz::server_connection);
}

#[test]
fn client_resume_corpus() {
    replay("client_resume", fuzz::client_resume);
}

#[test]
fn compat_listener_corpus() {
    replay("compat_listener", fuzz::compat_listener);
}

#[test]
fn cluster_inbound_corpus() {
    replay("cluster_inbound", fuzz::cluster_inbound);
}

/// Seeds for `cluster_inbound`: operation bytes and their arguments (see
/// `fuzz::cluster_inbound`).
fn bless_cluster_seeds() {
    let dir = workspace_root().join("fuzz/corpus/cluster_inbound");
    std::fs::create_dir_all(&dir).unwrap();
    // A publication heard at `t:all`, position 1:1, fresh, from node 3, counter 5, on `all`.
    let publication = [1u8, 2, 1, 1, 0, 3, 5, 0, 2, 0xaa, 0xbb];
    let seeds: [(&str, Vec<u8>); 11] = [
        ("raw", vec![0, 2, 5, 1, 2, 3, 4, 5]),
        ("publication", publication.to_vec()),
        // Again at its position (live and from the history), then at another.
        (
            "publication-again",
            [&publication[..], &[2, 2, 1, 1, 0], &[2, 2, 1, 2, 0]].concat(),
        ),
        // Sealed for the bans channel, heard at `t:all`.
        ("publication-moved", vec![131, 2, 1, 1, 0, 3, 5, 0, 0]),
        ("wrong-topic", vec![1, 3, 1, 1, 0, 3, 5, 0, 0]),
        ("stale", vec![1, 2, 1, 1, 2, 3, 5, 0, 0]),
        // Counter u64::MAX, then one far below it (outside the replay window).
        (
            "counter-near-max",
            vec![1, 2, 1, 1, 0, 3, 0x80, 0, 0, 1, 2, 1, 2, 0, 3, 5, 0, 0],
        ),
        // A request to this node, then the same value again.
        ("node-request", vec![3, 0, 0, 2, 1, 7, 1, 1, 128, 0]),
        ("node-to-another", vec![3, 0, 0, 2, 0, 7, 0]),
        // A ban sent twice, an unban, a ban of a source that does not parse.
        (
            "bans",
            vec![169, 0, 2, 9, 60, 0, 44, 0, 2, 10, 0, 1, 44, 0, 2, 11, 5, 2],
        ),
        ("ban-at-a-node-channel", vec![12, 0, 2, 9, 60, 0]),
    ];
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// Seeds for `compat_listener`: operation bytes (see `fuzz::compat_listener`).
fn bless_compat_listener_seeds() {
    let dir = workspace_root().join("fuzz/corpus/compat_listener");
    std::fs::create_dir_all(&dir).unwrap();
    let raw = |n: u8, byte: u8| [&[1, n][..], &vec![byte; usize::from(n)]].concat();
    let seeds: [(&str, Vec<u8>); 7] = [
        ("one-echo", vec![0, 7]),
        ("in-pieces", vec![0, 1, 3, 4, 2, 3, 8, 3, 12, 4]),
        ("resent", vec![0, 5, 2, 2]),
        (
            "garbage-after",
            [&[0, 1][..], &[1, 3, b'x', b'y', 0], &[0, 2]].concat(),
        ),
        ("empty-token", vec![0, 1, 1, 1, 0]),
        (
            "oversize",
            [raw(255, b'A'), raw(255, b'A'), raw(10, b'A')].concat(),
        ),
        ("no-nul-at-the-end", [&[0, 1][..], &raw(20, b'B')].concat()),
    ];
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// Seeds for `client_resume`: operation bytes (see `fuzz::client_resume`), two per step.
fn bless_client_seeds() {
    let dir = workspace_root().join("fuzz/corpus/client_resume");
    std::fs::create_dir_all(&dir).unwrap();
    let seeds: [(&str, &[u8]); 8] = [
        // Online, a push, its duplicate, an older one, a response, a ping, a heartbeat and
        // its answer.
        (
            "first-connection",
            &[0, 0, 1, 1, 2, 5, 2, 5, 2, 3, 3, 7, 4, 9, 5, 0, 12, 1],
        ),
        // Reconnect with the token: the fresh session's Welcome, a provisional push, the
        // Resume answered, the old session's pushes (a duplicate dropped).
        (
            "resumed",
            &[0, 0, 1, 1, 2, 5, 0, 0, 1, 2, 2, 1, 9, 3, 2, 5, 2, 6],
        ),
        // The same, the Resume refused: the fresh session's numbering.
        (
            "resume-refused",
            &[0, 0, 1, 1, 2, 5, 0, 0, 1, 2, 2, 1, 1, 3, 2, 2],
        ),
        // Cut before the Resume's answer: the next connection resumes the same session.
        (
            "cut-before-answer",
            &[0, 0, 1, 1, 2, 5, 0, 0, 1, 2, 0, 0, 1, 4, 9, 5],
        ),
        ("kicked", &[0, 0, 1, 1, 7, 8, 0, 0, 1, 2]),
        ("banned-and-closed", &[0, 0, 1, 1, 7, 9, 0, 0, 1, 2, 7, 12]),
        // A silent server, then one that is heard between checks.
        (
            "silent-then-heard",
            &[
                0, 0, 6, 80, 5, 0, 0, 0, 1, 1, 6, 19, 5, 0, 2, 1, 6, 19, 5, 0,
            ],
        ),
        // A kind only clients send.
        ("client-kind", &[0, 0, 1, 1, 15, 0]),
    ];
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// Seeds for `server_connection`: envelope sequences covering each rule the target checks.
fn bless_server_seeds() {
    use std::time::Duration;

    use cypherwire::wire::{
        Action, Cancel, Close, CloseCode, Codec, Message, Ping, Push, Request, Resume, Value,
    };

    let dir = workspace_root().join("fuzz/corpus/server_connection");
    std::fs::create_dir_all(&dir).unwrap();
    let body = |m: Message| {
        let mut buf = bytes::BytesMut::new();
        m.encode(&Codec::MsgPack, &mut buf).unwrap();
        buf.to_vec()
    };
    let write = |name: &str, bodies: Vec<Vec<u8>>| {
        let mut input = Vec::new();
        for b in bodies {
            input.push(u8::try_from(b.len()).unwrap());
            input.extend_from_slice(&b);
        }
        std::fs::write(dir.join(name), input).unwrap();
    };
    let echo = |id: u64| {
        body(
            Request::new(id, "/ECHO", "PUT")
                .with_data(Value::from(5))
                .into(),
        )
    };
    let slow = |id: u64| body(Request::new(id, "/YIELD", "GET").into());
    write("echo", vec![echo(1)]);
    write(
        "past-the-in-flight-bound",
        (1..=6)
            .map(slow)
            .chain([body(Ping::new(7).into())])
            .collect(),
    );
    write(
        "cancel",
        vec![slow(1), body(Cancel::new(1).into()), echo(2)],
    );
    write(
        "resume-first",
        vec![body(Resume::new([9; 16], 0).into()), echo(2)],
    );
    write(
        "resume-later",
        vec![echo(1), body(Resume::new([9; 16], 0).into())],
    );
    write(
        "client-close",
        vec![echo(1), body(Close::new(CloseCode::NORMAL, "bye").into())],
    );
    write("unknown-kind", vec![echo(1), vec![1, 0x42, 0x90]]);
    write("unknown-version", vec![vec![2, 0x06, 0x91, 0x01]]);
    write(
        "push-from-client",
        vec![body(Push::new(1, Value::Nil).into())],
    );
    write(
        "actions",
        vec![
            body(Action::new("note", 1, 0).into()),
            body(Action::new("nobody", 2, 0).into()),
            echo(3),
        ],
    );
    write("duplicate-id", vec![echo(3), echo(3), slow(4), slow(4)]);
    write(
        "failures",
        vec![
            body(Request::new(1, "/FAIL", "GET").into()),
            body(Request::new(2, "/NONE", "X").into()),
            body(
                Request::new(3, "/ECHO", "PUT")
                    .with_deadline(Duration::ZERO)
                    .into(),
            ),
        ],
    );
}

/// Seeds for the compat and mesh targets: genuine inputs and damaged copies.
fn bless_compat_and_mesh_seeds() {
    use cypherwire::mesh::{LeaveReason, ListSigner, PeerEntry, PeerId, PeerList};
    use cypherwire::session::PublicKey;
    use cypherwire::session::compat::{self, CompatMessage, CypherKeys};
    use cypherwire::session::fernet::FernetKey;
    use cypherwire::wire::Value;

    let root = workspace_root().join("fuzz/corpus");
    let write = |dir: &str, name: &str, bytes: &[u8]| {
        std::fs::create_dir_all(root.join(dir)).unwrap();
        std::fs::write(root.join(dir).join(name), bytes).unwrap();
    };
    let keys = CypherKeys::same(fuzz::COMPAT_FUZZ_KEY).unwrap();
    let msg = |data: Value| CompatMessage {
        path: "/SEQUENCE".into(),
        operation: "UPDATE".into(),
        data,
        metadata: Value::map([("k", Value::from(1))]),
    };
    let fernet = FernetKey::from_cypher_key(fuzz::COMPAT_FUZZ_KEY).unwrap();
    let one = compat::encode(&msg(Value::from(5)), &keys.encryption, 1_700_000_000).unwrap();
    let text = compat::encode(&msg(Value::from("h\u{e9}llo")), &keys.encryption, 0).unwrap();
    let nested = compat::encode(
        &msg(Value::Array(vec![
            Value::Nil,
            Value::from(1.5),
            Value::map([("a", Value::from(true))]),
        ])),
        &keys.encryption,
        0,
    )
    .unwrap();
    write("compat_decode", "genuine-int", &one);
    write("compat_decode", "genuine-text", &text);
    write("compat_decode", "genuine-nested", &nested);
    write(
        "compat_decode",
        "two-in-a-row",
        &[one.clone(), text].concat(),
    );
    let mut flipped = one.clone();
    flipped[20] ^= 1;
    write("compat_decode", "flipped", &flipped);
    write("compat_decode", "no-nul", &one[..one.len() - 1]);
    let not_object = fernet.encrypt_with_iv(b"[1,2,3]", 0, [3; 16]);
    write(
        "compat_decode",
        "not-an-object",
        &[not_object.as_bytes(), b"\0"].concat(),
    );

    write(
        "fernet_token",
        "genuine",
        fernet
            .encrypt_with_iv(b"hello", 1_700_000_000, [1; 16])
            .as_bytes(),
    );
    write(
        "fernet_token",
        "genuine-empty",
        fernet.encrypt_with_iv(b"", 0, [2; 16]).as_bytes(),
    );
    write(
        "fernet_token",
        "genuine-block",
        fernet.encrypt_with_iv(&[0x61; 16], 0, [4; 16]).as_bytes(),
    );
    let mut bad_mac = fernet.encrypt_with_iv(b"hello", 0, [1; 16]).into_bytes();
    let n = bad_mac.len();
    bad_mac[n - 5] = if bad_mac[n - 5] == b'A' { b'B' } else { b'A' };
    write("fernet_token", "bad-mac", &bad_mac);
    write("fernet_token", "not-base64", b"gAAAAA!!!!");
    write("fernet_token", "empty", b"");

    let mut entries: Vec<PeerEntry> = [([0x11; 32], "127.0.0.1:4702"), ([0x22; 32], "[::1]:40001")]
        .into_iter()
        .map(|(k, a)| PeerEntry::new(PublicKey::from_bytes(k), a.parse().unwrap()))
        .collect();
    entries.sort_by_key(|e| e.id);
    let list = PeerList {
        epoch: 1,
        version: 2,
        entries,
        departed: vec![(PeerId::from_bytes([9; 8]), LeaveReason::Left)],
    };
    let body = list.encode().unwrap();
    let signed = ListSigner::from_seed([7; 32]).sign(&list).unwrap();
    write("mesh_peer_list", "body", &body);
    write(
        "mesh_peer_list",
        "empty-list",
        &PeerList::default().encode().unwrap(),
    );
    write(
        "mesh_peer_list",
        "signed",
        &[&signed.signature[..], &signed.body].concat(),
    );
    write("mesh_peer_list", "truncated", &body[..body.len() - 3]);
    let mut bomb = body[..22].to_vec();
    bomb[20..22].copy_from_slice(&u16::MAX.to_be_bytes());
    write("mesh_peer_list", "count-bomb", &bomb);
    let mut forged = signed.signature.to_vec();
    forged.extend_from_slice(&body);
    forged[0] ^= 1;
    write("mesh_peer_list", "forged-signature", &forged);
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
