//! Input an attacker crafts: NUL and invisible characters, page tokens out of
//! the database's range, malformed protobuf, a body that disagrees with the
//! path, oversized HTTP/1.1 headers, a deadline above the cap; the database's
//! own words never reach a client; staging refuses the development secrets;
//! a forgotten customer leaves no hash of their personal data behind.

use std::time::{Duration, Instant};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use commerce::startup::Stores;
use commerce::store::event_store::Upcasters;
use commerce::{
    auth::{Role, testing::fixture_path},
    proto::commerce::v1::{
        AddItemRequest, CancelOrderRequest, CreateCartRequest, ForgetCustomerRequest, GetActiveCartRequest,
        GetOrderRequest, ListOrdersRequest, ListSagasRequest,
    },
    startup::Application,
};
use serde_json::json;
use tonic::Code;

use crate::support::{
    app::{Backend, Isolation, TestApp, authed, spawn_app_with},
    orders::{NO_SAGA, create_order, filled_cart, order_request, violated_fields},
    rest::call,
    wait_for_within,
};

#[tokio::test]
async fn nul_in_a_sub_a_forgotten_id_or_a_cancel_reason_is_invalid_argument_naming_the_field() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, NO_SAGA).await;
        let nul_sub = app.token("eve\u{0}", &[Role::Customer]);
        let status = app
            .carts()
            .get_active_cart(authed(GetActiveCartRequest {}, &nul_sub))
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&status), ["sub"]);

        let request = ForgetCustomerRequest {
            customer_id: "dave\u{0}".into(),
            reason: "GDPR".into(),
        };
        let status = app
            .admin_client()
            .forget_customer(authed(request, &app.admin()))
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&status), ["customer_id"], "{backend:?}");

        let alice = app.customer("alice");
        let cart = filled_cart(&app, &alice).await;
        let order = create_order(&app, &alice, order_request(&cart, "nul-reason"))
            .await
            .unwrap();
        for reason in ["stop\u{0}", "\u{202E}gnp.exe"] {
            let request = CancelOrderRequest {
                order_id: order.order_id.clone(),
                reason: reason.into(),
            };
            let status = app
                .orders()
                .cancel_order(authed(request, &alice))
                .await
                .unwrap_err();
            assert_eq!(violated_fields(&status), ["reason"], "{backend:?} {reason:?}");
        }
    }
}

#[tokio::test]
async fn invisible_characters_make_no_id_and_no_required_text() {
    let app = spawn_app_with(Backend::from_env(), NO_SAGA).await;
    let alice = app.customer("alice");
    let cart = app
        .carts()
        .create_cart(authed(CreateCartRequest::default(), &alice))
        .await
        .unwrap()
        .into_inner()
        .cart
        .unwrap();
    for (product_id, product_name, field) in [
        ("sku\u{200B}", "A book", "product_id"),
        ("sku\u{202E}1", "A book", "product_id"),
        ("sku\u{200D}", "A book", "product_id"),
        ("sku-1", "\u{200B}", "product_name"),
        ("sku-1", "evil\u{202E}kcab", "product_name"),
    ] {
        let request = AddItemRequest {
            cart_id: cart.cart_id.clone(),
            product_id: product_id.into(),
            product_name: product_name.into(),
            quantity: 1,
            unit_price: "1.00".into(),
            expected_version: None,
        };
        let status = app.carts().add_item(authed(request, &alice)).await.unwrap_err();
        assert_eq!(
            violated_fields(&status),
            [field],
            "{product_id:?} {product_name:?}"
        );
    }
    let cart = filled_cart(&app, &alice).await;
    let mut request = order_request(&cart, "invisible");
    let address = request.shipping_address.as_mut().unwrap();
    address.recipient_name = "\u{200B}".into();
    address.city = "\u{200D}\u{200D}".into();
    let status = create_order(&app, &alice, request).await.unwrap_err();
    assert_eq!(
        violated_fields(&status),
        ["shipping_address.recipient_name", "shipping_address.city"]
    );
}

/// A page token as ours look, with a crafted time.
fn crafted_orders_token(micros: i64) -> String {
    let token = json!({"t": micros, "o": uuid::Uuid::new_v4(), "s": null});
    URL_SAFE_NO_PAD.encode(token.to_string())
}

#[tokio::test]
async fn page_tokens_with_times_out_of_the_databases_range_are_invalid_argument() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, NO_SAGA).await;
        // About 29,700 BC: chrono takes it, PostgreSQL does not.
        for micros in [-1_000_000_000_000_000_000, i64::MAX / 2] {
            let request = ListOrdersRequest {
                page_size: 10,
                page_token: crafted_orders_token(micros),
                status: 0,
            };
            let status = app
                .orders()
                .list_orders(authed(request, &app.customer("alice")))
                .await
                .unwrap_err();
            assert_eq!(
                status.code(),
                Code::InvalidArgument,
                "{backend:?} {micros}: {status:?}"
            );
            let sagas_token = URL_SAFE_NO_PAD.encode(format!("{micros}:{}", uuid::Uuid::new_v4()));
            let request = ListSagasRequest {
                page_token: sagas_token,
                ..Default::default()
            };
            let status = app
                .sagas()
                .list_sagas(authed(request, &app.admin()))
                .await
                .unwrap_err();
            assert_eq!(
                status.code(),
                Code::InvalidArgument,
                "{backend:?} {micros}: {status:?}"
            );
        }
    }
}

#[tokio::test]
async fn malformed_protobuf_is_invalid_argument_not_internal() {
    let app = spawn_app_with(Backend::from_env(), NO_SAGA).await;
    // One gRPC frame (uncompressed, 3 bytes) that is no protobuf message:
    // field 15, wire type 7 does not exist.
    let frame: Vec<u8> = vec![0, 0, 0, 0, 3, 0x7f, 0xff, 0xff];
    let alice = app.customer("alice");
    // Health is open to anonymous callers: their garbage must not read as our failure either.
    for (path, token) in [
        ("/grpc.health.v1.Health/Check", None),
        ("/commerce.v1.CartService/GetActiveCart", Some(alice.as_str())),
    ] {
        let mut request = call(&app, "POST", path)
            .header("te", "trailers")
            .raw("application/grpc", frame.clone());
        if let Some(token) = token {
            request = request.bearer(token);
        }
        let reply = request.send().await;
        assert_eq!(
            reply.header("grpc-status"),
            "3",
            "{path}: {:?} {}",
            reply.headers,
            reply.text()
        );
    }
}

#[tokio::test]
async fn a_body_spelling_that_disagrees_with_the_path_is_a_400() {
    let app = spawn_app_with(Backend::from_env(), NO_SAGA).await;
    let alice = app.customer("alice");
    let cart = filled_cart(&app, &alice).await;
    let order = create_order(&app, &alice, order_request(&cart, "path-body"))
        .await
        .unwrap();
    let other = uuid::Uuid::new_v4().to_string();
    for body in [
        json!({"order_id": null, "orderId": other, "reason": "x"}),
        json!({"orderId": other, "reason": "x"}),
    ] {
        let reply = call(&app, "POST", &format!("/api/v1/orders/{}/cancel", order.order_id))
            .bearer(&alice)
            .json(&body)
            .send()
            .await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.text());
        assert_eq!(reply.violated_fields(), ["order_id"]);
    }
}

#[tokio::test]
async fn postgres_errors_are_classified_as_postgres_and_their_text_stays_inside() {
    let isolation = Isolation::new(Backend::from_env()).await;
    let backends = isolation.backends().await;
    let commerce::db::Db::Postgres(pool) = &backends.db else {
        // SQLite stores any byte sequence: nothing to classify.
        return;
    };
    // 22021: invalid byte sequence. All digits, like SQLite's codes, but no "busy".
    let err = sqlx::query("SELECT convert_from('\\xff'::bytea, 'UTF8')")
        .execute(pool)
        .await
        .unwrap_err();
    assert_eq!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("22021")
    );
    assert_eq!(commerce::db::unavailable(&err), None);
    let busy = commerce::db::unavailable(&sqlx::Error::PoolTimedOut).unwrap();
    assert!(!busy.contains("pool timed out"), "{busy}");
}

#[tokio::test]
async fn staging_refuses_the_development_secret_pii_key_and_any_origin() {
    let isolation = Isolation::new(Backend::Embedded).await;
    let key = fixture_path("es256-public.pem");
    let master = "ab".repeat(32);
    let siblings = [
        ("PAYMENT_SERVICE_URL", "http://payment:8085"),
        ("INVENTORY_SERVICE_URL", "http://inventory:8085"),
        ("SHIPPING_SERVICE_URL", "http://shipping:8085"),
    ];
    let complete = [
        &[
            ("ENVIRONMENT", "staging"),
            ("JWT_PUBLIC_KEY_FILE", key.as_str()),
            ("PII_MASTER_KEY", master.as_str()),
            ("CORS_ALLOWED_ORIGINS", "https://shop.example"),
        ][..],
        &siblings,
    ]
    .concat();
    let with = |name: &str, value: Option<&str>| {
        let mut vars: Vec<(&str, &str)> = complete.iter().copied().filter(|(k, _)| *k != name).collect();
        if let Some(value) = value {
            vars.push((name, value));
        }
        isolation
            .vars
            .clone()
            .into_iter()
            .chain(vars.into_iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .collect::<std::collections::HashMap<_, _>>()
    };
    for (name, value) in [
        ("JWT_PUBLIC_KEY_FILE", None),
        ("PII_MASTER_KEY", None),
        ("CORS_ALLOWED_ORIGINS", Some("*")),
    ] {
        let refused = match commerce::config::Config::from_vars(&with(name, value)) {
            Err(err) => err.to_string(),
            Ok(config) => match Application::build(config).await {
                Err(err) => format!("{err:#}"),
                Ok(_) => String::new(),
            },
        };
        assert!(refused.contains("staging"), "{name}={value:?}: {refused:?}");
    }
    let config = commerce::config::Config::from_vars(&with("", None)).unwrap();
    assert!(Application::build(config).await.is_ok());
}

#[tokio::test]
async fn a_deadline_above_the_cap_is_cut_at_the_cap_over_a_real_connection() {
    let app = spawn_app_with(
        Backend::from_env(),
        &[("MAX_REQUEST_TIMEOUT_SECONDS", "1"), NO_SAGA[0]],
    )
    .await;
    let alice = app.customer("alice");
    let cart = filled_cart(&app, &alice).await;
    let order = create_order(&app, &alice, order_request(&cart, "deadline"))
        .await
        .unwrap();
    // min_version beyond the stream: the query waits 2 s for it, longer than the cap.
    let mut request = authed(
        GetOrderRequest {
            order_id: order.order_id.clone(),
            min_version: 50,
        },
        &alice,
    );
    request.set_timeout(Duration::from_secs(3600));
    let started = Instant::now();
    let status = app.orders().get_order(request).await.unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        elapsed >= Duration::from_millis(950) && elapsed < Duration::from_millis(1900),
        "{elapsed:?}"
    );
    let started = Instant::now();
    let reply = call(
        &app,
        "GET",
        &format!("/api/v1/orders/{}?min_version=50", order.order_id),
    )
    .bearer(&alice)
    .send()
    .await;
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert!(started.elapsed() < Duration::from_millis(1900));
}

/// The request hashes kept for `customer`'s idempotency keys.
async fn request_hashes(db: &commerce::db::Db, customer: &str) -> Vec<String> {
    const SQL_PG: &str = "SELECT request_hash FROM idempotency_keys WHERE customer_id = $1";
    const SQL_LITE: &str = "SELECT request_hash FROM idempotency_keys WHERE customer_id = ?";
    match db {
        commerce::db::Db::Postgres(pool) => sqlx::query_scalar(SQL_PG).bind(customer).fetch_all(pool).await,
        commerce::db::Db::Sqlite(pool) => sqlx::query_scalar(SQL_LITE).bind(customer).fetch_all(pool).await,
    }
    .unwrap()
}

#[tokio::test]
async fn forgetting_a_customer_leaves_no_hash_of_their_personal_data_in_idempotency_records() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, NO_SAGA).await;
        let dave = app.customer("dave");
        let cart = filled_cart(&app, &dave).await;
        create_order(&app, &dave, order_request(&cart, "forget-me"))
            .await
            .unwrap();
        let db = &app.app.backends.db;
        let before = request_hashes(db, "dave").await;
        assert_eq!(before.len(), 1, "{backend:?}");
        let request = ForgetCustomerRequest {
            customer_id: "dave".into(),
            reason: "GDPR erasure".into(),
        };
        app.admin_client()
            .forget_customer(authed(request, &app.admin()))
            .await
            .unwrap();
        let after = request_hashes(db, "dave").await;
        assert!(
            after.iter().all(|hash| !before.contains(hash)),
            "{backend:?}: {after:?}"
        );
    }
}

/// The status line of the answer to an HTTP/1.1 GET carrying `header_bytes`
/// of one header, or None when the server hung up without answering.
async fn http1_status_with_header(app: &TestApp, header_bytes: usize) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    let head = format!(
        "GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\nx-padding: {}\r\nconnection: close\r\n\r\n",
        "a".repeat(header_bytes)
    );
    let (mut reader, mut writer) = stream.split();
    // The server may answer and close before it has read everything: a
    // failed write is not the test's concern, the answer is.
    let write = async {
        let _ = writer.write_all(head.as_bytes()).await;
    };
    let mut answer = Vec::new();
    let read = async {
        let _ = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut answer)).await;
    };
    tokio::join!(write, read);
    let text = String::from_utf8_lossy(&answer);
    text.lines().next().filter(|l| !l.is_empty()).map(str::to_string)
}

#[tokio::test]
async fn http1_headers_are_bounded_like_http2_ones() {
    let app = spawn_app_with(Backend::Embedded, &[]).await;
    let served = http1_status_with_header(&app, 12 * 1024).await;
    assert!(
        served
            .as_deref()
            .is_some_and(|s| s.contains(" 200") || s.contains(" 503")),
        "{served:?}"
    );
    for size in [20 * 1024, 390_000] {
        let refused = http1_status_with_header(&app, size).await;
        // 431, or a hang-up before any answer: never served.
        assert!(
            refused.as_deref().is_none_or(|s| s.contains(" 431")),
            "{size} bytes: {refused:?}"
        );
    }
}

#[tokio::test]
async fn a_forget_reaches_another_replicas_key_cache_through_the_bus_at_once() {
    use commerce::privacy::{
        Vault,
        cipher::{DEVELOPMENT_MASTER_KEY, MasterKey},
    };
    for backend in Backend::all() {
        // Replica A is the server: the forget goes through its ForgetCustomer.
        let app = spawn_app_with(backend, NO_SAGA).await;
        let backends = &app.app.backends;
        // Replica B: its own vault (and key cache) on the same database, its
        // own bus client on the same keys with Redis; embedded, one process
        // can only share the server's in-process bus.
        let bus_b = match backends.redis {
            Some(_) => commerce::startup::event_bus(&app.config.redis, &app.config.bus, backends),
            None => app.app.bus.clone(),
        };
        let replica_b = Vault::new(
            Stores::on(&backends.db, Upcasters::none(), true).customer_keys,
            MasterKey::from_hex(DEVELOPMENT_MASTER_KEY).unwrap(),
        );
        let (_trigger, shutdown) = commerce::shutdown::channel();
        tokio::spawn(replica_b.clone().follow_forgets(bus_b, shutdown));
        let sealed = replica_b.encrypt("dave", b"1 Main St").await.unwrap();
        // B opens it once: dave's key is in B's cache now (for 30 s).
        assert!(replica_b.decrypt("dave", &sealed).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(500)).await;
        let request = ForgetCustomerRequest {
            customer_id: "dave".into(),
            reason: "GDPR erasure".into(),
        };
        app.admin_client()
            .forget_customer(authed(request, &app.admin()))
            .await
            .unwrap();
        wait_for_within("replica B to drop the key", Duration::from_secs(3), || async {
            replica_b.decrypt("dave", &sealed).await.unwrap().is_none()
        })
        .await;
    }
}
