//! What the client handle and its driver share: the commands a handle sends, the validated
//! settings, and what the application sees (statuses, incoming pushes and actions).

use std::time::Duration;

use cypherwire_session::{ClientAuth, Refusal, SessionConfig};
use cypherwire_wire::{Action, CloseCode, Push, Request, Response};
use tokio::sync::oneshot;

use crate::backoff::Backoff;
use crate::error::Error;

/// The client's connection state (CYPHER_PROTOCOL's online/offline signals, in detail).
///
/// One outage reads `Online` → `Offline { reason }` (once) → `Reconnecting { attempt: 1 }`,
/// `Reconnecting { attempt: 2 }`, … → `Online`. A first connection that fails reads
/// `Connecting` → `Offline` → `Reconnecting { attempt: 1 }` …. A rejection ends the client
/// unless [`ClientBuilder::retry_rejected`](crate::ClientBuilder::retry_rejected) says
/// otherwise: `Offline` naming it (authentication failed, banned), then `GaveUp`. A kick ends it
/// with `Kicked` unless
/// [`ClientBuilder::reconnect_after_kick`](crate::ClientBuilder::reconnect_after_kick).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    /// The first connection attempt is under way.
    Connecting,
    /// Connected and authenticated. `resumed`: this connection continues the earlier session
    /// (nothing lost); otherwise a new session started.
    Online {
        /// Whether the earlier session was resumed.
        resumed: bool,
    },
    /// The connection was lost (or the first one could not be made): reported once per
    /// outage, and the client retries; or a rejection ended it (then [`Status::GaveUp`]
    /// follows).
    Offline {
        /// Why.
        reason: OfflineReason,
    },
    /// Connection attempt `attempt` (from 1) after a loss is under way.
    Reconnecting {
        /// The attempt number.
        attempt: u32,
    },
    /// The give-up policy ran out (requests fail with [`Error::GaveUp`]), or the server
    /// rejected the client (requests fail with [`Error::AuthenticationFailed`] or
    /// [`Error::Banned`]).
    GaveUp,
    /// An operator kicked this client: its session is gone and it does not reconnect.
    /// Requests fail with [`Error::Kicked`].
    Kicked {
        /// The server's words.
        reason: String,
    },
    /// [`Client::close`](crate::Client::close) completed.
    Closed,
}

impl Status {
    /// Whether this is [`Status::Online`].
    pub fn is_online(&self) -> bool {
        matches!(self, Self::Online { .. })
    }

    /// Whether the client has stopped for good (gave up, kicked, closed).
    pub fn is_final(&self) -> bool {
        matches!(self, Self::GaveUp | Self::Kicked { .. } | Self::Closed)
    }
}

/// Why the client is offline.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OfflineReason {
    /// The established connection broke (the detail says how: reset, truncated, heartbeats
    /// unanswered).
    ConnectionLost(String),
    /// No connection could be made (refused, unreachable, the peer hung up during the
    /// handshake).
    Unreachable(String),
    /// Connecting or the handshake took longer than the connect timeout.
    TimedOut,
    /// The server did not accept the key or password (a rejection).
    AuthenticationFailed,
    /// The server said this client's address is banned (a rejection).
    Banned {
        /// When the ban ends, if the server said.
        retry_after: Option<Duration>,
    },
    /// The server refused the connection for now (over capacity, rate limit); the client
    /// retries no sooner than it asked.
    Refused(Refusal),
    /// The handshake failed for another reason (no common cipher suite, a protocol error).
    HandshakeFailed(String),
    /// The server closed the session with this code (shutting down, pushes lost).
    ServerClosed {
        /// The close code.
        code: CloseCode,
        /// The server's words.
        reason: String,
    },
}

impl OfflineReason {
    /// Whether the server rejected this client (wrong credentials, banned): retrying the same
    /// way will not help.
    pub fn is_rejection(&self) -> bool {
        matches!(self, Self::AuthenticationFailed | Self::Banned { .. })
    }

    /// The request error a rejection gives, if this is one.
    pub(crate) fn rejection_error(&self) -> Option<Error> {
        match self {
            Self::AuthenticationFailed => Some(Error::AuthenticationFailed),
            Self::Banned { retry_after } => Some(Error::Banned {
                retry_after: *retry_after,
            }),
            _ => None,
        }
    }

    /// The reason a failed connection attempt gives.
    pub(crate) fn from_attempt(e: &cypherwire_session::Error) -> Self {
        use cypherwire_session::{Error as E, HandshakeFailure};
        match e {
            E::AuthenticationFailed | E::Handshake(HandshakeFailure::UntrustedKey) => {
                Self::AuthenticationFailed
            }
            E::Refused(r) if r.code == CloseCode::BANNED => Self::Banned {
                retry_after: r.retry_after,
            },
            E::Refused(r) => Self::Refused(*r),
            E::HandshakeTimeout => Self::TimedOut,
            E::Truncated => Self::Unreachable("the server hung up during the handshake".into()),
            E::Io(e) => Self::Unreachable(e.to_string()),
            E::Handshake(f) => Self::HandshakeFailed(f.to_string()),
            other => Self::HandshakeFailed(other.to_string()),
        }
    }

    /// How long the server asked the client to wait before trying again.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Refused(r) => r.retry_after,
            Self::Banned { retry_after } => *retry_after,
            _ => None,
        }
    }
}

impl std::fmt::Display for OfflineReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ConnectionLost(why) => write!(f, "connection lost: {why}"),
            Self::Unreachable(why) => write!(f, "cannot connect: {why}"),
            Self::TimedOut => f.write_str("connecting timed out"),
            Self::AuthenticationFailed => {
                f.write_str("authentication failed (wrong key or password?)")
            }
            Self::Banned {
                retry_after: Some(d),
            } => {
                write!(
                    f,
                    "banned by the server for another {}",
                    cypherwire_session::human_duration(*d)
                )
            }
            Self::Banned { retry_after: None } => f.write_str("banned by the server"),
            Self::Refused(r) => write!(f, "refused by the server: {r}"),
            Self::HandshakeFailed(why) => write!(f, "handshake failed: {why}"),
            Self::ServerClosed { code, reason } => {
                write!(f, "the server closed the session: {reason} [{code}]")
            }
        }
    }
}

/// What the server sent that is not an answer: pushes and actions, in order.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Incoming {
    /// A push (numbered per session; duplicates after a resume are filtered out).
    Push(Push),
    /// An action (e.g. a chat message broadcast by the server).
    Action(Action),
}

pub(crate) enum Command {
    Request {
        request: Request,
        reply: oneshot::Sender<Result<Response, Error>>,
    },
    Cancel(u64),
    Emit {
        action: Action,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Close {
        drain: Duration,
        done: oneshot::Sender<()>,
    },
}

/// What the driver reports to the handles besides the status.
#[derive(Debug)]
pub(crate) struct Observed {
    /// The last heartbeat round trip in microseconds (`u64::MAX`: none yet).
    pub(crate) rtt: std::sync::atomic::AtomicU64,
    /// Why the client stopped for good, once it did.
    pub(crate) stopped: std::sync::Mutex<Option<Error>>,
}

impl Observed {
    pub(crate) fn new() -> Self {
        Self {
            rtt: std::sync::atomic::AtomicU64::new(u64::MAX),
            stopped: std::sync::Mutex::new(None),
        }
    }

    pub(crate) fn stopped(&self) -> Option<Error> {
        self.stopped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_stopped(&self, err: &Error) {
        *self
            .stopped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(err.clone());
    }
}

/// Validated settings, shared with the driver.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) auth: ClientAuth,
    pub(crate) session: SessionConfig,
    pub(crate) backoff: Backoff,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_pending: usize,
    pub(crate) max_pending_bytes: usize,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) heartbeat_missed: u32,
    pub(crate) push_capacity: usize,
    /// Whether a rejection (authentication failed, banned) is retried like a network fault.
    pub(crate) retry_rejected: bool,
    /// Whether a kick is followed by a reconnect (to a new session).
    pub(crate) reconnect_after_kick: bool,
}
