//! grpc-web on the service port, from a real browser: headless Chromium runs
//! Connect's grpc-web transport (`@connectrpc/connect-web`) over TypeScript
//! generated from our protos by protoc-gen-es (`tools/browser-client`, built by
//! its `build.sh` from the committed package-lock.json), served from another
//! origin, so the CORS preflight for the grpc-web headers is exercised too.

use std::path::PathBuf;

use commerce::proto::commerce::v1::GetOrderRequest;
use serde_json::{Value, json};

use crate::support::{
    app::{Backend, authed, spawn_app_with},
    browser::{Page, find_chromium, run_page},
};

/// Builds the browser bundle (npm ci when the lock changed, buf generate,
/// tsc, esbuild); its path.
async fn browser_client() -> PathBuf {
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
}

fn page(bundle: Vec<u8>, config: &Value) -> Page {
    let index = format!(
        r#"<!doctype html><html><body><script type="module">
import {{ run }} from './client.js';
const report = seen => fetch('/result', {{ method: 'POST', body: JSON.stringify(seen) }});
run({config}).then(report, error => report({{ error: String(error), stack: error && error.stack }}));
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
        let seen = run_page(&binary, page(bundle.clone(), &config)).await;
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
