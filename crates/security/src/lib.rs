//! caio-security: who may use which service with which data.
//!
//! This crate holds the security step of the routing pipeline (DESIGN.md §2 step 3) —
//! authentication of the principal, authorization by permission intersection, privacy for
//! sensitive data, trust levels and the tenant boundary — and PII detection in payloads, which
//! marks a request sensitive. API keys, JWTs, HMAC signatures and rate limits join it with the
//! server (issue 3).

pub mod checks;
pub mod pii;

pub use checks::{Denial, SecurityCheck, authenticate, check_service, deny};
pub use pii::scan;
