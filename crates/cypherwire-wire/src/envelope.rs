//! Envelopes on the wire (`docs/protocol.md` §4.1): a message as version, kind and payload,
//! the payload in the negotiated codec.

use bytes::{BufMut, BytesMut};

use crate::codec::PayloadCodec;
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::message::{ENVELOPE_VERSION, Message, kind};

impl Message {
    /// Appends this message's envelope (version, kind, payload) to `dst`.
    ///
    /// # Errors
    /// [`Error::Encode`] if the codec cannot express the message; `dst` is then unchanged.
    pub fn encode<C: PayloadCodec + ?Sized>(&self, codec: &C, dst: &mut BytesMut) -> Result<()> {
        let start = dst.len();
        dst.put_u8(ENVELOPE_VERSION);
        dst.put_u8(self.kind());
        let res = match self {
            Self::Request(m) => codec.encode_request(m, dst),
            Self::Response(m) => codec.encode_response(m, dst),
            Self::Action(m) => codec.encode(m, dst),
            Self::Push(m) => codec.encode(m, dst),
            Self::Cancel(m) => codec.encode(m, dst),
            Self::Ping(m) => codec.encode(m, dst),
            Self::Pong(m) => codec.encode(m, dst),
            Self::Close(m) => codec.encode(m, dst),
            Self::Welcome(m) => codec.encode(m, dst),
            Self::Resume(m) => codec.encode(m, dst),
        };
        if res.is_err() {
            dst.truncate(start);
        }
        res
    }

    /// The length of this message's envelope in `codec`: what [`encode`](Self::encode) would
    /// append. Encodes it to find out, so it costs as much as sending; [`Message::approx_size`]
    /// is the cheap bound.
    ///
    /// # Errors
    /// As [`encode`](Self::encode).
    pub fn encoded_len<C: PayloadCodec + ?Sized>(&self, codec: &C) -> Result<usize> {
        let mut buf = BytesMut::with_capacity(self.approx_size());
        self.encode(codec, &mut buf)?;
        Ok(buf.len())
    }

    /// Decodes one envelope that spans all of `body`.
    ///
    /// # Errors
    /// [`Error::Truncated`] for a body shorter than the two header bytes,
    /// [`Error::UnsupportedVersion`], [`Error::UnknownKind`], or the codec's decoding errors.
    pub fn decode<C: PayloadCodec + ?Sized>(
        codec: &C,
        body: &[u8],
        limits: &Limits,
    ) -> Result<Self> {
        let [version, kind, payload @ ..] = body else {
            return Err(Error::Truncated {
                needed: 2,
                available: body.len(),
            });
        };
        // spec: §4.1 "a receiver MUST reject an envelope whose version it does not speak"
        if *version != ENVELOPE_VERSION {
            return Err(Error::UnsupportedVersion(*version));
        }
        Ok(match *kind {
            kind::REQUEST => Self::Request(codec.decode_request(payload, limits)?),
            kind::RESPONSE => Self::Response(codec.decode_response(payload, limits)?),
            kind::ACTION => Self::Action(codec.decode(payload, limits)?),
            kind::PUSH => Self::Push(codec.decode(payload, limits)?),
            kind::CANCEL => Self::Cancel(codec.decode(payload, limits)?),
            kind::PING => Self::Ping(codec.decode(payload, limits)?),
            kind::PONG => Self::Pong(codec.decode(payload, limits)?),
            kind::CLOSE => Self::Close(codec.decode(payload, limits)?),
            kind::WELCOME => Self::Welcome(codec.decode(payload, limits)?),
            kind::RESUME => Self::Resume(codec.decode(payload, limits)?),
            other => return Err(Error::UnknownKind(other)),
        })
    }
}

#[cfg(all(test, feature = "msgpack"))]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::codec::MsgPack;
    use crate::message::{Ping, Request};

    #[test]
    fn ping_envelope_matches_hand_computed_bytes() {
        // version 1, kind 0x06, payload = MessagePack [42] = 0x91 0x2a (docs/protocol.md §4.4).
        let mut buf = BytesMut::new();
        Message::Ping(Ping::new(42))
            .encode(&MsgPack, &mut buf)
            .unwrap();
        assert_eq!(&buf[..], &[0x01, 0x06, 0x91, 0x2a]);
    }

    #[test]
    fn request_envelope_matches_hand_computed_bytes() {
        // [7, "/N", "READ", nil, nil, 1500]
        let mut buf = BytesMut::new();
        let req = Request::new(7, "/N", "READ").with_deadline(Duration::from_millis(1500));
        Message::from(req).encode(&MsgPack, &mut buf).unwrap();
        let expected = [
            0x01, 0x01, 0x96, 0x07, 0xa2, b'/', b'N', 0xa4, b'R', b'E', b'A', b'D', 0xc0, 0xc0,
            0xcd, 0x05, 0xdc,
        ];
        assert_eq!(&buf[..], &expected);
    }

    #[test]
    fn unknown_version_and_kind_are_typed_errors() {
        let l = Limits::default();
        assert!(matches!(
            Message::decode(&MsgPack, &[2, 6, 0x91, 0x2a], &l),
            Err(Error::UnsupportedVersion(2))
        ));
        assert!(matches!(
            Message::decode(&MsgPack, &[1, 0x09, 0x90], &l),
            Err(Error::UnknownKind(9))
        ));
        assert!(matches!(
            Message::decode(&MsgPack, &[1, 0x42, 0x90], &l),
            Err(Error::UnknownKind(0x42))
        ));
        assert!(matches!(
            Message::decode(&MsgPack, &[1], &l),
            Err(Error::Truncated {
                needed: 2,
                available: 1
            })
        ));
    }

    #[test]
    fn wrong_shape_payload_is_a_decode_error() {
        // A Ping whose nonce is a string.
        let err = Message::decode(&MsgPack, &[1, 6, 0x91, 0xa1, b'x'], &Limits::default());
        assert!(matches!(err, Err(Error::Decode { .. })));
    }
}
