//! Crypto-shredding: per-customer keys on every backend, sealed event
//! payloads, and ForgetCustomer over gRPC.

use std::sync::Arc;

use commerce::{
    privacy::{ERASED, SEALED_FIELD, SqlKeyStore, Vault, cipher::DEVELOPMENT_MASTER_KEY, cipher::MasterKey},
    proto::commerce::v1::ForgetCustomerRequest,
};
use serde_json::json;
use tonic::Code;

use crate::helpers::{Backend, Isolation, authed, spawn_app_with};

fn master() -> MasterKey {
    MasterKey::from_hex(DEVELOPMENT_MASTER_KEY).unwrap()
}

#[tokio::test]
async fn keys_are_per_customer_and_forgetting_shreds_only_that_customer_on_every_backend() {
    for backend in Backend::all() {
        let isolation = Isolation::new(backend).await;
        let db = isolation.backends().await.db;
        // Two vaults on one database behave like two replicas.
        let vault = Vault::new(Arc::new(SqlKeyStore::new(db.clone())), master());
        let replica = Vault::new(Arc::new(SqlKeyStore::new(db.clone())), master());

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
    let vault = Vault::new(
        Arc::new(SqlKeyStore::new(isolation.backends().await.db)),
        master(),
    );
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
