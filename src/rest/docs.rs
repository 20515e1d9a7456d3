//! `/openapi.json` and the browsable `/docs` page: Swagger UI vendored under
//! `assets/` and compiled into the binary, so it works with no internet.

use axum::{
    Router,
    response::{IntoResponse, Redirect},
    routing::get,
};
use http::header;

const PAGE: &str = include_str!("../../assets/docs.html");
const INIT: &str = include_str!("../../assets/docs.js");
const BUNDLE: &[u8] = include_bytes!("../../assets/swagger-ui/swagger-ui-bundle.js");
const CSS: &[u8] = include_bytes!("../../assets/swagger-ui/swagger-ui.css");

/// The docs routes, serving `openapi` (the JSON text) at `/openapi.json`.
pub fn router<S: Clone + Send + Sync + 'static>(openapi: String) -> Router<S> {
    Router::new()
        .route(
            "/openapi.json",
            get(move || async move { ([(header::CONTENT_TYPE, "application/json")], openapi) }),
        )
        .route(
            "/docs",
            get(|| async { asset("text/html; charset=utf-8", PAGE.as_bytes(), false) }),
        )
        // The page links its assets relative to `/docs`; send `/docs/` there.
        .route("/docs/", get(|| async { Redirect::permanent("../docs") }))
        .route(
            "/docs/docs.js",
            get(|| async { asset("text/javascript", INIT.as_bytes(), false) }),
        )
        .route(
            "/docs/swagger-ui-bundle.js",
            get(|| async { asset("text/javascript", BUNDLE, true) }),
        )
        .route(
            "/docs/swagger-ui.css",
            get(|| async { asset("text/css", CSS, true) }),
        )
}

fn asset(content_type: &'static str, body: &'static [u8], cacheable: bool) -> impl IntoResponse {
    let cache = if cacheable {
        "public, max-age=86400"
    } else {
        "no-cache"
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, cache),
        ],
        body,
    )
}
