//! The read models' storage: the [`ReadModels`] port, with a PostgreSQL and
//! a SQLite implementation side by side ([`PostgresReadModels`],
//! [`SqliteReadModels`]).
//!
//! The store keeps rows ([`rows`]), not projections: it loads the rows a batch
//! touches, hands them to the caller's fold ([`ReadModels::update`]) and
//! upserts what comes back, in one transaction that may also move the
//! projection's checkpoint. What a row is computed from is
//! [`crate::projections`]' business. Upserts never lower a row's version
//! (`ON CONFLICT .. WHERE version < excluded.version`). A rebuild fills
//! shadow tables (`<table>_rebuild`, same columns and indexes) and swaps them
//! in with the checkpoints in one transaction.
//!
//! # One implementation, two dialects
//! Row mapping is written once ([`mapping`]: one `FromRow` struct per row,
//! values bound in column order), and so is every method whose statements
//! differ only in their text: the `sql_read_models!` macro of `shared.rs`,
//! expanded by each backend's file, which holds that backend's SQL and what
//! really differs (PostgreSQL upserts a batch through `UNNEST` arrays, SQLite
//! through multi-row `VALUES`; shadow tables; the conversion figures, which
//! SQLite sums in Rust because its decimals are TEXT).
//!
//! # Why an enum in front of the trait
//! [`ReadModels::update`] is generic over the row and the caller's fold, so
//! the port cannot be a trait object as the other stores' are. Startup picks
//! a [`ReadModelStore`], which dispatches to the configured backend statically.

#[macro_use]
mod shared;
mod mapping;
mod postgres;
pub mod rows;
mod sqlite;
mod types;

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use self::{
    mapping::StoredModel,
    postgres::PostgresReadModels,
    rows::{ConversionFigures, OrderDetail, OrderSummary, StoredRow},
    sqlite::SqliteReadModels,
    types::{Advance, Checkpoint, CheckpointStatus, Guard, ListCursor, ListQuery, ReadModelError},
};
use crate::error::AppError;

/// The shadow table a rebuild fills for `table`.
pub fn shadow_table(table: &str) -> String {
    format!("{table}_rebuild")
}

/// What a fold handed to [`ReadModels::update`] returns: the rows it changed
/// (upserted by the store), and whatever else the caller wants back.
pub trait ChangedRows<R> {
    /// The rows to upsert.
    fn changed(&self) -> &[R];
}

/// The read models' rows, checkpoints and rebuilds on one database.
#[async_trait]
pub trait ReadModels: Send + Sync {
    /// Loads the rows of `ids` from `table` (the live table or a rebuild's
    /// shadow), hands them to `fold` and upserts the rows it changed, in one
    /// transaction. With a `guard` on projection `name` (the sweep, and
    /// folds that start from rows kept in memory), the rows are loaded just
    /// before the write, and the guard is checked in the write of the upsert
    /// (one statement on PostgreSQL), or nothing is written
    /// ([`ReadModelError::CheckpointMoved`]); loading outside the write is safe
    /// because an upsert never lowers a version. No `ids`, no read at all. An
    /// error from `fold` writes nothing.
    async fn update<R, F, E, Fold>(
        &self,
        table: &str,
        ids: &[Uuid],
        guard: Option<(&str, Guard)>,
        fold: Fold,
    ) -> Result<F, E>
    where
        R: StoredModel,
        F: ChangedRows<R> + Send,
        E: From<ReadModelError> + Send,
        Fold: FnOnce(HashMap<Uuid, R>) -> Result<F, E> + Send;

    /// The rows of `ids` in `table`, outside a transaction (the rebuild, sole
    /// writer of its shadow tables).
    async fn load<R: StoredModel>(&self, table: &str, ids: &[Uuid]) -> Result<Vec<R>, ReadModelError>;

    /// Upserts `rows` into `table` (never lowering a version).
    async fn upsert<R: StoredModel>(&self, table: &str, rows: &[R]) -> Result<(), ReadModelError>;

    /// Every projection's checkpoint row.
    async fn checkpoints(&self) -> Result<Vec<CheckpointStatus>, ReadModelError>;

    /// A page of order summaries, newest first.
    async fn list_orders(&self, query: &ListQuery) -> Result<Vec<OrderSummary>, ReadModelError>;

    /// Cart conversion figures per UTC day and currency, for carts converted
    /// in `[since, until)`.
    async fn conversion_figures(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<ConversionFigures>, ReadModelError>;

    /// Marks projections `names` as rebuilding, expecting `total` events;
    /// refused (ABORTED) while another rebuild of one of them reports.
    async fn begin_rebuild(&self, names: &[&str], total: i64) -> Result<(), AppError>;

    /// Reports rebuild progress (also the heartbeat that keeps the claim).
    async fn rebuild_progress(&self, names: &[&str], replayed: i64, total: i64)
    -> Result<(), ReadModelError>;

    /// Clears the rebuilding mark of `names` (a rebuild failed or finished).
    async fn end_rebuild(&self, names: &[&str]) -> Result<(), ReadModelError>;

    /// (Re)creates the empty shadow of each live table, same columns and indexes.
    async fn create_shadows(&self, tables: &[&str]) -> Result<(), ReadModelError>;

    /// Drops the shadows (a failed rebuild).
    async fn drop_shadows(&self, tables: &[&str]) -> Result<(), ReadModelError>;

    /// Swaps every shadow in for its live table in one transaction, and sets
    /// the projections' checkpoints to `position` (bumping their generation,
    /// so a sweep still working on the old tables writes nothing).
    async fn swap_shadows(&self, swaps: &[(&str, &str)], position: i64) -> Result<(), ReadModelError>;

    /// The stored versions of `ids` in `R`'s live table (absent: 0).
    async fn versions<R: StoredModel>(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, u64>, ReadModelError> {
        let rows = self.load::<R>(R::TABLE, ids).await?;
        Ok(rows.iter().map(|row| (row.stream_id(), row.version())).collect())
    }

    /// The checkpoint of projection `name`.
    async fn checkpoint(&self, name: &str) -> Result<Checkpoint, ReadModelError> {
        Ok(self
            .checkpoints()
            .await?
            .into_iter()
            .find(|status| status.name == name)
            .map(|status| status.checkpoint)
            .unwrap_or_default())
    }

    /// One order's detail row.
    async fn order_detail(&self, order_id: Uuid) -> Result<Option<OrderDetail>, ReadModelError> {
        Ok(self.load(OrderDetail::TABLE, &[order_id]).await?.pop())
    }
}

/// The read models of the configured database (startup picks the variant;
/// see [`crate::startup::stores`]).
#[derive(Clone, Debug)]
pub enum ReadModelStore {
    /// PostgreSQL.
    Postgres(PostgresReadModels),
    /// The embedded SQLite file.
    Sqlite(SqliteReadModels),
}

/// `$call` on the configured backend, bound to `$store`.
macro_rules! on_backend {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            Self::Postgres($store) => $call.await,
            Self::Sqlite($store) => $call.await,
        }
    };
}

#[async_trait]
impl ReadModels for ReadModelStore {
    async fn update<R, F, E, Fold>(
        &self,
        table: &str,
        ids: &[Uuid],
        guard: Option<(&str, Guard)>,
        fold: Fold,
    ) -> Result<F, E>
    where
        R: StoredModel,
        F: ChangedRows<R> + Send,
        E: From<ReadModelError> + Send,
        Fold: FnOnce(HashMap<Uuid, R>) -> Result<F, E> + Send,
    {
        on_backend!(self, store => store.update(table, ids, guard, fold))
    }

    async fn load<R: StoredModel>(&self, table: &str, ids: &[Uuid]) -> Result<Vec<R>, ReadModelError> {
        on_backend!(self, store => store.load(table, ids))
    }

    async fn upsert<R: StoredModel>(&self, table: &str, rows: &[R]) -> Result<(), ReadModelError> {
        on_backend!(self, store => store.upsert(table, rows))
    }

    async fn checkpoints(&self) -> Result<Vec<CheckpointStatus>, ReadModelError> {
        on_backend!(self, store => store.checkpoints())
    }

    async fn list_orders(&self, query: &ListQuery) -> Result<Vec<OrderSummary>, ReadModelError> {
        on_backend!(self, store => store.list_orders(query))
    }

    async fn conversion_figures(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<ConversionFigures>, ReadModelError> {
        on_backend!(self, store => store.conversion_figures(since, until))
    }

    async fn begin_rebuild(&self, names: &[&str], total: i64) -> Result<(), AppError> {
        on_backend!(self, store => store.begin_rebuild(names, total))
    }

    async fn rebuild_progress(
        &self,
        names: &[&str],
        replayed: i64,
        total: i64,
    ) -> Result<(), ReadModelError> {
        on_backend!(self, store => store.rebuild_progress(names, replayed, total))
    }

    async fn end_rebuild(&self, names: &[&str]) -> Result<(), ReadModelError> {
        on_backend!(self, store => store.end_rebuild(names))
    }

    async fn create_shadows(&self, tables: &[&str]) -> Result<(), ReadModelError> {
        on_backend!(self, store => store.create_shadows(tables))
    }

    async fn drop_shadows(&self, tables: &[&str]) -> Result<(), ReadModelError> {
        on_backend!(self, store => store.drop_shadows(tables))
    }

    async fn swap_shadows(&self, swaps: &[(&str, &str)], position: i64) -> Result<(), ReadModelError> {
        on_backend!(self, store => store.swap_shadows(swaps, position))
    }
}

/// A generation guard's check, the same on both databases: a row when
/// projection `$1`'s live table is still of generation `$2`.
const LIVE: &str = "SELECT name FROM projection_checkpoints WHERE name = $1 AND generation = $2";

fn by_stream<R: StoredRow>(rows: Vec<R>) -> HashMap<Uuid, R> {
    rows.into_iter().map(|row| (row.stream_id(), row)).collect()
}
