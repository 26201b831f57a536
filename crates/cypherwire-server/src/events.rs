//! Connection events (aesm's activity signals).

use std::net::SocketAddr;
use std::time::SystemTime;

use cypherwire_session::PublicKey;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream as _;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::error::Refusal;
use crate::id::ConnectionId;

/// Default number of events buffered for a slow subscriber before it misses some.
pub const DEFAULT_EVENT_CAPACITY: usize = 4096;

/// Something that happened, with the server's wall-clock time.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Event {
    /// When.
    pub at: SystemTime,
    /// What.
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind {
    /// A TCP connection arrived and passed the admission checks; its handshake starts.
    Accepted {
        /// The peer.
        peer: SocketAddr,
    },
    /// A connection was refused before its handshake.
    Refused {
        /// The peer.
        peer: SocketAddr,
        /// Why.
        reason: Refusal,
    },
    /// A handshake completed.
    Authenticated {
        /// The new connection.
        id: ConnectionId,
        /// The peer.
        peer: SocketAddr,
        /// The peer's static key (identity mode).
        identity: Option<PublicKey>,
    },
    /// A handshake failed (wrong credentials, tampering, timeout, garbage).
    AuthenticationFailed {
        /// The peer.
        peer: SocketAddr,
        /// A short description for logs (never sent to the peer).
        reason: String,
    },
    /// A source was banned after too many failures.
    Banned {
        /// The peer whose failure caused the ban.
        peer: SocketAddr,
    },
    /// An authenticated connection ended.
    Disconnected {
        /// The connection.
        id: ConnectionId,
        /// The peer.
        peer: SocketAddr,
        /// Why.
        reason: DisconnectReason,
    },
    /// A peer sent an action no handler is bound to.
    UnknownAction {
        /// The connection.
        id: ConnectionId,
        /// The action's name.
        name: String,
    },
    /// This subscriber was too slow and missed events.
    Lagged {
        /// How many.
        missed: u64,
    },
}

/// Why an authenticated connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The peer closed the session (authenticated close).
    Closed,
    /// The stream ended without an authenticated close.
    Truncated,
    /// An operator kicked it: its session is discarded, so the peer cannot resume it.
    Kicked,
    /// Its source was banned: it is closed with `BANNED` and its session discarded.
    Banned,
    /// Its outbox filled up: it did not read fast enough.
    SlowConsumer,
    /// Nothing arrived within the idle timeout.
    IdleTimeout,
    /// The server is shutting down.
    Shutdown,
    /// A newer connection resumed this connection's session.
    Replaced,
    /// The instance its session came from left the cluster while requests of the session were
    /// still running there: the connection is closed so that the client resends them here.
    InstanceLost,
    /// Pushes to it were lost on the way from another node of the cluster; its session
    /// was dropped so that it cannot resume past the hole.
    PushesLost,
    /// The peer broke the protocol or a record failed authentication (closed with
    /// `PROTOCOL_ERROR`).
    ProtocolError(String),
    /// The peer sent an envelope of a version or kind this server does not know (closed with
    /// `UNSUPPORTED`, `docs/protocol.md` §4.1).
    Unsupported(String),
    /// The peer sent a frame over the frame limit or a message over the message limit (closed
    /// with `FRAME_TOO_LARGE`, §2.2 and §3.4).
    TooLarge(String),
    /// The transport failed.
    Io(String),
}

/// A subscription to the server's events: oldest first, bounded. Every call of
/// [`ServerHandle::events`](crate::ServerHandle::events) makes a new, independent subscriber
/// (a broadcast subscription: it sees what happens from then on). Read it with
/// [`next`](Self::next) or as a [`Stream`](futures_core::Stream).
pub struct Events {
    rx: BroadcastStream<Event>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl Events {
    pub(crate) fn new(rx: broadcast::Receiver<Event>) -> Self {
        Self {
            rx: BroadcastStream::new(rx),
        }
    }

    /// The next event; `None` once the server is gone. A subscriber that falls more than
    /// [`DEFAULT_EVENT_CAPACITY`] events behind gets one [`EventKind::Lagged`] saying how many
    /// it missed: events are never lost silently.
    pub async fn next(&mut self) -> Option<Event> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    /// The next event if one is there now; never waits.
    pub fn try_next(&mut self) -> Option<Event> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.poll_event(&mut cx) {
            Poll::Ready(e) => e,
            Poll::Pending => None,
        }
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        Pin::new(&mut self.rx).poll_next(cx).map(|item| {
            item.map(|r| {
                r.unwrap_or_else(|BroadcastStreamRecvError::Lagged(missed)| Event {
                    at: crate::clock::wall_clock(),
                    kind: EventKind::Lagged { missed },
                })
            })
        })
    }
}

impl futures_core::Stream for Events {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.get_mut().poll_event(cx)
    }
}
