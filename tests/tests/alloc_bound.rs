//! Peak allocation while decoding hostile input is bounded by the frame limit.
//!
//! The global allocator is capped around each case (`cap`): an allocation beyond the cap
//! fails, which aborts this test process, so the test cannot pass if decoding ever allocates
//! more than the bound. This binary holds a single test so that nothing else allocates
//! concurrently.

#![allow(clippy::unwrap_used, reason = "test code")]

use std::alloc::System;

use bytes::BytesMut;
use cap::Cap;
use cypherwire::wire::{Codec, Error, Limits, Message, MessageCodec};
use tokio_util::codec::Decoder;

#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, usize::MAX);

/// Runs `f` with at most `budget` bytes of extra heap allowed.
fn within_budget<T>(budget: usize, f: impl FnOnce() -> T) -> T {
    ALLOC.set_limit(ALLOC.allocated() + budget).unwrap();
    let out = f();
    ALLOC.set_limit(usize::MAX).unwrap();
    out
}

#[test]
fn hostile_frames_and_payloads_stay_within_the_frame_limit() {
    const MAX: usize = 64 * 1024;
    // Slack for the error values themselves (strings in Decode errors) and small bookkeeping.
    const SLACK: usize = 16 * 1024;
    let limits = Limits::default().with_max_frame_len(MAX).unwrap();

    for &codec in Codec::ALL {
        // 1. Over-limit length prefixes, fed to a decoder whose buffer starts empty.
        for announced in [u32::MAX, 1 << 31, (MAX + 1) as u32] {
            let mut input = BytesMut::with_capacity(8);
            input.extend_from_slice(&announced.to_be_bytes());
            input.extend_from_slice(&[0xc0; 4]);
            let mut dec = MessageCodec::new(codec, limits);
            let res = within_budget(SLACK, || dec.decode(&mut input));
            assert!(matches!(res, Err(Error::FrameTooLarge { .. })), "{res:?}");
        }

        // 2. A frame of exactly the limit, arriving one byte at a time: the buffer grows to at
        //    most the frame size.
        let mut body = vec![0x01, 0x06, 0x91, 0xc4, 0xff];
        body.resize(MAX, 0);
        let mut stream = (MAX as u32).to_be_bytes().to_vec();
        stream.extend_from_slice(&body);
        let mut dec = MessageCodec::new(codec, limits);
        let mut buf = BytesMut::new();
        let errors = within_budget(2 * MAX + SLACK, || {
            let mut errors = 0;
            for b in &stream {
                buf.extend_from_slice(std::slice::from_ref(b));
                match dec.decode(&mut buf) {
                    Ok(_) => {}
                    Err(_) => errors += 1,
                }
            }
            errors
        });
        assert_eq!(
            errors, 1,
            "the full frame is decoded (and rejected) exactly once"
        );

        // 3. Deserialization bombs inside a frame-sized body.
        let bombs: Vec<Vec<u8>> = vec![
            // str32 / bin32 / array32 / map32 claiming 4 GiB.
            vec![0x01, 0x06, 0x91, 0xdb, 0xff, 0xff, 0xff, 0xff, 0x00],
            vec![0x01, 0x06, 0x91, 0xc6, 0xff, 0xff, 0xff, 0xff, 0x00],
            vec![
                0x01, 0x03, 0x93, 0xa1, b'x', 0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0, 0x00,
            ],
            vec![
                0x01, 0x03, 0x93, 0xa1, b'x', 0xdf, 0xff, 0xff, 0xff, 0xff, 0xc0, 0x00,
            ],
            // 60,000-deep nesting.
            [
                vec![0x01, 0x03, 0x93, 0xa1, b'x'],
                vec![0x91; 60_000],
                vec![0x00],
            ]
            .concat(),
            // The same in requests and responses, which MessagePack decodes in one pass:
            // a path as str32, data as array32 / map32 / bin32 claiming 4 GiB, 60,000-deep data.
            vec![0x01, 0x01, 0x96, 0x01, 0xdb, 0xff, 0xff, 0xff, 0xff, 0x00],
            vec![
                0x01, 0x01, 0x96, 0x01, 0xa1, b'/', 0xa1, b'B', 0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0,
                0xc0,
            ],
            vec![
                0x01, 0x01, 0x96, 0x01, 0xa1, b'/', 0xa1, b'B', 0xdf, 0xff, 0xff, 0xff, 0xff, 0xc0,
                0xc0,
            ],
            vec![
                0x01, 0x02, 0x94, 0x01, 0x92, 0x00, 0xa0, 0xc6, 0xff, 0xff, 0xff, 0xff, 0x00,
            ],
            [
                vec![0x01, 0x01, 0x96, 0x01, 0xa1, b'/', 0xa1, b'B'],
                vec![0x91; 60_000],
                vec![0xc0, 0xc0, 0xc0],
            ]
            .concat(),
            // JSON: 60,000 nested arrays.
            [vec![0x01, 0x03], vec![b'['; 60_000]].concat(),
        ];
        for bomb in &bombs {
            let res = within_budget(MAX + SLACK, || Message::decode(&codec, bomb, &limits));
            assert!(res.is_err(), "{codec:?} accepted a bomb");
        }
    }
}
