//! The two PgBouncers `scripts/pgbouncer.sh` starts in front of the test
//! PostgreSQL (`TEST_PGBOUNCER_URL`: transaction pooling,
//! `TEST_PGBOUNCER_SESSION_URL`: session pooling; CI sets both, and a CI run
//! without them fails), and what their admin consoles count.

/// One PgBouncer, by the URL of its `test` database.
pub struct PgBouncer {
    url: String,
}

impl PgBouncer {
    /// The transaction-pooling and the session-pooling PgBouncer, when
    /// configured (and TEST_DATABASE_URL too); under CI a missing one fails
    /// the test instead of skipping it.
    pub fn from_env() -> Option<(Self, Self)> {
        let vars = [
            "TEST_PGBOUNCER_URL",
            "TEST_PGBOUNCER_SESSION_URL",
            "TEST_DATABASE_URL",
        ];
        let found: Vec<String> = vars.iter().filter_map(|v| std::env::var(v).ok()).collect();
        if let [transaction, session, _] = found.as_slice() {
            return Some((
                Self {
                    url: transaction.clone(),
                },
                Self { url: session.clone() },
            ));
        }
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        assert!(
            !ci,
            "CI is set but one of {vars:?} is not: eval \"$(scripts/pgbouncer.sh start)\" (as .ci/run does)"
        );
        None
    }

    /// Its URL (of database `test`; see `Isolation::database_on`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Transactions it has passed to PostgreSQL for `database` (SHOW STATS
    /// of its admin console, through psql: the console speaks only the
    /// simple protocol).
    pub fn transactions(&self, database: &str) -> u64 {
        let (base, _) = self.url.rsplit_once('/').expect("a URL with a database");
        let output = std::process::Command::new("psql")
            .args([&format!("{base}/pgbouncer"), "-A", "-F", "|", "-c", "SHOW STATS"])
            .output()
            .expect("psql");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap_or_default().split('|').collect();
        let column = header
            .iter()
            .position(|c| *c == "total_xact_count")
            .expect("SHOW STATS has total_xact_count");
        lines
            .map(|line| line.split('|').collect::<Vec<_>>())
            .find(|fields| fields.first() == Some(&database))
            .and_then(|fields| fields.get(column)?.parse().ok())
            .unwrap_or(0)
    }
}
