//! `/api/v1/tokens` and `/api/v1/rooms/{room}/invites`: access tokens minted by the API key, and invites minted by room staff.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use convene_signaling::Role;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::*;
use crate::auth::Claims;
use crate::http::ws::bearer;
use crate::http::{ApiError, AppState};

/// The limits `Claims::check` applies to `attrs`, stated in the document.
pub(in crate::http) fn attrs_schema() -> utoipa::openapi::Object {
    use crate::auth::{MAX_ATTRS, MAX_ATTR_KEY_CHARS, MAX_ATTR_VALUE_CHARS};
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    const NO_CONTROLS: &str = r"^[^\u0000-\u001F\u007F-\u009F]*$";
    ObjectBuilder::new()
        .description(Some("Token attributes, e.g. {\"team\": \"Knox County\"}"))
        .max_properties(Some(MAX_ATTRS))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(MAX_ATTR_KEY_CHARS))
                .pattern(Some(NO_CONTROLS)),
        ))
        .additional_properties(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(MAX_ATTR_VALUE_CHARS))
                .pattern(Some(NO_CONTROLS)),
        ))
        .build()
}

/// A token to mint.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::http) struct TokenRequest {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    room: String,
    role: ApiRole,
    /// Shown to others; 1-200 characters, no control characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    name: String,
    /// Stable identity (`sub`); a new random one when absent.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    identity: Option<String>,
    /// At most 16, keys up to 64 characters, values up to 256.
    #[serde(default)]
    #[schema(schema_with = attrs_schema)]
    attrs: BTreeMap<String, String>,
    /// Lifetime in seconds (default 4 hours, at most 30 days).
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(minimum = 1, maximum = 2592000)]
    ttl_s: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub(in crate::http) struct TokenResponse {
    pub(in crate::http) token: String,
    pub(in crate::http) identity: String,
    /// A join link for the browser client.
    pub(in crate::http) url: String,
    /// The token's id (`jti`): what `DELETE /api/v1/rooms/{room}/invites/{token_id}` revokes.
    pub(in crate::http) token_id: String,
    /// Unix seconds.
    pub(in crate::http) expires_at: u64,
}

/// Mints an access token and a join link.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = TokenRequest, responses(
    (status = 200, body = TokenResponse),
    (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody),
    (status = 413, body = ErrorBody),
    (status = 415, body = ErrorBody),
))]
pub(in crate::http) async fn mint_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<TokenRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    if !matches!(authorise(&state, &headers, None).await?, Caller::Admin) {
        return Err(ApiError::forbidden("minting tokens needs the API key"));
    }
    let identity = req
        .identity
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let ttl_s = req.ttl_s.unwrap_or(4 * 3600);
    if !(1..=30 * 86_400).contains(&ttl_s) {
        return Err(ApiError::bad_request(
            "ttl_s must be 1 to 2592000 (30 days)",
        ));
    }
    let ttl = Duration::from_secs(ttl_s);
    let claims = Claims {
        sub: identity.clone(),
        name: req.name,
        room: req.room,
        role: req.role.into(),
        exp: crate::auth::unix_now() + ttl.as_secs(),
        attrs: req.attrs,
        nbf: None,
        jti: Some(uuid::Uuid::new_v4().simple().to_string()),
    };
    // Refuse here what the token check would refuse at every use. A name-less token is for
    // room invites (the person names themselves); the admin API always names people.
    if claims.name.trim().is_empty() {
        return Err(ApiError::bad_request("name must be 1-200 characters"));
    }
    claims.check().map_err(ApiError::bad_request)?;
    Ok(Json(TokenResponse::minted(&state, &claims)))
}

impl TokenResponse {
    /// The token for `claims`, with its join link.
    pub(in crate::http) fn minted(state: &AppState, claims: &Claims) -> TokenResponse {
        let token = state.keys.mint(claims);
        let url = format!(
            "{}/?token={token}",
            state.config.public_url(state.config.server.listen)
        );
        TokenResponse {
            token,
            identity: claims.sub.clone(),
            url,
            token_id: claims.jti.clone().unwrap_or_default(),
            expires_at: claims.exp,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::http) struct InviteRequest {
    role: ApiRole,
    /// Shown to others; empty: the person picks a name when they join (`/ws?name=`).
    #[serde(default)]
    #[schema(max_length = 100, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    name: String,
    /// At most 8, keys 1-64 bytes, values up to 200 bytes (e.g. `{"team": "Knox County"}`).
    #[serde(default)]
    #[schema(schema_with = attrs_schema)]
    attrs: BTreeMap<String, String>,
    /// Lifetime in seconds (default 1 day; clamped to 60 s - 30 days).
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(minimum = 1, maximum = 2592000)]
    ttl_s: Option<u64>,
}

/// How far up a role reaches: an inviter may hand out only roles below their own.
pub(in crate::http) fn rank(role: Role) -> u8 {
    match role {
        Role::Host => 3,
        Role::Moderator => 2,
        Role::Presenter => 1,
        Role::Participant => 0,
    }
}

/// `POST /rooms/{room}/invites`: a host or moderator of the room mints a join link for that
/// room, for a role below their own (the page's invite panel uses it), living no longer than
/// their own token nor `auth.max_invite_ttl_s`.
#[utoipa::path(post, path = "/api/v1/rooms/{room}/invites", tag = "tokens", request_body = InviteRequest,
    params(("room" = String, Path, description = "The room")),
    responses(
        (status = 200, body = TokenResponse),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody),
        (status = 503, body = ErrorBody),
))]
pub(in crate::http) async fn mint_invite(
    State(state): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<InviteRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let role: Role = req.role.into();
    let inviter = room_staff(&state, &headers, &room).await?;
    if rank(role) >= rank(inviter.role) {
        return Err(ApiError::forbidden(format!(
            "a {} may invite only roles below their own, not a {}",
            inviter.role.as_str(),
            role.as_str()
        )));
    }
    // No name: the person chooses one when they join. A given one is held to the same rule.
    let name = if req.name.trim().is_empty() {
        String::new()
    } else {
        crate::auth::check_chosen_name(&req.name).map_err(ApiError::bad_request)?
    };
    if req.attrs.len() > 8
        || req
            .attrs
            .iter()
            .any(|(k, v)| k.is_empty() || k.len() > 64 || v.len() > 200)
    {
        return Err(ApiError::bad_request(
            "at most 8 attributes, keys 1-64 and values up to 200 bytes",
        ));
    }
    let now = crate::auth::unix_now();
    let asked = req.ttl_s.unwrap_or(86_400).max(60);
    let ttl = asked
        .min(state.config.auth.max_invite_ttl_s.max(60))
        .min(inviter.exp.saturating_sub(now));
    let claims = Claims {
        sub: uuid::Uuid::new_v4().to_string(),
        name,
        room,
        role,
        exp: now + ttl,
        attrs: req.attrs,
        nbf: None,
        jti: Some(uuid::Uuid::new_v4().simple().to_string()),
    };
    claims.check().map_err(ApiError::bad_request)?;
    Ok(Json(TokenResponse::minted(&state, &claims)))
}

/// A host's or moderator's own token for `room`, unrevoked and not banned there.
async fn room_staff(state: &AppState, headers: &HeaderMap, room: &str) -> Result<Claims, ApiError> {
    let token = bearer(headers, None)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer"))?;
    let claims = state
        .keys
        .verify(&token, Some(room))
        .map_err(|e| ApiError::unauthorized(e.to_string()))?;
    if !claims.role.can_moderate() {
        return Err(ApiError::forbidden(
            "only a host or moderator of this room may do this",
        ));
    }
    state.refuse_revoked(&claims).await?;
    let banned = state.rooms.get_or_start(room).is_banned(&claims.sub).await;
    if banned.unwrap_or(false) {
        return Err(ApiError::forbidden("you were removed from this room"));
    }
    Ok(claims)
}

/// `DELETE /rooms/{room}/invites/{token_id}`: revokes an access token of the room by its id
/// (an invite's, or any token minted with one): it joins no more, and sessions that joined
/// with it close (4005), on every node.
#[utoipa::path(delete, path = "/api/v1/rooms/{room}/invites/{token_id}", tag = "tokens",
    params(
        ("room" = String, Path, description = "The room"),
        ("token_id" = String, Path, description = "The token's id (`token_id` when minted, the JWT's `jti`)",
            min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_.-]+$"),
    ),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The room holds too many revoked tokens"),
        (status = 503, body = ErrorBody),
))]
pub(in crate::http) async fn revoke_token(
    State(state): State<AppState>,
    Path((room, token_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let token = bearer(&headers, None)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer"))?;
    let key = &state.config.auth.api_key;
    if key.is_empty() || !constant_time_eq(token.as_bytes(), key.as_bytes()) {
        room_staff(&state, &headers, &room).await?;
    }
    // Minted ids are hex; ids from other tools are taken if they keep to URL-safe ASCII.
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if token_id.is_empty() || token_id.len() > 64 || !token_id.chars().all(plain) {
        return Err(ApiError::bad_request(
            "token_id must be 1-64 characters of A-Z, a-z, 0-9, '_', '.' and '-'",
        ));
    }
    // The id alone does not say when the token expires: deny it for the longest any lives.
    let until = crate::auth::unix_now() + MAX_TOKEN_TTL_S;
    revoke(&state, &room, &token_id, until).await?;
    tracing::info!(room, token_id, "access token revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// The longest lifetime the API mints (`/tokens`' `ttl_s` maximum).
pub(in crate::http) const MAX_TOKEN_TTL_S: u64 = 30 * 86_400;

/// Records a revocation (shared by the cluster) and closes the sessions that joined with it.
pub(in crate::http) async fn revoke(
    state: &AppState,
    room: &str,
    id: &str,
    until: u64,
) -> Result<(), ApiError> {
    state
        .revoked
        .revoke(room, id, until)
        .await
        .map_err(|e| match e {
            crate::revocation::RevokeError::Full(..) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            crate::revocation::RevokeError::Store(_) => ApiError::unavailable(e.to_string()),
        })?;
    // The room decides (on its owner node, in a cluster): its sessions are known there.
    let handle = if state.cluster.is_some() {
        Some(state.rooms.get_or_start(room))
    } else {
        state.rooms.get(room)
    };
    if let Some(handle) = handle {
        let input = convene_core::room::actor::RoomInput::Revoke {
            token_id: id.to_string(),
        };
        let _ = handle.send(input.into()).await;
    }
    Ok(())
}
