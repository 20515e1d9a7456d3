//! A corpus of hostile input over both transports: every value gets a clear
//! INVALID_ARGUMENT (gRPC) or 400 (REST) naming the offending field, and the
//! stores are unchanged afterwards (the cart keeps its version and lines, no
//! order is placed).

use commerce::proto::commerce::v1::{
    AddItemRequest, Address, Cart, CreateCartRequest, CreateOrderRequest, GetCartRequest, ListOrdersRequest,
    UpdateItemQuantityRequest,
};
use serde_json::{Value, json};

use crate::support::{
    app::{Backend, TestApp, authed, spawn_app_with},
    orders::{add_item, cart_with, order_request, violated_fields},
    rest::call,
    store::count,
};

fn names(fields: &[String], field: &str) -> bool {
    fields
        .iter()
        .any(|f| f == field || f.starts_with(&format!("{field}.")))
}

const HUGE_INTS: [i32; 5] = [0, -1, -7, i32::MIN, i32::MAX];

/// Prices that must never become an amount.
fn bad_prices() -> Vec<String> {
    [
        "1e999",
        "NaN",
        "nan",
        "Infinity",
        "-Infinity",
        "-0.00",
        "0",
        "-1",
        "1.00000000000000000001",
        "",
        " 1.00",
        "1,50",
        "0x10",
        "1e3",
        "+1",
        ".5",
        "99999999999999999999999999999999",
        "٣",
        "１",
        "1000000.01",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// Identifiers that must never name a cart or an order.
fn bad_ids() -> Vec<String> {
    vec![
        String::new(),
        " ".into(),
        "not-a-uuid".into(),
        "😀".repeat(36),
        "x".repeat(100_000),
        "00000000-0000-0000-0000-00000000000g".into(),
        "\u{0}".into(),
    ]
}

fn bad_product_ids() -> Vec<String> {
    vec![
        String::new(),
        "   ".into(),
        " padded".into(),
        "a\nb".into(),
        "nul\u{0}".into(),
        "x".repeat(129),
        "é".repeat(129),
        "😀".repeat(5_000),
    ]
}

async fn snapshot(app: &TestApp, token: &str, cart_id: &str) -> (Cart, i64) {
    let cart = app
        .carts()
        .get_cart(authed(
            GetCartRequest {
                cart_id: cart_id.into(),
            },
            token,
        ))
        .await
        .expect("the cart is readable")
        .into_inner()
        .cart
        .expect("a cart");
    let orders = count(
        &app.app.backends.db,
        "SELECT COUNT(*) FROM events WHERE event_type = 'OrderCreated'",
    )
    .await;
    (cart, orders)
}

#[tokio::test]
async fn hostile_grpc_messages_are_invalid_argument_naming_the_field_and_store_nothing() {
    let app = spawn_app_with(Backend::from_env(), &[("RATE_LIMIT_PER_SECOND", "0")]).await;
    let alice = app.customer("alice");
    let cart = cart_with(&app, &alice, &[("lamp", 1, "19.99")]).await;
    let id = cart.cart_id.clone();
    let before = snapshot(&app, &alice, &id).await;
    let mut cases: Vec<(AddItemRequest, &str)> = Vec::new();
    for price in bad_prices() {
        cases.push((add_item(&id, "lamp", 1, &price), "unit_price"));
    }
    for quantity in HUGE_INTS.into_iter().chain([1000]) {
        cases.push((add_item(&id, "lamp", quantity, "1.00"), "quantity"));
    }
    for product in bad_product_ids() {
        cases.push((add_item(&id, &product, 1, "1.00"), "product_id"));
    }
    for name in ["", "  ", &"n".repeat(201), "tab\there"] {
        let mut request = add_item(&id, "lamp", 1, "1.00");
        request.product_name = name.into();
        cases.push((request, "product_name"));
    }
    for cart_id in bad_ids() {
        cases.push((add_item(&cart_id, "lamp", 1, "1.00"), "cart_id"));
    }
    for version in [-1, i64::MIN] {
        let mut request = add_item(&id, "lamp", 1, "1.00");
        request.expected_version = Some(version);
        cases.push((request, "expected_version"));
    }
    let total = cases.len();
    for (request, field) in cases {
        let shown = format!("{:.120?}", request);
        let status = app.carts().add_item(authed(request, &alice)).await.unwrap_err();
        let fields = violated_fields(&status);
        assert!(names(&fields, field), "{shown}: {fields:?} does not name {field}");
    }

    for (quantity, product) in [(-1, "lamp"), (1000, "lamp"), (i32::MIN, "lamp"), (1, "")] {
        let request = UpdateItemQuantityRequest {
            cart_id: id.clone(),
            product_id: product.into(),
            quantity,
            expected_version: None,
        };
        let status = app
            .carts()
            .update_item_quantity(authed(request, &alice))
            .await
            .unwrap_err();
        let fields = violated_fields(&status);
        let field = if product.is_empty() {
            "product_id"
        } else {
            "quantity"
        };
        assert!(names(&fields, field), "{quantity} {product:?}: {fields:?}");
    }
    for currency in ["XXX", "", "US", "€", "usd ", &"U".repeat(10_000)] {
        let request = CreateCartRequest {
            currency: currency.into(),
        };
        let status = app
            .carts()
            .create_cart(authed(request, &app.customer("bob")))
            .await;
        // An empty currency means the default; everything else here is refused.
        if currency.is_empty() {
            continue;
        }
        assert!(
            names(&violated_fields(&status.unwrap_err()), "currency"),
            "{currency:?}"
        );
    }

    let order_cases = hostile_orders(&id);
    let order_total = order_cases.len();
    for (request, field) in order_cases {
        let shown = format!("{:.160?}", request);
        let status = app
            .orders()
            .create_order(authed(request, &alice))
            .await
            .unwrap_err();
        let fields = violated_fields(&status);
        assert!(names(&fields, field), "{shown}: {fields:?} does not name {field}");
    }
    let listed = app
        .orders()
        .list_orders(authed(
            ListOrdersRequest {
                status: 99,
                ..Default::default()
            },
            &alice,
        ))
        .await;
    if let Err(status) = listed {
        // Unknown enum values are refused (once ListOrders is served).
        if status.code() != tonic::Code::Unimplemented {
            assert!(names(&violated_fields(&status), "status"), "{status:?}");
        }
    }

    assert_eq!(snapshot(&app, &alice, &id).await, before, "nothing was stored");
    println!(
        "bad input (gRPC): {} hostile messages refused, stores unchanged",
        total + order_total + 10
    );
}

fn hostile_orders(cart_id: &str) -> Vec<(CreateOrderRequest, &'static str)> {
    let mut cases = Vec::new();
    for id in bad_ids() {
        cases.push((order_request(&id, "k"), "cart_id"));
    }
    for method in ["", "4242424242424242", "pm card", &"p".repeat(129), "pm_😀"] {
        let mut request = order_request(cart_id, "k");
        request.payment_method = method.into();
        cases.push((request, "payment_method"));
    }
    for key in [String::new(), "k".repeat(129)] {
        cases.push((order_request(cart_id, &key), "idempotency_key"));
    }
    let mut missing = order_request(cart_id, "k");
    missing.shipping_address = None;
    cases.push((missing, "shipping_address"));
    let address = |edit: fn(&mut Address)| {
        let mut request = order_request(cart_id, "k");
        edit(request.shipping_address.as_mut().expect("an address"));
        request
    };
    cases.push((address(|a| a.country = "USA".into()), "shipping_address"));
    cases.push((address(|a| a.country = String::new()), "shipping_address"));
    cases.push((address(|a| a.recipient_name = String::new()), "shipping_address"));
    cases.push((address(|a| a.city = "c".repeat(10_000)), "shipping_address"));
    cases.push((address(|a| a.postal_code = "\u{0}".into()), "shipping_address"));
    cases
}

/// A REST call that must be a 400 naming `field`.
async fn assert_400(app: &TestApp, token: &str, method: &str, path: &str, body: &Value, field: &str) {
    let reply = call(app, method, path).bearer(token).json(body).send().await;
    assert_eq!(reply.status, 400, "{method} {path} {body:.200}: {}", reply.text());
    let text = reply.text();
    assert_eq!(reply.json()["code"], 3, "INVALID_ARGUMENT: {text}");
    let fields = reply.violated_fields();
    assert!(
        names(&fields, field),
        "{body:.200}: {fields:?} does not name {field}"
    );
}

#[tokio::test]
async fn hostile_rest_bodies_are_400_naming_the_field_and_store_nothing() {
    let app = spawn_app_with(Backend::from_env(), &[("RATE_LIMIT_PER_SECOND", "0")]).await;
    let alice = app.customer("alice");
    let cart = cart_with(&app, &alice, &[("lamp", 1, "19.99")]).await;
    let id = cart.cart_id.clone();
    let before = snapshot(&app, &alice, &id).await;
    let items = format!("/api/v1/cart/{id}/items");
    let valid = json!({"product_id": "lamp", "product_name": "Lamp", "quantity": 1, "unit_price": "1.00"});
    let with = |key: &str, value: Value| {
        let mut body = valid.clone();
        body[key] = value;
        body
    };
    let mut cases: Vec<(Value, &str)> = Vec::new();
    for price in bad_prices() {
        cases.push((with("unit_price", json!(price)), "unit_price"));
    }
    for price in [
        json!(1.5),
        json!(1e300),
        json!(-0.0),
        json!(null),
        json!(true),
        json!(["1.00"]),
    ] {
        cases.push((with("unit_price", price), "unit_price"));
    }
    for quantity in [
        json!(0),
        json!(-1),
        json!(1000),
        json!(2_147_483_648_i64),
        json!(-9_223_372_036_854_775_808_i64),
        json!(f64::MAX),
        json!(1.5),
        json!("three"),
        json!("1e2"),
        json!(false),
        json!({}),
    ] {
        cases.push((with("quantity", quantity), "quantity"));
    }
    for product in bad_product_ids() {
        cases.push((with("product_id", json!(product)), "product_id"));
    }
    cases.push((with("product_id", json!(42)), "product_id"));
    cases.push((with("product_name", json!("")), "product_name"));
    cases.push((with("expected_version", json!(-1)), "expected_version"));
    cases.push((with("expected_version", json!("latest")), "expected_version"));
    let total = cases.len();
    for (body, field) in cases {
        assert_400(&app, &alice, "POST", &items, &body, field).await;
    }
    for quantity in [json!(-1), json!(1000), json!("x"), json!(1.25)] {
        let path = format!("/api/v1/cart/{id}/items/lamp");
        assert_400(
            &app,
            &alice,
            "PUT",
            &path,
            &json!({"quantity": quantity}),
            "quantity",
        )
        .await;
    }
    for currency in ["XXX", "€", "usd "] {
        assert_400(
            &app,
            &alice,
            "POST",
            "/api/v1/cart/",
            &json!({"currency": currency}),
            "currency",
        )
        .await;
    }
    let order = json!({
        "cart_id": id, "payment_method": "pm_card_visa", "idempotency_key": "k",
        "shipping_address": {"recipient_name": "A", "line1": "L", "city": "C", "postal_code": "P", "country": "US"}
    });
    let order_with = |key: &str, value: Value| {
        let mut body = order.clone();
        body[key] = value;
        body
    };
    let mut order_cases = vec![
        (order_with("cart_id", json!("nope")), "cart_id"),
        (order_with("cart_id", json!(7)), "cart_id"),
        (
            order_with("payment_method", json!("4242424242424242")),
            "payment_method",
        ),
        (order_with("payment_method", json!("")), "payment_method"),
        (
            order_with("idempotency_key", json!("k".repeat(129))),
            "idempotency_key",
        ),
        (
            order_with("shipping_address", json!("1 Main St")),
            "shipping_address",
        ),
    ];
    let mut bad_country = order.clone();
    bad_country["shipping_address"]["country"] = json!("Atlantis");
    order_cases.push((bad_country, "shipping_address"));
    for (body, field) in &order_cases {
        assert_400(&app, &alice, "POST", "/api/v1/orders/", body, field).await;
    }
    let reply = call(&app, "GET", "/api/v1/orders/?status=NOT_A_STATUS")
        .bearer(&alice)
        .send()
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text());

    assert_eq!(snapshot(&app, &alice, &id).await, before, "nothing was stored");
    println!(
        "bad input (REST): {} hostile bodies refused, stores unchanged",
        total + order_cases.len() + 8
    );
}
