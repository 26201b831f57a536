//! The connection registry: who is connected, with what, since when, and how much.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use cypherwire_session::{PublicKey, SessionInfo};
use tokio::sync::mpsc;

use crate::id::ConnectionId;
use crate::outgoing::Outbox;

/// Traffic counters of one connection (messages and plaintext bytes).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) messages_in: AtomicU64,
    pub(crate) messages_out: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    /// Milliseconds since `connected_at` of the last message received.
    pub(crate) last_activity_ms: AtomicU64,
}

/// A snapshot of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The id.
    pub id: ConnectionId,
    /// The peer's address.
    pub peer: SocketAddr,
    /// The peer's authenticated static key (identity mode).
    pub identity: Option<PublicKey>,
    /// When the handshake completed (server's wall clock).
    pub connected_at: SystemTime,
    /// When the last message arrived (server's wall clock).
    pub last_activity: SystemTime,
    /// Messages received.
    pub messages_in: u64,
    /// Messages sent.
    pub messages_out: u64,
    /// Plaintext bytes received.
    pub bytes_in: u64,
    /// Plaintext bytes sent.
    pub bytes_out: u64,
}

pub(crate) struct Entry {
    pub(crate) peer: SocketAddr,
    pub(crate) session: SessionInfo,
    pub(crate) connected_at: SystemTime,
    pub(crate) link: Link,
}

/// What other tasks need to reach a connection.
#[derive(Clone)]
pub(crate) struct Link {
    pub(crate) outbox: Outbox,
    pub(crate) counters: std::sync::Arc<Counters>,
    /// Set to ask the connection to end, with the reason.
    pub(crate) stop: std::sync::Arc<tokio::sync::watch::Sender<Option<crate::DisconnectReason>>>,
    /// This connection's own receive queue, if enabled (unhandled messages, oldest first).
    pub(crate) queue: Option<std::sync::Arc<tokio::sync::Mutex<mpsc::Receiver<crate::InboxItem>>>>,
    /// The session the connection is attached to (changes when it resumes another).
    pub(crate) session: std::sync::Arc<Mutex<std::sync::Arc<crate::outgoing::Session>>>,
}

impl Link {
    pub(crate) fn session(&self) -> std::sync::Arc<crate::outgoing::Session> {
        self.session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Entry {
    fn info(&self, id: ConnectionId) -> ConnectionInfo {
        let c = &self.link.counters;
        let last = std::time::Duration::from_millis(c.last_activity_ms.load(Ordering::Relaxed));
        ConnectionInfo {
            id,
            peer: self.peer,
            identity: self.session.peer_identity,
            connected_at: self.connected_at,
            last_activity: self.connected_at + last,
            messages_in: c.messages_in.load(Ordering::Relaxed),
            messages_out: c.messages_out.load(Ordering::Relaxed),
            bytes_in: c.bytes_in.load(Ordering::Relaxed),
            bytes_out: c.bytes_out.load(Ordering::Relaxed),
        }
    }
}

/// Live connections and per-address counts.
#[derive(Default)]
pub(crate) struct Registry {
    entries: Mutex<HashMap<ConnectionId, Entry>>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl Registry {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<ConnectionId, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn insert(&self, id: ConnectionId, entry: Entry) {
        self.entries().insert(id, entry);
    }

    pub(crate) fn remove(&self, id: ConnectionId) {
        self.entries().remove(&id);
    }

    /// Forgets every connection (after their tasks were aborted).
    pub(crate) fn clear(&self) {
        self.entries().clear();
        self.per_ip
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    pub(crate) fn len(&self) -> usize {
        self.entries().len()
    }

    pub(crate) fn info(&self, id: ConnectionId) -> Option<ConnectionInfo> {
        self.entries().get(&id).map(|e| e.info(id))
    }

    pub(crate) fn list(&self) -> Vec<ConnectionInfo> {
        let mut v: Vec<_> = self.entries().iter().map(|(id, e)| e.info(*id)).collect();
        v.sort_by_key(|i| i.id);
        v
    }

    pub(crate) fn by_peer(&self, peer: SocketAddr) -> Option<ConnectionInfo> {
        self.entries()
            .iter()
            .find(|(_, e)| e.peer == peer)
            .map(|(id, e)| e.info(*id))
    }

    pub(crate) fn link(&self, id: ConnectionId) -> Option<Link> {
        self.entries().get(&id).map(|e| e.link.clone())
    }

    pub(crate) fn links(&self) -> Vec<(ConnectionId, Link)> {
        self.entries()
            .iter()
            .map(|(id, e)| (*id, e.link.clone()))
            .collect()
    }

    /// The connections whose peer address satisfies `from`.
    pub(crate) fn links_from(
        &self,
        from: impl Fn(SocketAddr) -> bool,
    ) -> Vec<(ConnectionId, Link)> {
        self.entries()
            .iter()
            .filter(|(_, e)| from(e.peer))
            .map(|(id, e)| (*id, e.link.clone()))
            .collect()
    }

    /// Counts a connection from `ip`; returns false (and counts nothing) at the limit.
    pub(crate) fn admit_ip(&self, ip: IpAddr, limit: usize) -> bool {
        let mut map = self
            .per_ip
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(ip).or_insert(0);
        if *n >= limit {
            return false;
        }
        *n += 1;
        true
    }

    pub(crate) fn release_ip(&self, ip: IpAddr) {
        let mut map = self
            .per_ip
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&ip);
            }
        }
    }
}
