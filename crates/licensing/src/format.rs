//! The v2 key format: `CAIO-v2-<base64url(payload)>.<base64url(signature)>`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signature;
use serde::{Deserialize, Serialize};

use crate::error::{LicenseError, MalformedPart};
use crate::keys::PublicKeySet;
use crate::license::{License, Limits};
use crate::revocation::VerifiedRevocationList;

/// Every v2 key starts with this.
pub const KEY_PREFIX: &str = "CAIO-v2-";
/// The retired HMAC keys started with this.
pub const V1_PREFIX: &str = "CAIO-v1-";
/// The signature covers this prefix followed by the payload bytes.
pub const LICENSE_DOMAIN: &[u8] = b"CAIO-LICENSE-v2\n";
/// Keys longer than this are refused before any decoding.
pub const MAX_KEY_BYTES: usize = 8 * 1024;
/// The payload's `version`.
pub const PAYLOAD_VERSION: u32 = 2;

/// The signed payload, exactly as serialized (field names are the wire names).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Payload {
    pub version: u32,
    pub key_id: String,
    pub customer_id: String,
    pub tier: String,
    pub issued_at: i64,
    pub not_before: i64,
    pub expires_at: i64,
    pub features: Vec<String>,
    pub max_instances: Option<u64>,
    pub max_services: Option<u64>,
    pub max_requests_per_day: Option<u64>,
    pub signing_key_id: String,
}

impl Payload {
    #[cfg(any(test, feature = "issue"))]
    pub(crate) fn from_license(license: &License) -> Payload {
        Payload {
            version: PAYLOAD_VERSION,
            key_id: license.key_id.clone(),
            customer_id: license.customer_id.clone(),
            tier: license.tier.clone(),
            issued_at: license.issued_at,
            not_before: license.not_before,
            expires_at: license.expires_at,
            features: license.features.clone(),
            max_instances: license.limits.max_instances,
            max_services: license.limits.max_services,
            max_requests_per_day: license.limits.max_requests_per_day,
            signing_key_id: license.signing_key_id.clone(),
        }
    }

    fn into_license(self) -> License {
        License {
            key_id: self.key_id,
            customer_id: self.customer_id,
            tier: self.tier,
            issued_at: self.issued_at,
            not_before: self.not_before,
            expires_at: self.expires_at,
            features: self.features,
            limits: Limits {
                max_instances: self.max_instances,
                max_services: self.max_services,
                max_requests_per_day: self.max_requests_per_day,
            },
            signing_key_id: self.signing_key_id,
        }
    }
}

/// The message an Ed25519 signature covers: `domain || payload`.
pub(crate) fn signed_message(domain: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(domain.len() + payload.len());
    message.extend_from_slice(domain);
    message.extend_from_slice(payload);
    message
}

/// Assembles a key from payload bytes and a signature.
#[cfg(any(test, feature = "issue"))]
pub(crate) fn encode_key(payload: &[u8], signature: &Signature) -> String {
    format!(
        "{KEY_PREFIX}{}.{}",
        URL_SAFE_NO_PAD.encode(payload),
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    )
}

/// Whether `s` is `len` lowercase hex digits.
pub(crate) fn is_hex_id(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether `s` is a name: 1..=max bytes of `[A-Za-z0-9._-]`, starting with a letter or digit.
pub(crate) fn is_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Checks the fields of a payload (for issuing and after verifying).
pub(crate) fn check_fields(p: &Payload) -> Result<(), String> {
    if !is_hex_id(&p.key_id, 16) {
        return Err("key_id must be 16 lowercase hex digits".into());
    }
    if !is_hex_id(&p.signing_key_id, 16) {
        return Err("signing_key_id must be 16 lowercase hex digits".into());
    }
    if !is_name(&p.customer_id, 128) {
        return Err("customer_id must be 1-128 characters of [A-Za-z0-9._-]".into());
    }
    if !is_name(&p.tier, 64) {
        return Err("tier must be 1-64 characters of [A-Za-z0-9._-]".into());
    }
    if let Some(f) = p.features.iter().find(|f| !is_name(f, 64)) {
        return Err(format!(
            "feature `{f}` must be 1-64 characters of [A-Za-z0-9._-]"
        ));
    }
    if p.features.windows(2).any(|w| w[0] >= w[1]) {
        return Err("features must be sorted and without duplicates".into());
    }
    if p.not_before > p.expires_at {
        return Err("not_before is after expires_at".into());
    }
    Ok(())
}

/// Splits a key into its decoded payload bytes and signature, after the size and prefix checks.
fn split(key: &str) -> Result<(Vec<u8>, Signature), LicenseError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(LicenseError::Oversized {
            len: key.len(),
            max: MAX_KEY_BYTES,
        });
    }
    if key.starts_with(V1_PREFIX) {
        return Err(LicenseError::V1Key);
    }
    let Some(body) = key.strip_prefix(KEY_PREFIX) else {
        return Err(LicenseError::malformed(
            MalformedPart::Prefix,
            "the key must start with CAIO-v2-",
        ));
    };
    let mut parts = body.split('.');
    let (Some(payload_b64), Some(signature_b64), None) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(LicenseError::malformed(
            MalformedPart::Structure,
            "expected <payload>.<signature> after CAIO-v2-",
        ));
    };
    let payload = URL_SAFE_NO_PAD
        .decode(payload_b64)
        .map_err(|e| LicenseError::malformed(MalformedPart::PayloadEncoding, e.to_string()))?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|e| LicenseError::malformed(MalformedPart::SignatureEncoding, e.to_string()))?;
    let signature = Signature::from_slice(&signature).map_err(|_| {
        LicenseError::malformed(
            MalformedPart::SignatureLength,
            format!("expected 64 bytes, got {}", signature.len()),
        )
    })?;
    Ok((payload, signature))
}

/// Parses payload bytes: strict JSON, known version, canonical form, well-formed fields.
fn parse_payload(bytes: &[u8]) -> Result<Payload, LicenseError> {
    // The version first, so a future format is named as such rather than as unknown fields.
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| LicenseError::malformed(MalformedPart::PayloadJson, e.to_string()))?;
    match value.get("version").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(PAYLOAD_VERSION) => {}
        Some(v) => {
            return Err(LicenseError::malformed(
                MalformedPart::PayloadVersion,
                format!("version {v}; this build reads version {PAYLOAD_VERSION}"),
            ));
        }
        None => {
            return Err(LicenseError::malformed(
                MalformedPart::PayloadVersion,
                "missing or non-integer version",
            ));
        }
    }
    let payload: Payload = serde_json::from_value(value)
        .map_err(|e| LicenseError::malformed(MalformedPart::PayloadJson, e.to_string()))?;
    let canonical = serde_json_canonicalizer::to_vec(&payload)
        .map_err(|e| LicenseError::malformed(MalformedPart::PayloadJson, e.to_string()))?;
    if canonical != bytes {
        return Err(LicenseError::malformed(
            MalformedPart::PayloadNotCanonical,
            "the payload is not canonical JSON (RFC 8785)",
        ));
    }
    check_fields(&payload).map_err(|d| LicenseError::malformed(MalformedPart::PayloadField, d))?;
    Ok(payload)
}

/// Decodes a key WITHOUT checking its signature: for display only (`inspect`). Never base a
/// decision on the result.
pub fn decode_unverified(key: &str) -> Result<License, LicenseError> {
    let (payload, _) = split(key)?;
    Ok(parse_payload(&payload)?.into_license())
}

/// Checks a key's form and signature against the trusted keys (picked by the payload's
/// `signing_key_id`), but not its validity window or revocation: for callers that apply their own
/// grace period with [`License::status_at`].
pub fn decode_verified(key: &str, keys: &PublicKeySet) -> Result<License, LicenseError> {
    let (payload_bytes, signature) = split(key)?;
    // Only the signing key id is read before the signature check; the full parse follows it.
    let signing_key_id = serde_json::from_slice::<serde_json::Value>(&payload_bytes)
        .map_err(|e| LicenseError::malformed(MalformedPart::PayloadJson, e.to_string()))?
        .get("signing_key_id")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| {
            LicenseError::malformed(MalformedPart::PayloadField, "missing signing_key_id")
        })?;
    let Some(public) = keys.get(&signing_key_id) else {
        return Err(LicenseError::UnknownSigningKey(signing_key_id));
    };
    public
        .verify_strict(&signed_message(LICENSE_DOMAIN, &payload_bytes), &signature)
        .map_err(|_| LicenseError::BadSignature)?;
    Ok(parse_payload(&payload_bytes)?.into_license())
}

/// Verifies a key completely at `now` (unix seconds): form, signature, revocation (when a
/// verified list is given), and validity window (no grace period).
pub fn verify(
    key: &str,
    keys: &PublicKeySet,
    now: i64,
    revocations: Option<&VerifiedRevocationList>,
) -> Result<License, LicenseError> {
    let license = decode_verified(key, keys)?;
    if let Some(entry) = revocations.and_then(|list| list.find(&license.key_id)) {
        return Err(LicenseError::Revoked {
            key_id: license.key_id.clone(),
            reason: entry.reason.clone(),
        });
    }
    if now < license.not_before {
        return Err(LicenseError::NotYetValid {
            not_before: license.not_before,
        });
    }
    if now >= license.expires_at {
        return Err(LicenseError::Expired {
            expires_at: license.expires_at,
        });
    }
    Ok(license)
}
