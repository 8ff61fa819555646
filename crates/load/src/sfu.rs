//! `convene-load sfu`: str0m client peers subscribing to one stream, reporting packets, loss and time to first packet.
//!
//! Each subscriber is a normal (controlling, not ICE-lite) str0m `Rtc` in RTP mode with its
//! own UDP socket on 127.0.0.1. It offers one `recvonly` audio and one `recvonly` video
//! m-line, POSTs the offer to `/whep/{room}` with a viewer token, applies the 201 answer and
//! counts the RTP packets it receives. Nothing is decoded. All peers are tokio tasks of the
//! caller's runtime.
//!
//! With `--publish synthetic` the tool first publishes through `/whip/{room}` (host token):
//! VP8 frames at 30 fps sized to `--bitrate-kbps`, a keyframe every 2 s and on request
//! (PLI/FIR), plus 50 Opus-sized packets per second. The frames are filler bytes behind a
//! valid VP8 frame tag (bit 0 of the first byte is 0 on keyframes); str0m's packetizer adds
//! the VP8 payload descriptors.
//!
//! Figures: per-second packets (total and per subscriber), loss from RTP sequence numbers
//! (per SSRC, over a 1024-packet window, so a retransmission fills its gap), and the time
//! from the WHEP request to the first RTP packet. Rates and loss cover the measurement
//! window, which starts once every subscriber has connected (or given up) and lasts
//! `--duration` seconds. With `--server-pid` the server's CPU time over the window (utime +
//! stime from `/proc/<pid>/stat`) is divided by the packets received. Counters named
//! `convene_sfu_*` on `GET /metrics`, when the server exposes them, are reported as deltas.
//!
//! With `--transport tcp` the subscribers use ICE-TCP instead: no UDP socket, an active TCP
//! candidate connected to the server's passive one from the answer, RFC 4571 framing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use convene_signaling::Role;
use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch, Semaphore};

use super::probe::proc_cpu_us;
use super::LoadError;
use convene::auth::TokenKeys;

#[derive(clap::Args, Debug, Clone)]
pub struct SfuArgs {
    /// The server's HTTP base URL (http://127.0.0.1:PORT).
    #[arg(long)]
    pub url: String,
    #[arg(long, default_value = "load")]
    pub room: String,
    /// WHEP subscribers to run.
    #[arg(long, default_value_t = 10)]
    pub subscribers: usize,
    /// Publish a stream first: `synthetic` (VP8 + Opus made of filler bytes).
    #[arg(long)]
    pub publish: Option<Publish>,
    /// Seconds of measurement once subscribers are connected.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Token for every request (must allow publishing when --publish is given).
    #[arg(long)]
    pub token: Option<String>,
    /// JWT secret to mint tokens (host for WHIP, participant for WHEP); default: $CONVENE_JWT_SECRET.
    #[arg(long)]
    pub secret: Option<String>,
    /// Synthetic stream bitrate (video + audio), kbit/s.
    #[arg(long, default_value_t = 1800)]
    pub bitrate_kbps: u64,
    /// WHEP requests in flight at once (a slot is held until the peer connects).
    #[arg(long, default_value_t = 16)]
    pub connect_concurrency: usize,
    /// Longest wait for all subscribers to connect, seconds.
    #[arg(long, default_value_t = 60)]
    pub connect_timeout: u64,
    /// Server process id: report its CPU time per received packet over the window.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Subscribers discard every Nth RTP datagram they receive, as a lossy network
    /// would (0: none). NACKed video comes back; audio is not retransmitted.
    #[arg(long, default_value_t = 0)]
    pub drop_every: u64,
    /// How subscribers reach the server: `udp`, or `tcp` (ICE-TCP, RFC 6544).
    #[arg(long, value_enum, default_value_t = Transport::Udp)]
    pub transport: Transport,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    #[default]
    Udp,
    Tcp,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    Synthetic,
}

/// Most subscribers one run may start.
const MAX_SUBSCRIBERS: usize = 2000;
/// Longest measurement window.
const MAX_DURATION_S: u64 = 600;
/// Sequence numbers remembered per SSRC for duplicate detection.
const SEQ_WINDOW: u64 = 1024;
const KEYFRAME_EVERY: u32 = 60;
const FPS: u32 = 30;
const AUDIO_PER_S: u32 = 50;
const AUDIO_BYTES: usize = 120;

/// `SubStats::state`: 0 while connecting.
const CONNECTED: u8 = 1;
const FAILED: u8 = 2;

/// One subscriber's counters, written by its task, read by the reporter.
#[derive(Default)]
struct SubStats {
    packets: AtomicU64,
    bytes: AtomicU64,
    /// Sequence numbers spanned (per SSRC, first to highest).
    expected: AtomicU64,
    /// Distinct sequence numbers received.
    distinct: AtomicU64,
    /// Microseconds from the WHEP request to the first RTP packet, plus one (0: none yet).
    first_packet_us: AtomicU64,
    state: AtomicU8,
}

#[derive(Clone, Copy, Default)]
struct Snap {
    packets: u64,
    bytes: u64,
    expected: u64,
    distinct: u64,
}

impl SubStats {
    fn snap(&self) -> Snap {
        Snap {
            packets: self.packets.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            expected: self.expected.load(Ordering::Relaxed),
            distinct: self.distinct.load(Ordering::Relaxed),
        }
    }
}

/// Sequence-number bookkeeping for one SSRC: what was spanned and what arrived.
#[derive(Debug)]
struct SeqWindow {
    ssrc: u32,
    first: u64,
    max: u64,
    seen: [u64; (SEQ_WINDOW / 64) as usize],
}

impl SeqWindow {
    fn new(ssrc: u32, seq: u64) -> Self {
        let mut w = SeqWindow {
            ssrc,
            first: seq,
            max: seq,
            seen: [0; (SEQ_WINDOW / 64) as usize],
        };
        w.set(seq);
        w
    }

    fn bit(seq: u64) -> (usize, u64) {
        let i = seq % SEQ_WINDOW;
        ((i / 64) as usize, 1 << (i % 64))
    }

    fn set(&mut self, seq: u64) -> bool {
        let (i, b) = Self::bit(seq);
        let new = self.seen[i] & b == 0;
        self.seen[i] |= b;
        new
    }

    /// Returns (newly spanned, newly received).
    fn on(&mut self, seq: u64) -> (u64, u64) {
        if seq > self.max {
            let d = seq - self.max;
            if d >= SEQ_WINDOW {
                self.seen = [0; (SEQ_WINDOW / 64) as usize];
            } else {
                for s in self.max + 1..seq {
                    let (i, b) = Self::bit(s);
                    self.seen[i] &= !b;
                }
                let (i, b) = Self::bit(seq);
                self.seen[i] &= !b;
            }
            self.max = seq;
            self.set(seq);
            (d, 1)
        } else if seq < self.first || self.max - seq >= SEQ_WINDOW {
            (0, 0)
        } else {
            (0, u64::from(self.set(seq)))
        }
    }
}

struct Tokens {
    publisher: String,
    viewer: Box<dyn Fn(usize) -> String + Send + Sync>,
}

fn tokens(args: &SfuArgs) -> Result<Tokens, LoadError> {
    if let Some(t) = &args.token {
        let t2 = t.clone();
        return Ok(Tokens {
            publisher: t.clone(),
            viewer: Box::new(move |_| t2.clone()),
        });
    }
    let secret = args
        .secret
        .clone()
        .or_else(|| std::env::var("CONVENE_JWT_SECRET").ok())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            LoadError::Setup("give --token or --secret (or set CONVENE_JWT_SECRET)".into())
        })?;
    let keys = TokenKeys::new(secret.as_bytes());
    let ttl = Duration::from_secs(args.duration.min(MAX_DURATION_S) + 3600);
    let room = args.room.clone();
    let publisher = keys.mint_for(
        &room,
        Role::Host,
        "load-publisher",
        "Load publisher",
        BTreeMap::new(),
        ttl,
    );
    // Minting is cheap (HS256) but done once per subscriber, up front.
    let viewers: Vec<String> = (0..args.subscribers)
        .map(|i| {
            let id = format!("load-viewer-{i}");
            keys.mint_for(&room, Role::Participant, &id, &id, BTreeMap::new(), ttl)
        })
        .collect();
    Ok(Tokens {
        publisher,
        viewer: Box::new(move |i| viewers[i].clone()),
    })
}

/// `http://host:port[/prefix]` -> (host:port, prefix without trailing slash).
pub(crate) fn parse_url(url: &str) -> Result<(String, String), LoadError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| LoadError::Setup(format!("--url must start with http://, got {url:?}")))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if host.is_empty() {
        return Err(LoadError::Setup(format!("no host in {url:?}")));
    }
    Ok((host.to_string(), path.to_string()))
}

pub(crate) struct HttpResponse {
    pub(crate) status: u16,
    headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 client (one request per connection), enough for WHIP/WHEP and /metrics.
pub(crate) async fn http(
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<HttpResponse, String> {
    let fut = async {
        let mut s = TcpStream::connect(host)
            .await
            .map_err(|e| format!("connect {host}: {e}"))?;
        let _ = s.set_nodelay(true);
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.map_err(|e| e.to_string())?;
        parse_response(&raw)
    };
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .map_err(|_| format!("{method} {path}: no response in 20 s"))?
}

fn parse_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("truncated HTTP response")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "non-UTF-8 HTTP head")?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("bad HTTP status line")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body).ok_or("bad chunked body")?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// What one peer is for.
enum Job {
    Subscriber {
        stats: Arc<SubStats>,
        posted: Instant,
    },
    Publisher(Box<Synthetic>),
}

/// The synthetic VP8 + Opus source.
struct Synthetic {
    video: Mid,
    audio: Mid,
    key: Arc<[u8]>,
    delta: Arc<[u8]>,
    opus: Arc<[u8]>,
    started: Option<Instant>,
    next_video: u64,
    next_audio: u64,
    want_keyframe: bool,
    frames: Arc<AtomicU64>,
    /// RTP packets sent (retransmissions included).
    packets: Arc<AtomicU64>,
}

impl Synthetic {
    fn new(bitrate_kbps: u64, frames: Arc<AtomicU64>, packets: Arc<AtomicU64>) -> Self {
        let audio_bps = u64::from(AUDIO_PER_S) * AUDIO_BYTES as u64 * 8;
        let video_bps = (bitrate_kbps * 1000).saturating_sub(audio_bps).max(100_000);
        // A keyframe every KEYFRAME_EVERY frames, four times the size of a delta frame.
        let per_frame = video_bps / 8 / u64::from(FPS);
        let delta =
            (per_frame * u64::from(KEYFRAME_EVERY) / u64::from(KEYFRAME_EVERY + 3)) as usize;
        Synthetic {
            video: Mid::from("1"),
            audio: Mid::from("0"),
            key: vp8_frame(true, delta * 4).into(),
            delta: vp8_frame(false, delta).into(),
            opus: vec![0xfc; AUDIO_BYTES].into(),
            started: None,
            next_video: 0,
            next_audio: 0,
            want_keyframe: true,
            frames,
            packets,
        }
    }

    fn due(&self) -> Option<Instant> {
        let s = self.started?;
        let v = s + Duration::from_micros(self.next_video * 1_000_000 / u64::from(FPS));
        let a = s + Duration::from_micros(self.next_audio * 1_000_000 / u64::from(AUDIO_PER_S));
        Some(v.min(a))
    }

    /// Writes every frame that is due by `now`.
    fn write_due(&mut self, rtc: &mut Rtc, now: Instant) {
        let Some(start) = self.started else {
            return;
        };
        let elapsed = now.saturating_duration_since(start).as_micros() as u64;
        while self.next_video * 1_000_000 / u64::from(FPS) <= elapsed {
            let n = self.next_video;
            self.next_video += 1;
            let key = self.want_keyframe || n % u64::from(KEYFRAME_EVERY) == 0;
            self.want_keyframe = false;
            let data = if key {
                self.key.clone()
            } else {
                self.delta.clone()
            };
            let time = MediaTime::new(
                n * 90_000 / u64::from(FPS),
                str0m::media::Frequency::NINETY_KHZ,
            );
            if write(rtc, self.video, Codec::Vp8, now, time, data) {
                // The frame index (not a count): its rate is the frame rate, and its phase
                // tells where the periodic keyframes are.
                self.frames.store(n + 1, Ordering::Relaxed);
            }
        }
        while self.next_audio * 1_000_000 / u64::from(AUDIO_PER_S) <= elapsed {
            let n = self.next_audio;
            self.next_audio += 1;
            let time = MediaTime::new(
                n * 48_000 / u64::from(AUDIO_PER_S),
                str0m::media::Frequency::FORTY_EIGHT_KHZ,
            );
            write(rtc, self.audio, Codec::Opus, now, time, self.opus.clone());
        }
    }
}

fn write(
    rtc: &mut Rtc,
    mid: Mid,
    codec: Codec,
    now: Instant,
    time: MediaTime,
    data: Arc<[u8]>,
) -> bool {
    let Some(w) = rtc.writer(mid) else {
        return false;
    };
    let Some(pt) = w
        .payload_params()
        .find(|p| p.spec().codec == codec)
        .map(|p| p.pt())
    else {
        return false;
    };
    w.write(pt, now, time, data).is_ok()
}

/// A VP8 frame of `len` bytes: a valid frame tag (and keyframe start code and size), then filler.
fn vp8_frame(key: bool, len: usize) -> Vec<u8> {
    let len = len.max(16);
    let mut f = vec![0u8; len];
    // Frame tag: bit 0 frame type (0 = key), bits 1-3 version 0, bit 4 show_frame,
    // bits 5-23 size of the first partition (here: a fixed 64 bytes).
    let tag: u32 = u32::from(!key) | (1 << 4) | (64 << 5);
    f[0] = tag as u8;
    f[1] = (tag >> 8) as u8;
    f[2] = (tag >> 16) as u8;
    if key {
        f[3..6].copy_from_slice(&[0x9d, 0x01, 0x2a]);
        f[6..8].copy_from_slice(&640u16.to_le_bytes());
        f[8..10].copy_from_slice(&360u16.to_le_bytes());
    }
    for (i, b) in f.iter_mut().enumerate().skip(10) {
        *b = (i as u8).wrapping_mul(31) ^ 0x5a;
    }
    f
}

/// RTP, not RTCP, STUN or DTLS (RFC 7983 first byte; RFC 5761 payload types).
fn is_rtp(d: &[u8]) -> bool {
    d.len() >= 12 && (128..=191).contains(&d[0]) && !(64..=95).contains(&(d[1] & 0x7f))
}

/// A client peer: one `Rtc`, one UDP socket on 127.0.0.1.
/// A load peer's network: its own UDP socket, or one ICE-TCP connection (frames in from a
/// reader task, out through a writer task).
enum Wire {
    Udp(UdpSocket),
    Tcp {
        frames: mpsc::Receiver<Vec<u8>>,
        out: mpsc::UnboundedSender<Vec<u8>>,
        remote: SocketAddr,
    },
}

impl Wire {
    fn send(&self, data: &[u8], to: SocketAddr) {
        match self {
            // Like the network: a full socket buffer drops the datagram.
            Wire::Udp(sock) => {
                let _ = sock.try_send_to(data, to);
            }
            Wire::Tcp { out, .. } => {
                let _ = out.send(data.to_vec());
            }
        }
    }

    async fn recv(&mut self, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
        match self {
            Wire::Udp(sock) => sock.recv_from(buf).await.ok(),
            Wire::Tcp { frames, remote, .. } => {
                let f = frames.recv().await?;
                let n = f.len().min(buf.len());
                buf[..n].copy_from_slice(&f[..n]);
                Some((n, *remote))
            }
        }
    }

    fn try_recv(&mut self, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
        match self {
            Wire::Udp(sock) => sock.try_recv_from(buf).ok(),
            Wire::Tcp { frames, remote, .. } => {
                let f = frames.try_recv().ok()?;
                let n = f.len().min(buf.len());
                buf[..n].copy_from_slice(&f[..n]);
                Some((n, *remote))
            }
        }
    }

    fn protocol(&self) -> Protocol {
        match self {
            Wire::Udp(_) => Protocol::Udp,
            Wire::Tcp { .. } => Protocol::Tcp,
        }
    }
}

struct Peer {
    rtc: Rtc,
    wire: Wire,
    local: SocketAddr,
    job: Job,
    seqs: Vec<SeqWindow>,
    connected: bool,
    drop_every: u64,
    rtp_seen: u64,
}

/// Receive buffer of each load peer's socket (the kernel caps it at `net.core.rmem_max`).
const RECV_BUFFER: usize = 1 << 20;

impl Peer {
    async fn new(rtp_mode: bool, job: Job) -> Result<Peer, String> {
        let sock = UdpSocket::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        // Sharing the cores with the server, a peer can stall for tens of ms; with the
        // default ~200 KB a keyframe burst to it could then overflow its socket and count
        // as server loss. Browsers read on a dedicated network thread. Best effort.
        let _ = socket2::SockRef::from(&sock).set_recv_buffer_size(RECV_BUFFER);
        let local = sock.local_addr().map_err(|e| e.to_string())?;
        let mut rtc = RtcConfig::new()
            .set_rtp_mode(rtp_mode)
            .build(Instant::now());
        let cand = Candidate::host(local, "udp").map_err(|e| e.to_string())?;
        rtc.add_local_candidate(cand);
        Ok(Peer {
            rtc,
            wire: Wire::Udp(sock),
            local,
            job,
            seqs: Vec::new(),
            connected: false,
            drop_every: 0,
            rtp_seen: 0,
        })
    }

    /// A peer with no candidate yet: [`Peer::connect_tcp`] after the answer gives it one.
    fn new_tcp(rtp_mode: bool, job: Job) -> Peer {
        let rtc = RtcConfig::new()
            .set_rtp_mode(rtp_mode)
            .build(Instant::now());
        let (_, frames) = mpsc::channel(1);
        let (out, _) = mpsc::unbounded_channel();
        Peer {
            rtc,
            wire: Wire::Tcp {
                frames,
                out,
                remote: SocketAddr::from(([127, 0, 0, 1], 0)),
            },
            local: SocketAddr::from(([127, 0, 0, 1], 0)),
            job,
            seqs: Vec::new(),
            connected: false,
            drop_every: 0,
            rtp_seen: 0,
        }
    }

    /// Connects to the server's passive TCP candidate in `answer` and adds our active one.
    async fn connect_tcp(&mut self, answer: &str) -> Result<(), String> {
        let remote = passive_tcp_candidate(answer).ok_or("the answer has no TCP candidate")?;
        let stream = TcpStream::connect(remote)
            .await
            .map_err(|e| format!("ICE-TCP connect {remote}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().map_err(|e| e.to_string())?;
        let (mut r, mut w) = stream.into_split();
        let (frames_tx, frames) = mpsc::channel(4096);
        tokio::spawn(async move {
            loop {
                let Ok(len) = r.read_u16().await else { return };
                let mut f = vec![0; usize::from(len)];
                if r.read_exact(&mut f).await.is_err() || frames_tx.send(f).await.is_err() {
                    return;
                }
            }
        });
        let (out, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            while let Some(p) = out_rx.recv().await {
                buf.clear();
                for p in std::iter::once(p).chain(std::iter::from_fn(|| out_rx.try_recv().ok())) {
                    buf.extend_from_slice(&(p.len() as u16).to_be_bytes());
                    buf.extend_from_slice(&p);
                }
                if w.write_all(&buf).await.is_err() {
                    return;
                }
            }
        });
        let cand = Candidate::builder()
            .tcp()
            .host(local)
            .tcptype(TcpType::Active)
            .build()
            .map_err(|e| e.to_string())?;
        self.rtc.add_local_candidate(cand);
        self.local = local;
        self.wire = Wire::Tcp {
            frames,
            out,
            remote,
        };
        Ok(())
    }

    /// Drains output: sends datagrams, handles events. Returns the next timeout.
    fn poll(&mut self) -> Result<Instant, String> {
        loop {
            match self.rtc.poll_output().map_err(|e| e.to_string())? {
                Output::Timeout(t) => return Ok(t),
                Output::Transmit(t) => {
                    if let Job::Publisher(s) = &self.job {
                        if is_rtp(&t.contents) {
                            s.packets.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    self.wire.send(&t.contents, t.destination);
                }
                Output::Event(e) => self.on_event(e)?,
            }
        }
    }

    fn on_event(&mut self, e: Event) -> Result<(), String> {
        match e {
            Event::Connected => {
                self.connected = true;
                match &mut self.job {
                    Job::Subscriber { stats, .. } => {
                        stats.state.store(CONNECTED, Ordering::Relaxed)
                    }
                    Job::Publisher(s) => s.started = Some(Instant::now()),
                }
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) | Event::Closed => {
                return Err("disconnected".into());
            }
            Event::KeyframeRequest(_) => {
                if let Job::Publisher(s) = &mut self.job {
                    s.want_keyframe = true;
                }
            }
            Event::RtpPacket(p) => {
                if let Job::Subscriber { stats, posted } = &self.job {
                    let ssrc: u32 = *p.header.ssrc;
                    let seq: u64 = *p.seq_no;
                    let (spanned, fresh) = match self.seqs.iter_mut().find(|w| w.ssrc == ssrc) {
                        Some(w) => w.on(seq),
                        None => {
                            self.seqs.push(SeqWindow::new(ssrc, seq));
                            (1, 1)
                        }
                    };
                    if stats.first_packet_us.load(Ordering::Relaxed) == 0 {
                        let us = p.timestamp.saturating_duration_since(*posted).as_micros() as u64;
                        stats.first_packet_us.store(us + 1, Ordering::Relaxed);
                    }
                    stats.packets.fetch_add(1, Ordering::Relaxed);
                    stats
                        .bytes
                        .fetch_add(p.payload.len() as u64, Ordering::Relaxed);
                    stats.expected.fetch_add(spanned, Ordering::Relaxed);
                    stats.distinct.fetch_add(fresh, Ordering::Relaxed);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn receive(&mut self, n: usize, source: SocketAddr, buf: &[u8]) -> Result<(), String> {
        if self.drop_every > 0 && is_rtp(&buf[..n]) {
            self.rtp_seen += 1;
            if self.rtp_seen % self.drop_every == 0 {
                return Ok(());
            }
        }
        let Ok(recv) = Receive::new(self.wire.protocol(), source, self.local, &buf[..n]) else {
            return Ok(());
        };
        self.rtc
            .handle_input(Input::Receive(Instant::now(), recv))
            .map_err(|e| e.to_string())
    }

    /// Runs until `stop` or a failure.
    async fn drive(mut self, mut stop: watch::Receiver<bool>) -> Result<(), String> {
        let mut buf = vec![0u8; 2048];
        loop {
            let mut deadline = self.poll()?;
            if let Job::Publisher(s) = &self.job {
                if let Some(due) = s.due() {
                    deadline = deadline.min(due);
                }
            }
            let deadline = deadline.min(Instant::now() + Duration::from_millis(100));
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                r = self.wire.recv(&mut buf) => {
                    if let Some((n, src)) = r {
                        self.receive(n, src, &buf)?;
                        self.poll()?;
                        // Drain what else is queued without another wakeup.
                        for _ in 0..64 {
                            let Some((n, src)) = self.wire.try_recv(&mut buf) else { break };
                            self.receive(n, src, &buf)?;
                            self.poll()?;
                        }
                    }
                }
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {}
            }
            let now = Instant::now();
            self.rtc
                .handle_input(Input::Timeout(now))
                .map_err(|e| e.to_string())?;
            if let Job::Publisher(s) = &mut self.job {
                s.write_due(&mut self.rtc, now);
            }
            if !self.rtc.is_alive() {
                return Err("rtc closed".into());
            }
        }
        self.rtc.disconnect();
        let _ = self.poll();
        Ok(())
    }
}

/// Makes the offer, POSTs it, applies the answer. Returns the resource Location.
async fn negotiate(
    peer: &mut Peer,
    host: &str,
    path: &str,
    token: &str,
    medias: &[(MediaKind, Direction)],
) -> Result<Option<String>, String> {
    let mut api = peer.rtc.sdp_api();
    let mut mids = Vec::new();
    for (kind, dir) in medias {
        let stream = (*dir == Direction::SendOnly).then(|| "load".to_string());
        mids.push(api.add_media(*kind, *dir, stream, None, None));
    }
    let (offer, pending) = api.apply().ok_or("no offer")?;
    if let Job::Publisher(s) = &mut peer.job {
        s.audio = mids[0];
        s.video = mids[1];
    }
    let auth = format!("Bearer {token}");
    let resp = http(
        host,
        "POST",
        path,
        &[
            ("Content-Type", "application/sdp"),
            ("Authorization", &auth),
        ],
        &offer.to_sdp_string(),
    )
    .await?;
    if resp.status != 201 {
        return Err(format!("POST {path}: {} {}", resp.status, resp.body.trim()));
    }
    let answer = SdpAnswer::from_sdp_string(&resp.body).map_err(|e| format!("answer: {e}"))?;
    peer.rtc
        .sdp_api()
        .accept_answer(pending, answer)
        .map_err(|e| format!("accept answer: {e}"))?;
    if matches!(peer.wire, Wire::Tcp { .. }) {
        peer.connect_tcp(&resp.body).await?;
    }
    Ok(resp.header("location").map(str::to_owned))
}

/// The address of the first `tcptype passive` host candidate in an SDP.
fn passive_tcp_candidate(sdp: &str) -> Option<SocketAddr> {
    sdp.lines().find_map(|l| {
        let f: Vec<&str> = l.strip_prefix("a=candidate:")?.split_whitespace().collect();
        // foundation component transport priority address port typ host ... tcptype passive
        let passive = f.windows(2).any(|w| w == ["tcptype", "passive"]);
        if f.len() < 6 || !f[2].eq_ignore_ascii_case("tcp") || !passive {
            return None;
        }
        Some(SocketAddr::new(f[4].parse().ok()?, f[5].parse().ok()?))
    })
}

/// A resource URL from a Location header, as a path on `host`.
fn location_path(prefix: &str, loc: &str) -> String {
    if let Some(rest) = loc.strip_prefix("http://") {
        return rest.find('/').map_or("/".into(), |i| rest[i..].to_string());
    }
    if loc.starts_with('/') {
        loc.to_string()
    } else {
        format!("{prefix}/{loc}")
    }
}

/// `convene_sfu_*` counters from `GET /metrics`, if any.
async fn sfu_metrics(host: &str, prefix: &str) -> BTreeMap<String, f64> {
    let Ok(r) = http(host, "GET", &format!("{prefix}/metrics"), &[], "").await else {
        return BTreeMap::new();
    };
    r.body
        .lines()
        .filter(|l| l.starts_with("convene_sfu_"))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// What a run measured; `json` is the object `--json` prints.
#[derive(Debug, Clone)]
pub struct SfuReport {
    pub connected: usize,
    /// RTP packets received by all subscribers in the window.
    pub packets: u64,
    /// Loss from sequence numbers over the window, percent.
    pub loss_pct: f64,
    pub json: serde_json::Value,
}

pub async fn run(args: SfuArgs) -> Result<(), LoadError> {
    let json = args.json;
    let report = measure(args).await?;
    if json {
        println!("{}", report.json);
    }
    Ok(())
}

/// Runs the load and returns the figures (printing progress unless `args.json`).
pub async fn measure(args: SfuArgs) -> Result<SfuReport, LoadError> {
    if args.subscribers > MAX_SUBSCRIBERS {
        return Err(LoadError::Setup(format!(
            "at most {MAX_SUBSCRIBERS} subscribers"
        )));
    }
    let duration = Duration::from_secs(args.duration.clamp(1, MAX_DURATION_S));
    let (host, prefix) = parse_url(&args.url)?;
    let toks = Arc::new(tokens(&args)?);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let mut locations: Vec<String> = Vec::new();
    let say = |s: String| {
        if !args.json {
            println!("{s}");
        }
    };

    // The publisher first, so subscribers find its tracks.
    let frames = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    if args.publish == Some(Publish::Synthetic) {
        let syn = Synthetic::new(args.bitrate_kbps, frames.clone(), sent.clone());
        let mut p = Peer::new(false, Job::Publisher(Box::new(syn)))
            .await
            .map_err(LoadError::Setup)?;
        let path = format!("{prefix}/whip/{}", args.room);
        let loc = negotiate(
            &mut p,
            &host,
            &path,
            &toks.publisher,
            &[
                (MediaKind::Audio, Direction::SendOnly),
                (MediaKind::Video, Direction::SendOnly),
            ],
        )
        .await
        .map_err(LoadError::Setup)?;
        locations.extend(loc.map(|l| location_path(&prefix, &l)));
        let stop = stop_rx.clone();
        tasks.spawn(async move {
            if let Err(e) = p.drive(stop).await {
                tracing::warn!(error = %e, "publisher stopped");
            }
            None::<String>
        });
        // Let it connect and publish before subscribers ask for its tracks.
        let t0 = Instant::now();
        while frames.load(Ordering::Relaxed) == 0 {
            if t0.elapsed() > Duration::from_secs(10) {
                return Err(LoadError::Setup("publisher did not connect in 10 s".into()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        say(format!(
            "publisher connected in {} ms",
            t0.elapsed().as_millis()
        ));
    }

    // Subscribers, `connect_concurrency` at a time.
    let stats: Vec<Arc<SubStats>> = (0..args.subscribers)
        .map(|_| Arc::new(SubStats::default()))
        .collect();
    let gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let started = Instant::now();
    for (i, st) in stats.iter().enumerate() {
        let st = st.clone();
        let gate = gate.clone();
        let toks = toks.clone();
        let host = host.clone();
        let path = format!("{prefix}/whep/{}", args.room);
        let stop = stop_rx.clone();
        let drop_every = args.drop_every;
        let transport = args.transport;
        tasks.spawn(async move {
            let permit = gate.acquire_owned().await.ok();
            let posted = Instant::now();
            let job = Job::Subscriber { stats: st.clone(), posted };
            let made = match transport {
                Transport::Udp => Peer::new(true, job).await,
                Transport::Tcp => Ok(Peer::new_tcp(true, job)),
            };
            let mut p = match made {
                Ok(p) => Peer { drop_every, ..p },
                Err(e) => {
                    st.state.store(FAILED, Ordering::Relaxed);
                    tracing::warn!(subscriber = i, error = %e, "socket");
                    return None;
                }
            };
            let token = (toks.viewer)(i);
            let media = [(MediaKind::Audio, Direction::RecvOnly), (MediaKind::Video, Direction::RecvOnly)];
            let loc = match negotiate(&mut p, &host, &path, &token, &media).await {
                Ok(l) => l,
                Err(e) => {
                    st.state.store(FAILED, Ordering::Relaxed);
                    tracing::warn!(subscriber = i, error = %e, "whep");
                    return None;
                }
            };
            // Hold the slot until connected (DTLS is the server's costly part) or 10 s.
            let mut stop2 = stop.clone();
            let connect = async {
                let mut buf = vec![0u8; 2048];
                let t0 = Instant::now();
                while !p.connected && t0.elapsed() < Duration::from_secs(10) {
                    let deadline = p.poll()?.min(Instant::now() + Duration::from_millis(50));
                    tokio::select! {
                        _ = stop2.changed() => return Ok(()),
                        r = p.wire.recv(&mut buf) => if let Some((n, src)) = r { p.receive(n, src, &buf)?; },
                        _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {}
                    }
                    p.rtc.handle_input(Input::Timeout(Instant::now())).map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            };
            if let Err(e) = connect.await {
                tracing::warn!(subscriber = i, error = %e, "connect");
            }
            drop(permit);
            if let Err(e) = p.drive(stop).await {
                tracing::debug!(subscriber = i, error = %e, "subscriber stopped");
            }
            if st.state.load(Ordering::Relaxed) != CONNECTED {
                st.state.store(FAILED, Ordering::Relaxed);
            }
            loc
        });
    }

    // Wait for everyone to connect or fail.
    let connect_limit = Duration::from_secs(args.connect_timeout.max(1));
    let mut last_print = Instant::now();
    loop {
        let (mut up, mut failed) = (0, 0);
        for s in &stats {
            match s.state.load(Ordering::Relaxed) {
                CONNECTED => up += 1,
                FAILED => failed += 1,
                _ => {}
            }
        }
        if up + failed == stats.len() || started.elapsed() > connect_limit {
            say(format!(
                "subscribers: {up} connected, {failed} failed, {} pending after {:.1} s",
                stats.len() - up - failed,
                started.elapsed().as_secs_f64()
            ));
            break;
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            say(format!(
                "connecting: {up}/{} up, {failed} failed",
                stats.len()
            ));
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let keyframe requests settle before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Open the window mid-GOP: a periodic keyframe is a burst of packets, and one split
    // by a window edge (sent inside, forwarded after) would skew delivery by ~2%.
    if args.publish.is_some() {
        let mid_gop = |f: u64| f % u64::from(KEYFRAME_EVERY) == u64::from(KEYFRAME_EVERY / 2);
        let until = Instant::now() + Duration::from_secs(3);
        while !mid_gop(frames.load(Ordering::Relaxed)) && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    // Measurement window.
    let pid = args.server_pid.map(|p| p.to_string());
    let m0 = sfu_metrics(&host, &prefix).await;
    let snap_all = |stats: &[Arc<SubStats>]| stats.iter().map(|s| s.snap()).collect::<Vec<_>>();
    let s0 = snap_all(&stats);
    let cpu0 = pid.as_deref().and_then(proc_cpu_us);
    let self0 = proc_cpu_us("self");
    let frames0 = frames.load(Ordering::Relaxed);
    let sent0 = sent.load(Ordering::Relaxed);
    let w0 = Instant::now();
    let mut per_second = Vec::new();
    let mut prev = s0.clone();
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    for sec in 1..=duration.as_secs() {
        tick.tick().await;
        let now = snap_all(&stats);
        let (mut pk, mut ex, mut di) = (0u64, 0u64, 0u64);
        for (a, b) in prev.iter().zip(&now) {
            pk += b.packets - a.packets;
            ex += b.expected - a.expected;
            di += b.distinct - a.distinct;
        }
        let loss = if ex > 0 {
            100.0 * ex.saturating_sub(di) as f64 / ex as f64
        } else {
            0.0
        };
        let per_sub = pk as f64 / stats.len().max(1) as f64;
        say(format!(
            "t={sec:>3}s packets={pk:>7}/s per_sub={per_sub:>7.1}/s loss={loss:.2}%"
        ));
        per_second.push(serde_json::json!({ "t": sec, "packets": pk, "per_subscriber": round2(per_sub), "loss_pct": round2(loss) }));
        prev = now;
    }
    let window = w0.elapsed().as_secs_f64();
    let cpu1 = pid.as_deref().and_then(proc_cpu_us);
    let self1 = proc_cpu_us("self");
    let s1 = snap_all(&stats);
    let m1 = sfu_metrics(&host, &prefix).await;
    let frames1 = frames.load(Ordering::Relaxed);
    let sent1 = sent.load(Ordering::Relaxed);

    let _ = stop_tx.send(true);
    let mut deletes = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Ok(Some(loc)) = r {
            deletes.push(location_path(&prefix, &loc));
        }
    }
    deletes.extend(locations);
    // Best effort: end the sessions on the server.
    let mut del = tokio::task::JoinSet::new();
    for chunk in deletes.chunks(32) {
        let host = host.clone();
        let chunk = chunk.to_vec();
        del.spawn(async move {
            for path in chunk {
                let _ = http(&host, "DELETE", &path, &[], "").await;
            }
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while del.join_next().await.is_some() {}
    })
    .await;

    // Figures.
    let n = stats.len();
    let connected = stats
        .iter()
        .filter(|s| s.state.load(Ordering::Relaxed) == CONNECTED)
        .count();
    let (mut packets, mut bytes, mut expected, mut distinct) = (0u64, 0u64, 0u64, 0u64);
    let mut ok = 0usize;
    let mut held = 0usize;
    let mut receiving = 0usize;
    // RTP packets the publisher sent in the window: what each subscriber should get.
    let published = sent1 - sent0;
    let mut worst: f64 = 0.0;
    for (a, b) in s0.iter().zip(&s1) {
        let (pk, ex, di) = (
            b.packets - a.packets,
            b.expected - a.expected,
            b.distinct - a.distinct,
        );
        packets += pk;
        bytes += b.bytes - a.bytes;
        expected += ex;
        distinct += di;
        if pk > 0 {
            receiving += 1;
            let loss = ex.saturating_sub(di) as f64 / ex.max(1) as f64;
            worst = worst.max(loss);
            if loss < 0.01 {
                ok += 1;
                if published == 0 || (pk as f64) >= 0.99 * published as f64 {
                    held += 1;
                }
            }
        }
    }
    let loss_pct = if expected > 0 {
        100.0 * expected.saturating_sub(distinct) as f64 / expected as f64
    } else {
        0.0
    };
    let mut ttfp: Vec<f64> = stats
        .iter()
        .filter_map(|s| match s.first_packet_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some((us - 1) as f64 / 1000.0),
        })
        .collect();
    ttfp.sort_by(|a, b| a.total_cmp(b));
    let server_cpu_us = match (cpu0, cpu1) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let us_per_packet = server_cpu_us
        .filter(|_| packets > 0)
        .map(|c| round2(c as f64 / packets as f64));
    let metrics_delta: BTreeMap<String, f64> = m1
        .iter()
        .map(|(k, v)| (k.clone(), v - m0.get(k).copied().unwrap_or(0.0)))
        .collect();
    let report = serde_json::json!({
        "room": args.room,
        "subscribers": n,
        "connected": connected,
        "receiving": receiving,
        "publisher": args.publish.is_some(),
        "window_s": round2(window),
        "packets": packets,
        "packets_per_s": round2(packets as f64 / window),
        "packets_per_s_per_subscriber": round2(packets as f64 / window / n.max(1) as f64),
        "mbit_per_s": round2(bytes as f64 * 8.0 / window / 1e6),
        "loss_pct": round2(loss_pct * 100.0) / 100.0,
        "worst_subscriber_loss_pct": round2(worst * 100.0),
        "subscribers_under_1pct_loss": ok,
        "subscribers_held": held,
        "publisher_packets_per_s": round2(published as f64 / window),
        "delivery_pct": (published > 0).then(|| round2(100.0 * packets as f64 / (published as f64 * n.max(1) as f64))),
        "time_to_first_packet_ms": {
            "count": ttfp.len(),
            "p50": round2(percentile(&ttfp, 0.5)),
            "p99": round2(percentile(&ttfp, 0.99)),
            "max": round2(ttfp.last().copied().unwrap_or(0.0)),
        },
        "publisher_frames_per_s": round2((frames1 - frames0) as f64 / window),
        "server_cpu_us": server_cpu_us,
        "server_cpu_us_per_packet": us_per_packet,
        "server_cpu_pct": server_cpu_us.map(|c| round2(c as f64 / window / 1e4)),
        "tool_cpu_pct": match (self0, self1) { (Some(a), Some(b)) => Some(round2((b - a) as f64 / window / 1e4)), _ => None },
        "server_metrics_delta": metrics_delta,
        "per_second": per_second,
    });
    if !args.json {
        println!(
            "window {:.1} s: {} packets ({:.0}/s, {:.1}/s per subscriber, {:.2} Mbit/s), loss {:.3}%, worst {:.2}%",
            window,
            packets,
            packets as f64 / window,
            packets as f64 / window / n.max(1) as f64,
            bytes as f64 * 8.0 / window / 1e6,
            loss_pct,
            worst * 100.0
        );
        println!("subscribers: {n} started, {connected} connected, {receiving} receiving, {ok} under 1% loss, {held} held (also >= 99% of what was published)");
        if published > 0 {
            println!(
                "publisher: {:.0} RTP packets/s; subscribers got {:.1}% of them",
                published as f64 / window,
                100.0 * packets as f64 / (published as f64 * n.max(1) as f64)
            );
        }
        println!(
            "time to first packet: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} of {n})",
            percentile(&ttfp, 0.5),
            percentile(&ttfp, 0.99),
            ttfp.last().copied().unwrap_or(0.0),
            ttfp.len()
        );
        if let (Some(c), Some(u)) = (server_cpu_us, us_per_packet) {
            println!(
                "server cpu: {} ms ({:.1}% of a core), {u} us per received packet",
                c / 1000,
                c as f64 / window / 1e4
            );
        }
        if !metrics_delta.is_empty() {
            println!("server metrics over the window: {metrics_delta:?}");
        }
    }
    Ok(SfuReport {
        connected,
        packets,
        loss_pct,
        json: report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_window_counts_gaps_and_duplicates() {
        let mut w = SeqWindow::new(1, 100);
        assert_eq!(w.on(101), (1, 1));
        assert_eq!(w.on(104), (3, 1)); // 102, 103 missing
        assert_eq!(w.on(102), (0, 1)); // retransmitted
        assert_eq!(w.on(102), (0, 0)); // duplicate
        assert_eq!(w.on(99), (0, 0)); // before the first
        assert_eq!(w.on(104 + SEQ_WINDOW + 5), (SEQ_WINDOW + 5, 1));
        assert_eq!(w.on(104), (0, 0)); // too old
    }

    #[test]
    fn passive_tcp_candidate_is_found_in_an_answer() {
        let sdp = "v=0\r\na=candidate:1 1 udp 2130706175 127.0.0.1 3478 typ host\r\n\
                   a=candidate:2 1 tcp 1509949695 127.0.0.1 7881 typ host tcptype passive\r\n";
        assert_eq!(
            passive_tcp_candidate(sdp),
            Some("127.0.0.1:7881".parse().unwrap())
        );
        assert_eq!(
            passive_tcp_candidate("a=candidate:1 1 udp 1 127.0.0.1 3478 typ host"),
            None
        );
    }

    #[test]
    fn vp8_frames_mark_keyframes_in_bit_zero() {
        assert_eq!(vp8_frame(true, 100)[0] & 1, 0);
        assert_eq!(vp8_frame(false, 100)[0] & 1, 1);
        assert_eq!(&vp8_frame(true, 100)[3..6], &[0x9d, 0x01, 0x2a]);
        assert_eq!(vp8_frame(false, 7000).len(), 7000);
    }

    #[test]
    fn http_responses_parse() {
        let r = parse_response(b"HTTP/1.1 201 Created\r\nLocation: /whep/r/1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nv=0\r\n0\r\n\r\n").unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(r.header("location"), Some("/whep/r/1"));
        assert_eq!(r.body, "v=0");
        assert_eq!(
            parse_url("http://127.0.0.1:80/x/").unwrap(),
            ("127.0.0.1:80".into(), "/x".into())
        );
        assert_eq!(location_path("", "http://h:1/whep/a/b"), "/whep/a/b");
    }
}
