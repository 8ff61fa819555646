//! Configuration: the embedded `config/default.toml`, an optional file merged over it, then environment overrides.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// The embedded default, so `convene serve` runs from any directory with no files around.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Parse(String),
    #[error("invalid environment variable {name}={value:?}: {reason}")]
    Env {
        name: &'static str,
        value: String,
        reason: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub limits: Limits,
    pub rtc: RtcConfig,
    pub redis: RedisConfig,
    pub cluster: ClusterConfig,
    pub store: StoreConfig,
    pub webhooks: crate::webhooks::WebhookConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub public_url: String,
    pub max_sessions: usize,
    pub max_sessions_per_room: usize,
    pub shutdown_grace_s: u64,
    pub reconnect_after_ms: u64,
    pub socket_send_buffer: usize,
    pub header_read_timeout_s: u64,
    pub request_timeout_s: u64,
    pub max_http_connections_per_ip: usize,
    /// A TLS handshake (or, with ICE-TCP on the listen port, a connection's first bytes) must
    /// finish within this many seconds.
    pub tls_handshake_timeout_s: u64,
    /// Connections in their handshake at once, and of those from one address.
    pub max_tls_handshakes: usize,
    pub max_tls_handshakes_per_ip: usize,
    /// PEM certificate chain and private key; both set: `serve` speaks HTTPS (and WSS) on `listen`.
    pub tls_cert: String,
    pub tls_key: String,
    /// Reverse proxies whose `X-Forwarded-For` names the client (per-address limits).
    pub trusted_proxies: Vec<IpAddr>,
    /// Live sessions per client address on this node; 0 = no cap.
    pub max_sessions_per_ip: usize,
    /// Joins (`/ws` upgrades) per client address per minute on this node, in bursts of
    /// `join_burst_per_ip`; 0 = no limit.
    pub joins_per_ip_per_minute: u32,
    pub join_burst_per_ip: u32,
    /// Client addresses the per-address limits skip (the server's own loopback tools).
    pub admission_exempt: Vec<IpAddr>,
    /// Bearer token `/metrics` requires; empty: `/metrics` is open.
    pub metrics_token: String,
    /// Origins that may embed the page in a frame (CSP `frame-ancestors`); empty: none.
    pub frame_ancestors: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub jwt_secret: String,
    pub api_key: String,
    /// The longest invite a host or moderator may mint, in seconds (and never past their own token).
    pub max_invite_ttl_s: u64,
    /// Revoked tokens remembered per room until they expire; beyond it revoking answers 409.
    pub max_revoked_per_room: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_frame_bytes: usize,
    pub outbound_queue: usize,
    pub direct_queue: usize,
    pub ping_interval_s: u64,
    pub idle_timeout_s: u64,
    pub reconnect_grace_s: u64,
    pub event_log_len: usize,
    pub chat_history: usize,
    pub idempotency_window: usize,
    /// Bytes of remembered acks per session, and in a whole room (they are in its snapshot).
    pub idempotency_bytes: usize,
    pub idempotency_room_bytes: usize,
    /// An SDP (offer or answer) or ICE candidate larger than this is refused at the session.
    pub max_sdp_bytes: usize,
    pub questions_per_minute: u32,
    pub breakout_close_countdown_s: u32,
    pub breakout_warning_s: u32,
    pub empty_room_ttl_s: u64,
    pub attendance_retention_s: u64,
    /// Page sessions (tabs, windows, devices) one identity may hold in a room at once.
    pub sessions_per_identity: usize,
    pub rate: RateLimits,
    pub abuse: AbuseLimits,
    pub whip_whep: WhipWhepLimits,
    pub convenings: crate::convenings::ConveningLimits,
    pub captions: CaptionLimits,
}

/// `[limits.captions]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptionLimits {
    /// Characters in one caption line from a captioner or a service (at most 1,000).
    pub max_chars: usize,
    /// A captioner's updates (every partial and final), per session.
    pub captioner: Bucket,
    /// A captioning service's posts, per convening on this node.
    pub service: Bucket,
    /// Final lines kept per convening for the WebVTT export; the oldest go first.
    pub kept: usize,
}

impl CaptionLimits {
    pub fn max_chars(&self) -> usize {
        self.max_chars
            .clamp(1, convene_signaling::MAX_CAPTION_CHARS)
    }

    /// Why a line of `text` is refused: too long.
    pub fn too_long(&self, text: &str) -> Option<String> {
        let chars = text.chars().count();
        let max = self.max_chars();
        (chars > max).then(|| format!("a caption is {chars} characters; the limit is {max}"))
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bucket {
    pub per_second: f64,
    pub burst: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    pub chat: Bucket,
    pub qa: Bucket,
    pub hands: Bucket,
    pub signaling: Bucket,
    pub other: Bucket,
    /// Bytes of every frame a session sends, whatever its class.
    pub bytes: Bucket,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbuseLimits {
    pub strikes: u32,
}

/// WHIP/WHEP over HTTP: how many sessions one token holder and one room may hold, and which
/// web origins may call the endpoints from a browser.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhipWhepLimits {
    pub whip_sessions_per_identity: usize,
    pub whep_sessions_per_identity: usize,
    pub whep_sessions_per_room: usize,
    /// Origins allowed by CORS (`https://player.example`); `"*"`: any.
    pub cors_origins: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtcConfig {
    pub udp_port: u16,
    /// ICE over TCP on `tcp_port` (for networks that drop UDP).
    pub ice_tcp: bool,
    pub tcp_port: u16,
    /// ICE-TCP connections: the first STUN request's deadline, and caps on connections
    /// (in all, per address, and per address still waiting for their first request).
    pub tcp_first_frame_timeout_s: u64,
    pub tcp_max_connections: usize,
    pub tcp_max_connections_per_ip: usize,
    pub tcp_max_pending_per_ip: usize,
    /// ICE-TCP also on the HTTP(S) listen port: connections are told apart by their first bytes.
    pub ice_tcp_on_listen: bool,
    pub advertise_ip: String,
    pub bind_ip: IpAddr,
    pub workers: usize,
    /// Bandwidth estimation (and pacing) for meeting peers; WHIP/WHEP peers never have it.
    pub bandwidth_estimation: bool,
    pub turn: TurnConfig,
}

/// A TURN relay run beside Convene (coturn with `use-auth-secret`), for networks that
/// allow only TLS to 443.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnConfig {
    /// e.g. `turns:turn.example.org:443?transport=tcp`; empty: no relay.
    pub urls: Vec<String>,
    /// coturn's `static-auth-secret`.
    pub secret: String,
    /// Lifetime of the credentials handed out, in seconds.
    pub ttl_s: u64,
    /// The relay built into `serve`, which reaches only this node's SFU.
    pub embedded: EmbeddedTurnConfig,
}

/// The embedded TURN relay (docs/decisions/0007-embedded-turn.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedTurnConfig {
    pub enabled: bool,
    pub listen_ip: IpAddr,
    /// TURN over UDP for clients on `udp_port` (not the media port; 0 picks one).
    pub udp: bool,
    pub udp_port: u16,
    /// TURN over TLS (with `server.tls_cert`) or plain TCP on `tcp_port` (0 picks one).
    pub tcp: bool,
    pub tcp_port: u16,
    /// Host name in the advertised URLs (the certificate's name for `turns:`); empty: `public_url`'s.
    pub host: String,
    /// Address the relay sockets bind to; they talk to the SFU only.
    pub relay_ip: IpAddr,
    /// Their port range, inclusive (for firewall rules); 0: any port the kernel gives.
    pub relay_min_port: u16,
    pub relay_max_port: u16,
    pub realm: String,
    pub max_allocations: usize,
    pub max_allocations_per_identity: usize,
    pub max_lifetime_s: u64,
    /// Open TCP/TLS connections per client address (0: no cap).
    pub max_connections_per_ip: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    pub url: String,
}

/// How nodes share rooms when `redis.url` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's id in the registry; empty: a random one per run.
    pub node_id: String,
    /// A room owner's lease: how long a dead owner keeps its rooms before another node takes them.
    pub lease_ms: u64,
    /// Inputs applied between two snapshots of a room (a takeover replays at most this many).
    pub snapshot_every: u64,
    /// How long a session waits for the owner to answer (a join, an export) before giving up.
    pub call_timeout_ms: u64,
    /// The largest input a node records for a room, or message it relays to another node.
    pub max_message_bytes: usize,
    /// What this node's sessions may send through Redis, all together: messages and bytes.
    pub node_messages: Bucket,
    pub node_bytes: Bucket,
    /// A node's inbox stream (replies, relayed media) keeps at most this many bytes and
    /// entries, and lapses this long after its last message.
    pub inbox_bytes: usize,
    pub inbox_entries: usize,
    pub inbox_retention_ms: u64,
    /// A room's owner also snapshots (at most once a second) once the inputs applied since
    /// the last snapshot reach this many bytes: the input stream is trimmed at each snapshot.
    pub snapshot_input_bytes: usize,
}

/// The durable store (`convene-store`) and a single node's durable room log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// sqlite://... or postgres://...; empty: SQLite in `data_dir`.
    pub url: String,
    pub data_dir: String,
    /// Without Redis: room inputs are appended before their acks leave, and rooms are rebuilt at start.
    pub durable_log: bool,
    /// "full" or "normal": SQLite's `synchronous` in WAL mode.
    pub sqlite_synchronous: String,
    /// Inputs between two snapshots of a room.
    pub snapshot_every: u64,
    /// Writes committed in one transaction at most.
    pub max_batch_writes: usize,
    pub max_connections: u32,
    /// Days a convening's record is kept after it ends, unless set per convening.
    pub retention_days: u32,
    /// The most a convening's retention may be set to.
    pub max_retention_days: u32,
    /// How often expired records are deleted.
    pub sweep_interval_s: u64,
    /// How often a node notes that its rooms are running (a restart's gap starts there).
    pub record_heartbeat_ms: u64,
}

impl StoreConfig {
    /// The URL to open: `url`, or the SQLite file in `data_dir` (the directory is created).
    pub fn resolved_url(&self) -> std::io::Result<String> {
        if !self.url.is_empty() {
            return Ok(self.url.clone());
        }
        std::fs::create_dir_all(&self.data_dir)?;
        Ok(format!("sqlite://{}/convene.db?mode=rwc", self.data_dir))
    }
}

impl Limits {
    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.reconnect_grace_s)
    }
}

impl Default for Config {
    fn default() -> Self {
        toml::from_str(DEFAULT_TOML).expect("embedded default.toml is valid")
    }
}

impl Config {
    /// The default, `file` merged over it (if any), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(file, |name| std::env::var(name).ok())
    }

    pub fn load_with_env(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut merged: toml::Table = toml::from_str(DEFAULT_TOML).expect("embedded default");
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            let overlay: toml::Table = toml::from_str(&text)
                .map_err(|e| ConfigError::Parse(format!("{}: {e}", path.display())))?;
            merge(&mut merged, overlay);
        }
        let mut config: Config = toml::Value::Table(merged)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        config.apply_env(env)?;
        config
            .webhooks
            .validate()
            .map_err(|e| ConfigError::Parse(e.to_string()))?;
        Ok(config)
    }

    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn parsed<T: std::str::FromStr>(name: &'static str, value: String) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            value.parse().map_err(|e: T::Err| ConfigError::Env {
                name,
                value,
                reason: e.to_string(),
            })
        }
        if let Some(v) = env("CONVENE_LISTEN") {
            self.server.listen = parsed("CONVENE_LISTEN", v)?;
        }
        if let Some(v) = env("CONVENE_PUBLIC_URL") {
            self.server.public_url = v;
        }
        if let Some(v) = env("CONVENE_TLS_CERT") {
            self.server.tls_cert = v;
        }
        if let Some(v) = env("CONVENE_TLS_KEY") {
            self.server.tls_key = v;
        }
        if self.server.tls_cert.is_empty() != self.server.tls_key.is_empty() {
            return Err(ConfigError::Parse(
                "server.tls_cert and server.tls_key (CONVENE_TLS_CERT, CONVENE_TLS_KEY) go together: set both or neither".into(),
            ));
        }
        if let Some(v) = env("CONVENE_STORE_URL") {
            self.store.url = v;
        }
        if let Some(v) = env("CONVENE_DATA_DIR") {
            self.store.data_dir = v;
        }
        if let Some(v) = env("CONVENE_STORE_SNAPSHOT_EVERY") {
            self.store.snapshot_every = parsed("CONVENE_STORE_SNAPSHOT_EVERY", v)?;
        }
        if !matches!(self.store.sqlite_synchronous.as_str(), "full" | "normal") {
            return Err(ConfigError::Parse(
                "store.sqlite_synchronous is \"full\" or \"normal\"".into(),
            ));
        }
        if let Some(v) = env("CONVENE_JWT_SECRET") {
            self.auth.jwt_secret = v;
        }
        if let Some(v) = env("CONVENE_API_KEY") {
            self.auth.api_key = v;
        }
        if let Some(v) = env("CONVENE_METRICS_TOKEN") {
            self.server.metrics_token = v;
        }
        if let Some(v) = env("CONVENE_REDIS_URL") {
            self.redis.url = v;
        }
        if let Some(v) = env("CONVENE_NODE_ID") {
            self.cluster.node_id = v;
        }
        if let Some(v) = env("CONVENE_CLUSTER_LEASE_MS") {
            self.cluster.lease_ms = parsed("CONVENE_CLUSTER_LEASE_MS", v)?;
        }
        if let Some(v) = env("CONVENE_WEBHOOK_URLS") {
            self.webhooks.urls = v
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_string)
                .collect();
        }
        if let Some(v) = env("CONVENE_WEBHOOK_SECRET") {
            self.webhooks.secret = v;
        }
        if let Some(v) = env("CONVENE_RTC_UDP_PORT") {
            self.rtc.udp_port = parsed("CONVENE_RTC_UDP_PORT", v)?;
        }
        if let Some(v) = env("CONVENE_TURN_URLS") {
            self.rtc.turn.urls = v
                .split([',', ' '])
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(String::from)
                .collect();
        }
        if let Some(v) = env("CONVENE_TURN_SECRET") {
            self.rtc.turn.secret = v;
        }
        let embedded = &mut self.rtc.turn.embedded;
        if let Some(v) = env("CONVENE_TURN_EMBEDDED") {
            embedded.enabled = parsed("CONVENE_TURN_EMBEDDED", v)?;
        }
        if let Some(v) = env("CONVENE_TURN_UDP") {
            embedded.udp = parsed("CONVENE_TURN_UDP", v)?;
        }
        if let Some(v) = env("CONVENE_TURN_UDP_PORT") {
            embedded.udp_port = parsed("CONVENE_TURN_UDP_PORT", v)?;
        }
        if let Some(v) = env("CONVENE_TURN_TCP_PORT") {
            embedded.tcp_port = parsed("CONVENE_TURN_TCP_PORT", v)?;
        }
        if let Some(v) = env("CONVENE_TURN_HOST") {
            embedded.host = v;
        }
        if embedded.enabled && !embedded.udp && !embedded.tcp {
            return Err(ConfigError::Parse(
                "rtc.turn.embedded is enabled with neither udp nor tcp: clients could not reach it"
                    .into(),
            ));
        }
        let (min, max) = (embedded.relay_min_port, embedded.relay_max_port);
        if (min == 0) != (max == 0) || min > max {
            return Err(ConfigError::Parse(format!(
                "rtc.turn.embedded.relay_min_port {min} and relay_max_port {max}: set both (min <= max) or neither"
            )));
        }
        for url in &self.rtc.turn.urls {
            if !(url.starts_with("turn:") || url.starts_with("turns:") || url.starts_with("stun:"))
            {
                return Err(ConfigError::Parse(format!(
                    "rtc.turn.urls: {url:?} is not a turn:, turns: or stun: URL"
                )));
            }
        }
        if !self.rtc.turn.urls.is_empty() && self.rtc.turn.secret.is_empty() {
            return Err(ConfigError::Parse(
                "rtc.turn.urls is set but rtc.turn.secret (CONVENE_TURN_SECRET) is empty: the relay's static-auth-secret is needed to make credentials".into(),
            ));
        }
        if let Some(v) = env("CONVENE_RTC_TCP_PORT") {
            self.rtc.tcp_port = parsed("CONVENE_RTC_TCP_PORT", v)?;
        }
        if let Some(v) = env("CONVENE_RTC_ICE_TCP_ON_LISTEN") {
            self.rtc.ice_tcp_on_listen = parsed("CONVENE_RTC_ICE_TCP_ON_LISTEN", v)?;
        }
        if let Some(v) = env("CONVENE_RTC_ICE_TCP") {
            self.rtc.ice_tcp = parsed("CONVENE_RTC_ICE_TCP", v)?;
        }
        if let Some(v) = env("CONVENE_RTC_ADVERTISE_IP") {
            if let Err(e) = convene_sfu::addresses::parse_list(&v) {
                return Err(ConfigError::Env {
                    name: "CONVENE_RTC_ADVERTISE_IP",
                    value: v,
                    reason: e.to_string(),
                });
            }
            self.rtc.advertise_ip = v;
        }
        Ok(())
    }

    /// Does `serve` terminate TLS itself?
    pub fn tls(&self) -> bool {
        !self.server.tls_cert.is_empty()
    }

    /// The base URL people join at, e.g. `http://localhost:8080`.
    /// The base URL other nodes send people to (WHIP/WHEP redirects): `public_url`, else
    /// the bound address when it is a specific one.
    pub fn advertised_url(&self, bound: SocketAddr) -> String {
        if self.server.public_url.is_empty() && !bound.ip().is_unspecified() {
            let scheme = if self.tls() { "https" } else { "http" };
            return format!("{scheme}://{bound}");
        }
        self.public_url(bound)
    }

    pub fn public_url(&self, bound: SocketAddr) -> String {
        if !self.server.public_url.is_empty() {
            return self.server.public_url.trim_end_matches('/').to_string();
        }
        let host = if bound.ip().is_unspecified() || bound.ip().is_loopback() {
            "localhost".to_string()
        } else {
            bound.ip().to_string()
        };
        let scheme = if self.tls() { "https" } else { "http" };
        format!("{scheme}://{host}:{}", bound.port())
    }
}

/// Deep-merges `overlay` into `base`: tables merge key by key, other values replace.
fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_one_node_on_8080() {
        let c = Config::default();
        assert_eq!(c.server.listen.port(), 8080);
        assert!(c.redis.url.is_empty());
        assert_eq!(c.limits.max_frame_bytes, 256 * 1024);
    }

    #[test]
    fn environment_overrides_file_and_default() {
        let c = Config::load_with_env(None, |name| match name {
            "CONVENE_LISTEN" => Some("127.0.0.1:0".into()),
            "CONVENE_JWT_SECRET" => Some("s3cret".into()),
            "CONVENE_RTC_ADVERTISE_IP" => Some("127.0.0.1".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(c.auth.jwt_secret, "s3cret");
        assert_eq!(c.rtc.advertise_ip, "127.0.0.1");
    }

    #[test]
    fn bad_environment_value_is_named() {
        let err = Config::load_with_env(None, |name| {
            (name == "CONVENE_RTC_UDP_PORT").then(|| "lots".to_string())
        })
        .unwrap_err();
        assert!(err.to_string().contains("CONVENE_RTC_UDP_PORT"), "{err}");
    }

    #[test]
    fn tls_needs_both_files_and_makes_links_https() {
        let err = Config::load_with_env(None, |name| {
            (name == "CONVENE_TLS_CERT").then(|| "cert.pem".to_string())
        })
        .unwrap_err();
        assert!(err.to_string().contains("tls_key"), "{err}");
        let c = Config::load_with_env(None, |name| match name {
            "CONVENE_TLS_CERT" => Some("cert.pem".into()),
            "CONVENE_TLS_KEY" => Some("key.pem".into()),
            _ => None,
        })
        .unwrap();
        assert!(c.tls());
        assert_eq!(
            c.public_url("0.0.0.0:8443".parse().unwrap()),
            "https://localhost:8443"
        );
    }

    #[test]
    fn turn_urls_and_secret_from_the_environment() {
        let c = Config::load_with_env(None, |name| match name {
            "CONVENE_TURN_URLS" => {
                Some("turns:relay.example:443?transport=tcp, turn:relay.example:3478".into())
            }
            "CONVENE_TURN_SECRET" => Some("s".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.rtc.turn.urls.len(), 2);
        let no_secret = Config::load_with_env(None, |name| {
            (name == "CONVENE_TURN_URLS").then(|| "turn:relay.example".to_string())
        });
        assert!(no_secret.unwrap_err().to_string().contains("secret"));
        let bad = Config::load_with_env(None, |name| match name {
            "CONVENE_TURN_URLS" => Some("http://relay.example".into()),
            "CONVENE_TURN_SECRET" => Some("s".into()),
            _ => None,
        });
        assert!(bad.unwrap_err().to_string().contains("turn:"));
    }

    #[test]
    fn store_defaults_to_sqlite_in_the_data_dir_and_takes_the_environment() {
        let c = Config::default();
        assert!(c.store.durable_log && c.store.url.is_empty());
        assert_eq!(c.store.sqlite_synchronous, "full");
        let dir = std::env::temp_dir().join(format!("convene-config-{}", std::process::id()));
        let c = Config::load_with_env(None, |name| match name {
            "CONVENE_DATA_DIR" => Some(dir.display().to_string()),
            "CONVENE_STORE_SNAPSHOT_EVERY" => Some("7".into()),
            _ => None,
        })
        .unwrap();
        let url = c.store.resolved_url().unwrap();
        assert_eq!(
            url,
            format!("sqlite://{}/convene.db?mode=rwc", dir.display())
        );
        assert!(dir.is_dir(), "the data directory is created");
        assert_eq!(c.store.snapshot_every, 7);
        let _ = std::fs::remove_dir_all(&dir);
        let c = Config::load_with_env(None, |name| {
            (name == "CONVENE_STORE_URL").then(|| "postgres://u:p@127.0.0.1/db".to_string())
        })
        .unwrap();
        assert_eq!(
            c.store.resolved_url().unwrap(),
            "postgres://u:p@127.0.0.1/db"
        );
        let mut file = std::env::temp_dir();
        file.push(format!("convene-store-{}.toml", std::process::id()));
        std::fs::write(&file, "[store]\nsqlite_synchronous = \"off\"\n").unwrap();
        let err = Config::load_with_env(Some(&file), |_| None).unwrap_err();
        assert!(err.to_string().contains("sqlite_synchronous"), "{err}");
        let _ = std::fs::remove_file(&file);
    }

    #[test]
    fn cluster_file_merges_over_default() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/cluster.toml");
        let c = Config::load_with_env(Some(Path::new(path)), |_| None).unwrap();
        assert!(c.redis.url.starts_with("redis://"));
    }
}
