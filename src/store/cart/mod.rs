//! Cart storage: the [`CartStore`] trait, with Redis ([`RedisCartStore`]) and
//! in-process ([`MemoryCartStore`]) implementations that behave the same,
//! expiry and analytics included.
//!
//! # Model
//! The store is a versioned document store with bookkeeping; the cart rules
//! live in [`crate::domain::cart`] and run in Rust. A write is a
//! compare-and-set on the version ([`CartStore::replace`]): the app layer reads,
//! applies the change, and writes back only if nobody wrote in between,
//! otherwise it re-reads and tries again. Two concurrent AddItem calls thus
//! both count, and a change never overwrites one it did not see.
//!
//! A cart is live while `now < expires_at`; an expired cart is gone for every
//! read and write, whether or not its storage has been reclaimed yet.
//!
//! # Analytics without scanning
//! Counters are kept as carts change: `created`, `converted` (with the sum of
//! converted subtotals per currency, in minor units), `deleted`, and
//! `abandoned`. Active carts sit in an index ordered by expiry; a sweep moves
//! those whose expiry has passed into `abandoned`. The sweep runs before
//! analytics are read and on a timer, and only touches expired entries. So
//! `created == active + converted + deleted + abandoned` after a sweep.

mod memory;
mod record;
mod redis;

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use self::{memory::MemoryCartStore, redis::RedisCartStore};
use crate::{
    domain::{cart::Cart, money::Currency},
    error::AppError,
};

/// What can go wrong in a cart store.
#[derive(Debug, thiserror::Error)]
pub enum CartStoreError {
    /// No live cart with that id (never existed, deleted, or expired).
    #[error("cart not found")]
    NotFound,
    /// The stored cart is not at the expected version (or no longer active).
    #[error("cart changed concurrently: now at version {actual}")]
    Conflict {
        /// The version the cart is at now (the caller's expectation was older).
        actual: u64,
        /// The stored cart, when the store read it while refusing (a change
        /// can be applied to it again without another read).
        current: Option<Box<Cart>>,
    },
    /// The backend cannot be reached in time.
    #[error("cart store unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bug or corrupt data.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<CartStoreError> for AppError {
    fn from(err: CartStoreError) -> Self {
        match err {
            CartStoreError::NotFound => AppError::not_found(crate::error::Resource::Cart, ""),
            CartStoreError::Conflict { actual, .. } => AppError::aborted(
                crate::error::ErrorReason::CartVersionMismatch,
                format!("the cart changed concurrently (now at version {actual}); reload and retry"),
            ),
            CartStoreError::Unavailable(why) => AppError::unavailable(why),
            CartStoreError::Internal(e) => AppError::Internal(e),
        }
    }
}

/// Converted carts of one currency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConvertedValue {
    /// Converted carts in this currency.
    pub carts: u64,
    /// Sum of their subtotals in minor units (cents, yen).
    pub minor_units: i64,
}

/// The funnel counters. After a sweep,
/// `created == active + converted + deleted + abandoned`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CartStats {
    /// Carts ever created.
    pub created: u64,
    /// Carts live and active now.
    pub active: u64,
    /// Carts converted into orders.
    pub converted: u64,
    /// Active carts deleted by their owner.
    pub deleted: u64,
    /// Active carts that expired.
    pub abandoned: u64,
    /// Converted value per currency.
    pub converted_value: BTreeMap<Currency, ConvertedValue>,
}

/// Where carts live. Every method takes `now` so expiry is decided by one
/// clock (the caller's) and tests can move time forward.
#[async_trait]
pub trait CartStore: Send + Sync + 'static {
    /// Returns the customer's live active cart (`false`), or stores `new` as
    /// their active cart (`true`); atomic, so one customer never gets two.
    async fn create_or_get(&self, new: &Cart, now: DateTime<Utc>) -> Result<(Cart, bool), CartStoreError>;

    /// The live cart with this id, active or converted.
    async fn get(&self, id: Uuid, now: DateTime<Utc>) -> Result<Option<Cart>, CartStoreError>;

    /// The live cart `id` to apply a change to, as this process last saw it:
    /// possibly stale (another replica wrote since), which the compare-and-set
    /// of [`CartStore::replace`] catches. Never for answering a read.
    async fn get_for_update(&self, id: Uuid, now: DateTime<Utc>) -> Result<Option<Cart>, CartStoreError> {
        self.get(id, now).await
    }

    /// The customer's live active cart.
    async fn active_for(&self, customer_id: &str, now: DateTime<Utc>)
    -> Result<Option<Cart>, CartStoreError>;

    /// Compare-and-set: stores `cart` if the stored one is live, active and at
    /// `expected_version`; else `Conflict` with the stored cart (or `NotFound`
    /// when gone). The
    /// expiry is refreshed to `cart.expires_at`. When `cart` is converted, it
    /// leaves the customer's active index and counts as converted with its subtotal.
    async fn replace(
        &self,
        cart: &Cart,
        expected_version: u64,
        now: DateTime<Utc>,
    ) -> Result<(), CartStoreError>;

    /// Deletes a live cart of `owner`'s (`NotFound` for anyone else's), if at
    /// `expected_version` when given. An active cart counts as deleted; a
    /// converted one was already counted as converted.
    async fn delete(
        &self,
        id: Uuid,
        owner: &str,
        expected_version: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<(), CartStoreError>;

    /// Moves active carts expired by `now` into `abandoned`; returns how many.
    async fn sweep(&self, now: DateTime<Utc>) -> Result<u64, CartStoreError>;

    /// The counters, after a sweep.
    async fn stats(&self, now: DateTime<Utc>) -> Result<CartStats, CartStoreError>;
}
