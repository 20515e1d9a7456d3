//! Conformance suite of the idempotency-key store (CreateOrder's keys), on
//! SQLite always and on PostgreSQL when TEST_DATABASE_URL is set.

use std::time::Duration;

use commerce::startup::Stores;
use commerce::store::{
    event_store::{ORDER_STREAM, StreamAppend, Upcasters},
    idempotency::{Claim, ClaimOutcome, IdempotencyCompletion},
    unit_of_work::UnitOfWork,
};
use serde_json::json;
use uuid::Uuid;

use crate::support::{
    app::Backend,
    store::{event, store_on},
};

fn claim(key: &str, hash: &str, lease_ms: u64) -> Claim {
    Claim {
        customer_id: "alice".into(),
        key: key.into(),
        request_hash: hash.into(),
        order_id: Uuid::now_v7(),
        lease: Duration::from_millis(lease_ms),
        snapshot: None,
    }
}

#[tokio::test]
async fn an_idempotency_key_is_claimed_once_resumed_after_release_and_answers_once_settled() {
    for backend in Backend::all() {
        let (_iso, db, _store) = store_on(backend, Upcasters::none()).await;
        let keys = Stores::on(&db, Upcasters::none(), true).idempotency_keys;
        let first = claim("k1", "h1", 60_000);
        let ClaimOutcome::Claimed {
            order_id,
            snapshot: None,
        } = keys.claim(&first).await.unwrap()
        else {
            panic!("{backend:?}: a fresh key is claimed");
        };
        assert_eq!(order_id, first.order_id);
        assert_eq!(
            keys.claim(&claim("k1", "h1", 60_000)).await.unwrap(),
            ClaimOutcome::InFlight
        );
        assert_eq!(
            keys.claim(&claim("k1", "other", 60_000)).await.unwrap(),
            ClaimOutcome::DifferentRequest
        );
        // Another customer's key of the same name is another key.
        let mut bob = claim("k1", "h1", 60_000);
        bob.customer_id = "bob".into();
        assert!(matches!(
            keys.claim(&bob).await.unwrap(),
            ClaimOutcome::Claimed { .. }
        ));

        // A transient failure releases the lease: the retry resumes with the same order and progress.
        keys.save_snapshot("alice", "k1", &json!({"cart_version": 3}))
            .await
            .unwrap();
        keys.release("alice", "k1").await.unwrap();
        let resumed = keys.claim(&claim("k1", "h1", 60_000)).await.unwrap();
        assert_eq!(
            resumed,
            ClaimOutcome::Claimed {
                order_id,
                snapshot: Some(json!({"cart_version": 3}))
            },
            "{backend:?}"
        );

        // Completed in the events' unit of work: every repeat gets the answer.
        let done = UnitOfWork {
            appends: vec![StreamAppend {
                stream_id: order_id,
                stream_type: ORDER_STREAM.into(),
                expected_version: Some(0),
                events: vec![event("OrderCreated", json!({}))],
            }],
            idempotency: Some(IdempotencyCompletion {
                customer_id: "alice".into(),
                key: "k1".into(),
                response: json!({"order_id": order_id, "version": 1}),
            }),
            ..Default::default()
        };
        Stores::on(&db, Upcasters::none(), true)
            .units
            .commit(done)
            .await
            .unwrap();
        assert_eq!(
            keys.claim(&claim("k1", "h1", 60_000)).await.unwrap(),
            ClaimOutcome::Done(json!({"order_id": order_id, "version": 1}))
        );
        assert_eq!(
            keys.claim(&claim("k1", "other", 1)).await.unwrap(),
            ClaimOutcome::DifferentRequest
        );

        // A refusal is remembered; a late release of a settled key changes nothing.
        keys.claim(&claim("k2", "h2", 60_000)).await.unwrap();
        keys.refuse("alice", "k2", &json!({"code": "not_found"}))
            .await
            .unwrap();
        keys.release("alice", "k2").await.unwrap();
        assert_eq!(
            keys.claim(&claim("k2", "h2", 60_000)).await.unwrap(),
            ClaimOutcome::Refused(json!({"code": "not_found"}))
        );

        // A crashed holder's lease runs out and a retry takes over.
        keys.claim(&claim("k3", "h3", 1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(matches!(
            keys.claim(&claim("k3", "h3", 60_000)).await.unwrap(),
            ClaimOutcome::Claimed { .. }
        ));
    }
}

#[tokio::test]
async fn twenty_concurrent_claims_of_one_key_admit_exactly_one_holder() {
    for backend in Backend::all() {
        let (_iso, db, _store) = store_on(backend, Upcasters::none()).await;
        let keys = Stores::on(&db, Upcasters::none(), true).idempotency_keys;
        let claims: Vec<_> = (0..20)
            .map(|_| {
                let keys = keys.clone();
                tokio::spawn(async move { keys.claim(&claim("same", "h", 60_000)).await.unwrap() })
            })
            .collect();
        let mut holders = 0;
        for outcome in claims {
            match outcome.await.unwrap() {
                ClaimOutcome::Claimed { .. } => holders += 1,
                ClaimOutcome::InFlight => {}
                other => panic!("{backend:?}: {other:?}"),
            }
        }
        assert_eq!(holders, 1, "{backend:?}");
    }
}
