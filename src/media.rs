//! Media glue: connects a session's WebRTC signaling to the SFU for the place the room allows.

use convene_signaling::{Command, ErrorCode};

use crate::room::actor::simple_error;
use crate::session::outbox::Outbox;

/// A session's link to the SFU.
pub struct MediaLink {}

impl MediaLink {
    pub async fn handle(&self, request_id: Option<String>, _command: Command, outbox: &Outbox) {
        outbox.send(simple_error(request_id, ErrorCode::MediaError, "media is not available yet"));
    }
}
