//! The dead-letter stream: entries a projection gave up on, listed, purged
//! and replayed to their partition (see the parent module for the keys and
//! for when these are one MULTI).

use chrono::{DateTime, Utc};
use deadpool_redis::redis::{self, Value};

use super::{
    DEAD_LETTER_MAX_LEN, RedisStreamsBus,
    reply::{Entry, dead_letter_from, parse_entries},
};
use crate::{
    bus::{BusError, DeadLetter, Delivery, EventBus, Partition, PartitionGroup, partition_of},
    store::Purge,
};

impl RedisStreamsBus {
    /// [`EventBus::dead_letter`].
    pub(super) async fn copy_to_dead_letters(
        &self,
        group: &str,
        delivery: &Delivery,
        error: &str,
    ) -> Result<(), BusError> {
        let stream = self.stream(delivery.partition)?;
        let mut conn = self.pool.get().await?;
        let mut pipe = redis::pipe();
        // MULTI where one slot holds both: dead-lettered and acked, or neither.
        // Elsewhere the XADD first: a crash before the XACK dead-letters the
        // entry again at its next failure, but never drops it.
        if self.beside_dead_letters(delivery.partition) {
            pipe.atomic();
        }
        pipe.cmd("XADD")
            .arg(&self.dead_letters)
            .arg("MAXLEN")
            .arg("~")
            .arg(DEAD_LETTER_MAX_LEN)
            .arg("*")
            .arg("group")
            .arg(group)
            .arg("event")
            .arg(&delivery.raw)
            .arg("deliveries")
            .arg(delivery.deliveries)
            .arg("error")
            .arg(error)
            .arg("at")
            .arg(Utc::now().to_rfc3339())
            .ignore();
        if self.beside_dead_letters(delivery.partition) {
            pipe.cmd("XACK").arg(stream).arg(group).arg(&delivery.id).ignore();
            let () = pipe.query_async(&mut conn).await?;
        } else {
            let () = pipe.query_async(&mut conn).await?;
            drop(conn);
            self.ack(
                PartitionGroup::new(group, delivery.partition),
                std::slice::from_ref(&delivery.id),
            )
            .await?;
        }
        Ok(())
    }

    /// [`EventBus::dead_letters`].
    pub(super) async fn list_dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, BusError> {
        let mut conn = self.pool.get().await?;
        let reply: Value = redis::cmd("XRANGE")
            .arg(&self.dead_letters)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(limit.max(1))
            .query_async(&mut conn)
            .await?;
        Ok(parse_entries(reply)?
            .into_iter()
            .filter_map(|(id, fields)| fields.map(|f| dead_letter_from(id, f)))
            .collect())
    }

    /// [`EventBus::purge_dead_letters`].
    pub(super) async fn purge_dead_letters_before(
        &self,
        before: DateTime<Utc>,
        purge: Purge,
    ) -> Result<u64, BusError> {
        // A dead letter's stream id is the millisecond XADD wrote it at.
        let cutoff = before.timestamp_millis().max(0);
        let mut conn = self.pool.get().await?;
        Ok(match purge {
            Purge::Count => {
                if cutoff == 0 {
                    return Ok(0);
                }
                let reply: Value = redis::cmd("XRANGE")
                    .arg(&self.dead_letters)
                    .arg("-")
                    .arg(format!("{}-{}", cutoff - 1, u64::MAX))
                    .query_async(&mut conn)
                    .await?;
                parse_entries(reply)?.len() as u64
            }
            Purge::Delete(_) => {
                redis::cmd("XTRIM")
                    .arg(&self.dead_letters)
                    .arg("MINID")
                    .arg(cutoff)
                    .query_async(&mut conn)
                    .await?
            }
        })
    }

    /// [`EventBus::replay_dead_letters`].
    pub(super) async fn replay(&self, ids: &[String]) -> Result<u64, BusError> {
        let mut conn = self.pool.get().await?;
        let chosen: Vec<Entry> = if ids.is_empty() {
            parse_entries(
                redis::cmd("XRANGE")
                    .arg(&self.dead_letters)
                    .arg("-")
                    .arg("+")
                    .query_async(&mut conn)
                    .await?,
            )?
        } else {
            let mut pipe = redis::pipe();
            for id in ids {
                pipe.cmd("XRANGE").arg(&self.dead_letters).arg(id).arg(id);
            }
            let replies: Vec<Value> = pipe.query_async(&mut conn).await?;
            let mut entries = Vec::new();
            for reply in replies {
                entries.extend(parse_entries(reply)?);
            }
            entries
        };
        let mut replayed = 0;
        for (id, fields) in chosen {
            let Some(fields) = fields else { continue };
            let letter = dead_letter_from(id.clone(), fields);
            // Back to the partition of its stream (partition 0 for an entry
            // that does not decode: it only has to reach a group again).
            let (partition, event_type) = match letter.event() {
                Ok(event) => (partition_of(event.stream_id, self.partitions()), event.event_type),
                Err(_) => (Partition(0), String::new()),
            };
            let stream = self.stream(partition)?;
            let mut pipe = redis::pipe();
            // As in dead_letter: one MULTI where one slot holds both, else
            // the XADD first (a crash between replays it twice, never drops it).
            if self.beside_dead_letters(partition) {
                pipe.atomic();
            }
            self.xadd(&mut pipe, stream, &letter.raw, &event_type);
            if self.beside_dead_letters(partition) {
                pipe.cmd("XDEL").arg(&self.dead_letters).arg(&id).ignore();
                let () = pipe.query_async(&mut conn).await?;
            } else {
                let () = pipe.query_async(&mut conn).await?;
                let _: u64 = redis::cmd("XDEL")
                    .arg(&self.dead_letters)
                    .arg(&id)
                    .query_async(&mut conn)
                    .await?;
            }
            replayed += 1;
        }
        Ok(replayed)
    }
}
