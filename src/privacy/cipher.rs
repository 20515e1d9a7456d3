//! The cryptography of crypto-shredding, with no I/O: a master key wraps each
//! customer's data key; a data key seals that customer's personal data.
//!
//! Both use ChaCha20-Poly1305 with a fresh random 96-bit nonce per message
//! (random nonces are safe far beyond the number of messages one key seals
//! here). The associated data binds each ciphertext to its place: a sealed
//! value to its customer, a wrapped key to its customer and key id, so that
//! copying one customer's blob onto another's row fails to open.

use chacha20poly1305::{
    ChaCha20Poly1305, Key, KeyInit, Nonce,
    aead::{Aead, AeadCore, OsRng, Payload},
};
use uuid::Uuid;

use super::PrivacyError;

const NONCE_LEN: usize = 12;
const SEALED_VERSION: u8 = 1;
const SEALED_AAD: &[u8] = b"commerce-pii-v1:";
const WRAPPED_AAD: &[u8] = b"commerce-dek-v1:";

/// The development master key (hex); `ENVIRONMENT=production` refuses it.
pub const DEVELOPMENT_MASTER_KEY: &str = "6465762d6f6e6c792d7069692d6d61737465722d6b65792d6e6f742d73656372";

/// The key-encryption key from PII_MASTER_KEY. Never logged.
#[derive(Clone)]
pub struct MasterKey(Key);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// Parses 64 hex characters (32 bytes).
    pub fn from_hex(hex_key: &str) -> Result<Self, PrivacyError> {
        let bytes = hex::decode(hex_key.trim())
            .map_err(|_| PrivacyError::Config("PII_MASTER_KEY must be 64 hex characters".into()))?;
        if bytes.len() != 32 {
            return Err(PrivacyError::Config(
                "PII_MASTER_KEY must be 64 hex characters".into(),
            ));
        }
        Ok(Self(*Key::from_slice(&bytes)))
    }

    /// Encrypts `key` for storage: `nonce || ciphertext+tag`.
    pub fn wrap(&self, customer_id: &str, key: &DataKey) -> Result<Vec<u8>, PrivacyError> {
        let aad = wrapped_aad(customer_id, key.id);
        seal_with(&self.0, &aad, key.secret.as_slice())
    }

    /// Decrypts a stored key; an error means a wrong master key or a tampered row.
    pub fn unwrap_key(
        &self,
        customer_id: &str,
        key_id: Uuid,
        wrapped: &[u8],
    ) -> Result<DataKey, PrivacyError> {
        let aad = wrapped_aad(customer_id, key_id);
        let secret = open_with(&self.0, &aad, wrapped)
            .ok_or_else(|| PrivacyError::Corrupt(format!("the data key {key_id} does not unwrap")))?;
        if secret.len() != 32 {
            return Err(PrivacyError::Corrupt(format!(
                "the data key {key_id} has a bad length"
            )));
        }
        Ok(DataKey {
            id: key_id,
            secret: *Key::from_slice(&secret),
        })
    }
}

/// One customer's data key: a random 256-bit key and its id. Never logged.
#[derive(Clone)]
pub struct DataKey {
    /// Identifies the key inside each ciphertext it sealed.
    pub id: Uuid,
    secret: Key,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl DataKey {
    /// A fresh random key from the operating system's generator.
    pub fn generate() -> Self {
        Self {
            id: Uuid::new_v4(),
            secret: ChaCha20Poly1305::generate_key(&mut OsRng),
        }
    }

    /// Seals `plaintext` for `customer_id`: `version || key id || nonce || ciphertext+tag`.
    pub fn seal(&self, customer_id: &str, plaintext: &[u8]) -> Result<Vec<u8>, PrivacyError> {
        let mut out = Vec::with_capacity(1 + 16 + NONCE_LEN + plaintext.len() + 16);
        out.push(SEALED_VERSION);
        out.extend_from_slice(self.id.as_bytes());
        out.extend(seal_with(&self.secret, &sealed_aad(customer_id), plaintext)?);
        Ok(out)
    }

    /// Opens what [`DataKey::seal`] produced for the same customer.
    pub fn open(&self, customer_id: &str, sealed: &[u8]) -> Result<Vec<u8>, PrivacyError> {
        let body = sealed
            .get(17..)
            .filter(|_| sealed_key_id(sealed) == Some(self.id))
            .ok_or_else(|| PrivacyError::Corrupt("sealed value of another key".into()))?;
        open_with(&self.secret, &sealed_aad(customer_id), body)
            .ok_or_else(|| PrivacyError::Corrupt("sealed value does not open".into()))
    }
}

/// The id of the key that sealed `sealed`, if it is in our format.
pub fn sealed_key_id(sealed: &[u8]) -> Option<Uuid> {
    match sealed {
        [SEALED_VERSION, rest @ ..] if rest.len() >= 16 => Uuid::from_slice(&rest[..16]).ok(),
        _ => None,
    }
}

fn sealed_aad(customer_id: &str) -> Vec<u8> {
    [SEALED_AAD, customer_id.as_bytes()].concat()
}

fn wrapped_aad(customer_id: &str, key_id: Uuid) -> Vec<u8> {
    [WRAPPED_AAD, customer_id.as_bytes(), b":", key_id.as_bytes()].concat()
}

fn seal_with(key: &Key, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, PrivacyError> {
    let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
    let ciphertext = ChaCha20Poly1305::new(key)
        .encrypt(&nonce, Payload { msg: plaintext, aad })
        .map_err(|_| PrivacyError::Corrupt("encryption failed".into()))?;
    Ok([nonce.as_slice(), &ciphertext].concat())
}

fn open_with(key: &Key, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_LEN {
        return None;
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    ChaCha20Poly1305::new(key)
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad })
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_for_their_customer_and_key() {
        let key = DataKey::generate();
        let sealed = key.seal("alice", b"1 Main St").unwrap();
        assert_eq!(sealed_key_id(&sealed), Some(key.id));
        assert!(!sealed.windows(4).any(|w| w == b"Main"));
        assert_eq!(key.open("alice", &sealed).unwrap(), b"1 Main St");
        assert!(key.open("bob", &sealed).is_err());
        assert!(DataKey::generate().open("alice", &sealed).is_err());
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(key.open("alice", &tampered).is_err());
        // Two seals of the same text differ (fresh nonce).
        assert_ne!(key.seal("alice", b"x").unwrap(), key.seal("alice", b"x").unwrap());
    }

    #[test]
    fn wrapped_keys_unwrap_only_under_their_master_customer_and_id() {
        let master = MasterKey::from_hex(DEVELOPMENT_MASTER_KEY).unwrap();
        let key = DataKey::generate();
        let wrapped = master.wrap("alice", &key).unwrap();
        let back = master.unwrap_key("alice", key.id, &wrapped).unwrap();
        assert_eq!(
            back.open("alice", &key.seal("alice", b"hi").unwrap()).unwrap(),
            b"hi"
        );
        assert!(master.unwrap_key("bob", key.id, &wrapped).is_err());
        assert!(master.unwrap_key("alice", Uuid::new_v4(), &wrapped).is_err());
        let other = MasterKey::from_hex(&"ab".repeat(32)).unwrap();
        assert!(other.unwrap_key("alice", key.id, &wrapped).is_err());
    }

    #[test]
    fn master_keys_must_be_32_hex_bytes_and_never_print() {
        assert!(MasterKey::from_hex("abc").is_err());
        assert!(MasterKey::from_hex(&"zz".repeat(32)).is_err());
        let master = MasterKey::from_hex(DEVELOPMENT_MASTER_KEY).unwrap();
        assert_eq!(format!("{master:?}"), "MasterKey(..)");
        let key = DataKey::generate();
        assert!(!format!("{key:?}").contains("secret"));
    }
}
