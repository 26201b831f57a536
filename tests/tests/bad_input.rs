//! Hostile or broken input at the wire layer: each case is a typed error, in both codecs.

#![allow(clippy::unwrap_used, reason = "test code")]

use bytes::BytesMut;
use cypherwire::wire::{Codec, Error, Limits, Message, MessageCodec, PayloadCodec, Value};
use tokio_util::codec::Decoder;

fn decode_stream(codec: Codec, bytes: &[u8]) -> Result<Vec<Message>, Error> {
    let mut dec = MessageCodec::new(codec, Limits::default());
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(m) = dec.decode(&mut buf)? {
        out.push(m);
    }
    if let Some(m) = dec.decode_eof(&mut buf)? {
        out.push(m);
    }
    Ok(out)
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut v = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

#[test]
fn truncated_frames() {
    for &codec in Codec::ALL {
        let good = framed(&[0x01, 0x06, 0x91, 0x01]);
        for cut in 1..good.len() {
            let err = decode_stream(codec, &good[..cut]).unwrap_err();
            assert!(matches!(err, Error::Truncated { .. }), "cut {cut}: {err:?}");
        }
    }
}

#[test]
fn zero_length_and_huge_length_prefixes() {
    for &codec in Codec::ALL {
        assert!(matches!(
            decode_stream(codec, &[0, 0, 0, 0]),
            Err(Error::EmptyFrame)
        ));
        assert!(matches!(
            decode_stream(codec, &[0xff, 0xff, 0xff, 0xff]),
            Err(Error::FrameTooLarge {
                len: 0xffff_ffff,
                max: 1_048_576
            })
        ));
        assert!(matches!(
            decode_stream(codec, &[0x00, 0x10, 0x00, 0x01]),
            Err(Error::FrameTooLarge { len: 1_048_577, .. })
        ));
    }
}

#[test]
fn garbage_bodies() {
    // Deterministic pseudo-random garbage: must never panic; each body is an error or a
    // message that happens to be valid.
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    for &codec in Codec::ALL {
        let mut errors = 0;
        for len in 1..300usize {
            let mut body = vec![0x01, (len % 9) as u8];
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                body.push(x as u8);
            }
            if decode_stream(codec, &framed(&body)).is_err() {
                errors += 1;
            }
        }
        assert!(
            errors > 250,
            "{codec:?}: only {errors} of 299 garbage bodies were rejected"
        );
    }
}

#[test]
fn msgpack_length_bombs() {
    let l = Limits::default();
    for (body, what) in [
        (
            &[0x01, 0x06, 0x91, 0xdb, 0xff, 0xff, 0xff, 0xff, b'x'][..],
            "str32",
        ),
        (
            &[0x01, 0x06, 0x91, 0xc6, 0xff, 0xff, 0xff, 0xff, b'x'][..],
            "bin32",
        ),
        (
            &[0x01, 0x06, 0xdd, 0xff, 0xff, 0xff, 0xff, 0x01][..],
            "array32",
        ),
        (
            &[0x01, 0x06, 0xdf, 0xff, 0xff, 0xff, 0xff, 0x01][..],
            "map32",
        ),
    ] {
        let err = Message::decode(&Codec::MsgPack, body, &l).unwrap_err();
        assert!(
            matches!(
                err,
                Error::LengthExceedsInput {
                    declared: 0xffff_ffff,
                    ..
                }
            ),
            "{what}: {err:?}"
        );
    }
}

#[test]
fn nesting_bombs_hit_the_depth_limit() {
    let l = Limits::default();
    let deep_mp = [
        vec![0x01, 0x03, 0x93, 0xa1, b'x'],
        vec![0x91; 100_000],
        vec![0x01, 0x00],
    ]
    .concat();
    assert!(matches!(
        Message::decode(&Codec::MsgPack, &deep_mp, &l),
        Err(Error::DepthExceeded { max: 32 })
    ));
    let mut deep_json = br#"{"name":"x","data":"#.to_vec();
    deep_json.extend(std::iter::repeat_n(b'[', 1_000_000));
    let body = [&[0x01, 0x03][..], &deep_json].concat();
    assert!(matches!(
        Message::decode(&Codec::Json, &body, &l),
        Err(Error::DepthExceeded { max: 32 })
    ));
    // Exactly at the limit is fine: Value nested 31 deep inside the envelope (depth 1 + 31).
    let mut v = Value::Nil;
    for _ in 0..31 {
        v = Value::Array(vec![v]);
    }
    for &codec in Codec::ALL {
        let mut buf = BytesMut::new();
        codec.encode(&v, &mut buf).unwrap();
        assert!(
            codec
                .decode::<Value>(&buf, &l.with_max_depth(31).unwrap())
                .is_ok()
        );
        assert!(matches!(
            codec.decode::<Value>(&buf, &l.with_max_depth(30).unwrap()),
            Err(Error::DepthExceeded { max: 30 })
        ));
    }
}

#[test]
fn invalid_utf8_in_strings() {
    let l = Limits::default();
    // Action { name: <0xff 0xfe>, ... }
    let mp = [0x01, 0x03, 0x93, 0xa2, 0xff, 0xfe, 0xc0, 0x00];
    assert!(matches!(
        Message::decode(&Codec::MsgPack, &mp, &l),
        Err(Error::InvalidUtf8)
    ));
    let json = b"\x01\x03{\"name\":\"\xff\xfe\",\"data\":null,\"created_at_ms\":0}";
    assert!(matches!(
        Message::decode(&Codec::Json, json, &l),
        Err(Error::InvalidUtf8)
    ));
    // Invalid UTF-8 inside a Value string (not a typed field) too.
    assert!(matches!(
        Codec::MsgPack.decode::<Value>(&[0x91, 0xa1, 0x80], &l),
        Err(Error::InvalidUtf8)
    ));
}

#[test]
fn other_bodies_are_typed_errors() {
    let l = Limits::default();
    for &codec in Codec::ALL {
        assert!(matches!(
            Message::decode(&codec, &[7, 6], &l),
            Err(Error::UnsupportedVersion(7))
        ));
        assert!(matches!(
            Message::decode(&codec, &[1, 0xee], &l),
            Err(Error::UnknownKind(0xee))
        ));
        assert!(Message::decode(&codec, &[1, 6], &l).is_err());
    }
    // Trailing bytes after a complete MessagePack payload, and an extension type.
    assert!(matches!(
        Message::decode(&Codec::MsgPack, &[1, 6, 0x91, 0x01, 0x00], &l),
        Err(Error::TrailingBytes { count: 1 })
    ));
    assert!(matches!(
        Message::decode(&Codec::MsgPack, &[1, 6, 0x91, 0xd4, 0x00, 0x00], &l),
        Err(Error::Unsupported(_))
    ));
    // JSON trailing garbage and wrong shapes.
    assert!(matches!(
        Message::decode(&Codec::Json, b"\x01\x06{\"nonce\":1}x", &l),
        Err(Error::Decode { .. })
    ));
    assert!(matches!(
        Message::decode(&Codec::Json, b"\x01\x06{\"nonce\":\"1\"}", &l),
        Err(Error::Decode { .. })
    ));
}
