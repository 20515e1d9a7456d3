//! Machine-readable refusals: every refusal names its stable reason in a
//! `google.rpc.ErrorInfo` (domain `commerce.v1`), with PreconditionFailure,
//! ResourceInfo, BadRequest or RetryInfo where they apply, over gRPC and in the
//! REST error body; an order cancelled by its saga keeps the refusal's code.

use commerce::proto::commerce::v1::{
    AddItemRequest, CancelOrderRequest, CreateCartRequest, ErrorReason, GetActiveCartRequest,
    GetCartAnalyticsRequest, GetOrderRequest, OrderStatus, SagaStatus,
};
use serde_json::{Value, json};
use tonic::Code;
use tonic_types::StatusExt;
use uuid::Uuid;

use crate::support::{
    app::{Backend, TestApp, authed, spawn_app_with},
    errors::{reason_of, rest_detail, rest_reason},
    orders::{NO_SAGA, add_item, cart_with, create_order, order_request},
    rest::{call, get_until},
    saga::{OrderSpec, place, wait_saga},
};

/// AddItem over REST as `token`, with `body`.
async fn rest_add_item(app: &TestApp, token: &str, cart_id: &str, body: Value) -> (u16, Value) {
    let reply = call(app, "POST", &format!("/api/v1/cart/{cart_id}/items"))
        .bearer(token)
        .json(&body)
        .send()
        .await;
    (reply.status, reply.json())
}

#[tokio::test]
async fn validation_identity_and_missing_things_name_their_reason_over_grpc_and_rest() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, NO_SAGA).await;
        let alice = app.customer("alice");
        let cart = cart_with(&app, &alice, &[("book", 1, "10.00")]).await;

        // Bad input: VALIDATION_FAILED with the BadRequest naming the field.
        let err = app
            .carts()
            .add_item(authed(add_item(&cart.cart_id, "pen", 0, "1.00"), &alice))
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), reason_of(&err).as_str()),
            (Code::InvalidArgument, "VALIDATION_FAILED")
        );
        let item = json!({"product_id": "pen", "product_name": "Pen", "quantity": 0, "unit_price": "1.00"});
        let (status, body) = rest_add_item(&app, &alice, &cart.cart_id, item).await;
        assert_eq!(
            (status, rest_reason(&body).as_str()),
            (400, "VALIDATION_FAILED"),
            "{backend:?}"
        );
        assert_eq!(
            rest_detail(&body, "google.rpc.BadRequest")["field_violations"][0]["field"],
            "quantity",
            "the BadRequest detail keeps its shape: {body}"
        );

        // No token: UNAUTHENTICATED; a customer on an admin call: PERMISSION_DENIED.
        let err = app
            .carts()
            .get_active_cart(GetActiveCartRequest {})
            .await
            .unwrap_err();
        assert_eq!(reason_of(&err), "UNAUTHENTICATED");
        let reply = call(&app, "GET", "/api/v1/cart/active").send().await;
        assert_eq!(
            (reply.status, rest_reason(&reply.json()).as_str()),
            (401, "UNAUTHENTICATED")
        );
        let err = app
            .carts()
            .get_cart_analytics(authed(GetCartAnalyticsRequest::default(), &alice))
            .await
            .unwrap_err();
        assert_eq!(reason_of(&err), "PERMISSION_DENIED");
        let reply = call(&app, "GET", "/api/v1/admin/analytics/carts")
            .bearer(&alice)
            .send()
            .await;
        assert_eq!(
            (reply.status, rest_reason(&reply.json()).as_str()),
            (403, "PERMISSION_DENIED")
        );

        // Missing: NOT_FOUND with a ResourceInfo naming the type and id.
        let missing = Uuid::new_v4().to_string();
        let get = GetOrderRequest {
            order_id: missing.clone(),
            min_version: 0,
        };
        let err = app.orders().get_order(authed(get, &alice)).await.unwrap_err();
        assert_eq!(reason_of(&err), "NOT_FOUND");
        let details = err.get_error_details();
        let resource = details.resource_info().expect("ResourceInfo");
        assert_eq!(
            (resource.resource_type.as_str(), resource.resource_name.as_str()),
            ("commerce.v1.Order", missing.as_str())
        );
        let reply = call(&app, "GET", &format!("/api/v1/orders/{missing}"))
            .bearer(&alice)
            .send()
            .await;
        let body = reply.json();
        assert_eq!((reply.status, rest_reason(&body).as_str()), (404, "NOT_FOUND"));
        assert_eq!(
            rest_detail(&body, "google.rpc.ResourceInfo")["resource_name"],
            missing.as_str()
        );
    }
}

#[tokio::test]
async fn cart_and_checkout_refusals_name_their_reason_with_the_precondition_that_failed() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, NO_SAGA).await;
        let bob = app.customer("bob");
        let cart = cart_with(&app, &bob, &[("book", 1, "10.00")]).await;

        // A stale expected version: ABORTED, CART_VERSION_MISMATCH.
        let stale = AddItemRequest {
            expected_version: Some(99),
            ..add_item(&cart.cart_id, "pen", 1, "1.00")
        };
        let err = app.carts().add_item(authed(stale, &bob)).await.unwrap_err();
        assert_eq!(
            (err.code(), reason_of(&err).as_str()),
            (Code::Aborted, "CART_VERSION_MISMATCH")
        );
        let item = json!({"product_id": "pen", "product_name": "Pen", "quantity": 1, "unit_price": "1.00", "expected_version": 99});
        let (status, body) = rest_add_item(&app, &bob, &cart.cart_id, item).await;
        assert_eq!(
            (status, rest_reason(&body).as_str()),
            (409, "CART_VERSION_MISMATCH")
        );

        // Checkout converts the cart; changing it afterwards: CART_NOT_ACTIVE.
        create_order(&app, &bob, order_request(&cart.cart_id, "bob-1"))
            .await
            .unwrap();
        let err = app
            .carts()
            .add_item(authed(add_item(&cart.cart_id, "pen", 1, "1.00"), &bob))
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), reason_of(&err).as_str()),
            (Code::FailedPrecondition, "CART_NOT_ACTIVE")
        );
        let details = err.get_error_details();
        let violation = &details
            .precondition_failure()
            .expect("PreconditionFailure")
            .violations[0];
        assert_eq!(
            (violation.r#type.as_str(), violation.subject.as_str()),
            ("CART_NOT_ACTIVE", "commerce.v1.Cart")
        );
        let item = json!({"product_id": "pen", "product_name": "Pen", "quantity": 1, "unit_price": "1.00"});
        let (status, body) = rest_add_item(&app, &bob, &cart.cart_id, item).await;
        assert_eq!((status, rest_reason(&body).as_str()), (400, "CART_NOT_ACTIVE"));
        assert_eq!(
            rest_detail(&body, "google.rpc.PreconditionFailure")["violations"][0]["type"],
            "CART_NOT_ACTIVE"
        );

        // An empty cart: CART_EMPTY (remembered under its key, and answered
        // again with the same reason).
        let empty = app
            .carts()
            .create_cart(authed(CreateCartRequest::default(), &bob))
            .await
            .unwrap()
            .into_inner()
            .cart
            .unwrap();
        for _ in 0..2 {
            let err = create_order(&app, &bob, order_request(&empty.cart_id, "bob-2"))
                .await
                .unwrap_err();
            assert_eq!(reason_of(&err), "CART_EMPTY", "{backend:?}");
        }

        // The first key again with another cart: IDEMPOTENCY_KEY_REUSED.
        let err = create_order(&app, &bob, order_request(&empty.cart_id, "bob-1"))
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), reason_of(&err).as_str()),
            (Code::InvalidArgument, "IDEMPOTENCY_KEY_REUSED")
        );
        let body = json!({
            "cart_id": empty.cart_id, "payment_method": "pm_card_visa", "idempotency_key": "bob-1",
            "shipping_address": {"recipient_name": "B", "line1": "1 Way", "city": "London",
                                 "postal_code": "N1 9GU", "country": "GB"},
        });
        let reply = call(&app, "POST", "/api/v1/orders/")
            .bearer(&bob)
            .json(&body)
            .send()
            .await;
        assert_eq!(
            (reply.status, rest_reason(&reply.json()).as_str()),
            (400, "IDEMPOTENCY_KEY_REUSED")
        );
    }
}

#[tokio::test]
async fn over_the_rate_limit_the_refusal_says_rate_limited_with_retry_info() {
    for backend in Backend::all() {
        let app = spawn_app_with(
            backend,
            &[("RATE_LIMIT_PER_SECOND", "1"), ("RATE_LIMIT_BURST", "2")],
        )
        .await;
        let carol = app.customer("carol");
        let mut refused = None;
        for _ in 0..5 {
            if let Err(err) = app
                .carts()
                .get_active_cart(authed(GetActiveCartRequest {}, &carol))
                .await
                && err.code() == Code::ResourceExhausted
            {
                refused = Some(err);
                break;
            }
        }
        let err = refused.expect("the limit is reached within five calls");
        assert_eq!(reason_of(&err), "RATE_LIMITED");
        assert!(err.get_error_details().retry_info().is_some(), "{err:?}");
        let reply = call(&app, "GET", "/api/v1/cart/active")
            .bearer(&carol)
            .send()
            .await;
        let body = reply.json();
        assert_eq!(
            (reply.status, rest_reason(&body).as_str()),
            (429, "RATE_LIMITED"),
            "{backend:?}"
        );
        assert!(rest_detail(&body, "google.rpc.RetryInfo")["retry_delay"].is_string());
    }
}

#[tokio::test]
async fn a_cancelled_order_keeps_the_reason_code_of_what_ended_it_on_grpc_and_rest() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, &[]).await;
        let refusals = [
            (
                "declined",
                OrderSpec {
                    payment_method: "pm_card_declined",
                    ..OrderSpec::default()
                },
                "PAYMENT_DECLINED",
            ),
            (
                "oos",
                OrderSpec {
                    lines: &[("oos-kettle", 1)],
                    ..OrderSpec::default()
                },
                "OUT_OF_STOCK",
            ),
            (
                "nowhere",
                OrderSpec {
                    country: "ZZ",
                    ..OrderSpec::default()
                },
                "ADDRESS_UNSHIPPABLE",
            ),
        ];
        for (customer, spec, code) in refusals {
            let order = place(&app, customer, spec).await;
            wait_saga(&app, &order.saga_id, SagaStatus::Compensated).await;
            let token = app.customer(customer);
            let path = format!("/api/v1/orders/{}", order.order_id);
            let body = get_until(&app, &token, &path, |o| {
                o["order"]["status"] == "ORDER_STATUS_CANCELLED"
            })
            .await;
            assert_eq!(
                body["order"]["cancellation_reason_code"], code,
                "{backend:?} {body}"
            );
            // The version REST answered with: GetOrder at min_version 0 may
            // answer from a read model that has not folded the cancellation
            // yet, while REST's first answer came from the event store.
            let seen_version = body["order"]["version"].as_str().unwrap().parse().unwrap();
            let get = GetOrderRequest {
                order_id: order.order_id.clone(),
                min_version: seen_version,
            };
            let seen = app
                .orders()
                .get_order(authed(get, &token))
                .await
                .unwrap()
                .into_inner()
                .order
                .unwrap();
            assert_eq!(
                seen.cancellation_reason_code(),
                ErrorReason::from_str_name(code).unwrap()
            );
            assert!(!seen.cancellation_reason.is_empty(), "the text stays for people");
        }

        // A confirmed order can no longer be cancelled: ORDER_NOT_CANCELLABLE.
        let order = place(&app, "happy", OrderSpec::default()).await;
        wait_saga(&app, &order.saga_id, SagaStatus::Completed).await;
        let token = app.customer("happy");
        let cancel = CancelOrderRequest {
            order_id: order.order_id.clone(),
            reason: "too late".into(),
        };
        let err = app
            .orders()
            .cancel_order(authed(cancel, &token))
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), reason_of(&err).as_str()),
            (Code::FailedPrecondition, "ORDER_NOT_CANCELLABLE")
        );
        let reply = call(&app, "POST", &format!("/api/v1/orders/{}/cancel", order.order_id))
            .bearer(&token)
            .json(&json!({"reason": "too late"}))
            .send()
            .await;
        let body = reply.json();
        assert_eq!(
            (reply.status, rest_reason(&body).as_str()),
            (400, "ORDER_NOT_CANCELLABLE")
        );
        assert_eq!(
            rest_detail(&body, "google.rpc.PreconditionFailure")["violations"][0]["subject"],
            "commerce.v1.Order"
        );
    }
}

#[tokio::test]
async fn an_order_cancelled_on_request_says_cancellation_requested() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, NO_SAGA).await;
        let dave = app.customer("dave");
        let cart = cart_with(&app, &dave, &[("book", 1, "10.00")]).await;
        let order = create_order(&app, &dave, order_request(&cart.cart_id, "dave-1"))
            .await
            .unwrap();
        let cancel = CancelOrderRequest {
            order_id: order.order_id.clone(),
            reason: "changed my mind".into(),
        };
        let cancelled = app
            .orders()
            .cancel_order(authed(cancel, &dave))
            .await
            .unwrap()
            .into_inner()
            .order
            .unwrap();
        assert_eq!(cancelled.status(), OrderStatus::Cancelled);
        assert_eq!(
            cancelled.cancellation_reason_code(),
            ErrorReason::CancellationRequested
        );
        let path = format!("/api/v1/orders/{}", order.order_id);
        let body = get_until(&app, &dave, &path, |o| {
            o["order"]["status"] == "ORDER_STATUS_CANCELLED"
        })
        .await;
        assert_eq!(
            body["order"]["cancellation_reason_code"], "CANCELLATION_REQUESTED",
            "{backend:?}"
        );
        // An order that is not cancelled has no code.
        let cart = cart_with(&app, &dave, &[("pen", 1, "2.00")]).await;
        let open = create_order(&app, &dave, order_request(&cart.cart_id, "dave-2"))
            .await
            .unwrap();
        assert_eq!(open.cancellation_reason_code(), ErrorReason::Unspecified);
    }
}
