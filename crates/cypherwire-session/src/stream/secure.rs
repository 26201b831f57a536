//! The secure stream types: a session over one I/O object, and its two halves after a split.

use bytes::{Bytes, BytesMut};
use cypherwire_wire::{Codec, CodecId, FrameCodec, Limits, Message};
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};

use super::state::{RecvState, SendState};
use crate::error::Result;
use crate::handshake::{Established, Role};
use crate::identity::PublicKey;
use crate::suite::CipherSuite;

/// What was negotiated for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionInfo {
    /// This side's role.
    pub role: Role,
    /// The cipher suite.
    pub suite: CipherSuite,
    /// The payload codec.
    pub codec: CodecId,
    /// The Noise handshake hash (channel binding; not secret).
    pub handshake_hash: [u8; 32],
    /// The peer's authenticated static key (identity mode only).
    pub peer_identity: Option<PublicKey>,
}

/// The receiving methods, written once for [`SecureStream`] and [`SecureReader`] (both hold
/// `io` and `recv`).
macro_rules! receiving {
    () => {
        /// Receives the next message; `Ok(None)` once the peer closed the session (authenticated).
        ///
        /// # Errors
        /// [`Error::Truncated`](crate::Error::Truncated) if the stream ends without the peer's
        /// close, [`Error::Decrypt`](crate::Error::Decrypt) for a record that fails
        /// authentication, framing or I/O errors. After an error the session must be dropped.
        pub async fn recv(&mut self) -> Result<Option<Bytes>> {
            self.recv.recv(&mut self.io).await
        }

        /// Receives the next envelope, decoded with the negotiated codec.
        ///
        /// # Errors
        /// As [`recv`](Self::recv), plus decoding errors.
        pub async fn recv_message(&mut self) -> Result<Option<Message>> {
            self.recv.recv_message(&mut self.io).await
        }

        /// Plaintext bytes of the messages received so far.
        pub fn bytes_received(&self) -> u64 {
            self.recv.bytes
        }
    };
}

/// The sending methods, written once for [`SecureStream`] and [`SecureWriter`] (both hold
/// `io` and `send`).
macro_rules! sending {
    () => {
        /// Sends one message (chunked into several records if it is large).
        ///
        /// # Errors
        /// [`Error::Closed`](crate::Error::Closed) after [`close`](Self::close), or I/O errors.
        pub async fn send(&mut self, msg: &[u8]) -> Result<()> {
            self.send.queue(msg)?;
            self.send.flush(&mut self.io).await
        }

        /// Sends one envelope, encoded with the negotiated codec straight into the record.
        ///
        /// # Errors
        /// As [`send`](Self::send), plus encoding errors.
        pub async fn send_message(&mut self, msg: &Message) -> Result<()> {
            self.send.queue_message(msg)?;
            self.send.flush(&mut self.io).await
        }

        /// Seals a message into the output buffer without writing it; [`flush`](Self::flush)
        /// writes everything queued in one go (batching for pipelined traffic).
        ///
        /// # Errors
        /// [`Error::Closed`](crate::Error::Closed) after close.
        pub fn queue(&mut self, msg: &[u8]) -> Result<()> {
            self.send.queue(msg)
        }

        /// Like [`queue`](Self::queue) for an envelope.
        ///
        /// # Errors
        /// As [`send_message`](Self::send_message).
        pub fn queue_message(&mut self, msg: &Message) -> Result<()> {
            self.send.queue_message(msg)
        }

        /// Writes everything queued.
        ///
        /// Cancellation-safe: if the future is dropped before it completes (e.g. in a `select!`),
        /// the next `flush` continues where this one stopped; nothing is written twice.
        ///
        /// # Errors
        /// I/O errors.
        pub async fn flush(&mut self) -> Result<()> {
            self.send.flush(&mut self.io).await
        }

        /// Sends the authenticated close and shuts down the write side.
        ///
        /// # Errors
        /// [`Error::Closed`](crate::Error::Closed) if already closed, or I/O errors.
        pub async fn close(&mut self) -> Result<()> {
            self.send.close(&mut self.io).await
        }

        /// Plaintext bytes of the messages sent (queued) so far.
        pub fn bytes_sent(&self) -> u64 {
            self.send.bytes
        }
    };
}

pub(super) fn split_state(
    est: Established,
    leftover: BytesMut,
    limits: Limits,
) -> (SessionInfo, RecvState, SendState) {
    let codec = Codec::from_id(est.codec).unwrap_or_default();
    let info = SessionInfo {
        role: est.role,
        suite: est.suite,
        codec: est.codec,
        handshake_hash: est.handshake_hash,
        peer_identity: est.peer_identity,
    };
    let recv = RecvState {
        bytes: 0,
        buf: leftover,
        frames: FrameCodec::new(limits),
        opener: est.opener,
        appending: None,
        codec,
        limits,
        done: false,
        refusal_possible: est.role == Role::Initiator,
    };
    let send = SendState {
        bytes: 0,
        buf: BytesMut::with_capacity(16 * 1024),
        written: 0,
        sealer: est.sealer,
        codec,
    };
    (info, recv, send)
}

/// An established session over one I/O object: whole messages in and out, encrypted.
#[derive(Debug)]
pub struct SecureStream<IO> {
    pub(super) io: IO,
    pub(super) info: SessionInfo,
    pub(super) recv: RecvState,
    pub(super) send: SendState,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> SecureStream<IO> {
    pub(super) fn new(io: IO, est: Established, leftover: BytesMut, limits: Limits) -> Self {
        let (info, recv, send) = split_state(est, leftover, limits);
        Self {
            io,
            info,
            recv,
            send,
        }
    }

    /// What was negotiated.
    pub fn info(&self) -> &SessionInfo {
        &self.info
    }

    sending!();

    receiving!();

    /// Splits into a reader and a writer that can be used from two tasks.
    pub fn into_split(self) -> (SecureReader<ReadHalf<IO>>, SecureWriter<WriteHalf<IO>>) {
        let (r, w) = tokio::io::split(self.io);
        (
            SecureReader {
                io: r,
                info: self.info,
                recv: self.recv,
            },
            SecureWriter {
                io: w,
                info: self.info,
                send: self.send,
            },
        )
    }
}

/// The receiving half of a split [`SecureStream`].
#[derive(Debug)]
pub struct SecureReader<R> {
    pub(super) io: R,
    pub(super) info: SessionInfo,
    pub(super) recv: RecvState,
}

impl<R: AsyncRead + Unpin> SecureReader<R> {
    /// What was negotiated.
    pub fn info(&self) -> &SessionInfo {
        &self.info
    }

    receiving!();
}

/// The sending half of a split [`SecureStream`].
#[derive(Debug)]
pub struct SecureWriter<W> {
    pub(super) io: W,
    pub(super) info: SessionInfo,
    pub(super) send: SendState,
}

impl<W: AsyncWrite + Unpin> SecureWriter<W> {
    /// What was negotiated.
    pub fn info(&self) -> &SessionInfo {
        &self.info
    }

    sending!();
}
