//! Cart handlers: what CartService (gRPC, REST) and CreateOrder call.
//!
//! Each mutation is: the cart as last seen ([`CartStore::get_for_update`]) ->
//! check owner and version -> apply the domain rule -> compare-and-set in the
//! store, which on Redis is one round trip when the cart was seen last by this
//! process. When another writer got in between and the caller gave no
//! `expected_version`, the handler applies its change again to the stored
//! cart the refusal carries (after a short jittered backoff from the second
//! refusal on), so concurrent AddItem calls all count. With an
//! `expected_version`, any intervening write is ABORTED.
//!
//! Reads are allowed to the owner and to admins; writes and checkout to the
//! owner only. Anyone else gets NOT_FOUND, as if the cart did not exist.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use rand::Rng;
use uuid::Uuid;

use crate::{
    auth::Principal,
    domain::{
        cart::{Cart, CartChange, CartError, CartStatus, NewItem, parse_product_id, parse_quantity},
        money::Currency,
    },
    error::{AppError, Resource},
    metrics,
    shutdown::Shutdown,
    store::cart::{CartStore, CartStoreError},
};

mod analytics;
mod input;

use self::input::{Checks, cart_id_of, expected_of, parse_cart_id};
pub use self::{
    analytics::CartAnalytics,
    input::{AddItem, UpdateItemQuantity},
};

/// Compare-and-set attempts before a contended mutation gives up with ABORTED.
const MAX_ATTEMPTS: u32 = 64;

/// The cart application service; cheap to clone.
#[derive(Clone)]
pub struct CartApp {
    store: Arc<dyn CartStore>,
    ttl: Duration,
}

impl CartApp {
    /// A cart service over `store`; carts expire `ttl` after their last change.
    pub fn new(store: Arc<dyn CartStore>, ttl: Duration) -> Self {
        Self { store, ttl }
    }

    /// CreateCart: the caller's active cart, created (`true`) unless one exists
    /// (`false`, whatever its currency). Empty `currency` means USD.
    #[tracing::instrument(skip(self, principal), fields(customer = %principal.subject, cart_id = tracing::field::Empty))]
    pub async fn create_cart(&self, principal: &Principal, currency: &str) -> Result<(Cart, bool), AppError> {
        let result = async {
            let currency = match currency {
                "" => Currency::default(),
                code => code
                    .parse::<Currency>()
                    .map_err(|e| AppError::invalid("currency", e.to_string()))?,
            };
            let now = Utc::now();
            let new = Cart::new(&principal.subject, currency, now, self.ttl);
            let (cart, created) = self.store.create_or_get(&new, now).await?;
            tracing::Span::current().record("cart_id", tracing::field::display(cart.id));
            if created {
                metrics::cart_created();
            }
            Ok((cart, created))
        }
        .await;
        observe("create_cart", result)
    }

    /// GetActiveCart: the caller's active cart; NOT_FOUND when none.
    #[tracing::instrument(skip(self, principal), fields(customer = %principal.subject))]
    pub async fn get_active_cart(&self, principal: &Principal) -> Result<Cart, AppError> {
        let result = async {
            self.store
                .active_for(&principal.subject, Utc::now())
                .await?
                .ok_or_else(|| AppError::not_found(Resource::ActiveCart, &principal.subject))
        }
        .await;
        observe("get_active_cart", result)
    }

    /// GetCart: a cart of the caller's (any cart for an admin).
    #[tracing::instrument(skip(self, principal), fields(customer = %principal.subject))]
    pub async fn get_cart(&self, principal: &Principal, cart_id: &str) -> Result<Cart, AppError> {
        let result = async {
            let id = parse_cart_id(cart_id)?;
            let cart = self.live(id).await?;
            if principal.may_access(&cart.customer_id) {
                Ok(cart)
            } else {
                Err(not_found(id))
            }
        }
        .await;
        observe("get_cart", result)
    }

    /// AddItem: adds the product or adds to its quantity, taking the new price.
    #[tracing::instrument(skip(self, principal, input), fields(customer = %principal.subject, cart_id = %input.cart_id, product_id = %input.product_id))]
    pub async fn add_item(&self, principal: &Principal, input: AddItem) -> Result<Cart, AppError> {
        let result = async {
            let mut checks = Checks::default();
            let (Some(id), Some(expected)) = (
                checks.check(cart_id_of(&input.cart_id)),
                checks.check(expected_of(input.expected_version)),
            ) else {
                return Err(checks.into_error());
            };
            let cart = self
                .mutate(principal, id, expected, |cart| {
                    NewItem::parse(
                        &input.product_id,
                        &input.product_name,
                        input.quantity,
                        &input.unit_price,
                        cart.currency,
                    )
                    .map(CartChange::AddItem)
                })
                .await?;
            Ok(cart)
        }
        .await;
        observe("add_item", result)
    }

    /// UpdateItemQuantity: sets a line's quantity; 0 removes it.
    #[tracing::instrument(skip(self, principal, input), fields(customer = %principal.subject, cart_id = %input.cart_id, product_id = %input.product_id))]
    pub async fn update_item_quantity(
        &self,
        principal: &Principal,
        input: UpdateItemQuantity,
    ) -> Result<Cart, AppError> {
        let result = async {
            let mut checks = Checks::default();
            let product_id = checks.check(parse_product_id(&input.product_id));
            let quantity = checks.check(parse_quantity(input.quantity, 0));
            let id = checks.check(cart_id_of(&input.cart_id));
            let expected = checks.check(expected_of(input.expected_version));
            let (Some(product_id), Some(quantity), Some(id), Some(expected)) =
                (product_id, quantity, id, expected)
            else {
                return Err(checks.into_error());
            };
            let change = CartChange::SetQuantity { product_id, quantity };
            let cart = self
                .mutate(principal, id, expected, |_| Ok(change.clone()))
                .await?;
            Ok(cart)
        }
        .await;
        observe("update_item_quantity", result)
    }

    /// RemoveItem: removes a line; NOT_FOUND when the product is not in the cart.
    #[tracing::instrument(skip(self, principal), fields(customer = %principal.subject))]
    pub async fn remove_item(
        &self,
        principal: &Principal,
        cart_id: &str,
        product_id: &str,
        expected_version: Option<i64>,
    ) -> Result<Cart, AppError> {
        let result = async {
            let mut checks = Checks::default();
            let product_id = checks.check(parse_product_id(product_id));
            let id = checks.check(cart_id_of(cart_id));
            let expected = checks.check(expected_of(expected_version));
            let (Some(product_id), Some(id), Some(expected)) = (product_id, id, expected) else {
                return Err(checks.into_error());
            };
            let change = CartChange::RemoveItem { product_id };
            let cart = self
                .mutate(principal, id, expected, |_| Ok(change.clone()))
                .await?;
            Ok(cart)
        }
        .await;
        observe("remove_item", result)
    }

    /// DeleteCart: removes the cart (it counts as deleted, not abandoned).
    #[tracing::instrument(skip(self, principal), fields(customer = %principal.subject))]
    pub async fn delete_cart(
        &self,
        principal: &Principal,
        cart_id: &str,
        expected_version: Option<i64>,
    ) -> Result<(), AppError> {
        let result = async {
            let mut checks = Checks::default();
            let (Some(id), Some(expected)) = (
                checks.check(cart_id_of(cart_id)),
                checks.check(expected_of(expected_version)),
            ) else {
                return Err(checks.into_error());
            };
            // The store checks owner and version itself: no read first.
            self.store
                .delete(id, &principal.subject, expected, Utc::now())
                .await?;
            Ok(())
        }
        .await;
        observe("delete_cart", result)
    }

    /// GetCartAnalytics: the funnel counters; admin only.
    #[tracing::instrument(skip(self, principal), fields(customer = %principal.subject))]
    pub async fn analytics(&self, principal: &Principal) -> Result<CartAnalytics, AppError> {
        let result = async {
            principal.require_admin()?;
            // Sweep here (not only inside stats) so the abandonment metric sees it.
            self.sweep().await?;
            let stats = self.store.stats(Utc::now()).await?;
            CartAnalytics::from_stats(&stats)
        }
        .await;
        observe("analytics", result)
    }

    /// For CreateOrder: the caller's cart as it is now, to price the order from.
    /// Errors: INVALID_ARGUMENT never (the id is typed); NOT_FOUND when absent,
    /// expired or another customer's; FAILED_PRECONDITION when converted or empty.
    /// Pass the returned `version` to [`CartApp::mark_converted`].
    #[tracing::instrument(skip(self, principal), fields(customer = %principal.subject))]
    pub async fn checkout_snapshot(&self, principal: &Principal, cart_id: Uuid) -> Result<Cart, AppError> {
        let result = async {
            let cart = self.owned(principal, cart_id).await?;
            cart.check_checkout()?;
            Ok(cart)
        }
        .await;
        observe("checkout_snapshot", result)
    }

    /// For CreateOrder: converts the cart into `order_id` by compare-and-set on
    /// `expected_version` (the snapshot's). ABORTED when the cart changed since
    /// the snapshot (an item added during checkout is never lost nor silently
    /// ordered: re-snapshot and retry); NOT_FOUND when gone; FAILED_PRECONDITION
    /// when converted into another order or empty. Idempotent: converting again
    /// into the same `order_id` succeeds. The cart leaves the customer's active
    /// slot and counts as converted, with its subtotal, in analytics.
    #[tracing::instrument(skip(self))]
    pub async fn mark_converted(
        &self,
        cart_id: Uuid,
        expected_version: u64,
        order_id: Uuid,
    ) -> Result<(), AppError> {
        let result = async {
            let now = Utc::now();
            let mut cart = self.basis(cart_id, Some(expected_version)).await?;
            let converted =
                |cart: &Cart| cart.status == CartStatus::Converted && cart.order_id == Some(order_id);
            if converted(&cart) {
                return Ok(());
            }
            cart.check_version(Some(expected_version))?;
            cart.convert(order_id, now, self.ttl)?;
            match self.store.replace(&cart, expected_version, now).await {
                Ok(()) => {}
                // A retry of the same CreateOrder after the conversion landed.
                Err(CartStoreError::Conflict {
                    current: Some(current),
                    ..
                }) if converted(&current) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
            metrics::cart_converted();
            Ok(())
        }
        .await;
        observe("convert", result)
    }

    /// Counts carts expired by now as abandoned; returns how many.
    pub async fn sweep(&self) -> Result<u64, AppError> {
        let swept = self.store.sweep(Utc::now()).await?;
        metrics::carts_abandoned(swept);
        Ok(swept)
    }

    /// Sweeps every `every` until shutdown, so abandonment shows up in metrics
    /// and expired carts leave the index even when nobody reads analytics.
    pub async fn run_sweeper(self, every: Duration, shutdown: Shutdown) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = ticks.tick() => {
                    if let Err(e) = self.sweep().await {
                        tracing::warn!(error = %e, "cart sweep failed");
                    }
                }
            }
        }
    }

    /// The sweeper period for this TTL: a quarter of it, between 1 s and 60 s.
    pub fn sweep_period(&self) -> Duration {
        (self.ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
    }

    /// Take the cart as last seen, check owner and version, apply,
    /// compare-and-set; on a concurrent write, applied again to the stored
    /// cart unless the caller pinned a version.
    async fn mutate(
        &self,
        principal: &Principal,
        id: Uuid,
        expected: Option<u64>,
        change: impl Fn(&Cart) -> Result<CartChange, CartError>,
    ) -> Result<Cart, AppError> {
        let mut cart = self.basis(id, expected).await?;
        if cart.customer_id != principal.subject {
            return Err(not_found(id));
        }
        let mut attempt = 0;
        loop {
            cart.check_version(expected)?;
            let read_version = cart.version;
            let now = Utc::now();
            cart.apply(&change(&cart)?, now, self.ttl)?;
            match self.store.replace(&cart, read_version, now).await {
                Ok(()) => return Ok(cart),
                Err(CartStoreError::Conflict { current, .. })
                    if expected.is_none() && attempt < MAX_ATTEMPTS =>
                {
                    // The first refusal is usually a stale basis (another
                    // replica wrote): retry at once. Later ones are contention:
                    // a jittered, growing pause so contenders stop colliding.
                    if attempt > 0 {
                        let cap = 1u64 << attempt.min(5);
                        let pause = rand::rng().random_range(0..=cap * 1000);
                        tokio::time::sleep(Duration::from_micros(pause)).await;
                    }
                    attempt += 1;
                    cart = match current {
                        Some(current) => *current,
                        None => self.live(id).await?,
                    };
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The cart to apply a change to: as the store last saw it, or read
    /// afresh when the caller pinned a version the remembered one is not at
    /// (it may be the remembered cart that is behind).
    async fn basis(&self, id: Uuid, expected: Option<u64>) -> Result<Cart, AppError> {
        let cart = self
            .store
            .get_for_update(id, Utc::now())
            .await?
            .ok_or_else(|| not_found(id))?;
        match expected {
            Some(version) if version != cart.version => self.live(id).await,
            _ => Ok(cart),
        }
    }

    /// The live cart `id`, owned by the caller (admins included: writes are owner-only).
    async fn owned(&self, principal: &Principal, id: Uuid) -> Result<Cart, AppError> {
        let cart = self.live(id).await?;
        if cart.customer_id == principal.subject {
            Ok(cart)
        } else {
            Err(not_found(id))
        }
    }

    async fn live(&self, id: Uuid) -> Result<Cart, AppError> {
        self.store.get(id, Utc::now()).await?.ok_or_else(|| not_found(id))
    }
}

fn not_found(id: Uuid) -> AppError {
    AppError::not_found(Resource::Cart, id)
}

/// Counts the operation by outcome and passes its result on.
fn observe<T>(operation: &'static str, result: Result<T, AppError>) -> Result<T, AppError> {
    metrics::cart_operation(operation, &result);
    result
}
