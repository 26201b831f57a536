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

/// The consuming end of the inbox. Bounded: when it is full, connections that have messages
/// for it stop being read until there is room (backpressure, nothing is dropped).
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
}
