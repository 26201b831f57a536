//! Liveness without I/O: how often a peer proves it is alive ([`HeartbeatPolicy`]) and one
//! side's view of whether the other still answers ([`LinkMonitor`]). The client's heartbeat and
//! the mesh member's link to its authenticating peer both use it; everything takes `now`.

use std::time::{Duration, Instant};

/// How often a peer proves it is alive, and how many proofs may be missed in a row before the
/// other side is declared gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeartbeatPolicy {
    /// Time between heartbeats (default 2 s).
    pub interval: Duration,
    /// Heartbeats missed in a row before the other side is declared gone (default 3).
    pub missed: u32,
}

impl HeartbeatPolicy {
    /// A policy with this interval and missed count.
    pub fn new(interval: Duration, missed: u32) -> Self {
        Self { interval, missed }
    }

    /// Silence longer than this ends a membership or a link: `interval × missed`.
    pub fn timeout(&self) -> Duration {
        self.interval.saturating_mul(self.missed)
    }

    /// Whether the policy can work: a non-zero interval and at least one miss allowed.
    pub fn is_valid(&self) -> bool {
        !self.interval.is_zero() && self.missed > 0
    }
}

impl Default for HeartbeatPolicy {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            missed: 3,
        }
    }
}

/// A change of a link's liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkChange {
    /// Heartbeats stopped being answered for the whole timeout.
    Lost,
    /// A heartbeat was answered again after [`LinkChange::Lost`].
    Regained,
}

/// One side's view of a link: is the other side still answering? Lost after silence longer
/// than the policy's timeout (reported once), regained at the next answer.
#[derive(Debug)]
pub struct LinkMonitor {
    policy: HeartbeatPolicy,
    last_ok: Instant,
    /// When [`check`](Self::check) last ran (or the monitor was made).
    last_check: Instant,
    /// Something was [`heard`](Self::heard) since the last check.
    heard: bool,
    lost: bool,
}

impl LinkMonitor {
    /// A monitor that counts from `now`.
    pub fn new(policy: HeartbeatPolicy, now: Instant) -> Self {
        Self {
            policy,
            last_ok: now,
            last_check: now,
            heard: false,
            lost: false,
        }
    }

    /// The other side sent something, noted without reading the clock (for a busy link,
    /// where every message counts): the next [`check`](Self::check) takes it as heard at the
    /// check before, the latest time it is sure of. With checks every interval, the link is then
    /// lost at the (`missed` + 1)-th check after the last message.
    pub fn heard(&mut self) {
        self.heard = true;
    }

    /// The other side answered (a heartbeat's answer, or any message that proves it is there).
    pub fn answered(&mut self, now: Instant) -> Option<LinkChange> {
        self.last_ok = now;
        std::mem::take(&mut self.lost).then_some(LinkChange::Regained)
    }

    /// Checks for silence; reports the loss once, and a regain once after it if something
    /// was [`heard`](Self::heard).
    pub fn check(&mut self, now: Instant) -> Option<LinkChange> {
        let previous = std::mem::replace(&mut self.last_check, now);
        if std::mem::take(&mut self.heard) {
            self.last_ok = self.last_ok.max(previous);
            if std::mem::take(&mut self.lost) {
                return Some(LinkChange::Regained);
            }
        }
        if !self.lost && now.saturating_duration_since(self.last_ok) > self.policy.timeout() {
            self.lost = true;
            return Some(LinkChange::Lost);
        }
        None
    }

    /// Whether the link is considered lost.
    pub fn is_lost(&self) -> bool {
        self.lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[expect(clippy::disallowed_methods, reason = "a fixed origin for virtual time")]
    fn origin() -> Instant {
        Instant::now()
    }

    #[test]
    fn link_monitor_reports_loss_once_and_regain() {
        let t0 = origin();
        let mut l = LinkMonitor::new(HeartbeatPolicy::new(S, 2), t0);
        assert_eq!(l.check(t0 + 2 * S), None);
        assert_eq!(l.check(t0 + 3 * S), Some(LinkChange::Lost));
        assert_eq!(l.check(t0 + 4 * S), None);
        assert!(l.is_lost());
        assert_eq!(l.answered(t0 + 5 * S), Some(LinkChange::Regained));
        assert_eq!(l.answered(t0 + 6 * S), None);
    }

    #[test]
    fn what_is_heard_between_checks_counts_as_of_the_check_before() {
        let t0 = origin();
        let mut l = LinkMonitor::new(HeartbeatPolicy::new(S, 2), t0);
        assert_eq!(l.check(t0 + S), None);
        // A message between the checks at 1 s and 2 s: heard as of 1 s.
        l.heard();
        assert_eq!(l.check(t0 + 2 * S), None);
        assert_eq!(l.check(t0 + 3 * S), None);
        assert_eq!(l.check(t0 + 4 * S), Some(LinkChange::Lost));
        // Heard while lost: regained at the next check, and lost again after the timeout.
        l.heard();
        assert_eq!(l.check(t0 + 5 * S), Some(LinkChange::Regained));
        assert!(!l.is_lost());
        assert_eq!(l.check(t0 + 6 * S), None);
        assert_eq!(l.check(t0 + 7 * S), Some(LinkChange::Lost));
    }

    #[test]
    fn the_timeout_is_interval_times_missed_and_zero_parts_are_invalid() {
        let p = HeartbeatPolicy::default();
        assert_eq!((p.interval, p.missed), (2 * S, 3));
        assert_eq!(p.timeout(), 6 * S);
        assert!(p.is_valid());
        assert_eq!(
            HeartbeatPolicy::new(Duration::MAX, 2).timeout(),
            Duration::MAX
        );
        assert!(!HeartbeatPolicy::new(Duration::ZERO, 3).is_valid());
        assert!(!HeartbeatPolicy::new(S, 0).is_valid());
    }
}
