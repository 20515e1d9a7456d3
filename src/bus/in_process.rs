//! The embedded bus: an in-memory log with consumer groups, pending lists,
//! delivery counts, idle claims and a dead-letter list, mirroring the Redis
//! Streams semantics the projections rely on.
//!
//! It lives as long as the process. That is enough because it is never the
//! durable source: unpublished events stay in the outbox table until the relay
//! has handed them over, and the projections sweep the event store for any
//! event the bus lost (a restart, trimming).

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use super::{BusError, DeadLetter, Delivery, EventBus, EventEnvelope};
use crate::store::Purge;

/// The in-process [`EventBus`].
pub struct InProcessBus {
    state: Mutex<StreamLog>,
    /// Woken on every publish, for blocked [`EventBus::read_new`] calls.
    published: Notify,
}

/// The one stream, its consumer groups and its dead letters, as Redis would
/// hold them.
#[derive(Default)]
struct StreamLog {
    max_len: usize,
    next_id: u64,
    entries: BTreeMap<u64, String>,
    groups: HashMap<String, Group>,
    next_dead_id: u64,
    dead: BTreeMap<u64, DeadLetter>,
    /// Forget notices, in order; a cursor is an index into it.
    forgotten: Vec<String>,
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
    /// An empty bus keeping at most about `max_len` entries.
    pub fn new(max_len: usize) -> Self {
        Self {
            state: Mutex::new(StreamLog {
                max_len: max_len.max(1),
                next_id: 1,
                next_dead_id: 1,
                ..StreamLog::default()
            }),
            published: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StreamLog> {
        // A panic while holding the lock leaves consistent data (every
        // mutation below is a single step), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn take_new(&self, group: &str, consumer: &str, count: usize) -> Vec<Delivery> {
        let mut state = self.lock();
        let StreamLog { entries, groups, .. } = &mut *state;
        let group = groups.entry(group.to_string()).or_default();
        let fresh: Vec<(u64, String)> = entries
            .range(group.last_delivered + 1..)
            .take(count)
            .map(|(id, raw)| (*id, raw.clone()))
            .collect();
        let now = Instant::now();
        fresh
            .into_iter()
            .map(|(id, raw)| {
                group.last_delivered = id;
                group.pending.insert(
                    id,
                    Pending {
                        consumer: consumer.to_string(),
                        delivered_at: now,
                        deliveries: 1,
                    },
                );
                Delivery {
                    id: format_id(id),
                    deliveries: 1,
                    raw,
                }
            })
            .collect()
    }

    /// Re-delivers pending entries chosen by `pick`, moving them to `consumer`.
    fn redeliver(
        &self,
        group: &str,
        consumer: &str,
        count: usize,
        pick: impl Fn(&Pending) -> bool,
    ) -> Vec<Delivery> {
        let mut state = self.lock();
        let StreamLog { entries, groups, .. } = &mut *state;
        let Some(group) = groups.get_mut(group) else {
            return Vec::new();
        };
        let chosen: Vec<u64> = group
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
                group.pending.remove(&id);
                continue;
            };
            if let Some(p) = group.pending.get_mut(&id) {
                p.consumer = consumer.to_string();
                p.delivered_at = now;
                p.deliveries += 1;
                out.push(Delivery {
                    id: format_id(id),
                    deliveries: p.deliveries,
                    raw: raw.clone(),
                });
            }
        }
        out
    }
}

#[async_trait::async_trait]
impl EventBus for InProcessBus {
    fn kind(&self) -> &'static str {
        "in-process"
    }

    async fn publish(&self, events: &[EventEnvelope]) -> Result<(), BusError> {
        {
            let mut state = self.lock();
            for event in events {
                let id = state.next_id;
                state.next_id += 1;
                state.entries.insert(id, event.encode());
            }
            while state.entries.len() > state.max_len {
                state.entries.pop_first();
            }
        }
        self.published.notify_waiters();
        Ok(())
    }

    async fn create_group(&self, group: &str) -> Result<(), BusError> {
        let mut state = self.lock();
        if !state.groups.contains_key(group) {
            // Like `XGROUP CREATE .. 0`: start before the oldest entry kept.
            let start = state.entries.keys().next().map_or(state.next_id, |id| *id);
            state.groups.insert(
                group.to_string(),
                Group {
                    last_delivered: start.saturating_sub(1),
                    pending: BTreeMap::new(),
                },
            );
        }
        Ok(())
    }

    async fn read_pending(
        &self,
        group: &str,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<Delivery>, BusError> {
        Ok(self.redeliver(group, consumer, count, |p| p.consumer == consumer))
    }

    async fn read_new(
        &self,
        group: &str,
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
            let delivered = self.take_new(group, consumer, count);
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
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<Delivery>, BusError> {
        let now = Instant::now();
        Ok(self.redeliver(group, consumer, count, |p| {
            now.duration_since(p.delivered_at) >= min_idle
        }))
    }

    async fn ack(&self, group: &str, ids: &[String]) -> Result<(), BusError> {
        let mut state = self.lock();
        if let Some(group) = state.groups.get_mut(group) {
            for id in ids.iter().filter_map(|id| parse_id(id)) {
                group.pending.remove(&id);
            }
        }
        Ok(())
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
        self.ack(group, std::slice::from_ref(&delivery.id)).await
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
        let replayed: Vec<String> = {
            let mut state = self.lock();
            let chosen: Vec<u64> = if ids.is_empty() {
                state.dead.keys().copied().collect()
            } else {
                ids.iter().filter_map(|id| parse_id(id)).collect()
            };
            let mut raws = Vec::new();
            for id in chosen {
                if let Some(letter) = state.dead.remove(&id) {
                    raws.push(letter.raw);
                }
            }
            for raw in &raws {
                let id = state.next_id;
                state.next_id += 1;
                state.entries.insert(id, raw.clone());
            }
            raws
        };
        self.published.notify_waiters();
        Ok(replayed.len() as u64)
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
        let seen = |state: &StreamLog| state.forgotten.len();
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
