//! What an order's critical path (CreateOrder sent -> CONFIRMED committed)
//! costs the database, counted at the three writers it goes through: the
//! idempotency key's claim, the units of work (one transaction each) and the
//! saga claims. Each counts as one commit; the log names them in order.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use commerce::{
    app::{
        orders::{OrderApp, OrderStores},
        sagas::{OrderAppPort, SagaApp},
    },
    auth::{Principal, Role},
    proto::commerce::v1::SagaStatus,
    shutdown,
    startup::Stores,
    store::{
        Purge,
        event_store::OrderCodec,
        idempotency::{Claim, ClaimOutcome, IdempotencyStore, IdempotencyStoreError},
        saga::{
            AttemptRecord, CancelFlag, Cursor, FencedWrite, Lease, OperatorActionRecord, SagaCount,
            SagaFilter, SagaPurge, SagaRecord, SagaStore, SagaStoreError, SagaWrite,
        },
        unit_of_work::{Committed, UnitOfWork, UnitOfWorkCommitter, UnitOfWorkError},
    },
};
use uuid::Uuid;

use crate::support::{
    app::{Backend, TestApp, spawn_app_with},
    orders::{filled_cart, order_request},
    saga::{OrderSpec, place, wait_saga},
};

/// The commits seen, in order.
type Log = Arc<Mutex<Vec<String>>>;

/// Logs each unit of work: its saga part and how many order events it appends.
#[derive(Debug)]
struct CountingUnits {
    inner: Arc<dyn UnitOfWorkCommitter>,
    log: Log,
}

#[async_trait]
impl UnitOfWorkCommitter for CountingUnits {
    async fn commit(&self, unit: UnitOfWork) -> Result<Committed, UnitOfWorkError> {
        let events: usize = unit.appends.iter().map(|a| a.events.len()).sum();
        let part = match &unit.saga {
            Some(SagaWrite::Start(_)) => "saga start",
            Some(SagaWrite::StartLeased(..)) => "saga start leased + first step started",
            Some(SagaWrite::Fenced(write)) if write.release.is_some() => "step outcome + release",
            Some(SagaWrite::Fenced(_)) => "step started",
            Some(_) => "other saga write",
            None => "no saga part",
        };
        let committed = self.inner.commit(unit).await?;
        self.log
            .lock()
            .unwrap()
            .push(format!("unit: {part}, {events} event(s)"));
        Ok(committed)
    }
}

/// Logs each claim that took a saga (a claim of none writes nothing).
#[derive(Debug)]
struct CountingSagas {
    inner: Arc<dyn SagaStore>,
    log: Log,
}

#[async_trait]
impl SagaStore for CountingSagas {
    async fn claim_due(&self, lease: &Lease, limit: usize) -> Result<Vec<SagaRecord>, SagaStoreError> {
        let claimed = self.inner.claim_due(lease, limit).await?;
        if !claimed.is_empty() {
            self.log
                .lock()
                .unwrap()
                .push(format!("saga claim of {}", claimed.len()));
        }
        Ok(claimed)
    }
    async fn write(&self, write: &FencedWrite) -> Result<CancelFlag, SagaStoreError> {
        self.log.lock().unwrap().push("saga write outside a unit".into());
        self.inner.write(write).await
    }
    async fn release(
        &self,
        lease: &Lease,
        saga_id: Uuid,
        next_run_at: DateTime<Utc>,
        cancel_seen: bool,
    ) -> Result<(), SagaStoreError> {
        self.log
            .lock()
            .unwrap()
            .push("saga release outside a unit".into());
        self.inner.release(lease, saga_id, next_run_at, cancel_seen).await
    }
    async fn get(&self, saga_id: Uuid) -> Result<Option<SagaRecord>, SagaStoreError> {
        self.inner.get(saga_id).await
    }
    async fn find_by_order(&self, order_id: Uuid) -> Result<Option<SagaRecord>, SagaStoreError> {
        self.inner.find_by_order(order_id).await
    }
    async fn list(
        &self,
        filter: &SagaFilter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Vec<SagaRecord>, SagaStoreError> {
        self.inner.list(filter, after, limit).await
    }
    async fn count(&self, filter: &SagaFilter) -> Result<Vec<SagaCount>, SagaStoreError> {
        self.inner.count(filter).await
    }
    async fn attempts(&self, saga_id: Uuid) -> Result<Vec<AttemptRecord>, SagaStoreError> {
        self.inner.attempts(saga_id).await
    }
    async fn count_by_status(&self) -> Result<Vec<(commerce::saga::plan::SagaStatus, u64)>, SagaStoreError> {
        self.inner.count_by_status().await
    }
    async fn purge_finished(&self, before: DateTime<Utc>, purge: Purge) -> Result<SagaPurge, SagaStoreError> {
        self.inner.purge_finished(before, purge).await
    }
    async fn operator_actions_of(
        &self,
        saga_ids: &[Uuid],
    ) -> Result<Vec<(Uuid, OperatorActionRecord)>, SagaStoreError> {
        self.inner.operator_actions_of(saga_ids).await
    }
}

/// Logs the key's claim (CreateOrder's first commit).
#[derive(Debug)]
struct CountingKeys {
    inner: Arc<dyn IdempotencyStore>,
    log: Log,
}

#[async_trait]
impl IdempotencyStore for CountingKeys {
    async fn claim(&self, claim: &Claim) -> Result<ClaimOutcome, IdempotencyStoreError> {
        let outcome = self.inner.claim(claim).await?;
        self.log.lock().unwrap().push("idempotency key claim".into());
        Ok(outcome)
    }
    async fn save_snapshot(
        &self,
        customer_id: &str,
        key: &str,
        snapshot: &serde_json::Value,
    ) -> Result<(), IdempotencyStoreError> {
        self.log.lock().unwrap().push("idempotency snapshot".into());
        self.inner.save_snapshot(customer_id, key, snapshot).await
    }
    async fn refuse(
        &self,
        customer_id: &str,
        key: &str,
        response: &serde_json::Value,
    ) -> Result<(), IdempotencyStoreError> {
        self.inner.refuse(customer_id, key, response).await
    }
    async fn release(&self, customer_id: &str, key: &str) -> Result<(), IdempotencyStoreError> {
        self.inner.release(customer_id, key).await
    }
    async fn forget_customer(&self, customer_id: &str) -> Result<u64, IdempotencyStoreError> {
        self.inner.forget_customer(customer_id).await
    }
    async fn purge(&self, before: DateTime<Utc>, purge: Purge) -> Result<u64, IdempotencyStoreError> {
        self.inner.purge(before, purge).await
    }
}

/// An order service and one saga worker over counting stores, beside the
/// app (whose own workers are off), and the log they write.
struct Counted {
    orders: OrderApp,
    sagas: SagaApp,
    log: Log,
}

fn counted(app: &TestApp) -> Counted {
    let db = &app.app.backends.db;
    let stores = Stores::on(db, OrderCodec::upcasters(), true);
    let log = Log::default();
    let units: Arc<dyn UnitOfWorkCommitter> = Arc::new(CountingUnits {
        inner: stores.units,
        log: log.clone(),
    });
    let mut settings = app.config.saga.clone();
    settings.workers = 1;
    let sagas = SagaApp::new(
        settings,
        Arc::new(CountingSagas {
            inner: stores.sagas,
            log: log.clone(),
        }),
        units.clone(),
        app.app.sagas.sibling_urls().clone(),
        Arc::new(OrderAppPort::new(app.app.orders.clone())),
    )
    .unwrap();
    let order_stores = OrderStores {
        events: stores.events,
        units,
        idempotency_keys: Arc::new(CountingKeys {
            inner: stores.idempotency_keys,
            log: log.clone(),
        }),
    };
    let orders = OrderApp::new(
        app.config.orders.clone(),
        order_stores,
        app.app.carts.clone(),
        app.app.privacy.clone(),
    )
    .with_local_workers(sagas.local_workers().clone());
    Counted { orders, sagas, log }
}

/// The four sibling steps: each one's start is written before its call and
/// carries the previous step's outcome and order event. ConfirmOrder calls
/// no sibling: its start and end ride with the release, with the capture's
/// outcome, and its event with the capture's.
const STEPS_AFTER_THE_FIRST: [&str; 4] = [
    "unit: step started, 1 event(s)",
    "unit: step started, 1 event(s)",
    "unit: step started, 1 event(s)",
    "unit: step outcome + release, 2 event(s)",
];

/// The whole path: `first`, then [`STEPS_AFTER_THE_FIRST`].
fn path(first: [&str; 2]) -> Vec<String> {
    first
        .into_iter()
        .chain(STEPS_AFTER_THE_FIRST)
        .map(String::from)
        .collect()
}

impl Counted {
    /// Runs the worker while `place` places an order (or names one placed
    /// already) until its saga completed; the commits logged.
    async fn run(&self, app: &TestApp, place: impl Future<Output = String>) -> Vec<String> {
        let (stop, stopped) = shutdown::channel();
        let workers = self
            .sagas
            .start_workers(app.app.backends.db.clone(), stopped)
            .expect("workers started");
        let saga_id = place.await;
        wait_saga(app, &saga_id, SagaStatus::Completed).await;
        stop.trigger();
        workers.await.unwrap();
        self.log.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn a_new_order_reaches_confirmed_in_six_commits_when_a_local_worker_takes_its_saga() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, &[("SAGA_WORKERS", "0")]).await;
        let counted = counted(&app);
        let alice = Principal {
            subject: "alice".into(),
            roles: vec![Role::Customer],
        };
        let log = counted
            .run(&app, async {
                let cart_id = filled_cart(&app, &app.customer("alice")).await;
                let order = counted
                    .orders
                    .create_order(&alice, order_request(&cart_id, "commits-1").into())
                    .await
                    .expect("order placed");
                order.saga_id.expect("a saga").to_string()
            })
            .await;
        // CreateOrder: the key's claim, then one unit with the order, the
        // saga leased to the free worker and its first step's start; no
        // claim. Then the steps.
        let expected = path([
            "idempotency key claim",
            "unit: saga start leased + first step started, 1 event(s)",
        ]);
        assert_eq!(log, expected, "{backend:?}");
    }
}

#[tokio::test]
async fn a_saga_a_worker_claims_costs_the_claim_and_one_commit_per_sibling_step() {
    for backend in Backend::all() {
        // Placed while no worker runs: the saga waits for a claim.
        let app = spawn_app_with(backend, &[("SAGA_WORKERS", "0")]).await;
        let order = place(&app, "alice", OrderSpec::default()).await;
        let counted = counted(&app);
        let log = counted.run(&app, async { order.saga_id.clone() }).await;
        let expected = path(["saga claim of 1", "unit: step started, 0 event(s)"]);
        assert_eq!(log, expected, "{backend:?}");
    }
}
