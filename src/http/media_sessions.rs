//! Live WHIP/WHEP sessions (RFC 9725 resources): their slots under the per-identity and per-room limits, `DELETE` and trickle-ICE `PATCH`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use convene_signaling::Role;
use tokio::sync::oneshot;

use super::{ApiError, AppState, TokenFrom};
use crate::auth::Claims;
use crate::config::WhipWhepLimits;

/// What a resource is: a WHIP publisher or a WHEP viewer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Whip,
    Whep,
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
    kind: Kind,
    /// The client's ICE ufrag from its offer: a PATCH naming another one is an ICE restart.
    ice_ufrag: Option<String>,
    /// `None` while the offer is being answered (the slot is held, not yet live).
    stop: Option<oneshot::Sender<()>>,
}

/// A refusal with an optional `Retry-After` (seconds), for the session limits.
pub struct Refusal(pub ApiError, pub Option<u64>);

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Refusal(e, None)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut res = self.0.into_response();
        if let Some(s) = self.1 {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        res
    }
}

/// A slot held for a session being set up: freed on drop unless [`Slot::go_live`] ran.
pub struct Slot {
    resources: Resources,
    pub id: String,
    live: bool,
}

impl Slot {
    /// The session is answered and running: `stop` ends it (DELETE, or the room's word).
    pub fn go_live(mut self, stop: oneshot::Sender<()>) {
        if let Some(r) = self.resources.lock().get_mut(&self.id) {
            r.stop = Some(stop);
        }
        self.live = true;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.live {
            self.resources.lock().remove(&self.id);
        }
    }
}

/// The resource's entity tag (RFC 9725 section 4.3.1): one ICE session per resource, since
/// restarts are refused, so the id names it.
pub fn etag(id: &str) -> String {
    format!("\"{id}\"")
}

impl Resources {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Resource>> {
        self.inner.lock().expect("resources lock")
    }

    /// Holds a slot for a new session of `owner` in `room`, or says which limit is full: held
    /// under one lock, so a burst of POSTs cannot all pass the count before any is counted.
    pub fn reserve(
        &self,
        room: &str,
        owner: &str,
        kind: Kind,
        offer: &str,
        limits: &WhipWhepLimits,
    ) -> Result<Slot, Refusal> {
        let mut map = self.lock();
        let (mut mine, mut in_room) = (0, 0);
        for r in map.values().filter(|r| r.kind == kind && r.room == room) {
            in_room += 1;
            mine += usize::from(r.owner == owner);
        }
        let (per_identity, what) = match kind {
            Kind::Whip => (limits.whip_sessions_per_identity, "WHIP"),
            Kind::Whep => (limits.whep_sessions_per_identity, "WHEP"),
        };
        if mine >= per_identity {
            let message = format!(
                "you already hold {mine} {what} sessions in this room (the limit); DELETE one to free its slot"
            );
            let e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_sessions", message);
            return Err(Refusal(e, Some(5)));
        }
        if kind == Kind::Whep && in_room >= limits.whep_sessions_per_room {
            let e = ApiError::unavailable(format!(
                "this room has {in_room} WHEP viewers on this server, its limit; retry later"
            ));
            return Err(Refusal(e, Some(30)));
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        map.insert(
            id.clone(),
            Resource {
                room: room.to_string(),
                owner: owner.to_string(),
                kind,
                ice_ufrag: ice_ufrag(offer),
                stop: None,
            },
        );
        Ok(Slot {
            resources: self.clone(),
            id,
            live: false,
        })
    }

    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// The resource if it is a live one of `room` and `by` may act on it: its owner, or a host
    /// or moderator of the room.
    fn check<'a>(
        map: &'a HashMap<String, Resource>,
        room: &str,
        id: &str,
        by: &Claims,
    ) -> Result<&'a Resource, ApiError> {
        match map.get(id) {
            Some(r) if r.room == room && r.stop.is_some() => {
                if r.owner != by.sub && !matches!(by.role, Role::Host | Role::Moderator) {
                    return Err(ApiError::forbidden(
                        "only its owner or a host or moderator may change this session",
                    ));
                }
                Ok(r)
            }
            _ => Err(ApiError::not_found("no such session in this room")),
        }
    }
}

/// The first `a=ice-ufrag:` of an SDP offer or fragment.
fn ice_ufrag(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        .map(|u| u.trim().to_string())
}

/// `DELETE` on a WHIP or WHEP resource ends that session (its owner's, or staff's, to end).
pub async fn end_resource(
    State(state): State<AppState>,
    Path((room, resource)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let claims = state.claims(&headers, TokenFrom::Header, Some(&room))?;
    let stop = {
        let mut map = state.resources.lock();
        Resources::check(&map, &room, &resource, &claims)?;
        map.remove(&resource).and_then(|r| r.stop)
    };
    if let Some(stop) = stop {
        let _ = stop.send(());
    }
    Ok(StatusCode::OK.into_response())
}

/// The methods a session resource answers, for `Allow` and CORS preflights.
pub const RESOURCE_METHODS: &str = "PATCH, DELETE, OPTIONS";

/// `OPTIONS` on a resource (not a CORS preflight): what it allows.
pub async fn resource_options() -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (header::ALLOW, RESOURCE_METHODS),
            (
                header::HeaderName::from_static("accept-patch"),
                "application/trickle-ice-sdpfrag",
            ),
        ],
    )
        .into_response()
}

/// `PATCH` with an SDP fragment (RFC 9725 section 4.3): trickled candidates are taken (204;
/// the server is ICE-lite and learns the client's addresses from its checks, so they need no
/// action); an ICE restart is refused with 422, as the RFC asks of a server that trickles
/// but does not restart (str0m could restart ICE, but the UDP router keys peers by the ufrag
/// it was given at creation). A stale `If-Match` gets 412.
pub async fn patch_resource(
    State(state): State<AppState>,
    Path((room, resource)): Path<(String, String)>,
    headers: HeaderMap,
    body: String,
) -> Result<Response, ApiError> {
    let claims = state.claims(&headers, TokenFrom::Header, Some(&room))?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("application/trickle-ice-sdpfrag") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Content-Type must be application/trickle-ice-sdpfrag",
        ));
    }
    let if_match = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let map = state.resources.lock();
    let r = Resources::check(&map, &room, &resource, &claims)?;
    let new_ufrag = ice_ufrag(&body);
    // RFC 9725: a restart carries `If-Match: *` and the client's new ufrag and pwd.
    let restart = if_match == Some("*")
        || new_ufrag.is_some_and(|u| r.ice_ufrag.as_ref().is_some_and(|old| *old != u));
    if restart {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "ice_restart_unsupported",
            "ICE restarts are not supported: DELETE this session and POST a new offer",
        ));
    }
    if let Some(tag) = if_match {
        if tag != etag(&resource) {
            return Err(ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                "If-Match does not name this session's ICE session (its ETag)",
            ));
        }
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> WhipWhepLimits {
        WhipWhepLimits {
            whip_sessions_per_identity: 1,
            whep_sessions_per_identity: 2,
            whep_sessions_per_room: 3,
            cors_origins: Vec::new(),
        }
    }

    #[test]
    fn slots_count_per_identity_and_room_and_free_on_drop() {
        let r = Resources::default();
        let l = limits();
        let a1 = r.reserve("r", "a", Kind::Whep, "", &l).ok().unwrap();
        let _a2 = r.reserve("r", "a", Kind::Whep, "", &l).ok().unwrap();
        let e = r.reserve("r", "a", Kind::Whep, "", &l).err().unwrap();
        assert_eq!((e.0.status, e.1), (StatusCode::TOO_MANY_REQUESTS, Some(5)));
        // Another room and the other kind have their own counts.
        assert!(r.reserve("s", "a", Kind::Whep, "", &l).is_ok());
        let _w = r.reserve("r", "a", Kind::Whip, "", &l).ok().unwrap();
        let _b = r.reserve("r", "b", Kind::Whep, "", &l).ok().unwrap();
        let e = r.reserve("r", "c", Kind::Whep, "", &l).err().unwrap();
        assert_eq!(
            (e.0.status, e.1),
            (StatusCode::SERVICE_UNAVAILABLE, Some(30))
        );
        drop(a1);
        assert!(r.reserve("r", "c", Kind::Whep, "", &l).is_ok());
    }

    #[test]
    fn ufrag_is_read_from_offer_and_fragment() {
        assert_eq!(
            ice_ufrag("v=0\r\na=ice-ufrag:EsAw\r\na=ice-pwd:x\r\n").as_deref(),
            Some("EsAw")
        );
        assert_eq!(ice_ufrag("v=0\r\n"), None);
    }
}
