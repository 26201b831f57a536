//! The server's error type.

use std::io;
use std::net::SocketAddr;

use crate::id::ConnectionId;

/// Errors of the server API. Errors of one connection never surface here: they end that
/// connection and appear as [`Event`](crate::Event)s.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Binding the listening socket failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: io::Error,
    },
    /// A configuration value is out of range.
    #[error("invalid server configuration: {0}")]
    Config(&'static str),
    /// The message is longer than the session's message limit
    /// ([`SessionConfig::max_message_len`](cypherwire_session::SessionConfig::max_message_len))
    /// in a codec the server offers: nothing was queued, no connection is affected.
    #[error("message too large: {len} bytes, the maximum is {max}")]
    MessageTooLarge {
        /// Its encoded length (the longest among the offered codecs).
        len: usize,
        /// The session's message limit.
        max: usize,
    },
    /// No such connection (it may have ended).
    #[error("no connection {0}")]
    UnknownConnection(ConnectionId),
    /// The connection's outbox was full: the connection has been closed as a slow consumer.
    #[error("connection {0} is not reading fast enough and was closed")]
    SlowConsumer(ConnectionId),
    /// The server is shutting down.
    #[error("server is shutting down")]
    ShuttingDown,
    /// The local address could not be read.
    #[error("cannot read the local address: {0}")]
    LocalAddr(io::Error),
    /// Joining the cluster failed.
    #[error("cannot join the cluster: {0}")]
    Cluster(#[from] crate::cluster::seam::BackplaneError),
    /// The connection is held by another node of the cluster: reach it through
    /// [`ServerHandle::cluster`](crate::ServerHandle::cluster).
    #[error("connection {0} is held by another node")]
    Remote(ConnectionId),
    /// A group name longer than [`MAX_GROUP_NAME_LEN`](crate::MAX_GROUP_NAME_LEN) bytes.
    #[error("group name of {len} bytes, the maximum is {max}")]
    GroupNameTooLong {
        /// The name's length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Why a connection was refused before its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The server holds its maximum number of connections.
    TooManyConnections,
    /// The source address holds its maximum number of connections.
    TooManyFromAddress,
    /// The maximum number of handshakes is already in progress.
    TooManyHandshakes,
    /// The accept hook said no.
    Hook,
    /// The source is banned.
    Banned,
    /// The server is shutting down.
    ShuttingDown,
    /// The address opened connections faster than its handshake rate limit.
    RateLimited,
}

/// What the accept hook sees of a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Incoming {
    /// The peer's address.
    pub peer: SocketAddr,
}
