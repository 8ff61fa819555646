//! Webhooks over real sockets: a receiver inside the test checks signatures, timestamps and
//! retries, while a second receiver that never answers cannot hold up the room; presence
//! churn is coalesced and capped per identity, and one room's flood to a slow receiver
//! drops none of another room's events.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{http_get, TestServer, WAIT};
use convene_signaling::{Command, Role, RoomEvent};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const SECRET: &str = "webhook-secret";

#[derive(Debug, Clone)]
struct Delivery {
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
    at: Instant,
    status: u16,
}

async fn read_request(stream: &mut TcpStream) -> Option<(BTreeMap<String, String>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let headers: BTreeMap<String, String> = head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let length: usize = headers["content-length"].parse().unwrap();
        while buf.len() < end + 4 + length {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        return Some((headers, buf[end + 4..end + 4 + length].to_vec()));
    }
}

/// A receiver that refuses the first attempt of every `participant.joined` with 503.
async fn receiver() -> (String, Arc<Mutex<Vec<Delivery>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/convene", listener.local_addr().unwrap());
    let log: Arc<Mutex<Vec<Delivery>>> = Arc::default();
    let seen = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let Some((headers, body)) = read_request(&mut stream).await else {
                    return;
                };
                let event: Value = serde_json::from_slice(&body).unwrap();
                let id = headers["convene-event-id"].clone();
                let first = !seen
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|d| d.headers["convene-event-id"] == id);
                let status = if first && event["type"] == "participant.joined" {
                    503
                } else {
                    200
                };
                seen.lock().unwrap().push(Delivery {
                    headers,
                    body,
                    at: Instant::now(),
                    status,
                });
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    (url, log)
}

/// A receiver that accepts and never answers.
async fn black_hole() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    url
}

fn verify(delivery: &Delivery) -> Result<(), String> {
    use aws_lc_rs::hmac;
    let ts: u64 = delivery.headers["convene-timestamp"]
        .parse()
        .map_err(|_| "timestamp")?;
    let now = convene::auth::unix_now();
    if now.abs_diff(ts) > 300 {
        return Err(format!("timestamp {ts} outside the replay window of {now}"));
    }
    let hex = delivery.headers["convene-signature"]
        .strip_prefix("v1=")
        .ok_or("no v1= signature")?;
    let tag: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| "hex"))
        .collect::<Result<_, _>>()?;
    let mut signed = format!("{ts}.").into_bytes();
    signed.extend_from_slice(&delivery.body);
    hmac::verify(
        &hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes()),
        &signed,
        &tag,
    )
    .map_err(|_| "signature does not verify".to_string())
}

#[tokio::test]
async fn room_events_arrive_signed_retried_and_never_block_the_room() {
    let (url, log) = receiver().await;
    let silent = black_hole().await;
    let t = TestServer::start_with(|c| {
        c.limits.empty_room_ttl_s = 1;
        c.webhooks.urls = vec![url.clone(), silent.clone()];
        c.webhooks.secret = SECRET.into();
        c.webhooks.max_attempts = 3;
        c.webhooks.retry_base_ms = 200;
        c.webhooks.timeout_s = 1;
    })
    .await;
    let started = Instant::now();
    let mut host = t.join("w", Role::Host, "host").await;
    let mut ana = t
        .join_with("w", Role::Participant, "ana", &[("team", "Knox")])
        .await;
    let q = ana
        .ok(Command::AskQuestion {
            text: "=cmd?".into(),
            anonymous: false,
        })
        .await
        .unwrap();
    host.ok(Command::AnswerQuestion {
        question_id: q,
        answer: Some("Yes".into()),
    })
    .await;
    host.ok(Command::SetBreakoutPlan {
        plan: convene_signaling::BreakoutPlan {
            rooms: convene_signaling::BreakoutRooms::FromAttribute {
                from_attribute: "team".into(),
            },
            assignment: convene_signaling::Assignment::ByAttribute { key: "team".into() },
            duration_s: None,
            allow_leave: true,
        },
    })
    .await;
    host.ok(Command::OpenBreakouts).await;
    host.ok(Command::CloseBreakouts {
        countdown_s: Some(0),
    })
    .await;
    ana.expect_event(|e| matches!(e, RoomEvent::Moved { breakout: None, .. }))
        .await;
    // The silent receiver holds every attempt for a second: the room did not wait for it.
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "the room waited for webhooks: {:?}",
        started.elapsed()
    );
    ana.socket.close(None).await.unwrap();
    host.socket.close(None).await.unwrap();

    let expected = [
        "room.started",
        "participant.joined",
        "question.asked",
        "question.answered",
        "breakouts.opened",
        "breakouts.closed",
        "participant.left",
        "room.ended",
        "attendance.ready",
    ];
    let deadline = Instant::now() + WAIT;
    let delivered = loop {
        let deliveries = log.lock().unwrap().clone();
        let ok: Vec<Value> = deliveries
            .iter()
            .filter(|d| d.status == 200)
            .map(|d| serde_json::from_slice(&d.body).unwrap())
            .collect();
        let left = ok
            .iter()
            .filter(|e| e["type"] == "participant.left")
            .count();
        if expected.iter().all(|k| ok.iter().any(|e| e["type"] == *k)) && left == 2 {
            break deliveries;
        }
        assert!(Instant::now() < deadline, "missing events; got {ok:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for d in &delivered {
        verify(d).unwrap_or_else(|e| panic!("{e}: {d:?}"));
        assert_eq!(d.headers["content-type"], "application/json");
    }
    let events: Vec<Value> = delivered
        .iter()
        .filter(|d| d.status == 200)
        .map(|d| serde_json::from_slice(&d.body).unwrap())
        .collect();
    for event in &events {
        assert_eq!(event["room"], "w", "{event}");
        assert!(event["at"].as_u64().is_some(), "{event}");
    }
    let of = |kind: &str| {
        events
            .iter()
            .filter(|e| e["type"] == kind)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        of("question.asked").len(),
        1,
        "one per question, not one per audience"
    );
    assert_eq!(of("question.asked")[0]["data"]["author"], "ana");
    assert_eq!(of("question.answered")[0]["data"]["answer"], "Yes");
    assert_eq!(of("breakouts.opened")[0]["data"]["rooms"][0], "Knox");
    assert_eq!(
        of("attendance.ready")[0]["data"]["path"],
        "/api/v1/rooms/w/attendance"
    );
    let joined: Vec<&str> = of("participant.joined")
        .iter()
        .map(|e| e["data"]["identity"].as_str().unwrap())
        .collect();
    assert_eq!(joined, ["host", "ana"]);
    // Each join was refused once, then resent with the same id after the backoff.
    for event in of("participant.joined") {
        let id = event["id"].as_str().unwrap();
        let attempts: Vec<&Delivery> = delivered
            .iter()
            .filter(|d| d.headers["convene-event-id"] == id)
            .collect();
        assert_eq!(
            attempts.iter().map(|d| d.status).collect::<Vec<_>>(),
            [503, 200]
        );
        let gap = attempts[1].at - attempts[0].at;
        assert!(gap >= Duration::from_millis(180), "retried after {gap:?}");
    }
    // Failures against the silent receiver show in the metrics once its attempts run out.
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, text) = http_get(&format!("{}/metrics", t.http()), None, &[]).await;
        let count = |outcome: &str| {
            text.lines()
                .find_map(|l| {
                    l.strip_prefix(&format!(
                        "convene_webhook_deliveries_total{{outcome=\"{outcome}\"}} "
                    ))
                })
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        if count("failed") >= 1.0 && count("retried") >= 2.0 && count("delivered") >= 10.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "webhook metrics did not move: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A receiver that records every event it gets (in the order it answers) and answers 200,
/// once `open` is true: until then it holds every request, as a stalled receiver does.
async fn recorder(open: watch::Receiver<bool>) -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let log: Arc<Mutex<Vec<Value>>> = Arc::default();
    let seen = log.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (seen, mut open) = (seen.clone(), open.clone());
            tokio::spawn(async move {
                let Some((_, body)) = read_request(&mut stream).await else {
                    return;
                };
                let _ = open.wait_for(|o| *o).await;
                seen.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap());
                let reply = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    (url, log)
}

/// Waits until `done` holds for what the receiver got; returns it.
async fn received_until(
    log: &Arc<Mutex<Vec<Value>>>,
    within: Duration,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let got = log.lock().unwrap().clone();
        if done(&got) {
            return got;
        }
        assert!(Instant::now() < deadline, "still waiting; got {got:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The presence events of `identity` in `room`, in the order they arrived.
fn presence_of<'a>(events: &'a [Value], room: &str, identity: &str) -> Vec<&'a str> {
    events
        .iter()
        .filter(|e| e["room"] == room && e["data"]["identity"] == identity)
        .filter_map(|e| e["type"].as_str())
        .filter(|k| k.starts_with("participant."))
        .collect()
}

fn configure(c: &mut convene::config::Config, url: &str) {
    c.webhooks.urls = vec![url.to_string()];
    c.webhooks.secret = SECRET.into();
}

/// Issue 21: 4,000 join/leave cycles made 8,000 POSTs. One identity's churn now sends its
/// first state, then its latest at most once per window and `presence_per_minute` a minute;
/// the final state (left) still arrives.
#[tokio::test]
async fn join_leave_churn_of_one_identity_is_coalesced_and_ends_in_the_right_state() {
    let (_open, gate) = watch::channel(true);
    let (url, log) = recorder(gate).await;
    let t = TestServer::start_with(|c| {
        configure(c, &url);
        c.limits.empty_room_ttl_s = 1;
        // One delivery at a time: events arrive in the order they were queued.
        c.webhooks.in_flight_per_room = 1;
    })
    .await;
    let per_minute = t.server.state.config.webhooks.presence_per_minute;
    let mut host = t.join("churn", Role::Host, "host").await;
    let started = Instant::now();
    const CYCLES: usize = 2000;
    for _ in 0..CYCLES {
        let mut ana = t.join("churn", Role::Participant, "ana").await;
        ana.socket.close(None).await.unwrap();
    }
    let took = started.elapsed();
    // The room ends once the host leaves; `room.ended` is queued after ana's last state.
    host.socket.close(None).await.unwrap();
    let events = received_until(&log, WAIT + took, |got| {
        got.iter().any(|e| e["type"] == "room.ended")
    })
    .await;
    let ana = presence_of(&events, "churn", "ana");
    eprintln!(
        "{CYCLES} join/leave cycles in {took:?}: {} POSTs for ana, {} in all",
        ana.len(),
        events.len()
    );
    let minutes = 1 + took.as_secs() as usize / 60;
    assert!(
        ana.len() <= per_minute * minutes + 1,
        "{} presence POSTs for one identity (the first: {:?})",
        ana.len(),
        &ana[..ana.len().min(6)]
    );
    assert_eq!(ana.first(), Some(&"participant.joined"));
    assert_eq!(ana.last(), Some(&"participant.left"), "the final state");
    assert!(
        ana.windows(2).all(|w| w[0] != w[1]),
        "states alternate: {ana:?}"
    );
    let ended = events
        .iter()
        .position(|e| e["type"] == "room.ended")
        .unwrap();
    let last_ana = events
        .iter()
        .rposition(|e| e["data"]["identity"] == "ana")
        .unwrap();
    assert!(last_ana < ended, "ana's last state comes before room.ended");
}

/// With a slow receiver (it holds every request until released) and a flood of joins in
/// room A, room B's events all arrive: A's flood overflows only A's queue.
#[tokio::test]
async fn a_flood_in_one_room_to_a_slow_receiver_drops_none_of_another_rooms_events() {
    let (open, gate) = watch::channel(false);
    let (url, log) = recorder(gate).await;
    let t = TestServer::start_with(|c| {
        configure(c, &url);
        c.webhooks.queue = 16;
        c.webhooks.room_queue = 8;
        c.webhooks.in_flight_per_room = 2;
        // Held requests are not timed out (and retried) before the release.
        c.webhooks.timeout_s = 60;
    })
    .await;
    let mut flood = Vec::new();
    for i in 0..150 {
        flood.push(t.join("flood-a", Role::Participant, &format!("p{i}")).await);
    }
    let mut host = t.join("calm-b", Role::Host, "host").await;
    let mut bo = t.join("calm-b", Role::Participant, "bo").await;
    let q = bo
        .ok(Command::AskQuestion {
            text: "Will the slides be shared?".into(),
            anonymous: false,
        })
        .await
        .unwrap();
    host.ok(Command::AnswerQuestion {
        question_id: q,
        answer: Some("Yes".into()),
    })
    .await;
    open.send_replace(true);
    let expected = [
        "room.started",
        "participant.joined",
        "participant.joined",
        "question.asked",
        "question.answered",
    ];
    let in_b = |got: &[Value]| -> Vec<String> {
        got.iter()
            .filter(|e| e["room"] == "calm-b")
            .map(|e| e["type"].as_str().unwrap().to_string())
            .collect()
    };
    let got = received_until(&log, WAIT, |got| in_b(got).len() >= expected.len()).await;
    let mut b = in_b(&got);
    b.sort();
    let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(b, want, "room B's events");
    let from_a = got.iter().filter(|e| e["room"] == "flood-a").count();
    assert!(
        from_a < 150,
        "room A's flood was bounded ({from_a} delivered)"
    );
    // A's drops are counted.
    let (_, text) = http_get(&format!("{}/metrics", t.http()), None, &[]).await;
    let dropped = text
        .lines()
        .find_map(|l| l.strip_prefix("convene_webhook_deliveries_total{outcome=\"dropped\"} "))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(dropped >= 1.0, "drops are counted: {text}");
}

/// An identity's presence events are capped per minute (`presence_per_minute`); other
/// identities in the room are not held back.
#[tokio::test]
async fn presence_events_are_capped_per_identity_per_minute() {
    let (_open, gate) = watch::channel(true);
    let (url, log) = recorder(gate).await;
    let t = TestServer::start_with(|c| {
        configure(c, &url);
        c.webhooks.in_flight_per_room = 1;
        // No coalescing window: the cap alone holds.
        c.webhooks.presence_window_ms = 0;
        c.webhooks.presence_per_minute = 4;
    })
    .await;
    let mut host = t.join("capped", Role::Host, "host").await;
    for _ in 0..10 {
        let mut ana = t.join("capped", Role::Participant, "ana").await;
        ana.socket.close(None).await.unwrap();
        // Each cycle is a join and a leave in the room (not a reconnect).
        host.expect_event(
            |e| matches!(e, RoomEvent::MemberLeft { identity, .. } if identity == "ana"),
        )
        .await;
    }
    // Ben's join is queued after all of ana's: once it arrives, ana's are in.
    let _ben = t.join("capped", Role::Participant, "ben").await;
    let got = received_until(&log, WAIT, |got| {
        presence_of(got, "capped", "ben") == ["participant.joined"]
    })
    .await;
    let ana = presence_of(&got, "capped", "ana");
    assert_eq!(
        ana,
        [
            "participant.joined",
            "participant.left",
            "participant.joined",
            "participant.left"
        ],
        "four a minute for ana"
    );
}
