//! Shared by the gRPC and HTTP sides of the one port: turning an error into
//! the response its transport expects.

use axum::body::Body;
use serde_json::{Value, json};
use tonic::Status;
use tonic_types::{BadRequest, ErrorInfo, PreconditionFailure, ResourceInfo, RetryInfo, StatusExt};

use crate::error::{AppError, http_status};

/// The connections a server accepts on `listener`, with TCP_NODELAY.
///
/// tonic's `Server::tcp_nodelay` only applies to listeners tonic binds
/// itself; for a listener of ours it must be set here. Without it, a reply
/// written in several pieces (headers, message, trailers) waits for the
/// client's delayed ACK under Nagle's algorithm: about 40 ms per call on a
/// connection that sends one request after another.
pub fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// True for a gRPC request (content-type `application/grpc*`).
pub fn is_grpc<B>(request: &http::Request<B>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// An error answered in the caller's transport: gRPC status or JSON body.
pub fn error_response<B>(request: &http::Request<B>, err: AppError) -> http::Response<Body> {
    let status: Status = err.into();
    if is_grpc(request) {
        grpc_error_response(request, &status)
    } else {
        json_error_response(&status)
    }
}

/// A trailers-only gRPC answer for a refusal in front of the services (auth,
/// deadline, rate limit, unknown route). A grpc-web caller
/// (`application/grpc-web...`) gets it as well (the status in headers, which
/// is grpc-web's trailers-only form) but with its own content type: a
/// grpc-web client that checks the content type rejects `application/grpc`.
pub fn grpc_error_response<B>(request: &http::Request<B>, status: &Status) -> http::Response<Body> {
    grpc_error_response_for(grpc_web_type(request), status)
}

/// The grpc-web content type of `request` (`application/grpc-web...`), if it is one.
pub fn grpc_web_type<B>(request: &http::Request<B>) -> Option<&http::HeaderValue> {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .filter(|ct| ct.as_bytes().starts_with(b"application/grpc-web"))
}

/// [`grpc_error_response`] once the request is gone (a layer that answers
/// after handing the request on): `web` is what [`grpc_web_type`] said.
pub fn grpc_error_response_for(web: Option<&http::HeaderValue>, status: &Status) -> http::Response<Body> {
    let mut response = status.clone().into_http();
    if let Some(web) = web {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, web.clone());
    }
    response
}

/// The grpc-gateway error body `{"code","message","details"}` for a status:
/// every `google.rpc` detail the status carries, each as the JSON form of a
/// `google.protobuf.Any` (`@type` plus the message's fields, with the proto
/// field names as the rest of the REST shim uses). BadRequest and RetryInfo
/// keep the places they had before ErrorInfo was added (clients that read
/// `details[0]` still find them); find a detail by its `@type`.
pub fn json_error_body(status: &Status) -> Value {
    let details = status.get_error_details();
    let mut out = Vec::new();
    if let Some(bad) = details.bad_request() {
        out.push(json!({
            "@type": BadRequest::TYPE_URL,
            "field_violations": bad.field_violations.iter().map(|v| json!({
                "field": v.field,
                "description": v.description,
            })).collect::<Vec<_>>(),
        }));
    }
    if let Some(retry) = details.retry_info()
        && let Some(delay) = retry.retry_delay
    {
        out.push(json!({
            "@type": RetryInfo::TYPE_URL,
            "retry_delay": format!("{}.{:03}s", delay.as_secs(), delay.subsec_millis()),
        }));
    }
    if let Some(info) = details.error_info() {
        out.push(json!({
            "@type": ErrorInfo::TYPE_URL,
            "reason": info.reason,
            "domain": info.domain,
            "metadata": info.metadata,
        }));
    }
    if let Some(failure) = details.precondition_failure() {
        out.push(json!({
            "@type": PreconditionFailure::TYPE_URL,
            "violations": failure.violations.iter().map(|v| json!({
                "type": v.r#type,
                "subject": v.subject,
                "description": v.description,
            })).collect::<Vec<_>>(),
        }));
    }
    if let Some(resource) = details.resource_info() {
        out.push(json!({
            "@type": ResourceInfo::TYPE_URL,
            "resource_type": resource.resource_type,
            "resource_name": resource.resource_name,
            "owner": resource.owner,
            "description": resource.description,
        }));
    }
    json!({
        "code": status.code() as i32,
        "message": status.message(),
        "details": out,
    })
}

/// A JSON error response for a status, with the grpc-gateway HTTP code.
pub fn json_error_response(status: &Status) -> http::Response<Body> {
    let code = http_status(status.code());
    let mut response = http::Response::new(Body::from(json_error_body(status).to_string()));
    *response.status_mut() = code;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    if let Some(delay) = status
        .get_error_details()
        .retry_info()
        .and_then(|r| r.retry_delay)
    {
        let secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
        if let Ok(value) = http::HeaderValue::from_str(&secs.max(1).to_string()) {
            response.headers_mut().insert(http::header::RETRY_AFTER, value);
        }
    }
    response
}
