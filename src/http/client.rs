//! The browser client, embedded in the binary so `convene serve` works from any directory.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::AppState;

/// The page's Content-Security-Policy: its own scripts, styles and sockets only (the client
/// has no inline script or style), media from `blob:` (camera previews) and `data:` images,
/// and framing only by `server.frame_ancestors`.
pub fn content_security_policy(host: Option<&str>, frame_ancestors: &[String]) -> String {
    // `'self'` covers same-origin ws:/wss: in CSP 3; older engines need them spelt out. A Host
    // header with anything but host characters is left out rather than echoed.
    let sockets = host
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .map(|h| format!(" ws://{h} wss://{h}"))
        .unwrap_or_default();
    let ancestors = if frame_ancestors.is_empty() {
        "'none'".to_string()
    } else {
        frame_ancestors.join(" ")
    };
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; \
         media-src 'self' blob:; connect-src 'self'{sockets}; font-src 'self'; object-src 'none'; \
         base-uri 'none'; form-action 'self'; frame-ancestors {ancestors}"
    )
}

/// Adds the page's security headers to every client asset: CSP, no referrer (the address may
/// hold a join token before the page strips it), no MIME sniffing.
async fn page_headers(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    let mut response = next.run(request).await;
    let csp = content_security_policy(host.as_deref(), &state.config.server.frame_ancestors);
    let headers: &mut HeaderMap = response.headers_mut();
    if let Ok(csp) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if state.config.server.frame_ancestors.is_empty() {
        // For browsers without CSP frame-ancestors.
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    response
}

macro_rules! asset {
    ($path:literal, $mime:literal) => {
        get(|| async {
            (
                [
                    (header::CONTENT_TYPE, $mime),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                include_str!(concat!("../../client/", $path)),
            )
                .into_response()
        })
    };
}

pub fn router(state: AppState) -> Router<AppState> {
    let headers = axum::middleware::from_fn_with_state(state, page_headers);
    Router::new()
        .route("/", asset!("index.html", "text/html; charset=utf-8"))
        .route(
            "/app.js",
            asset!("app.js", "text/javascript; charset=utf-8"),
        )
        .route(
            "/diagnostics.js",
            asset!("diagnostics.js", "text/javascript; charset=utf-8"),
        )
        .route(
            "/protocol.js",
            asset!("protocol.js", "text/javascript; charset=utf-8"),
        )
        .route(
            "/store.js",
            asset!("store.js", "text/javascript; charset=utf-8"),
        )
        .route(
            "/dom.js",
            asset!("dom.js", "text/javascript; charset=utf-8"),
        )
        .route(
            "/connection.js",
            asset!("connection.js", "text/javascript; charset=utf-8"),
        )
        .route(
            "/media.js",
            asset!("media.js", "text/javascript; charset=utf-8"),
        )
        .route(
            "/captions.js",
            asset!("captions.js", "text/javascript; charset=utf-8"),
        )
        .route(
            "/views.js",
            asset!("views.js", "text/javascript; charset=utf-8"),
        )
        .route(
            "/lobby.js",
            asset!("lobby.js", "text/javascript; charset=utf-8"),
        )
        .route(
            "/convenings",
            asset!("convenings.html", "text/html; charset=utf-8"),
        )
        .route(
            "/convenings.js",
            asset!("convenings.js", "text/javascript; charset=utf-8"),
        )
        .route("/style.css", asset!("style.css", "text/css; charset=utf-8"))
        // The Report page for staff: one page for every convening id (the script reads it).
        .route(
            "/report/{id}",
            asset!("report.html", "text/html; charset=utf-8"),
        )
        .route(
            "/report.js",
            asset!("report.js", "text/javascript; charset=utf-8"),
        )
        .route(
            "/report.css",
            asset!("report.css", "text/css; charset=utf-8"),
        )
        // Browsers ask for /favicon.ico whatever the page links; both get the one SVG icon.
        .route("/favicon.svg", asset!("favicon.svg", "image/svg+xml"))
        .route("/favicon.ico", asset!("favicon.svg", "image/svg+xml"))
        .route_layer(headers)
}
