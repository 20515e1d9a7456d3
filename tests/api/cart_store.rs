//! The cart store conformance suite: every scenario runs against the
//! in-process store, and against Redis when the real backends are configured
//! (each Redis run under its own key prefix, removed afterwards).

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use commerce::{
    app::cart::{AddItem, CartApp, UpdateItemQuantity},
    auth::{Principal, Role},
    domain::{
        cart::{Cart, CartChange, CartStatus, NewItem},
        money::Currency,
    },
    store::cart::{CartStats, CartStore, CartStoreError, MemoryCartStore, RedisCartStore},
};
use uuid::Uuid;

use crate::support::{
    app::{Backend, Isolation},
    proxy::Proxy,
};

const TTL: Duration = Duration::from_secs(3600);

/// Each store to test, with what keeps its resources alive: in-process, and
/// on a single Redis and a Redis Cluster when they are configured.
async fn stores() -> Vec<(&'static str, Arc<dyn CartStore>, Option<RedisScope>)> {
    let mut stores: Vec<(&'static str, Arc<dyn CartStore>, Option<RedisScope>)> =
        vec![("memory", Arc::new(MemoryCartStore::new()), None)];
    let mut redis = Vec::new();
    if Backend::from_env() == Backend::Real && std::env::var("TEST_REDIS_URL").is_ok() {
        redis.push(("redis", Backend::Real));
    }
    if let Some(cluster) = Backend::cluster() {
        redis.push(("redis-cluster", cluster));
    }
    for (name, backend) in redis {
        let isolation = Isolation::new(backend).await;
        let config = isolation.config(&[]);
        let pool = commerce::db::redis_pool(&config.redis)
            .unwrap()
            .expect("redis configured");
        let store = RedisCartStore::new(pool.clone(), &config.redis.key_prefix, config.redis.pool_timeout);
        let scope = RedisScope {
            pool,
            prefix: config.redis.key_prefix.clone(),
            _isolation: isolation,
        };
        stores.push((name, Arc::new(store), Some(scope)));
    }
    stores
}

/// The Redis behind a store under test, to look at its keys.
struct RedisScope {
    pool: commerce::redis_conn::RedisPool,
    prefix: String,
    _isolation: Isolation,
}

impl RedisScope {
    /// Milliseconds to live of `key` under the prefix (-2 when absent).
    async fn pttl(&self, key: &str) -> i64 {
        let mut conn = self.pool.get().await.unwrap();
        deadpool_redis::redis::cmd("PTTL")
            .arg(format!("{}:{key}", self.prefix))
            .query_async(&mut conn)
            .await
            .unwrap()
    }

    /// Where `customer`'s cart keys are, under the prefix: `cart`, or on a
    /// cluster `cart:{sNN}` with the customer's shard as the hash tag.
    fn cart_keys_of(&self, customer: &str) -> String {
        if self.pool.is_cluster() {
            format!("cart:{{s{:02x}}}", commerce::domain::cart::shard_of(customer))
        } else {
            "cart".to_string()
        }
    }
}

fn hours(n: i64) -> chrono::Duration {
    chrono::Duration::hours(n)
}

fn with_item(mut cart: Cart, product: &str, quantity: i64, price: &str, now: DateTime<Utc>) -> Cart {
    let item = NewItem::parse(product, "Widget", quantity, price, cart.currency).unwrap();
    cart.apply(&CartChange::AddItem(item), now, TTL).unwrap();
    cart
}

fn assert_balanced(stats: &CartStats, name: &str) {
    assert_eq!(
        stats.created,
        stats.active + stats.converted + stats.deleted + stats.abandoned,
        "{name}: {stats:?}"
    );
}

#[tokio::test]
async fn a_customer_has_one_active_cart_and_others_have_their_own() {
    for (name, store, _guard) in stores().await {
        let now = Utc::now();
        let first = Cart::new("alice", Currency::Eur, now, TTL);
        let (created, is_new) = store.create_or_get(&first, now).await.unwrap();
        assert!(is_new, "{name}");
        assert_eq!(created, first, "{name}");

        let again = Cart::new("alice", Currency::Usd, now, TTL);
        let (existing, is_new) = store.create_or_get(&again, now).await.unwrap();
        assert!(!is_new, "{name}");
        assert_eq!(existing.id, first.id, "{name}");
        assert_eq!(existing.currency, Currency::Eur, "{name}");

        let bob = Cart::new("bob", Currency::Usd, now, TTL);
        assert!(store.create_or_get(&bob, now).await.unwrap().1, "{name}");
        assert_eq!(
            store.active_for("alice", now).await.unwrap().unwrap().id,
            first.id
        );
        assert_eq!(store.active_for("bob", now).await.unwrap().unwrap().id, bob.id);
        assert_eq!(store.get(first.id, now).await.unwrap(), Some(first.clone()));
        assert_eq!(store.get(Uuid::new_v4(), now).await.unwrap(), None, "{name}");
        assert_eq!(store.active_for("carol", now).await.unwrap(), None, "{name}");
    }
}

#[tokio::test]
async fn replace_is_a_compare_and_set_on_the_version_that_refreshes_the_expiry() {
    for (name, store, _guard) in stores().await {
        let now = Utc::now();
        let cart = Cart::new("alice", Currency::Usd, now, TTL);
        store.create_or_get(&cart, now).await.unwrap();

        let later = now + chrono::Duration::minutes(50);
        let changed = with_item(cart.clone(), "sku", 2, "9.99", later);
        assert_eq!(changed.version, 2);
        // The refusal carries the stored cart, to apply the change to again.
        match store.replace(&changed, 7, later).await {
            Err(CartStoreError::Conflict {
                actual: 1,
                current: Some(current),
            }) => assert_eq!(*current, cart, "{name}"),
            other => panic!("{name}: expected a conflict at 1, got {other:?}"),
        }
        store.replace(&changed, 1, later).await.unwrap();
        // The same write again is stale now.
        assert!(matches!(
            store.replace(&changed, 1, later).await,
            Err(CartStoreError::Conflict { actual: 2, .. })
        ));
        // Alive past the original expiry, because the change refreshed it.
        let after_first_ttl = now + chrono::Duration::minutes(70);
        let stored = store.get(cart.id, after_first_ttl).await.unwrap().expect(name);
        assert_eq!(stored, changed, "{name}");
        assert_eq!(
            store.active_for("alice", after_first_ttl).await.unwrap(),
            Some(changed)
        );
    }
}

#[tokio::test]
async fn an_expired_cart_is_gone_counts_as_abandoned_and_makes_room_for_a_new_one() {
    for (name, store, scope) in stores().await {
        let now = Utc::now();
        let cart = Cart::new("alice", Currency::Usd, now, TTL);
        store.create_or_get(&cart, now).await.unwrap();
        if let Some(redis) = &scope {
            // Redis reclaims the cart and its index entry by itself at expiry.
            let ttl_ms = TTL.as_millis() as i64;
            let keys = redis.cart_keys_of("alice");
            for key in [format!("{keys}:id:{}", cart.id), format!("{keys}:owner:alice")] {
                let pttl = redis.pttl(&key).await;
                assert!(pttl > ttl_ms - 60_000 && pttl <= ttl_ms, "{key}: {pttl}");
            }
        }
        let expired = now + hours(1);

        assert_eq!(store.get(cart.id, expired).await.unwrap(), None, "{name}");
        assert_eq!(store.active_for("alice", expired).await.unwrap(), None, "{name}");
        let changed = with_item(cart.clone(), "sku", 1, "1", expired);
        assert!(matches!(
            store.replace(&changed, 1, expired).await,
            Err(CartStoreError::NotFound)
        ));
        assert!(matches!(
            store.delete(cart.id, "alice", None, expired).await,
            Err(CartStoreError::NotFound)
        ));

        let fresh = Cart::new("alice", Currency::Usd, expired, TTL);
        let (got, is_new) = store.create_or_get(&fresh, expired).await.unwrap();
        assert!(is_new, "{name}");
        assert_eq!(got.id, fresh.id);

        let stats = store.stats(expired).await.unwrap();
        assert_eq!(
            (stats.created, stats.active, stats.abandoned),
            (2, 1, 1),
            "{name}"
        );
        assert_balanced(&stats, name);
        // Sweeping again finds nothing new.
        assert_eq!(store.sweep(expired).await.unwrap(), 0, "{name}");
    }
}

#[tokio::test]
async fn conversion_frees_the_active_slot_freezes_the_cart_and_adds_to_the_converted_value() {
    for (name, store, _guard) in stores().await {
        let now = Utc::now();
        let cart = Cart::new("alice", Currency::Usd, now, TTL);
        store.create_or_get(&cart, now).await.unwrap();
        let cart = with_item(cart, "sku", 3, "10.05", now);
        store.replace(&cart, 1, now).await.unwrap();

        let mut converted = cart.clone();
        converted.convert(Uuid::new_v4(), now, TTL).unwrap();
        store.replace(&converted, cart.version, now).await.unwrap();

        assert_eq!(store.active_for("alice", now).await.unwrap(), None, "{name}");
        let stored = store.get(cart.id, now).await.unwrap().expect(name);
        assert_eq!(stored.status, CartStatus::Converted);
        assert_eq!(stored.order_id, converted.order_id);
        // Converting twice is refused by the version (and by the status).
        assert!(matches!(
            store.replace(&converted, cart.version, now).await,
            Err(CartStoreError::Conflict { .. })
        ));
        assert!(matches!(
            store.replace(&converted, converted.version, now).await,
            Err(CartStoreError::Conflict { .. })
        ));
        // A converted cart never expires into "abandoned".
        let stats = store.stats(now + hours(2)).await.unwrap();
        assert_eq!(
            (stats.created, stats.converted, stats.abandoned),
            (1, 1, 0),
            "{name}"
        );
        let usd = stats.converted_value[&Currency::Usd];
        assert_eq!((usd.carts, usd.minor_units), (1, 3015), "{name}");
        assert_balanced(&stats, name);
        // The customer can start over.
        let next = Cart::new("alice", Currency::Usd, now, TTL);
        assert!(store.create_or_get(&next, now).await.unwrap().1, "{name}");
    }
}

#[tokio::test]
async fn delete_checks_the_version_when_given_and_counts_only_active_carts() {
    for (name, store, _guard) in stores().await {
        let now = Utc::now();
        let cart = Cart::new("alice", Currency::Usd, now, TTL);
        store.create_or_get(&cart, now).await.unwrap();
        assert!(matches!(
            store.delete(cart.id, "alice", Some(5), now).await,
            Err(CartStoreError::Conflict { actual: 1, .. })
        ));
        // Only the owner's delete finds it.
        assert!(matches!(
            store.delete(cart.id, "mallory", Some(1), now).await,
            Err(CartStoreError::NotFound)
        ));
        assert_eq!(
            store.get(cart.id, now).await.unwrap().map(|c| c.id),
            Some(cart.id)
        );
        store.delete(cart.id, "alice", Some(1), now).await.unwrap();
        assert_eq!(store.get(cart.id, now).await.unwrap(), None, "{name}");
        assert_eq!(store.active_for("alice", now).await.unwrap(), None, "{name}");
        assert!(matches!(
            store.delete(cart.id, "alice", None, now).await,
            Err(CartStoreError::NotFound)
        ));

        // A converted cart can be deleted; it stays counted as converted.
        let bob = with_item(Cart::new("bob", Currency::Jpy, now, TTL), "sku", 2, "1500", now);
        let (created, _) = store
            .create_or_get(
                &Cart {
                    version: 1,
                    ..bob.clone()
                },
                now,
            )
            .await
            .unwrap();
        store.replace(&bob, created.version, now).await.unwrap();
        let mut converted = bob.clone();
        converted.convert(Uuid::new_v4(), now, TTL).unwrap();
        store.replace(&converted, bob.version, now).await.unwrap();
        store.delete(bob.id, "bob", None, now).await.unwrap();

        let stats = store.stats(now).await.unwrap();
        assert_eq!(
            (stats.created, stats.deleted, stats.converted, stats.active),
            (2, 1, 1, 0)
        );
        assert_eq!(stats.converted_value[&Currency::Jpy].minor_units, 3000, "{name}");
        assert_balanced(&stats, name);
    }
}

#[tokio::test]
async fn fifty_concurrent_adds_through_the_app_all_count() {
    for (name, store, _guard) in stores().await {
        let carts = CartApp::new(store, TTL);
        let alice = Principal {
            subject: "alice".into(),
            roles: vec![Role::Customer],
        };
        let (cart, _) = carts.create_cart(&alice, "").await.unwrap();
        let adds = (0..50).map(|_| {
            let (carts, alice) = (carts.clone(), alice.clone());
            let input = AddItem {
                cart_id: cart.id.to_string(),
                product_id: "sku".into(),
                product_name: "Widget".into(),
                quantity: 1,
                unit_price: "2.50".into(),
                expected_version: None,
            };
            tokio::spawn(async move { carts.add_item(&alice, input).await })
        });
        for add in futures::future::join_all(adds).await {
            add.unwrap().unwrap();
        }
        let cart = carts.get_active_cart(&alice).await.unwrap();
        assert_eq!(cart.items[0].quantity, 50, "{name}");
        assert_eq!(cart.version, 51, "{name}: one version per add, no gaps");
        assert_eq!(cart.subtotal().unwrap().to_string(), "125.00", "{name}");
    }
}

fn customer(name: &str) -> Principal {
    Principal {
        subject: name.into(),
        roles: vec![Role::Customer],
    }
}

fn add(cart: &Cart, product: &str, quantity: i64) -> AddItem {
    AddItem {
        cart_id: cart.id.to_string(),
        product_id: product.into(),
        product_name: "Widget".into(),
        quantity,
        unit_price: "2.50".into(),
        expected_version: None,
    }
}

/// Each cart mutation is one Redis round trip (one command: the
/// compare-and-set script) when this replica saw the cart last; when another
/// replica wrote in between, one more (the refusal carries the stored cart),
/// and no change is lost. Counted by a proxy that parses what goes to Redis.
#[tokio::test]
async fn a_cart_mutation_is_one_redis_round_trip() {
    if Backend::from_env() != Backend::Real || std::env::var("TEST_REDIS_URL").is_err() {
        // Round trips exist on Redis only; the conformance tests above cover
        // the embedded store.
        return;
    }
    let isolation = Isolation::new(Backend::Real).await;
    let config = isolation.config(&[]);
    let settings = &config.redis;
    let (proxy, proxied) = Proxy::for_url(settings.url.as_deref().unwrap()).await;
    let replica = |url: Option<String>| {
        let settings = commerce::config::RedisSettings {
            url,
            ..settings.clone()
        };
        let pool = commerce::db::redis_pool(&settings).unwrap().unwrap();
        let store = RedisCartStore::new(pool, &settings.key_prefix, settings.pool_timeout);
        CartApp::new(Arc::new(store), TTL)
    };
    let here = replica(Some(proxied));
    let other = replica(settings.url.clone());
    let alice = customer("alice");

    // Warm-up: the connection and every script loaded once.
    let (warm, _) = here.create_cart(&customer("warm-up"), "").await.unwrap();
    here.add_item(&customer("warm-up"), add(&warm, "sku", 1))
        .await
        .unwrap();
    here.delete_cart(&customer("warm-up"), &warm.id.to_string(), None)
        .await
        .unwrap();

    let (cart, _) = here.create_cart(&alice, "").await.unwrap();
    let id = cart.id.to_string();
    let before = proxy.redis_commands();
    here.add_item(&alice, add(&cart, "apple", 1)).await.unwrap();
    here.add_item(&alice, add(&cart, "apple", 2)).await.unwrap();
    here.add_item(&alice, add(&cart, "pear", 1)).await.unwrap();
    let input = UpdateItemQuantity {
        cart_id: id.clone(),
        product_id: "pear".into(),
        quantity: 4,
        expected_version: Some(4),
    };
    here.update_item_quantity(&alice, input).await.unwrap();
    here.remove_item(&alice, &id, "pear", Some(5)).await.unwrap();
    assert_eq!(
        proxy.redis_commands() - before,
        5,
        "five mutations, five round trips"
    );

    // Another replica changes the cart: this one's basis is stale.
    other.add_item(&alice, add(&cart, "fig", 7)).await.unwrap();
    let before = proxy.redis_commands();
    let after = here.add_item(&alice, add(&cart, "apple", 1)).await.unwrap();
    assert_eq!(
        proxy.redis_commands() - before,
        2,
        "a refused compare-and-set, then the write"
    );
    let lines: Vec<_> = after
        .items
        .iter()
        .map(|i| (i.product_id.as_str(), i.quantity))
        .collect();
    assert_eq!(
        lines,
        [("apple", 4), ("fig", 7)],
        "the other replica's change kept"
    );
    assert_eq!(after.version, 8);

    // Checkout reads the cart afresh (one round trip); the conversion is one.
    let before = proxy.redis_commands();
    let snapshot = here.checkout_snapshot(&alice, cart.id).await.unwrap();
    here.mark_converted(cart.id, snapshot.version, Uuid::new_v4())
        .await
        .unwrap();
    assert_eq!(proxy.redis_commands() - before, 2);

    // Deleting reads nothing first, and refuses anyone but the owner.
    let before = proxy.redis_commands();
    let err = here
        .delete_cart(&customer("mallory"), &id, None)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "cart not found");
    here.delete_cart(&alice, &id, None).await.unwrap();
    assert_eq!(proxy.redis_commands() - before, 2, "one round trip per delete");
    assert!(
        other.get_cart(&alice, &id).await.is_err(),
        "deleted for every replica"
    );
}
