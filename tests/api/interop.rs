//! Clients other than our own generated tonic ones: a Python grpcio sibling
//! with gzip on, a zstd-compressing client, and grpcurl reading reflection
//! (and gzip-compressed answers).

use commerce::proto::commerce::v1::{
    AddItemRequest, CreateCartRequest, cart_service_client::CartServiceClient,
};
use tonic::codec::CompressionEncoding;

use crate::support::{
    app::{Backend, authed, spawn_app, spawn_app_with},
    orders::add_item,
    proxy::Proxy,
    stubs::spawn_stubs,
    tools,
};

#[tokio::test]
async fn a_python_grpcio_client_with_gzip_on_calls_health_and_the_cart_service() {
    let Some(python) = tools::grpcio_python() else {
        return;
    };
    let app = spawn_app().await;
    let token = app.customer("python-sibling");
    let seen = tools::run_grpcio_fixture(&python, "grpcio_gzip.py", app.port, &token, &[]).await;
    // 1 = SERVING.
    assert_eq!(seen["health_status"], 1, "{seen}");
    assert_eq!(
        seen["item_names"],
        serde_json::json!([seen["name_sent"]]),
        "{seen}"
    );
    assert!(!seen["cart_id"].as_str().unwrap_or_default().is_empty(), "{seen}");
}

#[tokio::test]
async fn a_python_grpcio_client_decodes_error_info_from_the_status_details_trailer() {
    let Some(python) = tools::grpcio_python() else {
        return;
    };
    for backend in Backend::all() {
        let app = spawn_app_with(backend, &[]).await;
        let token = app.customer("python-sibling");
        let seen = tools::run_grpcio_fixture(&python, "grpcio_error_details.py", app.port, &token, &[]).await;
        let not_found = &seen["not_found"];
        assert_eq!(not_found["grpc_code"], "NOT_FOUND", "{seen}");
        assert_eq!(
            not_found["status"]["code"], 5,
            "the decoded Status agrees: {seen}"
        );
        let details = &not_found["status"]["details"];
        assert_eq!(
            details["google.rpc.ErrorInfo"],
            serde_json::json!({"reason": "NOT_FOUND", "domain": "commerce.v1"}),
            "{backend:?} {seen}"
        );
        assert_eq!(
            details["google.rpc.ResourceInfo"]["resource_type"],
            "commerce.v1.Order"
        );
        assert_eq!(
            details["google.rpc.ResourceInfo"]["resource_name"],
            seen["missing_id"]
        );
        let invalid = &seen["invalid"]["status"]["details"];
        assert_eq!(
            invalid["google.rpc.ErrorInfo"]["reason"], "VALIDATION_FAILED",
            "{seen}"
        );
        assert_eq!(
            invalid["google.rpc.BadRequest"]["field_violations"][0]["field"],
            "quantity"
        );
    }
}

/// A request of a long, compressible product name (200 characters).
fn long_named_item(cart_id: &str) -> AddItemRequest {
    AddItemRequest {
        product_name: "zstd ".repeat(40).trim().to_string(),
        ..add_item(cart_id, "zstd-sku", 1, "3.00")
    }
}

#[tokio::test]
async fn zstd_requests_are_accepted_and_answers_come_back_compressed_when_accepted() {
    let app = spawn_app().await;
    let token = app.customer("zstd-client");
    let mut carts = CartServiceClient::new(app.channel.clone())
        .send_compressed(CompressionEncoding::Zstd)
        .accept_compressed(CompressionEncoding::Zstd);
    let cart = carts
        .create_cart(authed(CreateCartRequest::default(), &token))
        .await
        .expect("zstd-compressed CreateCart")
        .into_inner()
        .cart
        .expect("a cart");
    let response = carts
        .add_item(authed(long_named_item(&cart.cart_id), &token))
        .await
        .expect("zstd-compressed AddItem");
    assert_eq!(
        response
            .metadata()
            .get("grpc-encoding")
            .and_then(|v| v.to_str().ok()),
        Some("zstd"),
        "the answer is compressed with the encoding the client accepts"
    );
    let cart = response.into_inner().cart.expect("a cart");
    assert_eq!(cart.items[0].product_name, long_named_item("").product_name);

    // A client that accepts nothing gets plain answers.
    let mut plain = CartServiceClient::new(app.channel.clone()).send_compressed(CompressionEncoding::Gzip);
    let response = plain
        .add_item(authed(add_item(&cart.cart_id, "pen", 1, "1.00"), &token))
        .await
        .expect("gzip-compressed AddItem");
    assert!(response.metadata().get("grpc-encoding").is_none());
}

#[tokio::test]
async fn response_compression_can_be_switched_off_while_compressed_requests_stay_accepted() {
    let app = spawn_app_with(
        crate::support::app::Backend::from_env(),
        &[("GRPC_RESPONSE_COMPRESSION", "false")],
    )
    .await;
    let token = app.customer("no-compression");
    let mut carts = CartServiceClient::new(app.channel.clone())
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd);
    let response = carts
        .create_cart(authed(CreateCartRequest::default(), &token))
        .await
        .expect("gzip-compressed CreateCart");
    assert!(response.metadata().get("grpc-encoding").is_none());
}

/// `grpcurl -plaintext ADDR list`, one service per line.
async fn grpcurl_list(grpcurl: &std::path::Path, addr: &str) -> Vec<String> {
    let out = tokio::process::Command::new(grpcurl)
        .args(["-plaintext", addr, "list"])
        .output()
        .await
        .expect("grpcurl ran");
    assert!(
        out.status.success(),
        "grpcurl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut services: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    services.sort();
    services
}

#[tokio::test]
async fn reflection_lists_only_what_each_port_serves() {
    let Some(grpcurl) = tools::grpcurl() else {
        return;
    };
    let app = spawn_app().await;
    let listed = grpcurl_list(&grpcurl, &format!("127.0.0.1:{}", app.port)).await;
    assert_eq!(
        listed,
        [
            "commerce.events.v1.OrderEventService",
            "commerce.v1.AdminService",
            "commerce.v1.CartService",
            "commerce.v1.OrderService",
            "commerce.v1.SagaAdmin",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ]
    );

    let (url, _) = spawn_stubs(&[]).await;
    let listed = grpcurl_list(&grpcurl, url.trim_start_matches("http://")).await;
    assert_eq!(
        listed,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
            "inventory.v1.InventoryService",
            "payment.v1.PaymentService",
            "shipping.v1.ShippingService",
        ]
    );
}

/// grpcurl 1.8.6 (grpc-go 1.44) cannot compress a request and so advertises
/// no `grpc-accept-encoding` of its own: grpc-go sends that header only
/// beside a compressed request, so by default our answers reach it plain.
/// Given the header with `-H`, it gets every answer gzip-compressed by the
/// server and decodes it (grpc-go's gzip codec is linked in): the same
/// `describe` output (reflection answers of several KB: file descriptors
/// with their comments), with far fewer bytes through a counting proxy.
#[tokio::test]
async fn grpcurl_decodes_the_servers_gzip_answers_once_it_advertises_gzip() {
    let Some(grpcurl) = tools::grpcurl() else {
        return;
    };
    let app = spawn_app().await;
    let proxy = Proxy::start(format!("127.0.0.1:{}", app.port)).await;
    let describe = async |headers: &[&str]| {
        let before = proxy.bytes_down();
        let mut command = tokio::process::Command::new(&grpcurl);
        command.arg("-plaintext");
        for header in headers {
            command.args(["-H", header]);
        }
        let out = command
            .args([&proxy.addr.to_string(), "describe", "commerce.v1.OrderService"])
            .output()
            .await
            .expect("grpcurl ran");
        assert!(
            out.status.success(),
            "grpcurl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            proxy.bytes_down() - before,
        )
    };
    let (plain, plain_bytes) = describe(&[]).await;
    let (gzip, gzip_bytes) = describe(&["grpc-accept-encoding: gzip"]).await;
    assert!(plain.contains("rpc CreateOrder"), "{plain}");
    assert_eq!(gzip, plain, "the decoded answers are the same");
    assert!(
        plain_bytes > 4096 && gzip_bytes * 2 < plain_bytes,
        "answers compressed: {gzip_bytes} bytes with gzip against {plain_bytes} without"
    );
}
