//! A server's link to its backplane: what the handles queue for the publisher task (in order,
//! bounded) and the counters both tasks keep.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use cypherwire_session::SourceKey;
use tokio::sync::{Notify, mpsc};

use super::protocol::{self, Frame, NodeReply, NodeRequest};
use super::seam::{Backplane, BackplaneError, Topic};
use crate::id::NodeId;
use crate::outgoing::Session;

/// Publications, bans and failures waiting for the backplane, at most.
pub(crate) const PUBLISH_QUEUE: usize = 65_536;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) published: AtomicU64,
    pub(crate) publish_failed: AtomicU64,
    pub(crate) publish_dropped: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) recovered: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) lossy_gaps: AtomicU64,
    pub(crate) closed_for_loss: AtomicU64,
    pub(crate) requests_served: AtomicU64,
}

pub(crate) fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Work for the publisher task, in the order it was asked for.
pub(crate) enum Command {
    Publish(Topic, Vec<u8>),
    Ban(SourceKey, Duration),
    Unban(SourceKey),
    Failure(SourceKey),
}

/// Sessions this node took over while their old owner still runs some of their requests, by
/// the handoff's id.
#[derive(Default)]
pub(crate) struct Adopted {
    sessions: Mutex<HashMap<u64, Weak<Session>>>,
}

impl Adopted {
    pub(crate) fn table(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Weak<Session>>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A server's link to its backplane, shared by the handles and the two tasks.
pub(crate) struct ClusterLink {
    pub(crate) backplane: Arc<dyn Backplane>,
    pub(crate) commands: mpsc::Sender<Command>,
    /// The set of groups with a local member changed: the receiver re-reads it.
    pub(crate) interest: Notify,
    pub(crate) counters: Counters,
    /// Sessions taken over from other nodes that still wait for answers from them.
    pub(crate) adopted: Adopted,
}

impl ClusterLink {
    pub(crate) fn node(&self) -> NodeId {
        self.backplane.node()
    }

    pub(crate) fn backplane(&self) -> &dyn Backplane {
        &*self.backplane
    }

    pub(crate) fn adopted(&self) -> &Adopted {
        &self.adopted
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    fn queue(&self, command: Command) {
        if self.commands.try_send(command).is_err() {
            bump(&self.counters.publish_dropped, 1);
            tracing::warn!("backplane queue full: a publication, ban or failure was dropped");
        }
    }

    /// Publishes a frame to the other nodes (this node delivered it to its own connections).
    pub(crate) fn publish(&self, topic: Topic, frame: &Frame) {
        self.queue(Command::Publish(topic, protocol::encode(frame)));
    }

    pub(crate) fn ban(&self, source: SourceKey, length: Duration) {
        self.queue(Command::Ban(source, length));
    }

    pub(crate) fn unban(&self, source: SourceKey) {
        self.queue(Command::Unban(source));
    }

    /// Counts a failed handshake over the cluster.
    pub(crate) fn failure(&self, source: SourceKey) {
        self.queue(Command::Failure(source));
    }

    /// The groups with a local member may have changed.
    pub(crate) fn interest_changed(&self) {
        self.interest.notify_one();
    }

    pub(crate) async fn ask(
        &self,
        to: NodeId,
        request: &NodeRequest,
        deadline: Duration,
    ) -> Result<NodeReply, BackplaneError> {
        let reply = self
            .backplane
            .request(to, protocol::encode(request), deadline)
            .await?;
        protocol::decode(&reply).ok_or_else(|| BackplaneError::Malformed("node reply".into()))
    }
}
