//! From an `Authorization` header to an [`Identity`]: bearer parsing, telling API keys from JWTs,
//! and the order in which the credentials are tried. The server calls [`Authenticator`] once
//! per request; keeping the order here keeps it in one tested place.

use std::sync::Arc;

use crate::error::AuthError;
use crate::jwt::JwtVerifier;
use crate::keys::{BootstrapKey, KEY_PREFIX, KeyStore};
use crate::roles::Identity;

/// What a bearer token looks like it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// Starts with `caio_`.
    ApiKey,
    /// Exactly two dots (three segments).
    Jwt,
    /// Neither (only the bootstrap key may look like this).
    Other,
}

/// Tells API keys from JWTs by shape alone: `caio_…` is an API key, `x.y.z` a JWT.
pub fn classify(token: &str) -> TokenKind {
    if token.starts_with(KEY_PREFIX) {
        TokenKind::ApiKey
    } else if token.bytes().filter(|b| *b == b'.').count() == 2 {
        TokenKind::Jwt
    } else {
        TokenKind::Other
    }
}

/// The token of an `Authorization: Bearer <token>` header value. The scheme is
/// case-insensitive (RFC 7235); the token may not contain whitespace.
pub fn bearer_token(header: Option<&str>) -> Result<&str, AuthError> {
    let value = header.ok_or(AuthError::Missing)?.trim();
    if value.is_empty() {
        return Err(AuthError::Missing);
    }
    let Some((scheme, rest)) = value.split_once(' ') else {
        return Err(AuthError::Malformed(
            "expected Authorization: Bearer <token>",
        ));
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed(
            "expected Authorization: Bearer <token>",
        ));
    }
    let token = rest.trim_start_matches(' ');
    if token.is_empty() {
        return Err(AuthError::Malformed("empty bearer token"));
    }
    if token
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(AuthError::Malformed("bearer token contains whitespace"));
    }
    Ok(token)
}

/// Authenticates requests with the bootstrap key, API keys and JWTs.
#[derive(Debug, Clone)]
pub struct Authenticator {
    keys: Arc<dyn KeyStore>,
    jwt: Option<JwtVerifier>,
    bootstrap: Option<BootstrapKey>,
}

impl Authenticator {
    /// API keys only; add JWTs and a bootstrap key with the `with_` methods.
    pub fn new(keys: Arc<dyn KeyStore>) -> Self {
        Authenticator {
            keys,
            jwt: None,
            bootstrap: None,
        }
    }

    /// Also accept JWTs.
    pub fn with_jwt(mut self, verifier: JwtVerifier) -> Self {
        self.jwt = Some(verifier);
        self
    }

    /// Also accept the bootstrap key.
    pub fn with_bootstrap(mut self, key: BootstrapKey) -> Self {
        self.bootstrap = Some(key);
        self
    }

    /// The key store (for the key-management endpoints).
    pub fn keys(&self) -> &Arc<dyn KeyStore> {
        &self.keys
    }

    /// Authenticates the value of an `Authorization` header at `now_ms`.
    ///
    /// The bootstrap key is compared first, whatever its shape, so an operator's bootstrap key
    /// may look like anything; then `caio_…` tokens go to the key store and three-segment
    /// tokens to the JWT verifier (at `now_ms / 1000`).
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        now_ms: u64,
    ) -> Result<Identity, AuthError> {
        let token = bearer_token(authorization)?;
        if let Some(b) = &self.bootstrap
            && b.matches(token)
        {
            return Ok(b.identity());
        }
        match classify(token) {
            TokenKind::ApiKey => self.keys.authenticate(token, now_ms).map(|r| r.identity()),
            TokenKind::Jwt => match &self.jwt {
                Some(v) => v.verify(token, now_ms / 1000).map(|c| c.identity()),
                None => Err(AuthError::Malformed("this server does not accept JWTs")),
            },
            TokenKind::Other => Err(AuthError::Malformed(
                "token is neither an API key nor a JWT",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::{JwtConfig, sign_hs256};
    use crate::keys::{MemoryKeyStore, NewKey, generate};
    use crate::roles::{AuthMethod, Role};

    const NOW_MS: u64 = 1_700_000_000_000;
    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const BOOT: &str = "bootstrap.key-with.dots-0123456789";

    fn setup() -> (Authenticator, String) {
        let store = Arc::new(MemoryKeyStore::new());
        let (plain, rec) = generate(
            NewKey {
                name: "ci".into(),
                role: Role::Client,
                tenant: "public".into(),
                permissions: vec![],
                trust_level: 1,
                service_id: None,
                expires_at_ms: None,
            },
            "test",
            NOW_MS,
        )
        .unwrap();
        store.insert(rec).unwrap();
        let jwt = JwtVerifier::new(JwtConfig {
            hs256_secret: Some(SECRET.to_vec()),
            ..JwtConfig::default()
        })
        .unwrap();
        let auth = Authenticator::new(store)
            .with_jwt(jwt)
            .with_bootstrap(BootstrapKey::from_plaintext(BOOT).unwrap());
        (auth, plain)
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token(None), Err(AuthError::Missing));
        assert_eq!(bearer_token(Some("")), Err(AuthError::Missing));
        assert_eq!(bearer_token(Some("   ")), Err(AuthError::Missing));
        assert_eq!(bearer_token(Some("Bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(Some("bearer  abc ")), Ok("abc"));
        assert_eq!(bearer_token(Some("BEARER abc")), Ok("abc"));
        for bad in [
            "Basic dXNlcjpwYXNz",
            "Bearer",
            "Bearer ",
            "abc",
            "Bearer a b",
            "Bearer a\tb",
            "Token abc",
            "Bearerabc",
        ] {
            assert!(
                matches!(bearer_token(Some(bad)), Err(AuthError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn classification() {
        assert_eq!(classify("caio_0123"), TokenKind::ApiKey);
        assert_eq!(classify("a.b.c"), TokenKind::Jwt);
        assert_eq!(classify("a.b"), TokenKind::Other);
        assert_eq!(classify("a.b.c.d"), TokenKind::Other);
        assert_eq!(classify(""), TokenKind::Other);
    }

    #[test]
    fn each_credential_kind() {
        let (auth, key) = setup();
        let id = auth
            .authenticate(Some(&format!("Bearer {key}")), NOW_MS)
            .unwrap();
        assert_eq!(id.method, AuthMethod::ApiKey);
        assert_eq!(id.role, Role::Client);

        let token = sign_hs256(
            &serde_json::json!({"sub": "svc-bot", "exp": NOW_MS / 1000 + 60, "role": "operator"}),
            SECRET,
        );
        let id = auth
            .authenticate(Some(&format!("Bearer {token}")), NOW_MS)
            .unwrap();
        assert_eq!(
            (id.method, id.subject.as_str()),
            (AuthMethod::Jwt, "jwt:svc-bot")
        );
        // The JWT clock is the request clock in seconds.
        assert_eq!(
            auth.authenticate(Some(&format!("Bearer {token}")), NOW_MS + 61_000),
            Err(AuthError::Expired)
        );

        // The bootstrap key wins even though it has two dots.
        let id = auth
            .authenticate(Some(&format!("Bearer {BOOT}")), NOW_MS)
            .unwrap();
        assert_eq!(id.method, AuthMethod::Bootstrap);
        assert_eq!(id.role, Role::Admin);
    }

    #[test]
    fn failures() {
        let (auth, key) = setup();
        assert_eq!(auth.authenticate(None, NOW_MS), Err(AuthError::Missing));
        assert!(matches!(
            auth.authenticate(Some("Bearer opaque-token"), NOW_MS),
            Err(AuthError::Malformed(_))
        ));
        let wrong = format!("Bearer {}", key.replace("caio_", "caio-"));
        assert!(matches!(
            auth.authenticate(Some(&wrong), NOW_MS),
            Err(AuthError::Malformed(_))
        ));
        let store_only = Authenticator::new(auth.keys().clone());
        assert_eq!(
            store_only.authenticate(Some(&format!("Bearer {BOOT}")), NOW_MS),
            Err(AuthError::Malformed("this server does not accept JWTs"))
        );
    }
}
