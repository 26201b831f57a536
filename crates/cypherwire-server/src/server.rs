//! The server's builder and the running [`Server`].

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use cypherwire_session::{AttemptLimiter, BanPolicy, ServerAuth, SessionConfig};
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::{broadcast, watch};

use crate::accept::{Accept, accept_loop};
use crate::cluster::seam::Backplane;
use crate::error::{Error, Incoming};
use crate::events::DEFAULT_EVENT_CAPACITY;
use crate::handle::ServerHandle;
use crate::handler::{ActionHandler, RequestHandler};
use crate::limits::ServerLimits;
use crate::registry::Registry;
use crate::router::Router;
use crate::shared::{AcceptHook, Shared, Stats};
use crate::state::LocalState;

/// Configures a [`Server`]. Start with [`Server::builder`](crate::Server::builder).
#[must_use = "call `bind()` to start the server"]
pub struct ServerBuilder {
    auth: ServerAuth,
    session: SessionConfig,
    limits: ServerLimits,
    bans: BanPolicy,
    exempt: Option<crate::shared::Exempt>,
    router: Router,
    hook: Option<AcceptHook>,
    inbox: Option<usize>,
    connection_queue: Option<usize>,
    resume: crate::ResumePolicy,
    compat: Option<crate::CypherCompat>,
    cluster: Option<Arc<dyn Backplane>>,
    state: crate::app_state::AppState,
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
    /// Shares `value` with every handler: [`Ctx::state`](crate::Ctx::state)`::<S>()` (and
    /// [`ServerHandle::state`]) returns it, one value per type, so several kinds of state can
    /// be set. Wrap what handlers change in a lock or atomics; the value itself is shared, not
    /// cloned.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    ///
    /// use cypherwire_server::{Ctx, HandlerError, Server};
    /// use cypherwire_session::Psk;
    /// use cypherwire_wire::Request;
    ///
    /// #[derive(Default)]
    /// struct Hits(AtomicU64);
    ///
    /// let psk = Psk::from_passphrase("2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U")?;
    /// let builder = Server::builder(psk)
    ///     .state(Hits::default())
    ///     .route("/HITS", "ADD", |_req: Request, ctx: Ctx| async move {
    ///         let hits = ctx.state::<Hits>()?;
    ///         Ok::<_, HandlerError>(hits.0.fetch_add(1, Ordering::Relaxed) + 1)
    ///     });
    /// # drop(builder);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn state<S: Send + Sync + 'static>(mut self, value: S) -> Self {
        self.state.insert(value);
        self
    }

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

    /// Sources whose failed handshakes are never counted nor banned (an operator's own
    /// network, e.g. loopback during development): `exempt` says which addresses. Bans by hand
    /// ([`ServerHandle::ban`](crate::ServerHandle::ban)) do not apply to them either. Default:
    /// none.
    pub fn ban_exempt(
        mut self,
        exempt: impl Fn(std::net::IpAddr) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.exempt = Some(Arc::new(exempt));
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
    /// with no handler wait there, oldest first, for
    /// [`ConnectionHandle::recv`](crate::ConnectionHandle::recv). Takes precedence over the
    /// server-wide [`inbox`](Self::inbox). A full queue stops reading that connection until
    /// there is room.
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
    /// Joins a cluster: this server shares broadcasts, groups, bans, its registry and its
    /// sessions with the other servers on the same backplane (the crate docs' "Cluster" item;
    /// without a backplane, everything stays in this server).
    ///
    /// ```
    /// use cypherwire_server::{LocalHub, Server};
    /// use cypherwire_session::Psk;
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let psk = Psk::from_passphrase("2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U")?;
    /// let hub = LocalHub::new();
    /// let a = Server::builder(psk.clone()).cluster(hub.join()).bind("127.0.0.1:0").await?;
    /// let b = Server::builder(psk).cluster(hub.join()).bind("127.0.0.1:0").await?;
    /// // Reaches the connections of both.
    /// a.handle().broadcast("hello");
    /// let nodes = b.handle().cluster().expect("clustered").nodes().await?;
    /// assert_eq!(nodes.len(), 2);
    /// # Ok(()) }
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(run())?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cluster(mut self, backplane: impl Backplane) -> Self {
        self.cluster = Some(Arc::new(backplane));
        self
    }

    /// Listens on `addr` (anything tokio resolves: `"127.0.0.1:4702"`, `("::", 4702)`, a
    /// `SocketAddr`) and starts serving; returns once listening.
    ///
    /// # Errors
    /// [`Error::Bind`], [`Error::Config`] for invalid limits or ban policy.
    pub async fn bind<A>(self, addr: A) -> Result<Server, Error>
    where
        A: ToSocketAddrs + std::fmt::Debug,
    {
        self.limits.validate()?;
        let shown = format!("{addr:?}");
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind {
                addr: shown.trim_matches('"').to_owned(),
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
        let sessions = crate::outgoing::SessionTable::new(self.resume).ok_or(Error::Config(
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
        let router = Arc::new(self.router);
        let cluster = match self.cluster {
            Some(backplane) => Some(crate::cluster::start(backplane).await?),
            None => None,
        };
        let node = cluster.as_ref().map_or(0, |(link, _)| link.node().get());
        let (link, starter) = cluster.unzip();
        let shared = Arc::new(Shared {
            auth: self.auth,
            session: self.session,
            limits: self.limits,
            registry: Registry::default(),
            bans: self.bans,
            exempt: self.exempt,
            stats: Stats::default(),
            refusals: crate::refusals::Refusals::default(),
            events,
            next_id: AtomicU64::new(0),
            shutdown: watch::channel(false).0,
            abort: watch::channel(false).0,
            stopped: watch::channel(false).0,
            local_addr,
            hook: self.hook,
            inbox,
            inbox_rx: Mutex::new(inbox_rx),
            state: Box::new(LocalState::new(limiter, sessions.with_node(node))),
            connection_queue: self.connection_queue,
            node,
            cluster: link.clone(),
            app_state: self.state,
            routes: router.metrics(),
        });
        if let (Some(link), Some(starter)) = (&link, starter) {
            starter.run(&shared, link);
        }
        let compat_addr = match self.compat {
            Some(cfg) => {
                let l = crate::compat::bind(&cfg).await?;
                let addr = l.local_addr().map_err(Error::LocalAddr)?;
                let task = tokio::spawn(crate::compat::accept_loop(
                    shared.clone(),
                    router.clone(),
                    l,
                    cfg,
                ));
                Some((addr, task))
            }
            None => None,
        };
        let (compat_addr, compat_task) = compat_addr.unzip();
        tokio::spawn(accept_loop(shared.clone(), router, listener, compat_task));
        Ok(Server {
            handle: ServerHandle::from_shared(shared),
            compat_addr,
        })
    }
}
/// A running server. It runs on tasks of its own, so dropping this value does not stop it
/// (as dropping a tokio `JoinHandle` does not stop its task): stop it with
/// [`ServerHandle::shutdown`] from any handle, or hand it a signal with
/// [`with_graceful_shutdown`](Self::with_graceful_shutdown).
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
            exempt: None,
            router: Router::default(),
            hook: None,
            inbox: None,
            connection_queue: None,
            resume: crate::ResumePolicy::default(),
            compat: None,
            cluster: None,
            state: crate::app_state::AppState::default(),
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

    /// Serves until `signal` completes, then shuts down gracefully
    /// ([`ServerHandle::shutdown`]); returns once the server has stopped, also when it was
    /// stopped another way first.
    ///
    /// The signal is any future: `tokio::signal::ctrl_c()`, a channel, a timer.
    ///
    /// ```
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// # let psk = cypherwire_session::Psk::from_passphrase("2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U")?;
    /// let server = cypherwire_server::Server::builder(psk).bind("127.0.0.1:0").await?;
    /// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    /// # stop.send(()).ok();
    /// server
    ///     .with_graceful_shutdown(async {
    ///         let _ = stopped.await; // or: let _ = tokio::signal::ctrl_c().await;
    ///     })
    ///     .await;
    /// # Ok(()) }
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(run())?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn with_graceful_shutdown(self, signal: impl Future<Output = ()>) {
        tokio::select! {
            () = signal => self.handle.shutdown().await,
            () = self.handle.stopped() => {}
        }
    }

    /// The address of the CYPHER_PROTOCOL compat listener, if one was configured.
    pub fn compat_addr(&self) -> Option<SocketAddr> {
        self.compat_addr
    }
}
