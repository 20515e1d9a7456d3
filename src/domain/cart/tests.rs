//! Given/when/then tests of the cart rules.

use super::*;

const TTL: Duration = Duration::from_secs(3600);

fn now() -> DateTime<Utc> {
    "2026-01-01T12:00:00Z".parse().unwrap()
}

fn given_cart() -> Cart {
    Cart::new("alice", Currency::Usd, now(), TTL)
}

fn add(product: &str, quantity: i64, price: &str) -> CartChange {
    CartChange::AddItem(NewItem::parse(product, "Widget", quantity, price, Currency::Usd).unwrap())
}

fn fields(err: CartError) -> Vec<&'static str> {
    match err {
        CartError::Invalid(v) => v.into_iter().map(|v| v.field).collect(),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn a_new_cart_is_active_empty_at_version_one_and_expires_after_the_ttl() {
    let cart = given_cart();
    assert_eq!(cart.version, 1);
    assert_eq!(cart.status, CartStatus::Active);
    assert_eq!(cart.item_count(), 0);
    assert_eq!(cart.subtotal().unwrap().to_string(), "0.00");
    assert_eq!(cart.expires_at - cart.created_at, chrono::Duration::hours(1));
    assert!(!cart.is_expired(now()));
    assert!(cart.is_expired(now() + chrono::Duration::hours(1)));
}

#[test]
fn adding_items_computes_line_totals_subtotal_and_count_and_bumps_version_and_expiry() {
    let mut cart = given_cart();
    let later = now() + chrono::Duration::minutes(10);
    cart.apply(&add("sku-1", 2, "29.99"), later, TTL).unwrap();
    cart.apply(&add("sku-2", 1, "0.02"), later, TTL).unwrap();
    assert_eq!(cart.items[0].line_total().unwrap().to_string(), "59.98");
    assert_eq!(cart.subtotal().unwrap().to_string(), "60.00");
    assert_eq!(cart.item_count(), 3);
    assert_eq!(cart.version, 3);
    assert_eq!(cart.updated_at, later);
    assert_eq!(cart.expires_at, later + chrono::Duration::hours(1));
}

#[test]
fn the_same_product_again_adds_to_its_quantity_and_takes_the_new_price_and_name() {
    let mut cart = given_cart();
    cart.apply(&add("sku-1", 2, "10.00"), now(), TTL).unwrap();
    let renamed = NewItem::parse("sku-1", "  Widget v2 ", 3, "12.50", Currency::Usd).unwrap();
    cart.apply(&CartChange::AddItem(renamed), now(), TTL).unwrap();
    assert_eq!(cart.items.len(), 1);
    assert_eq!(cart.items[0].quantity, 5);
    assert_eq!(cart.items[0].unit_price.to_string(), "12.50");
    assert_eq!(cart.items[0].product_name, "Widget v2");
    assert_eq!(cart.subtotal().unwrap().to_string(), "62.50");
}

#[test]
fn a_line_never_holds_more_than_999_and_a_refused_change_leaves_the_cart_unchanged() {
    let mut cart = given_cart();
    cart.apply(&add("sku-1", 998, "1"), now(), TTL).unwrap();
    let before = cart.clone();
    let err = cart.apply(&add("sku-1", 2, "1"), now(), TTL).unwrap_err();
    assert_eq!(fields(err), ["quantity"]);
    assert_eq!(cart, before);
    cart.apply(&add("sku-1", 1, "1"), now(), TTL).unwrap();
    assert_eq!(cart.items[0].quantity, 999);
}

#[test]
fn a_cart_holds_at_most_100_distinct_products() {
    let mut cart = given_cart();
    for i in 0..MAX_LINES {
        cart.apply(&add(&format!("sku-{i}"), 1, "1"), now(), TTL).unwrap();
    }
    let err = cart.apply(&add("one-more", 1, "1"), now(), TTL).unwrap_err();
    assert_eq!(fields(err), ["product_id"]);
    // An existing product still takes more.
    cart.apply(&add("sku-0", 1, "1"), now(), TTL).unwrap();
}

#[test]
fn every_bad_field_of_an_add_is_reported_with_its_proto_name() {
    let err = NewItem::parse("", " ", 0, "abc", Currency::Usd).unwrap_err();
    assert_eq!(
        fields(err),
        ["product_id", "product_name", "quantity", "unit_price"]
    );
}

#[test]
fn quantities_outside_1_to_999_are_refused() {
    for q in [0, -1, 1000, i64::from(u32::MAX) + 1] {
        let err = NewItem::parse("sku", "Widget", q, "1", Currency::Usd).unwrap_err();
        assert_eq!(fields(err), ["quantity"], "{q}");
    }
    assert_eq!(parse_quantity(0, 0), Ok(0));
    assert!(parse_quantity(1000, 0).is_err());
}

#[test]
fn unit_prices_must_be_positive_plain_decimals_within_the_currency_and_the_maximum() {
    for bad in ["0", "0.00", "-1", "1.999", "NaN", "1e3", "1000000.01", "", " 1"] {
        let err = NewItem::parse("sku", "Widget", 1, bad, Currency::Usd).unwrap_err();
        assert_eq!(fields(err), ["unit_price"], "{bad:?}");
    }
    assert!(NewItem::parse("sku", "Widget", 1, "1000000", Currency::Usd).is_ok());
    assert!(NewItem::parse("sku", "Widget", 1, "0.01", Currency::Usd).is_ok());
    assert!(NewItem::parse("sku", "Widget", 1, "0.5", Currency::Jpy).is_err());
}

#[test]
fn product_ids_and_names_have_length_limits_and_no_control_characters() {
    let long_id = "x".repeat(129);
    let long_name = "é".repeat(201);
    let cases = [
        (long_id.as_str(), "Widget", "product_id"),
        (" sku", "Widget", "product_id"),
        ("sk\nu", "Widget", "product_id"),
        ("sku", long_name.as_str(), "product_name"),
        ("sku", "Wid\u{7}get", "product_name"),
        ("sku", "\t \n", "product_name"),
    ];
    for (id, name, field) in cases {
        let err = NewItem::parse(id, name, 1, "1", Currency::Usd).unwrap_err();
        assert_eq!(fields(err), [field], "{id:?} {name:?}");
    }
    let max_id = "x".repeat(128);
    let max_name = "é".repeat(200);
    assert!(NewItem::parse(&max_id, &max_name, 1, "1", Currency::Usd).is_ok());
}

#[test]
fn setting_a_quantity_changes_the_line_and_zero_removes_it() {
    let mut cart = given_cart();
    cart.apply(&add("a", 1, "2"), now(), TTL).unwrap();
    cart.apply(&add("b", 1, "3"), now(), TTL).unwrap();
    let set = |q| CartChange::SetQuantity {
        product_id: "a".into(),
        quantity: q,
    };
    cart.apply(&set(7), now(), TTL).unwrap();
    assert_eq!(cart.items[0].quantity, 7);
    cart.apply(&set(0), now(), TTL).unwrap();
    assert_eq!(cart.items.len(), 1);
    assert_eq!(cart.items[0].product_id, "b");
    assert_eq!(
        cart.apply(&set(1), now(), TTL),
        Err(CartError::ItemNotFound("a".into()))
    );
}

#[test]
fn removing_an_absent_product_is_not_found() {
    let mut cart = given_cart();
    let remove = CartChange::RemoveItem {
        product_id: "nope".into(),
    };
    assert_eq!(
        cart.apply(&remove, now(), TTL),
        Err(CartError::ItemNotFound("nope".into()))
    );
    assert_eq!(cart.version, 1);
}

#[test]
fn a_stale_expected_version_is_refused_and_none_means_any() {
    let cart = given_cart();
    assert!(cart.check_version(None).is_ok());
    assert!(cart.check_version(Some(1)).is_ok());
    assert_eq!(
        cart.check_version(Some(0)),
        Err(CartError::StaleVersion {
            expected: 0,
            actual: 1
        })
    );
}

#[test]
fn only_an_active_non_empty_cart_converts_and_a_converted_cart_is_frozen() {
    let mut cart = given_cart();
    let order = Uuid::new_v4();
    assert_eq!(cart.convert(order, now(), TTL), Err(CartError::Empty));
    cart.apply(&add("a", 1, "2"), now(), TTL).unwrap();
    cart.convert(order, now(), TTL).unwrap();
    assert_eq!(cart.status, CartStatus::Converted);
    assert_eq!(cart.order_id, Some(order));
    assert_eq!(cart.version, 3);
    assert_eq!(cart.convert(order, now(), TTL), Err(CartError::NotActive));
    assert_eq!(
        cart.apply(&add("b", 1, "1"), now(), TTL),
        Err(CartError::NotActive)
    );
}

#[test]
fn the_largest_possible_cart_totals_without_overflow() {
    let mut cart = given_cart();
    for i in 0..MAX_LINES {
        cart.apply(&add(&format!("sku-{i}"), 999, "1000000"), now(), TTL)
            .unwrap();
    }
    assert_eq!(cart.subtotal().unwrap().to_string(), "99900000000.00");
    assert_eq!(cart.item_count(), 99_900);
}

#[test]
fn a_new_cart_id_names_its_owners_shard_and_stays_a_random_v4_id() {
    let carts: Vec<Cart> = (0..50)
        .map(|_| Cart::new("alice", Currency::Usd, now(), TTL))
        .collect();
    for cart in &carts {
        assert_eq!(shard_of_cart(cart.id), shard_of("alice"));
        assert_eq!(cart.id.get_version_num(), 4);
    }
    let distinct: std::collections::HashSet<Uuid> = carts.iter().map(|c| c.id).collect();
    assert_eq!(distinct.len(), carts.len());
    // A stable hash: stored carts keep their shard across releases.
    assert_eq!((shard_of("alice"), shard_of("bob")), (53, 246));
    let shards: std::collections::HashSet<u8> =
        (0..2000).map(|n| shard_of(&format!("customer-{n}"))).collect();
    assert!(shards.len() > 240, "{} of {SHARDS} shards used", shards.len());
}
