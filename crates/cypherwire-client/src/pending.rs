//! The table of requests awaiting an answer (sans-IO): bounded by count and bytes, ordered by
//! id for resending, with deadlines as data.
//!
//! Every operation on the hot path is O(log n): the unsent ids and the deadlines are kept in
//! their own ordered indexes, so neither sending nor finding the next deadline scans the table
//! (which may hold tens of thousands of requests while offline).

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use cypherwire_session::fasthash::FastState;
use cypherwire_wire::{Message, Request};

/// One waiting request.
#[derive(Debug)]
pub(crate) struct Entry<R> {
    id: u64,
    /// The request as the envelope that is sent (and resent after a cut): encoded straight
    /// from here, never copied.
    message: Message,
    pub(crate) bytes: usize,
    pub(crate) expires: Option<Instant>,
    pub(crate) reply: R,
}

impl<R> Entry<R> {
    pub(crate) fn new(request: Request, bytes: usize, expires: Option<Instant>, reply: R) -> Self {
        Self {
            id: request.id,
            message: Message::Request(request),
            bytes,
            expires,
            reply,
        }
    }
}

/// Requests by id. `R` is the caller's reply channel.
#[derive(Debug)]
pub(crate) struct PendingTable<R> {
    /// By id (a hash map: entries are large, and B-tree nodes would move them around; the
    /// fast hash, since the table is bounded by `max_count`).
    entries: HashMap<u64, Entry<R>, FastState>,
    /// Ids not yet sent on the current connection.
    unsent: BTreeSet<u64>,
    /// `(deadline, id)` of every entry that has a deadline.
    deadlines: BTreeSet<(Instant, u64)>,
    bytes: usize,
    max_count: usize,
    max_bytes: usize,
}

/// The table is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full {
    pub(crate) pending: usize,
    pub(crate) bytes: usize,
}

impl<R> PendingTable<R> {
    pub(crate) fn new(max_count: usize, max_bytes: usize) -> Self {
        Self {
            entries: HashMap::default(),
            unsent: BTreeSet::new(),
            deadlines: BTreeSet::new(),
            bytes: 0,
            max_count,
            max_bytes,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Adds a request (unsent), or refuses it when the table would exceed its bounds.
    pub(crate) fn insert(&mut self, entry: Entry<R>) -> Result<(), (Full, Box<Entry<R>>)> {
        if self.entries.len() >= self.max_count || self.bytes + entry.bytes > self.max_bytes {
            let full = Full {
                pending: self.entries.len(),
                bytes: self.bytes,
            };
            return Err((full, Box::new(entry)));
        }
        let id = entry.id;
        self.bytes += entry.bytes;
        if let Some(t) = entry.expires {
            self.deadlines.insert((t, id));
        }
        self.unsent.insert(id);
        if let Some(old) = self.entries.insert(id, entry) {
            // Ids are unique per client; should one repeat, the table stays consistent.
            self.bytes -= old.bytes;
            if let Some(t) = old.expires {
                self.deadlines.remove(&(t, id));
            }
        }
        Ok(())
    }

    pub(crate) fn remove(&mut self, id: u64) -> Option<Entry<R>> {
        let e = self.entries.remove(&id)?;
        self.bytes -= e.bytes;
        self.unsent.remove(&id);
        if let Some(t) = e.expires {
            self.deadlines.remove(&(t, id));
        }
        Some(e)
    }

    /// Ids whose deadline has passed at `now`, earliest deadline first.
    pub(crate) fn expired(&self, now: Instant) -> Vec<u64> {
        self.deadlines
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, id)| *id)
            .collect()
    }

    /// The earliest deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    /// Marks everything unsent (the connection was lost).
    pub(crate) fn mark_all_unsent(&mut self) {
        self.unsent = self.entries.keys().copied().collect();
    }

    /// Hands every unsent request to `send`, oldest id first, by reference, marking each sent.
    /// At the first error the failed request and those after it stay unsent.
    pub(crate) fn send_unsent<E>(
        &mut self,
        mut send: impl FnMut(&Message) -> Result<(), E>,
    ) -> Result<(), E> {
        while let Some(id) = self.unsent.pop_first() {
            if let Some(e) = self.entries.get(&id)
                && let Err(err) = send(&e.message)
            {
                self.unsent.insert(id);
                return Err(err);
            }
        }
        Ok(())
    }

    /// Whether any request waits to be sent.
    pub(crate) fn has_unsent(&self) -> bool {
        !self.unsent.is_empty()
    }

    /// Removes everything (the client closes).
    pub(crate) fn drain(&mut self) -> Vec<Entry<R>> {
        self.bytes = 0;
        self.unsent.clear();
        self.deadlines.clear();
        std::mem::take(&mut self.entries).into_values().collect()
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, reason = "test epoch")]
mod tests {
    use std::time::Duration;

    use super::*;

    fn entry(id: u64, bytes: usize, expires: Option<Instant>) -> Entry<()> {
        Entry::new(Request::new(id, "/P", "O"), bytes, expires, ())
    }

    /// The ids `send_unsent` hands out, in order.
    fn take_unsent(t: &mut PendingTable<()>) -> Vec<u64> {
        let mut ids = Vec::new();
        t.send_unsent(|m| {
            match m {
                Message::Request(r) => ids.push(r.id),
                other => panic!("{other:?}"),
            }
            Ok::<_, ()>(())
        })
        .unwrap();
        ids
    }

    #[test]
    fn bounds_by_count_and_bytes() {
        let mut t = PendingTable::new(2, 100);
        assert!(t.insert(entry(1, 60, None)).is_ok());
        let (full, _) = t.insert(entry(2, 50, None)).unwrap_err();
        assert_eq!(
            full,
            Full {
                pending: 1,
                bytes: 60
            }
        );
        assert!(t.insert(entry(2, 40, None)).is_ok());
        assert!(t.insert(entry(3, 0, None)).is_err(), "count bound");
        assert!(t.remove(1).is_some());
        assert!(t.insert(entry(3, 60, None)).is_ok(), "room again");
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn deadlines_are_data() {
        let t0 = Instant::now();
        let mut t = PendingTable::new(10, 1000);
        t.insert(entry(1, 1, Some(t0 + Duration::from_secs(5))))
            .unwrap();
        t.insert(entry(2, 1, Some(t0 + Duration::from_secs(2))))
            .unwrap();
        t.insert(entry(3, 1, None)).unwrap();
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_secs(2)));
        assert_eq!(t.expired(t0 + Duration::from_secs(3)), vec![2]);
        assert_eq!(t.expired(t0 + Duration::from_secs(5)), vec![2, 1]);
        // A removed entry's deadline goes with it.
        assert!(t.remove(2).is_some());
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_secs(5)));
        assert_eq!(t.expired(t0 + Duration::from_secs(5)), vec![1]);
        assert!(t.remove(1).is_some());
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn resend_order_and_marks() {
        let mut t = PendingTable::new(10, 1000);
        for id in [3, 1, 2] {
            t.insert(entry(id, 1, None)).unwrap();
        }
        let ids: Vec<u64> = take_unsent(&mut t);
        assert_eq!(ids, vec![1, 2, 3]);
        assert!(take_unsent(&mut t).is_empty());
        t.insert(entry(4, 1, None)).unwrap();
        assert!(t.has_unsent());
        let ids: Vec<u64> = take_unsent(&mut t);
        assert_eq!(ids, vec![4], "only the new one");
        t.remove(1);
        t.mark_all_unsent();
        let ids: Vec<u64> = take_unsent(&mut t);
        assert_eq!(
            ids,
            vec![2, 3, 4],
            "after a lost connection: all that remain, by id"
        );
        t.insert(entry(5, 1, None)).unwrap();
        t.remove(5);
        assert!(!t.has_unsent(), "a removed request is not sent");
        assert_eq!(t.drain().len(), 3);
        assert!(!t.has_unsent());
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn a_failed_send_leaves_it_and_the_rest_unsent() {
        let mut t = PendingTable::new(10, 1000);
        for id in 1..=4 {
            t.insert(entry(id, 1, None)).unwrap();
        }
        let mut sent = Vec::new();
        let r = t.send_unsent(|m| match m {
            Message::Request(r) if r.id == 3 => Err("cannot encode"),
            Message::Request(r) => {
                sent.push(r.id);
                Ok(())
            }
            other => panic!("{other:?}"),
        });
        assert_eq!(r, Err("cannot encode"));
        assert_eq!(sent, vec![1, 2]);
        assert_eq!(take_unsent(&mut t), vec![3, 4]);
    }
}
