//! The key store on SQLite: its pool; the statements are the shared ones of
//! [`super::KeyStore`]'s SQL implementation.

use sqlx::SqlitePool;

/// [`super::KeyStore`] on SQLite (migration 0005 applied).
#[derive(Clone, Debug)]
pub struct SqliteKeyStore {
    pool: SqlitePool,
}

impl SqliteKeyStore {
    /// The key store of a migrated pool.
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

sql_key_store!(SqliteKeyStore);
