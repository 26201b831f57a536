//! Typed errors, in pyile-protocol's categories: authentication, status (banned), send and
//! receive, plus configuration.

use std::time::Duration;

use crate::peer_list::{ListError, PeerId};

/// What went wrong in the mesh.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The authenticating peer did not admit us: the password is wrong, or it could not be
    /// reached (the reason says which). (pyile's `AuthenticationException`.)
    #[error("not admitted by the authenticating peer: {reason}")]
    Authentication {
        /// What the connection attempt reported.
        reason: cypherwire_client::OfflineReason,
    },
    /// This member's address or key is banned by the authenticating peer. (pyile's
    /// `StatusException`.)
    #[error("banned by the authenticating peer{}", remaining.map(|d| format!(" for another {}", cypherwire_session::human_duration(d))).unwrap_or_default())]
    Banned {
        /// How long the ban still runs, if the peer said.
        remaining: Option<Duration>,
    },
    /// The authenticating peer kicked this member: it does not rejoin by itself.
    #[error("kicked by the authenticating peer: {reason}")]
    Kicked {
        /// The peer's words.
        reason: String,
    },
    /// The peer is not in the current peer list.
    #[error("peer {0} is not a member")]
    PeerUnknown(PeerId),
    /// A message could not be delivered (the peer did not acknowledge it in time, or its
    /// channel failed). (pyile's `SendException`.)
    #[error("sending to {peer} failed: {reason}")]
    SendFailed {
        /// The destination.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// The message is over the session's message limit
    /// ([`SessionConfig::max_message_len`](cypherwire_session::SessionConfig::max_message_len)):
    /// nothing was sent.
    #[error("message too large: {len} bytes, the maximum is {max}")]
    MessageTooLarge {
        /// Its encoded length (the longest among the offered codecs).
        len: usize,
        /// The session's message limit.
        max: usize,
    },
    /// The queue towards a peer is full: it is not keeping up.
    #[error("the queue towards {0} is full")]
    QueueFull(PeerId),
    /// A message or list from the network was refused. (pyile's `RecvException`.)
    #[error("received an invalid message: {0}")]
    Receive(String),
    /// This node has left the mesh (or its authenticating peer shut down).
    #[error("this node has left the mesh")]
    Left,
    /// A setting is out of range.
    #[error("invalid mesh configuration: {0}")]
    Config(&'static str),
    /// The local listener could not be set up.
    #[error("listener: {0}")]
    Listen(String),
    /// Reading or writing the ban file failed.
    #[error("ban file: {0}")]
    BanFile(String),
}

impl From<ListError> for Error {
    fn from(e: ListError) -> Self {
        Self::Receive(e.to_string())
    }
}
