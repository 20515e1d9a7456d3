//! Read models in the embedded SQLite file: the statements of the shared
//! implementation (`shared.rs`), multi-row upserts, shadow tables from the
//! live tables' own DDL, and the conversion figures summed in Rust.
//! Conventions of migration 0003: UUIDs as TEXT, timestamps as INTEGER
//! milliseconds, JSON and decimals as TEXT.
//!
//! SQL-SAFE: every spliced name is a model's `TABLE` constant, its shadow
//! (`shadow_table`), a constant column list, or the live table's own DDL read
//! back from `sqlite_master` (shadow creation); all values are bound.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{AssertSqlSafe, QueryBuilder, Sqlite, SqliteConnection, SqlitePool, Transaction};

use super::{
    ConversionFigures, Guard, ReadModelError, StoredModel,
    mapping::ConversionColumns,
    rows::{CartConversion, Outcome},
};
use crate::store::columns::{DbList, DbTime};

/// [`super::ReadModels`] on SQLite (migration 0003 applied).
#[derive(Clone, Debug)]
pub struct SqliteReadModels {
    pool: SqlitePool,
}

impl SqliteReadModels {
    /// The read models on `pool` (migrated).
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

sql_read_models!(SqliteReadModels);

type Db = Sqlite;

/// IMMEDIATE: a read-then-write transaction in WAL mode would fail
/// (SQLITE_BUSY_SNAPSHOT) if another writer committed between.
async fn begin(pool: &SqlitePool) -> sqlx::Result<Transaction<'static, Sqlite>> {
    pool.begin_with("BEGIN IMMEDIATE").await
}

/// Rows per multi-row INSERT (SQLite binds at most 32766 parameters).
const CHUNK: usize = 500;

const IN_IDS: &str = "IN (SELECT value FROM json_each($1))";

const ADVANCE: &str = "UPDATE projection_checkpoints SET position = $2, \
     updated_at = CAST(unixepoch('subsec') * 1000 AS INTEGER) \
     WHERE name = $1 AND generation = $3 AND position = $4";

const BEGIN_REBUILD: &str = "UPDATE projection_checkpoints SET rebuilding = 1, rebuild_replayed = 0, \
         rebuild_total = $2, rebuild_started_at = CAST(unixepoch('subsec') * 1000 AS INTEGER), \
         rebuild_heartbeat_at = CAST(unixepoch('subsec') * 1000 AS INTEGER) \
     WHERE name IN (SELECT value FROM json_each($1)) \
       AND (rebuilding = 0 OR rebuild_heartbeat_at IS NULL \
            OR rebuild_heartbeat_at < CAST(unixepoch('subsec') * 1000 AS INTEGER) - 30000)";

const REBUILD_PROGRESS: &str = "UPDATE projection_checkpoints SET rebuild_replayed = $2, rebuild_total = $3, \
     rebuild_heartbeat_at = CAST(unixepoch('subsec') * 1000 AS INTEGER) \
     WHERE name IN (SELECT value FROM json_each($1))";

const END_REBUILD: &str = "UPDATE projection_checkpoints SET rebuilding = 0, \
     rebuild_heartbeat_at = CAST(unixepoch('subsec') * 1000 AS INTEGER) \
     WHERE name IN (SELECT value FROM json_each($1))";

/// Multi-row upserts of `rows`, a chunk at a time.
async fn upsert_rows<R: StoredModel>(
    conn: &mut SqliteConnection,
    table: &str,
    rows: &[R],
) -> sqlx::Result<()> {
    let updates: Vec<String> = R::COLUMNS[1..]
        .iter()
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    for chunk in rows.chunks(CHUNK) {
        let mut sql: QueryBuilder<Sqlite> =
            QueryBuilder::new(format!("INSERT INTO {table} ({}) ", R::COLUMNS.join(", ")));
        sql.push_values(chunk, |mut values, row| row.bind(&mut values));
        sql.push(format!(
            " ON CONFLICT (order_id) DO UPDATE SET {} WHERE {table}.version < excluded.version",
            updates.join(", ")
        ));
        sql.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Whether projection `name`'s live table is still of `generation`.
async fn is_live(conn: &mut SqliteConnection, name: &str, generation: i64) -> Result<bool, ReadModelError> {
    Ok(sqlx::query(super::LIVE)
        .bind(name)
        .bind(generation)
        .fetch_optional(conn)
        .await?
        .is_some())
}

/// A guarded write: checks `guard` on checkpoint `name` (the sweep's
/// compare-and-set moves it; a generation guard only reads it) and upserts
/// `rows`, in one IMMEDIATE transaction (or writes nothing:
/// [`ReadModelError::CheckpointMoved`]). IMMEDIATE serializes it with a
/// rebuild's swap, so the check holds for the upsert.
async fn upsert_guarded<R: StoredModel>(
    conn: &mut SqliteConnection,
    table: &str,
    name: &str,
    guard: Guard,
    rows: &[R],
) -> Result<(), ReadModelError> {
    if let (true, Guard::Generation(generation)) = (rows.is_empty(), guard) {
        // Nothing to write, but still checked (no transaction needed): a fold
        // that found only duplicates from rows of a swapped-out table must
        // learn it.
        return match is_live(conn, name, generation).await? {
            true => Ok(()),
            false => Err(ReadModelError::CheckpointMoved(name.to_string())),
        };
    }
    let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await?;
    let held = match guard {
        Guard::Advance(advance) => {
            sqlx::query(ADVANCE)
                .bind(name)
                .bind(advance.to)
                .bind(advance.from.generation)
                .bind(advance.from.position)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1
        }
        Guard::Generation(generation) => is_live(&mut tx, name, generation).await?,
    };
    if !held {
        return Err(ReadModelError::CheckpointMoved(name.to_string()));
    }
    upsert_rows(&mut tx, table, rows).await?;
    tx.commit().await?;
    Ok(())
}

/// Creates the shadow of `table` from the live table's own DDL in
/// `sqlite_master` (SQLite has no `CREATE TABLE .. LIKE`). Index names get a
/// fresh `__s<n>` suffix: the live table keeps its index names after a swap,
/// so the shadow's must differ.
async fn create_shadow(pool: &SqlitePool, table: &str, shadow: &str) -> Result<(), ReadModelError> {
    let ddl: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT type, name, sql FROM sqlite_master WHERE tbl_name = ?1 AND sql IS NOT NULL ORDER BY type DESC",
    )
    .bind(table)
    .fetch_all(pool)
    .await?;
    let suffix = Utc::now().timestamp_micros();
    for (kind, name, sql) in ddl {
        let body = |from: usize| sql.get(from..).unwrap_or_default().to_string();
        let statement = match kind.as_str() {
            "table" => {
                let open = sql
                    .find('(')
                    .ok_or_else(|| anyhow::anyhow!("odd DDL of {table}"))?;
                format!("CREATE TABLE {shadow} {}", body(open))
            }
            "index" => {
                let on = sql
                    .find(" ON ")
                    .ok_or_else(|| anyhow::anyhow!("odd DDL of index {name}"))?;
                let open = on
                    + sql[on..]
                        .find('(')
                        .ok_or_else(|| anyhow::anyhow!("odd DDL of {name}"))?;
                let base = name.split("__s").next().unwrap_or(&name);
                let unique = if sql.to_ascii_uppercase().starts_with("CREATE UNIQUE") {
                    "UNIQUE "
                } else {
                    ""
                };
                format!(
                    "CREATE {unique}INDEX {base}__s{suffix} ON {shadow} {}",
                    body(open)
                )
            }
            _ => continue,
        };
        sqlx::query(AssertSqlSafe(statement)).execute(pool).await?;
    }
    Ok(())
}

async fn swap_shadows(
    pool: &SqlitePool,
    swaps: &[(&str, &str)],
    position: i64,
) -> Result<(), ReadModelError> {
    let mut tx = begin(pool).await?;
    for (_, table) in swaps {
        let shadow = super::shadow_table(table);
        for sql in [
            format!("DROP TABLE {table}"),
            format!("ALTER TABLE {shadow} RENAME TO {table}"),
        ] {
            sqlx::query(AssertSqlSafe(sql)).execute(&mut *tx).await?;
        }
    }
    let names: Vec<&str> = swaps.iter().map(|(name, _)| *name).collect();
    sqlx::query(
        "UPDATE projection_checkpoints SET position = $2, generation = generation + 1, rebuilding = 0, \
             rebuild_heartbeat_at = CAST(unixepoch('subsec') * 1000 AS INTEGER), \
             updated_at = CAST(unixepoch('subsec') * 1000 AS INTEGER) \
         WHERE name IN (SELECT value FROM json_each($1))",
    )
    .bind(DbList(&names))
    .bind(position)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The figures summed in Rust: decimals are TEXT here, and SQLite would sum
/// them as floats.
async fn conversion_figures(
    pool: &SqlitePool,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Vec<ConversionFigures>, ReadModelError> {
    let sql = format!(
        "SELECT {} FROM cart_conversions WHERE converted_at >= $1 AND converted_at < $2 ORDER BY converted_at",
        CartConversion::COLUMNS.join(", ")
    );
    let rows: Vec<ConversionColumns> = sqlx::query_as(AssertSqlSafe(sql))
        .bind(DbTime(since))
        .bind(DbTime(until))
        .fetch_all(pool)
        .await?;
    let mut figures: Vec<ConversionFigures> = Vec::new();
    for row in rows {
        let conversion = CartConversion::decode(row)?;
        let day = conversion.converted_at.format("%Y-%m-%d").to_string();
        let index = match figures
            .iter()
            .position(|f| f.day == day && f.currency == conversion.currency.code())
        {
            Some(index) => index,
            None => {
                figures.push(ConversionFigures {
                    day,
                    currency: conversion.currency.code().to_string(),
                    converted: 0,
                    confirmed: 0,
                    cancelled: 0,
                    converted_value: Decimal::ZERO,
                    confirmed_value: Decimal::ZERO,
                });
                figures.len() - 1
            }
        };
        let f = &mut figures[index];
        f.converted += 1;
        f.converted_value += conversion.total.amount();
        match conversion.outcome {
            Outcome::Confirmed => {
                f.confirmed += 1;
                f.confirmed_value += conversion.total.amount();
            }
            Outcome::Cancelled => f.cancelled += 1,
            Outcome::Open => {}
        }
    }
    figures.sort_by(|a, b| (&a.day, &a.currency).cmp(&(&b.day, &b.currency)));
    Ok(figures)
}
