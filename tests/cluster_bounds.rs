//! What crosses a cluster's nodes is bounded and answered once: a request resent after a
//! resume elsewhere is answered once when the stopped node wakes (`convene serve` processes
//! and SIGSTOP), a flood from one node leaves the owner's Redis streams under their byte
//! budget while another room works, joins refused with 503 before the upgrade while Redis
//! is away, and Redis credentials (ACL users) that work and are never printed.

mod cluster_support;
mod common;

use std::time::{Duration, Instant};

use cluster_support::Cluster;
use common::{token, Client};
use convene_signaling::{Command, Presence, Role, RoomEvent, ServerMessage};

const ROOM: &str = "launch";

/// Joins through node `ws` (its `/ws` URL) and reads the welcome.
async fn join_at(ws: &str, identity: &str, role: Role) -> Client {
    let token = token(ROOM, role, identity, &[]);
    let mut client = Client::connect(&format!("{ws}?token={token}")).await;
    client.token = token;
    client.base = ws.to_string();
    match client.recv().await {
        ServerMessage::Welcome { .. } => client,
        other => panic!("expected welcome, got {other:?}"),
    }
}

/// A counter's value in a node's `/metrics` text.
fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

fn answered(message: &ServerMessage) -> Option<&str> {
    match message {
        ServerMessage::Ack { request_id, .. } => Some(request_id),
        ServerMessage::Error {
            request_id: Some(r),
            ..
        } => Some(r),
        _ => None,
    }
}

/// A client's socket to n2 is cut while n2 is stopped with the client's commands in its
/// socket; the client resumes on n1 (the owner) and resends them there; when n2 wakes and
/// reads the dead socket's commands, nobody answers them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_resent_after_a_resume_elsewhere_is_answered_once_when_the_stopped_node_wakes()
{
    let cluster = Cluster::start(2).await;
    let (n1, n2) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut host = join_at(&n1.ws(), "host", Role::Host).await;
    assert_eq!(
        cluster.wait_owner(ROOM, None, Duration::from_secs(10)).await,
        0
    );
    let mut ann = join_at(&n2.ws(), "ann", Role::Participant).await;
    ann.ok(Command::SendChat {
        text: "before".into(),
    })
    .await;

    n2.stop();
    let requests: Vec<String> = (0..5).map(|i| format!("late-{i}")).collect();
    for (i, id) in requests.iter().enumerate() {
        let text = format!("message {i}");
        ann.send_with_id(Command::SendChat { text }, id).await;
    }
    let (token, session_id, last_seq) = ann.drop_connection();
    // n2 stopped heartbeating: the owner lets its sessions wait out the grace.
    host.expect_event(|e| {
        matches!(e, RoomEvent::MemberUpdated { member }
            if member.identity == "ann" && member.presence == Presence::Reconnecting)
    })
    .await;
    let mut resumed = Client::connect(&format!(
        "{}?token={token}&resume={session_id}&last_seq={last_seq}",
        n1.ws()
    ))
    .await;
    assert!(
        matches!(resumed.recv().await, ServerMessage::Resumed { .. }),
        "ann resumed on n1"
    );
    for (i, id) in requests.iter().enumerate() {
        let text = format!("message {i}");
        resumed.send_with_id(Command::SendChat { text }, id).await;
        assert!(matches!(resumed.reply(id).await, ServerMessage::Ack { .. }));
    }

    n2.cont();
    // n2 reads the dead socket's five commands and records them; the owner drops each.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = cluster.metrics(0).await.unwrap_or_default();
        if counter(&metrics, "convene_superseded_commands_total") >= 5 {
            break;
        }
        if let Some(message) = resumed.try_recv(Duration::from_millis(100)).await {
            assert!(
                answered(&message).is_none_or(|r| !requests.iter().any(|q| q == r)),
                "a request was answered a second time: {message:?}"
            );
        }
        assert!(
            Instant::now() < deadline,
            "n2 never recorded the dead socket's commands:\n{}",
            n2.tail.last(30)
        );
    }
    // Whatever the owner sent before a later request's ack has arrived by then.
    let marker = resumed
        .send(Command::SendChat {
            text: "after".into(),
        })
        .await;
    let mut seen = Vec::new();
    loop {
        let message = resumed.recv().await;
        match answered(&message) {
            Some(r) if r == marker => break,
            Some(r) => seen.push(r.to_string()),
            None => {}
        }
    }
    assert_eq!(seen, Vec::<String>::new(), "answers after the resends");
}

/// One raw command to the test's own Redis.
async fn redis_cmd(url: &str, args: &[&str]) -> redis::Value {
    let client = redis::Client::open(url).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the test's redis");
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async(&mut conn).await.expect("redis answers")
}

fn int(value: &redis::Value) -> i64 {
    match value {
        redis::Value::Int(n) => *n,
        redis::Value::Nil => 0,
        redis::Value::BulkString(text) => String::from_utf8_lossy(text).parse().unwrap(),
        other => panic!("not an integer: {other:?}"),
    }
}

/// An SDP offer of `bytes` bytes (it need not be one the SFU can use).
fn offer(bytes: usize) -> Command {
    let head = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=x-pad:";
    let sdp = format!("{head}{}\r\n", "x".repeat(bytes - head.len() - 2));
    Command::RtcOffer { sdp }
}

/// 100 sessions on a node that does not own their room send 60 KB offers (refused at the
/// session) and as many 30 KB offers as they may: the owner's inbox stays under its byte
/// budget, and with Redis at a low `maxmemory` and `noeviction`, another room still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_node_stays_under_the_owners_byte_budget_and_other_rooms_work() {
    const INBOX_BYTES: usize = 1 << 20;
    let redis = common::TestRedis::start().await;
    redis_cmd(&redis.url(), &["CONFIG", "SET", "maxmemory", "64mb"]).await;
    redis_cmd(
        &redis.url(),
        &["CONFIG", "SET", "maxmemory-policy", "noeviction"],
    )
    .await;
    let nodes = common::cluster_of(&redis, 2, |c| c.cluster.inbox_bytes = INBOX_BYTES).await;
    let (n1, n2) = (&nodes[0], &nodes[1]);
    let _host = n1.join(ROOM, Role::Host, "host").await;
    let names: Vec<String> = (0..100).map(|i| format!("p{i}")).collect();
    let mut flooders =
        futures_util::future::join_all(names.iter().map(|n| n2.join(ROOM, Role::Presenter, n)))
            .await;
    let floods = flooders.iter_mut().map(|client| async move {
        let mut sent = Vec::new();
        for k in 0..22 {
            let id = format!("o{k}");
            let size = if k < 2 { 60_000 } else { 30_000 };
            client.send_with_id(offer(size), &id).await;
            sent.push(id);
        }
        let mut codes: Vec<String> = vec![String::new(); sent.len()];
        let deadline = Instant::now() + Duration::from_secs(30);
        while codes.iter().any(String::is_empty) && Instant::now() < deadline {
            let Some(message) = client.try_recv(Duration::from_millis(200)).await else {
                continue;
            };
            let Some(k) = answered(&message).and_then(|r| sent.iter().position(|s| s == r))
            else {
                continue;
            };
            codes[k] = match message {
                ServerMessage::Error { code, .. } => format!("{code:?}"),
                other => format!("{other:?}").chars().take(20).collect(),
            };
        }
        codes
    });
    let codes: Vec<Vec<String>> = futures_util::future::join_all(floods).await;
    let unanswered: Vec<(usize, usize)> = codes
        .iter()
        .enumerate()
        .flat_map(|(i, c)| c.iter().enumerate().filter(|(_, c)| c.is_empty()).map(move |(k, _)| (i, k)))
        .collect();
    assert_eq!(unanswered, Vec::new(), "(flooder, offer) never answered");
    let oversized = codes.iter().filter(|c| c[..2].iter().all(|c| c == "InvalidArgument"));
    assert_eq!(oversized.count(), 100, "60 KB offers are refused: {:?}", codes[0]);
    let limited = codes.iter().flatten().filter(|c| *c == "RateLimited").count();
    assert!(limited > 0, "the flood was rate limited: {:?}", codes[0]);
    eprintln!("first flooder's answers: {:?}", codes[0]);

    for node in ["n1", "n2"] {
        let key = format!("convene:nodes:{node}:inbox");
        let memory = int(&redis_cmd(&redis.url(), &["MEMORY", "USAGE", &key, "SAMPLES", "0"]).await);
        let bytes = int(&redis_cmd(&redis.url(), &["GET", &format!("{key}:bytes")]).await);
        let entries = int(&redis_cmd(&redis.url(), &["XLEN", &key]).await);
        eprintln!("{key}: {memory} bytes in Redis, {bytes} counted, {entries} entries");
        assert!(bytes as usize <= INBOX_BYTES, "{key} counts {bytes} bytes");
        assert!(
            memory as usize <= 2 * INBOX_BYTES,
            "{key} holds {memory} bytes, over its budget of {INBOX_BYTES}"
        );
        let ttl = int(&redis_cmd(&redis.url(), &["PTTL", &key]).await);
        assert!(ttl <= 300_000, "{key} lapses within minutes, not {ttl} ms");
    }

    // Another room on the same nodes: a chat is acknowledged and delivered.
    let mut reader = n1.join("other", Role::Participant, "reader").await;
    let mut writer = n2.join("other", Role::Participant, "writer").await;
    writer
        .ok(Command::SendChat {
            text: "still here".into(),
        })
        .await;
    reader
        .expect_event(|e| matches!(e, RoomEvent::ChatMessage { message } if message.text == "still here"))
        .await;
}

/// While the node cannot reach Redis, a join is refused before the upgrade: HTTP 503 with
/// `Retry-After` and a JSON body (never an upgrade whose first frame is an error); once
/// Redis is back, joins work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_while_redis_is_away_gets_503_with_retry_after_before_the_upgrade() {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let mut redis = cluster_support::Redis::start().await;
    let node = common::TestServer::start_with(|c| {
        c.redis.url = redis.url();
        c.cluster.node_id = "n1".into();
    })
    .await;
    let url = node.ws_url(&token(ROOM, Role::Participant, "ann", &[]));
    node.join(ROOM, Role::Host, "host").await;

    redis.kill9().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let response = loop {
        match tokio_tungstenite::connect_async(&url).await {
            Err(WsError::Http(response)) => break response,
            Ok((mut socket, _)) => {
                // Upgraded before the node noticed: the first frame may only be the
                // documented refusal, and the socket closes (1013: retry, not final).
                use futures_util::StreamExt;
                if let Some(Ok(first)) = socket.next().await {
                    let text = first.into_text().unwrap_or_default();
                    assert!(
                        text.is_empty() || text.contains("welcome") || text.contains("unavailable"),
                        "{text}"
                    );
                }
            }
            Err(other) => panic!("connect: {other}"),
        }
        assert!(Instant::now() < deadline, "no 503 while Redis is away");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(response.status(), 503);
    let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    assert_eq!(retry_after.as_deref(), Some("1"));
    let body: serde_json::Value =
        serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
    assert_eq!(body["error"], "unavailable", "{body}");
    assert_eq!(body["retry_after_ms"], 1000, "{body}");

    redis.restart().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok((mut socket, _)) = tokio_tungstenite::connect_async(&url).await {
            use futures_util::StreamExt;
            if let Some(Ok(first)) = socket.next().await {
                if first.into_text().unwrap_or_default().contains(r#""type":"welcome""#) {
                    break;
                }
            }
        }
        assert!(Instant::now() < deadline, "joins never worked again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
