//! Crypto-shredding: per-customer keys on every backend, sealed event
//! payloads, ForgetCustomer over gRPC, and the round trip of an order whose
//! customer is forgotten.

use commerce::startup::Stores;
use commerce::store::event_store::Upcasters;
use std::time::Duration;

use commerce::{
    app::queries::HistoryEntry,
    bus::{Partition, PartitionGroup},
    db::Db,
    privacy::{
        ERASED, SEALED_FIELD, Vault,
        cipher::{DEVELOPMENT_MASTER_KEY, MasterKey},
    },
    proto::commerce::v1::{ForgetCustomerRequest, OrderStatus as PbStatus},
};
use serde_json::json;
use tonic::Code;

use crate::support::{
    app::{Backend, Isolation, TestApp, authed, spawn_app_with},
    orders::{NO_SAGA, cancel, create_order, customer, filled_cart, order_request},
};

fn master() -> MasterKey {
    MasterKey::from_hex(DEVELOPMENT_MASTER_KEY).unwrap()
}

#[tokio::test]
async fn keys_are_per_customer_and_forgetting_shreds_only_that_customer_on_every_backend() {
    for backend in Backend::all() {
        let isolation = Isolation::new(backend).await;
        let db = isolation.backends().await.db;
        // Two vaults on one database behave like two replicas.
        let vault = Vault::new(Stores::on(&db, Upcasters::none(), true).customer_keys, master());
        let replica = Vault::new(Stores::on(&db, Upcasters::none(), true).customer_keys, master());

        let (a, b) = tokio::join!(
            vault.encrypt("alice", b"1 Main St"),
            replica.encrypt("alice", b"2 Side St")
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        let bobs = vault.encrypt("bob", b"9 Elm St").await.unwrap();
        // Whichever replica created alice's key first, both use that one key.
        assert_eq!(
            replica.decrypt("alice", &a).await.unwrap().as_deref(),
            Some(&b"1 Main St"[..]),
            "{backend:?}"
        );
        assert_eq!(
            vault.decrypt("alice", &b).await.unwrap().as_deref(),
            Some(&b"2 Side St"[..])
        );
        // A ciphertext cannot be opened as someone else's.
        assert_eq!(vault.decrypt("bob", &a).await.unwrap(), None);

        let tombstone = vault.forget("alice", "admin-1", "GDPR request 42").await.unwrap();
        assert_eq!(
            (tombstone.forgotten_by.as_str(), tombstone.reason.as_str()),
            ("admin-1", "GDPR request 42")
        );
        assert_eq!(tombstone.keys_destroyed, 1);
        assert_eq!(vault.decrypt("alice", &a).await.unwrap(), None, "{backend:?}");
        assert_eq!(
            vault.decrypt("bob", &bobs).await.unwrap().as_deref(),
            Some(&b"9 Elm St"[..])
        );

        // Forgetting again changes nothing; a returning customer gets a new key,
        // and the old data stays shredded.
        let again = vault.forget("alice", "admin-2", "repeat").await.unwrap();
        assert_eq!(again.forgotten_at, tombstone.forgotten_at);
        let fresh = vault.encrypt("alice", b"new address").await.unwrap();
        assert_eq!(
            vault.decrypt("alice", &fresh).await.unwrap().as_deref(),
            Some(&b"new address"[..])
        );
        assert_eq!(vault.decrypt("alice", &a).await.unwrap(), None);
        assert_eq!(vault.tombstone("alice").await.unwrap().unwrap().keys_destroyed, 1);
    }
}

#[tokio::test]
async fn sealed_event_payloads_open_until_the_customer_is_forgotten_then_read_as_erased() {
    let isolation = Isolation::new(Backend::Embedded).await;
    let db = isolation.backends().await.db;
    let vault = Vault::new(Stores::on(&db, Upcasters::none(), true).customer_keys, master());
    let original = json!({
        "order_id": "o-1",
        "customer_id": "carol",
        "personal": {
            "shipping_address": {"name": "Carol", "line1": "1 Main St", "city": "Springfield", "postal_code": "12345", "country": "US"},
            "payment_method": "pm_tok_visa",
        },
    });
    let mut stored = original.clone();
    assert!(vault.seal_personal("carol", &mut stored).await.unwrap());
    let text = stored.to_string();
    assert!(
        !text.contains("Main St") && !text.contains("pm_tok_visa"),
        "{text}"
    );
    assert_eq!(stored["personal"]["payment_method"], ERASED);
    // Sealing twice is a no-op (an event re-appended on retry stays as it was).
    assert!(!vault.seal_personal("carol", &mut stored.clone()).await.unwrap());

    let mut read = stored.clone();
    assert!(vault.open_personal(&mut read).await.unwrap());
    assert_eq!(read, original);

    vault.forget("carol", "admin-1", "erasure request").await.unwrap();
    let mut replayed = stored.clone();
    assert!(!vault.open_personal(&mut replayed).await.unwrap());
    assert!(replayed.get(SEALED_FIELD).is_none());
    assert_eq!(replayed["order_id"], "o-1");
    assert_eq!(replayed["personal"]["shipping_address"]["line1"], ERASED);
    assert_eq!(replayed["personal"]["payment_method"], ERASED);
}

#[tokio::test]
async fn forget_customer_is_admin_only_validated_and_shreds_the_key() {
    let app = spawn_app_with(Backend::from_env(), &[]).await;
    let sealed = app.app.privacy.encrypt("dave", b"secret address").await.unwrap();
    let request = |customer_id: &str, reason: &str| ForgetCustomerRequest {
        customer_id: customer_id.into(),
        reason: reason.into(),
    };
    let mut admin = app.admin_client();
    let refusals = [
        (tonic::Request::new(request("dave", "x")), Code::Unauthenticated),
        (
            authed(request("dave", "x"), &app.customer("dave")),
            Code::PermissionDenied,
        ),
        (
            authed(request("dave", "x"), &app.customer("mallory")),
            Code::PermissionDenied,
        ),
        (authed(request("", "x"), &app.admin()), Code::InvalidArgument),
        (authed(request("dave", "  "), &app.admin()), Code::InvalidArgument),
    ];
    for (req, code) in refusals {
        let status = admin.forget_customer(req).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        // Nothing was shredded.
        assert!(app.app.privacy.decrypt("dave", &sealed).await.unwrap().is_some());
    }
    let response = admin
        .forget_customer(authed(request("dave", "GDPR erasure #7"), &app.admin()))
        .await
        .unwrap()
        .into_inner();
    assert!(response.forgotten_at.is_some());
    assert_eq!(app.app.privacy.decrypt("dave", &sealed).await.unwrap(), None);
    let tombstone = app.app.privacy.tombstone("dave").await.unwrap().unwrap();
    assert_eq!(
        (tombstone.forgotten_by.as_str(), tombstone.reason.as_str()),
        ("admin-1", "GDPR erasure #7")
    );
}

/// Every stored event payload as text.
async fn stored_payloads(db: &Db) -> String {
    let rows: Vec<String> = match db {
        Db::Postgres(pool) => {
            sqlx::query_scalar("SELECT payload::text FROM events")
                .fetch_all(pool)
                .await
        }
        Db::Sqlite(pool) => {
            sqlx::query_scalar("SELECT payload FROM events")
                .fetch_all(pool)
                .await
        }
    }
    .unwrap();
    rows.join("\n")
}

/// The bus entries the relay published, as text, once there are `events` of
/// them: a group created now reads every entry still in the partitions.
async fn published_entries(app: &TestApp, events: usize) -> String {
    let bus = &app.app.bus;
    let groups: Vec<PartitionGroup> = (0..bus.partitions())
        .map(|k| PartitionGroup::new("privacy-audit", Partition(k)))
        .collect();
    for group in &groups {
        bus.create_group(*group).await.unwrap();
    }
    let mut entries = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while entries.len() < events {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay published {} of {events} events",
            entries.len()
        );
        for group in &groups {
            let read = bus
                .read_new(*group, "audit", 100, Duration::from_millis(50))
                .await
                .unwrap();
            entries.extend(read.into_iter().map(|d| d.raw));
        }
    }
    entries.join("\n")
}

#[tokio::test]
async fn an_order_of_a_forgotten_customer_still_replays_with_its_personal_fields_erased() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, NO_SAGA).await;
        let (erin, frank) = (app.customer("erin"), app.customer("frank"));
        let erins = create_order(&app, &erin, order_request(&filled_cart(&app, &erin).await, "k1"))
            .await
            .unwrap();
        let franks = create_order(
            &app,
            &frank,
            order_request(&filled_cart(&app, &frank).await, "k1"),
        )
        .await
        .unwrap();
        assert_eq!(erins.shipping_address.as_ref().unwrap().line1, "1 Analytical Way");

        // Stored, relayed and published only sealed.
        let db = &app.app.backends.db;
        let stored = stored_payloads(db).await;
        let published = published_entries(&app, 2).await;
        for (place, text) in [("events", stored), ("bus", published)] {
            assert!(text.contains(SEALED_FIELD), "{backend:?} {place}: {text}");
            for secret in ["Analytical", "Ada Lovelace", "N1 9GU", "pm_card_visa"] {
                assert!(!text.contains(secret), "{backend:?} {place} leaks {secret}");
            }
        }
        let id =
            |order: &commerce::proto::commerce::v1::Order| uuid::Uuid::parse_str(&order.order_id).unwrap();
        let loaded = app.app.orders.get(&customer("erin"), id(&erins)).await.unwrap();
        assert_eq!(
            (
                loaded.payment_method.as_str(),
                loaded.shipping_address.city.as_str()
            ),
            ("pm_card_visa", "London")
        );
        assert!(
            !format!("{loaded:?}").contains("London"),
            "Debug shows no address"
        );

        let forget = ForgetCustomerRequest {
            customer_id: "erin".into(),
            reason: "erasure request".into(),
        };
        app.admin_client()
            .forget_customer(authed(forget, &app.admin()))
            .await
            .unwrap();

        // The stream still replays: everything but the personal fields is there.
        let erased = app.app.orders.get(&customer("erin"), id(&erins)).await.unwrap();
        assert_eq!(erased.payment_method, ERASED, "{backend:?}");
        let address = &erased.shipping_address;
        for field in [
            &address.recipient_name,
            &address.line1,
            &address.city,
            &address.postal_code,
            &address.country,
        ] {
            assert_eq!(field, ERASED);
        }
        assert_eq!(
            (erased.total.to_string(), erased.items.len(), erased.version),
            ("44.98".to_string(), 2, 1)
        );
        // Commands keep working on the stream: the owner may still cancel.
        let cancelled = cancel(&app, &erin, &erins.order_id, "changed my mind")
            .await
            .unwrap();
        assert_eq!(cancelled.status, PbStatus::Cancelled as i32);
        assert_eq!(cancelled.shipping_address.unwrap().line1, ERASED);
        // Nobody else was forgotten.
        let other = app.app.orders.get(&customer("frank"), id(&franks)).await.unwrap();
        assert_eq!(other.shipping_address.line1, "1 Analytical Way");
        assert_read_side_shows_no_personal_data_of_erin(&app, &erins.order_id, &franks.order_id, backend)
            .await;
    }
}

/// The read side after erin was forgotten: her order reads as erased through
/// GetOrder and GetOrderHistory, frank's does not, and no read-model row ever
/// held either address in the clear.
async fn assert_read_side_shows_no_personal_data_of_erin(
    app: &TestApp,
    erins: &str,
    franks: &str,
    backend: Backend,
) {
    let queries = &app.app.queries;
    let erased = queries.get_order(&customer("erin"), erins, 2).await.unwrap();
    assert_eq!(erased.personal.shipping_address.line1, ERASED, "{backend:?}");
    assert_eq!(erased.personal.payment_method, ERASED);
    let kept = queries.get_order(&customer("frank"), franks, 1).await.unwrap();
    assert_eq!(
        kept.personal.shipping_address.line1, "1 Analytical Way",
        "{backend:?}"
    );
    assert_eq!(kept.personal.payment_method, "pm_card_visa");
    let history = queries.order_history(&customer("erin"), erins).await.unwrap();
    let created = history
        .iter()
        .find_map(|entry| match entry {
            HistoryEntry::Event(event) if event.event_type == "OrderCreated" => Some(event.payload.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(created["personal"]["shipping_address"]["line1"], ERASED);
    assert!(
        created.get(SEALED_FIELD).is_none(),
        "history shows no ciphertext: {created}"
    );
    let franks_history = queries.order_history(&customer("frank"), franks).await.unwrap();
    let HistoryEntry::Event(first) = &franks_history[0] else {
        panic!("history starts with an event")
    };
    assert_eq!(first.payload["personal"]["payment_method"], "pm_card_visa");

    // The projections have applied both orders by now (erin's cancel is v2).
    let db = &app.app.backends.db;
    let mut rows = String::new();
    for _ in 0..100 {
        rows = match db {
            Db::Postgres(pool) => {
                sqlx::query_scalar::<_, String>("SELECT personal::text FROM order_details")
                    .fetch_all(pool)
                    .await
            }
            Db::Sqlite(pool) => {
                sqlx::query_scalar::<_, String>("SELECT personal FROM order_details")
                    .fetch_all(pool)
                    .await
            }
        }
        .unwrap()
        .join("\n");
        if rows.matches(ERASED).count() >= 2 * 6 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        !rows.contains("Analytical") && !rows.contains("pm_card_visa"),
        "{backend:?}: {rows}"
    );
    assert!(rows.contains(ERASED), "{backend:?}: the projection ran: {rows}");
}
