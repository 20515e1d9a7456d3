//! `commerce purge [--dry-run]`: one retention run ([`crate::app::retention`])
//! against the configured database and Redis, from the command line (the
//! service may be running elsewhere; the run takes the same lock as its job).

use chrono::Utc;

use super::Stores;
use crate::{
    app::retention::{PurgeReport, Retention, RetentionStores},
    config::Config,
    db::{Backends, Db, redis_pool},
    store::event_store::OrderCodec,
};

/// Runs once and prints, per table, how many rows went (or, dry, would go)
/// and the cutoff of each kind of data.
pub async fn command(config: Config, dry_run: bool) -> anyhow::Result<PurgeReport> {
    let target = crate::db::describe(&config.database);
    if config.database.url.is_none() && !std::path::Path::new(&config.database.sqlite_path).exists() {
        anyhow::bail!("{target} does not exist (DATABASE_URL is unset): nothing to purge");
    }
    let db = Db::connect(&config.database).await?;
    if config.database.run_migrations {
        db.migrate().await?;
    }
    let backends = Backends {
        db: db.clone(),
        redis: redis_pool(&config.redis)?,
    };
    let stores = Stores::on(&db, OrderCodec::upcasters(), false);
    let bus = super::event_bus(&config.redis, &config.bus, &backends);
    let retention = Retention::new(
        config.retention,
        db,
        RetentionStores {
            sagas: stores.sagas,
            idempotency_keys: stores.idempotency_keys,
            bus,
        },
    );
    let Some(report) = retention.run(Utc::now(), dry_run).await? else {
        anyhow::bail!("another replica is running the retention job on {target}: try again shortly");
    };
    if dry_run {
        println!("retention of {target}: dry run: nothing deleted; would delete:");
    } else {
        println!("retention of {target}: deleted:");
    }
    for (table, rows) in report.tables() {
        println!("{table:<22} {rows:>10}");
    }
    let c = &report.cutoffs;
    println!(
        "cutoffs: finished sagas changed before {}, idempotency keys answered before {}, \
         dead letters from before {}",
        c.sagas.to_rfc3339(),
        c.idempotency_keys.to_rfc3339(),
        c.dead_letters.to_rfc3339()
    );
    Ok(report)
}
