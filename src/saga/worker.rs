//! The worker pool of one replica: a claim loop that hands due sagas to at
//! most SAGA_WORKERS concurrent drives.
//!
//! The loop wakes when it is told a saga is due (an in-process [`Notify`],
//! and on PostgreSQL a `LISTEN commerce_sagas` fed by the 0004 trigger at
//! every saga creation or cancel request, from any replica), and otherwise
//! polls: a wake-up can be lost, a poll cannot. Backoffs are never slept
//! while holding a lease: a saga waiting to retry is released with its
//! `next_run_at` and claimed again when due, by whichever replica is free.

use std::{sync::Arc, time::Duration};

use tokio::{
    sync::{Notify, Semaphore},
    task::JoinSet,
};

use super::{engine::Engine, plan::SagaStatus};
use crate::{
    db::Db,
    metrics,
    shutdown::Shutdown,
    store::saga::{SagaRecord, SagaStore},
};

/// The claim loop's settings.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// Sagas driven at once (SAGA_WORKERS); each holds one at a time.
    pub workers: usize,
    /// Poll interval when nothing woke the loop.
    pub poll: Duration,
}

/// How often the `sagas` gauge is refreshed.
const GAUGE_EVERY: Duration = Duration::from_secs(5);

/// Runs the claim loop until `shutdown`, then waits for the drives in flight
/// (each stops before its next step and hands its saga back).
pub async fn run_pool(engine: Arc<Engine>, settings: PoolSettings, wake: Arc<Notify>, shutdown: Shutdown) {
    let slots = Arc::new(Semaphore::new(settings.workers.max(1)));
    let mut drives = JoinSet::new();
    let mut gauge_at = tokio::time::Instant::now();
    tracing::info!(owner = %engine.lease().owner, workers = settings.workers, "saga workers started");
    while !shutdown.is_triggered() {
        while drives.try_join_next().is_some() {}
        let free = slots.available_permits();
        let mut claimed = 0;
        if free > 0 {
            match engine.store().claim_due(engine.lease(), free).await {
                Ok(records) => {
                    claimed = records.len();
                    for record in records {
                        start_drive(&engine, &slots, &mut drives, record);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "claiming sagas failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        if tokio::time::Instant::now() >= gauge_at {
            gauge_at += GAUGE_EVERY;
            refresh_gauge(engine.store().as_ref()).await;
        }
        // A full batch means more may be due: claim again at once.
        if claimed > 0 && claimed == free {
            continue;
        }
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(settings.poll) => {}
            () = shutdown.wait() => {}
            Some(_) = drives.join_next(), if free == 0 => {}
        }
    }
    while drives.join_next().await.is_some() {}
    tracing::info!("saga workers stopped");
}

fn start_drive(engine: &Arc<Engine>, slots: &Arc<Semaphore>, drives: &mut JoinSet<()>, record: SagaRecord) {
    // Claims never exceed the free slots, so a permit is always available.
    let Ok(permit) = slots.clone().try_acquire_owned() else {
        tracing::error!(saga_id = %record.saga_id, "no free slot for a claimed saga; it resumes after its lease");
        return;
    };
    let engine = engine.clone();
    drives.spawn(async move {
        let _permit = permit;
        let _ = engine.drive(record).await;
    });
}

async fn refresh_gauge(store: &dyn SagaStore) {
    const ALL: [SagaStatus; 6] = [
        SagaStatus::Running,
        SagaStatus::Compensating,
        SagaStatus::Completed,
        SagaStatus::Compensated,
        SagaStatus::Failed,
        SagaStatus::CompensationFailed,
    ];
    if let Ok(counts) = store.count_by_status().await {
        let names: Vec<&'static str> = ALL.iter().map(|s| s.as_str()).collect();
        metrics::sagas_by_status(&names, counts.iter().map(|(s, n)| (s.as_str(), *n)));
    }
}

/// On PostgreSQL, turns `NOTIFY commerce_sagas` into wake-ups until
/// `shutdown`; reconnects after errors. Does nothing on SQLite (one process).
pub async fn listen_for_wakeups(db: Db, wake: Arc<Notify>, shutdown: Shutdown) {
    let Db::Postgres(shared) = db else { return };
    // Its own connection: a listener holds one for good, which must not come
    // out of the pool that serves requests.
    let options = shared.connect_options().as_ref().clone();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(options);
    while !shutdown.is_triggered() {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(error = %e, "saga wake-up listener cannot connect; polling only");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(2)) => continue,
                    () = shutdown.wait() => return,
                }
            }
        };
        if let Err(e) = listener.listen("commerce_sagas").await {
            tracing::warn!(error = %e, "LISTEN commerce_sagas failed");
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        loop {
            tokio::select! {
                received = listener.recv() => match received {
                    Ok(_) => wake.notify_one(),
                    Err(e) => {
                        tracing::warn!(error = %e, "saga wake-up listener lost its connection");
                        break;
                    }
                },
                () = shutdown.wait() => return,
            }
        }
    }
}
