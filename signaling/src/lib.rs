//! Convene's wire protocol: every JSON message between a client and the server.
//!
//! The prose specification is `PROTOCOL.md` beside this crate; `schema.json`
//! is generated from these types (`cargo run -p convene-signaling --example schema`)
//! and a test fails when it drifts.
//!
//! Layout:
//! - [`ClientMessage`]: what a client sends (a [`Command`] with an optional `request_id`).
//! - [`ServerMessage`]: what the server sends (control replies and sequenced [`RoomEvent`]s).
//! - The records both sides share: [`Member`], [`ChatMessage`], [`Question`], [`Breakouts`].
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod convening;
pub use convening::Lobby;
mod captions;
mod close;
pub use captions::{Caption, CaptionSource, MAX_CAPTION_CHARS};
pub use close::CloseReason;

/// Bumped on any incompatible change; sent in `welcome` and `resumed`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Maximum length of a chat message, in characters.
pub const MAX_CHAT_CHARS: usize = 2_000;
/// Maximum length of a question, in characters.
pub const MAX_QUESTION_CHARS: usize = 500;

/// Unix time in milliseconds.
pub type Millis = u64;
/// A breakout room's id within its convening (1, 2, ...).
pub type BreakoutId = u32;

/// What a person may do, from their access token.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Host,
    Moderator,
    Presenter,
    Participant,
}

impl Role {
    /// Hosts, moderators and presenters: they see the full participant list and the whole Q&A queue.
    pub fn is_staff(self) -> bool {
        !matches!(self, Role::Participant)
    }

    /// Hosts and moderators: they moderate chat, Q&A, the stage and breakouts.
    pub fn can_moderate(self) -> bool {
        matches!(self, Role::Host | Role::Moderator)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Host => "host",
            Role::Moderator => "moderator",
            Role::Presenter => "presenter",
            Role::Participant => "participant",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "host" => Ok(Role::Host),
            "moderator" => Ok(Role::Moderator),
            "presenter" => Ok(Role::Presenter),
            "participant" => Ok(Role::Participant),
            other => Err(format!(
                "unknown role {other:?}: expected host, moderator, presenter or participant"
            )),
        }
    }
}

/// `webcast`: only stage members publish media; `meeting`: everyone may.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum RoomKind {
    #[default]
    Webcast,
    Meeting,
}

/// `open`: questions are visible when asked; `moderated`: pending until approved.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum QaMode {
    Open,
    #[default]
    Moderated,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct RoomSettings {
    pub kind: RoomKind,
    pub chat_enabled: bool,
    pub qa_mode: QaMode,
}

impl Default for RoomSettings {
    fn default() -> Self {
        RoomSettings {
            kind: RoomKind::Webcast,
            chat_enabled: true,
            qa_mode: QaMode::Moderated,
        }
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    Online,
    /// The socket dropped; the seat is kept for the grace period.
    Reconnecting,
}

/// A person in a convening, as others may see them.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub identity: String,
    pub name: String,
    pub role: Role,
    pub presence: Presence,
    pub on_stage: bool,
    pub hand_raised: bool,
    pub chat_muted: bool,
    /// The breakout this person is in; `None` is the main room.
    pub breakout: Option<BreakoutId>,
    /// Staff visiting a breakout are shown as facilitators.
    pub facilitator: bool,
    /// Token attributes (e.g. `team`), used for breakout assignment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attrs: BTreeMap<String, String>,
    /// Media kinds a moderator muted: the SFU stops forwarding them and the person cannot
    /// publish them again until a moderator allows it (they are never unmuted for them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media_muted: Vec<TrackKind>,
    /// The host granted this person the caption right: they may send captions.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub captioner: bool,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    pub id: u64,
    pub from: String,
    pub name: String,
    pub text: String,
    pub at: Millis,
    /// Where it was said; `None` is the main room.
    pub breakout: Option<BreakoutId>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum QuestionState {
    Pending,
    Approved,
    Dismissed,
    Answered,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct Question {
    pub id: u64,
    pub text: String,
    /// The author's identity and name; both `None` when asked anonymously.
    pub author: Option<String>,
    pub author_name: Option<String>,
    pub anonymous: bool,
    pub votes: u32,
    pub state: QuestionState,
    /// "Answering now": at most one question per room is live.
    pub live: bool,
    /// The text was changed by a moderator.
    pub edited: bool,
    pub answer: Option<String>,
    pub duplicate_of: Option<u64>,
    pub asked_at: Millis,
    pub updated_at: Millis,
    pub answered_at: Option<Millis>,
}

/// How people are placed into breakouts.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Assignment {
    /// Staff place each identity (`identity -> room name`); others wait in the main room.
    Manual {
        #[serde(default)]
        assignments: BTreeMap<String, String>,
    },
    /// Balanced random placement.
    Auto,
    /// One room per value of this token attribute (e.g. `team`).
    ByAttribute { key: String },
    /// Participants choose, up to `cap` per room when set.
    SelfSelect {
        #[serde(default)]
        cap: Option<u32>,
    },
}

/// The rooms of a plan: explicit names, or one per distinct value of an attribute.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(untagged)]
pub enum BreakoutRooms {
    Named(Vec<String>),
    FromAttribute { from_attribute: String },
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct BreakoutPlan {
    pub rooms: BreakoutRooms,
    pub assignment: Assignment,
    /// Minutes-long sessions are typical; `None` runs until closed.
    #[serde(default)]
    pub duration_s: Option<u32>,
    /// Participants may return to the main room before close.
    #[serde(default = "yes")]
    pub allow_leave: bool,
}

fn yes() -> bool {
    true
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct BreakoutRoom {
    pub id: BreakoutId,
    pub name: String,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BreakoutPhase {
    /// A plan exists and can be edited.
    Draft,
    Open,
    /// Close-all countdown running.
    Closing,
}

/// Breakout state in a snapshot. Staff see every assignment; a participant sees their own.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct Breakouts {
    pub phase: BreakoutPhase,
    pub plan: BreakoutPlan,
    pub rooms: Vec<BreakoutRoom>,
    /// identity -> breakout id.
    pub assignments: BTreeMap<String, BreakoutId>,
    pub ends_at: Option<Millis>,
    pub warning_at: Option<Millis>,
    pub closes_at: Option<Millis>,
}

/// The room as one viewer may see it, sent in `welcome`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct RoomSnapshot {
    pub room: String,
    pub settings: RoomSettings,
    /// Staff and meeting rooms: everyone. Webcast participants: the stage and staff only.
    pub members: Vec<Member>,
    /// People present who are not staff (online or reconnecting).
    pub participant_count: u32,
    /// Recent chat where the viewer is (main room or their breakout).
    pub chat: Vec<ChatMessage>,
    /// Questions the viewer may see, in display order (live, approved by votes, then asked time).
    pub questions: Vec<Question>,
    /// Answered questions, most recent first.
    pub answered: Vec<Question>,
    /// Question ids the viewer has upvoted.
    pub my_votes: Vec<u64>,
    /// Question ids the viewer asked (anonymous ones included).
    pub my_questions: Vec<u64>,
    pub breakouts: Option<Breakouts>,
    /// Published media tracks the viewer may subscribe to.
    pub tracks: Vec<Track>,
    /// Polls launched so far, as the viewer may see them.
    #[serde(default)]
    pub polls: Vec<Poll>,
    /// The viewer's own answers: poll id -> option indexes.
    #[serde(default)]
    pub my_poll_answers: BTreeMap<u64, Vec<u32>>,
    /// Present until a scheduled convening starts: attendees are in its lobby.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lobby: Option<Lobby>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum TrackSource {
    Camera,
    Microphone,
    Screen,
    ScreenAudio,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum TrackKind {
    Audio,
    Video,
}

/// A published media track.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct Track {
    pub id: String,
    pub publisher: String,
    pub kind: TrackKind,
    pub source: TrackSource,
    /// Where it is published; `None` is the main room.
    pub breakout: Option<BreakoutId>,
    /// Simulcast layers offered (`["h", "m", "l"]`), empty when single-layer.
    #[serde(default)]
    pub layers: Vec<String>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum VideoQuality {
    Low,
    Medium,
    High,
}

/// A client's message: a command and an optional `request_id` the reply echoes.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct ClientMessage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Optional: the room this command is meant for; a mismatch is refused with `not_in_room`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    #[serde(flatten)]
    pub command: Command,
}

impl ClientMessage {
    pub fn new(command: Command) -> Self {
        ClientMessage {
            request_id: None,
            room: None,
            command,
        }
    }

    pub fn with_request_id(command: Command, request_id: impl Into<String>) -> Self {
        ClientMessage {
            request_id: Some(request_id.into()),
            room: None,
            command,
        }
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PollState {
    Open,
    Closed,
}

/// A poll as one viewer sees it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct Poll {
    pub id: u64,
    pub question: String,
    pub options: Vec<String>,
    pub multiple: bool,
    pub live_results: bool,
    pub state: PollState,
    /// Results shared with everyone.
    pub shared: bool,
    /// Answers per option, and how many people answered; `None` where the viewer may not
    /// see results yet (participants, hidden results not shared).
    pub counts: Option<Vec<u32>>,
    pub voters: Option<u32>,
    pub created_at: Millis,
    pub closed_at: Option<Millis>,
}

/// Everything a client can ask of the server.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Application-level ping; answered with `pong`.
    Ping,

    // Room settings (host).
    UpdateSettings {
        #[serde(default)]
        kind: Option<RoomKind>,
        #[serde(default)]
        chat_enabled: Option<bool>,
        #[serde(default)]
        qa_mode: Option<QaMode>,
    },

    // Chat.
    SendChat {
        text: String,
    },
    DeleteChat {
        message_id: u64,
    },
    MuteChat {
        identity: String,
        muted: bool,
    },
    /// Staff mute (or allow again) one person's microphone or camera, or, without
    /// `identity`, every participant's. Enforced by the SFU; allowing does not unmute.
    MuteMedia {
        #[serde(default)]
        identity: Option<String>,
        kind: TrackKind,
        muted: bool,
    },

    // Hands and stage.
    RaiseHand,
    /// Lower your own hand, or (staff) someone else's.
    LowerHand {
        #[serde(default)]
        identity: Option<String>,
    },
    InviteToStage {
        identity: String,
    },
    RemoveFromStage {
        identity: String,
    },
    RemoveParticipant {
        identity: String,
        #[serde(default)]
        reason: Option<String>,
    },

    // Q&A.
    AskQuestion {
        text: String,
        #[serde(default)]
        anonymous: bool,
    },
    WithdrawQuestion {
        question_id: u64,
    },
    Upvote {
        question_id: u64,
    },
    RemoveUpvote {
        question_id: u64,
    },
    ApproveQuestion {
        question_id: u64,
    },
    DismissQuestion {
        question_id: u64,
    },
    RestoreQuestion {
        question_id: u64,
    },
    EditQuestion {
        question_id: u64,
        text: String,
    },
    /// Mark a question "answering now", or clear the live question with `null`.
    SetLiveQuestion {
        question_id: Option<u64>,
    },
    AnswerQuestion {
        question_id: u64,
        #[serde(default)]
        answer: Option<String>,
    },
    ReopenQuestion {
        question_id: u64,
    },
    MarkDuplicate {
        question_id: u64,
        duplicate_of: u64,
    },

    // Polls.
    /// Launch a poll (host, moderator); the `ack` carries its id.
    LaunchPoll {
        question: String,
        options: Vec<String>,
        /// Several choices per person (`true`) or exactly one.
        #[serde(default)]
        multiple: bool,
        /// Results shown to everyone while voting; otherwise staff only, until shared.
        #[serde(default)]
        live_results: bool,
    },
    /// Answer a poll: option indexes. Answering again replaces the earlier answer.
    VotePoll {
        poll_id: u64,
        choices: Vec<u32>,
    },
    ClosePoll {
        poll_id: u64,
    },
    /// Show the results to everyone.
    SharePollResults {
        poll_id: u64,
    },

    // Breakouts.
    /// Create or replace the plan (before opening).
    SetBreakoutPlan {
        plan: BreakoutPlan,
    },
    CancelBreakoutPlan,
    /// Place or move someone: before opening it edits the plan, while open it moves them.
    AssignBreakout {
        identity: String,
        breakout: BreakoutId,
    },
    OpenBreakouts,
    /// Self-select plans: a participant picks a room.
    ChooseBreakout {
        breakout: BreakoutId,
    },
    ExtendBreakouts {
        seconds: u32,
    },
    BroadcastToBreakouts {
        text: String,
    },
    AskForHelp,
    /// Staff take on someone's help request: it clears for all staff, and the asker hears who comes.
    HandleHelp {
        identity: String,
    },
    /// Staff visit a breakout as facilitator.
    JoinBreakout {
        breakout: BreakoutId,
    },
    /// Return to the main room (participants only when the plan allows it).
    LeaveBreakout,
    CloseBreakouts {
        #[serde(default)]
        countdown_s: Option<u32>,
    },

    // Media signaling.
    RtcOffer {
        sdp: String,
    },
    RtcAnswer {
        sdp: String,
    },
    RtcCandidate {
        candidate: String,
    },
    Unpublish {
        #[serde(default)]
        track_id: Option<String>,
    },
    SetVideoQuality {
        #[serde(default)]
        track_id: Option<String>,
        quality: VideoQuality,
    },

    // Captions.
    /// Turn captions on or off for this session: only sessions with captions on receive
    /// `caption` events. Per socket: send it again after a resume.
    SubscribeCaptions {
        on: bool,
    },
    /// Grant (or take back) the caption right (host, moderator).
    GrantCaptions {
        identity: String,
        granted: bool,
    },
    /// A captioner's line as typed: the whole current line each time, `final` when done
    /// (Enter or a pause). The `ack` carries the caption id.
    SendCaption {
        text: String,
        #[serde(default, rename = "final")]
        is_final: bool,
        /// Who is speaking, e.g. "Dr. Ruiz" (optional).
        #[serde(default)]
        speaker: Option<String>,
    },
}

/// Stable, machine-readable error codes.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, or not an object.
    MalformedJson,
    UnknownType,
    /// A field is missing or of the wrong type.
    InvalidMessage,
    /// Text empty or too long, a value out of range.
    InvalidArgument,
    /// The sender's role does not allow this.
    Forbidden,
    NotFound,
    /// The command does not fit the current state (e.g. opening breakouts twice).
    Conflict,
    ChatDisabled,
    ChatMuted,
    RateLimited,
    /// The session is not in that room or breakout.
    NotInRoom,
    /// Media is not available for this request.
    MediaError,
    /// The server is overloaded or shutting down, or (in a cluster) cannot reach the room's
    /// store: retry after `retry_after_ms` with the same `request_id`.
    Unavailable,
}

/// One member's new place in a bulk move.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct MemberMove {
    pub identity: String,
    pub breakout: Option<BreakoutId>,
}

/// Why someone left.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    Left,
    /// The grace period after a dropped connection expired.
    TimedOut,
    Removed,
}

/// A relay (or STUN server) for the client's `RTCPeerConnection`, shaped like the
/// browser's `RTCIceServer`. TURN credentials are short-lived.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// What the server sends.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The first message of a new session.
    Welcome {
        protocol: u32,
        session_id: String,
        you: Member,
        snapshot: Box<RoomSnapshot>,
        /// The room's sequence number the snapshot reflects; events follow with higher `seq`.
        seq: u64,
        /// Set when a resume was asked for but could not be honoured (the gap is older than the log).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume_failed: Option<String>,
        /// Relays for media when direct UDP and TCP fail (absent when none is configured).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ice_servers: Vec<IceServer>,
    },
    /// The first message of a resumed session: missed events follow, then live ones.
    Resumed {
        protocol: u32,
        session_id: String,
        /// Events after this seq follow, in order.
        last_seq: u64,
        /// The room's sequence number at resume time.
        seq: u64,
    },
    Ack {
        request_id: String,
        /// The id of what the command created (chat message, question).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
        code: ErrorCode,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    Pong,
    /// A sequenced room event.
    Event {
        seq: u64,
        event: RoomEvent,
    },
    /// The server is going away; reconnect (and resume) after the delay.
    ServerShutdown {
        reconnect_after_ms: u64,
    },
    /// The server's SDP answer to `rtc_offer`, or a server-initiated offer (renegotiation).
    RtcAnswer {
        sdp: String,
    },
    RtcOffer {
        sdp: String,
    },
    RtcCandidate {
        candidate: String,
    },
}

/// Something that happened in a convening, in `seq` order.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RoomEvent {
    MemberJoined {
        member: Member,
    },
    /// Presence, stage, hand, mute or location changed.
    MemberUpdated {
        member: Member,
    },
    MemberLeft {
        identity: String,
        reason: LeaveReason,
    },
    /// Sent to the removed person before their connection closes.
    Removed {
        reason: String,
    },
    /// Coalesced count of non-staff people present.
    ParticipantCount {
        count: u32,
    },
    SettingsChanged {
        settings: RoomSettings,
        /// On a switch from webcast to meeting: the audience members a webcast hid from
        /// participants, so everyone's roster is whole; empty (omitted) otherwise.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        members: Vec<Member>,
    },
    ChatMessage {
        message: ChatMessage,
    },
    ChatDeleted {
        message_id: u64,
        breakout: Option<BreakoutId>,
    },
    /// A question appeared or changed (state, text, live flag, answer).
    QuestionUpdated {
        question: Question,
    },
    /// Coalesced vote count.
    QuestionVotes {
        question_id: u64,
        votes: u32,
    },
    /// The viewer may no longer see this question (withdrawn, dismissed, merged).
    QuestionRemoved {
        question_id: u64,
    },
    /// Breakout plan or state changed (staff see every assignment, participants their own).
    BreakoutsUpdated {
        breakouts: Option<Breakouts>,
    },
    /// You were moved: into a breakout, or back to the main room (`breakout: null`).
    Moved {
        from: Option<BreakoutId>,
        breakout: Option<BreakoutId>,
        name: String,
        ends_at: Option<Millis>,
        /// People at the destination you could not see before (a webcast audience's
        /// teammates in a breakout); empty when you already see everyone there.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        members: Vec<Member>,
        /// Media already published at the destination.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tracks: Vec<Track>,
        /// The destination's recent chat (the main room's history on return).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        chat: Vec<ChatMessage>,
    },
    /// A moderator muted (or allowed again) a kind of media for many people at once.
    MediaMuted {
        kind: TrackKind,
        muted: bool,
        identities: Vec<String>,
    },
    /// Many people moved at once (breakouts opened or closed). For each move the viewer
    /// sets `breakout`, clears `hand_raised`, and on a return to the main room
    /// (`breakout: null`) sets `on_stage` to whether the member is a presenter. One event
    /// instead of one per person, so a bulk move costs each session one frame.
    MembersMoved {
        moves: Vec<MemberMove>,
    },
    BreakoutWarning {
        ends_at: Millis,
    },
    BreakoutBroadcast {
        from: String,
        text: String,
    },
    HelpRequested {
        identity: String,
        name: String,
        breakout: BreakoutId,
        breakout_name: String,
    },
    /// A help request was taken on by `by_name`; to staff and the asker.
    HelpHandled {
        identity: String,
        by_name: String,
    },
    BreakoutsClosing {
        closes_at: Millis,
    },
    BreakoutsClosed,
    TrackPublished {
        track: Track,
    },
    TrackUnpublished {
        track_id: String,
    },
    /// A poll was launched, voted on, closed or its results shared; `counts` only where the
    /// viewer may see results.
    PollUpdated {
        poll: Poll,
    },
    /// The convening has not started: to its lobby and staff (sent again when it changes).
    Lobby {
        lobby: Lobby,
    },
    /// The convening started: to staff; each attendee in the lobby gets `admitted` instead.
    ConveningStarted,
    /// You were let in from the lobby: the room as you may now see it (as in `welcome`).
    Admitted {
        snapshot: Box<RoomSnapshot>,
    },
    /// A caption line, partial or final; only to sessions that turned captions on.
    Caption {
        caption: Caption,
    },
}

/// The JSON Schema of both directions, as committed in `schema.json`.
pub fn json_schema() -> serde_json::Value {
    let client = schemars::schema_for!(ClientMessage);
    let server = schemars::schema_for!(ServerMessage);
    serde_json::json!({
        "$comment": "Generated from convene-signaling; do not edit. See PROTOCOL.md.",
        "protocol": PROTOCOL_VERSION,
        "client_message": client,
        "server_message": server,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_message_flattens_request_id() {
        let msg: ClientMessage =
            serde_json::from_str(r#"{"type":"send_chat","text":"hi","request_id":"r1"}"#).unwrap();
        assert_eq!(msg.request_id.as_deref(), Some("r1"));
        assert_eq!(msg.command, Command::SendChat { text: "hi".into() });
        let unit: ClientMessage = serde_json::from_str(r#"{"type":"raise_hand"}"#).unwrap();
        assert_eq!(unit.command, Command::RaiseHand);
    }

    #[test]
    fn unknown_type_is_an_error() {
        let err = serde_json::from_str::<ClientMessage>(r#"{"type":"fly"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown variant"), "{err}");
    }

    #[test]
    fn committed_schema_matches_types() {
        let generated = serde_json::to_string_pretty(&json_schema()).unwrap() + "\n";
        let committed = include_str!("../schema.json");
        assert!(
            generated == committed,
            "signaling/schema.json is stale: run `cargo run -p convene-signaling --example schema > signaling/schema.json`"
        );
    }
}
