//! `commerce.events.v1.OrderEventService` over gRPC (and, through the REST
//! shim, its unary rpcs): maps the feed of [`crate::app::events`] onto the
//! published contract. This file and the proto are the contract's only
//! definition: a stored schema change is absorbed by the codec's upcasters
//! and the domain event, never seen here.

use std::pin::Pin;

use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use crate::{
    app::{
        App,
        events::{
            CancellationCode, ConsumerStatus, EventFeed, FeedItem, PublicEventType, PublishedEvent, Start,
        },
    },
    auth,
    domain::order::{OrderEvent, OrderLine, ShippingAddress},
    error::AppError,
    grpc::convert::timestamp,
    proto::commerce::events::v1::{
        self as pb, AckRequest, AckResponse, CreateConsumerRequest, CreateConsumerResponse,
        DeleteConsumerRequest, DeleteConsumerResponse, GetConsumerRequest, GetConsumerResponse,
        ListConsumersRequest, ListConsumersResponse, SubscribeRequest, SubscribeResponse,
        order_event_service_server::OrderEventService, subscribe_response::Message,
    },
};

/// The stream Subscribe answers with.
pub type SubscribeStream = Pin<Box<dyn Stream<Item = Result<SubscribeResponse, Status>> + Send>>;

/// Serves `commerce.events.v1.OrderEventService` from the [`EventFeed`]
/// (the settled event log), for gRPC and for the REST shim's SSE routes.
#[derive(Clone)]
pub struct OrderEventGrpc {
    feed: EventFeed,
}

impl OrderEventGrpc {
    /// A service over `app`'s feed.
    pub fn new(app: App) -> Self {
        Self::over(app.feed)
    }

    /// A service over `feed` alone (the bench serves nothing else).
    pub fn over(feed: EventFeed) -> Self {
        Self { feed }
    }
}

#[tonic::async_trait]
impl OrderEventService for OrderEventGrpc {
    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<SubscribeStream>, Status> {
        let principal = auth::principal(&request)?;
        let request = request.into_inner();
        let types = public_types(&request.event_types)?;
        let start = start(&request)?;
        let feed = self
            .feed
            .subscribe(&principal, start, types, request.resume_after_position)
            .await?;
        let stream = ReceiverStream::new(feed).map(|item| {
            item.map(|item| SubscribeResponse {
                message: Some(match item {
                    FeedItem::Event(event) => Message::Event(order_event(&event)),
                    FeedItem::Checkpoint(position) => Message::Checkpoint(pb::Checkpoint { position }),
                }),
            })
            .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn ack(&self, request: Request<AckRequest>) -> Result<Response<AckResponse>, Status> {
        let principal = auth::principal(&request)?;
        let request = request.into_inner();
        let status = self
            .feed
            .ack(&principal, &request.consumer, request.position)
            .await?;
        Ok(Response::new(AckResponse {
            consumer: Some(consumer(&status)),
        }))
    }

    async fn create_consumer(
        &self,
        request: Request<CreateConsumerRequest>,
    ) -> Result<Response<CreateConsumerResponse>, Status> {
        let principal = auth::principal(&request)?;
        let request = request.into_inner();
        let types = public_types(&request.event_types)?;
        let status = self
            .feed
            .create_consumer(&principal, &request.name, types, request.from_now)
            .await?;
        Ok(Response::new(CreateConsumerResponse {
            consumer: Some(consumer(&status)),
        }))
    }

    async fn get_consumer(
        &self,
        request: Request<GetConsumerRequest>,
    ) -> Result<Response<GetConsumerResponse>, Status> {
        let principal = auth::principal(&request)?;
        let status = self
            .feed
            .get_consumer(&principal, &request.get_ref().name)
            .await?;
        Ok(Response::new(GetConsumerResponse {
            consumer: Some(consumer(&status)),
        }))
    }

    async fn list_consumers(
        &self,
        request: Request<ListConsumersRequest>,
    ) -> Result<Response<ListConsumersResponse>, Status> {
        let principal = auth::principal(&request)?;
        let all = self.feed.list_consumers(&principal).await?;
        Ok(Response::new(ListConsumersResponse {
            consumers: all.iter().map(consumer).collect(),
        }))
    }

    async fn delete_consumer(
        &self,
        request: Request<DeleteConsumerRequest>,
    ) -> Result<Response<DeleteConsumerResponse>, Status> {
        let principal = auth::principal(&request)?;
        self.feed
            .delete_consumer(&principal, &request.get_ref().name)
            .await?;
        Ok(Response::new(DeleteConsumerResponse {}))
    }
}

/// Where a Subscribe starts: one of consumer, from_now, after_position
/// (a `resume_after_position` overrides the start, not the choice).
fn start(request: &SubscribeRequest) -> Result<Start, AppError> {
    let chosen = [
        !request.consumer.is_empty(),
        request.from_now,
        request.after_position != 0,
    ];
    if chosen.iter().filter(|c| **c).count() > 1 {
        return Err(AppError::invalid(
            "consumer",
            "give at most one of consumer, from_now and after_position",
        ));
    }
    Ok(if !request.consumer.is_empty() {
        Start::Consumer(request.consumer.clone())
    } else if request.from_now {
        Start::Now
    } else {
        Start::After(request.after_position)
    })
}

/// The kinds of a filter; UNSPECIFIED or an unknown number is refused.
fn public_types(types: &[i32]) -> Result<Vec<PublicEventType>, AppError> {
    types
        .iter()
        .map(|&number| match pb::EventType::try_from(number) {
            Ok(pb::EventType::OrderCreated) => Ok(PublicEventType::OrderCreated),
            Ok(pb::EventType::PaymentAuthorized) => Ok(PublicEventType::PaymentAuthorized),
            Ok(pb::EventType::StockReserved) => Ok(PublicEventType::StockReserved),
            Ok(pb::EventType::ShipmentCreated) => Ok(PublicEventType::ShipmentCreated),
            Ok(pb::EventType::PaymentCaptured) => Ok(PublicEventType::PaymentCaptured),
            Ok(pb::EventType::OrderConfirmed) => Ok(PublicEventType::OrderConfirmed),
            Ok(pb::EventType::CancellationRequested) => Ok(PublicEventType::CancellationRequested),
            Ok(pb::EventType::OrderCancelled) => Ok(PublicEventType::OrderCancelled),
            Ok(pb::EventType::Unspecified) | Err(_) => Err(AppError::invalid(
                "event_types",
                format!("{number} is not an event type"),
            )),
        })
        .collect()
}

/// The proto enum of a kind.
fn event_type(kind: PublicEventType) -> pb::EventType {
    match kind {
        PublicEventType::OrderCreated => pb::EventType::OrderCreated,
        PublicEventType::PaymentAuthorized => pb::EventType::PaymentAuthorized,
        PublicEventType::StockReserved => pb::EventType::StockReserved,
        PublicEventType::ShipmentCreated => pb::EventType::ShipmentCreated,
        PublicEventType::PaymentCaptured => pb::EventType::PaymentCaptured,
        PublicEventType::OrderConfirmed => pb::EventType::OrderConfirmed,
        PublicEventType::CancellationRequested => pb::EventType::CancellationRequested,
        PublicEventType::OrderCancelled => pb::EventType::OrderCancelled,
    }
}

/// The published message of an event.
pub fn order_event(published: &PublishedEvent) -> pb::OrderEvent {
    use pb::order_event::Payload;
    let stored = &published.stored;
    let payload = match &published.event {
        OrderEvent::Created(created) => Payload::OrderCreated(pb::OrderCreated {
            customer_id: created.customer_id.clone(),
            cart_id: created.cart_id.to_string(),
            items: created.items.iter().map(line).collect(),
            currency: created.currency.code().to_string(),
            total: created.total.to_string(),
            shipping_address: Some(address(&created.personal.shipping_address)),
            payment_method: created.personal.payment_method.clone(),
        }),
        OrderEvent::PaymentAuthorized(e) => Payload::PaymentAuthorized(pb::PaymentAuthorized {
            authorization_id: e.authorization_id.clone(),
        }),
        OrderEvent::InventoryReserved(e) => Payload::StockReserved(pb::StockReserved {
            reservation_id: e.reservation_id.clone(),
        }),
        OrderEvent::ShippingArranged(e) => Payload::ShipmentCreated(pb::ShipmentCreated {
            shipment_id: e.shipment_id.clone(),
            tracking_number: e.tracking_number.clone(),
        }),
        OrderEvent::PaymentCaptured(e) => Payload::PaymentCaptured(pb::PaymentCaptured {
            capture_id: e.capture_id.clone(),
        }),
        OrderEvent::Confirmed(_) => Payload::OrderConfirmed(pb::OrderConfirmed {}),
        OrderEvent::CancellationRequested(e) => Payload::CancellationRequested(pb::CancellationRequested {
            reason: e.reason.clone(),
            requested_by: e.requested_by.clone(),
        }),
        OrderEvent::Cancelled(e) => Payload::OrderCancelled(pb::OrderCancelled {
            reason_code: cancellation_code(CancellationCode::classify(&e.reason)) as i32,
            reason: e.reason.clone(),
        }),
    };
    pb::OrderEvent {
        event_id: stored.event_id.to_string(),
        order_id: stored.stream_id.to_string(),
        stream_version: i64::try_from(stored.version).unwrap_or(i64::MAX),
        position: stored.global_position,
        occurred_at: Some(timestamp(stored.recorded_at)),
        trace_id: published.trace_id().unwrap_or_default().to_string(),
        event_type: event_type(published.event_type()) as i32,
        payload: Some(payload),
    }
}

fn cancellation_code(code: CancellationCode) -> pb::CancellationReasonCode {
    match code {
        CancellationCode::Requested => pb::CancellationReasonCode::Requested,
        CancellationCode::PaymentDeclined => pb::CancellationReasonCode::PaymentDeclined,
        CancellationCode::OutOfStock => pb::CancellationReasonCode::OutOfStock,
        CancellationCode::Unshippable => pb::CancellationReasonCode::Unshippable,
        CancellationCode::TimedOut => pb::CancellationReasonCode::TimedOut,
        CancellationCode::Other => pb::CancellationReasonCode::Other,
    }
}

fn line(line: &OrderLine) -> pb::OrderLine {
    pb::OrderLine {
        product_id: line.product_id.clone(),
        product_name: line.product_name.clone(),
        quantity: i32::try_from(line.quantity).unwrap_or(i32::MAX),
        unit_price: line.unit_price.to_string(),
        line_total: line.line_total.to_string(),
    }
}

fn address(address: &ShippingAddress) -> pb::ShippingAddress {
    pb::ShippingAddress {
        recipient_name: address.recipient_name.clone(),
        line1: address.line1.clone(),
        line2: address.line2.clone(),
        city: address.city.clone(),
        region: address.region.clone(),
        postal_code: address.postal_code.clone(),
        country: address.country.clone(),
    }
}

/// The published consumer of a status.
fn consumer(status: &ConsumerStatus) -> pb::Consumer {
    let record = &status.record;
    pb::Consumer {
        name: record.name.clone(),
        event_types: record
            .event_types
            .iter()
            .filter_map(|name| PublicEventType::parse(name))
            .map(|kind| event_type(kind) as i32)
            .collect(),
        acked_position: record.acked_position,
        acked_at: Some(timestamp(record.acked_at)),
        lag_events: status.lag_events,
        lag_seconds: status.lag_seconds,
        created_at: Some(timestamp(record.created_at)),
        created_by: record.created_by.clone(),
    }
}
