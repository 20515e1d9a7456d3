//! The read models' storage: PostgreSQL, or the embedded SQLite file.
//!
//! The store keeps rows ([`rows`]), not projections: it loads the rows a batch
//! touches, hands them to the caller's fold ([`ReadModelStore::update`]) and
//! upserts what comes back, in one transaction that may also move the
//! projection's checkpoint. What a row is computed from is
//! [`crate::projections`]' business. Each backend only maps rows in and out
//! ([`postgres`], [`sqlite`]), keeps the checkpoints and answers the queries.
//! Upserts never lower a row's version (`ON CONFLICT .. WHERE version <
//! excluded.version`). What a rebuild needs (shadow tables, swap) is in
//! [`shadows`].

pub mod postgres;
pub mod rows;
pub mod shadows;
pub mod sqlite;
mod types;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use self::{
    postgres::PgModel,
    rows::{ConversionFigures, OrderDetail, OrderSummary, StoredRow},
    shadows::shadow_table,
    sqlite::SqliteModel,
    types::{Advance, Checkpoint, CheckpointStatus, ListCursor, ListQuery, ReadModelError},
};

/// A row both backends can store.
pub trait StoredModel: StoredRow + PgModel + SqliteModel {}
impl<T: StoredRow + PgModel + SqliteModel> StoredModel for T {}

/// What a fold handed to [`ReadModelStore::update`] returns: the rows it changed
/// (upserted by the store), and whatever else the caller wants back.
pub trait ChangedRows<R> {
    /// The rows to upsert.
    fn changed(&self) -> &[R];
}

/// The read models on one database (startup picks the variant; see
/// [`crate::startup::stores`]).
#[derive(Clone, Debug)]
pub enum ReadModelStore {
    /// PostgreSQL.
    Postgres(sqlx::PgPool),
    /// The embedded SQLite file.
    Sqlite(sqlx::SqlitePool),
}

impl ReadModelStore {
    /// Loads the rows of `ids` from `table` (the live table or a rebuild's
    /// shadow), hands them to `fold` and upserts the rows it changed, in one
    /// transaction; with `advance`, checkpoint `name` moves in the same
    /// transaction (or nothing is written: [`ReadModelError::CheckpointMoved`]).
    /// An error from `fold` writes nothing.
    pub async fn update<R, F, E>(
        &self,
        table: &str,
        ids: &[Uuid],
        advance: Option<(&str, Advance)>,
        fold: impl FnOnce(HashMap<Uuid, R>) -> Result<F, E> + Send,
    ) -> Result<F, E>
    where
        R: StoredModel,
        F: ChangedRows<R> + Send,
        E: From<ReadModelError>,
    {
        let store = |e: sqlx::Error| E::from(ReadModelError::from(e));
        match self {
            Self::Postgres(pool) => {
                let mut tx = pool.begin().await.map_err(store)?;
                if let Some((name, advance)) = advance {
                    postgres::advance(&mut tx, name, advance).await?;
                }
                let current = by_stream(R::load_pg(&mut tx, table, ids).await.map_err(store)?);
                let folded = fold(current)?;
                R::upsert_pg(&mut tx, table, folded.changed())
                    .await
                    .map_err(store)?;
                tx.commit().await.map_err(store)?;
                Ok(folded)
            }
            Self::Sqlite(pool) => {
                // IMMEDIATE: a read-then-write transaction in WAL mode would
                // fail (SQLITE_BUSY_SNAPSHOT) if another writer committed between.
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(store)?;
                if let Some((name, advance)) = advance {
                    sqlite::advance(&mut tx, name, advance).await?;
                }
                let current = by_stream(R::load_sqlite(&mut tx, table, ids).await.map_err(store)?);
                let folded = fold(current)?;
                R::upsert_sqlite(&mut tx, table, folded.changed())
                    .await
                    .map_err(store)?;
                tx.commit().await.map_err(store)?;
                Ok(folded)
            }
        }
    }

    /// The stored versions of `ids` in `R`'s live table (absent: 0).
    pub async fn versions<R: StoredModel>(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, u64>, ReadModelError> {
        let rows = self.load::<R>(R::TABLE, ids).await?;
        Ok(rows.iter().map(|row| (row.stream_id(), row.version())).collect())
    }

    /// The checkpoint of projection `name`.
    pub async fn checkpoint(&self, name: &str) -> Result<Checkpoint, ReadModelError> {
        Ok(self
            .checkpoints()
            .await?
            .into_iter()
            .find(|status| status.name == name)
            .map(|status| status.checkpoint)
            .unwrap_or_default())
    }

    /// Every projection's checkpoint row.
    pub async fn checkpoints(&self) -> Result<Vec<CheckpointStatus>, ReadModelError> {
        match self {
            Self::Postgres(pool) => postgres::checkpoints(pool).await,
            Self::Sqlite(pool) => sqlite::checkpoints(pool).await,
        }
    }

    /// One order's detail row.
    pub async fn order_detail(&self, order_id: Uuid) -> Result<Option<OrderDetail>, ReadModelError> {
        let rows = match self {
            Self::Postgres(pool) => {
                OrderDetail::load_pg(&mut *pool.acquire().await?, OrderDetail::TABLE, &[order_id]).await?
            }
            Self::Sqlite(pool) => {
                OrderDetail::load_sqlite(&mut *pool.acquire().await?, OrderDetail::TABLE, &[order_id]).await?
            }
        };
        Ok(rows.into_iter().next())
    }

    /// A page of order summaries, newest first.
    pub async fn list_orders(&self, query: &ListQuery) -> Result<Vec<OrderSummary>, ReadModelError> {
        match self {
            Self::Postgres(pool) => postgres::list_orders(pool, query).await,
            Self::Sqlite(pool) => sqlite::list_orders(pool, query).await,
        }
    }

    /// Cart conversion figures per UTC day and currency, for carts converted
    /// in `[since, until)`.
    pub async fn conversion_figures(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<ConversionFigures>, ReadModelError> {
        match self {
            Self::Postgres(pool) => postgres::conversion_figures(pool, since, until).await,
            Self::Sqlite(pool) => sqlite::conversion_figures(pool, since, until).await,
        }
    }
}

impl ReadModelStore {
    /// The rows of `ids` in `table`, outside a transaction (the rebuild, sole
    /// writer of its shadow tables).
    pub async fn load<R: StoredModel>(&self, table: &str, ids: &[Uuid]) -> Result<Vec<R>, ReadModelError> {
        Ok(match self {
            Self::Postgres(pool) => R::load_pg(&mut *pool.acquire().await?, table, ids).await?,
            Self::Sqlite(pool) => R::load_sqlite(&mut *pool.acquire().await?, table, ids).await?,
        })
    }

    /// Upserts `rows` into `table` (never lowering a version).
    pub async fn upsert<R: StoredModel>(&self, table: &str, rows: &[R]) -> Result<(), ReadModelError> {
        match self {
            Self::Postgres(pool) => R::upsert_pg(&mut *pool.acquire().await?, table, rows).await?,
            Self::Sqlite(pool) => R::upsert_sqlite(&mut *pool.acquire().await?, table, rows).await?,
        }
        Ok(())
    }
}

fn by_stream<R: StoredRow>(rows: Vec<R>) -> HashMap<Uuid, R> {
    rows.into_iter().map(|row| (row.stream_id(), row)).collect()
}
