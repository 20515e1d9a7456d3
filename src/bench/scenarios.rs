//! The workloads, each a [`Worker`] over real tonic clients.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tonic::{metadata::AsciiMetadataValue, transport::Channel};

use super::runner::Worker;
use crate::proto::commerce::v1::{
    AddItemRequest, Address, CreateCartRequest, CreateOrderRequest, GetCartRequest, GetOrderRequest,
    ListOrdersRequest, OrderStatus, WatchOrderRequest, cart_service_client::CartServiceClient,
    order_service_client::OrderServiceClient,
};

/// The scenarios `commerce bench` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// AddItem / GetCart, half and half, on each worker's own cart.
    CartOps,
    /// AddItem only, on each worker's own cart.
    AddItem,
    /// CreateCart + AddItem + CreateOrder: one order placed per operation.
    OrderPlacement,
    /// An order placed and watched until CONFIRMED: saga end to end, timed from CreateOrder
    /// sent to CONFIRMED seen (its cart is filled before the clock starts).
    Fulfillment,
    /// GetOrder / ListOrders on orders placed beforehand.
    ReadQueries,
    // These docs are `commerce bench --help` text (clap shows them as written): no rustdoc links.
    /// The ceiling: a bare tonic health Check on a server with nothing else, started as a
    /// child process.
    HelloCeiling,
    /// The peer's workload on our event store in-process, group commit on and off;
    /// PostgreSQL only.
    StoreAppend,
    /// A named consumer of the public event feed far behind (--catch-up-events) catches up:
    /// events/s and memory; in-process, on a fresh database.
    EventCatchUp,
    /// The running projections catch up a backlog the bus never carried (--projection-events
    /// seeded first): events/s per projection and memory; in-process, on a fresh database.
    ProjectionCatchUp,
}

impl Scenario {
    /// Name in the output.
    pub fn name(self) -> &'static str {
        match self {
            Self::CartOps => "cart_ops",
            Self::AddItem => "add_item",
            Self::OrderPlacement => "order_placement",
            Self::Fulfillment => "fulfillment",
            Self::ReadQueries => "read_queries",
            Self::HelloCeiling => "hello_ceiling",
            Self::StoreAppend => "store_append",
            Self::EventCatchUp => "event_catch_up",
            Self::ProjectionCatchUp => "projection_catch_up",
        }
    }

    /// Runs in this process on a database of its own, without the server the bench starts.
    pub fn in_process(self) -> bool {
        matches!(
            self,
            Self::StoreAppend | Self::EventCatchUp | Self::ProjectionCatchUp
        )
    }
}

/// What every worker is built from.
#[derive(Clone)]
pub struct Target {
    /// Channels to the server (requests spread over them).
    pub channels: Vec<Channel>,
    /// Mints a customer token.
    pub token: std::sync::Arc<dyn Fn(&str) -> String + Send + Sync>,
}

/// `message` with `token` as its bearer token.
pub(super) fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    with_authorization(message, &authorization(token))
}

/// The `authorization` value of `token` (`Bearer` alone if the token is not ASCII: the server
/// refuses it).
fn authorization(token: &str) -> AsciiMetadataValue {
    format!("Bearer {token}")
        .parse()
        .unwrap_or_else(|_| AsciiMetadataValue::from_static("Bearer"))
}

/// `message` with an `authorization` value made once per session: a clone is a reference
/// count, where parsing it again per call would be the load generator's work, not the server's.
fn with_authorization<T>(message: T, authorization: &AsciiMetadataValue) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", authorization.clone());
    request
}

/// A customer session: its token and clients.
struct Session {
    token: AsciiMetadataValue,
    carts: CartServiceClient<Channel>,
    orders: OrderServiceClient<Channel>,
    placed: u64,
    customer: String,
}

impl Session {
    fn new(target: &Target, worker: usize, run: &str) -> Self {
        let channel = target.channels[worker % target.channels.len()].clone();
        let customer = format!("bench-{run}-{worker}");
        Self {
            token: authorization(&(target.token)(&customer)),
            carts: CartServiceClient::new(channel.clone()),
            orders: OrderServiceClient::new(channel),
            placed: 0,
            customer,
        }
    }

    async fn cart_with_item(&mut self) -> anyhow::Result<String> {
        let cart = self
            .carts
            .create_cart(with_authorization(CreateCartRequest::default(), &self.token))
            .await?
            .into_inner()
            .cart
            .context("no cart")?;
        self.carts
            .add_item(with_authorization(
                AddItemRequest {
                    cart_id: cart.cart_id.clone(),
                    product_id: "sku-bench-1".into(),
                    product_name: "Bench widget".into(),
                    quantity: 2,
                    unit_price: "29.99".into(),
                    expected_version: None,
                },
                &self.token,
            ))
            .await?;
        Ok(cart.cart_id)
    }

    /// Places one order; returns its id.
    async fn place_order(&mut self) -> anyhow::Result<String> {
        let cart_id = self.cart_with_item().await?;
        self.create_order(cart_id).await
    }

    /// Checks out `cart_id`; returns the order's id.
    async fn create_order(&mut self, cart_id: String) -> anyhow::Result<String> {
        self.placed += 1;
        let order = self
            .orders
            .create_order(with_authorization(
                CreateOrderRequest {
                    cart_id,
                    payment_method: "pm_card_visa".into(),
                    shipping_address: Some(Address {
                        recipient_name: "Bench Customer".into(),
                        line1: "1 Load Street".into(),
                        line2: String::new(),
                        city: "Springfield".into(),
                        region: "IL".into(),
                        postal_code: "62701".into(),
                        country: "US".into(),
                    }),
                    idempotency_key: format!("{}-{}", self.customer, self.placed),
                },
                &self.token,
            ))
            .await?
            .into_inner()
            .order
            .context("no order")?;
        Ok(order.order_id)
    }
}

/// Builds `concurrency` workers of `scenario`.
pub async fn workers(
    scenario: Scenario,
    target: &Target,
    concurrency: usize,
    run: &str,
) -> anyhow::Result<Vec<Box<dyn Worker>>> {
    let mut workers: Vec<Box<dyn Worker>> = Vec::with_capacity(concurrency);
    for i in 0..concurrency {
        let mut session = Session::new(target, i, &format!("{run}-{}", scenario.name()));
        workers.push(match scenario {
            Scenario::CartOps | Scenario::AddItem => {
                let cart = session
                    .carts
                    .create_cart(with_authorization(CreateCartRequest::default(), &session.token))
                    .await?
                    .into_inner()
                    .cart
                    .context("no cart")?;
                Box::new(CartOps {
                    session,
                    cart_id: cart.cart_id,
                    n: 0,
                    reads: scenario == Scenario::CartOps,
                })
            }
            Scenario::OrderPlacement => Box::new(OrderPlacement { session }),
            Scenario::Fulfillment => Box::new(Fulfillment {
                session,
                cart_id: None,
            }),
            Scenario::StoreAppend | Scenario::EventCatchUp | Scenario::ProjectionCatchUp => {
                bail!("{} runs in-process, not against the server", scenario.name())
            }
            Scenario::HelloCeiling => Box::new(super::hello::HelloWorker(
                tonic_health::pb::health_client::HealthClient::new(
                    target.channels[i % target.channels.len()].clone(),
                ),
            )),
            Scenario::ReadQueries => {
                let mut order_ids = Vec::new();
                for _ in 0..5 {
                    order_ids.push(session.place_order().await?);
                }
                Box::new(ReadQueries {
                    session,
                    order_ids,
                    n: 0,
                })
            }
        });
    }
    Ok(workers)
}

struct CartOps {
    session: Session,
    cart_id: String,
    n: u64,
    /// Every other operation a GetCart (else AddItem only).
    reads: bool,
}

#[tonic::async_trait]
impl Worker for CartOps {
    async fn op(&mut self) -> anyhow::Result<()> {
        self.n += 1;
        let token = &self.session.token;
        if self.reads && self.n.is_multiple_of(2) {
            self.session
                .carts
                .get_cart(with_authorization(
                    GetCartRequest {
                        cart_id: self.cart_id.clone(),
                    },
                    token,
                ))
                .await?;
        } else {
            // 40 products in rotation; AddItem adds to a line's quantity, so a
            // long run eventually hits the per-line cap and starts a new cart.
            let product = self.n % 40;
            let response = self
                .session
                .carts
                .add_item(with_authorization(
                    AddItemRequest {
                        cart_id: self.cart_id.clone(),
                        product_id: format!("sku-{product}"),
                        product_name: format!("Product {product}"),
                        quantity: 1,
                        unit_price: "9.99".into(),
                        expected_version: None,
                    },
                    token,
                ))
                .await;
            if let Err(status) = &response
                && status.code() == tonic::Code::InvalidArgument
            {
                // The line reached its cap: start a fresh cart.
                self.session
                    .carts
                    .delete_cart(with_authorization(
                        crate::proto::commerce::v1::DeleteCartRequest {
                            cart_id: self.cart_id.clone(),
                            expected_version: None,
                        },
                        token,
                    ))
                    .await?;
                let cart = self
                    .session
                    .carts
                    .create_cart(with_authorization(CreateCartRequest::default(), token))
                    .await?
                    .into_inner()
                    .cart
                    .context("no cart")?;
                self.cart_id = cart.cart_id;
                return Ok(());
            }
            response?;
        }
        Ok(())
    }
}

struct OrderPlacement {
    session: Session,
}

#[tonic::async_trait]
impl Worker for OrderPlacement {
    async fn op(&mut self) -> anyhow::Result<()> {
        self.session.place_order().await.map(drop)
    }
}

/// Times CreateOrder sent -> CONFIRMED seen; the cart is filled beforehand.
struct Fulfillment {
    session: Session,
    cart_id: Option<String>,
}

#[tonic::async_trait]
impl Worker for Fulfillment {
    async fn prepare(&mut self) -> anyhow::Result<()> {
        if self.cart_id.is_none() {
            self.cart_id = Some(self.session.cart_with_item().await?);
        }
        Ok(())
    }

    async fn op(&mut self) -> anyhow::Result<()> {
        let cart_id = self.cart_id.take().context("no prepared cart")?;
        let order_id = self.session.create_order(cart_id).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut stream = self
            .session
            .orders
            .watch_order(with_authorization(
                WatchOrderRequest {
                    order_id,
                    after_version: 0,
                },
                &self.session.token,
            ))
            .await?
            .into_inner();
        while let Some(message) = tokio::time::timeout_at(deadline.into(), stream.message()).await?? {
            let status = message.order.map(|o| o.status).unwrap_or_default();
            if status == OrderStatus::Confirmed as i32 {
                return Ok(());
            }
            if status == OrderStatus::Cancelled as i32 {
                bail!("order cancelled");
            }
        }
        bail!("watch ended before a terminal status")
    }
}

struct ReadQueries {
    session: Session,
    order_ids: Vec<String>,
    n: usize,
}

#[tonic::async_trait]
impl Worker for ReadQueries {
    async fn op(&mut self) -> anyhow::Result<()> {
        self.n += 1;
        let token = &self.session.token;
        if self.n.is_multiple_of(2) {
            let order_id = self.order_ids[self.n % self.order_ids.len()].clone();
            self.session
                .orders
                .get_order(with_authorization(
                    GetOrderRequest {
                        order_id,
                        min_version: 0,
                    },
                    token,
                ))
                .await?;
        } else {
            self.session
                .orders
                .list_orders(with_authorization(
                    ListOrdersRequest {
                        page_size: 20,
                        ..Default::default()
                    },
                    token,
                ))
                .await?;
        }
        Ok(())
    }
}
