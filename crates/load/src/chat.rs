//! `convene-load chat` and `convene-load votes`: many WebSocket sessions in one room, with latency histograms.
//!
//! Layout:
//! - [`ChatArgs`] / [`chat`]: N sessions, K of them sending chat at M msgs/s in total. Each message
//!   carries its send time (`t=<unix nanos>`); every receiver (same process, same clock) records
//!   the delivery latency. `--scenario idle` only holds the sessions (server RSS per session),
//!   `--scenario resume` drops them all without close frames and times their concurrent resume.
//! - `--target socketio` speaks Engine.IO v4 / Socket.IO 4 over the same WebSocket client, for the
//!   hub in `tests/peers/socketio-hub.js`, so both servers are measured by one tool in one run.
//! - [`VotesArgs`] / [`votes`]: N sessions upvote the same open questions; acks, time until all
//!   acked, and the exact final counts an observer sees.
//! - [`Probe`]: CPU (utime + stime) and RSS of this process and, with `--server-pid`, the server's.
//!
//! The receive path does not parse JSON: it reads the `seq` prefix and the `"text":"t=` stamp.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::OsString;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use convene_signaling::{ClientMessage, Command, QaMode, Role, RoomEvent, ServerMessage};
use futures_util::{FutureExt, SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::redis_info::{self, RedisFigures, RedisSnapshot};
use super::LoadError;
use convene::auth::TokenKeys;

/// A handshake (TCP, upgrade, first message) that takes longer than this has failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Attempts per session before it counts as failed.
const CONNECT_ATTEMPTS: u32 = 3;
/// Reconnects per session during a run before it gives up.
const MAX_RECONNECTS: u32 = 5;
/// After sending stops, wait at most this long for deliveries to arrive...
const DRAIN_MAX: Duration = Duration::from_secs(15);
/// ...and give up earlier when none arrived for this long.
const DRAIN_STALL: Duration = Duration::from_secs(3);
/// Latency samples a session keeps before merging them into the shared histogram.
const BATCH: usize = 256;
/// Counter shards, so sessions on different threads do not share a cache line.
const SHARDS: usize = 16;
/// Upvotes a voter sends at once; the rest follow at `VOTE_PACE` (the server's qa bucket is 20, 5/s).
const VOTE_BURST: usize = 18;
const VOTE_PACE: Duration = Duration::from_millis(250);
/// Error texts kept for the report.
const ERROR_SAMPLES: usize = 5;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Convene's `/ws` protocol, with minted access tokens.
    Convene,
    /// Socket.IO 4 (Engine.IO v4 over WebSocket), for `tests/peers/socketio-hub.js`.
    Socketio,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// K senders, M msgs/s in total, delivery latency at every receiver.
    Chat,
    /// Connect and hold N sessions: RSS per session (needs --server-pid).
    Idle,
    /// Connect N, drop them all without close frames, resume them all at once (Convene only).
    Resume,
}

/// Options every hub scenario shares.
#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// The server's base URL, e.g. ws://127.0.0.1:8080 (http:// works too); several, comma
    /// separated, spread the sessions round-robin over the nodes of a cluster.
    #[arg(long, default_value = "ws://127.0.0.1:8080")]
    pub url: String,
    /// The room every session joins.
    #[arg(long, default_value = "load")]
    pub room: String,
    /// Sessions to open.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// New connections per second while ramping up.
    #[arg(long, default_value_t = 1000.0)]
    pub ramp_per_sec: f64,
    /// Handshakes in flight at once while ramping up.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// The server's HS256 secret, to mint tokens; defaults to $CONVENE_JWT_SECRET.
    #[arg(long)]
    pub secret: Option<String>,
    /// Pause after everyone connected, before measuring, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub settle_ms: u64,
    /// The server's process id: report its CPU per delivery and its RSS (read from /proc).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ChatArgs {
    #[command(flatten)]
    pub common: Common,
    /// Sessions that send chat (the first K).
    #[arg(long, default_value_t = 10)]
    pub senders: usize,
    /// Chat messages per second, all senders together.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Seconds of sending (chat), or of holding (idle).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Pad each chat text to about this many bytes.
    #[arg(long, default_value_t = 0)]
    pub size: usize,
    #[arg(long, value_enum, default_value_t = Target::Convene)]
    pub target: Target,
    #[arg(long, value_enum, default_value_t = Scenario::Chat)]
    pub scenario: Scenario,
    /// Resume scenario: wait this long between dropping the sockets and reconnecting.
    #[arg(long, default_value_t = 500)]
    pub resume_pause_ms: u64,
    /// A Redis (host:port or redis://host:port) whose commands and bytes over the window are
    /// reported (INFO stats and commandstats), e.g. the cluster's.
    #[arg(long)]
    pub redis: Option<String>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct VotesArgs {
    #[command(flatten)]
    pub common: Common,
    /// Questions to ask (open Q&A); every client upvotes every one.
    #[arg(long, default_value_t = 5)]
    pub questions: usize,
    /// Questions one asker may ask (the server's `questions_per_minute`); more askers join as needed.
    #[arg(long, default_value_t = 5)]
    pub questions_per_asker: usize,
    /// Give up waiting for acks after this many seconds.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
}

impl ChatArgs {
    /// Parses command-line style arguments (without the subcommand), e.g. for in-process tests.
    pub fn from_args<I, T>(args: I) -> Result<ChatArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        parse_flattened("chat", args)
    }
}

impl VotesArgs {
    /// Parses command-line style arguments (without the subcommand), e.g. for in-process tests.
    pub fn from_args<I, T>(args: I) -> Result<VotesArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        parse_flattened("votes", args)
    }
}

/// Parses `args` as if they followed the subcommand `name`.
fn parse_flattened<A, I, T>(name: &'static str, args: I) -> Result<A, clap::Error>
where
    A: clap::Args + clap::FromArgMatches,
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let command = A::augment_args(clap::Command::new(name));
    let matches = command.try_get_matches_from(
        std::iter::once(OsString::from(name)).chain(args.into_iter().map(Into::into)),
    )?;
    A::from_arg_matches(&matches)
}

// --- Reports -------------------------------------------------------------------

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub(crate) fn of(hist: &Histogram<u64>) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            samples: hist.len(),
            p50_ms: ms(hist.value_at_quantile(0.50)),
            p90_ms: ms(hist.value_at_quantile(0.90)),
            p99_ms: ms(hist.value_at_quantile(0.99)),
            max_ms: ms(hist.max()),
        }
    }
}

/// CPU and memory of one process over the measured window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Usage {
    pub pid: u32,
    /// utime + stime over the window, in seconds.
    pub cpu_s: f64,
    /// Of one core: 100 is one core busy for the whole window.
    pub cpu_pct: f64,
    /// CPU nanoseconds per delivered message (chat) or per acked vote (votes).
    pub cpu_ns_per_op: Option<f64>,
    pub rss_mib: f64,
    pub rss_before_mib: f64,
}

/// The load tool's own CPU: when it is saturated, the figures measure the tool, not the server.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ToolUsage {
    #[serde(flatten)]
    pub usage: Usage,
    /// Runtime worker threads (TOKIO_WORKER_THREADS or the cores).
    pub threads: usize,
    /// cpu_pct / threads.
    pub per_thread_pct: f64,
    /// Above 90% of one core per runtime thread.
    pub saturated: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct IdleFigures {
    pub sessions: u64,
    pub server_rss_delta_bytes: Option<i64>,
    pub server_bytes_per_session: Option<f64>,
    pub tool_bytes_per_session: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ResumeFigures {
    pub sessions: u64,
    /// Got `resumed`.
    pub resumed: u64,
    /// Got a fresh `welcome` instead (unknown session or gap too old).
    pub fresh: u64,
    pub failed: u64,
    /// From the first reconnect attempt until the last `resumed` arrived.
    pub all_resumed_ms: f64,
    /// Per session, from its reconnect attempt to its `resumed`.
    pub latency: Latency,
}

/// Delivery latency split by where the receiver sits: on the sender's node, or on another.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeSplit {
    /// The nodes' base URLs, in `--url` order; session `i` is on node `i % nodes`.
    pub urls: Vec<String>,
    /// Sessions held on each node when the window ended.
    pub connected_per_node: Vec<u64>,
    /// Receiver on the sender's node.
    pub same_node: Latency,
    /// Receiver on another node: the event crossed the cluster.
    pub cross_node: Latency,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatReport {
    pub target: Target,
    pub scenario: Scenario,
    pub clients: usize,
    pub senders: usize,
    pub rate: f64,
    pub duration_s: f64,
    /// Sessions connected when the window ended.
    pub connected: u64,
    pub connect_failures: u64,
    /// Time to open every session.
    pub ramp_s: f64,
    pub sent: u64,
    pub sent_per_s: f64,
    /// Deliveries expected: sent x sessions held (everyone receives every message, the sender too).
    pub expected: u64,
    pub delivered: u64,
    pub delivered_per_s: f64,
    /// Sending start to the last delivery.
    pub window_s: f64,
    pub latency: Latency,
    /// With several `--url`s: the latency of same-node and cross-node deliveries.
    pub nodes: Option<NodeSplit>,
    pub errors: u64,
    pub error_samples: Vec<String>,
    pub reconnects: u64,
    pub tool: ToolUsage,
    pub server: Option<Usage>,
    pub idle: Option<IdleFigures>,
    pub resume: Option<ResumeFigures>,
    /// With `--redis`: what Redis did over the window.
    pub redis: Option<RedisFigures>,
}

#[derive(Debug, Clone, Serialize)]
pub struct QuestionFigures {
    pub id: u64,
    /// The last count the observer saw.
    pub votes: u32,
    /// `question_votes` events the observer received for it.
    pub events: u64,
    /// Those events per second of the voting window.
    pub events_per_s: f64,
    /// The most events in any one-second span.
    pub max_events_in_1s: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct VotesReport {
    pub clients: usize,
    pub voters: u64,
    pub questions: usize,
    pub ramp_s: f64,
    pub votes_sent: u64,
    pub votes_acked: u64,
    pub acked_per_s: f64,
    /// Voting start until every vote was answered.
    pub all_acked_ms: f64,
    /// Send to ack, per vote.
    pub ack_latency: Latency,
    /// Voting start until the observer saw every final count.
    pub final_counts_ms: f64,
    /// Every question's final count, as the observer saw it, equals `clients`.
    pub exact: bool,
    pub per_question: Vec<QuestionFigures>,
    pub errors: u64,
    pub error_samples: Vec<String>,
    pub tool: ToolUsage,
    pub server: Option<Usage>,
}

// --- Entry points ------------------------------------------------------------------

pub async fn run_chat(args: ChatArgs) -> Result<(), LoadError> {
    let report = chat(&args).await?;
    if args.common.json {
        print_out(&serde_json::to_string(&report).expect("reports serialise"));
    } else {
        print_out(&chat_text(&report));
    }
    match report.scenario {
        Scenario::Chat if report.delivered == 0 => {
            Err(LoadError::Setup("no chat message was delivered".into()))
        }
        Scenario::Idle if report.connected == 0 => {
            Err(LoadError::Setup("no session connected".into()))
        }
        Scenario::Resume if report.resume.as_ref().is_none_or(|r| r.resumed == 0) => {
            Err(LoadError::Setup("no session resumed".into()))
        }
        _ => Ok(()),
    }
}

pub async fn run_votes(args: VotesArgs) -> Result<(), LoadError> {
    let report = votes(&args).await?;
    if args.common.json {
        print_out(&serde_json::to_string(&report).expect("reports serialise"));
    } else {
        print_out(&votes_text(&report));
    }
    if report.votes_acked == 0 {
        return Err(LoadError::Setup("no vote was acknowledged".into()));
    }
    if !report.exact {
        return Err(LoadError::Setup(format!(
            "final vote counts differ from {} clients",
            report.clients
        )));
    }
    Ok(())
}

pub(crate) fn print_out(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
}

// --- Endpoint and connections ----------------------------------------------------

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Where sessions connect and how they authenticate.
pub(crate) struct Endpoint {
    target: Target,
    /// One per node: session `i` connects to `bases[i % bases.len()]`.
    bases: Vec<String>,
    room: String,
    keys: Option<TokenKeys>,
    /// Distinguishes this run's identities from earlier runs in the same room.
    run: String,
}

impl Endpoint {
    pub(crate) fn new(common: &Common, target: Target) -> Result<Endpoint, LoadError> {
        let bases = base_urls(&common.url)?;
        let keys = match target {
            Target::Convene => {
                let secret = common
                    .secret
                    .clone()
                    .or_else(|| std::env::var("CONVENE_JWT_SECRET").ok())
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| LoadError::Setup("no JWT secret: pass --secret or set CONVENE_JWT_SECRET to the server's".into()))?;
                Some(TokenKeys::new(secret.as_bytes()))
            }
            Target::Socketio => None,
        };
        if common.room.is_empty()
            || !common
                .room
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(LoadError::Setup(
                "--room must be letters, digits, '-', '_' or '.'".into(),
            ));
        }
        Ok(Endpoint {
            target,
            bases,
            room: common.room.clone(),
            keys,
            run: format!("{:06x}", rand::random::<u32>() & 0xff_ffff),
        })
    }

    /// How many nodes `--url` named.
    pub(crate) fn nodes(&self) -> usize {
        self.bases.len()
    }

    /// The node session `i` connects to first.
    pub(crate) fn node_of(&self, i: usize) -> usize {
        i % self.bases.len()
    }

    /// The URL for one session on `node`: a freshly minted token for Convene, the Engine.IO
    /// handshake for Socket.IO.
    pub(crate) fn url(
        &self,
        node: usize,
        who: &str,
        role: Role,
        resume: Option<&Session>,
    ) -> String {
        let base = &self.bases[node % self.bases.len()];
        match (self.target, &self.keys) {
            (Target::Convene, Some(keys)) => {
                let identity = format!("load-{}-{who}", self.run);
                let token = keys.mint_for(
                    &self.room,
                    role,
                    &identity,
                    &format!("Load {who}"),
                    BTreeMap::new(),
                    Duration::from_secs(6 * 3600),
                );
                let mut url = format!("{base}/ws?token={token}");
                if let Some(s) = resume {
                    url.push_str(&format!("&resume={}&last_seq={}", s.id, s.last_seq));
                }
                url
            }
            _ => format!(
                "{base}/socket.io/?EIO=4&transport=websocket&room={}&name={who}",
                self.room
            ),
        }
    }
}

/// Every base URL of a comma-separated `--url`.
pub(crate) fn base_urls(urls: &str) -> Result<Vec<String>, LoadError> {
    let bases = urls
        .split(',')
        .filter(|u| !u.trim().is_empty())
        .map(base_url)
        .collect::<Result<Vec<_>, _>>()?;
    if bases.is_empty() {
        return Err(LoadError::Setup("--url is empty".into()));
    }
    Ok(bases)
}

/// `ws://host:port` from what the user typed (`http://`, a trailing `/` or `/ws` are fine).
fn base_url(url: &str) -> Result<String, LoadError> {
    let url = url.trim().trim_end_matches('/');
    let url = url.strip_suffix("/ws").unwrap_or(url);
    let rest = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| LoadError::Setup(format!("--url must start with ws:// or http:// (TLS is not supported by the load tool): {url:?}")))?;
    if rest.is_empty() || rest.contains('/') {
        return Err(LoadError::Setup(format!(
            "--url must be the server's base, like ws://127.0.0.1:8080: {url:?}"
        )));
    }
    Ok(format!("ws://{rest}"))
}

/// What a Convene session needs to resume.
#[derive(Clone, Debug, Default)]
pub(crate) struct Session {
    pub(crate) id: String,
    pub(crate) last_seq: u64,
}

/// The first message of a session.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Hello {
    Welcome,
    Resumed,
    /// Socket.IO: connected to the default namespace.
    Connected,
}

pub(crate) async fn open(url: &str) -> Result<Ws, String> {
    let config = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(16 << 20));
    let connect = tokio_tungstenite::connect_async_with_config(url, Some(config), true);
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Err(_) => Err("connect timed out".into()),
        Ok(Err(error)) => Err(format!("connect: {error}")),
        Ok(Ok((ws, _))) => Ok(ws),
    }
}

/// Reads the first message (Convene) or completes the Socket.IO connect; updates `session`.
pub(crate) async fn hello(
    ws: &mut Ws,
    target: Target,
    session: &mut Session,
) -> Result<Hello, String> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| "no first message in time".to_string())?;
        let text = match next {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                return Err(format!("closed before the first message: {frame:?}"))
            }
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(format!("read: {error}")),
            None => return Err("closed before the first message".into()),
        };
        match target {
            Target::Convene => {
                #[derive(serde::Deserialize)]
                struct First {
                    #[serde(rename = "type")]
                    kind: String,
                    session_id: Option<String>,
                    seq: Option<u64>,
                    last_seq: Option<u64>,
                    message: Option<String>,
                }
                let first: First = serde_json::from_str(&text)
                    .map_err(|e| format!("unparseable first message: {e}"))?;
                match first.kind.as_str() {
                    "welcome" => {
                        session.id = first.session_id.unwrap_or_default();
                        session.last_seq = first.seq.unwrap_or(0);
                        return Ok(Hello::Welcome);
                    }
                    "resumed" => {
                        session.id = first.session_id.unwrap_or_default();
                        session.last_seq = first.last_seq.unwrap_or(session.last_seq);
                        return Ok(Hello::Resumed);
                    }
                    "error" => {
                        return Err(format!("refused: {}", first.message.unwrap_or_default()))
                    }
                    other => return Err(format!("expected welcome, got {other}")),
                }
            }
            Target::Socketio => {
                if text.starts_with('0') {
                    ws.send(Message::Text("40".into()))
                        .await
                        .map_err(|e| format!("send: {e}"))?;
                } else if text.starts_with("40") {
                    return Ok(Hello::Connected);
                } else if text.starts_with("44") {
                    return Err(format!("socket.io refused: {text}"));
                } else if text.as_str() == "2" {
                    ws.send(Message::Text("3".into()))
                        .await
                        .map_err(|e| format!("send: {e}"))?;
                }
            }
        }
    }
}

/// Opens a session, retrying a few times; `None` after the last failure (counted and sampled).
async fn connect(
    ep: &Endpoint,
    node: usize,
    who: &str,
    role: Role,
    resume: Option<&Session>,
    errors: &Errors,
) -> Option<(Ws, Session, Hello)> {
    let mut last = String::new();
    for attempt in 0..CONNECT_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
        }
        let mut session = resume.cloned().unwrap_or_default();
        match open(&ep.url(node, who, role, resume)).await {
            Ok(mut ws) => match hello(&mut ws, ep.target, &mut session).await {
                Ok(hello) => return Some((ws, session, hello)),
                Err(error) => last = error,
            },
            Err(error) => last = error,
        }
    }
    errors.add(format!("{who}: {last}"));
    None
}

// --- Shared counters ---------------------------------------------------------------

#[repr(align(128))]
#[derive(Default)]
struct Padded(AtomicU64);

/// Errors counted across sessions, with the first few texts.
#[derive(Default)]
pub(crate) struct Errors {
    count: AtomicU64,
    samples: Mutex<Vec<String>>,
}

impl Errors {
    pub(crate) fn add(&self, text: String) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut samples = self.samples.lock().expect("error samples lock");
        if samples.len() < ERROR_SAMPLES {
            samples.push(text);
        }
    }
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
    pub(crate) fn samples(&self) -> Vec<String> {
        self.samples.lock().expect("error samples lock").clone()
    }
}

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Delivery latency: all deliveries, and split by same node / cross node.
struct Deliveries {
    all: Histogram<u64>,
    same: Histogram<u64>,
    cross: Histogram<u64>,
}

struct Shared {
    delivered: [Padded; SHARDS],
    latency: Mutex<Deliveries>,
    /// Sessions connected per node.
    per_node: Vec<AtomicU64>,
    sent: AtomicU64,
    connected: AtomicU64,
    /// Sessions that finished connecting, or gave up.
    settled: AtomicU64,
    connect_failures: AtomicU64,
    reconnects: AtomicU64,
    errors: Errors,
}

impl Shared {
    fn new(nodes: usize) -> Shared {
        Shared {
            delivered: Default::default(),
            latency: Mutex::new(Deliveries {
                all: histogram(),
                same: histogram(),
                cross: histogram(),
            }),
            per_node: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
            sent: AtomicU64::new(0),
            connected: AtomicU64::new(0),
            settled: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            errors: Errors::default(),
        }
    }
    fn delivered(&self) -> u64 {
        self.delivered
            .iter()
            .map(|p| p.0.load(Ordering::Relaxed))
            .sum()
    }
}

/// A session's own latency samples, merged into the shared histogram in batches.
struct Samples {
    micros: Vec<u64>,
}

impl Samples {
    fn new() -> Samples {
        Samples { micros: Vec::new() }
    }
    fn record(&mut self, micros: u64, into: &Mutex<Histogram<u64>>) {
        if self.micros.capacity() == 0 {
            self.micros.reserve_exact(BATCH);
        }
        self.micros.push(micros.max(1));
        if self.micros.len() >= BATCH {
            self.flush(into);
        }
    }
    fn flush(&mut self, into: &Mutex<Histogram<u64>>) {
        if self.micros.is_empty() {
            return;
        }
        let mut hist = into.lock().expect("histogram lock");
        for &v in &self.micros {
            hist.saturating_record(v);
        }
        self.micros.clear();
    }
}

/// A chat session's latency samples, each flagged same-node or cross-node, merged in batches.
struct DeliverySamples {
    /// Microseconds, with [`DeliverySamples::CROSS`] set for a cross-node delivery.
    micros: Vec<u64>,
}

impl DeliverySamples {
    const CROSS: u64 = 1 << 63;

    fn new() -> DeliverySamples {
        DeliverySamples { micros: Vec::new() }
    }
    fn record(&mut self, micros: u64, cross: bool, into: &Mutex<Deliveries>) {
        if self.micros.capacity() == 0 {
            self.micros.reserve_exact(BATCH);
        }
        let v = micros.clamp(1, Self::CROSS - 1);
        self.micros.push(if cross { v | Self::CROSS } else { v });
        if self.micros.len() >= BATCH {
            self.flush(into);
        }
    }
    fn flush(&mut self, into: &Mutex<Deliveries>) {
        if self.micros.is_empty() {
            return;
        }
        let mut d = into.lock().expect("histogram lock");
        for &v in &self.micros {
            let us = v & !Self::CROSS;
            d.all.saturating_record(us);
            if v & Self::CROSS != 0 {
                d.cross.saturating_record(us);
            } else {
                d.same.saturating_record(us);
            }
        }
        self.micros.clear();
    }
}

pub(crate) fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
}

/// The digits at the start of `text`.
pub(crate) fn leading_u64(text: &str) -> Option<u64> {
    let end = text
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(text.len());
    text[..end].parse().ok()
}

/// The send time embedded in a relayed chat message (`"text":"t=<nanos>`), either protocol.
pub(crate) fn stamp(text: &str) -> Option<u64> {
    const KEY: &str = "\"text\":\"t=";
    let at = text.find(KEY)?;
    leading_u64(&text[at + KEY.len()..])
}

/// The sender's node in a relayed chat message: the `n=<node>` after the stamp.
fn stamp_node(text: &str) -> Option<usize> {
    const KEY: &str = "\"text\":\"t=";
    let rest = &text[text.find(KEY)? + KEY.len()..];
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    leading_u64(rest.strip_prefix(" n=")?).map(|n| n as usize)
}

/// A chat frame carrying its send time and the sender's node.
fn chat_frame(target: Target, node: usize, pad: &str) -> String {
    let t = unix_nanos();
    match target {
        Target::Convene => format!(r#"{{"type":"send_chat","text":"t={t} n={node}{pad}"}}"#),
        Target::Socketio => format!(r#"42["chat",{{"text":"t={t} n={node}{pad}"}}]"#),
    }
}

// --- Chat and idle -------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Warm,
    Send(Instant),
    Drain,
    Stop,
}

struct ChatCtx {
    ep: Endpoint,
    shared: Shared,
    gate: Semaphore,
    phase: watch::Receiver<Phase>,
    senders: usize,
    period: Duration,
    pad: String,
}

async fn tick(ticker: &mut Option<Interval>) {
    match ticker {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// One session of the chat and idle scenarios: connects, receives and stamps, sends when it is a sender.
async fn chat_client(ctx: Arc<ChatCtx>, i: usize) {
    let who = format!("c{i}");
    let shared = &ctx.shared;
    let node = ctx.ep.node_of(i);
    let opened = {
        let _permit = ctx.gate.acquire().await;
        connect(&ctx.ep, node, &who, Role::Participant, None, &shared.errors).await
    };
    let Some((mut ws, mut session, _)) = opened else {
        shared.connect_failures.fetch_add(1, Ordering::Relaxed);
        shared.settled.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let online_here = &shared.per_node[node];
    shared.connected.fetch_add(1, Ordering::Relaxed);
    online_here.fetch_add(1, Ordering::Relaxed);
    shared.settled.fetch_add(1, Ordering::Relaxed);
    let mut phase = ctx.phase.clone();
    let delivered = &shared.delivered[i % SHARDS].0;
    let mut samples = DeliverySamples::new();
    // Without a node in the text (a single URL) every delivery counts as same-node.
    let record = |text: &str, samples: &mut DeliverySamples| {
        if let Some(sent) = stamp(text) {
            delivered.fetch_add(1, Ordering::Relaxed);
            let cross = stamp_node(text).is_some_and(|from| from != node);
            samples.record(
                unix_nanos().saturating_sub(sent) / 1000,
                cross,
                &shared.latency,
            );
        }
    };
    let mut ticker: Option<Interval> = None;
    let mut reconnects = 0;
    let mut online = true;
    let check = |p: Phase, ticker: &mut Option<Interval>| match p {
        Phase::Send(start) if i < ctx.senders => {
            // Senders are spread evenly over one period so the total rate is smooth.
            let offset = ctx.period.mul_f64(i as f64 / ctx.senders as f64);
            let mut t = tokio::time::interval_at(start + offset, ctx.period);
            t.set_missed_tick_behavior(MissedTickBehavior::Delay);
            *ticker = Some(t);
            true
        }
        Phase::Drain => {
            *ticker = None;
            true
        }
        Phase::Stop => false,
        _ => true,
    };
    if !check(*phase.borrow_and_update(), &mut ticker) {
        ticker = None;
    }
    loop {
        tokio::select! {
            biased;
            changed = phase.changed() => {
                if changed.is_err() || !check(*phase.borrow_and_update(), &mut ticker) {
                    break;
                }
            }
            _ = tick(&mut ticker) => {
                if ws.send(Message::Text(chat_frame(ctx.ep.target, node, &ctx.pad).into())).await.is_ok() {
                    shared.sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            next = ws.next() => {
                let text = match next {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                        // Dropped by the server or the network: reconnect (and resume) like a client would.
                        shared.connected.fetch_sub(1, Ordering::Relaxed);
                        online_here.fetch_sub(1, Ordering::Relaxed);
                        online = false;
                        if *phase.borrow() == Phase::Stop || reconnects >= MAX_RECONNECTS {
                            break;
                        }
                        reconnects += 1;
                        shared.reconnects.fetch_add(1, Ordering::Relaxed);
                        let resume = (ctx.ep.target == Target::Convene).then_some(&session);
                        match connect(&ctx.ep, node, &who, Role::Participant, resume, &shared.errors).await {
                            Some((new_ws, new_session, _)) => {
                                ws = new_ws;
                                session = new_session;
                                shared.connected.fetch_add(1, Ordering::Relaxed);
                                online_here.fetch_add(1, Ordering::Relaxed);
                                online = true;
                                continue;
                            }
                            None => break,
                        }
                    }
                    Some(Ok(_)) => continue,
                };
                let text = text.as_str();
                match ctx.ep.target {
                    Target::Convene => {
                        if let Some(rest) = text.strip_prefix(r#"{"type":"event","seq":"#) {
                            if let Some(seq) = leading_u64(rest) {
                                session.last_seq = seq;
                            }
                            record(text, &mut samples);
                        } else if text.starts_with(r#"{"type":"error""#) {
                            shared.errors.add(format!("{who}: {text}"));
                        }
                    }
                    Target::Socketio => {
                        if text.starts_with("42") {
                            record(text, &mut samples);
                        } else if text == "2" {
                            let _ = ws.send(Message::Text("3".into())).await;
                        } else if text.starts_with("44") || text.starts_with("41") {
                            shared.errors.add(format!("{who}: {text}"));
                        }
                    }
                }
            }
        }
    }
    samples.flush(&shared.latency);
    if online {
        shared.connected.fetch_sub(1, Ordering::Relaxed);
        online_here.fetch_sub(1, Ordering::Relaxed);
        let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    }
}

/// Spawns `n` sessions at the ramp rate; returns their handles once all are spawned.
async fn ramp<F, Fut>(n: usize, per_sec: f64, mut spawn: F) -> Vec<tokio::task::JoinHandle<()>>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let start = Instant::now();
    let per_sec = if per_sec > 0.0 {
        per_sec
    } else {
        f64::INFINITY
    };
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let due = start + Duration::from_secs_f64(i as f64 / per_sec);
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        handles.push(tokio::spawn(spawn(i)));
    }
    handles
}

/// Waits until `settled` reaches `n`, or gives up after `limit`.
async fn wait_settled(settled: &AtomicU64, n: u64, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while settled.load(Ordering::Relaxed) < n {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

async fn join_all(handles: Vec<tokio::task::JoinHandle<()>>) {
    let all = futures_util::future::join_all(handles);
    let _ = tokio::time::timeout(Duration::from_secs(15), all).await;
}

pub(crate) fn check_common(common: &Common) -> Result<(), LoadError> {
    if common.clients == 0 {
        return Err(LoadError::Setup("--clients must be at least 1".into()));
    }
    if common.connect_concurrency == 0 {
        return Err(LoadError::Setup(
            "--connect-concurrency must be at least 1".into(),
        ));
    }
    Ok(())
}

/// Runs the chat, idle or resume scenario and returns its figures.
pub async fn chat(args: &ChatArgs) -> Result<ChatReport, LoadError> {
    let common = &args.common;
    check_common(common)?;
    if args.scenario == Scenario::Chat {
        if args.senders == 0 || args.senders > common.clients {
            return Err(LoadError::Setup(
                "--senders must be between 1 and --clients".into(),
            ));
        }
        let positive = |x: f64| x > 0.0 && x.is_finite();
        if !positive(args.rate) || !positive(args.duration) {
            return Err(LoadError::Setup(
                "--rate and --duration must be positive".into(),
            ));
        }
    }
    let ep = Endpoint::new(common, args.target)?;
    let redis = args
        .redis
        .as_deref()
        .map(redis_info::redis_addr)
        .transpose()
        .map_err(LoadError::Setup)?;
    if args.scenario == Scenario::Resume {
        return resume(args, ep).await;
    }
    let probe = Probe::start(common.server_pid);
    let senders = if args.scenario == Scenario::Chat {
        args.senders
    } else {
        0
    };
    let (phase_tx, phase_rx) = watch::channel(Phase::Warm);
    let nodes = ep.bases.clone();
    let ctx = Arc::new(ChatCtx {
        ep,
        shared: Shared::new(nodes.len()),
        gate: Semaphore::new(common.connect_concurrency),
        phase: phase_rx,
        senders,
        period: Duration::from_secs_f64(senders.max(1) as f64 / args.rate.max(1e-6)),
        pad: " ".to_string() + &"x".repeat(args.size.saturating_sub(24)),
    });
    let n = common.clients;
    let ramp_started = Instant::now();
    let handles = ramp(n, common.ramp_per_sec, |i| chat_client(ctx.clone(), i)).await;
    wait_settled(
        &ctx.shared.settled,
        n as u64,
        CONNECT_TIMEOUT * (CONNECT_ATTEMPTS + 1),
    )
    .await;
    let ramp_s = ramp_started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(common.settle_ms)).await;
    let shared = &ctx.shared;
    if shared.connected.load(Ordering::Relaxed) == 0 {
        let _ = phase_tx.send(Phase::Stop);
        return Err(LoadError::Setup(format!(
            "no session connected: {:?}",
            shared.errors.samples()
        )));
    }

    let mut idle = None;
    let redis_before = match &redis {
        // Two back to back: their difference is what reading INFO costs.
        Some(addr) => Some((redis_snapshot(addr).await?, redis_snapshot(addr).await?)),
        None => None,
    };
    let window_start = Instant::now();
    let before = probe.sample();
    let window_end;
    let held;
    match args.scenario {
        Scenario::Idle => {
            held = shared.connected.load(Ordering::Relaxed);
            let after = probe.sample();
            idle = Some(probe.idle(held, &after));
            tokio::time::sleep(Duration::from_secs_f64(args.duration.max(0.0))).await;
            window_end = Instant::now();
        }
        _ => {
            // Start on a tick boundary a little ahead, so every sender has its timer before the first send.
            let start = Instant::now() + Duration::from_millis(50);
            let _ = phase_tx.send(Phase::Send(start));
            tokio::time::sleep_until(start + Duration::from_secs_f64(args.duration)).await;
            let _ = phase_tx.send(Phase::Drain);
            held = shared.connected.load(Ordering::Relaxed);
            // Deliveries still in flight: wait until all arrived, or nothing moved for a while.
            let drain_started = Instant::now();
            let mut last = shared.delivered();
            let mut last_change = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let now = shared.delivered();
                if now != last {
                    last = now;
                    last_change = Instant::now();
                }
                let expected = shared.sent.load(Ordering::Relaxed) * held;
                if now >= expected
                    || last_change.elapsed() >= DRAIN_STALL
                    || drain_started.elapsed() >= DRAIN_MAX
                {
                    break;
                }
            }
            window_end = last_change.max(start);
        }
    }
    let after = probe.sample();
    let redis = match (&redis, redis_before) {
        (Some(addr), Some((base, before))) => Some(RedisFigures::between(
            &base,
            &before,
            &redis_snapshot(addr).await?,
        )),
        _ => None,
    };
    let connected = shared.connected.load(Ordering::Relaxed);
    let connected_per_node: Vec<u64> = shared
        .per_node
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .collect();
    let _ = phase_tx.send(Phase::Stop);
    join_all(handles).await;

    let window_s = window_end
        .duration_since(window_start)
        .as_secs_f64()
        .max(1e-3);
    let delivered = shared.delivered();
    let sent = shared.sent.load(Ordering::Relaxed);
    let (latency, split) = {
        let d = shared.latency.lock().expect("histogram lock");
        (
            Latency::of(&d.all),
            (Latency::of(&d.same), Latency::of(&d.cross)),
        )
    };
    let nodes = (nodes.len() > 1).then_some(NodeSplit {
        urls: nodes,
        connected_per_node,
        same_node: split.0,
        cross_node: split.1,
    });
    let ops = (args.scenario == Scenario::Chat).then_some(delivered);
    let (tool, server) = probe.usage(&before, &after, ops);
    let send_s = if args.scenario == Scenario::Chat {
        args.duration
    } else {
        0.0
    };
    Ok(ChatReport {
        target: args.target,
        scenario: args.scenario,
        clients: n,
        senders,
        rate: if senders > 0 { args.rate } else { 0.0 },
        duration_s: args.duration,
        connected,
        connect_failures: shared.connect_failures.load(Ordering::Relaxed),
        ramp_s,
        sent,
        sent_per_s: if send_s > 0.0 {
            sent as f64 / send_s
        } else {
            0.0
        },
        expected: sent * held,
        delivered,
        delivered_per_s: delivered as f64 / window_s,
        window_s,
        latency,
        nodes,
        errors: shared.errors.count(),
        error_samples: shared.errors.samples(),
        reconnects: shared.reconnects.load(Ordering::Relaxed),
        tool,
        server,
        idle,
        resume: None,
        redis,
    })
}

async fn redis_snapshot(addr: &str) -> Result<RedisSnapshot, LoadError> {
    redis_info::snapshot(addr).await.map_err(LoadError::Setup)
}

// --- Resume -------------------------------------------------------------------------

/// A reconnect's first message, its own duration, when it finished, and its socket.
type Resumed = (Hello, Duration, Instant, Ws);

/// Connect N, drop every socket without a close frame, then resume them all at once.
async fn resume(args: &ChatArgs, ep: Endpoint) -> Result<ChatReport, LoadError> {
    let common = &args.common;
    if ep.target != Target::Convene {
        return Err(LoadError::Setup(
            "--scenario resume needs --target convene (Socket.IO sessions do not resume here)"
                .into(),
        ));
    }
    let probe = Probe::start(common.server_pid);
    let n = common.clients;
    let ep = Arc::new(ep);
    let errors = Arc::new(Errors::default());
    let gate = Arc::new(Semaphore::new(common.connect_concurrency));
    let opened: Arc<Mutex<Vec<(usize, Ws, Session)>>> = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let ramp_started = Instant::now();
    let handles = ramp(n, common.ramp_per_sec, |i| {
        let (ep, errors, gate, opened) = (ep.clone(), errors.clone(), gate.clone(), opened.clone());
        async move {
            let _permit = gate.acquire().await;
            if let Some((ws, session, _)) = connect(
                &ep,
                ep.node_of(i),
                &format!("c{i}"),
                Role::Participant,
                None,
                &errors,
            )
            .await
            {
                opened.lock().expect("opened lock").push((i, ws, session));
            }
        }
    })
    .await;
    join_all(handles).await;
    let ramp_s = ramp_started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(common.settle_ms)).await;
    let mut opened = std::mem::take(&mut *opened.lock().expect("opened lock"));
    // Read what arrived meanwhile, as a live client would have, so `last_seq` is current.
    for (_, ws, session) in opened.iter_mut() {
        while let Some(Some(Ok(message))) = ws.next().now_or_never() {
            if let Message::Text(text) = message {
                if let Some(seq) = text
                    .as_str()
                    .strip_prefix(r#"{"type":"event","seq":"#)
                    .and_then(leading_u64)
                {
                    session.last_seq = seq;
                }
            }
        }
    }
    let connected = opened.len() as u64;
    if connected == 0 {
        return Err(LoadError::Setup(format!(
            "no session connected: {:?}",
            errors.samples()
        )));
    }
    let connect_failures = n as u64 - connected;
    let before = probe.sample();
    // Drop the sockets: the TCP connections end with no WebSocket close frame, like a network loss.
    let sessions: Vec<(usize, Session)> = opened
        .into_iter()
        .map(|(i, ws, s)| {
            drop(ws);
            (i, s)
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(args.resume_pause_ms)).await;

    let started = Instant::now();
    // (first message, this session's resume time, when it finished, socket)
    let outcomes: Arc<Mutex<Vec<Resumed>>> =
        Arc::new(Mutex::new(Vec::with_capacity(sessions.len())));
    let handles: Vec<_> = sessions
        .into_iter()
        .map(|(i, session)| {
            let (ep, errors, outcomes) = (ep.clone(), errors.clone(), outcomes.clone());
            tokio::spawn(async move {
                let t0 = Instant::now();
                let who = format!("c{i}");
                let url = ep.url(ep.node_of(i), &who, Role::Participant, Some(&session));
                let mut session = session;
                let result = match open(&url).await {
                    Ok(mut ws) => hello(&mut ws, Target::Convene, &mut session)
                        .await
                        .map(|h| (h, ws)),
                    Err(error) => Err(error),
                };
                match result {
                    Ok((hello, ws)) => outcomes.lock().expect("outcomes lock").push((
                        hello,
                        t0.elapsed(),
                        Instant::now(),
                        ws,
                    )),
                    Err(error) => errors.add(format!("{who}: resume: {error}")),
                }
            })
        })
        .collect();
    join_all(handles).await;
    let after = probe.sample();
    let outcomes = std::mem::take(&mut *outcomes.lock().expect("outcomes lock"));
    let mut hist = histogram();
    let mut figures = ResumeFigures {
        sessions: connected,
        ..Default::default()
    };
    let mut last = started;
    let mut sockets = Vec::with_capacity(outcomes.len());
    for (hello, took, finished, ws) in outcomes {
        if hello == Hello::Resumed {
            figures.resumed += 1;
            hist.saturating_record((took.as_micros() as u64).max(1));
            last = last.max(finished);
        } else {
            figures.fresh += 1;
        }
        sockets.push(ws);
    }
    figures.failed = connected - figures.resumed - figures.fresh;
    figures.all_resumed_ms = last.duration_since(started).as_secs_f64() * 1000.0;
    figures.latency = Latency::of(&hist);
    let window_s = started.elapsed().as_secs_f64();
    // Leave politely this time.
    let closing: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
            })
        })
        .collect();
    join_all(closing).await;
    let (tool, server) = probe.usage(&before, &after, None);
    Ok(ChatReport {
        target: Target::Convene,
        scenario: Scenario::Resume,
        clients: n,
        senders: 0,
        rate: 0.0,
        duration_s: 0.0,
        connected,
        connect_failures,
        ramp_s,
        sent: 0,
        sent_per_s: 0.0,
        expected: 0,
        delivered: 0,
        delivered_per_s: 0.0,
        window_s,
        latency: Latency::default(),
        nodes: None,
        errors: errors.count(),
        error_samples: errors.samples(),
        reconnects: 0,
        tool,
        server,
        idle: None,
        resume: Some(figures),
        redis: None,
    })
}

// --- Votes --------------------------------------------------------------------------

/// A staff or observer session that sends commands and waits for their replies.
struct Control {
    ws: Ws,
    next: u64,
}

impl Control {
    async fn connect(
        ep: &Endpoint,
        who: &str,
        role: Role,
        errors: &Errors,
    ) -> Result<Control, LoadError> {
        match connect(ep, 0, who, role, None, errors).await {
            Some((ws, _, _)) => Ok(Control { ws, next: 0 }),
            None => Err(LoadError::Setup(format!(
                "{who} could not connect: {:?}",
                errors.samples()
            ))),
        }
    }

    /// Sends a command and returns its ack or error, skipping events in between.
    async fn request(&mut self, command: Command) -> Result<ServerMessage, LoadError> {
        self.next += 1;
        let request_id = format!("q{}", self.next);
        let text = serde_json::to_string(&ClientMessage::with_request_id(command, &request_id))
            .expect("commands serialise");
        self.ws
            .send(Message::Text(text.into()))
            .await
            .map_err(|e| LoadError::Setup(format!("send: {e}")))?;
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .map_err(|_| LoadError::Setup(format!("no reply to {request_id} in time")))?;
            let Some(Ok(message)) = next else {
                return Err(LoadError::Setup("control session closed".into()));
            };
            let Message::Text(text) = message else {
                continue;
            };
            match serde_json::from_str::<ServerMessage>(&text) {
                Ok(reply @ ServerMessage::Ack { .. }) | Ok(reply @ ServerMessage::Error { .. }) => {
                    let echoed = match &reply {
                        ServerMessage::Ack { request_id: r, .. } => Some(r.as_str()),
                        ServerMessage::Error { request_id, .. } => request_id.as_deref(),
                        _ => None,
                    };
                    if echoed == Some(request_id.as_str()) {
                        return Ok(reply);
                    }
                }
                _ => {}
            }
        }
    }

    /// Keeps reading (and so answering pings) until `stop`, so a staff session never lags.
    fn drain(mut self, mut stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    next = self.ws.next() => if !matches!(next, Some(Ok(_))) { break },
                }
            }
            let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close(None)).await;
        })
    }
}

#[derive(Default)]
struct Observed {
    votes: u32,
    events: Vec<Instant>,
}

struct VoteCtx {
    ep: Endpoint,
    gate: Semaphore,
    ids: watch::Receiver<Option<Arc<Vec<u64>>>>,
    stop: watch::Receiver<bool>,
    latency: Mutex<Histogram<u64>>,
    sent: AtomicU64,
    acked: AtomicU64,
    answered: AtomicU64,
    connected: AtomicU64,
    settled: AtomicU64,
    errors: Errors,
}

/// One voter: connects, waits for the question ids, upvotes each one (paced to the server's qa bucket).
async fn voter(ctx: Arc<VoteCtx>, i: usize) {
    let who = format!("v{i}");
    let opened = {
        let _permit = ctx.gate.acquire().await;
        connect(
            &ctx.ep,
            ctx.ep.node_of(i),
            &who,
            Role::Participant,
            None,
            &ctx.errors,
        )
        .await
    };
    let Some((mut ws, _, _)) = opened else {
        ctx.settled.fetch_add(1, Ordering::Relaxed);
        return;
    };
    ctx.connected.fetch_add(1, Ordering::Relaxed);
    ctx.settled.fetch_add(1, Ordering::Relaxed);
    let mut ids = ctx.ids.clone();
    let mut stop = ctx.stop.clone();
    let mut queue: VecDeque<u64> = VecDeque::new();
    let mut sent_at: HashMap<u64, Instant> = HashMap::new();
    let mut samples = Samples::new();
    let mut pace = tokio::time::interval(VOTE_PACE);
    pace.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut started = false;
    let upvote =
        |id: u64| format!(r#"{{"type":"upvote","question_id":{id},"request_id":"v{id}"}}"#);
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            changed = ids.changed(), if !started => {
                if changed.is_err() {
                    break;
                }
                let list = ids.borrow_and_update().clone();
                if let Some(list) = list {
                    started = true;
                    queue.extend(list.iter().copied());
                    for _ in 0..VOTE_BURST.min(queue.len()) {
                        let id = queue.pop_front().expect("checked length");
                        sent_at.insert(id, Instant::now());
                        if ws.send(Message::Text(upvote(id).into())).await.is_ok() {
                            ctx.sent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    pace.reset();
                }
            }
            _ = pace.tick(), if !queue.is_empty() => {
                let id = queue.pop_front().expect("not empty");
                sent_at.insert(id, Instant::now());
                if ws.send(Message::Text(upvote(id).into())).await.is_ok() {
                    ctx.sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            next = ws.next() => {
                let text = match next {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(_)) => continue,
                    _ => {
                        ctx.errors.add(format!("{who}: socket closed during the run"));
                        break;
                    }
                };
                let text = text.as_str();
                let reply_to = || {
                    let at = text.find(r#""request_id":"v"#)?;
                    leading_u64(&text[at + r#""request_id":"v"#.len()..])
                };
                if text.starts_with(r#"{"type":"ack""#) {
                    if let Some(t0) = reply_to().and_then(|id| sent_at.get(&id)) {
                        samples.record(t0.elapsed().as_micros() as u64, &ctx.latency);
                    }
                    ctx.acked.fetch_add(1, Ordering::Relaxed);
                    ctx.answered.fetch_add(1, Ordering::Relaxed);
                } else if text.starts_with(r#"{"type":"error""#) {
                    if reply_to().is_some() {
                        ctx.answered.fetch_add(1, Ordering::Relaxed);
                    }
                    ctx.errors.add(format!("{who}: {text}"));
                }
            }
        }
    }
    samples.flush(&ctx.latency);
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
}

/// Runs the votes scenario and returns its figures.
pub async fn votes(args: &VotesArgs) -> Result<VotesReport, LoadError> {
    let common = &args.common;
    check_common(common)?;
    if args.questions == 0 || args.questions_per_asker == 0 {
        return Err(LoadError::Setup(
            "--questions and --questions-per-asker must be at least 1".into(),
        ));
    }
    let ep = Endpoint::new(common, Target::Convene)?;
    let probe = Probe::start(common.server_pid);
    let setup_errors = Errors::default();
    let mut host = Control::connect(&ep, "host", Role::Host, &setup_errors).await?;
    match host
        .request(Command::UpdateSettings {
            kind: None,
            chat_enabled: None,
            qa_mode: Some(QaMode::Open),
        })
        .await?
    {
        ServerMessage::Ack { .. } => {}
        other => return Err(LoadError::Setup(format!("could not open Q&A: {other:?}"))),
    }
    let askers_needed = args.questions.div_ceil(args.questions_per_asker);
    let mut askers = vec![host];
    for j in 1..askers_needed {
        askers.push(
            Control::connect(&ep, &format!("asker{j}"), Role::Participant, &setup_errors).await?,
        );
    }

    // The observer counts question_votes events and keeps the last count of each question.
    let (stop_tx, stop_rx) = watch::channel(false);
    let observed: Arc<Mutex<HashMap<u64, Observed>>> = Arc::default();
    let observer = {
        let Control { mut ws, .. } =
            Control::connect(&ep, "observer", Role::Participant, &setup_errors).await?;
        let observed = observed.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    next = ws.next() => {
                        let Some(Ok(message)) = next else { break };
                        let Message::Text(text) = message else { continue };
                        if let Ok(ServerMessage::Event { event: RoomEvent::QuestionVotes { question_id, votes }, .. }) = serde_json::from_str(&text) {
                            let mut observed = observed.lock().expect("observed lock");
                            let q = observed.entry(question_id).or_default();
                            q.votes = votes;
                            q.events.push(Instant::now());
                        }
                    }
                }
            }
            let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
        })
    };

    let (ids_tx, ids_rx) = watch::channel(None);
    let ctx = Arc::new(VoteCtx {
        ep,
        gate: Semaphore::new(common.connect_concurrency),
        ids: ids_rx,
        stop: stop_rx.clone(),
        latency: Mutex::new(histogram()),
        sent: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        answered: AtomicU64::new(0),
        connected: AtomicU64::new(0),
        settled: AtomicU64::new(0),
        errors: Errors::default(),
    });
    let n = common.clients;
    let ramp_started = Instant::now();
    let handles = ramp(n, common.ramp_per_sec, |i| voter(ctx.clone(), i)).await;
    wait_settled(
        &ctx.settled,
        n as u64,
        CONNECT_TIMEOUT * (CONNECT_ATTEMPTS + 1),
    )
    .await;
    let ramp_s = ramp_started.elapsed().as_secs_f64();

    let mut ids = Vec::with_capacity(args.questions);
    for q in 0..args.questions {
        let asker = &mut askers[q / args.questions_per_asker];
        match asker
            .request(Command::AskQuestion {
                text: format!("Load question {q}: what should every network measure first?"),
                anonymous: false,
            })
            .await?
        {
            ServerMessage::Ack { id: Some(id), .. } => ids.push(id),
            other => {
                return Err(LoadError::Setup(format!(
                    "question {q} was not accepted: {other:?}"
                )))
            }
        }
    }
    let drains: Vec<_> = askers
        .into_iter()
        .map(|a| a.drain(stop_rx.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(common.settle_ms)).await;

    let voters = ctx.connected.load(Ordering::Relaxed);
    let total = voters * ids.len() as u64;
    let before = probe.sample();
    let started = Instant::now();
    let _ = ids_tx.send(Some(Arc::new(ids.clone())));
    let deadline = started + Duration::from_secs_f64(args.timeout.max(1.0));
    while ctx.answered.load(Ordering::Relaxed) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let all_acked = started.elapsed();
    // Counts are coalesced: the final one follows within a flush interval.
    let want = n as u32;
    let settle_deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let done = {
            let observed = observed.lock().expect("observed lock");
            ids.iter()
                .all(|id| observed.get(id).is_some_and(|q| q.votes >= want))
        };
        if done || Instant::now() >= settle_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Any late (extra) event would show up here.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = probe.sample();
    let _ = stop_tx.send(true);
    join_all(handles).await;
    join_all(drains).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), observer).await;

    let acked = ctx.acked.load(Ordering::Relaxed);
    let observed = std::mem::take(&mut *observed.lock().expect("observed lock"));
    let mut final_at = started;
    let per_question: Vec<QuestionFigures> = ids
        .iter()
        .map(|id| {
            let q = observed.get(id);
            let events = q.map(|q| q.events.as_slice()).unwrap_or_default();
            let last = events.last().copied().unwrap_or(started);
            final_at = final_at.max(last);
            let window = last.duration_since(started).as_secs_f64().max(1.0);
            let max_events_in_1s = events
                .iter()
                .enumerate()
                .map(|(k, t)| {
                    events[k..]
                        .iter()
                        .take_while(|u| u.duration_since(*t) < Duration::from_secs(1))
                        .count() as u64
                })
                .max()
                .unwrap_or(0);
            QuestionFigures {
                id: *id,
                votes: q.map_or(0, |q| q.votes),
                events: events.len() as u64,
                events_per_s: events.len() as f64 / window,
                max_events_in_1s,
            }
        })
        .collect();
    let exact = per_question.iter().all(|q| q.votes == want);
    let ack_latency = Latency::of(&ctx.latency.lock().expect("histogram lock"));
    let (tool, server) = probe.usage(&before, &after, Some(acked));
    let mut error_samples = setup_errors.samples();
    error_samples.extend(ctx.errors.samples());
    Ok(VotesReport {
        clients: n,
        voters,
        questions: ids.len(),
        ramp_s,
        votes_sent: ctx.sent.load(Ordering::Relaxed),
        votes_acked: acked,
        acked_per_s: acked as f64 / all_acked.as_secs_f64().max(1e-3),
        all_acked_ms: all_acked.as_secs_f64() * 1000.0,
        ack_latency,
        final_counts_ms: final_at.duration_since(started).as_secs_f64() * 1000.0,
        exact,
        per_question,
        errors: setup_errors.count() + ctx.errors.count(),
        error_samples,
        tool,
        server,
    })
}

// --- Process figures from /proc ------------------------------------------------------

#[derive(Clone, Copy, Debug, Default)]
struct ProcSample {
    cpu_ticks: u64,
    rss_bytes: u64,
}

/// `utime + stime` in clock ticks, and RSS, of a process (`None`: this one).
fn read_proc(pid: Option<u32>) -> Option<ProcSample> {
    let dir = pid.map_or_else(|| "/proc/self".to_string(), |p| format!("/proc/{p}"));
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    // The command name may contain spaces: fields are counted after its closing parenthesis.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(ProcSample {
        cpu_ticks: utime + stime,
        rss_bytes: rss_kib * 1024,
    })
}

/// Clock ticks per second for /proc CPU times (`getconf CLK_TCK`, almost always 100).
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|t: &f64| *t > 0.0)
            .unwrap_or(100.0)
    })
}

fn runtime_threads() -> usize {
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n: &usize| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// CPU and RSS of this process and, when its pid is known, of the server.
struct Probe {
    server_pid: Option<u32>,
    /// Before any session connected: the baseline for RSS per session.
    baseline: (Option<ProcSample>, Option<ProcSample>),
}

struct Sample {
    at: Instant,
    tool: Option<ProcSample>,
    server: Option<ProcSample>,
}

impl Probe {
    fn start(server_pid: Option<u32>) -> Probe {
        if let Some(pid) = server_pid {
            if read_proc(Some(pid)).is_none() {
                tracing::warn!(
                    pid,
                    "cannot read /proc/{pid}: server CPU and RSS will be missing"
                );
            }
        }
        Probe {
            server_pid,
            baseline: (read_proc(None), server_pid.and_then(|p| read_proc(Some(p)))),
        }
    }

    fn sample(&self) -> Sample {
        Sample {
            at: Instant::now(),
            tool: read_proc(None),
            server: self.server_pid.and_then(|p| read_proc(Some(p))),
        }
    }

    fn idle(&self, sessions: u64, now: &Sample) -> IdleFigures {
        let per = |d: i64| d as f64 / sessions.max(1) as f64;
        let delta = |before: Option<ProcSample>, after: Option<ProcSample>| {
            Some(after?.rss_bytes as i64 - before?.rss_bytes as i64)
        };
        let server = delta(self.baseline.1, now.server);
        IdleFigures {
            sessions,
            server_rss_delta_bytes: server,
            server_bytes_per_session: server.map(per),
            tool_bytes_per_session: delta(self.baseline.0, now.tool).map_or(0.0, per),
        }
    }

    /// Tool and server usage between two samples; `ops` divides CPU into a per-operation cost.
    fn usage(
        &self,
        before: &Sample,
        after: &Sample,
        ops: Option<u64>,
    ) -> (ToolUsage, Option<Usage>) {
        let wall = after.at.duration_since(before.at).as_secs_f64().max(1e-3);
        let ticks = clock_ticks();
        let usage = |pid: u32,
                     b: Option<ProcSample>,
                     a: Option<ProcSample>,
                     base: Option<ProcSample>|
         -> Option<Usage> {
            let (b, a) = (b?, a?);
            let cpu_s = a.cpu_ticks.saturating_sub(b.cpu_ticks) as f64 / ticks;
            Some(Usage {
                pid,
                cpu_s,
                cpu_pct: cpu_s / wall * 100.0,
                cpu_ns_per_op: ops.filter(|n| *n > 0).map(|n| cpu_s * 1e9 / n as f64),
                rss_mib: a.rss_bytes as f64 / (1 << 20) as f64,
                rss_before_mib: base.map_or(0.0, |s| s.rss_bytes as f64 / (1 << 20) as f64),
            })
        };
        let threads = runtime_threads();
        let tool =
            usage(std::process::id(), before.tool, after.tool, self.baseline.0).unwrap_or_default();
        let per_thread_pct = tool.cpu_pct / threads as f64;
        if per_thread_pct > 90.0 {
            tracing::warn!(
                per_thread_pct,
                "the load tool is saturated: figures measure the tool, not the server"
            );
        }
        let server = self
            .server_pid
            .and_then(|pid| usage(pid, before.server, after.server, self.baseline.1));
        (
            ToolUsage {
                usage: tool,
                threads,
                per_thread_pct,
                saturated: per_thread_pct > 90.0,
            },
            server,
        )
    }
}

// --- Text output ---------------------------------------------------------------------

fn usage_lines(out: &mut String, tool: &ToolUsage, server: &Option<Usage>, per: &str) {
    use std::fmt::Write;
    let _ = writeln!(
        out,
        "load tool     cpu {:.2}s ({:.0}% of a core, {:.0}% per runtime thread x{}){}, rss {:.1} MiB",
        tool.usage.cpu_s,
        tool.usage.cpu_pct,
        tool.per_thread_pct,
        tool.threads,
        if tool.saturated { " SATURATED: figures measure the tool" } else { "" },
        tool.usage.rss_mib
    );
    if let Some(s) = server {
        let per_op = s.cpu_ns_per_op.map_or(String::new(), |ns| {
            format!(", {:.2} us per {per}", ns / 1000.0)
        });
        let _ = writeln!(
            out,
            "server pid {}  cpu {:.2}s ({:.0}% of a core){per_op}, rss {:.1} MiB (was {:.1})",
            s.pid, s.cpu_s, s.cpu_pct, s.rss_mib, s.rss_before_mib
        );
    }
}

fn chat_text(r: &ChatReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let target = match r.target {
        Target::Convene => "convene",
        Target::Socketio => "socketio",
    };
    let _ = writeln!(
        out,
        "{target} {:?}: {} clients connected of {} in {:.1}s ({} failed)",
        r.scenario, r.connected, r.clients, r.ramp_s, r.connect_failures
    );
    if r.scenario == Scenario::Chat {
        let _ = writeln!(
            out,
            "sent          {} msgs ({:.1}/s by {} senders)",
            r.sent, r.sent_per_s, r.senders
        );
        let _ = writeln!(
            out,
            "delivered     {} of {} ({:.0}/s over {:.2}s)",
            r.delivered, r.expected, r.delivered_per_s, r.window_s
        );
        let l = &r.latency;
        let _ = writeln!(
            out,
            "latency ms    p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
            l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
        );
        if let Some(n) = &r.nodes {
            let _ = writeln!(
                out,
                "nodes         {} ({} sessions each at the end)",
                n.urls.join(", "),
                n.connected_per_node
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join("/")
            );
            for (name, l) in [("same node", &n.same_node), ("cross node", &n.cross_node)] {
                let _ = writeln!(
                    out,
                    "  {name:<11} p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2} ms ({} deliveries)",
                    l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms, l.samples
                );
            }
            let _ = writeln!(
                out,
                "  cross adds  p50 {:+.2}  p99 {:+.2} ms",
                n.cross_node.p50_ms - n.same_node.p50_ms,
                n.cross_node.p99_ms - n.same_node.p99_ms
            );
        }
    }
    if let Some(i) = &r.idle {
        let server = i
            .server_bytes_per_session
            .map_or("unknown (pass --server-pid)".to_string(), |b| {
                format!("{:.0} bytes ({:.1} KiB)", b, b / 1024.0)
            });
        let _ = writeln!(
            out,
            "idle          {} sessions: server RSS per session {server}; tool {:.0} bytes",
            i.sessions, i.tool_bytes_per_session
        );
    }
    if let Some(f) = &r.resume {
        let _ = writeln!(
            out,
            "resume        {} sessions: {} resumed, {} fresh, {} failed; all resumed in {:.0} ms",
            f.sessions, f.resumed, f.fresh, f.failed, f.all_resumed_ms
        );
        let l = &f.latency;
        let _ = writeln!(
            out,
            "per session   p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
            l.p50_ms, l.p99_ms, l.max_ms
        );
    }
    let _ = writeln!(
        out,
        "errors        {}  reconnects {}",
        r.errors, r.reconnects
    );
    for e in &r.error_samples {
        let _ = writeln!(out, "  {e}");
    }
    if let Some(x) = &r.redis {
        let per = r.sent.max(1) as f64;
        let top: Vec<String> = {
            let mut calls: Vec<_> = x.calls.iter().collect();
            calls.sort_by(|a, b| b.1.cmp(a.1));
            calls
                .iter()
                .take(6)
                .map(|(name, n)| format!("{name} {:.2}", **n as f64 / per))
                .collect()
        };
        let _ = writeln!(
            out,
            "redis         per message sent: {:.2} commands, {:.0} bytes in, {:.0} bytes out ({})",
            x.commands as f64 / per,
            x.net_input_bytes as f64 / per,
            x.net_output_bytes as f64 / per,
            top.join(", ")
        );
    }
    usage_lines(&mut out, &r.tool, &r.server, "delivery");
    out.trim_end().to_string()
}

fn votes_text(r: &VotesReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "votes: {} voters connected of {} in {:.1}s, {} questions",
        r.voters, r.clients, r.ramp_s, r.questions
    );
    let _ = writeln!(
        out,
        "acked         {} of {} sent ({:.0}/s); all acked in {:.0} ms",
        r.votes_acked, r.votes_sent, r.acked_per_s, r.all_acked_ms
    );
    let l = &r.ack_latency;
    let _ = writeln!(
        out,
        "ack ms        p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
    );
    let _ = writeln!(
        out,
        "final counts  {} after {:.0} ms",
        if r.exact { "exact" } else { "WRONG" },
        r.final_counts_ms
    );
    for q in &r.per_question {
        let _ = writeln!(out, "  question {}: {} votes; observer got {} question_votes events ({:.1}/s, at most {} in any second)", q.id, q.votes, q.events, q.events_per_s, q.max_events_in_1s);
    }
    let _ = writeln!(out, "errors        {}", r.errors);
    for e in &r.error_samples {
        let _ = writeln!(out, "  {e}");
    }
    usage_lines(&mut out, &r.tool, &r.server, "acked vote");
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_found_in_both_protocols() {
        let convene = r#"{"type":"event","seq":42,"event":{"type":"chat_message","message":{"id":1,"from":"a","name":"A","text":"t=1700000000123456789 xx","at":1,"breakout":null}}}"#;
        assert_eq!(stamp(convene), Some(1_700_000_000_123_456_789));
        assert_eq!(
            convene
                .strip_prefix(r#"{"type":"event","seq":"#)
                .and_then(leading_u64),
            Some(42)
        );
        let sio =
            r#"42["chat",{"id":3,"from":"x","name":"c1","text":"t=17 ","at":5,"breakout":null}]"#;
        assert_eq!(stamp(sio), Some(17));
        assert_eq!(stamp_node(sio), None);
        let from_node = r#"42["chat",{"id":3,"text":"t=17 n=2 xx"}]"#;
        assert_eq!(
            (stamp(from_node), stamp_node(from_node)),
            (Some(17), Some(2))
        );
        assert_eq!(stamp_node(&chat_frame(Target::Convene, 1, " x")), Some(1));
        assert_eq!(stamp(r#"{"type":"pong"}"#), None);
    }

    #[test]
    fn base_urls_are_normalised() {
        assert_eq!(
            base_url("http://127.0.0.1:8080/").unwrap(),
            "ws://127.0.0.1:8080"
        );
        assert_eq!(base_url("ws://127.0.0.1:9/ws").unwrap(), "ws://127.0.0.1:9");
        assert!(base_url("wss://example.org").is_err());
        assert!(base_url("ws://h/x/y").is_err());
        assert_eq!(
            base_urls("ws://127.0.0.1:1, http://127.0.0.1:2/").unwrap(),
            ["ws://127.0.0.1:1", "ws://127.0.0.1:2"]
        );
        assert!(base_urls(",").is_err());
        assert!(base_urls("ws://127.0.0.1:1,wss://x").is_err());
    }

    #[test]
    fn args_parse_with_defaults() {
        let a = ChatArgs::from_args([
            "--clients",
            "5",
            "--target",
            "socketio",
            "--scenario",
            "idle",
        ])
        .unwrap();
        assert_eq!(
            (a.common.clients, a.target, a.scenario, a.senders),
            (5, Target::Socketio, Scenario::Idle, 10)
        );
        let v = VotesArgs::from_args(["--questions", "3"]).unwrap();
        assert_eq!(v.questions, 3);
    }

    #[test]
    fn own_process_is_readable() {
        let s = read_proc(None).expect("/proc/self");
        assert!(s.rss_bytes > 0);
    }
}
