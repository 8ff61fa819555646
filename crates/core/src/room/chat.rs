//! Chat: messages per place (main room or breakout), recent history, deletion and muting.

use std::collections::{BTreeMap, VecDeque};

use convene_signaling::{ChatMessage, ErrorCode, Millis, RoomEvent, MAX_CHAT_CHARS};
use serde::{Deserialize, Serialize};

use super::{check_text, persist, Audience, Denied, Event, Outcome, Place, RoomState};

#[derive(Default, Serialize, Deserialize)]
pub(super) struct Chat {
    /// Keyed by place, which JSON cannot use as a key: stored as pairs.
    #[serde(with = "persist::pairs")]
    history: BTreeMap<Place, VecDeque<ChatMessage>>,
    next_id: u64,
}

impl Chat {
    /// Drops a place's history (the backstage's, when a convening starts).
    pub(super) fn forget(&mut self, place: Place) {
        self.history.remove(&place);
    }

    pub(super) fn history(&self, place: Place) -> Vec<ChatMessage> {
        self.history
            .get(&place)
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default()
    }
}

impl RoomState {
    pub(super) fn send_chat(
        &mut self,
        by: &str,
        text: &str,
        now: Millis,
    ) -> Result<Outcome, Denied> {
        let sender = &self.members[by].member;
        if !self.settings.chat_enabled && !sender.role.is_staff() {
            return Err(Denied::new(
                ErrorCode::ChatDisabled,
                "chat is turned off in this room",
            ));
        }
        if sender.chat_muted {
            return Err(Denied::new(
                ErrorCode::ChatMuted,
                "a moderator has muted your chat",
            ));
        }
        let text = check_text(text, MAX_CHAT_CHARS, "chat message")?;
        let place = Place::from_breakout(sender.breakout);
        self.chat.next_id += 1;
        let message = ChatMessage {
            id: self.chat.next_id,
            from: sender.identity.clone(),
            name: sender.name.clone(),
            text,
            at: now,
            breakout: place.breakout(),
        };
        let history = self.chat.history.entry(place).or_default();
        history.push_back(message.clone());
        while history.len() > self.limits.chat_history {
            history.pop_front();
        }
        Ok(Outcome {
            created: Some(message.id),
            events: vec![Event::new(
                Audience::at(place),
                RoomEvent::ChatMessage { message },
            )],
        })
    }

    pub(super) fn delete_chat(&mut self, by: &str, message_id: u64) -> Result<Outcome, Denied> {
        let sender = &self.members[by].member;
        let may_moderate = sender.role.can_moderate();
        // Moderators may delete anywhere; others only where they are.
        let found = self.chat.history.iter_mut().find_map(|(place, history)| {
            history
                .iter()
                .position(|m| m.id == message_id)
                .map(|i| (*place, history, i))
        });
        let Some((place, history, index)) = found else {
            return Err(Denied::not_found("chat message"));
        };
        if history[index].from != by && !may_moderate {
            return Err(Denied::forbidden("delete someone else's message"));
        }
        history.remove(index);
        Ok(vec![Event::new(
            Audience::at(place),
            RoomEvent::ChatDeleted {
                message_id,
                breakout: place.breakout(),
            },
        )]
        .into())
    }

    pub(super) fn mute_chat(
        &mut self,
        by: &str,
        identity: &str,
        muted: bool,
    ) -> Result<Outcome, Denied> {
        if !self.members[by].member.role.can_moderate() {
            return Err(Denied::forbidden("mute chat"));
        }
        let Some(target) = self.members.get_mut(identity) else {
            return Err(Denied::not_found("participant"));
        };
        if target.member.role.can_moderate() {
            return Err(Denied::forbidden("mute a host or moderator"));
        }
        if target.member.chat_muted == muted {
            return Ok(Outcome::default());
        }
        target.member.chat_muted = muted;
        Ok(self
            .member_updated(identity)
            .into_iter()
            .collect::<Vec<_>>()
            .into())
    }
}
