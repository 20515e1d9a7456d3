//! The fulfillment saga of an app in process: orders placed to start one, the
//! saga as SagaAdmin shows it, the order's own state and the stubs' ledgers.

use std::time::Duration;

use commerce::{
    domain::order::OrderStatus,
    proto::{
        commerce::v1::{
            Address, CreateOrderRequest, GetSagaRequest, Order, Saga, SagaStatus, SagaStepStatus,
        },
        inventory::v1::{ListReservationsRequest, Reservation},
        payment::v1::{Authorization, ListAuthorizationsRequest},
        shipping::v1::{ListShipmentsRequest, Shipment},
    },
};
use uuid::Uuid;

use crate::support::{
    app::{TestApp, authed},
    eventually,
    orders::{address, order_request, place_order},
    stubs::StubClients,
};

/// What an order is made of in these tests.
pub struct OrderSpec<'a> {
    /// Cart lines: (product, quantity).
    pub lines: &'a [(&'a str, i32)],
    /// Payment method (magic values steer the payment stub).
    pub payment_method: &'a str,
    /// Shipping country (`ZZ` is unshippable).
    pub country: &'a str,
}

impl Default for OrderSpec<'_> {
    fn default() -> Self {
        Self {
            lines: &[("book", 2), ("pen", 1)],
            payment_method: "pm_card_visa",
            country: "US",
        }
    }
}

/// Places an order for `customer` through CartService and CreateOrder.
pub async fn place(app: &TestApp, customer: &str, spec: OrderSpec<'_>) -> Order {
    let token = app.customer(customer);
    let items: Vec<_> = spec
        .lines
        .iter()
        .map(|(product, quantity)| (*product, *quantity, "10.00"))
        .collect();
    let request = |cart_id: &str| CreateOrderRequest {
        payment_method: spec.payment_method.into(),
        shipping_address: Some(Address {
            country: spec.country.into(),
            ..address()
        }),
        ..order_request(cart_id, &format!("{customer}-order"))
    };
    let order = place_order(&app.channel, &token, &items, request, &[]).await;
    assert!(!order.saga_id.is_empty(), "the saga starts with the order");
    order
}

/// The saga as SagaAdmin shows it.
pub async fn saga(app: &TestApp, saga_id: &str) -> Saga {
    let request = GetSagaRequest {
        saga_id: saga_id.into(),
    };
    app.sagas()
        .get_saga(authed(request, &app.admin()))
        .await
        .unwrap()
        .into_inner()
        .saga
        .unwrap()
}

/// Waits (up to 15 s) until the saga reaches `status`.
pub async fn wait_saga(app: &TestApp, saga_id: &str, status: SagaStatus) -> Saga {
    let reached = eventually(Duration::from_secs(15), || async {
        let current = saga(app, saga_id).await;
        (current.status() == status).then_some(current)
    })
    .await;
    match reached {
        Some(current) => current,
        None => panic!("saga never reached {status:?}: {:#?}", saga(app, saga_id).await),
    }
}

/// The order's status and cancellation reason, folded from its stream.
pub async fn order_state(app: &TestApp, order_id: &str) -> (OrderStatus, Option<String>) {
    let id = Uuid::parse_str(order_id).unwrap();
    let loaded = app.app.orders.load_until(id, None).await.unwrap().unwrap();
    (loaded.order.status, loaded.order.cancellation_reason)
}

/// Clients of the stubs the app calls (embedded in it).
pub fn stubs(app: &TestApp) -> StubClients {
    StubClients::at(&app.app.sagas.sibling_urls().payment)
}

/// The three ledgers' entries for one order.
pub async fn ledger(app: &TestApp, order_id: &str) -> (Vec<Authorization>, Vec<Reservation>, Vec<Shipment>) {
    let mut s = stubs(app);
    let order_id = order_id.to_string();
    let auths = s
        .payment
        .list_authorizations(ListAuthorizationsRequest {
            order_id: order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .authorizations;
    let reservations = s
        .inventory
        .list_reservations(ListReservationsRequest {
            order_id: order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .reservations;
    let shipments = s
        .shipping
        .list_shipments(ListShipmentsRequest { order_id })
        .await
        .unwrap()
        .into_inner()
        .shipments;
    (auths, reservations, shipments)
}

pub fn step_statuses(saga: &Saga) -> Vec<(String, SagaStepStatus)> {
    saga.steps.iter().map(|s| (s.name.clone(), s.status())).collect()
}
