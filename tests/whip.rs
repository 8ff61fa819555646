//! WHIP/WHEP that any client can use, and its abuse limits (issue 21): sendrecv WHEP offers,
//! CORS, trickle-ICE PATCH, stage rights from the room, session limits, TURN credential
//! lifetimes and recipients, and SDP that names no engine. Real server, real sockets, real
//! aiortc peers (pinned to 127.0.0.1).

mod common;

use common::peers::{args, peer, result, whip_publisher};
use common::{header, try_http, TestServer};
use convene_signaling::{Command, Role, RoomEvent, ServerMessage};
use serde_json::Value;

const SDP: (&str, &str) = ("Content-Type", "application/sdp");
const FRAG: (&str, &str) = ("Content-Type", "application/trickle-ice-sdpfrag");

/// A real client's offer (aiortc), with its transceivers in `direction`.
async fn offer(direction: &str) -> String {
    let printed = result(peer(
        "subscriber.py",
        &args(&[
            "--whep",
            "print-offer",
            "--direction",
            direction,
            "--duration",
            "1",
        ]),
    ))
    .await;
    printed["offer"].as_str().expect("offer sdp").to_string()
}

/// Any request; panics if the server does not answer.
async fn call(
    method: &str,
    url: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    try_http(method, url, token, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// The direction attributes of an SDP, in order.
fn directions(sdp: &str) -> Vec<&str> {
    sdp.lines()
        .map(str::trim)
        .filter(|l| {
            matches!(
                *l,
                "a=sendrecv" | "a=sendonly" | "a=recvonly" | "a=inactive"
            )
        })
        .collect()
}

/// Finding 1: the npm `whip-whep` player offers sendrecv. The answer is sendonly on every
/// line, and the viewer plays the stage.
#[tokio::test]
async fn whep_viewer_offering_sendrecv_gets_sendonly_answer_and_plays() {
    let t = TestServer::start().await;
    let mut host = t.join("sr", Role::Host, "host").await;
    let viewer = t.token("sr", Role::Participant, "viewer");
    let (status, _, answer) = call(
        "POST",
        &format!("{}/whep/sr", t.http()),
        Some(&viewer),
        &[SDP],
        &offer("sendrecv").await,
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(
        directions(&answer),
        ["a=sendonly", "a=sendonly"],
        "{answer}"
    );
    let publisher = whip_publisher(&t.http(), "sr", &t.token("sr", Role::Presenter, "obs"), 12);
    host.expect_event(|e| matches!(e, RoomEvent::TrackPublished { track } if track.publisher == "obs" && track.kind == convene_signaling::TrackKind::Video)).await;
    let subscriber = peer(
        "subscriber.py",
        &args(&[
            "--whep",
            &format!("{}/whep/sr", t.http()),
            "--token",
            &viewer,
            "--direction",
            "sendrecv",
            "--duration",
            "6",
        ]),
    );
    let sub = result(subscriber).await;
    assert_eq!(sub["error"], Value::Null, "{sub}");
    assert!(sub["video_frames"].as_u64().unwrap() >= 20, "{sub}");
    assert!(sub["audio_frames"].as_u64().unwrap() >= 20, "{sub}");
    // Nothing of the viewer's became a track of the room.
    let events = host
        .events_within(std::time::Duration::from_millis(200))
        .await;
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, RoomEvent::TrackPublished { track } if track.publisher != "obs")),
        "{events:?}"
    );
    let _ = result(publisher).await;
}

/// Finding 7: answers name no engine (str0m wrote `o=str0m-0.25 ...`), over WHEP, WHIP and
/// the WebSocket `rtc_answer`.
#[tokio::test]
async fn sdp_answers_name_no_engine() {
    let t = TestServer::start().await;
    let mut host = t.join("o", Role::Host, "host").await;
    let recvonly = offer("recvonly").await;
    let (status, _, whep) = call(
        "POST",
        &format!("{}/whep/o", t.http()),
        Some(&t.token("o", Role::Participant, "v")),
        &[SDP],
        &recvonly,
    )
    .await;
    assert_eq!(status, 201, "{whep}");
    let (status, _, whip) = call(
        "POST",
        &format!("{}/whip/o", t.http()),
        Some(&t.token("o", Role::Host, "host")),
        &[SDP],
        &offer("sendonly").await,
    )
    .await;
    assert_eq!(status, 201, "{whip}");
    host.send(Command::RtcOffer { sdp: recvonly }).await;
    let ws = match host
        .expect(|m| matches!(m, ServerMessage::RtcAnswer { .. }))
        .await
    {
        ServerMessage::RtcAnswer { sdp } => sdp,
        _ => unreachable!(),
    };
    for sdp in [&whep, &whip, &ws] {
        assert!(sdp.starts_with("v=0\r\no=- "), "{sdp}");
        assert!(!sdp.to_ascii_lowercase().contains("str0m"), "{sdp}");
    }
}

/// Finding 2: a player on another origin can use WHIP/WHEP. Preflights need no token and say
/// what is allowed; answers carry the origin and expose Location, Link and ETag; the
/// session's resource (PATCH, DELETE) too.
#[tokio::test]
async fn cors_preflights_without_token_and_answers_expose_headers() {
    let t = TestServer::start().await;
    let _host = t.join("c", Role::Host, "host").await;
    let origin = ("Origin", "http://player.test:9000");
    let whep = format!("{}/whep/c", t.http());
    let (status, head, body) = call(
        "OPTIONS",
        &whep,
        None,
        &[
            origin,
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization,content-type",
            ),
        ],
        "",
    )
    .await;
    assert_eq!(status, 204, "{head}{body}");
    assert_eq!(
        header(&head, "access-control-allow-origin"),
        Some("http://player.test:9000")
    );
    let methods = header(&head, "access-control-allow-methods").unwrap();
    assert!(methods.contains("POST"), "{methods}");
    let allowed = header(&head, "access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase();
    for h in ["authorization", "content-type", "if-match"] {
        assert!(allowed.contains(h), "{allowed}");
    }
    assert!(header(&head, "access-control-max-age").is_some(), "{head}");
    let (status, head, answer) = call(
        "POST",
        &whep,
        Some(&t.token("c", Role::Participant, "v")),
        &[SDP, origin],
        &offer("recvonly").await,
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(
        header(&head, "access-control-allow-origin"),
        Some("http://player.test:9000")
    );
    let exposed = header(&head, "access-control-expose-headers").unwrap();
    for h in ["Location", "Link", "ETag"] {
        assert!(exposed.contains(h), "{exposed}");
    }
    let location = header(&head, "location").unwrap().to_string();
    let resource = format!("{}{location}", t.http());
    let (status, head, _) = call(
        "OPTIONS",
        &resource,
        None,
        &[origin, ("Access-Control-Request-Method", "DELETE")],
        "",
    )
    .await;
    assert_eq!(status, 204, "{head}");
    let methods = header(&head, "access-control-allow-methods").unwrap();
    assert!(
        methods.contains("DELETE") && methods.contains("PATCH"),
        "{methods}"
    );
    let (status, head, _) = call(
        "DELETE",
        &resource,
        Some(&t.token("c", Role::Participant, "v")),
        &[origin],
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        header(&head, "access-control-allow-origin").is_some(),
        "{head}"
    );

    // Only the configured origins, when they are configured.
    let strict = TestServer::start_with(|c| {
        c.limits.whip_whep.cors_origins = vec!["https://ok.test".into()];
    })
    .await;
    let url = format!("{}/whep/c", strict.http());
    let preflight = |o: &'static str| [("Origin", o), ("Access-Control-Request-Method", "POST")];
    let (status, head, _) = call("OPTIONS", &url, None, &preflight("https://ok.test"), "").await;
    assert_eq!(status, 204);
    assert_eq!(
        header(&head, "access-control-allow-origin"),
        Some("https://ok.test")
    );
    let (status, head, body) =
        call("OPTIONS", &url, None, &preflight("https://evil.test"), "").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("cors_origins"), "{body}");
    assert_eq!(header(&head, "access-control-allow-origin"), None);
}

/// Finding 3: PATCH (RFC 9725 section 4.3): trickled candidates 204, an ICE restart 422
/// (not supported, said so), a stale ETag 412, the wrong type 415; OPTIONS says what the
/// endpoint and the resource allow.
#[tokio::test]
async fn patch_takes_trickle_refuses_restart_and_stale_etag() {
    let t = TestServer::start().await;
    let _host = t.join("p", Role::Host, "host").await;
    let viewer = t.token("p", Role::Participant, "v");
    let (status, head, _) = call(
        "OPTIONS",
        &format!("{}/whep/p", t.http()),
        Some(&viewer),
        &[],
        "",
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(header(&head, "allow"), Some("POST, OPTIONS"));
    let sdp = offer("recvonly").await;
    let ufrag = sdp
        .lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .unwrap()
        .trim()
        .to_string();
    let (status, head, body) = call(
        "POST",
        &format!("{}/whep/p", t.http()),
        Some(&viewer),
        &[SDP],
        &sdp,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let etag = header(&head, "etag").expect("ETag").to_string();
    assert_eq!(
        header(&head, "accept-patch"),
        Some("application/trickle-ice-sdpfrag")
    );
    let resource = format!("{}{}", t.http(), header(&head, "location").unwrap());
    let (status, head, _) = call("OPTIONS", &resource, Some(&viewer), &[], "").await;
    assert_eq!(status, 204);
    assert!(header(&head, "allow").unwrap().contains("PATCH"), "{head}");

    let trickle = format!(
        "a=ice-ufrag:{ufrag}\r\na=ice-pwd:0123456789abcdef0123456789\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\na=end-of-candidates\r\n"
    );
    fn with(tag: &str) -> [(&str, &str); 2] {
        [FRAG, ("If-Match", tag)]
    }
    let (status, _, body) = call("PATCH", &resource, Some(&viewer), &with(&etag), &trickle).await;
    assert_eq!(status, 204, "{body}");
    let (status, _, body) = call(
        "PATCH",
        &resource,
        Some(&viewer),
        &with("\"stale\""),
        &trickle,
    )
    .await;
    assert_eq!(status, 412, "{body}");
    assert!(body.contains("precondition_failed"), "{body}");
    let restart = "a=ice-ufrag:newU\r\na=ice-pwd:new0123456789abcdef012345\r\n";
    let (status, _, body) = call("PATCH", &resource, Some(&viewer), &with("*"), restart).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("ICE restarts are not supported"), "{body}");
    let (status, _, _) = call("PATCH", &resource, Some(&viewer), &[SDP], &trickle).await;
    assert_eq!(status, 415);
    let (status, _, _) = call("PATCH", &resource, None, &with(&etag), &trickle).await;
    assert_eq!(status, 401);
    let (status, _, _) = call(
        "PATCH",
        &format!("{}/whep/p/nope", t.http()),
        Some(&viewer),
        &with(&etag),
        &trickle,
    )
    .await;
    assert_eq!(status, 404);
}

/// Finding 10: a presenter taken off stage over WebSocket is refused WHIP with 403 and a
/// clear reason; invited back, WHIP works again.
#[tokio::test]
async fn presenter_taken_off_stage_cannot_whip_back_on_stage() {
    let t = TestServer::start().await;
    let mut host = t.join("st", Role::Host, "host").await;
    let _pres = t.join("st", Role::Presenter, "pres").await;
    let token = t.token("st", Role::Presenter, "pres");
    let whip = format!("{}/whip/st", t.http());
    let sdp = offer("sendonly").await;
    host.ok(Command::RemoveFromStage {
        identity: "pres".into(),
    })
    .await;
    let (status, _, body) = call("POST", &whip, Some(&token), &[SDP], &sdp).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("not on stage"), "{body}");
    // Still off stage: the refused POST did not put them back.
    let members = host.drain(std::time::Duration::from_millis(100)).await;
    assert!(
        !members.iter().any(|m| matches!(m, ServerMessage::Event { event: RoomEvent::MemberUpdated { member }, .. } if member.identity == "pres" && member.on_stage)),
        "{members:?}"
    );
    host.ok(Command::InviteToStage {
        identity: "pres".into(),
    })
    .await;
    let (status, _, body) = call("POST", &whip, Some(&token), &[SDP], &sdp).await;
    assert_eq!(status, 201, "{body}");
}

/// Finding 5: WHEP sessions per identity and per room, WHIP sessions per identity; 429/503
/// with a JSON body and Retry-After; DELETE frees the slot.
#[tokio::test]
async fn sessions_are_limited_per_identity_and_room_and_delete_frees_a_slot() {
    let t = TestServer::start_with(|c| {
        let l = &mut c.limits.whip_whep;
        l.whep_sessions_per_identity = 2;
        l.whep_sessions_per_room = 3;
        l.whip_sessions_per_identity = 1;
    })
    .await;
    let _host = t.join("l", Role::Host, "host").await;
    let whep = format!("{}/whep/l", t.http());
    let sdp = offer("recvonly").await;
    let ana = t.token("l", Role::Participant, "ana");
    let mut locations = Vec::new();
    for _ in 0..2 {
        let (status, head, body) = call("POST", &whep, Some(&ana), &[SDP], &sdp).await;
        assert_eq!(status, 201, "{body}");
        locations.push(header(&head, "location").unwrap().to_string());
    }
    let (status, head, body) = call("POST", &whep, Some(&ana), &[SDP], &sdp).await;
    assert_eq!(status, 429, "{body}");
    assert!(header(&head, "retry-after").is_some(), "{head}");
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"], "too_many_sessions", "{body}");
    // Per room: a third viewer fits, a fourth does not.
    let ben = t.token("l", Role::Participant, "ben");
    let (status, _, body) = call("POST", &whep, Some(&ben), &[SDP], &sdp).await;
    assert_eq!(status, 201, "{body}");
    let cy = t.token("l", Role::Participant, "cy");
    let (status, head, body) = call("POST", &whep, Some(&cy), &[SDP], &sdp).await;
    assert_eq!(status, 503, "{body}");
    assert!(header(&head, "retry-after").is_some(), "{head}");
    // Deleting one of ana's frees a slot for both limits.
    let (status, _, _) = call(
        "DELETE",
        &format!("{}{}", t.http(), locations[0]),
        Some(&ana),
        &[],
        "",
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, body) = call("POST", &whep, Some(&ana), &[SDP], &sdp).await;
    assert_eq!(status, 201, "{body}");

    // WHIP: one session per identity.
    let whip = format!("{}/whip/l", t.http());
    let host = t.token("l", Role::Host, "host");
    let publish = offer("sendonly").await;
    let (status, head, body) = call("POST", &whip, Some(&host), &[SDP], &publish).await;
    assert_eq!(status, 201, "{body}");
    let first = header(&head, "location").unwrap().to_string();
    let (status, _, body) = call("POST", &whip, Some(&host), &[SDP], &publish).await;
    assert_eq!(status, 429, "{body}");
    let (status, _, _) = call(
        "DELETE",
        &format!("{}{first}", t.http()),
        Some(&host),
        &[],
        "",
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, body) = call("POST", &whip, Some(&host), &[SDP], &publish).await;
    assert_eq!(status, 201, "{body}");
}

/// Finding 9: relay credentials expire with the token at the latest (in `welcome` and in
/// `Link`), and none go to a banned person or for a room that is not running.
#[tokio::test]
async fn turn_credentials_end_with_the_token_and_skip_banned_and_idle_rooms() {
    let t = TestServer::start_with(|c| {
        c.rtc.turn.urls = vec!["turn:relay.example:3478".into()];
        c.rtc.turn.secret = "s".into();
        c.rtc.turn.ttl_s = 43_200;
    })
    .await;
    let keys = convene::auth::TokenKeys::new(common::SECRET.as_bytes());
    let short = |identity: &str| {
        keys.mint_for(
            "tc",
            Role::Participant,
            identity,
            identity,
            Default::default(),
            std::time::Duration::from_secs(60),
        )
    };
    let expiry_of = |username: &str| -> u64 {
        let (expiry, _) = username.split_once(':').unwrap();
        expiry.parse().unwrap()
    };
    let now = convene::auth::unix_now();
    let whep_options = || async {
        let url = format!("{}/whep/tc", t.http());
        call("OPTIONS", &url, Some(&short("ana")), &[], "").await
    };
    // Not running: no credentials for it.
    let (status, head, _) = whep_options().await;
    assert_eq!(status, 204);
    assert_eq!(header(&head, "link"), None, "{head}");
    let mut host = t.join("tc", Role::Host, "host").await;
    let url = format!(
        "{}?token={}",
        t.ws_url("").split('?').next().unwrap(),
        short("ana")
    );
    let mut ana = common::Client::connect(&url).await;
    let welcome = ana.recv().await;
    let ServerMessage::Welcome { ice_servers, .. } = &welcome else {
        panic!("{welcome:?}");
    };
    let until = expiry_of(ice_servers[0].username.as_deref().unwrap());
    assert!(
        (now + 55..=now + 65).contains(&until),
        "60 s token: {until} vs {now}"
    );
    let (status, head, _) = whep_options().await;
    assert_eq!(status, 204);
    let link = header(&head, "link").expect("Link for a member of a running room");
    let start = link.find("username=\"").unwrap() + 10;
    let until = expiry_of(link[start..].split('"').next().unwrap());
    assert!((now + 55..=now + 65).contains(&until), "{link}");
    // Banned: no more credentials.
    host.ok(Command::RemoveParticipant {
        identity: "ana".into(),
        reason: None,
    })
    .await;
    let (status, head, _) = whep_options().await;
    assert_eq!(status, 204);
    assert_eq!(header(&head, "link"), None, "{head}");
}
