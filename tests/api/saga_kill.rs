//! The real binary under `kill -9`: `commerce serve` and `commerce stubs` run
//! as child processes (the stubs failing transiently at random), orders are
//! placed over gRPC while the service is killed at seeded random moments and
//! restarted; then every saga must end terminal, no order may be lost, no
//! payment captured twice and no stock leaked. (`saga_replicas.rs` runs two
//! service processes on one database with the same helpers.)
//!
//! CI runs a short variant; `LONG_TESTS=1` places more orders with more kills.
//! The seed is printed; `KILL_SEED=<seed>` replays a run's schedule.

use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::support::{
    self,
    app::{Backend, Isolation},
    child::{free_port, spawn},
    saga_processes::{
        Progress, check_outcome_and_read_models, place, plans, service_env, start_stubs, wait_terminal,
    },
};
#[tokio::test]
async fn killed_at_random_moments_the_service_loses_no_order_and_captures_no_payment_twice() {
    let (order_count, max_kills) = (support::scale(60, 300), support::scale(8, 40));
    let seed: u64 = std::env::var("KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("kill test seed {seed}: {order_count} orders, {max_kills} kills; rerun with KILL_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let isolation = Isolation::new(Backend::from_env()).await;
    let dir = tempfile::tempdir().unwrap();

    let (stubs_proc, stubs) = start_stubs(dir.path(), "0.1").await;

    let port = free_port();
    let env = service_env(&isolation, &stubs_proc.url(), port);
    let log = dir.path().join("serve.log");
    let mut service = spawn(&["serve"], &env, log.clone(), port);
    let mut channel = service.ready().await;
    let admin = commerce::auth::mint_token(
        &isolation.config(&[]).auth,
        "admin-1",
        &[commerce::auth::Role::Admin],
        Duration::from_secs(3600),
    )
    .unwrap();

    let plans = plans(order_count, &mut rng);
    let mut progress: Vec<Progress> = vec![Progress::default(); plans.len()];
    let mut placed: Vec<Option<String>> = vec![None; plans.len()];
    let mut kills = 0;
    let started = tokio::time::Instant::now();
    let mut next_kill = started + Duration::from_millis(rng.random_range(200..1000));
    let config = isolation.config(&[]);
    let tokens: Vec<String> = plans
        .iter()
        .map(|plan| {
            let roles = [commerce::auth::Role::Customer];
            commerce::auth::mint_token(&config.auth, &plan.customer, &roles, Duration::from_secs(3600))
                .unwrap()
        })
        .collect();
    // Place the orders eight at a time; kill the service whenever the schedule
    // says, while orders are placed and then while their sagas run.
    while placed.iter().any(Option::is_none) || kills < max_kills {
        let pending: Vec<usize> = (0..plans.len())
            .filter(|i| placed[*i].is_none())
            .take(8)
            .collect();
        let batch = pending.iter().map(|&i| {
            let (channel, token, plan, mut state) = (&channel, &tokens[i], &plans[i], progress[i].clone());
            async move {
                let outcome =
                    tokio::time::timeout(Duration::from_secs(3), place(channel, token, plan, &mut state));
                (i, outcome.await.ok().flatten(), state)
            }
        });
        for (i, order_id, state) in futures::future::join_all(batch).await {
            progress[i] = state;
            placed[i] = order_id;
        }
        if pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if tokio::time::Instant::now() >= next_kill && kills < max_kills {
            service.kill9().await;
            kills += 1;
            // Sometimes the replacement comes up at once, sometimes after a pause.
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
            service = spawn(&["serve"], &env, log.clone(), port);
            channel = service.ready().await;
            next_kill = tokio::time::Instant::now() + Duration::from_millis(rng.random_range(200..1000));
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "orders could not be placed in time"
        );
    }
    let order_ids: Vec<String> = placed.into_iter().flatten().collect();
    wait_terminal(&channel, &admin, Duration::from_secs(60)).await;
    // The read models, projected across the kills, equal a rebuild from the events.
    let violations = check_outcome_and_read_models(&isolation, &stubs, &order_ids).await;
    println!(
        "kill test: {} orders, {kills} kills, stub failure rate 0.1, {violations} violations (seed {seed})",
        order_ids.len()
    );
    assert_eq!(order_ids.len(), order_count);
    assert_eq!(
        violations,
        0,
        "see VIOLATION lines; seed {seed}; service log {}",
        log.display()
    );
    drop(stubs_proc);
}
