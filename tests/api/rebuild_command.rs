//! `commerce rebuild-projections` as an operator runs it: it names the database it works on and
//! refuses a missing or empty event store (usually the wrong database) unless `--allow-empty`.

use std::process::Output;

use crate::support::app::{Backend, Isolation};

/// `commerce rebuild-projections <args>` with exactly `vars`, in `cwd`.
fn rebuild(vars: &[(String, String)], cwd: &std::path::Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_commerce"))
        .arg("rebuild-projections")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .current_dir(cwd)
        .output()
        .expect("run commerce rebuild-projections")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn rebuild_without_database_url_names_the_sqlite_file_and_refuses_to_create_it() {
    let cwd = tempfile::tempdir().unwrap();
    let vars = [("ENVIRONMENT".to_string(), "test".to_string())];

    let refused = rebuild(&vars, cwd.path(), &[]);
    let stderr = text(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    let file = std::path::absolute(cwd.path().join("commerce.db")).unwrap();
    assert!(
        stderr.contains(&format!("SQLite file {}", file.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains("DATABASE_URL is unset") && stderr.contains("--allow-empty"),
        "{stderr}"
    );
    assert!(!file.exists(), "the refused rebuild created {}", file.display());

    let allowed = rebuild(&vars, cwd.path(), &["--allow-empty"]);
    let stdout = text(&allowed.stdout);
    assert!(allowed.status.success(), "{}", text(&allowed.stderr));
    assert!(
        stdout.contains(&format!(
            "projections of SQLite file {} from 0 events",
            file.display()
        )),
        "{stdout}"
    );
    assert!(file.exists());
}

#[tokio::test]
async fn rebuild_of_an_empty_event_store_names_the_database_and_is_refused_unless_allowed() {
    for backend in Backend::all() {
        let isolation = Isolation::new(backend).await;
        let cwd = tempfile::tempdir().unwrap();
        let vars: Vec<(String, String)> = isolation.vars.clone().into_iter().collect();
        let config = isolation.config(&[]);
        let described = commerce::db::describe(&config.database);
        if let Some(url) = &config.database.url {
            let database = url.rsplit('/').next().unwrap().split('?').next().unwrap();
            assert!(
                described.starts_with(&format!("PostgreSQL database {database} on ")),
                "{described}"
            );
            assert!(!described.contains("password"), "{described}");
        }
        // An existing but empty store (migrated, no event): the wrong database, most likely.
        isolation.backends().await;

        let refused = rebuild(&vars, cwd.path(), &[]);
        let stderr = text(&refused.stderr);
        assert!(!refused.status.success(), "{backend:?}: {stderr}");
        assert!(
            stderr.contains(&format!("rebuilding the read models of {described}")),
            "{stderr}"
        );
        assert!(
            stderr.contains("holds no events") && stderr.contains("--allow-empty"),
            "{stderr}"
        );

        let allowed = rebuild(&vars, cwd.path(), &["--allow-empty"]);
        assert!(allowed.status.success(), "{backend:?}: {}", text(&allowed.stderr));
        assert!(
            text(&allowed.stdout).contains("from 0 events"),
            "{}",
            text(&allowed.stdout)
        );
    }
}
