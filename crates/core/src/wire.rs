//! The neutral wire layer: what rooms emit (sequenced envelopes with an audience and a session effect) and the seam that delivers it.
//!
//! These types sit below `room`, `session` and `bus`, so none of those import each other
//! to talk: a room produces [`Envelope`]s and [`RoomOutput`]s and hands them to a
//! [`SessionSink`]; the local sink fans out through lanes on this node, a cluster sink
//! would carry the same serialisable data to other nodes.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use convene_signaling::{BreakoutId, CloseReason, Role, TrackKind};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A serialised server message, shared by every session that sends it.
pub type Frame = Utf8Bytes;

/// Where someone is: the main room or one breakout.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum Place {
    #[default]
    Main,
    Breakout(BreakoutId),
    /// Attendees waiting for a scheduled convening to start: they see only what is
    /// addressed to the lobby or to them.
    Lobby,
}

impl Place {
    pub fn from_breakout(breakout: Option<BreakoutId>) -> Place {
        breakout.map_or(Place::Main, Place::Breakout)
    }
    pub fn breakout(self) -> Option<BreakoutId> {
        match self {
            Place::Main | Place::Lobby => None,
            Place::Breakout(id) => Some(id),
        }
    }
}

/// The person looking: what a session knows to filter events and snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Viewer {
    pub identity: String,
    pub role: Role,
    pub place: Place,
}

/// Who may see an event. Checked for live and replayed events alike.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Audience {
    Everyone,
    /// Anyone matching one of the parts: people at `places`, staff, or `person`.
    Some {
        places: Vec<Place>,
        staff: bool,
        person: Option<String>,
    },
    /// Everyone except staff and this person (who receive a fuller event).
    Rest(String),
    /// Everyone but staff.
    Participants,
    /// Sessions that turned captions on (`subscribe_captions`). It is a session's choice,
    /// not the room's, so `includes` is false: a session with captions on reads the
    /// captions lane and delivers what it carries; replays on resume leave captions out.
    Captions,
}

impl Audience {
    pub fn staff() -> Audience {
        Audience::Some {
            places: Vec::new(),
            staff: true,
            person: None,
        }
    }
    pub fn person(identity: &str) -> Audience {
        Audience::Some {
            places: Vec::new(),
            staff: false,
            person: Some(identity.to_string()),
        }
    }
    pub fn staff_and(identity: &str) -> Audience {
        Audience::Some {
            places: Vec::new(),
            staff: true,
            person: Some(identity.to_string()),
        }
    }
    pub fn at(place: Place) -> Audience {
        Audience::Some {
            places: vec![place],
            staff: false,
            person: None,
        }
    }

    /// Only staff can be in this audience.
    pub fn staff_only(&self) -> bool {
        matches!(self, Audience::Some { places, staff: true, person: None } if places.is_empty())
    }

    pub fn includes(&self, viewer: &Viewer) -> bool {
        if viewer.place == Place::Lobby {
            // The lobby sees nothing of the room: only what names the lobby or the person.
            return matches!(self, Audience::Some { places, person, .. }
                if places.contains(&Place::Lobby) || person.as_deref() == Some(viewer.identity.as_str()));
        }
        match self {
            Audience::Everyone => true,
            Audience::Some {
                places,
                staff,
                person,
            } => {
                (*staff && viewer.role.is_staff())
                    || places.contains(&viewer.place)
                    || person.as_deref() == Some(viewer.identity.as_str())
            }
            Audience::Rest(identity) => !viewer.role.is_staff() && viewer.identity != *identity,
            Audience::Participants => !viewer.role.is_staff(),
            Audience::Captions => false,
        }
    }
}

/// What a session must do when it delivers an event, beyond sending it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionEffect {
    /// This identity moved; its sessions now see events for `to`.
    Move {
        identity: String,
        from: Place,
        to: Place,
        may_publish: bool,
    },
    /// This identity's record changed (stage, place, a moderator's mute): its media rights
    /// may have too.
    Access {
        identity: String,
        place: Place,
        may_publish: bool,
        muted: Vec<TrackKind>,
    },
    /// This identity was removed; its sessions close after sending the event.
    Kick { identity: String },
    /// Room settings changed: every session's media rights may have too.
    Recheck,
}

impl SessionEffect {
    /// The one person this effect is about, if it is about one.
    pub fn identity(&self) -> Option<&str> {
        match self {
            SessionEffect::Move { identity, .. }
            | SessionEffect::Access { identity, .. }
            | SessionEffect::Kick { identity } => Some(identity),
            SessionEffect::Recheck => None,
        }
    }
}

/// A room event as it travels: sequence number, who may see it, what it does to sessions,
/// and its bytes, serialised once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub seq: u64,
    pub audience: Audience,
    pub effect: Option<SessionEffect>,
    #[serde(with = "frame_text")]
    pub frame: Frame,
}

/// A stream of events a session may subscribe to. A session wakes only for its lanes:
/// the room's, its place's, staff's (if staff), and its own direct lane.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lane {
    /// Events for everyone in the room (filtered further by `Audience::includes`).
    Room,
    Place(Place),
    Staff,
    /// One person's direct lane.
    Person(String),
    /// Captions: read only by sessions that turned them on, so the rest never wake for them.
    Captions,
}

impl Envelope {
    /// The lanes this envelope travels on. A bulk operation that emits one event per person
    /// addresses each to its person, so it lands on direct lanes, never a shared one.
    pub fn lanes(&self) -> Vec<Lane> {
        let mut lanes = match &self.audience {
            Audience::Everyone | Audience::Rest(_) | Audience::Participants => vec![Lane::Room],
            Audience::Captions => vec![Lane::Captions],
            Audience::Some {
                places,
                staff,
                person,
            } => {
                let mut lanes: Vec<Lane> = places.iter().map(|p| Lane::Place(*p)).collect();
                if *staff {
                    lanes.push(Lane::Staff);
                }
                if let Some(person) = person {
                    lanes.push(Lane::Person(person.clone()));
                }
                lanes
            }
        };
        // An effect about someone must reach their sessions even if the frame is not for them.
        if let Some(identity) = self.effect.as_ref().and_then(SessionEffect::identity) {
            let lane = Lane::Person(identity.to_string());
            if !lanes.contains(&lane) && !lanes.contains(&Lane::Room) {
                lanes.push(lane);
            }
        }
        lanes
    }
}

/// Identifies one socket of a session (a resumed session gets a new connection id).
pub type ConnectionId = Uuid;

/// What a room asks its sessions to do. Plain data, so it can cross a process boundary.
#[derive(Clone, Debug)]
pub enum RoomOutput {
    /// Fan this event out to every session whose lanes carry it.
    Publish(Arc<Envelope>),
    /// A direct, unsequenced reply (ack, error) to one connection.
    Reply { to: ConnectionId, frame: Frame },
    /// Close one connection.
    Close {
        to: ConnectionId,
        reason: CloseReason,
    },
}

/// Delivers a room's outputs to sessions, wherever they are. The room never knows how.
pub trait SessionSink: Send + Sync + 'static {
    fn deliver(&self, room: &str, output: RoomOutput);
    /// The room has ended on this node: release what its lanes hold.
    fn room_ended(&self, room: &str);
    /// Sockets open on this node in `room`.
    fn connections_in(&self, room: &str) -> usize;
    /// Closes every socket of `room` on this node (they may resume elsewhere).
    fn close_room(&self, room: &str, reason: convene_signaling::CloseReason);
}

pub mod frame_text {
    use super::Frame;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(frame: &Frame, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(frame.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Frame, D::Error> {
        String::deserialize(d).map(Frame::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_as_json() {
        let envelope = Envelope {
            seq: 7,
            audience: Audience::Some {
                places: vec![Place::Breakout(3)],
                staff: true,
                person: Some("ana".into()),
            },
            effect: Some(SessionEffect::Move {
                identity: "ana".into(),
                from: Place::Main,
                to: Place::Breakout(3),
                may_publish: true,
            }),
            frame: Frame::from(r#"{"type":"event","seq":7}"#),
        };
        let text = serde_json::to_string(&envelope).unwrap();
        assert_eq!(serde_json::from_str::<Envelope>(&text).unwrap(), envelope);
    }

    #[test]
    fn lanes_follow_the_audience() {
        let at = |audience, effect| Envelope {
            seq: 1,
            audience,
            effect,
            frame: Frame::from("{}"),
        };
        assert_eq!(at(Audience::Everyone, None).lanes(), vec![Lane::Room]);
        assert_eq!(at(Audience::Participants, None).lanes(), vec![Lane::Room]);
        assert_eq!(at(Audience::Captions, None).lanes(), vec![Lane::Captions]);
        assert_eq!(
            at(Audience::staff_and("bo"), None).lanes(),
            vec![Lane::Staff, Lane::Person("bo".into())]
        );
        assert_eq!(
            at(Audience::at(Place::Breakout(2)), None).lanes(),
            vec![Lane::Place(Place::Breakout(2))]
        );
        // A staff-only frame whose effect is about someone still reaches that person.
        let kick = Some(SessionEffect::Kick {
            identity: "cy".into(),
        });
        assert_eq!(
            at(Audience::staff(), kick).lanes(),
            vec![Lane::Staff, Lane::Person("cy".into())]
        );
    }
}
