//! What a rebuild needs of the read-model store: claiming the projections,
//! reporting progress, shadow tables (`<table>_rebuild`, same columns and
//! indexes) and the one-transaction swap.
//!
//! SQL-SAFE: every spliced name is a model's `TABLE` constant, its shadow
//! (`shadow_table`), or an index name read from `sqlite_master` for those
//! tables; no table name is ever request input, all values are bound.

use super::{ReadModelStore, types::ReadModelError};
use crate::error::AppError;

/// The shadow table a rebuild fills for `table`.
pub fn shadow_table(table: &str) -> String {
    format!("{table}_rebuild")
}

impl ReadModelStore {
    /// Marks projections `names` as rebuilding, expecting `total` events;
    /// refused (ABORTED) while another rebuild of one of them reports.
    pub async fn begin_rebuild(&self, names: &[&str], total: i64) -> Result<(), AppError> {
        let claimed = match self {
            Self::Postgres(pool) => pg::begin_rebuild(pool, names, total).await?,
            Self::Sqlite(pool) => lite::begin_rebuild(pool, names, total).await?,
        };
        // The claim is all or nothing (one transaction).
        if claimed == names.len() as u64 {
            return Ok(());
        }
        Err(AppError::aborted(
            crate::error::ErrorReason::ConcurrentModification,
            "a rebuild of the projections is already running",
        ))
    }

    /// Reports rebuild progress (also the heartbeat that keeps the claim).
    pub async fn rebuild_progress(
        &self,
        names: &[&str],
        replayed: i64,
        total: i64,
    ) -> Result<(), ReadModelError> {
        match self {
            Self::Postgres(pool) => pg::rebuild_progress(pool, names, replayed, total).await,
            Self::Sqlite(pool) => lite::rebuild_progress(pool, names, replayed, total).await,
        }
    }

    /// Clears the rebuilding mark of `names` (a rebuild failed or finished).
    pub async fn end_rebuild(&self, names: &[&str]) -> Result<(), ReadModelError> {
        match self {
            Self::Postgres(pool) => pg::end_rebuild(pool, names).await,
            Self::Sqlite(pool) => lite::end_rebuild(pool, names).await,
        }
    }

    /// (Re)creates the empty shadow of each live table, same columns and indexes.
    pub async fn create_shadows(&self, tables: &[&str]) -> Result<(), ReadModelError> {
        for table in tables {
            match self {
                Self::Postgres(pool) => pg::create_shadow(pool, table).await?,
                Self::Sqlite(pool) => lite::create_shadow(pool, table).await?,
            }
        }
        Ok(())
    }

    /// Drops the shadows (a failed rebuild).
    pub async fn drop_shadows(&self, tables: &[&str]) -> Result<(), ReadModelError> {
        for table in tables {
            let sql = format!("DROP TABLE IF EXISTS {}", shadow_table(table));
            match self {
                Self::Postgres(pool) => {
                    sqlx::query(sqlx::AssertSqlSafe(sql)).execute(pool).await?;
                }
                Self::Sqlite(pool) => {
                    sqlx::query(sqlx::AssertSqlSafe(sql)).execute(pool).await?;
                }
            }
        }
        Ok(())
    }

    /// Swaps every shadow in for its live table in one transaction, and sets
    /// the projections' checkpoints to `position` (bumping their generation,
    /// so a sweep still working on the old tables writes nothing).
    pub async fn swap_shadows(&self, swaps: &[(&str, &str)], position: i64) -> Result<(), ReadModelError> {
        match self {
            Self::Postgres(pool) => pg::swap_shadows(pool, swaps, position).await,
            Self::Sqlite(pool) => lite::swap_shadows(pool, swaps, position).await,
        }
    }
}

/// PostgreSQL.
mod pg {
    use sqlx::{AssertSqlSafe, PgPool};

    use super::super::types::ReadModelError;

    pub(super) async fn begin_rebuild(
        pool: &PgPool,
        names: &[&str],
        total: i64,
    ) -> Result<u64, ReadModelError> {
        let mut tx = pool.begin().await?;
        let claimed = sqlx::query(
            "UPDATE projection_checkpoints SET rebuilding = true, rebuild_replayed = 0, rebuild_total = $2, \
                    rebuild_started_at = now(), rebuild_heartbeat_at = now() \
             WHERE name = ANY($1) \
               AND (NOT rebuilding OR rebuild_heartbeat_at IS NULL OR rebuild_heartbeat_at < now() - interval '30 seconds')",
        )
        .bind(names)
        .bind(total)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // All or nothing.
        if claimed == names.len() as u64 {
            tx.commit().await?;
        }
        Ok(claimed)
    }

    pub(super) async fn rebuild_progress(
        pool: &PgPool,
        names: &[&str],
        replayed: i64,
        total: i64,
    ) -> Result<(), ReadModelError> {
        sqlx::query(
            "UPDATE projection_checkpoints SET rebuild_replayed = $2, rebuild_total = $3, rebuild_heartbeat_at = now() \
             WHERE name = ANY($1)",
        )
        .bind(names)
        .bind(replayed)
        .bind(total)
        .execute(pool)
        .await?;
        Ok(())
    }

    pub(super) async fn end_rebuild(pool: &PgPool, names: &[&str]) -> Result<(), ReadModelError> {
        sqlx::query(
            "UPDATE projection_checkpoints SET rebuilding = false, rebuild_heartbeat_at = now() WHERE name = ANY($1)",
        )
        .bind(names)
        .execute(pool)
        .await?;
        Ok(())
    }

    pub(super) async fn create_shadow(pool: &PgPool, table: &str) -> Result<(), ReadModelError> {
        let shadow = super::super::shadow_table(table);
        sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {shadow}")))
            .execute(pool)
            .await?;
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE {shadow} (LIKE {table} INCLUDING ALL)"
        )))
        .execute(pool)
        .await?;
        Ok(())
    }

    pub(super) async fn swap_shadows(
        pool: &PgPool,
        swaps: &[(&str, &str)],
        position: i64,
    ) -> Result<(), ReadModelError> {
        let names: Vec<&str> = swaps.iter().map(|(name, _)| *name).collect();
        let mut tx = pool.begin().await?;
        // Checkpoint rows first, tables second: the order a sweep takes them in
        // (its compare-and-set, then its table), so the two cannot deadlock.
        sqlx::query("SELECT name FROM projection_checkpoints WHERE name = ANY($1) ORDER BY name FOR UPDATE")
            .bind(&names)
            .fetch_all(&mut *tx)
            .await?;
        for (_, table) in swaps {
            let (shadow, old) = (super::super::shadow_table(table), format!("{table}_old"));
            for sql in [
                format!("DROP TABLE IF EXISTS {old}"),
                format!("ALTER TABLE {table} RENAME TO {old}"),
                format!("ALTER TABLE {shadow} RENAME TO {table}"),
            ] {
                sqlx::query(AssertSqlSafe(sql)).execute(&mut *tx).await?;
            }
        }
        sqlx::query(
            "UPDATE projection_checkpoints SET position = $2, generation = generation + 1, rebuilding = false, \
                    rebuild_heartbeat_at = now(), updated_at = now() \
             WHERE name = ANY($1)",
        )
        .bind(&names)
        .bind(position)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        for (_, table) in swaps {
            sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}_old")))
                .execute(pool)
                .await?;
        }
        Ok(())
    }
}

/// SQLite.
mod lite {
    use sqlx::{AssertSqlSafe, SqlitePool};

    use super::super::types::ReadModelError;

    fn names_json(names: &[&str]) -> String {
        serde_json::Value::from(names.to_vec()).to_string()
    }

    const NOW_MS: &str = "CAST(unixepoch('subsec') * 1000 AS INTEGER)";

    pub(super) async fn begin_rebuild(
        pool: &SqlitePool,
        names: &[&str],
        total: i64,
    ) -> Result<u64, ReadModelError> {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        let claimed = sqlx::query(AssertSqlSafe(format!(
            "UPDATE projection_checkpoints SET rebuilding = 1, rebuild_replayed = 0, rebuild_total = ?2, \
                    rebuild_started_at = {NOW_MS}, rebuild_heartbeat_at = {NOW_MS} \
             WHERE name IN (SELECT value FROM json_each(?1)) \
               AND (rebuilding = 0 OR rebuild_heartbeat_at IS NULL OR rebuild_heartbeat_at < {NOW_MS} - 30000)"
        )))
        .bind(names_json(names))
        .bind(total)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if claimed == names.len() as u64 {
            tx.commit().await?;
        }
        Ok(claimed)
    }

    pub(super) async fn rebuild_progress(
        pool: &SqlitePool,
        names: &[&str],
        replayed: i64,
        total: i64,
    ) -> Result<(), ReadModelError> {
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE projection_checkpoints SET rebuild_replayed = ?2, rebuild_total = ?3, rebuild_heartbeat_at = {NOW_MS} \
             WHERE name IN (SELECT value FROM json_each(?1))"
        )))
        .bind(names_json(names))
        .bind(replayed)
        .bind(total)
        .execute(pool)
        .await?;
        Ok(())
    }

    pub(super) async fn end_rebuild(pool: &SqlitePool, names: &[&str]) -> Result<(), ReadModelError> {
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE projection_checkpoints SET rebuilding = 0, rebuild_heartbeat_at = {NOW_MS} \
             WHERE name IN (SELECT value FROM json_each(?1))"
        )))
        .bind(names_json(names))
        .execute(pool)
        .await?;
        Ok(())
    }

    /// Creates the shadow of `table` from the live table's own DDL in
    /// `sqlite_master` (SQLite has no `CREATE TABLE .. LIKE`). Index names get a
    /// fresh `__s<n>` suffix: the live table keeps its index names after a swap,
    /// so the shadow's must differ.
    pub(super) async fn create_shadow(pool: &SqlitePool, table: &str) -> Result<(), ReadModelError> {
        let shadow = super::super::shadow_table(table);
        sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {shadow}")))
            .execute(pool)
            .await?;
        let ddl: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT type, name, sql FROM sqlite_master WHERE tbl_name = ?1 AND sql IS NOT NULL ORDER BY type DESC",
        )
        .bind(table)
        .fetch_all(pool)
        .await?;
        let suffix = chrono::Utc::now().timestamp_micros();
        for (kind, name, sql) in ddl {
            let body = |from: usize| sql.get(from..).unwrap_or_default().to_string();
            let statement = match kind.as_str() {
                "table" => {
                    let open = sql
                        .find('(')
                        .ok_or_else(|| anyhow::anyhow!("odd DDL of {table}"))?;
                    format!("CREATE TABLE {shadow} {}", body(open))
                }
                "index" => {
                    let on = sql
                        .find(" ON ")
                        .ok_or_else(|| anyhow::anyhow!("odd DDL of index {name}"))?;
                    let open = on
                        + sql[on..]
                            .find('(')
                            .ok_or_else(|| anyhow::anyhow!("odd DDL of {name}"))?;
                    let base = name.split("__s").next().unwrap_or(&name);
                    let unique = if sql.to_ascii_uppercase().starts_with("CREATE UNIQUE") {
                        "UNIQUE "
                    } else {
                        ""
                    };
                    format!(
                        "CREATE {unique}INDEX {base}__s{suffix} ON {shadow} {}",
                        body(open)
                    )
                }
                _ => continue,
            };
            sqlx::query(AssertSqlSafe(statement)).execute(pool).await?;
        }
        Ok(())
    }

    pub(super) async fn swap_shadows(
        pool: &SqlitePool,
        swaps: &[(&str, &str)],
        position: i64,
    ) -> Result<(), ReadModelError> {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        for (_, table) in swaps {
            let shadow = super::super::shadow_table(table);
            for sql in [
                format!("DROP TABLE {table}"),
                format!("ALTER TABLE {shadow} RENAME TO {table}"),
            ] {
                sqlx::query(AssertSqlSafe(sql)).execute(&mut *tx).await?;
            }
        }
        let names: Vec<&str> = swaps.iter().map(|(name, _)| *name).collect();
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE projection_checkpoints SET position = ?2, generation = generation + 1, rebuilding = 0, \
                    rebuild_heartbeat_at = {NOW_MS}, updated_at = {NOW_MS} \
             WHERE name IN (SELECT value FROM json_each(?1))"
        )))
        .bind(names_json(&names))
        .bind(position)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
