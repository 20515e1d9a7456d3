//! The public event feed from a test's side: a client with a token, starting a
//! stream, reading it until enough events came, and appending sample orders.

use std::{collections::HashSet, time::Duration};

use commerce::{
    projections::samples::SampleOrder,
    proto::commerce::events::v1::{
        AckRequest, Consumer, CreateConsumerRequest, EventType, GetConsumerRequest, OrderEvent,
        SubscribeRequest, SubscribeResponse, order_event_service_client::OrderEventServiceClient,
        subscribe_response::Message,
    },
    store::event_store::{EventStore, EventStoreError, ORDER_STREAM},
};

use crate::support::store::EventLog;
use tonic::{Streaming, transport::Channel};

use crate::support::app::authed;

/// A feed client on `channel`.
pub fn client(channel: &Channel) -> OrderEventServiceClient<Channel> {
    OrderEventServiceClient::new(channel.clone())
}

/// Starts a stream as `token`.
pub async fn subscribe(
    channel: &Channel,
    token: &str,
    request: SubscribeRequest,
) -> Result<Streaming<SubscribeResponse>, tonic::Status> {
    Ok(client(channel)
        .subscribe(authed(request, token))
        .await?
        .into_inner())
}

/// A stream of the named consumer.
pub fn by_consumer(name: &str) -> SubscribeRequest {
    SubscribeRequest {
        consumer: name.into(),
        ..Default::default()
    }
}

/// Creates consumer `name` as `admin_token` (all types, from the start).
pub async fn create_consumer(channel: &Channel, admin_token: &str, name: &str, types: &[EventType]) {
    let request = CreateConsumerRequest {
        name: name.into(),
        event_types: types.iter().map(|t| *t as i32).collect(),
        from_now: false,
    };
    client(channel)
        .create_consumer(authed(request, admin_token))
        .await
        .expect("create consumer");
}

/// Consumer `name` with its lag, as GetConsumer answers `token`.
pub async fn get_consumer(channel: &Channel, token: &str, name: &str) -> Consumer {
    let request = GetConsumerRequest { name: name.into() };
    client(channel)
        .get_consumer(authed(request, token))
        .await
        .expect("get consumer")
        .into_inner()
        .consumer
        .expect("a consumer")
}

/// Acknowledges `position` for `consumer` as `token`; the consumer after it.
pub async fn ack(channel: &Channel, token: &str, consumer: &str, position: i64) -> Consumer {
    let request = AckRequest {
        consumer: consumer.into(),
        position,
    };
    client(channel)
        .ack(authed(request, token))
        .await
        .expect("ack")
        .into_inner()
        .consumer
        .expect("a consumer")
}

/// The next message; fails the test after 30 s or on an error or the end.
pub async fn next(stream: &mut Streaming<SubscribeResponse>) -> Message {
    tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("a message within 30 s")
        .expect("no stream error")
        .expect("the stream does not end")
        .message
        .expect("a message body")
}

/// Reads until `count` events came (checkpoints skipped), in stream order.
pub async fn events(stream: &mut Streaming<SubscribeResponse>, count: usize) -> Vec<OrderEvent> {
    let mut events = Vec::with_capacity(count);
    while events.len() < count {
        if let Message::Event(event) = next(stream).await {
            events.push(event);
        }
    }
    events
}

/// Appends the confirmed lives (6 events each) of `orders` new sample orders.
pub async fn append_orders(log: &EventLog, orders: usize) -> Vec<SampleOrder> {
    let mut placed = Vec::with_capacity(orders);
    for i in 0..orders {
        let order = SampleOrder::new(&format!("customer-{}", i % 50), 1 + i % 3);
        let life = SampleOrder::encode(&order.confirmed());
        log.append(order.order_id, 0, life, ORDER_STREAM)
            .await
            .expect("append");
        placed.push(order);
    }
    placed
}

/// Appends `order`'s confirmed life, retrying while the database is busy
/// (32 writers on the one SQLite writer, on a loaded machine, wait for the pool).
pub async fn append_life(log: &EventLog, order: &SampleOrder) {
    let life = SampleOrder::encode(&order.confirmed());
    for _ in 0..50 {
        match log.append(order.order_id, 0, life.clone(), ORDER_STREAM).await {
            Ok(_) => return,
            Err(EventStoreError::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(other) => panic!("append: {other}"),
        }
    }
    panic!("the database stayed unavailable");
}

/// Every settled position of the log, in settled order.
pub async fn all_positions(events: &dyn EventStore) -> Vec<i64> {
    let mut positions = Vec::new();
    let mut cursor = 0;
    loop {
        let batch = events.read_all(cursor, 5000).await.expect("read_all");
        let Some(last) = batch.last() else {
            return positions;
        };
        cursor = last.global_position;
        positions.extend(batch.iter().map(|e| e.global_position));
    }
}

/// Asserts that `delivered` holds no position twice.
pub fn assert_no_repeats(delivered: &[OrderEvent]) {
    let mut seen = HashSet::new();
    for event in delivered {
        assert!(
            seen.insert(event.position),
            "position {} delivered twice",
            event.position
        );
    }
}
