//! Sessions: one per WebSocket. Parses and limits what the client sends, and writes out what it may see.
//!
//! A session is two halves. The reader parses `ClientMessage`s, applies rate limits and
//! forwards commands to the room actor. The writer sends the first frame (`welcome` or
//! `resumed`), then the room's events it may see, then direct replies, and pings. It never
//! blocks the room: events reach it through a bounded broadcast ring, and a session that
//! falls a whole ring behind is closed with 1013 (the client may resume).

pub mod outbox;
pub mod rate;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message};
use convene_signaling::{ClientMessage, Command, ErrorCode, ServerMessage};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use crate::bus::{Frame, LoggedEvent, SessionEffect, Subscription};
use crate::config::Limits;
use crate::media::{MediaAccess, MediaLink};
use crate::room::actor::{frame, simple_error, RoomCommand, RoomHandle, Start};
use crate::room::{Place, Viewer};
use outbox::{CloseReason, Inbox, Outbox};
use rate::{CommandClass, RateLimiter};

/// A send that stalls this long means the client stopped reading.
const WRITE_STALL: Duration = Duration::from_secs(20);

/// Everything a session needs, assembled by the HTTP edge after authentication.
pub struct SessionParams {
    pub room: RoomHandle,
    pub identity: String,
    pub session_start: Start,
    pub connection: Uuid,
    pub events: Subscription,
    pub outbox: Outbox,
    pub inbox: Inbox,
    pub limits: Arc<Limits>,
    pub shutdown: watch::Receiver<Option<u64>>,
    pub media: Option<MediaLink>,
    /// Tells the media task where the member is and whether they may publish.
    pub media_access: Option<watch::Sender<MediaAccess>>,
}

/// Runs a session over any WebSocket-like sink and stream until it ends.
pub async fn run<W, R>(sink: W, stream: R, params: SessionParams)
where
    W: Sink<Message> + Unpin + Send + 'static,
    R: Stream<Item = Result<Message, axum::Error>> + Unpin + Send + 'static,
{
    let SessionParams {
        room,
        identity,
        session_start,
        connection,
        events,
        outbox,
        inbox,
        limits,
        shutdown,
        media,
        media_access,
    } = params;
    let session_id = session_start.session_id;
    let span = tracing::info_span!("session", room = %room.name, %identity, %session_id);
    let _enter = span.enter();
    let writer = Writer {
        media_access,
        viewer: session_start.viewer.clone(),
        ping_every: Duration::from_secs(limits.ping_interval_s.max(1)),
        capacity: limits.outbound_queue,
    };
    let writer_task = tokio::spawn(writer.run(sink, session_start, events, inbox, shutdown));
    let reader = Reader {
        room: room.clone(),
        session_id,
        outbox: outbox.clone(),
        limiter: RateLimiter::new(&limits.rate),
        strikes: 0,
        limits: limits.clone(),
        media,
    };
    let mut writer_task = writer_task;
    // Whichever half ends first ends the session: a closed writer (slow reader, removal,
    // shutdown) stops the reader, and a finished reader stops the writer.
    let left = tokio::select! {
        left = reader.run(stream) => {
            outbox.close(CloseReason::GOING_AWAY);
            let _ = (&mut writer_task).await;
            left
        }
        _ = &mut writer_task => false,
    };
    let _ = room
        .send(RoomCommand::Closed {
            session_id,
            connection,
            left,
        })
        .await;
    tracing::debug!(left, "session ended");
}

struct Writer {
    media_access: Option<watch::Sender<MediaAccess>>,
    viewer: Viewer,
    ping_every: Duration,
    capacity: usize,
}

enum Next {
    Continue,
    Close(CloseReason),
}

impl Writer {
    async fn run<W>(mut self, mut sink: W, start: Start, mut events: Subscription, mut inbox: Inbox, mut shutdown: watch::Receiver<Option<u64>>)
    where
        W: Sink<Message> + Unpin,
    {
        let reason = self.pump(&mut sink, start, &mut events, &mut inbox, &mut shutdown).await;
        if let Some(reason) = reason {
            let close = Message::Close(Some(CloseFrame {
                code: reason.code,
                reason: reason.reason.into(),
            }));
            let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(close)).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    }

    /// Returns the close frame to send, if any.
    async fn pump<W>(&mut self, sink: &mut W, start: Start, events: &mut Subscription, inbox: &mut Inbox, shutdown: &mut watch::Receiver<Option<u64>>) -> Option<CloseReason>
    where
        W: Sink<Message> + Unpin,
    {
        if !self.send(sink, start.first, events).await {
            return Some(CloseReason::SLOW);
        }
        for event in &start.replay {
            match self.deliver(sink, event, events).await {
                Next::Continue => {}
                Next::Close(reason) => return Some(reason),
            }
        }
        let seq = start.seq;
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + self.ping_every, self.ping_every);
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
                event = events.recv() => match event {
                    Ok(event) if event.seq <= seq => {}
                    Ok(event) => match self.deliver(sink, &event, events).await {
                        Next::Continue => {}
                        Next::Close(reason) => return Some(reason),
                    },
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::info!(missed, "session fell behind the room; closing with 1013");
                        return Some(CloseReason::SLOW);
                    }
                    Err(broadcast::error::RecvError::Closed) => return Some(CloseReason::GOING_AWAY),
                },
                direct = inbox.frames.recv() => match direct {
                    Some(frame) => {
                        if !self.send(sink, frame, events).await {
                            return Some(CloseReason::SLOW);
                        }
                    }
                    None => return None,
                },
                _ = ping.tick() => {
                    if !self.send_message(sink, Message::Ping(Default::default()), events).await {
                        return Some(CloseReason::SLOW);
                    }
                }
            }
        }
    }

    async fn shutdown<W: Sink<Message> + Unpin>(&mut self, sink: &mut W, after_ms: u64, events: &Subscription) -> Option<CloseReason> {
        let notice = frame(&ServerMessage::ServerShutdown {
            reconnect_after_ms: after_ms,
        });
        self.send(sink, notice, events).await;
        Some(CloseReason::RESTARTING)
    }

    /// Sends the event if this viewer may see it, then applies its effect on the session.
    async fn deliver<W: Sink<Message> + Unpin>(&mut self, sink: &mut W, event: &LoggedEvent, events: &Subscription) -> Next {
        if event.audience.includes(&self.viewer) && !self.send(sink, event.frame.clone(), events).await {
            return Next::Close(CloseReason::SLOW);
        }
        match &event.effect {
            Some(SessionEffect::Move { identity, to, may_publish, .. }) if *identity == self.viewer.identity => {
                self.viewer.place = *to;
                self.set_media_access(*to, *may_publish);
                Next::Continue
            }
            Some(SessionEffect::Access { identity, place, may_publish }) if *identity == self.viewer.identity => {
                self.set_media_access(*place, *may_publish);
                Next::Continue
            }
            Some(SessionEffect::Kick { identity }) if *identity == self.viewer.identity => Next::Close(CloseReason::REMOVED),
            _ => Next::Continue,
        }
    }

    fn set_media_access(&self, place: Place, may_publish: bool) {
        if let Some(access) = &self.media_access {
            access.send_if_modified(|current| {
                let next = MediaAccess { place, may_publish };
                let changed = *current != next;
                *current = next;
                changed
            });
        }
    }

    async fn send<W: Sink<Message> + Unpin>(&mut self, sink: &mut W, frame: Frame, events: &Subscription) -> bool {
        self.send_message(sink, Message::Text(frame), events).await
    }

    /// Writes one message. While the socket is stalled, the room's events keep arriving:
    /// when a whole ring of them is waiting, or the stall lasts too long, the reader is too slow.
    async fn send_message<W: Sink<Message> + Unpin>(&mut self, sink: &mut W, message: Message, events: &Subscription) -> bool {
        let send = sink.send(message);
        tokio::pin!(send);
        let started = tokio::time::Instant::now();
        loop {
            tokio::select! {
                result = &mut send => return result.is_ok(),
                _ = tokio::time::sleep(Duration::from_millis(50)) => {
                    if events.len() >= self.capacity || started.elapsed() >= WRITE_STALL {
                        return false;
                    }
                }
            }
        }
    }
}

struct Reader {
    room: RoomHandle,
    session_id: Uuid,
    outbox: Outbox,
    limiter: RateLimiter,
    strikes: u32,
    limits: Arc<Limits>,
    media: Option<MediaLink>,
}

impl Reader {
    /// Reads until the socket ends; true when the client left on purpose.
    async fn run<R>(mut self, mut stream: R) -> bool
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
                    if is_too_big(&error) {
                        tracing::info!("frame over the size limit");
                        self.outbox.close(CloseReason::TOO_BIG);
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
                    self.refuse(None, ErrorCode::InvalidMessage, "binary frames are not supported; send JSON text");
                }
                // A tab closing sends 1001, a client leaving 1000 or no code; a network drop sends nothing.
                Message::Close(frame) => return frame.is_none_or(|f| f.code == 1000 || f.code == 1001),
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
        let ClientMessage { request_id, room, command } = message;
        if let Err(retry_after_ms) = self.limiter.check(CommandClass::of(&command)) {
            self.strikes += 1;
            self.outbox.send(frame(&ServerMessage::Error {
                request_id,
                code: ErrorCode::RateLimited,
                message: "slow down: too many commands of this kind".into(),
                retry_after_ms: Some(retry_after_ms),
            }));
            return true;
        }
        if let Some(room) = room.filter(|r| **r != *self.room.name) {
            self.refuse(request_id, ErrorCode::NotInRoom, format!("this session is in room {:?}, not {room:?}", &*self.room.name));
            return true;
        }
        self.strikes = 0;
        match command {
            Command::Ping => {
                self.outbox.send(frame(&ServerMessage::Pong));
                if let Some(request_id) = request_id {
                    self.outbox.send(frame(&ServerMessage::Ack { request_id, id: None }));
                }
                true
            }
            Command::RtcOffer { .. } | Command::RtcAnswer { .. } | Command::RtcCandidate { .. } | Command::Unpublish { .. } | Command::SetVideoQuality { .. } => {
                match &self.media {
                    Some(media) => media.handle(request_id, command, &self.outbox).await,
                    None => self.refuse(request_id, ErrorCode::MediaError, "media is not available on this server"),
                }
                true
            }
            command => self
                .room
                .send(RoomCommand::Client {
                    session_id: self.session_id,
                    request_id,
                    command,
                })
                .await
                .is_ok(),
        }
    }
}

/// Names the problem with a frame that is not a valid `ClientMessage`.
fn explain_parse_error(text: &str, error: &serde_json::Error) -> (Option<String>, ErrorCode, String) {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
        return (None, ErrorCode::MalformedJson, format!("not valid JSON: {error}"));
    };
    let request_id = value.get("request_id").and_then(|r| r.as_str()).map(str::to_string);
    let Some(object) = value.as_object() else {
        return (request_id, ErrorCode::InvalidMessage, "a message must be a JSON object".into());
    };
    match object.get("type") {
        None => (request_id, ErrorCode::InvalidMessage, "missing field `type`".into()),
        Some(serde_json::Value::String(kind)) if error.to_string().contains("unknown variant") => {
            (request_id, ErrorCode::UnknownType, format!("unknown message type {kind:?}"))
        }
        Some(_) => (request_id, ErrorCode::InvalidMessage, format!("invalid message: {error}")),
    }
}

/// tungstenite reports an oversized message or frame as a capacity error.
fn is_too_big(error: &axum::Error) -> bool {
    let text = error.to_string().to_lowercase();
    text.contains("space limit exceeded") || text.contains("message too long") || text.contains("frame too long") || text.contains("capacity")
}

#[cfg(test)]
mod tests {
    use super::*;

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
