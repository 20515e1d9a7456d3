//! The read side through the running service: projections fed by the relay,
//! order queries with ownership, paging and watching, the admin tools.

use commerce::store::read_models::ReadModels as _;
use std::time::Duration;

use commerce::{
    bus::EventEnvelope,
    proto::commerce::v1::{GetProjectionStatusRequest, ListDeadLettersRequest, ReplayDeadLettersRequest},
};
use tonic::Code;
use uuid::Uuid;

use crate::support::{
    app::{Backend, authed, spawn_app_with},
    read_side::place,
};

#[tokio::test]
async fn admins_see_projection_status_and_health_reports_lag() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, &[]).await;
        let order = place(&app, "alice").await;
        let mut admin = app.admin_client();
        let denied = admin
            .get_projection_status(authed(GetProjectionStatusRequest {}, &app.customer("alice")))
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);
        // The projections catch up: checkpoints reach the head.
        let mut caught_up = false;
        for _ in 0..100 {
            let status = admin
                .get_projection_status(authed(GetProjectionStatusRequest {}, &app.admin()))
                .await
                .unwrap()
                .into_inner();
            let names: Vec<_> = status.projections.iter().map(|p| p.name.as_str()).collect();
            assert_eq!(
                names,
                ["cart_conversion", "customer_orders", "order_detail"],
                "{backend:?}"
            );
            if status
                .projections
                .iter()
                .all(|p| p.head >= 6 && p.lag_events == 0 && p.checkpoint == p.head)
            {
                caught_up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(caught_up, "{backend:?}");
        assert!(
            app.app
                .queries
                .store()
                .order_detail(order.order_id)
                .await
                .unwrap()
                .is_some()
        );
        // /health carries the projections' lag (reported every 2 s).
        let mut health = serde_json::Value::Null;
        // Reported every 2 s: wait (generously, CI machines are shared) for a
        // report taken after the catch-up.
        for _ in 0..300 {
            health = serde_json::to_value(app.app.health.report().await).unwrap();
            let caught_up = |p: &serde_json::Value| p["head"].as_i64() >= Some(6) && p["lag_events"] == 0;
            if health["projections"]
                .as_array()
                .is_some_and(|p| p.len() == 3 && p.iter().all(caught_up))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(health["projections"][0]["lag_events"], 0, "{backend:?}: {health}");
    }
}

#[tokio::test]
async fn dead_letters_are_listed_and_replayed_by_admins_only() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, &[]).await;
        let order = place(&app, "bob").await;
        let stored = app.app.events.read_stream(order.order_id, 1).await.unwrap();
        // An event whose stream does not start with OrderCreated: poison.
        let mut poison = EventEnvelope::from(&stored[1]);
        poison.stream_id = Uuid::now_v7();
        poison.version = 1;
        app.app.bus.publish(std::slice::from_ref(&poison)).await.unwrap();
        let mut admin = app.admin_client();
        let mut letters = Vec::new();
        for _ in 0..100 {
            letters = admin
                .list_dead_letters(authed(ListDeadLettersRequest { page_size: 0 }, &app.admin()))
                .await
                .unwrap()
                .into_inner()
                .dead_letters;
            // One per projection: each consumer group gives up on its own.
            if letters.len() == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(letters.len(), 3, "{backend:?}: {letters:?}");
        assert!(letters.iter().all(|l| l.event_id == poison.event_id.to_string()));
        assert!(
            letters
                .iter()
                .all(|l| l.event_type == "PaymentAuthorized" && l.deliveries >= 5)
        );
        let denied = admin
            .replay_dead_letters(authed(
                ReplayDeadLettersRequest { ids: vec![] },
                &app.customer("bob"),
            ))
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);
        let replayed = admin
            .replay_dead_letters(authed(
                ReplayDeadLettersRequest {
                    ids: vec![letters[0].id.clone()],
                },
                &app.admin(),
            ))
            .await
            .unwrap()
            .into_inner()
            .replayed;
        assert_eq!(replayed, 1, "{backend:?}");
        let left = admin
            .list_dead_letters(authed(ListDeadLettersRequest { page_size: 10 }, &app.admin()))
            .await
            .unwrap()
            .into_inner()
            .dead_letters;
        assert!(
            left.iter().all(|l| l.id != letters[0].id),
            "{backend:?}: replayed one left the list"
        );
    }
}

#[tokio::test]
async fn rebuild_projections_runs_while_the_service_keeps_answering() {
    let app = spawn_app_with(Backend::from_env(), &[]).await;
    let mut orders = Vec::new();
    for i in 0..30 {
        orders.push(place(&app, &format!("p{}", i % 3)).await);
    }
    let token = app.customer("p0");
    let mine: Vec<_> = orders.iter().filter(|o| o.customer_id == "p0").collect();
    let id = mine[0].order_id.to_string();
    // Queries keep succeeding while the command replays and swaps.
    let reader = {
        let mut client = app.orders();
        let (token, id) = (token.clone(), id.clone());
        tokio::spawn(async move {
            let mut answered = 0;
            for _ in 0..40 {
                let request = commerce::proto::commerce::v1::GetOrderRequest {
                    order_id: id.clone(),
                    min_version: 6,
                };
                let order = client
                    .get_order(authed(request, &token))
                    .await
                    .unwrap()
                    .into_inner()
                    .order
                    .unwrap();
                assert_eq!(order.version, 6);
                answered += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            answered
        })
    };
    // PostgreSQL readers see events once every older transaction in the cluster ended.
    crate::support::wait_for_within("settled events", Duration::from_secs(30), || async {
        app.app.events.read_all(0, 200).await.unwrap().len() == 180
    })
    .await;
    // The command as `commerce rebuild-projections` runs it: its own pool.
    let report = commerce::startup::rebuild::command(
        &app.config.database,
        50,
        commerce::startup::rebuild::EmptyStore::Refuse,
    )
    .await
    .unwrap();
    assert_eq!(report.events, 180);
    assert!(report.rate() > 0.0);
    assert_eq!(reader.await.unwrap(), 40);
    let status = app
        .admin_client()
        .get_projection_status(authed(GetProjectionStatusRequest {}, &app.admin()))
        .await
        .unwrap()
        .into_inner();
    assert!(
        status
            .projections
            .iter()
            .all(|p| !p.rebuilding && p.checkpoint == report.position)
    );
    let list = app
        .orders()
        .list_orders(authed(
            commerce::proto::commerce::v1::ListOrdersRequest {
                page_size: 100,
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .orders;
    assert_eq!(
        list.len(),
        mine.len(),
        "the rebuilt list has every order of the customer"
    );
}
