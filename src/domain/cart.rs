//! The shopping cart: lines keyed by product, validated inputs, totals, version
//! and lifecycle. Pure: the store persists it, the app layer drives it.
//!
//! Rules (each refusal names the proto field at fault):
//! - quantity 1..=999 per add, and a line never holds more than 999;
//! - at most 100 distinct products per cart;
//! - unit_price a plain decimal > 0, at most the currency's decimals, at most 1 000 000;
//! - product_id 1..=128 characters, product_name 1..=200 after trimming, no control characters;
//! - the same product added again adds to its quantity and takes the new unit
//!   price and name: the latest price the customer saw wins, so the cart never
//!   shows two prices for one product;
//! - a converted cart no longer changes.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::money::{Currency, Money, MoneyError};

/// Most units of one product in a cart.
pub const MAX_QUANTITY: u32 = 999;
/// Most distinct products in a cart.
pub const MAX_LINES: usize = 100;
/// Highest accepted unit price, in the cart's currency.
pub const MAX_UNIT_PRICE: Decimal = Decimal::from_parts(1_000_000, 0, 0, false, 0);
/// Longest product id, in characters.
pub const MAX_PRODUCT_ID_CHARS: usize = 128;
/// Longest product name, in characters.
pub const MAX_PRODUCT_NAME_CHARS: usize = 200;

/// One refused input field, named as in the proto.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Proto field name, e.g. `unit_price`.
    pub field: &'static str,
    /// What is wrong, phrased for the client (names the limit it broke).
    pub reason: String,
}

impl Violation {
    /// A violation of `field`.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// Why a cart operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CartError {
    /// Bad input; the cart is unchanged.
    #[error("invalid cart input: {0:?}")]
    Invalid(Vec<Violation>),
    /// The product has no line in the cart.
    #[error("product {0:?} is not in the cart")]
    ItemNotFound(String),
    /// The cart was converted into an order and no longer changes.
    #[error("the cart was converted into an order")]
    NotActive,
    /// Checkout of a cart with no items.
    #[error("the cart is empty")]
    Empty,
    /// The caller's expected version is not the cart's.
    #[error("cart is at version {actual}, not {expected}")]
    StaleVersion {
        /// What the caller expected.
        expected: u64,
        /// What the cart is at.
        actual: u64,
    },
    /// A total did not fit (cannot happen within the limits above; checked anyway).
    #[error("cart total: {0}")]
    Money(#[from] MoneyError),
}

impl CartError {
    fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid(vec![Violation::new(field, reason)])
    }
}

/// Lifecycle of a cart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CartStatus {
    /// Open for changes, and the one CreateOrder converts.
    Active,
    /// Turned into an order; frozen.
    Converted,
}

/// One product line: a product appears at most once per cart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CartItem {
    /// Product id, 1..=128 characters.
    pub product_id: String,
    /// Display name, 1..=200 characters, trimmed.
    pub product_name: String,
    /// Units of the product, 1..=999 (0 removes the line instead).
    pub quantity: u32,
    /// Price of one unit, > 0, in the cart's currency.
    pub unit_price: Money,
}

impl CartItem {
    /// `quantity x unit_price`; fails only when the product overflows the amount range.
    pub fn line_total(&self) -> Result<Money, MoneyError> {
        self.unit_price.checked_mul(self.quantity)
    }
}

/// A validated AddItem input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewItem {
    product_id: String,
    product_name: String,
    quantity: u32,
    unit_price: Money,
}

impl NewItem {
    /// Validates raw request fields; every bad field is reported at once.
    pub fn parse(
        product_id: &str,
        product_name: &str,
        quantity: i64,
        unit_price: &str,
        currency: Currency,
    ) -> Result<Self, CartError> {
        let mut violations = Vec::new();
        let product_id = collect(parse_product_id(product_id), &mut violations);
        let product_name = collect(parse_product_name(product_name), &mut violations);
        let quantity = collect(parse_quantity(quantity, 1), &mut violations);
        let unit_price = collect(parse_unit_price(unit_price, currency), &mut violations);
        match (product_id, product_name, quantity, unit_price) {
            (Some(product_id), Some(product_name), Some(quantity), Some(unit_price)) => Ok(Self {
                product_id,
                product_name,
                quantity,
                unit_price,
            }),
            _ => Err(CartError::Invalid(violations)),
        }
    }
}

fn collect<T>(result: Result<T, Violation>, violations: &mut Vec<Violation>) -> Option<T> {
    result.map_err(|v| violations.push(v)).ok()
}

/// A product id: 1..=128 characters, no control or format characters, no surrounding
/// whitespace (it is an identifier: we refuse rather than silently trim).
pub fn parse_product_id(raw: &str) -> Result<String, Violation> {
    let field = "product_id";
    let chars = raw.chars().count();
    if raw.trim().is_empty() {
        Err(Violation::new(field, "must not be empty"))
    } else if chars > MAX_PRODUCT_ID_CHARS {
        Err(Violation::new(
            field,
            format!("at most {MAX_PRODUCT_ID_CHARS} characters"),
        ))
    } else if raw.trim() != raw {
        Err(Violation::new(field, "must not start or end with whitespace"))
    } else if let Some(problem) = super::text::id_problem(raw) {
        Err(Violation::new(field, problem))
    } else {
        Ok(raw.to_string())
    }
}

fn parse_product_name(raw: &str) -> Result<String, Violation> {
    let field = "product_name";
    let name = raw.trim();
    if name.is_empty() {
        Err(Violation::new(field, "must not be empty"))
    } else if name.chars().count() > MAX_PRODUCT_NAME_CHARS {
        Err(Violation::new(
            field,
            format!("at most {MAX_PRODUCT_NAME_CHARS} characters"),
        ))
    } else if let Some(problem) = super::text::text_problem(name, true) {
        Err(Violation::new(field, problem))
    } else {
        Ok(name.to_string())
    }
}

/// A quantity in `min..=999` (AddItem: min 1; UpdateItemQuantity: min 0).
pub fn parse_quantity(raw: i64, min: u32) -> Result<u32, Violation> {
    match u32::try_from(raw) {
        Ok(q) if (min..=MAX_QUANTITY).contains(&q) => Ok(q),
        _ => Err(Violation::new(
            "quantity",
            format!("must be {min} to {MAX_QUANTITY}"),
        )),
    }
}

fn parse_unit_price(raw: &str, currency: Currency) -> Result<Money, Violation> {
    let field = "unit_price";
    let price = Money::parse(raw, currency).map_err(|e| Violation::new(field, e.to_string()))?;
    if !price.is_positive() {
        Err(Violation::new(field, "must be greater than zero"))
    } else if price.amount() > MAX_UNIT_PRICE {
        Err(Violation::new(field, format!("at most {MAX_UNIT_PRICE}")))
    } else {
        Ok(price)
    }
}

/// A change to a cart's lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CartChange {
    /// Add a product, or add to its quantity (taking the new price and name).
    AddItem(NewItem),
    /// Set a line's quantity (validated 0..=999); 0 removes the line.
    SetQuantity {
        /// Which line: the product id names it, a cart holds each product once.
        product_id: String,
        /// The quantity to set (0 removes the line).
        quantity: u32,
    },
    /// Remove a line; removing a product the cart lacks is refused.
    RemoveItem {
        /// Which line to remove, by its product id.
        product_id: String,
    },
}

/// A customer's shopping cart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cart {
    /// The cart's id, chosen at creation (UUID v7).
    pub id: Uuid,
    /// Owner (the token's `sub`).
    pub customer_id: String,
    /// Currency of every price in the cart.
    pub currency: Currency,
    /// Lines, one per product, in the order first added.
    pub items: Vec<CartItem>,
    /// Incremented by every change, starting at 1.
    pub version: u64,
    /// Active until CreateOrder converts it; a converted cart refuses changes.
    pub status: CartStatus,
    /// When CreateCart made it (the cart conversion figures count from here).
    pub created_at: DateTime<Utc>,
    /// When a change last bumped the version; expiry is counted from it.
    pub updated_at: DateTime<Utc>,
    /// Expiry unless changed again.
    pub expires_at: DateTime<Utc>,
    /// The order it became, once converted.
    pub order_id: Option<Uuid>,
}

/// How many shards carts are spread over by owner ([`shard_of`]).
pub const SHARDS: usize = 256;

/// The shard of `customer_id`'s carts: a stable hash (FNV-1a, then the
/// MurmurHash3 finalizer so that ids differing in their last characters
/// spread too), the same in every process and release. A store partitioned by customer (Redis
/// Cluster: one hash tag per shard) keeps a customer's carts, index and the
/// shard's counters together, so one script changes them all.
pub fn shard_of(customer_id: &str) -> u8 {
    let hash = customer_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut mixed = hash ^ (hash >> 33);
    mixed = mixed.wrapping_mul(0xff51_afd7_ed55_8ccd);
    mixed ^= mixed >> 33;
    mixed = mixed.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    mixed ^= mixed >> 33;
    (mixed >> 56) as u8
}

/// The shard a cart lives in, read from its id alone: the first byte of the
/// id of a cart made by [`Cart::new`] is its owner's [`shard_of`] (the rest
/// of the version 4 id stays random: 114 bits).
pub fn shard_of_cart(id: Uuid) -> u8 {
    id.as_bytes()[0]
}

impl Cart {
    /// A new empty, active cart at version 1, expiring `ttl` from `now`, with
    /// an id in its owner's shard ([`shard_of_cart`]).
    pub fn new(customer_id: &str, currency: Currency, now: DateTime<Utc>, ttl: Duration) -> Self {
        let mut id = *Uuid::new_v4().as_bytes();
        id[0] = shard_of(customer_id);
        Self {
            id: Uuid::from_bytes(id),
            customer_id: customer_id.to_string(),
            currency,
            items: Vec::new(),
            version: 1,
            status: CartStatus::Active,
            created_at: now,
            updated_at: now,
            expires_at: expiry(now, ttl),
            order_id: None,
        }
    }

    /// Sum of the line totals.
    pub fn subtotal(&self) -> Result<Money, MoneyError> {
        self.items
            .iter()
            .try_fold(Money::zero(self.currency), |sum, item| {
                sum.checked_add(&item.line_total()?)
            })
    }

    /// Sum of the quantities.
    pub fn item_count(&self) -> u32 {
        self.items.iter().map(|i| i.quantity).sum()
    }

    /// True once `now` reaches the expiry.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        now >= self.expires_at
    }

    /// ABORTED-worthy when `expected` is given and is not the current version.
    pub fn check_version(&self, expected: Option<u64>) -> Result<(), CartError> {
        match expected {
            Some(expected) if expected != self.version => Err(CartError::StaleVersion {
                expected,
                actual: self.version,
            }),
            _ => Ok(()),
        }
    }

    /// Applies a change and, when it succeeds, bumps the version and the
    /// expiry. On error the cart is unchanged.
    pub fn apply(&mut self, change: &CartChange, now: DateTime<Utc>, ttl: Duration) -> Result<(), CartError> {
        if self.status != CartStatus::Active {
            return Err(CartError::NotActive);
        }
        match change {
            CartChange::AddItem(new) => self.add(new)?,
            CartChange::SetQuantity {
                product_id,
                quantity: 0,
            }
            | CartChange::RemoveItem { product_id } => {
                let index = self.index_of(product_id)?;
                self.items.remove(index);
            }
            CartChange::SetQuantity { product_id, quantity } => {
                let index = self.index_of(product_id)?;
                self.items[index].quantity = *quantity;
            }
        }
        self.touch(now, ttl);
        Ok(())
    }

    /// Marks the cart converted into `order_id` (checkout); it must be active
    /// and not empty.
    pub fn convert(&mut self, order_id: Uuid, now: DateTime<Utc>, ttl: Duration) -> Result<(), CartError> {
        self.check_checkout()?;
        self.status = CartStatus::Converted;
        self.order_id = Some(order_id);
        self.touch(now, ttl);
        Ok(())
    }

    /// Whether the cart can be ordered now: active and not empty.
    pub fn check_checkout(&self) -> Result<(), CartError> {
        if self.status != CartStatus::Active {
            Err(CartError::NotActive)
        } else if self.items.is_empty() {
            Err(CartError::Empty)
        } else {
            Ok(())
        }
    }

    fn add(&mut self, new: &NewItem) -> Result<(), CartError> {
        if new.unit_price.currency() != self.currency {
            // NewItem::parse was given another currency than the cart's: a caller bug.
            return Err(MoneyError::CurrencyMismatch(self.currency, new.unit_price.currency()).into());
        }
        if let Some(line) = self.items.iter_mut().find(|i| i.product_id == new.product_id) {
            let total = line.quantity + new.quantity;
            if total > MAX_QUANTITY {
                return Err(CartError::invalid(
                    "quantity",
                    format!(
                        "the line would hold {total}; at most {MAX_QUANTITY} of one product (it has {})",
                        line.quantity
                    ),
                ));
            }
            line.quantity = total;
            line.unit_price = new.unit_price;
            line.product_name.clone_from(&new.product_name);
            return Ok(());
        }
        if self.items.len() >= MAX_LINES {
            return Err(CartError::invalid(
                "product_id",
                format!("the cart already holds {MAX_LINES} different products"),
            ));
        }
        self.items.push(CartItem {
            product_id: new.product_id.clone(),
            product_name: new.product_name.clone(),
            quantity: new.quantity,
            unit_price: new.unit_price,
        });
        Ok(())
    }

    fn index_of(&self, product_id: &str) -> Result<usize, CartError> {
        self.items
            .iter()
            .position(|i| i.product_id == product_id)
            .ok_or_else(|| CartError::ItemNotFound(product_id.to_string()))
    }

    fn touch(&mut self, now: DateTime<Utc>, ttl: Duration) {
        self.version += 1;
        self.updated_at = now;
        self.expires_at = expiry(now, ttl);
    }
}

/// `now + ttl`, saturating far in the future instead of overflowing.
fn expiry(now: DateTime<Utc>, ttl: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|ttl| now.checked_add_signed(ttl))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests;
