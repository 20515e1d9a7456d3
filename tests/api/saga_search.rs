//! Saga search on a running service: ListSagas' filters (status, current
//! step, failure reason code, customer, order, created/updated ranges) with
//! keyset paging, CountSagas, and the refusals of bad filters, over gRPC and
//! REST on both backends.

use std::collections::BTreeSet;

use commerce::proto::{
    Timestamp,
    commerce::v1::{CountSagasRequest, ErrorReason, ListSagasRequest, ListSagasResponse, Saga, SagaStatus},
};
use tonic::Code;

use crate::support::{
    app::{Backend, TestApp, authed, spawn_app_with},
    orders::violated_fields,
    rest::call,
    saga::{OrderSpec, place, saga, wait_saga},
};

async fn list(app: &TestApp, request: ListSagasRequest) -> Result<ListSagasResponse, tonic::Status> {
    Ok(app
        .sagas()
        .list_sagas(authed(request, &app.admin()))
        .await?
        .into_inner())
}

/// The ids a filter matches (one page of up to 100).
async fn ids(app: &TestApp, request: ListSagasRequest) -> BTreeSet<String> {
    let page = list(
        app,
        ListSagasRequest {
            page_size: 100,
            ..request
        },
    )
    .await
    .unwrap();
    page.sagas.into_iter().map(|s| s.saga_id).collect()
}

fn set(sagas: &[&Saga]) -> BTreeSet<String> {
    sagas.iter().map(|s| s.saga_id.clone()).collect()
}

/// Five sagas that end differently: two FAILED (at authorize, at capture),
/// one COMPENSATED (declined), one COMPLETED, one COMPENSATED (unshippable).
async fn five_sagas(app: &TestApp) -> Vec<Saga> {
    let specs = [
        ("ann", "pm_transient_9", "US", SagaStatus::Failed),
        ("bob", "pm_card_declined", "US", SagaStatus::Compensated),
        ("cat", "pm_card_visa", "US", SagaStatus::Completed),
        ("dan", "pm_capture_transient_9", "US", SagaStatus::Failed),
        ("eve", "pm_card_visa", "ZZ", SagaStatus::Compensated),
    ];
    let mut sagas = Vec::new();
    for (customer, payment_method, country, status) in specs {
        let spec = OrderSpec {
            payment_method,
            country,
            ..Default::default()
        };
        let order = place(app, customer, spec).await;
        sagas.push(wait_saga(app, &order.saga_id, status).await);
    }
    sagas
}

#[tokio::test]
async fn sagas_are_found_by_each_filter_paged_by_keyset_and_counted_per_status() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, &[("SAGA_RETRY_ATTEMPTS", "0")]).await;
        let all = five_sagas(&app).await;
        let [ann, bob, cat, dan, eve] = [&all[0], &all[1], &all[2], &all[3], &all[4]];

        // What the saga records about itself.
        let codes: Vec<ErrorReason> = all.iter().map(|s| s.failure_reason_code()).collect();
        assert_eq!(
            codes,
            [
                ErrorReason::DependencyUnavailable,
                ErrorReason::PaymentDeclined,
                ErrorReason::Unspecified,
                ErrorReason::DependencyUnavailable,
                ErrorReason::AddressUnshippable,
            ],
            "{backend:?}"
        );
        assert_eq!(dan.current_step, "capture_payment");
        assert_eq!(ann.customer_id, "ann");

        let by = |request: ListSagasRequest| ids(&app, request);
        assert_eq!(
            by(ListSagasRequest {
                status: SagaStatus::Failed.into(),
                ..Default::default()
            })
            .await,
            set(&[ann, dan])
        );
        assert_eq!(
            by(ListSagasRequest {
                current_step: "capture_payment".into(),
                ..Default::default()
            })
            .await,
            set(&[dan])
        );
        assert_eq!(
            by(ListSagasRequest {
                failure_reason_code: ErrorReason::DependencyUnavailable.into(),
                ..Default::default()
            })
            .await,
            set(&[ann, dan])
        );
        assert_eq!(
            by(ListSagasRequest {
                failure_reason_code: ErrorReason::PaymentDeclined.into(),
                status: SagaStatus::Compensated.into(),
                ..Default::default()
            })
            .await,
            set(&[bob])
        );
        assert_eq!(
            by(ListSagasRequest {
                customer_id: "cat".into(),
                ..Default::default()
            })
            .await,
            set(&[cat])
        );
        assert_eq!(
            by(ListSagasRequest {
                order_id: eve.order_id.clone(),
                ..Default::default()
            })
            .await,
            set(&[eve])
        );
        // Half-open ranges: [bob's creation, dan's creation) holds bob and cat.
        assert_eq!(
            by(ListSagasRequest {
                created_after: bob.created_at,
                created_before: dan.created_at,
                ..Default::default()
            })
            .await,
            set(&[bob, cat])
        );
        // Updated ranges follow the sagas' own updated_at (read back, as
        // workers may still touch a finished saga's row once).
        let now: Vec<Saga> = futures::future::join_all(all.iter().map(|s| saga(&app, &s.saga_id))).await;
        let latest = now.iter().max_by_key(|s| ts(&s.updated_at)).unwrap();
        assert_eq!(
            by(ListSagasRequest {
                updated_after: latest.updated_at,
                ..Default::default()
            })
            .await,
            set(&[latest])
        );
        let others: Vec<&Saga> = now.iter().filter(|s| s.saga_id != latest.saga_id).collect();
        assert_eq!(
            by(ListSagasRequest {
                updated_before: latest.updated_at,
                ..Default::default()
            })
            .await,
            set(&others)
        );

        // Keyset pages of two: newest first, every saga once.
        let mut paged = Vec::new();
        let mut token = String::new();
        loop {
            let page = list(
                &app,
                ListSagasRequest {
                    page_size: 2,
                    page_token: token,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            assert!(page.sagas.len() <= 2);
            paged.extend(page.sagas.into_iter().map(|s| s.saga_id));
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        let newest_first: Vec<String> = all.iter().rev().map(|s| s.saga_id.clone()).collect();
        assert_eq!(paged, newest_first, "{backend:?}");

        // Counts per status, every status listed, under the other filters.
        let counts = app
            .sagas()
            .count_sagas(authed(CountSagasRequest::default(), &app.admin()))
            .await
            .unwrap()
            .into_inner();
        let count = |status: SagaStatus| {
            counts
                .counts
                .iter()
                .find(|c| c.status() == status)
                .map(|c| c.count)
        };
        assert_eq!(counts.counts.len(), 6);
        assert_eq!(
            [
                count(SagaStatus::Failed),
                count(SagaStatus::Compensated),
                count(SagaStatus::Completed),
                count(SagaStatus::Running),
            ],
            [Some(2), Some(2), Some(1), Some(0)]
        );
        assert_eq!(counts.total, 5);
        let dans = app
            .sagas()
            .count_sagas(authed(
                CountSagasRequest {
                    customer_id: "dan".into(),
                    ..Default::default()
                },
                &app.admin(),
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(dans.total, 1);

        // Bad input: every bad filter named at once; a crafted page token.
        let bad = list(
            &app,
            ListSagasRequest {
                current_step: "teleport".into(),
                failure_reason_code: ErrorReason::CartEmpty.into(),
                order_id: "order-1".into(),
                created_after: dan.created_at,
                created_before: bob.created_at,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
        assert_eq!(
            violated_fields(&bad),
            [
                "current_step",
                "failure_reason_code",
                "order_id",
                "created_before"
            ]
        );
        let crafted = list(
            &app,
            ListSagasRequest {
                page_token: "bm90LWEtdG9rZW4".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
        assert_eq!(violated_fields(&crafted), ["page_token"]);
        let customer = app
            .sagas()
            .count_sagas(authed(CountSagasRequest::default(), &app.customer("ann")))
            .await
            .unwrap_err();
        assert_eq!(customer.code(), Code::PermissionDenied);

        // The same over REST: query parameters, enum names and RFC 3339 times.
        let admin = app.admin();
        let path = format!(
            "/api/v1/admin/sagas?failure_reason_code=DEPENDENCY_UNAVAILABLE&current_step=authorize_payment\
             &created_after={}",
            rfc3339(&ann.created_at)
        );
        let found = call(&app, "GET", &path).bearer(&admin).send().await;
        assert_eq!(found.status, 200, "{}", found.text());
        let found = found.json();
        assert_eq!(found["sagas"].as_array().unwrap().len(), 1, "{found}");
        assert_eq!(found["sagas"][0]["saga_id"], ann.saga_id.as_str());
        assert_eq!(found["sagas"][0]["failure_reason_code"], "DEPENDENCY_UNAVAILABLE");
        assert_eq!(found["sagas"][0]["customer_id"], "ann");
        let counted = call(&app, "GET", "/api/v1/admin/sagas/counts?customer_id=bob")
            .bearer(&admin)
            .send()
            .await;
        assert_eq!(counted.status, 200, "{}", counted.text());
        let counted = counted.json();
        assert_eq!(counted["total"], "1", "{counted}");
        assert!(
            counted["counts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["status"] == "SAGA_STATUS_COMPENSATED" && c["count"] == "1"),
            "{counted}"
        );
        let refused = call(
            &app,
            "GET",
            "/api/v1/admin/sagas?current_step=teleport&order_id=x&failure_reason_code=NO_SUCH_CODE",
        )
        .bearer(&admin)
        .send()
        .await;
        assert_eq!(refused.status, 400, "{}", refused.text());
        assert!(
            refused.text().contains("failure_reason_code"),
            "{}",
            refused.text()
        );
        let refused = call(
            &app,
            "GET",
            "/api/v1/admin/sagas?current_step=teleport&order_id=x",
        )
        .bearer(&admin)
        .send()
        .await;
        assert_eq!(refused.status, 400, "{}", refused.text());
        assert_eq!(refused.violated_fields(), ["current_step", "order_id"]);
    }
}

fn ts(at: &Option<Timestamp>) -> chrono::DateTime<chrono::Utc> {
    at.unwrap().to_datetime().unwrap()
}

fn rfc3339(at: &Option<Timestamp>) -> String {
    ts(at).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
