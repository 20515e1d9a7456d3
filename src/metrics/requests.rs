//! The request middleware: counts and times every gRPC call and HTTP request,
//! writes one access-log line inside the request span, and marks the span
//! with the outcome.
//!
//! A gRPC call's status usually arrives in the trailers, after the body, so
//! the response body is wrapped and the call is recorded when the trailers
//! pass by (or when the body is dropped early: the client went away).

use std::{
    collections::HashMap,
    pin::Pin,
    sync::OnceLock,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    body::{Body, Bytes},
    extract::{MatchedPath, Request},
    middleware::Next,
    response::Response,
};
use hyper::body::{Frame, SizeHint};
use prost::Message;
use tonic::Code;

/// What the middleware knows of a gRPC method from the descriptors.
#[derive(Clone, Copy)]
struct MethodInfo {
    service: &'static str,
    method: &'static str,
    server_streaming: bool,
}

/// Labels for a path that names no known method: clients choose paths, and
/// each distinct one must not become a series.
const UNKNOWN: MethodInfo = MethodInfo {
    service: "unknown",
    method: "unknown",
    server_streaming: false,
};

/// Every gRPC method this process serves, from the encoded descriptor sets,
/// keyed by its path `/package.Service/Method`.
fn known_methods() -> &'static HashMap<String, MethodInfo> {
    static METHODS: OnceLock<HashMap<String, MethodInfo>> = OnceLock::new();
    METHODS.get_or_init(|| {
        let mut methods = HashMap::new();
        for encoded in [
            crate::proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ] {
            let Ok(set) = prost_types::FileDescriptorSet::decode(encoded) else {
                continue;
            };
            for file in set.file {
                for service in &file.service {
                    let full = match file.package() {
                        "" => service.name().to_string(),
                        package => format!("{package}.{}", service.name()),
                    };
                    // Leaked once per method at start: labels want `&'static str`.
                    let service_name: &'static str = Box::leak(full.clone().into_boxed_str());
                    for method in &service.method {
                        let method_name: &'static str = Box::leak(method.name().to_string().into_boxed_str());
                        methods.insert(
                            format!("/{full}/{method_name}"),
                            MethodInfo {
                                service: service_name,
                                method: method_name,
                                server_streaming: method.server_streaming(),
                            },
                        );
                    }
                }
            }
        }
        methods
    })
}

/// Middleware (`axum::middleware::from_fn(track_requests)`) recording
/// `grpc_server_*` or `http_*` for every request.
pub async fn track_requests(request: Request, next: Next) -> Response {
    let start = Instant::now();
    if crate::transport::is_grpc(&request) {
        let info = known_methods()
            .get(request.uri().path())
            .copied()
            .unwrap_or(UNKNOWN);
        let response = next.run(request).await;
        let call = GrpcCall {
            info,
            start,
            span: tracing::Span::current(),
        };
        // Errors before any message come "trailers-only": the status is in the head.
        if let Some(code) = grpc_status(response.headers()) {
            call.finish(code);
            return response;
        }
        response.map(|inner| {
            Body::new(GrpcBody {
                inner,
                call: Some(call),
            })
        })
    } else {
        let method = method_label(request.method());
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or_else(|| "unmatched".to_string(), |path| path.as_str().to_string());
        let response = next.run(request).await;
        let status = response.status().as_u16();
        let elapsed = start.elapsed();
        super::http_request(method, route, status, elapsed);
        let span = tracing::Span::current();
        span.record("http.response.status_code", status);
        if status >= 500 {
            span.record("otel.status_code", "ERROR");
        }
        tracing::info!(target: "commerce::access", status, latency_ms = millis(elapsed), "http request completed");
        response
    }
}

/// A gRPC call waiting for its status.
struct GrpcCall {
    info: MethodInfo,
    start: Instant,
    span: tracing::Span,
}

impl GrpcCall {
    fn finish(self, code: Code) {
        let elapsed = self.start.elapsed();
        let name = grpc_code_name(code);
        // A stream's lifetime is not a latency: only unary calls feed the histogram.
        let timed = (!self.info.server_streaming).then_some(elapsed);
        super::grpc_request(self.info.service, self.info.method, name, timed);
        self.span.record("rpc.grpc.status_code", code as i32);
        if is_server_error(code) {
            self.span.record("otel.status_code", "ERROR");
        }
        self.span.in_scope(|| {
            tracing::info!(target: "commerce::access", code = name, latency_ms = millis(elapsed), "grpc request completed");
        });
    }
}

/// The response body of a gRPC call, recording the call once its trailers pass.
struct GrpcBody {
    inner: Body,
    call: Option<GrpcCall>,
}

impl hyper::body::Body for GrpcBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let code = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame
                .trailers_ref()
                .map(|trailers| grpc_status(trailers).unwrap_or(Code::Unknown)),
            Poll::Ready(Some(Err(_))) => Some(Code::Internal),
            // Ended without trailers: not a well-formed gRPC response.
            Poll::Ready(None) => Some(Code::Unknown),
            Poll::Pending => None,
        };
        if let Some(code) = code
            && let Some(call) = self.call.take()
        {
            call.finish(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for GrpcBody {
    fn drop(&mut self) {
        // Dropped before the trailers: the client cancelled or the connection broke.
        if let Some(call) = self.call.take() {
            call.finish(Code::Cancelled);
        }
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    Some(Code::from_i32(value.trim().parse().ok()?))
}

/// Codes that mean the server (or a dependency) failed, not the caller.
fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::Internal
            | Code::Unavailable
            | Code::DeadlineExceeded
            | Code::DataLoss
            | Code::Unimplemented
    )
}

/// The canonical name of a gRPC code, as in `google.rpc.Code`: "OK", "NOT_FOUND", ...
pub fn grpc_code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The standard methods by name; anything else is "OTHER" (clients choose methods too).
fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

fn millis(elapsed: Duration) -> f64 {
    (elapsed.as_secs_f64() * 1e6).round() / 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_methods_come_from_the_descriptors_with_their_streaming_kind() {
        let methods = known_methods();
        let create = methods
            .get("/commerce.v1.OrderService/CreateOrder")
            .expect("CreateOrder known");
        assert_eq!(
            (create.service, create.method),
            ("commerce.v1.OrderService", "CreateOrder")
        );
        assert!(!create.server_streaming);
        assert!(methods["/commerce.v1.OrderService/WatchOrder"].server_streaming);
        assert!(methods.contains_key("/grpc.health.v1.Health/Check"));
        assert!(methods.contains_key("/payment.v1.PaymentService/Authorize"));
        assert!(!methods.contains_key("/commerce.v1.OrderService/Nope"));
    }

    #[test]
    fn code_names_follow_google_rpc() {
        assert_eq!(grpc_code_name(Code::Ok), "OK");
        assert_eq!(grpc_code_name(Code::FailedPrecondition), "FAILED_PRECONDITION");
        assert_eq!(method_label(&http::Method::from_bytes(b"BREW").unwrap()), "OTHER");
    }
}
