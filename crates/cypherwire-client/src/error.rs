//! The client's error type.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use cypherwire_session::human_duration;
use cypherwire_wire::StatusCode;

/// Why a request (or another client operation) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with an error status.
    #[error("server answered {code}: {message}")]
    Status {
        /// The status code.
        code: StatusCode,
        /// The server's message.
        message: String,
    },
    /// The request's deadline passed before an answer arrived (it is cancelled at the server).
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// The offline buffer is full (count or bytes): nothing was queued.
    #[error("request buffer full ({pending} requests, {bytes} bytes queued)")]
    BufferFull {
        /// Requests queued.
        pending: usize,
        /// Bytes queued.
        bytes: usize,
    },
    /// The client was closed (or its driver stopped).
    #[error("client closed")]
    Closed,
    /// The client gave up reconnecting (its give-up policy ran out).
    #[error("gave up reconnecting after {attempts} attempts")]
    GaveUp {
        /// Connection attempts made.
        attempts: u32,
    },
    /// The server did not accept the key or password (no detail is given). Not retried
    /// unless [`ClientBuilder::retry_rejected`](crate::ClientBuilder::retry_rejected).
    #[error("authentication failed (wrong key or password?)")]
    AuthenticationFailed,
    /// The server refused this client's address: it is banned.
    #[error("banned by the server{}", retry_after.map(|d| format!(" for another {}", human_duration(d))).unwrap_or_default())]
    Banned {
        /// When the ban ends, if the server said.
        retry_after: Option<Duration>,
    },
    /// An operator kicked this client; it does not reconnect unless
    /// [`ClientBuilder::reconnect_after_kick`](crate::ClientBuilder::reconnect_after_kick).
    #[error("kicked by the server: {reason}")]
    Kicked {
        /// The server's words.
        reason: String,
    },
    /// The request is larger than a session carries, or than the whole request buffer:
    /// nothing was sent or queued.
    #[error("message too large: {len} bytes, the maximum is {max}")]
    MessageTooLarge {
        /// The request's encoded length (the longest among the offered codecs), or over the
        /// buffer, the buffer's estimate of its size.
        len: usize,
        /// The limit: the session's message limit
        /// ([`SessionConfig::max_message_len`](cypherwire_session::SessionConfig::max_message_len))
        /// or the request buffer's size
        /// ([`ClientBuilder::max_pending`](crate::ClientBuilder::max_pending)).
        max: usize,
    },
    /// The response data does not have the expected shape (or, in compat mode, a token does not
    /// open or encode). The decoder's error is the [source](std::error::Error::source).
    #[error("unexpected response data: {0}")]
    Data(#[source] DataError),
    /// The configuration is invalid.
    #[error("invalid client configuration: {0}")]
    Config(&'static str),
}

/// The decoder's error behind [`Error::Data`], kept whole.
///
/// Its `Display` is the decoder's message; [`get_ref`](Self::get_ref) gives the decoder's error
/// itself, for downcasting. Two are equal when their messages are (so [`Error`] stays `Eq`).
#[derive(Debug, Clone)]
pub struct DataError(Arc<dyn std::error::Error + Send + Sync + 'static>);

impl DataError {
    /// Wraps a decoder's error.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Arc::new(error))
    }

    /// The decoder's error.
    pub fn get_ref(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for DataError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for DataError {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.to_string() == other.0.to_string()
    }
}

impl Eq for DataError {}

impl Error {
    /// Whether retrying the same call later may succeed (buffer full, server unavailable).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::BufferFull { .. } => true,
            Self::Status { code, .. } => *code == StatusCode::UNAVAILABLE,
            _ => false,
        }
    }

    /// Whether a deadline ran out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::DeadlineExceeded)
            || matches!(self, Self::Status { code, .. } if *code == StatusCode::DEADLINE_EXCEEDED)
    }

    /// Whether the client is closed or stopped for good (gave up, rejected, kicked).
    pub fn is_closed(&self) -> bool {
        matches!(
            self,
            Self::Closed
                | Self::GaveUp { .. }
                | Self::AuthenticationFailed
                | Self::Banned { .. }
                | Self::Kicked { .. }
        )
    }
}
