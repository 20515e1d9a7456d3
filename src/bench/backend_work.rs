//! What the backends did per operation, for the capacity model in the README: PostgreSQL's
//! writing transactions, rows written and WAL bytes, and Redis's commands and network bytes.
//!
//! Transactions are counted by the transaction ids handed out (only a transaction that writes
//! takes one) and bytes by the WAL position: both are exact at any moment, and both are the
//! whole PostgreSQL cluster's, so read them on a quiet machine, as the CPU figures. Rows come
//! from the run's own database in `pg_stat_database`, which a backend updates at most once a
//! second and, once idle, up to ten seconds later: `--settle-seconds 11` waits that out before
//! each sample. Redis's counters are the instance's (`INFO stats`), exact at any moment.

use anyhow::Context;
use serde_json::json;

/// Samples the backends' counters (nothing for a backend the run does not use).
pub struct BackendWorkProbe {
    postgres: Option<(sqlx::PgPool, String)>,
    redis: Option<redis::aio::MultiplexedConnection>,
}

/// The counters at one moment; `None` where the backend is not in use.
#[derive(Debug, Clone, Copy, Default)]
pub struct BackendWork {
    postgres: Option<PostgresWork>,
    redis: Option<RedisWork>,
}

#[derive(Debug, Clone, Copy)]
struct PostgresWork {
    /// The next transaction id: writing transactions begun so far.
    next_xid: i64,
    /// Rows inserted, updated and deleted in the run's database.
    rows: i64,
    /// The WAL position, in bytes.
    wal_bytes: i64,
}

#[derive(Debug, Clone, Copy)]
struct RedisWork {
    commands: u64,
    bytes_in: u64,
    bytes_out: u64,
}

impl BackendWorkProbe {
    /// A probe of the PostgreSQL database `database` (reached through `admin_url`) and of the
    /// Redis at `redis_url`, either of them optional.
    pub async fn connect(postgres: Option<(&str, &str)>, redis_url: Option<&str>) -> anyhow::Result<Self> {
        let postgres = match postgres {
            Some((admin_url, database)) => Some((
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .connect(admin_url)
                    .await
                    .context("connecting to PostgreSQL to read its counters")?,
                database.to_string(),
            )),
            None => None,
        };
        let redis = match redis_url {
            Some(url) => Some(
                redis::Client::open(url)?
                    .get_multiplexed_async_connection()
                    .await
                    .context("connecting to Redis to read its counters")?,
            ),
            None => None,
        };
        Ok(Self { postgres, redis })
    }

    /// The counters now.
    pub async fn sample(&self) -> anyhow::Result<BackendWork> {
        let postgres = match &self.postgres {
            Some((pool, database)) => {
                let (next_xid, wal_bytes, rows): (i64, i64, Option<i64>) = sqlx::query_as(
                    "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint, \
                            (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint, \
                            (SELECT (tup_inserted + tup_updated + tup_deleted)::bigint \
                               FROM pg_stat_database WHERE datname = $1)",
                )
                .bind(database)
                .fetch_one(pool)
                .await?;
                Some(PostgresWork {
                    next_xid,
                    rows: rows.unwrap_or_default(),
                    wal_bytes,
                })
            }
            None => None,
        };
        let redis = match &self.redis {
            Some(conn) => {
                let info: String = redis::cmd("INFO")
                    .arg("stats")
                    .query_async(&mut conn.clone())
                    .await?;
                Some(redis_work(&info).context("INFO stats lacks a counter")?)
            }
            None => None,
        };
        Ok(BackendWork { postgres, redis })
    }
}

impl BackendWork {
    /// What the backends did per operation from this sample to `later`, over `ops` operations.
    pub fn per_op(&self, later: &BackendWork, ops: u64) -> serde_json::Value {
        let per = |delta: f64| {
            if ops == 0 {
                serde_json::Value::Null
            } else {
                json!(((delta / ops as f64) * 100.0).round() / 100.0)
            }
        };
        let postgres = match (self.postgres, later.postgres) {
            (Some(a), Some(b)) => json!({
                "transactions": per((b.next_xid - a.next_xid) as f64),
                "rows_written": per((b.rows - a.rows) as f64),
                "wal_bytes": per((b.wal_bytes - a.wal_bytes) as f64),
            }),
            _ => serde_json::Value::Null,
        };
        let redis = match (self.redis, later.redis) {
            (Some(a), Some(b)) => json!({
                "commands": per(b.commands.saturating_sub(a.commands) as f64),
                "bytes_in": per(b.bytes_in.saturating_sub(a.bytes_in) as f64),
                "bytes_out": per(b.bytes_out.saturating_sub(a.bytes_out) as f64),
            }),
            _ => serde_json::Value::Null,
        };
        json!({ "postgres": postgres, "redis": redis })
    }
}

/// The counters of an `INFO stats` reply.
fn redis_work(info: &str) -> Option<RedisWork> {
    let field = |name: &str| {
        info.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|value| value.trim().parse().ok())
    };
    Some(RedisWork {
        commands: field("total_commands_processed")?,
        bytes_in: field("total_net_input_bytes")?,
        bytes_out: field("total_net_output_bytes")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_counters_are_read_from_info_stats_and_divided_per_operation() {
        let info = |commands: u64, bytes_in: u64| {
            format!(
                "# Stats\r\ntotal_connections_received:3\r\ntotal_commands_processed:{commands}\r\n\
                 instantaneous_ops_per_sec:0\r\ntotal_net_input_bytes:{bytes_in}\r\n\
                 total_net_output_bytes:500\r\n"
            )
        };
        let before = BackendWork {
            postgres: None,
            redis: redis_work(&info(100, 1_000)),
        };
        let after = BackendWork {
            postgres: None,
            redis: redis_work(&info(160, 4_000)),
        };
        let per_op = before.per_op(&after, 20);
        assert_eq!(per_op["redis"]["commands"], json!(3.0));
        assert_eq!(per_op["redis"]["bytes_in"], json!(150.0));
        assert_eq!(per_op["redis"]["bytes_out"], json!(0.0));
        assert!(per_op["postgres"].is_null());
        assert!(redis_work("# Stats\r\ntotal_commands_processed:1\r\n").is_none());
    }
}
