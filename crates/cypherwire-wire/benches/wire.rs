//! Wire-layer throughput: frame + envelope encode and decode of 100-byte and 64 KiB messages in
//! both payload codecs, with the data as a byte string and (`-text`) as a UTF-8 string.
//! Run: `cargo bench -p cypherwire-wire --bench wire`.
//!
//! Each measurement handles one whole frame (header + envelope). Criterion reports time per
//! frame and bytes/s of frame data; frames/s is the reciprocal of the time. The baseline group
//! copies a frame-sized buffer once, measured in the same run.

#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]
#![allow(
    clippy::unwrap_used,
    reason = "benchmark setup; a failure should abort"
)]

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use cypherwire_wire::{Codec, Limits, Message, MessageCodec, PayloadCodec, Request, Value};
use tokio_util::codec::{Decoder, Encoder};

fn message(size: usize, text: bool) -> Message {
    let data = if text {
        Value::from("x".repeat(size))
    } else {
        Value::bytes(vec![0xa5u8; size])
    };
    Request::new(42, "/ECHO", "PUT").with_data(data).into()
}

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    for (label, size, text) in [
        ("100B", 100usize, false),
        ("64KiB", 64 * 1024, false),
        ("100B-text", 100, true),
        ("64KiB-text", 64 * 1024, true),
    ] {
        let msg = message(size, text);
        for codec in Codec::ALL {
            let mut frames = MessageCodec::new(*codec, limits);
            let mut encoded = BytesMut::new();
            frames.encode(&msg, &mut encoded).unwrap();
            let frame_len = encoded.len() as u64;

            let mut group = c.benchmark_group(format!("wire/{}", codec.id()));
            group.throughput(Throughput::Bytes(frame_len));
            group.bench_function(BenchmarkId::new("encode", label), |b| {
                let mut out = BytesMut::with_capacity(encoded.len() * 2);
                b.iter(|| {
                    out.clear();
                    frames.encode(black_box(&msg), &mut out).unwrap();
                    black_box(out.len())
                });
            });
            group.bench_function(BenchmarkId::new("decode", label), |b| {
                let mut input = BytesMut::with_capacity(encoded.len());
                b.iter(|| {
                    input.clear();
                    input.extend_from_slice(&encoded);
                    black_box(frames.decode(&mut input).unwrap())
                });
            });
            group.finish();
        }
        // Baseline in the same run: copying the frame's bytes once (the floor for any decoder
        // that hands out owned data), per size.
        let frame_len = {
            let mut buf = BytesMut::new();
            MessageCodec::new(Codec::MsgPack, limits)
                .encode(&msg, &mut buf)
                .unwrap();
            buf.len()
        };
        let src = vec![0x5au8; frame_len];
        let mut group = c.benchmark_group("wire/baseline");
        group.throughput(Throughput::Bytes(frame_len as u64));
        group.bench_function(BenchmarkId::new("memcpy", label), |b| {
            let mut out = BytesMut::with_capacity(frame_len);
            b.iter(|| {
                out.clear();
                out.extend_from_slice(black_box(&src));
                black_box(out.len())
            });
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = bench
}
criterion_main!(benches);
