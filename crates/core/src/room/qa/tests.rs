//! Tests of `Qa`: who sees which question, moderation rights, votes, the live question, duplicates, order.

use super::*;

fn asker(identity: &str, role: Role) -> Asker<'_> {
    Asker {
        identity,
        name: identity,
        role,
    }
}

fn ask(qa: &mut Qa, who: &str, text: &str, mode: QaMode, now: Millis) -> u64 {
    qa.apply(
        &Command::AskQuestion {
            text: text.into(),
            anonymous: false,
        },
        &asker(who, Role::Participant),
        mode,
        100,
        now,
    )
    .unwrap()
    .created
    .unwrap()
}

fn run(qa: &mut Qa, cmd: Command, who: &str, role: Role, now: Millis) -> Result<Outcome, Denied> {
    qa.apply(&cmd, &asker(who, role), QaMode::Moderated, 100, now)
}

#[test]
fn moderated_question_reaches_staff_and_author_only() {
    let mut qa = Qa::default();
    let out = qa
        .apply(
            &Command::AskQuestion {
                text: "Why?".into(),
                anonymous: false,
            },
            &asker("ana", Role::Participant),
            QaMode::Moderated,
            5,
            0,
        )
        .unwrap();
    assert_eq!(out.events.len(), 1);
    assert_eq!(out.events[0].audience, Audience::staff_and("ana"));
    let id = out.created.unwrap();
    assert_eq!(qa.get(id).unwrap().state, QuestionState::Pending);
    // Another participant can neither see nor vote on it.
    let err = run(
        &mut qa,
        Command::Upvote { question_id: id },
        "ben",
        Role::Participant,
        1,
    )
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
    // Approval publishes it to everyone.
    let out = run(
        &mut qa,
        Command::ApproveQuestion { question_id: id },
        "mod",
        Role::Moderator,
        2,
    )
    .unwrap();
    assert_eq!(out.events[0].audience, Audience::Everyone);
}

#[test]
fn participants_cannot_moderate() {
    let mut qa = Qa::default();
    let id = ask(&mut qa, "ana", "q", QaMode::Moderated, 0);
    for cmd in [
        Command::ApproveQuestion { question_id: id },
        Command::DismissQuestion { question_id: id },
        Command::EditQuestion {
            question_id: id,
            text: "x".into(),
        },
        Command::MarkDuplicate {
            question_id: id,
            duplicate_of: id,
        },
        Command::SetLiveQuestion {
            question_id: Some(id),
        },
        Command::AnswerQuestion {
            question_id: id,
            answer: None,
        },
    ] {
        let err = run(&mut qa, cmd, "ben", Role::Participant, 1).unwrap_err();
        assert_eq!(err.code, ErrorCode::Forbidden);
    }
    // Presenters may not approve but may answer approved questions.
    let err = run(
        &mut qa,
        Command::ApproveQuestion { question_id: id },
        "pres",
        Role::Presenter,
        1,
    )
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::Forbidden);
    let err = run(
        &mut qa,
        Command::AnswerQuestion {
            question_id: id,
            answer: None,
        },
        "pres",
        Role::Presenter,
        1,
    )
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::Conflict);
}

#[test]
fn votes_are_one_per_identity_and_not_on_own_question() {
    let mut qa = Qa::default();
    let id = ask(&mut qa, "ana", "q", QaMode::Open, 0);
    run(
        &mut qa,
        Command::Upvote { question_id: id },
        "ben",
        Role::Participant,
        1,
    )
    .unwrap();
    let twice = run(
        &mut qa,
        Command::Upvote { question_id: id },
        "ben",
        Role::Participant,
        2,
    )
    .unwrap_err();
    assert_eq!(twice.code, ErrorCode::Conflict);
    let own = run(
        &mut qa,
        Command::Upvote { question_id: id },
        "ana",
        Role::Participant,
        3,
    )
    .unwrap_err();
    assert_eq!(own.code, ErrorCode::Conflict);
    assert_eq!(qa.get(id).unwrap().votes, 1);
    run(
        &mut qa,
        Command::RemoveUpvote { question_id: id },
        "ben",
        Role::Participant,
        4,
    )
    .unwrap();
    assert_eq!(qa.get(id).unwrap().votes, 0);
    let err = run(
        &mut qa,
        Command::RemoveUpvote { question_id: id },
        "ben",
        Role::Participant,
        5,
    )
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::Conflict);
}

#[test]
fn vote_counts_are_coalesced_but_exact() {
    let mut qa = Qa::default();
    let id = ask(&mut qa, "ana", "q", QaMode::Open, 0);
    let mut sent = 0;
    for i in 0..100u64 {
        let out = run(
            &mut qa,
            Command::Upvote { question_id: id },
            &format!("v{i}"),
            Role::Participant,
            1000 + i,
        )
        .unwrap();
        sent += out.events.len();
    }
    // 100 votes within 100 ms: the first goes out at once, the rest wait for the window.
    assert_eq!(sent, 1);
    assert_eq!(qa.next_deadline(), Some(1000 + VOTE_INTERVAL_MS));
    assert!(qa.flush_votes(1100, false).is_empty());
    let flushed = qa.flush_votes(1000 + VOTE_INTERVAL_MS, false);
    assert_eq!(
        flushed[0].body,
        RoomEvent::QuestionVotes {
            question_id: id,
            votes: 100
        }
    );
    assert_eq!(qa.next_deadline(), None);
}

#[test]
fn one_live_question_at_a_time() {
    let mut qa = Qa::default();
    let a = ask(&mut qa, "ana", "a", QaMode::Open, 0);
    let b = ask(&mut qa, "ben", "b", QaMode::Open, 1);
    run(
        &mut qa,
        Command::SetLiveQuestion {
            question_id: Some(a),
        },
        "pres",
        Role::Presenter,
        2,
    )
    .unwrap();
    assert!(qa.get(a).unwrap().live);
    let out = run(
        &mut qa,
        Command::SetLiveQuestion {
            question_id: Some(b),
        },
        "pres",
        Role::Presenter,
        3,
    )
    .unwrap();
    assert_eq!(out.events.len(), 2);
    assert!(!qa.get(a).unwrap().live);
    assert!(qa.get(b).unwrap().live);
    assert_eq!(qa.live(), Some(b));
    // Answering the live question clears it.
    run(
        &mut qa,
        Command::AnswerQuestion {
            question_id: b,
            answer: Some("Yes.".into()),
        },
        "pres",
        Role::Presenter,
        4,
    )
    .unwrap();
    let q = qa.get(b).unwrap();
    assert_eq!(
        (q.state, q.live, q.answer.as_deref()),
        (QuestionState::Answered, false, Some("Yes."))
    );
    assert_eq!(qa.live(), None);
    // Reopen brings it back to the queue.
    run(
        &mut qa,
        Command::ReopenQuestion { question_id: b },
        "mod",
        Role::Moderator,
        5,
    )
    .unwrap();
    assert_eq!(qa.get(b).unwrap().state, QuestionState::Approved);
    run(
        &mut qa,
        Command::SetLiveQuestion { question_id: None },
        "pres",
        Role::Presenter,
        6,
    )
    .unwrap();
}

#[test]
fn dismiss_restore_and_answer_rules() {
    let mut qa = Qa::default();
    let id = ask(&mut qa, "ana", "q", QaMode::Open, 0);
    run(
        &mut qa,
        Command::SetLiveQuestion {
            question_id: Some(id),
        },
        "mod",
        Role::Moderator,
        1,
    )
    .unwrap();
    let out = run(
        &mut qa,
        Command::DismissQuestion { question_id: id },
        "mod",
        Role::Moderator,
        2,
    )
    .unwrap();
    // Others are told it is gone; staff and the author see the dismissed record.
    assert!(out
        .events
        .iter()
        .any(|e| e.audience == Audience::Rest("ana".into())
            && e.body == RoomEvent::QuestionRemoved { question_id: id }));
    assert_eq!(qa.live(), None);
    let err = run(
        &mut qa,
        Command::AnswerQuestion {
            question_id: id,
            answer: None,
        },
        "mod",
        Role::Moderator,
        3,
    )
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::Conflict);
    assert!(err.message.contains("dismissed"));
    run(
        &mut qa,
        Command::RestoreQuestion { question_id: id },
        "mod",
        Role::Moderator,
        4,
    )
    .unwrap();
    assert_eq!(qa.get(id).unwrap().state, QuestionState::Approved);
    let again = run(
        &mut qa,
        Command::RestoreQuestion { question_id: id },
        "mod",
        Role::Moderator,
        5,
    )
    .unwrap_err();
    assert_eq!(again.code, ErrorCode::Conflict);
    let unknown = run(
        &mut qa,
        Command::ApproveQuestion { question_id: 999 },
        "mod",
        Role::Moderator,
        6,
    )
    .unwrap_err();
    assert_eq!(unknown.code, ErrorCode::NotFound);
}

#[test]
fn edit_marks_edited_and_validates() {
    let mut qa = Qa::default();
    let id = ask(&mut qa, "ana", "q", QaMode::Moderated, 0);
    run(
        &mut qa,
        Command::EditQuestion {
            question_id: id,
            text: "Better q".into(),
        },
        "mod",
        Role::Moderator,
        1,
    )
    .unwrap();
    let q = qa.get(id).unwrap();
    assert!(q.edited);
    assert_eq!(q.text, "Better q");
    for bad in ["", "   ", &"x".repeat(MAX_QUESTION_CHARS + 1)] {
        let err = run(
            &mut qa,
            Command::EditQuestion {
                question_id: id,
                text: bad.into(),
            },
            "mod",
            Role::Moderator,
            2,
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
    }
}

#[test]
fn duplicate_moves_votes_without_double_counting() {
    let mut qa = Qa::default();
    let original = ask(&mut qa, "ana", "How do we enrol?", QaMode::Open, 0);
    let dup = ask(&mut qa, "ben", "How to enrol?", QaMode::Open, 1);
    for v in ["c", "d"] {
        run(
            &mut qa,
            Command::Upvote {
                question_id: original,
            },
            v,
            Role::Participant,
            2,
        )
        .unwrap();
    }
    // c voted for both; ana (the original's author) voted for the duplicate.
    for v in ["c", "e", "ana"] {
        run(
            &mut qa,
            Command::Upvote { question_id: dup },
            v,
            Role::Participant,
            3,
        )
        .unwrap();
    }
    run(
        &mut qa,
        Command::MarkDuplicate {
            question_id: dup,
            duplicate_of: original,
        },
        "mod",
        Role::Moderator,
        4,
    )
    .unwrap();
    assert_eq!(qa.get(original).unwrap().votes, 3); // c, d, e
    let d = qa.get(dup).unwrap();
    assert_eq!(
        (d.state, d.duplicate_of, d.votes),
        (QuestionState::Dismissed, Some(original), 0)
    );
    // Self-reference, cycles and dismissed targets are refused.
    let err = run(
        &mut qa,
        Command::MarkDuplicate {
            question_id: original,
            duplicate_of: original,
        },
        "mod",
        Role::Moderator,
        5,
    )
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    let err = run(
        &mut qa,
        Command::MarkDuplicate {
            question_id: original,
            duplicate_of: dup,
        },
        "mod",
        Role::Moderator,
        5,
    )
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::Conflict);
    // A chain a -> b where b -> a would be a cycle.
    let third = ask(&mut qa, "f", "third", QaMode::Open, 6);
    run(
        &mut qa,
        Command::MarkDuplicate {
            question_id: third,
            duplicate_of: original,
        },
        "mod",
        Role::Moderator,
        7,
    )
    .unwrap();
    run(
        &mut qa,
        Command::RestoreQuestion { question_id: third },
        "mod",
        Role::Moderator,
        8,
    )
    .unwrap();
    run(
        &mut qa,
        Command::MarkDuplicate {
            question_id: original,
            duplicate_of: third,
        },
        "mod",
        Role::Moderator,
        9,
    )
    .unwrap();
    let err = run(
        &mut qa,
        Command::MarkDuplicate {
            question_id: third,
            duplicate_of: original,
        },
        "mod",
        Role::Moderator,
        10,
    )
    .unwrap_err();
    assert!(
        err.message.contains("dismissed") || err.message.contains("cycle"),
        "{err:?}"
    );
}

#[test]
fn withdraw_and_rate_limit() {
    let mut qa = Qa::default();
    let id = ask(&mut qa, "ana", "q", QaMode::Open, 0);
    let err = run(
        &mut qa,
        Command::WithdrawQuestion { question_id: id },
        "ben",
        Role::Participant,
        1,
    )
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::Forbidden);
    run(
        &mut qa,
        Command::WithdrawQuestion { question_id: id },
        "ana",
        Role::Participant,
        2,
    )
    .unwrap();
    assert!(qa.get(id).is_none());
    let ask_at = |qa: &mut Qa, now| {
        qa.apply(
            &Command::AskQuestion {
                text: "q".into(),
                anonymous: true,
            },
            &asker("zed", Role::Participant),
            QaMode::Open,
            2,
            now,
        )
    };
    ask_at(&mut qa, 10_000).unwrap();
    ask_at(&mut qa, 20_000).unwrap();
    let err = ask_at(&mut qa, 30_000).unwrap_err();
    assert_eq!(err.code, ErrorCode::RateLimited);
    assert_eq!(err.retry_after_ms, Some(40_000));
    ask_at(&mut qa, 70_000).unwrap();
}

#[test]
fn anonymous_questions_hide_the_author_but_not_from_the_server() {
    let mut qa = Qa::default();
    let out = qa
        .apply(
            &Command::AskQuestion {
                text: "q".into(),
                anonymous: true,
            },
            &asker("ana", Role::Participant),
            QaMode::Moderated,
            5,
            0,
        )
        .unwrap();
    let id = out.created.unwrap();
    let q = qa.get(id).unwrap();
    assert_eq!(
        (q.author.as_deref(), q.author_name.as_deref()),
        (None, None)
    );
    assert_eq!(qa.asked_by("ana"), vec![id]);
    // The pending anonymous question still reaches its author.
    assert_eq!(out.events[0].audience, Audience::staff_and("ana"));
}

#[test]
fn display_order_is_live_then_votes_then_age() {
    let mut qa = Qa::default();
    let a = ask(&mut qa, "a", "a", QaMode::Open, 0);
    let b = ask(&mut qa, "b", "b", QaMode::Open, 1);
    let c = ask(&mut qa, "c", "c", QaMode::Open, 2);
    let p = ask(&mut qa, "p", "p", QaMode::Moderated, 3);
    run(
        &mut qa,
        Command::Upvote { question_id: c },
        "x",
        Role::Participant,
        4,
    )
    .unwrap();
    run(
        &mut qa,
        Command::SetLiveQuestion {
            question_id: Some(b),
        },
        "m",
        Role::Moderator,
        5,
    )
    .unwrap();
    let staff = Viewer {
        identity: "m".into(),
        role: Role::Moderator,
        place: super::super::Place::Main,
    };
    let (open, _) = qa.visible_to(&staff);
    assert_eq!(
        open.iter().map(|q| q.id).collect::<Vec<_>>(),
        vec![b, c, a, p]
    );
    let other = Viewer {
        identity: "z".into(),
        role: Role::Participant,
        place: super::super::Place::Main,
    };
    let (open, _) = qa.visible_to(&other);
    assert_eq!(open.iter().map(|q| q.id).collect::<Vec<_>>(), vec![b, c, a]);
}
