//! Length-prefixed frames.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 body length (u32, big-endian)                 |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    body (length bytes) ...                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The length counts the body only. It is checked against [`Limits::max_frame_len`] as soon as
//! the four header bytes are present, before any memory is reserved for the body; a zero length
//! is rejected too (`docs/protocol.md` §2).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::{Error, Result};
use crate::limits::Limits;

/// Size of the frame header in bytes.
pub const FRAME_HEADER_LEN: usize = 4;

/// A `tokio_util` codec for length-prefixed frames (sans-IO: bytes in, frames out).
///
/// Decoding yields each frame's body; encoding prepends the header. Input may arrive split at
/// any byte. When the stream ends inside a frame, [`Decoder::decode_eof`] returns
/// [`Error::Truncated`].
///
/// ```
/// use bytes::BytesMut;
/// use cypherwire_wire::{FrameCodec, Limits};
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = FrameCodec::new(Limits::default());
/// let mut buf = BytesMut::new();
/// codec.encode(&b"hello"[..], &mut buf)?;
/// assert_eq!(&buf[..], b"\0\0\0\x05hello");
/// assert_eq!(codec.decode(&mut buf)?.as_deref(), Some(&b"hello"[..]));
/// # Ok::<(), cypherwire_wire::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    max_len: usize,
}

impl FrameCodec {
    /// A codec enforcing `limits.max_frame_len()`.
    pub fn new(limits: Limits) -> Self {
        Self {
            max_len: limits.max_frame_len(),
        }
    }

    /// The maximum body length in force.
    pub fn max_frame_len(&self) -> usize {
        self.max_len
    }

    /// Changes the maximum body length, e.g. when the handshake completes and the
    /// post-handshake limit applies.
    pub fn set_limits(&mut self, limits: Limits) {
        self.max_len = limits.max_frame_len();
    }

    /// Checks a body length against the limit.
    pub(crate) fn check_len(&self, len: usize) -> Result<()> {
        if len == 0 {
            return Err(Error::EmptyFrame);
        }
        if len > self.max_len {
            return Err(Error::FrameTooLarge {
                len: len as u64,
                max: self.max_len,
            });
        }
        Ok(())
    }

    /// The body length announced by the frame header at the start of `src`, checked against
    /// the limit; `None` while fewer than [`FRAME_HEADER_LEN`] bytes are there. Lets a reader
    /// place a large body itself (e.g. straight where it will be used) instead of buffering it.
    ///
    /// # Errors
    /// [`Error::EmptyFrame`], [`Error::FrameTooLarge`].
    pub fn peek_len(&self, src: &[u8]) -> Result<Option<usize>> {
        let Some(header) = src.get(..FRAME_HEADER_LEN) else {
            return Ok(None);
        };
        let mut len_bytes = [0u8; FRAME_HEADER_LEN];
        len_bytes.copy_from_slice(header);
        let announced = u32::from_be_bytes(len_bytes);
        // spec: §2.1 "MUST be checked before any memory is reserved for the body"
        let len = usize::try_from(announced).map_err(|_| Error::FrameTooLarge {
            len: u64::from(announced),
            max: self.max_len,
        })?;
        self.check_len(len)?;
        Ok(Some(len))
    }

    /// Reserves a header in `dst` for a body that the caller is about to append, and returns
    /// its position for [`finish_frame`](Self::finish_frame). Lets encoders serialise straight
    /// into the output buffer with no intermediate copy.
    pub fn begin_frame(dst: &mut BytesMut) -> usize {
        let start = dst.len();
        dst.put_u32(0);
        start
    }

    /// Completes a frame started with [`begin_frame`](Self::begin_frame): checks the body
    /// length and writes the header. On error the partial frame is removed from `dst`.
    pub fn finish_frame(&self, dst: &mut BytesMut, start: usize) -> Result<()> {
        let body_len = dst.len() - start - FRAME_HEADER_LEN;
        if let Err(e) = self.check_len(body_len) {
            dst.truncate(start);
            return Err(e);
        }
        // check_len guarantees body_len <= max_len <= u32::MAX.
        let header = u32::try_from(body_len).map_err(|_| Error::FrameTooLarge {
            len: body_len as u64,
            max: self.max_len,
        })?;
        dst[start..start + FRAME_HEADER_LEN].copy_from_slice(&header.to_be_bytes());
        Ok(())
    }
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>> {
        let Some(len) = self.peek_len(src)? else {
            return Ok(None);
        };
        let total = FRAME_HEADER_LEN + len;
        if src.len() < total {
            // Reserve at most what this (checked) frame still needs.
            src.reserve(total - src.len());
            return Ok(None);
        }
        src.advance(FRAME_HEADER_LEN);
        Ok(Some(src.split_to(len)))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => {
                let needed = match src.get(..FRAME_HEADER_LEN) {
                    Some(h) => {
                        FRAME_HEADER_LEN + u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize
                    }
                    None => FRAME_HEADER_LEN,
                };
                Err(Error::Truncated {
                    needed,
                    available: src.len(),
                })
            }
        }
    }
}

impl Encoder<&[u8]> for FrameCodec {
    type Error = Error;

    fn encode(&mut self, body: &[u8], dst: &mut BytesMut) -> Result<()> {
        self.check_len(body.len())?;
        dst.reserve(FRAME_HEADER_LEN + body.len());
        let start = Self::begin_frame(dst);
        dst.extend_from_slice(body);
        self.finish_frame(dst, start)
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = Error;

    fn encode(&mut self, body: Bytes, dst: &mut BytesMut) -> Result<()> {
        self.encode(&body[..], dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(max: usize) -> FrameCodec {
        FrameCodec::new(Limits::default().with_max_frame_len(max).unwrap())
    }

    #[test]
    fn oversize_header_fails_before_body_arrives() {
        let mut c = codec(16);
        let mut src = BytesMut::from(&[0u8, 0, 0, 17][..]);
        let err = c.decode(&mut src).unwrap_err();
        assert!(matches!(err, Error::FrameTooLarge { len: 17, max: 16 }));
        // No room was reserved for the announced body.
        assert!(src.capacity() < 17);
    }

    #[test]
    fn max_u32_length_is_rejected_from_header() {
        let mut c = codec(1 << 20);
        let mut src = BytesMut::from(&[0xffu8, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            c.decode(&mut src),
            Err(Error::FrameTooLarge {
                len: 0xffff_ffff,
                ..
            })
        ));
    }

    #[test]
    fn zero_length_frame_is_rejected() {
        let mut c = codec(16);
        let mut src = BytesMut::from(&[0u8, 0, 0, 0][..]);
        assert!(matches!(c.decode(&mut src), Err(Error::EmptyFrame)));
    }

    #[test]
    fn truncated_stream_is_reported_at_eof() {
        let mut c = codec(16);
        let mut src = BytesMut::from(&[0u8, 0, 0, 5, b'a', b'b'][..]);
        assert!(c.decode(&mut src).unwrap().is_none());
        assert!(matches!(
            c.decode_eof(&mut src),
            Err(Error::Truncated {
                needed: 9,
                available: 6
            })
        ));
        let mut half_header = BytesMut::from(&[0u8, 0][..]);
        assert!(matches!(
            c.decode_eof(&mut half_header),
            Err(Error::Truncated {
                needed: 4,
                available: 2
            })
        ));
        assert!(c.decode_eof(&mut BytesMut::new()).unwrap().is_none());
    }

    #[test]
    fn encode_rejects_oversize_and_empty_bodies_without_writing() {
        let mut c = codec(4);
        let mut dst = BytesMut::new();
        assert!(matches!(
            c.encode(&b"12345"[..], &mut dst),
            Err(Error::FrameTooLarge { len: 5, max: 4 })
        ));
        assert!(matches!(
            c.encode(&b""[..], &mut dst),
            Err(Error::EmptyFrame)
        ));
        assert!(dst.is_empty());
    }
}
