//! Public keys: SPKI PEM, key ids and the set of trusted keys a verifier holds.

use std::collections::BTreeMap;

use ed25519_dalek::VerifyingKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePublicKey, EncodePublicKey};

use crate::error::KeyError;

/// PEM input longer than this is refused before parsing.
pub const MAX_PEM_BYTES: usize = 16 * 1024;

/// A public key's id: the first 16 hex digits (8 bytes) of SHA-256 over the raw 32-byte key.
pub fn key_id(key: &VerifyingKey) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    hex::encode(digest.as_ref().get(..8).unwrap_or_default())
}

/// Reads an Ed25519 public key from SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
pub fn public_key_from_pem(pem: &str) -> Result<VerifyingKey, KeyError> {
    if pem.len() > MAX_PEM_BYTES {
        return Err(KeyError::Oversized {
            len: pem.len(),
            max: MAX_PEM_BYTES,
        });
    }
    VerifyingKey::from_public_key_pem(pem.trim()).map_err(|e| KeyError::Pem {
        expected: "public key (SPKI)",
        detail: e.to_string(),
    })
}

/// Writes an Ed25519 public key as SPKI PEM.
pub fn public_key_to_pem(key: &VerifyingKey) -> Result<String, KeyError> {
    key.to_public_key_pem(LineEnding::LF)
        .map_err(|e| KeyError::Encode(e.to_string()))
}

/// The public keys a verifier trusts, by key id. Rotation is explicit: add the new key, keep the
/// old one as long as keys it signed must stay valid.
#[derive(Debug, Clone, Default)]
pub struct PublicKeySet {
    keys: BTreeMap<String, VerifyingKey>,
}

impl PublicKeySet {
    /// An empty set (verifies nothing).
    pub fn new() -> PublicKeySet {
        PublicKeySet::default()
    }

    /// A set holding the given keys.
    pub fn from_keys(keys: impl IntoIterator<Item = VerifyingKey>) -> PublicKeySet {
        let mut set = PublicKeySet::new();
        for key in keys {
            set.insert(key);
        }
        set
    }

    /// A set read from SPKI PEM texts.
    pub fn from_pems<'a>(
        pems: impl IntoIterator<Item = &'a str>,
    ) -> Result<PublicKeySet, KeyError> {
        let mut set = PublicKeySet::new();
        for pem in pems {
            set.insert(public_key_from_pem(pem)?);
        }
        Ok(set)
    }

    /// Adds a key; returns its id.
    pub fn insert(&mut self, key: VerifyingKey) -> String {
        let id = key_id(&key);
        self.keys.insert(id.clone(), key);
        id
    }

    /// The key with this id.
    pub fn get(&self, id: &str) -> Option<&VerifyingKey> {
        self.keys.get(id)
    }

    /// The ids of the keys held, sorted.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Whether the set holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}
