//! The shim's self-description: `/openapi.json` covers every route the
//! product promises (the REST column of the README) and every http rule, and `/docs` renders it offline in
//! a real (headless) browser.

use std::path::PathBuf;

use commerce::rest::rules::RULES;

use crate::support::{
    app::spawn_app,
    browser::{chromium, find_chromium},
    rest::call,
};

/// The REST routes the product promises, one per rpc with a REST mapping.
const DESIGN_ROUTES: &[(&str, &str, &str)] = &[
    ("post", "/api/v1/cart/", "CreateCart"),
    ("get", "/api/v1/cart/active", "GetActiveCart"),
    ("get", "/api/v1/cart/{cart_id}", "GetCart"),
    ("post", "/api/v1/cart/{cart_id}/items", "AddItem"),
    (
        "put",
        "/api/v1/cart/{cart_id}/items/{product_id}",
        "UpdateItemQuantity",
    ),
    (
        "delete",
        "/api/v1/cart/{cart_id}/items/{product_id}",
        "RemoveItem",
    ),
    ("delete", "/api/v1/cart/{cart_id}", "DeleteCart"),
    ("get", "/api/v1/admin/analytics/carts", "GetCartAnalytics"),
    ("post", "/api/v1/orders/", "CreateOrder"),
    ("get", "/api/v1/orders/{order_id}", "GetOrder"),
    ("get", "/api/v1/orders/", "ListOrders"),
    ("post", "/api/v1/orders/{order_id}/cancel", "CancelOrder"),
    ("get", "/api/v1/orders/{order_id}/events", "GetOrderHistory"),
    ("get", "/api/v1/orders/{order_id}/watch", "WatchOrder"),
    ("get", "/api/v1/admin/sagas", "ListSagas"),
    ("get", "/api/v1/admin/sagas/{saga_id}", "GetSaga"),
    ("post", "/api/v1/admin/sagas/{saga_id}/retry", "RetrySaga"),
];

#[tokio::test]
async fn openapi_json_describes_every_design_route_and_every_http_rule() {
    let app = spawn_app().await;
    let reply = call(&app, "GET", "/openapi.json").send().await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), "application/json");
    let doc = reply.json();
    assert_eq!(doc["openapi"], "3.0.3");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );
    for (verb, path, rpc) in DESIGN_ROUTES {
        let op = &doc["paths"][path][verb];
        assert_eq!(op["summary"], *rpc, "{verb} {path} missing from /openapi.json");
    }
    for rule in RULES {
        let op = &doc["paths"][rule.path][rule.verb.to_ascii_lowercase()];
        assert_eq!(op["operationId"], format!("{}_{}", rule.service_name(), rule.rpc));
        assert!(
            op["responses"]["default"]["content"]["application/json"]["schema"]["$ref"]
                .as_str()
                .is_some_and(|r| r.ends_with("/Status"))
        );
    }
    // Response schemas use the proto field names, as the wire does.
    let cart = &doc["components"]["schemas"]["commerce.v1.Cart"]["properties"];
    assert!(cart["item_count"].is_object() && cart.get("itemCount").is_none());
    assert_eq!(
        cart["version"]["type"], "string",
        "int64 is a string in proto3 JSON"
    );
}

#[tokio::test]
async fn the_docs_page_and_its_assets_are_served_from_the_binary() {
    let app = spawn_app().await;
    let page = call(&app, "GET", "/docs").send().await;
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").starts_with("text/html"));
    let html = page.text();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external links: {html}"
    );
    for asset in ["docs/swagger-ui-bundle.js", "docs/swagger-ui.css", "docs/docs.js"] {
        assert!(html.contains(asset), "{asset}");
        let reply = call(&app, "GET", &format!("/{asset}")).send().await;
        assert_eq!(reply.status, 200, "{asset}");
        assert!(reply.body.len() > 100, "{asset}");
    }
    let init = call(&app, "GET", "/docs/docs.js").send().await.text();
    assert!(
        init.contains("validatorUrl: null"),
        "the online validator stays off"
    );
    let slash = call(&app, "GET", "/docs/").send().await;
    assert_eq!(slash.status, 308);
}

#[tokio::test]
async fn a_headless_browser_shows_the_cart_and_order_operations_on_the_docs_page() {
    let Some(binary) = find_chromium() else {
        return;
    };
    let app = spawn_app().await;
    let url = format!("{}/docs", app.base_url);
    let profile = tempfile::tempdir().unwrap();
    let dom = chromium(&binary, profile.path(), &["--dump-dom".into(), url.clone()]).await;
    // Swagger UI breaks long paths with zero-width spaces.
    let text = dom.replace('\u{200b}', "");
    for needle in [
        "CartService",
        "OrderService",
        "AddItem",
        "/api/v1/cart/{cart_id}/items",
        "CreateOrder",
        "/api/v1/orders/",
        "GetCartAnalytics",
        "ListSagas",
    ] {
        assert!(
            text.contains(needle),
            "the rendered page lacks {needle}: {}",
            &text[..text.len().min(3000)]
        );
    }
    assert!(text.contains("opblock"), "Swagger UI rendered operation blocks");

    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("rest-docs");
    std::fs::create_dir_all(&out).unwrap();
    let shot = out.join("docs.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &binary,
        profile.path(),
        &[format!("--screenshot={}", shot.display()), url],
    )
    .await;
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot at {}",
        shot.display()
    );
}
