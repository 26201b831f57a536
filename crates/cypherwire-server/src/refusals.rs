//! What the server does with a connection it refuses before the handshake: counts the reason,
//! logs it (at most one line per reason every [`LOG_EVERY`], saying how many were not logged),
//! and tells the peer why with a [`cypherwire_session::Refusal`] written by a small, bounded
//! set of tasks (beyond [`MAX_REFUSAL_WRITERS`] at once, the connection is just closed).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cypherwire_session::Refusal as WireRefusal;
use cypherwire_wire::CloseCode;
use tokio::io::AsyncWrite;
use tokio::sync::Semaphore;

use crate::error::Refusal;

/// At most one log line per refusal reason this often.
pub(crate) const LOG_EVERY: Duration = Duration::from_secs(5);

/// Refusals written at once; more refused connections are closed without a word.
pub(crate) const MAX_REFUSAL_WRITERS: usize = 64;

/// How long a refused peer should wait before it tries again when the server is over a limit.
pub(crate) const OVERLOADED_RETRY: Duration = Duration::from_secs(1);

/// Connections refused before their handshake, by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RefusalCounts {
    /// The source was banned.
    pub banned: u64,
    /// The address opened connections faster than its handshake rate limit.
    pub rate_limited: u64,
    /// A connection, per-address or handshake limit was reached.
    pub over_capacity: u64,
    /// The accept hook said no.
    pub hook: u64,
    /// The server was shutting down.
    pub shutting_down: u64,
}

const REASONS: usize = 5;

fn slot(reason: Refusal) -> usize {
    match reason {
        Refusal::Banned => 0,
        Refusal::RateLimited => 1,
        Refusal::TooManyConnections | Refusal::TooManyFromAddress | Refusal::TooManyHandshakes => 2,
        Refusal::Hook => 3,
        Refusal::ShuttingDown => 4,
    }
}

fn name(reason: Refusal) -> &'static str {
    match reason {
        Refusal::Banned => "banned",
        Refusal::RateLimited => "handshake rate limit",
        Refusal::TooManyConnections => "connection limit",
        Refusal::TooManyFromAddress => "per-address connection limit",
        Refusal::TooManyHandshakes => "handshake limit",
        Refusal::Hook => "accept hook",
        Refusal::ShuttingDown => "shutting down",
    }
}

/// What the peer is told for `reason`.
pub(crate) fn wire_refusal(reason: Refusal, retry_after: Option<Duration>) -> WireRefusal {
    let code = match reason {
        // The application does not admit this address: trying again will not help.
        Refusal::Banned | Refusal::Hook => CloseCode::BANNED,
        Refusal::ShuttingDown => CloseCode::GOING_AWAY,
        Refusal::RateLimited
        | Refusal::TooManyConnections
        | Refusal::TooManyFromAddress
        | Refusal::TooManyHandshakes => CloseCode::OVERLOADED,
    };
    let retry_after = retry_after.or(match reason {
        Refusal::Banned | Refusal::Hook => None,
        _ => Some(OVERLOADED_RETRY),
    });
    WireRefusal::new(code, retry_after)
}

/// One reason's log throttle: when the last line was written and how many refusals since.
#[derive(Debug, Default)]
struct Throttle {
    last: Option<Instant>,
    unlogged: u64,
}

impl Throttle {
    /// Whether to write a line now, and how many refusals of this reason went unlogged before
    /// it.
    fn note(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(at) if now.saturating_duration_since(at) < LOG_EVERY => {
                self.unlogged += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.unlogged))
            }
        }
    }
}

/// The server's refusal book-keeping.
pub(crate) struct Refusals {
    counts: [AtomicU64; REASONS],
    throttles: std::sync::Mutex<[Throttle; REASONS]>,
    writers: Arc<Semaphore>,
}

impl Default for Refusals {
    fn default() -> Self {
        Self {
            counts: Default::default(),
            throttles: Default::default(),
            writers: Arc::new(Semaphore::new(MAX_REFUSAL_WRITERS)),
        }
    }
}

impl Refusals {
    /// Counts and (throttled) logs a refusal of `peer` for `reason` at `now`.
    pub(crate) fn record(&self, peer: SocketAddr, reason: Refusal, now: Instant) {
        let i = slot(reason);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let unlogged = self
            .throttles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)[i]
            .note(now);
        if let Some(unlogged) = unlogged {
            if unlogged > 0 {
                tracing::warn!(%peer, reason = name(reason), unlogged, "connection refused (and {unlogged} more since the last line)");
            } else {
                tracing::warn!(%peer, reason = name(reason), "connection refused");
            }
        }
    }

    /// Tells the peer of `stream` why it is refused, on a task of its own, unless
    /// [`MAX_REFUSAL_WRITERS`] are busy (then the stream is just closed).
    pub(crate) fn tell<S>(&self, stream: S, refusal: WireRefusal)
    where
        S: AsyncWrite + Unpin + Send + 'static,
    {
        let Ok(permit) = self.writers.clone().try_acquire_owned() else {
            return;
        };
        tokio::spawn(async move {
            let _permit = permit;
            let mut stream = stream;
            let _ = cypherwire_session::refuse(&mut stream, refusal).await;
        });
    }

    /// The counts so far.
    pub(crate) fn counts(&self) -> RefusalCounts {
        let n = |i: usize| self.counts[i].load(Ordering::Relaxed);
        RefusalCounts {
            banned: n(0),
            rate_limited: n(1),
            over_capacity: n(2),
            hook: n(3),
            shutting_down: n(4),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[expect(clippy::disallowed_methods, reason = "a fixed origin for virtual time")]
    fn origin() -> Instant {
        Instant::now()
    }

    #[test]
    fn one_line_per_reason_per_period_saying_how_many_were_not_logged() {
        let mut t = Throttle::default();
        let t0 = origin();
        assert_eq!(t.note(t0), Some(0));
        for i in 1..=199 {
            assert_eq!(t.note(t0 + Duration::from_millis(i * 10)), None);
        }
        assert_eq!(t.note(t0 + LOG_EVERY), Some(199));
        assert_eq!(t.note(t0 + LOG_EVERY + Duration::from_millis(1)), None);
    }

    #[test]
    fn counts_are_kept_by_reason() {
        let r = Refusals::default();
        let peer = SocketAddr::from(([127, 0, 0, 1], 9));
        let now = origin();
        r.record(peer, Refusal::Banned, now);
        r.record(peer, Refusal::RateLimited, now);
        r.record(peer, Refusal::TooManyConnections, now);
        r.record(peer, Refusal::TooManyHandshakes, now);
        let c = r.counts();
        assert_eq!(
            (c.banned, c.rate_limited, c.over_capacity, c.hook),
            (1, 1, 2, 0)
        );
    }

    #[test]
    fn the_peer_is_told_overloaded_with_a_wait_and_banned_without() {
        let o = wire_refusal(Refusal::RateLimited, None);
        assert_eq!(
            (o.code, o.retry_after),
            (CloseCode::OVERLOADED, Some(OVERLOADED_RETRY))
        );
        let b = wire_refusal(Refusal::Banned, Some(Duration::from_secs(7)));
        assert_eq!(
            (b.code, b.retry_after),
            (CloseCode::BANNED, Some(Duration::from_secs(7)))
        );
        assert_eq!(wire_refusal(Refusal::Hook, None).retry_after, None);
    }
}
