//! Configuration from the environment: every variable the seed names plus ours,
//! parsed and validated once at start, with an error naming the bad variable.
//!
//! [`Config`] is nested by component, as zero2prod's `Settings` is: startup
//! holds the whole of it and hands each component its own part (the
//! authenticator [`AuthSettings`], the saga runtime [`SagaSettings`], and so
//! on), so that what a component can be told is written in its signature.

mod env;

use std::{collections::HashMap, str::FromStr, time::Duration};

use rust_decimal::Decimal;

pub use self::env::ConfigError;
use self::env::Env;

/// PROJECTION_CACHE_ROWS's default: rows each projection keeps in memory
/// (`projections::fold_cache` says why this size).
pub const PROJECTION_CACHE_ROWS: usize = 4_000;

/// Deployment environment; only development and test accept the public
/// development secrets (JWT secret, PII key) and `*` CORS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    /// Local development (the default).
    Development,
    /// Automated tests: the development key is accepted without a warning.
    Test,
    /// Pre-production: a shared deployment that is not production yet; it
    /// refuses the development secrets, as production does.
    Staging,
    /// Production: refuses development secrets.
    Production,
}

impl Environment {
    /// True for development and test, the only environments where the
    /// development secrets, published in this repository, may protect anything.
    pub fn allows_development_secrets(self) -> bool {
        matches!(self, Self::Development | Self::Test)
    }

    /// The name ENVIRONMENT takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Test => "test",
            Self::Staging => "staging",
            Self::Production => "production",
        }
    }
}

impl std::fmt::Display for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Environment {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "development" | "dev" | "local" => Ok(Self::Development),
            "test" => Ok(Self::Test),
            "staging" => Ok(Self::Staging),
            "production" | "prod" => Ok(Self::Production),
            _ => Err("expected development, test, staging or production".into()),
        }
    }
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (the default).
    Json,
    /// Human-readable, for a terminal.
    Pretty,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(Self::Json),
            "pretty" | "text" => Ok(Self::Pretty),
            _ => Err("expected json or pretty".into()),
        }
    }
}

/// The whole configuration of the service, one part per component.
#[derive(Debug, Clone)]
pub struct Config {
    /// ENVIRONMENT (default development): startup also refuses embedded stubs
    /// in production.
    pub environment: Environment,
    /// Where to listen and whom browsers may call from.
    pub server: ServerSettings,
    /// Size and time bounds of every request.
    pub limits: LimitSettings,
    /// HTTP/2 connection lifecycle and gRPC compression of the listener.
    pub connections: ConnectionSettings,
    /// The token bucket per principal.
    pub rate_limit: RateLimitSettings,
    /// JWT verification and development tokens.
    pub auth: AuthSettings,
    /// The database of events, sagas and read models.
    pub database: DatabaseSettings,
    /// Redis for carts and the event bus, when configured.
    pub redis: RedisSettings,
    /// The event bus's partitions, their leases and the relay.
    pub bus: BusSettings,
    /// The order command side.
    pub orders: OrderSettings,
    /// Cart expiry.
    pub carts: CartSettings,
    /// The fulfillment saga runtime.
    pub saga: SagaSettings,
    /// Where the payment, inventory and shipping services are.
    pub siblings: SiblingSettings,
    /// Where order queries read from.
    pub read_side: ReadSideSettings,
    /// Encryption of personal data.
    pub privacy: PrivacySettings,
    /// The payment, inventory and shipping stubs.
    pub stubs: StubSettings,
    /// Log format and trace export.
    pub telemetry: TelemetrySettings,
    /// How long finished data is kept (the retention job, `commerce purge`).
    pub retention: RetentionSettings,
}

/// The listener of `serve`.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// HOST: address to bind (default 0.0.0.0).
    pub host: String,
    /// PORT: the one port for gRPC and HTTP (default 8084).
    pub port: u16,
    /// CORS_ALLOWED_ORIGINS: comma-separated, or `*` (development and test
    /// only, where it is the default; none elsewhere).
    pub cors_allowed_origins: Vec<String>,
    /// SSE_HEARTBEAT_SECONDS: a server stream served as Server-Sent Events
    /// sends a comment line after this long without an event (default 15;
    /// decimals allowed), so proxies keep it open and clients see it alive.
    pub sse_heartbeat: Duration,
}

/// Bounds that keep one client from tying up the server.
#[derive(Debug, Clone)]
pub struct LimitSettings {
    /// MAX_MESSAGE_BYTES: largest gRPC message (default 4 MiB).
    pub max_message_bytes: usize,
    /// MAX_BODY_BYTES: largest HTTP body (default 1 MiB).
    pub max_body_bytes: usize,
    /// MAX_REQUEST_TIMEOUT_SECONDS: cap on any request's deadline (default 30).
    pub max_request_timeout: Duration,
    /// MAX_CONCURRENT_STREAMS: HTTP/2 streams per connection (default 256).
    pub max_concurrent_streams: u32,
}

/// How the listener keeps, recycles and compresses its HTTP/2 connections.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// HTTP2_KEEPALIVE_INTERVAL_SECONDS: PING an idle connection this often
    /// (default 60; 0 turns pings off), so that a peer gone without a FIN is found.
    pub keepalive_interval: Option<Duration>,
    /// HTTP2_KEEPALIVE_TIMEOUT_SECONDS: close a connection whose PING is not
    /// answered within this (default 20).
    pub keepalive_timeout: Duration,
    /// MAX_CONNECTION_AGE_SECONDS: send GOAWAY to a connection this old
    /// (default 1800; 0: never), so that clients reconnect and spread over
    /// the replicas a scale-out added.
    pub max_age: Option<Duration>,
    /// MAX_CONNECTION_AGE_GRACE_SECONDS: how long calls in flight at the
    /// GOAWAY may still run before the connection is closed (default 60).
    pub max_age_grace: Duration,
    /// GRPC_RESPONSE_COMPRESSION (default true): compress responses with
    /// gzip or zstd when the caller advertises it (`grpc-accept-encoding`).
    /// Compressed requests are accepted either way.
    pub compress_responses: bool,
}

/// A token bucket per principal (per IP when anonymous).
#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    /// RATE_LIMIT_PER_SECOND: tokens refilled per second (default 100; 0
    /// turns rate limiting off).
    pub per_second: u32,
    /// RATE_LIMIT_BURST: bucket size (default 200).
    pub burst: u32,
}

/// Which keys verify tokens, and what a token must claim.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// ENVIRONMENT, copied: production refuses the development secret.
    pub environment: Environment,
    /// JWT_SECRET: HS256 secret (the development secret when unset, outside
    /// production).
    pub jwt_secret: Option<String>,
    /// JWT_PUBLIC_KEY_FILE: a PEM RS256/ES256 public key.
    pub jwt_public_key_file: Option<String>,
    /// JWT_JWKS_FILE: a JWKS file of public keys.
    pub jwt_jwks_file: Option<String>,
    /// JWT_ISSUER: the required `iss` (default `commerce-dev`).
    pub jwt_issuer: String,
    /// JWT_AUDIENCE: the required `aud` (default `commerce`).
    pub jwt_audience: String,
}

/// PostgreSQL, or the embedded SQLite file when no URL is set.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// DATABASE_URL: PostgreSQL; unset means the embedded SQLite file.
    pub url: Option<String>,
    /// DATABASE_READ_URL: a read-only streaming replica of DATABASE_URL's
    /// database (PostgreSQL only). Order queries and the projections' reads
    /// of the event log go there first; whatever it has not replayed yet
    /// (a `min_version` it is behind, a gap) is read from the primary (see
    /// [`crate::app::replica`]).
    pub read_url: Option<String>,
    /// SQLITE_PATH: the embedded database file (default `commerce.db`).
    pub sqlite_path: String,
    /// RUN_MIGRATIONS: apply migrations at start (default true).
    pub run_migrations: bool,
    /// DB_POOL_SIZE (default 16; SQLite uses at most 8).
    pub pool_size: u32,
    /// POOL_TIMEOUT_MS: bound on waiting for a pooled connection (default 2000).
    pub pool_timeout: Duration,
    /// EVENT_STORE_GROUP_COMMIT (default true): on PostgreSQL concurrent
    /// appends share a transaction; off gives each its own (for comparison).
    pub group_commit: bool,
}

/// Redis, when configured; in-process equivalents otherwise.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// REDIS_URL: unset means in-process carts and event bus.
    pub url: Option<String>,
    /// REDIS_KEY_PREFIX: prefix of every Redis key (default `commerce`), so
    /// that several deployments (or tests) can share one Redis.
    pub key_prefix: String,
    /// REDIS_CLUSTER (default false): REDIS_URL names a node (or, comma
    /// separated, several) of a Redis Cluster; keys get hash tags and the
    /// cart counters are sharded (see [`crate::redis_conn`]).
    pub cluster: bool,
    /// REDIS_POOL_SIZE (default 32): connections shared by carts and the bus.
    pub pool_size: usize,
    /// POOL_TIMEOUT_MS, shared with the database pool (default 2000).
    pub pool_timeout: Duration,
}

/// The event bus (Redis Streams or in-process, see [`crate::bus`]).
#[derive(Debug, Clone)]
pub struct BusSettings {
    /// EVENT_BUS_PARTITIONS (default 1, at most 256): streams the events are
    /// spread over by order id; replicas share them with leases, so more
    /// partitions than replicas lets every replica consume. Changing it
    /// follows the README's procedure.
    pub partitions: u32,
    /// EVENT_BUS_LEASE_SECONDS (default 10): a replica's partition leases
    /// last this long unrenewed; a dead replica's partitions move after it.
    pub lease: Duration,
    /// EVENT_BUS_RELAY (default true): this replica publishes the settled
    /// event log to the bus. Turned off on every replica to drain the bus
    /// (events wait in the event store meanwhile, behind the relay cursor).
    pub relay: bool,
    /// PROJECTION_CACHE_ROWS (default 4,000, 0 turns it off): rows each
    /// projection keeps of what it last committed, so that its next fold of
    /// those orders reads nothing back (`projections::fold_cache`, which says
    /// why this size).
    pub projection_cache_rows: usize,
}

impl BusSettings {
    fn read(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            // At most 256: every lease renewal reads all of them.
            partitions: env.parse_in("EVENT_BUS_PARTITIONS", 1, 1..=256)?,
            lease: env.duration("EVENT_BUS_LEASE_SECONDS", "10", 1)?,
            relay: env.flag("EVENT_BUS_RELAY", true)?,
            projection_cache_rows: env.parse_in(
                "PROJECTION_CACHE_ROWS",
                PROJECTION_CACHE_ROWS,
                0..=10_000_000,
            )?,
        })
    }
}

/// What an order command does on a version conflict
/// (ENABLE_OPTIMISTIC_LOCKING). Both re-read the stream and decide again; the
/// store's version check itself is never off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictHandling {
    /// `true` (the default): a few attempts, then ABORTED to the client.
    Report,
    /// `false`: many attempts with a growing pause, so that a client
    /// practically never sees a conflict.
    Absorb,
}

/// The order command side.
#[derive(Debug, Clone)]
pub struct OrderSettings {
    /// ENABLE_SAGA_ORCHESTRATION, copied: whether CreateOrder starts a saga
    /// and CancelOrder asks it to compensate (off: cancelled at once).
    pub saga_orchestration: bool,
    /// ORDER_TIMEOUT_MINUTES (default 30; decimals allowed): a saga not done
    /// by then is compensated.
    pub order_timeout: Duration,
    /// ENABLE_OPTIMISTIC_LOCKING (default true: conflicts are reported).
    pub conflicts: ConflictHandling,
    /// MAX_REQUEST_TIMEOUT_SECONDS, copied: how long a CreateOrder holds its
    /// idempotency key; no request lives longer, so a key held past it was
    /// abandoned by a crashed replica and may be taken over.
    pub idempotency_lease: Duration,
}

/// Carts (Redis or in-process; the Redis part is [`RedisSettings`]).
#[derive(Debug, Clone)]
pub struct CartSettings {
    /// CART_TTL_HOURS (default 24; decimals allowed, e.g. 0.5): expiry after
    /// the cart's last change.
    pub ttl: Duration,
}

/// The fulfillment saga runtime of this replica.
#[derive(Debug, Clone)]
pub struct SagaSettings {
    /// ENABLE_SAGA_ORCHESTRATION (default true): off starts no saga and runs
    /// no worker; orders stay PENDING.
    pub enabled: bool,
    /// SAGA_WORKERS: concurrent saga steps per replica (default 32; 0: this
    /// replica starts sagas but leaves running them to the others).
    pub workers: usize,
    /// SAGA_RETRY_ATTEMPTS: retries of a transient step failure (default 3).
    pub retry_attempts: u32,
    /// SAGA_COMPENSATION_RETRY_ATTEMPTS: retries of a transient compensation
    /// failure before COMPENSATION_FAILED (default 10).
    pub compensation_retry_attempts: u32,
    /// SAGA_RETRY_DELAY_SECONDS: first backoff delay, doubled per retry with
    /// jitter (default 5; decimals allowed).
    pub retry_delay: Duration,
    /// SAGA_LEASE_SECONDS: how long a replica owns a saga it works on without
    /// writing (default 30; more than twice SIBLING_CALL_TIMEOUT_MS).
    pub lease: Duration,
    /// SIBLING_CALL_TIMEOUT_MS: deadline of each call to a sibling (default 3000).
    pub call_timeout: Duration,
}

/// The sibling services; each one left unset is served by stubs embedded in
/// the process (refused in production).
#[derive(Debug, Clone)]
pub struct SiblingSettings {
    /// PAYMENT_SERVICE_URL, e.g. `http://payment:8085`.
    pub payment_url: Option<String>,
    /// INVENTORY_SERVICE_URL, e.g. `http://inventory:8085`.
    pub inventory_url: Option<String>,
    /// SHIPPING_SERVICE_URL, e.g. `http://shipping:8085`.
    pub shipping_url: Option<String>,
}

/// Where GetOrder and WatchOrder read an order from (ENABLE_CQRS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderQuerySource {
    /// `true` (the default): the `order_details` read model.
    ReadModel,
    /// `false`: fold the order's event stream on every query.
    EventStream,
}

/// The read side as order queries see it.
#[derive(Debug, Clone)]
pub struct ReadSideSettings {
    /// ENABLE_CQRS (default true). Projections run either way: ListOrders
    /// has no event-store equivalent.
    pub order_queries: OrderQuerySource,
    /// WATCH_MAX_STREAMS_PER_CALLER, WATCH_MAX_STREAMS, WATCH_MAX_LIFETIME_SECONDS:
    /// bounds of WatchOrder streams (defaults 16, 4096, 900); WATCH_POLL_MS
    /// (1000): how soon a change another replica projected reaches them.
    pub watch: WatchSettings,
}

/// Bounds of WatchOrder streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchSettings {
    /// Open streams one principal may hold.
    pub per_principal: usize,
    /// Open streams of this process.
    pub total: usize,
    /// Longest life of one stream.
    pub lifetime: Duration,
    /// How often the global log is read for changes other replicas projected.
    pub poll: Duration,
}

impl Default for WatchSettings {
    fn default() -> Self {
        Self {
            per_principal: 16,
            total: 4096,
            lifetime: Duration::from_secs(15 * 60),
            poll: Duration::from_secs(1),
        }
    }
}

/// Encryption of personal data.
#[derive(Debug, Clone)]
pub struct PrivacySettings {
    /// ENVIRONMENT, copied: production refuses the development key.
    pub environment: Environment,
    /// PII_MASTER_KEY: 64 hex chars wrapping per-customer keys (a development
    /// key when unset, outside production).
    pub master_key: Option<String>,
}

/// How long finished data is kept before the retention job (one replica at
/// a time) or `commerce purge` deletes it. Ages count from the row's last
/// change; order event streams are never purged.
#[derive(Debug, Clone)]
pub struct RetentionSettings {
    /// RETENTION_INTERVAL_SECONDS: pause between two runs of the background
    /// job (default 3600; 0: no background job, `commerce purge` only).
    pub interval: Duration,
    /// RETENTION_SAGAS_DAYS: finished sagas (COMPLETED, COMPENSATED) with
    /// their steps, attempts and operator actions (default 30).
    pub sagas: Duration,
    /// RETENTION_IDEMPOTENCY_HOURS: CreateOrder idempotency keys after their
    /// answer was recorded (default 24): the window in which a client may
    /// retry and get the first answer.
    pub idempotency: Duration,
    /// RETENTION_DEAD_LETTERS_DAYS: dead letters after they were dead-lettered (default 14).
    pub dead_letters: Duration,
    /// RETENTION_BATCH_SIZE: rows one delete statement takes (default 1000).
    pub batch: usize,
}

impl RetentionSettings {
    fn read(env: &Env) -> Result<Self, ConfigError> {
        let age = |name: &str, default: &str, unit: u64| -> Result<Duration, ConfigError> {
            let age = env.duration(name, default, unit)?;
            if age.is_zero() {
                return Err(env.invalid(name, "0".into(), "expected a positive age"));
            }
            Ok(age)
        };
        Ok(Self {
            interval: env.duration("RETENTION_INTERVAL_SECONDS", "3600", 1)?,
            sagas: age("RETENTION_SAGAS_DAYS", "30", 86_400)?,
            idempotency: age("RETENTION_IDEMPOTENCY_HOURS", "24", 3600)?,
            dead_letters: age("RETENTION_DEAD_LETTERS_DAYS", "14", 86_400)?,
            batch: env.parse_in("RETENTION_BATCH_SIZE", 1000, 1..=100_000)?,
        })
    }
}

/// The payment, inventory and shipping stubs (`commerce stubs`, or embedded).
#[derive(Debug, Clone)]
pub struct StubSettings {
    /// STUB_FAILURE_RATE: probability of a transient failure per call, 0 to 1.
    pub failure_rate: Decimal,
    /// STUB_LATENCY_MS: added latency of every call.
    pub latency: Duration,
    /// STUB_DEFAULT_STOCK: on-hand stock of a product the inventory stub has
    /// not seen (default 1000000).
    pub default_stock: i64,
    /// STUBS_PORT: port of `commerce stubs` (default 8085).
    pub port: u16,
}

/// Log format and trace export; `RUST_LOG` and the `OTEL_*` tuning
/// variables are read by the libraries themselves.
#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    /// ENABLE_TRACING: export OpenTelemetry traces (default false); on with
    /// no endpoint named, to the OTLP default, `http://localhost:4317`.
    pub tracing: bool,
    /// OTEL_EXPORTER_OTLP_ENDPOINT: OTLP/gRPC collector, e.g. http://jaeger:4317.
    pub otlp_endpoint: Option<String>,
    /// JAEGER_ENDPOINT: the seed's variable; only its host is used, with
    /// Jaeger's OTLP port 4317.
    pub jaeger_endpoint: Option<String>,
    /// LOG_FORMAT: json (default) or pretty.
    pub log_format: LogFormat,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&std::env::vars().collect())
    }

    /// Reads the given variables (tests pass their own).
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let env = Env(vars);
        let environment: Environment = env.parse("ENVIRONMENT", Environment::Development)?;
        // The write side is event-sourced; there is no other to switch to, so
        // asking for one stops the process rather than being ignored.
        if !env.flag("ENABLE_EVENT_SOURCING", true)? {
            return Err(ConfigError {
                var: "ENABLE_EVENT_SOURCING".into(),
                value: "false".into(),
                reason: "the order write side is event-sourced and cannot be turned off".into(),
            });
        }
        let limits = LimitSettings::read(&env)?;
        let saga = SagaSettings::read(&env)?;
        let pool_timeout = Duration::from_millis(env.parse_in("POOL_TIMEOUT_MS", 2000, 1..=600_000)?);
        Ok(Self {
            environment,
            server: ServerSettings::read(&env, environment)?,
            rate_limit: RateLimitSettings {
                per_second: env.parse("RATE_LIMIT_PER_SECOND", 100)?,
                burst: env.parse_in("RATE_LIMIT_BURST", 200, 1..=1_000_000)?,
            },
            auth: AuthSettings {
                environment,
                jwt_secret: env.optional("JWT_SECRET"),
                jwt_public_key_file: env.optional("JWT_PUBLIC_KEY_FILE"),
                jwt_jwks_file: env.optional("JWT_JWKS_FILE"),
                jwt_issuer: env.string("JWT_ISSUER", "commerce-dev"),
                jwt_audience: env.string("JWT_AUDIENCE", "commerce"),
            },
            database: DatabaseSettings::read(&env, pool_timeout)?,
            redis: RedisSettings::read(&env, pool_timeout)?,
            bus: BusSettings::read(&env)?,
            orders: OrderSettings {
                saga_orchestration: saga.enabled,
                order_timeout: env.duration("ORDER_TIMEOUT_MINUTES", "30", 60)?,
                conflicts: if env.flag("ENABLE_OPTIMISTIC_LOCKING", true)? {
                    ConflictHandling::Report
                } else {
                    ConflictHandling::Absorb
                },
                idempotency_lease: limits.max_request_timeout,
            },
            carts: CartSettings {
                ttl: env.duration("CART_TTL_HOURS", "24", 3600)?,
            },
            saga,
            siblings: SiblingSettings {
                payment_url: env.optional("PAYMENT_SERVICE_URL"),
                inventory_url: env.optional("INVENTORY_SERVICE_URL"),
                shipping_url: env.optional("SHIPPING_SERVICE_URL"),
            },
            read_side: ReadSideSettings {
                order_queries: if env.flag("ENABLE_CQRS", true)? {
                    OrderQuerySource::ReadModel
                } else {
                    OrderQuerySource::EventStream
                },
                watch: WatchSettings {
                    per_principal: env.parse_in("WATCH_MAX_STREAMS_PER_CALLER", 16, 1..=10_000)?,
                    total: env.parse_in("WATCH_MAX_STREAMS", 4096, 1..=1_000_000)?,
                    lifetime: env.duration("WATCH_MAX_LIFETIME_SECONDS", "900", 1)?,
                    poll: Duration::from_millis(env.parse_in("WATCH_POLL_MS", 1000, 10..=60_000)?),
                },
            },
            privacy: PrivacySettings {
                environment,
                master_key: env.optional("PII_MASTER_KEY"),
            },
            stubs: StubSettings::read(&env)?,
            connections: ConnectionSettings::read(&env)?,
            telemetry: TelemetrySettings {
                tracing: env.flag("ENABLE_TRACING", false)?,
                otlp_endpoint: env.optional("OTEL_EXPORTER_OTLP_ENDPOINT"),
                jaeger_endpoint: env.optional("JAEGER_ENDPOINT"),
                log_format: env.parse("LOG_FORMAT", LogFormat::Json)?,
            },
            retention: RetentionSettings::read(&env)?,
            limits,
        })
    }
}

impl ServerSettings {
    fn read(env: &Env, environment: Environment) -> Result<Self, ConfigError> {
        let strict = !environment.allows_development_secrets();
        let cors_allowed_origins: Vec<String> = env
            .string("CORS_ALLOWED_ORIGINS", if strict { "" } else { "*" })
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if strict && cors_allowed_origins.iter().any(|o| o == "*") {
            return Err(ConfigError {
                var: "CORS_ALLOWED_ORIGINS".into(),
                value: "*".into(),
                reason: format!(
                    "ENVIRONMENT={environment} refuses `*`: list the origins (only development and test allow any)"
                ),
            });
        }
        let sse_heartbeat = env.duration("SSE_HEARTBEAT_SECONDS", "15", 1)?;
        if sse_heartbeat.is_zero() {
            return Err(env.invalid("SSE_HEARTBEAT_SECONDS", "0".into(), "expected a positive number"));
        }
        Ok(Self {
            host: env.string("HOST", "0.0.0.0"),
            port: env.parse("PORT", 8084)?,
            cors_allowed_origins,
            sse_heartbeat,
        })
    }
}

impl LimitSettings {
    fn read(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            max_message_bytes: env.parse_in("MAX_MESSAGE_BYTES", 4 << 20, 1024..=(64 << 20))?,
            max_body_bytes: env.parse_in("MAX_BODY_BYTES", 1 << 20, 1024..=(64 << 20))?,
            max_request_timeout: Duration::from_secs(env.parse_in(
                "MAX_REQUEST_TIMEOUT_SECONDS",
                30,
                1..=3600,
            )?),
            max_concurrent_streams: env.parse_in("MAX_CONCURRENT_STREAMS", 256, 1..=100_000)?,
        })
    }
}

impl ConnectionSettings {
    fn read(env: &Env) -> Result<Self, ConfigError> {
        let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
        let keepalive_timeout = env.duration("HTTP2_KEEPALIVE_TIMEOUT_SECONDS", "20", 1)?;
        if keepalive_timeout.is_zero() {
            return Err(env.invalid(
                "HTTP2_KEEPALIVE_TIMEOUT_SECONDS",
                "0".into(),
                "expected a positive number",
            ));
        }
        Ok(Self {
            keepalive_interval: nonzero(env.duration("HTTP2_KEEPALIVE_INTERVAL_SECONDS", "60", 1)?),
            keepalive_timeout,
            max_age: nonzero(env.duration("MAX_CONNECTION_AGE_SECONDS", "1800", 1)?),
            max_age_grace: env.duration("MAX_CONNECTION_AGE_GRACE_SECONDS", "60", 1)?,
            compress_responses: env.flag("GRPC_RESPONSE_COMPRESSION", true)?,
        })
    }
}

impl DatabaseSettings {
    fn read(env: &Env, pool_timeout: Duration) -> Result<Self, ConfigError> {
        let url = env.optional("DATABASE_URL").map(normalize_database_url);
        if let Some(url) = &url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err(env.invalid("DATABASE_URL", redact(url), "expected a postgres:// URL"));
        }
        let read_url = env.optional("DATABASE_READ_URL").map(normalize_database_url);
        if let Some(read_url) = &read_url {
            if !(read_url.starts_with("postgres://") || read_url.starts_with("postgresql://")) {
                return Err(env.invalid(
                    "DATABASE_READ_URL",
                    redact(read_url),
                    "expected a postgres:// URL",
                ));
            }
            if url.is_none() {
                return Err(env.invalid(
                    "DATABASE_READ_URL",
                    redact(read_url),
                    "a replica of DATABASE_URL's PostgreSQL: set DATABASE_URL too (the embedded SQLite file has no replicas)",
                ));
            }
        }
        Ok(Self {
            url,
            read_url,
            sqlite_path: env.string("SQLITE_PATH", "commerce.db"),
            run_migrations: env.flag("RUN_MIGRATIONS", true)?,
            pool_size: env.parse_in("DB_POOL_SIZE", 16, 1..=1000)?,
            pool_timeout,
            group_commit: env.flag("EVENT_STORE_GROUP_COMMIT", true)?,
        })
    }
}

impl RedisSettings {
    fn read(env: &Env, pool_timeout: Duration) -> Result<Self, ConfigError> {
        let url = env.optional("REDIS_URL");
        if let Some(url) = &url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return Err(env.invalid("REDIS_URL", redact(url), "expected a redis:// URL"));
        }
        let key_prefix = env.string("REDIS_KEY_PREFIX", "commerce");
        if key_prefix.is_empty() || key_prefix.contains(char::is_whitespace) {
            return Err(env.invalid("REDIS_KEY_PREFIX", key_prefix, "expected a non-empty word"));
        }
        if key_prefix.contains(['{', '}']) {
            return Err(env.invalid(
                "REDIS_KEY_PREFIX",
                key_prefix,
                "braces would be read as a Redis Cluster hash tag",
            ));
        }
        Ok(Self {
            url,
            key_prefix,
            cluster: env.flag("REDIS_CLUSTER", false)?,
            pool_size: env.parse_in("REDIS_POOL_SIZE", 32, 1..=10_000)?,
            pool_timeout,
        })
    }
}

impl SagaSettings {
    fn read(env: &Env) -> Result<Self, ConfigError> {
        let settings = Self {
            enabled: env.flag("ENABLE_SAGA_ORCHESTRATION", true)?,
            workers: env.parse_in("SAGA_WORKERS", 32, 0..=10_000)?,
            retry_attempts: env.parse_in("SAGA_RETRY_ATTEMPTS", 3, 0..=100)?,
            compensation_retry_attempts: env.parse_in("SAGA_COMPENSATION_RETRY_ATTEMPTS", 10, 0..=1000)?,
            retry_delay: env.duration("SAGA_RETRY_DELAY_SECONDS", "5", 1)?,
            lease: env.duration("SAGA_LEASE_SECONDS", "30", 1)?,
            call_timeout: Duration::from_millis(env.parse_in(
                "SIBLING_CALL_TIMEOUT_MS",
                3000,
                1..=600_000,
            )?),
        };
        // A lease shorter than a call would let a second replica run the same
        // step while the first still waits for its answer.
        if settings.lease < settings.call_timeout * 2 + Duration::from_millis(500) {
            return Err(env.invalid(
                "SAGA_LEASE_SECONDS",
                format!("{:?}", settings.lease),
                "must exceed twice SIBLING_CALL_TIMEOUT_MS plus 0.5 s",
            ));
        }
        Ok(settings)
    }
}

impl SiblingSettings {
    /// True when no sibling URL is set: `serve` runs the stubs itself on loopback.
    pub fn all_embedded(&self) -> bool {
        self.payment_url.is_none() && self.inventory_url.is_none() && self.shipping_url.is_none()
    }
}

impl StubSettings {
    fn read(env: &Env) -> Result<Self, ConfigError> {
        let failure_rate = env.parse("STUB_FAILURE_RATE", Decimal::ZERO)?;
        if failure_rate < Decimal::ZERO || failure_rate > Decimal::ONE {
            return Err(env.invalid("STUB_FAILURE_RATE", failure_rate.to_string(), "expected 0 to 1"));
        }
        Ok(Self {
            failure_rate,
            latency: Duration::from_millis(env.parse_in("STUB_LATENCY_MS", 0, 0..=60_000)?),
            default_stock: env.parse_in("STUB_DEFAULT_STOCK", 1_000_000, 0..=i64::MAX)?,
            port: env.parse("STUBS_PORT", 8085)?,
        })
    }
}

impl TelemetrySettings {
    /// The OTLP endpoint to export to; None when tracing is off. A switched-on
    /// ENABLE_TRACING always exports: without OTEL_EXPORTER_OTLP_ENDPOINT or
    /// JAEGER_ENDPOINT it uses the endpoint the OTLP specification defaults to.
    pub fn tracing_endpoint(&self) -> Option<String> {
        if !self.tracing {
            return None;
        }
        let from_jaeger = || {
            // The seed's JAEGER_ENDPOINT names the collector host; Jaeger takes OTLP/gRPC on 4317.
            let url = self.jaeger_endpoint.as_deref()?;
            let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
            let host = rest.split(['/', ':']).next()?;
            Some(format!("{scheme}://{host}:4317"))
        };
        Some(
            self.otlp_endpoint
                .clone()
                .or_else(from_jaeger)
                .unwrap_or_else(|| OTLP_DEFAULT_ENDPOINT.to_string()),
        )
    }
}

/// Where OTLP/gRPC exporters send when no endpoint is configured (the
/// OpenTelemetry specification's default).
const OTLP_DEFAULT_ENDPOINT: &str = "http://localhost:4317";

/// The seed's SQLAlchemy URLs (`postgresql+asyncpg://`) name the same database.
fn normalize_database_url(url: String) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) if scheme.starts_with("postgresql+") => format!("postgresql://{rest}"),
        _ => url,
    }
}

/// Hides a password in a URL before it reaches an error message.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(start), Some(at)) if at > start => format!("{}://***{}", &url[..start], &url[at..]),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests;
