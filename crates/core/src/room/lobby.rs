//! A scheduled convening before its start: attendees wait in the lobby and see nothing of the room, while staff rehearse backstage (the room as usual, among staff) until the host opens it.

use convene_signaling::{Command, ErrorCode, Lobby, Member, RoomEvent, RoomSnapshot};

use super::{Audience, Denied, Event, Place, RoomState, Viewer};

impl RoomState {
    /// Where a member is: attendees are in the lobby until the convening starts.
    pub(super) fn place_of(&self, m: &Member) -> Place {
        if self.lobby.is_some() && !m.role.is_staff() {
            Place::Lobby
        } else {
            Place::from_breakout(m.breakout)
        }
    }

    pub fn lobby(&self) -> Option<&Lobby> {
        self.lobby.as_ref()
    }

    /// In the lobby an attendee may only keep the connection alive.
    pub(super) fn lobby_refusal(&self, cmd: &Command, sender: &Member) -> Result<(), Denied> {
        if self.lobby.is_none() || sender.role.is_staff() || matches!(cmd, Command::Ping) {
            return Ok(());
        }
        Err(Denied::new(
            ErrorCode::Forbidden,
            "this convening has not started: you are waiting in its lobby",
        ))
    }

    /// What an attendee in the lobby sees: the room's name and settings, themselves, how
    /// many are waiting, and the lobby; no people, chat, questions, polls or media.
    pub(super) fn lobby_snapshot(&self, viewer: &Viewer) -> RoomSnapshot {
        RoomSnapshot {
            room: self.name.clone(),
            settings: self.settings.clone(),
            members: self.member(&viewer.identity).cloned().into_iter().collect(),
            participant_count: self.participant_count(),
            chat: Vec::new(),
            questions: Vec::new(),
            answered: Vec::new(),
            my_votes: Vec::new(),
            my_questions: Vec::new(),
            breakouts: None,
            tracks: Vec::new(),
            polls: Vec::new(),
            my_poll_answers: Default::default(),
            lobby: self.lobby.clone(),
        }
    }

    fn attendees(&self) -> Vec<String> {
        self.members
            .values()
            .filter(|m| !m.member.role.is_staff())
            .map(|m| m.member.identity.clone())
            .collect()
    }

    /// Holds attendees in the lobby until `open`. The same lobby again changes nothing;
    /// attendees already in the room (it was in use before it was scheduled) move to it.
    pub(super) fn schedule(&mut self, lobby: Lobby) -> Vec<Event> {
        if self.lobby.as_ref() == Some(&lobby) {
            return Vec::new();
        }
        let was_open = self.lobby.replace(lobby.clone()).is_none();
        let to_lobby_and_staff = Audience::Some {
            places: vec![Place::Lobby],
            staff: true,
            person: None,
        };
        let mut events = vec![Event::new(
            to_lobby_and_staff,
            RoomEvent::Lobby {
                lobby: lobby.clone(),
            },
        )];
        if was_open {
            for identity in self.attendees() {
                // Addressed to the person, the event moves their sessions (effects.rs).
                events.push(Event::new(
                    Audience::person(&identity),
                    RoomEvent::Lobby {
                        lobby: lobby.clone(),
                    },
                ));
            }
        }
        events
    }

    /// Starts the convening: staff hear it, and each attendee in the lobby is admitted with
    /// the room as they may now see it.
    pub(super) fn open(&mut self) -> Vec<Event> {
        if self.lobby.take().is_none() {
            return Vec::new();
        }
        // The rehearsal's chat stays backstage: attendees start with an empty room chat.
        self.chat.forget(Place::Main);
        let mut events = vec![Event::new(Audience::staff(), RoomEvent::ConveningStarted)];
        for identity in self.attendees() {
            let Some(viewer) = self.viewer(&identity) else {
                continue;
            };
            let snapshot = Box::new(self.snapshot(&viewer));
            events.push(Event::new(
                Audience::person(&identity),
                RoomEvent::Admitted { snapshot },
            ));
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::{Joiner, RoomLimits};
    use convene_signaling::Role;

    fn joiner(identity: &str, role: Role) -> Joiner {
        Joiner {
            identity: identity.into(),
            name: identity.into(),
            role,
            attrs: Default::default(),
            on_stage: false,
            credentials_until: None,
        }
    }

    fn lobby() -> Lobby {
        Lobby {
            convening_id: "c1".into(),
            title: "Launch".into(),
            starts_at: 1_000_000,
            auto_start: false,
        }
    }

    #[test]
    fn attendees_wait_apart_until_the_room_opens() {
        let mut room = RoomState::new("r", RoomLimits::default());
        room.schedule(lobby());
        room.join(joiner("pat", Role::Presenter), 1).unwrap();
        room.join(joiner("ana", Role::Participant), 2).unwrap();
        let ana = room.viewer("ana").unwrap();
        assert_eq!(ana.place, Place::Lobby);
        assert_eq!(room.viewer("pat").unwrap().place, Place::Main);
        assert!(!room.may_publish("ana"));
        let chat = room
            .apply(&Command::SendChat { text: "hi".into() }, "pat", 3)
            .unwrap();
        assert!(chat.events.iter().all(|e| !e.audience.includes(&ana)));
        let refused = room.apply(&Command::SendChat { text: "x".into() }, "ana", 4);
        assert_eq!(refused.unwrap_err().code, ErrorCode::Forbidden);
        let seen = room.snapshot(&ana);
        assert!(seen.chat.is_empty() && seen.tracks.is_empty());
        assert_eq!(seen.members.len(), 1);
        assert_eq!(seen.lobby, Some(lobby()));

        let events = room.open();
        assert!(room.lobby().is_none());
        assert_eq!(room.viewer("ana").unwrap().place, Place::Main);
        let admitted = events
            .iter()
            .find_map(|e| match &e.body {
                RoomEvent::Admitted { snapshot } if e.audience.includes(&ana) => Some(snapshot),
                _ => None,
            })
            .expect("ana is admitted");
        assert!(
            admitted.chat.is_empty(),
            "the rehearsal's chat stays backstage"
        );
        assert!(admitted.lobby.is_none());
        assert!(room.open().is_empty(), "opening twice does nothing");
    }
}
