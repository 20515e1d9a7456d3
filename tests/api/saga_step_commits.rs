//! What a saga step costs the database: every write of the saga engine goes
//! through one unit of work, counted here at the committer.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use commerce::startup::Stores;
use commerce::{
    app::sagas::{OrderAppPort, SagaApp},
    proto::commerce::v1::SagaStatus,
    shutdown,
    store::{
        event_store::OrderCodec,
        unit_of_work::{Committed, UnitOfWork, UnitOfWorkCommitter, UnitOfWorkError},
    },
};

use crate::support::{
    app::{Backend, spawn_app_with},
    saga::{OrderSpec, place, wait_saga},
};

/// Counts the units of work (one transaction each) and their appends.
#[derive(Debug)]
struct CountingCommitter {
    inner: Arc<dyn UnitOfWorkCommitter>,
    appends_per_commit: Mutex<Vec<usize>>,
}

#[async_trait]
impl UnitOfWorkCommitter for CountingCommitter {
    async fn commit(&self, unit: UnitOfWork) -> Result<Committed, UnitOfWorkError> {
        let appends = unit.appends.len();
        let committed = self.inner.commit(unit).await?;
        self.appends_per_commit.lock().unwrap().push(appends);
        Ok(committed)
    }
}

#[tokio::test]
async fn each_saga_step_commits_its_outcome_with_its_order_event_in_one_transaction() {
    for backend in Backend::all() {
        // The service's own workers stay off; the saga runs on a pool whose
        // commits are counted.
        let app = spawn_app_with(backend, &[("SAGA_WORKERS", "0")]).await;
        let order = place(&app, "alice", OrderSpec::default()).await;
        let db = app.app.backends.db.clone();
        let counting = Arc::new(CountingCommitter {
            inner: Stores::on(&db, OrderCodec::upcasters(), true).units,
            appends_per_commit: Mutex::default(),
        });
        let mut settings = app.config.saga.clone();
        settings.workers = 1;
        let sagas = SagaApp::new(
            settings,
            Stores::on(&db, OrderCodec::upcasters(), true).sagas,
            counting.clone(),
            app.app.sagas.sibling_urls().clone(),
            Arc::new(OrderAppPort::new(app.app.orders.clone())),
        )
        .unwrap();
        let (stop, stopped) = shutdown::channel();
        let workers = sagas.start_workers(db, stopped).expect("workers started");
        wait_saga(&app, &order.saga_id, SagaStatus::Completed).await;
        stop.trigger();
        workers.await.unwrap();

        // Five steps, five starts; each start carries the previous step's
        // outcome and order event, the release the last one's: the order's
        // four step events and its confirmation rode on the saga's writes.
        let commits = counting.appends_per_commit.lock().unwrap().clone();
        assert_eq!(commits, vec![0, 1, 1, 1, 1, 1], "{backend:?}");
    }
}
