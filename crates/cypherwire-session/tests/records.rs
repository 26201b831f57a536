//! Record-layer and handshake behaviour, sans-IO, for every cipher suite.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "test code"
)]

use std::time::{Duration, Instant};

use bytes::BytesMut;
use cypherwire_session::record::Opened;
use cypherwire_session::{
    CipherSuite, ClientAuth, Error, Established, HandshakeFailure, Initiator, Psk, RekeyPolicy,
    Responder, ServerAuth, SessionConfig, Step,
};
use cypherwire_wire::{CodecId, FrameCodec, Limits};
use tokio_util::codec::Decoder;

fn psk() -> Psk {
    Psk::from_bytes([7; 32])
}

fn start(key: &Psk, cfg: &SessionConfig) -> Result<(Initiator, Vec<u8>), Error> {
    Initiator::start(&ClientAuth::Psk(key.clone()), cfg)
}

fn respond(key: &Psk, cfg: &SessionConfig, hello: &[u8]) -> Result<(Established, Vec<u8>), Error> {
    match Responder::new(&ServerAuth::Psk(key.clone()), cfg).handle(hello, Instant::now())? {
        Step::Done {
            established,
            send: Some(reply),
        } => Ok((*established, reply)),
        other => panic!("PSK responder should finish in one step: {other:?}"),
    }
}

fn finish(init: Initiator, reply: &[u8]) -> Result<Established, Error> {
    match init.handle(reply, Instant::now())? {
        Step::Done {
            established,
            send: None,
        } => Ok(*established),
        other => panic!("PSK initiator should finish in one step: {other:?}"),
    }
}

fn config(suite: CipherSuite) -> SessionConfig {
    SessionConfig::builder().suites([suite]).build().unwrap()
}

fn pair_with(cfg: &SessionConfig) -> (Established, Established) {
    let (init, hello) = start(&psk(), cfg).unwrap();
    let (server, reply) = respond(&psk(), cfg, &hello).unwrap();
    let client = finish(init, &reply).unwrap();
    (client, server)
}

fn pair(suite: CipherSuite) -> (Established, Established) {
    pair_with(&config(suite))
}

/// Splits a byte stream into frame bodies (records).
fn records(mut wire: BytesMut) -> Vec<BytesMut> {
    let mut frames = FrameCodec::new(Limits::default());
    let mut out = Vec::new();
    while let Some(f) = frames.decode(&mut wire).unwrap() {
        out.push(f);
    }
    assert!(wire.is_empty());
    out
}

fn seal(e: &mut Established, msgs: &[&[u8]]) -> Vec<BytesMut> {
    let mut wire = BytesMut::new();
    for m in msgs {
        e.sealer.seal_message(m, Instant::now(), &mut wire).unwrap();
    }
    records(wire)
}

#[test]
fn both_directions_carry_messages_in_order() {
    for suite in CipherSuite::ALL {
        let (mut c, mut s) = pair(suite);
        assert_eq!((c.suite, s.suite), (suite, suite));
        for r in seal(&mut c, &[b"one", b"", b"three"]) {
            assert!(matches!(s.opener.open(r).unwrap(), Opened::Message(_)));
        }
        for (r, want) in seal(&mut s, &[b"back"]).into_iter().zip([b"back"]) {
            assert_eq!(c.opener.open(r).unwrap(), Opened::Message(want[..].into()));
        }
    }
}

#[test]
fn replay_reorder_drop_and_reflection_are_detected_and_never_delivered() {
    for suite in CipherSuite::ALL {
        let (mut c, mut s) = pair(suite);
        let rs = seal(&mut c, &[b"a", b"b", b"c"]);
        // Reorder: record 1 before record 0.
        assert!(matches!(s.opener.open(rs[1].clone()), Err(Error::Decrypt)));
        // Drop: skip record 0, deliver record 2.
        assert!(matches!(s.opener.open(rs[2].clone()), Err(Error::Decrypt)));
        // Reflection: the client's own record back to the client.
        assert!(matches!(c.opener.open(rs[0].clone()), Err(Error::Decrypt)));
        // None of that advanced the counter: the genuine sequence still opens.
        assert_eq!(s.opener.next_seq(), 0);
        for (r, want) in rs.iter().zip([b"a", b"b", b"c"]) {
            assert_eq!(
                s.opener.open(r.clone()).unwrap(),
                Opened::Message(want[..].into())
            );
        }
        // Replay of an already delivered record.
        assert!(matches!(s.opener.open(rs[0].clone()), Err(Error::Decrypt)));
    }
}

#[test]
fn every_bit_flip_is_detected() {
    for suite in CipherSuite::ALL {
        let (mut c, mut s) = pair(suite);
        let rec = seal(&mut c, &[b"transfer 100 to alice"]).remove(0);
        let mut detected = 0;
        for bit in 0..rec.len() * 8 {
            let mut bad = rec.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            if matches!(s.opener.open(bad), Err(Error::Decrypt)) {
                detected += 1;
            }
        }
        assert_eq!(detected, rec.len() * 8, "{suite:?}");
        assert!(matches!(s.opener.open(rec).unwrap(), Opened::Message(_)));
    }
}

/// Frames of at most 1 KiB: messages of a few KiB take several records.
fn small_frames() -> Limits {
    Limits::default().with_max_frame_len(1024).unwrap()
}

fn small_frame_config(suite: CipherSuite) -> SessionConfig {
    SessionConfig::builder()
        .suites([suite])
        .limits(small_frames())
        .build()
        .unwrap()
}

#[test]
fn large_messages_are_chunked_and_reassembled() {
    let limits = small_frames();
    for suite in CipherSuite::ALL {
        let (mut c, mut s) = pair_with(&small_frame_config(suite));
        let big: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut wire = BytesMut::new();
        c.sealer
            .seal_message(&big, Instant::now(), &mut wire)
            .unwrap();
        let mut frames = FrameCodec::new(limits);
        let mut out = Vec::new();
        let mut n = 0;
        while let Some(f) = frames.decode(&mut wire).unwrap() {
            n += 1;
            if let Opened::Message(m) = s.opener.open(f).unwrap() {
                out.push(m);
            }
        }
        assert!(n >= 10, "{suite:?}: {n} records");
        assert_eq!(out.len(), 1);
        assert_eq!(&out[0][..], &big[..]);
    }
}

/// Messages around chunk boundaries, queued behind another message in the same buffer: every
/// record but the last carries a full chunk, the records open in order into the exact message,
/// and the counter carries on into the next message (the AEAD suites seal chunks where the
/// message was encoded; the CBC suite copies them out).
#[test]
fn chunk_boundaries_seal_exact_records_behind_queued_messages() {
    let limits = small_frames();
    for suite in CipherSuite::ALL {
        let (mut c, mut s) = pair_with(&small_frame_config(suite));
        let chunk = c.sealer.max_record_content();
        for len in [
            chunk - 1,
            chunk,
            chunk + 1,
            2 * chunk,
            2 * chunk + 1,
            5 * chunk + 7,
        ] {
            let big: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let mut wire = BytesMut::new();
            let now = Instant::now();
            c.sealer.seal_message(b"before", now, &mut wire).unwrap();
            c.sealer.seal_message(&big, now, &mut wire).unwrap();
            c.sealer.seal_message(b"after", now, &mut wire).unwrap();
            let mut frames = FrameCodec::new(limits);
            let mut records = Vec::new();
            let mut messages = Vec::new();
            while let Some(f) = frames.decode(&mut wire).unwrap() {
                records.push(f.len());
                match s.opener.open(f).unwrap() {
                    Opened::Message(m) => messages.push(m),
                    Opened::Partial => {}
                    other => panic!("{suite:?}: unexpected {other:?}"),
                }
            }
            assert!(wire.is_empty(), "{suite:?} {len}: trailing bytes");
            assert_eq!(messages.len(), 3, "{suite:?} {len}");
            assert_eq!(&messages[0][..], b"before");
            assert_eq!(&messages[1][..], &big[..], "{suite:?} {len}");
            assert_eq!(&messages[2][..], b"after");
            let expected = len.div_ceil(chunk);
            assert_eq!(records.len(), expected + 2, "{suite:?} {len}");
            if suite != CipherSuite::Aes128CbcHmacSha256 {
                let body = |content: usize| content + 1 + suite.max_overhead();
                for (i, &r) in records[1..=expected].iter().enumerate() {
                    let content = chunk.min(len - i * chunk);
                    assert_eq!(r, body(content), "{suite:?} {len}: record {i}");
                }
            }
        }
    }
}

/// With the default 1 MiB frame limit a large message still goes out in 64 KiB chunks; a
/// 64 KiB message is one record.
#[test]
fn default_records_carry_at_most_64_kib() {
    let (mut c, mut s) = pair(CipherSuite::Aes256Gcm);
    assert_eq!(
        c.sealer.max_record_content(),
        cypherwire_session::record::MAX_CHUNK
    );
    let mut frames = FrameCodec::new(Limits::default());
    for (len, records) in [(64 * 1024, 1), (64 * 1024 + 1, 2), (1 << 20, 16)] {
        let big = vec![5u8; len];
        let mut wire = BytesMut::new();
        c.sealer
            .seal_message(&big, Instant::now(), &mut wire)
            .unwrap();
        let mut n = 0;
        while let Some(f) = frames.decode(&mut wire).unwrap() {
            n += 1;
            if let Opened::Message(m) = s.opener.open(f).unwrap() {
                assert_eq!(m.len(), len);
            }
        }
        assert_eq!(n, records, "{len}");
    }
}

#[test]
fn reassembly_beyond_the_message_limit_fails() {
    let limits = Limits::default().with_max_frame_len(1024).unwrap();
    let big = SessionConfig::builder().limits(limits).build().unwrap();
    let small = SessionConfig::builder()
        .limits(limits)
        .max_message_len(4000)
        .build()
        .unwrap();
    let now = Instant::now();
    let (init, hello) = start(&psk(), &big).unwrap();
    let (mut s, reply) = respond(&psk(), &small, &hello).unwrap();
    let mut c = finish(init, &reply).unwrap();
    let mut wire = BytesMut::new();
    c.sealer.seal_message(&[1u8; 5000], now, &mut wire).unwrap();
    let mut frames = FrameCodec::new(limits);
    let mut result = Ok(Opened::Partial);
    while let Some(f) = frames.decode(&mut wire).unwrap() {
        result = s.opener.open(f);
        if result.is_err() {
            break;
        }
    }
    assert!(
        matches!(result, Err(Error::MessageTooLarge { max: 4000, .. })),
        "{result:?}"
    );
}

#[test]
fn rekey_by_records_bytes_and_time_loses_nothing() {
    for suite in CipherSuite::ALL {
        for policy in [
            RekeyPolicy {
                records: 3,
                ..RekeyPolicy::default()
            },
            RekeyPolicy {
                bytes: 100,
                ..RekeyPolicy::default()
            },
            RekeyPolicy {
                interval: Duration::from_secs(5),
                ..RekeyPolicy::default()
            },
        ] {
            let cfg = SessionConfig::builder()
                .suites([suite])
                .rekey(policy)
                .build()
                .unwrap();
            let (mut c, mut s) = pair_with(&cfg);
            let t0 = Instant::now();
            let mut wire = BytesMut::new();
            for i in 0..20u64 {
                let msg = vec![i as u8; 40];
                c.sealer
                    .seal_message(&msg, t0 + Duration::from_secs(i), &mut wire)
                    .unwrap();
            }
            assert!(c.sealer.key_updates() >= 3, "{suite:?} {policy:?}");
            let mut got = Vec::new();
            let mut updates = 0;
            for r in records(wire) {
                match s.opener.open(r).unwrap() {
                    Opened::Message(m) => got.push(m[0]),
                    Opened::KeyUpdate => updates += 1,
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!(got, (0..20).collect::<Vec<u8>>());
            assert_eq!(updates, c.sealer.key_updates());
        }
    }
}

#[test]
fn close_is_authenticated_and_final() {
    for suite in CipherSuite::ALL {
        let (mut c, mut s) = pair(suite);
        let mut wire = BytesMut::new();
        c.sealer.seal_close(&mut wire).unwrap();
        let closed = wire.clone();
        // Nothing after the close, whatever the path: one record, chunks copied from a slice,
        // or a message written in place and then chunked.
        let long = vec![1u8; 3 * c.sealer.max_record_content()];
        for msg in [&b"x"[..], &long] {
            assert!(matches!(
                c.sealer.seal_message(msg, Instant::now(), &mut wire),
                Err(Error::Closed)
            ));
            assert!(matches!(
                c.sealer.seal_with(Instant::now(), &mut wire, |d| {
                    d.extend_from_slice(msg);
                    Ok(())
                }),
                Err(Error::Closed)
            ));
        }
        assert_eq!(wire, closed, "{suite:?}");
        let rs = records(wire);
        // A forged close (bit flipped) is rejected like any record.
        let mut forged = rs[0].clone();
        forged[0] ^= 1;
        assert!(matches!(s.opener.open(forged), Err(Error::Decrypt)));
        assert_eq!(s.opener.open(rs[0].clone()).unwrap(), Opened::Close);
        assert!(matches!(s.opener.open(rs[0].clone()), Err(Error::Closed)));
    }
}

#[test]
fn wrong_psk_fails_authentication_on_both_sides() {
    let cfg = SessionConfig::default();
    let (_, hello) = start(&psk(), &cfg).unwrap();
    let other = Psk::from_bytes([8; 32]);
    assert!(matches!(
        respond(&other, &cfg, &hello),
        Err(Error::AuthenticationFailed)
    ));
    // And a client talking to a server with another key rejects the reply.
    let (init, hello) = start(&other, &cfg).unwrap();
    let (_, reply) = respond(&other, &cfg, &hello).unwrap();
    let (init2, _) = start(&psk(), &cfg).unwrap();
    drop(init);
    assert!(matches!(
        finish(init2, &reply),
        Err(Error::AuthenticationFailed)
    ));
}

#[test]
fn every_edit_of_the_client_hello_fails_the_handshake() {
    // Downgrade protection: the clear offer is bound into the Noise prologue.
    let cfg = SessionConfig::default();
    let (_, hello) = start(&psk(), &cfg).unwrap();
    let mut failures = 0;
    let mut total = 0;
    for i in 0..hello.len() {
        for flip in [0x01u8, 0x02, 0x80] {
            total += 1;
            let mut bad = hello.clone();
            bad[i] ^= flip;
            if respond(&psk(), &cfg, &bad).is_err() {
                failures += 1;
            }
        }
    }
    assert_eq!(failures, total);
    // Removing an offered suite (a classic downgrade) also fails.
    let mut fewer = hello;
    let n = usize::from(fewer[6]);
    fewer.remove(7);
    fewer[6] = (n - 1) as u8;
    assert!(matches!(
        respond(&psk(), &cfg, &fewer),
        Err(Error::AuthenticationFailed)
    ));
}

#[test]
fn server_hello_tampering_fails() {
    let cfg = SessionConfig::default();
    for i in 0..50 {
        let (init, hello) = start(&psk(), &cfg).unwrap();
        let (_, mut reply) = respond(&psk(), &cfg, &hello).unwrap();
        let at = i % reply.len();
        reply[at] ^= 0x10;
        assert!(finish(init, &reply).is_err());
    }
}

#[test]
fn incompatible_or_malformed_hellos_are_typed_errors() {
    let only_cbc = SessionConfig::builder()
        .suites([CipherSuite::Aes128CbcHmacSha256])
        .build()
        .unwrap();
    let only_gcm = SessionConfig::builder()
        .suites([CipherSuite::Aes256Gcm])
        .build()
        .unwrap();
    let (_, hello) = start(&psk(), &only_cbc).unwrap();
    assert!(matches!(
        respond(&psk(), &only_gcm, &hello),
        Err(Error::Handshake(HandshakeFailure::NoCommonSuite))
    ));
    let json = SessionConfig::builder()
        .codecs([CodecId::Json])
        .build()
        .unwrap();
    let mp = SessionConfig::builder()
        .codecs([CodecId::MsgPack])
        .build()
        .unwrap();
    let (_, hello) = start(&psk(), &json).unwrap();
    assert!(matches!(
        respond(&psk(), &mp, &hello),
        Err(Error::Handshake(HandshakeFailure::NoCommonCodec))
    ));
    let cfg = SessionConfig::default();
    for (bad, want) in [
        (&b"GET / HTTP/1.1\r\n"[..], HandshakeFailure::BadMagic),
        (&b"CYPW\x02"[..], HandshakeFailure::UnsupportedVersion(2)),
        (&b"CYPW\x01\x07"[..], HandshakeFailure::UnsupportedMode(7)),
        (&b"CYPW\x01\x01"[..], HandshakeFailure::Malformed),
        (
            &b"CYPW\x01\x01\x01\x01\x01\x01"[..],
            HandshakeFailure::Malformed,
        ),
        (&b""[..], HandshakeFailure::BadMagic),
    ] {
        match respond(&psk(), &cfg, bad) {
            Err(Error::Handshake(f)) => assert_eq!(f, want),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
}

#[test]
fn negotiation_follows_the_responder_preference() {
    let client = SessionConfig::builder()
        .suites([CipherSuite::ChaCha20Poly1305, CipherSuite::Aes256Gcm])
        .codecs([CodecId::MsgPack, CodecId::Json])
        .build()
        .unwrap();
    let server = SessionConfig::builder()
        .suites([CipherSuite::Aes256Gcm, CipherSuite::ChaCha20Poly1305])
        .codecs([CodecId::Json, CodecId::MsgPack])
        .build()
        .unwrap();
    let (init, hello) = start(&psk(), &client).unwrap();
    let (s, reply) = respond(&psk(), &server, &hello).unwrap();
    let c = finish(init, &reply).unwrap();
    assert_eq!((c.suite, c.codec), (CipherSuite::Aes256Gcm, CodecId::Json));
    assert_eq!((s.suite, s.codec), (c.suite, c.codec));
    assert_eq!(c.handshake_hash, s.handshake_hash);
}

#[test]
fn each_session_has_fresh_keys() {
    // Forward secrecy's visible symptom: two sessions under one PSK share no handshake hash and
    // a record of one does not open in the other.
    let (mut c1, _s1) = pair(CipherSuite::ChaCha20Poly1305);
    let (_c2, mut s2) = pair(CipherSuite::ChaCha20Poly1305);
    assert_ne!(c1.handshake_hash, s2.handshake_hash);
    let r = seal(&mut c1, &[b"x"]).remove(0);
    assert!(matches!(s2.opener.open(r), Err(Error::Decrypt)));
}

#[test]
fn low_order_ephemeral_keys_are_refused_before_any_dh() {
    let cfg = SessionConfig::default();
    let (_, hello) = start(&psk(), &cfg).unwrap();
    let header_len = hello.len() - 48;
    for weak in [[0u8; 32], {
        let mut one = [0u8; 32];
        one[0] = 1;
        one
    }] {
        let mut bad = hello.clone();
        bad[header_len..header_len + 32].copy_from_slice(&weak);
        assert!(matches!(
            respond(&psk(), &cfg, &bad),
            Err(Error::Handshake(HandshakeFailure::WeakKey))
        ));
    }
    // And in the responder's reply.
    let (init, hello) = start(&psk(), &cfg).unwrap();
    let (_, mut reply) = respond(&psk(), &cfg, &hello).unwrap();
    reply[..32].fill(0);
    assert!(matches!(
        finish(init, &reply),
        Err(Error::Handshake(HandshakeFailure::WeakKey))
    ));
}

#[test]
fn backends_interoperate_in_a_session() {
    use cypherwire_session::Backend;
    for suite in [CipherSuite::ChaCha20Poly1305, CipherSuite::Aes256Gcm] {
        for &cb in Backend::ALL {
            for &sb in Backend::ALL {
                let ccfg = SessionConfig::builder()
                    .suites([suite])
                    .backend(cb)
                    .build()
                    .unwrap();
                let scfg = SessionConfig::builder()
                    .suites([suite])
                    .backend(sb)
                    .build()
                    .unwrap();
                let (init, hello) = start(&psk(), &ccfg).unwrap();
                let (mut s, reply) = respond(&psk(), &scfg, &hello).unwrap();
                let mut c = finish(init, &reply).unwrap();
                for r in seal(&mut c, &[b"across backends"]) {
                    assert_eq!(
                        s.opener.open(r).unwrap(),
                        Opened::Message(b"across backends"[..].into())
                    );
                }
                for r in seal(&mut s, &[b"and back"]) {
                    assert_eq!(
                        c.opener.open(r).unwrap(),
                        Opened::Message(b"and back"[..].into())
                    );
                }
            }
        }
    }
}
