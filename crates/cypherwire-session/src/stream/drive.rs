//! Running a handshake over an I/O object: [`connect`], [`accept`] and the attempt-limited
//! [`accept_guarded`], which return a [`SecureStream`].

use std::ops::ControlFlow;

use bytes::BytesMut;
use cypherwire_wire::FrameCodec;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::secure::SecureStream;
use super::state::{now, read_frame};
use crate::bans::{AttemptLimiter, Denied, Outcome};
use crate::config::SessionConfig;
use crate::error::{Error, Result};
use crate::handshake::{
    ClientAuth, Established, Initiator, Responder, ServerAuth, Step, handshake_limits,
};

async fn write_frame<W: AsyncWrite + Unpin>(io: &mut W, body: &[u8]) -> Result<()> {
    let mut buf = BytesMut::with_capacity(body.len() + 4);
    tokio_util::codec::Encoder::encode(&mut FrameCodec::new(handshake_limits()), body, &mut buf)?;
    io.write_all(&buf).await?;
    io.flush().await?;
    Ok(())
}

/// Sends what a handshake step produced: the state to feed the peer's next message to, or
/// the finished session.
async fn send_step<S, W: AsyncWrite + Unpin>(
    io: &mut W,
    step: Step<S>,
) -> Result<ControlFlow<Established, S>> {
    match step {
        Step::Continue { state, send } => {
            write_frame(io, &send).await?;
            Ok(ControlFlow::Continue(state))
        }
        Step::Done { established, send } => {
            if let Some(send) = send {
                write_frame(io, &send).await?;
            }
            Ok(ControlFlow::Break(*established))
        }
    }
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
            match send_step(&mut io, step).await? {
                ControlFlow::Continue(next) => state = next,
                ControlFlow::Break(established) => return Ok::<_, Error>(established),
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
            match send_step(&mut io, step?).await? {
                ControlFlow::Continue(next) => state = next,
                ControlFlow::Break(established) => return Ok::<_, Error>(established),
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
