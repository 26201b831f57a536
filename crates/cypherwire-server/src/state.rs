//! The seam between one server instance and the state several instances would share.
//!
//! [`ServerState`] is everything a cluster of instances has to agree on: bans, named groups,
//! and the session table (resumption tokens and the sessions they resume). [`LocalState`]
//! keeps it in this process, which is the whole story for a single server; a shared backend
//! implements the same trait over its store (publishing bans, routing group members,
//! fetching a session for a resume that lands on another instance).
//!
//! What stays per instance whatever the backend: the live connections (the registry, their
//! outboxes, the sessions they are attached to right now) and the handshake attempts in
//! progress, which the handshake's limiter counts as it runs. A backend that shares bans
//! mirrors each ban it learns into that limiter, so the handshake refuses the source before any
//! work, as it does for a local ban.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use cypherwire_session::{AttemptLimiter, SessionToken, SourceKey};

use crate::id::ConnectionId;
use crate::outgoing::{Outbox, Session, SessionTable};
use crate::sessions::{Origin, ResumePolicy, SessionId, Snapshot};

/// Most named broadcast groups a server keeps (names come from the application).
pub const MAX_GROUPS: usize = 65_536;

/// Longest group name, in bytes. A cluster publishes a group's broadcasts under its name, so
/// the name must fit the backplane's topic field (`docs/protocol.md` §8) with room to spare.
pub const MAX_GROUP_NAME_LEN: usize = 1024;

/// A new group would pass [`MAX_GROUPS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooManyGroups;

/// The state instances of one service share; see the module docs for what stays local.
pub(crate) trait ServerState: Send + Sync + 'static {
    /// The limiter the handshakes of this instance run under (attempts in progress, failures,
    /// and every ban this instance knows of).
    fn attempts(&self) -> &Mutex<AttemptLimiter<SourceKey>>;

    /// Bans `source` for `length` from `now`.
    fn ban(&self, source: &SourceKey, length: Duration, now: Instant);

    /// Lifts a ban; whether there was one (or any record of the source).
    fn unban(&self, source: &SourceKey) -> bool;

    /// Whether `source` is banned at `now`.
    fn is_banned(&self, source: &SourceKey, now: Instant) -> bool;

    /// Sources banned at `now`, with when each ban ends.
    fn banned(&self, now: Instant) -> Vec<(SourceKey, Instant)>;

    /// Adds `conn` to `group` (made on first use).
    ///
    /// # Errors
    /// [`TooManyGroups`] if the group is new and [`MAX_GROUPS`] exist.
    fn join(&self, group: &str, conn: ConnectionId) -> Result<(), TooManyGroups>;

    /// Removes `conn` from `group`; whether it was a member.
    fn leave(&self, group: &str, conn: ConnectionId) -> bool;

    /// Removes `conn` from every group (its connection ended); whether a group went away
    /// with it.
    fn leave_all(&self, conn: ConnectionId) -> bool;

    /// The groups that have a member.
    fn groups(&self) -> Vec<String>;

    /// The members of `group`, in id order.
    fn members(&self, group: &str) -> Vec<ConnectionId>;

    /// The resumption settings.
    fn resume_policy(&self) -> ResumePolicy;

    /// A new session for a connection from `origin` and its first token.
    fn create_session(&self, origin: &Origin) -> Option<(SessionId, Arc<Session>, SessionToken)>;

    /// Redeems a token: the session it resumes and the session's fresh token.
    fn resume_session(
        &self,
        token: &SessionToken,
        origin: &Origin,
        now: Instant,
    ) -> Option<(SessionId, Arc<Session>, SessionToken)>;

    /// Redeems a token for another instance: the session, its snapshot for a peer that saw
    /// pushes up to `after`, and (in the same step) `conn` reached through `outbox` attached in
    /// place of the connection returned.
    fn hand_over(
        &self,
        token: &SessionToken,
        origin: &Origin,
        now: Instant,
        after: u64,
        conn: ConnectionId,
        outbox: Outbox,
    ) -> Option<(SessionId, Arc<Session>, Snapshot, Option<ConnectionId>)>;

    /// Installs a session another instance handed over; its id and fresh token.
    fn import_session(
        &self,
        origin: &Origin,
        snapshot: Snapshot,
    ) -> Option<(SessionId, Arc<Session>, SessionToken)>;

    /// Attaches connection `conn` (reached through `outbox`) to a session; the connection it
    /// replaced, if another was attached.
    fn attach(&self, session: &Session, conn: ConnectionId, outbox: Outbox)
    -> Option<ConnectionId>;

    /// Detaches `conn` from a session if it is attached there; its time to live starts `now`.
    fn detach(&self, session: &Session, conn: ConnectionId, now: Instant);

    /// Drops a session for good (the provisional one a resume replaced).
    fn discard(&self, id: SessionId);

    /// Drops what has expired by `now`.
    fn purge(&self, now: Instant);

    /// Sessions kept (attached or resumable).
    fn session_count(&self) -> usize;
}

/// [`ServerState`] in this process: a single server's bans, groups and sessions.
pub(crate) struct LocalState {
    attempts: Mutex<AttemptLimiter<SourceKey>>,
    groups: Mutex<HashMap<String, HashSet<ConnectionId>>>,
    sessions: SessionTable,
}

impl LocalState {
    pub(crate) fn new(attempts: AttemptLimiter<SourceKey>, sessions: SessionTable) -> Self {
        Self {
            attempts: Mutex::new(attempts),
            groups: Mutex::default(),
            sessions,
        }
    }

    fn limiter(&self) -> MutexGuard<'_, AttemptLimiter<SourceKey>> {
        // A poisoned lock only means another task panicked mid-update; the table is still a
        // valid (conservative) state.
        self.attempts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn group_table(&self) -> MutexGuard<'_, HashMap<String, HashSet<ConnectionId>>> {
        self.groups.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ServerState for LocalState {
    fn attempts(&self) -> &Mutex<AttemptLimiter<SourceKey>> {
        &self.attempts
    }

    fn ban(&self, source: &SourceKey, length: Duration, now: Instant) {
        self.limiter().ban(source, length, now);
    }

    fn unban(&self, source: &SourceKey) -> bool {
        self.limiter().unban(source)
    }

    fn is_banned(&self, source: &SourceKey, now: Instant) -> bool {
        self.limiter().check(source, now).is_err()
    }

    fn banned(&self, now: Instant) -> Vec<(SourceKey, Instant)> {
        self.limiter().banned(now)
    }

    fn join(&self, group: &str, conn: ConnectionId) -> Result<(), TooManyGroups> {
        let mut groups = self.group_table();
        if !groups.contains_key(group) && groups.len() >= MAX_GROUPS {
            return Err(TooManyGroups);
        }
        groups.entry(group.to_owned()).or_default().insert(conn);
        Ok(())
    }

    fn leave(&self, group: &str, conn: ConnectionId) -> bool {
        let mut groups = self.group_table();
        let Some(members) = groups.get_mut(group) else {
            return false;
        };
        let was = members.remove(&conn);
        if members.is_empty() {
            groups.remove(group);
        }
        was
    }

    fn leave_all(&self, conn: ConnectionId) -> bool {
        let mut groups = self.group_table();
        let before = groups.len();
        groups.retain(|_, members| {
            members.remove(&conn);
            !members.is_empty()
        });
        groups.len() != before
    }

    fn groups(&self) -> Vec<String> {
        let mut names: Vec<String> = self.group_table().keys().cloned().collect();
        names.sort();
        names
    }

    fn members(&self, group: &str) -> Vec<ConnectionId> {
        let mut v: Vec<_> = self
            .group_table()
            .get(group)
            .map(|m| m.iter().copied().collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    fn resume_policy(&self) -> ResumePolicy {
        self.sessions.policy()
    }

    fn create_session(&self, origin: &Origin) -> Option<(SessionId, Arc<Session>, SessionToken)> {
        self.sessions.create(origin)
    }

    fn resume_session(
        &self,
        token: &SessionToken,
        origin: &Origin,
        now: Instant,
    ) -> Option<(SessionId, Arc<Session>, SessionToken)> {
        self.sessions.resume(token, origin, now)
    }

    fn hand_over(
        &self,
        token: &SessionToken,
        origin: &Origin,
        now: Instant,
        after: u64,
        conn: ConnectionId,
        outbox: Outbox,
    ) -> Option<(SessionId, Arc<Session>, Snapshot, Option<ConnectionId>)> {
        let (id, session, _) = self.sessions.resume(token, origin, now)?;
        let (snapshot, previous) = self.sessions.hand_over(&session, after, conn, outbox)?;
        Some((id, session, snapshot, previous))
    }

    fn import_session(
        &self,
        origin: &Origin,
        snapshot: Snapshot,
    ) -> Option<(SessionId, Arc<Session>, SessionToken)> {
        self.sessions.import(origin, snapshot)
    }

    fn attach(
        &self,
        session: &Session,
        conn: ConnectionId,
        outbox: Outbox,
    ) -> Option<ConnectionId> {
        self.sessions.attach(session, conn, outbox)
    }

    fn detach(&self, session: &Session, conn: ConnectionId, now: Instant) {
        self.sessions.detach(session, conn, now);
    }

    fn discard(&self, id: SessionId) {
        self.sessions.discard(id);
    }

    fn purge(&self, now: Instant) {
        self.sessions.purge(now);
    }

    fn session_count(&self) -> usize {
        self.sessions.len()
    }
}

#[cfg(test)]
mod tests {
    use cypherwire_session::BanPolicy;

    use super::*;

    #[expect(clippy::disallowed_methods, reason = "a fixed origin for virtual time")]
    fn origin() -> Instant {
        Instant::now()
    }

    fn state() -> LocalState {
        let attempts = AttemptLimiter::new(BanPolicy::default()).unwrap();
        LocalState::new(
            attempts,
            SessionTable::new(ResumePolicy::default()).unwrap(),
        )
    }

    #[test]
    fn a_ban_holds_until_its_end_and_unban_lifts_it() {
        let s = state();
        let t0 = origin();
        let source = SourceKey::new([192, 0, 2, 7].into(), 64);
        let other = SourceKey::new([192, 0, 2, 8].into(), 64);
        s.ban(&source, Duration::from_secs(60), t0);
        assert!(s.is_banned(&source, t0 + Duration::from_secs(59)));
        assert!(!s.is_banned(&other, t0));
        assert_eq!(s.banned(t0), vec![(source, t0 + Duration::from_secs(60))]);
        assert!(!s.is_banned(&source, t0 + Duration::from_secs(60)));
        s.ban(&source, Duration::from_secs(60), t0);
        assert!(s.unban(&source));
        assert!(!s.is_banned(&source, t0));
    }

    #[test]
    fn groups_are_made_on_first_join_and_gone_with_their_last_member() {
        let s = state();
        let (a, b) = (ConnectionId(2), ConnectionId(1));
        s.join("red", a).unwrap();
        s.join("red", b).unwrap();
        s.join("blue", a).unwrap();
        assert_eq!(s.members("red"), [b, a]);
        assert!(s.leave("red", a));
        assert!(!s.leave("red", a));
        s.leave_all(b);
        assert!(s.members("red").is_empty());
        assert_eq!(s.members("blue"), [a]);
        assert_eq!(s.group_table().len(), 1);
    }

    #[test]
    fn a_new_group_past_the_bound_is_refused_but_existing_ones_take_members() {
        let s = state();
        {
            let mut groups = s.group_table();
            for i in 0..MAX_GROUPS {
                groups
                    .entry(format!("g{i}"))
                    .or_default()
                    .insert(ConnectionId(1));
            }
        }
        assert_eq!(s.join("one too many", ConnectionId(2)), Err(TooManyGroups));
        assert_eq!(s.join("g7", ConnectionId(2)), Ok(()));
        assert_eq!(s.members("g7"), [ConnectionId(1), ConnectionId(2)]);
    }
}
