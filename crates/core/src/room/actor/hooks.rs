//! What a room tells the node around it (`RoomHooks`): timings, webhook events, the record of each published event, and TURN credentials for `welcome`.

use std::time::Duration;

use convene_signaling::{IceServer, Millis, RoomEvent};

use crate::room::feed::WebhookEvent;

/// What a room tells the node around it: timings for metrics, webhook events, the events it
/// publishes (for the convening's record), and the relay credentials `welcome` carries. The
/// server implements it; rooms never see how.
pub trait RoomHooks: Send + Sync + 'static {
    /// `RoomState::apply` ran for one client command.
    fn command_handled(&self, _took: Duration) {}
    /// One envelope was handed to the sink.
    fn fanned_out(&self, _took: Duration) {}
    /// A command came from a socket its session had left (it resumed on another): dropped.
    fn superseded_command(&self) {}
    /// A webhook event for the node's queue (never waited for).
    fn webhook(&self, _event: WebhookEvent) {}
    /// An event was published with `seq` at `now` (to `person` alone, when so addressed). A
    /// replay offers the same events again: whoever records them keys them by seq.
    fn record(
        &self,
        _room: &str,
        _seq: u64,
        _event: &RoomEvent,
        _person: Option<&str>,
        _now: Millis,
    ) {
    }
    /// TURN relays and credentials for `identity`, when a relay is configured, expiring by
    /// `until` (unix seconds) when given.
    fn ice_servers(&self, _identity: &str, _until: Option<u64>) -> Vec<IceServer> {
        Vec::new()
    }
}

/// Hooks that report nothing: for tests and tools.
pub struct NoHooks;

impl RoomHooks for NoHooks {}
