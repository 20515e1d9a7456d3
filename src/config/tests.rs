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
    assert_eq!(c.server.port, 8084);
    assert_eq!(c.carts.ttl, Duration::from_secs(24 * 3600));
    assert_eq!(c.orders.order_timeout, Duration::from_secs(30 * 60));
    assert_eq!(c.saga.retry_attempts, 3);
    assert_eq!(c.saga.retry_delay, Duration::from_secs(5));
    assert!(c.saga.enabled && c.orders.saga_orchestration);
    assert_eq!(c.read_side.order_queries, OrderQuerySource::ReadModel);
    assert_eq!(c.orders.conflicts, ConflictHandling::Report);
    assert!(c.siblings.all_embedded());
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
        ("ENABLE_EVENT_SOURCING", "false"),
    ] {
        let err = Config::from_vars(&vars(&[(var, value)])).unwrap_err();
        assert_eq!(err.var, var, "{err}");
    }
}

#[test]
fn switches_turned_off_reach_the_components_that_honour_them() {
    let c = Config::from_vars(&vars(&[
        ("ENABLE_SAGA_ORCHESTRATION", "false"),
        ("ENABLE_CQRS", "false"),
        ("ENABLE_OPTIMISTIC_LOCKING", "false"),
        ("MAX_REQUEST_TIMEOUT_SECONDS", "7"),
    ]))
    .unwrap();
    assert!(!c.saga.enabled && !c.orders.saga_orchestration);
    assert_eq!(c.read_side.order_queries, OrderQuerySource::EventStream);
    assert_eq!(c.orders.conflicts, ConflictHandling::Absorb);
    assert_eq!(c.orders.idempotency_lease, Duration::from_secs(7));
}

#[test]
fn fractional_durations_and_seed_urls_are_accepted() {
    let c = Config::from_vars(&vars(&[
        ("CART_TTL_HOURS", "0.001"),
        ("SAGA_RETRY_DELAY_SECONDS", "0.05"),
        ("DATABASE_URL", "postgresql+asyncpg://u:p@h:5432/db"),
    ]))
    .unwrap();
    assert_eq!(c.carts.ttl, Duration::from_millis(3600));
    assert_eq!(c.saga.retry_delay, Duration::from_millis(50));
    assert_eq!(c.database.url.as_deref(), Some("postgresql://u:p@h:5432/db"));
}

#[test]
fn jaeger_endpoint_maps_to_its_otlp_port() {
    let c = Config::from_vars(&vars(&[
        ("ENABLE_TRACING", "true"),
        ("JAEGER_ENDPOINT", "http://jaeger:14268/api/traces"),
    ]))
    .unwrap();
    assert_eq!(
        c.telemetry.tracing_endpoint().as_deref(),
        Some("http://jaeger:4317")
    );
}

#[test]
fn tracing_switched_on_exports_even_without_an_endpoint() {
    let on = Config::from_vars(&vars(&[("ENABLE_TRACING", "true")])).unwrap();
    assert_eq!(
        on.telemetry.tracing_endpoint().as_deref(),
        Some("http://localhost:4317")
    );
    let off = Config::from_vars(&vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")])).unwrap();
    assert_eq!(off.telemetry.tracing_endpoint(), None);
}

#[test]
fn connection_lifecycle_defaults_and_switches() {
    let c = Config::from_vars(&vars(&[])).unwrap().connections;
    assert_eq!(c.keepalive_interval, Some(Duration::from_secs(60)));
    assert_eq!(c.keepalive_timeout, Duration::from_secs(20));
    assert_eq!(c.max_age, Some(Duration::from_secs(1800)));
    assert_eq!(c.max_age_grace, Duration::from_secs(60));
    assert!(c.compress_responses);

    let c = Config::from_vars(&vars(&[
        ("HTTP2_KEEPALIVE_INTERVAL_SECONDS", "0"),
        ("MAX_CONNECTION_AGE_SECONDS", "0.5"),
        ("GRPC_RESPONSE_COMPRESSION", "false"),
    ]))
    .unwrap()
    .connections;
    assert_eq!(c.keepalive_interval, None);
    assert_eq!(c.max_age, Some(Duration::from_millis(500)));
    assert!(!c.compress_responses);

    for (var, value) in [
        ("HTTP2_KEEPALIVE_TIMEOUT_SECONDS", "0"),
        ("MAX_CONNECTION_AGE_SECONDS", "-1"),
        ("GRPC_RESPONSE_COMPRESSION", "sometimes"),
    ] {
        let err = Config::from_vars(&vars(&[(var, value)])).unwrap_err();
        assert_eq!(err.var, var, "{err}");
    }
}

#[test]
fn a_read_url_is_a_postgres_replica_of_database_url() {
    let c = Config::from_vars(&vars(&[
        ("DATABASE_URL", "postgres://app@primary/shop"),
        ("DATABASE_READ_URL", "postgresql+asyncpg://app@replica/shop"),
    ]))
    .unwrap();
    assert_eq!(
        c.database.read_url.as_deref(),
        Some("postgresql://app@replica/shop")
    );
    assert_eq!(Config::from_vars(&vars(&[])).unwrap().database.read_url, None);
    for pairs in [
        // SQLite has no replicas.
        &[("DATABASE_READ_URL", "postgres://app@replica/shop")][..],
        &[
            ("DATABASE_URL", "postgres://app@primary/shop"),
            ("DATABASE_READ_URL", "mysql://replica/shop"),
        ][..],
    ] {
        let err = Config::from_vars(&vars(pairs)).unwrap_err();
        assert_eq!(err.var, "DATABASE_READ_URL", "{err}");
    }
}
