//! The room actor: one task per room that owns its `RoomState`, sequences and logs its events, and answers sessions.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use convene_signaling::{
    CloseReason, Command, ErrorCode, Millis, Poll, Question, ServerMessage, PROTOCOL_VERSION,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use uuid::Uuid;

mod hooks;
mod restart;

pub use super::command::{JoinTerms, MediaRights, Reply, RoomCommand, RoomInput, Start};
use super::effects::{effect_of, viewer_before};
use super::feed::RoomFeed;
use super::idempotency::Idempotency;
use super::{Audience, Denied, Event, Joiner, RoomLimits, RoomState, Viewer};
use crate::bus::EventLog;
use crate::wire::{ConnectionId, Envelope, Frame, RoomOutput, SessionEffect, SessionSink};

/// Serialises a server message once; every recipient shares the bytes.
pub fn frame(msg: &ServerMessage) -> Frame {
    Frame::from(serde_json::to_string(msg).expect("server messages always serialise"))
}

/// Wall-clock milliseconds derived from tokio's clock, so paused-time tests drive room timers.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    base_unix_ms: Millis,
    base: Instant,
}

impl Clock {
    pub fn start() -> Clock {
        Clock {
            base_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as Millis,
            base: Instant::now(),
        }
    }
    pub fn now(&self) -> Millis {
        self.base_unix_ms + self.base.elapsed().as_millis() as Millis
    }
    fn instant_at(&self, at: Millis) -> Instant {
        self.base + Duration::from_millis(at.saturating_sub(self.base_unix_ms))
    }
}

/// How sessions reach a room: the local handle below; a cluster adds one for rooms owned elsewhere.
pub trait RoomClient: Send + Sync + 'static {
    fn room_name(&self) -> &str;
    /// Delivers an input to the room, waiting for space in its inbox.
    fn send_input(
        &self,
        input: RoomCommand,
    ) -> Pin<Box<dyn Future<Output = Result<(), RoomGone>> + Send + '_>>;
}

/// A cheap handle to a room running on this node.
#[derive(Clone)]
pub struct RoomHandle {
    pub name: Arc<str>,
    tx: mpsc::Sender<RoomCommand>,
    /// Connected sessions, for limits checked before the upgrade.
    pub sessions: Arc<AtomicUsize>,
}

#[derive(Debug, thiserror::Error)]
#[error("room {0} has closed")]
pub struct RoomGone(pub String);

impl RoomHandle {
    /// A handle whose inputs arrive on `rx`, for whatever runs the room (the local actor,
    /// or a cluster link that forwards them to the room's owner).
    pub fn channel(name: &str) -> (RoomHandle, mpsc::Receiver<RoomCommand>) {
        let (tx, rx) = mpsc::channel(1024);
        let handle = RoomHandle {
            name: name.into(),
            tx,
            sessions: Arc::new(AtomicUsize::new(0)),
        };
        (handle, rx)
    }

    pub async fn send(&self, cmd: RoomCommand) -> Result<(), RoomGone> {
        self.tx
            .send(cmd)
            .await
            .map_err(|_| RoomGone(self.name.to_string()))
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    pub fn same_room(&self, other: &RoomHandle) -> bool {
        self.tx.same_channel(&other.tx)
    }

    async fn ask<T>(
        &self,
        input: RoomInput,
        reply: impl FnOnce(oneshot::Sender<T>) -> Reply,
    ) -> Result<T, RoomGone> {
        let (tx, rx) = oneshot::channel();
        self.send(RoomCommand {
            input,
            reply: Some(reply(tx)),
        })
        .await?;
        rx.await.map_err(|_| RoomGone(self.name.to_string()))
    }

    pub async fn join(
        &self,
        joiner: Joiner,
        connection: ConnectionId,
        resume: Option<(Uuid, u64)>,
    ) -> Result<Result<Start, Denied>, RoomGone> {
        self.join_on(joiner, connection, resume, JoinTerms::default())
            .await
    }

    /// A join on `terms`: a page's session takes the identity's seat (`exclusive`).
    pub async fn join_on(
        &self,
        joiner: Joiner,
        connection: ConnectionId,
        resume: Option<(Uuid, u64)>,
        terms: JoinTerms,
    ) -> Result<Result<Start, Denied>, RoomGone> {
        let input = RoomInput::Join {
            joiner,
            connection,
            resume,
            new_session: Uuid::new_v4(),
            terms,
        };
        self.ask(input, Reply::Join).await
    }

    pub async fn is_banned(&self, identity: &str) -> Result<bool, RoomGone> {
        let identity = identity.to_string();
        self.ask(RoomInput::CheckBanned { identity }, Reply::Banned)
            .await
    }

    pub async fn export_questions(&self) -> Result<Vec<Question>, RoomGone> {
        self.ask(RoomInput::ExportQuestions, Reply::Questions).await
    }

    pub async fn operate(
        &self,
        op: super::operator::Operation,
    ) -> Result<Result<super::operator::RoomReport, Denied>, RoomGone> {
        self.ask(RoomInput::Operate(op), Reply::Operate).await
    }

    pub async fn export_polls(&self) -> Result<Vec<Poll>, RoomGone> {
        self.ask(RoomInput::ExportPolls, Reply::Polls).await
    }

    /// Where this identity is and whether it may publish media there; `None` if not a member.
    pub async fn media_access(&self, identity: &str) -> Result<Option<MediaRights>, RoomGone> {
        let identity = identity.to_string();
        self.ask(RoomInput::MediaAccess { identity }, Reply::Media)
            .await
    }
}

impl RoomClient for RoomHandle {
    fn room_name(&self) -> &str {
        &self.name
    }
    fn send_input(
        &self,
        input: RoomCommand,
    ) -> Pin<Box<dyn Future<Output = Result<(), RoomGone>> + Send + '_>> {
        Box::pin(self.send(input))
    }
}

/// A session's record as a snapshot keeps it.
#[derive(serde::Serialize, serde::Deserialize)]
struct SessionRecord {
    session_id: Uuid,
    identity: String,
    connection: ConnectionId,
    connected: bool,
    disconnected_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "JoinTerms::is_default")]
    terms: JoinTerms,
    #[serde(default)]
    joined_at: Millis,
    /// Remembered replies, oldest first.
    #[serde(with = "super::idempotency::replies")]
    recent: Vec<(String, Frame)>,
}

/// Everything a room core holds except its recent events (those are in the event stream).
#[derive(serde::Serialize, serde::Deserialize)]
pub struct CoreSnapshot {
    /// `RoomState::to_snapshot`.
    state: String,
    sessions: Vec<SessionRecord>,
    last_seq: u64,
}

struct SessionEntry {
    identity: String,
    connection: ConnectionId,
    /// The socket is open (not waiting out the reconnect grace).
    connected: bool,
    recent: Idempotency,
    disconnected_at: Option<Millis>,
    terms: JoinTerms,
    /// When the session began: the oldest yield first to a new window.
    joined_at: Millis,
}

/// Settings the actor needs beyond the room's own limits.
#[derive(Clone)]
pub struct ActorConfig {
    pub limits: RoomLimits,
    pub event_log_len: usize,
    pub idempotency_window: usize,
    /// Bytes of remembered replies per session (its identity's, across resumes).
    pub idempotency_bytes: usize,
    /// Bytes of remembered replies in the whole room: they are in its snapshot.
    pub idempotency_room_bytes: usize,
    pub empty_room_ttl: Duration,
    pub attendance: super::attendance::AttendanceBook,
    pub hooks: Arc<dyn RoomHooks>,
}

pub use hooks::{NoHooks, RoomHooks};

/// A room's state and its sessions' records, driven by inputs with their time: the local
/// actor below runs one, and so does a cluster node that owns the room. Pure apart from its
/// sink, attendance and webhooks, so replaying the same inputs gives the same events.
pub struct RoomCore {
    state: RoomState,
    log: EventLog,
    sink: Arc<dyn SessionSink>,
    sessions: HashMap<Uuid, SessionEntry>,
    config: ActorConfig,
    connected: Arc<AtomicUsize>,
    attendance: Arc<std::sync::Mutex<super::attendance::Attendance>>,
    feed: RoomFeed,
    /// At least the bytes all sessions remember (it only counts up between exact recounts).
    remembered_bytes: usize,
}

/// Starts a room; `on_exit` runs when it has been empty for the configured time.
pub fn spawn(
    name: &str,
    config: ActorConfig,
    sink: Arc<dyn SessionSink>,
    clock: Clock,
    on_exit: impl FnOnce(&RoomHandle) + Send + 'static,
) -> RoomHandle {
    let (handle, rx) = RoomHandle::channel(name);
    let core = RoomCore::new(name, config, sink, handle.sessions.clone(), clock.now());
    let exit_handle = handle.clone();
    tokio::spawn(async move {
        run(core, clock, rx).await;
        on_exit(&exit_handle);
    });
    handle
}

async fn run(mut core: RoomCore, clock: Clock, mut rx: mpsc::Receiver<RoomCommand>) {
    let mut empty_since: Option<Instant> = Some(Instant::now());
    let ttl = core.config.empty_room_ttl;
    loop {
        let deadline = core.next_deadline().map(|t| clock.instant_at(t));
        let expiry = empty_since.map(|t| t + ttl);
        let wake = [deadline, expiry].into_iter().flatten().min();
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(cmd) => core.handle(cmd, clock.now()),
                None => break,
            },
            _ = sleep_until_opt(wake) => core.tick(clock.now()),
        }
        if core.is_idle() {
            let since = *empty_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= ttl {
                tracing::info!(room = %core.name(), "room closed after being empty");
                break;
            }
        } else {
            empty_since = None;
        }
    }
    core.end(clock.now());
}

impl RoomCore {
    pub fn new(
        name: &str,
        config: ActorConfig,
        sink: Arc<dyn SessionSink>,
        connected: Arc<AtomicUsize>,
        now: Millis,
    ) -> RoomCore {
        let feed = RoomFeed::new(name);
        config.hooks.webhook(feed.started(now));
        RoomCore {
            attendance: config.attendance.sheet(name),
            feed,
            state: RoomState::new(name, config.limits.clone()),
            log: EventLog::new(config.event_log_len),
            sink,
            sessions: HashMap::new(),
            config,
            connected,
            remembered_bytes: 0,
        }
    }

    pub fn name(&self) -> &str {
        self.state.name()
    }

    /// The events kept for resumes, oldest first.
    /// (Replay checks in tests compare these with a rebuilt core's.)
    pub fn recent(&self) -> Vec<Arc<Envelope>> {
        self.log.kept()
    }

    /// The last event's seq.
    pub fn last_seq(&self) -> u64 {
        self.log.last_seq()
    }

    /// The room and its sessions, to rebuild it elsewhere.
    pub fn snapshot(&self) -> CoreSnapshot {
        let mut sessions: Vec<SessionRecord> = self
            .sessions
            .iter()
            .map(|(id, s)| SessionRecord {
                session_id: *id,
                identity: s.identity.clone(),
                connection: s.connection,
                connected: s.connected,
                disconnected_at: s.disconnected_at,
                terms: s.terms.clone(),
                joined_at: s.joined_at,
                recent: s.recent.oldest_first(),
            })
            .collect();
        sessions.sort_by_key(|s| s.session_id);
        CoreSnapshot {
            state: self.state.to_snapshot(),
            sessions,
            last_seq: self.log.last_seq(),
        }
    }

    /// A core rebuilt from a snapshot; `recent` are the last events before it (oldest first).
    pub fn restore(
        snapshot: CoreSnapshot,
        recent: Vec<Arc<Envelope>>,
        config: ActorConfig,
        sink: Arc<dyn SessionSink>,
        connected: Arc<AtomicUsize>,
    ) -> Result<RoomCore, serde_json::Error> {
        let state = RoomState::from_snapshot(&snapshot.state, config.limits.clone())?;
        let name = state.name().to_string();
        let sessions = snapshot
            .sessions
            .into_iter()
            .map(|r| {
                let mut recent =
                    Idempotency::new(config.idempotency_window, config.idempotency_bytes);
                for (id, frame) in r.recent {
                    recent.remember(id, frame);
                }
                (
                    r.session_id,
                    SessionEntry {
                        identity: r.identity,
                        connection: r.connection,
                        connected: r.connected,
                        recent,
                        disconnected_at: r.disconnected_at,
                        terms: r.terms,
                        joined_at: r.joined_at,
                    },
                )
            })
            .collect();
        Ok(RoomCore {
            attendance: config.attendance.sheet(&name),
            feed: RoomFeed::new(&name),
            state,
            log: EventLog::restore(config.event_log_len, snapshot.last_seq, recent),
            sink,
            sessions,
            config,
            connected,
            remembered_bytes: usize::MAX,
        })
    }

    /// When `tick` has work to do.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.state.next_deadline()
    }

    /// No members and no sessions waiting to resume.
    pub fn is_idle(&self) -> bool {
        self.state.is_empty() && self.sessions.is_empty()
    }

    /// Runs what is due at `now`: timers, and sessions whose grace ran out.
    pub fn tick(&mut self, now: Millis) {
        let events = self.state.tick(now);
        self.publish(events, now);
        self.expire_sessions(now);
    }

    /// The room is over on this node.
    pub fn end(&mut self, now: Millis) {
        self.sink.room_ended(self.state.name());
        for hook in self.feed.ended(now) {
            self.config.hooks.webhook(hook);
        }
    }

    /// Applies one input at `now`; a question's answer goes to its reply, if it has one of
    /// its kind.
    pub fn handle(&mut self, cmd: RoomCommand, now: Millis) {
        let RoomCommand { input, reply } = cmd;
        match input {
            RoomInput::Join {
                joiner,
                connection,
                resume,
                new_session,
                terms,
            } => {
                let start = self.join(joiner, connection, resume, new_session, terms, now);
                if let Some(Reply::Join(tx)) = reply {
                    let _ = tx.send(start);
                }
            }
            RoomInput::Client {
                session_id,
                connection,
                request_id,
                command,
            } => self.client_command(session_id, connection, request_id, command, now),
            RoomInput::Closed {
                session_id,
                connection,
                left,
            } => self.session_closed(session_id, connection, left, now),
            RoomInput::CheckBanned { identity } => {
                if let Some(Reply::Banned(tx)) = reply {
                    let _ = tx.send(self.state.is_banned(&identity));
                }
            }
            RoomInput::ExportQuestions => {
                if let Some(Reply::Questions(tx)) = reply {
                    let _ = tx.send(self.state.qa().export());
                }
            }
            RoomInput::ExportPolls => {
                if let Some(Reply::Polls(tx)) = reply {
                    let _ = tx.send(self.state.export_polls());
                }
            }
            RoomInput::MediaAccess { identity } => {
                if let Some(Reply::Media(tx)) = reply {
                    let access = self.state.viewer(&identity).map(|v| MediaRights {
                        place: v.place,
                        may_publish: self.state.may_publish(&identity),
                        muted: self.state.media_muted(&identity),
                    });
                    let _ = tx.send(access);
                }
            }
            RoomInput::TrackPublished(track) => {
                let events = self.state.track_published(track);
                self.publish(events, now);
            }
            RoomInput::TrackUnpublished(id) => {
                let events = self.state.track_unpublished(&id);
                self.publish(events, now);
            }
            RoomInput::Revoke { token_id } => {
                let mut revoked: Vec<Uuid> = self
                    .sessions
                    .iter()
                    .filter(|(_, s)| s.terms.token_id.as_ref() == Some(&token_id))
                    .map(|(id, _)| *id)
                    .collect();
                revoked.sort();
                self.end_sessions(revoked, CloseReason::REVOKED, now);
            }
            RoomInput::Operate(op) => {
                let result = self.state.operate(&op, now).map(|(events, report)| {
                    self.publish(events, now);
                    report
                });
                if let Some(Reply::Operate(tx)) = reply {
                    let _ = tx.send(result);
                }
            }
        }
    }

    fn join(
        &mut self,
        joiner: Joiner,
        connection: ConnectionId,
        resume: Option<(Uuid, u64)>,
        new_session: Uuid,
        terms: JoinTerms,
        now: Millis,
    ) -> Result<Start, Denied> {
        let identity = joiner.identity.clone();
        let until = joiner.credentials_until;
        let resumable = resume.filter(|(sid, _)| {
            self.sessions
                .get(sid)
                .is_some_and(|s| s.identity == identity)
        });
        let events = self.state.join(joiner, now)?;
        self.publish(events, now);
        self.connected.fetch_add(1, Ordering::Relaxed);
        let viewer = self.state.viewer(&identity).expect("just joined");
        let seq = self.log.last_seq();

        if let Some((session_id, last_seq)) = resumable {
            let entry = self.sessions.get_mut(&session_id).expect("checked above");
            let replaced = std::mem::replace(&mut entry.connection, connection);
            let was_connected = std::mem::replace(&mut entry.connected, true);
            entry.disconnected_at = None;
            if was_connected {
                // The old socket may still be open (a half-dead connection): it yields to the new one.
                self.sink.deliver(
                    self.state.name(),
                    RoomOutput::Close {
                        to: replaced,
                        reason: CloseReason::REPLACED,
                    },
                );
                self.connected.fetch_sub(1, Ordering::Relaxed);
                let events = self.state.connection_closed(&identity, false, now);
                self.publish(events, now);
            }
            match self.log.since(last_seq) {
                Ok(replay) => {
                    let viewer = viewer_before(viewer, &replay);
                    let first = frame(&ServerMessage::Resumed {
                        protocol: PROTOCOL_VERSION,
                        session_id: session_id.to_string(),
                        last_seq,
                        seq,
                    });
                    let may_publish = self.state.may_publish(&identity);
                    return Ok(Start {
                        session_id,
                        viewer,
                        may_publish,
                        muted: self.state.media_muted(&identity),
                        first,
                        replay,
                        seq,
                    });
                }
                Err(gap) => {
                    let reason = format!(
                        "events after seq {last_seq} are no longer kept (oldest is {}); this is a fresh snapshot",
                        gap.oldest_kept
                    );
                    return Ok(self.welcome(session_id, viewer, seq, Some(reason), until));
                }
            }
        }

        if terms.exclusive {
            // One live session per identity (`sessions_per_identity`): this fresh join takes
            // the seat from the oldest others (ordered, so a replay closes the same ones).
            let mut others: Vec<(Millis, Uuid)> = self
                .sessions
                .iter()
                .filter(|(_, s)| s.identity == identity && s.terms.exclusive)
                .map(|(id, s)| (s.joined_at, *id))
                .collect();
            others.sort();
            let keep = self.config.limits.sessions_per_identity.max(1) - 1;
            let oldest = others.len().saturating_sub(keep);
            let replaced = others.into_iter().take(oldest).map(|(_, id)| id).collect();
            self.end_sessions(replaced, CloseReason::SESSION_REPLACED, now);
        }
        let session_id = new_session;
        self.sessions.insert(
            session_id,
            SessionEntry {
                identity,
                connection,
                connected: true,
                recent: Idempotency::new(
                    self.config.idempotency_window,
                    self.config.idempotency_bytes,
                ),
                disconnected_at: None,
                terms,
                joined_at: now,
            },
        );
        let failed =
            resume.map(|_| "unknown or expired session; this is a fresh snapshot".to_string());
        Ok(self.welcome(session_id, viewer, seq, failed, until))
    }

    fn welcome(
        &self,
        session_id: Uuid,
        viewer: Viewer,
        seq: u64,
        resume_failed: Option<String>,
        until: Option<u64>,
    ) -> Start {
        let you = self
            .state
            .member(&viewer.identity)
            .cloned()
            .expect("member exists");
        let first = frame(&ServerMessage::Welcome {
            protocol: PROTOCOL_VERSION,
            session_id: session_id.to_string(),
            you,
            snapshot: Box::new(self.state.snapshot(&viewer)),
            seq,
            resume_failed,
            ice_servers: self.config.hooks.ice_servers(&viewer.identity, until),
        });
        let may_publish = self.state.may_publish(&viewer.identity);
        let muted = self.state.media_muted(&viewer.identity);
        Start {
            session_id,
            viewer,
            may_publish,
            muted,
            first,
            replay: Vec::new(),
            seq,
        }
    }

    fn client_command(
        &mut self,
        session_id: Uuid,
        connection: ConnectionId,
        request_id: Option<String>,
        command: Command,
        now: Millis,
    ) {
        let Some(entry) = self.sessions.get(&session_id).filter(|e| e.connected) else {
            return;
        };
        if entry.connection != connection {
            // Read from a socket the session has since left (it resumed on another, maybe on
            // another node, and resent there): answering would answer that request twice.
            self.config.hooks.superseded_command();
            return;
        }
        let to = entry.connection;
        if let Some(reply) = request_id.as_deref().and_then(|r| entry.recent.get(r)) {
            let frame = reply.clone();
            self.sink
                .deliver(self.state.name(), RoomOutput::Reply { to, frame });
            return;
        }
        let identity = entry.identity.clone();
        let started = std::time::Instant::now();
        let applied = self.state.apply(&command, &identity, now);
        self.config.hooks.command_handled(started.elapsed());
        let reply = match applied {
            Ok(outcome) => {
                if let (Command::Upvote { .. }, Ok(mut sheet)) = (&command, self.attendance.lock())
                {
                    sheet.voted(&identity);
                }
                self.publish(outcome.events, now);
                request_id.map(|request_id| {
                    let ack = frame(&ServerMessage::Ack {
                        request_id: request_id.clone(),
                        id: outcome.created,
                    });
                    self.remember(session_id, request_id, ack.clone());
                    ack
                })
            }
            // A refusal changed nothing, so a resend may simply be judged again: refusals
            // are not remembered, and a flood of them cannot grow the room's snapshot.
            Err(denied) => Some(error_frame(request_id, denied)),
        };
        if let Some(reply) = reply {
            self.sink
                .deliver(self.state.name(), RoomOutput::Reply { to, frame: reply });
        }
    }

    /// Remembers an ack for resends, within the session's bound and the room's.
    fn remember(&mut self, session_id: Uuid, request_id: String, ack: Frame) {
        let Some(entry) = self.sessions.get_mut(&session_id) else {
            return;
        };
        self.remembered_bytes = self
            .remembered_bytes
            .saturating_add(request_id.len() + ack.len());
        entry.recent.remember(request_id, ack);
        if self.remembered_bytes > self.config.idempotency_room_bytes {
            self.trim_remembered();
        }
    }

    /// Brings the room's remembered replies under its bound: the oldest of whoever holds
    /// the most go first (ties to the lowest session id, so a replay trims the same ones).
    fn trim_remembered(&mut self) {
        let mut total: usize = self.sessions.values().map(|s| s.recent.bytes()).sum();
        while total > self.config.idempotency_room_bytes {
            let Some(largest) = self
                .sessions
                .iter_mut()
                .max_by(|a, b| {
                    a.1.recent
                        .bytes()
                        .cmp(&b.1.recent.bytes())
                        .then(b.0.cmp(a.0))
                })
                .map(|(_, s)| &mut s.recent)
            else {
                break;
            };
            let before = largest.bytes();
            if !largest.forget_oldest() {
                break;
            }
            total -= before - largest.bytes();
        }
        self.remembered_bytes = total;
    }

    fn session_closed(&mut self, session_id: Uuid, connection: Uuid, left: bool, now: Millis) {
        let Some(entry) = self.sessions.get_mut(&session_id) else {
            return;
        };
        if entry.connection != connection {
            // A replaced socket closing late: its session lives on in the new one.
            return;
        }
        if !std::mem::replace(&mut entry.connected, false) {
            return;
        }
        self.connected.fetch_sub(1, Ordering::Relaxed);
        let identity = entry.identity.clone();
        if left {
            self.sessions.remove(&session_id);
        } else {
            entry.disconnected_at = Some(now);
        }
        let events = self.state.connection_closed(&identity, left, now);
        self.publish(events, now);
    }

    /// Ends these sessions for good (no resume): open sockets are closed with `reason`.
    fn end_sessions(&mut self, ids: Vec<Uuid>, reason: CloseReason, now: Millis) {
        for id in ids {
            let Some(entry) = self.sessions.remove(&id) else {
                continue;
            };
            if !entry.connected {
                continue;
            }
            self.sink.deliver(
                self.state.name(),
                RoomOutput::Close {
                    to: entry.connection,
                    reason,
                },
            );
            self.connected.fetch_sub(1, Ordering::Relaxed);
            // A revoked token's holder is gone at once; a replaced session's seat lives on.
            let left = reason == CloseReason::REVOKED;
            let events = self.state.connection_closed(&entry.identity, left, now);
            self.publish(events, now);
        }
    }

    /// Forgets sessions whose grace period ran out, or whose member is gone.
    fn expire_sessions(&mut self, now: Millis) {
        let grace = self.config.limits.reconnect_grace_ms;
        let state = &self.state;
        self.sessions.retain(|_, s| {
            s.connected
                || (state.member(&s.identity).is_some()
                    && s.disconnected_at.is_some_and(|t| now < t + grace))
        });
    }

    /// Sequences, logs and fans out events: each is serialised once.
    fn publish(&mut self, events: Vec<Event>, now: Millis) {
        for Event { audience, body } in events {
            let seq = self.log.next_seq();
            let effect = effect_of(&self.state, &audience, &body);
            if let Some(SessionEffect::Kick { identity }) = &effect {
                // Their sessions end: no resume into a room that removed them.
                self.sessions
                    .retain(|_, s| s.identity != *identity || s.connected);
            }
            let person = match &audience {
                Audience::Some {
                    person: Some(p), ..
                } => Some(p.as_str()),
                _ => None,
            };
            if let Ok(mut sheet) = self.attendance.lock() {
                sheet.record(&body, person, now);
            }
            (self.config.hooks).record(self.state.name(), seq, &body, person, now);
            if let Some(hook) = self.feed.record(&body, now) {
                self.config.hooks.webhook(hook);
            }
            let frame = frame(&ServerMessage::Event { seq, event: body });
            let envelope = Arc::new(Envelope {
                seq,
                audience,
                effect,
                frame,
            });
            self.log.append(envelope.clone());
            let started = std::time::Instant::now();
            self.sink
                .deliver(self.state.name(), RoomOutput::Publish(envelope));
            self.config.hooks.fanned_out(started.elapsed());
        }
    }
}

pub fn error_frame(request_id: Option<String>, denied: Denied) -> Frame {
    frame(&ServerMessage::Error {
        request_id,
        code: denied.code,
        message: denied.message,
        retry_after_ms: denied.retry_after_ms,
    })
}

pub fn simple_error(
    request_id: Option<String>,
    code: ErrorCode,
    message: impl Into<String>,
) -> Frame {
    error_frame(request_id, Denied::new(code, message))
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
