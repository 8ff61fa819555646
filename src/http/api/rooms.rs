//! `/api/v1/rooms` and `/api/v1/nodes`: rooms with their settings, the people in them, and the cluster's live nodes.

use std::collections::BTreeMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use convene_signaling::{Member, Presence, QaMode, RoomKind, RoomSettings};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::*;
use crate::http::{ApiError, AppState};
use convene_core::room::actor::RoomHandle;
use convene_core::room::operator::{Operation, RoomReport};

/// `webcast`: presenters on stage, an audience; `meeting`: everyone may publish.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy, Debug)]
#[serde(rename_all = "snake_case")]
pub(in crate::http) enum ApiRoomKind {
    Webcast,
    Meeting,
}

/// `open`: questions are visible when asked; `moderated`: pending until approved.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy, Debug)]
#[serde(rename_all = "snake_case")]
pub(in crate::http) enum ApiQaMode {
    Open,
    Moderated,
}

/// A room's settings.
#[derive(Serialize, ToSchema)]
pub(in crate::http) struct Settings {
    kind: ApiRoomKind,
    chat_enabled: bool,
    qa_mode: ApiQaMode,
}

impl From<&RoomSettings> for Settings {
    fn from(s: &RoomSettings) -> Settings {
        Settings {
            kind: match s.kind {
                RoomKind::Webcast => ApiRoomKind::Webcast,
                RoomKind::Meeting => ApiRoomKind::Meeting,
            },
            chat_enabled: s.chat_enabled,
            qa_mode: match s.qa_mode {
                QaMode::Open => ApiQaMode::Open,
                QaMode::Moderated => ApiQaMode::Moderated,
            },
        }
    }
}

/// Settings to change; absent fields stay as they are.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub(in crate::http) struct SettingsPatch {
    kind: Option<ApiRoomKind>,
    chat_enabled: Option<bool>,
    qa_mode: Option<ApiQaMode>,
}

impl SettingsPatch {
    fn operation(&self) -> Operation {
        Operation::Configure {
            kind: self.kind.map(|k| match k {
                ApiRoomKind::Webcast => RoomKind::Webcast,
                ApiRoomKind::Meeting => RoomKind::Meeting,
            }),
            chat_enabled: self.chat_enabled,
            qa_mode: self.qa_mode.map(|m| match m {
                ApiQaMode::Open => QaMode::Open,
                ApiQaMode::Moderated => QaMode::Moderated,
            }),
        }
    }
}

/// Someone in a room.
#[derive(Serialize, ToSchema)]
pub(in crate::http) struct Participant {
    identity: String,
    name: String,
    role: ApiRole,
    /// `online`, or `reconnecting` while the seat is kept for a dropped connection.
    presence: String,
    on_stage: bool,
    hand_raised: bool,
    /// The breakout they are in; absent in the main room.
    #[serde(skip_serializing_if = "Option::is_none")]
    breakout: Option<u32>,
    attrs: BTreeMap<String, String>,
}

impl From<&Member> for Participant {
    fn from(m: &Member) -> Participant {
        Participant {
            identity: m.identity.clone(),
            name: m.name.clone(),
            role: m.role.into(),
            presence: match m.presence {
                Presence::Online => "online",
                Presence::Reconnecting => "reconnecting",
            }
            .into(),
            on_stage: m.on_stage,
            hand_raised: m.hand_raised,
            breakout: m.breakout,
            attrs: m.attrs.clone(),
        }
    }
}

/// A running room.
#[derive(Serialize, ToSchema)]
pub(in crate::http) struct RoomView {
    name: String,
    settings: Settings,
    /// Ended by a host or the operator: joins are refused until it is forgotten.
    ended: bool,
    /// People in the room (including those reconnecting).
    participants: usize,
    /// Open WebSocket sessions.
    sessions: usize,
}

pub(in crate::http) fn room_view(handle: &RoomHandle, report: &RoomReport) -> RoomView {
    RoomView {
        name: handle.name.to_string(),
        settings: (&report.settings).into(),
        ended: report.ended,
        participants: report.members.len(),
        sessions: handle.sessions.load(std::sync::atomic::Ordering::Relaxed),
    }
}

#[derive(Serialize, ToSchema)]
pub(in crate::http) struct NodeList {
    nodes: Vec<crate::cluster::NodeInfo>,
}

/// The live nodes of this cluster (this node alone when it runs without Redis).
#[utoipa::path(get, path = "/api/v1/nodes", tag = "cluster", responses(
    (status = 200, body = NodeList),
    (status = 401, body = ErrorBody, description = "No or an invalid bearer"),
    (status = 403, body = ErrorBody, description = "An access token, not the API key"),
))]
pub(in crate::http) async fn list_nodes(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<NodeList>, ApiError> {
    authorise(&state, &headers, None).await?;
    let nodes = match &state.cluster {
        Some(cluster) => cluster.nodes(),
        None => {
            let sessions = state.sessions.load(std::sync::atomic::Ordering::Relaxed);
            vec![crate::cluster::NodeInfo {
                id: "local".into(),
                http: state.config.public_url(state.config.server.listen),
                rtc: state.media.as_ref().map(|m| m.sfu.local_addr().to_string()),
                sessions,
                rooms_owned: state.rooms.names(),
                load: sessions as f64 / state.config.server.max_sessions.max(1) as f64,
                heartbeat_ms_ago: 0,
                heartbeat_at: crate::auth::unix_now_ms(),
            }]
        }
    };
    Ok(Json(NodeList { nodes }))
}

#[derive(Serialize, ToSchema)]
pub(in crate::http) struct RoomList {
    rooms: Vec<RoomView>,
}

/// The rooms running on this node.
#[utoipa::path(get, path = "/api/v1/rooms", tag = "rooms", responses(
    (status = 200, body = RoomList),
    (status = 401, body = ErrorBody, description = "No or an invalid bearer"),
    (status = 403, body = ErrorBody, description = "An access token, not the API key"),
))]
pub(in crate::http) async fn list_rooms(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<RoomList>, ApiError> {
    authorise(&state, &headers, None).await?;
    let mut rooms = Vec::new();
    for name in state.rooms.names() {
        let Some(handle) = state.rooms.get(&name) else {
            continue;
        };
        if let Ok(report) = operate(&handle, Operation::Describe).await {
            rooms.push(room_view(&handle, &report));
        }
    }
    Ok(Json(RoomList { rooms }))
}

/// A room to open before the event.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::http) struct CreateRoom {
    /// 1-200 characters, no control characters; tokens name it in their `room` claim.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    name: String,
    #[serde(default)]
    settings: Option<SettingsPatch>,
}

/// Opens a room with its settings. An empty room lives for `limits.empty_room_ttl_s`
/// (default an hour) before it is forgotten: create it within that time of the event.
#[utoipa::path(post, path = "/api/v1/rooms", tag = "rooms", request_body = CreateRoom, responses(
    (status = 201, body = RoomView, description = "Opened"),
    (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody),
    (status = 409, body = ErrorBody, description = "A room of that name is running"),
    (status = 413, body = ErrorBody),
    (status = 415, body = ErrorBody),
))]
pub(in crate::http) async fn create_room(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<CreateRoom>,
) -> Result<Response, ApiError> {
    authorise(&state, &headers, None).await?;
    let name = req.name;
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "name must be 1-200 characters without control characters",
        ));
    }
    if state.rooms.get(&name).is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("room {name:?} is already running"),
        ));
    }
    let handle = state.rooms.get_or_start(&name);
    let patch = req.settings.unwrap_or_default();
    let report = operate(&handle, patch.operation()).await?;
    Ok((StatusCode::CREATED, Json(room_view(&handle, &report))).into_response())
}

/// A running room: settings, whether it has ended, how many are in it.
#[utoipa::path(get, path = "/api/v1/rooms/{room}", tag = "rooms",
    params(("room" = String, Path, description = "The room's name")),
    responses(
        (status = 200, body = RoomView),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "Not running"),
))]
pub(in crate::http) async fn describe_room(
    State(state): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Result<Json<RoomView>, ApiError> {
    authorise(&state, &headers, Some(&room)).await?;
    let handle = running(&state, &room)?;
    let report = operate(&handle, Operation::Describe).await?;
    Ok(Json(room_view(&handle, &report)))
}

/// Changes settings, before or during the event; people in the room see the change.
#[utoipa::path(patch, path = "/api/v1/rooms/{room}", tag = "rooms", request_body = SettingsPatch,
    params(("room" = String, Path, description = "The room's name")),
    responses(
        (status = 200, body = RoomView),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody),
))]
pub(in crate::http) async fn configure_room(
    State(state): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
    JsonBody(patch): JsonBody<SettingsPatch>,
) -> Result<Json<RoomView>, ApiError> {
    authorise(&state, &headers, Some(&room)).await?;
    let handle = running(&state, &room)?;
    let report = operate(&handle, patch.operation()).await?;
    Ok(Json(room_view(&handle, &report)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(in crate::http) struct ReasonQuery {
    /// Shown to the people removed (at most 500 characters).
    reason: Option<String>,
}

/// Ends the convening: everyone is removed with the reason, and joins are refused until
/// the room is forgotten (`limits.empty_room_ttl_s` after it empties).
#[utoipa::path(delete, path = "/api/v1/rooms/{room}", tag = "rooms",
    params(("room" = String, Path, description = "The room's name"), ReasonQuery),
    responses(
        (status = 200, body = RoomView, description = "Ended"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
))]
pub(in crate::http) async fn end_room(
    State(state): State<AppState>,
    Path(room): Path<String>,
    q: Result<Query<ReasonQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<RoomView>, ApiError> {
    authorise(&state, &headers, Some(&room)).await?;
    let q = query(q)?;
    let handle = running(&state, &room)?;
    let report = operate(&handle, Operation::End { reason: q.reason }).await?;
    Ok(Json(room_view(&handle, &report)))
}

#[derive(Serialize, ToSchema)]
pub(in crate::http) struct ParticipantList {
    room: String,
    participants: Vec<Participant>,
}

/// Everyone in the room, staff and audience, with where they are.
#[utoipa::path(get, path = "/api/v1/rooms/{room}/participants", tag = "participants",
    params(("room" = String, Path, description = "The room's name")),
    responses(
        (status = 200, body = ParticipantList),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
))]
pub(in crate::http) async fn list_participants(
    State(state): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Result<Json<ParticipantList>, ApiError> {
    authorise(&state, &headers, Some(&room)).await?;
    let handle = running(&state, &room)?;
    let report = operate(&handle, Operation::Describe).await?;
    Ok(Json(ParticipantList {
        room,
        participants: report.members.iter().map(Participant::from).collect(),
    }))
}

/// Removes someone: their sessions close, and they may not rejoin this room.
#[utoipa::path(delete, path = "/api/v1/rooms/{room}/participants/{identity}", tag = "participants",
    params(
        ("room" = String, Path, description = "The room's name"),
        ("identity" = String, Path, description = "The participant's identity (token `sub`)"),
        ReasonQuery,
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such room or participant"),
))]
pub(in crate::http) async fn remove_participant(
    State(state): State<AppState>,
    Path((room, identity)): Path<(String, String)>,
    q: Result<Query<ReasonQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    authorise(&state, &headers, Some(&room)).await?;
    let q = query(q)?;
    let handle = running(&state, &room)?;
    operate(
        &handle,
        Operation::Remove {
            identity,
            reason: q.reason,
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
