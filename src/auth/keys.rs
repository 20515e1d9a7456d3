//! Verification keys and the [`Authenticator`].
//!
//! Each key verifies exactly one algorithm, fixed by the key's type when it is
//! loaded: an HMAC secret HS256, an RSA public key RS256 (or the RSA algorithm
//! its JWK declares), an EC key ES256/ES384 by curve. The token's `alg` header
//! only selects among keys; it never changes how a key is used, so an HS256
//! token is never checked against the bytes of an RSA public key (algorithm
//! confusion), and `none` is not an algorithm here at all.

use std::{fs, sync::Arc};

use anyhow::{Context, bail};
use base64::Engine;
use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    errors::ErrorKind,
    jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse},
};
use serde::Deserialize;

use super::{
    DEVELOPMENT_SECRET, Principal, Role,
    verified::{VerifiedTokens, Window},
};
use crate::{
    config::{AuthSettings, Environment},
    error::AppError,
};

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECONDS: u64 = 30;

/// Longest token accepted; longer ones are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Shortest HS256 secret staging and production accept (256 bits).
const MIN_SECRET_BYTES: usize = 32;

/// Longest `sub` accepted (it becomes a customer id in storage).
const MAX_SUBJECT_CHARS: usize = 128;

/// One key and the one algorithm it verifies.
struct VerifyingKey {
    /// `kid` from the JWKS; None for JWT_SECRET and a PEM file (they match any).
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
    validation: Validation,
}

/// Verifies bearer tokens against the configured keys, and remembers the
/// tokens it verified for as long as their time claims pass
/// ([`VerifiedTokens`]): the keys of one authenticator never change.
#[derive(Clone)]
pub struct Authenticator {
    keys: Arc<[VerifyingKey]>,
    verified: Arc<VerifiedTokens>,
}

/// The claims we read after the signature and the standard claims checked out.
#[derive(Deserialize)]
struct TokenClaims {
    sub: String,
    #[serde(default)]
    roles: RolesClaim,
    /// As jsonwebtoken checked them; read again for the window a verified token is kept in.
    #[serde(default)]
    exp: Option<serde_json::Value>,
    #[serde(default)]
    nbf: Option<serde_json::Value>,
}

/// `roles` as one string or a list; names we do not know are ignored.
#[derive(Deserialize)]
#[serde(untagged)]
enum RolesClaim {
    One(String),
    Many(Vec<String>),
}

impl Default for RolesClaim {
    fn default() -> Self {
        Self::Many(Vec::new())
    }
}

impl RolesClaim {
    fn roles(&self) -> Vec<Role> {
        match self {
            Self::One(name) => Role::parse(name).into_iter().collect(),
            Self::Many(names) => names.iter().filter_map(|n| Role::parse(n)).collect(),
        }
    }
}

impl Authenticator {
    /// Loads the keys the configuration names: JWT_PUBLIC_KEY_FILE (one PEM
    /// public key), JWT_JWKS_FILE (a JWKS), JWT_SECRET (HS256). With none of
    /// them, development uses the development secret; staging and production
    /// refuses that, the development secret itself, and secrets under 32 bytes.
    pub fn from_settings(settings: &AuthSettings) -> anyhow::Result<Self> {
        // Staging too: the development secret is public, and a staging
        // deployment often holds copies of real data.
        let strict = !settings.environment.allows_development_secrets();
        let env = settings.environment;
        let mut keys: Vec<(Option<String>, Algorithm, DecodingKey)> = Vec::new();
        if let Some(path) = &settings.jwt_public_key_file {
            let (algorithm, key) =
                pem_key(path).with_context(|| format!("loading JWT_PUBLIC_KEY_FILE {path}"))?;
            keys.push((None, algorithm, key));
        }
        if let Some(path) = &settings.jwt_jwks_file {
            keys.extend(jwks_keys(path).with_context(|| format!("loading JWT_JWKS_FILE {path}"))?);
        }
        match settings.jwt_secret.as_deref() {
            Some(DEVELOPMENT_SECRET) if strict => {
                bail!("JWT_SECRET is the development secret, which ENVIRONMENT={env} refuses")
            }
            Some(secret) if strict && secret.len() < MIN_SECRET_BYTES => {
                bail!("JWT_SECRET is shorter than {MIN_SECRET_BYTES} bytes, which ENVIRONMENT={env} refuses")
            }
            Some(secret) => keys.push((
                None,
                Algorithm::HS256,
                DecodingKey::from_secret(secret.as_bytes()),
            )),
            None if keys.is_empty() && strict => bail!(
                "no JWT key configured: ENVIRONMENT={env} needs JWT_PUBLIC_KEY_FILE or \
                 JWT_JWKS_FILE (or a strong JWT_SECRET) and refuses the development secret"
            ),
            None if keys.is_empty() => {
                if settings.environment != Environment::Test {
                    tracing::warn!(
                        "no JWT key configured: accepting tokens signed with the development secret"
                    );
                }
                keys.push((
                    None,
                    Algorithm::HS256,
                    DecodingKey::from_secret(DEVELOPMENT_SECRET.as_bytes()),
                ));
            }
            None => {}
        }
        let keys = keys
            .into_iter()
            .map(|(kid, algorithm, key)| VerifyingKey {
                kid,
                algorithm,
                key,
                validation: validation(settings, algorithm),
            })
            .collect();
        Ok(Self {
            keys,
            verified: Arc::new(VerifiedTokens::new()),
        })
    }

    /// The algorithm of every key, in load order (for logs and tests).
    pub fn algorithms(&self) -> Vec<Algorithm> {
        self.keys.iter().map(|k| k.algorithm).collect()
    }

    /// Verifies a token and returns its principal; UNAUTHENTICATED with the
    /// reason otherwise (the reason names the check, never key material).
    /// A token verified before is answered from memory while its `exp` and
    /// `nbf` still pass; once they do not, it is verified in full again.
    pub fn verify(&self, token: &str) -> Result<Principal, AppError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(refuse("too large"));
        }
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(principal) = self.verified.recall(token, now) {
            return Ok(principal);
        }
        let (principal, window) = self.verify_in_full(token)?;
        if let Some(window) = window {
            self.verified.remember(token, &principal, window);
        }
        Ok(principal)
    }

    /// The signature, the standard claims and the subject; with the window
    /// in which the token's time claims pass (None: not to be kept).
    fn verify_in_full(&self, token: &str) -> Result<(Principal, Option<Window>), AppError> {
        // An unknown `alg` such as "none" fails here: jsonwebtoken has no such algorithm.
        let header = jsonwebtoken::decode_header(token).map_err(|e| match header_alg(token) {
            Some(alg) if !KNOWN_ALGORITHMS.contains(&alg.as_str()) => refuse("algorithm not accepted"),
            _ => refuse(&describe(e.kind())),
        })?;
        let candidates = self.keys.iter().filter(|k| {
            k.algorithm == header.alg
                && match (&header.kid, &k.kid) {
                    (Some(wanted), Some(kid)) => wanted == kid,
                    _ => true,
                }
        });
        let mut reason: Option<String> = None;
        let mut verified = None;
        for key in candidates {
            match jsonwebtoken::decode::<TokenClaims>(token, &key.key, &key.validation) {
                Ok(data) => {
                    verified = Some(data.claims);
                    break;
                }
                // Prefer the reason given by a key whose signature matched
                // (expired, wrong audience...) over another key's "bad signature".
                Err(e) if reason.is_none() || *e.kind() != ErrorKind::InvalidSignature => {
                    reason = Some(describe(e.kind()));
                }
                Err(_) => {}
            }
        }
        let claims = verified.ok_or_else(|| {
            refuse(&reason.unwrap_or_else(|| format!("no configured key verifies {:?}", header.alg)))
        })?;
        if claims.sub.trim().is_empty() || claims.sub.chars().count() > MAX_SUBJECT_CHARS {
            return Err(refuse("bad sub"));
        }
        // The token is genuine but its subject is not usable as a customer id.
        if let Some(problem) = crate::domain::text::id_problem(&claims.sub) {
            return Err(AppError::invalid("sub", problem));
        }
        let window = Window::of(claims.exp.as_ref(), claims.nbf.as_ref(), LEEWAY_SECONDS);
        let principal = Principal {
            roles: claims.roles.roles(),
            subject: claims.sub,
        };
        Ok((principal, window))
    }
}

/// UNAUTHENTICATED, saying which check failed.
fn refuse(why: &str) -> AppError {
    AppError::Unauthenticated(format!("invalid token: {why}"))
}

/// Every `alg` jsonwebtoken parses; any other (`none`, `HS1`...) is refused by name.
const KNOWN_ALGORITHMS: &[&str] = &[
    "HS256", "HS384", "HS512", "ES256", "ES384", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
    "EdDSA",
];

/// The `alg` of a token whose header jsonwebtoken could not parse, to say why.
fn header_alg(token: &str) -> Option<String> {
    let encoded = token.split('.').next()?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .ok()?;
    let header: serde_json::Value = serde_json::from_slice(&json).ok()?;
    header.get("alg")?.as_str().map(String::from)
}

/// Standard-claim checks for one algorithm: exp, iss, aud required; nbf when present.
fn validation(settings: &AuthSettings, algorithm: Algorithm) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.set_issuer(&[&settings.jwt_issuer]);
    validation.set_audience(&[&settings.jwt_audience]);
    validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
    validation.leeway = LEEWAY_SECONDS;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation
}

/// A short reason for a refused token.
fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "expired".into(),
        ErrorKind::ImmatureSignature => "not valid yet (nbf)".into(),
        ErrorKind::InvalidIssuer => "wrong issuer".into(),
        ErrorKind::InvalidAudience => "wrong audience".into(),
        ErrorKind::InvalidSignature => "bad signature".into(),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::UnsupportedAlgorithm => {
            "algorithm not accepted".into()
        }
        ErrorKind::MissingRequiredClaim(claim) => format!("missing claim {claim}"),
        ErrorKind::InvalidClaimFormat(claim) => format!("malformed claim {claim}"),
        _ => "malformed".into(),
    }
}

// DER object identifiers, to tell a PEM public key's type and curve.
const OID_RSA: &[u8] = &[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

/// One PEM public key: `RSA PUBLIC KEY` (PKCS#1) or `PUBLIC KEY` (SPKI, RSA or
/// EC P-256/P-384). Private keys are refused: they do not belong on this service.
fn pem_key(path: &str) -> anyhow::Result<(Algorithm, DecodingKey)> {
    let text = fs::read_to_string(path)?;
    if text.contains("PRIVATE KEY") {
        bail!("the file holds a private key; give the service only the public key");
    }
    if text.contains("-----BEGIN RSA PUBLIC KEY-----") {
        return Ok((Algorithm::RS256, DecodingKey::from_rsa_pem(text.as_bytes())?));
    }
    if !text.contains("-----BEGIN PUBLIC KEY-----") {
        bail!("expected a PEM `PUBLIC KEY` or `RSA PUBLIC KEY` block");
    }
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN PUBLIC KEY"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .context("PEM body is not base64")?;
    let has = |oid: &[u8]| der.windows(oid.len()).any(|w| w == oid);
    if has(OID_RSA) {
        Ok((Algorithm::RS256, DecodingKey::from_rsa_pem(text.as_bytes())?))
    } else if has(OID_EC) && has(OID_P256) {
        Ok((Algorithm::ES256, DecodingKey::from_ec_pem(text.as_bytes())?))
    } else if has(OID_EC) && has(OID_P384) {
        Ok((Algorithm::ES384, DecodingKey::from_ec_pem(text.as_bytes())?))
    } else {
        bail!("unsupported public key: expected RSA or EC P-256/P-384")
    }
}

/// The signing keys of a JWKS file, each with its `kid`. Keys for encryption,
/// symmetric (`oct`) keys and key types we do not accept are skipped with a
/// warning; a set with no usable key is an error.
fn jwks_keys(path: &str) -> anyhow::Result<Vec<(Option<String>, Algorithm, DecodingKey)>> {
    let set: JwkSet = serde_json::from_str(&fs::read_to_string(path)?).context("parsing the JWKS")?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let kid = jwk.common.key_id.clone();
        if matches!(
            jwk.common.public_key_use,
            Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
        ) {
            tracing::warn!(?kid, "JWKS: skipping a key not meant for signatures");
            continue;
        }
        let declared = jwk.common.key_algorithm;
        let algorithm = match (&jwk.algorithm, declared) {
            (AlgorithmParameters::RSA(_), None) => Some(Algorithm::RS256),
            (AlgorithmParameters::RSA(_), Some(alg)) => rsa_algorithm(alg),
            (AlgorithmParameters::EllipticCurve(p), alg) => match (&p.curve, alg) {
                (EllipticCurve::P256, None | Some(KeyAlgorithm::ES256)) => Some(Algorithm::ES256),
                (EllipticCurve::P384, None | Some(KeyAlgorithm::ES384)) => Some(Algorithm::ES384),
                _ => None,
            },
            _ => None,
        };
        let Some(algorithm) = algorithm else {
            tracing::warn!(
                ?kid,
                ?declared,
                "JWKS: skipping a key of a type or algorithm we do not accept"
            );
            continue;
        };
        keys.push((kid, algorithm, DecodingKey::from_jwk(jwk)?));
    }
    if keys.is_empty() {
        bail!("the JWKS has no usable signing key (RSA, EC P-256 or P-384)");
    }
    Ok(keys)
}

fn rsa_algorithm(declared: KeyAlgorithm) -> Option<Algorithm> {
    match declared {
        KeyAlgorithm::RS256 => Some(Algorithm::RS256),
        KeyAlgorithm::RS384 => Some(Algorithm::RS384),
        KeyAlgorithm::RS512 => Some(Algorithm::RS512),
        KeyAlgorithm::PS256 => Some(Algorithm::PS256),
        KeyAlgorithm::PS384 => Some(Algorithm::PS384),
        KeyAlgorithm::PS512 => Some(Algorithm::PS512),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
