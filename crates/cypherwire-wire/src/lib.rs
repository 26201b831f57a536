//! # cypherwire-wire
//!
//! The bottom layer of [cypherwire](https://docs.rs/cypherwire): how messages become bytes.
//!
//! **What it does**
//! - [Frames](frame): a four-byte big-endian length prefix and a body, with the maximum length
//!   ([`Limits`]) checked from the header before anything is allocated, and decoding that works
//!   for input split at any byte ([`FrameCodec`]).
//! - [Payload codecs](codec): [`PayloadCodec`] with [`MsgPack`] (default) and [`Json`],
//!   selectable at run time through [`Codec`] / [`CodecId`]. Decoders enforce a nesting-depth
//!   limit and never pre-allocate from a declared length beyond the bytes present.
//! - [`Value`]: a dynamic value ("send anything") that round-trips identically through both
//!   codecs and converts from and to any serde type ([`to_value`], [`from_value`]).
//! - [Envelopes](message): [`Request`], [`Response`], [`Action`], [`Push`], [`Cancel`],
//!   [`Ping`], [`Pong`], [`Close`] in a compact, versioned encoding ([`Message`]), and
//!   [`MessageCodec`] to read and write them through `tokio_util::codec::Framed`.
//!
//! **What it does not do**: no I/O, no clocks, no encryption. It never touches a socket;
//! `tokio-util`'s codec traits are used only as the byte-in, message-out interface. Encryption,
//! handshakes and sessions are `cypherwire-session`'s job; the wire format it produces is what
//! those layers carry inside their records.
//!
//! ## Quick start
//!
//! ```
//! use bytes::BytesMut;
//! use cypherwire_wire::{Codec, Limits, Message, MessageCodec, Request, Value};
//! use tokio_util::codec::{Decoder, Encoder};
//!
//! let mut codec = MessageCodec::new(Codec::MsgPack, Limits::default());
//! let req = Request::new(1, "/SEQUENCE", "UPDATE")
//!     .with_data(Value::from(vec![1, 2, 3]))
//!     .with_metadata(Value::map([("TIMESTAMP", 1_700_000_000)]));
//!
//! let mut buf = BytesMut::new();
//! codec.encode(Message::from(req.clone()), &mut buf)?;
//!
//! // Bytes may arrive in any pieces; a frame decodes once it is complete.
//! let mut stream = BytesMut::new();
//! let mut decoded = Vec::new();
//! for byte in buf.iter() {
//!     stream.extend_from_slice(&[*byte]);
//!     if let Some(msg) = codec.decode(&mut stream)? {
//!         decoded.push(msg);
//!     }
//! }
//! assert_eq!(decoded, vec![Message::Request(req)]);
//!
//! // Over-limit input is a typed error, detected from the header alone.
//! let mut evil = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
//! assert!(matches!(
//!     codec.decode(&mut evil),
//!     Err(cypherwire_wire::Error::FrameTooLarge { len: 4294967295, max: 1048576 })
//! ));
//! # Ok::<(), cypherwire_wire::Error>(())
//! ```
//!
//! ## Features
//!
//! | feature | default | enables |
//! | --- | --- | --- |
//! | `msgpack` | yes | [`MsgPack`] (rmp-serde) |
//! | `json` | yes | [`Json`] (serde_json) |
//!
//! At least one codec must be enabled.
//!
//! The normative description of every byte is `docs/protocol.md` in the repository (§2 frames,
//! §4 envelopes), with test vectors in `docs/test-vectors/`.

#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod codec;
mod codec_id;
mod envelope;
mod error;
pub mod frame;
mod limits;
pub mod message;
mod message_codec;
mod typed;
pub mod value;

pub use bytes;

#[cfg(feature = "json")]
pub use crate::codec::Json;
#[cfg(feature = "msgpack")]
pub use crate::codec::MsgPack;
pub use crate::codec::{Codec, CodecId, PayloadCodec};
pub use crate::error::{Error, Result};
pub use crate::frame::{FRAME_HEADER_LEN, FrameCodec};
pub use crate::limits::{
    DEFAULT_MAX_DEPTH, DEFAULT_MAX_FRAME_LEN, HANDSHAKE_MAX_FRAME_LEN, Limits, MAX_DEPTH_CAP,
    MAX_FRAME_LEN_CAP,
};
pub use crate::message::{
    Action, Cancel, Close, CloseCode, ENVELOPE_VERSION, Message, Ping, Pong, Push, Request,
    Response, Resume, Status, StatusCode, TokenBytes, Welcome,
};
pub use crate::message_codec::MessageCodec;
pub use crate::value::{Integer, Value, from_value, to_value};
