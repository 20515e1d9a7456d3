//! The `commerce` binary: parse the command line, load the configuration, run.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use commerce::{
    auth::{Role, mint_token},
    config::Config,
    db::Db,
    shutdown,
    startup::Application,
    stubs, telemetry,
};

/// mimalloc instead of glibc's allocator: a request allocates and frees many
/// small buffers across threads, where glibc spent about an eighth of the
/// server's CPU (BENCHMARKS.md, "Profiling").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// gRPC-first commerce service: carts, event-sourced orders, fulfillment saga.
#[derive(Parser)]
#[command(name = "commerce", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve gRPC, REST, /health and /metrics on PORT (default 8084).
    Serve,
    /// Serve the payment, inventory and shipping stubs on STUBS_PORT (default 8085).
    Stubs,
    /// Apply the database migrations and exit.
    Migrate,
    /// Mint a development JWT (HS256 with JWT_SECRET or the development secret).
    Token {
        /// Subject: the customer id.
        #[arg(long, default_value = "customer-1")]
        sub: String,
        /// Role(s): customer or admin; repeat for several.
        #[arg(long = "role", value_parser = parse_role, default_value = "customer")]
        roles: Vec<Role>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl_seconds: u64,
    },
    /// Rebuild the read models from the event store into shadow tables and swap
    /// them in, while a running service keeps serving; prints events/s.
    RebuildProjections {
        /// Events per read of the event store.
        #[arg(long, default_value_t = commerce::projections::rebuild::DEFAULT_BATCH)]
        batch: usize,
        /// Rebuild even when the event store holds no events (or, without DATABASE_URL,
        /// the SQLite file does not exist yet and is created): refused otherwise, since it
        /// usually means the wrong database.
        #[arg(long)]
        allow_empty: bool,
    },
    /// Delete finished sagas, idempotency keys and dead letters older than their RETENTION_* ages (the job the service runs), and
    /// print how many rows went per table. Order events are never deleted.
    Purge {
        /// Only count and print what would go; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Load-test a server (started here unless --target) and print figures.
    Bench(commerce::bench::BenchArgs),
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| "expected customer, admin or service".into())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::from_env()?;
    match cli.command {
        Command::Serve => {
            telemetry::init(&config.telemetry);
            let application = Application::build(config).await?;
            let result = application.run_until_stopped(shutdown::os_signal()).await;
            telemetry::shutdown().await;
            result
        }
        Command::Stubs => {
            telemetry::init(&config.telemetry);
            let (host, port) = (config.server.host.as_str(), config.stubs.port);
            let listener = tokio::net::TcpListener::bind((host, port))
                .await
                .with_context(|| format!("binding {host}:{port}"))?;
            tracing::info!(addr = %listener.local_addr()?, "serving the sibling stubs");
            stubs::serve_stubs(
                listener,
                stubs::Stubs::from_settings(&config.stubs),
                shutdown::os_signal(),
            )
            .await
        }
        Command::Migrate => {
            telemetry::init(&config.telemetry);
            let db = Db::connect(&config.database).await?;
            db.migrate().await.context("running migrations")?;
            tracing::info!(database = db.kind(), "migrations applied");
            Ok(())
        }
        Command::Token {
            sub,
            roles,
            ttl_seconds,
        } => {
            println!(
                "{}",
                mint_token(&config.auth, &sub, &roles, Duration::from_secs(ttl_seconds))?
            );
            Ok(())
        }
        Command::RebuildProjections { batch, allow_empty } => {
            use commerce::startup::rebuild::{EmptyStore, command};
            telemetry::init(&config.telemetry);
            let empty = if allow_empty {
                EmptyStore::Allow
            } else {
                EmptyStore::Refuse
            };
            command(&config.database, batch, empty).await.map(drop)
        }
        Command::Purge { dry_run } => {
            telemetry::init(&config.telemetry);
            commerce::startup::purge::command(config, dry_run).await.map(drop)
        }
        Command::Bench(args) => commerce::bench::run(args, &config.auth).await,
    }
}
