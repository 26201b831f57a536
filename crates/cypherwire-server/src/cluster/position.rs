//! The sans-IO cursor that finds gaps in what a node hears of it.

use super::seam::{History, Position, Publication};

/// What a publication at some position means to a cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// The next one: deliver it and advance.
    Next,
    /// At or before the cursor: heard already (or from before this node subscribed).
    Old,
    /// Publications between the cursor and this one were missed.
    Gap,
}

/// What a history answer did for a gap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Filled {
    /// These publications fill it, in order (the cursor is past them).
    Recovered(Vec<Publication>),
    /// The history no longer holds what was missed (trimmed, or the topic's data was lost):
    /// the cursor moved to the topic's position now.
    Lost,
}

/// Tracks the last position of one topic a node delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cursor {
    at: Position,
}

impl Cursor {
    /// A cursor at the topic's position when the node subscribed.
    pub(crate) fn new(at: Position) -> Self {
        Self { at }
    }

    pub(crate) fn at(&self) -> Position {
        self.at
    }

    /// Classifies a publication at `p`.
    pub(crate) fn see(&self, p: Position) -> Seen {
        if self.at.epoch == 0 {
            // The topic had no data: its first publication starts the epoch.
            return if p.seq == 1 { Seen::Next } else { Seen::Gap };
        }
        if p.epoch != self.at.epoch {
            return Seen::Gap;
        }
        match p.seq {
            s if s <= self.at.seq => Seen::Old,
            s if s == self.at.seq + 1 => Seen::Next,
            _ => Seen::Gap,
        }
    }

    /// Moves past `p` (after delivering it as [`Seen::Next`]).
    pub(crate) fn advance(&mut self, p: Position) {
        self.at = p;
    }

    /// Fills a gap from `history` (asked for after this cursor's sequence number).
    pub(crate) fn fill(&mut self, history: History) -> Filled {
        let now = Position::new(history.epoch, history.last);
        let same_epoch = self.at.epoch == 0 || history.epoch == self.at.epoch;
        let mut next = self.at.seq + 1;
        let mut entries = Vec::with_capacity(history.entries.len());
        for e in history.entries {
            if e.position.seq < next {
                continue;
            }
            if e.position.seq != next || e.position.epoch != history.epoch {
                break;
            }
            next += 1;
            entries.push(e);
        }
        if !same_epoch || next != history.last + 1 {
            self.at = now;
            return Filled::Lost;
        }
        self.at = now;
        Filled::Recovered(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::NodeId;

    fn node() -> NodeId {
        NodeId::new(7).unwrap()
    }

    fn publication(epoch: u64, seq: u64) -> Publication {
        Publication::new(
            node(),
            Position::new(epoch, seq),
            vec![u8::try_from(seq).unwrap()],
        )
    }

    #[test]
    fn the_next_number_is_delivered_and_older_ones_are_skipped() {
        let mut c = Cursor::new(Position::new(9, 4));
        assert_eq!(c.see(Position::new(9, 4)), Seen::Old);
        assert_eq!(c.see(Position::new(9, 2)), Seen::Old);
        assert_eq!(c.see(Position::new(9, 5)), Seen::Next);
        c.advance(Position::new(9, 5));
        assert_eq!(c.see(Position::new(9, 5)), Seen::Old);
        assert_eq!(c.see(Position::new(9, 7)), Seen::Gap);
        assert_eq!(c.see(Position::new(8, 6)), Seen::Gap, "another epoch");
    }

    #[test]
    fn a_topic_without_data_starts_with_its_first_publication() {
        let c = Cursor::new(Position::default());
        assert_eq!(c.see(Position::new(3, 1)), Seen::Next);
        assert_eq!(c.see(Position::new(3, 2)), Seen::Gap);
    }

    #[test]
    fn a_gap_the_history_holds_is_filled_in_order() {
        let mut c = Cursor::new(Position::new(9, 4));
        let h = History::new(9, 7, (4..=7).map(|s| publication(9, s)).collect());
        let Filled::Recovered(got) = c.fill(h) else {
            panic!("not recovered");
        };
        let seqs: Vec<u64> = got.iter().map(|p| p.position.seq).collect();
        assert_eq!(seqs, [5, 6, 7]);
        assert_eq!(c.at(), Position::new(9, 7));
    }

    #[test]
    fn a_trimmed_history_is_a_loss() {
        let mut c = Cursor::new(Position::new(9, 4));
        let h = History::new(9, 9, (7..=9).map(|s| publication(9, s)).collect());
        assert_eq!(c.fill(h), Filled::Lost);
        assert_eq!(c.at(), Position::new(9, 9), "the cursor moves to now");
    }

    #[test]
    fn a_history_that_stops_short_of_its_last_number_is_a_loss() {
        let mut c = Cursor::new(Position::new(9, 4));
        let h = History::new(9, 8, (5..=6).map(|s| publication(9, s)).collect());
        assert_eq!(c.fill(h), Filled::Lost);
    }

    #[test]
    fn a_new_epoch_is_a_loss_even_with_a_full_history() {
        let mut c = Cursor::new(Position::new(9, 4));
        let h = History::new(11, 2, (1..=2).map(|s| publication(11, s)).collect());
        assert_eq!(c.fill(h), Filled::Lost);
        assert_eq!(c.at(), Position::new(11, 2));
    }

    #[test]
    fn an_empty_topic_fills_from_its_first_number() {
        let mut c = Cursor::new(Position::default());
        let h = History::new(5, 2, (1..=2).map(|s| publication(5, s)).collect());
        assert!(matches!(c.fill(h), Filled::Recovered(v) if v.len() == 2));
        assert_eq!(c.at(), Position::new(5, 2));
    }
}
