//! The streaming replica of the test PostgreSQL that `scripts/pg-replica.sh`
//! starts (`TEST_DATABASE_REPLICA_URL`; CI sets it, and a CI run without it
//! fails): where a test's database is on it, waiting for it to catch up, and
//! pausing its replay to make it lag.

use std::time::Duration;

use sqlx::PgPool;

use crate::support::app::Isolation;

/// The standby, through its superuser connection (to the `test` database).
pub struct Replica {
    url: String,
    standby: PgPool,
    primary: PgPool,
}

impl Replica {
    /// The replica of TEST_DATABASE_REPLICA_URL when it and TEST_DATABASE_URL
    /// are set; under CI a missing one fails the test instead of skipping it.
    pub async fn from_env() -> Option<Self> {
        let (Ok(url), Ok(primary)) = (
            std::env::var("TEST_DATABASE_REPLICA_URL"),
            std::env::var("TEST_DATABASE_URL"),
        ) else {
            let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
            assert!(
                !ci,
                "CI is set but TEST_DATABASE_REPLICA_URL or TEST_DATABASE_URL is not: \
                 eval \"$(scripts/pg-replica.sh start)\" (as .ci/run does)"
            );
            return None;
        };
        let standby = PgPool::connect(&url)
            .await
            .expect("connect TEST_DATABASE_REPLICA_URL");
        let primary = PgPool::connect(&primary)
            .await
            .expect("connect TEST_DATABASE_URL");
        Some(Self {
            url,
            standby,
            primary,
        })
    }

    /// DATABASE_READ_URL for `isolation`'s database (on the replica).
    pub fn url_of(&self, isolation: &Isolation) -> String {
        isolation
            .database_on(&self.url)
            .expect("a PostgreSQL test database")
    }

    /// Waits until the replica has replayed everything the primary had
    /// written when called (WAL positions); fails after 30 s.
    pub async fn catch_up(&self) {
        let target: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
            .fetch_one(&self.primary)
            .await
            .expect("primary WAL position");
        let caught_up = crate::support::eventually(Duration::from_secs(30), || async {
            sqlx::query_scalar::<_, bool>("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn")
                .bind(&target)
                .fetch_one(&self.standby)
                .await
                .ok()
                .filter(|done| *done)
        })
        .await;
        assert!(
            caught_up.is_some(),
            "the replica did not replay up to {target} in 30 s"
        );
    }

    /// Pauses WAL replay until the guard is dropped: the replica serves
    /// reads but falls behind every write from now on.
    pub async fn pause(&self) -> PausedReplay {
        sqlx::query("SELECT pg_wal_replay_pause()")
            .execute(&self.standby)
            .await
            .expect("pause replay");
        let paused = crate::support::eventually(Duration::from_secs(10), || async {
            sqlx::query_scalar::<_, String>("SELECT pg_get_wal_replay_pause_state()")
                .fetch_one(&self.standby)
                .await
                .ok()
                .filter(|state| state == "paused")
        })
        .await;
        assert!(paused.is_some(), "replay did not pause");
        PausedReplay {
            url: self.url.clone(),
        }
    }
}

/// Replay paused by [`Replica::pause`]; resumed on drop, also when the test
/// fails, so that the shared replica never stays behind.
pub struct PausedReplay {
    url: String,
}

impl Drop for PausedReplay {
    fn drop(&mut self) {
        let url = self.url.clone();
        // Drop runs outside async: resume on a thread with its own runtime.
        let resumed = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let standby = PgPool::connect(&url).await?;
                sqlx::query("SELECT pg_wal_replay_resume()")
                    .execute(&standby)
                    .await?;
                standby.close().await;
                Ok::<_, sqlx::Error>(())
            })
        })
        .join();
        if !matches!(resumed, Ok(Ok(()))) && !std::thread::panicking() {
            panic!("resuming the replica's replay: {resumed:?}");
        }
    }
}
