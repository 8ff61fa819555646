//! `/api/v1/convenings`: convenings scheduled ahead (plan, times, settings), their invites, and the host's start and end.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use convene_signaling::Role;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::*;
use crate::auth::Claims;
use crate::convenings::rfc3339;
use crate::convenings::{
    Breakouts, Convening, ConveningError, ConveningLimits, Kind, Plan, PlanSettings, State as Phase,
};
use crate::http::{ApiError, AppState};

/// A convening to schedule.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::http) struct NewConvening {
    /// The room it runs in (1-200 characters, no control characters).
    room: String,
    /// 1-200 characters.
    title: String,
    kind: Kind,
    /// RFC 3339, e.g. `2026-12-14T18:00:00Z`.
    #[schema(format = DateTime)]
    starts_at: String,
    #[schema(format = DateTime)]
    ends_at: String,
    /// Identities (token `sub`) who present, and who moderate.
    #[serde(default)]
    presenters: Vec<String>,
    #[serde(default)]
    moderators: Vec<String>,
    #[serde(default)]
    breakouts: Breakouts,
    #[serde(default)]
    settings: PlanSettings,
    /// Days its record is kept after it ends (default `limits.convenings.default_retention_days`).
    #[serde(default, deserialize_with = "super::whole_number")]
    #[schema(value_type = Option<u32>)]
    retention_days: Option<u64>,
}

/// Changes to a convening that has not started; absent fields stay as they are.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub(in crate::http) struct ConveningPatch {
    room: Option<String>,
    title: Option<String>,
    kind: Option<Kind>,
    #[schema(format = DateTime)]
    starts_at: Option<String>,
    #[schema(format = DateTime)]
    ends_at: Option<String>,
    presenters: Option<Vec<String>>,
    moderators: Option<Vec<String>>,
    breakouts: Option<Breakouts>,
    settings: Option<PlanSettings>,
    #[serde(default, deserialize_with = "super::whole_number")]
    #[schema(value_type = Option<u32>)]
    retention_days: Option<u64>,
}

/// A convening as the API shows it (times in RFC 3339, UTC).
#[derive(Serialize, ToSchema)]
pub(in crate::http) struct ConveningView {
    id: String,
    room: String,
    title: String,
    kind: Kind,
    /// `scheduled` (attendees wait in the lobby), `live` or `ended`.
    state: Phase,
    starts_at: String,
    ends_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ended_at: Option<String>,
    presenters: Vec<String>,
    moderators: Vec<String>,
    breakouts: Breakouts,
    settings: PlanSettings,
    retention_days: u32,
    /// The staff page of its record (attendance, Q&A, polls, chat).
    report_url: String,
    created_at: String,
    updated_at: String,
}

impl From<&Convening> for ConveningView {
    fn from(c: &Convening) -> ConveningView {
        ConveningView {
            id: c.id.clone(),
            room: c.room.clone(),
            title: c.title.clone(),
            kind: c.kind,
            state: c.state,
            starts_at: rfc3339::format(c.starts_at),
            ends_at: rfc3339::format(c.ends_at),
            started_at: c.started_at.map(rfc3339::format),
            ended_at: c.ended_at.map(rfc3339::format),
            presenters: c.plan.presenters.clone(),
            moderators: c.plan.moderators.clone(),
            breakouts: c.plan.breakouts.clone(),
            settings: c.plan.settings.clone(),
            retention_days: c.retention_days,
            report_url: format!("/report/{}", c.id),
            created_at: rfc3339::format(c.created_at),
            updated_at: rfc3339::format(c.updated_at),
        }
    }
}

/// `GET /api/v1/convenings` without `room`.
#[derive(Serialize, ToSchema)]
pub(in crate::http) struct ScheduledList {
    convenings: Vec<ConveningView>,
}

impl From<ConveningError> for ApiError {
    fn from(e: ConveningError) -> ApiError {
        match e {
            ConveningError::NotFound(_) => ApiError::not_found(e.to_string()),
            ConveningError::Conflict(_) | ConveningError::Room(_) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            ConveningError::Store(_) => {
                tracing::error!(error = %e, "convenings: the store failed");
                ApiError::unavailable("the store is unavailable; retry shortly").retry_after(1000)
            }
        }
    }
}

/// A name-like field: trimmed, 1..=max characters, no control characters.
fn text(what: &str, value: &str, max: usize) -> Result<String, ApiError> {
    let value = value.trim();
    if value.is_empty() || value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "{what} must be 1-{max} characters without control characters"
        )));
    }
    Ok(value.to_string())
}

fn identities(what: &str, list: &[String]) -> Result<Vec<String>, ApiError> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(list.len());
    for identity in list {
        let identity = text(&format!("each of {what}"), identity, 200)?;
        if seen.insert(identity.clone()) {
            out.push(identity);
        }
    }
    Ok(out)
}

/// A body that parsed and matches the schema, refused for what a schema cannot say (times
/// relative to now or to each other, limits, names blank once trimmed): 422.
/// Days as given (a whole number, `90` or `90.0`); past u32 it is out of range anyway (0: refused).
fn days(given: Option<u64>) -> Option<u32> {
    given.map(|d| u32::try_from(d).unwrap_or(0))
}

fn semantic(error: ApiError) -> ApiError {
    unprocessable(error.message)
}

fn unprocessable(message: impl Into<String>) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::UNPROCESSABLE_ENTITY,
        "unprocessable",
        message,
    )
}

/// Checks a whole convening (new, or patched) against the limits; normalises names.
fn validate(mut c: Convening, limits: &ConveningLimits, now: u64) -> Result<Convening, ApiError> {
    c.room = text("room", &c.room, 200).map_err(semantic)?;
    c.title = text("title", &c.title, 200).map_err(semantic)?;
    if c.ends_at <= c.starts_at {
        return Err(unprocessable("ends_at must be after starts_at"));
    }
    if c.ends_at - c.starts_at > limits.max_hours_long * 3_600_000 {
        return Err(unprocessable(format!(
            "a convening lasts at most {} hours (limits.convenings.max_hours_long)",
            limits.max_hours_long
        )));
    }
    if c.ends_at <= now {
        return Err(unprocessable("ends_at is in the past"));
    }
    if c.starts_at > now + limits.max_days_ahead * 86_400_000 {
        return Err(unprocessable(format!(
            "starts_at is more than {} days ahead (limits.convenings.max_days_ahead)",
            limits.max_days_ahead
        )));
    }
    let plan = &mut c.plan;
    plan.presenters = identities("presenters", &plan.presenters).map_err(semantic)?;
    plan.moderators = identities("moderators", &plan.moderators).map_err(semantic)?;
    if plan.presenters.len() + plan.moderators.len() > limits.max_staff {
        return Err(unprocessable(format!(
            "at most {} presenters and moderators together (limits.convenings.max_staff)",
            limits.max_staff
        )));
    }
    if let Some(both) = plan.presenters.iter().find(|p| plan.moderators.contains(p)) {
        return Err(unprocessable(format!(
            "{both:?} is both a presenter and a moderator: name them once"
        )));
    }
    let teams = std::mem::take(&mut plan.breakouts.teams);
    if teams.len() > limits.max_teams {
        return Err(unprocessable(format!(
            "at most {} breakout teams (limits.convenings.max_teams)",
            limits.max_teams
        )));
    }
    let members: usize = teams.values().map(Vec::len).sum();
    if members > limits.max_team_members {
        return Err(unprocessable(format!(
            "at most {} identities in all breakout teams (limits.convenings.max_team_members)",
            limits.max_team_members
        )));
    }
    let mut placed = BTreeMap::new();
    for (team, people) in teams {
        let team = text("each team name", &team, 100).map_err(semantic)?;
        let people = identities("a team's members", &people).map_err(semantic)?;
        for person in &people {
            if let Some(other) = placed.insert(person.clone(), team.clone()) {
                return Err(unprocessable(format!(
                    "{person:?} is in two teams ({other:?} and {team:?})"
                )));
            }
        }
        plan.breakouts.teams.insert(team, people);
    }
    if let Some(attribute) = &plan.breakouts.by_attribute {
        plan.breakouts.by_attribute =
            Some(text("breakouts.by_attribute", attribute, 64).map_err(semantic)?);
    }
    if c.retention_days == 0 || c.retention_days > limits.max_retention_days {
        return Err(unprocessable(format!(
            "retention_days must be 1-{} (limits.convenings.max_retention_days)",
            limits.max_retention_days
        )));
    }
    Ok(c)
}

fn time(what: &str, value: &str) -> Result<u64, ApiError> {
    rfc3339::parse(value).map_err(|e| unprocessable(format!("{what}: {e}")))
}

/// The API key, or (`staff`) a host's token for the convening's room, or a moderator's
/// when `moderators` may too.
async fn authorise_for(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
    moderators: bool,
) -> Result<Convening, ApiError> {
    let admin = matches!(authorise(state, headers, None).await, Ok(Caller::Admin));
    if admin {
        return state
            .convenings
            .get(id)
            .ok_or_else(|| ApiError::not_found(format!("convening {id:?} not found")));
    }
    let claims = state.claims(headers, crate::http::TokenFrom::Header, None)?;
    let c = state
        .convenings
        .get(id)
        .filter(|c| c.room == claims.room)
        .ok_or_else(|| ApiError::forbidden("this token is not for that convening's room"))?;
    let allowed = claims.role == Role::Host || (moderators && claims.role == Role::Moderator);
    if !allowed {
        return Err(ApiError::forbidden(if moderators {
            "only its host or a moderator, or the API key, may do this"
        } else {
            "only its host, or the API key, may do this"
        }));
    }
    state.refuse_revoked(&claims).await?;
    Ok(c)
}

async fn admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    authorise(state, headers, None).await.map(|_| ())
}

/// `GET /api/v1/convenings` without `room` (the API key): every convening scheduled through
/// this API, by start, whatever its state (the record's handler answers with a room).
pub(in crate::http) async fn list_scheduled(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Json<ScheduledList>, ApiError> {
    admin(state, headers).await?;
    let convenings = state.convenings.list().iter().map(Into::into).collect();
    Ok(Json(ScheduledList { convenings }))
}

/// Schedules a convening. Until it starts, attendees who join its room wait in a lobby
/// showing its title and start; presenters and moderators rehearse backstage.
#[utoipa::path(post, path = "/api/v1/convenings", tag = "convenings", request_body = NewConvening,
    responses(
        (status = 201, body = ConveningView, description = "Scheduled"),
        (status = 400, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "Valid JSON the schedule cannot take: times (unreadable, before 1970, past, end before start, too far ahead or too long), limits, blank names"),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The room has a convening, or too many are scheduled"),
        (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody),
        (status = 503, body = ErrorBody),
))]
pub(in crate::http) async fn create_convening(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<NewConvening>,
) -> Result<Response, ApiError> {
    admin(&state, &headers).await?;
    let now = state.convenings.now();
    let limits = state.convenings.limits();
    let c = Convening {
        id: uuid::Uuid::new_v4().to_string(),
        room: req.room,
        title: req.title,
        kind: req.kind,
        state: Phase::Scheduled,
        starts_at: time("starts_at", &req.starts_at)?,
        ends_at: time("ends_at", &req.ends_at)?,
        started_at: None,
        ended_at: None,
        plan: Plan {
            presenters: req.presenters,
            moderators: req.moderators,
            breakouts: req.breakouts,
            settings: req.settings,
        },
        retention_days: days(req.retention_days).unwrap_or(limits.default_retention_days),
        created_at: now,
        updated_at: now,
    };
    let c = validate(c, limits, now)?;
    state.convenings.create(&state.rooms, c.clone()).await?;
    tracing::info!(convening = %c.id, room = %c.room, "convening scheduled");
    Ok((StatusCode::CREATED, Json(ConveningView::from(&c))).into_response())
}

/// One convening: for the API key, or its room's host or moderators.
#[utoipa::path(get, path = "/api/v1/convenings/{id}", tag = "convenings",
    params(("id" = String, Path, description = "The convening's id")),
    responses(
        (status = 200, body = ConveningView),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
))]
pub(in crate::http) async fn describe_convening(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<ConveningView>, ApiError> {
    let c = authorise_for(&state, &headers, &id, true).await?;
    Ok(Json((&c).into()))
}

/// Changes a convening before it starts.
#[utoipa::path(patch, path = "/api/v1/convenings/{id}", tag = "convenings", request_body = ConveningPatch,
    params(("id" = String, Path, description = "The convening's id")),
    responses(
        (status = 200, body = ConveningView),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "It has started or ended"),
        (status = 422, body = ErrorBody, description = "Valid JSON the schedule cannot take"),
        (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody),
        (status = 503, body = ErrorBody),
))]
pub(in crate::http) async fn update_convening(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(patch): JsonBody<ConveningPatch>,
) -> Result<Json<ConveningView>, ApiError> {
    admin(&state, &headers).await?;
    let mut c = state
        .convenings
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("convening {id:?} not found")))?;
    let now = state.convenings.now();
    c.room = patch.room.unwrap_or(c.room);
    c.title = patch.title.unwrap_or(c.title);
    c.kind = patch.kind.unwrap_or(c.kind);
    if let Some(at) = patch.starts_at {
        c.starts_at = time("starts_at", &at)?;
    }
    if let Some(at) = patch.ends_at {
        c.ends_at = time("ends_at", &at)?;
    }
    c.plan.presenters = patch.presenters.unwrap_or(c.plan.presenters);
    c.plan.moderators = patch.moderators.unwrap_or(c.plan.moderators);
    c.plan.breakouts = patch.breakouts.unwrap_or(c.plan.breakouts);
    c.plan.settings = patch.settings.unwrap_or(c.plan.settings);
    c.retention_days = days(patch.retention_days).unwrap_or(c.retention_days);
    c.updated_at = now;
    let c = validate(c, state.convenings.limits(), now)?;
    state.convenings.replace(&state.rooms, c.clone()).await?;
    Ok(Json((&c).into()))
}

/// Cancels a convening that has not started: it is deleted and its room's lobby opens.
#[utoipa::path(delete, path = "/api/v1/convenings/{id}", tag = "convenings",
    params(("id" = String, Path, description = "The convening's id")),
    responses(
        (status = 204, description = "Cancelled"),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "It has started or ended"),
        (status = 503, body = ErrorBody),
))]
pub(in crate::http) async fn cancel_convening(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    admin(&state, &headers).await?;
    state.convenings.cancel(&state.rooms, &id).await?;
    tracing::info!(convening = %id, "convening cancelled");
    Ok(StatusCode::NO_CONTENT)
}

/// Starts it: attendees waiting in the lobby are let into the room. The API key, its
/// room's host, or a moderator.
#[utoipa::path(post, path = "/api/v1/convenings/{id}/start", tag = "convenings",
    params(("id" = String, Path, description = "The convening's id")),
    responses(
        (status = 200, body = ConveningView),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Not scheduled (live or ended)"),
        (status = 503, body = ErrorBody),
))]
pub(in crate::http) async fn start_convening(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<ConveningView>, ApiError> {
    authorise_for(&state, &headers, &id, true).await?;
    state.convenings.start(&state.rooms, &id).await?;
    let c = state
        .convenings
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("convening {id:?} not found")))?;
    Ok(Json((&c).into()))
}

/// Ends it: everyone in the room sees that it ended and is let go; its record closes.
/// The API key or its room's host.
#[utoipa::path(post, path = "/api/v1/convenings/{id}/end", tag = "convenings",
    params(("id" = String, Path, description = "The convening's id")),
    responses(
        (status = 200, body = ConveningView),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "It has already ended"),
        (status = 503, body = ErrorBody),
))]
pub(in crate::http) async fn end_convening(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<ConveningView>, ApiError> {
    authorise_for(&state, &headers, &id, false).await?;
    let c = state.convenings.end(&state.rooms, &id).await?;
    Ok(Json((&c).into()))
}

/// An invite to mint for a convening.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::http) struct ConveningInvite {
    /// Whom it is for; a planned presenter or moderator gets that role, and their team.
    /// Absent: a new identity.
    identity: Option<String>,
    /// Shown to others (1-200 characters); empty: the person picks a name when they join.
    #[serde(default)]
    name: String,
    /// Overrides the planned role (default: from the plan, else `participant`).
    role: Option<ApiRole>,
}

/// Mints a join link for a convening, before or while it runs. It lives until an hour
/// after the planned end (at least an hour, at most 30 days).
#[utoipa::path(post, path = "/api/v1/convenings/{id}/invites", tag = "convenings",
    request_body = ConveningInvite,
    params(("id" = String, Path, description = "The convening's id")),
    responses(
        (status = 200, body = TokenResponse),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "It has ended"),
        (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody),
))]
pub(in crate::http) async fn mint_convening_invite(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<ConveningInvite>,
) -> Result<Json<TokenResponse>, ApiError> {
    admin(&state, &headers).await?;
    let c = state
        .convenings
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("convening {id:?} not found")))?;
    if c.state == Phase::Ended {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "this convening has ended",
        ));
    }
    let identity = match &req.identity {
        Some(identity) => text("identity", identity, 200)?,
        None => uuid::Uuid::new_v4().to_string(),
    };
    let name = if req.name.trim().is_empty() {
        String::new()
    } else {
        text("name", &req.name, 200)?
    };
    let role = req
        .role
        .map(Role::from)
        .unwrap_or_else(|| c.planned_role(&identity));
    // Tokens run on the wall clock; the planned end is the schedule's.
    let now = crate::auth::unix_now();
    let until_end = (c.ends_at / 1000 + 3600).saturating_sub(state.convenings.now() / 1000);
    let ttl = until_end.clamp(3600, MAX_TOKEN_TTL_S);
    let claims = Claims {
        sub: identity,
        name,
        room: c.room.clone(),
        role,
        exp: now + ttl,
        attrs: c.planned_attrs(req.identity.as_deref().unwrap_or_default()),
        nbf: None,
        jti: Some(uuid::Uuid::new_v4().simple().to_string()),
    };
    claims.check().map_err(ApiError::bad_request)?;
    Ok(Json(TokenResponse::minted(&state, &claims)))
}
