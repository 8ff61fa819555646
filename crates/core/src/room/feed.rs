//! Webhook events: a room's pure filter from the events it publishes to the events receivers are told of.

use std::collections::HashSet;

use convene_signaling::{BreakoutPhase, RoomEvent};
use serde::Serialize;
use serde_json::{json, Value};

/// One webhook event.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WebhookEvent {
    pub id: String,
    /// e.g. `participant.joined`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub room: String,
    /// Unix milliseconds, from the room's clock.
    pub at: u64,
    pub data: Value,
}

impl WebhookEvent {
    pub fn new(kind: &'static str, room: &str, at: u64, data: Value) -> WebhookEvent {
        WebhookEvent {
            id: uuid::Uuid::new_v4().to_string(),
            kind,
            room: room.to_string(),
            at,
            data,
        }
    }
}

/// A room's filter from published events to webhook events; dedupes events that a room sends
/// in several versions (one per audience).
#[derive(Debug, Default)]
pub struct RoomFeed {
    room: String,
    asked: HashSet<u64>,
    answered: HashSet<u64>,
    breakouts_open: bool,
}

impl RoomFeed {
    pub fn new(room: &str) -> RoomFeed {
        RoomFeed {
            room: room.to_string(),
            ..Default::default()
        }
    }

    fn event(&self, kind: &'static str, at: u64, data: Value) -> Option<WebhookEvent> {
        Some(WebhookEvent::new(kind, &self.room, at, data))
    }

    pub fn started(&self, at: u64) -> WebhookEvent {
        WebhookEvent::new("room.started", &self.room, at, json!({}))
    }

    /// The room closed; its attendance is final.
    pub fn ended(&self, at: u64) -> [WebhookEvent; 2] {
        let segment: String = self
            .room
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let path = format!("/api/v1/rooms/{segment}/attendance");
        [
            WebhookEvent::new("room.ended", &self.room, at, json!({})),
            WebhookEvent::new("attendance.ready", &self.room, at, json!({ "path": path })),
        ]
    }

    /// The webhook event for a published room event, if it is one.
    pub fn record(&mut self, body: &RoomEvent, at: u64) -> Option<WebhookEvent> {
        match body {
            RoomEvent::MemberJoined { member } => self.event(
                "participant.joined",
                at,
                json!({ "identity": member.identity, "name": member.name, "role": member.role }),
            ),
            RoomEvent::MemberLeft { identity, reason } => self.event(
                "participant.left",
                at,
                json!({ "identity": identity, "reason": reason }),
            ),
            RoomEvent::QuestionUpdated { question } => {
                let q = question;
                if self.asked.insert(q.id) {
                    // Anonymous questions stay anonymous here too.
                    return self.event(
                        "question.asked",
                        at,
                        json!({ "id": q.id, "text": q.text, "anonymous": q.anonymous, "author": q.author }),
                    );
                }
                if q.answered_at.is_some() && self.answered.insert(q.id) {
                    return self.event(
                        "question.answered",
                        at,
                        json!({ "id": q.id, "text": q.text, "answer": q.answer }),
                    );
                }
                None
            }
            RoomEvent::BreakoutsUpdated { breakouts: Some(b) }
                if b.phase == BreakoutPhase::Open && !self.breakouts_open =>
            {
                self.breakouts_open = true;
                let rooms: Vec<&str> = b.rooms.iter().map(|r| r.name.as_str()).collect();
                self.event(
                    "breakouts.opened",
                    at,
                    json!({ "rooms": rooms, "ends_at": b.ends_at }),
                )
            }
            RoomEvent::BreakoutsClosed if self.breakouts_open => {
                self.breakouts_open = false;
                self.event("breakouts.closed", at, json!({}))
            }
            _ => None,
        }
    }
}
