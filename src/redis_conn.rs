//! One Redis, or a Redis Cluster, behind one pool type ([`RedisPool`]), so
//! the cart store, the bus and the health monitor are written once.
//!
//! # Which one
//! `REDIS_CLUSTER=true` makes `REDIS_URL` (one node, or several seed nodes
//! separated by commas) the entry to a Redis Cluster: the cluster client
//! learns the slot map from any node, follows `MOVED`/`ASK` redirections and
//! refreshes the map after a failover. The mode is a setting, not a probe at
//! start, because the key layout depends on it (hash tags, sharded counters:
//! see `store::cart::redis` and `bus::redis_streams`) and must not depend on
//! whether Redis happened to answer at start. The health monitor checks that
//! the server is what the setting says ([`RedisPool::verify`]) and reports
//! the service down, with the fix, when it is not.
//!
//! # Connections
//! Both pools hand out multiplexed connections ([`RedisConn`]); a caller that
//! wants to share one (the cart store) clones the handle inside
//! ([`RedisConn::shared`]). A cluster connection holds a connection per node,
//! and a pipeline or script must keep its keys in one slot: every multi-key
//! operation of ours uses a hash tag for that.
//!
//! # Time bounds
//! Every request has a deadline. On one Redis it is the client's response
//! timeout (500 ms). A cluster request may be retried on another node during
//! a failover, so it gets [`CLUSTER_RESPONSE_TIMEOUT`] per attempt and
//! [`CLUSTER_REQUEST_TIMEOUT`] in all, retries included: redis-rs's own
//! defaults have no response timeout and back off up to 655 s between 16
//! retries, which held a request for minutes after a master failed over.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use deadpool::managed;
use deadpool_redis::{
    PoolError, Status,
    redis::{
        self, Cmd, Pipeline, RedisError, RedisFuture, Value,
        aio::{ConnectionLike, MultiplexedConnection},
        cluster::{ClusterClient, ClusterClientBuilder},
        cluster_async::ClusterConnection,
    },
};

/// The longest one attempt of a cluster request waits for its answer (a
/// blocking stream read blocks for at most 400 ms, see `bus::redis_streams`).
pub const CLUSTER_RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest a cluster request takes in all, its retries on a failover
/// included; then it fails and the caller's own retry (or the client's) goes on.
pub const CLUSTER_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A pool of connections to one Redis or to a Redis Cluster.
#[derive(Clone)]
pub enum RedisPool {
    /// One Redis server (or a proxy that looks like one).
    Single(deadpool_redis::Pool),
    /// A Redis Cluster, reached through any of its nodes.
    Cluster(managed::Pool<ClusterManager>),
}

impl RedisPool {
    /// A connection from the pool (bounded by the pool's wait timeout).
    pub async fn get(&self) -> Result<RedisConn, PoolError> {
        Ok(match self {
            Self::Single(pool) => RedisConn::Single(pool.get().await?),
            Self::Cluster(pool) => RedisConn::Cluster(pool.get().await?),
        })
    }

    /// True on a Redis Cluster: keys need hash tags to share a slot.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// The pool's size, idle and waiting counts, for `/metrics`.
    pub fn status(&self) -> Status {
        match self {
            Self::Single(pool) => pool.status(),
            Self::Cluster(pool) => pool.status(),
        }
    }

    /// Checks that Redis takes the service's real operations, not only PING:
    /// the server's cluster mode matches the setting, and a script that writes
    /// a key (under `prefix`, deleted by the same script) runs. So a cluster
    /// node addressed as a single Redis (every other key `MOVED`, scripts
    /// `CROSSSLOT`), a plain Redis addressed as a cluster, and a read-only
    /// replica are each an error saying which.
    pub async fn verify(&self, prefix: &str) -> anyhow::Result<()> {
        let mut conn = self.get().await?;
        let info: Value = redis::cmd("INFO").arg("cluster").query_async(&mut conn).await?;
        let server_is_cluster = text_of(&info).contains("cluster_enabled:1");
        match (self.is_cluster(), server_is_cluster) {
            (false, true) => anyhow::bail!(
                "REDIS_URL names a Redis Cluster node but REDIS_CLUSTER is off: \
                 keys of other slots answer MOVED and scripts CROSSSLOT; set REDIS_CLUSTER=true"
            ),
            (true, false) => anyhow::bail!(
                "REDIS_CLUSTER is on but REDIS_URL names a Redis without cluster mode; unset REDIS_CLUSTER"
            ),
            _ => {}
        }
        if let RedisConn::Cluster(_) = conn {
            let state: Value = redis::cmd("CLUSTER").arg("INFO").query_async(&mut conn).await?;
            if !text_of(&state).contains("cluster_state:ok") {
                anyhow::bail!("the Redis Cluster is not serving every slot (cluster_state is not ok)");
            }
        }
        // One write through a script, as every cart change is; it leaves no key.
        let _: i64 = redis::Script::new(PROBE)
            .key(format!("{prefix}:health-probe"))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| anyhow::anyhow!("Redis refuses writes through scripts: {e}"))?;
        Ok(())
    }
}

/// Writes and deletes one key: fails on a read-only replica, a node that does
/// not own the key's slot, or a server without scripting.
const PROBE: &str = "redis.call('SET', KEYS[1], '1', 'PX', 1000) return redis.call('DEL', KEYS[1])";

/// The text of an INFO-like reply (a cluster client may answer one per node).
fn text_of(value: &Value) -> String {
    match value {
        Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Value::VerbatimString { text, .. } | Value::SimpleString(text) => text.clone(),
        Value::Array(items) | Value::Set(items) => items.iter().map(text_of).collect::<Vec<_>>().join("\n"),
        Value::Map(pairs) => pairs
            .iter()
            .map(|(_, v)| text_of(v))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// A connection taken from a [`RedisPool`]; goes back to it when dropped.
pub enum RedisConn {
    /// From a single-Redis pool.
    Single(deadpool_redis::Connection),
    /// From a cluster pool.
    Cluster(managed::Object<ClusterManager>),
}

impl RedisConn {
    /// A handle on the same multiplexed connection, to share between tasks
    /// while this pooled one is kept (a blocking command on it would hold up
    /// every sharer: the bus takes its own connections for those).
    pub fn shared(&self) -> SharedConn {
        match self {
            Self::Single(conn) => SharedConn::Single(MultiplexedConnection::clone(conn)),
            Self::Cluster(conn) => SharedConn::Cluster(ClusterConnection::clone(conn)),
        }
    }
}

/// Opens the cluster pool's connections, each one multiplexed over a
/// connection per node, with the time bounds of the module doc.
pub struct ClusterManager {
    client: ClusterClient,
    pings: AtomicUsize,
}

impl ClusterManager {
    /// A manager whose connections learn the cluster from `seeds` (any nodes of it).
    pub fn new(seeds: Vec<String>) -> Result<Self, RedisError> {
        let client = ClusterClientBuilder::new(seeds)
            .connection_timeout(Duration::from_secs(1))
            .response_timeout(CLUSTER_RESPONSE_TIMEOUT)
            .overall_response_timeout(Some(CLUSTER_REQUEST_TIMEOUT))
            // Waits of 50 ms up to 1 s between attempts (100 ms x 2^retry,
            // jittered): a failover of a few seconds is ridden out, and the
            // overall timeout ends the rest.
            .retries(8)
            .min_retry_wait(50)
            .max_retry_wait(1000)
            .retry_wait_formula(100, 2)
            .build()?;
        Ok(Self {
            client,
            pings: AtomicUsize::new(0),
        })
    }
}

impl managed::Manager for ClusterManager {
    type Type = ClusterConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<ClusterConnection, RedisError> {
        self.client.get_async_connection().await
    }

    /// A PING that must echo its own number, as deadpool-redis's managers do.
    async fn recycle(
        &self,
        conn: &mut ClusterConnection,
        _: &managed::Metrics,
    ) -> managed::RecycleResult<RedisError> {
        let ping = self.pings.fetch_add(1, Ordering::Relaxed).to_string();
        let echoed: String = redis::cmd("PING").arg(&ping).query_async(conn).await?;
        if echoed == ping {
            Ok(())
        } else {
            Err(managed::RecycleError::message("PING answered another number"))
        }
    }
}

/// A cloneable handle on a multiplexed connection (see [`RedisConn::shared`]).
#[derive(Clone)]
pub enum SharedConn {
    /// To one Redis.
    Single(MultiplexedConnection),
    /// To a Redis Cluster.
    Cluster(ClusterConnection),
}

/// Delegates to whichever connection is inside.
macro_rules! delegate_connection_like {
    ($ty:ty, $single:ident => $s:expr, $cluster:ident => $c:expr) => {
        impl ConnectionLike for $ty {
            fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
                match self {
                    Self::Single($single) => $s.req_packed_command(cmd),
                    Self::Cluster($cluster) => $c.req_packed_command(cmd),
                }
            }

            fn req_packed_commands<'a>(
                &'a mut self,
                cmd: &'a Pipeline,
                offset: usize,
                count: usize,
            ) -> RedisFuture<'a, Vec<Value>> {
                match self {
                    Self::Single($single) => $s.req_packed_commands(cmd, offset, count),
                    Self::Cluster($cluster) => $c.req_packed_commands(cmd, offset, count),
                }
            }

            fn get_db(&self) -> i64 {
                match self {
                    Self::Single($single) => $s.get_db(),
                    Self::Cluster($cluster) => $c.get_db(),
                }
            }
        }
    };
}

delegate_connection_like!(RedisConn, conn => conn, conn => conn);
delegate_connection_like!(SharedConn, conn => conn, conn => conn);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_of_a_per_node_reply_joins_every_node() {
        let reply = Value::Map(vec![
            (
                Value::SimpleString("a".into()),
                Value::BulkString(b"cluster_enabled:1".to_vec()),
            ),
            (
                Value::SimpleString("b".into()),
                Value::SimpleString("cluster_state:ok".into()),
            ),
        ]);
        let text = text_of(&reply);
        assert!(text.contains("cluster_enabled:1") && text.contains("cluster_state:ok"));
    }
}
