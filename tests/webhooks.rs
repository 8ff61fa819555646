//! Webhooks over real sockets: a receiver inside the test checks signatures, timestamps and
//! retries, while a second receiver that never answers cannot hold up the room.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{http_get, TestServer, WAIT};
use convene_signaling::{Command, Role, RoomEvent};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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
