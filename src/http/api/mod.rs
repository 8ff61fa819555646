//! `/api/v1`: the admin API behind the API key or, per room, a host token: the router, the OpenAPI document, and what every resource shares (authorisation, JSON bodies, errors).

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, Query, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use convene_signaling::Role;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

mod captions;
mod convenings;
mod exports;
mod record;
mod rooms;
mod tokens;

pub(super) mod audience;
use super::ws::bearer;
use super::{ApiError, AppState};
use convene_core::room::actor::RoomHandle;
use convene_core::room::operator::{Operation, RoomReport};
use convenings::*;
use exports::*;
use record::*;
use rooms::*;
pub(in crate::http) use tokens::TokenResponse;
use tokens::*;

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
        .route("/rooms/{room}/invites/{token_id}", delete(revoke_token))
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
        .route("/convenings", get(list_convenings).post(create_convening))
        .route("/convenings/{id}/report", get(convening_report))
        .route("/convenings/{id}/report/{file}", get(convening_csv))
        .route("/convenings/{id}/retention", put(set_retention))
        .route("/convenings/{id}/record", delete(delete_record))
        .route("/people/{identity}", delete(erase_person))
        .route("/rooms/{room}/captions", post(captions::post_caption))
        .route(
            "/rooms/{room}/captions/service",
            post(captions::open_caption_service).delete(captions::close_caption_service),
        )
        .route(
            "/rooms/{room}/captions/auto",
            axum::routing::put(captions::switch_auto_captions),
        )
        .route("/rooms/{room}/captions.vtt", get(captions::export_captions))
        .route("/tokens", post(mint_token))
        .route(
            "/convenings/{id}",
            get(describe_convening)
                .patch(update_convening)
                .delete(cancel_convening),
        )
        .route("/convenings/{id}/start", post(start_convening))
        .route("/convenings/{id}/end", post(end_convening))
        .route("/convenings/{id}/invites", post(mint_convening_invite))
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
        captions::open_caption_service,
        captions::close_caption_service,
        captions::post_caption,
        captions::switch_auto_captions,
        captions::export_captions,
        mint_token,
        mint_invite,
        revoke_token,
        audience::mint_audience_link,
        audience::revoke_audience_link,
        audience::join_audience_link,
        list_nodes,
        list_convenings,
        convening_report,
        convening_csv,
        set_retention,
        delete_record,
        erase_person,
        create_convening,
        describe_convening,
        update_convening,
        cancel_convening,
        start_convening,
        end_convening,
        mint_convening_invite
    ),
    components(schemas(ExportFormat)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

pub(in crate::http) struct BearerAuth;

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
pub(in crate::http) async fn openapi_json() -> Response {
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
pub(in crate::http) struct JsonBody<T>(pub(super) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        // Every request body is a JSON object: serde would also read a struct from an array.
        match Json::<serde_json::Map<String, serde_json::Value>>::from_request(request, state).await
        {
            Ok(Json(object)) => serde_json::from_value(serde_json::Value::Object(object))
                .map(JsonBody)
                .map_err(|e| {
                    ApiError::bad_request(format!(
                        "Failed to deserialize the JSON body into the target type: {e}"
                    ))
                }),
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

pub(in crate::http) fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
}

pub(in crate::http) enum Caller {
    Admin,
    Host,
}

/// The API key for everything, or a host token for its own room.
pub(in crate::http) async fn authorise(
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
    state.refuse_revoked(&claims).await?;
    Ok(Caller::Host)
}

pub(in crate::http) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(in crate::http) fn running(state: &AppState, room: &str) -> Result<RoomHandle, ApiError> {
    state
        .rooms
        .get(room)
        .ok_or_else(|| ApiError::not_found(format!("room {room:?} is not running")))
}

/// Runs an operator action in the room's actor; a refusal keeps its meaning as a status.
pub(in crate::http) async fn operate(
    handle: &RoomHandle,
    op: Operation,
) -> Result<RoomReport, ApiError> {
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
pub(in crate::http) enum ApiRole {
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

/// A JSON integer, also when written as `7512.0` (JSON Schema counts that as an integer too).
pub(in crate::http) fn whole_number<'de, D: serde::Deserializer<'de>>(
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
