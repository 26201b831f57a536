//! The CYPHER_PROTOCOL 1.5.0 compat listener (**legacy**, off by default): Python
//! `CYPHER_CLIENT`s talk to the same router as native clients. See `docs/compat.md`.
//!
//! One request at a time per connection, answered in order. Every decrypted request gets an
//! answer (a handler error becomes an answer whose `METADATA` holds `ERROR`), because the
//! Python client resends the identical token after any missing reply; a resent token is
//! answered from a bounded cache instead of running twice. Anything that is not a valid token
//! of a JSON request closes that connection only.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cypherwire_session::compat::{
    self, CompatError, CompatMessage, CypherKeys, DEFAULT_MAX_COMPAT_MESSAGE, NulFramer,
};
use cypherwire_wire::{Request, StatusCode, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::handle::ServerHandle;
use crate::handler::Ctx;
use crate::router::Router;
use crate::shared::Shared;

/// Settings of the compat listener.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CypherCompat {
    /// Where Python clients connect.
    pub addr: String,
    /// The keys as the Python server takes them: `encryption` seals answers, `decryption`
    /// opens requests.
    pub keys: CypherKeys,
    /// Largest request token (default 16 MiB), checked as bytes arrive.
    pub max_message_len: usize,
    /// Answers kept for resent tokens (default 1,024 answers, 64 MiB in all).
    pub replay_entries: usize,
    /// Bytes of answers kept for resent tokens.
    pub replay_bytes: usize,
    /// Compat connections at once (default 1,024).
    pub max_connections: usize,
    /// How long a connection may stay open without a request arriving (default 5 min, as
    /// native connections' idle timeout).
    pub idle_timeout: Duration,
    /// How long one request may take to arrive once its first byte has (default 10 s, as the
    /// native handshake timeout): a slow sender cannot hold a buffer open.
    pub message_timeout: Duration,
    /// Bytes of incomplete requests buffered over all compat connections at once (default
    /// 64 MiB); a connection whose next read would pass it is closed.
    pub buffer_budget: usize,
}

impl CypherCompat {
    /// A listener on `addr` with `keys` and the default limits.
    pub fn new(addr: impl Into<String>, keys: CypherKeys) -> Self {
        Self {
            addr: addr.into(),
            keys,
            max_message_len: DEFAULT_MAX_COMPAT_MESSAGE,
            replay_entries: 1024,
            replay_bytes: 64 * 1024 * 1024,
            max_connections: 1024,
            idle_timeout: Duration::from_secs(300),
            message_timeout: Duration::from_secs(10),
            buffer_budget: 64 * 1024 * 1024,
        }
    }
}

/// Answers by request-token digest, oldest evicted first, bounded by count and bytes.
struct ReplayCache {
    order: VecDeque<[u8; 32]>,
    answers: HashMap<[u8; 32], Arc<Vec<u8>>>,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

impl ReplayCache {
    fn get(&self, key: &[u8; 32]) -> Option<Arc<Vec<u8>>> {
        self.answers.get(key).cloned()
    }

    fn insert(&mut self, key: [u8; 32], answer: Arc<Vec<u8>>) {
        if answer.len() > self.max_bytes || self.answers.contains_key(&key) {
            return;
        }
        self.bytes += answer.len();
        self.answers.insert(key, answer);
        self.order.push_back(key);
        while self.order.len() > self.max_entries || self.bytes > self.max_bytes {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(a) = self.answers.remove(&old) {
                self.bytes -= a.len();
            }
        }
    }
}

pub(crate) async fn accept_loop(
    shared: Arc<Shared>,
    router: Arc<Router>,
    listener: TcpListener,
    cfg: CypherCompat,
) {
    let cache = Arc::new(Mutex::new(ReplayCache {
        order: VecDeque::new(),
        answers: HashMap::new(),
        bytes: 0,
        max_entries: cfg.replay_entries.max(1),
        max_bytes: cfg.replay_bytes,
    }));
    let slots = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
    let budget = Arc::new(AtomicUsize::new(0));
    let cfg = Arc::new(cfg);
    let mut shutdown = shared.shutdown_rx();
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|down| *down) => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "compat accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "compat connection refused: too many");
            shared.stats.compat_refused.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        shared
            .stats
            .compat_connections
            .fetch_add(1, Ordering::Relaxed);
        let (shared, router) = (shared.clone(), router.clone());
        let (cache, cfg) = (cache.clone(), cfg.clone());
        let held = Held {
            budget: budget.clone(),
            bytes: 0,
        };
        conns.spawn(async move {
            let _permit = permit;
            if let Err(e) = serve(&shared, &router, stream, peer, &cache, &cfg, held).await {
                tracing::info!(%peer, error = %e, "compat connection closed");
                shared.stats.compat_errors.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}

/// Why a compat connection ended.
#[derive(Debug, thiserror::Error)]
enum End {
    #[error(transparent)]
    Compat(#[from] CompatError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("no request within the idle timeout")]
    Idle,
    #[error("a request did not arrive within the message timeout")]
    Slow,
    #[error("the compat listeners' buffer budget is spent")]
    Budget,
}

/// The bytes of incomplete requests one connection holds of the listener's budget; given back
/// when the connection ends.
struct Held {
    budget: Arc<AtomicUsize>,
    bytes: usize,
}

impl Held {
    /// Sets this connection's share to `bytes`; false (and unchanged) if that would pass
    /// `max` over all connections.
    fn set(&mut self, bytes: usize, max: usize) -> bool {
        if bytes > self.bytes {
            let more = bytes - self.bytes;
            let fits = self
                .budget
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                    used.checked_add(more).filter(|total| *total <= max)
                })
                .is_ok();
            if !fits {
                return false;
            }
        } else {
            self.budget.fetch_sub(self.bytes - bytes, Ordering::AcqRel);
        }
        self.bytes = bytes;
        true
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

async fn serve(
    shared: &Arc<Shared>,
    router: &Router,
    mut stream: TcpStream,
    peer: SocketAddr,
    cache: &Mutex<ReplayCache>,
    cfg: &CypherCompat,
    mut held: Held,
) -> Result<(), End> {
    let _ = stream.set_nodelay(true);
    let mut framer = NulFramer::new(cfg.max_message_len);
    let mut buf = vec![0u8; 64 * 1024];
    let mut shutdown = shared.shutdown_rx();
    let connection = shared.next_id();
    let mut request_id = 0u64;
    let mut last_request = tokio::time::Instant::now();
    let mut message_started = None;
    loop {
        while let Some(token) = framer.next_message()? {
            last_request = tokio::time::Instant::now();
            let digest: [u8; 32] = Sha256::digest(&token).into();
            let cached = cache
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&digest);
            let answer = match cached {
                Some(a) => {
                    shared.stats.compat_replayed.fetch_add(1, Ordering::Relaxed);
                    a
                }
                None => {
                    let req = compat::decode(&token, &cfg.keys.decryption)?;
                    request_id += 1;
                    let answer = Arc::new(
                        answer(shared, router, req, peer, connection, request_id, cfg).await?,
                    );
                    cache
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(digest, answer.clone());
                    answer
                }
            };
            stream.write_all(&answer).await?;
        }
        // What is left is the start of the next request, if anything.
        held.set(framer.buffered(), cfg.buffer_budget);
        let (deadline, late) = if framer.buffered() == 0 {
            message_started = None;
            (last_request + cfg.idle_timeout, End::Idle)
        } else {
            let started = *message_started.get_or_insert_with(tokio::time::Instant::now);
            (started + cfg.message_timeout, End::Slow)
        };
        let n = tokio::select! {
            _ = shutdown.wait_for(|down| *down) => return Ok(()),
            () = tokio::time::sleep_until(deadline) => return Err(late),
            n = stream.read(&mut buf) => n?,
        };
        if n == 0 {
            return Ok(());
        }
        if !held.set(framer.buffered() + n, cfg.buffer_budget) {
            return Err(End::Budget);
        }
        framer.push(&buf[..n]);
    }
}

/// Runs the request through the router and seals the answer.
async fn answer(
    shared: &Arc<Shared>,
    router: &Router,
    req: CompatMessage,
    peer: SocketAddr,
    connection: crate::ConnectionId,
    id: u64,
    cfg: &CypherCompat,
) -> Result<Vec<u8>, CompatError> {
    let ctx = Ctx {
        connection,
        peer,
        identity: None,
        request_id: Some(id),
        deadline: None,
        server: ServerHandle::from_shared(shared.clone()),
        session: None,
    };
    let mut request = Request::new(id, req.path.clone(), req.operation.clone());
    request.data = req.data;
    request.metadata = req.metadata.clone();
    let started = crate::clock::monotonic();
    let route = router.lookup(&req.path, &req.operation);
    let outcome = match &route {
        None => Err((
            StatusCode::NOT_FOUND,
            format!("no handler for {} {}", req.path, req.operation),
        )),
        // Run here (one request at a time per connection, as the package's clients send);
        // a panic is contained like on the native path.
        Some(route) => match crate::unwind::CatchUnwind(route.handler.call(request, ctx)).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err((e.code, e.message)),
            Err(crate::unwind::Panicked) => {
                tracing::error!(request = id, "handler panicked (compat)");
                Err((StatusCode::INTERNAL, "internal error".to_owned()))
            }
        },
    };
    let status = outcome
        .as_ref()
        .map_or_else(|(code, _)| *code, |_| StatusCode::OK);
    let metrics = route.map_or(&router.unmatched, |r| &r.metrics);
    metrics.record(status, started.elapsed());
    let msg = match outcome {
        Ok(reply) => CompatMessage {
            path: req.path,
            operation: req.operation,
            data: reply.data,
            // The Python handlers echo the request's metadata; so do we unless the handler
            // set its own.
            metadata: if reply.metadata.is_nil() {
                req.metadata
            } else {
                reply.metadata
            },
        },
        Err((code, message)) => CompatMessage {
            path: req.path,
            operation: req.operation,
            data: Value::Nil,
            metadata: Value::map([(
                "ERROR",
                Value::map([
                    ("code", Value::from(code.0)),
                    ("message", Value::from(message)),
                ]),
            )]),
        },
    };
    compat::encode(&msg, &cfg.keys.encryption, crate::clock::unix_secs())
}

/// Binds the compat listener.
pub(crate) async fn bind(cfg: &CypherCompat) -> Result<TcpListener, crate::Error> {
    TcpListener::bind(&cfg.addr)
        .await
        .map_err(|source| crate::Error::Bind {
            addr: cfg.addr.clone(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: usize, bytes: usize) -> ReplayCache {
        ReplayCache {
            order: VecDeque::new(),
            answers: HashMap::new(),
            bytes: 0,
            max_entries: entries,
            max_bytes: bytes,
        }
    }

    #[test]
    fn the_replay_cache_keeps_the_newest_within_count_and_bytes() {
        let mut c = cache(2, 1000);
        for k in 0..3u8 {
            c.insert([k; 32], Arc::new(vec![k; 10]));
        }
        assert!(c.get(&[0; 32]).is_none(), "oldest evicted by count");
        assert!(c.get(&[1; 32]).is_some() && c.get(&[2; 32]).is_some());
        let mut c = cache(100, 25);
        for k in 0..3u8 {
            c.insert([k; 32], Arc::new(vec![k; 10]));
        }
        assert!(c.get(&[0; 32]).is_none(), "oldest evicted by bytes");
        assert_eq!(c.bytes, 20);
        // An answer larger than the whole budget is not kept (and evicts nothing).
        c.insert([9; 32], Arc::new(vec![0; 26]));
        assert!(c.get(&[9; 32]).is_none());
        assert_eq!(c.answers.len(), 2);
    }
}
