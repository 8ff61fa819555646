//! The admin API over real HTTP: every endpoint, its failure statuses, and the OpenAPI
//! document that must name every route the server has.

mod common;

use common::{http_get, http_request, Client, TestServer, API_KEY};
use convene_signaling::Role;
use convene_signaling::{ErrorCode, RoomEvent, RoomKind, ServerMessage};
use serde_json::Value;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const JSON: [(&str, &str); 1] = [("Content-Type", "application/json")];

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("JSON body ({e}): {body}"))
}

/// `(method, path)` of every `.route(...)` in the admin router's source, as `/api/v1/...`.
fn routes_in_source() -> Vec<(String, String)> {
    let source = include_str!("../src/http/api/mod.rs");
    let router = &source[source.find("pub fn router()").unwrap()..];
    let router = &router[..router.find("\n}\n").unwrap()];
    let mut routes = Vec::new();
    for call in router.split(".route(").skip(1) {
        let path = call.split('"').nth(1).unwrap();
        let handlers = &call[call.find(',').unwrap()..];
        for method in ["get", "post", "patch", "put", "delete"] {
            if handlers.contains(&format!("{method}(")) || handlers.contains(&format!(".{method}("))
            {
                routes.push((method.to_string(), format!("/api/v1{path}")));
            }
        }
    }
    assert!(
        routes.len() >= 9,
        "source scan found too little: {routes:?}"
    );
    routes
}

#[tokio::test]
async fn the_openapi_document_names_every_route_and_every_documented_route_exists() {
    let t = TestServer::start().await;
    let (status, body) = http_get(&format!("{}/api/v1/openapi.json", t.http()), None, &[]).await;
    assert_eq!(status, 200);
    let doc = json(&body);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().expect("paths");
    for (method, path) in routes_in_source() {
        assert!(
            paths.get(&path).and_then(|p| p.get(&method)).is_some(),
            "{} {path} is served but not in the OpenAPI document",
            method.to_uppercase()
        );
    }
    // And the other way: every documented operation is routed (a handler answers, with a
    // JSON error at worst; the router's own 404/405 have empty bodies).
    for (path, operations) in paths {
        for method in operations.as_object().unwrap().keys() {
            let concrete = path
                .replace("{room}", "nowhere")
                .replace("{identity}", "nobody");
            let (status, body) = http_request(
                &method.to_uppercase(),
                &format!("{}{concrete}", t.http()),
                None,
                &[],
                "",
            )
            .await;
            assert!(
                status != 405 && !(status == 404 && body.is_empty()),
                "{method} {path} is documented but not routed ({status})"
            );
            let responses = &operations[method]["responses"];
            assert!(
                responses.get(status.to_string()).is_some(),
                "{method} {path} answered {status}, which its document does not list"
            );
        }
    }
}

#[tokio::test]
async fn rooms_are_created_configured_listed_and_ended_through_the_api() {
    let t = TestServer::start().await;
    let url = |path: &str| format!("{}/api/v1{path}", t.http());
    let host = t.token("launch", Role::Host, "host");
    let participant = t.token("launch", Role::Participant, "ana");

    // Create before anyone joins, with settings.
    let create = r#"{"name":"launch","settings":{"kind":"meeting","chat_enabled":false}}"#;
    let (status, body) = http_request("POST", &url("/rooms"), Some(API_KEY), &JSON, create).await;
    assert_eq!(status, 201, "{body}");
    let room = json(&body);
    assert_eq!(room["settings"]["kind"], "meeting");
    assert_eq!(room["settings"]["chat_enabled"], false);
    assert_eq!(
        (room["participants"].as_u64(), room["ended"].as_bool()),
        (Some(0), Some(false))
    );
    // Refusals, each a JSON error with a reason.
    let big = format!(r#"{{"name":"{}"}}"#, "x".repeat(2 << 20));
    for (bearer, headers, body, want) in [
        (Some(API_KEY), &JSON[..], create, 409),
        (Some(API_KEY), &JSON[..], r#"{"name":""}"#, 400),
        (Some(API_KEY), &JSON[..], r#"{"name":"a\nb"}"#, 400),
        (
            Some(API_KEY),
            &JSON[..],
            r#"{"name":"x","settings":{"kind":"party"}}"#,
            400,
        ),
        (Some(API_KEY), &JSON[..], r#"{"name":"#, 400),
        (
            Some(API_KEY),
            &[("Content-Type", "text/plain")][..],
            r#"{"name":"y"}"#,
            415,
        ),
        (Some(API_KEY), &JSON[..], big.as_str(), 413),
        (None, &JSON[..], r#"{"name":"y"}"#, 401),
        (Some("nonsense"), &JSON[..], r#"{"name":"y"}"#, 401),
        (Some(host.as_str()), &JSON[..], r#"{"name":"y"}"#, 403),
    ] {
        let (status, reply) = http_request("POST", &url("/rooms"), bearer, headers, body).await;
        assert_eq!(status, want, "{body:.80}: {reply}");
        assert!(json(&reply)["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }

    // People join the room as it was configured.
    let mut ana = t.join("launch", Role::Participant, "ana").await;
    let mut ben = t.join("launch", Role::Participant, "ben").await;
    assert_eq!(ana.snapshot().settings.kind, RoomKind::Meeting);
    assert!(!ana.snapshot().settings.chat_enabled);

    let (status, body) = http_get(&url("/rooms"), Some(API_KEY), &[]).await;
    assert_eq!(status, 200, "{body}");
    let rooms = json(&body);
    let listed = rooms["rooms"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{body}");
    assert_eq!(
        (listed[0]["name"].as_str(), listed[0]["sessions"].as_u64()),
        (Some("launch"), Some(2))
    );

    for bearer in [API_KEY, host.as_str()] {
        let (status, body) = http_get(&url("/rooms/launch/participants"), Some(bearer), &[]).await;
        assert_eq!(status, 200, "{body}");
        let people: Vec<String> = json(&body)["participants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["identity"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(people, ["ana", "ben"]);
    }
    let (status, body) = http_get(&url("/rooms/launch"), Some(&host), &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["participants"], 2);
    for (path, bearer, want) in [
        (
            "/rooms/launch/participants",
            Some(participant.as_str()),
            403,
        ),
        ("/rooms/launch/participants", None, 401),
        ("/rooms/nowhere/participants", Some(API_KEY), 404),
        ("/rooms/nowhere", Some(API_KEY), 404),
        ("/rooms/launch", Some(participant.as_str()), 403),
    ] {
        let (status, body) = http_get(&url(path), bearer, &[]).await;
        assert_eq!(status, want, "{path}: {body}");
    }

    // Settings change during the event: people see it.
    let (status, body) = http_request(
        "PATCH",
        &url("/rooms/launch"),
        Some(&host),
        &JSON,
        r#"{"chat_enabled":true,"qa_mode":"open"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["settings"]["qa_mode"], "open");
    ana.expect_event(
        |e| matches!(e, RoomEvent::SettingsChanged { settings, .. } if settings.chat_enabled),
    )
    .await;
    let (status, _) = http_request(
        "PATCH",
        &url("/rooms/launch"),
        Some(&host),
        &JSON,
        r#"{"colour":"red"}"#,
    )
    .await;
    assert_eq!(status, 400);

    // Removing one person closes their socket and keeps them out.
    let (status, body) = http_request(
        "DELETE",
        &url("/rooms/launch/participants/ana?reason=off-topic"),
        Some(API_KEY),
        &[],
        "",
    )
    .await;
    assert_eq!(status, 204, "{body}");
    ana.expect_event(|e| {
        *e == RoomEvent::Removed {
            reason: "off-topic".into(),
        }
    })
    .await;
    assert_eq!(ana.closed().await, Some(CloseCode::from(4001)));
    let (status, _) = http_request(
        "DELETE",
        &url("/rooms/launch/participants/ana"),
        Some(API_KEY),
        &[],
        "",
    )
    .await;
    assert_eq!(status, 404, "already gone");
    let (status, _) = http_request(
        "DELETE",
        &url("/rooms/launch/participants/ben"),
        Some(&participant),
        &[],
        "",
    )
    .await;
    assert_eq!(status, 403);

    // Ending the convening removes everyone and refuses later joins.
    let (status, body) = http_request("DELETE", &url("/rooms/launch"), Some(&host), &[], "").await;
    assert_eq!(status, 200, "{body}");
    let ended = json(&body);
    assert_eq!(
        (ended["ended"].as_bool(), ended["participants"].as_u64()),
        (Some(true), Some(0))
    );
    ben.expect_event(|e| matches!(e, RoomEvent::Removed { .. }))
        .await;
    assert_eq!(ben.closed().await, Some(CloseCode::from(4001)));
    let mut late = Client::connect(&t.ws_url(&t.token("launch", Role::Participant, "cy"))).await;
    match late.recv().await {
        ServerMessage::Error { code, message, .. } => {
            assert_eq!(code, ErrorCode::Forbidden);
            assert!(message.contains("ended"), "{message}");
        }
        other => panic!("joined an ended room: {other:?}"),
    }
}

#[tokio::test]
async fn tokens_are_minted_with_the_api_key_only() {
    let t = TestServer::start().await;
    let url = format!("{}/api/v1/tokens", t.http());
    let request =
        r#"{"room":"r","role":"presenter","name":"Ana Ruiz","attrs":{"team":"Knox County"}}"#;
    let (status, body) = http_request("POST", &url, Some(API_KEY), &JSON, request).await;
    assert_eq!(status, 200, "{body}");
    let minted = json(&body);
    let claims = convene::auth::TokenKeys::new(common::SECRET.as_bytes())
        .verify(minted["token"].as_str().unwrap(), Some("r"))
        .unwrap();
    assert_eq!(
        (claims.role, claims.name.as_str()),
        (Role::Presenter, "Ana Ruiz")
    );
    assert_eq!(claims.sub, minted["identity"].as_str().unwrap());
    assert!(minted["url"].as_str().unwrap().contains("?token="));
    let host = t.token("r", Role::Host, "host");
    for (bearer, body, want) in [
        (Some(host.as_str()), request, 403),
        (None, request, 401),
        (
            Some(API_KEY),
            r#"{"room":"r","role":"king","name":"A"}"#,
            400,
        ),
        (Some(API_KEY), r#"{"room":"r","role":"host"}"#, 400),
        (
            Some(API_KEY),
            r#"{"room":"r","role":"host","name":"A","extra":1}"#,
            400,
        ),
    ] {
        let (status, reply) = http_request("POST", &url, bearer, &JSON, body).await;
        assert_eq!(status, want, "{body}: {reply}");
    }
}

#[tokio::test]
async fn attendance_counts_a_scripted_session_and_outlives_the_room() {
    use convene_signaling::Command;
    use std::time::{Duration, Instant};
    let t = TestServer::start_with(|c| c.limits.empty_room_ttl_s = 1).await;
    let mut host = t.join("x", Role::Host, "host").await;
    let mut ana = t
        .join_with("x", Role::Participant, "ana", &[("team", "Knox County")])
        .await;
    ana.ok(Command::SendChat {
        text: "hello".into(),
    })
    .await;
    let q = ana
        .ok(Command::AskQuestion {
            text: "When?".into(),
            anonymous: false,
        })
        .await
        .unwrap();
    host.ok(Command::ApproveQuestion { question_id: q }).await;
    host.ok(Command::Upvote { question_id: q }).await;
    host.ok(Command::SetBreakoutPlan {
        plan: common::by_team(None),
    })
    .await;
    host.ok(Command::OpenBreakouts).await;
    ana.expect_event(|e| {
        matches!(
            e,
            RoomEvent::Moved {
                breakout: Some(_),
                ..
            }
        )
    })
    .await;
    let moved_in = Instant::now();
    tokio::time::sleep(Duration::from_millis(2300)).await;
    ana.ok(Command::LeaveBreakout).await;
    let in_breakout = moved_in.elapsed().as_secs();
    ana.socket.close(None).await.unwrap();

    let url = format!("{}/api/v1/rooms/x/attendance", t.http());
    let read = |bearer: Option<String>| {
        let url = url.clone();
        async move {
            let (status, body) = http_get(&url, bearer.as_deref(), &[]).await;
            assert_eq!(status, 200, "{body}");
            json(&body)
        }
    };
    let mut report = read(Some(API_KEY.into())).await;
    // The left event may trail the close by a moment.
    for _ in 0..50 {
        if report["people"][0]["stays"][0]["left_at"].is_u64() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        report = read(Some(API_KEY.into())).await;
    }
    let people = report["people"].as_array().unwrap();
    let ana_row = people
        .iter()
        .find(|p| p["identity"] == "ana")
        .expect("ana attended");
    let stays = ana_row["stays"].as_array().unwrap();
    assert_eq!(stays.len(), 1, "{ana_row}");
    let stayed_ms = stays[0]["left_at"].as_u64().unwrap() - stays[0]["joined_at"].as_u64().unwrap();
    assert_eq!(
        ana_row["present_s"].as_u64().unwrap(),
        stayed_ms / 1000,
        "{ana_row}"
    );
    let breakouts = ana_row["breakouts"].as_array().unwrap();
    assert_eq!(breakouts.len(), 1, "{ana_row}");
    assert_eq!(breakouts[0]["name"], "Knox County");
    let seconds = breakouts[0]["seconds"].as_u64().unwrap();
    assert!(
        seconds == in_breakout || seconds + 1 == in_breakout,
        "{seconds} s in the breakout, measured {in_breakout} s"
    );
    assert_eq!(
        ana_row["main_room_s"].as_u64().unwrap() + seconds,
        ana_row["present_s"].as_u64().unwrap(),
        "{ana_row}"
    );
    assert_eq!(
        (
            &ana_row["questions"],
            &ana_row["chat_messages"],
            &ana_row["role"]
        ),
        (
            &Value::from(1),
            &Value::from(1),
            &Value::from("participant")
        )
    );
    let host_row = people.iter().find(|p| p["identity"] == "host").unwrap();
    assert_eq!(host_row["votes"], 1);
    assert!(
        host_row["stays"][0]["left_at"].is_null(),
        "the host is still here"
    );

    // CSV, and the refusals.
    let (status, csv) = http_get(
        &format!("{url}?format=csv"),
        Some(&t.token("x", Role::Host, "host")),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert!(csv.starts_with("identity,name,role,first_joined_at,last_left_at,stays,present_s,main_room_s,breakouts,on_stage_s,questions,votes,chat_messages\n"), "{csv}");
    assert!(csv.contains(&format!(",Knox County:{seconds},")), "{csv}");
    for (bearer, query, want) in [
        (Some(t.token("x", Role::Participant, "ana")), "", 403),
        (None, "", 401),
        (Some(API_KEY.to_string()), "?format=xml", 400),
    ] {
        let (status, body) = http_get(&format!("{url}{query}"), bearer.as_deref(), &[]).await;
        assert_eq!(status, want, "{body}");
    }
    let (status, _) = http_get(
        &format!("{}/api/v1/rooms/none/attendance", t.http()),
        Some(API_KEY),
        &[],
    )
    .await;
    assert_eq!(status, 404);

    // Everyone gone, the room closes; its attendance stays.
    host.socket.close(None).await.unwrap();
    let deadline = Instant::now() + common::WAIT;
    while http_get(&format!("{}/api/v1/rooms/x", t.http()), Some(API_KEY), &[])
        .await
        .0
        != 404
    {
        assert!(Instant::now() < deadline, "the room did not close");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = read(Some(API_KEY.into())).await;
    assert_eq!(after["people"].as_array().unwrap().len(), 2, "{after}");
}
