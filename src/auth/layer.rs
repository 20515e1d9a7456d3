//! The tower layer in front of every route of the one port: verifies the
//! bearer token, if any, and applies the rate limit, for gRPC and REST alike.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    task::{Context, Poll},
};

use super::{Authenticator, Principal};
use crate::{
    error::AppError,
    ratelimit::{self, BucketKey, RateLimiter},
};

/// Authenticates every request that carries a token, then rate-limits it.
///
/// A missing token is not refused here: health, reflection, metrics and docs
/// are public, and each handler that needs a caller asks for
/// [`super::principal`]. A token that is present but invalid is refused at once.
/// The rate limit keys on the verified subject, else on the TCP peer address,
/// so a flood of bad tokens is throttled like any anonymous flood.
#[derive(Clone)]
pub struct AuthLayer {
    authenticator: Authenticator,
    limiter: Option<RateLimiter>,
}

impl AuthLayer {
    /// A layer verifying with `authenticator`, without a rate limit.
    pub fn new(authenticator: Authenticator) -> Self {
        Self {
            authenticator,
            limiter: None,
        }
    }

    /// The same layer, also drawing every request from `limiter` (None: unlimited).
    pub fn with_rate_limiter(mut self, limiter: Option<RateLimiter>) -> Self {
        self.limiter = limiter;
        self
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`AuthLayer`].
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    layer: AuthLayer,
}

impl<S, B> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<axum::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let verified = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|value| self.verify(value));
        if let Some(limiter) = &self.layer.limiter
            && !ratelimit::is_exempt(request.uri().path())
        {
            let key = match &verified {
                Some(Ok(principal)) => BucketKey::Subject(principal.subject.clone()),
                _ => BucketKey::Ip(peer_ip(&request)),
            };
            if let Err(retry_after) = limiter.check(key) {
                metrics::counter!("commerce_rate_limited_total").increment(1);
                let err = AppError::ResourceExhausted {
                    reason: crate::error::ErrorReason::RateLimited,
                    message: "rate limit exceeded; retry later".into(),
                    retry_after: Some(retry_after),
                };
                let response = crate::transport::error_response(&request, err);
                return Box::pin(async move { Ok(response) });
            }
        }
        match verified {
            Some(Ok(principal)) => {
                request.extensions_mut().insert(principal);
            }
            Some(Err(err)) => {
                let response = crate::transport::error_response(&request, err);
                return Box::pin(async move { Ok(response) });
            }
            None => {}
        }
        Box::pin(self.inner.call(request))
    }
}

impl<S> AuthService<S> {
    fn verify(&self, value: &http::HeaderValue) -> Result<Principal, AppError> {
        let header = value.to_str().unwrap_or_default();
        let (scheme, token) = header.split_once(' ').unwrap_or((header, ""));
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(AppError::Unauthenticated(
                "expected `authorization: Bearer <token>`".into(),
            ));
        }
        self.layer.authenticator.verify(token.trim())
    }
}

/// The caller's address: tonic records the TCP peer of each connection in the
/// request extensions (axum's `ConnectInfo` when served by axum directly).
fn peer_ip<B>(request: &http::Request<B>) -> IpAddr {
    let extensions = request.extensions();
    extensions
        .get::<tonic::transport::server::TcpConnectInfo>()
        .and_then(|info| info.remote_addr())
        .or_else(|| {
            extensions
                .get::<axum::extract::ConnectInfo<SocketAddr>>()
                .map(|info| info.0)
        })
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |addr| addr.ip())
}
