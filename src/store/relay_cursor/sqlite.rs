//! The relay cursor on SQLite: its pool; the statements are the shared ones of
//! [`super::RelayCursor`]'s SQL implementation.

use sqlx::SqlitePool;

/// [`super::RelayCursor`] on SQLite (migration 0012 applied).
#[derive(Clone, Debug)]
pub struct SqliteRelayCursor {
    pool: SqlitePool,
}

impl SqliteRelayCursor {
    /// The cursor of a migrated pool.
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

sql_relay_cursor!(SqliteRelayCursor);
