//! Shareable audience links over real sockets: one link, a fresh identity for each person who
//! opens it, chat credited to each; revocation; limits on what a link can create; personal
//! invites alongside.

mod common;

use common::*;
use convene_signaling::{Command, Role, RoomEvent, ServerMessage};
use serde_json::Value;

const ROOM: &str = "launch";

async fn post(t: &TestServer, path: &str, bearer: &str, body: &str) -> (u16, Value) {
    let url = format!("{}/api/v1/rooms/{ROOM}/{path}", t.http());
    let json = [("Content-Type", "application/json")];
    let (status, body) = http_request("POST", &url, Some(bearer), &json, body).await;
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

/// Mints a link as the room's host; returns its id and token.
async fn mint(t: &TestServer, body: &str) -> (String, String) {
    let host = t.token(ROOM, Role::Host, "host");
    let (status, link) = post(t, "audience-link", &host, body).await;
    assert_eq!(status, 200, "{link}");
    assert!(link["url"].as_str().unwrap().contains("/?token="));
    (
        link["id"].as_str().unwrap().to_string(),
        link["token"].as_str().unwrap().to_string(),
    )
}

/// Opens the link as a person named `name`: status and body.
async fn exchange(t: &TestServer, link: &str, name: &str) -> (u16, Value) {
    let body = serde_json::json!({ "name": name }).to_string();
    post(t, "audience-link/join", link, &body).await
}

async fn connect(t: &TestServer, token: &str) -> Client {
    let mut client = Client::connect(&t.ws_url(token)).await;
    match client.recv().await {
        welcome @ ServerMessage::Welcome { .. } => {
            client.welcome = Some(welcome);
            client
        }
        other => panic!("no welcome: {other:?}"),
    }
}

#[tokio::test]
async fn two_people_on_one_audience_link_get_their_own_identities_and_chat() {
    let t = TestServer::start().await;
    let mut host = t.join(ROOM, Role::Host, "host").await;
    let (_, link) = mint(&t, "{}").await;

    let (status, ana) = exchange(&t, &link, "Ana Ruiz").await;
    assert_eq!(status, 200, "{ana}");
    let (status, ben) = exchange(&t, &link, "  Ben Cole ").await;
    assert_eq!(status, 200, "{ben}");
    let (ana_id, ben_id) = (
        ana["identity"].as_str().unwrap(),
        ben["identity"].as_str().unwrap(),
    );
    assert_ne!(ana_id, ben_id, "each person gets an identity of their own");

    let mut ana_client = connect(&t, ana["token"].as_str().unwrap()).await;
    let mut ben_client = connect(&t, ben["token"].as_str().unwrap()).await;
    for (client, identity, name) in [
        (&ana_client, ana_id, "Ana Ruiz"),
        (&ben_client, ben_id, "Ben Cole"),
    ] {
        match &client.welcome {
            Some(ServerMessage::Welcome { you, .. }) => {
                assert_eq!(
                    (you.identity.as_str(), you.name.as_str(), you.role),
                    (identity, name, Role::Participant)
                );
            }
            other => panic!("{other:?}"),
        }
    }
    ana_client
        .ok(Command::SendChat {
            text: "from Ana".into(),
        })
        .await;
    ben_client
        .ok(Command::SendChat {
            text: "from Ben".into(),
        })
        .await;
    for (text, identity, name) in [
        ("from Ana", ana_id, "Ana Ruiz"),
        ("from Ben", ben_id, "Ben Cole"),
    ] {
        let event = host
            .expect_event(
                |e| matches!(e, RoomEvent::ChatMessage { message } if message.text == text),
            )
            .await;
        let RoomEvent::ChatMessage { message } = event else {
            unreachable!()
        };
        assert_eq!(
            (message.from.as_str(), message.name.as_str()),
            (identity, name)
        );
    }

    // The link itself is not an access token: /ws says what it is.
    let (status, body) = http_get(&format!("{}/ws?token={link}", t.http()), None, &[]).await;
    assert_eq!(status, 400);
    assert!(body.contains("audience link"), "{body}");
}

#[tokio::test]
async fn a_revoked_link_admits_no_one_new() {
    let t = TestServer::start().await;
    let (id, link) = mint(&t, r#"{"ttl_s": 3600}"#).await;
    let (status, admitted) = exchange(&t, &link, "Ana").await;
    assert_eq!(status, 200);

    // Only the room's hosts and moderators (or the API key) revoke.
    let url = |id: &str| format!("{}/api/v1/rooms/{ROOM}/audience-link/{id}", t.http());
    let participant = t.token(ROOM, Role::Participant, "p");
    let (status, _) = http_request("DELETE", &url(&id), Some(&participant), &[], "").await;
    assert_eq!(status, 403);
    let moderator = t.token(ROOM, Role::Moderator, "mod");
    let (status, _) = http_request("DELETE", &url("no-such-link"), Some(&moderator), &[], "").await;
    assert_eq!(status, 404);
    let (status, body) = http_request("DELETE", &url(&id), Some(&moderator), &[], "").await;
    assert_eq!(status, 204, "{body}");

    let (status, refused) = exchange(&t, &link, "Ben").await;
    assert_eq!(status, 410, "{refused}");
    assert_eq!(refused["error"], "revoked");
    assert!(refused["message"].as_str().unwrap().contains("revoked"));
    // Someone already admitted keeps their seat.
    connect(&t, admitted["token"].as_str().unwrap()).await;
}

#[tokio::test]
async fn a_link_admits_a_bounded_number_of_named_people() {
    let t = TestServer::start().await;
    // A lifetime outside 60 s - 30 days is refused, not quietly changed; a body is an object.
    let host = t.token(ROOM, Role::Host, "host");
    for bad in [
        r#"{"ttl_s": 0}"#,
        r#"{"ttl_s": 59}"#,
        r#"{"ttl_s": 2592001}"#,
        "[null, null]",
    ] {
        let (status, body) = post(&t, "audience-link", &host, bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (_, link) = mint(&t, r#"{"max_people": 2}"#).await;
    // Names: trimmed, 1-100 characters, no control characters.
    for bad in ["", "   ", "Ana\nForged", "Ana\u{1b}[31m", &"x".repeat(101)] {
        let (status, body) = exchange(&t, &link, bad).await;
        assert_eq!(status, 400, "{bad:?}: {body}");
    }
    assert_eq!(exchange(&t, &link, "One").await.0, 200);
    assert_eq!(exchange(&t, &link, "Two").await.0, 200);
    let (status, body) = exchange(&t, &link, "Three").await;
    assert_eq!(status, 403, "{body}");

    // Link tokens, access tokens and rooms are not interchangeable.
    let host = t.token(ROOM, Role::Host, "host");
    assert_eq!(exchange(&t, &host, "Eve").await.0, 401);
    assert_eq!(exchange(&t, "not-a-token", "Eve").await.0, 401);
    let other = format!("{}/api/v1/rooms/elsewhere/audience-link/join", t.http());
    let json = [("Content-Type", "application/json")];
    let (status, _) = http_request("POST", &other, Some(&link), &json, r#"{"name":"Eve"}"#).await;
    assert_eq!(status, 401);
    let (status, _) = post(&t, "audience-link", &link, "{}").await;
    assert_eq!(status, 401, "a link mints no links");

    // Who may mint, and how many live links a room may hold.
    let presenter = t.token(ROOM, Role::Presenter, "pres");
    assert_eq!(post(&t, "audience-link", &presenter, "{}").await.0, 403);
    assert_eq!(
        post(&t, "audience-link", &host, r#"{"max_people": 0}"#)
            .await
            .0,
        400
    );
    assert_eq!(post(&t, "audience-link", API_KEY, "{}").await.0, 200);
    let mut status = 200;
    for _ in 0..30 {
        status = post(&t, "audience-link", &host, "{}").await.0;
        if status != 200 {
            break;
        }
    }
    assert_eq!(status, 409, "a room holds a bounded number of live links");
}

#[tokio::test]
async fn a_personal_invite_still_names_one_person() {
    let t = TestServer::start().await;
    let _ = mint(&t, "{}").await;
    let host = t.token(ROOM, Role::Host, "host");
    let (status, invite) = post(
        &t,
        "invites",
        &host,
        r#"{"role":"presenter","name":"Ines Park","attrs":{"team":"Knox"}}"#,
    )
    .await;
    assert_eq!(status, 200, "{invite}");
    let client = connect(&t, invite["token"].as_str().unwrap()).await;
    match &client.welcome {
        Some(ServerMessage::Welcome { you, .. }) => {
            assert_eq!(
                (you.name.as_str(), you.role),
                ("Ines Park", Role::Presenter)
            );
            assert_eq!(you.identity, invite["identity"].as_str().unwrap());
        }
        other => panic!("{other:?}"),
    }
}
