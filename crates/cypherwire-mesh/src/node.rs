//! What every member runs, the authenticating peer included: the direct listener (identity
//! mode, admitting only keys in the current list), the direct channels to other members, the
//! list held, duplicate suppression and the event stream.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use cypherwire_client::{Client, Error as ClientError};
use cypherwire_server::{Ctx, HandlerError, Server, ServerHandle};
use cypherwire_session::{
    BanPolicy, ClientAuth, IdentityKey, KeyCheck, PeerTrust, PublicKey, ServerAuth,
};
use cypherwire_wire::{Message, Request, StatusCode, Value};
use tokio::sync::mpsc;

use crate::config::MeshConfig;
use crate::core::{Dedup, MemberView};
use crate::error::Error;
use crate::events::{Event, Events};
use crate::peer_list::{LeaveReason, PeerEntry, PeerId, PeerList};
use crate::protocol::{OP_SEND, PATH};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a panic elsewhere mid-update; the data is still consistent for
    // our purposes (every update is a single insert/remove).
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The drivers' clock: tokio's, so tests can run in virtual time.
pub(crate) fn monotonic() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

pub(crate) fn random_u64() -> Result<u64, Error> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|_| Error::Config("random generator failed"))?;
    Ok(u64::from_le_bytes(b))
}

/// What every member can do, the authenticating peer included: [`AuthPeer`](crate::AuthPeer)
/// and [`JoinPeer`](crate::JoinPeer) dereference to it.
#[derive(Debug)]
pub struct Member {
    pub(crate) node: Arc<Node>,
    events: Mutex<Option<Events>>,
}

impl Member {
    pub(crate) fn new(node: Arc<Node>, events: mpsc::Receiver<Event>) -> Self {
        Self {
            node,
            events: Mutex::new(Some(Events { rx: events })),
        }
    }

    /// Our peer id.
    pub fn id(&self) -> PeerId {
        self.node.me.id
    }

    /// Our direct listener (as listed for other members).
    pub fn direct_addr(&self) -> SocketAddr {
        self.node.me.addr
    }

    /// The event stream (once).
    pub fn take_events(&self) -> Option<Events> {
        lock(&self.events).take()
    }

    /// The members in the list we hold, ourselves included.
    pub fn peers(&self) -> Vec<PeerEntry> {
        self.node.list().map(|l| l.entries).unwrap_or_default()
    }

    /// Sends `data` to every other member at once and waits for each acknowledgement; see
    /// [`Broadcast`].
    ///
    /// # Errors
    /// [`Error::Left`] after leaving; [`Error::MessageTooLarge`] for data over the message
    /// limit (sent to no one).
    pub async fn broadcast(&self, data: impl Into<Value>) -> Result<Broadcast, Error> {
        self.node.broadcast(data.into()).await
    }

    /// Sends `data` to one member and waits for its acknowledgement.
    ///
    /// # Errors
    /// [`Error::PeerUnknown`], [`Error::SendFailed`], [`Error::QueueFull`], [`Error::Left`],
    /// [`Error::MessageTooLarge`] (nothing sent).
    pub async fn send(&self, to: PeerId, data: impl Into<Value>) -> Result<(), Error> {
        self.node.send(to, data.into()).await
    }
}

/// The outcome of a broadcast.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Broadcast {
    /// Members that acknowledged the message.
    pub delivered: Vec<PeerId>,
    /// Members it could not be delivered to, with why.
    pub failed: Vec<(PeerId, Error)>,
}

impl Broadcast {
    /// Whether every member acknowledged it.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty()
    }
}

pub(crate) struct Node {
    pub(crate) me: PeerEntry,
    pub(crate) identity: IdentityKey,
    incarnation: u64,
    seq: AtomicU64,
    pub(crate) config: MeshConfig,
    view: Mutex<MemberView>,
    channels: Mutex<HashMap<PeerId, (PublicKey, Client)>>,
    dedup: Mutex<Dedup>,
    events: mpsc::Sender<Event>,
    dropped: AtomicU64,
    pub(crate) direct: ServerHandle,
    left: AtomicBool,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("me", &self.me.id)
            .field("addr", &self.me.addr)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Binds the direct listener and returns the node with its event stream.
    pub(crate) async fn start(
        config: MeshConfig,
    ) -> Result<(Arc<Self>, mpsc::Receiver<Event>), Error> {
        config.validate()?;
        let identity = match &config.identity {
            Some(k) => k.clone(),
            None => IdentityKey::generate().map_err(|e| Error::Listen(e.to_string()))?,
        };
        let (events, events_rx) = mpsc::channel(config.event_capacity);
        // The direct listener asks the node, during each handshake, whether the key is listed.
        let slot: Arc<Mutex<Weak<Self>>> = Arc::new(Mutex::new(Weak::new()));
        let check_slot = slot.clone();
        let trust = PeerTrust::Check(KeyCheck::new(move |key| {
            lock(&check_slot)
                .upgrade()
                .is_some_and(|node| node.is_member_key(key))
        }));
        let handler_slot = slot.clone();
        // Identity-mode handshakes cannot be guessed, and on a shared address (NAT, loopback)
        // an IP ban would shut out honest members: failed handshakes here are only counted
        // generously.
        let mut bans = BanPolicy::default();
        bans.max_attempts = 10_000;
        bans.ban = Duration::from_secs(1);
        bans.max_ban = Duration::from_secs(1);
        let server = Server::builder(ServerAuth::Identity(identity.clone(), trust))
            .session_config(config.session.clone())
            .ban_policy(bans)
            .route(PATH, OP_SEND, move |req: Request, ctx: Ctx| {
                let node = lock(&handler_slot).upgrade();
                async move {
                    let node = node.ok_or_else(|| {
                        HandlerError::new(StatusCode::UNAVAILABLE, "node is shutting down")
                    })?;
                    node.receive(req, &ctx).await
                }
            })
            .bind(&config.direct_listen)
            .await
            .map_err(|e| Error::Listen(e.to_string()))?;
        let me = PeerEntry::new(identity.public(), server.local_addr());
        let node = Arc::new(Self {
            me,
            identity,
            incarnation: random_u64()?,
            seq: AtomicU64::new(0),
            dedup: Mutex::new(Dedup::new(config.dedup_window)),
            config,
            view: Mutex::new(MemberView::new()),
            channels: Mutex::new(HashMap::new()),
            events,
            dropped: AtomicU64::new(0),
            direct: server.handle(),
            left: AtomicBool::new(false),
        });
        *lock(&slot) = Arc::downgrade(&node);
        Ok((node, events_rx))
    }

    fn is_member_key(&self, key: &PublicKey) -> bool {
        !self.left.load(Ordering::Relaxed)
            && lock(&self.view).list().is_some_and(|l| l.contains_key(key))
    }

    /// The list held.
    pub(crate) fn list(&self) -> Option<PeerList> {
        lock(&self.view).list().cloned()
    }

    /// Queues a membership event; never waits (a reader that falls behind misses some and
    /// is told how many).
    pub(crate) fn emit(&self, event: Event) {
        let missed = self.dropped.load(Ordering::Relaxed);
        if missed > 0 && self.events.try_send(Event::Lagged { missed }).is_ok() {
            self.dropped.fetch_sub(missed, Ordering::Relaxed);
        }
        if self.events.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes a verified list; reports joins and departures, closes channels to members who
    /// left and ends their connections to us.
    pub(crate) fn apply(&self, list: PeerList, from_join: bool) -> Result<(), Error> {
        let diff = lock(&self.view).accept(list, from_join)?;
        for (id, reason) in &diff.left {
            self.drop_channel(id);
            for c in self.direct.connections() {
                if c.identity.is_some_and(|k| PeerId::of(&k) == *id) {
                    let _ = self.direct.kick(c.id);
                }
            }
            self.emit(Event::PeerLeft {
                id: *id,
                reason: *reason,
            });
        }
        for entry in diff.joined {
            if entry.id == self.me.id {
                continue;
            }
            // A member whose address or key changed gets a fresh channel.
            self.drop_channel(&entry.id);
            self.emit(Event::PeerJoined { entry });
        }
        let view = lock(&self.view);
        if let Some(l) = view.list() {
            lock(&self.dedup).retain(|id| l.get(id).is_some());
        }
        Ok(())
    }

    fn drop_channel(&self, id: &PeerId) {
        if let Some((_, client)) = lock(&self.channels).remove(id) {
            tokio::spawn(async move { client.close_within(Duration::from_millis(100)).await });
        }
    }

    /// The channel to `entry`, opened on first use (identity mode, its key pinned).
    fn channel(&self, entry: &PeerEntry) -> Result<Client, Error> {
        let mut channels = lock(&self.channels);
        if let Some((key, client)) = channels.get(&entry.id)
            && *key == entry.key
        {
            return Ok(client.clone());
        }
        let hb = self.config.heartbeat;
        let client = Client::builder(ClientAuth::Identity(
            self.identity.clone(),
            PeerTrust::AllowList(vec![entry.key]),
        ))
        .session_config(self.config.session.clone())
        .max_pending(self.config.queue, self.config.queue_bytes)
        .heartbeat(hb.interval, hb.missed)
        .connect(entry.addr.to_string())
        .map_err(|e| Error::SendFailed {
            peer: entry.id,
            reason: e.to_string(),
        })?;
        if let Some((_, old)) = channels.insert(entry.id, (entry.key, client.clone())) {
            tokio::spawn(async move { old.close_within(Duration::ZERO).await });
        }
        Ok(client)
    }

    fn check_open(&self) -> Result<(), Error> {
        if self.left.load(Ordering::Relaxed) {
            return Err(Error::Left);
        }
        Ok(())
    }

    /// Sends `data` to one member and waits for its acknowledgement.
    pub(crate) async fn send(&self, to: PeerId, data: Value) -> Result<(), Error> {
        self.check_open()?;
        if to == self.me.id {
            self.emit_message(self.me.id, data, false).await;
            return Ok(());
        }
        let entry = lock(&self.view)
            .list()
            .and_then(|l| l.get(&to).cloned())
            .ok_or(Error::PeerUnknown(to))?;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let body = self.checked_body(false, seq, data)?;
        self.deliver(&entry, body).await
    }

    /// Sends `data` to every other member at once; waits for every acknowledgement.
    pub(crate) async fn broadcast(&self, data: Value) -> Result<Broadcast, Error> {
        self.check_open()?;
        let targets: Vec<PeerEntry> = lock(&self.view)
            .list()
            .map(|l| {
                l.entries
                    .iter()
                    .filter(|e| e.id != self.me.id)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let body = self.checked_body(true, seq, data)?;
        let sends = targets.iter().map(|e| {
            let body = body.clone();
            async move { (e.id, self.deliver(e, body).await) }
        });
        let mut out = Broadcast::default();
        for (id, result) in futures_join_all(sends).await {
            match result {
                Ok(()) => out.delivered.push(id),
                Err(e) => out.failed.push((id, e)),
            }
        }
        Ok(out)
    }

    /// A direct message's request body, refused with [`Error::MessageTooLarge`] if the request
    /// carrying it would be over the session's message limit (before anything is sent).
    fn checked_body(&self, broadcast: bool, seq: u64, data: Value) -> Result<Value, Error> {
        let body = Value::map([
            ("b", Value::from(broadcast)),
            ("i", Value::from(self.incarnation)),
            ("s", Value::from(seq)),
            ("d", data),
        ]);
        // The request as the client will send it, with the longest id.
        let request = Message::Request(
            Request::new(u64::MAX, PATH, OP_SEND)
                .with_data(body)
                .with_deadline(self.config.send_timeout),
        );
        if let Some(len) = self.config.session.oversize(&request) {
            let max = self.config.session.max_message_len();
            return Err(Error::MessageTooLarge { len, max });
        }
        match request {
            Message::Request(r) => Ok(r.data),
            _ => unreachable!("built as a request"),
        }
    }

    async fn deliver(&self, entry: &PeerEntry, body: Value) -> Result<(), Error> {
        let client = self.channel(entry)?;
        let result = client
            .request(PATH, OP_SEND)
            .data(body)
            .deadline(self.config.send_timeout)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(ClientError::BufferFull { .. }) => Err(Error::QueueFull(entry.id)),
            Err(ClientError::MessageTooLarge { len, max }) => {
                Err(Error::MessageTooLarge { len, max })
            }
            Err(e) => Err(Error::SendFailed {
                peer: entry.id,
                reason: e.to_string(),
            }),
        }
    }

    /// A direct message arrived (its sender passed the handshake's list check).
    async fn receive(&self, req: Request, ctx: &Ctx) -> Result<Value, HandlerError> {
        let forbidden = || HandlerError::new(StatusCode::UNAUTHORIZED, "not a member");
        let key = ctx.identity.ok_or_else(forbidden)?;
        // Checked again per message: the sender may have been removed since its handshake.
        if !self.is_member_key(&key) {
            let _ = ctx.server.kick(ctx.connection);
            return Err(forbidden());
        }
        let from = PeerId::of(&key);
        // Take the fields out of the request (no copy of the payload).
        let (mut broadcast, mut incarnation, mut seq, mut data) = (None, None, None, Value::Nil);
        if let Value::Map(entries) = req.data {
            for (k, v) in entries {
                match k.as_str() {
                    Some("b") => broadcast = v.as_bool(),
                    Some("i") => incarnation = v.as_u64(),
                    Some("s") => seq = v.as_u64(),
                    Some("d") => data = v,
                    _ => {}
                }
            }
        }
        let (Some(broadcast), Some(incarnation), Some(seq)) = (broadcast, incarnation, seq) else {
            return Err(HandlerError::bad_request("malformed mesh message"));
        };
        if lock(&self.dedup).first_time(from, incarnation, seq) {
            self.emit_message(from, data, broadcast).await;
        }
        Ok(Value::Nil)
    }

    /// Delivers a message to the application, waiting for room: a reader that stops reading
    /// slows its senders down (their sends time out) instead of losing messages.
    async fn emit_message(&self, from: PeerId, data: Value, broadcast: bool) {
        let _ = self
            .events
            .send(Event::Message {
                from,
                data,
                broadcast,
            })
            .await;
    }

    /// Closes every channel and the direct listener. `graceful`: say goodbye on each.
    pub(crate) async fn shutdown(&self, graceful: bool) {
        self.left.store(true, Ordering::Relaxed);
        let channels: Vec<Client> = lock(&self.channels).drain().map(|(_, (_, c))| c).collect();
        let drain = if graceful {
            Duration::from_millis(200)
        } else {
            Duration::ZERO
        };
        futures_join_all(channels.iter().map(|c| c.close_within(drain))).await;
        if graceful {
            self.direct.shutdown().await;
        } else {
            self.direct.shutdown_now().await;
        }
        let former = lock(&self.view).clear();
        for id in former {
            if id != self.me.id {
                self.emit(Event::PeerLeft {
                    id,
                    reason: LeaveReason::Left,
                });
            }
        }
    }
}

/// Runs futures concurrently and collects their outputs in order (a small stand-in for
/// `futures::future::join_all`, to keep the dependency tree lean).
async fn futures_join_all<F: Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futs {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}
