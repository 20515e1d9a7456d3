//! Test support for the attack suites: tokens with chosen claims, headers and
//! keys, including ones the service must refuse (`alg: none`, wrong key...).
//! Nothing here is used by the service itself.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

use super::Role;
use crate::config::AuthSettings;

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Claims the configuration accepts: its issuer and audience, valid for ten minutes.
pub fn valid_claims(settings: &AuthSettings, subject: &str, roles: &[Role]) -> Value {
    let now = now();
    json!({
        "sub": subject,
        "roles": roles,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "exp": now + 600,
        "nbf": now,
        "iat": now,
    })
}

/// `claims` signed with `key` under `header`.
pub fn sign(header: &Header, claims: &Value, key: &EncodingKey) -> jsonwebtoken::errors::Result<String> {
    jsonwebtoken::encode(header, claims, key)
}

/// `claims` under `{"alg":"none"}` with an empty signature: the classic forgery.
pub fn unsigned(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.")
}

/// The test key pair file `name` under `tests/fixtures/jwt/`.
pub fn fixture(name: &str) -> std::io::Result<Vec<u8>> {
    std::fs::read(fixture_path(name))
}

/// The path of fixture `name`, for JWT_PUBLIC_KEY_FILE.
pub fn fixture_path(name: &str) -> String {
    format!("{}/tests/fixtures/jwt/{name}", env!("CARGO_MANIFEST_DIR"))
}
