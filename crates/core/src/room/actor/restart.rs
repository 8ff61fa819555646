//! What a node restarted on its durable log asks of a rebuilt core: the sessions whose sockets died with the old process, and the node's sink and hooks after a silent replay.

use std::sync::Arc;

use uuid::Uuid;

use super::{RoomCore, RoomHooks};
use crate::wire::{ConnectionId, SessionSink};

impl RoomCore {
    /// Sessions whose socket is open, by id: a restarted node closes them (they may resume).
    pub fn open_sessions(&self) -> Vec<(Uuid, ConnectionId)> {
        let mut open: Vec<_> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.connected)
            .map(|(id, s)| (*id, s.connection))
            .collect();
        open.sort();
        open
    }

    /// Points a core rebuilt in silence (a replay) at the node's sockets and hooks.
    pub fn rewire(&mut self, sink: Arc<dyn SessionSink>, hooks: Arc<dyn RoomHooks>) {
        self.sink = sink;
        self.config.hooks = hooks;
    }
}
