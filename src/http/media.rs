//! WHIP ingest (`POST /whip/{room}`) and WHEP playback (`POST /whep/{room}`), RFC 9725 semantics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::Router;
use convene_signaling::Role;
use serde::Deserialize;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::{ApiError, AppState, TokenFrom};
use crate::auth::Claims;
use crate::media::{group, Media};
use crate::outbox;
use crate::session::{follow, Rights};
use convene_core::room::actor::RoomInput;
use convene_core::room::{Joiner, Place};
use convene_sfu::{PeerOptions, SfuError};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/whip/{room}", post(whip).options(ice_servers))
        .route("/whip/{room}/{resource}", delete(end_resource))
        .route("/whep/{room}", post(whep).options(ice_servers))
        .route("/whep/{room}/{resource}", delete(end_resource))
}

/// Live WHIP/WHEP sessions, by resource id; dropping the sender ends the session.
#[derive(Clone, Default)]
pub struct Resources {
    inner: Arc<Mutex<HashMap<String, Resource>>>,
}

struct Resource {
    room: String,
    /// The identity whose token created it: they, or the room's staff, may end it.
    owner: String,
    stop: oneshot::Sender<()>,
}

impl Resources {
    fn insert(&self, id: &str, room: &str, owner: &str, stop: oneshot::Sender<()>) {
        let mut map = self.inner.lock().expect("resources lock");
        map.insert(
            id.to_string(),
            Resource {
                room: room.to_string(),
                owner: owner.to_string(),
                stop,
            },
        );
    }
    fn remove(&self, id: &str) -> Option<Resource> {
        self.inner.lock().expect("resources lock").remove(id)
    }

    /// Removes the resource if it belongs to `room` and `by` may end it: its owner, or a host
    /// or moderator of the room.
    fn remove_by(&self, room: &str, id: &str, by: &Claims) -> Result<Resource, ApiError> {
        let mut map = self.inner.lock().expect("resources lock");
        match map.get(id) {
            Some(r) if r.room == room => {
                if r.owner != by.sub && !matches!(by.role, Role::Host | Role::Moderator) {
                    return Err(ApiError::forbidden(
                        "only its owner or a host or moderator may end this session",
                    ));
                }
                Ok(map.remove(id).expect("present under the same lock"))
            }
            _ => Err(ApiError::not_found("no such session in this room")),
        }
    }
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
/// `Link` headers carry credentials (RFC 9725 section 4.4).
async fn ice_servers(
    State(state): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let claims = state.claims(&headers, TokenFrom::Header, Some(&room))?;
    let mut res = (
        StatusCode::NO_CONTENT,
        [(
            header::HeaderName::from_static("accept-post"),
            "application/sdp",
        )],
    )
        .into_response();
    add_links(&state, &claims.sub, &mut res);
    Ok(res)
}

fn add_links(state: &AppState, identity: &str, res: &mut Response) {
    if let Some(turn) = &state.turn {
        let server = turn.ice_server(identity, crate::auth::unix_now());
        for link in crate::turn::link_headers(&server) {
            if let Ok(v) = header::HeaderValue::from_str(&link) {
                res.headers_mut().append(header::LINK, v);
            }
        }
    }
}

/// 201 with the answer; with a relay configured, its credentials for `identity` as
/// `Link: <turn:...>; rel="ice-server"` headers (RFC 9725 section 4.4).
fn created(state: &AppState, identity: &str, location: String, answer: String) -> Response {
    let mut res = (
        StatusCode::CREATED,
        [
            (header::LOCATION, location),
            (header::CONTENT_TYPE, "application/sdp".to_string()),
        ],
        answer,
    )
        .into_response();
    add_links(state, identity, &mut res);
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

/// A publisher (e.g. OBS) joins the room on stage under its token's name and publishes.
async fn whip(
    State(state): State<AppState>,
    Path(room): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: String,
) -> Result<Response, ApiError> {
    let (media, claims) = check_request(&state, &room, &headers, &body)?;
    state.refuse_revoked(&claims).await?;
    if let Some(redirect) = redirect_to_owner(&state, &room, &uri, true).await? {
        return Ok(redirect);
    }
    let identity = claims.sub.clone();
    if !matches!(claims.role, Role::Host | Role::Presenter) {
        return Err(ApiError::forbidden(
            "only host and presenter tokens may publish over WHIP",
        ));
    }
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
        on_stage: true,
    };
    let start = match handle.join(joiner, connection, None).await {
        Ok(Ok(start)) => start,
        Ok(Err(denied)) => return Err(ApiError::forbidden(denied.message)),
        Err(gone) => return Err(ApiError::unavailable(gone.to_string())),
    };
    let session_id = start.session_id;
    let leave = {
        let handle = handle.clone();
        move || async move {
            let _ = handle
                .send(
                    RoomInput::Closed {
                        session_id,
                        connection,
                        left: true,
                    }
                    .into(),
                )
                .await;
        }
    };
    let resource = Uuid::new_v4().simple().to_string();
    let peer = format!("{}.whip-{}", claims.sub, &resource[..8]);
    let events = media.sfu.add_peer(
        peer.clone(),
        group(&room, Place::Main),
        PeerOptions::whip(claims.name.clone()),
    );
    let answer = match media.sfu.accept_offer(&peer, body).await {
        Ok(answer) => answer,
        Err(error) => {
            media.sfu.remove_peer(&peer);
            leave().await;
            return Err(sdp_error(error));
        }
    };
    crate::metrics::observe_join(asked.elapsed());
    let (stop_tx, stop_rx) = oneshot::channel();
    state
        .resources
        .insert(&resource, &room, &claims.sub, stop_tx);
    let resources = state.resources.clone();
    let id = resource.clone();
    // The room decides who may publish: follow its word for this publisher (stage, removal),
    // read from the same lanes and in the same way as a WebSocket session's. A publisher
    // that falls a whole lane behind ends rather than guess what it missed.
    let mut room_events = state.hub.events(
        &room,
        false,
        start.viewer.place,
        inbox.frames.direct_lane(),
        start.seq,
    );
    let mut viewer = start.viewer.clone();
    tokio::spawn(async move {
        // The mailbox accepts events only while its reading end lives.
        let _reachable = (registration, inbox);
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
                        media.sfu.set_can_publish(&peer, may_publish);
                        if let Some(muted) = muted {
                            crate::media::apply_mutes(&media.sfu, &peer, muted);
                        }
                    }
                    Rights::Recheck => {
                        if let Ok(Some(rights)) = handle.media_access(&viewer.identity).await {
                            media.sfu.set_can_publish(&peer, rights.may_publish);
                            let muted = crate::media::Mutes::of(&rights.muted);
                            crate::media::apply_mutes(&media.sfu, &peer, muted);
                        }
                    }
                    Rights::Removed => return,
                }
            }
        };
        tokio::select! {
            _ = media.relay_tracks(&handle, &claims.sub, &peer, events, None) => {}
            _ = stop_rx => {}
            _ = follow_rights => {}
        }
        media.sfu.remove_peer(&peer);
        resources.remove(&id);
        leave().await;
        tracing::info!(room = %handle.name, identity = %claims.sub, "WHIP session ended");
    });
    Ok(created(
        &state,
        &identity,
        format!("/whip/{room}/{resource}"),
        answer,
    ))
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
) -> Result<Response, ApiError> {
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
        return Err(ApiError::forbidden("you were removed from this room"));
    }
    let only = match &query.participant {
        Some(identity) => Some(media.publisher_peer(&room, identity).ok_or_else(|| {
            ApiError::not_found(format!("participant {identity:?} is not publishing"))
        })?),
        None => None,
    };
    let resource = Uuid::new_v4().simple().to_string();
    let peer = format!("whep-{resource}");
    let mut events = media.sfu.add_peer(
        peer.clone(),
        group(&room, Place::Main),
        PeerOptions::whep(claims.name.clone(), only),
    );
    let answer = match media.sfu.accept_offer(&peer, body).await {
        Ok(answer) => answer,
        Err(error) => {
            media.sfu.remove_peer(&peer);
            return Err(sdp_error(error));
        }
    };
    let (stop_tx, mut stop_rx) = oneshot::channel();
    state
        .resources
        .insert(&resource, &room, &claims.sub, stop_tx);
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
    Ok(created(
        &state,
        &claims.sub,
        format!("/whep/{room}/{resource}"),
        answer,
    ))
}

/// `DELETE` on a WHIP or WHEP resource ends that session (its owner's, or staff's, to end).
async fn end_resource(
    State(state): State<AppState>,
    Path((room, resource)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let claims = state.claims(&headers, TokenFrom::Header, Some(&room))?;
    let found = state.resources.remove_by(&room, &resource, &claims)?;
    let _ = found.stop.send(());
    Ok(StatusCode::OK.into_response())
}
