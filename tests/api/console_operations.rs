//! The console's other operations in headless Chromium: cancelling an order
//! with its compensations shown first, dead letters inspected and replayed
//! after a preview, projection lag sampled into a chart, and the public
//! feed's named consumers with their lag, before and after an Ack.

use std::time::Duration;

use commerce::{
    bus::EventEnvelope,
    proto::commerce::{
        events::v1::EventType,
        v1::{ListDeadLettersRequest, SagaStatus},
    },
};
use serde_json::json;
use uuid::Uuid;

use super::console::signed_in;
use crate::support::{
    app::{Backend, TestApp, authed, spawn_app_with},
    events::{ack, all_positions, append_orders, create_consumer, get_consumer},
    eventually,
    saga::{OrderSpec, place, saga, wait_saga},
    store::EventLog,
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

/// The consumer table's rows once every lag shown in events is the lag
/// GetConsumer answers for that consumer now, each row as its cells' text.
async fn consumer_rows_matching_the_api(
    browser: &Browser,
    app: &TestApp,
    names: &[&str],
) -> Vec<Vec<String>> {
    let read = "return [...document.querySelectorAll('#consumer-table tbody tr[data-consumer]')] \
                .map(r => [...r.cells].map(c => c.textContent))";
    let matched = eventually(Duration::from_secs(20), || async {
        let rows: Vec<Vec<String>> = serde_json::from_value(browser.run(read, json!([])).await).ok()?;
        let mut lags = Vec::new();
        for name in names {
            lags.push(get_consumer(&app.channel, &app.admin(), name).await.lag_events);
        }
        let shown: Vec<(String, i64)> = rows
            .iter()
            .map(|row| (row[0].clone(), row[4].parse().expect("lag in events is a number")))
            .collect();
        let wanted: Vec<(String, i64)> = names.iter().map(|n| n.to_string()).zip(lags).collect();
        (shown == wanted).then_some(rows)
    })
    .await;
    matched.unwrap_or_else(|| panic!("the consumer table never showed GetConsumer's lag for {names:?}"))
}

#[tokio::test]
async fn an_operator_reads_each_event_consumers_lag_in_the_console_and_sees_it_shrink_after_an_ack() {
    let Some((driver, chromium)) = find_driver() else {
        return;
    };
    for backend in Backend::all() {
        let app = spawn_app_with(backend, &[]).await;
        // A saga for the console's list, and more events in the log after it.
        let order = place(&app, "carol", OrderSpec::default()).await;
        wait_saga(&app, &order.saga_id, SagaStatus::Completed).await;
        append_orders(&EventLog::of(&app.app), 4).await;

        let shots = screenshot_dir(&format!("consumers-{backend:?}").to_lowercase());
        let browser = Browser::start(&driver, &chromium, 1280, 1400).await;
        signed_in(&browser, &app, &app.admin(), &shots).await;
        browser.click("#nav a[data-view=projections]").await;
        let empty = browser
            .wait(
                "the consumer table's empty state",
                "return !document.querySelector('#consumer-table tr[data-consumer]') \
                   && document.querySelector('#consumer-table td.empty')?.textContent",
                json!([]),
            )
            .await;
        assert!(
            empty.as_str().unwrap().starts_with("No event consumers"),
            "{empty}"
        );
        browser.screenshot(&shots.join("02-no-consumers.png")).await;

        // billing takes every type and has acknowledged the head; notifications filters
        // and has acknowledged nothing.
        let admin = app.admin();
        let filter = [EventType::OrderCreated, EventType::OrderConfirmed];
        create_consumer(&app.channel, &admin, "notifications", &filter).await;
        create_consumer(&app.channel, &admin, "billing", &[]).await;
        let positions = all_positions(app.app.events.as_ref()).await;
        let (head, halfway) = (*positions.last().unwrap(), positions[positions.len() / 2]);
        ack(&app.channel, &admin, "billing", head).await;
        let names = ["billing", "notifications"];
        let rows = consumer_rows_matching_the_api(&browser, &app, &names).await;
        let behind = get_consumer(&app.channel, &admin, "notifications").await;
        assert!(
            behind.lag_events >= positions.len() as i64,
            "{backend:?}: {behind:?}"
        );
        assert_eq!(get_consumer(&app.channel, &admin, "billing").await.lag_events, 0);
        let positions_shown: Vec<&str> = rows.iter().map(|r| r[2].as_str()).collect();
        assert_eq!(positions_shown, [head.to_string().as_str(), "0"]);
        assert_eq!(rows[0][1], "all");
        let filter_shown: Vec<&str> = rows[1][1].split(", ").collect();
        let filter_kept: Vec<&str> = behind
            .event_types()
            .map(|t| t.as_str_name().trim_start_matches("EVENT_TYPE_"))
            .collect();
        assert_eq!(filter_shown, filter_kept, "in the API's order");
        assert_eq!(filter_kept.len(), filter.len());
        assert!(rows[1][3].starts_with("never (created "), "{rows:?}");
        // Seconds, then (past two minutes) the same in a larger unit.
        let seconds: f64 = rows[1][5]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .expect("lag in seconds is a number");
        assert!(
            seconds > 0.0 && seconds <= behind.lag_seconds + 0.05,
            "{backend:?}: shown {seconds} s, GetConsumer later {} s",
            behind.lag_seconds
        );
        assert_eq!(rows[0][5], "0.0", "caught up: no age");
        let lines = browser
            .wait(
                "a line per consumer, sampled twice",
                "const lines = [...document.querySelectorAll('#consumer-lag-chart svg polyline')]; \
                 return lines.length === 2 && lines.every(l => l.getAttribute('points').split(' ').length >= 2) \
                   && lines.map(l => l.dataset.consumer)",
                json!([]),
            )
            .await;
        assert_eq!(lines, json!(names));
        browser.screenshot(&shots.join("03-consumers.png")).await;

        // An Ack halfway: the table and the chart's latest sample show the smaller lag.
        let acked = ack(&app.channel, &admin, "notifications", halfway).await;
        assert!(
            0 < acked.lag_events && acked.lag_events < behind.lag_events,
            "{acked:?}"
        );
        let rows = consumer_rows_matching_the_api(&browser, &app, &names).await;
        assert_eq!(rows[1][2], halfway.to_string());
        assert!(!rows[1][3].starts_with("never"), "{rows:?}");
        let latest = format!("notifications {}", acked.lag_events);
        let title = browser
            .wait(
                "the chart's latest sample",
                "const t = document.getElementById('consumer-lag-svg-title').textContent; \
                 return t.endsWith(arguments[0]) && t",
                json!([latest]),
            )
            .await;
        assert!(title.as_str().unwrap().contains("latest: billing 0, "), "{title}");
        browser.screenshot(&shots.join("04-after-ack.png")).await;
        println!(
            "console screenshots (consumers, {backend:?}): {}",
            shots.display()
        );
    }
}
