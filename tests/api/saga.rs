//! The fulfillment saga through the running service: orders placed over gRPC,
//! the embedded stubs reached over real gRPC, outcomes read from SagaAdmin,
//! the order's own stream and the stubs' ledgers.

use std::time::Duration;

use commerce::{
    domain::order::OrderStatus,
    proto::{
        commerce::v1::{CancelOrderRequest, SagaStatus, SagaStepStatus},
        inventory::v1::{GetStockRequest, ReservationStatus},
        payment::v1::AuthorizationStatus,
        shipping::v1::ShipmentStatus,
    },
};
use uuid::Uuid;

use crate::support::{
    app::{Backend, authed, spawn_app_with},
    orders::{order_request, place_order},
    saga::{OrderSpec, ledger, order_state, place, step_statuses, stubs, wait_saga},
};

#[tokio::test]
async fn an_order_is_fulfilled_to_confirmed_with_one_capture_and_keys_derived_from_the_clients_key() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, &[]).await;
        let order = place(&app, "alice", OrderSpec::default()).await;
        let done = wait_saga(&app, &order.saga_id, SagaStatus::Completed).await;
        assert!(done.past_pivot && done.current_step.is_empty(), "{done:#?}");
        let names: Vec<_> = done.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "authorize_payment",
                "reserve_inventory",
                "create_shipment",
                "capture_payment",
                "confirm_order"
            ]
        );
        for step in &done.steps {
            assert_eq!(step.status(), SagaStepStatus::Succeeded, "{step:?}");
            assert_eq!(
                step.idempotency_key,
                format!("{}/alice-order:{}", order.order_id, step.name)
            );
            assert_eq!((step.attempts, step.last_grpc_code.as_str()), (1, "OK"));
            assert!(step.started_at.is_some() && step.finished_at.is_some());
        }
        assert_eq!(
            order_state(&app, &order.order_id).await.0,
            OrderStatus::Confirmed,
            "{backend:?}"
        );

        let (auths, reservations, shipments) = ledger(&app, &order.order_id).await;
        assert_eq!(auths.len(), 1);
        assert_eq!(
            (auths[0].status(), auths[0].capture_count),
            (AuthorizationStatus::Captured, 1)
        );
        assert_eq!(auths[0].amount, "30.00");
        assert_eq!(reservations[0].status(), ReservationStatus::Reserved);
        assert_eq!(shipments[0].status(), ShipmentStatus::Created);
        let attempts = app
            .app
            .sagas
            .attempts(Uuid::parse_str(&done.saga_id).unwrap())
            .await
            .unwrap();
        assert_eq!(
            attempts.len(),
            5,
            "each step recorded before and after its one call"
        );
    }
}

#[tokio::test]
async fn each_business_refusal_compensates_exactly_what_was_done_and_cancels_the_order_with_the_reason() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, &[]).await;
        let declined = place(
            &app,
            "declined",
            OrderSpec {
                payment_method: "pm_card_declined",
                ..Default::default()
            },
        )
        .await;
        let out_of_stock = place(
            &app,
            "oos",
            OrderSpec {
                lines: &[("book", 1), ("oos-lamp", 1)],
                ..Default::default()
            },
        )
        .await;
        let unshippable = place(
            &app,
            "far",
            OrderSpec {
                country: "ZZ",
                ..Default::default()
            },
        )
        .await;
        let capture_refused = place(
            &app,
            "expired",
            OrderSpec {
                payment_method: "pm_capture_declined",
                ..Default::default()
            },
        )
        .await;

        let saga = wait_saga(&app, &declined.saga_id, SagaStatus::Compensated).await;
        assert!(
            saga.compensation_reason.contains("card declined"),
            "{}",
            saga.compensation_reason
        );
        assert_eq!(
            step_statuses(&saga),
            [
                ("authorize_payment".into(), SagaStepStatus::Refused),
                ("cancel_order".into(), SagaStepStatus::Succeeded)
            ]
        );
        let (state, reason) = order_state(&app, &declined.order_id).await;
        assert_eq!(state, OrderStatus::Cancelled);
        assert!(reason.unwrap().contains("card declined"));
        let (a, r, s) = ledger(&app, &declined.order_id).await;
        assert!(
            a.is_empty() && r.is_empty() && s.is_empty(),
            "{backend:?}: nothing was done"
        );

        let saga = wait_saga(&app, &out_of_stock.saga_id, SagaStatus::Compensated).await;
        assert!(
            saga.compensation_reason.contains("out of stock"),
            "{}",
            saga.compensation_reason
        );
        let (a, r, s) = ledger(&app, &out_of_stock.order_id).await;
        assert_eq!(
            (a[0].status(), a[0].capture_count, a[0].void_count),
            (AuthorizationStatus::Voided, 0, 1)
        );
        assert!(r.is_empty() && s.is_empty(), "{backend:?}");

        let saga = wait_saga(&app, &unshippable.saga_id, SagaStatus::Compensated).await;
        assert_eq!(
            step_statuses(&saga),
            [
                ("authorize_payment".into(), SagaStepStatus::Compensated),
                ("reserve_inventory".into(), SagaStepStatus::Compensated),
                ("create_shipment".into(), SagaStepStatus::Refused),
                ("release_inventory".into(), SagaStepStatus::Succeeded),
                ("void_payment".into(), SagaStepStatus::Succeeded),
                ("cancel_order".into(), SagaStepStatus::Succeeded),
            ]
        );
        let (a, r, s) = ledger(&app, &unshippable.order_id).await;
        assert_eq!(
            (a[0].status(), a[0].capture_count),
            (AuthorizationStatus::Voided, 0)
        );
        assert_eq!(r[0].status(), ReservationStatus::Released);
        assert!(s.is_empty());

        let saga = wait_saga(&app, &capture_refused.saga_id, SagaStatus::Compensated).await;
        assert!(!saga.past_pivot);
        let (a, r, s) = ledger(&app, &capture_refused.order_id).await;
        assert_eq!(
            (a[0].status(), a[0].capture_count),
            (AuthorizationStatus::Voided, 0)
        );
        assert_eq!(r[0].status(), ReservationStatus::Released);
        assert_eq!(
            s[0].status(),
            ShipmentStatus::Cancelled,
            "{backend:?}: all three undone"
        );

        // Released stock is back on hand: nothing is held for cancelled orders.
        let levels = stubs(&app)
            .inventory
            .get_stock(GetStockRequest {
                product_ids: vec!["book".into(), "pen".into()],
            })
            .await
            .unwrap()
            .into_inner()
            .levels;
        assert!(levels.iter().all(|l| l.reserved == 0), "{levels:?}");
    }
}

#[tokio::test]
async fn an_order_not_fulfilled_within_the_timeout_is_compensated() {
    for backend in Backend::all() {
        // 0.01 minutes = 600 ms; each sibling call takes 250 ms.
        let app = spawn_app_with(
            backend,
            &[("ORDER_TIMEOUT_MINUTES", "0.01"), ("STUB_LATENCY_MS", "250")],
        )
        .await;
        let order = place(&app, "slow", OrderSpec::default()).await;
        let saga = wait_saga(&app, &order.saga_id, SagaStatus::Compensated).await;
        assert_eq!(
            saga.compensation_reason,
            "order timed out before fulfillment completed"
        );
        assert!(!saga.past_pivot);
        let (a, _, _) = ledger(&app, &order.order_id).await;
        assert_eq!(
            (a[0].status(), a[0].capture_count),
            (AuthorizationStatus::Voided, 0),
            "{backend:?}"
        );
        let (state, reason) = order_state(&app, &order.order_id).await;
        assert_eq!(state, OrderStatus::Cancelled);
        assert_eq!(
            reason.as_deref(),
            Some("order timed out before fulfillment completed")
        );
    }
}

#[tokio::test]
async fn a_customer_cancel_before_capture_compensates_and_cancels_with_the_customers_reason() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, &[("STUB_LATENCY_MS", "150")]).await;
        let order = place(&app, "bob", OrderSpec::default()).await;
        let request = CancelOrderRequest {
            order_id: order.order_id.clone(),
            reason: "found it cheaper".into(),
        };
        app.orders()
            .cancel_order(authed(request, &app.customer("bob")))
            .await
            .unwrap();
        let saga = wait_saga(&app, &order.saga_id, SagaStatus::Compensated).await;
        assert_eq!(
            saga.compensation_reason,
            "cancelled by the customer: found it cheaper"
        );
        let (a, r, s) = ledger(&app, &order.order_id).await;
        assert!(
            a.iter()
                .all(|a| a.capture_count == 0 && a.status() == AuthorizationStatus::Voided)
        );
        assert!(r.iter().all(|r| r.status() == ReservationStatus::Released));
        assert!(
            s.iter().all(|s| s.status() == ShipmentStatus::Cancelled),
            "{backend:?}"
        );
        assert_eq!(order_state(&app, &order.order_id).await.0, OrderStatus::Cancelled);
    }
}

#[tokio::test]
async fn with_orchestration_disabled_orders_stay_pending_and_no_sibling_is_called() {
    let app = spawn_app_with(Backend::from_env(), &[("ENABLE_SAGA_ORCHESTRATION", "false")]).await;
    let token = app.customer("carol");
    let items = [("book", 1, "10.00")];
    let order = place_order(
        &app.channel,
        &token,
        &items,
        |cart_id| order_request(cart_id, "k"),
        &[],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(order_state(&app, &order.order_id).await.0, OrderStatus::Pending);
    let (a, r, s) = ledger(&app, &order.order_id).await;
    assert!(a.is_empty() && r.is_empty() && s.is_empty());
}
