//! The two directions of an established session as state over any I/O object: reading
//! frames and opening records (with in-place reassembly of large records), sealing into a
//! buffer and writing it out (cancellation-safe).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use cypherwire_wire::{Codec, FRAME_HEADER_LEN, FrameCodec, Limits, Message};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::Decoder;

use crate::error::{Error, Result};
use crate::record::{Opened, Opener, Sealer};

/// The time as the sans-IO record layer wants it: tokio's clock, so paused test time applies.
pub(super) fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// Reads one frame body; `Ok(None)` on a clean EOF between frames.
pub(super) async fn read_frame<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    frames: &mut FrameCodec,
) -> Result<Option<BytesMut>> {
    loop {
        if let Some(frame) = frames.decode(buf)? {
            return Ok(Some(frame));
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        if io.read_buf(buf).await? == 0 {
            return Ok(frames.decode_eof(buf)?);
        }
    }
}

/// Record bodies at least this long that continue a message being reassembled are read
/// straight into the reassembly buffer and opened there; shorter ones go through the input
/// buffer (and are copied into the message).
const DIRECT_MIN: usize = 4096;

/// Receiving state: buffered input, frame decoder, record opener.
#[derive(Debug)]
pub(super) struct RecvState {
    pub(super) bytes: u64,
    pub(super) buf: BytesMut,
    pub(super) frames: FrameCodec,
    pub(super) opener: Opener,
    /// A record body being read into the opener's reassembly buffer: where it starts and
    /// ends there (kept across calls: `recv` is cancellation-safe).
    pub(super) appending: Option<(usize, usize)>,
    pub(super) codec: Codec,
    pub(super) limits: Limits,
    pub(super) done: bool,
    /// An initiator whose last handshake message may still be refused: until a record opens,
    /// an 11-byte refusal frame (§3.9) is the responder's answer to it (identity mode refuses
    /// an untrusted key only after the initiator's final message). No record is that short.
    pub(super) refusal_possible: bool,
}

impl RecvState {
    pub(super) async fn recv<R: AsyncRead + Unpin>(&mut self, io: &mut R) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        loop {
            if self.appending.is_none() && self.opener.assembling() {
                self.begin_append()?;
            }
            let opened = if let Some((start, end)) = self.appending {
                self.read_appended(io, end).await?;
                self.appending = None;
                self.opener.open_appended(start)?
            } else {
                let Some(frame) = read_frame(io, &mut self.buf, &mut self.frames).await? else {
                    // spec: §3.5 "EOF without an authenticated close MUST be reported as truncation"
                    return Err(Error::Truncated);
                };
                if self.refusal_possible
                    && let Some(refusal) = crate::handshake::Refusal::parse(&frame)
                {
                    // spec: §3.9 "an initiator MUST check every handshake frame from the responder for a refusal"
                    return Err(Error::from_refusal(refusal));
                }
                self.opener.open(frame)?
            };
            self.refusal_possible = false;
            match opened {
                Opened::Message(m) => {
                    self.bytes += m.len() as u64;
                    return Ok(Some(m));
                }
                Opened::Close => {
                    self.done = true;
                    return Ok(None);
                }
                Opened::Partial | Opened::KeyUpdate => {}
            }
        }
    }

    /// If the next record's header is buffered and its body is large, starts reading the body
    /// into the reassembly buffer: what `buf` already holds of it moves there now.
    pub(super) fn begin_append(&mut self) -> Result<()> {
        let Some(len) = self.frames.peek_len(&self.buf)? else {
            return Ok(());
        };
        if len < DIRECT_MIN {
            return Ok(());
        }
        // Room for the next record's header too: reads ask for it (see `read_appended`).
        let start = self.opener.begin_append(len, FRAME_HEADER_LEN)?;
        self.buf.advance(FRAME_HEADER_LEN);
        let have = self.buf.len().min(len);
        self.opener
            .reassembly()
            .extend_from_slice(&self.buf[..have]);
        self.buf.advance(have);
        self.appending = Some((start, start + len));
        Ok(())
    }

    /// Reads until the reassembly buffer holds the body ending at `end`. Each read also asks
    /// for the next record's header, so that a body and the header after it take one read;
    /// bytes past the body go back to `buf` (which is empty while a body is read here).
    pub(super) async fn read_appended<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
        end: usize,
    ) -> Result<()> {
        loop {
            let dst = self.opener.reassembly();
            if dst.len() >= end {
                break;
            }
            // Within the room `begin_append` reserved: the buffer never grows here.
            let want = end + FRAME_HEADER_LEN - dst.len();
            if io.read_buf(&mut dst.limit(want)).await? == 0 {
                // spec: §3.5 "EOF without an authenticated close MUST be reported as truncation"
                return Err(Error::Truncated);
            }
        }
        let dst = self.opener.reassembly();
        if dst.len() > end {
            self.buf.extend_from_slice(&dst[end..]);
            dst.truncate(end);
        }
        Ok(())
    }

    pub(super) async fn recv_message<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
    ) -> Result<Option<Message>> {
        match self.recv(io).await? {
            Some(body) => Ok(Some(Message::decode(&self.codec, &body, &self.limits)?)),
            None => Ok(None),
        }
    }
}

/// The most send-buffer capacity a connection keeps between writes.
pub(super) const RETAINED_SEND_BUFFER: usize = 256 * 1024;

/// Sending state: output buffer and record sealer.
#[derive(Debug)]
pub(super) struct SendState {
    pub(super) bytes: u64,
    pub(super) buf: BytesMut,
    /// How much of `buf` a flush has written so far: a flush that is dropped midway (e.g. in a
    /// `select!`) resumes there instead of writing those bytes again.
    pub(super) written: usize,
    pub(super) sealer: Sealer,
    pub(super) codec: Codec,
}

impl SendState {
    pub(super) fn queue(&mut self, msg: &[u8]) -> Result<()> {
        self.sealer.seal_message(msg, now(), &mut self.buf)?;
        self.bytes += msg.len() as u64;
        Ok(())
    }

    pub(super) fn queue_message(&mut self, msg: &Message) -> Result<()> {
        let codec = self.codec;
        self.sealer.reserve(&mut self.buf, msg.approx_size());
        let mut len = 0;
        self.sealer.seal_with(now(), &mut self.buf, |dst| {
            let before = dst.len();
            msg.encode(&codec, dst)?;
            len = dst.len() - before;
            Ok(())
        })?;
        self.bytes += len as u64;
        Ok(())
    }

    pub(super) async fn flush<W: AsyncWrite + Unpin>(&mut self, io: &mut W) -> Result<()> {
        let res = self.write_out(io).await;
        self.buf.clear();
        self.written = 0;
        if self.buf.capacity() > RETAINED_SEND_BUFFER {
            // A large message's buffer goes back to the allocator: an idle connection keeps at
            // most this much.
            self.buf = BytesMut::new();
        }
        res?;
        io.flush().await?;
        Ok(())
    }

    /// Writes `buf` from `written` on, counting progress as it goes (cancellation-safe).
    pub(super) async fn write_out<W: AsyncWrite + Unpin>(&mut self, io: &mut W) -> Result<()> {
        while self.written < self.buf.len() {
            let n = io.write(&self.buf[self.written..]).await?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
            }
            self.written += n;
        }
        Ok(())
    }

    pub(super) async fn close<W: AsyncWrite + Unpin>(&mut self, io: &mut W) -> Result<()> {
        self.sealer.seal_close(&mut self.buf)?;
        self.flush(io).await?;
        io.shutdown().await?;
        Ok(())
    }
}
