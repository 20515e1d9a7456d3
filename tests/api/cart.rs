//! CartService through gRPC on a running server: the whole cart life,
//! ownership, validation, versions, expiry, concurrency, and checkout.

use std::time::Duration;

use commerce::proto::commerce::v1::{
    Cart, CartStatus, CreateCartRequest, DeleteCartRequest, GetActiveCartRequest, GetCartAnalyticsRequest,
    GetCartRequest, RemoveItemRequest, UpdateItemQuantityRequest,
};
use tonic::Code;
use uuid::Uuid;

use crate::support::{
    app::{Backend, TestApp, authed, spawn_app, spawn_app_with},
    orders::{add_item, customer as principal, violated_fields},
};

async fn create(app: &TestApp, token: &str) -> Cart {
    app.carts()
        .create_cart(authed(CreateCartRequest::default(), token))
        .await
        .unwrap()
        .into_inner()
        .cart
        .unwrap()
}

async fn add(
    app: &TestApp,
    token: &str,
    cart_id: &str,
    product: &str,
    quantity: i32,
    price: &str,
) -> Result<Cart, tonic::Status> {
    let response = app
        .carts()
        .add_item(authed(add_item(cart_id, product, quantity, price), token))
        .await?;
    Ok(response.into_inner().cart.unwrap())
}

async fn get(app: &TestApp, token: &str, cart_id: &str) -> Result<Cart, tonic::Status> {
    let request = GetCartRequest {
        cart_id: cart_id.into(),
    };
    Ok(app
        .carts()
        .get_cart(authed(request, token))
        .await?
        .into_inner()
        .cart
        .unwrap())
}

#[tokio::test]
async fn a_cart_is_created_once_filled_changed_and_deleted_with_a_version_per_change() {
    let app = spawn_app().await;
    let alice = app.customer("alice");
    let mut carts = app.carts();

    let first = carts
        .create_cart(authed(
            CreateCartRequest {
                currency: "eur".into(),
            },
            &alice,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(first.created);
    let cart = first.cart.unwrap();
    assert_eq!(
        (cart.currency.as_str(), cart.version, cart.status),
        ("EUR", 1, CartStatus::Active as i32)
    );
    assert_eq!(cart.customer_id, "alice");
    assert!(cart.expires_at.unwrap().seconds > cart.created_at.unwrap().seconds);

    let again = carts
        .create_cart(authed(CreateCartRequest::default(), &alice))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.created, "the existing active cart comes back");
    assert_eq!(again.cart.unwrap().cart_id, cart.cart_id);

    add(&app, &alice, &cart.cart_id, "sku-1", 2, "29.99")
        .await
        .unwrap();
    add(&app, &alice, &cart.cart_id, "sku-2", 1, "5").await.unwrap();
    let cart = add(&app, &alice, &cart.cart_id, "sku-1", 1, "27.5")
        .await
        .unwrap();
    assert_eq!(cart.version, 4);
    assert_eq!(cart.items.len(), 2);
    assert_eq!(
        (cart.items[0].quantity, cart.items[0].unit_price.as_str()),
        (3, "27.50")
    );
    assert_eq!(cart.items[0].line_total, "82.50");
    assert_eq!((cart.subtotal.as_str(), cart.item_count), ("87.50", 4));

    let update = UpdateItemQuantityRequest {
        cart_id: cart.cart_id.clone(),
        product_id: "sku-2".into(),
        quantity: 4,
        expected_version: Some(4),
    };
    let cart = carts
        .update_item_quantity(authed(update, &alice))
        .await
        .unwrap()
        .into_inner()
        .cart
        .unwrap();
    assert_eq!((cart.subtotal.as_str(), cart.version), ("102.50", 5));

    let remove = RemoveItemRequest {
        cart_id: cart.cart_id.clone(),
        product_id: "sku-1".into(),
        expected_version: None,
    };
    let cart = carts
        .remove_item(authed(remove.clone(), &alice))
        .await
        .unwrap()
        .into_inner()
        .cart
        .unwrap();
    assert_eq!((cart.items.len(), cart.subtotal.as_str()), (1, "20.00"));
    let err = carts.remove_item(authed(remove, &alice)).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let zero = UpdateItemQuantityRequest {
        cart_id: cart.cart_id.clone(),
        product_id: "sku-2".into(),
        quantity: 0,
        expected_version: None,
    };
    let cart = carts
        .update_item_quantity(authed(zero, &alice))
        .await
        .unwrap()
        .into_inner()
        .cart
        .unwrap();
    assert!(cart.items.is_empty());
    assert_eq!(cart.subtotal, "0.00");

    let active = carts
        .get_active_cart(authed(GetActiveCartRequest {}, &alice))
        .await
        .unwrap();
    assert_eq!(active.into_inner().cart.unwrap(), cart);

    let delete = DeleteCartRequest {
        cart_id: cart.cart_id.clone(),
        expected_version: None,
    };
    carts.delete_cart(authed(delete, &alice)).await.unwrap();
    assert_eq!(
        get(&app, &alice, &cart.cart_id).await.unwrap_err().code(),
        Code::NotFound
    );
    let none = carts
        .get_active_cart(authed(GetActiveCartRequest {}, &alice))
        .await
        .unwrap_err();
    assert_eq!(none.code(), Code::NotFound);
}

#[tokio::test]
async fn another_customers_cart_is_not_found_but_an_admin_may_read_it() {
    let app = spawn_app().await;
    let (alice, bob) = (app.customer("alice"), app.customer("bob"));
    let cart = create(&app, &alice).await;
    let id = cart.cart_id.as_str();

    assert_eq!(get(&app, &bob, id).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(
        add(&app, &bob, id, "sku", 1, "1").await.unwrap_err().code(),
        Code::NotFound
    );
    let delete = DeleteCartRequest {
        cart_id: id.into(),
        expected_version: None,
    };
    let err = app.carts().delete_cart(authed(delete, &bob)).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // Indistinguishable from a cart that does not exist.
    let missing = get(&app, &bob, &Uuid::new_v4().to_string()).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    assert_eq!(get(&app, &app.admin(), id).await.unwrap().cart_id, id);
    assert_eq!(
        get(&app, &alice, id).await.unwrap().version,
        1,
        "bob changed nothing"
    );
    let anonymous = app
        .carts()
        .get_cart(GetCartRequest { cart_id: id.into() })
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_every_bad_field_and_stores_nothing() {
    let app = spawn_app().await;
    let alice = app.customer("alice");
    let cart = create(&app, &alice).await;
    let id = cart.cart_id.as_str();

    let err = get(&app, &alice, "not-a-uuid").await.unwrap_err();
    assert_eq!(violated_fields(&err), ["cart_id"]);

    let mut bad = add_item(id, "", 0, "1e3");
    bad.product_name = " ".into();
    let err = app.carts().add_item(authed(bad, &alice)).await.unwrap_err();
    assert_eq!(
        violated_fields(&err),
        ["product_id", "product_name", "quantity", "unit_price"]
    );

    for price in ["0", "-1", "NaN", "1.001", "1000000.01", "29,99", ""] {
        let err = add(&app, &alice, id, "sku", 1, price).await.unwrap_err();
        assert_eq!(violated_fields(&err), ["unit_price"], "{price:?}");
    }
    let err = add(&app, &alice, id, "sku", 1000, "1").await.unwrap_err();
    assert_eq!(violated_fields(&err), ["quantity"]);
    let err = add(&app, &alice, id, &"x".repeat(129), 1, "1").await.unwrap_err();
    assert_eq!(violated_fields(&err), ["product_id"]);

    add(&app, &alice, id, "sku", 999, "1").await.unwrap();
    let err = add(&app, &alice, id, "sku", 1, "1").await.unwrap_err();
    assert_eq!(violated_fields(&err), ["quantity"], "a line holds at most 999");

    let update = UpdateItemQuantityRequest {
        cart_id: "nope".into(),
        product_id: "sku".into(),
        quantity: -1,
        expected_version: Some(-3),
    };
    let err = app
        .carts()
        .update_item_quantity(authed(update, &alice))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["quantity", "cart_id", "expected_version"]);

    let err = app
        .carts()
        .create_cart(authed(
            CreateCartRequest {
                currency: "XXX".into(),
            },
            &app.customer("bob"),
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["currency"]);

    let stored = get(&app, &alice, id).await.unwrap();
    assert_eq!(
        (stored.version, stored.item_count),
        (2, 999),
        "only the one good add was stored"
    );
}

#[tokio::test]
async fn a_stale_expected_version_is_aborted_and_the_current_one_succeeds() {
    let app = spawn_app().await;
    let alice = app.customer("alice");
    let cart = create(&app, &alice).await;
    add(&app, &alice, &cart.cart_id, "sku", 1, "1").await.unwrap();

    let mut stale = add_item(&cart.cart_id, "other", 1, "2");
    stale.expected_version = Some(1);
    let err = app
        .carts()
        .add_item(authed(stale.clone(), &alice))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "{err:?}");

    let delete = DeleteCartRequest {
        cart_id: cart.cart_id.clone(),
        expected_version: Some(1),
    };
    let err = app.carts().delete_cart(authed(delete, &alice)).await.unwrap_err();
    assert_eq!(err.code(), Code::Aborted);

    stale.expected_version = Some(2);
    let cart = app
        .carts()
        .add_item(authed(stale, &alice))
        .await
        .unwrap()
        .into_inner()
        .cart
        .unwrap();
    assert_eq!((cart.version, cart.items.len()), (3, 2));
}

#[tokio::test]
async fn fifty_concurrent_add_item_calls_all_count_on_every_backend() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, &[]).await;
        let alice = app.customer("alice");
        let cart = create(&app, &alice).await;
        let calls = (0..50).map(|_| add(&app, &alice, &cart.cart_id, "sku", 1, "0.99"));
        for result in futures::future::join_all(calls).await {
            result.unwrap();
        }
        let cart = get(&app, &alice, &cart.cart_id).await.unwrap();
        assert_eq!(cart.items[0].quantity, 50, "{backend:?}");
        assert_eq!(
            (cart.version, cart.subtotal.as_str()),
            (51, "49.50"),
            "{backend:?}"
        );
    }
}

#[tokio::test]
async fn an_untouched_cart_expires_after_its_ttl_and_counts_as_abandoned() {
    for backend in Backend::all() {
        // 0.0003 h = 1.08 s.
        let app = spawn_app_with(backend, &[("CART_TTL_HOURS", "0.0003")]).await;
        let alice = app.customer("alice");
        let cart = create(&app, &alice).await;
        add(&app, &alice, &cart.cart_id, "sku", 1, "1").await.unwrap();
        // A change refreshes the TTL: still there after the first one would have passed.
        tokio::time::sleep(Duration::from_millis(700)).await;
        add(&app, &alice, &cart.cart_id, "sku", 1, "1").await.unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(
            get(&app, &alice, &cart.cart_id).await.unwrap().item_count,
            2,
            "{backend:?}"
        );

        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(
            get(&app, &alice, &cart.cart_id).await.unwrap_err().code(),
            Code::NotFound
        );
        let active = app
            .carts()
            .get_active_cart(authed(GetActiveCartRequest {}, &alice))
            .await;
        assert_eq!(active.unwrap_err().code(), Code::NotFound, "{backend:?}");

        let stats = app
            .carts()
            .get_cart_analytics(authed(GetCartAnalyticsRequest {}, &app.admin()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (stats.carts_created, stats.carts_active, stats.carts_abandoned),
            (1, 0, 1),
            "{backend:?}"
        );
        assert_eq!(stats.abandonment_rate, "1.0000");

        let next = create(&app, &alice).await;
        assert_ne!(next.cart_id, cart.cart_id, "a new cart replaces the expired one");
    }
}

#[tokio::test]
async fn analytics_are_admin_only_and_follow_conversions_and_deletions() {
    let app = spawn_app().await;
    let err = app
        .carts()
        .get_cart_analytics(authed(GetCartAnalyticsRequest {}, &app.customer("alice")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    for (customer, price) in [("a", "10.00"), ("b", "20.01")] {
        let token = app.customer(customer);
        let cart = create(&app, &token).await;
        let cart = add(&app, &token, &cart.cart_id, "sku", 1, price).await.unwrap();
        let id: Uuid = cart.cart_id.parse().unwrap();
        let snapshot = app
            .app
            .carts
            .checkout_snapshot(&principal(customer), id)
            .await
            .unwrap();
        app.app
            .carts
            .mark_converted(id, snapshot.version, Uuid::new_v4())
            .await
            .unwrap();
    }
    let token = app.customer("c");
    let cart = create(&app, &token).await;
    let delete = DeleteCartRequest {
        cart_id: cart.cart_id,
        expected_version: None,
    };
    app.carts().delete_cart(authed(delete, &token)).await.unwrap();
    create(&app, &app.customer("d")).await;

    let stats = app
        .carts()
        .get_cart_analytics(authed(GetCartAnalyticsRequest {}, &app.admin()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            stats.carts_created,
            stats.carts_active,
            stats.carts_converted,
            stats.carts_deleted,
            stats.carts_abandoned
        ),
        (4, 1, 2, 1, 0)
    );
    assert_eq!(stats.abandonment_rate, "0.0000");
    assert_eq!(
        (stats.average_cart_value.as_str(), stats.currency.as_str()),
        ("15.00", "USD")
    );
}

#[tokio::test]
async fn checkout_converts_by_compare_and_set_so_a_late_item_is_never_lost_or_ordered() {
    let app = spawn_app().await;
    let carts = &app.app.carts;
    let alice = app.customer("alice");
    let cart = create(&app, &alice).await;
    let id: Uuid = cart.cart_id.parse().unwrap();

    let empty = carts
        .checkout_snapshot(&principal("alice"), id)
        .await
        .unwrap_err();
    assert_eq!(tonic::Status::from(empty).code(), Code::FailedPrecondition);
    add(&app, &alice, &cart.cart_id, "sku", 1, "5").await.unwrap();
    let other = carts.checkout_snapshot(&principal("bob"), id).await.unwrap_err();
    assert_eq!(tonic::Status::from(other).code(), Code::NotFound);

    let snapshot = carts.checkout_snapshot(&principal("alice"), id).await.unwrap();
    // An item arrives while the order is being placed.
    add(&app, &alice, &cart.cart_id, "late", 1, "7").await.unwrap();
    let order = Uuid::new_v4();
    let stale = carts
        .mark_converted(id, snapshot.version, order)
        .await
        .unwrap_err();
    assert_eq!(tonic::Status::from(stale).code(), Code::Aborted);
    assert_eq!(
        get(&app, &alice, &cart.cart_id).await.unwrap().status,
        CartStatus::Active as i32
    );

    let snapshot = carts.checkout_snapshot(&principal("alice"), id).await.unwrap();
    assert_eq!(
        snapshot.subtotal().unwrap().to_string(),
        "12.00",
        "the late item is in the new snapshot"
    );
    carts.mark_converted(id, snapshot.version, order).await.unwrap();
    carts.mark_converted(id, snapshot.version, order).await.unwrap();
    let twice = carts
        .mark_converted(id, snapshot.version + 1, Uuid::new_v4())
        .await
        .unwrap_err();
    assert_eq!(tonic::Status::from(twice).code(), Code::FailedPrecondition);

    let converted = get(&app, &alice, &cart.cart_id).await.unwrap();
    assert_eq!(converted.status, CartStatus::Converted as i32);
    let frozen = add(&app, &alice, &cart.cart_id, "more", 1, "1")
        .await
        .unwrap_err();
    assert_eq!(frozen.code(), Code::FailedPrecondition);
    let again = carts
        .checkout_snapshot(&principal("alice"), id)
        .await
        .unwrap_err();
    assert_eq!(tonic::Status::from(again).code(), Code::FailedPrecondition);
    let active = app
        .carts()
        .get_active_cart(authed(GetActiveCartRequest {}, &alice))
        .await;
    assert_eq!(active.unwrap_err().code(), Code::NotFound);
    assert_ne!(create(&app, &alice).await.cart_id, cart.cart_id);
}
