//! The HTTP edge: the WebSocket upgrade, health, metrics, the embedded browser client and the admin API.
//!
//! `app(state)` builds the whole service; [`Server`] binds it and runs it with graceful shutdown.

mod admission;
mod api;
mod client;
mod cors;
pub mod joins;
mod listener;
mod media;
mod media_sessions;
pub mod serve;
pub mod tls;
mod ws;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::sync::watch;

use crate::auth::TokenKeys;
use crate::config::{Config, Limits};
use crate::media::Media;
use crate::session::Hub;
use convene_core::room::actor::ActorConfig;
use convene_core::room::attendance::AttendanceBook;
use convene_core::room::registry::Rooms;
use convene_core::room::RoomLimits;

/// Errors the edge answers with: a status and a JSON body naming the problem.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Sent as `Retry-After` (whole seconds) and `retry_after_ms` in the body.
    pub retry_after_ms: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }
    pub fn retry_after(mut self, ms: u64) -> Self {
        self.retry_after_ms = Some(ms);
        self
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "error": self.code, "message": self.message });
        let Some(ms) = self.retry_after_ms else {
            return (self.status, Json(body)).into_response();
        };
        body["retry_after_ms"] = ms.into();
        let seconds = ms.div_ceil(1000).max(1).to_string();
        let header = [(axum::http::header::RETRY_AFTER, seconds)];
        (self.status, header, Json(body)).into_response()
    }
}

/// Where an endpoint takes its access token from.
pub enum TokenFrom<'a> {
    Header,
    /// Browsers cannot set headers on a WebSocket, so `/ws` also takes `?token=`.
    HeaderOrQuery(Option<&'a str>),
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub keys: TokenKeys,
    pub rooms: Rooms,
    /// The single node's durable rooms (`store.durable_log` without a cluster).
    pub durable: Option<Arc<crate::durable::DurableRooms>>,
    /// Delivers rooms' events and replies to this node's sessions.
    pub hub: Arc<Hub>,
    /// Connected sessions on this node.
    pub sessions: Arc<AtomicUsize>,
    /// `Some(reconnect_after_ms)` once shutdown has begun.
    pub shutdown: Arc<watch::Sender<Option<u64>>>,
    pub limits: Arc<Limits>,
    /// The SFU; `None` when its UDP port could not be bound.
    pub media: Option<Media>,
    pub resources: media_sessions::Resources,
    /// What `/metrics` shows: the process-wide metrics and this node's gauges.
    pub metrics: Arc<prometheus_client::registry::Registry>,
    /// Attendance sheets, kept after rooms empty.
    pub attendance: AttendanceBook,
    /// TURN credentials for WHIP/WHEP `Link` headers (and `welcome`, through the rooms).
    pub turn: Option<crate::turn::Turn>,
    /// The embedded TURN relay, when `rtc.turn.embedded.enabled`.
    pub turn_server: Option<Arc<crate::turn::server::TurnServer>>,
    /// The cluster this node shares rooms with, when `redis.url` is set.
    pub cluster: Option<crate::cluster::Cluster>,
    /// Shareable audience links: revocations and how many each has admitted.
    pub audience: api::audience::AudienceLinks,
    /// Per-address join rates and live-session caps on `/ws`.
    pub admission: joins::Admission,
    /// Revoked access tokens and audience links (in Redis for a cluster).
    pub revoked: crate::revocation::Revocations,
    /// Convenings' records and reports, when the node has a store.
    pub recorder: Option<Arc<crate::record::Recorder>>,
    /// Scheduled convenings: their plans, lobbies and starts.
    pub convenings: crate::convenings::Convenings,
    /// Captioning services' posts per convening.
    pub caption_posts: crate::captions::ServiceBuckets,
}

/// The node's rooms: links to owners in a cluster, durable actors on one node with the
/// durable log (its rebuilt rooms started at once, so their timers and graces run), or
/// in-memory actors.
async fn start_rooms(
    config: &Config,
    actor: ActorConfig,
    hub: &Arc<Hub>,
    cluster: Option<crate::cluster::Cluster>,
    record: Recording,
) -> std::io::Result<(Rooms, Option<Arc<crate::durable::DurableRooms>>)> {
    use convene_core::room::registry::RoomStarter;
    let durable = match (&cluster, config.store.durable_log) {
        (None, true) => Some(Arc::new(
            open_durable(config, actor.clone(), hub.clone(), record.clone()).await?,
        )),
        _ => None,
    };
    if cluster.is_some() && !config.store.url.is_empty() {
        // A cluster's record: every node writes its owned rooms' rows to the shared store.
        let store = open_store(config).await?;
        let log = convene_store::GroupCommit::start(store.clone(), config.store.max_batch_writes);
        start_recorder(config, store, log, record);
    }
    let starter = cluster
        .map(|c| Arc::new(c) as Arc<dyn RoomStarter>)
        .or_else(|| durable.clone().map(|d| d as Arc<dyn RoomStarter>));
    let rooms = Rooms::new(actor, hub.clone(), starter);
    for name in durable.iter().flat_map(|d| d.rebuilt_rooms()) {
        rooms.get_or_start(&name);
    }
    Ok((rooms, durable))
}

/// The store and the rooms it rebuilds: a single node's durable log (`store.durable_log`).
/// What the record needs when a store opens: the node's webhooks, and where its writer goes
/// (the rooms' hooks read it from there).
#[derive(Clone)]
struct Recording {
    webhooks: crate::webhooks::Webhooks,
    slot: Arc<std::sync::OnceLock<Arc<crate::record::Recorder>>>,
}

async fn open_durable(
    config: &Config,
    actor: ActorConfig,
    sink: Arc<dyn convene_core::wire::SessionSink>,
    record: Recording,
) -> std::io::Result<crate::durable::DurableRooms> {
    let c = &config.store;
    let url = c.resolved_url()?;
    // Before the store opens: a second process on the same file must not even migrate it.
    let data_lock = crate::durable::lock_data(&url)?;
    let store = open_store(config).await?;
    let log = convene_store::GroupCommit::start(store.clone(), c.max_batch_writes);
    let recorder = start_recorder(config, store.clone(), log.clone(), record);
    crate::durable::DurableRooms::open(store, log, c, actor, sink, data_lock, Some(recorder))
        .await
        .map_err(|e| {
            std::io::Error::other(format!("opening the store: {}", redacted_store(&url, &e)))
        })
}

/// The record's writer on `log`, its sweeper and heartbeat; the rooms' hooks find it.
fn start_recorder(
    config: &Config,
    store: convene_store::Store,
    log: convene_store::GroupCommit,
    record: Recording,
) -> Arc<crate::record::Recorder> {
    let c = &config.store;
    let url = config.advertised_url(config.server.listen);
    let days = i64::from(c.retention_days);
    let recorder = crate::record::Recorder::new(store, log, record.webhooks, &url, days);
    recorder.sweep_every(Duration::from_secs(c.sweep_interval_s));
    recorder.heartbeat_every(Duration::from_millis(c.record_heartbeat_ms));
    let _ = record.slot.set(recorder.clone());
    recorder
}

/// The store (`store.url`, or SQLite in `store.data_dir`), migrated.
async fn open_store(config: &Config) -> std::io::Result<convene_store::Store> {
    let c = &config.store;
    let settings = convene_store::StoreSettings {
        url: c.resolved_url()?,
        max_connections: c.max_connections,
        sqlite_sync: if c.sqlite_synchronous == "normal" {
            convene_store::Sync::Normal
        } else {
            convene_store::Sync::Full
        },
    };
    let failed = |e: convene_store::StoreError| {
        std::io::Error::other(format!(
            "opening the store: {}",
            redacted_store(&settings.url, &e)
        ))
    };
    convene_store::Store::open(&settings).await.map_err(failed)
}

fn store_failed(config: &Config, e: convene_store::StoreError) -> std::io::Error {
    let url = config.store.resolved_url().unwrap_or_default();
    std::io::Error::other(format!("opening the store: {}", redacted_store(&url, &e)))
}

/// Scheduled convenings, on the record's store when the node has one, else on the store
/// `[store]` names when there is one (a `store.url`, or one node's `store.durable_log`); in
/// memory otherwise (in-process test servers). A cluster shares plans only through a
/// `store.url` every node reaches: a data directory of its own would give each node its own.
async fn open_convenings(
    config: &Config,
    recorder: Option<&Arc<crate::record::Recorder>>,
) -> std::io::Result<crate::convenings::Convenings> {
    let single_node = config.redis.url.is_empty();
    let store = match recorder {
        Some(recorder) => Some(recorder.store().clone()),
        None if !config.store.url.is_empty() || (single_node && config.store.durable_log) => {
            Some(open_store(config).await?)
        }
        None => {
            if !single_node {
                tracing::warn!("a cluster without store.url keeps scheduled convenings in memory, per node: set store.url to a PostgreSQL every node reaches");
            }
            None
        }
    };
    crate::convenings::Convenings::open(
        store,
        recorder.cloned(),
        config.limits.convenings.clone(),
        crate::convenings::ScheduleClock::from_env(),
    )
    .await
    .map_err(|e| store_failed(config, e))
}

/// A store error without the URL's password (it ends up in logs and on the terminal).
fn redacted_store(url: &str, error: &convene_store::StoreError) -> String {
    let text = error.to_string();
    let userinfo = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .map(|(info, _)| info);
    match userinfo.and_then(|info| info.split_once(':')) {
        Some((_, password)) if !password.is_empty() => text.replace(password, "***"),
        _ => text,
    }
}

impl AppState {
    /// Chooses how rooms reach sessions once, here (this node alone, or a cluster through
    /// Redis); nothing else asks which one runs.
    pub async fn start(config: Config) -> std::io::Result<AppState> {
        let hub = Hub::new(config.limits.outbound_queue);
        let limits = &config.limits;
        let attendance = AttendanceBook::new(limits.attendance_retention_s.saturating_mul(1000));
        let https_port = config
            .rtc
            .ice_tcp_on_listen
            .then_some(config.server.listen.port());
        let media = match Media::start(&config.rtc, https_port) {
            Ok(media) => Some(media),
            Err(error) => {
                tracing::error!(%error, "media engine did not start; signaling and chat still work");
                None
            }
        };
        // The SFU's addresses are the embedded relay's only peers, so it starts after media.
        let turn_tls = if config.tls() && config.rtc.turn.embedded.enabled {
            let s = &config.server;
            Some(
                tls::server_config(s.tls_cert.as_ref(), s.tls_key.as_ref())
                    .map_err(std::io::Error::other)?,
            )
        } else {
            None
        };
        let (turn, turn_server) =
            crate::turn::node::start(&config, media.as_ref(), turn_tls).await?;
        let webhooks = crate::webhooks::Webhooks::start(&config.webhooks).unwrap_or_else(|error| {
            tracing::error!(%error, "webhooks are off");
            crate::webhooks::Webhooks::default()
        });
        let recorder_slot = Arc::new(std::sync::OnceLock::new());
        let actor = ActorConfig {
            limits: RoomLimits {
                chat_history: limits.chat_history,
                questions_per_minute: limits.questions_per_minute,
                reconnect_grace_ms: limits.reconnect_grace_s * 1000,
                breakout_close_countdown_s: limits.breakout_close_countdown_s,
                breakout_warning_s: limits.breakout_warning_s,
                sessions_per_identity: limits.sessions_per_identity,
                captions_kept: limits.captions.kept,
            },
            event_log_len: limits.event_log_len,
            idempotency_window: limits.idempotency_window,
            idempotency_bytes: limits.idempotency_bytes,
            idempotency_room_bytes: limits.idempotency_room_bytes,
            empty_room_ttl: Duration::from_secs(limits.empty_room_ttl_s),
            attendance: attendance.clone(),
            hooks: Arc::new(crate::hooks::NodeHooks {
                webhooks: webhooks.clone(),
                turn: turn.clone(),
                recorder: recorder_slot.clone(),
            }),
        };
        let sessions = Arc::new(AtomicUsize::new(0));
        let cluster = if config.redis.url.is_empty() {
            None
        } else {
            let c = &config.cluster;
            let node_id = if c.node_id.is_empty() {
                uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
            } else {
                c.node_id.clone()
            };
            let settings = crate::cluster::ClusterSettings {
                redis_url: config.redis.url.clone(),
                node_id,
                lease_ms: c.lease_ms.max(300),
                snapshot_every: c.snapshot_every.max(1),
                call_timeout: Duration::from_millis(c.call_timeout_ms.max(100)),
                http: config.advertised_url(config.server.listen),
                rtc: media.as_ref().map(|m| {
                    let ip = if config.rtc.advertise_ip.is_empty() {
                        "127.0.0.1"
                    } else {
                        config.rtc.advertise_ip.as_str()
                    };
                    format!("{ip}:{}", m.sfu.local_addr().port())
                }),
                max_sessions: config.server.max_sessions,
                bounds: crate::cluster::Bounds::of(c),
            };
            let cluster = crate::cluster::Cluster::start(
                settings,
                hub.clone(),
                actor.clone(),
                sessions.clone(),
            )
            .await
            .map_err(|e| {
                // Never the password: this ends up in logs and on the terminal.
                let url = &config.redis.url;
                let error = crate::cluster::without_password(&e.to_string(), url);
                let at = crate::cluster::redacted(url);
                std::io::Error::other(format!("joining the cluster at {at}: {error}"))
            })?;
            Some(cluster)
        };
        let recording = Recording {
            webhooks,
            slot: recorder_slot.clone(),
        };
        let (rooms, durable) =
            start_rooms(&config, actor, &hub, cluster.clone(), recording).await?;
        let convenings = open_convenings(&config, recorder_slot.get()).await?;
        convenings.run(rooms.clone(), Duration::from_secs(1));
        if let (Some(cluster), Some(media)) = (&cluster, &media) {
            cluster.host_media(crate::cluster::relay::RelayedMedia::new(
                cluster.clone(),
                media.clone(),
                rooms.clone(),
                hub.clone(),
            ));
        }
        let metrics = Arc::new(crate::metrics::registry(crate::metrics::NodeCollector {
            sessions: sessions.clone(),
            rooms: rooms.clone(),
            sfu: media.as_ref().map(|m| m.sfu.clone()),
        }));
        let revoked = crate::revocation::Revocations::new(
            cluster.as_ref().map(|c| c.store().clone()),
            config.auth.max_revoked_per_room,
        );
        Ok(AppState {
            recorder: recorder_slot.get().cloned(),
            cluster,
            limits: Arc::new(config.limits.clone()),
            media,
            resources: media_sessions::Resources::default(),
            turn,
            turn_server,
            keys: TokenKeys::new(config.auth.jwt_secret.as_bytes()),
            rooms,
            durable,
            hub,
            sessions,
            metrics,
            attendance,
            audience: Default::default(),
            admission: joins::Admission::new(&config.server),
            revoked,
            convenings,
            caption_posts: Default::default(),
            shutdown: Arc::new(watch::channel(None).0),
            config: Arc::new(config),
        })
    }

    /// The bearer token verified (for `room`, when given): 401 with the reason otherwise.
    pub fn claims(
        &self,
        headers: &axum::http::HeaderMap,
        from: TokenFrom<'_>,
        room: Option<&str>,
    ) -> Result<crate::auth::Claims, ApiError> {
        let (query, missing) = match from {
            TokenFrom::Header => (None, "missing Authorization: Bearer"),
            TokenFrom::HeaderOrQuery(query) => (
                query,
                "missing access token: pass ?token= or Authorization: Bearer",
            ),
        };
        let token = ws::bearer(headers, query).ok_or_else(|| ApiError::unauthorized(missing))?;
        self.keys
            .verify(&token, room)
            .map_err(|e| ApiError::unauthorized(e.to_string()))
    }

    /// 401 for a token on the deny list (by its `jti`); 503 when the list cannot be read.
    pub async fn refuse_revoked(&self, claims: &crate::auth::Claims) -> Result<(), ApiError> {
        let Some(jti) = &claims.jti else {
            return Ok(());
        };
        match self.revoked.is_revoked(&claims.room, jti).await {
            Ok(false) => Ok(()),
            Ok(true) => Err(ApiError::unauthorized("this access token was revoked")),
            Err(error) => Err(ApiError::unavailable(format!(
                "cannot check the token now ({error}); retry shortly"
            ))),
        }
    }

    pub fn shutting_down(&self) -> bool {
        self.shutdown.borrow().is_some()
    }
}

/// Bodies here are SDP and small JSON; anything larger is refused with 413.
const MAX_BODY_BYTES: usize = 1 << 20;

pub fn app(state: AppState) -> Router {
    let body_deadline = Duration::from_secs(state.config.server.request_timeout_s.max(1));
    let origins = cors::Origins::new(&state.config.limits.whip_whep.cors_origins);
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/ws", get(ws::upgrade))
        .merge(media::router(origins))
        .nest("/api/v1", api::router())
        .merge(client::router(state.clone()))
        .layer(axum::middleware::from_fn(move |request, next| {
            serve::read_body_in_time(body_deadline, MAX_BODY_BYTES, request, next)
        }))
        .route_layer(axum::middleware::from_fn(count_request))
        .with_state(state)
}

async fn readyz(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    if state.shutting_down() {
        ApiError::unavailable("shutting down").into_response()
    } else {
        "ready".into_response()
    }
}

/// `/metrics`: with `server.metrics_token` set, only for `Authorization: Bearer <it>` (401
/// otherwise); without one, only for clients on loopback (403 otherwise), so the first
/// `serve` does not show its traffic to the network.
async fn metrics(
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: axum::http::HeaderMap,
    peer: Option<axum::Extension<joins::PeerAddr>>,
) -> Response {
    let server = &state.config.server;
    if server.metrics_token.is_empty() {
        let from = peer
            .map(|axum::Extension(joins::PeerAddr(addr))| {
                joins::client_ip(addr.ip(), &headers, &server.trusted_proxies)
            })
            .filter(|ip| !ip.is_loopback());
        if let Some(ip) = from {
            tracing::debug!(%ip, "refused /metrics: no metrics_token and not loopback");
            return ApiError::forbidden(
                "metrics are served to loopback only: set server.metrics_token (CONVENE_METRICS_TOKEN) to scrape from elsewhere",
            )
            .into_response();
        }
    } else {
        let given = ws::bearer(&headers, None).unwrap_or_default();
        if !api::constant_time_eq(given.as_bytes(), server.metrics_token.as_bytes()) {
            return ApiError::unauthorized("metrics need Authorization: Bearer <metrics_token>")
                .into_response();
        }
    }
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        crate::metrics::render(&state.metrics),
    )
        .into_response()
}

/// Counts each answered request by its route template (never the raw path: it holds room names).
async fn count_request(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let response = next.run(request).await;
    crate::metrics::http_request(
        crate::metrics::HttpLabels {
            method,
            route,
            status: response.status().as_u16(),
        },
        started.elapsed(),
    );
    response
}

/// Binds with a deep accept backlog: a thousand clients reconnecting at once (after a
/// Wi-Fi blip or a restart) must not overflow the default 128.
fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// A running server: its address, its state, and the way to stop it.
pub struct Server {
    pub addr: SocketAddr,
    pub state: AppState,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Binds `config.server.listen` and serves until [`Server::shutdown`]; over TLS when
    /// `server.tls_cert` and `server.tls_key` are set.
    pub async fn start(config: Config) -> std::io::Result<Server> {
        let tls = if config.tls() {
            let s = &config.server;
            Some(
                tls::server_config(s.tls_cert.as_ref(), s.tls_key.as_ref())
                    .map_err(std::io::Error::other)?,
            )
        } else {
            None
        };
        let listener = bind(config.server.listen)?;
        let addr = listener.local_addr()?;
        // The bound port (for port 0), which ICE-TCP on the listen port advertises.
        let mut config = config;
        config.server.listen = addr;
        let state = AppState::start(config).await?;
        let router = app(state.clone());
        let server = &state.config.server;
        let limits = serve::ServeLimits {
            header_read_timeout: Duration::from_secs(server.header_read_timeout_s.max(1)),
            max_connections_per_ip: server.max_http_connections_per_ip,
        };
        let edge = listener::EdgeLimits {
            handshake_timeout: Duration::from_secs(server.tls_handshake_timeout_s.max(1)),
            max_handshakes: server.max_tls_handshakes,
            max_handshakes_per_ip: server.max_tls_handshakes_per_ip,
            max_connections_per_ip: server.max_http_connections_per_ip,
        };
        let per_ip = admission::PerIp::default();
        let send_buffer = server.socket_send_buffer;
        // Small frames must not wait for Nagle; an optional send-buffer bound caps kernel memory.
        let tap = move |tcp: &tokio::net::TcpStream| {
            let _ = tcp.set_nodelay(true);
            if send_buffer > 0 {
                let _ = socket2::SockRef::from(tcp).set_send_buffer_size(send_buffer);
            }
        };
        let stop = state.shutdown.subscribe();
        let handoff = state.media.as_ref().and_then(|m| m.sfu.tcp_handoff());
        // One accept loop (timeouts, per-address cap) over whichever listener fits: TLS and
        // ICE-TCP on the listen port are decided per connection by the edge listener.
        let task = match (tls, handoff) {
            (Some(tls), handoff) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(tls);
                let listener = listener::EdgeListener::new(
                    listener,
                    tap,
                    handoff,
                    (edge, per_ip.clone()),
                    move |tcp| {
                        let accept = acceptor.accept(tcp);
                        async move {
                            accept
                                .await
                                .map_err(|error| tracing::debug!(%error, "TLS handshake failed"))
                                .ok()
                        }
                    },
                )?;
                tokio::spawn(serve::run(listener, router, limits, per_ip, stop))
            }
            (None, Some(handoff)) => {
                let listener = listener::EdgeListener::new(
                    listener,
                    tap,
                    Some(handoff),
                    (edge, per_ip.clone()),
                    |tcp| async move { Some(tcp) },
                )?;
                tokio::spawn(serve::run(listener, router, limits, per_ip, stop))
            }
            (None, None) => {
                let listener = axum::serve::ListenerExt::tap_io(
                    listener,
                    move |tcp: &mut tokio::net::TcpStream| tap(tcp),
                );
                tokio::spawn(serve::run(listener, router, limits, per_ip, stop))
            }
        };
        Ok(Server { addr, state, task })
    }

    pub fn url(&self) -> String {
        let scheme = if self.state.config.tls() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// Stops accepting, tells every session to reconnect later, and waits (bounded) for them to drain.
    pub async fn shutdown(self) {
        let config = &self.state.config.server;
        self.state
            .shutdown
            .send_replace(Some(config.reconnect_after_ms));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(config.shutdown_grace_s);
        while self.state.sessions.load(Ordering::Relaxed) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.state.sessions.load(Ordering::Relaxed);
        if left > 0 {
            tracing::warn!(left, "sessions still open at the end of the shutdown grace");
        }
        if let Some(durable) = &self.state.durable {
            durable
                .stop(Duration::from_secs(config.shutdown_grace_s.max(1)))
                .await;
        }
        if let Some(cluster) = &self.state.cluster {
            cluster.shutdown().await;
        }
        if let Some(turn) = &self.state.turn_server {
            turn.stop();
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.task).await;
    }
}
