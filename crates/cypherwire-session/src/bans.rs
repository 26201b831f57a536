//! Attempt counting and bans (sans-IO), shared by the server and the mesh.
//!
//! Call [`AttemptLimiter::begin`] **before each step that tests a credential** (no argon2, no
//! Diffie–Hellman for a banned source), then [`finish`](AttemptLimiter::finish) with the
//! step's outcome. An attempt in progress counts against the source's budget: a source with
//! `f` failures in the window and `n` attempts in progress may start another only while
//! `f + n < max_attempts`, so parallel connections cannot test more guesses than the policy
//! allows. A source that fails `max_attempts` times within `window` is banned; each further
//! ban of the same source lasts twice as long as the previous one, up to `max_ban`.
//!
//! The table holds at most `capacity` sources, a hard bound: to make room it drops the least
//! recently seen source that is neither banned nor mid-attempt, and only when every source is
//! banned, the ban that ends soonest. Every operation but the listing [`banned`] is
//! O(log n).
//!
//! Servers key the table by [`SourceKey`]: an IPv4 address (also when it arrives IPv4-mapped
//! on a dual-stack socket), or an IPv6 network of [`BanPolicy::ipv6_prefix`] bits (a /64 by
//! default: one subscriber usually holds a whole /64, so a /128 key would give each of them
//! 2^64 fresh sources).
//!
//! [`banned`]: AttemptLimiter::banned

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
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
    /// First ban's length (default 1 min: a developer who mistypes a key five times is back
    /// within a minute). Each further ban of the same source lasts twice as long, up to
    /// `max_ban`, so a guesser still gets only about 35 guesses per source in its first day
    /// and 5 a day after that.
    pub ban: Duration,
    /// Longest ban after escalation (default 24 h).
    pub max_ban: Duration,
    /// Most sources tracked at once, a hard bound (default 100,000).
    pub capacity: usize,
    /// Bits of an IPv6 address that name one source (default 64; 1 to 128). Used by
    /// [`SourceKey::new`]'s callers; IPv4 sources are always single addresses.
    pub ipv6_prefix: u8,
}

impl Default for BanPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            window: Duration::from_secs(15 * 60),
            ban: Duration::from_secs(60),
            max_ban: Duration::from_secs(24 * 3600),
            capacity: 100_000,
            ipv6_prefix: 64,
        }
    }
}

impl BanPolicy {
    /// The source key of `ip` under this policy.
    pub fn source(&self, ip: IpAddr) -> SourceKey {
        SourceKey::new(ip, self.ipv6_prefix)
    }
}

/// A source address as bans and limits count it: an IPv4 address (IPv4-mapped IPv6 addresses
/// such as `::ffff:192.0.2.7` are the IPv4 address), or an IPv6 network of `prefix` bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceKey {
    net: IpAddr,
    prefix: u8,
}

impl SourceKey {
    /// The source `ip` belongs to, with IPv6 networks of `ipv6_prefix` bits (clamped to
    /// 1..=128).
    pub fn new(ip: IpAddr, ipv6_prefix: u8) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self {
                net: IpAddr::V4(v4),
                prefix: 32,
            },
            IpAddr::V6(v6) => {
                let prefix = ipv6_prefix.clamp(1, 128);
                let mask = u128::MAX << (128 - u32::from(prefix));
                Self {
                    net: IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask)),
                    prefix,
                }
            }
        }
    }

    /// The network's first address (the address itself for IPv4 and IPv6 /128).
    pub fn addr(&self) -> IpAddr {
        self.net
    }

    /// The prefix length: 32 for IPv4, the policy's for IPv6.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` belongs to this source.
    pub fn contains(&self, ip: IpAddr) -> bool {
        Self::new(ip, self.prefix) == *self
    }
}

impl fmt::Display for SourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.net {
            IpAddr::V6(_) if self.prefix < 128 => write!(f, "{}/{}", self.net, self.prefix),
            net => write!(f, "{net}"),
        }
    }
}

/// Text that is not a source as [`SourceKey`]'s `Display` writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseSourceKeyError(String);

impl fmt::Display for ParseSourceKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "not a source (an address, or ADDRESS/PREFIX): {:?}",
            self.0
        )
    }
}

impl std::error::Error for ParseSourceKeyError {}

impl std::str::FromStr for SourceKey {
    type Err = ParseSourceKeyError;

    /// Reads what `Display` writes: `192.0.2.7`, `2001:db8::/64`, `2001:db8::1` (a /128).
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let bad = || ParseSourceKeyError(s.to_owned());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, p.parse::<u8>().map_err(|_| bad())?),
            None => (s, 128),
        };
        let ip: IpAddr = addr.parse().map_err(|_| bad())?;
        if ip.is_ipv6() && !(1..=128).contains(&prefix) {
            return Err(bad());
        }
        Ok(Self::new(ip, prefix))
    }
}

impl fmt::Debug for SourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SourceKey({self})")
    }
}

/// A source is banned until the given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Banned {
    /// When the ban ends.
    pub until: Instant,
}

/// Why [`AttemptLimiter::begin`] refused an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Denied {
    /// The source is banned.
    Banned(Banned),
    /// The source's remaining budget is taken by attempts still in progress; try again when
    /// one of them finishes (it may end in a ban).
    Busy,
}

/// How an attempt started by [`AttemptLimiter::begin`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The step tested nothing conclusive (e.g. a handshake's first step in a mode that tests
    /// the credential later, or an I/O error).
    Undecided,
    /// The credential was right.
    Succeeded,
    /// The credential was wrong (or the input was forged).
    Failed,
}

#[derive(Debug, Clone)]
struct Record {
    failures: u32,
    window_start: Instant,
    banned_until: Option<Instant>,
    bans: u32,
    last_seen: Instant,
    in_flight: u32,
    /// Tie-breaker of the record's keys in the two orders.
    serial: u64,
}

impl Record {
    fn banned_at(&self, now: Instant) -> Option<Instant> {
        self.banned_until.filter(|u| now < *u)
    }
}

/// Counts failed attempts per source and bans. Generic over the source key (a [`SourceKey`],
/// a peer id, or a pair of both).
#[derive(Debug)]
pub struct AttemptLimiter<K> {
    policy: BanPolicy,
    table: HashMap<K, Record>,
    /// Sources without a ban on record, least recently seen first.
    idle: BTreeMap<(Instant, u64), K>,
    /// Sources with a ban on record (possibly expired), ending soonest first.
    bans: BTreeMap<(Instant, u64), K>,
    serial: u64,
}

impl<K: Hash + Eq + Clone> AttemptLimiter<K> {
    /// A limiter with `policy`.
    ///
    /// # Errors
    /// [`Error::Config`] for zero attempts, window, ban or capacity, `max_ban < ban`, or an
    /// IPv6 prefix outside 1..=128.
    pub fn new(policy: BanPolicy) -> Result<Self> {
        if policy.max_attempts == 0
            || policy.window.is_zero()
            || policy.ban.is_zero()
            || policy.capacity == 0
            || policy.max_ban < policy.ban
            || !(1..=128).contains(&policy.ipv6_prefix)
        {
            return Err(Error::Config(
                "ban policy values must be non-zero, max_ban >= ban, ipv6_prefix in 1..=128",
            ));
        }
        Ok(Self {
            policy,
            table: HashMap::new(),
            idle: BTreeMap::new(),
            bans: BTreeMap::new(),
            serial: 0,
        })
    }

    /// The policy in force.
    pub fn policy(&self) -> BanPolicy {
        self.policy
    }

    /// Whether `key` is free of bans now. Cheap: call it before any expensive work. It does
    /// not reserve an attempt: a step that tests a credential uses [`begin`](Self::begin).
    ///
    /// # Errors
    /// [`Banned`] with the ban's end.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), Banned> {
        match self.table.get(key).and_then(|r| r.banned_at(now)) {
            Some(until) => Err(Banned { until }),
            None => Ok(()),
        }
    }

    /// Reserves one attempt for `key`, to be ended by [`finish`](Self::finish) whatever
    /// happens. Refused while the source is banned, or while its failures in the window plus
    /// its attempts in progress already reach `max_attempts`.
    ///
    /// # Errors
    /// [`Denied::Banned`], or [`Denied::Busy`] (also when the table is full of sources that
    /// are all mid-attempt).
    pub fn begin(&mut self, key: &K, now: Instant) -> Result<(), Denied> {
        let policy = self.policy;
        let r = self.record(key, now).ok_or(Denied::Busy)?;
        if let Some(until) = r.banned_at(now) {
            return Err(Denied::Banned(Banned { until }));
        }
        if now.saturating_duration_since(r.window_start) >= policy.window {
            r.failures = 0;
            r.window_start = now;
        }
        if r.failures.saturating_add(r.in_flight) >= policy.max_attempts {
            return Err(Denied::Busy);
        }
        r.in_flight += 1;
        Ok(())
    }

    /// Ends an attempt started by [`begin`](Self::begin); returns the ban it caused, if any.
    pub fn finish(&mut self, key: &K, outcome: Outcome, now: Instant) -> Option<Banned> {
        if let Some(r) = self.table.get_mut(key) {
            r.in_flight = r.in_flight.saturating_sub(1);
        }
        match outcome {
            Outcome::Failed => return self.record_failure(key, now),
            Outcome::Succeeded => self.record_success(key),
            Outcome::Undecided => {}
        }
        // A source with nothing on record is not kept: the table holds the sources that
        // failed, are banned, or are mid-attempt.
        if let Some(r) = self.table.get(key)
            && r.failures == 0
            && r.in_flight == 0
            && r.bans == 0
            && let Some(r) = self.table.remove(key)
        {
            self.unindex(&r);
        }
        None
    }

    /// Records a failed attempt; returns the ban it caused, if any.
    pub fn record_failure(&mut self, key: &K, now: Instant) -> Option<Banned> {
        let policy = self.policy;
        let r = self.record_or_evict(key, now)?;
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
        r.failures = 0;
        r.window_start = now;
        let until = now + length;
        self.set_ban(key, until);
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
        if self.record_or_evict(key, now).is_some() {
            self.set_ban(key, now + length);
        }
    }

    /// Lifts a ban and forgets the source.
    pub fn unban(&mut self, key: &K) -> bool {
        match self.table.remove(key) {
            Some(r) => {
                self.unindex(&r);
                true
            }
            None => false,
        }
    }

    /// Sources banned at `now`, with the end of each ban.
    pub fn banned(&self, now: Instant) -> Vec<(K, Instant)> {
        self.bans
            .range((now, u64::MAX)..)
            .filter(|((until, _), _)| now < *until)
            .map(|((until, _), k)| (k.clone(), *until))
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

    /// Records `key`'s ban end, moving it from the idle order to the ban order.
    fn set_ban(&mut self, key: &K, until: Instant) {
        let Some(r) = self.table.get_mut(key) else {
            return;
        };
        let old = r.clone();
        r.banned_until = Some(until);
        r.bans += 1;
        let serial = r.serial;
        self.unindex(&old);
        self.bans.insert((until, serial), key.clone());
    }

    fn unindex(&mut self, r: &Record) {
        match r.banned_until {
            Some(until) => self.bans.remove(&(until, r.serial)),
            None => self.idle.remove(&(r.last_seen, r.serial)),
        };
    }

    /// The record of `key`, created if new (making room first; `None` if no record can be
    /// dropped); marks it seen at `now`.
    fn record(&mut self, key: &K, now: Instant) -> Option<&mut Record> {
        if !self.table.contains_key(key) {
            if self.table.len() >= self.policy.capacity && !self.make_room(now, false) {
                return None;
            }
            self.serial += 1;
            let r = Record {
                failures: 0,
                window_start: now,
                banned_until: None,
                bans: 0,
                last_seen: now,
                in_flight: 0,
                serial: self.serial,
            };
            self.idle.insert((now, r.serial), key.clone());
            self.table.insert(key.clone(), r);
        }
        let (banned, last, serial) = self
            .table
            .get(key)
            .map(|r| (r.banned_until.is_some(), r.last_seen, r.serial))?;
        if !banned && last != now {
            self.idle.remove(&(last, serial));
            self.idle.insert((now, serial), key.clone());
        }
        let r = self.table.get_mut(key)?;
        r.last_seen = now;
        Some(r)
    }

    /// As [`record`](Self::record), but room is always made: a failure or an operator's ban
    /// is recorded even if a source mid-attempt has to go.
    fn record_or_evict(&mut self, key: &K, now: Instant) -> Option<&mut Record> {
        if !self.table.contains_key(key) && self.table.len() >= self.policy.capacity {
            self.make_room(now, true);
        }
        self.record(key, now)
    }

    /// Drops one record: the least recently seen source without a live ban and not
    /// mid-attempt (bans that have ended count as none); else, only if `force` or it is not
    /// mid-attempt, the ban that ends soonest. Returns whether a record was dropped.
    fn make_room(&mut self, now: Instant, force: bool) -> bool {
        // Bans that have ended: their sources go back to the idle order.
        while let Some((&(until, serial), _)) = self.bans.first_key_value() {
            if now < until {
                break;
            }
            let Some((_, k)) = self.bans.pop_first() else {
                break;
            };
            if let Some(r) = self.table.get_mut(&k) {
                r.banned_until = None;
                self.idle.insert((r.last_seen, serial), k);
            }
        }
        let victim = self
            .idle
            .iter()
            .find(|(_, k)| self.table.get(*k).is_none_or(|r| r.in_flight == 0))
            .map(|(_, k)| k.clone())
            .or_else(|| {
                self.bans
                    .values()
                    .find(|k| force || self.table.get(*k).is_none_or(|r| r.in_flight == 0))
                    .cloned()
            });
        match victim {
            Some(k) => self.unban(&k),
            None => false,
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, reason = "test epoch")]
mod tests {
    #[test]
    fn a_source_reads_back_from_its_display() {
        for text in ["192.0.2.7", "2001:db8::/64", "2001:db8::1"] {
            let key: SourceKey = text.parse().unwrap();
            assert_eq!(key.to_string(), text);
        }
        assert!("not an address".parse::<SourceKey>().is_err());
        assert!("2001:db8::/0".parse::<SourceKey>().is_err());
        assert!("2001:db8::/x".parse::<SourceKey>().is_err());
    }

    use super::*;

    fn policy() -> BanPolicy {
        BanPolicy {
            max_attempts: 3,
            window: Duration::from_secs(60),
            ban: Duration::from_secs(100),
            max_ban: Duration::from_secs(350),
            capacity: 4,
            ipv6_prefix: 64,
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

    /// Finding: parallel attempts each passed the ban check before any of them failed. An
    /// attempt in progress now takes budget, so at most `max_attempts` run at once, and the
    /// ban their failures cause refuses the rest.
    #[test]
    fn attempts_in_progress_count_against_the_budget() {
        let t0 = Instant::now();
        let mut l = AttemptLimiter::new(policy()).unwrap();
        for _ in 0..3 {
            l.begin(&"ip", t0).unwrap();
        }
        assert_eq!(l.begin(&"ip", t0), Err(Denied::Busy));
        assert_eq!(l.finish(&"ip", Outcome::Failed, t0), None);
        assert_eq!(l.finish(&"ip", Outcome::Failed, t0), None);
        // One failure recorded with one attempt still running: 2 + 1 = 3, still no room.
        assert_eq!(l.begin(&"ip", t0), Err(Denied::Busy));
        let ban = l.finish(&"ip", Outcome::Failed, t0).unwrap();
        assert_eq!(l.begin(&"ip", t0), Err(Denied::Banned(ban)));
        // Undecided and successful steps give their budget back.
        l.begin(&"other", t0).unwrap();
        l.finish(&"other", Outcome::Undecided, t0);
        for _ in 0..3 {
            l.begin(&"other", t0).unwrap();
            l.finish(&"other", Outcome::Succeeded, t0);
        }
        assert!(l.begin(&"other", t0).is_ok());
        // A source with nothing on record once its attempts end is not kept.
        l.finish(&"other", Outcome::Succeeded, t0);
        assert!(!l.table.contains_key(&"other"));
        assert!(l.table.contains_key(&"ip"), "banned sources are kept");
    }

    /// Finding: a table full of bans grew past its capacity and scanned every entry per new
    /// source. Capacity is a hard bound; when every source is banned the ban ending soonest
    /// makes room.
    #[test]
    fn capacity_is_a_hard_bound_even_when_full_of_bans() {
        let t0 = Instant::now();
        let mut l = AttemptLimiter::new(policy()).unwrap();
        for k in 0..1000u32 {
            let at = t0 + Duration::from_millis(u64::from(k));
            l.ban(&k, Duration::from_secs(100), at);
            assert!(l.len() <= 4, "{} sources tracked", l.len());
        }
        let mut sorted: Vec<u32> = l.banned(t0).into_iter().map(|(k, _)| k).collect();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![996, 997, 998, 999], "the newest bans stay");
        // Mid-attempt sources are not dropped to make room for a new attempt.
        let mut l = AttemptLimiter::new(BanPolicy {
            capacity: 2,
            ..policy()
        })
        .unwrap();
        l.begin(&1u32, t0).unwrap();
        l.begin(&2u32, t0).unwrap();
        assert_eq!(l.begin(&3u32, t0), Err(Denied::Busy));
        l.finish(&1u32, Outcome::Undecided, t0);
        assert!(l.begin(&3u32, t0).is_ok());
        assert_eq!(l.len(), 2);
    }

    /// Ended bans stop counting and their sources go first when room is needed.
    #[test]
    fn ended_bans_make_room_first() {
        let t0 = Instant::now();
        let mut l = AttemptLimiter::new(policy()).unwrap();
        l.ban(&0u32, Duration::from_secs(1), t0);
        for k in 1..4u32 {
            l.record_failure(&k, t0 + Duration::from_secs(2));
        }
        let t1 = t0 + Duration::from_secs(3);
        assert!(l.check(&0, t1).is_ok());
        l.record_failure(&4, t1);
        assert_eq!(l.len(), 4);
        assert!(l.table.contains_key(&1) && !l.table.contains_key(&0));
    }

    /// Finding: `::ffff:127.0.0.1` and `127.0.0.1` were two sources, and every IPv6 /128 was
    /// one.
    #[test]
    fn source_keys_are_canonical_and_group_ipv6_networks() {
        let p = BanPolicy::default();
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(p.source(v4), p.source(mapped));
        assert_eq!(p.source(mapped).addr(), v4);
        assert_eq!(p.source(mapped).to_string(), "127.0.0.1");
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(p.source(a), p.source(b));
        assert_ne!(p.source(a), p.source(c));
        assert_eq!(p.source(a).to_string(), "2001:db8:1:2::/64");
        assert!(p.source(a).contains(b) && !p.source(a).contains(c));
        let exact = SourceKey::new(a, 128);
        assert_ne!(exact, SourceKey::new(b, 128));
        assert_eq!(exact.to_string(), "2001:db8:1:2:aaaa::1");
        assert_eq!(SourceKey::new(a, 0).prefix(), 1, "clamped");
        let mut l = AttemptLimiter::new(policy()).unwrap();
        l.ban(&p.source(v4), Duration::from_secs(5), Instant::now());
        assert!(l.check(&p.source(mapped), Instant::now()).is_err());
        assert!(
            AttemptLimiter::<u8>::new(BanPolicy {
                ipv6_prefix: 0,
                ..policy()
            })
            .is_err()
        );
    }
}
