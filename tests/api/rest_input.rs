//! Bad input on the REST shim: each malformed request gets a clear 4xx naming
//! the offending field, before anything reaches a service.

use serde_json::json;

use crate::support::{
    app::{Backend, TestApp, spawn_app, spawn_app_with},
    rest::{Reply, call},
};

fn items_path() -> String {
    format!("/api/v1/cart/{}/items", uuid::Uuid::new_v4())
}

async fn add_item(app: &TestApp, token: &str, body: serde_json::Value) -> Reply {
    call(app, "POST", &items_path())
        .bearer(token)
        .json(&body)
        .send()
        .await
}

fn assert_bad(reply: &Reply, field: &str) {
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert_eq!(reply.json()["code"], 3, "INVALID_ARGUMENT");
    assert_eq!(reply.violated_fields(), [field], "{}", reply.text());
}

#[tokio::test]
async fn malformed_json_and_non_object_bodies_are_400_on_the_body() {
    let app = spawn_app().await;
    let token = app.customer("alice");
    let malformed = call(&app, "POST", &items_path())
        .bearer(&token)
        .raw("application/json", "{\"product_id\": ")
        .send()
        .await;
    assert_bad(&malformed, "body");
    assert!(
        malformed.json()["message"]
            .as_str()
            .unwrap()
            .contains("malformed JSON")
    );

    let array = add_item(&app, &token, json!([1, 2])).await;
    assert_bad(&array, "body");
    assert!(
        array.json()["message"]
            .as_str()
            .unwrap()
            .contains("expected a JSON object")
    );
}

#[tokio::test]
async fn unknown_fields_and_wrong_types_are_400_naming_the_field() {
    let app = spawn_app().await;
    let token = app.customer("alice");
    let valid = json!({"product_id": "p-1", "product_name": "Widget", "quantity": 2, "unit_price": "29.99"});
    let with = |key: &str, value: serde_json::Value| {
        let mut body = valid.clone();
        body[key] = value;
        body
    };
    let cases = [
        (with("colour", json!("red")), "colour"),
        (with("quantity", json!("two")), "quantity"),
        (with("quantity", json!(2.5)), "quantity"),
        (with("quantity", json!({"n": 2})), "quantity"),
        (with("unit_price", json!(29.99)), "unit_price"),
        (with("product_name", json!(["a"])), "product_name"),
        (with("expected_version", json!("latest")), "expected_version"),
    ];
    for (body, field) in cases {
        assert_bad(&add_item(&app, &token, body).await, field);
    }
    // lowerCamelCase spellings are the same fields, and their errors say so.
    let mut camel = valid.clone();
    camel["productId"] = json!("p-1");
    assert_bad(&add_item(&app, &token, camel).await, "productId");
}

#[tokio::test]
async fn a_body_too_large_is_413_and_a_form_body_is_400_naming_its_content_type() {
    let app = spawn_app_with(Backend::from_env(), &[("MAX_BODY_BYTES", "2048")]).await;
    let token = app.customer("alice");
    let big =
        json!({"product_id": "p", "product_name": "x".repeat(4096), "quantity": 1, "unit_price": "1.00"});
    let reply = add_item(&app, &token, big).await;
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert_eq!(reply.json()["code"], 8);
    assert!(
        reply.json()["message"]
            .as_str()
            .unwrap()
            .contains("MAX_BODY_BYTES")
    );

    // Any content type is read as JSON (curl -d sends form encoding); a body
    // that is not JSON is told what it sent.
    let form = call(&app, "POST", &items_path())
        .bearer(&token)
        .raw("application/x-www-form-urlencoded", "product_id=p&quantity=1")
        .send()
        .await;
    assert_bad(&form, "body");
    assert!(form.text().contains("send application/json"), "{}", form.text());
}

#[tokio::test]
async fn query_path_and_header_values_are_checked_against_the_request_fields() {
    let app = spawn_app().await;
    let token = app.customer("alice");
    let unknown = call(&app, "GET", "/api/v1/orders/?colour=red")
        .bearer(&token)
        .send()
        .await;
    assert_bad(&unknown, "colour");

    let twice = call(&app, "GET", "/api/v1/orders/?page_size=1&pageSize=2")
        .bearer(&token)
        .send()
        .await;
    assert_bad(&twice, "pageSize");

    let enum_value = call(&app, "GET", "/api/v1/orders/?status=SHIPPED_BY_OWL")
        .bearer(&token)
        .send()
        .await;
    assert_bad(&enum_value, "status");

    let number = call(&app, "GET", "/api/v1/orders/?page_size=many")
        .bearer(&token)
        .send()
        .await;
    assert_bad(&number, "page_size");

    let dry_run = call(
        &app,
        "POST",
        &format!("/api/v1/admin/sagas/{}/retry?dry_run=yes", uuid::Uuid::new_v4()),
    )
    .bearer(&app.admin())
    .send()
    .await;
    assert_bad(&dry_run, "dry_run");

    let cart = uuid::Uuid::new_v4();
    let conflict = call(&app, "POST", &format!("/api/v1/cart/{cart}/items"))
        .bearer(&token)
        .json(&json!({"cart_id": uuid::Uuid::new_v4().to_string(), "product_id": "p"}))
        .send()
        .await;
    assert_bad(&conflict, "cart_id");

    let etag = call(&app, "DELETE", &format!("/api/v1/cart/{cart}"))
        .bearer(&token)
        .header("if-match", "yesterday")
        .send()
        .await;
    assert_bad(&etag, "If-Match");

    let body_on_get = call(&app, "GET", &format!("/api/v1/cart/{cart}"))
        .bearer(&token)
        .json(&json!({"cart_id": cart.to_string()}))
        .send()
        .await;
    assert_bad(&body_on_get, "body");
}
