//! caio-licensing: v2 license keys for on-premises CAIO.
//!
//! A key is `CAIO-v2-<base64url(payload)>.<base64url(signature)>` (no padding). The payload is
//! canonical JSON (RFC 8785) describing the customer, tier, validity window, features and limits;
//! the signature is Ed25519 over `CAIO-LICENSE-v2\n` followed by the payload bytes. Verification
//! needs only public keys (picked by the payload's `signing_key_id`) and is always built; issuing
//! (private keys, signing) lives behind the `issue` cargo feature, which `caio-server` never
//! enables. Revocation lists are signed the same way with their own domain prefix. The format is
//! documented for third-party verifiers in `docs/licensing.md`.

mod error;
mod format;
mod keys;
mod license;
mod revocation;

#[cfg(any(test, feature = "issue"))]
#[cfg_attr(not(feature = "issue"), allow(dead_code))]
mod issue;

#[cfg(any(test, feature = "issue"))]
#[cfg_attr(not(feature = "issue"), allow(dead_code))]
mod ledger;

#[cfg(test)]
mod tests;

pub use error::{KeyError, LicenseError, MalformedPart};
pub use format::{
    KEY_PREFIX, LICENSE_DOMAIN, MAX_KEY_BYTES, PAYLOAD_VERSION, V1_PREFIX, decode_unverified,
    decode_verified, verify,
};
pub use keys::{MAX_PEM_BYTES, PublicKeySet, key_id, public_key_from_pem, public_key_to_pem};
pub use license::{License, LicenseStatus, Limits};
pub use revocation::{
    MAX_REVOCATION_LIST_BYTES, REVOCATION_DOMAIN, RevocationEntry, RevocationList,
    VerifiedRevocationList,
};

#[cfg(feature = "issue")]
pub use issue::{
    IssueRequest, Issuer, generate_signing_key, private_key_from_pem, private_key_to_pem,
    write_keypair,
};
#[cfg(feature = "issue")]
pub use ledger::{
    Customer, ExportFormat, Ledger, LedgerError, LedgerLicense, LedgerStats, LedgerStatus,
    write_atomically,
};
