//! Trusted keys, from `trust.yaml`.
//!
//! A `TrustStore` is an immutable value: consumers hold it in an
//! `ArcSwap` and swap in a new one when `trust.yaml` changes, so keys rotate
//! without a restart.

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::VerifyingKey;

use mlcore_config::{KeyPurpose, TrustConfig};
use mlcore_market::civil;

/// One trusted key.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    /// The key.
    pub key: VerifyingKey,
    /// What it may sign.
    pub purposes: BTreeSet<KeyPurpose>,
    /// Valid from (ms since the epoch, inclusive).
    pub valid_from_ms: u64,
    /// Valid until (ms since the epoch, exclusive: the end of `valid_until`'s day).
    pub valid_until_ms: u64,
}

/// Keys by id, and revocations.
#[derive(Debug, Clone, Default)]
pub struct TrustStore {
    keys: BTreeMap<String, TrustedKey>,
    revoked: BTreeSet<String>,
}

/// Why a key is not usable for a signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRefusal {
    /// Not in `trust.yaml`.
    #[error("key `{0}` is not trusted")]
    Unknown(String),
    /// Listed under `revoked`.
    #[error("key `{0}` is revoked")]
    Revoked(String),
    /// Outside its validity window.
    #[error("key `{0}` is not valid at this time")]
    OutsideWindow(String),
    /// Not allowed to sign this kind of document.
    #[error("key `{id}` may not sign {purpose:?}")]
    Purpose {
        /// Key id.
        id: String,
        /// The purpose asked for.
        purpose: KeyPurpose,
    },
}

/// A `trust.yaml` entry that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("trust.yaml key `{id}`: {reason}")]
pub struct TrustConfigError {
    /// Key id.
    pub id: String,
    /// What is wrong.
    pub reason: String,
}

impl TrustStore {
    /// Builds the store from configuration.
    pub fn from_config(cfg: &TrustConfig) -> Result<Self, TrustConfigError> {
        let mut keys = BTreeMap::new();
        for k in &cfg.keys {
            let err = |reason: String| TrustConfigError {
                id: k.id.clone(),
                reason,
            };
            let bytes: [u8; 32] = hex::decode(&k.public_key)
                .map_err(|e| err(e.to_string()))?
                .try_into()
                .map_err(|_| err("public_key must be 32 bytes".into()))?;
            let key = VerifyingKey::from_bytes(&bytes).map_err(|e| err(e.to_string()))?;
            let day_ms = |s: &str| civil::parse(s).map(|d| (d * 86_400_000).max(0) as u64);
            let from =
                day_ms(&k.valid_from).ok_or_else(|| err(format!("bad valid_from {}", k.valid_from)))?;
            let until =
                day_ms(&k.valid_until).ok_or_else(|| err(format!("bad valid_until {}", k.valid_until)))?;
            keys.insert(
                k.id.clone(),
                TrustedKey {
                    key,
                    purposes: k.purposes.iter().copied().collect(),
                    valid_from_ms: from,
                    valid_until_ms: until + 86_400_000,
                },
            );
        }
        Ok(Self {
            keys,
            revoked: cfg.revoked.iter().cloned().collect(),
        })
    }

    /// The key `id` if it may sign `purpose` at `now_ms`.
    pub fn key_for(&self, id: &str, purpose: KeyPurpose, now_ms: u64) -> Result<&VerifyingKey, KeyRefusal> {
        if self.revoked.contains(id) {
            return Err(KeyRefusal::Revoked(id.to_owned()));
        }
        let k = self
            .keys
            .get(id)
            .ok_or_else(|| KeyRefusal::Unknown(id.to_owned()))?;
        if !k.purposes.contains(&purpose) {
            return Err(KeyRefusal::Purpose {
                id: id.to_owned(),
                purpose,
            });
        }
        if now_ms < k.valid_from_ms || now_ms >= k.valid_until_ms {
            return Err(KeyRefusal::OutsideWindow(id.to_owned()));
        }
        Ok(&k.key)
    }
}

/// The trust store as consumers hold it: readers take a snapshot without
/// locking; a reload of `trust.yaml` swaps in a new store atomically, so keys
/// rotate (and revocations apply) without restarting the process.
#[derive(Debug, Default)]
pub struct SharedTrust(arc_swap::ArcSwap<TrustStore>);

impl SharedTrust {
    /// Starts with `store`.
    pub fn new(store: TrustStore) -> Self {
        Self(arc_swap::ArcSwap::from_pointee(store))
    }

    /// The current store.
    pub fn snapshot(&self) -> std::sync::Arc<TrustStore> {
        self.0.load_full()
    }

    /// Replaces the store from a freshly loaded `trust.yaml`; on error the
    /// current store stays in force.
    pub fn reload(&self, cfg: &TrustConfig) -> Result<(), TrustConfigError> {
        self.0.store(std::sync::Arc::new(TrustStore::from_config(cfg)?));
        Ok(())
    }
}
