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
