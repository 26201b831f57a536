//! What a connection's writer sends, and the bounded outbox other tasks reach it through.

use std::sync::Arc;

use cypherwire_wire::{CloseCode, Message};
use tokio::sync::mpsc;

use crate::sessions::{Attachment, Refused, SessionState, Sessions};

/// What the writer task sends.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// An envelope.
    Message(Message),
    /// An envelope also kept elsewhere (a session's response cache or push replay buffer).
    Shared(Arc<Message>),
    /// A `Close` envelope, then the authenticated end of stream.
    Close(CloseCode, &'static str),
}

/// The sending side of one connection's bounded outbox.
#[derive(Debug, Clone)]
pub(crate) struct Outbox(mpsc::Sender<Outgoing>);

impl Outbox {
    /// An outbox of `capacity` messages and the receiver its writer drains.
    pub(crate) fn new(capacity: usize) -> (Self, mpsc::Receiver<Outgoing>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Self(tx), rx)
    }

    /// Queues without waiting (pushes and broadcasts: a full outbox is a slow consumer).
    pub(crate) fn try_send(&self, out: Outgoing) -> Result<(), Refused> {
        self.0.try_send(out).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Refused::Full,
            mpsc::error::TrySendError::Closed(_) => Refused::Closed,
        })
    }

    /// Queues without waiting; a full outbox hands `out` back (a closed one drops it: nobody
    /// is there to read it).
    pub(crate) fn try_send_back(&self, out: Outgoing) -> Option<Outgoing> {
        match self.0.try_send(out) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => None,
            Err(mpsc::error::TrySendError::Full(out)) => Some(out),
        }
    }

    /// Queues, waiting for room (answers: the connection's own reading waits instead).
    /// False if the writer is gone.
    pub(crate) async fn send(&self, out: Outgoing) -> bool {
        self.0.send(out).await.is_ok()
    }
}

impl Attachment for Outbox {
    fn offer(&self, msg: Arc<Message>) -> Result<(), Refused> {
        self.try_send(Outgoing::Shared(msg))
    }
}

/// A session whose attached connection is reached through its outbox.
pub(crate) type Session = SessionState<Outbox>;

/// The server's session table.
pub(crate) type SessionTable = Sessions<Outbox>;
