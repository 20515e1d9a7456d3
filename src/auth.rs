//! Authentication and authorization: JWT bearer tokens to a [`Principal`], for
//! gRPC and REST alike.
//!
//! # Layout
//! - here: [`Role`], [`Principal`] (RBAC and ownership checks), [`principal`]
//!   and [`customer`] for handlers, and [`mint_token`] for development tokens.
//! - [`keys`]: the [`Authenticator`]: which keys verify which algorithms.
//! - [`verified`]: the tokens an authenticator verified, kept while their
//!   time claims pass, so a repeated token is not verified per call.
//! - [`layer`] (a transport, one layer up: startup imports it from there, not
//!   through this module): the [`layer::AuthLayer`] in front of every route of
//!   the one port, which also applies the rate limit of [`crate::ratelimit`].
//! - `testing` (unit tests and the `testing` feature of the integration tests
//!   only): forged and odd tokens for the attack suites.

mod keys;
pub mod layer;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod verified;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

pub use self::keys::{Authenticator, LEEWAY_SECONDS, MAX_TOKEN_BYTES};
use crate::{config::AuthSettings, error::AppError};

/// The development HS256 secret; staging and production refuse it.
pub const DEVELOPMENT_SECRET: &str = "commerce-development-secret-do-not-use-in-production";

/// A role a token may carry in its `roles` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Owns carts and orders.
    Customer,
    /// Operates the service: sagas, analytics, privacy, any resource.
    Admin,
    /// A sibling service (notifications, analytics, ...): reads the public
    /// order-event feed (`commerce.events.v1`), owns no carts or orders.
    Service,
}

impl Role {
    /// The role named `name`, if it is one of ours (identity providers add others).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "customer" => Some(Self::Customer),
            "admin" => Some(Self::Admin),
            "service" => Some(Self::Service),
            _ => None,
        }
    }
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

    /// PERMISSION_DENIED unless a customer or an admin: who may call the cart
    /// and order rpcs (a customer on their own carts and orders, an admin on
    /// any). A `service` token, or one with no role of ours, owns no carts or
    /// orders and is refused, not treated as a customer named by its `sub`.
    pub fn require_customer(&self) -> Result<(), AppError> {
        if self.is_admin() || self.roles.contains(&Role::Customer) {
            Ok(())
        } else {
            Err(AppError::PermissionDenied(
                "customer or admin role required".into(),
            ))
        }
    }

    /// PERMISSION_DENIED unless a sibling service or an admin: who may read
    /// the public order-event feed.
    pub fn require_service(&self) -> Result<(), AppError> {
        if self.is_admin() || self.roles.contains(&Role::Service) {
            Ok(())
        } else {
            Err(AppError::PermissionDenied(
                "service or admin role required".into(),
            ))
        }
    }

    /// True when the principal may see a resource owned by `owner`. A caller
    /// who may not must be answered NOT_FOUND, so that ids leak nothing.
    pub fn may_access(&self, owner: &str) -> bool {
        self.subject == owner || self.is_admin()
    }
}

/// The caller of a gRPC request; UNAUTHENTICATED when the layer found no token.
pub fn principal<T>(request: &tonic::Request<T>) -> Result<Principal, AppError> {
    principal_from(request.extensions())
}

/// The caller of a cart or order rpc: [`principal`], then
/// [`Principal::require_customer`].
pub fn customer<T>(request: &tonic::Request<T>) -> Result<Principal, AppError> {
    let caller = principal(request)?;
    caller.require_customer()?;
    Ok(caller)
}

/// The caller recorded in request extensions (the REST shim passes its own).
pub fn principal_from(extensions: &http::Extensions) -> Result<Principal, AppError> {
    extensions
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| AppError::Unauthenticated("missing bearer token".into()))
}

/// Claims that [`mint_token`] issues.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// Subject: the customer id.
    pub sub: String,
    /// Not a registered claim; a token without it has no role.
    #[serde(default)]
    pub roles: Vec<Role>,
    /// Must equal JWT_ISSUER.
    pub iss: String,
    /// Must equal JWT_AUDIENCE.
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Not before, seconds since the epoch.
    pub nbf: u64,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
}

/// Mints a development HS256 token (the `token` subcommand and tests), signed
/// with `JWT_SECRET` or the development secret. Production tokens come from the
/// identity provider: in production this refuses the development secret.
pub fn mint_token(
    settings: &AuthSettings,
    subject: &str,
    roles: &[Role],
    ttl: Duration,
) -> anyhow::Result<String> {
    let secret = settings.jwt_secret.as_deref().unwrap_or(DEVELOPMENT_SECRET);
    if !settings.environment.allows_development_secrets() && secret == DEVELOPMENT_SECRET {
        anyhow::bail!(
            "refusing to mint a token with the development secret in ENVIRONMENT={}",
            settings.environment
        );
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = Claims {
        sub: subject.to_string(),
        roles: roles.to_vec(),
        iss: settings.jwt_issuer.clone(),
        aud: settings.jwt_audience.clone(),
        exp: now + ttl.as_secs(),
        nbf: now,
        iat: now,
    };
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )?)
}
