//! `/api/v1/convenings/...`: a convening's report (JSON and formula-safe CSV), the list of ended convenings, retention, deleting a record, and `/api/v1/people/{identity}`: erasing one person from every record. Read from the store only.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use convene_store::record::Convening;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::*;
use crate::http::{ApiError, AppState};
use crate::record::report::{self, Report};
use crate::record::Recorder;

/// Identities and convening ids longer than this are refused before any lookup.
const MAX_KEY_BYTES: usize = 256;

fn recorder(state: &AppState) -> Result<&Arc<Recorder>, ApiError> {
    state.recorder.as_ref().ok_or_else(|| {
        ApiError::unavailable("this node keeps no records (its store is off: store.durable_log)")
    })
}

fn store_error(error: convene_store::StoreError) -> ApiError {
    tracing::error!(%error, "the record's store refused");
    ApiError::unavailable("the store is unavailable; retry shortly").retry_after(1000)
}

/// The convening, once the caller may read it: the API key, or a host token of its room.
/// An unknown id needs the API key to be told so (a host learns nothing of other rooms).
async fn readable(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
) -> Result<(Arc<Recorder>, Convening), ApiError> {
    let recorder = recorder(state)?.clone();
    let found = if id.len() > MAX_KEY_BYTES {
        None
    } else {
        recorder.store().convening(id).await.map_err(store_error)?
    };
    match found {
        Some(c) => {
            authorise(state, headers, Some(&c.room)).await?;
            Ok((recorder, c))
        }
        None => {
            authorise(state, headers, None).await?;
            Err(ApiError::not_found(format!("no convening {id:?}")))
        }
    }
}

async fn report_of(state: &AppState, headers: &HeaderMap, id: &str) -> Result<Report, ApiError> {
    let (recorder, c) = readable(state, headers, id).await?;
    let record = recorder.store().record(&c.id).await.map_err(store_error)?;
    Ok(report::build(&c, &record))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(in crate::http) struct ConveningsQuery {
    /// The room whose convenings to list. Without it (the API key): every scheduled one, as
    /// the Convenings page lists them (`ScheduledList`).
    room: Option<String>,
    /// `ended` (default), `live` or `scheduled`.
    #[param(pattern = "^(ended|live|scheduled)$")]
    state: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(in crate::http) struct ConveningSummary {
    id: String,
    room: String,
    title: String,
    kind: String,
    state: String,
    started_at: Option<i64>,
    ended_at: Option<i64>,
    retention_days: i64,
    /// The report's path under this server.
    report: String,
}

impl From<Convening> for ConveningSummary {
    fn from(c: Convening) -> ConveningSummary {
        ConveningSummary {
            report: format!("/api/v1/convenings/{}/report", c.id),
            id: c.id,
            room: c.room,
            title: c.title,
            kind: c.kind,
            state: c.state,
            started_at: c.started_at,
            ended_at: c.ended_at,
            retention_days: c.retention_days,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(in crate::http) struct ConveningList {
    convenings: Vec<ConveningSummary>,
}

/// A room's convenings (ended ones unless `state` says otherwise), newest first, each with its report's path.
#[utoipa::path(get, path = "/api/v1/convenings", tag = "record",
    params(ConveningsQuery),
    responses(
        (status = 200, body = ConveningList),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 503, body = ErrorBody),
))]
pub(in crate::http) async fn list_convenings(
    State(state): State<AppState>,
    q: Result<Query<ConveningsQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let wanted = q.state.as_deref().unwrap_or("ended");
    if !matches!(wanted, "ended" | "live" | "scheduled") {
        return Err(ApiError::bad_request(
            "state must be ended, live or scheduled",
        ));
    }
    let Some(room) = q.room else {
        return Ok(super::convenings::list_scheduled(&state, &headers)
            .await?
            .into_response());
    };
    authorise(&state, &headers, Some(&room)).await?;
    let convenings = recorder(&state)?
        .store()
        .convenings_of(&room, wanted)
        .await
        .map_err(store_error)?;
    let convenings = convenings.into_iter().map(ConveningSummary::from).collect();
    Ok(Json(ConveningList { convenings }).into_response())
}

/// The report: attendance per person and per team (minutes present and in breakouts, first
/// join, last leave; an outage is a gap, not leaving), Q&A, polls and chat. The same bytes
/// from every node.
#[utoipa::path(get, path = "/api/v1/convenings/{id}/report", tag = "record",
    params(("id" = String, Path, description = "The convening's id")),
    responses(
        (status = 200, description = "The report", content_type = "application/json"),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody),
))]
pub(in crate::http) async fn convening_report(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    Ok(Json(report_of(&state, &headers, &id).await?).into_response())
}

/// One CSV of the report: `attendance.csv` (certificate-ready: name, identity, team,
/// minutes, minutes in breakouts, date, first join, last leave), `questions.csv`,
/// `polls.csv` (one row per option) or `chat.csv`. Cells that would start a formula are text.
#[utoipa::path(get, path = "/api/v1/convenings/{id}/report/{file}", tag = "record",
    params(
        ("id" = String, Path, description = "The convening's id"),
        ("file" = String, Path, description = "attendance.csv, questions.csv, polls.csv or chat.csv"),
    ),
    responses(
        (status = 200, description = "The CSV", content_type = "text/csv"),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody),
))]
pub(in crate::http) async fn convening_csv(
    State(state): State<AppState>,
    Path((id, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let render: fn(&Report) -> String = match file.as_str() {
        "attendance.csv" => attendance_csv,
        "questions.csv" => questions_csv,
        "polls.csv" => polls_csv,
        "chat.csv" => chat_csv,
        _ => {
            readable(&state, &headers, &id).await?;
            return Err(ApiError::not_found(
                "no such file: attendance.csv, questions.csv, polls.csv or chat.csv",
            ));
        }
    };
    let report = report_of(&state, &headers, &id).await?;
    let what = file.trim_end_matches(".csv");
    Ok(csv_download(&report.convening.room, what, render(&report)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::http) struct Retention {
    /// Days the record is kept after the convening ends (0: deleted at the next sweep).
    retention_days: i64,
}

/// Sets how long the convening's record is kept after it ends.
#[utoipa::path(put, path = "/api/v1/convenings/{id}/retention", tag = "record",
    params(("id" = String, Path, description = "The convening's id")),
    request_body = Retention,
    responses(
        (status = 200, body = ConveningSummary),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody),
))]
pub(in crate::http) async fn set_retention(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<JsonBody<Retention>, ApiError>,
) -> Result<Response, ApiError> {
    let (recorder, c) = readable(&state, &headers, &id).await?;
    let JsonBody(Retention { retention_days }) = body?;
    let max = i64::from(state.config.store.max_retention_days);
    if !(0..=max).contains(&retention_days) {
        return Err(ApiError::bad_request(format!(
            "retention_days must be from 0 to {max} (store.max_retention_days)"
        )));
    }
    let at = crate::record::unix_ms() as i64;
    let store = recorder.store();
    store
        .set_retention(&c.id, retention_days, at)
        .await
        .map_err(store_error)?;
    let c = store.convening(&c.id).await.map_err(store_error)?;
    let c = c.ok_or_else(|| ApiError::not_found(format!("no convening {id:?}")))?;
    Ok(Json(ConveningSummary::from(c)).into_response())
}

/// Deletes the convening's record (attendance, Q&A, polls, chat); the convening stays.
#[utoipa::path(delete, path = "/api/v1/convenings/{id}/record", tag = "record",
    params(("id" = String, Path, description = "The convening's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody),
))]
pub(in crate::http) async fn delete_record(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (recorder, c) = readable(&state, &headers, &id).await?;
    recorder
        .store()
        .delete_record(&c.id)
        .await
        .map_err(store_error)?;
    tracing::info!(convening = %c.id, "record deleted on request");
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Serialize, ToSchema)]
pub(in crate::http) struct PersonErased {
    identity: String,
    /// Attendance rows, chat messages and questions deleted across every record.
    attendance_rows: u64,
    chat_messages: u64,
    questions: u64,
}

/// Erases one person from every convening's record: their attendance, their chat messages
/// and the questions they asked are deleted (so every report and export loses them). API key only.
#[utoipa::path(delete, path = "/api/v1/people/{identity}", tag = "record",
    params(("identity" = String, Path, description = "The person's identity")),
    responses(
        (status = 200, body = PersonErased),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 503, body = ErrorBody),
))]
pub(in crate::http) async fn erase_person(
    State(state): State<AppState>,
    Path(identity): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorise(&state, &headers, None).await?;
    if identity.is_empty() || identity.len() > MAX_KEY_BYTES {
        return Err(ApiError::bad_request(format!(
            "identity must be 1 to {MAX_KEY_BYTES} bytes"
        )));
    }
    let erased = recorder(&state)?
        .store()
        .erase_person(&identity)
        .await
        .map_err(store_error)?;
    tracing::info!(
        attendance = erased.presence,
        chat = erased.chat,
        questions = erased.questions,
        "a person was erased from the records on request"
    );
    Ok(Json(PersonErased {
        identity,
        attendance_rows: erased.presence,
        chat_messages: erased.chat,
        questions: erased.questions,
    })
    .into_response())
}

fn csv(header: &str, rows: impl Iterator<Item = Vec<String>>) -> String {
    let mut out = format!("{header}\n");
    for row in rows {
        let cells: Vec<String> = row.iter().map(|c| csv_field(c)).collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

fn opt(v: Option<i64>, f: fn(i64) -> String) -> String {
    v.map(f).unwrap_or_default()
}

pub fn attendance_csv(r: &Report) -> String {
    let day = r
        .convening
        .started_at
        .or(r.attendance.first().map(|p| p.first_join));
    let date = opt(day, report::date);
    csv(
        "name,identity,team,minutes,minutes_in_breakouts,date,first_join,last_leave",
        r.attendance.iter().map(|p| {
            vec![
                p.name.clone(),
                p.identity.clone(),
                p.team.clone(),
                p.minutes_present.to_string(),
                p.minutes_in_breakouts.to_string(),
                date.clone(),
                report::timestamp(p.first_join),
                opt(p.last_leave, report::timestamp),
            ]
        }),
    )
}

pub fn questions_csv(r: &Report) -> String {
    csv(
        "id,state,votes,text,author,author_name,answer,asked_at,answered_at",
        r.questions.iter().map(|q| {
            vec![
                q.id.to_string(),
                q.state.clone(),
                q.votes.to_string(),
                q.text.clone(),
                q.author.clone().unwrap_or_default(),
                q.author_name.clone().unwrap_or_default(),
                q.answer.clone().unwrap_or_default(),
                report::timestamp(q.asked_at),
                opt(q.answered_at, report::timestamp),
            ]
        }),
    )
}

pub fn polls_csv(r: &Report) -> String {
    csv(
        "poll_id,question,state,option,count,voters",
        r.polls.iter().flat_map(|p| {
            p.options.iter().enumerate().map(|(i, option)| {
                let count = p.counts.as_ref().and_then(|c| c.get(i));
                vec![
                    p.id.to_string(),
                    p.question.clone(),
                    p.state.clone(),
                    option.clone(),
                    count.map(u32::to_string).unwrap_or_default(),
                    p.voters.map(|v| v.to_string()).unwrap_or_default(),
                ]
            })
        }),
    )
}

pub fn chat_csv(r: &Report) -> String {
    csv(
        "id,at,identity,name,breakout,text",
        r.chat.iter().map(|c| {
            vec![
                c.id.to_string(),
                report::timestamp(c.at),
                c.identity.clone(),
                c.name.clone(),
                c.breakout.clone().unwrap_or_default(),
                c.text.clone(),
            ]
        }),
    )
}
