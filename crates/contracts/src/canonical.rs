//! Canonical JSON (RFC 8785, JCS) and the `sha256:<hex>` content addresses built on it.
//!
//! Every content address in CAIO — registry versions, policy versions, request digests, decision
//! ids — is the SHA-256 of a value's canonical JSON, so two parties that hold the same value compute
//! the same address whatever their map order, whitespace or number spelling.

use std::io::Write;

use serde::Serialize;
use sha2::{Digest, Sha256};

/// A value that has no canonical JSON form (a non-finite number, a non-string map key).
#[derive(Debug, thiserror::Error)]
#[error("value has no canonical JSON form: {0}")]
pub struct CanonicalError(#[from] serde_json::Error);

/// The canonical JSON bytes of `value`.
pub fn to_vec<T: Serialize>(value: &T) -> Result<Vec<u8>, CanonicalError> {
    Ok(serde_json_canonicalizer::to_vec(value)?)
}

/// The canonical JSON text of `value`.
pub fn to_string<T: Serialize>(value: &T) -> Result<String, CanonicalError> {
    Ok(serde_json_canonicalizer::to_string(value)?)
}

/// `sha256:<hex>` of the canonical JSON of `value`, streamed into the hash without an intermediate
/// buffer.
pub fn digest<T: Serialize>(value: &T) -> Result<String, CanonicalError> {
    let mut writer = HashWriter(Sha256::new());
    serde_json_canonicalizer::to_writer(value, &mut writer)?;
    Ok(format_digest(&writer.0.finalize()))
}

/// `sha256:<hex>` of raw bytes.
pub fn digest_bytes(bytes: &[u8]) -> String {
    format_digest(&Sha256::digest(bytes))
}

fn format_digest(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    out.push_str(&hex::encode(bytes));
    out
}

/// Feeds serialized bytes straight into a SHA-256 state.
struct HashWriter(Sha256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_sorted_and_numbers_use_ecmascript_form() {
        let v = json!({"b": 1.0, "a": [1e21, 0.000001, 1e-7, -0.0], "é": "x", "A": true});
        assert_eq!(
            to_string(&v).unwrap_or_default(),
            r#"{"A":true,"a":[1e+21,0.000001,1e-7,0],"b":1,"é":"x"}"#
        );
    }

    #[test]
    fn digest_ignores_key_order_and_whitespace() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"x": 1, "y": [2, 3]}"#).unwrap_or_default();
        let b: serde_json::Value =
            serde_json::from_str(r#"{ "y":[2,3],"x":1.0 }"#).unwrap_or_default();
        let da = digest(&a).unwrap_or_default();
        assert!(da.starts_with("sha256:") && da.len() == 71);
        assert_eq!(da, digest(&b).unwrap_or_default());
        assert_ne!(
            da,
            digest(&json!({"x": 2, "y": [2, 3]})).unwrap_or_default()
        );
    }

    #[test]
    fn streamed_digest_equals_digest_of_bytes() {
        let v = json!({"k": ["a", {"z": 1, "m": null}]});
        let bytes = to_vec(&v).unwrap_or_default();
        assert_eq!(digest(&v).unwrap_or_default(), digest_bytes(&bytes));
    }
}
