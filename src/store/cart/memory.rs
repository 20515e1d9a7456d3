//! The embedded cart store: everything in one mutex-guarded map, with the same
//! expiry and analytics behaviour as Redis (for the no-Redis default and tests).
//!
//! An expired cart is invisible at once (every read checks the expiry) and
//! reclaimed by the sweep, like Redis: the sweep walks an expiry-ordered set
//! from the front and stops at the first live entry, so it costs only the
//! carts that actually expired.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex, MutexGuard},
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{CartStats, CartStore, CartStoreError};
use crate::domain::cart::{Cart, CartStatus};

/// In-process [`CartStore`]; clones share the same carts.
#[derive(Clone, Default)]
pub struct MemoryCartStore {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    carts: HashMap<Uuid, Cart>,
    /// customer id -> their active cart.
    owners: HashMap<String, Uuid>,
    /// (expires_at, id) of every stored cart, active or converted.
    deadlines: BTreeSet<(DateTime<Utc>, Uuid)>,
    /// Counters; `active` is derived as the number of stored active carts.
    stats: CartStats,
}

impl MemoryCartStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, CartStoreError> {
        self.state
            .lock()
            .map_err(|_| CartStoreError::Internal(anyhow::anyhow!("cart store mutex poisoned")))
    }
}

impl State {
    fn sweep(&mut self, now: DateTime<Utc>) -> u64 {
        let mut abandoned = 0;
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(cart) = self.carts.remove(&id) {
                self.unlink_owner(&cart);
                if cart.status == CartStatus::Active {
                    abandoned += 1;
                }
            }
        }
        self.stats.abandoned += abandoned;
        self.stats.active -= abandoned;
        abandoned
    }

    fn unlink_owner(&mut self, cart: &Cart) {
        if self.owners.get(&cart.customer_id) == Some(&cart.id) {
            self.owners.remove(&cart.customer_id);
        }
    }

    /// Stores `cart`, keeping the deadline index in step.
    fn put(&mut self, cart: Cart) {
        if let Some(old) = self.carts.get(&cart.id) {
            self.deadlines.remove(&(old.expires_at, old.id));
        }
        self.deadlines.insert((cart.expires_at, cart.id));
        self.carts.insert(cart.id, cart);
    }

    fn live(&self, id: Uuid, now: DateTime<Utc>) -> Option<&Cart> {
        self.carts.get(&id).filter(|c| !c.is_expired(now))
    }
}

#[async_trait]
impl CartStore for MemoryCartStore {
    async fn create_or_get(&self, new: &Cart, now: DateTime<Utc>) -> Result<(Cart, bool), CartStoreError> {
        let mut state = self.lock()?;
        if let Some(id) = state.owners.get(&new.customer_id).copied()
            && let Some(existing) = state.live(id, now)
            && existing.status == CartStatus::Active
        {
            return Ok((existing.clone(), false));
        }
        state.owners.insert(new.customer_id.clone(), new.id);
        state.put(new.clone());
        state.stats.created += 1;
        state.stats.active += 1;
        Ok((new.clone(), true))
    }

    async fn get(&self, id: Uuid, now: DateTime<Utc>) -> Result<Option<Cart>, CartStoreError> {
        Ok(self.lock()?.live(id, now).cloned())
    }

    async fn active_for(
        &self,
        customer_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Cart>, CartStoreError> {
        let state = self.lock()?;
        Ok(state
            .owners
            .get(customer_id)
            .and_then(|id| state.live(*id, now))
            .filter(|c| c.status == CartStatus::Active)
            .cloned())
    }

    async fn replace(
        &self,
        cart: &Cart,
        expected_version: u64,
        now: DateTime<Utc>,
    ) -> Result<(), CartStoreError> {
        let mut state = self.lock()?;
        let stored = state.live(cart.id, now).ok_or(CartStoreError::NotFound)?;
        if stored.version != expected_version || stored.status != CartStatus::Active {
            return Err(CartStoreError::Conflict {
                actual: stored.version,
                current: Some(Box::new(stored.clone())),
            });
        }
        if cart.status == CartStatus::Converted {
            let subtotal = cart.subtotal().map_err(anyhow::Error::from)?;
            let minor = subtotal.to_minor_units().map_err(anyhow::Error::from)?;
            let stats = &mut state.stats;
            stats.converted += 1;
            stats.active -= 1;
            let value = stats.converted_value.entry(cart.currency).or_default();
            value.carts += 1;
            value.minor_units = value.minor_units.saturating_add(minor);
            state.unlink_owner(cart);
        }
        state.put(cart.clone());
        Ok(())
    }

    async fn delete(
        &self,
        id: Uuid,
        owner: &str,
        expected_version: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<(), CartStoreError> {
        let mut state = self.lock()?;
        let stored = state
            .live(id, now)
            .filter(|c| c.customer_id == owner)
            .ok_or(CartStoreError::NotFound)?;
        if expected_version.is_some_and(|v| v != stored.version) {
            return Err(CartStoreError::Conflict {
                actual: stored.version,
                current: None,
            });
        }
        let Some(cart) = state.carts.remove(&id) else {
            return Err(CartStoreError::NotFound);
        };
        state.deadlines.remove(&(cart.expires_at, id));
        state.unlink_owner(&cart);
        if cart.status == CartStatus::Active {
            state.stats.deleted += 1;
            state.stats.active -= 1;
        }
        Ok(())
    }

    async fn sweep(&self, now: DateTime<Utc>) -> Result<u64, CartStoreError> {
        Ok(self.lock()?.sweep(now))
    }

    async fn stats(&self, now: DateTime<Utc>) -> Result<CartStats, CartStoreError> {
        let mut state = self.lock()?;
        state.sweep(now);
        Ok(state.stats.clone())
    }
}
