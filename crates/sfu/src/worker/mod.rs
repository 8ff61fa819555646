//! A worker thread's inbox and loop; the worker owns a shard of peers and their whole packet path.
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

mod events;
mod forward;
mod gate;
mod ingress;
mod negotiate;
mod publish;
mod state;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use convene_signaling::VideoQuality;
use str0m::bwe::Bitrate;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::PayloadParams;
use str0m::media::{MediaTime, Rid};
use str0m::net::TcpType;
use str0m::rtp::VideoOrientation;
use str0m::rtp::{Extension, ExtensionMap};
use str0m::{Candidate, IceCreds, Input, Output, RtcConfig};
use tokio::sync::{mpsc as tokio_mpsc, oneshot};

use super::directory::{PeerKey, TrackKey, TrackMeta};
use super::egress::{self, SendBatch};
use super::link::TcpLink;
use super::{Counters, PeerEvent, PeerOptions, SfuError, Shared};
use events::poll_peer;
use forward::deliver;
use negotiate::{accept_answer, accept_offer, negotiate};
use publish::request_keyframe;
use state::{Ctx, OutState, Peer, TrackOut};

/// Datagrams and media batches queued to one worker before new ones are dropped.
const MAX_QUEUED: usize = 8192;
/// Messages handled per loop turn before peers are polled.
const BATCH: usize = 256;
/// Longest sleep: housekeeping runs at least this often.
const MAX_SLEEP: Duration = Duration::from_millis(100);
/// A peer that is not connected this long after being added is dropped.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

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
    let mut inbox: Vec<WorkerMsg> = Vec::with_capacity(BATCH + 1);
    loop {
        // A reading for the wait only: a turn can take milliseconds, and str0m's timeouts
        // (its pacer's) are finer than that.
        let idle_since = Instant::now();
        let deadline = w
            .peers
            .values()
            .map(|p| p.timeout)
            .min()
            .unwrap_or(idle_since + MAX_SLEEP)
            .min(idle_since + MAX_SLEEP);
        match rx.recv_timeout(deadline.saturating_duration_since(idle_since)) {
            Ok(msg) => inbox.push(msg),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        inbox.extend(std::iter::from_fn(|| rx.try_recv().ok()).take(BATCH));
        // The turn's one clock reading, everything below gets it. Taken after the inbox is
        // drained, so no datagram in it was stamped later: str0m's time never goes back.
        let now = Instant::now();
        if !inbox.drain(..).all(|msg| w.handle(msg, now)) {
            break;
        }
        w.turn(now);
    }
    for (_, mut p) in w.peers.drain() {
        let _ = p.rtc.close();
    }
    tracing::debug!(worker = idx, "worker stopped");
}

impl Worker {
    /// Returns false to stop.
    fn handle(&mut self, msg: WorkerMsg, now: Instant) -> bool {
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
            WorkerMsg::AddPeer(np) => self.add_peer(*np, now),
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
                for f in &batch {
                    deliver(&mut self.peers, &mut self.ctx, f, now);
                }
            }
            WorkerMsg::KeyframeRequest { track, rid } => {
                request_keyframe(&mut self.peers, &mut self.ctx, track, rid, now);
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
                        o.gate.last_eval = None;
                    }
                }
            }
            WorkerMsg::Shutdown => return false,
        }
        true
    }

    fn add_peer(&mut self, np: NewPeer, now: Instant) {
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
                added_mids: Vec::new(),
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
