//! A cluster of in-process nodes sharing a `redis-server` of the test's own: a room's media
//! terminates on its owner (real aiortc peers: a WHEP viewer redirected there, a WebSocket
//! publisher on another node relayed there), a node shutting down hands its rooms over at
//! once, and a Redis that comes back empty starts a new era with fresh welcomes.
//! (Process-level failures: kill -9, SIGSTOP, Redis restarts, are in `tests/cluster.rs`.)

mod common;

use std::time::{Duration, Instant};

use common::peers::{args, peer, result};
use common::{http_get, TestRedis, TestServer, API_KEY};
use convene_signaling::{Command, Role, ServerMessage};
use serde_json::Value;

/// The nodes as `GET /api/v1/nodes` on `via` lists them.
async fn nodes(via: &TestServer) -> Vec<Value> {
    let (status, body) =
        http_get(&format!("{}/api/v1/nodes", via.http()), Some(API_KEY), &[]).await;
    assert_eq!(status, 200, "{body}");
    let listing: Value = serde_json::from_str(&body).unwrap();
    listing["nodes"].as_array().unwrap().clone()
}

/// The id of the node that owns `room` (other than `not`), once one does.
async fn owner(via: &TestServer, room: &str, not: Option<&str>, within: Duration) -> String {
    let give_up = Instant::now() + within;
    loop {
        for node in nodes(via).await {
            if node["rooms_owned"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == room)
                && not.is_none_or(|not| node["id"] != not)
            {
                return node["id"].as_str().unwrap().to_string();
            }
        }
        assert!(
            Instant::now() < give_up,
            "no node owns {room} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_terminates_on_the_rooms_owner_whatever_node_is_asked() {
    let redis = TestRedis::start().await;
    let nodes_up = common::cluster_of(&redis, 2, |_| {}).await;
    let (n1, n2) = (&nodes_up[0], &nodes_up[1]);
    let room = "launch";
    // The WHIP publisher asks n1; with no owner yet, n1 takes the room.
    let publisher = peer(
        "publisher.py",
        &args(&[
            "--whip",
            &format!("{}/whip/{room}", n1.http()),
            "--token",
            &common::token(room, Role::Presenter, "obs", &[]),
            "--duration",
            "16",
        ]),
    );
    assert_eq!(owner(n2, room, None, Duration::from_secs(15)).await, "n1");
    let listing = nodes(n2).await;
    let rtc_of = |id: &str| {
        listing
            .iter()
            .find(|n| n["id"] == id)
            .and_then(|n| n["rtc"].as_str())
            .unwrap_or_else(|| panic!("{id} advertises its media address: {listing:?}"))
            .to_string()
    };
    let (owner_rtc, other_rtc) = (rtc_of("n1"), rtc_of("n2"));
    let owner_http = listing
        .iter()
        .find(|n| n["id"] == "n1")
        .and_then(|n| n["http"].as_str())
        .unwrap()
        .to_string();
    assert_eq!(
        owner_http,
        n1.http(),
        "a node advertises the address it is bound to"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    // A viewer asks n2, which does not own the room: 307 to n1, and the stage plays.
    let subscriber = peer(
        "subscriber.py",
        &args(&[
            "--whep",
            &format!("{}/whep/{room}", n2.http()),
            "--token",
            &common::token(room, Role::Participant, "viewer", &[]),
            "--duration",
            "7",
        ]),
    );
    // A presenter on n2's WebSocket publishes too: its signaling is relayed to n1.
    let ws_publisher = peer(
        "publisher.py",
        &args(&[
            "--ws",
            &n2.ws_url(&common::token(room, Role::Presenter, "pres", &[])),
            "--duration",
            "7",
        ]),
    );

    let sub = result(subscriber).await;
    assert_eq!(sub["error"], Value::Null, "{sub}");
    assert_eq!(
        sub["redirects"],
        serde_json::json!([format!("{}/whep/{room}", n1.http())]),
        "the viewer was sent to the owner: {sub}"
    );
    assert!(
        sub["video_frames"].as_u64().unwrap() >= 30,
        "frames through the owner: {sub}"
    );
    assert!(sub["audio_frames"].as_u64().unwrap() > 0, "{sub}");
    assert_eq!(sub["delete_status"], 200, "{sub}");

    let ws = result(ws_publisher).await;
    assert_eq!(ws["error"], Value::Null, "{ws}");
    assert_eq!(ws["connected"], true, "{ws}");
    let candidates: Vec<&str> = ws["answer_candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        candidates.contains(&owner_rtc.as_str()),
        "the answer names the owner's media address {owner_rtc}: {ws}"
    );
    assert!(
        !candidates.contains(&other_rtc.as_str()),
        "not the address of the node the socket is on ({other_rtc}): {ws}"
    );
    assert!(
        ws["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "track_published" && e["track"]["publisher"] == "pres"),
        "the relayed publisher's tracks were published in the room: {ws}"
    );
    let publ = result(publisher).await;
    assert_eq!(publ["error"], Value::Null, "{publ}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_shutting_down_hands_its_rooms_over_at_once() {
    let redis = TestRedis::start().await;
    // A lease far longer than the test waits: only a handover can move the room in time.
    let mut nodes_up = common::cluster_of(&redis, 2, |c| c.cluster.lease_ms = 60_000).await;
    let room = "exchange";
    let mut ana = nodes_up[0].join(room, Role::Host, "ana").await;
    assert_eq!(
        owner(&nodes_up[0], room, None, Duration::from_secs(10)).await,
        "n1"
    );
    let mut ben = nodes_up[1].join(room, Role::Participant, "ben").await;
    ana.ok(Command::SendChat {
        text: "before".into(),
    })
    .await;
    ben.ok(Command::SendChat {
        text: "from ben".into(),
    })
    .await;

    let n1 = nodes_up.remove(0);
    let stopping = Instant::now();
    n1.server.shutdown().await;
    let n2 = &nodes_up[0];
    assert_eq!(
        owner(n2, room, Some("n1"), Duration::from_secs(10)).await,
        "n2"
    );
    let moved = stopping.elapsed();
    assert!(
        moved < Duration::from_secs(30),
        "handed over in {moved:?}, not after the lease"
    );
    // The room carries on with everything it had.
    ben.ok(Command::SendChat {
        text: "after".into(),
    })
    .await;
    let observer = n2.join(room, Role::Moderator, "observer").await;
    let chat: Vec<&str> = observer
        .snapshot()
        .chat
        .iter()
        .map(|m| m.text.as_str())
        .collect();
    assert_eq!(chat, ["before", "from ben", "after"]);
    drop(ana);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_comes_back_empty_starts_a_new_era_with_fresh_welcomes() {
    let mut redis = TestRedis::start().await;
    let nodes_up = common::cluster_of(&redis, 2, |_| {}).await;
    let room = "era";
    let mut host = nodes_up[0].join(room, Role::Host, "host").await;
    let mut cy = nodes_up[1].join(room, Role::Participant, "cy").await;
    host.ok(Command::SendChat {
        text: "first era".into(),
    })
    .await;
    cy.expect_event(|e| matches!(e, convene_signaling::RoomEvent::ChatMessage { .. }))
        .await;

    redis.restart_empty().await;
    // Both nodes notice the lost data and let their sessions go; they may resume.
    for client in [&mut host, &mut cy] {
        let code = client.closed().await;
        assert_eq!(code.map(u16::from), Some(1012), "closed as restarting");
    }
    let (mut cy, first) = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let (client, first) = cy.resume().await;
            if matches!(first, ServerMessage::Welcome { .. }) {
                return (client, first);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("a fresh welcome within 20 s");
    let ServerMessage::Welcome {
        resume_failed, seq, ..
    } = first
    else {
        unreachable!()
    };
    assert!(
        resume_failed.is_some(),
        "the welcome says the old session is gone"
    );
    assert!(
        seq < 10,
        "a new era counts events from the start: seq {seq}"
    );
    cy.ok(Command::SendChat {
        text: "second era".into(),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_sub_connections_killed_under_load_lose_no_event_and_no_ack() {
    let redis = TestRedis::start().await;
    let nodes_up = common::cluster_of(&redis, 2, |c| {
        c.limits.rate.chat.burst = 1000;
        c.limits.rate.chat.per_second = 1000.0;
    })
    .await;
    let room = "exchange";
    let mut host = nodes_up[0].join(room, Role::Host, "host").await;
    assert_eq!(
        owner(&nodes_up[0], room, None, Duration::from_secs(10)).await,
        "n1"
    );
    // Meeting: every chat reaches everyone, so each client's seq must be contiguous.
    host.ok(Command::UpdateSettings {
        kind: Some(convene_signaling::RoomKind::Meeting),
        chat_enabled: None,
        qa_mode: None,
    })
    .await;
    let mut dee = nodes_up[1].join(room, Role::Participant, "dee").await;

    // Redis cuts every pub/sub connection (both nodes') every 100 ms while dee chats.
    let killer_url = redis.url();
    let killing = tokio::spawn(async move {
        let client = redis::Client::open(killer_url).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let mut kills = 0u32;
        loop {
            let killed: i64 = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("pubsub")
                .query_async(&mut conn)
                .await
                .unwrap_or(0);
            kills += killed as u32;
            tokio::time::sleep(Duration::from_millis(100)).await;
            if kills > 1000 {
                return kills;
            }
        }
    });
    let sent = 150;
    let mut acked = std::collections::BTreeSet::new();
    let mut dee_seqs = Vec::new();
    for i in 0..sent {
        let id = format!("chat-{i}");
        dee.send_with_id(
            Command::SendChat {
                text: format!("m{i}"),
            },
            &id,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every command is acknowledged without resending: acks lost on pub/sub are read back.
    let give_up = Instant::now() + Duration::from_secs(30);
    while acked.len() < sent && Instant::now() < give_up {
        match dee.try_recv(Duration::from_secs(5)).await {
            Some(ServerMessage::Ack { request_id, .. }) => {
                acked.insert(request_id);
            }
            Some(ServerMessage::Event { seq, .. }) => dee_seqs.push(seq),
            Some(ServerMessage::Error { message, .. }) => panic!("refused: {message}"),
            Some(_) => {}
            None => break,
        }
    }
    killing.abort();
    assert_eq!(
        acked.len(),
        sent,
        "every chat acknowledged once pub/sub was repaired"
    );
    for msg in dee.drain(Duration::from_millis(500)).await {
        if let ServerMessage::Event { seq, .. } = msg {
            dee_seqs.push(seq);
        }
    }
    // dee's events (on the node that does not own the room) came in order with no gap.
    assert!(
        dee_seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "contiguous seq at dee: {dee_seqs:?}"
    );
    // The host got every message exactly once.
    let mut texts = Vec::new();
    let give_up = Instant::now() + Duration::from_secs(20);
    while texts.len() < sent && Instant::now() < give_up {
        if let Some(ServerMessage::Event {
            event: convene_signaling::RoomEvent::ChatMessage { message },
            ..
        }) = host.try_recv(Duration::from_secs(2)).await
        {
            texts.push(message.text);
        }
    }
    let expected: Vec<String> = (0..sent).map(|i| format!("m{i}")).collect();
    assert_eq!(texts, expected, "the host saw every chat once, in order");
    let metrics = http_get(&format!("{}/metrics", nodes_up[1].http()), None, &[])
        .await
        .1;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("convene_cluster_pubsub_reconnects_total ") && !l.ends_with(" 0")
        ),
        "the node saw its pub/sub reconnect"
    );
}
