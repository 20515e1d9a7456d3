//! The test harness: starts the real server on a random port with its own
//! database and key prefix, and hands out generated tonic clients.
//!
//! Backend: PostgreSQL and Redis when `TEST_DATABASE_URL` / `TEST_REDIS_URL`
//! are set (CI sets both), the embedded SQLite file and in-process stores otherwise.
//! Suites that hold for a Redis Cluster too add [`Backend::cluster`]:
//! PostgreSQL and the cluster `scripts/redis-cluster.sh` starts
//! (`TEST_REDIS_CLUSTER_URL`; CI sets it, and a CI run without it fails).

use std::{collections::HashMap, time::Duration};

use commerce::{
    app::App,
    auth::{Role, mint_token},
    config::Config,
    db::{Backends, Db},
    proto::commerce::v1::{
        admin_service_client::AdminServiceClient, cart_service_client::CartServiceClient,
        order_service_client::OrderServiceClient, saga_admin_client::SagaAdminClient,
    },
    startup::Application,
};
use tonic::transport::Channel;

/// Which backends a test app runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file + in-process stores.
    Embedded,
    /// PostgreSQL + Redis from TEST_DATABASE_URL / TEST_REDIS_URL.
    Real,
    /// PostgreSQL + the Redis Cluster of TEST_REDIS_CLUSTER_URL (REDIS_CLUSTER=true).
    RealCluster,
}

impl Backend {
    /// Real when the environment names real backends, else embedded.
    pub fn from_env() -> Self {
        if std::env::var("TEST_DATABASE_URL").is_ok() {
            Self::Real
        } else {
            Self::Embedded
        }
    }

    /// The Redis Cluster backend when TEST_REDIS_CLUSTER_URL (and
    /// TEST_DATABASE_URL) are set; under CI a missing cluster fails the test
    /// instead of skipping it.
    pub fn cluster() -> Option<Self> {
        let configured = std::env::var("TEST_REDIS_CLUSTER_URL").is_ok();
        if configured && Self::from_env() == Self::Real {
            return Some(Self::RealCluster);
        }
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        assert!(
            !ci,
            "CI is set but TEST_REDIS_CLUSTER_URL or TEST_DATABASE_URL is not: \
             eval \"$(scripts/redis-cluster.sh start)\" (as .ci/run does)"
        );
        None
    }

    /// [`Backend::all`] and the Redis Cluster, when there is one.
    pub fn all_with_cluster() -> Vec<Self> {
        let mut all = Self::all();
        all.extend(Self::cluster());
        all
    }

    /// Every backend available here: embedded always, real when configured.
    pub fn all() -> Vec<Self> {
        let mut all = vec![Self::Embedded];
        if Self::from_env() == Self::Real {
            all.push(Self::Real);
        }
        all
    }
}

/// Isolated resources of one test: a database (or SQLite file) and a key prefix,
/// removed when dropped.
pub struct Isolation {
    /// Variables to feed [`Config::from_vars`].
    pub vars: HashMap<String, String>,
    database: Option<(String, String)>,
    redis: Option<RedisScope>,
    _dir: tempfile::TempDir,
}

impl Isolation {
    /// Creates a fresh database and prefix on `backend`.
    pub async fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut vars = HashMap::from([
            ("ENVIRONMENT".to_string(), "test".to_string()),
            ("HOST".to_string(), "127.0.0.1".to_string()),
            ("PORT".to_string(), "0".to_string()),
            ("LOG_FORMAT".to_string(), "json".to_string()),
            ("SAGA_RETRY_DELAY_SECONDS".to_string(), "0.02".to_string()),
            (
                "SQLITE_PATH".to_string(),
                dir.path().join("commerce.db").display().to_string(),
            ),
        ]);
        let (mut database, mut redis) = (None, None);
        if backend != Backend::Embedded {
            let admin_url = std::env::var("TEST_DATABASE_URL").expect("TEST_DATABASE_URL");
            let name = format!("t_{id}");
            let admin = sqlx::PgPool::connect(&admin_url)
                .await
                .expect("connect TEST_DATABASE_URL");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                .execute(&admin)
                .await
                .expect("create test database");
            admin.close().await;
            let url = replace_database(&admin_url, &name);
            vars.insert("DATABASE_URL".into(), url);
            database = Some((admin_url, name));
            let cluster = backend == Backend::RealCluster;
            let redis_url = if cluster {
                vars.insert("REDIS_CLUSTER".into(), "true".into());
                Some(std::env::var("TEST_REDIS_CLUSTER_URL").expect("TEST_REDIS_CLUSTER_URL"))
            } else {
                std::env::var("TEST_REDIS_URL").ok()
            };
            if let Some(redis_url) = redis_url {
                let prefix = format!("t{id}");
                vars.insert("REDIS_URL".into(), redis_url.clone());
                vars.insert("REDIS_KEY_PREFIX".into(), prefix.clone());
                redis = Some(RedisScope {
                    url: redis_url,
                    prefix,
                    cluster,
                });
            }
        }
        Self {
            vars,
            database,
            redis,
            _dir: dir,
        }
    }

    /// The configuration for these resources, with `overrides` applied.
    pub fn config(&self, overrides: &[(&str, &str)]) -> Config {
        let mut vars = self.vars.clone();
        for (k, v) in overrides {
            vars.insert(k.to_string(), v.to_string());
        }
        Config::from_vars(&vars).expect("valid test config")
    }

    /// `server_url` (another server of the same databases: a replica, a
    /// connection pooler) naming this test's database; None when embedded.
    pub fn database_on(&self, server_url: &str) -> Option<String> {
        Some(replace_database(server_url, self.database_name()?))
    }

    /// The name of this test's PostgreSQL database; None when embedded.
    pub fn database_name(&self) -> Option<&str> {
        self.database.as_ref().map(|(_, name)| name.as_str())
    }

    /// Connected, migrated backends (for store-level conformance suites).
    pub async fn backends(&self) -> Backends {
        let config = self.config(&[]);
        let db = Db::connect(&config.database).await.expect("connect");
        db.migrate().await.expect("migrate");
        Backends {
            db,
            redis: commerce::db::redis_pool(&config.redis).expect("redis pool"),
        }
    }
}

fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let base = match base.rfind('/') {
        Some(i) if base[..i].contains("://") && i > base.find("://").unwrap() + 2 => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// The Redis (or cluster) a test's keys are on, and their prefix.
struct RedisScope {
    url: String,
    prefix: String,
    cluster: bool,
}

/// The key prefixes this test process has cleaned up, with the test that
/// owned each: a key under one of them afterwards was written by something
/// that outlived its test (see [`Isolation`]'s drop).
static CLEANED: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

impl Drop for Isolation {
    /// Drops the test's database and deletes its keys, and fails the test if
    /// that cannot be done. Then checks that no earlier test's prefix has keys
    /// again: a task of a finished test that still ran after its cleanup (a
    /// projection re-creating its stream) fails the test that finds it, naming
    /// the test that left it.
    fn drop(&mut self) {
        let database = self.database.take();
        let redis = self.redis.take();
        if database.is_none() && redis.is_none() {
            return;
        }
        let test = std::thread::current().name().unwrap_or("?").to_string();
        // Drop runs outside async; clean up on a thread with its own runtime.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mut problems = Vec::new();
                if let Some((admin_url, name)) = database {
                    let dropped = async {
                        let admin = sqlx::PgPool::connect(&admin_url).await?;
                        sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                        )))
                        .execute(&admin)
                        .await
                    };
                    if let Err(error) = dropped.await {
                        problems.push(format!("dropping database {name}: {error}"));
                    }
                }
                if let Some(scope) = redis {
                    match delete_keys(&scope, &test).await {
                        Ok(late) => problems.extend(late),
                        Err(error) => {
                            problems.push(format!("deleting the keys under {}: {error}", scope.prefix))
                        }
                    }
                }
                problems
            })
        });
        let problems = cleanup.join().unwrap_or_default();
        if !problems.is_empty() && !std::thread::panicking() {
            panic!("the test's cleanup: {problems:?}");
        }
    }
}

/// Deletes the keys under the scope's prefix (one test's), on every master
/// of a cluster, and records it as cleaned up by `test`. Returns the keys
/// found under prefixes cleaned up earlier.
///
/// Patient: under a full run's load KEYS can take longer than the client's
/// default 500 ms response timeout, and a cleanup that gave up then left
/// every key of its test behind.
async fn delete_keys(scope: &RedisScope, test: &str) -> redis::RedisResult<Vec<String>> {
    let nodes = if scope.cluster {
        cluster_masters(&scope.url).await?
    } else {
        vec![scope.url.clone()]
    };
    let mut test_keys = Vec::new();
    for node in nodes {
        let mut conn = patient_connection(&node).await?;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", scope.prefix))
            .query_async(&mut conn)
            .await?;
        for chunk in keys.chunks(500) {
            // One DEL per key: on a cluster node, keys of several slots.
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.cmd("DEL").arg(key).ignore();
            }
            let () = pipe.query_async(&mut conn).await?;
        }
        // One scan for every test prefix (`t<uuid>`, see Isolation::new).
        let found: Vec<String> = redis::cmd("KEYS").arg("t*:*").query_async(&mut conn).await?;
        test_keys.extend(found);
    }
    let mut cleaned = CLEANED.lock().unwrap_or_else(|e| e.into_inner());
    let late = test_keys
        .into_iter()
        .filter_map(|key| {
            let key_prefix = key.split(':').next().unwrap_or_default();
            let (_, owner) = cleaned.iter().find(|(p, _)| p == key_prefix)?;
            Some(format!("written after the cleanup of {owner}: {key}"))
        })
        .collect();
    cleaned.push((scope.prefix.clone(), test.to_string()));
    Ok(late)
}

async fn patient_connection(url: &str) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let patient = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(10)))
        .set_response_timeout(Some(Duration::from_secs(30)));
    redis::Client::open(url)?
        .get_multiplexed_async_connection_with_config(&patient)
        .await
}

/// `redis://host:port` of every master of the cluster `seed` belongs to.
pub async fn cluster_masters(seed: &str) -> redis::RedisResult<Vec<String>> {
    let mut conn = patient_connection(seed).await?;
    let nodes: String = redis::cmd("CLUSTER").arg("NODES").query_async(&mut conn).await?;
    Ok(nodes
        .lines()
        .filter(|line| {
            line.split(' ')
                .nth(2)
                .is_some_and(|flags| flags.contains("master"))
        })
        .filter_map(|line| {
            let address = line.split(' ').nth(1)?.split('@').next()?;
            Some(format!("redis://{address}"))
        })
        .collect())
}

/// The Redis keys under `prefix` (a test's `REDIS_KEY_PREFIX`).
pub async fn keys_of(conn: &mut redis::aio::MultiplexedConnection, prefix: &str) -> Vec<String> {
    redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(conn)
        .await
        .unwrap_or_default()
}

/// Waits until the event stream under `prefix` has `groups` consumer groups:
/// the projections have started reading it.
pub async fn wait_for_consumer_groups(
    redis: &redis::aio::MultiplexedConnection,
    prefix: &str,
    groups: usize,
) {
    let stream = format!("{prefix}:events");
    crate::support::wait_for("the projections' consumer groups", || {
        let (mut redis, stream) = (redis.clone(), stream.clone());
        async move {
            let found: redis::RedisResult<Vec<redis::Value>> = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(&stream)
                .query_async(&mut redis)
                .await;
            found.is_ok_and(|found| found.len() == groups)
        }
    })
    .await;
}

/// A running server and clients to it.
pub struct TestApp {
    /// Bound port.
    pub port: u16,
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// A connected channel.
    pub channel: Channel,
    /// The application layer behind the transports.
    pub app: App,
    /// The configuration it runs with.
    pub config: Config,
    /// Plain HTTP client helper target.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// The server's background tasks (relay, projections, sagas...).
    tasks: commerce::shutdown::Tasks,
    /// Kept last so the database outlives the server.
    pub isolation: Isolation,
}

/// Starts a server on the backend from the environment.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(Backend::from_env(), &[]).await
}

/// Starts a server on `backend` with configuration overrides.
pub async fn spawn_app_with(backend: Backend, overrides: &[(&str, &str)]) -> TestApp {
    let isolation = Isolation::new(backend).await;
    spawn_on(isolation, overrides).await
}

/// Starts a server on existing isolated resources (e.g. a restart).
pub async fn spawn_on(isolation: Isolation, overrides: &[(&str, &str)]) -> TestApp {
    let config = isolation.config(overrides);
    commerce::telemetry::init_captured(&config.telemetry);
    let application = Application::build(config.clone()).await.expect("build app");
    let port = application.port();
    let app = application.app().clone();
    let tasks = application.tasks();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(application.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let base_url = format!("http://127.0.0.1:{port}");
    let channel = Channel::from_shared(base_url.clone())
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect to test server");
    // Health is checked in the background; wait for the first check.
    for _ in 0..100 {
        if app.health.report().await.status == "ok" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    TestApp {
        port,
        base_url,
        channel,
        app,
        config,
        stop: Some(stop),
        server: Some(server),
        tasks,
        isolation,
    }
}

impl TestApp {
    /// A bearer token for `subject` with `roles`.
    pub fn token(&self, subject: &str, roles: &[Role]) -> String {
        mint_token(&self.config.auth, subject, roles, Duration::from_secs(600)).unwrap()
    }

    /// A customer token for `subject`.
    pub fn customer(&self, subject: &str) -> String {
        self.token(subject, &[Role::Customer])
    }

    /// An admin token.
    pub fn admin(&self) -> String {
        self.token("admin-1", &[Role::Admin])
    }

    /// A cart client.
    pub fn carts(&self) -> CartServiceClient<Channel> {
        CartServiceClient::new(self.channel.clone())
    }

    /// An order client.
    pub fn orders(&self) -> OrderServiceClient<Channel> {
        OrderServiceClient::new(self.channel.clone())
    }

    /// A saga admin client.
    pub fn sagas(&self) -> SagaAdminClient<Channel> {
        SagaAdminClient::new(self.channel.clone())
    }

    /// An admin client.
    pub fn admin_client(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel.clone())
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Before the isolation's cleanup (the last field): an aborted task is
        // never polled again, so none re-creates a key or row once they are
        // deleted (a projection would re-create its stream and group).
        self.tasks.abort_all();
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// A request carrying `token` as bearer.
pub fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}
