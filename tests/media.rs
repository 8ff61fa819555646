//! Media over real WebRTC peers (aiortc, pinned to 127.0.0.1): WHIP in, WHEP out, WebSocket
//! signaling, track removal, PLI throttling, and the refusals.

mod common;

use std::process::Stdio;

use common::peers::{args, peer, peer_at, result, whep_viewer, whip_publisher};
use common::{header, http_request, try_http, TestServer};
use convene_signaling::{Command, ErrorCode, Role, RoomEvent, RoomKind, ServerMessage};
use serde_json::Value;

/// Waits for a track of `publisher` to be published; returns its id.
async fn published_by(client: &mut common::Client, publisher: &str) -> String {
    match client
        .expect_event(
            |e| matches!(e, RoomEvent::TrackPublished { track } if track.publisher == publisher),
        )
        .await
    {
        RoomEvent::TrackPublished { track } => track.id,
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn whip_publisher_reaches_whep_viewer_and_plis_are_throttled() {
    let t = TestServer::start().await;
    let mut host = t.join("launch", Role::Host, "host").await;
    let presenter = t.token("launch", Role::Presenter, "obs");
    let viewer = t.token("launch", Role::Participant, "viewer");
    let publisher = whip_publisher(&t.http(), "launch", &presenter, 14);
    // The WHIP publisher appears on stage under its token's name, with its tracks.
    host.expect_event(|e| matches!(e, RoomEvent::MemberJoined { member } if member.identity == "obs" && member.on_stage && member.name == "OBS")).await;
    host.expect_event(|e| matches!(e, RoomEvent::TrackPublished { track } if track.publisher == "obs" && track.kind == convene_signaling::TrackKind::Video)).await;
    let subscriber = whep_viewer(
        &t.http(),
        "launch",
        &viewer,
        8,
        &["--pli-burst", "20", "--pli-at", "2"],
    );
    let sub = result(subscriber).await;
    assert_eq!(sub["error"], Value::Null, "{sub}");
    assert!(
        sub["video_frames"].as_u64().unwrap() >= 30,
        "decoded video frames: {sub}"
    );
    assert!(sub["audio_frames"].as_u64().unwrap() > 0, "{sub}");
    assert_eq!(sub["delete_status"], 200, "{sub}");
    assert!(sub["plis_sent"].as_u64().unwrap() >= 15, "{sub}");
    let publ = result(publisher).await;
    assert_eq!(publ["error"], Value::Null, "{publ}");
    // One keyframe request for the new viewer plus at most one per second of the burst.
    let plis = publ["plis"].as_u64().unwrap();
    assert!(
        (1..=4).contains(&plis),
        "publisher saw {plis} PLIs for a burst of 20: {publ}"
    );
    assert_eq!(publ["delete_status"], 200, "{publ}");
    // DELETE ended the WHIP session: its tracks are gone and the publisher left.
    host.expect_event(|e| matches!(e, RoomEvent::TrackUnpublished { .. }))
        .await;
    host.expect_event(|e| matches!(e, RoomEvent::MemberLeft { identity, .. } if identity == "obs"))
        .await;
}

/// Every configured address is a candidate: with `127.0.0.1, ::1` advertised on a dual-stack
/// socket, a publisher that has only IPv4 and a viewer that has only IPv6 meet. (The socket
/// binds `::` for both families; all traffic still goes to loopback addresses.)
#[tokio::test]
async fn ipv4_publisher_and_ipv6_viewer_each_find_an_advertised_address() {
    let t = TestServer::start_with(|c| {
        c.rtc.bind_ip = "::".parse().unwrap();
        c.rtc.advertise_ip = "127.0.0.1, ::1".into();
    })
    .await;
    let mut host = t.join("dual", Role::Host, "host").await;
    let presenter = t.token("dual", Role::Presenter, "obs");
    let viewer = t.token("dual", Role::Participant, "viewer");
    let publisher = peer_at(
        "127.0.0.1",
        "publisher.py",
        &args(&[
            "--whip",
            &format!("{}/whip/dual", t.http()),
            "--token",
            &presenter,
            "--duration",
            "10",
        ]),
    );
    host.expect_event(|e| matches!(e, RoomEvent::TrackPublished { track } if track.publisher == "obs" && track.kind == convene_signaling::TrackKind::Video)).await;
    let subscriber = peer_at(
        "::1",
        "subscriber.py",
        &args(&[
            "--whep",
            &format!("{}/whep/dual", t.http()),
            "--token",
            &viewer,
            "--duration",
            "5",
        ]),
    );
    let sub = result(subscriber).await;
    assert_eq!(sub["error"], Value::Null, "{sub}");
    assert!(
        sub["video_frames"].as_u64().unwrap() >= 20,
        "the IPv6 viewer decodes the IPv4 publisher: {sub}"
    );
    let publ = result(publisher).await;
    assert_eq!(publ["error"], Value::Null, "{publ}");
}

#[tokio::test]
async fn a_whip_publisher_taken_off_stage_stops_publishing_and_a_removed_one_ends() {
    let t = TestServer::start().await;
    let mut host = t.join("launch", Role::Host, "host").await;
    let presenter = t.token("launch", Role::Presenter, "obs");
    let publisher = whip_publisher(&t.http(), "launch", &presenter, 12);
    let mut ids = Vec::new();
    for _ in 0..2 {
        ids.push(published_by(&mut host, "obs").await);
    }
    host.ok(Command::RemoveFromStage {
        identity: "obs".into(),
    })
    .await;
    for _ in 0..2 {
        host.expect_event(
            |e| matches!(e, RoomEvent::TrackUnpublished { track_id } if ids.contains(track_id)),
        )
        .await;
    }
    // Back on stage, its tracks are offered again; removed from the room, the session ends.
    host.ok(Command::InviteToStage {
        identity: "obs".into(),
    })
    .await;
    host.expect_event(
        |e| matches!(e, RoomEvent::TrackPublished { track } if track.publisher == "obs"),
    )
    .await;
    host.ok(Command::RemoveParticipant {
        identity: "obs".into(),
        reason: Some("wrong stream".into()),
    })
    .await;
    host.expect_event(|e| matches!(e, RoomEvent::MemberLeft { identity, .. } if identity == "obs"))
        .await;
    let publ = result(publisher).await;
    assert_eq!(
        publ["delete_status"], 404,
        "the server had already ended the session: {publ}"
    );
}

#[tokio::test]
async fn websocket_publisher_and_two_subscribers_then_leave_removes_tracks() {
    let t = TestServer::start().await;
    let mut host = t.join("web", Role::Host, "host").await;
    let presenter = t.ws_url(&t.token("web", Role::Presenter, "pres"));
    let publisher = peer(
        "publisher.py",
        &args(&["--ws", &presenter, "--duration", "9"]),
    );
    host.expect_event(
        |e| matches!(e, RoomEvent::TrackPublished { track } if track.publisher == "pres"),
    )
    .await;
    let subs: Vec<_> = ["ana", "ben"]
        .iter()
        .map(|who| {
            peer(
                "subscriber.py",
                &args(&[
                    "--ws",
                    &t.ws_url(&t.token("web", Role::Participant, who)),
                    "--duration",
                    "11",
                ]),
            )
        })
        .collect();
    let publ = result(publisher).await;
    assert_eq!(publ["error"], Value::Null, "{publ}");
    for sub in subs {
        let sub = result(sub).await;
        assert_eq!(sub["error"], Value::Null, "{sub}");
        assert!(sub["video_frames"].as_u64().unwrap() >= 30, "{sub}");
        assert!(sub["audio_frames"].as_u64().unwrap() > 0, "{sub}");
        // The publisher left before the subscribers: they were told its tracks went.
        let events = sub["events"].as_array().unwrap();
        let gone: Vec<_> = events
            .iter()
            .filter(|e| e["type"] == "track_unpublished")
            .collect();
        assert_eq!(gone.len(), 2, "video and audio unpublished: {sub}");
        // Track ids are opaque: the presenter's are those its welcome or events named.
        let published: Vec<_> = sub["welcome_tracks"]
            .as_array()
            .unwrap()
            .iter()
            .chain(
                events
                    .iter()
                    .filter(|e| e["type"] == "track_published")
                    .map(|e| &e["track"]),
            )
            .filter(|t| t["publisher"] == "pres")
            .map(|t| t["id"].clone())
            .collect();
        assert!(
            gone.iter().all(|e| published.contains(&e["track_id"])),
            "the presenter's tracks went: {sub}"
        );
    }
    host.expect_event(|e| matches!(e, RoomEvent::TrackUnpublished { .. }))
        .await;
}

#[tokio::test]
async fn meeting_members_receive_each_others_media() {
    let t = TestServer::start().await;
    let mut host = t.join("peer-exchange", Role::Host, "host").await;
    host.ok(Command::UpdateSettings {
        kind: Some(RoomKind::Meeting),
        chat_enabled: None,
        qa_mode: None,
    })
    .await;
    // Two participants, each publishing and receiving the other over one connection.
    let peers: Vec<_> = ["ana", "ben"]
        .iter()
        .map(|who| {
            peer(
                "publisher.py",
                &args(&[
                    "--ws",
                    &t.ws_url(&t.token("peer-exchange", Role::Participant, who)),
                    "--duration",
                    "10",
                    "--receive",
                ]),
            )
        })
        .collect();
    for p in peers {
        let r = result(p).await;
        assert_eq!(r["error"], Value::Null, "{r}");
        assert!(
            r["frames_received"].as_u64().unwrap_or(0) >= 30,
            "each receives the other's video: {r}"
        );
    }
}

#[tokio::test]
async fn switching_a_meeting_to_a_webcast_stops_audience_cameras() {
    let t = TestServer::start().await;
    let mut host = t.join("switch", Role::Host, "host").await;
    let meeting = |kind| Command::UpdateSettings {
        kind: Some(kind),
        chat_enabled: None,
        qa_mode: None,
    };
    host.ok(meeting(RoomKind::Meeting)).await;
    let ana = t.ws_url(&t.token("switch", Role::Participant, "ana"));
    let publisher = peer("publisher.py", &args(&["--ws", &ana, "--duration", "12"]));
    let mut ids = Vec::new();
    for _ in 0..2 {
        ids.push(published_by(&mut host, "ana").await);
    }
    host.ok(meeting(RoomKind::Webcast)).await;
    for _ in 0..2 {
        host.expect_event(
            |e| matches!(e, RoomEvent::TrackUnpublished { track_id } if ids.contains(track_id)),
        )
        .await;
    }
    host.ok(meeting(RoomKind::Meeting)).await;
    host.expect_event(
        |e| matches!(e, RoomEvent::TrackPublished { track } if track.publisher == "ana"),
    )
    .await;
    drop(publisher);
}

#[tokio::test]
async fn webcast_audience_may_not_publish_until_invited_on_stage() {
    let t = TestServer::start().await;
    let mut moderator = t.join("web", Role::Moderator, "mo").await;
    let mut ana = t.join("web", Role::Participant, "ana").await;
    let sending = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=sendrecv\r\n";
    let (code, message) = ana
        .refused(Command::RtcOffer {
            sdp: sending.into(),
        })
        .await;
    assert_eq!(code, ErrorCode::Forbidden, "{message}");
    assert!(message.contains("stage"), "{message}");
    moderator
        .ok(Command::InviteToStage {
            identity: "ana".into(),
        })
        .await;
    ana.expect_event(|e| matches!(e, RoomEvent::MemberUpdated { member } if member.identity == "ana" && member.on_stage)).await;
    // On stage the same offer gets past the rule, to the engine (which finds it incomplete).
    let (code, message) = ana
        .refused(Command::RtcOffer {
            sdp: sending.into(),
        })
        .await;
    assert_eq!(code, ErrorCode::InvalidArgument, "{message}");
    assert!(message.contains("SDP"), "{message}");
    // A real publisher with an audience token is refused too.
    let refused = peer(
        "publisher.py",
        &args(&[
            "--ws",
            &t.ws_url(&t.token("web", Role::Participant, "cleo")),
            "--duration",
            "4",
        ]),
    );
    let r = result(refused).await;
    let events = r["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "error" && e["code"] == "forbidden"),
        "{r}"
    );
}

#[tokio::test]
async fn whip_and_whep_refusals_follow_the_rfc() {
    let t = TestServer::start().await;
    let host = t.token("r", Role::Host, "host");
    let participant = t.token("r", Role::Participant, "ana");
    let whip = format!("{}/whip/r", t.http());
    let whep = format!("{}/whep/r", t.http());
    let sdp = [("Content-Type", "application/sdp")];
    let (status, body) = http_request("POST", &whip, Some(&host), &sdp, "this is not SDP").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bad SDP"), "{body}");
    let (status, _) = http_request(
        "POST",
        &whip,
        Some(&host),
        &[("Content-Type", "text/plain")],
        "v=0",
    )
    .await;
    assert_eq!(status, 415);
    let (status, _) = http_request("POST", &whip, None, &sdp, "v=0").await;
    assert_eq!(status, 401);
    let (status, _) = http_request(
        "POST",
        &format!("{}/whip/other", t.http()),
        Some(&host),
        &sdp,
        "v=0",
    )
    .await;
    assert_eq!(status, 401, "a token for another room");
    let (status, body) = http_request("POST", &whip, Some(&participant), &sdp, "v=0").await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = http_request(
        "POST",
        &format!("{}/whep/nowhere", t.http()),
        Some(&t.token("nowhere", Role::Participant, "x")),
        &sdp,
        "v=0",
    )
    .await;
    assert_eq!(status, 404, "{body}");
    // The room runs once someone is in it; garbage SDP to WHEP is a 400 with the reason.
    let _host = t.join("r", Role::Host, "host").await;
    let (status, body) = http_request("POST", &whep, Some(&participant), &sdp, "m=garbage").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bad SDP"), "{body}");
    let (status, body) = http_request(
        "POST",
        &format!("{whep}?participant=nobody"),
        Some(&participant),
        &sdp,
        "v=0",
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = http_request("DELETE", &format!("{whip}/0123"), Some(&host), &[], "").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn whep_answer_carries_location_and_loopback_candidate() {
    let t = TestServer::start().await;
    let _host = t.join("r", Role::Host, "host").await;
    let viewer = t.token("r", Role::Participant, "v");
    // An offer from a real client library, printed by the peer script without connecting.
    let offer = result(peer(
        "subscriber.py",
        &args(&["--whep", "print-offer", "--duration", "1"]),
    ))
    .await;
    let sdp = offer["offer"].as_str().expect("offer sdp");
    let (status, head, body) = try_http(
        "POST",
        &format!("{}/whep/r", t.http()),
        Some(&viewer),
        &[("Content-Type", "application/sdp")],
        sdp,
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{body}");
    let location = header(&head, "location").expect("Location header");
    assert!(location.starts_with("/whep/r/"), "{location}");
    assert_eq!(header(&head, "content-type"), Some("application/sdp"));
    assert!(
        body.contains("a=candidate:") && body.contains("127.0.0.1"),
        "{body}"
    );
    assert!(body.contains("a=ice-lite"), "{body}");
    let (status, _) = http_request(
        "DELETE",
        &format!("{}{location}", t.http()),
        Some(&viewer),
        &[],
        "",
    )
    .await;
    assert_eq!(status, 200);
    let _ = ServerMessage::Pong;
}

/// coturn (`turnserver`, installed by scripts/test) on loopback with the shared secret, for
/// relay tests; killed on drop.
struct Coturn {
    child: tokio::process::Child,
    port: u16,
}

impl Coturn {
    fn start(secret: &str) -> Coturn {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("free port")
            .port();
        // Relay ports below the kernel's ephemeral range, so they cannot meet another socket.
        let base = 20_000 + (port % 400) * 20;
        let child = tokio::process::Command::new("turnserver")
            .args([
                "-n",
                "--no-cli",
                "--no-tls",
                "--no-dtls",
                "--listening-ip=127.0.0.1",
                "--relay-ip=127.0.0.1",
                "--allow-loopback-peers",
                "--use-auth-secret",
                "--realm=convene.test",
                "--simple-log",
                "--log-file=stdout",
            ])
            .arg(format!("--listening-port={port}"))
            .arg(format!("--static-auth-secret={secret}"))
            .arg(format!("--min-port={base}"))
            .arg(format!("--max-port={}", base + 19))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("`turnserver` runs (apt-get install coturn; scripts/test does)");
        Coturn { child, port }
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A WHEP viewer that may only use relay candidates plays the stage through coturn, with the
/// credentials Convene minted for it (`OPTIONS` Link headers, coturn's REST-secret scheme).
#[tokio::test]
async fn whep_viewer_plays_through_the_turn_relay() {
    let secret = "relay-test-secret";
    let coturn = Coturn::start(secret);
    let url = format!("turn:127.0.0.1:{}?transport=udp", coturn.port);
    let t = TestServer::start_with(|c| {
        c.rtc.turn.urls = vec![url.clone()];
        c.rtc.turn.secret = secret.into();
    })
    .await;
    let mut host = t.join("relay", Role::Host, "host").await;
    let presenter = t.token("relay", Role::Presenter, "obs");
    let viewer = t.token("relay", Role::Participant, "viewer");
    let publisher = whip_publisher(&t.http(), "relay", &presenter, 12);
    host.expect_event(|e| matches!(e, RoomEvent::TrackPublished { track } if track.publisher == "obs" && track.kind == convene_signaling::TrackKind::Video)).await;
    let subscriber = whep_viewer(&t.http(), "relay", &viewer, 7, &["--relay"]);
    let sub = result(subscriber).await;
    assert_eq!(sub["error"], Value::Null, "{sub}");
    assert!(
        sub["video_frames"].as_u64().unwrap() >= 20,
        "decoded through the relay: {sub}"
    );
    let _ = result(publisher).await;
}

/// Credentials in `welcome` and in WHIP/WHEP `Link` headers: coturn's scheme, checked here
/// with an HMAC of our own; none without a relay configured.
#[tokio::test]
async fn turn_credentials_in_welcome_and_link_headers() {
    use base64::Engine;
    let secret = "shared-with-coturn";
    let t = TestServer::start_with(|c| {
        c.rtc.turn.urls = vec!["turns:relay.example:443?transport=tcp".into()];
        c.rtc.turn.secret = secret.into();
    })
    .await;
    let check = |username: &str, credential: &str, identity: &str| {
        let (expiry, who) = username.split_once(':').expect("expiry:identity");
        assert_eq!(who, identity);
        let left = expiry.parse::<u64>().unwrap() - convene::auth::unix_now();
        // The 12 h ttl, cut to the test token's 1 h: credentials never outlive the token.
        assert!(
            (3_400..=3_600).contains(&left),
            "the token's lifetime: {left}"
        );
        let key = aws_lc_rs::hmac::Key::new(
            aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            secret.as_bytes(),
        );
        let tag = aws_lc_rs::hmac::sign(&key, username.as_bytes());
        assert_eq!(
            credential,
            base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
        );
    };
    let ana = t.join("turn", Role::Participant, "ana").await;
    match ana.welcome.as_ref().unwrap() {
        ServerMessage::Welcome { ice_servers, .. } => {
            assert_eq!(ice_servers.len(), 1, "{ice_servers:?}");
            assert_eq!(
                ice_servers[0].urls,
                ["turns:relay.example:443?transport=tcp"]
            );
            check(
                ice_servers[0].username.as_deref().unwrap(),
                ice_servers[0].credential.as_deref().unwrap(),
                "ana",
            );
        }
        other => panic!("{other:?}"),
    }
    let viewer = t.token("turn", Role::Participant, "vic");
    let (status, head, _) = try_http(
        "OPTIONS",
        &format!("{}/whep/turn", t.http()),
        Some(&viewer),
        &[],
        "",
    )
    .await
    .unwrap();
    assert_eq!(status, 204);
    let link = header(&head, "link").expect("Link header");
    let field = |name: &str| {
        let start = link.find(&format!("{name}=\"")).expect(name) + name.len() + 2;
        link[start..].split('"').next().unwrap().to_string()
    };
    assert!(
        link.starts_with("<turns:relay.example:443?transport=tcp>; rel=\"ice-server\""),
        "{link}"
    );
    assert!(link.contains("credential-type=\"password\""), "{link}");
    check(&field("username"), &field("credential"), "vic");
    // The credentials are for token holders only.
    let (status, _, _) = try_http("OPTIONS", &format!("{}/whep/turn", t.http()), None, &[], "")
        .await
        .unwrap();
    assert_eq!(status, 401);

    // No relay configured: no ice_servers, no Link.
    let plain = TestServer::start().await;
    let ben = plain.join("turn", Role::Participant, "ben").await;
    assert!(
        matches!(ben.welcome.as_ref().unwrap(), ServerMessage::Welcome { ice_servers, .. } if ice_servers.is_empty())
    );
    let (status, head, _) = try_http(
        "OPTIONS",
        &format!("{}/whep/turn", plain.http()),
        Some(&plain.token("turn", Role::Participant, "ben")),
        &[],
        "",
    )
    .await
    .unwrap();
    assert_eq!(status, 204);
    assert_eq!(header(&head, "link"), None);
}
