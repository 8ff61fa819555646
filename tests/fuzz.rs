//! Property tests (bounded fuzzing): the client message parser and `RoomState::apply` never
//! panic on any input, the room's invariants hold after any sequence of commands, and a
//! room restored from a snapshot part-way through continues with the same bytes.
//!
//! `PROPTEST_CASES` sets how many cases run (scripts/fuzz raises it for a longer, bounded run).

use std::collections::{BTreeMap, HashSet};

use convene::room::{Event, Joiner, RoomLimits, RoomState, Viewer};
use convene_signaling::{
    Assignment, BreakoutPlan, BreakoutRooms, ClientMessage, Command, QaMode, QuestionState, Role,
    RoomKind, VideoQuality,
};
use proptest::prelude::*;

const PEOPLE: [(&str, Role); 6] = [
    ("host", Role::Host),
    ("mod", Role::Moderator),
    ("pres", Role::Presenter),
    ("ana", Role::Participant),
    ("ben", Role::Participant),
    ("cleo", Role::Participant),
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-zA-Z ]{1,40}",
        "\\PC{0,60}",
        (490usize..2100).prop_map(|n| "q".repeat(n)),
    ]
}

fn identity() -> impl Strategy<Value = String> {
    prop_oneof![
        (0..PEOPLE.len()).prop_map(|i| PEOPLE[i].0.to_string()),
        Just("ghost".to_string())
    ]
}

fn question() -> impl Strategy<Value = u64> {
    0u64..8
}

fn plan() -> impl Strategy<Value = BreakoutPlan> {
    let rooms = prop_oneof![
        prop::collection::vec("[A-C]{1}", 0..4).prop_map(BreakoutRooms::Named),
        Just(BreakoutRooms::FromAttribute {
            from_attribute: "team".into()
        }),
    ];
    let assignment = prop_oneof![
        Just(Assignment::Auto),
        Just(Assignment::ByAttribute { key: "team".into() }),
        prop::option::of(0u32..3).prop_map(|cap| Assignment::SelfSelect { cap }),
        (identity(), "[A-D]{1}").prop_map(|(i, r)| Assignment::Manual {
            assignments: BTreeMap::from([(i, r)])
        }),
    ];
    (rooms, assignment, prop::option::of(0u32..5), any::<bool>()).prop_map(
        |(rooms, assignment, duration_s, allow_leave)| BreakoutPlan {
            rooms,
            assignment,
            duration_s,
            allow_leave,
        },
    )
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        Just(Command::Ping),
        (
            prop::option::of(prop_oneof![
                Just(RoomKind::Webcast),
                Just(RoomKind::Meeting)
            ]),
            prop::option::of(any::<bool>()),
            prop::option::of(prop_oneof![Just(QaMode::Open), Just(QaMode::Moderated)])
        )
            .prop_map(|(kind, chat_enabled, qa_mode)| Command::UpdateSettings {
                kind,
                chat_enabled,
                qa_mode
            }),
        text().prop_map(|text| Command::SendChat { text }),
        (0u64..6).prop_map(|message_id| Command::DeleteChat { message_id }),
        (identity(), any::<bool>())
            .prop_map(|(identity, muted)| Command::MuteChat { identity, muted }),
        Just(Command::RaiseHand),
        prop::option::of(identity()).prop_map(|identity| Command::LowerHand { identity }),
        identity().prop_map(|identity| Command::InviteToStage { identity }),
        identity().prop_map(|identity| Command::RemoveFromStage { identity }),
        (identity(), prop::option::of(text()))
            .prop_map(|(identity, reason)| Command::RemoveParticipant { identity, reason }),
        (text(), any::<bool>())
            .prop_map(|(text, anonymous)| Command::AskQuestion { text, anonymous }),
        question().prop_map(|question_id| Command::WithdrawQuestion { question_id }),
        question().prop_map(|question_id| Command::Upvote { question_id }),
        question().prop_map(|question_id| Command::RemoveUpvote { question_id }),
        question().prop_map(|question_id| Command::ApproveQuestion { question_id }),
        question().prop_map(|question_id| Command::DismissQuestion { question_id }),
        question().prop_map(|question_id| Command::RestoreQuestion { question_id }),
        (question(), text())
            .prop_map(|(question_id, text)| Command::EditQuestion { question_id, text }),
        prop::option::of(question())
            .prop_map(|question_id| Command::SetLiveQuestion { question_id }),
        (question(), prop::option::of(text())).prop_map(|(question_id, answer)| {
            Command::AnswerQuestion {
                question_id,
                answer,
            }
        }),
        question().prop_map(|question_id| Command::ReopenQuestion { question_id }),
        (question(), question()).prop_map(|(question_id, duplicate_of)| Command::MarkDuplicate {
            question_id,
            duplicate_of
        }),
        plan().prop_map(|plan| Command::SetBreakoutPlan { plan }),
        Just(Command::CancelBreakoutPlan),
        (identity(), 0u32..5)
            .prop_map(|(identity, breakout)| Command::AssignBreakout { identity, breakout }),
        Just(Command::OpenBreakouts),
        (0u32..5).prop_map(|breakout| Command::ChooseBreakout { breakout }),
        (0u32..100).prop_map(|seconds| Command::ExtendBreakouts { seconds }),
        text().prop_map(|text| Command::BroadcastToBreakouts { text }),
        Just(Command::AskForHelp),
        (0u32..5).prop_map(|breakout| Command::JoinBreakout { breakout }),
        Just(Command::LeaveBreakout),
        prop::option::of(0u32..3).prop_map(|countdown_s| Command::CloseBreakouts { countdown_s }),
        Just(Command::SetVideoQuality {
            track_id: None,
            quality: VideoQuality::Low
        }),
    ]
}

/// Someone does something, time passes, or a connection drops or returns.
#[derive(Debug, Clone)]
enum Step {
    Command(usize, Command),
    Wait(u64),
    Drop(usize),
    Return(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0..PEOPLE.len(), command()).prop_map(|(who, cmd)| Step::Command(who, cmd)),
        1 => (0u64..40_000).prop_map(Step::Wait),
        1 => (0..PEOPLE.len()).prop_map(Step::Drop),
        1 => (0..PEOPLE.len()).prop_map(Step::Return),
    ]
}

fn joiner(i: usize) -> Joiner {
    let (identity, role) = PEOPLE[i];
    Joiner {
        identity: identity.into(),
        name: identity.into(),
        role,
        attrs: BTreeMap::from([("team".to_string(), ["Knox", "Blount"][i % 2].to_string())]),
        on_stage: false,
        credentials_until: None,
    }
}

/// 64 cases by default; `PROPTEST_CASES` raises it (scripts/fuzz).
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

fn check_invariants(room: &RoomState) {
    let qa = room.qa();
    let questions = qa.export();
    let live: Vec<_> = questions.iter().filter(|q| q.live).collect();
    assert!(live.len() <= 1, "more than one live question");
    for q in &live {
        assert_eq!(
            q.state,
            QuestionState::Approved,
            "a live question must be approved"
        );
        assert_eq!(qa.live(), Some(q.id));
    }
    for q in &questions {
        if let Some(of) = q.duplicate_of {
            assert_ne!(of, q.id, "self duplicate");
            assert_eq!(
                q.state,
                QuestionState::Dismissed,
                "a duplicate stays dismissed"
            );
        }
    }
    // No cycles among duplicates.
    for q in &questions {
        let mut seen = HashSet::new();
        let mut cursor = Some(q.id);
        while let Some(id) = cursor {
            assert!(seen.insert(id), "cycle of duplicates through {id}");
            cursor = qa.get(id).and_then(|q| q.duplicate_of);
        }
    }
    for m in room.members() {
        // Each viewer's snapshot is consistent with what they may see.
        let viewer = Viewer {
            identity: m.identity.clone(),
            role: m.role,
            place: convene::room::Place::from_breakout(m.breakout),
        };
        let snapshot = room.snapshot(&viewer);
        if !m.role.is_staff() {
            for q in snapshot.questions.iter().chain(&snapshot.answered) {
                let own = snapshot.my_questions.contains(&q.id);
                assert!(
                    own || matches!(q.state, QuestionState::Approved | QuestionState::Answered),
                    "participant sees a hidden question"
                );
            }
        }
        assert!(
            snapshot.chat.iter().all(|c| c.breakout == m.breakout),
            "chat from another place in a snapshot"
        );
    }
}

/// Applies one step and returns what it produced, as bytes: the events with their audiences
/// and when the room next needs a tick, or why the command was refused.
fn replay_step(room: &mut RoomState, step: &Step, now: &mut u64) -> String {
    *now += 7;
    let events: Vec<Event> = match step {
        Step::Command(who, cmd) => match room.apply(cmd, PEOPLE[*who].0, *now) {
            Ok(out) => out.events,
            Err(denied) => return format!("denied {:?} {}", denied.code, denied.message),
        },
        Step::Wait(ms) => {
            *now += ms;
            let mut events = Vec::new();
            // Bounded: a deadline that tick does not clear fails the property above.
            for _ in 0..10 {
                if room.next_deadline().is_none_or(|d| d > *now) {
                    break;
                }
                events.extend(room.tick(*now));
            }
            events
        }
        Step::Drop(who) => room.connection_closed(PEOPLE[*who].0, false, *now),
        Step::Return(who) => room.join(joiner(*who), *now).unwrap_or_default(),
    };
    let events: Vec<_> = events.iter().map(|e| (&e.audience, &e.body)).collect();
    serde_json::to_string(&(events, room.next_deadline())).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_text_parses_or_errors_without_panicking(text in "\\PC{0,200}") {
        let _ = serde_json::from_str::<ClientMessage>(&text);
    }

    #[test]
    fn any_json_shaped_message_parses_or_errors(kind in "[a-z_]{0,24}", field in "[a-z_]{0,12}", value in prop_oneof![Just("1".to_string()), Just("\"x\"".to_string()), Just("null".to_string()), Just("[]".to_string()), Just("{}".to_string())]) {
        let text = format!(r#"{{"type":"{kind}","{field}":{value},"request_id":"r"}}"#);
        let _ = serde_json::from_str::<ClientMessage>(&text);
    }

    #[test]
    fn valid_commands_round_trip(cmd in command()) {
        let msg = ClientMessage::with_request_id(cmd, "r1");
        let text = serde_json::to_string(&msg).unwrap();
        let back: ClientMessage = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(back, msg);
    }

    #[test]
    fn any_sequence_keeps_the_room_consistent(steps in prop::collection::vec(step(), 1..60)) {
        let mut room = RoomState::new("fuzz", RoomLimits { questions_per_minute: 50, ..RoomLimits::default() });
        let mut now = 1_000u64;
        for i in 0..PEOPLE.len() {
            room.join(joiner(i), now).unwrap();
        }
        for step in steps {
            now += 7;
            match step {
                Step::Command(who, cmd) => {
                    let _ = room.apply(&cmd, PEOPLE[who].0, now);
                }
                Step::Wait(ms) => {
                    now += ms;
                    let mut ticks = 0;
                    while room.next_deadline().is_some_and(|d| d <= now) {
                        room.tick(now);
                        ticks += 1;
                        prop_assert!(ticks < 10, "a due deadline that tick does not clear");
                    }
                }
                Step::Drop(who) => {
                    room.connection_closed(PEOPLE[who].0, false, now);
                }
                Step::Return(who) => {
                    let _ = room.join(joiner(who), now);
                }
            }
            check_invariants(&room);
        }
    }

    #[test]
    fn a_snapshot_taken_anywhere_replays_to_the_same_bytes(
        steps in prop::collection::vec(step(), 1..60),
        split in any::<prop::sample::Index>(),
    ) {
        let limits = || RoomLimits { questions_per_minute: 50, ..RoomLimits::default() };
        let fresh = || {
            let mut room = RoomState::new("fuzz", limits());
            for i in 0..PEOPLE.len() {
                room.join(joiner(i), 1_000).unwrap();
            }
            room
        };
        let split = split.index(steps.len() + 1);
        let (mut whole, mut now) = (fresh(), 1_000);
        let uninterrupted: Vec<String> =
            steps.iter().map(|s| replay_step(&mut whole, s, &mut now)).collect();

        let (mut before, mut now) = (fresh(), 1_000);
        for (i, s) in steps[..split].iter().enumerate() {
            prop_assert_eq!(&replay_step(&mut before, s, &mut now), &uninterrupted[i]);
        }
        let snapshot = before.to_snapshot();
        let mut restored = RoomState::from_snapshot(&snapshot, limits()).unwrap();
        prop_assert_eq!(restored.to_snapshot(), snapshot);
        for (i, s) in steps.iter().enumerate().skip(split) {
            prop_assert_eq!(&replay_step(&mut restored, s, &mut now), &uninterrupted[i], "step {}", i);
        }
        prop_assert_eq!(restored.to_snapshot(), whole.to_snapshot());
    }
}
