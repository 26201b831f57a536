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

mod session_targets {
    //! Handshake and record targets.

    use std::sync::LazyLock;

    use bytes::BytesMut;
    use cypherwire_session::record::Opened;
    use cypherwire_session::{
        Argon2Cost, ClientAuth, Established, IdentityKey, Initiator, Password, PasswordVerifier,
        PeerTrust, Psk, Responder, ServerAuth, SessionConfig, Step,
    };
    use cypherwire_wire::{FrameCodec, Limits};
    use tokio_util::codec::Decoder;

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
        config: SessionConfig::default(),
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

    /// Target `handshake_responder`: a responder in the mode picked by the first byte is fed
    /// the following messages. It may fail, never panic.
    pub fn handshake_responder(data: &[u8]) {
        let Some((&mode, rest)) = data.split_first() else {
            return;
        };
        let mut state = Responder::new(&server_auth(mode), &FIX.config);
        for msg in messages(rest) {
            match state.handle(msg, crate::epoch()) {
                Ok(Step::Continue { state: next, .. }) => state = next,
                Ok(Step::Done { .. }) | Err(_) => return,
            }
        }
    }

    /// Target `handshake_initiator`: an initiator in the mode picked by the first byte is fed
    /// the following messages as the responder's answers.
    pub fn handshake_initiator(data: &[u8]) {
        let Some((&mode, rest)) = data.split_first() else {
            return;
        };
        let Ok((mut state, _hello)) = Initiator::start(&client_auth(mode), &FIX.config) else {
            return;
        };
        for msg in messages(rest) {
            match state.handle(msg, crate::epoch()) {
                Ok(Step::Continue { state: next, .. }) => state = next,
                Ok(Step::Done { .. }) | Err(_) => return,
            }
        }
    }

    fn pair() -> Option<(Established, Established)> {
        let cfg = &FIX.config;
        let h = crate::handshake::run(
            &client_auth(0),
            &server_auth(0),
            cfg,
            cfg,
            Default::default(),
        )
        .ok()?;
        Some((h.client, h.server))
    }

    /// Target `record_open`: records for a real session. With the first byte even, the rest
    /// is fed as raw frames: nothing may open. With it odd, the rest becomes genuine messages,
    /// sealed, with one bit flipped at a position chosen by the input: the flipped record must
    /// be refused and every record before it must open to exactly what was sealed.
    pub fn record_open(data: &[u8]) {
        let Some((&ctl, rest)) = data.split_first() else {
            return;
        };
        let Some((mut client, mut server)) = pair() else {
            panic!("handshake between fixed credentials failed");
        };
        let mut frames = FrameCodec::new(Limits::default());
        if ctl % 2 == 0 {
            let mut buf = BytesMut::from(rest);
            while let Ok(Some(frame)) = frames.decode(&mut buf) {
                if let Ok(Opened::Message(m)) = server.opener.open(frame) {
                    panic!("a forged record opened: {m:?}");
                }
            }
            return;
        }
        let msgs = messages(rest);
        let mut wire = BytesMut::new();
        for m in &msgs {
            if client
                .sealer
                .seal_message(m, crate::epoch(), &mut wire)
                .is_err()
            {
                return;
            }
        }
        if wire.is_empty() {
            return;
        }
        let flip = usize::from(ctl >> 1) * 7919 % (wire.len() * 8);
        wire[flip / 8] ^= 1 << (flip % 8);
        let mut delivered = 0;
        loop {
            match frames.decode(&mut wire) {
                Ok(Some(frame)) => match server.opener.open(frame) {
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
