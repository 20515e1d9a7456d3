//! Configuration from the environment: every variable the seed names plus ours,
//! parsed and validated once at start, with an error naming the bad variable.

use std::{collections::HashMap, fmt::Display, str::FromStr, time::Duration};

use rust_decimal::Decimal;

/// A variable that is missing where required or holds a bad value.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {var}={value:?}: {reason}")]
pub struct ConfigError {
    /// The variable's name.
    pub var: String,
    /// What it held.
    pub value: String,
    /// Why that is wrong.
    pub reason: String,
}

/// Deployment environment; `production` enforces real JWT keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    /// Local development (the default).
    Development,
    /// Automated tests.
    Test,
    /// Pre-production.
    Staging,
    /// Production: refuses development secrets.
    Production,
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

/// Log line format.
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

/// The whole configuration of the service.
#[derive(Debug, Clone)]
pub struct Config {
    /// ENVIRONMENT.
    pub environment: Environment,
    /// HOST: address to bind (default 0.0.0.0).
    pub host: String,
    /// PORT: the one port for gRPC and HTTP (default 8084).
    pub port: u16,
    /// DATABASE_URL: PostgreSQL; unset means the embedded SQLite file.
    pub database_url: Option<String>,
    /// SQLITE_PATH: the embedded database file (default `commerce.db`).
    pub sqlite_path: String,
    /// REDIS_URL: Redis; unset means in-process equivalents.
    pub redis_url: Option<String>,
    /// REDIS_KEY_PREFIX: prefix of every Redis key (default `commerce`).
    pub redis_key_prefix: String,
    /// RUN_MIGRATIONS: apply migrations at start (default true).
    pub run_migrations: bool,
    /// DB_POOL_SIZE (default 16).
    pub db_pool_size: u32,
    /// REDIS_POOL_SIZE (default 32).
    pub redis_pool_size: usize,
    /// POOL_TIMEOUT_MS: bound on waiting for a pooled connection (default 2000).
    pub pool_timeout: Duration,
    /// PAYMENT_SERVICE_URL; unset (all three) means embedded stubs on loopback.
    pub payment_service_url: Option<String>,
    /// INVENTORY_SERVICE_URL.
    pub inventory_service_url: Option<String>,
    /// SHIPPING_SERVICE_URL.
    pub shipping_service_url: Option<String>,
    /// SIBLING_CALL_TIMEOUT_MS: deadline of each saga call (default 3000).
    pub sibling_call_timeout: Duration,
    /// ENABLE_TRACING: export OpenTelemetry traces (default false).
    pub enable_tracing: bool,
    /// OTEL_EXPORTER_OTLP_ENDPOINT: OTLP/gRPC collector, e.g. http://jaeger:4317.
    pub otlp_endpoint: Option<String>,
    /// JAEGER_ENDPOINT: the seed's variable; only its host is used, with Jaeger's OTLP port 4317.
    pub jaeger_endpoint: Option<String>,
    /// LOG_FORMAT: json (default) or pretty.
    pub log_format: LogFormat,
    /// ENABLE_SAGA_ORCHESTRATION (default true): off leaves orders PENDING.
    pub enable_saga_orchestration: bool,
    /// ENABLE_EVENT_SOURCING (default true): the write side is event-sourced; false is refused.
    pub enable_event_sourcing: bool,
    /// ENABLE_CQRS (default true): off serves order queries by folding the event stream.
    pub enable_cqrs: bool,
    /// ENABLE_OPTIMISTIC_LOCKING (default true): see the README.
    pub enable_optimistic_locking: bool,
    /// EVENT_STORE_GROUP_COMMIT (default true): on PostgreSQL concurrent
    /// appends share a transaction; off gives each its own (for comparison).
    pub event_store_group_commit: bool,
    /// CART_TTL_HOURS (default 24; decimals allowed, e.g. 0.5).
    pub cart_ttl: Duration,
    /// ORDER_TIMEOUT_MINUTES (default 30; decimals allowed).
    pub order_timeout: Duration,
    /// SAGA_RETRY_ATTEMPTS (default 3).
    pub saga_retry_attempts: u32,
    /// SAGA_RETRY_DELAY_SECONDS (default 5; decimals allowed).
    pub saga_retry_delay: Duration,
    /// SAGA_WORKERS: concurrent saga steps per replica (default 32; 0: this
    /// replica starts sagas but leaves running them to the others).
    pub saga_workers: usize,
    /// SAGA_COMPENSATION_RETRY_ATTEMPTS: retries of a transient compensation
    /// failure before COMPENSATION_FAILED (default 10).
    pub saga_compensation_retry_attempts: u32,
    /// SAGA_LEASE_SECONDS: how long a replica owns a saga it works on without
    /// writing (default 30; more than twice SIBLING_CALL_TIMEOUT_MS).
    pub saga_lease: Duration,
    /// JWT_SECRET: HS256 secret (development default; refused in production).
    pub jwt_secret: Option<String>,
    /// JWT_PUBLIC_KEY_FILE: PEM RS256/ES256 public key.
    pub jwt_public_key_file: Option<String>,
    /// JWT_JWKS_FILE: JWKS file of public keys.
    pub jwt_jwks_file: Option<String>,
    /// JWT_ISSUER (default `commerce-dev`).
    pub jwt_issuer: String,
    /// JWT_AUDIENCE (default `commerce`).
    pub jwt_audience: String,
    /// RATE_LIMIT_PER_SECOND: token refill per principal (default 100; 0 disables).
    pub rate_limit_per_second: u32,
    /// RATE_LIMIT_BURST: bucket size (default 200).
    pub rate_limit_burst: u32,
    /// MAX_MESSAGE_BYTES: max gRPC message (default 4 MiB).
    pub max_message_bytes: usize,
    /// MAX_BODY_BYTES: max HTTP body (default 1 MiB).
    pub max_body_bytes: usize,
    /// MAX_REQUEST_TIMEOUT_SECONDS: cap on any request's deadline (default 30).
    pub max_request_timeout: Duration,
    /// MAX_CONCURRENT_STREAMS: HTTP/2 streams per connection (default 256).
    pub max_concurrent_streams: u32,
    /// CORS_ALLOWED_ORIGINS: comma-separated, or `*` (default `*` outside production).
    pub cors_allowed_origins: Vec<String>,
    /// PII_MASTER_KEY: 64 hex chars wrapping per-customer keys (development default).
    pub pii_master_key: Option<String>,
    /// STUB_FAILURE_RATE: transient failure probability of the stubs, 0 to 1.
    pub stub_failure_rate: Decimal,
    /// STUB_LATENCY_MS: added latency of every stub call.
    pub stub_latency: Duration,
    /// STUB_DEFAULT_STOCK: on-hand stock of a product the inventory stub has not seen.
    pub stub_default_stock: i64,
    /// STUBS_PORT: port of `commerce stubs` (default 8085).
    pub stubs_port: u16,
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
        let production = environment == Environment::Production;
        let config = Self {
            environment,
            host: env.string("HOST", "0.0.0.0"),
            port: env.parse("PORT", 8084)?,
            database_url: env.optional("DATABASE_URL").map(normalize_database_url),
            sqlite_path: env.string("SQLITE_PATH", "commerce.db"),
            redis_url: env.optional("REDIS_URL"),
            redis_key_prefix: env.string("REDIS_KEY_PREFIX", "commerce"),
            run_migrations: env.flag("RUN_MIGRATIONS", true)?,
            db_pool_size: env.parse_in("DB_POOL_SIZE", 16, 1..=1000)?,
            redis_pool_size: env.parse_in("REDIS_POOL_SIZE", 32, 1..=10_000)?,
            pool_timeout: Duration::from_millis(env.parse_in("POOL_TIMEOUT_MS", 2000, 1..=600_000)?),
            payment_service_url: env.optional("PAYMENT_SERVICE_URL"),
            inventory_service_url: env.optional("INVENTORY_SERVICE_URL"),
            shipping_service_url: env.optional("SHIPPING_SERVICE_URL"),
            sibling_call_timeout: Duration::from_millis(env.parse_in(
                "SIBLING_CALL_TIMEOUT_MS",
                3000,
                1..=600_000,
            )?),
            enable_tracing: env.flag("ENABLE_TRACING", false)?,
            otlp_endpoint: env.optional("OTEL_EXPORTER_OTLP_ENDPOINT"),
            jaeger_endpoint: env.optional("JAEGER_ENDPOINT"),
            log_format: env.parse("LOG_FORMAT", LogFormat::Json)?,
            enable_saga_orchestration: env.flag("ENABLE_SAGA_ORCHESTRATION", true)?,
            enable_event_sourcing: env.flag("ENABLE_EVENT_SOURCING", true)?,
            enable_cqrs: env.flag("ENABLE_CQRS", true)?,
            enable_optimistic_locking: env.flag("ENABLE_OPTIMISTIC_LOCKING", true)?,
            event_store_group_commit: env.flag("EVENT_STORE_GROUP_COMMIT", true)?,
            cart_ttl: env.duration("CART_TTL_HOURS", "24", 3600)?,
            order_timeout: env.duration("ORDER_TIMEOUT_MINUTES", "30", 60)?,
            saga_retry_attempts: env.parse_in("SAGA_RETRY_ATTEMPTS", 3, 0..=100)?,
            saga_retry_delay: env.duration("SAGA_RETRY_DELAY_SECONDS", "5", 1)?,
            saga_workers: env.parse_in("SAGA_WORKERS", 32, 0..=10_000)?,
            saga_compensation_retry_attempts: env.parse_in(
                "SAGA_COMPENSATION_RETRY_ATTEMPTS",
                10,
                0..=1000,
            )?,
            saga_lease: env.duration("SAGA_LEASE_SECONDS", "30", 1)?,
            jwt_secret: env.optional("JWT_SECRET"),
            jwt_public_key_file: env.optional("JWT_PUBLIC_KEY_FILE"),
            jwt_jwks_file: env.optional("JWT_JWKS_FILE"),
            jwt_issuer: env.string("JWT_ISSUER", "commerce-dev"),
            jwt_audience: env.string("JWT_AUDIENCE", "commerce"),
            rate_limit_per_second: env.parse("RATE_LIMIT_PER_SECOND", 100)?,
            rate_limit_burst: env.parse_in("RATE_LIMIT_BURST", 200, 1..=1_000_000)?,
            max_message_bytes: env.parse_in("MAX_MESSAGE_BYTES", 4 << 20, 1024..=(64 << 20))?,
            max_body_bytes: env.parse_in("MAX_BODY_BYTES", 1 << 20, 1024..=(64 << 20))?,
            max_request_timeout: Duration::from_secs(env.parse_in(
                "MAX_REQUEST_TIMEOUT_SECONDS",
                30,
                1..=3600,
            )?),
            max_concurrent_streams: env.parse_in("MAX_CONCURRENT_STREAMS", 256, 1..=100_000)?,
            cors_allowed_origins: env
                .string("CORS_ALLOWED_ORIGINS", if production { "" } else { "*" })
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            pii_master_key: env.optional("PII_MASTER_KEY"),
            stub_failure_rate: env.parse("STUB_FAILURE_RATE", Decimal::ZERO)?,
            stub_latency: Duration::from_millis(env.parse_in("STUB_LATENCY_MS", 0, 0..=60_000)?),
            stub_default_stock: env.parse_in("STUB_DEFAULT_STOCK", 1_000_000, 0..=i64::MAX)?,
            stubs_port: env.parse("STUBS_PORT", 8085)?,
        };
        config.validate()
    }

    fn validate(self) -> Result<Self, ConfigError> {
        let bad = |var: &str, value: String, reason: &str| ConfigError {
            var: var.into(),
            value,
            reason: reason.into(),
        };
        if !self.enable_event_sourcing {
            return Err(bad(
                "ENABLE_EVENT_SOURCING",
                "false".into(),
                "the order write side is event-sourced and cannot be turned off",
            ));
        }
        if self.stub_failure_rate < Decimal::ZERO || self.stub_failure_rate > Decimal::ONE {
            return Err(bad(
                "STUB_FAILURE_RATE",
                self.stub_failure_rate.to_string(),
                "expected 0 to 1",
            ));
        }
        // A lease shorter than a call would let a second replica run the same
        // step while the first still waits for its answer.
        if self.saga_lease < self.sibling_call_timeout * 2 + Duration::from_millis(500) {
            return Err(bad(
                "SAGA_LEASE_SECONDS",
                format!("{:?}", self.saga_lease),
                "must exceed twice SIBLING_CALL_TIMEOUT_MS plus 0.5 s",
            ));
        }
        if let Some(url) = &self.database_url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err(bad("DATABASE_URL", redact(url), "expected a postgres:// URL"));
        }
        if let Some(url) = &self.redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return Err(bad("REDIS_URL", redact(url), "expected a redis:// URL"));
        }
        if self.redis_key_prefix.is_empty() || self.redis_key_prefix.contains(char::is_whitespace) {
            return Err(bad(
                "REDIS_KEY_PREFIX",
                self.redis_key_prefix.clone(),
                "expected a non-empty word",
            ));
        }
        Ok(self)
    }

    /// True when no sibling URL is set: `serve` runs the stubs itself on loopback.
    pub fn embedded_stubs(&self) -> bool {
        self.payment_service_url.is_none()
            && self.inventory_service_url.is_none()
            && self.shipping_service_url.is_none()
    }

    /// The OTLP endpoint to export to, when tracing is on and one is known.
    pub fn tracing_endpoint(&self) -> Option<String> {
        if !self.enable_tracing {
            return None;
        }
        self.otlp_endpoint.clone().or_else(|| {
            // The seed's JAEGER_ENDPOINT names the collector host; Jaeger takes OTLP/gRPC on 4317.
            let url = self.jaeger_endpoint.as_deref()?;
            let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
            let host = rest.split(['/', ':']).next()?;
            Some(format!("{scheme}://{host}:4317"))
        })
    }
}

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

struct Env<'a>(&'a HashMap<String, String>);

impl Env<'_> {
    fn optional(&self, name: &str) -> Option<String> {
        self.0
            .get(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    fn string(&self, name: &str, default: &str) -> String {
        self.optional(name).unwrap_or_else(|| default.to_string())
    }

    fn parse<T: FromStr>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T::Err: Display,
    {
        match self.optional(name) {
            None => Ok(default),
            Some(value) => value.parse().map_err(|e: T::Err| ConfigError {
                var: name.into(),
                reason: e.to_string(),
                value,
            }),
        }
    }

    fn parse_in<T>(
        &self,
        name: &str,
        default: T,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + Display + Copy,
        T::Err: Display,
    {
        let value = self.parse(name, default)?;
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(ConfigError {
                var: name.into(),
                value: value.to_string(),
                reason: format!("expected {} to {}", range.start(), range.end()),
            })
        }
    }

    fn flag(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        match self.optional(name).map(|v| v.to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if matches!(v.as_str(), "true" | "1" | "yes" | "on") => Ok(true),
            Some(v) if matches!(v.as_str(), "false" | "0" | "no" | "off") => Ok(false),
            Some(value) => Err(ConfigError {
                var: name.into(),
                value,
                reason: "expected true or false".into(),
            }),
        }
    }

    /// A positive decimal number of `unit_seconds`, as a Duration (no floats).
    fn duration(&self, name: &str, default: &str, unit_seconds: u64) -> Result<Duration, ConfigError> {
        let raw = self.string(name, default);
        let err = |reason: &str| ConfigError {
            var: name.into(),
            value: raw.clone(),
            reason: reason.into(),
        };
        let amount: Decimal = raw.parse().map_err(|_| err("expected a number"))?;
        let millis = amount
            .checked_mul(Decimal::from(unit_seconds * 1000))
            .ok_or_else(|| err("too large"))?
            .trunc();
        let millis: u64 = millis
            .try_into()
            .map_err(|_| err("expected a non-negative number"))?;
        if millis == 0 && amount > Decimal::ZERO {
            return Err(err("below one millisecond"));
        }
        Ok(Duration::from_millis(millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_the_seed() {
        let c = Config::from_vars(&vars(&[])).unwrap();
        assert_eq!(c.port, 8084);
        assert_eq!(c.cart_ttl, Duration::from_secs(24 * 3600));
        assert_eq!(c.order_timeout, Duration::from_secs(30 * 60));
        assert_eq!(c.saga_retry_attempts, 3);
        assert_eq!(c.saga_retry_delay, Duration::from_secs(5));
        assert!(c.enable_saga_orchestration && c.enable_cqrs && c.enable_optimistic_locking);
        assert!(c.embedded_stubs());
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value) in [
            ("PORT", "eighty"),
            ("PORT", "70000"),
            ("CART_TTL_HOURS", "-1"),
            ("SAGA_RETRY_ATTEMPTS", "x"),
            ("ENABLE_CQRS", "maybe"),
            ("DATABASE_URL", "mysql://x"),
            ("ENVIRONMENT", "moon"),
            ("STUB_FAILURE_RATE", "1.5"),
            ("SAGA_LEASE_SECONDS", "1"),
            ("STUBS_PORT", "-1"),
        ] {
            let err = Config::from_vars(&vars(&[(var, value)])).unwrap_err();
            assert_eq!(err.var, var, "{err}");
        }
    }

    #[test]
    fn fractional_durations_and_seed_urls_are_accepted() {
        let c = Config::from_vars(&vars(&[
            ("CART_TTL_HOURS", "0.001"),
            ("SAGA_RETRY_DELAY_SECONDS", "0.05"),
            ("DATABASE_URL", "postgresql+asyncpg://u:p@h:5432/db"),
        ]))
        .unwrap();
        assert_eq!(c.cart_ttl, Duration::from_millis(3600));
        assert_eq!(c.saga_retry_delay, Duration::from_millis(50));
        assert_eq!(c.database_url.as_deref(), Some("postgresql://u:p@h:5432/db"));
    }

    #[test]
    fn jaeger_endpoint_maps_to_its_otlp_port() {
        let c = Config::from_vars(&vars(&[
            ("ENABLE_TRACING", "true"),
            ("JAEGER_ENDPOINT", "http://jaeger:14268/api/traces"),
        ]))
        .unwrap();
        assert_eq!(c.tracing_endpoint().as_deref(), Some("http://jaeger:4317"));
    }
}
