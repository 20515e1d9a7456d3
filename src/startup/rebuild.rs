//! `commerce rebuild-projections`: the command around
//! [`crate::projections::rebuild`], which connects to the configured database
//! itself (the service may be running elsewhere) and picks its stores here,
//! in startup, like the service does.

use std::time::{Duration, Instant};

use super::Stores;
use crate::{
    projections::{
        rebuild::{Progress, Rebuild, Report},
        status::PROJECTIONS,
    },
    store::event_store::OrderCodec,
};

/// What `commerce rebuild-projections` does with an event store that holds no events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmptyStore {
    /// Stop with an error: an empty store usually means the command was pointed at the wrong
    /// database (without DATABASE_URL it would otherwise create `./commerce.db` and "succeed").
    Refuse,
    /// Rebuild anyway (`--allow-empty`): empty read models, creating the SQLite file if needed.
    Allow,
}

/// `commerce rebuild-projections`: says which database it works on, refuses a
/// missing or empty one unless `empty` allows it, rebuilds, drawing progress
/// on stderr (a bar on a terminal, a line every few seconds otherwise), and
/// prints the rate at the end.
pub async fn command(
    database: &crate::config::DatabaseSettings,
    batch: usize,
    empty: EmptyStore,
) -> anyhow::Result<Report> {
    use std::io::{IsTerminal, Write};

    let target = crate::db::describe(database);
    eprintln!("rebuilding the read models of {target}");
    let allow_empty = "pass --allow-empty to rebuild empty read models anyway";
    if empty == EmptyStore::Refuse
        && database.url.is_none()
        && !std::path::Path::new(&database.sqlite_path).exists()
    {
        anyhow::bail!(
            "{target} does not exist: no event store to rebuild from (DATABASE_URL is unset). \
             Set DATABASE_URL or SQLITE_PATH to the service's database, or {allow_empty}"
        );
    }
    let db = crate::db::Db::connect(database).await?;
    if database.run_migrations {
        db.migrate().await?;
    }
    let stores = Stores::on(&db, OrderCodec::upcasters(), false);
    let events = stores.events;
    if empty == EmptyStore::Refuse && events.head_position().await? == 0 {
        anyhow::bail!(
            "the event store of {target} holds no events: is this the service's database? {allow_empty}"
        );
    }
    let rebuild = Rebuild::new(stores.read_models, events).with_batch(batch);
    let terminal = std::io::stderr().is_terminal();
    let mut last_draw: Option<Instant> = None;
    let every = if terminal {
        Duration::from_millis(100)
    } else {
        Duration::from_secs(2)
    };
    let report = rebuild
        .run(|progress| {
            if last_draw.is_some_and(|t| t.elapsed() < every) {
                return;
            }
            last_draw = Some(Instant::now());
            let line = progress_line(progress);
            let mut err = std::io::stderr();
            let _ = if terminal {
                write!(err, "\r{line}")
            } else {
                writeln!(err, "{line}")
            };
            let _ = err.flush();
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if terminal {
        eprintln!(
            "\r{}",
            progress_line(&Progress {
                replayed: report.events,
                total: report.events,
                elapsed: report.elapsed,
            })
        );
    }
    println!(
        "rebuilt {} projections of {target} from {} events in {:.2} s: {:.0} events/s (checkpoint {})",
        PROJECTIONS.len(),
        report.events,
        report.elapsed.as_secs_f64(),
        report.rate(),
        report.position
    );
    Ok(report)
}

/// `[=========>          ]  45.2%  123456/270000 events  52311 events/s`.
fn progress_line(progress: &Progress) -> String {
    const WIDTH: usize = 30;
    let ratio = if progress.total > 0 {
        (progress.replayed as f64 / progress.total as f64).clamp(0.0, 1.0)
    } else {
        1.0
    };
    let filled = (ratio * WIDTH as f64) as usize;
    let bar: String = (0..WIDTH)
        .map(|i| match i.cmp(&filled) {
            std::cmp::Ordering::Less => '=',
            std::cmp::Ordering::Equal => '>',
            std::cmp::Ordering::Greater => ' ',
        })
        .collect();
    format!(
        "[{bar}] {:5.1}%  {}/{} events  {:.0} events/s",
        ratio * 100.0,
        progress.replayed,
        progress.total,
        progress.rate()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_line_shows_bar_share_counts_and_rate() {
        let line = progress_line(&Progress {
            replayed: 50,
            total: 200,
            elapsed: Duration::from_secs(2),
        });
        assert!(line.starts_with("[=======>"), "{line}");
        assert!(line.contains(" 25.0%  50/200 events  25 events/s"), "{line}");
    }
}
