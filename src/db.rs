//! The backends: PostgreSQL or the embedded SQLite file for what the write and
//! read sides keep, Redis or in-process equivalents for carts and the bus.

use std::{str::FromStr, time::Duration};

use anyhow::Context;
use sqlx::{
    Connection, PgPool, SqlitePool,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use crate::{
    config::{DatabaseSettings, RedisSettings},
    redis_conn::RedisPool,
};

/// A pooled PostgreSQL connection idle longer than this is pinged before it
/// is handed out; one used more recently is handed out as it is.
pub const PING_IDLE_AFTER: Duration = Duration::from_secs(1);

/// The pool options of a PostgreSQL pool, the primary's or the replica's.
///
/// sqlx pings every connection at every checkout by default: a round trip,
/// and a message for the server to answer, before every statement and
/// every transaction. A connection the pool handed out within the last
/// second was working then, so only one idle for longer is pinged (a
/// server restart or a dropped link is most likely noticed there). One that
/// broke within that second fails its statement instead, which callers see
/// as UNAVAILABLE, as they would a failure during the statement; the pool
/// then closes it.
fn pg_pool_options(settings: &DatabaseSettings) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(settings.pool_size)
        .acquire_timeout(settings.pool_timeout)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for <= PING_IDLE_AFTER {
                    return Ok(true);
                }
                // A failed ping discards the connection; the pool opens another.
                Ok(conn.ping().await.is_ok())
            })
        })
}

/// The relational database: PostgreSQL in production, SQLite embedded.
#[derive(Clone, Debug)]
pub enum Db {
    /// DATABASE_URL set.
    Postgres(PgPool),
    /// The embedded SQLite file.
    Sqlite(SqlitePool),
}

impl Db {
    /// Connects as the configuration says (lazily: a database that is down at
    /// start makes health NOT_SERVING instead of failing the process).
    pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<Self> {
        match &settings.url {
            Some(url) => {
                let options = PgConnectOptions::from_str(url).context("parsing DATABASE_URL")?;
                let pool = pg_pool_options(settings).connect_lazy_with(options.application_name("commerce"));
                Ok(Self::Postgres(pool))
            }
            None => {
                let options = SqliteConnectOptions::new()
                    .filename(&settings.sqlite_path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(5))
                    .foreign_keys(true);
                let pool = SqlitePoolOptions::new()
                    .max_connections(settings.pool_size.min(8))
                    .acquire_timeout(settings.pool_timeout)
                    // A file does not hang up: sqlx's ping before every checkout
                    // would only cost a trip to the connection's thread.
                    .test_before_acquire(false)
                    .connect_with(options)
                    .await
                    .with_context(|| format!("opening SQLite file {}", settings.sqlite_path))?;
                Ok(Self::Sqlite(pool))
            }
        }
    }

    /// The read replica's pool when DATABASE_READ_URL is set (lazily
    /// connected, sized and bounded as the primary's); a replica that fails
    /// is skipped for the primary (see [`crate::app::replica`]).
    pub fn connect_replica(settings: &DatabaseSettings) -> anyhow::Result<Option<PgPool>> {
        let Some(url) = &settings.read_url else {
            return Ok(None);
        };
        let options = PgConnectOptions::from_str(url).context("parsing DATABASE_READ_URL")?;
        let pool = pg_pool_options(settings).connect_lazy_with(options.application_name("commerce-read"));
        Ok(Some(pool))
    }

    /// Applies the migrations of this backend.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let result = match self {
            Self::Postgres(pool) => sqlx::migrate!("migrations/postgres").run(pool).await,
            Self::Sqlite(pool) => sqlx::migrate!("migrations/sqlite").run(pool).await,
        };
        result.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(inner) => {
                operator_error(inner).context("while executing migrations")
            }
            sqlx::migrate::MigrateError::ExecuteMigration(inner, version) => {
                operator_error(inner).context(format!("while executing migration {version}"))
            }
            other => other.into(),
        })
    }

    /// A cheap round trip, for health.
    pub async fn ping(&self) -> anyhow::Result<()> {
        let result = match self {
            Self::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop),
            Self::Sqlite(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop),
        };
        result.map_err(operator_error)
    }

    /// "postgres" or "sqlite".
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::Sqlite(_) => "sqlite",
        }
    }

    /// Leadership of a job that one replica at a time runs (the retention
    /// purge): on PostgreSQL the session advisory lock `key`, kept on one
    /// pooled connection until
    /// [`Leadership::release`]; `None` while another replica holds it. On
    /// SQLite one process owns the file: always granted.
    pub async fn try_lead(&self, key: i64) -> anyhow::Result<Option<Leadership>> {
        match self {
            Self::Postgres(pool) => {
                let mut conn = pool.acquire().await?;
                let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(key)
                    .fetch_one(&mut *conn)
                    .await?;
                Ok(locked.then_some(Leadership {
                    held: Some((conn, key)),
                }))
            }
            Self::Sqlite(_) => Ok(Some(Leadership { held: None })),
        }
    }
}

/// A held [`Db::try_lead`]. Dropped without [`Leadership::release`] (a
/// panic, a cancelled task), its connection is closed rather than returned to
/// the pool, which ends the session and so the lock: a lock never outlives
/// its holder's work.
#[derive(Debug)]
pub struct Leadership {
    held: Option<(sqlx::pool::PoolConnection<sqlx::Postgres>, i64)>,
}

impl Leadership {
    /// Gives the lock up and returns the connection to the pool.
    pub async fn release(mut self) {
        if let Some((mut conn, key)) = self.held.take() {
            let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(key)
                .execute(&mut *conn)
                .await;
            if unlocked.is_err() {
                drop(conn.detach());
            }
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if let Some((conn, _)) = self.held.take() {
            drop(conn.detach());
        }
    }
}

/// `error` as an operator should read it (health, logs, a command's output): sqlx's text of a
/// PostgreSQL error ends in the line of PostgreSQL's own C source that raised it
/// (`database "shop" does not exist at line 948`), which says nothing to anyone here; the
/// message and the SQLSTATE do.
///
/// A prepared statement that already exists (42P05) or does not (26000) on a
/// connection of ours means that something between us and PostgreSQL hands
/// one server connection to several clients: a pooler in transaction mode.
/// sqlx names every statement it prepares, so the service needs session
/// pooling; the message says so.
pub fn operator_error(error: sqlx::Error) -> anyhow::Error {
    match error.as_database_error() {
        Some(db) => match db.code() {
            Some(code) if code == "42P05" || code == "26000" => anyhow::anyhow!(
                "{} (SQLSTATE {code}): a connection pooler in transaction mode (PgBouncer's \
                 pool_mode=transaction) is between the service and PostgreSQL; the service \
                 prepares named statements and needs session pooling (README, \"PgBouncer\")",
                db.message()
            ),
            Some(code) => anyhow::anyhow!("{} (SQLSTATE {code})", db.message()),
            None => anyhow::anyhow!("{}", db.message()),
        },
        None => anyhow::Error::new(error),
    }
}

/// The database `settings` point at, for an operator reading a command's output:
/// `PostgreSQL database shop on db.internal:5432 as commerce` or
/// `SQLite file /srv/commerce.db` (never a password).
pub fn describe(settings: &DatabaseSettings) -> String {
    match &settings.url {
        Some(url) => match PgConnectOptions::from_str(url) {
            Ok(options) => format!(
                "PostgreSQL database {} on {}:{} as {}",
                options.get_database().unwrap_or("(the user's default)"),
                options.get_host(),
                options.get_port(),
                options.get_username()
            ),
            Err(_) => "PostgreSQL (DATABASE_URL does not parse)".to_string(),
        },
        None => {
            let path = std::path::Path::new(&settings.sqlite_path);
            let shown = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
            format!("SQLite file {}", shown.display())
        }
    }
}

/// A Redis pool when REDIS_URL is set; None means in-process carts and bus.
/// With REDIS_CLUSTER, a cluster pool whose seeds are REDIS_URL's nodes
/// (commas separate several).
pub fn redis_pool(settings: &RedisSettings) -> anyhow::Result<Option<RedisPool>> {
    let Some(url) = &settings.url else {
        return Ok(None);
    };
    let pool = deadpool_redis::PoolConfig {
        max_size: settings.pool_size,
        timeouts: deadpool_redis::Timeouts {
            wait: Some(settings.pool_timeout),
            create: Some(settings.pool_timeout),
            recycle: Some(settings.pool_timeout),
        },
        ..Default::default()
    };
    let runtime = Some(deadpool_redis::Runtime::Tokio1);
    if settings.cluster {
        let seeds = url.split(',').map(|u| u.trim().to_string()).collect();
        let manager = crate::redis_conn::ClusterManager::new(seeds).context("REDIS_URL")?;
        let pool = deadpool::managed::Pool::builder(manager)
            .config(pool)
            .runtime(deadpool_redis::Runtime::Tokio1)
            .build()
            .context("creating the Redis Cluster pool")?;
        return Ok(Some(RedisPool::Cluster(pool)));
    }
    let mut cfg = deadpool_redis::Config::from_url(url.clone());
    cfg.pool = Some(pool);
    let pool = cfg.create_pool(runtime).context("creating the Redis pool")?;
    Ok(Some(RedisPool::Single(pool)))
}

/// Both backends, handed to every store constructor.
#[derive(Clone)]
pub struct Backends {
    /// Events, the relay cursor, sagas, read models, idempotency keys.
    pub db: Db,
    /// Redis, or None for the in-process equivalents.
    pub redis: Option<RedisPool>,
}

/// For an error that says "the database is not reachable right now" (pool
/// exhaustion, I/O, a server shutting down, a serialization failure, SQLite
/// busy), why, in words fit for a client: a category, never the database's
/// own text. None for an error about the request or a bug.
///
/// Codes are read per backend: PostgreSQL's SQLSTATEs are five characters,
/// often all digits (22021 is an invalid byte sequence), so SQLite's numeric
/// result codes must only be tested on SQLite's errors.
pub fn unavailable(err: &sqlx::Error) -> Option<String> {
    let reason = match err {
        sqlx::Error::PoolTimedOut => "no connection free in time",
        sqlx::Error::PoolClosed => "shutting down",
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed => "connection lost",
        // A connection closed during the handshake (a proxy or load balancer
        // in front of a database that is down accepts, then hangs up) reads
        // as an unexpected reply to the SSL request: the database is away,
        // not the request wrong.
        sqlx::Error::Protocol(_) => "connection lost",
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // SQLite: 5 BUSY, 6 LOCKED (and their extended codes, which
                // end in the same byte).
                let busy = code.parse::<i32>().is_ok_and(|c| c & 0xff == 5 || c & 0xff == 6);
                busy.then_some("busy")?
            } else {
                // PostgreSQL: 08 connection, 40001 serialization, 40P01
                // deadlock, 53 insufficient resources, 57P0x shutdown.
                match code.as_ref() {
                    c if c.starts_with("08") => "connection lost",
                    "40001" | "40P01" => "conflicting transactions",
                    c if c.starts_with("53") => "out of resources",
                    c if c.starts_with("57P0") => "shutting down",
                    _ => return None,
                }
            }
        }
        _ => return None,
    };
    Some(format!("database unavailable ({reason}); retry later"))
}
