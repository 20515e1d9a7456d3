//! The read models' storage: PostgreSQL, or the embedded SQLite file.
//!
//! Projection code is shared ([`crate::projections`] folds events into rows);
//! each backend only loads and upserts rows ([`postgres`], [`sqlite`]), keeps
//! the checkpoints and answers the queries. Upserts never lower a row's
//! version (`ON CONFLICT .. WHERE version < excluded.version`). What a
//! rebuild needs (shadow tables, swap) is in [`shadows`].

pub mod postgres;
pub mod shadows;
pub mod sqlite;

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

pub use self::{postgres::PgModel, shadows::shadow_table, sqlite::SqliteModel};
use crate::{
    db::Db,
    domain::{
        money::{Currency, Money, MoneyError},
        order::OrderStatus,
    },
    error::AppError,
    projections::{
        Decoded, Folded, Gap, ProjectionError, ReadModel, cart_conversion::ConversionFigures,
        customer_orders::OrderSummary, fold_decoded, order_detail::OrderDetail,
    },
    store::event_store::StoredEvent,
};

/// A read model both backends can store.
pub trait StoredModel: ReadModel + PgModel + SqliteModel {}
impl<T: ReadModel + PgModel + SqliteModel> StoredModel for T {}

/// Read-model storage failures.
#[derive(Debug, thiserror::Error)]
pub enum ReadModelError {
    /// An event that can never be applied.
    #[error(transparent)]
    Poison(#[from] ProjectionError),
    /// The checkpoint moved under the caller (a rebuild swapped the tables):
    /// nothing was written; reload the checkpoint.
    #[error("checkpoint of {0} moved")]
    CheckpointMoved(String),
    /// A batch that moves the checkpoint met streams behind a gap: nothing was
    /// written (the checkpoint must not pass an unapplied event).
    #[error("{} stream(s) behind a gap", .0.len())]
    Gaps(Vec<Gap>),
    /// The database is unreachable or busy; retry later.
    #[error("read models unavailable: {0}")]
    Unavailable(String),
    /// Anything else.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<sqlx::Error> for ReadModelError {
    fn from(err: sqlx::Error) -> Self {
        if crate::db::is_transient(&err) {
            Self::Unavailable(err.to_string())
        } else {
            Self::Other(anyhow::Error::new(err).context("read model query"))
        }
    }
}

impl From<ReadModelError> for AppError {
    fn from(err: ReadModelError) -> Self {
        match err {
            ReadModelError::Unavailable(msg) => AppError::Unavailable(msg),
            other => AppError::Internal(anyhow::Error::new(other)),
        }
    }
}

/// A projection's checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checkpoint {
    /// Last global position swept.
    pub position: i64,
    /// Bumped by every rebuild swap.
    pub generation: i64,
}

/// Moves a checkpoint from `from` to `to`, in the transaction of the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advance {
    /// The checkpoint the caller read.
    pub from: Checkpoint,
    /// The new position.
    pub to: i64,
}

/// A projection's checkpoint row, for status reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointStatus {
    /// Projection name.
    pub name: String,
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// A rebuild is running.
    pub rebuilding: bool,
    /// Events the rebuild replayed so far.
    pub rebuild_replayed: i64,
    /// Events the rebuild has to replay.
    pub rebuild_total: i64,
    /// When the rebuild last reported progress.
    pub rebuild_heartbeat_at: Option<DateTime<Utc>>,
}

/// ListOrders' keyset: the last row of the previous page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListCursor {
    /// Its creation time.
    pub created_at: DateTime<Utc>,
    /// Its id (ties on time).
    pub order_id: Uuid,
}

/// A ListOrders page request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Only this customer's orders; None: every order (admins).
    pub customer_id: Option<String>,
    /// Only this status.
    pub status: Option<OrderStatus>,
    /// Strictly after this row (newest first).
    pub after: Option<ListCursor>,
    /// At most this many.
    pub limit: i64,
}

/// The read models on one database.
#[derive(Clone, Debug)]
pub enum ReadModelStore {
    /// PostgreSQL.
    Postgres(sqlx::PgPool),
    /// The embedded SQLite file.
    Sqlite(sqlx::SqlitePool),
}

impl ReadModelStore {
    /// The store on `db`.
    pub fn new(db: &Db) -> Self {
        match db {
            Db::Postgres(pool) => Self::Postgres(pool.clone()),
            Db::Sqlite(pool) => Self::Sqlite(pool.clone()),
        }
    }

    /// Applies `events` to `table` (the live table or a rebuild's shadow) in
    /// one transaction, each at its stream's next version; with `advance`, the
    /// projection's checkpoint moves in the same transaction (or nothing is
    /// written: [`ReadModelError::CheckpointMoved`]).
    pub async fn apply<R: StoredModel>(
        &self,
        table: &str,
        events: &[StoredEvent],
        advance: Option<Advance>,
    ) -> Result<Folded<R>, ReadModelError> {
        self.apply_decoded(table, &Decoded::all(events), advance).await
    }

    /// [`ReadModelStore::apply`] of events decoded once for several projections.
    pub async fn apply_decoded<R: StoredModel>(
        &self,
        table: &str,
        events: &[Decoded<'_>],
        advance: Option<Advance>,
    ) -> Result<Folded<R>, ReadModelError> {
        let ids = distinct_streams(events);
        match self {
            Self::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                if let Some(advance) = advance {
                    postgres::advance(&mut tx, R::NAME, advance).await?;
                }
                let current = by_stream(R::load_pg(&mut tx, table, &ids).await?);
                let folded = fold_decoded::<R>(current, events)?;
                if advance.is_some() && !folded.gaps.is_empty() {
                    return Err(ReadModelError::Gaps(folded.gaps));
                }
                R::upsert_pg(&mut tx, table, &folded.changed).await?;
                tx.commit().await?;
                Ok(folded)
            }
            Self::Sqlite(pool) => {
                // IMMEDIATE: a read-then-write transaction in WAL mode would
                // fail (SQLITE_BUSY_SNAPSHOT) if another writer committed between.
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                if let Some(advance) = advance {
                    sqlite::advance(&mut tx, R::NAME, advance).await?;
                }
                let current = by_stream(R::load_sqlite(&mut tx, table, &ids).await?);
                let folded = fold_decoded::<R>(current, events)?;
                if advance.is_some() && !folded.gaps.is_empty() {
                    return Err(ReadModelError::Gaps(folded.gaps));
                }
                R::upsert_sqlite(&mut tx, table, &folded.changed).await?;
                tx.commit().await?;
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

/// A stored (currency code, amount) pair as domain money.
fn money_from(currency: String, amount: Decimal) -> sqlx::Result<(Currency, Money)> {
    let bad = |why: String| sqlx::Error::ColumnDecode {
        index: "total".into(),
        source: why.into(),
    };
    let currency: Currency = currency.parse().map_err(|e: MoneyError| bad(e.to_string()))?;
    let total = Money::from_decimal(amount, currency).map_err(|e| bad(e.to_string()))?;
    Ok((currency, total))
}

/// The streams of `events`, each once, in first-seen order.
pub fn distinct_streams(events: &[Decoded<'_>]) -> Vec<Uuid> {
    let mut seen = HashSet::new();
    events
        .iter()
        .map(|e| e.stored.stream_id)
        .filter(|id| seen.insert(*id))
        .collect()
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

fn by_stream<R: ReadModel>(rows: Vec<R>) -> HashMap<Uuid, R> {
    rows.into_iter().map(|row| (row.stream_id(), row)).collect()
}
