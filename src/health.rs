//! Dependency health: a monitor pings the database and Redis, and drives both
//! the gRPC health service and the JSON `/health` endpoint. Each gRPC service
//! follows the dependencies it needs ([`Needs`]): carts go NOT_SERVING when
//! Redis is away while orders keep serving, and the reverse when the database
//! is away; the whole server (`""`) needs both. Health/Watch streams see each
//! change as it is published.

use std::{collections::HashMap, sync::Arc, time::Duration};

use serde::Serialize;
use tokio::sync::RwLock;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::db::Backends;

/// Status of one dependency.
#[derive(Debug, Clone, Serialize)]
pub struct DependencyStatus {
    /// "postgres", "sqlite", "redis", "redis-cluster" or "in-process".
    pub kind: String,
    /// True when the last ping succeeded.
    pub up: bool,
    /// Last ping's round trip in milliseconds.
    pub latency_ms: u64,
    /// Last error, if down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What `/health` reports.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    /// "ok" or "degraded".
    pub status: &'static str,
    /// The crate version, to tell replicas of a rolling update apart.
    pub version: &'static str,
    /// PostgreSQL or the SQLite file.
    pub database: DependencyStatus,
    /// Redis (or in-process) status.
    pub cache: DependencyStatus,
    /// Extra sections added by other parts (projection lag, sagas).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Which dependencies a gRPC service cannot serve without.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// PostgreSQL or the SQLite file (events, read models, sagas).
    pub database: bool,
    /// Redis, or its in-process stand-in (carts, the event bus).
    pub cache: bool,
}

impl Needs {
    /// Serving when every needed dependency is up.
    fn met(self, database_up: bool, cache_up: bool) -> bool {
        (database_up || !self.database) && (cache_up || !self.cache)
    }
}

/// Shared, updated by the monitor.
#[derive(Clone)]
pub struct Health {
    report: Arc<RwLock<HealthReport>>,
    reporter: HealthReporter,
    services: Arc<Vec<(String, Needs)>>,
    /// What was last published per service: tonic-health hands every set to
    /// its Watch streams, equal or not, and the protocol promises a message
    /// per change only.
    published: Arc<std::sync::Mutex<HashMap<String, ServingStatus>>>,
    /// REDIS_KEY_PREFIX: where the Redis check writes (and deletes) its probe key.
    redis_prefix: Arc<str>,
}

impl Health {
    /// A health state for the named gRPC services (fully qualified names),
    /// each with what it needs; the Redis check writes under `redis_prefix`.
    pub fn new(
        reporter: HealthReporter,
        services: Vec<(String, Needs)>,
        backends: &Backends,
        redis_prefix: &str,
    ) -> Self {
        let unknown = |kind: &str| DependencyStatus {
            kind: kind.into(),
            up: false,
            latency_ms: 0,
            error: Some("not checked yet".into()),
        };
        Self {
            report: Arc::new(RwLock::new(HealthReport {
                status: "degraded",
                version: env!("CARGO_PKG_VERSION"),
                database: unknown(backends.db.kind()),
                cache: unknown(cache_kind(backends)),
                extra: Default::default(),
            })),
            reporter,
            services: Arc::new(services),
            published: Arc::default(),
            redis_prefix: redis_prefix.into(),
        }
    }

    /// The report of the monitor's latest check (no dependency is called here).
    pub async fn report(&self) -> HealthReport {
        self.report.read().await.clone()
    }

    /// Sets an extra section of the report (e.g. "projections").
    pub async fn set_extra(&self, key: &str, value: serde_json::Value) {
        self.report.write().await.extra.insert(key.to_string(), value);
    }

    /// Checks every dependency once and publishes the result. The database
    /// answers a ping; Redis must also be in the configured mode and take a
    /// scripted write ([`crate::redis_conn::RedisPool::verify`]): a server
    /// that answers PING but refuses the real operations is down, with why.
    pub async fn check(&self, backends: &Backends) {
        let database = probe(backends.db.kind(), backends.db.ping()).await;
        let cache = match &backends.redis {
            Some(pool) => probe(cache_kind(backends), pool.verify(&self.redis_prefix)).await,
            None => DependencyStatus {
                kind: "in-process".into(),
                up: true,
                latency_ms: 0,
                error: None,
            },
        };
        let (database_up, cache_up) = (database.up, cache.up);
        let serving = database_up && cache_up;
        {
            let mut report = self.report.write().await;
            report.database = database;
            report.cache = cache;
            report.status = if serving { "ok" } else { "degraded" };
        }
        let status = |up: bool| {
            if up {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            }
        };
        self.publish("", status(serving)).await;
        for (service, needs) in self.services.iter() {
            self.publish(service, status(needs.met(database_up, cache_up)))
                .await;
        }
    }

    /// Sets `service`'s status when it changed (see `published`).
    async fn publish(&self, service: &str, status: ServingStatus) {
        let changed = {
            let mut published = self.published.lock().unwrap_or_else(|e| e.into_inner());
            published.insert(service.to_string(), status) != Some(status)
        };
        if changed {
            self.reporter.set_service_status(service, status).await;
        }
    }

    /// Checks every `interval` until `shutdown` fires.
    pub async fn monitor(self, backends: Backends, interval: Duration, shutdown: crate::shutdown::Shutdown) {
        loop {
            self.check(&backends).await;
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.wait() => return,
            }
        }
    }
}

fn cache_kind(backends: &Backends) -> &'static str {
    match &backends.redis {
        Some(pool) if pool.is_cluster() => "redis-cluster",
        Some(_) => "redis",
        None => "in-process",
    }
}

async fn probe(kind: &str, ping: impl Future<Output = anyhow::Result<()>>) -> DependencyStatus {
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(2), ping).await;
    let latency_ms = started.elapsed().as_millis() as u64;
    let error = match result {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("{e:#}")),
        Err(_) => Some("ping timed out".into()),
    };
    DependencyStatus {
        kind: kind.into(),
        up: error.is_none(),
        latency_ms,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_serves_while_what_it_needs_is_up() {
        let carts = Needs {
            database: false,
            cache: true,
        };
        let orders = Needs {
            database: true,
            cache: false,
        };
        assert!(carts.met(false, true) && !carts.met(true, false));
        assert!(orders.met(true, false) && !orders.met(false, true));
    }
}
