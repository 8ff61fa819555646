//! What a room is asked: an input (serialisable, so a cluster records it as it is) and, when the input is a question, where its answer goes.

use std::sync::Arc;

use convene_signaling::{Command, Poll, Question, Track};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::operator::{Operation, RoomReport};
use super::{Denied, Joiner, Place};
use crate::wire::{ConnectionId, Envelope, Frame, Viewer};

/// One input to a room: from a session, the media glue or the admin API.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomInput {
    Join {
        joiner: Joiner,
        /// This socket's id: replies go to it, and a late close of a replaced socket is ignored.
        connection: ConnectionId,
        /// A previous session to resume, and the last seq its client saw.
        resume: Option<(Uuid, u64)>,
        /// The id a new session gets: chosen by the caller, so replaying the input is exact.
        new_session: Uuid,
        /// Whether it takes the identity's seat from its other sessions, and its token's id.
        #[serde(default, skip_serializing_if = "JoinTerms::is_default")]
        terms: JoinTerms,
    },
    Client {
        session_id: Uuid,
        /// The socket that sent it, for a reply that cannot wait for the room (unavailable).
        connection: ConnectionId,
        request_id: Option<String>,
        command: Command,
    },
    Closed {
        session_id: Uuid,
        connection: ConnectionId,
        /// The client closed on purpose: no grace period.
        left: bool,
    },
    CheckBanned {
        identity: String,
    },
    ExportQuestions,
    ExportPolls,
    MediaAccess {
        identity: String,
    },
    TrackPublished(Track),
    TrackUnpublished(String),
    /// The admin API acting on the room (`RoomState::operate`).
    Operate(Operation),
    /// An access token was revoked: the sessions that joined with it close.
    Revoke {
        token_id: String,
    },
}

/// How a join treats the identity's other sessions, and which token it came with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTerms {
    /// One live session per identity: a page's fresh join closes the identity's other
    /// exclusive sessions (another tab, window or device). WHIP publishers are not exclusive:
    /// a presenter's OBS runs beside their page.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exclusive: bool,
    /// The access token's `jti`, so revoking it closes this session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
}

impl JoinTerms {
    pub fn is_default(&self) -> bool {
        *self == JoinTerms::default()
    }
}

/// Where the answer to a question goes; the kind matches the input's.
pub enum Reply {
    Join(oneshot::Sender<Result<Start, Denied>>),
    Banned(oneshot::Sender<bool>),
    Questions(oneshot::Sender<Vec<Question>>),
    Polls(oneshot::Sender<Vec<Poll>>),
    Media(oneshot::Sender<Option<MediaRights>>),
    Operate(oneshot::Sender<Result<RoomReport, Denied>>),
}

impl Reply {
    /// Answers at once that the room cannot be reached, for replies that can carry a refusal;
    /// the others are dropped (the caller then sees the room gone).
    pub fn refuse(self, denied: Denied) {
        match self {
            Reply::Join(tx) => {
                let _ = tx.send(Err(denied));
            }
            Reply::Operate(tx) => {
                let _ = tx.send(Err(denied));
            }
            _ => {}
        }
    }
}

/// An input and, for a question, where its answer goes.
pub struct RoomCommand {
    pub input: RoomInput,
    pub reply: Option<Reply>,
}

/// An input that asks nothing back.
impl From<RoomInput> for RoomCommand {
    fn from(input: RoomInput) -> RoomCommand {
        RoomCommand { input, reply: None }
    }
}

/// What a joining session starts with.
pub struct Start {
    pub session_id: Uuid,
    pub viewer: Viewer,
    /// Whether the member may publish media where they are (at join time).
    pub may_publish: bool,
    /// Kinds a moderator muted (at join time).
    pub muted: Vec<convene_signaling::TrackKind>,
    /// `welcome` or `resumed`.
    pub first: Frame,
    /// Missed events to filter and send after `first` (resume only).
    pub replay: Vec<Arc<Envelope>>,
    /// Live events with a higher seq follow.
    pub seq: u64,
}

/// What the room says a member may do with media.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaRights {
    pub place: Place,
    pub may_publish: bool,
    /// Kinds a moderator muted.
    pub muted: Vec<convene_signaling::TrackKind>,
}
