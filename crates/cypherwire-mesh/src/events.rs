//! What a member's application hears.

use std::net::IpAddr;

use cypherwire_wire::Value;
use tokio::sync::mpsc;

use crate::peer_list::{LeaveReason, PeerEntry, PeerId};

/// Something that happened in the mesh.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// This node was admitted (again, after a re-authentication), with this many members.
    Joined {
        /// Our id.
        id: PeerId,
        /// Members listed, ourselves included.
        members: usize,
    },
    /// A member appeared in the list (or moved).
    PeerJoined {
        /// Its entry.
        entry: PeerEntry,
    },
    /// A member left the list.
    PeerLeft {
        /// Who.
        id: PeerId,
        /// Why.
        reason: LeaveReason,
    },
    /// A message from a member.
    Message {
        /// The sender (authenticated by its channel's handshake).
        from: PeerId,
        /// The payload.
        data: Value,
        /// Whether it was a broadcast (otherwise a direct message).
        broadcast: bool,
    },
    /// (Authenticating peer) a source was banned.
    Banned {
        /// The address, for a ban by address or after too many wrong passwords.
        addr: Option<IpAddr>,
        /// The member, for a ban by peer id.
        peer: Option<PeerId>,
    },
    /// (Member) the authenticating peer kicked us: the link is closed and we do not rejoin.
    /// Direct channels to members already known stay open until the node leaves.
    Kicked {
        /// The peer's words.
        reason: String,
    },
    /// (Member) the authenticating peer banned us (our address, or our key on a rejoin): the
    /// link is closed and we do not try again.
    BannedByAuthPeer {
        /// How long the ban still runs, if the peer said.
        remaining: Option<std::time::Duration>,
    },
    /// (Member) heartbeats to the authenticating peer went unanswered for the whole timeout;
    /// the link reconnects with backoff.
    AuthPeerLost,
    /// (Member) the authenticating peer answers again.
    AuthPeerRegained,
    /// (Member) the authenticating peer announced that it is leaving: no further admissions
    /// or list updates; shut down or keep talking to the members already known.
    AuthPeerLeft,
    /// The application fell behind and this many membership events were dropped (messages
    /// are never dropped: their senders wait instead).
    Lagged {
        /// How many.
        missed: u64,
    },
}

/// The stream of a node's events, oldest first, taken once (a single consumer). Bounded (see
/// `MeshConfig::event_capacity`). Read it with [`next`](Self::next) or as a
/// [`Stream`](futures_core::Stream).
#[derive(Debug)]
pub struct Events {
    pub(crate) rx: mpsc::Receiver<Event>,
}

impl Events {
    /// The next event; `None` once the node has left and everything was read.
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// The next event if one is ready.
    pub fn try_next(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }
}

impl futures_core::Stream for Events {
    type Item = Event;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Event>> {
        self.get_mut().rx.poll_recv(cx)
    }
}
