//! One REST mapping of an rpc ([`HttpRule`]), apart from the generated table of
//! them ([`super::rules`]), so that the binder and the transcoder can read a rule
//! without depending on the table that calls into them.

use std::sync::Arc;

use axum::body::Body;
use futures::{future::BoxFuture, stream::BoxStream};

use super::services::Services;

/// Calls the rpc with the request JSON already bound from path, query, body and headers.
pub type Call = fn(Arc<Services>, http::request::Parts, serde_json::Value) -> BoxFuture<'static, Reply>;

/// The stream messages of a server-streaming rpc, each as its proto3 JSON.
pub type JsonStream = BoxStream<'static, Result<serde_json::Value, tonic::Status>>;

/// What a call answers: a whole response, or (a server stream that started)
/// the messages still to come, which the transcoder frames as Server-Sent Events.
pub enum Reply {
    /// The HTTP response: a unary answer, or any error before a stream started.
    Response(http::Response<Body>),
    /// A started server stream.
    Stream(JsonStream),
}

/// One REST mapping of an rpc.
pub struct HttpRule {
    /// Full service name, e.g. `commerce.v1.CartService`.
    pub service: &'static str,
    /// Method name, e.g. `AddItem`.
    pub rpc: &'static str,
    /// HTTP method, upper case.
    pub verb: &'static str,
    /// Path template, e.g. `/api/v1/cart/{cart_id}/items`.
    pub path: &'static str,
    /// `*` (the whole body is the request), a field name, or empty (no body).
    pub body: &'static str,
    /// Request message full name.
    pub input: &'static str,
    /// Response message full name (of each message, for a server stream).
    pub output: &'static str,
    /// A server-streaming rpc, served as Server-Sent Events.
    pub server_streaming: bool,
    /// Request field a reconnecting SSE client's `Last-Event-ID` fills (empty: none).
    pub resume_field: &'static str,
    /// Dotted path of the stream message's field that is each event's `id:` (empty: none).
    pub event_id_field: &'static str,
    /// Calls the route's service method with the request's parts and JSON body.
    pub call: Call,
}

impl HttpRule {
    /// Names of the `{variables}` of the path template.
    pub fn path_variables(&self) -> impl Iterator<Item = &'static str> {
        self.path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
    }

    /// `commerce.v1.CartService/AddItem`.
    pub fn full_method(&self) -> String {
        format!("{}/{}", self.service, self.rpc)
    }

    /// The service name without its package, e.g. `CartService` (the OpenAPI tag).
    pub fn service_name(&self) -> &'static str {
        self.service.rsplit('.').next().unwrap_or(self.service)
    }
}
