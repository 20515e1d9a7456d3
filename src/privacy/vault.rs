//! The [`Vault`]: per-customer encryption with a small key cache, erasure, and
//! the sealing of the `personal` part of event payloads.
//!
//! # Sealed payloads
//! [`Vault::seal_personal`] turns `{"personal": {...}, ...}` into
//! `{"personal": <same shape, every string "[erased]">, "personal_sealed":
//! {"customer_id": .., "data": base64}, ...}`. [`Vault::open_personal`] puts
//! the plaintext back while the customer's key exists, and otherwise leaves
//! the erased shape, which still deserializes into the domain type: replay of a
//! forgotten customer's events works and shows "[erased]".
//!
//! # Cache and replicas
//! Keys are cached for [`CACHE_TTL`] (at most [`CACHE_MAX`] customers). A
//! forget clears this replica's entry at once and is announced on the bus
//! ([`crate::bus::EventBus::announce_forgotten`]); every replica follows the
//! announcements ([`Vault::follow_forgets`]) and drops its entry as soon as
//! it reads one. Should the bus be down, [`CACHE_TTL`] still bounds how long
//! another replica may keep opening that customer's data. The key is gone
//! from the database at once, so nothing written later can use it.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::Utc;
use serde_json::{Value, json};

use super::{
    PrivacyError,
    cipher::{DEVELOPMENT_MASTER_KEY, DataKey, MasterKey, sealed_key_id},
    store::{KeyStore, StoredKey, Tombstone},
};
use crate::{bus::EventBus, config::PrivacySettings, shutdown::Shutdown};

/// How long a replica trusts a cached key (or its absence).
pub const CACHE_TTL: Duration = Duration::from_secs(30);

/// Most customers whose keys are cached at once.
pub const CACHE_MAX: usize = 10_000;

/// What an erased personal string reads as.
pub const ERASED: &str = "[erased]";

/// The payload field holding personal data.
pub const PERSONAL_FIELD: &str = "personal";

/// The payload field holding the sealed personal data.
pub const SEALED_FIELD: &str = "personal_sealed";

/// PII_MASTER_KEY, or the development key in development and test; other
/// environments refuse a missing key and the development key.
pub fn master_key(settings: &PrivacySettings) -> Result<MasterKey, PrivacyError> {
    let strict = !settings.environment.allows_development_secrets();
    match settings.master_key.as_deref() {
        Some(DEVELOPMENT_MASTER_KEY) | None if strict => Err(PrivacyError::Config(format!(
            "ENVIRONMENT={} needs PII_MASTER_KEY (64 hex characters, not the development key)",
            settings.environment
        ))),
        Some(key) => MasterKey::from_hex(key),
        None => MasterKey::from_hex(DEVELOPMENT_MASTER_KEY),
    }
}

/// Per-customer encryption of personal data; cheap to clone.
#[derive(Clone)]
pub struct Vault {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn KeyStore>,
    master: MasterKey,
    cache: Mutex<HashMap<String, Cached>>,
    /// Bumped by every forget this vault hears of: a key loaded before a
    /// forget it did not see yet must not be cached after it.
    forgets_seen: AtomicU64,
}

struct Cached {
    key: Option<DataKey>,
    at: Instant,
}

impl Vault {
    /// A vault over `store`, wrapping keys with `master`.
    pub fn new(store: Arc<dyn KeyStore>, master: MasterKey) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                master,
                cache: Mutex::new(HashMap::new()),
                forgets_seen: AtomicU64::new(0),
            }),
        }
    }

    /// Encrypts `plaintext` for `customer_id`, creating their key on first use.
    pub async fn encrypt(&self, customer_id: &str, plaintext: &[u8]) -> Result<Vec<u8>, PrivacyError> {
        let key = match self.key(customer_id).await? {
            Some(key) => key,
            None => self.create_key(customer_id).await?,
        };
        key.seal(customer_id, plaintext)
    }

    /// Decrypts what [`Vault::encrypt`] produced; None once the customer was
    /// forgotten (their key, or the key that sealed this, is gone).
    pub async fn decrypt(
        &self,
        customer_id: &str,
        ciphertext: &[u8],
    ) -> Result<Option<Vec<u8>>, PrivacyError> {
        let sealed_by =
            sealed_key_id(ciphertext).ok_or_else(|| PrivacyError::Corrupt("not a sealed value".into()))?;
        match self.key(customer_id).await? {
            Some(key) if key.id == sealed_by => key.open(customer_id, ciphertext).map(Some),
            _ => Ok(None),
        }
    }

    /// Forgets a customer: destroys their key and records who, when and why.
    pub async fn forget(
        &self,
        customer_id: &str,
        forgotten_by: &str,
        reason: &str,
    ) -> Result<Tombstone, PrivacyError> {
        let tombstone = self
            .inner
            .store
            .forget(customer_id, forgotten_by, reason, Utc::now())
            .await?;
        self.drop_cached(customer_id);
        Ok(tombstone)
    }

    /// Drops the cached keys of customers forgotten on any replica, as the
    /// bus announces them, until `shutdown`.
    pub async fn follow_forgets(self, bus: Arc<dyn EventBus>, shutdown: Shutdown) {
        let mut cursor: Option<String> = None;
        let mut failing = false;
        while !shutdown.is_triggered() {
            let read = tokio::select! {
                read = bus.forgotten_after(cursor.as_deref(), Duration::from_millis(250)) => read,
                () = shutdown.wait() => return,
            };
            match read {
                Ok((next, customers)) => {
                    for customer in customers {
                        self.drop_cached(&customer);
                    }
                    if std::mem::take(&mut failing) {
                        tracing::info!("following forget notices again");
                    }
                    cursor = Some(next);
                }
                Err(error) => {
                    // Logged once per outage; CACHE_TTL bounds the staleness meanwhile.
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(%error, "reading forget notices failed; cached keys expire within 30 s meanwhile");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = shutdown.wait() => return,
                    }
                }
            }
        }
    }

    fn drop_cached(&self, customer_id: &str) {
        self.inner.forgets_seen.fetch_add(1, Ordering::AcqRel);
        self.cache().remove(customer_id);
    }

    /// The erasure record of a customer, if any.
    pub async fn tombstone(&self, customer_id: &str) -> Result<Option<Tombstone>, PrivacyError> {
        self.inner.store.tombstone(customer_id).await
    }

    /// Seals `payload["personal"]` for `customer_id` (see the module doc).
    /// Returns false when there was nothing to seal or it was sealed already.
    pub async fn seal_personal(&self, customer_id: &str, payload: &mut Value) -> Result<bool, PrivacyError> {
        let Some(object) = payload.as_object_mut() else {
            return Ok(false);
        };
        if object.contains_key(SEALED_FIELD) {
            return Ok(false);
        }
        let Some(personal) = object.get(PERSONAL_FIELD) else {
            return Ok(false);
        };
        let plaintext = serde_json::to_vec(personal).map_err(anyhow::Error::from)?;
        let sealed = self.encrypt(customer_id, &plaintext).await?;
        let erased = erase(personal);
        object.insert(PERSONAL_FIELD.into(), erased);
        object.insert(
            SEALED_FIELD.into(),
            json!({ "customer_id": customer_id, "data": STANDARD.encode(sealed) }),
        );
        Ok(true)
    }

    /// Opens `payload["personal_sealed"]` back into `payload["personal"]` while
    /// the customer's key exists, and removes the sealed field either way. A
    /// forgotten customer's payload keeps the erased shape. Returns true when
    /// the personal data was restored.
    pub async fn open_personal(&self, payload: &mut Value) -> Result<bool, PrivacyError> {
        let Some(object) = payload.as_object_mut() else {
            return Ok(false);
        };
        let Some(sealed) = object.remove(SEALED_FIELD) else {
            return Ok(false);
        };
        let customer_id = sealed["customer_id"]
            .as_str()
            .ok_or_else(|| PrivacyError::Corrupt("sealed personal data without customer".into()))?;
        let data = sealed["data"]
            .as_str()
            .and_then(|d| STANDARD.decode(d).ok())
            .ok_or_else(|| PrivacyError::Corrupt("sealed personal data is not base64".into()))?;
        let Some(plaintext) = self.decrypt(customer_id, &data).await? else {
            return Ok(false);
        };
        let personal: Value = serde_json::from_slice(&plaintext).map_err(anyhow::Error::from)?;
        object.insert(PERSONAL_FIELD.into(), personal);
        Ok(true)
    }

    /// The customer's key, from the cache or the store.
    async fn key(&self, customer_id: &str) -> Result<Option<DataKey>, PrivacyError> {
        if let Some(cached) = self.cache().get(customer_id)
            && cached.at.elapsed() < CACHE_TTL
        {
            return Ok(cached.key.clone());
        }
        let forgets_seen = self.inner.forgets_seen.load(Ordering::Acquire);
        let key = match self.inner.store.load(customer_id).await? {
            Some(stored) => Some(self.unwrap(&stored)?),
            None => None,
        };
        // A forget heard meanwhile may be this customer's: use the key once,
        // do not cache it.
        if self.inner.forgets_seen.load(Ordering::Acquire) == forgets_seen {
            self.remember(customer_id, key.clone());
        }
        Ok(key)
    }

    async fn create_key(&self, customer_id: &str) -> Result<DataKey, PrivacyError> {
        let fresh = DataKey::generate();
        let stored = StoredKey {
            customer_id: customer_id.to_string(),
            key_id: fresh.id,
            wrapped: self.inner.master.wrap(customer_id, &fresh)?,
        };
        // Another replica may have created one first: use whichever is stored.
        let stored = self.inner.store.insert(stored).await?;
        let key = self.unwrap(&stored)?;
        self.remember(customer_id, Some(key.clone()));
        Ok(key)
    }

    fn unwrap(&self, stored: &StoredKey) -> Result<DataKey, PrivacyError> {
        self.inner
            .master
            .unwrap_key(&stored.customer_id, stored.key_id, &stored.wrapped)
    }

    fn remember(&self, customer_id: &str, key: Option<DataKey>) {
        let mut cache = self.cache();
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, c| c.at.elapsed() < CACHE_TTL);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(
            customer_id.to_string(),
            Cached {
                key,
                at: Instant::now(),
            },
        );
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        // A panic elsewhere cannot leave an entry half-written: keep using the map.
        self.inner.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The same shape with nothing personal left: strings "[erased]", numbers 0,
/// booleans false, so that it still deserializes into the domain type.
pub fn erase(value: &Value) -> Value {
    match value {
        Value::String(_) => Value::String(ERASED.into()),
        Value::Number(_) => json!(0),
        Value::Bool(_) => Value::Bool(false),
        Value::Array(items) => Value::Array(items.iter().map(erase).collect()),
        Value::Object(fields) => Value::Object(fields.iter().map(|(k, v)| (k.clone(), erase(v))).collect()),
        Value::Null => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erasing_keeps_the_shape_and_drops_every_value() {
        let personal = json!({
            "shipping_address": {"line1": "1 Main St", "line2": null, "zip": "12345", "floor": 3},
            "payment_method": "pm_tok_visa",
        });
        let erased = erase(&personal);
        assert_eq!(
            erased,
            json!({
                "shipping_address": {"line1": ERASED, "line2": null, "zip": ERASED, "floor": 0},
                "payment_method": ERASED,
            })
        );
    }
}
