//! The record on a real SQLite file: a replay writes nothing twice and never rolls a row back
//! to an older seq; deletions in the chat hold; the sweeper deletes a record exactly when its
//! retention runs out, by the clock it is given.

use convene_store::record::{Chat, Convening, Presence, Question, RecordWrite};
use convene_store::{Store, StoreSettings, Sync, Write};

const DAY: i64 = 86_400_000;

async fn open(tag: &str) -> Store {
    let dir = std::env::temp_dir().join(format!("convene-store-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let settings = StoreSettings {
        url: format!("sqlite://{}/t.db?mode=rwc", dir.display()),
        max_connections: 2,
        sqlite_sync: Sync::Normal,
    };
    Store::open(&settings).await.expect("store opens")
}

fn convening(id: &str, retention_days: i64) -> Convening {
    Convening {
        id: id.into(),
        room: "room".into(),
        title: "t".into(),
        kind: "webcast".into(),
        state: "live".into(),
        starts_at: None,
        ends_at: None,
        started_at: Some(0),
        ended_at: None,
        plan: "{}".into(),
        retention_days,
        created_at: 0,
        updated_at: 0,
    }
}

fn question(seq: i64, state: &str, votes: i64) -> Write {
    Write::Record(RecordWrite::Question(Question {
        convening: "c".into(),
        question_id: 1,
        seq,
        author: Some("ana".into()),
        author_name: Some("Ana".into()),
        text: "why?".into(),
        state: state.into(),
        votes,
        answer: None,
        asked_at: 0,
        answered_at: None,
    }))
}

#[tokio::test]
async fn a_replay_writes_nothing_twice_and_never_goes_back() {
    let store = open("replay").await;
    store.insert_convening(&convening("c", 90)).await.unwrap();
    let join = Write::Record(RecordWrite::Presence(Presence {
        convening: "c".into(),
        seq: 3,
        identity: "ana".into(),
        name: "Ana".into(),
        team: "north".into(),
        role: "participant".into(),
        kind: "join".into(),
        breakout: None,
        at: 10,
    }));
    let chat = Write::Record(RecordWrite::Chat(Chat {
        convening: "c".into(),
        message_id: 1,
        seq: 4,
        identity: "ana".into(),
        name: "Ana".into(),
        text: "oops".into(),
        breakout: None,
        at: 11,
    }));
    let deleted = Write::Record(RecordWrite::ChatDeleted {
        convening: "c".into(),
        message_id: 1,
    });
    let run = vec![
        join,
        chat,
        question(5, "pending", 0),
        deleted,
        question(7, "answered", 4),
    ];
    store.write(&run).await.unwrap();
    // The same events again (a restart's replay), and a stale copy of the question.
    store.write(&run).await.unwrap();
    store.write(&[question(6, "approved", 2)]).await.unwrap();
    let record = store.record("c").await.unwrap();
    assert_eq!(record.presence.len(), 1);
    assert!(record.chat.is_empty(), "the deleted message stays deleted");
    assert_eq!(record.questions.len(), 1);
    assert_eq!(
        (
            record.questions[0].state.as_str(),
            record.questions[0].votes
        ),
        ("answered", 4)
    );
}

#[tokio::test]
async fn the_sweeper_deletes_a_record_when_its_retention_runs_out() {
    let store = open("sweep").await;
    store.insert_convening(&convening("old", 2)).await.unwrap();
    store.insert_convening(&convening("live", 0)).await.unwrap();
    let ended_at = 1_000 * DAY;
    assert!(store.end_convening("old", ended_at).await.unwrap());
    assert!(
        !store.end_convening("old", ended_at + 1).await.unwrap(),
        "ends once"
    );
    store
        .write(&[Write::Record(RecordWrite::Gap {
            convening: "old".into(),
            from: 1,
            to: 2,
        })])
        .await
        .unwrap();
    assert!(store
        .sweep_expired(ended_at + 2 * DAY - 1)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.record("old").await.unwrap().gaps.len(), 1);
    // A live convening is never swept, whatever its retention.
    assert_eq!(
        store.sweep_expired(ended_at + 2 * DAY).await.unwrap(),
        vec!["old".to_string()]
    );
    assert!(store.convening("old").await.unwrap().is_none());
    assert!(store.record("old").await.unwrap().gaps.is_empty());
    assert!(store.convening("live").await.unwrap().is_some());
}
