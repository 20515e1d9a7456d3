//! The stored JSON form of a cart (Redis `doc` field): explicit, versioned by
//! field names, money as decimal strings; decoding re-validates amounts.

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{
    cart::{Cart, CartItem, CartStatus},
    money::{Currency, Money},
};

/// The stored cart as [`decode`] reads it; [`encode`] writes the same fields.
#[derive(Deserialize)]
struct CartRecord {
    id: Uuid,
    customer_id: String,
    currency: Currency,
    items: Vec<ItemRecord>,
    version: u64,
    status: StatusRecord,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    #[serde(default)]
    order_id: Option<Uuid>,
}

#[derive(Deserialize)]
struct ItemRecord {
    product_id: String,
    product_name: String,
    quantity: u32,
    /// Decimal string in the cart's currency.
    unit_price: String,
}

#[derive(Serialize, Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum StatusRecord {
    Active,
    Converted,
}

/// The status word the Redis scripts compare (`active` / `converted`).
pub fn status_word(status: CartStatus) -> &'static str {
    match status {
        CartStatus::Active => "active",
        CartStatus::Converted => "converted",
    }
}

/// Cart to JSON (the bytes of a UTF-8 text).
///
/// Written field by field rather than through a serde derive of a
/// [`CartRecord`] of copies: a cart of up to a hundred lines is encoded on
/// every change, and copying each line's strings, printing each price into a
/// string of its own and escaping every key (the bulk of the text) cost more
/// than the rest of a change. The names are written as literals, a string
/// that needs no escaping as it is, anything else by serde_json, so the text
/// is byte for byte what the derive wrote (a test holds it), and [`decode`]
/// reads it with the derive.
pub fn encode(cart: &Cart) -> anyhow::Result<Vec<u8>> {
    // About what a line takes, so the buffer grows once at most.
    let mut out = Vec::with_capacity(320 + 96 * cart.items.len());
    write_cart(&mut out, cart).context("encoding a cart")?;
    Ok(out)
}

fn write_cart(out: &mut Vec<u8>, cart: &Cart) -> serde_json::Result<()> {
    out.extend_from_slice(br#"{"id":"#);
    serde_json::to_writer(&mut *out, &cart.id)?;
    out.extend_from_slice(br#","customer_id":"#);
    write_str(out, &cart.customer_id)?;
    out.extend_from_slice(br#","currency":"#);
    serde_json::to_writer(&mut *out, &cart.currency)?;
    out.extend_from_slice(br#","items":["#);
    for (n, item) in cart.items.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"product_id":"#);
        write_str(out, &item.product_id)?;
        out.extend_from_slice(br#","product_name":"#);
        write_str(out, &item.product_name)?;
        out.extend_from_slice(br#","quantity":"#);
        serde_json::to_writer(&mut *out, &item.quantity)?;
        // Digits, a point and a sign: nothing to escape.
        out.extend_from_slice(br#","unit_price":""#);
        out.extend_from_slice(item.unit_price.text().as_str().as_bytes());
        out.extend_from_slice(br#""}"#);
    }
    out.extend_from_slice(br#"],"version":"#);
    serde_json::to_writer(&mut *out, &cart.version)?;
    out.extend_from_slice(br#","status":"#);
    serde_json::to_writer(&mut *out, &status_record(cart.status))?;
    out.extend_from_slice(br#","created_at":"#);
    serde_json::to_writer(&mut *out, &cart.created_at)?;
    out.extend_from_slice(br#","updated_at":"#);
    serde_json::to_writer(&mut *out, &cart.updated_at)?;
    out.extend_from_slice(br#","expires_at":"#);
    serde_json::to_writer(&mut *out, &cart.expires_at)?;
    if let Some(order_id) = &cart.order_id {
        out.extend_from_slice(br#","order_id":"#);
        serde_json::to_writer(&mut *out, order_id)?;
    }
    out.push(b'}');
    Ok(())
}

/// A JSON string: as it is when nothing in it needs escaping (the usual
/// case: ids and names), else escaped by serde_json.
fn write_str(out: &mut Vec<u8>, text: &str) -> serde_json::Result<()> {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(out, text)
    }
}

fn status_record(status: CartStatus) -> StatusRecord {
    match status {
        CartStatus::Active => StatusRecord::Active,
        CartStatus::Converted => StatusRecord::Converted,
    }
}

/// JSON to cart; amounts are parsed again, so a corrupt price is an error.
pub fn decode(json: &[u8]) -> anyhow::Result<Cart> {
    let record: CartRecord = serde_json::from_slice(json).context("decoding a stored cart")?;
    let items = record
        .items
        .into_iter()
        .map(|i| {
            Ok(CartItem {
                unit_price: Money::parse(&i.unit_price, record.currency)
                    .with_context(|| format!("stored unit price {:?}", i.unit_price))?,
                product_id: i.product_id,
                product_name: i.product_name,
                quantity: i.quantity,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Cart {
        id: record.id,
        customer_id: record.customer_id,
        currency: record.currency,
        items,
        version: record.version,
        status: match record.status {
            StatusRecord::Active => CartStatus::Active,
            StatusRecord::Converted => CartStatus::Converted,
        },
        created_at: record.created_at,
        updated_at: record.updated_at,
        expires_at: record.expires_at,
        order_id: record.order_id,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::cart::{CartChange, NewItem};

    #[test]
    fn a_cart_survives_the_round_trip_through_json() {
        let now = Utc::now();
        let mut cart = Cart::new("alice", Currency::Eur, now, Duration::from_secs(60));
        let item = NewItem::parse("sku", "Widget", 3, "29.9", Currency::Eur).unwrap();
        cart.apply(&CartChange::AddItem(item), now, Duration::from_secs(60))
            .unwrap();
        cart.convert(Uuid::new_v4(), now, Duration::from_secs(60))
            .unwrap();
        let json = encode(&cart).unwrap();
        let text = std::str::from_utf8(&json).unwrap();
        assert!(text.contains(r#""unit_price":"29.90""#), "{text}");
        assert_eq!(decode(&json).unwrap(), cart);
    }

    /// The carts already stored were written by the serde derive of the
    /// record: the same text, field for field, so old and new replicas read
    /// each other's carts.
    #[test]
    fn the_stored_text_is_the_one_the_record_layout_gives() {
        let at = DateTime::parse_from_rfc3339("2026-12-06T10:00:00.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut cart = Cart::new("bob \"the\" builder", Currency::Usd, at, Duration::from_secs(60));
        cart.id = Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0001);
        for (sku, name, price) in [("sku-1", "Widget", "9.99"), ("sku-2", "Gadget \"2\" \\ é", "0.5")] {
            let item = NewItem::parse(sku, name, 2, price, Currency::Usd).unwrap();
            cart.apply(&CartChange::AddItem(item), at, Duration::from_secs(60))
                .unwrap();
        }
        let expected = concat!(
            r#"{"id":"01930000-0000-7000-8000-000000000001","customer_id":"bob \"the\" builder","#,
            r#""currency":"USD","items":[{"product_id":"sku-1","product_name":"Widget","quantity":2,"#,
            r#""unit_price":"9.99"},{"product_id":"sku-2","product_name":"Gadget \"2\" \\ é","quantity":2,"#,
            r#""unit_price":"0.50"}],"version":3,"status":"active","#,
            r#""created_at":"2026-12-06T10:00:00.123456Z","updated_at":"2026-12-06T10:00:00.123456Z","#,
            r#""expires_at":"2026-12-06T10:01:00.123456Z"}"#
        );
        assert_eq!(std::str::from_utf8(&encode(&cart).unwrap()).unwrap(), expected);
        let order = Uuid::from_u128(7);
        cart.convert(order, at, Duration::from_secs(60)).unwrap();
        let converted = encode(&cart).unwrap();
        assert!(
            std::str::from_utf8(&converted)
                .unwrap()
                .ends_with(r#""order_id":"00000000-0000-0000-0000-000000000007"}"#)
        );
        assert_eq!(decode(&converted).unwrap(), cart);
    }

    proptest::proptest! {
        #[test]
        fn any_string_is_written_as_serde_json_writes_it(text in proptest::prelude::any::<String>()) {
            let mut out = Vec::new();
            write_str(&mut out, &text).unwrap();
            proptest::prop_assert_eq!(out, serde_json::to_vec(&text).unwrap());
        }
    }
}
