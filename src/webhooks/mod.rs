//! Webhooks: what happened in rooms, POSTed as JSON to configured URLs, signed with HMAC-SHA256 over a timestamp and the body, retried with backoff, never blocking a room.
//!
//! A room's actor holds a `RoomFeed` (in the core crate): a pure filter that turns the events it publishes into
//! webhook events (first sight of a question is `question.asked`, and so on) and hands them
//! to the node's [`Webhooks`], which never waits. Each URL has its own queue
//! ([`queue::Scheduler`]): per room, bounded in events and bytes, served round robin, with
//! one identity's join/leave churn coalesced, so one room's flood or a slow receiver drops
//! only that room's events (counted in `convene_webhook_deliveries_total{outcome="dropped"}`,
//! coalesced ones in `{outcome="coalesced"}`). Each URL has its own dispatcher task, and each
//! delivery its own task, so a slow receiver delays only itself.
//!
//! Each request carries:
//! - `Convene-Event-Id`: the same on every retry, for deduplication;
//! - `Convene-Timestamp`: Unix seconds when this attempt was signed;
//! - `Convene-Signature: v1=<hex>`: HMAC-SHA256 with the shared secret over
//!   `"{timestamp}.{body}"`. A receiver recomputes it, compares in constant time, and refuses
//!   timestamps more than five minutes from its clock (the replay window).

mod queue;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
pub use convene_core::room::feed::WebhookEvent;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, Semaphore};

use queue::{Counted, QueueLimits, Ready, Scheduler};

/// `[webhooks]` in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://host:port/path` receivers; empty: no webhooks.
    pub urls: Vec<String>,
    /// The HMAC key; required when `urls` is not empty.
    pub secret: String,
    /// Attempts per event and URL (the first included).
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubled for each later one.
    pub retry_base_ms: u64,
    /// Seconds one attempt may take (connect, send, status line).
    pub timeout_s: u64,
    /// Events waiting for dispatch (per URL, all rooms); beyond it the longest room queue
    /// drops its oldest, never waited for.
    pub queue: usize,
    /// Events, and bytes of them, waiting per room; beyond either the room drops its oldest
    /// presence events first.
    pub room_queue: usize,
    pub room_queue_bytes: usize,
    /// Deliveries of one room's events at once (per URL).
    pub in_flight_per_room: usize,
    /// One identity's join/leave: sent at once, then at most once per window (its latest
    /// state, nothing if unchanged); 0 turns coalescing off.
    pub presence_window_ms: u64,
    /// Presence events sent per identity and room per minute (0: no cap); later states wait.
    pub presence_per_minute: usize,
}

impl WebhookConfig {
    fn queue_limits(&self) -> QueueLimits {
        QueueLimits {
            total: self.queue,
            room_events: self.room_queue,
            room_bytes: self.room_queue_bytes,
            in_flight_per_room: self.in_flight_per_room,
            presence_window: Duration::from_millis(self.presence_window_ms),
            presence_per_minute: self.presence_per_minute,
        }
    }
}

/// The node's webhook queues, one per URL; cheap to clone. Disabled when no URL is configured.
#[derive(Clone, Default)]
pub struct Webhooks {
    lanes: Arc<[Arc<Lane>]>,
}

/// One URL: its queue and the dispatcher's wake-up.
struct Lane {
    target: Target,
    queue: Mutex<Scheduler>,
    wake: Notify,
}

impl Lane {
    fn queue(&self) -> MutexGuard<'_, Scheduler> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn record(counted: Counted) {
    for _ in 0..counted.dropped {
        crate::metrics::webhook_delivery("dropped");
    }
    for _ in 0..counted.coalesced {
        crate::metrics::webhook_delivery("coalesced");
    }
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Webhooks")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhooks.secret must be set when webhooks.urls is not empty")]
    NoSecret,
    #[error("webhook URL {0:?} is not http://host[:port]/path (TLS is not supported yet; use a local relay)")]
    BadUrl(String),
}

/// Where one URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    host_port: String,
    host: String,
    path: String,
}

fn parse_url(url: &str) -> Result<Target, WebhookError> {
    let bad = || WebhookError::BadUrl(url.to_string());
    let rest = url.strip_prefix("http://").ok_or_else(bad)?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if authority.is_empty() || authority.contains(['@', ' ']) || path.contains([' ', '\r', '\n']) {
        return Err(bad());
    }
    let host_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok(Target {
        host_port,
        host: authority.to_string(),
        path: if path.is_empty() {
            "/".into()
        } else {
            path.into()
        },
    })
}

/// `v1=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>`.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("v1={hex}")
}

impl WebhookConfig {
    /// Refuses what `start` would: URLs without a secret, URLs that are not plain HTTP.
    pub fn validate(&self) -> Result<(), WebhookError> {
        if !self.urls.is_empty() && self.secret.is_empty() {
            return Err(WebhookError::NoSecret);
        }
        self.urls.iter().try_for_each(|u| parse_url(u).map(drop))
    }
}

impl Webhooks {
    /// Starts the dispatcher (when URLs are configured). Needs a tokio runtime.
    pub fn start(config: &WebhookConfig) -> Result<Webhooks, WebhookError> {
        if config.urls.is_empty() {
            return Ok(Webhooks::default());
        }
        if config.secret.is_empty() {
            return Err(WebhookError::NoSecret);
        }
        let targets = config
            .urls
            .iter()
            .map(|u| parse_url(u))
            .collect::<Result<Vec<_>, _>>()?;
        let config = Arc::new(config.clone());
        let lanes: Vec<Arc<Lane>> = targets
            .into_iter()
            .map(|target| {
                let lane = Arc::new(Lane {
                    target,
                    queue: Mutex::new(Scheduler::new(config.queue_limits())),
                    wake: Notify::new(),
                });
                tokio::spawn(dispatch(lane.clone(), config.clone()));
                lane
            })
            .collect();
        Ok(Webhooks {
            lanes: lanes.into(),
        })
    }

    pub fn enabled(&self) -> bool {
        !self.lanes.is_empty()
    }

    /// Queues an event for every URL; never waits. A full queue drops (and counts) its
    /// room's oldest events.
    pub fn emit(&self, event: WebhookEvent) {
        if self.lanes.is_empty() {
            return;
        }
        let ready = Ready::new(&event);
        let now = Instant::now();
        for lane in self.lanes.iter() {
            record(lane.queue().push(ready.clone(), now));
            lane.wake.notify_one();
        }
    }
}

/// Deliveries in flight at once, per URL.
const IN_FLIGHT: usize = 64;

/// Sends one URL's events as its queue hands them out, up to [`IN_FLIGHT`] at once.
async fn dispatch(lane: Arc<Lane>, config: Arc<WebhookConfig>) {
    let gate = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(permit) = gate.clone().acquire_owned().await else {
            return;
        };
        let (next, wake) = {
            let mut queue = lane.queue();
            record(queue.tick(Instant::now()));
            (queue.next(), queue.next_wake())
        };
        let Some(ready) = next else {
            drop(permit);
            // New events and finished deliveries notify; held presence states have a time.
            match wake {
                Some(at) => tokio::select! {
                    _ = lane.wake.notified() => {}
                    _ = tokio::time::sleep_until(tokio::time::Instant::from_std(at)) => {}
                },
                None => lane.wake.notified().await,
            }
            continue;
        };
        let (lane, config) = (lane.clone(), config.clone());
        tokio::spawn(async move {
            deliver(&lane.target, &config, &ready.body, &ready.id).await;
            lane.queue().done(&ready.room);
            drop(permit);
            // The room may have been at its in-flight cap.
            lane.wake.notify_one();
        });
    }
}

/// Attempts with exponential backoff until a 2xx or `max_attempts`.
async fn deliver(target: &Target, config: &WebhookConfig, body: &[u8], id: &str) {
    let attempts = config.max_attempts.max(1);
    for attempt in 1..=attempts {
        let timeout = Duration::from_secs(config.timeout_s.max(1));
        let result = tokio::time::timeout(timeout, post(target, config, body, id)).await;
        match result {
            Ok(Ok(status)) if (200..300).contains(&status) => {
                crate::metrics::webhook_delivery("delivered");
                return;
            }
            other => {
                let why = match other {
                    Ok(Ok(status)) => format!("status {status}"),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "timed out".into(),
                };
                if attempt == attempts {
                    crate::metrics::webhook_delivery("failed");
                    tracing::warn!(url = %target.host, path = %target.path, %why, id, "webhook delivery failed; giving up");
                    return;
                }
                crate::metrics::webhook_delivery("retried");
                tracing::debug!(url = %target.host, %why, attempt, id, "webhook delivery failed; retrying");
                let backoff = config
                    .retry_base_ms
                    .saturating_mul(1 << (attempt - 1).min(16));
                tokio::time::sleep(Duration::from_millis(backoff)).await;
            }
        }
    }
}

/// One POST; returns the response status.
async fn post(
    target: &Target,
    config: &WebhookConfig,
    body: &[u8],
    id: &str,
) -> std::io::Result<u16> {
    let timestamp = crate::auth::unix_now();
    let signature = signature(config.secret.as_bytes(), timestamp, body);
    let mut stream = tokio::net::TcpStream::connect(&target.host_port).await?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         User-Agent: convene-webhooks\r\nConvene-Event-Id: {id}\r\nConvene-Timestamp: {timestamp}\r\n\
         Convene-Signature: {signature}\r\nConnection: close\r\n\r\n",
        target.path,
        target.host,
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    // The status line is all we need.
    let mut buf = Vec::with_capacity(64);
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'\n') && buf.len() < 4096 {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    line.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no HTTP status line in the reply"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_over_timestamp_and_body() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let sig = signature(b"Jefe", 0, b"");
        assert!(sig.starts_with("v1=") && sig.len() == 3 + 64);
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
        let tag = hmac::sign(&key, b"what do ya want for nothing?");
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // "{timestamp}.{body}" is what is signed.
        let direct = hmac::sign(&key, b"1700000000.{\"a\":1}");
        let hex: String = direct.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            signature(b"Jefe", 1_700_000_000, b"{\"a\":1}"),
            format!("v1={hex}")
        );
    }

    #[test]
    fn urls_must_be_plain_http() {
        assert_eq!(
            parse_url("http://127.0.0.1:9000/hooks").unwrap(),
            Target {
                host_port: "127.0.0.1:9000".into(),
                host: "127.0.0.1:9000".into(),
                path: "/hooks".into()
            }
        );
        assert_eq!(parse_url("http://relay").unwrap().host_port, "relay:80");
        for bad in [
            "https://x/y",
            "ftp://x",
            "http://",
            "http://a b/",
            "http://x/\r\nX: y",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
