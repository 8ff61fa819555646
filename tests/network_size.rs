//! A peer exchange at the size of a real network: participants in district teams, breakouts by
//! the `team` attribute, opened and closed in one command, over real sockets.
//!
//! The same webcast also runs on a cluster of three nodes sharing one Redis, the participants
//! spread over them: the breakout moves and the teams' chat cross nodes.
//!
//! `CONVENE_NETWORK_SIZE` sets the number of participants (default 1200, 60 teams of 20;
//! never below 600). Each participant is a real WebSocket client that reads everything.
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestServer;
use convene_signaling::{Command, Role, RoomEvent, RoomKind};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::{mpsc, Mutex};
use tokio_tungstenite::tungstenite::Message;

const TEAMS: usize = 60;
/// Every participant must hear of a bulk move within this long of the command.
const MOVE_DEADLINE: Duration = Duration::from_secs(5);

fn network_size() -> usize {
    std::env::var("CONVENE_NETWORK_SIZE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1200)
        .max(600)
}

/// Only what the checks need from each frame, so a thousand readers stay cheap.
#[derive(Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    event: Option<EventLite>,
}

#[derive(Deserialize)]
struct EventLite {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    breakout: Option<u32>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    message: Option<ChatLite>,
}

#[derive(Deserialize)]
struct ChatLite {
    text: String,
}

/// What one participant saw.
#[derive(Default)]
struct Seen {
    /// (when, breakout, breakout name) of each `moved`.
    moves: Vec<(Instant, Option<u32>, String)>,
    chat: Vec<String>,
    closed: Option<String>,
}

struct Participant {
    team: usize,
    seen: Arc<Mutex<Seen>>,
    say: mpsc::UnboundedSender<String>,
}

async fn connect(nodes: &[TestServer], room: &str, i: usize) -> Participant {
    let t = &nodes[i % nodes.len()];
    let team = i % TEAMS;
    let token = common::token(
        room,
        Role::Participant,
        &format!("p{i:04}"),
        &[("team", &format!("Team {team:02}"))],
    );
    // As the browser client does: a join refused as `unavailable` or with 503 (the cluster's
    // store slow to answer on a loaded machine) is tried again after `retry_after_ms`.
    let give_up = Instant::now() + common::wait() * 3;
    let mut ws = loop {
        let mut ws = match tokio_tungstenite::connect_async(t.ws_url(&token)).await {
            Ok((ws, _)) => ws,
            Err(tokio_tungstenite::tungstenite::Error::Http(refused))
                if refused.status() == 503 && Instant::now() < give_up =>
            {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(error) => panic!("participant connects: {error}"),
        };
        let first = match ws.next().await {
            Some(Ok(Message::Text(text))) => text.as_str().to_string(),
            other => panic!("no welcome: {other:?}"),
        };
        if first.starts_with(r#"{"type":"welcome""#) {
            break ws;
        }
        let refusal: serde_json::Value = serde_json::from_str(&first).expect("server JSON");
        let retry_ms = refusal["retry_after_ms"].as_u64();
        assert!(
            refusal["code"] == "unavailable" && retry_ms.is_some() && Instant::now() < give_up,
            "first frame is welcome: {}",
            first.chars().take(300).collect::<String>()
        );
        tokio::time::sleep(Duration::from_millis(retry_ms.unwrap_or(0))).await;
    };
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (say, mut said) = mpsc::unbounded_channel::<String>();
    let log = seen.clone();
    tokio::spawn(async move {
        let mut n = 0u64;
        loop {
            tokio::select! {
                frame = ws.next() => {
                    let text = match frame {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Close(close))) => {
                            log.lock().await.closed = Some(format!("{close:?}"));
                            return;
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => {
                            log.lock().await.closed = Some(e.to_string());
                            return;
                        }
                        None => {
                            log.lock().await.closed = Some("ended".into());
                            return;
                        }
                    };
                    let frame: Frame = serde_json::from_str(text.as_str()).expect("server JSON");
                    let Some(event) = frame.event.filter(|_| frame.kind == "event") else {
                        continue;
                    };
                    match event.kind.as_str() {
                        "moved" => log.lock().await.moves.push((
                            Instant::now(),
                            event.breakout,
                            event.name.unwrap_or_default(),
                        )),
                        "chat_message" => {
                            if let Some(message) = event.message {
                                log.lock().await.chat.push(message.text);
                            }
                        }
                        _ => {}
                    }
                }
                text = said.recv() => {
                    let Some(text) = text else { return };
                    n += 1;
                    let command = serde_json::json!({"type": "send_chat", "text": text, "request_id": format!("c{n}")});
                    if ws.send(Message::Text(command.to_string().into())).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Participant { team, seen, say }
}

async fn crowd(t: &[TestServer], room: &str, n: usize) -> Vec<Participant> {
    let mut people = Vec::with_capacity(n);
    // Joined in waves, as a convening fills in its first minute.
    for wave in (0..n).collect::<Vec<_>>().chunks(100) {
        let joins = wave.iter().map(|i| connect(t, room, *i));
        people.extend(futures_util::future::join_all(joins).await);
    }
    people
}

/// Waits until every participant's latest move went to `want(team)`, then checks the deadline.
async fn all_moved(
    people: &[Participant],
    since: Instant,
    want: impl Fn(usize) -> Option<String>,
) -> Duration {
    let give_up = since + (MOVE_DEADLINE * 4).mul_f64(common::load_factor());
    loop {
        let mut done = 0;
        let mut slowest = Duration::ZERO;
        for p in people {
            let seen = p.seen.lock().await;
            assert!(seen.closed.is_none(), "a session closed: {:?}", seen.closed);
            if let Some((at, breakout, name)) = seen.moves.last().filter(|(at, ..)| *at >= since) {
                let expected = want(p.team);
                assert_eq!(
                    expected.as_deref().unwrap_or("Main room"),
                    name,
                    "moved to its team's breakout"
                );
                assert_eq!(breakout.is_some(), expected.is_some());
                slowest = slowest.max(at.duration_since(since));
                done += 1;
            }
        }
        if done == people.len() {
            return slowest;
        }
        assert!(
            Instant::now() < give_up,
            "only {done} of {} participants were moved",
            people.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn peer_exchange(kind: RoomKind, node_count: usize) {
    let n = network_size();
    // One machine runs the server and every client: allow the host's burst of commands.
    let tweak = |c: &mut convene::config::Config| c.limits.rate.other.burst = 1000;
    let redis = if node_count > 1 {
        Some(common::TestRedis::start().await)
    } else {
        None
    };
    let nodes = match &redis {
        Some(redis) => common::cluster_of(redis, node_count, tweak).await,
        None => vec![TestServer::start_with(tweak).await],
    };
    let t = &nodes[0];
    let room = format!("network-{kind:?}").to_lowercase();
    let mut host = t.join(&room, Role::Host, "host").await;
    host.ok(Command::UpdateSettings {
        kind: Some(kind),
        chat_enabled: None,
        qa_mode: None,
    })
    .await;
    let people = crowd(&nodes, &room, n).await;
    host.clear();
    host.ok(Command::SetBreakoutPlan {
        plan: common::by_team(None),
    })
    .await;

    // Open: acked (ok() waits for the ack), everyone moved to their team's room, no one cut off.
    let opened = Instant::now();
    host.ok(Command::OpenBreakouts).await;
    let slowest = all_moved(&people, opened, |team| Some(format!("Team {team:02}"))).await;
    eprintln!("{kind:?}, {n} participants: last `moved` {slowest:?} after open_breakouts");
    let allowed = MOVE_DEADLINE.mul_f64(common::load_factor());
    assert!(
        slowest <= allowed,
        "the last `moved` came {slowest:?} after open_breakouts (allowed {allowed:?} at this load)"
    );
    // The host (staff) learns every move in one event.
    let moved = host
        .expect_event(|e| matches!(e, RoomEvent::MembersMoved { .. }))
        .await;
    let RoomEvent::MembersMoved { moves } = moved else {
        unreachable!()
    };
    assert_eq!(moves.len(), n, "one entry per participant");

    // Chat stays inside each breakout: one voice per team, heard only by that team.
    let mut speakers: BTreeMap<usize, &Participant> = BTreeMap::new();
    for p in &people {
        speakers.entry(p.team).or_insert(p);
    }
    for (team, p) in &speakers {
        p.say.send(format!("hello from team {team:02}")).unwrap();
    }
    let per_team = n / TEAMS;
    let give_up = Instant::now() + Duration::from_secs(20).mul_f64(common::load_factor());
    loop {
        let mut heard = 0;
        for p in &people {
            let seen = p.seen.lock().await;
            assert!(seen.closed.is_none(), "a session closed: {:?}", seen.closed);
            for text in &seen.chat {
                assert_eq!(
                    text,
                    &format!("hello from team {:02}", p.team),
                    "chat crossed breakouts"
                );
            }
            heard += seen.chat.len();
        }
        if heard == TEAMS * per_team {
            break;
        }
        assert!(
            Instant::now() < give_up,
            "{heard} of {} chat deliveries",
            TEAMS * per_team
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Close all: everyone is back in the main room.
    let closing = Instant::now();
    host.ok(Command::CloseBreakouts {
        countdown_s: Some(0),
    })
    .await;
    let slowest = all_moved(&people, closing, |_| None).await;
    eprintln!("{kind:?}, {n} participants: last return {slowest:?} after close_breakouts");
    let allowed = MOVE_DEADLINE.mul_f64(common::load_factor());
    assert!(
        slowest <= allowed,
        "the last return came {slowest:?} after close_breakouts (allowed {allowed:?} at this load)"
    );
    let observer = nodes[node_count - 1]
        .join(&room, Role::Moderator, "observer")
        .await;
    let snapshot = observer.snapshot();
    let away = snapshot
        .members
        .iter()
        .filter(|m| m.breakout.is_some())
        .count();
    assert_eq!(away, 0, "everyone is back in the main room");
    assert_eq!(snapshot.participant_count as usize, n);
    // Nobody was cut off along the way.
    for p in &people {
        assert!(p.seen.lock().await.closed.is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webcast_peer_exchange_of_a_network_opens_and_closes_breakouts_by_team() {
    peer_exchange(RoomKind::Webcast, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_exchange_spread_over_three_cluster_nodes_opens_and_closes_breakouts_by_team() {
    peer_exchange(RoomKind::Webcast, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meeting_peer_exchange_of_a_network_opens_and_closes_breakouts_by_team() {
    peer_exchange(RoomKind::Meeting, 1).await;
}

/// A launch webcast whose audience spans two nodes: 5,000 viewers (`CONVENE_WEBCAST_SIZE`)
/// split over them, the host on one and a moderator on the other. Everyone hears the host's
/// chat, staff see the whole audience counted, and nobody is cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_webcast_audience_spans_two_cluster_nodes() {
    let n: usize = std::env::var("CONVENE_WEBCAST_SIZE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5000);
    let redis = common::TestRedis::start().await;
    let nodes = common::cluster_of(&redis, 2, |c| {
        c.limits.rate.other.burst = 1000;
        // The test process holds every viewer's socket, on one machine with both nodes.
        c.server.max_http_connections_per_ip = 100_000;
    })
    .await;
    let room = "launch";
    let mut host = nodes[0].join(room, Role::Host, "host").await;
    let mut moderator = nodes[1].join(room, Role::Moderator, "moderator").await;
    let started = Instant::now();
    let audience = crowd(&nodes, room, n).await;
    eprintln!(
        "{n} viewers over two nodes joined in {:?}",
        started.elapsed()
    );

    // Staff on both nodes see the whole audience counted (coalesced counts, not joins).
    for staff in [&mut host, &mut moderator] {
        let give_up = Instant::now() + Duration::from_secs(30).mul_f64(common::load_factor());
        loop {
            let event = staff
                .expect_event(|e| matches!(e, RoomEvent::ParticipantCount { .. }))
                .await;
            if let RoomEvent::ParticipantCount { count } = event {
                if count as usize == n {
                    break;
                }
            }
            assert!(Instant::now() < give_up, "the count never reached {n}");
        }
    }

    let said = Instant::now();
    host.ok(Command::SendChat {
        text: "Welcome to the launch".into(),
    })
    .await;
    let give_up = said + Duration::from_secs(30).mul_f64(common::load_factor());
    loop {
        let mut heard = 0;
        for viewer in &audience {
            let seen = viewer.seen.lock().await;
            assert!(
                seen.closed.is_none(),
                "a viewer was cut off: {:?}",
                seen.closed
            );
            heard += seen
                .chat
                .iter()
                .filter(|t| *t == "Welcome to the launch")
                .count();
        }
        if heard == n {
            break;
        }
        assert!(heard <= n, "a viewer heard the host twice");
        assert!(
            Instant::now() < give_up,
            "{heard} of {n} viewers heard the host"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "{n} viewers over two nodes heard the host within {:?}",
        said.elapsed()
    );
    moderator
        .expect_event(|e| matches!(e, RoomEvent::ChatMessage { message } if message.text == "Welcome to the launch"))
        .await;
}
