//! Order queries of the read side (GetOrder, ListOrders, GetOrderHistory,
//! WatchOrder) and the read side's admin tools (dead letters, projection
//! status). The transports call these; ownership is checked here: another
//! customer's order is NOT_FOUND, an admin may read any.
//!
//! # Read-your-writes (`min_version`)
//! Commands return the order's new version. A query given `min_version` waits
//! (at most [`MIN_VERSION_WAIT`]) for the projection to reach it, woken by the
//! projection's change broadcast and polling the table meanwhile (another
//! replica may apply it). If the read model is still behind, the answer is the
//! fold of the order's stream from the event store, the source of truth, so a
//! caller never sees an older version than it asked for (unless the stream
//! itself is shorter: then it gets the newest there is).
//!
//! # A read replica (DATABASE_READ_URL)
//! GetOrder and ListOrders read the replica's read models first (and
//! GetOrder's personal fields, which never change after OrderCreated, its
//! event log); GetOrder takes the replica's row only when it is at
//! `min_version` (and at least version 1), and otherwise runs the primary's
//! path above, so read-your-writes holds. A replica that fails is skipped for
//! the primary. On the primary still: WatchOrder's first state and its feed (a
//! first state older than what the feed has already announced would leave the
//! stream waiting for a change that came before it), GetOrderHistory (its
//! events and its saga's attempts from one database, so that neither is ahead
//! of the other), and the admin tools. See [`crate::app::replica`].
//!
//! # Personal data
//! Read models keep the personal fields as the events give them: sealed, so
//! they read as "[erased]" there. GetOrder and WatchOrder take the address
//! and payment method from the order's OrderCreated in the event store,
//! opened with the customer's key ([`crate::privacy`]), after the ownership
//! check; GetOrderHistory opens its payloads the same way. Once the customer
//! is forgotten they stay "[erased]", and no read model ever held them in
//! the clear, so ForgetCustomer has nothing to scrub there.
//!
//! # ENABLE_CQRS=false
//! GetOrder and WatchOrder fold the event stream (the same fold the projection
//! runs) instead of reading the read model; ListOrders still reads the order
//! list, which has no event-store equivalent.

use std::{sync::Arc, time::Duration};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::{
    app::{
        appended::AppendedStreams,
        orders::OrderView,
        replica::{Outcome, ReplicaReads},
        watch::{OrderWatches, Watched},
    },
    auth::Principal,
    bus::{DeadLetter, EventBus},
    config::{OrderQuerySource, ReadSideSettings},
    domain::order::{OrderStatus, ShippingAddress},
    error::{AppError, Resource},
    privacy::Vault,
    projections::{
        changes::OrderChanges,
        customer_orders::OrderSummary,
        fold_stream,
        order_detail::OrderDetail,
        status::{ProjectionState, states},
    },
    shutdown::Shutdown,
    store::saga::{AttemptRecord, SagaStore},
    store::{
        event_store::{EventStore, StoredEvent},
        read_models::{ListCursor, ListQuery, ReadModelStore, ReadModels},
    },
};

/// Longest wait for the read model to reach a query's `min_version`.
pub const MIN_VERSION_WAIT: Duration = Duration::from_secs(2);
/// How often a `min_version` wait re-reads the read model (changes applied by
/// another replica are not broadcast here).
const POLL: Duration = Duration::from_millis(250);
/// ListOrders page size when the request says 0.
pub const DEFAULT_PAGE_SIZE: i32 = 20;
/// Largest page of ListOrders and ListDeadLetters (larger requests are capped).
pub const MAX_PAGE_SIZE: i32 = 100;
/// The reader label of the queries' replica reads (`db_replica_reads_total`).
const QUERIES: &str = "queries";

/// One page of ListOrders.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderPage {
    /// Summaries (no personal data), newest first.
    pub orders: Vec<OrderSummary>,
    /// Token of the next page; empty on the last.
    pub next_page_token: String,
}

/// One entry of an order's timeline.
#[derive(Debug, Clone, PartialEq)]
pub enum HistoryEntry {
    /// A domain event of the order's stream.
    Event(StoredEvent),
    /// A saga call to a sibling service.
    Attempt(AttemptRecord),
}

impl HistoryEntry {
    /// When it happened (an attempt: when it was sent).
    pub fn occurred_at(&self) -> DateTime<Utc> {
        match self {
            Self::Event(event) => event.recorded_at,
            Self::Attempt(attempt) => attempt.started_at,
        }
    }
}

/// The read side's queries.
#[derive(Clone)]
pub struct QueryApp {
    store: ReadModelStore,
    events: Arc<dyn EventStore>,
    sagas: Arc<dyn SagaStore>,
    bus: Arc<dyn EventBus>,
    changes: OrderChanges,
    appended: AppendedStreams,
    watches: OrderWatches,
    order_queries: OrderQuerySource,
    shutdown: Shutdown,
    privacy: Vault,
    /// The read replica, when DATABASE_READ_URL names one.
    replica: Option<ReplicaReads>,
    /// The event log as GetOrder's personal fields are read from it: the
    /// replica first when there is one, else `events`.
    log: Arc<dyn EventStore>,
}

/// What ListOrders' opaque page token holds.
#[derive(Serialize, Deserialize)]
struct PageToken {
    /// created_at of the last row, microseconds.
    t: i64,
    /// order_id of the last row.
    o: Uuid,
    /// The status filter the token was made for.
    s: Option<String>,
}

fn not_found(id: Uuid) -> AppError {
    AppError::not_found(Resource::Order, id)
}

fn parse_order_id(order_id: &str) -> Result<Uuid, AppError> {
    Uuid::parse_str(order_id.trim()).map_err(|_| AppError::invalid("order_id", "must be a UUID"))
}

fn page_size(field: &str, requested: i32) -> Result<i64, AppError> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE.into()),
        n if n < 0 => Err(AppError::invalid(field, "must not be negative")),
        n => Ok(n.min(MAX_PAGE_SIZE).into()),
    }
}

impl QueryApp {
    /// The queries over these stores, as `settings` say (where orders are
    /// read from, WatchOrder's bounds).
    pub fn new(
        store: ReadModelStore,
        events: Arc<dyn EventStore>,
        sagas: Arc<dyn SagaStore>,
        bus: Arc<dyn EventBus>,
        settings: &ReadSideSettings,
        shutdown: Shutdown,
        privacy: Vault,
    ) -> Self {
        let order_queries = settings.order_queries;
        let changes = OrderChanges::new();
        let appended = AppendedStreams::new();
        let watches = OrderWatches::new(
            settings.watch,
            changes.clone(),
            appended.clone(),
            store.clone(),
            events.clone(),
            order_queries,
            shutdown.clone(),
        );
        Self {
            store,
            log: events.clone(),
            events,
            sagas,
            bus,
            changes,
            appended,
            watches,
            order_queries,
            shutdown,
            privacy,
            replica: None,
        }
    }

    /// These queries reading `replica` first (see the module docs).
    pub fn with_replica(mut self, replica: ReplicaReads) -> Self {
        self.log = replica.event_log(self.events.clone(), QUERIES);
        self.replica = Some(replica);
        self
    }

    /// The event log as the projections read it (sweeps, gaps): the
    /// replica's first when there is one, the primary's otherwise.
    pub fn projection_log(&self) -> Arc<dyn EventStore> {
        match &self.replica {
            Some(replica) => replica.event_log(self.events.clone(), "projections"),
            None => self.events.clone(),
        }
    }

    /// The read-model store (the projections write it).
    pub fn store(&self) -> &ReadModelStore {
        &self.store
    }

    /// The broadcast the order detail projection announces changes on.
    pub fn changes(&self) -> &OrderChanges {
        &self.changes
    }

    /// The broadcast this process's commits are announced on; startup wraps
    /// the unit of work with [`AppendedStreams::announcing`].
    pub fn appended(&self) -> &AppendedStreams {
        &self.appended
    }

    /// GetOrder: the caller's order (any order for an admin), at least at
    /// `min_version` (see the module docs).
    #[tracing::instrument(skip(self, principal), fields(customer = %principal.subject))]
    pub async fn get_order(
        &self,
        principal: &Principal,
        order_id: &str,
        min_version: i64,
    ) -> Result<OrderDetail, AppError> {
        let id = parse_order_id(order_id)?;
        let wanted = u64::try_from(min_version)
            .map_err(|_| AppError::invalid("min_version", "must not be negative"))?;
        let detail = if self.order_queries == OrderQuerySource::ReadModel {
            match self.replica_answer(principal, id, wanted).await {
                Some(answer) => answer,
                None => self.read_at_least(principal, id, wanted).await?,
            }
        } else {
            self.fold(id).await?
        };
        match detail {
            Some(detail) if principal.may_access(&detail.summary.customer_id) => {
                self.with_personal(detail, None).await
            }
            _ => Err(not_found(id)),
        }
    }

    /// The replica's answer to GetOrder when it has one: another customer's
    /// order (None at once, as on the primary) or the row at `wanted` or
    /// newer. None sends the query to the primary: no replica, a failed one,
    /// or one that has not replayed the order or `wanted` yet.
    async fn replica_answer(
        &self,
        principal: &Principal,
        id: Uuid,
        wanted: u64,
    ) -> Option<Option<OrderDetail>> {
        let replica = self.replica.as_ref()?;
        let Some(store) = replica.store() else {
            replica.record(QUERIES, Outcome::Unavailable);
            return None;
        };
        match store.order_detail(id).await {
            Ok(Some(row)) if !principal.may_access(&row.summary.customer_id) => {
                replica.record(QUERIES, Outcome::Replica);
                Some(None)
            }
            Ok(Some(row)) if row.summary.version >= wanted.max(1) => {
                replica.record(QUERIES, Outcome::Replica);
                Some(Some(row))
            }
            Ok(_) => {
                replica.record(QUERIES, Outcome::Behind);
                None
            }
            Err(error) => {
                replica.failed(QUERIES, &error);
                None
            }
        }
    }

    /// `detail` with its personal fields from the event store, opened with
    /// the customer's key ("[erased]" once forgotten; see the module doc):
    /// from `created`, the order's OrderCreated as stored, when the caller
    /// has it already, else read.
    async fn with_personal(
        &self,
        mut detail: OrderDetail,
        created: Option<StoredEvent>,
    ) -> Result<OrderDetail, AppError> {
        let id = detail.summary.order_id;
        let mut events = match created {
            Some(created) => vec![created],
            None => self.log.read_stream(id, 1).await?,
        };
        events.truncate(1);
        for event in &mut events {
            self.privacy.open_personal(&mut event.payload).await?;
        }
        if let Some(created) =
            fold_stream::<OrderDetail>(&events).map_err(|e| AppError::Internal(e.into()))?
        {
            detail.personal = created.personal;
        }
        Ok(detail)
    }

    /// The detail row once it is at `wanted` (bounded wait), else the fold.
    ///
    /// Ownership comes first: an order of someone else and an unknown id are
    /// both None at once, never after the wait (whose length would tell that
    /// the order exists and has not reached `wanted` yet).
    async fn read_at_least(
        &self,
        principal: &Principal,
        id: Uuid,
        wanted: u64,
    ) -> Result<Option<OrderDetail>, AppError> {
        let owned = |detail: &OrderDetail| principal.may_access(&detail.summary.customer_id);
        // Subscribe before reading: a change between the two is not missed.
        let mut changes = self.changes.subscribe();
        match self.store.order_detail(id).await? {
            Some(row) if !owned(&row) => return Ok(None),
            Some(row) if row.summary.version >= wanted.max(1) => return Ok(Some(row)),
            Some(_) => {}
            // Not projected yet, or no such order: the event store tells
            // which before any wait.
            None => match self.fold(id).await? {
                Some(folded) if owned(&folded) && wanted == 0 => return Ok(Some(folded)),
                // The caller's own order: wait for the projection as before.
                Some(folded) if owned(&folded) => {}
                _ => return Ok(None),
            },
        }
        let deadline = tokio::time::Instant::now() + MIN_VERSION_WAIT;
        loop {
            let woke = tokio::time::timeout_at(deadline, async {
                tokio::select! {
                    change = changes.recv() => !matches!(change, Ok(c) if c.order_id != id),
                    _ = tokio::time::sleep(POLL) => true,
                }
            })
            .await;
            match woke {
                Err(_) => break,
                Ok(false) => continue,
                Ok(true) => {
                    let row = self.store.order_detail(id).await?;
                    if row.as_ref().is_some_and(|r| r.summary.version >= wanted) {
                        return Ok(row);
                    }
                }
            }
        }
        // Still behind: the event store answers (read-your-writes holds).
        self.fold(id).await
    }

    /// The order folded from its stream, as the projection would build it.
    async fn fold(&self, id: Uuid) -> Result<Option<OrderDetail>, AppError> {
        let events = self.events.read_stream(id, 1).await?;
        fold_stream::<OrderDetail>(&events).map_err(|e| AppError::Internal(e.into()))
    }

    /// ListOrders: a customer's own orders; an admin's lists every customer's.
    #[tracing::instrument(skip(self, principal, page_token), fields(customer = %principal.subject))]
    pub async fn list_orders(
        &self,
        principal: &Principal,
        requested_size: i32,
        page_token: &str,
        status: Option<OrderStatus>,
    ) -> Result<OrderPage, AppError> {
        let limit = page_size("page_size", requested_size)?;
        let filter = status.map(|s| s.as_str().to_string());
        let after = if page_token.is_empty() {
            None
        } else {
            let token: PageToken = URL_SAFE_NO_PAD
                .decode(page_token)
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                .ok_or_else(|| AppError::invalid("page_token", "not a token from a previous response"))?;
            if token.s != filter {
                return Err(AppError::invalid(
                    "page_token",
                    "was made for another status filter",
                ));
            }
            let created_at = crate::app::paging::page_token_time(token.t)
                .ok_or_else(|| AppError::invalid("page_token", "not a token from a previous response"))?;
            Some(ListCursor {
                created_at,
                order_id: token.o,
            })
        };
        let query = ListQuery {
            customer_id: (!principal.is_admin()).then(|| principal.subject.clone()),
            status,
            after,
            // One more than asked: tells whether a next page exists.
            limit: limit + 1,
        };
        let mut orders = match self.list_on_replica(&query).await {
            Some(orders) => orders,
            None => self.store.list_orders(&query).await?,
        };
        let more = orders.len() as i64 > limit;
        orders.truncate(limit as usize);
        let next_page_token = match orders.last() {
            Some(last) if more => URL_SAFE_NO_PAD.encode(
                serde_json::to_vec(&PageToken {
                    t: last.created_at.timestamp_micros(),
                    o: last.order_id,
                    s: filter,
                })
                .unwrap_or_default(),
            ),
            _ => String::new(),
        };
        Ok(OrderPage {
            orders,
            next_page_token,
        })
    }

    /// ListOrders' page from the replica; None when there is none or it failed.
    async fn list_on_replica(&self, query: &ListQuery) -> Option<Vec<OrderSummary>> {
        let replica = self.replica.as_ref()?;
        let Some(store) = replica.store() else {
            replica.record(QUERIES, Outcome::Unavailable);
            return None;
        };
        match store.list_orders(query).await {
            Ok(orders) => {
                replica.record(QUERIES, Outcome::Replica);
                Some(orders)
            }
            Err(error) => {
                replica.failed(QUERIES, &error);
                None
            }
        }
    }

    /// GetOrderHistory: the order's events merged with its saga's attempts,
    /// in time order.
    #[tracing::instrument(skip(self, principal), fields(customer = %principal.subject))]
    pub async fn order_history(
        &self,
        principal: &Principal,
        order_id: &str,
    ) -> Result<Vec<HistoryEntry>, AppError> {
        let id = parse_order_id(order_id)?;
        let events = self.events.read_stream(id, 1).await?;
        let owner = fold_stream::<OrderDetail>(&events)
            .ok()
            .flatten()
            .map(|detail| detail.summary.customer_id);
        if !owner.is_some_and(|owner| principal.may_access(&owner)) {
            return Err(not_found(id));
        }
        let mut events = events;
        for event in &mut events {
            self.privacy.open_personal(&mut event.payload).await?;
        }
        let mut entries: Vec<HistoryEntry> = events.into_iter().map(HistoryEntry::Event).collect();
        if let Some(saga) = self.sagas.find_by_order(id).await? {
            entries.extend(
                self.sagas
                    .attempts(saga.saga_id)
                    .await?
                    .into_iter()
                    .map(HistoryEntry::Attempt),
            );
        }
        // Stable: events keep their stream order on equal times.
        entries.sort_by_key(HistoryEntry::occurred_at);
        Ok(entries)
    }

    /// WatchOrder: the current state, then the order at each change a
    /// watcher acts on ([`Watched`]: its status, or a cancellation request),
    /// ending after a terminal status, or cleanly (OK, no terminal status)
    /// once the stream's lifetime is over: watch again to go on. An error
    /// ends it early (UNAVAILABLE on shutdown: watch again elsewhere). Caps
    /// and the shared feed: [`crate::app::watch`].
    ///
    /// `after_version` resumes a watch: the current state is sent first only
    /// when it is newer than that version (the last one the caller saw), and
    /// an order terminal at or before it ends the stream at once.
    pub async fn watch_order(
        &self,
        principal: &Principal,
        order_id: &str,
        after_version: i64,
    ) -> Result<mpsc::Receiver<Result<OrderDetail, AppError>>, AppError> {
        let id = parse_order_id(order_id)?;
        let after_version = u64::try_from(after_version)
            .map_err(|_| AppError::invalid("after_version", "must not be negative"))?;
        // Subscribed before the first read: a change in between is not missed.
        let mut ticket = self.watches.open(&principal.subject, id)?;
        // The feed's own first look (the stream's version as floor), shared
        // with the feed: the order's next commits fold onto it, unread.
        let first = match ticket.first_look().await? {
            Some((detail, created)) if principal.may_access(&detail.summary.customer_id) => {
                self.with_personal(detail, created).await?
            }
            _ => return Err(not_found(id)),
        };
        // Personal data never changes after OrderCreated: open it once.
        let personal = first.personal.clone();
        let (sender, receiver) = mpsc::channel(8);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let ends_at = tokio::time::Instant::now() + ticket.lifetime();
            let mut last = Watched::of(&first);
            let mut version = first.summary.version.max(after_version);
            let seen = first.summary.version <= after_version;
            if last.status.is_terminal() && seen {
                return;
            }
            if !seen && (sender.send(Ok(first)).await.is_err() || last.status.is_terminal()) {
                return;
            }
            loop {
                tokio::select! {
                    changed = ticket.receiver().changed() => if changed.is_err() { return },
                    // The clean end of a long watch (see the module doc of watch).
                    _ = tokio::time::sleep_until(ends_at) => return,
                    _ = shutdown.wait() => {
                        let _ = sender.send(Err(AppError::Unavailable { reason: crate::error::ErrorReason::ShuttingDown, message: "server shutting down; watch again".into() })).await;
                        return;
                    }
                    _ = sender.closed() => return,
                }
                let Some(current) = ticket.receiver().borrow_and_update().clone() else {
                    continue;
                };
                if current.summary.version <= version {
                    // Seen already (the client's after_version may be ahead of the read
                    // model the first state came from): a terminal state still ends the
                    // stream, since nothing can follow it.
                    if current.summary.status.is_terminal() {
                        return;
                    }
                    continue;
                }
                version = current.summary.version;
                if Watched::of(&current) == last {
                    continue;
                }
                let mut current = OrderDetail::clone(&current);
                current.personal = personal.clone();
                last = Watched::of(&current);
                if sender.send(Ok(current)).await.is_err() || last.status.is_terminal() {
                    return;
                }
            }
        });
        Ok(receiver)
    }

    /// The open WatchOrder streams of this process and their feed.
    pub fn watches(&self) -> &OrderWatches {
        &self.watches
    }

    /// ListDeadLetters (admin): oldest first.
    pub async fn dead_letters(
        &self,
        principal: &Principal,
        requested_size: i32,
    ) -> Result<Vec<DeadLetter>, AppError> {
        principal.require_admin()?;
        let limit = page_size("page_size", requested_size)?;
        self.bus
            .dead_letters(limit as usize)
            .await
            .map_err(|e| AppError::unavailable(e.to_string()))
    }

    /// ReplayDeadLetters (admin): the named ones, or all when `ids` is empty.
    pub async fn replay_dead_letters(&self, principal: &Principal, ids: &[String]) -> Result<u64, AppError> {
        principal.require_admin()?;
        if let Some(bad) = ids.iter().position(|id| id.is_empty() || id.len() > 64) {
            return Err(AppError::invalid(format!("ids[{bad}]"), "not a dead-letter id"));
        }
        self.bus
            .replay_dead_letters(ids)
            .await
            .map_err(|e| AppError::unavailable(e.to_string()))
    }

    /// GetProjectionStatus (admin).
    pub async fn projection_status(&self, principal: &Principal) -> Result<Vec<ProjectionState>, AppError> {
        principal.require_admin()?;
        states(&self.store, self.events.as_ref())
            .await
            .map_err(AppError::Internal)
    }
}

impl From<OrderDetail> for OrderView {
    fn from(detail: OrderDetail) -> Self {
        let OrderDetail { summary, personal } = detail;
        let mut view = Self::from(summary);
        view.payment_method = personal.payment_method;
        view.shipping_address = personal.shipping_address;
        view
    }
}

/// A list row as a view: personal fields empty (the order list keeps none;
/// GetOrder has them).
impl From<OrderSummary> for OrderView {
    fn from(summary: OrderSummary) -> Self {
        Self {
            order_id: summary.order_id,
            customer_id: summary.customer_id,
            cart_id: summary.cart_id,
            status: summary.status,
            items: summary.items,
            currency: summary.currency,
            total: summary.total,
            payment_method: String::new(),
            shipping_address: ShippingAddress {
                recipient_name: String::new(),
                line1: String::new(),
                line2: String::new(),
                city: String::new(),
                region: String::new(),
                postal_code: String::new(),
                country: String::new(),
            },
            cancellation_reason: (summary.status == OrderStatus::Cancelled)
                .then_some(summary.cancellation_reason),
            cancellation_reason_code: summary.cancellation_reason_code,
            cancellation_requested: summary.cancellation_requested,
            version: summary.version,
            created_at: summary.created_at,
            updated_at: summary.updated_at,
            saga_id: summary.saga_id,
            item_count: summary.item_count,
        }
    }
}
