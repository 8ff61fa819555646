//! `convene-load report`: the time to generate a convening's report from the store, for a synthetic event (people, hours, chat, questions, polls) written straight into a SQLite store.

use std::time::{Duration, Instant};

use convene::record::report;
use convene_store::record::{Chat, Convening, Poll, Presence, Question, RecordWrite};
use convene_store::{Store, StoreSettings, Sync, Write};

use crate::LoadError;

#[derive(clap::Args)]
pub struct ReportArgs {
    /// People who attended.
    #[arg(long, default_value_t = 5000)]
    pub people: usize,
    /// Length of the event in hours.
    #[arg(long, default_value_t = 3)]
    pub hours: u64,
    #[arg(long, default_value_t = 3000)]
    pub chat: usize,
    #[arg(long, default_value_t = 300)]
    pub questions: usize,
    /// Directory for the SQLite store (a fresh file is made in it).
    #[arg(long, default_value = "/tmp")]
    pub dir: String,
    /// Reports generated (the figures: min and median).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
}

const MIN: i64 = 60_000;

/// One person's day: joins in the first ten minutes, a network blip, two breakout sessions,
/// leaves in the last ten minutes.
fn person_rows(c: &str, i: usize, start: i64, hours: i64, seq: &mut i64) -> Vec<Presence> {
    let end = start + hours * 60 * MIN;
    let joined = start + (i as i64 * 7_919) % (10 * MIN);
    let left = end - (i as i64 * 104_729) % (10 * MIN);
    let breakout = Some(1 + (i % 40) as i64);
    let mut at = |kind: &str, t: i64, b: Option<i64>| {
        *seq += 1;
        Presence {
            convening: c.to_string(),
            seq: *seq,
            identity: format!("person-{i:05}"),
            name: format!("Person {i:05}"),
            team: format!("team-{:02}", i % 40),
            role: "participant".into(),
            kind: kind.into(),
            breakout: b,
            at: t,
        }
    };
    let third = (end - start) / 3;
    vec![
        at("join", joined, None),
        at("away", joined + 20 * MIN, None),
        at("back", joined + 20 * MIN + 15_000, None),
        at("move", start + third, breakout),
        at("move", start + third + 30 * MIN, None),
        at("move", start + 2 * third, breakout),
        at("move", start + 2 * third + 30 * MIN, None),
        at("leave", left, None),
    ]
}

fn synthesize(args: &ReportArgs, c: &Convening) -> Vec<Write> {
    let start = c.started_at.unwrap_or(0);
    let hours = args.hours as i64;
    let mut seq = 0;
    let mut writes = Vec::new();
    for i in 0..args.people {
        for p in person_rows(&c.id, i, start, hours, &mut seq) {
            writes.push(Write::Record(RecordWrite::Presence(p)));
        }
    }
    let span = hours * 60 * MIN;
    for m in 0..args.chat {
        seq += 1;
        let from = (m * 31) % args.people;
        writes.push(Write::Record(RecordWrite::Chat(Chat {
            convening: c.id.clone(),
            message_id: m as i64 + 1,
            seq,
            identity: format!("person-{from:05}"),
            name: format!("Person {from:05}"),
            text: format!("message {m} about the strand, with a few more words in it"),
            breakout: None,
            at: start + span * m as i64 / args.chat as i64,
        })));
    }
    for q in 0..args.questions {
        seq += 1;
        let from = (q * 17) % args.people;
        writes.push(Write::Record(RecordWrite::Question(Question {
            convening: c.id.clone(),
            question_id: q as i64 + 1,
            seq,
            author: Some(format!("person-{from:05}")),
            author_name: Some(format!("Person {from:05}")),
            text: format!("question {q}: how does this apply to rural schools?"),
            state: if q % 3 == 0 { "answered" } else { "approved" }.into(),
            votes: (q % 50) as i64,
            answer: (q % 3 == 0).then(|| "We will follow up by email.".to_string()),
            asked_at: start + span * q as i64 / args.questions as i64,
            answered_at: None,
        })));
    }
    for p in 0..6 {
        seq += 1;
        writes.push(Write::Record(RecordWrite::Poll(Poll {
            convening: c.id.clone(),
            poll_id: p + 1,
            seq,
            question: format!("poll {p}"),
            options: r#"["yes","no","maybe"]"#.into(),
            counts: Some("[2100,1800,700]".into()),
            voters: Some(4600),
            state: "closed".into(),
            created_at: start + p * 30 * MIN,
            closed_at: Some(start + p * 30 * MIN + 5 * MIN),
        })));
    }
    writes.push(Write::Record(RecordWrite::Gap {
        convening: c.id.clone(),
        from: start + 95 * MIN,
        to: start + 95 * MIN + 4_000,
    }));
    writes
}

pub async fn run(args: ReportArgs) -> Result<(), LoadError> {
    let setup = |e: convene_store::StoreError| LoadError::Setup(e.to_string());
    let path = format!(
        "{}/convene-report-bench-{}.db",
        args.dir,
        std::process::id()
    );
    let _ = std::fs::remove_file(&path);
    let settings = StoreSettings {
        url: format!("sqlite://{path}?mode=rwc"),
        max_connections: 2,
        sqlite_sync: Sync::Normal,
    };
    let store = Store::open(&settings).await.map_err(setup)?;
    let start = 1_796_601_600_000;
    let c = Convening {
        id: "bench-convening".into(),
        room: "bench".into(),
        title: "Synthetic convening".into(),
        kind: "webcast".into(),
        state: "ended".into(),
        starts_at: None,
        ends_at: None,
        started_at: Some(start),
        ended_at: Some(start + args.hours as i64 * 60 * MIN),
        plan: "{}".into(),
        retention_days: 90,
        created_at: start,
        updated_at: start,
    };
    store.insert_convening(&c).await.map_err(setup)?;
    let writes = synthesize(&args, &c);
    let rows = writes.len();
    let began = Instant::now();
    for chunk in writes.chunks(4096) {
        store.write(chunk).await.map_err(setup)?;
    }
    println!(
        "synthesised {rows} record rows ({} people, {} h) in {:?}",
        args.people,
        args.hours,
        began.elapsed()
    );
    let mut took: Vec<(Duration, Duration, usize)> = Vec::new();
    for _ in 0..args.runs.max(1) {
        let began = Instant::now();
        let record = store.record(&c.id).await.map_err(setup)?;
        let read = began.elapsed();
        let built = report::build(&c, &record);
        let bytes = serde_json::to_vec(&built).map_err(|e| LoadError::Setup(e.to_string()))?;
        took.push((began.elapsed(), read, bytes.len()));
    }
    took.sort();
    let (min, median) = (took[0], took[took.len() / 2]);
    println!(
        "report: min {:?} (store read {:?}), median {:?}; {} bytes of JSON",
        min.0, min.1, median.0, min.2
    );
    store.close().await;
    let _ = std::fs::remove_file(&path);
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{path}{suffix}"));
    }
    Ok(())
}
