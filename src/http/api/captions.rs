//! `/api/v1/rooms/{room}/captions…`: the captioning service's endpoint (its own token, sequence numbers), automatic captions' switch, and the WebVTT export.

use aws_lc_rs::digest;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::*;
use crate::http::{ApiError, AppState};
use convene_core::room::captions::{CaptionAnswer, CaptionOp};

/// What the host or the API key gets when the captioning endpoint opens.
#[derive(Serialize, ToSchema)]
pub(in crate::http) struct CaptionService {
    /// The endpoint's own token: only for posting captions to this convening. Shown once.
    token: String,
    /// Where the service posts: `POST {url}?seq=1` with the token as `Authorization: Bearer`
    /// (or `&token=`), the caption as `text/plain`.
    url: String,
    /// The first sequence number.
    next_seq: u64,
}

fn sha256_hex(token: &str) -> String {
    digest::digest(&digest::SHA256, token.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn caption_op(
    state: &AppState,
    room: &str,
    op: CaptionOp,
) -> Result<CaptionAnswer, ApiError> {
    let handle = running(state, room)?;
    operate(&handle, Operation::Captions(op))
        .await?
        .captions
        .ok_or_else(|| ApiError::unavailable("the room did not answer"))
}

/// Opens the convening's captioning endpoint with a fresh token (an earlier one stops
/// working); the sequence starts at 1.
#[utoipa::path(post, path = "/api/v1/rooms/{room}/captions/service", tag = "captions",
    params(("room" = String, Path, description = "The room's name")),
    responses(
        (status = 201, body = CaptionService),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
))]
pub(in crate::http) async fn open_caption_service(
    State(state): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorise(&state, &headers, Some(&room)).await?;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let token_sha256 = sha256_hex(&token);
    caption_op(&state, &room, CaptionOp::OpenService { token_sha256 }).await?;
    let url = format!("/api/v1/rooms/{}/captions", path_segment(&room));
    let body = CaptionService {
        token,
        url,
        next_seq: 1,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Closes the captioning endpoint: its token stops working.
#[utoipa::path(delete, path = "/api/v1/rooms/{room}/captions/service", tag = "captions",
    params(("room" = String, Path, description = "The room's name")),
    responses(
        (status = 204, description = "Closed"),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
))]
pub(in crate::http) async fn close_caption_service(
    State(state): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    authorise(&state, &headers, Some(&room)).await?;
    caption_op(&state, &room, CaptionOp::CloseService).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(in crate::http) struct PostQuery {
    /// This post's sequence number: 1, then one more each time.
    #[param(minimum = 0)]
    seq: u64,
    /// The endpoint's token, when it is not sent as `Authorization: Bearer`.
    token: Option<String>,
    /// `false`: a partial line a later post replaces (default `true`).
    #[serde(rename = "final")]
    #[param(rename = "final")]
    is_final: Option<bool>,
    /// Who is speaking (optional).
    speaker: Option<String>,
}

/// A caption was shown.
#[derive(Serialize, ToSchema)]
pub(in crate::http) struct CaptionPosted {
    caption_id: u64,
    /// The sequence number to send next.
    next_seq: u64,
}

/// A sequence number out of order or repeated.
#[derive(Serialize, ToSchema)]
pub(in crate::http) struct SeqConflict {
    error: String,
    message: String,
    /// The sequence number the endpoint expects.
    expected_seq: u64,
}

/// A captioning service posts one line (UTF-8 text) with its sequence number, like the
/// caption APIs such services post to. A bad token is 401; a sequence number out of order
/// or repeated is 409 with the expected one, and nothing is shown.
#[utoipa::path(post, path = "/api/v1/rooms/{room}/captions", tag = "captions", security(()),
    params(("room" = String, Path, description = "The room's name"), PostQuery),
    request_body(content = String, content_type = "text/plain"),
    responses(
        (status = 200, body = CaptionPosted),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = SeqConflict),
        (status = 413, body = ErrorBody),
        (status = 429, body = ErrorBody),
))]
pub(in crate::http) async fn post_caption(
    State(state): State<AppState>,
    Path(room): Path<String>,
    q: Result<Query<PostQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let q = query(q).map_err(|e| {
        ApiError::bad_request(format!(
            "{}; ?seq=1 first, then one more each post",
            e.message
        ))
    })?;
    let token = bearer(&headers, q.token.as_deref()).ok_or_else(|| {
        ApiError::unauthorized("missing the caption token (Authorization: Bearer, or ?token=)")
    })?;
    let limits = &state.limits.captions;
    let body = body.map_err(|e| ApiError::new(e.status(), "bad_request", e.body_text()))?;
    let max_bytes = limits.max_chars() * 4;
    if body.len() > max_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("a caption is at most {max_bytes} bytes"),
        ));
    }
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("the caption is not UTF-8 text"))?;
    if let Some(why) = limits.too_long(text) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            why,
        ));
    }
    let seq = q.seq;
    running(&state, &room)?;
    if let Err(retry) = state.caption_posts.take(&room, limits.service) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many captions: slow down",
        )
        .retry_after(retry));
    }
    let op = CaptionOp::Post {
        token_sha256: sha256_hex(&token),
        seq,
        text: text.to_string(),
        is_final: q.is_final.unwrap_or(true),
        speaker: q.speaker,
    };
    match caption_op(&state, &room, op).await? {
        CaptionAnswer::Accepted {
            caption_id: Some(caption_id),
            next_seq: Some(next_seq),
        } => Ok(Json(CaptionPosted {
            caption_id,
            next_seq,
        })
        .into_response()),
        CaptionAnswer::OutOfOrder { expected } => Ok((
            StatusCode::CONFLICT,
            Json(SeqConflict {
                error: "conflict".into(),
                message: format!("seq {seq} is out of order or repeated; expected {expected}"),
                expected_seq: expected,
            }),
        )
            .into_response()),
        CaptionAnswer::Invalid(why) => Err(ApiError::bad_request(why)),
        _ => Err(ApiError::unauthorized(
            "not this convening's caption token (or its captioning endpoint is closed)",
        )),
    }
}

/// Automatic captions on or off.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::http) struct AutoCaptions {
    on: bool,
}

/// Switches automatic captions (the speech recognizer on the stage's audio) for this convening.
#[utoipa::path(put, path = "/api/v1/rooms/{room}/captions/auto", tag = "captions",
    params(("room" = String, Path, description = "The room's name")),
    request_body = AutoCaptions,
    responses(
        (status = 204, description = "Switched"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody),
))]
pub(in crate::http) async fn switch_auto_captions(
    State(state): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<AutoCaptions>,
) -> Result<StatusCode, ApiError> {
    authorise(&state, &headers, Some(&room)).await?;
    caption_op(&state, &room, CaptionOp::SetAuto { on: body.on }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The convening's final captions as WebVTT, on the stage's clock (the first caption at 0).
#[utoipa::path(get, path = "/api/v1/rooms/{room}/captions.vtt", tag = "exports",
    params(("room" = String, Path, description = "The room's name")),
    responses(
        (status = 200, description = "WebVTT", content_type = "text/vtt", body = String),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
))]
pub(in crate::http) async fn export_captions(
    State(state): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorise(&state, &headers, Some(&room)).await?;
    let CaptionAnswer::Log { captions, .. } = caption_op(&state, &room, CaptionOp::Log).await?
    else {
        return Err(ApiError::unavailable("the room did not answer"));
    };
    Ok((
        [
            (header::CONTENT_TYPE, "text/vtt; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                attachment(&format!("{room}-captions.vtt")),
            ),
        ],
        crate::captions::vtt::render(&captions),
    )
        .into_response())
}

/// A room name as one URL path segment.
fn path_segment(room: &str) -> String {
    room.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
