//! A scheduled convening as the room shows it: the lobby attendees wait in before the host starts it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Millis;

/// A convening that has not started yet. Attendees wait in its lobby and see nothing of the
/// room; presenters and moderators rehearse backstage (the room as usual, among staff).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct Lobby {
    /// The convening's id (the admin API's `/api/v1/convenings/{id}`).
    pub convening_id: String,
    pub title: String,
    /// Planned start, unix milliseconds.
    pub starts_at: Millis,
    /// The room opens by itself at `starts_at`; otherwise when a host or moderator starts it.
    pub auto_start: bool,
}
