//! The store on a real SQLite file: migrations run (twice is a no-op), a group commit is one
//! transaction, a snapshot drops the inputs it covers, and a closed room's log is gone.

use convene_store::{GroupCommit, Store, StoreSettings, Sync, Write};

async fn open(dir: &std::path::Path) -> Store {
    let settings = StoreSettings {
        url: format!("sqlite://{}/t.db?mode=rwc", dir.display()),
        max_connections: 2,
        sqlite_sync: Sync::Full,
    };
    Store::open(&settings).await.expect("store opens")
}

fn input(room: &str, number: u64) -> Write {
    Write::Input {
        room: room.into(),
        number,
        body: format!("{{\"n\":{number}}}"),
    }
}

#[tokio::test]
async fn logs_snapshots_and_closes_survive_a_reopen() {
    let dir = std::env::temp_dir().join(format!("convene-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = open(&dir).await;
    let log = GroupCommit::start(store.clone(), 64);
    log.write(vec![
        Write::Open {
            room: "a".into(),
            at: 1,
        },
        input("a", 1),
        input("a", 2),
    ])
    .await
    .unwrap();
    log.write(vec![
        Write::Open {
            room: "b".into(),
            at: 2,
        },
        input("b", 1),
    ])
    .await
    .unwrap();
    log.write(vec![
        Write::Snapshot {
            room: "a".into(),
            through: 2,
            body: "snap".into(),
        },
        input("a", 3),
    ])
    .await
    .unwrap();
    // A repeated number is refused, and nothing of its transaction lands.
    assert!(log.write(vec![input("b", 2), input("a", 3)]).await.is_err());
    log.write(vec![Write::Close { room: "b".into() }])
        .await
        .unwrap();
    store.close().await;

    let store = open(&dir).await;
    assert_eq!(store.rooms().await.unwrap(), vec!["a".to_string()]);
    let a = store.room_log("a").await.unwrap();
    assert_eq!(a.snapshot, Some((2, "snap".to_string())));
    assert_eq!(a.inputs, vec![(3, "{\"n\":3}".to_string())]);
    let b = store.room_log("b").await.unwrap();
    assert!(b.snapshot.is_none() && b.inputs.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn convenings_are_put_listed_by_start_replaced_and_deleted_across_a_reopen() {
    use convene_store::ConveningRow;
    let dir = std::env::temp_dir().join(format!("convene-store-conv-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let row = |id: &str, starts_at: Option<i64>| ConveningRow {
        id: id.into(),
        room: format!("room-{id}"),
        title: "Launch".into(),
        kind: "webcast".into(),
        state: "scheduled".into(),
        starts_at,
        ends_at: starts_at.map(|s| s + 3_600_000),
        started_at: None,
        ended_at: None,
        plan: r#"{"presenters":["pat"]}"#.into(),
        retention_days: 90,
        created_at: 1,
        updated_at: 1,
    };
    let store = open(&dir).await;
    store
        .put_convening(&row("late", Some(2_000)))
        .await
        .unwrap();
    store.put_convening(&row("adhoc", None)).await.unwrap();
    store
        .put_convening(&row("early", Some(1_000)))
        .await
        .unwrap();
    let mut live = row("early", Some(1_000));
    live.state = "live".into();
    live.started_at = Some(1_005);
    store.put_convening(&live).await.unwrap();
    store.close().await;

    let store = open(&dir).await;
    let ids: Vec<String> = store
        .convenings()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, ["early", "late", "adhoc"], "by start, ad hoc last");
    assert_eq!(store.convening("early").await.unwrap(), Some(live));
    assert!(store.delete_convening("late").await.unwrap());
    assert!(!store.delete_convening("late").await.unwrap());
    assert_eq!(store.convening("late").await.unwrap(), None);
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}
