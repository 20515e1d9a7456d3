//! Carts over REST: the seed's quick start as written, the same carts as over
//! gRPC, ETag / If-Match, ownership, and bad input that stores nothing.

use commerce::proto::commerce::v1::GetCartRequest;
use serde_json::{Value, json};

use crate::support::{
    app::{TestApp, authed, spawn_app},
    rest::{Reply, call},
};

/// The seed README's "Add item to cart" body.
fn seed_item() -> Value {
    json!({
        "product_id": "product-123",
        "product_name": "Sample Product",
        "quantity": 2,
        "unit_price": "29.99"
    })
}

/// The seed README's "Create a shopping cart": POST with no body; the cart id.
async fn create_cart(app: &TestApp, token: &str) -> String {
    let reply = call(app, "POST", "/api/v1/cart/")
        .bearer(token)
        .header("content-type", "application/json")
        .send()
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["cart"]["cart_id"].as_str().unwrap().to_string()
}

async fn get_cart(app: &TestApp, token: &str, cart: &str) -> Reply {
    call(app, "GET", &format!("/api/v1/cart/{cart}"))
        .bearer(token)
        .send()
        .await
}

#[tokio::test]
async fn the_seed_quick_start_works_as_written_and_the_cart_is_the_grpc_one() {
    let app = spawn_app().await;
    let token = app.customer("alice");
    let created = call(&app, "POST", "/api/v1/cart/")
        .bearer(&token)
        .header("content-type", "application/json")
        .send()
        .await;
    assert_eq!(created.status, 200, "{}", created.text());
    let body = created.json();
    assert_eq!(body["created"], true);
    assert_eq!(body["cart"]["customer_id"], "alice");
    assert_eq!(body["cart"]["items"], json!([]), "defaults are written");
    let cart = body["cart"]["cart_id"].as_str().unwrap().to_string();
    let version = body["cart"]["version"].as_str().unwrap().to_string();
    assert_eq!(created.header("etag"), format!("\"{version}\""));

    let added = call(&app, "POST", &format!("/api/v1/cart/{cart}/items"))
        .bearer(&token)
        .json(&seed_item())
        .send()
        .await;
    assert_eq!(added.status, 200, "{}", added.text());
    let body = added.json();
    assert_eq!(body["cart"]["subtotal"], "59.98");
    assert_eq!(body["cart"]["item_count"], 2);
    assert_eq!(body["cart"]["items"][0]["line_total"], "59.98");
    let text = added.text();
    assert!(
        text.find("\"cart_id\"") < text.find("\"items\""),
        "proto field order: {text}"
    );

    // The same cart through gRPC: one service behind both transports.
    let over_grpc = app
        .carts()
        .get_cart(authed(
            GetCartRequest {
                cart_id: cart.clone(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .cart
        .unwrap();
    assert_eq!(over_grpc.subtotal, "59.98");
    assert_eq!(added.header("etag"), format!("\"{}\"", over_grpc.version));

    let active = call(&app, "GET", "/api/v1/cart/active")
        .bearer(&token)
        .send()
        .await;
    assert_eq!(active.json()["cart"]["cart_id"], cart.as_str());
    let again = call(&app, "POST", "/api/v1/cart").bearer(&token).send().await;
    assert_eq!(again.json()["created"], false, "one active cart per customer");
}

#[tokio::test]
async fn lower_camel_case_input_and_query_and_path_bindings_reach_the_service() {
    let app = spawn_app().await;
    let token = app.customer("bob");
    let cart = create_cart(&app, &token).await;
    let camel = json!({"productId": "p-7", "productName": "Seven", "quantity": "3", "unitPrice": "1.50"});
    let added = call(&app, "POST", &format!("/api/v1/cart/{cart}/items"))
        .bearer(&token)
        .json(&camel)
        .send()
        .await;
    assert_eq!(added.status, 200, "{}", added.text());
    assert_eq!(added.json()["cart"]["items"][0]["product_id"], "p-7");
    assert_eq!(added.json()["cart"]["subtotal"], "4.50");

    let updated = call(&app, "PUT", &format!("/api/v1/cart/{cart}/items/p-7"))
        .bearer(&token)
        .json(&json!({"quantity": 5}))
        .send()
        .await;
    assert_eq!(updated.json()["cart"]["subtotal"], "7.50", "{}", updated.text());

    // DELETE takes expected_version from the query as well as from If-Match.
    let version = updated.json()["cart"]["version"].as_str().unwrap().to_string();
    let removed = call(
        &app,
        "DELETE",
        &format!("/api/v1/cart/{cart}/items/p-7?expected_version={version}"),
    )
    .bearer(&token)
    .send()
    .await;
    assert_eq!(removed.status, 200, "{}", removed.text());
    assert_eq!(removed.json()["cart"]["items"], json!([]));
}

#[tokio::test]
async fn if_match_guards_cart_writes_and_a_stale_etag_changes_nothing() {
    let app = spawn_app().await;
    let token = app.customer("carol");
    let cart = create_cart(&app, &token).await;
    let first = call(&app, "POST", &format!("/api/v1/cart/{cart}/items"))
        .bearer(&token)
        .json(&seed_item())
        .send()
        .await;
    let current = first.header("etag").to_string();
    let stale = "\"1\"";
    assert_ne!(current, stale);

    let refused = call(&app, "PUT", &format!("/api/v1/cart/{cart}/items/product-123"))
        .bearer(&token)
        .header("if-match", stale)
        .json(&json!({"quantity": 9}))
        .send()
        .await;
    assert_eq!(refused.status, 409, "{}", refused.text());
    assert_eq!(refused.json()["code"], 10, "ABORTED");
    let unchanged = get_cart(&app, &token, &cart).await;
    assert_eq!(unchanged.header("etag"), current);
    assert_eq!(unchanged.json()["cart"]["items"][0]["quantity"], 2);

    let accepted = call(&app, "PUT", &format!("/api/v1/cart/{cart}/items/product-123"))
        .bearer(&token)
        .header("if-match", &current)
        .json(&json!({"quantity": 9}))
        .send()
        .await;
    assert_eq!(accepted.status, 200, "{}", accepted.text());
    assert_eq!(accepted.json()["cart"]["items"][0]["quantity"], 9);
    assert_ne!(accepted.header("etag"), current);

    let etag = accepted.header("etag").to_string();
    let cached = call(&app, "GET", &format!("/api/v1/cart/{cart}"))
        .bearer(&token)
        .header("if-none-match", &etag)
        .send()
        .await;
    assert_eq!(cached.status, 304, "{}", cached.text());
    assert!(cached.body.is_empty());
    let outdated = call(&app, "GET", &format!("/api/v1/cart/{cart}"))
        .bearer(&token)
        .header("if-none-match", &current)
        .send()
        .await;
    assert_eq!(outdated.status, 200);

    let weak = call(&app, "DELETE", &format!("/api/v1/cart/{cart}"))
        .bearer(&token)
        .header("if-match", &format!("W/{current}"))
        .send()
        .await;
    assert_eq!(
        weak.status,
        409,
        "the old version no longer matches: {}",
        weak.text()
    );
    let deleted = call(&app, "DELETE", &format!("/api/v1/cart/{cart}"))
        .bearer(&token)
        .header("if-match", accepted.header("etag"))
        .send()
        .await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    assert_eq!(get_cart(&app, &token, &cart).await.status, 404);
}

#[tokio::test]
async fn bad_values_are_400_naming_the_field_and_nothing_is_stored() {
    let app = spawn_app().await;
    let token = app.customer("dave");
    let cart = create_cart(&app, &token).await;
    let before = get_cart(&app, &token, &cart).await.json();
    let with = |key: &str, value: Value| {
        let mut body = seed_item();
        body[key] = value;
        body
    };
    let cases = [
        (with("unit_price", json!("-5.00")), "unit_price"),
        (with("unit_price", json!("abc")), "unit_price"),
        (with("unit_price", json!("0")), "unit_price"),
        (with("unit_price", json!(29.99)), "unit_price"),
        (with("quantity", json!(-1)), "quantity"),
        (with("quantity", json!("two")), "quantity"),
        (with("product_id", json!("")), "product_id"),
        (with("discount", json!("10%")), "discount"),
    ];
    for (body, field) in cases {
        let reply = call(&app, "POST", &format!("/api/v1/cart/{cart}/items"))
            .bearer(&token)
            .json(&body)
            .send()
            .await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.text());
        assert!(
            reply.violated_fields().contains(&field.to_string()),
            "{body}: {}",
            reply.text()
        );
    }
    let bad_uuid = call(&app, "POST", "/api/v1/cart/not-a-uuid/items")
        .bearer(&token)
        .json(&seed_item())
        .send()
        .await;
    assert_eq!(bad_uuid.status, 400);
    assert_eq!(bad_uuid.violated_fields(), ["cart_id"]);

    assert_eq!(
        get_cart(&app, &token, &cart).await.json(),
        before,
        "nothing stored"
    );
}

#[tokio::test]
async fn owners_roles_and_tokens_map_to_their_http_statuses() {
    let app = spawn_app().await;
    let alice = app.customer("alice");
    let cart = create_cart(&app, &alice).await;

    let anonymous = get_cart(&app, "", &cart).await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
    let stranger = get_cart(&app, &app.customer("mallory"), &cart).await;
    assert_eq!(
        stranger.status, 404,
        "another customer's cart does not exist for them"
    );
    assert_eq!(stranger.json()["code"], 5);
    let none = call(&app, "GET", "/api/v1/cart/active")
        .bearer(&app.customer("nobody"))
        .send()
        .await;
    assert_eq!(none.status, 404);

    let analytics = "/api/v1/admin/analytics/carts";
    let denied = call(&app, "GET", analytics).bearer(&alice).send().await;
    assert_eq!(denied.status, 403, "{}", denied.text());
    assert_eq!(denied.json()["code"], 7);
    let figures = call(&app, "GET", analytics).bearer(&app.admin()).send().await;
    assert_eq!(figures.status, 200, "{}", figures.text());
    assert_eq!(figures.json()["carts_created"], "1");

    let traced = call(&app, "GET", "/api/v1/cart/active")
        .bearer(&alice)
        .header("x-request-id", "rest-trace-1")
        .send()
        .await;
    assert_eq!(traced.header("x-request-id"), "rest-trace-1");
}
