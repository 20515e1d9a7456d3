//! The embedded bus: an in-memory log with consumer groups, pending lists,
//! delivery counts, idle claims and a dead-letter list, mirroring the Redis
//! Streams semantics the projections rely on.
//!
//! It lives as long as the process. That is enough because it is never the
//! durable source: events not yet published stay behind the relay's cursor
//! in the event store until the relay has handed them over, and the projections sweep the event store for any
//! event the bus lost (a restart, trimming).

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use super::{
    Backlog, BusError, DeadLetter, Delivery, EventBus, EventEnvelope, Partition, PartitionGroup,
    leases::LeaseTable, partition_of,
};
use crate::store::Purge;

/// The [`EventBus`] of a single process without Redis: lost on restart,
/// which is safe because it is never the durable source (module doc).
pub struct InProcessBus {
    state: Mutex<BusState>,
    /// Woken on every publish, for blocked [`EventBus::read_new`] calls.
    published: Notify,
}

/// The partitions, dead letters, notices and leases, as Redis would hold them.
#[derive(Default)]
struct BusState {
    max_len: usize,
    partitions: Vec<StreamLog>,
    next_dead_id: u64,
    dead: BTreeMap<u64, DeadLetter>,
    /// Forget notices, in order; a cursor is an index into it.
    forgotten: Vec<String>,
    leases: LeaseTable,
}

/// One partition's stream and its consumer groups.
struct StreamLog {
    next_id: u64,
    entries: BTreeMap<u64, String>,
    groups: HashMap<String, Group>,
}

impl Default for StreamLog {
    fn default() -> Self {
        Self {
            next_id: 1,
            entries: BTreeMap::new(),
            groups: HashMap::new(),
        }
    }
}

impl StreamLog {
    fn append(&mut self, raw: String, max_len: usize) {
        let id = self.next_id;
        self.next_id += 1;
        self.entries.insert(id, raw);
        while self.entries.len() > max_len {
            self.entries.pop_first();
        }
    }
}

#[derive(Default)]
struct Group {
    /// Highest entry id delivered as new.
    last_delivered: u64,
    pending: BTreeMap<u64, Pending>,
}

struct Pending {
    consumer: String,
    delivered_at: Instant,
    deliveries: u64,
}

fn format_id(id: u64) -> String {
    format!("{id}-0")
}

fn parse_id(id: &str) -> Option<u64> {
    id.split_once('-').map_or(id, |(ms, _)| ms).parse().ok()
}

impl InProcessBus {
    /// An empty bus of `partitions` streams (at least one), each keeping at
    /// most about `max_len` entries.
    pub fn new(max_len: usize, partitions: u32) -> Self {
        Self {
            state: Mutex::new(BusState {
                max_len: max_len.max(1),
                partitions: (0..partitions.max(1)).map(|_| StreamLog::default()).collect(),
                next_dead_id: 1,
                ..BusState::default()
            }),
            published: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BusState> {
        // A panic while holding the lock leaves consistent data (every
        // mutation below is a single step), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `f` on the partition's stream, or the error Redis would give for a
    /// key this bus does not have.
    fn with_partition<T>(
        &self,
        partition: Partition,
        f: impl FnOnce(&mut StreamLog) -> T,
    ) -> Result<T, BusError> {
        let mut state = self.lock();
        let count = state.partitions.len();
        state
            .partitions
            .get_mut(partition.0 as usize)
            .map(f)
            .ok_or_else(|| {
                BusError::Protocol(format!("partition {partition} of a bus with {count} partitions"))
            })
    }

    fn take_new(
        &self,
        group: PartitionGroup<'_>,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<Delivery>, BusError> {
        self.with_partition(group.partition, |log| {
            let StreamLog { entries, groups, .. } = log;
            let state = groups.entry(group.group.to_string()).or_default();
            let fresh: Vec<(u64, String)> = entries
                .range(state.last_delivered + 1..)
                .take(count)
                .map(|(id, raw)| (*id, raw.clone()))
                .collect();
            let now = Instant::now();
            fresh
                .into_iter()
                .map(|(id, raw)| {
                    state.last_delivered = id;
                    state.pending.insert(
                        id,
                        Pending {
                            consumer: consumer.to_string(),
                            delivered_at: now,
                            deliveries: 1,
                        },
                    );
                    Delivery {
                        partition: group.partition,
                        id: format_id(id),
                        deliveries: 1,
                        raw,
                    }
                })
                .collect()
        })
    }

    /// Re-delivers pending entries chosen by `pick`, moving them to `consumer`.
    fn redeliver(
        &self,
        group: PartitionGroup<'_>,
        consumer: &str,
        count: usize,
        pick: impl Fn(&Pending) -> bool,
    ) -> Result<Vec<Delivery>, BusError> {
        self.with_partition(group.partition, |log| {
            let StreamLog { entries, groups, .. } = log;
            let Some(state) = groups.get_mut(group.group) else {
                return Vec::new();
            };
            let chosen: Vec<u64> = state
                .pending
                .iter()
                .filter(|(_, p)| pick(p))
                .take(count)
                .map(|(id, _)| *id)
                .collect();
            let now = Instant::now();
            let mut out = Vec::new();
            for id in chosen {
                let Some(raw) = entries.get(&id) else {
                    // Trimmed away while pending: nothing left to deliver (Redis
                    // drops such entries from the pending list too).
                    state.pending.remove(&id);
                    continue;
                };
                if let Some(p) = state.pending.get_mut(&id) {
                    p.consumer = consumer.to_string();
                    p.delivered_at = now;
                    p.deliveries += 1;
                    out.push(Delivery {
                        partition: group.partition,
                        id: format_id(id),
                        deliveries: p.deliveries,
                        raw: raw.clone(),
                    });
                }
            }
            out
        })
    }
}

/// The partition a raw entry goes back to when replayed (partition 0 for one
/// that does not decode: it only has to reach a group again).
fn partition_of_raw(raw: &str, partitions: u32) -> Partition {
    serde_json::from_str::<EventEnvelope>(raw)
        .map_or(Partition(0), |event| partition_of(event.stream_id, partitions))
}

#[async_trait::async_trait]
impl EventBus for InProcessBus {
    fn kind(&self) -> &'static str {
        "in-process"
    }

    fn partitions(&self) -> u32 {
        self.lock().partitions.len() as u32
    }

    async fn publish(&self, events: &[EventEnvelope]) -> Result<(), BusError> {
        {
            let mut state = self.lock();
            let (count, max_len) = (state.partitions.len() as u32, state.max_len);
            for event in events {
                let partition = partition_of(event.stream_id, count);
                state.partitions[partition.0 as usize].append(event.encode(), max_len);
            }
        }
        self.published.notify_waiters();
        Ok(())
    }

    async fn create_group(&self, group: PartitionGroup<'_>) -> Result<(), BusError> {
        self.with_partition(group.partition, |log| {
            if !log.groups.contains_key(group.group) {
                // Like `XGROUP CREATE .. 0`: start before the oldest entry kept.
                let start = log.entries.keys().next().map_or(log.next_id, |id| *id);
                log.groups.insert(
                    group.group.to_string(),
                    Group {
                        last_delivered: start.saturating_sub(1),
                        pending: BTreeMap::new(),
                    },
                );
            }
        })
    }

    async fn read_pending(
        &self,
        group: PartitionGroup<'_>,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<Delivery>, BusError> {
        self.redeliver(group, consumer, count, |p| p.consumer == consumer)
    }

    async fn read_new(
        &self,
        group: PartitionGroup<'_>,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Delivery>, BusError> {
        let deadline = tokio::time::Instant::now() + block;
        loop {
            // Register interest before looking, so a publish in between wakes us.
            let notified = self.published.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let delivered = self.take_new(group, consumer, count)?;
            if !delivered.is_empty() {
                return Ok(delivered);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn claim_idle(
        &self,
        group: PartitionGroup<'_>,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<Delivery>, BusError> {
        let now = Instant::now();
        self.redeliver(group, consumer, count, |p| {
            now.duration_since(p.delivered_at) >= min_idle
        })
    }

    async fn ack(&self, group: PartitionGroup<'_>, ids: &[String]) -> Result<(), BusError> {
        self.with_partition(group.partition, |log| {
            if let Some(state) = log.groups.get_mut(group.group) {
                for id in ids.iter().filter_map(|id| parse_id(id)) {
                    state.pending.remove(&id);
                }
            }
        })
    }

    async fn backlog(&self, group: PartitionGroup<'_>) -> Result<Backlog, BusError> {
        self.with_partition(group.partition, |log| match log.groups.get(group.group) {
            Some(state) => Backlog {
                unread: log.entries.range(state.last_delivered + 1..).count() as u64,
                pending: state.pending.len() as u64,
            },
            None => Backlog {
                unread: log.entries.len() as u64,
                pending: 0,
            },
        })
    }

    async fn dead_letter(&self, group: &str, delivery: &Delivery, error: &str) -> Result<(), BusError> {
        {
            let mut state = self.lock();
            let id = state.next_dead_id;
            state.next_dead_id += 1;
            state.dead.insert(
                id,
                DeadLetter {
                    id: format_id(id),
                    group: group.to_string(),
                    raw: delivery.raw.clone(),
                    deliveries: delivery.deliveries,
                    error: error.to_string(),
                    dead_lettered_at: Utc::now(),
                },
            );
        }
        self.ack(
            PartitionGroup::new(group, delivery.partition),
            std::slice::from_ref(&delivery.id),
        )
        .await
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, BusError> {
        Ok(self.lock().dead.values().take(limit).cloned().collect())
    }

    async fn purge_dead_letters(&self, before: DateTime<Utc>, purge: Purge) -> Result<u64, BusError> {
        let mut state = self.lock();
        let old: Vec<u64> = state
            .dead
            .iter()
            .filter(|(_, letter)| letter.dead_lettered_at < before)
            .map(|(id, _)| *id)
            .collect();
        if purge != Purge::Count {
            for id in &old {
                state.dead.remove(id);
            }
        }
        Ok(old.len() as u64)
    }

    async fn replay_dead_letters(&self, ids: &[String]) -> Result<u64, BusError> {
        let replayed = {
            let mut state = self.lock();
            let chosen: Vec<u64> = if ids.is_empty() {
                state.dead.keys().copied().collect()
            } else {
                ids.iter().filter_map(|id| parse_id(id)).collect()
            };
            let (count, max_len) = (state.partitions.len() as u32, state.max_len);
            let mut replayed = 0;
            for id in chosen {
                if let Some(letter) = state.dead.remove(&id) {
                    let partition = partition_of_raw(&letter.raw, count);
                    state.partitions[partition.0 as usize].append(letter.raw, max_len);
                    replayed += 1;
                }
            }
            replayed
        };
        self.published.notify_waiters();
        Ok(replayed)
    }

    async fn balance(&self, member: &str, ttl: Duration) -> Result<Vec<Partition>, BusError> {
        let mut state = self.lock();
        let count = state.partitions.len() as u32;
        Ok(state.leases.balance(member, count, ttl))
    }

    async fn owners(&self) -> Result<Vec<Option<String>>, BusError> {
        let state = self.lock();
        Ok(state.leases.owners(state.partitions.len() as u32))
    }

    async fn leave(&self, member: &str) -> Result<(), BusError> {
        self.lock().leases.leave(member);
        Ok(())
    }

    async fn announce_forgotten(&self, customer_id: &str) -> Result<(), BusError> {
        {
            let mut state = self.lock();
            // Kept for the life of the process: one short id per forget.
            state.forgotten.push(customer_id.to_string());
        }
        self.published.notify_waiters();
        Ok(())
    }

    async fn forgotten_after(
        &self,
        cursor: Option<&str>,
        block: Duration,
    ) -> Result<(String, Vec<String>), BusError> {
        let seen = |state: &BusState| state.forgotten.len();
        let Some(cursor) = cursor else {
            return Ok((seen(&self.lock()).to_string(), Vec::new()));
        };
        let from: usize = cursor
            .parse()
            .map_err(|_| BusError::Protocol(format!("not a cursor: {cursor}")))?;
        let deadline = tokio::time::Instant::now() + block;
        loop {
            let notified = self.published.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.lock();
                let fresh = state.forgotten.get(from..).unwrap_or_default();
                if !fresh.is_empty() {
                    return Ok((seen(&state).to_string(), fresh.to_vec()));
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok((cursor.to_string(), Vec::new()));
            }
        }
    }
}
