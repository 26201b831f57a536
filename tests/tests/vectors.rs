//! Wire test vectors (`docs/test-vectors/wire-envelopes.json`), checked in both directions:
//! every message encodes to exactly the recorded frame in each codec, and every recorded frame
//! decodes to exactly the message.
//!
//! `CYPHERWIRE_BLESS=1 cargo test -p cypherwire-tests --test vectors` rewrites the vector file
//! and the fuzz seed corpora from the cases below; review the diff before committing it.

#![allow(clippy::unwrap_used, reason = "test code")]

use std::fmt::Write as _;
use std::time::Duration;

use bytes::BytesMut;
use cypherwire::wire::{
    Action, Cancel, Close, CloseCode, Codec, CodecId, Limits, Message, MessageCodec, PayloadCodec,
    Ping, Pong, Push, Request, Response, Resume, StatusCode, Value, Welcome,
};
use cypherwire_test_support::workspace_root;
use serde::{Deserialize, Serialize};
use tokio_util::codec::{Decoder, Encoder};

const FILE: &str = "docs/test-vectors/wire-envelopes.json";

#[derive(Serialize, Deserialize)]
struct VectorFile {
    description: String,
    cases: Vec<Case>,
}

#[derive(Serialize, Deserialize)]
struct Case {
    name: String,
    message: Message,
    /// Whole frames (4-byte length + envelope), lower-case hex.
    msgpack: String,
    json: String,
}

fn cases() -> Vec<(&'static str, Message)> {
    vec![
        ("ping", Ping::new(42).into()),
        ("pong-max-nonce", Pong::new(u64::MAX).into()),
        (
            "request-cypher-sequence-update",
            Request::new(1, "/SEQUENCE", "UPDATE")
                .with_data(Value::from(vec![1, 2, 3]))
                .with_metadata(Value::map([("USER", "ada")]))
                .into(),
        ),
        (
            "request-deadline-nil-data",
            Request::new(7, "/NUMBER", "READ")
                .with_deadline(Duration::from_millis(1500))
                .into(),
        ),
        ("response-ok", Response::ok(1, "UPDATED").into()),
        (
            "response-not-found",
            Response::error(9, StatusCode::NOT_FOUND, "no route").into(),
        ),
        (
            "action-chat",
            Action::new("chat", Value::from("hello"), 1_700_000_000_123).into(),
        ),
        (
            "push-every-value-type",
            Push::new(
                3,
                Value::from(vec![
                    Value::Nil,
                    Value::from(true),
                    Value::from(-5),
                    Value::from(u64::MAX),
                    Value::from(0.5),
                    Value::from(f64::NAN),
                    Value::from(f64::NEG_INFINITY),
                    Value::from("ünïcode"),
                    Value::bytes(*b"\x00\xff"),
                    Value::map([(1, "int key")]),
                    Value::map([("$bytes", "not bytes")]),
                ]),
            )
            .into(),
        ),
        ("cancel", Cancel::new(5).into()),
        (
            "close-going-away",
            Close::new(CloseCode::GOING_AWAY, "shutdown").into(),
        ),
        ("welcome", Welcome::new([0x11; 16], 120_000, false).into()),
        ("resume", Resume::new([0x22; 16], 7).into()),
    ]
}

fn to_hex(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

fn from_hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn frame(codec: Codec, msg: &Message) -> Vec<u8> {
    let mut buf = BytesMut::new();
    MessageCodec::new(codec, Limits::default())
        .encode(msg, &mut buf)
        .unwrap();
    buf.to_vec()
}

#[test]
fn wire_vectors_match_in_both_directions() {
    let path = workspace_root().join(FILE);
    if std::env::var_os("CYPHERWIRE_BLESS").is_some() {
        bless(&path);
    }
    let file: VectorFile = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert!(file.cases.len() >= 10);
    for case in &file.cases {
        for (codec, hex) in [(Codec::MsgPack, &case.msgpack), (Codec::Json, &case.json)] {
            let expected = from_hex(hex);
            assert_eq!(
                to_hex(&frame(codec, &case.message)),
                *hex,
                "{}: {codec:?} encoding differs from the vector",
                case.name
            );
            let mut buf = BytesMut::from(&expected[..]);
            let decoded = MessageCodec::new(codec, Limits::default())
                .decode(&mut buf)
                .unwrap()
                .unwrap();
            assert!(buf.is_empty());
            assert!(
                decoded.is_identical(&case.message),
                "{}: {codec:?} vector decodes to {decoded:?}",
                case.name
            );
        }
    }
}

#[test]
fn codecs_agree_on_every_message_type() {
    // A message decoded from its MessagePack frame and from its JSON frame is the same message.
    for (name, msg) in cases() {
        let mut a = BytesMut::from(&frame(Codec::MsgPack, &msg)[..]);
        let mut b = BytesMut::from(&frame(Codec::Json, &msg)[..]);
        let da = MessageCodec::new(Codec::MsgPack, Limits::default())
            .decode(&mut a)
            .unwrap();
        let db = MessageCodec::new(Codec::Json, Limits::default())
            .decode(&mut b)
            .unwrap();
        assert!(da.unwrap().is_identical(&db.unwrap()), "{name}");
    }
}

fn bless(path: &std::path::Path) {
    let file = VectorFile {
        description: "cypherwire wire-layer vectors (docs/protocol.md §2, §4): each message as a \
                      whole frame in each payload codec, hex. The `message` field is the \
                      externally tagged JSON description of the envelope; Value uses the §4.3 \
                      JSON forms."
            .into(),
        cases: cases()
            .into_iter()
            .map(|(name, message)| Case {
                name: name.into(),
                msgpack: to_hex(&frame(Codec::MsgPack, &message)),
                json: to_hex(&frame(Codec::Json, &message)),
                message,
            })
            .collect(),
    };
    let mut text = serde_json::to_string_pretty(&file).unwrap();
    text.push('\n');
    std::fs::write(path, text).unwrap();

    // Fuzz seeds: each frame under several control bytes, plus bare payloads.
    let root = workspace_root().join("fuzz/corpus");
    let fe = root.join("frame_envelope");
    let pv = root.join("payload_value");
    std::fs::create_dir_all(&fe).unwrap();
    std::fs::create_dir_all(&pv).unwrap();
    for (i, (name, msg)) in cases().into_iter().enumerate() {
        for &codec in Codec::ALL {
            let json_bit = u8::from(codec.id() == CodecId::Json);
            let f = frame(codec, &msg);
            for (tag, ctl) in [
                ("whole", 0xfc | json_bit),
                ("bytewise", json_bit),
                ("small", 2 | json_bit),
            ] {
                let seed = [&[ctl][..], &f].concat();
                std::fs::write(fe.join(format!("{i:02}-{name}-{codec:?}-{tag}")), seed).unwrap();
            }
            let mut payload = BytesMut::new();
            codec.encode(&msg, &mut payload).unwrap();
            std::fs::write(pv.join(format!("{i:02}-{name}-{codec:?}")), &payload).unwrap();
        }
    }
}
