//! Routing errors with their stable codes.

use caio_contracts::decision::{Proof, Rejection};
use serde_json::json;

/// No service survived the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct NoRoute {
    /// Every service with the step and reason that removed it.
    pub rejected: Vec<Rejection>,
    /// The evidence gathered before the pipeline ran out of candidates.
    pub proof: Proof,
    /// The registry version routed against.
    pub registry_version: String,
    /// The policy version applied.
    pub policy_version: String,
    /// Digest of the recorded request.
    pub request_digest: String,
}

/// Why `route` returned no decision.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RouteError {
    /// No feasible service.
    #[error("no service satisfies the request ({} rejected)", .0.rejected.len())]
    NoMatchingService(Box<NoRoute>),
    /// A value could not be canonicalized (a bug: inputs are validated before routing).
    #[error("internal error: {0}")]
    Internal(String),
}

impl RouteError {
    /// The stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            RouteError::NoMatchingService(_) => "NO_MATCHING_SERVICE",
            RouteError::Internal(_) => "INTERNAL",
        }
    }

    /// The `{"error": {"code", "message", "details"}}` body.
    pub fn to_body(&self) -> serde_json::Value {
        let details = match self {
            RouteError::NoMatchingService(n) => json!({
                "rejected": n.rejected,
                "registry_version": n.registry_version,
                "policy_version": n.policy_version,
                "request_digest": n.request_digest,
            }),
            RouteError::Internal(_) => json!({}),
        };
        json!({"error": {"code": self.code(), "message": self.to_string(), "details": details}})
    }
}
