//! Named consumers on SQLite: its pool; the statements are the shared ones of
//! [`super::ConsumerStore`]'s SQL implementation.

use sqlx::SqlitePool;

/// [`super::ConsumerStore`] on SQLite (migration 0006 applied).
#[derive(Clone, Debug)]
pub struct SqliteConsumerStore {
    pool: SqlitePool,
}

impl SqliteConsumerStore {
    /// A store on `pool` (migrated).
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

sql_consumer_store!(SqliteConsumerStore);
