//! A seeded simulation of the saga engine against the real stubs (over gRPC)
//! and the real saga store: sibling answers lost after the sibling applied
//! them, transient failures before, customer cancels at random moments, and
//! whole worker pools killed mid-step and replaced, while two pools compete
//! for the same sagas. Afterwards every saga must be terminal and the stub
//! ledgers must show each effect exactly once and every compensation done.
//!
//! The order is a fake (an in-memory state machine); the full service with
//! the real order aggregate is exercised by `saga.rs` and `saga_kill.rs`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use chrono::{TimeDelta, Utc};
use commerce::startup::Stores;
use commerce::{
    domain::order::{Order, OrderCommand, ShippingAddress},
    proto::{
        inventory::v1::{GetStockRequest, ReservationStatus},
        payment::v1::AuthorizationStatus,
        shipping::v1::ShipmentStatus,
    },
    saga::{
        engine::Engine,
        grpc_siblings::{GrpcSiblings, SiblingUrls},
        plan::{RetryPolicy, SagaStatus},
        ports::{CallError, OrderChange, OrderFacts, OrderPort, SagaPorts, Siblings},
        worker::{LocalWorkers, PoolSettings, run_pool},
    },
    shutdown,
    store::{
        event_store::{EventStore, Upcasters},
        saga::{CancelRequest, Lease, SagaFilter, SagaStart, SagaStore, SagaWrite},
    },
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use uuid::Uuid;

use crate::support::{
    self,
    app::{Backend, Isolation},
    store::order_unit,
    stubs::{StubClients, spawn_stubs},
};

/// Siblings that fail on purpose: before the call (nothing applied) or after
/// it (applied, answer lost), from a seeded generator.
struct FaultySiblings {
    inner: GrpcSiblings,
    rng: Mutex<StdRng>,
    per_mille: u32,
}

impl FaultySiblings {
    fn roll(&self) -> Option<bool> {
        let mut rng = self.rng.lock().unwrap();
        if rng.random_range(0..1000) < self.per_mille {
            Some(rng.random_bool(0.5))
        } else {
            None
        }
    }

    async fn around<T>(&self, call: impl Future<Output = Result<T, CallError>>) -> Result<T, CallError> {
        match self.roll() {
            Some(true) => Err(CallError::transient("UNAVAILABLE", "simulated: not sent")),
            Some(false) => {
                call.await?;
                Err(CallError::transient(
                    "DEADLINE_EXCEEDED",
                    "simulated: answer lost",
                ))
            }
            None => call.await,
        }
    }
}

#[async_trait]
impl Siblings for FaultySiblings {
    async fn authorize(&self, key: &str, order: &OrderFacts) -> Result<String, CallError> {
        self.around(self.inner.authorize(key, order)).await
    }
    async fn capture(&self, key: &str, authorization_id: &str) -> Result<String, CallError> {
        self.around(self.inner.capture(key, authorization_id)).await
    }
    async fn void(&self, key: &str, authorization_id: &str) -> Result<(), CallError> {
        self.around(self.inner.void(key, authorization_id)).await
    }
    async fn reserve(&self, key: &str, order: &OrderFacts) -> Result<String, CallError> {
        self.around(self.inner.reserve(key, order)).await
    }
    async fn release(&self, key: &str, reservation_id: &str) -> Result<(), CallError> {
        self.around(self.inner.release(key, reservation_id)).await
    }
    async fn create_shipment(&self, key: &str, order: &OrderFacts) -> Result<(String, String), CallError> {
        self.around(self.inner.create_shipment(key, order)).await
    }
    async fn cancel_shipment(&self, key: &str, shipment_id: &str) -> Result<(), CallError> {
        self.around(self.inner.cancel_shipment(key, shipment_id)).await
    }
}

/// The order as a small state machine: the status it reached, with its ids.
#[derive(Debug, Default, Clone)]
struct FakeOrder {
    status: &'static str,
    authorization_id: Option<String>,
    capture_id: Option<String>,
    violations: Vec<String>,
}

#[derive(Default)]
struct FakeOrders {
    facts: Mutex<HashMap<Uuid, OrderFacts>>,
    orders: Mutex<HashMap<Uuid, FakeOrder>>,
}

const RANK: [&str; 5] = [
    "PENDING",
    "PAYMENT_AUTHORIZED",
    "INVENTORY_RESERVED",
    "SHIPPING_ARRANGED",
    "CONFIRMED",
];

#[async_trait]
impl OrderPort for FakeOrders {
    async fn facts(&self, order_id: Uuid) -> Result<OrderFacts, CallError> {
        let facts = self.facts.lock().unwrap().get(&order_id).cloned();
        facts.ok_or_else(|| CallError::refused("NOT_FOUND", "no such order"))
    }

    /// Applies the commands at once, in turn (no event store: nothing left
    /// to commit).
    async fn decide(
        &self,
        order_id: Uuid,
        _basis: Option<Order>,
        commands: Vec<OrderCommand>,
    ) -> Result<Option<OrderChange>, CallError> {
        for command in commands {
            self.apply(order_id, command)?;
        }
        Ok(None)
    }
}

impl FakeOrders {
    fn apply(&self, order_id: Uuid, command: OrderCommand) -> Result<(), CallError> {
        let mut orders = self.orders.lock().unwrap();
        let order = orders.entry(order_id).or_insert_with(|| FakeOrder {
            status: "PENDING",
            ..Default::default()
        });
        let rank = |s: &str| RANK.iter().position(|r| *r == s);
        let (target, expected_before) = match &command {
            OrderCommand::MarkPaymentAuthorized { authorization_id } => {
                if order
                    .authorization_id
                    .as_ref()
                    .is_some_and(|a| a != authorization_id)
                {
                    order
                        .violations
                        .push(format!("second authorization {authorization_id}"));
                }
                order.authorization_id = Some(authorization_id.clone());
                ("PAYMENT_AUTHORIZED", "PENDING")
            }
            OrderCommand::MarkInventoryReserved { .. } => ("INVENTORY_RESERVED", "PAYMENT_AUTHORIZED"),
            OrderCommand::MarkShippingArranged { .. } => ("SHIPPING_ARRANGED", "INVENTORY_RESERVED"),
            OrderCommand::MarkPaymentCaptured { capture_id } => {
                order.capture_id = Some(capture_id.clone());
                return Ok(());
            }
            OrderCommand::Confirm => {
                if order.capture_id.is_none() {
                    order.violations.push("confirmed without capture".into());
                }
                ("CONFIRMED", "SHIPPING_ARRANGED")
            }
            // Not the saga's to send: the customer's (and CreateOrder's) commands.
            OrderCommand::Place(_) | OrderCommand::RequestCancellation { .. } => {
                order.violations.push(format!("the saga sent {}", command.name()));
                return Err(CallError::refused("FAILED_PRECONDITION", "not a saga command"));
            }
            OrderCommand::Cancel { .. } => {
                if order.status == "CONFIRMED" || order.capture_id.is_some() {
                    order.violations.push("cancelled after capture".into());
                    return Err(CallError::refused("FAILED_PRECONDITION", "captured"));
                }
                order.status = "CANCELLED";
                return Ok(());
            }
        };
        if order.status == "CANCELLED" {
            return Err(CallError::refused("FAILED_PRECONDITION", "order cancelled"));
        }
        // Idempotent: a repeat of a command already reflected succeeds quietly.
        if rank(order.status) >= rank(target) {
            return Ok(());
        }
        if order.status != expected_before {
            order
                .violations
                .push(format!("{command:?} while {}", order.status));
        }
        order.status = target;
        Ok(())
    }
}

/// The kind of order a simulated customer places.
fn order_facts(order_id: Uuid, rng: &mut StdRng) -> OrderFacts {
    let roll = rng.random_range(0..100);
    let payment_method = match roll {
        0..=7 => "pm_card_declined",
        8..=12 => "pm_capture_declined",
        _ => "pm_card_visa",
    };
    let product = if (13..=20).contains(&roll) {
        "oos-lamp"
    } else {
        "widget"
    };
    let country = if (21..=27).contains(&roll) { "ZZ" } else { "US" };
    OrderFacts {
        order_id,
        total: "19.98".into(),
        currency: "USD".into(),
        payment_method: payment_method.into(),
        lines: vec![(product.into(), 2), ("gadget".into(), 1)],
        address: ShippingAddress {
            recipient_name: "Ada".into(),
            line1: "1 Main St".into(),
            city: "Springfield".into(),
            line2: String::new(),
            region: String::new(),
            postal_code: "12345".into(),
            country: country.into(),
        },
        traceparent: None,
    }
}

fn start_pool(ports: &SagaPorts, owner: String) -> tokio::task::JoinHandle<()> {
    let (_trigger, stop) = shutdown::channel();
    // Keep the trigger alive inside the task: the pool stops only by abort (a crash).
    let policy = RetryPolicy {
        forward_retries: 50,
        compensation_retries: 50,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(50),
    };
    let lease = Lease {
        owner,
        duration: Duration::from_millis(600),
    };
    let engine = Arc::new(Engine::new(ports.clone(), policy, lease, stop.clone()));
    let settings = PoolSettings {
        workers: 8,
        poll: Duration::from_millis(10),
    };
    tokio::spawn(async move {
        let _trigger = _trigger;
        run_pool(engine, settings, LocalWorkers::default(), stop).await;
    })
}

async fn ledgers_consistent(
    stubs: &StubClients,
    orders: &FakeOrders,
    store: &dyn SagaStore,
    ids: &[(Uuid, Uuid)],
) {
    let ledgers = stubs.ledgers().await;
    let mut reserved_for_confirmed = 0_i64;
    for (saga_id, order_id) in ids {
        let saga = store.get(*saga_id).await.unwrap().unwrap();
        let order = orders
            .orders
            .lock()
            .unwrap()
            .get(order_id)
            .cloned()
            .unwrap_or_default();
        assert!(
            order.violations.is_empty(),
            "order {order_id}: {:?}",
            order.violations
        );
        let oid = order_id.to_string();
        let a: Vec<_> = ledgers
            .authorizations
            .iter()
            .filter(|x| x.order_id == oid)
            .collect();
        let r: Vec<_> = ledgers
            .reservations
            .iter()
            .filter(|x| x.order_id == oid)
            .collect();
        let sh: Vec<_> = ledgers.shipments.iter().filter(|x| x.order_id == oid).collect();
        assert!(
            a.len() <= 1 && r.len() <= 1 && sh.len() <= 1,
            "order {oid}: an effect applied twice"
        );
        match saga.status {
            SagaStatus::Completed => {
                assert_eq!(order.status, "CONFIRMED", "{oid}");
                assert_eq!(
                    (a[0].status(), a[0].capture_count),
                    (AuthorizationStatus::Captured, 1)
                );
                assert_eq!(r[0].status(), ReservationStatus::Reserved);
                assert_eq!(sh[0].status(), ShipmentStatus::Created);
                reserved_for_confirmed += r[0].lines.iter().map(|l| i64::from(l.quantity)).sum::<i64>();
            }
            SagaStatus::Compensated => {
                assert_eq!(order.status, "CANCELLED", "{oid}: {saga:?}");
                assert!(
                    a.iter()
                        .all(|x| x.capture_count == 0 && x.status() == AuthorizationStatus::Voided)
                );
                assert!(a.iter().all(|x| x.void_count == 1), "{oid}: voided once");
                assert!(
                    r.iter().all(|x| x.status() == ReservationStatus::Released),
                    "{oid}"
                );
                assert!(
                    sh.iter().all(|x| x.status() == ShipmentStatus::Cancelled),
                    "{oid}"
                );
            }
            other => panic!("saga {saga_id} ended {other:?}: {saga:?}"),
        }
    }
    let stock = stubs
        .clone()
        .inventory
        .get_stock(GetStockRequest::default())
        .await
        .unwrap()
        .into_inner()
        .levels;
    let reserved: i64 = stock.iter().map(|l| l.reserved).sum();
    assert_eq!(
        reserved, reserved_for_confirmed,
        "stock held == stock of confirmed orders"
    );
    for level in &stock {
        assert_eq!(
            level.on_hand + level.reserved,
            1000,
            "{} conserved",
            level.product_id
        );
    }
}

#[tokio::test]
async fn sagas_end_consistent_through_lost_answers_cancels_and_killed_worker_pools() {
    let seed: u64 = std::env::var("SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let sagas_count = support::scale(60, 300);
    println!("saga simulation seed {seed} ({sagas_count} sagas); rerun with SIM_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let backend = Backend::from_env();
    let isolation = Isolation::new(backend).await;
    let db = isolation.backends().await.db;
    let events: Arc<dyn EventStore> = Stores::on(&db, Upcasters::none(), true).events;
    let units = Stores::on(&db, Upcasters::none(), true).units;
    let store = Stores::on(&db, Upcasters::none(), true).sagas;
    let (url, stubs) = spawn_stubs(&[("STUB_DEFAULT_STOCK", "1000")]).await;
    let urls = SiblingUrls {
        payment: url.clone(),
        inventory: url.clone(),
        shipping: url,
    };
    let siblings: Arc<dyn Siblings> = Arc::new(FaultySiblings {
        inner: GrpcSiblings::new(&urls, Duration::from_millis(250)).unwrap(),
        rng: Mutex::new(StdRng::seed_from_u64(seed ^ 0x5eed)),
        per_mille: 150,
    });
    let orders = Arc::new(FakeOrders::default());

    let mut ids = Vec::new();
    for _ in 0..sagas_count {
        let (saga_id, order_id) = (Uuid::now_v7(), Uuid::now_v7());
        orders
            .facts
            .lock()
            .unwrap()
            .insert(order_id, order_facts(order_id, &mut rng));
        // A few orders time out before they can finish.
        let deadline = if rng.random_range(0..100) < 5 {
            Utc::now()
        } else {
            Utc::now() + TimeDelta::minutes(30)
        };
        let start = SagaStart {
            saga_id,
            order_id,
            customer_id: "sim".into(),
            idempotency_seed: format!("{order_id}/k"),
            deadline,
        };
        units
            .commit(order_unit(order_id, 0, "OrderCreated", SagaWrite::Start(start)))
            .await
            .unwrap();
        ids.push((saga_id, order_id));
    }

    let ports = SagaPorts {
        store: store.clone(),
        units: units.clone(),
        siblings: siblings.clone(),
        orders: orders.clone(),
    };
    let mut pools = vec![start_pool(&ports, "a0".into()), start_pool(&ports, "b0".into())];
    let (mut kills, mut cancels) = (0, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    for round in 1.. {
        tokio::time::sleep(Duration::from_millis(rng.random_range(10..60))).await;
        // A customer cancels some order, whatever state it is in.
        if rng.random_bool(0.5) {
            let (_, order_id) = ids[rng.random_range(0..ids.len())];
            let version = events.stream_version(order_id).await.unwrap();
            let cancel = SagaWrite::RequestCancel(CancelRequest {
                order_id,
                reason: "changed my mind".into(),
            });
            if units
                .commit(order_unit(order_id, version, "CancellationRequested", cancel))
                .await
                .is_ok()
            {
                cancels += 1;
            }
        }
        // A replica dies mid-work (kill -9 of its pool) and a new one starts.
        if rng.random_bool(0.4) {
            let victim = rng.random_range(0..pools.len());
            pools[victim].abort();
            pools[victim] = start_pool(&ports, format!("p{round}"));
            kills += 1;
        }
        let live = store
            .list(
                &SagaFilter {
                    statuses: vec![SagaStatus::Running],
                    ..SagaFilter::default()
                },
                None,
                1,
            )
            .await
            .unwrap()
            .len()
            + store
                .list(
                    &SagaFilter {
                        statuses: vec![SagaStatus::Compensating],
                        ..SagaFilter::default()
                    },
                    None,
                    1,
                )
                .await
                .unwrap()
                .len();
        if live == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "sagas still running after 90 s"
        );
    }
    for pool in &pools {
        pool.abort();
    }
    println!("simulation: {sagas_count} sagas, {kills} pool kills, {cancels} cancel requests");
    ledgers_consistent(&stubs, &orders, store.as_ref(), &ids).await;
}
