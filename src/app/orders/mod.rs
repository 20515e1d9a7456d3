//! Orders, command side: load (read the stream, fold), decide (the
//! aggregate), commit (the events at the expected version, in a unit of work
//! with whatever else must commit with them), with bounded retry on a version
//! conflict. CreateOrder lives in [`create`], the reply shape in [`view`].
//!
//! # Personal data
//! The `personal` part of OrderCreated (address, payment method) is sealed
//! with the customer's key ([`crate::privacy`]) before it is appended, and
//! opened when the stream is loaded: the store and the bus only
//! ever carry it encrypted. After ForgetCustomer it opens no more and the
//! order loads with those fields "[erased]".
//!
//! # Optimistic locking
//! The event store always checks the expected version, so no event is ever
//! lost or overwritten. Every order command here re-decides on fresh state, so
//! a conflict is retried automatically: up to [`REPORTING_ATTEMPTS`] attempts
//! with `ENABLE_OPTIMISTIC_LOCKING=true` (the default,
//! [`ConflictHandling::Report`]), after which the caller gets ABORTED; with
//! `false` ([`ConflictHandling::Absorb`]), conflicts are never surfaced in
//! practice: up to [`ABSORBING_ATTEMPTS`] attempts with a growing jittered pause (the cap only
//! keeps a pathological hot stream from spinning forever).

mod create;
pub mod validate;
pub mod view;

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use rand::Rng;
use uuid::Uuid;

pub use self::{
    validate::{AddressInput, CreateOrderInput},
    view::OrderView,
};
use crate::{
    app::cart::CartApp,
    auth::Principal,
    config::{ConflictHandling, OrderSettings},
    domain::order::{Order, OrderCommand, OrderError, OrderEvent},
    error::{AppError, ErrorReason, Resource},
    privacy::Vault,
    saga::worker::LocalWorkers,
    store::{
        event_store::{
            EventMetadata, EventStore, NewEvent, ORDER_STREAM, OrderCodec, StoredEvent, StreamAppend,
        },
        idempotency::IdempotencyStore,
        saga::{CancelRequest, SagaWrite},
        unit_of_work::{UnitOfWork, UnitOfWorkCommitter, UnitOfWorkError},
    },
};

/// Attempts of a command on version conflicts before ABORTED, when conflicts
/// are reported to the client.
pub const REPORTING_ATTEMPTS: u32 = 4;
/// Attempts of a command on version conflicts when they are absorbed: only a
/// pathologically hot stream exhausts them.
pub const ABSORBING_ATTEMPTS: u32 = 50;

/// The stores the order commands read and write through.
#[derive(Clone)]
pub struct OrderStores {
    /// Reads order streams.
    pub events: Arc<dyn EventStore>,
    /// Commits the commands' events with their other writes.
    pub units: Arc<dyn UnitOfWorkCommitter>,
    /// CreateOrder's idempotency keys.
    pub idempotency_keys: Arc<dyn IdempotencyStore>,
}

/// The order command service; cheap to clone.
#[derive(Clone)]
pub struct OrderApp {
    settings: OrderSettings,
    events: Arc<dyn EventStore>,
    units: Arc<dyn UnitOfWorkCommitter>,
    idempotency_keys: Arc<dyn IdempotencyStore>,
    carts: CartApp,
    codec: OrderCodec,
    privacy: Vault,
    /// Where CreateOrder hands a new saga over in memory (none: every saga
    /// waits for a worker's claim).
    local_workers: Option<LocalWorkers>,
}

/// A saga's commands decided on an order ([`OrderApp::decide`]).
#[derive(Debug, Clone)]
pub struct Decided {
    /// The events, at the version they were decided on.
    pub append: StreamAppend,
    /// Each status they lead the order to, in turn.
    pub statuses: Vec<&'static str>,
    /// The order with them applied.
    pub after: Order,
}

/// An order loaded from its stream.
#[derive(Debug, Clone)]
pub struct LoadedOrder {
    /// The order as its events fold it (the aggregate's state, not a read model).
    pub order: Order,
    /// `recorded_at` of the first event.
    pub created_at: DateTime<Utc>,
    /// `recorded_at` of the last event.
    pub updated_at: DateTime<Utc>,
    /// The W3C `traceparent` of the request that placed it (see [`OrderApp::traceparent`]).
    pub traceparent: Option<String>,
}

impl LoadedOrder {
    /// The order as commands and queries reply with it.
    pub fn view(&self) -> Result<OrderView, AppError> {
        OrderView::from_order(&self.order, self.created_at, self.updated_at)
            .ok_or_else(|| AppError::Internal(anyhow::anyhow!("an order stream without OrderCreated")))
    }
}

impl From<OrderError> for AppError {
    fn from(err: OrderError) -> Self {
        let reason = match err {
            OrderError::NotFound => return AppError::not_found(Resource::Order, ""),
            // A cancel the order's state no longer allows.
            OrderError::CaptureIsFinal
            | OrderError::InvalidTransition {
                command: "Cancel" | "RequestCancellation",
                ..
            } => ErrorReason::OrderNotCancellable,
            _ => ErrorReason::OrderStateInvalid,
        };
        AppError::failed_precondition(reason, err.to_string())
    }
}

impl OrderApp {
    /// The service over its stores.
    pub fn new(settings: OrderSettings, stores: OrderStores, carts: CartApp, privacy: Vault) -> Self {
        Self {
            settings,
            events: stores.events,
            units: stores.units,
            idempotency_keys: stores.idempotency_keys,
            carts,
            codec: OrderCodec,
            privacy,
            local_workers: None,
        }
    }

    /// The service, handing each new saga to a free worker of `workers`
    /// when there is one (see [`create`]).
    pub fn with_local_workers(self, workers: LocalWorkers) -> Self {
        Self {
            local_workers: Some(workers),
            ..self
        }
    }

    /// ForgetCustomer's part in the order side: the request hashes of the
    /// customer's CreateOrder keys (hashes of their address and payment
    /// method) are replaced (see [`IdempotencyStore::forget_customer`]).
    pub async fn forget_customer(&self, customer_id: &str) -> Result<u64, AppError> {
        Ok(self.idempotency_keys.forget_customer(customer_id).await?)
    }

    /// The W3C `traceparent` recorded with the order's first event (its
    /// metadata's `correlation_id`): the trace of the CreateOrder request,
    /// which the saga continues. Best effort: None when unknown or unreadable.
    pub async fn traceparent(&self, order_id: Uuid) -> Option<String> {
        let first = self
            .events
            .read_stream(order_id, 1)
            .await
            .ok()?
            .into_iter()
            .next()?;
        first.metadata.correlation_id.filter(|id| id.starts_with("00-"))
    }

    /// Loads `order_id` up to `up_to_version` (None: all); None when it does not exist.
    pub async fn load_until(
        &self,
        order_id: Uuid,
        up_to_version: Option<u64>,
    ) -> Result<Option<LoadedOrder>, AppError> {
        let stored = self.events.read_stream(order_id, 1).await?;
        let stored = match up_to_version {
            Some(v) => stored.into_iter().take_while(|e| e.version <= v).collect(),
            None => stored,
        };
        let (Some(first), Some(last)) = (stored.first(), stored.last()) else {
            return Ok(None);
        };
        let (created_at, updated_at) = (first.recorded_at, last.recorded_at);
        let traceparent = first
            .metadata
            .correlation_id
            .clone()
            .filter(|id| id.starts_with("00-"));
        let mut order = Order::default();
        for event in stored {
            let event = self.open(event).await?;
            order.apply(&self.codec.decode(&event).map_err(AppError::Internal)?);
        }
        Ok(Some(LoadedOrder {
            order,
            created_at,
            updated_at,
            traceparent,
        }))
    }

    /// The order as the write side sees it, if `principal` may see it
    /// (another customer's order is NOT_FOUND).
    pub async fn get(&self, principal: &Principal, order_id: Uuid) -> Result<OrderView, AppError> {
        let view = self
            .load_until(order_id, None)
            .await?
            .ok_or_else(|| not_found(order_id))?
            .view()?;
        if !principal.may_access(&view.customer_id) {
            return Err(not_found(order_id));
        }
        Ok(view)
    }

    /// Runs `command` against an existing order (the saga's entry point:
    /// MarkPaymentAuthorized, ..., Cancel). A command whose outcome is
    /// already recorded appends nothing and returns the current view.
    #[tracing::instrument(skip(self, command), fields(order_id = %order_id, command = command.name()))]
    pub async fn handle(&self, order_id: Uuid, command: OrderCommand) -> Result<OrderView, AppError> {
        self.execute(order_id, |_| Ok((command.clone(), None))).await
    }

    /// Decides a saga's `commands`, in turn, on `basis` (the order as the
    /// saga last committed it) or else on the order as stored, writing
    /// nothing: the events to append at that version (all of them, one
    /// append), or `None` when the order already records their outcome. The
    /// saga commits them with its step's progress; the append's version guard
    /// refuses them if the basis was stale.
    pub async fn decide(
        &self,
        order_id: Uuid,
        basis: Option<Order>,
        commands: Vec<OrderCommand>,
    ) -> Result<Option<Decided>, AppError> {
        let mut order = match basis {
            Some(order) => order,
            None => {
                self.load_until(order_id, None)
                    .await?
                    .ok_or_else(|| not_found(order_id))?
                    .order
            }
        };
        let expected_version = order.version;
        let (mut events, mut statuses) = (Vec::new(), Vec::new());
        for command in commands {
            let before = order.status;
            let decided = order.handle(command)?;
            decided.iter().for_each(|e| order.apply(e));
            if !decided.is_empty() && order.status != before {
                statuses.push(order.status.as_str());
            }
            events.extend(decided);
        }
        if events.is_empty() {
            return Ok(None);
        }
        let append = self.order_append(order_id, expected_version, &events).await?;
        Ok(Some(Decided {
            append,
            statuses,
            after: order,
        }))
    }

    /// CancelOrder: the owner (or an admin) asks to cancel. With a saga
    /// driving the order, the request is recorded and the saga is woken to
    /// compensate (then it cancels); without one the order is cancelled now.
    #[tracing::instrument(skip(self, principal, reason), fields(customer = %principal.subject))]
    pub async fn cancel_order(
        &self,
        principal: &Principal,
        order_id: &str,
        reason: &str,
    ) -> Result<OrderView, AppError> {
        let mut bad = Vec::new();
        let order_id =
            validate::uuid_field("order_id", order_id, &mut bad).ok_or(AppError::InvalidArgument(bad))?;
        let reason = validate::cancel_reason(reason)?;
        let orchestrated = self.settings.saga_orchestration;
        self.execute(order_id, |order| {
            let placed = order.placed.as_ref().ok_or_else(|| not_found(order_id))?;
            if !principal.may_access(&placed.customer_id) {
                return Err(not_found(order_id));
            }
            if orchestrated && placed.saga_id.is_some() {
                let command = OrderCommand::RequestCancellation {
                    reason: reason.clone(),
                    requested_by: principal.subject.clone(),
                };
                let cancel = SagaWrite::RequestCancel(CancelRequest {
                    order_id,
                    reason: reason.clone(),
                });
                Ok((command, Some(cancel)))
            } else {
                let command = OrderCommand::Cancel {
                    reason: reason.clone(),
                    code: ErrorReason::CancellationRequested,
                };
                Ok((command, None))
            }
        })
        .await
    }

    /// Load, decide, commit the events with the saga part the decision
    /// asks for; retried on a version conflict (see the module docs).
    async fn execute<F>(&self, order_id: Uuid, decide: F) -> Result<OrderView, AppError>
    where
        F: Fn(&Order) -> Result<(OrderCommand, Option<SagaWrite>), AppError>,
    {
        let attempts = self.max_attempts();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let loaded = self
                .load_until(order_id, None)
                .await?
                .ok_or_else(|| not_found(order_id))?;
            let (command, saga) = decide(&loaded.order)?;
            let events = loaded.order.handle(command)?;
            if events.is_empty() {
                return loaded.view();
            }
            let unit = UnitOfWork {
                appends: vec![self.order_append(order_id, loaded.order.version, &events).await?],
                saga,
                idempotency: None,
            };
            match self.units.commit(unit).await {
                Ok(committed) => {
                    let recorded_at = committed
                        .appended
                        .first()
                        .map_or_else(Utc::now, |a| a.recorded_at);
                    let before = loaded.order.status;
                    let mut order = loaded.order;
                    events.iter().for_each(|e| order.apply(e));
                    if order.status != before {
                        crate::metrics::order_status_transition(order.status.as_str());
                    }
                    return OrderView::from_order(&order, loaded.created_at, recorded_at)
                        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("order vanished")));
                }
                Err(UnitOfWorkError::Conflict { .. }) if attempt < attempts => {
                    // Someone appended first: re-read and decide again.
                    let pause = rand::rng().random_range(1..=5 * u64::from(attempt.min(20)));
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                Err(err) => return Err(err.into()),
            }
        }
    }

    fn max_attempts(&self) -> u32 {
        match self.settings.conflicts {
            ConflictHandling::Report => REPORTING_ATTEMPTS,
            ConflictHandling::Absorb => ABSORBING_ATTEMPTS,
        }
    }

    /// The order's new events as a unit of work's append at `expected_version`.
    async fn order_append(
        &self,
        order_id: Uuid,
        expected_version: u64,
        events: &[OrderEvent],
    ) -> Result<StreamAppend, AppError> {
        Ok(StreamAppend {
            stream_id: order_id,
            stream_type: ORDER_STREAM.into(),
            expected_version: Some(expected_version),
            events: self.encode(events, None).await?,
        })
    }

    /// Encodes events with the request's provenance, personal data sealed
    /// with the customer's key.
    async fn encode(
        &self,
        events: &[OrderEvent],
        idempotency_key: Option<&str>,
    ) -> Result<Vec<NewEvent>, AppError> {
        let metadata = EventMetadata {
            correlation_id: crate::telemetry::current_traceparent(),
            causation_id: None,
            idempotency_key: idempotency_key.map(str::to_string),
        };
        let mut encoded = Vec::with_capacity(events.len());
        for event in events {
            let mut new = self.codec.encode(event, &metadata).map_err(AppError::Internal)?;
            if let OrderEvent::Created(created) = event {
                self.privacy
                    .seal_personal(&created.customer_id, &mut new.payload)
                    .await?;
            }
            encoded.push(new);
        }
        Ok(encoded)
    }

    /// A stored event with its personal data opened (erased once forgotten).
    async fn open(&self, mut event: StoredEvent) -> Result<StoredEvent, AppError> {
        self.privacy.open_personal(&mut event.payload).await?;
        Ok(event)
    }
}

fn not_found(id: Uuid) -> AppError {
    AppError::not_found(Resource::Order, id)
}
