//! NetStructer-style structured data: send lists, maps, sets, tuples and typed structs, and
//! get a clear error when a message exceeds the size limit.
//!
//! Run: `cargo run -p cypherwire-examples --bin structured_data`

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context as _;
use bytes::BytesMut;
use cypherwire::prelude::*;
use cypherwire::wire::{Error, MessageCodec};
use serde::{Deserialize, Serialize};
use tokio_util::codec::{Decoder, Encoder};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Profile {
    name: String,
    scores: Vec<u32>,
    friends: BTreeSet<String>,
    position: (f64, f64),
    extra: BTreeMap<String, bool>,
}

fn main() -> anyhow::Result<()> {
    let profile = Profile {
        name: "ada".into(),
        scores: vec![90, 85],
        friends: BTreeSet::from(["bob".into(), "cy".into()]),
        position: (1.5, -2.0),
        extra: BTreeMap::from([("admin".into(), true)]),
    };

    // Any serde type becomes a Value, travels in a message, and comes back typed.
    let data = to_value(&profile)?;
    let msg = Message::from(Request::new(1, "/PROFILE", "UPDATE").with_data(data));
    let limits = Limits::default().with_max_frame_len(4096)?;
    let mut codec = MessageCodec::new(Codec::default(), limits);
    let mut buf = BytesMut::new();
    codec.encode(&msg, &mut buf)?;
    println!("encoded a profile into a {}-byte frame", buf.len());

    let Some(Message::Request(req)) = codec.decode(&mut buf)? else {
        anyhow::bail!("expected a request");
    };
    let back: Profile = from_value(req.data).context("decoding the profile")?;
    assert_eq!(back, profile);
    println!("decoded it back: {back:?}");

    // A message larger than the limit is refused with a typed error, not sent.
    let big = Request::new(2, "/BLOB", "PUT").with_data(Value::bytes(vec![0u8; 10_000]));
    match codec.encode(Message::from(big), &mut buf) {
        Err(Error::FrameTooLarge { len, max }) => {
            println!("a {len}-byte message was refused: the limit is {max} bytes");
        }
        other => anyhow::bail!("expected FrameTooLarge, got {other:?}"),
    }
    Ok(())
}
