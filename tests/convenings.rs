//! Scheduled convenings over real sockets: the admin API (validation, authorisation), the
//! lobby that holds attendees while staff rehearse backstage, the host's start and end, and a
//! convening scheduled a week ahead that survives restarts of a real `convene serve` process
//! on its data directory and opens at its start (the schedule's clock shifted by
//! `CONVENE_SCHEDULE_CLOCK_OFFSET_MS`).

mod cluster_support;
mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cluster_support::{free_port, Node};
use common::{http_request, Client, TestServer, API_KEY};
use convene_signaling::{Command, ErrorCode, Role, RoomEvent, ServerMessage};
use serde_json::{json, Value};

const JSON: [(&str, &str); 1] = [("Content-Type", "application/json")];
const DAY_MS: u64 = 86_400_000;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// RFC 3339 in UTC, as a browser's `toISOString` writes it (to the second).
fn rfc3339(ms: u64) -> String {
    convene::convenings::rfc3339::format(ms)
}

fn body(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("JSON body ({e}): {text}"))
}

/// `method path` against `base`'s admin API with `bearer`; status and parsed body.
async fn api(base: &str, method: &str, path: &str, bearer: &str, json: &Value) -> (u16, Value) {
    let url = format!("{base}/api/v1{path}");
    let payload = if json.is_null() {
        String::new()
    } else {
        json.to_string()
    };
    let headers: &[(&str, &str)] = if json.is_null() { &[] } else { &JSON };
    let (status, text) = http_request(method, &url, Some(bearer), headers, &payload).await;
    let parsed = if text.is_empty() {
        Value::Null
    } else {
        body(&text)
    };
    (status, parsed)
}

fn plan(room: &str, starts_at: u64, auto_start: bool) -> Value {
    json!({
        "room": room,
        "title": "Launch: the literacy strand",
        "kind": "webcast",
        "starts_at": rfc3339(starts_at),
        "ends_at": rfc3339(starts_at + 2 * 3_600_000),
        "presenters": ["pat"],
        "moderators": ["mo"],
        "breakouts": {"teams": {"Knox County": ["ana", "ben"]}},
        "settings": {"qa_moderated": true, "chat_enabled": true, "auto_start": auto_start},
    })
}

async fn schedule(base: &str, room: &str, starts_at: u64, auto_start: bool) -> String {
    let (status, c) = api(
        base,
        "POST",
        "/convenings",
        API_KEY,
        &plan(room, starts_at, auto_start),
    )
    .await;
    assert_eq!(status, 201, "{c}");
    assert_eq!(c["state"], "scheduled");
    c["id"].as_str().unwrap().to_string()
}

/// An invite for `identity` from the convening's plan: its token.
async fn invite(base: &str, id: &str, identity: &str, name: &str) -> String {
    let (status, minted) = api(
        base,
        "POST",
        &format!("/convenings/{id}/invites"),
        API_KEY,
        &json!({"identity": identity, "name": name}),
    )
    .await;
    assert_eq!(status, 200, "{minted}");
    minted["token"].as_str().unwrap().to_string()
}

async fn welcome(ws: &str, token: &str) -> (Client, ServerMessage) {
    let mut client = Client::connect(&format!("{ws}?token={token}")).await;
    let first = client.recv().await;
    client.welcome = Some(first.clone());
    (client, first)
}

/// Reads events until `admitted` (within `within`): what the attendee saw in the lobby,
/// and the snapshot they were admitted with.
async fn until_admitted(
    client: &mut Client,
    within: Duration,
) -> (Vec<RoomEvent>, Box<convene_signaling::RoomSnapshot>) {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.try_recv(left).await {
            Some(ServerMessage::Event {
                event: RoomEvent::Admitted { snapshot },
                ..
            }) => return (seen, snapshot),
            Some(ServerMessage::Event { event, .. }) => seen.push(event),
            Some(_) => {}
            None => panic!("not admitted within {within:?}; saw {seen:?}"),
        }
    }
}

#[tokio::test]
async fn the_lobby_holds_attendees_while_staff_rehearse_until_the_host_starts_and_ends_it() {
    let t = TestServer::start().await;
    let base = t.http();
    let ws = format!("ws://{}/ws", t.server.addr);
    let id = schedule(&base, "launch", now_ms() + DAY_MS, false).await;

    // Invites before anything runs, with roles (and the team) from the plan.
    let ana_token = invite(&base, &id, "ana", "Ana").await;
    let pat_token = invite(&base, &id, "pat", "Pat").await;
    let (mut ana, first) = welcome(&ws, &ana_token).await;
    let ServerMessage::Welcome { you, snapshot, .. } = first else {
        panic!("expected a welcome, got {first:?}");
    };
    assert_eq!(you.role, Role::Participant);
    assert_eq!(
        you.attrs.get("team").map(String::as_str),
        Some("Knox County")
    );
    let lobby = snapshot
        .lobby
        .clone()
        .expect("the attendee is in the lobby");
    assert_eq!(
        (lobby.convening_id.as_str(), lobby.title.as_str()),
        (id.as_str(), "Launch: the literacy strand")
    );
    assert_eq!(snapshot.members.len(), 1, "only themselves: {snapshot:?}");

    let (mut pat, first) = welcome(&ws, &pat_token).await;
    let ServerMessage::Welcome { you, snapshot, .. } = first else {
        panic!("expected a welcome, got {first:?}");
    };
    assert_eq!(you.role, Role::Presenter);
    assert!(snapshot.lobby.is_some(), "staff know it has not started");
    let mut host = t.join("launch", Role::Host, "host").await;
    assert!(host.snapshot().lobby.is_some());
    assert!(
        host.snapshot().members.iter().any(|m| m.identity == "ana"),
        "staff see who waits"
    );

    // Backstage: staff chat reaches staff only; the attendee may not speak.
    pat.ok(Command::SendChat {
        text: "mic check".into(),
    })
    .await;
    host.expect_event(
        |e| matches!(e, RoomEvent::ChatMessage { message } if message.text == "mic check"),
    )
    .await;
    let (code, _) = ana.refused(Command::SendChat { text: "hi".into() }).await;
    assert_eq!(code, ErrorCode::Forbidden);
    let (code, _) = ana
        .refused(Command::AskQuestion {
            text: "when?".into(),
            anonymous: false,
        })
        .await;
    assert_eq!(code, ErrorCode::Forbidden);
    // Nor do the backstage's captions reach them, even with captions turned on.
    ana.ok(Command::SubscribeCaptions { on: true }).await;
    host.ok(Command::SubscribeCaptions { on: true }).await;
    host.ok(Command::GrantCaptions {
        identity: "host".into(),
        granted: true,
    })
    .await;
    host.ok(Command::SendCaption {
        text: "rehearsing the opening".into(),
        is_final: true,
        speaker: None,
    })
    .await;
    host.expect_event(
        |e| matches!(e, RoomEvent::Caption { caption } if caption.text == "rehearsing the opening"),
    )
    .await;
    // Nor may they play the backstage's media over WHEP.
    let (status, text) = http_request(
        "POST",
        &format!("{base}/whep/launch"),
        Some(&ana_token),
        &[("Content-Type", "application/sdp")],
        "v=0\r\n",
    )
    .await;
    assert_eq!(status, 403, "{text}");

    // A participant's token cannot start it; the host's can.
    let ana_start = api(
        &base,
        "POST",
        &format!("/convenings/{id}/start"),
        &ana_token,
        &Value::Null,
    )
    .await;
    assert_eq!(ana_start.0, 403, "{}", ana_start.1);
    let host_token = t.token("launch", Role::Host, "host");
    let (status, c) = api(
        &base,
        "POST",
        &format!("/convenings/{id}/start"),
        &host_token,
        &Value::Null,
    )
    .await;
    assert_eq!((status, c["state"].as_str()), (200, Some("live")), "{c}");

    // Everything the attendee got before `admitted` is lobby business: no chat, no people.
    let (in_lobby, admitted) = until_admitted(&mut ana, common::WAIT).await;
    assert!(
        in_lobby
            .iter()
            .all(|e| matches!(e, RoomEvent::Lobby { .. })),
        "the lobby saw the backstage: {in_lobby:?}"
    );
    assert!(admitted.lobby.is_none());
    assert!(
        admitted.chat.is_empty(),
        "the rehearsal's chat stays backstage"
    );
    assert!(admitted.members.iter().any(|m| m.identity == "pat"));
    host.expect_event(|e| matches!(e, RoomEvent::ConveningStarted))
        .await;

    // In the room now: the presenter's chat reaches them, and they may speak.
    pat.ok(Command::SendChat {
        text: "welcome, everyone".into(),
    })
    .await;
    ana.expect_event(
        |e| matches!(e, RoomEvent::ChatMessage { message } if message.text == "welcome, everyone"),
    )
    .await;
    ana.ok(Command::SendChat {
        text: "hello from Knox".into(),
    })
    .await;

    // A moderator may start but not end; the host ends it and everyone sees that it ended.
    let mo = t.token("launch", Role::Moderator, "mo");
    let (status, _) = api(
        &base,
        "POST",
        &format!("/convenings/{id}/end"),
        &mo,
        &Value::Null,
    )
    .await;
    assert_eq!(status, 403);
    let (status, c) = api(
        &base,
        "POST",
        &format!("/convenings/{id}/end"),
        &host_token,
        &Value::Null,
    )
    .await;
    assert_eq!((status, c["state"].as_str()), (200, Some("ended")), "{c}");
    assert!(c["ended_at"].is_string() && c["report_url"] == format!("/report/{id}"));
    for client in [&mut ana, &mut pat] {
        let removed = client
            .expect_event(|e| matches!(e, RoomEvent::Removed { .. }))
            .await;
        assert!(
            matches!(&removed, RoomEvent::Removed { reason } if reason.contains("has ended")),
            "{removed:?}"
        );
    }
    let (status, again) = api(
        &base,
        "POST",
        &format!("/convenings/{id}/end"),
        API_KEY,
        &Value::Null,
    )
    .await;
    assert_eq!(status, 409, "{again}");
}

#[tokio::test]
async fn the_api_refuses_what_is_malformed_unauthorised_or_too_late() {
    let t = TestServer::start().await;
    let base = t.http();
    let start = now_ms() + DAY_MS;
    let good = plan("hall", start, false);
    let with = |patch: Value| {
        let mut v = good.clone();
        for (k, val) in patch.as_object().unwrap() {
            v[k] = val.clone();
        }
        v
    };
    let many: Vec<String> = (0..201).map(|i| format!("p{i}")).collect();
    let teams: serde_json::Map<String, Value> =
        (0..201).map(|i| (format!("t{i}"), json!([]))).collect();
    for (bad, why) in [
        (with(json!({"room": ""})), "room"),
        (with(json!({"room": "a\nb"})), "room"),
        (with(json!({"title": "x".repeat(201)})), "title"),
        (with(json!({"kind": "concert"})), "concert"),
        (with(json!({"starts_at": "tomorrow"})), "starts_at"),
        (
            with(json!({"starts_at": "2026-02-30T10:00:00Z"})),
            "starts_at",
        ),
        (with(json!({"ends_at": rfc3339(start - 1000)})), "ends_at"),
        (
            with(json!({"ends_at": rfc3339(start + 73 * 3_600_000)})),
            "72 hours",
        ),
        (
            with(
                json!({"starts_at": rfc3339(now_ms() + 401 * DAY_MS), "ends_at": rfc3339(now_ms() + 401 * DAY_MS + 1000)}),
            ),
            "days ahead",
        ),
        (
            with(
                json!({"starts_at": rfc3339(now_ms() - DAY_MS), "ends_at": rfc3339(now_ms() - DAY_MS + 1000)}),
            ),
            "past",
        ),
        (
            with(json!({"presenters": many})),
            "presenters and moderators",
        ),
        (
            with(json!({"presenters": ["mo"], "moderators": ["mo"]})),
            "both",
        ),
        (with(json!({"breakouts": {"teams": teams}})), "teams"),
        (
            with(json!({"breakouts": {"teams": {"a": ["x"], "b": ["x"]}}})),
            "two teams",
        ),
        (with(json!({"retention_days": 0})), "retention_days"),
        (with(json!({"retention_days": 3651})), "retention_days"),
        (
            with(json!({"settings": {"cameras": "yes"}})),
            "unknown field",
        ),
        (with(json!({"extra": 1})), "unknown field"),
    ] {
        let (status, err) = api(&base, "POST", "/convenings", API_KEY, &bad).await;
        // What does not parse is 400; valid JSON the schedule cannot take (times it cannot
        // read or accept, limits, blank names) is 422, as the OpenAPI document says.
        let unparsable = matches!(why, "concert" | "unknown field");
        let (want, code) = if unparsable {
            (400, "bad_request")
        } else {
            (422, "unprocessable")
        };
        assert_eq!(status, want, "{why}: {err}");
        assert_eq!(err["error"], code, "{why}: {err}");
        assert!(
            err["message"].as_str().unwrap().contains(why),
            "{why}: {err}"
        );
    }
    let url = format!("{base}/api/v1/convenings");
    let (status, _) = http_request("POST", &url, Some(API_KEY), &[], &good.to_string()).await;
    assert_eq!(status, 415);
    let (status, _) = http_request("POST", &url, Some(API_KEY), &JSON, "[1]").await;
    assert_eq!(status, 400);

    // Authorisation: the API key schedules; tokens do not.
    let host = t.token("hall", Role::Host, "host");
    for (bearer, want) in [("", 401), ("not-a-token", 401), (host.as_str(), 403)] {
        let (status, err) = api(&base, "POST", "/convenings", bearer, &good).await;
        assert_eq!(status, want, "{err}");
        let (status, _) = api(&base, "GET", "/convenings", bearer, &Value::Null).await;
        assert_eq!(status, want);
    }
    let id = schedule(&base, "hall", start, false).await;
    let (status, err) = api(&base, "POST", "/convenings", API_KEY, &good).await;
    assert_eq!(status, 409, "one convening at a time per room: {err}");
    let (status, list) = api(&base, "GET", "/convenings", API_KEY, &Value::Null).await;
    assert_eq!(
        (status, list["convenings"][0]["id"].as_str()),
        (200, Some(id.as_str()))
    );
    assert_eq!(list["convenings"][0]["starts_at"], rfc3339(start));

    // A token of another room, or a participant of this one, may not read or start it.
    let elsewhere = t.token("other", Role::Host, "host");
    let participant = t.token("hall", Role::Participant, "ana");
    for bearer in [&elsewhere, &participant] {
        let (status, _) = api(
            &base,
            "GET",
            &format!("/convenings/{id}"),
            bearer,
            &Value::Null,
        )
        .await;
        assert_eq!(status, 403);
        let (status, _) = api(
            &base,
            "POST",
            &format!("/convenings/{id}/start"),
            bearer,
            &Value::Null,
        )
        .await;
        assert_eq!(status, 403);
    }
    let (status, _) = api(&base, "GET", "/convenings/nope", API_KEY, &Value::Null).await;
    assert_eq!(status, 404);
    let (status, c) = api(
        &base,
        "GET",
        &format!("/convenings/{id}"),
        &host,
        &Value::Null,
    )
    .await;
    assert_eq!((status, c["plan"].is_null()), (200, true), "{c}");
    assert_eq!(c["moderators"], json!(["mo"]));

    // A change before the start is validated as a whole; after the start, refused.
    let path = format!("/convenings/{id}");
    let (status, c) = api(&base, "PATCH", &path, API_KEY, &json!({"title": "Renamed"})).await;
    assert_eq!((status, c["title"].as_str()), (200, Some("Renamed")));
    let (status, _) = api(
        &base,
        "PATCH",
        &path,
        API_KEY,
        &json!({"ends_at": rfc3339(start - 1)}),
    )
    .await;
    assert_eq!(status, 422, "an end before the start");
    let (status, _) = api(&base, "PATCH", &path, &host, &json!({"title": "x"})).await;
    assert_eq!(status, 403);
    let mo = t.token("hall", Role::Moderator, "mo");
    let (status, _) = api(&base, "POST", &format!("{path}/start"), &mo, &Value::Null).await;
    assert_eq!(status, 200, "a moderator may start it");
    let (status, _) = api(
        &base,
        "POST",
        &format!("{path}/start"),
        API_KEY,
        &Value::Null,
    )
    .await;
    assert_eq!(status, 409);
    let (status, _) = api(&base, "PATCH", &path, API_KEY, &json!({"title": "late"})).await;
    assert_eq!(status, 409);
    let (status, _) = api(&base, "DELETE", &path, API_KEY, &Value::Null).await;
    assert_eq!(status, 409);

    // Cancelling one that has not started deletes it and opens its room.
    let id = schedule(&base, "annex", start, false).await;
    let mut waiting = t.join("annex", Role::Participant, "ana").await;
    assert!(waiting.snapshot().lobby.is_some());
    let (status, _) = api(
        &base,
        "DELETE",
        &format!("/convenings/{id}"),
        API_KEY,
        &Value::Null,
    )
    .await;
    assert_eq!(status, 204);
    waiting
        .expect_event(|e| matches!(e, RoomEvent::Admitted { .. }))
        .await;
    let (status, _) = api(
        &base,
        "GET",
        &format!("/convenings/{id}"),
        API_KEY,
        &Value::Null,
    )
    .await;
    assert_eq!(status, 404);
}

fn fresh_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "convene-convenings-{}-{}",
        std::process::id(),
        free_port()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test dir");
    dir
}

/// A `convene serve` on `dir`, its schedule's clock shifted by `offset_ms`.
async fn serve(dir: &std::path::Path, port: u16, offset_ms: i64) -> Node {
    let bin = dir.join("schedule-node");
    let _ = std::fs::remove_file(&bin);
    std::os::unix::fs::symlink(cluster_support::BIN, &bin).expect("link to convene");
    let data = dir.join("data").display().to_string();
    let offset = offset_ms.to_string();
    let env = [
        ("CONVENE_DATA_DIR", data.as_str()),
        ("CONVENE_SCHEDULE_CLOCK_OFFSET_MS", offset.as_str()),
    ];
    let node = Node::spawn_with(&bin, "solo", port, "", &env);
    node.ready().await;
    node
}

#[tokio::test]
async fn a_convening_scheduled_a_week_ahead_survives_restarts_and_opens_at_its_start() {
    let dir = fresh_dir();
    let port = free_port();
    let mut node = serve(&dir, port, 0).await;
    let base = node.http();
    let starts_at = now_ms() + 7 * DAY_MS;
    let id = schedule(&base, "launch", starts_at, true).await;
    let ana = invite(&base, &id, "ana", "Ana").await;
    let (_, first) = welcome(&node.ws(), &ana).await;
    assert!(matches!(&first, ServerMessage::Welcome { snapshot, .. } if snapshot.lobby.is_some()));

    // kill -9, then a clean stop: the plan is in the store both times.
    node.kill9().await;
    node = serve(&dir, port, 0).await;
    let (status, c) = api(
        &base,
        "GET",
        &format!("/convenings/{id}"),
        API_KEY,
        &Value::Null,
    )
    .await;
    assert_eq!(
        (status, c["state"].as_str()),
        (200, Some("scheduled")),
        "{c}"
    );
    assert_eq!(c["starts_at"], rfc3339(starts_at));
    assert_eq!(c["presenters"], json!(["pat"]));
    node.terminate().await;

    // A week later (the schedule's clock moved on), a few seconds before the start. The
    // room has no live state: an invite from its host works, and the attendee waits.
    // Long enough for a loaded machine to start the node and join two attendees first.
    let lead_ms = 20_000;
    let offset = (starts_at - now_ms()) as i64 - lead_ms;
    node = serve(&dir, port, offset).await;
    let host = common::token("launch", Role::Host, "host", &[]);
    let (status, minted) = api(
        &base,
        "POST",
        "/rooms/launch/invites",
        &host,
        &json!({"role": "participant", "name": "Ben"}),
    )
    .await;
    assert_eq!(status, 200, "{minted}");
    let (mut ben, first) = welcome(&node.ws(), minted["token"].as_str().unwrap()).await;
    let ServerMessage::Welcome { snapshot, .. } = first else {
        panic!("expected a welcome, got {first:?}");
    };
    assert!(
        snapshot.lobby.is_some(),
        "before its start the room is a lobby"
    );
    let (mut ana, _) = welcome(&node.ws(), &ana).await;

    // It opens at its start by itself (auto_start), within a deadline that scales.
    let waited = Instant::now();
    let within = Duration::from_millis(lead_ms as u64) + common::WAIT * 3;
    let (lobby, _) = until_admitted(&mut ben, within).await;
    assert!(lobby.iter().all(|e| matches!(e, RoomEvent::Lobby { .. })));
    until_admitted(&mut ana, common::WAIT).await;
    eprintln!("opened {:?} after the attendees joined", waited.elapsed());
    let (status, c) = api(
        &base,
        "GET",
        &format!("/convenings/{id}"),
        API_KEY,
        &Value::Null,
    )
    .await;
    assert_eq!((status, c["state"].as_str()), (200, Some("live")), "{c}");
    assert!(c["started_at"].as_str().unwrap() >= c["starts_at"].as_str().unwrap());

    // Live survives a restart too (no lobby any more), and the host ends it.
    node.kill9().await;
    node = serve(&dir, port, offset).await;
    let late = common::token("launch", Role::Participant, "cy", &[]);
    let (_, first) = welcome(&node.ws(), &late).await;
    assert!(matches!(&first, ServerMessage::Welcome { snapshot, .. } if snapshot.lobby.is_none()));
    let (status, c) = api(
        &base,
        "POST",
        &format!("/convenings/{id}/end"),
        API_KEY,
        &Value::Null,
    )
    .await;
    assert_eq!((status, c["state"].as_str()), (200, Some("ended")), "{c}");
    // Its record is the scheduled convening's, from the lobby through the restarts.
    let path = format!("/convenings/{id}/report");
    let (status, report) = api(&base, "GET", &path, API_KEY, &Value::Null).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["convening"]["state"], "ended");
    let present: Vec<&str> = report["attendance"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["identity"].as_str())
        .collect();
    assert!(
        present.contains(&"ana") && present.contains(&"cy"),
        "{report}"
    );
    node.terminate().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A cluster node without `store.url` keeps plans in memory: it never opens a SQLite file in
/// its data directory (each node would get a schedule of its own, and nodes started from one
/// working directory raced to migrate the same file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_node_without_a_store_url_opens_no_local_store() {
    let redis = cluster_support::Redis::start().await;
    let data = std::env::temp_dir().join(format!(
        "convene-cluster-no-store-{}-{}",
        std::process::id(),
        free_port()
    ));
    let data_dir = data.display().to_string();
    let node = Node::spawn_with(
        std::path::Path::new(cluster_support::BIN),
        "n1",
        free_port(),
        &redis.url(),
        &[("CONVENE_DATA_DIR", data_dir.as_str())],
    );
    node.ready().await;
    assert!(
        !data.join("convene.db").exists(),
        "a cluster node without store.url created {}",
        data.join("convene.db").display()
    );
    let _ = std::fs::remove_dir_all(&data);
}
