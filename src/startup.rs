//! Builds the [`Application`]: backends, services and the one listener that
//! serves gRPC and HTTP together. The stores of the configured database are
//! picked here and nowhere else ([`stores`]), for the service and for
//! `commerce rebuild-projections` ([`rebuild`]).

pub mod purge;
pub mod rebuild;
pub mod stores;

use std::{future::Future, net::SocketAddr, time::Duration};

use anyhow::Context;
use axum::{Json, Router, extract::State, response::IntoResponse, routing::get};
use tokio::net::TcpListener;
use tower_http::{
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::{DefaultOnFailure, TraceLayer},
};

use crate::{
    app::{
        App,
        orders::{OrderApp, OrderStores},
    },
    auth::{Authenticator, layer::AuthLayer},
    bounds::BoundsLayer,
    config::{
        BusSettings, Config, ConnectionSettings, Environment, LimitSettings, RedisSettings, ServerSettings,
        SiblingSettings, StubSettings,
    },
    db::{Backends, Db, redis_pool},
    health::{Health, Needs},
    privacy::{self, Vault},
    proto::commerce::events::v1::order_event_service_server::OrderEventServiceServer,
    proto::commerce::v1::{
        admin_service_server::AdminServiceServer, cart_service_server::CartServiceServer,
        order_service_server::OrderServiceServer, saga_admin_server::SagaAdminServer,
    },
    ratelimit::RateLimiter,
    relay::EventRelay,
    shutdown::{self, ShutdownTrigger, Tasks},
    store::event_store::OrderCodec,
    wire::{compressed_server, grpc_web},
};

pub use self::stores::Stores;

/// Every gRPC service of the public API, fully qualified (for health and reflection).
pub const SERVICE_NAMES: &[&str] = &[
    "commerce.v1.CartService",
    "commerce.v1.OrderService",
    "commerce.v1.SagaAdmin",
    "commerce.v1.AdminService",
    "commerce.events.v1.OrderEventService",
];

/// What each of [`SERVICE_NAMES`] needs to serve, for its gRPC health status.
/// Carts live in Redis (GetCartAnalytics reads the database, but a cart
/// service that cannot keep carts is down; one that cannot count them is
/// not). Orders, sagas and the admin calls live in the database; CreateOrder
/// also converts a cart, but reads, cancels and watches do not, so an order
/// service without Redis still serves and CreateOrder answers UNAVAILABLE.
fn needs(service: &str) -> Needs {
    let cart = service == "commerce.v1.CartService";
    Needs {
        database: !cart,
        cache: cart,
    }
}

/// The health "service" a liveness probe asks about: SERVING for as long as the server
/// answers at all. Readiness asks about `""` or the API services instead, which go
/// NOT_SERVING while a dependency is down; a database outage must take pods out of the
/// load balancer, never get them restarted.
pub const LIVENESS_SERVICE: &str = "liveness";

const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// The running service: bound, not yet serving until [`Application::run_until_stopped`].
pub struct Application {
    listener: TcpListener,
    app: App,
    trigger: ShutdownTrigger,
    tasks: Tasks,
    health_reporter: tonic_health::server::HealthReporter,
    auth: AuthLayer,
    stubs: Option<crate::stubs::EmbeddedStubs>,
    server: ServerSettings,
    limits: LimitSettings,
    connections: ConnectionSettings,
    /// The relay of the settled log to the bus (started unless EVENT_BUS_RELAY=false).
    relay: EventRelay,
    /// Whether this replica relays, and its partition leases.
    bus: BusSettings,
}

impl Application {
    /// Connects the backends, migrates, and binds `HOST:PORT` (port 0 picks one).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        crate::metrics::install();
        // Keys first: a production deployment without real keys must not start.
        let auth = AuthLayer::new(Authenticator::from_settings(&config.auth).context("JWT keys")?)
            .with_rate_limiter(RateLimiter::from_settings(&config.rate_limit));
        let master_key = privacy::master_key(&config.privacy).context("PII_MASTER_KEY")?;
        let db = Db::connect(&config.database).await?;
        if config.database.run_migrations {
            db.migrate().await.context("running migrations")?;
        }
        let backends = Backends {
            db,
            redis: redis_pool(&config.redis)?,
        };
        let (trigger, shutdown) = shutdown::channel();
        let reporter = tonic_health::server::HealthReporter::new();
        let health = Health::new(
            reporter.clone(),
            SERVICE_NAMES.iter().map(|s| (s.to_string(), needs(s))).collect(),
            &backends,
            &config.redis.key_prefix,
        );
        let (host, port) = (config.server.host.as_str(), config.server.port);
        let listener = TcpListener::bind((host, port))
            .await
            .with_context(|| format!("binding {host}:{port}"))?;
        let mut stores = Stores::on(
            &backends.db,
            OrderCodec::upcasters(),
            config.database.group_commit,
        );
        let events = stores.events.clone();
        let carts = stores::cart_app(&config.carts, &config.redis, &backends);
        let privacy = Vault::new(stores.customer_keys.clone(), master_key);
        let bus = event_bus(&config.redis, &config.bus, &backends);
        let mut queries = crate::app::queries::QueryApp::new(
            stores.read_models.clone(),
            events.clone(),
            stores.sagas.clone(),
            bus.clone(),
            &config.read_side,
            shutdown.clone(),
            privacy.clone(),
        );
        // DATABASE_READ_URL: queries and the projections' log reads go to the
        // replica first (crate::app::replica).
        if let Some(replica) = Db::connect_replica(&config.database)? {
            queries = queries.with_replica(stores::replica_reads(&replica, OrderCodec::upcasters()));
        }
        // Every commit is announced in-process: WatchOrder shows it without
        // waiting for the relay, the bus and the projection.
        stores.units = queries.appended().announcing(stores.units);
        let order_stores = OrderStores {
            events: events.clone(),
            units: stores.units.clone(),
            idempotency_keys: stores.idempotency_keys.clone(),
        };
        let orders = OrderApp::new(config.orders, order_stores, carts.clone(), privacy.clone());
        let (stubs, urls) = siblings(&config.siblings, &config.stubs, config.environment).await?;
        let sagas = crate::app::sagas::SagaApp::new(
            config.saga,
            stores.sagas.clone(),
            stores.units.clone(),
            urls,
            std::sync::Arc::new(crate::app::sagas::OrderAppPort::new(orders.clone())),
        )?;
        // CreateOrder hands new sagas to this replica's free workers.
        let orders = orders.with_local_workers(sagas.local_workers().clone());
        let feed = crate::app::events::EventFeed::new(
            events.clone(),
            stores.consumers.clone(),
            privacy.clone(),
            shutdown.clone(),
        );
        let retention = crate::app::retention::Retention::new(
            config.retention,
            backends.db.clone(),
            crate::app::retention::RetentionStores {
                sagas: stores.sagas.clone(),
                idempotency_keys: stores.idempotency_keys.clone(),
                bus: bus.clone(),
            },
        );
        let relay = EventRelay::new(
            stores.stored_events.clone(),
            stores.relay_cursor.clone(),
            bus.clone(),
        );
        let app = App {
            retention,
            feed,
            backends,
            health,
            shutdown,
            events,
            units: stores.units.clone(),
            carts,
            orders,
            privacy,
            bus,
            queries,
            sagas,
        };
        Ok(Self {
            listener,
            app,
            trigger,
            tasks: Tasks::default(),
            health_reporter: reporter,
            auth,
            stubs,
            server: config.server,
            limits: config.limits,
            connections: config.connections,
            relay,
            bus: config.bus,
        })
    }

    /// The port the listener got: tests bind port 0 and learn the real one here.
    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// The listener's address, with the port the OS chose when the config asked for 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The application layer, for tests that look behind the transports.
    pub fn app(&self) -> &App {
        &self.app
    }

    /// The background tasks [`Self::run_until_stopped`] starts (relay,
    /// projections, saga workers, monitors), for an embedder that must end
    /// them synchronously (the tests, before deleting their database and keys).
    pub fn tasks(&self) -> Tasks {
        self.tasks.clone()
    }

    /// Serves until `signal` resolves, then drains in-flight requests and stops
    /// the background tasks.
    pub async fn run_until_stopped(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            listener,
            app,
            trigger,
            tasks,
            health_reporter,
            auth,
            stubs,
            server,
            limits,
            connections,
            relay,
            bus,
        } = self;
        let monitor = tasks.spawn(app.health.clone().monitor(
            app.backends.clone(),
            Duration::from_secs(2),
            app.shutdown.clone(),
        ));
        tasks.spawn(crate::metrics::upkeep(app.shutdown.clone()));
        // Forgets made on other replicas reach this one's key cache at once.
        tasks.spawn(
            app.privacy
                .clone()
                .follow_forgets(app.bus.clone(), app.shutdown.clone()),
        );
        // Relay, projections and their status: stop on shutdown.
        let read_side = start_read_side(&app, relay, &bus, &tasks);
        // Retention: one replica at a time deletes finished work past its age.
        tasks.spawn(app.retention.clone().run_periodically(app.shutdown.clone()));

        health_reporter
            .set_service_status(LIVENESS_SERVICE, tonic_health::ServingStatus::Serving)
            .await;
        let sweeper = tasks.spawn(
            app.carts
                .clone()
                .run_sweeper(app.carts.sweep_period(), app.shutdown.clone()),
        );

        let workers = app
            .sagas
            .start_workers(app.backends.db.clone(), app.shutdown.clone());
        if let Some(workers) = &workers {
            tasks.track(workers);
        }

        let router = build_router(&app, health_reporter, auth, &server, &limits, &connections)?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, database = app.backends.db.kind(), redis = app.backends.redis.is_some(), "serving gRPC and HTTP");

        let server_shutdown = app.shutdown.clone();
        // Our own accept loop rather than tonic's Server: it bounds HTTP/1.1
        // headers too and runs the connection lifecycle (see crate::serve).
        // BoundsLayer answers at the capped deadline with DEADLINE_EXCEEDED.
        let server = crate::serve::serve(listener, router, &connections, &limits, async move {
            server_shutdown.wait().await;
        });
        tasks.spawn(async move {
            signal.await;
            tracing::info!("shutdown requested: draining");
            trigger.trigger();
        });
        server.await.context("serving")?;
        let _ = monitor.await;
        let _ = sweeper.await;
        for task in read_side {
            let _ = task.await;
        }
        if let Some(workers) = workers {
            let _ = workers.await;
        }
        // Last: the workers above may have been calling them.
        if let Some(stubs) = stubs {
            stubs.stop().await;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// The bus for these backends: Redis Streams with Redis, else in-process;
/// `settings.partitions` streams either way.
pub fn event_bus(
    redis: &RedisSettings,
    settings: &BusSettings,
    backends: &Backends,
) -> std::sync::Arc<dyn crate::bus::EventBus> {
    use crate::bus::{DEFAULT_MAX_LEN, in_process::InProcessBus, redis_streams::RedisStreamsBus};
    match &backends.redis {
        Some(pool) => std::sync::Arc::new(RedisStreamsBus::new(
            pool.clone(),
            &redis.key_prefix,
            DEFAULT_MAX_LEN,
            settings.partitions,
        )),
        None => std::sync::Arc::new(InProcessBus::new(DEFAULT_MAX_LEN, settings.partitions)),
    }
}

/// Starts the read side of `app`: `relay` (unless `bus.relay`
/// is off), one runner per projection and the status reporter; each stops on
/// `app.shutdown`.
fn start_read_side(
    app: &App,
    relay: EventRelay,
    bus: &BusSettings,
    tasks: &Tasks,
) -> Vec<tokio::task::JoinHandle<()>> {
    use crate::projections::{
        cart_conversion::CartConversion, customer_orders::CustomerOrder, order_detail::OrderDetail,
        runner::Projector, status,
    };
    let shutdown = &app.shutdown;
    let mut projector = Projector::new(
        app.bus.clone(),
        app.queries.store().clone(),
        app.queries.projection_log(),
        app.queries.changes().clone(),
    )
    .with_fold_cache(bus.projection_cache_rows);
    projector.settings.lease = bus.lease;
    let mut started = Vec::new();
    if bus.relay {
        started.push(tasks.spawn(relay.run(shutdown.clone())));
    } else {
        tracing::warn!("EVENT_BUS_RELAY=false: events wait in the event store until a replica relays");
    }
    // All three join the shared sweep before any runs: a runner spawned
    // first would otherwise sweep a backlog found at startup alone, and the
    // other two a second time behind it.
    let details = projector.clone().run::<OrderDetail>(shutdown.clone());
    let lists = projector.clone().run::<CustomerOrder>(shutdown.clone());
    let conversions = projector.run::<CartConversion>(shutdown.clone());
    started.extend([
        tasks.spawn(details),
        tasks.spawn(lists),
        tasks.spawn(conversions),
        tasks.spawn(app.feed.clone().report_lag(Duration::from_secs(2))),
        tasks.spawn(status::report(
            app.queries.store().clone(),
            app.events.clone(),
            app.health.clone(),
            Duration::from_secs(2),
            shutdown.clone(),
        )),
    ]);
    started
}

/// Where the siblings are. A URL left unset is served by stubs embedded in
/// this process on a loopback port (reached over real gRPC), except in
/// production, which must name all three.
async fn siblings(
    siblings: &SiblingSettings,
    stub_settings: &StubSettings,
    environment: Environment,
) -> anyhow::Result<(
    Option<crate::stubs::EmbeddedStubs>,
    crate::saga::grpc_siblings::SiblingUrls,
)> {
    let configured = [
        ("PAYMENT_SERVICE_URL", &siblings.payment_url),
        ("INVENTORY_SERVICE_URL", &siblings.inventory_url),
        ("SHIPPING_SERVICE_URL", &siblings.shipping_url),
    ];
    let missing: Vec<&str> = configured
        .iter()
        .filter(|(_, url)| url.is_none())
        .map(|(name, _)| *name)
        .collect();
    if missing.is_empty() {
        let url = |u: &Option<String>| u.clone().unwrap_or_default();
        let urls = crate::saga::grpc_siblings::SiblingUrls {
            payment: url(&siblings.payment_url),
            inventory: url(&siblings.inventory_url),
            shipping: url(&siblings.shipping_url),
        };
        return Ok((None, urls));
    }
    if environment == Environment::Production {
        anyhow::bail!(
            "production needs real sibling services: set {}",
            missing.join(", ")
        );
    }
    let stubs = crate::stubs::EmbeddedStubs::start(stub_settings)
        .await
        .context("embedded stubs")?;
    let pick = |u: &Option<String>| u.clone().unwrap_or_else(|| stubs.url.clone());
    let urls = crate::saga::grpc_siblings::SiblingUrls {
        payment: pick(&siblings.payment_url),
        inventory: pick(&siblings.inventory_url),
        shipping: pick(&siblings.shipping_url),
    };
    Ok((Some(stubs), urls))
}

/// gRPC services, HTTP routes and the layers in front of both.
fn build_router(
    app: &App,
    health_reporter: tonic_health::server::HealthReporter,
    auth: AuthLayer,
    server: &ServerSettings,
    limits: &LimitSettings,
    connections: &ConnectionSettings,
) -> anyhow::Result<Router> {
    let health_service = tonic_health::pb::health_server::HealthServer::new(
        tonic_health::server::HealthService::from_health_reporter(health_reporter),
    );
    let max = limits.max_message_bytes;
    let (reflection_v1, reflection_v1alpha) = crate::wire::reflection(SERVICE_NAMES)?;
    let send = connections.compress_responses;

    // The REST shim calls these very objects; gRPC serves them below.
    let services = crate::rest::Services::new(app);
    let http_routes = Router::new()
        .route("/health", get(health_json))
        .route("/metrics", {
            let backends = app.backends.clone();
            get(move || crate::metrics::endpoint::scrape(backends.clone()))
        })
        .merge(crate::rest::router(
            services.clone(),
            limits.max_body_bytes,
            server.sse_heartbeat,
        )?)
        .fallback(not_found)
        .with_state(app.clone());

    // The public API (and health) also answer grpc-web, for browsers; reflection is for tools.
    let routes = tonic::service::Routes::from(http_routes)
        .add_service(grpc_web(compressed_server!(health_service, send)))
        .add_service(compressed_server!(reflection_v1, send))
        .add_service(compressed_server!(reflection_v1alpha, send))
        .add_service(grpc_web(compressed_server!(
            CartServiceServer::new(services.cart_service).max_decoding_message_size(max),
            send
        )))
        .add_service(grpc_web(compressed_server!(
            OrderServiceServer::new(services.order_service).max_decoding_message_size(max),
            send
        )))
        .add_service(grpc_web(compressed_server!(
            SagaAdminServer::new(services.saga_admin).max_decoding_message_size(max),
            send
        )))
        .add_service(grpc_web(compressed_server!(
            AdminServiceServer::new(services.admin_service).max_decoding_message_size(max),
            send
        )))
        .add_service(grpc_web(compressed_server!(
            OrderEventServiceServer::new(services.order_event_service).max_decoding_message_size(max),
            send
        )));

    Ok(routes
        .into_axum_router()
        .layer(auth)
        .layer(BoundsLayer::new(limits.max_request_timeout))
        .layer(axum::middleware::from_fn(crate::metrics::track_requests))
        // Outside auth, so that browsers also read a refusal (401) as such.
        .layer(crate::rest::cors_layer(&server.cors_allowed_origins)?)
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(crate::telemetry::request_span)
                // tower-http logs every 5xx at ERROR; a 503 from /health while a dependency
                // starts or an UNAVAILABLE answer is expected. The access line records each
                // response, and error.rs logs an internal error (what needs a human) at ERROR.
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid)))
}

/// `GET /health`: dependency status as JSON; 503 while degraded.
async fn health_json(State(app): State<App>) -> impl IntoResponse {
    let report = app.health.report().await;
    let code = if report.status == "ok" {
        http::StatusCode::OK
    } else {
        http::StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(report))
}

/// Unknown route: gRPC UNIMPLEMENTED for gRPC (and grpc-web) callers, a JSON 404 otherwise.
async fn not_found(request: http::Request<axum::body::Body>) -> http::Response<axum::body::Body> {
    if crate::transport::is_grpc(&request) {
        let status = tonic::Status::unimplemented(format!("unknown method {}", request.uri().path()));
        return crate::transport::grpc_error_response(&request, &status);
    }
    crate::transport::json_error_response(&tonic::Status::not_found(format!(
        "no route for {} {}",
        request.method(),
        request.uri().path()
    )))
}
