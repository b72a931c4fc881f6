//! A small JWT verifier (and signer, for tests and tools) for the two algorithms CAIO accepts:
//! HS256 (shared secret) and EdDSA (Ed25519 public keys).
//!
//! We deliberately do not use the `jsonwebtoken` crate: its pure-Rust backend pulls in `rsa`,
//! which carries RUSTSEC-2023-0071 (the Marvin timing side channel) with no fixed release, and we
//! need only two algorithms. Writing the verifier ourselves also lets us be strict where generic
//! libraries are lenient:
//!
//! - a token is at most 8 KiB, exactly three segments of canonical base64url without padding;
//! - the header is a JSON object whose `alg` is exactly `HS256` or `EdDSA` (`none` and every other
//!   algorithm are refused), whose `typ`, if present, is `JWT`, and which has no `crit`;
//! - the algorithm chooses the key kind and the other kind is never tried: HS256 needs the
//!   configured secret, EdDSA the configured Ed25519 keys (checked with `verify_strict`). Public
//!   key bytes are never used as an HMAC secret, which closes the classic algorithm-confusion
//!   attack;
//! - the signature is checked before the claims are parsed, so nothing in an unauthenticated
//!   payload is parsed or trusted (it is only base64-decoded).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::DecodePublicKey;
use ed25519_dalek::{Signature, Signer as _};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Re-exported so the server can name keys without depending on ed25519-dalek itself.
pub use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::error::AuthError;
use crate::roles::{AuthMethod, Identity, Role};
use crate::validate;

/// Longest accepted token, in bytes.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Shortest accepted HS256 secret, in bytes (RFC 7518 §3.2: at least the hash size).
pub const MIN_HS256_SECRET: usize = 32;

/// How tokens are verified.
#[derive(Clone, Default)]
pub struct JwtConfig {
    /// Accept HS256 tokens signed with this secret (at least 32 bytes).
    pub hs256_secret: Option<Vec<u8>>,
    /// Accept EdDSA tokens signed by any of these keys.
    pub eddsa_keys: Vec<VerifyingKey>,
    /// When set, `iss` must equal it.
    pub issuer: Option<String>,
    /// When set, `aud` must equal it or be an array containing it.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_s: u64,
}

// Written by hand so the HS256 secret never reaches a log through `{:?}`.
impl fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtConfig")
            .field(
                "hs256_secret",
                &self.hs256_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("eddsa_keys", &self.eddsa_keys.len())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_s", &self.leeway_s)
            .finish()
    }
}

/// Why a JWT configuration or key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// The HS256 secret is shorter than 32 bytes (the length is given, never the secret).
    #[error("the HS256 secret must be at least {MIN_HS256_SECRET} bytes, got {0}")]
    SecretTooShort(usize),
    /// Neither an HS256 secret nor an Ed25519 key is configured.
    #[error("no JWT key configured: set an HS256 secret or at least one Ed25519 public key")]
    NoKeys,
    /// The PEM text is not an Ed25519 public key in SPKI form.
    #[error("not an Ed25519 public key in SPKI PEM (BEGIN PUBLIC KEY): {0}")]
    InvalidPublicKey(String),
}

/// Parses an Ed25519 public key in SPKI PEM (`-----BEGIN PUBLIC KEY-----`), as
/// `openssl pkey -pubout` writes it.
pub fn parse_eddsa_public_key_pem(pem: &str) -> Result<VerifyingKey, JwtError> {
    VerifyingKey::from_public_key_pem(pem.trim())
        .map_err(|e| JwtError::InvalidPublicKey(e.to_string()))
}

/// The `aud` claim: one string or an array of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// `"aud": "caio"`
    One(String),
    /// `"aud": ["caio", "other"]`
    Many(Vec<String>),
}

impl Audience {
    /// Whether `aud` names this audience.
    pub fn contains(&self, audience: &str) -> bool {
        match self {
            Audience::One(a) => a == audience,
            Audience::Many(v) => v.iter().any(|a| a == audience),
        }
    }
}

fn client() -> Role {
    Role::Client
}

fn public() -> String {
    "public".to_owned()
}

/// The claims CAIO reads from a verified token; other claims are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// The subject: becomes the identity's subject and principal id.
    pub sub: String,
    /// Expiry, unix seconds (required).
    pub exp: u64,
    /// Not before, unix seconds.
    #[serde(default)]
    pub nbf: Option<u64>,
    /// Issued at, unix seconds (not checked).
    #[serde(default)]
    pub iat: Option<u64>,
    /// Issuer.
    #[serde(default)]
    pub iss: Option<String>,
    /// Audience.
    #[serde(default)]
    pub aud: Option<Audience>,
    /// CAIO role (default `client`).
    #[serde(default = "client")]
    pub role: Role,
    /// Tenant (default `public`).
    #[serde(default = "public")]
    pub tenant: String,
    /// Permissions (default none).
    #[serde(default)]
    pub permissions: Vec<String>,
    /// Trust level 0–10 (default 0).
    #[serde(default)]
    pub trust_level: u8,
    /// Required for role `service`, forbidden otherwise.
    #[serde(default)]
    pub service_id: Option<String>,
}

impl Claims {
    /// The identity of the token's holder (method `Jwt`, subject and principal id
    /// `jwt:<sub>`). The prefix keeps a token's subject apart from API key ids (which never
    /// contain `:`), so a `sub` that equals a key id cannot read that key's own traces.
    pub fn identity(&self) -> Identity {
        Identity::new(
            format!("jwt:{}", self.sub),
            self.role,
            self.tenant.clone(),
            self.permissions.clone(),
            self.trust_level,
            self.service_id.clone(),
            AuthMethod::Jwt,
        )
    }
}

/// Checks JWTs against a [`JwtConfig`].
#[derive(Clone)]
pub struct JwtVerifier {
    hs256_secret: Option<Vec<u8>>,
    eddsa_keys: Vec<VerifyingKey>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_s: u64,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("hs256", &self.hs256_secret.is_some())
            .field("eddsa_keys", &self.eddsa_keys.len())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_s", &self.leeway_s)
            .finish()
    }
}

#[derive(Clone, Copy)]
enum Alg {
    Hs256,
    EdDsa,
}

fn b64(segment: &str) -> Option<Vec<u8>> {
    // URL_SAFE_NO_PAD refuses padding and non-canonical trailing bits, so each token has exactly
    // one spelling.
    URL_SAFE_NO_PAD.decode(segment).ok()
}

/// An HMAC-SHA256 instance. `new_from_slice` cannot fail for HMAC (any key length is valid), but
/// its signature says it can; callers fail closed on `None`.
fn hmac(secret: &[u8]) -> Option<Hmac<Sha256>> {
    <Hmac<Sha256> as Mac>::new_from_slice(secret).ok()
}

impl JwtVerifier {
    /// Checks the configuration: an HS256 secret of at least 32 bytes, and at least one of an
    /// HS256 secret or an Ed25519 key.
    pub fn new(cfg: JwtConfig) -> Result<Self, JwtError> {
        if let Some(s) = &cfg.hs256_secret
            && s.len() < MIN_HS256_SECRET
        {
            return Err(JwtError::SecretTooShort(s.len()));
        }
        if cfg.hs256_secret.is_none() && cfg.eddsa_keys.is_empty() {
            return Err(JwtError::NoKeys);
        }
        Ok(JwtVerifier {
            hs256_secret: cfg.hs256_secret,
            eddsa_keys: cfg.eddsa_keys,
            issuer: cfg.issuer,
            audience: cfg.audience,
            leeway_s: cfg.leeway_s,
        })
    }

    /// Verifies a token at time `now_s` (unix seconds) and returns its claims.
    pub fn verify(&self, token: &str, now_s: u64) -> Result<Claims, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Malformed("empty token"));
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed("token longer than 8 KiB"));
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed(
                "token must have three dot-separated segments",
            ));
        };

        // Every segment is decoded before any cryptography, so a malformed token is reported as
        // such whatever its signature; decoding trusts nothing.
        let alg = Self::header_alg(h)?;
        let payload = b64(p).ok_or(AuthError::Malformed("token payload is not base64url"))?;
        let signature = b64(s).ok_or(AuthError::Malformed("token signature is not base64url"))?;
        // The signing input is the token up to the second dot, exactly as received.
        let signing_input = &token.as_bytes()[..h.len() + 1 + p.len()];
        match alg {
            Alg::Hs256 => {
                let Some(secret) = &self.hs256_secret else {
                    return Err(AuthError::UnsupportedAlgorithm("HS256".to_owned()));
                };
                let mut mac = hmac(secret).ok_or(AuthError::BadSignature)?;
                mac.update(signing_input);
                // verify_slice compares in constant time and refuses any length but 32.
                mac.verify_slice(&signature)
                    .map_err(|_| AuthError::BadSignature)?;
            }
            Alg::EdDsa => {
                if self.eddsa_keys.is_empty() {
                    return Err(AuthError::UnsupportedAlgorithm("EdDSA".to_owned()));
                }
                let sig = Signature::from_slice(&signature).map_err(|_| AuthError::BadSignature)?;
                // verify_strict refuses small-order keys and non-canonical signatures, so a
                // signature cannot be malleated into a second valid spelling.
                if !self
                    .eddsa_keys
                    .iter()
                    .any(|k| k.verify_strict(signing_input, &sig).is_ok())
                {
                    return Err(AuthError::BadSignature);
                }
            }
        }

        // From here on the payload is authentic; it may still be unacceptable.
        // serde's derived struct visitor would also accept a JSON array; claims are an object.
        if payload.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(AuthError::InvalidClaims(
                "the payload is not a JSON object".to_owned(),
            ));
        }
        let claims: Claims = serde_json::from_slice(&payload)
            .map_err(|e| AuthError::InvalidClaims(validate::sanitize(&e.to_string(), 200)))?;
        self.check_claims(&claims, now_s)?;
        Ok(claims)
    }

    /// Parses the header segment and returns its algorithm.
    fn header_alg(segment: &str) -> Result<Alg, AuthError> {
        let bytes = b64(segment).ok_or(AuthError::Malformed("token header is not base64url"))?;
        let header: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|_| AuthError::Malformed("token header is not JSON"))?;
        let Some(header) = header.as_object() else {
            return Err(AuthError::Malformed("token header is not a JSON object"));
        };
        let alg = match header.get("alg") {
            Some(serde_json::Value::String(a)) => a,
            _ => return Err(AuthError::Malformed("token header has no alg string")),
        };
        let alg = match alg.as_str() {
            "HS256" => Alg::Hs256,
            "EdDSA" => Alg::EdDsa,
            other => {
                return Err(AuthError::UnsupportedAlgorithm(validate::sanitize(
                    other, 32,
                )));
            }
        };
        if header.get("typ").is_some_and(|t| t.as_str() != Some("JWT")) {
            return Err(AuthError::Malformed("token typ must be JWT"));
        }
        // RFC 7515 §4.1.11: a recipient that does not understand a critical extension must
        // reject the token; we understand none.
        if header.contains_key("crit") {
            return Err(AuthError::Malformed("token has critical header extensions"));
        }
        Ok(alg)
    }

    fn check_claims(&self, c: &Claims, now_s: u64) -> Result<(), AuthError> {
        if let Some(want) = &self.issuer
            && c.iss.as_deref() != Some(want.as_str())
        {
            return Err(AuthError::WrongIssuer);
        }
        if let Some(want) = &self.audience
            && !c.aud.as_ref().is_some_and(|a| a.contains(want))
        {
            return Err(AuthError::WrongAudience);
        }
        if now_s > c.exp.saturating_add(self.leeway_s) {
            return Err(AuthError::Expired);
        }
        if c.nbf
            .is_some_and(|nbf| nbf > now_s.saturating_add(self.leeway_s))
        {
            return Err(AuthError::NotYetValid);
        }
        let mut problems = Vec::new();
        if !validate::is_printable_text(&c.sub) {
            problems.push("sub: must be 1–128 printable characters".to_owned());
        }
        validate::principal_fields(
            c.role == Role::Service,
            &c.tenant,
            &c.permissions,
            c.trust_level,
            c.service_id.as_deref(),
            &mut problems,
        );
        if problems.is_empty() {
            Ok(())
        } else {
            Err(AuthError::InvalidClaims(problems.join("; ")))
        }
    }
}

fn encode_unsigned(alg: &str, claims: &serde_json::Value) -> String {
    let header = serde_json::json!({ "alg": alg, "typ": "JWT" });
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// Signs `claims` with HS256 (header `{"alg":"HS256","typ":"JWT"}`).
pub fn sign_hs256(claims: &serde_json::Value, secret: &[u8]) -> String {
    let input = encode_unsigned("HS256", claims);
    // `hmac` cannot fail (see its comment); if it ever did, an empty signature fails verification.
    let sig = match hmac(secret) {
        Some(mut mac) => {
            mac.update(input.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        None => Vec::new(),
    };
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// Signs `claims` with EdDSA (Ed25519; header `{"alg":"EdDSA","typ":"JWT"}`).
pub fn sign_eddsa(claims: &serde_json::Value, key: &SigningKey) -> String {
    let input = encode_unsigned("EdDSA", claims);
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

#[cfg(test)]
mod tests;
