//! One SFU run in steps: tokens, the publisher, the subscribers, the wait until they connect, the measured window, and the teardown.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use convene_signaling::Role;
use str0m::media::{Direction, MediaKind};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::figures::{figures, round2, Window};
use super::http::{http, location_path, parse_url, sfu_metrics};
use super::peer::{negotiate, Job, Peer};
use super::stats::{Snap, SubStats, CONNECTED, FAILED};
use super::synthetic::{Synthetic, KEYFRAME_EVERY};
use super::{Publish, SfuArgs, SfuReport, Transport, MAX_DURATION_S, MAX_SUBSCRIBERS};
use crate::probe::proc_cpu_us;
use crate::LoadError;
use convene::auth::TokenKeys;

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
    let mut run = Run {
        args: &args,
        host,
        prefix,
        stop: stop_rx,
        tasks: JoinSet::new(),
        locations: Vec::new(),
        frames: Arc::new(AtomicU64::new(0)),
        sent: Arc::new(AtomicU64::new(0)),
    };
    // The publisher first, so subscribers find its tracks.
    if args.publish == Some(Publish::Synthetic) {
        run.publish(&toks.publisher).await?;
    }
    let started = Instant::now();
    let stats = run.subscribe(&toks);
    run.wait_connected(&stats, started).await;
    // Let keyframe requests settle before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    if args.publish.is_some() {
        run.wait_mid_gop().await;
    }
    let window = run.window(&stats, duration).await;
    let _ = stop_tx.send(true);
    run.end_sessions().await;
    Ok(figures(&args, &stats, &window))
}

/// The run's peers and where they talk to.
struct Run<'a> {
    args: &'a SfuArgs,
    host: String,
    prefix: String,
    stop: watch::Receiver<bool>,
    /// Every peer's task; a subscriber's returns its WHEP resource, to delete at the end.
    tasks: JoinSet<Option<String>>,
    /// Resources to delete at the end besides the subscribers' (the publisher's).
    locations: Vec<String>,
    /// The publisher's frame index and RTP packets sent (retransmissions included).
    frames: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
}

/// Where subscribers ask for the stream, and how they reach the server.
#[derive(Clone)]
struct Whep {
    host: String,
    path: String,
    drop_every: u64,
    transport: Transport,
    /// `--connect-concurrency` slots, each held until its peer connects.
    gate: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
}

impl Run<'_> {
    fn say(&self, s: String) {
        if !self.args.json {
            println!("{s}");
        }
    }

    /// Publishes the synthetic stream through WHIP and waits until its first frames are out.
    async fn publish(&mut self, token: &str) -> Result<(), LoadError> {
        let args = self.args;
        let syn = Synthetic::new(args.bitrate_kbps, self.frames.clone(), self.sent.clone());
        let mut p = Peer::new(false, Job::Publisher(Box::new(syn)))
            .await
            .map_err(LoadError::Setup)?;
        let path = format!("{}/whip/{}", self.prefix, args.room);
        let loc = negotiate(
            &mut p,
            &self.host,
            &path,
            token,
            &[
                (MediaKind::Audio, Direction::SendOnly),
                (MediaKind::Video, Direction::SendOnly),
            ],
        )
        .await
        .map_err(LoadError::Setup)?;
        self.locations
            .extend(loc.map(|l| location_path(&self.prefix, &l)));
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            if let Err(e) = p.drive(stop).await {
                tracing::warn!(error = %e, "publisher stopped");
            }
            None::<String>
        });
        // Let it connect and publish before subscribers ask for its tracks.
        let t0 = Instant::now();
        while self.frames.load(Ordering::Relaxed) == 0 {
            if t0.elapsed() > Duration::from_secs(10) {
                return Err(LoadError::Setup("publisher did not connect in 10 s".into()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.say(format!(
            "publisher connected in {} ms",
            t0.elapsed().as_millis()
        ));
        Ok(())
    }

    /// Starts every subscriber, `connect_concurrency` at a time; returns their counters.
    fn subscribe(&mut self, toks: &Tokens) -> Vec<Arc<SubStats>> {
        let args = self.args;
        let stats: Vec<Arc<SubStats>> = (0..args.subscribers)
            .map(|_| Arc::new(SubStats::default()))
            .collect();
        let whep = Whep {
            host: self.host.clone(),
            path: format!("{}/whep/{}", self.prefix, args.room),
            drop_every: args.drop_every,
            transport: args.transport,
            gate: Arc::new(Semaphore::new(args.connect_concurrency.max(1))),
            stop: self.stop.clone(),
        };
        for (i, st) in stats.iter().enumerate() {
            let token = (toks.viewer)(i);
            self.tasks
                .spawn(subscriber(whep.clone(), i, st.clone(), token));
        }
        stats
    }

    /// Waits until every subscriber connected or failed, or `--connect-timeout`.
    async fn wait_connected(&self, stats: &[Arc<SubStats>], started: Instant) {
        let connect_limit = Duration::from_secs(self.args.connect_timeout.max(1));
        let mut last_print = Instant::now();
        loop {
            let (mut up, mut failed) = (0, 0);
            for s in stats {
                match s.state.load(Ordering::Relaxed) {
                    CONNECTED => up += 1,
                    FAILED => failed += 1,
                    _ => {}
                }
            }
            if up + failed == stats.len() || started.elapsed() > connect_limit {
                self.say(format!(
                    "subscribers: {up} connected, {failed} failed, {} pending after {:.1} s",
                    stats.len() - up - failed,
                    started.elapsed().as_secs_f64()
                ));
                break;
            }
            if last_print.elapsed() >= Duration::from_secs(1) {
                self.say(format!(
                    "connecting: {up}/{} up, {failed} failed",
                    stats.len()
                ));
                last_print = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Opens the window mid-GOP: a periodic keyframe is a burst of packets, and one split
    /// by a window edge (sent inside, forwarded after) would skew delivery by ~2%.
    async fn wait_mid_gop(&self) {
        let mid_gop = |f: u64| f % u64::from(KEYFRAME_EVERY) == u64::from(KEYFRAME_EVERY / 2);
        let until = Instant::now() + Duration::from_secs(3);
        while !mid_gop(self.frames.load(Ordering::Relaxed)) && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The measurement window: counters on both sides, and one progress line per second.
    async fn window(&self, stats: &[Arc<SubStats>], duration: Duration) -> Window {
        let pid = self.args.server_pid.map(|p| p.to_string());
        let snap_all = || stats.iter().map(|s| s.snap()).collect::<Vec<_>>();
        let metrics_before = sfu_metrics(&self.host, &self.prefix).await;
        let before = snap_all();
        let server_cpu_before = pid.as_deref().and_then(proc_cpu_us);
        let tool_cpu_before = proc_cpu_us("self");
        let frames_before = self.frames.load(Ordering::Relaxed);
        let sent_before = self.sent.load(Ordering::Relaxed);
        let w0 = Instant::now();
        let per_second = self
            .per_second(stats.len(), &before, snap_all, duration)
            .await;
        let seconds = w0.elapsed().as_secs_f64();
        let server_cpu_after = pid.as_deref().and_then(proc_cpu_us);
        let tool_cpu_after = proc_cpu_us("self");
        let after = snap_all();
        let metrics_after = sfu_metrics(&self.host, &self.prefix).await;
        Window {
            seconds,
            before,
            after,
            server_cpu: (server_cpu_before, server_cpu_after),
            tool_cpu: (tool_cpu_before, tool_cpu_after),
            metrics: (metrics_before, metrics_after),
            frames: self.frames.load(Ordering::Relaxed) - frames_before,
            published: self.sent.load(Ordering::Relaxed) - sent_before,
            per_second,
        }
    }

    /// Packets and loss of each second of the window, printed and kept for the JSON.
    async fn per_second(
        &self,
        subscribers: usize,
        start: &[Snap],
        snap_all: impl Fn() -> Vec<Snap>,
        duration: Duration,
    ) -> Vec<serde_json::Value> {
        let mut per_second = Vec::new();
        let mut prev = start.to_vec();
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + Duration::from_secs(1),
            Duration::from_secs(1),
        );
        for sec in 1..=duration.as_secs() {
            tick.tick().await;
            let now = snap_all();
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
            let per_sub = pk as f64 / subscribers.max(1) as f64;
            self.say(format!(
                "t={sec:>3}s packets={pk:>7}/s per_sub={per_sub:>7.1}/s loss={loss:.2}%"
            ));
            per_second.push(serde_json::json!({ "t": sec, "packets": pk, "per_subscriber": round2(per_sub), "loss_pct": round2(loss) }));
            prev = now;
        }
        per_second
    }

    /// Waits for every peer to stop, then deletes their resources on the server (best effort).
    async fn end_sessions(mut self) {
        let mut deletes = Vec::new();
        while let Some(r) = self.tasks.join_next().await {
            if let Ok(Some(loc)) = r {
                deletes.push(location_path(&self.prefix, &loc));
            }
        }
        deletes.extend(self.locations);
        let mut del = JoinSet::new();
        for chunk in deletes.chunks(32) {
            let host = self.host.clone();
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
    }
}

/// One subscriber: WHEP, connect (holding a gate slot), then receive until stopped. Returns
/// its resource's Location.
async fn subscriber(whep: Whep, i: usize, st: Arc<SubStats>, token: String) -> Option<String> {
    let permit = whep.gate.acquire_owned().await.ok();
    let posted = Instant::now();
    let job = Job::Subscriber {
        stats: st.clone(),
        posted,
    };
    let made = match whep.transport {
        Transport::Udp => Peer::new(true, job).await,
        Transport::Tcp => Ok(Peer::new_tcp(true, job)),
    };
    let mut p = match made {
        Ok(p) => p,
        Err(e) => {
            st.state.store(FAILED, Ordering::Relaxed);
            tracing::warn!(subscriber = i, error = %e, "socket");
            return None;
        }
    };
    p.drop_every(whep.drop_every);
    let media = [
        (MediaKind::Audio, Direction::RecvOnly),
        (MediaKind::Video, Direction::RecvOnly),
    ];
    let loc = match negotiate(&mut p, &whep.host, &whep.path, &token, &media).await {
        Ok(l) => l,
        Err(e) => {
            st.state.store(FAILED, Ordering::Relaxed);
            tracing::warn!(subscriber = i, error = %e, "whep");
            return None;
        }
    };
    // Hold the slot until connected (DTLS is the server's costly part) or 10 s.
    let connected = p
        .await_connected(whep.stop.clone(), Duration::from_secs(10))
        .await;
    if let Err(e) = connected {
        tracing::warn!(subscriber = i, error = %e, "connect");
    }
    drop(permit);
    if let Err(e) = p.drive(whep.stop).await {
        tracing::debug!(subscriber = i, error = %e, "subscriber stopped");
    }
    if st.state.load(Ordering::Relaxed) != CONNECTED {
        st.state.store(FAILED, Ordering::Relaxed);
    }
    loc
}
