//! Soak: mixed traffic for a sustained period against the real binary, with Redis cut in the
//! middle (through the suite's TCP proxy, never the shared server), then checks that nothing
//! grows but the data the traffic created, and that nothing is left behind afterwards.
//!
//! CI runs about 40 s; `LONG_TESTS=1` runs 10 minutes (`SOAK_SECONDS` overrides both).

use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use commerce::proto::commerce::v1::{
    AddItemRequest, CreateCartRequest, GetCartRequest, GetOrderRequest, ListOrdersRequest,
    cart_service_client::CartServiceClient, order_service_client::OrderServiceClient,
};
use tonic::transport::Channel;

use crate::support::{
    app::{Backend, Isolation, authed},
    child::{free_port, spawn},
    long,
    orders::order_request,
    proxy::Proxy,
};

const CUSTOMERS: usize = 6;

/// One customer's round: a cart with a line, read back, ordered, the order read and listed.
async fn shop_once(channel: &Channel, token: &str, key: String) -> Result<(), tonic::Status> {
    let mut carts = CartServiceClient::new(channel.clone());
    let mut orders = OrderServiceClient::new(channel.clone());
    let cart = carts
        .create_cart(authed(CreateCartRequest::default(), token))
        .await?
        .into_inner()
        .cart
        .unwrap_or_default();
    let item = AddItemRequest {
        cart_id: cart.cart_id.clone(),
        product_id: "soak-book".into(),
        product_name: "A long read".into(),
        quantity: 1,
        unit_price: "9.99".into(),
        expected_version: None,
    };
    carts.add_item(authed(item, token)).await?;
    let read = GetCartRequest {
        cart_id: cart.cart_id.clone(),
    };
    carts.get_cart(authed(read, token)).await?;
    let order = orders
        .create_order(authed(order_request(&cart.cart_id, &key), token))
        .await?
        .into_inner()
        .order
        .unwrap_or_default();
    let get = GetOrderRequest {
        order_id: order.order_id,
        min_version: order.version,
    };
    orders.get_order(authed(get, token)).await?;
    let list = ListOrdersRequest {
        page_size: 10,
        ..Default::default()
    };
    orders.list_orders(authed(list, token)).await?;
    Ok(())
}

/// What must stay flat: memory, database connections, Redis keys that are not cart data,
/// and the bookkeeping rows (checkpoints, events the relay has not published, unfinished sagas).
#[derive(Debug, PartialEq)]
struct Footprint {
    rss_mib: u64,
    db_connections: i64,
    redis_structure: BTreeSet<String>,
    checkpoints: i64,
    unrelayed: i64,
    unfinished_sagas: i64,
}

/// Events after the relay's cursor in the settled order (transaction, position).
const UNRELAYED: &str = "
SELECT COUNT(*) FROM events e,
     (SELECT ce.transaction_id AS t, ce.global_position AS p
      FROM relay_cursor c LEFT JOIN events ce ON ce.global_position = c.position) cur
WHERE cur.t IS NULL OR (e.transaction_id, e.global_position) > (cur.t, cur.p)";

struct Probe {
    admin: sqlx::PgPool,
    db: sqlx::PgPool,
    database: String,
    redis: redis::aio::MultiplexedConnection,
    prefix: String,
}

impl Probe {
    async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    async fn footprint(&mut self, rss_kib: u64) -> Footprint {
        let db_connections = sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'commerce'",
        )
        .bind(&self.database)
        .fetch_one(&self.admin)
        .await
        .unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query_async(&mut self.redis)
            .await
            .unwrap();
        // Cart hashes, owner indexes and the set of active carts by expiry are the traffic's
        // data (they expire with their TTL; the set is gone while no cart is active).
        let redis_structure = keys
            .into_iter()
            .filter(|k| {
                !k.contains(":cart:id:") && !k.contains(":cart:owner:") && !k.ends_with(":cart:expiring")
            })
            .collect();
        Footprint {
            rss_mib: rss_kib / 1024,
            db_connections,
            redis_structure,
            checkpoints: self.count("SELECT COUNT(*) FROM projection_checkpoints").await,
            unrelayed: self.count(UNRELAYED).await,
            unfinished_sagas: self
                .count("SELECT COUNT(*) FROM sagas WHERE status NOT IN ('COMPLETED', 'COMPENSATED')")
                .await,
        }
    }
}

#[tokio::test]
async fn a_sustained_mixed_load_with_a_redis_cut_leaves_memory_connections_and_bookkeeping_flat() {
    if Backend::from_env() != Backend::Real {
        // The Redis cut needs a real Redis behind the proxy (CI has one).
        return;
    }
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if long() { 600 } else { 40 });
    let isolation = Isolation::new(Backend::Real).await;
    let (redis_proxy, redis_url) = Proxy::for_url(&isolation.vars["REDIS_URL"]).await;
    let port = free_port();
    let mut vars = isolation.vars.clone();
    vars.insert("PORT".into(), port.to_string());
    vars.insert("REDIS_URL".into(), redis_url);
    vars.insert("RATE_LIMIT_PER_SECOND".into(), "0".into());
    vars.insert("POOL_TIMEOUT_MS".into(), "1000".into());
    let dir = tempfile::tempdir().unwrap();
    let mut server = spawn(&["serve"], &vars, dir.path().join("serve.log"), port);
    let channel = server.ready().await;
    let config = isolation.config(&[]);
    let database = config
        .database
        .url
        .as_deref()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let prefix = config.redis.key_prefix.clone();
    let mut probe = Probe {
        admin: sqlx::PgPool::connect(&std::env::var("TEST_DATABASE_URL").unwrap())
            .await
            .unwrap(),
        db: sqlx::PgPool::connect(config.database.url.as_deref().unwrap())
            .await
            .unwrap(),
        database: database.clone(),
        redis: redis::Client::open(isolation.vars["REDIS_URL"].clone())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap(),
        prefix: prefix.clone(),
    };

    let started = tokio::time::Instant::now();
    let end = started + Duration::from_secs(seconds);
    let (done, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut customers = Vec::new();
    for c in 0..CUSTOMERS {
        let token = commerce::auth::mint_token(
            &config.auth,
            &format!("soak-{c}"),
            &[commerce::auth::Role::Customer],
            Duration::from_secs(3600),
        )
        .unwrap();
        let (channel, done, refused) = (channel.clone(), done.clone(), refused.clone());
        customers.push(tokio::spawn(async move {
            let mut round = 0u64;
            while tokio::time::Instant::now() < end {
                round += 1;
                match shop_once(&channel, &token, format!("soak-{c}-{round}")).await {
                    Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                    Err(status) => {
                        // Only the Redis cut may refuse, and only as a dependency outage.
                        assert!(
                            matches!(
                                status.code(),
                                tonic::Code::Unavailable
                                    | tonic::Code::DeadlineExceeded
                                    | tonic::Code::Aborted
                            ),
                            "{status:?}"
                        );
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        refused.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }

    // Warm: a quarter in, every structure exists and the pools are filled.
    tokio::time::sleep_until(started + Duration::from_secs(seconds / 4)).await;
    let warm = probe.footprint(server.rss_kib()).await;
    tokio::time::sleep_until(started + Duration::from_secs(seconds / 2)).await;
    redis_proxy.cut();
    tokio::time::sleep(Duration::from_secs(3)).await;
    redis_proxy.restore();
    let done_at_restore = done.load(Ordering::Relaxed);
    for customer in customers {
        customer.await.unwrap();
    }
    let ordered = done.load(Ordering::Relaxed);
    assert!(
        ordered > done_at_restore,
        "no round completed after Redis came back ({ordered} in all)"
    );

    // Settled: the sagas finished, the relay caught up (it retried past the cut).
    let mut end_state = probe.footprint(server.rss_kib()).await;
    for _ in 0..300 {
        if end_state.unrelayed == 0 && end_state.unfinished_sagas == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        end_state = probe.footprint(server.rss_kib()).await;
    }
    println!(
        "soak {seconds} s: {ordered} rounds, {} refused during the cut; warm {warm:?}, end {end_state:?}",
        refused.load(Ordering::Relaxed)
    );
    assert_eq!(
        (end_state.unrelayed, end_state.unfinished_sagas),
        (0, 0),
        "{end_state:?}"
    );
    assert_eq!(end_state.checkpoints, warm.checkpoints);
    assert_eq!(
        end_state.redis_structure, warm.redis_structure,
        "only cart data may come and go"
    );
    // The service's connections (its pool and the saga LISTEN connection, named `commerce`;
    // not this test's probe) stay within the pool: nothing piles up.
    let pool_bound = i64::from(config.database.pool_size) + 2;
    assert!(
        end_state.db_connections <= pool_bound.max(warm.db_connections),
        "{end_state:?} vs {warm:?}"
    );
    // Memory: a quarter in, the allocator and pools have their working set; what follows
    // (three quarters more traffic, a dependency outage) may not add more than a little.
    assert!(
        end_state.rss_mib <= warm.rss_mib + warm.rss_mib / 4 + 16,
        "{end_state:?} vs {warm:?}"
    );

    // Nothing left behind: the process, then its database and every key of its prefix.
    server.kill9().await;
    probe.db.close().await;
    drop(redis_proxy);
    drop(isolation);
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut probe.redis)
        .await
        .unwrap();
    assert!(left.is_empty(), "left in Redis: {left:?}");
    let databases = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM pg_database WHERE datname = $1")
        .bind(&database)
        .fetch_one(&probe.admin)
        .await
        .unwrap();
    assert_eq!(databases, 0, "database {database} left behind");
}
