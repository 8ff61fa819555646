//! A worker thread: owns a shard of peers and everything on their packet path.
//!
//! One loop: wait for the inbox (datagrams, commands, media batches from other
//! workers) or the earliest `str0m` timeout, feed the peers, poll them, and
//! forward what publishers sent. Subscribers on this worker are written to
//! directly; each other worker with subscribers gets one batch per loop turn.
//!
//! Peers run in str0m's RTP mode: an incoming RTP packet is forwarded as it is
//! (payload `Arc<[u8]>` shared by every subscriber), with the subscriber's own
//! SSRC (str0m's send stream), sequence numbers and RTP time rewritten per
//! subscriber so they stay gapless across keyframe waits and layer switches.
//! For subscribers with bandwidth estimation str0m does SRTP, NACK/RTX and TWCC
//! per stream; the others take the direct egress path (`egress.rs`). Every
//! datagram leaves through the worker's `sendmmsg` batch. Nothing on this path
//! takes a lock.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use convene_signaling::{TrackKind, TrackSource, VideoQuality};
use str0m::bwe::{Bitrate, BweKind};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::PayloadParams;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, MediaTime, Mid, Pt, Rid};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::rtp::rtcp::{Nack, Rtcp};
use str0m::rtp::RawPacket;
use str0m::rtp::{
    Extension, ExtensionMap, ExtensionValues, RtpPacket, RtpWrite, Ssrc, VideoOrientation,
};
use str0m::{Candidate, Event, IceConnectionState, IceCreds, Input, Output, Rtc, RtcConfig};
use tokio::sync::{mpsc as tokio_mpsc, oneshot};

use super::directory::{PeerKey, TrackKey, TrackMeta};
use super::egress::{self, ExtIds, History, KeySlot, RtpOut, SendBatch, Sent, SrtpSender};
use super::layer::{
    choose_layer, is_keyframe_start, KeyframeThrottle, Layer, LayerMeter, SeqRewriter, TimeRewriter,
};
use super::tcp::TcpLink;
use super::{Counters, PeerEvent, PeerOptions, SfuError, Shared};

/// Datagrams and media batches queued to one worker before new ones are dropped.
const MAX_QUEUED: usize = 8192;
/// Messages handled per loop turn before peers are polled.
const BATCH: usize = 256;
/// Longest sleep: housekeeping runs at least this often.
const MAX_SLEEP: Duration = Duration::from_millis(100);
/// A peer that is not connected this long after being added is dropped.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a subscriber re-chooses its simulcast layer.
const LAYER_EVAL: Duration = Duration::from_millis(500);
/// How often one subscriber may repeat a keyframe request while it waits.
const KEYFRAME_RETRY: Duration = Duration::from_millis(300);

static NEXT_TRACK: AtomicU64 = AtomicU64::new(1);

pub(crate) struct NewPeer {
    pub key: PeerKey,
    pub id: String,
    pub creds: IceCreds,
    pub opts: PeerOptions,
    pub events: tokio_mpsc::UnboundedSender<PeerEvent>,
}

/// One RTP packet from a publisher, on its way to subscribers.
#[derive(Debug, Clone)]
pub(crate) struct Forwarded {
    track: TrackKey,
    rid: Option<Rid>,
    params: PayloadParams,
    /// Extended sequence number and RTP time, as received.
    seq: u64,
    time: MediaTime,
    network_time: Instant,
    marker: bool,
    /// The first packet of a keyframe.
    keyframe: bool,
    audio_level: Option<i8>,
    voice_activity: Option<bool>,
    video_orientation: Option<VideoOrientation>,
    data: Arc<[u8]>,
}

pub(crate) enum WorkerMsg {
    Datagram {
        buf: Vec<u8>,
        len: usize,
        source: SocketAddr,
        at: Instant,
        /// Unframed from an ICE-TCP connection (`tcp.rs`) rather than read from the UDP socket.
        tcp: bool,
    },
    /// An ICE-TCP connection from `source` now sends to this worker; write back through `link`.
    TcpOpen {
        source: SocketAddr,
        link: TcpLink,
    },
    TcpClosed {
        source: SocketAddr,
    },
    AddPeer(Box<NewPeer>),
    RemovePeer {
        peer: PeerKey,
    },
    Offer {
        peer: PeerKey,
        offer: Box<SdpOffer>,
        reply: oneshot::Sender<Result<String, SfuError>>,
    },
    Answer {
        peer: PeerKey,
        answer: Box<SdpAnswer>,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Subscribe {
        peer: PeerKey,
        track: Arc<TrackMeta>,
    },
    Unsubscribe {
        peer: PeerKey,
        track: TrackKey,
    },
    Fanout {
        track: TrackKey,
        workers: Vec<usize>,
    },
    Media(Vec<Forwarded>),
    KeyframeRequest {
        track: TrackKey,
        rid: Option<Rid>,
    },
    SetQuality {
        peer: PeerKey,
        track: Option<String>,
        quality: VideoQuality,
    },
    Shutdown,
}

/// The sending side of a worker's inbox.
pub(crate) struct WorkerTx {
    tx: mpsc::Sender<WorkerMsg>,
    queued: Arc<AtomicUsize>,
}

pub(crate) struct WorkerRx {
    rx: mpsc::Receiver<WorkerMsg>,
    queued: Arc<AtomicUsize>,
}

pub(crate) fn channel() -> (WorkerTx, WorkerRx) {
    let (tx, rx) = mpsc::channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (
        WorkerTx {
            tx,
            queued: queued.clone(),
        },
        WorkerRx { rx, queued },
    )
}

impl WorkerTx {
    /// Control messages are never dropped.
    pub fn send(&self, msg: WorkerMsg) {
        let _ = self.tx.send(msg);
    }

    /// Datagrams and media batches are dropped (like on the network) when the worker
    /// is behind. A refused datagram gives its buffer back.
    pub fn send_datagram(
        &self,
        buf: Vec<u8>,
        len: usize,
        source: SocketAddr,
        at: Instant,
        tcp: bool,
    ) -> Result<(), Vec<u8>> {
        if self.queued.load(Ordering::Relaxed) >= MAX_QUEUED {
            return Err(buf);
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        match self.tx.send(WorkerMsg::Datagram {
            buf,
            len,
            source,
            at,
            tcp,
        }) {
            Ok(()) => Ok(()),
            Err(mpsc::SendError(WorkerMsg::Datagram { buf, .. })) => Err(buf),
            Err(_) => Err(Vec::new()),
        }
    }

    fn send_media(&self, batch: Vec<Forwarded>) -> bool {
        if self.queued.load(Ordering::Relaxed) >= MAX_QUEUED {
            return false;
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.tx.send(WorkerMsg::Media(batch)).is_ok()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutState {
    /// Waiting for a slot or a negotiation.
    ToOpen,
    Negotiating(Mid),
    Open(Mid),
    ToStop(Mid),
    NegotiatingStop(Mid),
}

/// One track a subscriber receives.
struct TrackOut {
    meta: Arc<TrackMeta>,
    state: OutState,
    /// Bound to an m-line the client offered (recvonly): freed, not stopped, at the end.
    slot: bool,
    /// Unsubscribed while its m-line was being negotiated.
    unwanted: bool,
    /// Simulcast layer being forwarded, and the one wanted.
    current: Option<Rid>,
    target: Option<Rid>,
    /// Video without a keyframe yet (single-layer tracks).
    need_keyframe: bool,
    seq: SeqRewriter,
    time: TimeRewriter,
    /// The publisher's payload type and ours for it (None: we lack the codec).
    pt: Option<(Pt, Option<Pt>)>,
    last_eval: Option<Instant>,
    last_ask: Option<Instant>,
    /// Direct egress: our SSRC and header extension ids (looked up on first use), when
    /// the engine last sent a packet of this stream, and recent video for NACKs.
    direct: Option<(u32, ExtIds)>,
    engine_at: Option<Instant>,
    history: History,
}

impl TrackOut {
    fn new(meta: Arc<TrackMeta>, state: OutState, slot: bool) -> Self {
        TrackOut {
            meta,
            state,
            slot,
            unwanted: false,
            current: None,
            target: None,
            need_keyframe: false,
            seq: SeqRewriter::default(),
            time: TimeRewriter::default(),
            pt: None,
            last_eval: None,
            last_ask: None,
            direct: None,
            engine_at: None,
            history: History::default(),
        }
    }

    fn open(&mut self, mid: Mid) {
        self.state = OutState::Open(mid);
        self.need_keyframe = self.meta.kind == TrackKind::Video;
        self.seq = SeqRewriter::default();
        self.time = TimeRewriter::default();
        self.pt = None;
        self.current = None;
        self.target = None;
        self.last_eval = None;
        self.last_ask = None;
        self.direct = None;
        self.engine_at = None;
        self.history = History::default();
    }
}

struct Peer {
    key: PeerKey,
    id: String,
    rtc: Rtc,
    events: tokio_mpsc::UnboundedSender<PeerEvent>,
    opts: PeerOptions,
    added_at: Instant,
    timeout: Instant,
    dirty: bool,
    dead: bool,
    connected: bool,
    /// The client's first offer has been applied.
    has_remote: bool,
    negotiate: bool,
    pending: Option<SdpPendingOffer>,
    tracks_in: Vec<(Mid, TrackKey)>,
    /// Every m-line the client has sent on, with its simulcast: when one that went inactive
    /// sends again (a camera stopped and started on the same transceiver), it is a new track.
    sending_mids: Vec<(Mid, MediaKind, Option<str0m::media::Simulcast>)>,
    /// Incoming SSRCs seen, with their track, layer and last payload type's params.
    rx: Vec<RxStream>,
    outs: Vec<TrackOut>,
    /// Client-offered m-lines we may send on, not yet bound to a track.
    free_slots: Vec<(Mid, MediaKind)>,
    quality: VideoQuality,
    quality_by_track: Vec<(String, VideoQuality)>,
    bwe_bps: Option<u64>,
    /// Forwarded media skips the engine (no bandwidth estimation to feed): see `egress`.
    direct: bool,
    keys: KeySlot,
    srtp: Option<SrtpSender>,
    /// Where the engine last sent to (the nominated remote address).
    remote: Option<SocketAddr>,
    /// That address is an ICE-TCP connection: media goes through the engine and the link.
    remote_tcp: bool,
}

impl Peer {
    fn quality_for(&self, track_id: &str) -> VideoQuality {
        self.quality_by_track
            .iter()
            .find(|(t, _)| t == track_id)
            .map_or(self.quality, |(_, q)| *q)
    }

    /// This peer's bandwidth estimate shared across its open video tracks.
    fn video_budget(&self) -> Option<u64> {
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
struct RxStream {
    ssrc: Ssrc,
    track: TrackKey,
    rid: Option<Rid>,
    params: Option<PayloadParams>,
}

/// A track published by a peer on this worker.
struct Published {
    publisher: PeerKey,
    mid: Mid,
    /// Workers with subscribers (this one included when it has some).
    fanout: Vec<usize>,
    throttle: KeyframeThrottle,
}

/// A track with subscribers on this worker.
#[derive(Default)]
struct LocalTrack {
    subscribers: Vec<PeerKey>,
    meter: LayerMeter,
}

/// Everything of a worker except its peers (so both can be borrowed at once).
struct Ctx {
    idx: usize,
    shared: Arc<Shared>,
    published: HashMap<TrackKey, Published>,
    subs: HashMap<TrackKey, LocalTrack>,
    local: Vec<Forwarded>,
    outbox: Vec<Vec<Forwarded>>,
    frames: u64,
    bytes: u64,
    direct: u64,
    retransmits: u64,
    /// Packets written to ICE-TCP connections this turn.
    tcp_out: u64,
    /// Every datagram this worker sends goes through here, in order.
    batch: SendBatch,
    /// ICE-TCP connections owned by this worker, by remote address.
    tcp_links: HashMap<SocketAddr, TcpLink>,
}

impl Ctx {
    fn send(&mut self, buf: Vec<u8>, to: SocketAddr) {
        self.batch.push(&self.shared.socket, buf, to);
    }

    /// Sends what the engine asks for, over UDP or the peer's TCP connection.
    fn transmit(&mut self, t: str0m::net::Transmit) {
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
}

struct Worker {
    peers: HashMap<PeerKey, Peer>,
    by_addr: HashMap<SocketAddr, PeerKey>,
    /// ICE-TCP connections and the peer each belongs to (once its first STUN is accepted).
    by_tcp: HashMap<SocketAddr, Option<PeerKey>>,
    ctx: Ctx,
    recycle: SyncSender<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    scratch: Vec<Forwarded>,
}

pub(crate) fn run(idx: usize, shared: Arc<Shared>, rx: WorkerRx, recycle: SyncSender<Vec<u8>>) {
    let n = shared.workers.len();
    let mut w = Worker {
        peers: HashMap::new(),
        by_addr: HashMap::new(),
        by_tcp: HashMap::new(),
        ctx: Ctx {
            idx,
            shared,
            published: HashMap::new(),
            subs: HashMap::new(),
            local: Vec::new(),
            outbox: (0..n).map(|_| Vec::new()).collect(),
            frames: 0,
            bytes: 0,
            direct: 0,
            retransmits: 0,
            batch: SendBatch::default(),
            tcp_links: HashMap::new(),
            tcp_out: 0,
        },
        recycle,
        queued: rx.queued,
        scratch: Vec::new(),
    };
    let rx = rx.rx;
    'outer: loop {
        let now = Instant::now();
        let deadline = w
            .peers
            .values()
            .map(|p| p.timeout)
            .min()
            .unwrap_or(now + MAX_SLEEP)
            .min(now + MAX_SLEEP);
        match rx.recv_timeout(deadline.saturating_duration_since(now)) {
            Ok(msg) => {
                if !w.handle(msg) {
                    break 'outer;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break 'outer,
        }
        for _ in 0..BATCH {
            match rx.try_recv() {
                Ok(msg) => {
                    if !w.handle(msg) {
                        break 'outer;
                    }
                }
                Err(_) => break,
            }
        }
        w.turn(Instant::now());
    }
    for (_, mut p) in w.peers.drain() {
        let _ = p.rtc.close();
    }
    tracing::debug!(worker = idx, "worker stopped");
}

impl Worker {
    /// Returns false to stop.
    fn handle(&mut self, msg: WorkerMsg) -> bool {
        match msg {
            WorkerMsg::Datagram {
                buf,
                len,
                source,
                at,
                tcp,
            } => {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                if tcp {
                    self.tcp_frame(&buf[..len.min(buf.len())], source, at);
                } else {
                    self.datagram(&buf[..len.min(buf.len())], source, at);
                }
                let _ = self.recycle.try_send(buf);
            }
            WorkerMsg::TcpOpen { source, link } => {
                self.by_tcp.insert(source, None);
                self.ctx.tcp_links.insert(source, link);
            }
            WorkerMsg::TcpClosed { source } => {
                self.by_tcp.remove(&source);
                self.ctx.tcp_links.remove(&source);
            }
            WorkerMsg::AddPeer(np) => self.add_peer(*np),
            WorkerMsg::RemovePeer { peer } => {
                if let Some(mut p) = self.peers.remove(&peer) {
                    self.by_addr.retain(|_, k| *k != peer);
                    // Say goodbye (DTLS close_notify, RTCP BYE), then drop.
                    let _ = catch_unwind(AssertUnwindSafe(|| {
                        let _ = p.rtc.close();
                        while let Ok(Output::Transmit(t)) = p.rtc.poll_output() {
                            self.ctx.transmit(t);
                        }
                    }));
                    self.ctx.drop_peer_state(&p);
                    self.drop_tcp(peer);
                }
            }
            WorkerMsg::Offer { peer, offer, reply } => {
                let r = match self.peers.get_mut(&peer) {
                    Some(p) => accept_offer(p, *offer),
                    None => Err(SfuError::UnknownPeer),
                };
                let _ = reply.send(r);
            }
            WorkerMsg::Answer {
                peer,
                answer,
                reply,
            } => {
                let r = match self.peers.get_mut(&peer) {
                    Some(p) => accept_answer(p, *answer),
                    None => Err(SfuError::UnknownPeer),
                };
                let _ = reply.send(r);
            }
            WorkerMsg::Subscribe { peer, track } => {
                let Some(p) = self.peers.get_mut(&peer) else {
                    return true;
                };
                let lt = self.ctx.subs.entry(track.key).or_default();
                if !lt.subscribers.contains(&peer) {
                    lt.subscribers.push(peer);
                }
                // Subscribed again while an earlier m-line of this track is being stopped
                // (teammates moving into a breakout one after the other): that m-line is on
                // its way out, so the track needs a new one. Only an m-line still opening or
                // open already carries it.
                let mut live = false;
                for o in p.outs.iter_mut().filter(|o| o.meta.key == track.key) {
                    match o.state {
                        OutState::Negotiating(_) => {
                            o.unwanted = false;
                            live = true;
                        }
                        OutState::ToOpen | OutState::Open(_) => live = true,
                        OutState::ToStop(_) | OutState::NegotiatingStop(_) => {}
                    }
                }
                if !live {
                    p.outs.push(TrackOut::new(track, OutState::ToOpen, false));
                }
                p.negotiate = true;
            }
            WorkerMsg::Unsubscribe { peer, track } => {
                if let Some(lt) = self.ctx.subs.get_mut(&track) {
                    lt.subscribers.retain(|k| *k != peer);
                    if lt.subscribers.is_empty() {
                        self.ctx.subs.remove(&track);
                    }
                }
                let Some(p) = self.peers.get_mut(&peer) else {
                    return true;
                };
                p.outs.retain_mut(|o| {
                    if o.meta.key != track {
                        return true;
                    }
                    match o.state {
                        OutState::ToOpen => return false,
                        OutState::Negotiating(_) => o.unwanted = true,
                        OutState::Open(m) => o.state = OutState::ToStop(m),
                        OutState::ToStop(_) | OutState::NegotiatingStop(_) => {}
                    }
                    true
                });
                p.negotiate = true;
            }
            WorkerMsg::Fanout { track, workers } => {
                if let Some(p) = self.ctx.published.get_mut(&track) {
                    p.fanout = workers;
                }
            }
            WorkerMsg::Media(batch) => {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                let now = Instant::now();
                for f in &batch {
                    deliver(&mut self.peers, &mut self.ctx, f, now);
                }
            }
            WorkerMsg::KeyframeRequest { track, rid } => {
                request_keyframe(&mut self.peers, &mut self.ctx, track, rid, Instant::now());
            }
            WorkerMsg::SetQuality {
                peer,
                track,
                quality,
            } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    match track {
                        None => {
                            p.quality = quality;
                            p.quality_by_track.clear();
                        }
                        Some(t) => {
                            p.quality_by_track.retain(|(id, _)| *id != t);
                            p.quality_by_track.push((t, quality));
                        }
                    }
                    for o in &mut p.outs {
                        o.last_eval = None;
                    }
                }
            }
            WorkerMsg::Shutdown => return false,
        }
        true
    }

    fn datagram(&mut self, data: &[u8], source: SocketAddr, at: Instant) {
        let Some(local) = Shared::destination(&self.ctx.shared.advertise, source) else {
            return;
        };
        let Ok(recv) = Receive::new(Protocol::Udp, source, local, data) else {
            Counters::add(&self.ctx.shared.counters.datagrams_dropped, 1);
            return;
        };
        let input = Input::Receive(at, recv);
        let key = match self.by_addr.get(&source) {
            Some(k) => Some(*k),
            None => {
                let k = self.find_peer(&input);
                if let Some(k) = k {
                    self.by_addr.insert(source, k);
                }
                k
            }
        };
        self.input(key, input);
    }

    /// One packet unframed from an ICE-TCP connection.
    fn tcp_frame(&mut self, data: &[u8], source: SocketAddr, at: Instant) {
        let Some(local) = Shared::destination(&self.ctx.shared.tcp_advertise, source) else {
            return;
        };
        let Ok(recv) = Receive::new(Protocol::Tcp, source, local, data) else {
            Counters::add(&self.ctx.shared.counters.datagrams_dropped, 1);
            return;
        };
        let input = Input::Receive(at, recv);
        let key = match self.by_tcp.get(&source) {
            Some(Some(k)) => Some(*k),
            Some(None) => {
                let k = self.find_peer(&input);
                if let Some(k) = k {
                    self.by_tcp.insert(source, Some(k));
                }
                k
            }
            // Closed already, or never opened here.
            None => None,
        };
        self.input(key, input);
    }

    fn find_peer(&self, input: &Input<'_>) -> Option<PeerKey> {
        self.peers
            .values()
            .find(|p| !p.dead && p.rtc.accepts(input))
            .map(|p| p.key)
    }

    /// Closes the ICE-TCP connections of a peer that is gone.
    fn drop_tcp(&mut self, peer: PeerKey) {
        let links = &mut self.ctx.tcp_links;
        self.by_tcp.retain(|addr, k| {
            let gone = *k == Some(peer);
            if gone {
                links.remove(addr);
            }
            !gone
        });
    }

    fn input(&mut self, key: Option<PeerKey>, input: Input<'_>) {
        let Some(p) = key.and_then(|k| self.peers.get_mut(&k)) else {
            Counters::add(&self.ctx.shared.counters.datagrams_dropped, 1);
            return;
        };
        if p.dead {
            return;
        }
        let r = catch_unwind(AssertUnwindSafe(|| p.rtc.handle_input(input)));
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(peer = %p.id, error = %e, "rtc input");
                p.dead = true;
            }
            Err(_) => {
                tracing::warn!(peer = %p.id, "rtc panicked on input; dropping peer");
                p.dead = true;
            }
        }
        // RTP mode keeps one received packet for the next poll: drain it now.
        if !p.dead && catch_unwind(AssertUnwindSafe(|| poll_peer(p, &mut self.ctx))).is_err() {
            tracing::warn!(peer = %p.id, "rtc panicked; dropping peer");
            p.dead = true;
        }
    }

    fn add_peer(&mut self, np: NewPeer) {
        let now = Instant::now();
        let shared = &self.ctx.shared;
        let direct = !(shared.bwe && np.opts.bandwidth_estimation);
        let mut cfg = RtcConfig::new()
            // Direct egress answers NACKs itself, from the RTCP the engine decrypted.
            .enable_raw_packets(direct)
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .set_crypto_provider(shared.crypto.clone())
            .set_local_ice_credentials(np.creds);
        if shared.bwe && np.opts.bandwidth_estimation {
            cfg = cfg.enable_bwe(Some(Bitrate::kbps(1_000)));
        } else if !np.opts.can_publish {
            // Nothing to estimate and nothing it sends needs our feedback: no
            // transport-wide sequence numbers, so no TWCC bookkeeping or feedback either way.
            let mut exts = ExtensionMap::empty();
            for (id, e) in cfg.extension_map().iter() {
                if *e != Extension::TransportSequenceNumber {
                    exts.set(id, e.clone());
                }
            }
            cfg = cfg.set_extension_map(exts);
        }
        let (mut rtc, keys) = egress::build_with_keys(|| cfg.build(now));
        for addr in &shared.advertise {
            match Candidate::host(*addr, "udp") {
                Ok(c) => {
                    rtc.add_local_candidate(c);
                }
                Err(e) => tracing::error!(error = %e, "bad host candidate"),
            }
        }
        for &addr in &shared.tcp_advertise {
            // RFC 6544 passive: the client connects to us (we are ICE-lite and never dial).
            let c = Candidate::builder()
                .tcp()
                .host(addr)
                .tcptype(TcpType::Passive)
                .build();
            match c {
                Ok(c) => {
                    rtc.add_local_candidate(c);
                }
                Err(e) => tracing::error!(error = %e, "bad ICE-TCP candidate"),
            }
        }
        self.peers.insert(
            np.key,
            Peer {
                key: np.key,
                id: np.id,
                rtc,
                events: np.events,
                opts: np.opts,
                added_at: now,
                timeout: now,
                dirty: true,
                dead: false,
                connected: false,
                has_remote: false,
                negotiate: false,
                pending: None,
                tracks_in: Vec::new(),
                sending_mids: Vec::new(),
                rx: Vec::new(),
                outs: Vec::new(),
                free_slots: Vec::new(),
                quality: VideoQuality::High,
                quality_by_track: Vec::new(),
                bwe_bps: None,
                direct,
                keys,
                srtp: None,
                remote: None,
                remote_tcp: false,
            },
        );
    }

    /// One loop turn after the inbox: timeouts, polling, negotiation, local
    /// forwarding, then batches to other workers and reaping.
    fn turn(&mut self, now: Instant) {
        for p in self.peers.values_mut() {
            if p.dead {
                continue;
            }
            if p.timeout <= now {
                let r = catch_unwind(AssertUnwindSafe(|| p.rtc.handle_input(Input::Timeout(now))));
                if !matches!(r, Ok(Ok(()))) {
                    p.dead = true;
                }
                p.dirty = true;
            }
            if !p.connected && now.saturating_duration_since(p.added_at) > CONNECT_TIMEOUT {
                tracing::info!(peer = %p.id, "peer did not connect in time");
                p.dead = true;
            }
        }
        // Poll, negotiate and deliver until nothing is left to do.
        for _ in 0..16 {
            let mut any = false;
            for p in self.peers.values_mut() {
                if p.dirty && !p.dead {
                    any = true;
                    p.dirty = false;
                    let r = catch_unwind(AssertUnwindSafe(|| poll_peer(p, &mut self.ctx)));
                    if r.is_err() {
                        tracing::warn!(peer = %p.id, "rtc panicked; dropping peer");
                        p.dead = true;
                    }
                }
            }
            for p in self.peers.values_mut() {
                if p.negotiate && !p.dead {
                    negotiate(p, &self.ctx.shared);
                }
            }
            std::mem::swap(&mut self.ctx.local, &mut self.scratch);
            let now = Instant::now();
            for f in self.scratch.drain(..) {
                deliver(&mut self.peers, &mut self.ctx, &f, now);
            }
            if !any && self.ctx.local.is_empty() && !self.peers.values().any(|p| p.dirty) {
                break;
            }
        }
        // One batch per worker per turn.
        for (i, out) in self.ctx.outbox.iter_mut().enumerate() {
            if out.is_empty() || i == self.ctx.idx {
                continue;
            }
            let batch = std::mem::take(out);
            if let Some(w) = self.ctx.shared.workers.get(i) {
                if !w.send_media(batch) {
                    Counters::add(&self.ctx.shared.counters.datagrams_dropped, 1);
                }
            }
        }
        self.ctx.batch.flush(&self.ctx.shared.socket);
        let c = &self.ctx.shared.counters;
        if self.ctx.frames > 0 {
            Counters::add(&c.frames_forwarded, std::mem::take(&mut self.ctx.frames));
            Counters::add(&c.bytes_forwarded, std::mem::take(&mut self.ctx.bytes));
            Counters::add(&c.packets_direct, std::mem::take(&mut self.ctx.direct));
        }
        if self.ctx.tcp_out > 0 {
            Counters::add(&c.tcp_out, std::mem::take(&mut self.ctx.tcp_out));
        }
        if self.ctx.retransmits > 0 {
            Counters::add(&c.retransmits, std::mem::take(&mut self.ctx.retransmits));
        }
        if self.ctx.batch.datagrams > 0 {
            Counters::add(
                &c.datagrams_out,
                std::mem::take(&mut self.ctx.batch.datagrams),
            );
            Counters::add(&c.send_calls, std::mem::take(&mut self.ctx.batch.syscalls));
        }
        self.reap();
    }

    fn reap(&mut self) {
        let dead: Vec<PeerKey> = self
            .peers
            .values()
            .filter(|p| p.dead || !p.rtc.is_alive())
            .map(|p| p.key)
            .collect();
        for key in dead {
            let Some(p) = self.peers.remove(&key) else {
                continue;
            };
            self.by_addr.retain(|_, k| *k != key);
            self.ctx.drop_peer_state(&p);
            self.drop_tcp(key);
            // Unpublish first, so `Disconnected` is the last event.
            self.ctx.shared.forget_peer(key);
            tracing::info!(peer = %p.id, "peer disconnected");
            let _ = p.events.send(PeerEvent::Disconnected);
        }
    }
}

impl Ctx {
    fn drop_peer_state(&mut self, p: &Peer) {
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

fn accept_offer(p: &mut Peer, offer: SdpOffer) -> Result<String, SfuError> {
    let r = catch_unwind(AssertUnwindSafe(|| p.rtc.sdp_api().accept_offer(offer)));
    p.dirty = true;
    let answer = match r {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => return Err(super::bad_sdp("the offer was not accepted", &e)),
        Err(_) => {
            p.dead = true;
            return Err(SfuError::BadSdp("offer rejected".into()));
        }
    };
    p.has_remote = true;
    // A client offer cancels ours: redo those changes afterwards.
    p.pending = None;
    for o in &mut p.outs {
        match o.state {
            OutState::Negotiating(_) if o.unwanted => o.state = OutState::ToOpen,
            OutState::Negotiating(_) => o.state = OutState::ToOpen,
            OutState::NegotiatingStop(m) => o.state = OutState::ToStop(m),
            _ => {}
        }
    }
    p.outs
        .retain(|o| !(o.unwanted && o.state == OutState::ToOpen));
    p.negotiate = true;
    Ok(answer.to_sdp_string())
}

fn accept_answer(p: &mut Peer, answer: SdpAnswer) -> Result<(), SfuError> {
    let Some(pending) = p.pending.take() else {
        return Err(SfuError::NoPendingOffer);
    };
    let r = catch_unwind(AssertUnwindSafe(|| {
        p.rtc.sdp_api().accept_answer(pending, answer)
    }));
    p.dirty = true;
    p.negotiate = true;
    let ok = matches!(r, Ok(Ok(())));
    for o in &mut p.outs {
        match (o.state, ok) {
            (OutState::Negotiating(m), true) if o.unwanted => o.state = OutState::ToStop(m),
            (OutState::Negotiating(m), true) => o.open(m),
            (OutState::Negotiating(_), false) => o.state = OutState::ToOpen,
            (OutState::NegotiatingStop(m), false) => o.state = OutState::ToStop(m),
            _ => {}
        }
    }
    if ok {
        // Stopped m-lines are done (str0m may recycle them).
        p.outs
            .retain(|o| !matches!(o.state, OutState::NegotiatingStop(_)));
    } else {
        p.outs
            .retain(|o| !(o.unwanted && o.state == OutState::ToOpen));
    }
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(super::bad_sdp("the answer was not accepted", &e)),
        Err(_) => {
            p.dead = true;
            Err(SfuError::BadSdp("answer rejected".into()))
        }
    }
}

/// Binds waiting tracks to free client-offered m-lines; then, if the peer
/// renegotiates and no offer is outstanding, offers new m-lines and stops ended ones.
fn negotiate(p: &mut Peer, shared: &Shared) {
    p.negotiate = false;
    // Ended tracks on slots just free the slot.
    let mut freed = Vec::new();
    p.outs.retain(|o| match o.state {
        OutState::ToStop(m) if o.slot => {
            freed.push((m, kind_of(o.meta.kind)));
            false
        }
        _ => true,
    });
    p.free_slots.extend(freed);
    for o in &mut p.outs {
        if o.state != OutState::ToOpen {
            continue;
        }
        let want = kind_of(o.meta.kind);
        if let Some(i) = p.free_slots.iter().position(|(_, k)| *k == want) {
            let (mid, _) = p.free_slots.remove(i);
            o.slot = true;
            o.open(mid);
            p.dirty = true;
        }
    }
    if !p.opts.renegotiate || !p.has_remote || p.pending.is_some() {
        return;
    }
    let mut api = p.rtc.sdp_api();
    for o in &mut p.outs {
        match o.state {
            OutState::ToOpen => {
                let mid = api.add_media(
                    kind_of(o.meta.kind),
                    Direction::SendOnly,
                    Some(o.meta.stream_id.clone()),
                    Some(o.meta.id.clone()),
                    None,
                );
                o.state = OutState::Negotiating(mid);
            }
            OutState::ToStop(mid) => {
                api.stop_media(mid);
                o.state = OutState::NegotiatingStop(mid);
            }
            _ => {}
        }
    }
    if !api.has_changes() {
        return;
    }
    if let Some((offer, pending)) = api.apply() {
        p.pending = Some(pending);
        p.dirty = true;
        Counters::add(&shared.counters.offers_sent, 1);
        let _ = p.events.send(PeerEvent::Offer(offer.to_sdp_string()));
    }
}

fn kind_of(k: TrackKind) -> MediaKind {
    match k {
        TrackKind::Audio => MediaKind::Audio,
        TrackKind::Video => MediaKind::Video,
    }
}

/// Source from the msid (a label containing "screen" means a screen share), else the hint
/// for video, else camera/microphone.
fn infer_source(kind: TrackKind, msid: &str, hint: Option<TrackSource>) -> TrackSource {
    let screen = msid.to_ascii_lowercase().contains("screen");
    match (kind, screen, hint) {
        (TrackKind::Video, true, _) => TrackSource::Screen,
        (TrackKind::Audio, true, _) => TrackSource::ScreenAudio,
        (TrackKind::Video, false, Some(h @ (TrackSource::Screen | TrackSource::Camera))) => h,
        (TrackKind::Audio, false, Some(TrackSource::Screen | TrackSource::ScreenAudio)) => {
            TrackSource::ScreenAudio
        }
        (TrackKind::Video, false, _) => TrackSource::Camera,
        (TrackKind::Audio, false, _) => TrackSource::Microphone,
    }
}

/// Drains one peer's output: sends datagrams, handles events.
fn poll_peer(p: &mut Peer, ctx: &mut Ctx) {
    loop {
        let out = match p.rtc.poll_output() {
            Ok(o) => o,
            Err(e) => {
                tracing::debug!(peer = %p.id, error = %e, "rtc poll");
                p.dead = true;
                return;
            }
        };
        match out {
            Output::Timeout(t) => {
                p.timeout = t;
                return;
            }
            Output::Transmit(t) => {
                p.remote = Some(t.destination);
                p.remote_tcp = t.proto == Protocol::Tcp;
                ctx.transmit(t);
            }
            Output::Event(e) => on_event(p, ctx, e),
        }
    }
}

fn on_event(p: &mut Peer, ctx: &mut Ctx, e: Event) {
    match e {
        Event::Connected => {
            p.connected = true;
            if ctx.shared.bwe && p.opts.bandwidth_estimation {
                p.rtc
                    .bwe()
                    .set_bitrate(Bitrate::kbps(300), Bitrate::mbps(5));
            }
            let _ = p.events.send(PeerEvent::Connected);
            p.negotiate = true;
        }
        Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
            p.dead = true;
        }
        Event::Closed => p.dead = true,
        Event::MediaAdded(m) => match m.direction {
            Direction::RecvOnly | Direction::SendRecv => {
                p.sending_mids.push((m.mid, m.kind, m.simulcast.clone()));
                publish(p, ctx, m.mid, m.kind, m.simulcast)
            }
            Direction::SendOnly => {
                let ours = p.outs.iter().any(|o| match o.state {
                    OutState::Negotiating(x) | OutState::Open(x) => x == m.mid,
                    _ => false,
                });
                if !ours && !p.free_slots.iter().any(|(x, _)| *x == m.mid) {
                    p.free_slots.push((m.mid, m.kind));
                    p.negotiate = true;
                }
            }
            Direction::Inactive => {}
        },
        Event::MediaChanged(m) => {
            if matches!(m.direction, Direction::RecvOnly | Direction::SendRecv) {
                // Sending again on an m-line that had gone inactive: publish it anew.
                let again = p
                    .sending_mids
                    .iter()
                    .find(|(mid, ..)| *mid == m.mid)
                    .cloned();
                if let Some((mid, kind, simulcast)) = again {
                    publish(p, ctx, mid, kind, simulcast);
                }
            } else if matches!(m.direction, Direction::SendOnly | Direction::Inactive) {
                if let Some(i) = p.tracks_in.iter().position(|(mid, _)| *mid == m.mid) {
                    let (_, key) = p.tracks_in.remove(i);
                    p.rx.retain(|r| r.track != key);
                    ctx.published.remove(&key);
                    ctx.shared.change(|d| d.remove_track(key));
                }
            }
        }
        Event::RtpPacket(pkt) => on_rtp(p, ctx, pkt),
        Event::KeyframeRequest(req) => {
            Counters::add(&ctx.shared.counters.keyframe_requests_in, 1);
            let Some(o) = p.outs.iter().find(|o| o.state == OutState::Open(req.mid)) else {
                return;
            };
            let rid = o.current.or(o.target);
            ask_keyframe(ctx, &o.meta, rid);
        }
        Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
            p.bwe_bps = Some(estimate.as_u64());
        }
        Event::EgressBitrateEstimate(BweKind::Remb { estimate, .. }) => {
            p.bwe_bps = Some(estimate.as_u64());
        }
        Event::RawPacket(raw) => {
            if let RawPacket::RtcpRx(Rtcp::Nack(nack)) = *raw {
                retransmit(p, ctx, &nack);
            }
        }
        _ => {}
    }
}

/// A publisher's RTP packet: queued for every worker with subscribers of its track.
fn on_rtp(p: &mut Peer, ctx: &mut Ctx, pkt: RtpPacket) {
    let ssrc = pkt.header.ssrc;
    let i = match p.rx.iter().position(|r| r.ssrc == ssrc) {
        Some(i) => i,
        None => {
            let (mid, rid) = {
                let mut api = p.rtc.direct_api();
                let Some(s) = api.stream_rx(&ssrc) else {
                    return;
                };
                (s.mid(), s.rid())
            };
            // Not yet published (the MediaAdded event comes first): nothing to forward.
            let Some(&(_, track)) = p.tracks_in.iter().find(|(m, _)| *m == mid) else {
                return;
            };
            p.rx.push(RxStream {
                ssrc,
                track,
                rid,
                params: None,
            });
            p.rx.len() - 1
        }
    };
    let pt = pkt.header.payload_type;
    let rx = &mut p.rx[i];
    let params = match rx.params {
        Some(pp) if pp.pt() == pt => pp,
        _ => {
            let Some(pp) = p.rtc.codec_config().find(|c| c.pt() == pt).copied() else {
                return;
            };
            rx.params = Some(pp);
            pp
        }
    };
    let Some(pubd) = ctx.published.get(&rx.track) else {
        return;
    };
    if pubd.fanout.is_empty() || pkt.payload.is_empty() {
        return;
    }
    let codec = params.spec().codec;
    let ext = &pkt.header.ext_vals;
    let f = Forwarded {
        track: rx.track,
        rid: rx.rid,
        params,
        seq: *pkt.seq_no,
        time: pkt.time,
        network_time: pkt.timestamp,
        marker: pkt.header.marker,
        keyframe: codec.is_video() && is_keyframe_start(codec, &pkt.payload),
        audio_level: ext.audio_level,
        voice_activity: ext.voice_activity,
        video_orientation: ext.video_orientation,
        data: pkt.payload,
    };
    for &w in &pubd.fanout {
        if w == ctx.idx {
            ctx.local.push(f.clone());
        } else if let Some(b) = ctx.outbox.get_mut(w) {
            b.push(f.clone());
        }
    }
}

fn publish(
    p: &mut Peer,
    ctx: &mut Ctx,
    mid: Mid,
    kind: MediaKind,
    simulcast: Option<str0m::media::Simulcast>,
) {
    if p.tracks_in.iter().any(|(m, _)| *m == mid) {
        return;
    }
    let kind = match kind {
        MediaKind::Audio => TrackKind::Audio,
        MediaKind::Video => TrackKind::Video,
    };
    let msid = p
        .rtc
        .media(mid)
        .map(|m| format!("{} {}", m.stream_id(), m.track_id()))
        .unwrap_or_default();
    let source = infer_source(kind, &msid, p.opts.source_hint);
    let layers: Vec<String> = simulcast
        .map(|s| if s.recv.is_empty() { s.send } else { s.recv })
        .unwrap_or_default()
        .iter()
        .take(3)
        .map(|l| l.rid.to_string())
        .collect();
    let key = NEXT_TRACK.fetch_add(1, Ordering::Relaxed);
    // Opaque ids: identities are up to 200 bytes and free text, so ids built from them
    // would have to be cut (and then collide) or would leak them into SDP.
    let stream_id = format!("p{}", p.key);
    let meta = Arc::new(TrackMeta {
        key,
        id: format!("t{key}"),
        stream_id,
        kind,
        publisher: p.key,
        publisher_worker: ctx.idx,
    });
    tracing::info!(peer = %p.id, track = %meta.id, ?kind, ?source, ?layers, "track published");
    p.tracks_in.push((mid, key));
    ctx.published.insert(
        key,
        Published {
            publisher: p.key,
            mid,
            fanout: Vec::new(),
            throttle: KeyframeThrottle::default(),
        },
    );
    ctx.shared.change(|d| d.add_track(meta, source, layers));
}

/// Sends a keyframe request towards the publisher of `meta` (throttled there).
fn ask_keyframe(ctx: &mut Ctx, meta: &TrackMeta, rid: Option<Rid>) {
    if meta.publisher_worker == ctx.idx {
        // Same worker: handled next turn, like any other request, to keep one path.
        ctx.shared.send(
            ctx.idx,
            WorkerMsg::KeyframeRequest {
                track: meta.key,
                rid,
            },
        );
    } else {
        ctx.shared.send(
            meta.publisher_worker,
            WorkerMsg::KeyframeRequest {
                track: meta.key,
                rid,
            },
        );
    }
}

fn request_keyframe(
    peers: &mut HashMap<PeerKey, Peer>,
    ctx: &mut Ctx,
    track: TrackKey,
    rid: Option<Rid>,
    now: Instant,
) {
    let Some(pubd) = ctx.published.get_mut(&track) else {
        return;
    };
    let Some(p) = peers.get_mut(&pubd.publisher) else {
        return;
    };
    if !pubd.throttle.allow(rid, now) {
        return;
    }
    // RTP mode: the request goes on the receive stream of the layer (PLI; every
    // WebRTC client negotiates it).
    let mut api = p.rtc.direct_api();
    match api.stream_rx_by_mid(pubd.mid, rid) {
        Some(rx) => {
            rx.request_keyframe(KeyframeRequestKind::Pli);
            Counters::add(&ctx.shared.counters.keyframe_requests_out, 1);
            p.dirty = true;
        }
        None => tracing::debug!(peer = %p.id, ?rid, "keyframe request: no receive stream"),
    }
}

/// Our SSRC for the stream on `mid` and the extension ids the subscriber negotiated.
fn direct_stream(rtc: &mut Rtc, mid: Mid) -> Option<(u32, ExtIds)> {
    let ssrc = *rtc.direct_api().stream_tx_by_mid(mid, None)?.ssrc();
    let exts = rtc.media(mid)?.remote_extmap();
    let ids = ExtIds {
        mid: exts.id_of(Extension::RtpMid),
        audio_level: exts.id_of(Extension::AudioLevel),
        video_orientation: exts.id_of(Extension::VideoOrientation),
    };
    Some((ssrc, ids))
}

/// The worker's ways out for a direct-path packet (borrowed field by field from [`Ctx`]).
struct Wires<'a> {
    batch: &'a mut SendBatch,
    socket: &'a std::net::UdpSocket,
    links: &'a HashMap<SocketAddr, TcpLink>,
    tcp_out: &'a mut u64,
}

impl<'a> Wires<'a> {
    fn of(ctx: &'a mut Ctx) -> Self {
        Wires {
            batch: &mut ctx.batch,
            socket: &ctx.shared.socket,
            links: &ctx.tcp_links,
            tcp_out: &mut ctx.tcp_out,
        }
    }
}

/// Writes, protects and queues one packet on the direct egress path: into the UDP batch,
/// or (`tcp`) onto the peer's ICE-TCP connection.
fn send_direct(
    wires: Wires<'_>,
    srtp: &mut SrtpSender,
    out: &RtpOut<'_>,
    ids: ExtIds,
    payload: &[u8],
    to: SocketAddr,
    tcp: bool,
) -> bool {
    let mut buf = wires.batch.buffer();
    egress::write_header(&mut buf, out, ids);
    if !srtp.protect(&mut buf, payload, out.ssrc, out.seq) {
        wires.batch.recycle(buf);
        return false;
    }
    if tcp {
        let sent = wires.links.get(&to).is_some_and(|link| link.send(buf));
        *wires.tcp_out += u64::from(sent);
        return sent;
    }
    wires.batch.push(wires.socket, buf, to);
    true
}

/// Answers a subscriber's NACK from the direct path's history (the engine answers for
/// the packets it sent itself).
fn retransmit(p: &mut Peer, ctx: &mut Ctx, nack: &Nack) {
    let (Some(srtp), Some(remote)) = (&mut p.srtp, p.remote) else {
        return;
    };
    let tcp = p.remote_tcp;
    let ssrc = *nack.ssrc;
    for o in &p.outs {
        let (OutState::Open(mid), Some((our_ssrc, ids))) = (o.state, o.direct) else {
            continue;
        };
        if our_ssrc != ssrc {
            continue;
        }
        for entry in nack.reports.iter() {
            for seq in egress::nacked(entry.pid, entry.blp) {
                let Some(sent) = o.history.get(seq) else {
                    continue;
                };
                let out = RtpOut {
                    pt: sent.pt,
                    marker: sent.marker,
                    seq: sent.seq,
                    time: sent.time,
                    ssrc,
                    mid: &mid,
                    audio_level: None,
                    video_orientation: sent.video_orientation,
                };
                if send_direct(Wires::of(ctx), srtp, &out, ids, &sent.data, remote, tcp) {
                    ctx.retransmits += 1;
                }
            }
        }
        return;
    }
}

/// Writes one packet to every subscriber of its track on this worker.
fn deliver(peers: &mut HashMap<PeerKey, Peer>, ctx: &mut Ctx, f: &Forwarded, now: Instant) {
    let Some(lt) = ctx.subs.get_mut(&f.track) else {
        return;
    };
    if let Some(rid) = f.rid {
        lt.meter.record(rid, f.data.len(), now);
    }
    let mut layers: Option<Vec<Layer>> = None;
    let mut asks: Vec<(Arc<TrackMeta>, Option<Rid>)> = Vec::new();
    for key in &lt.subscribers {
        let Some(p) = peers.get_mut(key) else {
            continue;
        };
        if !p.connected || p.dead {
            continue;
        }
        let budget = p.video_budget();
        // A track subscribed again while its old m-line's stop is negotiated has two outs.
        let Some(oi) = p
            .outs
            .iter()
            .position(|o| o.meta.key == f.track && matches!(o.state, OutState::Open(_)))
        else {
            continue;
        };
        let quality = p.quality_for(&p.outs[oi].meta.id);
        let o = &mut p.outs[oi];
        let OutState::Open(mid) = o.state else {
            continue;
        };
        let mut rebase = false;
        if o.meta.kind == TrackKind::Video {
            if let Some(rid) = f.rid {
                if o.target.is_none()
                    || o.last_eval
                        .is_none_or(|t| now.saturating_duration_since(t) >= LAYER_EVAL)
                {
                    let l = layers.get_or_insert_with(|| lt.meter.layers(now).collect());
                    o.target = choose_layer(l, quality, budget, o.current).or(o.target);
                    o.last_eval = Some(now);
                }
                if o.current != o.target {
                    if Some(rid) == o.target && f.keyframe {
                        tracing::debug!(peer = %p.id, track = %o.meta.id, layer = %rid, "layer switch");
                        o.current = o.target;
                        rebase = true;
                        o.seq.rebase(f.seq);
                    } else if o
                        .last_ask
                        .is_none_or(|t| now.saturating_duration_since(t) >= KEYFRAME_RETRY)
                    {
                        o.last_ask = Some(now);
                        asks.push((o.meta.clone(), o.target));
                    }
                }
                if Some(rid) != o.current {
                    continue;
                }
            } else if o.need_keyframe {
                if f.keyframe {
                    o.need_keyframe = false;
                    o.seq.rebase(f.seq);
                } else {
                    if o.last_ask
                        .is_none_or(|t| now.saturating_duration_since(t) >= KEYFRAME_RETRY)
                    {
                        o.last_ask = Some(now);
                        asks.push((o.meta.clone(), None));
                    }
                    continue;
                }
            }
        }
        if rebase {
            let ticks = u64::from(f.time.denom()) / 30;
            o.time.rebase(f.time.numer(), ticks);
        }
        let Some(seq) = o.seq.map(f.seq) else {
            continue;
        };
        let t = o.time.map(f.time.numer());
        let in_pt = f.params.pt();
        let pt = match o.pt {
            Some((i, out)) if i == in_pt => out,
            _ => {
                // What `Writer::match_params` does (the writer is off limits in RTP mode).
                let out = p.rtc.codec_config().match_params(f.params).map(|c| c.pt());
                o.pt = Some((in_pt, out));
                out
            }
        };
        let Some(pt) = pt else {
            continue;
        };
        let video = o.meta.kind == TrackKind::Video;
        if p.direct
            && o.engine_at
                .is_some_and(|t| now.saturating_duration_since(t) < egress::ENGINE_EVERY)
        {
            if p.srtp.is_none() {
                p.srtp = p
                    .keys
                    .get()
                    .and_then(|k| SrtpSender::new(&ctx.shared.crypto, k));
            }
            if o.direct.is_none() {
                o.direct = direct_stream(&mut p.rtc, mid);
            }
            if let (Some(srtp), Some(remote), Some((ssrc, ids))) = (&mut p.srtp, p.remote, o.direct)
            {
                let out = RtpOut {
                    pt,
                    marker: f.marker,
                    seq,
                    time: t as u32,
                    ssrc,
                    mid: &mid,
                    audio_level: f.audio_level.zip(f.voice_activity),
                    video_orientation: f.video_orientation,
                };
                let wires = Wires {
                    batch: &mut ctx.batch,
                    socket: &ctx.shared.socket,
                    links: &ctx.tcp_links,
                    tcp_out: &mut ctx.tcp_out,
                };
                if send_direct(wires, srtp, &out, ids, &f.data, remote, p.remote_tcp) {
                    ctx.direct += 1;
                    ctx.frames += 1;
                    ctx.bytes += f.data.len() as u64;
                    if video {
                        o.history.push(Sent {
                            seq,
                            pt,
                            marker: f.marker,
                            time: t as u32,
                            video_orientation: f.video_orientation,
                            data: f.data.clone(),
                        });
                    }
                    continue;
                }
            }
        }
        // Through the engine: the first packets (before keys and address are known),
        // one per stream per `ENGINE_EVERY` on the direct path, everything otherwise.
        o.engine_at = Some(now);
        let mut api = p.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, None) else {
            continue;
        };
        let ext = ExtensionValues {
            audio_level: f.audio_level,
            voice_activity: f.voice_activity,
            video_orientation: f.video_orientation,
            ..Default::default()
        };
        tx.write_rtp(
            RtpWrite::new(pt, seq.into(), t as u32, f.network_time, f.data.clone())
                .marker(f.marker)
                .ext_vals(ext)
                .nackable(video),
        );
        ctx.frames += 1;
        ctx.bytes += f.data.len() as u64;
        p.dirty = true;
    }
    for (meta, rid) in asks {
        ask_keyframe(ctx, &meta, rid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_inference() {
        use TrackKind::*;
        use TrackSource::*;
        assert_eq!(infer_source(Video, "abc def", None), Camera);
        assert_eq!(infer_source(Audio, "abc def", None), Microphone);
        assert_eq!(infer_source(Video, "s screen-1", None), Screen);
        assert_eq!(infer_source(Audio, "ScreenShare a", None), ScreenAudio);
        assert_eq!(infer_source(Video, "x y", Some(Screen)), Screen);
        assert_eq!(infer_source(Audio, "x y", Some(Screen)), ScreenAudio);
        assert_eq!(infer_source(Audio, "x y", Some(Camera)), Microphone);
    }
}
