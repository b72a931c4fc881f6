//! Issuing (feature `issue`): key generation, private keys as PKCS#8 PEM, signing licenses and
//! revocation lists. `caio-server` does not enable this feature.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::spki::der::zeroize::Zeroizing;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};

use crate::error::KeyError;
use crate::format::{
    LICENSE_DOMAIN, PAYLOAD_VERSION, Payload, check_fields, encode_key, signed_message,
};
use crate::keys::{MAX_PEM_BYTES, key_id, public_key_to_pem};
use crate::license::{License, Limits};
use crate::revocation::{
    MAX_REASON_BYTES, REVOCATION_DOMAIN, RevocationEntry, RevocationList, SignedDocument,
};

/// A new Ed25519 signing key from the operating system's randomness.
pub fn generate_signing_key() -> Result<SigningKey, KeyError> {
    let mut secret = Zeroizing::new([0u8; 32]);
    getrandom::fill(secret.as_mut()).map_err(|e| KeyError::Entropy(e.to_string()))?;
    Ok(SigningKey::from_bytes(&secret))
}

/// Writes a private key as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
pub fn private_key_to_pem(key: &SigningKey) -> Result<Zeroizing<String>, KeyError> {
    key.to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KeyError::Encode(e.to_string()))
}

/// Reads an Ed25519 private key from PKCS#8 PEM.
pub fn private_key_from_pem(pem: &str) -> Result<SigningKey, KeyError> {
    if pem.len() > MAX_PEM_BYTES {
        return Err(KeyError::Oversized {
            len: pem.len(),
            max: MAX_PEM_BYTES,
        });
    }
    SigningKey::from_pkcs8_pem(pem.trim()).map_err(|e| KeyError::Pem {
        expected: "private key (PKCS#8)",
        detail: e.to_string(),
    })
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Generates a key pair into `dir` (created if missing): `private.pem` (PKCS#8, mode 0600, never
/// overwritten) and `public.pem` (SPKI). Returns both paths and the key id.
pub fn write_keypair(dir: &Path) -> Result<(PathBuf, PathBuf, String), KeyError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let key = generate_signing_key()?;
    let private_path = dir.join("private.pem");
    let public_path = dir.join("public.pem");
    let private_pem = private_key_to_pem(&key)?;
    let public_pem = public_key_to_pem(&key.verifying_key())?;

    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&private_path).map_err(io_err(&private_path))?;
    file.write_all(private_pem.as_bytes())
        .map_err(io_err(&private_path))?;
    file.sync_all().map_err(io_err(&private_path))?;
    fs::write(&public_path, public_pem.as_bytes()).map_err(io_err(&public_path))?;
    Ok((private_path, public_path, key_id(&key.verifying_key())))
}

/// What to put in a new license. Times are unix seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueRequest {
    pub customer_id: String,
    pub tier: String,
    pub not_before: i64,
    pub expires_at: i64,
    /// Sorted and deduplicated when issued.
    pub features: Vec<String>,
    pub limits: Limits,
}

/// Signs licenses and revocation lists with one private key.
#[derive(Debug)]
pub struct Issuer {
    key: SigningKey,
    key_id: String,
}

impl Issuer {
    /// An issuer for this private key.
    pub fn new(key: SigningKey) -> Issuer {
        let key_id = key_id(&key.verifying_key());
        Issuer { key, key_id }
    }

    /// The signing key's id (what licenses name as `signing_key_id`).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public key that verifies what this issuer signs.
    pub fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Issues a license at `now` with a fresh random key id; returns the key and its contents.
    pub fn issue(&self, request: &IssueRequest, now: i64) -> Result<(String, License), KeyError> {
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|e| KeyError::Entropy(e.to_string()))?;
        let mut features = request.features.clone();
        features.sort();
        features.dedup();
        let license = License {
            key_id: hex::encode(id),
            customer_id: request.customer_id.clone(),
            tier: request.tier.clone(),
            issued_at: now,
            not_before: request.not_before,
            expires_at: request.expires_at,
            features,
            limits: request.limits.clone(),
            signing_key_id: self.key_id.clone(),
        };
        let payload = Payload::from_license(&license);
        check_fields(&payload).map_err(|detail| KeyError::Invalid {
            field: "license",
            detail,
        })?;
        if license.expires_at <= license.not_before {
            return Err(KeyError::Invalid {
                field: "expiry",
                detail: "the license would expire before it becomes valid".into(),
            });
        }
        Ok((self.sign_payload(&payload)?, license))
    }

    /// Signs an arbitrary payload as a license (the fields are not checked): for tests that need
    /// correctly signed but unusual keys.
    pub(crate) fn sign_payload(&self, payload: &Payload) -> Result<String, KeyError> {
        let bytes = serde_json_canonicalizer::to_vec(payload)
            .map_err(|e| KeyError::Encode(e.to_string()))?;
        let signature = self.key.sign(&signed_message(LICENSE_DOMAIN, &bytes));
        Ok(encode_key(&bytes, &signature))
    }

    /// Adds a revocation to `list` (replacing an earlier entry for the same key id).
    pub fn revoke(
        &self,
        list: &mut RevocationList,
        license_key_id: &str,
        reason: &str,
        now: i64,
    ) -> Result<(), KeyError> {
        if reason.trim().is_empty() || reason.len() > MAX_REASON_BYTES {
            return Err(KeyError::Invalid {
                field: "reason",
                detail: format!("must be 1-{MAX_REASON_BYTES} bytes"),
            });
        }
        list.revoked.retain(|e| e.key_id != license_key_id);
        list.revoked.push(RevocationEntry {
            key_id: license_key_id.to_owned(),
            reason: reason.to_owned(),
            revoked_at: now,
        });
        list.revoked.sort_by(|a, b| a.key_id.cmp(&b.key_id));
        Ok(())
    }

    /// Signs a revocation list (setting its signing key id and `issued_at`); returns the document.
    pub fn sign_revocation_list(
        &self,
        list: &RevocationList,
        now: i64,
    ) -> Result<String, KeyError> {
        let mut list = list.clone();
        list.version = PAYLOAD_VERSION;
        list.signing_key_id = self.key_id.clone();
        list.issued_at = now;
        list.check().map_err(|detail| KeyError::Invalid {
            field: "revocation list",
            detail,
        })?;
        let payload = serde_json_canonicalizer::to_string(&list)
            .map_err(|e| KeyError::Encode(e.to_string()))?;
        let signature = self
            .key
            .sign(&signed_message(REVOCATION_DOMAIN, payload.as_bytes()));
        let doc = SignedDocument {
            payload,
            signature: URL_SAFE_NO_PAD.encode(signature.to_bytes()),
        };
        let mut text =
            serde_json::to_string_pretty(&doc).map_err(|e| KeyError::Encode(e.to_string()))?;
        text.push('\n');
        Ok(text)
    }
}

#[cfg(test)]
impl Issuer {
    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.key
    }
}
