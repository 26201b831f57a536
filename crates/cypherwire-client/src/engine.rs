//! Who polls the driver: any caller waiting for an answer, or the client's own task.
//!
//! The driver ([`crate::driver::run`]) is one future that owns the connection. A spawned task
//! polling it is the classic design, but then every burst of requests crosses from the callers'
//! threads to the driver's, and every answer back again: on a small machine each crossing is
//! a context switch, and those dominated the client's cost (0.3 per request at 64 in flight,
//! against 0.04 for a caller that reads and writes a session itself; `docs/performance.md`).
//!
//! Here the driver is polled by whoever is at hand, always with the same waker (the
//! [`Signal`]):
//!
//! - When the connection, the command queue or a timer wakes the driver, the signal wakes
//!   **one caller that waits for an answer**, and that caller polls the driver on its own
//!   thread: it reads the answers, hands them to their callers, writes what is queued.
//! - When no caller waits, the signal wakes the **background task**, a task of the client's
//!   own that polls the driver as a dedicated driver task would. Pushes, heartbeats,
//!   reconnects and deadlines need no caller.
//! - One poller at a time: the state word holds `RUNNING` while someone polls; a wake during
//!   that poll only sets `DUE`, and the poller polls again before it lets go. Nothing is lost
//!   and nobody blocks: a caller that finds the driver running simply waits for its answer.
//! - A caller handed a wake whose answer is already there polls the driver before it returns;
//!   one dropped without polling passes the wake on; one that is kept but never polled again
//!   (a future parked in a disabled `select!` branch) holds the others up at most
//!   [`WATCHDOG`]: the background task checks that often while callers wait, and a hand-off
//!   made while it does not look wakes the background task too.
//!
//! A panic inside the driver is caught: the driver is dropped, which fails every waiting
//! request with `Closed`.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

/// The driver, boxed.
pub(crate) type Driver = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Someone polls the driver now.
const RUNNING: u8 = 1;
/// The driver was woken and must be polled.
const DUE: u8 = 2;
/// The driver returned (or panicked): nothing more to poll.
const FINISHED: u8 = 4;

/// How many times one poller polls the driver in a row when wakes keep arriving during its
/// polls; then it hands over to the background task (a wake from tokio's cooperative budget
/// would otherwise never stop: the budget is only renewed when the poller's task yields).
const MAX_REPOLLS: u32 = 4;

/// How long a caller handed a wake may take to act on it before the background task polls the
/// driver instead (only matters for a request future that is kept but never polled again).
const WATCHDOG: Duration = Duration::from_millis(20);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The callers waiting for an answer: a slab of wakers, and the order they came in (the most
/// recent is handed the next wake: it is the likeliest to be polled soon).
#[derive(Debug, Default)]
struct Waiting {
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// Keys in registration order, with stale entries removed lazily (and compacted).
    order: Vec<Key>,
    live: usize,
}

#[derive(Debug, Default)]
struct Slot {
    generation: u32,
    waker: Option<Waker>,
}

/// A waiting caller's place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Key {
    index: usize,
    generation: u32,
}

/// Whether `key` still names a registered waker in `slots`.
fn current(slots: &[Slot], key: Key) -> bool {
    slots
        .get(key.index)
        .is_some_and(|s| s.generation == key.generation && s.waker.is_some())
}

impl Waiting {
    fn is_current(&self, key: Key) -> bool {
        current(&self.slots, key)
    }

    /// Registers `waker` (or refreshes it) under `key`.
    fn register(&mut self, key: &mut Option<Key>, waker: &Waker) {
        if let Some(k) = *key
            && self.is_current(k)
        {
            let slot = &mut self.slots[k.index];
            if !slot.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
                slot.waker = Some(waker.clone());
            }
            return;
        }
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot::default());
                self.slots.len() - 1
            }
        };
        let slot = &mut self.slots[index];
        slot.generation = slot.generation.wrapping_add(1);
        slot.waker = Some(waker.clone());
        let k = Key {
            index,
            generation: slot.generation,
        };
        self.live += 1;
        self.order.push(k);
        if self.order.len() > 2 * self.live + 16 {
            let slots = &self.slots;
            self.order.retain(|k| current(slots, *k));
        }
        *key = Some(k);
    }

    /// Removes `key`'s waker; true if it was still registered.
    fn remove(&mut self, key: Key) -> bool {
        if !self.is_current(key) {
            return false;
        }
        self.slots[key.index].waker = None;
        self.free.push(key.index);
        self.live -= 1;
        while let Some(&top) = self.order.last() {
            if self.is_current(top) {
                break;
            }
            self.order.pop();
        }
        true
    }

    /// Takes the most recent waiting caller's waker (it must register again to be picked again).
    fn pick(&mut self) -> Option<Waker> {
        while let Some(k) = self.order.pop() {
            if self.is_current(k) {
                let waker = self.slots[k.index].waker.take();
                self.free.push(k.index);
                self.live -= 1;
                return waker;
            }
        }
        None
    }
}

/// The driver's waker.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    state: AtomicU8,
    waiting: Mutex<Waiting>,
    background: Mutex<Option<Waker>>,
    /// The background task's watchdog is running (it looks every [`WATCHDOG`]): a wake handed
    /// to a caller is then watched. When it is not, a hand-off wakes the background task too.
    watched: AtomicBool,
}

impl Signal {
    fn wake_background(&self) {
        let waker = lock(&self.background).clone();
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn waiting(&self) -> usize {
        lock(&self.waiting).live
    }

    /// Whether callers other than the one registered under `key` (if any) wait.
    fn others_waiting(&self, key: Option<Key>) -> bool {
        let w = lock(&self.waiting);
        w.live > usize::from(key.is_some_and(|k| w.is_current(k)))
    }

    /// Hands a due driver to the most recent waiting caller (with the background task woken
    /// too unless its watchdog already watches), or to the background task.
    fn hand_off(&self) {
        let caller = lock(&self.waiting).pick();
        match caller {
            Some(w) => {
                w.wake();
                if !self.watched.load(Ordering::SeqCst) {
                    self.wake_background();
                }
            }
            None => self.wake_background(),
        }
    }
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let before = self.state.fetch_or(DUE, Ordering::SeqCst);
        if before & (RUNNING | FINISHED | DUE) != 0 {
            // A poller is at it and polls again before letting go, or a wake was already
            // handed to someone, or there is nothing left to poll.
            return;
        }
        self.hand_off();
    }
}

/// The driver and who may poll it.
pub(crate) struct Engine {
    signal: Arc<Signal>,
    waker: Waker,
    driver: Mutex<Option<Driver>>,
    /// The runtime the client was started on: the driver makes its timers and sockets there,
    /// whichever thread polls it.
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("state", &self.signal.state.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Wraps `driver`; it is first polled by [`background`] (spawn it) or a caller. Must be
    /// called within a tokio runtime.
    pub(crate) fn new(driver: Driver) -> Arc<Self> {
        let signal = Arc::new(Signal::default());
        // The first poll is due at once.
        signal.state.store(DUE, Ordering::Release);
        Arc::new(Self {
            waker: Waker::from(signal.clone()),
            signal,
            driver: Mutex::new(Some(driver)),
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// Whether the driver has returned.
    fn finished(&self) -> bool {
        self.signal.state.load(Ordering::Acquire) & FINISHED != 0
    }

    /// Polls the driver if it is due and nobody else is polling it; returns at once otherwise.
    pub(crate) fn drive(&self) {
        if self
            .signal
            .state
            .compare_exchange(DUE, RUNNING, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            self.run_claimed();
        }
    }

    /// Takes the right to poll the driver if nobody holds it, due or not; then the caller must
    /// call [`run_claimed`](Self::run_claimed).
    fn claim(&self) -> bool {
        self.signal
            .state
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| {
                (s & (RUNNING | FINISHED) == 0).then_some(RUNNING)
            })
            .is_ok()
    }

    /// Polls the driver (the caller holds `RUNNING`) until no wake came during the last poll.
    fn run_claimed(&self) {
        let state = &self.signal.state;
        let _runtime = self.runtime.enter();
        let mut slot = lock(&self.driver);
        let mut polls = 0;
        loop {
            polls += 1;
            // Whatever woke the driver before this poll is seen by it.
            state.store(RUNNING, Ordering::SeqCst);
            let done = match slot.as_mut() {
                Some(fut) => {
                    let mut cx = Context::from_waker(&self.waker);
                    match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx)))
                    {
                        Ok(Poll::Pending) => false,
                        Ok(Poll::Ready(())) => true,
                        Err(_) => {
                            tracing::error!("the client's driver panicked; the client is closed");
                            true
                        }
                    }
                }
                None => true,
            };
            if done {
                let driver = slot.take();
                drop(slot);
                self.finish(driver);
                self.signal.wake_background();
                return;
            }
            match state.compare_exchange(RUNNING, 0, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return,
                Err(_) if polls >= MAX_REPOLLS => {
                    // Woken again during each poll: let the background task go on in a fresh
                    // budget.
                    state.store(DUE, Ordering::Release);
                    drop(slot);
                    self.signal.wake_background();
                    return;
                }
                // Woken during the poll: poll again.
                Err(_) => {}
            }
        }
    }

    /// The driver is done (returned, panicked, or its runtime went away): nothing is polled
    /// again, and dropping `driver` fails every waiting request (their reply senders go), whose
    /// callers are woken to see it.
    fn finish(&self, driver: Option<Driver>) {
        self.signal.state.store(FINISHED, Ordering::Release);
        drop(driver);
        let wakers: Vec<Waker> = {
            let mut w = lock(&self.signal.waiting);
            std::iter::from_fn(|| w.pick()).collect()
        };
        for w in wakers {
            w.wake();
        }
    }

    /// Registers a caller waiting for an answer (or refreshes its waker).
    pub(crate) fn wait(&self, key: &mut Option<Key>, waker: &Waker) {
        lock(&self.signal.waiting).register(key, waker);
    }

    /// A caller stops waiting. If it was handed a wake it did not act on (it was picked, so it
    /// is no longer registered) and the driver is still due, the wake goes on to someone else.
    pub(crate) fn leave(&self, key: Option<Key>) {
        let Some(key) = key else { return };
        let was_waiting = lock(&self.signal.waiting).remove(key);
        if !was_waiting && self.signal.state.load(Ordering::SeqCst) == DUE {
            self.signal.hand_off();
        }
    }
}

/// The background task: polls the driver whenever no caller is there to, until it returns.
/// Dropped with its runtime, it drops the driver too: every waiting request then fails with
/// `Closed`, and later ones too.
pub(crate) async fn background(engine: Arc<Engine>) {
    struct DropDriver(Arc<Engine>);
    impl Drop for DropDriver {
        fn drop(&mut self) {
            if !self.0.finished() {
                let driver = lock(&self.0.driver).take();
                self.0.finish(driver);
            }
        }
    }
    let guard = DropDriver(engine);
    let engine = &guard.0;
    let watchdog = tokio::time::sleep(WATCHDOG);
    tokio::pin!(watchdog);
    std::future::poll_fn(|cx| {
        {
            let mut bg = lock(&engine.signal.background);
            if !bg.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *bg = Some(cx.waker().clone());
            }
        }
        engine.drive();
        if engine.finished() {
            return Poll::Ready(());
        }
        // While callers wait, look again every WATCHDOG in case one was handed a wake and is
        // never polled; otherwise sleep until the signal calls. `watched` says which: it is
        // cleared before the conditions are looked at again, so a hand-off that saw it set
        // is seen here, and one that comes later wakes this task.
        let signal = &engine.signal;
        let watch = || signal.waiting() > 0 || signal.state.load(Ordering::SeqCst) == DUE;
        let mut watching = watch();
        if !watching {
            signal.watched.store(false, Ordering::SeqCst);
            watching = watch();
        }
        if watching {
            // Only this task writes `watched`: it was set exactly while the timer ran.
            if !signal.watched.swap(true, Ordering::SeqCst) {
                watchdog
                    .as_mut()
                    .reset(tokio::time::Instant::now() + WATCHDOG);
            }
            while watchdog.as_mut().poll(cx).is_ready() {
                engine.drive();
                watchdog
                    .as_mut()
                    .reset(tokio::time::Instant::now() + WATCHDOG);
            }
        }
        Poll::Pending
    })
    .await;
}

/// Waits for one answer, polling the driver meanwhile when it is due (see the module docs).
#[derive(Debug)]
pub(crate) struct Answer<T> {
    engine: Arc<Engine>,
    rx: tokio::sync::oneshot::Receiver<T>,
    key: Option<Key>,
    /// The first poll leaves the driver alone (see `poll`); false once that is done, or when
    /// the caller already polled the driver as it queued its request.
    deferred: bool,
}

impl<T> Answer<T> {
    pub(crate) fn new(engine: Arc<Engine>, rx: tokio::sync::oneshot::Receiver<T>) -> Self {
        Self {
            engine,
            rx,
            key: None,
            deferred: true,
        }
    }

    /// Registers the calling task among the waiting callers. Done before the request is
    /// queued, so that the wake the request causes comes back to this task instead of
    /// crossing to the background task.
    pub(crate) async fn enlist(&mut self) {
        std::future::poll_fn(|cx| {
            self.engine.wait(&mut self.key, cx.waker());
            Poll::Ready(())
        })
        .await;
    }

    /// Queues a request with `queue` and, when nobody else is polling the driver, polls it at
    /// once: the request is written now, and queueing it woke nobody (a lone caller would
    /// otherwise be handed its own wake and pay a turn of its executor for it).
    pub(crate) fn queue_and_drive<Q>(&mut self, queue: impl FnOnce() -> Q) -> Q {
        // Only a caller alone among the waiting (itself registered) claims: behind another
        // one, its request goes out with that one's next write, in one batch with the rest of
        // the burst.
        let claimed = !self.others_waiting() && self.engine.claim();
        let queued = queue();
        if claimed {
            self.engine.run_claimed();
            self.deferred = false;
        }
        queued
    }

    /// Whether callers other than this one wait for answers (then one of them will poll the
    /// driver soon).
    pub(crate) fn others_waiting(&self) -> bool {
        self.engine.signal.others_waiting(self.key)
    }

    /// The answer, if it is there. Then the caller stops waiting, and if it was handed a wake
    /// it acts on it here (its task is running anyway).
    fn take(&mut self, cx: &mut Context<'_>) -> Option<<Self as Future>::Output> {
        let Poll::Ready(out) = Pin::new(&mut self.rx).poll(cx) else {
            return None;
        };
        self.engine.drive();
        self.engine.leave(self.key.take());
        Some(out)
    }
}

impl<T> Future for Answer<T> {
    type Output = Result<T, tokio::sync::oneshot::error::RecvError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Some(out) = this.take(cx) {
            return Poll::Ready(out);
        }
        this.engine.wait(&mut this.key, cx.waker());
        if std::mem::replace(&mut this.deferred, false) {
            // Let the other callers of this turn queue their requests first: one write then
            // carries them all. No wake of our own is needed: queueing the request woke the
            // driver's signal, which handed the wake to a waiting caller (this one, if it
            // registered first) or to the background task, or the driver is being polled.
            return Poll::Pending;
        }
        this.engine.drive();
        this.take(cx).map_or(Poll::Pending, Poll::Ready)
    }
}

impl<T> Drop for Answer<T> {
    fn drop(&mut self) {
        self.engine.leave(self.key.take());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code")]
mod tests {
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
    fn setup(
        keep: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> (Arc<Engine>, Arc<Probe>, Arc<Count>) {
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
}
