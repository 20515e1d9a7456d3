//! OrderService CancelOrder and the order commands the saga sends, on a
//! running server: ownership, the pivot, concurrency with and without
//! optimistic locking, and an old-schema event taking new commands.

use commerce::{
    domain::order::{OrderCommand, OrderStatus},
    proto::commerce::v1::OrderStatus as PbStatus,
};
use tonic::Code;
use uuid::Uuid;

use crate::support::{
    app::{Backend, spawn_app_with},
    orders::{NO_SAGA, cancel, create_order, customer, filled_cart, order_request},
    store::{count, exec},
};

#[tokio::test]
async fn without_a_saga_cancel_order_cancels_at_once_for_the_owner_or_an_admin_and_not_after_capture() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, NO_SAGA).await;
        let (alice, bob) = (app.customer("alice"), app.customer("bob"));
        let order = create_order(&app, &alice, order_request(&filled_cart(&app, &alice).await, "k"))
            .await
            .unwrap();

        assert_eq!(
            cancel(&app, &bob, &order.order_id, "").await.unwrap_err().code(),
            Code::NotFound
        );
        assert_eq!(
            cancel(&app, &alice, "nope", "").await.unwrap_err().code(),
            Code::InvalidArgument
        );
        let unknown = Uuid::now_v7().to_string();
        assert_eq!(
            cancel(&app, &alice, &unknown, "").await.unwrap_err().code(),
            Code::NotFound
        );

        let cancelled = cancel(&app, &alice, &order.order_id, "changed my mind")
            .await
            .unwrap();
        assert_eq!(cancelled.status, PbStatus::Cancelled as i32, "{backend:?}");
        assert_eq!(
            (cancelled.cancellation_reason.as_str(), cancelled.version),
            ("changed my mind", 2)
        );
        // Cancelling again changes nothing and says so by the unchanged version.
        let again = cancel(&app, &app.admin(), &order.order_id, "").await.unwrap();
        assert_eq!((again.status, again.version), (cancelled.status, 2));

        // Past the pivot (capture), cancellation is refused.
        let order = create_order(
            &app,
            &alice,
            order_request(&filled_cart(&app, &alice).await, "k2"),
        )
        .await
        .unwrap();
        let id = Uuid::parse_str(&order.order_id).unwrap();
        for command in [
            OrderCommand::MarkPaymentAuthorized {
                authorization_id: "a".into(),
            },
            OrderCommand::MarkInventoryReserved {
                reservation_id: "r".into(),
            },
            OrderCommand::MarkShippingArranged {
                shipment_id: "s".into(),
                tracking_number: "t".into(),
            },
            OrderCommand::MarkPaymentCaptured {
                capture_id: "c".into(),
            },
        ] {
            app.app.orders.handle(id, command).await.unwrap();
        }
        let refused = cancel(&app, &alice, &order.order_id, "").await.unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        let confirmed = app.app.orders.handle(id, OrderCommand::Confirm).await.unwrap();
        assert_eq!((confirmed.status, confirmed.version), (OrderStatus::Confirmed, 6));
    }
}

#[tokio::test]
async fn with_a_saga_cancel_order_records_the_request_and_flags_the_saga_in_one_transaction() {
    for backend in Backend::all() {
        // Slow siblings: the saga must not reach the capture before the cancel.
        let app = spawn_app_with(backend, &[("STUB_LATENCY_MS", "150")]).await;
        let alice = app.customer("alice");
        let order = create_order(&app, &alice, order_request(&filled_cart(&app, &alice).await, "k"))
            .await
            .unwrap();
        let reply = cancel(&app, &alice, &order.order_id, "too slow").await;
        // The saga may already have moved the order on; before capture the
        // request is always accepted.
        let reply = reply.unwrap();
        assert!(reply.version >= 2, "{backend:?}");
        let stream = app
            .app
            .events
            .read_stream(Uuid::parse_str(&order.order_id).unwrap(), 1)
            .await
            .unwrap();
        assert!(stream.iter().any(|e| e.event_type == "CancellationRequested"));
        let db = &app.app.backends.db;
        assert_eq!(
            count(
                db,
                "SELECT COUNT(*) FROM sagas WHERE cancel_requested AND cancel_reason = 'too slow'"
            )
            .await,
            1,
            "{backend:?}"
        );
    }
}

#[tokio::test]
async fn a_pending_cancellation_is_reported_with_the_first_reason_over_grpc_and_rest() {
    // No saga worker in this replica: the cancellation stays requested, the order PENDING.
    let app = spawn_app_with(Backend::from_env(), &[("SAGA_WORKERS", "0")]).await;
    let alice = app.customer("alice");
    let order = create_order(&app, &alice, order_request(&filled_cart(&app, &alice).await, "c"))
        .await
        .unwrap();
    assert!(!order.cancellation_requested && order.cancellation_request_reason.is_empty());

    let first = cancel(&app, &alice, &order.order_id, "found it cheaper")
        .await
        .unwrap();
    assert_eq!(first.status, PbStatus::Pending as i32);
    assert!(first.cancellation_requested);
    assert_eq!(first.cancellation_request_reason, "found it cheaper");
    assert_eq!(first.cancellation_reason, "", "not cancelled yet");

    // A second request changes nothing and says which reason stands.
    let second = cancel(&app, &alice, &order.order_id, "changed my mind")
        .await
        .unwrap();
    assert_eq!(second.version, first.version);
    assert!(second.cancellation_requested);
    assert_eq!(second.cancellation_request_reason, "found it cheaper");

    let rest = crate::support::rest::call(&app, "POST", &format!("/api/v1/orders/{}/cancel", order.order_id))
        .bearer(&alice)
        .json(&serde_json::json!({"reason": "third time"}))
        .send()
        .await;
    assert_eq!(rest.status, 200, "{}", rest.text());
    let json = rest.json();
    assert_eq!(json["order"]["status"], "ORDER_STATUS_PENDING");
    assert_eq!(json["order"]["cancellation_requested"], true);
    assert_eq!(json["order"]["cancellation_request_reason"], "found it cheaper");
}

#[tokio::test]
async fn concurrent_commands_on_one_order_never_lose_or_duplicate_an_event_with_locking_on_or_off() {
    for (backend, locking) in Backend::all()
        .into_iter()
        .flat_map(|b| [(b, "true"), (b, "false")])
    {
        let app = spawn_app_with(
            backend,
            &[
                ("ENABLE_SAGA_ORCHESTRATION", "false"),
                ("ENABLE_OPTIMISTIC_LOCKING", locking),
            ],
        )
        .await;
        let alice = app.customer("alice");
        let order = create_order(&app, &alice, order_request(&filled_cart(&app, &alice).await, "k"))
            .await
            .unwrap();
        let id = Uuid::parse_str(&order.order_id).unwrap();
        // Twenty racing writers: half cancel, half record the same authorization.
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let orders = app.app.orders.clone();
                tokio::spawn(async move {
                    let command = if i % 2 == 0 {
                        OrderCommand::Cancel {
                            reason: "race".into(),
                            code: commerce::domain::reason::ErrorReason::CancellationRequested,
                        }
                    } else {
                        OrderCommand::MarkPaymentAuthorized {
                            authorization_id: "auth".into(),
                        }
                    };
                    orders.handle(id, command).await
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.unwrap());
        }
        let stream = app.app.events.read_stream(id, 1).await.unwrap();
        let versions: Vec<u64> = stream.iter().map(|e| e.version).collect();
        assert_eq!(versions, (1..=stream.len() as u64).collect::<Vec<_>>(), "gapless");
        let types: Vec<&str> = stream.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(
            types.iter().filter(|t| **t == "OrderCancelled").count(),
            1,
            "{backend:?} {locking}: {types:?}"
        );
        assert!(types.iter().filter(|t| **t == "PaymentAuthorized").count() <= 1);
        for outcome in outcomes {
            match outcome {
                Ok(_) => {}
                // Authorizing a cancelled order is refused; with locking on a
                // writer may run out of attempts (ABORTED), never silently.
                Err(commerce::error::AppError::FailedPrecondition { .. }) => {}
                Err(commerce::error::AppError::Aborted { .. }) if locking == "true" => {}
                Err(other) => panic!("{backend:?} locking={locking}: {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn an_order_created_v1_event_stored_by_raw_sql_reads_as_the_current_schema() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, NO_SAGA).await;
        let id = Uuid::now_v7();
        let v1 = format!(
            r#"{{"order_id":"{id}","customer_id":"alice","cart_id":"{cart}","currency":"USD",
               "items":[{{"product_id":"p","product_name":"P","quantity":2,
                 "unit_price":{{"amount":"1.50","currency":"USD"}},"line_total":{{"amount":"3.00","currency":"USD"}}}}],
               "total":{{"amount":"3.00","currency":"USD"}},
               "shipping_address":{{"recipient_name":"A","line1":"L","city":"C","postal_code":"P","country":"US"}},
               "payment_method":"pm_legacy"}}"#,
            cart = Uuid::nil()
        );
        exec(
            &app.app.backends.db,
            "INSERT INTO events (event_id, stream_id, stream_type, version, event_type, schema_version, payload) \
             VALUES ($1::uuid, $2::uuid, 'order', 1, 'OrderCreated', 1, $3::jsonb)",
            "INSERT INTO events (event_id, stream_id, stream_type, version, event_type, schema_version, payload) \
             VALUES (?, ?, 'order', 1, 'OrderCreated', 1, ?)",
            &[&Uuid::now_v7().to_string(), &id.to_string(), &v1],
        )
        .await;
        let view = app.app.orders.get(&customer("alice"), id).await.unwrap();
        assert_eq!(
            (view.payment_method.as_str(), view.total.to_string()),
            ("pm_legacy", "3.00".into())
        );
        assert_eq!(view.shipping_address.country, "US", "{backend:?}");
        // And the old order takes new commands.
        let cancelled = cancel(&app, &app.customer("alice"), &id.to_string(), "")
            .await
            .unwrap();
        assert_eq!(
            (cancelled.status, cancelled.version),
            (PbStatus::Cancelled as i32, 2)
        );
    }
}
