//! Sessions that outlive connections: resumption tokens, the response cache that keeps a
//! resent request from running twice, and the push replay buffer (`docs/protocol.md` §3.7).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use cypherwire_session::fasthash::FastState;
use cypherwire_session::token::{SessionToken, TokenStore};
use cypherwire_session::wire::{Message, Push, Response, Value};
use tokio::sync::mpsc;

use crate::conn::Outgoing;
use crate::registry::ConnectionId;

/// Resumption settings, each a documented default.
///
/// | setting | default |
/// | --- | --- |
/// | `ttl`: how long a detached session (and its token) can be resumed | 120 s |
/// | `response_cache`: responses kept per session for resent requests | 256 |
/// | `response_cache_bytes`: their approximate total size | 4 MiB |
/// | `push_buffer`: recent pushes kept per session for replay after a cut | 1,024 |
/// | `push_buffer_bytes`: their approximate total size | 8 MiB |
/// | `max_sessions`: sessions kept at once, attached or not | 20,000 |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResumePolicy {
    /// How long a detached session can be resumed.
    pub ttl: Duration,
    /// Responses kept per session.
    pub response_cache: usize,
    /// Approximate bytes of responses kept per session.
    pub response_cache_bytes: usize,
    /// Pushes kept per session for replay.
    pub push_buffer: usize,
    /// Approximate bytes of pushes kept per session.
    pub push_buffer_bytes: usize,
    /// Sessions kept at once.
    pub max_sessions: usize,
}

impl Default for ResumePolicy {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(120),
            response_cache: 256,
            response_cache_bytes: 4 * 1024 * 1024,
            push_buffer: 1024,
            push_buffer_bytes: 8 * 1024 * 1024,
            max_sessions: 20_000,
        }
    }
}

/// What to do with a request.
pub(crate) enum Begin {
    /// Run it.
    Run,
    /// It already ran: answer with this (shared with the cache, not copied).
    Cached(Arc<Message>),
    /// It is running (a resend): its answer will come when it finishes.
    InProgress,
}

/// Why a push was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushFailure {
    /// The attached connection's outbox is full.
    SlowConsumer(ConnectionId),
}

struct Inner {
    attached: Option<(ConnectionId, mpsc::Sender<Outgoing>)>,
    detached_at: Option<Instant>,
    push_seq: u64,
    /// (sequence number, the push as sent, its approximate size): shared with the outbox, so a
    /// push is built once.
    replay: VecDeque<(u64, Arc<Message>, usize)>,
    replay_bytes: usize,
    responses: HashMap<u64, (Arc<Message>, usize), FastState>,
    response_order: VecDeque<u64>,
    response_bytes: usize,
    running: HashSet<u64, FastState>,
}

/// One session's state.
pub(crate) struct SessionState {
    inner: Mutex<Inner>,
    policy: ResumePolicy,
}

impl SessionState {
    fn new(policy: ResumePolicy) -> Self {
        Self {
            inner: Mutex::new(Inner {
                attached: None,
                detached_at: None,
                push_seq: 0,
                replay: VecDeque::new(),
                replay_bytes: 0,
                responses: HashMap::default(),
                response_order: VecDeque::new(),
                response_bytes: 0,
                running: HashSet::default(),
            }),
            policy,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn attach(
        &self,
        conn: ConnectionId,
        outbox: mpsc::Sender<Outgoing>,
    ) -> Option<ConnectionId> {
        let mut s = self.lock();
        s.detached_at = None;
        s.attached
            .replace((conn, outbox))
            .map(|(old, _)| old)
            .filter(|old| *old != conn)
    }

    pub(crate) fn detach(&self, conn: ConnectionId, now: Instant) {
        let mut s = self.lock();
        if s.attached.as_ref().is_some_and(|(c, _)| *c == conn) {
            s.attached = None;
            s.detached_at = Some(now);
        }
    }

    fn expired(&self, now: Instant) -> bool {
        self.lock()
            .detached_at
            .is_some_and(|at| now.saturating_duration_since(at) >= self.policy.ttl)
    }

    /// Queues a push: numbered, kept for replay, sent to the attached connection if any.
    pub(crate) fn push(&self, data: Value) -> Result<(), PushFailure> {
        let mut s = self.lock();
        s.push_seq += 1;
        let seq = s.push_seq;
        let msg = Arc::new(Message::from(Push::new(seq, data)));
        let size = msg.approx_size();
        s.replay.push_back((seq, msg.clone(), size));
        s.replay_bytes += size;
        while s.replay.len() > self.policy.push_buffer
            || s.replay_bytes > self.policy.push_buffer_bytes
        {
            let Some((_, _, sz)) = s.replay.pop_front() else {
                break;
            };
            s.replay_bytes -= sz;
        }
        match &s.attached {
            Some((conn, tx)) => match tx.try_send(Outgoing::Shared(msg)) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => Err(PushFailure::SlowConsumer(*conn)),
            },
            None => Ok(()),
        }
    }

    /// The pushes after `last` for a resuming client, or `None` if some were lost.
    ///
    /// Pushes leave the buffer oldest first, so "some were lost" is exactly "the oldest kept
    /// push is not the one right after `last`".
    pub(crate) fn replay_after(&self, last: u64) -> Option<Vec<Arc<Message>>> {
        let s = self.lock();
        let first_kept = s.replay.front().map_or(s.push_seq + 1, |(seq, _, _)| *seq);
        if last > s.push_seq || last + 1 < first_kept {
            return None;
        }
        Some(
            s.replay
                .iter()
                .filter(|(seq, _, _)| *seq > last)
                .map(|(_, m, _)| m.clone())
                .collect(),
        )
    }

    pub(crate) fn begin(&self, id: u64) -> Begin {
        let mut s = self.lock();
        if let Some((r, _)) = s.responses.get(&id) {
            return Begin::Cached(r.clone());
        }
        if !s.running.insert(id) {
            return Begin::InProgress;
        }
        Begin::Run
    }

    /// Records the answer; returns it (shared with the cache) and where to send it now (if the
    /// session is attached).
    pub(crate) fn complete(
        &self,
        resp: Response,
    ) -> (Arc<Message>, Option<mpsc::Sender<Outgoing>>) {
        let id = resp.id;
        let size = resp.approx_size();
        let msg = Arc::new(Message::from(resp));
        let mut s = self.lock();
        s.running.remove(&id);
        match s.responses.insert(id, (msg.clone(), size)) {
            Some((_, old_size)) => s.response_bytes -= old_size,
            None => s.response_order.push_back(id),
        }
        s.response_bytes += size;
        while s.responses.len() > self.policy.response_cache
            || s.response_bytes > self.policy.response_cache_bytes
        {
            let Some(old) = s.response_order.pop_front() else {
                break;
            };
            if let Some((_, sz)) = s.responses.remove(&old) {
                s.response_bytes -= sz;
            }
        }
        let tx = s.attached.as_ref().map(|(_, tx)| tx.clone());
        (msg, tx)
    }

    /// Forgets a request that will never be answered (cancelled).
    pub(crate) fn abandon(&self, id: u64) {
        self.lock().running.remove(&id);
    }
}

/// Identifies a session (internal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct SessionId(u64);

/// All sessions, by id, and their tokens.
pub(crate) struct Sessions {
    policy: ResumePolicy,
    tokens: Mutex<TokenStore<SessionId>>,
    map: Mutex<HashMap<SessionId, Arc<SessionState>>>,
    /// Per session, the token a resume replaced (by SHA-256 digest) and its successor: the
    /// replaced token stays valid until the successor is used, so a Welcome lost to a cut does
    /// not lose the session (spec §3.7 rule 5).
    grace: Mutex<Grace>,
    next: AtomicU64,
}

#[derive(Default)]
struct Grace {
    by_session: HashMap<SessionId, ([u8; 32], SessionToken)>,
    by_digest: HashMap<[u8; 32], SessionId>,
}

impl Grace {
    fn forget(&mut self, id: SessionId) -> Option<SessionToken> {
        let (digest, successor) = self.by_session.remove(&id)?;
        self.by_digest.remove(&digest);
        Some(successor)
    }
}

fn digest(token: &SessionToken) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(token.as_bytes()).into()
}

impl Sessions {
    pub(crate) fn new(policy: ResumePolicy) -> Option<Self> {
        let tokens = TokenStore::new(policy.ttl, policy.max_sessions).ok()?;
        Some(Self {
            policy,
            tokens: Mutex::new(tokens),
            map: Mutex::new(HashMap::new()),
            grace: Mutex::new(Grace::default()),
            next: AtomicU64::new(0),
        })
    }

    pub(crate) fn policy(&self) -> ResumePolicy {
        self.policy
    }

    fn map(&self) -> MutexGuard<'_, HashMap<SessionId, Arc<SessionState>>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn tokens(&self) -> MutexGuard<'_, TokenStore<SessionId>> {
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new session and its first token. `None` if the session table is full of live
    /// sessions (the connection then runs without resumption).
    pub(crate) fn create(
        &self,
        now: Instant,
    ) -> Option<(SessionId, Arc<SessionState>, SessionToken)> {
        let mut map = self.map();
        if map.len() >= self.policy.max_sessions {
            map.retain(|_, s| !s.expired(now));
            if map.len() >= self.policy.max_sessions {
                return None;
            }
        }
        let id = SessionId(self.next.fetch_add(1, Ordering::Relaxed) + 1);
        let token = self.tokens().issue(id, now).ok()?;
        let state = Arc::new(SessionState::new(self.policy));
        map.insert(id, state.clone());
        Some((id, state, token))
    }

    fn grace(&self) -> MutexGuard<'_, Grace> {
        self.grace.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Redeems a token: the session it resumes and a fresh token for it. The redeemed token
    /// stays valid until the fresh one is used (one predecessor per session).
    pub(crate) fn resume(
        &self,
        token: &SessionToken,
        now: Instant,
    ) -> Option<(SessionId, Arc<SessionState>, SessionToken)> {
        let d = digest(token);
        // Bound first: the store's lock must be released before the arms take it again.
        let redeemed = self.tokens().redeem(token, now);
        let id = match redeemed {
            Ok(id) => {
                // The newest token was used: its predecessor is no longer needed.
                self.grace().forget(id);
                id
            }
            Err(_) => {
                // The predecessor of a token the peer never received (its Welcome was lost).
                let mut grace = self.grace();
                let id = *grace.by_digest.get(&d)?;
                if let Some(successor) = grace.forget(id) {
                    self.tokens().revoke(&successor);
                }
                id
            }
        };
        let state = {
            let mut map = self.map();
            match map.get(&id) {
                Some(s) if !s.expired(now) => s.clone(),
                Some(_) => {
                    map.remove(&id);
                    return None;
                }
                None => return None,
            }
        };
        let fresh = self.tokens().issue(id, now).ok()?;
        let mut grace = self.grace();
        grace.by_digest.insert(d, id);
        grace.by_session.insert(id, (d, fresh.clone()));
        Some((id, state, fresh))
    }

    /// Drops a session for good (e.g. the provisional one a resume replaced).
    pub(crate) fn discard(&self, id: SessionId, token: &SessionToken) {
        self.tokens().revoke(token);
        self.grace().forget(id);
        self.map().remove(&id);
    }

    /// Drops detached sessions past their time to live.
    pub(crate) fn purge(&self, now: Instant) {
        let mut map = self.map();
        map.retain(|_, s| !s.expired(now));
        let mut grace = self.grace();
        let gone: Vec<SessionId> = grace
            .by_session
            .keys()
            .filter(|id| !map.contains_key(id))
            .copied()
            .collect();
        for id in gone {
            grace.forget(id);
        }
        drop((map, grace));
        self.tokens().purge(now);
    }

    pub(crate) fn len(&self) -> usize {
        self.map().len()
    }
}

/// Encodes a token for the wire.
pub(crate) fn welcome(token: &SessionToken, ttl: Duration, resumed: bool) -> Message {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    cypherwire_session::wire::Welcome::new(*token.as_bytes(), ttl_ms, resumed).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(f: impl FnOnce(&mut ResumePolicy)) -> SessionState {
        let mut policy = ResumePolicy {
            response_cache: 3,
            push_buffer: 3,
            ..ResumePolicy::default()
        };
        f(&mut policy);
        SessionState::new(policy)
    }

    fn blob(n: usize) -> Value {
        Value::Bytes(vec![0; n])
    }

    fn seqs(msgs: &[Arc<Message>]) -> Vec<u64> {
        msgs.iter()
            .map(|m| match m.as_ref() {
                Message::Push(p) => p.seq,
                other => panic!("not a push: {other:?}"),
            })
            .collect()
    }

    fn cached_ids(s: &SessionState) -> Vec<u64> {
        let inner = s.lock();
        let mut ids: Vec<u64> = inner.responses.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    fn response_bytes_are_consistent(s: &SessionState) -> bool {
        let inner = s.lock();
        inner.response_bytes == inner.responses.values().map(|(_, sz)| sz).sum::<usize>()
            && inner.response_order.len() == inner.responses.len()
    }

    #[test]
    fn a_replaced_token_stays_valid_until_its_successor_is_used() {
        let sessions = Sessions::new(ResumePolicy::default()).unwrap();
        let now = crate::monotonic();
        let (id, _, t0) = sessions.create(now).unwrap();
        // A resume whose Welcome (carrying t1) is lost: the peer still holds t0.
        let (again, _, t1) = sessions.resume(&t0, now).unwrap();
        assert_eq!(again, id);
        // t0 resumes the same session once more; t1, never delivered, is revoked.
        let (again, _, t2) = sessions.resume(&t0, now).unwrap();
        assert_eq!(again, id);
        assert!(
            sessions.resume(&t1, now).is_none(),
            "the undelivered successor is revoked"
        );
        // Using t2 retires t0 for good.
        let (again, _, t3) = sessions.resume(&t2, now).unwrap();
        assert_eq!(again, id);
        assert!(
            sessions.resume(&t0, now).is_none(),
            "t0 is single-use once t2 was used"
        );
        assert!(
            sessions.resume(&t2, now).is_some(),
            "t2 is now the predecessor of t3"
        );
        assert!(
            sessions.resume(&t3, now).is_none(),
            "t3 was revoked by that resume"
        );
        // Discarding the session forgets its tokens and their predecessors.
        let (other, _, u0) = sessions.create(now).unwrap();
        let (_, _, u1) = sessions.resume(&u0, now).unwrap();
        sessions.discard(other, &u1);
        assert!(sessions.resume(&u0, now).is_none());
        assert!(sessions.resume(&u1, now).is_none());
    }

    #[test]
    fn a_request_runs_once_and_a_resend_gets_the_same_answer() {
        let s = small(|_| {});
        assert!(matches!(s.begin(1), Begin::Run));
        assert!(matches!(s.begin(1), Begin::InProgress));
        let (msg, tx) = s.complete(Response::ok(1, "a"));
        assert!(tx.is_none(), "detached: nowhere to send it");
        match s.begin(1) {
            Begin::Cached(again) => assert!(Arc::ptr_eq(&msg, &again), "shared, not rebuilt"),
            _ => panic!("a finished request must be answered from the cache"),
        }
        assert!(matches!(s.begin(2), Begin::Run));
        s.abandon(2);
        assert!(
            matches!(s.begin(2), Begin::Run),
            "a cancelled request may run again"
        );
    }

    #[test]
    fn the_response_cache_keeps_the_newest_within_its_count() {
        let s = small(|_| {});
        for id in 1..=5 {
            s.begin(id);
            s.complete(Response::ok(id, id));
        }
        assert_eq!(cached_ids(&s), [3, 4, 5]);
        assert!(
            matches!(s.begin(1), Begin::Run),
            "evicted: it would run again"
        );
        assert!(response_bytes_are_consistent(&s));
    }

    #[test]
    fn the_response_cache_keeps_within_its_byte_bound() {
        let s = small(|p| p.response_cache_bytes = 1_000);
        // Each answer counts about 480 bytes (`Response::approx_size`): two fit, three do not.
        for id in 1..=3 {
            s.complete(Response::ok(id, blob(380)));
        }
        assert_eq!(cached_ids(&s), [2, 3]);
        assert!(s.lock().response_bytes <= 1_000);
        assert!(response_bytes_are_consistent(&s));
        // One answer larger than the whole bound is not kept at all.
        s.complete(Response::ok(4, blob(2_000)));
        assert!(!cached_ids(&s).contains(&4));
        assert!(response_bytes_are_consistent(&s));
    }

    #[test]
    fn an_answer_recorded_twice_is_counted_once() {
        let s = small(|_| {});
        s.complete(Response::ok(1, blob(100)));
        let once = s.lock().response_bytes;
        s.complete(Response::ok(1, blob(100)));
        assert_eq!(s.lock().response_bytes, once);
        assert!(response_bytes_are_consistent(&s));
    }

    #[test]
    fn replay_gives_the_pushes_after_the_last_seen_in_order() {
        let s = small(|_| {});
        for i in 0..3 {
            s.push(Value::from(i)).unwrap();
        }
        assert_eq!(seqs(&s.replay_after(0).unwrap()), [1, 2, 3]);
        assert_eq!(seqs(&s.replay_after(2).unwrap()), [3]);
        assert!(s.replay_after(3).unwrap().is_empty());
        assert!(
            s.replay_after(4).is_none(),
            "a client ahead of the server is lying"
        );
    }

    #[test]
    fn replay_fails_once_a_needed_push_left_the_buffer_by_count() {
        let s = small(|_| {});
        for i in 0..5 {
            s.push(Value::from(i)).unwrap();
        }
        assert!(s.replay_after(1).is_none(), "push 2 is gone");
        assert_eq!(seqs(&s.replay_after(2).unwrap()), [3, 4, 5]);
    }

    #[test]
    fn replay_fails_once_a_needed_push_left_the_buffer_by_bytes() {
        let s = small(|p| p.push_buffer_bytes = 1_000);
        s.push(blob(600)).unwrap();
        s.push(blob(600)).unwrap();
        assert!(s.lock().replay_bytes <= 1_000);
        assert!(s.replay_after(0).is_none());
        assert_eq!(seqs(&s.replay_after(1).unwrap()), [2]);
        // A push larger than the whole bound is not kept: nobody behind it can resume.
        s.push(blob(2_000)).unwrap();
        assert!(s.replay_after(2).is_none());
        assert!(s.replay_after(3).unwrap().is_empty());
        assert_eq!(s.lock().replay_bytes, 0);
    }

    #[test]
    fn a_full_outbox_is_a_slow_consumer_and_the_push_is_still_kept() {
        let s = small(|_| {});
        let (tx, mut rx) = mpsc::channel(1);
        assert_eq!(s.attach(ConnectionId(7), tx), None);
        s.push(Value::from(1)).unwrap();
        assert_eq!(
            s.push(Value::from(2)),
            Err(PushFailure::SlowConsumer(ConnectionId(7)))
        );
        assert_eq!(seqs(&s.replay_after(0).unwrap()), [1, 2]);
        match rx.try_recv() {
            Ok(Outgoing::Shared(m)) => assert_eq!(seqs(&[m]), [1]),
            _ => panic!("push 1 must be queued"),
        }
    }

    #[test]
    fn attaching_reports_the_connection_replaced_and_detaching_starts_the_clock() {
        let s = small(|p| p.ttl = Duration::from_secs(10));
        let (tx, _rx) = mpsc::channel(4);
        assert_eq!(s.attach(ConnectionId(1), tx.clone()), None);
        assert_eq!(s.attach(ConnectionId(2), tx.clone()), Some(ConnectionId(1)));
        assert_eq!(s.attach(ConnectionId(2), tx), None, "same connection again");
        let now = tokio::time::Instant::now().into_std();
        s.detach(ConnectionId(1), now);
        assert!(
            s.complete(Response::ok(1, ())).1.is_some(),
            "a stale detach is ignored"
        );
        s.detach(ConnectionId(2), now);
        assert!(s.complete(Response::ok(2, ())).1.is_none());
        assert!(!s.expired(now + Duration::from_secs(9)));
        assert!(s.expired(now + Duration::from_secs(10)));
    }
}
