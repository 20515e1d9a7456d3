//! The Redis cart store, through the deadpool-redis pool.
//!
//! Keys (under `REDIS_KEY_PREFIX`, `p` below; `b` is `p:cart` on one Redis):
//! - `b:id:<id>`: a hash per cart: `v` version, `exp` expiry (ms),
//!   `st` status, `cust` owner, `doc` the JSON cart; PEXPIRE at its expiry,
//!   refreshed by every change.
//! - `b:owner:<customer>`: the id of the customer's active cart, same TTL.
//! - `b:expiring`: sorted set of active cart ids scored by expiry (ms),
//!   which the sweep reads from the low end only.
//! - `b:stats`: hash of counters (`created`, `converted`, `deleted`,
//!   `abandoned`, `converted:<CUR>`, `value:<CUR>` in minor units).
//!
//! Every write is one Lua script (EVALSHA, loaded on first use), so the
//! version check, the write, the TTLs, the indexes and the counters change
//! together or not at all.
//!
//! # Redis Cluster: one slot per shard, by design
//! A script's keys must share a slot. On a cluster (`REDIS_CLUSTER`) carts
//! are spread over [`SHARDS`] shards by owner ([`shard_of`]), and `b` is
//! `p:cart:{sNN}` with the shard in hex as the hash tag: a customer's carts,
//! their owner index, and the shard's own expiring set and counters sit in
//! one slot, so every script (the ones that name a cart found through the
//! owner index included) stays in it. A cart id carries its shard
//! ([`shard_of_cart`]), so a read by id needs no lookup. The global counters
//! and the expiry index are thereby sharded too: analytics sum the shards,
//! the sweep runs per shard, both concurrently on one multiplexed connection
//! (a few round trips, not [`SHARDS`]). On one Redis the layout is the
//! original unsharded one, so an existing deployment keeps its carts.
//!
//! # One round trip per call
//! - Calls share one multiplexed connection taken from the pool once, instead
//!   of a pool checkout per call: deadpool pings a connection (UNWATCH + PING,
//!   a round trip) every time it hands it out again. A call that finds the
//!   connection broken or too slow answers UNAVAILABLE and drops it; the next
//!   call takes a fresh one from the pool (so one call per outage can fail
//!   that a ping would have spared).
//! - The carts this process last created, read or wrote are kept (the most
//!   recent [`SEEN_CARTS`]) as the basis of the next change
//!   ([`CartStore::get_for_update`]): a mutation of such a cart is the
//!   compare-and-set script alone. A stale basis costs one more round trip
//!   (the refusal carries the stored cart), never a wrong write.
//!
//! Every call is bounded by `POOL_TIMEOUT_MS`; connection failures and
//! timeouts are [`CartStoreError::Unavailable`]. The pool drops broken
//! connections and reconnects by itself when Redis returns.

use std::{
    future::Future,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_redis::redis::{self, RedisError, Script};
use futures::future::try_join_all;
use hashlink::LruCache;
use uuid::Uuid;

use super::{CartStats, CartStore, CartStoreError, record};
use crate::{
    domain::{
        cart::{Cart, CartStatus, SHARDS, shard_of, shard_of_cart},
        money::Currency,
    },
    redis_conn::{RedisConn, RedisPool, SharedConn},
};

/// Most expired carts one sweep script moves (bounds the script's run time).
const SWEEP_BATCH: usize = 500;

/// Most carts remembered as the basis of the next change (a few MB at most:
/// a cart holds at most 100 lines). Beyond it the least recently used is
/// forgotten, and its next change reads it first.
pub const SEEN_CARTS: usize = 10_000;

/// The [`CartStore`] on Redis: carts live only there (keys in the module
/// doc), and each write is one Lua script that checks the version atomically.
#[derive(Clone)]
pub struct RedisCartStore {
    pool: RedisPool,
    keys: Keys,
    timeout: Duration,
    scripts: Arc<Scripts>,
    shared: Arc<Shared>,
}

struct Scripts {
    create: Script,
    replace: Script,
    delete: Script,
    sweep: Script,
}

/// What the clones of one store share.
struct Shared {
    /// The pooled connection every call multiplexes on, once taken.
    conn: Mutex<Option<RedisConn>>,
    /// Carts as this process last saw them in Redis, by id.
    seen: Mutex<LruCache<Uuid, Cart>>,
}

/// Locks a mutex whose data stays valid even if a holder panicked (a
/// connection slot, a cache of carts that the compare-and-set re-checks).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RedisCartStore {
    /// A store on `pool` under `prefix`; each call gives up after `timeout`.
    pub fn new(pool: RedisPool, prefix: &str, timeout: Duration) -> Self {
        Self {
            keys: Keys {
                prefix: prefix.into(),
                cluster: pool.is_cluster(),
            },
            pool,
            timeout,
            scripts: Arc::new(Scripts {
                create: Script::new(include_str!("lua/create.lua")),
                replace: Script::new(include_str!("lua/replace.lua")),
                delete: Script::new(include_str!("lua/delete.lua")),
                sweep: Script::new(include_str!("lua/sweep.lua")),
            }),
            shared: Arc::new(Shared {
                conn: Mutex::new(None),
                seen: Mutex::new(LruCache::new(SEEN_CARTS)),
            }),
        }
    }

    /// Runs `op` on the shared connection, bounded by the timeout. An
    /// UNAVAILABLE outcome drops the connection: it may be dead or stalled.
    async fn with_conn<T, F, Fut>(&self, op: F) -> Result<T, CartStoreError>
    where
        F: FnOnce(SharedConn) -> Fut,
        Fut: Future<Output = Result<T, CartStoreError>>,
    {
        let work = async { op(self.connection().await?).await };
        let result = match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(CartStoreError::Unavailable(format!(
                "Redis did not answer within {:?}",
                self.timeout
            ))),
        };
        if matches!(result, Err(CartStoreError::Unavailable(_))) {
            lock(&self.shared.conn).take();
        }
        result
    }

    /// The shared connection, taken from the pool when there is none.
    async fn connection(&self) -> Result<SharedConn, CartStoreError> {
        if let Some(conn) = lock(&self.shared.conn).as_ref() {
            return Ok(conn.shared());
        }
        let pooled = self
            .pool
            .get()
            .await
            .map_err(|e| CartStoreError::Unavailable(format!("Redis connection: {e}")))?;
        let conn = pooled.shared();
        // Two calls racing here both succeed; the slot keeps the later one and
        // the other goes back to the pool.
        *lock(&self.shared.conn) = Some(pooled);
        Ok(conn)
    }

    /// The cart in hash `key`, if live at `now`; remembered as seen.
    async fn load(
        &self,
        conn: &mut SharedConn,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Cart>, CartStoreError> {
        let (exp, doc): (Option<i64>, Option<Vec<u8>>) = redis::cmd("HMGET")
            .arg(key)
            .arg("exp")
            .arg("doc")
            .query_async(conn)
            .await
            .map_err(redis_error)?;
        match (exp, doc) {
            (Some(exp), Some(doc)) if exp > now.timestamp_millis() => {
                let cart = record::decode(&doc)?;
                self.remember(&cart);
                Ok(Some(cart))
            }
            _ => Ok(None),
        }
    }

    /// Keeps `cart` as the basis of its next change, unless a later version
    /// of it is known already (answers can arrive out of order).
    fn remember(&self, cart: &Cart) {
        let mut seen = lock(&self.shared.seen);
        if seen
            .peek(&cart.id)
            .is_none_or(|known| known.version <= cart.version)
        {
            seen.insert(cart.id, cart.clone());
        }
    }

    fn forget(&self, id: Uuid) {
        lock(&self.shared.seen).remove(&id);
    }

    /// The remembered cart `id`, unless its known expiry has passed (then
    /// Redis decides: another replica may have refreshed it).
    fn recall(&self, id: Uuid, now: DateTime<Utc>) -> Option<Cart> {
        lock(&self.shared.seen)
            .get(&id)
            .filter(|c| !c.is_expired(now))
            .cloned()
    }

    /// Maps a script's `{'ok' | 'gone' | 'conflict', version, doc}` answer for
    /// cart `id`, keeping the remembered carts in step with what Redis said.
    fn outcome(
        &self,
        id: Uuid,
        (word, version, doc): (String, i64, Option<Vec<u8>>),
    ) -> Result<(), CartStoreError> {
        match word.as_str() {
            "ok" => Ok(()),
            "gone" => {
                self.forget(id);
                Err(CartStoreError::NotFound)
            }
            "conflict" => {
                let current = doc.map(|doc| record::decode(&doc)).transpose()?;
                match &current {
                    Some(cart) => self.remember(cart),
                    None => self.forget(id),
                }
                Err(CartStoreError::Conflict {
                    actual: u64::try_from(version).unwrap_or_default(),
                    current: current.map(Box::new),
                })
            }
            other => Err(anyhow::anyhow!("unexpected cart script answer {other:?}").into()),
        }
    }
}

/// Where the keys are: the layout of the module's doc.
#[derive(Clone)]
struct Keys {
    prefix: Arc<str>,
    cluster: bool,
}

impl Keys {
    /// The shards there are: [`SHARDS`] on a cluster, one on one Redis.
    fn shards(&self) -> impl Iterator<Item = u8> + use<> {
        let last = if self.cluster { SHARDS - 1 } else { 0 };
        (0..=last).map(|s| s as u8)
    }

    /// `b` of the layout for `shard`.
    fn base(&self, shard: u8) -> String {
        if self.cluster {
            format!("{}:cart:{{s{shard:02x}}}", self.prefix)
        } else {
            format!("{}:cart", self.prefix)
        }
    }

    fn cart_prefix(&self, shard: u8) -> String {
        format!("{}:id:", self.base(shard))
    }

    fn cart(&self, id: Uuid) -> String {
        format!("{}{id}", self.cart_prefix(shard_of_cart(id)))
    }

    fn owner_prefix(&self, shard: u8) -> String {
        format!("{}:owner:", self.base(shard))
    }

    fn owner(&self, customer_id: &str) -> String {
        format!("{}{customer_id}", self.owner_prefix(shard_of(customer_id)))
    }

    fn expiring(&self, shard: u8) -> String {
        format!("{}:expiring", self.base(shard))
    }

    fn stats(&self, shard: u8) -> String {
        format!("{}:stats", self.base(shard))
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

fn millis_until(deadline: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    // A cart always expires after `now` (TTL >= 1 ms): PEXPIRE needs a positive TTL.
    deadline.timestamp_millis().max(now.timestamp_millis() + 1)
}

#[async_trait]
impl CartStore for RedisCartStore {
    async fn create_or_get(&self, new: &Cart, now: DateTime<Utc>) -> Result<(Cart, bool), CartStoreError> {
        let doc = record::encode(new)?;
        let shard = shard_of(&new.customer_id);
        self.with_conn(|mut conn| async move {
            let (created, doc): (i64, Vec<u8>) = self
                .scripts
                .create
                .key(self.keys.owner(&new.customer_id))
                .key(self.keys.expiring(shard))
                .key(self.keys.stats(shard))
                .arg(now.timestamp_millis())
                .arg(self.keys.cart_prefix(shard))
                .arg(new.id.to_string())
                .arg(&doc)
                .arg(millis_until(new.expires_at, now))
                .arg(&new.customer_id)
                .arg(new.version)
                .invoke_async(&mut conn)
                .await
                .map_err(redis_error)?;
            let cart = record::decode(&doc)?;
            self.remember(&cart);
            Ok((cart, created == 1))
        })
        .await
    }

    async fn get(&self, id: Uuid, now: DateTime<Utc>) -> Result<Option<Cart>, CartStoreError> {
        let cart = self
            .with_conn(|mut conn| async move { self.load(&mut conn, &self.keys.cart(id), now).await })
            .await?;
        if cart.is_none() {
            self.forget(id);
        }
        Ok(cart)
    }

    async fn get_for_update(&self, id: Uuid, now: DateTime<Utc>) -> Result<Option<Cart>, CartStoreError> {
        match self.recall(id, now) {
            Some(cart) => Ok(Some(cart)),
            None => self.get(id, now).await,
        }
    }

    async fn active_for(
        &self,
        customer_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Cart>, CartStoreError> {
        self.with_conn(|mut conn| async move {
            let id: Option<String> = redis::cmd("GET")
                .arg(self.keys.owner(customer_id))
                .query_async(&mut conn)
                .await
                .map_err(redis_error)?;
            let Some(id) = id else { return Ok(None) };
            let key = format!("{}{id}", self.keys.cart_prefix(shard_of(customer_id)));
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
        let answer = self
            .with_conn(|mut conn| async move {
                self.scripts
                    .replace
                    .key(self.keys.cart(cart.id))
                    .key(self.keys.owner(&cart.customer_id))
                    .key(self.keys.expiring(shard_of_cart(cart.id)))
                    .key(self.keys.stats(shard_of_cart(cart.id)))
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
                    .map_err(redis_error)
            })
            .await?;
        self.outcome(cart.id, answer)?;
        self.remember(cart);
        Ok(())
    }

    async fn delete(
        &self,
        id: Uuid,
        owner: &str,
        expected_version: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<(), CartStoreError> {
        let answer = self
            .with_conn(|mut conn| async move {
                self.scripts
                    .delete
                    .key(self.keys.cart(id))
                    .key(self.keys.expiring(shard_of_cart(id)))
                    .key(self.keys.stats(shard_of_cart(id)))
                    .arg(now.timestamp_millis())
                    .arg(expected_version.map(|v| v.to_string()).unwrap_or_default())
                    .arg(id.to_string())
                    .arg(owner)
                    .arg(self.keys.owner_prefix(shard_of_cart(id)))
                    .invoke_async(&mut conn)
                    .await
                    .map_err(redis_error)
            })
            .await?;
        self.outcome(id, answer)?;
        self.forget(id);
        Ok(())
    }

    async fn sweep(&self, now: DateTime<Utc>) -> Result<u64, CartStoreError> {
        self.with_conn(|conn| async move {
            let sweeps = self
                .keys
                .shards()
                .map(|shard| self.sweep_shard(conn.clone(), shard, now));
            Ok(try_join_all(sweeps).await?.into_iter().sum())
        })
        .await
    }

    async fn stats(&self, now: DateTime<Utc>) -> Result<CartStats, CartStoreError> {
        self.sweep(now).await?;
        let shards = self
            .with_conn(|conn| async move {
                try_join_all(
                    self.keys
                        .shards()
                        .map(|shard| self.shard_stats(conn.clone(), shard)),
                )
                .await
            })
            .await?;
        let mut stats = CartStats::default();
        let count = |n: i64| u64::try_from(n).unwrap_or_default();
        for (fields, active) in shards {
            stats.active += active;
            for (field, value) in fields {
                match field.split_once(':') {
                    None => match field.as_str() {
                        "created" => stats.created += count(value),
                        "converted" => stats.converted += count(value),
                        "deleted" => stats.deleted += count(value),
                        "abandoned" => stats.abandoned += count(value),
                        _ => {}
                    },
                    Some((kind, code)) => {
                        let Ok(currency) = code.parse::<Currency>() else {
                            continue;
                        };
                        let entry = stats.converted_value.entry(currency).or_default();
                        match kind {
                            "converted" => entry.carts += count(value),
                            "value" => entry.minor_units += value,
                            _ => {}
                        }
                    }
                }
            }
        }
        Ok(stats)
    }
}

impl RedisCartStore {
    /// Sweeps one shard in batches of [`SWEEP_BATCH`]; returns how many moved.
    async fn sweep_shard(
        &self,
        mut conn: SharedConn,
        shard: u8,
        now: DateTime<Utc>,
    ) -> Result<u64, CartStoreError> {
        let mut total = 0;
        loop {
            let moved: u64 = self
                .scripts
                .sweep
                .key(self.keys.expiring(shard))
                .key(self.keys.stats(shard))
                .arg(now.timestamp_millis())
                .arg(SWEEP_BATCH)
                .invoke_async(&mut conn)
                .await
                .map_err(redis_error)?;
            total += moved;
            if moved < SWEEP_BATCH as u64 {
                return Ok(total);
            }
        }
    }

    /// One shard's counters and active count, read together (MULTI).
    async fn shard_stats(
        &self,
        mut conn: SharedConn,
        shard: u8,
    ) -> Result<(Vec<(String, i64)>, u64), CartStoreError> {
        redis::pipe()
            .atomic()
            .cmd("HGETALL")
            .arg(self.keys.stats(shard))
            .cmd("ZCARD")
            .arg(self.keys.expiring(shard))
            .query_async(&mut conn)
            .await
            .map_err(redis_error)
    }
}
