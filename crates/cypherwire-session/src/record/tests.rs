//! Record-layer tests: sealing, opening, chunking, rekeying, and what a tampered, replayed
//! or reordered record gets.

use cypherwire_wire::Limits;
use tokio_util::codec::Decoder;

use super::*;

/// The time as the record layer takes it, through tokio's clock.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// A sealer of `suite` with a fixed key, the default limits and `policy`.
fn sealer_with(suite: CipherSuite, now: Instant, policy: RekeyPolicy) -> Sealer {
    Sealer::new(
        suite,
        Backend::default(),
        vec![7u8; suite.key_len()],
        FrameCodec::new(Limits::default()),
        policy,
        now,
    )
}

/// A sealer of `suite` with a fixed key and the default limits and rekey policy.
fn sealer(suite: CipherSuite, now: Instant) -> Sealer {
    sealer_with(suite, now, RekeyPolicy::default())
}

/// A reassembled message takes its whole buffer with it: the opener keeps no share of it
/// (and no spare capacity) once the message is handed out.
#[test]
fn reassembly_keeps_nothing_after_the_message() {
    let suite = CipherSuite::Aes256Gcm;
    let key = vec![7u8; suite.key_len()];
    let limits = Limits::default().with_max_frame_len(1024).unwrap();
    let now = now();
    let mut sealer = Sealer::new(
        suite,
        Backend::default(),
        key.clone(),
        FrameCodec::new(limits),
        RekeyPolicy::default(),
        now,
    );
    let mut opener = Opener::new(suite, Backend::default(), key, 1 << 20);
    let msg = vec![3u8; 5000];
    let mut wire = BytesMut::new();
    sealer.seal_message(&msg, now, &mut wire).unwrap();
    let mut frames = FrameCodec::new(limits);
    let mut got = None;
    while let Some(f) = frames.decode(&mut wire).unwrap() {
        if let Opened::Message(m) = opener.open(f).unwrap() {
            got = Some(m);
        }
    }
    assert_eq!(got.unwrap(), msg);
    assert_eq!(opener.partial.capacity(), 0);
}

/// A record that would take the message being reassembled past its limit is refused from
/// its length alone, before its body is read: nothing is reserved for it, and what was
/// reassembled so far is given back.
#[test]
fn an_appended_record_over_the_limit_reserves_nothing() {
    let suite = CipherSuite::Aes256Gcm;
    let key = vec![7u8; suite.key_len()];
    let limits = Limits::default().with_max_frame_len(1024).unwrap();
    let now = now();
    let mut sealer = Sealer::new(
        suite,
        Backend::default(),
        key.clone(),
        FrameCodec::new(limits),
        RekeyPolicy::default(),
        now,
    );
    let mut opener = Opener::new(suite, Backend::default(), key, 4000);
    let mut wire = BytesMut::new();
    sealer.seal_message(&[3u8; 3000], now, &mut wire).unwrap();
    let first = FrameCodec::new(limits).decode(&mut wire).unwrap().unwrap();
    assert!(matches!(opener.open(first).unwrap(), Opened::Partial));
    assert!(opener.assembling());
    // A record announcing 1 MiB more.
    let err = opener.begin_append(1 << 20, FRAME_HEADER_LEN).unwrap_err();
    assert!(
        matches!(err, Error::MessageTooLarge { max: 4000, .. }),
        "{err:?}"
    );
    assert_eq!(opener.reassembly().capacity(), 0);
}

/// `seal_message` reserves every record of the message up front: a chunked message sealed
/// into an empty buffer takes exactly the room of its records (growing while the chunks
/// move apart would double it).
#[test]
fn seal_message_reserves_its_records_once() {
    let now = now();
    for suite in CipherSuite::ALL {
        let mut sealer = sealer(suite, now);
        let len = 5 * MAX_CHUNK + 17;
        let mut exact = BytesMut::new();
        sealer.reserve(&mut exact, len);
        let mut dst = BytesMut::new();
        sealer.seal_message(&vec![1u8; len], now, &mut dst).unwrap();
        assert_eq!(dst.capacity(), exact.capacity(), "{suite:?}");
    }
}

/// `seal_message` copies each chunk of a long message straight into its record; the
/// records are the ones `seal_with` makes when the message is written into the buffer
/// and its chunks moved apart (same key, same counters), byte for byte, for every suite.
#[test]
fn seal_message_makes_the_records_seal_with_makes() {
    let now = now();
    for suite in CipherSuite::ALL {
        let (mut a, mut b) = (sealer(suite, now), sealer(suite, now));
        for len in [
            0,
            100,
            MAX_CHUNK,
            MAX_CHUNK + 1,
            3 * MAX_CHUNK,
            5 * MAX_CHUNK + 17,
        ] {
            let msg: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let (mut by_copy, mut in_place) = (BytesMut::new(), BytesMut::new());
            a.seal_message(&msg, now, &mut by_copy).unwrap();
            b.seal_with(now, &mut in_place, |d| {
                d.extend_from_slice(&msg);
                Ok(())
            })
            .unwrap();
            assert!(by_copy == in_place, "{suite:?}, {len} bytes");
        }
        assert_eq!(a.seq, b.seq);
    }
}

/// A chunked message is sealed whole or not at all at the counter limit: every path checks
/// the counters all its records need before sealing the first (one record short, nothing
/// is written and the counter does not move; exactly enough, every record is sealed).
#[test]
fn a_chunked_message_fits_under_the_counter_limit_whole_or_not_at_all() {
    let now = now();
    let never = RekeyPolicy {
        records: u64::MAX,
        bytes: u64::MAX,
        interval: Duration::from_secs(1 << 40),
    };
    let msg = vec![3u8; 3 * MAX_CHUNK];
    type Seal = fn(&mut Sealer, &[u8], Instant, &mut BytesMut) -> Result<()>;
    let paths: [(&str, Seal); 2] = [
        ("seal_message", |s, m, now, dst| s.seal_message(m, now, dst)),
        ("seal_with", |s, m, now, dst| {
            s.seal_with(now, dst, |d| {
                d.extend_from_slice(m);
                Ok(())
            })
        }),
    ];
    for suite in CipherSuite::ALL {
        for (name, seal) in paths {
            let mut sealer = sealer_with(suite, now, never);
            sealer.seq = HARD_RECORD_LIMIT - 2;
            let mut dst = BytesMut::from(&b"queued"[..]);
            let err = seal(&mut sealer, &msg, now, &mut dst).unwrap_err();
            assert!(matches!(err, Error::Closed), "{suite:?} {name}: {err:?}");
            assert_eq!(&dst[..], b"queued", "{suite:?} {name}");
            assert_eq!(sealer.seq, HARD_RECORD_LIMIT - 2, "{suite:?} {name}");

            sealer.seq = HARD_RECORD_LIMIT - 3;
            seal(&mut sealer, &msg, now, &mut dst).unwrap();
            assert_eq!(sealer.seq, HARD_RECORD_LIMIT, "{suite:?} {name}");
            assert!(dst.len() > 3 * MAX_CHUNK, "{suite:?} {name}");
        }
    }
}

/// After `reserve`, a message of that size is written and sealed without the buffer moving:
/// in one record for every suite, and chunked for the AEAD suites (CBC + HMAC chunks a
/// message by taking it out of the buffer and sealing it into a new one).
#[test]
fn reserved_room_holds_every_record_of_the_message() {
    let now = now();
    for suite in CipherSuite::ALL {
        let limits = Limits::default();
        let mut sealer = Sealer::new(
            suite,
            Backend::default(),
            vec![7u8; suite.key_len()],
            FrameCodec::new(limits),
            RekeyPolicy::default(),
            now,
        );
        for len in [0, 100, MAX_CHUNK, MAX_CHUNK + 1, 5 * MAX_CHUNK + 17] {
            let msg = vec![1u8; len];
            let mut dst = BytesMut::new();
            sealer.reserve(&mut dst, len);
            let at = dst.as_ptr();
            sealer
                .seal_with(now, &mut dst, |d| {
                    d.extend_from_slice(&msg);
                    Ok(())
                })
                .unwrap();
            if len <= MAX_CHUNK || suite.tag_only_overhead() {
                assert_eq!(dst.as_ptr(), at, "{suite:?}, {len} bytes: the buffer moved");
            }
        }
    }
}
