//! caio-security: who may use which service with which data.
//!
//! This crate holds the security step of the routing pipeline (DESIGN.md §2 step 3) —
//! authentication of the principal, authorization by permission intersection, privacy for
//! sensitive data, trust levels and the tenant boundary — PII detection in payloads, which
//! marks a request sensitive, and the server's authentication primitives: roles and identities,
//! API keys and their stores, the bootstrap key, JWT verification, webhook signatures and rate
//! limits (docs/reference/authentication.md). It knows no HTTP: the server passes header values
//! in and maps the typed errors to responses.

pub mod approval;
pub mod authn;
pub mod checks;
pub mod error;
pub mod jwt;
pub mod keys;
pub mod pii;
pub mod ratelimit;
pub mod roles;
mod validate;
pub mod webhook;

pub use authn::{Authenticator, TokenKind, bearer_token, classify};
pub use checks::{Denial, SecurityCheck, authenticate, check_service, deny};
pub use error::AuthError;
pub use jwt::{Audience, Claims, JwtConfig, JwtError, JwtVerifier, parse_eddsa_public_key_pem};
pub use keys::{BootstrapKey, FileKeyStore, KeyError, KeyRecord, KeyStore, MemoryKeyStore, NewKey};
pub use pii::scan;
pub use ratelimit::{MemoryRateLimiter, RateDecision, RateLimit, RateLimiter};
pub use roles::{Action, AuthMethod, Identity, Role, UnknownRole};
pub use webhook::{ReplayGuard, WebhookError};
