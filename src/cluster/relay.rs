//! WebRTC for a room terminates on its owner: media signaling from sessions on other nodes is relayed there, and the owner's answers (with its own addresses) go back.
//!
//! A session on a node that does not own its room sends its `rtc_*` commands to the owner's
//! node channel. The owner runs a [`MediaLink`] for it, as for a local session, whose
//! replies travel back as direct frames to the session's socket. It follows the room's
//! events for that person (stage, breakout, mutes) the way a WHIP publisher does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use convene_signaling::{Command, ErrorCode};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use super::protocol::{MediaRelayMessage, NodeMessage};
use super::{Cluster, Refusal};
use crate::media::{Media, MediaAccess, MediaLink, Mutes};
use crate::outbox::{self, Outbox};
use crate::session::{follow, Hub, Rights};
use convene_core::room::actor::simple_error;
use convene_core::room::registry::Rooms;
use convene_core::wire::{ConnectionId, Frame, Viewer};

/// The session side: sends a session's media signaling to its room's owner when that is
/// another node. Ends the relayed media when dropped.
pub struct MediaRelay {
    cluster: Cluster,
    room: String,
    session_id: Uuid,
    identity: String,
    name: String,
    connection: ConnectionId,
    /// Where commands went: the owner that holds this session's media.
    relayed_to: Mutex<Option<String>>,
    used: AtomicBool,
}

impl MediaRelay {
    pub fn new(
        cluster: Cluster,
        room: &str,
        session_id: Uuid,
        identity: &str,
        name: &str,
        connection: ConnectionId,
    ) -> MediaRelay {
        MediaRelay {
            cluster,
            room: room.to_string(),
            session_id,
            identity: identity.to_string(),
            name: name.to_string(),
            connection,
            relayed_to: Mutex::new(None),
            used: AtomicBool::new(false),
        }
    }

    /// Relays the command if another node owns the room (true); false: handle it here.
    pub async fn forward(
        &self,
        request_id: Option<String>,
        command: &Command,
        outbox: &Outbox,
    ) -> bool {
        let owner = match self.cluster.store().owner(&self.room).await {
            Ok(Some((owner, _))) => owner,
            Ok(None) => return false,
            Err(_) => {
                outbox.send(simple_error(
                    request_id,
                    ErrorCode::Unavailable,
                    "the cluster's store is unreachable; retry shortly",
                ));
                return true;
            }
        };
        if owner == self.cluster.node() {
            return false;
        }
        let message = NodeMessage::Media(MediaRelayMessage::Command {
            room: self.room.clone(),
            session_id: self.session_id,
            identity: self.identity.clone(),
            name: self.name.clone(),
            node: self.cluster.node().to_string(),
            connection: self.connection,
            request_id: request_id.clone(),
            command: Box::new(command.clone()),
        });
        let messages = vec![message];
        // Bounded like a room's inputs: the size of one message, and the node's buckets.
        let bytes = serde_json::to_string(&messages).map_or(usize::MAX, |json| json.len());
        if let Err(refusal) = self.cluster.admit(bytes) {
            outbox.send(refusal.frame(request_id));
            return true;
        }
        self.used.store(true, Ordering::Relaxed);
        *self.relayed_to.lock().expect("relay lock") = Some(owner.clone());
        match self.cluster.send_to_node(&owner, messages).await {
            Ok(()) => {}
            // The owner has not read what it was sent yet: nothing of it is dropped for this.
            Err(super::StoreError::InboxFull) => outbox.send(
                Refusal::Behind {
                    retry_after_ms: super::RETRY_AFTER_MS,
                }
                .frame(request_id),
            ),
            Err(_) => outbox.send(simple_error(
                request_id,
                ErrorCode::Unavailable,
                "the cluster's store is unreachable; retry shortly",
            )),
        }
        true
    }
}

impl crate::session::MediaForwarder for MediaRelay {
    fn forward<'a>(
        &'a self,
        request_id: Option<String>,
        command: &'a Command,
        outbox: &'a Outbox,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>> {
        Box::pin(MediaRelay::forward(self, request_id, command, outbox))
    }
}

impl Drop for MediaRelay {
    fn drop(&mut self) {
        if !self.used.load(Ordering::Relaxed) {
            return;
        }
        let Some(owner) = self.relayed_to.lock().expect("relay lock").take() else {
            return;
        };
        let cluster = self.cluster.clone();
        let end = NodeMessage::Media(MediaRelayMessage::End {
            session_id: self.session_id,
        });
        tokio::spawn(async move {
            let _ = cluster.send_to_node(&owner, vec![end]).await;
        });
    }
}

/// A relayed command with its request id, and where its session's socket is now (a resume
/// may have moved it to another node).
type RelayedCommand = (Option<String>, Command, String, ConnectionId);

/// The owner side: the relayed sessions' media on this node.
pub struct RelayedMedia {
    cluster: Cluster,
    media: Media,
    rooms: Rooms,
    /// Relayed sessions register here as local ones do: the owner follows their events.
    hub: Arc<Hub>,
    sessions: Mutex<HashMap<Uuid, mpsc::Sender<RelayedCommand>>>,
}

/// A relayed session with no signaling for this long has gone (its node died unheard).
const IDLE: Duration = Duration::from_secs(3600);

impl RelayedMedia {
    pub fn new(cluster: Cluster, media: Media, rooms: Rooms, hub: Arc<Hub>) -> Arc<RelayedMedia> {
        Arc::new(RelayedMedia {
            cluster,
            media,
            rooms,
            hub,
            sessions: Mutex::new(HashMap::new()),
        })
    }

    pub fn receive(self: &Arc<Self>, message: MediaRelayMessage) {
        match message {
            MediaRelayMessage::End { session_id } => {
                self.sessions
                    .lock()
                    .expect("relayed lock")
                    .remove(&session_id);
            }
            MediaRelayMessage::Command {
                room,
                session_id,
                identity,
                name,
                mut node,
                mut connection,
                mut request_id,
                mut command,
            } => {
                let mut sessions = self.sessions.lock().expect("relayed lock");
                if let Some(commands) = sessions.get(&session_id) {
                    match commands.try_send((request_id, *command, node, connection)) {
                        Ok(()) => return,
                        // Too many in flight for one session: refused, and said so.
                        Err(mpsc::error::TrySendError::Full((request_id, _, node, connection))) => {
                            drop(sessions);
                            let refusal = Refusal::Behind {
                                retry_after_ms: super::RETRY_AFTER_MS,
                            };
                            self.refuse(node, connection, vec![refusal.frame(request_id)]);
                            return;
                        }
                        // Its media ended a moment ago: this command starts it again.
                        Err(mpsc::error::TrySendError::Closed((r, c, n, s))) => {
                            sessions.remove(&session_id);
                            (request_id, command, node, connection) = (r, Box::new(c), n, s);
                        }
                    }
                }
                let (tx, rx) = mpsc::channel(64);
                let _ = tx.try_send((request_id, *command, node.clone(), connection));
                sessions.insert(session_id, tx);
                let relayed = self.clone();
                tokio::spawn(async move {
                    relayed
                        .run(room, session_id, identity, name, node, connection, rx)
                        .await;
                    // Only its own entry: a later command may have started the media again.
                    let mut sessions = relayed.sessions.lock().expect("relayed lock");
                    if sessions.get(&session_id).is_some_and(|tx| tx.is_closed()) {
                        sessions.remove(&session_id);
                    }
                });
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn run(
        &self,
        room: String,
        session_id: Uuid,
        identity: String,
        name: String,
        mut node: String,
        mut connection: ConnectionId,
        mut commands: mpsc::Receiver<RelayedCommand>,
    ) {
        let handle = self.rooms.get_or_start(&room);
        let hub = self.hub.clone();
        let (outbox, inbox) = outbox::outbox(256);
        let local = Uuid::new_v4();
        let registration = hub.register(&room, &identity, local, outbox.clone());
        let Ok(Some(rights)) = handle.media_access(&identity).await else {
            self.answer_rest(commands, ErrorCode::MediaError, "media: not in this room")
                .await;
            return;
        };
        let (access, access_rx) = watch::channel(MediaAccess {
            place: rights.place,
            may_publish: rights.may_publish,
            muted: Mutes::of(&rights.muted),
            recheck: 0,
        });
        let mut viewer = Viewer {
            identity: identity.clone(),
            role: convene_signaling::Role::Participant,
            place: rights.place,
        };
        let mut events = hub.events(
            &room,
            false,
            rights.place,
            inbox.frames.direct_lane(),
            hub.room_head(&room),
        );
        let mut link = MediaLink::new(
            self.media.clone(),
            handle,
            identity,
            name,
            session_id,
            outbox.clone(),
            access_rx,
        );
        let _registration = registration;
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some((request_id, command, from, socket)) => {
                        (node, connection) = (from, socket);
                        link.handle(request_id, command, &outbox).await;
                    }
                    None => break,
                },
                frame = inbox.frames.recv() => {
                    let mut frames = vec![frame];
                    while let Some(more) = inbox.frames.try_recv() {
                        frames.push(more);
                    }
                    self.reply(&node, connection, frames).await;
                }
                event = events.recv() => {
                    let Ok(event) = event else { break };
                    match follow(&mut viewer, &mut events, &event) {
                        Rights::Unchanged => {}
                        Rights::Changed { place, may_publish, muted } => {
                            access.send_modify(|a| {
                                a.place = place;
                                a.may_publish = may_publish;
                                if let Some(muted) = muted {
                                    a.muted = muted;
                                }
                            });
                        }
                        Rights::Recheck => access.send_modify(|a| a.recheck = a.recheck.wrapping_add(1)),
                        Rights::Removed => break,
                    }
                }
                _ = tokio::time::sleep(IDLE) => break,
            }
        }
        drop(link);
        // What the link answered before it ended, then every command it will not handle.
        let mut frames = Vec::new();
        while let Some(frame) = inbox.frames.try_recv() {
            frames.push(frame);
        }
        self.reply(&node, connection, frames).await;
        self.answer_rest(
            commands,
            ErrorCode::MediaError,
            "media: this session's media ended",
        )
        .await;
    }

    /// Sends frames to a relayed session's socket on its node. The session's request is
    /// answered only by this, so a busy Redis or a full inbox is retried (for as long as a
    /// session waits for a call, `cluster.call_timeout_ms`), and a give-up is logged and
    /// counted.
    async fn reply(&self, node: &str, connection: ConnectionId, frames: Vec<Frame>) {
        if frames.is_empty() {
            return;
        }
        // Headed by a batch number: a resend after a late answer from Redis opens once.
        let replies: Vec<NodeMessage> = std::iter::once(self.cluster.once())
            .chain(frames.into_iter().map(|frame| NodeMessage::Reply {
                to: connection,
                frame,
            }))
            .collect();
        let deadline = tokio::time::Instant::now() + self.cluster.settings().call_timeout;
        let mut pause = Duration::from_millis(20);
        let count = replies.len() - 1;
        loop {
            let error = match self.cluster.send_to_node(node, replies.clone()).await {
                Ok(()) => return,
                Err(error) => error,
            };
            if tokio::time::Instant::now() + pause >= deadline {
                tracing::warn!(%error, node, count, "relayed media replies lost");
                (0..count).for_each(|_| crate::metrics::cluster_reply_lost());
                return;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// Answers, with an error, each command still queued for a relayed session that ends.
    async fn answer_rest(
        &self,
        mut commands: mpsc::Receiver<RelayedCommand>,
        code: ErrorCode,
        why: &str,
    ) {
        commands.close();
        let mut to: HashMap<(String, ConnectionId), Vec<Frame>> = HashMap::new();
        while let Ok((request_id, _, node, connection)) = commands.try_recv() {
            let frame = simple_error(request_id, code, why);
            to.entry((node, connection)).or_default().push(frame);
        }
        for ((node, connection), frames) in to {
            self.reply(&node, connection, frames).await;
        }
    }

    /// Answers refused commands without holding up the caller (the pub/sub reader).
    fn refuse(self: &Arc<Self>, node: String, connection: ConnectionId, frames: Vec<Frame>) {
        let relayed = self.clone();
        tokio::spawn(async move { relayed.reply(&node, connection, frames).await });
    }
}
