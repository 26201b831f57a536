//! The server: builder, accept loop, handle.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cypherwire_session::wire::{Action, Message, Value};
use cypherwire_session::{AttemptLimiter, BanPolicy, ServerAuth, SessionConfig, SourceKey};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, broadcast, watch};
use tokio::task::JoinSet;

use crate::conn::{self, Outgoing};
use crate::error::{Error, Incoming, Refusal};
use crate::events::{DEFAULT_EVENT_CAPACITY, DisconnectReason, Event, EventKind, Events};
use crate::handler::{ActionHandler, RequestHandler};
use crate::limits::ServerLimits;
use crate::registry::{ConnectionId, ConnectionInfo, Registry};
use crate::router::Router;

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
    /// Bytes of connections that have ended (live ones are summed from the registry).
    pub(crate) bytes_in_closed: AtomicU64,
    pub(crate) bytes_out_closed: AtomicU64,
}

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
    /// Connections refused before their handshake.
    pub refused: u64,
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
    /// Sessions kept (attached or resumable).
    pub sessions: usize,
    /// Plaintext bytes received, all connections, since start.
    pub bytes_in: u64,
    /// Plaintext bytes sent, all connections, since start.
    pub bytes_out: u64,
}

type AcceptHook = Arc<dyn Fn(Incoming) -> bool + Send + Sync>;

/// Most named broadcast groups a server keeps (names come from the application).
pub const MAX_GROUPS: usize = 65_536;

pub(crate) struct Shared {
    pub(crate) auth: ServerAuth,
    pub(crate) session: SessionConfig,
    pub(crate) limits: ServerLimits,
    pub(crate) router: Router,
    pub(crate) registry: Registry,
    pub(crate) limiter: Mutex<AttemptLimiter<SourceKey>>,
    pub(crate) stats: Stats,
    events: broadcast::Sender<Event>,
    next_id: AtomicU64,
    shutdown: watch::Sender<bool>,
    abort: watch::Sender<bool>,
    stopped: watch::Sender<bool>,
    local_addr: SocketAddr,
    hook: Option<AcceptHook>,
    pub(crate) inbox: Option<tokio::sync::mpsc::Sender<crate::InboxItem>>,
    inbox_rx: Mutex<Option<tokio::sync::mpsc::Receiver<crate::InboxItem>>>,
    groups: Mutex<std::collections::HashMap<String, std::collections::HashSet<ConnectionId>>>,
    pub(crate) sessions: crate::sessions::Sessions,
    pub(crate) connection_queue: Option<usize>,
    bans: BanPolicy,
}

impl Shared {
    fn groups(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        std::collections::HashMap<String, std::collections::HashSet<ConnectionId>>,
    > {
        self.groups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forgets a connection in every group (it ended).
    pub(crate) fn leave_all_groups(&self, id: ConnectionId) {
        let mut groups = self.groups();
        groups.retain(|_, members| {
            members.remove(&id);
            !members.is_empty()
        });
    }

    pub(crate) fn emit(&self, kind: EventKind) {
        // No subscriber is fine: events are for those who listen.
        let _ = self.events.send(Event {
            at: crate::wall_clock(),
            kind,
        });
    }

    pub(crate) fn next_id(&self) -> ConnectionId {
        ConnectionId(self.next_id.fetch_add(1, Ordering::Relaxed) + 1)
    }

    pub(crate) fn shutdown_rx(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub(crate) fn grace(&self) -> Duration {
        self.limits.shutdown_grace
    }

    fn limiter(&self) -> std::sync::MutexGuard<'_, AttemptLimiter<SourceKey>> {
        self.limiter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The source `ip` counts as for bans, limits and session quotas (IPv4-mapped addresses
    /// are IPv4; IPv6 by the ban policy's prefix).
    pub(crate) fn source(&self, ip: IpAddr) -> SourceKey {
        self.bans.source(ip)
    }

    pub(crate) fn is_banned(&self, ip: IpAddr) -> bool {
        self.limiter()
            .check(&self.source(ip), crate::monotonic())
            .is_err()
    }
}

/// Configures a [`Server`]. Start with [`Server::builder`].
#[must_use = "call `bind()` to start the server"]
pub struct ServerBuilder {
    auth: ServerAuth,
    session: SessionConfig,
    limits: ServerLimits,
    bans: BanPolicy,
    router: Router,
    hook: Option<AcceptHook>,
    inbox: Option<usize>,
    connection_queue: Option<usize>,
    resume: crate::ResumePolicy,
    compat: Option<crate::CypherCompat>,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("limits", &self.limits)
            .field("router", &self.router)
            .finish_non_exhaustive()
    }
}

impl ServerBuilder {
    /// Handles requests to (`path`, `operation`).
    ///
    /// The handler's future is polled once on the connection's own task as soon as the request
    /// is read: one that completes without waiting is answered right there, with no task
    /// spawned; one that waits continues on a task of its own (so requests of one connection
    /// run concurrently, and `Cancel` or the deadline can stop it). Long CPU-bound work should
    /// therefore yield or move to `tokio::task::spawn_blocking`: until it returns, that
    /// connection reads no further requests. Panics are caught either way and answered with
    /// `INTERNAL`.
    pub fn route(
        mut self,
        path: impl Into<String>,
        operation: impl Into<String>,
        handler: impl RequestHandler,
    ) -> Self {
        self.router
            .route(path.into(), operation.into(), Arc::new(handler));
        self
    }

    /// Also listens for CYPHER_PROTOCOL 1.5.0 clients (**legacy** compat mode, see
    /// `docs/compat.md`): their requests go to the same routes as native ones.
    pub fn cypher_compat(mut self, compat: crate::CypherCompat) -> Self {
        self.compat = Some(compat);
        self
    }

    /// Handles every request no route matches (CYPHER_PROTOCOL's single `request_handler`).
    /// Without one, unmatched requests get a `NOT_FOUND` response.
    pub fn fallback(mut self, handler: impl RequestHandler) -> Self {
        self.router.fallback(Arc::new(handler));
        self
    }

    /// Handles the named action (pnetwork's packets bound to handlers).
    pub fn action(mut self, name: impl Into<String>, handler: impl ActionHandler) -> Self {
        self.router.action(name.into(), Arc::new(handler));
        self
    }

    /// Session settings: suites, codecs, frame limits, handshake timeout.
    pub fn session_config(mut self, config: SessionConfig) -> Self {
        self.session = config;
        self
    }

    /// Connection limits.
    pub fn limits(mut self, limits: ServerLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Attempt limits and bans for failed handshakes (per IP address).
    pub fn ban_policy(mut self, policy: BanPolicy) -> Self {
        self.bans = policy;
        self
    }

    /// Inspects each connection before its handshake; returning `false` refuses it (NetStructer's
    /// custom accept loop, e.g. an allow-list).
    pub fn accept_hook(mut self, hook: impl Fn(Incoming) -> bool + Send + Sync + 'static) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// Queues every request that no route (and no fallback) matches, and every action with no
    /// handler, in a bounded [`Inbox`](crate::Inbox) of `capacity` messages instead of answering
    /// `NOT_FOUND` or dropping them. Take it with [`ServerHandle::take_inbox`].
    pub fn inbox(mut self, capacity: usize) -> Self {
        self.inbox = Some(capacity);
        self
    }

    /// Gives every connection its own bounded receive queue of `capacity` messages
    /// (NetStructer's per-connection receive buffer): requests no route matches and actions
    /// with no handler wait there, oldest first, for [`ConnectionHandle::recv`]. Takes
    /// precedence over the server-wide [`inbox`](Self::inbox). A full queue stops reading that
    /// connection until there is room.
    pub fn connection_queue(mut self, capacity: usize) -> Self {
        self.connection_queue = Some(capacity);
        self
    }

    /// Session resumption settings (how long sessions survive a lost connection, how many
    /// responses and pushes they keep).
    pub fn resume_policy(mut self, policy: crate::ResumePolicy) -> Self {
        self.resume = policy;
        self
    }

    /// Binds a TCP listener and starts serving.
    ///
    /// # Errors
    /// [`Error::Bind`], [`Error::Config`] for invalid limits or ban policy.
    pub async fn bind(self, addr: &str) -> Result<Server, Error> {
        self.limits.validate()?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind {
                addr: addr.to_owned(),
                source,
            })?;
        self.serve_on(listener).await
    }

    /// Starts serving the connections `listener` accepts: any transport with ordered,
    /// reliable byte streams (a Unix socket, an in-memory pipe, a simulated network). Limits,
    /// bans and the accept hook apply as for TCP, keyed by the address each connection
    /// reports.
    ///
    /// # Errors
    /// [`Error::LocalAddr`], [`Error::Config`] for invalid limits or ban policy, [`Error::Bind`]
    /// for the compat listener.
    ///
    /// # Example: serving in-memory pipes
    ///
    /// ```
    /// use std::net::SocketAddr;
    ///
    /// use cypherwire_server::{Accept, Ctx, HandlerError, Server};
    /// use cypherwire_session::{ClientAuth, Psk, SessionConfig, connect};
    /// use cypherwire_wire::{Message, Request, Value};
    /// use tokio::io::DuplexStream;
    /// use tokio::sync::mpsc;
    ///
    /// /// Hands the server the far ends of in-memory pipes.
    /// struct Pipes(mpsc::Receiver<DuplexStream>);
    ///
    /// impl Accept for Pipes {
    ///     type Io = DuplexStream;
    ///     async fn accept(&mut self) -> std::io::Result<(DuplexStream, SocketAddr)> {
    ///         let io = self.0.recv().await.ok_or(std::io::ErrorKind::BrokenPipe)?;
    ///         Ok((io, SocketAddr::from(([10, 0, 0, 2], 1))))
    ///     }
    ///     fn local_addr(&self) -> std::io::Result<SocketAddr> {
    ///         Ok(SocketAddr::from(([10, 0, 0, 1], 1)))
    ///     }
    /// }
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let psk = Psk::from_passphrase("2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U")?;
    /// let (pipes, incoming) = mpsc::channel(8);
    /// let server = Server::builder(psk.clone())
    ///     .route("/ECHO", "PUT", |req: Request, _ctx: Ctx| async move {
    ///         Ok::<_, HandlerError>(req.data)
    ///     })
    ///     .serve_on(Pipes(incoming))
    ///     .await?;
    ///
    /// let (ours, theirs) = tokio::io::duplex(64 * 1024);
    /// pipes.send(theirs).await?;
    /// let mut s = connect(ours, &ClientAuth::Psk(psk), &SessionConfig::default()).await?;
    /// s.send_message(&Request::new(1, "/ECHO", "PUT").with_data("hi").into()).await?;
    /// loop {
    ///     match s.recv_message().await? {
    ///         Some(Message::Response(r)) => {
    ///             assert_eq!(r.data, Value::from("hi"));
    ///             break;
    ///         }
    ///         Some(_) => {} // the session's Welcome
    ///         None => return Err("closed".into()),
    ///     }
    /// }
    /// server.handle().shutdown().await;
    /// # Ok(()) }
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(run())?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn serve_on<L: Accept>(self, listener: L) -> Result<Server, Error> {
        self.limits.validate()?;
        let limiter =
            AttemptLimiter::new(self.bans).map_err(|_| Error::Config("invalid ban policy"))?;
        let local_addr = listener.local_addr().map_err(Error::LocalAddr)?;
        let (events, _) = broadcast::channel(DEFAULT_EVENT_CAPACITY);
        let sessions = crate::sessions::Sessions::new(self.resume).ok_or(Error::Config(
            "resume ttl, max_sessions and max_sessions_per_source must be non-zero",
        ))?;
        if self.inbox == Some(0) || self.connection_queue == Some(0) {
            return Err(Error::Config("inbox capacity must be non-zero"));
        }
        let (inbox, inbox_rx) = match self.inbox {
            Some(cap) => {
                let (tx, rx) = tokio::sync::mpsc::channel(cap);
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let shared = Arc::new(Shared {
            auth: self.auth,
            session: self.session,
            limits: self.limits,
            router: self.router,
            registry: Registry::default(),
            limiter: Mutex::new(limiter),
            bans: self.bans,
            stats: Stats::default(),
            events,
            next_id: AtomicU64::new(0),
            shutdown: watch::channel(false).0,
            abort: watch::channel(false).0,
            stopped: watch::channel(false).0,
            local_addr,
            hook: self.hook,
            inbox,
            inbox_rx: Mutex::new(inbox_rx),
            groups: Mutex::default(),
            sessions,
            connection_queue: self.connection_queue,
        });
        let compat_addr = match self.compat {
            Some(cfg) => {
                let l = crate::compat::bind(&cfg).await?;
                let addr = l.local_addr().map_err(Error::LocalAddr)?;
                let task = tokio::spawn(crate::compat::accept_loop(shared.clone(), l, cfg));
                Some((addr, task))
            }
            None => None,
        };
        let (compat_addr, compat_task) = compat_addr.unzip();
        tokio::spawn(accept_loop(shared.clone(), listener, compat_task));
        Ok(Server {
            handle: ServerHandle { shared },
            compat_addr,
        })
    }
}

/// A source of incoming connections for [`ServerBuilder::serve_on`]: TCP (implemented for
/// [`TcpListener`], with `TCP_NODELAY` set on each connection) or any transport with ordered,
/// reliable byte streams.
pub trait Accept: Send + 'static {
    /// One accepted connection.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Waits for the next connection and the address it comes from (used for limits, bans,
    /// events). An error is logged and retried after a short pause (as `EMFILE` is for TCP).
    fn accept(&mut self) -> impl Future<Output = std::io::Result<(Self::Io, SocketAddr)>> + Send;

    /// The address this listener serves (reported by [`ServerHandle::local_addr`]).
    ///
    /// # Errors
    /// When the transport cannot tell.
    fn local_addr(&self) -> std::io::Result<SocketAddr>;
}

impl Accept for TcpListener {
    type Io = tokio::net::TcpStream;

    async fn accept(&mut self) -> std::io::Result<(Self::Io, SocketAddr)> {
        let (stream, peer) = Self::accept(self).await?;
        let _ = stream.set_nodelay(true);
        Ok((stream, peer))
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Self::local_addr(self)
    }
}

/// A running server. Dropping it does not stop it; call [`ServerHandle::shutdown`].
#[derive(Debug)]
pub struct Server {
    handle: ServerHandle,
    compat_addr: Option<SocketAddr>,
}

impl Server {
    /// Starts configuring a server with the given authentication mode.
    pub fn builder(auth: impl Into<ServerAuth>) -> ServerBuilder {
        ServerBuilder {
            auth: auth.into(),
            session: SessionConfig::default(),
            limits: ServerLimits::default(),
            bans: BanPolicy::default(),
            router: Router::default(),
            hook: None,
            inbox: None,
            connection_queue: None,
            resume: crate::ResumePolicy::default(),
            compat: None,
        }
    }

    /// A cheap, clonable handle.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// The address of the CYPHER_PROTOCOL compat listener, if one was configured.
    pub fn compat_addr(&self) -> Option<SocketAddr> {
        self.compat_addr
    }
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

    /// Queues a [`Push`](cypherwire_session::wire::Push) with `data` to one connection
    /// (numbered per session, kept for replay after a cut).
    ///
    /// # Errors
    /// [`Error::UnknownConnection`], or [`Error::SlowConsumer`] if its outbox is full (the
    /// connection is then closed; other connections are not affected).
    pub fn send_to(&self, id: ConnectionId, data: impl Into<Value>) -> Result<(), Error> {
        let link = self
            .shared
            .registry
            .link(id)
            .ok_or(Error::UnknownConnection(id))?;
        self.push(id, &link, data.into())
    }

    /// Pushes through the connection's session (numbered, kept for replay after a cut).
    fn push(
        &self,
        id: ConnectionId,
        link: &crate::registry::Link,
        data: Value,
    ) -> Result<(), Error> {
        match link.session().push(data) {
            Ok(()) => {
                self.shared.stats.pushes.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(crate::sessions::PushFailure::SlowConsumer(conn)) => {
                self.shared
                    .stats
                    .slow_consumers
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(l) = self.shared.registry.link(conn) {
                    l.stop.send_replace(Some(DisconnectReason::SlowConsumer));
                }
                Err(Error::SlowConsumer(id))
            }
        }
    }

    /// Queues any envelope to one connection.
    ///
    /// # Errors
    /// As [`send_to`](Self::send_to).
    pub fn send_message(&self, id: ConnectionId, msg: Message) -> Result<(), Error> {
        let link = self
            .shared
            .registry
            .link(id)
            .ok_or(Error::UnknownConnection(id))?;
        self.deliver(id, &link, Outgoing::Message(msg))
    }

    fn deliver(
        &self,
        id: ConnectionId,
        link: &crate::registry::Link,
        msg: Outgoing,
    ) -> Result<(), Error> {
        match link.outbox.try_send(msg) {
            Ok(()) => {
                self.shared.stats.pushes.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                // Declared policy: never block, never grow; cut the slow consumer.
                self.shared
                    .stats
                    .slow_consumers
                    .fetch_add(1, Ordering::Relaxed);
                link.stop.send_replace(Some(DisconnectReason::SlowConsumer));
                Err(Error::SlowConsumer(id))
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
                Err(Error::UnknownConnection(id))
            }
        }
    }

    /// Pushes `data` to every authenticated connection; returns how many it was queued for
    /// (slow consumers are disconnected and not counted).
    pub fn broadcast(&self, data: impl Into<Value>) -> usize {
        let data = data.into();
        self.shared
            .registry
            .links()
            .into_iter()
            .filter(|(id, link)| self.push(*id, link, data.clone()).is_ok())
            .count()
    }

    /// Sends an action to every authenticated connection (e.g. a chat message); returns how
    /// many it was queued for. One copy of the action is shared by every connection's queue.
    pub fn broadcast_action(&self, action: &Action) -> usize {
        let msg = Arc::new(Message::from(action.clone()));
        self.shared
            .registry
            .links()
            .into_iter()
            .filter(|(id, link)| {
                self.deliver(*id, link, Outgoing::Shared(msg.clone()))
                    .is_ok()
            })
            .count()
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
    /// [`Error::UnknownConnection`]; [`Error::Config`] beyond [`MAX_GROUPS`] groups.
    pub fn join_group(&self, id: ConnectionId, group: &str) -> Result<(), Error> {
        if self.shared.registry.link(id).is_none() {
            return Err(Error::UnknownConnection(id));
        }
        let mut groups = self.shared.groups();
        if !groups.contains_key(group) && groups.len() >= MAX_GROUPS {
            return Err(Error::Config("too many groups"));
        }
        groups.entry(group.to_owned()).or_default().insert(id);
        Ok(())
    }

    /// Removes a connection from a group; returns whether it was a member.
    pub fn leave_group(&self, id: ConnectionId, group: &str) -> bool {
        let mut groups = self.shared.groups();
        let Some(members) = groups.get_mut(group) else {
            return false;
        };
        let was = members.remove(&id);
        if members.is_empty() {
            groups.remove(group);
        }
        was
    }

    /// The members of a group.
    pub fn group_members(&self, group: &str) -> Vec<ConnectionId> {
        let mut v: Vec<_> = self
            .shared
            .groups()
            .get(group)
            .map(|m| m.iter().copied().collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Pushes `data` to every member of a group; returns how many it was queued for.
    pub fn broadcast_group(&self, group: &str, data: impl Into<Value>) -> usize {
        let data = data.into();
        let members = self.group_members(group);
        members
            .into_iter()
            .filter(|id| {
                let Some(link) = self.shared.registry.link(*id) else {
                    return false;
                };
                self.push(*id, &link, data.clone()).is_ok()
            })
            .count()
    }

    /// Closes one connection (the peer gets `Close` with code `KICKED`).
    ///
    /// # Errors
    /// [`Error::UnknownConnection`].
    pub fn kick(&self, id: ConnectionId) -> Result<(), Error> {
        let link = self
            .shared
            .registry
            .link(id)
            .ok_or(Error::UnknownConnection(id))?;
        link.stop.send_replace(Some(DisconnectReason::Kicked));
        self.shared.stats.kicks.fetch_add(1, Ordering::Relaxed);
        Ok(())
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

    /// Bans the source `ip` belongs to for `length`; its new connections are refused before
    /// any work. A source is an IPv4 address (`::ffff:192.0.2.7` is `192.0.2.7`) or an IPv6
    /// network of [`BanPolicy::ipv6_prefix`] bits (a /64 by default).
    pub fn ban(&self, ip: IpAddr, length: Duration) {
        let source = self.shared.source(ip);
        self.shared
            .limiter()
            .ban(&source, length, crate::monotonic());
    }

    /// Lifts the ban on the source `ip` belongs to; returns whether there was one (or any
    /// record of the source).
    pub fn unban(&self, ip: IpAddr) -> bool {
        let source = self.shared.source(ip);
        self.shared.limiter().unban(&source)
    }

    /// Sources banned now, each as its address (an IPv4 address, or the first address of an
    /// IPv6 network), with the time left.
    pub fn bans(&self) -> Vec<(IpAddr, Duration)> {
        let now = crate::monotonic();
        self.shared
            .limiter()
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
            requests: s.requests.load(Ordering::Relaxed),
            messages_in: s.messages_in.load(Ordering::Relaxed),
            pushes: s.pushes.load(Ordering::Relaxed),
            slow_consumers: s.slow_consumers.load(Ordering::Relaxed),
            kicks: s.kicks.load(Ordering::Relaxed),
            sessions: self.shared.sessions.len(),
            bytes_in: s.bytes_in_closed.load(Ordering::Relaxed)
                + self.connections().iter().map(|c| c.bytes_in).sum::<u64>(),
            bytes_out: s.bytes_out_closed.load(Ordering::Relaxed)
                + self.connections().iter().map(|c| c.bytes_out).sum::<u64>(),
        }
    }

    /// Graceful shutdown: stop accepting, let in-flight requests finish (up to
    /// [`ServerLimits::shutdown_grace`]), send `Close` (`GOING_AWAY`) to every peer, and wait
    /// for the connections to end. Returns when the server has stopped.
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

    /// Pushes `data` to it. See [`ServerHandle::send_to`].
    ///
    /// # Errors
    /// As [`ServerHandle::send_to`].
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
    /// [`ServerBuilder::connection_queue`]); `None` once the connection has ended and its
    /// queue is empty.
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

async fn accept_loop<L: Accept>(
    shared: Arc<Shared>,
    mut listener: L,
    compat: Option<tokio::task::JoinHandle<()>>,
) {
    let handshakes = Arc::new(Semaphore::new(shared.limits.max_handshakes));
    let mut conns = JoinSet::new();
    let mut shutdown = shared.shutdown_rx();
    let mut purge = tokio::time::interval(Duration::from_secs(5));
    let mut rate = crate::rate::Buckets::new(
        shared.limits.handshake_rate_per_ip,
        shared.limits.max_connections.max(1024),
    );
    loop {
        while conns.try_join_next().is_some() {}
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|down| *down) => break,
            _ = purge.tick() => {
                shared.sessions.purge(crate::monotonic());
                continue;
            }
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of dying or spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let refuse = |reason| {
            shared.stats.refused.fetch_add(1, Ordering::Relaxed);
            shared.emit(EventKind::Refused { peer, reason });
        };
        // Under load (half the handshake slots busy), each address gets a bounded rate of new
        // handshakes, so one source cannot take the rest.
        let busy = shared.limits.max_handshakes - handshakes.available_permits();
        if busy >= (shared.limits.max_handshakes / 2).max(1)
            && !rate.allow(&peer.ip(), crate::monotonic())
        {
            refuse(Refusal::RateLimited);
            continue;
        }
        if conns.len() >= shared.limits.max_connections {
            refuse(Refusal::TooManyConnections);
            continue;
        }
        if let Some(hook) = &shared.hook
            && !hook(Incoming { peer })
        {
            refuse(Refusal::Hook);
            continue;
        }
        if !shared
            .registry
            .admit_ip(peer.ip(), shared.limits.max_connections_per_ip)
        {
            refuse(Refusal::TooManyFromAddress);
            continue;
        }
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            shared.registry.release_ip(peer.ip());
            refuse(Refusal::TooManyHandshakes);
            continue;
        };
        let span = tracing::info_span!("connection", %peer);
        conns.spawn(tracing::Instrument::instrument(
            conn::run(shared.clone(), stream, peer, permit),
            span,
        ));
    }
    drop(listener);
    if *shared.abort.borrow() {
        conns.abort_all();
    } else {
        // Connections drain themselves on the shutdown signal; give them the grace period and
        // a little more to say goodbye, then stop what is left.
        let all_done = async { while conns.join_next().await.is_some() {} };
        if tokio::time::timeout(shared.grace() + Duration::from_secs(2), all_done)
            .await
            .is_err()
        {
            conns.abort_all();
        }
    }
    while conns.join_next().await.is_some() {}
    // The compat listener stops on the same signal; "stopped" means its port is free too.
    if let Some(task) = compat {
        let _ = task.await;
    }
    // Aborted connections never reached their own cleanup.
    shared.registry.clear();
    shared.stopped.send_replace(true);
}
