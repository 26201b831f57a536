//! Sessions that outlive connections: resumption tokens, the response cache that keeps a
//! resent request from running twice, and the push replay buffer (`docs/protocol.md` §3.7).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use cypherwire_session::fasthash::FastState;
use cypherwire_session::token::SessionToken;
use cypherwire_session::wire::{Message, Push, Response, Value};
use cypherwire_session::{PublicKey, SourceKey};

use crate::id::ConnectionId;
use crate::outgoing::{Outbox, Outgoing, Refused};

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
/// | `max_sessions_per_source`: of those, from one source (an IPv4 address or IPv6 /64) | 512 |
/// | `predecessor_ttl`: how long a token replaced by a resume stays valid | 10 s |
///
/// A session's time to live counts from when its last connection ended: a session stays
/// resumable however long its connection lived. When the table (or a source's share of it) is
/// full, the session detached longest ago makes room; only if every session is attached does a
/// new connection run without resumption (its token resumes nothing).
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
    /// Sessions kept at once for one source; its oldest detached session makes room.
    pub max_sessions_per_source: usize,
    /// How long the token a resume replaced stays valid, in case the Welcome carrying its
    /// successor was lost (`docs/protocol.md` §3.7 rule 5). If the resumed connection ends
    /// within this time, the predecessor stays valid for the session's `ttl` from then.
    pub predecessor_ttl: Duration,
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
            max_sessions_per_source: 512,
            predecessor_ttl: Duration::from_secs(10),
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
    attached: Option<(ConnectionId, Outbox)>,
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
    id: SessionId,
    inner: Mutex<Inner>,
    policy: ResumePolicy,
}

impl SessionState {
    fn new(id: SessionId, policy: ResumePolicy) -> Self {
        Self {
            id,
            inner: Mutex::new(Inner {
                attached: None,
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

    pub(crate) fn attach(&self, conn: ConnectionId, outbox: Outbox) -> Option<ConnectionId> {
        let mut s = self.lock();
        s.attached
            .replace((conn, outbox))
            .map(|(old, _)| old)
            .filter(|old| *old != conn)
    }

    /// Detaches `conn` if it is the attached connection; returns whether it was.
    pub(crate) fn detach(&self, conn: ConnectionId) -> bool {
        let mut s = self.lock();
        if s.attached.as_ref().is_some_and(|(c, _)| *c == conn) {
            s.attached = None;
            return true;
        }
        false
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
                Ok(()) | Err(Refused::Closed) => Ok(()),
                Err(Refused::Full) => Err(PushFailure::SlowConsumer(*conn)),
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
    pub(crate) fn complete(&self, resp: Response) -> (Arc<Message>, Option<Outbox>) {
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SessionId(u64);

/// Who opened a session: a resume must come from the same principal, and quotas are per
/// source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Origin {
    /// Where the connection came from (the ban policy's source key).
    pub(crate) source: SourceKey,
    /// The peer's authenticated key in identity mode. In PSK and password modes everyone who
    /// holds the credential is one principal, so this is `None` for all of them.
    pub(crate) identity: Option<PublicKey>,
}

/// A token as the table knows it: by SHA-256 digest only (the secret itself is never kept).
type Digest = [u8; 32];

fn digest(token: &SessionToken) -> Digest {
    use sha2::Digest as _;
    sha2::Sha256::digest(token.as_bytes()).into()
}

struct Slot {
    state: Arc<SessionState>,
    origin: Origin,
    /// The newest token's digest.
    current: Digest,
    /// The token the last resume replaced, and until when it is valid.
    predecessor: Option<(Digest, Instant)>,
    /// When the session's last connection ended (`None` while attached).
    detached_at: Option<Instant>,
}

#[derive(Clone, Copy)]
enum TokenRef {
    Current(SessionId),
    Predecessor(SessionId),
}

#[derive(Default)]
struct Table {
    slots: HashMap<SessionId, Slot>,
    tokens: HashMap<Digest, TokenRef>,
    /// Detached sessions, longest detached first.
    detached: BTreeSet<(Instant, SessionId)>,
    /// Per source: its sessions' count and its detached sessions, longest detached first.
    sources: HashMap<SourceKey, (usize, BTreeSet<(Instant, SessionId)>)>,
    next: u64,
}

impl Table {
    fn expired(slot: &Slot, ttl: Duration, now: Instant) -> bool {
        slot.detached_at
            .is_some_and(|at| now.saturating_duration_since(at) >= ttl)
    }

    fn remove(&mut self, id: SessionId) -> Option<Slot> {
        let slot = self.slots.remove(&id)?;
        self.tokens.remove(&slot.current);
        if let Some((d, _)) = slot.predecessor {
            self.tokens.remove(&d);
        }
        if let Some(at) = slot.detached_at {
            self.detached.remove(&(at, id));
        }
        if let Some((count, detached)) = self.sources.get_mut(&slot.origin.source) {
            *count -= 1;
            if let Some(at) = slot.detached_at {
                detached.remove(&(at, id));
            }
            if *count == 0 {
                self.sources.remove(&slot.origin.source);
            }
        }
        Some(slot)
    }

    /// Makes room for one more session of `source`: drops its oldest detached session if it is
    /// at its quota, then the oldest detached session of all if the table is full. False if
    /// room could not be made (every session concerned is attached).
    fn make_room(&mut self, source: SourceKey, policy: &ResumePolicy) -> bool {
        if let Some((count, detached)) = self.sources.get(&source)
            && *count >= policy.max_sessions_per_source
        {
            let Some(&(_, victim)) = detached.first() else {
                return false;
            };
            self.remove(victim);
        }
        if self.slots.len() >= policy.max_sessions {
            let Some(&(_, victim)) = self.detached.first() else {
                return false;
            };
            self.remove(victim);
        }
        true
    }

    fn set_detached(&mut self, id: SessionId, at: Option<Instant>) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        let old = std::mem::replace(&mut slot.detached_at, at);
        let Some((_, per_source)) = self.sources.get_mut(&slot.origin.source) else {
            return;
        };
        if let Some(old) = old {
            self.detached.remove(&(old, id));
            per_source.remove(&(old, id));
        }
        if let Some(at) = at {
            self.detached.insert((at, id));
            per_source.insert((at, id));
        }
    }
}

/// All sessions, by id, and their tokens: one table under one lock, so that creating,
/// resuming, detaching and expiring a session are each atomic.
pub(crate) struct Sessions {
    policy: ResumePolicy,
    table: Mutex<Table>,
}

impl Sessions {
    pub(crate) fn new(policy: ResumePolicy) -> Option<Self> {
        if policy.ttl.is_zero() || policy.max_sessions == 0 || policy.max_sessions_per_source == 0 {
            return None;
        }
        Some(Self {
            policy,
            table: Mutex::new(Table::default()),
        })
    }

    pub(crate) fn policy(&self) -> ResumePolicy {
        self.policy
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new session and its first token. If every session that could make room is attached,
    /// the session is not kept: the connection runs without resumption (its token resumes
    /// nothing). `None` only if the system's random generator fails.
    pub(crate) fn create(
        &self,
        origin: &Origin,
    ) -> Option<(SessionId, Arc<SessionState>, SessionToken)> {
        let token = SessionToken::generate().ok()?;
        let mut t = self.table();
        t.next += 1;
        let id = SessionId(t.next);
        let state = Arc::new(SessionState::new(id, self.policy));
        if t.make_room(origin.source, &self.policy) {
            let d = digest(&token);
            t.tokens.insert(d, TokenRef::Current(id));
            t.slots.insert(
                id,
                Slot {
                    state: state.clone(),
                    origin: *origin,
                    current: d,
                    predecessor: None,
                    detached_at: None,
                },
            );
            t.sources.entry(origin.source).or_default().0 += 1;
        }
        Some((id, state, token))
    }

    /// Redeems a token presented by `origin`: the session it resumes and a fresh token for it.
    /// The redeemed token stays valid as the predecessor for
    /// [`predecessor_ttl`](ResumePolicy::predecessor_ttl) (one predecessor per session). A
    /// token of a session opened by another principal resumes nothing and is not used up.
    pub(crate) fn resume(
        &self,
        token: &SessionToken,
        origin: &Origin,
        now: Instant,
    ) -> Option<(SessionId, Arc<SessionState>, SessionToken)> {
        let d = digest(token);
        let ttl = self.policy.ttl;
        let mut t = self.table();
        let (id, was_current) = match *t.tokens.get(&d)? {
            TokenRef::Current(id) => (id, true),
            TokenRef::Predecessor(id) => (id, false),
        };
        let slot = t.slots.get(&id)?;
        if Table::expired(slot, ttl, now) {
            t.remove(id);
            return None;
        }
        if !was_current && slot.predecessor.is_none_or(|(_, until)| now >= until) {
            t.tokens.remove(&d);
            if let Some(slot) = t.slots.get_mut(&id) {
                slot.predecessor = None;
            }
            return None;
        }
        if slot.origin.identity != origin.identity {
            return None;
        }
        let fresh = SessionToken::generate().ok()?;
        let fd = digest(&fresh);
        let slot = t.slots.get_mut(&id)?;
        let replaced = std::mem::replace(&mut slot.current, fd);
        let old_predecessor = slot
            .predecessor
            .replace((d, now + self.policy.predecessor_ttl.min(ttl)));
        let state = slot.state.clone();
        if was_current {
            // The newest token was used: its predecessor is no longer needed.
            if let Some((old, _)) = old_predecessor {
                t.tokens.remove(&old);
            }
        } else {
            // The predecessor of a token the peer never received (its Welcome was lost): that
            // successor is revoked.
            t.tokens.remove(&replaced);
        }
        t.tokens.insert(d, TokenRef::Predecessor(id));
        t.tokens.insert(fd, TokenRef::Current(id));
        Some((id, state, fresh))
    }

    /// Attaches a connection to a session; returns the connection it replaced.
    pub(crate) fn attach(
        &self,
        state: &SessionState,
        conn: ConnectionId,
        outbox: Outbox,
    ) -> Option<ConnectionId> {
        let mut t = self.table();
        t.set_detached(state.id, None);
        state.attach(conn, outbox)
    }

    /// Detaches `conn` from a session if it is attached there; the session's time to live
    /// starts now.
    pub(crate) fn detach(&self, state: &SessionState, conn: ConnectionId, now: Instant) {
        let id = state.id;
        let mut t = self.table();
        if !state.detach(conn) {
            return;
        }
        t.set_detached(id, Some(now));
        let ttl = self.policy.ttl;
        if let Some(slot) = t.slots.get_mut(&id)
            && let Some((_, until)) = &mut slot.predecessor
            && now < *until
        {
            // The connection a resume welcomed ended soon after: the Welcome may be lost, so
            // the predecessor lives as long as the session.
            *until = now + ttl;
        }
    }

    /// Drops a session for good (e.g. the provisional one a resume replaced).
    pub(crate) fn discard(&self, id: SessionId) {
        self.table().remove(id);
    }

    /// Drops detached sessions past their time to live, and expired predecessors.
    pub(crate) fn purge(&self, now: Instant) {
        let ttl = self.policy.ttl;
        let mut t = self.table();
        while let Some(&(at, id)) = t.detached.first() {
            if now.saturating_duration_since(at) < ttl {
                break;
            }
            t.remove(id);
        }
        let stale: Vec<(SessionId, Digest)> = t
            .slots
            .iter()
            .filter_map(|(id, s)| match s.predecessor {
                Some((d, until)) if now >= until => Some((*id, d)),
                _ => None,
            })
            .collect();
        for (id, d) in stale {
            t.tokens.remove(&d);
            if let Some(s) = t.slots.get_mut(&id) {
                s.predecessor = None;
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.table().slots.len()
    }

    /// Live tokens (current and predecessors), for tests.
    #[cfg(test)]
    fn tokens(&self) -> usize {
        self.table().tokens.len()
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

    fn origin() -> Origin {
        Origin {
            source: SourceKey::new([127, 0, 0, 1].into(), 64),
            identity: None,
        }
    }

    fn now() -> Instant {
        crate::clock::monotonic()
    }

    fn small(f: impl FnOnce(&mut ResumePolicy)) -> SessionState {
        let mut policy = ResumePolicy {
            response_cache: 3,
            push_buffer: 3,
            ..ResumePolicy::default()
        };
        f(&mut policy);
        SessionState::new(SessionId(0), policy)
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
        let now = crate::clock::monotonic();
        let (id, _, t0) = sessions.create(&origin()).unwrap();
        // A resume whose Welcome (carrying t1) is lost: the peer still holds t0.
        let (again, _, t1) = sessions.resume(&t0, &origin(), now).unwrap();
        assert_eq!(again, id);
        // t0 resumes the same session once more; t1, never delivered, is revoked.
        let (again, _, t2) = sessions.resume(&t0, &origin(), now).unwrap();
        assert_eq!(again, id);
        assert!(
            sessions.resume(&t1, &origin(), now).is_none(),
            "the undelivered successor is revoked"
        );
        // Using t2 retires t0 for good.
        let (again, _, t3) = sessions.resume(&t2, &origin(), now).unwrap();
        assert_eq!(again, id);
        assert!(
            sessions.resume(&t0, &origin(), now).is_none(),
            "t0 is single-use once t2 was used"
        );
        assert!(
            sessions.resume(&t2, &origin(), now).is_some(),
            "t2 is now the predecessor of t3"
        );
        assert!(
            sessions.resume(&t3, &origin(), now).is_none(),
            "t3 was revoked by that resume"
        );
        // Discarding the session forgets its tokens and their predecessors.
        let (other, _, u0) = sessions.create(&origin()).unwrap();
        let (_, _, u1) = sessions.resume(&u0, &origin(), now).unwrap();
        sessions.discard(other);
        assert!(sessions.resume(&u0, &origin(), now).is_none());
        assert!(sessions.resume(&u1, &origin(), now).is_none());
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
        let (tx, mut rx) = Outbox::new(1);
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
        let (tx, _rx) = Outbox::new(4);
        assert_eq!(s.attach(ConnectionId(1), tx.clone()), None);
        assert_eq!(s.attach(ConnectionId(2), tx.clone()), Some(ConnectionId(1)));
        assert_eq!(s.attach(ConnectionId(2), tx), None, "same connection again");
        s.detach(ConnectionId(1));
        assert!(
            s.complete(Response::ok(1, ())).1.is_some(),
            "a stale detach is ignored"
        );
        s.detach(ConnectionId(2));
        assert!(s.complete(Response::ok(2, ())).1.is_none());
    }

    fn policy(f: impl FnOnce(&mut ResumePolicy)) -> Sessions {
        let mut p = ResumePolicy::default();
        f(&mut p);
        Sessions::new(p).unwrap()
    }

    fn attached(
        sessions: &Sessions,
        origin: &Origin,
        conn: u64,
    ) -> (SessionId, Arc<SessionState>, SessionToken) {
        let (id, state, token) = sessions.create(origin).unwrap();
        let (tx, _rx) = Outbox::new(1);
        sessions.attach(&state, ConnectionId(conn), tx);
        (id, state, token)
    }

    /// Finding: the time to live counted from issue, so a connection older than it could not
    /// resume, while the predecessor of a resumed session never expired while attached.
    #[test]
    fn the_time_to_live_counts_from_the_end_of_the_connection() {
        let sessions = policy(|p| p.ttl = Duration::from_secs(2));
        let o = origin();
        let t0 = now();
        let (id, state, token) = attached(&sessions, &o, 1);
        // The connection lives 5 s, three times the TTL, then drops.
        let cut = t0 + Duration::from_secs(5);
        sessions.detach(&state, ConnectionId(1), cut);
        let at = cut + Duration::from_millis(1_900);
        let (again, state, fresh) = sessions
            .resume(&token, &o, at)
            .expect("resumable after a long connection");
        assert_eq!(again, id);
        // Attached again and living 5 s: the old, redeemed token does not outlive its own TTL.
        let (tx, _rx) = Outbox::new(1);
        sessions.attach(&state, ConnectionId(2), tx);
        let later = at + Duration::from_secs(5);
        assert!(
            sessions.resume(&token, &o, later).is_none(),
            "predecessor expired"
        );
        sessions.purge(later);
        assert_eq!(sessions.tokens(), 1);
        // The current token still resumes, and a detached session expires TTL after the cut.
        sessions.detach(&state, ConnectionId(2), later);
        assert!(
            sessions
                .resume(&fresh, &o, later + Duration::from_secs(2))
                .is_none()
        );
        assert_eq!(sessions.len(), 0, "expired sessions are dropped");
    }

    /// A Welcome lost to a cut right after a resume: the predecessor stays valid for the
    /// session's TTL from the cut.
    #[test]
    fn a_predecessor_outlives_a_connection_cut_soon_after_the_resume() {
        let sessions = policy(|p| p.ttl = Duration::from_secs(30));
        let o = origin();
        let t0 = now();
        let (_, state, token) = attached(&sessions, &o, 1);
        sessions.detach(&state, ConnectionId(1), t0);
        let (_, state, _lost) = sessions.resume(&token, &o, t0).unwrap();
        let (tx, _rx) = Outbox::new(1);
        sessions.attach(&state, ConnectionId(2), tx);
        sessions.detach(&state, ConnectionId(2), t0 + Duration::from_secs(1));
        let back = t0 + Duration::from_secs(25);
        assert!(sessions.resume(&token, &o, back).is_some());
    }

    /// Finding: in identity mode, Bob resumed Alice's session with her token.
    #[test]
    fn a_token_resumes_only_a_session_of_the_same_principal() {
        let sessions = policy(|_| {});
        let key = |b: u8| {
            let k = cypherwire_session::IdentityKey::from_private([b; 32]).unwrap();
            Some(k.public())
        };
        let alice = Origin {
            identity: key(1),
            ..origin()
        };
        let bob = Origin {
            identity: key(2),
            ..origin()
        };
        let t0 = now();
        let (_, state, token) = attached(&sessions, &alice, 1);
        sessions.detach(&state, ConnectionId(1), t0);
        assert!(sessions.resume(&token, &bob, t0).is_none());
        assert!(
            sessions.resume(&token, &origin(), t0).is_none(),
            "nor without an identity"
        );
        assert!(
            sessions.resume(&token, &alice, t0).is_some(),
            "not used up by the refusals"
        );
    }

    /// Finding: connect-and-drop cycles from one source filled the table and the next client
    /// was refused. A source has a quota, and the longest detached session makes room.
    #[test]
    fn one_source_cannot_fill_the_table() {
        let sessions = policy(|p| {
            p.max_sessions = 10;
            p.max_sessions_per_source = 3;
        });
        let flood = origin();
        let t0 = now();
        for i in 0..1_000 {
            let (_, state, _) = attached(&sessions, &flood, i);
            sessions.detach(&state, ConnectionId(i), t0 + Duration::from_millis(i));
        }
        assert_eq!(sessions.len(), 3);
        let other = |n: u8| Origin {
            source: SourceKey::new([10, 0, 0, n].into(), 64),
            identity: None,
        };
        let mut tokens = Vec::new();
        for n in 0..10u8 {
            let (id, state, token) = attached(&sessions, &other(n), 5_000 + u64::from(n));
            tokens.push((id, state, token));
        }
        assert_eq!(
            sessions.len(),
            10,
            "the flood's detached sessions made room"
        );
        // All ten attached: an eleventh runs without resumption instead of being refused.
        let (_, _, unkept) = sessions.create(&other(99)).unwrap();
        assert_eq!(sessions.len(), 10);
        assert!(sessions.resume(&unkept, &other(99), t0).is_none());
        // The attached sessions' tokens still resume (each replaces its connection).
        for (n, (id, _, token)) in tokens.iter().enumerate() {
            let n = u8::try_from(n).unwrap();
            assert_eq!(
                sessions.resume(token, &other(n), t0).map(|r| r.0),
                Some(*id)
            );
        }
    }

    /// Concurrent resumes of one session leave exactly one current token and one predecessor.
    #[test]
    fn concurrent_resumes_leave_one_live_token() {
        for _ in 0..200 {
            let sessions = Arc::new(policy(|_| {}));
            let o = origin();
            let (_, state, token) = attached(&sessions, &o, 1);
            sessions.detach(&state, ConnectionId(1), now());
            let barrier = Arc::new(std::sync::Barrier::new(4));
            #[allow(
                clippy::needless_collect,
                reason = "every thread starts before any is joined"
            )]
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let (sessions, barrier, token) =
                        (sessions.clone(), barrier.clone(), token.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        sessions.resume(&token, &o, now()).map(|r| r.2)
                    })
                })
                .collect();
            let fresh: Vec<SessionToken> = handles
                .into_iter()
                .filter_map(|h| h.join().unwrap())
                .collect();
            assert!(!fresh.is_empty());
            assert_eq!(
                sessions.tokens(),
                2,
                "one current token and one predecessor"
            );
            let live = fresh
                .iter()
                .filter(|t| sessions.table().tokens.contains_key(&digest(t)))
                .count();
            assert_eq!(live, 1);
        }
    }

    #[test]
    fn a_policy_with_a_zero_bound_is_refused() {
        for zero in [
            |p: &mut ResumePolicy| p.ttl = Duration::ZERO,
            |p: &mut ResumePolicy| p.max_sessions = 0,
            |p: &mut ResumePolicy| p.max_sessions_per_source = 0,
        ] {
            let mut p = ResumePolicy::default();
            zero(&mut p);
            assert!(Sessions::new(p).is_none());
        }
        assert!(Sessions::new(ResumePolicy::default()).is_some());
    }
}
