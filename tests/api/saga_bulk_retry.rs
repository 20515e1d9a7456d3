//! BulkRetrySagas on a running service: the dry run and its token, batches
//! with a continuation, one audited operator action per saga, a second run
//! that retries nothing twice, and the refusals (no reason, a crafted or
//! foreign token, a non-admin), over gRPC and REST on both backends.

use chrono::Utc;
use commerce::{
    app::sagas::RetryInput,
    auth::{Principal, Role},
    proto::commerce::v1::{
        BulkRetryOutcome, BulkRetrySagasRequest, BulkRetrySagasResponse, RetrySagaRequest, SagaFilter,
        SagaStatus,
    },
};
use serde_json::json;
use tonic::Code;

use crate::support::{
    app::{Backend, TestApp, authed, spawn_app_with},
    orders::violated_fields,
    rest::call,
    saga::{OrderSpec, place, saga, wait_saga},
};

async fn bulk(
    app: &TestApp,
    request: BulkRetrySagasRequest,
) -> Result<BulkRetrySagasResponse, tonic::Status> {
    Ok(app
        .sagas()
        .bulk_retry_sagas(authed(request, &app.admin()))
        .await?
        .into_inner())
}

/// Sagas FAILED at their first attempt that a retry completes: `pm_transient_1`
/// fails Authorize once, `pm_capture_transient_1` fails Capture once.
async fn failed_saga(app: &TestApp, customer: &str, payment_method: &str) -> String {
    let spec = OrderSpec {
        payment_method,
        ..Default::default()
    };
    let order = place(app, customer, spec).await;
    wait_saga(app, &order.saga_id, SagaStatus::Failed).await;
    order.saga_id
}

#[tokio::test]
async fn a_bulk_retry_dry_runs_then_retries_each_matched_saga_once_in_batches() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, &[("SAGA_RETRY_ATTEMPTS", "0")]).await;
        let mut failed = Vec::new();
        for customer in ["ann", "bob", "cat"] {
            failed.push(failed_saga(&app, customer, "pm_transient_1").await);
        }
        failed.push(failed_saga(&app, "dan", "pm_capture_transient_1").await);
        let declined = place(
            &app,
            "eve",
            OrderSpec {
                payment_method: "pm_card_declined",
                ..Default::default()
            },
        )
        .await;
        wait_saga(&app, &declined.saga_id, SagaStatus::Compensated).await;

        let reason = "payment provider recovered (INC-42)";
        let dry = bulk(&app, BulkRetrySagasRequest::default()).await.unwrap();
        assert!(dry.dry_run);
        assert_eq!(dry.matched, 4, "{backend:?} {dry:?}");
        let steps: Vec<(&str, i64)> = dry.steps.iter().map(|s| (s.step.as_str(), s.count)).collect();
        assert_eq!(steps, [("authorize_payment", 3), ("capture_payment", 1)]);
        assert!(!dry.confirmation_token.is_empty());
        assert!(dry.expires_at.is_some() && dry.snapshot_at.is_some());
        // The dry run changed nothing.
        for id in &failed {
            assert_eq!(saga(&app, id).await.status(), SagaStatus::Failed);
        }

        // Refusals: no reason, a crafted token, a token of another filter, a customer.
        let token = dry.confirmation_token.clone();
        let act = |page_token: String| BulkRetrySagasRequest {
            reason: reason.into(),
            confirmation_token: token.clone(),
            page_token,
            batch_size: 3,
            ..Default::default()
        };
        let no_reason = bulk(
            &app,
            BulkRetrySagasRequest {
                reason: String::new(),
                ..act(String::new())
            },
        )
        .await
        .unwrap_err();
        assert_eq!(violated_fields(&no_reason), ["reason"]);
        let crafted = bulk(
            &app,
            BulkRetrySagasRequest {
                confirmation_token: "eyJmaWx0ZXIiOiJ4Iiwic25hcHNob3QiOjAsImV4cGlyZXMiOjB9".into(),
                ..act(String::new())
            },
        )
        .await
        .unwrap_err();
        assert_eq!(violated_fields(&crafted), ["confirmation_token"]);
        let foreign = bulk(
            &app,
            BulkRetrySagasRequest {
                filter: Some(SagaFilter {
                    current_step: "capture_payment".into(),
                    ..Default::default()
                }),
                ..act(String::new())
            },
        )
        .await
        .unwrap_err();
        assert_eq!(violated_fields(&foreign), ["confirmation_token"]);
        let running = bulk(
            &app,
            BulkRetrySagasRequest {
                filter: Some(SagaFilter {
                    status: SagaStatus::Running.into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
        assert_eq!(violated_fields(&running), ["filter.status"]);
        let customer = app
            .sagas()
            .bulk_retry_sagas(authed(act(String::new()), &app.customer("ann")))
            .await
            .unwrap_err();
        assert_eq!(customer.code(), Code::PermissionDenied);
        for id in &failed {
            assert_eq!(
                saga(&app, id).await.status(),
                SagaStatus::Failed,
                "refusals act on nothing"
            );
        }

        // Two batches: three, then one, then done.
        let first = bulk(&app, act(String::new())).await.unwrap();
        assert!(!first.dry_run);
        assert_eq!(
            (first.processed, first.succeeded, first.skipped),
            (3, 3, 0),
            "{first:?}"
        );
        assert!(!first.next_page_token.is_empty());
        let second = bulk(&app, act(first.next_page_token.clone())).await.unwrap();
        assert_eq!(
            (second.processed, second.succeeded, second.skipped),
            (1, 1, 0),
            "{second:?}"
        );
        assert!(second.next_page_token.is_empty());
        let mut acted: Vec<String> = first
            .results
            .iter()
            .chain(&second.results)
            .inspect(|r| assert_eq!(r.outcome(), BulkRetryOutcome::Retried))
            .map(|r| r.saga_id.clone())
            .collect();
        acted.sort();
        let mut expected = failed.clone();
        expected.sort();
        assert_eq!(acted, expected, "every matched saga once, the declined one never");

        // Each saga: completed, one operator action with the reason, one audit event.
        for id in &failed {
            let done = wait_saga(&app, id, SagaStatus::Completed).await;
            let actions: Vec<(&str, &str, &str)> = done
                .operator_actions
                .iter()
                .map(|a| (a.action.as_str(), a.operator.as_str(), a.reason.as_str()))
                .collect();
            assert_eq!(actions, [("retry", "admin-1", reason)], "{backend:?}");
            let audit = app.app.events.read_stream(id.parse().unwrap(), 1).await.unwrap();
            let types: Vec<&str> = audit.iter().map(|e| e.event_type.as_str()).collect();
            assert_eq!(types, ["SagaStepRetried"]);
        }

        // The same token again retries nothing: every saga changed since its snapshot.
        let again = bulk(&app, act(String::new())).await.unwrap();
        assert_eq!((again.processed, again.succeeded), (0, 0), "{again:?}");
        for id in &failed {
            assert_eq!(saga(&app, id).await.operator_actions.len(), 1);
        }
        let declined_saga = saga(&app, &declined.saga_id).await;
        assert!(declined_saga.operator_actions.is_empty());
    }
}

#[tokio::test]
async fn a_bulk_retry_leaves_out_sagas_changed_since_its_dry_run_and_skips_a_stale_one() {
    let app = spawn_app_with(Backend::from_env(), &[("SAGA_RETRY_ATTEMPTS", "0")]).await;
    let ann = failed_saga(&app, "ann", "pm_transient_1").await;
    let bob = failed_saga(&app, "bob", "pm_transient_1").await;
    let admin = app.admin();

    // Over REST: the dry run, then an operator retries bob by hand.
    let dry = call(&app, "POST", "/api/v1/admin/sagas/bulk-retry")
        .bearer(&admin)
        .json(&json!({"filter": {"current_step": "authorize_payment"}}))
        .send()
        .await;
    assert_eq!(dry.status, 200, "{}", dry.text());
    let dry = dry.json();
    assert_eq!(
        (dry["dry_run"].as_bool(), dry["matched"].as_str()),
        (Some(true), Some("2")),
        "{dry}"
    );
    let token = dry["confirmation_token"].as_str().unwrap().to_string();
    app.sagas()
        .retry_saga(authed(
            RetrySagaRequest {
                saga_id: bob.clone(),
                reason: "by hand".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap();

    let acted = call(&app, "POST", "/api/v1/admin/sagas/bulk-retry")
        .bearer(&admin)
        .json(&json!({
            "filter": {"current_step": "authorize_payment"},
            "reason": "provider back",
            "confirmation_token": token,
        }))
        .send()
        .await;
    assert_eq!(acted.status, 200, "{}", acted.text());
    let acted = acted.json();
    assert_eq!(acted["processed"], 1, "{acted}");
    assert_eq!(acted["results"][0]["saga_id"], ann.as_str());
    assert_eq!(acted["results"][0]["outcome"], "BULK_RETRY_OUTCOME_RETRIED");
    assert_eq!(acted["results"][0]["step"], "authorize_payment");
    for id in [&ann, &bob] {
        let done = wait_saga(&app, id, SagaStatus::Completed).await;
        assert_eq!(done.operator_actions.len(), 1, "bob was retried once, by hand");
    }

    // The fence a batch acts through: a retry at a version the saga left is
    // refused as a conflict (the batch reports it skipped) and changes nothing.
    let carl = failed_saga(&app, "carl", "pm_transient_1").await;
    let admin_principal = Principal {
        subject: "admin-1".into(),
        roles: vec![Role::Admin],
    };
    let stale = app
        .app
        .sagas
        .retry(
            &admin_principal,
            RetryInput {
                saga_id: carl.clone(),
                reason: "stale".into(),
                expected_updated_at: Some(Utc::now() - chrono::Duration::hours(1)),
                ..RetryInput::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(stale, commerce::error::AppError::Aborted { .. }),
        "{stale:?}"
    );
    let carl_saga = saga(&app, &carl).await;
    assert_eq!(carl_saga.status(), SagaStatus::Failed);
    assert!(carl_saga.operator_actions.is_empty());
}
