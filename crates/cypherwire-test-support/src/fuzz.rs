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
