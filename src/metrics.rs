//! Prometheus metrics: the global recorder and one typed function per metric
//! family, so that names, labels and buckets live in this module and every call
//! site is one line. The `/metrics` route is [`endpoint`], a transport.
//!
//! Labels only ever take bounded values (names chosen in code, status codes,
//! outcomes), never an id: a label per cart or order would grow the series
//! without bound. The `metrics` macros are used in this module and nowhere else.

pub mod endpoint;
mod requests;

use std::{sync::OnceLock, time::Duration};

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
pub use requests::{grpc_code_name, track_requests};

use crate::{error::AppError, shutdown::Shutdown};

/// Request latency buckets (seconds): 1 ms to 10 s.
const REQUEST_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// One saga step is one sibling call plus its state writes, retries excluded.
const SAGA_STEP_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// A whole saga may wait out retries and backoff: up to the order timeout.
const SAGA_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];
/// An event-store append is one transaction: 0.5 ms to 1 s.
const APPEND_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Every metric family this service exports, with its label names: what
/// dashboards and alert rules may query (a test holds the deployment to it).
pub const FAMILIES: &[(&str, &[&str])] = &[
    ("grpc_server_requests_total", &["service", "method", "code"]),
    ("grpc_server_request_duration_seconds", &["service", "method"]),
    ("http_requests_total", &["method", "route", "status"]),
    ("http_request_duration_seconds", &["method", "route"]),
    ("cart_operations_total", &["operation", "outcome"]),
    ("carts_created_total", &[]),
    ("carts_converted_total", &[]),
    ("carts_abandoned_total", &[]),
    ("orders_status_transitions_total", &["to"]),
    ("saga_steps_total", &["step", "outcome"]),
    ("saga_step_duration_seconds", &["step"]),
    ("saga_retries_total", &["step"]),
    ("sagas", &["status"]),
    ("saga_duration_seconds", &["outcome"]),
    ("event_store_append_duration_seconds", &["backend"]),
    ("event_store_conflicts_total", &[]),
    ("relay_lag_events", &[]),
    ("projection_lag_events", &["projection"]),
    ("projection_partitions_held", &["projection"]),
    ("projection_rebuild_progress_ratio", &["projection"]),
    ("event_consumer_lag_events", &["consumer"]),
    ("event_consumer_lag_seconds", &["consumer"]),
    ("db_pool_connections", &["state"]),
    ("redis_pool_connections", &["state"]),
    ("retention_purged_rows_total", &["table"]),
    ("retention_last_run_timestamp_seconds", &[]),
    ("retention_last_run_purged_rows", &["table"]),
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the global Prometheus recorder once per process (later calls,
/// e.g. from several test apps, reuse it). None if another recorder was
/// installed first; metrics are then simply not rendered.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let handle = builder()
                .map(PrometheusBuilder::install_recorder)
                .and_then(|installed| installed);
            match handle {
                Ok(handle) => {
                    describe();
                    Some(handle)
                }
                Err(err) => {
                    tracing::warn!(error = %err, "Prometheus recorder not installed");
                    None
                }
            }
        })
        .as_ref()
}

fn builder() -> Result<PrometheusBuilder, metrics_exporter_prometheus::BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("request_duration_seconds".into()),
            REQUEST_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full("saga_step_duration_seconds".into()),
            SAGA_STEP_BUCKETS,
        )?
        .set_buckets_for_metric(Matcher::Full("saga_duration_seconds".into()), SAGA_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full("event_store_append_duration_seconds".into()),
            APPEND_BUCKETS,
        )
}

/// HELP lines, and the unlabelled counters at zero so that `rate()` and alerts
/// see a series before the first event.
fn describe() {
    describe_counter!(
        "grpc_server_requests_total",
        "gRPC requests handled, by service, method and status code."
    );
    describe_histogram!(
        "grpc_server_request_duration_seconds",
        "gRPC unary request latency."
    );
    describe_counter!(
        "http_requests_total",
        "HTTP (REST shim, health, metrics) requests, by route and status."
    );
    describe_histogram!(
        "http_request_duration_seconds",
        "HTTP request latency until the response head."
    );
    describe_counter!(
        "cart_operations_total",
        "Cart operations by operation and outcome."
    );
    describe_counter!("carts_created_total", "Carts created.");
    describe_counter!("carts_converted_total", "Carts converted into an order.");
    describe_counter!(
        "carts_abandoned_total",
        "Carts that expired without being converted."
    );
    describe_counter!(
        "orders_status_transitions_total",
        "Order status transitions, by the status reached."
    );
    describe_counter!("saga_steps_total", "Saga step attempts, by step and outcome.");
    describe_counter!(
        "retention_purged_rows_total",
        "Rows the retention job deleted, by table (dead_letters: entries of the dead-letter stream)."
    );
    describe_gauge!(
        "retention_last_run_timestamp_seconds",
        "When this replica last finished a retention run (Unix seconds)."
    );
    describe_gauge!(
        "retention_last_run_purged_rows",
        "Rows the last retention run of this replica deleted, by table."
    );
    describe_histogram!("saga_step_duration_seconds", "Duration of one saga step attempt.");
    describe_counter!("saga_retries_total", "Saga step retries after a transient error.");
    describe_gauge!(
        "sagas",
        "Sagas by status (shared state: the same on every replica)."
    );
    describe_histogram!(
        "saga_duration_seconds",
        "Saga duration from start to a terminal state, by outcome."
    );
    describe_histogram!(
        "event_store_append_duration_seconds",
        "Event-store append latency, by backend."
    );
    describe_counter!(
        "event_store_conflicts_total",
        "Appends refused for a stale expected version."
    );
    describe_gauge!(
        "event_consumer_lag_events",
        "Named event-feed consumers: settled head minus the acknowledged position (about events)."
    );
    describe_gauge!(
        "event_consumer_lag_seconds",
        "Named event-feed consumers: age of the oldest event not acknowledged yet (0 when caught up)."
    );
    describe_gauge!(
        "relay_lag_events",
        "Global positions between the settled log's head and the relay's cursor (about the events not yet published to the event bus)."
    );
    describe_gauge!(
        "projection_lag_events",
        "Events stored but not yet applied, by projection."
    );
    describe_gauge!(
        "projection_partitions_held",
        "Event-bus partitions this replica consumes, by projection (leases; see EVENT_BUS_PARTITIONS)."
    );
    describe_gauge!(
        "projection_rebuild_progress_ratio",
        "Progress of a running rebuild-projections, 0 to 1, by projection (0 when none runs)."
    );
    describe_counter!(
        "db_replica_reads_total",
        "Reads that could go to the read replica (DATABASE_READ_URL), by reader and who answered: replica, or the primary because the replica was behind or unavailable."
    );
    describe_gauge!(
        "db_pool_connections",
        "Database pool connections by state (idle, in_use, max)."
    );
    describe_gauge!(
        "redis_pool_connections",
        "Redis pool connections by state (idle, in_use, waiting, max)."
    );
    for name in [
        "carts_created_total",
        "carts_converted_total",
        "carts_abandoned_total",
        "event_store_conflicts_total",
    ] {
        counter!(name).absolute(0);
    }
}

/// The current metrics in the Prometheus text format.
pub fn render() -> String {
    install().map_or_else(String::new, |handle| {
        handle.run_upkeep();
        handle.render()
    })
}

/// Drains histogram buffers every few seconds, so memory stays flat when
/// nobody scrapes; ends on shutdown.
pub async fn upkeep(shutdown: Shutdown) {
    let Some(handle) = install() else { return };
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => handle.run_upkeep(),
            () = shutdown.wait() => return,
        }
    }
}

// ---- requests (recorded by the `track_requests` middleware) ----

fn grpc_request(service: &'static str, method: &'static str, code: &'static str, elapsed: Option<Duration>) {
    counter!("grpc_server_requests_total", "service" => service, "method" => method, "code" => code)
        .increment(1);
    if let Some(elapsed) = elapsed {
        histogram!("grpc_server_request_duration_seconds", "service" => service, "method" => method)
            .record(elapsed);
    }
}

fn http_request(method: &'static str, route: String, status: u16, elapsed: Duration) {
    counter!("http_requests_total", "method" => method, "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    histogram!("http_request_duration_seconds", "method" => method, "route" => route).record(elapsed);
}

// ---- carts ----

/// One cart operation (`operation` names it: "add_item", ...) and its outcome,
/// "ok" or the error's code ("not_found", "aborted", ...).
pub fn cart_operation<T>(operation: &'static str, result: &Result<T, AppError>) {
    counter!("cart_operations_total", "operation" => operation, "outcome" => outcome(result)).increment(1);
}

/// Counts a cart's creation (`carts_created_total`; the cart funnel's first stage).
pub fn cart_created() {
    counter!("carts_created_total").increment(1);
}

/// A cart turned into an order.
pub fn cart_converted() {
    counter!("carts_converted_total").increment(1);
}

/// `count` carts found expired without having been converted.
pub fn carts_abandoned(count: u64) {
    counter!("carts_abandoned_total").increment(count);
}

/// "ok", or the lower-case gRPC code of the error ("invalid_argument", ...).
pub fn outcome<T>(result: &Result<T, AppError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(err) => match err {
            AppError::InvalidArgument(_) | AppError::IdempotencyKeyReused => "invalid_argument",
            AppError::Unauthenticated(_) => "unauthenticated",
            AppError::PermissionDenied(_) => "permission_denied",
            AppError::NotFound { .. } => "not_found",
            AppError::AlreadyExists(_) => "already_exists",
            AppError::Aborted { .. } => "aborted",
            AppError::FailedPrecondition { .. } => "failed_precondition",
            AppError::ResourceExhausted { .. } => "resource_exhausted",
            AppError::Unavailable { .. } => "unavailable",
            AppError::DeadlineExceeded(_) => "deadline_exceeded",
            AppError::Internal(_) => "internal",
        },
    }
}

// ---- orders and the event store ----

/// An order reached status `to` (e.g. "PAYMENT_AUTHORIZED", "CANCELLED").
pub fn order_status_transition(to: &'static str) {
    counter!("orders_status_transitions_total", "to" => to).increment(1);
}

/// Counts one read that could go to the read replica: `outcome` is
/// `replica`, or why the primary answered (`behind`, `unavailable`).
pub fn replica_read(reader: &'static str, outcome: &'static str) {
    counter!("db_replica_reads_total", "reader" => reader, "outcome" => outcome).increment(1);
}

/// One successful event-store append on `backend` ("postgres" or "sqlite").
pub fn event_store_append(backend: &'static str, elapsed: Duration) {
    histogram!("event_store_append_duration_seconds", "backend" => backend).record(elapsed);
}

/// An append refused because the expected version was stale.
pub fn event_store_conflict() {
    counter!("event_store_conflicts_total").increment(1);
}

/// One finished retention run: rows deleted per table (each a bounded name).
pub fn retention_run(purged: &[(&'static str, u64)]) {
    for (table, rows) in purged {
        counter!("retention_purged_rows_total", "table" => *table).increment(*rows);
        gauge!("retention_last_run_purged_rows", "table" => *table).set(*rows as f64);
    }
    gauge!("retention_last_run_timestamp_seconds").set(chrono::Utc::now().timestamp() as f64);
}

/// How far the relay's cursor trails the settled log's head, in global
/// positions: about the events not yet published (positions are not in the
/// settled order on PostgreSQL, hence "about"; never below 0).
pub fn relay_lag(positions: i64) {
    gauge!("relay_lag_events").set(positions.max(0) as f64);
}

/// Events stored past `projection`'s checkpoint.
pub fn projection_lag(projection: &'static str, events: u64) {
    gauge!("projection_lag_events", "projection" => projection).set(events as f64);
}

/// Bus partitions this replica holds leases on and consumes for `projection`.
pub fn projection_partitions_held(projection: &'static str, partitions: usize) {
    gauge!("projection_partitions_held", "projection" => projection).set(partitions as f64);
}

/// How far a named consumer of the public event feed is behind: positions
/// past its checkpoint and the age of its oldest unacknowledged event. The
/// label is an operator-chosen consumer name (admins create a handful; the
/// feed caps their number), not an id that grows with traffic.
pub fn event_consumer_lag(consumer: &str, events: u64, seconds: f64) {
    let consumer = consumer.to_string();
    gauge!("event_consumer_lag_events", "consumer" => consumer.clone()).set(events as f64);
    gauge!("event_consumer_lag_seconds", "consumer" => consumer).set(seconds.max(0.0));
}

/// Progress of a running rebuild of `projection` (0 to 1; 0 when none runs).
pub fn projection_rebuild_progress(projection: &'static str, ratio: f64) {
    gauge!("projection_rebuild_progress_ratio", "projection" => projection).set(ratio.clamp(0.0, 1.0));
}

// ---- sagas ----

/// How one saga step attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// The sibling did it.
    Succeeded,
    /// A business refusal (declined, out of stock, unshippable): compensate.
    Refused,
    /// UNAVAILABLE / DEADLINE_EXCEEDED: will be retried.
    TransientError,
    /// Any other failure, or retries exhausted.
    Failed,
}

impl StepOutcome {
    /// The `outcome` label of `saga_steps_total` (dashboards and alerts match these strings).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Refused => "refused",
            Self::TransientError => "transient_error",
            Self::Failed => "failed",
        }
    }
}

/// One attempt of saga step `step` ("authorize_payment", ...), its outcome and duration.
pub fn saga_step(step: &'static str, outcome: StepOutcome, elapsed: Duration) {
    counter!("saga_steps_total", "step" => step, "outcome" => outcome.as_str()).increment(1);
    histogram!("saga_step_duration_seconds", "step" => step).record(elapsed);
}

/// A retry of `step` after a transient error.
pub fn saga_retry(step: &'static str) {
    counter!("saga_retries_total", "step" => step).increment(1);
}

/// A saga reached a terminal state (`outcome`: "completed", "compensated",
/// "failed", ...) after `elapsed` since it started.
pub fn saga_finished(outcome: &'static str, elapsed: Duration) {
    histogram!("saga_duration_seconds", "outcome" => outcome).record(elapsed);
}

/// The number of sagas in each status (statuses absent from `counts` are set to 0
/// when listed in `all`).
pub fn sagas_by_status<'a>(all: &[&'static str], counts: impl IntoIterator<Item = (&'a str, u64)>) {
    let counts: Vec<(&str, u64)> = counts.into_iter().collect();
    for status in all {
        let count = counts.iter().find(|(s, _)| s == status).map_or(0, |(_, n)| *n);
        gauge!("sagas", "status" => *status).set(count as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_low_cardinality_code_names() {
        assert_eq!(outcome::<()>(&Ok(())), "ok");
        assert_eq!(
            outcome::<()>(&Err(AppError::not_found(crate::error::Resource::Cart, "c"))),
            "not_found"
        );
        assert_eq!(
            outcome::<()>(&Err(AppError::invalid("quantity", "must be positive"))),
            "invalid_argument"
        );
        assert_eq!(StepOutcome::TransientError.as_str(), "transient_error");
    }

    #[test]
    fn histograms_render_with_buckets_and_counters_with_help() {
        install().expect("recorder installed");
        saga_step(
            "authorize_payment",
            StepOutcome::Succeeded,
            Duration::from_millis(30),
        );
        event_store_append("sqlite", Duration::from_millis(2));
        let text = render();
        assert!(text.contains("# HELP carts_created_total"), "{text}");
        assert!(
            text.contains("saga_step_duration_seconds_bucket{step=\"authorize_payment\",le=\"0.05\"}"),
            "{text}"
        );
        assert!(
            text.contains("saga_steps_total{step=\"authorize_payment\",outcome=\"succeeded\"}"),
            "{text}"
        );
        assert!(
            text.contains("event_store_append_duration_seconds_bucket{backend=\"sqlite\""),
            "{text}"
        );
    }

    #[test]
    fn every_family_the_functions_emit_is_listed_and_every_listed_family_is_emitted() {
        install().expect("recorder installed");
        grpc_request("svc", "Method", "OK", Some(Duration::from_millis(1)));
        http_request("GET", "/health".into(), 200, Duration::from_millis(1));
        cart_operation::<()>("get_cart", &Ok(()));
        cart_created();
        cart_converted();
        carts_abandoned(0);
        order_status_transition("CONFIRMED");
        saga_step("capture_payment", StepOutcome::Refused, Duration::from_millis(5));
        saga_retry("capture_payment");
        saga_finished("completed", Duration::from_secs(1));
        sagas_by_status(&["RUNNING"], [("RUNNING", 2)]);
        event_store_append("postgres", Duration::from_millis(1));
        event_store_conflict();
        relay_lag(3);
        projection_lag("order_detail", 4);
        projection_partitions_held("order_detail", 2);
        projection_rebuild_progress("order_detail", 0.5);
        event_consumer_lag("billing", 3, 1.5);
        retention_run(&[("sagas", 2), ("idempotency_keys", 0)]);
        gauge!("redis_pool_connections", "state" => "max").set(1.0);
        gauge!("db_pool_connections", "state" => "max").set(1.0);
        let text = render();
        let emitted: Vec<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|rest| rest.split(' ').next())
            .collect();
        for name in &emitted {
            assert!(
                FAMILIES.iter().any(|(family, _)| family == name),
                "{name} is not in FAMILIES"
            );
        }
        for (family, _) in FAMILIES {
            assert!(emitted.contains(family), "{family} listed but never emitted");
        }
    }
}
