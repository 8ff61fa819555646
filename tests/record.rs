//! The convening's record and its report over real sockets: an ad-hoc convening opens with a
//! room and ends when it closes (`convening.ended`, once); the report and its CSVs come from the
//! store alone (the same bytes from a second node on the same store); retention and deletion
//! of a record or of one person; and (`kill -9` mid-event, 200 attendees) the outage is a
//! gap in everyone's attendance, not leaving, while Q&A, the poll and chat equal what clients saw.

mod cluster_support;
mod common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{http_get, http_request, TestServer, API_KEY, WAIT};
use convene_signaling::{Command, QaMode, Role, RoomEvent, RoomKind};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn fresh_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "convene-record-{tag}-{}-{}",
        std::process::id(),
        cluster_support::free_port()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test dir");
    dir
}

/// An in-process node keeping its record in SQLite under `dir`; rooms close as they empty.
async fn node_on(dir: &std::path::Path, webhook: Option<&str>) -> TestServer {
    let data = dir.display().to_string();
    let webhook = webhook.map(str::to_string);
    TestServer::start_with(move |c| {
        c.store.durable_log = true;
        c.store.data_dir = data;
        c.store.sweep_interval_s = 1;
        c.limits.empty_room_ttl_s = 1;
        if let Some(url) = webhook {
            c.webhooks.urls = vec![url];
            c.webhooks.secret = "hook-secret".into();
        }
    })
    .await
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Polls `probe` until it gives `Some`, within `within`.
async fn until<T, F: std::future::Future<Output = Option<T>>>(
    within: Duration,
    what: &str,
    mut probe: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The room's convenings in `state`, by the API key.
async fn convenings(http: &str, room: &str, state: &str) -> Vec<Value> {
    let url = format!("{http}/api/v1/convenings?room={room}&state={state}");
    let (status, body) = http_get(&url, Some(API_KEY), &[]).await;
    assert_eq!(status, 200, "{body}");
    json(&body)["convenings"].as_array().unwrap().clone()
}

async fn get(url: &str) -> (u16, String) {
    http_get(url, Some(API_KEY), &[]).await
}

/// Every webhook body POSTed to a receiver of the test's own.
async fn webhook_receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let body = loop {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + length {
                        break buf[end + 4..end + 4 + length].to_vec();
                    }
                };
                log.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap());
                let reply = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    (url, seen)
}

/// A short convening: Ana (team north) and Bob (team south) chat and ask, the host runs a
/// poll and deletes one message, everyone leaves, the room closes. Returns the convening id.
async fn short_convening(t: &TestServer, room: &str) -> String {
    let mut host = t.join(room, Role::Host, "host").await;
    host.ok(Command::UpdateSettings {
        kind: Some(RoomKind::Meeting),
        chat_enabled: None,
        qa_mode: Some(QaMode::Open),
    })
    .await;
    let mut ana = t
        .join_with(room, Role::Participant, "ana", &[("team", "north")])
        .await;
    let mut bob = t
        .join_with(room, Role::Participant, "bob", &[("team", "south")])
        .await;
    let kept = ana
        .ok(Command::SendChat {
            text: "=1+1 hello".into(),
        })
        .await;
    let gone = ana
        .ok(Command::SendChat {
            text: "oops".into(),
        })
        .await;
    bob.ok(Command::SendChat {
        text: "hi all".into(),
    })
    .await;
    let asked = ana
        .ok(Command::AskQuestion {
            text: "What about ana's school?".into(),
            anonymous: false,
        })
        .await
        .expect("a question id");
    bob.ok(Command::AskQuestion {
        text: "And rural schools?".into(),
        anonymous: false,
    })
    .await;
    bob.ok(Command::Upvote { question_id: asked }).await;
    host.ok(Command::DeleteChat {
        message_id: gone.expect("a message id"),
    })
    .await;
    let poll = host
        .ok(Command::LaunchPoll {
            question: "Useful?".into(),
            options: vec!["yes".into(), "no".into()],
            multiple: false,
            live_results: true,
        })
        .await
        .expect("a poll id");
    ana.ok(Command::VotePoll {
        poll_id: poll,
        choices: vec![0],
    })
    .await;
    bob.ok(Command::VotePoll {
        poll_id: poll,
        choices: vec![0],
    })
    .await;
    host.ok(Command::ClosePoll { poll_id: poll }).await;
    assert!(kept.is_some());
    let live = convenings(&t.http(), room, "live").await;
    assert_eq!(live.len(), 1, "one ad-hoc convening opened with the room");
    let id = live[0]["id"].as_str().unwrap().to_string();
    for client in [ana, bob, host] {
        let mut socket = client.socket;
        let _ = socket.close(None).await;
    }
    id
}

#[tokio::test]
async fn an_ad_hoc_convening_ends_with_its_room_and_is_reported_from_the_store() {
    let dir = fresh_dir("adhoc");
    let (hook_url, hooks) = webhook_receiver().await;
    let t = node_on(&dir, Some(&hook_url)).await;
    let id = short_convening(&t, "workshop").await;
    let http = t.http();
    let ended = until(WAIT, "the convening to end with its room", || async {
        let list = convenings(&http, "workshop", "ended").await;
        (list.len() == 1).then_some(list)
    })
    .await;
    assert_eq!(ended[0]["id"], id.as_str());

    let (status, body) = get(&format!("{http}/api/v1/convenings/{id}/report")).await;
    assert_eq!(status, 200, "{body}");
    let report = json(&body);
    assert_eq!(report["convening"]["state"], "ended");
    let people: Vec<&str> = report["attendance"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["identity"].as_str().unwrap())
        .collect();
    assert_eq!(people, ["ana", "bob", "host"], "by name, then identity");
    let ana = &report["attendance"][0];
    assert_eq!(
        (ana["team"].as_str(), ana["stays"].as_u64()),
        (Some("north"), Some(1))
    );
    assert!(ana["last_leave"].as_i64() >= ana["first_join"].as_i64());
    let teams: Vec<&str> = report["teams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["team"].as_str().unwrap())
        .collect();
    assert_eq!(teams, ["", "north", "south"]);
    // The deleted message is not in the transcript.
    let chat: Vec<&str> = report["chat"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    assert_eq!(chat, ["=1+1 hello", "hi all"]);
    let questions = report["questions"].as_array().unwrap();
    assert_eq!(questions.len(), 2);
    assert_eq!(questions[0]["votes"], 1);
    assert_eq!(questions[0]["author"], "ana");
    assert_eq!(report["polls"][0]["counts"], serde_json::json!([2, 0]));
    assert_eq!(report["polls"][0]["state"], "closed");

    // Certificate-ready and formula-safe.
    let csv_url = format!("{http}/api/v1/convenings/{id}/report/attendance.csv");
    let (status, csv) = get(&csv_url).await;
    assert_eq!(status, 200);
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("name,identity,team,minutes,minutes_in_breakouts,date,first_join,last_leave")
    );
    let ana_line = lines.next().unwrap();
    assert!(ana_line.contains(",ana,north,0,0,20"), "{csv}");
    let (_, chat_csv) = get(&format!("{http}/api/v1/convenings/{id}/report/chat.csv")).await;
    assert!(chat_csv.contains(",'=1+1 hello\n"), "{chat_csv}");
    assert!(!chat_csv.contains("oops"));
    for file in ["questions.csv", "polls.csv"] {
        let (status, _) = get(&format!("{http}/api/v1/convenings/{id}/report/{file}")).await;
        assert_eq!(status, 200, "{file}");
    }

    // Delivered once, with the report's link.
    let webhook = until(WAIT, "convening.ended", || async {
        let seen = hooks.lock().unwrap();
        seen.iter()
            .find(|e| e["type"] == "convening.ended")
            .cloned()
    })
    .await;
    assert_eq!(webhook["data"]["convening_id"], id.as_str());
    assert!(webhook["data"]["report"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/api/v1/convenings/{id}/report")));

    // The node stopped, another on the same store (one at a time: the data directory's
    // lock) reads the same bytes.
    t.server.shutdown().await;
    let other = node_on(&dir, None).await;
    let (_, again) = get(&format!("{}/api/v1/convenings/{id}/report", other.http())).await;
    assert_eq!(again, body);
    let (_, csv_again) = get(&format!(
        "{}/api/v1/convenings/{id}/report/attendance.csv",
        other.http()
    ))
    .await;
    assert_eq!(csv_again, csv);
    let ended = hooks
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "convening.ended")
        .count();
    assert_eq!(ended, 1, "convening.ended is sent once");
}

#[tokio::test]
async fn deleting_a_person_removes_them_from_every_report_and_export() {
    let dir = fresh_dir("erase");
    let t = node_on(&dir, None).await;
    let http = t.http();
    let first = short_convening(&t, "first").await;
    let second = short_convening(&t, "second").await;
    for room in ["first", "second"] {
        until(WAIT, "both convenings to end", || async {
            (convenings(&http, room, "ended").await.len() == 1).then_some(())
        })
        .await;
    }
    let exports = |id: &str| {
        let base = format!("{http}/api/v1/convenings/{id}/report");
        [
            base.clone(),
            format!("{base}/attendance.csv"),
            format!("{base}/questions.csv"),
            format!("{base}/chat.csv"),
            format!("{base}/polls.csv"),
        ]
    };
    let mut before = String::new();
    for url in exports(&first).iter().chain(exports(&second).iter()) {
        before.push_str(&get(url).await.1);
    }
    assert!(before.contains("ana") && before.contains("north"));

    // Only the API key may erase; a host token may not.
    let url = format!("{http}/api/v1/people/ana");
    let host = t.token("first", Role::Host, "host");
    let (status, _) = http_request("DELETE", &url, Some(&host), &[], "").await;
    assert_eq!(status, 403);
    let (status, body) = http_request("DELETE", &url, Some(API_KEY), &[], "").await;
    assert_eq!(status, 200, "{body}");
    let erased = json(&body);
    // Per convening: a join and a leave, two messages (one deleted live), one question.
    assert!(erased["attendance_rows"].as_u64().unwrap() >= 4, "{erased}");
    assert_eq!(erased["chat_messages"], 2);
    assert_eq!(erased["questions"], 2);

    for id in [&first, &second] {
        for url in exports(id) {
            let (status, body) = get(&url).await;
            assert_eq!(status, 200, "{url}");
            assert!(
                !body.contains("ana") && !body.contains("north"),
                "{url} still names her: {body}"
            );
            assert!(body.contains("bob") || url.ends_with("polls.csv"), "{url}");
        }
    }
    // The poll's counts stay: votes were never recorded per person.
    let (_, report) = get(&exports(&first)[0]).await;
    assert_eq!(
        json(&report)["polls"][0]["counts"],
        serde_json::json!([2, 0])
    );
}

#[tokio::test]
async fn records_expire_after_their_retention_and_can_be_deleted_and_callers_are_checked() {
    let dir = fresh_dir("retention");
    let t = node_on(&dir, None).await;
    let http = t.http();
    let kept = short_convening(&t, "kept").await;
    let expiring = short_convening(&t, "expiring").await;
    for room in ["kept", "expiring"] {
        until(WAIT, "both convenings to end", || async {
            (convenings(&http, room, "ended").await.len() == 1).then_some(())
        })
        .await;
    }
    let report = |id: &str| format!("{http}/api/v1/convenings/{id}/report");

    // Who may read: the API key, or a host token of that room; nobody else.
    let participant = t.token("kept", Role::Participant, "ana");
    let other_host = t.token("elsewhere", Role::Host, "h2");
    let own_host = t.token("kept", Role::Host, "host");
    assert_eq!(http_get(&report(&kept), None, &[]).await.0, 401);
    assert_eq!(
        http_get(&report(&kept), Some(&participant), &[]).await.0,
        403
    );
    assert_eq!(
        http_get(&report(&kept), Some(&other_host), &[]).await.0,
        401
    );
    assert_eq!(http_get(&report(&kept), Some(&own_host), &[]).await.0, 200);
    // An unknown id is 404 for the key, and tells a host token nothing.
    assert_eq!(get(&report("no-such-id")).await.0, 404);
    assert_eq!(
        http_get(&report("no-such-id"), Some(&own_host), &[])
            .await
            .0,
        403
    );
    assert_eq!(get(&format!("{}/x.csv", report(&kept))).await.0, 404);
    let long = "x".repeat(10_000);
    assert_eq!(get(&report(&long)).await.0, 404);

    // Retention: bounded, set through the API; 0 days is swept at the next sweep.
    let json_header = [("Content-Type", "application/json")];
    let retention = format!("{http}/api/v1/convenings/{expiring}/retention");
    for bad in [
        r#"{"retention_days":-1}"#,
        r#"{"retention_days":100000}"#,
        r#"{"days":3}"#,
    ] {
        let (status, body) =
            http_request("PUT", &retention, Some(API_KEY), &json_header, bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(json(&body)["message"].is_string());
    }
    let (status, body) = http_request(
        "PUT",
        &retention,
        Some(API_KEY),
        &json_header,
        r#"{"retention_days":0}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["retention_days"], 0);
    until(
        Duration::from_secs(20),
        "the expired record to be swept",
        || async { (get(&report(&expiring)).await.0 == 404).then_some(()) },
    )
    .await;
    // The other convening keeps its 90 days.
    let (status, body) = get(&report(&kept)).await;
    assert_eq!(status, 200);
    assert_eq!(json(&body)["convening"]["retention_days"], 90);

    // Deleting a record on request: the convening stays, its record is empty.
    let record = format!("{http}/api/v1/convenings/{kept}/record");
    let (status, _) = http_request("DELETE", &record, Some(&participant), &[], "").await;
    assert_eq!(status, 403);
    let (status, _) = http_request("DELETE", &record, Some(API_KEY), &[], "").await;
    assert_eq!(status, 204);
    let (status, body) = get(&report(&kept)).await;
    assert_eq!(status, 200);
    let emptied = json(&body);
    for part in ["attendance", "questions", "polls", "chat"] {
        assert_eq!(emptied[part], serde_json::json!([]), "{part}");
    }
}

/// The crowd's size (`CONVENE_RECORD_SIZE`, default 200).
fn size() -> usize {
    std::env::var("CONVENE_RECORD_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
        .max(20)
}

/// Deadlines grow with the crowd (a 2-core machine shared with CI).
fn scaled(base_s: u64, size: usize) -> Duration {
    Duration::from_secs(base_s + size as u64 / 10)
}

/// What the participants were acknowledged (chat, questions, upvotes, votes), and what they
/// saw of it; the report must hold exactly the acknowledged and agree with the seen.
#[derive(Default)]
struct Expected {
    /// message id -> (author, text): acked, not deleted
    chat: std::collections::BTreeMap<u64, (String, String)>,
    /// question id -> (text, acked upvotes)
    questions: std::collections::BTreeMap<u64, (String, u32)>,
    /// poll id -> acked votes per option
    polls: std::collections::BTreeMap<u64, Vec<u32>>,
    /// message id -> text, as any client saw it (deletions applied)
    seen_chat: std::collections::BTreeMap<u64, String>,
    /// What was sent, acked or not: a command whose ack a `kill -9` swallowed may still have
    /// been committed, so the record may hold it (never more than this).
    sent_questions: std::collections::BTreeSet<String>,
    /// question id -> upvotes sent for it
    sent_upvotes: std::collections::BTreeMap<u64, u32>,
    /// poll id -> votes sent per option
    sent_polls: std::collections::BTreeMap<u64, Vec<u32>>,
}

fn expected(logs: &[cluster_support::crowd::Log], deleted: u64, options: usize) -> Expected {
    let mut x = Expected::default();
    let mut upvotes: Vec<u64> = Vec::new();
    for log in logs {
        for (rid, command) in &log.sent {
            match command {
                Command::AskQuestion { text, .. } => {
                    x.sent_questions.insert(text.clone());
                }
                Command::Upvote { question_id } => {
                    *x.sent_upvotes.entry(*question_id).or_default() += 1;
                }
                Command::VotePoll { poll_id, choices } => {
                    let counts = x.sent_polls.entry(*poll_id).or_insert(vec![0; options]);
                    for c in choices {
                        counts[*c as usize] += 1;
                    }
                }
                _ => {}
            }
            let Some(answer) = log.acked.get(rid) else {
                continue;
            };
            match (command, answer) {
                (Command::SendChat { text }, Some(id)) => {
                    x.chat.insert(*id, (log.identity.clone(), text.clone()));
                }
                (Command::AskQuestion { text, .. }, Some(id)) => {
                    x.questions.entry(*id).or_insert((String::new(), 0)).0 = text.clone();
                }
                (Command::Upvote { question_id }, _) => upvotes.push(*question_id),
                (Command::VotePoll { poll_id, choices }, _) => {
                    let counts = x.polls.entry(*poll_id).or_insert(vec![0; options]);
                    for c in choices {
                        counts[*c as usize] += 1;
                    }
                }
                _ => {}
            }
        }
        for e in log.conns.iter().flat_map(|c| c.events.iter()) {
            if let RoomEvent::ChatMessage { message: m } = &e.event {
                x.seen_chat.insert(m.id, m.text.clone());
            }
        }
    }
    for q in upvotes {
        if let Some(entry) = x.questions.get_mut(&q) {
            entry.1 += 1;
        }
    }
    x.chat.remove(&deleted);
    x.seen_chat.remove(&deleted);
    x
}

/// How the report's Q&A, poll and chat differ from what was acknowledged and seen, or `None`.
/// Everything acknowledged is there; beyond it, only what was sent and whose ack a `kill -9`
/// swallowed (committed before the kill), and chat only as clients saw it.
fn differs(report: &Value, x: &Expected) -> Option<String> {
    let chat: std::collections::BTreeMap<u64, (String, String)> = report["chat"]
        .as_array()?
        .iter()
        .map(|c| {
            let id = c["id"].as_u64().unwrap();
            (
                id,
                (
                    c["identity"].as_str().unwrap().into(),
                    c["text"].as_str().unwrap().into(),
                ),
            )
        })
        .collect();
    for (id, acked) in &x.chat {
        if chat.get(id) != Some(acked) {
            return Some(format!("acked message {id} {acked:?} is not in the report"));
        }
    }
    for (id, (_, text)) in &chat {
        if !x.chat.contains_key(id) && x.seen_chat.get(id) != Some(text) {
            return Some(format!("message {id} {text:?} was neither acked nor seen"));
        }
    }
    for (id, text) in &x.seen_chat {
        if chat.get(id).map(|c| &c.1) != Some(text) {
            return Some(format!("message {id} was seen as {text:?}"));
        }
    }
    let questions = report["questions"].as_array()?;
    for id in x.questions.keys() {
        if !questions.iter().any(|q| q["id"].as_u64() == Some(*id)) {
            return Some(format!("acked question {id} is not in the report"));
        }
    }
    for q in questions {
        let id = q["id"].as_u64().unwrap();
        let votes = q["votes"].as_u64().unwrap() as u32;
        let sent = x.sent_upvotes.get(&id).copied().unwrap_or(0);
        let acked = match x.questions.get(&id) {
            Some((text, acked)) if q["text"] == text.as_str() => *acked,
            Some((text, _)) => return Some(format!("question {id}: {q} vs {text:?}")),
            None if x.sent_questions.contains(q["text"].as_str().unwrap()) => 0,
            None => return Some(format!("question {id}: {q} was never asked")),
        };
        if votes < acked || votes > sent {
            return Some(format!(
                "question {id}: {votes} votes, {acked} acked and {sent} sent"
            ));
        }
    }
    for p in report["polls"].as_array()? {
        let id = p["id"].as_u64().unwrap();
        let counts: Vec<u32> = serde_json::from_value(p["counts"].clone()).ok()?;
        let none = vec![0; counts.len()];
        let acked = x.polls.get(&id).unwrap_or(&none);
        let sent = x.sent_polls.get(&id).unwrap_or(&none);
        let within = counts.len() == acked.len()
            && counts
                .iter()
                .zip(acked.iter().zip(sent))
                .all(|(n, (lo, hi))| lo <= n && n <= hi);
        if !within {
            return Some(format!(
                "poll {id}: {counts:?}, acked {acked:?}, sent {sent:?}"
            ));
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_event_is_a_gap_in_the_attendance_not_leaving() {
    use cluster_support::crowd::{traffic, wait_for, Crowd, Plan};
    use convene_signaling::{Assignment, BreakoutPlan, BreakoutRooms};
    let size = size();
    let dir = fresh_dir("crowd");
    // Through a link of another name: someone's `pkill -f "convene serve"` misses it.
    let bin = dir.join("record-node");
    std::os::unix::fs::symlink(cluster_support::BIN, &bin).expect("link to convene");
    let data = dir.join("data").display().to_string();
    let env = [
        ("CONVENE_DATA_DIR", data.as_str()),
        ("CONVENE_STORE_SNAPSHOT_EVERY", "50"),
    ];
    let port = cluster_support::free_port();
    let spawn = || cluster_support::Node::spawn_with(&bin, "solo", port, "", &env);
    let mut node = spawn();
    node.ready().await;
    let http = node.http();
    let view = cluster_support::View::of(vec![node.ws()]);
    let crowd = Crowd::join_view(view.clone(), "summit", size).await;
    let handles = crowd.handles();
    let host = handles[0].clone();
    let acked = |rid: String| {
        let host = host.clone();
        async move {
            wait_for(scaled(10, size), "the host's command", || {
                host.ack_of(&rid).is_some()
            })
            .await;
            host.ack_of(&rid).flatten()
        }
    };
    // Everyone but the host goes to one of two breakouts for the rest of the event.
    acked(host.send(Command::SetBreakoutPlan {
        plan: BreakoutPlan {
            rooms: BreakoutRooms::Named(vec!["Birch".into(), "Cedar".into()]),
            assignment: Assignment::Auto,
            duration_s: None,
            allow_leave: true,
        },
    }))
    .await;
    acked(host.send(Command::OpenBreakouts)).await;
    let poll_id = acked(host.send(Command::LaunchPoll {
        question: "Which strand next?".into(),
        options: vec!["literacy".into(), "math".into()],
        multiple: false,
        live_results: true,
    }))
    .await
    .expect("a poll id");
    let vote = |i: usize| {
        handles[i].send(Command::VotePoll {
            poll_id,
            choices: vec![(i % 2) as u32],
        })
    };
    let mut votes: Vec<(usize, String)> = (1..size).step_by(6).map(|i| (i, vote(i))).collect();
    let traffic = traffic(crowd.handles(), Plan::standard(14));
    let before = crowd.acks();
    wait_for(scaled(15, size), "acks before the kill", || {
        crowd.acks() >= before + 20
    })
    .await;

    view.set_up(0, false);
    let stopped = Instant::now();
    node.kill9().await;
    node = spawn();
    node.ready().await;
    view.set_up(0, true);
    let outage = stopped.elapsed();
    let at_restart = crowd.acks();
    wait_for(scaled(15, size), "an ack after the restart", || {
        crowd.acks() > at_restart
    })
    .await;
    votes.extend((4..size).step_by(6).map(|i| (i, vote(i))));
    let doomed = acked(host.send(Command::SendChat {
        text: "to be withdrawn".into(),
    }))
    .await
    .expect("a message id");
    acked(host.send(Command::DeleteChat { message_id: doomed })).await;
    traffic.await.expect("traffic task");
    crowd
        .settle(scaled(20, size))
        .await
        .expect("every command answered");
    let voted = votes
        .iter()
        .filter(|(i, rid)| handles[*i].ack_of(rid).is_some())
        .count();
    let logs = crowd.finish().await;
    let saw = expected(&logs, doomed, 2);
    assert_eq!(saw.polls[&poll_id].iter().sum::<u32>() as usize, voted);
    assert!(!saw.chat.is_empty() && !saw.questions.is_empty());

    let id = convenings(&http, "summit", "live").await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let url = format!("{http}/api/v1/convenings/{id}/report");
    // Rows commit just after the acks they follow: wait until the record has caught up, and
    // until the live convening's recorded time (heartbeats) runs a second past the outage, so
    // whole seconds in breakouts show.
    let deadline = Instant::now() + scaled(10, size);
    let in_breakouts = |report: &Value| {
        report["attendance"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["seconds_in_breakouts"].as_i64().unwrap_or(0) > 0)
            .count()
    };
    let report = loop {
        let (status, body) = get(&url).await;
        assert_eq!(status, 200, "{body}");
        let report = json(&body);
        let how = differs(&report, &saw).or_else(|| {
            (in_breakouts(&report) < (size - 1) * 9 / 10)
                .then(|| format!("{} spent time in breakouts", in_breakouts(&report)))
        });
        match how {
            None => break report,
            Some(how) if Instant::now() > deadline => panic!("the report differs: {how}"),
            Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };

    let gaps = report["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "one outage: {gaps:?}");
    let gap_ms = gaps[0][1].as_i64().unwrap() - gaps[0][0].as_i64().unwrap();
    // From the last heartbeat (every 2 s) or input before the kill to the rebuild.
    assert!(
        gap_ms > 0 && gap_ms <= outage.as_millis() as i64 + 3_000,
        "gap {gap_ms} ms for an outage of {outage:?}"
    );
    let people = report["attendance"].as_array().unwrap();
    assert_eq!(people.len(), size, "everyone who came is in the report");
    let end = gaps[0][1].as_i64().unwrap().max(
        people
            .iter()
            .map(|p| p["first_join"].as_i64().unwrap())
            .max()
            .unwrap(),
    );
    let mut in_breakouts = 0;
    for p in people {
        assert_eq!(p["stays"], 1, "the outage split a stay: {p}");
        assert!(
            p["last_leave"].is_null(),
            "the outage counted as leaving: {p}"
        );
        let span = report_end(&report).max(end) - p["first_join"].as_i64().unwrap();
        let present = p["seconds_present"].as_i64().unwrap() * 1000;
        assert!(
            present <= span - gap_ms + 1000,
            "the gap counted as present: {p}"
        );
        if p["seconds_in_breakouts"].as_i64().unwrap() > 0 {
            in_breakouts += 1;
        }
    }
    assert!(
        in_breakouts >= (size - 1) * 9 / 10,
        "{in_breakouts} spent time in breakouts"
    );
    eprintln!(
        "{size} attendees: outage {outage:?}, gap {gap_ms} ms, {} chat messages, {} questions",
        saw.chat.len(),
        saw.questions.len()
    );
}

/// The latest time the report's attendance could run to: its last gap or leave.
fn report_end(report: &Value) -> i64 {
    let gaps = report["gaps"].as_array().unwrap();
    let last_gap = gaps
        .iter()
        .map(|g| g[1].as_i64().unwrap())
        .max()
        .unwrap_or(0);
    let last_leave = report["attendance"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["last_leave"].as_i64())
        .max()
        .unwrap_or(0);
    last_gap.max(last_leave).max(crate::record_now())
}

fn record_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_killed_in_a_cluster_the_report_is_the_same_from_every_node() {
    use cluster_support::crowd::{traffic, wait_for, Crowd, Plan};
    let size = std::env::var("CONVENE_RECORD_CLUSTER_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60usize)
        .max(12);
    let pg = cluster_support::postgres::Postgres::start().await;
    let url = pg.url();
    let env = [("CONVENE_STORE_URL", url.as_str())];
    let mut cluster = cluster_support::Cluster::start_with(3, &env).await;
    let crowd = Crowd::join(&cluster, "forum", size).await;
    let handles = crowd.handles();
    let host = handles[0].clone();
    let acked = |rid: String| {
        let host = host.clone();
        async move {
            wait_for(scaled(10, size), "the host's command", || {
                host.ack_of(&rid).is_some()
            })
            .await;
            host.ack_of(&rid).flatten()
        }
    };
    let poll_id = acked(host.send(Command::LaunchPoll {
        question: "Next strand?".into(),
        options: vec!["literacy".into(), "math".into(), "science".into()],
        multiple: false,
        live_results: true,
    }))
    .await
    .expect("a poll id");
    let vote = |i: usize| {
        handles[i].send(Command::VotePoll {
            poll_id,
            choices: vec![(i % 3) as u32],
        })
    };
    for i in (1..size).step_by(4) {
        vote(i);
    }
    let traffic = traffic(crowd.handles(), Plan::standard(12));
    let before = crowd.acks();
    wait_for(scaled(15, size), "acks before the kill", || {
        crowd.acks() >= before + 20
    })
    .await;

    let owner = cluster.wait_owner("forum", None, scaled(10, size)).await;
    cluster.view.set_up(owner, false);
    cluster.nodes[owner].kill9().await;
    let next = cluster
        .wait_owner("forum", Some(owner), scaled(20, size))
        .await;
    let at_takeover = crowd.acks();
    wait_for(scaled(20, size), "an ack after the takeover", || {
        crowd.acks() > at_takeover
    })
    .await;
    for i in (3..size).step_by(4) {
        vote(i);
    }
    let doomed = acked(host.send(Command::SendChat {
        text: "withdrawn".into(),
    }))
    .await
    .expect("a message id");
    acked(host.send(Command::DeleteChat { message_id: doomed })).await;
    traffic.await.expect("traffic task");
    crowd
        .settle(scaled(25, size))
        .await
        .expect("every command answered");
    let logs = crowd.finish().await;
    let saw = expected(&logs, doomed, 3);

    // The killed node comes back on its port: every node answers from the shared store.
    let dir = fresh_dir("cluster-bin");
    let bin = dir.join("record-cluster-node");
    std::os::unix::fs::symlink(cluster_support::BIN, &bin).expect("link to convene");
    let (id, port) = (cluster.nodes[owner].id.clone(), cluster.nodes[owner].port);
    let redis = cluster.redis.url();
    cluster.nodes[owner] = cluster_support::Node::spawn_with(&bin, &id, port, &redis, &env);
    cluster.nodes[owner].ready().await;

    let http = cluster.nodes[next].http();
    let id = convenings(&http, "forum", "live").await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + scaled(15, size);
    let (report, body) = loop {
        let (status, body) = get(&format!("{http}/api/v1/convenings/{id}/report")).await;
        assert_eq!(status, 200, "{body}");
        let report = json(&body);
        match differs(&report, &saw) {
            None => break (report, body),
            Some(how) if Instant::now() > deadline => panic!("the report differs: {how}"),
            Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let people = report["attendance"].as_array().unwrap();
    assert_eq!(people.len(), size, "everyone is in the report");
    for p in people {
        assert_eq!(p["stays"], 1, "the takeover split a stay: {p}");
        assert!(
            p["last_leave"].is_null(),
            "the takeover counted as leaving: {p}"
        );
    }
    let csv_path = format!("/api/v1/convenings/{id}/report/attendance.csv");
    let (_, csv) = get(&format!("{http}{csv_path}")).await;
    for node in &cluster.nodes {
        let (_, again) = get(&format!("{}/api/v1/convenings/{id}/report", node.http())).await;
        assert_eq!(again, body, "the report from {}", node.id);
        let (_, csv_again) = get(&format!("{}{csv_path}", node.http())).await;
        assert_eq!(csv_again, csv, "the CSV from {}", node.id);
    }
    eprintln!(
        "cluster of 3, {size} attendees, owner {} killed, {} took over: {} chat, {} questions",
        cluster.nodes[owner].id,
        cluster.nodes[next].id,
        saw.chat.len(),
        saw.questions.len()
    );
}
