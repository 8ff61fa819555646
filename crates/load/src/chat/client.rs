//! Opening hub sessions: where they connect, how they authenticate, the first message, retries, and the ramp-up.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use convene_signaling::Role;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::samples::Errors;
use super::{Common, Target};
use crate::LoadError;
use convene::auth::TokenKeys;

/// A handshake (TCP, upgrade, first message) that takes longer than this has failed.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Attempts per session before it counts as failed.
pub(super) const CONNECT_ATTEMPTS: u32 = 3;

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Where sessions connect and how they authenticate.
pub(crate) struct Endpoint {
    pub(crate) target: Target,
    /// One per node: session `i` connects to `bases[i % bases.len()]`.
    pub(crate) bases: Vec<String>,
    room: String,
    keys: Option<TokenKeys>,
    /// Distinguishes this run's identities from earlier runs in the same room.
    run: String,
}

impl Endpoint {
    pub(crate) fn new(common: &Common, target: Target) -> Result<Endpoint, LoadError> {
        let bases = base_urls(&common.url)?;
        let keys = match target {
            Target::Convene => {
                let secret = common
                    .secret
                    .clone()
                    .or_else(|| std::env::var("CONVENE_JWT_SECRET").ok())
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| LoadError::Setup("no JWT secret: pass --secret or set CONVENE_JWT_SECRET to the server's".into()))?;
                Some(TokenKeys::new(secret.as_bytes()))
            }
            Target::Socketio => None,
        };
        if common.room.is_empty()
            || !common
                .room
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(LoadError::Setup(
                "--room must be letters, digits, '-', '_' or '.'".into(),
            ));
        }
        Ok(Endpoint {
            target,
            bases,
            room: common.room.clone(),
            keys,
            run: format!("{:06x}", rand::random::<u32>() & 0xff_ffff),
        })
    }

    /// How many nodes `--url` named.
    pub(crate) fn nodes(&self) -> usize {
        self.bases.len()
    }

    /// The node session `i` connects to first.
    pub(crate) fn node_of(&self, i: usize) -> usize {
        i % self.bases.len()
    }

    /// The URL for one session on `node`: a freshly minted token for Convene, the Engine.IO
    /// handshake for Socket.IO.
    pub(crate) fn url(
        &self,
        node: usize,
        who: &str,
        role: Role,
        resume: Option<&Session>,
    ) -> String {
        let base = &self.bases[node % self.bases.len()];
        match (self.target, &self.keys) {
            (Target::Convene, Some(keys)) => {
                let identity = format!("load-{}-{who}", self.run);
                let token = keys.mint_for(
                    &self.room,
                    role,
                    &identity,
                    &format!("Load {who}"),
                    BTreeMap::new(),
                    Duration::from_secs(6 * 3600),
                );
                let mut url = format!("{base}/ws?token={token}");
                if let Some(s) = resume {
                    url.push_str(&format!("&resume={}&last_seq={}", s.id, s.last_seq));
                }
                url
            }
            _ => format!(
                "{base}/socket.io/?EIO=4&transport=websocket&room={}&name={who}",
                self.room
            ),
        }
    }
}

/// Every base URL of a comma-separated `--url`.
pub(crate) fn base_urls(urls: &str) -> Result<Vec<String>, LoadError> {
    let bases = urls
        .split(',')
        .filter(|u| !u.trim().is_empty())
        .map(base_url)
        .collect::<Result<Vec<_>, _>>()?;
    if bases.is_empty() {
        return Err(LoadError::Setup("--url is empty".into()));
    }
    Ok(bases)
}

/// `ws://host:port` from what the user typed (`http://`, a trailing `/` or `/ws` are fine).
fn base_url(url: &str) -> Result<String, LoadError> {
    let url = url.trim().trim_end_matches('/');
    let url = url.strip_suffix("/ws").unwrap_or(url);
    let rest = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| LoadError::Setup(format!("--url must start with ws:// or http:// (TLS is not supported by the load tool): {url:?}")))?;
    if rest.is_empty() || rest.contains('/') {
        return Err(LoadError::Setup(format!(
            "--url must be the server's base, like ws://127.0.0.1:8080: {url:?}"
        )));
    }
    Ok(format!("ws://{rest}"))
}

/// What a Convene session needs to resume.
#[derive(Clone, Debug, Default)]
pub(crate) struct Session {
    pub(crate) id: String,
    pub(crate) last_seq: u64,
}

/// The first message of a session.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Hello {
    Welcome,
    Resumed,
    /// Socket.IO: connected to the default namespace.
    Connected,
}

pub(crate) async fn open(url: &str) -> Result<Ws, String> {
    let config = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(16 << 20));
    let connect = tokio_tungstenite::connect_async_with_config(url, Some(config), true);
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Err(_) => Err("connect timed out".into()),
        Ok(Err(error)) => Err(format!("connect: {error}")),
        Ok(Ok((ws, _))) => Ok(ws),
    }
}

/// Reads the first message (Convene) or completes the Socket.IO connect; updates `session`.
pub(crate) async fn hello(
    ws: &mut Ws,
    target: Target,
    session: &mut Session,
) -> Result<Hello, String> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| "no first message in time".to_string())?;
        let text = match next {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                return Err(format!("closed before the first message: {frame:?}"))
            }
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(format!("read: {error}")),
            None => return Err("closed before the first message".into()),
        };
        match target {
            Target::Convene => {
                #[derive(serde::Deserialize)]
                struct First {
                    #[serde(rename = "type")]
                    kind: String,
                    session_id: Option<String>,
                    seq: Option<u64>,
                    last_seq: Option<u64>,
                    message: Option<String>,
                }
                let first: First = serde_json::from_str(&text)
                    .map_err(|e| format!("unparseable first message: {e}"))?;
                match first.kind.as_str() {
                    "welcome" => {
                        session.id = first.session_id.unwrap_or_default();
                        session.last_seq = first.seq.unwrap_or(0);
                        return Ok(Hello::Welcome);
                    }
                    "resumed" => {
                        session.id = first.session_id.unwrap_or_default();
                        session.last_seq = first.last_seq.unwrap_or(session.last_seq);
                        return Ok(Hello::Resumed);
                    }
                    "error" => {
                        return Err(format!("refused: {}", first.message.unwrap_or_default()))
                    }
                    other => return Err(format!("expected welcome, got {other}")),
                }
            }
            Target::Socketio => {
                if text.starts_with('0') {
                    ws.send(Message::Text("40".into()))
                        .await
                        .map_err(|e| format!("send: {e}"))?;
                } else if text.starts_with("40") {
                    return Ok(Hello::Connected);
                } else if text.starts_with("44") {
                    return Err(format!("socket.io refused: {text}"));
                } else if text.as_str() == "2" {
                    ws.send(Message::Text("3".into()))
                        .await
                        .map_err(|e| format!("send: {e}"))?;
                }
            }
        }
    }
}

/// Opens a session, retrying a few times; `None` after the last failure (counted and sampled).
pub(super) async fn connect(
    ep: &Endpoint,
    node: usize,
    who: &str,
    role: Role,
    resume: Option<&Session>,
    errors: &Errors,
) -> Option<(Ws, Session, Hello)> {
    let mut last = String::new();
    for attempt in 0..CONNECT_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
        }
        let mut session = resume.cloned().unwrap_or_default();
        match open(&ep.url(node, who, role, resume)).await {
            Ok(mut ws) => match hello(&mut ws, ep.target, &mut session).await {
                Ok(hello) => return Some((ws, session, hello)),
                Err(error) => last = error,
            },
            Err(error) => last = error,
        }
    }
    errors.add(format!("{who}: {last}"));
    None
}

// --- Ramping up ----------------------------------------------------------------------

/// Spawns `n` sessions at the ramp rate; returns their handles once all are spawned.
pub(super) async fn ramp<F, Fut>(
    n: usize,
    per_sec: f64,
    mut spawn: F,
) -> Vec<tokio::task::JoinHandle<()>>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let start = Instant::now();
    let per_sec = if per_sec > 0.0 {
        per_sec
    } else {
        f64::INFINITY
    };
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let due = start + Duration::from_secs_f64(i as f64 / per_sec);
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        handles.push(tokio::spawn(spawn(i)));
    }
    handles
}

/// Waits until `settled` reaches `n`, or gives up after `limit`.
pub(super) async fn wait_settled(settled: &AtomicU64, n: u64, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while settled.load(Ordering::Relaxed) < n {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

pub(super) async fn join_all(handles: Vec<tokio::task::JoinHandle<()>>) {
    let all = futures_util::future::join_all(handles);
    let _ = tokio::time::timeout(Duration::from_secs(15), all).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_normalised() {
        assert_eq!(
            base_url("http://127.0.0.1:8080/").unwrap(),
            "ws://127.0.0.1:8080"
        );
        assert_eq!(base_url("ws://127.0.0.1:9/ws").unwrap(), "ws://127.0.0.1:9");
        assert!(base_url("wss://example.org").is_err());
        assert!(base_url("ws://h/x/y").is_err());
        assert_eq!(
            base_urls("ws://127.0.0.1:1, http://127.0.0.1:2/").unwrap(),
            ["ws://127.0.0.1:1", "ws://127.0.0.1:2"]
        );
        assert!(base_urls(",").is_err());
        assert!(base_urls("ws://127.0.0.1:1,wss://x").is_err());
    }
}
