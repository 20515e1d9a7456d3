//! Saga administration over REST: a saga that ran out of retries is listed,
//! inspected, dry-run and resumed through the shim, by admins only.

use serde_json::json;

use crate::support::{
    app::{Backend, spawn_app_with},
    rest::{call, get_until},
};

#[tokio::test]
async fn a_failed_saga_is_listed_dry_run_and_resumed_over_rest() {
    // pm_transient_3: the payment stub fails the first three Authorize calls; 1 try + 2 retries.
    let app = spawn_app_with(Backend::from_env(), &[("SAGA_RETRY_ATTEMPTS", "2")]).await;
    let (alice, admin) = (app.customer("alice"), app.admin());
    let cart = call(&app, "POST", "/api/v1/cart/")
        .bearer(&alice)
        .send()
        .await
        .json()["cart"]["cart_id"]
        .as_str()
        .unwrap()
        .to_string();
    call(&app, "POST", &format!("/api/v1/cart/{cart}/items"))
        .bearer(&alice)
        .json(&json!({"product_id": "lamp", "product_name": "Lamp", "quantity": 1, "unit_price": "19.99"}))
        .send()
        .await;
    let order = call(&app, "POST", "/api/v1/orders/")
        .bearer(&alice)
        .json(&json!({
            "cart_id": cart, "payment_method": "pm_transient_3", "idempotency_key": "saga-rest",
            "shipping_address": {"recipient_name": "Ada", "line1": "1 Way", "city": "London",
                                 "postal_code": "N1", "country": "GB"},
        }))
        .send()
        .await
        .json();
    let saga = order["order"]["saga_id"].as_str().unwrap().to_string();
    let order_id = order["order"]["order_id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/admin/sagas/{saga}");

    let failed = get_until(&app, &admin, &path, |s| {
        s["saga"]["status"] == "SAGA_STATUS_FAILED"
    })
    .await;
    assert_eq!(failed["saga"]["steps"][0]["last_grpc_code"], "UNAVAILABLE");
    let denied = call(&app, "GET", &path).bearer(&alice).send().await;
    assert_eq!(denied.status, 403, "{}", denied.text());

    let listed = call(
        &app,
        "GET",
        "/api/v1/admin/sagas?status=SAGA_STATUS_FAILED&page_size=10",
    )
    .bearer(&admin)
    .send()
    .await
    .json();
    assert!(
        listed["sagas"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["saga_id"] == saga.as_str())
    );

    let retry = format!("{path}/retry");
    let dry = call(&app, "POST", &retry)
        .bearer(&admin)
        .json(&json!({"dry_run": true}))
        .send()
        .await;
    assert_eq!(dry.status, 200, "{}", dry.text());
    let plan: Vec<String> = dry.json()["plan"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["step"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(plan.first().map(String::as_str), Some("authorize_payment"));
    assert_eq!(plan.last().map(String::as_str), Some("confirm_order"));
    let still = call(&app, "GET", &path).bearer(&admin).send().await.json();
    assert_eq!(
        still["saga"]["status"], "SAGA_STATUS_FAILED",
        "a dry run changes nothing"
    );

    let resumed = call(&app, "POST", &retry)
        .bearer(&admin)
        .json(&json!({"reason": "payment provider recovered"}))
        .send()
        .await;
    assert_eq!(resumed.status, 200, "{}", resumed.text());
    get_until(&app, &admin, &path, |s| {
        s["saga"]["status"] == "SAGA_STATUS_COMPLETED"
    })
    .await;
    get_until(&app, &alice, &format!("/api/v1/orders/{order_id}"), |o| {
        o["order"]["status"] == "ORDER_STATUS_CONFIRMED"
    })
    .await;

    let again = call(&app, "POST", &retry)
        .bearer(&admin)
        .json(&json!({"reason": "again"}))
        .send()
        .await;
    assert_eq!(
        again.status,
        400,
        "a completed saga cannot be retried: {}",
        again.text()
    );
    assert_eq!(again.json()["code"], 9, "FAILED_PRECONDITION");
}
