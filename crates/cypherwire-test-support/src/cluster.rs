//! What the cluster tests watch of their clients: pushed numbers, connection counts, and the
//! status after a dropped connection.

use std::time::Duration;

use cypherwire_client::{Incoming, IncomingStream, Status, StatusEvents};
use cypherwire_server::ServerHandle;

/// The data of pushes and actions as numbers, until `n` arrived or nothing came for `quiet`.
///
/// # Panics
/// If a push or action carries something else than an integer.
#[allow(
    clippy::expect_used,
    reason = "test helper: failing loudly is the point"
)]
pub async fn numbers(incoming: &mut IncomingStream, n: usize, quiet: Duration) -> Vec<i64> {
    let mut got = Vec::new();
    while got.len() < n {
        match tokio::time::timeout(quiet, incoming.next()).await {
            Ok(Some(Incoming::Push(p))) => got.push(p.data.as_i64().expect("a number")),
            Ok(Some(Incoming::Action(a))) => got.push(a.data.as_i64().expect("a number")),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    got
}

/// Waits (up to 5 s) until the servers hold `n` connections between them.
///
/// # Panics
/// If they do not.
#[allow(clippy::panic, reason = "test helper: failing loudly is the point")]
pub async fn settle(handles: &[ServerHandle], n: usize) {
    for _ in 0..500 {
        if handles.iter().map(ServerHandle::count).sum::<usize>() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("connections did not settle at {n}");
}

/// Whether the session resumed, at the first `Online` after the connection dropped (an
/// `Online` of the connection before may still be in the queue).
///
/// # Panics
/// If the client is not online again within 20 s.
#[allow(
    clippy::expect_used,
    reason = "test helper: failing loudly is the point"
)]
pub async fn online_after_a_drop(status: &mut StatusEvents) -> bool {
    tokio::time::timeout(Duration::from_secs(20), async {
        let mut dropped = false;
        loop {
            match status.next().await {
                Some(Status::Offline { .. } | Status::Reconnecting { .. }) => dropped = true,
                Some(Status::Online { resumed }) if dropped => return resumed,
                _ => {}
            }
        }
    })
    .await
    .expect("online again")
}

/// The first status on `status` that `pick` turns into a text, within 5 s (`what` names it
/// in the panic).
#[allow(
    clippy::expect_used,
    reason = "test helper: failing loudly is the point"
)]
async fn next_text(
    status: &mut StatusEvents,
    what: &str,
    pick: impl Fn(Status) -> Option<String>,
) -> String {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(text) = status.next().await.and_then(&pick) {
                return text;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {what} status within 5 s"))
}

/// The reason of the next `Offline` status, as users read it.
///
/// # Panics
/// If none comes within 5 s.
pub async fn offline_reason(status: &mut StatusEvents) -> String {
    next_text(status, "Offline", |s| match s {
        Status::Offline { reason } => Some(reason.to_string()),
        _ => None,
    })
    .await
}

/// The reason of the next [`Status::Kicked`] on `status` (other statuses are skipped).
///
/// # Panics
/// If none comes within 5 s.
pub async fn kicked_reason(status: &mut StatusEvents) -> String {
    next_text(status, "Kicked", |s| match s {
        Status::Kicked { reason } => Some(reason),
        _ => None,
    })
    .await
}
