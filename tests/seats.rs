//! Seats and tokens (issue 21): one live session per identity per room, per-address join
//! limits, invite caps and revocation (one node and a cluster), `nbf`, the page's security
//! headers and who may read `/metrics`. Real servers on 127.0.0.1:0, real sockets.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{
    http_get, http_request, try_http, Client, TestRedis, TestServer, API_KEY, SECRET, WAIT,
};
use convene::auth::{unix_now, Claims, TokenKeys};
use convene_signaling::{Role, ServerMessage};
use serde_json::Value;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Waits (up to `WAIT`) for `check` to hold; panics with `what` otherwise.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn room_sessions(t: &TestServer, room: &str) -> usize {
    t.server
        .state
        .rooms
        .get(room)
        .map_or(0, |r| r.sessions.load(std::sync::atomic::Ordering::Relaxed))
}

fn node_sessions(t: &TestServer) -> usize {
    t.server
        .state
        .sessions
        .load(std::sync::atomic::Ordering::Relaxed)
}

async fn participants(t: &TestServer, room: &str) -> Vec<Value> {
    let url = format!("{}/api/v1/rooms/{room}/participants", t.http());
    let (status, body) = http_get(&url, Some(API_KEY), &[]).await;
    assert_eq!(status, 200, "{body}");
    let json: Value = serde_json::from_str(&body).unwrap();
    json["participants"]
        .as_array()
        .or_else(|| json.as_array())
        .cloned()
        .unwrap_or_else(|| panic!("no participants in {json}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_holds_one_seat_and_the_host_still_gets_in() {
    // A room of 10: on a server that let one token take a seat per socket, join 11 is a 503.
    let t = TestServer::start_with(|c| c.server.max_sessions_per_room = 10).await;
    let token = t.token("launch", Role::Participant, "ana");
    let mut earlier: Vec<Client> = Vec::new();
    for _ in 0..50 {
        let mut client = Client::connect(&t.ws_url(&token)).await;
        match client.recv().await {
            ServerMessage::Welcome { .. } => {}
            other => panic!("expected welcome, got {other:?}"),
        }
        earlier.push(client);
    }
    let live = earlier.pop().unwrap();
    for mut old in earlier {
        assert_eq!(
            old.closed().await.map(u16::from),
            Some(4004),
            "a replaced window is told why (session_replaced)"
        );
    }
    until("one live session in the room and on the node", || {
        room_sessions(&t, "launch") == 1 && node_sessions(&t) == 1
    })
    .await;
    let people = participants(&t, "launch").await;
    assert_eq!(people.len(), 1, "{people:?}");
    let host = t.join("launch", Role::Host, "host").await;
    assert_eq!(participants(&t, "launch").await.len(), 2);
    drop((live, host));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_is_the_same_seat_and_a_new_window_takes_it() {
    let t = TestServer::start().await;
    let mut ana = t.join("r", Role::Participant, "ana").await;
    ana.session_id = match &ana.welcome {
        Some(ServerMessage::Welcome { session_id, .. }) => session_id.clone(),
        _ => unreachable!(),
    };
    let (token, session_id, last_seq) = ana.drop_connection();
    let (mut resumed, first) = t.resume(&token, &session_id, last_seq).await;
    assert!(
        matches!(first, ServerMessage::Resumed { .. }),
        "a resume is not replaced: {first:?}"
    );
    until("one session after the resume", || {
        room_sessions(&t, "r") == 1
    })
    .await;
    // A fresh join (another window) takes the seat: the resumed socket yields, for good.
    let mut other = Client::connect(&t.ws_url(&token)).await;
    assert!(matches!(other.recv().await, ServerMessage::Welcome { .. }));
    assert_eq!(resumed.closed().await.map(u16::from), Some(4004));
    // Resuming the replaced session does not bring it back beside the new one.
    let (again, first) = t.resume(&token, &session_id, last_seq).await;
    assert!(
        matches!(
            first,
            ServerMessage::Welcome {
                resume_failed: Some(_),
                ..
            }
        ),
        "{first:?}"
    );
    assert_eq!(other.closed().await.map(u16::from), Some(4004));
    until("still one session", || room_sessions(&t, "r") == 1).await;
    drop(again);
}

/// A plain GET of `/ws` as if forwarded for `client` by the proxy on 127.0.0.1: refusals come
/// before the upgrade (status and JSON), and a token that passes every check gets 426.
async fn ws_get(t: &TestServer, token: &str, client: &str) -> (u16, String) {
    let url = format!("{}/ws?token={token}", t.http());
    http_get(&url, None, &[("X-Forwarded-For", client)]).await
}

async fn ws_connect_from(t: &TestServer, token: &str, client: &str) -> Client {
    let mut request = t.ws_url(token).into_client_request().unwrap();
    request
        .headers_mut()
        .insert("X-Forwarded-For", client.parse().unwrap());
    let mut client = Client::connect_request(request).await;
    assert!(matches!(client.recv().await, ServerMessage::Welcome { .. }));
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_address_caps_refuse_before_the_upgrade() {
    let t = TestServer::start_with(|c| {
        c.server.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        c.server.max_sessions_per_ip = 3;
        c.server.joins_per_ip_per_minute = 0;
    })
    .await;
    let school = "198.51.100.7";
    let mut seated = Vec::new();
    for i in 0..3 {
        let token = t.token("r", Role::Participant, &format!("p{i}"));
        seated.push(ws_connect_from(&t, &token, school).await);
    }
    let fourth = t.token("r", Role::Participant, "p3");
    let (status, body) = ws_get(&t, &fourth, school).await;
    assert_eq!(status, 503, "{body}");
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"], "too_many_sessions", "{json}");
    // Another address, and the server's own loopback (exempt), are not affected.
    assert_eq!(ws_get(&t, &fourth, "198.51.100.8").await.0, 426);
    assert_eq!(
        http_get(&format!("{}/ws?token={fourth}", t.http()), None, &[])
            .await
            .0,
        426
    );
    // A forwarded-for header from an untrusted peer is ignored: that is covered by the unit
    // test of `client_ip`; here one seat freed lets the next in.
    drop(seated.pop());
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = ws_get(&t, &fourth, school).await;
        if status == 426 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            Instant::now() < deadline,
            "the freed seat was not given back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_address_join_rate_answers_429_with_json() {
    let t = TestServer::start_with(|c| {
        c.server.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        c.server.joins_per_ip_per_minute = 1;
        c.server.join_burst_per_ip = 2;
    })
    .await;
    let token = t.token("r", Role::Participant, "ana");
    assert_eq!(ws_get(&t, &token, "203.0.113.5").await.0, 426);
    assert_eq!(ws_get(&t, &token, "203.0.113.5").await.0, 426);
    let (status, body) = ws_get(&t, &token, "203.0.113.5").await;
    assert_eq!(status, 429, "{body}");
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"], "rate_limited", "{json}");
    assert_eq!(ws_get(&t, &token, "203.0.113.6").await.0, 426);
}

async fn invite(t: &TestServer, room: &str, bearer: &str, body: &str) -> (u16, Value) {
    let url = format!("{}/api/v1/rooms/{room}/invites", t.http());
    let json = [("Content-Type", "application/json")];
    let (status, body) = http_request("POST", &url, Some(bearer), &json, body).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn token_with(room: &str, role: Role, identity: &str, ttl_s: u64, nbf: Option<u64>) -> String {
    TokenKeys::new(SECRET.as_bytes()).mint(&Claims {
        sub: identity.into(),
        name: identity.to_uppercase(),
        room: room.into(),
        role,
        exp: unix_now() + ttl_s,
        attrs: BTreeMap::new(),
        nbf,
        jti: Some(format!("jti-{identity}")),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invites_are_capped_in_role_lifetime_and_names() {
    let t = TestServer::start_with(|c| c.auth.max_invite_ttl_s = 3600).await;
    let host = t.token("r", Role::Host, "host");
    let moderator = token_with("r", Role::Moderator, "mod", 120, None);
    // A moderator invites below their role only; the host may invite a moderator.
    for (role, status) in [
        ("moderator", 403),
        ("host", 403),
        ("presenter", 200),
        ("participant", 200),
    ] {
        let body = format!(r#"{{"role":"{role}","name":"Ines"}}"#);
        assert_eq!(invite(&t, "r", &moderator, &body).await.0, status, "{role}");
    }
    assert_eq!(
        invite(&t, "r", &host, r#"{"role":"moderator","name":"Ines"}"#)
            .await
            .0,
        200
    );
    assert_eq!(
        invite(&t, "r", &host, r#"{"role":"host","name":"Ines"}"#)
            .await
            .0,
        403
    );
    // No longer than the inviter's own token, nor the configured maximum.
    let now = unix_now();
    let (_, minted) = invite(
        &t,
        "r",
        &moderator,
        r#"{"role":"participant","ttl_s":2592000}"#,
    )
    .await;
    let exp = minted["expires_at"].as_u64().unwrap();
    assert!(exp <= now + 121, "invite outlives its inviter: {minted}");
    let (_, minted) = invite(&t, "r", &host, r#"{"role":"participant","ttl_s":2592000}"#).await;
    let exp = minted["expires_at"].as_u64().unwrap();
    assert!(exp <= now + 3601, "invite past max_invite_ttl_s: {minted}");
    // Names that claim a role, and bidi or control characters, are refused.
    for body in [
        r#"{"role":"participant","name":"Dr. Ana Ruiz (Host)"}"#,
        r#"{"role":"participant","name":"Ana \u202e(tsoH)"}"#,
        r#"{"role":"participant","name":"Ana","attrs":{"team":"\u2066Knox"}}"#,
    ] {
        assert_eq!(invite(&t, "r", &host, body).await.0, 400, "{body}");
    }
    // A name-less invite: the joiner may not call themselves "(Host)" either.
    let (_, minted) = invite(&t, "r", &host, r#"{"role":"participant"}"#).await;
    let token = minted["token"].as_str().unwrap();
    let url = format!(
        "{}/ws?token={token}&name=Dr.%20Ana%20Ruiz%20(Host)",
        t.http()
    );
    let (status, body) = http_get(&url, None, &[]).await;
    assert_eq!(status, 400, "{body}");
    let url = format!("{}/ws?token={token}&name=Ana%20Ruiz", t.http());
    assert_eq!(http_get(&url, None, &[]).await.0, 426);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_moderator_mints_nothing() {
    let t = TestServer::start().await;
    let moderator = t.token("r", Role::Moderator, "mod");
    let mut present = t.join("r", Role::Moderator, "mod").await;
    let _host = t.join("r", Role::Host, "host").await;
    assert_eq!(
        invite(&t, "r", &moderator, r#"{"role":"participant","name":"A"}"#)
            .await
            .0,
        200
    );
    let url = format!("{}/api/v1/rooms/r/participants/mod", t.http());
    let (status, body) = http_request("DELETE", &url, Some(API_KEY), &[], "").await;
    assert!(status < 300, "{status} {body}");
    assert_eq!(present.closed().await.map(u16::from), Some(4001));
    let (status, body) = invite(&t, "r", &moderator, r#"{"role":"participant","name":"A"}"#).await;
    assert_eq!(status, 403, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_cannot_join_and_its_sessions_close() {
    let t = TestServer::start_with(|c| c.auth.max_revoked_per_room = 2).await;
    let host = t.token("r", Role::Host, "host");
    let (_, minted) = invite(&t, "r", &host, r#"{"role":"participant","name":"Uma"}"#).await;
    let token = minted["token"].as_str().unwrap().to_string();
    let id = minted["token_id"].as_str().unwrap().to_string();
    assert!(!id.is_empty(), "{minted}");
    let mut uma = Client::connect(&t.ws_url(&token)).await;
    assert!(matches!(uma.recv().await, ServerMessage::Welcome { .. }));
    let revoke = |id: String| {
        let url = format!("{}/api/v1/rooms/r/invites/{id}", t.http());
        let host = host.clone();
        async move { http_request("DELETE", &url, Some(&host), &[], "").await }
    };
    let (status, body) = revoke(id.clone()).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(uma.closed().await.map(u16::from), Some(4005));
    let (status, body) = http_get(&format!("{}/ws?token={token}", t.http()), None, &[]).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("revoked"), "{body}");
    // Someone else's token still works; the deny list per room is bounded.
    assert_eq!(
        http_get(
            &t.ws_url(&t.token("r", Role::Participant, "ben"))
                .replace("ws://", "http://"),
            None,
            &[]
        )
        .await
        .0,
        426
    );
    assert_eq!(revoke("second".into()).await.0, 204);
    assert_eq!(revoke("third".into()).await.0, 409);
    // A participant may not revoke.
    let url = format!("{}/api/v1/rooms/r/invites/x", t.http());
    let ben = t.token("r", Role::Participant, "ben");
    assert_eq!(
        http_request("DELETE", &url, Some(&ben), &[], "").await.0,
        403
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_not_yet_valid_is_refused() {
    let t = TestServer::start().await;
    let early = token_with("r", Role::Participant, "ana", 3600, Some(unix_now() + 600));
    let (status, body) = http_get(&format!("{}/ws?token={early}", t.http()), None, &[]).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("not valid yet"), "{body}");
    let now = token_with("r", Role::Participant, "ben", 3600, Some(unix_now()));
    assert_eq!(
        http_get(&format!("{}/ws?token={now}", t.http()), None, &[])
            .await
            .0,
        426
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_nodes_share_seats_and_revocations() {
    let redis = TestRedis::start().await;
    let nodes = common::cluster_of(&redis, 2, |_| {}).await;
    let (n1, n2) = (&nodes[0], &nodes[1]);
    // One seat per identity across nodes: the room (on its owner) decides.
    let token = n1.token("conv", Role::Participant, "ana");
    let mut first = Client::connect(&n1.ws_url(&token)).await;
    assert!(matches!(first.recv().await, ServerMessage::Welcome { .. }));
    let mut second = Client::connect(&n2.ws_url(&token)).await;
    assert!(matches!(second.recv().await, ServerMessage::Welcome { .. }));
    assert_eq!(first.closed().await.map(u16::from), Some(4004));

    // A token revoked through one node is refused by the other, and its session there closes.
    let host = n1.token("conv", Role::Host, "host");
    let (_, minted) = invite(n1, "conv", &host, r#"{"role":"participant","name":"Uma"}"#).await;
    let invited = minted["token"].as_str().unwrap().to_string();
    let mut uma = Client::connect(&n2.ws_url(&invited)).await;
    assert!(matches!(uma.recv().await, ServerMessage::Welcome { .. }));
    let url = format!(
        "{}/api/v1/rooms/conv/invites/{}",
        n1.http(),
        minted["token_id"].as_str().unwrap()
    );
    assert_eq!(
        http_request("DELETE", &url, Some(API_KEY), &[], "").await.0,
        204
    );
    assert_eq!(uma.closed().await.map(u16::from), Some(4005));
    let (status, body) = http_get(&format!("{}/ws?token={invited}", n2.http()), None, &[]).await;
    assert_eq!(status, 401, "{body}");

    // An audience link revoked on one node admits no one on the other.
    let json = [("Content-Type", "application/json")];
    let url = format!("{}/api/v1/rooms/conv/audience-link", n1.http());
    let (status, link) = http_request("POST", &url, Some(&host), &json, "{}").await;
    assert_eq!(status, 200, "{link}");
    let link: Value = serde_json::from_str(&link).unwrap();
    let url = format!(
        "{}/api/v1/rooms/conv/audience-link/{}",
        n1.http(),
        link["id"].as_str().unwrap()
    );
    assert_eq!(
        http_request("DELETE", &url, Some(&host), &[], "").await.0,
        204
    );
    let url = format!("{}/api/v1/rooms/conv/audience-link/join", n2.http());
    let bearer = link["token"].as_str().unwrap();
    let (status, body) = http_request("POST", &url, Some(bearer), &json, r#"{"name":"Vic"}"#).await;
    assert_eq!(status, 410, "{body}");
    drop(second);
}

#[tokio::test]
async fn the_page_carries_its_security_headers() {
    let t = TestServer::start().await;
    for path in ["/", "/app.js", "/style.css"] {
        let (status, head, _) = try_http("GET", &format!("{}{path}", t.http()), None, &[], "")
            .await
            .unwrap();
        assert_eq!(status, 200);
        let csp = common::header(&head, "content-security-policy")
            .unwrap_or_else(|| panic!("no CSP on {path}: {head}"));
        for part in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "object-src 'none'",
        ] {
            assert!(csp.contains(part), "{path}: {part} missing in {csp}");
        }
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert!(csp.contains(&format!("ws://{}", t.server.addr)), "{csp}");
        assert_eq!(
            common::header(&head, "referrer-policy"),
            Some("no-referrer")
        );
        assert_eq!(
            common::header(&head, "x-content-type-options"),
            Some("nosniff")
        );
    }
    let embeddable = TestServer::start_with(|c| {
        c.server.frame_ancestors = vec!["https://lms.example.org".into()];
    })
    .await;
    let (_, head, _) = try_http("GET", &format!("{}/", embeddable.http()), None, &[], "")
        .await
        .unwrap();
    let csp = common::header(&head, "content-security-policy").unwrap();
    assert!(
        csp.contains("frame-ancestors https://lms.example.org"),
        "{csp}"
    );
}

#[tokio::test]
async fn metrics_need_the_token_when_one_is_set() {
    let t = TestServer::start_with(|c| c.server.metrics_token = "scrape-me".into()).await;
    let url = format!("{}/metrics", t.http());
    assert_eq!(http_get(&url, None, &[]).await.0, 401);
    assert_eq!(http_get(&url, Some("wrong"), &[]).await.0, 401);
    let (status, body) = http_get(&url, Some("scrape-me"), &[]).await;
    assert_eq!(status, 200);
    assert!(body.contains("convene_"), "{body}");
}

#[tokio::test]
async fn without_a_token_metrics_are_for_loopback_only() {
    let t = TestServer::start_with(|c| {
        c.server.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let url = format!("{}/metrics", t.http());
    assert_eq!(http_get(&url, None, &[]).await.0, 200);
    let (status, body) = http_get(&url, None, &[("X-Forwarded-For", "198.51.100.7")]).await;
    assert_eq!(status, 403, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_seats_per_identity_the_oldest_window_yields() {
    let t = TestServer::start_with(|c| c.limits.sessions_per_identity = 2).await;
    let token = t.token("r", Role::Participant, "ana");
    let mut windows = Vec::new();
    for _ in 0..2 {
        let mut client = Client::connect(&t.ws_url(&token)).await;
        assert!(matches!(client.recv().await, ServerMessage::Welcome { .. }));
        windows.push(client);
    }
    until("two sessions", || room_sessions(&t, "r") == 2).await;
    let mut third = Client::connect(&t.ws_url(&token)).await;
    assert!(matches!(third.recv().await, ServerMessage::Welcome { .. }));
    assert_eq!(windows[0].closed().await.map(u16::from), Some(4004));
    until("still two sessions", || room_sessions(&t, "r") == 2).await;
    // The second window still works.
    windows[1]
        .ok(convene_signaling::Command::SendChat {
            text: "still here".into(),
        })
        .await;
}

#[tokio::test]
async fn an_audience_name_may_not_claim_a_role() {
    let t = TestServer::start().await;
    let host = t.token("r", Role::Host, "host");
    let json = [("Content-Type", "application/json")];
    let url = format!("{}/api/v1/rooms/r/audience-link", t.http());
    let (status, link) = http_request("POST", &url, Some(&host), &json, "{}").await;
    assert_eq!(status, 200, "{link}");
    let link: Value = serde_json::from_str(&link).unwrap();
    let bearer = link["token"].as_str().unwrap();
    let url = format!("{}/api/v1/rooms/r/audience-link/join", t.http());
    for name in [r#""Dr. Ana Ruiz (Host)""#, r#""Ana \u202e""#] {
        let body = format!(r#"{{"name":{name}}}"#);
        let (status, answer) = http_request("POST", &url, Some(bearer), &json, &body).await;
        assert_eq!(status, 400, "{name}: {answer}");
    }
    // Each person still gets an identity of their own.
    let mut identities = std::collections::BTreeSet::new();
    for name in ["Ana Ruiz", "Ana Ruiz"] {
        let body = format!(r#"{{"name":"{name}"}}"#);
        let (status, answer) = http_request("POST", &url, Some(bearer), &json, &body).await;
        assert_eq!(status, 200, "{answer}");
        let answer: Value = serde_json::from_str(&answer).unwrap();
        identities.insert(answer["identity"].as_str().unwrap().to_string());
    }
    assert_eq!(identities.len(), 2);
}
