//! Queueing to one connection: through its session (numbered pushes) or straight to its
//! outbox, with the slow-consumer policy.

use std::sync::atomic::Ordering;

use cypherwire_wire::Value;

use crate::error::Error;
use crate::events::DisconnectReason;
use crate::id::ConnectionId;
use crate::outgoing::Outgoing;
use crate::registry::Link;
use crate::sessions::Refused;
use crate::shared::Shared;

/// Pushes through a connection's session (numbered, kept for replay after a cut).
pub(crate) fn push_to(shared: &Shared, id: ConnectionId, data: Value) -> Result<(), Error> {
    let link = shared
        .registry
        .link(id)
        .ok_or(Error::UnknownConnection(id))?;
    push_via(shared, id, &link, data)
}

/// [`push_to`] for a connection whose link the caller holds (no second registry lookup).
pub(crate) fn push_via(
    shared: &Shared,
    id: ConnectionId,
    link: &Link,
    data: Value,
) -> Result<(), Error> {
    match link.session().push(data) {
        Ok(()) => {
            shared.stats.pushes.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Err(crate::sessions::PushFailure::SlowConsumer(conn)) => {
            shared.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
            if let Some(l) = shared.registry.link(conn) {
                l.stop.send_replace(Some(DisconnectReason::SlowConsumer));
            }
            Err(Error::SlowConsumer(id))
        }
    }
}

/// Queues an envelope to one connection, outside its session's numbering.
pub(crate) fn deliver_to(shared: &Shared, id: ConnectionId, msg: Outgoing) -> Result<(), Error> {
    let link = shared
        .registry
        .link(id)
        .ok_or(Error::UnknownConnection(id))?;
    deliver_via(shared, id, &link, msg)
}

/// [`deliver_to`] for a connection whose link the caller holds.
pub(crate) fn deliver_via(
    shared: &Shared,
    id: ConnectionId,
    link: &Link,
    msg: Outgoing,
) -> Result<(), Error> {
    match link.outbox.try_send(msg) {
        Ok(()) => {
            shared.stats.pushes.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Err(Refused::Full) => {
            // Declared policy: never block, never grow; cut the slow consumer.
            shared.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
            link.stop.send_replace(Some(DisconnectReason::SlowConsumer));
            Err(Error::SlowConsumer(id))
        }
        Err(Refused::Closed) => Err(Error::UnknownConnection(id)),
    }
}
