//! The attack suite, part two: a customer on another customer's cart and
//! order, a customer on admin rpcs (SagaAdmin, analytics, AdminService), a
//! caller without a token, a token without the customer role (a sibling
//! service's) on cart and order rpcs; each over gRPC and REST, each with the
//! expected code, and nothing changed in the stores.

use std::time::Duration;

use commerce::{
    auth::Role,
    proto::commerce::v1::{
        AddItemRequest, CancelOrderRequest, CreateCartRequest, CreateOrderRequest, DeleteCartRequest,
        ForgetCustomerRequest, GetActiveCartRequest, GetCartAnalyticsRequest, GetCartRequest,
        GetOrderHistoryRequest, GetOrderRequest, GetProjectionStatusRequest, GetSagaRequest,
        ListDeadLettersRequest, ListOrdersRequest, ListSagasRequest, RemoveItemRequest, RetrySagaRequest,
        UpdateItemQuantityRequest, WatchOrderRequest,
    },
};
use serde_json::json;
use tonic::{Code, Request};

use crate::support::{
    app::{Backend, TestApp, spawn_app_with},
    eventually,
    orders::{NO_SAGA, create_order, filled_cart, order_request},
    rest::call,
};

/// Whose credentials an attack uses.
#[derive(Clone, Copy, Debug)]
enum Caller {
    Nobody,
    Mallory,
}

/// One forbidden call, over both transports.
struct Attack {
    name: &'static str,
    caller: Caller,
    rpc: Rpc,
    rest: (&'static str, String, serde_json::Value),
    code: Code,
}

/// The gRPC side of an attack.
enum Rpc {
    CreateCart,
    ActiveCart,
    GetCart(String),
    AddItem(String),
    UpdateItem(String),
    RemoveItem(String),
    DeleteCart(String),
    OrderFromCart(String),
    GetOrder(String),
    ListOrders,
    WatchOrder(String),
    CancelOrder(String),
    History(String),
    Analytics,
    Forget(String),
    DeadLetters,
    ProjectionStatus,
    ListSagas,
    GetSaga(String),
    RetrySaga(String),
}

fn attacks(cart: &str, order: &str, saga: &str) -> Vec<Attack> {
    use Caller::{Mallory, Nobody};
    let item = json!({"product_id": "x", "product_name": "X", "quantity": 1, "unit_price": "1.00"});
    let order_body = json!({
        "cart_id": cart, "payment_method": "pm_card_visa", "idempotency_key": "steal-over-rest",
        "shipping_address": {"recipient_name": "M", "line1": "1 Way", "city": "C", "postal_code": "1", "country": "GB"},
    });
    let none = json!({});
    vec![
        Attack {
            name: "no token creates a cart",
            caller: Nobody,
            rpc: Rpc::CreateCart,
            rest: ("POST", "/api/v1/cart/".into(), none.clone()),
            code: Code::Unauthenticated,
        },
        Attack {
            name: "no token reads a cart",
            caller: Nobody,
            rpc: Rpc::GetCart(cart.into()),
            rest: ("GET", format!("/api/v1/cart/{cart}"), none.clone()),
            code: Code::Unauthenticated,
        },
        Attack {
            name: "no token reads an order",
            caller: Nobody,
            rpc: Rpc::GetOrder(order.into()),
            rest: ("GET", format!("/api/v1/orders/{order}"), none.clone()),
            code: Code::Unauthenticated,
        },
        Attack {
            name: "another's cart is read",
            caller: Mallory,
            rpc: Rpc::GetCart(cart.into()),
            rest: ("GET", format!("/api/v1/cart/{cart}"), none.clone()),
            code: Code::NotFound,
        },
        Attack {
            name: "another's cart gets an item",
            caller: Mallory,
            rpc: Rpc::AddItem(cart.into()),
            rest: ("POST", format!("/api/v1/cart/{cart}/items"), item),
            code: Code::NotFound,
        },
        Attack {
            name: "another's cart line is changed",
            caller: Mallory,
            rpc: Rpc::UpdateItem(cart.into()),
            rest: (
                "PUT",
                format!("/api/v1/cart/{cart}/items/book"),
                json!({"quantity": 9}),
            ),
            code: Code::NotFound,
        },
        Attack {
            name: "another's cart line is removed",
            caller: Mallory,
            rpc: Rpc::RemoveItem(cart.into()),
            rest: ("DELETE", format!("/api/v1/cart/{cart}/items/book"), none.clone()),
            code: Code::NotFound,
        },
        Attack {
            name: "another's cart is deleted",
            caller: Mallory,
            rpc: Rpc::DeleteCart(cart.into()),
            rest: ("DELETE", format!("/api/v1/cart/{cart}"), none.clone()),
            code: Code::NotFound,
        },
        Attack {
            name: "another's cart is ordered",
            caller: Mallory,
            rpc: Rpc::OrderFromCart(cart.into()),
            rest: ("POST", "/api/v1/orders/".into(), order_body),
            code: Code::NotFound,
        },
        Attack {
            name: "another's order is read",
            caller: Mallory,
            rpc: Rpc::GetOrder(order.into()),
            rest: ("GET", format!("/api/v1/orders/{order}"), none.clone()),
            code: Code::NotFound,
        },
        Attack {
            name: "another's order is cancelled",
            caller: Mallory,
            rpc: Rpc::CancelOrder(order.into()),
            rest: (
                "POST",
                format!("/api/v1/orders/{order}/cancel"),
                json!({"reason": "mine now"}),
            ),
            code: Code::NotFound,
        },
        Attack {
            name: "another's order history is read",
            caller: Mallory,
            rpc: Rpc::History(order.into()),
            rest: ("GET", format!("/api/v1/orders/{order}/events"), none.clone()),
            code: Code::NotFound,
        },
        Attack {
            name: "a customer reads cart analytics",
            caller: Mallory,
            rpc: Rpc::Analytics,
            rest: ("GET", "/api/v1/admin/analytics/carts".into(), none.clone()),
            code: Code::PermissionDenied,
        },
        Attack {
            name: "a customer forgets another customer",
            caller: Mallory,
            rpc: Rpc::Forget("alice".into()),
            rest: (
                "POST",
                "/api/v1/admin/customers/alice/forget".into(),
                json!({"reason": "spite"}),
            ),
            code: Code::PermissionDenied,
        },
        Attack {
            name: "a customer lists dead letters",
            caller: Mallory,
            rpc: Rpc::DeadLetters,
            rest: ("GET", "/api/v1/admin/dead-letters".into(), none.clone()),
            code: Code::PermissionDenied,
        },
        Attack {
            name: "a customer reads projection status",
            caller: Mallory,
            rpc: Rpc::ProjectionStatus,
            rest: ("GET", "/api/v1/admin/projections".into(), none),
            code: Code::PermissionDenied,
        },
        Attack {
            name: "a customer lists sagas",
            caller: Mallory,
            rpc: Rpc::ListSagas,
            rest: ("GET", "/api/v1/admin/sagas".into(), json!({})),
            code: Code::PermissionDenied,
        },
        Attack {
            name: "a customer reads a saga",
            caller: Mallory,
            rpc: Rpc::GetSaga(saga.into()),
            rest: ("GET", format!("/api/v1/admin/sagas/{saga}"), json!({})),
            code: Code::PermissionDenied,
        },
        Attack {
            name: "a customer retries a saga",
            caller: Mallory,
            rpc: Rpc::RetrySaga(saga.into()),
            rest: (
                "POST",
                format!("/api/v1/admin/sagas/{saga}/retry"),
                json!({"reason": "push"}),
            ),
            code: Code::PermissionDenied,
        },
    ]
}

/// Sends the gRPC side of an attack; the code it got.
async fn send(app: &TestApp, token: Option<&str>, rpc: &Rpc) -> Code {
    fn req<T>(message: T, token: Option<&str>) -> Request<T> {
        match token {
            Some(token) => crate::support::app::authed(message, token),
            None => Request::new(message),
        }
    }
    let (mut carts, mut orders, mut admin, mut sagas) =
        (app.carts(), app.orders(), app.admin_client(), app.sagas());
    let cart = |id: &String| id.clone();
    let result = match rpc {
        Rpc::CreateCart => carts
            .create_cart(req(CreateCartRequest::default(), token))
            .await
            .map(drop),
        Rpc::ActiveCart => carts
            .get_active_cart(req(GetActiveCartRequest {}, token))
            .await
            .map(drop),
        Rpc::GetCart(id) => carts
            .get_cart(req(GetCartRequest { cart_id: cart(id) }, token))
            .await
            .map(drop),
        Rpc::AddItem(id) => {
            let message = AddItemRequest {
                cart_id: cart(id),
                product_id: "x".into(),
                product_name: "X".into(),
                quantity: 1,
                unit_price: "1.00".into(),
                expected_version: None,
            };
            carts.add_item(req(message, token)).await.map(drop)
        }
        Rpc::UpdateItem(id) => {
            let message = UpdateItemQuantityRequest {
                cart_id: cart(id),
                product_id: "book".into(),
                quantity: 9,
                expected_version: None,
            };
            carts.update_item_quantity(req(message, token)).await.map(drop)
        }
        Rpc::RemoveItem(id) => {
            let message = RemoveItemRequest {
                cart_id: cart(id),
                product_id: "book".into(),
                expected_version: None,
            };
            carts.remove_item(req(message, token)).await.map(drop)
        }
        Rpc::DeleteCart(id) => carts
            .delete_cart(req(
                DeleteCartRequest {
                    cart_id: cart(id),
                    expected_version: None,
                },
                token,
            ))
            .await
            .map(drop),
        Rpc::OrderFromCart(id) => {
            let message: CreateOrderRequest = order_request(id, "steal");
            orders.create_order(req(message, token)).await.map(drop)
        }
        Rpc::GetOrder(id) => orders
            .get_order(req(
                GetOrderRequest {
                    order_id: id.clone(),
                    min_version: 0,
                },
                token,
            ))
            .await
            .map(drop),
        Rpc::ListOrders => orders
            .list_orders(req(ListOrdersRequest::default(), token))
            .await
            .map(drop),
        Rpc::WatchOrder(id) => {
            let message = WatchOrderRequest {
                order_id: id.clone(),
                after_version: 0,
            };
            orders.watch_order(req(message, token)).await.map(drop)
        }
        Rpc::CancelOrder(id) => {
            let message = CancelOrderRequest {
                order_id: id.clone(),
                reason: "mine now".into(),
            };
            orders.cancel_order(req(message, token)).await.map(drop)
        }
        Rpc::History(id) => orders
            .get_order_history(req(GetOrderHistoryRequest { order_id: id.clone() }, token))
            .await
            .map(drop),
        Rpc::Analytics => carts
            .get_cart_analytics(req(GetCartAnalyticsRequest {}, token))
            .await
            .map(drop),
        Rpc::Forget(id) => {
            let message = ForgetCustomerRequest {
                customer_id: id.clone(),
                reason: "spite".into(),
            };
            admin.forget_customer(req(message, token)).await.map(drop)
        }
        Rpc::DeadLetters => admin
            .list_dead_letters(req(ListDeadLettersRequest::default(), token))
            .await
            .map(drop),
        Rpc::ListSagas => sagas
            .list_sagas(req(ListSagasRequest::default(), token))
            .await
            .map(drop),
        Rpc::GetSaga(id) => sagas
            .get_saga(req(GetSagaRequest { saga_id: id.clone() }, token))
            .await
            .map(drop),
        Rpc::RetrySaga(id) => {
            let message = RetrySagaRequest {
                saga_id: id.clone(),
                reason: "push".into(),
                ..Default::default()
            };
            sagas.retry_saga(req(message, token)).await.map(drop)
        }
        Rpc::ProjectionStatus => admin
            .get_projection_status(req(GetProjectionStatusRequest {}, token))
            .await
            .map(drop),
    };
    result.err().map_or(Code::Ok, |status| status.code())
}

/// What alice owns, as she sees it: compared before and after the attacks.
async fn alices_world(app: &TestApp, alice: &str, cart: &str, order: &str) -> (String, String, usize) {
    let cart = app
        .carts()
        .get_cart(crate::support::app::authed(
            GetCartRequest { cart_id: cart.into() },
            alice,
        ))
        .await
        .unwrap()
        .into_inner()
        .cart
        .unwrap();
    let order = app
        .orders()
        .get_order(crate::support::app::authed(
            GetOrderRequest {
                order_id: order.into(),
                min_version: 1,
            },
            alice,
        ))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    let listed = app
        .orders()
        .list_orders(crate::support::app::authed(ListOrdersRequest::default(), alice))
        .await
        .unwrap()
        .into_inner()
        .orders
        .len();
    (
        format!("{cart:?}"),
        format!(
            "{:?} v{} {:?}",
            order.status, order.version, order.shipping_address
        ),
        listed,
    )
}

/// alice's order (from her first cart) and her second, active cart, settled.
async fn alice_with_an_order_and_a_cart(app: &TestApp, alice: &str) -> (String, String) {
    let ordered = filled_cart(app, alice).await;
    let order = create_order(app, alice, order_request(&ordered, "k1"))
        .await
        .unwrap()
        .order_id;
    let cart = filled_cart(app, alice).await;
    // The order list is its own read model: wait until it shows the order, so
    // that `before` is a settled world and only the attacks could change it.
    let listed = eventually(Duration::from_secs(10), || async {
        let orders = app
            .orders()
            .list_orders(crate::support::app::authed(ListOrdersRequest::default(), alice))
            .await
            .ok()?
            .into_inner()
            .orders;
        (orders.len() == 1).then_some(())
    })
    .await;
    assert!(listed.is_some(), "alice's order never reached her order list");
    (cart, order)
}

#[tokio::test]
async fn customers_reach_no_one_elses_cart_or_order_nor_admin_rpcs_over_grpc_and_rest() {
    let app = spawn_app_with(Backend::from_env(), NO_SAGA).await;
    let (alice, mallory) = (app.customer("alice"), app.customer("mallory"));
    let (cart, order) = alice_with_an_order_and_a_cart(&app, &alice).await;
    let before = alices_world(&app, &alice, &cart, &order).await;

    let saga = uuid::Uuid::now_v7().to_string();
    for attack in attacks(&cart, &order, &saga) {
        let token = match attack.caller {
            Caller::Nobody => None,
            Caller::Mallory => Some(mallory.as_str()),
        };
        let code = send(&app, token, &attack.rpc).await;
        assert_eq!(code, attack.code, "gRPC: {}", attack.name);

        let (method, path, body) = &attack.rest;
        let mut request = call(&app, method, path);
        if let Some(token) = token {
            request = request.bearer(token);
        }
        if *method != "GET" && *method != "DELETE" {
            request = request.json(body);
        }
        let reply = request.send().await;
        let expected = commerce::error::http_status(attack.code).as_u16();
        assert_eq!(
            reply.status,
            expected,
            "REST {method} {path}: {}: {}",
            attack.name,
            reply.text()
        );
        assert_eq!(reply.json()["code"], attack.code as i32, "REST: {}", attack.name);
    }

    // Nothing changed: alice's cart, order and order list are as they were,
    // her personal data key still opens her order, and mallory owns nothing.
    assert_eq!(alices_world(&app, &alice, &cart, &order).await, before);
    assert!(before.1.contains("Analytical"), "{}", before.1);
    let mallorys = app
        .orders()
        .list_orders(crate::support::app::authed(
            ListOrdersRequest::default(),
            &mallory,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(mallorys.orders.is_empty());
    // An admin may read any order (and the order list shows it).
    let admin = app.admin();
    assert_eq!(
        send(&app, Some(&admin), &Rpc::GetOrder(order.clone())).await,
        Code::Ok
    );
    assert_eq!(send(&app, Some(&admin), &Rpc::Analytics).await, Code::Ok);
    assert_eq!(send(&app, Some(&admin), &Rpc::ListSagas).await, Code::Ok);
}

#[tokio::test]
async fn a_token_without_the_customer_role_reaches_no_cart_or_order_rpc_over_grpc_and_rest() {
    let app = spawn_app_with(Backend::from_env(), NO_SAGA).await;
    let alice = app.customer("alice");
    let (cart, order) = alice_with_an_order_and_a_cart(&app, &alice).await;
    let before = alices_world(&app, &alice, &cart, &order).await;
    let item = json!({"product_id": "x", "product_name": "X", "quantity": 1, "unit_price": "1.00"});
    let none = json!({});
    // Every cart and order rpc a customer calls, gRPC and REST.
    let rpcs: Vec<(Rpc, (&str, String, serde_json::Value))> = vec![
        (Rpc::CreateCart, ("POST", "/api/v1/cart/".into(), none.clone())),
        (
            Rpc::ActiveCart,
            ("GET", "/api/v1/cart/active".into(), none.clone()),
        ),
        (
            Rpc::GetCart(cart.clone()),
            ("GET", format!("/api/v1/cart/{cart}"), none.clone()),
        ),
        (
            Rpc::AddItem(cart.clone()),
            ("POST", format!("/api/v1/cart/{cart}/items"), item),
        ),
        (
            Rpc::UpdateItem(cart.clone()),
            (
                "PUT",
                format!("/api/v1/cart/{cart}/items/book"),
                json!({"quantity": 9}),
            ),
        ),
        (
            Rpc::RemoveItem(cart.clone()),
            ("DELETE", format!("/api/v1/cart/{cart}/items/book"), none.clone()),
        ),
        (
            Rpc::DeleteCart(cart.clone()),
            ("DELETE", format!("/api/v1/cart/{cart}"), none.clone()),
        ),
        (
            Rpc::OrderFromCart(cart.clone()),
            (
                "POST",
                "/api/v1/orders/".into(),
                json!({"cart_id": cart, "payment_method": "pm_card_visa",
                "idempotency_key": "service-order", "shipping_address": {"recipient_name": "S", "line1": "1 Way",
                "city": "C", "postal_code": "1", "country": "GB"}}),
            ),
        ),
        (
            Rpc::GetOrder(order.clone()),
            ("GET", format!("/api/v1/orders/{order}"), none.clone()),
        ),
        (Rpc::ListOrders, ("GET", "/api/v1/orders/".into(), none.clone())),
        (
            Rpc::WatchOrder(order.clone()),
            ("GET", format!("/api/v1/orders/{order}/watch"), none.clone()),
        ),
        (
            Rpc::CancelOrder(order.clone()),
            (
                "POST",
                format!("/api/v1/orders/{order}/cancel"),
                json!({"reason": "not mine"}),
            ),
        ),
        (
            Rpc::History(order.clone()),
            ("GET", format!("/api/v1/orders/{order}/events"), none),
        ),
    ];
    // Both name alice in `sub`: without the customer role that names no customer.
    let tokens = [
        ("a sibling service's token", app.token("alice", &[Role::Service])),
        ("a token with no role of ours", app.token("alice", &[])),
    ];
    for (who, token) in &tokens {
        for (rpc, (method, path, body)) in &rpcs {
            let code = send(&app, Some(token), rpc).await;
            assert_eq!(code, Code::PermissionDenied, "gRPC {method} {path}: {who}");
            let mut request = call(&app, method, path).bearer(token);
            if *method != "GET" && *method != "DELETE" {
                request = request.json(body);
            }
            let reply = request.send().await;
            assert_eq!(reply.status, 403, "REST {method} {path}: {who}: {}", reply.text());
            assert_eq!(
                reply.json()["code"],
                Code::PermissionDenied as i32,
                "REST {path}: {who}"
            );
        }
    }
    assert_eq!(alices_world(&app, &alice, &cart, &order).await, before);
    // The service token keeps what its role is for, the public event feed:
    // asked for a consumer, it hears there is none (not that it may not ask).
    let service = &tokens[0].1;
    let feed = call(&app, "GET", "/api/v1/events/consumers/none")
        .bearer(service)
        .send()
        .await;
    assert_eq!(feed.status, 404, "{}", feed.text());
}
