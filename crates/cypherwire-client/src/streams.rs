//! What the client hands the application as streams (pushes and actions, status changes) and
//! takes as a sink (actions to emit).
//!
//! The convention, the same in every crate of the workspace: a `take_*` method hands out the
//! one consumer of a bounded queue, once (`Option`: `None` when it was taken already); a
//! method named after the events (`status_events`, the server's `events`) makes a new
//! broadcast subscriber on every call, which sees what happens from then on. Both are read
//! with an inherent `next()` or as a [`futures_core::Stream`].

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use cypherwire_wire::{Action, Value};
use futures_core::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::BroadcastStream;

use crate::error::Error;
use crate::shared::{Command, Incoming, Status};

/// Pushes and actions from the server, in order, taken once with
/// [`Client::take_incoming`](crate::Client::take_incoming). Read it with [`next`](Self::next),
/// as a [`Stream`], or take what has arrived at once with [`drain`](Self::drain) (aesm's
/// "retrieved" view).
#[derive(Debug)]
pub struct IncomingStream {
    rx: mpsc::Receiver<Incoming>,
}

impl IncomingStream {
    pub(crate) fn new(rx: mpsc::Receiver<Incoming>) -> Self {
        Self { rx }
    }

    /// The next push or action; `None` once the client is closed.
    pub async fn next(&mut self) -> Option<Incoming> {
        self.rx.recv().await
    }

    /// The next push or action, if one has arrived.
    pub fn try_next(&mut self) -> Option<Incoming> {
        self.rx.try_recv().ok()
    }

    /// How many have arrived and wait to be read.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// Takes everything that has arrived, oldest first; never waits.
    pub fn drain(&mut self) -> Vec<Incoming> {
        let mut items = Vec::with_capacity(self.rx.len());
        while let Ok(item) = self.rx.try_recv() {
            items.push(item);
        }
        items
    }

    /// Takes everything that has arrived, newest first.
    pub fn drain_newest_first(&mut self) -> Vec<Incoming> {
        let mut items = self.drain();
        items.reverse();
        items
    }
}

impl Stream for IncomingStream {
    type Item = Incoming;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Incoming>> {
        self.get_mut().rx.poll_recv(cx)
    }
}

/// Every status change from the moment it was made, in order: a broadcast subscriber made by
/// [`Client::status_events`](crate::Client::status_events). Read it with
/// [`next`](Self::next) or as a [`Stream`]. Bounded: a subscriber more than 256 changes
/// behind skips the oldest and carries on with the next it still has.
pub struct StatusEvents {
    rx: BroadcastStream<Status>,
}

impl std::fmt::Debug for StatusEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusEvents").finish_non_exhaustive()
    }
}

impl StatusEvents {
    pub(crate) fn new(rx: broadcast::Receiver<Status>) -> Self {
        Self {
            rx: BroadcastStream::new(rx),
        }
    }

    /// The next status change; `None` once the client has stopped and every change was read.
    pub async fn next(&mut self) -> Option<Status> {
        std::future::poll_fn(|cx| self.poll_status(cx)).await
    }

    /// The next status change if one is there now; never waits.
    pub fn try_next(&mut self) -> Option<Status> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.poll_status(&mut cx) {
            Poll::Ready(s) => s,
            Poll::Pending => None,
        }
    }

    fn poll_status(&mut self, cx: &mut Context<'_>) -> Poll<Option<Status>> {
        loop {
            match std::task::ready!(Pin::new(&mut self.rx).poll_next(cx)) {
                Some(Ok(s)) => return Poll::Ready(Some(s)),
                // Lagged: the oldest changes are gone; go on with the next one still there.
                Some(Err(_)) => {}
                None => return Poll::Ready(None),
            }
        }
    }
}

impl Stream for StatusEvents {
    type Item = Status;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Status>> {
        self.get_mut().poll_status(cx)
    }
}

/// A [`Sink`](futures_sink::Sink) of actions, made by
/// [`Client::emitter`](crate::Client::emitter): each item `(name, data)` is sent like
/// [`Client::emit`](crate::Client::emit), in order. `poll_ready` waits while the client's
/// command queue is full; a full offline buffer fails the send with [`Error::BufferFull`] (the
/// sink reports it at the next `poll_ready`, `poll_flush` or `poll_close`).
pub struct Emitter {
    /// The client's command queue (`None` once the sink is closed).
    tx: Option<crate::queue::Sender<Command>>,
    /// The answers of sent actions not yet checked, oldest first.
    unchecked: std::collections::VecDeque<tokio::sync::oneshot::Receiver<Result<(), Error>>>,
}

impl std::fmt::Debug for Emitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emitter")
            .field("unchecked", &self.unchecked.len())
            .finish_non_exhaustive()
    }
}

impl Emitter {
    pub(crate) fn new(tx: crate::queue::Sender<Command>) -> Self {
        Self {
            tx: Some(tx),
            unchecked: std::collections::VecDeque::new(),
        }
    }

    /// Checks the answers that have come, without waiting: the first failure is returned.
    fn check_answered(&mut self, cx: &mut Context<'_>) -> Result<(), Error> {
        while let Some(rx) = self.unchecked.front_mut() {
            match Pin::new(rx).poll(cx) {
                Poll::Ready(answer) => {
                    self.unchecked.pop_front();
                    answer.map_err(|_| Error::Closed)??;
                }
                Poll::Pending => break,
            }
        }
        Ok(())
    }

    /// Waits for the answers of every action sent so far.
    fn poll_all_answered(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.check_answered(cx)?;
        if self.unchecked.is_empty() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
}

impl<N: Into<String>, D: Into<Value>> futures_sink::Sink<(N, D)> for Emitter {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        this.check_answered(cx)?;
        match &this.tx {
            Some(tx) => tx.poll_room(cx).map_err(|_| Error::Closed),
            None => Poll::Ready(Err(Error::Closed)),
        }
    }

    fn start_send(self: Pin<&mut Self>, (name, data): (N, D)) -> Result<(), Error> {
        let this = self.get_mut();
        let action = Action::new(name, data, crate::unix_millis());
        let (reply, rx) = tokio::sync::oneshot::channel();
        this.tx
            .as_ref()
            .ok_or(Error::Closed)?
            .send_after_room(Command::Emit { action, reply })
            .map_err(|_| Error::Closed)?;
        this.unchecked.push_back(rx);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.get_mut().poll_all_answered(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_all_answered(cx))?;
        this.tx = None;
        Poll::Ready(Ok(()))
    }
}
