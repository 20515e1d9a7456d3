//! Two `commerce serve` processes on one database (and `commerce stubs`):
//! they share the sagas, and no attempt of a step ever overlaps another,
//! whichever replica sent it. One authorization per order, per the ledger.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use rand::{SeedableRng, rngs::StdRng};

use crate::support::{
    app::{Backend, Isolation},
    saga_processes::{
        Progress, check_outcome_and_read_models, place, plans, spawn_service, start_stubs, wait_terminal,
    },
};

/// (saga, step, attempt, worker, started ms, finished ms) of one attempt.
type AttemptRow = (String, String, i32, String, i64, Option<i64>);

/// Every attempt the replicas recorded.
async fn attempts(isolation: &Isolation) -> Vec<AttemptRow> {
    match isolation.backends().await.db {
        commerce::db::Db::Postgres(pool) => sqlx::query_as(
            "SELECT saga_id::text, step, attempt, worker, \
             (extract(epoch FROM started_at) * 1000)::bigint, \
             (extract(epoch FROM finished_at) * 1000)::bigint FROM saga_attempts",
        )
        .fetch_all(&pool)
        .await
        .unwrap(),
        commerce::db::Db::Sqlite(pool) => sqlx::query_as(
            "SELECT saga_id, step, attempt, worker, started_at, finished_at FROM saga_attempts",
        )
        .fetch_all(&pool)
        .await
        .unwrap(),
    }
}

#[tokio::test]
async fn two_service_processes_on_one_database_share_the_sagas_and_never_run_a_step_twice_at_once() {
    let isolation = Isolation::new(Backend::from_env()).await;
    let dir = tempfile::tempdir().unwrap();
    let (stubs_proc, stubs) = start_stubs(dir.path(), "0.05").await;

    let mut replicas = Vec::new();
    let mut channels = Vec::new();
    for name in ["a", "b"] {
        let (replica, channel) = spawn_service(&isolation, &stubs_proc.url(), name, dir.path(), &[]).await;
        channels.push(channel);
        replicas.push(replica);
    }
    let config = isolation.config(&[]);
    let admin = commerce::auth::mint_token(
        &config.auth,
        "admin-1",
        &[commerce::auth::Role::Admin],
        Duration::from_secs(3600),
    )
    .unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    let plans = plans(40, &mut rng);
    let mut order_ids = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        let token = commerce::auth::mint_token(
            &config.auth,
            &plan.customer,
            &[commerce::auth::Role::Customer],
            Duration::from_secs(3600),
        )
        .unwrap();
        let mut progress = Progress::default();
        let order_id = place(&channels[i % 2], &token, plan, &mut progress)
            .await
            .expect("placed");
        order_ids.push(order_id);
    }
    wait_terminal(&channels[0], &admin, Duration::from_secs(60)).await;
    // The read models, projected by two replicas at once, equal a rebuild from the events.
    let violations = check_outcome_and_read_models(&isolation, &stubs, &order_ids).await;
    assert_eq!(violations, 0, "see VIOLATION lines");

    // Attempts of one step never overlap in time, whichever replica sent them.
    let mut by_step: HashMap<(String, String), Vec<AttemptRow>> = HashMap::new();
    for row in attempts(&isolation).await {
        by_step
            .entry((row.0.clone(), row.1.clone()))
            .or_default()
            .push(row);
    }
    let mut workers = HashSet::new();
    for ((saga, step), mut list) in by_step {
        list.sort_by_key(|a| a.2);
        for pair in list.windows(2) {
            let (earlier, later) = (&pair[0], &pair[1]);
            let finished = earlier.5.expect("no attempt left unfinished without a crash");
            assert!(
                finished <= later.4,
                "{saga} {step}: attempts {} and {} overlap",
                earlier.2,
                later.2
            );
        }
        workers.extend(list.into_iter().map(|a| a.3));
    }
    assert!(workers.len() >= 2, "both replicas worked: {workers:?}");
    println!("two replicas: {} orders, workers {workers:?}", order_ids.len());
    drop(replicas);
}
