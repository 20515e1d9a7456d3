//! The relay's cursor: the `relay_cursor` table of migration 0012 (one row),
//! the only module that writes it.
//!
//! The cursor is the global position of the last event of the settled log
//! ([`crate::store::event_store::EventStore::read_all`]) that the relay
//! ([`crate::relay`]) handed to the bus. It moves only forward from a value
//! the mover read ([`RelayCursor::advance`] is a compare-and-set by the
//! holder of the turn), so relays of several replicas never move it back or
//! past an event none of them published.
//!
//! The row also holds the turn: a lease (owner and end) that one relay holds
//! at a time, taken when free or expired and renewed by its cursor moves, so
//! that replicas take turns instead of each publishing every event (the
//! outbox relay's advisory lock did that). A relay that dies leaves the turn
//! to the others after its lease; one that stops gives it up at once. The
//! lease ends are the replicas' clocks: a lease of seconds tolerates the skew
//! of synchronised clocks, and a relay taking over early only publishes some
//! events twice (consumers are idempotent).

/// The [`RelayCursor`] implementation of a backend's store `$name` (a struct
/// with a `pool` field): the statements are the same on both databases
/// (timestamps bound through [`DbTime`](crate::store::columns::DbTime)), so
/// it is written once, here. Expanded in a child module (`super::` is this one).
macro_rules! sql_relay_cursor {
    ($name:ident) => {
        #[async_trait::async_trait]
        impl super::RelayCursor for $name {
            async fn position(&self) -> Result<i64, super::RelayCursorError> {
                let (position, _, _): super::Row = sqlx::query_as(super::READ).fetch_one(&self.pool).await?;
                Ok(position)
            }

            async fn turn(
                &self,
                owner: &str,
                lease: std::time::Duration,
            ) -> Result<Option<i64>, super::RelayCursorError> {
                let (position, holder, until): super::Row =
                    sqlx::query_as(super::READ).fetch_one(&self.pool).await?;
                let now = chrono::Utc::now();
                match super::Turn::of(owner, holder.as_deref(), until.map(|u| u.0), now, lease) {
                    super::Turn::Held => Ok(Some(position)),
                    super::Turn::Other => Ok(None),
                    super::Turn::Take => Ok(sqlx::query_scalar(super::TAKE)
                        .bind(owner)
                        .bind(crate::store::columns::DbTime(now + lease))
                        .bind(crate::store::columns::DbTime(now))
                        .fetch_optional(&self.pool)
                        .await?),
                }
            }

            async fn advance(
                &self,
                owner: &str,
                from: i64,
                to: i64,
                lease: std::time::Duration,
            ) -> Result<bool, super::RelayCursorError> {
                let now = chrono::Utc::now();
                let moved = sqlx::query(super::ADVANCE)
                    .bind(from)
                    .bind(to)
                    .bind(crate::store::columns::DbTime(now))
                    .bind(owner)
                    .bind(crate::store::columns::DbTime(now + lease))
                    .execute(&self.pool)
                    .await?;
                Ok(moved.rows_affected() == 1)
            }

            async fn leave(&self, owner: &str) -> Result<(), super::RelayCursorError> {
                sqlx::query(super::LEAVE)
                    .bind(owner)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }
        }
    };
}

mod postgres;
mod sqlite;

use std::{fmt, time::Duration};

use async_trait::async_trait;

pub use self::{postgres::PostgresRelayCursor, sqlite::SqliteRelayCursor};

/// The cursor and its turn (the row exists from the migration on).
const READ: &str = "SELECT position, owner, lease_until FROM relay_cursor WHERE id = 1";

/// What [`READ`] returns: the position, the turn's holder and its lease's end.
type Row = (i64, Option<String>, Option<crate::store::columns::DbTime>);

/// Takes the turn if it is free, ours, or its holder's lease ran out: `$1`
/// the owner, `$2` the lease's end, `$3` now; returns the position.
const TAKE: &str = "UPDATE relay_cursor SET owner = $1, lease_until = $2 \
                    WHERE id = 1 AND (owner IS NULL OR owner = $1 OR lease_until < $3) RETURNING position";

/// Compare-and-set by the turn's holder, renewing its lease: `$1` the position
/// read, `$2` the new one, `$3` now, `$4` the owner, `$5` the lease's end.
const ADVANCE: &str = "UPDATE relay_cursor SET position = $2, updated_at = $3, lease_until = $5 \
                       WHERE id = 1 AND position = $1 AND owner = $4";

/// Gives the turn up: `$1` the owner.
const LEAVE: &str = "UPDATE relay_cursor SET owner = NULL, lease_until = NULL WHERE id = 1 AND owner = $1";

/// What a relay may do with the turn it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// Ours, with more than half of the lease left: relay, no write.
    Held,
    /// Another relay's, still leased: wait.
    Other,
    /// Free, ours but running out, or expired: take (or renew) it.
    Take,
}

/// Whether a relay keeps its turn without a write while `left` of its lease
/// is still running: with more than half of `lease` left.
pub fn keeps_turn(left: Duration, lease: Duration) -> bool {
    left > lease / 2
}

impl Turn {
    fn of(
        owner: &str,
        holder: Option<&str>,
        until: Option<chrono::DateTime<chrono::Utc>>,
        now: chrono::DateTime<chrono::Utc>,
        lease: std::time::Duration,
    ) -> Self {
        let left = until.map_or(chrono::TimeDelta::zero(), |until| until - now);
        match holder {
            Some(holder) if holder == owner && left.to_std().is_ok_and(|left| keeps_turn(left, lease)) => {
                Self::Held
            }
            Some(holder) if holder != owner && left > chrono::TimeDelta::zero() => Self::Other,
            _ => Self::Take,
        }
    }
}

store_error! {
    /// Why the cursor could not be read or moved.
    pub enum RelayCursorError("relay cursor", "relay cursor query") {}
}

/// The relay's durable cursor in one database, and the turn to relay: one
/// relay at a time publishes (the holder of a lease on the cursor row), so
/// that replicas do not each publish every event.
#[async_trait]
pub trait RelayCursor: Send + Sync + fmt::Debug {
    /// The position of the last event published (0: none yet).
    async fn position(&self) -> Result<i64, RelayCursorError>;

    /// The position to relay from when `owner` has the turn: it holds it (a
    /// write renews it only once less than half of `lease` is left), or takes
    /// it (free, or its holder's lease ran out). None while another relay
    /// holds it. Pass the position to `read_all` as is.
    async fn turn(&self, owner: &str, lease: Duration) -> Result<Option<i64>, RelayCursorError>;

    /// Moves the cursor from `from` to `to` if it is still there and `owner`
    /// still has the turn, renewing it for `lease`; false otherwise (nothing
    /// is written then).
    async fn advance(
        &self,
        owner: &str,
        from: i64,
        to: i64,
        lease: Duration,
    ) -> Result<bool, RelayCursorError>;

    /// Gives the turn up (a relay that stops), so another takes it at once.
    async fn leave(&self, owner: &str) -> Result<(), RelayCursorError>;
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, Utc};

    use super::*;

    const LEASE: Duration = Duration::from_secs(10);

    #[test]
    fn a_relay_keeps_its_turn_without_a_write_until_half_its_lease_is_gone() {
        let now = Utc::now();
        let at = |secs| Some(now + TimeDelta::seconds(secs));
        assert_eq!(Turn::of("a", Some("a"), at(9), now, LEASE), Turn::Held);
        assert_eq!(Turn::of("a", Some("a"), at(4), now, LEASE), Turn::Take);
        assert_eq!(Turn::of("a", Some("a"), at(-1), now, LEASE), Turn::Take);
    }

    #[test]
    fn another_relays_turn_is_waited_for_until_its_lease_runs_out() {
        let now = Utc::now();
        assert_eq!(
            Turn::of("a", Some("b"), Some(now + TimeDelta::seconds(1)), now, LEASE),
            Turn::Other
        );
        assert_eq!(
            Turn::of("a", Some("b"), Some(now - TimeDelta::seconds(1)), now, LEASE),
            Turn::Take
        );
        assert_eq!(Turn::of("a", None, None, now, LEASE), Turn::Take);
    }
}
