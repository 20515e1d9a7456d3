//! Small gRPC steps the fault suites share: a filled cart, an order request,
//! raw counts in the database.

use commerce::{
    db::Db,
    proto::commerce::v1::{AddItemRequest, Address, Cart, CreateCartRequest, CreateOrderRequest},
};

use crate::helpers::{TestApp, authed};

/// A new cart of `token`'s customer with `items` (product, quantity, price).
pub async fn cart_with(app: &TestApp, token: &str, items: &[(&str, i32, &str)]) -> Cart {
    let mut cart = app
        .carts()
        .create_cart(authed(CreateCartRequest::default(), token))
        .await
        .expect("create cart")
        .into_inner()
        .cart
        .expect("a cart");
    for (product, quantity, price) in items {
        let request = AddItemRequest {
            cart_id: cart.cart_id.clone(),
            product_id: (*product).into(),
            product_name: format!("The {product}"),
            quantity: *quantity,
            unit_price: (*price).into(),
            expected_version: None,
        };
        cart = app
            .carts()
            .add_item(authed(request, token))
            .await
            .expect("add item")
            .into_inner()
            .cart
            .expect("a cart");
    }
    cart
}

/// A valid CreateOrder for `cart_id` under `key`.
pub fn order_request(cart_id: &str, key: &str) -> CreateOrderRequest {
    CreateOrderRequest {
        cart_id: cart_id.into(),
        payment_method: "pm_card_visa".into(),
        shipping_address: Some(Address {
            recipient_name: "Grace Hopper".into(),
            line1: "1 Compiler Lane".into(),
            city: "Arlington".into(),
            region: "VA".into(),
            postal_code: "22201".into(),
            country: "US".into(),
            ..Default::default()
        }),
        idempotency_key: key.into(),
    }
}

/// `SELECT COUNT(*) ...` on either database.
pub async fn count(db: &Db, sql: &'static str) -> i64 {
    match db {
        Db::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.expect("count"),
        Db::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.expect("count"),
    }
}

/// The fields named by an INVALID_ARGUMENT's BadRequest details.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let details = status.get_error_details();
    let bad = details.bad_request().expect("bad request details");
    bad.field_violations.iter().map(|v| v.field.clone()).collect()
}
