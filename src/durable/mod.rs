//! A single node's durable rooms: each room's inputs go to the store before they are applied, and a restarted node rebuilds its live rooms from it (snapshot plus inputs, as a cluster takeover does).

mod room;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use convene_core::room::actor::{ActorConfig, Clock, RoomCommand, RoomHandle};
use convene_core::room::registry::{OnExit, RoomStarter};
use convene_core::wire::SessionSink;
use convene_store::{GroupCommit, Store, StoreError};
use tokio::sync::mpsc;

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
}

impl DurableRooms {
    /// Rebuilds every room the store holds a live log for. A room whose log cannot be read
    /// is left in the store (logged) rather than stopping the node.
    pub async fn open(
        store: Store,
        config: &crate::config::StoreConfig,
        actor: ActorConfig,
        sink: Arc<dyn SessionSink>,
    ) -> Result<DurableRooms, StoreError> {
        let settings = Settings {
            config: actor,
            sink,
            log: GroupCommit::start(store.clone(), config.max_batch_writes),
            snapshot_every: config.snapshot_every,
        };
        let clock = Clock::start();
        let mut rebuilt = HashMap::new();
        let started = std::time::Instant::now();
        for name in store.rooms().await? {
            let stored = store.room_log(&name).await?;
            let (handle, rx) = RoomHandle::channel(&name);
            match DurableRoom::rebuild(&name, stored, &settings, &handle) {
                Ok(mut room) => {
                    room.close_dead_sockets(clock.now()).await;
                    rebuilt.insert(name, Rebuilt { room, handle, rx });
                }
                Err(error) => tracing::error!(room = %name, %error, "cannot rebuild the room"),
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
        })
    }

    /// The rebuilt rooms: the registry starts each so their timers and graces run.
    pub fn rebuilt_rooms(&self) -> Vec<String> {
        let rebuilt = self.rebuilt.lock().expect("rebuilt lock");
        let mut names: Vec<String> = rebuilt.keys().cloned().collect();
        names.sort();
        names
    }
}

impl RoomStarter for DurableRooms {
    fn start(&self, name: &str, on_exit: OnExit) -> RoomHandle {
        let waiting = self.rebuilt.lock().expect("rebuilt lock").remove(name);
        let (room, handle, rx) = match waiting {
            Some(Rebuilt { room, handle, rx }) => (room, handle, rx),
            None => {
                let (handle, rx) = RoomHandle::channel(name);
                let room = DurableRoom::new(name, &self.settings, &handle, self.clock.now());
                (room, handle, rx)
            }
        };
        let ttl = self.settings.config.empty_room_ttl;
        let clock = self.clock;
        let exit_handle = handle.clone();
        tokio::spawn(async move {
            room::run(room, clock, rx, ttl).await;
            on_exit(&exit_handle);
        });
        handle
    }
}
