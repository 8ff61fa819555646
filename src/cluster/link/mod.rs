//! One room on one node of a cluster: records the room's inputs, and runs the room's sequencer (its events for this node) and, while this node holds the lease, its owner.

mod owner;
mod sequencer;
mod takeover;

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use convene_signaling::{CloseReason, ErrorCode};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::protocol::{Input, InputRecord};
use super::store::{self, StoreError};
use super::{Cluster, LinkMessage};
use convene_core::room::actor::{error_frame, RoomCommand, RoomHandle, RoomInput};
use convene_core::room::Denied;
use convene_core::wire::RoomOutput;
use owner::Owner;
use sequencer::Sequencer;
use takeover::Postponed;

/// Inputs recorded in one Redis call.
const SUBMIT_BATCH: usize = 64;
/// Entries read per repair call.
const REPAIR_BATCH: usize = 1000;
/// How often the link looks after its lease, timers and repairs.
const MAINTENANCE: Duration = Duration::from_millis(50);
/// A stream read now and then finds what pub/sub lost without a later message to show it.
const TAIL_CHECK: Duration = Duration::from_millis(1000);
use super::RETRY_AFTER_MS;

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
        events: Sequencer::new(room),
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

struct Link {
    cluster: Cluster,
    room: String,
    local_sessions: Arc<std::sync::atomic::AtomicUsize>,
    inbox_tx: mpsc::UnboundedSender<LinkMessage>,
    /// The room's events, in order, for this node's lanes.
    events: Sequencer,
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
        self.events.learn_position(&cluster).await;
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

    /// Records local inputs; refused ones are answered `unavailable` at once.
    async fn submit(&mut self, batch: Vec<RoomCommand>) {
        let node = self.cluster.node().to_string();
        let now = self.cluster.clock().now();
        let mut records = Vec::with_capacity(batch.len());
        let mut refused = Vec::new();
        for command in batch {
            let RoomCommand { input, reply } = command;
            let call = reply.map(|reply| self.cluster.expect_answer(reply));
            let record = InputRecord {
                node: node.clone(),
                now,
                call,
                input: Input::Room(input),
            };
            let json = serde_json::to_string(&record).expect("inputs serialise");
            if let Input::Room(RoomInput::Client {
                connection,
                request_id,
                ..
            }) = &record.input
            {
                // A session's command is bounded in size and by the node's buckets before
                // it reaches Redis; the sender alone hears of a refusal.
                if let Err(refusal) = self.cluster.admit(json.len()) {
                    let frame = refusal.frame(request_id.clone());
                    let reply = RoomOutput::Reply {
                        to: *connection,
                        frame,
                    };
                    self.cluster.hub().deliver(&self.room, reply);
                    continue;
                }
            }
            records.push(json);
            refused.push(record);
        }
        if records.is_empty() {
            return;
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
            call.refuse(denied.clone());
        }
        match record.input {
            Input::Room(RoomInput::Client {
                connection,
                request_id,
                ..
            }) => self.cluster.hub().deliver(
                &self.room,
                RoomOutput::Reply {
                    to: connection,
                    frame: error_frame(request_id, denied),
                },
            ),
            Input::Room(
                RoomInput::Closed { .. }
                | RoomInput::Revoke { .. }
                | RoomInput::TrackPublished(_)
                | RoomInput::TrackUnpublished(_),
            ) => {
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
            LinkMessage::Events(payload) => self.events.on_published(&self.cluster, &payload).await,
            LinkMessage::Inputs(payload) => {
                if let Some(owner) = self.owner.as_mut() {
                    owner.offer_published(&payload);
                }
            }
            LinkMessage::Resubscribed => {
                self.events.repair(&self.cluster, None).await;
                while self.read_inputs().await {
                    self.apply_and_append().await;
                }
            }
        }
    }

    /// The owner reads inputs pub/sub lost (one batch from the next expected); false when
    /// nothing came.
    async fn read_inputs(&mut self) -> bool {
        let Some(owner) = self.owner.as_mut() else {
            return false;
        };
        match owner.read_inputs(&self.cluster).await {
            Ok(0) | Err(_) => false,
            Ok(_) => {
                crate::metrics::cluster_gap_repaired();
                true
            }
        }
    }

    /// Applies ready inputs (owner only), appends what they produced, and reads back inputs
    /// pub/sub lost.
    async fn flush(&mut self) {
        loop {
            self.apply_and_append().await;
            let Some(owner) = self.owner.as_ref() else {
                return;
            };
            if owner.holds_batch() || !owner.misses_inputs() {
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
            if !owner.apply_next_batch() {
                let settings = self.cluster.settings();
                if owner.snapshot_due(
                    settings.snapshot_every,
                    settings.bounds.snapshot_input_bytes,
                ) {
                    self.save_snapshot().await;
                }
                return;
            }
        }
    }

    /// Stores the room as it is after every appended batch, and drops the inputs it covers.
    async fn save_snapshot(&mut self) {
        let Some(owner) = self.owner.as_mut() else {
            return;
        };
        match owner.save_snapshot(&self.cluster).await {
            Ok(()) => {}
            Err(StoreError::Fenced) => self.step_down("another node holds the room's fence"),
            Err(_) => self.cluster.mark_unhealthy(),
        }
    }

    /// Appends the pending batch; false while it cannot be (Redis away, or no longer owner).
    async fn append_unflushed(&mut self) -> bool {
        let Some(owner) = self.owner.as_mut() else {
            return true;
        };
        match owner.append_unflushed(&self.cluster).await {
            Ok(None) => true,
            Ok(Some(appended)) => {
                self.events.on_appended(&self.cluster, appended.events);
                self.cluster.deliver(appended.local);
                true
            }
            Err(StoreError::Fenced) => {
                self.step_down("another node holds the room's fence");
                false
            }
            Err(error) => {
                self.cluster.mark_unhealthy();
                tracing::warn!(room = %self.room, %error, "append failed; retrying");
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
        if !self.events.knows_position() {
            self.events.learn_position(&self.cluster).await;
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
        if let Some(owner) = self.owner.as_mut() {
            owner.record_due_inputs(&self.cluster).await;
            self.flush().await;
        }
        if now >= self.next_tail_check {
            self.next_tail_check = now + TAIL_CHECK;
            self.check_tails().await;
        }
        let sessions = self.cluster.hub().connections_in(&self.room);
        self.local_sessions.store(sessions, Ordering::Relaxed);
        let idle = sessions == 0 && self.owner.as_ref().is_none_or(Owner::is_idle);
        if !idle {
            self.idle_since = None;
            return false;
        }
        let since = *self.idle_since.get_or_insert(now);
        now.duration_since(since) >= self.cluster.actor_config().empty_room_ttl
    }

    async fn look_after_lease(&mut self, lease_ms: u64) {
        let node = self.cluster.node().to_string();
        if let Some(token) = self.owner.as_ref().map(Owner::token) {
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
        self.cluster
            .subscribe(store::inputs_channel(&self.room), self.inbox_tx.clone())
            .await;
        let (owner, replayed) = match takeover::rebuild(&self.cluster, &self.room, token).await {
            Ok(rebuilt) => rebuilt,
            Err(Postponed { why, error }) => {
                tracing::warn!(room = %self.room, %error, "takeover postponed: {why}");
                let _ = self.cluster.store().release(&self.room, token).await;
                return;
            }
        };
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

    /// Reads the streams' ends: pub/sub may have lost a last message with nothing after it.
    async fn check_tails(&mut self) {
        if !self.cluster.healthy() {
            return;
        }
        self.events.check_tail(&self.cluster).await;
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
        self.events.relearn_position(&self.cluster).await;
    }

    /// Gives the room back at once (shutdown or the link ending) so another node takes it.
    async fn hand_back(&mut self) {
        self.flush().await;
        self.save_snapshot().await;
        if let Some(owner) = self.owner.take() {
            let _ = self
                .cluster
                .store()
                .release(&self.room, owner.token())
                .await;
            self.cluster.set_owned(&self.room, false);
            tracing::info!(room = %self.room, "handed the room back");
        }
    }
}
