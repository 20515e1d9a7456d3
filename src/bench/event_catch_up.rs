//! `event_catch_up`: a named consumer far behind the public event feed
//! catches up (issue 20: "a consumer 100,000 events behind catches up at a
//! measured rate ... with flat memory").
//!
//! On a fresh database it seeds `--catch-up-events` events (confirmed orders
//! of six events, written by eight tasks through the unit of work, the one
//! write path; each OrderCreated sealed for its customer as CreateOrder seals
//! it, three orders per customer), then serves the feed in this process: the
//! service's own `OrderEventService` over its own [`EventFeed`] (a fresh key
//! cache), behind the same authentication layer, on the service's accept loop.
//! Nothing else of the service runs, so no projection or relay works through
//! the seeded events at the same time. A consumer is created from the start,
//! a Subscribe by it is read to the end over a real HTTP/2 connection, and an
//! Ack is sent every [`ACK_EVERY`] events, as a sibling would.
//!
//! The line reports events/s over the whole catch-up (from Subscribe sent to
//! the last Ack answered), and this process's resident set just before the
//! Subscribe and at its peak during the catch-up (sampled every 10 ms): server
//! and client share the process, so the growth is an upper bound of the
//! server's. Every event must arrive exactly once; anything else fails the run.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde_json::json;
use tokio::task::JoinSet;
use tonic::transport::Channel;

use super::{
    runner::round,
    scenarios::authed,
    target::{OwnRss, mb},
};
use crate::{
    app::events::EventFeed,
    auth::{Authenticator, Role, layer::AuthLayer, mint_token},
    config::{AuthSettings, Config},
    db::Db,
    grpc::events::OrderEventGrpc,
    privacy::{Vault, cipher::DEVELOPMENT_MASTER_KEY, cipher::MasterKey},
    projections::samples::SampleOrder,
    proto::commerce::events::v1::{
        AckRequest, CreateConsumerRequest, SubscribeRequest,
        order_event_service_client::OrderEventServiceClient,
        order_event_service_server::OrderEventServiceServer, subscribe_response::Message,
    },
    startup::Stores,
    store::event_store::{EventStoreError, NewEvent, ORDER_STREAM, OrderCodec},
};

/// Events between two Acks (the fault test's chunk).
pub const ACK_EVERY: usize = 5_000;
/// Orders each customer placed: 100,000 events are 16,667 orders of 5,556
/// customers, within the key cache (`privacy::vault::CACHE_MAX`).
const ORDERS_PER_CUSTOMER: usize = 3;
/// Concurrent seeding tasks.
const WRITERS: usize = 8;
/// The consumer the run creates.
const CONSUMER: &str = "bench-catch-up";

/// Seeds `events` events on the fresh database `database` names, then
/// measures the catch-up; the scenario's JSON line.
pub async fn run(
    database: Database,
    auth: &AuthSettings,
    events: usize,
) -> anyhow::Result<serde_json::Value> {
    let config = Config::from_vars(&database.vars()).context("bench configuration")?;
    let db = Db::connect(&config.database).await?;
    db.migrate().await.context("migrating the bench database")?;
    let stores = Stores::on(&db, OrderCodec::upcasters(), true);
    let master = || MasterKey::from_hex(DEVELOPMENT_MASTER_KEY);

    let seeding = Instant::now();
    let orders = events.div_ceil(6);
    seed(
        &stores,
        Vault::new(stores.customer_keys.clone(), master()?),
        orders,
    )
    .await?;
    let total = orders * 6;
    let seed_seconds = seeding.elapsed().as_secs_f64();
    // Also the mark scripts/callgrind-catch-up.sh zeroes its counters at.
    eprintln!("event_catch_up: seeded {total} events in {seed_seconds:.1} s; catching up");

    // The feed as the service builds it, with a key cache of its own (cold).
    let (trigger, shutdown) = crate::shutdown::channel();
    let feed = EventFeed::new(
        stores.events.clone(),
        stores.consumers.clone(),
        Vault::new(stores.customer_keys.clone(), master()?),
        shutdown.clone(),
    );
    let router = tonic::service::Routes::new(OrderEventServiceServer::new(OrderEventGrpc::over(feed)))
        .into_axum_router()
        .layer(AuthLayer::new(Authenticator::from_settings(auth)?));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn({
        let (connections, limits) = (config.connections.clone(), config.limits.clone());
        async move { crate::serve::serve(listener, router, &connections, &limits, shutdown.wait()).await }
    });
    let channel = Channel::from_shared(url)?.connect().await?;

    let result = catch_up(&channel, auth, total).await;
    trigger.trigger();
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    let measured = result?;
    Ok(json!({
        "scenario": "event_catch_up",
        "backend": db.kind(),
        "events": total,
        "orders": orders,
        "customers": orders.div_ceil(ORDERS_PER_CUSTOMER),
        "seed_seconds": round(seed_seconds),
        "elapsed_s": (measured.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        "events_per_sec": round(measured.events_per_sec()),
        "throughput_ops_per_sec": round(measured.events_per_sec()),
        "acks": measured.acks,
        "ack_every": ACK_EVERY,
        "rss_before_mb": mb(measured.rss_before_kib),
        "rss_peak_mb": mb(measured.rss_peak_kib),
        "rss_growth_mb": mb(measured.rss_peak_kib.saturating_sub(measured.rss_before_kib)),
        "errors": 0,
    }))
}

/// Where the run's fresh database is.
pub enum Database {
    /// A PostgreSQL database created for the run (dropped by the caller).
    Postgres(String),
    /// A SQLite file in a directory of the run's.
    Sqlite(std::path::PathBuf),
}

impl Database {
    /// The service's configuration variables for it.
    pub(super) fn vars(&self) -> HashMap<String, String> {
        let database = match self {
            Self::Postgres(url) => ("DATABASE_URL".to_string(), url.clone()),
            Self::Sqlite(path) => ("SQLITE_PATH".to_string(), path.display().to_string()),
        };
        // A slow run (under callgrind, or a loaded machine) waits for a pooled
        // connection rather than failing: the bench measures, it does not shed load.
        HashMap::from([database, ("POOL_TIMEOUT_MS".to_string(), "60000".to_string())])
    }
}

/// Appends the confirmed lives of `orders` sample orders from [`WRITERS`]
/// tasks, each OrderCreated sealed for its customer.
pub(super) async fn seed(stores: &Stores, vault: Vault, orders: usize) -> anyhow::Result<()> {
    let mut writers = JoinSet::new();
    for writer in 0..WRITERS {
        let (units, vault) = (stores.units.clone(), vault.clone());
        writers.spawn(async move {
            for i in (writer..orders).step_by(WRITERS) {
                let customer = format!("bench-customer-{}", i / ORDERS_PER_CUSTOMER);
                let order = SampleOrder::new(&customer, 1 + i % 3);
                let mut life: Vec<NewEvent> = SampleOrder::encode(&order.confirmed());
                vault.seal_personal(&customer, &mut life[0].payload).await?;
                append(&*units, &order, life).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = writers.join_next().await {
        done??;
    }
    Ok(())
}

/// One order's life, retried while the database is busy (eight writers on
/// SQLite's one writer wait for it).
async fn append(
    units: &dyn crate::store::unit_of_work::UnitOfWorkCommitter,
    order: &SampleOrder,
    life: Vec<NewEvent>,
) -> anyhow::Result<()> {
    for _ in 0..100 {
        match units.append(order.order_id, 0, life.clone(), ORDER_STREAM).await {
            Ok(_) => return Ok(()),
            Err(EventStoreError::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(other) => return Err(other.into()),
        }
    }
    bail!("the database stayed busy while seeding")
}

/// What one catch-up measured.
struct Measured {
    elapsed: Duration,
    events: usize,
    acks: usize,
    rss_before_kib: u64,
    rss_peak_kib: u64,
}

impl Measured {
    fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Creates the consumer, reads its stream until `total` events came, acking
/// every [`ACK_EVERY`]; fails on a repeated event or a stream that ends.
async fn catch_up(channel: &Channel, auth: &AuthSettings, total: usize) -> anyhow::Result<Measured> {
    let token = |subject: &str, role: Role| mint_token(auth, subject, &[role], Duration::from_secs(7200));
    let (admin, service) = (
        token("bench-ops", Role::Admin)?,
        token("bench-sibling", Role::Service)?,
    );
    let mut client = OrderEventServiceClient::new(channel.clone()).max_decoding_message_size(usize::MAX);
    client
        .create_consumer(authed(
            CreateConsumerRequest {
                name: CONSUMER.into(),
                event_types: Vec::new(),
                from_now: false,
            },
            &admin,
        ))
        .await
        .context("CreateConsumer")?;

    let rss = OwnRss::sample();
    let started = Instant::now();
    let request = SubscribeRequest {
        consumer: CONSUMER.into(),
        ..Default::default()
    };
    let mut stream = client
        .subscribe(authed(request, &service))
        .await
        .context("Subscribe")?
        .into_inner();
    let mut seen = HashSet::with_capacity(total);
    let mut acks = 0;
    while seen.len() < total {
        let message = tokio::time::timeout(Duration::from_secs(60), stream.message())
            .await
            .context("no message for 60 s")??
            .context("the stream ended")?;
        let Some(Message::Event(event)) = message.message else {
            continue;
        };
        if !seen.insert(event.position) {
            bail!("position {} delivered twice", event.position);
        }
        if seen.len() % ACK_EVERY == 0 || seen.len() == total {
            let ack = AckRequest {
                consumer: CONSUMER.into(),
                position: event.position,
            };
            client.ack(authed(ack, &service)).await.context("Ack")?;
            acks += 1;
        }
    }
    let elapsed = started.elapsed();
    let (rss_before_kib, rss_peak_kib) = rss.finish();
    Ok(Measured {
        elapsed,
        events: total,
        acks,
        rss_before_kib,
        rss_peak_kib,
    })
}
