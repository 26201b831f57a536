//! [`MessageCodec`]: frames + envelopes, for `tokio_util::codec::Framed`.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::codec::{Codec, PayloadCodec};
use crate::error::Result;
use crate::frame::FrameCodec;
use crate::limits::Limits;
use crate::message::Message;

/// Decodes frames into [`Message`]s and encodes messages into frames, with a payload codec
/// chosen at construction (sans-IO; wrap an I/O object with `Framed` to use it on a socket).
///
/// Encoding serialises straight into the output buffer: no intermediate copy.
///
/// ```
/// use bytes::BytesMut;
/// use cypherwire_wire::{Codec, Limits, Message, MessageCodec, Ping};
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = MessageCodec::new(Codec::default(), Limits::default());
/// let mut buf = BytesMut::new();
/// codec.encode(Message::Ping(Ping::new(42)), &mut buf)?;
/// assert_eq!(&buf[..], &[0, 0, 0, 4, 0x01, 0x06, 0x91, 0x2a]);
/// let msg = codec.decode(&mut buf)?.expect("one whole frame");
/// assert_eq!(msg, Message::Ping(Ping::new(42)));
/// # Ok::<(), cypherwire_wire::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct MessageCodec<P = Codec> {
    frames: FrameCodec,
    payload: P,
    limits: Limits,
}

impl<P: PayloadCodec> MessageCodec<P> {
    /// A codec using `payload` for envelope payloads and enforcing `limits`.
    pub fn new(payload: P, limits: Limits) -> Self {
        Self {
            frames: FrameCodec::new(limits),
            payload,
            limits,
        }
    }

    /// The payload codec.
    pub fn payload_codec(&self) -> &P {
        &self.payload
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Replaces the limits (e.g. after the handshake).
    pub fn set_limits(&mut self, limits: Limits) {
        self.frames.set_limits(limits);
        self.limits = limits;
    }
}

impl<P: PayloadCodec> Decoder for MessageCodec<P> {
    type Item = Message;
    type Error = crate::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>> {
        match self.frames.decode(src)? {
            Some(body) => Message::decode(&self.payload, &body, &self.limits).map(Some),
            None => Ok(None),
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Message>> {
        match self.frames.decode_eof(src)? {
            Some(body) => Message::decode(&self.payload, &body, &self.limits).map(Some),
            None => Ok(None),
        }
    }
}

impl<P: PayloadCodec> Encoder<&Message> for MessageCodec<P> {
    type Error = crate::Error;

    fn encode(&mut self, msg: &Message, dst: &mut BytesMut) -> Result<()> {
        let start = FrameCodec::begin_frame(dst);
        if let Err(e) = msg.encode(&self.payload, dst) {
            dst.truncate(start);
            return Err(e);
        }
        self.frames.finish_frame(dst, start)
    }
}

impl<P: PayloadCodec> Encoder<Message> for MessageCodec<P> {
    type Error = crate::Error;

    fn encode(&mut self, msg: Message, dst: &mut BytesMut) -> Result<()> {
        self.encode(&msg, dst)
    }
}
