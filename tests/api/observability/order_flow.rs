//! The whole order path as an operator sees it: one trace from CreateOrder
//! through the saga to payment, inventory and shipping, and the order, saga
//! and pipeline series moving on `/metrics`.

use std::{collections::HashMap, time::Duration};

use commerce::{
    auth::{Role, mint_token},
    config::Config,
    proto::commerce::v1::{GetOrderRequest, OrderStatus, order_service_client::OrderServiceClient},
};
use tonic::transport::Channel;

use crate::support::{
    app::{authed, spawn_app},
    eventually,
    observability::{Collector, ExportedSpan, ServerProcess, fresh_traceparent, sample},
    orders::{order_request, place_order},
    rest::http_get,
};

/// A customer's cart with one line, then CreateOrder from it with `traceparent`
/// (when given); returns the order id.
async fn place_traced_order(channel: &Channel, token: &str, traceparent: Option<&str>) -> String {
    let key = uuid::Uuid::new_v4().to_string();
    let metadata: Vec<_> = traceparent.map(|t| ("traceparent", t)).into_iter().collect();
    let items = [("obs-book", 1, "12.50")];
    place_order(
        channel,
        token,
        &items,
        |cart_id| order_request(cart_id, &key),
        &metadata,
    )
    .await
    .order_id
}

/// An order of one `product_id` paid with `payment_method` (the stubs' magic inputs); its id.
async fn place_paid_order(channel: &Channel, token: &str, product_id: &str, payment_method: &str) -> String {
    let key = uuid::Uuid::new_v4().to_string();
    let order = |cart_id: &str| {
        let mut request = order_request(cart_id, &key);
        request.payment_method = payment_method.into();
        request
    };
    place_order(channel, token, &[(product_id, 1, "12.50")], order, &[])
        .await
        .order_id
}

/// Polls GetOrder until the order reaches `status`.
async fn wait_for_status(channel: &Channel, token: &str, order_id: &str, status: OrderStatus) {
    let reached = eventually(Duration::from_secs(10), || async {
        let request = GetOrderRequest {
            order_id: order_id.into(),
            ..Default::default()
        };
        let order = OrderServiceClient::new(channel.clone())
            .get_order(authed(request, token))
            .await
            .ok()?
            .into_inner()
            .order?;
        (order.status == status as i32).then_some(())
    })
    .await;
    assert!(reached.is_some(), "order {order_id} never reached {status:?}");
}

/// The chain of span names from `span` up through its exported ancestors.
fn ancestry(spans: &[ExportedSpan], span: &ExportedSpan) -> Vec<String> {
    let by_id: HashMap<String, &ExportedSpan> = spans
        .iter()
        .filter(|s| s.trace_id() == span.trace_id())
        .map(|s| (hex::encode(&s.span.span_id), s))
        .collect();
    let mut chain = vec![span.span.name.clone()];
    let mut parent = span.parent_id();
    while let Some(next) = by_id.get(&parent) {
        chain.push(next.span.name.clone());
        parent = next.parent_id();
    }
    chain
}

const SIBLING_CALLS: [&str; 4] = [
    "payment.v1.PaymentService/Authorize",
    "inventory.v1.InventoryService/Reserve",
    "shipping.v1.ShippingService/CreateShipment",
    "payment.v1.PaymentService/Capture",
];

#[tokio::test]
async fn one_trace_runs_from_create_order_through_the_saga_to_every_sibling_call() {
    let collector = Collector::start().await;
    let server = ServerProcess::spawn(&[
        ("ENABLE_TRACING", "true"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ])
    .await;
    let config = Config::from_vars(&HashMap::from([("ENVIRONMENT".into(), "test".into())])).unwrap();
    let token = mint_token(
        &config.auth,
        "obs-tracer",
        &[Role::Customer],
        Duration::from_secs(120),
    )
    .unwrap();
    let channel = Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (traceparent, trace_id, caller_span) = fresh_traceparent();
    let order_id = place_traced_order(&channel, &token, Some(&traceparent)).await;
    wait_for_status(&channel, &token, &order_id, OrderStatus::Confirmed).await;

    // Each sibling call's server span, followed up its parents, reaches the
    // CreateOrder request span, which is the child of the caller's span.
    let create_order = "commerce.v1.OrderService/CreateOrder";
    let spans = collector
        .wait_for(|spans| {
            SIBLING_CALLS.iter().all(|call| {
                spans.iter().any(|s| {
                    s.trace_id() == trace_id
                        && s.span.name == *call
                        && ancestry(spans, s).iter().any(|name| name == create_order)
                })
            })
        })
        .await;
    let request = spans
        .iter()
        .find(|s| s.trace_id() == trace_id && s.span.name == create_order)
        .unwrap();
    assert_eq!(request.parent_id(), caller_span);
    let authorize = spans
        .iter()
        .find(|s| s.trace_id() == trace_id && s.span.name == SIBLING_CALLS[0])
        .unwrap();
    let chain = ancestry(&spans, authorize);
    assert!(chain.contains(&"saga_step".to_string()), "{chain:?}");
    assert!(chain.contains(&"saga".to_string()), "{chain:?}");
    // The log lines of the saga carry the order and saga ids and the same trace.
    let saga_line = server
        .wait_for_log(|line| line["order_id"] == order_id.as_str() && line["saga_id"].is_string())
        .await;
    assert_eq!(saga_line["trace_id"], trace_id.as_str(), "{saga_line}");
}

#[tokio::test]
async fn a_placed_and_fulfilled_order_moves_the_order_saga_and_pipeline_series() {
    let app = spawn_app().await;
    let token = app.customer("obs-orders");
    let before = commerce::metrics::render();
    let order_id = place_traced_order(&app.channel, &token, None).await;
    wait_for_status(&app.channel, &token, &order_id, OrderStatus::Confirmed).await;

    let after = super::body_of(&http_get(app.port, "/metrics").await);
    let grew =
        |name: &str, labels: &[(&str, &str)]| sample(&after, name, labels) - sample(&before, name, labels);
    assert!(grew("carts_converted_total", &[]) >= 1.0);
    for status in [
        "PENDING",
        "PAYMENT_AUTHORIZED",
        "INVENTORY_RESERVED",
        "SHIPPING_ARRANGED",
        "CONFIRMED",
    ] {
        assert!(
            grew("orders_status_transitions_total", &[("to", status)]) >= 1.0,
            "{status}"
        );
    }
    for step in [
        "authorize_payment",
        "reserve_inventory",
        "create_shipment",
        "capture_payment",
    ] {
        let succeeded = [("step", step), ("outcome", "succeeded")];
        assert!(grew("saga_steps_total", &succeeded) >= 1.0, "{step}");
        assert!(
            grew("saga_step_duration_seconds_count", &[("step", step)]) >= 1.0,
            "{step}"
        );
    }
    assert!(grew("saga_duration_seconds_count", &[("outcome", "completed")]) >= 1.0);
    let create = [
        ("service", "commerce.v1.OrderService"),
        ("method", "CreateOrder"),
        ("code", "OK"),
    ];
    assert!(grew("grpc_server_requests_total", &create) >= 1.0);
    assert!(after.contains("\nrelay_lag_events "), "{after}");
    assert!(after.contains("projection_lag_events{projection="), "{after}");
    assert!(!after.contains(&order_id), "an order id leaked into a label");
}

#[tokio::test]
async fn expected_business_outcomes_log_no_error_only_what_needs_a_human_does() {
    // Retries run out after one transient answer here, so the third order's saga goes FAILED:
    // that one waits for an operator, and is the only ERROR line wanted.
    let server =
        ServerProcess::spawn(&[("SAGA_RETRY_DELAY_SECONDS", "0.02"), ("SAGA_RETRY_ATTEMPTS", "2")]).await;
    let config = Config::from_vars(&HashMap::from([("ENVIRONMENT".into(), "test".into())])).unwrap();
    let token = mint_token(
        &config.auth,
        "obs-levels",
        &[Role::Customer],
        Duration::from_secs(120),
    )
    .unwrap();
    let channel = Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();

    // A declined card, an out-of-stock product and a payment stub refusing once (then fine):
    // a cancelled, a cancelled and a confirmed order, none of which needs anyone.
    let declined = place_paid_order(&channel, &token, "obs-book", "pm_card_declined").await;
    let out_of_stock = place_paid_order(&channel, &token, "oos-book", "pm_card_visa").await;
    let flaky = place_paid_order(&channel, &token, "obs-book", "pm_transient_1").await;
    wait_for_status(&channel, &token, &declined, OrderStatus::Cancelled).await;
    wait_for_status(&channel, &token, &out_of_stock, OrderStatus::Cancelled).await;
    wait_for_status(&channel, &token, &flaky, OrderStatus::Confirmed).await;
    server
        .wait_for_log(|line| line["message"] == "saga step failed; retrying" && line["level"] == "WARN")
        .await;
    let level_of = |level: &str| -> Vec<String> {
        server
            .lines()
            .into_iter()
            .filter(|line| serde_json::from_str::<serde_json::Value>(line).is_ok_and(|l| l["level"] == level))
            .collect()
    };
    assert!(
        level_of("ERROR").is_empty(),
        "ERROR lines for expected outcomes:\n{}",
        level_of("ERROR").join("\n")
    );
    let refusal = server
        .wait_for_log(|line| line["message"] == "saga step refused" && line["order_id"] == declined.as_str())
        .await;
    assert_eq!(refusal["level"], "INFO", "{refusal}");
    let retry_at = server
        .wait_for_log(|line| line["message"] == "saga step failed; retrying")
        .await["retry_at"]
        .as_str()
        .expect("retry_at")
        .to_string();
    assert!(
        chrono::DateTime::parse_from_rfc3339(&retry_at).is_ok() && retry_at.ends_with('Z'),
        "retry_at {retry_at} is not RFC 3339 in UTC"
    );

    // Retries running out leaves the saga FAILED until an operator acts: that is an ERROR.
    let stuck = place_paid_order(&channel, &token, "obs-book", "pm_transient_5").await;
    let out_of_retries = server
        .wait_for_log(|line| {
            line["message"] == "saga step out of retries" && line["order_id"] == stuck.as_str()
        })
        .await;
    assert_eq!(out_of_retries["level"], "ERROR", "{out_of_retries}");
}
