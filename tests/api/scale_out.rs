//! Three `commerce serve` processes on one PostgreSQL and a Redis Cluster
//! with replicas (`scripts/redis-cluster.sh start-ha`), under mixed load
//! (carts, orders, GetOrder, ListOrders, WatchOrder) through all three; one
//! service replica is killed with SIGKILL and one Redis master is restarted
//! mid-run (its replica takes over). Every saga ends, every order is projected
//! once (the read models equal a rebuild), no cart is lost, and the reads of
//! the surviving replicas converge on the event store's truth.
//!
//! About 30 orders; `LONG_TESTS=1` runs 300.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use commerce::{
    auth::{Role, mint_token},
    proto::commerce::v1::{
        GetOrderRequest, ListOrdersRequest, OrderStatus, WatchOrderRequest,
        order_service_client::OrderServiceClient,
    },
};
use rand::{SeedableRng, rngs::StdRng};
use tonic::transport::Channel;

use crate::support::{
    app::{Backend, Isolation, authed, cluster_masters},
    child::Proc,
    eventually,
    saga_processes::{
        Progress, check_outcome_and_read_models, place, plans, spawn_service, start_stubs, wait_terminal,
    },
    scale, seed,
};

/// The Redis Cluster with replicas of TEST_REDIS_CLUSTER_HA_URL; under CI a
/// missing one fails the test instead of skipping it.
fn ha_cluster() -> Option<String> {
    let url = std::env::var("TEST_REDIS_CLUSTER_HA_URL").ok();
    if url.is_none() || Backend::from_env() != Backend::Real {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        assert!(
            !ci,
            "CI is set but TEST_REDIS_CLUSTER_HA_URL or TEST_DATABASE_URL is not: \
             eval \"$(scripts/redis-cluster.sh start-ha)\" (as .ci/run does)"
        );
        return None;
    }
    url
}

/// Places `plan`'s order through whichever of `channels` answers, retrying
/// (a replica killed, Redis failing over) for up to 60 s.
async fn place_somewhere(
    channels: &[Channel],
    token: &str,
    plan: &crate::support::saga_processes::Plan,
    progress: &mut Progress,
) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for attempt in 0.. {
        if let Some(order_id) = place(&channels[attempt % channels.len()], token, plan, progress).await {
            return order_id;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} not placed in 60 s",
            plan.customer
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unreachable!()
}

/// GetOrder of `order_id` at version 1 or later through whichever of
/// `channels` answers (60 s at most).
async fn read_somewhere(channels: &[Channel], token: &str, order_id: &str) {
    let read = eventually(Duration::from_secs(60), || async {
        for channel in channels {
            let request = GetOrderRequest {
                order_id: order_id.into(),
                min_version: 1,
            };
            if let Ok(found) = OrderServiceClient::new(channel.clone())
                .get_order(authed(request, token))
                .await
            {
                return found.into_inner().order;
            }
        }
        None
    })
    .await;
    assert!(read.is_some(), "{order_id} could not be read");
}

/// Watches `order_id` to a terminal status, watching again (on the next
/// channel) when a stream breaks; the terminal status seen.
async fn watch_to_the_end(channels: &[Channel], token: &str, order_id: &str) -> i32 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut after_version = 0;
    for attempt in 0.. {
        assert!(
            tokio::time::Instant::now() < deadline,
            "watch of {order_id} did not end"
        );
        let mut client = OrderServiceClient::new(channels[attempt % channels.len()].clone());
        let request = WatchOrderRequest {
            order_id: order_id.into(),
            after_version,
        };
        let Ok(stream) = client.watch_order(authed(request, token)).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut stream = stream.into_inner();
        while let Ok(Some(message)) = stream.message().await {
            let Some(order) = message.order else { continue };
            after_version = order.version;
            if order.status == OrderStatus::Confirmed as i32 || order.status == OrderStatus::Cancelled as i32
            {
                return order.status;
            }
        }
    }
    unreachable!()
}

/// `step`'s output, or an error naming `what` after `seconds`.
async fn within<T>(
    seconds: u64,
    what: String,
    step: impl std::future::Future<Output = T>,
) -> Result<T, String> {
    tokio::time::timeout(Duration::from_secs(seconds), step)
        .await
        .map_err(|_| format!("{what}: no end after {seconds} s"))
}

/// Prints what a stalled run leaves to look at: every saga not ended, and
/// the warnings and errors of each replica's log (in `dir`).
async fn diagnose(isolation: &Isolation, dir: &std::path::Path) {
    if let commerce::db::Db::Postgres(pool) = isolation.backends().await.db {
        let open: Vec<(String, String, String, Option<String>, String)> = sqlx::query_as(
            "SELECT order_id::text, status::text, current_step::text, lease_owner::text, \
                    format('lease until %s, next run at %s', lease_until, next_run_at) \
             FROM sagas WHERE status NOT IN ('COMPLETED', 'COMPENSATED', 'FAILED')",
        )
        .fetch_all(&pool)
        .await
        .unwrap_or_else(|e| {
            eprintln!("reading the sagas: {e}");
            Vec::new()
        });
        for saga in open {
            eprintln!("OPEN SAGA {saga:?}");
        }
        let unfinished: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT d.order_id::text, d.status, (SELECT max(version) FROM events e WHERE e.stream_id = d.order_id) \
             FROM order_details d WHERE d.status NOT IN ('CONFIRMED', 'CANCELLED')",
        )
        .fetch_all(&pool)
        .await
        .unwrap_or_else(|e| {
            eprintln!("reading the order details: {e}");
            Vec::new()
        });
        for order in unfinished {
            eprintln!("ORDER NOT ENDED IN THE READ MODEL (id, status, stream version) {order:?}");
        }
    }
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let noteworthy: Vec<&str> = text
            .lines()
            .filter(|line| line.contains("\"WARN\"") || line.contains("\"ERROR\""))
            .collect();
        eprintln!(
            "== {} ({} warnings and errors, the last 30):",
            entry.path().display(),
            noteworthy.len()
        );
        for line in &noteworthy[noteworthy.len().saturating_sub(30)..] {
            eprintln!("{line}");
        }
    }
}

/// The port of one master of the cluster `seed` belongs to.
async fn a_master(seed: &str) -> u16 {
    let masters = cluster_masters(seed).await.expect("cluster masters");
    let last = masters.last().expect("a master");
    last.rsplit(':').next().unwrap().parse().unwrap()
}

/// Deletes every key under `prefix` on the masters of `seed`'s cluster.
async fn delete_prefix(seed: &str, prefix: &str) {
    for master in cluster_masters(seed).await.expect("cluster masters") {
        let mut conn = redis::Client::open(master)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        for key in keys {
            let _: () = redis::cmd("DEL").arg(key).query_async(&mut conn).await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_keep_every_order_through_a_replica_killed_and_a_redis_master_failing_over() {
    let Some(ha) = ha_cluster() else {
        return;
    };
    let isolation = Isolation::new(Backend::Real).await;
    let prefix = isolation.vars["REDIS_KEY_PREFIX"].clone();
    let dir = tempfile::tempdir().unwrap();
    let (stubs_proc, stubs) = start_stubs(dir.path(), "0.02").await;
    let mut replicas: Vec<Option<Proc>> = Vec::new();
    let mut channels = Vec::new();
    // Three processes beside the rest of the suite on one PostgreSQL
    // (max_connections 100 here): a small pool each is plenty for 30 customers.
    let overrides = [
        ("REDIS_URL", ha.as_str()),
        ("REDIS_CLUSTER", "true"),
        ("DB_POOL_SIZE", "4"),
    ];
    for name in ["a", "b", "c"] {
        let (replica, channel) =
            spawn_service(&isolation, &stubs_proc.url(), name, dir.path(), &overrides).await;
        channels.push(channel);
        replicas.push(Some(replica));
    }
    let config = isolation.config(&[]);
    let token = |subject: &str, role: Role| {
        mint_token(&config.auth, subject, &[role], Duration::from_secs(3600)).unwrap()
    };
    let admin = token("admin-1", Role::Admin);
    let mut rng = StdRng::seed_from_u64(seed("three_replicas"));
    let plans = plans(scale(30, 300), &mut rng);

    // Customers place orders at once, each through its own replica first,
    // with a watch on another replica and reads in between.
    let mut customers = tokio::task::JoinSet::new();
    for (i, plan) in plans.iter().cloned().enumerate() {
        let customer = token(&plan.customer, Role::Customer);
        // Each customer's replicas, its own first.
        let mine: Vec<Channel> = (0..3).map(|k| channels[(i + k) % 3].clone()).collect();
        customers.spawn(async move {
            tokio::time::sleep(Duration::from_millis(100 * (i as u64 % 30))).await;
            let mut progress = Progress::default();
            // Each step within a deadline, so that a stalled call fails the
            // test saying where (with the diagnosis below) instead of holding CI up.
            let order_id = within(
                120,
                format!("placing {}", plan.customer),
                place_somewhere(&mine, &customer, &plan, &mut progress),
            )
            .await?;
            // A read through a third replica (the others when it is down), at
            // least at the created version.
            let readers: Vec<Channel> = mine[2..].iter().chain(&mine[..2]).cloned().collect();
            within(
                90,
                format!("reading {order_id}"),
                read_somewhere(&readers, &customer, &order_id),
            )
            .await?;
            let watchers: Vec<Channel> = mine[1..].iter().chain(&mine[..1]).cloned().collect();
            let status = within(
                120,
                format!("watching {order_id}"),
                watch_to_the_end(&watchers, &customer, &order_id),
            )
            .await?;
            Ok::<_, String>((order_id, status, progress.carts_lost()))
        });
    }
    // Mid-run: one service replica dies without a word, and a Redis master
    // restarts (without persistence: its replica takes over first).
    tokio::time::sleep(Duration::from_secs(1)).await;
    replicas[2].take().expect("replica c").kill9().await;
    let master = a_master(&ha).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/redis-cluster.sh");
    let restarted = tokio::process::Command::new(script)
        .args(["restart-node", &master.to_string()])
        .output()
        .await
        .expect("scripts/redis-cluster.sh restart-node");
    assert!(
        restarted.status.success(),
        "{}",
        String::from_utf8_lossy(&restarted.stderr)
    );

    let mut order_ids = Vec::new();
    let mut carts_lost = 0;
    let mut statuses: HashMap<String, i32> = HashMap::new();
    let mut stalled = Vec::new();
    while let Some(done) = customers.join_next().await {
        match done.expect("a customer's run") {
            Ok((order_id, status, lost)) => {
                carts_lost += lost;
                statuses.insert(order_id.clone(), status);
                order_ids.push(order_id);
            }
            Err(stall) => stalled.push(stall),
        }
    }
    if !stalled.is_empty() {
        diagnose(&isolation, dir.path()).await;
        panic!("{} customers stalled: {stalled:#?}", stalled.len());
    }
    let survivors = &channels[..2];
    wait_terminal(&survivors[0], &admin, Duration::from_secs(60)).await;

    // Projected once: the read models, written by three replicas (one killed
    // mid-batch), equal a rebuild from the events.
    let violations = check_outcome_and_read_models(&isolation, &stubs, &order_ids).await;
    assert_eq!(violations, 0, "see VIOLATION lines");
    assert_eq!(carts_lost, 0, "a cart vanished before its order was placed");
    assert_eq!(order_ids.len(), plans.len());

    // The reads converge: both survivors answer every order at its final
    // state, the one its watch ended on, and list them all.
    for (order_id, status) in &statuses {
        for channel in survivors {
            let mut client = OrderServiceClient::new(channel.clone());
            let request = GetOrderRequest {
                order_id: order_id.clone(),
                min_version: 0,
            };
            let order = client
                .get_order(authed(request, &admin))
                .await
                .expect("get order")
                .into_inner()
                .order
                .expect("an order");
            assert_eq!(order.status, *status, "{order_id}");
        }
    }
    for channel in survivors {
        let listed = eventually(Duration::from_secs(10), || async {
            let mut client = OrderServiceClient::new(channel.clone());
            let request = ListOrdersRequest {
                page_size: 100,
                ..Default::default()
            };
            let mut count = 0;
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_orders(authed(
                        ListOrdersRequest {
                            page_token,
                            ..request.clone()
                        },
                        &admin,
                    ))
                    .await
                    .ok()?
                    .into_inner();
                count += page.orders.len();
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            (count == plans.len()).then_some(())
        })
        .await;
        assert!(listed.is_some(), "ListOrders does not show every order");
    }
    println!(
        "three replicas: {} orders, a replica killed, Redis master {master} restarted",
        order_ids.len()
    );
    drop(replicas);
    drop(stubs_proc);
    delete_prefix(&ha, &prefix).await;
}
