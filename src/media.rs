//! Media glue: maps rooms and places to SFU groups, runs each session's WebRTC signaling, and serves WHIP/WHEP peers.
//!
//! The SFU knows peers, groups and tracks. This module is where rooms meet it: a place
//! (main room or breakout) is a group, a member's right to publish comes from the room,
//! and the SFU's track events become room events.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use convene_signaling::{Command, ErrorCode, ServerMessage, TrackKind};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::config::RtcConfig;
use crate::outbox::Outbox;
use convene_core::room::actor::{frame, simple_error, RoomHandle, RoomInput};
use convene_core::room::Place;
use convene_core::wire::Frame;
use convene_sfu::{addresses, GroupId, PeerEvent, PeerId, PeerOptions, Sfu, SfuConfig, SfuError};

/// The SFU group of a place in a room. The lobby is a group of its own that nobody
/// publishes to (breakout ids count up from 1, never near `u32::MAX`).
pub fn group(room: &str, place: Place) -> GroupId {
    match place {
        Place::Lobby => GroupId::new(room, Some(LOBBY_GROUP)),
        _ => GroupId::new(room, place.breakout()),
    }
}

const LOBBY_GROUP: u32 = u32::MAX;

/// Does this offer send media (any m-line that is not recvonly or inactive)?
pub fn offer_sends_media(sdp: &str) -> bool {
    sdp.lines()
        .map(str::trim)
        .any(|l| l == "a=sendrecv" || l == "a=sendonly")
}

/// The kinds of media a moderator muted for someone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mutes {
    pub audio: bool,
    pub video: bool,
}

impl Mutes {
    pub fn of(kinds: &[TrackKind]) -> Mutes {
        Mutes {
            audio: kinds.contains(&TrackKind::Audio),
            video: kinds.contains(&TrackKind::Video),
        }
    }
}

/// What a member may do with media now, as the room last said.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MediaAccess {
    pub place: Place,
    pub may_publish: bool,
    pub muted: Mutes,
    /// Bumped when room settings change: the media task asks the room again.
    pub recheck: u64,
}

/// The node's media: the SFU and who publishes where.
#[derive(Clone)]
pub struct Media {
    pub sfu: Sfu,
    /// The addresses in the SFU's candidates (the embedded TURN relay's only peers).
    pub advertise_ips: Vec<std::net::IpAddr>,
    /// room -> identity -> the peer that identity publishes from (for WHEP `?participant=`).
    publishers: Arc<Mutex<HashMap<String, HashMap<String, PeerId>>>>,
    /// Media of sessions whose socket dropped, kept through the reconnect grace so a resumed
    /// session finds its peer still connected (its browser keeps the `RTCPeerConnection`).
    parked: Arc<Mutex<HashMap<Uuid, Parked>>>,
    parkings: Arc<AtomicU64>,
}

/// A session's media while it has no socket.
struct Parked {
    link: MediaLink,
    access: watch::Sender<MediaAccess>,
    ticket: u64,
}

impl Media {
    /// `https_port`: the HTTP listener's port, when ICE-TCP also rides on it.
    pub fn start(config: &RtcConfig, https_port: Option<u16>) -> Result<Media, SfuError> {
        let configured = addresses::parse_list(&config.advertise_ip)
            .map_err(|e| SfuError::Config(e.to_string()))?;
        let plan = addresses::plan(
            &configured,
            config.bind_ip,
            &addresses::interface_addresses(),
        )
        .map_err(|e| SfuError::Config(e.to_string()))?;
        for warning in &plan.warnings {
            tracing::warn!("media: {warning}");
        }
        let advertise_ips = plan.advertise;
        let sfu = Sfu::start(SfuConfig {
            udp_port: config.udp_port,
            tcp_port: config.ice_tcp.then_some(config.tcp_port),
            tcp_handoff_port: https_port,
            tcp_limits: convene_sfu::TcpLimits {
                first_frame: std::time::Duration::from_secs(
                    config.tcp_first_frame_timeout_s.max(1),
                ),
                max_connections: config.tcp_max_connections,
                max_per_ip: config.tcp_max_connections_per_ip,
                max_pending_per_ip: config.tcp_max_pending_per_ip,
            },
            bind_ip: config.bind_ip,
            advertise_ips: advertise_ips.clone(),
            workers: config.workers,
            bandwidth_estimation: config.bandwidth_estimation,
        })?;
        tracing::info!(udp = %sfu.local_addr(), tcp = ?sfu.tcp_addr(), ?advertise_ips, "media engine started");
        Ok(Media {
            sfu,
            advertise_ips,
            publishers: Arc::default(),
            parked: Arc::default(),
            parkings: Arc::default(),
        })
    }

    /// Keeps a session's media for `grace` after its socket dropped; `reclaim` takes it back.
    /// A link whose media task never started holds nothing worth keeping.
    pub fn park(
        &self,
        session_id: Uuid,
        link: MediaLink,
        access: watch::Sender<MediaAccess>,
        grace: Duration,
    ) {
        if !link.is_running() {
            return;
        }
        let ticket = self.parkings.fetch_add(1, Ordering::Relaxed);
        self.parked.lock().expect("parked lock").insert(
            session_id,
            Parked {
                link,
                access,
                ticket,
            },
        );
        let parked = self.parked.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let mut parked = parked.lock().expect("parked lock");
            if parked.get(&session_id).is_some_and(|p| p.ticket == ticket) {
                // Dropping the link ends its media task, which removes the peer.
                parked.remove(&session_id);
                tracing::debug!(%session_id, "parked media expired with the reconnect grace");
            }
        });
    }

    /// A resumed session's media, if it was parked; replies now go to `outbox`.
    pub fn reclaim(
        &self,
        session_id: Uuid,
        outbox: &Outbox,
    ) -> Option<(MediaLink, watch::Sender<MediaAccess>)> {
        let parked = self
            .parked
            .lock()
            .expect("parked lock")
            .remove(&session_id)?;
        parked.link.replies.set(outbox.clone());
        Some((parked.link, parked.access))
    }

    pub fn publisher_peer(&self, room: &str, identity: &str) -> Option<PeerId> {
        let publishers = self.publishers.lock().expect("publishers lock");
        publishers.get(room)?.get(identity).cloned()
    }

    fn set_publisher(&self, room: &str, identity: &str, peer: Option<&PeerId>) {
        let mut publishers = self.publishers.lock().expect("publishers lock");
        let room_map = publishers.entry(room.to_string()).or_default();
        match peer {
            Some(peer) => {
                room_map.insert(identity.to_string(), peer.clone());
            }
            None => {
                room_map.remove(identity);
                if room_map.is_empty() {
                    publishers.remove(room);
                }
            }
        }
    }

    /// Relays a peer's events to the room until the peer is gone; unpublishes what is left.
    /// Returns when the channel closes or the peer disconnects.
    pub async fn relay_tracks(
        &self,
        room: &RoomHandle,
        identity: &str,
        peer: &PeerId,
        mut events: mpsc::UnboundedReceiver<PeerEvent>,
        offers: Option<&Replies>,
    ) {
        let mut published = HashSet::new();
        while let Some(event) = events.recv().await {
            if !self
                .on_peer_event(room, identity, peer, event, &mut published, offers)
                .await
            {
                break;
            }
        }
        self.unpublish_all(room, identity, &mut published).await;
    }

    /// Handles one SFU event for a peer; false when the peer is gone.
    async fn on_peer_event(
        &self,
        room: &RoomHandle,
        identity: &str,
        peer: &PeerId,
        event: PeerEvent,
        published: &mut HashSet<String>,
        offers: Option<&Replies>,
    ) -> bool {
        match event {
            PeerEvent::TrackPublished(info) => {
                let mut track = info.to_track(info.group.part);
                track.publisher = identity.to_string();
                published.insert(track.id.clone());
                self.set_publisher(&room.name, identity, Some(peer));
                let _ = room.send(RoomInput::TrackPublished(track).into()).await;
            }
            PeerEvent::TrackUnpublished { track_id } => {
                published.remove(&track_id);
                let _ = room
                    .send(RoomInput::TrackUnpublished(track_id).into())
                    .await;
            }
            PeerEvent::Offer(sdp) => {
                tracing::debug!(peer = %peer, m_lines = sdp.matches("\nm=").count(), bytes = sdp.len(), "server offer");
                if let Some(outbox) = offers {
                    outbox.send(frame(&ServerMessage::RtcOffer { sdp }));
                }
            }
            PeerEvent::Disconnected => return false,
            _ => {}
        }
        true
    }

    async fn unpublish_all(
        &self,
        room: &RoomHandle,
        identity: &str,
        published: &mut HashSet<String>,
    ) {
        for track_id in published.drain() {
            let _ = room
                .send(RoomInput::TrackUnpublished(track_id).into())
                .await;
        }
        let mut publishers = self.publishers.lock().expect("publishers lock");
        if let Some(room_map) = publishers.get_mut(&*room.name) {
            room_map.remove(identity);
        }
    }
}

/// Where a session's media task sends answers, offers and acks: the session's current
/// socket, which changes when it resumes.
#[derive(Clone)]
pub struct Replies(Arc<Mutex<Outbox>>);

impl Replies {
    pub fn send(&self, frame: Frame) {
        self.0.lock().expect("replies lock").send(frame);
    }
    fn set(&self, outbox: Outbox) {
        *self.0.lock().expect("replies lock") = outbox;
    }
}

/// A session's handle on its media task, which starts on the first signaling message:
/// most of a webcast audience never sends one, and an idle session should cost little.
/// It belongs to the session, not the socket: parked through a reconnect, it keeps the peer.
pub struct MediaLink {
    state: LinkState,
    replies: Replies,
}

enum LinkState {
    Idle(Box<SessionMedia>),
    Running(mpsc::Sender<(Option<String>, Command)>),
}

impl MediaLink {
    /// Prepares the media task for a session. `access` follows the member's place and stage.
    pub fn new(
        media: Media,
        room: RoomHandle,
        identity: String,
        name: String,
        session_id: Uuid,
        outbox: Outbox,
        access: watch::Receiver<MediaAccess>,
    ) -> MediaLink {
        let peer: PeerId = format!("{identity}.{}", &session_id.simple().to_string()[..8]);
        let replies = Replies(Arc::new(Mutex::new(outbox)));
        let task = SessionMedia {
            media,
            room,
            identity,
            name,
            peer,
            outbox: replies.clone(),
            access,
            events: None,
            published: HashSet::new(),
        };
        MediaLink {
            state: LinkState::Idle(Box::new(task)),
            replies,
        }
    }

    /// The media task has started (the session signalled).
    pub fn is_running(&self) -> bool {
        matches!(self.state, LinkState::Running(_))
    }

    /// Queues a signaling command; the media task replies through the outbox.
    pub async fn handle(&mut self, request_id: Option<String>, command: Command, outbox: &Outbox) {
        if let LinkState::Idle(_) = self.state {
            let (tx, rx) = mpsc::channel(32);
            let LinkState::Idle(task) = std::mem::replace(&mut self.state, LinkState::Running(tx))
            else {
                unreachable!("checked above");
            };
            tokio::spawn(task.run(rx));
        }
        let LinkState::Running(commands) = &self.state else {
            unreachable!("started above");
        };
        if commands.try_send((request_id.clone(), command)).is_err() {
            tracing::debug!("media command refused: the media task is behind");
            outbox.send(simple_error(
                request_id,
                ErrorCode::RateLimited,
                "too much signaling at once; wait for the previous answer",
            ));
        }
    }
}

/// One session's WebRTC peer. Answers are sent before the next SFU event is read, so a
/// server offer never overtakes the answer to the client's own offer.
struct SessionMedia {
    media: Media,
    room: RoomHandle,
    identity: String,
    name: String,
    peer: PeerId,
    outbox: Replies,
    access: watch::Receiver<MediaAccess>,
    events: Option<mpsc::UnboundedReceiver<PeerEvent>>,
    published: HashSet<String>,
}

impl SessionMedia {
    async fn run(mut self, mut commands: mpsc::Receiver<(Option<String>, Command)>) {
        let mut current = *self.access.borrow();
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some((request_id, command)) => self.signal(request_id, command).await,
                    None => break,
                },
                event = next_event(&mut self.events) => match event {
                    Some(event) => {
                        let (media, room, identity, peer) = (&self.media, &self.room, &self.identity, &self.peer);
                        if !media.on_peer_event(room, identity, peer, event, &mut self.published, Some(&self.outbox)).await {
                            self.peer_gone().await;
                        }
                    }
                    None => self.peer_gone().await,
                },
                changed = self.access.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let mut access = *self.access.borrow();
                    if access.recheck != current.recheck {
                        // The room kind or a room-wide mute may have changed: ask the room.
                        if let Ok(Some(rights)) = self.room.media_access(&self.identity).await {
                            access.place = rights.place;
                            access.may_publish = rights.may_publish;
                            access.muted = Mutes::of(&rights.muted);
                        }
                    }
                    if access != current && self.events.is_some() {
                        if access.place != current.place {
                            self.media.sfu.move_peer(&self.peer, group(&self.room.name, access.place));
                        }
                        self.media.sfu.set_can_publish(&self.peer, access.may_publish);
                        apply_mutes(&self.media.sfu, &self.peer, access.muted);
                    }
                    current = access;
                }
            }
        }
        if self.events.is_some() {
            self.media.sfu.remove_peer(&self.peer);
        }
        let (media, room, identity) = (&self.media, &self.room, &self.identity);
        media
            .unpublish_all(room, identity, &mut self.published)
            .await;
    }

    async fn peer_gone(&mut self) {
        self.events = None;
        let (media, room, identity) = (&self.media, &self.room, &self.identity);
        media
            .unpublish_all(room, identity, &mut self.published)
            .await;
    }

    fn reply(&self, request_id: Option<String>) {
        if let Some(request_id) = request_id {
            self.outbox.send(frame(&ServerMessage::Ack {
                request_id,
                id: None,
            }));
        }
    }

    fn refuse(&self, request_id: Option<String>, code: ErrorCode, message: impl Into<String>) {
        self.outbox.send(simple_error(request_id, code, message));
    }

    async fn signal(&mut self, request_id: Option<String>, command: Command) {
        match command {
            Command::RtcOffer { sdp } => self.offer(request_id, sdp).await,
            Command::RtcAnswer { sdp } => match self.media.sfu.accept_answer(&self.peer, sdp).await
            {
                Ok(()) => {
                    tracing::debug!(peer = %self.peer, "answer accepted");
                    self.reply(request_id)
                }
                Err(SfuError::BadSdp(why)) => {
                    tracing::debug!(peer = %self.peer, %why, "answer refused");
                    self.refuse(
                        request_id,
                        ErrorCode::InvalidArgument,
                        format!("bad SDP: {why}"),
                    )
                }
                Err(e) => {
                    // The client and the engine disagree on what was negotiated: worth a line.
                    tracing::debug!(peer = %self.peer, error = %e, "answer refused");
                    self.refuse(request_id, ErrorCode::MediaError, e.to_string())
                }
            },
            // ICE-lite: the answer carries the server's candidate and the client's are learnt
            // from its checks, so trickled candidates need no action.
            Command::RtcCandidate { .. } => self.reply(request_id),
            Command::Unpublish { track_id } => {
                if self.events.is_some() {
                    match track_id {
                        // Only that track: a muted camera leaves the microphone on.
                        Some(id) => self.media.sfu.set_track_withheld(&self.peer, &id, true),
                        None => self.media.sfu.set_can_publish(&self.peer, false),
                    }
                }
                self.reply(request_id);
            }
            Command::SetVideoQuality { track_id, quality } => {
                self.media
                    .sfu
                    .set_video_quality(&self.peer, track_id.as_deref(), quality);
                self.reply(request_id);
            }
            _ => self.refuse(request_id, ErrorCode::InvalidMessage, "not a media command"),
        }
    }

    async fn offer(&mut self, request_id: Option<String>, sdp: String) {
        // Ask the room: it is the authority on where this member is and whether they may publish.
        let Ok(Some(rights)) = self.room.media_access(&self.identity).await else {
            return self.refuse(request_id, ErrorCode::NotInRoom, "you are not in this room");
        };
        let (place, may_publish) = (rights.place, rights.may_publish);
        if offer_sends_media(&sdp) && !may_publish {
            return self.refuse(request_id, ErrorCode::Forbidden, "only people on stage may publish media in a webcast; raise your hand to be invited");
        }
        if self.events.is_none() {
            let mut options = PeerOptions::session(self.name.clone());
            options.can_publish = may_publish;
            let events =
                self.media
                    .sfu
                    .add_peer(self.peer.clone(), group(&self.room.name, place), options);
            self.events = Some(events);
            apply_mutes(&self.media.sfu, &self.peer, Mutes::of(&rights.muted));
        } else {
            // A new offer publishes anew: tracks stopped one by one come back.
            self.media.sfu.release_withheld(&self.peer);
            self.media.sfu.set_can_publish(&self.peer, may_publish);
        }
        let m_lines = sdp.matches("\nm=").count();
        match self.media.sfu.accept_offer(&self.peer, sdp).await {
            Ok(answer) => {
                tracing::debug!(peer = %self.peer, m_lines, "client offer answered");
                self.outbox
                    .send(frame(&ServerMessage::RtcAnswer { sdp: answer }));
                self.reply(request_id);
            }
            Err(SfuError::BadSdp(why)) => {
                self.refuse(
                    request_id,
                    ErrorCode::InvalidArgument,
                    format!("bad SDP: {why}"),
                );
            }
            Err(SfuError::UnknownPeer) => {
                // The engine dropped the peer after a failed offer: the next offer starts afresh.
                self.events = None;
                self.refuse(
                    request_id,
                    ErrorCode::InvalidArgument,
                    "the offer was rejected; send a new one",
                );
            }
            Err(e) => self.refuse(request_id, ErrorCode::MediaError, e.to_string()),
        }
    }
}

/// A moderator's mutes, enforced by the SFU whatever the peer offers.
pub fn apply_mutes(sfu: &Sfu, peer: &PeerId, muted: Mutes) {
    sfu.set_muted(peer, TrackKind::Audio, muted.audio);
    sfu.set_muted(peer, TrackKind::Video, muted.video);
}

async fn next_event(events: &mut Option<mpsc::UnboundedReceiver<PeerEvent>>) -> Option<PeerEvent> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_that_send_media_are_recognised() {
        assert!(offer_sends_media(
            "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendrecv\r\n"
        ));
        assert!(!offer_sends_media(
            "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\n"
        ));
    }
}
