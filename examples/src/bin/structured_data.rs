//! NetStructer-style structured data: send lists, maps, sets, tuples and typed structs over an
//! encrypted connection, and get a clear error when a message exceeds the size limit.
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

/// NetStructer's README value, `['hi im haytam', 128, {b'gg': 'gg'}, {1, 2, 6, 4},
/// (False, True)]`: a set and a tuple travel as lists, the bytes key stays bytes.
fn netstructer_value() -> Value {
    Value::Array(vec![
        Value::from("hi im haytam"),
        Value::from(128),
        Value::Map(vec![(Value::bytes(b"gg".to_vec()), Value::from("gg"))]),
        Value::from(vec![1, 2, 6, 4]),
        Value::from(vec![false, true]),
    ])
}

/// The value over a socket: a server echoes what it gets; the client checks it came back
/// whole, then tries a message over the limit.
async fn over_a_socket() -> anyhow::Result<()> {
    let psk = Psk::generate()?;
    let server = Server::builder(psk.clone())
        .route("/ECHO", "PUT", |req: Request, _ctx: Ctx| async move {
            Ok::<_, HandlerError>(req.data)
        })
        .bind("127.0.0.1:0")
        .await?;
    let client = Client::builder(psk)
        .connect_and_wait(server.local_addr().to_string())
        .await?;
    let sent = netstructer_value();
    let back = client
        .request("/ECHO", "PUT")
        .data(sent.clone())
        .send()
        .await?;
    anyhow::ensure!(back.data == sent, "the echo differs: {}", back.data);
    println!("sent and got back over an encrypted socket: {}", back.data);

    // Larger than the client's request buffer (8 MiB by default; the session's message limit
    // is checked too): refused at the caller, typed, and nothing is sent.
    let blob = Value::bytes(vec![0u8; 17 * 1024 * 1024]);
    match client.request("/ECHO", "PUT").data(blob).send().await {
        Err(cypherwire::client::Error::MessageTooLarge { len, max }) => {
            println!("a {len}-byte request was refused before sending: the limit is {max} bytes");
        }
        other => anyhow::bail!("expected MessageTooLarge, got {other:?}"),
    }
    client.close().await;
    server.handle().shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    over_a_socket().await?;
    in_memory()
}

/// The wire layer alone: a typed struct through the codec, and the frame limit.
fn in_memory() -> anyhow::Result<()> {
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
