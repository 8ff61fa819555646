//! The chat and idle scenarios: N sessions in one room, K sending stamped chat, delivery latency at every receiver.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use convene_signaling::Role;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;

use super::client::{
    connect, join_all, ramp, wait_settled, Endpoint, Session, Ws, CONNECT_ATTEMPTS, CONNECT_TIMEOUT,
};
use super::frames::{chat_frame, leading_u64, stamp, stamp_node, unix_nanos};
use super::report::{ChatReport, Latency, NodeSplit};
use super::samples::{histogram, Deliveries, DeliverySamples, Errors, Padded, SHARDS};
use super::scenario_resume::resume;
use super::{check_common, ChatArgs, Common, Scenario, Target};
use crate::probe::{IdleFigures, Probe, Sample};
use crate::redis_info::{self, RedisFigures, RedisSnapshot};
use crate::LoadError;

/// Reconnects per session during a run before it gives up.
const MAX_RECONNECTS: u32 = 5;
/// After sending stops, wait at most this long for deliveries to arrive...
const DRAIN_MAX: Duration = Duration::from_secs(15);
/// ...and give up earlier when none arrived for this long.
const DRAIN_STALL: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Warm,
    Send(Instant),
    Drain,
    Stop,
}

/// Counters every session of the run adds to.
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

// --- One session -----------------------------------------------------------------------

/// One session of the chat and idle scenarios: connects, receives and stamps, sends when it is a sender.
async fn chat_client(ctx: Arc<ChatCtx>, i: usize) {
    let Some(mut member) = Member::join(&ctx, i).await else {
        return;
    };
    member.run().await;
    member.leave().await;
}

/// A connected session and what it keeps between frames.
struct Member<'a> {
    ctx: &'a ChatCtx,
    i: usize,
    who: String,
    node: usize,
    ws: Ws,
    session: Session,
    samples: DeliverySamples,
    /// Set while this session sends (senders only, during `Phase::Send`).
    ticker: Option<Interval>,
    reconnects: u32,
    online: bool,
}

impl<'a> Member<'a> {
    /// Connects through the gate; `None` (counted as a failure) when it could not.
    async fn join(ctx: &'a ChatCtx, i: usize) -> Option<Member<'a>> {
        let who = format!("c{i}");
        let shared = &ctx.shared;
        let node = ctx.ep.node_of(i);
        let opened = {
            let _permit = ctx.gate.acquire().await;
            connect(&ctx.ep, node, &who, Role::Participant, None, &shared.errors).await
        };
        let Some((ws, session, _)) = opened else {
            shared.connect_failures.fetch_add(1, Ordering::Relaxed);
            shared.settled.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        shared.connected.fetch_add(1, Ordering::Relaxed);
        shared.per_node[node].fetch_add(1, Ordering::Relaxed);
        shared.settled.fetch_add(1, Ordering::Relaxed);
        Some(Member {
            ctx,
            i,
            who,
            node,
            ws,
            session,
            samples: DeliverySamples::new(),
            ticker: None,
            reconnects: 0,
            online: true,
        })
    }

    /// Follows the phases until `Stop`, or until the session is lost for good.
    async fn run(&mut self) {
        let mut phase = self.ctx.phase.clone();
        // A `Stop` seen first only leaves the ticker unset: the loop ends on the next change.
        self.follow(*phase.borrow_and_update());
        loop {
            tokio::select! {
                biased;
                changed = phase.changed() => {
                    if changed.is_err() || !self.follow(*phase.borrow_and_update()) {
                        break;
                    }
                }
                _ = tick(&mut self.ticker) => self.send_chat().await,
                next = self.ws.next() => match next {
                    Some(Ok(Message::Text(text))) => self.on_text(text.as_str()).await,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                        if !self.rejoin(&phase).await {
                            break;
                        }
                    }
                    Some(Ok(_)) => {}
                },
            }
        }
    }

    /// Starts or stops sending for a phase; false once the run stops.
    fn follow(&mut self, phase: Phase) -> bool {
        let ctx = self.ctx;
        match phase {
            Phase::Send(start) if self.i < ctx.senders => {
                // Senders are spread evenly over one period so the total rate is smooth.
                let offset = ctx.period.mul_f64(self.i as f64 / ctx.senders as f64);
                let mut t = tokio::time::interval_at(start + offset, ctx.period);
                t.set_missed_tick_behavior(MissedTickBehavior::Delay);
                self.ticker = Some(t);
                true
            }
            Phase::Drain => {
                self.ticker = None;
                true
            }
            Phase::Stop => false,
            _ => true,
        }
    }

    async fn send_chat(&mut self) {
        let frame = chat_frame(self.ctx.ep.target, self.node, &self.ctx.pad);
        if self.ws.send(Message::Text(frame.into())).await.is_ok() {
            self.ctx.shared.sent.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn on_text(&mut self, text: &str) {
        let shared = &self.ctx.shared;
        match self.ctx.ep.target {
            Target::Convene => {
                if let Some(rest) = text.strip_prefix(r#"{"type":"event","seq":"#) {
                    if let Some(seq) = leading_u64(rest) {
                        self.session.last_seq = seq;
                    }
                    self.record(text);
                } else if text.starts_with(r#"{"type":"error""#) {
                    shared.errors.add(format!("{}: {text}", self.who));
                }
            }
            Target::Socketio => {
                if text.starts_with("42") {
                    self.record(text);
                } else if text == "2" {
                    let _ = self.ws.send(Message::Text("3".into())).await;
                } else if text.starts_with("44") || text.starts_with("41") {
                    shared.errors.add(format!("{}: {text}", self.who));
                }
            }
        }
    }

    /// Counts a stamped delivery and samples its latency. Without a node in the text (a
    /// single URL) every delivery counts as same-node.
    fn record(&mut self, text: &str) {
        let shared = &self.ctx.shared;
        if let Some(sent) = stamp(text) {
            shared.delivered[self.i % SHARDS]
                .0
                .fetch_add(1, Ordering::Relaxed);
            let cross = stamp_node(text).is_some_and(|from| from != self.node);
            self.samples.record(
                unix_nanos().saturating_sub(sent) / 1000,
                cross,
                &shared.latency,
            );
        }
    }

    /// Dropped by the server or the network: reconnect (and resume) like a client would.
    /// False when the session stays gone.
    async fn rejoin(&mut self, phase: &watch::Receiver<Phase>) -> bool {
        let ctx = self.ctx;
        let shared = &ctx.shared;
        let online_here = &shared.per_node[self.node];
        shared.connected.fetch_sub(1, Ordering::Relaxed);
        online_here.fetch_sub(1, Ordering::Relaxed);
        self.online = false;
        if *phase.borrow() == Phase::Stop || self.reconnects >= MAX_RECONNECTS {
            return false;
        }
        self.reconnects += 1;
        shared.reconnects.fetch_add(1, Ordering::Relaxed);
        let resume = (ctx.ep.target == Target::Convene).then_some(&self.session);
        let who = &self.who;
        match connect(
            &ctx.ep,
            self.node,
            who,
            Role::Participant,
            resume,
            &shared.errors,
        )
        .await
        {
            Some((ws, session, _)) => {
                self.ws = ws;
                self.session = session;
                shared.connected.fetch_add(1, Ordering::Relaxed);
                online_here.fetch_add(1, Ordering::Relaxed);
                self.online = true;
                true
            }
            None => false,
        }
    }

    async fn leave(mut self) {
        let shared = &self.ctx.shared;
        self.samples.flush(&shared.latency);
        if self.online {
            shared.connected.fetch_sub(1, Ordering::Relaxed);
            shared.per_node[self.node].fetch_sub(1, Ordering::Relaxed);
            let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close(None)).await;
        }
    }
}

// --- The run -----------------------------------------------------------------------------

fn check_chat_args(args: &ChatArgs) -> Result<(), LoadError> {
    check_common(&args.common)?;
    if args.scenario == Scenario::Chat {
        if args.senders == 0 || args.senders > args.common.clients {
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
    Ok(())
}

/// The measured window: its bounds, the sessions held in it, and the probe on either side.
struct Window {
    start: Instant,
    end: Instant,
    held: u64,
    idle: Option<IdleFigures>,
    before: Sample,
    after: Sample,
}

/// Runs the chat, idle or resume scenario and returns its figures.
pub async fn chat(args: &ChatArgs) -> Result<ChatReport, LoadError> {
    check_chat_args(args)?;
    let common = &args.common;
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
    let (handles, ramp_s) = open_sessions(&ctx, common).await;
    let shared = &ctx.shared;
    if shared.connected.load(Ordering::Relaxed) == 0 {
        let _ = phase_tx.send(Phase::Stop);
        return Err(LoadError::Setup(format!(
            "no session connected: {:?}",
            shared.errors.samples()
        )));
    }

    let redis_before = match &redis {
        // Two back to back: their difference is what reading INFO costs.
        Some(addr) => Some((redis_snapshot(addr).await?, redis_snapshot(addr).await?)),
        None => None,
    };
    let window = match args.scenario {
        Scenario::Idle => hold_idle(&probe, shared, args.duration).await,
        _ => send_and_drain(&probe, shared, &phase_tx, args.duration).await,
    };
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

    let nodes = (nodes.len() > 1).then_some((nodes, connected_per_node));
    let mut report = chat_report(args, shared, &probe, window, nodes);
    report.connected = connected;
    report.ramp_s = ramp_s;
    report.redis = redis;
    Ok(report)
}

/// Spawns every session at the ramp rate and waits until each connected or gave up, then
/// the settle pause; returns their handles and the ramp time.
async fn open_sessions(ctx: &Arc<ChatCtx>, common: &Common) -> (Vec<JoinHandle<()>>, f64) {
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
    (handles, ramp_s)
}

/// Idle: samples memory with every session held, then holds them for `duration` seconds.
async fn hold_idle(probe: &Probe, shared: &Shared, duration: f64) -> Window {
    let start = Instant::now();
    let before = probe.sample();
    let held = shared.connected.load(Ordering::Relaxed);
    let after = probe.sample();
    let idle = Some(probe.idle(held, &after));
    tokio::time::sleep(Duration::from_secs_f64(duration.max(0.0))).await;
    let end = Instant::now();
    Window {
        start,
        end,
        held,
        idle,
        before,
        after: probe.sample(),
    }
}

/// Chat: the senders send for `duration` seconds, then deliveries in flight drain.
async fn send_and_drain(
    probe: &Probe,
    shared: &Shared,
    phase_tx: &watch::Sender<Phase>,
    duration: f64,
) -> Window {
    let window_start = Instant::now();
    let before = probe.sample();
    // Start on a tick boundary a little ahead, so every sender has its timer before the first send.
    let start = Instant::now() + Duration::from_millis(50);
    let _ = phase_tx.send(Phase::Send(start));
    tokio::time::sleep_until(start + Duration::from_secs_f64(duration)).await;
    let _ = phase_tx.send(Phase::Drain);
    let held = shared.connected.load(Ordering::Relaxed);
    let last_change = drain(shared, held).await;
    Window {
        start: window_start,
        end: last_change.max(start),
        held,
        idle: None,
        before,
        after: probe.sample(),
    }
}

/// Waits until every delivery in flight arrived, or nothing moved for a while; returns the
/// last moment a delivery arrived.
async fn drain(shared: &Shared, held: u64) -> Instant {
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
            return last_change;
        }
    }
}

/// The figures of a chat or idle run; `connected`, `ramp_s` and `redis` are the caller's.
fn chat_report(
    args: &ChatArgs,
    shared: &Shared,
    probe: &Probe,
    window: Window,
    nodes: Option<(Vec<String>, Vec<u64>)>,
) -> ChatReport {
    let window_s = window
        .end
        .duration_since(window.start)
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
    let nodes = nodes.map(|(urls, connected_per_node)| NodeSplit {
        urls,
        connected_per_node,
        same_node: split.0,
        cross_node: split.1,
    });
    let chat = args.scenario == Scenario::Chat;
    let (tool, server) = probe.usage(&window.before, &window.after, chat.then_some(delivered));
    let senders = if chat { args.senders } else { 0 };
    let send_s = if chat { args.duration } else { 0.0 };
    ChatReport {
        target: args.target,
        scenario: args.scenario,
        clients: args.common.clients,
        senders,
        rate: if senders > 0 { args.rate } else { 0.0 },
        duration_s: args.duration,
        connected: 0,
        connect_failures: shared.connect_failures.load(Ordering::Relaxed),
        ramp_s: 0.0,
        sent,
        sent_per_s: if send_s > 0.0 {
            sent as f64 / send_s
        } else {
            0.0
        },
        expected: sent * window.held,
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
        idle: window.idle,
        resume: None,
        redis: None,
    }
}

async fn redis_snapshot(addr: &str) -> Result<RedisSnapshot, LoadError> {
    redis_info::snapshot(addr).await.map_err(LoadError::Setup)
}
