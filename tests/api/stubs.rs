//! The sibling stubs over real gRPC: idempotency, ledgers, stock, and the
//! magic inputs the saga tests rely on.

use crate::support::stubs::{StubClients, authorize, reserve, shipment, spawn_stubs};
use commerce::proto::{
    inventory::v1::{
        GetStockRequest, ListReservationsRequest, ReleaseRequest, ReservationStatus, SetStockRequest,
    },
    payment::v1::{
        AuthorizationStatus, AuthorizeRequest, CaptureRequest, ListAuthorizationsRequest, VoidRequest,
    },
    shipping::v1::{CancelShipmentRequest, ListShipmentsRequest, ShipmentStatus},
};
use tonic::Code;

#[tokio::test]
async fn payment_applies_a_key_once_and_never_captures_twice() {
    let (_, mut s) = spawn_stubs(&[]).await;
    let first = s
        .payment
        .authorize(authorize("k1", "o1", "pm_card_visa"))
        .await
        .unwrap()
        .into_inner();
    let again = s
        .payment
        .authorize(authorize("k1", "o1", "pm_card_visa"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        first.authorization_id, again.authorization_id,
        "a repeated key repeats its answer"
    );

    let capture = |key: &str| CaptureRequest {
        idempotency_key: key.into(),
        authorization_id: first.authorization_id.clone(),
    };
    let c1 = s.payment.capture(capture("c1")).await.unwrap().into_inner();
    let c1_again = s.payment.capture(capture("c1")).await.unwrap().into_inner();
    assert_eq!(c1.capture_id, c1_again.capture_id);
    let other_key = s.payment.capture(capture("c2")).await.unwrap_err();
    assert_eq!(other_key.code(), Code::FailedPrecondition, "{other_key:?}");
    let void = s
        .payment
        .void(VoidRequest {
            idempotency_key: "v1".into(),
            authorization_id: first.authorization_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        void.code(),
        Code::FailedPrecondition,
        "a captured authorization cannot be voided"
    );

    let ledger = s
        .payment
        .list_authorizations(ListAuthorizationsRequest {
            order_id: "o1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .authorizations;
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].status(), AuthorizationStatus::Captured);
    assert_eq!((ledger[0].capture_count, ledger[0].void_count), (1, 0));
    assert_eq!(ledger[0].amount, "59.98");
}

#[tokio::test]
async fn payment_declines_and_transient_magic_fail_as_documented() {
    let (_, mut s) = spawn_stubs(&[]).await;
    let declined = s
        .payment
        .authorize(authorize("d1", "o1", "pm_card_declined"))
        .await
        .unwrap_err();
    assert_eq!(declined.code(), Code::FailedPrecondition);
    // The refusal is the key's answer for good.
    let again = s
        .payment
        .authorize(authorize("d1", "o1", "pm_card_declined"))
        .await
        .unwrap_err();
    assert_eq!(
        (again.code(), again.message()),
        (declined.code(), declined.message())
    );

    for attempt in 1..=2 {
        let err = s
            .payment
            .authorize(authorize("t1", "o2", "pm_transient_2"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "attempt {attempt}");
    }
    let ok = s
        .payment
        .authorize(authorize("t1", "o2", "pm_transient_2"))
        .await
        .unwrap()
        .into_inner();
    let voided = s
        .payment
        .void(VoidRequest {
            idempotency_key: "v".into(),
            authorization_id: ok.authorization_id,
        })
        .await;
    assert!(voided.is_ok());
    let ledger = s
        .payment
        .list_authorizations(ListAuthorizationsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .authorizations;
    assert_eq!(
        ledger.len(),
        1,
        "declines and transient failures leave no authorization"
    );
    assert_eq!(ledger[0].status(), AuthorizationStatus::Voided);

    let bad_amount = s
        .payment
        .authorize(AuthorizeRequest {
            amount: "-1".into(),
            ..authorize("b1", "o3", "pm_card_visa")
        })
        .await
        .unwrap_err();
    assert_eq!(bad_amount.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn inventory_conserves_stock_and_refuses_what_it_lacks() {
    let (_, mut s) = spawn_stubs(&[("STUB_DEFAULT_STOCK", "10")]).await;
    s.inventory
        .set_stock(SetStockRequest {
            product_id: "widget".into(),
            on_hand: 5,
        })
        .await
        .unwrap();
    let r1 = s
        .inventory
        .reserve(reserve("r1", "o1", &[("widget", 3), ("gadget", 4)]))
        .await
        .unwrap()
        .into_inner();
    let short = s
        .inventory
        .reserve(reserve("r2", "o2", &[("gadget", 1), ("widget", 3)]))
        .await
        .unwrap_err();
    assert_eq!(short.code(), Code::FailedPrecondition, "only 2 widgets left");
    let oos = s
        .inventory
        .reserve(reserve("r3", "o3", &[("oos-lamp", 1)]))
        .await
        .unwrap_err();
    assert_eq!(oos.code(), Code::FailedPrecondition);

    let levels = |s: &mut StubClients| {
        let mut inventory = s.inventory.clone();
        async move {
            inventory
                .get_stock(GetStockRequest {
                    product_ids: vec!["widget".into(), "gadget".into()],
                })
                .await
                .unwrap()
                .into_inner()
                .levels
                .into_iter()
                .map(|l| (l.on_hand, l.reserved))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        levels(&mut s).await,
        vec![(2, 3), (6, 4)],
        "all or nothing: r2 took no gadget"
    );

    let release = |key: &str| ReleaseRequest {
        idempotency_key: key.into(),
        reservation_id: r1.reservation_id.clone(),
    };
    s.inventory.release(release("x1")).await.unwrap();
    s.inventory.release(release("x2")).await.unwrap();
    assert_eq!(
        levels(&mut s).await,
        vec![(5, 0), (10, 0)],
        "released once, stock back"
    );
    let ledger = s
        .inventory
        .list_reservations(ListReservationsRequest {
            order_id: "o1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .reservations;
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].status(), ReservationStatus::Released);
}

#[tokio::test]
async fn shipping_refuses_unshippable_addresses_and_cancels_shipments() {
    let (_, mut s) = spawn_stubs(&[]).await;
    let refused = s
        .shipping
        .create_shipment(shipment("s0", "o0", "ZZ"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let created = s
        .shipping
        .create_shipment(shipment("s1", "o1", "US"))
        .await
        .unwrap()
        .into_inner();
    assert!(!created.tracking_number.is_empty());
    s.shipping
        .cancel_shipment(CancelShipmentRequest {
            idempotency_key: "c1".into(),
            shipment_id: created.shipment_id.clone(),
        })
        .await
        .unwrap();
    let ledger = s
        .shipping
        .list_shipments(ListShipmentsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .shipments;
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].status(), ShipmentStatus::Cancelled);
    assert_eq!(ledger[0].shipment_id, created.shipment_id);
}

#[tokio::test]
async fn a_configured_failure_rate_fails_before_applying() {
    let (_, mut s) = spawn_stubs(&[("STUB_FAILURE_RATE", "0.5")]).await;
    let (mut failures, mut successes) = (0, 0);
    for _ in 0..60 {
        match s
            .payment
            .authorize(authorize("same-key", "o1", "pm_card_visa"))
            .await
        {
            Ok(_) => successes += 1,
            Err(e) => {
                assert_eq!(e.code(), Code::Unavailable);
                failures += 1;
            }
        }
    }
    assert!(
        failures > 5 && successes > 5,
        "{failures} failures, {successes} successes"
    );
    let ledger = s
        .payment
        .list_authorizations(ListAuthorizationsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .authorizations;
    assert_eq!(
        ledger.len(),
        1,
        "one key, one authorization, whatever failed around it"
    );
}
