//! Personal data stays out of logs, `Debug` output and the database file:
//! what crypto-shredding relies on (nothing outside the sealed events may
//! keep an address or a payment method in the clear).

use std::{collections::HashMap, time::Duration};

use crate::support::{
    app::{Backend, authed, spawn_app_with},
    observability::ServerProcess,
    orders::{create_order, customer, filled_cart, order_request},
};
use commerce::{
    auth::{Role, mint_token},
    config::Config,
    privacy::SEALED_FIELD,
    proto::commerce::v1::{
        AddItemRequest, CreateCartRequest, ForgetCustomerRequest, admin_service_client::AdminServiceClient,
        cart_service_client::CartServiceClient, order_service_client::OrderServiceClient,
    },
};

#[tokio::test]
async fn personal_data_never_reaches_the_log_even_at_debug_level() {
    let server = ServerProcess::spawn(&[("RUST_LOG", "debug")]).await;
    let channel = tonic::transport::Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let config = Config::from_vars(&HashMap::from([("ENVIRONMENT".into(), "test".into())])).unwrap();
    let token = mint_token(&config.auth, "zeb", &[Role::Customer], Duration::from_secs(60)).unwrap();
    let admin = mint_token(&config.auth, "ops", &[Role::Admin], Duration::from_secs(60)).unwrap();
    let mut carts = CartServiceClient::new(channel.clone());
    let cart = carts
        .create_cart(authed(CreateCartRequest::default(), &token))
        .await
        .unwrap()
        .into_inner()
        .cart
        .unwrap();
    let item = AddItemRequest {
        cart_id: cart.cart_id.clone(),
        product_id: "lamp".into(),
        product_name: "A lamp".into(),
        quantity: 1,
        unit_price: "12.50".into(),
        expected_version: None,
    };
    carts.add_item(authed(item, &token)).await.unwrap();
    let secrets = [
        "Zebulon Quux",
        "7 Secretive Lane",
        "Quuxville",
        "QX1 7ZZ",
        "pm_tok_zq_4242",
    ];
    let mut request = order_request(&cart.cart_id, "log-test");
    request.payment_method = secrets[4].into();
    let address = request.shipping_address.as_mut().unwrap();
    (
        address.recipient_name,
        address.line1,
        address.city,
        address.postal_code,
    ) = (
        secrets[0].into(),
        secrets[1].into(),
        secrets[2].into(),
        secrets[3].into(),
    );
    let order = OrderServiceClient::new(channel.clone())
        .create_order(authed(request, &token))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(order.payment_method, secrets[4]);
    // Let the saga call the stubs with the address, then forget the customer.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let forget = ForgetCustomerRequest {
        customer_id: "zeb".into(),
        reason: "log test".into(),
    };
    AdminServiceClient::new(channel)
        .forget_customer(authed(forget, &admin))
        .await
        .unwrap();
    server
        .wait_for_log(|line| {
            line["message"]
                .as_str()
                .is_some_and(|m| m.contains("customer forgotten"))
        })
        .await;
    let lines = server.lines();
    assert!(lines.len() > 10, "debug logging produced lines: {}", lines.len());
    for line in &lines {
        for secret in secrets {
            assert!(
                !line.contains(secret),
                "personal data ({secret}) reached the log: {line}"
            );
        }
    }
}

#[test]
fn debug_output_of_every_type_holding_personal_data_shows_none_of_it() {
    use commerce::{
        app::orders::{AddressInput, CreateOrderInput},
        domain::order::{PersonalData, ShippingAddress},
        saga::ports::OrderFacts,
    };
    let secret = "7 Secretive Lane";
    let method = "pm_tok_zq_4242";
    let address = ShippingAddress {
        recipient_name: secret.into(),
        line1: secret.into(),
        line2: String::new(),
        city: secret.into(),
        region: String::new(),
        postal_code: secret.into(),
        country: "GB".into(),
    };
    let input = AddressInput {
        line1: secret.into(),
        ..Default::default()
    };
    let printed = [
        format!("{address:?}"),
        format!(
            "{:?}",
            PersonalData {
                shipping_address: address.clone(),
                payment_method: method.into()
            }
        ),
        format!("{input:?}"),
        format!(
            "{:?}",
            CreateOrderInput {
                payment_method: method.into(),
                shipping_address: Some(input.clone()),
                ..Default::default()
            }
        ),
        format!(
            "{:?}",
            OrderFacts {
                order_id: uuid::Uuid::nil(),
                total: "1.00".into(),
                currency: "USD".into(),
                payment_method: method.into(),
                lines: vec![],
                address: address.clone(),
                traceparent: None,
            }
        ),
    ];
    for text in printed {
        assert!(!text.contains(secret) && !text.contains(method), "{text}");
    }
}

#[tokio::test]
async fn after_a_full_saga_the_database_file_holds_no_personal_data_in_the_clear() {
    let app = spawn_app_with(Backend::Embedded, &[]).await;
    let ada = app.customer("ada");
    let order = create_order(&app, &ada, order_request(&filled_cart(&app, &ada).await, "k1"))
        .await
        .unwrap();
    // Wait for the saga to ship and confirm (the stubs got the address).
    let mut status = String::new();
    for _ in 0..200 {
        let detail = app
            .app
            .queries
            .get_order(&customer("ada"), &order.order_id, 0)
            .await
            .unwrap();
        status = detail.summary.status.as_str().to_string();
        if detail.summary.status.is_terminal() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, "CONFIRMED");
    let path = std::path::PathBuf::from(&app.config.database.sqlite_path);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend(std::fs::read(path.with_extension("db-wal")).unwrap_or_default());
    assert!(
        bytes
            .windows(SEALED_FIELD.len())
            .any(|w| w == SEALED_FIELD.as_bytes()),
        "the order is in the file"
    );
    for secret in ["Analytical Way", "Ada Lovelace", "N1 9GU", "pm_card_visa"] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} is stored in the clear"
        );
    }
}
