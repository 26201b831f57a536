//! Handles to a running server and to one connection: registry, events, push, broadcast,
//! groups, kicks, bans, counters, shutdown.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cypherwire_wire::{Action, Message, Value};

use crate::cluster::Cluster;
use crate::cluster::protocol::Frame;
use crate::cluster::seam::Topic;
use crate::error::Error;
use crate::events::{DisconnectReason, Events};
use crate::id::ConnectionId;
use crate::outgoing::Outgoing;
use crate::registry::ConnectionInfo;
use crate::shared::Shared;
use crate::state::TooManyGroups;

/// A snapshot of the server's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// Authenticated connections now.
    pub connections: usize,
    /// Handshakes that completed.
    pub handshakes_ok: u64,
    /// Handshakes that failed.
    pub handshakes_failed: u64,
    /// Connections refused before their handshake (each peer was told why).
    pub refused: u64,
    /// The same refusals by reason.
    pub refused_by: crate::refusals::RefusalCounts,
    /// Requests received.
    pub requests: u64,
    /// Messages received.
    pub messages_in: u64,
    /// Pushes and broadcast messages queued.
    pub pushes: u64,
    /// Connections closed as slow consumers.
    pub slow_consumers: u64,
    /// Connections kicked.
    pub kicks: u64,
    /// Connections that resumed their session (here, or handed over from another instance).
    pub resumes_ok: u64,
    /// Resumes refused (unknown, used or expired token, or pushes lost): the peer went on with
    /// a new session.
    pub resumes_refused: u64,
    /// CYPHER_PROTOCOL compat listener: connections accepted.
    pub compat_connections: u64,
    /// Compat connections refused (too many at once).
    pub compat_refused: u64,
    /// Compat requests answered from the replay cache (a token seen before, not run again).
    pub compat_replayed: u64,
    /// Compat connections closed on an error (an undecryptable or malformed token, a slow or
    /// oversized message, an idle timeout).
    pub compat_errors: u64,
    /// Sessions kept (attached or resumable).
    pub sessions: usize,
    /// Plaintext bytes received, all connections, since start.
    pub bytes_in: u64,
    /// Plaintext bytes sent, all connections, since start.
    pub bytes_out: u64,
}
/// Controls a running server: registry, events, push, broadcast, kicks, bans, shutdown.
#[derive(Clone)]
pub struct ServerHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addr", &self.shared.local_addr)
            .field("connections", &self.shared.registry.len())
            .finish()
    }
}

impl ServerHandle {
    pub(crate) fn from_shared(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Subscribes to connection events from now on.
    pub fn events(&self) -> Events {
        Events::new(self.shared.events.subscribe())
    }

    /// Authenticated connections, by id.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        self.shared.registry.list()
    }

    /// How many authenticated connections there are.
    pub fn count(&self) -> usize {
        self.shared.registry.len()
    }

    /// One connection by id.
    pub fn connection(&self, id: ConnectionId) -> Option<ConnectionInfo> {
        self.shared.registry.info(id)
    }

    /// One connection by peer address.
    pub fn connection_by_peer(&self, peer: SocketAddr) -> Option<ConnectionInfo> {
        self.shared.registry.by_peer(peer)
    }

    /// The connections from `ip`, whatever their ports, by id (NetStructer's `get(ip)`; the
    /// cluster-wide form is [`Cluster::connections_from`](crate::Cluster::connections_from)).
    pub fn connections_from(&self, ip: IpAddr) -> Vec<ConnectionInfo> {
        let mut found: Vec<_> = self
            .shared
            .registry
            .links_from(|peer| peer.ip() == ip)
            .into_iter()
            .filter_map(|(id, _)| self.shared.registry.info(id))
            .collect();
        found.sort_by_key(|i| i.id);
        found
    }

    /// The value of type `S` given to [`ServerBuilder::state`](crate::ServerBuilder::state),
    /// if one was.
    pub fn state<S: Send + Sync + 'static>(&self) -> Option<Arc<S>> {
        self.shared.app_state.get::<S>()
    }

    /// Queues a [`Push`](cypherwire_wire::Push) with `data` to one connection
    /// (numbered per session, kept for replay after a cut).
    ///
    /// # Errors
    /// [`Error::UnknownConnection`], or [`Error::SlowConsumer`] if its outbox is full (the
    /// connection is then closed; other connections are not affected); [`Error::Remote`] for a
    /// connection another node of the cluster holds (use [`cluster`](Self::cluster));
    /// [`Error::MessageTooLarge`] for data over the message limit (nothing is queued).
    pub fn send_to(&self, id: ConnectionId, data: impl Into<Value>) -> Result<(), Error> {
        self.shared.check_local(id)?;
        let data = self.shared.check_push(data.into())?;
        crate::delivery::push_to(&self.shared, id, data)
    }

    /// Queues any envelope to one connection.
    ///
    /// # Errors
    /// As [`send_to`](Self::send_to).
    pub fn send_message(&self, id: ConnectionId, msg: Message) -> Result<(), Error> {
        self.shared.check_local(id)?;
        self.shared.check_size(&msg)?;
        crate::delivery::deliver_to(&self.shared, id, Outgoing::Message(msg))
    }

    /// Pushes `data` to every authenticated connection; returns how many of this server's
    /// connections it was queued for (slow consumers are disconnected and not counted). In a
    /// cluster, every other node delivers it to its own connections too.
    ///
    /// Data over the message limit is sent to no one (0, and a warning in the log): use
    /// [`try_broadcast`](Self::try_broadcast) to get [`Error::MessageTooLarge`] instead.
    pub fn broadcast(&self, data: impl Into<Value>) -> usize {
        self.try_broadcast(data).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "broadcast not sent");
            0
        })
    }

    /// [`broadcast`](Self::broadcast), refusing data over the message limit.
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`]: nothing was queued anywhere.
    pub fn try_broadcast(&self, data: impl Into<Value>) -> Result<usize, Error> {
        let data = self.shared.check_push(data.into())?;
        let n = self
            .shared
            .registry
            .links()
            .into_iter()
            .filter(|(id, link)| {
                crate::delivery::push_via(&self.shared, *id, link, data.clone()).is_ok()
            })
            .count();
        if let Some(cluster) = &self.shared.cluster {
            cluster.publish(Topic::All, &Frame::Push(data));
        }
        Ok(n)
    }

    /// Sends an action to every authenticated connection (e.g. a chat message); returns how
    /// many of this server's connections it was queued for (in a cluster, every other node
    /// delivers it too). One copy of the action is shared by every connection's queue.
    ///
    /// An action over the message limit is sent to no one (0, and a warning in the log): use
    /// [`try_broadcast_action`](Self::try_broadcast_action) to get the error.
    pub fn broadcast_action(&self, action: &Action) -> usize {
        self.try_broadcast_action(action).unwrap_or_else(|e| {
            tracing::warn!(error = %e, action = %action.name, "broadcast not sent");
            0
        })
    }

    /// [`broadcast_action`](Self::broadcast_action), refusing an action over the message limit.
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`]: nothing was queued anywhere.
    pub fn try_broadcast_action(&self, action: &Action) -> Result<usize, Error> {
        let msg = Message::from(action.clone());
        self.shared.check_size(&msg)?;
        let msg = Arc::new(msg);
        let n = self
            .shared
            .registry
            .links()
            .into_iter()
            .filter(|(id, link)| {
                crate::delivery::deliver_via(&self.shared, *id, link, Outgoing::Shared(msg.clone()))
                    .is_ok()
            })
            .count();
        if let Some(cluster) = &self.shared.cluster {
            cluster.publish(Topic::All, &Frame::Action(action.clone()));
        }
        Ok(n)
    }

    /// What only a cluster can answer (connections on other nodes, cluster-wide counts);
    /// `None` for a server without a backplane.
    pub fn cluster(&self) -> Option<Cluster> {
        let link = self.shared.cluster.clone()?;
        Some(Cluster::new(self.shared.clone(), link))
    }

    /// A handle on one connection: send to it, close it, read its details.
    ///
    /// # Errors
    /// [`Error::UnknownConnection`].
    pub fn connection_handle(&self, id: ConnectionId) -> Result<ConnectionHandle, Error> {
        let link = self
            .shared
            .registry
            .link(id)
            .ok_or(Error::UnknownConnection(id))?;
        Ok(ConnectionHandle {
            id,
            server: self.clone(),
            queue: link.queue,
        })
    }

    /// Takes the inbox (once; `None` if it was not enabled or is already taken).
    pub fn take_inbox(&self) -> Option<crate::Inbox> {
        self.shared
            .inbox_rx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .map(crate::Inbox::new)
    }

    /// Adds a connection to a named group (created on first use).
    ///
    /// # Errors
    /// [`Error::UnknownConnection`]; [`Error::Config`] beyond [`MAX_GROUPS`](crate::MAX_GROUPS) groups;
    /// [`Error::GroupNameTooLong`] for a name over
    /// [`MAX_GROUP_NAME_LEN`](crate::MAX_GROUP_NAME_LEN) bytes.
    pub fn join_group(&self, id: ConnectionId, group: &str) -> Result<(), Error> {
        if group.len() > crate::MAX_GROUP_NAME_LEN {
            return Err(Error::GroupNameTooLong {
                len: group.len(),
                max: crate::MAX_GROUP_NAME_LEN,
            });
        }
        self.shared.check_local(id)?;
        if self.shared.registry.link(id).is_none() {
            return Err(Error::UnknownConnection(id));
        }
        self.shared
            .state
            .join(group, id)
            .map_err(|TooManyGroups| Error::Config("too many groups"))?;
        if let Some(cluster) = &self.shared.cluster {
            cluster.interest_changed();
        }
        Ok(())
    }

    /// Removes a connection from a group; returns whether it was a member.
    pub fn leave_group(&self, id: ConnectionId, group: &str) -> bool {
        let was = self.shared.state.leave(group, id);
        if was && let Some(cluster) = &self.shared.cluster {
            cluster.interest_changed();
        }
        was
    }

    /// The members of a group on this server.
    pub fn group_members(&self, group: &str) -> Vec<ConnectionId> {
        self.shared.state.members(group)
    }

    /// Pushes `data` to every member of a group; returns how many of this server's members
    /// it was queued for (in a cluster, the nodes with members deliver it to theirs).
    ///
    /// Data over the message limit is sent to no one (0, and a warning in the log): use
    /// [`try_broadcast_group`](Self::try_broadcast_group) to get the error.
    pub fn broadcast_group(&self, group: &str, data: impl Into<Value>) -> usize {
        self.try_broadcast_group(group, data).unwrap_or_else(|e| {
            tracing::warn!(error = %e, group, "group broadcast not sent");
            0
        })
    }

    /// [`broadcast_group`](Self::broadcast_group), refusing data over the message limit.
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`]: nothing was queued anywhere.
    pub fn try_broadcast_group(&self, group: &str, data: impl Into<Value>) -> Result<usize, Error> {
        let data = self.shared.check_push(data.into())?;
        let n = self
            .group_members(group)
            .into_iter()
            .filter(|id| crate::delivery::push_to(&self.shared, *id, data.clone()).is_ok())
            .count();
        if let Some(cluster) = &self.shared.cluster {
            cluster.publish(Topic::Group(group.to_owned()), &Frame::Push(data));
        }
        Ok(n)
    }

    /// Closes one connection: the peer gets `Close` with code `KICKED`, and its session is
    /// discarded, so its token cannot resume it (the client reports it was kicked).
    ///
    /// # Errors
    /// [`Error::UnknownConnection`]; [`Error::Remote`] for a connection another node holds.
    pub fn kick(&self, id: ConnectionId) -> Result<(), Error> {
        self.stop(id, DisconnectReason::Kicked)?;
        self.shared.stats.kicks.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Ends this instance's connection `id` for `reason`.
    fn stop(&self, id: ConnectionId, reason: DisconnectReason) -> Result<(), Error> {
        self.shared.check_local(id)?;
        let link = self
            .shared
            .registry
            .link(id)
            .ok_or(Error::UnknownConnection(id))?;
        link.stop.send_replace(Some(reason));
        Ok(())
    }

    /// Closes one connection with code `BANNED` and discards its session, without banning its
    /// address: for bans the application keeps itself (the mesh bans member keys). The client
    /// reports it was banned and does not reconnect.
    ///
    /// # Errors
    /// [`Error::UnknownConnection`]; [`Error::Remote`] for a connection another node holds.
    pub fn close_banned(&self, id: ConnectionId) -> Result<(), Error> {
        self.stop(id, DisconnectReason::Banned)
    }

    /// Closes every connection; returns how many.
    pub fn kick_all(&self) -> usize {
        let links = self.shared.registry.links();
        for (_, link) in &links {
            link.stop.send_replace(Some(DisconnectReason::Kicked));
        }
        self.shared
            .stats
            .kicks
            .fetch_add(links.len() as u64, Ordering::Relaxed);
        links.len()
    }

    /// Bans the source `ip` belongs to for `length`: its new connections are refused before
    /// any work (with a refusal saying until when), and its open connections are closed with
    /// `BANNED`, their sessions discarded. Returns how many connections of this instance were
    /// closed. A source is an IPv4 address (`::ffff:192.0.2.7` is `192.0.2.7`) or an IPv6
    /// network of [`BanPolicy::ipv6_prefix`](cypherwire_session::BanPolicy::ipv6_prefix) bits
    /// (a /64 by default).
    ///
    /// In a cluster the ban is stored in the backplane and holds on every node.
    pub fn ban(&self, ip: IpAddr, length: Duration) -> usize {
        let source = self.shared.source(ip);
        self.shared
            .state
            .ban(&source, length, crate::clock::monotonic());
        let closed = self.shared.close_banned(&source);
        if let Some(cluster) = &self.shared.cluster {
            cluster.ban(source, length);
        }
        closed
    }

    /// Lifts the ban on the source `ip` belongs to; returns whether there was one (or any
    /// record of the source).
    pub fn unban(&self, ip: IpAddr) -> bool {
        let source = self.shared.source(ip);
        let was = self.shared.state.unban(&source);
        if let Some(cluster) = &self.shared.cluster {
            cluster.unban(source);
        }
        was
    }

    /// Sources banned now, each as its address (an IPv4 address, or the first address of an
    /// IPv6 network), with the time left.
    pub fn bans(&self) -> Vec<(IpAddr, Duration)> {
        let now = crate::clock::monotonic();
        self.shared
            .state
            .banned(now)
            .into_iter()
            .map(|(source, until)| (source.addr(), until.saturating_duration_since(now)))
            .collect()
    }

    /// Server-wide counters.
    pub fn stats(&self) -> StatsSnapshot {
        let s = &self.shared.stats;
        StatsSnapshot {
            connections: self.count(),
            handshakes_ok: s.handshakes_ok.load(Ordering::Relaxed),
            handshakes_failed: s.handshakes_failed.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            refused_by: self.shared.refusals.counts(),
            requests: s.requests.load(Ordering::Relaxed),
            messages_in: s.messages_in.load(Ordering::Relaxed),
            pushes: s.pushes.load(Ordering::Relaxed),
            slow_consumers: s.slow_consumers.load(Ordering::Relaxed),
            kicks: s.kicks.load(Ordering::Relaxed),
            resumes_ok: s.resumes_ok.load(Ordering::Relaxed),
            resumes_refused: s.resumes_refused.load(Ordering::Relaxed),
            compat_connections: s.compat_connections.load(Ordering::Relaxed),
            compat_refused: s.compat_refused.load(Ordering::Relaxed),
            compat_replayed: s.compat_replayed.load(Ordering::Relaxed),
            compat_errors: s.compat_errors.load(Ordering::Relaxed),
            sessions: self.shared.state.session_count(),
            bytes_in: s.bytes_in_closed.load(Ordering::Relaxed)
                + self.connections().iter().map(|c| c.bytes_in).sum::<u64>(),
            bytes_out: s.bytes_out_closed.load(Ordering::Relaxed)
                + self.connections().iter().map(|c| c.bytes_out).sum::<u64>(),
        }
    }

    /// Requests answered by each route, by status, with latency histograms (for an exporter;
    /// `cypherwire serve --metrics` serves them as Prometheus text). The fallback appears as
    /// path and operation `*`, requests no route took as empty ones; sorted by route.
    pub fn route_stats(&self) -> Vec<crate::RouteStats> {
        self.shared.routes.snapshot()
    }

    /// Graceful shutdown: stop accepting, let in-flight requests finish (up to
    /// [`ServerLimits::shutdown_grace`](crate::ServerLimits::shutdown_grace)), send `Close`
    /// (`GOING_AWAY`) to every peer, and wait for the connections to end. Returns when the
    /// server has stopped.
    pub async fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
        let mut stopped = self.shared.stopped.subscribe();
        let _ = stopped.wait_for(|s| *s).await;
    }

    /// Immediate stop: stop accepting and end every connection now, without waiting for
    /// in-flight requests or saying goodbye (peers see their streams end without a close).
    /// Returns when the server has stopped.
    pub async fn shutdown_now(&self) {
        self.shared.abort.send_replace(true);
        self.shared.shutdown.send_replace(true);
        let mut stopped = self.shared.stopped.subscribe();
        let _ = stopped.wait_for(|s| *s).await;
    }

    /// Whether the server has stopped.
    pub fn is_stopped(&self) -> bool {
        *self.shared.stopped.borrow()
    }

    /// Waits until the server has stopped (after a [`shutdown`](Self::shutdown) from anywhere),
    /// without stopping it.
    pub async fn stopped(&self) {
        let mut stopped = self.shared.stopped.subscribe();
        let _ = stopped.wait_for(|s| *s).await;
    }
}
/// One connection, from the registry (aesm's connection objects): send to it, close it.
/// Messages it sends that no handler takes arrive in the server's [`Inbox`](crate::Inbox),
/// tagged with its id.
#[derive(Clone)]
pub struct ConnectionHandle {
    id: ConnectionId,
    server: ServerHandle,
    queue: Option<Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<crate::InboxItem>>>>,
}

impl std::fmt::Debug for ConnectionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionHandle")
            .field("id", &self.id)
            .field("queue", &self.queue.is_some())
            .finish()
    }
}

impl ConnectionHandle {
    /// The connection's id.
    pub fn id(&self) -> ConnectionId {
        self.id
    }

    /// The connection's details, while it lives.
    pub fn info(&self) -> Option<ConnectionInfo> {
        self.server.connection(self.id)
    }

    /// Pushes `data` to it. See [`ServerHandle::send_to`](crate::ServerHandle::send_to).
    ///
    /// # Errors
    /// As [`ServerHandle::send_to`](crate::ServerHandle::send_to).
    pub fn send(&self, data: impl Into<Value>) -> Result<(), Error> {
        self.server.send_to(self.id, data)
    }

    /// Closes it (the peer gets `Close` with code `KICKED`).
    ///
    /// # Errors
    /// [`Error::UnknownConnection`] if it already ended.
    pub fn close(&self) -> Result<(), Error> {
        self.server.kick(self.id)
    }

    /// The oldest message waiting in this connection's receive queue (enabled with
    /// [`ServerBuilder::connection_queue`](crate::ServerBuilder::connection_queue)); `None` once
    /// the connection has ended and its queue is empty.
    ///
    /// # Errors
    /// [`Error::Config`] if connection queues are not enabled, [`Error::UnknownConnection`] if
    /// the connection is gone.
    pub async fn recv(&self) -> Result<Option<crate::InboxItem>, Error> {
        let queue = self
            .queue
            .as_ref()
            .ok_or(Error::Config("connection queues are not enabled"))?;
        Ok(queue.lock().await.recv().await)
    }
}
