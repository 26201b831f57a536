//! The client's error type.

use cypherwire_wire::StatusCode;

/// Why a request (or another client operation) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with an error status.
    #[error("server error {code:?}: {message}")]
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
    /// The response data does not have the expected shape.
    #[error("unexpected response data: {0}")]
    Data(String),
    /// The configuration is invalid.
    #[error("invalid client configuration: {0}")]
    Config(&'static str),
}

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

    /// Whether the client is closed or gave up for good.
    pub fn is_closed(&self) -> bool {
        matches!(self, Self::Closed | Self::GaveUp { .. })
    }
}
