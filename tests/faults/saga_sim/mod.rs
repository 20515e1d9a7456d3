//! A deterministic simulation of the saga engine: the real [`Engine`] and
//! plan, the real stubs (called in process) and the real `Order` aggregate, with an in-memory saga store and virtual time.
//! One seeded generator decides every fault: transient failures before a
//! sibling applies, answers lost after it applied, process crashes before or
//! after any store write, sibling call or order command, customer cancels
//! arriving mid-step, and an operator retrying what runs out of retries.
//! After every run the invariants are checked on the stubs' ledgers and the
//! order; a seed replays a run exactly (`FAULT_SEED=...`).
//!
//! Thousands of runs in seconds; `LONG_TESTS=1` runs 50,000.

mod chaos;
mod store;
mod world;

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::{TimeDelta, Utc};
use commerce::{
    app::sagas::{RetryInput, SagaApp},
    auth::{Principal, Role},
    config::Config,
    domain::{
        cart::CartItem,
        money::{Currency, Money},
        order::{Order, OrderCommand, OrderStatus, PersonalData, PlaceOrder, ShippingAddress},
    },
    proto::{
        inventory::v1::{
            GetStockRequest, ListReservationsRequest, SetStockRequest,
            inventory_service_server::InventoryService,
        },
        payment::v1::{ListAuthorizationsRequest, payment_service_server::PaymentService},
        shipping::v1::{ListShipmentsRequest, shipping_service_server::ShippingService},
    },
    saga::{
        engine::Engine,
        grpc_siblings::SiblingUrls,
        plan::{RetryPolicy, SagaStatus},
        ports::SagaPorts,
    },
    shutdown::{self, Shutdown, ShutdownTrigger},
    store::saga::{Lease, SagaStore},
    stubs::{self, Stubs},
};
use rand::Rng;
use tonic::Request;
use uuid::Uuid;

use self::{
    chaos::{Chaos, Figures, Rates},
    store::SimStore,
    world::World,
};
use crate::support::{
    self,
    ledgers::{End, OrderLedgers, check_order, check_stock},
};

/// One simulation: stubs, store, world and the operator.
struct Sim {
    chaos: Chaos,
    store: SimStore,
    world: World,
    stubs: Stubs,
    operator: SagaApp,
    shutdown: Shutdown,
    _stop: ShutdownTrigger,
    incarnation: u64,
    tally: Tally,
}

/// What the runs came to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Tally {
    runs: u64,
    confirmed: u64,
    cancelled: u64,
    operator_retries: u64,
    violations: Vec<String>,
}

/// The inputs of one run.
struct Scenario {
    order_id: Uuid,
    saga_id: Uuid,
    lines: Vec<(String, u32)>,
    stock: HashMap<String, i64>,
    payment_method: String,
    country: String,
    deadline_passed: bool,
    /// A sibling will refuse (declined, capture declined, out of stock, unshippable).
    refused: bool,
}

const POLICY: RetryPolicy = RetryPolicy {
    forward_retries: 3,
    compensation_retries: 10,
    base_delay: Duration::from_millis(1),
    max_delay: Duration::from_millis(1),
};

impl Sim {
    async fn start(seed: u64, rates: Rates) -> Self {
        let config = Config::from_vars(&HashMap::new()).expect("default config");
        let stubs = Stubs::from_settings(&config.stubs);
        let (stop, shutdown) = shutdown::channel();
        // Only the operator API wants URLs; nothing is reached through them.
        let urls = SiblingUrls {
            payment: "http://127.0.0.1:1".into(),
            inventory: "http://127.0.0.1:1".into(),
            shipping: "http://127.0.0.1:1".into(),
        };
        let chaos = Chaos::new(seed, rates);
        let store = SimStore::new(chaos.clone());
        let world = World::new(chaos.clone(), store.clone(), stubs.clone());
        let parts = SagaPorts {
            store: Arc::new(store.clone()),
            units: Arc::new(store.clone()),
            siblings: Arc::new(world.clone()),
            orders: Arc::new(world.clone()),
        };
        let operator = SagaApp::with_parts(config.saga, parts, urls);
        Self {
            chaos,
            store,
            world,
            stubs,
            operator,
            shutdown,
            _stop: stop,
            incarnation: 0,
            tally: Tally::default(),
        }
    }

    fn engine(&self) -> Engine {
        let ports = SagaPorts {
            store: Arc::new(self.store.clone()),
            units: Arc::new(self.store.clone()),
            siblings: Arc::new(self.world.clone()),
            orders: Arc::new(self.world.clone()),
        };
        Engine::new(ports, POLICY, self.lease(), self.shutdown.clone())
    }

    fn lease(&self) -> Lease {
        Lease {
            owner: format!("sim-{}", self.incarnation),
            duration: Duration::from_secs(60),
        }
    }

    fn scenario(&self, run: u64) -> Scenario {
        self.chaos.with_rng(|rng| {
            let uuid = |rng: &mut rand::rngs::StdRng| Uuid::from_u128(rng.random());
            let (order_id, saga_id) = (uuid(rng), uuid(rng));
            let count = rng.random_range(1..=3);
            let lines: Vec<(String, u32)> = (0..count)
                .map(|i| (format!("sim-{order_id}-{i}"), rng.random_range(1..=3)))
                .collect();
            let short = rng.random_range(0..100) < 6;
            let stock = lines
                .iter()
                .enumerate()
                .map(|(i, (p, q))| (p.clone(), if short && i == 0 { i64::from(*q) - 1 } else { 10 }))
                .collect();
            let payment_method = match rng.random_range(0..100) {
                0..6 => stubs::payment::DECLINED,
                6..12 => stubs::payment::CAPTURE_DECLINED,
                _ => "pm_card_visa",
            }
            .to_string();
            let country = if rng.random_range(0..100) < 6 { "ZZ" } else { "US" }.to_string();
            let deadline_passed = rng.random_range(0..100) < 4;
            let refused = short || payment_method != "pm_card_visa" || country == "ZZ";
            let _ = run;
            Scenario {
                order_id,
                saga_id,
                lines,
                stock,
                payment_method,
                country,
                deadline_passed,
                refused,
            }
        })
    }

    async fn place(&self, s: &Scenario) {
        for (product_id, on_hand) in &s.stock {
            let request = SetStockRequest {
                product_id: product_id.clone(),
                on_hand: *on_hand,
            };
            self.stubs
                .inventory
                .set_stock(Request::new(request))
                .await
                .unwrap();
        }
        let items = s
            .lines
            .iter()
            .map(|(product_id, quantity)| CartItem {
                product_id: product_id.clone(),
                product_name: "Simulated".into(),
                quantity: *quantity,
                unit_price: Money::from_minor_units(1999, Currency::Usd),
            })
            .collect();
        let address = ShippingAddress {
            recipient_name: "Sim".into(),
            line1: "1 Loop Road".into(),
            line2: String::new(),
            city: "Simcity".into(),
            region: String::new(),
            postal_code: "12345".into(),
            country: s.country.clone(),
        };
        let place = PlaceOrder {
            order_id: s.order_id,
            customer_id: "sim-customer".into(),
            cart_id: Uuid::nil(),
            items,
            currency: Currency::Usd,
            personal: PersonalData {
                shipping_address: address,
                payment_method: s.payment_method.clone(),
            },
            saga_id: Some(s.saga_id),
        };
        let mut order = Order::default();
        for event in order
            .handle(OrderCommand::Place(Box::new(place)))
            .expect("placeable")
        {
            order.apply(&event);
        }
        self.world.place(order);
        let deadline = if s.deadline_passed {
            Utc::now() - TimeDelta::minutes(1)
        } else {
            Utc::now() + TimeDelta::days(1)
        };
        self.store
            .insert(s.saga_id, s.order_id, format!("{}/sim-key", s.order_id), deadline);
    }

    /// Drives the run's saga to its end: restarts after crashes, operator
    /// retries after FAILED; false if it got stuck.
    async fn drive(&mut self, saga_id: Uuid) -> bool {
        self.chaos.restart(&self.lease().owner);
        let mut engine = self.engine();
        for _ in 0..400 {
            let claimed = self.store.claim_due(engine.lease(), 1).await.unwrap();
            if let Some(record) = claimed.into_iter().next() {
                let _ = engine.drive(record).await;
                if self.chaos.is_dead() {
                    // kill -9: the lease expires, a new process takes over.
                    self.store.expire_leases_of(&engine.lease().owner);
                    self.incarnation += 1;
                    self.chaos.restart(&self.lease().owner);
                    engine = self.engine();
                }
                continue;
            }
            let record = self.store.record(saga_id).expect("saga exists");
            match record.status {
                s if s.is_terminal() => return true,
                SagaStatus::Failed | SagaStatus::CompensationFailed => {
                    self.tally.operator_retries += 1;
                    let admin = Principal {
                        subject: "sim-operator".into(),
                        roles: vec![Role::Admin],
                    };
                    let input = RetryInput {
                        saga_id: saga_id.to_string(),
                        reason: "simulated operator".into(),
                        ..Default::default()
                    };
                    self.operator
                        .retry(&admin, input)
                        .await
                        .expect("operator retry accepted");
                }
                _ => return false,
            }
        }
        false
    }

    async fn run_once(&mut self, run: u64) {
        self.chaos.begin_run();
        let s = self.scenario(run);
        self.place(&s).await;
        let finished = self.drive(s.saga_id).await;
        self.tally.runs += 1;
        let record = self.store.record(s.saga_id).expect("saga exists");
        let order = self.world.order(s.order_id);
        let mut violations = Vec::new();
        let end = match (finished, record.status, order.status) {
            (true, SagaStatus::Completed, OrderStatus::Confirmed) => End::Confirmed,
            (true, SagaStatus::Compensated, OrderStatus::Cancelled) => End::Cancelled,
            (finished, saga, order) => {
                self.tally.violations.push(format!(
                    "run {run}: saga {} ended {saga:?} (finished {finished}) with the order {order:?}",
                    s.saga_id
                ));
                return;
            }
        };
        self.chaos.note(format!("end {end:?}"));
        match end {
            End::Confirmed => self.tally.confirmed += 1,
            End::Cancelled => self.tally.cancelled += 1,
        }
        if end == End::Confirmed && (s.refused || s.deadline_passed) {
            violations.push("confirmed although a sibling refuses or the deadline passed".into());
        }
        let cancel_asked = order.cancellation_requested.is_some();
        if end == End::Cancelled && !(s.refused || s.deadline_passed || cancel_asked) {
            violations.push("cancelled without a refusal, a timeout or a customer cancel".into());
        }
        if end == End::Cancelled && order.is_captured() {
            violations.push("cancelled after the capture was recorded".into());
        }
        let ledgers = self.ledgers(s.order_id).await;
        violations.extend(check_order(&s.order_id.to_string(), end, &ledgers));
        let levels = self
            .stubs
            .inventory
            .get_stock(Request::new(GetStockRequest {
                product_ids: s.stock.keys().cloned().collect(),
            }))
            .await
            .unwrap()
            .into_inner()
            .levels;
        violations.extend(check_stock(&s.stock, &levels, &ledgers.reservations));
        violations.extend(self.world.refused_commands.lock().unwrap().drain(..));
        self.tally.violations.extend(
            violations
                .into_iter()
                .map(|v| format!("run {run} (saga {}): {v}", s.saga_id)),
        );
    }

    async fn ledgers(&self, order_id: Uuid) -> OrderLedgers {
        let order_id = order_id.to_string();
        let payment = &self.stubs.payment;
        let authorizations = payment
            .list_authorizations(Request::new(ListAuthorizationsRequest {
                order_id: order_id.clone(),
            }))
            .await
            .unwrap()
            .into_inner()
            .authorizations;
        let reservations = self
            .stubs
            .inventory
            .list_reservations(Request::new(ListReservationsRequest {
                order_id: order_id.clone(),
            }))
            .await
            .unwrap()
            .into_inner()
            .reservations;
        let shipments = self
            .stubs
            .shipping
            .list_shipments(Request::new(ListShipmentsRequest { order_id }))
            .await
            .unwrap()
            .into_inner()
            .shipments;
        OrderLedgers {
            authorizations,
            reservations,
            shipments,
        }
    }
}

const RATES: Rates = Rates {
    crash: 60,
    fault: 150,
    cancel: 25,
    max_crashes: 6,
};

/// Runs per simulation: a long run is a sequence of fresh simulations (the
/// stubs' ledgers and the store grow with every run, and scanning them would
/// make a long run quadratic), each seeded from the run's seed.
const RUNS_PER_SIM: u64 = 1_000;

async fn simulate(seed: u64, runs: u64) -> (Tally, Figures, Vec<String>) {
    let (mut tally, mut figures, mut trace) = (Tally::default(), Figures::default(), Vec::new());
    for chunk in 0..runs.div_ceil(RUNS_PER_SIM) {
        let mut sim = Sim::start(
            seed.wrapping_add(chunk.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            RATES,
        )
        .await;
        for run in chunk * RUNS_PER_SIM..runs.min((chunk + 1) * RUNS_PER_SIM) {
            sim.run_once(run).await;
        }
        let (t, f) = (sim.tally.clone(), sim.chaos.figures());
        tally.runs += t.runs;
        tally.confirmed += t.confirmed;
        tally.cancelled += t.cancelled;
        tally.operator_retries += t.operator_retries;
        tally.violations.extend(t.violations);
        figures.operations += f.operations;
        figures.crashes += f.crashes;
        figures.faults_before += f.faults_before;
        figures.lost_answers += f.lost_answers;
        figures.cancels += f.cancels;
        trace.extend(sim.chaos.trace());
    }
    (tally, figures, trace)
}

#[tokio::test(flavor = "current_thread")]
async fn the_saga_engine_keeps_every_invariant_through_thousands_of_seeded_crashes_and_faults() {
    let seed = support::seed("saga simulation");
    let runs = support::scale(2_000, 50_000) as u64;
    let started = std::time::Instant::now();
    let (tally, figures, _) = simulate(seed, runs).await;
    println!(
        "saga simulation: seed {seed}, {} runs in {:.1?}: {} confirmed, {} cancelled; {} operations, \
         {} crashes, {} transient faults, {} lost answers, {} customer cancels, {} operator retries; \
         {} violations",
        tally.runs,
        started.elapsed(),
        tally.confirmed,
        tally.cancelled,
        figures.operations,
        figures.crashes,
        figures.faults_before,
        figures.lost_answers,
        figures.cancels,
        tally.operator_retries,
        tally.violations.len()
    );
    assert!(
        tally.violations.is_empty(),
        "seed {seed}: {} violations, first: {:#?}",
        tally.violations.len(),
        &tally.violations[..tally.violations.len().min(10)]
    );
    // The mix exercised what it claims to.
    assert!(tally.confirmed > 0 && tally.cancelled > 0, "{tally:?}");
    assert!(
        figures.crashes > runs / 10 && figures.lost_answers > 0 && figures.cancels > 0,
        "{figures:?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_seed_replays_the_same_simulation_step_for_step() {
    let seed = support::seed("saga simulation replay");
    let (first, first_figures, first_trace) = simulate(seed, 60).await;
    let (second, second_figures, second_trace) = simulate(seed, 60).await;
    assert_eq!(first, second);
    assert_eq!(first_figures, second_figures);
    assert_eq!(first_trace, second_trace);
    assert!(first_trace.len() > 300, "{} trace lines", first_trace.len());
}
