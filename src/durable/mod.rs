//! A single node's durable rooms: each room's inputs go to the store before they are applied, and a restarted node rebuilds its live rooms from it (snapshot plus inputs, as a cluster takeover does).

mod room;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use convene_core::room::actor::{ActorConfig, Clock, RoomCommand, RoomHandle};
use convene_core::room::registry::{OnExit, RoomStarter};
use convene_core::wire::SessionSink;
use convene_store::{GroupCommit, Store, StoreError};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::record::Recorder;
use room::{DurableRoom, Settings};

/// A rebuilt room waiting for the registry to start it.
struct Rebuilt {
    room: DurableRoom,
    handle: RoomHandle,
    rx: mpsc::Receiver<RoomCommand>,
}

/// Starts rooms as durable actors; implements the registry's `RoomStarter`.
pub struct DurableRooms {
    settings: Settings,
    clock: Clock,
    rebuilt: Mutex<HashMap<String, Rebuilt>>,
    /// Set when the node stops: every room commits a final snapshot and lets go.
    stopping: watch::Sender<bool>,
    running: Mutex<Vec<JoinHandle<()>>>,
    /// Held until the node stops: a second process on the same SQLite file is refused.
    data_lock: Mutex<Option<std::fs::File>>,
}

/// Takes the SQLite store's lock file (`<db>.lock`) for this process; `None` for PostgreSQL
/// or an in-memory database. Two nodes appending to one file would each rebuild and
/// extend the same logs, so the second is refused with a clear error.
pub fn lock_data(url: &str) -> std::io::Result<Option<std::fs::File>> {
    let Some(rest) = url.strip_prefix("sqlite:") else {
        return Ok(None);
    };
    let path = rest.trim_start_matches("//");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path.starts_with(':') {
        return Ok(None);
    }
    let lock_path = format!("{path}.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(std::io::Error::other(format!(
            "another Convene process is using the store {path} (its lock {lock_path} is held): \
             stop it, or give this one its own data directory"
        ))),
        Err(std::fs::TryLockError::Error(error)) => Err(error),
    }
}

impl DurableRooms {
    /// Rebuilds every room the store holds a live log for. A room whose log cannot be read
    /// is left in the store (logged) rather than stopping the node.
    pub async fn open(
        store: Store,
        log: GroupCommit,
        config: &crate::config::StoreConfig,
        actor: ActorConfig,
        sink: Arc<dyn SessionSink>,
        data_lock: Option<std::fs::File>,
        recorder: Option<Arc<Recorder>>,
    ) -> Result<DurableRooms, StoreError> {
        let settings = Settings {
            config: actor,
            sink,
            log,
            snapshot_every: config.snapshot_every,
            recorder,
        };
        let clock = Clock::start();
        let mut rebuilt = HashMap::new();
        let started = std::time::Instant::now();
        for name in store.rooms().await? {
            let stored = store.room_log(&name).await?;
            let (handle, rx) = RoomHandle::channel(&name);
            let convening = match &settings.recorder {
                Some(r) => record_open(r, &name, clock.now()).await,
                None => None,
            };
            match DurableRoom::rebuild(&name, stored, &settings, &handle) {
                Ok(mut room) => {
                    if let (Some(r), Some(convening)) = (&settings.recorder, convening) {
                        // The room stopped when the node last noted it (or its last input).
                        let alive = store.alive_at(&convening).await.ok().flatten();
                        let from = room.last_now().max(alive.unwrap_or(0).max(0) as u64);
                        r.gap(&name, from, clock.now());
                    }
                    room.close_dead_sockets(clock.now()).await;
                    rebuilt.insert(name, Rebuilt { room, handle, rx });
                }
                Err(error) => {
                    tracing::error!(room = %name, %error, "cannot rebuild the room: its log is set aside and the room starts afresh");
                    store.set_aside(&name, clock.now() as i64).await?;
                }
            }
        }
        if !rebuilt.is_empty() {
            tracing::info!(
                rooms = rebuilt.len(),
                took_ms = started.elapsed().as_millis() as u64,
                "rooms rebuilt from the store"
            );
        }
        Ok(DurableRooms {
            settings,
            clock,
            rebuilt: Mutex::new(rebuilt),
            stopping: watch::Sender::new(false),
            running: Mutex::new(Vec::new()),
            data_lock: Mutex::new(data_lock),
        })
    }

    /// The node is stopping: each room commits a snapshot of where it is (bounded by
    /// `deadline`), so the next start rebuilds without replaying the tail of its log.
    pub async fn stop(&self, deadline: std::time::Duration) {
        self.stopping.send_replace(true);
        let running = std::mem::take(&mut *self.running.lock().expect("running lock"));
        let rooms = running.len();
        let all = futures_util::future::join_all(running);
        if tokio::time::timeout(deadline, all).await.is_err() {
            tracing::warn!(
                rooms,
                "rooms still snapshotting at the end of the shutdown grace"
            );
        }
        // Every room has let go (or the grace is over): the store is free for the next node.
        self.data_lock.lock().expect("data lock").take();
    }

    /// The rebuilt rooms: the registry starts each so their timers and graces run.
    pub fn rebuilt_rooms(&self) -> Vec<String> {
        let rebuilt = self.rebuilt.lock().expect("rebuilt lock");
        let mut names: Vec<String> = rebuilt.keys().cloned().collect();
        names.sort();
        names
    }
}

/// The room's convening for the record; a store that refuses leaves the room unrecorded
/// (logged), never stopped.
async fn record_open(recorder: &Recorder, room: &str, now: u64) -> Option<String> {
    match recorder.open(room, now).await {
        Ok(convening) => Some(convening),
        Err(error) => {
            tracing::error!(room, %error, "cannot open the room's convening: not recorded");
            None
        }
    }
}

impl RoomStarter for DurableRooms {
    fn start(&self, name: &str, on_exit: OnExit) -> RoomHandle {
        let waiting = self.rebuilt.lock().expect("rebuilt lock").remove(name);
        let (room, handle, rx) = match waiting {
            Some(Rebuilt { room, handle, rx }) => (Some(room), handle, rx),
            None => {
                let (handle, rx) = RoomHandle::channel(name);
                (None, handle, rx)
            }
        };
        let ttl = self.settings.config.empty_room_ttl;
        let clock = self.clock;
        let exit_handle = handle.clone();
        let stopping = self.stopping.subscribe();
        let settings = self.settings.clone();
        let name = name.to_string();
        let task = tokio::spawn(async move {
            let room = match room {
                Some(room) => room,
                None => {
                    // The convening is known before the first event (inputs wait in the inbox).
                    if let Some(r) = &settings.recorder {
                        record_open(r, &name, clock.now()).await;
                    }
                    DurableRoom::new(&name, &settings, &exit_handle, clock.now())
                }
            };
            room::run(room, clock, rx, ttl, stopping, settings.recorder.clone()).await;
            on_exit(&exit_handle);
        });
        let mut running = self.running.lock().expect("running lock");
        running.retain(|task| !task.is_finished());
        running.push(task);
        handle
    }
}
