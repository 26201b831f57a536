//! Attempt counting and bans (sans-IO), shared by the server and the mesh.
//!
//! Call [`AttemptLimiter::check`] **before** any cryptographic work for a source (no argon2,
//! no Diffie–Hellman for a banned source), then [`record_failure`](AttemptLimiter::record_failure)
//! or [`record_success`](AttemptLimiter::record_success) with the outcome. A source that fails
//! `max_attempts` times within `window` is banned; each further ban of the same source lasts
//! twice as long as the previous one, up to `max_ban`. The table holds at most `capacity`
//! sources.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Settings of an [`AttemptLimiter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BanPolicy {
    /// Failures allowed within `window` before a ban (default 5).
    pub max_attempts: u32,
    /// How long failures are remembered (default 15 min).
    pub window: Duration,
    /// First ban's length (default 15 min).
    pub ban: Duration,
    /// Longest ban after escalation (default 24 h).
    pub max_ban: Duration,
    /// Most sources tracked at once (default 100,000).
    pub capacity: usize,
}

impl Default for BanPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            window: Duration::from_secs(15 * 60),
            ban: Duration::from_secs(15 * 60),
            max_ban: Duration::from_secs(24 * 3600),
            capacity: 100_000,
        }
    }
}

/// A source is banned until the given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Banned {
    /// When the ban ends.
    pub until: Instant,
}

#[derive(Debug, Clone)]
struct Record {
    failures: u32,
    window_start: Instant,
    banned_until: Option<Instant>,
    bans: u32,
    last_seen: Instant,
}

/// Counts failed attempts per source and bans. Generic over the source key (an IP address, a
/// peer id, or a pair of both).
#[derive(Debug)]
pub struct AttemptLimiter<K> {
    policy: BanPolicy,
    table: HashMap<K, Record>,
}

impl<K: Hash + Eq + Clone> AttemptLimiter<K> {
    /// A limiter with `policy`.
    ///
    /// # Errors
    /// [`Error::Config`] for zero attempts, window, ban or capacity, or `max_ban < ban`.
    pub fn new(policy: BanPolicy) -> Result<Self> {
        if policy.max_attempts == 0
            || policy.window.is_zero()
            || policy.ban.is_zero()
            || policy.capacity == 0
            || policy.max_ban < policy.ban
        {
            return Err(Error::Config(
                "ban policy values must be non-zero and max_ban >= ban",
            ));
        }
        Ok(Self {
            policy,
            table: HashMap::new(),
        })
    }

    /// The policy in force.
    pub fn policy(&self) -> BanPolicy {
        self.policy
    }

    /// Whether `key` may attempt now. Cheap: call it before any expensive work.
    ///
    /// # Errors
    /// [`Banned`] with the ban's end.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), Banned> {
        match self.table.get(key).and_then(|r| r.banned_until) {
            Some(until) if now < until => Err(Banned { until }),
            _ => Ok(()),
        }
    }

    /// Records a failed attempt; returns the ban it caused, if any.
    pub fn record_failure(&mut self, key: &K, now: Instant) -> Option<Banned> {
        let policy = self.policy;
        let r = self.record(key, now);
        if now.saturating_duration_since(r.window_start) >= policy.window {
            r.failures = 0;
            r.window_start = now;
        }
        r.failures += 1;
        if r.failures < policy.max_attempts {
            return None;
        }
        let factor = 1u32.checked_shl(r.bans.min(16)).unwrap_or(u32::MAX);
        let length = policy.ban.saturating_mul(factor).min(policy.max_ban);
        let until = now + length;
        r.banned_until = Some(until);
        r.bans += 1;
        r.failures = 0;
        r.window_start = now;
        Some(Banned { until })
    }

    /// Records a success: forgets the source's failures (its ban history stays, so a later ban
    /// still escalates).
    pub fn record_success(&mut self, key: &K) {
        if let Some(r) = self.table.get_mut(key) {
            r.failures = 0;
        }
    }

    /// Bans `key` for `length` (an operator's decision).
    pub fn ban(&mut self, key: &K, length: Duration, now: Instant) {
        let r = self.record(key, now);
        r.banned_until = Some(now + length);
        r.bans += 1;
    }

    /// Lifts a ban and forgets the source.
    pub fn unban(&mut self, key: &K) -> bool {
        self.table.remove(key).is_some()
    }

    /// Sources banned at `now`, with the end of each ban.
    pub fn banned(&self, now: Instant) -> Vec<(K, Instant)> {
        self.table
            .iter()
            .filter_map(|(k, r)| r.banned_until.filter(|u| now < *u).map(|u| (k.clone(), u)))
            .collect()
    }

    /// Sources tracked.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The record of `key`, created (making room first) if new; marks it seen at `now`.
    fn record(&mut self, key: &K, now: Instant) -> &mut Record {
        if !self.table.contains_key(key) {
            self.make_room(now);
        }
        let r = self.table.entry(key.clone()).or_insert(Record {
            failures: 0,
            window_start: now,
            banned_until: None,
            bans: 0,
            last_seen: now,
        });
        r.last_seen = now;
        r
    }

    /// Keeps the table within capacity: drops stale records, then the least recently seen
    /// source that is not banned. Banned sources are never evicted to make room, so flooding
    /// the table cannot lift a ban.
    fn make_room(&mut self, now: Instant) {
        if self.table.len() < self.policy.capacity {
            return;
        }
        let window = self.policy.window;
        self.table.retain(|_, r| {
            let banned = r.banned_until.is_some_and(|u| now < u);
            banned || now.saturating_duration_since(r.last_seen) < window
        });
        if self.table.len() < self.policy.capacity {
            return;
        }
        let victim = self
            .table
            .iter()
            .filter(|(_, r)| r.banned_until.is_none_or(|u| now >= u))
            .min_by_key(|(_, r)| r.last_seen)
            .map(|(k, _)| k.clone());
        if let Some(k) = victim {
            self.table.remove(&k);
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, reason = "test epoch")]
mod tests {
    use super::*;

    fn policy() -> BanPolicy {
        BanPolicy {
            max_attempts: 3,
            window: Duration::from_secs(60),
            ban: Duration::from_secs(100),
            max_ban: Duration::from_secs(350),
            capacity: 4,
        }
    }

    #[test]
    fn bans_after_max_attempts_and_escalates() {
        let t0 = Instant::now();
        let mut l = AttemptLimiter::new(policy()).unwrap();
        assert_eq!(l.record_failure(&"ip", t0), None);
        assert_eq!(l.record_failure(&"ip", t0), None);
        let b = l.record_failure(&"ip", t0).unwrap();
        assert_eq!(b.until, t0 + Duration::from_secs(100));
        assert_eq!(l.check(&"ip", t0 + Duration::from_secs(99)), Err(b));
        assert!(l.check(&"ip", t0 + Duration::from_secs(100)).is_ok());
        assert!(l.check(&"other", t0).is_ok());
        // Second ban: 200 s; third: capped at 350 s.
        let t1 = t0 + Duration::from_secs(100);
        for _ in 0..2 {
            l.record_failure(&"ip", t1);
        }
        assert_eq!(
            l.record_failure(&"ip", t1).unwrap().until,
            t1 + Duration::from_secs(200)
        );
        let t2 = t1 + Duration::from_secs(200);
        for _ in 0..2 {
            l.record_failure(&"ip", t2);
        }
        assert_eq!(
            l.record_failure(&"ip", t2).unwrap().until,
            t2 + Duration::from_secs(350)
        );
    }

    #[test]
    fn window_and_success_reset_the_count() {
        let t0 = Instant::now();
        let mut l = AttemptLimiter::new(policy()).unwrap();
        l.record_failure(&1, t0);
        l.record_failure(&1, t0);
        // Outside the window: counting starts again.
        assert_eq!(l.record_failure(&1, t0 + Duration::from_secs(61)), None);
        assert_eq!(l.record_failure(&1, t0 + Duration::from_secs(61)), None);
        l.record_success(&1);
        assert_eq!(l.record_failure(&1, t0 + Duration::from_secs(62)), None);
    }

    #[test]
    fn capacity_is_bounded_and_flooding_cannot_lift_a_ban() {
        let t0 = Instant::now();
        let mut l = AttemptLimiter::new(policy()).unwrap();
        for _ in 0..3 {
            l.record_failure(&0u32, t0);
        }
        for k in 1..1000u32 {
            l.record_failure(&k, t0);
            assert!(l.len() <= 4);
        }
        assert!(
            l.check(&0, t0).is_err(),
            "the banned source survived the flood"
        );
        assert_eq!(l.banned(t0).len(), 1);
    }

    #[test]
    fn operator_ban_and_unban() {
        let t0 = Instant::now();
        let mut l = AttemptLimiter::new(policy()).unwrap();
        l.ban(&"peer", Duration::from_secs(5), t0);
        assert!(l.check(&"peer", t0).is_err());
        assert!(l.unban(&"peer"));
        assert!(l.check(&"peer", t0).is_ok());
        assert!(
            AttemptLimiter::<u8>::new(BanPolicy {
                max_attempts: 0,
                ..policy()
            })
            .is_err()
        );
    }
}
