//! The browser client, embedded in the binary so `convene serve` works from any directory.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::AppState;

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

pub fn router() -> Router<AppState> {
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
            "/views.js",
            asset!("views.js", "text/javascript; charset=utf-8"),
        )
        .route("/style.css", asset!("style.css", "text/css; charset=utf-8"))
        // Browsers ask for /favicon.ico whatever the page links; both get the one SVG icon.
        .route("/favicon.svg", asset!("favicon.svg", "image/svg+xml"))
        .route("/favicon.ico", asset!("favicon.svg", "image/svg+xml"))
}
