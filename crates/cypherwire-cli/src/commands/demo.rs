//! `cypherwire demo`: the embedded demo.
//!
//! Today it shows the wire layer end to end (the layers above are being built): a
//! CYPHER_PROTOCOL-style request in both payload codecs, a stream of mixed messages decoded from
//! arbitrary chunks, and the limits that turn hostile input into typed errors.

use std::time::Instant;

use anyhow::{Context as _, ensure};
use bytes::BytesMut;
use cypherwire::wire::{
    Action, Codec, Error, Limits, Message, MessageCodec, PayloadCodec, Ping, Push, Request,
    Response, Value,
};
use tokio_util::codec::{Decoder, Encoder};

/// Arguments of `cypherwire demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Messages in the streaming part.
    #[arg(long, default_value_t = 100_000)]
    messages: usize,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    println!("cypherwire demo: the wire layer\n");
    show_request()?;
    let rate = stream(args.messages)?;
    show_limits()?;
    println!("\nsummary");
    println!("  envelopes encoded and decoded in both codecs: ok");
    println!(
        "  streamed {} messages in random-sized chunks, both codecs: all decoded identically ({:.0} msgs/s)",
        args.messages, rate
    );
    println!("  hostile inputs rejected with typed errors: 4 of 4");
    println!("  (encryption, server, client and mesh layers are not part of this build yet)");
    Ok(())
}

fn sample_request() -> Request {
    Request::new(1, "/SEQUENCE", "UPDATE")
        .with_data(Value::from(vec![1, 2, 3]))
        .with_metadata(Value::map([
            ("USER", Value::from("ada")),
            ("RAW", Value::bytes(*b"\x00\x01")),
        ]))
}

fn show_request() -> anyhow::Result<()> {
    let msg = Message::from(sample_request());
    println!("a CYPHER_PROTOCOL-style request (/SEQUENCE UPDATE [1, 2, 3]) as one frame:");
    for codec in Codec::ALL {
        let mut frames = MessageCodec::new(*codec, Limits::default());
        let mut buf = BytesMut::new();
        frames.encode(&msg, &mut buf)?;
        println!("  {:<11} {:>3} bytes  {}", codec.id(), buf.len(), hex(&buf));
        let back = frames.decode(&mut buf)?.context("frame did not decode")?;
        ensure!(back.is_identical(&msg), "round trip changed the message");
    }
    let mut json = BytesMut::new();
    Codec::Json.encode(&sample_request(), &mut json)?;
    println!("  JSON payload: {}\n", String::from_utf8_lossy(&json));
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    const SHOWN: usize = 24;
    let mut s: String = bytes
        .iter()
        .take(SHOWN)
        .map(|b| format!("{b:02x}"))
        .collect();
    if bytes.len() > SHOWN {
        s.push('…');
    }
    s
}

/// Encodes `n` mixed messages, feeds them to a decoder in pseudo-random chunks, checks every
/// message, and returns the combined encode+decode rate.
#[expect(
    clippy::disallowed_methods,
    reason = "the demo reports wall-clock figures"
)]
fn stream(n: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    for codec in Codec::ALL {
        let mut frames = MessageCodec::new(*codec, Limits::default());
        let mut wire = BytesMut::new();
        for i in 0..n {
            frames.encode(&message(i), &mut wire)?;
        }
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut inbox = BytesMut::new();
        let mut next = 0;
        while !wire.is_empty() {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let take = usize::try_from(rng % 4096)
                .unwrap_or(1)
                .clamp(1, wire.len());
            inbox.extend_from_slice(&wire.split_to(take));
            while let Some(msg) = frames.decode(&mut inbox)? {
                ensure!(msg.is_identical(&message(next)), "message {next} differs");
                next += 1;
            }
        }
        ensure!(next == n, "decoded {next} of {n} messages");
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    Ok((2 * n) as f64 / secs)
}

fn message(i: usize) -> Message {
    let id = i as u64;
    match i % 4 {
        0 => Request::new(id, "/NUMBER", "READ").into(),
        1 => Response::ok(id, Value::from(vec![Value::from(id), Value::from("ok")])).into(),
        2 => Action::new(
            "chat",
            Value::from(format!("hello #{i}")),
            1_700_000_000_000,
        )
        .into(),
        _ => match i % 8 {
            3 => Ping::new(id).into(),
            _ => Push::new(id, Value::bytes(vec![7u8; i % 100])).into(),
        },
    }
}

fn show_limits() -> anyhow::Result<()> {
    println!("hostile input, each rejected with a typed error (limits: 1 MiB frames, depth 32):");
    let limits = Limits::default();
    let mut frames = MessageCodec::new(Codec::MsgPack, limits);

    let mut huge = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
    report("length prefix 0xffffffff", frames.decode(&mut huge))?;

    let mut bomb = vec![0x01, 0x06];
    bomb.extend(std::iter::repeat_n(0x91, 100_000));
    bomb.push(0x01);
    report(
        "100,000-deep nesting",
        Message::decode(&Codec::MsgPack, &bomb, &limits),
    )?;

    let str_bomb = [0x01, 0x06, 0x91, 0xdb, 0xff, 0xff, 0xff, 0xff, b'x'];
    report(
        "\"4 GiB\" string in 9 bytes",
        Message::decode(&Codec::MsgPack, &str_bomb, &limits),
    )?;

    report(
        "an unknown message kind",
        Message::decode(&Codec::MsgPack, &[1, 0x3f, 0xc0], &limits),
    )?;
    Ok(())
}

fn report<T: std::fmt::Debug>(what: &str, result: Result<T, Error>) -> anyhow::Result<()> {
    match result {
        Err(e) => {
            println!("  {what:<28} -> {e}");
            Ok(())
        }
        Ok(v) => anyhow::bail!("{what} was accepted: {v:?}"),
    }
}
