//! A value sent at most once per interval: now if the interval has passed, else once when it has.

use convene_signaling::Millis;
use serde::{Deserialize, Serialize};

/// Sends a value now if the interval has passed, else once when it has.
#[derive(Default, Serialize, Deserialize)]
pub(super) struct Coalescer {
    dirty: bool,
    last_sent_at: Option<Millis>,
}

impl Coalescer {
    /// Marks a change; true when it may be sent right away.
    pub(super) fn changed(&mut self, now: Millis, interval: Millis) -> bool {
        if self.last_sent_at.is_none_or(|t| now >= t + interval) {
            self.dirty = false;
            self.last_sent_at = Some(now);
            true
        } else {
            self.dirty = true;
            false
        }
    }
    pub(super) fn due(&mut self, now: Millis, interval: Millis) -> bool {
        if self.dirty && self.deadline(interval).is_some_and(|d| now >= d) {
            self.dirty = false;
            self.last_sent_at = Some(now);
            true
        } else {
            false
        }
    }
    pub(super) fn deadline(&self, interval: Millis) -> Option<Millis> {
        self.dirty
            .then(|| self.last_sent_at.map_or(0, |t| t + interval))
    }
}
