//! The pull-style inbox (aesm's per-connection queues, NetStructer's receive buffer): messages
//! that no handler takes are queued, oldest first, for the application to consume.

use std::net::SocketAddr;
use std::time::SystemTime;

use cypherwire_wire::Message;
use tokio::sync::mpsc;

use crate::id::ConnectionId;

/// One received message waiting in the inbox.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct InboxItem {
    /// The connection it came on.
    pub connection: ConnectionId,
    /// The peer's address.
    pub peer: SocketAddr,
    /// When it arrived (server's wall clock).
    pub received_at: SystemTime,
    /// The message: a [`Request`](cypherwire_wire::Request) (answer it with
    /// [`ServerHandle::send_message`](crate::ServerHandle::send_message)) or an
    /// [`Action`](cypherwire_wire::Action).
    pub message: Message,
}

/// The consuming end of the inbox, taken once with
/// [`ServerHandle::take_inbox`](crate::ServerHandle::take_inbox) (a single consumer). Bounded:
/// when it is full, connections that have messages for it stop being read until there is room
/// (backpressure, nothing is dropped). Read it with [`next`](Self::next), as a
/// [`Stream`](futures_core::Stream), or take what is waiting at once with
/// [`drain`](Self::drain).
#[derive(Debug)]
pub struct Inbox {
    rx: mpsc::Receiver<InboxItem>,
}

impl Inbox {
    pub(crate) fn new(rx: mpsc::Receiver<InboxItem>) -> Self {
        Self { rx }
    }

    /// The oldest waiting message; `None` once the server has stopped.
    pub async fn next(&mut self) -> Option<InboxItem> {
        self.rx.recv().await
    }

    /// The oldest waiting message, if one is there now.
    pub fn try_next(&mut self) -> Option<InboxItem> {
        self.rx.try_recv().ok()
    }

    /// How many messages are waiting now.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// Whether no message is waiting now.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// Takes every message waiting now, oldest first (aesm's `getDataOrdinal(oldToNew=True)`);
    /// never waits. The room they took is free again, so connections held back by a full
    /// inbox are read again.
    pub fn drain(&mut self) -> Vec<InboxItem> {
        let mut items = Vec::with_capacity(self.rx.len());
        while let Ok(item) = self.rx.try_recv() {
            items.push(item);
        }
        items
    }

    /// Takes every message waiting now, newest first (aesm's `getDataOrdinal(oldToNew=False)`).
    pub fn drain_newest_first(&mut self) -> Vec<InboxItem> {
        let mut items = self.drain();
        items.reverse();
        items
    }
}

impl futures_core::Stream for Inbox {
    type Item = InboxItem;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<InboxItem>> {
        self.get_mut().rx.poll_recv(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.rx.len(), None)
    }
}
