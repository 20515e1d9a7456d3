//! The sibling stubs (payment, inventory, shipping): clients and standalone
//! instances, and the requests the stub tests send.

use std::collections::HashMap;

use commerce::{
    config::Config,
    proto::{
        inventory::v1::{
            ListReservationsRequest, Reservation, ReserveRequest, StockLine,
            inventory_service_client::InventoryServiceClient,
        },
        payment::v1::{
            Authorization, AuthorizeRequest, ListAuthorizationsRequest,
            payment_service_client::PaymentServiceClient,
        },
        shipping::v1::{
            CreateShipmentRequest, Destination, ListShipmentsRequest, Shipment,
            shipping_service_client::ShippingServiceClient,
        },
    },
    stubs::{Stubs, serve_stubs},
};
use tonic::transport::Channel;

/// Clients of one set of stubs (embedded in a test app, or standalone).
#[derive(Clone)]
pub struct StubClients {
    /// Payment.
    pub payment: PaymentServiceClient<Channel>,
    /// Inventory.
    pub inventory: InventoryServiceClient<Channel>,
    /// Shipping.
    pub shipping: ShippingServiceClient<Channel>,
}

impl StubClients {
    /// Clients of the stubs at `url` (all three on one address).
    pub fn at(url: &str) -> Self {
        let channel = Channel::from_shared(url.to_string()).unwrap().connect_lazy();
        Self {
            payment: PaymentServiceClient::new(channel.clone()),
            inventory: InventoryServiceClient::new(channel.clone()),
            shipping: ShippingServiceClient::new(channel),
        }
    }

    /// The three ledgers, read one after the other: what the stubs did, for
    /// the outcome checks of the saga tests.
    pub async fn ledgers(&self) -> Ledgers {
        let mut clients = self.clone();
        Ledgers {
            authorizations: clients
                .payment
                .list_authorizations(ListAuthorizationsRequest::default())
                .await
                .unwrap()
                .into_inner()
                .authorizations,
            reservations: clients
                .inventory
                .list_reservations(ListReservationsRequest::default())
                .await
                .unwrap()
                .into_inner()
                .reservations,
            shipments: clients
                .shipping
                .list_shipments(ListShipmentsRequest::default())
                .await
                .unwrap()
                .into_inner()
                .shipments,
        }
    }
}

/// Every authorization, reservation and shipment a set of stubs recorded.
pub struct Ledgers {
    /// The payment stub's authorizations (captures and voids included).
    pub authorizations: Vec<Authorization>,
    /// The inventory stub's reservations.
    pub reservations: Vec<Reservation>,
    /// The shipping stub's shipments.
    pub shipments: Vec<Shipment>,
}

/// Standalone stubs on a random loopback port with `overrides` (STUB_* vars).
pub async fn spawn_stubs(overrides: &[(&str, &str)]) -> (String, StubClients) {
    let vars: HashMap<String, String> = overrides
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let config = Config::from_vars(&vars).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve_stubs(
        listener,
        Stubs::from_settings(&config.stubs),
        std::future::pending(),
    ));
    (url.clone(), StubClients::at(&url))
}

pub fn authorize(key: &str, order: &str, method: &str) -> AuthorizeRequest {
    AuthorizeRequest {
        idempotency_key: key.into(),
        order_id: order.into(),
        amount: "59.98".into(),
        currency: "USD".into(),
        payment_method: method.into(),
    }
}

pub fn reserve(key: &str, order: &str, lines: &[(&str, i32)]) -> ReserveRequest {
    ReserveRequest {
        idempotency_key: key.into(),
        order_id: order.into(),
        lines: lines
            .iter()
            .map(|(p, q)| StockLine {
                product_id: p.to_string(),
                quantity: *q,
            })
            .collect(),
    }
}

pub fn shipment(key: &str, order: &str, country: &str) -> CreateShipmentRequest {
    CreateShipmentRequest {
        idempotency_key: key.into(),
        order_id: order.into(),
        destination: Some(Destination {
            recipient_name: "Ada".into(),
            line1: "1 Main St".into(),
            city: "Springfield".into(),
            postal_code: "12345".into(),
            country: country.into(),
            ..Default::default()
        }),
        item_count: 2,
    }
}
