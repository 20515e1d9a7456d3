//! A test leaves nothing behind: once a test app is dropped, none of its
//! background tasks touches its database or Redis keys again, so the
//! isolation's cleanup is final even while the test's runtime goes on (the
//! next backend of a loop, a second app).

use std::time::Duration;

use commerce::projections::order_detail::OrderDetail;

use crate::support::{
    app::{Backend, keys_of, spawn_app_with, wait_for_consumer_groups},
    orders::{NO_SAGA, create_order, filled_cart, order_request},
    read_side::{ReadSideFixture, spawn},
};

#[tokio::test]
async fn a_dropped_test_app_leaves_no_redis_key_behind_while_the_runtime_goes_on() {
    // Keys exist with Redis only; the embedded backend's file goes with its temp dir.
    if Backend::from_env() != Backend::Real {
        return;
    }
    let app = spawn_app_with(Backend::Real, NO_SAGA).await;
    let prefix = app.config.redis.key_prefix.clone();
    let client = redis::Client::open(app.config.redis.url.clone().unwrap()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    // Traffic: the relay publishes to the event stream, the projections read it as groups.
    let alice = app.customer("alice");
    let cart = filled_cart(&app, &alice).await;
    create_order(&app, &alice, order_request(&cart, "leftovers"))
        .await
        .unwrap();
    wait_for_consumer_groups(&redis, &prefix, 3).await;
    drop(app);
    // What a later step of the same test does: the runtime runs on. A task of
    // the dropped app still alive would now see its stream gone and act on it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let left = keys_of(&mut redis, &prefix).await;
    assert!(left.is_empty(), "left behind after the cleanup: {left:?}");
}

#[tokio::test]
async fn a_dropped_read_side_fixture_leaves_no_redis_key_behind_while_the_runtime_goes_on() {
    if Backend::from_env() != Backend::Real {
        return;
    }
    let fixture = ReadSideFixture::new(Backend::Real).await;
    let config = fixture.config();
    let prefix = config.redis.key_prefix.clone();
    let client = redis::Client::open(config.redis.url.clone().unwrap()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let projector = fixture.projector("leftovers", Duration::from_secs(3600));
    let _runner = spawn::<OrderDetail>(&projector, &fixture.shutdown);
    wait_for_consumer_groups(&redis, &prefix, 1).await;
    // Dropped without a shutdown: its trigger goes with it.
    drop(fixture);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let left = keys_of(&mut redis, &prefix).await;
    assert!(left.is_empty(), "left behind after the cleanup: {left:?}");
}
