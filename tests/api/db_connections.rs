//! Pooled PostgreSQL connections the server closed underneath the service (a
//! restart, a failover, an administrator's `pg_terminate_backend`): a
//! connection idle for longer than [`commerce::db::PING_IDLE_AFTER`] is
//! tested before use, in the pool and in the unit-of-work writers, which
//! keep theirs between batches. So once the service has not used them for
//! that long, the next order goes through without a failed call.

use std::time::Duration;

use commerce::{db::Db, proto::commerce::v1::SagaStatus};

use crate::support::{
    app::{Backend, Isolation, spawn_app_with},
    saga::{OrderSpec, place, wait_saga},
    wait_for,
};

#[tokio::test(flavor = "multi_thread")]
async fn an_order_after_every_database_connection_was_severed_goes_through() {
    let app = spawn_app_with(Backend::Real, &[]).await;
    let first = place(&app, "alice", OrderSpec::default()).await;
    wait_saga(&app, &first.saga_id, SagaStatus::Completed).await;

    let severed = sever(app.isolation.database_name().unwrap()).await;
    assert!(
        severed >= 2,
        "the pool's and a writer's connections were open: {severed}"
    );
    // The background loops (saga claims, relay, projections) may meet a dead
    // connection meanwhile; they log it and go on.
    tokio::time::sleep(commerce::db::PING_IDLE_AFTER + Duration::from_millis(500)).await;

    // `place` fails the test on any failed call: the cart, CreateOrder.
    let second = place(&app, "bob", OrderSpec::default()).await;
    wait_saga(&app, &second.saga_id, SagaStatus::Completed).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pool_connection_severed_while_idle_is_replaced_before_use() {
    let isolation = Isolation::new(Backend::Real).await;
    let db = Db::connect(&isolation.config(&[]).database).await.unwrap();
    let Db::Postgres(pool) = &db else {
        panic!("a PostgreSQL pool")
    };
    db.ping().await.unwrap();
    // A connection goes back to the pool after its statement, by a task of its own.
    wait_for("the connection back in the pool", || async {
        pool.num_idle() == 1
    })
    .await;

    assert_eq!(sever(isolation.database_name().unwrap()).await, 1);
    tokio::time::sleep(commerce::db::PING_IDLE_AFTER + Duration::from_millis(500)).await;
    db.ping()
        .await
        .expect("the severed connection is replaced, not used");
}

/// Terminates every connection to `database` (but the admin's own); how many.
async fn sever(database: &str) -> i64 {
    let admin = sqlx::PgPool::connect(&std::env::var("TEST_DATABASE_URL").unwrap())
        .await
        .unwrap();
    sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(database)
    .fetch_one(&admin)
    .await
    .unwrap()
}
