//! The REST/JSON shim for browsers, on the same port as gRPC: every
//! `google.api.http` rule of the protos served by one generic transcoder that
//! calls the same tonic service objects the gRPC server runs, plus
//! `/openapi.json` (derived from the same descriptors), the `/docs` page and
//! the operator console at `/console`.
//!
//! # Layout
//! - [`rule`]: one mapping of an rpc; [`rules`]: the route table of them that
//!   build.rs generates from the http options.
//! - [`Services`]: the tonic service objects the routes call.
//! - [`schema`]: messages, enums and comments from the embedded descriptor set.
//! - [`bind`]: path, query, header and body to the request's proto3 JSON.
//! - `transcode`: dispatch, decode (pbjson), call, encode, error bodies.
//! - `sse`: a server-streaming rpc's messages as Server-Sent Events.
//! - [`openapi`] and `docs`: the OpenAPI 3 document and the offline docs page.
//! - [`console`]: the operator console (static page over these same routes).

pub mod bind;
pub mod console;
mod docs;
pub mod openapi;
pub mod rule;
pub mod rules;
pub mod schema;
mod services;
mod sse;
mod transcode;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{Router, body::Body, routing::any};
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use self::services::Services;
use self::{rule::HttpRule, rules::RULES, schema::Schema, services::Shared};

/// The REST routes, `/openapi.json`, `/docs` and `/console`, to merge into the HTTP router;
/// request bodies of at most `max_body_bytes`, a heartbeat on a server stream
/// after `sse_heartbeat` of silence.
pub fn router<S: Clone + Send + Sync + 'static>(
    services: Services,
    max_body_bytes: usize,
    sse_heartbeat: Duration,
) -> anyhow::Result<Router<S>> {
    let schema = Schema::decode(crate::proto::FILE_DESCRIPTOR_SET)?;
    let openapi = openapi::document(&schema, RULES).to_string();
    let shared = Arc::new(Shared {
        services: Arc::new(services),
        schema,
        max_body_bytes,
        sse_heartbeat,
    });

    let mut by_path: BTreeMap<&'static str, Vec<&'static HttpRule>> = BTreeMap::new();
    for rule in RULES {
        by_path.entry(rule.path).or_default().push(rule);
    }
    let mut router = Router::new();
    for (path, rules) in &by_path {
        let rules: Arc<[&'static HttpRule]> = rules.clone().into();
        let shared = shared.clone();
        let handler = any(move |request: http::Request<Body>| {
            transcode::dispatch(rules.clone(), shared.clone(), request)
        });
        router = router.route(path, handler.clone());
        // The seed's collection routes end in `/`; accept them without it too.
        if let Some(bare) = path.strip_suffix('/')
            && !bare.is_empty()
            && !by_path.contains_key(bare)
        {
            router = router.route(bare, handler);
        }
    }
    Ok(router.merge(docs::router(openapi)).merge(console::router()))
}

/// CORS for browsers, REST and grpc-web alike: CORS_ALLOWED_ORIGINS (`*` or a
/// list; empty allows none). Bearer tokens travel in a header, not cookies, so
/// credentials stay off. A grpc-web client sends its own headers and reads the
/// status from response headers on a trailers-only answer, so those are
/// allowed and exposed too.
pub fn cors_layer(origins: &[String]) -> anyhow::Result<CorsLayer> {
    use http::{Method, header};
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .map(|o| {
                    http::HeaderValue::from_str(o)
                        .with_context(|| format!("CORS_ALLOWED_ORIGINS: bad origin {o:?}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
        )
    };
    let request_id = header::HeaderName::from_static("x-request-id");
    Ok(CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
            header::IF_NONE_MATCH,
            header::HeaderName::from_static("idempotency-key"),
            // A resuming Server-Sent Events reader sends it with fetch.
            header::HeaderName::from_static("last-event-id"),
            request_id.clone(),
            header::HeaderName::from_static("x-grpc-web"),
            header::HeaderName::from_static("x-user-agent"),
            header::HeaderName::from_static("grpc-timeout"),
        ])
        .expose_headers([
            header::ETAG,
            header::RETRY_AFTER,
            request_id,
            header::HeaderName::from_static("grpc-status"),
            header::HeaderName::from_static("grpc-message"),
            header::HeaderName::from_static("grpc-status-details-bin"),
        ])
        .max_age(Duration::from_secs(600)))
}
