//! Fuzz-target bodies. Each panics only on a real finding (a violated invariant); any input
//! that is merely invalid must come back as a typed error.

use bytes::BytesMut;
use cypherwire_wire::{Codec, Limits, Message, MessageCodec, PayloadCodec, Value};
use tokio_util::codec::{Decoder, Encoder};

/// Target `frame_envelope`: frame + envelope decoding of arbitrary bytes.
///
/// The first input byte picks the codec (bit 0), a small frame limit (bit 1) and the chunk size
/// the rest is fed in (bits 2..8, 1 to 64 bytes). Every message that decodes must re-encode and
/// decode to an identical message (the round-trip invariant), and decoding must stop at the
/// first error.
pub fn frame_envelope(data: &[u8]) {
    let Some((&ctl, input)) = data.split_first() else {
        return;
    };
    let codec = if ctl & 1 == 0 {
        Codec::MsgPack
    } else {
        Codec::Json
    };
    let limits = if ctl & 2 == 0 {
        Limits::default()
    } else {
        Limits::default()
            .with_max_frame_len(256)
            .unwrap_or_default()
    };
    let chunk = usize::from(ctl >> 2) + 1;
    let mut frames = MessageCodec::new(codec, limits);
    let mut buf = BytesMut::new();
    for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match frames.decode(&mut buf) {
                Ok(Some(msg)) => check_round_trip(codec, &msg),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    // End of input: a partial frame must be reported, never silently dropped.
    match frames.decode_eof(&mut buf) {
        Ok(Some(msg)) => check_round_trip(codec, &msg),
        Ok(None) => assert!(buf.is_empty(), "decode_eof left bytes without an error"),
        Err(_) => {}
    }
}

/// Target `payload_value`: a bare payload decoded as a [`Value`] in both codecs; whatever
/// decodes must round-trip identically.
pub fn payload_value(data: &[u8]) {
    let limits = Limits::default();
    for codec in [Codec::MsgPack, Codec::Json] {
        if let Ok(v) = codec.decode::<Value>(data, &limits) {
            let mut out = BytesMut::new();
            codec
                .encode(&v, &mut out)
                .unwrap_or_else(|e| panic!("{codec:?}: decoded value does not re-encode: {e}"));
            let back: Value = codec
                .decode(&out, &limits)
                .unwrap_or_else(|e| panic!("{codec:?}: re-encoded value does not decode: {e}"));
            assert!(
                back.is_identical(&v),
                "{codec:?}: round trip changed {v:?} into {back:?}"
            );
        }
    }
}

fn check_round_trip(codec: Codec, msg: &Message) {
    let mut frames = MessageCodec::new(codec, Limits::default());
    let mut out = BytesMut::new();
    frames
        .encode(msg, &mut out)
        .unwrap_or_else(|e| panic!("decoded message does not re-encode: {e}"));
    let back = frames
        .decode(&mut out)
        .unwrap_or_else(|e| panic!("re-encoded message does not decode: {e}"))
        .unwrap_or_else(|| panic!("re-encoded frame incomplete"));
    assert!(
        back.is_identical(msg),
        "round trip changed {msg:?} into {back:?}"
    );
}

/// Splits fuzz input into length-prefixed chunks (one byte of length each).
fn messages(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some((&len, rest)) = data.split_first() {
        let n = usize::from(len).min(rest.len());
        out.push(&rest[..n]);
        data = &rest[n..];
    }
    out
}

mod compat;
mod server;
pub use compat::compat_listener;
pub use server::server_connection;

/// Target `client_resume`: the client's connection core (`cypherwire_client::fuzzing`).
pub fn client_resume(data: &[u8]) {
    cypherwire_client::fuzzing::client_resume(data);
}

/// Target `cluster_inbound`: a node's subscription checks (`cypherwire_cluster::fuzzing`).
pub fn cluster_inbound(data: &[u8]) {
    cypherwire_cluster::fuzzing::cluster_inbound(data);
}

mod session_targets {
    //! Handshake and record targets.

    use super::messages;
    use std::sync::LazyLock;

    use bytes::BytesMut;
    use cypherwire_session::handshake::HandshakeOptions;
    use cypherwire_session::record::Opened;
    use cypherwire_session::test_util::fixed_key_pair;
    use cypherwire_session::{
        Argon2Cost, CipherSuite, ClientAuth, IdentityKey, Initiator, Password, PasswordVerifier,
        PeerTrust, Psk, Responder, ServerAuth, SessionConfig, Step,
    };
    use cypherwire_wire::FrameCodec;
    use tokio_util::codec::Decoder;

    /// The most argon2 memory the fuzzed initiator accepts (KiB): the lowest cap the
    /// configuration allows above the fixture's own cost, so a fuzzed challenge costs
    /// microseconds instead of the default cap's 64 MiB.
    const FUZZ_ARGON2_KIB: u32 = 64;

    struct Fixtures {
        psk: Psk,
        id_client: IdentityKey,
        id_server: IdentityKey,
        verifier: PasswordVerifier,
        config: SessionConfig,
    }

    static FIX: LazyLock<Fixtures> = LazyLock::new(|| Fixtures {
        psk: Psk::from_bytes([0x42; 32]),
        id_client: IdentityKey::from_private([0x33; 32]).unwrap_or_else(|e| panic!("{e}")),
        id_server: IdentityKey::from_private([0x44; 32]).unwrap_or_else(|e| panic!("{e}")),
        // The cheapest cost argon2 allows: fuzzing must be fast.
        verifier: PasswordVerifier::create("fuzz", Argon2Cost::new(8, 1, 1))
            .unwrap_or_else(|e| panic!("{e}")),
        config: SessionConfig::builder()
            .max_argon2_kib(FUZZ_ARGON2_KIB)
            .build()
            .unwrap_or_else(|e| panic!("{e}")),
    });

    fn server_auth(mode: u8) -> ServerAuth {
        match mode % 3 {
            0 => ServerAuth::Psk(FIX.psk.clone()),
            1 => ServerAuth::Identity(FIX.id_server.clone(), PeerTrust::AnyKey),
            _ => ServerAuth::Password(FIX.verifier.clone()),
        }
    }

    fn client_auth(mode: u8) -> ClientAuth {
        match mode % 3 {
            0 => ClientAuth::Psk(FIX.psk.clone()),
            1 => ClientAuth::Identity(FIX.id_client.clone(), PeerTrust::AnyKey),
            _ => ClientAuth::Password(Password::new("fuzz")),
        }
    }

    /// Fixed ephemerals and SPAKE2 seeds (the vectors' values), so a transcript replays.
    fn fixed(initiator: bool) -> HandshakeOptions {
        let mut o = HandshakeOptions::default();
        o.fixed_ephemeral = Some([if initiator { 0x11 } else { 0x22 }; 32]);
        o.spake_seed = Some([if initiator { 0xee } else { 0xdd }; 32]);
        o
    }

    /// The handshake messages one side sent, in order.
    type Messages = Vec<Vec<u8>>;

    /// One genuine transcript per mode under [`fixed`] options: (initiator's, responder's).
    static GENUINE: LazyLock<Vec<(Messages, Messages)>> = LazyLock::new(|| {
        (0..3)
            .map(|mode| {
                let h = crate::handshake::run(
                    &client_auth(mode),
                    &server_auth(mode),
                    &FIX.config,
                    &FIX.config,
                    (fixed(true), fixed(false)),
                )
                .unwrap_or_else(|e| panic!("genuine handshake failed: {e:?}"));
                (h.to_server, h.to_client)
            })
            .collect()
    });

    /// `genuine` changed by `ops`, four bytes each: `[message | 0x80 to append, position (u16
    /// BE), byte]`. Without the append bit, a non-zero byte is XORed in at the position and a
    /// zero byte truncates the message there; every operation changes its message, but several
    /// may cancel out.
    fn tampered(genuine: &[Vec<u8>], ops: &[u8]) -> Vec<Vec<u8>> {
        let mut msgs = genuine.to_vec();
        for op in ops.chunks_exact(4) {
            let m = &mut msgs[usize::from(op[0] & 0x7f) % genuine.len()];
            let pos = usize::from(u16::from_be_bytes([op[1], op[2]]));
            if op[0] & 0x80 != 0 {
                m.push(op[3]);
            } else if !m.is_empty() {
                let at = pos % m.len();
                if op[3] == 0 {
                    m.truncate(at);
                } else {
                    m[at] ^= op[3];
                }
            }
        }
        msgs
    }

    /// Feeds `msgs` to one side of a handshake, one message per step: true if it completed.
    fn completes<S, E, M: AsRef<[u8]>>(
        mut state: S,
        msgs: &[M],
        handle: impl Fn(S, &[u8]) -> Result<Step<S>, E>,
    ) -> bool {
        for msg in msgs {
            match handle(state, msg.as_ref()) {
                Ok(Step::Continue { state: next, .. }) => state = next,
                Ok(Step::Done { .. }) => return true,
                Err(_) => return false,
            }
        }
        false
    }

    /// Runs a handshake side on `genuine` tampered with by `ops`: it must complete exactly
    /// when the messages are still the genuine ones.
    fn caught(genuine: &[Vec<u8>], ops: &[u8], run: impl FnOnce(&[Vec<u8>]) -> bool) {
        let msgs = tampered(genuine, ops);
        let done = run(&msgs);
        assert_eq!(
            done,
            msgs == genuine,
            "fed {msgs:02x?} instead of {genuine:02x?}: completed={done}"
        );
    }

    /// Target `handshake_responder`. First byte: the mode (`% 3`), and bit 7 picks how the rest
    /// is read. Bit 7 clear: the rest is length-prefixed messages fed to a responder, which
    /// may fail but never panic. Bit 7 set: the rest is tampering operations on a genuine
    /// initiator transcript (see `tampered`) fed to a responder with the transcript's fixed
    /// options: it must complete exactly when the messages are the genuine ones, so every
    /// change to any byte the initiator sends is caught. This reaches the authenticated
    /// handshake steps that random bytes cannot.
    pub fn handshake_responder(data: &[u8]) {
        let Some((&ctl, rest)) = data.split_first() else {
            return;
        };
        let mode = (ctl & 0x7f) % 3;
        if ctl & 0x80 == 0 {
            let state = Responder::new(&server_auth(mode), &FIX.config);
            // Random messages: any outcome, but no panic.
            completes(state, &messages(rest), |s, m| s.handle(m, crate::epoch()));
            return;
        }
        let state = Responder::new_with(&server_auth(mode), &FIX.config, fixed(false));
        caught(&GENUINE[usize::from(mode)].0, rest, |msgs| {
            completes(state, msgs, |s, m| s.handle(m, crate::epoch()))
        });
    }

    /// Target `handshake_initiator`: as [`handshake_responder`] for the initiator, fed the
    /// responder's messages (raw, or a genuine responder transcript tampered with). Its
    /// argon2 cap is `FUZZ_ARGON2_KIB` (64 KiB), so fuzzed password challenges stay cheap.
    pub fn handshake_initiator(data: &[u8]) {
        let Some((&ctl, rest)) = data.split_first() else {
            return;
        };
        let mode = (ctl & 0x7f) % 3;
        if ctl & 0x80 == 0 {
            let Ok((state, _hello)) = Initiator::start(&client_auth(mode), &FIX.config) else {
                return;
            };
            completes(state, &messages(rest), |s, m| s.handle(m, crate::epoch()));
            return;
        }
        let Ok((state, _hello)) =
            Initiator::start_with(&client_auth(mode), &FIX.config, fixed(true))
        else {
            panic!("the fixed initiator did not start");
        };
        caught(&GENUINE[usize::from(mode)].1, rest, |msgs| {
            completes(state, msgs, |s, m| s.handle(m, crate::epoch()))
        });
    }

    /// Target `record_open`: records under a fixed key (no handshake per input, so it runs at
    /// the record layer's speed). First byte: bit 0 picks the branch, bits 1–2 the suite
    /// (`% 3`), bit 3 a key update after the first message. Even: the rest is raw frames and
    /// nothing may open. Odd: the second byte and the first pick a bit to flip, the rest
    /// becomes genuine messages, sealed; the flipped record must be refused and every record
    /// before it must open to exactly what was sealed.
    pub fn record_open(data: &[u8]) {
        let Some((&ctl, rest)) = data.split_first() else {
            return;
        };
        let suite = CipherSuite::ALL[usize::from((ctl >> 1) & 3) % 3];
        let now = crate::epoch();
        let (mut sealer, mut opener) = fixed_key_pair(suite, b"fuzz record key", &FIX.config, now);
        let mut frames = FrameCodec::new(FIX.config.limits());
        if ctl % 2 == 0 {
            let mut buf = BytesMut::from(rest);
            while let Ok(Some(frame)) = frames.decode(&mut buf) {
                if let Ok(Opened::Message(m)) = opener.open(frame) {
                    panic!("a forged record opened: {m:?}");
                }
            }
            return;
        }
        let Some((&f, rest)) = rest.split_first() else {
            return;
        };
        let msgs = messages(rest);
        let mut wire = BytesMut::new();
        for (i, m) in msgs.iter().enumerate() {
            if sealer.seal_message(m, now, &mut wire).is_err() {
                return;
            }
            if i == 0 && ctl & 8 != 0 && sealer.seal_key_update(now, &mut wire).is_err() {
                return;
            }
        }
        if wire.is_empty() {
            return;
        }
        let flip = (usize::from(f) << 4 | usize::from(ctl >> 4)) * 7919 % (wire.len() * 8);
        wire[flip / 8] ^= 1 << (flip % 8);
        let mut delivered = 0;
        loop {
            match frames.decode(&mut wire) {
                Ok(Some(frame)) => match opener.open(frame) {
                    Ok(Opened::Message(m)) => {
                        assert_eq!(&m[..], msgs[delivered], "an altered message was delivered");
                        delivered += 1;
                    }
                    Ok(_) => {}
                    Err(_) => return,
                },
                // A flipped length prefix: framing fails or waits; either way nothing more.
                Ok(None) | Err(_) => return,
            }
        }
    }
}

pub use session_targets::{handshake_initiator, handshake_responder, record_open};

/// The fixed key of the compat targets (the CYPHER_PROTOCOL README's key string).
pub const COMPAT_FUZZ_KEY: &str = "2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U";

/// Target `compat_decode`: a byte stream through the CYPHER_PROTOCOL compat framer (limit
/// 4 KiB) and decoder, under [`COMPAT_FUZZ_KEY`]. Whatever decodes must re-encode and decode
/// to the same message; the framer must refuse a message over its limit.
pub fn compat_decode(data: &[u8]) {
    use cypherwire_session::compat::{self, CypherKeys, NulFramer};
    let Ok(keys) = CypherKeys::same(COMPAT_FUZZ_KEY) else {
        return;
    };
    let mut framer = NulFramer::new(4096);
    for piece in data.chunks(97) {
        framer.push(piece);
        loop {
            match framer.next_message() {
                Ok(Some(token)) => {
                    assert!(token.len() <= 4096, "framer passed an oversized message");
                    if let Ok(msg) = compat::decode(&token, &keys.decryption) {
                        let wire = compat::encode(&msg, &keys.decryption, 0)
                            .unwrap_or_else(|e| panic!("decoded message does not re-encode: {e}"));
                        let back = compat::decode(&wire[..wire.len() - 1], &keys.decryption)
                            .unwrap_or_else(|e| panic!("re-encoded message does not decode: {e}"));
                        assert_eq!(
                            comparable(&back),
                            comparable(&msg),
                            "compat round trip changed the message"
                        );
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

/// NaN never equals itself; compare messages through their JSON text.
fn comparable(m: &cypherwire_session::compat::CompatMessage) -> String {
    use cypherwire_session::compat::value_to_json;
    format!(
        "{}|{}|{}|{}",
        m.path,
        m.operation,
        value_to_json(&m.data),
        value_to_json(&m.metadata)
    )
}

/// Target `fernet_token`: arbitrary bytes as a Fernet token under [`COMPAT_FUZZ_KEY`]; a token
/// that opens must re-seal (same timestamp and IV) to exactly the same text.
pub fn fernet_token(data: &[u8]) {
    use cypherwire_session::fernet::FernetKey;
    let Ok(key) = FernetKey::from_cypher_key(COMPAT_FUZZ_KEY) else {
        return;
    };
    let Ok(plain) = key.decrypt(data, 0, None) else {
        return;
    };
    // An authentic token: 0x80 | ts | iv | ct | mac, url-safe base64.
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(data)
        .unwrap_or_else(|e| panic!("an opened token is not base64: {e}"));
    let ts = u64::from_be_bytes(raw[1..9].try_into().unwrap_or_default());
    let iv: [u8; 16] = raw[9..25].try_into().unwrap_or_default();
    let again = key.encrypt_with_iv(&plain, ts, iv);
    assert_eq!(
        again.as_bytes(),
        data,
        "an opened token does not re-seal identically"
    );
}

/// Target `mesh_peer_list`: arbitrary bytes as a peer-list body (within the default caps) and
/// as a signed list (first 64 bytes the signature) under a fixed signer. A body that parses
/// must re-encode to the same bytes (the layout is canonical); a signed list that verifies
/// must be exactly its body's parse.
pub fn mesh_peer_list(data: &[u8]) {
    use cypherwire_mesh::{ListLimits, ListSigner, PeerList, SignedPeerList};
    let limits = ListLimits::default();
    if let Ok(list) = PeerList::decode(data, limits) {
        let again = list
            .encode()
            .unwrap_or_else(|e| panic!("parsed list does not encode: {e}"));
        assert_eq!(again, data, "peer-list layout is not canonical");
    }
    if data.len() >= 64 {
        let signer = ListSigner::from_seed([7; 32]);
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&data[..64]);
        let signed = SignedPeerList {
            body: data[64..].to_vec(),
            signature,
        };
        if let Ok(list) = signed.verify(&signer.verifier(), limits) {
            assert_eq!(
                PeerList::decode(&signed.body, limits).ok(),
                Some(list),
                "verification returned a list other than its body"
            );
        }
    }
}
