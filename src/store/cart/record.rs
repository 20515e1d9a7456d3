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

#[derive(Serialize, Deserialize)]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    order_id: Option<Uuid>,
}

#[derive(Serialize, Deserialize)]
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

/// Cart to JSON.
pub fn encode(cart: &Cart) -> anyhow::Result<String> {
    let record = CartRecord {
        id: cart.id,
        customer_id: cart.customer_id.clone(),
        currency: cart.currency,
        items: cart
            .items
            .iter()
            .map(|i| ItemRecord {
                product_id: i.product_id.clone(),
                product_name: i.product_name.clone(),
                quantity: i.quantity,
                unit_price: i.unit_price.to_string(),
            })
            .collect(),
        version: cart.version,
        status: match cart.status {
            CartStatus::Active => StatusRecord::Active,
            CartStatus::Converted => StatusRecord::Converted,
        },
        created_at: cart.created_at,
        updated_at: cart.updated_at,
        expires_at: cart.expires_at,
        order_id: cart.order_id,
    };
    serde_json::to_string(&record).context("encoding a cart")
}

/// JSON to cart; amounts are parsed again, so a corrupt price is an error.
pub fn decode(json: &str) -> anyhow::Result<Cart> {
    let record: CartRecord = serde_json::from_str(json).context("decoding a stored cart")?;
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
        assert!(json.contains(r#""unit_price":"29.90""#), "{json}");
        assert_eq!(decode(&json).unwrap(), cart);
    }
}
