//! Owning a room: applies its recorded inputs in number order through `RoomCore`, appends the events and answers each batch produced, records its timers and dead nodes as inputs, and snapshots it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use convene_signaling::{CloseReason, Millis};
use tokio::time::Instant;
use uuid::Uuid;

use super::sequencer::event_batch;
use super::REPAIR_BATCH;
use crate::cluster::follower::Follower;
use crate::cluster::protocol::{Answer, CallResult, Input, InputRecord, NodeMessage, OwnerInput};
use crate::cluster::store::{self, StoreError};
use crate::cluster::Cluster;
use convene_core::room::actor::{ActorConfig, CoreSnapshot, RoomCommand, RoomCore, RoomInput};
use convene_core::wire::{ConnectionId, Envelope, RoomOutput, SessionSink};

/// Inputs applied before their events are appended in one Redis call.
const APPLY_BATCH: usize = 256;
/// At most one snapshot this often: a big room's (a 5,000-person webcast: about 1.5 MB)
/// costs its owner and Redis a few milliseconds, which a burst of joins must not repeat.
const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(10);

/// Collects what the core emits while it applies inputs.
#[derive(Default)]
struct Capture(Mutex<Vec<RoomOutput>>);

impl SessionSink for Capture {
    fn deliver(&self, _room: &str, output: RoomOutput) {
        self.0.lock().expect("capture lock").push(output);
    }
    fn room_ended(&self, _room: &str) {}
    // The owner's capture holds no sockets: the node's hub does.
    fn connections_in(&self, _room: &str) -> usize {
        0
    }
    fn close_room(&self, _room: &str, _reason: CloseReason) {}
}

impl Capture {
    fn take(&self) -> Vec<RoomOutput> {
        std::mem::take(&mut *self.0.lock().expect("capture lock"))
    }
}

/// Events and messages waiting to be appended: nothing of a batch reaches anyone before.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) events: Vec<Arc<Envelope>>,
    /// The last input applied in it.
    pub(super) through: u64,
    /// Per node, in order.
    pub(super) messages: BTreeMap<String, Vec<NodeMessage>>,
}

/// What an append delivered: its events, and the messages for this node's own sessions.
pub(super) struct Appended {
    pub(super) events: Vec<Arc<Envelope>>,
    pub(super) local: Vec<NodeMessage>,
}

/// This node's ownership of the room.
pub(super) struct Owner {
    room: String,
    token: u64,
    core: RoomCore,
    capture: Arc<Capture>,
    inputs: Follower<InputRecord>,
    last_now: Millis,
    /// Each connection's node and session, to route replies and let a dead node's sessions go.
    origins: BTreeMap<ConnectionId, (String, Uuid)>,
    /// A tick was recorded and not yet applied.
    tick_recorded: bool,
    nodes_reported_gone: BTreeSet<String>,
    /// A batch Redis did not take yet (it is away): retried before anything else is applied.
    unflushed: Option<Batch>,
    applied_since_snapshot: u64,
    /// Bytes of inputs taken since the last snapshot (duplicates too: at worst it is early).
    input_bytes_since_snapshot: usize,
    snapshot_at: Instant,
}

/// What a snapshot holds: the core, and what the owner keeps beside it.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct OwnerSnapshot {
    core: CoreSnapshot,
    origins: Vec<(ConnectionId, String, Uuid)>,
    last_now: Millis,
}

/// A recorded input, or a no-op in its place (a newer node's input this build cannot read):
/// a hole would stop the room, and every node skips the same bytes the same way.
fn readable(room: &str, json: &str) -> InputRecord {
    serde_json::from_str(json).unwrap_or_else(|error| {
        tracing::error!(room, %error, "unreadable recorded input; skipped");
        InputRecord {
            node: String::new(),
            now: 0,
            call: None,
            input: Input::Owner(OwnerInput::Skip),
        }
    })
}

impl Owner {
    /// A room no one owned before: it starts empty, at the first input.
    pub(super) fn new(token: u64, room: &str, config: ActorConfig, now: Millis) -> Owner {
        let capture = Arc::new(Capture::default());
        let core = RoomCore::new(
            room,
            config,
            capture.clone(),
            Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            now,
        );
        Owner::with(token, room, core, capture, 1)
    }

    /// The room as a snapshot left it, at `next_input`, with the events before it for resumes.
    pub(super) fn from_snapshot(
        token: u64,
        room: &str,
        snapshot: OwnerSnapshot,
        recent: Vec<Arc<Envelope>>,
        config: ActorConfig,
        next_input: u64,
    ) -> Result<Owner, serde_json::Error> {
        let capture = Arc::new(Capture::default());
        let core = RoomCore::restore(
            snapshot.core,
            recent,
            config,
            capture.clone(),
            Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        )?;
        let mut owner = Owner::with(token, room, core, capture, next_input);
        owner.last_now = snapshot.last_now;
        owner.origins = snapshot
            .origins
            .into_iter()
            .map(|(c, n, s)| (c, (n, s)))
            .collect();
        Ok(owner)
    }

    fn with(
        token: u64,
        room: &str,
        core: RoomCore,
        capture: Arc<Capture>,
        next_input: u64,
    ) -> Owner {
        Owner {
            room: room.to_string(),
            token,
            core,
            capture,
            inputs: Follower::new(next_input),
            last_now: 0,
            origins: BTreeMap::new(),
            tick_recorded: false,
            nodes_reported_gone: BTreeSet::new(),
            unflushed: None,
            applied_since_snapshot: 0,
            input_bytes_since_snapshot: 0,
            snapshot_at: Instant::now(),
        }
    }

    pub(super) fn token(&self) -> u64 {
        self.token
    }

    pub(super) fn is_idle(&self) -> bool {
        self.core.is_idle()
    }

    /// The next input to apply.
    pub(super) fn next_input(&self) -> u64 {
        self.inputs.next()
    }

    /// An input is missing before those held: pub/sub lost it.
    pub(super) fn misses_inputs(&self) -> bool {
        self.inputs.gap().is_some()
    }

    /// A batch waits to be appended.
    pub(super) fn holds_batch(&self) -> bool {
        self.unflushed.is_some()
    }

    /// Keeps a batch to append before anything else is applied.
    pub(super) fn hold(&mut self, batch: Batch) {
        self.unflushed = Some(batch);
    }

    pub(super) fn snapshot(&self) -> OwnerSnapshot {
        OwnerSnapshot {
            core: self.core.snapshot(),
            origins: self
                .origins
                .iter()
                .map(|(c, (n, s))| (*c, n.clone(), *s))
                .collect(),
            last_now: self.last_now,
        }
    }

    /// Inputs as pub/sub publishes them: the first one's number, then one per line.
    pub(super) fn offer_published(&mut self, payload: &str) {
        let mut lines = payload.lines();
        let Some(first) = lines.next().and_then(|n| n.parse::<u64>().ok()) else {
            return;
        };
        for (i, line) in lines.enumerate() {
            self.input_bytes_since_snapshot += line.len();
            self.inputs
                .offer(first + i as u64, readable(&self.room, line));
        }
    }

    /// Reads one batch of recorded inputs from the next to apply; how many came.
    pub(super) async fn read_inputs(&mut self, cluster: &Cluster) -> Result<usize, StoreError> {
        let read = self.inputs.rest();
        let entries = cluster
            .store()
            .range(
                &store::inputs_key(&self.room),
                read.from,
                read.to,
                REPAIR_BATCH,
            )
            .await?;
        let room = &self.room;
        self.input_bytes_since_snapshot +=
            entries.iter().map(|(_, json)| json.len()).sum::<usize>();
        // Inputs are trimmed only up to a snapshot, which an owner takes of inputs it applied:
        // a read from the next one never finds them trimmed.
        let took = self.inputs.take(read, entries, REPAIR_BATCH, |json| {
            Some(readable(room, &json))
        });
        Ok(took.count)
    }

    /// Applies a batch of ready inputs and holds what it produced; false when none was ready.
    pub(super) fn apply_next_batch(&mut self) -> bool {
        match self.apply_ready(APPLY_BATCH) {
            Some(batch) => {
                self.unflushed = Some(batch);
                true
            }
            None => false,
        }
    }

    /// Enough was applied since the last snapshot, and long enough ago; or the inputs it
    /// would let Redis drop reached `input_bytes` (a flood must not wait out the interval).
    pub(super) fn snapshot_due(&self, every: u64, input_bytes: usize) -> bool {
        let since = self.snapshot_at.elapsed();
        (self.applied_since_snapshot >= every && since >= SNAPSHOT_INTERVAL)
            || (self.applied_since_snapshot > 0
                && self.input_bytes_since_snapshot >= input_bytes
                && since >= Duration::from_secs(1))
    }

    /// Applies up to `limit` ready inputs; the events and messages they produced, if any input
    /// was ready.
    pub(super) fn apply_ready(&mut self, limit: usize) -> Option<Batch> {
        let mut batch = Batch::default();
        let mut applied = 0;
        while applied < limit {
            let Some((_, record)) = self.inputs.pop_ready() else {
                break;
            };
            applied += 1;
            self.apply(record, &mut batch);
        }
        batch.through = self.inputs.next() - 1;
        self.applied_since_snapshot += applied as u64;
        (applied > 0).then_some(batch)
    }

    fn apply(&mut self, record: InputRecord, batch: &mut Batch) {
        let now = record.now.max(self.last_now);
        self.last_now = now;
        let InputRecord {
            node, call, input, ..
        } = record;
        match input {
            Input::Owner(OwnerInput::Tick) => {
                self.tick_recorded = false;
                self.core.tick(now);
            }
            Input::Owner(OwnerInput::Skip) => {}
            Input::Owner(OwnerInput::NodeGone { node: gone }) => {
                let connections: Vec<(ConnectionId, Uuid)> = self
                    .origins
                    .iter()
                    .filter(|(_, (n, _))| *n == gone)
                    .map(|(c, (_, s))| (*c, *s))
                    .collect();
                for (connection, session_id) in connections {
                    self.origins.remove(&connection);
                    let closed = RoomInput::Closed {
                        session_id,
                        connection,
                        left: false,
                    };
                    self.core.handle(closed.into(), now);
                }
                self.nodes_reported_gone.remove(&gone);
            }
            Input::Room(input) => {
                let joined = match &input {
                    RoomInput::Join { connection, .. } => Some(*connection),
                    _ => None,
                };
                let closed = match &input {
                    RoomInput::Closed { connection, .. } => Some(*connection),
                    _ => None,
                };
                let (reply, answer) = Answer::expect(&input);
                self.core.handle(RoomCommand { input, reply }, now);
                let result = answer.and_then(Answer::take);
                if let (Some(connection), Some(CallResult::Join(Ok(start)))) = (joined, &result) {
                    self.origins
                        .insert(connection, (node.clone(), start.session_id));
                }
                self.route_outputs(batch);
                if let Some(connection) = closed {
                    self.origins.remove(&connection);
                }
                if let (Some(id), Some(result)) = (call, result) {
                    batch
                        .messages
                        .entry(node)
                        .or_default()
                        .push(NodeMessage::Call { id, result });
                }
                return;
            }
        }
        self.route_outputs(batch);
    }

    /// Sorts what the core emitted: events to append, replies and closes to their nodes.
    fn route_outputs(&mut self, batch: &mut Batch) {
        for output in self.capture.take() {
            match output {
                RoomOutput::Publish(envelope) => batch.events.push(envelope),
                RoomOutput::Reply { to, frame } => {
                    if let Some((node, _)) = self.origins.get(&to) {
                        batch
                            .messages
                            .entry(node.clone())
                            .or_default()
                            .push(NodeMessage::Reply { to, frame });
                    }
                }
                RoomOutput::Close { to, reason } => {
                    if let Some((node, _)) = self.origins.remove(&to) {
                        batch
                            .messages
                            .entry(node)
                            .or_default()
                            .push(NodeMessage::Close {
                                to,
                                code: reason.code,
                            });
                    }
                }
            }
        }
    }

    /// Stores the room as it is, and drops the inputs it covers; nothing while a batch waits.
    pub(super) async fn save_snapshot(&mut self, cluster: &Cluster) -> Result<(), StoreError> {
        if self.unflushed.is_some() {
            return Ok(());
        }
        let stored = store::Snapshot {
            state: serde_json::to_string(&self.snapshot()).expect("snapshots serialise"),
            input: self.inputs.next() - 1,
            seq: self.core.last_seq(),
        };
        cluster
            .store()
            .save_snapshot(&self.room, self.token, &stored)
            .await?;
        self.applied_since_snapshot = 0;
        self.input_bytes_since_snapshot = 0;
        self.snapshot_at = Instant::now();
        Ok(())
    }

    /// Appends the waiting batch, if any (kept for a retry when Redis refuses it).
    pub(super) async fn append_unflushed(
        &mut self,
        cluster: &Cluster,
    ) -> Result<Option<Appended>, StoreError> {
        let Some(batch) = self.unflushed.take() else {
            return Ok(None);
        };
        let events: Vec<(u64, String)> = batch
            .events
            .iter()
            .map(|e| {
                (
                    e.seq,
                    serde_json::to_string(&**e).expect("envelopes serialise"),
                )
            })
            .collect();
        let wire = event_batch(events.iter().map(|(_, e)| e.as_str()));
        let own = cluster.node();
        let mut local = Vec::new();
        let mut remote = Vec::new();
        for (node, messages) in &batch.messages {
            if node == own {
                local.extend(messages.iter().cloned());
            } else {
                remote.push((
                    node.clone(),
                    serde_json::to_string(messages).expect("node messages serialise"),
                ));
            }
        }
        let appended = cluster
            .store()
            .append(
                &self.room,
                &store::Append {
                    token: self.token,
                    max_events: cluster.actor_config().event_log_len,
                    events: &events,
                    applied: batch.through,
                    batch: &wire,
                    messages: &remote,
                },
            )
            .await;
        match appended {
            Ok(()) => Ok(Some(Appended {
                events: batch.events,
                local,
            })),
            Err(error) => {
                self.unflushed = Some(batch);
                Err(error)
            }
        }
    }

    /// Timers that fell due, and nodes that died with sessions here, become recorded inputs.
    pub(super) async fn record_due_inputs(&mut self, cluster: &Cluster) {
        let clock = cluster.clock();
        let mut due = Vec::new();
        if !self.tick_recorded && self.core.next_deadline().is_some_and(|t| t <= clock.now()) {
            self.tick_recorded = true;
            due.push(OwnerInput::Tick);
        }
        let nodes: BTreeSet<&String> = self.origins.values().map(|(node, _)| node).collect();
        for node in nodes {
            if self.nodes_reported_gone.contains(node) {
                continue;
            }
            if cluster.is_gone(node) {
                self.nodes_reported_gone.insert(node.clone());
                tracing::info!(room = %self.room, node = %node, "a node with sessions here stopped heartbeating");
                due.push(OwnerInput::NodeGone { node: node.clone() });
            }
        }
        if due.is_empty() {
            return;
        }
        if !cluster.healthy() {
            self.forget_recorded_due();
            return;
        }
        for input in &due {
            if let OwnerInput::NodeGone { node } = input {
                let _ = cluster.store().mark_gone(node).await;
            }
        }
        let records: Vec<String> = due
            .into_iter()
            .map(|input| {
                serde_json::to_string(&InputRecord {
                    node: cluster.node().to_string(),
                    now: clock.now(),
                    call: None,
                    input: Input::Owner(input),
                })
                .expect("inputs serialise")
            })
            .collect();
        if cluster.store().submit(&self.room, &records).await.is_err() {
            cluster.mark_unhealthy();
            self.forget_recorded_due();
        }
    }

    /// Due inputs were not recorded: the next maintenance records them again.
    fn forget_recorded_due(&mut self) {
        self.tick_recorded = false;
        self.nodes_reported_gone.clear();
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use convene_core::room::{Joiner, RoomLimits};
    use convene_signaling::{Command, Role};

    fn config() -> ActorConfig {
        ActorConfig {
            limits: RoomLimits::default(),
            event_log_len: 100_000,
            idempotency_window: 64,
            idempotency_bytes: 16 * 1024,
            idempotency_room_bytes: 4 << 20,
            empty_room_ttl: Duration::from_secs(60),
            attendance: convene_core::room::attendance::AttendanceBook::new(60_000),
            hooks: std::sync::Arc::new(convene_core::room::actor::NoHooks),
        }
    }

    fn owner() -> Owner {
        Owner::new(1, "launch", config(), 0)
    }

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    /// A recorded log from three nodes: 60 people in 6 teams join, chat, ask, vote (with
    /// resent request_ids), one resumes on another node, a node dies, timers tick.
    fn recorded_log() -> Vec<String> {
        let mut log = Vec::new();
        let mut now = 1_000_000;
        let mut push = |node: &str, now: Millis, call: Option<u64>, input: Input| {
            log.push(
                serde_json::to_string(&InputRecord {
                    node: node.into(),
                    now,
                    call,
                    input,
                })
                .unwrap(),
            );
        };
        let nodes = ["n1", "n2", "n3"];
        for i in 0..60u128 {
            now += 7;
            let role = if i == 0 {
                Role::Host
            } else {
                Role::Participant
            };
            let attrs = [("team".to_string(), format!("team {}", i % 6))].into();
            push(
                nodes[i as usize % 3],
                now,
                Some(i as u64),
                RoomInput::Join {
                    joiner: Joiner {
                        identity: format!("p{i}"),
                        name: format!("Person {i}"),
                        role,
                        attrs,
                        on_stage: false,
                        credentials_until: None,
                    },
                    connection: id(1000 + i),
                    resume: None,
                    new_session: id(i + 1),
                    terms: Default::default(),
                }
                .into(),
            );
        }
        let client = |i: u128, request: &str, command: Command| RoomInput::Client {
            session_id: id(i + 1),
            connection: id(1000 + i),
            request_id: Some(request.into()),
            command,
        };
        for round in 0..5u128 {
            for i in 1..60u128 {
                now += 13;
                let input = match (i + round) % 4 {
                    0 => client(
                        i,
                        &format!("c{i}-{round}"),
                        Command::SendChat {
                            text: format!("hello {i} {round}"),
                        },
                    ),
                    1 if round == 0 => client(
                        i,
                        &format!("q{i}"),
                        Command::AskQuestion {
                            text: format!("question from {i}?"),
                            anonymous: false,
                        },
                    ),
                    2 => client(
                        i,
                        &format!("v{i}-{round}"),
                        Command::Upvote {
                            question_id: (i % 10 + 1) as u64,
                        },
                    ),
                    _ => client(i, &format!("h{i}-{round}"), Command::RaiseHand),
                };
                push(nodes[i as usize % 3], now, None, input.clone().into());
                if i % 17 == 0 {
                    // A resend after a lost ack: the same request_id applies once.
                    push(nodes[i as usize % 3], now + 1, None, input.into());
                }
            }
            now += 600;
            push("n1", now, None, OwnerInput::Tick.into());
        }
        // p5 drops and resumes on another node; then n3 dies.
        now += 5;
        push(
            "n2",
            now,
            None,
            RoomInput::Closed {
                session_id: id(6),
                connection: id(1005),
                left: false,
            }
            .into(),
        );
        push(
            "n1",
            now + 10,
            Some(500),
            RoomInput::Join {
                joiner: Joiner {
                    identity: "p5".into(),
                    name: "Person 5".into(),
                    role: Role::Participant,
                    attrs: [("team".to_string(), "team 5".to_string())].into(),
                    on_stage: false,
                    credentials_until: None,
                },
                connection: id(9005),
                resume: Some((id(6), 40)),
                new_session: id(777),
                terms: Default::default(),
            }
            .into(),
        );
        push(
            "n1",
            now + 20,
            None,
            OwnerInput::NodeGone { node: "n3".into() }.into(),
        );
        push("n1", now + 30_000, None, OwnerInput::Tick.into());
        log
    }

    /// Events (as stored) and the messages for each node, for every input of `log` from `from`.
    fn run(owner: &mut Owner, log: &[String], from: usize) -> Vec<String> {
        let mut out = Vec::new();
        for (n, json) in log.iter().enumerate().skip(from) {
            owner.inputs.offer(n as u64 + 1, readable("launch", json));
            let batch = owner.apply_ready(1).expect("each input applies");
            for e in batch.events {
                out.push(serde_json::to_string(&*e).unwrap());
            }
            for (node, messages) in batch.messages {
                let messages: Vec<_> = messages
                    .into_iter()
                    // A welcome's TURN credentials carry the wall clock; none are configured here.
                    .map(|m| serde_json::to_string(&m).unwrap())
                    .collect();
                out.push(format!("{node}: {}", messages.join(",")));
            }
        }
        out
    }

    #[test]
    fn replaying_a_recorded_input_log_gives_byte_identical_output() {
        let log = recorded_log();
        let first = run(&mut owner(), &log, 0);
        let second = run(&mut owner(), &log, 0);
        assert_eq!(first, second);
        let events = first.iter().filter(|l| l.starts_with('{')).count();
        assert!(events > 200, "the log produced events: {events}");
        assert!(
            first
                .iter()
                .any(|l| l.contains("\\\"type\\\":\\\"resumed\\\"")),
            "p5 resumed"
        );
        assert!(
            first.iter().any(|l| l.contains("reconnecting")),
            "n3's people are reconnecting"
        );
    }

    #[test]
    fn an_owner_restored_from_a_snapshot_continues_exactly() {
        let log = recorded_log();
        let mut whole = owner();
        let uninterrupted = run(&mut whole, &log, 0);
        // Cut between a command and its resend too: the restored idempotency window must
        // answer the resend instead of applying it again.
        let input_of = |json: &str| {
            serde_json::to_string(&serde_json::from_str::<InputRecord>(json).unwrap().input)
                .unwrap()
        };
        let resends: Vec<usize> = (1..log.len())
            .filter(|&k| input_of(&log[k - 1]) == input_of(&log[k]))
            .collect();
        assert!(resends.len() >= 2, "the log has resends");
        for cut in [61, resends[0], resends[1], 200, log.len() - 3] {
            let mut first = owner();
            let mut before = run(&mut first, &log[..cut], 0);
            let json = serde_json::to_string(&first.snapshot()).unwrap();
            let snapshot: OwnerSnapshot = serde_json::from_str(&json).unwrap();
            let recent = first.core.recent();
            let mut restored =
                Owner::from_snapshot(1, "launch", snapshot, recent, config(), cut as u64 + 1)
                    .unwrap();
            before.extend(run(&mut restored, &log, cut));
            assert_eq!(before, uninterrupted, "restored at input {cut}");
        }
    }
}
