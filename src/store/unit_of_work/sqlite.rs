//! Units of work on SQLite: one `BEGIN IMMEDIATE` transaction per unit (the
//! write lock is taken before any version is read, so every check stays true
//! until the commit), each owner's writer in turn.

use async_trait::async_trait;
use chrono::Utc;
use sqlx::SqlitePool;

use super::{Committed, UnitOfWork, UnitOfWorkCommitter, UnitOfWorkError, check_unit, explain_refused};
use crate::store::{
    event_store::{APPENDED, AppendWritten, SqliteEventStore, Upcasters},
    idempotency::SqliteIdempotencyStore,
    saga::SqliteSagaStore,
};

/// The unit-of-work committer on SQLite.
#[derive(Debug, Clone)]
pub struct SqliteUnitOfWork {
    pool: SqlitePool,
    /// Explains refused appends.
    events: SqliteEventStore,
}

impl SqliteUnitOfWork {
    /// A committer on `pool` (migrated).
    pub fn new(pool: SqlitePool, upcasters: Upcasters) -> Self {
        Self {
            events: SqliteEventStore::new(pool.clone(), upcasters),
            pool,
        }
    }
}

#[async_trait]
impl UnitOfWorkCommitter for SqliteUnitOfWork {
    #[tracing::instrument(skip_all, fields(appends = unit.appends.len()))]
    async fn commit(&self, unit: UnitOfWork) -> Result<Committed, UnitOfWorkError> {
        check_unit(&unit)?;
        let started = std::time::Instant::now();
        // One time for every part, in milliseconds: what a later read returns.
        let now = Utc::now().timestamp_millis();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut appended = Vec::with_capacity(unit.appends.len());
        for append in &unit.appends {
            let written = SqliteEventStore::write_append(&mut tx, append, now)
                .await
                .map_err(|e| UnitOfWorkError::from_events(append.stream_id, e))?;
            match written {
                Some(written) => appended.push(written),
                None => {
                    tx.rollback().await?;
                    return explain_refused(&self.events, &unit).await;
                }
            }
        }
        let cancel_flag = match &unit.saga {
            Some(part) => SqliteSagaStore::write_part(&mut tx, part, now).await?,
            None => None,
        };
        if let Some(done) = &unit.idempotency {
            SqliteIdempotencyStore::complete(&mut tx, done).await?;
        }
        tx.commit().await?;
        if !appended.is_empty() {
            APPENDED.notify_one();
            crate::metrics::event_store_append("sqlite", started.elapsed());
        }
        Ok(Committed {
            appended: appended.into_iter().map(AppendWritten::into_result).collect(),
            cancel_flag,
        })
    }
}
