//! Metrics, logs and traces as an operator sees them: `/metrics` moves with
//! traffic, log lines are JSON carrying the request and trace ids, and spans
//! reach an OTLP collector joined to the caller's trace.
//!
//! The recorder and the log subscriber are global to a process, so the log
//! and trace tests run the real binary as a child; the metrics test shares
//! the recorder with parallel tests and so asserts growth, not exact values.

mod order_flow;

use std::{collections::HashMap, time::Duration};

use commerce::{
    auth::{Role, mint_token},
    config::Config,
    proto::{
        commerce::v1::{
            AddItemRequest, CreateCartRequest, GetCartRequest, cart_service_client::CartServiceClient,
        },
        payment::v1::{AuthorizeRequest, payment_service_client::PaymentServiceClient},
    },
    store::event_store::{EventStoreError, NewEvent, ORDER_STREAM},
};
use tonic::metadata::MetadataValue;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::support::store::EventLog;
use crate::support::{
    app::{Backend, authed, spawn_app, spawn_app_with},
    observability::{Collector, ServerProcess, fresh_traceparent, sample},
    rest::http_get,
    rest::http_get_with,
};

#[tokio::test]
async fn metrics_count_grpc_and_http_requests_by_method_and_code_without_ids_in_labels() {
    let app = spawn_app_with(Backend::Embedded, &[]).await;
    let scrape = || async { body_of(&http_get(app.port, "/metrics").await) };
    let before = scrape().await;

    let mut health = HealthClient::new(app.channel.clone());
    for _ in 0..2 {
        health.check(HealthCheckRequest::default()).await.unwrap();
    }
    let unknown = call_unknown_method(&app.channel).await;
    assert_eq!(unknown.code(), tonic::Code::Unimplemented);
    let cart_id = uuid::Uuid::new_v4();
    http_get(app.port, "/health").await;
    http_get(app.port, &format!("/no/such/cart/{cart_id}")).await;

    let after = scrape().await;
    let grew =
        |name: &str, labels: &[(&str, &str)]| sample(&after, name, labels) - sample(&before, name, labels);
    let check = [("service", "grpc.health.v1.Health"), ("method", "Check")];
    assert!(
        grew(
            "grpc_server_requests_total",
            &[check[0], check[1], ("code", "OK")]
        ) >= 2.0
    );
    assert!(grew("grpc_server_request_duration_seconds_count", &check) >= 2.0);
    // A path that names no method is counted, but under fixed labels.
    assert!(
        grew(
            "grpc_server_requests_total",
            &[
                ("service", "unknown"),
                ("method", "unknown"),
                ("code", "UNIMPLEMENTED")
            ]
        ) >= 1.0
    );
    let health_ok = [("method", "GET"), ("route", "/health"), ("status", "200")];
    assert!(grew("http_requests_total", &health_ok) >= 1.0);
    let unmatched = [("method", "GET"), ("route", "unmatched"), ("status", "404")];
    assert!(grew("http_requests_total", &unmatched) >= 1.0);
    assert!(sample(&after, "db_pool_connections", &[("state", "max")]) >= 1.0);
    assert!(after.contains("# TYPE grpc_server_request_duration_seconds histogram"));
    assert!(!after.contains(&cart_id.to_string()), "an id leaked into a label");
}

#[tokio::test]
async fn a_scripted_cart_flow_moves_the_cart_series_over_grpc_and_rest() {
    let app = spawn_app().await;
    let (alice, bob) = (app.customer("obs-alice"), app.customer("obs-bob"));
    let before = commerce::metrics::render();

    let mut carts = app.carts();
    let cart = carts
        .create_cart(authed(CreateCartRequest::default(), &alice))
        .await
        .unwrap()
        .into_inner()
        .cart
        .unwrap();
    let item = |quantity| AddItemRequest {
        cart_id: cart.cart_id.clone(),
        product_id: "obs-sku".into(),
        product_name: "Probe".into(),
        quantity,
        unit_price: "9.99".into(),
        expected_version: None,
    };
    carts.add_item(authed(item(2), &alice)).await.unwrap();
    let refused = carts.add_item(authed(item(0), &alice)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let hidden = GetCartRequest {
        cart_id: cart.cart_id.clone(),
    };
    let hidden = carts.get_cart(authed(hidden, &bob)).await.unwrap_err();
    assert_eq!(hidden.code(), tonic::Code::NotFound);
    let bearer = format!("Bearer {alice}");
    let path = format!("/api/v1/cart/{}", cart.cart_id);
    let rest = http_get_with(app.port, &path, &[("authorization", &bearer)]).await;
    assert!(rest.starts_with("HTTP/1.1 200"), "{rest}");

    let after = body_of(&http_get(app.port, "/metrics").await);
    let grew =
        |name: &str, labels: &[(&str, &str)]| sample(&after, name, labels) - sample(&before, name, labels);
    assert!(grew("carts_created_total", &[]) >= 1.0);
    for (operation, outcome) in [
        ("create_cart", "ok"),
        ("add_item", "ok"),
        ("add_item", "invalid_argument"),
        ("get_cart", "not_found"),
        ("get_cart", "ok"),
    ] {
        let labels = [("operation", operation), ("outcome", outcome)];
        assert!(
            grew("cart_operations_total", &labels) >= 1.0,
            "{operation} {outcome}"
        );
    }
    let cart_service = ("service", "commerce.v1.CartService");
    let refused = [cart_service, ("method", "AddItem"), ("code", "INVALID_ARGUMENT")];
    assert!(grew("grpc_server_requests_total", &refused) >= 1.0);
    let rest = [
        ("method", "GET"),
        ("route", "/api/v1/cart/{cart_id}"),
        ("status", "200"),
    ];
    assert!(grew("http_requests_total", &rest) >= 1.0, "{after}");
    assert!(!after.contains(&cart.cart_id), "a cart id leaked into a label");
}

#[tokio::test]
async fn metrics_time_event_store_appends_and_count_version_conflicts_on_every_backend() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, &[]).await;
        let kind = app.app.backends.db.kind();
        let before = commerce::metrics::render();
        let stream = uuid::Uuid::now_v7();
        let event = || NewEvent {
            event_id: uuid::Uuid::now_v7(),
            event_type: "ObservabilityProbe".into(),
            schema_version: 1,
            payload: serde_json::json!({}),
            metadata: Default::default(),
        };
        let events = EventLog::of(&app.app);
        events
            .append(stream, 0, vec![event()], ORDER_STREAM)
            .await
            .unwrap();
        let stale = events.append(stream, 0, vec![event()], ORDER_STREAM).await;
        assert!(
            matches!(stale, Err(EventStoreError::Conflict { .. })),
            "{backend:?}: {stale:?}"
        );

        let after = body_of(&http_get(app.port, "/metrics").await);
        let grew = |name: &str, labels: &[(&str, &str)]| {
            sample(&after, name, labels) - sample(&before, name, labels)
        };
        assert!(
            grew("event_store_append_duration_seconds_count", &[("backend", kind)]) >= 1.0,
            "{backend:?}"
        );
        assert!(grew("event_store_conflicts_total", &[]) >= 1.0, "{backend:?}");
        if app.app.backends.redis.is_some() {
            assert!(sample(&after, "redis_pool_connections", &[("state", "max")]) >= 1.0);
        }
    }
}

#[tokio::test]
async fn log_lines_are_json_with_request_and_trace_ids_and_no_secrets_even_with_the_collector_down() {
    // A port nobody listens on: the exporter fails in the background, requests must not notice.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_endpoint = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let server = ServerProcess::spawn(&[
        ("ENABLE_TRACING", "true"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &dead_endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ])
    .await;
    let (traceparent, trace_id, _) = fresh_traceparent();
    let secret = "Bearer not-a-valid-token-but-a-secret-all-the-same";

    for i in 0..20 {
        let response = http_get_with(server.port, "/health", &[("x-request-id", &format!("http-{i}"))]).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }
    let response = http_get_with(
        server.port,
        "/health",
        &[("x-request-id", "http-traced"), ("traceparent", &traceparent)],
    )
    .await;
    assert!(
        response
            .to_ascii_lowercase()
            .contains("x-request-id: http-traced"),
        "{response}"
    );
    let refused = http_get_with(
        server.port,
        "/health",
        &[("x-request-id", "http-secret"), ("authorization", secret)],
    )
    .await;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");

    let channel = tonic::transport::Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut request = tonic::Request::new(HealthCheckRequest::default());
    request
        .metadata_mut()
        .insert("x-request-id", MetadataValue::from_static("grpc-1"));
    let response = HealthClient::new(channel.clone()).check(request).await.unwrap();
    assert_eq!(response.metadata().get("x-request-id").unwrap(), "grpc-1");
    let config = Config::from_vars(&HashMap::from([("ENVIRONMENT".into(), "test".into())])).unwrap();
    let token = mint_token(
        &config.auth,
        "obs-logger",
        &[Role::Customer],
        Duration::from_secs(60),
    )
    .unwrap();
    let mut request = authed(CreateCartRequest::default(), &token);
    request
        .metadata_mut()
        .insert("x-request-id", MetadataValue::from_static("grpc-cart"));
    let cart = CartServiceClient::new(channel)
        .create_cart(request)
        .await
        .unwrap();
    let cart_id = cart.into_inner().cart.unwrap().cart_id;

    let traced = server
        .wait_for_log(|line| line["request_id"] == "http-traced")
        .await;
    assert_eq!(traced["trace_id"], trace_id.as_str(), "{traced}");
    assert_eq!(traced["level"], "INFO");
    assert_eq!(traced["status"], 200);
    assert!(
        traced["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{traced}"
    );
    let timestamp = traced["timestamp"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(timestamp).is_ok(),
        "{timestamp}"
    );
    let grpc = server.wait_for_log(|line| line["request_id"] == "grpc-1").await;
    assert_eq!(grpc["code"], "OK", "{grpc}");
    assert_eq!(grpc["trace_id"].as_str().map(str::len), Some(32), "{grpc}");
    server
        .wait_for_log(|line| line["request_id"] == "http-secret")
        .await;
    // The handler's span names the cart; the access line written after it carries the id too.
    let created = server
        .wait_for_log(|line| line["request_id"] == "grpc-cart")
        .await;
    assert_eq!(created["cart_id"], cart_id.as_str(), "{created}");
    assert_eq!(created["code"], "OK", "{created}");

    let lines = server.lines();
    for line in &lines {
        let parsed: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            parsed["timestamp"].is_string() && parsed["level"].is_string(),
            "{line}"
        );
        assert!(
            !line.contains("not-a-valid-token"),
            "a credential reached the log: {line}"
        );
        assert!(!line.contains(&token), "a token reached the log: {line}");
    }
}

#[tokio::test]
async fn spans_reach_an_otlp_collector_as_children_of_the_callers_span() {
    let collector = Collector::start().await;
    let server = ServerProcess::spawn(&[
        ("ENABLE_TRACING", "true"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ])
    .await;
    let (traceparent, trace_id, parent_id) = fresh_traceparent();
    let channel = tonic::transport::Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut request = tonic::Request::new(HealthCheckRequest::default());
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    HealthClient::new(channel).check(request).await.unwrap();

    let spans = collector
        .wait_for(|spans| spans.iter().any(|s| s.trace_id() == trace_id))
        .await;
    let server_span = spans
        .iter()
        .find(|s| s.trace_id() == trace_id && s.span.name == "grpc.health.v1.Health/Check")
        .unwrap_or_else(|| panic!("no server span in {spans:#?}"));
    assert_eq!(server_span.parent_id(), parent_id);
    assert_eq!(server_span.service, "commerce");
    assert_eq!(
        server_span.span.kind,
        opentelemetry_proto::tonic::trace::v1::span::SpanKind::Server as i32
    );
    assert_eq!(
        server_span.attribute("rpc.grpc.status_code").as_deref(),
        Some("0")
    );
    assert!(server_span.span.end_time_unix_nano >= server_span.span.start_time_unix_nano);
}

#[tokio::test]
async fn the_stubs_join_the_trace_of_the_call_that_reaches_them() {
    let collector = Collector::start().await;
    let stubs = ServerProcess::spawn_stubs(&[
        ("ENABLE_TRACING", "true"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ])
    .await;
    let (traceparent, trace_id, parent_id) = fresh_traceparent();
    let mut payment = PaymentServiceClient::connect(stubs.url()).await.unwrap();
    let mut request = tonic::Request::new(AuthorizeRequest {
        idempotency_key: "obs-1".into(),
        order_id: uuid::Uuid::new_v4().to_string(),
        amount: "10.00".into(),
        currency: "USD".into(),
        payment_method: "card".into(),
    });
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    payment.authorize(request).await.unwrap();

    let name = "payment.v1.PaymentService/Authorize";
    let spans = collector
        .wait_for(|spans| {
            spans
                .iter()
                .any(|s| s.trace_id() == trace_id && s.span.name == name)
        })
        .await;
    let span = spans.iter().find(|s| s.span.name == name).unwrap();
    assert_eq!(span.parent_id(), parent_id);
}

/// Calls a method no service has, through a raw tonic client.
async fn call_unknown_method(channel: &tonic::transport::Channel) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/commerce.v1.CartService/NoSuchMethod");
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    tokio::time::timeout(
        Duration::from_secs(10),
        grpc.unary(tonic::Request::new(()), path, codec),
    )
    .await
    .expect("answered")
    .expect_err("no such method")
}

/// The body of a raw HTTP response.
fn body_of(response: &str) -> String {
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

#[test]
fn the_dashboard_and_alert_rules_query_only_series_and_labels_the_service_exports() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let families: HashMap<&str, &[&str]> = commerce::metrics::FAMILIES.iter().copied().collect();
    let all_labels: Vec<&str> = families
        .values()
        .flat_map(|labels| labels.iter().copied())
        .collect();
    let scrape_labels = ["job", "instance"];
    for file in [
        "helm/commerce/files/alerts.yml",
        "helm/commerce/files/commerce-dashboard.json",
    ] {
        let text = std::fs::read_to_string(root.join(file))
            .unwrap()
            .replace("\\\"", "\"");
        let selectors = crate::support::observability::selectors(&text);
        assert!(selectors.len() > 5, "{file}: found no queries");
        for (name, keys) in &selectors {
            let name = name.as_str();
            if name == "up" {
                continue;
            }
            let (family, bucket) = match name.strip_suffix("_bucket") {
                Some(base) => (base, true),
                None => (
                    name.strip_suffix("_count")
                        .or(name.strip_suffix("_sum"))
                        .unwrap_or(name),
                    false,
                ),
            };
            let family = if families.contains_key(name) { name } else { family };
            let labels = families
                .get(family)
                .unwrap_or_else(|| panic!("{file} queries {name}, which the service does not export"));
            for (key, value) in keys {
                let known = labels.contains(&key.as_str())
                    || scrape_labels.contains(&key.as_str())
                    || (bucket && key == "le");
                assert!(known, "{file}: {name} has no label {key}");
                for alternative in value.split('|') {
                    assert!(
                        label_value_exists(family, key, alternative),
                        "{file}: {name} never has {key}=\"{alternative}\""
                    );
                }
            }
        }
        for label in crate::support::observability::grouping_labels(&text) {
            let known = all_labels.contains(&label.as_str())
                || scrape_labels.contains(&label.as_str())
                || label == "le";
            assert!(known, "{file} groups by {label}, which no series has");
        }
    }
}

/// Whether the service can emit `value` for `key` of `family` (for the labels
/// whose values are a closed set; any value passes for the others).
fn label_value_exists(family: &str, key: &str, value: &str) -> bool {
    use commerce::metrics::{StepOutcome, grpc_code_name};
    match (family, key) {
        ("grpc_server_requests_total", "code") => {
            (0..=16).any(|c| grpc_code_name(tonic::Code::from_i32(c)) == value)
        }
        ("saga_steps_total", "outcome") => [
            StepOutcome::Succeeded,
            StepOutcome::Refused,
            StepOutcome::TransientError,
            StepOutcome::Failed,
        ]
        .iter()
        .any(|o| o.as_str() == value),
        ("sagas", "status") => commerce::saga::plan::SagaStatus::parse(value).is_some(),
        (_, "state") => ["idle", "in_use", "waiting", "max"].contains(&value),
        _ => true,
    }
}
