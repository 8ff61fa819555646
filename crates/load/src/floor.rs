//! `convene-load udp-floor`: what the kernel alone charges a sender per datagram on this machine.
//!
//! The SFU benchmark divides the server's CPU by the packets its subscribers received;
//! part of that is the kernel sending one datagram per subscriber (on loopback, the
//! receiving half runs in the sender's context too). This tool sends the same traffic
//! with no SFU at all: one thread sends `--size`-byte datagrams to `--receivers` UDP
//! sockets (tokio tasks on 127.0.0.1, like `load sfu` subscribers) at
//! `--packets-per-second` per receiver, through the SFU's own send path (`sendmmsg`
//! batches of 64) and, side by side, one `sendto` per datagram. It reports the sending
//! thread's CPU per datagram: the floor under the SFU's figure.

use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use super::LoadError;
use convene_sfu::SendBatch;

#[derive(clap::Args, Debug, Clone)]
pub struct FloorArgs {
    /// Receiving sockets.
    #[arg(long, default_value_t = 200)]
    pub receivers: usize,
    /// Datagrams per second to each receiver (a ~1.8 Mbit/s VP8 + Opus stream is ~270).
    #[arg(long, default_value_t = 270)]
    pub packets_per_second: u64,
    /// Datagram size, bytes.
    #[arg(long, default_value_t = 1200)]
    pub size: usize,
    /// Seconds per send mode.
    #[arg(long, default_value_t = 5)]
    pub duration: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// One send mode's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FloorRun {
    pub mode: &'static str,
    pub datagrams: u64,
    pub received: u64,
    pub send_calls: u64,
    pub sender_cpu_us_per_datagram: f64,
}

const MAX_RECEIVERS: usize = 5_000;

pub async fn run(args: FloorArgs) -> Result<(), LoadError> {
    let runs = measure(args.clone()).await?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "receivers": args.receivers, "runs": runs })
        );
    } else {
        println!(
            "{:<10} {:>10} {:>10} {:>10} {:>12}",
            "mode", "datagrams", "received", "calls", "us/datagram"
        );
        for r in &runs {
            println!(
                "{:<10} {:>10} {:>10} {:>10} {:>12.2}",
                r.mode, r.datagrams, r.received, r.send_calls, r.sender_cpu_us_per_datagram
            );
        }
    }
    Ok(())
}

/// Runs `sendmmsg` then `sendto` against the same receivers.
pub async fn measure(args: FloorArgs) -> Result<Vec<FloorRun>, LoadError> {
    if args.receivers == 0 || args.receivers > MAX_RECEIVERS {
        return Err(LoadError::Setup(format!(
            "--receivers must be 1..={MAX_RECEIVERS}"
        )));
    }
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut addrs = Vec::with_capacity(args.receivers);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.receivers {
        let sock = UdpSocket::bind("127.0.0.1:0").await?;
        let _ = socket2::SockRef::from(&sock).set_recv_buffer_size(1 << 20);
        addrs.push(sock.local_addr()?);
        let received = received.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            let mut buf = vec![0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(Ok(_)) =
                    tokio::time::timeout(Duration::from_millis(100), sock.recv(&mut buf)).await
                {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    let mut runs = Vec::new();
    for batched in [true, false] {
        let before = received.load(Ordering::Relaxed);
        let a = args.clone();
        let to = addrs.clone();
        let (datagrams, send_calls, cpu) =
            tokio::task::spawn_blocking(move || send(&a, &to, batched))
                .await
                .map_err(|e| LoadError::Setup(e.to_string()))??;
        // Let the receivers drain.
        tokio::time::sleep(Duration::from_millis(300)).await;
        runs.push(FloorRun {
            mode: if batched { "sendmmsg" } else { "sendto" },
            datagrams,
            received: received.load(Ordering::Relaxed) - before,
            send_calls,
            sender_cpu_us_per_datagram: cpu.as_secs_f64() * 1e6 / datagrams.max(1) as f64,
        });
    }
    stop.store(true, Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}
    Ok(runs)
}

/// Paces rounds of one datagram per receiver; returns datagrams, calls and thread CPU.
fn send(
    args: &FloorArgs,
    to: &[SocketAddr],
    batched: bool,
) -> Result<(u64, u64, Duration), LoadError> {
    let socket = StdUdpSocket::bind("127.0.0.1:0")?;
    let payload = vec![0x80u8; args.size.clamp(12, 1500)];
    let interval = Duration::from_secs_f64(1.0 / args.packets_per_second.max(1) as f64);
    let end = Instant::now() + Duration::from_secs(args.duration.max(1));
    let mut batch = SendBatch::default();
    let (mut datagrams, mut calls) = (0u64, 0u64);
    let cpu0 = thread_cpu()?;
    let mut next = Instant::now();
    while Instant::now() < end {
        for addr in to {
            if batched {
                let mut buf = batch.buffer();
                buf.extend_from_slice(&payload);
                batch.push(&socket, buf, *addr);
            } else {
                calls += 1;
                if socket.send_to(&payload, addr).is_ok() {
                    datagrams += 1;
                }
            }
        }
        if batched {
            batch.flush(&socket);
        }
        next += interval;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let cpu = thread_cpu()?.saturating_sub(cpu0);
    if batched {
        datagrams = batch.datagrams;
        calls = batch.syscalls;
    }
    Ok((datagrams, calls, cpu))
}

/// This thread's user + system CPU time.
fn thread_cpu() -> Result<Duration, LoadError> {
    super::probe::proc_cpu_us("thread-self")
        .map(Duration::from_micros)
        .ok_or_else(|| LoadError::Setup("unreadable /proc/thread-self/stat".into()))
}
