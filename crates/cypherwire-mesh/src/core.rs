//! The mesh's logic without I/O: membership and heartbeats at the authenticating peer
//! ([`Membership`]), the member's view of the list ([`MemberView`]), and duplicate suppression
//! for messages ([`Dedup`]). The member's view of its link to the authenticating peer is the
//! session layer's [`LinkMonitor`](cypherwire_session::LinkMonitor), which the client's
//! heartbeat uses too.
//!
//! Everything takes `now` as an argument, so the drivers read `tokio::time` and tests run
//! whole meshes in virtual time (`tests/sim.rs` runs 25 nodes with loss and partitions).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use cypherwire_session::HeartbeatPolicy;

use crate::peer_list::{LeaveReason, ListError, PeerEntry, PeerId, PeerList};

/// Why a join was refused by the membership itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefused {
    /// The list holds its maximum number of members.
    Full,
}

#[derive(Debug, Clone)]
struct Member {
    entry: PeerEntry,
    last_seen: Instant,
    /// The authenticating peer's own entry: never expires.
    local: bool,
}

/// The authenticating peer's membership table: who is in, since when last heard, and the
/// versioned list it publishes.
#[derive(Debug)]
pub struct Membership {
    epoch: u64,
    version: u64,
    policy: HeartbeatPolicy,
    max_peers: usize,
    members: BTreeMap<PeerId, Member>,
    departed: Vec<(PeerId, LeaveReason)>,
    dirty: bool,
}

impl Membership {
    /// A table whose only member is the authenticating peer itself (`me`).
    pub fn new(
        epoch: u64,
        policy: HeartbeatPolicy,
        max_peers: usize,
        me: PeerEntry,
        now: Instant,
    ) -> Self {
        let mut members = BTreeMap::new();
        members.insert(
            me.id,
            Member {
                entry: me,
                last_seen: now,
                local: true,
            },
        );
        Self {
            epoch,
            version: 0,
            policy,
            max_peers: max_peers.max(1),
            members,
            departed: Vec::new(),
            dirty: true,
        }
    }

    /// Admits (or refreshes) a member. Returns whether the list changed.
    ///
    /// # Errors
    /// [`JoinRefused::Full`] when `max_peers` members are in.
    pub fn join(&mut self, entry: PeerEntry, now: Instant) -> Result<bool, JoinRefused> {
        if let Some(m) = self.members.get_mut(&entry.id) {
            m.last_seen = now;
            if m.entry == entry || m.local {
                return Ok(false);
            }
            m.entry = entry;
            self.dirty = true;
            return Ok(true);
        }
        if self.members.len() >= self.max_peers {
            return Err(JoinRefused::Full);
        }
        self.departed.retain(|(id, _)| *id != entry.id);
        self.members.insert(
            entry.id,
            Member {
                entry,
                last_seen: now,
                local: false,
            },
        );
        self.dirty = true;
        Ok(true)
    }

    /// Records a heartbeat from `id`; `false` if it is not a member (it must join again).
    pub fn heartbeat(&mut self, id: &PeerId, now: Instant) -> bool {
        match self.members.get_mut(id) {
            Some(m) => {
                m.last_seen = now;
                true
            }
            None => false,
        }
    }

    /// Removes `id` (never the authenticating peer itself). Returns whether it was a member.
    pub fn remove(&mut self, id: &PeerId, reason: LeaveReason) -> bool {
        if self.members.get(id).is_none_or(|m| m.local) {
            return false;
        }
        self.members.remove(id);
        self.departed.push((*id, reason));
        self.dirty = true;
        true
    }

    /// Removes every member silent for longer than the heartbeat timeout; returns them.
    pub fn expire(&mut self, now: Instant) -> Vec<PeerId> {
        let timeout = self.policy.timeout();
        let gone: Vec<PeerId> = self
            .members
            .values()
            .filter(|m| !m.local && now.saturating_duration_since(m.last_seen) > timeout)
            .map(|m| m.entry.id)
            .collect();
        for id in &gone {
            self.remove(id, LeaveReason::HeartbeatTimeout);
        }
        gone
    }

    /// When the next member would expire if it stays silent.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.members
            .values()
            .filter(|m| !m.local)
            .map(|m| m.last_seen + self.policy.timeout())
            .min()
    }

    /// Whether the list changed since the last [`publish`](Self::publish).
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// The next version of the list (bumping the version if anything changed), with the
    /// departures since the previous one.
    pub fn publish(&mut self) -> PeerList {
        if self.dirty {
            self.version += 1;
            self.dirty = false;
        }
        PeerList {
            epoch: self.epoch,
            version: self.version,
            entries: self.members.values().map(|m| m.entry.clone()).collect(),
            departed: std::mem::take(&mut self.departed),
        }
    }

    /// The current list without publishing (no departures).
    pub fn snapshot(&self) -> PeerList {
        PeerList {
            epoch: self.epoch,
            version: self.version,
            entries: self.members.values().map(|m| m.entry.clone()).collect(),
            departed: Vec::new(),
        }
    }

    /// The entry of `id`.
    pub fn get(&self, id: &PeerId) -> Option<&PeerEntry> {
        self.members.get(id).map(|m| &m.entry)
    }

    /// Members, the authenticating peer included.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Never true: the authenticating peer is always a member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

/// What changed between two lists, from a member's point of view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// New members, or members whose address or key changed.
    pub joined: Vec<PeerEntry>,
    /// Members no longer listed.
    pub left: Vec<(PeerId, LeaveReason)>,
}

/// A member's copy of the peer list, with the staleness rule.
#[derive(Debug, Default)]
pub struct MemberView {
    held: Option<PeerList>,
}

impl MemberView {
    /// An empty view (not joined).
    pub fn new() -> Self {
        Self::default()
    }

    /// The list held.
    pub fn list(&self) -> Option<&PeerList> {
        self.held.as_ref()
    }

    /// Takes a verified list. A list that answers our own join (`from_join`) replaces whatever
    /// is held (the authenticating peer may have restarted: new epoch); a pushed list must be
    /// of the same epoch and a newer version.
    ///
    /// # Errors
    /// [`ListError::Stale`] for an old, repeated, or other-epoch pushed list.
    pub fn accept(&mut self, list: PeerList, from_join: bool) -> Result<Diff, ListError> {
        if let Some(held) = &self.held
            && !from_join
            && (held.epoch != list.epoch || list.version <= held.version)
        {
            return Err(ListError::Stale {
                got: list.version,
                held: held.version,
            });
        }
        let old = self.held.take().unwrap_or_default();
        let mut diff = Diff::default();
        for e in &list.entries {
            if old.get(&e.id) != Some(e) {
                diff.joined.push(e.clone());
            }
        }
        for e in &old.entries {
            if list.get(&e.id).is_none() {
                let reason = list
                    .departed
                    .iter()
                    .find(|(id, _)| *id == e.id)
                    .map_or(LeaveReason::Unknown, |(_, r)| *r);
                diff.left.push((e.id, reason));
            }
        }
        self.held = Some(list);
        Ok(diff)
    }

    /// Forgets the list (after leaving); returns everyone who was listed.
    pub fn clear(&mut self) -> Vec<PeerId> {
        self.held
            .take()
            .map(|l| l.entries.into_iter().map(|e| e.id).collect())
            .unwrap_or_default()
    }
}

/// Default number of recent sequence numbers remembered per sender.
pub const DEFAULT_DEDUP_WINDOW: usize = 4096;

#[derive(Debug)]
struct Window {
    incarnation: u64,
    /// Every sequence number at or below this is treated as seen.
    floor: u64,
    seen: BTreeSet<u64>,
}

/// Suppresses repeated deliveries of the same message (a resent request after a reconnect
/// whose session could not be resumed): each sender numbers its messages per incarnation, and
/// the receiver remembers the last `window` numbers per sender.
#[derive(Debug)]
pub struct Dedup {
    window: usize,
    senders: HashMap<PeerId, Window>,
}

impl Dedup {
    /// Remembers `window` numbers per sender (at least 1).
    pub fn new(window: usize) -> Self {
        Self {
            window: window.max(1),
            senders: HashMap::new(),
        }
    }

    /// Whether this is the first delivery of (`from`, `incarnation`, `seq`); records it. A new
    /// incarnation of a sender (it restarted) starts afresh.
    pub fn first_time(&mut self, from: PeerId, incarnation: u64, seq: u64) -> bool {
        let w = self.senders.entry(from).or_insert(Window {
            incarnation,
            floor: 0,
            seen: BTreeSet::new(),
        });
        if w.incarnation != incarnation {
            *w = Window {
                incarnation,
                floor: 0,
                seen: BTreeSet::new(),
            };
        }
        if seq <= w.floor || !w.seen.insert(seq) {
            return false;
        }
        while w.seen.len() > self.window {
            if let Some(lowest) = w.seen.pop_first() {
                w.floor = lowest;
            }
        }
        true
    }

    /// Forgets senders for which `keep` is false (members who left).
    pub fn retain(&mut self, mut keep: impl FnMut(&PeerId) -> bool) {
        self.senders.retain(|id, _| keep(id));
    }

    /// Senders tracked.
    pub fn len(&self) -> usize {
        self.senders.len()
    }

    /// Whether no sender is tracked.
    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, reason = "test epoch")]
mod tests {
    use cypherwire_session::PublicKey;

    use super::*;

    fn entry(n: u8) -> PeerEntry {
        PeerEntry::new(
            PublicKey::from_bytes([n; 32]),
            format!("127.0.0.1:{}", 5000 + u16::from(n))
                .parse()
                .unwrap(),
        )
    }

    const S: std::time::Duration = std::time::Duration::from_secs(1);

    #[test]
    fn join_heartbeat_expire_publish() {
        let t0 = Instant::now();
        let mut m = Membership::new(9, HeartbeatPolicy::new(S, 3), 3, entry(0), t0);
        assert_eq!(m.publish().version, 1);
        assert_eq!(m.join(entry(1), t0), Ok(true));
        assert_eq!(m.join(entry(1), t0), Ok(false), "re-join is idempotent");
        assert_eq!(m.join(entry(2), t0), Ok(true));
        assert_eq!(m.join(entry(3), t0), Err(JoinRefused::Full));
        let l = m.publish();
        assert_eq!((l.version, l.entries.len()), (2, 3));
        assert_eq!(m.publish().version, 2, "no change, no new version");
        // 1 keeps beating; 2 falls silent; the authenticating peer never expires.
        assert!(m.heartbeat(&entry(1).id, t0 + 2 * S));
        assert_eq!(m.next_expiry(), Some(t0 + 3 * S));
        assert!(
            m.expire(t0 + 3 * S).is_empty(),
            "exactly the timeout is not yet late"
        );
        assert_eq!(m.expire(t0 + 4 * S), vec![entry(2).id]);
        assert!(!m.heartbeat(&entry(2).id, t0 + 4 * S), "must join again");
        let l = m.publish();
        assert_eq!(l.version, 3);
        assert_eq!(
            l.departed,
            vec![(entry(2).id, LeaveReason::HeartbeatTimeout)]
        );
        assert!(
            m.publish().departed.is_empty(),
            "departures are reported once"
        );
        assert!(
            !m.remove(&entry(0).id, LeaveReason::Kicked),
            "the auth peer stays"
        );
        assert!(m.remove(&entry(1).id, LeaveReason::Left));
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn moved_member_replaces_its_entry() {
        let t0 = Instant::now();
        let mut m = Membership::new(1, HeartbeatPolicy::default(), 8, entry(0), t0);
        m.join(entry(1), t0).unwrap();
        m.publish();
        let mut moved = entry(1);
        moved.addr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(m.join(moved.clone(), t0), Ok(true));
        assert_eq!(m.get(&moved.id), Some(&moved));
    }

    #[test]
    fn view_rejects_stale_and_foreign_pushes_and_reports_changes() {
        let list = |epoch, version, ns: &[u8], departed| {
            let mut entries: Vec<_> = ns.iter().map(|n| entry(*n)).collect();
            entries.sort_by_key(|e| e.id);
            PeerList {
                epoch,
                version,
                entries,
                departed,
            }
        };
        let mut v = MemberView::new();
        let d = v.accept(list(1, 5, &[0, 1], vec![]), true).unwrap();
        assert_eq!(d.joined.len(), 2);
        assert!(matches!(
            v.accept(list(1, 5, &[0], vec![]), false),
            Err(ListError::Stale { got: 5, held: 5 })
        ));
        assert!(v.accept(list(1, 4, &[0], vec![]), false).is_err());
        assert!(
            v.accept(list(2, 9, &[0], vec![]), false).is_err(),
            "other epoch"
        );
        let d = v
            .accept(
                list(1, 6, &[0, 2], vec![(entry(1).id, LeaveReason::Kicked)]),
                false,
            )
            .unwrap();
        assert_eq!(d.joined, vec![entry(2)]);
        assert_eq!(d.left, vec![(entry(1).id, LeaveReason::Kicked)]);
        // A join answer from a restarted authenticating peer (new epoch, version 1) is taken.
        let d = v.accept(list(3, 1, &[0, 2], vec![]), true).unwrap();
        assert_eq!(d, Diff::default());
        assert_eq!(v.clear().len(), 2);
    }

    #[test]
    fn dedup_delivers_each_number_once_within_the_window() {
        let a = entry(1).id;
        let mut d = Dedup::new(4);
        assert!(d.first_time(a, 7, 1));
        assert!(!d.first_time(a, 7, 1));
        assert!(d.first_time(a, 7, 3));
        assert!(d.first_time(a, 7, 2), "out of order but new");
        for s in 4..=10 {
            assert!(d.first_time(a, 7, s));
        }
        // 1..=6 fell below the window: treated as seen, never delivered twice.
        assert!(!d.first_time(a, 7, 5));
        assert!(!d.first_time(a, 7, 10));
        // A restarted sender begins again at 1.
        assert!(d.first_time(a, 8, 1));
        d.retain(|id| *id != a);
        assert!(d.is_empty());
    }
}
