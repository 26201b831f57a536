//! Session and table rules, driven with a test attachment (a bounded queue) and given times.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cypherwire_session::{SessionToken, SourceKey};
use cypherwire_wire::{Message, Response, Value};

use super::table::digest;
use super::*;
use crate::id::ConnectionId;

/// A connection's outbox as the session sees it: a bounded queue shared by its clones.
#[derive(Clone)]
struct Queue {
    cap: usize,
    items: Arc<Mutex<VecDeque<Arc<Message>>>>,
}

impl Queue {
    fn bounded(cap: usize) -> Self {
        Self {
            cap,
            items: Arc::default(),
        }
    }

    fn take(&self) -> Option<Arc<Message>> {
        self.items.lock().unwrap().pop_front()
    }
}

impl Attachment for Queue {
    fn offer(&self, msg: Arc<Message>) -> Result<(), Refused> {
        let mut items = self.items.lock().unwrap();
        if items.len() >= self.cap {
            return Err(Refused::Full);
        }
        items.push_back(msg);
        Ok(())
    }
}

fn origin() -> Origin {
    Origin {
        source: SourceKey::new([127, 0, 0, 1].into(), 64),
        identity: None,
    }
}

fn now() -> Instant {
    crate::clock::monotonic()
}

fn small(f: impl FnOnce(&mut ResumePolicy)) -> SessionState<Queue> {
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

fn cached_ids(s: &SessionState<Queue>) -> Vec<u64> {
    let inner = s.lock();
    let mut ids: Vec<u64> = inner.responses.keys().copied().collect();
    ids.sort_unstable();
    ids
}

fn response_bytes_are_consistent(s: &SessionState<Queue>) -> bool {
    let inner = s.lock();
    inner.response_bytes == inner.responses.values().map(|(_, sz)| sz).sum::<usize>()
        && inner.response_order.len() == inner.responses.len()
}

#[test]
fn a_replaced_token_stays_valid_until_its_successor_is_used() {
    let sessions: Sessions<Queue> = Sessions::new(ResumePolicy::default()).unwrap();
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
    let tx = Queue::bounded(1);
    let rx = tx.clone();
    assert_eq!(s.attach(ConnectionId(7), tx), None);
    s.push(Value::from(1)).unwrap();
    assert_eq!(
        s.push(Value::from(2)),
        Err(PushFailure::SlowConsumer(ConnectionId(7)))
    );
    assert_eq!(seqs(&s.replay_after(0).unwrap()), [1, 2]);
    match rx.take() {
        Some(m) => assert_eq!(seqs(&[m]), [1]),
        _ => panic!("push 1 must be queued"),
    }
}

#[test]
fn attaching_reports_the_connection_replaced_and_detaching_starts_the_clock() {
    let s = small(|p| p.ttl = Duration::from_secs(10));
    let tx = Queue::bounded(4);
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

fn policy(f: impl FnOnce(&mut ResumePolicy)) -> Sessions<Queue> {
    let mut p = ResumePolicy::default();
    f(&mut p);
    Sessions::new(p).unwrap()
}

fn attached(
    sessions: &Sessions<Queue>,
    origin: &Origin,
    conn: u64,
) -> (SessionId, Arc<SessionState<Queue>>, SessionToken) {
    let (id, state, token) = sessions.create(origin).unwrap();
    let tx = Queue::bounded(1);
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
    let tx = Queue::bounded(1);
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
    let tx = Queue::bounded(1);
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
                let (sessions, barrier, token) = (sessions.clone(), barrier.clone(), token.clone());
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
        assert!(Sessions::<Queue>::new(p).is_none());
    }
    assert!(Sessions::<Queue>::new(ResumePolicy::default()).is_some());
}

#[test]
fn tokens_of_a_cluster_node_name_it_and_outside_a_cluster_they_do_not() {
    let node = 0x00AB_CDEF;
    let clustered: Sessions<Queue> = Sessions::new(ResumePolicy::default())
        .unwrap()
        .with_node(node);
    let (_, _, t) = clustered.create(&origin()).unwrap();
    assert_eq!(Sessions::<Queue>::token_node(&t), node);
    let (_, _, fresh) = clustered.resume(&t, &origin(), now()).unwrap();
    assert_eq!(
        Sessions::<Queue>::token_node(&fresh),
        node,
        "rotated tokens too"
    );
    // Outside a cluster the three bytes are random: over 32 tokens they are not all one node.
    let alone: Sessions<Queue> = Sessions::new(ResumePolicy::default()).unwrap();
    let nodes: std::collections::HashSet<u32> = (0..32)
        .map(|_| Sessions::<Queue>::token_node(&alone.create(&origin()).unwrap().2))
        .collect();
    assert!(nodes.len() > 1);
}

#[test]
fn a_handed_over_session_continues_elsewhere_with_its_pushes_answers_and_running_requests() {
    let policy = ResumePolicy::default();
    let here: Sessions<Queue> = Sessions::new(policy).unwrap().with_node(1);
    let there: Sessions<Queue> = Sessions::new(policy).unwrap().with_node(2);
    let (_, s, token) = here.create(&origin()).unwrap();
    let attached = Queue::bounded(64);
    here.attach(&s, ConnectionId(5), attached.clone());
    for i in 0..5 {
        s.push(Value::from(i)).unwrap();
    }
    assert!(matches!(s.begin(1), Begin::Run));
    s.complete(Response::ok(1, "one"));
    assert!(
        matches!(s.begin(2), Begin::Run),
        "still running at the handover"
    );
    // The peer saw pushes up to 3; a forwarder takes the place of connection 5.
    let (_, old, _) = here.resume(&token, &origin(), now()).unwrap();
    let forwarder = Queue::bounded(8);
    let (snapshot, previous) = here
        .hand_over(&old, 3, ConnectionId(0), forwarder.clone())
        .unwrap();
    assert_eq!(previous, Some(ConnectionId(5)));
    assert_eq!(snapshot.push_seq, 5);
    assert_eq!(
        snapshot.replay.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [4, 5]
    );
    assert_eq!(snapshot.running, [2]);
    let (_, moved, _) = there.import(&origin(), snapshot).unwrap();
    assert_eq!(seqs(&moved.replay_after(3).unwrap()), [4, 5]);
    assert!(
        matches!(moved.begin(1), Begin::Cached(_)),
        "answered once, not run again"
    );
    assert!(
        matches!(moved.begin(2), Begin::InProgress),
        "running at the old owner"
    );
    moved.push(Value::from(6)).unwrap();
    assert_eq!(
        seqs(&moved.replay_after(5).unwrap()),
        [6],
        "numbering continues"
    );
    // The old owner's answer goes to the forwarder, not to the replaced connection.
    let before = attached.items.lock().unwrap().len();
    let (_, to) = old.complete(Response::ok(2, "two"));
    to.unwrap()
        .offer(Arc::new(Message::from(Response::ok(2, "two"))))
        .unwrap();
    assert!(forwarder.take().is_some());
    assert_eq!(attached.items.lock().unwrap().len(), before);
    // A peer that needs pushes no longer kept is refused.
    let (_, s2, t2) = here.create(&origin()).unwrap();
    for i in 0..(policy.push_buffer + 2) {
        s2.push(Value::from(i as i64)).unwrap();
    }
    let (_, s2, _) = here.resume(&t2, &origin(), now()).unwrap();
    assert!(
        here.hand_over(&s2, 0, ConnectionId(0), Queue::bounded(1))
            .is_none()
    );
}
