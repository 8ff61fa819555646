//! Breakouts: the plan, assignment (manual, auto, by attribute, self-select), timers, help and close-all.

use std::collections::{BTreeMap, BTreeSet};

use convene_signaling::{
    Assignment, BreakoutId, BreakoutPhase, BreakoutPlan, BreakoutRoom, BreakoutRooms, Breakouts,
    ChatMessage, Member, MemberMove, Millis, Role, RoomEvent, RoomKind, Track,
};
use serde::{Deserialize, Serialize};

use super::{check_text, Audience, Denied, Event, Place, RoomState};

mod commands;

const MAX_ROOMS: usize = 200;
const MAX_NAME_CHARS: usize = 100;
const MAX_DURATION_S: u32 = 24 * 3600;

/// A plan and, once opened, its running state.
#[derive(Serialize, Deserialize)]
pub struct BreakoutSession {
    phase: BreakoutPhase,
    plan: BreakoutPlan,
    rooms: Vec<BreakoutRoom>,
    assignments: BTreeMap<String, BreakoutId>,
    /// Who left their breakout (where the plan allows leaving), and from where: they may go back.
    left: BTreeMap<String, BreakoutId>,
    ends_at: Option<Millis>,
    /// Pending warning; cleared once sent.
    warning_at: Option<Millis>,
    closes_at: Option<Millis>,
    seed: u64,
}

impl BreakoutSession {
    /// `countdown_ms`: the close-all countdown, which a timer runs within its last seconds.
    pub(super) fn next_deadline(&self, countdown_ms: Millis) -> Option<Millis> {
        match self.phase {
            BreakoutPhase::Draft => None,
            BreakoutPhase::Open => [
                self.warning_at,
                self.ends_at.map(|t| t.saturating_sub(countdown_ms)),
            ]
            .into_iter()
            .flatten()
            .min(),
            BreakoutPhase::Closing => self.closes_at,
        }
    }

    fn room(&self, id: BreakoutId) -> Result<&BreakoutRoom, Denied> {
        self.rooms
            .iter()
            .find(|r| r.id == id)
            .ok_or_else(|| Denied::not_found(&format!("breakout {id}")))
    }

    fn room_named(&self, name: &str) -> Option<BreakoutId> {
        self.rooms.iter().find(|r| r.name == name).map(|r| r.id)
    }

    fn occupancy(&self, id: BreakoutId) -> usize {
        self.assignments.values().filter(|b| **b == id).count()
    }

    fn least_occupied(&self) -> Option<BreakoutId> {
        self.rooms
            .iter()
            .min_by_key(|r| (self.occupancy(r.id), r.id))
            .map(|r| r.id)
    }

    /// Where a newcomer goes under automatic plans; may add a room for a new attribute value.
    fn place_automatically(&mut self, attrs: &BTreeMap<String, String>) -> Option<BreakoutId> {
        match &self.plan.assignment {
            Assignment::Auto => self.least_occupied(),
            Assignment::ByAttribute { key } => {
                let value = attrs.get(key)?;
                if let Some(id) = self.room_named(value) {
                    return Some(id);
                }
                let grows = matches!(&self.plan.rooms, BreakoutRooms::FromAttribute { from_attribute } if from_attribute == key);
                if !grows || self.rooms.len() >= MAX_ROOMS {
                    return None;
                }
                let id = self.rooms.iter().map(|r| r.id).max().unwrap_or(0) + 1;
                self.rooms.push(BreakoutRoom {
                    id,
                    name: value.clone(),
                });
                Some(id)
            }
            Assignment::Manual { .. } | Assignment::SelfSelect { .. } => None,
        }
    }

    fn view(&self, staff: bool, identity: &str) -> Breakouts {
        let assignments = if staff {
            self.assignments.clone()
        } else {
            self.assignments
                .get_key_value(identity)
                .map(|(k, v)| BTreeMap::from([(k.clone(), *v)]))
                .unwrap_or_default()
        };
        let mut plan = self.plan.clone();
        if let (false, Assignment::Manual { assignments }) = (staff, &mut plan.assignment) {
            // The identity-to-room map would reveal who else is here (a webcast hides its audience).
            assignments.retain(|who, _| who == identity);
        }
        Breakouts {
            phase: self.phase,
            plan,
            rooms: self.rooms.clone(),
            assignments,
            ends_at: self.ends_at,
            warning_at: self.warning_at,
            closes_at: self.closes_at,
        }
    }
}

/// Hosts and moderators run breakouts and stay in the main room unless they visit.
fn assignable(role: Role) -> bool {
    !role.can_moderate()
}

/// A stable shuffle key: "random" but reproducible for a given plan, in any build. std's
/// `DefaultHasher` may change between Rust releases and nodes of one cluster may run
/// different builds, so this is FNV-1a 64 then a SplitMix64 finaliser (FNV alone barely
/// moves the high bits for identities that differ in their last byte).
fn shuffle_key(identity: &str, seed: u64) -> u64 {
    // 0xff never occurs in UTF-8, so the seed cannot run into the identity.
    let mut h = fnv1a(FNV_OFFSET, identity.as_bytes());
    h = fnv1a(h, &[0xff]);
    h = fnv1a(h, &seed.to_le_bytes());
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl RoomState {
    pub(super) fn breakouts_view(&self, staff: bool, identity: &str) -> Option<Breakouts> {
        self.breakouts.as_ref().map(|b| b.view(staff, identity))
    }

    /// The plan changed: staff see every assignment, participants the rooms and timers.
    fn breakouts_updated(&self) -> Vec<Event> {
        let staff = self.breakouts_view(true, "");
        let others = self.breakouts_view(false, "");
        vec![
            Event::new(
                Audience::staff(),
                RoomEvent::BreakoutsUpdated { breakouts: staff },
            ),
            Event::new(
                Audience::Participants,
                RoomEvent::BreakoutsUpdated { breakouts: others },
            ),
        ]
    }

    fn is_staff(&self, identity: &str) -> bool {
        self.member(identity).is_some_and(|m| m.role.is_staff())
    }

    /// What a mover finds where they arrive: the tracks published there and its recent chat.
    fn arrival(&self, to: Option<BreakoutId>) -> (Vec<Track>, Vec<ChatMessage>) {
        let place = Place::from_breakout(to);
        let tracks = self
            .tracks
            .values()
            .filter(|t| t.breakout == to)
            .cloned()
            .collect();
        (tracks, self.chat.history(place))
    }

    /// The name and end time of where a move leads.
    fn destination(&self, to: Option<BreakoutId>) -> (String, Option<Millis>) {
        match (to, &self.breakouts) {
            (Some(id), Some(b)) => (
                b.room(id).map(|r| r.name.clone()).unwrap_or_default(),
                b.ends_at,
            ),
            _ => ("Main room".to_string(), None),
        }
    }

    /// People in a webcast breakout whom its newcomers cannot see from elsewhere (everyone
    /// sees staff and the stage). Empty in a meeting, where everyone sees everyone.
    fn hidden_rosters(&self) -> BTreeMap<BreakoutId, Vec<Member>> {
        let mut rosters: BTreeMap<BreakoutId, Vec<Member>> = BTreeMap::new();
        if self.settings.kind != RoomKind::Webcast {
            return rosters;
        }
        for m in self.members.values().map(|m| &m.member) {
            if let (Some(id), false) = (m.breakout, m.role.is_staff() || m.on_stage) {
                rosters.entry(id).or_default().push(m.clone());
            }
        }
        rosters
    }

    fn roster_for(
        rosters: &BTreeMap<BreakoutId, Vec<Member>>,
        to: Option<BreakoutId>,
        identity: &str,
        staff: bool,
    ) -> Vec<Member> {
        // Staff see every member wherever they are.
        to.filter(|_| !staff)
            .and_then(|id| rosters.get(&id))
            .map(|r| {
                r.iter()
                    .filter(|m| m.identity != identity)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Moves many members at once (breakouts opening or closing). Each mover hears of their
    /// own move on their direct lane; everyone else gets one `members_moved` to apply, so a
    /// bulk move puts one event, not one per person, on shared lanes.
    fn move_many(&mut self, moves: Vec<(String, Option<BreakoutId>)>) -> Vec<Event> {
        let mut events = Vec::new();
        let mut moved: Vec<(String, Option<BreakoutId>, Option<BreakoutId>)> = Vec::new();
        for (identity, to) in moves {
            let Some(state) = self.members.get_mut(&identity) else {
                continue;
            };
            let from = state.member.breakout;
            if from == to && !state.member.facilitator {
                continue;
            }
            state.member.breakout = to;
            state.member.facilitator = false;
            state.member.hand_raised = false;
            if to.is_none() {
                state.member.on_stage = state.member.role == Role::Presenter;
            }
            events.extend(self.unpublish_all(&identity));
            moved.push((identity, from, to));
        }
        if moved.is_empty() {
            return events;
        }
        let rosters = self.hidden_rosters();
        let mut arrivals = BTreeMap::new();
        for (identity, from, to) in &moved {
            let (name, ends_at) = self.destination(*to);
            let (tracks, chat) = arrivals
                .entry(*to)
                .or_insert_with(|| self.arrival(*to))
                .clone();
            events.push(Event::new(
                Audience::person(identity),
                RoomEvent::Moved {
                    from: *from,
                    breakout: *to,
                    name,
                    ends_at,
                    members: Self::roster_for(&rosters, *to, identity, self.is_staff(identity)),
                    tracks,
                    chat,
                },
            ));
        }
        let as_move =
            |(identity, _, to): &(String, Option<BreakoutId>, Option<BreakoutId>)| MemberMove {
                identity: identity.clone(),
                breakout: *to,
            };
        if self.settings.kind == RoomKind::Meeting {
            let moves = moved.iter().map(as_move).collect();
            events.push(Event::new(
                Audience::Everyone,
                RoomEvent::MembersMoved { moves },
            ));
            return events;
        }
        // A webcast: staff see every move; the audience only those of people it can see.
        let public: Vec<MemberMove> = moved
            .iter()
            .filter(|(identity, _, _)| {
                self.member(identity)
                    .is_some_and(|m| m.role.is_staff() || m.on_stage)
            })
            .map(as_move)
            .collect();
        events.push(Event::new(
            Audience::staff(),
            RoomEvent::MembersMoved {
                moves: moved.iter().map(as_move).collect(),
            },
        ));
        if !public.is_empty() {
            events.push(Event::new(
                Audience::Participants,
                RoomEvent::MembersMoved { moves: public },
            ));
        }
        events
    }

    /// Moves one member between the main room and a breakout, resetting what belongs to a place.
    fn move_member(
        &mut self,
        identity: &str,
        to: Option<BreakoutId>,
        facilitator: bool,
    ) -> Vec<Event> {
        let (name, ends_at) = self.destination(to);
        let Some(state) = self.members.get_mut(identity) else {
            return Vec::new();
        };
        let from = state.member.breakout;
        if from == to && state.member.facilitator == facilitator {
            return Vec::new();
        }
        state.member.breakout = to;
        state.member.facilitator = facilitator;
        state.member.hand_raised = false;
        if to.is_none() {
            state.member.on_stage = state.member.role == Role::Presenter;
        }
        let mut events = self.unpublish_all(identity);
        let members = Self::roster_for(
            &self.hidden_rosters(),
            to,
            identity,
            self.is_staff(identity),
        );
        let (tracks, chat) = self.arrival(to);
        events.push(Event::new(
            Audience::person(identity),
            RoomEvent::Moved {
                from,
                breakout: to,
                name,
                ends_at,
                members,
                tracks,
                chat,
            },
        ));
        let member = self.members[identity].member.clone();
        // Those in the place left behind hear of it as well as those where they arrive.
        let audience = match (self.member_audience(&member), from) {
            (
                Audience::Some {
                    mut places,
                    staff,
                    person,
                },
                Some(old),
            ) => {
                places.push(Place::Breakout(old));
                Audience::Some {
                    places,
                    staff,
                    person,
                }
            }
            (audience, _) => audience,
        };
        events.push(Event::new(audience, RoomEvent::MemberUpdated { member }));
        events
    }

    /// Places a newcomer (or a returning member) where the open plan puts them.
    pub(super) fn place_late_joiner(&mut self, identity: &str) -> Vec<Event> {
        let Some(state) = self.members.get(identity) else {
            return Vec::new();
        };
        let (role, attrs) = (state.member.role, state.member.attrs.clone());
        let Some(b) = self.breakouts.as_mut() else {
            return Vec::new();
        };
        if b.phase != BreakoutPhase::Open || !assignable(role) {
            return Vec::new();
        }
        let rooms_before = b.rooms.len();
        let target = match b.assignments.get(identity) {
            Some(id) => Some(*id),
            None => {
                let placed = b.place_automatically(&attrs);
                if let Some(id) = placed {
                    b.assignments.insert(identity.to_string(), id);
                }
                placed
            }
        };
        let Some(id) = target else {
            // Unassigned: waits in the main room; staff see them in the member list.
            return Vec::new();
        };
        let grew = self
            .breakouts
            .as_ref()
            .is_some_and(|b| b.rooms.len() != rooms_before);
        if let Some(m) = self.members.get_mut(identity) {
            m.member.breakout = Some(id);
            m.member.hand_raised = false;
        }
        if grew {
            return self.breakouts_updated();
        }
        // Only staff's view (every assignment) changed: a join storm into open breakouts
        // must not put one event per joiner on the room's lane.
        vec![Event::new(
            Audience::staff(),
            RoomEvent::BreakoutsUpdated {
                breakouts: self.breakouts_view(true, ""),
            },
        )]
    }

    pub(super) fn breakout_tick(&mut self, now: Millis) -> Vec<Event> {
        let Some(b) = self.breakouts.as_mut() else {
            return Vec::new();
        };
        let mut events = Vec::new();
        if b.phase == BreakoutPhase::Open {
            if let (Some(warn), Some(ends_at)) = (b.warning_at, b.ends_at) {
                if now >= warn {
                    b.warning_at = None;
                    events.push(Event::new(
                        Audience::Everyone,
                        RoomEvent::BreakoutWarning { ends_at },
                    ));
                }
            }
            // The countdown runs within the timer, so the timer's end is the close (a 65 s
            // breakout lasts 65 s, not 65 s and then a countdown).
            let countdown_ms = u64::from(self.limits.breakout_close_countdown_s) * 1000;
            if let Some(ends_at) = b.ends_at.filter(|t| now >= t.saturating_sub(countdown_ms)) {
                events.extend(self.start_closing_at(ends_at, now));
            }
        }
        if let Some(b) = &self.breakouts {
            if b.phase == BreakoutPhase::Closing && b.closes_at.is_some_and(|t| now >= t) {
                events.extend(self.close_all());
            }
        }
        events
    }

    fn start_closing(&mut self, countdown_s: u32, now: Millis) -> Vec<Event> {
        self.start_closing_at(now + u64::from(countdown_s) * 1000, now)
    }

    /// Everyone is told the breakouts close at `closes_at`, then at that time they do (at once
    /// when it is already due).
    fn start_closing_at(&mut self, closes_at: Millis, now: Millis) -> Vec<Event> {
        let Some(b) = self.breakouts.as_mut() else {
            return Vec::new();
        };
        if closes_at <= now {
            return self.close_all();
        }
        b.phase = BreakoutPhase::Closing;
        b.closes_at = Some(closes_at);
        b.warning_at = None;
        let mut events = vec![Event::new(
            Audience::Everyone,
            RoomEvent::BreakoutsClosing { closes_at },
        )];
        events.extend(self.breakouts_updated());
        events
    }

    /// Everyone returns to the main room with stage and hand reset.
    fn close_all(&mut self) -> Vec<Event> {
        let away: Vec<String> = self
            .members
            .values()
            .filter(|m| m.member.breakout.is_some())
            .map(|m| m.member.identity.clone())
            .collect();
        self.breakouts = None;
        let mut events = self.move_many(away.into_iter().map(|i| (i, None)).collect());
        events.push(Event::new(Audience::Everyone, RoomEvent::BreakoutsClosed));
        events.extend(self.breakouts_updated());
        events
    }

    fn resolve_plan(&self, plan: &BreakoutPlan, seed: u64) -> Result<BreakoutSession, Denied> {
        let names: Vec<String> = match &plan.rooms {
            BreakoutRooms::Named(names) => {
                let mut seen = BTreeSet::new();
                let mut out = Vec::new();
                for name in names {
                    let name = check_text(name, MAX_NAME_CHARS, "breakout name")?;
                    if !seen.insert(name.to_lowercase()) {
                        return Err(Denied::invalid(format!("duplicate breakout name {name:?}")));
                    }
                    out.push(name);
                }
                out
            }
            BreakoutRooms::FromAttribute { from_attribute } => self
                .members
                .values()
                .filter(|m| assignable(m.member.role))
                .filter_map(|m| m.member.attrs.get(from_attribute))
                .filter(|v| !v.trim().is_empty())
                .map(|v| v.chars().take(MAX_NAME_CHARS).collect::<String>())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
        };
        if names.is_empty() {
            return Err(Denied::invalid(match &plan.rooms {
                BreakoutRooms::FromAttribute { from_attribute } => {
                    format!("no one present has the attribute {from_attribute:?}, so the plan has no rooms")
                }
                _ => "a breakout plan needs at least one room".to_string(),
            }));
        }
        if names.len() > MAX_ROOMS {
            return Err(Denied::invalid(format!(
                "at most {MAX_ROOMS} breakout rooms"
            )));
        }
        match plan.duration_s {
            Some(0) => return Err(Denied::invalid("duration must be at least one second")),
            Some(d) if d > MAX_DURATION_S => {
                return Err(Denied::invalid("duration is over 24 hours"))
            }
            _ => {}
        }
        let rooms: Vec<BreakoutRoom> = names
            .into_iter()
            .enumerate()
            .map(|(i, name)| BreakoutRoom {
                id: i as u32 + 1,
                name,
            })
            .collect();
        let mut session = BreakoutSession {
            phase: BreakoutPhase::Draft,
            plan: plan.clone(),
            rooms,
            assignments: BTreeMap::new(),
            left: BTreeMap::new(),
            ends_at: None,
            warning_at: None,
            closes_at: None,
            seed,
        };
        match &plan.assignment {
            Assignment::Manual { assignments } => {
                for (identity, room) in assignments {
                    if self.member(identity).is_none() {
                        return Err(Denied::invalid(format!(
                            "unknown identity {identity:?} in assignments"
                        )));
                    }
                    let id = session.room_named(room).ok_or_else(|| {
                        Denied::invalid(format!("assignment to unknown breakout {room:?}"))
                    })?;
                    session.assignments.insert(identity.clone(), id);
                }
            }
            Assignment::ByAttribute { key } if key.trim().is_empty() => {
                return Err(Denied::invalid(
                    "by-attribute assignment needs an attribute key",
                ));
            }
            Assignment::SelfSelect { cap: Some(0) } => {
                return Err(Denied::invalid("a room cap must be at least 1"));
            }
            _ => {}
        }
        self.fill_assignments(&mut session);
        Ok(session)
    }

    /// Places everyone present that the plan places automatically and is not yet placed.
    fn fill_assignments(&self, session: &mut BreakoutSession) {
        let mut unplaced: Vec<&super::MemberState> = self
            .members
            .values()
            .filter(|m| {
                assignable(m.member.role) && !session.assignments.contains_key(&m.member.identity)
            })
            .collect();
        unplaced.sort_by_key(|m| shuffle_key(&m.member.identity, session.seed));
        for m in unplaced {
            if let Some(id) = session.place_automatically(&m.member.attrs) {
                session.assignments.insert(m.member.identity.clone(), id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nodes of one cluster must shuffle alike: these values are part of the replay contract.
    #[test]
    fn shuffle_keys_are_fixed_across_builds() {
        // The reference vectors of FNV-1a 64.
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(FNV_OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
        // Worked out apart from this code, from the definition above.
        assert_eq!(shuffle_key("ana", 7), 0xed4c_ff47_dad5_0832);
        assert_eq!(shuffle_key("ana", 8), 0x96ba_6f1e_6bd3_272e);
        assert_eq!(shuffle_key("", 0), 0x80b1_ece3_5ca7_1072);
    }
}
