//! The client handle, its builder, requests, statuses and pushes.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cypherwire_session::{ClientAuth, SessionConfig};
use cypherwire_wire::{Action, Request, Value, from_value};
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::backoff::Backoff;
use crate::engine::{Answer, Engine};
use crate::error::{DataError, Error};
use crate::shared::{Command, Config, Incoming, Observed, Status};
use crate::streams::{Emitter, IncomingStream, StatusEvents};

/// Default bound on queued plus in-flight requests.
pub const DEFAULT_MAX_PENDING: usize = 1024;
/// Default bound on their approximate bytes: 8 MiB.
pub const DEFAULT_MAX_PENDING_BYTES: usize = 8 * 1024 * 1024;
/// Default time for one connection attempt (TCP connect and handshake): 10 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time [`Client::close`] waits for requests in flight: 5 s.
pub const DEFAULT_CLOSE_DRAIN: Duration = Duration::from_secs(5);
/// Default heartbeat interval: 10 s (three missed pongs take the client offline).
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);

/// Configures a [`Client`]. Start with [`Client::builder`].
#[derive(Debug)]
#[must_use = "call `connect()` to start the client"]
pub struct ClientBuilder {
    config: Config,
    actions: crate::actions::Handlers,
}

impl ClientBuilder {
    /// Session settings (suites, codecs, limits, handshake timeout).
    pub fn session_config(mut self, config: SessionConfig) -> Self {
        self.config.session = config;
        self
    }

    /// Reconnect backoff and give-up policy.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// Time allowed for one connection attempt (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.config.connect_timeout = t;
        self
    }

    /// Bounds on requests waiting for an answer, queued offline or in flight (defaults
    /// [`DEFAULT_MAX_PENDING`], [`DEFAULT_MAX_PENDING_BYTES`]). Beyond them a request fails at
    /// once with [`Error::BufferFull`].
    pub fn max_pending(mut self, count: usize, bytes: usize) -> Self {
        self.config.max_pending = count;
        self.config.max_pending_bytes = bytes;
        self
    }

    /// Heartbeat: a ping every `interval`; `missed` unanswered pings take the connection down
    /// (half-open detection). Defaults: [`DEFAULT_HEARTBEAT_INTERVAL`], 3.
    pub fn heartbeat(mut self, interval: Duration, missed: u32) -> Self {
        self.config.heartbeat_interval = interval;
        self.config.heartbeat_missed = missed;
        self
    }

    /// Whether a rejection — the server says the key or password is wrong, or this address is
    /// banned — is retried like a network fault (default `false`: the client reports it at
    /// once, with [`Status::Offline`] naming it, then [`Status::GaveUp`]; requests fail with
    /// [`Error::AuthenticationFailed`] or [`Error::Banned`]). So a mistyped key costs one
    /// attempt against the server's ban budget, not one per retry.
    ///
    /// A failed authentication after the client was online once is always retried: the key
    /// worked, so the server changed or the handshake was damaged on the way.
    pub fn retry_rejected(mut self, retry: bool) -> Self {
        self.config.retry_rejected = retry;
        self
    }

    /// Whether a kicked client reconnects, to a new session (default `false`: it stops with
    /// [`Status::Kicked`]; requests fail with [`Error::Kicked`]).
    pub fn reconnect_after_kick(mut self, reconnect: bool) -> Self {
        self.config.reconnect_after_kick = reconnect;
        self
    }

    /// Pushes and actions buffered for [`Client::take_incoming`] (default 1,024). When the
    /// buffer is full the client stops reading until the application catches up. Until the
    /// stream is taken (and after it is dropped) pushes and actions are discarded: nobody
    /// listens, and an unread buffer must not stall the connection.
    pub fn incoming_capacity(mut self, n: usize) -> Self {
        self.config.push_capacity = n;
        self
    }

    /// Runs `handler` for each action named `name` the server sends (pnetwork's
    /// `bindAction`), in order of arrival, one at a time, on a task of the client's own. Such
    /// actions do not appear in [`Client::take_incoming`]'s stream; the others do. While
    /// handlers lag 256 actions behind, the client stops reading (backpressure).
    pub fn on_action<F, Fut>(mut self, name: impl Into<String>, handler: F) -> Self
    where
        F: Fn(Action) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.actions.insert(name.into(), handler);
        self
    }

    /// Starts the client: returns at once; its driver connects, and reconnects forever (or
    /// until the give-up policy says so). Must be called within a tokio runtime.
    ///
    /// # Errors
    /// [`Error::Config`] for invalid settings.
    pub fn connect(self, addr: impl Into<String>) -> Result<Client, Error> {
        self.connect_with(crate::connect::Tcp(addr.into()))
    }

    /// Starts the client like [`connect`](Self::connect) and waits until it is online, as
    /// [`Client::wait_online`] does.
    ///
    /// # Errors
    /// [`Error::Config`] for invalid settings; if it will never be online:
    /// [`Error::AuthenticationFailed`], [`Error::Banned`], [`Error::GaveUp`] (with the default
    /// [`Backoff`] the client retries for ever: bound the wait with a timeout, or give the
    /// backoff a limit).
    pub async fn connect_and_wait(self, addr: impl Into<String>) -> Result<Client, Error> {
        let client = self.connect(addr)?;
        client.wait_online().await?;
        Ok(client)
    }

    /// Like [`connect`](Self::connect), over another transport: `connector` opens each
    /// connection (the first and every reconnect) — a Unix socket, an in-memory pipe, a
    /// simulated network, a proxy. Everything else (handshake, resumption, backoff) is the same.
    ///
    /// # Errors
    /// [`Error::Config`] for invalid settings.
    ///
    /// # Example: a client and a server over in-memory pipes
    ///
    /// ```
    /// use std::net::SocketAddr;
    ///
    /// use cypherwire_client::{Client, Connect};
    /// use cypherwire_server::{Accept, Ctx, HandlerError, Server};
    /// use cypherwire_session::Psk;
    /// use cypherwire_wire::{Request, Value};
    /// use tokio::io::DuplexStream;
    /// use tokio::sync::mpsc;
    ///
    /// /// The server's side: pipes handed over by the connector.
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
    /// /// The client's side: each connection is a new pipe.
    /// struct Dial(mpsc::Sender<DuplexStream>);
    ///
    /// impl Connect for Dial {
    ///     type Io = DuplexStream;
    ///     async fn connect(&self) -> std::io::Result<DuplexStream> {
    ///         let (ours, theirs) = tokio::io::duplex(64 * 1024);
    ///         self.0.send(theirs).await.map_err(|_| std::io::ErrorKind::ConnectionRefused)?;
    ///         Ok(ours)
    ///     }
    ///     fn describe(&self) -> String {
    ///         "in-memory pipe".into()
    ///     }
    /// }
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let psk = Psk::from_passphrase("2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U")?;
    /// let (dial, incoming) = mpsc::channel(8);
    /// let server = Server::builder(psk.clone())
    ///     .route("/ECHO", "PUT", |req: Request, _ctx: Ctx| async move {
    ///         Ok::<_, HandlerError>(req.data)
    ///     })
    ///     .serve_on(Pipes(incoming))
    ///     .await?;
    /// let client = Client::builder(psk).connect_with(Dial(dial))?;
    /// let reply = client.request("/ECHO", "PUT").data("hi").send().await?;
    /// assert_eq!(reply.data, Value::from("hi"));
    /// client.close_within(std::time::Duration::from_millis(100)).await;
    /// server.handle().shutdown().await;
    /// # Ok(()) }
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(run())?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn connect_with(self, connector: impl crate::Connect) -> Result<Client, Error> {
        let Self { config: c, actions } = self;
        c.backoff.validate()?;
        if c.connect_timeout.is_zero()
            || c.max_pending == 0
            || c.max_pending_bytes == 0
            || c.heartbeat_interval.is_zero()
            || c.heartbeat_missed == 0
            || c.push_capacity == 0
        {
            return Err(Error::Config(
                "timeouts, bounds and heartbeat must be non-zero",
            ));
        }
        let (tx, rx) = crate::queue::channel(1024);
        let (status_tx, status_rx) = watch::channel(Status::Connecting);
        let (events, _) = broadcast::channel(256);
        let (incoming_tx, incoming_rx) = mpsc::channel(c.push_capacity);
        let incoming_taken = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let observed = Arc::new(Observed::new());
        let engine = Engine::new(Box::pin(crate::driver::run(
            Arc::new(c),
            crate::connect::boxed(connector),
            rx,
            status_tx,
            events.clone(),
            crate::driver::IncomingSink::new(incoming_tx, incoming_taken.clone(), actions.start()),
            observed.clone(),
        )));
        tokio::spawn(crate::engine::background(engine.clone()));
        Ok(Client {
            observed,
            tx,
            engine,
            status: status_rx,
            events,
            next_id: Arc::new(AtomicU64::new(0)),
            incoming: Arc::new(Mutex::new(Some(incoming_rx))),
            incoming_taken,
        })
    }
}

/// A cheap, clonable handle on a reconnecting client. See the [crate docs](crate).
#[derive(Debug, Clone)]
pub struct Client {
    observed: Arc<Observed>,
    tx: crate::queue::Sender<Command>,
    /// The driver, polled by its background task or by callers waiting for answers.
    engine: Arc<Engine>,
    status: watch::Receiver<Status>,
    events: broadcast::Sender<Status>,
    next_id: Arc<AtomicU64>,
    incoming: Arc<Mutex<Option<mpsc::Receiver<Incoming>>>>,
    /// Whether the application took the incoming stream (until then the driver discards).
    incoming_taken: Arc<std::sync::atomic::AtomicBool>,
}

impl Client {
    /// Starts configuring a client with the given credentials.
    pub fn builder(auth: impl Into<ClientAuth>) -> ClientBuilder {
        ClientBuilder {
            config: Config {
                auth: auth.into(),
                session: SessionConfig::default(),
                backoff: Backoff::default(),
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                max_pending: DEFAULT_MAX_PENDING,
                max_pending_bytes: DEFAULT_MAX_PENDING_BYTES,
                heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
                heartbeat_missed: 3,
                push_capacity: 1024,
                retry_rejected: false,
                reconnect_after_kick: false,
            },
            actions: crate::actions::Handlers::default(),
        }
    }

    /// Starts a request to (`path`, `operation`).
    pub fn request(&self, path: impl Into<String>, operation: impl Into<String>) -> RequestBuilder {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        RequestBuilder {
            tx: self.tx.clone(),
            engine: self.engine.clone(),
            request: Request::new(id, path, operation),
            unconverted: None,
        }
    }

    /// Sends a named action (fire and forget); queued while offline (bounded like requests).
    ///
    /// # Errors
    /// [`Error::BufferFull`] when the offline queue is full, [`Error::Closed`] after
    /// [`close`](Self::close).
    pub async fn emit(&self, name: impl Into<String>, data: impl Into<Value>) -> Result<(), Error> {
        let action = Action::new(name, data, crate::unix_millis());
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Emit { action, reply })
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// The round-trip time of the last answered heartbeat, if one was answered yet.
    pub fn rtt(&self) -> Option<Duration> {
        match self.observed.rtt.load(Ordering::Relaxed) {
            u64::MAX => None,
            micros => Some(Duration::from_micros(micros)),
        }
    }

    /// The current status, watchable.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Every status change from now on, in order, as a new subscriber on every call (bounded:
    /// a subscriber more than 256 changes behind misses the oldest).
    pub fn status_events(&self) -> StatusEvents {
        StatusEvents::new(self.events.subscribe())
    }

    /// A [`Sink`](futures_sink::Sink) of `(name, data)` actions, each sent like
    /// [`emit`](Self::emit): for forwarding a stream of items with `SinkExt::send_all` or
    /// `StreamExt::forward`.
    pub fn emitter(&self) -> Emitter {
        Emitter::new(self.tx.clone())
    }

    /// Calls `f` on every status change from now on, in order, each one once (CYPHER_PROTOCOL's
    /// online/offline signal processors): an outage is one [`Status::Offline`], then
    /// [`Status::Reconnecting`] per attempt, then [`Status::Online`]. Runs on a task of its own
    /// until the client stops; a callback more than 256 changes behind misses the oldest.
    pub fn on_status(&self, f: impl Fn(&Status) + Send + 'static) {
        let mut rx = self.events.subscribe();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(s) => f(&s),
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// Waits until the client is online (or has stopped for good).
    ///
    /// # Errors
    /// If it will never be online: [`Error::AuthenticationFailed`] or [`Error::Banned`] (the
    /// server rejected it), [`Error::Kicked`], [`Error::GaveUp`], or [`Error::Closed`].
    pub async fn wait_online(&self) -> Result<(), Error> {
        let mut rx = self.status.clone();
        let s = rx
            .wait_for(|s| s.is_online() || s.is_final())
            .await
            .map_err(|_| Error::Closed)?
            .clone();
        if s.is_online() {
            Ok(())
        } else {
            Err(self.observed.stopped().unwrap_or(Error::Closed))
        }
    }

    /// Takes the stream of pushes and actions (once). Those arriving before it is taken, or
    /// after it is dropped, are discarded.
    pub fn take_incoming(&self) -> Option<IncomingStream> {
        let rx = self
            .incoming
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()?;
        self.incoming_taken.store(true, Ordering::Release);
        Some(IncomingStream::new(rx))
    }

    /// Closes the client: stops taking requests, waits up to [`DEFAULT_CLOSE_DRAIN`] for those
    /// in flight, sends `Close`, and ends the driver. Requests still unanswered then fail with
    /// [`Error::Closed`]. [`close_within`](Self::close_within) chooses the wait. Dropping every
    /// handle of a client closes it too, without waiting for anything.
    pub async fn close(&self) {
        self.close_within(DEFAULT_CLOSE_DRAIN).await;
    }

    /// Closes the client like [`close`](Self::close), waiting up to `drain` for the requests
    /// in flight (`Duration::ZERO`: not at all).
    pub async fn close_within(&self, drain: Duration) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Command::Close { drain, done }).await.is_ok() {
            let _ = wait.await;
        }
    }
}

/// A request being built. Finish with [`send`](Self::send).
#[derive(Debug)]
#[must_use = "a request does nothing until sent"]
pub struct RequestBuilder {
    /// The driver's command queue and the driver itself (all a request needs of its client).
    tx: crate::queue::Sender<Command>,
    engine: Arc<Engine>,
    request: Request,
    /// Data that did not convert ([`data_serde`](Self::data_serde)): `send` fails with it.
    unconverted: Option<DataError>,
}

impl RequestBuilder {
    /// Sets the data.
    pub fn data(mut self, data: impl Into<Value>) -> Self {
        self.request.data = data.into();
        self
    }

    /// Sets the data from any `serde` type, converted with
    /// [`to_value`](cypherwire_wire::to_value). If it does not convert, [`send`](Self::send)
    /// fails with [`Error::Data`] and nothing is sent.
    pub fn data_serde<T: serde::Serialize + ?Sized>(mut self, data: &T) -> Self {
        match cypherwire_wire::to_value(data) {
            Ok(v) => self.request.data = v,
            Err(e) => self.unconverted = Some(DataError::new(e)),
        }
        self
    }

    /// Sets the metadata.
    pub fn metadata(mut self, metadata: impl Into<Value>) -> Self {
        self.request.metadata = metadata.into();
        self
    }

    /// Sets a deadline: the request fails with [`Error::DeadlineExceeded`] if no answer
    /// arrived by then, and the server does not start it after that time.
    pub fn deadline(mut self, d: Duration) -> Self {
        self.request.deadline = Some(d);
        self
    }

    /// The request's id (unique within the client).
    pub fn id(&self) -> u64 {
        self.request.id
    }

    /// Sends the request and waits for its answer. The request is queued at once when other
    /// requests of this client are waiting for answers (whichever of them is at the connection
    /// writes it, with the rest of the burst), otherwise when the returned future is first
    /// polled. Dropping the future cancels the request (the server is told, and the answer is
    /// discarded).
    ///
    /// # Errors
    /// [`Error::Status`] for an error answer, [`Error::BufferFull`], [`Error::DeadlineExceeded`],
    /// [`Error::Closed`], [`Error::GaveUp`].
    pub fn send(self) -> impl Future<Output = Result<Reply, Error>> + Send + 'static {
        let Self {
            tx,
            engine,
            request,
            unconverted,
        } = self;
        let id = request.id;
        let (reply, rx) = oneshot::channel();
        let mut answer = Answer::new(engine, rx);
        let command = Command::Request { request, reply };
        // Queued now, a request goes out with the burst being written instead of after every
        // answer its caller's executor had already queued (futures start at their first poll,
        // behind those). A lone caller queues at its first poll instead, after it registered
        // as waiting, so that the wake its request causes comes back to it.
        let queued = if unconverted.is_none() && answer.others_waiting() {
            try_queue(&tx, command)
        } else {
            Queued::Later(command)
        };
        let guard = CancelOnDrop {
            id,
            armed: matches!(queued, Queued::Now),
            tx,
        };
        async move {
            if let Some(e) = unconverted {
                return Err(Error::Data(e));
            }
            let mut guard = guard;
            match queued {
                Queued::Now => {}
                Queued::Closed => return Err(Error::Closed),
                Queued::Later(c) => {
                    answer.enlist().await;
                    match answer.queue_and_drive(|| try_queue(&guard.tx, c)) {
                        Queued::Now => {}
                        Queued::Closed => return Err(Error::Closed),
                        Queued::Later(c) => {
                            // Rare (1,024 commands queued): boxed, so that every request's
                            // future does not carry room for this one.
                            Box::pin(guard.tx.send(c))
                                .await
                                .map_err(|_| Error::Closed)?;
                        }
                    }
                    guard.armed = true;
                }
            }
            // Waiting, this caller may be the one that polls the driver (crate::engine).
            let out = answer.await.map_err(|_| Error::Closed)?;
            guard.armed = false;
            let resp = out?;
            if resp.status.code.is_ok() {
                Ok(Reply {
                    id: resp.id,
                    data: resp.data,
                    metadata: resp.metadata,
                })
            } else {
                Err(Error::Status {
                    code: resp.status.code,
                    message: resp.status.message,
                })
            }
        }
    }
}

/// Where a request stands after one attempt to queue it without waiting.
enum Queued {
    /// In the driver's command queue.
    Now,
    /// The queue is full (or the caller chose to queue later): still to be queued.
    Later(Command),
    /// The driver is gone.
    Closed,
}

fn try_queue(tx: &crate::queue::Sender<Command>, command: Command) -> Queued {
    match tx.try_send(command) {
        Ok(()) => Queued::Now,
        Err(crate::queue::TrySendError::Full(c)) => Queued::Later(c),
        Err(crate::queue::TrySendError::Closed(_)) => Queued::Closed,
    }
}

/// Tells the driver to cancel a request whose future was dropped before its answer.
struct CancelOnDrop {
    id: u64,
    tx: crate::queue::Sender<Command>,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            // Best effort: if the command queue is full, the answer is discarded when it comes.
            let _ = self.tx.try_send(Command::Cancel(self.id));
        }
    }
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Reply {
    /// The request's id.
    pub id: u64,
    /// The answer's data.
    pub data: Value,
    /// The answer's metadata.
    pub metadata: Value,
}

impl Reply {
    /// The data converted to `T`.
    ///
    /// # Errors
    /// [`Error::Data`] if it does not have `T`'s shape.
    pub fn data<T: DeserializeOwned>(self) -> Result<T, Error> {
        from_value(self.data).map_err(|e| Error::Data(DataError::new(e)))
    }
}
