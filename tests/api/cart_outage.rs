//! Carts when Redis is away: prompt UNAVAILABLE, health says so, and the
//! service recovers by itself. The shared Redis is never stopped: the outage
//! is a TCP proxy in front of it that the test cuts and restores.

use std::time::{Duration, Instant};

use commerce::proto::commerce::v1::{
    AddItemRequest, CreateCartRequest, GetActiveCartRequest, GetCartRequest,
};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::support::{
    app::{Backend, TestApp, authed, spawn_app_with},
    orders::cart_with,
    proxy::Proxy,
    wait_for,
};

/// Bound on how long a cart call may take to fail while Redis is away: the
/// 500 ms pool timeout the tests configure, plus scheduling slack on a busy machine.
const PROMPT: Duration = Duration::from_millis(1500);

async fn cart_service_health(app: &TestApp) -> i32 {
    HealthClient::new(app.channel.clone())
        .check(HealthCheckRequest {
            service: "commerce.v1.CartService".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

#[tokio::test]
async fn cart_calls_answer_unavailable_promptly_when_redis_cannot_be_reached() {
    // Port 1 on loopback: nothing listens, connections are refused.
    let app = spawn_app_with(
        Backend::Embedded,
        &[("REDIS_URL", "redis://127.0.0.1:1"), ("POOL_TIMEOUT_MS", "500")],
    )
    .await;
    let alice = app.customer("alice");
    let mut carts = app.carts();

    let started = Instant::now();
    let err = carts
        .create_cart(authed(CreateCartRequest::default(), &alice))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(started.elapsed() < PROMPT, "took {:?}", started.elapsed());

    let err = carts
        .get_active_cart(authed(GetActiveCartRequest {}, &alice))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    let add = AddItemRequest {
        cart_id: uuid::Uuid::new_v4().to_string(),
        product_id: "sku".into(),
        product_name: "Widget".into(),
        quantity: 1,
        unit_price: "1".into(),
        expected_version: None,
    };
    assert_eq!(
        carts.add_item(authed(add, &alice)).await.unwrap_err().code(),
        Code::Unavailable
    );

    let report = app.app.health.report().await;
    assert!(!report.cache.up, "{:?}", report.cache);
    assert_eq!(report.status, "degraded");
    assert_eq!(cart_service_health(&app).await, ServingStatus::NotServing as i32);
}

#[tokio::test]
async fn carts_recover_by_themselves_when_redis_comes_back() {
    let redis_url = match std::env::var("TEST_REDIS_URL") {
        Ok(url) if Backend::from_env() == Backend::Real => url,
        // Needs a real Redis to put the proxy in front of (CI has one).
        _ => return,
    };
    let upstream = redis_url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let proxy = Proxy::start(upstream).await;
    let proxied = format!("redis://{}", proxy.addr);
    let app = spawn_app_with(
        Backend::Real,
        &[("REDIS_URL", &proxied), ("POOL_TIMEOUT_MS", "500")],
    )
    .await;
    let alice = app.customer("alice");
    let mut carts = app.carts();
    let cart = cart_with(&app, &alice, &[]).await;
    let get = || GetCartRequest {
        cart_id: cart.cart_id.clone(),
    };

    proxy.cut();
    let started = Instant::now();
    let err = carts.get_cart(authed(get(), &alice)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(started.elapsed() < PROMPT, "took {:?}", started.elapsed());
    wait_for("health to report Redis down", || async {
        cart_service_health(&app).await == ServingStatus::NotServing as i32
    })
    .await;

    proxy.restore();
    wait_for("cart calls to work again", || async {
        carts.clone().get_cart(authed(get(), &alice)).await.is_ok()
    })
    .await;
    let add = AddItemRequest {
        cart_id: cart.cart_id.clone(),
        product_id: "sku".into(),
        product_name: "Widget".into(),
        quantity: 2,
        unit_price: "3.10".into(),
        expected_version: Some(1),
    };
    let after = carts
        .add_item(authed(add, &alice))
        .await
        .unwrap()
        .into_inner()
        .cart
        .unwrap();
    assert_eq!(
        (after.version, after.subtotal.as_str()),
        (2, "6.20"),
        "the cart survived the outage"
    );
    wait_for("health to report Redis up", || async {
        cart_service_health(&app).await == ServingStatus::Serving as i32
    })
    .await;
}
