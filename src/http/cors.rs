//! CORS for WHIP/WHEP: preflights answered without a token, and the headers a player on another origin needs on every answer.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// Browsers may cache a preflight answer this long (seconds).
const MAX_AGE_S: &str = "3600";
/// What a page may send: the bearer token, the SDP's type, the ETag of a PATCH.
const ALLOW_HEADERS: &str = "Authorization, Content-Type, If-Match";
/// What a page may read: the session's URL, the relay credentials, the ETag and what it accepts.
const EXPOSE_HEADERS: &str = "Location, Link, ETag, Accept-Patch, Accept-Post, Retry-After";

/// The configured origins (`limits.whip_whep.cors_origins`).
#[derive(Clone, Debug)]
pub struct Origins(Arc<Vec<String>>);

impl Origins {
    pub fn new(list: &[String]) -> Origins {
        Origins(Arc::new(
            list.iter()
                .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        ))
    }

    /// The `Access-Control-Allow-Origin` value for `origin`, if it is allowed: the origin
    /// itself (with `Vary: Origin`), so a player that sends credentials works too.
    fn allow(&self, origin: &str) -> Option<HeaderValue> {
        let wanted = origin.trim_end_matches('/').to_ascii_lowercase();
        self.0
            .iter()
            .any(|o| o == "*" || *o == wanted)
            .then(|| HeaderValue::from_str(origin).ok())
            .flatten()
    }
}

/// Methods of the endpoint (`/whip/{room}`) or of a session resource under it.
fn methods(path: &str) -> &'static str {
    // `/whip/{room}` has two segments; a resource has three.
    if path.trim_matches('/').split('/').count() >= 3 {
        super::media_sessions::RESOURCE_METHODS
    } else {
        "POST, OPTIONS"
    }
}

fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The middleware: a preflight is answered here (no token: browsers never send one with it);
/// any other request goes on, and its answer gets the allow and expose headers.
pub async fn cors(origins: Origins, request: Request, next: Next) -> Response {
    let Some(origin) = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
    else {
        return next.run(request).await;
    };
    let allowed = origins.allow(&origin);
    if is_preflight(request.method(), request.headers()) {
        let Some(allowed) = allowed else {
            return ApiError::forbidden(format!(
                "origin {origin} may not call WHIP/WHEP here (limits.whip_whep.cors_origins)"
            ))
            .into_response();
        };
        let methods = methods(request.uri().path());
        let mut res = StatusCode::NO_CONTENT.into_response();
        let h = res.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(methods),
        );
        h.insert(header::ALLOW, HeaderValue::from_static(methods));
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(MAX_AGE_S),
        );
        return res;
    }
    let mut res = next.run(request).await;
    if let Some(allowed) = allowed {
        let h = res.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        h.append(header::VARY, HeaderValue::from_static("Origin"));
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_exactly_or_any() {
        let some = Origins::new(&["https://Player.example/".into()]);
        assert!(some.allow("https://player.example").is_some());
        assert!(some.allow("https://player.example.evil").is_none());
        assert!(Origins::new(&[]).allow("https://a.example").is_none());
        assert!(Origins::new(&["*".into()]).allow("http://b:1").is_some());
        assert_eq!(methods("/whip/r"), "POST, OPTIONS");
        assert_eq!(methods("/whep/r/abc"), "PATCH, DELETE, OPTIONS");
    }
}
