//! Request bounds enforced in front of every route: each request's deadline is
//! honoured and capped, and an oversized gRPC message is answered with the
//! code the gRPC spec gives it.
//!
//! - Deadline: a gRPC caller's `grpc-timeout` is honoured up to
//!   MAX_REQUEST_TIMEOUT_SECONDS, and every other request gets that cap. The
//!   header is rewritten to the capped value, so a handler that propagates the
//!   deadline sees the real one. A request still running at its deadline is
//!   answered DEADLINE_EXCEEDED (HTTP 504) and its handler future is dropped.
//!   (tonic's own `Server::timeout` would answer CANCELLED; the server here is
//!   our own accept loop, [`crate::serve`], which has none.) For a server
//!   stream the deadline covers the call up to its first response, as in tonic.
//! - Message size: tonic refuses a request above MAX_MESSAGE_BYTES with
//!   OUT_OF_RANGE before the handler runs; the gRPC spec and other servers say
//!   RESOURCE_EXHAUSTED, so that answer is rewritten.
//! - Unreadable requests: tonic answers a request body that does not decode
//!   (malformed protobuf...) with INTERNAL; it is the caller's error, so the
//!   answer is rewritten to INVALID_ARGUMENT.

use std::{
    task::{Context, Poll},
    time::Duration,
};

use axum::body::Body;
use tonic::Code;

use crate::{error::AppError, transport};

const GRPC_TIMEOUT: &str = "grpc-timeout";
const GRPC_STATUS: &str = "grpc-status";
const TOO_LARGE: &str = "Error, decoded message length too large";
/// How tonic and prost's decoders begin the INTERNAL message of a request
/// they cannot read.
const UNREADABLE: &[&str] = &[
    "failed to decode Protobuf message",
    "protocol error: received message with invalid compression flag",
    "Unexpected EOF decoding stream",
    "Error decompressing",
];

/// Caps deadlines and fixes the code of oversized messages.
#[derive(Clone, Debug)]
pub struct BoundsLayer {
    max_timeout: Duration,
}

impl BoundsLayer {
    /// Requests get at most `max_timeout`.
    pub fn new(max_timeout: Duration) -> Self {
        Self { max_timeout }
    }
}

impl<S> tower::Layer<S> for BoundsLayer {
    type Service = BoundsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        BoundsService {
            inner,
            max_timeout: self.max_timeout,
        }
    }
}

/// The service of [`BoundsLayer`].
#[derive(Clone, Debug)]
pub struct BoundsService<S> {
    inner: S,
    max_timeout: Duration,
}

impl<S, B> tower::Service<http::Request<B>> for BoundsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let grpc = transport::is_grpc(&request);
        // A grpc-web caller's refusal keeps its content type (see transport).
        let web = transport::grpc_web_type(&request).cloned();
        let asked = request
            .headers()
            .get(GRPC_TIMEOUT)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        let deadline = asked.map_or(self.max_timeout, |d| d.min(self.max_timeout));
        if grpc && let Ok(value) = http::HeaderValue::from_str(&format!("{}m", deadline.as_millis())) {
            request.headers_mut().insert(GRPC_TIMEOUT, value);
        }
        let future = self.inner.call(request);
        Box::pin(async move {
            match tokio::time::timeout(deadline, future).await {
                Ok(result) => result.map(client_codes_for_unreadable_requests),
                Err(_) => {
                    let err = AppError::DeadlineExceeded(format!(
                        "request deadline of {} ms exceeded",
                        deadline.as_millis()
                    ));
                    let status: tonic::Status = err.into();
                    Ok(if grpc {
                        transport::grpc_error_response_for(web.as_ref(), &status)
                    } else {
                        transport::json_error_response(&status)
                    })
                }
            }
        })
    }
}

/// Rewrites the codes tonic gives a request it cannot read: OUT_OF_RANGE
/// "message length too large" becomes RESOURCE_EXHAUSTED, and INTERNAL for a
/// body that does not decode (malformed protobuf, broken framing, a
/// truncated message, a bad compressed payload) becomes INVALID_ARGUMENT: the
/// caller sent it, nothing failed here (and it must not feed the alert on
/// the server's error rate).
fn client_codes_for_unreadable_requests(mut response: http::Response<Body>) -> http::Response<Body> {
    let headers = response.headers();
    let code = headers.get(GRPC_STATUS).map(http::HeaderValue::as_bytes);
    let is = |code_wanted: Code| code == Some((code_wanted as i32).to_string().as_bytes());
    let message_starts = |prefixes: &[&str]| {
        headers.get("grpc-message").is_some_and(|v| {
            prefixes
                .iter()
                .any(|p| v.as_bytes().starts_with(percent_encoded(p).as_bytes()))
        })
    };
    let rewrite = if is(Code::OutOfRange) && message_starts(&[TOO_LARGE]) {
        Some(Code::ResourceExhausted)
    } else if is(Code::Internal) && message_starts(UNREADABLE) {
        Some(Code::InvalidArgument)
    } else {
        None
    };
    if let Some(code) = rewrite {
        response
            .headers_mut()
            .insert(GRPC_STATUS, http::HeaderValue::from(code as i32));
    }
    response
}

/// grpc-message is percent-encoded; of the prefix we look for only the spaces are.
fn percent_encoded(text: &str) -> String {
    text.replace(' ', "%20")
}

/// Parses a `grpc-timeout` value (at most 8 digits and a unit, per the spec).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{Layer, ServiceExt};

    use super::*;

    /// A handler that sleeps `delay`, then echoes the grpc-timeout it saw.
    fn slow(
        delay: Duration,
    ) -> impl tower::Service<
        http::Request<Body>,
        Response = http::Response<Body>,
        Error = Infallible,
        Future = impl Send + 'static,
    > + Clone {
        tower::service_fn(move |request: http::Request<Body>| async move {
            tokio::time::sleep(delay).await;
            let seen = request.headers().get(GRPC_TIMEOUT).cloned();
            let mut response = http::Response::new(Body::empty());
            if let Some(seen) = seen {
                response.headers_mut().insert("seen-timeout", seen);
            }
            Ok::<_, Infallible>(response)
        })
    }

    fn grpc_request(timeout: Option<&str>) -> http::Request<Body> {
        let mut builder = http::Request::post("/commerce.v1.CartService/GetCart")
            .header("content-type", "application/grpc");
        if let Some(t) = timeout {
            builder = builder.header(GRPC_TIMEOUT, t);
        }
        builder.body(Body::empty()).unwrap()
    }

    // Real (short) time: tokio's paused clock needs the test-util feature,
    // which would build a second copy of every tokio-dependent crate.
    const CAP: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn a_deadline_above_the_cap_is_capped_and_answered_deadline_exceeded() {
        let service = BoundsLayer::new(CAP).layer(slow(Duration::from_secs(30)));
        let started = std::time::Instant::now();
        let response = service.oneshot(grpc_request(Some("1H"))).await.unwrap();
        let elapsed = started.elapsed();
        assert!(elapsed >= CAP && elapsed < Duration::from_secs(5), "{elapsed:?}");
        assert_eq!(response.headers()[GRPC_STATUS], "4");
    }

    #[tokio::test]
    async fn a_shorter_client_deadline_is_honoured_and_passed_on_capped() {
        let fast = BoundsLayer::new(CAP)
            .layer(slow(Duration::ZERO))
            .oneshot(grpc_request(Some("1H")))
            .await
            .unwrap();
        assert_eq!(fast.headers()["seen-timeout"], "300m");
        let started = std::time::Instant::now();
        let slow_one = BoundsLayer::new(Duration::from_secs(30))
            .layer(slow(Duration::from_secs(30)))
            .oneshot(grpc_request(Some("50m")))
            .await
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(slow_one.headers()[GRPC_STATUS], "4");
    }

    #[tokio::test]
    async fn a_slow_rest_request_gets_a_json_504() {
        let service = BoundsLayer::new(CAP).layer(slow(Duration::from_secs(30)));
        let request = http::Request::get("/api/v1/orders/").body(Body::empty()).unwrap();
        let response = service.oneshot(request).await.unwrap();
        assert_eq!(response.status(), http::StatusCode::GATEWAY_TIMEOUT);
    }

    #[test]
    fn grpc_timeouts_parse_per_the_spec() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        assert_eq!(parse_grpc_timeout("5x"), None);
        assert_eq!(parse_grpc_timeout("S"), None);
    }
}
