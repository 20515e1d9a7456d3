//! Named consumers on PostgreSQL: its pool; the statements are the shared ones of
//! [`super::ConsumerStore`]'s SQL implementation.

use sqlx::PgPool;

/// [`super::ConsumerStore`] on PostgreSQL (migration 0006 applied).
#[derive(Clone, Debug)]
pub struct PostgresConsumerStore {
    pool: PgPool,
}

impl PostgresConsumerStore {
    /// A store on `pool` (migrated).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

sql_consumer_store!(PostgresConsumerStore);
