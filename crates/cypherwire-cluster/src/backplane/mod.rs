//! [`RedisBackplane`]: the [`Backplane`] over Redis 7.

mod commands;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cypherwire_server::{
    Backplane, BackplaneError, BackplaneEvent, BoxFuture, History, NodeId, Position, Published,
    Topic,
};
use cypherwire_session::SourceKey;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ProtocolVersion, PushInfo, Script};
use tokio::sync::{mpsc, oneshot};

use self::commands::{PUBLISH, random_u64, unavailable};
use crate::body::NodeKind;
use crate::error::Error;
use crate::inbound::{Counters, Inbound, ReplayGuard, now_ms};
use crate::key::ClusterKey;
use crate::names::Names;
use crate::seal::Sealer;

/// Settings of a [`RedisBackplane`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisOptions {
    /// What every key and channel name starts with (default `cw:`); clusters sharing one
    /// Redis use different prefixes.
    pub prefix: String,
    /// Publications kept per topic to fill gaps (default 1,024, approximately: Redis trims
    /// streams in whole nodes).
    pub history: usize,
    /// How long a topic's data lives after its last publication, and the oldest publication
    /// a node accepts (default 10 min).
    pub history_ttl: Duration,
    /// How long a command may take before its outcome counts as unknown (default 2 s).
    pub command_timeout: Duration,
    /// How often a node renews its entry and probes its own subscription (default 3 s).
    pub heartbeat: Duration,
    /// How long a node's entry lives without renewal (default 10 s).
    pub node_ttl: Duration,
    /// A node id to claim instead of a random one (it must be free).
    pub node: Option<NodeId>,
    /// For `rediss://` URLs: the certificate authority (PEM) that signed Redis's certificate,
    /// instead of the platform's root certificates (a private CA, the common case for Redis).
    #[cfg(feature = "tls")]
    pub tls_root_cert: Option<Vec<u8>>,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            prefix: "cw:".to_owned(),
            history: 1024,
            history_ttl: Duration::from_secs(600),
            command_timeout: Duration::from_secs(2),
            heartbeat: Duration::from_secs(3),
            node_ttl: Duration::from_secs(10),
            node: None,
            #[cfg(feature = "tls")]
            tls_root_cert: None,
        }
    }
}

/// What a [`RedisBackplane`] refused or missed, since it connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SealStats {
    /// Values that failed authentication (altered, forged, moved, or under an unknown key).
    pub forged: u64,
    /// Authentic values heard a second time, or in another place.
    pub replayed: u64,
    /// Authentic values older than allowed.
    pub stale: u64,
    /// Values that are not this format.
    pub malformed: u64,
    /// Messages dropped because this node did not keep up (each starts a check for gaps).
    pub overflow: u64,
    /// Heartbeats after which the subscription had delivered nothing for three periods.
    pub probes_missed: u64,
    /// Times the subscription connection dropped.
    pub link_downs: u64,
}

/// A [`Backplane`] over Redis 7: several `cypherwire` servers sharing one Redis act as one
/// service (`docs/cluster.md`). Everything written to Redis is sealed with the
/// [`ClusterKey`]; key names hold digests of topic and source names, never the names.
///
/// Two connections, each a `redis` `ConnectionManager` that reconnects by itself: one for
/// commands, one (RESP3) for the subscriptions, which it renews after a reconnect.
#[derive(Clone)]
pub struct RedisBackplane {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("node", &self.inner.node)
            .field("prefix", &self.inner.options.prefix)
            .finish_non_exhaustive()
    }
}

struct Inner {
    node: NodeId,
    options: RedisOptions,
    names: Names,
    sealer: Arc<Sealer>,
    commands: ConnectionManager,
    subscriber: ConnectionManager,
    topics: Arc<Mutex<HashMap<String, Topic>>>,
    pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>>,
    events: Mutex<Option<mpsc::Receiver<BackplaneEvent>>>,
    events_tx: mpsc::Sender<BackplaneEvent>,
    counters: Arc<Counters>,
    last_heard: Arc<AtomicU64>,
    /// Counts this node's publications (sealed into each, for the replay guard).
    published: AtomicU64,
    script: Script,
    /// Checks history entries as the subscription checks live ones.
    history_guard: Mutex<Inbound>,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    /// Set by `leave`: the heartbeat stops renewing the node's entry.
    left: std::sync::atomic::AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in self
            .tasks
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            t.abort();
        }
    }
}

/// Pushes the subscription connection hands over, waiting for the decoder (bounded).
const PUSH_QUEUE: usize = 65_536;
/// Events waiting for the server (bounded).
const EVENT_QUEUE: usize = 65_536;

impl RedisBackplane {
    /// Connects to Redis at `url` (`redis://`, `redis+unix://`, or `rediss://` with the `tls`
    /// feature; user and password in the URL for `AUTH`/ACL) with the default
    /// [`RedisOptions`], and claims a node id.
    ///
    /// # Errors
    /// [`Error::Redis`] if Redis cannot be reached; [`Error::Key`] without a key.
    pub async fn connect(url: &str, key: ClusterKey) -> Result<Self, Error> {
        Self::connect_with(url, &[key], RedisOptions::default()).await
    }

    /// Connects with several keys (the first seals, all open: key rotation) and `options`.
    ///
    /// # Errors
    /// As [`connect`](Self::connect); [`Error::NodeTaken`] if `options.node` is held by a
    /// live node.
    pub async fn connect_with(
        url: &str,
        keys: &[ClusterKey],
        options: RedisOptions,
    ) -> Result<Self, Error> {
        let sealer =
            Arc::new(Sealer::new(keys).ok_or_else(|| Error::Key("no cluster key".into()))?);
        let client = redis::Client::open(url).map_err(|e| Error::Redis(e.to_string()))?;
        let info = client.get_connection_info().clone();
        let redis_info = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let info = info.set_redis_settings(redis_info);
        #[cfg(feature = "tls")]
        let client = match &options.tls_root_cert {
            Some(pem) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            None => redis::Client::open(info),
        };
        #[cfg(not(feature = "tls"))]
        let client = redis::Client::open(info);
        let client = client.map_err(|e| Error::Redis(e.to_string()))?;
        let base = ConnectionManagerConfig::new()
            .set_response_timeout(Some(options.command_timeout))
            .set_connection_timeout(Some(options.command_timeout))
            .set_max_delay(Duration::from_secs(1));
        let mut commands = client
            .get_connection_manager_with_config(base.clone())
            .await
            .map_err(|e| Error::Redis(e.to_string()))?;
        let names = Names::new(&options.prefix);
        let node = claim(&mut commands, &names, &options).await?;

        let (push_tx, push_rx) = mpsc::channel::<PushInfo>(PUSH_QUEUE);
        let counters = Arc::new(Counters::default());
        let overflow = counters.clone();
        let sink = move |info: PushInfo| -> Result<(), redis::aio::SendError> {
            if push_tx.try_send(info).is_err() {
                overflow.overflow.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        };
        let mut subscriber = client
            .get_connection_manager_with_config(
                base.set_push_sender(sink).set_automatic_resubscription(),
            )
            .await
            .map_err(|e| Error::Redis(e.to_string()))?;

        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let topics = Arc::new(Mutex::new(HashMap::new()));
        let pending = Arc::new(Mutex::new(HashMap::new()));
        let last_heard = Arc::new(AtomicU64::new(now_ms()));
        let guard = Arc::new(Mutex::new(ReplayGuard::default()));
        let inbound = |events: mpsc::Sender<BackplaneEvent>| {
            Inbound::new(
                node,
                sealer.clone(),
                names.node_channel(node),
                names.bans_channel(),
                topics.clone(),
                pending.clone(),
                events,
                counters.clone(),
                last_heard.clone(),
                options.history_ttl,
                guard.clone(),
            )
        };
        let decoder = tokio::spawn(inbound(events_tx.clone()).run(push_rx));
        // History entries are checked by a guard of their own, that sends no events.
        let history_guard = Mutex::new(inbound(mpsc::channel(1).0));
        for channel in [names.node_channel(node), names.bans_channel()] {
            subscriber
                .subscribe(&channel)
                .await
                .map_err(|e| Error::Redis(e.to_string()))?;
        }
        let inner = Arc::new(Inner {
            node,
            names,
            sealer,
            commands,
            subscriber,
            topics,
            pending,
            events: Mutex::new(Some(events_rx)),
            events_tx,
            counters,
            last_heard,
            published: AtomicU64::new(0),
            script: Script::new(PUBLISH),
            history_guard,
            tasks: Mutex::new(vec![decoder.abort_handle()]),
            left: std::sync::atomic::AtomicBool::new(false),
            options,
        });
        let heartbeat = tokio::spawn(heartbeat(Arc::downgrade(&inner)));
        inner
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(heartbeat.abort_handle());
        Ok(Self { inner })
    }

    /// What this backplane refused or missed so far.
    pub fn seal_stats(&self) -> SealStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SealStats {
            forged: get(&c.forged),
            replayed: get(&c.replayed),
            stale: get(&c.stale),
            malformed: get(&c.malformed),
            overflow: get(&c.overflow),
            probes_missed: get(&c.probes_missed),
            link_downs: get(&c.link_downs),
        }
    }

    /// The id of the key this backplane seals with.
    pub fn key_id(&self) -> u32 {
        self.inner.sealer.key_id()
    }
}

/// Claims a node id: `SET node:<id> NX` with the node TTL.
async fn claim(
    commands: &mut ConnectionManager,
    names: &Names,
    options: &RedisOptions,
) -> Result<NodeId, Error> {
    let ttl = u64::try_from(options.node_ttl.as_millis()).unwrap_or(u64::MAX);
    for _ in 0..64 {
        let node = match options.node {
            Some(n) => n,
            None => {
                let Some(n) = NodeId::new(
                    u32::try_from(random_u64() % u64::from(NodeId::MAX)).unwrap_or(1) + 1,
                ) else {
                    continue;
                };
                n
            }
        };
        let set: Option<String> = redis::cmd("SET")
            .arg(names.node_key(node))
            .arg(now_ms())
            .arg("NX")
            .arg("PX")
            .arg(ttl)
            .query_async(commands)
            .await
            .map_err(|e| Error::Redis(e.to_string()))?;
        if set.is_some() {
            let _: () = redis::pipe()
                .zadd(names.nodes(), node.get(), now_ms() + ttl)
                .ignore()
                .query_async(commands)
                .await
                .map_err(|e| Error::Redis(e.to_string()))?;
            return Ok(node);
        }
        if options.node.is_some() {
            return Err(Error::NodeTaken(node));
        }
    }
    Err(Error::Redis("no free node id after 64 tries".into()))
}

/// Renews this node's entry, prunes dead ones, and probes the subscription: a node that
/// heard nothing (not even its own probes) for three periods renews its subscriptions and
/// reports a link-up, so the server checks every topic for gaps.
async fn heartbeat(inner: std::sync::Weak<Inner>) {
    let period = match inner.upgrade() {
        Some(i) => i.options.heartbeat,
        None => return,
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.left.load(Ordering::Relaxed) {
            return;
        }
        let mut con = inner.commands.clone();
        let names = &inner.names;
        let ttl = u64::try_from(inner.options.node_ttl.as_millis()).unwrap_or(u64::MAX);
        let now = now_ms();
        let probe =
            inner.sealed_node_message(inner.node, NodeKind::Probe, random_u64(), Vec::new());
        let renewed: Result<(Option<String>, (), (), ()), _> = redis::pipe()
            .cmd("SET")
            .arg(names.node_key(inner.node))
            .arg(now)
            .arg("PX")
            .arg(ttl)
            .zadd(names.nodes(), inner.node.get(), now + ttl)
            .zrembyscore(names.nodes(), "-inf", now)
            .publish(names.node_channel(inner.node), probe)
            .query_async(&mut con)
            .await;
        if let Err(e) = renewed {
            tracing::warn!(error = %e, "cluster heartbeat failed");
        }
        let silent = now.saturating_sub(inner.last_heard.load(Ordering::Relaxed));
        if u128::from(silent) > 3 * period.as_millis() {
            inner.counters.probes_missed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(silent_ms = silent, "subscription silent: renewing it");
            let mut sub = inner.subscriber.clone();
            let mut channels = vec![names.node_channel(inner.node), names.bans_channel()];
            channels.extend(inner.topics().keys().cloned());
            for c in channels {
                let _ = sub.subscribe(&c).await;
            }
            inner.last_heard.store(now_ms(), Ordering::Relaxed);
            let _ = inner.events_tx.try_send(BackplaneEvent::LinkUp);
        }
    }
}

impl Backplane for RedisBackplane {
    fn node(&self) -> NodeId {
        self.inner.node
    }

    fn take_events(&self) -> Option<mpsc::Receiver<BackplaneEvent>> {
        self.inner
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn publish(
        &self,
        topic: &Topic,
        payloads: Vec<Vec<u8>>,
    ) -> BoxFuture<Result<Published, BackplaneError>> {
        let (inner, topic) = (self.inner.clone(), topic.clone());
        Box::pin(async move { inner.publish(&topic, payloads).await })
    }

    fn subscribe(&self, topic: &Topic) -> BoxFuture<Result<Position, BackplaneError>> {
        let (inner, topic) = (self.inner.clone(), topic.clone());
        Box::pin(async move {
            let channel = inner.names.topic_channel(&topic);
            inner.topics().insert(channel.clone(), topic.clone());
            let mut sub = inner.subscriber.clone();
            sub.subscribe(&channel).await.map_err(|e| unavailable(&e))?;
            inner.position(&topic).await
        })
    }

    fn unsubscribe(&self, topic: &Topic) -> BoxFuture<Result<(), BackplaneError>> {
        let (inner, topic) = (self.inner.clone(), topic.clone());
        Box::pin(async move {
            let channel = inner.names.topic_channel(&topic);
            inner.topics().remove(&channel);
            let mut sub = inner.subscriber.clone();
            sub.unsubscribe(&channel).await.map_err(|e| unavailable(&e))
        })
    }

    fn history(
        &self,
        topic: &Topic,
        after: u64,
        max: usize,
    ) -> BoxFuture<Result<History, BackplaneError>> {
        let (inner, topic) = (self.inner.clone(), topic.clone());
        Box::pin(async move { inner.history(&topic, after, max).await })
    }

    fn request(
        &self,
        to: NodeId,
        body: Vec<u8>,
        deadline: Duration,
    ) -> BoxFuture<Result<Vec<u8>, BackplaneError>> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.request(to, body, deadline).await })
    }

    fn reply(&self, to: NodeId, id: u64, body: Vec<u8>) -> BoxFuture<Result<(), BackplaneError>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            inner
                .send_node(to, NodeKind::Reply, id, body)
                .await
                .map(drop)
        })
    }

    fn nodes(&self) -> BoxFuture<Result<Vec<NodeId>, BackplaneError>> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.nodes().await })
    }

    fn ban(&self, source: &SourceKey, length: Duration) -> BoxFuture<Result<(), BackplaneError>> {
        let (inner, source) = (self.inner.clone(), *source);
        Box::pin(async move { inner.ban(&source, length).await })
    }

    fn unban(&self, source: &SourceKey) -> BoxFuture<Result<bool, BackplaneError>> {
        let (inner, source) = (self.inner.clone(), *source);
        Box::pin(async move { inner.unban(&source).await })
    }

    fn bans(&self) -> BoxFuture<Result<Vec<(SourceKey, Duration)>, BackplaneError>> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.bans().await })
    }

    fn leave(&self) -> BoxFuture<()> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.leave().await })
    }

    fn record_failure(
        &self,
        source: &SourceKey,
        window: Duration,
    ) -> BoxFuture<Result<u64, BackplaneError>> {
        let (inner, source) = (self.inner.clone(), *source);
        Box::pin(async move { inner.record_failure(&source, window).await })
    }
}
