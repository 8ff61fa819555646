//! Counters and latency samples gathered by many sessions at once: sharded, batched, with the first error texts kept.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;

/// Latency samples a session keeps before merging them into the shared histogram.
const BATCH: usize = 256;
/// Counter shards, so sessions on different threads do not share a cache line.
pub(super) const SHARDS: usize = 16;
/// Error texts kept for the report.
const ERROR_SAMPLES: usize = 5;

#[repr(align(128))]
#[derive(Default)]
pub(super) struct Padded(pub(super) AtomicU64);

/// Errors counted across sessions, with the first few texts.
#[derive(Default)]
pub(crate) struct Errors {
    count: AtomicU64,
    samples: Mutex<Vec<String>>,
}

impl Errors {
    pub(crate) fn add(&self, text: String) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut samples = self.samples.lock().expect("error samples lock");
        if samples.len() < ERROR_SAMPLES {
            samples.push(text);
        }
    }
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
    pub(crate) fn samples(&self) -> Vec<String> {
        self.samples.lock().expect("error samples lock").clone()
    }
}

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Delivery latency: all deliveries, and split by same node / cross node.
pub(super) struct Deliveries {
    pub(super) all: Histogram<u64>,
    pub(super) same: Histogram<u64>,
    pub(super) cross: Histogram<u64>,
}

/// A session's own latency samples, merged into the shared histogram in batches.
pub(super) struct Samples {
    micros: Vec<u64>,
}

impl Samples {
    pub(super) fn new() -> Samples {
        Samples { micros: Vec::new() }
    }
    pub(super) fn record(&mut self, micros: u64, into: &Mutex<Histogram<u64>>) {
        if self.micros.capacity() == 0 {
            self.micros.reserve_exact(BATCH);
        }
        self.micros.push(micros.max(1));
        if self.micros.len() >= BATCH {
            self.flush(into);
        }
    }
    pub(super) fn flush(&mut self, into: &Mutex<Histogram<u64>>) {
        if self.micros.is_empty() {
            return;
        }
        let mut hist = into.lock().expect("histogram lock");
        for &v in &self.micros {
            hist.saturating_record(v);
        }
        self.micros.clear();
    }
}

/// A chat session's latency samples, each flagged same-node or cross-node, merged in batches.
pub(super) struct DeliverySamples {
    /// Microseconds, with [`DeliverySamples::CROSS`] set for a cross-node delivery.
    micros: Vec<u64>,
}

impl DeliverySamples {
    const CROSS: u64 = 1 << 63;

    pub(super) fn new() -> DeliverySamples {
        DeliverySamples { micros: Vec::new() }
    }
    pub(super) fn record(&mut self, micros: u64, cross: bool, into: &Mutex<Deliveries>) {
        if self.micros.capacity() == 0 {
            self.micros.reserve_exact(BATCH);
        }
        let v = micros.clamp(1, Self::CROSS - 1);
        self.micros.push(if cross { v | Self::CROSS } else { v });
        if self.micros.len() >= BATCH {
            self.flush(into);
        }
    }
    pub(super) fn flush(&mut self, into: &Mutex<Deliveries>) {
        if self.micros.is_empty() {
            return;
        }
        let mut d = into.lock().expect("histogram lock");
        for &v in &self.micros {
            let us = v & !Self::CROSS;
            d.all.saturating_record(us);
            if v & Self::CROSS != 0 {
                d.cross.saturating_record(us);
            } else {
                d.same.saturating_record(us);
            }
        }
        self.micros.clear();
    }
}
