//! What nodes say to each other through Redis: a room's recorded inputs, the owner's answers to calls, and its orders for sessions.
//!
//! A `RoomCommand` holds oneshot channels; here it splits into a serialisable [`Input`] and,
//! on the asking node, a [`PendingCall`] that the owner's [`CallResult`] completes.

use std::sync::Arc;

use convene_signaling::{CloseReason, Command, Millis, Poll, Question, Track};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use uuid::Uuid;

use convene_core::room::actor::{MediaRights, RoomCommand, Start};
use convene_core::room::operator::{Operation, RoomReport};
use convene_core::room::{Denied, Joiner};
use convene_core::wire::{ConnectionId, Envelope, Frame, Viewer};

/// One input as the room's input stream records it: who sent it, when, and what.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InputRecord {
    /// The node whose session or API sent it: answers go there.
    pub node: String,
    /// The sender's clock; the owner applies `max(now, last applied now)`, so replay is exact.
    pub now: Millis,
    /// The call this input answers, on `node`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<u64>,
    pub input: Input,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Input {
    Join {
        joiner: Joiner,
        connection: ConnectionId,
        resume: Option<(Uuid, u64)>,
        new_session: Uuid,
    },
    Client {
        session_id: Uuid,
        connection: ConnectionId,
        request_id: Option<String>,
        command: Command,
    },
    Closed {
        session_id: Uuid,
        connection: ConnectionId,
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
    Operate(Operation),
    /// The owner's timers were due at `now`.
    Tick,
    /// A node stopped heartbeating: its sockets are gone, its sessions wait out the grace.
    NodeGone {
        node: String,
    },
    /// In place of an entry this build could not read.
    Skip,
}

/// `Start` as it crosses nodes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StartWire {
    pub session_id: Uuid,
    pub viewer: Viewer,
    pub may_publish: bool,
    pub muted: Vec<convene_signaling::TrackKind>,
    #[serde(with = "convene_core::wire::frame_text")]
    pub first: Frame,
    pub replay: Vec<Envelope>,
    pub seq: u64,
}

impl From<Start> for StartWire {
    fn from(s: Start) -> StartWire {
        StartWire {
            session_id: s.session_id,
            viewer: s.viewer,
            may_publish: s.may_publish,
            muted: s.muted,
            first: s.first,
            replay: s.replay.iter().map(|e| (**e).clone()).collect(),
            seq: s.seq,
        }
    }
}

impl From<StartWire> for Start {
    fn from(s: StartWire) -> Start {
        Start {
            session_id: s.session_id,
            viewer: s.viewer,
            may_publish: s.may_publish,
            muted: s.muted,
            first: s.first,
            replay: s.replay.into_iter().map(Arc::new).collect(),
            seq: s.seq,
        }
    }
}

/// The owner's answer to a call.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallResult {
    Join(Result<StartWire, Denied>),
    Banned(bool),
    Questions(Vec<Question>),
    Polls(Vec<Poll>),
    Media(Option<MediaRights>),
    Operate(Result<RoomReport, Denied>),
}

/// What the owner sends a node about its sessions.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeMessage {
    Reply {
        to: ConnectionId,
        #[serde(with = "convene_core::wire::frame_text")]
        frame: Frame,
    },
    Close {
        to: ConnectionId,
        code: u16,
    },
    Call {
        id: u64,
        result: CallResult,
    },
    /// Media signaling for the room's owner, from a session on another node.
    Media(MediaRelayMessage),
}

/// A relayed media command, or the end of a relayed session.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaRelayMessage {
    Command {
        room: String,
        session_id: Uuid,
        identity: String,
        name: String,
        /// Where the session's socket is.
        node: String,
        connection: ConnectionId,
        request_id: Option<String>,
        command: Box<Command>,
    },
    End {
        session_id: Uuid,
    },
}

/// The close reason a code names; the room only ever sends known ones.
pub fn close_reason(code: u16) -> CloseReason {
    [
        CloseReason::REPLACED,
        CloseReason::REMOVED,
        CloseReason::SLOW,
        CloseReason::GOING_AWAY,
    ]
    .into_iter()
    .find(|r| r.code == code)
    .unwrap_or(CloseReason::RESTARTING)
}

/// A call waiting for the owner, on the node that asked.
pub enum PendingCall {
    Join(oneshot::Sender<Result<Start, Denied>>),
    Banned(oneshot::Sender<bool>),
    Questions(oneshot::Sender<Vec<Question>>),
    Polls(oneshot::Sender<Vec<Poll>>),
    Media(oneshot::Sender<Option<MediaRights>>),
    Operate(oneshot::Sender<Result<RoomReport, Denied>>),
}

impl PendingCall {
    /// Completes the call; a result of the wrong kind is dropped (the caller sees the room gone).
    pub fn complete(self, result: CallResult) {
        match (self, result) {
            (PendingCall::Join(tx), CallResult::Join(r)) => {
                let _ = tx.send(r.map(Start::from));
            }
            (PendingCall::Banned(tx), CallResult::Banned(r)) => {
                let _ = tx.send(r);
            }
            (PendingCall::Questions(tx), CallResult::Questions(r)) => {
                let _ = tx.send(r);
            }
            (PendingCall::Polls(tx), CallResult::Polls(r)) => {
                let _ = tx.send(r);
            }
            (PendingCall::Media(tx), CallResult::Media(r)) => {
                let _ = tx.send(r);
            }
            (PendingCall::Operate(tx), CallResult::Operate(r)) => {
                let _ = tx.send(r);
            }
            _ => tracing::warn!("a call's answer was of the wrong kind"),
        }
    }

    /// Answers at once that the room cannot be reached, for calls that can carry a refusal;
    /// the others are dropped (the caller then sees the room gone).
    pub fn unavailable(self, denied: Denied) {
        match self {
            PendingCall::Join(tx) => {
                let _ = tx.send(Err(denied));
            }
            PendingCall::Operate(tx) => {
                let _ = tx.send(Err(denied));
            }
            _ => {}
        }
    }
}

/// Splits a local command into what is recorded and what waits for the answer.
pub fn split(command: RoomCommand) -> (Input, Option<PendingCall>) {
    match command {
        RoomCommand::Join {
            joiner,
            connection,
            resume,
            new_session,
            reply,
        } => (
            Input::Join {
                joiner,
                connection,
                resume,
                new_session,
            },
            Some(PendingCall::Join(reply)),
        ),
        RoomCommand::Client {
            session_id,
            connection,
            request_id,
            command,
        } => (
            Input::Client {
                session_id,
                connection,
                request_id,
                command,
            },
            None,
        ),
        RoomCommand::Closed {
            session_id,
            connection,
            left,
        } => (
            Input::Closed {
                session_id,
                connection,
                left,
            },
            None,
        ),
        RoomCommand::CheckBanned { identity, reply } => (
            Input::CheckBanned { identity },
            Some(PendingCall::Banned(reply)),
        ),
        RoomCommand::ExportQuestions { reply } => {
            (Input::ExportQuestions, Some(PendingCall::Questions(reply)))
        }
        RoomCommand::ExportPolls { reply } => (Input::ExportPolls, Some(PendingCall::Polls(reply))),
        RoomCommand::MediaAccess { identity, reply } => (
            Input::MediaAccess { identity },
            Some(PendingCall::Media(reply)),
        ),
        RoomCommand::TrackPublished(track) => (Input::TrackPublished(track), None),
        RoomCommand::TrackUnpublished(id) => (Input::TrackUnpublished(id), None),
        RoomCommand::Operate { op, reply } => {
            (Input::Operate(op), Some(PendingCall::Operate(reply)))
        }
    }
}

/// An answer the owner collects after applying a command.
pub enum Answer {
    Join(oneshot::Receiver<Result<Start, Denied>>),
    Banned(oneshot::Receiver<bool>),
    Questions(oneshot::Receiver<Vec<Question>>),
    Polls(oneshot::Receiver<Vec<Poll>>),
    Media(oneshot::Receiver<Option<MediaRights>>),
    Operate(oneshot::Receiver<Result<RoomReport, Denied>>),
}

impl Answer {
    /// The answer, once the core has handled the command (it answers synchronously).
    pub fn take(self) -> Option<CallResult> {
        Some(match self {
            Answer::Join(mut rx) => CallResult::Join(rx.try_recv().ok()?.map(StartWire::from)),
            Answer::Banned(mut rx) => CallResult::Banned(rx.try_recv().ok()?),
            Answer::Questions(mut rx) => CallResult::Questions(rx.try_recv().ok()?),
            Answer::Polls(mut rx) => CallResult::Polls(rx.try_recv().ok()?),
            Answer::Media(mut rx) => CallResult::Media(rx.try_recv().ok()?),
            Answer::Operate(mut rx) => CallResult::Operate(rx.try_recv().ok()?),
        })
    }
}

/// A recorded input as a command for the core, with where its answer will be. `Tick` and
/// `NodeGone` are not commands: the owner handles them itself.
pub fn command(input: Input) -> Option<(RoomCommand, Option<Answer>)> {
    Some(match input {
        Input::Join {
            joiner,
            connection,
            resume,
            new_session,
        } => {
            let (reply, rx) = oneshot::channel();
            (
                RoomCommand::Join {
                    joiner,
                    connection,
                    resume,
                    new_session,
                    reply,
                },
                Some(Answer::Join(rx)),
            )
        }
        Input::Client {
            session_id,
            connection,
            request_id,
            command,
        } => (
            RoomCommand::Client {
                session_id,
                connection,
                request_id,
                command,
            },
            None,
        ),
        Input::Closed {
            session_id,
            connection,
            left,
        } => (
            RoomCommand::Closed {
                session_id,
                connection,
                left,
            },
            None,
        ),
        Input::CheckBanned { identity } => {
            let (reply, rx) = oneshot::channel();
            (
                RoomCommand::CheckBanned { identity, reply },
                Some(Answer::Banned(rx)),
            )
        }
        Input::ExportQuestions => {
            let (reply, rx) = oneshot::channel();
            (
                RoomCommand::ExportQuestions { reply },
                Some(Answer::Questions(rx)),
            )
        }
        Input::ExportPolls => {
            let (reply, rx) = oneshot::channel();
            (RoomCommand::ExportPolls { reply }, Some(Answer::Polls(rx)))
        }
        Input::MediaAccess { identity } => {
            let (reply, rx) = oneshot::channel();
            (
                RoomCommand::MediaAccess { identity, reply },
                Some(Answer::Media(rx)),
            )
        }
        Input::TrackPublished(track) => (RoomCommand::TrackPublished(track), None),
        Input::TrackUnpublished(id) => (RoomCommand::TrackUnpublished(id), None),
        Input::Operate(op) => {
            let (reply, rx) = oneshot::channel();
            (
                RoomCommand::Operate { op, reply },
                Some(Answer::Operate(rx)),
            )
        }
        Input::Tick | Input::NodeGone { .. } | Input::Skip => return None,
    })
}
