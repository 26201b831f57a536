//! The state every connection task of one server shares: configuration, the registry,
//! sessions, bans, counters and the server-wide signals.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cypherwire_session::{BanPolicy, ServerAuth, SessionConfig, SourceKey};
use cypherwire_wire::{Message, Push, Value};
use tokio::sync::{broadcast, watch};

use crate::cluster::link::ClusterLink;
use crate::error::Incoming;
use crate::events::{Event, EventKind};
use crate::id::ConnectionId;
use crate::limits::ServerLimits;
use crate::registry::Registry;
use crate::state::ServerState;

/// A message over the session's message limit: its encoded length and the limit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TooLarge {
    pub(crate) len: usize,
    pub(crate) max: usize,
}

impl From<TooLarge> for crate::Error {
    fn from(TooLarge { len, max }: TooLarge) -> Self {
        Self::MessageTooLarge { len, max }
    }
}

impl From<TooLarge> for crate::cluster::seam::ClusterError {
    fn from(TooLarge { len, max }: TooLarge) -> Self {
        Self::MessageTooLarge { len, max }
    }
}

/// Server-wide counters.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) handshakes_ok: AtomicU64,
    pub(crate) handshakes_failed: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) messages_in: AtomicU64,
    pub(crate) pushes: AtomicU64,
    pub(crate) slow_consumers: AtomicU64,
    pub(crate) kicks: AtomicU64,
    pub(crate) resumes_ok: AtomicU64,
    pub(crate) resumes_refused: AtomicU64,
    pub(crate) compat_connections: AtomicU64,
    pub(crate) compat_refused: AtomicU64,
    pub(crate) compat_replayed: AtomicU64,
    pub(crate) compat_errors: AtomicU64,
    /// Bytes of connections that have ended (live ones are summed from the registry).
    pub(crate) bytes_in_closed: AtomicU64,
    pub(crate) bytes_out_closed: AtomicU64,
}
pub(crate) type AcceptHook = Arc<dyn Fn(Incoming) -> bool + Send + Sync>;

pub(crate) struct Shared {
    pub(crate) auth: ServerAuth,
    pub(crate) session: SessionConfig,
    pub(crate) limits: ServerLimits,
    pub(crate) registry: Registry,
    pub(crate) stats: Stats,
    /// Refusals before the handshake: counts, log throttles, the writers telling peers why.
    pub(crate) refusals: crate::refusals::Refusals,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) next_id: AtomicU64,
    pub(crate) shutdown: watch::Sender<bool>,
    pub(crate) abort: watch::Sender<bool>,
    pub(crate) stopped: watch::Sender<bool>,
    pub(crate) local_addr: SocketAddr,
    pub(crate) hook: Option<AcceptHook>,
    pub(crate) inbox: Option<tokio::sync::mpsc::Sender<crate::InboxItem>>,
    pub(crate) inbox_rx: Mutex<Option<tokio::sync::mpsc::Receiver<crate::InboxItem>>>,
    /// Bans, groups and sessions: what a cluster of instances would share.
    pub(crate) state: Box<dyn ServerState>,
    pub(crate) connection_queue: Option<usize>,
    pub(crate) bans: BanPolicy,
    /// Addresses never counted nor banned.
    pub(crate) exempt: Option<Exempt>,
    /// This server's node id in its cluster (0 outside a cluster).
    pub(crate) node: u32,
    /// The backplane, for a server in a cluster.
    pub(crate) cluster: Option<Arc<ClusterLink>>,
    /// The application's values ([`crate::ServerBuilder::state`]).
    pub(crate) app_state: crate::app_state::AppState,
    /// Every route's counters ([`crate::ServerHandle::route_stats`]).
    pub(crate) routes: crate::metrics::Routes,
}

/// Which addresses are exempt from attempt counting and bans.
pub(crate) type Exempt = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;

impl Shared {
    /// Whether `ip` is exempt from attempt counting and bans.
    pub(crate) fn is_exempt(&self, ip: IpAddr) -> bool {
        self.exempt.as_ref().is_some_and(|f| f(ip))
    }

    pub(crate) fn emit(&self, kind: EventKind) {
        // No subscriber is fine: events are for those who listen.
        let _ = self.events.send(Event {
            at: crate::clock::wall_clock(),
            kind,
        });
    }

    pub(crate) fn next_id(&self) -> ConnectionId {
        ConnectionId::on(self.node, self.next_id.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Refuses an id another node of the cluster holds.
    /// Refuses a message no connection could carry: longer than the session's message limit
    /// in a codec the server offers ([`SessionConfig::oversize`]).
    pub(crate) fn check_size(&self, msg: &Message) -> Result<(), TooLarge> {
        match self.session.oversize(msg) {
            None => Ok(()),
            Some(len) => Err(TooLarge {
                len,
                max: self.session.max_message_len(),
            }),
        }
    }

    /// [`check_size`](Self::check_size) for a push of `data` (with the longest sequence
    /// number), handing `data` back.
    pub(crate) fn check_push(&self, data: Value) -> Result<Value, TooLarge> {
        let msg = Message::Push(Push::new(u64::MAX, data));
        self.check_size(&msg)?;
        match msg {
            Message::Push(p) => Ok(p.data),
            _ => unreachable!("built as a push"),
        }
    }

    pub(crate) fn check_local(&self, id: ConnectionId) -> Result<(), crate::Error> {
        match id.node() {
            Some(node) if node.get() != self.node => Err(crate::Error::Remote(id)),
            _ => Ok(()),
        }
    }

    pub(crate) fn shutdown_rx(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub(crate) fn grace(&self) -> Duration {
        self.limits.shutdown_grace
    }

    /// The source `ip` counts as for bans, limits and session quotas (IPv4-mapped addresses
    /// are IPv4; IPv6 by the ban policy's prefix).
    pub(crate) fn source(&self, ip: IpAddr) -> SourceKey {
        self.bans.source(ip)
    }

    /// Closes every connection of `source` with `BANNED` (their sessions are discarded);
    /// returns how many.
    pub(crate) fn close_banned(&self, source: &SourceKey) -> usize {
        let links = self
            .registry
            .links_from(|peer| self.source(peer.ip()) == *source);
        for (_, link) in &links {
            link.stop
                .send_replace(Some(crate::DisconnectReason::Banned));
        }
        links.len()
    }

    pub(crate) fn is_banned(&self, ip: IpAddr) -> bool {
        self.state
            .is_banned(&self.source(ip), crate::clock::monotonic())
    }
}
