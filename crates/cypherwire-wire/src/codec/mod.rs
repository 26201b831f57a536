//! Payload codecs: how a message's fields become bytes.
//!
//! A [`PayloadCodec`] turns any `serde` value into bytes and back, enforcing [`Limits`] while
//! decoding. Two are built in:
//!
//! | codec | id | feature | notes |
//! | --- | --- | --- | --- |
//! | [`MsgPack`] | 1 | `msgpack` (default) | compact; structs as arrays; the default |
//! | [`Json`] | 2 | `json` | human-readable; [`Value`](crate::Value) bytes as `{"$bytes": base64}` |
//!
//! [`Codec`] selects one at run time from its [`CodecId`], which is what the handshake
//! negotiates.
//!
//! Before any decoding, the input's structure is scanned without allocating: nesting depth is
//! checked against [`Limits::max_depth`], and every MessagePack length field against the bytes
//! actually present, so no decoder ever pre-allocates from a declared length. MessagePack
//! requests and responses in the form the encoder writes are decoded in one pass that makes
//! the same checks as it goes ([`PayloadCodec::decode_request`]); every other input takes the
//! scan and the general decoder. Requests and responses are also encoded without serde's
//! dispatch ([`PayloadCodec::encode_request`]), to the same bytes.

#[cfg(feature = "msgpack")]
mod direct;
#[cfg(feature = "json")]
mod json;
#[cfg(feature = "msgpack")]
mod msgpack;
mod scan;

use std::fmt;

use bytes::BytesMut;
use serde::Serialize;
use serde::de::DeserializeOwned;

#[cfg(feature = "json")]
pub use self::json::Json;
#[cfg(feature = "msgpack")]
pub use self::msgpack::MsgPack;
pub use crate::codec_id::CodecId;
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::message::{Request, Response};

#[cfg(not(any(feature = "msgpack", feature = "json")))]
compile_error!("cypherwire-wire needs at least one payload codec: enable `msgpack` or `json`");

impl CodecId {
    /// Parses an identifier byte.
    ///
    /// # Errors
    /// [`Error::UnknownCodec`] for bytes that name no codec.
    pub const fn from_u8(b: u8) -> Result<Self> {
        match b {
            1 => Ok(Self::MsgPack),
            2 => Ok(Self::Json),
            other => Err(Error::UnknownCodec(other)),
        }
    }
}

/// Encodes and decodes payloads.
///
/// Implementations must be total on untrusted input: any byte string either decodes or yields
/// an [`Error`], within time and memory linear in its length.
pub trait PayloadCodec: fmt::Debug + Send + Sync {
    /// This codec's identifier.
    fn id(&self) -> CodecId;

    /// Appends the encoding of `value` to `dst`.
    ///
    /// # Errors
    /// [`Error::Encode`] if the value cannot be expressed in this format.
    fn encode<T: Serialize + ?Sized>(&self, value: &T, dst: &mut BytesMut) -> Result<()>;

    /// Decodes exactly one value that spans all of `src`.
    ///
    /// # Errors
    /// [`Error::DepthExceeded`], [`Error::LengthExceedsInput`], [`Error::InvalidUtf8`],
    /// [`Error::TrailingBytes`], [`Error::Unsupported`] or [`Error::Decode`].
    fn decode<T: DeserializeOwned>(&self, src: &[u8], limits: &Limits) -> Result<T>;

    /// Appends a [`Request`] payload, as [`encode`](Self::encode) does (the default calls it).
    /// A codec may override it with a faster path; it must write what `encode` writes.
    ///
    /// # Errors
    /// As [`encode`](Self::encode).
    fn encode_request(&self, request: &Request, dst: &mut BytesMut) -> Result<()> {
        self.encode(request, dst)
    }

    /// Appends a [`Response`] payload, as [`encode`](Self::encode) does (the default calls
    /// it); see [`encode_request`](Self::encode_request).
    ///
    /// # Errors
    /// As [`encode`](Self::encode).
    fn encode_response(&self, response: &Response, dst: &mut BytesMut) -> Result<()> {
        self.encode(response, dst)
    }

    /// Decodes a [`Request`] payload, as [`decode`](Self::decode) does (the default calls it).
    /// A codec may override it with a faster path for the envelope every request carries; it
    /// must return what `decode` returns, value or error.
    ///
    /// # Errors
    /// As [`decode`](Self::decode).
    fn decode_request(&self, src: &[u8], limits: &Limits) -> Result<Request> {
        self.decode(src, limits)
    }

    /// Decodes a [`Response`] payload, as [`decode`](Self::decode) does (the default calls
    /// it); see [`decode_request`](Self::decode_request).
    ///
    /// # Errors
    /// As [`decode`](Self::decode).
    fn decode_response(&self, src: &[u8], limits: &Limits) -> Result<Response> {
        self.decode(src, limits)
    }
}

/// A payload codec chosen at run time, e.g. from a negotiated [`CodecId`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Codec {
    /// [`MsgPack`].
    #[cfg(feature = "msgpack")]
    MsgPack,
    /// [`Json`].
    #[cfg(feature = "json")]
    Json,
}

impl Codec {
    /// Every codec compiled into this build, in order of preference.
    pub const ALL: &'static [Self] = &[
        #[cfg(feature = "msgpack")]
        Self::MsgPack,
        #[cfg(feature = "json")]
        Self::Json,
    ];

    /// The codec for an identifier.
    ///
    /// # Errors
    /// [`Error::UnknownCodec`] if the codec is not compiled into this build.
    pub fn from_id(id: CodecId) -> Result<Self> {
        match id {
            #[cfg(feature = "msgpack")]
            CodecId::MsgPack => Ok(Self::MsgPack),
            #[cfg(feature = "json")]
            CodecId::Json => Ok(Self::Json),
            #[allow(unreachable_patterns, reason = "reachable when a codec feature is off")]
            other => Err(Error::UnknownCodec(other.to_u8())),
        }
    }
}

impl Default for Codec {
    /// MessagePack when compiled in, JSON otherwise.
    fn default() -> Self {
        Self::ALL[0]
    }
}

/// Calls the same method on the codec a [`Codec`] selects.
macro_rules! dispatch {
    ($codec:expr, $method:ident($($arg:expr),*)) => {
        match $codec {
            #[cfg(feature = "msgpack")]
            Codec::MsgPack => MsgPack.$method($($arg),*),
            #[cfg(feature = "json")]
            Codec::Json => Json.$method($($arg),*),
        }
    };
}

impl PayloadCodec for Codec {
    fn id(&self) -> CodecId {
        dispatch!(self, id())
    }

    fn encode<T: Serialize + ?Sized>(&self, value: &T, dst: &mut BytesMut) -> Result<()> {
        dispatch!(self, encode(value, dst))
    }

    fn decode<T: DeserializeOwned>(&self, src: &[u8], limits: &Limits) -> Result<T> {
        dispatch!(self, decode(src, limits))
    }

    fn encode_request(&self, request: &Request, dst: &mut BytesMut) -> Result<()> {
        dispatch!(self, encode_request(request, dst))
    }

    fn encode_response(&self, response: &Response, dst: &mut BytesMut) -> Result<()> {
        dispatch!(self, encode_response(response, dst))
    }

    fn decode_request(&self, src: &[u8], limits: &Limits) -> Result<Request> {
        dispatch!(self, decode_request(src, limits))
    }

    fn decode_response(&self, src: &[u8], limits: &Limits) -> Result<Response> {
        dispatch!(self, decode_response(src, limits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_ids_round_trip() {
        for &c in Codec::ALL {
            let id = c.id();
            assert!(id.is_available());
            assert_eq!(CodecId::from_u8(id.to_u8()).unwrap(), id);
            assert_eq!(Codec::from_id(id).unwrap(), c);
        }
        assert!(matches!(CodecId::from_u8(0), Err(Error::UnknownCodec(0))));
        assert!(matches!(CodecId::from_u8(3), Err(Error::UnknownCodec(3))));
    }
}
