//! Foundation over real sockets: chat, history, roles, webcast presence, removal, bad input, bad tokens.

mod common;

use std::time::Duration;

use common::{http_get, http_request, Client, TestServer};
use convene::auth::{unix_now, Claims, TokenKeys};
use convene_signaling::{
    Command, ErrorCode, LeaveReason, Role, RoomEvent, ServerMessage, PROTOCOL_VERSION,
};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn welcome_names_protocol_session_and_you() {
    let t = TestServer::start().await;
    let host = t.join("r1", Role::Host, "hana").await;
    match host.welcome.as_ref().unwrap() {
        ServerMessage::Welcome {
            protocol,
            session_id,
            you,
            snapshot,
            ..
        } => {
            assert_eq!(*protocol, PROTOCOL_VERSION);
            assert!(!session_id.is_empty());
            assert_eq!((you.identity.as_str(), you.role), ("hana", Role::Host));
            assert_eq!(snapshot.room, "r1");
        }
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn two_participants_chat_and_history_reaches_late_joiners() {
    let t = TestServer::start().await;
    let mut ana = t.join("r", Role::Participant, "ana").await;
    let mut ben = t.join("r", Role::Participant, "ben").await;
    let id = ana
        .ok(Command::SendChat {
            text: "hello ben".into(),
        })
        .await;
    assert!(id.is_some(), "ack carries the message id");
    let got = ben
        .expect_event(|e| matches!(e, RoomEvent::ChatMessage { .. }))
        .await;
    match got {
        RoomEvent::ChatMessage { message } => {
            assert_eq!(
                (message.from.as_str(), message.text.as_str()),
                ("ana", "hello ben")
            );
            assert_eq!(Some(message.id), id);
        }
        _ => unreachable!(),
    }
    ben.ok(Command::SendChat {
        text: "hi ana".into(),
    })
    .await;
    let cleo = t.join("r", Role::Participant, "cleo").await;
    let texts: Vec<_> = cleo
        .snapshot()
        .chat
        .iter()
        .map(|m| m.text.as_str())
        .collect();
    assert_eq!(texts, vec!["hello ben", "hi ana"]);
    // Another room hears nothing of it.
    let mut other = t.join("elsewhere", Role::Participant, "dan").await;
    assert!(other.snapshot().chat.is_empty());
    ana.ok(Command::SendChat {
        text: "still here".into(),
    })
    .await;
    assert!(other
        .events_within(QUIET)
        .await
        .iter()
        .all(|e| !matches!(e, RoomEvent::ChatMessage { .. })));
}

#[tokio::test]
async fn every_staff_command_is_refused_to_participants() {
    let t = TestServer::start().await;
    let _host = t.join("r", Role::Host, "host").await;
    let mut ana = t.join("r", Role::Participant, "ana").await;
    let mut ben = t.join("r", Role::Participant, "ben").await;
    let staff_only = [
        Command::UpdateSettings {
            kind: Some(convene_signaling::RoomKind::Meeting),
            chat_enabled: None,
            qa_mode: None,
        },
        Command::MuteChat {
            identity: "ben".into(),
            muted: true,
        },
        Command::LowerHand {
            identity: Some("ben".into()),
        },
        Command::InviteToStage {
            identity: "ben".into(),
        },
        Command::RemoveFromStage {
            identity: "ben".into(),
        },
        Command::RemoveParticipant {
            identity: "ben".into(),
            reason: None,
        },
        Command::OpenBreakouts,
        Command::CloseBreakouts { countdown_s: None },
    ];
    for cmd in staff_only {
        let (code, message) = ana.refused(cmd.clone()).await;
        assert_eq!(code, ErrorCode::Forbidden, "{cmd:?}: {message}");
    }
    // A moderator may do the moderation, but not host-only settings.
    let mut moderator = t.join("r", Role::Moderator, "mo").await;
    moderator
        .ok(Command::InviteToStage {
            identity: "ben".into(),
        })
        .await;
    let (code, _) = moderator
        .refused(Command::UpdateSettings {
            kind: None,
            chat_enabled: Some(false),
            qa_mode: None,
        })
        .await;
    assert_eq!(code, ErrorCode::Forbidden);
    ben.expect_event(|e| matches!(e, RoomEvent::MemberUpdated { member } if member.identity == "ben" && member.on_stage)).await;
}

#[tokio::test]
async fn webcast_participants_see_counts_and_staff_see_the_list() {
    let t = TestServer::start().await;
    let mut host = t.join("web", Role::Host, "host").await;
    let mut watcher = t.join("web", Role::Participant, "w0").await;
    let mut audience = Vec::new();
    for i in 1..=20 {
        audience.push(t.join("web", Role::Participant, &format!("w{i}")).await);
    }
    // Staff saw each join; the watcher saw none of them, only coalesced counts.
    let host_events = host.events_within(Duration::from_millis(1200)).await;
    let joins = host_events
        .iter()
        .filter(|e| matches!(e, RoomEvent::MemberJoined { .. }))
        .count();
    assert_eq!(joins, 21);
    let watcher_events = watcher.events_within(Duration::from_millis(200)).await;
    assert!(
        watcher_events
            .iter()
            .all(|e| !matches!(e, RoomEvent::MemberJoined { .. })),
        "{watcher_events:?}"
    );
    let counts: Vec<u32> = watcher_events
        .iter()
        .filter_map(|e| match e {
            RoomEvent::ParticipantCount { count } => Some(*count),
            _ => None,
        })
        .collect();
    assert!(
        !counts.is_empty() && counts.len() < 10,
        "coalesced counts: {counts:?}"
    );
    assert_eq!(*counts.last().unwrap(), 21);
    let late = t.join("web", Role::Participant, "late").await;
    let snap = late.snapshot();
    assert_eq!(snap.participant_count, 22);
    assert!(snap
        .members
        .iter()
        .all(|m| m.role.is_staff() || m.on_stage || m.identity == "late"));
    let staff = t.join("web", Role::Moderator, "mo").await;
    assert_eq!(staff.snapshot().members.len(), 24);
}

#[tokio::test]
async fn removed_participant_is_told_closed_and_cannot_rejoin() {
    let t = TestServer::start().await;
    let mut moderator = t.join("r", Role::Moderator, "mo").await;
    let mut ana = t.join("r", Role::Participant, "ana").await;
    moderator
        .ok(Command::RemoveParticipant {
            identity: "ana".into(),
            reason: Some("spam links".into()),
        })
        .await;
    ana.expect_event(|e| {
        *e == RoomEvent::Removed {
            reason: "spam links".into(),
        }
    })
    .await;
    assert_eq!(ana.closed().await, Some(CloseCode::from(4001)));
    moderator
        .expect_event(|e| {
            *e == RoomEvent::MemberLeft {
                identity: "ana".into(),
                reason: LeaveReason::Removed,
            }
        })
        .await;
    let (status, body) = http_get(
        &format!(
            "{}/ws?token={}",
            t.http(),
            t.token("r", Role::Participant, "ana")
        ),
        None,
        &[],
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("removed"));
}

#[tokio::test]
async fn bad_input_gets_a_named_error_and_the_connection_stays_open() {
    let t = TestServer::start().await;
    let mut ana = t.join("r", Role::Participant, "ana").await;
    let mut ben = t.join("r", Role::Participant, "ben").await;
    let cases: [(&str, ErrorCode, Option<&str>); 6] = [
        ("{this is not json", ErrorCode::MalformedJson, None),
        (
            r#"{"type":"teleport","request_id":"t1"}"#,
            ErrorCode::UnknownType,
            Some("t1"),
        ),
        (
            r#"{"type":"send_chat","request_id":"t2"}"#,
            ErrorCode::InvalidMessage,
            Some("t2"),
        ),
        (
            r#"{"request_id":"t3","text":"no type"}"#,
            ErrorCode::InvalidMessage,
            Some("t3"),
        ),
        (
            r#"{"type":"send_chat","text":"hi","room":"other-room","request_id":"t4"}"#,
            ErrorCode::NotInRoom,
            Some("t4"),
        ),
        (
            r#"{"type":"upvote","question_id":"seven","request_id":"t5"}"#,
            ErrorCode::InvalidMessage,
            Some("t5"),
        ),
    ];
    for (raw, code, request_id) in cases {
        ana.send_raw(raw).await;
        match ana
            .expect(|m| matches!(m, ServerMessage::Error { .. }))
            .await
        {
            ServerMessage::Error {
                code: got,
                request_id: rid,
                message,
                ..
            } => {
                assert_eq!(got, code, "{raw}: {message}");
                assert_eq!(rid.as_deref(), request_id);
                assert!(!message.is_empty());
            }
            _ => unreachable!(),
        }
    }
    let long = "x".repeat(2001);
    let (code, message) = ana.refused(Command::SendChat { text: long }).await;
    assert_eq!(code, ErrorCode::InvalidArgument);
    assert!(message.contains("2000"), "{message}");
    // Still open and working; ben noticed nothing but the real message.
    ana.ok(Command::SendChat {
        text: "after all that".into(),
    })
    .await;
    let seen = ben.events_within(QUIET).await;
    let chats: Vec<_> = seen
        .iter()
        .filter(|e| matches!(e, RoomEvent::ChatMessage { .. }))
        .collect();
    assert_eq!(chats.len(), 1, "{seen:?}");
}

#[tokio::test]
async fn oversized_frame_closes_with_1009() {
    let t = TestServer::start_with(|c| c.limits.max_frame_bytes = 4096).await;
    let mut ana = t.join("r", Role::Participant, "ana").await;
    let huge = format!(r#"{{"type":"send_chat","text":"{}"}}"#, "y".repeat(10_000));
    ana.socket.send(Message::Text(huge.into())).await.unwrap();
    assert_eq!(ana.closed().await, Some(CloseCode::Size));
}

#[tokio::test]
async fn bad_tokens_are_refused_with_401_and_json() {
    let t = TestServer::start().await;
    let forged = TokenKeys::new(b"not-the-secret").mint_for(
        "r",
        Role::Host,
        "eve",
        "Eve",
        Default::default(),
        Duration::from_secs(60),
    );
    let expired = TokenKeys::new(common::SECRET.as_bytes()).mint(&Claims {
        sub: "old".into(),
        name: "Old".into(),
        room: "r".into(),
        role: Role::Participant,
        exp: unix_now() - 3600,
        attrs: Default::default(),
        nbf: None,
        jti: None,
    });
    let good = t.token("r", Role::Participant, "ana");
    let base = format!("{}/ws", t.http());
    let cases = [
        (base.clone(), "missing"),
        (format!("{base}?token=garbage"), "not valid"),
        (format!("{base}?token={forged}"), "not valid"),
        (format!("{base}?token={expired}"), "expired"),
        (
            format!("{base}?token={good}&room=another"),
            "not \"another\"",
        ),
    ];
    let upgrade = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    for (url, why) in cases {
        let (status, body) = http_get(&url, None, &upgrade).await;
        assert_eq!(status, 401, "{url}: {body}");
        let json: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("JSON body: {body}"));
        assert_eq!(json["error"], "unauthorized");
        assert!(json["message"].as_str().unwrap().contains(why), "{body}");
    }
    // The same token in an Authorization header works.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{}/ws", t.server.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Authorization", format!("Bearer {good}").parse().unwrap());
    let (mut socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgrade with header token");
    assert_eq!(response.status(), 101);
    let first = futures_util::StreamExt::next(&mut socket)
        .await
        .unwrap()
        .unwrap();
    assert!(first.to_text().unwrap().contains("\"welcome\""));
}

#[tokio::test]
async fn health_ready_metrics_and_client_are_served() {
    let t = TestServer::start().await;
    assert_eq!(
        http_get(&format!("{}/healthz", t.http()), None, &[])
            .await
            .0,
        200
    );
    assert_eq!(
        http_get(&format!("{}/readyz", t.http()), None, &[]).await.0,
        200
    );
    let (status, body) = http_get(&format!("{}/metrics", t.http()), None, &[]).await;
    assert_eq!(status, 200);
    assert!(body.contains("convene_sessions"));
    let (status, body) = http_get(&format!("{}/", t.http()), None, &[]).await;
    assert_eq!(status, 200);
    assert!(body.contains("<script type=\"module\" src=\"/app.js\">"));
    // Every module the page imports is served.
    for module in [
        "app.js",
        "protocol.js",
        "store.js",
        "dom.js",
        "connection.js",
        "media.js",
        "views.js",
        "style.css",
        "favicon.svg",
        "favicon.ico",
    ] {
        let (status, _) = http_get(&format!("{}/{module}", t.http()), None, &[]).await;
        assert_eq!(status, 200, "{module}");
    }
    let (status, body) = http_get(&format!("{}/connection.js", t.http()), None, &[]).await;
    assert_eq!(status, 200);
    assert!(body.contains("WebSocket"));
}

#[tokio::test]
async fn hands_reach_staff_and_the_raiser() {
    let t = TestServer::start().await;
    let mut host = t.join("r", Role::Host, "host").await;
    let mut ana = t.join("r", Role::Participant, "ana").await;
    let mut ben = t.join("r", Role::Participant, "ben").await;
    ana.ok(Command::RaiseHand).await;
    host.expect_event(|e| matches!(e, RoomEvent::MemberUpdated { member } if member.identity == "ana" && member.hand_raised)).await;
    ana.expect_event(|e| matches!(e, RoomEvent::MemberUpdated { member } if member.identity == "ana" && member.hand_raised)).await;
    // In a webcast, another participant does not see ana's hand.
    let seen = ben.events_within(QUIET).await;
    assert!(
        seen.iter()
            .all(|e| !matches!(e, RoomEvent::MemberUpdated { .. })),
        "{seen:?}"
    );
    host.ok(Command::LowerHand {
        identity: Some("ana".into()),
    })
    .await;
    ana.expect_event(|e| matches!(e, RoomEvent::MemberUpdated { member } if !member.hand_raised))
        .await;
}

#[tokio::test]
async fn room_staff_mint_invites_within_their_role_and_room() {
    let t = TestServer::start().await;
    let invite = |room: &str, bearer: &str, body: &str| {
        let url = format!("{}/api/v1/rooms/{room}/invites", t.http());
        let (bearer, body) = (bearer.to_string(), body.to_string());
        async move {
            let json = [("Content-Type", "application/json")];
            http_request("POST", &url, Some(&bearer), &json, &body).await
        }
    };
    let host = t.token("r", Role::Host, "host");
    let moderator = t.token("r", Role::Moderator, "mod");
    let presenter = t.token("r", Role::Presenter, "pres");
    let presenter_body = r#"{"role":"presenter","name":"Ines","attrs":{"team":"Knox"}}"#;
    let (status, body) = invite("r", &host, presenter_body).await;
    assert_eq!(status, 200, "{body}");
    let minted: serde_json::Value = serde_json::from_str(&body).unwrap();
    let token = minted["token"].as_str().unwrap();
    // The link joins that room with that role, name and team.
    let mut client = Client::connect(&t.ws_url(token)).await;
    let you = match client.recv().await {
        ServerMessage::Welcome { you, .. } => you,
        other => panic!("no welcome: {other:?}"),
    };
    assert_eq!((you.role, you.name.as_str()), (Role::Presenter, "Ines"));
    assert_eq!(you.attrs.get("team").map(String::as_str), Some("Knox"));

    // A moderator may not mint a host (nor a moderator); a presenter mints nothing; another room's token fails.
    let (status, _) = invite("r", &moderator, r#"{"role":"host","name":"X"}"#).await;
    assert_eq!(status, 403);
    // Only roles below their own (tests/seats.rs covers the caps).
    let (status, _) = invite("r", &moderator, r#"{"role":"moderator","name":"X"}"#).await;
    assert_eq!(status, 403);
    let (status, _) = invite("r", &moderator, r#"{"role":"presenter","name":"X"}"#).await;
    assert_eq!(status, 200);
    let (status, _) = invite("r", &presenter, r#"{"role":"participant","name":"X"}"#).await;
    assert_eq!(status, 403);
    let (status, _) = invite("elsewhere", &host, r#"{"role":"participant","name":"X"}"#).await;
    assert_eq!(status, 401);
    let (status, _) = invite("r", &host, r#"{"role":"emperor","name":"X"}"#).await;
    assert!(status == 400 || status == 422, "{status}");

    // No name: the joiner must bring one.
    let (status, body) = invite("r", &host, r#"{"role":"participant"}"#).await;
    assert_eq!(status, 200);
    let minted: serde_json::Value = serde_json::from_str(&body).unwrap();
    let token = minted["token"].as_str().unwrap();
    let bare = format!("{}/ws?token={token}", t.http());
    assert_eq!(http_get(&bare, None, &[]).await.0, 400);
    let named = format!("{}&name=Uma%20Diaz", t.ws_url(token));
    let mut client = Client::connect(&named).await;
    match client.recv().await {
        ServerMessage::Welcome { you, .. } => assert_eq!(you.name, "Uma Diaz"),
        other => panic!("no welcome: {other:?}"),
    }
}

#[tokio::test]
async fn polls_export_after_the_event_for_hosts_only() {
    let t = TestServer::start().await;
    let mut host = t.join("r", Role::Host, "host").await;
    let mut ana = t.join("r", Role::Participant, "ana").await;
    let launch = Command::LaunchPoll {
        question: "Which strand, \"first\"?".into(),
        options: vec!["Coaching".into(), "Data, use".into()],
        multiple: false,
        live_results: false,
    };
    let id = host.ok(launch).await.expect("poll id");
    ana.ok(Command::VotePoll {
        poll_id: id,
        choices: vec![1],
    })
    .await;
    let url = format!("{}/api/v1/rooms/r/polls", t.http());
    let host_token = t.token("r", Role::Host, "host");
    let (status, body) = http_get(&url, Some(&host_token), &[]).await;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["polls"][0]["counts"], serde_json::json!([0, 1]));
    let (status, csv) = http_get(&format!("{url}?format=csv"), Some(&host_token), &[]).await;
    assert_eq!(status, 200);
    let expected = "poll_id,question,state,shared,voters,option,answers\n\
        1,\"Which strand, \"\"first\"\"?\",open,false,1,Coaching,0\n\
        1,\"Which strand, \"\"first\"\"?\",open,false,1,\"Data, use\",1\n";
    assert_eq!(csv, expected);
    let participant = t.token("r", Role::Participant, "ana");
    assert_eq!(http_get(&url, Some(&participant), &[]).await.0, 403);
}
