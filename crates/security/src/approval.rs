//! Approval tokens: a routing decision a person (or a program) looked at and approved, to be
//! executed exactly as decided.
//!
//! `POST /api/v1/route?approve=true` returns, beside the decision, a token binding the decision
//! id, the digest of the request, the principal and an expiry, MAC'd with the server's approval
//! key (HMAC-SHA256). `POST /api/v1/execute` with the token runs that recorded decision, or
//! refuses: a changed request, another principal, an expired token, a token already used.
//!
//! Format: `caio_approval_<base64url(claims JSON)>.<base64url(HMAC-SHA256(key, "caio-approval-v1\n" ‖ claims JSON))>`.
//! Single use is the store's business ([`UsedTokens`]).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

const PREFIX: &str = "caio_approval_";
const DOMAIN: &[u8] = b"caio-approval-v1\n";
/// Longest token accepted (a token is a few hundred bytes).
pub const MAX_TOKEN_BYTES: usize = 4096;

/// What a token binds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalClaims {
    /// The approved decision.
    pub decision_id: String,
    /// `sha256:<hex>` of the canonical JSON of the request as routed.
    pub request_digest: String,
    /// Who may execute it (the principal that routed it).
    pub principal_id: String,
    /// Their tenant.
    pub tenant: String,
    /// Issued, unix ms.
    pub issued_at_ms: u64,
    /// Expires, unix ms.
    pub expires_at_ms: u64,
    /// Random, so two approvals of one decision are two tokens.
    pub nonce: String,
}

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    /// Not a token of this format.
    #[error("not an approval token: {0}")]
    Malformed(&'static str),
    /// The MAC does not match (forged, altered, or from another server key).
    #[error("the approval token's signature does not match")]
    BadSignature,
    /// Past its expiry.
    #[error("the approval expired")]
    Expired,
    /// Already used for an execution.
    #[error("the approval was already used")]
    AlreadyUsed,
    /// Issued to someone else.
    #[error("the approval was issued to another principal")]
    WrongPrincipal,
    /// The request differs from the approved one.
    #[error("the request differs from the approved one")]
    RequestChanged,
}

impl ApprovalError {
    /// A stable snake_case reason.
    pub fn reason(&self) -> &'static str {
        match self {
            ApprovalError::Malformed(_) => "malformed",
            ApprovalError::BadSignature => "bad_signature",
            ApprovalError::Expired => "expired",
            ApprovalError::AlreadyUsed => "already_used",
            ApprovalError::WrongPrincipal => "wrong_principal",
            ApprovalError::RequestChanged => "request_changed",
        }
    }
}

/// The server's approval key.
#[derive(Clone)]
pub struct ApprovalKey([u8; 32]);

impl std::fmt::Debug for ApprovalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApprovalKey(..)")
    }
}

type HmacSha256 = Hmac<Sha256>;

impl ApprovalKey {
    /// A key from 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> ApprovalKey {
        ApprovalKey(bytes)
    }

    /// A fresh random key.
    pub fn generate() -> Result<ApprovalKey, String> {
        let mut b = [0u8; 32];
        getrandom::fill(&mut b).map_err(|e| format!("no randomness: {e}"))?;
        Ok(ApprovalKey(b))
    }

    /// The key's bytes (to persist it).
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn mac(&self, claims: &[u8]) -> Result<HmacSha256, ApprovalError> {
        let mut mac = HmacSha256::new_from_slice(&self.0)
            .map_err(|_| ApprovalError::Malformed("bad key length"))?;
        mac.update(DOMAIN);
        mac.update(claims);
        Ok(mac)
    }

    /// Issues a token for `claims`.
    pub fn issue(&self, claims: &ApprovalClaims) -> Result<String, ApprovalError> {
        let json = serde_json::to_vec(claims).map_err(|_| ApprovalError::Malformed("claims"))?;
        let tag = self.mac(&json)?.finalize().into_bytes();
        Ok(format!(
            "{PREFIX}{}.{}",
            URL_SAFE_NO_PAD.encode(&json),
            URL_SAFE_NO_PAD.encode(tag)
        ))
    }

    /// Checks a token's format, signature and expiry, and returns its claims.
    pub fn verify(&self, token: &str, now_ms: u64) -> Result<ApprovalClaims, ApprovalError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(ApprovalError::Malformed("too long"));
        }
        let rest = token.strip_prefix(PREFIX).ok_or(ApprovalError::Malformed(
            "missing the caio_approval_ prefix",
        ))?;
        let (claims_b64, tag_b64) = rest
            .split_once('.')
            .ok_or(ApprovalError::Malformed("expected <claims>.<signature>"))?;
        let json = URL_SAFE_NO_PAD
            .decode(claims_b64)
            .map_err(|_| ApprovalError::Malformed("claims are not base64url"))?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag_b64)
            .map_err(|_| ApprovalError::Malformed("signature is not base64url"))?;
        // Constant-time comparison.
        self.mac(&json)?
            .verify_slice(&tag)
            .map_err(|_| ApprovalError::BadSignature)?;
        let claims: ApprovalClaims =
            serde_json::from_slice(&json).map_err(|_| ApprovalError::Malformed("claims"))?;
        if now_ms >= claims.expires_at_ms {
            return Err(ApprovalError::Expired);
        }
        Ok(claims)
    }
}

/// Tokens already used, remembered until they expire; with a file, across restarts too (one
/// line `<expires_at_ms> <decision_id>:<nonce>` per use, appended and fsynced before the use is
/// granted).
#[derive(Debug, Default)]
pub struct UsedTokens {
    used: Mutex<HashMap<String, u64>>,
    file: Option<Mutex<std::fs::File>>,
}

impl UsedTokens {
    /// An empty set kept in memory.
    pub fn new() -> UsedTokens {
        UsedTokens::default()
    }

    /// The set recorded in `path` (created if missing); entries already expired at `now_ms` are
    /// dropped on the way in. Unreadable lines are errors naming the line, never skipped.
    pub fn open(path: &std::path::Path, now_ms: u64) -> Result<UsedTokens, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let mut used = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let (exp, key) = line
                .split_once(' ')
                .and_then(|(e, k)| Some((e.parse::<u64>().ok()?, k)))
                .ok_or_else(|| format!("{}:{}: not `<expires_ms> <key>`", path.display(), i + 1))?;
            if exp > now_ms {
                used.insert(key.to_owned(), exp);
            }
        }
        let mut options = std::fs::OpenOptions::new();
        options.append(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(UsedTokens {
            used: Mutex::new(used),
            file: Some(Mutex::new(file)),
        })
    }

    /// Marks `claims`' token used; `AlreadyUsed` when it was. Expired entries are forgotten on
    /// the way.
    pub fn use_once(&self, claims: &ApprovalClaims, now_ms: u64) -> Result<(), ApprovalError> {
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        if used.len() > 10_000 {
            used.retain(|_, exp| *exp > now_ms);
        }
        let key = format!("{}:{}", claims.decision_id, claims.nonce);
        if used.contains_key(&key) {
            return Err(ApprovalError::AlreadyUsed);
        }
        if let Some(file) = &self.file {
            use std::io::Write;
            let mut f = file.lock().unwrap_or_else(PoisonError::into_inner);
            // Refuse the use rather than grant one that a restart would forget.
            writeln!(f, "{} {key}", claims.expires_at_ms)
                .and_then(|()| f.sync_data())
                .map_err(|_| {
                    ApprovalError::Malformed("the used-approvals file cannot be written")
                })?;
        }
        used.insert(key, claims.expires_at_ms);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> ApprovalClaims {
        ApprovalClaims {
            decision_id: "sha256:aa".into(),
            request_digest: "sha256:bb".into(),
            principal_id: "p".into(),
            tenant: "t".into(),
            issued_at_ms: 1,
            expires_at_ms: exp,
            nonce: "n1".into(),
        }
    }

    #[test]
    fn a_token_round_trips_and_expires() {
        let key = ApprovalKey::from_bytes([7; 32]);
        let t = key.issue(&claims(1000)).unwrap();
        assert!(t.starts_with("caio_approval_"));
        assert_eq!(key.verify(&t, 999).unwrap(), claims(1000));
        assert_eq!(key.verify(&t, 1000), Err(ApprovalError::Expired));
    }

    #[test]
    fn forged_altered_and_foreign_tokens_fail() {
        let key = ApprovalKey::from_bytes([7; 32]);
        let t = key.issue(&claims(1000)).unwrap();
        // Another key.
        assert_eq!(
            ApprovalKey::from_bytes([8; 32]).verify(&t, 0),
            Err(ApprovalError::BadSignature)
        );
        // Claims edited (a later expiry), the old signature kept.
        let (_, sig) = t.rsplit_once('.').unwrap();
        let edited = serde_json::to_vec(&claims(u64::MAX)).unwrap();
        let forged = format!("caio_approval_{}.{sig}", URL_SAFE_NO_PAD.encode(edited));
        assert_eq!(key.verify(&forged, 0), Err(ApprovalError::BadSignature));
        // Every single-character change of the token fails.
        let bytes = t.as_bytes();
        for i in 0..bytes.len() {
            let mut b = bytes.to_vec();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            let s = String::from_utf8(b).unwrap();
            if s != t {
                assert!(
                    key.verify(&s, 0).is_err(),
                    "changed byte {i} still verifies"
                );
            }
        }
        for bad in [
            "",
            "caio_approval_",
            "caio_approval_x",
            "caio_approval_!!.??",
            "jwt.a.b",
        ] {
            assert!(
                matches!(key.verify(bad, 0), Err(ApprovalError::Malformed(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            key.verify(&"a".repeat(MAX_TOKEN_BYTES + 1), 0),
            Err(ApprovalError::Malformed(_))
        ));
    }

    #[test]
    fn used_tokens_survive_a_restart_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("approvals.used");
        let used = UsedTokens::open(&path, 0).unwrap();
        used.use_once(&claims(1000), 0).unwrap();
        drop(used);
        let again = UsedTokens::open(&path, 10).unwrap();
        assert_eq!(
            again.use_once(&claims(1000), 10),
            Err(ApprovalError::AlreadyUsed)
        );
        // After expiry the entry is forgotten on reopening (the token itself is expired anyway).
        let later = UsedTokens::open(&path, 2000).unwrap();
        assert!(later.used.lock().unwrap().is_empty());
        std::fs::write(&path, "garbage\n").unwrap();
        assert!(UsedTokens::open(&path, 0).unwrap_err().contains(":1:"));
    }

    #[test]
    fn a_token_is_used_once() {
        let used = UsedTokens::new();
        let c = claims(1000);
        assert_eq!(used.use_once(&c, 0), Ok(()));
        assert_eq!(used.use_once(&c, 1), Err(ApprovalError::AlreadyUsed));
        let other = ApprovalClaims {
            nonce: "n2".into(),
            ..claims(1000)
        };
        assert_eq!(used.use_once(&other, 1), Ok(()));
    }
}
