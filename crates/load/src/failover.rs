//! `convene-load failover`: chat through a cluster, `kill -9` the room's owner node, and time the recovery.
//!
//! Sessions are spread round-robin over the nodes (`--url A,B,C`). One sender on a node that
//! does not own the room sends chat with request ids at `--rate`. After `--before` seconds the
//! tool finds the owner (`GET /api/v1/nodes`, `rooms_owned`) and sends SIGKILL to its process
//! (`--pids`, in `--url` order). Sessions whose socket drops reconnect with `resume` to the
//! next node; the sender does too and resends what was not acknowledged. Reported: kill to the
//! first ack of a command sent after the kill, kill to every dropped session resumed, and the
//! checks that matter: every acknowledged request id reached every receiver exactly once, and
//! each receiver's `seq` only increases (a client sees a subsequence of the room's events, so
//! gaps are normal; a repeat or a step back is not).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use convene_signaling::Role;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::sync::{watch, Semaphore};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;

use super::chat::client::{base_urls, hello, open, Endpoint, Hello, Session, Ws};
use super::chat::frames::{leading_u64, unix_nanos};
use super::chat::samples::{histogram, Errors};
use super::chat::{check_common, print_out, Common, Latency, Target};
use super::sfu::http::http;
use super::LoadError;

/// How long to wait for the room to show up in some node's `rooms_owned`.
const OWNER_LOOKUP: Duration = Duration::from_secs(10);
/// After the sender stops: wait this long at most for the outstanding acks...
const ACK_DRAIN: Duration = Duration::from_secs(10);
/// ...then this long for the last deliveries.
const DELIVERY_DRAIN: Duration = Duration::from_secs(1);
/// Pause after a round of failed reconnects over every node.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

#[derive(clap::Args, Debug, Clone)]
pub struct FailoverArgs {
    #[command(flatten)]
    pub common: Common,
    /// The nodes' process ids, in `--url` order: the room's owner gets SIGKILL.
    #[arg(long, value_delimiter = ',', required = true)]
    pub pids: Vec<u32>,
    /// The API key, for `GET /api/v1/nodes`; defaults to $CONVENE_API_KEY.
    #[arg(long)]
    pub api_key: Option<String>,
    /// Chat messages per second from the sender.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Seconds of sending before the kill.
    #[arg(long, default_value_t = 2.0)]
    pub before: f64,
    /// Seconds of sending after the recovery.
    #[arg(long, default_value_t = 2.0)]
    pub after: f64,
    /// Give up waiting for the recovery after this many seconds.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// Send a command again (same request id) when no reply came for this long; 0: never.
    #[arg(long, default_value_t = 3000)]
    pub resend_after_ms: u64,
}

impl FailoverArgs {
    /// Parses command-line style arguments (without the subcommand), e.g. for tests.
    pub fn from_args<I, T>(args: I) -> Result<FailoverArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString>,
    {
        use clap::{Args, FromArgMatches};
        let command = FailoverArgs::augment_args(clap::Command::new("failover"));
        let matches = command.try_get_matches_from(
            std::iter::once(std::ffi::OsString::from("failover"))
                .chain(args.into_iter().map(Into::into)),
        )?;
        FailoverArgs::from_arg_matches(&matches)
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FailoverReport {
    pub nodes: Vec<String>,
    /// The killed node (index into `nodes`) and its id.
    pub owner: usize,
    pub owner_id: Option<String>,
    /// False when no node listed the room (no cluster): the first node was killed instead.
    pub owner_found: bool,
    pub sender_node: usize,
    pub clients: usize,
    pub connected: u64,
    pub ramp_s: f64,
    /// Chat commands sent, first sends only.
    pub sent: u64,
    /// Commands sent again after a reconnect or an `unavailable` error.
    pub resent: u64,
    /// Commands sent again because no reply came within `--resend-after-ms`.
    pub resent_unanswered: u64,
    pub acked: u64,
    /// Commands never acknowledged by the end.
    pub unacked: u64,
    /// Kill to the first ack of a command sent after the kill.
    pub first_ack_ms: Option<f64>,
    /// Sessions on the killed node when it died.
    pub dropped: u64,
    /// Of those: got `resumed` on a survivor.
    pub resumed: u64,
    /// Got a fresh `welcome` instead (resume refused).
    pub fresh: u64,
    /// Could not reconnect before the timeout.
    pub failed: u64,
    /// Kill to the last dropped session back (resumed or fresh); absent if any failed.
    pub all_resumed_ms: Option<f64>,
    /// Per dropped session, from its socket closing to its `resumed`.
    pub resume_latency: Latency,
    /// Receivers whose stream is checked (connected at the end and never given a fresh welcome).
    pub receivers_checked: u64,
    /// (receiver, acknowledged request) pairs the receiver never saw.
    pub lost_acked: u64,
    /// Chat messages a receiver saw more than once (the same request id).
    pub duplicates: u64,
    /// Events whose `seq` was not above the previous one the receiver saw (repeats, steps back).
    pub seq_regressions: u64,
    pub errors: u64,
    pub error_samples: Vec<String>,
}

pub async fn run(args: FailoverArgs) -> Result<(), LoadError> {
    let report = failover(&args).await?;
    if args.common.json {
        print_out(&serde_json::to_string(&report).expect("reports serialise"));
    } else {
        print_out(&text(&report));
    }
    if report.acked == 0 {
        return Err(LoadError::Setup("no chat command was acknowledged".into()));
    }
    Ok(())
}

// --- Receivers ---------------------------------------------------------------------

struct Shared {
    ep: Endpoint,
    gate: Semaphore,
    stop: watch::Receiver<bool>,
    /// The moment of the kill, once it happened.
    killed: Mutex<Option<Instant>>,
    /// The first ack of a command sent after the kill.
    first_ack: Mutex<Option<Instant>>,
    /// Set at the kill: sessions that drop from now on count as dropped by it.
    armed: AtomicBool,
    connected: AtomicU64,
    settled: AtomicU64,
    dropped: AtomicU64,
    /// Dropped sessions that are back, or gave up.
    back: AtomicU64,
    /// Reconnects give up at this instant (the kill plus `--timeout`).
    deadline: Mutex<Option<Instant>>,
    errors: Errors,
}

/// What one receiver saw, handed back when it stops.
#[derive(Default)]
struct Seen {
    online: bool,
    fresh: bool,
    dropped: bool,
    resumed: bool,
    failed: bool,
    /// When it came back, and how long its own reconnect took.
    back_at: Option<Instant>,
    reconnect: Option<Duration>,
    regressions: u64,
    /// Request number -> times seen.
    requests: HashMap<u64, u32>,
}

/// The `r=<n>` request number in a relayed chat message.
fn request_number(text: &str) -> Option<u64> {
    const KEY: &str = "\"text\":\"t=";
    let rest = &text[text.find(KEY)? + KEY.len()..];
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    leading_u64(rest.strip_prefix(" r=")?)
}

/// Reconnects with resume, trying each node after `from` in turn until one answers or time runs out.
async fn reconnect(
    shared: &Shared,
    from: usize,
    who: &str,
    role: Role,
    session: &Session,
) -> Option<(Ws, Session, Hello, usize)> {
    let n = shared.ep.nodes();
    let limit = shared
        .deadline
        .lock()
        .expect("deadline lock")
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(30));
    let mut last = String::new();
    for k in 1.. {
        let node = (from + k) % n;
        let mut next = session.clone();
        match open(&shared.ep.url(node, who, role, Some(session))).await {
            Ok(mut ws) => match hello(&mut ws, Target::Convene, &mut next).await {
                Ok(h) => return Some((ws, next, h, node)),
                Err(error) => last = error,
            },
            Err(error) => last = error,
        }
        if Instant::now() >= limit {
            break;
        }
        if k % n == 0 {
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
    }
    shared.errors.add(format!("{who}: reconnect: {last}"));
    None
}

async fn receiver(shared: Arc<Shared>, i: usize) -> Seen {
    let who = format!("c{i}");
    let mut node = shared.ep.node_of(i);
    let mut seen = Seen::default();
    let opened = {
        let _permit = shared.gate.acquire().await;
        let mut session = Session::default();
        match open(&shared.ep.url(node, &who, Role::Participant, None)).await {
            Ok(mut ws) => hello(&mut ws, Target::Convene, &mut session)
                .await
                .map(|_| (ws, session)),
            Err(error) => Err(error),
        }
    };
    shared.settled.fetch_add(1, Ordering::Relaxed);
    let (mut ws, mut session) = match opened {
        Ok(x) => x,
        Err(error) => {
            shared.errors.add(format!("{who}: {error}"));
            return seen;
        }
    };
    shared.connected.fetch_add(1, Ordering::Relaxed);
    seen.online = true;
    let mut stop = shared.stop.clone();
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            next = ws.next() => {
                let text = match next {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                        let dropped_at = Instant::now();
                        seen.online = false;
                        shared.connected.fetch_sub(1, Ordering::Relaxed);
                        if *stop.borrow() {
                            break;
                        }
                        let counted = shared.armed.load(Ordering::Relaxed) && !seen.dropped;
                        if counted {
                            seen.dropped = true;
                            shared.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                        match reconnect(&shared, node, &who, Role::Participant, &session).await {
                            Some((new_ws, new_session, h, new_node)) => {
                                ws = new_ws;
                                node = new_node;
                                // A fresh welcome restarts the stream: what came before it is not checked.
                                if h == Hello::Welcome {
                                    seen.fresh = true;
                                } else if counted {
                                    seen.resumed = true;
                                }
                                session = new_session;
                                seen.online = true;
                                seen.back_at = Some(Instant::now());
                                seen.reconnect = Some(dropped_at.elapsed());
                                shared.connected.fetch_add(1, Ordering::Relaxed);
                                if counted {
                                    shared.back.fetch_add(1, Ordering::Relaxed);
                                }
                                continue;
                            }
                            None => {
                                seen.failed = true;
                                if counted {
                                    shared.back.fetch_add(1, Ordering::Relaxed);
                                }
                                break;
                            }
                        }
                    }
                    Some(Ok(_)) => continue,
                };
                let text = text.as_str();
                if let Some(rest) = text.strip_prefix(r#"{"type":"event","seq":"#) {
                    if let Some(seq) = leading_u64(rest) {
                        if seq <= session.last_seq {
                            seen.regressions += 1;
                        }
                        session.last_seq = session.last_seq.max(seq);
                    }
                    if let Some(r) = request_number(text) {
                        *seen.requests.entry(r).or_default() += 1;
                    }
                } else if text.starts_with(r#"{"type":"error""#) {
                    shared.errors.add(format!("{who}: {text}"));
                }
            }
        }
    }
    if seen.online {
        let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    }
    seen
}

// --- The sender ------------------------------------------------------------------

#[derive(Default)]
struct Sent {
    sent: u64,
    resent: u64,
    resent_unanswered: u64,
    acked: Vec<u64>,
    unacked: u64,
}

/// A chat command with request id `r<n>` whose text carries the number too.
fn command(n: u64) -> String {
    format!(
        r#"{{"type":"send_chat","request_id":"r{n}","text":"t={} r={n}"}}"#,
        unix_nanos()
    )
}

/// The `r<n>` in an `ack` or `error` reply.
fn reply_number(text: &str) -> Option<u64> {
    const KEY: &str = r#""request_id":"r"#;
    leading_u64(&text[text.find(KEY)? + KEY.len()..])
}

/// The sender: chat at `rate` until `stop_sending`, then waits for outstanding acks (bounded).
async fn sender(
    shared: Arc<Shared>,
    node: usize,
    rate: f64,
    resend_after: Option<Duration>,
    mut stop_sending: watch::Receiver<bool>,
) -> Sent {
    let who = "sender";
    let mut out = Sent::default();
    let mut session = Session::default();
    let mut ws = match open(&shared.ep.url(node, who, Role::Participant, None)).await {
        Ok(mut ws) => match hello(&mut ws, Target::Convene, &mut session).await {
            Ok(_) => ws,
            Err(error) => {
                shared.errors.add(format!("{who}: {error}"));
                return out;
            }
        },
        Err(error) => {
            shared.errors.add(format!("{who}: {error}"));
            return out;
        }
    };
    let mut node = node;
    // Request number -> (first sent after the kill, last sent).
    let mut pending: BTreeMap<u64, (bool, Instant)> = BTreeMap::new();
    let mut unanswered = tokio::time::interval(Duration::from_millis(250));
    unanswered.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Refused as `unavailable` or `rate_limited`: sent again at `retry_at`.
    let mut retry: Vec<u64> = Vec::new();
    let mut retry_at: Option<Instant> = None;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut sending = true;
    let mut drain_until = None;
    let mut next = 0u64;
    loop {
        if !sending && pending.is_empty() {
            break;
        }
        let drain_sleep = async {
            match drain_until {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let retry_sleep = async {
            match retry_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = stop_sending.changed(), if sending => {
                sending = false;
                drain_until = Some(Instant::now() + ACK_DRAIN);
            }
            _ = drain_sleep => break,
            _ = retry_sleep => {
                retry_at = None;
                for n in std::mem::take(&mut retry) {
                    if pending.contains_key(&n) && ws.send(Message::Text(command(n).into())).await.is_ok() {
                        out.resent += 1;
                    }
                }
            }
            _ = unanswered.tick(), if resend_after.is_some() => {
                let limit = resend_after.unwrap_or_default();
                let now = Instant::now();
                for (&n, (_, last)) in pending.iter_mut() {
                    if now.duration_since(*last) >= limit && !retry.contains(&n) {
                        *last = now;
                        if ws.send(Message::Text(command(n).into())).await.is_ok() {
                            out.resent_unanswered += 1;
                        }
                    }
                }
            }
            _ = ticker.tick(), if sending => {
                next += 1;
                let after_kill = shared.killed.lock().expect("kill lock").is_some();
                pending.insert(next, (after_kill, Instant::now()));
                if ws.send(Message::Text(command(next).into())).await.is_ok() {
                    out.sent += 1;
                }
            }
            msg = ws.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => {
                        match reconnect(&shared, node, who, Role::Participant, &session).await {
                            Some((new_ws, new_session, _, new_node)) => {
                                ws = new_ws;
                                session = new_session;
                                node = new_node;
                                // Whatever was not acknowledged may be lost: send it again, same ids.
                                for &n in pending.keys() {
                                    if ws.send(Message::Text(command(n).into())).await.is_ok() {
                                        out.resent += 1;
                                    }
                                }
                                continue;
                            }
                            None => break,
                        }
                    }
                };
                let text = text.as_str();
                if let Some(rest) = text.strip_prefix(r#"{"type":"event","seq":"#) {
                    if let Some(seq) = leading_u64(rest) {
                        session.last_seq = session.last_seq.max(seq);
                    }
                } else if text.starts_with(r#"{"type":"ack""#) {
                    if let Some(n) = reply_number(text) {
                        if let Some((after_kill, _)) = pending.remove(&n) {
                            out.acked.push(n);
                            if after_kill {
                                shared.first_ack.lock().expect("ack lock").get_or_insert_with(Instant::now);
                            }
                        }
                    }
                } else if text.starts_with(r#"{"type":"error""#) {
                    let n = reply_number(text);
                    let retry_again = [r#""code":"unavailable""#, r#""code":"rate_limited""#]
                        .iter()
                        .any(|code| text.contains(code));
                    if let (true, Some(n)) = (retry_again, n) {
                        retry.push(n);
                        // Not applied (the cluster is failing over, or too fast): send it again later.
                        let wait = text
                            .find(r#""retry_after_ms":"#)
                            .and_then(|at| leading_u64(&text[at + r#""retry_after_ms":"#.len()..]))
                            .unwrap_or(500);
                        retry_at.get_or_insert(Instant::now() + Duration::from_millis(wait.min(5000)));
                    } else {
                        if let Some(n) = n {
                            pending.remove(&n);
                        }
                        shared.errors.add(format!("{who}: {text}"));
                    }
                }
            }
        }
    }
    out.unacked = pending.len() as u64;
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    out
}

// --- The owner -------------------------------------------------------------------

/// `host:port` of a `ws://` or `http://` base URL.
fn host_of(base: &str) -> &str {
    base.split_once("://")
        .map_or(base, |(_, rest)| rest)
        .trim_end_matches('/')
}

/// The node (index into `bases`) whose `rooms_owned` lists `room`, and its id.
async fn find_owner(bases: &[String], api_key: &str, room: &str) -> Option<(usize, String)> {
    #[derive(serde::Deserialize)]
    struct Nodes {
        nodes: Vec<Node>,
    }
    #[derive(serde::Deserialize)]
    struct Node {
        id: String,
        http: String,
        #[serde(default)]
        rooms_owned: Vec<String>,
    }
    let deadline = Instant::now() + OWNER_LOOKUP;
    let auth = format!("Bearer {api_key}");
    loop {
        for base in bases {
            let Ok(resp) = http(
                host_of(base),
                "GET",
                "/api/v1/nodes",
                &[("Authorization", &auth)],
                "",
            )
            .await
            else {
                continue;
            };
            match resp.status {
                200 => {}
                // No cluster API on this server, or a wrong key: waiting will not help.
                401 | 403 | 404 => {
                    tracing::warn!(status = resp.status, "GET /api/v1/nodes refused");
                    return None;
                }
                _ => continue,
            }
            let Ok(nodes) = serde_json::from_str::<Nodes>(&resp.body) else {
                continue;
            };
            for node in nodes.nodes {
                if node.rooms_owned.iter().any(|r| r == room) {
                    let at = bases
                        .iter()
                        .position(|b| host_of(b) == host_of(&node.http))?;
                    return Some((at, node.id));
                }
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn kill(pid: u32) -> Result<(), LoadError> {
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()?;
    if !status.success() {
        return Err(LoadError::Setup(format!("kill -9 {pid} failed: {status}")));
    }
    Ok(())
}

// --- The run ---------------------------------------------------------------------

pub async fn failover(args: &FailoverArgs) -> Result<FailoverReport, LoadError> {
    let common = &args.common;
    check_common(common)?;
    let ep = Endpoint::new(common, Target::Convene)?;
    let bases = base_urls(&common.url)?;
    if bases.len() < 2 {
        return Err(LoadError::Setup(
            "--url needs at least two nodes (comma separated)".into(),
        ));
    }
    if args.pids.len() != bases.len() {
        return Err(LoadError::Setup(format!(
            "--pids has {} process ids for {} URLs",
            args.pids.len(),
            bases.len()
        )));
    }
    let positive = |x: f64| x > 0.0 && x.is_finite();
    let not_negative = |x: f64| x == 0.0 || positive(x);
    if !positive(args.rate)
        || !positive(args.timeout)
        || !not_negative(args.before)
        || !not_negative(args.after)
    {
        return Err(LoadError::Setup(
            "--rate and --timeout must be positive, --before and --after not negative".into(),
        ));
    }
    let api_key = args
        .api_key
        .clone()
        .or_else(|| std::env::var("CONVENE_API_KEY").ok())
        .unwrap_or_default();

    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        ep,
        gate: Semaphore::new(common.connect_concurrency),
        stop: stop_rx,
        killed: Mutex::new(None),
        first_ack: Mutex::new(None),
        armed: AtomicBool::new(false),
        connected: AtomicU64::new(0),
        settled: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        back: AtomicU64::new(0),
        deadline: Mutex::new(None),
        errors: Errors::default(),
    });
    let n = common.clients;
    let ramp_started = Instant::now();
    let per_sec = if common.ramp_per_sec > 0.0 {
        common.ramp_per_sec
    } else {
        f64::INFINITY
    };
    let mut receivers = Vec::with_capacity(n);
    for i in 0..n {
        let due = ramp_started + Duration::from_secs_f64(i as f64 / per_sec);
        tokio::time::sleep_until(due).await;
        receivers.push(tokio::spawn(receiver(shared.clone(), i)));
    }
    let settle_limit = Instant::now() + Duration::from_secs(60);
    while shared.settled.load(Ordering::Relaxed) < n as u64 && Instant::now() < settle_limit {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ramp_s = ramp_started.elapsed().as_secs_f64();
    let connected = shared.connected.load(Ordering::Relaxed);
    if connected == 0 {
        let _ = stop_tx.send(true);
        return Err(LoadError::Setup(format!(
            "no session connected: {:?}",
            shared.errors.samples()
        )));
    }
    tokio::time::sleep(Duration::from_millis(common.settle_ms)).await;

    let found = find_owner(&bases, &api_key, &common.room).await;
    let (owner, owner_id) = match &found {
        Some((at, id)) => (*at, Some(id.clone())),
        None => {
            tracing::warn!("no node lists the room in rooms_owned: killing the first node");
            (0, None)
        }
    };
    let sender_node = (owner + 1) % bases.len();
    let (send_tx, send_rx) = watch::channel(false);
    let resend_after =
        (args.resend_after_ms > 0).then(|| Duration::from_millis(args.resend_after_ms));
    let sending = tokio::spawn(sender(
        shared.clone(),
        sender_node,
        args.rate,
        resend_after,
        send_rx,
    ));
    tokio::time::sleep(Duration::from_secs_f64(args.before)).await;

    // The kill: from here, sessions that drop count as dropped by it.
    shared.armed.store(true, Ordering::Relaxed);
    let killed_at = Instant::now();
    *shared.deadline.lock().expect("deadline lock") =
        Some(killed_at + Duration::from_secs_f64(args.timeout));
    *shared.killed.lock().expect("kill lock") = Some(killed_at);
    kill(args.pids[owner])?;

    // Recovered: every dropped session is back and a command sent after the kill was acked.
    let deadline = killed_at + Duration::from_secs_f64(args.timeout);
    // Sockets of the killed node close at once (the kernel resets them): give them a moment to notice.
    tokio::time::sleep(Duration::from_millis(200)).await;
    while Instant::now() < deadline {
        let dropped = shared.dropped.load(Ordering::Relaxed);
        let acked = shared.first_ack.lock().expect("ack lock").is_some();
        if acked && shared.back.load(Ordering::Relaxed) >= dropped {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_secs_f64(args.after)).await;
    let _ = send_tx.send(true);
    let sent = sending.await.unwrap_or_default();
    tokio::time::sleep(DELIVERY_DRAIN).await;
    let _ = stop_tx.send(true);
    let mut seen = Vec::with_capacity(n);
    for r in receivers {
        if let Ok(s) = r.await {
            seen.push(s);
        }
    }

    let mut report = FailoverReport {
        nodes: bases,
        owner,
        owner_id,
        owner_found: found.is_some(),
        sender_node,
        clients: n,
        connected,
        ramp_s,
        sent: sent.sent,
        resent: sent.resent,
        resent_unanswered: sent.resent_unanswered,
        acked: sent.acked.len() as u64,
        unacked: sent.unacked,
        first_ack_ms: shared
            .first_ack
            .lock()
            .expect("ack lock")
            .map(|t| t.duration_since(killed_at).as_secs_f64() * 1000.0),
        ..Default::default()
    };
    let mut hist = histogram();
    let mut last_back = None::<Instant>;
    for s in &seen {
        if s.dropped {
            report.dropped += 1;
            if s.failed {
                report.failed += 1;
            } else if s.fresh {
                report.fresh += 1;
            } else if s.resumed {
                report.resumed += 1;
            }
            if s.resumed && !s.fresh {
                if let Some(d) = s.reconnect {
                    hist.saturating_record((d.as_micros() as u64).max(1));
                }
            }
            last_back = last_back.max(s.back_at);
        }
        if !s.online || s.fresh {
            continue;
        }
        report.receivers_checked += 1;
        report.seq_regressions += s.regressions;
        report.lost_acked += sent
            .acked
            .iter()
            .filter(|n| !s.requests.contains_key(n))
            .count() as u64;
        report.duplicates += s
            .requests
            .values()
            .map(|&k| u64::from(k.saturating_sub(1)))
            .sum::<u64>();
    }
    report.resume_latency = Latency::of(&hist);
    if report.failed == 0 {
        report.all_resumed_ms =
            Some(last_back.map_or(0.0, |t| t.duration_since(killed_at).as_secs_f64() * 1000.0));
    }
    report.errors = shared.errors.count();
    report.error_samples = shared.errors.samples();
    Ok(report)
}

fn text(r: &FailoverReport) -> String {
    use std::fmt::Write;
    let ms = |x: Option<f64>| x.map_or("never".to_string(), |v| format!("{v:.0} ms"));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "failover: {} nodes, {} of {} sessions connected in {:.1}s",
        r.nodes.len(),
        r.connected,
        r.clients,
        r.ramp_s
    );
    let _ = writeln!(
        out,
        "killed        node {} ({}){}; sender on node {}",
        r.owner,
        r.nodes[r.owner],
        match (&r.owner_id, r.owner_found) {
            (Some(id), true) => format!(", id {id}, the room's owner"),
            _ => ", NOT known to own the room (no /api/v1/nodes answer)".to_string(),
        },
        r.sender_node
    );
    let _ = writeln!(out, "first ack     {} after the kill", ms(r.first_ack_ms));
    let _ = writeln!(
        out,
        "dropped       {}: {} resumed, {} fresh welcome, {} failed; all back {} after the kill",
        r.dropped,
        r.resumed,
        r.fresh,
        r.failed,
        ms(r.all_resumed_ms)
    );
    let l = &r.resume_latency;
    let _ = writeln!(
        out,
        "per session   drop to resumed p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms",
        l.p50_ms, l.p99_ms, l.max_ms
    );
    let _ = writeln!(
        out,
        "chat          {} sent, {} resent (and {} after no reply), {} acked, {} never acked",
        r.sent, r.resent, r.resent_unanswered, r.acked, r.unacked
    );
    let _ = writeln!(
        out,
        "checked       {} receivers: {} acked messages lost, {} duplicates, {} seq regressions",
        r.receivers_checked, r.lost_acked, r.duplicates, r.seq_regressions
    );
    let _ = writeln!(out, "errors        {}", r.errors);
    for e in &r.error_samples {
        let _ = writeln!(out, "  {e}");
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_read_back() {
        let event = r#"{"type":"event","seq":9,"event":{"type":"chat_message","message":{"id":1,"text":"t=123 r=42","at":1}}}"#;
        assert_eq!(request_number(event), Some(42));
        assert_eq!(request_number(r#"{"text":"t=123 n=1"}"#), None);
        assert_eq!(
            reply_number(r#"{"type":"ack","request_id":"r17","id":3}"#),
            Some(17)
        );
        assert_eq!(reply_number(r#"{"type":"ack","request_id":"q17"}"#), None);
        let cmd = command(5);
        assert_eq!(reply_number(&cmd), Some(5));
        assert!(cmd.contains(" r=5\""));
    }

    #[test]
    fn hosts_are_matched_across_schemes() {
        assert_eq!(host_of("ws://127.0.0.1:9"), "127.0.0.1:9");
        assert_eq!(host_of("http://127.0.0.1:9/"), "127.0.0.1:9");
    }

    #[test]
    fn pids_must_match_urls() {
        let a = FailoverArgs::from_args([
            "--url",
            "ws://127.0.0.1:1,ws://127.0.0.1:2",
            "--pids",
            "1,2",
        ])
        .unwrap();
        assert_eq!(a.pids, [1, 2]);
        assert!(FailoverArgs::from_args(["--url", "ws://127.0.0.1:1"]).is_err());
    }
}
