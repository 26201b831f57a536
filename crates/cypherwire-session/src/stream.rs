//! The tokio adapter: handshake and records over any `AsyncRead + AsyncWrite`.
//!
//! [`connect`] and [`accept`] run the handshake (bounded by the configured timeout and the
//! 64 KiB pre-handshake frame limit) and return a [`SecureStream`]: send and receive whole
//! messages, or split it into a [`SecureReader`] and a [`SecureWriter`] for two tasks.
//!
//! ```
//! # async fn demo() -> Result<(), cypherwire_session::Error> {
//! use cypherwire_session::{Psk, SessionConfig, accept, connect};
//!
//! let psk = Psk::generate()?;
//! let (client_auth, server_auth) = (psk.clone().into(), psk.into());
//! let config = SessionConfig::default();
//! let (a, b) = tokio::io::duplex(64 * 1024);
//! let (client, server) =
//!     tokio::join!(connect(a, &client_auth, &config), accept(b, &server_auth, &config));
//! let (mut client, mut server) = (client?, server?);
//! client.send(b"hello").await?;
//! assert_eq!(server.recv().await?.as_deref(), Some(&b"hello"[..]));
//! client.close().await?;
//! assert_eq!(server.recv().await?, None); // authenticated end of stream
//! # Ok(()) }
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};
use cypherwire_wire::{Codec, CodecId, FRAME_HEADER_LEN, FrameCodec, Limits, Message};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio_util::codec::Decoder;

use crate::bans::{AttemptLimiter, Denied, Outcome};
use crate::config::SessionConfig;
use crate::error::{Error, Result};
use crate::handshake::{
    ClientAuth, Established, Initiator, Responder, Role, ServerAuth, Step, handshake_limits,
};
use crate::identity::PublicKey;
use crate::record::{Opened, Opener, Sealer};
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

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// Reads one frame body; `Ok(None)` on a clean EOF between frames.
async fn read_frame<R: AsyncRead + Unpin>(
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

async fn write_frame<W: AsyncWrite + Unpin>(io: &mut W, body: &[u8]) -> Result<()> {
    let mut buf = BytesMut::with_capacity(body.len() + 4);
    tokio_util::codec::Encoder::encode(&mut FrameCodec::new(handshake_limits()), body, &mut buf)?;
    io.write_all(&buf).await?;
    io.flush().await?;
    Ok(())
}

/// Runs the initiator's handshake over `io` and returns the secure stream.
///
/// In password mode the argon2 step runs on tokio's blocking pool.
///
/// # Errors
/// [`Error::HandshakeTimeout`], [`Error::AuthenticationFailed`] (wrong credentials or
/// tampering), [`Error::Handshake`], [`Error::Truncated`] if the peer hangs up (a responder
/// that rejects the credentials closes without an answer), or I/O errors.
pub async fn connect<IO>(
    mut io: IO,
    auth: &ClientAuth,
    config: &SessionConfig,
) -> Result<SecureStream<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::new();
    let est = tokio::time::timeout(config.handshake_timeout(), async {
        let mut frames = FrameCodec::new(handshake_limits());
        let (mut state, hello) = Initiator::start(auth, config)?;
        write_frame(&mut io, &hello).await?;
        loop {
            let msg = read_frame(&mut io, &mut buf, &mut frames)
                .await?
                .ok_or(Error::Truncated)?;
            let step = if state.next_step_is_expensive() {
                let slot = ARGON2_SLOTS
                    .acquire()
                    .await
                    .map_err(|_| Error::Config("argon2 slots closed"))?;
                // The slot moves into the computation: a timeout that drops this future does
                // not free it while argon2 still runs.
                tokio::task::spawn_blocking(move || {
                    let _slot = slot;
                    state.handle(&msg, now())
                })
                .await
                .map_err(|_| Error::Config("handshake task failed"))??
            } else {
                state.handle(&msg, now())?
            };
            match step {
                Step::Continue { state: next, send } => {
                    write_frame(&mut io, &send).await?;
                    state = next;
                }
                Step::Done { established, send } => {
                    if let Some(send) = send {
                        write_frame(&mut io, &send).await?;
                    }
                    return Ok::<_, Error>(*established);
                }
            }
        }
    })
    .await
    .map_err(|_| Error::HandshakeTimeout)??;
    Ok(SecureStream::new(io, est, buf, config.limits()))
}

/// Runs the responder's handshake over `io` and returns the secure stream.
///
/// # Errors
/// As [`connect`].
pub async fn accept<IO>(
    io: IO,
    auth: &ServerAuth,
    config: &SessionConfig,
) -> Result<SecureStream<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    respond(io, auth, config, None::<&Gate<'_, ()>>).await
}

/// The attempt limiter a guarded handshake asks before each step.
struct Gate<'a, K> {
    limiter: &'a std::sync::Mutex<AttemptLimiter<K>>,
    source: &'a K,
}

impl<K: std::hash::Hash + Eq + Clone> Gate<'_, K> {
    fn table(&self) -> std::sync::MutexGuard<'_, AttemptLimiter<K>> {
        // A poisoned lock only means another task panicked mid-update; the table is still a
        // valid (conservative) state.
        self.limiter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reserves an attempt for the next step, waiting while the source's budget is taken by
    /// attempts in progress (each lasts one synchronous step, so the wait is short; the
    /// handshake timeout bounds it).
    async fn begin(&self) -> Result<()> {
        loop {
            // Bound first: the guard must be gone before the sleep.
            let denied = self.table().begin(self.source, now());
            match denied {
                Ok(()) => return Ok(()),
                Err(Denied::Banned(_)) => return Err(Error::Banned),
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(1)).await,
            }
        }
    }

    fn finish(&self, outcome: Outcome) {
        self.table().finish(self.source, outcome, now());
    }
}

/// The responder's loop; with a gate, every step that can test a credential runs inside an
/// attempt reserved from the source's budget.
async fn respond<IO, K>(
    mut io: IO,
    auth: &ServerAuth,
    config: &SessionConfig,
    gate: Option<&Gate<'_, K>>,
) -> Result<SecureStream<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    K: std::hash::Hash + Eq + Clone,
{
    let mut buf = BytesMut::new();
    let est = tokio::time::timeout(config.handshake_timeout(), async {
        let mut frames = FrameCodec::new(handshake_limits());
        let mut state = Responder::new(auth, config);
        loop {
            let msg = read_frame(&mut io, &mut buf, &mut frames)
                .await?
                .ok_or(Error::Truncated)?;
            if let Some(gate) = gate {
                // spec: §3.2.3 "banned sources MUST be refused before any cryptographic work"
                gate.begin().await?;
            }
            // Synchronous: the reserved attempt never lasts across an await.
            let step = state.handle(&msg, now()).map_err(Error::from);
            if let Some(gate) = gate {
                gate.finish(match &step {
                    Ok(Step::Continue { .. }) => Outcome::Undecided,
                    Ok(Step::Done { .. }) => Outcome::Succeeded,
                    Err(Error::AuthenticationFailed | Error::Handshake(_)) => Outcome::Failed,
                    Err(_) => Outcome::Undecided,
                });
            }
            match step? {
                Step::Continue { state: next, send } => {
                    write_frame(&mut io, &send).await?;
                    state = next;
                }
                Step::Done { established, send } => {
                    if let Some(send) = send {
                        write_frame(&mut io, &send).await?;
                    }
                    return Ok::<_, Error>(*established);
                }
            }
        }
    })
    .await
    .map_err(|_| Error::HandshakeTimeout)??;
    Ok(SecureStream::new(io, est, buf, config.limits()))
}

/// Most argon2 computations one process runs at once (client side of password mode): bounds the
/// memory (19 MiB each at the default cost) and keeps the blocking pool free for other work. A
/// slot is held until its computation ends, even if the handshake that asked for it timed out.
pub const MAX_CONCURRENT_ARGON2: usize = 2;

static ARGON2_SLOTS: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(MAX_CONCURRENT_ARGON2);

/// [`accept`] guarded by an attempt limiter: a banned `source` is refused before a single byte
/// is read, and the ban is checked again before every handshake step (no Diffie–Hellman, no
/// PAKE work for a banned source). Each step runs as an attempt reserved from the source's
/// budget ([`AttemptLimiter::begin`]), so handshakes in parallel cannot test more guesses
/// than the policy allows; a failed authentication is counted, and a success clears the
/// source's failures.
///
/// # Errors
/// [`Error::Banned`], or as [`accept`].
pub async fn accept_guarded<IO, K>(
    io: IO,
    auth: &ServerAuth,
    config: &SessionConfig,
    limiter: &std::sync::Mutex<AttemptLimiter<K>>,
    source: &K,
) -> Result<SecureStream<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    K: std::hash::Hash + Eq + Clone,
{
    let gate = Gate { limiter, source };
    // spec: §3.2.3 "banned sources MUST be refused before any cryptographic work"
    if gate.table().check(source, now()).is_err() {
        return Err(Error::Banned);
    }
    respond(io, auth, config, Some(&gate)).await
}

/// Record bodies at least this long that continue a message being reassembled are read
/// straight into the reassembly buffer and opened there; shorter ones go through the input
/// buffer (and are copied into the message).
const DIRECT_MIN: usize = 4096;

/// Receiving state: buffered input, frame decoder, record opener.
#[derive(Debug)]
struct RecvState {
    bytes: u64,
    buf: BytesMut,
    frames: FrameCodec,
    opener: Opener,
    /// A record body being read into the opener's reassembly buffer: where it starts and
    /// ends there (kept across calls: `recv` is cancellation-safe).
    appending: Option<(usize, usize)>,
    codec: Codec,
    limits: Limits,
    done: bool,
}

impl RecvState {
    async fn recv<R: AsyncRead + Unpin>(&mut self, io: &mut R) -> Result<Option<Bytes>> {
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
                self.opener.open(frame)?
            };
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
    fn begin_append(&mut self) -> Result<()> {
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
    async fn read_appended<R: AsyncRead + Unpin>(&mut self, io: &mut R, end: usize) -> Result<()> {
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

    async fn recv_message<R: AsyncRead + Unpin>(&mut self, io: &mut R) -> Result<Option<Message>> {
        match self.recv(io).await? {
            Some(body) => Ok(Some(Message::decode(&self.codec, &body, &self.limits)?)),
            None => Ok(None),
        }
    }
}

/// The most send-buffer capacity a connection keeps between writes.
const RETAINED_SEND_BUFFER: usize = 256 * 1024;

/// Sending state: output buffer and record sealer.
#[derive(Debug)]
struct SendState {
    bytes: u64,
    buf: BytesMut,
    /// How much of `buf` a flush has written so far: a flush that is dropped midway (e.g. in a
    /// `select!`) resumes there instead of writing those bytes again.
    written: usize,
    sealer: Sealer,
    codec: Codec,
}

impl SendState {
    fn queue(&mut self, msg: &[u8]) -> Result<()> {
        self.sealer.seal_message(msg, now(), &mut self.buf)?;
        self.bytes += msg.len() as u64;
        Ok(())
    }

    fn queue_message(&mut self, msg: &Message) -> Result<()> {
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

    async fn flush<W: AsyncWrite + Unpin>(&mut self, io: &mut W) -> Result<()> {
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
    async fn write_out<W: AsyncWrite + Unpin>(&mut self, io: &mut W) -> Result<()> {
        while self.written < self.buf.len() {
            let n = io.write(&self.buf[self.written..]).await?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
            }
            self.written += n;
        }
        Ok(())
    }

    async fn close<W: AsyncWrite + Unpin>(&mut self, io: &mut W) -> Result<()> {
        self.sealer.seal_close(&mut self.buf)?;
        self.flush(io).await?;
        io.shutdown().await?;
        Ok(())
    }
}

fn split_state(
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
    io: IO,
    info: SessionInfo,
    recv: RecvState,
    send: SendState,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> SecureStream<IO> {
    fn new(io: IO, est: Established, leftover: BytesMut, limits: Limits) -> Self {
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

    /// Sends one message (chunked into several records if it is large).
    ///
    /// # Errors
    /// [`Error::Closed`] after [`close`](Self::close), or I/O errors.
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
    /// [`Error::Closed`] after close.
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

    /// Receives the next message; `Ok(None)` once the peer closed the session (authenticated).
    ///
    /// # Errors
    /// [`Error::Truncated`] if the stream ends without the peer's close, [`Error::Decrypt`] for
    /// a record that fails authentication, framing or I/O errors. After an error the session
    /// must be dropped.
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

    /// Sends the authenticated close and shuts down the write side.
    ///
    /// # Errors
    /// [`Error::Closed`] if already closed, or I/O errors.
    pub async fn close(&mut self) -> Result<()> {
        self.send.close(&mut self.io).await
    }

    /// Plaintext bytes of the messages received so far.
    pub fn bytes_received(&self) -> u64 {
        self.recv.bytes
    }

    /// Plaintext bytes of the messages sent (queued) so far.
    pub fn bytes_sent(&self) -> u64 {
        self.send.bytes
    }

    /// Splits into a reader and a writer that can be used from two tasks.
    pub fn into_split(self) -> (SecureReader<ReadHalf<IO>>, SecureWriter<WriteHalf<IO>>) {
        let (r, w) = tokio::io::split(self.io);
        (
            SecureReader {
                io: r,
                info: self.info,
                state: self.recv,
            },
            SecureWriter {
                io: w,
                info: self.info,
                state: self.send,
            },
        )
    }
}

/// The receiving half of a split [`SecureStream`].
#[derive(Debug)]
pub struct SecureReader<R> {
    io: R,
    info: SessionInfo,
    state: RecvState,
}

impl<R: AsyncRead + Unpin> SecureReader<R> {
    /// What was negotiated.
    pub fn info(&self) -> &SessionInfo {
        &self.info
    }

    /// Plaintext bytes of the messages received so far.
    pub fn bytes_received(&self) -> u64 {
        self.state.bytes
    }

    /// See [`SecureStream::recv`].
    ///
    /// # Errors
    /// As [`SecureStream::recv`].
    pub async fn recv(&mut self) -> Result<Option<Bytes>> {
        self.state.recv(&mut self.io).await
    }

    /// See [`SecureStream::recv_message`].
    ///
    /// # Errors
    /// As [`SecureStream::recv_message`].
    pub async fn recv_message(&mut self) -> Result<Option<Message>> {
        self.state.recv_message(&mut self.io).await
    }
}

/// The sending half of a split [`SecureStream`].
#[derive(Debug)]
pub struct SecureWriter<W> {
    io: W,
    info: SessionInfo,
    state: SendState,
}

impl<W: AsyncWrite + Unpin> SecureWriter<W> {
    /// What was negotiated.
    pub fn info(&self) -> &SessionInfo {
        &self.info
    }

    /// Plaintext bytes of the messages sent (queued) so far.
    pub fn bytes_sent(&self) -> u64 {
        self.state.bytes
    }

    /// See [`SecureStream::send`].
    ///
    /// # Errors
    /// As [`SecureStream::send`].
    pub async fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.state.queue(msg)?;
        self.state.flush(&mut self.io).await
    }

    /// See [`SecureStream::send_message`].
    ///
    /// # Errors
    /// As [`SecureStream::send_message`].
    pub async fn send_message(&mut self, msg: &Message) -> Result<()> {
        self.state.queue_message(msg)?;
        self.state.flush(&mut self.io).await
    }

    /// See [`SecureStream::queue`].
    ///
    /// # Errors
    /// As [`SecureStream::queue`].
    pub fn queue(&mut self, msg: &[u8]) -> Result<()> {
        self.state.queue(msg)
    }

    /// See [`SecureStream::queue_message`].
    ///
    /// # Errors
    /// As [`SecureStream::queue_message`].
    pub fn queue_message(&mut self, msg: &Message) -> Result<()> {
        self.state.queue_message(msg)
    }

    /// See [`SecureStream::flush`].
    ///
    /// # Errors
    /// I/O errors.
    pub async fn flush(&mut self) -> Result<()> {
        self.state.flush(&mut self.io).await
    }

    /// See [`SecureStream::close`].
    ///
    /// # Errors
    /// As [`SecureStream::close`].
    pub async fn close(&mut self) -> Result<()> {
        self.state.close(&mut self.io).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;
    use crate::Psk;

    type Pipe = SecureStream<tokio::io::DuplexStream>;

    /// A PSK session over an in-memory pipe of `capacity` bytes.
    async fn pair(capacity: usize) -> (Pipe, Pipe) {
        pair_with(capacity, &SessionConfig::default()).await
    }

    /// As [`pair`], with `config` on both sides.
    async fn pair_with(capacity: usize, config: &SessionConfig) -> (Pipe, Pipe) {
        let psk = Psk::from_bytes([3; 32]);
        let (client_auth, server_auth) = (psk.clone().into(), psk.into());
        let (a, b) = tokio::io::duplex(capacity);
        let (client, server) = tokio::join!(
            connect(a, &client_auth, config),
            accept(b, &server_auth, config)
        );
        (client.unwrap(), server.unwrap())
    }

    /// A flush dropped midway (its peer not reading, the write blocked) resumes where it
    /// stopped: the peer then gets every message once, intact and in order.
    #[tokio::test]
    async fn a_cancelled_flush_resumes_without_writing_twice() {
        // A 4 KiB pipe: a 200 KiB flush blocks until the peer reads.
        let (mut client, mut server) = pair(4 * 1024).await;
        let big: Vec<u8> = (0..200 * 1024u32).map(|i| (i % 251) as u8).collect();
        client.queue(&big).unwrap();
        client.queue(b"after").unwrap();
        let cut = tokio::time::timeout(std::time::Duration::from_millis(50), client.flush()).await;
        assert!(cut.is_err(), "the flush should still be blocked");
        assert!(
            client.send.written > 0,
            "part of the buffer went out before the cut"
        );
        let resumed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            tokio::join!(client.flush(), server.recv())
        });
        let (flushed, first) = resumed.await.expect("the resumed flush completes");
        flushed.unwrap();
        assert_eq!(first.unwrap().unwrap(), &big[..]);
        assert_eq!(server.recv().await.unwrap().unwrap(), &b"after"[..]);
    }

    /// A peer may chunk with records larger than this implementation's 64 KiB (protocol §3.4:
    /// any size within the frame limit): 256 KiB records, read into the reassembly buffer in
    /// place, give back the message intact, for every suite.
    #[tokio::test]
    async fn records_larger_than_our_chunks_are_reassembled() {
        for suite in CipherSuite::ALL {
            let config = SessionConfig::builder().suites([suite]).build().unwrap();
            let (mut client, mut server) = pair_with(64 * 1024, &config).await;
            client.send.sealer.set_max_chunk(256 * 1024);
            let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 241) as u8).collect();
            let (sent, got) = tokio::join!(client.send(&big), server.recv());
            sent.unwrap();
            assert!(got.unwrap().unwrap()[..] == big[..], "{suite:?}");
        }
    }

    /// After a large message is written the connection gives its buffer back: an idle
    /// connection keeps at most `RETAINED_SEND_BUFFER` of send capacity; small messages keep
    /// theirs (no allocation per message).
    #[tokio::test]
    async fn send_buffer_is_released_after_a_large_message() {
        let (mut client, mut server) = pair(64 * 1024).await;
        let big = vec![7u8; 3 * 1024 * 1024];
        let (sent, got) = tokio::join!(client.send(&big), server.recv());
        sent.unwrap();
        assert_eq!(got.unwrap().unwrap().len(), big.len());
        assert!(client.send.buf.capacity() <= RETAINED_SEND_BUFFER);
        let (sent, got) = tokio::join!(client.send(&[1; 1000]), server.recv());
        sent.unwrap();
        assert_eq!(got.unwrap().unwrap().len(), 1000);
        let kept = client.send.buf.capacity();
        assert!(kept >= 1000, "{kept}");
    }
}
