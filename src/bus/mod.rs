//! The event bus rooms publish to and sessions subscribe through, and the per-room event log behind resume.
//!
//! `Bus` is a trait so a Redis implementation can replace [`LocalBus`] without rooms or
//! sessions knowing; the choice is made once, at start-up (`http::AppState::new`).

mod log;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::broadcast;

pub use log::{EventLog, GapTooOld};

use crate::room::{Audience, Place};

/// A serialised server message, shared by every session that sends it.
pub type Frame = Utf8Bytes;

/// What a session must do when it delivers an event, beyond sending it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEffect {
    /// This identity moved; its sessions now see events for `to`.
    Move {
        identity: String,
        from: Place,
        to: Place,
        may_publish: bool,
    },
    /// This identity's record changed (stage, place): its media rights may have too.
    Access {
        identity: String,
        place: Place,
        may_publish: bool,
    },
    /// This identity was removed; its sessions close after sending the event.
    Kick { identity: String },
}

/// A room event as it travels: sequence number, who may see it, and its bytes, serialised once.
#[derive(Debug)]
pub struct LoggedEvent {
    pub seq: u64,
    pub audience: Audience,
    pub effect: Option<SessionEffect>,
    pub frame: Frame,
}

pub type Subscription = broadcast::Receiver<Arc<LoggedEvent>>;

/// Fan-out of room events to sessions.
pub trait Bus: Send + Sync + 'static {
    /// Sends to every current subscriber of `room`; never waits on a slow one.
    fn publish(&self, room: &str, event: Arc<LoggedEvent>);
    /// Subscribes to `room`; a subscriber that falls `capacity` events behind gets `Lagged`.
    fn subscribe(&self, room: &str) -> Subscription;
    /// The room is gone; release what its topic holds.
    fn forget(&self, room: &str);
}

/// One node: a broadcast channel per room. A lagging receiver is told so instead of blocking senders.
pub struct LocalBus {
    capacity: usize,
    topics: Mutex<HashMap<String, broadcast::Sender<Arc<LoggedEvent>>>>,
}

impl LocalBus {
    pub fn new(capacity: usize) -> LocalBus {
        LocalBus {
            capacity: capacity.max(16),
            topics: Mutex::new(HashMap::new()),
        }
    }

    fn topic(&self, room: &str) -> broadcast::Sender<Arc<LoggedEvent>> {
        let mut topics = self.topics.lock().expect("bus lock poisoned");
        topics
            .entry(room.to_string())
            .or_insert_with(|| broadcast::channel(self.capacity).0)
            .clone()
    }
}

impl Bus for LocalBus {
    fn publish(&self, room: &str, event: Arc<LoggedEvent>) {
        // No receivers is fine: nobody is listening yet.
        let _ = self.topic(room).send(event);
    }

    fn subscribe(&self, room: &str) -> Subscription {
        self.topic(room).subscribe()
    }

    fn forget(&self, room: &str) {
        let mut topics = self.topics.lock().expect("bus lock poisoned");
        if topics.get(room).is_some_and(|t| t.receiver_count() == 0) {
            topics.remove(room);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64) -> Arc<LoggedEvent> {
        Arc::new(LoggedEvent {
            seq,
            audience: Audience::Everyone,
            effect: None,
            frame: Frame::from(format!("{{\"seq\":{seq}}}")),
        })
    }

    #[tokio::test]
    async fn subscribers_get_the_same_bytes_and_laggards_are_told() {
        let bus = LocalBus::new(16);
        let mut fast = bus.subscribe("r");
        let mut slow = bus.subscribe("r");
        for seq in 1..=20 {
            bus.publish("r", event(seq));
            let got = fast.recv().await.unwrap();
            assert_eq!(got.seq, seq);
        }
        assert!(matches!(
            slow.recv().await,
            Err(broadcast::error::RecvError::Lagged(4))
        ));
        // Other rooms hear nothing.
        let mut other = bus.subscribe("q");
        bus.publish("r", event(21));
        assert!(other.try_recv().is_err());
    }
}
