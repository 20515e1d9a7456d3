//! Orders as a client places them: request fixtures with sensible defaults (a
//! card that succeeds, an address in London), carts filled over gRPC, and the
//! calls around them.

use std::time::Duration;

use commerce::{
    auth::{Principal, Role},
    projections::samples::SampleOrder,
    proto::commerce::v1::{
        AddItemRequest, Address, CancelOrderRequest, Cart, CreateCartRequest, CreateOrderRequest,
        GetOrderRequest, ListOrdersRequest, Order, WatchOrderRequest, WatchOrderResponse,
        cart_service_client::CartServiceClient, order_service_client::OrderServiceClient,
    },
    store::event_store::{NewEvent, ORDER_STREAM},
};
use tonic::{Streaming, transport::Channel};

use crate::support::{
    app::{TestApp, authed},
    store::EventLog,
};

/// Overrides that keep orders PENDING: no saga runs.
pub const NO_SAGA: &[(&str, &str)] = &[("ENABLE_SAGA_ORCHESTRATION", "false")];

/// The lines of [`filled_cart`]: 2 x 19.99 and 1 x 5.00.
pub const BOOK_AND_PEN: &[(&str, i32, &str)] = &[("book", 2, "19.99"), ("pen", 1, "5.00")];

/// AddItem of `quantity` x `product` at `price`, named "A {product}"; vary the
/// rest with struct update syntax (`AddItemRequest { expected_version, ..add_item(..) }`).
pub fn add_item(cart_id: &str, product: &str, quantity: i32, price: &str) -> AddItemRequest {
    AddItemRequest {
        cart_id: cart_id.into(),
        product_id: product.into(),
        product_name: format!("A {product}"),
        quantity,
        unit_price: price.into(),
        expected_version: None,
    }
}

/// The shipping address of every fixture order (tests look for its words in
/// logs and stored rows).
pub fn address() -> Address {
    Address {
        recipient_name: "Ada Lovelace".into(),
        line1: "1 Analytical Way".into(),
        city: "London".into(),
        postal_code: "N1 9GU".into(),
        country: "GB".into(),
        ..Default::default()
    }
}

/// A valid CreateOrder for `cart_id` under `key`, paid by a card that
/// succeeds; vary it with struct update syntax.
pub fn order_request(cart_id: &str, key: &str) -> CreateOrderRequest {
    CreateOrderRequest {
        cart_id: cart_id.into(),
        payment_method: "pm_card_visa".into(),
        shipping_address: Some(address()),
        idempotency_key: key.into(),
    }
}

/// A new cart of `token`'s customer with `items` (product, quantity, price).
pub async fn cart_with(app: &TestApp, token: &str, items: &[(&str, i32, &str)]) -> Cart {
    fill_cart(&app.channel, token, items).await
}

/// A cart of `token`'s customer holding [`BOOK_AND_PEN`]; returns its id.
pub async fn filled_cart(app: &TestApp, token: &str) -> String {
    cart_with(app, token, BOOK_AND_PEN).await.cart_id
}

/// A new cart of `token`'s customer on `channel` (an app in process or a
/// child process) with `items` (product, quantity, price).
pub async fn fill_cart(channel: &Channel, token: &str, items: &[(&str, i32, &str)]) -> Cart {
    let mut carts = CartServiceClient::new(channel.clone());
    let mut cart = carts
        .create_cart(authed(CreateCartRequest::default(), token))
        .await
        .expect("create cart")
        .into_inner()
        .cart
        .expect("a cart");
    for (product, quantity, price) in items {
        let request = add_item(&cart.cart_id, product, *quantity, price);
        cart = carts
            .add_item(authed(request, token))
            .await
            .expect("add item")
            .into_inner()
            .cart
            .expect("a cart");
    }
    cart
}

/// Fills a new cart of `token`'s customer with `items` on `channel` and places
/// an order from it: `request` turns the cart id into the CreateOrder (usually
/// [`order_request`] with a few fields changed), and the call carries
/// `metadata` (e.g. a `traceparent`) besides the bearer token.
pub async fn place_order(
    channel: &Channel,
    token: &str,
    items: &[(&str, i32, &str)],
    request: impl FnOnce(&str) -> CreateOrderRequest,
    metadata: &[(&'static str, &str)],
) -> Order {
    let cart = fill_cart(channel, token, items).await;
    let mut call = authed(request(&cart.cart_id), token);
    for (name, value) in metadata {
        call.metadata_mut().insert(*name, value.parse().unwrap());
    }
    OrderServiceClient::new(channel.clone())
        .create_order(call)
        .await
        .expect("create order")
        .into_inner()
        .order
        .expect("an order")
}

/// CreateOrder as `token`.
pub async fn create_order(
    app: &TestApp,
    token: &str,
    request: CreateOrderRequest,
) -> Result<Order, tonic::Status> {
    let response = app.orders().create_order(authed(request, token)).await?;
    Ok(response.into_inner().order.unwrap())
}

/// CancelOrder of `order_id` as `token`, with `reason`.
pub async fn cancel(
    app: &TestApp,
    token: &str,
    order_id: &str,
    reason: &str,
) -> Result<Order, tonic::Status> {
    let request = CancelOrderRequest {
        order_id: order_id.into(),
        reason: reason.into(),
    };
    Ok(app
        .orders()
        .cancel_order(authed(request, token))
        .await?
        .into_inner()
        .order
        .unwrap())
}

/// GetOrder of `order_id` as `token`, at least at `min_version`.
pub async fn get_order(
    app: &TestApp,
    token: &str,
    order_id: &str,
    min_version: i64,
) -> Result<Order, tonic::Status> {
    let request = GetOrderRequest {
        order_id: order_id.into(),
        min_version,
    };
    Ok(app
        .orders()
        .get_order(authed(request, token))
        .await?
        .into_inner()
        .order
        .unwrap())
}

/// One ListOrders page as `token`: the orders and the next page's token.
pub async fn list_orders(
    app: &TestApp,
    token: &str,
    page_size: i32,
    page_token: &str,
) -> Result<(Vec<Order>, String), tonic::Status> {
    let request = ListOrdersRequest {
        page_size,
        page_token: page_token.into(),
        status: 0,
    };
    let page = app
        .orders()
        .list_orders(authed(request, token))
        .await?
        .into_inner();
    Ok((page.orders, page.next_page_token))
}

/// WatchOrder of `order_id` as `token`, from its current state.
pub async fn watch_order(
    app: &TestApp,
    token: &str,
    order_id: &str,
) -> Result<Streaming<WatchOrderResponse>, tonic::Status> {
    let request = WatchOrderRequest {
        order_id: order_id.into(),
        after_version: 0,
    };
    Ok(app
        .orders()
        .watch_order(authed(request, token))
        .await?
        .into_inner())
}

/// The next message of a watch (None: the stream ended), failing the test after 20 s.
pub async fn next_watched(
    stream: &mut Streaming<WatchOrderResponse>,
) -> Result<Option<WatchOrderResponse>, tonic::Status> {
    tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("a message in time")
}

/// A customer principal, for calls to the application layer.
pub fn customer(subject: &str) -> Principal {
    Principal {
        subject: subject.into(),
        roles: vec![Role::Customer],
    }
}

/// The fields named by an INVALID_ARGUMENT's BadRequest details.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let details = status.get_error_details();
    let bad = details.bad_request().expect("bad request details");
    bad.field_violations.iter().map(|v| v.field.clone()).collect()
}

/// An order of `customer` at PENDING (version 1), written straight to the
/// event store (no saga moves it); the events of the rest of its life, to
/// move it with [`append_next`].
pub async fn pending_order(app: &TestApp, customer: &str) -> (SampleOrder, Vec<NewEvent>) {
    let order = SampleOrder::new(customer, 1);
    let life = SampleOrder::encode(&order.confirmed());
    EventLog::of(&app.app)
        .append(order.order_id, 0, life[..1].to_vec(), ORDER_STREAM)
        .await
        .unwrap();
    (order, life)
}

/// Moves a [`pending_order`] at `version` one event on (to `version + 1`).
pub async fn append_next(app: &TestApp, order: &SampleOrder, life: &[NewEvent], version: usize) {
    EventLog::of(&app.app)
        .append(
            order.order_id,
            version as u64,
            life[version..=version].to_vec(),
            ORDER_STREAM,
        )
        .await
        .unwrap();
}
