//! WHIP ingest (`POST /whip/{room}`) and WHEP playback (`POST /whep/{room}`), RFC 9725 semantics.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::Router;
use convene_signaling::Role;
use serde::Deserialize;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::cors::Origins;
use super::media_sessions::{end_resource, etag, patch_resource, resource_options, Kind, Refusal};
use super::{ApiError, AppState, TokenFrom};
use crate::auth::Claims;
use crate::media::{group, Media};
use crate::outbox;
use crate::session::{follow, Rights};
use convene_core::room::actor::RoomInput;
use convene_core::room::{Joiner, Place};
use convene_sfu::{PeerOptions, SfuError};

pub fn router(origins: Origins) -> Router<AppState> {
    Router::new()
        .route("/whip/{room}", post(whip).options(ice_servers))
        .route(
            "/whip/{room}/{resource}",
            delete(end_resource)
                .patch(patch_resource)
                .options(resource_options),
        )
        .route("/whep/{room}", post(whep).options(ice_servers))
        .route(
            "/whep/{room}/{resource}",
            delete(end_resource)
                .patch(patch_resource)
                .options(resource_options),
        )
        .layer(axum::middleware::from_fn(move |request, next| {
            super::cors::cors(origins.clone(), request, next)
        }))
}

/// Checks what both endpoints need: media on, SDP body, a valid token for this room.
fn check_request(
    state: &AppState,
    room: &str,
    headers: &HeaderMap,
    body: &str,
) -> Result<(Media, Claims), ApiError> {
    let media = state
        .media
        .clone()
        .ok_or_else(|| ApiError::unavailable("media is not enabled on this server"))?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // The media type exactly (parameters allowed): `application/sdpXYZ` is not SDP.
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("application/sdp") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Content-Type must be application/sdp",
        ));
    }
    let claims = state.claims(headers, TokenFrom::Header, Some(room))?;
    if body.trim().is_empty() {
        return Err(ApiError::bad_request("the body must be an SDP offer"));
    }
    Ok((media, claims))
}

/// `OPTIONS` before the offer: a client that gathers all its candidates before it POSTs
/// (no trickle) learns the relay here. Needs the same bearer token as the POST, since the
/// `Link` headers carry credentials (RFC 9725 section 4.4), which go only to people the
/// running room has not banned.
async fn ice_servers(
    State(state): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let claims = state.claims(&headers, TokenFrom::Header, Some(&room))?;
    let mut res = (
        StatusCode::NO_CONTENT,
        [
            (header::ALLOW, "POST, OPTIONS"),
            (
                header::HeaderName::from_static("accept-post"),
                "application/sdp",
            ),
        ],
    )
        .into_response();
    if let Some(handle) = state.rooms.get(&room) {
        if !handle.is_banned(&claims.sub).await.unwrap_or(true) {
            add_links(&state, &claims, &mut res);
        }
    }
    Ok(res)
}

/// Relay credentials for `claims.sub`, expiring with the token at the latest.
fn add_links(state: &AppState, claims: &Claims, res: &mut Response) {
    if let Some(turn) = &state.turn {
        let expiry = turn.expiry(crate::auth::unix_now(), Some(claims.exp));
        let server = turn.ice_server(&claims.sub, expiry);
        for link in crate::turn::link_headers(&server) {
            if let Ok(v) = header::HeaderValue::from_str(&link) {
                res.headers_mut().append(header::LINK, v);
            }
        }
    }
}

/// 201 with the answer, the resource's URL and ETag, the PATCH type it takes; with a relay
/// configured, its credentials as `Link: <turn:...>; rel="ice-server"` headers (RFC 9725
/// section 4.4). The answer names no engine (the SFU scrubs its origin line).
fn created(
    state: &AppState,
    claims: &Claims,
    location: String,
    id: &str,
    answer: String,
) -> Response {
    let mut res = (
        StatusCode::CREATED,
        [
            (header::LOCATION, location),
            (header::CONTENT_TYPE, "application/sdp".to_string()),
            (header::ETAG, etag(id)),
            (
                header::HeaderName::from_static("accept-patch"),
                "application/trickle-ice-sdpfrag".to_string(),
            ),
        ],
        answer,
    )
        .into_response();
    add_links(state, claims, &mut res);
    res
}

fn sdp_error(error: SfuError) -> ApiError {
    match error {
        SfuError::BadSdp(why) => ApiError::bad_request(format!("bad SDP: {why}")),
        SfuError::UnknownPeer => ApiError::bad_request("bad SDP: the offer was rejected"),
        other => ApiError::unavailable(other.to_string()),
    }
}

/// In a cluster, a room's media terminates on its owner: a request to another node is sent
/// there with 307 (RFC 9725 allows it; the method and body are kept).
pub(super) async fn redirect_to_owner(
    state: &AppState,
    room: &str,
    uri: &axum::http::Uri,
    start_here: bool,
) -> Result<Option<Response>, ApiError> {
    let Some(cluster) = &state.cluster else {
        return Ok(None);
    };
    let unreachable =
        |_| ApiError::unavailable("the cluster's store is unreachable; retry shortly");
    if start_here {
        // No owner yet: this node's link takes the lease (or learns who did).
        state.rooms.get_or_start(room);
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        match cluster.owner_of(room).await.map_err(unreachable)? {
            crate::cluster::Ownership::Here => return Ok(None),
            crate::cluster::Ownership::Elsewhere(http) => {
                let target = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
                return Ok(Some(
                    (
                        StatusCode::TEMPORARY_REDIRECT,
                        [(header::LOCATION, format!("{http}{target}"))],
                    )
                        .into_response(),
                ));
            }
            crate::cluster::Ownership::Nobody if !start_here => return Ok(None),
            crate::cluster::Ownership::Nobody => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(ApiError::unavailable(
                        "no node owns this room yet; retry shortly",
                    ));
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// A publisher (e.g. OBS) joins the room under its token's name and publishes, if the room
/// lets it: stage rights are the room's (a presenter taken off stage stays off), as for a
/// WebSocket publisher; a host puts themselves on stage, which they may do anyway.
async fn whip(
    State(state): State<AppState>,
    Path(room): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: String,
) -> Result<Response, Refusal> {
    let (media, claims) = check_request(&state, &room, &headers, &body)?;
    state.refuse_revoked(&claims).await?;
    if let Some(redirect) = redirect_to_owner(&state, &room, &uri, true).await? {
        return Ok(redirect);
    }
    if !matches!(claims.role, Role::Host | Role::Presenter) {
        return Err(
            ApiError::forbidden("only host and presenter tokens may publish over WHIP").into(),
        );
    }
    let limits = &state.limits.whip_whep;
    let slot = state
        .resources
        .reserve(&room, &claims.sub, Kind::Whip, &body, limits)?;
    let asked = std::time::Instant::now();
    let handle = state.rooms.get_or_start(&room);
    let (outbox, inbox) = outbox::outbox(64);
    let connection = Uuid::new_v4();
    let registration = state.hub.register(&room, &claims.sub, connection, outbox);
    let joiner = Joiner {
        identity: claims.sub.clone(),
        name: claims.name.clone(),
        role: claims.role,
        attrs: claims.attrs.clone(),
        on_stage: claims.role == Role::Host,
        credentials_until: Some(claims.exp),
    };
    let start = match handle.join(joiner, connection, None).await {
        Ok(Ok(start)) => start,
        Ok(Err(denied)) => return Err(ApiError::forbidden(denied.message).into()),
        Err(gone) => return Err(ApiError::unavailable(gone.to_string()).into()),
    };
    let leave = Leave {
        handle: handle.clone(),
        session_id: start.session_id,
        connection,
    };
    if !start.may_publish {
        leave.now().await;
        return Err(ApiError::forbidden(
            "you are not on stage in this room: a host or moderator took you off it, and only they can invite you back",
        )
        .into());
    }
    let peer = format!("{}.whip-{}", claims.sub, &slot.id[..8]);
    let events = media.sfu.add_peer(
        peer.clone(),
        group(&room, Place::Main),
        PeerOptions::whip(claims.name.clone()),
    );
    let answer = match media.sfu.accept_offer(&peer, body).await {
        Ok(answer) => answer,
        Err(error) => {
            media.sfu.remove_peer(&peer);
            leave.now().await;
            return Err(sdp_error(error).into());
        }
    };
    crate::metrics::observe_join(asked.elapsed());
    let (stop_tx, stop_rx) = oneshot::channel();
    let resource = slot.id.clone();
    slot.go_live(stop_tx);
    // The room decides who may publish: follow its word for this publisher (stage, removal),
    // read from the same lanes and in the same way as a WebSocket session's.
    let room_events = state.hub.events(
        &room,
        false,
        start.viewer.place,
        inbox.frames.direct_lane(),
        start.seq,
    );
    let session = Publisher {
        media,
        peer,
        identity: claims.sub.clone(),
        resource: resource.clone(),
        resources: state.resources.clone(),
        leave,
    };
    let viewer = start.viewer.clone();
    tokio::spawn(async move {
        // The mailbox accepts events only while its reading end lives.
        let _reachable = (registration, inbox);
        session.run(events, room_events, viewer, stop_rx).await;
    });
    let location = format!("/whip/{room}/{resource}");
    Ok(created(&state, &claims, location, &resource, answer))
}

/// Ends a WHIP publisher's place in the room.
struct Leave {
    handle: convene_core::room::actor::RoomHandle,
    session_id: Uuid,
    connection: Uuid,
}

impl Leave {
    async fn now(&self) {
        let closed = RoomInput::Closed {
            session_id: self.session_id,
            connection: self.connection,
            left: true,
        };
        let _ = self.handle.send(closed.into()).await;
    }
}

/// A running WHIP publisher: relays its tracks to the room and follows the room's word.
struct Publisher {
    media: Media,
    peer: convene_sfu::PeerId,
    identity: String,
    resource: String,
    resources: super::media_sessions::Resources,
    leave: Leave,
}

impl Publisher {
    async fn run(
        self,
        events: tokio::sync::mpsc::UnboundedReceiver<convene_sfu::PeerEvent>,
        mut room_events: crate::session::EventStream,
        mut viewer: convene_core::room::Viewer,
        stop_rx: oneshot::Receiver<()>,
    ) {
        let (media, peer, handle) = (&self.media, &self.peer, &self.leave.handle);
        // A publisher that falls a whole lane behind ends rather than guess what it missed.
        let follow_rights = async {
            loop {
                let Ok(event) = room_events.recv().await else {
                    tracing::warn!("WHIP publisher fell behind the room's events; ending it");
                    return;
                };
                match follow(&mut viewer, &mut room_events, &event) {
                    Rights::Unchanged => {}
                    Rights::Changed {
                        may_publish, muted, ..
                    } => {
                        media.sfu.set_can_publish(peer, may_publish);
                        if let Some(muted) = muted {
                            crate::media::apply_mutes(&media.sfu, peer, muted);
                        }
                    }
                    Rights::Recheck => {
                        if let Ok(Some(rights)) = handle.media_access(&viewer.identity).await {
                            media.sfu.set_can_publish(peer, rights.may_publish);
                            let muted = crate::media::Mutes::of(&rights.muted);
                            crate::media::apply_mutes(&media.sfu, peer, muted);
                        }
                    }
                    Rights::Removed => return,
                }
            }
        };
        tokio::select! {
            _ = media.relay_tracks(handle, &self.identity, peer, events, None) => {}
            _ = stop_rx => {}
            _ = follow_rights => {}
        }
        media.sfu.remove_peer(peer);
        self.resources.remove(&self.resource);
        self.leave.now().await;
        tracing::info!(room = %handle.name, identity = %self.identity, "WHIP session ended");
    }
}

#[derive(Deserialize)]
struct WhepQuery {
    participant: Option<String>,
}

/// A viewer plays the room's main-room tracks (or one participant's) without the chat client.
async fn whep(
    State(state): State<AppState>,
    Path(room): Path<String>,
    Query(query): Query<WhepQuery>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: String,
) -> Result<Response, Refusal> {
    let (media, claims) = check_request(&state, &room, &headers, &body)?;
    state.refuse_revoked(&claims).await?;
    if let Some(redirect) = redirect_to_owner(&state, &room, &uri, false).await? {
        return Ok(redirect);
    }
    let handle = state
        .rooms
        .get(&room)
        .ok_or_else(|| ApiError::not_found(format!("room {room:?} is not running")))?;
    if handle.is_banned(&claims.sub).await.unwrap_or(false) {
        return Err(ApiError::forbidden("you were removed from this room").into());
    }
    // Attendees wait in the lobby: the backstage's media is not theirs to play.
    if !claims.role.is_staff() && state.convenings.lobby(&room).is_some() {
        return Err(ApiError::forbidden("this convening has not started").into());
    }
    let only = match &query.participant {
        Some(identity) => Some(media.publisher_peer(&room, identity).ok_or_else(|| {
            ApiError::not_found(format!("participant {identity:?} is not publishing"))
        })?),
        None => None,
    };
    let limits = &state.limits.whip_whep;
    let slot = state
        .resources
        .reserve(&room, &claims.sub, Kind::Whep, &body, limits)?;
    let peer = format!("whep-{}", slot.id);
    let mut events = media.sfu.add_peer(
        peer.clone(),
        group(&room, Place::Main),
        PeerOptions::whep(claims.name.clone(), only),
    );
    let answer = match media.sfu.accept_offer(&peer, body).await {
        Ok(answer) => answer,
        Err(error) => {
            media.sfu.remove_peer(&peer);
            return Err(sdp_error(error).into());
        }
    };
    let (stop_tx, mut stop_rx) = oneshot::channel();
    let resource = slot.id.clone();
    slot.go_live(stop_tx);
    let resources = state.resources.clone();
    let id = resource.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    None | Some(convene_sfu::PeerEvent::Disconnected) => break,
                    Some(_) => {}
                },
                _ = &mut stop_rx => break,
            }
        }
        media.sfu.remove_peer(&peer);
        resources.remove(&id);
    });
    let location = format!("/whep/{room}/{resource}");
    Ok(created(&state, &claims, location, &resource, answer))
}
