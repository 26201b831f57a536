//! Running a handshake over an I/O object: [`connect`], [`accept`] and the attempt-limited
//! [`accept_guarded`], which return a [`SecureStream`].

use std::ops::ControlFlow;

use bytes::BytesMut;
use cypherwire_wire::FrameCodec;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::secure::SecureStream;
use super::state::{now, read_frame};
use crate::bans::{AttemptLimiter, Banned, Denied, Outcome};
use crate::config::SessionConfig;
use crate::error::{Error, Result};
use crate::handshake::{
    ClientAuth, Established, Initiator, Refusal, Responder, ServerAuth, Step, handshake_limits,
};

/// How long a responder tries to write a refusal before it gives up and just closes.
const REFUSAL_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

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

/// Sends `refusal` (`docs/protocol.md` §3.9) and closes the write side: what a responder says
/// instead of a handshake message when it will not continue. Costs no cryptographic work and
/// gives up after one second (a peer that does not read gets nothing).
///
/// # Errors
/// I/O errors, or `TimedOut` if the peer did not take the 15 bytes within the second.
pub async fn refuse<W: AsyncWrite + Unpin>(io: &mut W, refusal: Refusal) -> std::io::Result<()> {
    let write = async {
        write_frame(io, &refusal.encode())
            .await
            .map_err(|e| match e {
                Error::Io(e) => e,
                other => std::io::Error::other(other.to_string()),
            })?;
        io.shutdown().await
    };
    tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, write)
        .await
        .map_err(|_| std::io::ErrorKind::TimedOut)?
}

/// Runs the initiator's handshake over `io` and returns the secure stream.
///
/// In password mode the argon2 step runs on tokio's blocking pool.
///
/// # Errors
/// [`Error::HandshakeTimeout`], [`Error::AuthenticationFailed`] (wrong credentials or
/// tampering, or the responder's refusal saying so), [`Error::Refused`] (the responder refused
/// and said why: banned, over capacity), [`Error::Handshake`], [`Error::Truncated`] if the peer
/// hangs up without a word, or I/O errors.
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
            // spec: §3.9 "an initiator MUST check every handshake frame from the responder for a refusal"
            if let Some(refusal) = Refusal::parse(&msg) {
                return Err(Error::from_refusal(refusal));
            }
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

/// Runs the responder's handshake over `io` and returns the secure stream. A handshake that
/// fails (wrong credentials, unsupported offer, timeout) sends the initiator a [`Refusal`]
/// saying so before the connection closes.
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
    async fn begin(&self) -> Result<(), Banned> {
        loop {
            // Bound first: the guard must be gone before the sleep.
            let denied = self.table().begin(self.source, now());
            match denied {
                Ok(()) => return Ok(()),
                Err(Denied::Banned(ban)) => return Err(ban),
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
    let mut banned: Option<Banned> = None;
    let outcome = tokio::time::timeout(config.handshake_timeout(), async {
        let mut frames = FrameCodec::new(handshake_limits());
        let mut state = Responder::new(auth, config);
        loop {
            let msg = read_frame(&mut io, &mut buf, &mut frames)
                .await?
                .ok_or(Error::Truncated)?;
            if let Some(gate) = gate {
                // spec: §3.2.3 "banned sources MUST be refused before any cryptographic work"
                if let Err(ban) = gate.begin().await {
                    banned = Some(ban);
                    return Err(Error::Banned);
                }
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
    .await;
    let error = match outcome {
        Ok(Ok(est)) => return Ok(SecureStream::new(io, est, buf, config.limits())),
        Ok(Err(e)) => e,
        Err(_) => Error::HandshakeTimeout,
    };
    // spec: §3.9 "a responder SHOULD send a refusal before it closes"
    if let Some(refusal) = refusal_for(&error, banned) {
        let _ = refuse(&mut io, refusal).await;
    }
    Err(error)
}

/// The refusal a responder sends for a handshake that failed with `error` (`banned`: the ban
/// that stopped it), or `None` where the peer is gone or broke the framing.
fn refusal_for(error: &Error, banned: Option<Banned>) -> Option<Refusal> {
    match error {
        Error::Banned => Some(Refusal::new(
            cypherwire_wire::CloseCode::BANNED,
            banned.map(|b| b.until.saturating_duration_since(now())),
        )),
        Error::AuthenticationFailed | Error::Handshake(_) | Error::HandshakeTimeout => {
            Some(Refusal::new(error.close_code(), None))
        }
        _ => None,
    }
}

/// Most argon2 computations one process runs at once (client side of password mode): bounds the
/// memory (19 MiB each at the default cost) and keeps the blocking pool free for other work. A
/// slot is held until its computation ends, even if the handshake that asked for it timed out.
pub const MAX_CONCURRENT_ARGON2: usize = 2;

static ARGON2_SLOTS: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(MAX_CONCURRENT_ARGON2);

/// [`accept`] guarded by an attempt limiter: a banned `source` is refused before a single byte
/// is read (it gets a [`Refusal`] saying until when), and the ban is checked again before every handshake step (no Diffie–Hellman, no
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
    let checked = gate.table().check(source, now());
    if let Err(ban) = checked {
        let mut io = io;
        let wait = ban.until.saturating_duration_since(now());
        let refusal = Refusal::new(cypherwire_wire::CloseCode::BANNED, Some(wait));
        let _ = refuse(&mut io, refusal).await;
        return Err(Error::Banned);
    }
    respond(io, auth, config, Some(&gate)).await
}
