//! The Redis cart store, through the deadpool-redis pool.
//!
//! Keys (under `REDIS_KEY_PREFIX`, `p` below):
//! - `p:cart:id:{id}`: a hash per cart: `v` version, `exp` expiry (ms),
//!   `st` status, `cust` owner, `doc` the JSON cart; PEXPIRE at its expiry,
//!   refreshed by every change.
//! - `p:cart:owner:{customer}`: the id of the customer's active cart, same TTL.
//! - `p:cart:expiring`: sorted set of active cart ids scored by expiry (ms),
//!   which the sweep reads from the low end only.
//! - `p:cart:stats`: hash of counters (`created`, `converted`, `deleted`,
//!   `abandoned`, `converted:{CUR}`, `value:{CUR}` in minor units).
//!
//! Every write is one Lua script (EVALSHA, loaded on first use), so the
//! version check, the write, the TTLs, the indexes and the counters change
//! together or not at all. The scripts build cart keys from the prefix, which
//! is fine on one Redis but would need hash tags on Redis Cluster.
//!
//! Every call is bounded by `POOL_TIMEOUT_MS`; connection failures and
//! timeouts are [`CartStoreError::Unavailable`]. The pool drops broken
//! connections and reconnects by itself when Redis returns.

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_redis::{
    Pool,
    redis::{self, RedisError, Script},
};
use uuid::Uuid;

use super::{CartStats, CartStore, CartStoreError, record};
use crate::domain::{
    cart::{Cart, CartStatus},
    money::Currency,
};

/// Most expired carts one sweep script moves (bounds the script's run time).
const SWEEP_BATCH: usize = 500;

/// [`CartStore`] on Redis.
#[derive(Clone)]
pub struct RedisCartStore {
    pool: Pool,
    prefix: Arc<str>,
    timeout: Duration,
    scripts: Arc<Scripts>,
}

struct Scripts {
    create: Script,
    replace: Script,
    delete: Script,
    sweep: Script,
}

impl RedisCartStore {
    /// A store on `pool` under `prefix`; each call gives up after `timeout`.
    pub fn new(pool: Pool, prefix: &str, timeout: Duration) -> Self {
        Self {
            pool,
            prefix: prefix.into(),
            timeout,
            scripts: Arc::new(Scripts {
                create: Script::new(include_str!("lua/create.lua")),
                replace: Script::new(include_str!("lua/replace.lua")),
                delete: Script::new(include_str!("lua/delete.lua")),
                sweep: Script::new(include_str!("lua/sweep.lua")),
            }),
        }
    }

    fn cart_key_prefix(&self) -> String {
        format!("{}:cart:id:", self.prefix)
    }

    fn cart_key(&self, id: Uuid) -> String {
        format!("{}{id}", self.cart_key_prefix())
    }

    fn owner_key(&self, customer_id: &str) -> String {
        format!("{}:cart:owner:{customer_id}", self.prefix)
    }

    fn expiring_key(&self) -> String {
        format!("{}:cart:expiring", self.prefix)
    }

    fn stats_key(&self) -> String {
        format!("{}:cart:stats", self.prefix)
    }

    /// Runs `op` with a pooled connection, bounded by the timeout.
    async fn with_conn<T, F, Fut>(&self, op: F) -> Result<T, CartStoreError>
    where
        F: FnOnce(deadpool_redis::Connection) -> Fut,
        Fut: Future<Output = Result<T, CartStoreError>>,
    {
        let work = async {
            let conn = self
                .pool
                .get()
                .await
                .map_err(|e| CartStoreError::Unavailable(format!("Redis connection: {e}")))?;
            op(conn).await
        };
        tokio::time::timeout(self.timeout, work).await.map_err(|_| {
            CartStoreError::Unavailable(format!("Redis did not answer within {:?}", self.timeout))
        })?
    }

    /// The cart in hash `key`, if live at `now`.
    async fn load(
        &self,
        conn: &mut deadpool_redis::Connection,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Cart>, CartStoreError> {
        let (exp, doc): (Option<i64>, Option<String>) = redis::cmd("HMGET")
            .arg(key)
            .arg("exp")
            .arg("doc")
            .query_async(conn)
            .await
            .map_err(redis_error)?;
        match (exp, doc) {
            (Some(exp), Some(doc)) if exp > now.timestamp_millis() => Ok(Some(record::decode(&doc)?)),
            _ => Ok(None),
        }
    }
}

/// Connection trouble is UNAVAILABLE; anything else is a bug or bad data.
fn redis_error(err: RedisError) -> CartStoreError {
    use redis::{ErrorKind, ServerErrorKind};
    let transient = err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_unrecoverable_error()
        || matches!(
            err.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
            )
        );
    if transient {
        CartStoreError::Unavailable(format!("Redis: {err}"))
    } else {
        CartStoreError::Internal(anyhow::Error::new(err).context("Redis cart store"))
    }
}

/// Maps a script's `{'ok' | 'gone' | 'conflict', version}` answer.
fn outcome((word, version): (String, i64)) -> Result<(), CartStoreError> {
    match word.as_str() {
        "ok" => Ok(()),
        "gone" => Err(CartStoreError::NotFound),
        "conflict" => Err(CartStoreError::Conflict {
            actual: u64::try_from(version).unwrap_or_default(),
        }),
        other => Err(anyhow::anyhow!("unexpected cart script answer {other:?}").into()),
    }
}

fn millis_until(deadline: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    // A cart always expires after `now` (TTL >= 1 ms): PEXPIRE needs a positive TTL.
    deadline.timestamp_millis().max(now.timestamp_millis() + 1)
}

#[async_trait]
impl CartStore for RedisCartStore {
    async fn create_or_get(&self, new: &Cart, now: DateTime<Utc>) -> Result<(Cart, bool), CartStoreError> {
        let doc = record::encode(new)?;
        self.with_conn(|mut conn| async move {
            let (created, doc): (i64, String) = self
                .scripts
                .create
                .key(self.owner_key(&new.customer_id))
                .key(self.expiring_key())
                .key(self.stats_key())
                .arg(now.timestamp_millis())
                .arg(self.cart_key_prefix())
                .arg(new.id.to_string())
                .arg(&doc)
                .arg(millis_until(new.expires_at, now))
                .arg(&new.customer_id)
                .arg(new.version)
                .invoke_async(&mut conn)
                .await
                .map_err(redis_error)?;
            Ok((record::decode(&doc)?, created == 1))
        })
        .await
    }

    async fn get(&self, id: Uuid, now: DateTime<Utc>) -> Result<Option<Cart>, CartStoreError> {
        self.with_conn(|mut conn| async move { self.load(&mut conn, &self.cart_key(id), now).await })
            .await
    }

    async fn active_for(
        &self,
        customer_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Cart>, CartStoreError> {
        self.with_conn(|mut conn| async move {
            let id: Option<String> = redis::cmd("GET")
                .arg(self.owner_key(customer_id))
                .query_async(&mut conn)
                .await
                .map_err(redis_error)?;
            let Some(id) = id else { return Ok(None) };
            let key = format!("{}{id}", self.cart_key_prefix());
            let cart = self.load(&mut conn, &key, now).await?;
            Ok(cart.filter(|c| c.status == CartStatus::Active && c.customer_id == customer_id))
        })
        .await
    }

    async fn replace(
        &self,
        cart: &Cart,
        expected_version: u64,
        now: DateTime<Utc>,
    ) -> Result<(), CartStoreError> {
        let doc = record::encode(cart)?;
        let minor = match cart.status {
            CartStatus::Converted => cart
                .subtotal()
                .and_then(|s| s.to_minor_units())
                .context("converted cart value")?,
            CartStatus::Active => 0,
        };
        self.with_conn(|mut conn| async move {
            let answer = self
                .scripts
                .replace
                .key(self.cart_key(cart.id))
                .key(self.owner_key(&cart.customer_id))
                .key(self.expiring_key())
                .key(self.stats_key())
                .arg(now.timestamp_millis())
                .arg(expected_version)
                .arg(cart.version)
                .arg(millis_until(cart.expires_at, now))
                .arg(&doc)
                .arg(cart.id.to_string())
                .arg(record::status_word(cart.status))
                .arg(cart.currency.code())
                .arg(minor)
                .invoke_async(&mut conn)
                .await
                .map_err(redis_error)?;
            outcome(answer)
        })
        .await
    }

    async fn delete(
        &self,
        id: Uuid,
        expected_version: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<(), CartStoreError> {
        self.with_conn(|mut conn| async move {
            // The owner is needed for the index key: read it first. The script
            // re-checks everything, so a change in between is still caught.
            let owner: Option<String> = redis::cmd("HGET")
                .arg(self.cart_key(id))
                .arg("cust")
                .query_async(&mut conn)
                .await
                .map_err(redis_error)?;
            let Some(owner) = owner else {
                return Err(CartStoreError::NotFound);
            };
            let answer = self
                .scripts
                .delete
                .key(self.cart_key(id))
                .key(self.owner_key(&owner))
                .key(self.expiring_key())
                .key(self.stats_key())
                .arg(now.timestamp_millis())
                .arg(expected_version.map(|v| v.to_string()).unwrap_or_default())
                .arg(id.to_string())
                .invoke_async(&mut conn)
                .await
                .map_err(redis_error)?;
            outcome(answer)
        })
        .await
    }

    async fn sweep(&self, now: DateTime<Utc>) -> Result<u64, CartStoreError> {
        let mut total = 0;
        loop {
            let moved: u64 = self
                .with_conn(|mut conn| async move {
                    self.scripts
                        .sweep
                        .key(self.expiring_key())
                        .key(self.stats_key())
                        .arg(now.timestamp_millis())
                        .arg(SWEEP_BATCH)
                        .invoke_async(&mut conn)
                        .await
                        .map_err(redis_error)
                })
                .await?;
            total += moved;
            if moved < SWEEP_BATCH as u64 {
                return Ok(total);
            }
        }
    }

    async fn stats(&self, now: DateTime<Utc>) -> Result<CartStats, CartStoreError> {
        self.sweep(now).await?;
        self.with_conn(|mut conn| async move {
            let (fields, active): (Vec<(String, i64)>, u64) = redis::pipe()
                .atomic()
                .cmd("HGETALL")
                .arg(self.stats_key())
                .cmd("ZCARD")
                .arg(self.expiring_key())
                .query_async(&mut conn)
                .await
                .map_err(redis_error)?;
            let mut stats = CartStats {
                active,
                ..CartStats::default()
            };
            let count = |n: i64| u64::try_from(n).unwrap_or_default();
            for (field, value) in fields {
                match field.split_once(':') {
                    None => match field.as_str() {
                        "created" => stats.created = count(value),
                        "converted" => stats.converted = count(value),
                        "deleted" => stats.deleted = count(value),
                        "abandoned" => stats.abandoned = count(value),
                        _ => {}
                    },
                    Some((kind, code)) => {
                        let Ok(currency) = code.parse::<Currency>() else {
                            continue;
                        };
                        let entry = stats.converted_value.entry(currency).or_default();
                        match kind {
                            "converted" => entry.carts = count(value),
                            "value" => entry.minor_units = value,
                            _ => {}
                        }
                    }
                }
            }
            Ok(stats)
        })
        .await
    }
}
