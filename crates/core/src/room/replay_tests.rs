//! Replay tests: a recorded input log gives byte-identical events in fresh rooms and from a snapshot taken part-way.
//!
//! Failover rebuilds a room on another node from `to_snapshot` plus the inputs recorded
//! after it, so every output must be a function of the inputs alone: no hash-map order,
//! no unseeded randomness. Two rooms in one process get different hash seeds, so any
//! hash order that reached an event or the snapshot shows up here as a difference.

use convene_signaling::{
    Assignment, BreakoutId, BreakoutPlan, BreakoutRooms, LeaveReason, QaMode, QuestionState,
    TrackKind, TrackSource,
};

use super::operator::Operation;
use super::*;

/// One input to a room, as the actor feeds it.
#[derive(Clone, Debug)]
enum Input {
    Join(Joiner),
    Closed { identity: String, left: bool },
    Command { by: String, cmd: Command },
    Tick,
    Operate(Operation),
    Published(Track),
    Unpublished(String),
}

const DISTRICTS: [&str; 12] = [
    "Knox County",
    "Blount",
    "Sevier",
    "Anderson",
    "Loudon",
    "Roane",
    "Jefferson",
    "Monroe",
    "Grainger",
    "Union",
    "Campbell",
    "Claiborne",
];
const PARTICIPANTS: usize = 320;

fn participant(i: usize) -> String {
    format!("p{i:03}")
}

/// A participant's token: most carry a district team; every 29th has none and waits in the
/// main room during breakouts by team.
fn participant_joiner(i: usize) -> Joiner {
    let mut attrs = BTreeMap::from([("school".to_string(), format!("School {}", i % 40))]);
    if i % 29 != 5 {
        attrs.insert(
            "team".to_string(),
            DISTRICTS[i % DISTRICTS.len()].to_string(),
        );
    }
    Joiner {
        identity: participant(i),
        name: format!("Educator {i}"),
        role: Role::Participant,
        attrs,
        on_stage: false,
        credentials_until: None,
    }
}

fn staff_joiner(identity: &str, role: Role) -> Joiner {
    Joiner {
        identity: identity.to_string(),
        name: identity.to_uppercase(),
        role,
        attrs: BTreeMap::new(),
        on_stage: false,
        credentials_until: None,
    }
}

/// xorshift64*, seeded: picks who votes without making the log itself vary.
struct Picks(u64);

impl Picks {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

/// The recorded log, with the indexes worth snapshotting at.
struct Log {
    inputs: Vec<(Millis, Input)>,
    now: Millis,
    splits: Vec<usize>,
    /// Who asked each accepted question, by id - 1.
    askers: Vec<usize>,
}

impl Log {
    fn push(&mut self, input: Input) {
        self.now += 3;
        self.inputs.push((self.now, input));
    }
    fn cmd(&mut self, by: &str, cmd: Command) {
        self.push(Input::Command {
            by: by.to_string(),
            cmd,
        });
    }
    fn p(&mut self, i: usize, cmd: Command) {
        self.cmd(&participant(i), cmd);
    }
    fn join(&mut self, joiner: Joiner) {
        self.push(Input::Join(joiner));
    }
    fn close(&mut self, identity: &str, left: bool) {
        self.push(Input::Closed {
            identity: identity.to_string(),
            left,
        });
    }
    /// Time passes and the actor's timer fires.
    fn wait(&mut self, ms: Millis) {
        self.now += ms;
        self.push(Input::Tick);
    }
    fn split_here(&mut self) {
        self.splits.push(self.inputs.len());
    }
    fn ask(&mut self, i: usize, text: &str, anonymous: bool) {
        self.askers.push(i);
        self.p(
            i,
            Command::AskQuestion {
                text: text.to_string(),
                anonymous,
            },
        );
    }
}

/// The breakout of participant `i`'s team: rooms from an attribute are numbered in name order.
fn team_breakout(i: usize) -> BreakoutId {
    let mut names = DISTRICTS;
    names.sort_unstable();
    let team = DISTRICTS[i % DISTRICTS.len()];
    1 + names.iter().position(|n| *n == team).unwrap() as BreakoutId
}

fn chat(text: String) -> Command {
    Command::SendChat { text }
}

fn track(id: &str, publisher: &str, kind: TrackKind, breakout: Option<BreakoutId>) -> Track {
    Track {
        id: id.to_string(),
        publisher: publisher.to_string(),
        kind,
        source: match kind {
            TrackKind::Audio => TrackSource::Microphone,
            TrackKind::Video => TrackSource::Camera,
        },
        breakout,
        layers: vec!["h".into(), "m".into(), "l".into()],
    }
}

/// A launch webcast of a network: 320 educators from 12 district teams, Q&A, polls, hands
/// and the stage, removals, dropped connections, breakouts by team with timers, then a
/// peer exchange with automatic breakouts.
fn network_convening() -> Log {
    let mut log = Log {
        inputs: Vec::new(),
        now: 1_000,
        splits: Vec::new(),
        askers: Vec::new(),
    };
    let mut picks = Picks(0x5eed_c0ff_ee00_0001);

    // Staff arrive; a presenter publishes through WHIP.
    for (identity, role) in [
        ("host", Role::Host),
        ("mod1", Role::Moderator),
        ("mod2", Role::Moderator),
        ("pres1", Role::Presenter),
        ("pres2", Role::Presenter),
    ] {
        log.join(staff_joiner(identity, role));
    }
    log.push(Input::Published(track(
        "t-pres1-v",
        "pres1",
        TrackKind::Video,
        None,
    )));
    log.push(Input::Published(track(
        "t-pres1-a",
        "pres1",
        TrackKind::Audio,
        None,
    )));

    // The audience arrives over a few seconds; some open a second tab.
    for i in 0..PARTICIPANTS {
        log.now += 37;
        log.join(participant_joiner(i));
        if i % 45 == 10 {
            log.join(participant_joiner(i));
        }
        if i % 20 == 19 {
            log.wait(100);
        }
    }
    log.wait(600);

    // Chat, with a deletion and a mute.
    for i in (0..PARTICIPANTS).step_by(7) {
        log.p(i, chat(format!("Hello from {}", DISTRICTS[i % 12])));
    }
    log.cmd("mod1", Command::DeleteChat { message_id: 3 });
    log.p(1, Command::DeleteChat { message_id: 4 });
    log.cmd(
        "host",
        Command::MuteChat {
            identity: participant(21),
            muted: true,
        },
    );
    log.p(21, chat("can anyone hear me?".into()));
    log.cmd("pres1", chat("Welcome, everyone".into()));

    // Questions, moderated: 60 from the floor, then one person over the rate limit.
    for i in 0..60 {
        log.ask(i, &format!("How does district {i} share data?"), i % 4 == 0);
    }
    for _ in 0..5 {
        log.ask(300, "And another thing?", false);
    }
    log.p(
        300,
        Command::AskQuestion {
            text: "One too many".into(),
            anonymous: false,
        },
    );
    log.split_here();
    for id in 1..=40 {
        log.cmd("mod1", Command::ApproveQuestion { question_id: id });
    }
    for id in 41..=45 {
        log.cmd("mod2", Command::DismissQuestion { question_id: id });
    }
    log.cmd("mod2", Command::RestoreQuestion { question_id: 41 });
    log.cmd("mod2", Command::ApproveQuestion { question_id: 46 });
    log.wait(300);

    // Upvotes, in bursts that the vote coalescer holds back between ticks.
    for n in 0..900 {
        let id = 1 + picks.below(40) as u64;
        let id = if n % 9 == 0 { 46 } else { id };
        log.p(
            picks.below(PARTICIPANTS),
            Command::Upvote { question_id: id },
        );
        if n % 60 == 59 {
            log.wait(250);
        }
    }
    // Second thoughts: upvote, then take it back.
    for n in 0..30 {
        let question_id = 11 + n % 10;
        log.p(150 + n as usize, Command::Upvote { question_id });
        log.p(150 + n as usize, Command::RemoveUpvote { question_id });
    }
    let own = log.askers[4];
    log.p(own, Command::Upvote { question_id: 5 });
    // A merge moves the duplicate's voters onto the original.
    log.cmd(
        "mod1",
        Command::MarkDuplicate {
            question_id: 46,
            duplicate_of: 3,
        },
    );
    log.cmd(
        "mod1",
        Command::MarkDuplicate {
            question_id: 47,
            duplicate_of: 12,
        },
    );
    log.cmd(
        "pres1",
        Command::SetLiveQuestion {
            question_id: Some(2),
        },
    );
    log.cmd(
        "pres1",
        Command::AnswerQuestion {
            question_id: 2,
            answer: Some("We publish it quarterly".into()),
        },
    );
    log.cmd(
        "pres2",
        Command::SetLiveQuestion {
            question_id: Some(5),
        },
    );
    log.cmd(
        "mod1",
        Command::AnswerQuestion {
            question_id: 7,
            answer: None,
        },
    );
    log.cmd("mod1", Command::ReopenQuestion { question_id: 7 });
    log.cmd(
        "mod2",
        Command::EditQuestion {
            question_id: 8,
            text: "How do districts share attendance data?".into(),
        },
    );
    let withdrawer = log.askers[8];
    log.p(withdrawer, Command::WithdrawQuestion { question_id: 9 });
    log.wait(400);

    // Polls: one with live results, one hidden until shared; people change their minds.
    log.cmd(
        "mod1",
        Command::LaunchPoll {
            question: "Which strand matters most this year?".into(),
            options: vec!["Attendance".into(), "Literacy".into(), "Math".into()],
            multiple: false,
            live_results: true,
        },
    );
    log.cmd(
        "mod2",
        Command::LaunchPoll {
            question: "Which supports do you use?".into(),
            options: (1..=5).map(|k| format!("Support {k}")).collect(),
            multiple: true,
            live_results: false,
        },
    );
    for i in 0..260 {
        let choice = picks.below(3) as u32;
        log.p(
            i,
            Command::VotePoll {
                poll_id: 1,
                choices: vec![choice],
            },
        );
        if i % 3 == 0 {
            let a = picks.below(5) as u32;
            let b = picks.below(5) as u32;
            log.p(
                i,
                Command::VotePoll {
                    poll_id: 2,
                    choices: vec![a, b, a],
                },
            );
        }
        if i % 50 == 49 {
            log.wait(500);
        }
    }
    for i in 0..20 {
        log.p(
            i,
            Command::VotePoll {
                poll_id: 1,
                choices: vec![2],
            },
        );
    }
    log.split_here();
    log.wait(200);
    log.cmd("mod1", Command::ClosePoll { poll_id: 1 });
    log.cmd("mod1", Command::ClosePoll { poll_id: 2 });
    log.cmd("mod1", Command::SharePollResults { poll_id: 2 });

    // Hands and the stage; a participant on stage publishes, then steps down.
    for i in (100..400).step_by(20) {
        log.p(i % PARTICIPANTS, Command::RaiseHand);
    }
    for i in [120, 140, 160] {
        log.cmd(
            "mod2",
            Command::LowerHand {
                identity: Some(participant(i)),
            },
        );
    }
    log.p(180, Command::LowerHand { identity: None });
    log.cmd(
        "mod1",
        Command::InviteToStage {
            identity: participant(100),
        },
    );
    log.push(Input::Published(track(
        "t-p100-v",
        "p100",
        TrackKind::Video,
        None,
    )));
    log.push(Input::Published(track(
        "t-p100-a",
        "p100",
        TrackKind::Audio,
        None,
    )));
    log.cmd(
        "mod1",
        Command::RemoveFromStage {
            identity: participant(100),
        },
    );
    log.cmd(
        "mod1",
        Command::InviteToStage {
            identity: participant(101),
        },
    );
    log.p(
        101,
        Command::RemoveFromStage {
            identity: participant(101),
        },
    );
    log.cmd(
        "mod2",
        Command::MuteMedia {
            identity: None,
            kind: TrackKind::Audio,
            muted: true,
        },
    );
    log.cmd(
        "mod2",
        Command::MuteMedia {
            identity: Some(participant(102)),
            kind: TrackKind::Audio,
            muted: false,
        },
    );

    // Removals (each bans): by moderators, by the operator; a banned person tries again.
    for (by, i) in [("mod1", 200), ("mod1", 201), ("host", 202)] {
        log.cmd(
            by,
            Command::RemoveParticipant {
                identity: participant(i),
                reason: Some("off-topic".into()),
            },
        );
    }
    log.push(Input::Operate(Operation::Remove {
        identity: participant(203),
        reason: None,
    }));
    log.push(Input::Operate(Operation::Remove {
        identity: participant(204),
        reason: Some("duplicate account".into()),
    }));
    log.join(participant_joiner(200));
    log.cmd(
        "mod1",
        Command::RemoveParticipant {
            identity: "host".into(),
            reason: None,
        },
    );

    // Dropped connections: some return within the grace, some leave, the rest time out.
    for i in 210..230 {
        log.close(&participant(i), false);
    }
    log.close(&participant(10), false); // one of two tabs
    log.close(&participant(230), true);
    log.wait(5_000);
    log.split_here(); // twenty seats held for the grace
    for i in 210..220 {
        log.join(participant_joiner(i));
    }
    log.wait(10_000);
    log.close(&participant(215), false);
    log.wait(11_000); // past the first drops' grace
    log.wait(20_000);

    // Breakouts by district team, with a timer.
    log.cmd(
        "mod1",
        Command::SetBreakoutPlan {
            plan: BreakoutPlan {
                rooms: BreakoutRooms::FromAttribute {
                    from_attribute: "team".into(),
                },
                assignment: Assignment::ByAttribute { key: "team".into() },
                duration_s: Some(600),
                allow_leave: true,
            },
        },
    );
    log.join(participant_joiner(230)); // back before opening: placed at open
    log.cmd("mod1", Command::OpenBreakouts);
    for i in (0..PARTICIPANTS).step_by(11) {
        log.p(i, chat(format!("Team note from {i}")));
    }
    log.split_here();
    log.p(30, Command::AskForHelp);
    log.p(31, Command::AskForHelp);
    log.cmd(
        "mod2",
        Command::HandleHelp {
            identity: participant(30),
        },
    );
    log.cmd("host", Command::JoinBreakout { breakout: 3 });
    log.cmd("host", chat("Checking in on your team".into()));
    log.cmd("host", Command::LeaveBreakout);
    // Late joiners: a new district gets a room of its own.
    let mut late = participant_joiner(PARTICIPANTS);
    late.attrs.insert("team".into(), "Hamblen".into());
    log.join(late);
    log.join(participant_joiner(PARTICIPANTS + 1));
    log.p(40, Command::LeaveBreakout);
    log.p(40, Command::ChooseBreakout { breakout: 2 }); // not theirs: refused
    log.p(
        40,
        Command::ChooseBreakout {
            breakout: team_breakout(40),
        },
    );
    log.p(41, Command::LeaveBreakout);
    log.cmd(
        "mod2",
        Command::AssignBreakout {
            identity: participant(42),
            breakout: 7,
        },
    );
    log.push(Input::Published(track(
        "t-p043-v",
        "p043",
        TrackKind::Video,
        Some(8),
    )));
    for i in 50..55 {
        log.close(&participant(i), false);
    }
    log.wait(3_000);
    log.ask(56, "Will the slides be shared?", false);
    log.cmd("mod1", Command::ApproveQuestion { question_id: 66 });
    for i in 57..90 {
        log.p(i, Command::Upvote { question_id: 66 });
    }
    log.split_here(); // in breakouts, with seats held and votes not yet sent
    for i in 50..53 {
        log.join(participant_joiner(i));
    }
    log.cmd(
        "mod1",
        Command::BroadcastToBreakouts {
            text: "Ten minutes left".into(),
        },
    );
    log.cmd("mod1", Command::ExtendBreakouts { seconds: 120 });
    log.wait(30_000);
    log.push(Input::Unpublished("t-p043-v".into()));
    for _ in 0..12 {
        log.wait(60_000); // passes the warning, then the end: the close countdown starts
    }
    log.split_here();
    log.p(44, chat("Wrapping up".into()));
    log.wait(31_000); // the countdown ends: everyone returns

    // A peer exchange: a meeting with automatic breakouts, closed at once.
    log.cmd(
        "host",
        Command::UpdateSettings {
            kind: Some(RoomKind::Meeting),
            chat_enabled: None,
            qa_mode: Some(QaMode::Open),
        },
    );
    let auto = |allow_leave| BreakoutPlan {
        rooms: BreakoutRooms::Named(vec!["Red".into(), "Green".into(), "Blue".into()]),
        assignment: Assignment::Auto,
        duration_s: None,
        allow_leave,
    };
    log.cmd("mod1", Command::SetBreakoutPlan { plan: auto(true) });
    log.cmd("mod1", Command::CancelBreakoutPlan);
    log.cmd("mod1", Command::SetBreakoutPlan { plan: auto(false) });
    log.split_here();
    log.cmd("mod1", Command::OpenBreakouts);
    log.p(60, Command::LeaveBreakout);
    log.cmd(
        "mod1",
        Command::AssignBreakout {
            identity: participant(61),
            breakout: 2,
        },
    );
    log.ask(62, "Can we keep these rooms next month?", false);
    log.p(63, Command::Upvote { question_id: 67 });
    log.wait(300);
    log.cmd(
        "mod1",
        Command::CloseBreakouts {
            countdown_s: Some(0),
        },
    );
    log.push(Input::Operate(Operation::Configure {
        kind: Some(RoomKind::Webcast),
        chat_enabled: Some(false),
        qa_mode: None,
    }));
    log.p(64, chat("is chat off?".into()));
    log.cmd("mod1", chat("Chat is closed, thank you all".into()));
    log.wait(1_000);
    log
}

fn denied_json(d: &Denied) -> serde_json::Value {
    serde_json::json!({"code": d.code, "message": d.message, "retry_after_ms": d.retry_after_ms})
}

/// Applies one input and returns everything it produced as one JSON line: every event with
/// its audience, what a command created or why it was refused, and the next deadline.
fn step(room: &mut RoomState, now: Millis, input: &Input) -> String {
    let (events, extra) = match input {
        Input::Join(joiner) => match room.join(joiner.clone(), now) {
            Ok(events) => (events, serde_json::Value::Null),
            Err(d) => (Vec::new(), denied_json(&d)),
        },
        Input::Closed { identity, left } => (
            room.connection_closed(identity, *left, now),
            Default::default(),
        ),
        Input::Command { by, cmd } => match room.apply(cmd, by, now) {
            Ok(out) => (out.events, serde_json::json!({"created": out.created})),
            Err(d) => (Vec::new(), denied_json(&d)),
        },
        Input::Tick => (room.tick(now), Default::default()),
        Input::Operate(op) => match room.operate(op, now) {
            Ok((events, report)) => (
                events,
                serde_json::json!({"settings": report.settings, "members": report.members, "ended": report.ended}),
            ),
            Err(d) => (Vec::new(), denied_json(&d)),
        },
        Input::Published(track) => (room.track_published(track.clone()), Default::default()),
        Input::Unpublished(id) => (room.track_unpublished(id), Default::default()),
    };
    let events: Vec<_> = events.iter().map(|e| (&e.audience, &e.body)).collect();
    serde_json::to_string(&(events, extra, room.next_deadline())).unwrap()
}

fn limits() -> RoomLimits {
    RoomLimits::default()
}

fn run(room: &mut RoomState, inputs: &[(Millis, Input)]) -> Vec<String> {
    inputs
        .iter()
        .map(|(now, input)| step(room, *now, input))
        .collect()
}

/// The first line where two transcripts differ, for a readable failure.
fn assert_same(what: &str, a: &[String], b: &[String]) {
    assert_eq!(a.len(), b.len(), "{what}: transcript lengths differ");
    if let Some(i) = (0..a.len()).find(|i| a[*i] != b[*i]) {
        panic!(
            "{what}: input {i} produced different output\n  {}\n  {}",
            a[i], b[i]
        );
    }
}

fn count(transcript: &[String], needle: &str) -> usize {
    transcript.iter().map(|l| l.matches(needle).count()).sum()
}

#[test]
fn a_recorded_log_replays_to_identical_events_and_snapshots() {
    let log = network_convening();
    assert!(log.inputs.len() > 1_800, "{} inputs", log.inputs.len());
    let mut first = RoomState::new("launch", limits());
    let mut second = RoomState::new("launch", limits());
    let a = run(&mut first, &log.inputs);
    let b = run(&mut second, &log.inputs);
    assert_same("two fresh rooms", &a, &b);
    assert_eq!(first.to_snapshot(), second.to_snapshot());

    // The log exercises what it claims to, so identical output is not identical silence.
    for (needle, at_least) in [
        ("\"type\":\"member_joined\"", PARTICIPANTS),
        ("\"type\":\"chat_message\"", 70),
        ("\"type\":\"chat_deleted\"", 1),
        ("\"type\":\"question_votes\"", 40),
        ("\"state\":\"answered\"", 1),
        ("\"type\":\"poll_updated\"", 10),
        ("\"type\":\"moved\"", 2 * (PARTICIPANTS - 30)),
        ("\"type\":\"members_moved\"", 4),
        ("\"type\":\"breakout_warning\"", 1),
        ("\"type\":\"breakouts_closing\"", 1),
        ("\"type\":\"breakouts_closed\"", 2),
        ("\"type\":\"help_requested\"", 2),
        ("\"type\":\"track_published\"", 5),
        ("\"type\":\"track_unpublished\"", 3),
        ("\"type\":\"media_muted\"", 1),
        ("\"type\":\"removed\"", 5),
        ("\"reason\":\"timed_out\"", 10),
        ("\"code\":\"rate_limited\"", 1),
        ("\"code\":\"chat_muted\"", 1),
        ("\"code\":\"chat_disabled\"", 1),
    ] {
        let seen = count(&a, needle);
        assert!(seen >= at_least, "{needle}: {seen} < {at_least}");
    }
    // Timed-out members and the banned are gone; the rest are back in the main room.
    assert!(first.member(&participant(225)).is_none());
    assert!(first.is_banned(&participant(203)));
    assert!(first.members().all(|m| m.breakout.is_none()));
    let q3 = first.qa().get(3).unwrap();
    assert_eq!(q3.state, QuestionState::Approved);
    assert!(q3.votes > 0);
}

#[test]
fn a_room_restored_from_a_snapshot_continues_exactly_as_the_original() {
    let log = network_convening();
    assert!(log.splits.len() >= 7);
    let mut whole = RoomState::new("launch", limits());
    let uninterrupted = run(&mut whole, &log.inputs);
    let end = whole.to_snapshot();
    for &split in &log.splits {
        let mut before = RoomState::new("launch", limits());
        let head = run(&mut before, &log.inputs[..split]);
        assert_same("prefix", &head, &uninterrupted[..split]);
        let snapshot = before.to_snapshot();
        let mut restored = RoomState::from_snapshot(&snapshot, limits()).unwrap();
        assert_eq!(
            restored.to_snapshot(),
            snapshot,
            "round trip at input {split}"
        );
        assert_eq!(restored.next_deadline(), before.next_deadline());
        let tail = run(&mut restored, &log.inputs[split..]);
        assert_same(
            &format!("restored at input {split}"),
            &tail,
            &uninterrupted[split..],
        );
        assert_eq!(
            restored.to_snapshot(),
            end,
            "final state after split {split}"
        );
    }
}

#[test]
fn a_restored_room_shows_each_viewer_what_the_original_does() {
    let log = network_convening();
    let split = log.splits[4]; // breakouts open
    let mut room = RoomState::new("launch", limits());
    run(&mut room, &log.inputs[..split]);
    let restored = RoomState::from_snapshot(&room.to_snapshot(), limits()).unwrap();
    let tracks: Vec<_> = restored.tracks().map(|t| t.id.as_str()).collect();
    assert_eq!(tracks, ["t-p043-v", "t-pres1-a", "t-pres1-v"]);
    for identity in [
        "host", "mod1", "pres1", "p000", "p021", "p043", "p100", "p216",
    ] {
        let viewer = room.viewer(identity).unwrap();
        assert_eq!(
            restored.snapshot(&viewer),
            room.snapshot(&viewer),
            "{identity}"
        );
    }
}

#[test]
fn limits_come_from_the_restoring_node_not_the_snapshot() {
    let mut room = RoomState::new("r", limits());
    room.join(staff_joiner("ana", Role::Participant), 1_000)
        .unwrap();
    room.connection_closed("ana", false, 2_000);
    let snapshot = room.to_snapshot();
    assert!(!snapshot.contains("reconnect_grace_ms"));
    let short = RoomLimits {
        reconnect_grace_ms: 5_000,
        ..limits()
    };
    let mut restored = RoomState::from_snapshot(&snapshot, short).unwrap();
    // The grace timer is rebuilt from the member's drop time, with the new grace.
    assert_eq!(restored.next_deadline(), Some(7_000));
    let events = restored.tick(7_000);
    assert!(events.iter().any(|e| matches!(
        &e.body,
        RoomEvent::MemberLeft {
            reason: LeaveReason::TimedOut,
            ..
        }
    )));
}

#[test]
fn a_damaged_snapshot_is_an_error_not_a_panic() {
    assert!(RoomState::from_snapshot("", limits()).is_err());
    assert!(RoomState::from_snapshot("{}", limits()).is_err());
    assert!(RoomState::from_snapshot("[1,2]", limits()).is_err());

    let mut room = RoomState::new("r", limits());
    room.join(staff_joiner("host", Role::Host), 0).unwrap();
    room.join(staff_joiner("ana", Role::Participant), 0)
        .unwrap();
    let poll = Command::LaunchPoll {
        question: "Ready?".into(),
        options: vec!["Yes".into(), "No".into()],
        multiple: false,
        live_results: true,
    };
    room.apply(&poll, "host", 1).unwrap();
    let vote = Command::VotePoll {
        poll_id: 1,
        choices: vec![1],
    };
    room.apply(&vote, "ana", 2).unwrap();
    let good = room.to_snapshot();
    assert!(RoomState::from_snapshot(&good, limits()).is_ok());

    for (from, to) in [
        (r#""answers":{"ana":[1]}"#, r#""answers":{"ana":[7]}"#),
        (
            r#""ana":{"member":{"identity":"ana""#,
            r#""ana":{"member":{"identity":"bo""#,
        ),
        (r#""live":null"#, r#""live":4"#),
        (r#""dirty":[]"#, r#""dirty":[9]"#),
    ] {
        assert!(good.contains(from), "{from} not in {good}");
        let bad = good.replacen(from, to, 1);
        let err = RoomState::from_snapshot(&bad, limits()).err();
        assert!(err.is_some(), "accepted a snapshot with {to}");
    }
}
