//! Breakout rooms over real sockets: a by-team peer exchange from plan to close, resume inside a
//! breakout, late joiners, bad input and the timers.
//!
//! Negative checks ("the main room did not hear it") are exact rather than timed: the host sends a
//! marker that reaches everyone (a broadcast to breakouts, or main-room chat before they open), and
//! since every session receives the room's events in `seq` order, whatever a client was allowed to
//! see of the step before arrived ahead of the marker.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{by_team, Client, TestServer};
use convene_signaling::{
    Assignment, BreakoutId, BreakoutPhase, BreakoutPlan, BreakoutRooms, Command, ErrorCode,
    Presence, Role, RoomEvent, ServerMessage,
};
use futures_util::future::join_all;

const ROOM: &str = "exchange";
const TEAMS: [&str; 5] = [
    "Knox County",
    "Shelby County",
    "Davidson County",
    "Hamilton County",
    "Madison County",
];
const PER_TEAM: usize = 6;

/// The per-session command buckets have their own tests; a scripted session should not trip them.
async fn roomy_server() -> TestServer {
    TestServer::start_with(|c| {
        c.limits.rate.chat.burst = 1000;
        c.limits.rate.hands.burst = 1000;
        c.limits.rate.other.burst = 1000;
    })
    .await
}

fn named(rooms: &[&str], assignment: Assignment, duration_s: Option<u32>) -> BreakoutPlan {
    BreakoutPlan {
        rooms: BreakoutRooms::Named(rooms.iter().map(|r| r.to_string()).collect()),
        assignment,
        duration_s,
        allow_leave: true,
    }
}

/// A participant of the exchange: identity, team and socket.
struct Person {
    identity: String,
    team: String,
    client: Client,
}

fn slug(team: &str) -> String {
    team.split_whitespace().next().unwrap().to_lowercase()
}

/// Everything `client` receives before the marker (a broadcast or a chat message with this text).
async fn until_marker(client: &mut Client, marker: &str) -> Vec<RoomEvent> {
    let mut seen = Vec::new();
    loop {
        if let ServerMessage::Event { event, .. } = client.recv().await {
            match &event {
                RoomEvent::BreakoutBroadcast { text, .. } if text == marker => return seen,
                RoomEvent::ChatMessage { message } if message.text == marker => return seen,
                _ => seen.push(event),
            }
        }
    }
}

/// Every event before `breakouts_closed` (which is consumed).
async fn until_closed(client: &mut Client) -> Vec<RoomEvent> {
    let mut events = Vec::new();
    loop {
        match client.recv().await {
            ServerMessage::Event {
                event: RoomEvent::BreakoutsClosed,
                ..
            } => return events,
            ServerMessage::Event { event, .. } => events.push(event),
            _ => {}
        }
    }
}

/// The texts of the chat messages among `events`.
fn chats(events: &[RoomEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            RoomEvent::ChatMessage { message } => Some(message.text.clone()),
            _ => None,
        })
        .collect()
}

struct Exchange {
    host: Client,
    moderator: Client,
    people: Vec<Person>,
    markers: u32,
}

impl Exchange {
    fn person(&mut self, identity: &str) -> &mut Client {
        &mut self
            .people
            .iter_mut()
            .find(|p| p.identity == identity)
            .unwrap_or_else(|| panic!("no {identity}"))
            .client
    }

    /// The host broadcasts a marker to every breakout (and the main room); returns what each
    /// participant, then the host and the moderator, received before it.
    async fn marker(
        &mut self,
    ) -> (
        BTreeMap<String, Vec<RoomEvent>>,
        Vec<RoomEvent>,
        Vec<RoomEvent>,
    ) {
        self.markers += 1;
        let text = format!("marker {}", self.markers);
        self.host
            .ok(Command::BroadcastToBreakouts { text: text.clone() })
            .await;
        let mut seen = BTreeMap::new();
        for p in &mut self.people {
            seen.insert(p.identity.clone(), until_marker(&mut p.client, &text).await);
        }
        let host = until_marker(&mut self.host, &text).await;
        let moderator = until_marker(&mut self.moderator, &text).await;
        (seen, host, moderator)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_exchange_by_team_from_plan_to_close() {
    let t = roomy_server().await;
    let mut host = t.join(ROOM, Role::Host, "host").await;
    let moderator = t.join(ROOM, Role::Moderator, "mod").await;
    let roster: Vec<(String, &str)> = TEAMS
        .iter()
        .flat_map(|team| (0..PER_TEAM).map(move |i| (format!("{}{i}", slug(team)), *team)))
        .collect();
    let server = &t;
    let clients = join_all(roster.iter().map(|(identity, team)| async move {
        server
            .join_with(ROOM, Role::Participant, identity, &[("team", team)])
            .await
    }))
    .await;
    let people: Vec<Person> = roster
        .iter()
        .zip(clients)
        .map(|((identity, team), client)| Person {
            identity: identity.clone(),
            team: team.to_string(),
            client,
        })
        .collect();
    assert_eq!(people.len(), 30);

    // The plan: one room per team, everyone placed by their team.
    host.ok(Command::SetBreakoutPlan {
        plan: by_team(Some(600)),
    })
    .await;
    let plan = match host
        .expect_event(|e| matches!(e, RoomEvent::BreakoutsUpdated { .. }))
        .await
    {
        RoomEvent::BreakoutsUpdated { breakouts: Some(b) } => b,
        other => panic!("{other:?}"),
    };
    assert_eq!(plan.phase, BreakoutPhase::Draft);
    let mut names: Vec<&str> = TEAMS.to_vec();
    names.sort();
    assert_eq!(
        plan.rooms
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        names
    );
    let room_of: BTreeMap<String, BreakoutId> =
        plan.rooms.iter().map(|r| (r.name.clone(), r.id)).collect();
    assert_eq!(plan.assignments.len(), 30, "staff see every assignment");
    for p in &people {
        assert_eq!(
            plan.assignments[&p.identity], room_of[&p.team],
            "{}",
            p.identity
        );
    }
    let mut x = Exchange {
        host,
        moderator,
        people,
        markers: 0,
    };
    // Participants see the rooms, but not where everyone else goes.
    for p in &mut x.people {
        match p
            .client
            .expect_event(|e| matches!(e, RoomEvent::BreakoutsUpdated { .. }))
            .await
        {
            RoomEvent::BreakoutsUpdated { breakouts: Some(b) } => {
                assert_eq!(b.rooms, plan.rooms);
                assert!(
                    b.assignments.keys().all(|k| *k == p.identity),
                    "{}: {:?}",
                    p.identity,
                    b.assignments
                );
            }
            other => panic!("{other:?}"),
        }
    }

    // Open: each participant is moved to their team's room, named after it, with the end time.
    x.host.ok(Command::OpenBreakouts).await;
    let mut ends = BTreeSet::new();
    for p in &mut x.people {
        match p
            .client
            .expect_event(|e| matches!(e, RoomEvent::Moved { .. }))
            .await
        {
            RoomEvent::Moved {
                from,
                breakout,
                name,
                ends_at,
                ..
            } => {
                assert_eq!(
                    (from, breakout, name.as_str()),
                    (None, Some(room_of[&p.team]), p.team.as_str()),
                    "{}",
                    p.identity
                );
                ends.insert(ends_at.expect("a timed plan has an end"));
            }
            _ => unreachable!(),
        }
    }
    assert_eq!(ends.len(), 1, "one end time for all: {ends:?}");
    let (knox, shelby, davidson) = (
        room_of["Knox County"],
        room_of["Shelby County"],
        room_of["Davidson County"],
    );

    // Chat in one breakout reaches its members only; the host's broadcast reaches all 30.
    x.person("knox0")
        .ok(Command::SendChat {
            text: "hello knox".into(),
        })
        .await;
    let (seen, host, moderator) = x.marker().await;
    for p in &x.people {
        let want: Vec<String> = if p.team == "Knox County" {
            vec!["hello knox".into()]
        } else {
            vec![]
        };
        assert_eq!(chats(&seen[&p.identity]), want, "{}", p.identity);
        if let Some(RoomEvent::ChatMessage { message }) = seen[&p.identity]
            .iter()
            .find(|e| matches!(e, RoomEvent::ChatMessage { .. }))
        {
            assert_eq!(
                (message.from.as_str(), message.breakout),
                ("knox0", Some(knox))
            );
        }
    }
    assert!(
        chats(&host).is_empty() && chats(&moderator).is_empty(),
        "the main room heard breakout chat"
    );
    // (The marker itself was the broadcast: every participant got it, from the host.)
    x.host
        .ok(Command::BroadcastToBreakouts {
            text: "Five minutes left".into(),
        })
        .await;
    for p in &mut x.people {
        let got = p
            .client
            .expect_event(|e| matches!(e, RoomEvent::BreakoutBroadcast { .. }))
            .await;
        assert_eq!(
            got,
            RoomEvent::BreakoutBroadcast {
                from: "HOST".into(),
                text: "Five minutes left".into()
            },
            "{}",
            p.identity
        );
    }

    // Asking for help reaches the host and the moderator, with the breakout's name; no participant.
    x.person("shelby2").ok(Command::AskForHelp).await;
    let help = RoomEvent::HelpRequested {
        identity: "shelby2".into(),
        name: "SHELBY2".into(),
        breakout: shelby,
        breakout_name: "Shelby County".into(),
    };
    let (seen, host, moderator) = x.marker().await;
    assert_eq!(host.iter().filter(|e| **e == help).count(), 1, "{host:?}");
    assert_eq!(
        moderator.iter().filter(|e| **e == help).count(),
        1,
        "{moderator:?}"
    );
    for (who, events) in &seen {
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, RoomEvent::HelpRequested { .. })),
            "{who} saw a help request"
        );
    }

    // The moderator visits Shelby as facilitator: hears and is heard there only, then leaves.
    x.moderator
        .ok(Command::JoinBreakout { breakout: shelby })
        .await;
    let moved = x
        .moderator
        .expect_event(|e| matches!(e, RoomEvent::Moved { .. }))
        .await;
    assert_eq!(
        bare(moved),
        RoomEvent::Moved {
            from: None,
            breakout: Some(shelby),
            name: "Shelby County".into(),
            ends_at: ends.first().copied(),
            members: vec![],
            tracks: vec![],
            chat: vec![],
        }
    );
    x.moderator
        .ok(Command::SendChat {
            text: "facilitator here".into(),
        })
        .await;
    x.person("shelby0")
        .ok(Command::SendChat {
            text: "welcome, facilitator".into(),
        })
        .await;
    let (seen, host, moderator) = x.marker().await;
    for p in &x.people {
        let want: Vec<String> = if p.team == "Shelby County" {
            vec!["facilitator here".into(), "welcome, facilitator".into()]
        } else {
            vec![]
        };
        assert_eq!(chats(&seen[&p.identity]), want, "{}", p.identity);
    }
    assert_eq!(
        chats(&moderator),
        vec!["facilitator here", "welcome, facilitator"]
    );
    assert!(chats(&host).is_empty());
    assert!(
        seen["shelby1"].iter().any(|e| matches!(e, RoomEvent::MemberUpdated { member } if member.identity == "mod" && member.facilitator && member.breakout == Some(shelby))),
        "Shelby sees its facilitator arrive: {:?}",
        seen["shelby1"]
    );
    x.moderator.ok(Command::LeaveBreakout).await;
    let moved = x
        .moderator
        .expect_event(|e| matches!(e, RoomEvent::Moved { .. }))
        .await;
    assert_eq!(
        bare(moved),
        RoomEvent::Moved {
            from: Some(shelby),
            breakout: None,
            name: "Main room".into(),
            ends_at: None,
            members: vec![],
            tracks: vec![],
            chat: vec![],
        }
    );
    x.person("shelby0")
        .ok(Command::SendChat {
            text: "after the visit".into(),
        })
        .await;
    let (seen, _, moderator) = x.marker().await;
    assert!(
        chats(&moderator).is_empty(),
        "the moderator left but still hears Shelby: {moderator:?}"
    );
    assert_eq!(chats(&seen["shelby5"]), vec!["after the visit"]);

    // A participant drops inside Davidson and resumes there: the replay has Davidson's chat only.
    let dropped = x
        .people
        .iter()
        .position(|p| p.identity == "davidson0")
        .unwrap();
    let person = x.people.remove(dropped);
    let (token, session_id, last_seq) = person.client.drop_connection();
    x.host
        .expect_event(|e| matches!(e, RoomEvent::MemberUpdated { member } if member.identity == "davidson0" && member.presence == Presence::Reconnecting))
        .await;
    x.person("davidson1")
        .ok(Command::SendChat {
            text: "while you were away".into(),
        })
        .await;
    x.person("knox1")
        .ok(Command::SendChat {
            text: "knox only".into(),
        })
        .await;
    x.marker().await;
    let marker = format!("marker {}", x.markers);
    let (mut client, first) = t.resume(&token, &session_id, last_seq).await;
    match first {
        ServerMessage::Resumed {
            session_id: resumed,
            last_seq: from,
            ..
        } => assert_eq!((resumed, from), (session_id, last_seq)),
        other => panic!("expected resumed, got {other:?}"),
    }
    let replay = until_marker(&mut client, &marker).await;
    assert_eq!(chats(&replay), vec!["while you were away"], "{replay:?}");
    x.people.push(Person {
        identity: "davidson0".into(),
        team: "Davidson County".into(),
        client,
    });
    // ...and what they say afterwards stays in Davidson.
    x.person("davidson0")
        .ok(Command::SendChat {
            text: "back again".into(),
        })
        .await;
    let (seen, host, moderator) = x.marker().await;
    for p in &x.people {
        let want: Vec<String> = if p.team == "Davidson County" {
            vec!["back again".into()]
        } else {
            vec![]
        };
        assert_eq!(chats(&seen[&p.identity]), want, "{}", p.identity);
    }
    assert!(chats(&host).is_empty() && chats(&moderator).is_empty());
    assert!(
        seen["davidson2"].iter().any(|e| matches!(e, RoomEvent::MemberUpdated { member } if member.identity == "davidson0" && member.presence == Presence::Online && member.breakout == Some(davidson))),
        "Davidson sees davidson0 back: {:?}",
        seen["davidson2"]
    );

    // Late joiners are placed by team: an existing room, or a new one for a new team.
    let late = t
        .join_with(
            ROOM,
            Role::Participant,
            "knox-late",
            &[("team", "Knox County")],
        )
        .await;
    let snapshot = late.snapshot();
    let you = match late.welcome.as_ref().unwrap() {
        ServerMessage::Welcome { you, .. } => you.clone(),
        _ => unreachable!(),
    };
    assert_eq!(you.breakout, Some(knox));
    assert_eq!(
        chats(
            &snapshot
                .chat
                .iter()
                .map(|m| RoomEvent::ChatMessage { message: m.clone() })
                .collect::<Vec<_>>()
        ),
        vec!["hello knox", "knox only"],
        "Knox's history, nothing from elsewhere"
    );
    let b = snapshot
        .breakouts
        .as_ref()
        .expect("breakouts in the snapshot");
    assert_eq!(b.phase, BreakoutPhase::Open);
    assert_eq!(
        b.assignments,
        BTreeMap::from([("knox-late".to_string(), knox)])
    );
    x.person("knox3")
        .expect_event(|e| matches!(e, RoomEvent::MemberJoined { member } if member.identity == "knox-late" && member.breakout == Some(knox)))
        .await;
    let newcomer = t
        .join_with(
            ROOM,
            Role::Participant,
            "rutherford0",
            &[("team", "Rutherford County")],
        )
        .await;
    let placed = match newcomer.welcome.as_ref().unwrap() {
        ServerMessage::Welcome { you, .. } => you.breakout.expect("placed in a new room"),
        _ => unreachable!(),
    };
    assert!(
        !room_of.values().any(|id| *id == placed),
        "a new team gets a new room"
    );
    let rooms = &newcomer.snapshot().breakouts.as_ref().unwrap().rooms;
    assert!(
        rooms
            .iter()
            .any(|r| r.id == placed && r.name == "Rutherford County"),
        "{rooms:?}"
    );
    x.people.push(Person {
        identity: "knox-late".into(),
        team: "Knox County".into(),
        client: late,
    });
    x.people.push(Person {
        identity: "rutherford0".into(),
        team: "Rutherford County".into(),
        client: newcomer,
    });
    x.person("knox-late")
        .ok(Command::SendChat {
            text: "late hello".into(),
        })
        .await;
    let (seen, host, _) = x.marker().await;
    for p in &x.people {
        let want: Vec<String> = if p.team == "Knox County" {
            vec!["late hello".into()]
        } else {
            vec![]
        };
        assert_eq!(chats(&seen[&p.identity]), want, "{}", p.identity);
    }
    assert!(chats(&host).is_empty());

    // A raised hand and a stage invitation inside breakouts; both reset on the way back.
    x.person("knox2").ok(Command::RaiseHand).await;
    x.moderator
        .ok(Command::InviteToStage {
            identity: "shelby3".into(),
        })
        .await;
    x.host.expect_event(|e| matches!(e, RoomEvent::MemberUpdated { member } if member.identity == "knox2" && member.hand_raised)).await;
    x.host.expect_event(|e| matches!(e, RoomEvent::MemberUpdated { member } if member.identity == "shelby3" && member.on_stage)).await;

    // Close with a one-second countdown: everyone is told, then everyone returns.
    x.host
        .ok(Command::CloseBreakouts {
            countdown_s: Some(1),
        })
        .await;
    let mut closing_at = BTreeSet::new();
    for p in &mut x.people {
        let events = until_closed(&mut p.client).await;
        let closing = events
            .iter()
            .position(|e| matches!(e, RoomEvent::BreakoutsClosing { .. }))
            .unwrap_or_else(|| panic!("{}: no closing notice in {events:?}", p.identity));
        if let RoomEvent::BreakoutsClosing { closes_at } = &events[closing] {
            closing_at.insert(*closes_at);
        }
        let moves: Vec<_> = events
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(e, RoomEvent::Moved { .. }))
            .collect();
        let home = RoomEvent::Moved {
            from: Some(room_of.get(&p.team).copied().unwrap_or(placed)),
            breakout: None,
            name: "Main room".into(),
            ends_at: None,
            members: vec![],
            tracks: vec![],
            chat: vec![],
        };
        match moves.as_slice() {
            [(i, moved)] => {
                assert!(
                    *i > closing,
                    "{}: moved before the closing notice",
                    p.identity
                );
                assert_eq!(bare((*moved).clone()), home, "{}", p.identity);
            }
            other => panic!("{}: expected one move home, got {other:?}", p.identity),
        }
    }
    for staff in [&mut x.host, &mut x.moderator] {
        let events = until_closed(staff).await;
        assert!(events
            .iter()
            .any(|e| matches!(e, RoomEvent::BreakoutsClosing { .. })));
        assert!(
            !events.iter().any(|e| matches!(e, RoomEvent::Moved { .. })),
            "staff in the main room do not move"
        );
    }
    assert_eq!(closing_at.len(), 1, "{closing_at:?}");
    // A fresh staff view: no breakouts, everyone in the main room, hand and stage reset.
    let snapshot = t
        .join(ROOM, Role::Moderator, "auditor")
        .await
        .snapshot()
        .clone();
    assert!(snapshot.breakouts.is_none());
    for m in &snapshot.members {
        assert_eq!((m.breakout, m.facilitator), (None, false), "{}", m.identity);
    }
    let knox2 = snapshot
        .members
        .iter()
        .find(|m| m.identity == "knox2")
        .unwrap();
    let shelby3 = snapshot
        .members
        .iter()
        .find(|m| m.identity == "shelby3")
        .unwrap();
    assert!(!knox2.hand_raised, "hand kept after close");
    assert!(!shelby3.on_stage, "stage kept after close");

    // Back in the main room, they hear each other again.
    x.person("knox0")
        .ok(Command::SendChat {
            text: "back in main".into(),
        })
        .await;
    x.markers += 1;
    let text = format!("marker {}", x.markers);
    x.host.ok(Command::SendChat { text: text.clone() }).await;
    for p in &mut x.people {
        let events = until_marker(&mut p.client, &text).await;
        assert_eq!(chats(&events), vec!["back in main"], "{}", p.identity);
    }
}

/// A `moved` without what it carries along (roster, tracks, chat), to compare where it leads.
fn bare(event: RoomEvent) -> RoomEvent {
    match event {
        RoomEvent::Moved {
            from,
            breakout,
            name,
            ends_at,
            ..
        } => RoomEvent::Moved {
            from,
            breakout,
            name,
            ends_at,
            members: vec![],
            tracks: vec![],
            chat: vec![],
        },
        other => other,
    }
}

#[tokio::test]
async fn bad_breakout_commands_are_refused_clearly_and_change_nothing() {
    let t = roomy_server().await;
    let mut host = t.join(ROOM, Role::Host, "host").await;
    let mut moderator = t.join(ROOM, Role::Moderator, "mod").await;
    let mut ana = t
        .join_with(ROOM, Role::Participant, "ana", &[("team", "Knox County")])
        .await;
    let mut ben = t
        .join_with(ROOM, Role::Participant, "ben", &[("team", "Shelby County")])
        .await;
    let mut cleo = t.join(ROOM, Role::Participant, "cleo").await;

    let plan = |plan: BreakoutPlan| Command::SetBreakoutPlan { plan };
    let manual = |pairs: &[(&str, &str)]| Assignment::Manual {
        assignments: pairs
            .iter()
            .map(|(i, r)| (i.to_string(), r.to_string()))
            .collect(),
    };
    let host_cases = [
        (
            plan(named(&[], Assignment::Auto, None)),
            ErrorCode::InvalidArgument,
            "at least one room",
        ),
        (
            plan(named(&["Red", " red "], Assignment::Auto, None)),
            ErrorCode::InvalidArgument,
            "duplicate",
        ),
        (
            plan(named(&["Red", "  "], Assignment::Auto, None)),
            ErrorCode::InvalidArgument,
            "empty",
        ),
        (
            plan(BreakoutPlan {
                rooms: BreakoutRooms::FromAttribute {
                    from_attribute: "grade".into(),
                },
                ..by_team(None)
            }),
            ErrorCode::InvalidArgument,
            "grade",
        ),
        (
            plan(named(
                &["Red"],
                manual(&[("ana", "Red"), ("ghost", "Red")]),
                None,
            )),
            ErrorCode::InvalidArgument,
            "ghost",
        ),
        (
            plan(named(&["Red"], manual(&[("ana", "Blue")]), None)),
            ErrorCode::InvalidArgument,
            "blue",
        ),
        (
            plan(named(&["Red"], Assignment::Auto, Some(0))),
            ErrorCode::InvalidArgument,
            "duration",
        ),
        (
            plan(named(
                &["Red"],
                Assignment::SelfSelect { cap: Some(0) },
                None,
            )),
            ErrorCode::InvalidArgument,
            "cap",
        ),
        (Command::OpenBreakouts, ErrorCode::Conflict, "plan"),
        (
            Command::CloseBreakouts { countdown_s: None },
            ErrorCode::Conflict,
            "not open",
        ),
        (
            Command::BroadcastToBreakouts {
                text: "anyone?".into(),
            },
            ErrorCode::Conflict,
            "not open",
        ),
        (
            Command::JoinBreakout { breakout: 1 },
            ErrorCode::Conflict,
            "not open",
        ),
        (
            Command::AssignBreakout {
                identity: "ana".into(),
                breakout: 1,
            },
            ErrorCode::Conflict,
            "plan",
        ),
    ];
    for (cmd, code, hint) in host_cases {
        let (got, message) = host.refused(cmd.clone()).await;
        assert_eq!(got, code, "{cmd:?}: {message}");
        assert!(
            message.to_lowercase().contains(hint),
            "{cmd:?}: {message:?} should mention {hint:?}"
        );
    }
    let participant_cases = [
        plan(named(&["Red"], Assignment::Auto, None)),
        Command::OpenBreakouts,
        Command::CloseBreakouts {
            countdown_s: Some(0),
        },
        Command::AssignBreakout {
            identity: "ben".into(),
            breakout: 1,
        },
        Command::JoinBreakout { breakout: 1 },
        Command::BroadcastToBreakouts {
            text: "hi all".into(),
        },
    ];
    for cmd in participant_cases {
        let (code, message) = ana.refused(cmd.clone()).await;
        assert_eq!(code, ErrorCode::Forbidden, "{cmd:?}: {message}");
    }
    // Nobody heard of any of it, and there is still no plan.
    host.ok(Command::SendChat {
        text: "sync 1".into(),
    })
    .await;
    for (who, c) in [
        ("host", &mut host),
        ("mod", &mut moderator),
        ("ana", &mut ana),
        ("ben", &mut ben),
        ("cleo", &mut cleo),
    ] {
        let events = until_marker(c, "sync 1").await;
        assert!(
            !events.iter().any(|e| matches!(
                e,
                RoomEvent::BreakoutsUpdated { .. } | RoomEvent::Moved { .. }
            )),
            "{who}: {events:?}"
        );
    }
    assert!(t
        .join(ROOM, Role::Moderator, "auditor")
        .await
        .snapshot()
        .breakouts
        .is_none());

    // Self-select with a cap of one per room.
    host.ok(plan(named(
        &["Red", "Blue"],
        Assignment::SelfSelect { cap: Some(1) },
        None,
    )))
    .await;
    let (code, _) = ana.refused(Command::ChooseBreakout { breakout: 1 }).await;
    assert_eq!(
        code,
        ErrorCode::Conflict,
        "choosing before the breakouts open"
    );
    host.ok(Command::OpenBreakouts).await;
    let (code, message) = host.refused(Command::OpenBreakouts).await;
    assert_eq!(
        (code, message.contains("already open")),
        (ErrorCode::Conflict, true),
        "{message}"
    );
    let (code, message) = host
        .refused(plan(named(&["Green"], Assignment::Auto, None)))
        .await;
    assert_eq!(code, ErrorCode::Conflict, "{message}");
    ana.ok(Command::ChooseBreakout { breakout: 1 }).await;
    let moved = ana
        .expect_event(|e| matches!(e, RoomEvent::Moved { .. }))
        .await;
    assert_eq!(
        bare(moved),
        RoomEvent::Moved {
            from: None,
            breakout: Some(1),
            name: "Red".into(),
            ends_at: None,
            members: vec![],
            tracks: vec![],
            chat: vec![],
        }
    );
    let (code, message) = ben.refused(Command::ChooseBreakout { breakout: 1 }).await;
    assert_eq!(code, ErrorCode::Conflict, "{message}");
    assert!(
        message.contains("Red") && message.contains("full"),
        "{message}"
    );
    let (code, message) = ben.refused(Command::ChooseBreakout { breakout: 99 }).await;
    assert_eq!(code, ErrorCode::NotFound, "{message}");
    let (code, _) = moderator
        .refused(Command::ChooseBreakout { breakout: 2 })
        .await;
    assert_eq!(
        code,
        ErrorCode::InvalidArgument,
        "staff visit with join_breakout"
    );
    let (code, _) = moderator
        .refused(Command::JoinBreakout { breakout: 99 })
        .await;
    assert_eq!(code, ErrorCode::NotFound);
    let (code, _) = cleo.refused(Command::AskForHelp).await;
    assert_eq!(
        code,
        ErrorCode::NotInRoom,
        "help is asked from inside a breakout"
    );
    let (code, _) = cleo.refused(Command::LeaveBreakout).await;
    assert_eq!(code, ErrorCode::NotInRoom);
    // ben was not moved; only ana sits in Red.
    host.ok(Command::BroadcastToBreakouts {
        text: "sync 2".into(),
    })
    .await;
    for (who, c) in [
        ("ben", &mut ben),
        ("cleo", &mut cleo),
        ("mod", &mut moderator),
    ] {
        let events = until_marker(c, "sync 2").await;
        assert!(
            !events.iter().any(|e| matches!(e, RoomEvent::Moved { .. })),
            "{who}: {events:?}"
        );
    }
    let snapshot = t
        .join(ROOM, Role::Moderator, "auditor2")
        .await
        .snapshot()
        .clone();
    assert_eq!(
        snapshot.breakouts.as_ref().unwrap().assignments,
        BTreeMap::from([("ana".to_string(), 1)])
    );
    assert_eq!(
        snapshot
            .members
            .iter()
            .find(|m| m.identity == "ben")
            .unwrap()
            .breakout,
        None
    );

    // Closing: participants may not; twice is a conflict; a zero countdown closes at once.
    let (code, _) = ana
        .refused(Command::CloseBreakouts {
            countdown_s: Some(0),
        })
        .await;
    assert_eq!(code, ErrorCode::Forbidden);
    let (code, message) = host
        .refused(Command::CloseBreakouts {
            countdown_s: Some(7200),
        })
        .await;
    assert_eq!(code, ErrorCode::InvalidArgument, "{message}");
    host.ok(Command::CloseBreakouts {
        countdown_s: Some(0),
    })
    .await;
    ana.expect_event(|e| {
        bare(e.clone())
            == RoomEvent::Moved {
                from: Some(1),
                breakout: None,
                name: "Main room".into(),
                ends_at: None,
                members: vec![],
                tracks: vec![],
                chat: vec![],
            }
    })
    .await;
    let (code, message) = host
        .refused(Command::CloseBreakouts { countdown_s: None })
        .await;
    assert_eq!(
        (code, message.contains("not open")),
        (ErrorCode::Conflict, true),
        "{message}"
    );

    // A plan that assigns automatically does not let participants choose.
    host.ok(plan(named(&["Red", "Blue"], Assignment::Auto, None)))
        .await;
    host.ok(Command::OpenBreakouts).await;
    let (code, message) = ana.refused(Command::ChooseBreakout { breakout: 2 }).await;
    assert_eq!(code, ErrorCode::Forbidden, "{message}");
    assert!(message.contains("choose"), "{message}");
    host.ok(Command::CloseBreakouts {
        countdown_s: Some(60),
    })
    .await;
    let (code, message) = host
        .refused(Command::CloseBreakouts {
            countdown_s: Some(1),
        })
        .await;
    assert_eq!(
        (code, message.contains("already closing")),
        (ErrorCode::Conflict, true),
        "{message}"
    );
}

#[tokio::test]
async fn a_timed_breakout_warns_then_counts_down_to_its_end() {
    let t = TestServer::start_with(|c| {
        c.limits.breakout_warning_s = 1;
        c.limits.breakout_close_countdown_s = 1;
    })
    .await;
    let mut host = t.join(ROOM, Role::Host, "host").await;
    let mut people = Vec::new();
    for i in 0..4 {
        people.push(t.join(ROOM, Role::Participant, &format!("p{i}")).await);
    }
    host.ok(Command::SetBreakoutPlan {
        plan: named(&["Red", "Blue"], Assignment::Auto, Some(2)),
    })
    .await;
    host.ok(Command::OpenBreakouts).await;
    let mut placed = BTreeMap::<BreakoutId, usize>::new();
    let mut ends = BTreeSet::new();
    for p in &mut people {
        match p
            .expect_event(|e| matches!(e, RoomEvent::Moved { .. }))
            .await
        {
            RoomEvent::Moved {
                breakout: Some(id),
                ends_at: Some(end),
                ..
            } => {
                *placed.entry(id).or_default() += 1;
                ends.insert(end);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        placed,
        BTreeMap::from([(1, 2), (2, 2)]),
        "auto assignment is balanced"
    );
    assert_eq!(ends.len(), 1);
    let ends_at = *ends.first().unwrap();

    // Warning, then the closing countdown ending with the timer, then everyone is home.
    for (p, staff) in people
        .iter_mut()
        .map(|p| (p, false))
        .chain([(&mut host, true)])
    {
        let events = until_closed(p).await;
        let timeline: Vec<&RoomEvent> = events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    RoomEvent::BreakoutWarning { .. }
                        | RoomEvent::BreakoutsClosing { .. }
                        | RoomEvent::Moved { .. }
                )
            })
            .collect();
        match timeline.as_slice() {
            [RoomEvent::BreakoutWarning { ends_at: warned }, RoomEvent::BreakoutsClosing { closes_at }, rest @ ..] =>
            {
                assert_eq!(*warned, ends_at);
                assert_eq!(
                    *closes_at, ends_at,
                    "the countdown runs within the timer: its end is the close"
                );
                if staff {
                    assert!(rest.is_empty(), "{rest:?}");
                } else {
                    assert!(
                        matches!(
                            rest,
                            [RoomEvent::Moved {
                                breakout: None,
                                ends_at: None,
                                ..
                            }]
                        ),
                        "{rest:?}"
                    );
                }
            }
            other => panic!("expected warning, closing, moved home: {other:?}"),
        }
    }
    assert!(t
        .join(ROOM, Role::Participant, "late")
        .await
        .snapshot()
        .breakouts
        .is_none());
}

/// Someone whose connection dropped in the main room is moved while away: the replay takes them
/// along, with the main room's chat before the move and their breakout's after it.
#[tokio::test]
async fn resume_follows_a_move_made_while_away() {
    let t = roomy_server().await;
    let mut host = t.join(ROOM, Role::Host, "host").await;
    let p0 = t.join(ROOM, Role::Participant, "p0").await;
    let mut p1 = t.join(ROOM, Role::Participant, "p1").await;
    let mut p2 = t.join(ROOM, Role::Participant, "p2").await;
    let assignments = Assignment::Manual {
        assignments: [("p0", "Red"), ("p1", "Red"), ("p2", "Blue")]
            .iter()
            .map(|(i, r)| (i.to_string(), r.to_string()))
            .collect(),
    };
    host.ok(Command::SetBreakoutPlan {
        plan: named(&["Red", "Blue"], assignments, None),
    })
    .await;
    // A participant's view of a manual plan holds no one else's assignment: the map would
    // reveal who else is in a webcast.
    let plan = p1
        .expect_event(|e| matches!(e, RoomEvent::BreakoutsUpdated { .. }))
        .await;
    let RoomEvent::BreakoutsUpdated {
        breakouts: Some(breakouts),
    } = plan
    else {
        panic!("{plan:?}")
    };
    let Assignment::Manual { assignments } = &breakouts.plan.assignment else {
        panic!("{breakouts:?}")
    };
    assert!(
        assignments.keys().all(|who| who == "p1"),
        "others' assignments leaked: {assignments:?}"
    );
    let (token, session_id, last_seq) = p0.drop_connection();
    host.expect_event(|e| matches!(e, RoomEvent::MemberUpdated { member } if member.identity == "p0" && member.presence == Presence::Reconnecting)).await;

    host.ok(Command::SendChat {
        text: "main before".into(),
    })
    .await;
    host.ok(Command::OpenBreakouts).await;
    p1.expect_event(|e| {
        matches!(
            e,
            RoomEvent::Moved {
                breakout: Some(1),
                ..
            }
        )
    })
    .await;
    p2.expect_event(|e| {
        matches!(
            e,
            RoomEvent::Moved {
                breakout: Some(2),
                ..
            }
        )
    })
    .await;
    p1.ok(Command::SendChat {
        text: "red chat".into(),
    })
    .await;
    p2.ok(Command::SendChat {
        text: "blue chat".into(),
    })
    .await;
    host.ok(Command::SendChat {
        text: "main after".into(),
    })
    .await;
    host.ok(Command::BroadcastToBreakouts {
        text: "marker".into(),
    })
    .await;

    let (mut p0, first) = t.resume(&token, &session_id, last_seq).await;
    assert!(matches!(first, ServerMessage::Resumed { .. }), "{first:?}");
    let replay = until_marker(&mut p0, "marker").await;
    // The roster names the teammate already in Red (a webcast hides its audience otherwise).
    let moved = replay.iter().position(|e| {
        matches!(e, RoomEvent::Moved { from: None, breakout: Some(1), name, ends_at: None, members, .. }
            if name == "Red" && members.iter().map(|m| m.identity.as_str()).collect::<Vec<_>>() == ["p1"])
    });
    let red = replay.iter().position(
        |e| matches!(e, RoomEvent::ChatMessage { message } if message.text == "red chat"),
    );
    assert!(moved.is_some() && red > moved, "{replay:?}");
    assert_eq!(chats(&replay), vec!["main before", "red chat"]);
    // Live, too, they are in Red.
    p0.ok(Command::SendChat {
        text: "p0 in red".into(),
    })
    .await;
    p1.expect_event(
        |e| matches!(e, RoomEvent::ChatMessage { message } if message.text == "p0 in red"),
    )
    .await;
    host.ok(Command::BroadcastToBreakouts {
        text: "marker 2".into(),
    })
    .await;
    assert!(chats(&until_marker(&mut host, "marker 2").await)
        .iter()
        .all(|c| c != "p0 in red"));
    assert!(chats(&until_marker(&mut p2, "marker 2").await)
        .iter()
        .all(|c| c != "p0 in red"));
}
