//! Read models on PostgreSQL: rows in and out (bulk upserts through `UNNEST`
//! arrays: one statement per batch), checkpoints, queries.
//!
//! Table names are never input: they are a model's `TABLE` or its rebuild
//! shadow (`<TABLE>_rebuild`), hence the `AssertSqlSafe` around them.
//!
//! SQL-SAFE: every spliced name is a model's `TABLE` constant, its shadow
//! (`shadow_table`), or a constant column list; all values are bound.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Postgres, QueryBuilder, Row, postgres::PgRow, types::Json};
use uuid::Uuid;

use super::rows::{CartConversion, ConversionFigures, CustomerOrder, OrderDetail, OrderSummary, Outcome};
use super::types::{
    Advance, Checkpoint, CheckpointStatus, ListQuery, ReadModelError, money_from, reason_code_from,
};
use crate::domain::{
    order::{OrderLine, OrderStatus, PersonalData},
    reason::ErrorReason,
};

/// Loads and upserts the rows of one read model on PostgreSQL.
#[async_trait::async_trait]
pub trait PgModel: Sized {
    /// The rows of `ids` in `table`.
    async fn load_pg(conn: &mut PgConnection, table: &str, ids: &[Uuid]) -> sqlx::Result<Vec<Self>>;
    /// Inserts or updates `rows`, never lowering a stored version.
    async fn upsert_pg(conn: &mut PgConnection, table: &str, rows: &[Self]) -> sqlx::Result<()>;
}

const SUMMARY_COLUMNS: &str = "order_id, customer_id, cart_id, saga_id, status, items, currency, total, \
                               item_count, cancellation_reason, cancellation_reason_code, cancellation_request_reason, \
                               version, created_at, updated_at";

fn bad_column(column: &str, value: &str) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: column.to_string(),
        source: format!("unexpected value {value:?}").into(),
    }
}

fn summary_from(row: &PgRow) -> sqlx::Result<OrderSummary> {
    let status: String = row.try_get("status")?;
    let (currency, total) = money_from(row.try_get("currency")?, row.try_get("total")?)?;
    Ok(OrderSummary {
        order_id: row.try_get("order_id")?,
        customer_id: row.try_get("customer_id")?,
        cart_id: row.try_get("cart_id")?,
        saga_id: row.try_get("saga_id")?,
        status: status
            .parse::<OrderStatus>()
            .map_err(|_| bad_column("status", &status))?,
        items: row.try_get::<Json<Vec<OrderLine>>, _>("items")?.0,
        currency,
        total,
        item_count: unsigned(row, "item_count")?,
        cancellation_reason: row.try_get("cancellation_reason")?,
        cancellation_reason_code: reason_code_from(row.try_get("cancellation_reason_code")?)?,
        cancellation_requested: row.try_get("cancellation_request_reason")?,
        version: unsigned(row, "version")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// A non-negative integer column.
fn unsigned<T: TryFrom<i64>>(row: &PgRow, column: &str) -> sqlx::Result<T> {
    let value: i64 = match row.try_get::<i64, _>(column) {
        Ok(value) => value,
        Err(_) => row.try_get::<i32, _>(column)?.into(),
    };
    T::try_from(value).map_err(|_| bad_column(column, &value.to_string()))
}

/// The summary columns of a batch, as arrays for `UNNEST`.
#[derive(Default)]
struct SummaryArrays {
    order_id: Vec<Uuid>,
    customer_id: Vec<String>,
    cart_id: Vec<Uuid>,
    saga_id: Vec<Option<Uuid>>,
    status: Vec<&'static str>,
    items: Vec<String>,
    currency: Vec<&'static str>,
    total: Vec<Decimal>,
    item_count: Vec<i32>,
    cancellation_reason: Vec<String>,
    cancellation_reason_code: Vec<&'static str>,
    cancellation_request_reason: Vec<Option<String>>,
    version: Vec<i64>,
    created_at: Vec<DateTime<Utc>>,
    updated_at: Vec<DateTime<Utc>>,
}

impl SummaryArrays {
    fn push(&mut self, s: &OrderSummary) {
        self.order_id.push(s.order_id);
        self.customer_id.push(s.customer_id.clone());
        self.cart_id.push(s.cart_id);
        self.saga_id.push(s.saga_id);
        self.status.push(s.status.as_str());
        self.items
            .push(serde_json::to_string(&s.items).unwrap_or_else(|_| "[]".into()));
        self.currency.push(s.currency.code());
        self.total.push(s.total.amount());
        self.item_count
            .push(i32::try_from(s.item_count).unwrap_or(i32::MAX));
        self.cancellation_reason.push(s.cancellation_reason.clone());
        self.cancellation_reason_code
            .push(s.cancellation_reason_code.map_or("", ErrorReason::as_str));
        self.cancellation_request_reason
            .push(s.cancellation_requested.clone());
        self.version.push(i64::try_from(s.version).unwrap_or(i64::MAX));
        self.created_at.push(s.created_at);
        self.updated_at.push(s.updated_at);
    }
}

/// `INSERT .. SELECT FROM UNNEST(..) ON CONFLICT .. WHERE version < excluded.version`.
fn upsert_sql(table: &str, columns: &[(&str, &str)]) -> String {
    let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
    let selects: Vec<String> = columns
        .iter()
        .map(|(name, ty)| match *ty {
            "jsonb" => format!("{name}::jsonb"),
            _ => name.to_string(),
        })
        .collect();
    let arrays: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, (_, ty))| match *ty {
            "jsonb" => format!("${}::text[]", i + 1),
            ty => format!("${}::{ty}[]", i + 1),
        })
        .collect();
    let updates: Vec<String> = names[1..].iter().map(|n| format!("{n} = EXCLUDED.{n}")).collect();
    format!(
        "INSERT INTO {table} ({names}) SELECT {selects} FROM UNNEST({arrays}) AS u({names}) \
         ON CONFLICT (order_id) DO UPDATE SET {updates} WHERE {table}.version < EXCLUDED.version",
        names = names.join(", "),
        selects = selects.join(", "),
        arrays = arrays.join(", "),
        updates = updates.join(", "),
    )
}

const SUMMARY_TYPES: [(&str, &str); 15] = [
    ("order_id", "uuid"),
    ("customer_id", "text"),
    ("cart_id", "uuid"),
    ("saga_id", "uuid"),
    ("status", "text"),
    ("items", "jsonb"),
    ("currency", "text"),
    ("total", "numeric"),
    ("item_count", "int4"),
    ("cancellation_reason", "text"),
    ("cancellation_reason_code", "text"),
    ("cancellation_request_reason", "text"),
    ("version", "int8"),
    ("created_at", "timestamptz"),
    ("updated_at", "timestamptz"),
];

async fn load_rows(
    conn: &mut PgConnection,
    table: &str,
    columns: &str,
    ids: &[Uuid],
) -> sqlx::Result<Vec<PgRow>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query(AssertSqlSafe(format!(
        "SELECT {columns} FROM {table} WHERE order_id = ANY($1)"
    )))
    .bind(ids)
    .fetch_all(conn)
    .await
}

#[async_trait::async_trait]
impl PgModel for CustomerOrder {
    async fn load_pg(conn: &mut PgConnection, table: &str, ids: &[Uuid]) -> sqlx::Result<Vec<Self>> {
        let rows = load_rows(conn, table, SUMMARY_COLUMNS, ids).await?;
        rows.iter().map(|row| summary_from(row).map(Self)).collect()
    }

    async fn upsert_pg(conn: &mut PgConnection, table: &str, rows: &[Self]) -> sqlx::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut a = SummaryArrays::default();
        rows.iter().for_each(|row| a.push(&row.0));
        sqlx::query(AssertSqlSafe(upsert_sql(table, &SUMMARY_TYPES)))
            .bind(a.order_id)
            .bind(a.customer_id)
            .bind(a.cart_id)
            .bind(a.saga_id)
            .bind(a.status)
            .bind(a.items)
            .bind(a.currency)
            .bind(a.total)
            .bind(a.item_count)
            .bind(a.cancellation_reason)
            .bind(a.cancellation_reason_code)
            .bind(a.cancellation_request_reason)
            .bind(a.version)
            .bind(a.created_at)
            .bind(a.updated_at)
            .execute(conn)
            .await
            .map(drop)
    }
}

#[async_trait::async_trait]
impl PgModel for OrderDetail {
    async fn load_pg(conn: &mut PgConnection, table: &str, ids: &[Uuid]) -> sqlx::Result<Vec<Self>> {
        let columns = format!("{SUMMARY_COLUMNS}, personal");
        let rows = load_rows(conn, table, &columns, ids).await?;
        rows.iter()
            .map(|row| {
                Ok(Self {
                    summary: summary_from(row)?,
                    personal: row.try_get::<Json<PersonalData>, _>("personal")?.0,
                })
            })
            .collect()
    }

    async fn upsert_pg(conn: &mut PgConnection, table: &str, rows: &[Self]) -> sqlx::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut a = SummaryArrays::default();
        let mut personal = Vec::new();
        for row in rows {
            a.push(&row.summary);
            personal.push(serde_json::to_string(&row.personal).unwrap_or_else(|_| "{}".into()));
        }
        let mut columns = SUMMARY_TYPES.to_vec();
        columns.push(("personal", "jsonb"));
        sqlx::query(AssertSqlSafe(upsert_sql(table, &columns)))
            .bind(a.order_id)
            .bind(a.customer_id)
            .bind(a.cart_id)
            .bind(a.saga_id)
            .bind(a.status)
            .bind(a.items)
            .bind(a.currency)
            .bind(a.total)
            .bind(a.item_count)
            .bind(a.cancellation_reason)
            .bind(a.cancellation_reason_code)
            .bind(a.cancellation_request_reason)
            .bind(a.version)
            .bind(a.created_at)
            .bind(a.updated_at)
            .bind(personal)
            .execute(conn)
            .await
            .map(drop)
    }
}

const CONVERSION_COLUMNS: &str =
    "order_id, cart_id, customer_id, currency, total, item_count, outcome, converted_at, settled_at, version";

#[async_trait::async_trait]
impl PgModel for CartConversion {
    async fn load_pg(conn: &mut PgConnection, table: &str, ids: &[Uuid]) -> sqlx::Result<Vec<Self>> {
        let rows = load_rows(conn, table, CONVERSION_COLUMNS, ids).await?;
        rows.iter()
            .map(|row| {
                let outcome: String = row.try_get("outcome")?;
                let (currency, total) = money_from(row.try_get("currency")?, row.try_get("total")?)?;
                Ok(Self {
                    order_id: row.try_get("order_id")?,
                    cart_id: row.try_get("cart_id")?,
                    customer_id: row.try_get("customer_id")?,
                    currency,
                    total,
                    item_count: unsigned(row, "item_count")?,
                    outcome: Outcome::parse(&outcome).ok_or_else(|| bad_column("outcome", &outcome))?,
                    converted_at: row.try_get("converted_at")?,
                    settled_at: row.try_get("settled_at")?,
                    version: unsigned(row, "version")?,
                })
            })
            .collect()
    }

    async fn upsert_pg(conn: &mut PgConnection, table: &str, rows: &[Self]) -> sqlx::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let columns = [
            ("order_id", "uuid"),
            ("cart_id", "uuid"),
            ("customer_id", "text"),
            ("currency", "text"),
            ("total", "numeric"),
            ("item_count", "int4"),
            ("outcome", "text"),
            ("converted_at", "timestamptz"),
            ("settled_at", "timestamptz"),
            ("version", "int8"),
        ];
        sqlx::query(AssertSqlSafe(upsert_sql(table, &columns)))
            .bind(rows.iter().map(|r| r.order_id).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.cart_id).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.customer_id.clone()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.currency.code()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.total.amount()).collect::<Vec<_>>())
            .bind(
                rows.iter()
                    .map(|r| i32::try_from(r.item_count).unwrap_or(i32::MAX))
                    .collect::<Vec<_>>(),
            )
            .bind(rows.iter().map(|r| r.outcome.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.converted_at).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.settled_at).collect::<Vec<_>>())
            .bind(
                rows.iter()
                    .map(|r| i64::try_from(r.version).unwrap_or(i64::MAX))
                    .collect::<Vec<_>>(),
            )
            .execute(conn)
            .await
            .map(drop)
    }
}

/// Moves the checkpoint if it is still where the caller read it.
pub(super) async fn advance(
    conn: &mut PgConnection,
    name: &str,
    advance: Advance,
) -> Result<(), ReadModelError> {
    let moved = sqlx::query(
        "UPDATE projection_checkpoints SET position = $2, updated_at = now() \
         WHERE name = $1 AND generation = $3 AND position = $4",
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

pub(super) async fn checkpoints(pool: &PgPool) -> Result<Vec<CheckpointStatus>, ReadModelError> {
    let rows = sqlx::query(
        "SELECT name, position, generation, rebuilding, rebuild_replayed, rebuild_total, rebuild_heartbeat_at \
         FROM projection_checkpoints ORDER BY name",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(CheckpointStatus {
                name: row.try_get("name")?,
                checkpoint: Checkpoint {
                    position: row.try_get("position")?,
                    generation: row.try_get("generation")?,
                },
                rebuilding: row.try_get("rebuilding")?,
                rebuild_replayed: row.try_get("rebuild_replayed")?,
                rebuild_total: row.try_get("rebuild_total")?,
                rebuild_heartbeat_at: row.try_get("rebuild_heartbeat_at")?,
            })
        })
        .collect::<sqlx::Result<_>>()
        .map_err(Into::into)
}

pub(super) async fn list_orders(
    pool: &PgPool,
    query: &ListQuery,
) -> Result<Vec<OrderSummary>, ReadModelError> {
    let mut sql: QueryBuilder<Postgres> = QueryBuilder::new(format!(
        "SELECT {SUMMARY_COLUMNS} FROM customer_orders WHERE true"
    ));
    if let Some(customer) = &query.customer_id {
        sql.push(" AND customer_id = ").push_bind(customer.clone());
    }
    if let Some(status) = query.status {
        sql.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(after) = query.after {
        sql.push(" AND (created_at, order_id) < (")
            .push_bind(after.created_at)
            .push(", ")
            .push_bind(after.order_id)
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
    pool: &PgPool,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Vec<ConversionFigures>, ReadModelError> {
    let rows = sqlx::query(
        "SELECT to_char(converted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, currency, \
                count(*) AS converted, \
                count(*) FILTER (WHERE outcome = 'confirmed') AS confirmed, \
                count(*) FILTER (WHERE outcome = 'cancelled') AS cancelled, \
                COALESCE(sum(total), 0) AS converted_value, \
                COALESCE(sum(total) FILTER (WHERE outcome = 'confirmed'), 0) AS confirmed_value \
         FROM cart_conversions WHERE converted_at >= $1 AND converted_at < $2 \
         GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .bind(since)
    .bind(until)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(ConversionFigures {
                day: row.try_get("day")?,
                currency: row.try_get("currency")?,
                converted: row.try_get("converted")?,
                confirmed: row.try_get("confirmed")?,
                cancelled: row.try_get("cancelled")?,
                converted_value: row.try_get("converted_value")?,
                confirmed_value: row.try_get("confirmed_value")?,
            })
        })
        .collect::<sqlx::Result<_>>()
        .map_err(Into::into)
}
