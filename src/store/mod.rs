//! Storage behind small traits, one module per kind of data, each with a real
//! (PostgreSQL or Redis) and an embedded implementation checked by one
//! conformance suite. Each table is written by one module; writes of several
//! tables that must commit together go through a [`unit_of_work`], which
//! also lists the owner of every table.
//!
//! # One shape for the SQL stores
//! A port (a trait) in the module's `mod.rs`, its PostgreSQL and SQLite
//! implementations side by side in `postgres.rs` and `sqlite.rs`. Rows are
//! one `FromRow` struct for both databases, through the newtypes of
//! [`columns`] (which also carries [`columns::ColumnSink`], so that a row's
//! values are bound once). Methods whose statements differ only in text are
//! written once, as a macro of the module (`sql_..._store!`) that each
//! backend's file expands beside its SQL; a backend's file keeps only that
//! text and the code that really differs.

/// A store's error enum: the variants given, then the two every store has,
/// `Unavailable` and `Other`, and the `From<sqlx::Error>` that chooses
/// between them ([`crate::db::unavailable`]). `$what` names the store in
/// the `Unavailable` message, `$context` the failed query in `Other`'s.
macro_rules! store_error {
    (
        $(#[$meta:meta])*
        pub enum $name:ident($what:literal, $context:literal) {
            $($variants:tt)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, thiserror::Error)]
        pub enum $name {
            $($variants)*
            /// The database is unreachable or overloaded; retrying later may succeed.
            #[error("{what} unavailable: {0}", what = $what)]
            Unavailable(String),
            /// Anything else (a bug, corrupt data).
            #[error(transparent)]
            Other(#[from] anyhow::Error),
        }

        impl From<sqlx::Error> for $name {
            fn from(err: sqlx::Error) -> Self {
                match crate::db::unavailable(&err) {
                    Some(why) => Self::Unavailable(why),
                    None => Self::Other(anyhow::Error::new(err).context($context)),
                }
            }
        }
    };
}

pub mod cart;
pub mod columns;
pub mod consumers;
pub mod event_store;
pub mod group_commit;
pub mod idempotency;
pub mod read_models;
pub mod relay_cursor;
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
