//! Fuzzing request validation with proptest: CreateOrder's checks and the
//! cart's AddItem / UpdateItemQuantity handling (the application layer both
//! transports call, on the in-process cart store). Nothing panics; what is
//! accepted keeps every invariant; what is refused is INVALID_ARGUMENT (or a
//! business refusal) naming known fields, and changes nothing.
//!
//! Long run: `PROPTEST_CASES=20000 cargo test --test integration fuzz_requests`.

use std::{sync::Arc, time::Duration};

use commerce::{
    app::{
        cart::{AddItem, CartApp, UpdateItemQuantity},
        orders::validate::{AddressInput, CreateOrderInput, create_order},
    },
    auth::{Principal, Role},
    domain::cart::{MAX_QUANTITY, MAX_UNIT_PRICE},
    error::AppError,
    store::cart::MemoryCartStore,
};
use proptest::prelude::*;

/// Text that is often valid, sometimes hostile.
fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9_-]{1,12}",
        Just(String::new()),
        " {1,3}",
        "\\PC{0,40}",
        "[a-z]{1,4}[\\x00-\\x1f][a-z]{0,4}",
        (1usize..400).prop_map(|n| "x".repeat(n)),
    ]
}

fn price() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,7}(\\.[0-9]{1,2})?",
        "-?[0-9]{0,30}(\\.[0-9]{0,22})?",
        prop::sample::select(vec![
            "1e999",
            "NaN",
            "-0.00",
            "Infinity",
            "",
            "0",
            "1000000.01",
            "1,5"
        ])
        .prop_map(String::from),
        "\\PC{0,12}",
    ]
}

fn uuid_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string()),
        field(),
    ]
}

fn address() -> impl Strategy<Value = Option<AddressInput>> {
    prop::option::weighted(
        0.9,
        (
            field(),
            field(),
            field(),
            field(),
            field(),
            field(),
            prop_oneof!["[A-Z]{2}", field()],
        )
            .prop_map(
                |(recipient_name, line1, line2, city, region, postal_code, country)| AddressInput {
                    recipient_name,
                    line1,
                    line2,
                    city,
                    region,
                    postal_code,
                    country,
                },
            ),
    )
}

const ORDER_FIELDS: [&str; 5] = [
    "cart_id",
    "payment_method",
    "shipping_address",
    "idempotency_key",
    "items",
];

proptest! {
    #[test]
    fn create_order_validation_accepts_only_clean_requests_and_names_every_bad_field(
        cart_id in uuid_text(), payment_method in field(), key in field(), shipping_address in address()
    ) {
        let input = CreateOrderInput { cart_id: cart_id.clone(), payment_method, shipping_address, idempotency_key: key };
        match create_order(input.clone()) {
            Ok(valid) => {
                prop_assert_eq!(valid.cart_id.to_string(), cart_id.trim().to_lowercase());
                let k = &valid.idempotency_key;
                prop_assert!(!k.is_empty() && k.chars().count() <= 128 && !k.chars().any(char::is_control));
                let method = &valid.personal.payment_method;
                prop_assert!(!method.is_empty() && method.len() <= 128);
                let country = &valid.personal.shipping_address.country;
                prop_assert!(country.len() == 2 && country.chars().all(|c| c.is_ascii_uppercase()), "{country:?}");
                // The key's request hash is a function of the request and the customer.
                let again = create_order(input).expect("valid twice");
                prop_assert_eq!(valid.request_hash("alice"), again.request_hash("alice"));
                prop_assert_ne!(valid.request_hash("alice"), valid.request_hash("bob"));
            }
            Err(AppError::InvalidArgument(violations)) => {
                prop_assert!(!violations.is_empty());
                for v in &violations {
                    prop_assert!(
                        ORDER_FIELDS.iter().any(|f| v.field == *f || v.field.starts_with(&format!("{f}."))),
                        "unknown field {:?}", v.field
                    );
                }
            }
            Err(other) => prop_assert!(false, "not INVALID_ARGUMENT: {other:?}"),
        }
    }

    #[test]
    fn any_sequence_of_cart_calls_keeps_the_cart_valid_and_refusals_change_nothing(
        calls in prop::collection::vec(
            (any::<bool>(), prop_oneof![Just("sku".to_string()), Just("pen".to_string()), field()],
             prop_oneof![1i64..5, -5i64..1000, any::<i64>()], price(),
             prop::option::of(prop_oneof![0i64..8, any::<i64>()])),
            1..12,
        )
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let carts = CartApp::new(Arc::new(MemoryCartStore::new()), Duration::from_secs(3600));
            let alice = Principal { subject: "alice".into(), roles: vec![Role::Customer] };
            let (mut cart, _) = carts.create_cart(&alice, "").await.expect("a cart");
            for (add, product_id, quantity, unit_price, expected_version) in calls {
                let cart_id = cart.id.to_string();
                let result = if add {
                    let input = AddItem { cart_id, product_id, product_name: "Thing".into(), quantity, unit_price, expected_version };
                    carts.add_item(&alice, input).await
                } else {
                    let input = UpdateItemQuantity { cart_id, product_id, quantity, expected_version };
                    carts.update_item_quantity(&alice, input).await
                };
                let stored = carts.get_cart(&alice, &cart.id.to_string()).await.expect("readable");
                match result {
                    Ok(after) => {
                        prop_assert_eq!(after.version, cart.version + 1);
                        prop_assert_eq!(&stored, &after);
                        let mut sum = commerce::domain::money::Money::zero(after.currency);
                        for item in &after.items {
                            prop_assert!((1..=MAX_QUANTITY).contains(&item.quantity));
                            prop_assert!(item.unit_price.is_positive() && item.unit_price.amount() <= MAX_UNIT_PRICE);
                            sum = sum.checked_add(&item.line_total().expect("bounded")).expect("bounded");
                        }
                        prop_assert_eq!(after.subtotal().expect("bounded"), sum);
                        cart = after;
                    }
                    Err(err) => {
                        prop_assert!(
                            matches!(err, AppError::InvalidArgument(_) | AppError::Aborted { .. } | AppError::NotFound { .. } | AppError::FailedPrecondition { .. }),
                            "{err:?}"
                        );
                        if let AppError::InvalidArgument(violations) = &err {
                            for v in violations {
                                prop_assert!(
                                    ["cart_id", "product_id", "product_name", "quantity", "unit_price", "expected_version"].contains(&v.field.as_str()),
                                    "unknown field {:?}", v.field
                                );
                            }
                        }
                        prop_assert_eq!(&stored, &cart, "a refusal changed the cart");
                    }
                }
            }
            Ok(())
        })?;
    }
}
