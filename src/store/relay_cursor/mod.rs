//! The relay's cursor: the `relay_cursor` table of migration 0012 (one row),
//! the only module that writes it.
//!
//! The cursor is the global position of the last event of the settled log
//! ([`crate::store::event_store::EventStore::read_all`]) that the relay
//! ([`crate::relay`]) handed to the bus. It moves only forward from a value
//! the mover read ([`RelayCursor::advance`] is a compare-and-set), so relays
//! of several replicas never move it back or past an event none of them
//! published: the loser of a race has only published some events twice, and
//! consumers are idempotent.

/// The [`RelayCursor`] implementation of a backend's store `$name` (a struct
/// with a `pool` field): the statements are the same on both databases
/// (timestamps bound through [`DbTime`](crate::store::columns::DbTime)), so
/// it is written once, here. Expanded in a child module (`super::` is this one).
macro_rules! sql_relay_cursor {
    ($name:ident) => {
        #[async_trait::async_trait]
        impl super::RelayCursor for $name {
            async fn position(&self) -> Result<i64, super::RelayCursorError> {
                let position: i64 = sqlx::query_scalar(super::POSITION)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(position)
            }

            async fn advance(&self, from: i64, to: i64) -> Result<bool, super::RelayCursorError> {
                let moved = sqlx::query(super::ADVANCE)
                    .bind(from)
                    .bind(to)
                    .bind(crate::store::columns::DbTime(chrono::Utc::now()))
                    .execute(&self.pool)
                    .await?;
                Ok(moved.rows_affected() == 1)
            }
        }
    };
}

mod postgres;
mod sqlite;

use std::fmt;

use async_trait::async_trait;

pub use self::{postgres::PostgresRelayCursor, sqlite::SqliteRelayCursor};

/// The cursor (the row exists from the migration on).
const POSITION: &str = "SELECT position FROM relay_cursor WHERE id = 1";

/// Compare-and-set: `$1` the position read, `$2` the new one, `$3` now.
const ADVANCE: &str = "UPDATE relay_cursor SET position = $2, updated_at = $3 WHERE id = 1 AND position = $1";

store_error! {
    /// Why the cursor could not be read or moved.
    pub enum RelayCursorError("relay cursor", "relay cursor query") {}
}

/// The relay's durable cursor in one database.
#[async_trait]
pub trait RelayCursor: Send + Sync + fmt::Debug {
    /// The position of the last event published (0: none yet); pass it to
    /// `read_all` as is.
    async fn position(&self) -> Result<i64, RelayCursorError>;

    /// Moves the cursor from `from` to `to` if it is still at `from`; false
    /// when another relay moved it first (nothing is written then).
    async fn advance(&self, from: i64, to: i64) -> Result<bool, RelayCursorError>;
}
