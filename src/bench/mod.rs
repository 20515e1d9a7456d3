//! `commerce bench`: the load generator. Starts the service as a child process
//! (or targets a running one), drives each scenario with real tonic clients,
//! and prints one JSON line per scenario plus a table.
//!
//! Per scenario: a closed-loop phase gives the maximum throughput; an
//! open-loop phase at `--open-loop-fraction` of it gives the latency
//! percentiles (see [`runner`]).

pub mod backend_work;
pub mod event_catch_up;
pub mod hello;
pub mod projection_catch_up;
pub mod runner;
pub mod scenarios;
pub mod store_append;
pub mod target;

use std::{process::Stdio, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use serde_json::json;
use tonic::transport::Channel;

use crate::{
    auth::{Role, mint_token},
    config::AuthSettings,
};
use runner::round;
use scenarios::{Scenario, Target};

/// Command-line options of `commerce bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Scenarios to run (default: all).
    #[arg(long = "scenario", value_enum)]
    pub scenarios: Vec<Scenario>,
    /// Seconds of each measured phase.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Seconds of warm-up before each closed-loop phase.
    #[arg(long, default_value_t = 2)]
    pub warmup_seconds: u64,
    /// Concurrent workers (each a customer with its own token).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Open-loop rate as a fraction of the closed-loop throughput.
    #[arg(long, default_value_t = 0.7)]
    pub open_loop_fraction: f64,
    /// HTTP/2 connections to spread the workers over.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Benchmark a running server at this URL instead of starting one. Start it without a
    /// rate limit (RATE_LIMIT_PER_SECOND=0 commerce serve), as the bench does its own: at the
    /// default 100 requests/s per customer the figures measure the limiter. Refusals are
    /// counted by code and backed off.
    #[arg(long)]
    pub target: Option<String>,
    /// PostgreSQL admin URL: a fresh database is created for the run
    /// (default: embedded SQLite).
    #[arg(long, env = "BENCH_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Redis URL (default: in-process).
    #[arg(long, env = "BENCH_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Seconds to wait before each sample of the backends' counters (PostgreSQL publishes an
    /// idle connection's row counts up to ten seconds late: 11 makes them whole). Adds twice
    /// this to every scenario run against a database.
    #[arg(long, default_value_t = 0)]
    pub settle_seconds: u64,
    /// Events the event-catch-up scenario seeds before its consumer catches up (rounded up to
    /// whole orders of six events).
    #[arg(long, default_value_t = 100_000)]
    pub catch_up_events: usize,
    /// Events the projection-catch-up scenario seeds before the projections start (rounded up
    /// to whole orders of six events).
    #[arg(long, default_value_t = 300_000)]
    pub projection_events: usize,
    /// Internal: serve the bare hello-world server on this port (the
    /// `hello_ceiling` scenario starts it as a child process).
    #[arg(long, hide = true)]
    pub serve_hello: Option<u16>,
}

/// Runs the chosen scenarios (all when none is named) against `--target` or
/// a server it spawns, printing a JSON line per scenario and a summary table.
pub async fn run(args: BenchArgs, auth: &AuthSettings) -> anyhow::Result<()> {
    if let Some(port) = args.serve_hello {
        return hello::serve(port).await;
    }
    let scenarios = if args.scenarios.is_empty() {
        // Order placement last: the sagas of the orders it places keep the
        // server busy for a while after it ends.
        let mut all = vec![Scenario::HelloCeiling];
        if args.database_url.is_some() {
            all.push(Scenario::StoreAppend);
        }
        all.extend([
            Scenario::EventCatchUp,
            Scenario::ProjectionCatchUp,
            Scenario::AddItem,
            Scenario::CartOps,
            Scenario::ReadQueries,
            Scenario::Fulfillment,
            Scenario::OrderPlacement,
        ]);
        all
    } else {
        args.scenarios.clone()
    };
    let run_id = format!("{:x}", rand::random::<u32>());
    // Only scenarios that are not in-process need the server (an idle one
    // would still poll beside an in-process measurement).
    let server = if scenarios.iter().all(|s| s.in_process()) {
        None
    } else {
        Some(match &args.target {
            Some(url) => Server::remote(url.clone()),
            None => Server::spawn(&args, &run_id).await?,
        })
    };
    let target = match &server {
        Some(server) => {
            let auth = auth.clone();
            Some(Target {
                channels: connect(&server.url, args.connections).await?,
                token: Arc::new(move |subject| {
                    mint_token(&auth, subject, &[Role::Customer], Duration::from_secs(7200))
                        .unwrap_or_default()
                }),
            })
        }
        None => None,
    };

    let cpu = target::CpuProbe::new(server.as_ref().and_then(Server::pid));
    let backend = match server.as_ref().and_then(|server| server.database.as_ref()) {
        Some((admin_url, name)) => Some(
            backend_work::BackendWorkProbe::connect(Some((admin_url, name)), args.redis_url.as_deref())
                .await?,
        ),
        None => None,
    };
    let mut lines = Vec::new();
    for scenario in scenarios {
        let scenario_lines = match (scenario, &target) {
            (Scenario::StoreAppend, _) => store_append_lines(&args, &run_id).await?,
            (Scenario::EventCatchUp, _) => vec![
                on_fresh_database(&args, &run_id, "feed", |db| {
                    event_catch_up::run(db, auth, args.catch_up_events)
                })
                .await?,
            ],
            (Scenario::ProjectionCatchUp, _) => vec![
                on_fresh_database(&args, &run_id, "projections", |db| {
                    projection_catch_up::run(db, args.projection_events)
                })
                .await?,
            ],
            (Scenario::HelloCeiling, Some(target)) => {
                // Kept alive for the scenario, killed when dropped.
                let hello = hello::HelloServer::spawn().await?;
                let target = Target {
                    channels: connect(&hello.url, args.connections).await?,
                    ..target.clone()
                };
                let cpu = target::CpuProbe::new(hello.pid());
                vec![run_scenario(scenario, &target, &args, &run_id, &cpu, None).await?]
            }
            (_, Some(target)) => {
                vec![run_scenario(scenario, target, &args, &run_id, &cpu, backend.as_ref()).await?]
            }
            (_, None) => bail!("{} needs a server", scenario.name()),
        };
        for line in scenario_lines {
            println!("{line}");
            warn_of_refusals(&line, &args);
            lines.push(line);
        }
    }
    let server_line = match &server {
        Some(server) => Some(json!({
            "scenario": "server",
            "url": server.url,
            "peak_rss_mb": server.peak_rss_mb(),
            "backend": target::backends(&server.url)
                .await
                .unwrap_or_else(|e| format!("unknown ({e:#})")),
        })),
        None => None,
    };
    if let Some(line) = &server_line {
        println!("{line}");
    }
    print_table(&lines, server_line.as_ref());
    if let Some(server) = server {
        server.stop().await;
    }
    Ok(())
}

/// Says on stderr when the server refused requests with its rate limit, and what to do.
fn warn_of_refusals(line: &serde_json::Value, args: &BenchArgs) {
    let refused = line["errors_by_code"][runner::RATE_LIMITED].as_u64().unwrap_or(0);
    if refused == 0 {
        return;
    }
    let scenario = line["scenario"].as_str().unwrap_or_default();
    match &args.target {
        Some(url) => eprintln!(
            "bench: {scenario}: {url} refused {refused} requests with {} (its rate limit, \
             RATE_LIMIT_PER_SECOND, default 100/s per customer): these figures measure the \
             limiter. Restart the target with RATE_LIMIT_PER_SECOND=0 (no limit), e.g. \
             `RATE_LIMIT_PER_SECOND=0 commerce serve`, or run `commerce bench` without --target.",
            runner::RATE_LIMITED
        ),
        None => eprintln!(
            "bench: {scenario}: the server refused {refused} requests with {} although the \
             bench starts it with RATE_LIMIT_PER_SECOND=0",
            runner::RATE_LIMITED
        ),
    }
}

/// `n` HTTP/2 connections to `url` (workers are spread over them).
async fn connect(url: &str, n: usize) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::new();
    for _ in 0..n.max(1) {
        channels.push(
            Channel::from_shared(url.to_string())?
                .connect_timeout(Duration::from_secs(5))
                .connect()
                .await
                .with_context(|| format!("connecting to {url}"))?,
        );
    }
    Ok(channels)
}

async fn run_scenario(
    scenario: Scenario,
    target: &Target,
    args: &BenchArgs,
    run_id: &str,
    cpu: &target::CpuProbe,
    backend: Option<&backend_work::BackendWorkProbe>,
) -> anyhow::Result<serde_json::Value> {
    measure(scenario.name(), args, cpu, backend, async |phase| {
        scenarios::workers(scenario, target, args.concurrency, &format!("{run_id}{phase}")).await
    })
    .await
}

/// `store_append` with group commit on, then off, each on a fresh database.
async fn store_append_lines(args: &BenchArgs, run_id: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let Some(admin_url) = &args.database_url else {
        bail!("the store_append scenario needs --database-url (PostgreSQL)");
    };
    let mut lines = Vec::new();
    for (group_commit, name) in [
        (true, "store_append_group_commit"),
        (false, "store_append_one_tx"),
    ] {
        let database = format!("bench_{run_id}_{}", if group_commit { "gc" } else { "tx" });
        create_database(admin_url, &database).await?;
        let pool_size = u32::try_from(args.concurrency).unwrap_or(64).clamp(8, 64);
        let result = async {
            let store =
                store_append::store(&database_url_for(admin_url, &database), pool_size, group_commit).await?;
            // In-process: the bench is the server.
            measure(name, args, &target::CpuProbe::new(None), None, async |_phase| {
                Ok((0..args.concurrency)
                    .map(|worker| {
                        Box::new(store_append::AppendWorker {
                            store: store.clone(),
                            worker,
                        }) as Box<dyn runner::Worker>
                    })
                    .collect())
            })
            .await
        }
        .await;
        drop_database(admin_url, &database).await;
        lines.push(result?);
    }
    Ok(lines)
}

/// Runs `run` on a fresh database named for the run and `what`: PostgreSQL
/// under `--database-url` (dropped afterwards), else a SQLite file in a
/// directory of the run's (removed afterwards).
async fn on_fresh_database<Fut>(
    args: &BenchArgs,
    run_id: &str,
    what: &str,
    run: impl FnOnce(event_catch_up::Database) -> Fut,
) -> anyhow::Result<serde_json::Value>
where
    Fut: Future<Output = anyhow::Result<serde_json::Value>>,
{
    use event_catch_up::Database;
    match &args.database_url {
        Some(admin_url) => {
            let name = format!("bench_{run_id}_{what}");
            create_database(admin_url, &name).await?;
            let result = run(Database::Postgres(database_url_for(admin_url, &name))).await;
            drop_database(admin_url, &name).await;
            result
        }
        None => {
            let dir =
                tempfile_dir::TempDir(std::env::temp_dir().join(format!("commerce-bench-{run_id}-{what}")));
            std::fs::create_dir_all(&dir.0)?;
            run(Database::Sqlite(dir.0.join(format!("{what}.db")))).await
        }
    }
}

/// A closed-loop phase (throughput), then an open-loop phase at a fraction of
/// it (latency, the CPU time per operation of each process involved and, with
/// `backend`, what PostgreSQL and Redis did per operation), each on workers made for it.
async fn measure(
    name: &str,
    args: &BenchArgs,
    cpu: &target::CpuProbe,
    backend: Option<&backend_work::BackendWorkProbe>,
    mut workers: impl AsyncFnMut(&str) -> anyhow::Result<Vec<Box<dyn runner::Worker>>>,
) -> anyhow::Result<serde_json::Value> {
    let duration = Duration::from_secs(args.seconds);
    let closed = runner::closed_loop(
        workers("c").await?,
        Duration::from_secs(args.warmup_seconds),
        duration,
    )
    .await
    .summary();
    let rate = (closed.ops_per_sec * args.open_loop_fraction).max(1.0);
    let open_workers = workers("o").await?;
    let settle = Duration::from_secs(args.settle_seconds);
    let work_before = match backend {
        Some(probe) => {
            tokio::time::sleep(settle).await;
            Some(probe.sample().await?)
        }
        None => None,
    };
    let cpu_before = cpu.sample();
    let open = runner::open_loop(open_workers, rate, duration).await.summary();
    let cpu_ms_per_op = cpu_before.per_op_ms(&cpu.sample(), open.ops);
    let backend_per_op = match (backend, work_before) {
        (Some(probe), Some(before)) => {
            tokio::time::sleep(settle).await;
            before.per_op(&probe.sample().await?, open.ops)
        }
        _ => serde_json::Value::Null,
    };
    Ok(json!({
        "scenario": name,
        "concurrency": args.concurrency,
        "throughput_ops_per_sec": round(closed.ops_per_sec),
        "closed_loop": closed,
        "open_loop_rate": round(rate),
        "p50_ms": open.p50_ms,
        "p90_ms": open.p90_ms,
        "p99_ms": open.p99_ms,
        "max_ms": open.max_ms,
        "errors": closed.errors + open.errors,
        "errors_by_code": errors_by_code(&closed, &open),
        "open_loop_cpu_ms_per_op": cpu_ms_per_op,
        "open_loop_backend_work_per_op": backend_per_op,
    }))
}

/// The two phases' failures by gRPC code, added up.
fn errors_by_code(closed: &runner::Summary, open: &runner::Summary) -> serde_json::Value {
    let mut total = std::collections::BTreeMap::<&str, u64>::new();
    for (code, n) in closed.errors_by_code.iter().chain(&open.errors_by_code) {
        *total.entry(*code).or_default() += n;
    }
    json!(total)
}

fn print_table(lines: &[serde_json::Value], server: Option<&serde_json::Value>) {
    println!();
    // The in-process catch-ups have no latency phases: their own lines below.
    let measured: Vec<_> = lines
        .iter()
        .filter(|l| l["scenario"] != "event_catch_up" && l["scenario"] != "projection_catch_up")
        .collect();
    if !measured.is_empty() {
        println!(
            "{:<16} {:>12} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7}",
            "scenario", "max ops/s", "at ops/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors"
        );
    }
    for l in measured {
        println!(
            "{:<16} {:>12.1} {:>10.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>7}",
            l["scenario"].as_str().unwrap_or_default(),
            l["throughput_ops_per_sec"].as_f64().unwrap_or_default(),
            l["open_loop_rate"].as_f64().unwrap_or_default(),
            l["p50_ms"].as_f64().unwrap_or_default(),
            l["p90_ms"].as_f64().unwrap_or_default(),
            l["p99_ms"].as_f64().unwrap_or_default(),
            l["max_ms"].as_f64().unwrap_or_default(),
            l["errors"].as_u64().unwrap_or_default(),
        );
    }
    for l in lines.iter().filter(|l| l["errors"].as_u64().unwrap_or(0) > 0) {
        println!(
            "{} errors by code: {}",
            l["scenario"].as_str().unwrap_or_default(),
            l["errors_by_code"]
        );
    }
    for l in lines.iter().filter(|l| l["scenario"] == "event_catch_up") {
        println!(
            "event_catch_up ({}): {} events in {} s = {} events/s; RSS {} MB before, {} MB peak",
            l["backend"].as_str().unwrap_or_default(),
            l["events"],
            l["elapsed_s"],
            l["events_per_sec"],
            l["rss_before_mb"],
            l["rss_peak_mb"],
        );
    }
    for l in lines.iter().filter(|l| l["scenario"] == "projection_catch_up") {
        let rates: Vec<String> = l["projections"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(name, p)| format!("{name} {} events/s", p["events_per_sec"]))
            .collect();
        println!(
            "projection_catch_up ({}): {} events: {}; {} log reads per 1000 events; RSS {} MB before, {} MB peak",
            l["backend"].as_str().unwrap_or_default(),
            l["events"],
            rates.join(", "),
            l["log_reads_per_1000_events"],
            l["rss_before_mb"],
            l["rss_peak_mb"],
        );
    }
    let Some(server) = server else {
        return;
    };
    let rss = server["peak_rss_mb"].as_f64().map_or_else(
        || "unknown (not a process of this machine)".to_string(),
        |mb| format!("{mb} MB"),
    );
    println!(
        "server {}: peak RSS {rss}, backend {}",
        server["url"].as_str().unwrap_or_default(),
        server["backend"].as_str().unwrap_or_default()
    );
}

/// `admin_url` with its database replaced by `name` (the query, e.g.
/// `?sslmode=disable`, kept).
fn database_url_for(admin_url: &str, name: &str) -> String {
    let (path, query) = admin_url
        .split_once('?')
        .map_or((admin_url, None), |(p, q)| (p, Some(q)));
    let base = path.rsplit_once('/').map_or(path, |(b, _)| b);
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_bench_database_keeps_the_connection_options() {
        assert_eq!(
            super::database_url_for("postgres://u@h:5432/test?sslmode=disable", "bench_1"),
            "postgres://u@h:5432/bench_1?sslmode=disable"
        );
        assert_eq!(
            super::database_url_for("postgres://u@h/test", "bench_1"),
            "postgres://u@h/bench_1"
        );
    }
}

/// The server under test.
struct Server {
    url: String,
    child: Option<tokio::process::Child>,
    /// The process of a `--target` on this machine, for its memory.
    target_pid: Option<u32>,
    database: Option<(String, String)>,
    /// The Redis URL and the run's key prefix, emptied at the end.
    redis: Option<(String, String)>,
    _dir: Option<tempfile_dir::TempDir>,
}

/// A temporary directory removed on drop (no extra dependency).
mod tempfile_dir {
    pub struct TempDir(pub std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Server {
    fn remote(url: String) -> Self {
        Self {
            target_pid: target::local_pid(&url),
            url,
            child: None,
            database: None,
            redis: None,
            _dir: None,
        }
    }

    async fn spawn(args: &BenchArgs, run_id: &str) -> anyhow::Result<Self> {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            listener.local_addr()?.port()
        };
        let dir = std::env::temp_dir().join(format!("commerce-bench-{run_id}"));
        std::fs::create_dir_all(&dir)?;
        let mut command = tokio::process::Command::new(std::env::current_exe()?);
        command
            .arg("serve")
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("RATE_LIMIT_PER_SECOND", "0")
            .env("RUST_LOG", "warn")
            .env("SQLITE_PATH", dir.join("bench.db"))
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut database = None;
        if let Some(admin_url) = &args.database_url {
            let name = format!("bench_{run_id}");
            create_database(admin_url, &name).await?;
            command.env("DATABASE_URL", database_url_for(admin_url, &name));
            database = Some((admin_url.clone(), name));
        }
        let mut redis = None;
        if let Some(redis_url) = &args.redis_url {
            let prefix = format!("bench{run_id}");
            command
                .env("REDIS_URL", redis_url)
                .env("REDIS_KEY_PREFIX", &prefix);
            redis = Some((redis_url.clone(), prefix));
        }
        let child = command.spawn().context("starting `commerce serve`")?;
        let server = Self {
            url: format!("http://127.0.0.1:{port}"),
            child: Some(child),
            target_pid: None,
            database,
            redis,
            _dir: Some(tempfile_dir::TempDir(dir)),
        };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        runner::wait_serving(&self.url, Duration::from_secs(30)).await
    }

    /// The server's process: the child, or the process listening on a `--target`'s port on
    /// this machine (None for a server elsewhere).
    fn pid(&self) -> Option<u32> {
        match &self.child {
            Some(child) => child.id(),
            None => self.target_pid,
        }
    }

    /// VmHWM of the server in MB.
    fn peak_rss_mb(&self) -> Option<f64> {
        target::peak_rss_mb(self.pid()?)
    }

    async fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                // SIGTERM for a graceful drain, then make sure.
                let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
            }
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
            let _ = child.kill().await;
        }
        if let Some((admin_url, name)) = self.database.take() {
            drop_database(&admin_url, &name).await;
        }
        if let Some((url, prefix)) = self.redis.take()
            && let Err(error) = remove_keys(&url, &prefix).await
        {
            eprintln!("bench: keys under {prefix}: left in Redis: {error:#}");
        }
    }
}

/// Removes every key under the run's prefix (carts, streams, counters).
async fn remove_keys(url: &str, prefix: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            let _: () = redis::cmd("UNLINK").arg(&keys).query_async(&mut conn).await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// Creates the run's database `name` (always "bench_" + the random run id and
/// a suffix of ours).
async fn create_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let admin = sqlx::PgPool::connect(admin_url)
        .await
        .context("connecting to PostgreSQL")?;
    // SQL-SAFE: `name` is "bench_" + a random hex run id (+ a fixed suffix), quoted; no input.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&admin)
        .await?;
    admin.close().await;
    Ok(())
}

/// Drops a database [`create_database`] made (best effort).
async fn drop_database(admin_url: &str, name: &str) {
    if let Ok(admin) = sqlx::PgPool::connect(admin_url).await {
        // SQL-SAFE: a database this run created (see create_database); no input.
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
        )))
        .execute(&admin)
        .await;
        admin.close().await;
    }
}
