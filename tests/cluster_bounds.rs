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

/// One test at a time: on a 2-core machine the flood and the stopped node beside the others
/// would test the scheduler (Redis calls timing out) instead of the bounds.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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

/// A client's network to n2 is cut while n2 is stopped with the client's commands in its
/// socket; the client resumes on n1 (the owner) and resends them there; when n2 wakes and
/// reads the dead socket's commands, nobody answers them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_resent_after_a_resume_elsewhere_is_answered_once_when_the_stopped_node_wakes() {
    let cluster = Cluster::start(2).await;
    let (n1, n2) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut host = join_at(&n1.ws(), "host", Role::Host).await;
    assert_eq!(
        cluster
            .wait_owner(ROOM, None, Duration::from_secs(10))
            .await,
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
    // The network between ann and n2 is cut: her old socket is neither read nor closed
    // (a close would reset it, and n2 would lose what it holds).
    let (token, session_id, last_seq) = (ann.token.clone(), ann.session_id.clone(), ann.last_seq);
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
    // n2 reads the dead socket's five commands and records them (or, if Redis timed out
    // across the stop, refuses them to that socket), then ends the old session.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = cluster.metrics(1).await.unwrap_or_default();
        if metrics.contains("convene_sessions") && counter(&metrics, "convene_sessions") == 0 {
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
            "n2 never ended the dead socket's session:\n{}",
            n2.tail.last(30)
        );
    }
    // What n2 recorded from it is now before this probe's input in the room's order.
    let mut probe = join_at(&n2.ws(), "probe", Role::Participant).await;
    probe
        .ok(Command::SendChat {
            text: "probe".into(),
        })
        .await;
    let superseded = counter(
        &cluster.metrics(0).await.unwrap_or_default(),
        "convene_superseded_commands_total",
    );
    eprintln!("the owner dropped {superseded} commands from the superseded socket");
    // Whatever the owner sent ann before a later request's ack has arrived by then.
    let marker = "after-the-wake";
    let after = Command::SendChat {
        text: "after".into(),
    };
    resumed.send_with_id(after, marker).await;
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
    drop(ann);
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

/// Each client sends offers of these sizes at once, then reads their answers: per client,
/// per offer, the error code (or the start of the answer) and message; empty if none came.
/// The deadline grows with the number of offers (each is one Redis round trip or two on
/// a 2-core machine that may be running other builds).
async fn send_offers(clients: &mut [Client], sizes: &[usize]) -> Vec<Vec<(String, String)>> {
    let deadline = Instant::now()
        + common::WAIT
        + Duration::from_millis(20) * (clients.len() * sizes.len()) as u32;
    let floods = clients.iter_mut().map(|client| async move {
        let mut sent = Vec::new();
        for (k, size) in sizes.iter().enumerate() {
            let id = format!("o{k}");
            client.send_with_id(offer(*size), &id).await;
            sent.push(id);
        }
        let mut answers: Vec<(String, String)> = vec![Default::default(); sent.len()];
        while answers.iter().any(|(c, _)| c.is_empty()) && Instant::now() < deadline {
            let Some(message) = client.try_recv(Duration::from_millis(200)).await else {
                continue;
            };
            let Some(k) = answered(&message).and_then(|r| sent.iter().position(|s| s == r)) else {
                continue;
            };
            answers[k] = match message {
                ServerMessage::Error { code, message, .. } => (format!("{code:?}"), message),
                other => (
                    format!("{other:?}").chars().take(20).collect(),
                    String::new(),
                ),
            };
        }
        answers
    });
    futures_util::future::join_all(floods).await
}

/// (client, offer) pairs with no answer.
fn unanswered(codes: &[Vec<String>]) -> Vec<(usize, usize)> {
    codes
        .iter()
        .enumerate()
        .flat_map(|(i, c)| {
            c.iter()
                .enumerate()
                .filter(|(_, c)| c.is_empty())
                .map(move |(k, _)| (i, k))
        })
        .collect()
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
    const INBOX_BYTES: usize = 256 * 1024;
    let _turn = HEAVY.lock().await;
    let redis = common::TestRedis::start().await;
    redis_cmd(&redis.url(), &["CONFIG", "SET", "maxmemory", "64mb"]).await;
    redis_cmd(
        &redis.url(),
        &["CONFIG", "SET", "maxmemory-policy", "noeviction"],
    )
    .await;
    // Each session may send about three 30 KB offers at once: 100 of them send far more
    // than the owner's inbox budget, and the rest of each one's 22 is rate limited.
    let nodes = common::cluster_of(&redis, 2, |c| {
        c.cluster.inbox_bytes = INBOX_BYTES;
        c.limits.rate.bytes.burst = 100_000;
        // The flood's 60 KB offers are over this bound, and its 30 KB ones refill this slowly
        // (the defaults fit a large meeting's SDP).
        c.limits.max_sdp_bytes = 32 * 1024;
        c.limits.rate.bytes.per_second = 65536.0;
    })
    .await;
    let (n1, n2) = (&nodes[0], &nodes[1]);
    let _host = n1.join(ROOM, Role::Host, "host").await;
    let names: Vec<String> = (0..100).map(|i| format!("p{i}")).collect();
    let mut flooders =
        futures_util::future::join_all(names.iter().map(|n| n2.join(ROOM, Role::Presenter, n)))
            .await;
    let sizes: Vec<usize> = (0..22)
        .map(|k| if k < 2 { 60_000 } else { 30_000 })
        .collect();
    let answers = send_offers(&mut flooders, &sizes).await;
    let codes: Vec<Vec<String>> = answers
        .iter()
        .map(|a| a.iter().map(|(code, _)| code.clone()).collect())
        .collect();
    assert_eq!(
        unanswered(&codes),
        Vec::new(),
        "(flooder, offer) never answered"
    );
    let oversized = codes
        .iter()
        .filter(|c| c[..2].iter().all(|c| c == "InvalidArgument"));
    assert_eq!(
        oversized.count(),
        100,
        "60 KB offers are refused: {:?}",
        codes[0]
    );
    let limited = codes
        .iter()
        .flatten()
        .filter(|c| *c == "RateLimited")
        .count();
    assert!(limited > 0, "the flood was rate limited: {:?}", codes[0]);
    eprintln!("first flooder's answers: {:?}", codes[0]);
    let metrics =
        cluster_support::try_http("GET", &format!("{}/metrics", n1.http()), None, &[], "")
            .await
            .map(|(_, _, body)| body)
            .unwrap_or_default();
    eprintln!(
        "relayed replies given up: {}",
        counter(&metrics, "convene_cluster_replies_lost_total")
    );

    for node in ["n1", "n2"] {
        let key = format!("convene:nodes:{node}:inbox");
        let memory =
            int(&redis_cmd(&redis.url(), &["MEMORY", "USAGE", &key, "SAMPLES", "0"]).await);
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
        .expect_event(
            |e| matches!(e, RoomEvent::ChatMessage { message } if message.text == "still here"),
        )
        .await;
}

/// The owner's pub/sub is cut by every large message (Redis closes a subscriber whose
/// output buffer passes 1 KB, as it closes a lagging one at its pub/sub limits), so it reads
/// relayed offers back from its inbox, which a burst fills far past its budget: every
/// relayed offer is still answered, those that did not fit are refused as "behind" (none is
/// dropped unread), no reply is given up, and the inbox stays under its budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_offers_to_an_owner_whose_pubsub_is_cut_and_inbox_full_are_all_answered() {
    const INBOX_BYTES: usize = 128 * 1024;
    let _turn = HEAVY.lock().await;
    let redis = common::TestRedis::start().await;
    let nodes = common::cluster_of(&redis, 2, |c| {
        c.cluster.inbox_bytes = INBOX_BYTES;
        c.limits.rate.bytes.burst = 100_000;
    })
    .await;
    let (n1, n2) = (&nodes[0], &nodes[1]);
    let _host = n1.join(ROOM, Role::Host, "host").await;
    let names: Vec<String> = (0..20).map(|i| format!("p{i}")).collect();
    let mut flooders =
        futures_util::future::join_all(names.iter().map(|n| n2.join(ROOM, Role::Presenter, n)))
            .await;
    let limit = [
        "CONFIG",
        "SET",
        "client-output-buffer-limit",
        "pubsub 1024 1024 0",
    ];
    redis_cmd(&redis.url(), &limit).await;

    // 20 sessions x 4 offers of 20 KB: 1.6 MB for a 128 KiB inbox, none of it by pub/sub.
    let answers = send_offers(&mut flooders, &[20_000; 4]).await;
    let codes: Vec<Vec<String>> = answers
        .iter()
        .map(|a| a.iter().map(|(code, _)| code.clone()).collect())
        .collect();
    assert_eq!(
        unanswered(&codes),
        Vec::new(),
        "(flooder, offer) never answered"
    );
    let behind = answers
        .iter()
        .flatten()
        .filter(|(code, message)| code == "RateLimited" && message.contains("behind"))
        .count();
    eprintln!(
        "{behind} of 80 offers refused as behind; first flooder's: {:?}",
        answers[0]
    );
    assert!(behind > 0, "the owner's inbox filled: {:?}", answers[0]);

    let key = "convene:nodes:n1:inbox";
    let bytes = int(&redis_cmd(&redis.url(), &["GET", &format!("{key}:bytes")]).await);
    assert!(bytes as usize <= INBOX_BYTES, "{key} counts {bytes} bytes");
    let url = format!("{}/metrics", n1.http());
    let (_, _, metrics) = cluster_support::try_http("GET", &url, None, &[], "")
        .await
        .expect("metrics");
    let lost = counter(&metrics, "convene_cluster_replies_lost_total");
    assert_eq!(lost, 0, "relayed replies given up by the owner");
}

/// While the node cannot reach Redis, a join is refused before the upgrade: HTTP 503 with
/// `Retry-After` and a JSON body (never an upgrade whose first frame is an error); once
/// Redis is back, joins work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_while_redis_is_away_gets_503_with_retry_after_before_the_upgrade() {
    let _turn = HEAVY.lock().await;
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
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
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
                if first
                    .into_text()
                    .unwrap_or_default()
                    .contains(r#""type":"welcome""#)
                {
                    break;
                }
            }
        }
        assert!(Instant::now() < deadline, "joins never worked again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The password of the ACL user the Redis tests create.
const NODE_PASSWORD: &str = "n0de-Secret-41";

/// A `redis-server` with `requirepass` for the default user and an ACL user `convene`
/// allowed only Convene's keys, channels and commands (the ACL README.md suggests); with
/// `tls`, TLS only, on a certificate the test's CA signed.
struct AclRedis {
    child: std::process::Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl AclRedis {
    async fn start(tls: bool) -> AclRedis {
        let port = cluster_support::free_port();
        let dir = std::env::temp_dir().join(format!("convene-acl-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmd = std::process::Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--requirepass", "admin-Secret-7"])
            .arg("--user")
            .args(convene_acl())
            .arg("--dir")
            .arg(&dir);
        if tls {
            write_certificates(&dir);
            let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
            cmd.args(["--port", "0", "--tls-port", &port.to_string()])
                .args(["--tls-cert-file", &file("redis.pem")])
                .args(["--tls-key-file", &file("redis-key.pem")])
                .args(["--tls-ca-cert-file", &file("ca.pem")])
                .args(["--tls-auth-clients", "no"]);
        } else {
            cmd.args(["--port", &port.to_string()]);
        }
        let child = cmd
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs");
        let deadline = Instant::now() + common::WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        AclRedis { child, port, dir }
    }

    fn url(&self, scheme: &str, password: &str) -> String {
        format!("{scheme}://convene:{password}@127.0.0.1:{}", self.port)
    }
}

impl Drop for AclRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The ACL rule for Convene's user: its keys and channels, and the commands it sends (and
/// its Lua scripts call).
fn convene_acl() -> Vec<String> {
    let commands = "get set mget del exists incr incrby decrby pexpire hset hmget sadd srem \
        smembers zadd zscore zcard zrange zremrangebyscore expireat xadd xdel xlen xrange xrevrange \
        xtrim publish subscribe unsubscribe evalsha eval script|load";
    let mut rule: Vec<String> = ["convene", "on", &format!(">{NODE_PASSWORD}")]
        .into_iter()
        .chain(["~convene:*", "&convene:*", "-@all", "+@connection"])
        .map(str::to_string)
        .collect();
    rule.extend(commands.split_whitespace().map(|c| format!("+{c}")));
    rule
}

/// A CA (`ca.pem`) and a certificate it signed for 127.0.0.1 (`redis.pem`, `redis-key.pem`).
fn write_certificates(dir: &std::path::Path) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("redis.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("redis-key.pem"), key.serialize_pem()).unwrap();
}

/// A chat sent through `writer` is acknowledged, and reaches `reader`.
async fn chat_crosses(writer: &mut Client, reader: &mut Client, text: &str) {
    writer.ok(Command::SendChat { text: text.into() }).await;
    reader
        .expect_event(|e| matches!(e, RoomEvent::ChatMessage { message } if message.text == text))
        .await;
}

/// Nodes authenticating as an ACL user (`redis://user:password@host`) share rooms: the
/// connection manager, scripts and pub/sub all work under the minimal ACL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_rooms_as_an_acl_user_with_only_conveners_commands() {
    let _turn = HEAVY.lock().await;
    let redis = AclRedis::start(false).await;
    let mut nodes = Vec::new();
    for id in ["n1", "n2"] {
        nodes.push(
            common::TestServer::start_with(|c| {
                c.redis.url = redis.url("redis", NODE_PASSWORD);
                c.cluster.node_id = id.into();
            })
            .await,
        );
    }
    let mut reader = nodes[0].join(ROOM, Role::Host, "reader").await;
    let mut writer = nodes[1].join(ROOM, Role::Participant, "writer").await;
    chat_crosses(&mut writer, &mut reader, "through the ACL").await;
}

/// A node given a wrong password fails to start with a clear error, and prints the
/// password nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_redis_password_fails_clearly_and_is_never_printed() {
    let _turn = HEAVY.lock().await;
    let redis = AclRedis::start(false).await;
    let wrong = "Wr0ng-Passw0rd-93";
    let node = cluster_support::Node::spawn(
        std::path::Path::new(cluster_support::BIN),
        "n1",
        cluster_support::free_port(),
        &redis.url("redis", wrong),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let output = loop {
        let output = node.tail.last(400);
        if output.contains("joining the cluster") {
            break output;
        }
        assert!(Instant::now() < deadline, "no error within 30 s:\n{output}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        !output.contains(wrong),
        "the password was printed:\n{output}"
    );
    assert!(
        output.contains("convene:***@127.0.0.1"),
        "the URL is named, redacted:\n{output}"
    );
    assert!(
        output.to_lowercase().contains("wrongpass") || output.contains("auth"),
        "the error says the credentials were refused:\n{output}"
    );
}

/// `rediss://` with an ACL user: a node trusting the test's CA (`SSL_CERT_FILE`) joins
/// the cluster over TLS, and rooms work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_over_tls_with_rediss_and_an_acl_user() {
    let _turn = HEAVY.lock().await;
    let redis = AclRedis::start(true).await;
    let ca = redis.dir.join("ca.pem").to_string_lossy().into_owned();
    let node = cluster_support::Node::spawn_with(
        std::path::Path::new(cluster_support::BIN),
        "n1",
        cluster_support::free_port(),
        &redis.url("rediss", NODE_PASSWORD),
        &[("SSL_CERT_FILE", &ca)],
    );
    node.ready().await;
    let mut reader = join_at(&node.ws(), "reader", Role::Host).await;
    let mut writer = join_at(&node.ws(), "writer", Role::Participant).await;
    chat_crosses(&mut writer, &mut reader, "over TLS").await;
}
