//! Read models on PostgreSQL: the statements of the shared implementation
//! (`shared.rs`), bulk upserts through `UNNEST` arrays (one statement per
//! batch, whatever its size), shadow tables by `CREATE TABLE .. LIKE`, and
//! the conversion figures summed in SQL.
//!
//! SQL-SAFE: every spliced name is a model's `TABLE` constant, its shadow
//! (`shadow_table`), or a constant column list; all values are bound.

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Postgres, Transaction};

use super::{ConversionFigures, Guard, ReadModelError, StoredModel};
use crate::store::columns::{DbTime, PgArrays};

/// [`super::ReadModels`] on PostgreSQL (migration 0003 applied).
#[derive(Clone, Debug)]
pub struct PostgresReadModels {
    pool: PgPool,
}

impl PostgresReadModels {
    /// The read models on `pool` (migrated).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

sql_read_models!(PostgresReadModels);

type Db = Postgres;

async fn begin(pool: &PgPool) -> sqlx::Result<Transaction<'static, Postgres>> {
    pool.begin().await
}

const IN_IDS: &str = "= ANY($1)";

/// The sweep's compare-and-set of checkpoint `$1`; a row when it moved.
const ADVANCE: &str = "UPDATE projection_checkpoints SET position = $2, updated_at = now() \
                       WHERE name = $1 AND generation = $3 AND position = $4 RETURNING name";

const BEGIN_REBUILD: &str = "UPDATE projection_checkpoints SET rebuilding = true, rebuild_replayed = 0, \
         rebuild_total = $2, rebuild_started_at = now(), rebuild_heartbeat_at = now() \
     WHERE name = ANY($1) \
       AND (NOT rebuilding OR rebuild_heartbeat_at IS NULL OR rebuild_heartbeat_at < now() - interval '30 seconds')";

const REBUILD_PROGRESS: &str = "UPDATE projection_checkpoints SET rebuild_replayed = $2, rebuild_total = $3, \
     rebuild_heartbeat_at = now() WHERE name = ANY($1)";

const END_REBUILD: &str =
    "UPDATE projection_checkpoints SET rebuilding = false, rebuild_heartbeat_at = now() WHERE name = ANY($1)";

/// Upserts `rows` in one statement: each column bound as one array,
/// `INSERT .. SELECT FROM UNNEST(..) ON CONFLICT .. WHERE version < excluded.version`.
async fn upsert_rows<R: StoredModel>(conn: &mut PgConnection, table: &str, rows: &[R]) -> sqlx::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let sql = upsert_sql::<R>(table, 1, "");
    column_arrays(rows)
        .bind(sqlx::query(AssertSqlSafe(sql)))?
        .execute(conn)
        .await
        .map(drop)
}

/// A guarded write in one statement (one round trip, one commit): checks
/// `guard` on checkpoint `name` (the sweep's compare-and-set moves it; a
/// generation guard only reads it) and, only if it holds, upserts `rows`
/// (or writes nothing: [`ReadModelError::CheckpointMoved`]).
///
/// It locks the table before it reads or locks the checkpoint row, the order
/// `swap_shadows` takes them in. That order also makes the generation guard
/// exact without a row lock: the statement's snapshot is taken after its
/// table lock is granted, so a statement that waited for a swap sees the
/// swap's new generation (and refuses), and one that got the table first
/// makes the swap wait for it (and wrote the table of the generation it saw).
async fn upsert_guarded<R: StoredModel>(
    conn: &mut PgConnection,
    table: &str,
    name: &str,
    guard: Guard,
    rows: &[R],
) -> Result<(), ReadModelError> {
    // The check returns the checkpoint's name when it holds, and binds
    // `$1..$values`; the rows' arrays follow.
    let (check, values) = match guard {
        Guard::Generation(_) => (super::LIVE, 2),
        Guard::Advance(_) => (ADVANCE, 4),
    };
    // Nothing to write is still checked: a fold that found only duplicates
    // from rows of a swapped-out table must learn it.
    let sql = if rows.is_empty() {
        check.to_string()
    } else {
        let upsert = upsert_sql::<R>(table, values + 1, " WHERE EXISTS (SELECT FROM checked)");
        format!("WITH checked AS ({check}), upserted AS ({upsert}) SELECT name FROM checked")
    };
    let query = sqlx::query(AssertSqlSafe(sql)).bind(name);
    let query = match guard {
        Guard::Generation(generation) => query.bind(generation),
        Guard::Advance(advance) => query
            .bind(advance.to)
            .bind(advance.from.generation)
            .bind(advance.from.position),
    };
    let query = if rows.is_empty() {
        query
    } else {
        column_arrays(rows).bind(query)?
    };
    if query.fetch_all(conn).await?.len() == 1 {
        Ok(())
    } else {
        Err(ReadModelError::CheckpointMoved(name.to_string()))
    }
}

/// Each column of `rows` as one array.
fn column_arrays<R: StoredModel>(rows: &[R]) -> PgArrays {
    let mut arrays = PgArrays::default();
    for row in rows {
        row.bind(arrays.row());
    }
    arrays
}

/// `INSERT .. SELECT FROM UNNEST($first, ..)` + `filter` `ON CONFLICT ..`.
fn upsert_sql<R: StoredModel>(table: &str, first: usize, filter: &str) -> String {
    let names = R::COLUMNS.join(", ");
    let arrays: Vec<String> = (first..first + R::COLUMNS.len())
        .map(|i| format!("${i}"))
        .collect();
    let updates: Vec<String> = R::COLUMNS[1..]
        .iter()
        .map(|n| format!("{n} = EXCLUDED.{n}"))
        .collect();
    format!(
        "INSERT INTO {table} ({names}) SELECT * FROM UNNEST({}) AS u({names}){filter} \
         ON CONFLICT (order_id) DO UPDATE SET {} WHERE {table}.version < EXCLUDED.version",
        arrays.join(", "),
        updates.join(", "),
    )
}

async fn create_shadow(pool: &PgPool, table: &str, shadow: &str) -> Result<(), ReadModelError> {
    sqlx::query(AssertSqlSafe(format!(
        "CREATE TABLE {shadow} (LIKE {table} INCLUDING ALL)"
    )))
    .execute(pool)
    .await?;
    Ok(())
}

async fn swap_shadows(pool: &PgPool, swaps: &[(&str, &str)], position: i64) -> Result<(), ReadModelError> {
    let names: Vec<&str> = swaps.iter().map(|(name, _)| *name).collect();
    let mut tx = pool.begin().await?;
    // Tables first, checkpoint rows second: the order a sweep's write takes
    // them in (`upsert_guarded`: its table when the statement starts, the
    // checkpoint row when it runs), so the two cannot deadlock.
    let tables: Vec<&str> = swaps.iter().map(|(_, table)| *table).collect();
    sqlx::query(AssertSqlSafe(format!(
        "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
        tables.join(", ")
    )))
    .execute(&mut *tx)
    .await?;
    sqlx::query("SELECT name FROM projection_checkpoints WHERE name = ANY($1) ORDER BY name FOR UPDATE")
        .bind(&names)
        .fetch_all(&mut *tx)
        .await?;
    for (_, table) in swaps {
        let (shadow, old) = (super::shadow_table(table), format!("{table}_old"));
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

async fn conversion_figures(
    pool: &PgPool,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Vec<ConversionFigures>, ReadModelError> {
    Ok(sqlx::query_as(
        "SELECT to_char(converted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, currency, \
                count(*) AS converted, \
                count(*) FILTER (WHERE outcome = 'confirmed') AS confirmed, \
                count(*) FILTER (WHERE outcome = 'cancelled') AS cancelled, \
                COALESCE(sum(total), 0) AS converted_value, \
                COALESCE(sum(total) FILTER (WHERE outcome = 'confirmed'), 0) AS confirmed_value \
         FROM cart_conversions WHERE converted_at >= $1 AND converted_at < $2 \
         GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .bind(DbTime(since))
    .bind(DbTime(until))
    .fetch_all(pool)
    .await?)
}
