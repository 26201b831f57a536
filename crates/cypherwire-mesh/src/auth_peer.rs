//! The authenticating peer: admits members by password, keeps the membership, signs and
//! distributes the peer list, runs heartbeats, bans; and is itself a full member.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use cypherwire_server::{ConnectionId, Ctx, EventKind, HandlerError, Reply, Server, ServerHandle};
use cypherwire_session::{BanPolicy, PasswordVerifier, PublicKey, ServerAuth};
use cypherwire_wire::{Request, StatusCode, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::banfile::{self, BanEntry, BanTarget};
use crate::config::MeshConfig;
use crate::core::{JoinRefused, Membership};
use crate::error::Error;
use crate::events::Event;
use crate::node::{Member, Node, lock, monotonic, random_u64};
use crate::peer_list::{LeaveReason, ListSigner, PeerEntry, PeerId, SignedPeerList};
use crate::protocol::{OP_BEAT, OP_JOIN, OP_LEAVE, PATH, join_context};

#[expect(
    clippy::disallowed_methods,
    reason = "bans are persisted in wall-clock time so they survive restarts"
)]
fn wall_now() -> SystemTime {
    SystemTime::now()
}

/// The value a signed list travels as.
pub(crate) fn list_value(list: &SignedPeerList) -> Value {
    Value::map([
        ("body", Value::bytes(list.body.clone())),
        ("sig", Value::bytes(list.signature.to_vec())),
    ])
}

/// Configures an [`AuthPeer`]. Start with [`AuthPeer::builder`].
#[derive(Debug)]
#[must_use = "call `start()`"]
pub struct AuthPeerBuilder {
    verifier: PasswordVerifier,
    listen: String,
    config: MeshConfig,
    bans: BanPolicy,
    exempt: Option<crate::config::Exempt>,
    ban_file: Option<PathBuf>,
    signer: Option<ListSigner>,
}

impl AuthPeerBuilder {
    /// Where members connect to be admitted (default `0.0.0.0:4702`, pyile's port).
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.listen = addr.into();
        self
    }

    /// Member settings (heartbeat, limits, this node's direct listener and identity).
    pub fn config(mut self, config: MeshConfig) -> Self {
        self.config = config;
        self
    }

    /// Failed password attempts allowed per address, and ban lengths (escalating).
    pub fn ban_policy(mut self, policy: BanPolicy) -> Self {
        self.bans = policy;
        self
    }

    /// Addresses whose failed password attempts are never counted nor banned (e.g. loopback
    /// while developing); see the server's
    /// [`ban_exempt`](cypherwire_server::ServerBuilder::ban_exempt). Default: none.
    pub fn ban_exempt(mut self, exempt: impl Fn(IpAddr) -> bool + Send + Sync + 'static) -> Self {
        self.exempt = Some(crate::config::Exempt(Arc::new(exempt)));
        self
    }

    /// Keeps bans in this file: loaded at start, rewritten on every change.
    pub fn ban_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ban_file = Some(path.into());
        self
    }

    /// The list-signing key (default: a fresh one per start; members learn it when they join).
    pub fn signer(mut self, signer: ListSigner) -> Self {
        self.signer = Some(signer);
        self
    }

    /// Binds both listeners, loads the ban file, and starts admitting members.
    ///
    /// # Errors
    /// [`Error::Config`], [`Error::Listen`], [`Error::BanFile`].
    pub async fn start(self) -> Result<AuthPeer, Error> {
        let saved = match &self.ban_file {
            Some(path) => banfile::load(path)?,
            None => Vec::new(),
        };
        let signer = match self.signer {
            Some(s) => s,
            None => ListSigner::generate()?,
        };
        let (node, events_rx) = Node::start(self.config).await?;
        let now = monotonic();
        let membership = Membership::new(
            random_u64()?,
            node.config.heartbeat,
            node.config.list_limits.max_peers,
            node.me.clone(),
            now,
        );
        let slot: Arc<Mutex<std::sync::Weak<AuthInner>>> = Arc::default();
        let route = |op: &'static str| {
            let slot = slot.clone();
            move |req: Request, ctx: Ctx| {
                let inner = lock(&slot).upgrade();
                async move {
                    let inner = inner.ok_or_else(|| {
                        HandlerError::new(StatusCode::UNAVAILABLE, "shutting down")
                    })?;
                    match op {
                        OP_JOIN => inner.on_join(&req, &ctx),
                        OP_BEAT => inner.on_beat(&req, &ctx).map(Reply::from),
                        _ => inner.on_leave(&req, &ctx).map(Reply::from),
                    }
                }
            }
        };
        let mut server = Server::builder(ServerAuth::Password(self.verifier))
            .session_config(node.config.session.clone())
            .ban_policy(self.bans);
        if let Some(crate::config::Exempt(f)) = self.exempt {
            server = server.ban_exempt(move |ip| f(ip));
        }
        let server = server
            .route(PATH, OP_JOIN, route(OP_JOIN))
            .route(PATH, OP_BEAT, route(OP_BEAT))
            .route(PATH, OP_LEAVE, route(OP_LEAVE))
            .bind(&self.listen)
            .await;
        let server = match server {
            Ok(s) => s.handle(),
            Err(e) => {
                node.shutdown(false).await;
                return Err(Error::Listen(e.to_string()));
            }
        };
        let wall = wall_now();
        let mut key_bans = HashMap::new();
        for b in saved {
            let Ok(left) = b.until.duration_since(wall) else {
                continue;
            };
            match b.target {
                BanTarget::Addr(ip) => {
                    server.ban(ip, left);
                }
                BanTarget::Peer(id) => {
                    key_bans.insert(id, b.until);
                }
            }
        }
        let (stop, _) = watch::channel(false);
        let inner = Arc::new(AuthInner {
            node,
            server,
            signer,
            ban_file: self.ban_file,
            nonce_key: random_key()?,
            persist_wanted: tokio::sync::Notify::new(),
            state: Mutex::new(AuthState {
                membership,
                conns: HashMap::new(),
                key_bans,
                latest: None,
            }),
            stop,
            tasks: Mutex::new(Vec::new()),
        });
        *lock(&slot) = Arc::downgrade(&inner);
        inner.distribute(true)?;
        // The file as loaded (trimmed to its bound, expired bans gone), written now.
        inner.write_bans();
        inner.node.emit(Event::Joined {
            id: inner.node.me.id,
            members: 1,
        });
        // Subscribed before the tasks start, so a leave right after the start is not missed.
        let expiry = tokio::spawn(expiry_loop(inner.clone(), inner.stop.subscribe()));
        let watcher = tokio::spawn(ban_watch(inner.clone(), inner.stop.subscribe()));
        let writer = tokio::spawn(ban_writer(inner.clone(), inner.stop.subscribe()));
        lock(&inner.tasks).extend([expiry, watcher, writer]);
        let member = Member::new(inner.node.clone(), events_rx);
        Ok(AuthPeer { inner, member })
    }
}

struct AuthState {
    membership: Membership,
    /// The auth-link connection each member last spoke on.
    conns: HashMap<PeerId, ConnectionId>,
    key_bans: HashMap<PeerId, SystemTime>,
    latest: Option<SignedPeerList>,
}

struct AuthInner {
    node: Arc<Node>,
    server: ServerHandle,
    signer: ListSigner,
    ban_file: Option<PathBuf>,
    /// Keys the per-connection nonces of key-possession proofs.
    nonce_key: [u8; 32],
    /// Wakes [`ban_writer`].
    persist_wanted: tokio::sync::Notify,
    state: Mutex<AuthState>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl AuthInner {
    /// Publishes the membership if it changed: signs it, pushes it to every connected
    /// member, and applies it to our own view.
    fn distribute(&self, first: bool) -> Result<(), Error> {
        let (list, signed) = {
            let mut st = lock(&self.state);
            if !st.membership.is_dirty() && !first {
                return Ok(());
            }
            let list = st.membership.publish();
            let signed = self.signer.sign(&list)?;
            st.latest = Some(signed.clone());
            (list, signed)
        };
        self.server
            .broadcast(Value::map([("list", list_value(&signed))]));
        self.node.apply(list, first)
    }

    fn remove(&self, id: &PeerId, reason: LeaveReason) -> bool {
        let (removed, conn) = {
            let mut st = lock(&self.state);
            (st.membership.remove(id, reason), st.conns.remove(id))
        };
        if let Some(conn) = conn
            && reason != LeaveReason::Left
        {
            // Its session ends: it must authenticate again (pyile's rule). The member is told
            // which: a kicked or banned member does not come back by itself.
            let _ = if reason == LeaveReason::Banned {
                self.server.close_banned(conn)
            } else {
                self.server.kick(conn)
            };
        }
        if removed {
            let _ = self.distribute(false);
        }
        removed
    }

    fn on_join(&self, req: &Request, ctx: &Ctx) -> Result<Reply, HandlerError> {
        let bad = |m: &'static str| HandlerError::bad_request(m);
        let key = req
            .data
            .get("key")
            .and_then(Value::as_bytes)
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .map(PublicKey::from_bytes)
            .ok_or_else(|| bad("key: 32 bytes expected"))?;
        let mut addr: SocketAddr = req
            .data
            .get("addr")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("addr: a socket address expected"))?;
        // The password admits to the mesh; the key must be proven too, or a member could
        // take another's place in the list.
        let nonce = self.nonce(ctx.connection);
        let Some(proof) = req.data.get("proof").and_then(Value::as_bytes) else {
            return Ok(Reply::new(Value::map([
                ("status", Value::from("prove")),
                (
                    "key",
                    Value::bytes(self.node.identity.public().as_bytes().to_vec()),
                ),
                ("nonce", Value::bytes(nonce.to_vec())),
            ])));
        };
        let context = join_context(&nonce, &key, &addr.to_string());
        if !self.node.identity.verify_possession(&key, &context, proof) {
            return Err(HandlerError::new(
                StatusCode::UNAUTHORIZED,
                "the key's possession was not proven",
            ));
        }
        if addr.ip().is_unspecified() {
            // A member listening on every interface is reached where it came from.
            addr.set_ip(ctx.peer.ip());
        }
        let entry = PeerEntry::new(key, addr);
        let id = entry.id;
        {
            let mut st = lock(&self.state);
            if let Some(until) = st.key_bans.get(&id).copied() {
                if let Ok(left) = until.duration_since(wall_now()) {
                    // The peer reads the refusal, then the connection closes.
                    return Ok(Reply::new(Value::map([
                        ("status", Value::from("banned")),
                        (
                            "remaining_ms",
                            Value::from(u64::try_from(left.as_millis()).unwrap_or(u64::MAX)),
                        ),
                    ]))
                    .then_close());
                }
                st.key_bans.remove(&id);
            }
            match st.membership.join(entry, monotonic()) {
                Ok(_) => {}
                Err(JoinRefused::Full) => {
                    return Err(HandlerError::new(
                        StatusCode::UNAVAILABLE,
                        "the mesh is full",
                    ));
                }
            }
            st.conns.insert(id, ctx.connection);
        }
        self.distribute(false)
            .map_err(|e| HandlerError::new(StatusCode::INTERNAL, e.to_string()))?;
        let st = lock(&self.state);
        let latest = st
            .latest
            .as_ref()
            .ok_or_else(|| HandlerError::new(StatusCode::INTERNAL, "no list"))?;
        let hb = self.node.config.heartbeat;
        Ok(Reply::new(Value::map([
            ("status", Value::from("ok")),
            (
                "signer",
                Value::bytes(self.signer.verifier().to_bytes().to_vec()),
            ),
            ("list", list_value(latest)),
            (
                "heartbeat_ms",
                Value::from(u64::try_from(hb.interval.as_millis()).unwrap_or(u64::MAX)),
            ),
        ])))
    }

    fn member_id(req: &Request) -> Result<PeerId, HandlerError> {
        req.data
            .get("id")
            .and_then(Value::as_str)
            .and_then(|s| PeerId::parse(s).ok())
            .ok_or_else(|| HandlerError::bad_request("id: a peer id expected"))
    }

    /// The nonce a member's key-possession proof on `connection` covers (connection ids are
    /// never reused, so a proof made for one connection is worthless on another).
    fn nonce(&self, connection: ConnectionId) -> [u8; 16] {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(b"cypherwire/v1 mesh join nonce");
        h.update(self.nonce_key);
        h.update(connection.0.to_be_bytes());
        let d = h.finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&d[..16]);
        out
    }

    /// Whether `id` joined (proving its key) on `connection`: heartbeats and leaves speak for
    /// a member only from there. A member whose link reconnected joins again first.
    fn speaks_for(st: &AuthState, id: &PeerId, connection: ConnectionId) -> bool {
        st.conns.get(id) == Some(&connection)
    }

    fn on_beat(&self, req: &Request, ctx: &Ctx) -> Result<Value, HandlerError> {
        let id = Self::member_id(req)?;
        let held = req.data.get("version").and_then(Value::as_u64).unwrap_or(0);
        let mut st = lock(&self.state);
        if !Self::speaks_for(&st, &id, ctx.connection) {
            return Ok(Value::map([("known", Value::from(false))]));
        }
        let known = st.membership.heartbeat(&id, monotonic());
        if !known {
            return Ok(Value::map([("known", Value::from(false))]));
        }
        // Anti-entropy: a member behind on the list gets the latest with the answer.
        let behind = st.membership.snapshot().version > held;
        let mut answer = vec![("known", Value::from(true))];
        if behind && let Some(latest) = &st.latest {
            answer.push(("list", list_value(latest)));
        }
        Ok(Value::map(answer))
    }

    fn on_leave(&self, req: &Request, ctx: &Ctx) -> Result<Value, HandlerError> {
        let id = Self::member_id(req)?;
        if !Self::speaks_for(&lock(&self.state), &id, ctx.connection) {
            return Err(HandlerError::new(
                StatusCode::UNAUTHORIZED,
                "a member leaves only for itself",
            ));
        }
        self.remove(&id, LeaveReason::Left);
        Ok(Value::Nil)
    }

    fn bans(&self) -> Vec<BanEntry> {
        let wall = wall_now();
        let mut out: Vec<BanEntry> = self
            .server
            .bans()
            .into_iter()
            .map(|(ip, left)| BanEntry {
                target: BanTarget::Addr(ip),
                until: wall + left,
            })
            .collect();
        out.extend(
            lock(&self.state)
                .key_bans
                .iter()
                .filter(|(_, until)| **until > wall)
                .map(|(id, until)| BanEntry {
                    target: BanTarget::Peer(*id),
                    until: *until,
                }),
        );
        out
    }

    /// Asks for the ban file to be written (by [`ban_writer`], at most once per
    /// [`BAN_WRITE_INTERVAL`]).
    fn persist(&self) {
        if self.ban_file.is_some() {
            self.persist_wanted.notify_one();
        }
    }

    fn write_bans(&self) {
        if let Some(path) = &self.ban_file
            && let Err(e) = banfile::store(path, &self.bans())
        {
            tracing::warn!(error = %e, "could not write the ban file");
        }
    }
}

fn random_key() -> Result<[u8; 32], Error> {
    let mut k = [0u8; 32];
    getrandom::fill(&mut k).map_err(|_| Error::Config("random generator failed"))?;
    Ok(k)
}

/// Removes members whose heartbeats stopped, and forces them to authenticate again.
async fn expiry_loop(inner: Arc<AuthInner>, mut stop: watch::Receiver<bool>) {
    let interval = inner.node.config.heartbeat.interval;
    loop {
        let next = lock(&inner.state).membership.next_expiry();
        let wake = next
            .map(|t| tokio::time::Instant::from_std(t) + Duration::from_millis(1))
            .unwrap_or_else(|| tokio::time::Instant::now() + interval);
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep_until(wake) => {}
        }
        let gone = lock(&inner.state).membership.expire(monotonic());
        for id in gone {
            tracing::info!(peer = %id, "member missed its heartbeats");
            let conn = lock(&inner.state).conns.remove(&id);
            if let Some(conn) = conn {
                let _ = inner.server.kick(conn);
            }
        }
        let _ = inner.distribute(false);
    }
}

/// Shortest time between two writes of the ban file: a flood of bans costs one write per
/// interval, not one per ban.
const BAN_WRITE_INTERVAL: Duration = Duration::from_secs(1);

/// Writes the ban file when asked, at most once per [`BAN_WRITE_INTERVAL`], and once more on
/// the way out if a ban came after the last write. (After a crash, the bans of the last
/// interval may be missing from the file.)
async fn ban_writer(inner: Arc<AuthInner>, mut stop: watch::Receiver<bool>) {
    async fn write(inner: &Arc<AuthInner>) {
        let inner = inner.clone();
        let _ = tokio::task::spawn_blocking(move || inner.write_bans()).await;
    }
    // On the way out, a request not written yet is written (a stored permit completes the
    // first poll).
    async fn last(inner: &Arc<AuthInner>) {
        let pending = inner.persist_wanted.notified();
        if tokio::time::timeout(Duration::ZERO, pending).await.is_ok() {
            write(inner).await;
        }
    }
    loop {
        tokio::select! {
            _ = stop.changed() => return last(&inner).await,
            () = inner.persist_wanted.notified() => {}
        }
        write(&inner).await;
        tokio::select! {
            _ = stop.changed() => return last(&inner).await,
            () = tokio::time::sleep(BAN_WRITE_INTERVAL) => {}
        }
    }
}

/// Reports and persists the bans the listener imposes after wrong passwords.
async fn ban_watch(inner: Arc<AuthInner>, mut stop: watch::Receiver<bool>) {
    let mut events = inner.server.events();
    loop {
        let event = tokio::select! {
            _ = stop.changed() => return,
            e = events.next() => e,
        };
        let Some(event) = event else { return };
        if let EventKind::Banned { peer } = event.kind {
            tracing::warn!(%peer, "address banned after failed password attempts");
            inner.persist();
            inner.node.emit(Event::Banned {
                addr: Some(peer.ip()),
                peer: None,
            });
        }
    }
}

/// The authenticating peer (pyile's `AuthPeer`), itself a full member. See the
/// [crate docs](crate).
#[derive(Debug)]
pub struct AuthPeer {
    inner: Arc<AuthInner>,
    member: Member,
}

impl std::ops::Deref for AuthPeer {
    type Target = Member;

    /// The authenticating peer is a full member: `id`, `peers`, `broadcast`, `send`, events.
    fn deref(&self) -> &Member {
        &self.member
    }
}

impl std::fmt::Debug for AuthInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthPeer")
            .field("node", &self.node)
            .field("listen", &self.server.local_addr())
            .finish_non_exhaustive()
    }
}

impl AuthPeer {
    /// Starts configuring an authenticating peer that admits members knowing the password
    /// behind `verifier` (see `cypherwire hash-password`).
    pub fn builder(verifier: PasswordVerifier) -> AuthPeerBuilder {
        AuthPeerBuilder {
            verifier,
            listen: format!("0.0.0.0:{}", crate::DEFAULT_AUTH_PORT),
            config: MeshConfig::default(),
            bans: BanPolicy::default(),
            exempt: None,
            ban_file: None,
            signer: None,
        }
    }

    /// Where members connect to be admitted.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.server.local_addr()
    }

    /// Removes a member and ends its session: it must authenticate again to come back.
    ///
    /// # Errors
    /// [`Error::PeerUnknown`] if it is not a member (or is us).
    pub fn kick(&self, id: PeerId) -> Result<(), Error> {
        if self.inner.remove(&id, LeaveReason::Kicked) {
            Ok(())
        } else {
            Err(Error::PeerUnknown(id))
        }
    }

    /// Bans a member's key for `length` (its joins are refused with [`Error::Banned`]) and
    /// removes it. Persisted if a ban file is set.
    ///
    /// # Errors
    /// [`Error::Config`] for our own id.
    pub fn ban_peer(&self, id: PeerId, length: Duration) -> Result<(), Error> {
        if id == self.id() {
            return Err(Error::Config("the authenticating peer cannot ban itself"));
        }
        lock(&self.inner.state)
            .key_bans
            .insert(id, wall_now() + length);
        self.inner.remove(&id, LeaveReason::Banned);
        self.inner.persist();
        self.inner.node.emit(Event::Banned {
            addr: None,
            peer: Some(id),
        });
        Ok(())
    }

    /// Lifts a ban on a member's key.
    pub fn unban_peer(&self, id: PeerId) -> bool {
        let lifted = lock(&self.inner.state).key_bans.remove(&id).is_some();
        self.inner.persist();
        lifted
    }

    /// Bans an address for `length`: its connections are refused before any handshake work,
    /// and its members are removed. Persisted if a ban file is set.
    pub fn ban_addr(&self, ip: IpAddr, length: Duration) {
        self.inner.server.ban(ip, length);
        let victims: Vec<PeerId> = self
            .inner
            .server
            .connections()
            .into_iter()
            .filter(|c| c.peer.ip() == ip)
            .filter_map(|c| {
                lock(&self.inner.state)
                    .conns
                    .iter()
                    .find(|(_, conn)| **conn == c.id)
                    .map(|(id, _)| *id)
            })
            .collect();
        for id in victims {
            self.inner.remove(&id, LeaveReason::Banned);
        }
        self.inner.persist();
        self.inner.node.emit(Event::Banned {
            addr: Some(ip),
            peer: None,
        });
    }

    /// Lifts a ban on an address.
    pub fn unban_addr(&self, ip: IpAddr) -> bool {
        let lifted = self.inner.server.unban(ip);
        self.inner.persist();
        lifted
    }

    /// Bans in force (addresses and member keys), with their ends.
    pub fn bans(&self) -> Vec<BanEntry> {
        self.inner.bans()
    }

    /// The admission listener's counters (handshakes done and failed, connections refused).
    pub fn listener_stats(&self) -> cypherwire_server::StatsSnapshot {
        self.inner.server.stats()
    }

    /// Leaves: tells every member the authenticating peer is going, closes every channel and
    /// listener, and joins all tasks.
    pub async fn leave(self) {
        self.inner
            .server
            .broadcast(Value::map([("closing", Value::from(true))]));
        self.inner.stop.send_replace(true);
        let tasks: Vec<JoinHandle<()>> = lock(&self.inner.tasks).drain(..).collect();
        for t in tasks {
            let _ = t.await;
        }
        self.inner.server.shutdown().await;
        self.inner.node.shutdown(true).await;
    }

    /// Stops at once without telling anyone (a crash, for tests and emergencies): members
    /// notice through their heartbeats.
    pub async fn abort(self) {
        self.inner.stop.send_replace(true);
        let tasks: Vec<JoinHandle<()>> = lock(&self.inner.tasks).drain(..).collect();
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
        self.inner.server.shutdown_now().await;
        self.inner.node.shutdown(false).await;
    }
}
