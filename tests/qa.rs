//! Live Q&A over real sockets: the moderation queue as each role sees it, resume, bad input,
//! a vote storm, the export and the per-identity question limit.
//!
//! Negative checks ("ben did not see it") are exact rather than timed: after a step the host
//! sends a chat marker, and since every session receives the room's events in `seq` order,
//! whatever a client was allowed to see of that step arrived before the marker.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{http_get, Client, TestServer, WAIT};
use convene_signaling::{
    Command, ErrorCode, Presence, Question, QuestionState, Role, RoomEvent, ServerMessage,
    MAX_QUESTION_CHARS,
};
use futures_util::future::join_all;
use tokio::time::Instant;

const ROOM: &str = "launch";
const STAFF: [&str; 3] = ["host", "mod", "pres"];

/// The per-session command buckets have their own tests; a scripted session should not trip them.
async fn roomy_server() -> TestServer {
    TestServer::start_with(|c| {
        c.limits.rate.chat.burst = 1000;
        c.limits.rate.qa.burst = 1000;
        // Some people here use two sockets at once (and a third joins for a look).
        c.limits.sessions_per_identity = 3;
    })
    .await
}

/// Named clients in one room; the first one sends the sync markers.
struct Cast {
    clients: Vec<(&'static str, Client)>,
    syncs: u32,
}

impl Cast {
    /// `(label, role, identity)`: two labels may share an identity (two sockets of one person).
    async fn join(t: &TestServer, people: &[(&'static str, Role, &str)]) -> Cast {
        let mut clients = Vec::new();
        for (label, role, identity) in people {
            clients.push((*label, t.join(ROOM, *role, identity).await));
        }
        Cast { clients, syncs: 0 }
    }

    fn c(&mut self, label: &str) -> &mut Client {
        self.clients
            .iter_mut()
            .find(|(l, _)| *l == label)
            .map(|(_, c)| c)
            .unwrap_or_else(|| panic!("no client {label}"))
    }

    fn take(&mut self, label: &str) -> Client {
        let i = self
            .clients
            .iter()
            .position(|(l, _)| *l == label)
            .expect("known label");
        self.clients.remove(i).1
    }

    fn labels(&self) -> Vec<&'static str> {
        self.clients.iter().map(|(l, _)| *l).collect()
    }

    /// The first client chats a marker; returns what each client received before it
    /// (`votes`: include coalesced `question_votes`, else only question updates and removals).
    async fn sync_with(&mut self, votes: bool) -> BTreeMap<&'static str, Vec<RoomEvent>> {
        self.syncs += 1;
        let marker = format!("sync {}", self.syncs);
        self.clients[0]
            .1
            .ok(Command::SendChat {
                text: marker.clone(),
            })
            .await;
        let mut out = BTreeMap::new();
        for (label, client) in &mut self.clients {
            out.insert(*label, qa_until(client, &marker, votes).await);
        }
        out
    }

    async fn sync(&mut self) -> BTreeMap<&'static str, Vec<RoomEvent>> {
        self.sync_with(false).await
    }
}

/// Q&A events received before the chat marker `marker` (which is consumed).
async fn qa_until(client: &mut Client, marker: &str, votes: bool) -> Vec<RoomEvent> {
    let mut seen = Vec::new();
    loop {
        if let ServerMessage::Event { event, .. } = client.recv().await {
            match event {
                RoomEvent::ChatMessage { message } if message.text == marker => return seen,
                e @ (RoomEvent::QuestionUpdated { .. } | RoomEvent::QuestionRemoved { .. }) => {
                    seen.push(e)
                }
                e @ RoomEvent::QuestionVotes { .. } if votes => seen.push(e),
                _ => {}
            }
        }
    }
}

/// The one question update `who` saw in this step.
fn only_update<'a>(seen: &'a BTreeMap<&str, Vec<RoomEvent>>, who: &str, id: u64) -> &'a Question {
    match seen[who].as_slice() {
        [RoomEvent::QuestionUpdated { question }] if question.id == id => question,
        other => {
            panic!("{who} should have seen exactly one update of question {id}, saw {other:?}")
        }
    }
}

fn updates(events: &[RoomEvent]) -> Vec<&Question> {
    events
        .iter()
        .map(|e| match e {
            RoomEvent::QuestionUpdated { question } => question,
            other => panic!("expected only question updates, got {other:?}"),
        })
        .collect()
}

fn ask(text: &str) -> Command {
    Command::AskQuestion {
        text: text.into(),
        anonymous: false,
    }
}

fn ids(questions: &[Question]) -> Vec<u64> {
    questions.iter().map(|q| q.id).collect()
}

async fn wait_votes(client: &mut Client, id: u64, votes: u32) {
    client
        .expect_event(|e| {
            *e == RoomEvent::QuestionVotes {
                question_id: id,
                votes,
            }
        })
        .await;
}

#[tokio::test]
async fn moderated_session_as_each_role_sees_it() {
    let t = roomy_server().await;
    let mut cast = Cast::join(
        &t,
        &[
            ("host", Role::Host, "host"),
            ("mod", Role::Moderator, "mod"),
            ("pres", Role::Presenter, "pres"),
            ("ana", Role::Participant, "ana"),
            ("ben", Role::Participant, "ben"),
            ("ben#2", Role::Participant, "ben"),
            ("cleo", Role::Participant, "cleo"),
            ("dan", Role::Participant, "dan"),
        ],
    )
    .await;
    let everyone = cast.labels();
    let others_than = |author: &[&str]| {
        everyone
            .iter()
            .copied()
            .filter(|l| !STAFF.contains(l) && !author.contains(l))
            .collect::<Vec<_>>()
    };

    // 1. A participant asks; moderated is the default, so it waits for staff and its author only.
    let q1 = cast
        .c("ana")
        .ok(ask("How do we enrol new schools?"))
        .await
        .expect("question id");
    let seen = cast.sync().await;
    for who in STAFF.iter().chain(&["ana"]) {
        let q = only_update(&seen, who, q1);
        assert_eq!(q.state, QuestionState::Pending, "{who}");
        assert_eq!(
            (q.author.as_deref(), q.author_name.as_deref(), q.anonymous),
            (Some("ana"), Some("ANA"), false)
        );
        assert_eq!(
            (q.text.as_str(), q.votes, q.live, q.edited),
            ("How do we enrol new schools?", 0, false, false)
        );
    }
    for who in others_than(&["ana"]) {
        assert!(
            seen[who].is_empty(),
            "{who} saw a pending question: {:?}",
            seen[who]
        );
    }

    // 2. The moderator approves: everyone sees it.
    cast.c("mod")
        .ok(Command::ApproveQuestion { question_id: q1 })
        .await;
    let seen = cast.sync().await;
    for who in &everyone {
        assert_eq!(
            only_update(&seen, who, q1).state,
            QuestionState::Approved,
            "{who}"
        );
    }

    // 3. Votes: one per identity (a second socket of ben is refused), never on your own question.
    cast.c("ben").ok(Command::Upvote { question_id: q1 }).await;
    let (code, message) = cast
        .c("ben#2")
        .refused(Command::Upvote { question_id: q1 })
        .await;
    assert_eq!(code, ErrorCode::Conflict, "{message}");
    let (code, message) = cast
        .c("ana")
        .refused(Command::Upvote { question_id: q1 })
        .await;
    assert_eq!(code, ErrorCode::Conflict, "{message}");
    assert!(message.contains("own"), "{message}");
    cast.c("cleo").ok(Command::Upvote { question_id: q1 }).await;
    for who in &everyone {
        wait_votes(cast.c(who), q1, 2).await;
    }
    let seen = cast.sync().await;
    assert!(
        seen.values().all(|e| e.is_empty()),
        "votes change only the count: {seen:?}"
    );

    // 4. An anonymous question: no author in any event, yet its author (both sockets) sees it pending.
    let q2 = cast
        .c("ben")
        .ok(Command::AskQuestion {
            text: "Is there funding for substitutes?".into(),
            anonymous: true,
        })
        .await
        .unwrap();
    let seen = cast.sync().await;
    for who in STAFF.iter().chain(&["ben", "ben#2"]) {
        let q = only_update(&seen, who, q2);
        assert_eq!(
            (q.state, q.anonymous),
            (QuestionState::Pending, true),
            "{who}"
        );
        assert_eq!(
            (q.author.as_deref(), q.author_name.as_deref()),
            (None, None),
            "{who} sees the author of an anonymous question"
        );
    }
    for who in others_than(&["ben", "ben#2"]) {
        assert!(seen[who].is_empty(), "{who}: {:?}", seen[who]);
    }
    // A fresh socket of the author finds it in its snapshot, marked as theirs.
    let ben3 = t.join(ROOM, Role::Participant, "ben").await;
    assert_eq!(ids(&ben3.snapshot().questions), vec![q1, q2]);
    assert_eq!(ben3.snapshot().my_questions, vec![q2]);
    assert_eq!(ben3.snapshot().my_votes, vec![q1]);
    assert_eq!(ben3.snapshot().questions[1].author, None);
    // ...while another participant's snapshot has no trace of it.
    let eve = t.join(ROOM, Role::Participant, "eve").await;
    assert_eq!(ids(&eve.snapshot().questions), vec![q1]);
    drop((ben3, eve));

    // 5. The moderator edits the pending question: its author sees edited = true, other participants nothing.
    cast.c("mod")
        .ok(Command::EditQuestion {
            question_id: q2,
            text: "Is there funding for substitute teachers?".into(),
        })
        .await;
    let seen = cast.sync().await;
    for who in STAFF.iter().chain(&["ben", "ben#2"]) {
        let q = only_update(&seen, who, q2);
        assert_eq!(
            (q.text.as_str(), q.edited, q.state),
            (
                "Is there funding for substitute teachers?",
                true,
                QuestionState::Pending
            ),
            "{who}"
        );
    }
    for who in others_than(&["ben", "ben#2"]) {
        assert!(seen[who].is_empty(), "{who}: {:?}", seen[who]);
    }
    cast.c("mod")
        .ok(Command::ApproveQuestion { question_id: q2 })
        .await;
    let seen = cast.sync().await;
    for who in &everyone {
        let q = only_update(&seen, who, q2);
        assert_eq!(
            (
                q.state,
                q.edited,
                q.author.as_deref(),
                q.author_name.as_deref()
            ),
            (QuestionState::Approved, true, None, None),
            "{who}"
        );
    }

    // 6. Three more questions, approved.
    let q3 = cast
        .c("cleo")
        .ok(ask("When is the next convening?"))
        .await
        .unwrap();
    let q4 = cast.c("ana").ok(ask("Where is lunch?")).await.unwrap();
    let q5 = cast
        .c("cleo")
        .ok(ask("How do we enroll schools?"))
        .await
        .unwrap();
    for id in [q3, q4, q5] {
        cast.c("mod")
            .ok(Command::ApproveQuestion { question_id: id })
            .await;
    }
    let seen = cast.sync().await;
    let states = |who: &str| {
        updates(&seen[who])
            .iter()
            .map(|q| (q.id, q.state))
            .collect::<Vec<_>>()
    };
    use QuestionState::{Answered, Approved, Dismissed, Pending};
    assert_eq!(
        states("dan"),
        vec![(q3, Approved), (q4, Approved), (q5, Approved)]
    );
    assert_eq!(
        states("cleo"),
        vec![
            (q3, Pending),
            (q5, Pending),
            (q3, Approved),
            (q4, Approved),
            (q5, Approved)
        ]
    );
    assert_eq!(
        states("host"),
        vec![
            (q3, Pending),
            (q4, Pending),
            (q5, Pending),
            (q3, Approved),
            (q4, Approved),
            (q5, Approved)
        ]
    );

    // 7. The presenter marks questions live: at most one; setting another clears the first.
    cast.c("pres")
        .ok(Command::SetLiveQuestion {
            question_id: Some(q1),
        })
        .await;
    let seen = cast.sync().await;
    for who in &everyone {
        assert!(only_update(&seen, who, q1).live, "{who}");
    }
    cast.c("pres")
        .ok(Command::SetLiveQuestion {
            question_id: Some(q3),
        })
        .await;
    let seen = cast.sync().await;
    for who in &everyone {
        let live: Vec<_> = updates(&seen[who]).iter().map(|q| (q.id, q.live)).collect();
        assert_eq!(live, vec![(q1, false), (q3, true)], "{who}");
    }

    // 8. The presenter answers the live question in writing.
    cast.c("pres")
        .ok(Command::AnswerQuestion {
            question_id: q3,
            answer: Some("In May, in Knoxville.".into()),
        })
        .await;
    let seen = cast.sync().await;
    for who in &everyone {
        let q = only_update(&seen, who, q3);
        assert_eq!(
            (q.state, q.live, q.answer.as_deref()),
            (Answered, false, Some("In May, in Knoxville.")),
            "{who}"
        );
        assert!(
            q.answered_at.is_some_and(|at| at >= q.asked_at),
            "{who}: {q:?}"
        );
    }

    // 9. The moderator dismisses one: other participants are told it is gone; staff and the author keep it.
    cast.c("mod")
        .ok(Command::DismissQuestion { question_id: q4 })
        .await;
    let seen = cast.sync().await;
    for who in STAFF.iter().chain(&["ana"]) {
        assert_eq!(only_update(&seen, who, q4).state, Dismissed, "{who}");
    }
    for who in others_than(&["ana"]) {
        assert_eq!(
            seen[who],
            vec![RoomEvent::QuestionRemoved { question_id: q4 }],
            "{who}"
        );
    }

    // 10. A duplicate: its votes move to the original, counted once per person, never the original's author.
    // q1 has ben and cleo; q5 gets ben (again), ana (q1's author) and dan (new).
    for who in ["ben", "ana", "dan"] {
        cast.c(who).ok(Command::Upvote { question_id: q5 }).await;
    }
    wait_votes(cast.c("host"), q5, 3).await;
    cast.c("mod")
        .ok(Command::MarkDuplicate {
            question_id: q5,
            duplicate_of: q1,
        })
        .await;
    let seen = cast.sync().await;
    for who in STAFF.iter().chain(&["cleo"]) {
        let got = updates(&seen[who]);
        assert_eq!(got.len(), 2, "{who}: {got:?}");
        assert_eq!(
            (got[0].id, got[0].state, got[0].duplicate_of, got[0].votes),
            (q5, Dismissed, Some(q1), 0),
            "{who}"
        );
        assert_eq!((got[1].id, got[1].votes), (q1, 3), "{who}");
    }
    for who in others_than(&["cleo"]) {
        match seen[who].as_slice() {
            [RoomEvent::QuestionRemoved { question_id }, RoomEvent::QuestionUpdated { question }] =>
            {
                assert_eq!(
                    (*question_id, question.id, question.votes),
                    (q5, q1, 3),
                    "{who}"
                );
            }
            other => panic!("{who}: {other:?}"),
        }
    }
    // The moved votes count as cast: dan and ben cannot vote for the original again.
    for who in ["dan", "ben#2"] {
        let (code, message) = cast
            .c(who)
            .refused(Command::Upvote { question_id: q1 })
            .await;
        assert_eq!(code, ErrorCode::Conflict, "{who}: {message}");
    }

    // 11. Reopen the answered question: back in the queue, answer cleared.
    cast.c("mod")
        .ok(Command::ReopenQuestion { question_id: q3 })
        .await;
    let seen = cast.sync().await;
    for who in &everyone {
        let q = only_update(&seen, who, q3);
        assert_eq!(
            (q.state, q.answer.as_deref(), q.answered_at, q.live),
            (Approved, None, None, false),
            "{who}"
        );
    }

    // The room as a newcomer and as staff now see it: q1 (3 votes), then q2 and q3 (0 votes) by age.
    let fresh = t.join(ROOM, Role::Participant, "fay").await;
    assert_eq!(ids(&fresh.snapshot().questions), vec![q1, q2, q3]);
    assert!(fresh.snapshot().answered.is_empty());
    assert_eq!(fresh.snapshot().questions[0].votes, 3);
    assert!(fresh.snapshot().questions.iter().all(|q| !q.live));
    let staff = t.join(ROOM, Role::Moderator, "mod2").await;
    assert_eq!(ids(&staff.snapshot().questions), vec![q1, q2, q3, q4, q5]);
}

/// A dropped client's resume replays exactly what it missed and may see.
#[tokio::test]
async fn resume_replays_exactly_the_missed_visible_changes_and_a_fresh_join_gets_the_ordered_queue()
{
    let t = roomy_server().await;
    let mut cast = Cast::join(
        &t,
        &[
            ("host", Role::Host, "host"),
            ("mod", Role::Moderator, "mod"),
            ("pres", Role::Presenter, "pres"),
            ("ana", Role::Participant, "ana"),
            ("ben", Role::Participant, "ben"),
            ("cleo", Role::Participant, "cleo"),
            ("dan", Role::Participant, "dan"),
            // A participant like ben who stays connected: the control for what ben should get.
            ("eve", Role::Participant, "eve"),
        ],
    )
    .await;
    let qa = cast
        .c("ana")
        .ok(ask("A: how are teams formed?"))
        .await
        .unwrap();
    let qb = cast.c("cleo").ok(ask("B: who facilitates?")).await.unwrap();
    for id in [qa, qb] {
        cast.c("mod")
            .ok(Command::ApproveQuestion { question_id: id })
            .await;
    }
    cast.c("ben").ok(Command::Upvote { question_id: qa }).await;
    wait_votes(cast.c("host"), qa, 1).await;
    cast.sync().await;

    // ben's connection drops, without a close frame.
    let ben = cast.take("ben");
    let dropped = ben.drop_connection();
    cast.c("host")
        .expect_event(|e| matches!(e, RoomEvent::MemberUpdated { member } if member.identity == "ben" && member.presence == Presence::Reconnecting))
        .await;

    // While ben is away: pending questions (invisible to ben) and public changes (visible).
    let qc = cast
        .c("dan")
        .ok(ask("C: is there a stipend?"))
        .await
        .unwrap();
    let qd = cast
        .c("ana")
        .ok(ask("D: can we share slides?"))
        .await
        .unwrap();
    cast.c("mod")
        .ok(Command::ApproveQuestion { question_id: qc })
        .await;
    cast.c("mod")
        .ok(Command::EditQuestion {
            question_id: qd,
            text: "D: will the slides be shared?".into(),
        })
        .await;
    cast.c("cleo").ok(Command::Upvote { question_id: qc }).await;
    cast.c("ana").ok(Command::Upvote { question_id: qc }).await;
    cast.c("pres")
        .ok(Command::SetLiveQuestion {
            question_id: Some(qb),
        })
        .await;
    let qe = cast
        .c("ana")
        .ok(Command::AskQuestion {
            text: "E: what about rural schools?".into(),
            anonymous: true,
        })
        .await
        .unwrap();
    cast.c("mod")
        .ok(Command::ApproveQuestion { question_id: qe })
        .await;
    let qf = cast.c("cleo").ok(ask("F: off topic")).await.unwrap();
    cast.c("mod")
        .ok(Command::ApproveQuestion { question_id: qf })
        .await;
    cast.c("mod")
        .ok(Command::DismissQuestion { question_id: qf })
        .await;
    let qg = cast.c("dan").ok(ask("G: still pending")).await.unwrap();
    wait_votes(cast.c("host"), qc, 2).await;
    let control = cast.sync_with(true).await.remove("eve").unwrap();
    let marker = format!("sync {}", cast.syncs);

    // What eve saw is what a participant may see of those changes.
    let visible: Vec<(u64, QuestionState, bool)> = control
        .iter()
        .filter_map(|e| match e {
            RoomEvent::QuestionUpdated { question } => {
                Some((question.id, question.state, question.live))
            }
            _ => None,
        })
        .collect();
    use QuestionState::Approved;
    assert_eq!(
        visible,
        vec![
            (qc, Approved, false),
            (qb, Approved, true),
            (qe, Approved, false),
            (qf, Approved, false)
        ]
    );
    assert!(control.contains(&RoomEvent::QuestionRemoved { question_id: qf }));
    assert_eq!(
        control
            .iter()
            .rfind(|e| matches!(e, RoomEvent::QuestionVotes { .. })),
        Some(&RoomEvent::QuestionVotes {
            question_id: qc,
            votes: 2
        })
    );

    // ben resumes and receives exactly those events, in order, and nothing of qd or qg.
    let (token, session_id, last_seq) = dropped;
    let (mut ben, first) = t.resume(&token, &session_id, last_seq).await;
    match first {
        ServerMessage::Resumed {
            session_id: resumed,
            last_seq: from,
            seq,
            ..
        } => {
            assert_eq!((resumed.as_str(), from), (session_id.as_str(), last_seq));
            assert!(seq > last_seq);
        }
        other => panic!("expected resumed, got {other:?}"),
    }
    let replay = qa_until(&mut ben, &marker, true).await;
    assert_eq!(
        replay, control,
        "the replay differs from what a connected participant saw"
    );
    let text = format!("{replay:?}");
    assert!(
        !text.contains("D: ") && !text.contains("G: "),
        "pending questions of others leaked: {text}"
    );
    for e in &replay {
        if let RoomEvent::QuestionUpdated { question } = e {
            assert!(![qd, qg].contains(&question.id));
            if question.id == qe {
                assert_eq!(
                    (question.author.as_deref(), question.author_name.as_deref()),
                    (None, None)
                );
            }
        }
    }

    // Live events keep flowing to the resumed session.
    cast.clients.push(("ben", ben));
    cast.c("mod")
        .ok(Command::ApproveQuestion { question_id: qd })
        .await;
    let seen = cast.sync().await;
    assert_eq!(seen["ben"], seen["eve"]);
    assert_eq!(only_update(&seen, "ben", qd).state, Approved);

    // A fresh connection of ben: the snapshot has only what ben may see, live first,
    // then approved by votes (qc 2, qa 1), then by asked time (qd before qe).
    drop(cast.take("ben"));
    let fresh = t.join(ROOM, Role::Participant, "ben").await;
    let snapshot = fresh.snapshot();
    assert_eq!(ids(&snapshot.questions), vec![qb, qc, qa, qd, qe]);
    assert!(snapshot.questions[0].live);
    assert_eq!(
        snapshot
            .questions
            .iter()
            .map(|q| q.votes)
            .collect::<Vec<_>>(),
        vec![0, 2, 1, 0, 0]
    );
    assert!(snapshot.questions.iter().all(|q| q.state == Approved));
    assert_eq!(snapshot.my_votes, vec![qa]);
    assert!(snapshot.my_questions.is_empty());
    // The author of the pending qg sees it too, after the approved ones.
    let dan = t.join(ROOM, Role::Participant, "dan").await;
    assert_eq!(ids(&dan.snapshot().questions), vec![qb, qc, qa, qd, qe, qg]);
    assert_eq!(dan.snapshot().my_questions, vec![qc, qg]);
}

#[tokio::test]
async fn bad_input_is_refused_clearly_and_changes_nothing() {
    let t = roomy_server().await;
    let mut cast = Cast::join(
        &t,
        &[
            ("host", Role::Host, "host"),
            ("mod", Role::Moderator, "mod"),
            ("pres", Role::Presenter, "pres"),
            ("ana", Role::Participant, "ana"),
            ("ben", Role::Participant, "ben"),
            ("cleo", Role::Participant, "cleo"),
        ],
    )
    .await;
    let pending = cast.c("ana").ok(ask("pending")).await.unwrap();
    let approved = cast.c("ben").ok(ask("approved")).await.unwrap();
    let dismissed = cast.c("cleo").ok(ask("dismissed")).await.unwrap();
    let merged = cast
        .c("cleo")
        .ok(ask("merged into approved"))
        .await
        .unwrap();
    for id in [approved, dismissed, merged] {
        cast.c("mod")
            .ok(Command::ApproveQuestion { question_id: id })
            .await;
    }
    cast.c("mod")
        .ok(Command::DismissQuestion {
            question_id: dismissed,
        })
        .await;
    cast.c("mod")
        .ok(Command::MarkDuplicate {
            question_id: merged,
            duplicate_of: approved,
        })
        .await;
    cast.c("ana")
        .ok(Command::Upvote {
            question_id: approved,
        })
        .await;
    wait_votes(cast.c("host"), approved, 1).await;
    cast.sync().await;
    let before = t
        .join(ROOM, Role::Moderator, "auditor")
        .await
        .snapshot()
        .questions
        .clone();

    let long = "x".repeat(MAX_QUESTION_CHARS + 1);
    let cases: Vec<(&str, Command, ErrorCode, &str)> = vec![
        ("ana", ask(""), ErrorCode::InvalidArgument, "empty"),
        ("ana", ask("   \n "), ErrorCode::InvalidArgument, "empty"),
        ("ana", ask(&long), ErrorCode::InvalidArgument, "500"),
        (
            "ana",
            Command::Upvote {
                question_id: approved,
            },
            ErrorCode::Conflict,
            "already",
        ),
        (
            "ben",
            Command::Upvote {
                question_id: approved,
            },
            ErrorCode::Conflict,
            "own",
        ),
        (
            "ben",
            Command::Upvote {
                question_id: pending,
            },
            ErrorCode::NotFound,
            "not found",
        ),
        (
            "ben",
            Command::Upvote {
                question_id: dismissed,
            },
            ErrorCode::NotFound,
            "not found",
        ),
        (
            "ben",
            Command::ApproveQuestion {
                question_id: pending,
            },
            ErrorCode::Forbidden,
            "approve",
        ),
        (
            "ben",
            Command::DismissQuestion {
                question_id: approved,
            },
            ErrorCode::Forbidden,
            "dismiss",
        ),
        (
            "ben",
            Command::EditQuestion {
                question_id: approved,
                text: "mine now".into(),
            },
            ErrorCode::Forbidden,
            "edit",
        ),
        (
            "ben",
            Command::SetLiveQuestion {
                question_id: Some(approved),
            },
            ErrorCode::Forbidden,
            "live",
        ),
        (
            "ben",
            Command::AnswerQuestion {
                question_id: approved,
                answer: None,
            },
            ErrorCode::Forbidden,
            "answer",
        ),
        (
            "ben",
            Command::MarkDuplicate {
                question_id: approved,
                duplicate_of: pending,
            },
            ErrorCode::Forbidden,
            "merge",
        ),
        (
            "ben",
            Command::WithdrawQuestion {
                question_id: pending,
            },
            ErrorCode::NotFound,
            "not found",
        ),
        (
            "cleo",
            Command::WithdrawQuestion {
                question_id: approved,
            },
            ErrorCode::Forbidden,
            "withdraw",
        ),
        (
            "pres",
            Command::ApproveQuestion {
                question_id: pending,
            },
            ErrorCode::Forbidden,
            "approve",
        ),
        (
            "pres",
            Command::AnswerQuestion {
                question_id: pending,
                answer: None,
            },
            ErrorCode::Conflict,
            "approve",
        ),
        (
            "pres",
            Command::SetLiveQuestion {
                question_id: Some(pending),
            },
            ErrorCode::Conflict,
            "approved",
        ),
        (
            "mod",
            Command::AnswerQuestion {
                question_id: dismissed,
                answer: Some("no".into()),
            },
            ErrorCode::Conflict,
            "dismissed",
        ),
        (
            "mod",
            Command::EditQuestion {
                question_id: approved,
                text: " ".into(),
            },
            ErrorCode::InvalidArgument,
            "empty",
        ),
        (
            "mod",
            Command::EditQuestion {
                question_id: approved,
                text: long.clone(),
            },
            ErrorCode::InvalidArgument,
            "500",
        ),
        (
            "mod",
            Command::MarkDuplicate {
                question_id: approved,
                duplicate_of: approved,
            },
            ErrorCode::InvalidArgument,
            "itself",
        ),
        // `merged` already points at `approved`: the reverse link would close a cycle.
        (
            "mod",
            Command::MarkDuplicate {
                question_id: approved,
                duplicate_of: merged,
            },
            ErrorCode::Conflict,
            "dismissed",
        ),
        (
            "mod",
            Command::ApproveQuestion { question_id: 9999 },
            ErrorCode::NotFound,
            "9999",
        ),
        (
            "mod",
            Command::MarkDuplicate {
                question_id: approved,
                duplicate_of: 9999,
            },
            ErrorCode::NotFound,
            "9999",
        ),
        (
            "mod",
            Command::MarkDuplicate {
                question_id: 9999,
                duplicate_of: approved,
            },
            ErrorCode::NotFound,
            "9999",
        ),
        (
            "pres",
            Command::AnswerQuestion {
                question_id: 9999,
                answer: None,
            },
            ErrorCode::NotFound,
            "9999",
        ),
        (
            "ana",
            Command::Upvote { question_id: 9999 },
            ErrorCode::NotFound,
            "9999",
        ),
        (
            "mod",
            Command::ReopenQuestion {
                question_id: approved,
            },
            ErrorCode::Conflict,
            "answered",
        ),
        (
            "mod",
            Command::RestoreQuestion {
                question_id: approved,
            },
            ErrorCode::Conflict,
            "dismissed",
        ),
    ];
    for (who, cmd, code, hint) in cases {
        let (got, message) = cast.c(who).refused(cmd.clone()).await;
        assert_eq!(got, code, "{who} {cmd:?}: {message}");
        assert!(
            message.to_lowercase().contains(hint),
            "{who} {cmd:?}: message {message:?} should mention {hint:?}"
        );
    }
    // Nobody saw anything of it, and the queue is as it was.
    let seen = cast.sync_with(true).await;
    assert!(
        seen.values().all(|e| e.is_empty()),
        "refusals leaked events: {seen:?}"
    );
    let after = t
        .join(ROOM, Role::Moderator, "auditor2")
        .await
        .snapshot()
        .questions
        .clone();
    assert_eq!(after, before);
    assert_eq!(
        after
            .iter()
            .find(|q| q.id == approved)
            .map(|q| (q.votes, q.state)),
        Some((1, QuestionState::Approved))
    );
    // The limit is inclusive: exactly 500 characters is a question.
    cast.c("ana")
        .ok(ask(&"y".repeat(MAX_QUESTION_CHARS)))
        .await
        .expect("500 characters are accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vote_storm_counts_exactly_and_coalesces_updates() {
    const VOTERS: usize = 200;
    let t = TestServer::start().await;
    let mut host = t.join(ROOM, Role::Host, "host").await;
    let mut questions = Vec::new();
    for text in ["Storm one?", "Storm two?", "Storm three?"] {
        let id = host.ok(ask(text)).await.unwrap();
        host.ok(Command::ApproveQuestion { question_id: id }).await;
        questions.push(id);
    }
    let mut observer = t.join(ROOM, Role::Participant, "observer").await;

    // The observer records when each vote count arrives, until every count is final.
    let watched = questions.clone();
    let observing = tokio::spawn(async move {
        let mut arrivals: BTreeMap<u64, Vec<(Instant, u32)>> = BTreeMap::new();
        let done = |a: &BTreeMap<u64, Vec<(Instant, u32)>>| {
            watched.iter().all(|id| {
                a.get(id)
                    .and_then(|v| v.last())
                    .is_some_and(|(_, n)| *n == VOTERS as u32)
            })
        };
        while !done(&arrivals) {
            match observer.try_recv(WAIT * 6).await {
                Some(ServerMessage::Event {
                    event: RoomEvent::QuestionVotes { question_id, votes },
                    ..
                }) => {
                    arrivals
                        .entry(question_id)
                        .or_default()
                        .push((Instant::now(), votes));
                }
                Some(_) => {}
                None => panic!("the observer stopped getting vote counts; so far: {arrivals:?}"),
            }
        }
        // Anything after the final counts would be noise: listen a little longer.
        let late = observer.events_within(Duration::from_millis(800)).await;
        (arrivals, late)
    });

    let names: Vec<String> = (0..VOTERS).map(|i| format!("w{i}")).collect();
    let voters = join_all(names.iter().map(|n| t.join(ROOM, Role::Participant, n))).await;
    let start = Arc::new(tokio::sync::Barrier::new(VOTERS));
    let tasks = voters.into_iter().map(|mut voter| {
        let start = start.clone();
        let questions = questions.clone();
        tokio::spawn(async move {
            start.wait().await;
            let mut requests = Vec::new();
            for &id in &questions {
                requests.push(voter.send(Command::Upvote { question_id: id }).await);
            }
            for rid in requests {
                match voter.reply(&rid).await {
                    ServerMessage::Ack { .. } => {}
                    other => panic!("vote refused: {other:?}"),
                }
            }
            voter
        })
    });
    let voters: Vec<Client> = join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("voter task"))
        .collect();
    assert_eq!(voters.len(), VOTERS);

    let (arrivals, late) = observing.await.expect("observer task");
    assert!(
        late.iter()
            .all(|e| !matches!(e, RoomEvent::QuestionVotes { .. })),
        "counts after the final ones: {late:?}"
    );
    for id in &questions {
        let seen = &arrivals[id];
        let counts: Vec<u32> = seen.iter().map(|(_, n)| *n).collect();
        assert_eq!(*counts.last().unwrap(), VOTERS as u32);
        assert!(
            counts.windows(2).all(|w| w[0] <= w[1]),
            "counts go backwards: {counts:?}"
        );
        assert!(
            seen.len() < VOTERS,
            "question {id}: one event per vote is not coalesced ({} events)",
            seen.len()
        );
        // Coalesced at 250 ms: in any one-second window, a handful of updates at most.
        for (i, (at, _)) in seen.iter().enumerate() {
            let within = seen[i..]
                .iter()
                .take_while(|(t, _)| *t < *at + Duration::from_secs(1))
                .count();
            assert!(
                within <= 5,
                "question {id}: {within} vote updates within one second: {counts:?}"
            );
        }
    }
    // A newcomer's snapshot has the exact counts; a voter's fresh socket knows its votes.
    let fresh = t.join(ROOM, Role::Participant, "fresh").await;
    assert_eq!(
        ids(&fresh.snapshot().questions),
        questions,
        "equal votes keep asked order"
    );
    assert!(
        fresh
            .snapshot()
            .questions
            .iter()
            .all(|q| q.votes == VOTERS as u32),
        "{:?}",
        fresh.snapshot().questions
    );
    let again = t.join(ROOM, Role::Participant, "w7").await;
    assert_eq!(again.snapshot().my_votes, questions);
    drop(voters);
}

/// A minimal CSV reader (quoted fields, doubled quotes, commas and newlines inside quotes).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let (mut row, mut field, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => row.push(std::mem::take(&mut field)),
            ('\n', false) => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (c, _) => field.push(c),
        }
    }
    assert!(
        field.is_empty() && row.is_empty(),
        "CSV ends with a newline"
    );
    rows
}

#[tokio::test]
async fn export_lists_every_question_for_hosts_and_the_api_key_only() {
    let t = roomy_server().await;
    let mut cast = Cast::join(
        &t,
        &[
            ("host", Role::Host, "host"),
            ("mod", Role::Moderator, "mod"),
            ("pres", Role::Presenter, "pres"),
            ("ana", Role::Participant, "ana"),
            ("ben", Role::Participant, "ben"),
        ],
    )
    .await;
    let tricky = "How do we enrol, and what does \"enrol\" mean?";
    let answered = cast.c("ana").ok(ask(tricky)).await.unwrap();
    let anonymous = cast
        .c("ben")
        .ok(Command::AskQuestion {
            text: "Who pays?".into(),
            anonymous: true,
        })
        .await
        .unwrap();
    let dismissed = cast.c("ana").ok(ask("Lunch?")).await.unwrap();
    for id in [answered, dismissed] {
        cast.c("mod")
            .ok(Command::ApproveQuestion { question_id: id })
            .await;
    }
    cast.c("ben")
        .ok(Command::Upvote {
            question_id: answered,
        })
        .await;
    cast.c("pres")
        .ok(Command::AnswerQuestion {
            question_id: answered,
            answer: Some("Sign the MOU, then\nregister.".into()),
        })
        .await;
    cast.c("mod")
        .ok(Command::DismissQuestion {
            question_id: dismissed,
        })
        .await;

    let url = |room: &str, format: &str| {
        format!("{}/api/v1/rooms/{room}/questions?format={format}", t.http())
    };
    let host_token = t.token(ROOM, Role::Host, "host");
    for bearer in [host_token.as_str(), common::API_KEY] {
        let (status, body) = http_get(&url(ROOM, "json"), Some(bearer), &[]).await;
        assert_eq!(status, 200, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["room"], ROOM);
        let exported: Vec<Question> =
            serde_json::from_value(json["questions"].clone()).expect("questions in the wire shape");
        assert_eq!(ids(&exported), vec![answered, anonymous, dismissed]);
        let a = &exported[0];
        assert_eq!(
            (a.text.as_str(), a.state, a.votes, a.author.as_deref()),
            (tricky, QuestionState::Answered, 1, Some("ana"))
        );
        assert_eq!(a.answer.as_deref(), Some("Sign the MOU, then\nregister."));
        assert!(
            a.asked_at > 0
                && a.updated_at >= a.asked_at
                && a.answered_at.is_some_and(|t| t >= a.asked_at),
            "{a:?}"
        );
        let b = &exported[1];
        assert_eq!(
            (
                b.state,
                b.anonymous,
                b.author.as_deref(),
                b.author_name.as_deref()
            ),
            (QuestionState::Pending, true, None, None)
        );
        assert_eq!(exported[2].state, QuestionState::Dismissed);
        assert!(
            !body.contains("\"ben\""),
            "an anonymous author leaked into the export: {body}"
        );

        let (status, body) = http_get(&url(ROOM, "csv"), Some(bearer), &[]).await;
        assert_eq!(status, 200, "{body}");
        let rows = parse_csv(&body);
        assert_eq!(rows[0].join(","), "id,state,live,votes,text,edited,author,author_name,anonymous,asked_at,updated_at,answered_at,answer,duplicate_of");
        assert_eq!(rows.len(), 4, "{body}");
        assert!(rows.iter().all(|r| r.len() == rows[0].len()), "{rows:?}");
        let row = &rows[1];
        assert_eq!(row[0], answered.to_string());
        assert_eq!(
            (
                row[1].as_str(),
                row[3].as_str(),
                row[4].as_str(),
                row[6].as_str()
            ),
            ("answered", "1", tricky, "ana")
        );
        assert_eq!(row[9], a.asked_at.to_string());
        assert_eq!(row[11], a.answered_at.unwrap().to_string());
        assert_eq!(row[12], "Sign the MOU, then\nregister.");
        assert_eq!(
            (
                rows[2][1].as_str(),
                rows[2][6].as_str(),
                rows[2][7].as_str(),
                rows[2][8].as_str()
            ),
            ("pending", "", "anonymous", "true")
        );
        assert_eq!(
            (rows[3][1].as_str(), rows[3][11].as_str()),
            ("dismissed", "")
        );
    }
    // Refusals, each with a JSON error body.
    let participant = t.token(ROOM, Role::Participant, "ana");
    let moderator = t.token(ROOM, Role::Moderator, "mod");
    let cases = [
        (url(ROOM, "json"), Some(participant.as_str()), 403),
        (url(ROOM, "csv"), Some(moderator.as_str()), 403),
        (url(ROOM, "json"), None, 401),
        (url(ROOM, "json"), Some("not-a-token"), 401),
        (url("no-such-room", "json"), Some(common::API_KEY), 404),
        (url(ROOM, "xml"), Some(host_token.as_str()), 400),
        (url(ROOM, "xml"), Some(common::API_KEY), 400),
    ];
    for (url, bearer, want) in cases {
        let (status, body) = http_get(&url, bearer, &[]).await;
        assert_eq!(status, want, "{url}: {body}");
        let json: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("JSON error body: {body}"));
        assert!(
            json["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    }
}

#[tokio::test]
async fn questions_are_limited_per_identity_per_minute() {
    // Two sockets of ana at once: the limit is the identity's, not the socket's.
    let t = TestServer::start_with(|c| c.limits.sessions_per_identity = 2).await;
    let mut cast = Cast::join(
        &t,
        &[
            ("host", Role::Host, "host"),
            ("ana", Role::Participant, "ana"),
            ("ana#2", Role::Participant, "ana"),
            ("ben", Role::Participant, "ben"),
        ],
    )
    .await;
    for i in 1..=5 {
        cast.c("ana").ok(ask(&format!("question {i}"))).await;
    }
    for who in ["ana", "ana#2"] {
        let rid = cast.c(who).send(ask("one too many")).await;
        match cast.c(who).reply(&rid).await {
            ServerMessage::Error {
                code,
                message,
                retry_after_ms,
                ..
            } => {
                assert_eq!(code, ErrorCode::RateLimited, "{who}: {message}");
                assert!(message.contains('5'), "{message}");
                assert!(
                    retry_after_ms.is_some_and(|ms| ms > 0 && ms <= 60_000),
                    "{who}: retry_after_ms {retry_after_ms:?}"
                );
            }
            other => panic!("{who}: the sixth question was accepted: {other:?}"),
        }
    }
    // Another person is not limited by ana's questions.
    cast.c("ben").ok(ask("mine")).await;
    let seen = cast.sync().await;
    let pending: Vec<String> = updates(&seen["host"])
        .iter()
        .map(|q| q.text.clone())
        .collect();
    assert_eq!(
        pending,
        vec![
            "question 1",
            "question 2",
            "question 3",
            "question 4",
            "question 5",
            "mine"
        ]
    );
    assert!(
        seen["ana#2"].len() == 5 && seen["ben"].len() == 1,
        "{seen:?}"
    );
}

#[tokio::test]
async fn the_question_limit_comes_from_config() {
    let t = TestServer::start_with(|c| c.limits.questions_per_minute = 2).await;
    let mut ana = t.join(ROOM, Role::Participant, "ana").await;
    ana.ok(ask("one")).await;
    ana.ok(ask("two")).await;
    let (code, message) = ana.refused(ask("three")).await;
    assert_eq!(code, ErrorCode::RateLimited);
    assert!(message.contains('2'), "{message}");
}
