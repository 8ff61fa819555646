//! Attendance: per room and person, joins and leaves with times, time in the main room, in each breakout and on stage, and questions, votes and chat messages; a pure record fed by explicit calls, with time as an input.
//!
//! Networks credit professional-learning hours from this, so it counts what the room saw:
//! a seat kept through a reconnect counts as present, anonymous questions are not
//! attributed. The room actor feeds it ([`Attendance::record`] for each event it publishes,
//! [`Attendance::voted`] for each accepted vote); [`AttendanceBook`] keeps the sheets after
//! a room empties, for the configured retention.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use convene_signaling::{BreakoutId, Millis, Role, RoomEvent};
use serde::Serialize;

/// One person's record as reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PersonAttendance {
    pub identity: String,
    pub name: String,
    pub role: Role,
    /// Each stay: joined and (unless still here) left, in Unix milliseconds.
    pub stays: Vec<Stay>,
    /// Whole seconds, summed over stays.
    pub present_s: u64,
    pub main_room_s: u64,
    pub breakouts: Vec<BreakoutTime>,
    pub on_stage_s: u64,
    pub questions: u32,
    pub votes: u32,
    pub chat_messages: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Stay {
    pub joined_at: Millis,
    pub left_at: Option<Millis>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BreakoutTime {
    pub breakout: BreakoutId,
    pub name: String,
    pub seconds: u64,
}

#[derive(Debug, Default)]
struct Person {
    name: String,
    role: Option<Role>,
    stays: Vec<Stay>,
    /// Where they are now and since when; `None` when not present.
    here: Option<(Option<BreakoutId>, Millis)>,
    on_stage_since: Option<Millis>,
    main_ms: u64,
    breakout_ms: BTreeMap<BreakoutId, u64>,
    stage_ms: u64,
    questions: u32,
    votes: u32,
    chats: u32,
}

impl Person {
    /// Closes the open place interval at `now` (it reopens where the caller says).
    fn settle_place(&mut self, now: Millis) -> Option<Option<BreakoutId>> {
        let (place, since) = self.here.take()?;
        let spent = now.saturating_sub(since);
        match place {
            None => self.main_ms += spent,
            Some(b) => *self.breakout_ms.entry(b).or_default() += spent,
        }
        Some(place)
    }
    fn settle_stage(&mut self, now: Millis) {
        if let Some(since) = self.on_stage_since.take() {
            self.stage_ms += now.saturating_sub(since);
        }
    }
}

/// One room's attendance sheet.
#[derive(Debug, Default)]
pub struct Attendance {
    people: BTreeMap<String, Person>,
    breakout_names: BTreeMap<BreakoutId, String>,
    questions_seen: HashSet<u64>,
    /// When anything was last recorded: the sheet's age for retention.
    pub last_activity: Millis,
}

impl Attendance {
    pub fn joined(
        &mut self,
        identity: &str,
        name: &str,
        role: Role,
        breakout: Option<BreakoutId>,
        on_stage: bool,
        now: Millis,
    ) {
        self.last_activity = now;
        let person = self.people.entry(identity.to_string()).or_default();
        person.name = name.to_string();
        person.role = Some(role);
        if person.here.is_some() {
            return;
        }
        person.stays.push(Stay {
            joined_at: now,
            left_at: None,
        });
        person.here = Some((breakout, now));
        if on_stage {
            person.on_stage_since = Some(now);
        }
    }

    pub fn left(&mut self, identity: &str, now: Millis) {
        self.last_activity = now;
        let Some(person) = self.people.get_mut(identity) else {
            return;
        };
        if person.settle_place(now).is_none() {
            return;
        }
        person.settle_stage(now);
        if let Some(stay) = person.stays.last_mut() {
            stay.left_at = Some(now);
        }
    }

    /// Into a breakout (`Some`) or back to the main room (`None`).
    pub fn moved(&mut self, identity: &str, to: Option<BreakoutId>, now: Millis) {
        self.last_activity = now;
        let Some(person) = self.people.get_mut(identity) else {
            return;
        };
        if person.here.is_some_and(|(place, _)| place == to) {
            return;
        }
        if person.settle_place(now).is_some() {
            person.here = Some((to, now));
        }
    }

    pub fn stage(&mut self, identity: &str, on_stage: bool, now: Millis) {
        self.last_activity = now;
        let Some(person) = self.people.get_mut(identity) else {
            return;
        };
        match (on_stage, person.on_stage_since) {
            (true, None) if person.here.is_some() => person.on_stage_since = Some(now),
            (false, Some(_)) => person.settle_stage(now),
            _ => {}
        }
    }

    pub fn voted(&mut self, identity: &str) {
        if let Some(person) = self.people.get_mut(identity) {
            person.votes += 1;
        }
    }

    pub fn name_breakout(&mut self, breakout: BreakoutId, name: &str) {
        self.breakout_names.insert(breakout, name.to_string());
    }

    /// Feeds one published event; `to_person` is the one person it was addressed to, if any
    /// (a `moved` event names its mover only that way).
    pub fn record(&mut self, event: &RoomEvent, to_person: Option<&str>, now: Millis) {
        match event {
            RoomEvent::MemberJoined { member } => self.joined(
                &member.identity,
                &member.name,
                member.role,
                member.breakout,
                member.on_stage,
                now,
            ),
            RoomEvent::MemberUpdated { member } => {
                self.moved(&member.identity, member.breakout, now);
                self.stage(&member.identity, member.on_stage, now);
            }
            RoomEvent::MemberLeft { identity, .. } => self.left(identity, now),
            RoomEvent::Moved { breakout, name, .. } => {
                if let Some(b) = breakout {
                    self.name_breakout(*b, name);
                }
                if let Some(identity) = to_person {
                    self.moved(identity, *breakout, now);
                }
            }
            RoomEvent::ChatMessage { message } => {
                if let Some(person) = self.people.get_mut(&message.from) {
                    person.chats += 1;
                }
            }
            // First sight of a question is its asking; later updates are not.
            RoomEvent::QuestionUpdated { question } if self.questions_seen.insert(question.id) => {
                let author = question.author.as_deref().filter(|_| !question.anonymous);
                if let Some(person) = author.and_then(|a| self.people.get_mut(a)) {
                    person.questions += 1;
                }
            }
            _ => {}
        }
    }

    /// Everyone who attended, with open stays counted up to `now`.
    pub fn report(&self, now: Millis) -> Vec<PersonAttendance> {
        self.people
            .iter()
            .filter_map(|(identity, p)| {
                let role = p.role?;
                let mut main_ms = p.main_ms;
                let mut breakout_ms = p.breakout_ms.clone();
                if let Some((place, since)) = p.here {
                    let spent = now.saturating_sub(since);
                    match place {
                        None => main_ms += spent,
                        Some(b) => *breakout_ms.entry(b).or_default() += spent,
                    }
                }
                let stage_ms = p.stage_ms + p.on_stage_since.map_or(0, |s| now.saturating_sub(s));
                let present_ms = main_ms + breakout_ms.values().sum::<u64>();
                Some(PersonAttendance {
                    identity: identity.clone(),
                    name: p.name.clone(),
                    role,
                    stays: p.stays.clone(),
                    present_s: present_ms / 1000,
                    main_room_s: main_ms / 1000,
                    breakouts: breakout_ms
                        .into_iter()
                        .map(|(breakout, ms)| BreakoutTime {
                            breakout,
                            name: self
                                .breakout_names
                                .get(&breakout)
                                .cloned()
                                .unwrap_or_default(),
                            seconds: ms / 1000,
                        })
                        .collect(),
                    on_stage_s: stage_ms / 1000,
                    questions: p.questions,
                    votes: p.votes,
                    chat_messages: p.chats,
                })
            })
            .collect()
    }

    fn anyone_here(&self) -> bool {
        self.people.values().any(|p| p.here.is_some())
    }
}

/// The node's attendance sheets by room, kept after a room empties for `retention_ms`.
#[derive(Clone, Default)]
pub struct AttendanceBook {
    sheets: Arc<Mutex<HashMap<String, Arc<Mutex<Attendance>>>>>,
    retention_ms: Millis,
}

impl AttendanceBook {
    pub fn new(retention_ms: Millis) -> AttendanceBook {
        AttendanceBook {
            sheets: Default::default(),
            retention_ms,
        }
    }

    /// The room's sheet, started if needed; a room keeps its handle for its whole life.
    pub fn sheet(&self, room: &str) -> Arc<Mutex<Attendance>> {
        let mut sheets = self.sheets.lock().expect("attendance lock");
        sheets.entry(room.to_string()).or_default().clone()
    }

    /// The room's report, if the room has a sheet; forgets sheets past retention first.
    pub fn report(&self, room: &str, now: Millis) -> Option<Vec<PersonAttendance>> {
        let mut sheets = self.sheets.lock().expect("attendance lock");
        sheets.retain(|_, sheet| {
            let sheet = sheet.lock().expect("sheet lock");
            sheet.anyone_here() || now.saturating_sub(sheet.last_activity) < self.retention_ms
        });
        let sheet = sheets.get(room)?.lock().expect("sheet lock");
        Some(sheet.report(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use convene_signaling::{ChatMessage, LeaveReason, Member, Presence, Question, QuestionState};

    fn member(identity: &str, role: Role) -> Member {
        Member {
            media_muted: Vec::new(),
            captioner: false,
            identity: identity.into(),
            name: identity.to_uppercase(),
            role,
            presence: Presence::Online,
            on_stage: role == Role::Presenter,
            hand_raised: false,
            chat_muted: false,
            breakout: None,
            facilitator: false,
            attrs: Default::default(),
        }
    }

    const T0: Millis = 1_700_000_000_000;

    fn question(id: u64, author: &str, anonymous: bool) -> RoomEvent {
        RoomEvent::QuestionUpdated {
            question: Question {
                id,
                text: "q".into(),
                author: (!anonymous).then(|| author.to_string()),
                author_name: None,
                anonymous,
                votes: 0,
                state: QuestionState::Pending,
                live: false,
                edited: false,
                answer: None,
                duplicate_of: None,
                asked_at: T0,
                updated_at: T0,
                answered_at: None,
            },
        }
    }

    #[test]
    fn a_scripted_session_is_counted_to_the_second() {
        let mut sheet = Attendance::default();
        let s = |secs: u64| T0 + secs * 1000;
        sheet.record(
            &RoomEvent::MemberJoined {
                member: member("ana", Role::Participant),
            },
            None,
            s(0),
        );
        sheet.record(
            &RoomEvent::MemberJoined {
                member: member("pres", Role::Presenter),
            },
            None,
            s(10),
        );
        sheet.record(
            &RoomEvent::ChatMessage {
                message: ChatMessage {
                    id: 1,
                    from: "ana".into(),
                    name: "ANA".into(),
                    text: "hi".into(),
                    at: s(20),
                    breakout: None,
                },
            },
            None,
            s(20),
        );
        sheet.record(&question(7, "ana", false), None, s(30));
        sheet.record(&question(7, "ana", false), None, s(31)); // an update, not a new question
        sheet.record(&question(8, "ana", true), None, s(32)); // anonymous: not attributed
        sheet.voted("ana");
        let moved = |to: Option<BreakoutId>| RoomEvent::Moved {
            from: None,
            breakout: to,
            name: if to.is_some() {
                "Knox County".into()
            } else {
                "Main room".into()
            },
            ends_at: None,
            members: Vec::new(),
            tracks: Vec::new(),
            chat: Vec::new(),
        };
        sheet.record(&moved(Some(2)), Some("ana"), s(60));
        sheet.record(&moved(None), Some("ana"), s(60 + 754));
        let mut off_stage = member("pres", Role::Presenter);
        off_stage.on_stage = false;
        sheet.record(
            &RoomEvent::MemberUpdated { member: off_stage },
            None,
            s(610),
        );
        sheet.record(
            &RoomEvent::MemberLeft {
                identity: "ana".into(),
                reason: LeaveReason::Left,
            },
            None,
            s(1000),
        );
        // Ana comes back for a minute and a half, still here at the report.
        sheet.record(
            &RoomEvent::MemberJoined {
                member: member("ana", Role::Participant),
            },
            None,
            s(1200),
        );
        let report = sheet.report(s(1290) + 999);
        let ana = report.iter().find(|p| p.identity == "ana").unwrap();
        assert_eq!(
            ana.stays,
            vec![
                Stay {
                    joined_at: s(0),
                    left_at: Some(s(1000))
                },
                Stay {
                    joined_at: s(1200),
                    left_at: None
                },
            ]
        );
        assert_eq!(
            ana.breakouts,
            vec![BreakoutTime {
                breakout: 2,
                name: "Knox County".into(),
                seconds: 754
            }]
        );
        assert_eq!(ana.main_room_s, 1000 - 754 + 90);
        assert_eq!(ana.present_s, 1000 + 90);
        assert_eq!((ana.questions, ana.votes, ana.chat_messages), (1, 1, 1));
        assert_eq!(ana.on_stage_s, 0);
        let pres = report.iter().find(|p| p.identity == "pres").unwrap();
        assert_eq!(pres.on_stage_s, 600);
        assert_eq!(pres.present_s, 1280);
    }

    #[test]
    fn sheets_outlive_the_room_for_the_retention_only() {
        let book = AttendanceBook::new(60_000);
        book.sheet("r")
            .lock()
            .unwrap()
            .joined("ana", "Ana", Role::Participant, None, false, T0);
        book.sheet("r").lock().unwrap().left("ana", T0 + 5_000);
        assert_eq!(book.report("r", T0 + 30_000).unwrap()[0].present_s, 5);
        assert!(book.report("r", T0 + 65_001).is_none());
        assert!(book.report("never", T0).is_none());
    }
}
