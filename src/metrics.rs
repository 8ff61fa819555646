//! The node's Prometheus metrics: process-wide counters and histograms that rooms, sessions and the edge record into, and the `/metrics` text.
//!
//! Recording is a free function (`metrics::observe_join(elapsed)`) so no part of the server
//! has to carry a handle; each is an atomic add or a histogram bucket increment, never a lock
//! around room state. Gauges that already live elsewhere (sessions, rooms, the SFU's
//! counters) are read at scrape time by a [`NodeCollector`], so nothing is counted twice.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use convene_core::room::registry::Rooms;
use convene_sfu::Sfu;

/// Labels of `convene_http_requests_total`: the route template (never the raw path, which
/// holds room names), the method and the status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// Everything recorded process-wide. Clones share their values.
struct Recorded {
    join_seconds: Histogram,
    command_seconds: Histogram,
    fanout_seconds: Histogram,
    slow_reader_closes: Counter,
    rate_limited: Counter,
    superseded_commands: Counter,
    http_requests: Family<HttpLabels, Counter>,
    http_request_seconds: Histogram,
    webhook_deliveries: Family<OutcomeLabels, Counter>,
    cluster_bus_seconds: Histogram,
    cluster_redis_reconnects: Counter,
    cluster_pubsub_reconnects: Counter,
    cluster_gap_repairs: Counter,
    cluster_replies_lost: Counter,
    cluster_takeovers: Counter,
    cluster_fenced: Counter,
    cluster_replay_mismatches: Counter,
    turn_allocations: Counter,
    turn_refused_peers: Counter,
}

static RECORDED: LazyLock<Recorded> = LazyLock::new(|| Recorded {
    // 1 ms .. ~16 s: a join waits for the room actor and builds the snapshot.
    join_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
    // 20 µs .. ~0.3 s: one command through the room's pure `apply`.
    command_seconds: Histogram::new(exponential_buckets(0.000_02, 2.0, 15)),
    // 20 µs .. ~0.3 s: from an event's sequencing to its frame leaving for the sockets.
    fanout_seconds: Histogram::new(exponential_buckets(0.000_02, 2.0, 15)),
    slow_reader_closes: Counter::default(),
    rate_limited: Counter::default(),
    superseded_commands: Counter::default(),
    http_requests: Family::default(),
    http_request_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
    webhook_deliveries: Family::default(),
    // 50 µs .. ~1.6 s: from the owner's append to this node's lanes.
    cluster_bus_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
    cluster_redis_reconnects: Counter::default(),
    cluster_pubsub_reconnects: Counter::default(),
    cluster_gap_repairs: Counter::default(),
    cluster_replies_lost: Counter::default(),
    cluster_takeovers: Counter::default(),
    cluster_fenced: Counter::default(),
    cluster_replay_mismatches: Counter::default(),
    turn_allocations: Counter::default(),
    turn_refused_peers: Counter::default(),
});

/// Time from a room owner's append to the events reaching this node (one clock: same host
/// or synchronised clocks).
pub fn observe_cluster_bus(elapsed: Duration) {
    RECORDED.cluster_bus_seconds.observe(elapsed.as_secs_f64());
}

/// Redis answered again after being unreachable.
pub fn cluster_redis_reconnected() {
    RECORDED.cluster_redis_reconnects.inc();
}

/// The node's pub/sub connection was re-established (messages may have been lost).
pub fn cluster_pubsub_reconnected() {
    RECORDED.cluster_pubsub_reconnects.inc();
}

/// Events or inputs missed on pub/sub and read back from their stream.
pub fn cluster_gap_repaired() {
    RECORDED.cluster_gap_repairs.inc();
}

/// A relayed media reply this node could not get into the session's node's inbox in time.
pub fn cluster_reply_lost() {
    RECORDED.cluster_replies_lost.inc();
}

/// This node took a room over from a lapsed owner.
pub fn cluster_took_over() {
    RECORDED.cluster_takeovers.inc();
}

/// This node found another owner's fence on a room it thought it owned.
pub fn cluster_fenced() {
    RECORDED.cluster_fenced.inc();
}

/// A replayed event differed from the one stored: replay was not exact.
pub fn cluster_replay_mismatch() {
    RECORDED.cluster_replay_mismatches.inc();
}

/// Time from a socket's upgrade (or a WHIP POST) to its `welcome` (or its answer).
/// The embedded TURN relay made an allocation.
pub fn turn_allocated() {
    RECORDED.turn_allocations.inc();
}

/// The embedded TURN relay refused a peer that is not the SFU (a probe, or a misconfiguration).
pub fn turn_refused_peer() {
    RECORDED.turn_refused_peers.inc();
}

pub fn observe_join(elapsed: Duration) {
    RECORDED.join_seconds.observe(elapsed.as_secs_f64());
}

/// Time one client command took in its room, from receipt to the reply.
pub fn command_handled(elapsed: Duration) {
    RECORDED.command_seconds.observe(elapsed.as_secs_f64());
}

/// Time from an event's sequencing to its frame handed to the sessions that may see it.
pub fn observe_fanout(elapsed: Duration) {
    RECORDED.fanout_seconds.observe(elapsed.as_secs_f64());
}

/// A session closed because it fell behind its room's events (close code 1013).
pub fn slow_reader_closed() {
    RECORDED.slow_reader_closes.inc();
}

/// A command refused by a session's rate limit.
pub fn rate_limited() {
    RECORDED.rate_limited.inc();
}

/// A command read from a socket its session had already left (resumed elsewhere): dropped.
pub fn superseded_command() {
    RECORDED.superseded_commands.inc();
}

/// One webhook delivery attempt: `delivered`, `retried` or `failed` (gave up); or an event
/// never attempted: `dropped` (its room's queue was full) or `coalesced` (presence churn).
pub fn webhook_delivery(outcome: &'static str) {
    RECORDED
        .webhook_deliveries
        .get_or_create(&OutcomeLabels { outcome })
        .inc();
}

/// One HTTP request answered by the edge.
pub fn http_request(labels: HttpLabels, elapsed: Duration) {
    RECORDED.http_requests.get_or_create(&labels).inc();
    RECORDED.http_request_seconds.observe(elapsed.as_secs_f64());
}

/// What a node reads at scrape time rather than counting twice.
#[derive(Clone)]
pub struct NodeCollector {
    pub sessions: Arc<AtomicUsize>,
    pub rooms: Rooms,
    pub sfu: Option<Sfu>,
}

impl fmt::Debug for NodeCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeCollector")
    }
}

fn encode_one(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: impl EncodeMetric,
) -> fmt::Result {
    let metric_encoder = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(metric_encoder)
}

impl Collector for NodeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let gauge = |v: usize| ConstGauge::new(v as i64);
        encode_one(
            &mut encoder,
            "convene_sessions",
            "Connected WebSocket sessions on this node",
            gauge(self.sessions.load(Ordering::Relaxed)),
        )?;
        encode_one(
            &mut encoder,
            "convene_rooms",
            "Rooms running on this node",
            gauge(self.rooms.len()),
        )?;
        let Some(sfu) = &self.sfu else {
            return Ok(());
        };
        let s = sfu.stats();
        encode_one(
            &mut encoder,
            "convene_sfu_peers",
            "WebRTC peers",
            gauge(s.peers),
        )?;
        encode_one(
            &mut encoder,
            "convene_sfu_tracks",
            "Published tracks",
            gauge(s.tracks),
        )?;
        // Counter names get `_total` from the encoder: the names stay what they were.
        for (name, help, value) in [
            (
                "convene_sfu_datagrams_in",
                "UDP datagrams received",
                s.datagrams_in,
            ),
            (
                "convene_sfu_datagrams_dropped",
                "UDP datagrams dropped",
                s.datagrams_dropped,
            ),
            (
                "convene_sfu_frames_forwarded",
                "RTP packets written to subscribers",
                s.frames_forwarded,
            ),
            (
                "convene_sfu_bytes_forwarded",
                "Media bytes written to subscribers",
                s.bytes_forwarded,
            ),
            (
                "convene_sfu_keyframe_requests_in",
                "PLI/FIR received from subscribers",
                s.keyframe_requests_in,
            ),
            (
                "convene_sfu_keyframe_requests_out",
                "Keyframe requests sent to publishers",
                s.keyframe_requests_out,
            ),
            (
                "convene_sfu_packets_direct",
                "RTP packets SRTP-protected and sent by the workers (direct egress path)",
                s.packets_direct,
            ),
            (
                "convene_sfu_retransmits",
                "RTP packets re-sent on the direct path after a NACK",
                s.retransmits,
            ),
            (
                "convene_sfu_datagrams_out",
                "UDP datagrams sent",
                s.datagrams_out,
            ),
            (
                "convene_sfu_send_calls",
                "Send system calls (sendmmsg batches up to 64 datagrams)",
                s.send_calls,
            ),
            (
                "convene_sfu_tcp_packets_out",
                "Packets written to ICE-TCP connections",
                s.tcp_packets_out,
            ),
        ] {
            encode_one(&mut encoder, name, help, ConstCounter::new(value))?;
        }
        Ok(())
    }
}

/// A node's registry: the process-wide metrics plus its own collector.
pub fn registry(node: NodeCollector) -> Registry {
    let r = &*RECORDED;
    let mut registry = Registry::default();
    registry.register(
        "convene_join_seconds",
        "Time from upgrade to welcome (or WHIP POST to answer)",
        r.join_seconds.clone(),
    );
    registry.register(
        "convene_command_seconds",
        "Time one client command took in its room",
        r.command_seconds.clone(),
    );
    registry.register(
        "convene_fanout_seconds",
        "Time from an event's sequencing to its frame handed to sessions",
        r.fanout_seconds.clone(),
    );
    registry.register(
        "convene_slow_reader_closes",
        "Sessions closed for falling behind their room's events (1013)",
        r.slow_reader_closes.clone(),
    );
    registry.register(
        "convene_rate_limited",
        "Commands refused by a session's rate limit",
        r.rate_limited.clone(),
    );
    registry.register(
        "convene_superseded_commands",
        "Commands from a socket its session had left (it resumed on another): dropped unanswered",
        r.superseded_commands.clone(),
    );
    registry.register(
        "convene_http_requests",
        "HTTP requests answered, by route template, method and status",
        r.http_requests.clone(),
    );
    registry.register(
        "convene_http_request_seconds",
        "Time to answer an HTTP request (a WebSocket: until the upgrade)",
        r.http_request_seconds.clone(),
    );
    registry.register(
        "convene_webhook_deliveries",
        "Webhook delivery attempts by outcome (delivered, retried, failed; dropped, coalesced: never sent)",
        r.webhook_deliveries.clone(),
    );
    registry.register(
        "convene_cluster_bus_seconds",
        "Time from a room owner's append to its events reaching this node",
        r.cluster_bus_seconds.clone(),
    );
    for (name, help, counter) in [
        (
            "convene_cluster_redis_reconnects",
            "Times Redis answered again after being unreachable",
            &r.cluster_redis_reconnects,
        ),
        (
            "convene_cluster_pubsub_reconnects",
            "Times the pub/sub connection was re-established",
            &r.cluster_pubsub_reconnects,
        ),
        (
            "convene_cluster_gap_repairs",
            "Gaps in a room's events or inputs read back from Redis",
            &r.cluster_gap_repairs,
        ),
        (
            "convene_cluster_replies_lost",
            "Relayed media replies given up after retrying for call_timeout_ms",
            &r.cluster_replies_lost,
        ),
        (
            "convene_cluster_takeovers",
            "Rooms this node took over from a lapsed owner",
            &r.cluster_takeovers,
        ),
        (
            "convene_cluster_fenced",
            "Times this node lost a room to a newer owner's fence",
            &r.cluster_fenced,
        ),
        (
            "convene_cluster_replay_mismatches",
            "Replayed events that differed from the stored ones",
            &r.cluster_replay_mismatches,
        ),
        (
            "convene_turn_allocations",
            "Allocations the embedded TURN relay made",
            &r.turn_allocations,
        ),
        (
            "convene_turn_refused_peers",
            "Permissions and channels the embedded TURN relay refused: the peer was not the SFU",
            &r.turn_refused_peers,
        ),
    ] {
        registry.register(name, help, counter.clone());
    }
    registry.register_collector(Box::new(node));
    registry
}

/// The Prometheus text exposition (version 0.0.4) of `registry`.
pub fn render(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, registry)
        .expect("writing to a String cannot fail");
    text
}

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
