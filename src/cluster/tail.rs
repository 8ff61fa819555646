//! Puts a numbered stream back in order: items arrive by pub/sub (at most once, possibly late) and by repair reads; each number comes out once, in order.

use std::collections::BTreeMap;

pub struct Tail<T> {
    next: u64,
    pending: BTreeMap<u64, T>,
}

impl<T> Tail<T> {
    /// Expects `next` first.
    pub fn new(next: u64) -> Tail<T> {
        Tail {
            next,
            pending: BTreeMap::new(),
        }
    }

    /// The next number to come out.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Restarts at `next` (a new era, or a position read from Redis); pending items go.
    pub fn reset(&mut self, next: u64) {
        self.next = next;
        self.pending.clear();
    }

    /// Takes an item; numbers already passed are duplicates and are dropped.
    pub fn offer(&mut self, number: u64, item: T) {
        if number >= self.next {
            self.pending.entry(number).or_insert(item);
        }
    }

    /// The items ready, in order.
    pub fn ready(&mut self) -> Vec<(u64, T)> {
        let mut out = Vec::new();
        while let Some(item) = self.pending.remove(&self.next) {
            out.push((self.next, item));
            self.next += 1;
        }
        out
    }

    /// The next item, if it is here.
    pub fn pop_ready(&mut self) -> Option<(u64, T)> {
        let item = self.pending.remove(&self.next)?;
        self.next += 1;
        Some((self.next - 1, item))
    }

    /// The numbers missing before the first one held: a repair should read them.
    pub fn gap(&self) -> Option<(u64, u64)> {
        let (&first, _) = self.pending.first_key_value()?;
        (first > self.next).then(|| (self.next, first - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_come_out_once_and_in_order() {
        let mut tail = Tail::new(5);
        tail.offer(4, "old");
        tail.offer(6, "six");
        assert!(tail.ready().is_empty());
        assert_eq!(tail.gap(), Some((5, 5)));
        tail.offer(5, "five");
        tail.offer(6, "six again");
        assert_eq!(tail.ready(), vec![(5, "five"), (6, "six")]);
        assert_eq!(tail.gap(), None);
        tail.offer(6, "late duplicate");
        assert!(tail.ready().is_empty());
        assert_eq!(tail.next(), 7);
    }
}
