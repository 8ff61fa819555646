//! Unit tests of `RoomState`: transitions, roles and audiences, without I/O.

use super::*;
use convene_signaling::{
    Assignment, BreakoutPhase, BreakoutPlan, BreakoutRooms, QaMode, QuestionState,
};

fn joiner(identity: &str, role: Role) -> Joiner {
    Joiner {
        identity: identity.into(),
        name: identity.to_uppercase(),
        role,
        attrs: BTreeMap::new(),
        on_stage: false,
        credentials_until: None,
    }
}

fn with_team(identity: &str, team: &str) -> Joiner {
    Joiner {
        attrs: BTreeMap::from([("team".to_string(), team.to_string())]),
        ..joiner(identity, Role::Participant)
    }
}

fn viewer(room: &RoomState, identity: &str) -> Viewer {
    room.viewer(identity).unwrap()
}

fn room_with(people: &[(&str, Role)]) -> RoomState {
    let mut room = RoomState::new("r", RoomLimits::default());
    for (identity, role) in people {
        room.join(joiner(identity, *role), 0).unwrap();
    }
    room
}

fn run(room: &mut RoomState, by: &str, cmd: Command, now: Millis) -> Result<Outcome, Denied> {
    room.apply(&cmd, by, now)
}

fn bodies(events: &[Event]) -> Vec<&RoomEvent> {
    events.iter().map(|e| &e.body).collect()
}

#[test]
fn webcast_presence_shows_counts_to_participants_and_lists_to_staff() {
    let mut room = room_with(&[("host", Role::Host), ("pres", Role::Presenter)]);
    let events = room.join(joiner("ana", Role::Participant), 10_000).unwrap();
    // The join of an audience member reaches staff only (ana has her welcome); the count goes to all.
    assert_eq!(events[0].audience, Audience::staff());
    assert!(events[0].audience.staff_only());
    assert!(matches!(
        events[1].body,
        RoomEvent::ParticipantCount { count: 1 }
    ));
    room.join(joiner("ben", Role::Participant), 10_001).unwrap();
    let ben = viewer(&room, "ben");
    let snap = room.snapshot(&ben);
    let names: Vec<_> = snap.members.iter().map(|m| m.identity.as_str()).collect();
    assert_eq!(names, vec!["ben", "host", "pres"]);
    assert_eq!(snap.participant_count, 2);
    let host_snap = room.snapshot(&viewer(&room, "host"));
    assert_eq!(host_snap.members.len(), 4);
    // Presenters start on stage; a meeting shows everyone to everyone.
    assert!(room.member("pres").unwrap().on_stage);
    run(
        &mut room,
        "host",
        Command::UpdateSettings {
            kind: Some(RoomKind::Meeting),
            chat_enabled: None,
            qa_mode: None,
        },
        10_002,
    )
    .unwrap();
    assert_eq!(room.snapshot(&ben).members.len(), 4);
}

#[test]
fn participant_counts_are_coalesced() {
    let mut room = room_with(&[("host", Role::Host)]);
    let mut counts = 0;
    for i in 0..50 {
        let events = room
            .join(joiner(&format!("p{i}"), Role::Participant), 1_000 + i)
            .unwrap();
        counts += events
            .iter()
            .filter(|e| matches!(e.body, RoomEvent::ParticipantCount { .. }))
            .count();
    }
    assert_eq!(counts, 1, "a burst of joins sends one count at once");
    let deadline = room.next_deadline().unwrap();
    assert_eq!(deadline, 1_000 + COUNT_INTERVAL_MS);
    let events = room.tick(deadline);
    assert_eq!(
        bodies(&events),
        vec![&RoomEvent::ParticipantCount { count: 50 }]
    );
    assert_eq!(room.next_deadline(), None);
}

#[test]
fn reconnecting_then_left_after_grace() {
    let mut room = room_with(&[("host", Role::Host), ("ana", Role::Participant)]);
    room.apply(&Command::RaiseHand, "ana", 1).unwrap();
    let events = room.connection_closed("ana", false, 1_000);
    assert!(
        matches!(&events[0].body, RoomEvent::MemberUpdated { member } if member.presence == Presence::Reconnecting)
    );
    // A return within the grace keeps the seat (hand still raised).
    room.join(joiner("ana", Role::Participant), 5_000).unwrap();
    let ana = room.member("ana").unwrap();
    assert_eq!((ana.presence, ana.hand_raised), (Presence::Online, true));
    room.connection_closed("ana", false, 6_000);
    assert!(room
        .tick(6_000 + 19_999)
        .iter()
        .all(|e| !matches!(e.body, RoomEvent::MemberLeft { .. })));
    let events = room.tick(26_000);
    assert!(events.iter().any(|e| e.body
        == RoomEvent::MemberLeft {
            identity: "ana".into(),
            reason: LeaveReason::TimedOut
        }));
    assert!(room.member("ana").is_none());
    // Leaving on purpose skips the grace.
    room.join(joiner("ben", Role::Participant), 30_000).unwrap();
    let events = room.connection_closed("ben", true, 30_001);
    assert!(events.iter().any(|e| e.body
        == RoomEvent::MemberLeft {
            identity: "ben".into(),
            reason: LeaveReason::Left
        }));
}

#[test]
fn the_grace_runs_from_the_first_drop() {
    let mut room = room_with(&[("ana", Role::Participant)]);
    assert_eq!(room.connection_closed("ana", false, 1_000).len(), 1);
    // A further close while reconnecting changes nothing and does not restart the grace.
    assert!(room.connection_closed("ana", false, 15_000).is_empty());
    assert_eq!(room.next_deadline(), Some(21_000));
    room.tick(21_000);
    assert!(room.member("ana").is_none());
    // Nothing stale is left behind to wake the room.
    assert_eq!(room.next_deadline(), None);
}

#[test]
fn two_connections_of_one_identity_are_one_member() {
    let mut room = room_with(&[("ana", Role::Participant)]);
    assert!(room
        .join(joiner("ana", Role::Participant), 1)
        .unwrap()
        .is_empty());
    assert!(room.connection_closed("ana", false, 2).is_empty());
    assert_eq!(room.member("ana").unwrap().presence, Presence::Online);
}

#[test]
fn chat_rules() {
    let mut room = room_with(&[
        ("host", Role::Host),
        ("mod", Role::Moderator),
        ("ana", Role::Participant),
        ("ben", Role::Participant),
    ]);
    let out = run(
        &mut room,
        "ana",
        Command::SendChat {
            text: "  hello  ".into(),
        },
        1,
    )
    .unwrap();
    let id = out.created.unwrap();
    match &out.events[0].body {
        RoomEvent::ChatMessage { message } => assert_eq!(message.text, "hello"),
        other => panic!("{other:?}"),
    }
    for bad in ["", "   ", &"x".repeat(2001)] {
        let err = run(&mut room, "ana", Command::SendChat { text: bad.into() }, 2).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
    }
    run(
        &mut room,
        "ana",
        Command::SendChat {
            text: "é".repeat(2000),
        },
        2,
    )
    .unwrap();
    // Only the author or a moderator deletes.
    assert_eq!(
        run(&mut room, "ben", Command::DeleteChat { message_id: id }, 3)
            .unwrap_err()
            .code,
        ErrorCode::Forbidden
    );
    run(&mut room, "mod", Command::DeleteChat { message_id: id }, 3).unwrap();
    assert_eq!(
        run(&mut room, "ana", Command::DeleteChat { message_id: id }, 4)
            .unwrap_err()
            .code,
        ErrorCode::NotFound
    );
    // Muting is for moderators and stops that person only.
    assert_eq!(
        run(
            &mut room,
            "ben",
            Command::MuteChat {
                identity: "ana".into(),
                muted: true
            },
            5
        )
        .unwrap_err()
        .code,
        ErrorCode::Forbidden
    );
    run(
        &mut room,
        "mod",
        Command::MuteChat {
            identity: "ana".into(),
            muted: true,
        },
        5,
    )
    .unwrap();
    assert_eq!(
        run(&mut room, "ana", Command::SendChat { text: "hi".into() }, 6)
            .unwrap_err()
            .code,
        ErrorCode::ChatMuted
    );
    run(&mut room, "ben", Command::SendChat { text: "hi".into() }, 6).unwrap();
    // Chat off: participants refused, staff still speak.
    assert_eq!(
        run(
            &mut room,
            "mod",
            Command::UpdateSettings {
                kind: None,
                chat_enabled: Some(false),
                qa_mode: None
            },
            7
        )
        .unwrap_err()
        .code,
        ErrorCode::Forbidden
    );
    run(
        &mut room,
        "host",
        Command::UpdateSettings {
            kind: None,
            chat_enabled: Some(false),
            qa_mode: None,
        },
        7,
    )
    .unwrap();
    assert_eq!(
        run(&mut room, "ben", Command::SendChat { text: "hi".into() }, 8)
            .unwrap_err()
            .code,
        ErrorCode::ChatDisabled
    );
    run(
        &mut room,
        "host",
        Command::SendChat {
            text: "announcement".into(),
        },
        8,
    )
    .unwrap();
    let history = room.snapshot(&viewer(&room, "ben")).chat;
    assert_eq!(history.last().unwrap().text, "announcement");
}

#[test]
fn chat_history_is_bounded() {
    let limits = RoomLimits {
        chat_history: 3,
        ..RoomLimits::default()
    };
    let mut room = RoomState::new("r", limits);
    room.join(joiner("ana", Role::Participant), 0).unwrap();
    for i in 0..5 {
        run(
            &mut room,
            "ana",
            Command::SendChat {
                text: format!("m{i}"),
            },
            i,
        )
        .unwrap();
    }
    let texts: Vec<String> = room
        .snapshot(&viewer(&room, "ana"))
        .chat
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(texts, vec!["m2", "m3", "m4"]);
}

#[test]
fn hands_and_stage() {
    let mut room = room_with(&[
        ("host", Role::Host),
        ("mod", Role::Moderator),
        ("ana", Role::Participant),
        ("ben", Role::Participant),
    ]);
    run(&mut room, "ana", Command::RaiseHand, 1).unwrap();
    assert!(room.member("ana").unwrap().hand_raised);
    assert_eq!(
        run(
            &mut room,
            "ben",
            Command::LowerHand {
                identity: Some("ana".into())
            },
            2
        )
        .unwrap_err()
        .code,
        ErrorCode::Forbidden
    );
    assert_eq!(
        run(
            &mut room,
            "ben",
            Command::InviteToStage {
                identity: "ana".into()
            },
            2
        )
        .unwrap_err()
        .code,
        ErrorCode::Forbidden
    );
    assert!(!room.may_publish("ana"));
    let out = run(
        &mut room,
        "mod",
        Command::InviteToStage {
            identity: "ana".into(),
        },
        3,
    )
    .unwrap();
    // Going on stage makes ana visible to the whole webcast audience, and lowers her hand.
    assert_eq!(out.events[0].audience, Audience::Everyone);
    let ana = room.member("ana").unwrap();
    assert!(ana.on_stage && !ana.hand_raised);
    assert!(room.may_publish("ana"));
    assert!(room
        .snapshot(&viewer(&room, "ben"))
        .members
        .iter()
        .any(|m| m.identity == "ana"));
    run(
        &mut room,
        "host",
        Command::RemoveFromStage {
            identity: "ana".into(),
        },
        4,
    )
    .unwrap();
    assert!(!room.may_publish("ana"));
    assert_eq!(
        run(
            &mut room,
            "mod",
            Command::InviteToStage {
                identity: "nobody".into()
            },
            5
        )
        .unwrap_err()
        .code,
        ErrorCode::NotFound
    );
}

#[test]
fn removal_bans_the_identity() {
    let mut room = room_with(&[
        ("host", Role::Host),
        ("mod", Role::Moderator),
        ("ana", Role::Participant),
    ]);
    assert_eq!(
        run(
            &mut room,
            "ana",
            Command::RemoveParticipant {
                identity: "mod".into(),
                reason: None
            },
            1
        )
        .unwrap_err()
        .code,
        ErrorCode::Forbidden
    );
    assert_eq!(
        run(
            &mut room,
            "mod",
            Command::RemoveParticipant {
                identity: "host".into(),
                reason: None
            },
            1
        )
        .unwrap_err()
        .code,
        ErrorCode::Forbidden
    );
    let out = run(
        &mut room,
        "mod",
        Command::RemoveParticipant {
            identity: "ana".into(),
            reason: Some("spam".into()),
        },
        2,
    )
    .unwrap();
    assert_eq!(
        out.events[0],
        Event::new(
            Audience::person("ana"),
            RoomEvent::Removed {
                reason: "spam".into()
            }
        )
    );
    assert!(room.member("ana").is_none());
    assert!(room.is_banned("ana"));
    assert_eq!(
        room.join(joiner("ana", Role::Participant), 3)
            .unwrap_err()
            .code,
        ErrorCode::Forbidden
    );
}

#[test]
fn settings_are_host_only_and_qa_mode_applies() {
    let mut room = room_with(&[("host", Role::Host), ("ana", Role::Participant)]);
    run(
        &mut room,
        "host",
        Command::UpdateSettings {
            kind: None,
            chat_enabled: None,
            qa_mode: Some(QaMode::Open),
        },
        1,
    )
    .unwrap();
    let id = run(
        &mut room,
        "ana",
        Command::AskQuestion {
            text: "open?".into(),
            anonymous: false,
        },
        2,
    )
    .unwrap()
    .created
    .unwrap();
    assert_eq!(room.qa().get(id).unwrap().state, QuestionState::Approved);
}

#[test]
fn unknown_sender_is_not_in_room() {
    let mut room = room_with(&[]);
    assert_eq!(
        run(&mut room, "ghost", Command::RaiseHand, 0)
            .unwrap_err()
            .code,
        ErrorCode::NotInRoom
    );
}

// ---- Breakouts ----

fn team_room(teams: &[(&str, &str)]) -> RoomState {
    let mut room = room_with(&[("host", Role::Host), ("mod", Role::Moderator)]);
    for (identity, team) in teams {
        room.join(with_team(identity, team), 0).unwrap();
    }
    room
}

fn plan(rooms: BreakoutRooms, assignment: Assignment, duration_s: Option<u32>) -> Command {
    Command::SetBreakoutPlan {
        plan: BreakoutPlan {
            rooms,
            assignment,
            duration_s,
            allow_leave: true,
        },
    }
}

fn by_team() -> Command {
    plan(
        BreakoutRooms::FromAttribute {
            from_attribute: "team".into(),
        },
        Assignment::ByAttribute { key: "team".into() },
        Some(600),
    )
}

#[test]
fn by_attribute_plan_groups_teams_and_moves_people_on_open() {
    let mut room = team_room(&[
        ("a1", "Knox"),
        ("a2", "Knox"),
        ("b1", "Blount"),
        ("c1", "Sevier"),
    ]);
    assert_eq!(
        run(&mut room, "a1", by_team(), 0).unwrap_err().code,
        ErrorCode::Forbidden
    );
    run(&mut room, "mod", by_team(), 0).unwrap();
    let staff_view = room.breakouts_view(true, "host").unwrap();
    let names: Vec<_> = staff_view.rooms.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec!["Blount", "Knox", "Sevier"]);
    assert_eq!(staff_view.assignments.len(), 4);
    assert_eq!(staff_view.phase, BreakoutPhase::Draft);
    let out = run(&mut room, "host", Command::OpenBreakouts, 1_000).unwrap();
    let moved: Vec<_> = out
        .events
        .iter()
        .filter(|e| matches!(e.body, RoomEvent::Moved { .. }))
        .collect();
    assert_eq!(moved.len(), 4);
    let knox = room.member("a1").unwrap().breakout;
    assert_eq!(room.member("a2").unwrap().breakout, knox);
    assert_ne!(room.member("b1").unwrap().breakout, knox);
    assert_eq!(room.member("host").unwrap().breakout, None);
    assert_eq!(
        run(&mut room, "host", Command::OpenBreakouts, 1_001)
            .unwrap_err()
            .code,
        ErrorCode::Conflict
    );
    // A participant sees only their own assignment.
    let mine = room.breakouts_view(false, "a1").unwrap();
    assert_eq!(mine.assignments.len(), 1);
}

#[test]
fn breakout_chat_stays_inside() {
    let mut room = team_room(&[("a1", "Knox"), ("b1", "Blount")]);
    run(&mut room, "mod", by_team(), 0).unwrap();
    run(&mut room, "mod", Command::OpenBreakouts, 0).unwrap();
    let out = run(
        &mut room,
        "a1",
        Command::SendChat {
            text: "knox only".into(),
        },
        1,
    )
    .unwrap();
    let audience = &out.events[0].audience;
    assert!(audience.includes(&viewer(&room, "a1")));
    assert!(!audience.includes(&viewer(&room, "b1")));
    assert!(!audience.includes(&viewer(&room, "host")));
    assert!(room.snapshot(&viewer(&room, "b1")).chat.is_empty());
}

#[test]
fn timer_warns_then_closes_with_countdown() {
    let mut room = team_room(&[("a1", "Knox"), ("b1", "Blount")]);
    run(&mut room, "mod", by_team(), 0).unwrap();
    run(&mut room, "mod", Command::OpenBreakouts, 0).unwrap();
    room.tick(COUNT_INTERVAL_MS); // flush the joins' coalesced count
                                  // 600 s timer, warning 60 s before the end.
    assert_eq!(room.next_deadline(), Some(540_000));
    assert!(room.tick(539_999).is_empty());
    let events = room.tick(540_000);
    assert_eq!(
        bodies(&events),
        vec![&RoomEvent::BreakoutWarning { ends_at: 600_000 }]
    );
    // The host extends by 5 minutes: a new warning is due.
    run(
        &mut room,
        "host",
        Command::ExtendBreakouts { seconds: 300 },
        550_000,
    )
    .unwrap();
    assert_eq!(
        room.breakouts_view(true, "").unwrap().ends_at,
        Some(900_000)
    );
    assert_eq!(room.next_deadline(), Some(840_000));
    room.tick(840_000);
    // The close-all countdown (30 s by default) runs in the timer's last seconds.
    assert_eq!(room.next_deadline(), Some(870_000));
    let events = room.tick(870_000);
    assert!(events
        .iter()
        .any(|e| e.body == RoomEvent::BreakoutsClosing { closes_at: 900_000 }));
    assert!(room.member("a1").unwrap().breakout.is_some());
    assert_eq!(room.next_deadline(), Some(900_000));
    let events = room.tick(900_000);
    assert!(events.iter().any(|e| e.body == RoomEvent::BreakoutsClosed));
    assert!(room.members().all(|m| m.breakout.is_none()));
    assert!(room.breakouts_view(true, "").is_none());
}

/// A 65 s breakout lasted 96 s when the countdown followed the timer; the timer's end is the close.
#[test]
fn a_timed_breakout_closes_when_its_timer_ends() {
    for (duration_s, countdown_starts) in [(65, 35_000), (20, 0)] {
        let mut room = team_room(&[("a1", "Knox"), ("b1", "Blount")]);
        let timed = plan(
            BreakoutRooms::FromAttribute {
                from_attribute: "team".into(),
            },
            Assignment::ByAttribute { key: "team".into() },
            Some(duration_s),
        );
        run(&mut room, "mod", timed, 0).unwrap();
        run(&mut room, "mod", Command::OpenBreakouts, 0).unwrap();
        let ends_at = u64::from(duration_s) * 1000;
        let mut closing = None;
        let mut closed = None;
        let mut now = 0;
        while closed.is_none() && now <= ends_at + 60_000 {
            now = room.next_deadline().expect("a timer is running").max(now);
            for e in room.tick(now) {
                match e.body {
                    RoomEvent::BreakoutsClosing { closes_at } => closing = Some((now, closes_at)),
                    RoomEvent::BreakoutsClosed => closed = Some(now),
                    _ => {}
                }
            }
        }
        assert_eq!(closing, Some((countdown_starts, ends_at)), "{duration_s} s");
        assert_eq!(closed, Some(ends_at), "{duration_s} s breakout");
        assert!(room.members().all(|m| m.breakout.is_none()));
    }
}

#[test]
fn close_all_returns_everyone_with_stage_and_hand_reset() {
    let mut room = team_room(&[("a1", "Knox"), ("b1", "Blount")]);
    run(&mut room, "mod", by_team(), 0).unwrap();
    run(&mut room, "mod", Command::OpenBreakouts, 0).unwrap();
    run(&mut room, "a1", Command::RaiseHand, 1).unwrap();
    run(&mut room, "mod", Command::JoinBreakout { breakout: 1 }, 2).unwrap();
    assert!(room.member("mod").unwrap().facilitator);
    run(
        &mut room,
        "host",
        Command::CloseBreakouts {
            countdown_s: Some(10),
        },
        3,
    )
    .unwrap();
    assert_eq!(
        run(
            &mut room,
            "host",
            Command::CloseBreakouts { countdown_s: None },
            4
        )
        .unwrap_err()
        .code,
        ErrorCode::Conflict
    );
    let events = room.tick(13_000);
    let moved = events
        .iter()
        .filter(|e| matches!(e.body, RoomEvent::Moved { breakout: None, .. }))
        .count();
    assert_eq!(moved, 3);
    let a1 = room.member("a1").unwrap();
    assert!(!a1.hand_raised && !a1.on_stage && a1.breakout.is_none());
    assert!(!room.member("mod").unwrap().facilitator);
}

#[test]
fn help_broadcast_and_leaving() {
    let mut room = team_room(&[("a1", "Knox")]);
    assert_eq!(
        run(&mut room, "a1", Command::AskForHelp, 0)
            .unwrap_err()
            .code,
        ErrorCode::NotInRoom
    );
    run(&mut room, "mod", by_team(), 0).unwrap();
    run(&mut room, "mod", Command::OpenBreakouts, 0).unwrap();
    let out = run(&mut room, "a1", Command::AskForHelp, 1).unwrap();
    assert_eq!(out.events[0].audience, Audience::staff());
    assert!(
        matches!(&out.events[0].body, RoomEvent::HelpRequested { breakout_name, .. } if breakout_name == "Knox")
    );
    let out = run(
        &mut room,
        "host",
        Command::BroadcastToBreakouts {
            text: "5 minutes left".into(),
        },
        2,
    )
    .unwrap();
    assert_eq!(out.events[0].audience, Audience::Everyone);
    assert_eq!(
        run(
            &mut room,
            "a1",
            Command::BroadcastToBreakouts { text: "x".into() },
            2
        )
        .unwrap_err()
        .code,
        ErrorCode::Forbidden
    );
    run(&mut room, "a1", Command::LeaveBreakout, 3).unwrap();
    assert_eq!(room.member("a1").unwrap().breakout, None);
    assert_eq!(
        run(&mut room, "a1", Command::LeaveBreakout, 4)
            .unwrap_err()
            .code,
        ErrorCode::NotInRoom
    );
}

#[test]
fn leaving_early_can_be_forbidden() {
    let mut room = room_with(&[("host", Role::Host), ("ana", Role::Participant)]);
    let cmd = Command::SetBreakoutPlan {
        plan: BreakoutPlan {
            rooms: BreakoutRooms::Named(vec!["A".into()]),
            assignment: Assignment::Auto,
            duration_s: None,
            allow_leave: false,
        },
    };
    run(&mut room, "host", cmd, 0).unwrap();
    run(&mut room, "host", Command::OpenBreakouts, 0).unwrap();
    assert_eq!(
        run(&mut room, "ana", Command::LeaveBreakout, 1)
            .unwrap_err()
            .code,
        ErrorCode::Forbidden
    );
}

#[test]
fn bad_plans_are_refused() {
    let mut room = room_with(&[("host", Role::Host), ("ana", Role::Participant)]);
    let named = |names: &[&str], assignment| {
        plan(
            BreakoutRooms::Named(names.iter().map(|s| s.to_string()).collect()),
            assignment,
            None,
        )
    };
    let cases = [
        named(&[], Assignment::Auto),
        named(&["A", "a"], Assignment::Auto),
        named(&["A", " "], Assignment::Auto),
        named(
            &["A"],
            Assignment::Manual {
                assignments: BTreeMap::from([("ghost".to_string(), "A".to_string())]),
            },
        ),
        named(
            &["A"],
            Assignment::Manual {
                assignments: BTreeMap::from([("ana".to_string(), "B".to_string())]),
            },
        ),
        named(&["A"], Assignment::SelfSelect { cap: Some(0) }),
        plan(
            BreakoutRooms::FromAttribute {
                from_attribute: "team".into(),
            },
            Assignment::Auto,
            None,
        ),
        plan(
            BreakoutRooms::Named(vec!["A".into()]),
            Assignment::Auto,
            Some(0),
        ),
    ];
    for cmd in cases {
        let err = run(&mut room, "host", cmd.clone(), 0).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument, "{cmd:?}: {err:?}");
    }
    assert_eq!(
        run(&mut room, "host", Command::OpenBreakouts, 0)
            .unwrap_err()
            .code,
        ErrorCode::Conflict
    );
    assert_eq!(
        run(
            &mut room,
            "host",
            Command::CloseBreakouts { countdown_s: None },
            0
        )
        .unwrap_err()
        .code,
        ErrorCode::Conflict
    );
}

#[test]
fn self_select_with_cap() {
    let mut room = room_with(&[
        ("host", Role::Host),
        ("ana", Role::Participant),
        ("ben", Role::Participant),
    ]);
    run(
        &mut room,
        "host",
        plan(
            BreakoutRooms::Named(vec!["A".into(), "B".into()]),
            Assignment::SelfSelect { cap: Some(1) },
            None,
        ),
        0,
    )
    .unwrap();
    assert_eq!(
        run(&mut room, "ana", Command::ChooseBreakout { breakout: 1 }, 0)
            .unwrap_err()
            .code,
        ErrorCode::Conflict
    );
    run(&mut room, "host", Command::OpenBreakouts, 0).unwrap();
    assert_eq!(
        room.member("ana").unwrap().breakout,
        None,
        "self-select starts unassigned"
    );
    run(&mut room, "ana", Command::ChooseBreakout { breakout: 1 }, 1).unwrap();
    assert_eq!(room.member("ana").unwrap().breakout, Some(1));
    assert_eq!(
        run(&mut room, "ben", Command::ChooseBreakout { breakout: 1 }, 2)
            .unwrap_err()
            .code,
        ErrorCode::Conflict
    );
    assert_eq!(
        run(&mut room, "ben", Command::ChooseBreakout { breakout: 9 }, 2)
            .unwrap_err()
            .code,
        ErrorCode::NotFound
    );
    run(&mut room, "ben", Command::ChooseBreakout { breakout: 2 }, 2).unwrap();
}

#[test]
fn self_select_only_when_the_plan_allows() {
    let mut room = room_with(&[("host", Role::Host), ("ana", Role::Participant)]);
    run(
        &mut room,
        "host",
        plan(
            BreakoutRooms::Named(vec!["A".into(), "B".into()]),
            Assignment::Auto,
            None,
        ),
        0,
    )
    .unwrap();
    run(&mut room, "host", Command::OpenBreakouts, 0).unwrap();
    assert_eq!(
        run(&mut room, "ana", Command::ChooseBreakout { breakout: 2 }, 1)
            .unwrap_err()
            .code,
        ErrorCode::Forbidden
    );
}

#[test]
fn auto_assignment_is_balanced_and_late_joiners_are_placed() {
    let mut room = room_with(&[("host", Role::Host)]);
    for i in 0..10 {
        room.join(joiner(&format!("p{i}"), Role::Participant), 0)
            .unwrap();
    }
    run(
        &mut room,
        "host",
        plan(
            BreakoutRooms::Named(vec!["A".into(), "B".into(), "C".into()]),
            Assignment::Auto,
            None,
        ),
        0,
    )
    .unwrap();
    run(&mut room, "host", Command::OpenBreakouts, 0).unwrap();
    let mut sizes = BTreeMap::new();
    for m in room.members().filter(|m| m.role == Role::Participant) {
        *sizes.entry(m.breakout.unwrap()).or_insert(0) += 1;
    }
    let (min, max) = (sizes.values().min().unwrap(), sizes.values().max().unwrap());
    assert!(max - min <= 1, "{sizes:?}");
    room.join(joiner("late", Role::Participant), 5).unwrap();
    assert!(room.member("late").unwrap().breakout.is_some());
}

#[test]
fn manual_plans_leave_late_joiners_unassigned_and_staff_can_move_people() {
    let mut room = room_with(&[("host", Role::Host), ("ana", Role::Participant)]);
    let manual = Assignment::Manual {
        assignments: BTreeMap::from([("ana".to_string(), "A".to_string())]),
    };
    run(
        &mut room,
        "host",
        plan(
            BreakoutRooms::Named(vec!["A".into(), "B".into()]),
            manual,
            None,
        ),
        0,
    )
    .unwrap();
    run(&mut room, "host", Command::OpenBreakouts, 0).unwrap();
    room.join(joiner("late", Role::Participant), 1).unwrap();
    assert_eq!(room.member("late").unwrap().breakout, None);
    assert_eq!(
        run(
            &mut room,
            "host",
            Command::AssignBreakout {
                identity: "ghost".into(),
                breakout: 1
            },
            2
        )
        .unwrap_err()
        .code,
        ErrorCode::InvalidArgument
    );
    let out = run(
        &mut room,
        "host",
        Command::AssignBreakout {
            identity: "late".into(),
            breakout: 2,
        },
        2,
    )
    .unwrap();
    assert!(out.events.iter().any(|e| matches!(
        e.body,
        RoomEvent::Moved {
            breakout: Some(2),
            ..
        }
    )));
    assert_eq!(room.member("late").unwrap().breakout, Some(2));
}

#[test]
fn a_member_returning_within_grace_stays_in_their_breakout() {
    let mut room = team_room(&[("a1", "Knox")]);
    run(&mut room, "mod", by_team(), 0).unwrap();
    run(&mut room, "mod", Command::OpenBreakouts, 0).unwrap();
    let place = room.member("a1").unwrap().breakout;
    room.connection_closed("a1", false, 1_000);
    room.join(with_team("a1", "Knox"), 2_000).unwrap();
    assert_eq!(room.member("a1").unwrap().breakout, place);
    assert_eq!(
        room.snapshot(&viewer(&room, "a1"))
            .breakouts
            .unwrap()
            .assignments
            .len(),
        1
    );
}

#[test]
fn moves_reach_both_the_old_and_the_new_breakout() {
    let mut room = team_room(&[("a1", "Knox"), ("a2", "Knox"), ("b1", "Blount")]);
    run(&mut room, "mod", by_team(), 0).unwrap();
    run(&mut room, "mod", Command::OpenBreakouts, 0).unwrap();
    let blount = room.member("b1").unwrap().breakout.unwrap();
    let a2_before = viewer(&room, "a2");
    let out = run(
        &mut room,
        "mod",
        Command::AssignBreakout {
            identity: "a1".into(),
            breakout: blount,
        },
        1,
    )
    .unwrap();
    let update = out
        .events
        .iter()
        .find(|e| matches!(e.body, RoomEvent::MemberUpdated { .. }))
        .unwrap();
    assert!(update.audience.includes(&a2_before));
    assert!(update.audience.includes(&viewer(&room, "b1")));
}

#[test]
fn member_visibility_without_allocation_matches_the_audience() {
    let mut room = room_with(&[
        ("host", Role::Host),
        ("mod", Role::Moderator),
        ("pres", Role::Presenter),
    ]);
    for (who, team) in [("a1", "A"), ("a2", "A"), ("b1", "B"), ("c1", "C")] {
        room.join(with_team(who, team), 1).unwrap();
    }
    run(
        &mut room,
        "host",
        Command::InviteToStage {
            identity: "c1".into(),
        },
        2,
    )
    .unwrap();
    run(&mut room, "host", by_team(), 3).unwrap();
    for (kind, opened) in [
        (RoomKind::Webcast, false),
        (RoomKind::Webcast, true),
        (RoomKind::Meeting, true),
    ] {
        room.settings.kind = kind;
        if opened && room.members().all(|m| m.breakout.is_none()) {
            run(&mut room, "host", Command::OpenBreakouts, 4).unwrap();
        }
        let everyone: Vec<Member> = room.members().cloned().collect();
        for looking in &everyone {
            let v = viewer(&room, &looking.identity);
            for m in &everyone {
                assert_eq!(
                    room.member_visible_to(m, &v),
                    room.member_audience(m).includes(&v),
                    "{kind:?}, breakouts open {opened}: {} looking at {}",
                    v.identity,
                    m.identity
                );
            }
        }
    }
}

#[test]
fn a_snapshot_lists_exactly_the_visible_members_in_identity_order() {
    let mut room = room_with(&[("host", Role::Host), ("zed", Role::Presenter)]);
    for who in ["ann", "bob", "mia", "yul"] {
        room.join(joiner(who, Role::Participant), 1).unwrap();
    }
    for who in ["ann", "mia", "yul"] {
        let v = viewer(&room, who);
        let expected: Vec<String> = room
            .members()
            .filter(|m| room.member_audience(m).includes(&v))
            .map(|m| m.identity.clone())
            .collect();
        let got: Vec<String> = room
            .snapshot(&v)
            .members
            .into_iter()
            .map(|m| m.identity)
            .collect();
        assert_eq!(got, expected);
        assert!(got.contains(&who.to_string()));
    }
}

#[test]
fn anyone_steps_off_the_stage_but_takes_no_one_else_off() {
    let mut room = room_with(&[
        ("host", Role::Host),
        ("ana", Role::Participant),
        ("ben", Role::Participant),
    ]);
    for who in ["ana", "ben"] {
        let cmd = Command::InviteToStage {
            identity: who.into(),
        };
        run(&mut room, "host", cmd, 1).unwrap();
    }
    // Ana declines the invitation; she may not take Ben off.
    let off = |identity: &str| Command::RemoveFromStage {
        identity: identity.into(),
    };
    let denied = run(&mut room, "ana", off("ben"), 2).unwrap_err();
    assert_eq!(denied.code, ErrorCode::Forbidden);
    run(&mut room, "ana", off("ana"), 3).unwrap();
    assert!(!room.member("ana").unwrap().on_stage);
    assert!(room.member("ben").unwrap().on_stage);
    assert!(!room.may_publish("ana"));
}

#[test]
fn polls_through_the_room_one_answer_each_results_hidden_until_shared() {
    let mut room = room_with(&[
        ("host", Role::Host),
        ("ana", Role::Participant),
        ("ben", Role::Participant),
    ]);
    let launch = Command::LaunchPoll {
        question: "Which session next?".into(),
        options: vec!["Coaching".into(), "Data use".into()],
        multiple: false,
        live_results: false,
    };
    assert_eq!(
        run(&mut room, "ana", launch.clone(), 1).unwrap_err().code,
        ErrorCode::Forbidden
    );
    let id = run(&mut room, "host", launch, 1).unwrap().created.unwrap();
    let vote = |choice: u32| Command::VotePoll {
        poll_id: id,
        choices: vec![choice],
    };
    run(&mut room, "ana", vote(0), 2).unwrap();
    run(&mut room, "ben", vote(1), 3).unwrap();
    run(&mut room, "ana", vote(1), 4).unwrap();
    let ana = room.snapshot(&viewer(&room, "ana"));
    assert_eq!(ana.polls[0].counts, None);
    assert_eq!(ana.my_poll_answers.get(&id), Some(&vec![1]));
    let host = room.snapshot(&viewer(&room, "host"));
    assert_eq!(host.polls[0].counts, Some(vec![0, 2]));
    run(&mut room, "host", Command::ClosePoll { poll_id: id }, 5).unwrap();
    run(
        &mut room,
        "host",
        Command::SharePollResults { poll_id: id },
        6,
    )
    .unwrap();
    let ben = room.snapshot(&viewer(&room, "ben"));
    assert_eq!(ben.polls[0].counts, Some(vec![0, 2]));
    assert_eq!(ben.polls[0].voters, Some(2));
}

#[test]
fn a_handled_help_request_reaches_staff_and_the_asker_only() {
    let mut room = team_room(&[("a1", "Knox"), ("b1", "Knox")]);
    run(&mut room, "mod", by_team(), 0).unwrap();
    run(&mut room, "mod", Command::OpenBreakouts, 0).unwrap();
    run(&mut room, "a1", Command::AskForHelp, 1).unwrap();
    let handle = Command::HandleHelp {
        identity: "a1".into(),
    };
    let denied = run(&mut room, "b1", handle.clone(), 2).unwrap_err();
    assert_eq!(denied.code, ErrorCode::Forbidden);
    let out = run(&mut room, "host", handle, 2).unwrap();
    assert_eq!(out.events[0].audience, Audience::staff_and("a1"));
    assert!(matches!(
        &out.events[0].body,
        RoomEvent::HelpHandled { identity, by_name } if identity == "a1" && by_name == "HOST"
    ));
    let nobody = Command::HandleHelp {
        identity: "nobody".into(),
    };
    assert_eq!(
        run(&mut room, "host", nobody, 3).unwrap_err().code,
        ErrorCode::NotFound
    );
}

#[test]
fn a_mover_gets_the_destinations_tracks_and_chat() {
    let mut room = room_with(&[("host", Role::Host)]);
    room.settings.kind = RoomKind::Meeting;
    for (who, team) in [("a1", "A"), ("a2", "A")] {
        room.join(with_team(who, team), 1).unwrap();
    }
    run(
        &mut room,
        "host",
        Command::SendChat {
            text: "welcome, all".into(),
        },
        2,
    )
    .unwrap();
    run(&mut room, "host", by_team(), 3).unwrap();
    run(&mut room, "host", Command::OpenBreakouts, 4).unwrap();
    room.track_published(Track {
        id: "t1".into(),
        publisher: "a1".into(),
        kind: convene_signaling::TrackKind::Video,
        source: convene_signaling::TrackSource::Camera,
        breakout: Some(1),
        layers: vec![],
    });
    // A visiting host finds a1's camera already there.
    let events = run(&mut room, "host", Command::JoinBreakout { breakout: 1 }, 5)
        .unwrap()
        .events;
    let tracks = events.iter().find_map(|e| match &e.body {
        RoomEvent::Moved { tracks, .. } => Some(tracks.clone()),
        _ => None,
    });
    assert_eq!(
        tracks
            .unwrap()
            .iter()
            .map(|t| t.id.as_str())
            .collect::<Vec<_>>(),
        ["t1"]
    );
    // Back in the main room, its chat history comes along.
    let events = run(
        &mut room,
        "host",
        Command::CloseBreakouts {
            countdown_s: Some(0),
        },
        6,
    )
    .unwrap()
    .events;
    let homecoming: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.body {
            RoomEvent::Moved {
                breakout: None,
                chat,
                ..
            } => Some(chat.iter().map(|m| m.text.as_str()).collect::<Vec<_>>()),
            _ => None,
        })
        .collect();
    assert_eq!(homecoming.len(), 3, "a1, a2 and the host return");
    assert!(
        homecoming.iter().all(|c| *c == ["welcome, all"]),
        "{homecoming:?}"
    );
}

#[test]
fn someone_who_left_a_breakout_may_go_back_to_it_only() {
    let mut room = team_room(&[("a1", "Knox"), ("b1", "Hamilton")]);
    run(&mut room, "mod", by_team(), 0).unwrap();
    run(&mut room, "mod", Command::OpenBreakouts, 0).unwrap();
    let knox = room.member("a1").unwrap().breakout.unwrap();
    let hamilton = room.member("b1").unwrap().breakout.unwrap();
    let choose = |breakout| Command::ChooseBreakout { breakout };
    // Still in it, or never left: no choosing under a by-team plan.
    let denied = run(&mut room, "b1", choose(knox), 1).unwrap_err();
    assert_eq!(denied.code, ErrorCode::Forbidden);
    run(&mut room, "a1", Command::LeaveBreakout, 2).unwrap();
    assert_eq!(room.member("a1").unwrap().breakout, None);
    let denied = run(&mut room, "a1", choose(hamilton), 3).unwrap_err();
    assert_eq!(
        denied.code,
        ErrorCode::Forbidden,
        "only back to where they were"
    );
    let out = run(&mut room, "a1", choose(knox), 4).unwrap();
    assert!(out
        .events
        .iter()
        .any(|e| matches!(e.body, RoomEvent::Moved { breakout: Some(b), .. } if b == knox)));
    assert_eq!(room.member("a1").unwrap().breakout, Some(knox));
}

#[test]
fn moderators_mute_one_persons_media_or_everyones_and_only_they_can_allow_it_again() {
    let mut room = room_with(&[
        ("host", Role::Host),
        ("mod", Role::Moderator),
        ("ana", Role::Participant),
        ("ben", Role::Participant),
    ]);
    room.settings.kind = RoomKind::Meeting;
    let mute = |identity: Option<&str>, muted| Command::MuteMedia {
        identity: identity.map(str::to_string),
        kind: convene_signaling::TrackKind::Audio,
        muted,
    };
    let denied = run(&mut room, "ana", mute(Some("ben"), true), 1).unwrap_err();
    assert_eq!(denied.code, ErrorCode::Forbidden);
    assert_eq!(
        run(&mut room, "mod", mute(Some("host"), true), 1)
            .unwrap_err()
            .code,
        ErrorCode::Forbidden,
        "staff are not muted by staff"
    );
    // One person: a member_updated naming the mute, with the media rights effect.
    let events = run(&mut room, "mod", mute(Some("ana"), true), 2)
        .unwrap()
        .events;
    match bodies(&events).as_slice() {
        [RoomEvent::MemberUpdated { member }] => {
            assert_eq!(
                member.media_muted,
                vec![convene_signaling::TrackKind::Audio]
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        room.media_muted("ana"),
        vec![convene_signaling::TrackKind::Audio]
    );
    // Everyone: one event for the room, however many people it mutes.
    let events = run(&mut room, "host", mute(None, true), 3).unwrap().events;
    match bodies(&events).as_slice() {
        [RoomEvent::MediaMuted {
            muted: true,
            identities,
            ..
        }] => assert_eq!(
            identities,
            &vec!["ben".to_string()],
            "ana was already muted"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(events[0].audience, Audience::Everyone);
    assert!(room.media_muted("mod").is_empty());
    // A muted person cannot lift it themselves; a moderator allows it again.
    assert!(run(&mut room, "ana", mute(Some("ana"), false), 4).is_err());
    run(&mut room, "mod", mute(Some("ana"), false), 5).unwrap();
    assert!(room.media_muted("ana").is_empty());
}
