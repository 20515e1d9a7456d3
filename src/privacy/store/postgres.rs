//! The key store on PostgreSQL: its pool; the statements are the shared ones of
//! [`super::KeyStore`]'s SQL implementation.

use sqlx::PgPool;

/// [`super::KeyStore`] on PostgreSQL (migration 0005 applied).
#[derive(Clone, Debug)]
pub struct PostgresKeyStore {
    pool: PgPool,
}

impl PostgresKeyStore {
    /// The key store of a migrated pool.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

sql_key_store!(PostgresKeyStore);
