//! Shareable audience links: one link for a whole webcast audience, which admits each person who
//! opens it under an identity of their own.
//!
//! A host or moderator mints a link (`POST /api/v1/rooms/{room}/audience-link`): a signed token
//! naming the room, the link's id, its expiry and how many people it may admit. It is never an
//! access token. Each person exchanges it with their name (`POST .../audience-link/join`) for a
//! personal access token of a fresh, server-minted identity, which their browser keeps for
//! reconnects. A link is revoked by id; a revoked link admits no one new, while people already
//! admitted keep their seats (a moderator removes anyone who must go).
//!
//! Revocations go on the shared deny list (`crate::revocation`: in Redis for a cluster, so
//! every node refuses a revoked link). How many people each link has admitted is counted by
//! the node that exchanges it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use convene_signaling::Role;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{constant_time_eq, ErrorBody, JsonBody, TokenResponse};
use crate::auth::{unix_now, LinkClaims};
use crate::http::ws::bearer;
use crate::http::{ApiError, AppState};

/// Live (unexpired, unrevoked) links per room: a handful is plenty for one event.
pub const MAX_LINKS_PER_ROOM: usize = 20;
/// Links this node remembers at all, revoked ones included until they expire.
const MAX_LINKS: usize = 10_000;
/// People one link may admit, at most (and by default).
pub const MAX_PEOPLE: u32 = 100_000;
const DEFAULT_PEOPLE: u32 = 5_000;
/// Characters in a display name given at the exchange (as `/ws?name=`).
/// The longest an audience link lives.
const MAX_LINK_TTL_S: u64 = 30 * 86_400;

/// A link's entry on the deny list, apart from access tokens' ids.
fn revoked_id(link: &str) -> String {
    format!("link:{link}")
}

#[derive(Debug)]
struct Entry {
    room: String,
    exp: u64,
    revoked: bool,
    admitted: u32,
}

/// This node's audience links: which are revoked and how many each has admitted.
#[derive(Clone, Default)]
pub struct AudienceLinks {
    links: Arc<Mutex<HashMap<String, Entry>>>,
}

/// Why an exchange was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Revoked,
    Full(u32),
}

impl AudienceLinks {
    fn prune(links: &mut HashMap<String, Entry>, now: u64) {
        links.retain(|_, e| e.exp > now);
    }

    /// Records a new link; refused when the room (or this node) holds too many live ones.
    fn add(&self, id: &str, room: &str, exp: u64, now: u64) -> Result<(), ApiError> {
        let mut links = self.links.lock().expect("audience links lock poisoned");
        Self::prune(&mut links, now);
        let live = links
            .values()
            .filter(|e| e.room == room && !e.revoked)
            .count();
        if live >= MAX_LINKS_PER_ROOM || links.len() >= MAX_LINKS {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!(
                    "room {room:?} has {live} live audience links (at most {MAX_LINKS_PER_ROOM}): revoke one first"
                ),
            ));
        }
        links.insert(
            id.to_string(),
            Entry {
                room: room.to_string(),
                exp,
                revoked: false,
                admitted: 0,
            },
        );
        Ok(())
    }

    /// Revokes a link of `room`: its expiry, or `None` when this node knows no such link.
    fn revoke(&self, room: &str, id: &str) -> Option<u64> {
        let mut links = self.links.lock().expect("audience links lock poisoned");
        let entry = links.get_mut(id).filter(|e| e.room == room)?;
        entry.revoked = true;
        Some(entry.exp)
    }

    /// Counts one more person admitted by `link`, unless it is revoked or full.
    pub fn admit(&self, link: &LinkClaims, now: u64) -> Result<(), Refusal> {
        let mut links = self.links.lock().expect("audience links lock poisoned");
        Self::prune(&mut links, now);
        if links.len() >= MAX_LINKS && !links.contains_key(&link.link) {
            // Not minted here and no room to remember it: refusing is the safe side.
            return Err(Refusal::Full(0));
        }
        let entry = links.entry(link.link.clone()).or_insert_with(|| Entry {
            room: link.room.clone(),
            exp: link.exp,
            revoked: false,
            admitted: 0,
        });
        if entry.revoked {
            return Err(Refusal::Revoked);
        }
        if entry.admitted >= link.max_people.min(MAX_PEOPLE) {
            return Err(Refusal::Full(link.max_people));
        }
        entry.admitted += 1;
        Ok(())
    }
}

/// The API key, or a host's or moderator's token for this room.
fn staff(state: &AppState, headers: &HeaderMap, room: &str) -> Result<(), ApiError> {
    let token = bearer(headers, None)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer"))?;
    let key = &state.config.auth.api_key;
    if !key.is_empty() && constant_time_eq(token.as_bytes(), key.as_bytes()) {
        return Ok(());
    }
    let claims = state
        .keys
        .verify(&token, Some(room))
        .map_err(|e| ApiError::unauthorized(e.to_string()))?;
    if !claims.role.can_moderate() {
        return Err(ApiError::forbidden(
            "only a host or moderator of this room may manage audience links",
        ));
    }
    Ok(())
}

/// A new audience link.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AudienceLinkRequest {
    /// Lifetime in seconds (default 1 day; 60 s to 30 days).
    #[serde(default, deserialize_with = "super::whole_number")]
    #[schema(minimum = 60, maximum = 2592000)]
    ttl_s: Option<u64>,
    /// How many people it may admit (default 5000).
    #[serde(default, deserialize_with = "super::whole_number")]
    #[schema(minimum = 1, maximum = 100000)]
    max_people: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct AudienceLinkResponse {
    /// What revoking it names.
    id: String,
    /// The link's token (not an access token: exchange it at `.../audience-link/join`).
    token: String,
    /// The link for the browser client: each person who opens it gives their name.
    url: String,
    /// Unix seconds.
    expires_at: u64,
    max_people: u32,
}

/// Mints a shareable audience link for a room: everyone who opens it joins as a participant
/// under an identity of their own.
#[utoipa::path(post, path = "/api/v1/rooms/{room}/audience-link", tag = "tokens",
    request_body = AudienceLinkRequest,
    params(("room" = String, Path, description = "The room")),
    responses(
        (status = 200, body = AudienceLinkResponse),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The room has too many live audience links"),
        (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody),
))]
pub async fn mint_audience_link(
    State(state): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<AudienceLinkRequest>,
) -> Result<Json<AudienceLinkResponse>, ApiError> {
    staff(&state, &headers, &room)?;
    let max_people = match req.max_people {
        None => DEFAULT_PEOPLE,
        Some(n) if (1..=u64::from(MAX_PEOPLE)).contains(&n) => n as u32,
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "max_people must be 1 to {MAX_PEOPLE}"
            )))
        }
    };
    let ttl = match req.ttl_s {
        None => Duration::from_secs(86_400),
        Some(s) if (60..=30 * 86_400).contains(&s) => Duration::from_secs(s),
        Some(_) => {
            return Err(ApiError::bad_request(
                "ttl_s must be 60 to 2592000 (30 days)",
            ))
        }
    };
    let now = unix_now();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let claims = LinkClaims {
        link: id.clone(),
        room: room.clone(),
        role: Role::Participant,
        exp: now + ttl.as_secs(),
        max_people,
    };
    state.audience.add(&id, &room, claims.exp, now)?;
    let token = state.keys.mint_link(&claims);
    let url = format!(
        "{}/?token={token}",
        state.config.public_url(state.config.server.listen)
    );
    tracing::info!(room, link = id, max_people, "audience link minted");
    Ok(Json(AudienceLinkResponse {
        id,
        token,
        url,
        expires_at: claims.exp,
        max_people,
    }))
}

/// Revokes an audience link: it admits no one new (people already in keep their seats).
#[utoipa::path(delete, path = "/api/v1/rooms/{room}/audience-link/{id}", tag = "tokens",
    params(
        ("room" = String, Path, description = "The room"),
        ("id" = String, Path, description = "The link's id"),
    ),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such link for this room"),
        (status = 409, body = ErrorBody, description = "The room's revocation list is full"),
        (status = 503, body = ErrorBody, description = "The revocation list is unreachable"),
))]
pub async fn revoke_audience_link(
    State(state): State<AppState>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    staff(&state, &headers, &room)?;
    if id.is_empty() || id.len() > 64 || crate::auth::has_unsafe_chars(&id) {
        return Err(ApiError::not_found(format!(
            "room {room:?} has no audience link {id:?}"
        )));
    }
    // A link this node never saw may have been minted by another node of the cluster.
    let until = match state.audience.revoke(&room, &id) {
        Some(exp) => exp,
        None if state.cluster.is_some() => unix_now() + MAX_LINK_TTL_S,
        None => {
            return Err(ApiError::not_found(format!(
                "room {room:?} has no audience link {id:?}"
            )))
        }
    };
    state
        .revoked
        .revoke(&room, &revoked_id(&id), until)
        .await
        .map_err(|e| match e {
            crate::revocation::RevokeError::Full(..) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            crate::revocation::RevokeError::Store(_) => ApiError::unavailable(e.to_string()),
        })?;
    tracing::info!(room, link = id, "audience link revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// A person's name, given when they open an audience link.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// Shown to others: 1-100 characters, no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    name: String,
}

/// Exchanges an audience link (`Authorization: Bearer <link token>`) and a name for a personal
/// access token: a fresh identity for this one person.
#[utoipa::path(post, path = "/api/v1/rooms/{room}/audience-link/join", tag = "tokens",
    request_body = JoinRequest,
    params(("room" = String, Path, description = "The room")),
    responses(
        (status = 200, body = TokenResponse),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody, description = "No valid, unexpired audience link for this room"),
        (status = 403, body = ErrorBody, description = "The link has admitted as many people as it may"),
        (status = 410, body = ErrorBody, description = "The link was revoked"),
        (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "The revocation list is unreachable"),
))]
pub async fn join_audience_link(
    State(state): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<JoinRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let token = bearer(&headers, None)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <audience link>"))?;
    let link = state
        .keys
        .verify_link(&token, Some(&room))
        .map_err(|e| ApiError::unauthorized(format!("audience link: {e}")))?;
    let name = crate::auth::check_chosen_name(&req.name).map_err(ApiError::bad_request)?;
    let revoked = state
        .revoked
        .is_revoked(&room, &revoked_id(&link.link))
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let admitted = if revoked {
        Err(Refusal::Revoked)
    } else {
        state.audience.admit(&link, unix_now())
    };
    match admitted {
        Ok(()) => {}
        Err(Refusal::Revoked) => {
            return Err(ApiError::new(
                StatusCode::GONE,
                "revoked",
                "this audience link was revoked by the organisers: ask them for a new one",
            ))
        }
        Err(Refusal::Full(max)) => {
            return Err(ApiError::forbidden(format!(
                "this audience link has admitted as many people as it may ({max}): ask the organisers for another"
            )))
        }
    }
    let now = unix_now();
    let claims = crate::auth::Claims {
        sub: uuid::Uuid::new_v4().to_string(),
        name,
        room,
        role: link.role,
        exp: now + link.exp.saturating_sub(now).max(60),
        attrs: Default::default(),
        nbf: None,
        jti: Some(uuid::Uuid::new_v4().simple().to_string()),
    };
    Ok(Json(TokenResponse::minted(&state, &claims)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(id: &str, max_people: u32) -> LinkClaims {
        LinkClaims {
            link: id.into(),
            room: "r".into(),
            role: Role::Participant,
            exp: 1_000,
            max_people,
        }
    }

    #[test]
    fn a_link_admits_up_to_its_limit_until_revoked() {
        let book = AudienceLinks::default();
        book.add("a", "r", 1_000, 0).unwrap();
        assert_eq!(book.admit(&link("a", 2), 1), Ok(()));
        assert_eq!(book.admit(&link("a", 2), 1), Ok(()));
        assert_eq!(book.admit(&link("a", 2), 1), Err(Refusal::Full(2)));
        assert_eq!(book.revoke("other-room", "a"), None);
        assert_eq!(book.revoke("r", "a"), Some(1_000));
        assert_eq!(book.admit(&link("a", 9), 1), Err(Refusal::Revoked));
        assert_eq!(book.revoke("r", "unknown"), None);
    }

    #[test]
    fn a_room_holds_a_bounded_number_of_live_links() {
        let book = AudienceLinks::default();
        for i in 0..MAX_LINKS_PER_ROOM {
            book.add(&format!("l{i}"), "r", 1_000, 0).unwrap();
        }
        assert_eq!(
            book.add("one-more", "r", 1_000, 0).unwrap_err().status,
            StatusCode::CONFLICT
        );
        // Another room is not affected; a revoked link frees its place; expired ones go.
        book.add("elsewhere", "q", 1_000, 0).unwrap();
        assert!(book.revoke("r", "l0").is_some());
        book.add("one-more", "r", 1_000, 0).unwrap();
        book.add("later", "r", 5_000, 2_000).unwrap();
    }
}
