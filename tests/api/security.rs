//! The attack suite: forged, stale and misdirected tokens, oversized messages
//! and bursts, over gRPC and REST; each refused with the expected code.

use commerce::{
    auth::{
        DEVELOPMENT_SECRET, Role,
        testing::{fixture, fixture_path, sign, unsigned, valid_claims},
    },
    proto::commerce::v1::{AddItemRequest, CreateCartRequest, GetActiveCartRequest, GetCartRequest},
    startup::Application,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tonic::{Code, Request};
use tonic_types::StatusExt;

use crate::support::{
    app::{Backend, Isolation, TestApp, authed, spawn_app_with},
    orders::cart_with,
    rest::call as rest,
};

/// One forged or misdirected credential and why it must fail.
struct Attack {
    name: &'static str,
    authorization: String,
}

/// Every credential attack a server on the development secret must refuse.
fn token_attacks(app: &TestApp) -> Vec<Attack> {
    let config = &app.config.auth;
    let hs = |claims: &serde_json::Value, secret: &[u8]| {
        sign(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    };
    let dev = DEVELOPMENT_SECRET.as_bytes();
    let valid = valid_claims(config, "alice", &[Role::Admin]);
    let with = |field: &str, value: serde_json::Value| {
        let mut claims = valid.clone();
        claims[field] = value;
        claims
    };
    let now = commerce::auth::testing::now();
    let rsa = EncodingKey::from_rsa_pem(&fixture("rs256-private.pem").unwrap()).unwrap();
    let bearer = |token: String| format!("Bearer {token}");
    vec![
        Attack {
            name: "malformed token",
            authorization: bearer("not.a.jwt".into()),
        },
        Attack {
            name: "not a bearer scheme",
            authorization: format!("Basic {}", hs(&valid, dev)),
        },
        Attack {
            name: "empty bearer",
            authorization: "Bearer ".into(),
        },
        Attack {
            name: "alg none",
            authorization: bearer(unsigned(&valid)),
        },
        Attack {
            name: "wrong key",
            authorization: bearer(hs(&valid, b"an-attacker-secret-of-enough-length!")),
        },
        Attack {
            name: "RS256 when only HS256 is configured",
            authorization: bearer(sign(&Header::new(Algorithm::RS256), &valid, &rsa).unwrap()),
        },
        Attack {
            name: "expired",
            authorization: bearer(hs(&with("exp", json!(now - 3600)), dev)),
        },
        Attack {
            name: "not yet valid",
            authorization: bearer(hs(&with("nbf", json!(now + 3600)), dev)),
        },
        Attack {
            name: "wrong issuer",
            authorization: bearer(hs(&with("iss", json!("evil")), dev)),
        },
        Attack {
            name: "wrong audience",
            authorization: bearer(hs(&with("aud", json!("other")), dev)),
        },
        Attack {
            name: "tampered payload",
            authorization: bearer(tamper(&hs(&valid, dev))),
        },
        Attack {
            name: "oversized token",
            authorization: bearer("a".repeat(9 * 1024)),
        },
    ]
}

/// The token with its payload swapped for one naming another subject.
fn tamper(token: &str) -> String {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["sub"] = json!("mallory");
    format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    )
}

fn with_authorization<T>(message: T, authorization: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", authorization.parse().unwrap());
    request
}

#[tokio::test]
async fn forged_stale_and_misdirected_tokens_are_refused_over_grpc_and_rest() {
    let app = spawn_app_with(Backend::Embedded, &[]).await;
    for attack in token_attacks(&app) {
        let status = app
            .carts()
            .create_cart(with_authorization(
                CreateCartRequest::default(),
                &attack.authorization,
            ))
            .await
            .expect_err(attack.name);
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "gRPC {}: {status:?}",
            attack.name
        );

        let response = rest(&app, "POST", "/api/v1/cart/")
            .header("authorization", &attack.authorization)
            .json(&json!({}))
            .send()
            .await;
        assert_eq!(response.status, 401, "REST {}: {}", attack.name, response.text());
        let body = response.json();
        assert_eq!(body["code"], Code::Unauthenticated as i32, "REST {}", attack.name);
    }
}

#[tokio::test]
async fn a_server_with_an_rsa_key_refuses_hs256_confusion_and_development_tokens() {
    let key = fixture_path("rs256-public.pem");
    let app = spawn_app_with(Backend::Embedded, &[("JWT_PUBLIC_KEY_FILE", &key)]).await;
    let claims = valid_claims(&app.config.auth, "alice", &[Role::Admin]);
    let public_pem = fixture("rs256-public.pem").unwrap();
    let rsa = EncodingKey::from_rsa_pem(&fixture("rs256-private.pem").unwrap()).unwrap();
    let cases = [
        (
            "HS256 keyed with the public key",
            sign(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(&public_pem),
            )
            .unwrap(),
            false,
        ),
        ("development token", app.admin(), false),
        (
            "RS256 from the identity provider",
            sign(&Header::new(Algorithm::RS256), &claims, &rsa).unwrap(),
            true,
        ),
    ];
    for (name, token, accepted) in cases {
        let result = app
            .carts()
            .get_active_cart(authed(GetActiveCartRequest {}, &token))
            .await;
        let code = result.err().map_or(Code::Ok, |s| s.code());
        assert_eq!(code == Code::Unauthenticated, !accepted, "{name}: {code:?}");
    }
}

#[tokio::test]
async fn production_refuses_to_start_with_the_development_secret_or_no_key() {
    let isolation = Isolation::new(Backend::Embedded).await;
    for overrides in [
        vec![("ENVIRONMENT", "production")],
        vec![("ENVIRONMENT", "production"), ("JWT_SECRET", DEVELOPMENT_SECRET)],
    ] {
        let err = Application::build(isolation.config(&overrides))
            .await
            .err()
            .expect("refused to start");
        assert!(format!("{err:#}").contains("production"), "{err:#}");
    }
    // A real JWT key is not enough: personal data needs a real master key too.
    let key = fixture_path("es256-public.pem");
    let keyed = [
        ("ENVIRONMENT", "production"),
        ("JWT_PUBLIC_KEY_FILE", key.as_str()),
    ];
    let err = Application::build(isolation.config(&keyed))
        .await
        .err()
        .expect("refused to start");
    assert!(format!("{err:#}").contains("PII_MASTER_KEY"), "{err:#}");
    let master = "ab".repeat(32);
    // Production also needs real siblings (it never fakes payments with the stubs).
    let siblings = [
        ("PAYMENT_SERVICE_URL", "http://payment:8085"),
        ("INVENTORY_SERVICE_URL", "http://inventory:8085"),
        ("SHIPPING_SERVICE_URL", "http://shipping:8085"),
    ];
    let complete = [
        keyed.as_slice(),
        &[("PII_MASTER_KEY", master.as_str())],
        &siblings,
    ]
    .concat();
    assert!(Application::build(isolation.config(&complete)).await.is_ok());
}

#[tokio::test]
async fn oversized_messages_and_bodies_are_refused_and_store_nothing() {
    let bound = [("MAX_MESSAGE_BYTES", "4096"), ("MAX_BODY_BYTES", "4096")];
    let app = spawn_app_with(Backend::Embedded, &bound).await;
    let token = app.customer("alice");
    let cart = cart_with(&app, &token, &[]).await;
    let big = AddItemRequest {
        cart_id: cart.cart_id.clone(),
        product_id: "p-1".into(),
        product_name: "x".repeat(8192),
        quantity: 1,
        unit_price: "1.00".into(),
        ..Default::default()
    };
    let status = app.carts().add_item(authed(big, &token)).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    let body =
        json!({"product_id": "p-1", "product_name": "x".repeat(8192), "quantity": 1, "unit_price": "1.00"});
    let reply = rest(&app, "POST", &format!("/api/v1/cart/{}/items", cart.cart_id))
        .bearer(&token)
        .json(&body)
        .send()
        .await;
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert_eq!(reply.json()["code"], Code::ResourceExhausted as i32);

    let after = app
        .carts()
        .get_cart(authed(
            GetCartRequest {
                cart_id: cart.cart_id.clone(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .cart
        .unwrap();
    assert!(after.items.is_empty(), "nothing was stored: {after:?}");
    assert_eq!(after.version, cart.version);
}

#[tokio::test]
async fn a_burst_over_the_rate_limit_is_refused_with_retry_info_per_caller() {
    let app = spawn_app_with(
        Backend::Embedded,
        &[("RATE_LIMIT_PER_SECOND", "1"), ("RATE_LIMIT_BURST", "3")],
    )
    .await;
    let alice = app.customer("alice");
    let call = |token: String| {
        let mut carts = app.carts();
        async move {
            carts
                .get_active_cart(authed(GetActiveCartRequest {}, &token))
                .await
                .err()
        }
    };
    for _ in 0..3 {
        let outcome = call(alice.clone()).await;
        assert!(
            outcome
                .as_ref()
                .is_none_or(|s| s.code() != Code::ResourceExhausted),
            "{outcome:?}"
        );
    }
    let refused = call(alice.clone())
        .await
        .expect("the fourth call in a second is refused");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    let retry = refused
        .get_error_details()
        .retry_info()
        .and_then(|r| r.retry_delay)
        .expect("retry info");
    assert!(
        retry > std::time::Duration::ZERO && retry <= std::time::Duration::from_secs(1),
        "{retry:?}"
    );

    // Another caller has a bucket of its own; REST draws from the same bucket.
    let bob = call(app.customer("bob")).await;
    assert!(bob.is_none_or(|s| s.code() != Code::ResourceExhausted));
    let response = rest(&app, "GET", "/api/v1/cart/active")
        .bearer(&alice)
        .send()
        .await;
    assert_eq!(response.status, 429, "{}", response.text());
    assert_eq!(response.header("retry-after"), "1");
    assert_eq!(response.json()["code"], Code::ResourceExhausted as i32);

    // Anonymous callers share their address's bucket; probes are never limited.
    for _ in 0..3 {
        assert_ne!(rest(&app, "GET", "/api/v1/cart/active").send().await.status, 429);
    }
    assert_eq!(rest(&app, "GET", "/api/v1/cart/active").send().await.status, 429);
    assert_eq!(rest(&app, "GET", "/health").send().await.status, 200);
}

/// Every `sqlx::AssertSqlSafe` in `src/` (sqlx 0.9 makes dynamic SQL say so)
/// that is not a `format!` of compile-time constants only, with no
/// `// SQL-SAFE: why` comment in the six lines above it nor a `//! SQL-SAFE:`
/// paragraph in its module doc stating the module's invariant.
fn unjustified_dynamic_sql() -> Vec<String> {
    fn visit(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                visit(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    visit(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let mut unjustified = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let module_reviewed = lines
            .iter()
            .take_while(|l| l.starts_with("//!") || l.is_empty())
            .any(|l| l.contains("SQL-SAFE:"));
        let mut offset = 0;
        for (number, line) in lines.iter().enumerate() {
            let start = offset;
            offset += line.len() + 1;
            let Some(column) = line.find("AssertSqlSafe(") else {
                continue;
            };
            if line.trim_start().starts_with("//") || line.trim_start().starts_with("use ") {
                continue;
            }
            let justified = lines[number.saturating_sub(6)..=number]
                .iter()
                .any(|l| l.contains("SQL-SAFE:"));
            let call = &text[start + column + "AssertSqlSafe(".len()..];
            if module_reviewed || justified || constant_format(call) {
                continue;
            }
            unjustified.push(format!("{}:{}: {}", file.display(), number + 1, line.trim()));
        }
    }
    unjustified
}

/// True when `call` starts with `format!("...")` whose every placeholder
/// names a SCREAMING_CASE constant: the SQL text is fixed at compile time.
fn constant_format(call: &str) -> bool {
    let Some(rest) = call.trim_start().strip_prefix("format!(") else {
        return false;
    };
    let Some(open) = rest.find('"') else { return false };
    let mut literal = String::new();
    let mut chars = rest[open + 1..].chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '"' => break,
            c => literal.push(c),
        }
    }
    let literal = literal.replace("{{", "").replace("}}", "");
    literal.split('{').skip(1).all(|part| {
        let name = part.split('}').next().unwrap_or_default();
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    })
}

#[test]
fn sql_is_only_constant_text_with_bound_parameters_unless_a_reviewed_comment_says_why() {
    assert!(constant_format(
        r#"format!("SELECT {COLUMNS} FROM t WHERE id = $1")"#
    ));
    assert!(!constant_format(r#"format!("SELECT * FROM {table}")"#));
    assert!(!constant_format(
        r#"format!("DELETE FROM t WHERE id = '{}'", id)"#
    ));
    assert!(!constant_format("sql)"));
    let unjustified = unjustified_dynamic_sql();
    assert!(
        unjustified.is_empty(),
        "dynamic SQL without a `// SQL-SAFE: why` comment (bind values with $n/?; only constants and \
         checked identifiers may be spliced into SQL):\n{}",
        unjustified.join("\n")
    );
}

#[test]
fn the_token_command_mints_development_tokens_and_refuses_to_in_production() {
    let run = |environment: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_commerce"))
            .args(["token", "--sub", "carol", "--role", "customer", "--role", "admin"])
            .env_clear()
            .env("ENVIRONMENT", environment)
            .output()
            .expect("run commerce token")
    };
    let minted = run("development");
    assert!(
        minted.status.success(),
        "{}",
        String::from_utf8_lossy(&minted.stderr)
    );
    let token = String::from_utf8(minted.stdout).unwrap();
    let config = commerce::config::Config::from_vars(&std::collections::HashMap::new()).unwrap();
    let principal = commerce::auth::Authenticator::from_settings(&config.auth)
        .unwrap()
        .verify(token.trim())
        .unwrap();
    assert_eq!(principal.subject, "carol");
    assert_eq!(principal.roles, vec![Role::Customer, Role::Admin]);

    let refused = run("production");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("production"));
}
