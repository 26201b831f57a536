//! The driver's command queue: many senders (the handles, each request), one receiver (the
//! driver), bounded.
//!
//! A mutex around a `VecDeque` and the receiver's waker. The callers that queue a command
//! usually poll the driver themselves right after (`crate::engine`), so the queue is almost
//! never contended; a lock and a push cost far less than a channel's atomics, semaphore and
//! block list on every request.
//!
//! The bound is checked when a command is queued. A sender that waited for room
//! ([`Sender::poll_room`]) then queues without a check, so concurrent waiters can overshoot
//! the bound by one command each: the bound keeps memory in check, it is not a count anybody
//! relies on.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

/// Why a command was not queued; it is handed back.
#[derive(Debug)]
pub(crate) enum TrySendError<T> {
    /// The queue is at its bound.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

/// The receiver is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed;

struct Inner<T> {
    state: Mutex<State<T>>,
    senders: AtomicUsize,
}

struct State<T> {
    items: VecDeque<T>,
    capacity: usize,
    /// The receiver's waker while it waits for a command.
    receiver: Option<Waker>,
    /// Senders waiting for room (each task once).
    room: Vec<Waker>,
    receiver_gone: bool,
}

impl<T> Inner<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A bounded queue of `capacity` commands.
pub(crate) fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let inner = Arc::new(Inner {
        state: Mutex::new(State {
            items: VecDeque::new(),
            capacity,
            receiver: None,
            room: Vec::new(),
            receiver_gone: false,
        }),
        senders: AtomicUsize::new(1),
    });
    (
        Sender {
            inner: inner.clone(),
        },
        Receiver { inner },
    )
}

/// The sending side; cloned freely.
pub(crate) struct Sender<T> {
    inner: Arc<Inner<T>>,
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.inner.senders.fetch_add(1, Ordering::Relaxed);
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if self.inner.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last one: a receiver waiting for a command is told there will be none.
            let waker = self.inner.lock().receiver.take();
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

impl<T> Sender<T> {
    /// Queues `item` if there is room.
    pub(crate) fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let st = self.inner.lock();
        if st.receiver_gone {
            return Err(TrySendError::Closed(item));
        }
        if st.items.len() >= st.capacity {
            return Err(TrySendError::Full(item));
        }
        push(st, item);
        Ok(())
    }

    /// Ready when the queue has room (or the receiver is gone: `Err`).
    pub(crate) fn poll_room(&self, cx: &mut Context<'_>) -> Poll<Result<(), Closed>> {
        let mut st = self.inner.lock();
        if st.receiver_gone {
            return Poll::Ready(Err(Closed));
        }
        if st.items.len() < st.capacity {
            return Poll::Ready(Ok(()));
        }
        if !st.room.iter().any(|w| w.will_wake(cx.waker())) {
            st.room.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Queues `item` without checking the bound (after [`poll_room`](Self::poll_room)).
    pub(crate) fn send_after_room(&self, item: T) -> Result<(), Closed> {
        let st = self.inner.lock();
        if st.receiver_gone {
            return Err(Closed);
        }
        push(st, item);
        Ok(())
    }

    /// Queues `item`, waiting for room. `Err` (with the item dropped) if the receiver is gone.
    pub(crate) async fn send(&self, item: T) -> Result<(), Closed> {
        std::future::poll_fn(|cx| self.poll_room(cx)).await?;
        self.send_after_room(item)
    }
}

/// Queues `item` and wakes the receiver (outside the lock).
fn push<T>(mut st: MutexGuard<'_, State<T>>, item: T) {
    st.items.push_back(item);
    let waker = st.receiver.take();
    drop(st);
    if let Some(w) = waker {
        w.wake();
    }
}

/// The receiving side (the driver).
pub(crate) struct Receiver<T> {
    inner: Arc<Inner<T>>,
}

impl<T> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

impl<T> Receiver<T> {
    /// Takes the oldest command, if there is one.
    pub(crate) fn try_recv(&mut self) -> Option<T> {
        let mut st = self.inner.lock();
        let item = st.items.pop_front()?;
        let room = take_room(&mut st);
        drop(st);
        room.into_iter().for_each(Waker::wake);
        Some(item)
    }

    /// The oldest command; `Ready(None)` once the queue is empty and every sender is gone.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut st = self.inner.lock();
        if let Some(item) = st.items.pop_front() {
            let room = take_room(&mut st);
            drop(st);
            room.into_iter().for_each(Waker::wake);
            return Poll::Ready(Some(item));
        }
        // A sender drops its count before it takes the lock to wake us, so a count read
        // under the lock is either zero or will be followed by that wake.
        if self.inner.senders.load(Ordering::Acquire) == 0 {
            return Poll::Ready(None);
        }
        if !st
            .receiver
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            st.receiver = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Waits for the oldest command; `None` once the queue is empty and every sender is gone.
    pub(crate) async fn recv(&mut self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }
}

/// The waiting senders' wakers once the queue has room again (none otherwise).
fn take_room<T>(st: &mut State<T>) -> Vec<Waker> {
    if st.room.is_empty() || st.items.len() >= st.capacity {
        Vec::new()
    } else {
        std::mem::take(&mut st.room)
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        st.receiver_gone = true;
        let items = std::mem::take(&mut st.items);
        let room = std::mem::take(&mut st.room);
        drop(st);
        // Dropped outside the lock: a command's reply channel wakes its caller.
        drop(items);
        room.into_iter().for_each(Waker::wake);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::task::Wake;

    #[derive(Default)]
    struct Flag(AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    impl Flag {
        fn taken(&self) -> bool {
            self.0.swap(false, Ordering::SeqCst)
        }
    }

    fn waker() -> (Arc<Flag>, Waker) {
        let flag = Arc::new(Flag::default());
        (flag.clone(), Waker::from(flag))
    }

    #[test]
    fn commands_come_out_in_order_and_the_bound_refuses_the_next() {
        let (tx, mut rx) = channel(2);
        let other = tx.clone();
        tx.try_send(1).unwrap();
        other.try_send(2).unwrap();
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        assert_eq!(rx.try_recv(), Some(1));
        tx.try_send(3).unwrap();
        assert_eq!(rx.try_recv(), Some(2));
        assert_eq!(rx.try_recv(), Some(3));
        assert_eq!(rx.try_recv(), None);
    }

    #[test]
    fn a_waiting_receiver_is_woken_by_a_command_and_by_the_last_sender_leaving() {
        let (tx, mut rx) = channel(4);
        let (flag, w) = waker();
        let mut cx = Context::from_waker(&w);
        assert!(rx.poll_recv(&mut cx).is_pending());
        tx.try_send(7).unwrap();
        assert!(flag.taken());
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some(7)));
        let other = tx.clone();
        assert!(rx.poll_recv(&mut cx).is_pending());
        drop(tx);
        assert!(!flag.taken(), "one sender is left");
        assert!(rx.poll_recv(&mut cx).is_pending());
        drop(other);
        assert!(flag.taken());
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(None));
    }

    #[test]
    fn commands_queued_before_the_last_sender_left_are_still_received() {
        let (tx, mut rx) = channel(4);
        tx.try_send(1).unwrap();
        drop(tx);
        let (_, w) = waker();
        let mut cx = Context::from_waker(&w);
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some(1)));
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(None));
    }

    #[test]
    fn a_sender_waiting_for_room_is_woken_once_there_is_room() {
        let (tx, mut rx) = channel(1);
        tx.try_send(1).unwrap();
        let (flag, w) = waker();
        let mut cx = Context::from_waker(&w);
        assert!(tx.poll_room(&mut cx).is_pending());
        assert!(tx.poll_room(&mut cx).is_pending(), "registered once");
        assert_eq!(rx.try_recv(), Some(1));
        assert!(flag.taken());
        assert_eq!(tx.poll_room(&mut cx), Poll::Ready(Ok(())));
        tx.send_after_room(2).unwrap();
        assert_eq!(rx.try_recv(), Some(2));
    }

    #[test]
    fn without_a_receiver_sends_fail_and_queued_commands_are_dropped() {
        let (tx, rx) = channel(1);
        let item = Arc::new(());
        tx.try_send(item.clone()).unwrap();
        let (flag, w) = waker();
        let mut cx = Context::from_waker(&w);
        assert!(tx.poll_room(&mut cx).is_pending());
        drop(rx);
        assert!(
            flag.taken(),
            "a sender waiting for room learns the queue is gone"
        );
        assert_eq!(
            Arc::strong_count(&item),
            1,
            "the queued command was dropped"
        );
        assert!(matches!(
            tx.try_send(item.clone()),
            Err(TrySendError::Closed(_))
        ));
        assert_eq!(tx.poll_room(&mut cx), Poll::Ready(Err(Closed)));
        assert_eq!(tx.send_after_room(item), Err(Closed));
    }

    #[tokio::test]
    async fn send_waits_for_room_across_tasks() {
        let (tx, mut rx) = channel(1);
        tx.try_send(0u32).unwrap();
        let sender = tokio::spawn(async move {
            for i in 1..100 {
                tx.send(i).await.unwrap();
            }
        });
        let mut got = Vec::new();
        while let Some(i) = rx.recv().await {
            got.push(i);
        }
        sender.await.unwrap();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
    }
}
