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
    /// Room settings changed: every session's media rights may have too.
    Recheck,
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

/// A room has two topics. Events only staff may see go on `Staff`, so that in a webcast
/// thousands of audience sessions are not woken for each other's joins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    All,
    Staff,
}

impl Topic {
    pub fn of(audience: &Audience) -> Topic {
        if audience.staff_only() {
            Topic::Staff
        } else {
            Topic::All
        }
    }
}

/// Fan-out of room events to sessions.
pub trait Bus: Send + Sync + 'static {
    /// Sends to every current subscriber of the room's topic; never waits on a slow one.
    fn publish(&self, room: &str, topic: Topic, event: Arc<LoggedEvent>);
    /// Subscribes to a room's topic; a subscriber that falls `capacity` events behind gets `Lagged`.
    fn subscribe(&self, room: &str, topic: Topic) -> Subscription;
    /// The room is gone; release what its topics hold.
    fn forget(&self, room: &str);
}

type Channels = HashMap<(String, Topic), broadcast::Sender<Arc<LoggedEvent>>>;

/// One node: a broadcast channel per room and topic. A lagging receiver is told so instead of blocking senders.
pub struct LocalBus {
    capacity: usize,
    topics: Mutex<Channels>,
}

impl LocalBus {
    pub fn new(capacity: usize) -> LocalBus {
        LocalBus {
            capacity: capacity.max(16),
            topics: Mutex::new(HashMap::new()),
        }
    }

    fn channel(&self, room: &str, topic: Topic) -> broadcast::Sender<Arc<LoggedEvent>> {
        let mut topics = self.topics.lock().expect("bus lock poisoned");
        topics
            .entry((room.to_string(), topic))
            .or_insert_with(|| broadcast::channel(self.capacity).0)
            .clone()
    }
}

impl Bus for LocalBus {
    fn publish(&self, room: &str, topic: Topic, event: Arc<LoggedEvent>) {
        // No receivers is fine: nobody is listening yet.
        let _ = self.channel(room, topic).send(event);
    }

    fn subscribe(&self, room: &str, topic: Topic) -> Subscription {
        self.channel(room, topic).subscribe()
    }

    fn forget(&self, room: &str) {
        let mut topics = self.topics.lock().expect("bus lock poisoned");
        topics.retain(|(r, _), t| r != room || t.receiver_count() > 0);
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
        let mut fast = bus.subscribe("r", Topic::All);
        let mut slow = bus.subscribe("r", Topic::All);
        let mut staff = bus.subscribe("r", Topic::Staff);
        for seq in 1..=20 {
            bus.publish("r", Topic::All, event(seq));
            let got = fast.recv().await.unwrap();
            assert_eq!(got.seq, seq);
        }
        assert!(matches!(
            slow.recv().await,
            Err(broadcast::error::RecvError::Lagged(4))
        ));
        // Other rooms and topics hear nothing.
        let mut other = bus.subscribe("q", Topic::All);
        bus.publish("r", Topic::All, event(21));
        assert!(other.try_recv().is_err());
        assert!(staff.try_recv().is_err());
    }
}
