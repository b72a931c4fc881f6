//! Signed revocation lists: the license key ids the vendor has withdrawn, with reason and time.
//!
//! On disk a list is a JSON object `{"payload": "<canonical JSON text>", "signature":
//! "<base64url>"}`; the signature is Ed25519 over `CAIO-REVOCATION-LIST-v2\n` followed by the UTF-8
//! bytes of `payload`. The payload is
//! `{"issued_at", "kind": "caio-revocation-list", "revoked": [{"key_id", "reason", "revoked_at"}],
//! "signing_key_id", "version": 2}`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signature;
use serde::{Deserialize, Serialize};

use crate::error::{LicenseError, MalformedPart};
use crate::format::{PAYLOAD_VERSION, is_hex_id, signed_message};
use crate::keys::PublicKeySet;

/// The signature covers this prefix followed by the payload bytes.
pub const REVOCATION_DOMAIN: &[u8] = b"CAIO-REVOCATION-LIST-v2\n";
/// Revocation list files longer than this are refused before parsing.
pub const MAX_REVOCATION_LIST_BYTES: usize = 4 * 1024 * 1024;
/// The payload's `kind`.
pub(crate) const KIND: &str = "caio-revocation-list";
/// A reason is at most this many bytes.
pub(crate) const MAX_REASON_BYTES: usize = 512;

/// One revoked license.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationEntry {
    /// The revoked license's `key_id`.
    pub key_id: String,
    pub reason: String,
    /// Unix seconds.
    pub revoked_at: i64,
}

/// A revocation list's contents (the signed payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationList {
    pub version: u32,
    pub kind: String,
    /// Unix seconds; each re-signing sets it.
    pub issued_at: i64,
    pub signing_key_id: String,
    pub revoked: Vec<RevocationEntry>,
}

/// The signed file form.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignedDocument {
    pub payload: String,
    pub signature: String,
}

impl RevocationList {
    /// An empty list for the given signing key id.
    pub fn new(signing_key_id: impl Into<String>, issued_at: i64) -> RevocationList {
        RevocationList {
            version: PAYLOAD_VERSION,
            kind: KIND.to_owned(),
            issued_at,
            signing_key_id: signing_key_id.into(),
            revoked: Vec::new(),
        }
    }

    /// The entry for `key_id`, if revoked.
    pub fn find(&self, key_id: &str) -> Option<&RevocationEntry> {
        self.revoked.iter().find(|e| e.key_id == key_id)
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        if self.version != PAYLOAD_VERSION {
            return Err(format!(
                "version {}; this build reads {PAYLOAD_VERSION}",
                self.version
            ));
        }
        if self.kind != KIND {
            return Err(format!("kind must be {KIND}"));
        }
        if !is_hex_id(&self.signing_key_id, 16) {
            return Err("signing_key_id must be 16 lowercase hex digits".into());
        }
        for e in &self.revoked {
            if !is_hex_id(&e.key_id, 16) {
                return Err(format!(
                    "revoked key_id `{}` must be 16 lowercase hex digits",
                    e.key_id
                ));
            }
            if e.reason.trim().is_empty() || e.reason.len() > MAX_REASON_BYTES {
                return Err(format!("reason must be 1-{MAX_REASON_BYTES} bytes"));
            }
        }
        Ok(())
    }
}

/// A revocation list whose signature has been checked: the only kind
/// [`verify`](crate::verify) accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRevocationList {
    list: RevocationList,
}

impl VerifiedRevocationList {
    /// Reads and verifies a signed revocation list document against the trusted keys.
    pub fn verify(
        document: &str,
        keys: &PublicKeySet,
    ) -> Result<VerifiedRevocationList, LicenseError> {
        if document.len() > MAX_REVOCATION_LIST_BYTES {
            return Err(LicenseError::Oversized {
                len: document.len(),
                max: MAX_REVOCATION_LIST_BYTES,
            });
        }
        let doc: SignedDocument = serde_json::from_str(document)
            .map_err(|e| LicenseError::malformed(MalformedPart::Structure, e.to_string()))?;
        let signature = URL_SAFE_NO_PAD.decode(&doc.signature).map_err(|e| {
            LicenseError::malformed(MalformedPart::SignatureEncoding, e.to_string())
        })?;
        let signature = Signature::from_slice(&signature).map_err(|_| {
            LicenseError::malformed(
                MalformedPart::SignatureLength,
                format!("expected 64 bytes, got {}", signature.len()),
            )
        })?;
        let list: RevocationList = serde_json::from_str(&doc.payload)
            .map_err(|e| LicenseError::malformed(MalformedPart::PayloadJson, e.to_string()))?;
        let Some(public) = keys.get(&list.signing_key_id) else {
            return Err(LicenseError::UnknownSigningKey(list.signing_key_id));
        };
        public
            .verify_strict(
                &signed_message(REVOCATION_DOMAIN, doc.payload.as_bytes()),
                &signature,
            )
            .map_err(|_| LicenseError::BadSignature)?;
        let canonical = serde_json_canonicalizer::to_vec(&list)
            .map_err(|e| LicenseError::malformed(MalformedPart::PayloadJson, e.to_string()))?;
        if canonical != doc.payload.as_bytes() {
            return Err(LicenseError::malformed(
                MalformedPart::PayloadNotCanonical,
                "the payload is not canonical JSON (RFC 8785)",
            ));
        }
        list.check()
            .map_err(|d| LicenseError::malformed(MalformedPart::PayloadField, d))?;
        Ok(VerifiedRevocationList { list })
    }

    /// The entry for `key_id`, if revoked.
    pub fn find(&self, key_id: &str) -> Option<&RevocationEntry> {
        self.list.find(key_id)
    }

    /// The list's contents.
    pub fn list(&self) -> &RevocationList {
        &self.list
    }

    /// The contents, to extend and re-sign.
    pub fn into_list(self) -> RevocationList {
        self.list
    }
}
