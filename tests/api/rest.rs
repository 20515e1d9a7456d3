//! The REST shim's routing: every http rule reaches its service, unknown
//! routes and wrong methods answer JSON, and browsers get CORS.

use commerce::rest::rules::RULES;

use crate::support::{
    app::{Backend, spawn_app, spawn_app_with},
    rest::call,
};

/// A concrete path for a rule's template (a fresh UUID per variable).
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                uuid::Uuid::new_v4().to_string()
            } else {
                segment.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn every_http_rule_reaches_its_service_and_anonymous_callers_are_refused() {
    let app = spawn_app().await;
    for rule in RULES {
        let reply = call(&app, rule.verb, &concrete(rule.path)).send().await;
        // Every service is implemented: the service itself refuses (UNAUTHENTICATED).
        assert_eq!(reply.status, 401, "{} {}: {}", rule.verb, rule.path, reply.text());
        let body = reply.json();
        assert_eq!(body["code"], 16, "{}", rule.full_method());
        assert!(body["message"].is_string() && body["details"].is_array());
    }
}

#[tokio::test]
async fn unknown_routes_are_404_json_and_wrong_methods_are_405_json_with_allow() {
    let app = spawn_app().await;
    let missing = call(&app, "GET", "/api/v1/nothing-here").send().await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["code"], 5);

    let wrong = call(&app, "PATCH", "/api/v1/cart/active").send().await;
    assert_eq!(wrong.status, 405);
    assert_eq!(wrong.header("allow"), "GET");
    assert_eq!(wrong.json()["code"], 12);
    assert!(wrong.json()["message"].as_str().unwrap().contains("PATCH"));

    let both = call(&app, "POST", &format!("/api/v1/cart/{}", uuid::Uuid::new_v4()))
        .send()
        .await;
    assert_eq!(both.status, 405);
    let mut allowed: Vec<&str> = both.header("allow").split(", ").collect();
    allowed.sort();
    assert_eq!(allowed, ["DELETE", "GET"]);
}

#[tokio::test]
async fn collection_routes_answer_with_and_without_the_trailing_slash() {
    let app = spawn_app().await;
    for path in ["/api/v1/orders/", "/api/v1/orders"] {
        let reply = call(&app, "GET", path).send().await;
        assert_ne!(reply.status, 404, "{path}");
        assert_ne!(reply.status, 405, "{path}");
    }
}

#[tokio::test]
async fn browsers_get_cors_for_the_configured_origins_only() {
    let app = spawn_app_with(
        Backend::from_env(),
        &[(
            "CORS_ALLOWED_ORIGINS",
            "https://shop.example, https://admin.example",
        )],
    )
    .await;
    let preflight = call(&app, "OPTIONS", "/api/v1/cart/")
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type, idempotency-key, if-match",
        )
        .send()
        .await;
    assert!(preflight.status < 300, "{}", preflight.status);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        "https://shop.example"
    );
    let allowed = preflight
        .header("access-control-allow-headers")
        .to_ascii_lowercase();
    for header in ["authorization", "content-type", "idempotency-key", "if-match"] {
        assert!(allowed.contains(header), "{header} in {allowed}");
    }
    assert!(preflight.header("access-control-allow-methods").contains("PUT"));

    let actual = call(&app, "GET", "/api/v1/cart/active")
        .header("origin", "https://shop.example")
        .send()
        .await;
    assert_eq!(
        actual.header("access-control-allow-origin"),
        "https://shop.example"
    );
    let exposed = actual
        .header("access-control-expose-headers")
        .to_ascii_lowercase();
    assert!(
        exposed.contains("etag") && exposed.contains("x-request-id"),
        "{exposed}"
    );

    let stranger = call(&app, "OPTIONS", "/api/v1/cart/")
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await;
    assert_eq!(stranger.header("access-control-allow-origin"), "");
}

#[tokio::test]
async fn the_default_development_cors_allows_any_origin() {
    let app = spawn_app().await;
    let reply = call(&app, "GET", "/openapi.json")
        .header("origin", "http://localhost:3000")
        .send()
        .await;
    assert_eq!(reply.header("access-control-allow-origin"), "*");
}

#[tokio::test]
async fn refusals_from_the_layers_in_front_keep_the_json_error_shape() {
    let app = spawn_app_with(
        Backend::from_env(),
        &[("RATE_LIMIT_PER_SECOND", "1"), ("RATE_LIMIT_BURST", "2")],
    )
    .await;
    let forged = call(&app, "GET", "/api/v1/cart/active")
        .bearer("not.a.token")
        .send()
        .await;
    assert_eq!(forged.status, 401, "{}", forged.text());
    assert_eq!(forged.json()["code"], 16);

    let token = app.customer("rita");
    let mut last = None;
    for _ in 0..4 {
        last = Some(
            call(&app, "GET", "/api/v1/cart/active")
                .bearer(&token)
                .send()
                .await,
        );
    }
    let limited = last.unwrap();
    assert_eq!(limited.status, 429, "{}", limited.text());
    assert_eq!(limited.json()["code"], 8);
    assert!(limited.header("retry-after").parse::<u64>().unwrap() >= 1);
}

#[tokio::test]
async fn forgetting_a_customer_over_rest_is_for_admins_and_needs_a_reason() {
    let app = spawn_app().await;
    let path = "/api/v1/admin/customers/alice/forget";
    let denied = call(&app, "POST", path)
        .bearer(&app.customer("alice"))
        .json(&serde_json::json!({"reason": "GDPR request"}))
        .send()
        .await;
    assert_eq!(denied.status, 403, "{}", denied.text());

    let no_reason = call(&app, "POST", path).bearer(&app.admin()).send().await;
    assert_eq!(no_reason.status, 400, "{}", no_reason.text());
    assert_eq!(no_reason.violated_fields(), ["reason"]);

    let forgotten = call(&app, "POST", path)
        .bearer(&app.admin())
        .json(&serde_json::json!({"reason": "GDPR request"}))
        .send()
        .await;
    assert_eq!(forgotten.status, 200, "{}", forgotten.text());
    assert!(
        forgotten.json()["forgotten_at"]
            .as_str()
            .is_some_and(|t| t.contains('T'))
    );
}

#[tokio::test]
async fn the_read_side_admin_routes_answer_admins_over_rest() {
    let app = spawn_app().await;
    let admin = app.admin();
    let denied = call(&app, "GET", "/api/v1/admin/projections")
        .bearer(&app.customer("alice"))
        .send()
        .await;
    assert_eq!(denied.status, 403, "{}", denied.text());

    let status = call(&app, "GET", "/api/v1/admin/projections")
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(status.status, 200, "{}", status.text());
    let projections = status.json()["projections"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!projections.is_empty(), "{}", status.text());
    assert!(
        projections
            .iter()
            .all(|p| p["name"].is_string() && p["lag_events"].is_string())
    );

    let letters = call(&app, "GET", "/api/v1/admin/dead-letters?page_size=5")
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(letters.status, 200, "{}", letters.text());
    assert_eq!(letters.json()["dead_letters"], serde_json::json!([]));

    let replay = call(&app, "POST", "/api/v1/admin/dead-letters/replay")
        .bearer(&admin)
        .json(&serde_json::json!({"ids": []}))
        .send()
        .await;
    assert_eq!(replay.status, 200, "{}", replay.text());
    assert_eq!(replay.json()["replayed"], "0");
}
