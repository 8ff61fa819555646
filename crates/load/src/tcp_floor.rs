//! `convene-load tcp-floor`: what writing one WebSocket frame to each of N loopback TCP sockets costs with no hub at all.
//!
//! The hub benchmark divides the server's CPU by the chat deliveries its sessions received.
//! Part of that is the kernel: one `write` per session socket, and on loopback the receiving
//! half (the receiver's wake-up included) runs in the writer's context. This tool writes the
//! same traffic from one thread, with blocking writes and `TCP_NODELAY` like the server's
//! sockets: `--rate` messages per second, each a server text frame of about `--size` bytes to
//! every one of `--receivers` sockets read by tokio tasks in this process (like the chat
//! tool's sessions). It reports the writing thread's CPU per delivery, the floor under the
//! hub's figure, and the latency from the write of a message until each receiver has it.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::AsyncReadExt;

use super::chat::frames::{stamp, unix_nanos};
use super::chat::samples::histogram;
use super::chat::Latency;
use super::LoadError;

#[derive(clap::Args, Debug, Clone)]
pub struct TcpFloorArgs {
    /// Receiving sockets (the sessions of one room).
    #[arg(long, default_value_t = 5000)]
    pub receivers: usize,
    /// Messages per second; each goes to every receiver.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// Bytes of frame payload, about the size of a relayed chat event.
    #[arg(long, default_value_t = 200)]
    pub size: usize,
    /// Seconds of writing.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TcpFloorRun {
    pub receivers: usize,
    pub rate: f64,
    pub messages: u64,
    pub deliveries: u64,
    pub received: u64,
    pub writer_cpu_us_per_delivery: f64,
    /// From the first write of a message until each receiver read it.
    pub latency: Latency,
}

const MAX_RECEIVERS: usize = 20_000;

pub async fn run(args: TcpFloorArgs) -> Result<(), LoadError> {
    let run = measure(args.clone()).await?;
    if args.json {
        println!("{}", serde_json::to_string(&run).expect("serialisable"));
    } else {
        println!(
            "{} receivers, {} msg/s: {} deliveries ({} received), writer {:.2} us CPU per delivery, latency p50 {:.1} ms p99 {:.1} ms max {:.1} ms",
            run.receivers,
            run.rate,
            run.deliveries,
            run.received,
            run.writer_cpu_us_per_delivery,
            run.latency.p50_ms,
            run.latency.p99_ms,
            run.latency.max_ms
        );
    }
    Ok(())
}

/// A server-to-client WebSocket text frame (unmasked) carrying the send time like a chat event.
fn frame(seq: u64, pad: &str) -> Vec<u8> {
    let payload = format!(
        r#"{{"type":"event","seq":{seq},"event":{{"type":"chat_message","message":{{"id":{seq},"from":"p0","name":"P0","text":"t={}{pad}","at":0,"breakout":null}}}}}}"#,
        unix_nanos()
    );
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.push(0x81);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= u16::MAX as usize => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload.as_bytes());
    out
}

pub async fn measure(args: TcpFloorArgs) -> Result<TcpFloorRun, LoadError> {
    if args.receivers == 0 || args.receivers > MAX_RECEIVERS {
        return Err(LoadError::Setup(format!(
            "--receivers must be 1..={MAX_RECEIVERS}"
        )));
    }
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let latency = Arc::new(Mutex::new(histogram()));
    let mut writers = Vec::with_capacity(args.receivers);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.receivers {
        let client = tokio::net::TcpStream::connect(addr).await?;
        let (server_side, _) = listener.accept()?;
        server_side.set_nodelay(true)?;
        writers.push(server_side);
        let (received, stop, latency) = (received.clone(), stop.clone(), latency.clone());
        tasks.spawn(read_frames(client, received, stop, latency));
    }
    let pad = "x".repeat(args.size.saturating_sub(120));
    let a = args.clone();
    let (messages, cpu) = tokio::task::spawn_blocking(move || write(&a, &mut writers, &pad))
        .await
        .map_err(|e| LoadError::Setup(e.to_string()))??;
    let deliveries = messages * args.receivers as u64;
    let settle = Instant::now() + Duration::from_secs(5);
    while received.load(Ordering::Relaxed) < deliveries && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    tasks.abort_all();
    let latency = Latency::of(&latency.lock().expect("histogram lock"));
    Ok(TcpFloorRun {
        receivers: args.receivers,
        rate: args.rate,
        messages,
        deliveries,
        received: received.load(Ordering::Relaxed),
        writer_cpu_us_per_delivery: cpu.as_secs_f64() * 1e6 / deliveries.max(1) as f64,
        latency,
    })
}

/// Paces messages; each is written to every socket in turn. Returns messages and thread CPU.
fn write(
    args: &TcpFloorArgs,
    sockets: &mut [TcpStream],
    pad: &str,
) -> Result<(u64, Duration), LoadError> {
    let interval = Duration::from_secs_f64(1.0 / args.rate.max(0.001));
    let end = Instant::now() + Duration::from_secs_f64(args.duration.max(0.1));
    let cpu0 = thread_cpu();
    let mut next = Instant::now();
    let mut messages = 0u64;
    while Instant::now() < end {
        messages += 1;
        let bytes = frame(messages, pad);
        for socket in sockets.iter_mut() {
            socket.write_all(&bytes)?;
        }
        next += interval;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    Ok((messages, thread_cpu().saturating_sub(cpu0)))
}

/// Reads whole frames, counting them and recording their latency.
async fn read_frames(
    mut socket: tokio::net::TcpStream,
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    latency: Arc<Mutex<hdrhistogram::Histogram<u64>>>,
) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let Ok(n) = socket.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some((start, len)) = frame_bounds(&buf) {
            if buf.len() < start + len {
                break;
            }
            let text = String::from_utf8_lossy(&buf[start..start + len]);
            if let Some(sent) = stamp(&text) {
                let us = unix_nanos().saturating_sub(sent) / 1000;
                let _ = latency.lock().expect("histogram lock").record(us.max(1));
            }
            received.fetch_add(1, Ordering::Relaxed);
            buf.drain(..start + len);
        }
    }
}

/// Payload offset and length of the frame at the start of `buf`, once its header is complete.
fn frame_bounds(buf: &[u8]) -> Option<(usize, usize)> {
    let len = *buf.get(1)? & 0x7f;
    match len {
        126 => Some((4, u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize)),
        127 => {
            let bytes: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
            Some((10, u64::from_be_bytes(bytes) as usize))
        }
        n => Some((2, n as usize)),
    }
}

/// This thread's CPU time, at nanosecond resolution (`/proc` ticks are 10 ms).
fn thread_cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_back_with_their_stamp() {
        let bytes = frame(7, &"x".repeat(300));
        let (start, len) = frame_bounds(&bytes).unwrap();
        assert_eq!(start + len, bytes.len());
        let text = std::str::from_utf8(&bytes[start..]).unwrap();
        assert!(stamp(text).is_some());
        assert!(text.contains(r#""seq":7"#));
    }
}
