//! Personal data under crypto-shredding (GDPR erasure that fits event sourcing).
//!
//! Events are immutable, so a customer's personal data (shipping address,
//! payment method reference) is stored in them *sealed* with a data key of that
//! customer. Forgetting the customer destroys the key: the events stay and
//! replay, but the sealed parts can never be opened again and read as erased.
//!
//! # Layout
//! - [`cipher`]: ChaCha20-Poly1305 sealing and key wrapping, no I/O.
//! - [`store`]: the `customer_keys` and `forgotten_customers` tables.
//! - [`vault`]: the [`Vault`] the application uses: encrypt, decrypt, forget,
//!   and sealing the `personal` part of event payloads.

pub mod cipher;
pub mod store;
pub mod vault;

pub use self::{
    store::{KeyStore, PostgresKeyStore, SqliteKeyStore, Tombstone},
    vault::{ERASED, PERSONAL_FIELD, SEALED_FIELD, Vault, master_key},
};
use crate::error::AppError;

/// `Debug` for a type that holds personal data: prints only the type name,
/// so that `{:?}` in a log line or an error can never leak an address or a
/// payment method.
#[macro_export]
macro_rules! redacted_debug {
    ($($ty:ty),+ $(,)?) => {$(
        impl ::std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(concat!(stringify!($ty), "([redacted])"))
            }
        }
    )+};
}

/// Failures of the privacy layer.
#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    /// PII_MASTER_KEY is missing or malformed.
    #[error("privacy configuration: {0}")]
    Config(String),
    /// The key store is unreachable right now.
    #[error("personal-data key store unavailable: {0}")]
    Unavailable(String),
    /// A key or sealed value that should open does not (wrong master key, tampering).
    #[error("personal data does not decrypt: {0}")]
    Corrupt(String),
    /// Anything else.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<sqlx::Error> for PrivacyError {
    fn from(err: sqlx::Error) -> Self {
        if let Some(why) = crate::db::unavailable(&err) {
            Self::Unavailable(why)
        } else {
            Self::Other(anyhow::Error::new(err).context("customer key store query"))
        }
    }
}

impl From<PrivacyError> for AppError {
    fn from(err: PrivacyError) -> Self {
        match err {
            PrivacyError::Unavailable(msg) => AppError::unavailable(msg),
            other => AppError::Internal(anyhow::Error::new(other)),
        }
    }
}
