//! A connection's two stop signals (the server shutting down, this connection told to stop),
//! looked at cheaply on every turn of its read loop.
//!
//! Waiting on a `watch` channel registers the task with the channel's waiter list, and polling
//! that wait again takes the list's lock, on every message. Here each wait is polled once with
//! the task's waker and then only when its channel has a new value (an atomic version check)
//! or the task's waker changed: a registered wait keeps the waker of its last poll, which is
//! woken when the value changes.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::sync::watch;

use crate::events::DisconnectReason;

/// Which signal came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// The server is shutting down.
    Shutdown,
    /// This connection was told to stop (the reason is in its stop channel).
    Stop,
}

type Wait = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The two waits of one connection.
pub(crate) struct Signals {
    shutdown: Wait,
    stop: Wait,
    /// Copies of the channels, for the version check (they never mark a value seen).
    shutdown_seen: watch::Receiver<bool>,
    stop_seen: watch::Receiver<Option<DisconnectReason>>,
    /// The waker both waits were last polled with.
    waker: Option<Waker>,
}

impl Signals {
    /// Waits for `shutdown` to become true and for any change of `stop`.
    pub(crate) fn new(
        mut shutdown: watch::Receiver<bool>,
        stop: watch::Receiver<Option<DisconnectReason>>,
    ) -> Self {
        let shutdown_seen = shutdown.clone();
        let mut stop_watch = stop.clone();
        Self {
            shutdown: Box::pin(async move {
                let _ = shutdown.wait_for(|down| *down).await;
            }),
            stop: Box::pin(async move {
                let _ = stop_watch.changed().await;
            }),
            shutdown_seen,
            stop_seen: stop,
            waker: None,
        }
    }

    /// Ready with the first signal that came; shutdown first if both did.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Signal> {
        let fresh = !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker()));
        // A closed channel counts as changed: its wait ends, and that is the signal.
        if (fresh || self.shutdown_seen.has_changed().unwrap_or(true))
            && self.shutdown.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Signal::Shutdown);
        }
        if (fresh || self.stop_seen.has_changed().unwrap_or(true))
            && self.stop.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Signal::Stop);
        }
        if fresh {
            self.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn waker() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count::default());
        (c.clone(), Waker::from(c))
    }

    type Setup = (
        watch::Sender<bool>,
        watch::Sender<Option<DisconnectReason>>,
        Signals,
    );

    /// Both channels' senders and the signals waiting on them.
    fn signals() -> Setup {
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (stop_tx, stop_rx) = watch::channel(None);
        (shutdown_tx, stop_tx, Signals::new(shutdown_rx, stop_rx))
    }

    #[test]
    fn a_signal_after_the_first_poll_wakes_the_task_and_is_seen() {
        let (shutdown_tx, stop_tx, mut s) = signals();
        let (count, w) = waker();
        let mut cx = Context::from_waker(&w);
        assert!(s.poll(&mut cx).is_pending());
        assert!(s.poll(&mut cx).is_pending(), "nothing changed");
        stop_tx.send(Some(DisconnectReason::Kicked)).unwrap();
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "the waker of the first poll"
        );
        assert_eq!(s.poll(&mut cx), Poll::Ready(Signal::Stop));
        drop(shutdown_tx);
    }

    #[test]
    fn shutdown_is_seen_first_and_only_when_it_is_true() {
        let (shutdown_tx, stop_tx, mut s) = signals();
        let (_, w) = waker();
        let mut cx = Context::from_waker(&w);
        assert!(s.poll(&mut cx).is_pending());
        shutdown_tx.send(false).unwrap();
        assert!(
            s.poll(&mut cx).is_pending(),
            "a change to false is not a shutdown"
        );
        stop_tx.send(Some(DisconnectReason::Kicked)).unwrap();
        shutdown_tx.send(true).unwrap();
        assert_eq!(s.poll(&mut cx), Poll::Ready(Signal::Shutdown));
    }

    #[test]
    fn a_new_waker_is_registered_with_both_waits() {
        let (_shutdown_tx, stop_tx, mut s) = signals();
        let (first, w1) = waker();
        assert!(s.poll(&mut Context::from_waker(&w1)).is_pending());
        let (second, w2) = waker();
        assert!(s.poll(&mut Context::from_waker(&w2)).is_pending());
        stop_tx.send(Some(DisconnectReason::Kicked)).unwrap();
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(
            second.0.load(Ordering::SeqCst),
            1,
            "the most recent waker is woken"
        );
    }

    #[test]
    fn a_dropped_shutdown_channel_is_a_shutdown() {
        let (shutdown_tx, _stop_tx, mut s) = signals();
        let (count, w) = waker();
        let mut cx = Context::from_waker(&w);
        assert!(s.poll(&mut cx).is_pending());
        drop(shutdown_tx);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(s.poll(&mut cx), Poll::Ready(Signal::Shutdown));
    }

    #[test]
    fn a_dropped_stop_channel_is_a_stop() {
        let (_shutdown_tx, stop_tx, mut s) = signals();
        let (count, w) = waker();
        let mut cx = Context::from_waker(&w);
        assert!(s.poll(&mut cx).is_pending());
        drop(stop_tx);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(s.poll(&mut cx), Poll::Ready(Signal::Stop));
    }
}
