//! The production bus: Redis Streams through the shared deadpool-redis pool.
//!
//! Keys: one stream per partition, `<prefix>:events` for partition 0 (the
//! key of the single stream before partitions, so that one partition is
//! exactly the old layout) and `<prefix>:events:<k>` for the others, each
//! trimmed with `MAXLEN ~`; `<prefix>:events:dead-letters`;
//! `<prefix>:events:leases` and `<prefix>:events:members` (the partition
//! leases, see [`super::leases`]); and `<prefix>:forgotten` (forget notices,
//! read by every replica with plain XREAD). One consumer group per projection
//! on every partition.
//!
//! On a Redis Cluster each partition is its own hash tag, `<prefix>:{events}`
//! for partition 0 and `<prefix>:{events:<k>}` for the others, so the
//! partitions spread over the nodes. The dead letters and the leases keep the
//! tag `{events}`: the leases are one script over two keys, and
//! dead-lettering from (or replaying to) partition 0 stays one MULTI. For the
//! other partitions those are two commands in a safe order (XADD to the dead
//! letters before the XACK; XADD to the partition before the XDEL): a crash
//! between them leaves a dead letter twice, or replays it twice, never loses
//! it, and consumers are idempotent. Every other command names one key, which
//! the cluster client routes.
//!
//! Blocking reads use a short `BLOCK` (below the connection's 500 ms response
//! timeout of redis-rs 1.x) so that pooled connections can serve them; a read
//! still returns the moment an entry arrives.

use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, Utc};
use deadpool_redis::redis::{self, Script, Value};

use self::reply::{Entry, parse_entries, parse_read_reply};
use super::{
    Backlog, BusError, DeadLetter, Delivery, EventBus, EventEnvelope, Partition, PartitionGroup, partition_of,
};
use crate::redis_conn::RedisPool;
use crate::store::Purge;

mod dead_letters;
mod reply;

/// Longest `BLOCK` of one XREADGROUP call.
const MAX_BLOCK: Duration = Duration::from_millis(400);
/// Dead letters kept at most (approximately).
const DEAD_LETTER_MAX_LEN: usize = 10_000;
/// Forget notices kept at most (approximately): a reader only needs those
/// since its last read.
const FORGOTTEN_MAX_LEN: usize = 10_000;

/// The Redis Streams [`EventBus`].
pub struct RedisStreamsBus {
    pool: RedisPool,
    /// One stream key per partition.
    streams: Vec<String>,
    dead_letters: String,
    leases: String,
    members: String,
    forgotten: String,
    max_len: usize,
    balance: Script,
}

/// The stream key of `partition` under `prefix` (hash-tagged on a cluster).
pub fn stream_key(prefix: &str, cluster: bool, partition: Partition) -> String {
    match (cluster, partition.0) {
        (true, 0) => format!("{prefix}:{{events}}"),
        (true, k) => format!("{prefix}:{{events:{k}}}"),
        (false, 0) => format!("{prefix}:events"),
        (false, k) => format!("{prefix}:events:{k}"),
    }
}

impl RedisStreamsBus {
    /// A bus on `pool` with keys under `prefix`, `partitions` streams (at
    /// least one), each trimmed at about `max_len`.
    pub fn new(pool: RedisPool, prefix: &str, max_len: usize, partitions: u32) -> Self {
        let cluster = pool.is_cluster();
        let streams = (0..partitions.max(1))
            .map(|k| stream_key(prefix, cluster, Partition(k)))
            .collect::<Vec<_>>();
        let first = &streams[0];
        Self {
            dead_letters: format!("{first}:dead-letters"),
            leases: format!("{first}:leases"),
            members: format!("{first}:members"),
            streams,
            pool,
            forgotten: format!("{prefix}:forgotten"),
            max_len: max_len.max(1),
            balance: Script::new(include_str!("lua/balance.lua")),
        }
    }

    /// The stream of `partition`; one beyond the count (a caller configured
    /// with more partitions than this bus) is refused.
    fn stream(&self, partition: Partition) -> Result<&str, BusError> {
        self.streams
            .get(partition.0 as usize)
            .map(String::as_str)
            .ok_or_else(|| {
                BusError::Protocol(format!(
                    "partition {partition} of a bus with {} partitions",
                    self.streams.len()
                ))
            })
    }

    /// True when `partition` shares the dead letters' slot, so a MULTI over
    /// both is allowed: always on a single Redis, partition 0 on a cluster.
    fn beside_dead_letters(&self, partition: Partition) -> bool {
        !self.pool.is_cluster() || partition.0 == 0
    }

    /// XREADGROUP, re-creating the group once if Redis lost it (a restart
    /// without persistence drops streams and groups alike). Only on a stream
    /// that exists: while it is gone there is nothing to read, and the relay's
    /// next XADD makes it again (the group, created at `0`, then reads it
    /// from its start). A consumer outliving its deployment's keys (a test's
    /// cleanup, a flushed prefix) thus never brings an empty stream back.
    async fn read_group(
        &self,
        group: PartitionGroup<'_>,
        consumer: &str,
        count: usize,
        block: Option<Duration>,
        from: &str,
    ) -> Result<Vec<Entry>, BusError> {
        let stream = self.stream(group.partition)?;
        let mut conn = self.pool.get().await?;
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(group.group)
            .arg(consumer)
            .arg("COUNT")
            .arg(count.max(1));
        if let Some(block) = block {
            cmd.arg("BLOCK")
                .arg(block.min(MAX_BLOCK).as_millis().max(1) as u64);
        }
        cmd.arg("STREAMS").arg(stream).arg(from);
        let reply: Value = match cmd.query_async(&mut conn).await {
            Ok(reply) => reply,
            Err(e) if e.code() == Some("NOGROUP") => {
                drop(conn);
                self.create_group_on_existing_stream(group).await?;
                return Ok(Vec::new());
            }
            Err(e) => return Err(e.into()),
        };
        parse_read_reply(reply)
    }

    /// XGROUP CREATE at `0` without MKSTREAM: nothing when the stream does
    /// not exist (or the group does).
    async fn create_group_on_existing_stream(&self, group: PartitionGroup<'_>) -> Result<(), BusError> {
        let stream = self.stream(group.partition)?;
        let mut conn = self.pool.get().await?;
        let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(group.group)
            .arg("0")
            .query_async(&mut conn)
            .await;
        match created {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            // "ERR The XGROUP subcommand requires the key to exist."
            Err(e) if e.to_string().contains("requires the key to exist") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Delivery counts of `ids` from the pending list (XPENDING).
    async fn delivery_counts(
        &self,
        group: PartitionGroup<'_>,
        ids: &[String],
    ) -> Result<HashMap<String, u64>, BusError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let stream = self.stream(group.partition)?;
        let mut conn = self.pool.get().await?;
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("XPENDING")
                .arg(stream)
                .arg(group.group)
                .arg(id)
                .arg(id)
                .arg(1);
        }
        let replies: Vec<Vec<(String, String, u64, u64)>> = pipe.query_async(&mut conn).await?;
        Ok(replies
            .into_iter()
            .flatten()
            .map(|(id, _consumer, _idle, count)| (id, count))
            .collect())
    }

    /// Turns entries into deliveries; trimmed ones are acked and dropped.
    async fn deliveries(
        &self,
        group: PartitionGroup<'_>,
        entries: Vec<Entry>,
        counts: Option<HashMap<String, u64>>,
    ) -> Result<Vec<Delivery>, BusError> {
        let mut gone = Vec::new();
        let mut out = Vec::new();
        for (id, fields) in entries {
            match fields.and_then(|mut f| f.remove("event")) {
                Some(raw) => {
                    let deliveries = counts.as_ref().and_then(|c| c.get(&id).copied()).unwrap_or(1);
                    out.push(Delivery {
                        partition: group.partition,
                        id,
                        deliveries,
                        raw,
                    });
                }
                None => gone.push(id),
            }
        }
        if !gone.is_empty() {
            self.ack(group, &gone).await?;
        }
        Ok(out)
    }

    /// XADDs `raws` (encoded events with their types) to `partition`, in
    /// order, in one pipeline (one slot on a cluster).
    async fn append(&self, partition: Partition, raws: &[(String, &str)]) -> Result<(), BusError> {
        let stream = self.stream(partition)?;
        let mut conn = self.pool.get().await?;
        let mut pipe = redis::pipe();
        for (raw, event_type) in raws {
            self.xadd(&mut pipe, stream, raw, event_type);
        }
        let () = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    /// Adds the XADD of one event to `pipe`.
    fn xadd(&self, pipe: &mut redis::Pipeline, stream: &str, raw: &str, event_type: &str) {
        pipe.cmd("XADD")
            .arg(stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.max_len)
            .arg("*")
            .arg("event")
            .arg(raw)
            .arg("type")
            .arg(event_type)
            .ignore();
    }

    /// Runs the lease script (`lua/balance.lua`) as `member`.
    async fn leases<T: redis::FromRedisValue>(
        &self,
        member: &str,
        ttl: Duration,
        action: &str,
    ) -> Result<T, BusError> {
        let mut conn = self.pool.get().await?;
        Ok(self
            .balance
            .key(&self.leases)
            .key(&self.members)
            .arg(member)
            .arg(ttl.as_millis().max(1) as u64)
            .arg(self.streams.len())
            .arg(action)
            .invoke_async(&mut conn)
            .await?)
    }

    /// The group's entries read and pending on its partition (XINFO GROUPS):
    /// `lag` when Redis knows it, else counted after the last delivered id.
    async fn group_backlog(&self, group: PartitionGroup<'_>) -> Result<Backlog, BusError> {
        let stream = self.stream(group.partition)?;
        let mut conn = self.pool.get().await?;
        let groups: Result<Vec<HashMap<String, Value>>, _> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(stream)
            .query_async(&mut conn)
            .await;
        let groups = match groups {
            Ok(groups) => groups,
            // No stream: nothing was ever published to this partition.
            Err(e) if e.to_string().contains("no such key") => return Ok(Backlog::default()),
            Err(e) => return Err(e.into()),
        };
        let text = |info: &HashMap<String, Value>, field: &str| {
            info.get(field)
                .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
        };
        let Some(info) = groups
            .iter()
            .find(|info| text(info, "name").as_deref() == Some(group.group))
        else {
            // No group yet: it will start at the partition's oldest entry.
            let length: u64 = redis::cmd("XLEN").arg(stream).query_async(&mut conn).await?;
            return Ok(Backlog {
                unread: length,
                pending: 0,
            });
        };
        let pending = text(info, "pending").and_then(|p| p.parse().ok()).unwrap_or(0);
        let unread = match text(info, "lag").and_then(|lag| lag.parse().ok()) {
            Some(lag) => lag,
            None => {
                let last = text(info, "last-delivered-id").unwrap_or_else(|| "0-0".into());
                let after: Value = redis::cmd("XRANGE")
                    .arg(stream)
                    .arg(format!("({last}"))
                    .arg("+")
                    .arg("COUNT")
                    .arg(10_000)
                    .query_async(&mut conn)
                    .await?;
                parse_entries(after)?.len() as u64
            }
        };
        Ok(Backlog { unread, pending })
    }
}

#[async_trait::async_trait]
impl EventBus for RedisStreamsBus {
    fn kind(&self) -> &'static str {
        "redis-streams"
    }

    fn partitions(&self) -> u32 {
        self.streams.len() as u32
    }

    async fn publish(&self, events: &[EventEnvelope]) -> Result<(), BusError> {
        // One pipeline per partition (one connection, one slot): Redis
        // appends each partition's events in this order.
        let mut by_partition: std::collections::BTreeMap<Partition, Vec<(String, &str)>> =
            std::collections::BTreeMap::new();
        for event in events {
            by_partition
                .entry(partition_of(event.stream_id, self.partitions()))
                .or_default()
                .push((event.encode(), event.event_type.as_str()));
        }
        futures::future::try_join_all(
            by_partition
                .iter()
                .map(|(partition, raws)| self.append(*partition, raws)),
        )
        .await?;
        Ok(())
    }

    async fn create_group(&self, group: PartitionGroup<'_>) -> Result<(), BusError> {
        let stream = self.stream(group.partition)?;
        let mut conn = self.pool.get().await?;
        let created: Result<(), _> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(group.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn read_pending(
        &self,
        group: PartitionGroup<'_>,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<Delivery>, BusError> {
        let entries = self.read_group(group, consumer, count, None, "0").await?;
        let ids: Vec<String> = entries.iter().map(|(id, _)| id.clone()).collect();
        let counts = self.delivery_counts(group, &ids).await?;
        self.deliveries(group, entries, Some(counts)).await
    }

    async fn read_new(
        &self,
        group: PartitionGroup<'_>,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Delivery>, BusError> {
        let entries = self.read_group(group, consumer, count, Some(block), ">").await?;
        self.deliveries(group, entries, None).await
    }

    async fn claim_idle(
        &self,
        group: PartitionGroup<'_>,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<Delivery>, BusError> {
        let stream = self.stream(group.partition)?;
        let reply: Value = {
            let mut conn = self.pool.get().await?;
            let claimed = redis::cmd("XAUTOCLAIM")
                .arg(stream)
                .arg(group.group)
                .arg(consumer)
                .arg(min_idle.as_millis() as u64)
                .arg("0-0")
                .arg("COUNT")
                .arg(count.max(1))
                .query_async(&mut conn)
                .await;
            match claimed {
                Ok(reply) => reply,
                Err(e) if e.code() == Some("NOGROUP") => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            }
        };
        let Value::Array(mut parts) = reply else {
            return Err(BusError::Protocol("XAUTOCLAIM reply is not an array".into()));
        };
        if parts.len() < 2 {
            return Err(BusError::Protocol("XAUTOCLAIM reply too short".into()));
        }
        let entries = parse_entries(parts.swap_remove(1))?;
        let ids: Vec<String> = entries.iter().map(|(id, _)| id.clone()).collect();
        let counts = self.delivery_counts(group, &ids).await?;
        self.deliveries(group, entries, Some(counts)).await
    }

    async fn ack(&self, group: PartitionGroup<'_>, ids: &[String]) -> Result<(), BusError> {
        if ids.is_empty() {
            return Ok(());
        }
        let stream = self.stream(group.partition)?;
        let mut conn = self.pool.get().await?;
        let _: u64 = redis::cmd("XACK")
            .arg(stream)
            .arg(group.group)
            .arg(ids)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn backlog(&self, group: PartitionGroup<'_>) -> Result<Backlog, BusError> {
        self.group_backlog(group).await
    }

    async fn dead_letter(&self, group: &str, delivery: &Delivery, error: &str) -> Result<(), BusError> {
        self.copy_to_dead_letters(group, delivery, error).await
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, BusError> {
        self.list_dead_letters(limit).await
    }

    async fn purge_dead_letters(&self, before: DateTime<Utc>, purge: Purge) -> Result<u64, BusError> {
        self.purge_dead_letters_before(before, purge).await
    }

    async fn replay_dead_letters(&self, ids: &[String]) -> Result<u64, BusError> {
        self.replay(ids).await
    }

    async fn balance(&self, member: &str, ttl: Duration) -> Result<Vec<Partition>, BusError> {
        let held: Vec<u32> = self.leases(member, ttl, "balance").await?;
        Ok(held.into_iter().map(Partition).collect())
    }

    async fn owners(&self) -> Result<Vec<Option<String>>, BusError> {
        let owners: Vec<String> = self.leases("", Duration::from_millis(1), "owners").await?;
        Ok(owners
            .into_iter()
            .map(|owner| Some(owner).filter(|o| !o.is_empty()))
            .collect())
    }

    async fn leave(&self, member: &str) -> Result<(), BusError> {
        let _: Vec<u32> = self.leases(member, Duration::from_millis(1), "leave").await?;
        Ok(())
    }

    async fn announce_forgotten(&self, customer_id: &str) -> Result<(), BusError> {
        let mut conn = self.pool.get().await?;
        let _: Value = redis::cmd("XADD")
            .arg(&self.forgotten)
            .arg("MAXLEN")
            .arg("~")
            .arg(FORGOTTEN_MAX_LEN)
            .arg("*")
            .arg("customer_id")
            .arg(customer_id)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn forgotten_after(
        &self,
        cursor: Option<&str>,
        block: Duration,
    ) -> Result<(String, Vec<String>), BusError> {
        let mut conn = self.pool.get().await?;
        let Some(cursor) = cursor else {
            let newest: Value = redis::cmd("XREVRANGE")
                .arg(&self.forgotten)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut conn)
                .await?;
            let now = parse_entries(newest)?
                .into_iter()
                .next()
                .map_or_else(|| "0-0".to_string(), |(id, _)| id);
            return Ok((now, Vec::new()));
        };
        let reply: Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1000)
            .arg("BLOCK")
            .arg(block.min(MAX_BLOCK).as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(&self.forgotten)
            .arg(cursor)
            .query_async(&mut conn)
            .await?;
        let entries = parse_read_reply(reply)?;
        let next = entries
            .last()
            .map_or_else(|| cursor.to_string(), |(id, _)| id.clone());
        let customers = entries
            .into_iter()
            .filter_map(|(_, fields)| fields.and_then(|mut f| f.remove("customer_id")))
            .collect();
        Ok((next, customers))
    }
}
