//! Conformance suite of the unit of work: several owners' writes commit in
//! one transaction or not at all, alone and in a PostgreSQL group-commit
//! batch; on SQLite always and on PostgreSQL when TEST_DATABASE_URL is set.

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::Utc;
use commerce::startup::Stores;
use commerce::store::{
    event_store::{ORDER_STREAM, StreamAppend, Upcasters},
    idempotency::IdempotencyCompletion,
    saga::{CancelFlag, CancelRequest, FencedWrite, Lease, SagaColumns, SagaStart, SagaWrite},
    unit_of_work::{UnitOfWork, UnitOfWorkError},
};
use serde_json::json;
use uuid::Uuid;

use crate::support::{
    app::Backend,
    store::{count, event, exec, store_on},
};

/// One event of `event_type` on `order`'s stream at `version`.
fn order_append(order: Uuid, version: u64, event_type: &str) -> StreamAppend {
    StreamAppend {
        stream_id: order,
        stream_type: ORDER_STREAM.into(),
        expected_version: Some(version),
        events: vec![event(event_type, json!({}))],
    }
}

#[tokio::test]
async fn the_saga_start_cancel_request_and_idempotency_key_commit_with_the_events_or_not_at_all() {
    for backend in Backend::all() {
        let (_iso, db, _store) = store_on(backend, Upcasters::none()).await;
        let units = Stores::on(&db, Upcasters::none(), true).units;
        let order = Uuid::now_v7();
        let saga = SagaStart {
            saga_id: Uuid::now_v7(),
            order_id: order,
            customer_id: "customer-1".into(),
            idempotency_seed: format!("{order}/key-1"),
            deadline: Utc::now() + chrono::Duration::minutes(30),
        };
        let completion = IdempotencyCompletion {
            customer_id: "alice".into(),
            key: "key-1".into(),
            response: json!({"order_id": order.to_string()}),
        };
        let with_all = UnitOfWork {
            appends: vec![order_append(order, 0, "OrderCreated")],
            saga: Some(SagaWrite::Start(saga.clone())),
            idempotency: Some(completion.clone()),
        };
        // The key was never claimed: the whole unit is rolled back.
        units.commit(with_all.clone()).await.unwrap_err();
        assert_eq!(count(&db, "SELECT COUNT(*) FROM events").await, 0, "{backend:?}");
        assert_eq!(count(&db, "SELECT COUNT(*) FROM sagas").await, 0, "{backend:?}");

        exec(
            &db,
            "INSERT INTO idempotency_keys (customer_id, key, request_hash, status, order_id) \
             VALUES ($1, $2, 'h', 'in_flight', $3::uuid)",
            "INSERT INTO idempotency_keys (customer_id, key, request_hash, status, order_id) \
             VALUES (?, ?, 'h', 'in_flight', ?)",
            &["alice", "key-1", &order.to_string()],
        )
        .await;
        units.commit(with_all).await.unwrap();
        assert_eq!(
            count(&db, "SELECT COUNT(*) FROM sagas WHERE status = 'RUNNING'").await,
            1
        );
        assert_eq!(
            count(&db, "SELECT COUNT(*) FROM idempotency_keys WHERE status = 'done'").await,
            1
        );

        let cancel = UnitOfWork {
            appends: vec![order_append(order, 1, "CancellationRequested")],
            saga: Some(SagaWrite::RequestCancel(CancelRequest {
                order_id: order,
                reason: "changed my mind".into(),
            })),
            idempotency: None,
        };
        units.commit(cancel).await.unwrap();
        assert_eq!(
            count(
                &db,
                "SELECT COUNT(*) FROM sagas WHERE cancel_requested AND cancel_reason = 'changed my mind'"
            )
            .await,
            1,
            "{backend:?}"
        );
    }
}

#[tokio::test]
async fn a_step_write_whose_lease_is_lost_appends_no_order_event() {
    for backend in Backend::all() {
        let (_iso, db, store) = store_on(backend, Upcasters::none()).await;
        let units = Stores::on(&db, Upcasters::none(), true).units;
        let sagas = Stores::on(&db, Upcasters::none(), true).sagas;
        let (order, saga_id) = (Uuid::now_v7(), Uuid::now_v7());
        let start = SagaWrite::Start(SagaStart {
            saga_id,
            order_id: order,
            customer_id: "customer-1".into(),
            idempotency_seed: format!("{order}/key"),
            deadline: Utc::now() + chrono::Duration::minutes(30),
        });
        units
            .commit(UnitOfWork {
                appends: vec![order_append(order, 0, "OrderCreated")],
                saga: Some(start),
                idempotency: None,
            })
            .await
            .unwrap();
        let holder = Lease {
            owner: "holder".into(),
            duration: Duration::from_secs(30),
        };
        let record = sagas.claim_due(&holder, 1).await.unwrap().remove(0);
        let step = |lease: &Lease| UnitOfWork {
            appends: vec![order_append(order, 1, "PaymentAuthorized")],
            saga: Some(SagaWrite::Fenced(FencedWrite::columns(
                saga_id,
                lease,
                SagaColumns::of(&record),
            ))),
            idempotency: None,
        };
        let stranger = Lease {
            owner: "stranger".into(),
            ..holder.clone()
        };
        let lost = units.commit(step(&stranger)).await;
        assert!(
            matches!(lost, Err(UnitOfWorkError::LeaseLost)),
            "{backend:?}: {lost:?}"
        );
        assert_eq!(store.stream_version(order).await.unwrap(), 1, "{backend:?}");

        let committed = units.commit(step(&holder)).await.unwrap();
        assert_eq!(
            committed.cancel_flag,
            Some(CancelFlag {
                cancel_requested: false,
                cancel_reason: None
            })
        );
        assert_eq!(committed.appended[0].new_version, 2, "{backend:?}");
    }
}

/// On PostgreSQL concurrent units of work share a transaction (group
/// commit): a conflict, a repeat or a unit failing in one owner's part (a key
/// never claimed) must change nothing for the other units in the batch.
#[tokio::test]
async fn in_a_burst_of_units_of_work_conflicts_and_failures_touch_only_their_own_unit() {
    for backend in Backend::all() {
        let (_iso, db, store) = store_on(backend, Upcasters::none()).await;
        let units = Stores::on(&db, Upcasters::none(), true).units;
        let contested: Vec<Uuid> = (0..10).map(|_| Uuid::now_v7()).collect();
        let repeated = event("Repeated", json!({}));
        let repeated_stream = Uuid::now_v7();
        store
            .append(repeated_stream, 0, vec![repeated.clone()], ORDER_STREAM)
            .await
            .unwrap();
        let barrier = Arc::new(tokio::sync::Barrier::new(300));
        let mut tasks = Vec::new();
        for i in 0..300usize {
            let (units, barrier) = (units.clone(), barrier.clone());
            let contested = contested[i % 10];
            let repeated = repeated.clone();
            tasks.push(tokio::spawn(async move {
                let fresh = Uuid::now_v7();
                let (kind, stream, events, idempotency) = match i % 3 {
                    // A fresh stream with two events: must succeed.
                    0 => (
                        "fresh",
                        fresh,
                        vec![event("A", json!({"i": i})), event("B", json!({"i": i}))],
                        None,
                    ),
                    // Ten streams, ten writers each at version 0: one wins each.
                    1 => (
                        "contested",
                        contested,
                        vec![event("Contested", json!({"i": i}))],
                        None,
                    ),
                    // Every third of the rest fails in its options (a key never
                    // claimed), the others repeat a stored append.
                    _ if i % 9 == 2 => (
                        "doomed",
                        fresh,
                        vec![event("Doomed", json!({"i": i}))],
                        Some(IdempotencyCompletion {
                            customer_id: "nobody".into(),
                            key: format!("never-claimed-{i}"),
                            response: json!({}),
                        }),
                    ),
                    _ => ("repeat", repeated_stream, vec![repeated], None),
                };
                barrier.wait().await;
                loop {
                    let unit = UnitOfWork {
                        appends: vec![StreamAppend {
                            stream_id: stream,
                            stream_type: ORDER_STREAM.into(),
                            expected_version: Some(0),
                            events: events.clone(),
                        }],
                        saga: None,
                        idempotency: idempotency.clone(),
                    };
                    match units.commit(unit).await {
                        // A busy database (SQLite under 300 writers): nothing was written; again.
                        Err(UnitOfWorkError::Unavailable(_)) => {
                            tokio::time::sleep(Duration::from_millis(5)).await
                        }
                        outcome => {
                            return outcome.map(|done| {
                                (
                                    kind,
                                    done.appended[0].new_version,
                                    done.appended[0].already_stored,
                                )
                            });
                        }
                    }
                }
            }));
        }
        let mut outcomes: HashMap<String, usize> = HashMap::new();
        for task in tasks {
            let label = match task.await.unwrap() {
                Ok((kind, version, repeat)) => format!("{kind} v{version} repeat={repeat}"),
                Err(UnitOfWorkError::Conflict { .. }) => "conflict".to_string(),
                Err(UnitOfWorkError::Other(_)) => "failed".to_string(),
                Err(other) => panic!("{backend:?}: {other:?}"),
            };
            *outcomes.entry(label).or_default() += 1;
        }
        let expected: HashMap<String, usize> = [
            ("fresh v2 repeat=false", 100),
            ("contested v1 repeat=false", 10),
            ("conflict", 90),
            ("failed", 34),
            ("repeat v1 repeat=true", 66),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(outcomes, expected, "{backend:?}");
        // 100 fresh streams x 2 + 10 contested + the repeated one; nothing of the doomed.
        assert_eq!(
            count(&db, "SELECT COUNT(*) FROM events").await,
            211,
            "{backend:?}"
        );
        assert_eq!(
            count(&db, "SELECT COUNT(*) FROM events WHERE event_type = 'Doomed'").await,
            0,
            "{backend:?}"
        );
        let settled = store.read_all_settled(211).await;
        assert_eq!(
            settled.len(),
            211,
            "{backend:?}: every committed event is readable"
        );
    }
}
