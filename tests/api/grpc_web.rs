//! grpc-web on the service port, from a real browser: headless Chromium runs
//! Connect's grpc-web transport (`@connectrpc/connect-web`) over TypeScript
//! generated from our protos by protoc-gen-es (`tools/browser-client`, built by
//! its `build.sh` from the committed package-lock.json), served from another
//! origin, so the CORS preflight for the grpc-web headers is exercised too.

use std::path::PathBuf;

use commerce::proto::commerce::v1::{AddItemRequest, GetOrderRequest};
use prost::Message;
use serde_json::{Value, json};

use crate::support::{
    app::{Backend, authed, spawn_app_with},
    browser::{Page, find_chromium, run_page},
    orders::{order_request, place_order},
    rest::{Reply, call},
};

/// Builds the browser bundle (npm ci when the lock changed, buf generate,
/// tsc, esbuild) once per test process; its path. Once, because two builds at
/// the same time regenerate the same `gen/` directory under each other's tsc.
async fn browser_client() -> PathBuf {
    static BUNDLE: tokio::sync::OnceCell<PathBuf> = tokio::sync::OnceCell::const_new();
    BUNDLE
        .get_or_init(|| async {
            let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tools/browser-client/build.sh");
            let output = tokio::process::Command::new(&script)
                .output()
                .await
                .expect("tools/browser-client/build.sh runs");
            assert!(
                output.status.success(),
                "building the browser client failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
        })
        .await
        .clone()
}

/// A page that runs the bundle's `entry` (`run` or `refusals`) with `config`.
fn page(bundle: Vec<u8>, entry: &str, config: &Value) -> Page {
    let index = format!(
        r#"<!doctype html><html><body><script type="module">
import {{ {entry} }} from './client.js';
const report = seen => fetch('/result', {{ method: 'POST', body: JSON.stringify(seen) }});
{entry}({config}).then(report, error => report({{ error: String(error), stack: error && error.stack }}));
</script></body></html>"#
    );
    Page {
        files: vec![
            ("index.html".into(), "text/html", index.into_bytes()),
            ("client.js".into(), "text/javascript", bundle),
        ],
    }
}

#[tokio::test]
async fn a_browser_orders_and_watches_the_order_over_grpc_web_with_a_connect_client() {
    let Some(binary) = find_chromium() else {
        return;
    };
    let bundle = std::fs::read(browser_client().await).expect("the bundle");
    for backend in Backend::all() {
        let app = spawn_app_with(backend, &[]).await;
        let token = app.customer("web-wendy");
        let config = json!({
            "baseUrl": app.base_url,
            "token": token,
            "idempotencyKey": format!("web-{}", uuid::Uuid::new_v4()),
        });
        let seen = run_page(&binary, page(bundle.clone(), "run", &config)).await;
        assert!(
            seen.get("error").is_none(),
            "{backend:?}: the page failed: {seen}"
        );
        assert_eq!(seen["cartSubtotal"], "39.98", "{seen}");

        // The stream: statuses in order, each a newer version, ending CONFIRMED.
        let watched = seen["watched"].as_array().unwrap();
        let statuses: Vec<&str> = watched.iter().map(|w| w["status"].as_str().unwrap()).collect();
        assert_eq!(statuses.last(), Some(&"CONFIRMED"), "{backend:?}: {seen}");
        let versions: Vec<u64> = watched
            .iter()
            .map(|w| w["version"].as_str().unwrap().parse().unwrap())
            .collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");

        // Errors reach the browser with their codes: the service's, and the auth layer's.
        assert_eq!(seen["refusal"]["code"], "NotFound", "{seen}");
        assert_eq!(seen["anonymous"]["code"], "Unauthenticated", "{seen}");

        // The order the browser placed is the customer's, as any gRPC client sees it.
        let order_id = seen["orderId"].as_str().unwrap().to_string();
        let order = app
            .orders()
            .get_order(authed(
                GetOrderRequest {
                    order_id,
                    min_version: 0,
                },
                &token,
            ))
            .await
            .unwrap()
            .into_inner()
            .order
            .unwrap();
        assert_eq!(order.total, seen["orderTotal"].as_str().unwrap());
        assert_eq!(order.items.len(), 1);
    }
}

/// Answers made in front of the services (the deadline, the unknown-route
/// fallback, the message-size bound, the rate limit) are grpc-web too: the
/// Connect client reads each as its code, not as a broken response.
#[tokio::test]
async fn refusals_made_in_front_of_the_services_reach_a_connect_client_with_their_codes() {
    let Some(binary) = find_chromium() else {
        return;
    };
    let bundle = std::fs::read(browser_client().await).expect("the bundle");
    let limits = [
        ("MAX_MESSAGE_BYTES", "1024"),
        ("RATE_LIMIT_PER_SECOND", "1"),
        ("RATE_LIMIT_BURST", "20"),
    ];
    let app = spawn_app_with(Backend::Embedded, &limits).await;
    let token = app.customer("web-rita");
    let order = place_order(
        &app.channel,
        &token,
        &[("book", 1, "9.99")],
        |cart| order_request(cart, &format!("web-{}", uuid::Uuid::new_v4())),
        &[],
    )
    .await;
    let config = json!({
        "baseUrl": app.base_url,
        "token": token,
        "orderId": order.order_id,
        "floodToken": app.customer("web-flood"),
        "floodCalls": 60,
    });
    let seen = run_page(&binary, page(bundle, "refusals", &config)).await;
    assert!(seen.get("error").is_none(), "the page failed: {seen}");
    // Only the server can have ended it: the page set no timer of its own.
    assert_eq!(seen["deadline"]["code"], "DeadlineExceeded", "{seen}");
    assert!(
        seen["deadline"]["message"]
            .as_str()
            .unwrap()
            .contains("deadline of 300 ms"),
        "{seen}"
    );
    assert_eq!(seen["unknownService"]["code"], "Unimplemented", "{seen}");
    assert!(
        seen["unknownService"]["message"]
            .as_str()
            .unwrap()
            .contains("payment.v1.PaymentService/Authorize"),
        "{seen}"
    );
    assert_eq!(seen["oversize"]["code"], "ResourceExhausted", "{seen}");
    assert_eq!(seen["rateLimited"]["code"], "ResourceExhausted", "{seen}");
    assert!(
        seen["rateLimited"]["message"]
            .as_str()
            .unwrap()
            .contains("rate limit"),
        "{seen}"
    );
    // The calls before the limit reached the service (no active cart: NOT_FOUND).
    assert_eq!(seen["flooded"][0], "NotFound", "{seen}");
}

/// A grpc-web call over HTTP/1.1 as browsers make it: one framed message.
async fn grpc_web(
    app: &crate::support::app::TestApp,
    path: &str,
    headers: &[(&str, &str)],
    message: &impl Message,
) -> Reply {
    let bytes = message.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&u32::try_from(bytes.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(&bytes);
    let mut request = call(app, "POST", path).raw("application/grpc-web+proto", framed);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    request.send().await
}

/// The grpc-status of a grpc-web answer: in the headers (trailers-only), or
/// in the trailer frame (flag 0x80) at the end of the body.
fn grpc_web_status(reply: &Reply) -> String {
    if !reply.header("grpc-status").is_empty() {
        return reply.header("grpc-status").to_string();
    }
    let mut body = &reply.body[..];
    while body.len() >= 5 {
        let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
        let (frame, rest) = body[5..].split_at(len);
        if body[0] & 0x80 != 0 {
            let text = String::from_utf8_lossy(frame);
            return text
                .lines()
                .find_map(|l| l.trim().strip_prefix("grpc-status:"))
                .unwrap_or_default()
                .trim()
                .to_string();
        }
        body = rest;
    }
    String::new()
}

/// Every refusal a grpc-web caller can get, raw: typed grpc-web (never
/// `application/grpc`, which grpc-web clients refuse), HTTP 200, the code in
/// grpc-status: the unknown-route fallback (unknown service), tonic's unknown
/// method, the auth layer (no token, rate limit), the deadline, the size bound.
#[tokio::test]
async fn every_refusal_in_front_of_the_services_is_typed_grpc_web() {
    let limits = [
        ("MAX_MESSAGE_BYTES", "1024"),
        ("RATE_LIMIT_PER_SECOND", "1"),
        ("RATE_LIMIT_BURST", "20"),
    ];
    let app = spawn_app_with(Backend::Embedded, &limits).await;
    let token = app.customer("raw-web");
    let bearer = format!("Bearer {token}");
    let order = place_order(
        &app.channel,
        &token,
        &[("book", 1, "9.99")],
        |cart| order_request(cart, "raw-web-1"),
        &[],
    )
    .await;
    let waiting = GetOrderRequest {
        order_id: order.order_id.clone(),
        min_version: 1_000_000,
    };
    let oversized = AddItemRequest {
        cart_id: uuid::Uuid::new_v4().to_string(),
        product_id: "big".into(),
        product_name: "x".repeat(4096),
        quantity: 1,
        unit_price: "1.00".into(),
        expected_version: None,
    };
    let auth = ("authorization", bearer.as_str());
    let cases: Vec<(&str, Reply, &str)> = vec![
        (
            "unknown service",
            grpc_web(&app, "/payment.v1.PaymentService/Authorize", &[auth], &waiting).await,
            "12",
        ),
        (
            "unknown method",
            grpc_web(&app, "/commerce.v1.CartService/Nope", &[auth], &waiting).await,
            "12",
        ),
        (
            "no token",
            grpc_web(&app, "/commerce.v1.OrderService/GetOrder", &[], &waiting).await,
            "16",
        ),
        (
            "deadline",
            grpc_web(
                &app,
                "/commerce.v1.OrderService/GetOrder",
                &[auth, ("grpc-timeout", "200m")],
                &waiting,
            )
            .await,
            "4",
        ),
        (
            "oversized",
            grpc_web(&app, "/commerce.v1.CartService/AddItem", &[auth], &oversized).await,
            "8",
        ),
    ];
    for (what, reply, code) in &cases {
        assert_eq!(reply.status, 200, "{what}: {reply:?}");
        assert_eq!(
            reply.header("content-type"),
            "application/grpc-web+proto",
            "{what}: {reply:?}"
        );
        assert_eq!(grpc_web_status(reply), *code, "{what}: {reply:?}");
    }
    let flood = format!("Bearer {}", app.customer("raw-flood"));
    let mut last = None;
    for _ in 0..60 {
        let reply = grpc_web(
            &app,
            "/commerce.v1.CartService/GetActiveCart",
            &[("authorization", flood.as_str())],
            &commerce::proto::commerce::v1::GetActiveCartRequest {},
        )
        .await;
        if grpc_web_status(&reply) == "8" {
            last = Some(reply);
            break;
        }
    }
    let limited = last.expect("the rate limit refused within 60 calls");
    assert_eq!(
        limited.header("content-type"),
        "application/grpc-web+proto",
        "{limited:?}"
    );
    assert!(limited.header("grpc-message").contains("rate"), "{limited:?}");
}
