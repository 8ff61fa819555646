//! The figures of an SFU run from the counters on either side of its window: the JSON `--json` prints, and the text lines.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::stats::{Snap, SubStats, CONNECTED};
use super::{SfuArgs, SfuReport};

/// What the measured window saw: subscriber counters, CPU (microseconds) and `/metrics` on
/// both sides, and the publisher's output within it.
pub(super) struct Window {
    pub(super) seconds: f64,
    pub(super) before: Vec<Snap>,
    pub(super) after: Vec<Snap>,
    pub(super) server_cpu: (Option<u64>, Option<u64>),
    pub(super) tool_cpu: (Option<u64>, Option<u64>),
    pub(super) metrics: (BTreeMap<String, f64>, BTreeMap<String, f64>),
    /// Frames the publisher sent in the window.
    pub(super) frames: u64,
    /// RTP packets the publisher sent in the window: what each subscriber should get.
    pub(super) published: u64,
    pub(super) per_second: Vec<serde_json::Value>,
}

/// All subscribers' receipts over the window.
#[derive(Default)]
struct Totals {
    packets: u64,
    bytes: u64,
    expected: u64,
    distinct: u64,
    /// Subscribers that received anything, under 1% loss, and also >= 99% of what was published.
    receiving: usize,
    ok: usize,
    held: usize,
    /// The worst subscriber's loss, as a fraction.
    worst: f64,
}

impl Totals {
    fn of(w: &Window) -> Totals {
        let mut t = Totals::default();
        for (a, b) in w.before.iter().zip(&w.after) {
            let (pk, ex, di) = (
                b.packets - a.packets,
                b.expected - a.expected,
                b.distinct - a.distinct,
            );
            t.packets += pk;
            t.bytes += b.bytes - a.bytes;
            t.expected += ex;
            t.distinct += di;
            if pk > 0 {
                t.receiving += 1;
                let loss = ex.saturating_sub(di) as f64 / ex.max(1) as f64;
                t.worst = t.worst.max(loss);
                if loss < 0.01 {
                    t.ok += 1;
                    if w.published == 0 || (pk as f64) >= 0.99 * w.published as f64 {
                        t.held += 1;
                    }
                }
            }
        }
        t
    }

    fn loss_pct(&self) -> f64 {
        if self.expected > 0 {
            100.0 * self.expected.saturating_sub(self.distinct) as f64 / self.expected as f64
        } else {
            0.0
        }
    }
}

/// Computes the figures, prints them as text unless `--json`, and returns the report.
pub(super) fn figures(args: &SfuArgs, stats: &[Arc<SubStats>], w: &Window) -> SfuReport {
    let n = stats.len();
    let connected = stats
        .iter()
        .filter(|s| s.state.load(Ordering::Relaxed) == CONNECTED)
        .count();
    let t = Totals::of(w);
    let loss_pct = t.loss_pct();
    let ttfp = time_to_first_packet(stats);
    let server_cpu_us = match w.server_cpu {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let us_per_packet = server_cpu_us
        .filter(|_| t.packets > 0)
        .map(|c| round2(c as f64 / t.packets as f64));
    let (m0, m1) = &w.metrics;
    let metrics_delta: BTreeMap<String, f64> = m1
        .iter()
        .map(|(k, v)| (k.clone(), v - m0.get(k).copied().unwrap_or(0.0)))
        .collect();
    let window = w.seconds;
    let (packets, published) = (t.packets, w.published);
    let json = serde_json::json!({
        "room": args.room,
        "subscribers": n,
        "connected": connected,
        "receiving": t.receiving,
        "publisher": args.publish.is_some(),
        "window_s": round2(window),
        "packets": packets,
        "packets_per_s": round2(packets as f64 / window),
        "packets_per_s_per_subscriber": round2(packets as f64 / window / n.max(1) as f64),
        "mbit_per_s": round2(t.bytes as f64 * 8.0 / window / 1e6),
        "loss_pct": round2(loss_pct * 100.0) / 100.0,
        "worst_subscriber_loss_pct": round2(t.worst * 100.0),
        "subscribers_under_1pct_loss": t.ok,
        "subscribers_held": t.held,
        "publisher_packets_per_s": round2(published as f64 / window),
        "delivery_pct": (published > 0).then(|| round2(100.0 * packets as f64 / (published as f64 * n.max(1) as f64))),
        "time_to_first_packet_ms": {
            "count": ttfp.len(),
            "p50": round2(percentile(&ttfp, 0.5)),
            "p99": round2(percentile(&ttfp, 0.99)),
            "max": round2(ttfp.last().copied().unwrap_or(0.0)),
        },
        "publisher_frames_per_s": round2(w.frames as f64 / window),
        "server_cpu_us": server_cpu_us,
        "server_cpu_us_per_packet": us_per_packet,
        "server_cpu_pct": server_cpu_us.map(|c| round2(c as f64 / window / 1e4)),
        "tool_cpu_pct": match w.tool_cpu { (Some(a), Some(b)) => Some(round2((b - a) as f64 / window / 1e4)), _ => None },
        "server_metrics_delta": metrics_delta,
        "per_second": w.per_second,
    });
    if !args.json {
        print_text(w, &t, n, connected, &ttfp);
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
    SfuReport {
        connected,
        packets,
        loss_pct,
        json,
    }
}

/// Milliseconds from the WHEP request to the first RTP packet of each subscriber that got one, sorted.
fn time_to_first_packet(stats: &[Arc<SubStats>]) -> Vec<f64> {
    let mut ttfp: Vec<f64> = stats
        .iter()
        .filter_map(|s| match s.first_packet_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some((us - 1) as f64 / 1000.0),
        })
        .collect();
    ttfp.sort_by(|a, b| a.total_cmp(b));
    ttfp
}

/// The window, subscriber and first-packet lines of the text output.
fn print_text(w: &Window, t: &Totals, n: usize, connected: usize, ttfp: &[f64]) {
    let (window, packets, published) = (w.seconds, t.packets, w.published);
    println!(
        "window {:.1} s: {} packets ({:.0}/s, {:.1}/s per subscriber, {:.2} Mbit/s), loss {:.3}%, worst {:.2}%",
        window,
        packets,
        packets as f64 / window,
        packets as f64 / window / n.max(1) as f64,
        t.bytes as f64 * 8.0 / window / 1e6,
        t.loss_pct(),
        t.worst * 100.0
    );
    println!(
        "subscribers: {n} started, {connected} connected, {} receiving, {} under 1% loss, {} held (also >= 99% of what was published)",
        t.receiving, t.ok, t.held
    );
    if published > 0 {
        println!(
            "publisher: {:.0} RTP packets/s; subscribers got {:.1}% of them",
            published as f64 / window,
            100.0 * packets as f64 / (published as f64 * n.max(1) as f64)
        );
    }
    println!(
        "time to first packet: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} of {n})",
        percentile(ttfp, 0.5),
        percentile(ttfp, 0.99),
        ttfp.last().copied().unwrap_or(0.0),
        ttfp.len()
    );
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub(super) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
