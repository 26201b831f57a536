//! Who polls the driver: any caller waiting for an answer, or the client's own task.
//!
//! The driver ([`crate::driver::run`]) is one future that owns the connection. A spawned task
//! polling it is the classic design, but then every burst of requests crosses from the callers'
//! threads to the driver's, and every answer back again: on a small machine each crossing is
//! a context switch, and those dominated the client's cost (measured against a caller that
//! reads and writes a session itself in `docs/performance.md`).
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
        self.taken(out.map_err(|_| Unanswered))
    }

    /// As [`take`](Self::take), without registering the waker with the answer's channel (a
    /// look before the driver is polled: the look after it registers).
    fn peek(&mut self) -> Option<<Self as Future>::Output> {
        use tokio::sync::oneshot::error::TryRecvError;
        let out = match self.rx.try_recv() {
            Ok(v) => Ok(v),
            Err(TryRecvError::Empty) => return None,
            Err(TryRecvError::Closed) => Err(Unanswered),
        };
        self.taken(out)
    }

    fn taken(&mut self, out: <Self as Future>::Output) -> Option<<Self as Future>::Output> {
        self.engine.drive();
        self.engine.leave(self.key.take());
        Some(out)
    }
}

/// The driver dropped the request without answering it (it is gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unanswered;

impl<T> Future for Answer<T> {
    type Output = Result<T, Unanswered>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Some(out) = this.peek() {
            return Poll::Ready(out);
        }
        this.engine.wait(&mut this.key, cx.waker());
        if std::mem::replace(&mut this.deferred, false) {
            // Let the other callers of this turn queue their requests first: one write then
            // carries them all. No wake of our own is needed: queueing the request woke the
            // driver's signal, which handed the wake to a waiting caller (this one, if it
            // registered first) or to the background task, or the driver is being polled.
            // The answer's channel learns this caller's waker (whoever polls the driver may
            // read the answer).
            return this.take(cx).map_or(Poll::Pending, Poll::Ready);
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
mod tests;
