//! Several server instances acting as one service: the [`Backplane`] seam, the types it speaks
//! in, and the [`Cluster`] handle for what only a cluster can answer.
//!
//! A server without a backplane is a cluster of one: everything below is skipped and it keeps
//! its state in this process. With one ([`ServerBuilder::cluster`](crate::ServerBuilder::cluster)):
//!
//! - **Fan-out.** [`ServerHandle::broadcast`](crate::ServerHandle::broadcast),
//!   [`broadcast_action`](crate::ServerHandle::broadcast_action) and
//!   [`broadcast_group`](crate::ServerHandle::broadcast_group) deliver to this instance's
//!   connections at once, then publish on a [`Topic`]; every other instance delivers what it
//!   receives to its own connections. A node hears a group's topic only while it has a local
//!   member. Every publication carries a [`Position`] (epoch, sequence number); a node that sees
//!   a gap fills it from the topic's bounded [`History`], and if the history no longer holds
//!   the missing publications (or the epoch changed: the backplane lost its data) it closes the
//!   affected connections with [`CloseCode::PUSHES_LOST`](cypherwire_wire::CloseCode::PUSHES_LOST)
//!   and drops their sessions, so their next resume says `resumed: false` instead of skipping
//!   pushes silently.
//! - **Connections on other nodes.** A [`ConnectionId`] names its node
//!   ([`ConnectionId::node`]); [`Cluster::send_to`] and [`Cluster::kick`] route to the owner.
//!   The node being gone and the outcome being unknown (no answer in time) are distinct
//!   errors; an unknown outcome is never retried.
//! - **Bans.** A ban issued on any node ([`ServerHandle::ban`](crate::ServerHandle::ban), or
//!   failed handshakes from one source counted over the whole cluster) is stored in the
//!   backplane and announced; every node mirrors it into its own handshake limiter, which
//!   keeps working on its own while the backplane is unreachable.
//! - **Registry.** [`Cluster::count`] and [`Cluster::connections`] ask every live node and
//!   name, in a [`Partial`], the nodes that did not answer before the deadline.

mod driver;
pub(crate) mod handoff;
pub(crate) mod link;
mod local;
mod position;
pub(crate) mod protocol;
pub(crate) mod seam;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cypherwire_wire::Value;

use self::link::ClusterLink;
use crate::id::{ConnectionId, NodeId};
use crate::shared::Shared;

pub(crate) use self::driver::start;
pub use self::local::{LOCAL_HISTORY, LocalBackplane, LocalHub};
pub use self::seam::{
    Backplane, BackplaneError, BackplaneEvent, ClusterError, ClusterStats, DEFAULT_QUERY_DEADLINE,
    History, Partial, Position, Publication, Published, RemoteConnection, Topic,
};

/// What only a cluster can answer: connections on other nodes, cluster-wide counts.
/// From [`ServerHandle::cluster`](crate::ServerHandle::cluster).
#[derive(Clone)]
pub struct Cluster {
    shared: Arc<Shared>,
    link: Arc<ClusterLink>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.link.node())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    pub(crate) fn new(shared: Arc<Shared>, link: Arc<ClusterLink>) -> Self {
        Self { shared, link }
    }

    /// This node's id.
    pub fn node(&self) -> NodeId {
        self.link.node()
    }

    /// The nodes alive now.
    ///
    /// # Errors
    /// [`ClusterError::Backplane`].
    pub async fn nodes(&self) -> Result<Vec<NodeId>, ClusterError> {
        Ok(self.link.backplane().nodes().await?)
    }

    /// Pushes `data` to connection `id` wherever it is (numbered per session, kept for replay
    /// as [`ServerHandle::send_to`](crate::ServerHandle::send_to) does).
    ///
    /// # Errors
    /// [`ClusterError::NoSuchNode`], [`ClusterError::UnknownConnection`],
    /// [`ClusterError::SlowConsumer`], [`ClusterError::Indeterminate`] (not retried);
    /// [`ClusterError::MessageTooLarge`] before anything is sent.
    pub async fn send_to(
        &self,
        id: ConnectionId,
        data: impl Into<Value>,
    ) -> Result<(), ClusterError> {
        let data = self.shared.check_push(data.into())?;
        let request = protocol::NodeRequest::SendTo {
            local: id.local(),
            data,
        };
        self.ask_owner(id, request).await
    }

    /// Kicks connection `id` wherever it is.
    ///
    /// # Errors
    /// As [`send_to`](Self::send_to).
    pub async fn kick(&self, id: ConnectionId) -> Result<(), ClusterError> {
        self.ask_owner(id, protocol::NodeRequest::Kick { local: id.local() })
            .await
    }

    async fn ask_owner(
        &self,
        id: ConnectionId,
        request: protocol::NodeRequest,
    ) -> Result<(), ClusterError> {
        let Some(owner) = id.node() else {
            return Err(ClusterError::UnknownConnection(id));
        };
        if owner == self.node() {
            return driver::serve(&self.shared, &request).into_result(id);
        }
        match self.link.ask(owner, &request, DEFAULT_QUERY_DEADLINE).await {
            Ok(reply) => reply.into_result(id),
            Err(BackplaneError::NoSuchNode(n)) => Err(ClusterError::NoSuchNode(n)),
            Err(BackplaneError::Indeterminate(d)) => Err(ClusterError::Indeterminate(owner, d)),
            Err(e) => Err(e.into()),
        }
    }

    /// Authenticated connections over the whole cluster (nodes that do not answer within
    /// `deadline` are named in [`Partial::missing`]).
    ///
    /// # Errors
    /// [`ClusterError::Backplane`] if the list of nodes cannot be read.
    pub async fn count(&self, deadline: Duration) -> Result<Partial<usize>, ClusterError> {
        let answers = driver::ask_all(
            &self.link,
            &self.shared,
            protocol::NodeRequest::Count,
            deadline,
        )
        .await?;
        let value = answers
            .value
            .iter()
            .map(|r| match r {
                protocol::NodeReply::Count(n) => usize::try_from(*n).unwrap_or(usize::MAX),
                _ => 0,
            })
            .sum();
        Ok(Partial {
            value,
            missing: answers.missing,
        })
    }

    /// Authenticated connections over the whole cluster, by id.
    ///
    /// # Errors
    /// As [`count`](Self::count).
    pub async fn connections(
        &self,
        deadline: Duration,
    ) -> Result<Partial<Vec<RemoteConnection>>, ClusterError> {
        let answers = driver::ask_all(
            &self.link,
            &self.shared,
            protocol::NodeRequest::List,
            deadline,
        )
        .await?;
        let mut value: Vec<RemoteConnection> = answers
            .value
            .into_iter()
            .flat_map(|r| match r {
                protocol::NodeReply::List(list) => list,
                _ => Vec::new(),
            })
            .map(|(id, peer)| RemoteConnection {
                id: ConnectionId(id),
                peer,
            })
            .collect();
        value.sort_by_key(|c| c.id);
        Ok(Partial {
            value,
            missing: answers.missing,
        })
    }

    /// The connection from `peer` (an address and port as its node saw it), wherever it is.
    ///
    /// # Errors
    /// As [`count`](Self::count).
    pub async fn connection_by_peer(
        &self,
        peer: std::net::SocketAddr,
        deadline: Duration,
    ) -> Result<Partial<Option<RemoteConnection>>, ClusterError> {
        let all = self.connections(deadline).await?;
        Ok(Partial {
            value: all.value.into_iter().find(|c| c.peer == peer),
            missing: all.missing,
        })
    }

    /// The connections from `ip` over the whole cluster, by id.
    ///
    /// # Errors
    /// As [`count`](Self::count).
    pub async fn connections_from(
        &self,
        ip: std::net::IpAddr,
        deadline: Duration,
    ) -> Result<Partial<Vec<RemoteConnection>>, ClusterError> {
        let mut all = self.connections(deadline).await?;
        all.value.retain(|c| c.peer.ip() == ip);
        Ok(all)
    }

    /// The members of `group` over the whole cluster, by id (each node answers for its own
    /// connections).
    ///
    /// # Errors
    /// As [`count`](Self::count).
    pub async fn group_members(
        &self,
        group: &str,
        deadline: Duration,
    ) -> Result<Partial<Vec<ConnectionId>>, ClusterError> {
        let request = protocol::NodeRequest::Members {
            group: group.to_owned(),
        };
        let answers = driver::ask_all(&self.link, &self.shared, request, deadline).await?;
        let mut value: Vec<ConnectionId> = answers
            .value
            .into_iter()
            .flat_map(|r| match r {
                protocol::NodeReply::Members(ids) => ids,
                _ => Vec::new(),
            })
            .map(ConnectionId)
            .collect();
        value.sort();
        Ok(Partial {
            value,
            missing: answers.missing,
        })
    }

    /// This node's backplane counters.
    pub fn stats(&self) -> ClusterStats {
        let c = self.link.counters();
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        ClusterStats {
            published: get(&c.published),
            publish_failed: get(&c.publish_failed),
            publish_dropped: get(&c.publish_dropped),
            received: get(&c.received),
            recovered: get(&c.recovered),
            duplicates: get(&c.duplicates),
            lossy_gaps: get(&c.lossy_gaps),
            closed_for_loss: get(&c.closed_for_loss),
            requests_served: get(&c.requests_served),
        }
    }
}
