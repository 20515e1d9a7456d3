//! What the read-model store's callers and its two backends share: checkpoints,
//! the ListOrders query, the error type.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::{
    domain::{
        money::{Currency, Money, MoneyError},
        order::OrderStatus,
        reason::ErrorReason,
    },
    error::AppError,
};

store_error! {
    /// Read-model storage failures.
    pub enum ReadModelError("read models", "read model query") {
        /// The checkpoint moved under the caller (a rebuild swapped the tables):
        /// nothing was written; reload the checkpoint.
        #[error("checkpoint of {0} moved")]
        CheckpointMoved(String),
    }
}

impl From<ReadModelError> for AppError {
    fn from(err: ReadModelError) -> Self {
        match err {
            ReadModelError::Unavailable(msg) => AppError::unavailable(msg),
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

/// What a write to a projection's live table checks in the write itself,
/// writing nothing when it fails ([`ReadModelError::CheckpointMoved`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// The live table is still of this generation: no rebuild swapped it in
    /// since the caller learned it. A writer that folds from rows it keeps in
    /// memory (`projections::fold_cache`) writes under this guard, so that
    /// rows of a swapped-out table never reach the new one.
    Generation(i64),
    /// The sweep's write: moves the checkpoint (compare-and-set on position
    /// and generation, so it implies the generation check).
    Advance(Advance),
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

/// A stored cancellation code: '' for none (not cancelled, or projected
/// before codes were stored).
pub(super) fn reason_code_from(text: String) -> sqlx::Result<Option<ErrorReason>> {
    if text.is_empty() {
        return Ok(None);
    }
    ErrorReason::parse(&text)
        .map(Some)
        .ok_or_else(|| sqlx::Error::ColumnDecode {
            index: "cancellation_reason_code".into(),
            source: format!("unknown reason {text:?}").into(),
        })
}

/// A stored (currency code, amount) pair as domain money.
pub(super) fn money_from(currency: String, amount: Decimal) -> sqlx::Result<(Currency, Money)> {
    let bad = |why: String| sqlx::Error::ColumnDecode {
        index: "total".into(),
        source: why.into(),
    };
    let currency: Currency = currency.parse().map_err(|e: MoneyError| bad(e.to_string()))?;
    let total = Money::from_decimal(amount, currency).map_err(|e| bad(e.to_string()))?;
    Ok((currency, total))
}
