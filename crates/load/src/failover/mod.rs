//! `convene-load failover`: chat through a cluster, `kill -9` the room's owner node, and time the recovery.
//!
//! Sessions are spread round-robin over the nodes (`--url A,B,C`). One sender on a node that
//! does not own the room sends chat with request ids at `--rate`. After `--before` seconds the
//! tool finds the owner (`GET /api/v1/nodes`, `rooms_owned`) and sends SIGKILL to its process
//! (`--pids`, in `--url` order). Sessions whose socket drops reconnect with `resume` to the
//! next node; the sender does too and resends what was not acknowledged. Reported: kill to the
//! first ack of a command sent after the kill, kill to every dropped session resumed, and the
//! checks that matter: every acknowledged request id reached every receiver exactly once, and
//! each receiver's `seq` only increases (a client sees a subsequence of the room's events, so
//! gaps are normal; a repeat or a step back is not).
//!
//! `receiver.rs` and `sender.rs` are the sessions, `shared.rs` what they share (and the reconnect to
//! the next node), `requests.rs` the numbered commands, `owner.rs` finding and killing the owner.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use self::owner::{find_owner, kill};
use self::receiver::{receiver, Seen};
use self::sender::{sender, Sent};
use self::shared::Shared;
use super::chat::client::{base_urls, Endpoint};
use super::chat::samples::histogram;
use super::chat::{check_common, print_out, Common, Latency, Target};
use super::LoadError;

mod owner;
mod receiver;
mod requests;
mod sender;
mod shared;

/// After the sender stops and its acks are in, wait this long for the last deliveries.
const DELIVERY_DRAIN: Duration = Duration::from_secs(1);

#[derive(clap::Args, Debug, Clone)]
pub struct FailoverArgs {
    #[command(flatten)]
    pub common: Common,
    /// The nodes' process ids, in `--url` order: the room's owner gets SIGKILL.
    #[arg(long, value_delimiter = ',', required = true)]
    pub pids: Vec<u32>,
    /// The API key, for `GET /api/v1/nodes`; defaults to $CONVENE_API_KEY.
    #[arg(long)]
    pub api_key: Option<String>,
    /// Chat messages per second from the sender.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Seconds of sending before the kill.
    #[arg(long, default_value_t = 2.0)]
    pub before: f64,
    /// Seconds of sending after the recovery.
    #[arg(long, default_value_t = 2.0)]
    pub after: f64,
    /// Give up waiting for the recovery after this many seconds.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// Send a command again (same request id) when no reply came for this long; 0: never.
    #[arg(long, default_value_t = 3000)]
    pub resend_after_ms: u64,
}

impl FailoverArgs {
    /// Parses command-line style arguments (without the subcommand), e.g. for tests.
    pub fn from_args<I, T>(args: I) -> Result<FailoverArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString>,
    {
        use clap::{Args, FromArgMatches};
        let command = FailoverArgs::augment_args(clap::Command::new("failover"));
        let matches = command.try_get_matches_from(
            std::iter::once(std::ffi::OsString::from("failover"))
                .chain(args.into_iter().map(Into::into)),
        )?;
        FailoverArgs::from_arg_matches(&matches)
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FailoverReport {
    pub nodes: Vec<String>,
    /// The killed node (index into `nodes`) and its id.
    pub owner: usize,
    pub owner_id: Option<String>,
    /// False when no node listed the room (no cluster): the first node was killed instead.
    pub owner_found: bool,
    pub sender_node: usize,
    pub clients: usize,
    pub connected: u64,
    pub ramp_s: f64,
    /// Chat commands sent, first sends only.
    pub sent: u64,
    /// Commands sent again after a reconnect or an `unavailable` error.
    pub resent: u64,
    /// Commands sent again because no reply came within `--resend-after-ms`.
    pub resent_unanswered: u64,
    pub acked: u64,
    /// Commands never acknowledged by the end.
    pub unacked: u64,
    /// Kill to the first ack of a command sent after the kill.
    pub first_ack_ms: Option<f64>,
    /// Sessions on the killed node when it died.
    pub dropped: u64,
    /// Of those: got `resumed` on a survivor.
    pub resumed: u64,
    /// Got a fresh `welcome` instead (resume refused).
    pub fresh: u64,
    /// Could not reconnect before the timeout.
    pub failed: u64,
    /// Kill to the last dropped session back (resumed or fresh); absent if any failed.
    pub all_resumed_ms: Option<f64>,
    /// Per dropped session, from its socket closing to its `resumed`.
    pub resume_latency: Latency,
    /// Receivers whose stream is checked (connected at the end and never given a fresh welcome).
    pub receivers_checked: u64,
    /// (receiver, acknowledged request) pairs the receiver never saw.
    pub lost_acked: u64,
    /// Chat messages a receiver saw more than once (the same request id).
    pub duplicates: u64,
    /// Events whose `seq` was not above the previous one the receiver saw (repeats, steps back).
    pub seq_regressions: u64,
    pub errors: u64,
    pub error_samples: Vec<String>,
}

pub async fn run(args: FailoverArgs) -> Result<(), LoadError> {
    let report = failover(&args).await?;
    if args.common.json {
        print_out(&serde_json::to_string(&report).expect("reports serialise"));
    } else {
        print_out(&text(&report));
    }
    if report.acked == 0 {
        return Err(LoadError::Setup("no chat command was acknowledged".into()));
    }
    Ok(())
}

// --- The run ---------------------------------------------------------------------

pub async fn failover(args: &FailoverArgs) -> Result<FailoverReport, LoadError> {
    let common = &args.common;
    check_common(common)?;
    let ep = Endpoint::new(common, Target::Convene)?;
    let bases = base_urls(&common.url)?;
    check_args(args, bases.len())?;
    let api_key = args
        .api_key
        .clone()
        .or_else(|| std::env::var("CONVENE_API_KEY").ok())
        .unwrap_or_default();

    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared::new(ep, common.connect_concurrency, stop_rx));
    let n = common.clients;
    let ramp_started = Instant::now();
    let receivers = start_receivers(&shared, common).await;
    let ramp_s = ramp_started.elapsed().as_secs_f64();
    let connected = shared.connected.load(Ordering::Relaxed);
    if connected == 0 {
        let _ = stop_tx.send(true);
        return Err(LoadError::Setup(format!(
            "no session connected: {:?}",
            shared.errors.samples()
        )));
    }
    tokio::time::sleep(Duration::from_millis(common.settle_ms)).await;

    let found = find_owner(&bases, &api_key, &common.room).await;
    let (owner, owner_id) = match &found {
        Some((at, id)) => (*at, Some(id.clone())),
        None => {
            tracing::warn!("no node lists the room in rooms_owned: killing the first node");
            (0, None)
        }
    };
    let sender_node = (owner + 1) % bases.len();
    let (send_tx, send_rx) = watch::channel(false);
    let resend_after =
        (args.resend_after_ms > 0).then(|| Duration::from_millis(args.resend_after_ms));
    let sending = tokio::spawn(sender(
        shared.clone(),
        sender_node,
        args.rate,
        resend_after,
        send_rx,
    ));
    tokio::time::sleep(Duration::from_secs_f64(args.before)).await;
    let killed_at = kill_owner(&shared, args, owner)?;
    wait_recovered(&shared, killed_at + Duration::from_secs_f64(args.timeout)).await;
    tokio::time::sleep(Duration::from_secs_f64(args.after)).await;
    let _ = send_tx.send(true);
    let sent = sending.await.unwrap_or_default();
    tokio::time::sleep(DELIVERY_DRAIN).await;
    let _ = stop_tx.send(true);
    let mut seen = Vec::with_capacity(n);
    for r in receivers {
        if let Ok(s) = r.await {
            seen.push(s);
        }
    }

    let mut report = FailoverReport {
        nodes: bases,
        owner,
        owner_id,
        owner_found: found.is_some(),
        sender_node,
        clients: n,
        connected,
        ramp_s,
        sent: sent.sent,
        resent: sent.resent,
        resent_unanswered: sent.resent_unanswered,
        acked: sent.acked.len() as u64,
        unacked: sent.unacked,
        first_ack_ms: shared
            .first_ack
            .lock()
            .expect("ack lock")
            .map(|t| t.duration_since(killed_at).as_secs_f64() * 1000.0),
        ..Default::default()
    };
    tally(&mut report, &seen, &sent, killed_at);
    report.errors = shared.errors.count();
    report.error_samples = shared.errors.samples();
    Ok(report)
}

fn check_args(args: &FailoverArgs, nodes: usize) -> Result<(), LoadError> {
    if nodes < 2 {
        return Err(LoadError::Setup(
            "--url needs at least two nodes (comma separated)".into(),
        ));
    }
    if args.pids.len() != nodes {
        return Err(LoadError::Setup(format!(
            "--pids has {} process ids for {} URLs",
            args.pids.len(),
            nodes
        )));
    }
    let positive = |x: f64| x > 0.0 && x.is_finite();
    let not_negative = |x: f64| x == 0.0 || positive(x);
    if !positive(args.rate)
        || !positive(args.timeout)
        || !not_negative(args.before)
        || !not_negative(args.after)
    {
        return Err(LoadError::Setup(
            "--rate and --timeout must be positive, --before and --after not negative".into(),
        ));
    }
    Ok(())
}

/// Starts the receivers at the ramp rate and waits (at most 60 s) until each connected or gave up.
async fn start_receivers(shared: &Arc<Shared>, common: &Common) -> Vec<JoinHandle<Seen>> {
    let n = common.clients;
    let ramp_started = Instant::now();
    let per_sec = if common.ramp_per_sec > 0.0 {
        common.ramp_per_sec
    } else {
        f64::INFINITY
    };
    let mut receivers = Vec::with_capacity(n);
    for i in 0..n {
        let due = ramp_started + Duration::from_secs_f64(i as f64 / per_sec);
        tokio::time::sleep_until(due).await;
        receivers.push(tokio::spawn(receiver(shared.clone(), i)));
    }
    let settle_limit = Instant::now() + Duration::from_secs(60);
    while shared.settled.load(Ordering::Relaxed) < n as u64 && Instant::now() < settle_limit {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    receivers
}

/// The kill: from here, sessions that drop count as dropped by it. Returns its moment.
fn kill_owner(shared: &Shared, args: &FailoverArgs, owner: usize) -> Result<Instant, LoadError> {
    shared.armed.store(true, Ordering::Relaxed);
    let killed_at = Instant::now();
    *shared.deadline.lock().expect("deadline lock") =
        Some(killed_at + Duration::from_secs_f64(args.timeout));
    *shared.killed.lock().expect("kill lock") = Some(killed_at);
    kill(args.pids[owner])?;
    Ok(killed_at)
}

/// Recovered: every dropped session is back and a command sent after the kill was acked.
async fn wait_recovered(shared: &Shared, deadline: Instant) {
    // Sockets of the killed node close at once (the kernel resets them): give them a moment to notice.
    tokio::time::sleep(Duration::from_millis(200)).await;
    while Instant::now() < deadline {
        let dropped = shared.dropped.load(Ordering::Relaxed);
        let acked = shared.first_ack.lock().expect("ack lock").is_some();
        if acked && shared.back.load(Ordering::Relaxed) >= dropped {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Adds up the receivers: who dropped and came back how, and what the checked ones missed or saw twice.
fn tally(report: &mut FailoverReport, seen: &[Seen], sent: &Sent, killed_at: Instant) {
    let mut hist = histogram();
    let mut last_back = None::<Instant>;
    for s in seen {
        if s.dropped {
            report.dropped += 1;
            if s.failed {
                report.failed += 1;
            } else if s.fresh {
                report.fresh += 1;
            } else if s.resumed {
                report.resumed += 1;
            }
            if s.resumed && !s.fresh {
                if let Some(d) = s.reconnect {
                    hist.saturating_record((d.as_micros() as u64).max(1));
                }
            }
            last_back = last_back.max(s.back_at);
        }
        if !s.online || s.fresh {
            continue;
        }
        report.receivers_checked += 1;
        report.seq_regressions += s.regressions;
        report.lost_acked += sent
            .acked
            .iter()
            .filter(|n| !s.requests.contains_key(n))
            .count() as u64;
        report.duplicates += s
            .requests
            .values()
            .map(|&k| u64::from(k.saturating_sub(1)))
            .sum::<u64>();
    }
    report.resume_latency = Latency::of(&hist);
    if report.failed == 0 {
        report.all_resumed_ms =
            Some(last_back.map_or(0.0, |t| t.duration_since(killed_at).as_secs_f64() * 1000.0));
    }
}

fn text(r: &FailoverReport) -> String {
    use std::fmt::Write;
    let ms = |x: Option<f64>| x.map_or("never".to_string(), |v| format!("{v:.0} ms"));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "failover: {} nodes, {} of {} sessions connected in {:.1}s",
        r.nodes.len(),
        r.connected,
        r.clients,
        r.ramp_s
    );
    let _ = writeln!(
        out,
        "killed        node {} ({}){}; sender on node {}",
        r.owner,
        r.nodes[r.owner],
        match (&r.owner_id, r.owner_found) {
            (Some(id), true) => format!(", id {id}, the room's owner"),
            _ => ", NOT known to own the room (no /api/v1/nodes answer)".to_string(),
        },
        r.sender_node
    );
    let _ = writeln!(out, "first ack     {} after the kill", ms(r.first_ack_ms));
    let _ = writeln!(
        out,
        "dropped       {}: {} resumed, {} fresh welcome, {} failed; all back {} after the kill",
        r.dropped,
        r.resumed,
        r.fresh,
        r.failed,
        ms(r.all_resumed_ms)
    );
    let l = &r.resume_latency;
    let _ = writeln!(
        out,
        "per session   drop to resumed p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms",
        l.p50_ms, l.p99_ms, l.max_ms
    );
    let _ = writeln!(
        out,
        "chat          {} sent, {} resent (and {} after no reply), {} acked, {} never acked",
        r.sent, r.resent, r.resent_unanswered, r.acked, r.unacked
    );
    let _ = writeln!(
        out,
        "checked       {} receivers: {} acked messages lost, {} duplicates, {} seq regressions",
        r.receivers_checked, r.lost_acked, r.duplicates, r.seq_regressions
    );
    let _ = writeln!(out, "errors        {}", r.errors);
    for e in &r.error_samples {
        let _ = writeln!(out, "  {e}");
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_must_match_urls() {
        let a = FailoverArgs::from_args([
            "--url",
            "ws://127.0.0.1:1,ws://127.0.0.1:2",
            "--pids",
            "1,2",
        ])
        .unwrap();
        assert_eq!(a.pids, [1, 2]);
        assert!(FailoverArgs::from_args(["--url", "ws://127.0.0.1:1"]).is_err());
    }
}
