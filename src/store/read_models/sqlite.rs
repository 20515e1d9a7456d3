//! Read models in the embedded SQLite file: rows in and out (multi-row
//! upserts), checkpoints, queries. Conventions of migration 0002: UUIDs as
//! TEXT, timestamps as INTEGER milliseconds, JSON and decimals as TEXT.
//!
//! SQL-SAFE: every spliced name is a model's `TABLE` constant, its shadow
//! (`shadow_table`), a constant column list, or the live table's own DDL read
//! back from `sqlite_master` (shadow creation); all values are bound.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{AssertSqlSafe, QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool, sqlite::SqliteRow};
use uuid::Uuid;

use super::rows::{CartConversion, ConversionFigures, CustomerOrder, OrderDetail, OrderSummary, Outcome};
use super::types::{
    Advance, Checkpoint, CheckpointStatus, ListQuery, ReadModelError, money_from, reason_code_from,
};
use crate::domain::{order::OrderStatus, reason::ErrorReason};

/// Loads and upserts the rows of one read model in SQLite.
#[async_trait::async_trait]
pub trait SqliteModel: Sized {
    /// The rows of `ids` in `table`.
    async fn load_sqlite(conn: &mut SqliteConnection, table: &str, ids: &[Uuid]) -> sqlx::Result<Vec<Self>>;
    /// Inserts or updates `rows`, never lowering a stored version.
    async fn upsert_sqlite(conn: &mut SqliteConnection, table: &str, rows: &[Self]) -> sqlx::Result<()>;
}

/// Rows per multi-row INSERT (SQLite binds at most 32766 parameters).
const CHUNK: usize = 500;

const SUMMARY_COLUMNS: [&str; 15] = [
    "order_id",
    "customer_id",
    "cart_id",
    "saga_id",
    "status",
    "items",
    "currency",
    "total",
    "item_count",
    "cancellation_reason",
    "cancellation_reason_code",
    "cancellation_request_reason",
    "version",
    "created_at",
    "updated_at",
];

fn decode_error(column: &str, why: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: column.to_string(),
        source: why.to_string().into(),
    }
}

fn uuid_at(row: &SqliteRow, column: &str) -> sqlx::Result<Uuid> {
    let text: String = row.try_get(column)?;
    Uuid::parse_str(&text).map_err(|e| decode_error(column, e))
}

fn decimal_at(row: &SqliteRow, column: &str) -> sqlx::Result<Decimal> {
    let text: String = row.try_get(column)?;
    text.parse().map_err(|e| decode_error(column, e))
}

fn time_at(row: &SqliteRow, column: &str) -> sqlx::Result<DateTime<Utc>> {
    let millis: i64 = row.try_get(column)?;
    DateTime::from_timestamp_millis(millis).ok_or_else(|| decode_error(column, "timestamp out of range"))
}

fn json_at<T: serde::de::DeserializeOwned>(row: &SqliteRow, column: &str) -> sqlx::Result<T> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|e| decode_error(column, e))
}

/// A non-negative integer column.
fn unsigned<T: TryFrom<i64>>(row: &SqliteRow, column: &str) -> sqlx::Result<T>
where
    T::Error: std::fmt::Display,
{
    let value: i64 = row.try_get(column)?;
    T::try_from(value).map_err(|e| decode_error(column, e))
}

fn optional_uuid_at(row: &SqliteRow, column: &str) -> sqlx::Result<Option<Uuid>> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| Uuid::parse_str(&t).map_err(|e| decode_error(column, e)))
        .transpose()
}

fn summary_from(row: &SqliteRow) -> sqlx::Result<OrderSummary> {
    let status: String = row.try_get("status")?;
    let (currency, total) = money_from(row.try_get("currency")?, decimal_at(row, "total")?)?;
    Ok(OrderSummary {
        order_id: uuid_at(row, "order_id")?,
        customer_id: row.try_get("customer_id")?,
        cart_id: uuid_at(row, "cart_id")?,
        saga_id: optional_uuid_at(row, "saga_id")?,
        status: status
            .parse::<OrderStatus>()
            .map_err(|e| decode_error("status", e))?,
        items: json_at(row, "items")?,
        currency,
        total,
        item_count: unsigned(row, "item_count")?,
        cancellation_reason: row.try_get("cancellation_reason")?,
        cancellation_reason_code: reason_code_from(row.try_get("cancellation_reason_code")?)?,
        cancellation_requested: row.try_get("cancellation_request_reason")?,
        version: unsigned(row, "version")?,
        created_at: time_at(row, "created_at")?,
        updated_at: time_at(row, "updated_at")?,
    })
}

fn push_summary(b: &mut sqlx::query_builder::Separated<'_, Sqlite, &'static str>, s: &OrderSummary) {
    b.push_bind(s.order_id.to_string())
        .push_bind(s.customer_id.clone())
        .push_bind(s.cart_id.to_string())
        .push_bind(s.saga_id.map(|id| id.to_string()))
        .push_bind(s.status.as_str())
        .push_bind(serde_json::to_string(&s.items).unwrap_or_else(|_| "[]".into()))
        .push_bind(s.currency.code())
        .push_bind(s.total.amount().to_string())
        .push_bind(i64::from(s.item_count))
        .push_bind(s.cancellation_reason.clone())
        .push_bind(s.cancellation_reason_code.map_or("", ErrorReason::as_str))
        .push_bind(s.cancellation_requested.clone())
        .push_bind(i64::try_from(s.version).unwrap_or(i64::MAX))
        .push_bind(s.created_at.timestamp_millis())
        .push_bind(s.updated_at.timestamp_millis());
}

async fn load_rows(
    conn: &mut SqliteConnection,
    table: &str,
    columns: &str,
    ids: &[Uuid],
) -> sqlx::Result<Vec<SqliteRow>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids = serde_json::Value::from(ids.iter().map(|id| id.to_string()).collect::<Vec<_>>()).to_string();
    sqlx::query(AssertSqlSafe(format!(
        "SELECT {columns} FROM {table} WHERE order_id IN (SELECT value FROM json_each(?1))"
    )))
    .bind(ids)
    .fetch_all(conn)
    .await
}

/// Multi-row upsert of `rows` in chunks; `push` binds one row's columns.
async fn upsert<T>(
    conn: &mut SqliteConnection,
    table: &str,
    columns: &[&str],
    rows: &[T],
    push: impl Fn(&mut sqlx::query_builder::Separated<'_, Sqlite, &'static str>, &T),
) -> sqlx::Result<()> {
    let updates: Vec<String> = columns[1..]
        .iter()
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    for chunk in rows.chunks(CHUNK) {
        let mut sql: QueryBuilder<Sqlite> =
            QueryBuilder::new(format!("INSERT INTO {table} ({}) ", columns.join(", ")));
        sql.push_values(chunk, |mut b, row| push(&mut b, row));
        sql.push(format!(
            " ON CONFLICT (order_id) DO UPDATE SET {} WHERE {table}.version < excluded.version",
            updates.join(", ")
        ));
        sql.build().execute(&mut *conn).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl SqliteModel for CustomerOrder {
    async fn load_sqlite(conn: &mut SqliteConnection, table: &str, ids: &[Uuid]) -> sqlx::Result<Vec<Self>> {
        let rows = load_rows(conn, table, &SUMMARY_COLUMNS.join(", "), ids).await?;
        rows.iter().map(|row| summary_from(row).map(Self)).collect()
    }

    async fn upsert_sqlite(conn: &mut SqliteConnection, table: &str, rows: &[Self]) -> sqlx::Result<()> {
        upsert(conn, table, &SUMMARY_COLUMNS, rows, |b, row| {
            push_summary(b, &row.0)
        })
        .await
    }
}

#[async_trait::async_trait]
impl SqliteModel for OrderDetail {
    async fn load_sqlite(conn: &mut SqliteConnection, table: &str, ids: &[Uuid]) -> sqlx::Result<Vec<Self>> {
        let columns = format!("{}, personal", SUMMARY_COLUMNS.join(", "));
        let rows = load_rows(conn, table, &columns, ids).await?;
        rows.iter()
            .map(|row| {
                Ok(Self {
                    summary: summary_from(row)?,
                    personal: json_at(row, "personal")?,
                })
            })
            .collect()
    }

    async fn upsert_sqlite(conn: &mut SqliteConnection, table: &str, rows: &[Self]) -> sqlx::Result<()> {
        let mut columns = SUMMARY_COLUMNS.to_vec();
        columns.push("personal");
        upsert(conn, table, &columns, rows, |b, row| {
            push_summary(b, &row.summary);
            b.push_bind(serde_json::to_string(&row.personal).unwrap_or_else(|_| "{}".into()));
        })
        .await
    }
}

const CONVERSION_COLUMNS: [&str; 10] = [
    "order_id",
    "cart_id",
    "customer_id",
    "currency",
    "total",
    "item_count",
    "outcome",
    "converted_at",
    "settled_at",
    "version",
];

fn conversion_from(row: &SqliteRow) -> sqlx::Result<CartConversion> {
    let outcome: String = row.try_get("outcome")?;
    let settled: Option<i64> = row.try_get("settled_at")?;
    let (currency, total) = money_from(row.try_get("currency")?, decimal_at(row, "total")?)?;
    Ok(CartConversion {
        order_id: uuid_at(row, "order_id")?,
        cart_id: uuid_at(row, "cart_id")?,
        customer_id: row.try_get("customer_id")?,
        currency,
        total,
        item_count: unsigned(row, "item_count")?,
        outcome: Outcome::parse(&outcome).ok_or_else(|| decode_error("outcome", &outcome))?,
        converted_at: time_at(row, "converted_at")?,
        settled_at: settled.and_then(DateTime::from_timestamp_millis),
        version: unsigned(row, "version")?,
    })
}

#[async_trait::async_trait]
impl SqliteModel for CartConversion {
    async fn load_sqlite(conn: &mut SqliteConnection, table: &str, ids: &[Uuid]) -> sqlx::Result<Vec<Self>> {
        let rows = load_rows(conn, table, &CONVERSION_COLUMNS.join(", "), ids).await?;
        rows.iter().map(conversion_from).collect()
    }

    async fn upsert_sqlite(conn: &mut SqliteConnection, table: &str, rows: &[Self]) -> sqlx::Result<()> {
        upsert(conn, table, &CONVERSION_COLUMNS, rows, |b, r| {
            b.push_bind(r.order_id.to_string())
                .push_bind(r.cart_id.to_string())
                .push_bind(r.customer_id.clone())
                .push_bind(r.currency.code())
                .push_bind(r.total.amount().to_string())
                .push_bind(i64::from(r.item_count))
                .push_bind(r.outcome.as_str())
                .push_bind(r.converted_at.timestamp_millis())
                .push_bind(r.settled_at.map(|t| t.timestamp_millis()))
                .push_bind(i64::try_from(r.version).unwrap_or(i64::MAX));
        })
        .await
    }
}

/// Moves the checkpoint if it is still where the caller read it.
pub(super) async fn advance(
    conn: &mut SqliteConnection,
    name: &str,
    advance: Advance,
) -> Result<(), ReadModelError> {
    let moved = sqlx::query(
        "UPDATE projection_checkpoints SET position = ?2, \
         updated_at = CAST(unixepoch('subsec') * 1000 AS INTEGER) \
         WHERE name = ?1 AND generation = ?3 AND position = ?4",
    )
    .bind(name)
    .bind(advance.to)
    .bind(advance.from.generation)
    .bind(advance.from.position)
    .execute(conn)
    .await?;
    if moved.rows_affected() == 1 {
        Ok(())
    } else {
        Err(ReadModelError::CheckpointMoved(name.to_string()))
    }
}

pub(super) async fn checkpoints(pool: &SqlitePool) -> Result<Vec<CheckpointStatus>, ReadModelError> {
    let rows = sqlx::query(
        "SELECT name, position, generation, rebuilding, rebuild_replayed, rebuild_total, rebuild_heartbeat_at \
         FROM projection_checkpoints ORDER BY name",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let heartbeat: Option<i64> = row.try_get("rebuild_heartbeat_at")?;
            Ok(CheckpointStatus {
                name: row.try_get("name")?,
                checkpoint: Checkpoint {
                    position: row.try_get("position")?,
                    generation: row.try_get("generation")?,
                },
                rebuilding: row.try_get::<i64, _>("rebuilding")? != 0,
                rebuild_replayed: row.try_get("rebuild_replayed")?,
                rebuild_total: row.try_get("rebuild_total")?,
                rebuild_heartbeat_at: heartbeat.and_then(DateTime::from_timestamp_millis),
            })
        })
        .collect::<sqlx::Result<_>>()
        .map_err(Into::into)
}

pub(super) async fn list_orders(
    pool: &SqlitePool,
    query: &ListQuery,
) -> Result<Vec<OrderSummary>, ReadModelError> {
    let mut sql: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
        "SELECT {} FROM customer_orders WHERE 1",
        SUMMARY_COLUMNS.join(", ")
    ));
    if let Some(customer) = &query.customer_id {
        sql.push(" AND customer_id = ").push_bind(customer.clone());
    }
    if let Some(status) = query.status {
        sql.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(after) = query.after {
        sql.push(" AND (created_at, order_id) < (")
            .push_bind(after.created_at.timestamp_millis())
            .push(", ")
            .push_bind(after.order_id.to_string())
            .push(")");
    }
    sql.push(" ORDER BY created_at DESC, order_id DESC LIMIT ")
        .push_bind(query.limit);
    let rows = sql.build().fetch_all(pool).await?;
    rows.iter()
        .map(summary_from)
        .collect::<sqlx::Result<_>>()
        .map_err(Into::into)
}

pub(super) async fn conversion_figures(
    pool: &SqlitePool,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Vec<ConversionFigures>, ReadModelError> {
    // Decimals are TEXT here: sum them exactly in Rust, not as SQLite floats.
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {} FROM cart_conversions WHERE converted_at >= ?1 AND converted_at < ?2 ORDER BY converted_at",
        CONVERSION_COLUMNS.join(", ")
    )))
    .bind(since.timestamp_millis())
    .bind(until.timestamp_millis())
    .fetch_all(pool)
    .await?;
    let mut figures: Vec<ConversionFigures> = Vec::new();
    for row in &rows {
        let conversion = conversion_from(row)?;
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
