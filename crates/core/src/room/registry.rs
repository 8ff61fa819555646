//! The rooms of this node: finds a room's handle, starting it (through a [`RoomStarter`]) when its first member arrives.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::actor::{self, ActorConfig, Clock, RoomHandle};
use crate::wire::SessionSink;

/// Runs what the room exits with, once, when it closes.
pub type OnExit = Box<dyn FnOnce(&RoomHandle) + Send + 'static>;

/// Starts a room somewhere other than in this process alone: the cluster implements it with
/// a link to the room's owner node. Without one, rooms run as local actors.
pub trait RoomStarter: Send + Sync + 'static {
    fn start(&self, room: &str, on_exit: OnExit) -> RoomHandle;
}

#[derive(Clone)]
pub struct Rooms {
    inner: Arc<Inner>,
}

struct Inner {
    rooms: Mutex<HashMap<String, RoomHandle>>,
    config: ActorConfig,
    sink: Arc<dyn SessionSink>,
    clock: Clock,
    /// Set: rooms are shared with other nodes, and each room here is a link to its owner.
    starter: Option<Arc<dyn RoomStarter>>,
}

impl Rooms {
    pub fn new(
        config: ActorConfig,
        sink: Arc<dyn SessionSink>,
        starter: Option<Arc<dyn RoomStarter>>,
    ) -> Rooms {
        Rooms {
            inner: Arc::new(Inner {
                rooms: Mutex::new(HashMap::new()),
                config,
                sink,
                clock: Clock::start(),
                starter,
            }),
        }
    }

    /// The running room, if any.
    pub fn get(&self, name: &str) -> Option<RoomHandle> {
        let rooms = self.inner.rooms.lock().expect("rooms lock poisoned");
        rooms.get(name).filter(|h| !h.is_closed()).cloned()
    }

    /// The running room, started if needed. Call only for an authorised member.
    pub fn get_or_start(&self, name: &str) -> RoomHandle {
        let mut rooms = self.inner.rooms.lock().expect("rooms lock poisoned");
        if let Some(handle) = rooms.get(name).filter(|h| !h.is_closed()) {
            return handle.clone();
        }
        let weak = Arc::downgrade(&self.inner);
        let on_exit = move |exited: &RoomHandle| {
            if let Some(inner) = weak.upgrade() {
                let mut rooms = inner.rooms.lock().expect("rooms lock poisoned");
                if rooms
                    .get(&*exited.name)
                    .is_some_and(|h| h.same_room(exited))
                {
                    rooms.remove(&*exited.name);
                }
            }
        };
        let handle = match &self.inner.starter {
            Some(starter) => starter.start(name, Box::new(on_exit)),
            None => actor::spawn(
                name,
                self.inner.config.clone(),
                self.inner.sink.clone(),
                self.inner.clock,
                on_exit,
            ),
        };
        rooms.insert(name.to_string(), handle.clone());
        tracing::info!(room = name, "room started");
        handle
    }

    pub fn len(&self) -> usize {
        self.inner.rooms.lock().expect("rooms lock poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn names(&self) -> Vec<String> {
        let rooms = self.inner.rooms.lock().expect("rooms lock poisoned");
        let mut names: Vec<String> = rooms.keys().cloned().collect();
        names.sort();
        names
    }
}
