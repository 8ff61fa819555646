//! What a worker keeps: its peers, the tracks they receive, the tracks published on it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use convene_signaling::{TrackKind, VideoQuality};
use str0m::change::SdpPendingOffer;
use str0m::format::PayloadParams;
use str0m::media::{MediaKind, Mid, Pt, Rid};
use str0m::net::Protocol;
use str0m::rtp::Ssrc;
use str0m::Rtc;
use tokio::sync::mpsc as tokio_mpsc;

use super::gate::Gate;
use super::Forwarded;
use crate::directory::{PeerKey, TrackKey, TrackMeta};
use crate::egress::{ExtIds, History, KeySlot, SendBatch, SrtpSender};
use crate::layer::{KeyframeThrottle, LayerMeter, SeqRewriter, TimeRewriter};
use crate::link::TcpLink;
use crate::{Counters, PeerEvent, PeerOptions, Shared};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OutState {
    /// Waiting for a slot or a negotiation.
    ToOpen,
    Negotiating(Mid),
    Open(Mid),
    ToStop(Mid),
    NegotiatingStop(Mid),
}

/// One track a subscriber receives.
pub(super) struct TrackOut {
    pub(super) meta: Arc<TrackMeta>,
    pub(super) state: OutState,
    /// Bound to an m-line the client offered (recvonly): freed, not stopped, at the end.
    pub(super) slot: bool,
    /// Unsubscribed while its m-line was being negotiated.
    pub(super) unwanted: bool,
    /// Which layer it gets, whether it waits for a keyframe (see `gate.rs`).
    pub(super) gate: Gate,
    pub(super) seq: SeqRewriter,
    pub(super) time: TimeRewriter,
    /// The publisher's payload type and ours for it (None: we lack the codec).
    pub(super) pt: Option<(Pt, Option<Pt>)>,
    /// Direct egress: our SSRC and header extension ids (looked up on first use), when
    /// the engine last sent a packet of this stream, and recent video for NACKs.
    pub(super) direct: Option<(u32, ExtIds)>,
    pub(super) engine_at: Option<Instant>,
    pub(super) history: History,
}

impl TrackOut {
    pub(super) fn new(meta: Arc<TrackMeta>, state: OutState, slot: bool) -> Self {
        TrackOut {
            meta,
            state,
            slot,
            unwanted: false,
            gate: Gate::default(),
            seq: SeqRewriter::default(),
            time: TimeRewriter::default(),
            pt: None,
            direct: None,
            engine_at: None,
            history: History::default(),
        }
    }

    pub(super) fn open(&mut self, mid: Mid) {
        self.state = OutState::Open(mid);
        self.gate = Gate {
            need_keyframe: self.meta.kind == TrackKind::Video,
            ..Gate::default()
        };
        self.seq = SeqRewriter::default();
        self.time = TimeRewriter::default();
        self.pt = None;
        self.direct = None;
        self.engine_at = None;
        self.history = History::default();
    }
}

pub(super) struct Peer {
    pub(super) key: PeerKey,
    pub(super) id: String,
    pub(super) rtc: Rtc,
    pub(super) events: tokio_mpsc::UnboundedSender<PeerEvent>,
    pub(super) opts: PeerOptions,
    pub(super) added_at: Instant,
    pub(super) timeout: Instant,
    pub(super) dirty: bool,
    pub(super) dead: bool,
    pub(super) connected: bool,
    /// The client's first offer has been applied.
    pub(super) has_remote: bool,
    pub(super) negotiate: bool,
    pub(super) pending: Option<SdpPendingOffer>,
    pub(super) tracks_in: Vec<(Mid, TrackKey)>,
    /// Every m-line the client has sent on, with its simulcast: when one that went inactive
    /// sends again (a camera stopped and started on the same transceiver), it is a new track.
    pub(super) sending_mids: Vec<(Mid, MediaKind, Option<str0m::media::Simulcast>)>,
    /// Incoming SSRCs seen, with their track, layer and last payload type's params.
    pub(super) rx: Vec<RxStream>,
    pub(super) outs: Vec<TrackOut>,
    /// Client-offered m-lines we may send on, not yet bound to a track.
    pub(super) free_slots: Vec<(Mid, MediaKind)>,
    /// Every m-line our own offers added. Never a slot: the client labelled it with the track
    /// it first carried, and a browser keeps that label whatever a later msid says, so another
    /// track on it would show in the wrong person's tile.
    pub(super) added_mids: Vec<Mid>,
    pub(super) quality: VideoQuality,
    pub(super) quality_by_track: Vec<(String, VideoQuality)>,
    pub(super) bwe_bps: Option<u64>,
    /// Forwarded media skips the engine (no bandwidth estimation to feed): see `egress`.
    pub(super) direct: bool,
    pub(super) keys: KeySlot,
    pub(super) srtp: Option<SrtpSender>,
    /// Where the engine last sent to (the nominated remote address).
    pub(super) remote: Option<SocketAddr>,
    /// That address is an ICE-TCP connection: media goes through the engine and the link.
    pub(super) remote_tcp: bool,
}

impl Peer {
    pub(super) fn quality_for(&self, track_id: &str) -> VideoQuality {
        self.quality_by_track
            .iter()
            .find(|(t, _)| t == track_id)
            .map_or(self.quality, |(_, q)| *q)
    }

    /// This peer's bandwidth estimate shared across its open video tracks.
    pub(super) fn video_budget(&self) -> Option<u64> {
        let bwe = self.bwe_bps?;
        let videos = self
            .outs
            .iter()
            .filter(|o| o.meta.kind == TrackKind::Video && matches!(o.state, OutState::Open(_)))
            .count()
            .max(1) as u64;
        // Leave ~10% for audio and RTCP.
        Some(bwe * 9 / 10 / videos)
    }
}

/// One incoming RTP stream (an SSRC) of a publisher.
pub(super) struct RxStream {
    pub(super) ssrc: Ssrc,
    pub(super) track: TrackKey,
    pub(super) rid: Option<Rid>,
    pub(super) params: Option<PayloadParams>,
}

/// A track published by a peer on this worker.
pub(super) struct Published {
    pub(super) publisher: PeerKey,
    pub(super) mid: Mid,
    /// Workers with subscribers (this one included when it has some).
    pub(super) fanout: Vec<usize>,
    pub(super) throttle: KeyframeThrottle,
}

/// A track with subscribers on this worker.
#[derive(Default)]
pub(super) struct LocalTrack {
    pub(super) subscribers: Vec<PeerKey>,
    pub(super) meter: LayerMeter,
}

/// Everything of a worker except its peers (so both can be borrowed at once).
pub(super) struct Ctx {
    pub(super) idx: usize,
    pub(super) shared: Arc<Shared>,
    pub(super) published: HashMap<TrackKey, Published>,
    pub(super) subs: HashMap<TrackKey, LocalTrack>,
    pub(super) local: Vec<Forwarded>,
    pub(super) outbox: Vec<Vec<Forwarded>>,
    pub(super) frames: u64,
    pub(super) bytes: u64,
    pub(super) direct: u64,
    pub(super) retransmits: u64,
    /// Packets written to ICE-TCP connections this turn.
    pub(super) tcp_out: u64,
    /// Every datagram this worker sends goes through here, in order.
    pub(super) batch: SendBatch,
    /// ICE-TCP connections owned by this worker, by remote address.
    pub(super) tcp_links: HashMap<SocketAddr, TcpLink>,
}

impl Ctx {
    pub(super) fn send(&mut self, buf: Vec<u8>, to: SocketAddr) {
        self.batch.push(&self.shared.socket, buf, to);
    }

    /// Sends what the engine asks for, over UDP or the peer's TCP connection.
    pub(super) fn transmit(&mut self, t: str0m::net::Transmit) {
        if t.proto == Protocol::Tcp {
            let sent = self
                .tcp_links
                .get(&t.destination)
                .is_some_and(|link| link.send(t.contents.into()));
            if sent {
                self.tcp_out += 1;
            } else {
                Counters::add(&self.shared.counters.datagrams_dropped, 1);
            }
        } else {
            self.send(t.contents.into(), t.destination);
        }
    }

    pub(super) fn drop_peer_state(&mut self, p: &Peer) {
        for (_, t) in &p.tracks_in {
            self.published.remove(t);
        }
        for o in &p.outs {
            if let Some(lt) = self.subs.get_mut(&o.meta.key) {
                lt.subscribers.retain(|k| *k != p.key);
                if lt.subscribers.is_empty() {
                    self.subs.remove(&o.meta.key);
                }
            }
        }
    }
}
