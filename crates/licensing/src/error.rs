//! Errors: each names the reason a key (or key file, or revocation list) was refused.

use thiserror::Error;

/// The part of a license key or revocation list that could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MalformedPart {
    /// The key does not start with `CAIO-v2-`.
    Prefix,
    /// The key is not `<payload>.<signature>` after the prefix.
    Structure,
    /// The payload is not unpadded base64url.
    PayloadEncoding,
    /// The signature is not unpadded base64url.
    SignatureEncoding,
    /// The signature is not 64 bytes.
    SignatureLength,
    /// The payload is not the expected JSON object.
    PayloadJson,
    /// The payload is JSON but not in canonical (RFC 8785) form.
    PayloadNotCanonical,
    /// The payload names a format version this build does not read.
    PayloadVersion,
    /// A payload field is out of range or badly formed.
    PayloadField,
}

impl std::fmt::Display for MalformedPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MalformedPart::Prefix => "prefix",
            MalformedPart::Structure => "structure",
            MalformedPart::PayloadEncoding => "payload encoding",
            MalformedPart::SignatureEncoding => "signature encoding",
            MalformedPart::SignatureLength => "signature length",
            MalformedPart::PayloadJson => "payload JSON",
            MalformedPart::PayloadNotCanonical => "payload canonical form",
            MalformedPart::PayloadVersion => "payload version",
            MalformedPart::PayloadField => "payload field",
        })
    }
}

/// Why a license key (or a revocation list) was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LicenseError {
    /// The input is longer than the cap; it was not decoded.
    #[error("input too long: {len} bytes (at most {max})")]
    Oversized { len: usize, max: usize },
    /// A `CAIO-v1-` (HMAC) key: no longer accepted.
    #[error(
        "this is a CAIO v1 (HMAC) license key, which is no longer accepted; ask your CAIO vendor for a v2 key"
    )]
    V1Key,
    /// The input could not be read; `part` says where.
    #[error("malformed {part}: {detail}")]
    Malformed { part: MalformedPart, detail: String },
    /// The payload names a signing key that is not among the trusted public keys.
    #[error("unknown signing key `{0}`: not among the trusted public keys")]
    UnknownSigningKey(String),
    /// The signature does not verify with the named public key.
    #[error("bad signature")]
    BadSignature,
    /// The license expired (unix seconds).
    #[error("license expired at {expires_at} (unix seconds)")]
    Expired { expires_at: i64 },
    /// The license is not valid yet (unix seconds).
    #[error("license not valid before {not_before} (unix seconds)")]
    NotYetValid { not_before: i64 },
    /// The license's key id is on the revocation list.
    #[error("license {key_id} revoked: {reason}")]
    Revoked { key_id: String, reason: String },
}

impl LicenseError {
    pub(crate) fn malformed(part: MalformedPart, detail: impl Into<String>) -> LicenseError {
        LicenseError::Malformed {
            part,
            detail: detail.into(),
        }
    }

    /// A short, stable code for the reason (for logs, APIs and exit messages).
    pub fn code(&self) -> &'static str {
        match self {
            LicenseError::Oversized { .. } => "oversized",
            LicenseError::V1Key => "v1_key",
            LicenseError::Malformed { .. } => "malformed",
            LicenseError::UnknownSigningKey(_) => "unknown_signing_key",
            LicenseError::BadSignature => "bad_signature",
            LicenseError::Expired { .. } => "expired",
            LicenseError::NotYetValid { .. } => "not_yet_valid",
            LicenseError::Revoked { .. } => "revoked",
        }
    }
}

/// Why a key file (PEM) or key material was refused.
#[derive(Debug, Error)]
pub enum KeyError {
    /// The PEM text is longer than the cap.
    #[error("key file too long: {len} bytes (at most {max})")]
    Oversized { len: usize, max: usize },
    /// Not an Ed25519 key in the expected PEM form.
    #[error("not an Ed25519 {expected} PEM: {detail}")]
    Pem {
        expected: &'static str,
        detail: String,
    },
    /// Encoding a key failed.
    #[error("cannot encode key: {0}")]
    Encode(String),
    /// No randomness available for key generation or key ids.
    #[error("no randomness: {0}")]
    Entropy(String),
    /// Reading or writing a key file failed.
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// A request to issue a key was not acceptable.
    #[error("invalid {field}: {detail}")]
    Invalid { field: &'static str, detail: String },
}
