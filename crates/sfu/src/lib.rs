//! The media engine: a selective forwarding unit (SFU) on `str0m`, one UDP port (and one ICE-TCP port), ICE-lite.
//!
//! It knows peers, groups and tracks, not rooms. A *peer* is one WebRTC
//! connection (a browser session, a WHIP publisher, a WHEP viewer). It lives in
//! one *group* (an opaque string such as `"room-x"` or `"room-x/breakout-2"`),
//! receives every track published in its group except its own, and offers its
//! own tracks to the group while it may publish.
//!
//! # Layout
//!
//! - `lib.rs` (this file): the public handle [`Sfu`], its config, options, events and errors.
//! - `directory.rs`: the control plane. Peers, groups, tracks, who subscribes to what;
//!   every change returns the actions that bring the workers in line. Plain data, unit-tested.
//! - `worker/`: a worker thread owns a shard of peers (their `str0m::Rtc`), drives them
//!   with datagrams and timeouts, and forwards media to local subscribers and, in one batch
//!   per loop turn, to other workers. `mod.rs`: the inbox and the loop (one clock reading
//!   per turn, passed down); `state.rs`: peers and tracks as the worker keeps them;
//!   `ingress.rs`: packets in, to the right peer's engine; `events.rs`: the engine's output
//!   and events; `negotiate.rs`: offers, answers, which m-line carries which track;
//!   `publish.rs`: a publisher's tracks, RTP and keyframe requests; `gate.rs`: the pure
//!   decision whether a subscriber gets a packet (layer, keyframe wait); `forward.rs`: the
//!   subscriber's copy rewritten and handed to the engine or the direct egress path.
//! - `udp.rs`: the receive thread. Reads the one socket and hands each datagram to the worker
//!   of its peer: by remote address, or for a new address by the ICE ufrag in the STUN
//!   `USERNAME`. Workers send on the shared socket directly, in `sendmmsg` batches.
//! - `tcp.rs`: ICE over TCP (RFC 6544 passive, RFC 4571 framing) for networks that drop UDP:
//!   accepts connections, routes each by the ufrag of its first STUN request to a worker, which
//!   treats its packets like datagrams and writes back through a per-connection link.
//! - `link.rs`: that link, the write end of one ICE-TCP connection (a module of its own so
//!   `tcp.rs` and the worker depend on it, not on each other).
//! - `egress.rs`: the direct egress path. Viewers without bandwidth estimation get packets
//!   SRTP-protected by the worker (keys captured from the DTLS handshake), not polled out of
//!   the engine one by one; NACKs answered from a short history.
//! - `layer.rs`: pure forwarding rules: simulcast layer choice, keyframe-request throttle,
//!   per-layer bitrate meter, RTP time rewriting across layer switches.
//!
//! # Use
//!
//! ```ignore
//! let sfu = Sfu::start(SfuConfig { udp_port: 0, tcp_port: Some(0), bind_ip, advertise_ips, ..SfuConfig::default() })?;
//! let mut events = sfu.add_peer("alice".into(), "room-x".into(), PeerOptions::session("Alice"));
//! let answer = sfu.accept_offer(&"alice".into(), offer_sdp).await?;   // -> rtc_answer
//! while let Some(ev) = events.recv().await {
//!     match ev {
//!         PeerEvent::Offer(sdp) => { /* send rtc_offer; later */ sfu.accept_answer(&id, answer).await?; }
//!         PeerEvent::TrackPublished(info) => { /* tell the room */ }
//!         _ => {}
//!     }
//! }
//! sfu.remove_peer(&"alice".into());
//! ```
//!
//! # Behaviour
//!
//! - The client always makes the first offer. Tracks it sends become published tracks
//!   ([`PeerEvent::TrackPublished`] on the *publisher's* channel; the room announces them).
//!   Its `recvonly` m-lines are slots the SFU fills with tracks of the group, audio and video
//!   in publication order (this is how WHEP works). Tracks that find no slot are added
//!   by a server offer ([`PeerEvent::Offer`]) when [`PeerOptions::renegotiate`] is set;
//!   the client answers through [`Sfu::accept_answer`]. Ended tracks are stopped the same way.
//! - A subscriber's SDP carries `a=msid:<publisher> <track id>`, so the client can map an
//!   incoming track to [`TrackInfo::id`] (`<publisher>-<mid>`, with characters outside
//!   `[A-Za-z0-9_.-]` replaced by `_`).
//! - Media is forwarded per RTP packet (str0m's RTP mode): the payload is shared by every
//!   subscriber, which gets its own SSRC, sequence numbers and RTP time (rewritten so they
//!   stay gapless across keyframe waits and layer switches). Keyframe starts are read from
//!   the payload (VP8, H264, VP9, AV1).
//! - Video waits for a keyframe: a new subscriber asks for one. Subscriber PLI/FIR go to the
//!   publisher as PLI, coalesced to at most one per track layer per second. NACK/RTX is
//!   str0m's, per subscriber stream.
//! - Simulcast (up to three rids): each subscriber gets the layer its
//!   [`VideoQuality`] caps and, where bandwidth estimation runs, its estimate fits; switches
//!   happen on a keyframe of the new layer, which is requested on switch.
//! - Bandwidth estimation (TWCC, str0m's pacer) runs only for peers whose
//!   [`PeerOptions::bandwidth_estimation`] asks for it (meeting peers) when
//!   [`SfuConfig::bandwidth_estimation`] allows; WHIP/WHEP peers never run it.
//! - Codecs: Opus; VP8, H264, VP9, AV1 (str0m's defaults); the subscriber's payload types
//!   are matched to the publisher's codec. A subscriber that lacks the codec gets nothing
//!   for that track.
//! - A peer whose ICE or DTLS fails, or that does not connect within 30 s of its first
//!   offer, is removed; its channel gets [`PeerEvent::Disconnected`].
//! - Nothing a client sends panics the engine: SDP errors are [`SfuError::BadSdp`], and a
//!   panic inside `str0m` for one peer drops that peer only.
#![forbid(unsafe_code)]

pub mod addresses;
mod directory;
mod egress;
pub use egress::SendBatch;
mod layer;
mod link;
mod tcp;
pub use tcp::{is_ice_tcp, TcpHandoff, TcpLimits};
mod udp;
mod worker;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex, MutexGuard};
use std::thread;

use convene_signaling::{BreakoutId, Track, TrackKind, TrackSource, VideoQuality};
use str0m::change::{SdpAnswer, SdpOffer};
use tokio::sync::{mpsc, oneshot};

use directory::{Action, Directory, PeerKey, PeerRec};
use worker::WorkerMsg;

/// One WebRTC connection's id, chosen by the caller (unique within the SFU).
pub type PeerId = String;
/// Who shares media: the peers of one group receive each other's tracks. Opaque to the SFU:
/// the caller names a scope and, optionally, a numbered part of it (for Convene, a room and
/// one of its breakouts). Typed, so nothing parses names to learn where a track is.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId {
    pub scope: Arc<str>,
    pub part: Option<u32>,
}

impl GroupId {
    pub fn new(scope: &str, part: Option<u32>) -> GroupId {
        GroupId {
            scope: scope.into(),
            part,
        }
    }
}

/// Send and receive buffer asked for the media socket, in bytes.
const SOCKET_BUFFER: usize = 4 << 20;

/// Largest SDP accepted, in bytes: about 2 KB per m-line, so room for a big meeting (the
/// server's configurable `limits.max_sdp_bytes` is checked before this).
pub const MAX_SDP_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// UDP port for all media; 0 picks an ephemeral port.
    pub udp_port: u16,
    /// TCP port for ICE-TCP (RFC 6544 passive candidates) beside the UDP one; 0 picks an
    /// ephemeral port, `None`: no listener of its own.
    pub tcp_port: Option<u16>,
    /// ICE-TCP also on this port, which another listener (the HTTPS port) accepts on and
    /// hands over through [`Sfu::tcp_handoff`] (port 443 is open where little else is).
    pub tcp_handoff_port: Option<u16>,
    /// Deadlines and caps on ICE-TCP connections (both ports).
    pub tcp_limits: TcpLimits,
    pub bind_ip: IpAddr,
    /// The host candidates put in answers (what clients send to), one per address and
    /// protocol; never empty (see `addresses::plan`).
    pub advertise_ips: Vec<IpAddr>,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// str0m's bandwidth estimation and pacer for peers whose
    /// [`PeerOptions::bandwidth_estimation`] asks for it (meeting peers); off, every
    /// subscriber's simulcast layer follows its [`VideoQuality`] only.
    pub bandwidth_estimation: bool,
}

impl Default for SfuConfig {
    fn default() -> Self {
        SfuConfig {
            udp_port: 0,
            tcp_port: None,
            tcp_handoff_port: None,
            tcp_limits: TcpLimits::default(),
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            advertise_ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            workers: 0,
            bandwidth_estimation: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SfuError {
    #[error("bad SDP: {0}")]
    BadSdp(String),
    #[error("unknown peer")]
    UnknownPeer,
    #[error("no server offer is waiting for an answer")]
    NoPendingOffer,
    #[error("bad media config: {0}")]
    Config(String),
    #[error("udp socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("the media engine has stopped")]
    Stopped,
}

/// How a peer takes part.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// Its tracks are offered to the group (can change with [`Sfu::set_can_publish`]).
    pub can_publish: bool,
    /// It receives the group's tracks.
    pub subscribe: bool,
    /// Receive only this publisher's tracks (WHEP `?participant=ID`).
    pub only_publisher: Option<PeerId>,
    pub display_name: String,
    /// Source of its video tracks when the SDP does not tell (e.g. a WHIP screen share).
    pub source_hint: Option<TrackSource>,
    /// The peer can take server offers ([`PeerEvent::Offer`]); false for WHIP/WHEP.
    pub renegotiate: bool,
    /// Estimate its bandwidth (TWCC) to choose simulcast layers, when
    /// [`SfuConfig::bandwidth_estimation`] allows. False for WHIP/WHEP.
    pub bandwidth_estimation: bool,
    /// Never publishes, whatever it offers: `sendrecv` m-lines are answered `sendonly` and
    /// `sendonly` ones `inactive` (RFC 3264 section 6.1 allows both). WHEP players such as
    /// the npm `whip-whep` offer `sendrecv`.
    pub receive_only: bool,
}

impl PeerOptions {
    /// A signaling-session peer: publishes, subscribes, renegotiates.
    pub fn session(display_name: impl Into<String>) -> Self {
        PeerOptions {
            can_publish: true,
            subscribe: true,
            only_publisher: None,
            display_name: display_name.into(),
            source_hint: None,
            renegotiate: true,
            bandwidth_estimation: true,
            receive_only: false,
        }
    }

    /// A WHIP publisher: publishes only, no renegotiation.
    pub fn whip(display_name: impl Into<String>) -> Self {
        PeerOptions {
            subscribe: false,
            renegotiate: false,
            bandwidth_estimation: false,
            ..Self::session(display_name)
        }
    }

    /// A WHEP viewer: receives into the m-lines it offered, no renegotiation.
    pub fn whep(display_name: impl Into<String>, only_publisher: Option<PeerId>) -> Self {
        PeerOptions {
            can_publish: false,
            only_publisher,
            renegotiate: false,
            bandwidth_estimation: false,
            receive_only: true,
            ..Self::session(display_name)
        }
    }
}

/// A published track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInfo {
    /// Opaque and unique on this server (`t<n>`); also the msid track id subscribers see.
    pub id: String,
    pub publisher: PeerId,
    pub kind: TrackKind,
    pub source: TrackSource,
    pub group: GroupId,
    /// Simulcast rids, empty when single-layer.
    pub layers: Vec<String>,
}

impl TrackInfo {
    /// The wire record; the caller maps the group to a breakout.
    pub fn to_track(&self, breakout: Option<BreakoutId>) -> Track {
        Track {
            id: self.id.clone(),
            publisher: self.publisher.clone(),
            kind: self.kind,
            source: self.source,
            breakout,
            layers: self.layers.clone(),
        }
    }
}

/// What happens to a peer. Track events arrive on the publisher's channel.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum PeerEvent {
    /// ICE and DTLS are up.
    Connected,
    /// One of this peer's tracks is now offered to its group.
    TrackPublished(TrackInfo),
    /// One of this peer's tracks is no longer offered (ended, revoked or moved).
    TrackUnpublished { track_id: String },
    /// A server offer (renegotiation): send it as `rtc_offer`, pass the reply to
    /// [`Sfu::accept_answer`].
    Offer(String),
    /// The connection is gone; the peer has been removed.
    Disconnected,
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SfuStats {
    pub workers: usize,
    pub peers: usize,
    pub tracks: usize,
    pub datagrams_in: u64,
    /// Datagrams dropped: unknown sender, unparseable, or a worker queue full.
    pub datagrams_dropped: u64,
    /// RTP packets written to subscribers (str0m's retransmissions not counted).
    pub frames_forwarded: u64,
    pub bytes_forwarded: u64,
    /// PLI/FIR received from subscribers.
    pub keyframe_requests_in: u64,
    /// Keyframe requests sent to publishers (after throttling).
    pub keyframe_requests_out: u64,
    pub offers_sent: u64,
    /// Of `frames_forwarded`, those protected and sent by the worker itself (the direct
    /// egress path) rather than through the engine.
    pub packets_direct: u64,
    /// Packets re-sent on the direct path in answer to a NACK.
    pub retransmits: u64,
    /// Datagrams sent, and the `sendmmsg`/`sendto` calls it took.
    pub datagrams_out: u64,
    pub send_calls: u64,
    /// Packets written to ICE-TCP connections (each one RFC 4571 frame).
    pub tcp_packets_out: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub datagrams_in: AtomicU64,
    pub datagrams_dropped: AtomicU64,
    pub frames_forwarded: AtomicU64,
    pub bytes_forwarded: AtomicU64,
    pub keyframe_requests_in: AtomicU64,
    pub keyframe_requests_out: AtomicU64,
    pub offers_sent: AtomicU64,
    pub packets_direct: AtomicU64,
    pub retransmits: AtomicU64,
    pub datagrams_out: AtomicU64,
    pub send_calls: AtomicU64,
    pub tcp_out: AtomicU64,
}

impl Counters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// What every thread shares. Threads hold this, never [`Inner`], so dropping the
/// last [`Sfu`] handle stops them.
pub(crate) struct Shared {
    pub socket: UdpSocket,
    pub local_addr: SocketAddr,
    /// The UDP candidates' addresses (advertised IPs, bound UDP port).
    pub advertise: Vec<SocketAddr>,
    pub workers: Vec<worker::WorkerTx>,
    pub directory: Mutex<Directory>,
    pub counters: Counters,
    pub udp_ctl: std_mpsc::Sender<udp::UdpCtl>,
    /// The ICE-TCP candidates' addresses (advertised IPs, bound TCP port); empty when ICE-TCP is off.
    pub tcp_advertise: Vec<SocketAddr>,
    pub tcp_local: Option<SocketAddr>,
    pub tcp_routes: tcp::TcpRoutes,
    pub stop: AtomicBool,
    pub crypto: Arc<str0m::config::CryptoProvider>,
    /// [`SfuConfig::bandwidth_estimation`].
    pub bwe: bool,
    /// Peer events: publishers learn of their tracks here.
    pub events: Mutex<std::collections::HashMap<PeerKey, mpsc::UnboundedSender<PeerEvent>>>,
}

impl Shared {
    /// The local candidate address a packet from `source` arrived on, as ICE needs it: the
    /// first advertised address of the source's family. The socket does not say which
    /// address it was sent to, and for ICE-lite any of ours answers the same.
    pub fn destination(list: &[SocketAddr], source: SocketAddr) -> Option<SocketAddr> {
        let v4 = source.ip().to_canonical().is_ipv4();
        list.iter()
            .find(|a| a.is_ipv4() == v4)
            .or(list.first())
            .copied()
    }

    pub fn directory(&self) -> MutexGuard<'_, Directory> {
        // A panic while holding the lock leaves plain data; keep going.
        self.directory.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn events(
        &self,
    ) -> MutexGuard<'_, std::collections::HashMap<PeerKey, mpsc::UnboundedSender<PeerEvent>>> {
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn emit(&self, peer: PeerKey, ev: PeerEvent) {
        if let Some(tx) = self.events().get(&peer) {
            let _ = tx.send(ev);
        }
    }

    /// Carries out what the directory decided.
    /// Changes the directory and carries out what follows while still holding it, so the
    /// workers get every change's actions in the order the directory made them: two people
    /// moving at once must not have one's unsubscribe overtake the other's subscribe (the
    /// worker would drop a teammate's media lines and add none).
    pub fn change(&self, f: impl FnOnce(&mut Directory) -> Vec<Action>) {
        let mut directory = self.directory();
        let actions = f(&mut directory);
        self.execute(actions);
    }

    pub fn execute(&self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Subscribe {
                    worker,
                    peer,
                    track,
                } => self.send(worker, WorkerMsg::Subscribe { peer, track }),
                Action::Unsubscribe {
                    worker,
                    peer,
                    track,
                } => self.send(worker, WorkerMsg::Unsubscribe { peer, track }),
                Action::Fanout {
                    worker,
                    track,
                    workers,
                } => self.send(worker, WorkerMsg::Fanout { track, workers }),
                Action::Published { publisher, info } => {
                    self.emit(publisher, PeerEvent::TrackPublished(info))
                }
                Action::Unpublished {
                    publisher,
                    track_id,
                } => self.emit(publisher, PeerEvent::TrackUnpublished { track_id }),
            }
        }
    }

    pub fn send(&self, worker: usize, msg: WorkerMsg) {
        if let Some(w) = self.workers.get(worker) {
            w.send(msg);
        }
    }

    /// Removes a peer everywhere except its worker (which calls this, or is told).
    pub fn forget_peer(&self, key: PeerKey) -> Option<PeerRec> {
        let mut directory = self.directory();
        let (rec, actions) = directory.remove_peer(key)?;
        self.execute(actions);
        drop(directory);
        self.tcp_routes.forget(&rec.ufrag);
        let _ = self.udp_ctl.send(udp::UdpCtl::Forget {
            ufrag: rec.ufrag.clone(),
        });
        self.events().remove(&key);
        Some(rec)
    }
}

struct Inner {
    shared: Arc<Shared>,
    next_key: AtomicU64,
    next_worker: AtomicUsize,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for w in &self.shared.workers {
            w.send(WorkerMsg::Shutdown);
        }
    }
}

/// Handle to the media engine. Cheap to clone; the engine stops when the last
/// handle is dropped.
#[derive(Clone)]
pub struct Sfu {
    inner: Arc<Inner>,
    handoff: Option<TcpHandoff>,
}

impl std::fmt::Debug for Sfu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sfu")
            .field("local_addr", &self.inner.shared.local_addr)
            .finish()
    }
}

impl Sfu {
    /// Binds the UDP socket and spawns the receive thread and the workers.
    pub fn start(cfg: SfuConfig) -> Result<Sfu, SfuError> {
        if cfg.advertise_ips.is_empty() {
            return Err(SfuError::Config("no address to advertise".into()));
        }
        for ip in &cfg.advertise_ips {
            if ip.is_unspecified() {
                return Err(SfuError::Config(format!(
                    "advertise address must be one clients can reach, not {ip}"
                )));
            }
        }
        let socket = UdpSocket::bind(SocketAddr::new(cfg.bind_ip, cfg.udp_port))?;
        // One socket carries every peer: room for bursts (a keyframe to every subscriber)
        // while the receive thread waits for a core. Best effort; the kernel caps both.
        let sock = socket2::SockRef::from(&socket);
        let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
        let local_addr = socket.local_addr()?;
        let advertise: Vec<SocketAddr> = cfg
            .advertise_ips
            .iter()
            .map(|ip| SocketAddr::new(*ip, local_addr.port()))
            .collect();
        let tcp_listener = match cfg.tcp_port {
            Some(port) => Some(std::net::TcpListener::bind(SocketAddr::new(
                cfg.bind_ip,
                port,
            ))?),
            None => None,
        };
        let tcp_local = tcp_listener
            .as_ref()
            .map(std::net::TcpListener::local_addr)
            .transpose()?;
        let tcp_ports: Vec<u16> = tcp_local
            .map(|a| a.port())
            .into_iter()
            .chain(cfg.tcp_handoff_port)
            .collect();
        let tcp_advertise: Vec<SocketAddr> = cfg
            .advertise_ips
            .iter()
            .flat_map(|ip| tcp_ports.iter().map(|port| SocketAddr::new(*ip, *port)))
            .collect();
        let (handoff, handoff_rx) = TcpHandoff::channel();
        let n = if cfg.workers == 0 {
            thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            cfg.workers
        };
        let mut txs = Vec::with_capacity(n);
        let mut rxs = Vec::with_capacity(n);
        for _ in 0..n {
            let (tx, rx) = worker::channel();
            txs.push(tx);
            rxs.push(rx);
        }
        let (udp_tx, udp_rx) = std_mpsc::channel();
        let (recycle_tx, recycle_rx) = std_mpsc::sync_channel(4096);
        let shared = Arc::new(Shared {
            socket,
            local_addr,
            advertise,
            workers: txs,
            directory: Mutex::new(Directory::default()),
            counters: Counters::default(),
            udp_ctl: udp_tx,
            tcp_advertise,
            tcp_local,
            tcp_routes: tcp::TcpRoutes::default(),
            stop: AtomicBool::new(false),
            crypto: Arc::new(egress::capturing(str0m::crypto::from_feature_flags())),
            bwe: cfg.bandwidth_estimation,
            events: Mutex::new(Default::default()),
        });
        for (i, rx) in rxs.into_iter().enumerate() {
            let shared = shared.clone();
            let recycle = recycle_tx.clone();
            thread::Builder::new()
                .name(format!("sfu-worker-{i}"))
                .spawn(move || worker::run(i, shared, rx, recycle))?;
        }
        {
            let shared = shared.clone();
            thread::Builder::new()
                .name("sfu-udp".into())
                .spawn(move || udp::run(shared, udp_rx, recycle_rx))?;
        }
        if tcp_listener.is_some() || cfg.tcp_handoff_port.is_some() {
            let shared = shared.clone();
            let limits = cfg.tcp_limits;
            thread::Builder::new()
                .name("sfu-tcp".into())
                .spawn(move || tcp::run(shared, tcp_listener, handoff_rx, limits))?;
        }
        tracing::info!(%local_addr, advertise = ?shared.advertise, tcp = ?tcp_local, workers = n, "media engine started");
        Ok(Sfu {
            handoff: cfg.tcp_handoff_port.map(|_| handoff),
            inner: Arc::new(Inner {
                shared,
                next_key: AtomicU64::new(1),
                next_worker: AtomicUsize::new(0),
            }),
        })
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.shared.local_addr
    }

    /// The bound ICE-TCP address, when ICE-TCP has a listener of its own.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.inner.shared.tcp_local
    }

    /// Where another listener hands ICE-TCP connections over, when
    /// [`SfuConfig::tcp_handoff_port`] is set.
    pub fn tcp_handoff(&self) -> Option<TcpHandoff> {
        self.handoff.clone()
    }

    /// Registers a peer in `group`. Its connection starts with [`Sfu::accept_offer`].
    /// Adding an id that exists replaces the old peer.
    pub fn add_peer(
        &self,
        peer: PeerId,
        group: GroupId,
        opts: PeerOptions,
    ) -> mpsc::UnboundedReceiver<PeerEvent> {
        let shared = &self.inner.shared;
        let old = shared
            .directory()
            .peers
            .get(&peer)
            .map(|p| (p.key, p.worker));
        if let Some((key, worker)) = old {
            shared.forget_peer(key);
            shared.send(worker, WorkerMsg::RemovePeer { peer: key });
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let key: PeerKey = self.inner.next_key.fetch_add(1, Ordering::Relaxed);
        let worker = {
            // Least loaded worker; ties go round-robin.
            let dir = shared.directory();
            let start = self.inner.next_worker.fetch_add(1, Ordering::Relaxed);
            (0..shared.workers.len())
                .map(|i| (start + i) % shared.workers.len())
                .min_by_key(|w| dir.peer_count_on(*w))
                .unwrap_or(0)
        };
        let creds = str0m::IceCreds::new();
        shared.events().insert(key, tx.clone());
        shared.tcp_routes.register(&creds.ufrag, worker);
        let _ = shared.udp_ctl.send(udp::UdpCtl::Register {
            ufrag: creds.ufrag.clone(),
            worker,
        });
        shared.send(
            worker,
            WorkerMsg::AddPeer(Box::new(worker::NewPeer {
                key,
                id: peer.clone(),
                creds: creds.clone(),
                opts: opts.clone(),
                events: tx,
            })),
        );
        shared.change(|d| {
            d.add_peer(PeerRec {
                key,
                id: peer,
                worker,
                group,
                ufrag: creds.ufrag,
                can_publish: opts.can_publish,
                muted: Vec::new(),
                subscribe: opts.subscribe,
                only_publisher: opts.only_publisher,
                tracks: Vec::new(),
            })
        });
        rx
    }

    fn locate(&self, peer: &str) -> Result<(PeerKey, usize), SfuError> {
        self.inner
            .shared
            .directory()
            .peers
            .get(peer)
            .map(|p| (p.key, p.worker))
            .ok_or(SfuError::UnknownPeer)
    }

    /// Applies the client's offer and returns the SDP answer.
    pub async fn accept_offer(&self, peer: &PeerId, sdp: String) -> Result<String, SfuError> {
        let offer = parse_sdp(&sdp, SdpOffer::from_sdp_string)?;
        let (key, worker) = self.locate(peer)?;
        let (reply, rx) = oneshot::channel();
        self.inner.shared.send(
            worker,
            WorkerMsg::Offer {
                peer: key,
                offer: Box::new(offer),
                reply,
            },
        );
        rx.await.map_err(|_| SfuError::Stopped)?
    }

    /// Applies the client's answer to the last [`PeerEvent::Offer`].
    pub async fn accept_answer(&self, peer: &PeerId, sdp: String) -> Result<(), SfuError> {
        let answer = parse_sdp(&sdp, SdpAnswer::from_sdp_string)?;
        let (key, worker) = self.locate(peer)?;
        let (reply, rx) = oneshot::channel();
        self.inner.shared.send(
            worker,
            WorkerMsg::Answer {
                peer: key,
                answer: Box::new(answer),
                reply,
            },
        );
        rx.await.map_err(|_| SfuError::Stopped)?
    }

    /// Allows or stops forwarding this peer's tracks to its group.
    pub fn set_can_publish(&self, peer: &PeerId, allowed: bool) {
        self.inner
            .shared
            .change(|d| d.set_can_publish(peer, allowed));
    }

    /// Moves a peer to another group (breakouts): it leaves the old group's tracks,
    /// receives the new group's, and its own tracks follow it. Renegotiates as needed.
    pub fn move_peer(&self, peer: &PeerId, group: GroupId) {
        self.inner.shared.change(|d| d.move_peer(peer, group));
    }

    /// The video quality a peer wants, for one track or (None) as its default.
    pub fn set_video_quality(&self, peer: &PeerId, track: Option<&str>, q: VideoQuality) {
        if let Ok((key, worker)) = self.locate(peer) {
            self.inner.shared.send(
                worker,
                WorkerMsg::SetQuality {
                    peer: key,
                    track: track.map(str::to_owned),
                    quality: q,
                },
            );
        }
    }

    /// Stops (or resumes) forwarding one of this peer's tracks; the others are untouched.
    pub fn set_track_withheld(&self, peer: &PeerId, track_id: &str, withheld: bool) {
        self.inner
            .shared
            .change(|d| d.set_withheld(peer, Some(track_id), withheld));
    }

    /// A moderator's mute of one kind of this peer's media: its tracks of that kind stop
    /// being forwarded, and stay stopped whatever the peer offers, until allowed again.
    pub fn set_muted(&self, peer: &PeerId, kind: TrackKind, muted: bool) {
        self.inner.shared.change(|d| d.set_muted(peer, kind, muted));
    }

    /// Resumes forwarding every track of this peer that was withheld.
    pub fn release_withheld(&self, peer: &PeerId) {
        self.inner
            .shared
            .change(|d| d.set_withheld(peer, None, false));
    }

    /// Corrects a track's source (e.g. the client says a video track is a screen share).
    /// The track is announced again with the new source.
    pub fn set_track_source(&self, peer: &PeerId, track_id: &str, source: TrackSource) {
        self.inner
            .shared
            .change(|d| d.set_source(peer, track_id, source));
    }

    /// Closes a peer; its tracks end for subscribers.
    pub fn remove_peer(&self, peer: &PeerId) {
        let Ok((key, worker)) = self.locate(peer) else {
            return;
        };
        self.inner.shared.forget_peer(key);
        self.inner
            .shared
            .send(worker, WorkerMsg::RemovePeer { peer: key });
    }

    /// Tracks offered in a group.
    pub fn tracks(&self, group: &GroupId) -> Vec<TrackInfo> {
        self.inner.shared.directory().tracks(group)
    }

    pub fn stats(&self) -> SfuStats {
        let s = &self.inner.shared;
        let (peers, tracks) = {
            let d = s.directory();
            (d.peers.len(), d.track_count())
        };
        let c = &s.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SfuStats {
            workers: s.workers.len(),
            peers,
            tracks,
            datagrams_in: get(&c.datagrams_in),
            datagrams_dropped: get(&c.datagrams_dropped),
            frames_forwarded: get(&c.frames_forwarded),
            bytes_forwarded: get(&c.bytes_forwarded),
            keyframe_requests_in: get(&c.keyframe_requests_in),
            keyframe_requests_out: get(&c.keyframe_requests_out),
            offers_sent: get(&c.offers_sent),
            packets_direct: get(&c.packets_direct),
            retransmits: get(&c.retransmits),
            datagrams_out: get(&c.datagrams_out),
            send_calls: get(&c.send_calls),
            tcp_packets_out: get(&c.tcp_out),
        }
    }
}

fn parse_sdp<T, E: std::fmt::Display>(
    sdp: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, SfuError> {
    if sdp.len() > MAX_SDP_BYTES {
        return Err(SfuError::BadSdp(format!(
            "larger than {MAX_SDP_BYTES} bytes"
        )));
    }
    if sdp.trim().is_empty() {
        return Err(SfuError::BadSdp("empty".into()));
    }
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parse(sdp))) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(bad_sdp("the SDP could not be parsed", &e)),
        Err(_) => Err(SfuError::BadSdp("unparseable".into())),
    }
}

/// The engine's error text can carry internals (a parser's heap addresses): the client gets
/// `reason`, the debug log gets the detail.
pub(crate) fn bad_sdp(reason: &str, detail: &dyn std::fmt::Display) -> SfuError {
    tracing::debug!(%detail, reason, "SDP refused");
    SfuError::BadSdp(reason.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_sdp_is_bad_sdp() {
        for s in [
            "",
            "hello",
            "v=0\r\n",
            "v=0\r\no=- 0 0 IN IP4 0\r\nm=audio x\r\n",
        ] {
            let r = parse_sdp(s, SdpOffer::from_sdp_string);
            assert!(matches!(r, Err(SfuError::BadSdp(_))), "{s:?}");
        }
        let big = "v=0\r\n".repeat(MAX_SDP_BYTES);
        assert!(matches!(
            parse_sdp(&big, SdpOffer::from_sdp_string),
            Err(SfuError::BadSdp(_))
        ));
    }

    #[test]
    fn packets_meet_the_candidate_of_their_family() {
        let list: Vec<SocketAddr> = vec![
            "203.0.113.7:3478".parse().unwrap(),
            "[2001:db8::7]:3478".parse().unwrap(),
        ];
        let from = |s: &str| Shared::destination(&list, s.parse().unwrap());
        assert_eq!(from("198.51.100.1:5000"), Some(list[0]));
        // An IPv4 client on a dual-stack socket arrives IPv4-mapped.
        assert_eq!(from("[::ffff:198.51.100.1]:5000"), Some(list[0]));
        assert_eq!(from("[2001:db8::1]:5000"), Some(list[1]));
        let v4_only = &list[..1];
        assert_eq!(
            Shared::destination(v4_only, "[2001:db8::1]:5000".parse().unwrap()),
            Some(list[0])
        );
        assert_eq!(Shared::destination(&[], list[0]), None);
    }
}
