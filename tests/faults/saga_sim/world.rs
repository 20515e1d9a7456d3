//! What the simulated engine drives: the real stubs, called in process (no
//! network: the simulation is about the engine; `GrpcSiblings` itself is
//! exercised by the saga suites and the crash test) behind a layer that
//! injects the seeded faults, and orders kept in memory on the real `Order`
//! aggregate. A customer cancel can arrive at any call, as CancelOrder does
//! it: the order records the request and the saga row is flagged.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use commerce::{
    domain::order::{Order, OrderCommand},
    proto::{
        inventory::v1::{
            ReleaseRequest, ReserveRequest, StockLine, inventory_service_server::InventoryService,
        },
        payment::v1::{
            AuthorizeRequest, CaptureRequest, VoidRequest, payment_service_server::PaymentService,
        },
        shipping::v1::{
            CancelShipmentRequest, CreateShipmentRequest, Destination,
            shipping_service_server::ShippingService,
        },
    },
    saga::{
        grpc_siblings::classify,
        ports::{CallError, OrderChange, OrderFacts, OrderPort, Siblings},
    },
    stubs::Stubs,
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{
    chaos::{CallFate, Chaos, Fate},
    store::SimStore,
};

/// Shared by the siblings layer and the order port of one simulation.
#[derive(Clone)]
pub struct World {
    chaos: Chaos,
    store: SimStore,
    stubs: Stubs,
    orders: Arc<Mutex<HashMap<Uuid, Order>>>,
    /// Order commands the aggregate refused: the engine asked for a
    /// transition the order does not allow (must stay empty).
    pub refused_commands: Arc<Mutex<Vec<String>>>,
    current_order: Arc<Mutex<Option<Uuid>>>,
}

fn lost(what: &str) -> CallError {
    CallError::transient("UNAVAILABLE", format!("{what}: simulated fault"))
}

impl World {
    /// A world over `stubs`.
    pub fn new(chaos: Chaos, store: SimStore, stubs: Stubs) -> Self {
        Self {
            chaos,
            store,
            stubs,
            orders: Arc::default(),
            refused_commands: Arc::default(),
            current_order: Arc::default(),
        }
    }

    /// Adds a placed order (the run's), which customer cancels will target.
    pub fn place(&self, order: Order) {
        let id = order.placed.as_ref().expect("placed").order_id;
        self.orders.lock().unwrap().insert(id, order);
        *self.current_order.lock().unwrap() = Some(id);
    }

    /// The order as it stands.
    pub fn order(&self, id: Uuid) -> Order {
        self.orders
            .lock()
            .unwrap()
            .get(&id)
            .cloned()
            .expect("known order")
    }

    /// CancelOrder, as the service does it: the aggregate decides, and when
    /// it records the request the saga is flagged in the same step.
    fn customer_cancel(&self) {
        let Some(id) = *self.current_order.lock().unwrap() else {
            return;
        };
        let mut orders = self.orders.lock().unwrap();
        let order = orders.get_mut(&id).expect("known order");
        let command = OrderCommand::RequestCancellation {
            reason: "customer changed their mind".into(),
            requested_by: "customer".into(),
        };
        if let Ok(events) = order.handle(command) {
            for event in &events {
                order.apply(event);
            }
            self.store.request_cancel(id, "customer changed their mind");
            self.chaos.note("cancel accepted".into());
        }
    }

    /// Runs `call` under the fate the chaos picks for it.
    async fn guarded<T, F>(&self, what: &str, call: F) -> Result<T, CallError>
    where
        F: Future<Output = Result<T, CallError>>,
    {
        let fate = self.chaos.fate_of_call(what);
        if self.chaos.take_cancel() {
            self.customer_cancel();
        }
        let result = match fate {
            CallFate::Process(Fate::Dead | Fate::CrashBefore) | CallFate::FailBefore => {
                return Err(lost(what));
            }
            CallFate::LoseAnswer | CallFate::Process(Fate::CrashAfter) => {
                let _ = call.await;
                return Err(lost(what));
            }
            CallFate::Process(Fate::Proceed) => call.await,
        };
        let outcome = match &result {
            Ok(_) => "ok".to_string(),
            Err(e) => format!("{:?} {}", e.kind, e.code),
        };
        self.chaos.note(format!("{what} -> {outcome}"));
        result
    }
}

/// A stub's answer as the saga's port sees it.
fn answer<T>(result: Result<Response<T>, Status>) -> Result<T, CallError> {
    result.map(Response::into_inner).map_err(|s| classify(&s))
}

#[async_trait]
impl Siblings for World {
    async fn authorize(&self, key: &str, order: &OrderFacts) -> Result<String, CallError> {
        let request = AuthorizeRequest {
            idempotency_key: key.into(),
            order_id: order.order_id.to_string(),
            amount: order.total.clone(),
            currency: order.currency.clone(),
            payment_method: order.payment_method.clone(),
        };
        let call = async { answer(self.stubs.payment.authorize(Request::new(request)).await) };
        Ok(self.guarded("authorize", call).await?.authorization_id)
    }

    async fn capture(&self, key: &str, authorization_id: &str) -> Result<String, CallError> {
        let request = CaptureRequest {
            idempotency_key: key.into(),
            authorization_id: authorization_id.into(),
        };
        let call = async { answer(self.stubs.payment.capture(Request::new(request)).await) };
        Ok(self.guarded("capture", call).await?.capture_id)
    }

    async fn void(&self, key: &str, authorization_id: &str) -> Result<(), CallError> {
        let request = VoidRequest {
            idempotency_key: key.into(),
            authorization_id: authorization_id.into(),
        };
        let call = async { answer(self.stubs.payment.void(Request::new(request)).await) };
        self.guarded("void", call).await.map(drop)
    }

    async fn reserve(&self, key: &str, order: &OrderFacts) -> Result<String, CallError> {
        let request = ReserveRequest {
            idempotency_key: key.into(),
            order_id: order.order_id.to_string(),
            lines: order
                .lines
                .iter()
                .map(|(product_id, quantity)| StockLine {
                    product_id: product_id.clone(),
                    quantity: *quantity,
                })
                .collect(),
        };
        let call = async { answer(self.stubs.inventory.reserve(Request::new(request)).await) };
        Ok(self.guarded("reserve", call).await?.reservation_id)
    }

    async fn release(&self, key: &str, reservation_id: &str) -> Result<(), CallError> {
        let request = ReleaseRequest {
            idempotency_key: key.into(),
            reservation_id: reservation_id.into(),
        };
        let call = async { answer(self.stubs.inventory.release(Request::new(request)).await) };
        self.guarded("release", call).await.map(drop)
    }

    async fn create_shipment(&self, key: &str, order: &OrderFacts) -> Result<(String, String), CallError> {
        let a = &order.address;
        let request = CreateShipmentRequest {
            idempotency_key: key.into(),
            order_id: order.order_id.to_string(),
            destination: Some(Destination {
                recipient_name: a.recipient_name.clone(),
                line1: a.line1.clone(),
                line2: a.line2.clone(),
                city: a.city.clone(),
                region: a.region.clone(),
                postal_code: a.postal_code.clone(),
                country: a.country.clone(),
            }),
            item_count: order.item_count(),
        };
        let call = async { answer(self.stubs.shipping.create_shipment(Request::new(request)).await) };
        let response = self.guarded("create_shipment", call).await?;
        Ok((response.shipment_id, response.tracking_number))
    }

    async fn cancel_shipment(&self, key: &str, shipment_id: &str) -> Result<(), CallError> {
        let request = CancelShipmentRequest {
            idempotency_key: key.into(),
            shipment_id: shipment_id.into(),
        };
        let call = async { answer(self.stubs.shipping.cancel_shipment(Request::new(request)).await) };
        self.guarded("cancel_shipment", call).await.map(drop)
    }
}

#[async_trait]
impl OrderPort for World {
    async fn facts(&self, order_id: Uuid) -> Result<OrderFacts, CallError> {
        if self.chaos.is_dead() {
            return Err(lost("facts"));
        }
        Ok(OrderFacts::of_order(order_id, &self.order(order_id), None).expect("placed"))
    }

    /// Applies the commands to the in-memory order at once (the simulation
    /// keeps no event store, so there is no change left to commit).
    async fn decide(
        &self,
        order_id: Uuid,
        _basis: Option<Order>,
        commands: Vec<OrderCommand>,
    ) -> Result<Option<OrderChange>, CallError> {
        // The commands apply at once and in turn (this world has no unit of
        // work to commit them with); the call's fate is the last one's.
        let name = commands.last().map_or("none", OrderCommand::name);
        let orders = self.orders.clone();
        let refused = self.refused_commands.clone();
        self.guarded(name, async move {
            let mut orders = orders.lock().unwrap();
            let order = orders.get_mut(&order_id).expect("known order");
            for command in commands {
                let name = command.name();
                match order.handle(command) {
                    Ok(events) => {
                        for event in &events {
                            order.apply(event);
                        }
                    }
                    Err(e) => {
                        refused.lock().unwrap().push(format!("{name}: {e}"));
                        return Err(CallError::refused("LOCAL", e.to_string()));
                    }
                }
            }
            Ok(None)
        })
        .await
    }
}
