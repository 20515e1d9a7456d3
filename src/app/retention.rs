//! Retention: what finished work leaves behind is deleted once it is older
//! than its configured age ([`RetentionSettings`]), so the tables stop growing
//! with the order count.
//!
//! | data | owner (the only module whose SQL deletes it) | age counts from |
//! |---|---|---|
//! | finished sagas (COMPLETED, COMPENSATED), their steps, attempts, operator actions | [`crate::store::saga`] | the saga's last change |
//! | CreateOrder idempotency keys | [`crate::store::idempotency`] | the answer's recording (a dead claim: its lease's end too) |
//! | dead letters | [`crate::bus`] | dead-lettering |
//!
//! The event log is never purged: an order's stream is its history (and a
//! saga's audit stream the record of its operator actions).
//!
//! This module owns no table: it asks each owner in turn, in batches of
//! `RETENTION_BATCH_SIZE` rows, so no statement holds locks for long. The
//! background job runs on one replica at a time ([`Db::try_lead`]: a session
//! advisory lock on PostgreSQL); `commerce
//! purge` runs the same code once, `--dry-run` only counting.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::{
    bus::EventBus,
    config::RetentionSettings,
    db::Db,
    shutdown::Shutdown,
    store::{Purge, idempotency::IdempotencyStore, saga::SagaPurge, saga::SagaStore},
};

/// Key of the retention job's advisory lock ("retain" in ASCII).
pub const LEADER_KEY: i64 = 0x7265_7461_696e;

/// Batches one run deletes per owner at most, so that a run always ends
/// (rows that keep aging in meanwhile wait for the next run).
const MAX_BATCHES: usize = 10_000;

/// What one run deleted (or, dry, would delete), per table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Finished sagas and their rows.
    pub sagas: SagaPurge,
    /// `idempotency_keys` rows.
    pub idempotency_keys: u64,
    /// Entries of the dead-letter stream.
    pub dead_letters: u64,
    /// The cutoffs used: data older than these went.
    pub cutoffs: Cutoffs,
}

impl PurgeReport {
    /// `(table, rows)` in a fixed order: the metric labels and `commerce purge`'s lines.
    pub fn tables(&self) -> [(&'static str, u64); 6] {
        [
            ("sagas", self.sagas.sagas),
            ("saga_steps", self.sagas.steps),
            ("saga_attempts", self.sagas.attempts),
            ("saga_operator_actions", self.sagas.operator_actions),
            ("idempotency_keys", self.idempotency_keys),
            ("dead_letters", self.dead_letters),
        ]
    }
}

/// The moments before which each kind of data goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cutoffs {
    /// Finished sagas last changed before.
    pub sagas: DateTime<Utc>,
    /// Idempotency keys answered before.
    pub idempotency_keys: DateTime<Utc>,
    /// Dead letters dead-lettered before.
    pub dead_letters: DateTime<Utc>,
}

impl Cutoffs {
    /// The cutoffs of `settings` at `now`.
    pub fn at(settings: &RetentionSettings, now: DateTime<Utc>) -> Self {
        let before = |age: Duration| now - TimeDelta::from_std(age).unwrap_or(TimeDelta::MAX);
        Self {
            sagas: before(settings.sagas),
            idempotency_keys: before(settings.idempotency),
            dead_letters: before(settings.dead_letters),
        }
    }
}

/// The retention job and `commerce purge`.
#[derive(Clone)]
pub struct Retention {
    settings: RetentionSettings,
    db: Db,
    sagas: std::sync::Arc<dyn SagaStore>,
    idempotency_keys: std::sync::Arc<dyn IdempotencyStore>,
    bus: std::sync::Arc<dyn EventBus>,
}

/// The owners [`Retention`] asks.
pub struct RetentionStores {
    /// Sagas and their rows.
    pub sagas: std::sync::Arc<dyn SagaStore>,
    /// CreateOrder idempotency keys.
    pub idempotency_keys: std::sync::Arc<dyn IdempotencyStore>,
    /// The bus (dead letters).
    pub bus: std::sync::Arc<dyn EventBus>,
}

impl Retention {
    /// Retention of the data in `stores`, led through `db`.
    pub fn new(settings: RetentionSettings, db: Db, stores: RetentionStores) -> Self {
        Self {
            settings,
            db,
            sagas: stores.sagas,
            idempotency_keys: stores.idempotency_keys,
            bus: stores.bus,
        }
    }

    /// One run at `now`: counts (`dry_run`) or deletes everything past its
    /// age. `None` when another replica holds the job.
    #[tracing::instrument(skip(self))]
    pub async fn run(&self, now: DateTime<Utc>, dry_run: bool) -> anyhow::Result<Option<PurgeReport>> {
        let Some(leadership) = self.db.try_lead(LEADER_KEY).await? else {
            return Ok(None);
        };
        let result = self.purge(Cutoffs::at(&self.settings, now), dry_run).await;
        leadership.release().await;
        let report = result?;
        if !dry_run {
            crate::metrics::retention_run(&report.tables());
        }
        tracing::info!(dry_run, purged = ?report.tables(), "retention run");
        Ok(Some(report))
    }

    async fn purge(&self, cutoffs: Cutoffs, dry_run: bool) -> anyhow::Result<PurgeReport> {
        let batch = self.settings.batch;
        let mut report = PurgeReport {
            cutoffs,
            ..PurgeReport::default()
        };
        if dry_run {
            report.sagas = self.sagas.purge_finished(cutoffs.sagas, Purge::Count).await?;
            report.idempotency_keys = self
                .idempotency_keys
                .purge(cutoffs.idempotency_keys, Purge::Count)
                .await?;
            report.dead_letters = self
                .bus
                .purge_dead_letters(cutoffs.dead_letters, Purge::Count)
                .await?;
            return Ok(report);
        }
        let delete = Purge::Delete(batch);
        for _ in 0..MAX_BATCHES {
            let gone = self.sagas.purge_finished(cutoffs.sagas, delete).await?;
            report.sagas.sagas += gone.sagas;
            report.sagas.steps += gone.steps;
            report.sagas.attempts += gone.attempts;
            report.sagas.operator_actions += gone.operator_actions;
            if gone.sagas < batch as u64 {
                break;
            }
        }
        for _ in 0..MAX_BATCHES {
            let gone = self
                .idempotency_keys
                .purge(cutoffs.idempotency_keys, delete)
                .await?;
            report.idempotency_keys += gone;
            if gone < batch as u64 {
                break;
            }
        }
        report.dead_letters = self.bus.purge_dead_letters(cutoffs.dead_letters, delete).await?;
        Ok(report)
    }

    /// The background job: a run every RETENTION_INTERVAL_SECONDS (the first
    /// one interval after the start) until `shutdown`; nothing when the
    /// interval is 0. A failed run is logged and tried again next time.
    pub async fn run_periodically(self, shutdown: Shutdown) {
        let interval = self.settings.interval;
        if interval.is_zero() {
            tracing::info!("RETENTION_INTERVAL_SECONDS=0: no retention job (commerce purge only)");
            return;
        }
        loop {
            tokio::select! {
                () = shutdown.wait() => return,
                () = tokio::time::sleep(interval) => {}
            }
            match self.run(Utc::now(), false).await {
                Ok(Some(_)) => {}
                Ok(None) => tracing::debug!("retention: another replica runs it"),
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "retention run failed; retried next interval")
                }
            }
        }
    }
}
