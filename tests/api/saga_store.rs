//! Conformance suite of the saga store: leases, fencing, step and attempt
//! records, paging and operator actions, on SQLite and (when configured)
//! PostgreSQL. Sagas are started the real way: with an order's first event.

use std::{sync::Arc, time::Duration};

use chrono::{TimeDelta, Utc};
use commerce::startup::Stores;
use commerce::{
    saga::plan::{SagaStatus, Step, StepStatus},
    store::{
        event_store::{EventStore, NewEvent, StreamAppend, Upcasters},
        saga::{
            AttemptEnd, AttemptOutcome, AttemptWrite, CancelRequest, FencedWrite, Lease,
            OperatorActionRecord, OperatorActionWrite, Release, SAGA_STREAM, SagaColumns, SagaFilter,
            SagaStart, SagaStore, SagaStoreError, SagaWrite, StepRecord,
        },
        unit_of_work::{Committed, UnitOfWork, UnitOfWorkCommitter, UnitOfWorkError},
    },
};
use uuid::Uuid;

use crate::support::{
    app::{Backend, Isolation},
    store::order_unit,
};

struct Fixture {
    isolation: Isolation,
    events: Arc<dyn EventStore>,
    sagas: Arc<dyn SagaStore>,
    units: Arc<dyn UnitOfWorkCommitter>,
}

async fn fixture(backend: Backend) -> Fixture {
    let isolation = Isolation::new(backend).await;
    let db = isolation.backends().await.db;
    Fixture {
        events: Stores::on(&db, Upcasters::none(), true).events,
        sagas: Stores::on(&db, Upcasters::none(), true).sagas,
        units: Stores::on(&db, Upcasters::none(), true).units,
        isolation,
    }
}

fn lease(owner: &str, millis: u64) -> Lease {
    Lease {
        owner: owner.into(),
        duration: Duration::from_millis(millis),
    }
}

impl Fixture {
    /// Starts a saga as CreateOrder does; returns (saga id, order id).
    async fn start(&self) -> (Uuid, Uuid) {
        let (saga_id, order_id) = (Uuid::now_v7(), Uuid::now_v7());
        let start = SagaWrite::Start(SagaStart {
            saga_id,
            order_id,
            customer_id: "customer-1".into(),
            idempotency_seed: format!("{order_id}/key-1"),
            deadline: Utc::now() + TimeDelta::minutes(30),
        });
        self.units
            .commit(order_unit(order_id, 0, "OrderCreated", start))
            .await
            .unwrap();
        (saga_id, order_id)
    }

    async fn cancel(&self, order_id: Uuid) {
        let version = self.events.stream_version(order_id).await.unwrap();
        let cancel = SagaWrite::RequestCancel(CancelRequest {
            order_id,
            reason: "changed my mind".into(),
        });
        self.units
            .commit(order_unit(order_id, version, "CancellationRequested", cancel))
            .await
            .unwrap();
    }

    /// An operator action with its audit event, as SagaAdmin commits it.
    async fn apply_operator_action(
        &self,
        write: OperatorActionWrite,
        audit: NewEvent,
    ) -> Result<Committed, UnitOfWorkError> {
        let unit = UnitOfWork {
            appends: vec![StreamAppend {
                stream_id: write.saga_id,
                stream_type: SAGA_STREAM.into(),
                expected_version: None,
                events: vec![audit],
            }],
            saga: Some(SagaWrite::OperatorAction(write)),
            idempotency: None,
        };
        self.units.commit(unit).await
    }
}

fn step_record(step: Step, status: StepStatus, attempts: u32) -> StepRecord {
    StepRecord {
        step,
        status,
        attempts,
        round_attempts: attempts,
        idempotency_key: format!("seed:{step}"),
        last_error: None,
        last_grpc_code: None,
        started_at: Some(Utc::now()),
        finished_at: None,
        duration_ms: 0,
    }
}

#[tokio::test]
async fn a_saga_is_claimed_by_one_worker_until_its_lease_expires_and_stale_writes_are_fenced() {
    for backend in Backend::all() {
        let f = fixture(backend).await;
        let (saga_id, _) = f.start().await;
        let (a, b) = (lease("worker-a", 300), lease("worker-b", 300));

        let (claimed_a, claimed_b) = tokio::join!(f.sagas.claim_due(&a, 10), f.sagas.claim_due(&b, 10));
        let (claimed_a, claimed_b) = (claimed_a.unwrap(), claimed_b.unwrap());
        assert_eq!(
            claimed_a.len() + claimed_b.len(),
            1,
            "{backend:?}: exactly one claim wins"
        );
        let (holder, contender, record) = if claimed_a.is_empty() {
            (&b, &a, &claimed_b[0])
        } else {
            (&a, &b, &claimed_a[0])
        };
        assert_eq!((record.saga_id, record.status), (saga_id, SagaStatus::Running));
        assert!(
            f.sagas.claim_due(contender, 10).await.unwrap().is_empty(),
            "{backend:?}: leased"
        );

        tokio::time::sleep(Duration::from_millis(400)).await;
        let taken = f.sagas.claim_due(contender, 10).await.unwrap();
        assert_eq!(taken.len(), 1, "{backend:?}: an expired lease is taken over");
        let columns = SagaColumns::of(record);
        let stale = f
            .sagas
            .write(&FencedWrite::columns(saga_id, holder, columns.clone()))
            .await;
        assert!(
            matches!(stale, Err(SagaStoreError::LeaseLost)),
            "{backend:?}: {stale:?}"
        );
        f.sagas
            .write(&FencedWrite::columns(saga_id, contender, columns.clone()))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn steps_and_attempts_are_recorded_before_and_after_the_call() {
    for backend in Backend::all() {
        let f = fixture(backend).await;
        let (saga_id, order_id) = f.start().await;
        let worker = lease("w", 30_000);
        let record = f.sagas.claim_due(&worker, 1).await.unwrap().remove(0);
        let mut columns = SagaColumns::of(&record);
        columns.current_step = Some(Step::AuthorizePayment);
        let mut step = step_record(Step::AuthorizePayment, StepStatus::InProgress, 1);
        let started = AttemptWrite::Started {
            step: Step::AuthorizePayment,
            attempt: 1,
            worker: "w".into(),
            idempotency_key: step.idempotency_key.clone(),
            started_at: Utc::now(),
        };
        f.sagas
            .write(&FencedWrite {
                steps: vec![step.clone()],
                attempts: vec![started.clone()],
                ..FencedWrite::columns(saga_id, &worker, columns.clone())
            })
            .await
            .unwrap();

        let in_flight = f.sagas.find_by_order(order_id).await.unwrap().unwrap();
        assert_eq!(
            in_flight.step(Step::AuthorizePayment).unwrap().status,
            StepStatus::InProgress
        );
        assert!(
            f.sagas.attempts(saga_id).await.unwrap()[0].end.is_none(),
            "{backend:?}"
        );

        step.status = StepStatus::Succeeded;
        step.last_grpc_code = Some("OK".into());
        step.duration_ms = 7;
        step.finished_at = Some(Utc::now());
        columns.refs.authorization_id = Some("auth_1".into());
        let finished = AttemptWrite::Finished {
            step: Step::AuthorizePayment,
            attempt: 1,
            finished_at: Utc::now(),
            end: AttemptEnd {
                outcome: AttemptOutcome::Succeeded,
                grpc_code: Some("OK".into()),
                error: None,
                latency_ms: 7,
                trace_id: Some("abc".into()),
            },
        };
        let voided = step_record(Step::VoidPayment, StepStatus::Pending, 0);
        let fresh = f
            .sagas
            .write(&FencedWrite {
                steps: vec![step.clone(), voided],
                attempts: vec![finished.clone()],
                ..FencedWrite::columns(saga_id, &worker, columns.clone())
            })
            .await
            .unwrap();
        assert!(!fresh.cancel_requested);

        let saga = f.sagas.get(saga_id).await.unwrap().unwrap();
        assert_eq!(saga.seed, format!("{order_id}/key-1"));
        assert_eq!(saga.refs.authorization_id.as_deref(), Some("auth_1"));
        let row = saga.step(Step::AuthorizePayment).unwrap();
        assert_eq!(
            (row.status, row.attempts, row.duration_ms),
            (StepStatus::Succeeded, 1, 7)
        );
        assert_eq!(row.idempotency_key, "seed:authorize_payment");
        let attempts = f.sagas.attempts(saga_id).await.unwrap();
        let end = attempts[0].end.as_ref().unwrap();
        assert_eq!(
            (end.outcome, end.latency_ms, end.trace_id.as_deref()),
            (AttemptOutcome::Succeeded, 7, Some("abc"))
        );
        assert_eq!(saga.steps.len(), 2, "{backend:?}: both step rows written");
        let counts = f.sagas.count_by_status().await.unwrap();
        assert_eq!(counts, vec![(SagaStatus::Running, 1)]);
    }
}

#[tokio::test]
async fn a_cancel_that_arrives_while_leased_makes_the_saga_due_at_release() {
    for backend in Backend::all() {
        let f = fixture(backend).await;
        let (saga_id, order_id) = f.start().await;
        let worker = lease("w", 30_000);
        f.sagas.claim_due(&worker, 1).await.unwrap();
        f.cancel(order_id).await;
        let later = Utc::now() + TimeDelta::hours(1);
        f.sagas.release(&worker, saga_id, later, false).await.unwrap();
        let again = f.sagas.claim_due(&worker, 1).await.unwrap();
        assert_eq!(
            again.len(),
            1,
            "{backend:?}: the unseen cancel overrides the backoff"
        );
        assert!(again[0].cancel_requested);
        assert_eq!(again[0].cancel_reason.as_deref(), Some("changed my mind"));

        // Seen and handled: the release time holds.
        f.sagas.release(&worker, saga_id, later, true).await.unwrap();
        assert!(
            f.sagas.claim_due(&worker, 1).await.unwrap().is_empty(),
            "{backend:?}"
        );
    }
}

#[tokio::test]
async fn failed_sagas_wait_for_an_operator_whose_action_is_recorded_and_fenced_by_version() {
    for backend in Backend::all() {
        let f = fixture(backend).await;
        let (saga_id, _) = f.start().await;
        let worker = lease("w", 30_000);
        let record = f.sagas.claim_due(&worker, 1).await.unwrap().remove(0);
        let mut columns = SagaColumns::of(&record);
        columns.status = SagaStatus::Failed;
        let step = step_record(Step::AuthorizePayment, StepStatus::Failed, 3);
        let started = AttemptWrite::Started {
            step: Step::AuthorizePayment,
            attempt: 3,
            worker: "w".into(),
            idempotency_key: step.idempotency_key.clone(),
            started_at: Utc::now(),
        };
        f.sagas
            .write(&FencedWrite {
                steps: vec![step.clone()],
                attempts: vec![started.clone()],
                ..FencedWrite::columns(saga_id, &worker, columns.clone())
            })
            .await
            .unwrap();
        f.sagas.release(&worker, saga_id, Utc::now(), true).await.unwrap();
        assert!(
            f.sagas.claim_due(&worker, 1).await.unwrap().is_empty(),
            "{backend:?}: FAILED waits"
        );

        let failed = f.sagas.get(saga_id).await.unwrap().unwrap();
        let mut retry_columns = SagaColumns::of(&failed);
        retry_columns.status = SagaStatus::Running;
        let retry_step = StepRecord {
            status: StepStatus::Pending,
            round_attempts: 0,
            ..step.clone()
        };
        let action = OperatorActionRecord {
            action: "retry".into(),
            step: Step::AuthorizePayment,
            operator: "admin-1".into(),
            reason: "payment provider is back".into(),
            at: Utc::now(),
        };
        let audit = action.audit_event(saga_id, failed.order_id);
        let write = |expected_updated_at| OperatorActionWrite {
            saga_id,
            expected_updated_at,
            columns: retry_columns.clone(),
            step: retry_step.clone(),
            action: action.clone(),
        };
        let stale = f
            .apply_operator_action(write(record.updated_at), audit.clone())
            .await;
        assert!(
            matches!(stale, Err(UnitOfWorkError::SagaChanged)),
            "{backend:?}: {stale:?}"
        );
        assert_eq!(
            f.events.stream_version(saga_id).await.unwrap(),
            0,
            "{backend:?}: a refused action leaves no event"
        );
        f.apply_operator_action(write(failed.updated_at), audit)
            .await
            .unwrap();
        // The action and its audit event are one write.
        let stream = f.events.read_stream(saga_id, 1).await.unwrap();
        assert_eq!(stream.len(), 1, "{backend:?}");
        assert_eq!(
            (stream[0].event_type.as_str(), stream[0].stream_type.as_str()),
            ("SagaStepRetried", "saga")
        );
        assert_eq!(stream[0].payload["reason"], "payment provider is back");

        let resumed = f.sagas.claim_due(&worker, 1).await.unwrap();
        assert_eq!(resumed.len(), 1, "{backend:?}: due at once");
        let row = resumed[0].step(Step::AuthorizePayment).unwrap();
        assert_eq!(
            (row.status, row.attempts, row.round_attempts),
            (StepStatus::Pending, 3, 0)
        );
        let actions = f.sagas.operator_actions(saga_id).await.unwrap();
        assert_eq!(actions.len(), 1);
        assert_eq!(
            (actions[0].operator.as_str(), actions[0].reason.as_str()),
            ("admin-1", "payment provider is back")
        );
    }
}

#[tokio::test]
async fn sagas_list_newest_first_by_status_in_pages() {
    for backend in Backend::all() {
        let f = fixture(backend).await;
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(f.start().await.0);
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        ids.reverse();
        let first = f.sagas.list(&SagaFilter::default(), None, 2).await.unwrap();
        let cursor = first.last().map(|s| (s.created_at, s.saga_id));
        let second = f.sagas.list(&SagaFilter::default(), cursor, 10).await.unwrap();
        let listed: Vec<Uuid> = first.iter().chain(&second).map(|s| s.saga_id).collect();
        assert_eq!(listed, ids, "{backend:?}");
        assert_eq!(
            f.sagas
                .list(
                    &SagaFilter {
                        statuses: vec![SagaStatus::Running],
                        ..SagaFilter::default()
                    },
                    None,
                    10
                )
                .await
                .unwrap()
                .len(),
            5
        );
        assert!(
            f.sagas
                .list(
                    &SagaFilter {
                        statuses: vec![SagaStatus::Failed],
                        ..SagaFilter::default()
                    },
                    None,
                    10
                )
                .await
                .unwrap()
                .is_empty()
        );
    }
}

#[tokio::test]
async fn a_write_guarded_by_the_cancel_flag_applies_only_while_the_flag_holds_and_can_release_the_saga() {
    for backend in Backend::all() {
        let f = fixture(backend).await;
        let (saga_id, order_id) = f.start().await;
        let worker = lease("w", 30_000);
        let record = f.sagas.claim_due(&worker, 1).await.unwrap().remove(0);
        let mut columns = SagaColumns::of(&record);
        columns.current_step = Some(Step::CapturePayment);
        let step = step_record(Step::CapturePayment, StepStatus::InProgress, 1);
        let guarded = |expect| FencedWrite {
            steps: vec![step.clone()],
            expect_cancel: Some(expect),
            ..FencedWrite::columns(saga_id, &worker, columns.clone())
        };
        f.cancel(order_id).await;
        // Decided before the cancel: refused, and nothing of it is stored.
        let stale = f.sagas.write(&guarded(false)).await;
        assert!(
            matches!(stale, Err(SagaStoreError::LeaseLost)),
            "{backend:?}: {stale:?}"
        );
        assert!(
            f.sagas.get(saga_id).await.unwrap().unwrap().steps.is_empty(),
            "{backend:?}"
        );
        let fresh = f.sagas.write(&guarded(true)).await.unwrap();
        assert!(fresh.cancel_requested);

        // Released in the same write, with the cancel seen: due at the given time.
        let later = Utc::now() + TimeDelta::hours(1);
        let release = FencedWrite {
            release: Some(Release {
                next_run_at: later,
                cancel_seen: true,
            }),
            ..FencedWrite::columns(saga_id, &worker, columns.clone())
        };
        f.sagas.write(&release).await.unwrap();
        assert!(
            f.sagas
                .claim_due(&lease("other", 30_000), 1)
                .await
                .unwrap()
                .is_empty(),
            "{backend:?}"
        );
        let saga = f.sagas.get(saga_id).await.unwrap().unwrap();
        assert_eq!(saga.current_step, Some(Step::CapturePayment));
        assert!(
            (saga.next_run_at - later).num_milliseconds().abs() < 5,
            "{backend:?}"
        );
        assert!(matches!(
            f.sagas
                .write(&FencedWrite::columns(saga_id, &worker, columns.clone()))
                .await,
            Err(SagaStoreError::LeaseLost)
        ));
    }
}

/// On PostgreSQL a new saga wakes every replica's claim loop (NOTIFY at
/// commit) only when some worker has to claim it: a saga CreateOrder inserts
/// already leased to a local worker (the in-memory hand-off) wakes nobody, so
/// no replica runs a claim that can only find nothing (migration 0011).
#[tokio::test]
async fn only_a_saga_inserted_without_an_owner_wakes_the_claim_loops() {
    if Backend::from_env() != Backend::Real {
        return; // NOTIFY is PostgreSQL's; SQLite's wake-up is in the process.
    }
    let f = fixture(Backend::Real).await;
    let url = f
        .isolation
        .database_on(&std::env::var("TEST_DATABASE_URL").unwrap())
        .unwrap();
    let mut listener = sqlx::postgres::PgListener::connect(&url).await.unwrap();
    listener.listen("commerce_sagas").await.unwrap();

    let start = |order_id: Uuid| SagaStart {
        saga_id: Uuid::now_v7(),
        order_id,
        customer_id: "customer-1".into(),
        idempotency_seed: format!("{order_id}/key-1"),
        deadline: Utc::now() + TimeDelta::minutes(30),
    };
    let leased_order = Uuid::now_v7();
    let leased = start(leased_order);
    let columns = SagaColumns {
        status: SagaStatus::Running,
        current_step: Some(Step::AuthorizePayment),
        past_pivot: false,
        compensation_reason: None,
        last_error: None,
        refs: Default::default(),
        failure_code: None,
    };
    let first = FencedWrite::columns(leased.saga_id, &lease("replica-1/1", 30_000), columns);
    f.units
        .commit(order_unit(
            leased_order,
            0,
            "OrderCreated",
            SagaWrite::StartLeased(leased.clone(), Box::new(first)),
        ))
        .await
        .unwrap();
    let (unleased_saga, _) = f.start().await;

    // Notifications arrive in commit order: had the leased saga's insert
    // notified, its id would come first.
    let woken = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("the unleased saga wakes the claim loops")
        .unwrap();
    assert_eq!(
        woken.payload(),
        unleased_saga.to_string(),
        "the leased saga {} woke nobody",
        leased.saga_id
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), listener.recv())
            .await
            .is_err(),
        "no other wake-up"
    );
}
