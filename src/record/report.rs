//! The report of a convening, computed from its stored record alone (so every node, days later, gives the same bytes): attendance per person and per team, Q&A, polls and chat.
//!
//! Attendance, precisely: a stay opens at a `join` and closes at a `leave`. A dropped
//! connection (`away`) that resumes within the grace (`back`) is not leaving: the time counts
//! as present. A grace that ran out (`timeout`) closes the stay when the connection dropped.
//! A time the room did not run at all (its node was killed, then rebuilt: a `gap`) is not
//! leaving either, but is not counted as present: it is subtracted from every stay it
//! overlaps and reported beside it. Stays still open close at the convening's end (or, while
//! it is live, at the last recorded time).

use std::collections::BTreeMap;

use convene_store::record::{Convening, Record};
use serde::Serialize;

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Report {
    pub convening: ConveningInfo,
    /// Times the room was not running (node outages), each `[from, to)` in unix ms.
    pub gaps: Vec<[i64; 2]>,
    pub attendance: Vec<PersonReport>,
    pub teams: Vec<TeamReport>,
    pub questions: Vec<QuestionReport>,
    pub polls: Vec<PollReport>,
    pub chat: Vec<ChatReport>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct ConveningInfo {
    pub id: String,
    pub room: String,
    pub title: String,
    pub kind: String,
    pub state: String,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub retention_days: i64,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct PersonReport {
    pub identity: String,
    pub name: String,
    pub team: String,
    pub role: String,
    /// Rounded to the nearest minute (what a certificate states); seconds exact below.
    pub minutes_present: i64,
    pub minutes_in_breakouts: i64,
    pub seconds_present: i64,
    pub seconds_in_breakouts: i64,
    pub first_join: i64,
    /// `None` while still present at the end.
    pub last_leave: Option<i64>,
    /// Stays (a join to a leave); a reconnect within the grace or a gap does not add one.
    pub stays: u32,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct TeamReport {
    /// '' for people without a team.
    pub team: String,
    pub people: u32,
    pub minutes_present: i64,
    pub minutes_in_breakouts: i64,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct QuestionReport {
    pub id: i64,
    pub text: String,
    pub author: Option<String>,
    pub author_name: Option<String>,
    pub state: String,
    pub votes: i64,
    pub answer: Option<String>,
    pub asked_at: i64,
    pub answered_at: Option<i64>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct PollReport {
    pub id: i64,
    pub question: String,
    pub options: Vec<String>,
    /// Per option; `None` if no one saw results (not recorded).
    pub counts: Option<Vec<u32>>,
    pub voters: Option<i64>,
    pub state: String,
    pub created_at: i64,
    pub closed_at: Option<i64>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct ChatReport {
    pub id: i64,
    pub identity: String,
    pub name: String,
    pub text: String,
    /// The breakout's name; `None` in the main room.
    pub breakout: Option<String>,
    pub at: i64,
}

/// Rounds to the nearest minute.
fn minutes(ms: i64) -> i64 {
    (ms + 30_000) / 60_000
}

/// `[from, to)` minus the gaps it overlaps, in ms.
fn counted(from: i64, to: i64, gaps: &[(i64, i64)]) -> i64 {
    let mut ms = (to - from).max(0);
    for &(g0, g1) in gaps {
        ms -= (to.min(g1) - from.max(g0)).max(0);
    }
    ms.max(0)
}

/// One person's rows (in seq order) folded into their attendance.
fn person(
    rows: &[&convene_store::record::Presence],
    end: i64,
    gaps: &[(i64, i64)],
) -> PersonReport {
    let last = |f: fn(&convene_store::record::Presence) -> &String| {
        rows.iter()
            .rev()
            .map(|r| f(r))
            .find(|v| !v.is_empty())
            .cloned()
            .unwrap_or_default()
    };
    let mut report = PersonReport {
        identity: rows[0].identity.clone(),
        name: last(|r| &r.name),
        team: last(|r| &r.team),
        role: last(|r| &r.role),
        minutes_present: 0,
        minutes_in_breakouts: 0,
        seconds_present: 0,
        seconds_in_breakouts: 0,
        first_join: rows[0].at,
        last_leave: None,
        stays: 0,
    };
    let (mut present_ms, mut breakout_ms) = (0i64, 0i64);
    // Where the person is and since when; and when their connection dropped.
    let mut here: Option<(i64, Option<i64>)> = None;
    let mut away: Option<i64> = None;
    let mut close = |since: i64, until: i64, breakout: Option<i64>| {
        let ms = counted(since, until, gaps);
        present_ms += ms;
        if breakout.is_some() {
            breakout_ms += ms;
        }
    };
    for r in rows {
        match (r.kind.as_str(), here) {
            ("join" | "back" | "away" | "move", None) => {
                here = Some((r.at, r.breakout));
                report.stays += 1;
                report.last_leave = None;
                away = (r.kind == "away").then_some(r.at);
            }
            ("away", Some(_)) => away = away.or(Some(r.at)),
            ("back", Some(_)) => away = None,
            ("join" | "move", Some((since, breakout))) if breakout != r.breakout => {
                close(since, r.at, breakout);
                here = Some((r.at, r.breakout));
            }
            ("leave" | "timeout", Some((since, breakout))) => {
                let until = if r.kind == "timeout" {
                    away.unwrap_or(r.at)
                } else {
                    r.at
                };
                close(since, until.max(since), breakout);
                report.last_leave = Some(until.max(since));
                here = None;
                away = None;
            }
            _ => {}
        }
    }
    if let Some((since, breakout)) = here {
        close(since, end.max(since), breakout);
    }
    report.seconds_present = present_ms / 1000;
    report.seconds_in_breakouts = breakout_ms / 1000;
    report.minutes_present = minutes(present_ms);
    report.minutes_in_breakouts = minutes(breakout_ms);
    report
}

/// The report of `convening` from its `record`.
pub fn build(convening: &Convening, record: &Record) -> Report {
    let end = convening.ended_at.unwrap_or_else(|| {
        let last_row = record.presence.iter().map(|p| p.at).max();
        let last_gap = record.gaps.iter().map(|g| g.1).max();
        last_row.max(last_gap).unwrap_or(0)
    });
    // Rows come ordered by identity, then seq.
    let mut attendance = Vec::new();
    let mut start = 0;
    while start < record.presence.len() {
        let identity = &record.presence[start].identity;
        let len = record.presence[start..]
            .iter()
            .take_while(|p| &p.identity == identity)
            .count();
        let rows: Vec<_> = record.presence[start..start + len].iter().collect();
        attendance.push(person(&rows, end, &record.gaps));
        start += len;
    }
    attendance.sort_by(|a, b| (&a.name, &a.identity).cmp(&(&b.name, &b.identity)));
    let mut teams: BTreeMap<&str, TeamReport> = BTreeMap::new();
    for p in &attendance {
        let t = teams.entry(&p.team).or_insert_with(|| TeamReport {
            team: p.team.clone(),
            people: 0,
            minutes_present: 0,
            minutes_in_breakouts: 0,
        });
        t.people += 1;
        t.minutes_present += p.minutes_present;
        t.minutes_in_breakouts += p.minutes_in_breakouts;
    }
    let breakouts: BTreeMap<i64, &str> = record
        .breakouts
        .iter()
        .map(|(id, n)| (*id, n.as_str()))
        .collect();
    Report {
        convening: ConveningInfo {
            id: convening.id.clone(),
            room: convening.room.clone(),
            title: convening.title.clone(),
            kind: convening.kind.clone(),
            state: convening.state.clone(),
            started_at: convening.started_at,
            ended_at: convening.ended_at,
            retention_days: convening.retention_days,
        },
        gaps: record.gaps.iter().map(|&(a, b)| [a, b]).collect(),
        teams: teams.into_values().collect(),
        attendance,
        questions: record
            .questions
            .iter()
            .map(|q| QuestionReport {
                id: q.question_id,
                text: q.text.clone(),
                author: q.author.clone(),
                author_name: q.author_name.clone(),
                state: q.state.clone(),
                votes: q.votes,
                answer: q.answer.clone(),
                asked_at: q.asked_at,
                answered_at: q.answered_at,
            })
            .collect(),
        polls: record
            .polls
            .iter()
            .map(|p| PollReport {
                id: p.poll_id,
                question: p.question.clone(),
                options: serde_json::from_str(&p.options).unwrap_or_default(),
                counts: p
                    .counts
                    .as_deref()
                    .and_then(|c| serde_json::from_str(c).ok()),
                voters: p.voters,
                state: p.state.clone(),
                created_at: p.created_at,
                closed_at: p.closed_at,
            })
            .collect(),
        chat: record
            .chat
            .iter()
            .map(|c| ChatReport {
                id: c.message_id,
                identity: c.identity.clone(),
                name: c.name.clone(),
                text: c.text.clone(),
                breakout: c.breakout.map(|b| {
                    breakouts
                        .get(&b)
                        .map_or_else(|| format!("Breakout {b}"), |n| n.to_string())
                }),
                at: c.at,
            })
            .collect(),
    }
}

/// `YYYY-MM-DD` (UTC) of unix ms.
pub fn date(ms: i64) -> String {
    let (y, m, d) = civil(ms.div_euclid(86_400_000));
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DDTHH:MM:SSZ` of unix ms.
pub fn timestamp(ms: i64) -> String {
    let secs = ms.div_euclid(1000).rem_euclid(86_400);
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        date(ms),
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The civil date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use convene_store::record::Presence;

    fn row(seq: i64, kind: &str, at_s: i64, breakout: Option<i64>) -> Presence {
        Presence {
            convening: "c".into(),
            seq,
            identity: "ana".into(),
            name: "Ana".into(),
            team: "north".into(),
            role: "participant".into(),
            kind: kind.into(),
            breakout,
            at: at_s * 1000,
        }
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(
            timestamp(1_796_601_600_000 + 3_723_000),
            "2026-12-07T01:02:03Z"
        );
    }

    #[test]
    fn a_reconnect_is_present_a_gap_is_not_leaving_and_a_timeout_ends_at_the_drop() {
        let rows = [
            row(1, "join", 0, None),
            row(2, "away", 600, None),
            row(3, "back", 620, None),
            row(4, "move", 1200, Some(1)),
            row(5, "away", 1800, Some(1)),
            row(6, "back", 1900, Some(1)),
            row(7, "move", 2400, None),
            row(8, "away", 3000, None),
            row(9, "timeout", 3060, None),
        ];
        let refs: Vec<_> = rows.iter().collect();
        // The node was down from 1800 s to 1900 s.
        let p = person(&refs, 10_000_000, &[(1_800_000, 1_900_000)]);
        assert_eq!(p.stays, 1);
        assert_eq!(p.seconds_present, 3000 - 100);
        assert_eq!(p.seconds_in_breakouts, 1200 - 100);
        assert_eq!(p.minutes_present, 48);
        assert_eq!(p.last_leave, Some(3_000_000));
    }
}
