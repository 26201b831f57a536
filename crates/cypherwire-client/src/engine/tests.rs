//! The engine's hand-off rules, tested with toy drivers.

use std::sync::atomic::AtomicUsize;

use super::*;

/// A driver whose behaviour the test sets: how many of its next polls wake it again, and
/// whether it finishes or panics. It keeps the waker it is polled with (the signal).
#[derive(Default)]
struct Probe {
    polls: AtomicUsize,
    self_wakes: AtomicUsize,
    finish: AtomicBool,
    panic: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

fn toy(p: Arc<Probe>, keep: Option<tokio::sync::oneshot::Sender<()>>) -> Driver {
    let mut keep = keep;
    Box::pin(std::future::poll_fn(move |cx| {
        p.polls.fetch_add(1, Ordering::SeqCst);
        *lock(&p.waker) = Some(cx.waker().clone());
        assert!(!p.panic.load(Ordering::SeqCst), "the driver panics");
        if p.finish.load(Ordering::SeqCst) {
            keep.take();
            return Poll::Ready(());
        }
        if p.self_wakes.load(Ordering::SeqCst) > 0 {
            p.self_wakes.fetch_sub(1, Ordering::SeqCst);
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }))
}

/// A waker that counts its wakes.
#[derive(Default)]
struct Count(AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counter() -> (Arc<Count>, Waker) {
    let c = Arc::new(Count::default());
    (c.clone(), Waker::from(c))
}

fn n(c: &Count) -> usize {
    c.0.load(Ordering::SeqCst)
}

/// An engine polled once (its first poll is due at once), with a counting background waker.
fn setup(keep: Option<tokio::sync::oneshot::Sender<()>>) -> (Arc<Engine>, Arc<Probe>, Arc<Count>) {
    let probe = Arc::new(Probe::default());
    let engine = Engine::new(toy(probe.clone(), keep));
    let (bg, bg_waker) = counter();
    *lock(&engine.signal.background) = Some(bg_waker);
    // As while the background task's watchdog runs.
    engine.signal.watched.store(true, Ordering::SeqCst);
    engine.drive();
    assert_eq!(probe.polls.load(Ordering::SeqCst), 1);
    (engine, probe, bg)
}

/// Two callers registered as waiting, `a` first.
fn two_waiting(engine: &Engine) -> (Arc<Count>, Option<Key>, Arc<Count>, Option<Key>) {
    let (a, wa) = counter();
    let (b, wb) = counter();
    let (mut ka, mut kb) = (None, None);
    engine.wait(&mut ka, &wa);
    engine.wait(&mut kb, &wb);
    (a, ka, b, kb)
}

fn wake(probe: &Probe) {
    lock(&probe.waker).as_ref().unwrap().wake_by_ref();
}

#[tokio::test]
async fn wakes_go_to_the_latest_waiting_caller_else_to_the_background() {
    let (engine, probe, bg) = setup(None);
    let (a, _ka, b, _kb) = two_waiting(&engine);
    wake(&probe);
    assert_eq!(
        (n(&a), n(&b), n(&bg)),
        (0, 1, 0),
        "the latest waiting caller"
    );
    wake(&probe);
    assert_eq!(
        (n(&a), n(&b), n(&bg)),
        (0, 1, 0),
        "already handed out: nobody else is woken"
    );
    engine.drive();
    assert_eq!(probe.polls.load(Ordering::SeqCst), 2);
    wake(&probe);
    assert_eq!((n(&a), n(&b), n(&bg)), (1, 1, 0), "b was taken: a is next");
    engine.drive();
    wake(&probe);
    assert_eq!(
        (n(&a), n(&b), n(&bg)),
        (1, 1, 1),
        "nobody waits: the background"
    );
    engine.drive();
    assert_eq!(probe.polls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn an_unwatched_hand_off_wakes_the_background_too() {
    let (engine, probe, bg) = setup(None);
    engine.signal.watched.store(false, Ordering::SeqCst);
    let (a, wa) = counter();
    let mut ka = None;
    engine.wait(&mut ka, &wa);
    wake(&probe);
    assert_eq!(
        (n(&a), n(&bg)),
        (1, 1),
        "the caller, and the background to watch it"
    );
}

#[tokio::test]
async fn a_wake_during_a_poll_is_not_lost_and_repolls_are_bounded() {
    let (engine, probe, bg) = setup(None);
    probe.self_wakes.store(1, Ordering::SeqCst);
    wake(&probe);
    engine.drive();
    assert_eq!(
        probe.polls.load(Ordering::SeqCst),
        3,
        "polled again in the same turn"
    );
    assert_eq!(n(&bg), 1, "the first wake (nobody waiting)");
    // A driver woken during every poll is polled MAX_REPOLLS times, then handed to the
    // background task (still due).
    probe.self_wakes.store(1000, Ordering::SeqCst);
    wake(&probe);
    engine.drive();
    assert_eq!(probe.polls.load(Ordering::SeqCst), 3 + MAX_REPOLLS as usize);
    assert_eq!(n(&bg), 3);
    assert_eq!(engine.signal.state.load(Ordering::SeqCst), DUE);
}

#[tokio::test]
async fn a_panicking_driver_is_dropped_and_its_waiters_released() {
    let (reply, mut answer) = tokio::sync::oneshot::channel::<()>();
    let (engine, probe, bg) = setup(Some(reply));
    let (a, wa) = counter();
    let mut ka = None;
    engine.wait(&mut ka, &wa);
    probe.panic.store(true, Ordering::SeqCst);
    wake(&probe);
    assert_eq!(n(&a), 1);
    let (b, wb) = counter();
    let mut kb = None;
    engine.wait(&mut kb, &wb);
    engine.drive();
    assert!(engine.finished());
    assert_eq!(n(&b), 1, "every waiting caller is woken to see the end");
    assert!(n(&bg) >= 1);
    assert!(
        answer
            .try_recv()
            .is_err_and(|e| e == tokio::sync::oneshot::error::TryRecvError::Closed),
        "the driver (and the reply senders it held) is dropped"
    );
    let polls = probe.polls.load(Ordering::SeqCst);
    wake(&probe);
    engine.drive();
    assert_eq!(
        probe.polls.load(Ordering::SeqCst),
        polls,
        "never polled again"
    );
}

#[tokio::test]
async fn a_finished_driver_is_dropped() {
    let (reply, mut answer) = tokio::sync::oneshot::channel::<()>();
    let (engine, probe, _bg) = setup(Some(reply));
    probe.finish.store(true, Ordering::SeqCst);
    wake(&probe);
    engine.drive();
    assert!(engine.finished());
    assert!(answer.try_recv().is_err());
    assert!(lock(&engine.driver).is_none());
}

#[tokio::test]
async fn a_picked_caller_that_leaves_without_polling_passes_the_wake_on() {
    let (engine, probe, bg) = setup(None);
    let (a, ka, b, kb) = two_waiting(&engine);
    wake(&probe);
    assert_eq!(n(&b), 1);
    engine.leave(kb);
    assert_eq!(n(&a), 1, "b was handed the wake and left: a gets it");
    engine.leave(ka);
    assert_eq!(n(&bg), 1, "a left too: the background gets it");
    // Leaving when nothing is due wakes nobody.
    engine.drive();
    let (c, wc) = counter();
    let mut kc = None;
    engine.wait(&mut kc, &wc);
    engine.leave(kc);
    assert_eq!((n(&c), n(&bg)), (0, 1));
}

/// The promise of `WATCHDOG`, in virtual time: a wake handed to a caller that never acts
/// on it (the background task's watchdog running, so it was not woken too) is taken over
/// by the background task within 20 ms.
#[tokio::test(start_paused = true)]
async fn a_neglected_hand_off_is_taken_over_within_the_watchdog() {
    let probe = Arc::new(Probe::default());
    let engine = Engine::new(toy(probe.clone(), None));
    let (neglecter, w) = counter();
    let mut key = None;
    engine.wait(&mut key, &w);
    let bg = tokio::spawn(background(engine.clone()));
    tokio::task::yield_now().await;
    assert_eq!(probe.polls.load(Ordering::SeqCst), 1, "the first poll");
    assert!(
        engine.signal.watched.load(Ordering::SeqCst),
        "a caller waits: watched"
    );
    wake(&probe);
    assert_eq!(
        n(&neglecter),
        1,
        "handed to the waiting caller, which never polls"
    );
    tokio::time::advance(Duration::from_millis(19)).await;
    assert_eq!(
        probe.polls.load(Ordering::SeqCst),
        1,
        "not polled meanwhile"
    );
    tokio::time::advance(Duration::from_millis(2)).await;
    // The timer fired; let the background task run.
    tokio::task::yield_now().await;
    assert_eq!(
        probe.polls.load(Ordering::SeqCst),
        2,
        "the background task took over"
    );
    bg.abort();
}

#[tokio::test]
async fn a_lone_caller_polls_the_driver_as_it_queues_and_one_behind_others_does_not() {
    let (engine, probe, _bg) = setup(None);
    let polls = || probe.polls.load(Ordering::SeqCst);
    let (_reply, rx) = tokio::sync::oneshot::channel::<u8>();
    let mut alone = Answer::new(engine.clone(), rx);
    let (_, w) = counter();
    engine.wait(&mut alone.key, &w);
    assert_eq!(alone.queue_and_drive(|| 7), 7);
    assert_eq!(
        polls(),
        2,
        "polled within the call, the request written at once"
    );
    assert!(!alone.deferred, "nothing left to defer");
    let (_reply2, rx2) = tokio::sync::oneshot::channel::<u8>();
    let mut behind = Answer::new(engine.clone(), rx2);
    let (_, w2) = counter();
    engine.wait(&mut behind.key, &w2);
    behind.queue_and_drive(|| ());
    assert_eq!(
        polls(),
        2,
        "behind a waiting caller: left to the next write"
    );
    assert!(behind.deferred);
}

#[tokio::test]
async fn a_picked_caller_whose_answer_is_there_polls_the_driver_itself() {
    let (engine, probe, bg) = setup(None);
    let (reply, rx) = tokio::sync::oneshot::channel::<u8>();
    let mut answer = Answer::new(engine, rx);
    let (me, my_waker) = counter();
    let mut cx = Context::from_waker(&my_waker);
    assert!(
        Pin::new(&mut answer).poll(&mut cx).is_pending(),
        "registered"
    );
    wake(&probe);
    assert_eq!((n(&me), n(&bg)), (1, 0), "handed to this caller");
    reply.send(5).unwrap();
    assert!(matches!(
        Pin::new(&mut answer).poll(&mut cx),
        Poll::Ready(Ok(5))
    ));
    assert_eq!(
        probe.polls.load(Ordering::SeqCst),
        2,
        "it polled the driver"
    );
    assert_eq!(n(&bg), 0, "nobody else had to be woken");
}

#[test]
fn the_waiting_bookkeeping_stays_bounded() {
    let mut w = Waiting::default();
    let (_, waker) = counter();
    let mut old = None;
    w.register(&mut old, &waker);
    // Two live callers at a time, the older one always leaving first: each leaves an entry
    // below the top of the order, which only compaction removes.
    for _ in 0..10_000 {
        let mut new = None;
        w.register(&mut new, &waker);
        // Compaction runs when a caller registers.
        assert!(
            w.order.len() <= 2 * w.live + 16,
            "{} for {}",
            w.order.len(),
            w.live
        );
        assert!(w.remove(old.unwrap()));
        old = new;
        assert!(w.slots.len() <= 2, "slots are reused");
    }
    assert_eq!(w.live, 1);
    assert!(w.pick().is_some());
    assert!(w.pick().is_none());
    assert!(!w.remove(old.unwrap()), "picked: no longer registered");
}
