//! Follows a numbered stream (a room's events or inputs, a node's inbox): what pub/sub brings comes out once and in order, and the follower says what to read back from the stream to fill what pub/sub lost.
//!
//! The decisions (what is next, which gap to read, what a read found) are pure; the callers do
//! the Redis reads and decide what a trimmed stream means for them.

use std::collections::BTreeMap;

/// Entries `from..=to` of the stream (`to: None`: up to its end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Read {
    pub from: u64,
    pub to: Option<u64>,
}

/// What one read of the stream found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Took {
    /// Entries the read returned; none: the stream holds nothing there (yet).
    pub count: usize,
    /// The stream's first entry came after the read's start: the stream was trimmed before
    /// this node read it, and the entries before this number are lost.
    pub trimmed_to: Option<u64>,
    /// The batch was full: the rest of the read, to read next.
    pub more: Option<Read>,
}

pub struct Follower<T> {
    next: u64,
    pending: BTreeMap<u64, T>,
    /// Where the stream stands is known; until then entries are held but none comes out.
    placed: bool,
}

impl<T> Follower<T> {
    /// Expects `next` first.
    pub fn new(next: u64) -> Follower<T> {
        Follower {
            next,
            pending: BTreeMap::new(),
            placed: true,
        }
    }

    /// Where the stream stands is read from Redis later ([`Follower::place`]).
    pub fn unplaced() -> Follower<T> {
        Follower {
            placed: false,
            ..Follower::new(1)
        }
    }

    pub fn is_placed(&self) -> bool {
        self.placed
    }

    /// Starts at `next` (a position read from Redis, or a new era); held entries go.
    pub fn place(&mut self, next: u64) {
        self.next = next;
        self.pending.clear();
        self.placed = true;
    }

    /// Forgets the position: the stream may count from 1 again (a new era).
    pub fn unplace(&mut self) {
        self.placed = false;
    }

    /// The next number to come out.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Takes an entry; numbers already passed are duplicates and are dropped.
    pub fn offer(&mut self, number: u64, item: T) {
        if number >= self.next {
            self.pending.entry(number).or_insert(item);
        }
    }

    /// Gives up the numbers before `first`, which the stream no longer holds; later entries stay.
    pub fn skip_to(&mut self, first: u64) {
        if first > self.next {
            self.next = first;
            self.pending = self.pending.split_off(&first);
        }
    }

    /// The entries ready, in order.
    pub fn ready(&mut self) -> Vec<(u64, T)> {
        std::iter::from_fn(|| self.pop_ready()).collect()
    }

    /// The next entry, if it is here.
    pub fn pop_ready(&mut self) -> Option<(u64, T)> {
        if !self.placed {
            return None;
        }
        let item = self.pending.remove(&self.next)?;
        self.next += 1;
        Some((self.next - 1, item))
    }

    /// The numbers missing before the first one held: a repair reads them.
    pub fn gap(&self) -> Option<Read> {
        if !self.placed {
            return None;
        }
        gap(self.next, self.pending.keys().next().copied())
    }

    /// What to read when the stream's last entry is `last`: pub/sub may have lost a last
    /// message with nothing after it to show the gap.
    pub fn behind(&self, last: u64) -> Option<Read> {
        if !self.placed {
            return None;
        }
        behind(self.next, last)
    }

    /// Everything after the last entry out (pub/sub reconnected: anything may be lost).
    pub fn rest(&self) -> Read {
        Read {
            from: self.next,
            to: None,
        }
    }

    /// Holds the entries a read of `read` (at most `batch` asked) returned; `item` makes an
    /// entry of a stored one, or drops it.
    pub fn take<S>(
        &mut self,
        read: Read,
        entries: Vec<(u64, S)>,
        batch: usize,
        mut item: impl FnMut(S) -> Option<T>,
    ) -> Took {
        let numbers = entries.first().zip(entries.last()).map(|(f, l)| (f.0, l.0));
        let took = judge(read, numbers, entries.len(), batch);
        for (number, stored) in entries {
            if let Some(item) = item(stored) {
                self.offer(number, item);
            }
        }
        took
    }
}

/// The gap before the first entry held, when the next one to come out is `next`.
fn gap(next: u64, first_held: Option<u64>) -> Option<Read> {
    let first = first_held?;
    (first > next).then(|| Read {
        from: next,
        to: Some(first - 1),
    })
}

/// The read that catches up with a stream whose last entry is `last`.
fn behind(next: u64, last: u64) -> Option<Read> {
    (last >= next).then_some(Read {
        from: next,
        to: None,
    })
}

/// What a read returning `count` entries numbered `first..=last` (`numbers`) tells.
fn judge(read: Read, numbers: Option<(u64, u64)>, count: usize, batch: usize) -> Took {
    let Some((first, last)) = numbers else {
        return Took {
            count: 0,
            trimmed_to: None,
            more: None,
        };
    };
    let more = (count >= batch && read.to.is_none_or(|to| last < to)).then_some(Read {
        from: last + 1,
        to: read.to,
    });
    Took {
        count,
        trimmed_to: (first > read.from).then_some(first),
        more,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(from: u64, to: Option<u64>) -> Read {
        Read { from, to }
    }

    #[test]
    fn entries_come_out_once_and_in_order() {
        let mut follower = Follower::new(5);
        follower.offer(4, "old");
        follower.offer(6, "six");
        assert!(follower.ready().is_empty());
        assert_eq!(follower.gap(), Some(read(5, Some(5))));
        follower.offer(5, "five");
        follower.offer(6, "six again");
        assert_eq!(follower.ready(), vec![(5, "five"), (6, "six")]);
        assert_eq!(follower.gap(), None);
        follower.offer(6, "late duplicate");
        assert!(follower.ready().is_empty());
        assert_eq!(follower.next(), 7);
    }

    #[test]
    fn the_gap_is_what_lies_before_the_first_entry_held() {
        assert_eq!(gap(5, None), None);
        assert_eq!(gap(5, Some(5)), None);
        assert_eq!(gap(5, Some(6)), Some(read(5, Some(5))));
        assert_eq!(gap(5, Some(9)), Some(read(5, Some(8))));
    }

    #[test]
    fn a_stream_ending_past_what_came_out_is_read_to_its_end() {
        assert_eq!(behind(5, 3), None);
        assert_eq!(behind(5, 4), None);
        assert_eq!(behind(5, 5), Some(read(5, None)));
        assert_eq!(behind(5, 40), Some(read(5, None)));
    }

    #[test]
    fn a_read_goes_on_only_after_a_full_batch_and_before_its_end() {
        let nothing = Took {
            count: 0,
            trimmed_to: None,
            more: None,
        };
        assert_eq!(judge(read(5, None), None, 0, 3), nothing);
        assert_eq!(judge(read(5, None), Some((5, 6)), 2, 3).more, None);
        assert_eq!(
            judge(read(5, None), Some((5, 7)), 3, 3).more,
            Some(read(8, None))
        );
        assert_eq!(
            judge(read(5, Some(9)), Some((5, 7)), 3, 3).more,
            Some(read(8, Some(9)))
        );
        assert_eq!(judge(read(5, Some(7)), Some((5, 7)), 3, 3).more, None);
    }

    #[test]
    fn a_read_starting_past_its_start_found_a_trimmed_stream() {
        assert_eq!(judge(read(5, None), Some((5, 6)), 2, 10).trimmed_to, None);
        assert_eq!(
            judge(read(5, None), Some((8, 9)), 2, 10).trimmed_to,
            Some(8)
        );
    }

    #[test]
    fn taken_entries_fill_the_gap_and_unreadable_ones_are_left_out() {
        let mut follower = Follower::new(1);
        follower.offer(4, 40);
        let gap = follower.gap().unwrap();
        assert_eq!(gap, read(1, Some(3)));
        let stored = vec![(1, "10"), (2, "x"), (3, "30")];
        let took = follower.take(gap, stored, 10, |s| s.parse().ok());
        assert_eq!(took.count, 3);
        assert_eq!(follower.ready(), vec![(1, 10)]);
        assert_eq!(follower.gap(), Some(read(2, Some(2))));
    }

    #[test]
    fn skipping_a_trimmed_stretch_keeps_what_follows() {
        let mut follower = Follower::new(1);
        follower.offer(2, "two");
        follower.offer(7, "seven");
        follower.offer(9, "nine");
        follower.skip_to(7);
        assert_eq!(follower.ready(), vec![(7, "seven")]);
        follower.skip_to(3);
        assert_eq!(follower.next(), 8);
    }

    #[test]
    fn an_unplaced_follower_holds_entries_until_it_knows_where_the_stream_is() {
        let mut follower = Follower::unplaced();
        follower.offer(1, "one");
        follower.offer(3, "three");
        assert!(follower.ready().is_empty());
        assert_eq!(follower.gap(), None);
        assert_eq!(follower.behind(10), None);
        follower.place(3);
        assert!(follower.ready().is_empty(), "placing drops what was held");
        follower.offer(3, "three");
        assert_eq!(follower.ready(), vec![(3, "three")]);
        follower.unplace();
        follower.offer(4, "four");
        assert!(follower.ready().is_empty());
    }
}
