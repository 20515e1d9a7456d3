//! How the read-model rows map to their tables' columns, written once for
//! both databases: each row is read as one `FromRow` struct whose
//! [column types](crate::store::columns) decode either database's form, and
//! written by giving its values in column order to a backend's
//! [`ColumnSink`]. Only the statements differ between the backends.

use sqlx::{FromRow, postgres::PgRow, sqlite::SqliteRow};

use super::{
    rows::{CartConversion, CustomerOrder, OrderDetail, OrderSummary, Outcome, StoredRow},
    types::{Checkpoint, CheckpointStatus, money_from, reason_code_from},
};
use crate::{
    domain::{order::OrderStatus, reason::ErrorReason},
    store::columns::{ColumnSink, DbDecimal, DbJson, DbTime, DbUuid},
};

/// A row of a read-model table as the store maps it.
pub trait StoredModel: StoredRow {
    /// The row as both databases return it.
    type Columns: for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin;

    /// The table's columns, the key (`order_id`) first, in the order
    /// [`StoredModel::bind`] gives their values.
    const COLUMNS: &'static [&'static str];

    /// The row of the stored columns.
    fn decode(columns: Self::Columns) -> sqlx::Result<Self>;

    /// Gives the row's values to `sink`, in [`StoredModel::COLUMNS`] order.
    fn bind(&self, sink: &mut impl ColumnSink);
}

/// The columns of [`OrderSummary`] (`customer_orders`; `order_details` adds `personal`).
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

/// `order_details`: the summary's columns and `personal`.
const DETAIL_COLUMNS: [&str; 16] = {
    let mut columns = [""; 16];
    let mut i = 0;
    while i < SUMMARY_COLUMNS.len() {
        columns[i] = SUMMARY_COLUMNS[i];
        i += 1;
    }
    columns[15] = "personal";
    columns
};

/// The columns of [`OrderSummary`], as stored.
#[derive(FromRow)]
pub struct SummaryColumns {
    order_id: DbUuid,
    customer_id: String,
    cart_id: DbUuid,
    saga_id: Option<DbUuid>,
    status: String,
    items: DbJson,
    currency: String,
    total: DbDecimal,
    item_count: i32,
    cancellation_reason: String,
    cancellation_reason_code: String,
    cancellation_request_reason: Option<String>,
    version: i64,
    created_at: DbTime,
    updated_at: DbTime,
}

/// The columns of [`OrderDetail`], as stored.
#[derive(FromRow)]
pub struct DetailColumns {
    #[sqlx(flatten)]
    summary: SummaryColumns,
    personal: DbJson,
}

/// The columns of [`CartConversion`], as stored.
#[derive(FromRow)]
pub struct ConversionColumns {
    order_id: DbUuid,
    cart_id: DbUuid,
    customer_id: String,
    currency: String,
    total: DbDecimal,
    item_count: i32,
    outcome: String,
    converted_at: DbTime,
    settled_at: Option<DbTime>,
    version: i64,
}

fn bad_column(column: &str, why: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: column.to_string(),
        source: why.to_string().into(),
    }
}

/// A non-negative integer column.
fn unsigned<T: TryFrom<i64>>(column: &str, value: impl Into<i64>) -> sqlx::Result<T> {
    let value = value.into();
    T::try_from(value).map_err(|_| bad_column(column, format!("unexpected value {value}")))
}

fn json<T: serde::de::DeserializeOwned>(column: &str, value: DbJson) -> sqlx::Result<T> {
    serde_json::from_value(value.0).map_err(|e| bad_column(column, e))
}

/// A row's JSON value (an encoding failure stores the empty `fallback`).
fn to_json(value: &impl serde::Serialize, fallback: serde_json::Value) -> DbJson {
    DbJson(serde_json::to_value(value).unwrap_or(fallback))
}

impl SummaryColumns {
    fn decode(self) -> sqlx::Result<OrderSummary> {
        let (currency, total) = money_from(self.currency, self.total.0)?;
        Ok(OrderSummary {
            order_id: self.order_id.0,
            customer_id: self.customer_id,
            cart_id: self.cart_id.0,
            saga_id: self.saga_id.map(|id| id.0),
            status: self
                .status
                .parse::<OrderStatus>()
                .map_err(|e| bad_column("status", e))?,
            items: json("items", self.items)?,
            currency,
            total,
            item_count: unsigned("item_count", self.item_count)?,
            cancellation_reason: self.cancellation_reason,
            cancellation_reason_code: reason_code_from(self.cancellation_reason_code)?,
            cancellation_requested: self.cancellation_request_reason,
            version: unsigned("version", self.version)?,
            created_at: self.created_at.0,
            updated_at: self.updated_at.0,
        })
    }
}

fn bind_summary(s: &OrderSummary, sink: &mut impl ColumnSink) {
    sink.value(DbUuid(s.order_id))
        .value(s.customer_id.clone())
        .value(DbUuid(s.cart_id))
        .value(s.saga_id.map(DbUuid))
        .value(s.status.as_str())
        .value(to_json(&s.items, serde_json::json!([])))
        .value(s.currency.code())
        .value(DbDecimal(s.total.amount()))
        .value(i32::try_from(s.item_count).unwrap_or(i32::MAX))
        .value(s.cancellation_reason.clone())
        .value(s.cancellation_reason_code.map_or("", ErrorReason::as_str))
        .value(s.cancellation_requested.clone())
        .value(i64::try_from(s.version).unwrap_or(i64::MAX))
        .value(DbTime(s.created_at))
        .value(DbTime(s.updated_at));
}

impl StoredModel for CustomerOrder {
    type Columns = SummaryColumns;
    const COLUMNS: &'static [&'static str] = &SUMMARY_COLUMNS;

    fn decode(columns: SummaryColumns) -> sqlx::Result<Self> {
        columns.decode().map(Self)
    }

    fn bind(&self, sink: &mut impl ColumnSink) {
        bind_summary(&self.0, sink);
    }
}

impl StoredModel for OrderDetail {
    type Columns = DetailColumns;
    const COLUMNS: &'static [&'static str] = &DETAIL_COLUMNS;

    fn decode(columns: DetailColumns) -> sqlx::Result<Self> {
        Ok(Self {
            summary: columns.summary.decode()?,
            personal: json("personal", columns.personal)?,
        })
    }

    fn bind(&self, sink: &mut impl ColumnSink) {
        bind_summary(&self.summary, sink);
        sink.value(to_json(&self.personal, serde_json::json!({})));
    }
}

impl StoredModel for CartConversion {
    type Columns = ConversionColumns;
    const COLUMNS: &'static [&'static str] = &[
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

    fn decode(c: ConversionColumns) -> sqlx::Result<Self> {
        let (currency, total) = money_from(c.currency, c.total.0)?;
        Ok(Self {
            order_id: c.order_id.0,
            cart_id: c.cart_id.0,
            customer_id: c.customer_id,
            currency,
            total,
            item_count: unsigned("item_count", c.item_count)?,
            outcome: Outcome::parse(&c.outcome).ok_or_else(|| bad_column("outcome", &c.outcome))?,
            converted_at: c.converted_at.0,
            settled_at: c.settled_at.map(|t| t.0),
            version: unsigned("version", c.version)?,
        })
    }

    fn bind(&self, sink: &mut impl ColumnSink) {
        sink.value(DbUuid(self.order_id))
            .value(DbUuid(self.cart_id))
            .value(self.customer_id.clone())
            .value(self.currency.code())
            .value(DbDecimal(self.total.amount()))
            .value(i32::try_from(self.item_count).unwrap_or(i32::MAX))
            .value(self.outcome.as_str())
            .value(DbTime(self.converted_at))
            .value(self.settled_at.map(DbTime))
            .value(i64::try_from(self.version).unwrap_or(i64::MAX));
    }
}

/// The columns of a `projection_checkpoints` row that a status report shows.
pub(super) const CHECKPOINT_COLUMNS: &str =
    "name, position, generation, rebuilding, rebuild_replayed, rebuild_total, rebuild_heartbeat_at";

/// A `projection_checkpoints` row, as stored.
#[derive(FromRow)]
pub(super) struct CheckpointRow {
    name: String,
    position: i64,
    generation: i64,
    rebuilding: bool,
    rebuild_replayed: i64,
    rebuild_total: i64,
    rebuild_heartbeat_at: Option<DbTime>,
}

impl From<CheckpointRow> for CheckpointStatus {
    fn from(row: CheckpointRow) -> Self {
        Self {
            name: row.name,
            checkpoint: Checkpoint {
                position: row.position,
                generation: row.generation,
            },
            rebuilding: row.rebuilding,
            rebuild_replayed: row.rebuild_replayed,
            rebuild_total: row.rebuild_total,
            rebuild_heartbeat_at: row.rebuild_heartbeat_at.map(|t| t.0),
        }
    }
}
