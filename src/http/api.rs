//! `/api/v1`: the admin API (rooms, participants, tokens, Q&A export) behind the API key or, per room, a host token; its OpenAPI document is generated from these handlers' types.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use convene_signaling::{Member, Presence, QaMode, Question, Role, RoomKind, RoomSettings};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

use super::audience;
use super::ws::bearer;
use super::{ApiError, AppState};
use crate::auth::Claims;
use convene_core::room::actor::RoomHandle;
use convene_core::room::attendance::PersonAttendance;
use convene_core::room::operator::{Operation, RoomReport};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(openapi_json))
        .route("/rooms", get(list_rooms).post(create_room))
        .route(
            "/rooms/{room}",
            get(describe_room).patch(configure_room).delete(end_room),
        )
        .route("/rooms/{room}/participants", get(list_participants))
        .route(
            "/rooms/{room}/participants/{identity}",
            delete(remove_participant),
        )
        .route("/rooms/{room}/questions", get(export_questions))
        .route("/rooms/{room}/attendance", get(export_attendance))
        .route("/rooms/{room}/invites", post(mint_invite))
        .route(
            "/rooms/{room}/audience-link",
            post(audience::mint_audience_link),
        )
        .route(
            "/rooms/{room}/audience-link/join",
            post(audience::join_audience_link),
        )
        .route(
            "/rooms/{room}/audience-link/{id}",
            delete(audience::revoke_audience_link),
        )
        .route("/rooms/{room}/polls", get(export_polls))
        .route("/tokens", post(mint_token))
        .route("/nodes", get(list_nodes))
}

/// The document served at `/api/v1/openapi.json`, built from the handlers below.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Convene admin API",
        description = "Rooms, participants, access tokens and exports for a Convene node. \
                       Authorization: `Bearer <API key>` for everything, or `Bearer <host token>` \
                       for that host's own room."
    ),
    paths(
        openapi_json,
        list_rooms,
        create_room,
        describe_room,
        configure_room,
        end_room,
        list_participants,
        remove_participant,
        export_questions,
        export_attendance,
        export_polls,
        mint_token,
        mint_invite,
        audience::mint_audience_link,
        audience::revoke_audience_link,
        audience::join_audience_link,
        list_nodes
    ),
    components(schemas(ExportFormat)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(get, path = "/api/v1/openapi.json", security(()), tag = "meta",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
async fn openapi_json() -> Response {
    Json(ApiDoc::openapi()).into_response()
}

/// Every error: a machine-readable code and a sentence for people.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// e.g. `bad_request`, `unauthorized`, `forbidden`, `not_found`, `conflict`.
    error: String,
    message: String,
}

/// A JSON body; refusals are JSON errors: 400 (malformed or wrong shape), 413, 415.
pub(super) struct JsonBody<T>(pub(super) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(JsonBody(value)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Content-Type must be application/json",
            )),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    rejection.body_text(),
                ))
            }
            Err(rejection) => Err(ApiError::bad_request(rejection.body_text())),
        }
    }
}

fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
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
        // A valid token of any kind is still not the key: 403; anything else 401.
        return Err(match state.keys.verify(&token, None) {
            Ok(_) => ApiError::forbidden("this endpoint needs the API key"),
            Err(_) => ApiError::unauthorized("this endpoint needs the API key"),
        });
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

pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn running(state: &AppState, room: &str) -> Result<RoomHandle, ApiError> {
    state
        .rooms
        .get(room)
        .ok_or_else(|| ApiError::not_found(format!("room {room:?} is not running")))
}

/// Runs an operator action in the room's actor; a refusal keeps its meaning as a status.
async fn operate(handle: &RoomHandle, op: Operation) -> Result<RoomReport, ApiError> {
    match handle.operate(op).await {
        Ok(Ok(report)) => Ok(report),
        Ok(Err(denied)) => Err(match denied.code {
            convene_signaling::ErrorCode::NotFound => ApiError::not_found(denied.message),
            convene_signaling::ErrorCode::Forbidden => ApiError::forbidden(denied.message),
            _ => ApiError::bad_request(denied.message),
        }),
        Err(_) => Err(ApiError::not_found(format!(
            "room {:?} has closed",
            handle.name
        ))),
    }
}

/// Who may do what, as in the access token.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy, Debug)]
#[serde(rename_all = "snake_case")]
enum ApiRole {
    Host,
    Moderator,
    Presenter,
    Participant,
}

impl From<ApiRole> for Role {
    fn from(role: ApiRole) -> Role {
        match role {
            ApiRole::Host => Role::Host,
            ApiRole::Moderator => Role::Moderator,
            ApiRole::Presenter => Role::Presenter,
            ApiRole::Participant => Role::Participant,
        }
    }
}

impl From<Role> for ApiRole {
    fn from(role: Role) -> ApiRole {
        match role {
            Role::Host => ApiRole::Host,
            Role::Moderator => ApiRole::Moderator,
            Role::Presenter => ApiRole::Presenter,
            Role::Participant => ApiRole::Participant,
        }
    }
}

/// `webcast`: presenters on stage, an audience; `meeting`: everyone may publish.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy, Debug)]
#[serde(rename_all = "snake_case")]
enum ApiRoomKind {
    Webcast,
    Meeting,
}

/// `open`: questions are visible when asked; `moderated`: pending until approved.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy, Debug)]
#[serde(rename_all = "snake_case")]
enum ApiQaMode {
    Open,
    Moderated,
}

/// A room's settings.
#[derive(Serialize, ToSchema)]
struct Settings {
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
struct SettingsPatch {
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
struct Participant {
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
struct RoomView {
    name: String,
    settings: Settings,
    /// Ended by a host or the operator: joins are refused until it is forgotten.
    ended: bool,
    /// People in the room (including those reconnecting).
    participants: usize,
    /// Open WebSocket sessions.
    sessions: usize,
}

fn room_view(handle: &RoomHandle, report: &RoomReport) -> RoomView {
    RoomView {
        name: handle.name.to_string(),
        settings: (&report.settings).into(),
        ended: report.ended,
        participants: report.members.len(),
        sessions: handle.sessions.load(std::sync::atomic::Ordering::Relaxed),
    }
}

#[derive(Serialize, ToSchema)]
struct NodeList {
    nodes: Vec<crate::cluster::NodeInfo>,
}

/// The live nodes of this cluster (this node alone when it runs without Redis).
#[utoipa::path(get, path = "/api/v1/nodes", tag = "cluster", responses(
    (status = 200, body = NodeList),
    (status = 401, body = ErrorBody, description = "No or an invalid bearer"),
    (status = 403, body = ErrorBody, description = "An access token, not the API key"),
))]
async fn list_nodes(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<NodeList>, ApiError> {
    authorise(&state, &headers, None)?;
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
struct RoomList {
    rooms: Vec<RoomView>,
}

/// The rooms running on this node.
#[utoipa::path(get, path = "/api/v1/rooms", tag = "rooms", responses(
    (status = 200, body = RoomList),
    (status = 401, body = ErrorBody, description = "No or an invalid bearer"),
    (status = 403, body = ErrorBody, description = "An access token, not the API key"),
))]
async fn list_rooms(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<RoomList>, ApiError> {
    authorise(&state, &headers, None)?;
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
struct CreateRoom {
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
async fn create_room(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<CreateRoom>,
) -> Result<Response, ApiError> {
    authorise(&state, &headers, None)?;
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
async fn describe_room(
    State(state): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Result<Json<RoomView>, ApiError> {
    authorise(&state, &headers, Some(&room))?;
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
async fn configure_room(
    State(state): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
    JsonBody(patch): JsonBody<SettingsPatch>,
) -> Result<Json<RoomView>, ApiError> {
    authorise(&state, &headers, Some(&room))?;
    let handle = running(&state, &room)?;
    let report = operate(&handle, patch.operation()).await?;
    Ok(Json(room_view(&handle, &report)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ReasonQuery {
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
async fn end_room(
    State(state): State<AppState>,
    Path(room): Path<String>,
    q: Result<Query<ReasonQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<RoomView>, ApiError> {
    authorise(&state, &headers, Some(&room))?;
    let q = query(q)?;
    let handle = running(&state, &room)?;
    let report = operate(&handle, Operation::End { reason: q.reason }).await?;
    Ok(Json(room_view(&handle, &report)))
}

#[derive(Serialize, ToSchema)]
struct ParticipantList {
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
async fn list_participants(
    State(state): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Result<Json<ParticipantList>, ApiError> {
    authorise(&state, &headers, Some(&room))?;
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
async fn remove_participant(
    State(state): State<AppState>,
    Path((room, identity)): Path<(String, String)>,
    q: Result<Query<ReasonQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    authorise(&state, &headers, Some(&room))?;
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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ExportQuery {
    /// `json` (default) or `csv`.
    format: Option<ExportFormat>,
}

#[derive(Deserialize, ToSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum ExportFormat {
    Json,
    Csv,
}

#[derive(Serialize, ToSchema)]
struct QuestionExport {
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
async fn export_questions(
    State(state): State<AppState>,
    Path(room): Path<String>,
    q: Result<Query<ExportQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (format, handle) = export_of(&state, &room, q, &headers)?;
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
struct PollExport {
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
async fn export_polls(
    State(state): State<AppState>,
    Path(room): Path<String>,
    q: Result<Query<ExportQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (format, handle) = export_of(&state, &room, q, &headers)?;
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
fn export_of(
    state: &AppState,
    room: &str,
    q: Result<Query<ExportQuery>, QueryRejection>,
    headers: &HeaderMap,
) -> Result<(ExportFormat, RoomHandle), ApiError> {
    authorise(state, headers, Some(room))?;
    let format = query(q)
        .map_err(|_| ApiError::bad_request("format must be json or csv"))?
        .format
        .unwrap_or(ExportFormat::Json);
    Ok((format, running(state, room)?))
}

/// A CSV export as a download named after the room (safely: see `attachment`).
fn csv_download(room: &str, what: &str, csv: String) -> Response {
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
fn csv_field(value: &str) -> String {
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
fn attachment(name: &str) -> String {
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

#[derive(Serialize, ToSchema)]
struct AttendanceExport {
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
async fn export_attendance(
    State(state): State<AppState>,
    Path(room): Path<String>,
    q: Result<Query<ExportQuery>, QueryRejection>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorise(&state, &headers, Some(&room))?;
    // The sheet is kept where the room's inputs are applied: its owner's.
    if let Some(redirect) = super::media::redirect_to_owner(&state, &room, &uri, false).await? {
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

fn attendance_csv(people: &[PersonAttendance]) -> String {
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

/// The limits `Claims::check` applies to `attrs`, stated in the document.
fn attrs_schema() -> utoipa::openapi::Object {
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

/// A JSON integer, also when written as `7512.0` (JSON Schema counts that as an integer too).
pub(super) fn whole_number<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<u64>, D::Error> {
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    n.as_u64()
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 1e19)
                .map(|f| f as u64)
        })
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("{n} is not a whole number of seconds")))
}

/// A token to mint.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
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
pub(super) struct TokenResponse {
    pub(super) token: String,
    pub(super) identity: String,
    /// A join link for the browser client.
    pub(super) url: String,
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
async fn mint_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<TokenRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    if !matches!(authorise(&state, &headers, None)?, Caller::Admin) {
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
    };
    // Refuse here what the token check would refuse at every use. A name-less token is for
    // room invites (the person names themselves); the admin API always names people.
    if claims.name.trim().is_empty() {
        return Err(ApiError::bad_request("name must be 1-200 characters"));
    }
    claims.check().map_err(ApiError::bad_request)?;
    let token = state.keys.mint(&claims);
    let url = format!(
        "{}/?token={token}",
        state.config.public_url(state.config.server.listen)
    );
    Ok(Json(TokenResponse {
        token,
        identity,
        url,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct InviteRequest {
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
#[utoipa::path(post, path = "/api/v1/rooms/{room}/invites", tag = "tokens", request_body = InviteRequest,
    params(("room" = String, Path, description = "The room")),
    responses(
        (status = 200, body = TokenResponse),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody),
))]
async fn mint_invite(
    State(state): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<InviteRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let role: Role = req.role.into();
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
    if rank(role) > rank(claims.role) {
        return Err(ApiError::forbidden(format!(
            "a {} may not invite a {}",
            claims.role.as_str(),
            role.as_str()
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
        .mint_for(&room, role, &identity, name, req.attrs, ttl);
    let url = format!(
        "{}/?token={token}",
        state.config.public_url(state.config.server.listen)
    );
    Ok(Json(TokenResponse {
        token,
        identity,
        url,
    }))
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
