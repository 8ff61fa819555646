//! The assertions every cluster scenario makes over the attendees' recorded logs: contiguous
//! seq except across an explicit welcome, one set of bytes per seq on every node, every acked
//! request_id applied exactly once at every receiver, exact final votes, and no 1013.

use std::collections::{BTreeMap, BTreeSet};

use convene_signaling::{Command, ErrorCode, RoomEvent, RoomSnapshot};

use super::crowd::{First, Log};

/// What a scenario tolerates.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// No socket may close at all (steady traffic, Redis outage, pub/sub kills).
    pub no_closes: bool,
    /// Every reconnect must be answered with `resumed` (never a fresh `welcome`).
    pub require_resumed: bool,
}

/// A fresh session's view at the end: its welcome seq and snapshot.
pub struct Observer {
    pub node: usize,
    pub seq: u64,
    pub snapshot: RoomSnapshot,
}

/// Figures of a run, for the scenario's own assertions and its report line.
#[derive(Debug, Default)]
pub struct Summary {
    pub max_seq: u64,
    pub frames: usize,
    pub chats_acked: usize,
    pub questions_acked: usize,
    pub upvotes_acked: usize,
    pub reconnects: usize,
    pub resumed: usize,
    pub welcomes_after_resume: usize,
    pub unavailable_with_retry: usize,
    pub closes: BTreeMap<String, usize>,
    /// Connections the attendees dropped on purpose.
    pub dropped: usize,
    /// Connections that never brought a welcome or resumed (closed, or given up after 8 s).
    pub abandoned: usize,
    /// Commands a fresh `welcome` left unanswered (the browser client gives them up too).
    pub given_up: usize,
}

fn chat_marker(event: &RoomEvent) -> Option<&str> {
    match event {
        RoomEvent::ChatMessage { message } if message.text.starts_with("m ") => Some(&message.text),
        _ => None,
    }
}

fn question_marker(event: &RoomEvent) -> Option<(&str, u64)> {
    match event {
        RoomEvent::QuestionUpdated { question } if question.text.starts_with("q ") => {
            Some((&question.text, question.id))
        }
        _ => None,
    }
}

/// Checks every log; panics listing every violation (plus `earlier`, problems the scenario
/// already found, such as attendees that never converged). Returns the run's figures.
pub fn check(logs: &[Log], observers: &[Observer], rules: Rules, earlier: Vec<String>) -> Summary {
    let mut bad: Vec<String> = earlier;
    let mut sum = Summary::default();

    // Same seq, same bytes, wherever it was received; and where each marker landed.
    let mut by_seq: BTreeMap<u64, (&str, &str, usize)> = BTreeMap::new();
    let mut chat_seqs: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    let mut question_ids: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    let mut question_seqs: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for log in logs {
        for conn in &log.conns {
            for seen in &conn.events {
                sum.frames += 1;
                sum.max_seq = sum.max_seq.max(seen.seq);
                match by_seq.get(&seen.seq) {
                    None => {
                        by_seq.insert(seen.seq, (&seen.text, &log.identity, conn.node));
                    }
                    Some((text, who, node)) if *text != seen.text => bad.push(format!(
                        "seq {} differs: {who} (via node {node}) got {text}; {} (via node {}) got {}",
                        seen.seq, log.identity, conn.node, seen.text
                    )),
                    Some(_) => {}
                }
                if let Some(m) = chat_marker(&seen.event) {
                    chat_seqs.entry(m).or_default().insert(seen.seq);
                }
                if let Some((m, id)) = question_marker(&seen.event) {
                    question_ids.entry(m).or_default().insert(id);
                    question_seqs.entry(m).or_default().insert(seen.seq);
                }
            }
        }
    }
    for (m, seqs) in &chat_seqs {
        if seqs.len() != 1 {
            bad.push(format!(
                "chat {m:?} was appended {} times, at seq {seqs:?}",
                seqs.len()
            ));
        }
    }
    for (m, ids) in &question_ids {
        if ids.len() != 1 {
            bad.push(format!(
                "question {m:?} exists {} times: ids {ids:?}",
                ids.len()
            ));
        }
    }
    for (m, seqs) in &question_seqs {
        if seqs.len() != 1 {
            bad.push(format!(
                "question {m:?} was announced at {} seqs {seqs:?} (only asks in this test)",
                seqs.len()
            ));
        }
    }

    // What was acknowledged, and where each acked effect sits in the stream.
    let mut acked_chats: Vec<(String, u64)> = Vec::new();
    let mut acked_questions: Vec<(String, u64)> = Vec::new();
    let mut expected_votes: BTreeMap<u64, BTreeSet<&str>> = BTreeMap::new();
    for log in logs {
        for (rid, id) in &log.acked {
            let Some(command) = log.sent.get(rid) else {
                continue;
            };
            match command {
                Command::SendChat { text } => {
                    sum.chats_acked += 1;
                    match chat_seqs.get(text.as_str()).and_then(|s| s.first()) {
                        Some(&seq) => acked_chats.push((text.clone(), seq)),
                        None => bad.push(format!(
                            "{} {rid}: chat {text:?} was acked (id {id:?}) but nobody received it",
                            log.identity
                        )),
                    }
                }
                Command::AskQuestion { text, .. } => {
                    sum.questions_acked += 1;
                    match question_seqs.get(text.as_str()).and_then(|s| s.first()) {
                        Some(&seq) => acked_questions.push((text.clone(), seq)),
                        None => bad.push(format!(
                            "{} {rid}: question {text:?} was acked (id {id:?}) but nobody received it",
                            log.identity
                        )),
                    }
                    if let Some(ids) = question_ids.get(text.as_str()) {
                        if id.is_none() || !ids.contains(&id.unwrap_or(0)) {
                            bad.push(format!(
                                "{} {rid}: ack id {id:?} is not the question's id {ids:?}",
                                log.identity
                            ));
                        }
                    }
                }
                Command::Upvote { question_id } => {
                    sum.upvotes_acked += 1;
                    expected_votes
                        .entry(*question_id)
                        .or_default()
                        .insert(&log.identity);
                }
                _ => {}
            }
        }
        for e in &log.errors {
            match e.code {
                ErrorCode::Unavailable => {
                    if e.retry_after_ms.is_some() {
                        sum.unavailable_with_retry += 1;
                    } else {
                        bad.push(format!(
                            "{}: unavailable without retry_after_ms: {e:?}",
                            log.identity
                        ));
                    }
                }
                ErrorCode::RateLimited => {}
                _ => bad.push(format!("{}: refused: {e:?}", log.identity)),
            }
        }
        sum.given_up += log.given_up.len();
        for rid in &log.unanswered {
            // Whether the command took effect tells a lost reply from a lost command.
            let effect = match log.sent.get(rid) {
                Some(Command::SendChat { text }) => match chat_seqs.get(text.as_str()) {
                    Some(seqs) => format!("chat {text:?} applied at seq {seqs:?}"),
                    None => format!("chat {text:?} not applied"),
                },
                Some(Command::AskQuestion { text, .. }) => match question_seqs.get(text.as_str()) {
                    Some(seqs) => format!("question {text:?} applied at seq {seqs:?}"),
                    None => format!("question {text:?} not applied"),
                },
                other => format!("{other:?}"),
            };
            let sent = log.first_sent.get(rid).map_or("never", String::as_str);
            bad.push(format!(
                "{} {rid}: never answered ({effect}; first sent {sent} UTC on node {})",
                log.identity,
                log.conns.last().map_or(0, |c| c.node)
            ));
        }
        for odd in &log.oddities {
            bad.push(format!("{}: {odd}", log.identity));
        }
    }
    // Upvotes sent but never acked (already violations of their own) may or may not count.
    let mut unsure_votes: BTreeMap<u64, u32> = BTreeMap::new();
    for log in logs {
        for rid in log.unanswered.iter().chain(&log.given_up) {
            if let Some(Command::Upvote { question_id }) = log.sent.get(rid) {
                *unsure_votes.entry(*question_id).or_default() += 1;
            }
        }
    }
    let votes_fit = |question_id: u64, acked: usize, votes: Option<u32>| {
        let acked = acked as u32;
        let unsure = unsure_votes.get(&question_id).copied().unwrap_or(0);
        votes.is_some_and(|v| v >= acked && v <= acked + unsure)
    };
    for (&question_id, voters) in &expected_votes {
        if !question_ids.values().any(|ids| ids.contains(&question_id)) {
            bad.push(format!(
                "upvotes of question {question_id} acked ({voters:?}) but the question was never received"
            ));
        }
    }

    // Per attendee: contiguity, resumes, closes, each acked effect exactly once, final votes.
    for log in logs {
        let who = &log.identity;
        if log.conns.is_empty() {
            bad.push(format!("{who}: never connected"));
            continue;
        }
        let mut last: Option<u64> = None;
        // Seqs this attendee was owed: after its first welcome, outside welcome gaps.
        let mut owed_from = 0u64;
        let mut gaps: Vec<(u64, u64)> = Vec::new();
        let mut received: BTreeMap<u64, usize> = BTreeMap::new();
        let mut votes: BTreeMap<u64, u32> = BTreeMap::new();
        for (i, conn) in log.conns.iter().enumerate() {
            if i > 0 {
                sum.reconnects += 1;
            }
            match &conn.first {
                None => {
                    sum.abandoned += 1;
                    if !conn.events.is_empty() {
                        bad.push(format!("{who} conn {i}: events without welcome/resumed"));
                    }
                }
                Some(First::Welcome {
                    seq,
                    resume_failed,
                    snapshot,
                }) => {
                    if i == 0 {
                        owed_from = *seq;
                        if conn.resume_from.is_some() {
                            bad.push(format!("{who}: first connection was a resume"));
                        }
                    } else {
                        sum.welcomes_after_resume += 1;
                        if rules.require_resumed {
                            bad.push(format!(
                                "{who} conn {i} (node {}): resume from {:?} got a fresh welcome at seq {seq} ({resume_failed:?})",
                                conn.node, conn.resume_from
                            ));
                        }
                        if let Some(l) = last {
                            if *seq > l {
                                gaps.push((l, *seq));
                            } else if *seq < l {
                                bad.push(format!(
                                    "{who} conn {i}: welcome at seq {seq} after having seen {l}"
                                ));
                            }
                        }
                    }
                    votes = snapshot
                        .questions
                        .iter()
                        .chain(&snapshot.answered)
                        .map(|q| (q.id, q.votes))
                        .collect();
                    last = Some(*seq);
                }
                Some(First::Resumed { last_seq, seq }) => {
                    sum.resumed += 1;
                    if conn.resume_from != Some(*last_seq) {
                        bad.push(format!(
                            "{who} conn {i}: resumed from {last_seq}, but asked from {:?}",
                            conn.resume_from
                        ));
                    }
                    if *seq < *last_seq {
                        bad.push(format!(
                            "{who} conn {i}: resumed with room seq {seq} below last_seq {last_seq}"
                        ));
                    }
                    if last != Some(*last_seq) {
                        bad.push(format!(
                            "{who} conn {i}: resumed from {last_seq}, but had seen {last:?}"
                        ));
                    }
                }
            }
            for seen in &conn.events {
                if let Some(l) = last {
                    if seen.seq != l + 1 {
                        bad.push(format!(
                            "{who} conn {i} (node {}): seq {} after {l} (not contiguous)",
                            conn.node, seen.seq
                        ));
                    }
                }
                last = Some(seen.seq);
                *received.entry(seen.seq).or_default() += 1;
                match &seen.event {
                    RoomEvent::QuestionVotes {
                        question_id,
                        votes: v,
                    } => {
                        votes.insert(*question_id, *v);
                    }
                    RoomEvent::QuestionUpdated { question } => {
                        votes.insert(question.id, question.votes);
                    }
                    _ => {}
                }
            }
            if conn.dropped {
                sum.dropped += 1;
                continue;
            }
            match conn.closed {
                Some(Some(1013)) => bad.push(format!(
                    "{who} conn {i} (node {}): closed with 1013",
                    conn.node
                )),
                Some(code) => {
                    *sum.closes
                        .entry(code.map_or("none".to_string(), |c| c.to_string()))
                        .or_default() += 1;
                    if rules.no_closes {
                        bad.push(format!(
                            "{who} conn {i} (node {}): closed ({code:?}) in a scenario where sockets stay open",
                            conn.node
                        ));
                    }
                }
                None => {}
            }
        }
        let open_at_end = log.conns.last().is_some_and(|c| c.closed.is_none());
        if !open_at_end {
            bad.push(format!("{who}: not connected at the end"));
            continue;
        }
        let end = last.unwrap_or(0);
        let owed = |seq: u64| {
            seq > owed_from && seq <= end && !gaps.iter().any(|&(a, b)| seq > a && seq <= b)
        };
        for (seq, n) in &received {
            if *n > 1 {
                bad.push(format!("{who}: seq {seq} received {n} times"));
            }
        }
        let count_of = |marker: &str, pick: &dyn Fn(&RoomEvent) -> Option<String>| {
            log.conns
                .iter()
                .flat_map(|c| &c.events)
                .filter(|s| pick(&s.event).as_deref() == Some(marker))
                .count()
        };
        for (marker, seq) in &acked_chats {
            if owed(*seq) {
                let n = count_of(marker, &|e| chat_marker(e).map(str::to_string));
                if n != 1 {
                    bad.push(format!(
                        "{who}: acked chat {marker:?} (seq {seq}) received {n} times"
                    ));
                }
            }
        }
        for (marker, seq) in &acked_questions {
            if owed(*seq) {
                let n = count_of(marker, &|e| question_marker(e).map(|(m, _)| m.to_string()));
                if n != 1 {
                    bad.push(format!(
                        "{who}: acked question {marker:?} (seq {seq}) received {n} times"
                    ));
                }
            }
        }
        for (question_id, voters) in &expected_votes {
            let seen = votes.get(question_id).copied();
            if !votes_fit(*question_id, voters.len(), seen) {
                bad.push(format!(
                    "{who}: last votes seen for question {question_id} {seen:?}, but {} upvotes were acked",
                    voters.len()
                ));
            }
        }
        if end != sum.max_seq {
            bad.push(format!(
                "{who}: ended at seq {end}, the room reached {}",
                sum.max_seq
            ));
        }
    }

    // A fresh session on each node at the end sees the same room.
    for o in observers {
        if o.seq < sum.max_seq {
            bad.push(format!(
                "observer on node {}: welcome at seq {}, below {} already delivered",
                o.node, o.seq, sum.max_seq
            ));
        }
        for (question_id, voters) in &expected_votes {
            let votes = o
                .snapshot
                .questions
                .iter()
                .find(|q| q.id == *question_id)
                .map(|q| q.votes);
            if !votes_fit(*question_id, voters.len(), votes) {
                bad.push(format!(
                    "observer on node {}: question {question_id} has {votes:?} votes, {} upvotes were acked",
                    o.node,
                    voters.len()
                ));
            }
        }
        for (marker, _) in &acked_questions {
            let n = o
                .snapshot
                .questions
                .iter()
                .filter(|q| q.text == *marker)
                .count();
            if n != 1 {
                bad.push(format!(
                    "observer on node {}: acked question {marker:?} is in the snapshot {n} times",
                    o.node
                ));
            }
        }
        let mut chat: BTreeMap<&str, usize> = BTreeMap::new();
        for m in &o.snapshot.chat {
            *chat.entry(&m.text).or_default() += 1;
        }
        for (text, n) in chat {
            if n > 1 {
                bad.push(format!(
                    "observer on node {}: chat {text:?} is in the snapshot {n} times",
                    o.node
                ));
            }
        }
    }

    if !bad.is_empty() {
        let total = bad.len();
        bad.truncate(40);
        panic!(
            "{total} violations (first {}):\n  {}\nsummary: {sum:?}",
            bad.len(),
            bad.join("\n  ")
        );
    }
    sum
}
