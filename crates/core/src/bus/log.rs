//! A room's recent events, kept so a reconnecting session can receive exactly what it missed.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::wire::Envelope;

/// The requested gap starts before the oldest event kept.
#[derive(Debug, PartialEq, Eq)]
pub struct GapTooOld {
    pub oldest_kept: u64,
}

pub struct EventLog {
    capacity: usize,
    events: VecDeque<Arc<Envelope>>,
    last_seq: u64,
}

impl EventLog {
    pub fn new(capacity: usize) -> EventLog {
        EventLog {
            capacity: capacity.max(1),
            events: VecDeque::new(),
            last_seq: 0,
        }
    }

    /// A log taken over from elsewhere: `events` (oldest first, contiguous) end at `last_seq`.
    pub fn restore(capacity: usize, last_seq: u64, events: Vec<Arc<Envelope>>) -> EventLog {
        let mut log = EventLog::new(capacity);
        log.last_seq = last_seq;
        let start = events.len().saturating_sub(log.capacity);
        log.events = events
            .into_iter()
            .skip(start)
            .filter(|e| e.seq <= last_seq)
            .collect();
        log
    }

    /// Every event kept, oldest first.
    pub fn kept(&self) -> Vec<Arc<Envelope>> {
        self.events.iter().cloned().collect()
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    pub fn next_seq(&self) -> u64 {
        self.last_seq + 1
    }

    pub fn append(&mut self, event: Arc<Envelope>) {
        debug_assert_eq!(event.seq, self.last_seq + 1);
        self.last_seq = event.seq;
        self.events.push_back(event);
        while self.events.len() > self.capacity {
            self.events.pop_front();
        }
    }

    /// Every event after `last_seq`, in order.
    pub fn since(&self, last_seq: u64) -> Result<Vec<Arc<Envelope>>, GapTooOld> {
        if last_seq >= self.last_seq {
            return Ok(Vec::new());
        }
        let oldest = self.events.front().map_or(self.last_seq + 1, |e| e.seq);
        if last_seq + 1 < oldest {
            return Err(GapTooOld {
                oldest_kept: oldest,
            });
        }
        let skip = (last_seq + 1 - oldest) as usize;
        Ok(self.events.iter().skip(skip).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Audience;

    fn log_with(capacity: usize, n: u64) -> EventLog {
        let mut log = EventLog::new(capacity);
        for seq in 1..=n {
            log.append(Arc::new(Envelope {
                seq,
                audience: Audience::Everyone,
                effect: None,
                frame: "x".into(),
            }));
        }
        log
    }

    #[test]
    fn replays_exactly_the_missed_events() {
        let log = log_with(10, 8);
        let seqs: Vec<u64> = log.since(5).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![6, 7, 8]);
        assert!(log.since(8).unwrap().is_empty());
        assert_eq!(log.since(0).unwrap().len(), 8);
    }

    #[test]
    fn gap_older_than_the_log_is_refused() {
        let log = log_with(4, 10);
        assert_eq!(log.since(5).unwrap_err(), GapTooOld { oldest_kept: 7 });
        assert_eq!(log.since(6).unwrap().len(), 4);
    }
}
