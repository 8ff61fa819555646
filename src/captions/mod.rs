//! Live captions on the server side: their limits, a session's captions switch and captioner bucket, the captioning service's buckets, and the WebVTT export.
//!
//! The room (`convene_core::room::captions`) owns the captions themselves; this module
//! refuses what is too big or too fast before it reaches the room (and, in a cluster, Redis).

pub mod vtt;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use convene_signaling::ErrorCode;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::bucket::TokenBucket;
use crate::config::{Bucket, CaptionLimits};

/// One session's captions: whether it turned them on, and its captioner bucket.
pub struct Captioning {
    limits: CaptionLimits,
    bucket: TokenBucket,
    on: watch::Sender<bool>,
}

impl Captioning {
    pub fn new(limits: &CaptionLimits, on: watch::Sender<bool>) -> Captioning {
        Captioning {
            limits: limits.clone(),
            bucket: TokenBucket::new(limits.captioner, Instant::now()),
            on,
        }
    }

    pub fn subscribe(&self, on: bool) {
        self.on
            .send_if_modified(|now| std::mem::replace(now, on) != on);
    }

    /// Refuses a captioner's line that is too long or comes too fast: the error to send.
    pub fn refuse(&mut self, text: &str) -> Option<(ErrorCode, String, Option<u64>)> {
        if let Some(why) = self.limits.too_long(text) {
            return Some((ErrorCode::InvalidArgument, why, None));
        }
        self.bucket.take(Instant::now()).err().map(|retry| {
            (
                ErrorCode::RateLimited,
                "slow down: too many caption updates".to_string(),
                Some(retry),
            )
        })
    }
}

/// The captioning service's posts per convening on this node.
#[derive(Clone, Default)]
pub struct ServiceBuckets {
    rooms: Arc<Mutex<HashMap<String, TokenBucket>>>,
}

/// Rooms whose buckets are remembered at once; past it they are all forgotten (a service
/// needs a token its host created, so this bounds memory, not who may post).
const MAX_BUCKETS: usize = 10_000;

impl ServiceBuckets {
    /// `Err(retry_after_ms)` when the room's service posts too fast.
    pub fn take(&self, room: &str, config: Bucket) -> Result<(), u64> {
        let now = Instant::now();
        let mut rooms = self.rooms.lock().expect("caption buckets lock");
        if rooms.len() >= MAX_BUCKETS && !rooms.contains_key(room) {
            rooms.clear();
        }
        rooms
            .entry(room.to_string())
            .or_insert_with(|| TokenBucket::new(config, now))
            .take(now)
    }
}
