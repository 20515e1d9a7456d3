//! The one port answers gRPC health, reflection and HTTP `/health`.

use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::support::{
    app::{Backend, Isolation, TestApp, spawn_app_with, spawn_on},
    child::RedisServer,
    proxy::Proxy,
    rest::http_get,
};

#[tokio::test]
async fn every_service_reports_serving_and_health_json_answers() {
    for backend in Backend::all_with_cluster() {
        let app = spawn_app_with(backend, &[]).await;
        let mut health = HealthClient::new(app.channel.clone());
        for service in [
            "",
            "commerce.v1.CartService",
            "commerce.v1.OrderService",
            "commerce.v1.SagaAdmin",
        ] {
            let status = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status;
            assert_eq!(status, ServingStatus::Serving as i32, "{backend:?} {service}");
        }
        let body = http_get(app.port, "/health").await;
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(body.contains("\"database\""), "{body}");
    }
}

#[tokio::test]
async fn unknown_routes_answer_json_404_with_a_request_id() {
    let app = spawn_app_with(Backend::Embedded, &[]).await;
    let response = http_get(app.port, "/no/such/route").await;
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    assert!(
        response.to_ascii_lowercase().contains("x-request-id:"),
        "{response}"
    );
    assert!(response.contains("\"code\":5"), "{response}");
}

/// The next status a Health/Watch stream sends.
async fn next_status(stream: &mut tonic::Streaming<tonic_health::pb::HealthCheckResponse>) -> ServingStatus {
    let message = tokio::time::timeout(std::time::Duration::from_secs(15), stream.message())
        .await
        .expect("a status change within 15 s")
        .expect("the stream stays open")
        .expect("a message");
    message.status()
}

#[tokio::test]
async fn health_watch_streams_follow_postgres_per_service_down_and_back_up() {
    if Backend::from_env() != Backend::Real {
        // Needs a real PostgreSQL to put the proxy in front of (CI has one).
        return;
    }
    let isolation = Isolation::new(Backend::Real).await;
    let (pg, pg_url) = Proxy::for_url(&isolation.vars["DATABASE_URL"]).await;
    let app = spawn_on(
        isolation,
        &[("DATABASE_URL", &pg_url), ("POOL_TIMEOUT_MS", "500")],
    )
    .await;
    let watch = |service: &str| {
        let mut health = HealthClient::new(app.channel.clone());
        let request = HealthCheckRequest {
            service: service.into(),
        };
        async move { health.watch(request).await.unwrap().into_inner() }
    };
    let mut server = watch("").await;
    let mut orders = watch("commerce.v1.OrderService").await;
    let mut sagas = watch("commerce.v1.SagaAdmin").await;
    for stream in [&mut server, &mut orders, &mut sagas] {
        assert_eq!(
            next_status(stream).await,
            ServingStatus::Serving,
            "the first message is the current status"
        );
    }

    pg.cut();
    for stream in [&mut server, &mut orders, &mut sagas] {
        assert_eq!(next_status(stream).await, ServingStatus::NotServing);
    }
    // Carts need Redis, not the database: the cart service keeps serving.
    let mut carts = HealthClient::new(app.channel.clone());
    let cart_status = carts
        .check(HealthCheckRequest {
            service: "commerce.v1.CartService".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(cart_status, ServingStatus::Serving);

    pg.restore();
    for stream in [&mut server, &mut orders, &mut sagas] {
        assert_eq!(
            next_status(stream).await,
            ServingStatus::Serving,
            "back without a repeated NOT_SERVING in between"
        );
    }
}

/// The status `app` reports for each service: the server, carts, orders.
async fn statuses(app: &TestApp) -> [ServingStatus; 3] {
    let mut health = HealthClient::new(app.channel.clone());
    let mut out = [ServingStatus::Unknown; 3];
    for (slot, service) in out
        .iter_mut()
        .zip(["", "commerce.v1.CartService", "commerce.v1.OrderService"])
    {
        let request = HealthCheckRequest {
            service: service.into(),
        };
        *slot = health.check(request).await.unwrap().into_inner().status();
    }
    out
}

/// Waits for the monitor's verdict on Redis: `/health` says degraded with
/// Redis down and an error containing `reason`; carts and the whole server
/// NOT_SERVING, orders (database only) still SERVING.
async fn assert_redis_down_because(app: &TestApp, reason: &str) {
    crate::support::wait_for("Redis reported down", || async {
        !app.app.health.report().await.cache.up
    })
    .await;
    let body = http_get(app.port, "/health").await;
    assert!(body.starts_with("HTTP/1.1 503"), "{body}");
    let json: serde_json::Value = serde_json::from_str(&body[body.find('{').unwrap()..]).unwrap();
    assert_eq!(json["status"], "degraded", "{json}");
    assert_eq!(json["cache"]["up"], false, "{json}");
    let error = json["cache"]["error"].as_str().unwrap_or_default();
    assert!(error.contains(reason), "{error}");
    assert_eq!(
        statuses(app).await,
        [
            ServingStatus::NotServing,
            ServingStatus::NotServing,
            ServingStatus::Serving
        ]
    );
}

/// A Redis Cluster node named as a single Redis answers PING, and MOVED or
/// CROSSSLOT to most of the real work: down, saying to set REDIS_CLUSTER.
#[tokio::test]
async fn a_cluster_node_addressed_as_a_single_redis_is_reported_down_with_the_fix() {
    let Some(cluster) = Backend::cluster() else {
        // No cluster here (CI starts one, and fails without it).
        return;
    };
    let isolation = Isolation::new(cluster).await;
    let app = spawn_on(
        isolation,
        &[("REDIS_CLUSTER", "false"), ("POOL_TIMEOUT_MS", "500")],
    )
    .await;
    assert_redis_down_because(&app, "set REDIS_CLUSTER=true").await;
}

/// A read-only replica answers PING and every read, and refuses every cart
/// change: down, saying so.
#[tokio::test]
async fn a_read_only_replica_is_reported_down_with_the_reason() {
    if Backend::from_env() != Backend::Real {
        // Needs PostgreSQL for the rest of the service (CI has it).
        return;
    }
    let primary = RedisServer::start(&[]).await;
    let replica = RedisServer::start(&["--replicaof", "127.0.0.1", &primary.port.to_string()]).await;
    let isolation = Isolation::new(Backend::Real).await;
    let url = replica.url();
    let app = spawn_on(isolation, &[("REDIS_URL", &url), ("POOL_TIMEOUT_MS", "500")]).await;
    assert_redis_down_because(&app, "read only replica").await;
    drop(app);
}
