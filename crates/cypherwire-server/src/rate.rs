//! Per-address handshake rate limiting (sans-IO token buckets, bounded table).

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Instant;

/// A token-bucket limit: `per_second` steady rate, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RateLimit {
    /// Tokens added per second.
    pub per_second: f64,
    /// Bucket size.
    pub burst: f64,
}

impl RateLimit {
    /// A limit of `per_second` with bursts of `burst`.
    pub fn new(per_second: f64, burst: f64) -> Self {
        Self { per_second, burst }
    }
}

/// Token buckets per key; at most `capacity` keys (idle, full buckets are dropped first).
#[derive(Debug)]
pub(crate) struct Buckets<K> {
    limit: RateLimit,
    capacity: usize,
    table: HashMap<K, (f64, Instant)>,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    pub(crate) fn new(limit: RateLimit, capacity: usize) -> Self {
        Self {
            limit,
            capacity,
            table: HashMap::new(),
        }
    }

    /// Takes one token for `key` at `now`; false if its bucket is empty.
    pub(crate) fn allow(&mut self, key: &K, now: Instant) -> bool {
        if !self.table.contains_key(key) && self.table.len() >= self.capacity {
            // Drop buckets that have refilled completely: they carry no state.
            let (rate, burst) = (self.limit.per_second, self.limit.burst);
            self.table.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < burst
            });
            if self.table.len() >= self.capacity {
                // Still full of active sources: refuse newcomers rather than forget limits.
                return false;
            }
        }
        let (tokens, at) = self
            .table
            .entry(key.clone())
            .or_insert((self.limit.burst, now));
        let refill = now.saturating_duration_since(*at).as_secs_f64() * self.limit.per_second;
        *tokens = (*tokens + refill).min(self.limit.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The default per-address handshake limit: 20 per second, bursts of 5 (WireGuard's).
pub const DEFAULT_HANDSHAKE_RATE: RateLimit = RateLimit {
    per_second: 20.0,
    burst: 5.0,
};

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    #[allow(clippy::disallowed_methods, reason = "test epoch")]
    fn bursts_then_steady_rate_and_bounded_table() {
        let t0 = Instant::now();
        let mut b = Buckets::new(RateLimit::new(2.0, 3.0), 2);
        assert!((0..3).all(|_| b.allow(&"a", t0)));
        assert!(!b.allow(&"a", t0), "burst exhausted");
        assert!(
            b.allow(&"a", t0 + Duration::from_millis(500)),
            "one token after 0.5 s at 2/s"
        );
        assert!(!b.allow(&"a", t0 + Duration::from_millis(500)));
        assert!(b.allow(&"b", t0));
        // Table full of active sources: a third is refused rather than resetting anyone.
        assert!(!b.allow(&"c", t0));
        // Once "a" and "b" have refilled, they are dropped and "c" gets in.
        assert!(b.allow(&"c", t0 + Duration::from_secs(10)));
    }
}
