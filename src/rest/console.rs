//! The operator console at `/console`: a small vanilla-JS page vendored under
//! `assets/console/` and compiled into the binary (offline, no build step).
//!
//! The page holds no privileges of its own: the operator pastes an admin
//! bearer token, the page keeps it in `sessionStorage` (gone with the tab)
//! and sends it on every call to the same public REST routes any client uses.
//! A strict Content-Security-Policy (scripts only from this origin, no inline
//! script or style, no framing) keeps a stray string from becoming script,
//! which is what guards a token readable by the page's own script.

use axum::{
    Router,
    response::{IntoResponse, Redirect},
    routing::get,
};
use http::{HeaderValue, header};

const PAGE: &str = include_str!("../../assets/console/index.html");
const SCRIPT: &str = include_str!("../../assets/console/console.js");
const STYLE: &str = include_str!("../../assets/console/console.css");

/// The console's Content-Security-Policy: nothing but this origin's script,
/// style and API, no inline script, no plugins, no framing, no form posts.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The console routes: the page at `/console`, its script and style beside it.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/console",
            get(|| async { asset("text/html; charset=utf-8", PAGE) }),
        )
        // The page links its assets relative to `/console`; send `/console/` there.
        .route("/console/", get(|| async { Redirect::permanent("../console") }))
        .route(
            "/console/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/console/console.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        ],
        body,
    )
}
