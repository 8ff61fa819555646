//! `/api/v1/rooms/{room}/questions|polls|attendance`: the exports, as JSON or formula-safe CSV.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use convene_signaling::Question;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::*;
use crate::http::{ApiError, AppState};
use convene_core::room::actor::RoomHandle;
use convene_core::room::attendance::PersonAttendance;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(in crate::http) struct ExportQuery {
    /// `json` (default) or `csv`.
    format: Option<ExportFormat>,
}

#[derive(Deserialize, ToSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(in crate::http) enum ExportFormat {
    Json,
    Csv,
}

#[derive(Serialize, ToSchema)]
pub(in crate::http) struct QuestionExport {
    room: String,
    /// Every question, in the protocol's `Question` shape (see signaling/schema.json).
    #[schema(value_type = Vec<Object>)]
    questions: Vec<Question>,
}

/// Every question asked, with votes, state, answers and times. CSV cells that would start
/// a spreadsheet formula are prefixed with `'`.
#[utoipa::path(get, path = "/api/v1/rooms/{room}/questions", tag = "exports",
    params(("room" = String, Path, description = "The room's name"), ExportQuery),
    responses(
        (status = 200, description = "The questions", content(
            (QuestionExport = "application/json"),
            (String = "text/csv"),
        )),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
))]
pub(in crate::http) async fn export_questions(
    State(state): State<AppState>,
    Path(room): Path<String>,
    q: Result<Query<ExportQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (format, handle) = export_of(&state, &room, q, &headers).await?;
    let questions = handle
        .export_questions()
        .await
        .map_err(|_| ApiError::not_found(format!("room {room:?} has closed")))?;
    Ok(match format {
        ExportFormat::Csv => csv_download(&room, "questions", to_csv(&questions)),
        ExportFormat::Json => Json(QuestionExport { room, questions }).into_response(),
    })
}

#[derive(Serialize, ToSchema)]
pub(in crate::http) struct PollExport {
    room: String,
    /// Every poll with its results, in the protocol's `Poll` shape (see signaling/schema.json).
    #[schema(value_type = Vec<Object>)]
    polls: Vec<convene_signaling::Poll>,
}

/// Every poll with its results, like the Q&A export; CSV has one row per option.
#[utoipa::path(get, path = "/api/v1/rooms/{room}/polls", tag = "exports",
    params(("room" = String, Path, description = "The room's name"), ExportQuery),
    responses(
        (status = 200, description = "The polls", content(
            (PollExport = "application/json"),
            (String = "text/csv"),
        )),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
))]
pub(in crate::http) async fn export_polls(
    State(state): State<AppState>,
    Path(room): Path<String>,
    q: Result<Query<ExportQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (format, handle) = export_of(&state, &room, q, &headers).await?;
    let polls = handle
        .export_polls()
        .await
        .map_err(|_| ApiError::not_found(format!("room {room:?} has closed")))?;
    if format == ExportFormat::Json {
        return Ok(Json(PollExport { room, polls }).into_response());
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
    Ok(csv_download(&room, "polls", csv))
}

/// What every export checks first: the caller may read the room, the format is known, the
/// room is running.
pub(in crate::http) async fn export_of(
    state: &AppState,
    room: &str,
    q: Result<Query<ExportQuery>, QueryRejection>,
    headers: &HeaderMap,
) -> Result<(ExportFormat, RoomHandle), ApiError> {
    authorise(state, headers, Some(room)).await?;
    let format = query(q)
        .map_err(|_| ApiError::bad_request("format must be json or csv"))?
        .format
        .unwrap_or(ExportFormat::Json);
    Ok((format, running(state, room)?))
}

/// A CSV export as a download named after the room (safely: see `attachment`).
pub(in crate::http) fn csv_download(room: &str, what: &str, csv: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                attachment(&format!("{room}-{what}.csv")),
            ),
        ],
        csv,
    )
        .into_response()
}

/// One text cell. A cell a spreadsheet would read as a formula (`=`, `+`, `-`, `@`, tab or CR
/// first) gets a leading `'` so it shows as text (OWASP CSV injection); then RFC 4180 quoting.
pub(in crate::http) fn csv_field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_string()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

/// `Content-Disposition` for a download named after untrusted text (a room name): an ASCII
/// `filename` with anything but `[A-Za-z0-9._-]` replaced, so no quote or CRLF can add
/// parameters or break the header, and the exact name as RFC 5987 `filename*`.
pub(in crate::http) fn attachment(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b'_') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

pub(in crate::http) fn to_csv(questions: &[Question]) -> String {
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

#[derive(Serialize, ToSchema)]
pub(in crate::http) struct AttendanceExport {
    room: String,
    /// Per person: `identity`, `name`, `role`, `stays` (`joined_at`, `left_at` in Unix ms),
    /// `present_s`, `main_room_s`, `breakouts` (`breakout`, `name`, `seconds`), `on_stage_s`,
    /// `questions` (anonymous ones are not attributed), `votes`, `chat_messages`.
    #[schema(value_type = Vec<Object>)]
    people: Vec<PersonAttendance>,
}

/// Attendance, during the event or after it (kept `limits.attendance_retention_s` after the
/// room's last activity): who came when, for how long, where, and what they contributed.
#[utoipa::path(get, path = "/api/v1/rooms/{room}/attendance", tag = "exports",
    params(("room" = String, Path, description = "The room's name"), ExportQuery),
    responses(
        (status = 200, description = "Attendance per person", content(
            (AttendanceExport = "application/json"),
            (String = "text/csv"),
        )),
        (status = 307, description = "In a cluster, to the node that owns the room (it keeps the sheet)"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No attendance kept for this room"),
))]
pub(in crate::http) async fn export_attendance(
    State(state): State<AppState>,
    Path(room): Path<String>,
    q: Result<Query<ExportQuery>, QueryRejection>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorise(&state, &headers, Some(&room)).await?;
    // The sheet is kept where the room's inputs are applied: its owner's.
    if let Some(redirect) =
        crate::http::media::redirect_to_owner(&state, &room, &uri, false).await?
    {
        return Ok(redirect);
    }
    let format = query(q)
        .map_err(|_| ApiError::bad_request("format must be json or csv"))?
        .format
        .unwrap_or(ExportFormat::Json);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let people = state
        .attendance
        .report(&room, now)
        .ok_or_else(|| ApiError::not_found(format!("no attendance is kept for room {room:?}")))?;
    Ok(match format {
        ExportFormat::Csv => csv_download(&room, "attendance", attendance_csv(&people)),
        ExportFormat::Json => Json(AttendanceExport { room, people }).into_response(),
    })
}

pub(in crate::http) fn attendance_csv(people: &[PersonAttendance]) -> String {
    let mut out = String::from("identity,name,role,first_joined_at,last_left_at,stays,present_s,main_room_s,breakouts,on_stage_s,questions,votes,chat_messages\n");
    for p in people {
        let last_left = p.stays.last().and_then(|s| s.left_at);
        let breakouts: Vec<String> = p
            .breakouts
            .iter()
            .map(|b| format!("{}:{}", b.name, b.seconds))
            .collect();
        let row = [
            csv_field(&p.identity),
            csv_field(&p.name),
            format!("{:?}", p.role).to_lowercase(),
            p.stays
                .first()
                .map(|s| s.joined_at.to_string())
                .unwrap_or_default(),
            last_left.map(|t| t.to_string()).unwrap_or_default(),
            p.stays.len().to_string(),
            p.present_s.to_string(),
            p.main_room_s.to_string(),
            csv_field(&breakouts.join(";")),
            p.on_stage_s.to_string(),
            p.questions.to_string(),
            p.votes.to_string(),
            p.chat_messages.to_string(),
        ];
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
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

    #[test]
    fn csv_cells_that_start_like_formulas_are_text() {
        assert_eq!(csv_field("=1+1"), "'=1+1");
        assert_eq!(csv_field("+1"), "'+1");
        assert_eq!(csv_field("-2"), "'-2");
        assert_eq!(csv_field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_field("\t=1"), "'\t=1");
        assert_eq!(
            csv_field("=HYPERLINK(\"x\",\"y\")"),
            "\"'=HYPERLINK(\"\"x\"\",\"\"y\"\")\""
        );
        assert_eq!(csv_field("a = b"), "a = b");
    }

    #[test]
    fn attachment_names_cannot_add_parameters_or_lines() {
        let value = attachment("a\"; x=1\r\nSet-Cookie: y-questions.csv");
        assert_eq!(
            value,
            "attachment; filename=\"a___x_1__Set-Cookie__y-questions.csv\"; filename*=UTF-8''a%22%3B%20x%3D1%0D%0ASet-Cookie%3A%20y-questions.csv"
        );
        assert!(axum::http::HeaderValue::from_str(&value).is_ok());
    }
}
