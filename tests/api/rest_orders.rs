//! Orders over REST: CreateOrder with the key in the body or the
//! Idempotency-Key header, refusals that store nothing, CancelOrder, ownership.

use serde_json::{Value, json};

use crate::support::{
    app::{Backend, TestApp, spawn_app_with},
    rest::{call, get_until},
};

const NO_SAGA: &[(&str, &str)] = &[("ENABLE_SAGA_ORCHESTRATION", "false")];

/// A REST-made cart of the token's customer with 2 x 29.99; its id.
async fn filled_cart(app: &TestApp, token: &str) -> String {
    let created = call(app, "POST", "/api/v1/cart/").bearer(token).send().await;
    let cart = created.json()["cart"]["cart_id"].as_str().unwrap().to_string();
    let added = call(app, "POST", &format!("/api/v1/cart/{cart}/items"))
        .bearer(token)
        .json(&json!({"product_id": "product-123", "product_name": "Sample Product", "quantity": 2, "unit_price": "29.99"}))
        .send()
        .await;
    assert_eq!(added.status, 200, "{}", added.text());
    cart
}

fn order_body(cart: &str) -> Value {
    json!({
        "cart_id": cart,
        "payment_method": "pm_card_visa",
        "shipping_address": {
            "recipient_name": "Ada Lovelace", "line1": "12 St James's Square", "city": "London",
            "postal_code": "SW1Y 4JH", "country": "GB"
        },
    })
}

async fn cart_is_active(app: &TestApp, token: &str) -> bool {
    call(app, "GET", "/api/v1/cart/active")
        .bearer(token)
        .send()
        .await
        .status
        == 200
}

#[tokio::test]
async fn orders_are_created_from_the_body_key_and_refusals_leave_the_cart_alone() {
    let app = spawn_app_with(Backend::from_env(), NO_SAGA).await;
    let alice = app.customer("alice");
    let cart = filled_cart(&app, &alice).await;

    let mut card = order_body(&cart);
    card["payment_method"] = json!("4242 4242 4242 4242");
    card["idempotency_key"] = json!("k-card");
    let refused = call(&app, "POST", "/api/v1/orders/")
        .bearer(&alice)
        .json(&card)
        .send()
        .await;
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert_eq!(refused.violated_fields(), ["payment_method"]);

    let mut both = order_body(&cart);
    both["idempotency_key"] = json!("k-body");
    let conflict = call(&app, "POST", "/api/v1/orders/")
        .bearer(&alice)
        .header("idempotency-key", "k-header")
        .json(&both)
        .send()
        .await;
    assert_eq!(conflict.status, 400, "{}", conflict.text());
    assert_eq!(conflict.violated_fields(), ["idempotency_key"]);
    assert!(
        cart_is_active(&app, &alice).await,
        "nothing stored: the cart is still active"
    );

    let created = call(&app, "POST", "/api/v1/orders/")
        .bearer(&alice)
        .json(&both)
        .send()
        .await;
    assert_eq!(created.status, 200, "{}", created.text());
    let order = created.json()["order"].clone();
    assert_eq!(order["status"], "ORDER_STATUS_PENDING");
    assert_eq!(order["total"], "59.98");
    assert_eq!(order["shipping_address"]["city"], "London");
    assert!(!cart_is_active(&app, &alice).await, "the cart was converted");
    let same_header = call(&app, "POST", "/api/v1/orders/")
        .bearer(&alice)
        .header("idempotency-key", "k-body")
        .json(&both)
        .send()
        .await;
    assert_eq!(
        same_header.json(),
        created.json(),
        "a header equal to the body's key is fine"
    );
}

#[tokio::test]
async fn orders_are_cancelled_over_rest_by_their_owner_only() {
    let app = spawn_app_with(Backend::from_env(), NO_SAGA).await;
    let alice = app.customer("alice");
    let cart = filled_cart(&app, &alice).await;
    let created = call(&app, "POST", "/api/v1/orders/")
        .bearer(&alice)
        .header("Idempotency-Key", "cancel-me")
        .json(&order_body(&cart))
        .send()
        .await;
    let order = created.json()["order"]["order_id"].as_str().unwrap().to_string();
    let cancel = format!("/api/v1/orders/{order}/cancel");

    let stranger = call(&app, "POST", &cancel)
        .bearer(&app.customer("bob"))
        .send()
        .await;
    assert_eq!(stranger.status, 404, "{}", stranger.text());
    let bad_id = call(&app, "POST", "/api/v1/orders/42/cancel")
        .bearer(&alice)
        .send()
        .await;
    assert_eq!(bad_id.status, 400, "{}", bad_id.text());
    assert_eq!(bad_id.violated_fields(), ["order_id"]);

    let cancelled = call(&app, "POST", &cancel)
        .bearer(&alice)
        .json(&json!({"reason": "changed my mind"}))
        .send()
        .await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.text());
    assert_eq!(cancelled.json()["order"]["status"], "ORDER_STATUS_CANCELLED");
    assert_eq!(
        cancelled.json()["order"]["cancellation_reason"],
        "changed my mind"
    );
}

/// Places an order from a fresh cart of `token`'s customer; its id.
async fn place_order(app: &TestApp, token: &str, key: &str) -> String {
    let cart = filled_cart(app, token).await;
    let created = call(app, "POST", "/api/v1/orders/")
        .bearer(token)
        .header("Idempotency-Key", key)
        .json(&order_body(&cart))
        .send()
        .await;
    assert_eq!(created.status, 200, "{}", created.text());
    created.json()["order"]["order_id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn orders_are_read_listed_by_page_and_status_and_audited_over_rest() {
    let app = spawn_app_with(Backend::from_env(), NO_SAGA).await;
    let alice = app.customer("alice");
    let first = place_order(&app, &alice, "q-1").await;
    let second = place_order(&app, &alice, "q-2").await;
    let third = place_order(&app, &alice, "q-3").await;
    let cancelled = call(&app, "POST", &format!("/api/v1/orders/{second}/cancel"))
        .bearer(&alice)
        .send()
        .await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.text());

    // min_version from the query waits for the read model to catch up.
    let read = call(&app, "GET", &format!("/api/v1/orders/{second}?min_version=2"))
        .bearer(&alice)
        .send()
        .await;
    assert_eq!(read.status, 200, "{}", read.text());
    assert_eq!(read.json()["order"]["status"], "ORDER_STATUS_CANCELLED");
    assert_eq!(read.json()["order"]["shipping_address"]["city"], "London");
    let stranger = call(&app, "GET", &format!("/api/v1/orders/{first}"))
        .bearer(&app.customer("bob"))
        .send()
        .await;
    assert_eq!(stranger.status, 404);

    let page = get_until(&app, &alice, "/api/v1/orders/?page_size=2", |page| {
        page["orders"].as_array().is_some_and(|o| o.len() == 2)
            && page["orders"][0]["order_id"] == third.as_str()
    })
    .await;
    let token = page["next_page_token"].as_str().unwrap().to_string();
    assert!(!token.is_empty());
    let rest = call(
        &app,
        "GET",
        &format!("/api/v1/orders?pageSize=2&pageToken={token}"),
    )
    .bearer(&alice)
    .send()
    .await
    .json();
    let ids: Vec<&str> = rest["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["order_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [first.as_str()], "newest first, across pages");
    assert_eq!(rest["next_page_token"], "");

    for status in ["ORDER_STATUS_CANCELLED", "6"] {
        let only = get_until(
            &app,
            &alice,
            &format!("/api/v1/orders/?status={status}"),
            |page| page["orders"].as_array().is_some_and(|o| o.len() == 1),
        )
        .await;
        assert_eq!(only["orders"][0]["order_id"], second.as_str());
    }

    let history = call(&app, "GET", &format!("/api/v1/orders/{second}/events"))
        .bearer(&alice)
        .send()
        .await;
    assert_eq!(history.status, 200, "{}", history.text());
    let history = history.json();
    let types: Vec<&str> = history["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["event"]["event_type"].as_str())
        .collect();
    assert_eq!(types.first(), Some(&"OrderCreated"), "{history}");
    assert!(types.len() >= 2, "{types:?}");
    // Whole numbers in an event payload read as over gRPC (`2`, not `2.0`), and every
    // timestamp is RFC 3339 in UTC with `Z`, as gRPC clients render them.
    let quantities: Vec<&Value> = history["entries"][0]["event"]["payload"]["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{history}"))
        .iter()
        .map(|line| &line["quantity"])
        .collect();
    assert!(
        !quantities.is_empty() && quantities.iter().all(|q| q.is_u64()),
        "{quantities:?}"
    );
    let occurred_at = history["entries"][0]["occurred_at"].as_str().unwrap();
    assert!(occurred_at.ends_with('Z'), "{occurred_at}");
    assert!(!history.to_string().contains("+00:00"), "{history}");
    let created_at = read.json()["order"]["created_at"].as_str().unwrap().to_string();
    assert!(
        created_at.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(&created_at).is_ok(),
        "{created_at}"
    );
}
