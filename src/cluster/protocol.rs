//! What nodes say to each other through Redis: a room's recorded inputs, the owner's answers to calls, and its orders for sessions.
//!
//! A `RoomCommand` is a serialisable `RoomInput`, recorded as it is, and a `Reply` that waits
//! on the asking node until the owner's [`CallResult`] completes it.

use std::sync::Arc;

use convene_signaling::{CloseReason, Command, Millis, Poll, Question};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use uuid::Uuid;

use convene_core::room::actor::{MediaRights, Reply, RoomInput, Start};
use convene_core::room::operator::RoomReport;
use convene_core::room::Denied;
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

/// A recorded input: one of the room's own, as sessions sent it, or one only an owner records.
/// Untagged, so each is stored exactly as its own enum writes it (`{"join":{..}}`, `"tick"`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Input {
    Room(RoomInput),
    Owner(OwnerInput),
}

impl From<RoomInput> for Input {
    fn from(input: RoomInput) -> Input {
        Input::Room(input)
    }
}

impl From<OwnerInput> for Input {
    fn from(input: OwnerInput) -> Input {
        Input::Owner(input)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OwnerInput {
    /// The owner's timers were due at `now`.
    Tick,
    /// A node stopped heartbeating: its sockets are gone, its sessions wait out the grace.
    NodeGone { node: String },
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
    /// Heads a batch the sender may send again (a relayed session's replies, retried when
    /// Redis answered too late to tell whether it took them): the receiver opens each
    /// `(from, batch)` once.
    Once {
        from: String,
        batch: u64,
    },
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
        CloseReason::SESSION_REPLACED,
        CloseReason::REVOKED,
        CloseReason::REMOVED,
        CloseReason::SLOW,
        CloseReason::GOING_AWAY,
    ]
    .into_iter()
    .find(|r| r.code == code)
    .unwrap_or(CloseReason::RESTARTING)
}

/// Completes a call with the owner's answer; one of the wrong kind is dropped (the caller
/// sees the room gone).
pub fn complete(call: Reply, result: CallResult) {
    match (call, result) {
        (Reply::Join(tx), CallResult::Join(r)) => {
            let _ = tx.send(r.map(Start::from));
        }
        (Reply::Banned(tx), CallResult::Banned(r)) => {
            let _ = tx.send(r);
        }
        (Reply::Questions(tx), CallResult::Questions(r)) => {
            let _ = tx.send(r);
        }
        (Reply::Polls(tx), CallResult::Polls(r)) => {
            let _ = tx.send(r);
        }
        (Reply::Media(tx), CallResult::Media(r)) => {
            let _ = tx.send(r);
        }
        (Reply::Operate(tx), CallResult::Operate(r)) => {
            let _ = tx.send(r);
        }
        _ => tracing::warn!("a call's answer was of the wrong kind"),
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
    /// Where the core answers `input`, and where the owner collects it; none for inputs that
    /// ask nothing.
    pub fn expect(input: &RoomInput) -> (Option<Reply>, Option<Answer>) {
        fn pair<T>(
            reply: fn(oneshot::Sender<T>) -> Reply,
            answer: fn(oneshot::Receiver<T>) -> Answer,
        ) -> (Option<Reply>, Option<Answer>) {
            let (tx, rx) = oneshot::channel();
            (Some(reply(tx)), Some(answer(rx)))
        }
        match input {
            RoomInput::Join { .. } => pair(Reply::Join, Answer::Join),
            RoomInput::CheckBanned { .. } => pair(Reply::Banned, Answer::Banned),
            RoomInput::ExportQuestions => pair(Reply::Questions, Answer::Questions),
            RoomInput::ExportPolls => pair(Reply::Polls, Answer::Polls),
            RoomInput::MediaAccess { .. } => pair(Reply::Media, Answer::Media),
            RoomInput::Operate(_) => pair(Reply::Operate, Answer::Operate),
            RoomInput::Client { .. }
            | RoomInput::Closed { .. }
            | RoomInput::Revoke { .. }
            | RoomInput::TrackPublished(_)
            | RoomInput::TrackUnpublished(_) => (None, None),
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs recorded by earlier builds stay readable, and new ones are written the same way.
    #[test]
    fn recorded_inputs_keep_their_bytes() {
        let id = Uuid::from_u128(7);
        let recorded = [
            (Input::from(OwnerInput::Tick), r#""tick""#.to_string()),
            (Input::from(OwnerInput::Skip), r#""skip""#.to_string()),
            (
                OwnerInput::NodeGone { node: "n3".into() }.into(),
                r#"{"node_gone":{"node":"n3"}}"#.to_string(),
            ),
            (
                RoomInput::ExportQuestions.into(),
                r#""export_questions""#.to_string(),
            ),
            (
                RoomInput::TrackUnpublished("t1".into()).into(),
                r#"{"track_unpublished":"t1"}"#.to_string(),
            ),
            (
                RoomInput::Closed {
                    session_id: id,
                    connection: id,
                    left: true,
                }
                .into(),
                format!(r#"{{"closed":{{"session_id":"{id}","connection":"{id}","left":true}}}}"#),
            ),
        ];
        for (input, json) in recorded {
            assert_eq!(serde_json::to_string(&input).unwrap(), json);
            let read: Input = serde_json::from_str(&json).unwrap();
            assert_eq!(serde_json::to_string(&read).unwrap(), json);
        }
        assert!(serde_json::from_str::<Input>(r#""a_later_input""#).is_err());
    }
}
