//! One durable room: its inputs are appended to the store (group commit) before they are applied, so no ack leaves before its input is durable; snapshots bound the replay.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use convene_core::room::actor::{
    simple_error, ActorConfig, Clock, CoreSnapshot, RoomCommand, RoomCore, RoomHandle, RoomHooks,
    RoomInput,
};
use convene_core::room::Denied;
use convene_core::wire::{Envelope, RoomOutput, SessionSink};
use convene_signaling::{CloseReason, ErrorCode, Millis, RoomEvent};
use convene_store::{GroupCommit, RoomLog, Write};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::record::Recorder;

/// Inputs taken from a room's inbox into one append.
const APPLY_BATCH: usize = 256;
/// How long to wait before appending again when the store refused.
const RETRY: Duration = Duration::from_millis(200);

/// What the log records: an input, or a timer run, each with the time it was applied at.
#[derive(Serialize, Deserialize)]
struct Entry {
    now: Millis,
    what: Recorded,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Recorded {
    Input(RoomInput),
    Tick,
}

/// A snapshot as stored: the cluster's core snapshot plus the events kept for resumes.
#[derive(Serialize)]
struct SnapshotOut<'a> {
    core: CoreSnapshot,
    recent: Vec<&'a Envelope>,
    last_now: Millis,
}

#[derive(Deserialize)]
struct SnapshotIn {
    core: CoreSnapshot,
    recent: Vec<Envelope>,
    last_now: Millis,
}

/// Inputs that change the room; questions (exports, checks) are answered without a record.
fn changes_room(input: &RoomInput) -> bool {
    !matches!(
        input,
        RoomInput::CheckBanned { .. }
            | RoomInput::ExportQuestions
            | RoomInput::ExportPolls
            | RoomInput::MediaAccess { .. }
    )
}

/// A sink for replays: the sockets those events were for are gone.
struct Silent;

impl SessionSink for Silent {
    fn deliver(&self, _room: &str, _output: RoomOutput) {}
    fn room_ended(&self, _room: &str) {}
    fn connections_in(&self, _room: &str) -> usize {
        0
    }
    fn close_room(&self, _room: &str, _reason: CloseReason) {}
}

#[derive(Clone)]
pub(super) struct Settings {
    pub(super) config: ActorConfig,
    pub(super) sink: Arc<dyn SessionSink>,
    pub(super) log: GroupCommit,
    pub(super) snapshot_every: u64,
    pub(super) recorder: Option<Arc<Recorder>>,
}

/// A replay's hooks: no webhooks or metrics again, but the record sees every event (it
/// writes nothing twice), so rows a kill -9 lost before their commit come back.
struct ReplayHooks(Arc<dyn RoomHooks>);

impl RoomHooks for ReplayHooks {
    fn record(&self, room: &str, seq: u64, event: &RoomEvent, person: Option<&str>, now: Millis) {
        self.0.record(room, seq, event, person, now);
    }
}

/// A room whose inputs go to the store first.
pub(super) struct DurableRoom {
    name: String,
    core: RoomCore,
    sink: Arc<dyn SessionSink>,
    log: GroupCommit,
    next_input: u64,
    last_now: Millis,
    since_snapshot: u64,
    snapshot_every: u64,
}

impl DurableRoom {
    /// A room no one used before: its log opens with the first append.
    pub(super) fn new(name: &str, s: &Settings, handle: &RoomHandle, now: Millis) -> DurableRoom {
        s.log.write_later(vec![Write::Open {
            room: name.to_string(),
            at: now as i64,
        }]);
        let core = RoomCore::new(
            name,
            s.config.clone(),
            s.sink.clone(),
            handle.sessions.clone(),
            now,
        );
        DurableRoom::with(name, core, s, 1, now)
    }

    fn with(name: &str, core: RoomCore, s: &Settings, next: u64, now: Millis) -> DurableRoom {
        DurableRoom {
            name: name.to_string(),
            core,
            sink: s.sink.clone(),
            log: s.log.clone(),
            next_input: next,
            last_now: now,
            since_snapshot: 0,
            snapshot_every: s.snapshot_every.max(1),
        }
    }

    /// The room as its log left it: the snapshot, then every input after it, in silence
    /// (no socket, no webhook), giving the events the room gave the first time.
    pub(super) fn rebuild(
        name: &str,
        stored: RoomLog,
        s: &Settings,
        handle: &RoomHandle,
    ) -> Result<DurableRoom, String> {
        let mut quiet = s.config.clone();
        quiet.hooks = Arc::new(ReplayHooks(s.config.hooks.clone()));
        let silent: Arc<dyn SessionSink> = Arc::new(Silent);
        let connected = handle.sessions.clone();
        let (mut core, mut next, mut last_now) = match stored.snapshot {
            Some((through, body)) => {
                let snap: SnapshotIn =
                    serde_json::from_str(&body).map_err(|e| format!("snapshot: {e}"))?;
                let recent = snap.recent.into_iter().map(Arc::new).collect();
                let core = RoomCore::restore(snap.core, recent, quiet, silent, connected.clone())
                    .map_err(|e| format!("snapshot: {e}"))?;
                // The count of open sessions starts where the snapshot left it: the closes
                // recorded after it (and the dead sockets') count down from there.
                connected.store(core.open_sessions().len(), Ordering::Relaxed);
                (core, through + 1, snap.last_now)
            }
            None => {
                let first = stored.inputs.first().map(|(_, body)| body.as_str());
                let now = first
                    .and_then(|b| serde_json::from_str::<Entry>(b).ok())
                    .map_or(0, |e| e.now);
                (RoomCore::new(name, quiet, silent, connected, now), 1, now)
            }
        };
        let mut replayed = 0usize;
        for (number, body) in stored.inputs {
            if number != next {
                return Err(format!("input {next} is missing (found {number})"));
            }
            let entry: Entry =
                serde_json::from_str(&body).map_err(|e| format!("input {number}: {e}"))?;
            match entry.what {
                Recorded::Input(input) => core.handle(input.into(), entry.now),
                Recorded::Tick => core.tick(entry.now),
            }
            last_now = entry.now;
            next += 1;
            replayed += 1;
        }
        let hooks: Arc<dyn RoomHooks> = s.config.hooks.clone();
        core.rewire(s.sink.clone(), hooks);
        tracing::info!(
            room = name,
            replayed,
            seq = core.last_seq(),
            "room rebuilt from the store"
        );
        let mut room = DurableRoom::with(name, core, s, next, last_now);
        room.since_snapshot = replayed as u64;
        Ok(room)
    }

    /// The time of the last input applied.
    pub(super) fn last_now(&self) -> Millis {
        self.last_now
    }

    /// The sockets of the sessions a stopped process held are gone: they close now (and may
    /// resume within the grace), recorded like any close.
    pub(super) async fn close_dead_sockets(&mut self, now: Millis) {
        let closes = self
            .core
            .open_sessions()
            .into_iter()
            .map(|(session_id, connection)| {
                RoomCommand::from(RoomInput::Closed {
                    session_id,
                    connection,
                    left: false,
                })
            })
            .collect();
        self.apply(closes, now).await;
    }

    fn number(&self, offset: u64, now: Millis, what: Recorded) -> Write {
        let body = serde_json::to_string(&Entry { now, what }).expect("inputs serialise");
        Write::Input {
            room: self.name.clone(),
            number: self.next_input + offset,
            body,
        }
    }

    /// Appends the batch's inputs, then applies them; if the store refuses, what can be
    /// refused is (unavailable), and closes and tracks wait until it takes them.
    pub(super) async fn apply(&mut self, batch: Vec<RoomCommand>, now: Millis) {
        let now = now.max(self.last_now);
        let writes: Vec<Write> = batch
            .iter()
            .filter(|c| changes_room(&c.input))
            .enumerate()
            .map(|(i, c)| self.number(i as u64, now, Recorded::Input(c.input.clone())))
            .collect();
        if !writes.is_empty() {
            if let Err(error) = self.log.write(writes).await {
                tracing::error!(room = %self.name, %error, "cannot append to the store");
                let owed = self.refuse(batch, now);
                if !owed.is_empty() {
                    tokio::time::sleep(RETRY).await;
                    Box::pin(self.apply(owed, now)).await;
                }
                return;
            }
        }
        self.last_now = now;
        for cmd in batch {
            if changes_room(&cmd.input) {
                self.next_input += 1;
                self.since_snapshot += 1;
            }
            self.core.handle(cmd, now);
        }
        self.maybe_snapshot();
    }

    /// Answers what may be refused; returns what the room must still hear.
    fn refuse(&mut self, batch: Vec<RoomCommand>, now: Millis) -> Vec<RoomCommand> {
        let denied = || {
            let mut d = Denied::new(ErrorCode::Unavailable, "the room's store is unavailable");
            d.retry_after_ms = Some(RETRY.as_millis() as u64);
            d
        };
        let mut owed = Vec::new();
        for cmd in batch {
            match &cmd.input {
                input if !changes_room(input) => self.core.handle(cmd, now),
                RoomInput::Client {
                    connection,
                    request_id,
                    ..
                } => {
                    if let Some(request_id) = request_id {
                        let d = denied();
                        let frame = simple_error(Some(request_id.clone()), d.code, d.message);
                        let to = *connection;
                        self.sink
                            .deliver(&self.name, RoomOutput::Reply { to, frame });
                    }
                }
                RoomInput::Join { .. } | RoomInput::Operate(_) => {
                    if let Some(reply) = cmd.reply {
                        reply.refuse(denied());
                    }
                }
                _ => owed.push(cmd),
            }
        }
        owed
    }

    /// Runs the room's timers at `now`, once the run is recorded.
    pub(super) async fn tick(&mut self, now: Millis) {
        let now = now.max(self.last_now);
        let write = self.number(0, now, Recorded::Tick);
        if let Err(error) = self.log.write(vec![write]).await {
            tracing::error!(room = %self.name, %error, "cannot record a timer run");
            tokio::time::sleep(RETRY).await;
            return;
        }
        self.last_now = now;
        self.next_input += 1;
        self.since_snapshot += 1;
        self.core.tick(now);
        self.maybe_snapshot();
    }

    /// Queues a snapshot every `snapshot_every` inputs; it commits after them, in order.
    fn maybe_snapshot(&mut self) {
        if self.since_snapshot < self.snapshot_every {
            return;
        }
        let snapshot = self.take_snapshot();
        self.log.write_later(vec![snapshot]);
    }

    /// The node is stopping: a snapshot of everything so far, committed before the room
    /// lets go, so the next start rebuilds from it instead of replaying the tail.
    async fn final_snapshot(&mut self) {
        if self.since_snapshot == 0 {
            return;
        }
        let snapshot = self.take_snapshot();
        if let Err(error) = self.log.write(vec![snapshot]).await {
            tracing::warn!(room = %self.name, %error, "no final snapshot: the next start replays the log");
        }
    }

    fn take_snapshot(&mut self) -> Write {
        self.since_snapshot = 0;
        let recent = self.core.recent();
        let body = serde_json::to_string(&SnapshotOut {
            core: self.core.snapshot(),
            recent: recent.iter().map(|e| &**e).collect(),
            last_now: self.last_now,
        })
        .expect("snapshots serialise");
        Write::Snapshot {
            room: self.name.clone(),
            through: self.next_input - 1,
            body,
        }
    }
}

/// Runs the room until it has been empty for the configured time (its log then goes), or
/// until the node stops (`stopping`, or every handle gone): the log stays for the next start.
pub(super) async fn run(
    mut room: DurableRoom,
    clock: Clock,
    mut rx: mpsc::Receiver<RoomCommand>,
    ttl: Duration,
    mut stopping: watch::Receiver<bool>,
    recorder: Option<Arc<Recorder>>,
) {
    let mut empty_since: Option<Instant> = Some(Instant::now());
    let mut closed = false;
    loop {
        let deadline = room
            .core
            .next_deadline()
            .map(|t| Instant::now() + Duration::from_millis(t.saturating_sub(clock.now())));
        let expiry = empty_since.map(|t| t + ttl);
        let wake = [deadline, expiry].into_iter().flatten().min();
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(cmd) => {
                    let mut batch = vec![cmd];
                    while batch.len() < APPLY_BATCH {
                        let Ok(more) = rx.try_recv() else { break };
                        batch.push(more);
                    }
                    room.apply(batch, clock.now()).await;
                }
                None => break,
            },
            () = until_stopping(&mut stopping) => {
                room.final_snapshot().await;
                return;
            }
            _ = sleep_until_opt(wake) => {
                if room.core.next_deadline().is_some_and(|t| t <= clock.now()) {
                    room.tick(clock.now()).await;
                }
            }
        }
        if room.core.is_idle() {
            let since = *empty_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= ttl {
                tracing::info!(room = %room.name, "room closed after being empty");
                closed = true;
                break;
            }
        } else {
            empty_since = None;
        }
    }
    room.core.end(clock.now());
    if closed {
        if let Some(recorder) = recorder {
            recorder.room_closed(&room.name, clock.now());
        }
        room.log.write_later(vec![Write::Close { room: room.name }]);
    }
}

/// Resolves once the node is stopping (or whoever could stop it is gone).
async fn until_stopping(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stop| *stop).await;
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
