//! The operator console at `/console`: served from the binary under a strict
//! Content-Security-Policy, calling only the public REST routes, and driven
//! in headless Chromium through a failed saga's whole repair (sign in, filter,
//! timeline, dry-run confirmation, retry, COMPLETED), with screenshots left in
//! `target/console-screenshots/`.

use commerce::{
    proto::commerce::v1::SagaStatus,
    rest::{console::CONTENT_SECURITY_POLICY, rules::RULES},
};
use serde_json::{Value, json};

use crate::support::{
    app::{Backend, TestApp, spawn_app, spawn_app_with},
    rest::call,
    saga::{OrderSpec, place, saga, wait_saga},
    webdriver::{Browser, find_driver, screenshot_dir},
};

const SCRIPT: &str = include_str!("../../assets/console/console.js");

#[tokio::test]
async fn the_console_is_served_from_the_binary_under_a_policy_that_forbids_inline_script() {
    let app = spawn_app().await;
    let page = call(&app, "GET", "/console").send().await;
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").starts_with("text/html"));
    let csp = page.header("content-security-policy");
    assert_eq!(csp, CONTENT_SECURITY_POLICY);
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(page.header("x-content-type-options"), "nosniff");
    let html = page.text();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external links: {html}"
    );
    // Every script is a file of this origin; no inline handlers or styles.
    for (i, chunk) in html.split("<script").enumerate().skip(1) {
        assert!(chunk.trim_start().starts_with("src="), "inline script #{i}");
    }
    for inline in ["onclick=", "onload=", "style=", "<style"] {
        assert!(!html.contains(inline), "inline {inline} in the page");
    }
    for asset in ["console/console.js", "console/console.css"] {
        assert!(html.contains(asset), "{asset}");
        let reply = call(&app, "GET", &format!("/{asset}")).send().await;
        assert_eq!(reply.status, 200, "{asset}");
        assert!(reply.body.len() > 1000, "{asset}");
        assert_eq!(reply.header("content-security-policy"), CONTENT_SECURITY_POLICY);
    }
    assert_eq!(call(&app, "GET", "/console/").send().await.status, 308);
}

#[test]
fn the_console_calls_only_public_rest_routes() {
    // Every API path in the script, its `${...}` parts as path variables,
    // must be a route of the shim: no private back door.
    let mut paths: Vec<String> = Vec::new();
    for quote in ['\'', '`'] {
        for piece in SCRIPT.split(quote).skip(1).step_by(2) {
            if let Some(path) = piece.strip_prefix("/api/v1/") {
                let path = path.split('?').next().unwrap();
                paths.push(format!("/api/v1/{path}"));
            }
        }
    }
    assert!(paths.len() >= 7, "{paths:?}");
    let shape = |path: &str| -> Vec<String> {
        path.trim_end_matches('/')
            .split('/')
            .map(|part| {
                if part.starts_with("${") || part.starts_with('{') {
                    "*".to_string()
                } else {
                    part.to_string()
                }
            })
            .collect()
    };
    for path in &paths {
        assert!(
            RULES.iter().any(|rule| shape(rule.path) == shape(path)),
            "{path} is not a public REST route"
        );
    }
}

/// A browser on the console of `app`, signed in as `token` (after a customer's
/// token was turned away); the sign-in form saved to `shots`.
pub(super) async fn signed_in(browser: &Browser, app: &TestApp, token: &str, shots: &std::path::Path) {
    browser.goto(&format!("{}/console", app.base_url)).await;
    browser
        .wait(
            "the sign-in form",
            "return !document.getElementById('view-login').hidden",
            json!([]),
        )
        .await;
    browser.screenshot(&shots.join("01-sign-in.png")).await;
    // A customer's token is turned away with the reason shown.
    browser.type_into("#token", &app.customer("mallory")).await;
    browser.click("#sign-in").await;
    let refused = browser
        .wait(
            "the refusal",
            "return document.getElementById('login-error').textContent",
            json!([]),
        )
        .await;
    assert!(refused.as_str().unwrap().contains("403"), "{refused}");
    browser
        .run("document.getElementById('token').value = ''", json!([]))
        .await;
    browser.type_into("#token", token).await;
    browser.click("#sign-in").await;
    browser
        .wait(
            "the saga list",
            "return !document.getElementById('view-sagas').hidden \
             && document.querySelectorAll('#saga-table tbody tr[data-saga]').length",
            json!([]),
        )
        .await;
    let stored = browser
        .run(
            "return sessionStorage.getItem('commerce.console.token')",
            json!([]),
        )
        .await;
    assert_eq!(stored, token, "the token lives in this tab's session storage");
}

/// The count shown at the top for `status`.
async fn count_of(browser: &Browser, status: &str) -> String {
    browser
        .wait(
            "the counts",
            "const c = document.querySelector(`#saga-counts [data-status=\"${arguments[0]}\"] .count-n`); \
             return c && c.textContent",
            json!([status]),
        )
        .await
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn an_operator_finds_a_failed_saga_in_the_console_reads_its_timeline_and_retries_it_to_completion() {
    let Some((driver, chromium)) = find_driver() else {
        return;
    };
    for backend in Backend::all() {
        // pm_capture_transient_3: Capture fails three times; 1 try + 2 retries = 3, so the
        // saga stops FAILED at capture_payment, just before the pivot.
        let app = spawn_app_with(backend, &[("SAGA_RETRY_ATTEMPTS", "2")]).await;
        let fine = place(&app, "carol", OrderSpec::default()).await;
        let broken = place(
            &app,
            "dave",
            OrderSpec {
                payment_method: "pm_capture_transient_3",
                ..Default::default()
            },
        )
        .await;
        wait_saga(&app, &fine.saga_id, SagaStatus::Completed).await;
        wait_saga(&app, &broken.saga_id, SagaStatus::Failed).await;

        let shots = screenshot_dir(&format!("{backend:?}").to_lowercase());
        let browser = Browser::start(&driver, &chromium, 1280, 1000).await;
        signed_in(&browser, &app, &app.admin(), &shots).await;
        assert_eq!(count_of(&browser, "FAILED").await, "1");
        assert_eq!(count_of(&browser, "COMPLETED").await, "1");
        assert_eq!(count_of(&browser, "RUNNING").await, "0");
        browser.screenshot(&shots.join("02-list.png")).await;

        // Find it by filter (status, customer and current step): only the failed saga is
        // left, at its failed step, and the counts follow the filters.
        browser.click("#f-status option[value=FAILED]").await;
        browser.type_into("#f-customer_id", "dave").await;
        browser.type_into("#f-current_step", "capture_payment").await;
        browser.click("#apply-filters").await;
        let rows = browser
            .wait(
                "the filtered list",
                "const rows = [...document.querySelectorAll('#saga-table tbody tr[data-saga]')]; \
                 return location.hash.includes('SAGA_STATUS_FAILED') && location.hash.includes('customer_id=dave') \
                   && location.hash.includes('current_step=capture_payment') && rows.length === 1 \
                   && rows.map(r => [r.dataset.saga, r.innerText])",
                json!([]),
            )
            .await;
        assert_eq!(rows[0][0], broken.saga_id.as_str());
        let row = rows[0][1].as_str().unwrap();
        assert!(row.contains("FAILED") && row.contains("capture_payment"), "{row}");
        browser
            .wait(
                "the counts under the filters",
                "const n = (s) => document.querySelector(`#saga-counts [data-status=\"${s}\"] .count-n`)?.textContent; \
                 return n('FAILED') === '1' && n('COMPLETED') === '0'",
                json!([]),
            )
            .await;
        browser.screenshot(&shots.join("03-filtered.png")).await;

        // Its timeline: three failed capture attempts with backoff waits between, the
        // steps before it done once each, the pivot marked, keys and history beside.
        browser
            .click(&format!("#saga-table tr[data-saga=\"{}\"] a", broken.saga_id))
            .await;
        let picture = browser
            .wait(
                "the timeline",
                "const row = (s) => document.querySelector(`#timeline svg g[data-step=\"${s}\"]`); \
                 const capture = row('capture_payment'); \
                 if (!capture) return null; \
                 return { \
                   capture: [...capture.querySelectorAll('rect.attempt')].map(r => r.dataset.outcome), \
                   waits: capture.querySelectorAll('line.wait').length, \
                   authorize: [...row('authorize_payment').querySelectorAll('rect.attempt')].map(r => r.dataset.outcome), \
                   pivot: [...document.querySelectorAll('#timeline svg .pivot-label')].map(t => t.textContent), \
                   title: document.querySelector('#timeline svg title').textContent, \
                   desc: document.querySelector('#timeline svg desc').textContent, \
                 }",
                json!([]),
            )
            .await;
        assert_eq!(
            picture["capture"],
            json!(["transient_error", "transient_error", "transient_error"])
        );
        assert_eq!(picture["waits"], 2, "the two backoff waits are drawn");
        assert_eq!(picture["authorize"], json!(["succeeded"]));
        assert_eq!(picture["pivot"], json!(["◆ pivot"]), "marked, not yet passed");
        assert!(
            picture["desc"]
                .as_str()
                .unwrap()
                .contains("capture_payment: FAILED, 3 attempt(s)"),
            "{picture}"
        );
        let steps = browser.text("#steps-table").await;
        for step in ["authorize_payment", "reserve_inventory", "create_shipment"] {
            assert!(
                steps.contains(&format!("{}/dave-order:{step}", broken.order_id)),
                "idempotency key of {step}: {steps}"
            );
        }
        let history = browser.text("#history").await;
        assert!(history.contains("OrderCreated"), "{history}");
        assert!(
            history.contains("capture_payment attempt 3: transient_error UNAVAILABLE"),
            "{history}"
        );
        assert!(browser.text("#saga-summary").await.contains("FAILED"));
        browser.screenshot(&shots.join("04-timeline.png")).await;

        // Retry: the dry-run plan first, with the keys it would send; no reason, no retry.
        browser.click("#act-retry").await;
        let plan = browser
            .wait(
                "the dry-run plan",
                "return document.getElementById('confirm').open \
                 && document.getElementById('plan').innerText",
                json!([]),
            )
            .await;
        let plan = plan.as_str().unwrap();
        for step in ["capture_payment", "confirm_order"] {
            assert!(
                plan.contains(&format!("{}/dave-order:{step}", broken.order_id)),
                "{plan}"
            );
        }
        assert!(
            !plan.contains("authorize_payment"),
            "done steps are not rerun: {plan}"
        );
        assert!(browser.text("#confirm-title").await.contains("dry-run plan"));
        browser.screenshot(&shots.join("05-dry-run.png")).await;
        browser.click("#confirm-ok").await;
        assert_eq!(browser.text("#confirm-error").await, "A reason is required.");
        assert_eq!(
            saga(&app, &broken.saga_id).await.status(),
            SagaStatus::Failed,
            "neither the dry run nor an unconfirmed dialog changed anything"
        );
        browser
            .type_into("#confirm-reason", "payment provider recovered")
            .await;
        browser.click("#confirm-ok").await;

        // COMPLETED, on the page: the pivot passed, the fourth capture succeeded, the
        // operator's action with its reason listed.
        browser
            .wait(
                "the saga COMPLETED",
                "return document.querySelector('#saga-summary .badge')?.textContent === 'COMPLETED'",
                json!([]),
            )
            .await;
        let after: Value = browser
            .run(
                "const capture = document.querySelector('#timeline svg g[data-step=\"capture_payment\"]'); \
                 return { \
                   capture: [...capture.querySelectorAll('rect.attempt')].map(r => r.dataset.outcome), \
                   pivot: [...document.querySelectorAll('#timeline svg .pivot-label')].map(t => t.textContent), \
                   operator: [...document.querySelectorAll('#timeline svg .operator-label')].map(t => t.textContent), \
                   operator_wait: capture.querySelectorAll('line.wait-operator').length, \
                   status: document.getElementById('status').textContent, \
                 }",
                json!([]),
            )
            .await;
        assert_eq!(
            after["capture"],
            json!([
                "transient_error",
                "transient_error",
                "transient_error",
                "succeeded"
            ])
        );
        assert_eq!(after["pivot"], json!(["◆ pivot", "pivot passed"]));
        assert_eq!(after["operator"], json!(["retry (operator)"]));
        assert_eq!(
            after["status"], "Retried capture_payment: saga now COMPLETED.",
            "{after}"
        );
        assert_eq!(
            after["operator_wait"], 1,
            "the wait for the operator is drawn as such"
        );
        let actions = browser.text("#actions-table").await;
        assert!(
            actions.contains("retry")
                && actions.contains("capture_payment")
                && actions.contains("admin-1")
                && actions.contains("payment provider recovered"),
            "{actions}"
        );
        let done = saga(&app, &broken.saga_id).await;
        assert_eq!(done.status(), SagaStatus::Completed);
        assert_eq!(done.operator_actions[0].reason, "payment provider recovered");
        browser.screenshot(&shots.join("06-completed.png")).await;

        // Every form control has a label; on a phone the page is one column.
        let unlabelled = browser
            .run(
                "return [...document.querySelectorAll('input, select, textarea')] \
                   .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')) \
                   .map(e => e.id || e.outerHTML)",
                json!([]),
            )
            .await;
        assert_eq!(unlabelled, json!([]));
        browser.resize(390, 844).await;
        let columns = browser
            .wait(
                "the narrow layout",
                "const c = getComputedStyle(document.querySelector('.split')).gridTemplateColumns; \
                 return c.split(' ').length === 1 && c",
                json!([]),
            )
            .await;
        assert!(columns.is_string());
        browser.screenshot(&shots.join("07-narrow.png")).await;
        browser
            .run("document.getElementById('timeline').scrollIntoView()", json!([]))
            .await;
        browser.screenshot(&shots.join("08-narrow-timeline.png")).await;
        println!("console screenshots ({backend:?}): {}", shots.display());
    }
}
