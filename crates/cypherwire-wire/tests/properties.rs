//! Property tests: codec round trips for every envelope and for `Value`, and decoding of any
//! frame sequence split at arbitrary points.

#![allow(clippy::unwrap_used, reason = "test code")]

use std::time::Duration;

use bytes::BytesMut;
use cypherwire_wire::{
    Action, Cancel, Close, CloseCode, Codec, Limits, Message, MessageCodec, PayloadCodec, Ping,
    Pong, Push, Request, Response, Resume, StatusCode, Value, Welcome,
};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Small integers, in MessagePack's one-byte forms (fixint, negative fixint).
        (-40i64..140).prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        proptest::collection::vec(any::<u8>(), 0..16).prop_map(Value::bytes),
        // Strings that look like the reserved JSON forms.
        prop_oneof![Just("$bytes"), Just("$map"), Just("$float")].prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((inner.clone(), inner), 0..5).prop_map(Value::Map),
        ]
    })
}

fn arb_message() -> impl Strategy<Value = Message> {
    let s = ".{0,10}";
    prop_oneof![
        (
            any::<u64>(),
            s,
            s,
            arb_value(),
            arb_value(),
            proptest::option::of(0u64..10_000_000)
        )
            .prop_map(|(id, p, o, d, m, dl)| {
                let mut r = Request::new(id, p, o).with_data(d).with_metadata(m);
                if let Some(ms) = dl {
                    r = r.with_deadline(Duration::from_millis(ms));
                }
                r.into()
            }),
        (any::<u64>(), any::<u16>(), s, arb_value(), arb_value()).prop_map(|(id, c, msg, d, m)| {
            let r = if c == 0 {
                Response::ok(id, d)
            } else {
                let mut r = Response::error(id, StatusCode(c), msg);
                r.data = d;
                r
            };
            r.with_metadata(m).into()
        }),
        (s, arb_value(), any::<u64>()).prop_map(|(n, d, t)| Action::new(n, d, t).into()),
        (any::<u64>(), arb_value(), arb_value()).prop_map(|(q, d, m)| {
            let mut p = Push::new(q, d);
            p.metadata = m;
            p.into()
        }),
        any::<u64>().prop_map(|i| Cancel::new(i).into()),
        any::<u64>().prop_map(|n| Ping::new(n).into()),
        any::<u64>().prop_map(|n| Pong::new(n).into()),
        (any::<u16>(), s).prop_map(|(c, r)| Close::new(CloseCode(c), r).into()),
        (any::<[u8; 16]>(), any::<u64>(), any::<bool>())
            .prop_map(|(t, ttl, r)| Welcome::new(t, ttl, r).into()),
        (any::<[u8; 16]>(), any::<u64>()).prop_map(|(t, seq)| Resume::new(t, seq).into()),
    ]
}

fn encode_all(codec: Codec, msgs: &[Message]) -> BytesMut {
    let mut enc = MessageCodec::new(codec, Limits::default());
    let mut buf = BytesMut::new();
    for m in msgs {
        enc.encode(m, &mut buf).unwrap();
    }
    buf
}

fn assert_identical(a: &[Message], b: &[Message]) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        prop_assert!(x.is_identical(y), "{:?} != {:?}", x, y);
    }
    Ok(())
}

/// Both decoded identical values, or both failed with the same error.
fn same_outcome(
    a: cypherwire_wire::Result<Message>,
    b: cypherwire_wire::Result<Message>,
) -> Result<(), TestCaseError> {
    match (&a, &b) {
        (Ok(x), Ok(y)) => prop_assert!(x.is_identical(y), "{:?} != {:?}", x, y),
        (Err(x), Err(y)) => prop_assert_eq!(format!("{x:?}"), format!("{y:?}")),
        _ => prop_assert!(false, "{:?} vs {:?}", a, b),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn value_round_trips_in_both_codecs(v in arb_value()) {
        for &codec in Codec::ALL {
            let mut buf = BytesMut::new();
            codec.encode(&v, &mut buf).unwrap();
            let back: Value = codec.decode(&buf, &Limits::default()).unwrap();
            prop_assert!(back.is_identical(&v), "{:?}: {:?} -> {:?}", codec, v, back);
        }
    }

    #[test]
    fn value_converts_to_and_from_serde_types(v in arb_value()) {
        // Value -> Value through the serde data model is the identity.
        let again = cypherwire_wire::to_value(&v).unwrap();
        prop_assert!(again.is_identical(&v));
    }

    #[test]
    fn every_envelope_round_trips(msg in arb_message()) {
        for &codec in Codec::ALL {
            let mut buf = encode_all(codec, std::slice::from_ref(&msg));
            let back = MessageCodec::new(codec, Limits::default()).decode(&mut buf).unwrap().unwrap();
            prop_assert!(back.is_identical(&msg), "{:?}: {:?} -> {:?}", codec, msg, back);
            prop_assert!(buf.is_empty());
        }
    }

    #[test]
    fn request_and_response_decoding_matches_the_general_path(
        msg in arb_message(),
        edits in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 0..4),
        cut in proptest::option::of(any::<proptest::sample::Index>()),
        depth in 1usize..10,
    ) {
        // MessagePack's `decode_request` / `decode_response` (a one-pass path for the form the
        // encoder writes, the general path for anything else) against the general path alone,
        // on encoded envelopes of every kind, some with bytes changed or cut off, under a
        // depth limit that real values reach.
        let mut buf = BytesMut::new();
        msg.encode(&Codec::MsgPack, &mut buf).unwrap();
        let mut payload = buf[2..].to_vec();
        for (at, byte) in &edits {
            if !payload.is_empty() {
                let i = at.index(payload.len());
                payload[i] = *byte;
            }
        }
        if let Some(cut) = cut {
            payload.truncate(cut.index(payload.len() + 1));
        }
        let limits = Limits::default().with_max_depth(depth).unwrap();
        let codec = cypherwire_wire::MsgPack;
        same_outcome(
            codec.decode_request(&payload, &limits).map(Message::Request),
            codec.decode::<Request>(&payload, &limits).map(Message::Request),
        )?;
        same_outcome(
            codec.decode_response(&payload, &limits).map(Message::Response),
            codec.decode::<Response>(&payload, &limits).map(Message::Response),
        )?;
    }

    #[test]
    fn request_and_response_encoding_matches_the_general_path(msg in arb_message()) {
        // MessagePack's `encode_request` / `encode_response` (written without serde) against
        // `encode` through rmp-serde: the same bytes.
        let codec = cypherwire_wire::MsgPack;
        let (mut direct, mut general) = (BytesMut::new(), BytesMut::new());
        match &msg {
            Message::Request(r) => {
                codec.encode_request(r, &mut direct).unwrap();
                codec.encode(r, &mut general).unwrap();
            }
            Message::Response(r) => {
                codec.encode_response(r, &mut direct).unwrap();
                codec.encode(r, &mut general).unwrap();
            }
            _ => return Ok(()),
        }
        prop_assert_eq!(&direct[..], &general[..]);
    }

    #[test]
    fn approx_size_covers_the_msgpack_envelope(msg in arb_message()) {
        let mut buf = BytesMut::new();
        msg.encode(&Codec::MsgPack, &mut buf).unwrap();
        prop_assert!(
            buf.len() <= msg.approx_size(),
            "{} encoded bytes, approx_size {}: {:?}", buf.len(), msg.approx_size(), msg
        );
    }

    #[test]
    fn any_split_decodes_to_the_same_sequence(
        msgs in proptest::collection::vec(arb_message(), 1..12),
        cuts in proptest::collection::vec(1usize..64, 1..64),
    ) {
        for &codec in Codec::ALL {
            let wire = encode_all(codec, &msgs);
            let mut dec = MessageCodec::new(codec, Limits::default());
            let mut inbox = BytesMut::new();
            let mut out = Vec::new();
            let mut pos = 0;
            let mut i = 0;
            while pos < wire.len() {
                let step = cuts[i % cuts.len()].min(wire.len() - pos);
                i += 1;
                inbox.extend_from_slice(&wire[pos..pos + step]);
                pos += step;
                while let Some(m) = dec.decode(&mut inbox).unwrap() {
                    out.push(m);
                }
            }
            prop_assert!(dec.decode_eof(&mut inbox).unwrap().is_none());
            assert_identical(&out, &msgs)?;
        }
    }

    #[test]
    fn one_byte_at_a_time_decodes_to_the_same_sequence(
        msgs in proptest::collection::vec(arb_message(), 1..6),
    ) {
        for &codec in Codec::ALL {
            let wire = encode_all(codec, &msgs);
            let mut dec = MessageCodec::new(codec, Limits::default());
            let mut inbox = BytesMut::new();
            let mut out = Vec::new();
            for b in wire.iter() {
                inbox.extend_from_slice(std::slice::from_ref(b));
                while let Some(m) = dec.decode(&mut inbox).unwrap() {
                    out.push(m);
                }
            }
            assert_identical(&out, &msgs)?;
        }
    }

    #[test]
    fn over_limit_frames_fail_in_any_split(
        nonces in proptest::collection::vec(any::<u64>(), 0..4),
        extra in 1usize..1000,
        chunk in 1usize..32,
    ) {
        // A frame one or more bytes over the limit, after some valid frames: the valid ones
        // decode, then FrameTooLarge, whatever the chunking.
        let max = 4096;
        let limits = Limits::default().with_max_frame_len(max).unwrap();
        let before: Vec<Message> = nonces.into_iter().map(|n| Ping::new(n).into()).collect();
        let mut wire = encode_all(Codec::MsgPack, &before);
        let over = u32::try_from(max + extra).unwrap();
        wire.extend_from_slice(&over.to_be_bytes());
        wire.extend_from_slice(&[0u8; 64]);
        let mut dec = MessageCodec::new(Codec::MsgPack, limits);
        let mut inbox = BytesMut::new();
        let mut decoded = 0;
        let mut failed = false;
        'feed: for piece in wire.chunks(chunk) {
            inbox.extend_from_slice(piece);
            loop {
                match dec.decode(&mut inbox) {
                    Ok(Some(_)) => decoded += 1,
                    Ok(None) => break,
                    Err(cypherwire_wire::Error::FrameTooLarge { len, max: m }) => {
                        prop_assert_eq!(len, u64::from(over));
                        prop_assert_eq!(m, max);
                        failed = true;
                        break 'feed;
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("unexpected {e:?}"))),
                }
            }
        }
        prop_assert!(failed);
        // The valid frames before it all decoded.
        prop_assert_eq!(decoded, before.len());
    }
}
