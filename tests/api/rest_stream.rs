//! Server streams over REST: WatchOrder as Server-Sent Events, read by a real
//! `curl -N` and by headless Chromium's fetch streaming with an Authorization
//! header. Events carry the order version as `id:`; `Last-Event-ID` or
//! `after_version` resumes; heartbeats fill the silence; refusals before the
//! first event are plain JSON errors with their HTTP status; the stream's
//! lifetime ends it cleanly.

use std::time::Duration;

use serde_json::Value;

use crate::support::{
    app::{Backend, TestApp, spawn_app_with},
    browser::{Page, find_chromium, run_page},
    orders::{append_next, pending_order},
    sse::Curl,
};

const WAIT: Duration = Duration::from_secs(20);
/// Heartbeats every 200 ms, so that an idle stream shows one quickly.
const FAST_HEARTBEAT: (&str, &str) = ("SSE_HEARTBEAT_SECONDS", "0.2");

fn watch_url(app: &TestApp, order_id: &str) -> String {
    format!("{}/api/v1/orders/{order_id}/watch", app.base_url)
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

/// The order of an event, with its version as the event id.
fn order_of(frame: &crate::support::sse::Frame) -> (String, String) {
    let json = frame.json();
    let order = &json["order"];
    assert_eq!(
        frame.id.as_deref(),
        order["version"].as_str(),
        "the id is the order version: {frame:?}"
    );
    (
        order["version"].as_str().unwrap_or_default().to_string(),
        order["status"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test]
async fn watch_order_over_rest_streams_events_with_heartbeats_and_resumes_from_the_last_event_id() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, &[FAST_HEARTBEAT]).await;
        let (order, life) = pending_order(&app, "sse-ann").await;
        let id = order.order_id.to_string();
        let auth = bearer(&app.customer("sse-ann"));

        let mut stream = Curl::get(&watch_url(&app, &id), &[&auth]).await;
        assert_eq!(stream.status, 200, "{backend:?}");
        assert_eq!(stream.header("content-type"), Some("text/event-stream"));
        assert_eq!(stream.header("cache-control"), Some("no-cache"));
        let first = stream.event(WAIT).await.expect("the current state");
        assert_eq!(order_of(&first), ("1".into(), "ORDER_STATUS_PENDING".into()));
        let idle = stream
            .frame(WAIT)
            .await
            .expect("a heartbeat while nothing changes");
        assert_eq!(
            (idle.comments.as_slice(), idle.data.as_str()),
            (&["heartbeat".to_string()][..], "")
        );
        append_next(&app, &order, &life, 1).await;
        let second = stream.event(WAIT).await.expect("the change");
        assert_eq!(
            order_of(&second),
            ("2".into(), "ORDER_STATUS_PAYMENT_AUTHORIZED".into())
        );
        drop(stream);

        // Reconnecting with the last id seen: nothing is sent again, the next change is.
        let mut resumed = Curl::get(&watch_url(&app, &id), &[&auth, "Last-Event-ID: 2"]).await;
        assert_eq!(resumed.status, 200);
        let quiet = resumed.frame(WAIT).await.unwrap();
        assert!(
            quiet.data.is_empty() && !quiet.comments.is_empty(),
            "{backend:?}: {quiet:?}"
        );
        append_next(&app, &order, &life, 2).await;
        let third = resumed.event(WAIT).await.unwrap();
        assert_eq!(
            order_of(&third),
            ("3".into(), "ORDER_STATUS_INVENTORY_RESERVED".into())
        );
        drop(resumed);

        // The query parameter resumes too; the header, being newer, wins over it.
        let url = format!("{}?after_version=1", watch_url(&app, &id));
        let mut by_query = Curl::get(&url, &[&auth, "Last-Event-ID: 3"]).await;
        // One change at a time: changes between two looks of the feed are reported as the latest.
        append_next(&app, &order, &life, 3).await;
        let shipped = by_query.event(WAIT).await.unwrap();
        assert_eq!(
            order_of(&shipped).1,
            "ORDER_STATUS_SHIPPING_ARRANGED",
            "{backend:?}"
        );
        for version in 4..6 {
            append_next(&app, &order, &life, version).await;
        }
        let confirmed = by_query.event(WAIT).await.unwrap();
        assert_eq!(
            order_of(&confirmed),
            ("6".into(), "ORDER_STATUS_CONFIRMED".into())
        );
        assert!(
            by_query.event(WAIT).await.is_none(),
            "a terminal status ends the stream"
        );
        assert_eq!(by_query.exit_code().await, Some(0), "a clean end, not a cut");

        // A terminal order already seen: a clean, empty stream; one version back: its last state.
        let seen = Curl::get(&format!("{}?after_version=6", watch_url(&app, &id)), &[&auth]).await;
        assert_eq!(seen.status, 200);
        assert_eq!(seen.rest().await, "", "{backend:?}");
        let mut behind = Curl::get(&watch_url(&app, &id), &[&auth, "Last-Event-ID: 5"]).await;
        assert_eq!(order_of(&behind.event(WAIT).await.unwrap()).0, "6");
        assert!(behind.event(WAIT).await.is_none());
    }
}

#[tokio::test]
async fn a_stream_at_its_lifetime_ends_cleanly_and_the_last_event_id_picks_it_up() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, &[("WATCH_MAX_LIFETIME_SECONDS", "1"), FAST_HEARTBEAT]).await;
        let (order, life) = pending_order(&app, "sse-bob").await;
        let (id, auth) = (order.order_id.to_string(), bearer(&app.customer("sse-bob")));
        let mut stream = Curl::get(&watch_url(&app, &id), &[&auth]).await;
        let first = stream.event(WAIT).await.unwrap();
        let last_id = first.id.clone().expect("an id");
        let end = stream.event(WAIT).await;
        assert!(
            end.is_none(),
            "{backend:?}: the lifetime ends the stream without an error event: {end:?}"
        );
        assert_eq!(stream.exit_code().await, Some(0));

        append_next(&app, &order, &life, 1).await;
        let mut again = Curl::get(
            &watch_url(&app, &id),
            &[&auth, &format!("Last-Event-ID: {last_id}")],
        )
        .await;
        let next = again.event(WAIT).await.unwrap();
        assert_eq!(
            order_of(&next),
            ("2".into(), "ORDER_STATUS_PAYMENT_AUTHORIZED".into())
        );
    }
}

#[tokio::test]
async fn stream_refusals_before_the_first_event_are_json_errors_with_their_http_status() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, &[("WATCH_MAX_STREAMS_PER_CALLER", "1")]).await;
        let (order, _) = pending_order(&app, "sse-cy").await;
        let id = order.order_id.to_string();
        let auth = bearer(&app.customer("sse-cy"));
        let refused = |status: u16, field: Option<&'static str>| {
            move |curl: Curl| async move {
                assert_eq!(curl.status, status, "{:?}", curl.headers);
                assert_eq!(curl.header("content-type"), Some("application/json"));
                let retry_after = curl.header("retry-after").map(str::to_string);
                let body: Value = serde_json::from_str(&curl.rest().await).unwrap();
                if let Some(field) = field {
                    assert_eq!(
                        body["details"][0]["field_violations"][0]["field"], field,
                        "{body}"
                    );
                }
                (body, retry_after)
            }
        };
        let url = watch_url(&app, &id);
        let (body, _) = refused(401, None)(Curl::get(&url, &[]).await).await;
        assert_eq!(body["code"], 16, "{backend:?}: {body}");
        let stranger = bearer(&app.customer("sse-eve"));
        refused(404, None)(Curl::get(&url, &[&stranger]).await).await;
        let unknown = watch_url(&app, &uuid::Uuid::new_v4().to_string());
        refused(404, None)(Curl::get(&unknown, &[&auth]).await).await;
        refused(400, Some("order_id"))(Curl::get(&watch_url(&app, "nope"), &[&auth]).await).await;
        let negative = format!("{url}?after_version=-1");
        refused(400, Some("after_version"))(Curl::get(&negative, &[&auth]).await).await;
        refused(400, Some("after_version"))(Curl::get(&url, &[&auth, "Last-Event-ID: abc"]).await).await;

        // The per-caller cap: a second stream while the first is open.
        let mut open = Curl::get(&url, &[&auth]).await;
        assert!(open.event(WAIT).await.is_some());
        let (body, retry_after) = refused(429, None)(Curl::get(&url, &[&auth]).await).await;
        assert_eq!(body["code"], 8, "{body}");
        assert_eq!(retry_after.as_deref(), Some("1"));
    }
}

/// The page Chromium runs: fetch with an Authorization header, read the
/// body as a stream, parse the events and report what it saw.
fn sse_page(url: &str, token: &str) -> String {
    format!(
        r#"<!doctype html><html><body><script>
const report = seen => fetch('/result', {{ method: 'POST', body: JSON.stringify(seen) }});
(async () => {{
  const response = await fetch({url:?}, {{ headers: {{ Authorization: 'Bearer {token}' }} }});
  const seen = {{ status: response.status, type: response.headers.get('content-type'), events: [], heartbeats: 0 }};
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {{
    const {{ value, done }} = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {{
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = {{}};
      for (const line of block.split('\n')) {{
        const colon = line.indexOf(':');
        const field = line.slice(0, colon), value = line.slice(colon + 1).trimStart();
        if (field === '') seen.heartbeats += 1; else event[field] = value;
      }}
      if (event.data) seen.events.push({{ id: event.id, order: JSON.parse(event.data).order }});
    }}
  }}
  await report(seen);
}})().catch(error => report({{ error: String(error) }}));
</script></body></html>"#
    )
}

#[tokio::test]
async fn a_browser_reads_watch_order_with_fetch_streaming_and_an_authorization_header() {
    let Some(binary) = find_chromium() else {
        return;
    };
    for backend in Backend::all() {
        let app = spawn_app_with(backend, &[FAST_HEARTBEAT]).await;
        let (order, life) = pending_order(&app, "sse-dora").await;
        let id = order.order_id.to_string();
        let page = Page {
            files: vec![(
                "index.html".into(),
                "text/html",
                sse_page(&watch_url(&app, &id), &app.customer("sse-dora")).into_bytes(),
            )],
        };

        // The order moves on once the browser's stream is open, pausing
        // long enough between changes for heartbeats.
        let watches = app.app.queries.watches().clone();
        let mover = async {
            crate::support::eventually(WAIT, || async { (watches.open_streams() == 1).then_some(()) })
                .await
                .expect("the browser opened the stream");
            for version in 1..6 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                append_next(&app, &order, &life, version).await;
            }
        };
        let (seen, ()) = tokio::join!(run_page(&binary, page), mover);
        assert_eq!(seen["status"], 200, "{seen}");
        assert_eq!(seen["type"], "text/event-stream");
        let events: Vec<(String, String)> = seen["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["id"].as_str().unwrap().to_string(),
                    e["order"]["status"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        // Every change in order (several between two looks of the feed come as the
        // latest), each a newer version, from the current state to CONFIRMED.
        let ids: Vec<u64> = events.iter().map(|(id, _)| id.parse().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{backend:?}: {events:?}");
        let order_of_status = |status: &str| {
            [
                "PENDING",
                "PAYMENT_AUTHORIZED",
                "INVENTORY_RESERVED",
                "SHIPPING_ARRANGED",
                "CONFIRMED",
            ]
            .iter()
            .position(|s| format!("ORDER_STATUS_{s}") == status)
            .unwrap_or_else(|| panic!("unknown status {status}"))
        };
        let ranks: Vec<usize> = events.iter().map(|(_, status)| order_of_status(status)).collect();
        assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{backend:?}: {events:?}");
        assert_eq!(events.first().map(|(id, _)| id.as_str()), Some("1"), "{events:?}");
        assert_eq!(
            events.last(),
            Some(&("6".to_string(), "ORDER_STATUS_CONFIRMED".to_string()))
        );
        assert!(seen["heartbeats"].as_u64().unwrap() >= 1, "{seen}");
    }
}
