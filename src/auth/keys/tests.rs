//! The verifier against forged, stale and misdirected tokens, per key type.

use std::collections::HashMap;

use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
use serde_json::json;

use super::*;
use crate::auth::{
    mint_token,
    testing::{fixture, fixture_path, sign, unsigned, valid_claims},
};

fn config(vars: &[(&str, &str)]) -> AuthSettings {
    let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    crate::config::Config::from_vars(&vars).unwrap().auth
}

fn rsa_private() -> EncodingKey {
    EncodingKey::from_rsa_pem(&fixture("rs256-private.pem").unwrap()).unwrap()
}

fn ec_private() -> EncodingKey {
    EncodingKey::from_ec_pem(&fixture("es256-private.pem").unwrap()).unwrap()
}

fn refusal(auth: &Authenticator, token: &str) -> String {
    match auth.verify(token) {
        Err(AppError::Unauthenticated(why)) => why,
        other => panic!("expected UNAUTHENTICATED, got {other:?}"),
    }
}

#[test]
fn development_tokens_verify_with_their_subject_and_roles() {
    let config = config(&[]);
    let auth = Authenticator::from_settings(&config).unwrap();
    assert_eq!(auth.algorithms(), vec![Algorithm::HS256]);
    let token = mint_token(
        &config,
        "alice",
        &[Role::Admin],
        std::time::Duration::from_secs(60),
    )
    .unwrap();
    let principal = auth.verify(&token).unwrap();
    assert_eq!(principal.subject, "alice");
    assert!(principal.is_admin());
}

#[test]
fn production_refuses_the_development_secret_a_weak_secret_and_no_key() {
    for vars in [
        vec![("ENVIRONMENT", "production")],
        vec![("ENVIRONMENT", "production"), ("JWT_SECRET", DEVELOPMENT_SECRET)],
        vec![("ENVIRONMENT", "production"), ("JWT_SECRET", "short")],
    ] {
        let config = config(&vars);
        let err = Authenticator::from_settings(&config).err().expect("refused");
        assert!(err.to_string().contains("production"), "{err}");
        let minted = mint_token(&config, "a", &[], std::time::Duration::from_secs(1));
        assert_eq!(minted.is_err(), config.jwt_secret.as_deref() != Some("short"));
    }
    let key = fixture_path("rs256-public.pem");
    let config = config(&[("ENVIRONMENT", "production"), ("JWT_PUBLIC_KEY_FILE", &key)]);
    let auth = Authenticator::from_settings(&config).unwrap();
    assert_eq!(auth.algorithms(), vec![Algorithm::RS256]);
}

#[test]
fn an_rsa_public_key_accepts_its_tokens_and_refuses_confusion_and_other_keys() {
    let key_path = fixture_path("rs256-public.pem");
    let config = config(&[("JWT_PUBLIC_KEY_FILE", &key_path)]);
    let auth = Authenticator::from_settings(&config).unwrap();
    let claims = valid_claims(&config, "alice", &[Role::Customer]);

    let good = sign(&Header::new(Algorithm::RS256), &claims, &rsa_private()).unwrap();
    assert_eq!(auth.verify(&good).unwrap().roles, vec![Role::Customer]);

    let other = EncodingKey::from_rsa_pem(&fixture("rs256-other-private.pem").unwrap()).unwrap();
    let wrong_key = sign(&Header::new(Algorithm::RS256), &claims, &other).unwrap();
    assert_eq!(refusal(&auth, &wrong_key), "invalid token: bad signature");

    // Algorithm confusion: HS256 keyed with the public key's own bytes.
    let public_pem = fixture("rs256-public.pem").unwrap();
    let confused = sign(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&public_pem),
    )
    .unwrap();
    assert!(refusal(&auth, &confused).contains("no configured key verifies HS256"));

    // The development secret is not accepted once real keys are configured.
    let dev = mint_token(
        &config,
        "alice",
        &[Role::Admin],
        std::time::Duration::from_secs(60),
    )
    .unwrap();
    assert!(auth.verify(&dev).is_err());

    // The same claims re-signed with a different RSA algorithm are refused too.
    let rs512 = sign(&Header::new(Algorithm::RS512), &claims, &rsa_private()).unwrap();
    assert!(auth.verify(&rs512).is_err());
}

#[test]
fn alg_none_and_garbage_are_refused() {
    let config = config(&[]);
    let auth = Authenticator::from_settings(&config).unwrap();
    let claims = valid_claims(&config, "mallory", &[Role::Admin]);
    assert_eq!(
        refusal(&auth, &unsigned(&claims)),
        "invalid token: algorithm not accepted"
    );
    for garbage in ["", "abc", "a.b.c", "....", &"x".repeat(MAX_TOKEN_BYTES + 1)] {
        assert!(auth.verify(garbage).is_err(), "{garbage:.20}");
    }
}

#[test]
fn expiry_not_before_issuer_and_audience_are_checked_with_a_small_leeway() {
    let config = config(&[]);
    let auth = Authenticator::from_settings(&config).unwrap();
    let key = EncodingKey::from_secret(DEVELOPMENT_SECRET.as_bytes());
    let header = Header::new(Algorithm::HS256);
    let now = crate::auth::testing::now();
    let with = |field: &str, value: serde_json::Value| {
        let mut claims = valid_claims(&config, "alice", &[Role::Customer]);
        claims[field] = value;
        sign(&header, &claims, &key).unwrap()
    };
    let cases = [
        (
            with("exp", json!(now - LEEWAY_SECONDS - 5)),
            Some("invalid token: expired"),
        ),
        (with("exp", json!(now - 5)), None),
        (
            with("nbf", json!(now + LEEWAY_SECONDS + 60)),
            Some("invalid token: not valid yet (nbf)"),
        ),
        (
            with("iss", json!("someone-else")),
            Some("invalid token: wrong issuer"),
        ),
        (
            with("aud", json!("another-service")),
            Some("invalid token: wrong audience"),
        ),
        (with("aud", json!(["another-service", config.jwt_audience])), None),
        (with("sub", json!("")), Some("invalid token: bad sub")),
        (with("roles", json!("admin")), None),
        (with("roles", json!(["viewer", "customer"])), None),
    ];
    for (token, expected) in cases {
        match expected {
            Some(reason) => assert_eq!(refusal(&auth, &token), reason),
            None => assert!(auth.verify(&token).is_ok()),
        }
    }
    let mut claims = valid_claims(&config, "alice", &[]);
    claims.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        refusal(&auth, &sign(&header, &claims, &key).unwrap()),
        "invalid token: missing claim exp"
    );
    let roles = |token: String| auth.verify(&token).unwrap().roles;
    assert_eq!(roles(with("roles", json!("admin"))), vec![Role::Admin]);
    assert_eq!(
        roles(with("roles", json!(["viewer", "customer"]))),
        vec![Role::Customer]
    );
}

#[test]
fn a_jwks_selects_keys_by_kid_and_skips_keys_it_must_not_use() {
    let dir = tempfile::tempdir().unwrap();
    let mut rsa = Jwk::from_encoding_key(&rsa_private(), Algorithm::RS256).unwrap();
    rsa.common.key_id = Some("rsa-1".into());
    let mut ec = Jwk::from_encoding_key(&ec_private(), Algorithm::ES256).unwrap();
    ec.common.key_id = Some("ec-1".into());
    let mut oct = Jwk::from_encoding_key(
        &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        Algorithm::HS256,
    )
    .unwrap();
    oct.common.key_id = Some("oct-1".into());
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, json!({ "keys": [rsa, ec, oct] }).to_string()).unwrap();
    let config = config(&[("JWT_JWKS_FILE", path.to_str().unwrap())]);
    let auth = Authenticator::from_settings(&config).unwrap();
    assert_eq!(auth.algorithms(), vec![Algorithm::RS256, Algorithm::ES256]);

    let claims = valid_claims(&config, "alice", &[Role::Customer]);
    let header = |alg, kid: &str| Header {
        kid: Some(kid.into()),
        ..Header::new(alg)
    };
    assert!(
        auth.verify(&sign(&header(Algorithm::RS256, "rsa-1"), &claims, &rsa_private()).unwrap())
            .is_ok()
    );
    assert!(
        auth.verify(&sign(&header(Algorithm::ES256, "ec-1"), &claims, &ec_private()).unwrap())
            .is_ok()
    );
    assert!(
        auth.verify(&sign(&Header::new(Algorithm::ES256), &claims, &ec_private()).unwrap())
            .is_ok()
    );
    // A kid naming another key, an unknown kid, and the skipped symmetric key all fail.
    assert!(
        auth.verify(&sign(&header(Algorithm::RS256, "ec-1"), &claims, &rsa_private()).unwrap())
            .is_err()
    );
    assert!(
        auth.verify(&sign(&header(Algorithm::RS256, "nope"), &claims, &rsa_private()).unwrap())
            .is_err()
    );
    let hs = EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef");
    assert!(
        auth.verify(&sign(&header(Algorithm::HS256, "oct-1"), &claims, &hs).unwrap())
            .is_err()
    );
}

#[test]
fn an_ec_pem_key_verifies_es256_and_private_keys_are_refused_as_key_files() {
    let config_ok = config(&[("JWT_PUBLIC_KEY_FILE", &fixture_path("es256-public.pem"))]);
    let auth = Authenticator::from_settings(&config_ok).unwrap();
    assert_eq!(auth.algorithms(), vec![Algorithm::ES256]);
    let claims = valid_claims(&config_ok, "bob", &[Role::Customer]);
    assert!(
        auth.verify(&sign(&Header::new(Algorithm::ES256), &claims, &ec_private()).unwrap())
            .is_ok()
    );

    let private = config(&[("JWT_PUBLIC_KEY_FILE", &fixture_path("rs256-private.pem"))]);
    let err = Authenticator::from_settings(&private).err().expect("refused");
    assert!(format!("{err:#}").contains("private key"), "{err:#}");
    let missing = config(&[("JWT_JWKS_FILE", "/nonexistent/jwks.json")]);
    assert!(Authenticator::from_settings(&missing).is_err());
}

#[test]
fn a_verified_token_is_answered_again_and_a_forged_one_is_refused_every_time() {
    let config = config(&[]);
    let auth = Authenticator::from_settings(&config).unwrap();
    let token = mint_token(
        &config,
        "alice",
        &[Role::Customer],
        std::time::Duration::from_secs(60),
    )
    .unwrap();
    let first = auth.verify(&token).unwrap();
    assert_eq!(auth.verify(&token).unwrap(), first);
    // The layer holds clones: they share what was verified.
    assert_eq!(auth.clone().verify(&token).unwrap(), first);
    // The same claims signed with another key: refused, however often sent.
    let claims = valid_claims(&config, "alice", &[Role::Customer]);
    let forged = sign(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(b"not-the-secret-not-the-secret-not"),
    )
    .unwrap();
    for _ in 0..2 {
        assert_eq!(refusal(&auth, &forged), "invalid token: bad signature");
    }
}
