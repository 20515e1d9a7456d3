//! `GET /metrics`, the transport side of [`crate::metrics`]: it reads the pools it
//! is handed (startup wires in the [`Backends`]), so that the metrics module below
//! it knows nothing of the application that records into it.

use axum::response::IntoResponse;
use metrics::gauge;

use crate::db::{Backends, Db};

/// `GET /metrics`: refreshes the gauges read from this process's pools, then
/// renders every series.
pub async fn scrape(backends: Backends) -> impl IntoResponse {
    pool_gauges(&backends);
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        super::render(),
    )
}

/// Sets the pool gauges from the pools' own counters (no I/O).
pub fn pool_gauges(backends: &Backends) {
    let (size, idle, max) = match &backends.db {
        Db::Postgres(pool) => (pool.size(), pool.num_idle(), pool.options().get_max_connections()),
        Db::Sqlite(pool) => (pool.size(), pool.num_idle(), pool.options().get_max_connections()),
    };
    let idle = idle as f64;
    gauge!("db_pool_connections", "state" => "idle").set(idle);
    gauge!("db_pool_connections", "state" => "in_use").set((f64::from(size) - idle).max(0.0));
    gauge!("db_pool_connections", "state" => "max").set(f64::from(max));
    if let Some(redis) = &backends.redis {
        let status = redis.status();
        gauge!("redis_pool_connections", "state" => "idle").set(status.available as f64);
        gauge!("redis_pool_connections", "state" => "in_use")
            .set(status.size.saturating_sub(status.available) as f64);
        gauge!("redis_pool_connections", "state" => "waiting").set(status.waiting as f64);
        gauge!("redis_pool_connections", "state" => "max").set(status.max_size as f64);
    }
}
