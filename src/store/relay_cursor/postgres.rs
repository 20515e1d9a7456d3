//! The relay cursor on PostgreSQL: its pool; the statements are the shared ones of
//! [`super::RelayCursor`]'s SQL implementation.

use sqlx::PgPool;

/// [`super::RelayCursor`] on PostgreSQL (migration 0012 applied).
#[derive(Clone, Debug)]
pub struct PostgresRelayCursor {
    pool: PgPool,
}

impl PostgresRelayCursor {
    /// The cursor of a migrated pool.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

sql_relay_cursor!(PostgresRelayCursor);
