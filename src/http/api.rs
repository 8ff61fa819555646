//! `/api/v1`: the admin API (rooms, tokens, Q&A export), behind the API key or, per room, a host token.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use convene_signaling::{Question, Role};
use serde::Deserialize;

use super::ws::bearer;
use super::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/rooms", get(list_rooms))
        .route("/rooms/{room}/questions", get(export_questions))
        .route("/rooms/{room}/invites", post(mint_invite))
        .route("/rooms/{room}/polls", get(export_polls))
        .route("/tokens", post(mint_token))
}

enum Caller {
    Admin,
    Host,
}

/// The API key for everything, or a host token for its own room.
fn authorise(
    state: &AppState,
    headers: &HeaderMap,
    room: Option<&str>,
) -> Result<Caller, ApiError> {
    let token = bearer(headers, None)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer"))?;
    let key = &state.config.auth.api_key;
    if !key.is_empty() && constant_time_eq(token.as_bytes(), key.as_bytes()) {
        return Ok(Caller::Admin);
    }
    let Some(room) = room else {
        return Err(ApiError::unauthorized("this endpoint needs the API key"));
    };
    let claims = state
        .keys
        .verify(&token, Some(room))
        .map_err(|e| ApiError::unauthorized(e.to_string()))?;
    if claims.role != Role::Host {
        return Err(ApiError::forbidden(
            "only a host token or the API key may do this",
        ));
    }
    Ok(Caller::Host)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn list_rooms(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorise(&state, &headers, None)?;
    Ok(Json(serde_json::json!({ "rooms": state.rooms.names() })).into_response())
}

#[derive(Deserialize)]
struct ExportQuery {
    format: Option<String>,
}

async fn export_questions(
    State(state): State<AppState>,
    Path(room): Path<String>,
    Query(query): Query<ExportQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorise(&state, &headers, Some(&room))?;
    let format = query.format.as_deref().unwrap_or("json");
    if !matches!(format, "json" | "csv") {
        return Err(ApiError::bad_request("format must be json or csv"));
    }
    let handle = state
        .rooms
        .get(&room)
        .ok_or_else(|| ApiError::not_found(format!("room {room:?} is not running")))?;
    let questions = handle
        .export_questions()
        .await
        .map_err(|_| ApiError::not_found(format!("room {room:?} has closed")))?;
    Ok(match format {
        "csv" => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{room}-questions.csv\""),
                ),
            ],
            to_csv(&questions),
        )
            .into_response(),
        _ => Json(serde_json::json!({ "room": room, "questions": questions })).into_response(),
    })
}

/// `GET /rooms/{room}/polls?format=json|csv`: every poll with its results, like the Q&A export
/// (a host token for the room or the API key). CSV has one row per option.
async fn export_polls(
    State(state): State<AppState>,
    Path(room): Path<String>,
    Query(query): Query<ExportQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorise(&state, &headers, Some(&room))?;
    let format = query.format.as_deref().unwrap_or("json");
    if !matches!(format, "json" | "csv") {
        return Err(ApiError::bad_request("format must be json or csv"));
    }
    let handle = state
        .rooms
        .get(&room)
        .ok_or_else(|| ApiError::not_found(format!("room {room:?} is not running")))?;
    let polls = handle
        .export_polls()
        .await
        .map_err(|_| ApiError::not_found(format!("room {room:?} has closed")))?;
    if format == "json" {
        return Ok(Json(serde_json::json!({ "room": room, "polls": polls })).into_response());
    }
    let mut csv = String::from("poll_id,question,state,shared,voters,option,answers\n");
    for p in &polls {
        let counts = p.counts.clone().unwrap_or_default();
        for (i, option) in p.options.iter().enumerate() {
            let row = [
                p.id.to_string(),
                csv_field(&p.question),
                format!("{:?}", p.state).to_lowercase(),
                p.shared.to_string(),
                p.voters.unwrap_or(0).to_string(),
                csv_field(option),
                counts.get(i).copied().unwrap_or(0).to_string(),
            ];
            csv.push_str(&row.join(","));
            csv.push('\n');
        }
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{room}-polls.csv\""),
            ),
        ],
        csv,
    )
        .into_response())
}

fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}

fn to_csv(questions: &[Question]) -> String {
    let mut out = String::from("id,state,live,votes,text,edited,author,author_name,anonymous,asked_at,updated_at,answered_at,answer,duplicate_of\n");
    for q in questions {
        let row = [
            q.id.to_string(),
            format!("{:?}", q.state).to_lowercase(),
            q.live.to_string(),
            q.votes.to_string(),
            csv_field(&q.text),
            q.edited.to_string(),
            csv_field(q.author.as_deref().unwrap_or("")),
            csv_field(q.author_name.as_deref().unwrap_or(if q.anonymous {
                "anonymous"
            } else {
                ""
            })),
            q.anonymous.to_string(),
            q.asked_at.to_string(),
            q.updated_at.to_string(),
            q.answered_at.map(|t| t.to_string()).unwrap_or_default(),
            csv_field(q.answer.as_deref().unwrap_or("")),
            q.duplicate_of.map(|d| d.to_string()).unwrap_or_default(),
        ];
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

#[derive(Deserialize)]
struct TokenRequest {
    room: String,
    role: Role,
    name: String,
    identity: Option<String>,
    #[serde(default)]
    attrs: BTreeMap<String, String>,
    ttl_s: Option<u64>,
}

async fn mint_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(req): Json<TokenRequest>,
) -> Result<Response, ApiError> {
    if !matches!(authorise(&state, &headers, None)?, Caller::Admin) {
        return Err(ApiError::forbidden("minting tokens needs the API key"));
    }
    if req.room.is_empty() || req.name.is_empty() {
        return Err(ApiError::bad_request("room and name are required"));
    }
    let identity = req
        .identity
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let ttl = Duration::from_secs(req.ttl_s.unwrap_or(4 * 3600).min(30 * 86_400));
    let token = state
        .keys
        .mint_for(&req.room, req.role, &identity, &req.name, req.attrs, ttl);
    let url = format!(
        "{}/?token={token}",
        state.config.public_url(state.config.server.listen)
    );
    Ok(
        Json(serde_json::json!({ "token": token, "identity": identity, "url": url }))
            .into_response(),
    )
}

#[derive(Deserialize)]
struct InviteRequest {
    role: Role,
    #[serde(default)]
    name: String,
    #[serde(default)]
    attrs: BTreeMap<String, String>,
    ttl_s: Option<u64>,
}

/// How far up a role reaches: an inviter may hand out their own role or any below it.
fn rank(role: Role) -> u8 {
    match role {
        Role::Host => 3,
        Role::Moderator => 2,
        Role::Presenter => 1,
        Role::Participant => 0,
    }
}

/// `POST /rooms/{room}/invites`: a host or moderator of the room mints a join link for that
/// room, for a role no higher than their own (the page's invite panel uses it).
async fn mint_invite(
    State(state): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
    Json(req): Json<InviteRequest>,
) -> Result<Response, ApiError> {
    let token = bearer(&headers, None)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer"))?;
    let claims = state
        .keys
        .verify(&token, Some(&room))
        .map_err(|e| ApiError::unauthorized(e.to_string()))?;
    if !claims.role.can_moderate() {
        return Err(ApiError::forbidden(
            "only a host or moderator of this room may invite",
        ));
    }
    if rank(req.role) > rank(claims.role) {
        return Err(ApiError::forbidden(format!(
            "a {} may not invite a {}",
            claims.role.as_str(),
            req.role.as_str()
        )));
    }
    // No name: the person chooses one when they join.
    let name = req.name.trim();
    if name.chars().count() > 100 {
        return Err(ApiError::bad_request("name must be at most 100 characters"));
    }
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
    let identity = uuid::Uuid::new_v4().to_string();
    let ttl = Duration::from_secs(req.ttl_s.unwrap_or(86_400).clamp(60, 30 * 86_400));
    let token = state
        .keys
        .mint_for(&room, req.role, &identity, name, req.attrs, ttl);
    let url = format!(
        "{}/?token={token}",
        state.config.public_url(state.config.server.listen)
    );
    Ok(
        Json(serde_json::json!({ "token": token, "identity": identity, "url": url }))
            .into_response(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_quoting() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\"\n"), "\"say \"\"hi\"\"\n\"");
    }
}
