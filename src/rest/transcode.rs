//! The one generic transcoder: HTTP request -> proto3 JSON -> request message ->
//! the tonic service method -> response message -> JSON, or the error body.
//!
//! Nothing here knows a particular rpc: the rules come from the protos' http
//! options and the typed call from the generated table ([`super::rules`],
//! which calls [`unary`] or [`server_stream`]); a started server stream is
//! framed as Server-Sent Events by [`super::sse`].

use std::{collections::HashMap, future::Future, sync::Arc};

use axum::{body::Body, extract::FromRequestParts, extract::Path};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use tonic::Status;

use super::{
    bind,
    rule::{HttpRule, Reply},
    services::Shared,
    sse,
};
use crate::{error::AppError, transport::json_error_response};

/// Serves every rule that shares one path template: picks the rule by method
/// (405 with `Allow` otherwise), reads and binds the request, then calls.
pub async fn dispatch(
    rules: Arc<[&'static HttpRule]>,
    shared: Arc<Shared>,
    request: http::Request<Body>,
) -> http::Response<Body> {
    let Some(rule) = rules.iter().find(|r| r.verb == request.method().as_str()) else {
        return method_not_allowed(&rules, &request);
    };
    let (mut parts, body) = request.into_parts();
    let path = match Path::<HashMap<String, String>>::from_request_parts(&mut parts, &()).await {
        Ok(Path(path)) => path,
        Err(rejection) => return error(AppError::invalid("path", rejection.body_text())),
    };
    let body = match read_body(&parts.headers, body, shared.max_body_bytes).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let if_none_match = parts.headers.get(http::header::IF_NONE_MATCH).cloned();
    let reply = match bind::request_json(&shared.schema, rule, &parts, &path, &body) {
        Ok(json) => (rule.call)(shared.services.clone(), parts, json).await,
        Err(err) => return error(err),
    };
    let response = match reply {
        Reply::Response(response) => response,
        Reply::Stream(messages) => {
            return sse::respond(rule.event_id_field, messages, shared.sse_heartbeat).await;
        }
    };
    match if_none_match {
        Some(tags) if rule.verb == "GET" => not_modified(response, &tags),
        _ => response,
    }
}

/// A GET whose `If-None-Match` lists the answer's ETag gets 304 and no body.
fn not_modified(response: http::Response<Body>, tags: &http::HeaderValue) -> http::Response<Body> {
    let Some(etag) = response.headers().get(http::header::ETAG).cloned() else {
        return response;
    };
    let tags = tags.to_str().unwrap_or_default();
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_string();
    let hit = tags.trim() == "*"
        || tags
            .split(',')
            .any(|t| strip(t) == strip(etag.to_str().unwrap_or_default()));
    if response.status() != http::StatusCode::OK || !hit {
        return response;
    }
    let mut unchanged = http::Response::new(Body::empty());
    *unchanged.status_mut() = http::StatusCode::NOT_MODIFIED;
    unchanged.headers_mut().insert(http::header::ETAG, etag);
    unchanged
}

/// A unary rpc: [`invoke`], answered as one response.
pub async fn unary<Req, Resp, Fut>(
    parts: http::request::Parts,
    json: Value,
    call: impl FnOnce(tonic::Request<Req>) -> Fut,
) -> Reply
where
    Req: DeserializeOwned,
    Resp: Serialize,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    Reply::Response(invoke(parts, json, call).await)
}

/// Decodes the bound JSON into `Req` with the generated pbjson impls, calls the
/// service with the HTTP headers as metadata and the extensions (the
/// authenticated principal) carried over, and encodes the answer.
pub async fn invoke<Req, Resp, Fut>(
    parts: http::request::Parts,
    json: Value,
    call: impl FnOnce(tonic::Request<Req>) -> Fut,
) -> http::Response<Body>
where
    Req: DeserializeOwned,
    Resp: Serialize,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    match request(parts, json) {
        Ok(request) => match call(request).await {
            Ok(response) => encode(&response.into_inner()),
            Err(status) => json_error_response(&status),
        },
        Err(err) => error(err),
    }
}

/// A server-streaming rpc: decoded and called as [`invoke`] does; a refusal
/// of the call is an ordinary error response, and a started stream's messages
/// go on as proto3 JSON for the transcoder to frame as Server-Sent Events.
pub async fn server_stream<Req, S, Resp, Fut>(
    parts: http::request::Parts,
    json: Value,
    call: impl FnOnce(tonic::Request<Req>) -> Fut,
) -> Reply
where
    Req: DeserializeOwned,
    S: Stream<Item = Result<Resp, Status>> + Send + 'static,
    Resp: Serialize,
    Fut: Future<Output = Result<tonic::Response<S>, Status>>,
{
    let request = match request(parts, json) {
        Ok(request) => request,
        Err(err) => return Reply::Response(error(err)),
    };
    match call(request).await {
        Ok(stream) => Reply::Stream(Box::pin(stream.into_inner().map(|message| {
            message.and_then(|m| {
                to_json(&m).map_err(|e| Status::internal(format!("encoding a stream message: {e}")))
            })
        }))),
        Err(status) => Reply::Response(json_error_response(&status)),
    }
}

/// The tonic request of the bound JSON, or the INVALID_ARGUMENT naming the
/// field that did not decode.
fn request<Req: DeserializeOwned>(
    parts: http::request::Parts,
    json: Value,
) -> Result<tonic::Request<Req>, AppError> {
    let message: Req = serde_path_to_error::deserialize(json).map_err(|err| decode_error(&err))?;
    Ok(tonic::Request::from_http(http::Request::from_parts(
        parts, message,
    )))
}

/// A message's proto3 JSON (fields in proto order, whole doubles as integers).
fn to_json<M: Serialize>(message: &M) -> Result<Value, serde_json::Error> {
    let mut value = serde_json::to_value(message)?;
    whole_doubles_as_integers(&mut value);
    Ok(value)
}

/// The JSON answer; a response carrying a cart gets `ETag: "<version>"`, the
/// value `If-Match` takes back.
fn encode<Resp: Serialize>(message: &Resp) -> http::Response<Body> {
    let json = match to_json(message).and_then(|value| serde_json::to_vec(&value)) {
        Ok(json) => json,
        Err(err) => {
            return error(AppError::Internal(anyhow::anyhow!(
                "encoding the response: {err}"
            )));
        }
    };
    let etag = serde_json::from_slice::<CartVersion>(&json)
        .ok()
        .and_then(|c| c.cart)
        .and_then(|c| match c.version {
            Value::String(s) => Some(s),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .and_then(|version| http::HeaderValue::from_str(&format!("\"{version}\"")).ok());
    let mut response = http::Response::new(Body::from(json));
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    if let Some(etag) = etag {
        headers.insert(http::header::ETAG, etag);
    }
    response
}

/// Writes a double holding a whole number as protobuf's own JSON printers do (`1`, not `1.0`).
/// Only `google.protobuf.Struct` values (an event payload in GetOrderHistory) hold doubles
/// here; pbjson writes them through `f64`, so a quantity of 1 read `1.0`.
fn whole_doubles_as_integers(value: &mut Value) {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53: every whole f64 below is exact
    match value {
        Value::Number(n) => {
            if let Some(f) = n
                .as_f64()
                .filter(|f| n.is_f64() && f.fract() == 0.0 && f.abs() < EXACT)
            {
                // The filter makes the cast exact.
                #[allow(clippy::cast_possible_truncation)]
                let whole = f as i64;
                *n = whole.into();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_doubles_as_integers),
        Value::Object(fields) => fields.values_mut().for_each(whole_doubles_as_integers),
        Value::Null | Value::Bool(_) | Value::String(_) => {}
    }
}

/// Just the cart version of a response, if it has one.
#[derive(serde::Deserialize)]
struct CartVersion {
    cart: Option<VersionOnly>,
}

#[derive(serde::Deserialize)]
struct VersionOnly {
    version: Value,
}

/// The body bytes, bounded by MAX_BODY_BYTES (413 past it). Any content type
/// is read as JSON, as grpc-gateway does: `curl -d` sends form encoding by
/// default, and a body that is not JSON gets a 400 saying so.
async fn read_body(
    headers: &http::HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, http::Response<Body>> {
    let too_large = || {
        let status = Status::from(AppError::ResourceExhausted {
            reason: crate::error::ErrorReason::RequestTooLarge,
            message: format!("request body larger than MAX_BODY_BYTES ({limit} bytes)"),
            retry_after: None,
        });
        with_code(json_error_response(&status), http::StatusCode::PAYLOAD_TOO_LARGE)
    };
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(err) if is_length_limit(&err) => return Err(too_large()),
        Err(err) => {
            return Err(error(AppError::invalid(
                "body",
                format!("could not read the body: {err}"),
            )));
        }
    };
    Ok(bytes)
}

fn is_length_limit(err: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// A field-naming INVALID_ARGUMENT from a pbjson decode error: serde reports
/// where it failed (`quantity`, `shipping_address.city`, `items[0]`), the
/// field as the client spelled it.
fn decode_error(err: &serde_path_to_error::Error<serde_json::Error>) -> AppError {
    let message = err.inner().to_string();
    let path = err.path().to_string();
    let named = |prefix: &str| {
        let name = message.strip_prefix(prefix)?.split_once('`')?.0;
        // The path may stop at the parent or already name the field.
        Some(match path.as_str() {
            "." => name.to_string(),
            p if p == name || p.ends_with(&format!(".{name}")) => p.to_string(),
            p => format!("{p}.{name}"),
        })
    };
    if let Some(field) = named("unknown field `") {
        return AppError::invalid(field, "unknown field");
    }
    if let Some(field) = named("duplicate field `") {
        return AppError::invalid(field, "given twice (its proto and JSON names are one field)");
    }
    let field = if path == "." { "body".to_string() } else { path };
    AppError::invalid(field, message)
}

/// 405 with the methods the path does accept.
fn method_not_allowed(rules: &[&'static HttpRule], request: &http::Request<Body>) -> http::Response<Body> {
    let allowed = rules.iter().map(|r| r.verb).collect::<Vec<_>>().join(", ");
    let status = Status::unimplemented(format!(
        "method {} is not allowed on {}; allowed: {allowed}",
        request.method(),
        request.uri().path()
    ));
    let mut response = with_code(json_error_response(&status), http::StatusCode::METHOD_NOT_ALLOWED);
    if let Ok(allow) = http::HeaderValue::from_str(&allowed) {
        response.headers_mut().insert(http::header::ALLOW, allow);
    }
    response
}

fn error(err: AppError) -> http::Response<Body> {
    json_error_response(&err.into())
}

fn with_code(mut response: http::Response<Body>, code: http::StatusCode) -> http::Response<Body> {
    *response.status_mut() = code;
    response
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tonic::Code;

    use super::*;
    use crate::proto::commerce::v1::{AddItemRequest, GetCartResponse};

    fn parts() -> http::request::Parts {
        http::Request::new(()).into_parts().0
    }

    async fn failing(code: Code) -> (u16, Value) {
        let response = invoke::<AddItemRequest, GetCartResponse, _>(parts(), json!({}), |_| async move {
            Err(Status::new(code, "boom"))
        })
        .await;
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn every_grpc_code_maps_to_its_grpc_gateway_http_status_with_the_error_body() {
        let table = [
            (Code::InvalidArgument, 400),
            (Code::FailedPrecondition, 400),
            (Code::OutOfRange, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::Aborted, 409),
            (Code::ResourceExhausted, 429),
            (Code::Cancelled, 499),
            (Code::Unknown, 500),
            (Code::Internal, 500),
            (Code::DataLoss, 500),
            (Code::Unimplemented, 501),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
        ];
        for (code, http) in table {
            let (status, body) = failing(code).await;
            assert_eq!(status, http, "{code:?}");
            assert_eq!(body["code"], code as i32, "{code:?}");
            assert_eq!(body["message"], "boom");
            assert!(body["details"].is_array());
        }
    }

    #[tokio::test]
    async fn field_violations_reach_the_body_and_decode_errors_name_the_field() {
        let response = invoke::<AddItemRequest, GetCartResponse, _>(parts(), json!({}), |_| async move {
            Err(AppError::invalid("unit_price", "must be greater than zero").into())
        })
        .await;
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["details"][0]["field_violations"][0]["field"], "unit_price");

        let cases = [
            (json!({"quantity": "two"}), "quantity"),
            (json!({"unitPrice": 29.99}), "unitPrice"),
            (json!({"colour": "red"}), "colour"),
            (json!({"cart_id": "a", "cartId": "a"}), "cartId"),
            (json!({"expected_version": "x"}), "expected_version"),
        ];
        for (json, field) in cases {
            let err = serde_path_to_error::deserialize::<_, AddItemRequest>(json.clone()).unwrap_err();
            match decode_error(&err) {
                AppError::InvalidArgument(v) => assert_eq!(v[0].field, field, "{json}: {v:?}"),
                other => panic!("{other:?}"),
            }
        }
    }
}
