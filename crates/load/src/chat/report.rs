//! The figures a hub run reports (serialised as `--json` prints them) and their text form.

use std::fmt::Write;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::{Scenario, Target};
use crate::probe::{IdleFigures, ToolUsage, Usage};
use crate::redis_info::RedisFigures;

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub(crate) fn of(hist: &Histogram<u64>) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            samples: hist.len(),
            p50_ms: ms(hist.value_at_quantile(0.50)),
            p90_ms: ms(hist.value_at_quantile(0.90)),
            p99_ms: ms(hist.value_at_quantile(0.99)),
            max_ms: ms(hist.max()),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ResumeFigures {
    pub sessions: u64,
    /// Got `resumed`.
    pub resumed: u64,
    /// Got a fresh `welcome` instead (unknown session or gap too old).
    pub fresh: u64,
    pub failed: u64,
    /// From the first reconnect attempt until the last `resumed` arrived.
    pub all_resumed_ms: f64,
    /// Per session, from its reconnect attempt to its `resumed`.
    pub latency: Latency,
}

/// Delivery latency split by where the receiver sits: on the sender's node, or on another.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeSplit {
    /// The nodes' base URLs, in `--url` order; session `i` is on node `i % nodes`.
    pub urls: Vec<String>,
    /// Sessions held on each node when the window ended.
    pub connected_per_node: Vec<u64>,
    /// Receiver on the sender's node.
    pub same_node: Latency,
    /// Receiver on another node: the event crossed the cluster.
    pub cross_node: Latency,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatReport {
    pub target: Target,
    pub scenario: Scenario,
    pub clients: usize,
    pub senders: usize,
    pub rate: f64,
    pub duration_s: f64,
    /// Sessions connected when the window ended.
    pub connected: u64,
    pub connect_failures: u64,
    /// Time to open every session.
    pub ramp_s: f64,
    pub sent: u64,
    pub sent_per_s: f64,
    /// Deliveries expected: sent x sessions held (everyone receives every message, the sender too).
    pub expected: u64,
    pub delivered: u64,
    pub delivered_per_s: f64,
    /// Sending start to the last delivery.
    pub window_s: f64,
    pub latency: Latency,
    /// With several `--url`s: the latency of same-node and cross-node deliveries.
    pub nodes: Option<NodeSplit>,
    pub errors: u64,
    pub error_samples: Vec<String>,
    pub reconnects: u64,
    pub tool: ToolUsage,
    pub server: Option<Usage>,
    pub idle: Option<IdleFigures>,
    pub resume: Option<ResumeFigures>,
    /// With `--redis`: what Redis did over the window.
    pub redis: Option<RedisFigures>,
}

#[derive(Debug, Clone, Serialize)]
pub struct QuestionFigures {
    pub id: u64,
    /// The last count the observer saw.
    pub votes: u32,
    /// `question_votes` events the observer received for it.
    pub events: u64,
    /// Those events per second of the voting window.
    pub events_per_s: f64,
    /// The most events in any one-second span.
    pub max_events_in_1s: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct VotesReport {
    pub clients: usize,
    pub voters: u64,
    pub questions: usize,
    pub ramp_s: f64,
    pub votes_sent: u64,
    pub votes_acked: u64,
    pub acked_per_s: f64,
    /// Voting start until every vote was answered.
    pub all_acked_ms: f64,
    /// Send to ack, per vote.
    pub ack_latency: Latency,
    /// Voting start until the observer saw every final count.
    pub final_counts_ms: f64,
    /// Every question's final count, as the observer saw it, equals `clients`.
    pub exact: bool,
    pub per_question: Vec<QuestionFigures>,
    pub errors: u64,
    pub error_samples: Vec<String>,
    pub tool: ToolUsage,
    pub server: Option<Usage>,
}

// --- Text output ---------------------------------------------------------------------

fn usage_lines(out: &mut String, tool: &ToolUsage, server: &Option<Usage>, per: &str) {
    let _ = writeln!(
        out,
        "load tool     cpu {:.2}s ({:.0}% of a core, {:.0}% per runtime thread x{}){}, rss {:.1} MiB",
        tool.usage.cpu_s,
        tool.usage.cpu_pct,
        tool.per_thread_pct,
        tool.threads,
        if tool.saturated { " SATURATED: figures measure the tool" } else { "" },
        tool.usage.rss_mib
    );
    if let Some(s) = server {
        let per_op = s.cpu_ns_per_op.map_or(String::new(), |ns| {
            format!(", {:.2} us per {per}", ns / 1000.0)
        });
        let _ = writeln!(
            out,
            "server pid {}  cpu {:.2}s ({:.0}% of a core){per_op}, rss {:.1} MiB (was {:.1})",
            s.pid, s.cpu_s, s.cpu_pct, s.rss_mib, s.rss_before_mib
        );
    }
}

pub(super) fn chat_text(r: &ChatReport) -> String {
    let mut out = String::new();
    let target = match r.target {
        Target::Convene => "convene",
        Target::Socketio => "socketio",
    };
    let _ = writeln!(
        out,
        "{target} {:?}: {} clients connected of {} in {:.1}s ({} failed)",
        r.scenario, r.connected, r.clients, r.ramp_s, r.connect_failures
    );
    if r.scenario == Scenario::Chat {
        delivery_lines(&mut out, r);
    }
    if let Some(i) = &r.idle {
        let server = i
            .server_bytes_per_session
            .map_or("unknown (pass --server-pid)".to_string(), |b| {
                format!("{:.0} bytes ({:.1} KiB)", b, b / 1024.0)
            });
        let _ = writeln!(
            out,
            "idle          {} sessions: server RSS per session {server}; tool {:.0} bytes",
            i.sessions, i.tool_bytes_per_session
        );
    }
    if let Some(f) = &r.resume {
        let _ = writeln!(
            out,
            "resume        {} sessions: {} resumed, {} fresh, {} failed; all resumed in {:.0} ms",
            f.sessions, f.resumed, f.fresh, f.failed, f.all_resumed_ms
        );
        let l = &f.latency;
        let _ = writeln!(
            out,
            "per session   p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
            l.p50_ms, l.p99_ms, l.max_ms
        );
    }
    let _ = writeln!(
        out,
        "errors        {}  reconnects {}",
        r.errors, r.reconnects
    );
    for e in &r.error_samples {
        let _ = writeln!(out, "  {e}");
    }
    if let Some(x) = &r.redis {
        redis_line(&mut out, x, r.sent);
    }
    usage_lines(&mut out, &r.tool, &r.server, "delivery");
    out.trim_end().to_string()
}

/// Sent, delivered and latency of the chat scenario, split by node with several `--url`s.
fn delivery_lines(out: &mut String, r: &ChatReport) {
    let _ = writeln!(
        out,
        "sent          {} msgs ({:.1}/s by {} senders)",
        r.sent, r.sent_per_s, r.senders
    );
    let _ = writeln!(
        out,
        "delivered     {} of {} ({:.0}/s over {:.2}s)",
        r.delivered, r.expected, r.delivered_per_s, r.window_s
    );
    let l = &r.latency;
    let _ = writeln!(
        out,
        "latency ms    p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
    );
    let Some(n) = &r.nodes else {
        return;
    };
    let _ = writeln!(
        out,
        "nodes         {} ({} sessions each at the end)",
        n.urls.join(", "),
        n.connected_per_node
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join("/")
    );
    for (name, l) in [("same node", &n.same_node), ("cross node", &n.cross_node)] {
        let _ = writeln!(
            out,
            "  {name:<11} p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2} ms ({} deliveries)",
            l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms, l.samples
        );
    }
    let _ = writeln!(
        out,
        "  cross adds  p50 {:+.2}  p99 {:+.2} ms",
        n.cross_node.p50_ms - n.same_node.p50_ms,
        n.cross_node.p99_ms - n.same_node.p99_ms
    );
}

/// What Redis did per chat message sent, with the six most called commands.
fn redis_line(out: &mut String, x: &RedisFigures, sent: u64) {
    let per = sent.max(1) as f64;
    let top: Vec<String> = {
        let mut calls: Vec<_> = x.calls.iter().collect();
        calls.sort_by(|a, b| b.1.cmp(a.1));
        calls
            .iter()
            .take(6)
            .map(|(name, n)| format!("{name} {:.2}", **n as f64 / per))
            .collect()
    };
    let _ = writeln!(
        out,
        "redis         per message sent: {:.2} commands, {:.0} bytes in, {:.0} bytes out ({})",
        x.commands as f64 / per,
        x.net_input_bytes as f64 / per,
        x.net_output_bytes as f64 / per,
        top.join(", ")
    );
}

pub(super) fn votes_text(r: &VotesReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "votes: {} voters connected of {} in {:.1}s, {} questions",
        r.voters, r.clients, r.ramp_s, r.questions
    );
    let _ = writeln!(
        out,
        "acked         {} of {} sent ({:.0}/s); all acked in {:.0} ms",
        r.votes_acked, r.votes_sent, r.acked_per_s, r.all_acked_ms
    );
    let l = &r.ack_latency;
    let _ = writeln!(
        out,
        "ack ms        p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
    );
    let _ = writeln!(
        out,
        "final counts  {} after {:.0} ms",
        if r.exact { "exact" } else { "WRONG" },
        r.final_counts_ms
    );
    for q in &r.per_question {
        let _ = writeln!(out, "  question {}: {} votes; observer got {} question_votes events ({:.1}/s, at most {} in any second)", q.id, q.votes, q.events, q.events_per_s, q.max_events_in_1s);
    }
    let _ = writeln!(out, "errors        {}", r.errors);
    for e in &r.error_samples {
        let _ = writeln!(out, "  {e}");
    }
    usage_lines(&mut out, &r.tool, &r.server, "acked vote");
    out.trim_end().to_string()
}
