//! The operator's side of a room: what the admin API may do to it (settings before or during the event, removing people, ending it, reading who is there), as pure state changes like `apply`.

use convene_signaling::{LeaveReason, Member, Millis, QaMode, RoomEvent, RoomKind, RoomSettings};

use super::captions::{CaptionAnswer, CaptionOp};
use super::{Audience, Denied, Event, RoomState};

/// One operator action; every one answers with the room as it is afterwards.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum Operation {
    /// Reads the room without changing it.
    Describe,
    Configure {
        kind: Option<RoomKind>,
        chat_enabled: Option<bool>,
        qa_mode: Option<QaMode>,
    },
    /// Removes (and bans) one member, as a moderator's removal does.
    Remove {
        identity: String,
        reason: Option<String>,
    },
    /// Removes everyone and refuses later joins until the room is forgotten.
    End { reason: Option<String> },
    /// A scheduled convening: attendees wait in its lobby until `Open` (`lobby.rs`).
    Schedule { lobby: convene_signaling::Lobby },
    /// The convening starts: the lobby's attendees are admitted.
    Open,
    /// Captions: the service endpoint, automatic captions, the export. Answers with a brief
    /// report (no members: a service posts many lines).
    Captions(CaptionOp),
}

/// A room as the admin API shows it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RoomReport {
    pub settings: RoomSettings,
    pub members: Vec<Member>,
    pub ended: bool,
    /// A scheduled convening not yet started.
    #[serde(default)]
    pub lobby: Option<convene_signaling::Lobby>,
    /// The answer to a caption operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captions: Option<CaptionAnswer>,
}

fn reason_text(reason: Option<&str>, default: &str) -> String {
    reason
        .map(|r| r.chars().take(500).collect::<String>())
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| default.to_string())
}

impl RoomState {
    /// Applies an operator action: the events to publish and the room afterwards.
    pub fn operate(
        &mut self,
        op: &Operation,
        now: Millis,
    ) -> Result<(Vec<Event>, RoomReport), Denied> {
        let events = match op {
            Operation::Describe => Vec::new(),
            Operation::Configure {
                kind,
                chat_enabled,
                qa_mode,
            } => self.update_settings(*kind, *chat_enabled, *qa_mode)?.events,
            Operation::Remove { identity, reason } => {
                if self.member(identity).is_none() {
                    return Err(Denied::not_found("participant"));
                }
                self.banned.insert(identity.clone());
                self.remove_member(
                    identity,
                    reason_text(reason.as_deref(), "removed by the organiser"),
                    now,
                )
            }
            Operation::Schedule { lobby } => self.schedule(lobby.clone()),
            Operation::Open => self.open(),
            Operation::End { reason } => {
                let reason = reason_text(reason.as_deref(), "this convening has ended");
                self.ended = true;
                let everyone: Vec<String> = self.members.keys().cloned().collect();
                everyone
                    .iter()
                    .flat_map(|identity| self.remove_member(identity, reason.clone(), now))
                    .collect()
            }
            Operation::Captions(op) => {
                let (events, answer) = self.operate_captions(op, now);
                let report = RoomReport {
                    settings: self.settings.clone(),
                    members: Vec::new(),
                    ended: self.ended,
                    lobby: self.lobby().cloned(),
                    captions: Some(answer),
                };
                return Ok((events, report));
            }
        };
        Ok((events, self.report()))
    }

    fn remove_member(&mut self, identity: &str, reason: String, now: Millis) -> Vec<Event> {
        let mut events = vec![Event::new(
            Audience::person(identity),
            RoomEvent::Removed { reason },
        )];
        events.extend(self.drop_member(identity, LeaveReason::Removed, now));
        events
    }

    pub fn report(&self) -> RoomReport {
        RoomReport {
            settings: self.settings.clone(),
            members: self.members().cloned().collect(),
            ended: self.ended,
            lobby: self.lobby().cloned(),
            captions: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::{Joiner, RoomLimits};
    use convene_signaling::{ErrorCode, Role};

    fn joiner(identity: &str, role: Role) -> Joiner {
        Joiner {
            identity: identity.into(),
            name: identity.to_uppercase(),
            role,
            attrs: Default::default(),
            on_stage: false,
            credentials_until: None,
        }
    }

    #[test]
    fn end_removes_everyone_and_refuses_later_joins() {
        let mut room = RoomState::new("r", RoomLimits::default());
        room.join(joiner("host", Role::Host), 0).unwrap();
        room.join(joiner("ana", Role::Participant), 0).unwrap();
        let (events, report) = room.operate(&Operation::End { reason: None }, 10).unwrap();
        assert!(report.ended && report.members.is_empty());
        let removed: Vec<_> = events
            .iter()
            .filter(|e| matches!(e.body, RoomEvent::Removed { .. }))
            .collect();
        assert_eq!(removed.len(), 2);
        let refused = room.join(joiner("ben", Role::Participant), 20).unwrap_err();
        assert_eq!(refused.code, ErrorCode::Forbidden);
    }

    #[test]
    fn remove_bans_one_member_and_unknown_is_not_found() {
        let mut room = RoomState::new("r", RoomLimits::default());
        room.join(joiner("ana", Role::Participant), 0).unwrap();
        let op = Operation::Remove {
            identity: "ana".into(),
            reason: None,
        };
        let (_, report) = room.operate(&op, 1).unwrap();
        assert!(report.members.is_empty());
        assert!(room.is_banned("ana"));
        assert_eq!(room.operate(&op, 2).unwrap_err().code, ErrorCode::NotFound);
    }

    #[test]
    fn configure_changes_settings_before_anyone_joins() {
        let mut room = RoomState::new("r", RoomLimits::default());
        let op = Operation::Configure {
            kind: Some(RoomKind::Meeting),
            chat_enabled: Some(false),
            qa_mode: None,
        };
        let (_, report) = room.operate(&op, 0).unwrap();
        assert_eq!(report.settings.kind, RoomKind::Meeting);
        assert!(!report.settings.chat_enabled);
    }
}
