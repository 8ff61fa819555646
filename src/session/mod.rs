//! Sessions: one per WebSocket. Parses and limits what the client sends, and writes out what it may see.
//!
//! A session is two halves. The reader parses `ClientMessage`s, applies rate limits and
//! forwards commands to the room actor. The writer sends the first frame (`welcome` or
//! `resumed`), then the room's events it may see, then direct replies, and pings. It never
//! blocks the room: events reach it through bounded lanes (`hub`), and a session that
//! falls a whole lane behind is closed with 1013 (the client may resume).

pub mod hub;
pub mod rate;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message};
use convene_signaling::{ClientMessage, Command, ErrorCode, ServerMessage};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::watch;
use uuid::Uuid;

use crate::config::Limits;
use crate::media::{MediaAccess, MediaLink, Mutes};
use crate::outbox::{CloseReason, Inbox, Outbox};
use convene_core::room::actor::{frame, simple_error, RoomClient, RoomInput, Start};
use convene_core::wire::{Envelope, Place, SessionEffect, Viewer};
pub use hub::{EventStream, Hub, Registration};
use rate::{CommandClass, RateLimiter};

/// Longest `request_id` accepted.
pub const MAX_REQUEST_ID_BYTES: usize = 64;

/// A send that stalls this long means the client stopped reading.
const WRITE_STALL: Duration = Duration::from_secs(20);

/// Everything a session needs, assembled by the HTTP edge after authentication.
pub struct SessionParams {
    pub room: Arc<dyn RoomClient>,
    pub identity: String,
    pub session_start: Start,
    pub connection: Uuid,
    pub events: EventStream,
    pub outbox: Outbox,
    pub inbox: Inbox,
    pub limits: Arc<Limits>,
    pub shutdown: watch::Receiver<Option<u64>>,
    pub media: Option<MediaLink>,
    /// Tells the media task where the member is and whether they may publish.
    pub media_access: watch::Sender<MediaAccess>,
    /// Keeps the connection reachable by the hub while the session runs.
    pub registration: Registration,
    /// In a cluster: sends media signaling to the room's owner when that is another node.
    pub relay: Option<Box<dyn MediaForwarder>>,
}

/// Sends a session's media signaling to where the room's media is, when that is not this
/// node (the cluster implements it). Dropping it ends what it forwarded.
pub trait MediaForwarder: Send + Sync {
    /// True when the command was forwarded (or refused) there; false: handle it here.
    fn forward<'a>(
        &'a self,
        request_id: Option<String>,
        command: &'a Command,
        outbox: &'a Outbox,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>>;
}

/// Runs a session over any WebSocket-like sink and stream until it ends.
/// How a session ended, and what of it outlives the socket.
pub struct SessionEnd {
    /// The client left on purpose.
    pub left: bool,
    /// Why the server closed it, if it did.
    pub closed: Option<CloseReason>,
    /// The session's media, which a resume may take back.
    pub media: Option<MediaLink>,
    pub media_access: watch::Sender<MediaAccess>,
}

impl SessionEnd {
    /// Whether the session may come back on another socket (and its media should wait for it).
    pub fn may_resume(&self) -> bool {
        !self.left
            && !matches!(
                self.closed,
                Some(
                    CloseReason::REMOVED
                        | CloseReason::REPLACED
                        | CloseReason::SESSION_REPLACED
                        | CloseReason::REVOKED
                )
            )
    }
}

pub async fn run<W, R>(sink: W, stream: R, params: SessionParams) -> SessionEnd
where
    W: Sink<Message> + Unpin + Send + 'static,
    R: Stream<Item = Result<Message, axum::Error>> + Unpin + Send + 'static,
{
    let span = tracing::info_span!("session", room = %params.room.room_name(), identity = %params.identity, session_id = %params.session_start.session_id);
    tracing::Instrument::instrument(run_session(sink, stream, params), span).await
}

async fn run_session<W, R>(sink: W, stream: R, params: SessionParams) -> SessionEnd
where
    W: Sink<Message> + Unpin + Send + 'static,
    R: Stream<Item = Result<Message, axum::Error>> + Unpin + Send + 'static,
{
    let SessionParams {
        room,
        identity: _,
        session_start,
        connection,
        events,
        outbox,
        inbox,
        limits,
        shutdown,
        media,
        media_access,
        registration,
        relay,
    } = params;
    let session_id = session_start.session_id;
    // Captions on or off: the reader hears the command, the writer reads the captions lane.
    let (captions_on, captions) = watch::channel(false);
    let writer = Writer {
        media_access,
        viewer: session_start.viewer.clone(),
        ping_every: Duration::from_secs(limits.ping_interval_s.max(1)),
        captions_on: false,
    };
    let (pumped, mut pump_ended) = tokio::sync::oneshot::channel();
    let writer_task = tokio::spawn(writer.run(
        sink,
        session_start,
        events,
        inbox,
        (shutdown, captions),
        pumped,
    ));
    let mut reader = Reader {
        room: room.clone(),
        session_id,
        connection,
        outbox: outbox.clone(),
        limiter: RateLimiter::new(&limits.rate),
        captions: crate::captions::Captioning::new(&limits.captions, captions_on),
        strikes: 0,
        limits: limits.clone(),
        media,
        relay,
    };
    // Whichever half ends first ends the session: a closed writer (slow reader, removal,
    // shutdown) stops the reader, and a finished reader stops the writer.
    let (left, mut closed) = tokio::select! {
        left = reader.run(stream) => {
            outbox.close(CloseReason::GOING_AWAY);
            (left, None)
        }
        // The room hears of it before the close handshake, which may wait on a stalled socket.
        reason = &mut pump_ended => (false, reason.ok().flatten()),
    };
    drop(registration);
    let _ = room
        .send_input(
            RoomInput::Closed {
                session_id,
                connection,
                left,
            }
            .into(),
        )
        .await;
    let media_access = match writer_task.await {
        Ok((reason, access)) => {
            closed = closed.or(reason);
            access
        }
        Err(_) => watch::channel(MediaAccess::default()).0,
    };
    if closed == Some(CloseReason::SLOW) {
        crate::metrics::slow_reader_closed();
    }
    tracing::debug!(left, ?closed, "session ended");
    SessionEnd {
        left,
        closed,
        media: reader.media.take(),
        media_access,
    }
}

/// What an event means for a session's media rights: one reading shared by WebSocket
/// sessions and WHIP publishers.
#[derive(Debug, PartialEq, Eq)]
pub enum Rights {
    Unchanged,
    Changed {
        place: Place,
        may_publish: bool,
        /// A moderator's mutes, when the event says them (a move keeps the current ones).
        muted: Option<Mutes>,
    },
    /// Room settings changed: ask the room again.
    Recheck,
    /// Removed from the room: the session ends.
    Removed,
}

/// Applies an event's effect to the viewer (its place) and its lanes, and says what it
/// means for media.
pub fn follow(viewer: &mut Viewer, events: &mut EventStream, event: &Envelope) -> Rights {
    match &event.effect {
        Some(SessionEffect::Move {
            identity,
            to,
            may_publish,
            ..
        }) if *identity == viewer.identity => {
            viewer.place = *to;
            events.move_to(*to);
            Rights::Changed {
                place: *to,
                may_publish: *may_publish,
                muted: None,
            }
        }
        Some(SessionEffect::Access {
            identity,
            place,
            may_publish,
            muted,
        }) if *identity == viewer.identity => Rights::Changed {
            place: *place,
            may_publish: *may_publish,
            muted: Some(Mutes::of(muted)),
        },
        Some(SessionEffect::Kick { identity }) if *identity == viewer.identity => Rights::Removed,
        Some(SessionEffect::Recheck) => Rights::Recheck,
        _ => Rights::Unchanged,
    }
}

struct Writer {
    media_access: watch::Sender<MediaAccess>,
    viewer: Viewer,
    ping_every: Duration,
    /// This session turned captions on: it delivers what the captions lane carries.
    captions_on: bool,
}

enum Next {
    Continue,
    Close(CloseReason),
}

/// Frames written before one flush: a burst of room events costs one syscall, not one each.
const BATCH: usize = 64;

impl Writer {
    async fn run<W>(
        mut self,
        mut sink: W,
        start: Start,
        mut events: EventStream,
        mut inbox: Inbox,
        (mut shutdown, mut captions): (watch::Receiver<Option<u64>>, watch::Receiver<bool>),
        pumped: tokio::sync::oneshot::Sender<Option<CloseReason>>,
    ) -> (Option<CloseReason>, watch::Sender<MediaAccess>)
    where
        W: Sink<Message> + Unpin,
    {
        let reason = self
            .pump(
                &mut sink,
                start,
                &mut events,
                &mut inbox,
                &mut shutdown,
                &mut captions,
            )
            .await;
        let _ = pumped.send(reason);
        if let Some(reason) = reason {
            let close = Message::Close(Some(CloseFrame {
                code: reason.code,
                reason: reason.reason.into(),
            }));
            let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(close)).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
        (reason, self.media_access)
    }

    /// Returns the close frame to send, if any.
    async fn pump<W>(
        &mut self,
        sink: &mut W,
        start: Start,
        events: &mut EventStream,
        inbox: &mut Inbox,
        shutdown: &mut watch::Receiver<Option<u64>>,
        captions: &mut watch::Receiver<bool>,
    ) -> Option<CloseReason>
    where
        W: Sink<Message> + Unpin,
    {
        if !self.write(sink, Message::Text(start.first), events).await {
            return Some(CloseReason::SLOW);
        }
        for event in &start.replay {
            if let Next::Close(reason) = self.deliver(sink, event, events).await {
                return Some(reason);
            }
        }
        events.skip_through(start.seq);
        if !self.flush(sink, events).await {
            return Some(CloseReason::SLOW);
        }
        let mut ping = tokio::time::interval_at(
            tokio::time::Instant::now() + self.ping_every,
            self.ping_every,
        );
        let already = *shutdown.borrow();
        if let Some(after) = already {
            return self.shutdown(sink, after, events).await;
        }
        loop {
            tokio::select! {
                biased;
                _ = inbox.close.changed() => {
                    return *inbox.close.borrow();
                }
                _ = shutdown.changed() => {
                    let after = *shutdown.borrow();
                    if let Some(after) = after {
                        return self.shutdown(sink, after, events).await;
                    }
                }
                Ok(()) = captions.changed() => {
                    self.captions_on = *captions.borrow_and_update();
                    events.set_captions(self.captions_on);
                }
                event = events.recv() => {
                    // This event, then whatever else is already waiting, then one flush.
                    let mut next = Some(event);
                    let mut batched = 0;
                    while let Some(event) = next.take() {
                        match event {
                            Ok(event) => {
                                if let Next::Close(reason) = self.deliver(sink, &event, events).await {
                                    return Some(reason);
                                }
                            }
                            Err(_lagged) => {
                                tracing::info!(delivered = events.delivered(), "session fell a whole lane behind the room; closing with 1013");
                                return Some(CloseReason::SLOW);
                            }
                        }
                        batched += 1;
                        if batched < BATCH {
                            next = events.try_recv();
                        }
                    }
                    if !self.flush(sink, events).await {
                        return Some(CloseReason::SLOW);
                    }
                }
                direct = inbox.frames.recv() => {
                    let mut next = Some(direct);
                    let mut batched = 0;
                    while let Some(frame) = next.take() {
                        if !self.write(sink, Message::Text(frame), events).await {
                            return Some(CloseReason::SLOW);
                        }
                        batched += 1;
                        if batched < BATCH {
                            next = inbox.frames.try_recv();
                        }
                    }
                    if !self.flush(sink, events).await {
                        return Some(CloseReason::SLOW);
                    }
                }
                _ = ping.tick() => {
                    if !self.write(sink, Message::Ping(Default::default()), events).await || !self.flush(sink, events).await {
                        return Some(CloseReason::SLOW);
                    }
                }
            }
        }
    }

    async fn shutdown<W: Sink<Message> + Unpin>(
        &mut self,
        sink: &mut W,
        after_ms: u64,
        events: &EventStream,
    ) -> Option<CloseReason> {
        let notice = frame(&ServerMessage::ServerShutdown {
            reconnect_after_ms: after_ms,
        });
        if self.write(sink, Message::Text(notice), events).await {
            self.flush(sink, events).await;
        }
        Some(CloseReason::RESTARTING)
    }

    /// Queues the event if this viewer may see it, then applies its effect on the session.
    async fn deliver<W: Sink<Message> + Unpin>(
        &mut self,
        sink: &mut W,
        event: &Envelope,
        events: &mut EventStream,
    ) -> Next {
        // Captions are the stage's: not for an attendee still waiting in the lobby.
        let visible = event.audience.includes(&self.viewer)
            || (self.captions_on
                && event.audience == convene_core::wire::Audience::Captions
                && self.viewer.place != convene_core::wire::Place::Lobby);
        if visible
            && !self
                .write(sink, Message::Text(event.frame.clone()), events)
                .await
        {
            return Next::Close(CloseReason::SLOW);
        }
        match follow(&mut self.viewer, events, event) {
            Rights::Unchanged => Next::Continue,
            Rights::Changed {
                place,
                may_publish,
                muted,
            } => {
                self.set_media_access(place, may_publish, muted);
                Next::Continue
            }
            Rights::Recheck => {
                self.media_access
                    .send_modify(|access| access.recheck = access.recheck.wrapping_add(1));
                Next::Continue
            }
            Rights::Removed => {
                self.flush(sink, events).await;
                Next::Close(CloseReason::REMOVED)
            }
        }
    }

    fn set_media_access(&self, place: Place, may_publish: bool, muted: Option<Mutes>) {
        self.media_access.send_if_modified(|current| {
            let next = MediaAccess {
                place,
                may_publish,
                muted: muted.unwrap_or(current.muted),
                recheck: current.recheck,
            };
            let changed = *current != next;
            *current = next;
            changed
        });
    }

    /// Queues one message (the socket's write buffer sends it when full or on flush).
    async fn write<W: Sink<Message> + Unpin>(
        &self,
        sink: &mut W,
        message: Message,
        events: &EventStream,
    ) -> bool {
        self.unstalled(sink.feed(message), events).await
    }

    async fn flush<W: Sink<Message> + Unpin>(&self, sink: &mut W, events: &EventStream) -> bool {
        self.unstalled(sink.flush(), events).await
    }

    /// Runs a socket operation. Most complete at once; while one is stalled the room's
    /// events keep arriving, and when a whole ring of them waits, or the stall lasts too
    /// long, the reader is too slow: false.
    async fn unstalled<E>(
        &self,
        operation: impl std::future::Future<Output = Result<(), E>>,
        events: &EventStream,
    ) -> bool {
        tokio::pin!(operation);
        if let Some(result) = futures_util::FutureExt::now_or_never(&mut operation) {
            return result.is_ok();
        }
        let started = tokio::time::Instant::now();
        loop {
            tokio::select! {
                result = &mut operation => return result.is_ok(),
                _ = tokio::time::sleep(Duration::from_millis(50)) => {
                    if events.lagging() || started.elapsed() >= WRITE_STALL {
                        return false;
                    }
                }
            }
        }
    }
}

struct Reader {
    room: Arc<dyn RoomClient>,
    session_id: Uuid,
    connection: Uuid,
    outbox: Outbox,
    limiter: RateLimiter,
    captions: crate::captions::Captioning,
    strikes: u32,
    limits: Arc<Limits>,
    media: Option<MediaLink>,
    relay: Option<Box<dyn MediaForwarder>>,
}

impl Reader {
    /// Reads until the socket ends; true when the client left on purpose.
    async fn run<R>(&mut self, mut stream: R) -> bool
    where
        R: Stream<Item = Result<Message, axum::Error>> + Unpin,
    {
        let idle = Duration::from_secs(self.limits.idle_timeout_s.max(1));
        let outbox = self.outbox.clone();
        let closing = outbox.closing();
        tokio::pin!(closing);
        loop {
            // When the writer closes the session (slow reader, removal, shutdown), stop reading too.
            let next = tokio::select! {
                next = tokio::time::timeout(idle, stream.next()) => next,
                _ = &mut closing => return false,
            };
            let message = match next {
                Err(_) => {
                    tracing::info!("socket silent past the idle timeout");
                    self.outbox.close(CloseReason::IDLE);
                    return false;
                }
                Ok(None) => return false,
                Ok(Some(Err(error))) => {
                    match close_for(&error) {
                        Some(reason) => {
                            tracing::info!(code = reason.code, "closing on a bad frame");
                            self.outbox.close(reason);
                        }
                        None => tracing::debug!(%error, "the client's connection went away"),
                    }
                    return false;
                }
                Ok(Some(Ok(message))) => message,
            };
            match message {
                Message::Text(text) => {
                    if !self.handle_text(text.as_str()).await {
                        return false;
                    }
                }
                Message::Binary(_) => {
                    self.refuse(
                        None,
                        ErrorCode::InvalidMessage,
                        "binary frames are not supported; send JSON text",
                    );
                }
                // A tab closing sends 1001, a client leaving 1000 or no code; a network drop sends nothing.
                Message::Close(frame) => {
                    return frame.is_none_or(|f| f.code == 1000 || f.code == 1001)
                }
                Message::Ping(_) | Message::Pong(_) => {}
            }
            if self.strikes >= self.limits.abuse.strikes {
                tracing::warn!(strikes = self.strikes, "closing abusive session");
                self.outbox.close(CloseReason::POLICY);
                return false;
            }
        }
    }

    fn refuse(&mut self, request_id: Option<String>, code: ErrorCode, message: impl Into<String>) {
        self.strikes += 1;
        self.outbox.send(simple_error(request_id, code, message));
    }

    /// Handles one text frame; false when the room is gone.
    async fn handle_text(&mut self, text: &str) -> bool {
        let message = match serde_json::from_str::<ClientMessage>(text) {
            Ok(message) => message,
            Err(error) => {
                let (request_id, code, why) = explain_parse_error(text, &error);
                self.refuse(request_id, code, why);
                return true;
            }
        };
        let ClientMessage {
            request_id,
            room,
            command,
        } = message;
        if request_id
            .as_ref()
            .is_some_and(|r| r.len() > MAX_REQUEST_ID_BYTES)
        {
            // Remembered for idempotency: an unbounded id would be unbounded memory.
            self.refuse(
                None,
                ErrorCode::InvalidMessage,
                format!("request_id is longer than {MAX_REQUEST_ID_BYTES} bytes"),
            );
            return true;
        }
        let max = self.limits.max_sdp_bytes;
        if let Some(len) = signaling_text_len(&command).filter(|&len| len > max) {
            // Refused here, before a cluster would relay it through Redis.
            tracing::debug!(len, max, "signaling refused: SDP too large");
            self.refuse(
                request_id,
                ErrorCode::InvalidArgument,
                format!("the SDP or candidate is {len} bytes; at most {max} are accepted"),
            );
            return true;
        }
        let limited = match self.limiter.check(CommandClass::of(&command)) {
            Err(retry_after_ms) => Some((retry_after_ms, "too many commands of this kind")),
            // Every frame's bytes count, so large frames cannot flood what crosses nodes.
            Ok(()) => self
                .limiter
                .check_bytes(text.len())
                .err()
                .map(|retry_after_ms| (retry_after_ms, "too many bytes")),
        };
        if let Some((retry_after_ms, why)) = limited {
            crate::metrics::rate_limited();
            self.strikes += 1;
            self.outbox.send(frame(&ServerMessage::Error {
                request_id,
                code: ErrorCode::RateLimited,
                message: format!("slow down: {why}"),
                retry_after_ms: Some(retry_after_ms),
            }));
            return true;
        }
        if let Some(room) = room.filter(|r| r != self.room.room_name()) {
            self.refuse(
                request_id,
                ErrorCode::NotInRoom,
                format!(
                    "this session is in room {:?}, not {room:?}",
                    self.room.room_name()
                ),
            );
            return true;
        }
        if let Command::SendCaption { text, .. } = &command {
            // A captioner's line size and rate, refused here before a cluster relays it.
            if let Some((code, message, retry_after_ms)) = self.captions.refuse(text) {
                self.strikes += 1;
                self.outbox.send(frame(&ServerMessage::Error {
                    request_id,
                    code,
                    message,
                    retry_after_ms,
                }));
                return true;
            }
        }
        self.strikes = 0;
        match command {
            Command::Ping => {
                self.outbox.send(frame(&ServerMessage::Pong));
                if let Some(request_id) = request_id {
                    self.outbox.send(frame(&ServerMessage::Ack {
                        request_id,
                        id: None,
                    }));
                }
                true
            }
            Command::SubscribeCaptions { on } => {
                self.captions.subscribe(on);
                if let Some(request_id) = request_id {
                    self.outbox.send(frame(&ServerMessage::Ack {
                        request_id,
                        id: None,
                    }));
                }
                true
            }
            Command::RtcOffer { .. }
            | Command::RtcAnswer { .. }
            | Command::RtcCandidate { .. }
            | Command::Unpublish { .. }
            | Command::SetVideoQuality { .. } => {
                if let Some(relay) = &self.relay {
                    if relay
                        .forward(request_id.clone(), &command, &self.outbox)
                        .await
                    {
                        return true;
                    }
                }
                match &mut self.media {
                    Some(media) => media.handle(request_id, command, &self.outbox).await,
                    None => self.refuse(
                        request_id,
                        ErrorCode::MediaError,
                        "media is not available on this server",
                    ),
                }
                true
            }
            command => self
                .room
                .send_input(
                    RoomInput::Client {
                        session_id: self.session_id,
                        connection: self.connection,
                        request_id,
                        command,
                    }
                    .into(),
                )
                .await
                .is_ok(),
        }
    }
}

/// The size of the SDP or ICE candidate a media command carries.
fn signaling_text_len(command: &Command) -> Option<usize> {
    match command {
        Command::RtcOffer { sdp } | Command::RtcAnswer { sdp } => Some(sdp.len()),
        Command::RtcCandidate { candidate } => Some(candidate.len()),
        _ => None,
    }
}

/// Names the problem with a frame that is not a valid `ClientMessage`.
fn explain_parse_error(
    text: &str,
    error: &serde_json::Error,
) -> (Option<String>, ErrorCode, String) {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
        return (
            None,
            ErrorCode::MalformedJson,
            format!("not valid JSON: {error}"),
        );
    };
    let request_id = value
        .get("request_id")
        .and_then(|r| r.as_str())
        .map(str::to_string);
    let Some(object) = value.as_object() else {
        return (
            request_id,
            ErrorCode::InvalidMessage,
            "a message must be a JSON object".into(),
        );
    };
    match object.get("type") {
        None => (
            request_id,
            ErrorCode::InvalidMessage,
            "missing field `type`".into(),
        ),
        Some(serde_json::Value::String(kind)) if error.to_string().contains("unknown variant") => (
            request_id,
            ErrorCode::UnknownType,
            format!("unknown message type {kind:?}"),
        ),
        Some(_) => (
            request_id,
            ErrorCode::InvalidMessage,
            format!("invalid message: {error}"),
        ),
    }
}

/// The close a read error deserves: 1009 for an oversized message, 1007 for text that is
/// not UTF-8, 1002 for a broken frame; none when the connection simply went away (a TCP
/// reset, or an end without a close frame, is a disconnect, not a protocol error).
fn close_for(error: &axum::Error) -> Option<CloseReason> {
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    use tokio_tungstenite::tungstenite::Error as WsError;
    if is_too_big(error) {
        return Some(CloseReason::TOO_BIG);
    }
    let inner = std::error::Error::source(error).and_then(|e| e.downcast_ref::<WsError>());
    match inner {
        Some(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => None,
        Some(WsError::Utf8(_)) => Some(CloseReason::INVALID_DATA),
        Some(WsError::Protocol(_)) => Some(CloseReason::PROTOCOL_ERROR),
        _ => None,
    }
}

/// tungstenite reports an oversized message or frame as a capacity error.
fn is_too_big(error: &axum::Error) -> bool {
    let text = error.to_string().to_lowercase();
    text.contains("space limit exceeded")
        || text.contains("message too long")
        || text.contains("frame too long")
        || text.contains("capacity")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reset (or an end without a close frame) is a disconnect: nothing to close, no
    /// "bad frame" in the logs; a broken frame still closes with 1002.
    #[test]
    fn a_reset_is_a_disconnect_and_a_broken_frame_a_protocol_error() {
        use tokio_tungstenite::tungstenite::error::ProtocolError;
        use tokio_tungstenite::tungstenite::Error as WsError;
        let reset = axum::Error::new(WsError::Protocol(
            ProtocolError::ResetWithoutClosingHandshake,
        ));
        assert_eq!(close_for(&reset).map(|r| r.code), None);
        let io = axum::Error::new(WsError::Io(std::io::ErrorKind::ConnectionReset.into()));
        assert_eq!(close_for(&io).map(|r| r.code), None);
        let broken = axum::Error::new(WsError::Protocol(ProtocolError::NonZeroReservedBits));
        assert_eq!(close_for(&broken).map(|r| r.code), Some(1002));
    }

    #[test]
    fn parse_errors_are_named() {
        let err = |t: &str| {
            let e = serde_json::from_str::<ClientMessage>(t).unwrap_err();
            explain_parse_error(t, &e)
        };
        assert_eq!(err("{not json").1, ErrorCode::MalformedJson);
        assert_eq!(err("[1,2]").1, ErrorCode::InvalidMessage);
        let (rid, code, msg) = err(r#"{"type":"teleport","request_id":"r9"}"#);
        assert_eq!((rid.as_deref(), code), (Some("r9"), ErrorCode::UnknownType));
        assert!(msg.contains("teleport"));
        let (_, code, msg) = err(r#"{"type":"send_chat"}"#);
        assert_eq!(code, ErrorCode::InvalidMessage);
        assert!(msg.contains("text"), "{msg}");
        assert_eq!(err(r#"{"text":"x"}"#).1, ErrorCode::InvalidMessage);
    }
}
