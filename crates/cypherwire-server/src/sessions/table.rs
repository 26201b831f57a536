//! All sessions of a server and their resumption tokens, under one lock.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use cypherwire_session::{PublicKey, SessionToken, SourceKey};
use cypherwire_wire::Message;

use super::policy::ResumePolicy;
use super::state::{Attachment, SessionId, SessionState, Snapshot};
use crate::id::ConnectionId;

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
pub(super) type Digest = [u8; 32];

pub(super) fn digest(token: &SessionToken) -> Digest {
    use sha2::Digest as _;
    sha2::Sha256::digest(token.as_bytes()).into()
}

struct Slot<A> {
    state: Arc<SessionState<A>>,
    origin: Origin,
    /// The newest token's digest.
    current: Digest,
    /// The token the last resume replaced, and until when it is valid.
    predecessor: Option<(Digest, Instant)>,
    /// When the session's last connection ended (`None` while attached).
    detached_at: Option<Instant>,
}

#[derive(Clone, Copy)]
pub(super) enum TokenRef {
    Current(SessionId),
    Predecessor(SessionId),
}

pub(super) struct Table<A> {
    slots: HashMap<SessionId, Slot<A>>,
    pub(super) tokens: HashMap<Digest, TokenRef>,
    /// Detached sessions, longest detached first.
    detached: BTreeSet<(Instant, SessionId)>,
    /// Per source: its sessions' count and its detached sessions, longest detached first.
    sources: HashMap<SourceKey, (usize, BTreeSet<(Instant, SessionId)>)>,
    next: u64,
}

impl<A> Default for Table<A> {
    fn default() -> Self {
        Self {
            slots: HashMap::new(),
            tokens: HashMap::new(),
            detached: BTreeSet::new(),
            sources: HashMap::new(),
            next: 0,
        }
    }
}

impl<A> Table<A> {
    fn expired(slot: &Slot<A>, ttl: Duration, now: Instant) -> bool {
        slot.detached_at
            .is_some_and(|at| now.saturating_duration_since(at) >= ttl)
    }

    fn remove(&mut self, id: SessionId) -> Option<Slot<A>> {
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

    /// Keeps a new session (attached) under its first token.
    fn insert(&mut self, state: &Arc<SessionState<A>>, origin: &Origin, token: &SessionToken) {
        let id = state.id;
        let d = digest(token);
        self.tokens.insert(d, TokenRef::Current(id));
        self.slots.insert(
            id,
            Slot {
                state: state.clone(),
                origin: *origin,
                current: d,
                predecessor: None,
                detached_at: None,
            },
        );
        self.sources.entry(origin.source).or_default().0 += 1;
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
pub(crate) struct Sessions<A> {
    policy: ResumePolicy,
    table: Mutex<Table<A>>,
    /// The node id the first three bytes of every token carry (0: a server outside a cluster,
    /// whose tokens are random throughout).
    node: u32,
}

impl<A: Attachment> Sessions<A> {
    pub(crate) fn new(policy: ResumePolicy) -> Option<Self> {
        if policy.ttl.is_zero() || policy.max_sessions == 0 || policy.max_sessions_per_source == 0 {
            return None;
        }
        Some(Self {
            policy,
            table: Mutex::new(Table::default()),
            node: 0,
        })
    }

    /// Tokens name `node` (in a cluster: a resume that lands on another instance finds the
    /// session's owner from the token alone).
    pub(crate) fn with_node(mut self, node: u32) -> Self {
        self.node = node;
        self
    }

    /// A fresh token: 16 random bytes, the first three replaced by the node id in a cluster
    /// (104 random bits remain).
    fn mint(&self) -> Option<SessionToken> {
        let token = SessionToken::generate().ok()?;
        if self.node == 0 {
            return Some(token);
        }
        let mut bytes = *token.as_bytes();
        bytes[..3].copy_from_slice(&self.node.to_be_bytes()[1..]);
        Some(SessionToken::from_bytes(bytes))
    }

    /// The node a token names (0 for a token of a server outside a cluster, or of another
    /// kind).
    pub(crate) fn token_node(token: &SessionToken) -> u32 {
        let b = token.as_bytes();
        u32::from_be_bytes([0, b[0], b[1], b[2]])
    }

    /// Installs a session handed over by another instance, for a connection from `origin`;
    /// its id and fresh token.
    pub(crate) fn import(
        &self,
        origin: &Origin,
        snapshot: Snapshot,
    ) -> Option<(SessionId, Arc<SessionState<A>>, SessionToken)> {
        let token = self.mint()?;
        let mut t = self.table();
        if !t.make_room(origin.source, &self.policy) {
            return None;
        }
        t.next += 1;
        let id = SessionId(t.next);
        let state = Arc::new(SessionState::restore(id, self.policy, snapshot));
        t.insert(&state, origin, &token);
        Some((id, state, token))
    }

    pub(crate) fn policy(&self) -> ResumePolicy {
        self.policy
    }

    pub(super) fn table(&self) -> MutexGuard<'_, Table<A>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new session and its first token. If every session that could make room is attached,
    /// the session is not kept: the connection runs without resumption (its token resumes
    /// nothing). `None` only if the system's random generator fails.
    pub(crate) fn create(
        &self,
        origin: &Origin,
    ) -> Option<(SessionId, Arc<SessionState<A>>, SessionToken)> {
        let token = self.mint()?;
        let mut t = self.table();
        t.next += 1;
        let id = SessionId(t.next);
        let state = Arc::new(SessionState::new(id, self.policy));
        if t.make_room(origin.source, &self.policy) {
            t.insert(&state, origin, &token);
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
    ) -> Option<(SessionId, Arc<SessionState<A>>, SessionToken)> {
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
        let fresh = self.mint()?;
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
        state: &SessionState<A>,
        conn: ConnectionId,
        outbox: A,
    ) -> Option<ConnectionId> {
        let mut t = self.table();
        t.set_detached(state.id, None);
        state.attach(conn, outbox)
    }

    /// Detaches `conn` from a session if it is attached there; the session's time to live
    /// starts now.
    /// [`SessionState::hand_over`], with the table's note that the session is attached.
    pub(crate) fn hand_over(
        &self,
        state: &SessionState<A>,
        after: u64,
        conn: ConnectionId,
        outbox: A,
    ) -> Option<(Snapshot, Option<ConnectionId>)> {
        let mut t = self.table();
        let handed = state.hand_over(after, conn, outbox)?;
        t.set_detached(state.id, None);
        Some(handed)
    }

    pub(crate) fn detach(&self, state: &SessionState<A>, conn: ConnectionId, now: Instant) {
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
    pub(super) fn tokens(&self) -> usize {
        self.table().tokens.len()
    }
}

/// Encodes a token for the wire.
pub(crate) fn welcome(token: &SessionToken, ttl: Duration, resumed: bool) -> Message {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    cypherwire_wire::Welcome::new(*token.as_bytes(), ttl_ms, resumed).into()
}
