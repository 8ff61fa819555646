//! One room on one node of a cluster: records the room's inputs, feeds its events to this node's lanes in order, and owns the room while this node holds its lease.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use convene_signaling::{CloseReason, ErrorCode, Millis};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use super::follower::{Follower, Read};
use super::protocol::{self, CallResult, Input, InputRecord, NodeMessage};
use super::store::{self, StoreError};
use super::{Cluster, LinkMessage};
use convene_core::room::actor::{error_frame, CoreSnapshot, RoomCommand, RoomCore, RoomHandle};
use convene_core::room::Denied;
use convene_core::wire::{ConnectionId, Envelope, RoomOutput, SessionSink};

/// Inputs recorded in one Redis call.
const SUBMIT_BATCH: usize = 64;
/// Inputs applied before their events are appended in one Redis call.
const APPLY_BATCH: usize = 256;
/// Entries read per repair call.
const REPAIR_BATCH: usize = 1000;
/// How often the link looks after its lease, timers and repairs.
const MAINTENANCE: Duration = Duration::from_millis(50);
/// A stream read now and then finds what pub/sub lost without a later message to show it.
const TAIL_CHECK: Duration = Duration::from_millis(1000);
/// At most one snapshot this often: a big room's (a 5,000-person webcast: about 1.5 MB)
/// costs its owner and Redis a few milliseconds, which a burst of joins must not repeat.
const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(10);
/// What sessions are told to wait while Redis is away.
const RETRY_AFTER_MS: u64 = 1000;

pub fn spawn(
    cluster: Cluster,
    room: &str,
    on_exit: impl FnOnce(&RoomHandle) + Send + 'static,
) -> RoomHandle {
    let (handle, rx) = RoomHandle::channel(room);
    let (inbox_tx, inbox) = mpsc::unbounded_channel();
    let link = Link {
        room: room.to_string(),
        local_sessions: handle.sessions.clone(),
        cluster,
        inbox_tx,
        events: Follower::unplaced(),
        owner: None,
        retry: VecDeque::new(),
        lease_seen: None,
        next_lease_check: Instant::now(),
        next_tail_check: Instant::now() + TAIL_CHECK,
        idle_since: None,
        closing: false,
    };
    let exit_handle = handle.clone();
    tokio::spawn(async move {
        link.run(rx, inbox).await;
        on_exit(&exit_handle);
    });
    handle
}

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
struct Batch {
    events: Vec<Arc<Envelope>>,
    /// The last input applied in it.
    through: u64,
    /// Per node, in order.
    messages: BTreeMap<String, Vec<NodeMessage>>,
}

/// This node's ownership of the room.
struct Owner {
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
    snapshot_at: Instant,
}

/// What a snapshot holds: the core, and what the owner keeps beside it.
#[derive(serde::Serialize, serde::Deserialize)]
struct OwnerSnapshot {
    core: CoreSnapshot,
    origins: Vec<(ConnectionId, String, Uuid)>,
    last_now: Millis,
}

#[derive(Deserialize)]
struct EventBatch {
    /// Unix microseconds at the owner's append.
    t: u64,
    e: Vec<Envelope>,
}

struct Link {
    cluster: Cluster,
    room: String,
    local_sessions: Arc<std::sync::atomic::AtomicUsize>,
    inbox_tx: mpsc::UnboundedSender<LinkMessage>,
    /// The room's events, in order, for this node's lanes; placed where the stream was when
    /// this link subscribed.
    events: Follower<Arc<Envelope>>,
    owner: Option<Owner>,
    /// Inputs that must be recorded (closes, tracks) and could not be yet.
    retry: VecDeque<String>,
    /// The lease holder's last renewal (unix ms) when last seen: a takeover's wait counts from it.
    lease_seen: Option<u64>,
    next_lease_check: Instant,
    next_tail_check: Instant,
    idle_since: Option<Instant>,
    /// The node is shutting down: rooms handed back are not taken again.
    closing: bool,
}

impl Link {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<RoomCommand>,
        mut inbox: mpsc::UnboundedReceiver<LinkMessage>,
    ) {
        let cluster = self.cluster.clone();
        cluster
            .subscribe(store::events_channel(&self.room), self.inbox_tx.clone())
            .await;
        self.learn_event_position().await;
        let mut restarts = cluster.restarts();
        let mut shutdown = cluster.shutting_down();
        let mut maintenance = tokio::time::interval(MAINTENANCE);
        maintenance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = commands.recv() => {
                    let Some(command) = command else { break };
                    let mut batch = vec![command];
                    while batch.len() < SUBMIT_BATCH {
                        match commands.try_recv() {
                            Ok(command) => batch.push(command),
                            Err(_) => break,
                        }
                    }
                    self.submit(batch).await;
                }
                message = inbox.recv() => {
                    let Some(message) = message else { break };
                    self.on_message(message).await;
                    // Whatever else arrived meanwhile, before a flush.
                    while let Ok(message) = inbox.try_recv() {
                        self.on_message(message).await;
                    }
                    self.flush().await;
                }
                _ = maintenance.tick() => {
                    if self.maintain().await {
                        break;
                    }
                }
                _ = restarts.changed() => self.restart().await,
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        self.closing = true;
                        self.hand_back().await;
                    }
                }
            }
        }
        self.hand_back().await;
        cluster.unsubscribe(&store::events_channel(&self.room));
        cluster.unsubscribe(&store::inputs_channel(&self.room));
        cluster.hub().room_ended(&self.room);
    }

    async fn learn_event_position(&mut self) {
        match self
            .cluster
            .store()
            .last_number(&store::events_key(&self.room))
            .await
        {
            Ok(last) => self.events.place(last + 1),
            Err(error) => {
                self.cluster.mark_unhealthy();
                tracing::warn!(room = %self.room, %error, "cannot read the room's event stream yet");
            }
        }
    }

    /// Records local inputs; refused ones are answered `unavailable` at once.
    async fn submit(&mut self, batch: Vec<RoomCommand>) {
        let node = self.cluster.node().to_string();
        let now = self.cluster.clock().now();
        let mut records = Vec::with_capacity(batch.len());
        let mut refused = Vec::new();
        for command in batch {
            let (input, call) = protocol::split(command);
            let call = call.map(|call| self.cluster.expect_answer(call));
            let record = InputRecord {
                node: node.clone(),
                now,
                call,
                input,
            };
            records.push(serde_json::to_string(&record).expect("inputs serialise"));
            refused.push(record);
        }
        if self.cluster.healthy() {
            match self.cluster.store().submit(&self.room, &records).await {
                Ok(_) => return,
                Err(error) => {
                    self.cluster.mark_unhealthy();
                    tracing::warn!(room = %self.room, %error, "could not record inputs");
                }
            }
        }
        for (record, json) in refused.into_iter().zip(records) {
            self.refuse(record, json);
        }
    }

    /// Answers an input Redis did not take: commands get `unavailable`; closes and tracks
    /// wait to be recorded, since the room must hear of them.
    fn refuse(&mut self, record: InputRecord, json: String) {
        let denied = Denied {
            code: ErrorCode::Unavailable,
            message: "the room's store is unreachable; retry shortly".into(),
            retry_after_ms: Some(RETRY_AFTER_MS),
        };
        if let Some(call) = record.call.and_then(|id| self.cluster.abandon_call(id)) {
            call.unavailable(denied.clone());
        }
        match record.input {
            Input::Client {
                connection,
                request_id,
                ..
            } => self.cluster.hub().deliver(
                &self.room,
                RoomOutput::Reply {
                    to: connection,
                    frame: error_frame(request_id, denied),
                },
            ),
            Input::Closed { .. } | Input::TrackPublished(_) | Input::TrackUnpublished(_) => {
                self.retry.push_back(json);
            }
            _ => {}
        }
    }

    async fn on_message(&mut self, message: LinkMessage) {
        match message {
            LinkMessage::Events(payload) if payload == store::RELEASED => {
                // The owner handed the room back: take it now rather than at the next check.
                self.next_lease_check = Instant::now();
            }
            LinkMessage::Events(payload) => match serde_json::from_str::<EventBatch>(&payload) {
                Ok(batch) => {
                    let sent = batch.t;
                    for envelope in batch.e {
                        self.events.offer(envelope.seq, Arc::new(envelope));
                    }
                    let now = crate::auth::unix_now_us();
                    crate::metrics::observe_cluster_bus(Duration::from_micros(
                        now.saturating_sub(sent),
                    ));
                    self.deliver_events().await;
                }
                Err(error) => tracing::warn!(room = %self.room, %error, "unreadable event batch"),
            },
            LinkMessage::Inputs(payload) => {
                let Some(owner) = self.owner.as_mut() else {
                    return;
                };
                let mut lines = payload.lines();
                let Some(first) = lines.next().and_then(|n| n.parse::<u64>().ok()) else {
                    return;
                };
                for (i, line) in lines.enumerate() {
                    owner
                        .inputs
                        .offer(first + i as u64, readable(&self.room, line));
                }
            }
            LinkMessage::Resubscribed => {
                self.repair_events(None).await;
                while self.read_inputs().await {
                    self.apply_and_append().await;
                }
            }
        }
    }

    /// Pushes ready events onto this node's lanes; reads a gap back from the stream.
    async fn deliver_events(&mut self) {
        self.push_ready_events();
        if let Some(gap) = self.events.gap() {
            self.repair_events(Some(gap)).await;
        }
    }

    fn push_ready_events(&mut self) {
        let hub = self.cluster.hub();
        for (_, envelope) in self.events.ready() {
            hub.deliver(&self.room, RoomOutput::Publish(envelope));
        }
    }

    /// Reads missed events from the stream (`None`: whatever follows the last delivered).
    async fn repair_events(&mut self, read: Option<Read>) {
        if !self.events.is_placed() {
            self.learn_event_position().await;
            return;
        }
        let key = store::events_key(&self.room);
        let mut read = read.unwrap_or_else(|| self.events.rest());
        loop {
            let entries = match self
                .cluster
                .store()
                .range(&key, read.from, read.to, REPAIR_BATCH)
                .await
            {
                Ok(entries) => entries,
                Err(error) => {
                    tracing::warn!(room = %self.room, %error, "event repair failed; retrying later");
                    return;
                }
            };
            let took = self.events.take(read, entries, REPAIR_BATCH, |json| {
                serde_json::from_str::<Envelope>(&json).ok().map(Arc::new)
            });
            if took.count == 0 {
                break;
            }
            if let Some(oldest) = took.trimmed_to {
                // The stream no longer holds what this node missed: its sessions start over.
                tracing::warn!(room = %self.room, missing_from = read.from, oldest, "events missed here were trimmed; sessions resume");
                self.cluster
                    .hub()
                    .close_room(&self.room, CloseReason::RESTARTING);
                let last = self
                    .cluster
                    .store()
                    .last_number(&key)
                    .await
                    .unwrap_or(oldest);
                self.events.place(last + 1);
                return;
            }
            crate::metrics::cluster_gap_repaired();
            self.push_ready_events();
            match took.more {
                Some(more) => read = more,
                None => break,
            }
        }
    }

    /// The owner reads inputs pub/sub lost (one batch from the next expected); false when
    /// nothing came.
    async fn read_inputs(&mut self) -> bool {
        let Some(owner) = self.owner.as_mut() else {
            return false;
        };
        let key = store::inputs_key(&self.room);
        let read = owner.inputs.rest();
        let Ok(entries) = self
            .cluster
            .store()
            .range(&key, read.from, read.to, REPAIR_BATCH)
            .await
        else {
            return false;
        };
        let room = &self.room;
        // Inputs are trimmed only up to a snapshot, which an owner takes of inputs it applied:
        // a read from the next one never finds them trimmed.
        let took = owner.inputs.take(read, entries, REPAIR_BATCH, |json| {
            Some(readable(room, &json))
        });
        if took.count == 0 {
            return false;
        }
        crate::metrics::cluster_gap_repaired();
        true
    }

    /// Applies ready inputs (owner only), appends what they produced, and reads back inputs
    /// pub/sub lost.
    async fn flush(&mut self) {
        loop {
            self.apply_and_append().await;
            let Some(owner) = self.owner.as_ref() else {
                return;
            };
            if owner.unflushed.is_some() || owner.inputs.gap().is_none() {
                return;
            }
            if !self.read_inputs().await {
                return;
            }
        }
    }

    async fn apply_and_append(&mut self) {
        loop {
            if !self.append_unflushed().await {
                return;
            }
            let Some(owner) = self.owner.as_mut() else {
                return;
            };
            match owner.apply_ready(APPLY_BATCH) {
                Some(batch) => owner.unflushed = Some(batch),
                None => {
                    if owner.applied_since_snapshot >= self.cluster.settings().snapshot_every
                        && owner.snapshot_at.elapsed() >= SNAPSHOT_INTERVAL
                    {
                        self.save_snapshot().await;
                    }
                    return;
                }
            }
        }
    }

    /// Stores the room as it is after every appended batch, and drops the inputs it covers.
    async fn save_snapshot(&mut self) {
        let Some(owner) = self.owner.as_mut() else {
            return;
        };
        if owner.unflushed.is_some() {
            return;
        }
        let snapshot = OwnerSnapshot {
            core: owner.core.snapshot(),
            origins: owner
                .origins
                .iter()
                .map(|(c, (n, s))| (*c, n.clone(), *s))
                .collect(),
            last_now: owner.last_now,
        };
        let stored = store::Snapshot {
            state: serde_json::to_string(&snapshot).expect("snapshots serialise"),
            input: owner.inputs.next() - 1,
            seq: owner.core.last_seq(),
        };
        match self
            .cluster
            .store()
            .save_snapshot(&self.room, owner.token, &stored)
            .await
        {
            Ok(()) => {
                owner.applied_since_snapshot = 0;
                owner.snapshot_at = Instant::now();
            }
            Err(StoreError::Fenced) => self.step_down("another node holds the room's fence"),
            Err(_) => self.cluster.mark_unhealthy(),
        }
    }

    /// Appends the pending batch; false while it cannot be (Redis away, or no longer owner).
    async fn append_unflushed(&mut self) -> bool {
        let Some(owner) = self.owner.as_mut() else {
            return true;
        };
        let Some(batch) = owner.unflushed.take() else {
            return true;
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
        let wire = format!(
            "{{\"t\":{},\"e\":[{}]}}",
            crate::auth::unix_now_us(),
            events
                .iter()
                .map(|(_, e)| e.as_str())
                .collect::<Vec<_>>()
                .join(",")
        );
        let own = self.cluster.node().to_string();
        let mut local = Vec::new();
        let mut remote = Vec::new();
        for (node, messages) in &batch.messages {
            if *node == own {
                local.extend(messages.iter().cloned());
            } else {
                remote.push((
                    node.clone(),
                    serde_json::to_string(messages).expect("node messages serialise"),
                ));
            }
        }
        let max_events = self.cluster.actor_config().event_log_len;
        let appended = self
            .cluster
            .store()
            .append(
                &self.room,
                &store::Append {
                    token: owner.token,
                    max_events,
                    events: &events,
                    applied: batch.through,
                    batch: &wire,
                    messages: &remote,
                },
            )
            .await;
        match appended {
            Ok(()) => {
                for envelope in batch.events {
                    self.events.offer(envelope.seq, envelope);
                }
                self.push_ready_events();
                self.cluster.deliver(local);
                true
            }
            Err(StoreError::Fenced) => {
                self.step_down("another node holds the room's fence");
                false
            }
            Err(error) => {
                self.cluster.mark_unhealthy();
                tracing::warn!(room = %self.room, %error, "append failed; retrying");
                if let Some(owner) = self.owner.as_mut() {
                    owner.unflushed = Some(batch);
                }
                false
            }
        }
    }

    fn step_down(&mut self, why: &str) {
        if self.owner.take().is_some() {
            tracing::warn!(room = %self.room, why, "no longer the room's owner");
            crate::metrics::cluster_fenced();
            self.cluster.set_owned(&self.room, false);
            self.cluster.unsubscribe(&store::inputs_channel(&self.room));
        }
    }

    /// Lease, timers, retries, repairs, and whether the link should end.
    async fn maintain(&mut self) -> bool {
        let now = Instant::now();
        if !self.events.is_placed() {
            self.learn_event_position().await;
        }
        if !self.retry.is_empty() && self.cluster.healthy() {
            let records: Vec<String> = self.retry.iter().cloned().collect();
            if self
                .cluster
                .store()
                .submit(&self.room, &records)
                .await
                .is_ok()
            {
                self.retry.clear();
            }
        }
        if now >= self.next_lease_check {
            let lease_ms = self.cluster.settings().lease_ms;
            self.next_lease_check = now + Duration::from_millis((lease_ms / 3).max(50));
            self.look_after_lease(lease_ms).await;
        }
        if self.owner.is_some() {
            self.record_due_inputs().await;
            self.flush().await;
        }
        if now >= self.next_tail_check {
            self.next_tail_check = now + TAIL_CHECK;
            self.check_tails().await;
        }
        let sessions = self.cluster.hub().connections_in(&self.room);
        self.local_sessions.store(sessions, Ordering::Relaxed);
        let idle = sessions == 0 && self.owner.as_ref().is_none_or(|o| o.core.is_idle());
        if !idle {
            self.idle_since = None;
            return false;
        }
        let since = *self.idle_since.get_or_insert(now);
        now.duration_since(since) >= self.cluster.actor_config().empty_room_ttl
    }

    async fn look_after_lease(&mut self, lease_ms: u64) {
        let node = self.cluster.node().to_string();
        if let Some(token) = self.owner.as_ref().map(|o| o.token) {
            match self
                .cluster
                .store()
                .renew(&self.room, &node, token, lease_ms)
                .await
            {
                Ok(true) => {}
                Ok(false) => self.step_down("the lease went to another node"),
                Err(_) => self.cluster.mark_unhealthy(),
            }
            return;
        }
        if !self.cluster.healthy() || self.closing {
            return;
        }
        match self.cluster.store().owner(&self.room).await {
            Ok(Some((_, renewed))) => self.lease_seen = Some(renewed),
            Ok(None) => {
                if let Ok(Some(token)) = self
                    .cluster
                    .store()
                    .acquire(&self.room, &node, lease_ms)
                    .await
                {
                    self.take_over(token).await;
                }
            }
            Err(_) => self.cluster.mark_unhealthy(),
        }
    }

    /// Rebuilds the room from the stored inputs and starts owning it.
    async fn take_over(&mut self, token: u64) {
        let started = Instant::now();
        // From the last owner's last renewal (about when it died) to this takeover.
        let lease_wait = self.lease_seen.map(|renewed| {
            Duration::from_millis(crate::auth::unix_now_ms().saturating_sub(renewed))
        });
        let cluster = self.cluster.clone();
        cluster
            .subscribe(store::inputs_channel(&self.room), self.inbox_tx.clone())
            .await;
        let capture = Arc::new(Capture::default());
        let (core, next_input, last_now, origins) = match self.restore(capture.clone()).await {
            Ok(Some(restored)) => restored,
            Ok(None) => (
                RoomCore::new(
                    &self.room,
                    cluster.actor_config().clone(),
                    capture.clone(),
                    Arc::new(std::sync::atomic::AtomicUsize::new(0)),
                    cluster.clock().now(),
                ),
                1,
                0,
                BTreeMap::new(),
            ),
            Err(error) => {
                tracing::warn!(room = %self.room, %error, "takeover postponed: cannot read the snapshot");
                let _ = cluster.store().release(&self.room, token).await;
                return;
            }
        };
        let mut owner = Owner {
            token,
            core,
            capture,
            inputs: Follower::new(next_input),
            last_now,
            origins,
            tick_recorded: false,
            nodes_reported_gone: BTreeSet::new(),
            unflushed: None,
            applied_since_snapshot: 0,
            snapshot_at: Instant::now(),
        };
        let store = cluster.store();
        let inputs_key = store::inputs_key(&self.room);
        let events_key = store::events_key(&self.room);
        let stored_last = match store.last_number(&events_key).await {
            Ok(last) => last,
            Err(error) => {
                tracing::warn!(room = %self.room, %error, "takeover postponed: cannot read events");
                let _ = store.release(&self.room, token).await;
                return;
            }
        };
        // Replay every recorded input; answers are dropped (their callers time out and retry).
        let mut replayed = 0u64;
        let mut regenerated: Vec<Arc<Envelope>> = Vec::new();
        // Inputs up to `answered` had their answers sent with the old owner's appends; those
        // after it (recorded while the room had no live owner) get theirs now, acks included.
        // Calls still waiting are answered whatever their place: their callers ignore repeats.
        let answered = match store.applied(&self.room).await {
            Ok(answered) => answered,
            Err(error) => {
                tracing::warn!(room = %self.room, %error, "takeover postponed: cannot read what was answered");
                let _ = store.release(&self.room, token).await;
                return;
            }
        };
        let mut answers: BTreeMap<String, Vec<NodeMessage>> = BTreeMap::new();
        loop {
            let read = owner.inputs.rest();
            let entries = match store
                .range(&inputs_key, read.from, read.to, REPAIR_BATCH)
                .await
            {
                Ok(entries) => entries,
                Err(error) => {
                    tracing::warn!(room = %self.room, %error, "takeover postponed: cannot read inputs");
                    let _ = store.release(&self.room, token).await;
                    return;
                }
            };
            let room = &self.room;
            let took = owner.inputs.take(read, entries, REPAIR_BATCH, |json| {
                Some(readable(room, &json))
            });
            if took.count == 0 {
                break;
            }
            let before = owner.inputs.next();
            while let Some(batch) = owner.apply_ready(1) {
                regenerated.extend(batch.events);
                let unanswered = batch.through > answered;
                for (node, messages) in batch.messages {
                    answers.entry(node).or_default().extend(
                        messages
                            .into_iter()
                            .filter(|m| unanswered || matches!(m, NodeMessage::Call { .. })),
                    );
                }
            }
            replayed += owner.inputs.next() - before;
            if owner.inputs.next() == before {
                break;
            }
        }
        // Events the old owner appended must match; those it never appended are appended now.
        let (known, missing): (Vec<_>, Vec<_>) =
            regenerated.into_iter().partition(|e| e.seq <= stored_last);
        if let Some(first) = known.first() {
            if let Ok(stored) = store
                .range(&events_key, first.seq, Some(stored_last), usize::MAX)
                .await
            {
                let stored: BTreeMap<u64, String> = stored.into_iter().collect();
                for envelope in &known {
                    let Some(stored) = stored.get(&envelope.seq) else {
                        continue;
                    };
                    let ours = serde_json::to_string(&**envelope).expect("envelopes serialise");
                    if *stored != ours {
                        crate::metrics::cluster_replay_mismatch();
                        tracing::error!(room = %self.room, seq = envelope.seq, "replayed event differs from the stored one");
                    }
                }
            }
        }
        answers.retain(|_, messages| !messages.is_empty());
        if !missing.is_empty() || !answers.is_empty() {
            owner.unflushed = Some(Batch {
                events: missing,
                through: owner.inputs.next() - 1,
                messages: answers,
            });
        }
        let rebuild = started.elapsed();
        tracing::info!(
            room = %self.room,
            token,
            lease_wait_ms = lease_wait.map_or(0, |w| w.as_millis() as u64),
            rebuild_ms = rebuild.as_millis() as u64,
            inputs_replayed = replayed,
            "took over room"
        );
        crate::metrics::cluster_took_over();
        self.owner = Some(owner);
        self.cluster.set_owned(&self.room, true);
        while self.read_inputs().await {
            self.apply_and_append().await;
        }
        self.flush().await;
    }

    /// The room as its last snapshot left it, with the events before it for resumes.
    #[allow(clippy::type_complexity)]
    async fn restore(
        &self,
        capture: Arc<Capture>,
    ) -> Result<
        Option<(
            RoomCore,
            u64,
            Millis,
            BTreeMap<ConnectionId, (String, Uuid)>,
        )>,
        StoreError,
    > {
        let store = self.cluster.store();
        let Some(stored) = store.load_snapshot(&self.room).await? else {
            return Ok(None);
        };
        let snapshot: OwnerSnapshot = serde_json::from_str(&stored.state)
            .map_err(|e| StoreError::Reply(format!("snapshot: {e}")))?;
        let keep = self.cluster.actor_config().event_log_len as u64;
        let from = stored.seq.saturating_sub(keep) + 1;
        let recent = store
            .range(
                &store::events_key(&self.room),
                from,
                Some(stored.seq),
                keep as usize,
            )
            .await?
            .into_iter()
            .filter_map(|(_, json)| serde_json::from_str::<Envelope>(&json).ok().map(Arc::new))
            .collect();
        let core = RoomCore::restore(
            snapshot.core,
            recent,
            self.cluster.actor_config().clone(),
            capture,
            Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        )
        .map_err(|e| StoreError::Reply(format!("snapshot: {e}")))?;
        let origins = snapshot
            .origins
            .into_iter()
            .map(|(c, n, s)| (c, (n, s)))
            .collect();
        Ok(Some((core, stored.input + 1, snapshot.last_now, origins)))
    }

    /// Timers that fell due, and nodes that died with sessions here, become recorded inputs.
    async fn record_due_inputs(&mut self) {
        let Some(owner) = self.owner.as_mut() else {
            return;
        };
        let clock = self.cluster.clock();
        let mut due = Vec::new();
        if !owner.tick_recorded && owner.core.next_deadline().is_some_and(|t| t <= clock.now()) {
            owner.tick_recorded = true;
            due.push(Input::Tick);
        }
        let nodes: BTreeSet<&String> = owner.origins.values().map(|(node, _)| node).collect();
        for node in nodes {
            if owner.nodes_reported_gone.contains(node) {
                continue;
            }
            if self.cluster.is_gone(node) {
                owner.nodes_reported_gone.insert(node.clone());
                tracing::info!(room = %self.room, node = %node, "a node with sessions here stopped heartbeating");
                due.push(Input::NodeGone { node: node.clone() });
            }
        }
        if due.is_empty() || !self.cluster.healthy() {
            if !due.is_empty() {
                owner.tick_recorded = false;
                owner.nodes_reported_gone.clear();
            }
            return;
        }
        for input in &due {
            if let Input::NodeGone { node } = input {
                let _ = self.cluster.store().mark_gone(node).await;
            }
        }
        let records: Vec<String> = due
            .into_iter()
            .map(|input| {
                serde_json::to_string(&InputRecord {
                    node: self.cluster.node().to_string(),
                    now: clock.now(),
                    call: None,
                    input,
                })
                .expect("inputs serialise")
            })
            .collect();
        if self
            .cluster
            .store()
            .submit(&self.room, &records)
            .await
            .is_err()
        {
            self.cluster.mark_unhealthy();
            if let Some(owner) = self.owner.as_mut() {
                owner.tick_recorded = false;
                owner.nodes_reported_gone.clear();
            }
        }
    }

    /// Reads the streams' ends: pub/sub may have lost a last message with nothing after it.
    async fn check_tails(&mut self) {
        if !self.cluster.healthy() {
            return;
        }
        if self.events.is_placed() {
            if let Ok(last) = self
                .cluster
                .store()
                .last_number(&store::events_key(&self.room))
                .await
            {
                if let Some(rest) = self.events.behind(last) {
                    self.repair_events(Some(rest)).await;
                }
            }
        }
        if self.owner.is_some() && self.read_inputs().await {
            self.flush().await;
        }
    }

    /// This node was presumed dead, or Redis lost its data: sessions here start over.
    async fn restart(&mut self) {
        self.step_down("the cluster restarted this node's rooms");
        let hub = self.cluster.hub();
        hub.close_room(&self.room, CloseReason::RESTARTING);
        // Lanes hold the old numbering; a new era may count from 1 again.
        hub.room_ended(&self.room);
        self.retry.clear();
        self.events.unplace();
        self.learn_event_position().await;
    }

    /// Gives the room back at once (shutdown or the link ending) so another node takes it.
    async fn hand_back(&mut self) {
        self.flush().await;
        self.save_snapshot().await;
        if let Some(owner) = self.owner.take() {
            let _ = self.cluster.store().release(&self.room, owner.token).await;
            self.cluster.set_owned(&self.room, false);
            tracing::info!(room = %self.room, "handed the room back");
        }
    }
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
            input: Input::Skip,
        }
    })
}

impl Owner {
    /// Applies up to `limit` ready inputs; the events and messages they produced, if any input
    /// was ready.
    fn apply_ready(&mut self, limit: usize) -> Option<Batch> {
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
            Input::Tick => {
                self.tick_recorded = false;
                self.core.tick(now);
            }
            Input::Skip => {}
            Input::NodeGone { node: gone } => {
                let connections: Vec<(ConnectionId, Uuid)> = self
                    .origins
                    .iter()
                    .filter(|(_, (n, _))| *n == gone)
                    .map(|(c, (_, s))| (*c, *s))
                    .collect();
                for (connection, session_id) in connections {
                    self.origins.remove(&connection);
                    self.core.handle(
                        RoomCommand::Closed {
                            session_id,
                            connection,
                            left: false,
                        },
                        now,
                    );
                }
                self.nodes_reported_gone.remove(&gone);
            }
            input => {
                let joined = match &input {
                    Input::Join { connection, .. } => Some(*connection),
                    _ => None,
                };
                let closed = match &input {
                    Input::Closed { connection, .. } => Some(*connection),
                    _ => None,
                };
                let Some((command, answer)) = protocol::command(input) else {
                    return;
                };
                self.core.handle(command, now);
                let result = answer.and_then(|a| a.take());
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use convene_core::room::actor::ActorConfig;
    use convene_core::room::{Joiner, RoomLimits};
    use convene_signaling::{Command, Role};

    fn config() -> ActorConfig {
        ActorConfig {
            limits: RoomLimits::default(),
            event_log_len: 100_000,
            idempotency_window: 64,
            empty_room_ttl: Duration::from_secs(60),
            attendance: convene_core::room::attendance::AttendanceBook::new(60_000),
            hooks: std::sync::Arc::new(convene_core::room::actor::NoHooks),
        }
    }

    fn owner() -> Owner {
        let capture = Arc::new(Capture::default());
        Owner {
            token: 1,
            core: RoomCore::new(
                "launch",
                config(),
                capture.clone(),
                Arc::new(std::sync::atomic::AtomicUsize::new(0)),
                0,
            ),
            capture,
            inputs: Follower::new(1),
            last_now: 0,
            origins: BTreeMap::new(),
            tick_recorded: false,
            nodes_reported_gone: BTreeSet::new(),
            unflushed: None,
            applied_since_snapshot: 0,
            snapshot_at: Instant::now(),
        }
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
                Input::Join {
                    joiner: Joiner {
                        identity: format!("p{i}"),
                        name: format!("Person {i}"),
                        role,
                        attrs,
                        on_stage: false,
                    },
                    connection: id(1000 + i),
                    resume: None,
                    new_session: id(i + 1),
                },
            );
        }
        let client = |i: u128, request: &str, command: Command| Input::Client {
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
                push(nodes[i as usize % 3], now, None, input.clone());
                if i % 17 == 0 {
                    // A resend after a lost ack: the same request_id applies once.
                    push(nodes[i as usize % 3], now + 1, None, input);
                }
            }
            now += 600;
            push("n1", now, None, Input::Tick);
        }
        // p5 drops and resumes on another node; then n3 dies.
        now += 5;
        push(
            "n2",
            now,
            None,
            Input::Closed {
                session_id: id(6),
                connection: id(1005),
                left: false,
            },
        );
        push(
            "n1",
            now + 10,
            Some(500),
            Input::Join {
                joiner: Joiner {
                    identity: "p5".into(),
                    name: "Person 5".into(),
                    role: Role::Participant,
                    attrs: [("team".to_string(), "team 5".to_string())].into(),
                    on_stage: false,
                },
                connection: id(9005),
                resume: Some((id(6), 40)),
                new_session: id(777),
            },
        );
        push("n1", now + 20, None, Input::NodeGone { node: "n3".into() });
        push("n1", now + 30_000, None, Input::Tick);
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
            let snapshot = OwnerSnapshot {
                core: first.core.snapshot(),
                origins: first
                    .origins
                    .iter()
                    .map(|(c, (n, s))| (*c, n.clone(), *s))
                    .collect(),
                last_now: first.last_now,
            };
            let json = serde_json::to_string(&snapshot).unwrap();
            let snapshot: OwnerSnapshot = serde_json::from_str(&json).unwrap();
            let capture = Arc::new(Capture::default());
            let recent = first.core.recent();
            let mut restored = Owner {
                core: RoomCore::restore(
                    snapshot.core,
                    recent,
                    config(),
                    capture.clone(),
                    Arc::new(std::sync::atomic::AtomicUsize::new(0)),
                )
                .unwrap(),
                capture,
                inputs: Follower::new(cut as u64 + 1),
                last_now: snapshot.last_now,
                origins: snapshot
                    .origins
                    .into_iter()
                    .map(|(c, n, s)| (c, (n, s)))
                    .collect(),
                ..owner()
            };
            before.extend(run(&mut restored, &log, cut));
            assert_eq!(before, uninterrupted, "restored at input {cut}");
        }
    }
}
