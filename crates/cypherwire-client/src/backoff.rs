//! Reconnect backoff (sans-IO): exponential with full jitter.

use std::time::Duration;

/// Exponential backoff with full jitter: attempt `n` (from 0) waits a uniformly random time in
/// `[0, min(max, initial × multiplier^n)]`.
///
/// | setting | default |
/// | --- | --- |
/// | `initial` | 100 ms |
/// | `max` | 5 s |
/// | `multiplier` | 2 |
/// | `give_up_after_attempts` | never |
/// | `give_up_after` (time since the connection was lost) | never |
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Backoff {
    /// The first ceiling.
    pub initial: Duration,
    /// The largest ceiling.
    pub max: Duration,
    /// Growth per attempt.
    pub multiplier: f64,
    /// Stop after this many failed attempts in a row.
    pub give_up_after_attempts: Option<u32>,
    /// Stop after being offline this long.
    pub give_up_after: Option<Duration>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            multiplier: 2.0,
            give_up_after_attempts: None,
            give_up_after: None,
        }
    }
}

impl Backoff {
    /// The ceiling for attempt `n` (from 0).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exp = self
            .multiplier
            .powi(i32::try_from(attempt.min(64)).unwrap_or(64));
        let secs = (self.initial.as_secs_f64() * exp).min(self.max.as_secs_f64());
        Duration::from_secs_f64(secs.max(0.0))
    }

    /// The delay before attempt `n`, given 64 random bits (full jitter).
    pub fn delay(&self, attempt: u32, random: u64) -> Duration {
        let ceiling = self.ceiling(attempt);
        // Uniform in [0, 1].
        #[expect(clippy::cast_precision_loss, reason = "a fraction; 53 bits are plenty")]
        let fraction = (random >> 11) as f64 / (1u64 << 53) as f64;
        ceiling.mul_f64(fraction)
    }

    /// Whether to stop after `failed` attempts in a row, `offline_for` since the loss.
    pub fn gives_up(&self, failed: u32, offline_for: Duration) -> bool {
        self.give_up_after_attempts.is_some_and(|n| failed >= n)
            || self.give_up_after.is_some_and(|d| offline_for >= d)
    }

    pub(crate) fn validate(&self) -> Result<(), crate::Error> {
        if self.initial.is_zero()
            || self.max < self.initial
            || !self.multiplier.is_finite()
            || self.multiplier < 1.0
        {
            return Err(crate::Error::Config(
                "backoff needs initial > 0, max >= initial and a finite multiplier >= 1",
            ));
        }
        Ok(())
    }
}

/// A small generator for jitter (xorshift64*), seeded from the process's hash randomness.
#[derive(Debug, Clone)]
pub(crate) struct Jitter(u64);

impl Jitter {
    pub(crate) fn new() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x9e37_79b9_7f4a_7c15);
        Self(h.finish() | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_grow_and_cap() {
        let b = Backoff::default();
        assert_eq!(b.ceiling(0), Duration::from_millis(100));
        assert_eq!(b.ceiling(1), Duration::from_millis(200));
        assert_eq!(b.ceiling(5), Duration::from_millis(3200));
        assert_eq!(b.ceiling(6), Duration::from_secs(5));
        assert_eq!(b.ceiling(1000), Duration::from_secs(5));
    }

    #[test]
    fn full_jitter_spans_zero_to_the_ceiling() {
        let b = Backoff::default();
        assert_eq!(b.delay(3, 0), Duration::ZERO);
        assert!(b.delay(3, u64::MAX) <= b.ceiling(3));
        assert!(b.delay(3, u64::MAX) > b.ceiling(3).mul_f64(0.99));
        let mut j = Jitter::new();
        let delays: Vec<_> = (0..1000).map(|_| b.delay(2, j.next())).collect();
        let mean = delays.iter().sum::<Duration>() / 1000;
        // Uniform on [0, 400 ms]: the mean is close to 200 ms.
        assert!(
            mean > Duration::from_millis(170) && mean < Duration::from_millis(230),
            "{mean:?}"
        );
    }

    #[test]
    fn give_up_policies() {
        let mut b = Backoff::default();
        assert!(!b.gives_up(1_000_000, Duration::from_secs(1_000_000)));
        b.give_up_after_attempts = Some(3);
        assert!(!b.gives_up(2, Duration::ZERO));
        assert!(b.gives_up(3, Duration::ZERO));
        b.give_up_after_attempts = None;
        b.give_up_after = Some(Duration::from_secs(10));
        assert!(b.gives_up(0, Duration::from_secs(10)));
        b.multiplier = 0.5;
        assert!(b.validate().is_err());
    }
}
