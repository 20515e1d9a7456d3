//! Authentication: JWT bearer tokens to a [`Principal`], for gRPC and REST alike.
//!
//! The [`AuthLayer`] runs in front of every route of the one port: it reads
//! `authorization: Bearer ...` from the HTTP headers (gRPC metadata are HTTP/2
//! headers), verifies it, and puts the [`Principal`] into the request
//! extensions, where tonic handlers and the REST shim find it.

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::{config::Config, error::AppError};

/// The development HS256 secret; `ENVIRONMENT=production` refuses it.
pub const DEVELOPMENT_SECRET: &str = "commerce-development-secret-do-not-use-in-production";

/// A role a token may carry in its `roles` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Owns carts and orders.
    Customer,
    /// Operates the service: sagas, analytics, any resource.
    Admin,
}

/// Who is calling, from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`: the customer id.
    pub subject: String,
    /// Roles from the `roles` claim.
    pub roles: Vec<Role>,
}

impl Principal {
    /// True for the admin role.
    pub fn is_admin(&self) -> bool {
        self.roles.contains(&Role::Admin)
    }

    /// PERMISSION_DENIED unless admin.
    pub fn require_admin(&self) -> Result<(), AppError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(AppError::PermissionDenied("admin role required".into()))
        }
    }

    /// True when the principal may see a resource owned by `owner`.
    pub fn may_access(&self, owner: &str) -> bool {
        self.subject == owner || self.is_admin()
    }
}

/// The caller of a gRPC request; UNAUTHENTICATED when the layer found no token.
pub fn principal<T>(request: &tonic::Request<T>) -> Result<Principal, AppError> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| AppError::Unauthenticated("missing bearer token".into()))
}

/// Claims we issue and accept.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// Subject: the customer id.
    pub sub: String,
    /// Roles.
    #[serde(default)]
    pub roles: Vec<Role>,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Not before, seconds since the epoch.
    pub nbf: u64,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
}

/// Verifies tokens.
#[derive(Clone)]
pub struct Authenticator {
    key: Arc<DecodingKey>,
    validation: Arc<Validation>,
}

impl Authenticator {
    /// Builds the verifier from the configuration.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let secret = config.jwt_secret.as_deref().unwrap_or(DEVELOPMENT_SECRET);
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&config.jwt_issuer]);
        validation.set_audience(&[&config.jwt_audience]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        validation.leeway = 30;
        validation.validate_nbf = true;
        Ok(Self {
            key: Arc::new(DecodingKey::from_secret(secret.as_bytes())),
            validation: Arc::new(validation),
        })
    }

    /// Verifies a token and returns its principal.
    pub fn verify(&self, token: &str) -> Result<Principal, AppError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| AppError::Unauthenticated(format!("invalid token: {e}")))?;
        let claims = data.claims;
        if claims.sub.is_empty() || claims.sub.len() > 128 {
            return Err(AppError::Unauthenticated("invalid token: bad sub".into()));
        }
        Ok(Principal {
            subject: claims.sub,
            roles: claims.roles,
        })
    }
}

/// Mints a development HS256 token (the `token` subcommand and tests).
pub fn mint_token(config: &Config, subject: &str, roles: &[Role], ttl: Duration) -> anyhow::Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = Claims {
        sub: subject.to_string(),
        roles: roles.to_vec(),
        iss: config.jwt_issuer.clone(),
        aud: config.jwt_audience.clone(),
        exp: now + ttl.as_secs(),
        nbf: now,
        iat: now,
    };
    let secret = config.jwt_secret.as_deref().unwrap_or(DEVELOPMENT_SECRET);
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

/// Tower layer that authenticates every request that carries a token.
///
/// A missing token is not refused here: health, reflection, metrics and docs
/// are public, and each handler that needs a caller asks for [`principal`].
/// A token that is present but invalid is refused at once.
#[derive(Clone)]
pub struct AuthLayer {
    authenticator: Authenticator,
}

impl AuthLayer {
    /// A layer verifying with `authenticator`.
    pub fn new(authenticator: Authenticator) -> Self {
        Self { authenticator }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            authenticator: self.authenticator.clone(),
        }
    }
}

/// The service of [`AuthLayer`].
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    authenticator: Authenticator,
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
        let bearer = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or_default().to_string());
        if let Some(header) = bearer {
            let verified = header
                .strip_prefix("Bearer ")
                .or_else(|| header.strip_prefix("bearer "))
                .ok_or_else(|| AppError::Unauthenticated("expected `Bearer <token>`".into()))
                .and_then(|token| self.authenticator.verify(token.trim()));
            match verified {
                Ok(principal) => {
                    request.extensions_mut().insert(principal);
                }
                Err(err) => {
                    let response = crate::transport::error_response(&request, err);
                    return Box::pin(async move { Ok(response) });
                }
            }
        }
        let future = self.inner.call(request);
        Box::pin(future)
    }
}
