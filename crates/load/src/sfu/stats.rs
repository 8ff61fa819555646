//! What each subscriber counts: RTP packets, bytes, and loss from sequence numbers per SSRC.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// Sequence numbers remembered per SSRC for duplicate detection.
const SEQ_WINDOW: u64 = 1024;

/// `SubStats::state`: 0 while connecting.
pub(super) const CONNECTED: u8 = 1;
pub(super) const FAILED: u8 = 2;

/// One subscriber's counters, written by its task, read by the reporter.
#[derive(Default)]
pub(super) struct SubStats {
    pub(super) packets: AtomicU64,
    pub(super) bytes: AtomicU64,
    /// Sequence numbers spanned (per SSRC, first to highest).
    pub(super) expected: AtomicU64,
    /// Distinct sequence numbers received.
    pub(super) distinct: AtomicU64,
    /// Microseconds from the WHEP request to the first RTP packet, plus one (0: none yet).
    pub(super) first_packet_us: AtomicU64,
    pub(super) state: AtomicU8,
}

#[derive(Clone, Copy, Default)]
pub(super) struct Snap {
    pub(super) packets: u64,
    pub(super) bytes: u64,
    pub(super) expected: u64,
    pub(super) distinct: u64,
}

impl SubStats {
    pub(super) fn snap(&self) -> Snap {
        Snap {
            packets: self.packets.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            expected: self.expected.load(Ordering::Relaxed),
            distinct: self.distinct.load(Ordering::Relaxed),
        }
    }
}

/// Sequence-number bookkeeping for one SSRC: what was spanned and what arrived.
#[derive(Debug)]
pub(super) struct SeqWindow {
    pub(super) ssrc: u32,
    first: u64,
    max: u64,
    seen: [u64; (SEQ_WINDOW / 64) as usize],
}

impl SeqWindow {
    pub(super) fn new(ssrc: u32, seq: u64) -> Self {
        let mut w = SeqWindow {
            ssrc,
            first: seq,
            max: seq,
            seen: [0; (SEQ_WINDOW / 64) as usize],
        };
        w.set(seq);
        w
    }

    fn bit(seq: u64) -> (usize, u64) {
        let i = seq % SEQ_WINDOW;
        ((i / 64) as usize, 1 << (i % 64))
    }

    fn set(&mut self, seq: u64) -> bool {
        let (i, b) = Self::bit(seq);
        let new = self.seen[i] & b == 0;
        self.seen[i] |= b;
        new
    }

    /// Returns (newly spanned, newly received).
    pub(super) fn on(&mut self, seq: u64) -> (u64, u64) {
        if seq > self.max {
            let d = seq - self.max;
            if d >= SEQ_WINDOW {
                self.seen = [0; (SEQ_WINDOW / 64) as usize];
            } else {
                for s in self.max + 1..seq {
                    let (i, b) = Self::bit(s);
                    self.seen[i] &= !b;
                }
                let (i, b) = Self::bit(seq);
                self.seen[i] &= !b;
            }
            self.max = seq;
            self.set(seq);
            (d, 1)
        } else if seq < self.first || self.max - seq >= SEQ_WINDOW {
            (0, 0)
        } else {
            (0, u64::from(self.set(seq)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_window_counts_gaps_and_duplicates() {
        let mut w = SeqWindow::new(1, 100);
        assert_eq!(w.on(101), (1, 1));
        assert_eq!(w.on(104), (3, 1)); // 102, 103 missing
        assert_eq!(w.on(102), (0, 1)); // retransmitted
        assert_eq!(w.on(102), (0, 0)); // duplicate
        assert_eq!(w.on(99), (0, 0)); // before the first
        assert_eq!(w.on(104 + SEQ_WINDOW + 5), (SEQ_WINDOW + 5, 1));
        assert_eq!(w.on(104), (0, 0)); // too old
    }
}
