//! The seam between a server and the engine several instances share: the [`Backplane`] trait
//! and the types it and the [`Cluster`](super::Cluster) handle speak in.

use std::net::SocketAddr;
use std::time::Duration;

use cypherwire_session::SourceKey;
use tokio::sync::mpsc;

use crate::future::BoxFuture;
use crate::id::{ConnectionId, NodeId};

/// A place in a topic: the epoch (which incarnation of the topic's data) and the sequence
/// number of the last publication. Epoch 0 means the topic has no data yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Position {
    /// The incarnation of the topic's data; it changes when the engine lost the topic.
    pub epoch: u64,
    /// The sequence number (1 for a topic's first publication).
    pub seq: u64,
}

impl Position {
    /// The position `seq` in `epoch`.
    pub const fn new(epoch: u64, seq: u64) -> Self {
        Self { epoch, seq }
    }
}

/// Where a publication goes: every connection, or the members of one group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// Every connection of the cluster.
    All,
    /// The members of a named group.
    Group(String),
}

impl Topic {
    /// The topic's name in a backplane's namespace: `all`, or `g:` and the group's name.
    pub fn name(&self) -> String {
        match self {
            Self::All => "all".to_owned(),
            Self::Group(g) => format!("g:{g}"),
        }
    }

    /// The topic a [`name`](Self::name) stands for.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "all" => Some(Self::All),
            _ => name.strip_prefix("g:").map(|g| Self::Group(g.to_owned())),
        }
    }
}

/// What [`Backplane::publish`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Published {
    /// The publication's place in its topic.
    pub position: Position,
    /// How many subscribers the engine handed it to, if it tells.
    pub receivers: Option<u32>,
}

impl Published {
    /// A publication at `position`.
    pub fn new(position: Position, receivers: Option<u32>) -> Self {
        Self {
            position,
            receivers,
        }
    }
}

/// One publication as a node receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Publication {
    /// The node that published it.
    pub origin: NodeId,
    /// Its place in the topic.
    pub position: Position,
    /// The server's encoding of what to deliver (opaque to the backplane).
    pub payload: Vec<u8>,
}

impl Publication {
    /// A publication from `origin` at `position`.
    pub fn new(origin: NodeId, position: Position, payload: Vec<u8>) -> Self {
        Self {
            origin,
            position,
            payload,
        }
    }
}

/// What a topic's bounded history holds after a sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct History {
    /// The topic's epoch now (0 if the topic has no data at all).
    pub epoch: u64,
    /// The topic's last sequence number now.
    pub last: u64,
    /// Publications after the asked-for number, in order (possibly fewer than asked for,
    /// starting later than the next number if the history was trimmed).
    pub entries: Vec<Publication>,
}

impl History {
    /// A history answer.
    pub fn new(epoch: u64, last: u64, entries: Vec<Publication>) -> Self {
        Self {
            epoch,
            last,
            entries,
        }
    }
}

/// What a backplane tells its node.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackplaneEvent {
    /// A publication on a topic this node subscribed to (its own included).
    Message {
        /// The topic.
        topic: Topic,
        /// The publication.
        publication: Publication,
    },
    /// Another node asks this one something; answer with [`Backplane::reply`].
    Request {
        /// The asking node.
        from: NodeId,
        /// The request's id, to quote in the reply.
        id: u64,
        /// The server's encoding of the request.
        body: Vec<u8>,
    },
    /// A source was banned somewhere in the cluster.
    Banned {
        /// The source.
        source: SourceKey,
        /// For how long from now.
        length: Duration,
    },
    /// A ban was lifted somewhere in the cluster.
    Unbanned {
        /// The source.
        source: SourceKey,
    },
    /// The link to the engine broke: publications may be missed until [`LinkUp`](Self::LinkUp).
    LinkDown,
    /// The link is back (or delivery may have skipped something): every subscribed topic
    /// should be checked against its history.
    LinkUp,
}

/// Why a backplane operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackplaneError {
    /// The engine could not be reached or refused the operation; nothing took effect.
    #[error("the backplane is unavailable: {0}")]
    Unavailable(String),
    /// No answer within the deadline: the operation may or may not have taken effect. It is
    /// never retried on the caller's behalf.
    #[error("outcome unknown: no answer within {0:?}")]
    Indeterminate(Duration),
    /// The addressed node is not in the cluster (nobody listens for it).
    #[error("{0} is not in the cluster")]
    NoSuchNode(NodeId),
    /// The engine returned data this node cannot read (or that failed authentication).
    #[error("unreadable backplane data: {0}")]
    Malformed(String),
}

/// What a server needs from the engine several instances share.
///
/// Delivery of publications is at most once; the [`Position`] on each and
/// [`history`](Self::history) let the server find and fill gaps. Every method has a deadline of
/// the implementation's choosing; one that passes is [`BackplaneError::Indeterminate`].
pub trait Backplane: Send + Sync + 'static {
    /// This node's id (in every [`ConnectionId`] it hands out).
    fn node(&self) -> NodeId;

    /// The stream of events for this node (the first call takes it; later calls get `None`).
    fn take_events(&self) -> Option<mpsc::Receiver<BackplaneEvent>>;

    /// Publishes `payloads` on `topic`, in this order, numbered after the topic's last
    /// publication; the position of the last one. A batch is published whole or not at all.
    fn publish(
        &self,
        topic: &Topic,
        payloads: Vec<Vec<u8>>,
    ) -> BoxFuture<Result<Published, BackplaneError>>;

    /// Starts hearing `topic`; the topic's position at that moment (publications after it
    /// will arrive as events).
    fn subscribe(&self, topic: &Topic) -> BoxFuture<Result<Position, BackplaneError>>;

    /// Stops hearing `topic`.
    fn unsubscribe(&self, topic: &Topic) -> BoxFuture<Result<(), BackplaneError>>;

    /// Up to `max` publications of `topic` after sequence number `after`, and the topic's
    /// position now.
    fn history(
        &self,
        topic: &Topic,
        after: u64,
        max: usize,
    ) -> BoxFuture<Result<History, BackplaneError>>;

    /// Asks node `to` something and waits up to `deadline` for its reply.
    fn request(
        &self,
        to: NodeId,
        body: Vec<u8>,
        deadline: Duration,
    ) -> BoxFuture<Result<Vec<u8>, BackplaneError>>;

    /// Answers request `id` from node `to`.
    fn reply(&self, to: NodeId, id: u64, body: Vec<u8>) -> BoxFuture<Result<(), BackplaneError>>;

    /// The nodes alive now (this one included).
    fn nodes(&self) -> BoxFuture<Result<Vec<NodeId>, BackplaneError>>;

    /// Bans `source` for `length` on every node (stored, then announced).
    fn ban(&self, source: &SourceKey, length: Duration) -> BoxFuture<Result<(), BackplaneError>>;

    /// Lifts a ban on every node; whether there was one.
    fn unban(&self, source: &SourceKey) -> BoxFuture<Result<bool, BackplaneError>>;

    /// The bans in force, with the time left on each.
    fn bans(&self) -> BoxFuture<Result<Vec<(SourceKey, Duration)>, BackplaneError>>;

    /// This node stops (its server shut down): it leaves the node directory, so that other
    /// nodes see it gone, and hears nothing more.
    fn leave(&self) -> BoxFuture<()>;

    /// Counts one failed handshake from `source` in a window of `window` (started by the
    /// first failure); the failures counted in the window so far, over all nodes.
    fn record_failure(
        &self,
        source: &SourceKey,
        window: Duration,
    ) -> BoxFuture<Result<u64, BackplaneError>>;
}

/// A result gathered from every node, naming the nodes that did not answer in time.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Partial<T> {
    /// What the nodes that answered said, combined.
    pub value: T,
    /// Nodes that were alive but did not answer before the deadline.
    pub missing: Vec<NodeId>,
}

impl<T> Partial<T> {
    /// Whether every node answered.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }
}

/// One connection somewhere in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemoteConnection {
    /// Its id (naming its node).
    pub id: ConnectionId,
    /// The peer's address as its node saw it.
    pub peer: SocketAddr,
}

/// Why a cluster operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The server is not part of a cluster.
    #[error("this server has no backplane")]
    NotClustered,
    /// The connection's node is not in the cluster (it stopped or died).
    #[error("{0} is not in the cluster")]
    NoSuchNode(NodeId),
    /// The owner node answered: it has no such connection.
    #[error("unknown connection {0}")]
    UnknownConnection(ConnectionId),
    /// The owner node answered: the connection's outbox was full, so it was closed.
    #[error("connection {0} is a slow consumer and was closed")]
    SlowConsumer(ConnectionId),
    /// The data is over the session's message limit: nothing was sent to any node.
    #[error("message too large: {len} bytes, the maximum is {max}")]
    MessageTooLarge {
        /// Its encoded length (the longest among the offered codecs).
        len: usize,
        /// The session's message limit.
        max: usize,
    },
    /// No answer in time: the operation may or may not have taken effect (not retried).
    #[error("outcome unknown: {0} did not answer within {1:?}")]
    Indeterminate(NodeId, Duration),
    /// The backplane failed.
    #[error(transparent)]
    Backplane(#[from] BackplaneError),
}

/// Counters of a node's traffic over the backplane. A broadcast, group message or action
/// is one frame; frames queued together for a topic travel as one publication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ClusterStats {
    /// Frames this node published.
    pub published: u64,
    /// Frames whose publication failed (unavailable or unknown outcome; never retried).
    pub publish_failed: u64,
    /// Frames, bans and failures that could not even be queued (the queue to the backplane
    /// was full).
    pub publish_dropped: u64,
    /// Frames of other nodes delivered to this node's connections.
    pub received: u64,
    /// Frames recovered from a topic's history after a gap.
    pub recovered: u64,
    /// Publications heard twice (or older than the topic's position) and skipped.
    pub duplicates: u64,
    /// Gaps the history could not fill (their connections were closed).
    pub lossy_gaps: u64,
    /// Connections closed because pushes to them were lost.
    pub closed_for_loss: u64,
    /// Requests other nodes sent this one.
    pub requests_served: u64,
}

/// How long a cluster query waits for the nodes by default.
pub const DEFAULT_QUERY_DEADLINE: Duration = Duration::from_secs(1);
