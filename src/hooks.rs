//! What rooms tell this node ([`RoomHooks`]): command and fan-out timings to the metrics, webhook events to the queue, relay credentials for `welcome`.

use std::time::Duration;

use convene_core::room::actor::RoomHooks;
use convene_signaling::IceServer;

use crate::turn::Turn;
use crate::webhooks::{WebhookEvent, Webhooks};

pub struct NodeHooks {
    pub webhooks: Webhooks,
    pub turn: Option<Turn>,
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

    fn ice_servers(&self, identity: &str, until: Option<u64>) -> Vec<IceServer> {
        let now = crate::auth::unix_now();
        self.turn
            .iter()
            .map(|t| t.ice_server(identity, t.expiry(now, until)))
            .collect()
    }
}
