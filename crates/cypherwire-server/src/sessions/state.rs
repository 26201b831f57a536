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

/// Identifies a session (internal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SessionId(pub(super) u64);

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

    /// Forgets a request that will never be answered (cancelled).
    pub(crate) fn abandon(&self, id: u64) {
        self.lock().running.remove(&id);
    }
}
