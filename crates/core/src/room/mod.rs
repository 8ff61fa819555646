//! Rooms: the pure `RoomState` machine (members, stage, hands, chat, Q&A, polls, breakouts) and the actor that runs it.
//!
//! `RoomState::apply(cmd, by, now)` is a plain function on plain data: it checks the
//! sender's role, changes the state and returns the events to send, each with the
//! [`Audience`] allowed to see it. Time is an input, so timers are tested without waiting.
//! The actor (`actor.rs`) only moves messages; the registry (`registry.rs`) finds rooms.

pub mod actor;
pub mod attendance;
mod breakouts;
pub mod captions;
mod chat;
mod coalescer;
pub mod command;
#[cfg(test)]
mod core_tests;
mod effects;
pub mod feed;
mod idempotency;
mod lobby;
pub mod operator;
mod persist;
mod polls;
mod qa;
pub mod registry;
#[cfg(test)]
mod replay_tests;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use convene_signaling::{
    Command, ErrorCode, LeaveReason, Member, Millis, Presence, Role, RoomEvent, RoomKind,
    RoomSettings, RoomSnapshot, Track,
};

pub use breakouts::BreakoutSession;
pub use qa::{ExportedQuestion, Qa, VOTE_INTERVAL_MS};

pub use crate::wire::{Audience, Place, Viewer};
use coalescer::Coalescer;

/// A room event and who may see it.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub audience: Audience,
    pub body: RoomEvent,
}

impl Event {
    pub fn new(audience: Audience, body: RoomEvent) -> Event {
        Event { audience, body }
    }
}

/// Why a command was refused; sent to the sender only.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Denied {
    pub code: ErrorCode,
    pub message: String,
    pub retry_after_ms: Option<u64>,
}

impl Denied {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Denied {
        Denied {
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }
    pub fn forbidden(what: &str) -> Denied {
        Denied::new(ErrorCode::Forbidden, format!("your role may not {what}"))
    }
    pub fn not_found(what: &str) -> Denied {
        Denied::new(ErrorCode::NotFound, format!("{what} not found"))
    }
    pub fn conflict(message: impl Into<String>) -> Denied {
        Denied::new(ErrorCode::Conflict, message)
    }
    pub fn invalid(message: impl Into<String>) -> Denied {
        Denied::new(ErrorCode::InvalidArgument, message)
    }
}

/// What an accepted command did: the events, and the id of anything it created.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    pub events: Vec<Event>,
    pub created: Option<u64>,
}

impl From<Vec<Event>> for Outcome {
    fn from(events: Vec<Event>) -> Self {
        Outcome {
            events,
            created: None,
        }
    }
}

/// Someone arriving, from their verified token.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Joiner {
    pub identity: String,
    pub name: String,
    pub role: Role,
    pub attrs: BTreeMap<String, String>,
    /// Starts on stage (WHIP publishers); presenters always do.
    pub on_stage: bool,
    /// Relay credentials in `welcome` expire by then (unix seconds): the token's expiry.
    #[serde(default)]
    pub credentials_until: Option<u64>,
}

/// The room's tunables, from `[limits]`.
#[derive(Clone, Debug)]
pub struct RoomLimits {
    pub chat_history: usize,
    pub questions_per_minute: u32,
    pub reconnect_grace_ms: u64,
    pub breakout_close_countdown_s: u32,
    pub breakout_warning_s: u32,
    /// Page sessions one identity may hold in the room; a fresh join beyond it closes the
    /// oldest (4004). 1: a new window takes the seat.
    pub sessions_per_identity: usize,
    /// Final caption lines kept per convening (the WebVTT export); the oldest go first.
    pub captions_kept: usize,
}

impl Default for RoomLimits {
    fn default() -> Self {
        RoomLimits {
            chat_history: 100,
            questions_per_minute: 5,
            reconnect_grace_ms: 20_000,
            breakout_close_countdown_s: 30,
            breakout_warning_s: 60,
            sessions_per_identity: 1,
            captions_kept: 20_000,
        }
    }
}

/// Participant counts go out at most this often.
pub const COUNT_INTERVAL_MS: u64 = 500;

#[derive(Serialize, Deserialize)]
struct MemberState {
    member: Member,
    connections: u32,
    disconnected_at: Option<Millis>,
}

/// One convening's state: everything the actor owns.
///
/// Serialisable for failover (`to_snapshot`); every collection is ordered, so the same
/// inputs give the same events, and the same snapshot bytes, in any process.
#[derive(Serialize, Deserialize)]
pub struct RoomState {
    name: String,
    settings: RoomSettings,
    /// Configuration, not state: restored from the node's config.
    #[serde(skip)]
    limits: RoomLimits,
    members: BTreeMap<String, MemberState>,
    /// Members whose last connection dropped, by when: the grace timer reads the first
    /// entry instead of scanning every member on each command. Rebuilt from `members`.
    #[serde(skip)]
    reconnecting: BTreeSet<(Millis, String)>,
    banned: BTreeSet<String>,
    chat: chat::Chat,
    qa: Qa,
    polls: polls::Polls,
    breakouts: Option<BreakoutSession>,
    #[serde(default)]
    captions: captions::Captions,
    tracks: BTreeMap<String, Track>,
    count: Coalescer,
    /// Plans made so far, mixed into the auto-assignment shuffle.
    plans_made: u64,
    /// Ended by the operator: joins are refused until the room is forgotten.
    ended: bool,
    /// A scheduled convening not yet started: attendees wait in its lobby (`lobby.rs`).
    #[serde(default)]
    lobby: Option<convene_signaling::Lobby>,
}

fn check_text(text: &str, max_chars: usize, what: &str) -> Result<String, Denied> {
    let text = text.trim();
    if text.is_empty() {
        return Err(Denied::invalid(format!("{what} is empty")));
    }
    let chars = text.chars().count();
    if chars > max_chars {
        return Err(Denied::invalid(format!(
            "{what} is {chars} characters; the limit is {max_chars}"
        )));
    }
    Ok(text.to_string())
}

impl RoomState {
    pub fn new(name: impl Into<String>, limits: RoomLimits) -> RoomState {
        RoomState {
            name: name.into(),
            settings: RoomSettings::default(),
            limits,
            members: BTreeMap::new(),
            reconnecting: BTreeSet::new(),
            banned: BTreeSet::new(),
            chat: chat::Chat::default(),
            qa: Qa::default(),
            polls: polls::Polls::default(),
            breakouts: None,
            captions: Default::default(),
            tracks: BTreeMap::new(),
            count: Coalescer::default(),
            plans_made: 0,
            ended: false,
            lobby: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn settings(&self) -> &RoomSettings {
        &self.settings
    }
    pub fn member(&self, identity: &str) -> Option<&Member> {
        self.members.get(identity).map(|m| &m.member)
    }
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values().map(|m| &m.member)
    }
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
    pub fn qa(&self) -> &Qa {
        &self.qa
    }
    /// Every poll with its results, for export after the event.
    pub fn export_polls(&self) -> Vec<convene_signaling::Poll> {
        self.polls.visible_to(true)
    }
    /// Every published track. After a failover the media of the old owner is gone, so the
    /// new owner unpublishes these (`track_unpublished`) unless their publishers reconnect.
    pub fn tracks(&self) -> impl Iterator<Item = &Track> {
        self.tracks.values()
    }
    pub fn is_banned(&self, identity: &str) -> bool {
        self.banned.contains(identity)
    }

    /// The viewer record for a member, used by sessions to filter events.
    pub fn viewer(&self, identity: &str) -> Option<Viewer> {
        self.member(identity).map(|m| Viewer {
            identity: m.identity.clone(),
            role: m.role,
            place: self.place_of(m),
        })
    }

    /// May this member publish media where they are now?
    pub fn may_publish(&self, identity: &str) -> bool {
        self.member(identity).is_some_and(|m| {
            (m.breakout.is_some() || self.settings.kind == RoomKind::Meeting || m.on_stage)
                && self.place_of(m) != Place::Lobby
        })
    }

    /// Non-staff people present (online or reconnecting).
    pub fn participant_count(&self) -> u32 {
        self.members
            .values()
            .filter(|m| !m.member.role.is_staff())
            .count() as u32
    }

    /// Who sees changes to this member: everyone in a meeting; in a webcast, only staff
    /// and the member unless they are staff or on stage; in a breakout, the breakout too.
    fn member_audience(&self, m: &Member) -> Audience {
        if self.settings.kind == RoomKind::Meeting || m.role.is_staff() || m.on_stage {
            return Audience::Everyone;
        }
        Audience::Some {
            places: m.breakout.map(Place::Breakout).into_iter().collect(),
            staff: true,
            person: Some(m.identity.clone()),
        }
    }

    /// `member_audience(m).includes(viewer)` without building the audience: a welcome checks
    /// every member, and 5,000 joins would otherwise allocate 12.5 million audiences.
    #[cfg(test)]
    fn member_visible_to(&self, m: &Member, viewer: &Viewer) -> bool {
        self.member_visible_unless_self(m, viewer) || m.identity == viewer.identity
    }

    fn member_visible_unless_self(&self, m: &Member, viewer: &Viewer) -> bool {
        self.settings.kind == RoomKind::Meeting
            || m.role.is_staff()
            || m.on_stage
            || viewer.role.is_staff()
            || m.breakout
                .is_some_and(|b| viewer.place == Place::Breakout(b))
    }

    /// The members `viewer` may see, in identity order. Comparing names only for the viewer's
    /// own record keeps a welcome in a 5,000-person webcast to flag checks.
    fn visible_members(&self, viewer: &Viewer) -> Vec<Member> {
        let mut members: Vec<Member> = self
            .members
            .values()
            .filter(|m| self.member_visible_unless_self(&m.member, viewer))
            .map(|m| m.member.clone())
            .collect();
        if let Some(me) = self.member(&viewer.identity) {
            if let Err(at) =
                members.binary_search_by(|m| m.identity.as_str().cmp(viewer.identity.as_str()))
            {
                members.insert(at, me.clone());
            }
        }
        members
    }

    /// Who hears that this member arrived, left or lost their connection. A webcast audience
    /// member's presence is for staff only: they know their own from `welcome`, and
    /// thousands of joins must not wake thousands of sessions.
    fn presence_audience(&self, m: &Member) -> Audience {
        match self.member_audience(m) {
            Audience::Some {
                places,
                staff: true,
                person: Some(_),
            } if places.is_empty() => Audience::staff(),
            audience => audience,
        }
    }

    fn presence_updated(&self, identity: &str) -> Option<Event> {
        let m = self.member(identity)?;
        Some(Event::new(
            self.presence_audience(m),
            RoomEvent::MemberUpdated { member: m.clone() },
        ))
    }

    fn member_updated(&self, identity: &str) -> Option<Event> {
        let m = self.member(identity)?;
        Some(Event::new(
            self.member_audience(m),
            RoomEvent::MemberUpdated { member: m.clone() },
        ))
    }

    fn count_changed(&mut self, now: Millis, events: &mut Vec<Event>) {
        if self.count.changed(now, COUNT_INTERVAL_MS) {
            events.push(self.count_event());
        }
    }

    fn count_event(&self) -> Event {
        Event::new(
            Audience::Everyone,
            RoomEvent::ParticipantCount {
                count: self.participant_count(),
            },
        )
    }

    /// Someone's connection arrives. A second connection, or a return within the grace
    /// period, keeps their seat.
    pub fn join(&mut self, who: Joiner, now: Millis) -> Result<Vec<Event>, Denied> {
        if self.ended {
            return Err(Denied::new(
                ErrorCode::Forbidden,
                "this convening has ended",
            ));
        }
        if self.banned.contains(&who.identity) {
            return Err(Denied::new(
                ErrorCode::Forbidden,
                "you were removed from this room",
            ));
        }
        let mut events = Vec::new();
        if let Some(existing) = self.members.get_mut(&who.identity) {
            existing.connections += 1;
            if let Some(at) = existing.disconnected_at.take() {
                self.reconnecting.remove(&(at, who.identity.clone()));
            }
            let stage = who.on_stage && !existing.member.on_stage;
            if existing.member.presence != Presence::Online || stage {
                existing.member.presence = Presence::Online;
                existing.member.on_stage |= who.on_stage;
                events.extend(if stage {
                    self.member_updated(&who.identity)
                } else {
                    self.presence_updated(&who.identity)
                });
            }
            return Ok(events);
        }
        let member = Member {
            media_muted: Vec::new(),
            captioner: false,
            identity: who.identity.clone(),
            name: who.name,
            role: who.role,
            presence: Presence::Online,
            on_stage: who.role == Role::Presenter || who.on_stage,
            hand_raised: false,
            chat_muted: false,
            breakout: None,
            facilitator: false,
            attrs: who.attrs,
        };
        self.members.insert(
            who.identity.clone(),
            MemberState {
                member,
                connections: 1,
                disconnected_at: None,
            },
        );
        // Late joiners land in their breakout when the plan places them.
        let placed = self.place_late_joiner(&who.identity);
        let m = &self.members[&who.identity].member;
        events.push(Event::new(
            self.presence_audience(m),
            RoomEvent::MemberJoined { member: m.clone() },
        ));
        events.extend(placed);
        if !who.role.is_staff() {
            self.count_changed(now, &mut events);
        }
        Ok(events)
    }

    /// A connection of this member closed. The last one starts the grace period, unless
    /// the person left on purpose.
    pub fn connection_closed(&mut self, identity: &str, left: bool, now: Millis) -> Vec<Event> {
        let Some(state) = self.members.get_mut(identity) else {
            return Vec::new();
        };
        state.connections = state.connections.saturating_sub(1);
        if state.connections > 0 {
            return Vec::new();
        }
        if left {
            return self.drop_member(identity, LeaveReason::Left, now);
        }
        if state.disconnected_at.is_some() {
            // Already reconnecting: the grace runs from the first drop.
            return Vec::new();
        }
        state.disconnected_at = Some(now);
        state.member.presence = Presence::Reconnecting;
        self.reconnecting.insert((now, identity.to_string()));
        self.presence_updated(identity).into_iter().collect()
    }

    fn drop_member(&mut self, identity: &str, reason: LeaveReason, now: Millis) -> Vec<Event> {
        let Some(state) = self.members.get(identity) else {
            return Vec::new();
        };
        let audience = self.presence_audience(&state.member);
        let staff = state.member.role.is_staff();
        if let Some(at) = state.disconnected_at {
            self.reconnecting.remove(&(at, identity.to_string()));
        }
        self.members.remove(identity);
        let mut events = vec![Event::new(
            audience,
            RoomEvent::MemberLeft {
                identity: identity.to_string(),
                reason,
            },
        )];
        events.extend(self.unpublish_all(identity));
        if !staff {
            self.count_changed(now, &mut events);
        }
        events
    }

    /// The earliest time `tick` has work to do.
    pub fn next_deadline(&self) -> Option<Millis> {
        let grace = self
            .reconnecting
            .first()
            .map(|(at, _)| at + self.limits.reconnect_grace_ms);
        [
            grace,
            self.count.deadline(COUNT_INTERVAL_MS),
            self.qa.next_deadline(),
            self.polls.next_deadline(),
            self.breakouts.as_ref().and_then(|b| {
                b.next_deadline(u64::from(self.limits.breakout_close_countdown_s) * 1000)
            }),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs what is due at `now`: grace expiries, coalesced counts (people, votes, poll
    /// answers), breakout timers.
    pub fn tick(&mut self, now: Millis) -> Vec<Event> {
        let mut events = Vec::new();
        let grace = self.limits.reconnect_grace_ms;
        let expired: Vec<String> = self
            .reconnecting
            .iter()
            .take_while(|(at, _)| now >= at + grace)
            .map(|(_, identity)| identity.clone())
            .collect();
        for identity in expired {
            events.extend(self.drop_member(&identity, LeaveReason::TimedOut, now));
        }
        events.extend(self.breakout_tick(now));
        events.extend(self.qa.flush_votes(now, false));
        events.extend(self.polls.flush_counts(now, false));
        if self.count.due(now, COUNT_INTERVAL_MS) {
            events.push(self.count_event());
        }
        events
    }

    /// Applies a client command from member `by`.
    pub fn apply(&mut self, cmd: &Command, by: &str, now: Millis) -> Result<Outcome, Denied> {
        let Some(sender) = self.member(by) else {
            return Err(Denied::new(
                ErrorCode::NotInRoom,
                "you are not in this room",
            ));
        };
        let role = sender.role;
        self.lobby_refusal(cmd, sender)?;
        match cmd {
            // Captions on or off is the session's own choice.
            Command::Ping | Command::SubscribeCaptions { .. } => Ok(Outcome::default()),
            Command::GrantCaptions { .. } | Command::SendCaption { .. } => {
                self.apply_captions(cmd, by, role, now)
            }
            Command::UpdateSettings {
                kind,
                chat_enabled,
                qa_mode,
            } => {
                if role != Role::Host {
                    return Err(Denied::forbidden("change room settings"));
                }
                self.update_settings(*kind, *chat_enabled, *qa_mode)
            }
            Command::SendChat { text } => self.send_chat(by, text, now),
            Command::DeleteChat { message_id } => self.delete_chat(by, *message_id),
            Command::MuteChat { identity, muted } => self.mute_chat(by, identity, *muted),
            Command::MuteMedia {
                identity,
                kind,
                muted,
            } => {
                if !role.can_moderate() {
                    return Err(Denied::forbidden("mute other people's media"));
                }
                self.mute_media(identity.as_deref(), *kind, *muted)
            }
            Command::RaiseHand => Ok(self.set_hand(by, true).into()),
            Command::LowerHand { identity } => {
                let target = identity.as_deref().unwrap_or(by);
                if target != by && !role.can_moderate() {
                    return Err(Denied::forbidden("lower someone else's hand"));
                }
                if self.member(target).is_none() {
                    return Err(Denied::not_found("participant"));
                }
                Ok(self.set_hand(target, false).into())
            }
            Command::InviteToStage { identity } => self.set_stage(role, identity, true),
            // Anyone may step off the stage (or decline an invitation to it).
            Command::RemoveFromStage { identity } if identity == by => {
                self.set_stage(Role::Host, identity, false)
            }
            Command::RemoveFromStage { identity } => self.set_stage(role, identity, false),
            Command::RemoveParticipant { identity, reason } => {
                self.remove_participant(by, identity, reason.as_deref(), now)
            }
            Command::AskQuestion { .. }
            | Command::WithdrawQuestion { .. }
            | Command::Upvote { .. }
            | Command::RemoveUpvote { .. }
            | Command::ApproveQuestion { .. }
            | Command::DismissQuestion { .. }
            | Command::RestoreQuestion { .. }
            | Command::EditQuestion { .. }
            | Command::SetLiveQuestion { .. }
            | Command::AnswerQuestion { .. }
            | Command::ReopenQuestion { .. }
            | Command::MarkDuplicate { .. } => {
                let name = sender.name.clone();
                let asker = qa::Asker {
                    identity: by,
                    name: &name,
                    role,
                };
                let mode = self.settings.qa_mode;
                let per_minute = self.limits.questions_per_minute;
                self.qa.apply(cmd, &asker, mode, per_minute, now)
            }
            Command::LaunchPoll {
                question,
                options,
                multiple,
                live_results,
            } => self
                .polls
                .launch(role, question, options, *multiple, *live_results, now),
            Command::VotePoll { poll_id, choices } => self.polls.vote(by, *poll_id, choices, now),
            Command::ClosePoll { poll_id } => self.polls.close(role, *poll_id, now),
            Command::SharePollResults { poll_id } => self.polls.share(role, *poll_id),
            Command::SetBreakoutPlan { .. }
            | Command::CancelBreakoutPlan
            | Command::AssignBreakout { .. }
            | Command::OpenBreakouts
            | Command::ChooseBreakout { .. }
            | Command::ExtendBreakouts { .. }
            | Command::BroadcastToBreakouts { .. }
            | Command::AskForHelp
            | Command::HandleHelp { .. }
            | Command::JoinBreakout { .. }
            | Command::LeaveBreakout
            | Command::CloseBreakouts { .. } => self.apply_breakout(cmd, by, role, now),
            Command::RtcOffer { .. }
            | Command::RtcAnswer { .. }
            | Command::RtcCandidate { .. }
            | Command::Unpublish { .. }
            | Command::SetVideoQuality { .. } => Err(Denied::new(
                ErrorCode::InvalidMessage,
                "media signaling is handled by the session, not the room",
            )),
        }
    }

    fn update_settings(
        &mut self,
        kind: Option<RoomKind>,
        chat_enabled: Option<bool>,
        qa_mode: Option<convene_signaling::QaMode>,
    ) -> Result<Outcome, Denied> {
        let before = self.settings.clone();
        if let Some(kind) = kind {
            self.settings.kind = kind;
        }
        if let Some(on) = chat_enabled {
            self.settings.chat_enabled = on;
        }
        if let Some(mode) = qa_mode {
            self.settings.qa_mode = mode;
        }
        if self.settings == before {
            return Ok(Outcome::default());
        }
        // A webcast hid its audience from participants; in a meeting everyone sees everyone.
        let members = if before.kind == RoomKind::Webcast && self.settings.kind == RoomKind::Meeting
        {
            self.members
                .values()
                .map(|m| &m.member)
                .filter(|m| !m.role.is_staff() && !m.on_stage)
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        Ok(vec![Event::new(
            Audience::Everyone,
            RoomEvent::SettingsChanged {
                settings: self.settings.clone(),
                members,
            },
        )]
        .into())
    }

    /// A moderator's mute of one kind of media, for one person or every participant. One
    /// person hears it as a `member_updated`; a room-wide mute is one `media_muted`, and every
    /// session rechecks its rights (never one event per person on a shared lane).
    fn mute_media(
        &mut self,
        identity: Option<&str>,
        kind: convene_signaling::TrackKind,
        muted: bool,
    ) -> Result<Outcome, Denied> {
        let set = |m: &mut Member| {
            let had = m.media_muted.contains(&kind);
            if muted && !had {
                m.media_muted.push(kind);
                m.media_muted.sort_by_key(|k| *k as u8);
            } else if !muted && had {
                m.media_muted.retain(|k| *k != kind);
            }
            had != muted
        };
        if let Some(identity) = identity {
            let Some(state) = self.members.get_mut(identity) else {
                return Err(Denied::not_found("participant"));
            };
            if state.member.role.is_staff() {
                return Err(Denied::forbidden("mute staff"));
            }
            if !set(&mut state.member) {
                return Ok(Outcome::default());
            }
            return Ok(self
                .member_updated(identity)
                .into_iter()
                .collect::<Vec<_>>()
                .into());
        }
        let mut identities = Vec::new();
        for state in self.members.values_mut() {
            if !state.member.role.is_staff() && set(&mut state.member) {
                identities.push(state.member.identity.clone());
            }
        }
        if identities.is_empty() {
            return Ok(Outcome::default());
        }
        Ok(vec![Event::new(
            Audience::Everyone,
            RoomEvent::MediaMuted {
                kind,
                muted,
                identities,
            },
        )]
        .into())
    }

    /// Media kinds a moderator muted for this member.
    pub fn media_muted(&self, identity: &str) -> Vec<convene_signaling::TrackKind> {
        self.member(identity)
            .map(|m| m.media_muted.clone())
            .unwrap_or_default()
    }

    fn set_hand(&mut self, identity: &str, raised: bool) -> Vec<Event> {
        match self.members.get_mut(identity) {
            Some(m) if m.member.hand_raised != raised => {
                m.member.hand_raised = raised;
                self.member_updated(identity).into_iter().collect()
            }
            _ => Vec::new(),
        }
    }

    fn set_stage(&mut self, role: Role, identity: &str, on: bool) -> Result<Outcome, Denied> {
        if !role.can_moderate() {
            return Err(Denied::forbidden(if on {
                "invite people to the stage"
            } else {
                "remove people from the stage"
            }));
        }
        let Some(state) = self.members.get_mut(identity) else {
            return Err(Denied::not_found("participant"));
        };
        if state.member.on_stage == on {
            return Ok(Outcome::default());
        }
        state.member.on_stage = on;
        if on {
            state.member.hand_raised = false;
        }
        // Joining or leaving the stage changes who may see this person in a webcast, so
        // everyone hears of it.
        let mut events = vec![Event::new(
            Audience::Everyone,
            RoomEvent::MemberUpdated {
                member: state.member.clone(),
            },
        )];
        if !on && self.settings.kind == RoomKind::Webcast && state.member.breakout.is_none() {
            events.extend(self.unpublish_all(identity));
        }
        Ok(events.into())
    }

    fn remove_participant(
        &mut self,
        by: &str,
        identity: &str,
        reason: Option<&str>,
        now: Millis,
    ) -> Result<Outcome, Denied> {
        let role = self.members[by].member.role;
        if !role.can_moderate() {
            return Err(Denied::forbidden("remove participants"));
        }
        if identity == by {
            return Err(Denied::invalid("you cannot remove yourself"));
        }
        let Some(target) = self.member(identity) else {
            return Err(Denied::not_found("participant"));
        };
        if target.role == Role::Host && role != Role::Host {
            return Err(Denied::forbidden("remove a host"));
        }
        let reason = reason
            .map(|r| r.chars().take(500).collect::<String>())
            .filter(|r| !r.trim().is_empty())
            .unwrap_or_else(|| "removed by a moderator".to_string());
        self.banned.insert(identity.to_string());
        let mut events = vec![Event::new(
            Audience::person(identity),
            RoomEvent::Removed { reason },
        )];
        events.extend(self.drop_member(identity, LeaveReason::Removed, now));
        Ok(events.into())
    }

    /// Media: a track appeared where its publisher is.
    pub fn track_published(&mut self, track: Track) -> Vec<Event> {
        let audience = Audience::at(Place::from_breakout(track.breakout));
        self.tracks.insert(track.id.clone(), track.clone());
        vec![Event::new(audience, RoomEvent::TrackPublished { track })]
    }

    pub fn track_unpublished(&mut self, track_id: &str) -> Vec<Event> {
        match self.tracks.remove(track_id) {
            Some(track) => vec![Event::new(
                Audience::at(Place::from_breakout(track.breakout)),
                RoomEvent::TrackUnpublished { track_id: track.id },
            )],
            None => Vec::new(),
        }
    }

    fn unpublish_all(&mut self, identity: &str) -> Vec<Event> {
        let ids: Vec<String> = self
            .tracks
            .values()
            .filter(|t| t.publisher == identity)
            .map(|t| t.id.clone())
            .collect();
        ids.iter()
            .flat_map(|id| self.track_unpublished(id))
            .collect()
    }

    /// The room as `viewer` may see it.
    pub fn snapshot(&self, viewer: &Viewer) -> RoomSnapshot {
        if viewer.place == Place::Lobby {
            return self.lobby_snapshot(viewer);
        }
        let members = self.visible_members(viewer);
        let (questions, answered) = self.qa.visible_to(viewer);
        RoomSnapshot {
            room: self.name.clone(),
            settings: self.settings.clone(),
            members,
            participant_count: self.participant_count(),
            chat: self.chat.history(viewer.place),
            questions,
            answered,
            my_votes: self.qa.votes_of(&viewer.identity),
            my_questions: self.qa.asked_by(&viewer.identity),
            breakouts: self.breakouts_view(viewer.role.is_staff(), &viewer.identity),
            tracks: self
                .tracks
                .values()
                .filter(|t| Place::from_breakout(t.breakout) == viewer.place)
                .cloned()
                .collect(),
            polls: self.polls.visible_to(viewer.role.is_staff()),
            my_poll_answers: self.polls.answers_of(&viewer.identity),
            lobby: self.lobby.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
