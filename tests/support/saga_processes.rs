//! The service and the stubs as child processes of the real binary, and a
//! stream of planned orders at them: the kill -9 and replica tests share the
//! environment, the plans and the outcome check.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use commerce::proto::{
    commerce::v1::{
        Address, CreateCartRequest, CreateOrderRequest, ListSagasRequest, SagaStatus,
        cart_service_client::CartServiceClient, order_service_client::OrderServiceClient,
        saga_admin_client::SagaAdminClient,
    },
    inventory::v1::{GetStockRequest, ReservationStatus, SetStockRequest},
    payment::v1::AuthorizationStatus,
};
use rand::{Rng, rngs::StdRng};
use tonic::{Code, transport::Channel};

use crate::support::{
    app::{Isolation, authed},
    child::{Proc, free_port, spawn},
    orders::{add_item, address, order_request},
    stubs::StubClients,
};

/// Products of the run, each seeded with this much stock.
const PRODUCTS: [&str; 3] = ["kill-widget", "kill-gadget", "kill-gizmo"];
const STOCK: i64 = 10_000;

/// The service's environment: the isolated database, the stubs, short
/// timeouts so that a killed process's leases and keys expire quickly.
pub fn service_env(isolation: &Isolation, stubs_url: &str, port: u16) -> HashMap<String, String> {
    let mut env = isolation.vars.clone();
    for (k, v) in [
        ("PORT", port.to_string()),
        ("PAYMENT_SERVICE_URL", stubs_url.into()),
        ("INVENTORY_SERVICE_URL", stubs_url.into()),
        ("SHIPPING_SERVICE_URL", stubs_url.into()),
        ("SAGA_RETRY_ATTEMPTS", "12".into()),
        ("SAGA_RETRY_DELAY_SECONDS", "0.02".into()),
        ("SIBLING_CALL_TIMEOUT_MS", "500".into()),
        ("SAGA_LEASE_SECONDS", "1.5".into()),
        ("MAX_REQUEST_TIMEOUT_SECONDS", "2".into()),
        ("RATE_LIMIT_PER_SECOND", "0".into()),
    ] {
        env.insert(k.into(), v);
    }
    env
}

/// `commerce serve` named `name` as a child process on [`service_env`] with
/// `overrides`, logging into `dir`; ready, with a channel to it.
pub async fn spawn_service(
    isolation: &Isolation,
    stubs_url: &str,
    name: &str,
    dir: &std::path::Path,
    overrides: &[(&str, &str)],
) -> (Proc, Channel) {
    let port = free_port();
    let mut env = service_env(isolation, stubs_url, port);
    env.extend(overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut service = spawn(&["serve"], &env, dir.join(format!("serve-{name}.log")), port);
    let channel = service.ready().await;
    (service, channel)
}

/// What one simulated customer orders.
#[derive(Clone, Debug)]
pub struct Plan {
    pub customer: String,
    product: String,
    quantity: i32,
    payment_method: &'static str,
    country: &'static str,
}

pub fn plans(count: usize, rng: &mut StdRng) -> Vec<Plan> {
    (0..count)
        .map(|i| {
            let roll = rng.random_range(0..100);
            Plan {
                customer: format!("kill-customer-{i}"),
                product: if roll < 8 {
                    "oos-kill-lamp".into()
                } else {
                    PRODUCTS[rng.random_range(0..PRODUCTS.len())].into()
                },
                quantity: rng.random_range(1..4),
                payment_method: if (8..16).contains(&roll) {
                    "pm_card_declined"
                } else {
                    "pm_card_visa"
                },
                country: if (16..22).contains(&roll) { "ZZ" } else { "US" },
            }
        })
        .collect()
}

/// A customer's progress: the cart in use and the idempotency key's number.
#[derive(Default, Clone)]
pub struct Progress {
    cart_id: Option<String>,
    attempt: u32,
}

impl Progress {
    /// How many of this customer's carts vanished before their order was
    /// placed (CreateOrder answered NOT_FOUND for the cart).
    pub fn carts_lost(&self) -> u32 {
        self.attempt
    }
}

/// Places `plan`'s order, retrying across crashes with the same cart and key
/// (a repeat answers the first order). A cart lost with the in-process store
/// is recreated with a new key: the old key never completed, or its repeat
/// would have answered. None while the service is down.
pub async fn place(channel: &Channel, token: &str, plan: &Plan, progress: &mut Progress) -> Option<String> {
    let mut carts = CartServiceClient::new(channel.clone());
    let mut orders = OrderServiceClient::new(channel.clone());
    if progress.cart_id.is_none() {
        let cart = carts
            .create_cart(authed(CreateCartRequest::default(), token))
            .await
            .ok()?
            .into_inner()
            .cart?;
        if cart.items.is_empty() {
            let add = add_item(&cart.cart_id, &plan.product, plan.quantity, "9.99");
            carts.add_item(authed(add, token)).await.ok()?;
        }
        progress.cart_id = Some(cart.cart_id);
    }
    let request = CreateOrderRequest {
        payment_method: plan.payment_method.into(),
        shipping_address: Some(Address {
            country: plan.country.into(),
            ..address()
        }),
        ..order_request(
            &progress.cart_id.clone()?,
            &format!("{}-{}", plan.customer, progress.attempt),
        )
    };
    match orders.create_order(authed(request, token)).await {
        Ok(response) => Some(response.into_inner().order?.order_id),
        Err(status) if status.code() == Code::NotFound => {
            progress.cart_id = None;
            progress.attempt += 1;
            None
        }
        Err(status) if matches!(status.code(), Code::InvalidArgument | Code::FailedPrecondition) => {
            panic!("CreateOrder refused {}: {status:?}", plan.customer)
        }
        Err(_) => None,
    }
}

/// Seeds stock so that conservation can be checked exactly.
/// `commerce stubs` as a child process failing `failure_rate` of calls
/// transiently, with the run's products in stock; logs in `dir`.
pub async fn start_stubs(dir: &std::path::Path, failure_rate: &str) -> (Proc, StubClients) {
    let port = free_port();
    let env = HashMap::from([
        ("STUBS_PORT".to_string(), port.to_string()),
        ("HOST".to_string(), "127.0.0.1".to_string()),
        ("STUB_FAILURE_RATE".to_string(), failure_rate.to_string()),
    ]);
    let mut process = spawn(&["stubs"], &env, dir.join("stubs.log"), port);
    process.ready().await;
    let stubs = StubClients::at(&process.url());
    seed_stock(&stubs).await;
    (process, stubs)
}

pub async fn seed_stock(stubs: &StubClients) {
    let mut inventory = stubs.inventory.clone();
    for product in PRODUCTS {
        inventory
            .set_stock(SetStockRequest {
                product_id: product.into(),
                on_hand: STOCK,
            })
            .await
            .unwrap();
    }
}

/// Waits until no saga is RUNNING or COMPENSATING.
pub async fn wait_terminal(channel: &Channel, admin: &str, within: Duration) {
    let mut sagas = SagaAdminClient::new(channel.clone());
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut live = 0;
        for status in [SagaStatus::Running, SagaStatus::Compensating] {
            let request = ListSagasRequest {
                status: status.into(),
                // Any one live saga is enough to wait on.
                page_size: 1,
                ..Default::default()
            };
            live += sagas
                .list_sagas(authed(request, admin))
                .await
                .unwrap()
                .into_inner()
                .sagas
                .len();
        }
        if live == 0 {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{live} sagas still live");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The event types of every order stream, read from the database (the
/// service's own view of what happened to each order).
async fn order_events(isolation: &Isolation) -> HashMap<String, Vec<String>> {
    let rows: Vec<(String, String)> = match isolation.backends().await.db {
        commerce::db::Db::Postgres(pool) => {
            sqlx::query_as("SELECT stream_id::text, event_type FROM events ORDER BY global_position")
                .fetch_all(&pool)
                .await
                .unwrap()
        }
        commerce::db::Db::Sqlite(pool) => {
            sqlx::query_as("SELECT stream_id, event_type FROM events ORDER BY global_position")
                .fetch_all(&pool)
                .await
                .unwrap()
        }
    };
    let mut streams: HashMap<String, Vec<String>> = HashMap::new();
    for (stream, event_type) in rows {
        streams.entry(stream).or_default().push(event_type);
    }
    streams
}

/// Every order terminal and consistent with the stub ledgers; returns the
/// number of violations found (asserted zero by the caller, after printing).
pub async fn check_outcome(isolation: &Isolation, stubs: &StubClients, order_ids: &[String]) -> usize {
    let streams = order_events(isolation).await;
    let ledgers = stubs.ledgers().await;
    let mut violations = Vec::new();
    let mut confirmed_quantity: HashMap<String, i64> = HashMap::new();
    let ids: HashSet<&String> = order_ids.iter().collect();
    for auth in &ledgers.authorizations {
        if auth.capture_count > 1 {
            violations.push(format!(
                "authorization {} captured {} times",
                auth.authorization_id, auth.capture_count
            ));
        }
        if !ids.contains(&auth.order_id) {
            violations.push(format!("authorization for unknown order {}", auth.order_id));
        }
    }
    for order_id in order_ids {
        let events = streams.get(order_id).cloned().unwrap_or_default();
        if events.first().map(String::as_str) != Some("OrderCreated") {
            violations.push(format!("order {order_id} lost: {events:?}"));
            continue;
        }
        let has = |t: &str| events.iter().filter(|e| *e == t).count();
        let own: Vec<_> = ledgers
            .authorizations
            .iter()
            .filter(|a| &a.order_id == order_id)
            .collect();
        let held: Vec<_> = ledgers
            .reservations
            .iter()
            .filter(|r| &r.order_id == order_id)
            .collect();
        if own.len() > 1 || held.len() > 1 {
            violations.push(format!(
                "order {order_id}: {} authorizations, {} reservations",
                own.len(),
                held.len()
            ));
        }
        let captured: i32 = own.iter().map(|a| a.capture_count).sum();
        match (has("OrderConfirmed"), has("OrderCancelled")) {
            (1, 0) => {
                if captured != 1 || held.iter().any(|r| r.status() != ReservationStatus::Reserved) {
                    violations.push(format!(
                        "confirmed order {order_id}: captured {captured}, {held:?}"
                    ));
                }
                for r in &held {
                    for line in &r.lines {
                        *confirmed_quantity.entry(line.product_id.clone()).or_default() +=
                            i64::from(line.quantity);
                    }
                }
            }
            (0, 1) => {
                if captured != 0 || own.iter().any(|a| a.status() != AuthorizationStatus::Voided) {
                    violations.push(format!("cancelled order {order_id} keeps a payment: {own:?}"));
                }
                if held.iter().any(|r| r.status() != ReservationStatus::Released) {
                    violations.push(format!("cancelled order {order_id} keeps stock: {held:?}"));
                }
            }
            _ => violations.push(format!("order {order_id} did not end once: {events:?}")),
        }
    }
    let stock = stubs
        .clone()
        .inventory
        .get_stock(GetStockRequest {
            product_ids: PRODUCTS.iter().map(|p| p.to_string()).collect(),
        })
        .await
        .unwrap()
        .into_inner()
        .levels;
    for level in stock {
        let confirmed = confirmed_quantity.get(&level.product_id).copied().unwrap_or(0);
        if level.on_hand + level.reserved != STOCK || level.reserved != confirmed {
            violations.push(format!(
                "stock of {}: {level:?}, confirmed orders hold {confirmed}",
                level.product_id
            ));
        }
    }
    let confirmed = streams
        .values()
        .filter(|e| e.iter().any(|t| t == "OrderConfirmed"))
        .count();
    let cancelled = streams
        .values()
        .filter(|e| e.iter().any(|t| t == "OrderCancelled"))
        .count();
    println!("outcome: {confirmed} orders confirmed, {cancelled} cancelled");
    for v in &violations {
        println!("VIOLATION: {v}");
    }
    violations.len()
}

/// [`check_outcome`], plus one violation per difference between the read
/// models (projected by however many processes, across kills) and a rebuild
/// from the event store: each order projected once.
pub async fn check_outcome_and_read_models(
    isolation: &Isolation,
    stubs: &StubClients,
    order_ids: &[String],
) -> usize {
    let mut violations = check_outcome(isolation, stubs, order_ids).await;
    for v in crate::support::rebuild_check::compare_with_rebuild(&isolation.backends().await.db).await {
        println!("VIOLATION: {v}");
        violations += 1;
    }
    violations
}
