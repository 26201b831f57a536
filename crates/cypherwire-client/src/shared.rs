//! What the client handle and its driver share: the commands a handle sends, the validated
//! settings, and what the application sees (statuses, incoming pushes and actions).

use std::time::Duration;

use cypherwire_session::{ClientAuth, SessionConfig};
use cypherwire_wire::{Action, Push, Request, Response};
use tokio::sync::oneshot;

use crate::backoff::Backoff;
use crate::error::Error;

/// The client's connection state (CYPHER_PROTOCOL's online/offline signals, in detail).
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
    /// The connection was lost (or could not be made); the client will retry.
    Offline {
        /// Why, for humans.
        reason: String,
    },
    /// Connection attempt `attempt` (from 1) after a loss is under way.
    Reconnecting {
        /// The attempt number.
        attempt: u32,
    },
    /// The give-up policy ran out; requests fail with [`Error::GaveUp`].
    GaveUp,
    /// [`Client::close`](crate::Client::close) completed.
    Closed,
}

impl Status {
    /// Whether this is [`Status::Online`].
    pub fn is_online(&self) -> bool {
        matches!(self, Self::Online { .. })
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
}
