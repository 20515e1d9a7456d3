//! Retention on a running service, both backends: finished sagas (with their
//! steps, attempts and operator actions), idempotency keys and dead letters
//! older than their age go; younger ones, unfinished
//! sagas and every event stay; a retry inside the window still gets the first
//! answer; a dry run deletes nothing; one replica at a time runs the job; and
//! `commerce purge [--dry-run]` does the same from the command line.

use std::{process::Output, time::Duration};

use chrono::{TimeDelta, Utc};
use commerce::{
    app::retention::{LEADER_KEY, PurgeReport},
    bus::{Delivery, Partition, PartitionGroup},
    db::Db,
    proto::commerce::v1::{CreateOrderRequest, GetSagaRequest, Order, SagaStatus},
};
use tonic::Code;

use crate::support::{
    app::{Backend, TestApp, authed, spawn_app_with},
    orders::{create_order, fill_cart, order_request},
    rest::http_get,
    saga::wait_saga,
    store::count_with,
};

/// Every age one day, so that a run at `split + 1 day` cuts at `split`.
const ONE_DAY: &[(&str, &str)] = &[
    ("SAGA_RETRY_ATTEMPTS", "0"),
    ("RETENTION_INTERVAL_SECONDS", "0"),
    ("RETENTION_SAGAS_DAYS", "1"),
    ("RETENTION_IDEMPOTENCY_HOURS", "24"),
    ("RETENTION_DEAD_LETTERS_DAYS", "1"),
    ("RETENTION_BATCH_SIZE", "2"),
];

/// An order of `customer` (key `<customer>-key`) and the request that made it.
async fn order(app: &TestApp, customer: &str, payment_method: &str) -> (CreateOrderRequest, Order) {
    let token = app.customer(customer);
    let cart = fill_cart(&app.channel, &token, &[("book", 1, "10.00")]).await;
    let request = CreateOrderRequest {
        payment_method: payment_method.into(),
        ..order_request(&cart.cart_id, &format!("{customer}-key"))
    };
    let order = create_order(app, &token, request.clone()).await.unwrap();
    (request, order)
}

async fn rows(db: &Db, table: &'static str, id: &str) -> i64 {
    let (pg, lite) = match table {
        "saga_steps" => (
            "SELECT count(*) FROM saga_steps WHERE saga_id::text = $1",
            "SELECT count(*) FROM saga_steps WHERE saga_id = ?1",
        ),
        "saga_attempts" => (
            "SELECT count(*) FROM saga_attempts WHERE saga_id::text = $1",
            "SELECT count(*) FROM saga_attempts WHERE saga_id = ?1",
        ),
        "idempotency_keys" => (
            "SELECT count(*) FROM idempotency_keys WHERE customer_id = $1",
            "SELECT count(*) FROM idempotency_keys WHERE customer_id = ?1",
        ),
        _ => unreachable!("{table}"),
    };
    count_with(db, pg, lite, id).await
}

async fn saga_code(app: &TestApp, saga_id: &str) -> Code {
    let request = GetSagaRequest {
        saga_id: saga_id.into(),
    };
    match app.sagas().get_saga(authed(request, &app.admin())).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

async fn dead_letter(app: &TestApp, note: &str) {
    let group = PartitionGroup::new("retention-test", Partition(0));
    app.app.bus.create_group(group).await.unwrap();
    let poison = Delivery {
        partition: Partition(0),
        id: "0-1".into(),
        deliveries: 5,
        raw: format!("not an event: {note}"),
    };
    app.app
        .bus
        .dead_letter("retention-test", &poison, note)
        .await
        .unwrap();
}

#[tokio::test]
async fn data_past_its_age_goes_data_inside_stays_and_a_retry_inside_the_window_gets_the_first_answer() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, ONE_DAY).await;
        let db = app.app.backends.db.clone();

        // Before the split: a completed, a compensated and a FAILED saga, a dead letter.
        let (_, ann) = order(&app, "ann", "pm_card_visa").await;
        let (_, bob) = order(&app, "bob", "pm_card_declined").await;
        let (_, cat) = order(&app, "cat", "pm_transient_9").await;
        wait_saga(&app, &ann.saga_id, SagaStatus::Completed).await;
        wait_saga(&app, &bob.saga_id, SagaStatus::Compensated).await;
        wait_saga(&app, &cat.saga_id, SagaStatus::Failed).await;
        dead_letter(&app, "old").await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let split = Utc::now();
        tokio::time::sleep(Duration::from_millis(20)).await;

        // After it: a completed saga and a dead letter, inside every window.
        let (dan_request, dan) = order(&app, "dan", "pm_card_visa").await;
        wait_saga(&app, &dan.saga_id, SagaStatus::Completed).await;
        dead_letter(&app, "new").await;

        let (mut old_steps, mut old_attempts) = (0, 0);
        for o in [&ann, &bob] {
            old_steps += rows(&db, "saga_steps", &o.saga_id).await;
            old_attempts += rows(&db, "saga_attempts", &o.saga_id).await;
        }
        let old_events = app
            .app
            .events
            .read_stream(ann.order_id.parse().unwrap(), 1)
            .await
            .unwrap();

        // The dry run counts what would go and deletes nothing.
        let now = split + TimeDelta::days(1);
        let dry = app.app.retention.run(now, true).await.unwrap().unwrap();
        let expected = |report: &PurgeReport| {
            (
                report.sagas.sagas,
                report.sagas.steps as i64,
                report.sagas.attempts as i64,
                report.sagas.operator_actions,
                report.idempotency_keys,
                report.dead_letters,
            )
        };
        assert_eq!(
            expected(&dry),
            (2, old_steps, old_attempts, 0, 3, 1),
            "{backend:?}"
        );
        assert_eq!(dry.cutoffs.sagas, split);
        assert_eq!(
            saga_code(&app, &ann.saga_id).await,
            Code::Ok,
            "the dry run deleted a saga"
        );
        assert_eq!(rows(&db, "idempotency_keys", "ann").await, 1);
        assert_eq!(app.app.bus.dead_letters(10).await.unwrap().len(), 2);

        // The run deletes exactly that, in batches of two.
        let done = app.app.retention.run(now, false).await.unwrap().unwrap();
        assert_eq!(expected(&done), expected(&dry), "{backend:?}");
        assert_eq!(saga_code(&app, &ann.saga_id).await, Code::NotFound);
        assert_eq!(saga_code(&app, &bob.saga_id).await, Code::NotFound);
        assert_eq!(
            saga_code(&app, &cat.saga_id).await,
            Code::Ok,
            "a FAILED saga is never purged"
        );
        assert_eq!(saga_code(&app, &dan.saga_id).await, Code::Ok);
        assert_eq!(rows(&db, "saga_steps", &ann.saga_id).await, 0);
        assert_eq!(rows(&db, "saga_attempts", &ann.saga_id).await, 0);
        assert!(rows(&db, "saga_attempts", &dan.saga_id).await > 0);
        for (customer, kept) in [("ann", 0), ("bob", 0), ("cat", 0), ("dan", 1)] {
            assert_eq!(rows(&db, "idempotency_keys", customer).await, kept, "{customer}");
        }
        let letters = app.app.bus.dead_letters(10).await.unwrap();
        assert_eq!(letters.len(), 1);
        assert!(letters[0].raw.ends_with("new"), "{}", letters[0].raw);

        // The order's events are untouched, and its read model still answers.
        let events = app
            .app
            .events
            .read_stream(ann.order_id.parse().unwrap(), 1)
            .await
            .unwrap();
        assert_eq!(events, old_events);
        let ann_now = app
            .orders()
            .get_order(authed(
                commerce::proto::commerce::v1::GetOrderRequest {
                    order_id: ann.order_id.clone(),
                    ..Default::default()
                },
                &app.customer("ann"),
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(ann_now.order.unwrap().order_id, ann.order_id);

        // A retry inside the window gets the first answer: the same order.
        let again = create_order(&app, &app.customer("dan"), dan_request)
            .await
            .unwrap();
        assert_eq!(again.order_id, dan.order_id);

        // Nothing is left to purge; the run is on /metrics.
        let twice = app.app.retention.run(now, false).await.unwrap().unwrap();
        assert!(twice.tables().iter().all(|(_, n)| *n == 0), "{twice:?}");
        let metrics = http_get(app.port, "/metrics").await;
        assert!(
            metrics.contains("retention_purged_rows_total{table=\"sagas\"}"),
            "{metrics}"
        );
        assert!(
            metrics.contains("retention_last_run_timestamp_seconds"),
            "{metrics}"
        );

        // One replica at a time: while another session leads, a run does nothing.
        if let Db::Postgres(_) = db {
            let other = db.try_lead(LEADER_KEY).await.unwrap().expect("free");
            assert_eq!(app.app.retention.run(now, false).await.unwrap(), None);
            other.release().await;
            assert!(app.app.retention.run(now, false).await.unwrap().is_some());
        }
    }
}

/// `commerce purge <args>` against `app`'s database and Redis prefix, with every age `age`.
fn purge(app: &TestApp, age_days: &str, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_commerce"))
        .arg("purge")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .envs(&app.isolation.vars)
        .env("RETENTION_SAGAS_DAYS", age_days)
        .env("RETENTION_IDEMPOTENCY_HOURS", "24")
        .env("RETENTION_DEAD_LETTERS_DAYS", "14")
        .output()
        .expect("run commerce purge")
}

#[tokio::test]
async fn commerce_purge_dry_run_prints_what_would_go_and_purge_deletes_it() {
    for backend in Backend::all() {
        let app = spawn_app_with(
            backend,
            &[("SAGA_RETRY_ATTEMPTS", "0"), ("RETENTION_INTERVAL_SECONDS", "0")],
        )
        .await;
        let (_, ann) = order(&app, "ann", "pm_card_visa").await;
        let (_, cat) = order(&app, "cat", "pm_transient_9").await;
        wait_saga(&app, &ann.saga_id, SagaStatus::Completed).await;
        wait_saga(&app, &cat.saga_id, SagaStatus::Failed).await;
        let events = app
            .app
            .events
            .read_stream(ann.order_id.parse().unwrap(), 1)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;

        // Sagas older than 10 ms would go: ann's (finished), never cat's (FAILED).
        let dry = purge(&app, "0.0000001", &["--dry-run"]);
        let stdout = String::from_utf8_lossy(&dry.stdout);
        assert!(
            dry.status.success(),
            "{backend:?}: {}",
            String::from_utf8_lossy(&dry.stderr)
        );
        assert!(stdout.contains("dry run: nothing deleted"), "{stdout}");
        let line = |name: &str| {
            stdout
                .lines()
                .find(|l| l.split_whitespace().next() == Some(name))
                .unwrap_or_else(|| panic!("no {name} line in {stdout}"))
                .split_whitespace()
                .nth(1)
                .unwrap()
                .to_string()
        };
        assert_eq!(line("sagas"), "1", "{stdout}");
        assert_eq!(line("idempotency_keys"), "0", "{stdout}");
        assert_eq!(
            saga_code(&app, &ann.saga_id).await,
            Code::Ok,
            "--dry-run deleted a saga"
        );

        let done = purge(&app, "0.0000001", &[]);
        let stdout = String::from_utf8_lossy(&done.stdout);
        assert!(
            done.status.success(),
            "{backend:?}: {}",
            String::from_utf8_lossy(&done.stderr)
        );
        assert!(stdout.contains("deleted"), "{stdout}");
        assert_eq!(saga_code(&app, &ann.saga_id).await, Code::NotFound);
        assert_eq!(saga_code(&app, &cat.saga_id).await, Code::Ok);
        let after = app
            .app
            .events
            .read_stream(ann.order_id.parse().unwrap(), 1)
            .await
            .unwrap();
        assert_eq!(after, events, "the order's events are never purged");
    }
}
