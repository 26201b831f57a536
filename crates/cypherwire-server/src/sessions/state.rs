//! One session's state, without I/O: the push numbering and replay buffer, the response
//! cache that keeps a resent request from running twice, and the connection attached to it
//! (through [`Attachment`], which the server fills with the connection's outbox).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use cypherwire_session::fasthash::FastState;
use cypherwire_wire::{Message, Push, Response, Value};

use super::policy::ResumePolicy;
use crate::id::ConnectionId;

/// Where a session's pushes go while a connection is attached to it: queued without waiting.
pub(crate) trait Attachment: Clone {
    /// Queues `msg`, or says why not.
    ///
    /// # Errors
    /// [`Refused::Full`] when the connection does not read fast enough, [`Refused::Closed`]
    /// when it is gone.
    fn offer(&self, msg: Arc<Message>) -> Result<(), Refused>;
}

/// Why a message could not be queued without waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The outbox is full: the connection does not read fast enough.
    Full,
    /// The connection's writer is gone.
    Closed,
}

pub(crate) use crate::id::SessionId;

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

pub(super) struct Inner<A> {
    pub(super) attached: Option<(ConnectionId, A)>,
    pub(super) push_seq: u64,
    /// (sequence number, the push as sent, its approximate size): shared with the outbox, so a
    /// push is built once.
    pub(super) replay: VecDeque<(u64, Arc<Message>, usize)>,
    pub(super) replay_bytes: usize,
    pub(super) responses: HashMap<u64, (Arc<Message>, usize), FastState>,
    pub(super) response_order: VecDeque<u64>,
    pub(super) response_bytes: usize,
    pub(super) running: HashSet<u64, FastState>,
}

/// What a session hands to another instance (a resume that landed there): its push numbering,
/// the pushes a peer that saw `after` still needs, the response cache and the requests still
/// running here.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Snapshot {
    pub(crate) push_seq: u64,
    /// (sequence number, the push), oldest first.
    pub(crate) replay: Vec<(u64, Arc<Message>)>,
    /// (request id, the response), oldest first.
    pub(crate) responses: Vec<(u64, Arc<Message>)>,
    pub(crate) running: Vec<u64>,
}

/// One session's state.
pub(crate) struct SessionState<A> {
    pub(super) id: SessionId,
    inner: Mutex<Inner<A>>,
    policy: ResumePolicy,
}

impl<A: Attachment> SessionState<A> {
    pub(super) fn new(id: SessionId, policy: ResumePolicy) -> Self {
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

    /// A session continuing `snapshot` (taken on another instance).
    pub(super) fn restore(id: SessionId, policy: ResumePolicy, snapshot: Snapshot) -> Self {
        let state = Self::new(id, policy);
        {
            let mut s = state.lock();
            s.push_seq = snapshot.push_seq;
            for (seq, msg) in snapshot.replay {
                let size = msg.approx_size();
                s.replay_bytes += size;
                s.replay.push_back((seq, msg, size));
            }
            for (rid, msg) in snapshot.responses {
                let size = msg.approx_size();
                s.response_bytes += size;
                if s.responses.insert(rid, (msg, size)).is_none() {
                    s.response_order.push_back(rid);
                }
            }
            s.running.extend(snapshot.running);
        }
        state
    }

    /// Hands the session over: its snapshot for a peer that saw pushes up to `after` (`None`
    /// if some it needs are gone), and, in the same step, `conn` (reached through `outbox`)
    /// takes the place of the attached connection, which is returned.
    pub(crate) fn hand_over(
        &self,
        after: u64,
        conn: ConnectionId,
        outbox: A,
    ) -> Option<(Snapshot, Option<ConnectionId>)> {
        let mut s = self.lock();
        let first_kept = s.replay.front().map_or(s.push_seq + 1, |(seq, _, _)| *seq);
        if after > s.push_seq || after + 1 < first_kept {
            return None;
        }
        let snapshot = Snapshot {
            push_seq: s.push_seq,
            replay: s
                .replay
                .iter()
                .filter(|(seq, _, _)| *seq > after)
                .map(|(seq, m, _)| (*seq, m.clone()))
                .collect(),
            responses: s
                .response_order
                .iter()
                .filter_map(|id| s.responses.get(id).map(|(m, _)| (*id, m.clone())))
                .collect(),
            running: s.running.iter().copied().collect(),
        };
        let previous = s
            .attached
            .replace((conn, outbox))
            .map(|(old, _)| old)
            .filter(|old| *old != conn);
        Some((snapshot, previous))
    }

    /// The connection attached now, if any.
    pub(crate) fn attached(&self) -> Option<ConnectionId> {
        self.lock().attached.as_ref().map(|(c, _)| *c)
    }

    /// Whether requests of this session are still running.
    pub(crate) fn has_running(&self) -> bool {
        !self.lock().running.is_empty()
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner<A>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The session's id.
    pub(crate) fn id(&self) -> SessionId {
        self.id
    }

    pub(crate) fn attach(&self, conn: ConnectionId, outbox: A) -> Option<ConnectionId> {
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
            Some((conn, tx)) => match tx.offer(msg) {
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
    pub(crate) fn complete(&self, resp: Response) -> (Arc<Message>, Option<A>) {
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

    /// Forgets every running request (they will never be answered here: their old instance
    /// is gone, so a resend runs them again).
    pub(crate) fn abandon_all(&self) {
        self.lock().running.clear();
    }

    /// Forgets a request that will never be answered (cancelled).
    pub(crate) fn abandon(&self, id: u64) {
        self.lock().running.remove(&id);
    }
}
