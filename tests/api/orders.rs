//! OrderService CreateOrder on a running server: from a cart, idempotency
//! (gRPC and REST), refusals, resumption after a transient failure. The
//! helpers here serve `order_commands.rs` too.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use async_trait::async_trait;
use commerce::startup::Stores;
use commerce::{
    app::orders::{CreateOrderInput, OrderApp, OrderStores},
    proto::commerce::v1::{GetActiveCartRequest, GetCartRequest, OrderStatus as PbStatus},
    store::{
        event_store::OrderCodec,
        unit_of_work::{Committed, UnitOfWork, UnitOfWorkCommitter, UnitOfWorkError},
    },
};
use tonic::Code;
use uuid::Uuid;

use crate::support::{
    app::{Backend, authed, spawn_app_with},
    orders::{NO_SAGA, add_item, cancel, cart_with, create_order, customer, filled_cart, order_request},
    rest::call,
    store::count,
};

#[tokio::test]
async fn an_order_is_created_from_the_callers_cart_with_a_price_snapshot_and_the_cart_is_converted() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, &[]).await;
        let alice = app.customer("alice");
        let cart_id = filled_cart(&app, &alice).await;
        let order = create_order(&app, &alice, order_request(&cart_id, "k-1"))
            .await
            .unwrap();

        assert_eq!(order.status, PbStatus::Pending as i32, "{backend:?}");
        assert_eq!((order.version, order.item_count), (1, 3));
        assert_eq!(
            (order.customer_id.as_str(), order.cart_id.as_str()),
            ("alice", cart_id.as_str())
        );
        assert_eq!((order.total.as_str(), order.currency.as_str()), ("44.98", "USD"));
        assert_eq!(order.items[0].line_total, "39.98");
        assert_eq!(order.payment_method, "pm_card_visa");
        assert_eq!(order.shipping_address.as_ref().unwrap().country, "GB");
        assert_eq!(order.created_at, order.updated_at);
        let order_id = Uuid::parse_str(&order.order_id).unwrap();
        assert_eq!(order_id.get_version_num(), 7, "order ids are UUID v7");
        assert!(
            Uuid::parse_str(&order.saga_id).is_ok(),
            "{backend:?}: a saga drives the order"
        );

        // The cart is converted: out of the active slot, and not orderable again.
        let cart = app
            .carts()
            .get_cart(authed(
                GetCartRequest {
                    cart_id: cart_id.clone(),
                },
                &alice,
            ))
            .await
            .unwrap()
            .into_inner()
            .cart
            .unwrap();
        assert_eq!(
            cart.status,
            commerce::proto::commerce::v1::CartStatus::Converted as i32
        );
        let active = app
            .carts()
            .get_active_cart(authed(GetActiveCartRequest {}, &alice))
            .await;
        assert_eq!(active.unwrap_err().code(), Code::NotFound);
        let again = create_order(&app, &alice, order_request(&cart_id, "k-2"))
            .await
            .unwrap_err();
        assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");

        // The event and the saga start committed together (the saga's
        // workers may already have appended the next events).
        let db = &app.app.backends.db;
        assert_eq!(
            count(
                db,
                "SELECT COUNT(*) FROM events WHERE event_type = 'OrderCreated'"
            )
            .await,
            1
        );
        assert_eq!(count(db, "SELECT COUNT(*) FROM sagas").await, 1);
        let stored = app.app.events.read_stream(order_id, 1).await.unwrap();
        assert_eq!(stored[0].event_type, "OrderCreated");
        assert_eq!(stored[0].metadata.idempotency_key.as_deref(), Some("k-1"));

        // Another customer cannot order alice's cart.
        let bob = app.customer("bob");
        let stolen = create_order(&app, &bob, order_request(&cart_id, "k-1"))
            .await
            .unwrap_err();
        assert_eq!(stolen.code(), Code::NotFound, "{backend:?}");
    }
}

#[tokio::test]
async fn the_same_key_and_body_return_the_first_order_and_another_body_is_invalid_argument() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, NO_SAGA).await;
        let alice = app.customer("alice");
        let cart_id = filled_cart(&app, &alice).await;
        let first = create_order(&app, &alice, order_request(&cart_id, "key"))
            .await
            .unwrap();
        assert_eq!(first.saga_id, "", "orchestration off: no saga");
        // The order moves on; a repeat still answers with the first response.
        cancel(&app, &alice, &first.order_id, "").await.unwrap();
        let repeat = create_order(&app, &alice, order_request(&cart_id, "key"))
            .await
            .unwrap();
        assert_eq!(repeat, first, "{backend:?}");

        let mut other = order_request(&cart_id, "key");
        other.payment_method = "pm_card_mastercard".into();
        let err = create_order(&app, &alice, other).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("different request"), "{}", err.message());
        assert_eq!(
            count(&app.app.backends.db, "SELECT COUNT(*) FROM events").await,
            2
        );
    }
}

#[tokio::test]
async fn twenty_concurrent_calls_with_one_key_make_one_order_and_identical_responses() {
    for backend in Backend::all() {
        let app = Arc::new(spawn_app_with(backend, &[]).await);
        let alice = app.customer("alice");
        let cart_id = filled_cart(&app, &alice).await;
        let calls: Vec<_> = (0..20)
            .map(|_| {
                let (app, alice, cart_id) = (app.clone(), alice.clone(), cart_id.clone());
                tokio::spawn(async move {
                    // A client retries ABORTED (the key is in flight) after a pause.
                    let mut aborted = 0;
                    loop {
                        match create_order(&app, &alice, order_request(&cart_id, "same-key")).await {
                            Ok(order) => return (order, aborted),
                            Err(status) if status.code() == Code::Aborted => {
                                aborted += 1;
                                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                            }
                            Err(status) => panic!("{status:?}"),
                        }
                    }
                })
            })
            .collect();
        let mut orders = Vec::new();
        for call in calls {
            orders.push(call.await.unwrap());
        }
        let first = &orders[0].0;
        assert!(
            orders.iter().all(|(o, _)| o == first),
            "{backend:?}: responses differ"
        );
        let db = &app.app.backends.db;
        assert_eq!(
            count(
                db,
                "SELECT COUNT(*) FROM events WHERE event_type = 'OrderCreated'"
            )
            .await,
            1
        );
        assert_eq!(
            count(db, "SELECT COUNT(*) FROM sagas").await,
            1,
            "{backend:?}: one saga"
        );
    }
}

#[tokio::test]
async fn business_refusals_are_remembered_under_the_key_and_bad_input_stores_nothing() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, NO_SAGA).await;
        let alice = app.customer("alice");
        let cart = cart_with(&app, &alice, &[]).await;
        let empty = create_order(&app, &alice, order_request(&cart.cart_id, "k"))
            .await
            .unwrap_err();
        assert_eq!(empty.code(), Code::FailedPrecondition, "{empty:?}");
        // The cart is filled now, but the key's answer was a refusal and stays one.
        let request = add_item(&cart.cart_id, "p", 1, "1.00");
        app.carts().add_item(authed(request, &alice)).await.unwrap();
        let again = create_order(&app, &alice, order_request(&cart.cart_id, "k"))
            .await
            .unwrap_err();
        assert_eq!(
            (again.code(), again.message()),
            (empty.code(), empty.message()),
            "{backend:?}"
        );
        // A new key is a new request.
        create_order(&app, &alice, order_request(&cart.cart_id, "k2"))
            .await
            .unwrap();

        // Malformed requests: INVALID_ARGUMENT naming the field, nothing stored.
        let db = &app.app.backends.db;
        let keys_before = count(db, "SELECT COUNT(*) FROM idempotency_keys").await;
        let mut card = order_request(&cart.cart_id, "k3");
        card.payment_method = "4111111111111111".into();
        let mut no_key = order_request(&cart.cart_id, "");
        no_key.shipping_address = None;
        for bad in [card, no_key, order_request("not-a-uuid", "k4")] {
            let err = create_order(&app, &alice, bad).await.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        }
        assert_eq!(
            count(db, "SELECT COUNT(*) FROM idempotency_keys").await,
            keys_before
        );
        assert_eq!(count(db, "SELECT COUNT(*) FROM events").await, 1);
    }
}

/// A committer whose next commit fails as if the database went away.
#[derive(Debug)]
struct FlakyCommitter {
    inner: Arc<dyn UnitOfWorkCommitter>,
    fail_next: AtomicBool,
}

#[async_trait]
impl UnitOfWorkCommitter for FlakyCommitter {
    async fn commit(&self, unit: UnitOfWork) -> Result<Committed, UnitOfWorkError> {
        if self.fail_next.swap(false, Ordering::SeqCst) {
            return Err(UnitOfWorkError::Unavailable("connection reset".into()));
        }
        self.inner.commit(unit).await
    }
}

#[tokio::test]
async fn a_transient_failure_after_the_cart_is_converted_is_not_remembered_and_the_retry_finishes_the_order()
{
    for backend in Backend::all() {
        let app = spawn_app_with(backend, &[]).await;
        let alice = app.customer("alice");
        let cart_id = filled_cart(&app, &alice).await;
        let backend_stores = Stores::on(&app.app.backends.db, OrderCodec::upcasters(), true);
        let flaky = Arc::new(FlakyCommitter {
            inner: backend_stores.units,
            fail_next: AtomicBool::new(true),
        });
        let stores = OrderStores {
            events: app.app.events.clone(),
            units: flaky,
            idempotency_keys: backend_stores.idempotency_keys,
        };
        let orders = OrderApp::new(
            app.config.orders.clone(),
            stores,
            app.app.carts.clone(),
            app.app.privacy.clone(),
        );
        let input = || CreateOrderInput::from(order_request(&cart_id, "retry-me"));
        let outage = orders
            .create_order(&customer("alice"), input())
            .await
            .unwrap_err();
        assert!(
            matches!(outage, commerce::error::AppError::Unavailable { .. }),
            "{outage:?}"
        );
        let db = &app.app.backends.db;
        assert_eq!(count(db, "SELECT COUNT(*) FROM events").await, 0, "{backend:?}");

        // The cart is converted already; the retry resumes from the recorded snapshot.
        let order = orders.create_order(&customer("alice"), input()).await.unwrap();
        assert_eq!((order.version, order.total.to_string()), (1, "44.98".to_string()));
        let repeat = create_order(&app, &alice, order_request(&cart_id, "retry-me"))
            .await
            .unwrap();
        assert_eq!(repeat.order_id, order.order_id.to_string(), "{backend:?}");
        assert_eq!(
            count(
                db,
                "SELECT COUNT(*) FROM events WHERE event_type = 'OrderCreated'"
            )
            .await,
            1
        );
        assert_eq!(count(db, "SELECT COUNT(*) FROM sagas").await, 1);
    }
}

#[tokio::test]
async fn over_rest_the_idempotency_key_header_makes_create_order_idempotent() {
    let app = spawn_app_with(Backend::Embedded, NO_SAGA).await;
    let alice = app.customer("alice");
    let cart_id = filled_cart(&app, &alice).await;
    let body = serde_json::json!({
        "cart_id": cart_id,
        "payment_method": "pm_card_visa",
        "shipping_address": {"recipient_name": "Ada", "line1": "1 Way", "city": "London",
                             "postal_code": "N1", "country": "GB"},
    });
    let post = || {
        call(&app, "POST", "/api/v1/orders/")
            .bearer(&alice)
            .header("Idempotency-Key", "rest-key")
            .json(&body)
    };
    let first = post().send().await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.json()["order"]["status"], "ORDER_STATUS_PENDING");
    assert_eq!(first.json()["order"]["total"], "44.98");
    let again = post().send().await;
    assert_eq!(again.json(), first.json());
    let missing = call(&app, "POST", "/api/v1/orders/")
        .bearer(&alice)
        .json(&body)
        .send()
        .await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.violated_fields(), ["idempotency_key"]);
}
