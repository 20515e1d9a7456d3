//! The public order-event feed (`commerce.events.v1`): the published contract of a
//! real order (and of a forgotten customer's), filters and checkpoints, named
//! consumers that resume after their acknowledged position, lag in the API and in
//! /metrics, and who may do what.

use std::time::Duration;

use commerce::{
    projections::samples::SampleOrder,
    proto::{
        commerce::events::v1::{
            AckRequest, CancellationReasonCode, CreateConsumerRequest, DeleteConsumerRequest, EventType,
            GetConsumerRequest, ListConsumersRequest, SubscribeRequest, order_event::Payload,
            subscribe_response::Message,
        },
        commerce::v1::{ForgetCustomerRequest, GetOrderRequest, OrderStatus},
    },
    store::event_store::{EventMetadata, ORDER_STREAM},
};
use tonic::Code;

use crate::support::{
    app::{Backend, TestApp, authed, spawn_app_with},
    events::{
        ack, all_positions, append_orders, assert_no_repeats, by_consumer, client, create_consumer, events,
        next, subscribe,
    },
    orders::{order_request, place_order, violated_fields},
    rest::http_get,
    store::EventLog,
    wait_for_within,
};

fn service(app: &TestApp) -> String {
    app.token("notifications", &[commerce::auth::Role::Service])
}

async fn confirmed(app: &TestApp, token: &str, order_id: &str) -> bool {
    let request = GetOrderRequest {
        order_id: order_id.into(),
        min_version: 0,
    };
    app.orders()
        .get_order(authed(request, token))
        .await
        .is_ok_and(|r| r.into_inner().order.unwrap().status == OrderStatus::Confirmed as i32)
}

#[tokio::test]
async fn a_placed_order_is_published_in_the_public_contract_and_reads_erased_after_forget() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, &[]).await;
        let alice = app.customer("alice");
        let order = place_order(
            &app.channel,
            &alice,
            &[("sku-1", 2, "19.99")],
            |cart| order_request(cart, "k-1"),
            &[],
        )
        .await;
        wait_for_within("the saga to confirm the order", Duration::from_secs(30), || {
            confirmed(&app, &alice, &order.order_id)
        })
        .await;

        let mut stream = subscribe(&app.channel, &service(&app), SubscribeRequest::default())
            .await
            .unwrap();
        assert_eq!(
            next(&mut stream).await,
            Message::Checkpoint(Default::default()),
            "{backend:?}: starts at 0"
        );
        let published = events(&mut stream, 6).await;
        let kinds: Vec<i32> = published.iter().map(|e| e.event_type).collect();
        let expected = [
            EventType::OrderCreated,
            EventType::PaymentAuthorized,
            EventType::StockReserved,
            EventType::ShipmentCreated,
            EventType::PaymentCaptured,
            EventType::OrderConfirmed,
        ];
        assert_eq!(kinds, expected.map(|t| t as i32), "{backend:?}");
        let stored = app
            .app
            .events
            .read_stream(order.order_id.parse().unwrap(), 1)
            .await
            .unwrap();
        for (i, (event, stored)) in published.iter().zip(&stored).enumerate() {
            assert_eq!(event.order_id, order.order_id);
            assert_eq!(
                event.stream_version,
                i as i64 + 1,
                "{backend:?}: versions gapless from 1"
            );
            assert_eq!(event.position, stored.global_position);
            assert_eq!(event.event_id, stored.event_id.to_string());
            assert!(event.occurred_at.is_some());
        }
        let Some(Payload::OrderCreated(created)) = &published[0].payload else {
            panic!("{backend:?}: OrderCreated first, got {:?}", published[0]);
        };
        assert_eq!(created.customer_id, "alice");
        assert_eq!(
            (created.total.as_str(), created.currency.as_str()),
            ("39.98", "USD")
        );
        assert_eq!(created.items[0].quantity, 2);
        assert_eq!(created.payment_method, "pm_card_visa");
        assert_eq!(
            created.shipping_address.as_ref().unwrap().recipient_name,
            "Ada Lovelace"
        );

        // ForgetCustomer: the personal fields read erased in the feed too.
        let forget = ForgetCustomerRequest {
            customer_id: "alice".into(),
            reason: "GDPR erasure".into(),
        };
        app.admin_client()
            .forget_customer(authed(forget, &app.admin()))
            .await
            .unwrap();
        let mut again = subscribe(&app.channel, &service(&app), SubscribeRequest::default())
            .await
            .unwrap();
        let replayed = events(&mut again, 1).await;
        let Some(Payload::OrderCreated(created)) = &replayed[0].payload else {
            panic!("{backend:?}: OrderCreated first");
        };
        let address = created.shipping_address.as_ref().unwrap();
        assert_eq!(
            (
                created.payment_method.as_str(),
                address.recipient_name.as_str(),
                address.line1.as_str()
            ),
            ("[erased]", "[erased]", "[erased]"),
            "{backend:?}"
        );
        assert_eq!(
            created.customer_id, "alice",
            "the id stays: the erasure is provable against it"
        );
    }
}

#[tokio::test]
async fn filters_leave_events_out_with_a_checkpoint_and_cancellations_carry_a_reason_code() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, &[("ENABLE_SAGA_ORCHESTRATION", "false")]).await;
        let declined = SampleOrder::new("bob", 1);
        let mut life = SampleOrder::encode(&declined.cancelled("authorize_payment refused: card declined"));
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        life[0].metadata = EventMetadata {
            correlation_id: Some(traceparent.into()),
            ..Default::default()
        };
        app.app
            .units
            .append(declined.order_id, 0, life, ORDER_STREAM)
            .await
            .unwrap();
        append_orders(&EventLog::of(&app.app), 2).await;

        let request = SubscribeRequest {
            event_types: vec![EventType::OrderCancelled as i32, EventType::OrderCreated as i32],
            ..Default::default()
        };
        let mut stream = subscribe(&app.channel, &service(&app), request).await.unwrap();
        let got = events(&mut stream, 4).await;
        // The last event of the log (a confirmation) is left out: a checkpoint says so.
        let head = got.last().unwrap().position;
        let Message::Checkpoint(after_filtered) = next(&mut stream).await else {
            panic!("{backend:?}: a checkpoint after the filtered tail");
        };
        assert_ne!(
            after_filtered.position, head,
            "{backend:?}: past the last delivered event"
        );
        let kinds: Vec<i32> = got.iter().map(|e| e.event_type).collect();
        assert_eq!(
            kinds,
            [
                EventType::OrderCreated,
                EventType::OrderCancelled,
                EventType::OrderCreated,
                EventType::OrderCreated
            ]
            .map(|t| t as i32),
            "{backend:?}: only the asked kinds, then a checkpoint at the head"
        );
        assert_eq!(got[0].trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(got[1].trace_id, "", "{backend:?}: no traceparent recorded");
        let Some(Payload::OrderCancelled(cancelled)) = &got[1].payload else {
            panic!("{backend:?}: {:?}", got[1]);
        };
        assert_eq!(
            cancelled.reason_code,
            CancellationReasonCode::PaymentDeclined as i32
        );
        assert_eq!(cancelled.reason, "authorize_payment refused: card declined");

        // From now: only what comes after.
        let from_now = SubscribeRequest {
            from_now: true,
            ..Default::default()
        };
        let mut live = subscribe(&app.channel, &service(&app), from_now).await.unwrap();
        let Message::Checkpoint(start) = next(&mut live).await else {
            panic!("a checkpoint first");
        };
        assert_eq!(start.position, after_filtered.position, "{backend:?}: the head");
        let later = append_orders(&EventLog::of(&app.app), 1).await;
        let fresh = events(&mut live, 6).await;
        assert!(
            fresh.iter().all(|e| e.order_id == later[0].order_id.to_string()),
            "{backend:?}"
        );
    }
}

#[tokio::test]
async fn a_killed_consumer_resumes_after_its_ack_and_sees_every_event_once_after_dedup() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, &[("ENABLE_SAGA_ORCHESTRATION", "false")]).await;
        let (admin, service) = (app.admin(), service(&app));
        create_consumer(&app.channel, &admin, "billing", &[]).await;
        append_orders(&EventLog::of(&app.app), 100).await;

        let mut first = subscribe(&app.channel, &service, by_consumer("billing"))
            .await
            .unwrap();
        assert_eq!(next(&mut first).await, Message::Checkpoint(Default::default()));
        let before_kill = events(&mut first, 250).await;
        // Processed (and acknowledged) up to the 200th; the next 50 were read, not acked.
        let acked = before_kill[199].position;
        let answer = ack(&app.channel, &service, "billing", acked).await;
        assert_eq!(answer.acked_position, acked);
        assert!(
            answer.lag_events > 0 && answer.lag_seconds >= 0.0,
            "{backend:?}: {answer:?}"
        );
        drop(first); // the consumer dies mid-stream

        // Writers go on while it is down.
        append_orders(&EventLog::of(&app.app), 50).await;
        let total = 900;
        let mut resumed = subscribe(&app.channel, &service, by_consumer("billing"))
            .await
            .unwrap();
        let Message::Checkpoint(start) = next(&mut resumed).await else {
            panic!("a checkpoint first");
        };
        assert_eq!(start.position, acked, "{backend:?}: resumes after the ack");
        let after = events(&mut resumed, total - 200).await;
        assert_no_repeats(&after);
        let redelivered: Vec<i64> = after[..50].iter().map(|e| e.position).collect();
        let unacked: Vec<i64> = before_kill[200..].iter().map(|e| e.position).collect();
        assert_eq!(
            redelivered, unacked,
            "{backend:?}: the unacknowledged events again, in order"
        );

        // The consumer deduplicates by position: every event exactly once.
        let mut processed = std::collections::HashSet::new();
        let mut order = Vec::new();
        for event in before_kill[..200].iter().chain(&before_kill[200..]).chain(&after) {
            if processed.insert(event.position) {
                order.push(event.position);
            }
        }
        assert_eq!(order, all_positions(app.app.events.as_ref()).await, "{backend:?}");

        // Lag: behind until the last is acknowledged, then 0; in /metrics too.
        let caught_up = ack(&app.channel, &service, "billing", after.last().unwrap().position).await;
        assert_eq!(
            (caught_up.lag_events, caught_up.lag_seconds),
            (0, 0.0),
            "{backend:?}"
        );
        wait_for_within("consumer lag in /metrics", Duration::from_secs(10), || async {
            let metrics = http_get(app.port, "/metrics").await;
            metrics.contains("event_consumer_lag_events{consumer=\"billing\"} 0")
                && metrics.contains("event_consumer_lag_seconds{consumer=\"billing\"} 0")
        })
        .await;
    }
}

#[tokio::test]
async fn only_services_and_admins_subscribe_only_admins_manage_consumers_and_bad_input_names_the_field() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, &[("ENABLE_SAGA_ORCHESTRATION", "false")]).await;
        let (admin, service, customer) = (app.admin(), service(&app), app.customer("alice"));
        append_orders(&EventLog::of(&app.app), 1).await;
        let feed = client(&app.channel);

        let anonymous = feed
            .clone()
            .subscribe(SubscribeRequest::default())
            .await
            .unwrap_err();
        assert_eq!(anonymous.code(), Code::Unauthenticated, "{backend:?}");
        let refused = subscribe(&app.channel, &customer, SubscribeRequest::default())
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            Code::PermissionDenied,
            "{backend:?}: a customer may not subscribe"
        );
        create_consumer(&app.channel, &admin, "search", &[EventType::OrderCreated]).await;
        for token in [&customer, &service] {
            let create = CreateConsumerRequest {
                name: "mine".into(),
                ..Default::default()
            };
            let err = feed
                .clone()
                .create_consumer(authed(create, token))
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::PermissionDenied, "{backend:?}");
            let delete = DeleteConsumerRequest {
                name: "search".into(),
            };
            let err = feed
                .clone()
                .delete_consumer(authed(delete, token))
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::PermissionDenied, "{backend:?}");
            let err = feed
                .clone()
                .list_consumers(authed(ListConsumersRequest {}, token))
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::PermissionDenied, "{backend:?}");
        }
        let ack = AckRequest {
            consumer: "search".into(),
            position: 0,
        };
        let err = feed
            .clone()
            .ack(authed(ack.clone(), &customer))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{backend:?}");
        let get = GetConsumerRequest {
            name: "search".into(),
        };
        let err = feed
            .clone()
            .get_consumer(authed(get.clone(), &customer))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{backend:?}");
        // Refusals changed nothing; a service reads and acknowledges.
        let search = feed
            .clone()
            .get_consumer(authed(get, &service))
            .await
            .unwrap()
            .into_inner()
            .consumer
            .unwrap();
        assert_eq!(search.event_types, vec![EventType::OrderCreated as i32]);
        assert_eq!(search.created_by, "admin-1");
        feed.clone().ack(authed(ack, &service)).await.unwrap();
        let listed = feed
            .clone()
            .list_consumers(authed(ListConsumersRequest {}, &admin))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.consumers.len(), 1);

        // Bad input: INVALID_ARGUMENT naming the field; unknown names NOT_FOUND.
        let cases = [
            (
                SubscribeRequest {
                    after_position: 987_654,
                    ..Default::default()
                },
                "after_position",
            ),
            (
                SubscribeRequest {
                    after_position: -1,
                    ..Default::default()
                },
                "after_position",
            ),
            (
                SubscribeRequest {
                    from_now: true,
                    consumer: "search".into(),
                    ..Default::default()
                },
                "consumer",
            ),
            (
                SubscribeRequest {
                    event_types: vec![0],
                    ..Default::default()
                },
                "event_types",
            ),
            (
                SubscribeRequest {
                    consumer: "search".into(),
                    event_types: vec![1],
                    ..Default::default()
                },
                "event_types",
            ),
        ];
        for (request, field) in cases {
            let err = subscribe(&app.channel, &service, request).await.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{backend:?}: {field}");
            assert_eq!(violated_fields(&err), vec![field]);
        }
        let unknown = subscribe(&app.channel, &service, by_consumer("nobody"))
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), Code::NotFound);
        let bad_ack = AckRequest {
            consumer: "search".into(),
            position: 987_654,
        };
        let err = feed.clone().ack(authed(bad_ack, &service)).await.unwrap_err();
        assert_eq!(violated_fields(&err), vec!["position"], "{backend:?}");
        for name in ["", "Has Space"] {
            let create = CreateConsumerRequest {
                name: name.into(),
                ..Default::default()
            };
            let err = feed
                .clone()
                .create_consumer(authed(create, &admin))
                .await
                .unwrap_err();
            assert_eq!(violated_fields(&err), vec!["name"], "{backend:?}");
        }
        let again = CreateConsumerRequest {
            name: "search".into(),
            ..Default::default()
        };
        let err = feed
            .clone()
            .create_consumer(authed(again, &admin))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::AlreadyExists, "{backend:?}");
        let delete = DeleteConsumerRequest {
            name: "search".into(),
        };
        feed.clone()
            .delete_consumer(authed(delete.clone(), &admin))
            .await
            .unwrap();
        let err = feed
            .clone()
            .delete_consumer(authed(delete, &admin))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{backend:?}");
    }
}
