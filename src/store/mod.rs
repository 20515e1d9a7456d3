//! Storage behind small traits, one module per kind of data, each with a real
//! (PostgreSQL or Redis) and an embedded implementation checked by one
//! conformance suite. Each table is written by one module; writes of several
//! tables that must commit together go through a [`unit_of_work`], which
//! also lists the owner of every table.

pub mod cart;
pub mod columns;
pub mod consumers;
pub mod event_store;
pub mod group_commit;
pub mod idempotency;
pub mod read_models;
pub mod saga;
pub mod unit_of_work;

/// How a retention purge runs against its owner's table: count what would go,
/// or delete it a bounded batch at a time. Each owner purges only its own
/// tables ([`crate::app::retention`] asks each in turn).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purge {
    /// Count the rows that would go and delete nothing (`commerce purge --dry-run`).
    Count,
    /// Delete up to this many rows (of the owner's main table) in one statement.
    Delete(usize),
}

impl Purge {
    /// The batch as a SQL LIMIT (`Count` has none).
    pub fn limit(self) -> i64 {
        match self {
            Self::Count => i64::MAX,
            Self::Delete(n) => i64::try_from(n).unwrap_or(i64::MAX),
        }
    }
}
