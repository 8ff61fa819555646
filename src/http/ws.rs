//! `GET /ws`: authenticates before the upgrade, checks limits and bans, then hands the socket to a session.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::StreamExt;
use serde::Deserialize;
use uuid::Uuid;

use super::joins::{client_ip, AdmissionGuard, PeerAddr};
use super::{ApiError, AppState, TokenFrom};
use crate::auth::Claims;
use crate::media::{MediaAccess, MediaLink, Mutes};
use crate::outbox::{self, Inbox, Outbox};
use crate::session::{self, SessionParams};
use convene_core::room::actor::{error_frame, JoinTerms, RoomHandle, Start};
use convene_core::room::{Denied, Joiner};
use convene_signaling::{CloseReason, ErrorCode};

#[derive(Deserialize)]
pub struct WsQuery {
    token: Option<String>,
    /// Optional: the room the client means to join; must match the token's.
    room: Option<String>,
    /// Resume this session, replaying events after `last_seq`.
    resume: Option<String>,
    last_seq: Option<u64>,
    /// The display name, for tokens minted without one (invite links that let people choose).
    name: Option<String>,
}

/// The bearer token from `Authorization` or, for browsers that cannot set headers, `?token=`.
pub fn bearer(headers: &HeaderMap, query_token: Option<&str>) -> Option<String> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string())
        .or_else(|| query_token.map(str::to_string))
}

/// Counts a session on the node (and for its address) for as long as it lives.
struct SessionGuard {
    node: Arc<AtomicUsize>,
    _address: AdmissionGuard,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.node.fetch_sub(1, Ordering::Relaxed);
    }
}

pub async fn upgrade(
    State(state): State<AppState>,
    Query(query): Query<WsQuery>,
    headers: HeaderMap,
    peer: Option<Extension<PeerAddr>>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let peer = peer.map(|Extension(PeerAddr(addr))| addr.ip());
    match prepare(&state, &query, &headers, peer).await {
        Ok((claims, room, address)) => {
            let upgrade = match upgrade {
                Ok(upgrade) => upgrade,
                Err(_) => {
                    return ApiError::new(
                        StatusCode::UPGRADE_REQUIRED,
                        "upgrade_required",
                        "this endpoint speaks WebSocket only",
                    )
                    .into_response()
                }
            };
            let resume = match (&query.resume, query.last_seq) {
                (Some(id), Some(last_seq)) => match Uuid::parse_str(id) {
                    Ok(id) => Some((id, last_seq)),
                    Err(_) => {
                        return ApiError::bad_request("resume must be a session id").into_response()
                    }
                },
                (Some(_), None) => {
                    return ApiError::bad_request("resume needs last_seq").into_response()
                }
                _ => None,
            };
            state.sessions.fetch_add(1, Ordering::Relaxed);
            let guard = SessionGuard {
                node: state.sessions.clone(),
                _address: address,
            };
            let limit = state.config.limits.max_frame_bytes;
            upgrade
                .max_message_size(limit)
                .max_frame_size(limit)
                // Client messages are small; a large read buffer would cost every idle session.
                .read_buffer_size(256)
                // Frames accumulate until a batch is flushed (or this much is waiting).
                .write_buffer_size(16 * 1024)
                .on_upgrade(move |socket| serve_socket(socket, state, claims, room, resume, guard))
        }
        Err(error) => error.into_response(),
    }
}

/// Everything that can refuse a connection before the upgrade: token, revocation, shutdown,
/// limits (node, room, client address), bans.
async fn prepare(
    state: &AppState,
    query: &WsQuery,
    headers: &HeaderMap,
    peer: Option<std::net::IpAddr>,
) -> Result<(Claims, RoomHandle, AdmissionGuard), ApiError> {
    let mut claims = state
        .claims(
            headers,
            TokenFrom::HeaderOrQuery(query.token.as_deref()),
            query.room.as_deref(),
        )
        .map_err(|refused| {
            // An audience link is not an access token: say how to use it.
            let token = bearer(headers, query.token.as_deref()).unwrap_or_default();
            match state.keys.verify_link(&token, None) {
                Ok(link) => ApiError::bad_request(format!(
                    "this is an audience link: open it in a browser, or exchange it with a name at POST /api/v1/rooms/{}/audience-link/join",
                    link.room
                )),
                Err(_) => refused,
            }
        })?;
    if claims.name.trim().is_empty() {
        let name = query.name.as_deref().unwrap_or_default();
        claims.name = crate::auth::check_chosen_name(name).map_err(|why| {
            ApiError::bad_request(format!(
                "this link lets you choose a display name: add name= ({why})"
            ))
        })?;
    }
    if state.cluster.as_ref().is_some_and(|c| !c.healthy()) {
        // The room's owner is reached only through Redis: refuse before the upgrade, so
        // the client's first frame is never an error (it retries, as after any failed connect).
        return Err(ApiError::unavailable(
            "this server cannot reach the cluster's store; retry shortly",
        )
        .retry_after(crate::cluster::RETRY_AFTER_MS));
    }
    state.refuse_revoked(&claims).await?;
    if state.shutting_down() {
        return Err(ApiError::unavailable(
            "the server is shutting down; reconnect shortly",
        ));
    }
    let limits = &state.config.server;
    if state.sessions.load(Ordering::Relaxed) >= limits.max_sessions {
        return Err(ApiError::unavailable(format!(
            "this node is full ({} sessions)",
            limits.max_sessions
        )));
    }
    let address = match peer {
        Some(peer) => {
            let ip = client_ip(peer, headers, &limits.trusted_proxies);
            state.admission.admit(ip)?
        }
        None => state.admission.unlimited(),
    };
    // A scheduled convening's room holds attendees in its lobby from their first join.
    state.convenings.gate(&state.rooms, &claims.room).await;
    let room = state.rooms.get_or_start(&claims.room);
    if room.sessions.load(Ordering::Relaxed) >= limits.max_sessions_per_room {
        return Err(ApiError::unavailable(format!(
            "room {:?} is full ({} sessions)",
            claims.room, limits.max_sessions_per_room
        )));
    }
    if room.is_banned(&claims.sub).await.unwrap_or(false) {
        return Err(ApiError::forbidden("you were removed from this room"));
    }
    Ok((claims, room, address))
}

async fn serve_socket(
    socket: WebSocket,
    state: AppState,
    claims: Claims,
    mut room: RoomHandle,
    resume: Option<(Uuid, u64)>,
    guard: SessionGuard,
) {
    let joiner = Joiner {
        identity: claims.sub.clone(),
        name: claims.name.clone(),
        role: claims.role,
        attrs: claims.attrs.clone(),
        on_stage: false,
        credentials_until: Some(claims.exp),
    };
    let connection = Uuid::new_v4();
    let (outbox, inbox): (Outbox, Inbox) = outbox::outbox(state.config.limits.direct_queue);
    // Registered before joining, so nothing addressed to this person after the join is missed.
    let registration = state
        .hub
        .register(&claims.room, &claims.sub, connection, outbox.clone());
    // One live session per identity: this one takes the seat from the identity's others.
    let terms = JoinTerms {
        exclusive: true,
        token_id: claims.jti.clone(),
    };
    let start = match join(
        &state,
        &mut room,
        &claims.room,
        &joiner,
        connection,
        resume,
        terms,
    )
    .await
    {
        Ok(start) => start,
        Err(Some(denied)) => return refuse(socket, denied).await,
        Err(None) => return,
    };
    // The replay (on resume) covers everything up to `start.seq`; lanes carry what follows.
    // The viewer's place is where the replay starts; its moves switch the place lane.
    let events = state.hub.events(
        &claims.room,
        claims.role.is_staff(),
        start.viewer.place,
        inbox.frames.direct_lane(),
        start.seq,
    );
    let Start {
        session_id,
        viewer,
        may_publish,
        muted,
        ..
    } = &start;
    tracing::debug!(%session_id, "session started");
    let access_now = MediaAccess {
        place: viewer.place,
        may_publish: *may_publish,
        muted: Mutes::of(muted),
        recheck: 0,
    };
    // A resumed session takes back its media: the browser kept its peer connection.
    let reclaimed = match (&state.media, resume) {
        (Some(engine), Some((asked, _))) if asked == *session_id => {
            engine.reclaim(*session_id, &outbox)
        }
        _ => None,
    };
    let (media, media_access) = match reclaimed {
        Some((link, access)) => {
            // Where the member is now; the replay's moves, if any, follow.
            access.send_modify(|a| {
                a.place = access_now.place;
                a.may_publish = access_now.may_publish;
                a.muted = access_now.muted;
                a.recheck = a.recheck.wrapping_add(1);
            });
            (Some(link), access)
        }
        None => {
            let (media_access, access_rx) = tokio::sync::watch::channel(access_now);
            let media = state.media.as_ref().map(|engine| {
                MediaLink::new(
                    engine.clone(),
                    room.clone(),
                    claims.sub.clone(),
                    claims.name.clone(),
                    *session_id,
                    outbox.clone(),
                    access_rx,
                )
            });
            (media, media_access)
        }
    };
    let session_id = *session_id;
    let relay = state.cluster.as_ref().map(|cluster| {
        Box::new(crate::cluster::relay::MediaRelay::new(
            cluster.clone(),
            &claims.room,
            session_id,
            &claims.sub,
            &claims.name,
            connection,
        )) as Box<dyn crate::session::MediaForwarder>
    });
    let (sink, stream) = socket.split();
    // The session runs as its own task, sized for it alone: the join above, and the upgrade
    // task around it, end here instead of being kept alive for the whole session.
    let session = session::run(
        sink,
        stream,
        SessionParams {
            room: Arc::new(room),
            identity: claims.sub,
            session_start: start,
            connection,
            events,
            outbox,
            inbox,
            limits: state.limits.clone(),
            shutdown: state.shutdown.subscribe(),
            media,
            media_access,
            registration,
            relay,
        },
    );
    let grace = Duration::from_secs(state.config.limits.reconnect_grace_s);
    tokio::spawn(async move {
        let end = session.await;
        let may_resume = end.may_resume();
        if let (Some(engine), Some(link), true) = (&state.media, end.media, may_resume) {
            engine.park(session_id, link, end.media_access, grace);
        }
        drop(guard);
    });
}

/// Joins `room` (started again if it closed between lookup and join); `Err(None)` when it
/// cannot be reached, `Err(Some(denied))` when the room refused.
async fn join(
    state: &AppState,
    room: &mut RoomHandle,
    name: &str,
    joiner: &Joiner,
    connection: Uuid,
    resume: Option<(Uuid, u64)>,
    terms: JoinTerms,
) -> Result<Start, Option<Denied>> {
    let mut attempt = 0;
    loop {
        let asked = std::time::Instant::now();
        // Boxed so the join's state does not stay inlined in every session's long-lived future.
        match Box::pin(room.join_on(joiner.clone(), connection, resume, terms.clone())).await {
            Ok(Ok(start)) => {
                crate::metrics::observe_join(asked.elapsed());
                return Ok(start);
            }
            Ok(Err(denied)) => return Err(Some(denied)),
            // The room closed between lookup and join (it had been empty): start it again.
            Err(_) if attempt == 0 => {
                attempt += 1;
                state.convenings.gate(&state.rooms, name).await;
                *room = state.rooms.get_or_start(name);
            }
            Err(gone) => {
                tracing::warn!(%gone, "could not join room");
                return Err(None);
            }
        }
    }
}

/// The refusal's error frame, then a close: 4003 (final), or 1013 when the room was only
/// unavailable (Redis went away after `prepare` checked): the client retries.
async fn refuse(mut socket: WebSocket, denied: Denied) {
    let code = if denied.code == ErrorCode::Unavailable {
        CloseReason::SLOW.code
    } else {
        4003
    };
    let _ = socket.send(Message::Text(error_frame(None, denied))).await;
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: "refused".into(),
        })))
        .await;
}
