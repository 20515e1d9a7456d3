//! The unit of work: one database transaction that several stores write
//! through, so that every table has exactly one owning module and a caller
//! still commits several tables atomically.
//!
//! # Shape
//! A [`UnitOfWork`] is a plain value that collects each owner's write
//! intent: the events to append (per stream, with the expected version), the
//! saga store's part ([`SagaWrite`]: a start, a cancel request, a worker's
//! fenced step write, an operator action) and the idempotency store's part
//! (a key's completion). A [`UnitOfWorkCommitter`] of the configured backend
//! opens one transaction and hands each part to its owner's writer
//! (`fn(&mut PgConnection | &mut SqliteConnection, &Part)`), in a fixed
//! order: events, then the saga part, then the idempotency key. A refusal in
//! any part (a stream that moved, a lost lease, a saga an operator raced, a
//! key never claimed) rolls back the whole unit.
//!
//! # Why values and not restate's trait-per-table transaction
//! restate's storage-api gives each table a small trait and implements all
//! of them on one `Transaction` type that callers drive step by step. That
//! needs a transaction object alive across the caller's awaits, one per
//! caller, which rules out PostgreSQL group commit: many callers' writes in
//! one database transaction, and a failing one rerun alone. A value can be
//! queued, batched with other units (one statement for all their events) and
//! written again by itself, so the group commit of [`crate::store::group_commit`]
//! serves units of work as it serves lone appends. The owners keep restate's
//! other half: each table's SQL lives in one module, behind that module's
//! writer function.
//!
//! # Who commits through it
//! - CreateOrder: OrderCreated, the saga start and the
//!   idempotency key's completion.
//! - CancelOrder: CancellationRequested and the saga's cancel flag.
//! - Each saga step: the step's outcome and the next step's start (a fenced
//!   write), the order event the step's command decided: one transaction per step ([`crate::saga::engine`]).
//! - SagaAdmin's retry and skip: the operator action row, the saga's columns
//!   and the `SagaStepRetried`/`SagaStepSkipped` audit event.
//!
//! # Where a saga starts
//! In one place: CreateOrder's unit of work carries a [`SagaWrite::Start`]
//! beside OrderCreated, and the saga store's writer inserts the `sagas` row.
//! Waking the workers afterwards is only a hint (a poll finds it anyway).
//! When a worker of the replica is free, the part is a
//! [`SagaWrite::StartLeased`] instead: the row leased to that worker, with
//! its first step's start, and the saga is handed to it in memory.
//!
//! # Owners (every table and the module whose SQL writes it)
//! | table | written by |
//! |---|---|
//! | `events` | [`crate::store::event_store`] |
//! | `relay_cursor` | [`crate::store::relay_cursor`], moved by the relay ([`crate::relay`]) after the bus accepted the events up to it |
//! | `sagas`, `saga_steps`, `saga_attempts`, `saga_operator_actions` | [`crate::store::saga`] |
//! | `idempotency_keys` | [`crate::store::idempotency`] |
//! | `order_details`, `customer_orders`, `cart_conversions`, `projection_checkpoints` | [`crate::store::read_models`] |
//! | `customer_keys`, `forgotten_customers` | [`crate::privacy::store`] |
//! | `event_consumers` | [`crate::store::consumers`] |
//! | `service_info` | the migrations only |
//!
//! A unit of work writes only `events`, the saga tables and
//! `idempotency_keys`; carts live in Redis ([`crate::store::cart`]).

mod postgres;
mod sqlite;

use std::fmt;

use async_trait::async_trait;
use uuid::Uuid;

pub use self::{postgres::PostgresUnitOfWork, sqlite::SqliteUnitOfWork};
use crate::{
    error::AppError,
    store::{
        event_store::{
            AppendResult, EventStore, EventStoreError, NewEvent, PostgresEventStore, SqliteEventStore,
            StreamAppend,
        },
        idempotency::{IdempotencyCompletion, IdempotencyStoreError},
        saga::{CancelFlag, SagaStoreError, SagaWrite},
    },
};

/// The writes of several owners that commit together or not at all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UnitOfWork {
    /// Events to append, per stream (event store).
    pub appends: Vec<StreamAppend>,
    /// The saga store's part.
    pub saga: Option<SagaWrite>,
    /// The idempotency key this unit answers (idempotency store).
    pub idempotency: Option<IdempotencyCompletion>,
}

/// What a committed unit of work reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// One per append, in order. An append that was already stored (an
    /// idempotent repeat of a one-append unit) says so, and then nothing
    /// else of the unit was written.
    pub appended: Vec<AppendResult>,
    /// What a fenced saga write read back.
    pub cancel_flag: Option<CancelFlag>,
}

store_error! {
    /// Why a unit of work wrote nothing (a key never claimed is `Other`).
    pub enum UnitOfWorkError("storage", "unit of work") {
        /// A stream was not at the expected version.
        #[error("version conflict on stream {stream_id}: expected version {expected}, stream is at {actual}")]
        Conflict {
            /// The stream that moved.
            stream_id: Uuid,
            /// The version the caller decided on.
            expected: u64,
            /// The stream's version now.
            actual: u64,
        },
        /// A fenced saga write's lease is gone (or its cancel flag changed).
        #[error("saga lease lost")]
        LeaseLost,
        /// An operator action's saga changed since it was read.
        #[error("saga changed concurrently")]
        SagaChanged,
    }
}

impl UnitOfWorkError {
    fn from_events(stream_id: Uuid, err: EventStoreError) -> Self {
        match err {
            EventStoreError::Conflict { expected, actual } => Self::Conflict {
                stream_id,
                expected,
                actual,
            },
            EventStoreError::Unavailable(why) => Self::Unavailable(why),
            EventStoreError::Other(source) => Self::Other(source),
        }
    }

    /// The event store's form of this error, for a unit that only appends
    /// (which has no saga part to lose a lease or race an operator on).
    fn into_event_store(self) -> EventStoreError {
        match self {
            Self::Conflict { expected, actual, .. } => EventStoreError::Conflict { expected, actual },
            Self::Unavailable(why) => EventStoreError::Unavailable(why),
            Self::Other(source) => EventStoreError::Other(source),
            Self::LeaseLost | Self::SagaChanged => EventStoreError::Other(anyhow::Error::new(self)),
        }
    }

    /// Whether another transaction took a version or an event id first
    /// (a lone unit then is refused, not failed).
    fn is_unique_violation(&self) -> bool {
        matches!(self, Self::Other(err) if crate::store::event_store::is_unique_violation(err))
    }
}

impl From<EventStoreError> for UnitOfWorkError {
    fn from(err: EventStoreError) -> Self {
        Self::from_events(Uuid::nil(), err)
    }
}

impl From<SagaStoreError> for UnitOfWorkError {
    fn from(err: SagaStoreError) -> Self {
        match err {
            SagaStoreError::LeaseLost => Self::LeaseLost,
            SagaStoreError::Conflict => Self::SagaChanged,
            SagaStoreError::Unavailable(why) => Self::Unavailable(why),
            SagaStoreError::Other(source) => Self::Other(source),
        }
    }
}

impl From<IdempotencyStoreError> for UnitOfWorkError {
    fn from(err: IdempotencyStoreError) -> Self {
        match err {
            IdempotencyStoreError::Unavailable(why) => Self::Unavailable(why),
            IdempotencyStoreError::Other(source) => Self::Other(source),
        }
    }
}

impl From<UnitOfWorkError> for AppError {
    fn from(err: UnitOfWorkError) -> Self {
        match err {
            UnitOfWorkError::Conflict { .. } => {
                AppError::aborted(crate::error::ErrorReason::ConcurrentModification, err.to_string())
            }
            UnitOfWorkError::LeaseLost | UnitOfWorkError::SagaChanged => AppError::aborted(
                crate::error::ErrorReason::ConcurrentModification,
                "the saga changed meanwhile; read it again and retry",
            ),
            UnitOfWorkError::Unavailable(why) => AppError::unavailable(why),
            UnitOfWorkError::Other(source) => AppError::Internal(source),
        }
    }
}

/// Commits units of work on one backend.
#[async_trait]
pub trait UnitOfWorkCommitter: Send + Sync + fmt::Debug {
    /// Writes every part of `unit` in one transaction, or nothing.
    async fn commit(&self, unit: UnitOfWork) -> Result<Committed, UnitOfWorkError>;

    /// Appends `events` to `stream_id` (of type `stream_type`), which must be
    /// at `expected_version` (0 for a new stream), and nothing else: a unit of
    /// one append, group-committed with others like any unit. The events get
    /// versions `expected_version + 1..`; the answer and the errors are the
    /// event store's ([`EventStoreError::Conflict`] when the stream moved,
    /// [`AppendResult::already_stored`] for an idempotent repeat).
    async fn append(
        &self,
        stream_id: Uuid,
        expected_version: u64,
        events: Vec<NewEvent>,
        stream_type: &str,
    ) -> Result<AppendResult, EventStoreError> {
        let unit = UnitOfWork {
            appends: vec![StreamAppend {
                stream_id,
                stream_type: stream_type.to_string(),
                expected_version: Some(expected_version),
                events,
            }],
            ..UnitOfWork::default()
        };
        let mut committed = self
            .commit(unit)
            .await
            .map_err(UnitOfWorkError::into_event_store)?;
        committed
            .appended
            .pop()
            .ok_or_else(|| anyhow::anyhow!("a committed append reported no result").into())
    }
}

/// Checks that a unit can be written at all: something to write, and no
/// stream twice (a unit decides each stream's version once).
fn check_unit(unit: &UnitOfWork) -> Result<(), UnitOfWorkError> {
    if unit.appends.is_empty() && unit.saga.is_none() && unit.idempotency.is_none() {
        return Err(anyhow::anyhow!("an empty unit of work").into());
    }
    for (i, append) in unit.appends.iter().enumerate() {
        if unit.appends[..i].iter().any(|a| a.stream_id == append.stream_id) {
            return Err(
                anyhow::anyhow!("a unit of work appends to stream {} twice", append.stream_id).into(),
            );
        }
    }
    Ok(())
}

/// An event store that can say why an append was refused.
#[async_trait]
trait ExplainRefusal: Send + Sync {
    /// An idempotent repeat (the events are stored at those versions), or the
    /// conflict.
    async fn explain_refusal(
        &self,
        stream_id: Uuid,
        expected_version: u64,
        events: &[NewEvent],
    ) -> Result<AppendResult, EventStoreError>;

    /// The stream's version now.
    async fn version_of(&self, stream_id: Uuid) -> Result<u64, EventStoreError>;
}

/// [`ExplainRefusal`] of each backend's event store, by its inherent
/// `explain_refusal` and its [`EventStore::stream_version`].
macro_rules! explain_refusal {
    ($($store:ty),*) => {$(
        #[async_trait]
        impl ExplainRefusal for $store {
            async fn explain_refusal(
                &self,
                stream_id: Uuid,
                expected_version: u64,
                events: &[NewEvent],
            ) -> Result<AppendResult, EventStoreError> {
                <$store>::explain_refusal(self, stream_id, expected_version, events).await
            }

            async fn version_of(&self, stream_id: Uuid) -> Result<u64, EventStoreError> {
                self.stream_version(stream_id).await
            }
        }
    )*};
}

explain_refusal!(PostgresEventStore, SqliteEventStore);

/// After a unit was refused (nothing of it written): the conflict, or, for a
/// one-append unit whose events are already stored, the idempotent repeat.
/// An append with no expected version is refused only when a concurrent
/// writer took the version it read: reported as a conflict one behind.
async fn explain_refused(
    store: &dyn ExplainRefusal,
    unit: &UnitOfWork,
) -> Result<Committed, UnitOfWorkError> {
    let mut appended = Vec::with_capacity(unit.appends.len());
    for append in &unit.appends {
        let stream_id = append.stream_id;
        let explained = match append.expected_version {
            Some(expected) => store.explain_refusal(stream_id, expected, &append.events).await,
            None => {
                let actual = store
                    .version_of(stream_id)
                    .await
                    .map_err(|e| UnitOfWorkError::from_events(stream_id, e))?;
                Err(EventStoreError::Conflict {
                    expected: actual.saturating_sub(1),
                    actual,
                })
            }
        };
        appended.push(explained.map_err(|e| UnitOfWorkError::from_events(stream_id, e))?);
    }
    match appended.as_slice() {
        [repeat] if repeat.already_stored => Ok(Committed {
            appended,
            cancel_flag: None,
        }),
        _ => Err(anyhow::anyhow!("a unit of work was refused, but none of its appends conflicts").into()),
    }
}
