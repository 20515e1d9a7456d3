//! Units of work on PostgreSQL, group-committed: a batch of units shares one
//! transaction, their events one statement (per round of distinct streams),
//! then each unit's saga and idempotency parts in queue order. A unit whose
//! stream moved is refused by the statement's guard and the batch goes on; a
//! unit that fails in a later part (a lost lease, a key never claimed) fails
//! the batch's transaction, which then runs every unit again alone
//! ([`crate::store::group_commit`]).

use std::{
    sync::{Arc, OnceLock},
    time::Instant,
};

use async_trait::async_trait;
use sqlx::{PgConnection, PgPool};

use super::{Committed, UnitOfWork, UnitOfWorkCommitter, UnitOfWorkError, check_unit, explain_refused};
use crate::store::{
    event_store::{APPENDED, AppendWritten, PostgresEventStore, StreamAppend, Upcasters},
    group_commit::{self, BatchWriter, GroupCommit},
    idempotency::PostgresIdempotencyStore,
    saga::{CancelFlag, PostgresSagaStore},
};

/// The unit-of-work committer on PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresUnitOfWork {
    pool: PgPool,
    /// Explains refused appends.
    events: PostgresEventStore,
    /// Started by the first commit (it needs the runtime), shared by clones.
    writers: Arc<OnceLock<GroupCommit<UnitWriter>>>,
    group_commit: bool,
}

impl PostgresUnitOfWork {
    /// A committer on `pool` (migrated); `group_commit` off commits every
    /// unit in a transaction of its own.
    pub fn new(pool: PgPool, upcasters: Upcasters, group_commit: bool) -> Self {
        Self {
            events: PostgresEventStore::new(pool.clone(), upcasters),
            pool,
            writers: Arc::default(),
            group_commit,
        }
    }

    fn writers(&self) -> &GroupCommit<UnitWriter> {
        self.writers
            .get_or_init(|| GroupCommit::start(self.pool.clone(), UnitWriter))
    }
}

#[async_trait]
impl UnitOfWorkCommitter for PostgresUnitOfWork {
    #[tracing::instrument(skip_all, fields(appends = unit.appends.len()))]
    async fn commit(&self, unit: UnitOfWork) -> Result<Committed, UnitOfWorkError> {
        check_unit(&unit)?;
        let started = Instant::now();
        let outcome = if self.group_commit {
            self.writers()
                .submit(unit.clone())
                .await
                .ok_or_else(|| UnitOfWorkError::Unavailable("unit of work writers stopped".into()))?
        } else {
            group_commit::commit_alone(&self.pool, &UnitWriter, &unit).await
        };
        match outcome? {
            Some(written) => {
                if !written.appended.is_empty() {
                    APPENDED.notify_one();
                    crate::metrics::event_store_append("postgres", started.elapsed());
                }
                Ok(Committed {
                    appended: written
                        .appended
                        .into_iter()
                        .map(AppendWritten::into_result)
                        .collect(),
                    cancel_flag: written.cancel_flag,
                })
            }
            None => explain_refused(&self.events, &unit).await,
        }
    }
}

/// What a written unit reports.
struct UnitWritten {
    appended: Vec<AppendWritten>,
    cancel_flag: Option<CancelFlag>,
}

/// Writes batches of units: every owner's writer, in turn.
struct UnitWriter;

#[async_trait]
impl BatchWriter for UnitWriter {
    type Item = UnitOfWork;
    type Written = UnitWritten;
    type Error = UnitOfWorkError;

    async fn write(
        &self,
        conn: &mut PgConnection,
        units: &[&UnitOfWork],
    ) -> Result<Vec<Option<UnitWritten>>, UnitOfWorkError> {
        let appends: Vec<&StreamAppend> = units.iter().flat_map(|u| u.appends.iter()).collect();
        let mut appended = PostgresEventStore::write_appends(conn, &appends)
            .await?
            .into_iter();
        let mut outcomes = Vec::with_capacity(units.len());
        for unit in units {
            let mine: Vec<Option<AppendWritten>> = appended.by_ref().take(unit.appends.len()).collect();
            let written: Vec<AppendWritten> = mine.iter().flatten().cloned().collect();
            if written.len() < mine.len() {
                if !written.is_empty() && units.len() > 1 {
                    // Some of its streams moved, some did not: the batch
                    // rolls back and this unit is refused alone.
                    return Err(anyhow::anyhow!("a unit of work was refused in part").into());
                }
                outcomes.push(None);
                continue;
            }
            let cancel_flag = match &unit.saga {
                Some(part) => PostgresSagaStore::write_part(conn, part, ()).await?,
                None => None,
            };
            if let Some(done) = &unit.idempotency {
                PostgresIdempotencyStore::complete(conn, done).await?;
            }
            outcomes.push(Some(UnitWritten {
                appended: written,
                cancel_flag,
            }));
        }
        Ok(outcomes)
    }

    fn is_refusal(err: &UnitOfWorkError) -> bool {
        err.is_unique_violation()
    }

    fn batch_error(err: &sqlx::Error) -> UnitOfWorkError {
        if let Some(why) = crate::db::unavailable(err) {
            UnitOfWorkError::Unavailable(why)
        } else {
            UnitOfWorkError::Other(anyhow::anyhow!("unit of work batch: {err}"))
        }
    }
}
