//! The votes scenario: N sessions upvote the same open questions; acks, their latency, and the exact final counts an observer sees.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use convene_signaling::{ClientMessage, Command, QaMode, Role, RoomEvent, ServerMessage};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;

use super::client::{
    connect, join_all, ramp, wait_settled, Endpoint, Ws, CONNECT_ATTEMPTS, CONNECT_TIMEOUT,
};
use super::frames::leading_u64;
use super::report::{Latency, QuestionFigures, VotesReport};
use super::samples::{histogram, Errors, Samples};
use super::{check_common, Target, VotesArgs};
use crate::probe::Probe;
use crate::LoadError;

/// Upvotes a voter sends at once; the rest follow at `VOTE_PACE` (the server's qa bucket is 20, 5/s).
const VOTE_BURST: usize = 18;
const VOTE_PACE: Duration = Duration::from_millis(250);

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
    fn drain(mut self, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
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

/// What the observer saw of one question.
#[derive(Default)]
struct Observed {
    votes: u32,
    events: Vec<Instant>,
}

type ObservedMap = Arc<Mutex<HashMap<u64, Observed>>>;

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

// --- One voter ---------------------------------------------------------------------------

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
    let Some((ws, _, _)) = opened else {
        ctx.settled.fetch_add(1, Ordering::Relaxed);
        return;
    };
    ctx.connected.fetch_add(1, Ordering::Relaxed);
    ctx.settled.fetch_add(1, Ordering::Relaxed);
    let mut voter = Voter {
        ctx: &ctx,
        who,
        ws,
        queue: VecDeque::new(),
        sent_at: HashMap::new(),
        samples: Samples::new(),
    };
    voter.run().await;
    voter.samples.flush(&ctx.latency);
    let _ = tokio::time::timeout(Duration::from_secs(2), voter.ws.close(None)).await;
}

/// A connected voter and the upvotes it has yet to send or see answered.
struct Voter<'a> {
    ctx: &'a VoteCtx,
    who: String,
    ws: Ws,
    queue: VecDeque<u64>,
    /// Question id -> when its upvote was sent.
    sent_at: HashMap<u64, Instant>,
    samples: Samples,
}

impl Voter<'_> {
    async fn run(&mut self) {
        let mut ids = self.ctx.ids.clone();
        let mut stop = self.ctx.stop.clone();
        let mut pace = tokio::time::interval(VOTE_PACE);
        pace.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut started = false;
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
                        self.start(&list).await;
                        pace.reset();
                    }
                }
                _ = pace.tick(), if !self.queue.is_empty() => {
                    let id = self.queue.pop_front().expect("not empty");
                    self.upvote(id).await;
                }
                next = self.ws.next() => match next {
                    Some(Ok(Message::Text(text))) => self.on_text(text.as_str()),
                    Some(Ok(_)) => {}
                    _ => {
                        self.ctx.errors.add(format!("{}: socket closed during the run", self.who));
                        break;
                    }
                },
            }
        }
    }

    /// Queues every question and sends the first burst at once.
    async fn start(&mut self, ids: &[u64]) {
        self.queue.extend(ids.iter().copied());
        for _ in 0..VOTE_BURST.min(self.queue.len()) {
            let id = self.queue.pop_front().expect("checked length");
            self.upvote(id).await;
        }
    }

    async fn upvote(&mut self, id: u64) {
        self.sent_at.insert(id, Instant::now());
        let text = format!(r#"{{"type":"upvote","question_id":{id},"request_id":"v{id}"}}"#);
        if self.ws.send(Message::Text(text.into())).await.is_ok() {
            self.ctx.sent.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts acks (with their latency) and errors that answer an upvote.
    fn on_text(&mut self, text: &str) {
        let ctx = self.ctx;
        let reply_to = || {
            let at = text.find(r#""request_id":"v"#)?;
            leading_u64(&text[at + r#""request_id":"v"#.len()..])
        };
        if text.starts_with(r#"{"type":"ack""#) {
            if let Some(t0) = reply_to().and_then(|id| self.sent_at.get(&id)) {
                self.samples
                    .record(t0.elapsed().as_micros() as u64, &ctx.latency);
            }
            ctx.acked.fetch_add(1, Ordering::Relaxed);
            ctx.answered.fetch_add(1, Ordering::Relaxed);
        } else if text.starts_with(r#"{"type":"error""#) {
            if reply_to().is_some() {
                ctx.answered.fetch_add(1, Ordering::Relaxed);
            }
            ctx.errors.add(format!("{}: {text}", self.who));
        }
    }
}

// --- The run -----------------------------------------------------------------------------

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
    let mut askers = open_qa(&ep, args, &setup_errors).await?;

    // The observer counts question_votes events and keeps the last count of each question.
    let (stop_tx, stop_rx) = watch::channel(false);
    let observed: ObservedMap = Arc::default();
    let observer = {
        let control = Control::connect(&ep, "observer", Role::Participant, &setup_errors).await?;
        observe(control, observed.clone(), stop_rx.clone())
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

    let ids = ask_questions(&mut askers, args).await?;
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
    wait_final_counts(&observed, &ids, n as u32).await;
    // Any late (extra) event would show up here.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = probe.sample();
    let _ = stop_tx.send(true);
    join_all(handles).await;
    join_all(drains).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), observer).await;

    let acked = ctx.acked.load(Ordering::Relaxed);
    let observed = std::mem::take(&mut *observed.lock().expect("observed lock"));
    let (per_question, final_at) = question_figures(&ids, &observed, started);
    let exact = per_question.iter().all(|q| q.votes == n as u32);
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

/// The host opens Q&A; returns it with as many more askers as the questions need.
async fn open_qa(
    ep: &Endpoint,
    args: &VotesArgs,
    errors: &Errors,
) -> Result<Vec<Control>, LoadError> {
    let mut host = Control::connect(ep, "host", Role::Host, errors).await?;
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
        askers.push(Control::connect(ep, &format!("asker{j}"), Role::Participant, errors).await?);
    }
    Ok(askers)
}

/// The observer: keeps each question's last count and when its `question_votes` events came.
fn observe(
    control: Control,
    observed: ObservedMap,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let Control { mut ws, .. } = control;
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
}

/// Asks the questions, `--questions-per-asker` each; returns their ids.
async fn ask_questions(askers: &mut [Control], args: &VotesArgs) -> Result<Vec<u64>, LoadError> {
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
    Ok(ids)
}

/// Waits (at most 5 s) until the observer saw every question reach `want`: counts are
/// coalesced, so the final one follows within a flush interval.
async fn wait_final_counts(observed: &ObservedMap, ids: &[u64], want: u32) {
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
}

/// Each question's final count and event rates; also the last event's time.
fn question_figures(
    ids: &[u64],
    observed: &HashMap<u64, Observed>,
    started: Instant,
) -> (Vec<QuestionFigures>, Instant) {
    let mut final_at = started;
    let per_question = ids
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
    (per_question, final_at)
}
