//! What rooms tell this node ([`RoomHooks`]): command and fan-out timings to the metrics, webhook events to the queue, published events to the convening's record, relay credentials for `welcome`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use convene_core::room::actor::RoomHooks;
use convene_signaling::{IceServer, Millis, RoomEvent};

use crate::turn::Turn;
use crate::webhooks::{WebhookEvent, Webhooks};

pub struct NodeHooks {
    pub webhooks: Webhooks,
    pub turn: Option<Turn>,
    /// The record's writer, once the store is open (none without a store).
    pub recorder: Arc<OnceLock<Arc<crate::record::Recorder>>>,
}

impl RoomHooks for NodeHooks {
    fn command_handled(&self, took: Duration) {
        crate::metrics::command_handled(took);
    }

    fn superseded_command(&self) {
        crate::metrics::superseded_command();
    }
    fn fanned_out(&self, took: Duration) {
        crate::metrics::observe_fanout(took);
    }

    fn webhook(&self, event: WebhookEvent) {
        self.webhooks.emit(event);
    }

    fn record(&self, room: &str, seq: u64, event: &RoomEvent, person: Option<&str>, now: Millis) {
        if let Some(recorder) = self.recorder.get() {
            recorder.published(room, seq, event, person, now);
        }
    }

    fn ice_servers(&self, identity: &str, until: Option<u64>) -> Vec<IceServer> {
        let now = crate::auth::unix_now();
        self.turn
            .iter()
            .map(|t| t.ice_server(identity, t.expiry(now, until)))
            .collect()
    }
}
