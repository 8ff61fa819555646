//! What each session remembers of its replies, by request_id, so a resent command is applied once; and the form a snapshot keeps them in.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::wire::Frame;

/// Remembers replies by request_id so a resent command is applied once. Bounded in count
/// and in bytes (ids are capped at the edge; only acks are remembered, never refusals, so
/// the bytes are small and cannot be inflated by commands the room refused). The room
/// bounds the sum over its sessions too (`RoomCore`), since every byte here is in its
/// snapshot.
pub(super) struct Idempotency {
    capacity: usize,
    max_bytes: usize,
    bytes: usize,
    order: VecDeque<Arc<str>>,
    replies: HashMap<Arc<str>, Frame>,
}

impl Idempotency {
    pub(super) fn new(capacity: usize, max_bytes: usize) -> Self {
        Idempotency {
            capacity,
            max_bytes,
            bytes: 0,
            order: VecDeque::new(),
            replies: HashMap::new(),
        }
    }

    pub(super) fn get(&self, request_id: &str) -> Option<&Frame> {
        self.replies.get(request_id)
    }

    /// Bytes remembered (ids and frames).
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Forgets the oldest reply; false when there was none.
    pub(super) fn forget_oldest(&mut self) -> bool {
        let Some(old) = self.order.pop_front() else {
            return false;
        };
        if let Some(frame) = self.replies.remove(&old) {
            self.bytes -= old.len() + frame.len();
        }
        true
    }

    pub(super) fn remember(&mut self, request_id: String, reply: Frame) {
        if self.capacity == 0 || self.max_bytes == 0 {
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
            if !self.forget_oldest() {
                break;
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
        let mut recent = Idempotency::new(2, 1024);
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

    #[test]
    fn the_oldest_replies_go_first_past_the_byte_bound() {
        // Each entry: a 2-byte id and a 30-byte frame.
        let mut recent = Idempotency::new(100, 100);
        for n in 10..20 {
            recent.remember(format!("r{n}"), Frame::from(format!("{:>30}", n)));
            assert!(recent.bytes() <= 100, "{}", recent.bytes());
        }
        let kept: Vec<String> = recent
            .oldest_first()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(kept, ["r17", "r18", "r19"]);
        assert!(recent.forget_oldest());
        assert_eq!(recent.bytes(), 66);
    }
}
