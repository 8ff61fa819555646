//! What each session remembers of its replies, by request_id, so a resent command is applied once; and the form a snapshot keeps them in.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::wire::Frame;

/// Bytes of remembered replies (ids and frames) per session.
const IDEMPOTENCY_BYTES: usize = 64 * 1024;

/// Remembers replies by request_id so a resent command is applied once. Bounded in count
/// and in bytes: ids are capped at the edge, but replies (errors) carry text too.
pub(super) struct Idempotency {
    capacity: usize,
    max_bytes: usize,
    bytes: usize,
    order: VecDeque<Arc<str>>,
    replies: HashMap<Arc<str>, Frame>,
}

impl Idempotency {
    pub(super) fn new(capacity: usize) -> Self {
        Idempotency {
            capacity,
            max_bytes: IDEMPOTENCY_BYTES,
            bytes: 0,
            order: VecDeque::new(),
            replies: HashMap::new(),
        }
    }

    pub(super) fn get(&self, request_id: &str) -> Option<&Frame> {
        self.replies.get(request_id)
    }

    pub(super) fn remember(&mut self, request_id: String, reply: Frame) {
        if self.capacity == 0 {
            return;
        }
        let id: Arc<str> = request_id.into();
        let size = id.len() + reply.len();
        if let Some(old) = self.replies.insert(id.clone(), reply) {
            self.bytes -= id.len() + old.len();
        } else {
            self.order.push_back(id);
        }
        self.bytes += size;
        while self.order.len() > self.capacity || self.bytes > self.max_bytes {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(frame) = self.replies.remove(&old) {
                self.bytes -= old.len() + frame.len();
            }
        }
    }

    /// The remembered replies, oldest first, as a snapshot keeps them.
    pub(super) fn oldest_first(&self) -> Vec<(String, Frame)> {
        self.order
            .iter()
            .filter_map(|r| self.replies.get(r).map(|f| (r.to_string(), f.clone())))
            .collect()
    }
}

/// Serde for remembered replies: `[[request_id, frame text], ...]`.
pub(super) mod replies {
    use super::Frame;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &[(String, Frame)], s: S) -> Result<S::Ok, S::Error> {
        v.iter()
            .map(|(id, f)| (id.as_str(), f.as_str()))
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, Frame)>, D::Error> {
        let pairs = Vec::<(String, String)>::deserialize(d)?;
        Ok(pairs
            .into_iter()
            .map(|(id, f)| (id, Frame::from(f)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_replies_go_first_past_the_window() {
        let mut recent = Idempotency::new(2);
        for id in ["a", "b", "c"] {
            recent.remember(id.into(), Frame::from(format!("reply {id}")));
        }
        assert!(recent.get("a").is_none());
        let kept: Vec<String> = recent
            .oldest_first()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(kept, ["b", "c"]);
    }
}
