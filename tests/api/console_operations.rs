//! The console's other operations in headless Chromium: cancelling an order
//! with its compensations shown first, dead letters inspected and replayed
//! after a preview, and projection lag sampled into a chart.

use std::time::Duration;

use commerce::{
    bus::EventEnvelope,
    proto::commerce::v1::{ListDeadLettersRequest, SagaStatus},
};
use serde_json::json;
use uuid::Uuid;

use super::console::signed_in;
use crate::support::{
    app::{Backend, authed, spawn_app_with},
    eventually,
    saga::{OrderSpec, place, saga, wait_saga},
    webdriver::{Browser, find_driver, screenshot_dir},
};

#[tokio::test]
async fn an_operator_cancels_an_order_replays_a_dead_letter_and_watches_projection_lag_in_the_console() {
    let Some((driver, chromium)) = find_driver() else {
        return;
    };
    let backend = Backend::from_env();
    let app = spawn_app_with(backend, &[("SAGA_RETRY_ATTEMPTS", "2")]).await;
    // FAILED at authorize_payment (three transient failures), before any capture: a cancel
    // still compensates.
    let order = place(
        &app,
        "erin",
        OrderSpec {
            payment_method: "pm_transient_3",
            ..Default::default()
        },
    )
    .await;
    wait_saga(&app, &order.saga_id, SagaStatus::Failed).await;
    let fine = place(&app, "carol", OrderSpec::default()).await;
    wait_saga(&app, &fine.saga_id, SagaStatus::Completed).await;
    // A poison entry (a stream that does not start with OrderCreated): each of the three
    // projections dead-letters it.
    let stored = app
        .app
        .events
        .read_stream(fine.order_id.parse().unwrap(), 1)
        .await
        .unwrap();
    let mut poison = EventEnvelope::from(&stored[1]);
    poison.stream_id = Uuid::now_v7();
    poison.version = 1;
    app.app.bus.publish(std::slice::from_ref(&poison)).await.unwrap();
    let letters = eventually(Duration::from_secs(20), || async {
        let letters = app
            .admin_client()
            .list_dead_letters(authed(ListDeadLettersRequest { page_size: 0 }, &app.admin()))
            .await
            .unwrap()
            .into_inner()
            .dead_letters;
        (letters.len() == 3).then_some(letters)
    })
    .await
    .expect("three dead letters");

    let shots = screenshot_dir("operations");
    let browser = Browser::start(&driver, &chromium, 1280, 1000).await;
    signed_in(&browser, &app, &app.admin(), &shots).await;

    // Cancel: what would be compensated is shown first, in reverse, with the keys.
    browser
        .goto(&format!("{}/console#/saga/{}", app.base_url, order.saga_id))
        .await;
    browser
        .wait(
            "the saga",
            "return document.querySelector('#saga-summary .badge')?.textContent === 'FAILED'",
            json!([]),
        )
        .await;
    browser.click("#act-cancel").await;
    let plan = browser
        .wait(
            "the compensation preview",
            "return document.getElementById('confirm').open \
             && document.getElementById('plan').textContent",
            json!([]),
        )
        .await;
    assert_eq!(
        plan,
        "Nothing has succeeded yet: only the order is cancelled (cancel_order)."
    );
    browser.screenshot(&shots.join("02-cancel-preview.png")).await;
    assert_eq!(
        saga(&app, &order.saga_id).await.status(),
        SagaStatus::Failed,
        "nothing is sent before the confirmation"
    );
    browser
        .type_into("#confirm-reason", "customer called support")
        .await;
    browser.click("#confirm-ok").await;
    let compensated = browser
        .wait(
            "the saga COMPENSATED",
            "return document.querySelector('#saga-summary .badge')?.textContent === 'COMPENSATED' \
             && [...document.querySelectorAll('#timeline svg g.comp')].map(g => g.dataset.step)",
            json!([]),
        )
        .await;
    assert!(
        compensated.as_array().unwrap().contains(&json!("cancel_order")),
        "the compensation is a row of the timeline: {compensated}"
    );
    assert_eq!(saga(&app, &order.saga_id).await.status(), SagaStatus::Compensated);
    assert!(
        browser
            .text("#saga-summary")
            .await
            .contains("customer called support")
    );
    browser.screenshot(&shots.join("03-cancelled.png")).await;

    // Dead letters: listed, one inspected, it alone replayed after the preview.
    browser.click("#nav a[data-view=dead-letters]").await;
    browser
        .wait(
            "the dead letters",
            "return document.querySelectorAll('#dl-table .dl-pick').length === 3",
            json!([]),
        )
        .await;
    browser.click("#dl-table tbody tr:first-child button").await;
    let detail = browser.text("#dl-detail").await;
    assert!(
        detail.contains(&letters[0].id)
            && detail.contains(&poison.event_id.to_string())
            && detail.contains("PaymentAuthorized"),
        "{detail}"
    );
    browser.click("#dl-table tbody tr:first-child .dl-pick").await;
    browser.click("#dl-replay").await;
    let preview = browser
        .wait(
            "the replay preview",
            "return document.getElementById('confirm').open \
             && document.querySelectorAll('#plan li').length",
            json!([]),
        )
        .await;
    assert_eq!(preview, 1, "only the selected entry");
    assert!(browser.text("#plan").await.contains(&letters[0].projection));
    browser.screenshot(&shots.join("04-replay-preview.png")).await;
    browser.click("#confirm-ok").await;
    browser
        .wait(
            "the replay",
            "return document.getElementById('status').textContent === 'Replayed 1 entry.' \
             && document.querySelectorAll('#dl-table .dl-pick').length === 2",
            json!([]),
        )
        .await;
    let left = app
        .admin_client()
        .list_dead_letters(authed(ListDeadLettersRequest { page_size: 0 }, &app.admin()))
        .await
        .unwrap()
        .into_inner()
        .dead_letters;
    assert!(left.iter().all(|l| l.id != letters[0].id), "{left:?}");

    // Projections: the table and one line per projection, from the page's own samples.
    browser.click("#nav a[data-view=projections]").await;
    let lines = browser
        .wait(
            "the lag chart",
            "const rows = [...document.querySelectorAll('#proj-table tbody tr[data-projection]')]; \
             const lines = [...document.querySelectorAll('#lag-chart svg polyline')]; \
             return rows.length === 3 && lines.length === 3 \
               && lines.every(l => l.getAttribute('points').split(' ').length >= 2) \
               && lines.map(l => l.dataset.projection)",
            json!([]),
        )
        .await;
    assert_eq!(
        lines,
        json!(["cart_conversion", "customer_orders", "order_detail"]),
        "one line per projection, each sampled at least twice"
    );
    browser.screenshot(&shots.join("05-projections.png")).await;
    println!("console screenshots (operations): {}", shots.display());
}
