//! The event bus: committed events travel from the relay (the settled log) to the
//! projections over Redis Streams, or over an in-process equivalent in the
//! embedded mode. Both honour the same [`EventBus`] contract, checked by one
//! conformance suite (`tests/api/bus.rs`).
//!
//! # Partitions
//! Events travel on [`EventBus::partitions`] streams, `N` (EVENT_BUS_PARTITIONS,
//! default 1). An event goes to the partition of its stream id
//! ([`partition_of`]), so the events of one order stay in one partition, in
//! order, while different orders spread over all of them. Every consumer
//! group exists once per partition ([`PartitionGroup`]): its last-delivered
//! id and pending list there are that partition's checkpoint, from which
//! whichever replica owns the partition next resumes.
//!
//! Which replica consumes which partition is decided by leases the bus keeps
//! beside the partitions ([`EventBus::balance`]): each live replica holds
//! about `N / replicas` of them, so adding a replica adds consumers, and the
//! partitions of a replica that stopped renewing move to the others once its
//! lease expires.
//!
//! # Contract (Redis Streams semantics, per partition)
//! - [`EventBus::publish`] appends entries in the given order (XADD), each to
//!   its stream's partition.
//! - A consumer group sees every entry appended after the group was created
//!   (and the ones still in the stream when it is created), each delivered to
//!   one consumer of the group, and kept in that consumer's pending list until
//!   acknowledged ([`EventBus::ack`]).
//! - [`EventBus::read_pending`] re-delivers the consumer's own pending entries
//!   (XREADGROUP with id 0): a restarted consumer drains them first.
//! - [`EventBus::claim_idle`] moves entries that another consumer has left
//!   unacknowledged for too long to the caller (XAUTOCLAIM): a dead replica's
//!   work is not lost.
//! - Every delivery counts; [`Delivery::deliveries`] lets a consumer send an
//!   entry that keeps failing to the dead-letter stream
//!   ([`EventBus::dead_letter`]), where an admin lists and replays it.
//! - Delivery is at least once: consumers are idempotent (projections apply
//!   an event only at the next version of its stream).
//!
//! Dead letters are one list for all partitions; a replayed one goes back to
//! its stream's partition.
//!
//! Besides events, the bus carries one kind of notice every replica reads:
//! a customer was forgotten ([`EventBus::announce_forgotten`]).

pub mod in_process;
pub mod leases;
pub mod redis_streams;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::store::{
    Purge,
    event_store::{EventMetadata, StoredEvent, Upcasters},
};

/// Entries a stream keeps at most (approximately: `MAXLEN ~`). A group that
/// falls further behind loses the oldest entries; the projections' sweep over
/// the event store still applies them (see `crate::projections`).
pub const DEFAULT_MAX_LEN: usize = 100_000;

/// One of the bus's streams, numbered from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Partition(pub u32);

impl std::fmt::Display for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The partition of `stream_id` among `partitions`: the stream id (a UUID,
/// random in its low bits) modulo the count. Part of the bus layout: every
/// replica must compute it alike, and changing the count moves streams (see
/// the README's procedure for changing EVENT_BUS_PARTITIONS).
pub fn partition_of(stream_id: Uuid, partitions: u32) -> Partition {
    let partitions = partitions.max(1);
    Partition((stream_id.as_u128() % u128::from(partitions)) as u32)
}

/// A consumer group on one partition: what XREADGROUP and XACK address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionGroup<'a> {
    /// The group (a projection's name).
    pub group: &'a str,
    /// The partition it reads.
    pub partition: Partition,
}

impl<'a> PartitionGroup<'a> {
    /// `group` on `partition`.
    pub fn new(group: &'a str, partition: Partition) -> Self {
        Self { group, partition }
    }
}

/// How far a group is from the end of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    /// Entries no consumer of the group has been delivered yet.
    pub unread: u64,
    /// Entries delivered and not acknowledged.
    pub pending: u64,
}

impl Backlog {
    /// Nothing left to read or acknowledge.
    pub fn drained(&self) -> bool {
        self.unread == 0 && self.pending == 0
    }
}

/// A committed domain event as it travels on the bus; also what the
/// projections consume, whether it came over the bus or from the event store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// Unique: consumers deduplicate on it, since delivery is at least once.
    pub event_id: Uuid,
    /// The stream (aggregate id).
    pub stream_id: Uuid,
    /// The stream's type, e.g. `order`.
    pub stream_type: String,
    /// Position in its stream, from 1.
    pub version: u64,
    /// Position in the global log.
    pub global_position: i64,
    /// Event type, e.g. `OrderCreated`.
    pub event_type: String,
    /// Schema version of `payload`.
    pub schema_version: i32,
    /// The event's payload, at `schema_version`.
    pub payload: serde_json::Value,
    /// Provenance (correlation, causation, idempotency key).
    #[serde(default)]
    pub metadata: EventMetadata,
    /// When the event was recorded.
    pub recorded_at: DateTime<Utc>,
}

impl EventEnvelope {
    /// The wire form: one JSON document.
    pub fn encode(&self) -> String {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The stored event, its payload upcast to the current schema (an entry
    /// published by an older release may carry an older one).
    pub fn into_stored(self, upcasters: &Upcasters) -> Result<StoredEvent, String> {
        let payload = upcasters.upcast(&self.event_type, self.schema_version, self.payload)?;
        Ok(StoredEvent {
            event_id: self.event_id,
            stream_id: self.stream_id,
            stream_type: self.stream_type,
            version: self.version,
            global_position: self.global_position,
            event_type: self.event_type,
            schema_version: self.schema_version,
            payload,
            metadata: self.metadata,
            recorded_at: self.recorded_at,
        })
    }
}

impl From<&StoredEvent> for EventEnvelope {
    fn from(event: &StoredEvent) -> Self {
        Self {
            event_id: event.event_id,
            stream_id: event.stream_id,
            stream_type: event.stream_type.clone(),
            version: event.version,
            global_position: event.global_position,
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            payload: event.payload.clone(),
            metadata: event.metadata.clone(),
            recorded_at: event.recorded_at,
        }
    }
}

/// One delivery of a bus entry to a consumer.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The partition it was read from (its acknowledgement goes there).
    pub partition: Partition,
    /// Entry id in the partition's stream (`<ms>-<seq>`).
    pub id: String,
    /// How many times the entry has been delivered, this one included.
    pub deliveries: u64,
    /// The entry's encoded event (see [`EventEnvelope::encode`]).
    pub raw: String,
}

impl Delivery {
    /// The event, or why the entry is not one (a poison entry).
    pub fn event(&self) -> Result<EventEnvelope, String> {
        serde_json::from_str(&self.raw).map_err(|e| format!("undecodable bus entry: {e}"))
    }
}

/// An entry that failed too often and was set aside for an admin.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Id in the dead-letter stream.
    pub id: String,
    /// The consumer group (projection) that gave up on it.
    pub group: String,
    /// The original entry's encoded event.
    pub raw: String,
    /// Deliveries before it was dead-lettered.
    pub deliveries: u64,
    /// The error of the last delivery, as the projection reported it.
    pub error: String,
    /// When it was dead-lettered.
    pub dead_lettered_at: DateTime<Utc>,
}

impl DeadLetter {
    /// The dead-lettered event, when the entry decodes.
    pub fn event(&self) -> Result<EventEnvelope, String> {
        serde_json::from_str(&self.raw).map_err(|e| format!("undecodable bus entry: {e}"))
    }
}

/// A bus failure; every one of them is transient from the caller's view
/// (retry later), except what [`Delivery::event`] reports.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// Redis is down or answered with an error.
    #[error("redis: {0}")]
    Redis(#[from] deadpool_redis::redis::RedisError),
    /// No pooled Redis connection within the pool timeout.
    #[error("redis pool: {0}")]
    Pool(#[from] deadpool_redis::PoolError),
    /// Redis answered something we did not expect.
    #[error("unexpected reply: {0}")]
    Protocol(String),
}

/// The bus contract shared by Redis Streams and the in-process bus.
#[async_trait::async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// "redis-streams" or "in-process".
    fn kind(&self) -> &'static str;

    /// How many partitions events are spread over (at least 1).
    fn partitions(&self) -> u32;

    /// Appends `events`, each to its stream's partition ([`partition_of`]),
    /// in the given order within each partition.
    async fn publish(&self, events: &[EventEnvelope]) -> Result<(), BusError>;

    /// Creates the group on its partition (idempotent). A new group starts at
    /// the partition's oldest entry.
    async fn create_group(&self, group: PartitionGroup<'_>) -> Result<(), BusError>;

    /// Re-delivers up to `count` entries pending for `consumer`, oldest first.
    async fn read_pending(
        &self,
        group: PartitionGroup<'_>,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<Delivery>, BusError>;

    /// Delivers up to `count` entries no consumer of the group has seen yet,
    /// waiting up to `block` for the first one.
    async fn read_new(
        &self,
        group: PartitionGroup<'_>,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Delivery>, BusError>;

    /// Moves up to `count` entries pending for longer than `min_idle` (any
    /// consumer) to `consumer` and delivers them.
    async fn claim_idle(
        &self,
        group: PartitionGroup<'_>,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<Delivery>, BusError>;

    /// Acknowledges entries: they leave the pending list for good.
    async fn ack(&self, group: PartitionGroup<'_>, ids: &[String]) -> Result<(), BusError>;

    /// How far the group is from the end of its partition (the drain check
    /// of the procedure that changes the partition count).
    async fn backlog(&self, group: PartitionGroup<'_>) -> Result<Backlog, BusError>;

    /// Copies `delivery` to the dead-letter stream with `error`, then acks it
    /// (on `delivery.partition`).
    async fn dead_letter(&self, group: &str, delivery: &Delivery, error: &str) -> Result<(), BusError>;

    /// Dead letters, oldest first, at most `limit`.
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, BusError>;

    /// Publishes the named dead letters again (all of them when `ids` is
    /// empty) and removes them from the dead-letter stream; returns how many.
    /// Every group sees the replayed entry; the ones that applied it already
    /// ignore it.
    async fn replay_dead_letters(&self, ids: &[String]) -> Result<u64, BusError>;

    /// Retention: dead letters dead-lettered before `before`, counted or
    /// removed (all of them: the dead-letter stream is capped anyway).
    async fn purge_dead_letters(&self, before: DateTime<Utc>, purge: Purge) -> Result<u64, BusError>;

    /// Renews `member`'s membership and leases for `ttl` and rebalances: the
    /// partitions `member` holds now, sorted (see [`leases`]). A member that
    /// stops calling loses its partitions when `ttl` runs out.
    async fn balance(&self, member: &str, ttl: Duration) -> Result<Vec<Partition>, BusError>;

    /// The live lease holder of each partition (index = partition), for
    /// operators and tests; nothing is renewed.
    async fn owners(&self) -> Result<Vec<Option<String>>, BusError>;

    /// `member` leaves: its leases and membership go at once, so the others
    /// take its partitions at their next [`EventBus::balance`].
    async fn leave(&self, member: &str) -> Result<(), BusError>;

    /// Tells every replica that `customer_id` was forgotten: their caches of
    /// the customer's key must go at once (see [`crate::privacy::Vault`]).
    /// Unlike events, every reader sees every notice (no consumer group).
    async fn announce_forgotten(&self, customer_id: &str) -> Result<(), BusError>;

    /// The customers announced forgotten after `cursor`, waiting up to
    /// `block` for the first, and the cursor to pass next. With no cursor,
    /// none: only the cursor of "now".
    async fn forgotten_after(
        &self,
        cursor: Option<&str>,
        block: Duration,
    ) -> Result<(String, Vec<String>), BusError>;
}

/// This replica's consumer name: the host name (the pod name under
/// Kubernetes), stable across restarts of the process, so that a restarted
/// consumer drains its own pending list first. Entries of a replica that is
/// gone for good are claimed by the others after an idle time (XAUTOCLAIM).
pub fn consumer_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "local".into())
}

/// A lease holder's name (a saga worker pool's, a relay's): this replica's
/// [`consumer_name`], the process id and 8 random hex digits, so that no two
/// holders share one, not even two in one process or a restarted process.
pub fn lease_holder_name() -> String {
    format!(
        "{}-{}-{}",
        consumer_name(),
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}
