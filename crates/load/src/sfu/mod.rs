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
//!
//! `measure.rs` runs the steps, `peer.rs` is a load peer (UDP or ICE-TCP), `synthetic.rs` the
//! published stream, `stats.rs` each subscriber's counters, `figures.rs` the report, `http.rs`
//! the HTTP client for WHIP/WHEP and `/metrics`.

use super::LoadError;

mod figures;
pub(crate) mod http;
mod measure;
mod peer;
mod stats;
mod synthetic;

pub use self::measure::measure;

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
