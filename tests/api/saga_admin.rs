//! SagaAdmin on a running service: failed sagas waiting for an operator,
//! RetrySaga (dry run, retry, skip), the pivot, listing, and the admin role.

use std::time::Duration;

use commerce::{
    domain::order::OrderStatus,
    proto::{
        commerce::v1::{
            CancelOrderRequest, GetOrderHistoryRequest, GetSagaRequest, ListSagasRequest, RetrySagaRequest,
            RetrySagaResponse, SagaStatus, SagaStepStatus, order_history_entry::Entry,
        },
        payment::v1::AuthorizationStatus,
    },
};
use tonic::Code;

use crate::support::{
    app::{Backend, TestApp, authed, spawn_app_with},
    saga::{OrderSpec, ledger, order_state, place, saga, wait_saga},
};

/// The saga's own stream: its operator actions as events.
async fn audit_events(app: &TestApp, saga_id: &str) -> Vec<commerce::store::event_store::StoredEvent> {
    app.app
        .events
        .read_stream(saga_id.parse().unwrap(), 1)
        .await
        .unwrap()
}

async fn retry(app: &TestApp, request: RetrySagaRequest) -> Result<RetrySagaResponse, tonic::Status> {
    Ok(app
        .sagas()
        .retry_saga(authed(request, &app.admin()))
        .await?
        .into_inner())
}

#[tokio::test]
async fn transient_failures_are_retried_then_the_saga_fails_until_retry_saga_completes_it() {
    for backend in Backend::all() {
        // pm_transient_3: the first three Authorize attempts fail; 1 try + 2 retries = 3.
        let app = spawn_app_with(backend, &[("SAGA_RETRY_ATTEMPTS", "2")]).await;
        let order = place(
            &app,
            "dave",
            OrderSpec {
                payment_method: "pm_transient_3",
                ..Default::default()
            },
        )
        .await;
        let failed = wait_saga(&app, &order.saga_id, SagaStatus::Failed).await;
        let step = &failed.steps[0];
        assert_eq!(
            (step.name.as_str(), step.status(), step.attempts),
            ("authorize_payment", SagaStepStatus::Failed, 3)
        );
        assert_eq!(step.last_grpc_code, "UNAVAILABLE");
        // duration_ms is the time spent in calls: the sum of the step's attempts' latencies,
        // never the waits between them, which finished_at - started_at includes (two backoff
        // waits of at least 20 and 40 ms here).
        let history = app
            .orders()
            .get_order_history(authed(
                GetOrderHistoryRequest {
                    order_id: order.order_id.clone(),
                },
                &app.customer("dave"),
            ))
            .await
            .unwrap()
            .into_inner();
        let latencies: Vec<i64> = history
            .entries
            .iter()
            .filter_map(|e| match &e.entry {
                Some(Entry::StepAttempt(a)) if a.step == "authorize_payment" => Some(a.latency_ms),
                _ => None,
            })
            .collect();
        assert_eq!(latencies.len(), 3, "{latencies:?}");
        assert_eq!(step.duration_ms, latencies.iter().sum::<i64>());
        let wall = |t: &Option<commerce::proto::Timestamp>| t.unwrap().to_datetime().unwrap();
        let elapsed = (wall(&step.finished_at) - wall(&step.started_at)).num_milliseconds();
        assert!(
            elapsed >= step.duration_ms + 60,
            "{elapsed} ms from start to end, {} in calls",
            step.duration_ms
        );
        assert!(
            failed.last_error.contains("authorize_payment"),
            "{}",
            failed.last_error
        );
        assert_eq!(
            order_state(&app, &order.order_id).await.0,
            OrderStatus::Pending,
            "the order stays as it is"
        );

        let dry = retry(
            &app,
            RetrySagaRequest {
                saga_id: order.saga_id.clone(),
                dry_run: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let plan: Vec<_> = dry
            .plan
            .iter()
            .map(|p| (p.step.as_str(), p.idempotency_key.clone(), p.compensation))
            .collect();
        let key = |step: &str| format!("{}/dave-order:{step}", order.order_id);
        assert_eq!(
            plan,
            [
                ("authorize_payment", key("authorize_payment"), false),
                ("reserve_inventory", key("reserve_inventory"), false),
                ("create_shipment", key("create_shipment"), false),
                ("capture_payment", key("capture_payment"), false),
                ("confirm_order", key("confirm_order"), false),
            ]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            saga(&app, &order.saga_id).await.status(),
            SagaStatus::Failed,
            "a dry run changes nothing"
        );

        let retried = retry(
            &app,
            RetrySagaRequest {
                saga_id: order.saga_id.clone(),
                reason: "payment provider recovered".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(retried.plan.len(), 5);
        let done = wait_saga(&app, &order.saga_id, SagaStatus::Completed).await;
        assert_eq!(
            done.steps[0].attempts, 4,
            "{backend:?}: the same step, the same key, once more"
        );
        assert_eq!(done.operator_actions.len(), 1);
        let action = &done.operator_actions[0];
        assert_eq!(
            (
                action.action.as_str(),
                action.step.as_str(),
                action.operator.as_str(),
                action.reason.as_str()
            ),
            (
                "retry",
                "authorize_payment",
                "admin-1",
                "payment provider recovered"
            )
        );
        assert_eq!(order_state(&app, &order.order_id).await.0, OrderStatus::Confirmed);
        let (auths, _, _) = ledger(&app, &order.order_id).await;
        assert_eq!((auths.len(), auths[0].capture_count), (1, 1));
        // The action is an event too, on the saga's own stream.
        let audit = audit_events(&app, &done.saga_id).await;
        assert_eq!(audit.len(), 1);
        assert_eq!(
            (audit[0].event_type.as_str(), audit[0].stream_type.as_str()),
            ("SagaStepRetried", "saga")
        );
        assert_eq!(audit[0].payload["operator"], "admin-1");
        assert_eq!(audit[0].payload["step"], "authorize_payment");

        let again = retry(
            &app,
            RetrySagaRequest {
                saga_id: order.saga_id.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
        assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    }
}

#[tokio::test]
async fn a_compensation_that_keeps_failing_waits_for_an_operator_who_may_skip_it_with_a_reason() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, &[("SAGA_COMPENSATION_RETRY_ATTEMPTS", "1")]).await;
        // Out of stock: compensation voids the payment, whose Void fails 5 times.
        let order = place(
            &app,
            "erin",
            OrderSpec {
                payment_method: "pm_void_transient_5",
                lines: &[("oos-lamp", 1)],
                ..Default::default()
            },
        )
        .await;
        let stuck = wait_saga(&app, &order.saga_id, SagaStatus::CompensationFailed).await;
        assert_eq!(stuck.current_step, "void_payment");
        let void = stuck.steps.iter().find(|s| s.name == "void_payment").unwrap();
        assert_eq!((void.status(), void.attempts), (SagaStepStatus::Failed, 2));
        assert_eq!(
            order_state(&app, &order.order_id).await.0,
            OrderStatus::PaymentAuthorized,
            "not cancelled yet"
        );

        let no_reason = retry(
            &app,
            RetrySagaRequest {
                saga_id: order.saga_id.clone(),
                skip_failed_step: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
        assert_eq!(no_reason.code(), Code::InvalidArgument);
        let dry = retry(
            &app,
            RetrySagaRequest {
                saga_id: order.saga_id.clone(),
                skip_failed_step: true,
                dry_run: true,
                reason: "voided by hand in the provider's console".into(),
            },
        )
        .await
        .unwrap();
        assert_eq!(
            dry.plan
                .iter()
                .map(|p| (p.step.as_str(), p.compensation))
                .collect::<Vec<_>>(),
            [("cancel_order", true)]
        );

        retry(
            &app,
            RetrySagaRequest {
                saga_id: order.saga_id.clone(),
                skip_failed_step: true,
                reason: "voided by hand in the provider's console".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let done = wait_saga(&app, &order.saga_id, SagaStatus::Compensated).await;
        let void = done.steps.iter().find(|s| s.name == "void_payment").unwrap();
        assert_eq!(void.status(), SagaStepStatus::Skipped);
        assert_eq!(done.operator_actions[0].action, "skip");
        let audit = audit_events(&app, &done.saga_id).await;
        assert_eq!(audit[0].event_type, "SagaStepSkipped");
        assert_eq!(
            audit[0].payload["reason"],
            "voided by hand in the provider's console"
        );
        assert_eq!(
            order_state(&app, &order.order_id).await.0,
            OrderStatus::Cancelled,
            "{backend:?}"
        );
        let (auths, _, _) = ledger(&app, &order.order_id).await;
        assert_eq!(
            auths[0].status(),
            AuthorizationStatus::Authorized,
            "skipped: left to the operator"
        );
    }
}

#[tokio::test]
async fn once_capture_may_have_happened_a_saga_only_retries_forward_even_when_the_customer_cancels() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, &[("SAGA_RETRY_ATTEMPTS", "1")]).await;
        let order = place(
            &app,
            "frank",
            OrderSpec {
                payment_method: "pm_capture_transient_2",
                ..Default::default()
            },
        )
        .await;
        let failed = wait_saga(&app, &order.saga_id, SagaStatus::Failed).await;
        assert_eq!(failed.current_step, "capture_payment");
        assert!(!failed.past_pivot, "the capture has not succeeded yet");
        let skip = retry(
            &app,
            RetrySagaRequest {
                saga_id: order.saga_id.clone(),
                skip_failed_step: true,
                reason: "x".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
        assert_eq!(
            skip.code(),
            Code::FailedPrecondition,
            "forward steps are not skipped"
        );

        let cancel = CancelOrderRequest {
            order_id: order.order_id.clone(),
            reason: "too late".into(),
        };
        app.orders()
            .cancel_order(authed(cancel, &app.customer("frank")))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let still = saga(&app, &order.saga_id).await;
        assert_eq!(
            still.status(),
            SagaStatus::Failed,
            "{backend:?}: no compensation once capture went out"
        );
        assert!(still.steps.iter().all(|s| !s.compensation));

        retry(
            &app,
            RetrySagaRequest {
                saga_id: order.saga_id.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let done = wait_saga(&app, &order.saga_id, SagaStatus::Completed).await;
        assert!(done.past_pivot);
        assert_eq!(order_state(&app, &order.order_id).await.0, OrderStatus::Confirmed);
        let (auths, _, _) = ledger(&app, &order.order_id).await;
        assert_eq!(auths[0].capture_count, 1);
    }
}

#[tokio::test]
async fn sagas_are_listed_newest_first_by_status_in_pages_and_only_for_admins() {
    let app = spawn_app_with(Backend::from_env(), &[]).await;
    let mut orders = Vec::new();
    for customer in ["g1", "g2", "g3"] {
        orders.push(place(&app, customer, OrderSpec::default()).await);
    }
    let declined = place(
        &app,
        "g4",
        OrderSpec {
            payment_method: "pm_card_declined",
            ..Default::default()
        },
    )
    .await;
    for order in &orders {
        wait_saga(&app, &order.saga_id, SagaStatus::Completed).await;
    }
    wait_saga(&app, &declined.saga_id, SagaStatus::Compensated).await;

    let admin = app.admin();
    let list = |status: SagaStatus, page_size: i32, page_token: String| {
        let mut client = app.sagas();
        let request = authed(
            ListSagasRequest {
                status: status.into(),
                page_size,
                page_token,
                ..Default::default()
            },
            &admin,
        );
        async move { client.list_sagas(request).await }
    };
    let first = list(SagaStatus::Unspecified, 3, String::new())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.sagas.len(), 3);
    assert_eq!(first.sagas[0].saga_id, declined.saga_id, "newest first");
    let second = list(SagaStatus::Unspecified, 3, first.next_page_token)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.sagas.len(), 1);
    assert!(second.next_page_token.is_empty());
    assert_eq!(second.sagas[0].saga_id, orders[0].saga_id);
    let compensated = list(SagaStatus::Compensated, 0, String::new())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(compensated.sagas.len(), 1);
    assert_eq!(compensated.sagas[0].order_id, declined.order_id);
    let bad = list(SagaStatus::Unspecified, 101, String::new())
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let bad = list(SagaStatus::Unspecified, 0, "garbage".into())
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    let customer = app.customer("g1");
    let request = GetSagaRequest {
        saga_id: orders[0].saga_id.clone(),
    };
    let denied = app
        .sagas()
        .get_saga(authed(request, &customer))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let anonymous = app
        .sagas()
        .list_sagas(ListSagasRequest::default())
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let request = GetSagaRequest {
        saga_id: "not-a-uuid".into(),
    };
    let invalid = app.sagas().get_saga(authed(request, &admin)).await.unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    let request = GetSagaRequest {
        saga_id: uuid::Uuid::new_v4().to_string(),
    };
    let missing = app.sagas().get_saga(authed(request, &admin)).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}
