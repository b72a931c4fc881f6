//! `AuthError`: why a credential (API key, bootstrap key or JWT) was refused, shared by every
//! authentication path so the server maps all of them to one 401 answer and one metric label.

/// Why a request could not be authenticated.
///
/// Display messages are short and meant for the client: they never contain the presented
/// credential, a key, a secret or a signature. [`AuthError::reason`] is the stable code for
/// metrics and error details.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credential was presented.
    #[error("no credential presented")]
    Missing,
    /// The credential does not have the expected shape; the text says which part.
    #[error("malformed credential: {0}")]
    Malformed(&'static str),
    /// An API key with a well-formed id that no stored key has.
    #[error("unknown API key")]
    UnknownKey,
    /// An API key whose id exists but whose secret does not match.
    #[error("invalid API key")]
    InvalidKey,
    /// The key was revoked.
    #[error("credential revoked")]
    Revoked,
    /// The key or token has expired.
    #[error("credential expired")]
    Expired,
    /// The token's `nbf` lies in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// The JWT `alg` is not accepted here (name sanitized and truncated to 32 characters).
    #[error("unsupported token algorithm `{0}`")]
    UnsupportedAlgorithm(String),
    /// The JWT signature does not verify with any configured key.
    #[error("bad token signature")]
    BadSignature,
    /// The JWT `iss` is not the configured issuer.
    #[error("wrong token issuer")]
    WrongIssuer,
    /// The JWT `aud` does not contain the configured audience.
    #[error("wrong token audience")]
    WrongAudience,
    /// The (authentic) claims are not acceptable; the text names the fields.
    #[error("invalid token claims: {0}")]
    InvalidClaims(String),
}

impl AuthError {
    /// Stable snake_case reason for metrics labels and error details.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed(_) => "malformed",
            AuthError::UnknownKey => "unknown_key",
            AuthError::InvalidKey => "invalid_key",
            AuthError::Revoked => "revoked",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::UnsupportedAlgorithm(_) => "unsupported_algorithm",
            AuthError::BadSignature => "bad_signature",
            AuthError::WrongIssuer => "wrong_issuer",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::InvalidClaims(_) => "invalid_claims",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_distinct_snake_case() {
        let all = [
            AuthError::Missing,
            AuthError::Malformed("x"),
            AuthError::UnknownKey,
            AuthError::InvalidKey,
            AuthError::Revoked,
            AuthError::Expired,
            AuthError::NotYetValid,
            AuthError::UnsupportedAlgorithm("none".into()),
            AuthError::BadSignature,
            AuthError::WrongIssuer,
            AuthError::WrongAudience,
            AuthError::InvalidClaims("sub".into()),
        ];
        let mut reasons: Vec<&str> = all.iter().map(AuthError::reason).collect();
        assert!(
            reasons
                .iter()
                .all(|r| r.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        );
        reasons.sort_unstable();
        reasons.dedup();
        assert_eq!(reasons.len(), all.len());
    }

    #[test]
    fn display_is_short() {
        assert_eq!(AuthError::InvalidKey.to_string(), "invalid API key");
        assert_eq!(
            AuthError::UnsupportedAlgorithm("none".into()).to_string(),
            "unsupported token algorithm `none`"
        );
    }
}
