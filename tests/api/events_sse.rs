//! The public event feed over REST: Subscribe as Server-Sent Events at
//! `GET /api/v1/events`, read by a real `curl -N`. Each event's `id:` is its
//! position in the settled log (an event's or a Checkpoint's), and
//! `Last-Event-ID` resumes right after it, also when it was given with
//! `from_now` and, on PostgreSQL, when positions arrive out of numeric order;
//! the filters are query parameters; customers are refused.

use std::time::Duration;

use commerce::{auth::Role, db::Db, projections::samples::SampleOrder};
use serde_json::Value;

use crate::support::{
    app::{Backend, TestApp, spawn_app_with},
    events::{all_positions, append_orders},
    sse::{Curl, Frame},
    store::EventLog,
};

const WAIT: Duration = Duration::from_secs(30);

fn feed_url(app: &TestApp, query: &str) -> String {
    format!("{}/api/v1/events{query}", app.base_url)
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

fn service(app: &TestApp) -> String {
    bearer(&app.token("search", &[Role::Service]))
}

/// The position a frame carries, checked against its `id:`.
fn position(frame: &Frame) -> (i64, bool) {
    let json = frame.json();
    let (position, is_event) = match (&json["event"], &json["checkpoint"]) {
        (Value::Object(event), _) => (&event["position"], true),
        (_, Value::Object(checkpoint)) => (&checkpoint["position"], false),
        _ => panic!("neither an event nor a checkpoint: {frame:?}"),
    };
    // int64 in proto3 JSON is a string.
    let position: i64 = position.as_str().map_or(0, |p| p.parse().unwrap());
    assert_eq!(
        frame.id.as_deref(),
        Some(position.to_string().as_str()),
        "the id is the position: {frame:?}"
    );
    (position, is_event)
}

/// Reads until `count` events came; their positions, in stream order.
async fn read_events(stream: &mut Curl, count: usize) -> Vec<i64> {
    let mut positions = Vec::with_capacity(count);
    while positions.len() < count {
        let frame = stream.event(WAIT).await.expect("the stream goes on");
        assert_eq!(frame.event, None, "no error event: {frame:?}");
        if let (position, true) = position(&frame) {
            positions.push(position);
        }
    }
    positions
}

/// The first frame: a Checkpoint with the start.
async fn checkpoint(stream: &mut Curl) -> i64 {
    let frame = stream.event(WAIT).await.expect("a first message");
    let (position, is_event) = position(&frame);
    assert!(!is_event, "a Checkpoint first: {frame:?}");
    position
}

#[tokio::test]
async fn subscribe_over_sse_resumes_from_the_last_event_id_and_delivers_every_event_once() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, &[("ENABLE_SAGA_ORCHESTRATION", "false")]).await;
        let log = EventLog::of(&app.app);
        let auth = service(&app);
        append_orders(&log, 2).await;

        let mut first = Curl::get(&feed_url(&app, ""), &[&auth]).await;
        assert_eq!(first.status, 200, "{backend:?}: {:?}", first.headers);
        assert_eq!(first.header("content-type"), Some("text/event-stream"));
        assert_eq!(checkpoint(&mut first).await, 0, "{backend:?}: from the start");
        let mut delivered = read_events(&mut first, 7).await;
        drop(first);

        // Written while the client is away; the reconnect (same URL, Last-Event-ID) sees it.
        append_orders(&log, 1).await;
        let last = delivered.last().unwrap().to_string();
        let mut resumed = Curl::get(&feed_url(&app, ""), &[&auth, &format!("Last-Event-ID: {last}")]).await;
        assert_eq!(resumed.status, 200);
        assert_eq!(checkpoint(&mut resumed).await.to_string(), last, "{backend:?}");
        delivered.extend(read_events(&mut resumed, 11).await);
        assert_eq!(
            delivered,
            all_positions(app.app.events.as_ref()).await,
            "{backend:?}: the settled log once, in order, across the reconnect"
        );
        drop(resumed);

        // from_now: the head first; a reconnect with the same URL and its id does
        // not jump to the new head (that would skip what came meanwhile).
        let url = feed_url(&app, "?from_now=true");
        let mut live = Curl::get(&url, &[&auth]).await;
        let head = checkpoint(&mut live).await;
        assert_eq!(head, *delivered.last().unwrap(), "{backend:?}: the head");
        drop(live);
        append_orders(&log, 1).await;
        let mut back = Curl::get(&url, &[&auth, &format!("Last-Event-ID: {head}")]).await;
        assert_eq!(checkpoint(&mut back).await, head);
        let fresh = read_events(&mut back, 6).await;
        let all = all_positions(app.app.events.as_ref()).await;
        assert_eq!(fresh, all[all.len() - 6..], "{backend:?}: what came while away");

        // Filters and the other start fields are query parameters.
        let created = feed_url(
            &app,
            &format!(
                "?event_types=EVENT_TYPE_ORDER_CREATED&after_position={}",
                delivered[0]
            ),
        );
        let mut filtered = Curl::get(&created, &[&auth]).await;
        assert_eq!(checkpoint(&mut filtered).await, delivered[0]);
        let frame = filtered.event(WAIT).await.unwrap();
        assert_eq!(
            frame.json()["event"]["event_type"],
            "EVENT_TYPE_ORDER_CREATED",
            "{backend:?}: {frame:?}"
        );
        assert_eq!(position(&frame).0, delivered[6], "the second order's first event");
    }
}

#[tokio::test]
async fn customers_and_strangers_are_refused_the_feed_with_json_errors() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, &[("ENABLE_SAGA_ORCHESTRATION", "false")]).await;
        let url = feed_url(&app, "");
        for (headers, status, code) in [
            (vec![], 401, 16),
            (vec![bearer(&app.customer("ann"))], 403, 7),
            (vec![bearer("not-a-token")], 401, 16),
        ] {
            let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
            let refused = Curl::get(&url, &headers).await;
            assert_eq!(refused.status, status, "{backend:?}: {headers:?}");
            assert_eq!(refused.header("content-type"), Some("application/json"));
            let body: Value = serde_json::from_str(&refused.rest().await).unwrap();
            assert_eq!(body["code"], code, "{backend:?}: {body}");
        }
        let auth = service(&app);
        let made_up = Curl::get(&url, &[&auth, "Last-Event-ID: 987654"]).await;
        assert_eq!(made_up.status, 400, "{backend:?}: a position no event has");
        let body: Value = serde_json::from_str(&made_up.rest().await).unwrap();
        assert_eq!(
            body["details"][0]["field_violations"][0]["field"], "resume_after_position",
            "{body}"
        );
    }
}

/// On PostgreSQL a transaction that began first but wrote its event last is
/// delivered first, with the larger position: the id of that event resumes
/// before the smaller positions still to come (a client going by "greater
/// than" would skip them).
#[tokio::test]
async fn on_postgres_an_id_smaller_positions_follow_still_resumes_without_a_skip() {
    let app = spawn_app_with(Backend::Real, &[("ENABLE_SAGA_ORCHESTRATION", "false")]).await;
    let Db::Postgres(pool) = &app.app.backends.db else {
        unreachable!("the real backend is PostgreSQL")
    };
    let log = EventLog::of(&app.app);
    let auth = service(&app);
    let mut stream = Curl::get(&feed_url(&app, ""), &[&auth]).await;
    assert_eq!(checkpoint(&mut stream).await, 0);

    // The older transaction takes its id now and writes its event after a younger one committed.
    let mut older = pool.begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *older)
        .await
        .unwrap();
    append_orders(&log, 1).await;
    let order = SampleOrder::new("late", 1);
    let created = SampleOrder::encode(&[order.created()]).remove(0);
    let late: i64 = sqlx::query_scalar(
        "INSERT INTO events (event_id, stream_id, stream_type, version, event_type, schema_version, payload, \
         metadata) VALUES ($1, $2, 'order', 1, $3, $4, $5, '{}') RETURNING global_position",
    )
    .bind(created.event_id)
    .bind(order.order_id)
    .bind(&created.event_type)
    .bind(created.schema_version)
    .bind(&created.payload)
    .fetch_one(&mut *older)
    .await
    .unwrap();
    older.commit().await.unwrap();

    let first = read_events(&mut stream, 1).await[0];
    assert_eq!(first, late, "the older transaction's event is settled first");
    drop(stream);
    let mut resumed = Curl::get(&feed_url(&app, ""), &[&auth, &format!("Last-Event-ID: {late}")]).await;
    assert_eq!(checkpoint(&mut resumed).await, late);
    let rest = read_events(&mut resumed, 6).await;
    assert!(
        rest.iter().all(|p| *p < late),
        "smaller positions after the id: {rest:?} after {late}"
    );
    let mut all = vec![late];
    all.extend(&rest);
    assert_eq!(all, all_positions(app.app.events.as_ref()).await);
}
