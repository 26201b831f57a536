//! [`LocalHub`]: a backplane inside one process. Several servers of one process that share a
//! hub act as one cluster (tests, demos, one process serving several listeners), with the
//! same numbering, history, requests and bans as a shared engine, and nothing to install.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use cypherwire_session::SourceKey;
use tokio::sync::{mpsc, oneshot};

use super::seam::{
    Backplane, BackplaneError, BackplaneEvent, History, Position, Publication, Published, Topic,
};
use crate::future::BoxFuture;
use crate::id::NodeId;

/// Publications each topic keeps to fill gaps.
pub const LOCAL_HISTORY: usize = 1024;
/// Sources whose failures are counted at once before ended windows are swept.
const MAX_FAILING_SOURCES: usize = 100_000;
/// Events waiting for one node, at most (beyond: that node misses publications and fills
/// the gap from the history).
const NODE_QUEUE: usize = 65_536;

#[derive(Default)]
struct Log {
    epoch: u64,
    seq: u64,
    entries: VecDeque<Publication>,
}

#[derive(Default)]
struct Hub {
    next_node: u32,
    nodes: HashMap<NodeId, mpsc::Sender<BackplaneEvent>>,
    subscribers: HashMap<Topic, HashSet<NodeId>>,
    logs: HashMap<Topic, Log>,
    bans: HashMap<SourceKey, Instant>,
    failures: HashMap<SourceKey, (u64, Instant)>,
    replies: HashMap<u64, oneshot::Sender<Vec<u8>>>,
    next_request: u64,
}

impl Hub {
    fn tell(&self, node: NodeId, event: BackplaneEvent) -> bool {
        self.nodes
            .get(&node)
            .is_some_and(|tx| tx.try_send(event).is_ok())
    }

    fn tell_all(&self, event: &BackplaneEvent) {
        for tx in self.nodes.values() {
            let _ = tx.try_send(event.clone());
        }
    }
}

/// A backplane shared by the servers of one process. Each [`LocalHub::join`] is one node.
#[derive(Clone, Default)]
pub struct LocalHub {
    hub: Arc<Mutex<Hub>>,
}

impl std::fmt::Debug for LocalHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalHub")
            .field("nodes", &self.lock().nodes.len())
            .finish()
    }
}

impl LocalHub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Hub> {
        self.hub.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new node of this hub, for one server's
    /// [`ServerBuilder::cluster`](crate::ServerBuilder::cluster). It leaves the hub when
    /// dropped (with the server that holds it).
    ///
    /// # Panics
    /// After 16,777,215 nodes (the node id space).
    pub fn join(&self) -> LocalBackplane {
        let (tx, rx) = mpsc::channel(NODE_QUEUE);
        let mut hub = self.lock();
        hub.next_node += 1;
        #[expect(clippy::expect_used, reason = "documented: the id space is 24 bits")]
        let node = NodeId::new(hub.next_node).expect("at most 16,777,215 nodes per hub");
        hub.nodes.insert(node, tx);
        LocalBackplane {
            hub: self.clone(),
            node,
            events: Mutex::new(Some(rx)),
        }
    }
}

/// One node of a [`LocalHub`].
#[derive(Debug)]
pub struct LocalBackplane {
    hub: LocalHub,
    node: NodeId,
    events: Mutex<Option<mpsc::Receiver<BackplaneEvent>>>,
}

impl LocalBackplane {
    fn depart(&self) {
        let mut hub = self.hub.lock();
        hub.nodes.remove(&self.node);
        for subs in hub.subscribers.values_mut() {
            subs.remove(&self.node);
        }
    }
}

impl Drop for LocalBackplane {
    fn drop(&mut self) {
        self.depart();
    }
}

fn now() -> Instant {
    crate::clock::monotonic()
}

fn ready<T: Send + 'static>(v: T) -> BoxFuture<T> {
    Box::pin(std::future::ready(v))
}

fn fresh_epoch() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    (u64::from_be_bytes(b) >> 12).max(1)
}

impl Backplane for LocalBackplane {
    fn node(&self) -> NodeId {
        self.node
    }

    fn take_events(&self) -> Option<mpsc::Receiver<BackplaneEvent>> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn publish(
        &self,
        topic: &Topic,
        payloads: Vec<Vec<u8>>,
    ) -> BoxFuture<Result<Published, BackplaneError>> {
        let mut hub = self.hub.lock();
        let subscribers: Vec<NodeId> = hub
            .subscribers
            .get(topic)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        let log = hub.logs.entry(topic.clone()).or_default();
        if log.epoch == 0 {
            log.epoch = fresh_epoch();
        }
        let mut sent = Vec::with_capacity(payloads.len());
        for payload in payloads {
            log.seq += 1;
            let p = Publication::new(self.node, Position::new(log.epoch, log.seq), payload);
            log.entries.push_back(p.clone());
            if log.entries.len() > LOCAL_HISTORY {
                log.entries.pop_front();
            }
            sent.push(p);
        }
        let position = Position::new(log.epoch, log.seq);
        let mut receivers = 0;
        for node in &subscribers {
            let mut reached = true;
            for p in &sent {
                reached &= hub.tell(
                    *node,
                    BackplaneEvent::Message {
                        topic: topic.clone(),
                        publication: p.clone(),
                    },
                );
            }
            receivers += u32::from(reached);
        }
        ready(Ok(Published::new(position, Some(receivers))))
    }

    fn subscribe(&self, topic: &Topic) -> BoxFuture<Result<Position, BackplaneError>> {
        let mut hub = self.hub.lock();
        hub.subscribers
            .entry(topic.clone())
            .or_default()
            .insert(self.node);
        let at = hub
            .logs
            .get(topic)
            .map_or_else(Position::default, |l| Position::new(l.epoch, l.seq));
        ready(Ok(at))
    }

    fn unsubscribe(&self, topic: &Topic) -> BoxFuture<Result<(), BackplaneError>> {
        if let Some(s) = self.hub.lock().subscribers.get_mut(topic) {
            s.remove(&self.node);
        }
        ready(Ok(()))
    }

    fn history(
        &self,
        topic: &Topic,
        after: u64,
        max: usize,
    ) -> BoxFuture<Result<History, BackplaneError>> {
        let hub = self.hub.lock();
        let history = match hub.logs.get(topic) {
            Some(log) => History::new(
                log.epoch,
                log.seq,
                log.entries
                    .iter()
                    .filter(|p| p.position.seq > after)
                    .take(max)
                    .cloned()
                    .collect(),
            ),
            None => History::new(0, 0, Vec::new()),
        };
        ready(Ok(history))
    }

    fn request(
        &self,
        to: NodeId,
        body: Vec<u8>,
        deadline: Duration,
    ) -> BoxFuture<Result<Vec<u8>, BackplaneError>> {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut hub = self.hub.lock();
            hub.next_request += 1;
            let id = hub.next_request;
            let event = BackplaneEvent::Request {
                from: self.node,
                id,
                body,
            };
            if !hub.nodes.contains_key(&to) {
                return ready(Err(BackplaneError::NoSuchNode(to)));
            }
            hub.replies.insert(id, tx);
            if !hub.tell(to, event) {
                hub.replies.remove(&id);
                return ready(Err(BackplaneError::Unavailable(format!(
                    "{to} is not keeping up"
                ))));
            }
            id
        };
        let hub = self.hub.clone();
        Box::pin(async move {
            match tokio::time::timeout(deadline, rx).await {
                Ok(Ok(reply)) => Ok(reply),
                _ => {
                    hub.lock().replies.remove(&id);
                    Err(BackplaneError::Indeterminate(deadline))
                }
            }
        })
    }

    fn reply(&self, _to: NodeId, id: u64, body: Vec<u8>) -> BoxFuture<Result<(), BackplaneError>> {
        if let Some(tx) = self.hub.lock().replies.remove(&id) {
            let _ = tx.send(body);
        }
        ready(Ok(()))
    }

    fn nodes(&self) -> BoxFuture<Result<Vec<NodeId>, BackplaneError>> {
        let mut nodes: Vec<NodeId> = self.hub.lock().nodes.keys().copied().collect();
        nodes.sort();
        ready(Ok(nodes))
    }

    fn ban(&self, source: &SourceKey, length: Duration) -> BoxFuture<Result<(), BackplaneError>> {
        let mut hub = self.hub.lock();
        hub.bans.insert(*source, now() + length);
        hub.tell_all(&BackplaneEvent::Banned {
            source: *source,
            length,
        });
        ready(Ok(()))
    }

    fn unban(&self, source: &SourceKey) -> BoxFuture<Result<bool, BackplaneError>> {
        let mut hub = self.hub.lock();
        let was = hub.bans.remove(source).is_some_and(|until| until > now());
        hub.tell_all(&BackplaneEvent::Unbanned { source: *source });
        ready(Ok(was))
    }

    fn bans(&self) -> BoxFuture<Result<Vec<(SourceKey, Duration)>, BackplaneError>> {
        let now = now();
        let mut hub = self.hub.lock();
        hub.bans.retain(|_, until| *until > now);
        let list = hub
            .bans
            .iter()
            .map(|(s, until)| (*s, until.saturating_duration_since(now)))
            .collect();
        ready(Ok(list))
    }

    fn leave(&self) -> BoxFuture<()> {
        self.depart();
        ready(())
    }

    fn record_failure(
        &self,
        source: &SourceKey,
        window: Duration,
    ) -> BoxFuture<Result<u64, BackplaneError>> {
        let now = now();
        let mut hub = self.hub.lock();
        if hub.failures.len() >= MAX_FAILING_SOURCES {
            hub.failures.retain(|_, (_, end)| *end > now);
        }
        let entry = hub.failures.entry(*source).or_insert((0, now + window));
        if now >= entry.1 {
            *entry = (0, now + window);
        }
        entry.0 += 1;
        let n = entry.0;
        ready(Ok(n))
    }
}
