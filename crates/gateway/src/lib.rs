//! caio-gateway: the orchestrator.
//!
//! [`route`] composes steps 1–9 of the pipeline (DESIGN.md §2) into one pure function of a
//! registry snapshot, a compiled policy set, a principal, observed history and the request, and
//! returns a sealed [`Decision`](caio_contracts::decision::Decision) or a `NO_MATCHING_SERVICE`
//! error that lists every rejected service. [`verify()`] recomputes a recorded decision from the
//! contracts and policies and reports the first disagreement. [`Router`] keeps a registry and a
//! policy set together with the per-snapshot state routing reuses. [`Gateway`] executes decisions
//! through adapters, with retries, fallbacks, circuit breakers and guarantee enforcement
//! ([`exec`]).

pub mod documents;
mod error;
pub mod exec;
pub mod loader;
mod pipeline;
mod prepared;
mod router;
pub mod verify;

pub use error::{NoRoute, RouteError};
pub use exec::{
    ExecuteError, ExecuteOptions, Execution, ExecutionStatus, Gateway, GatewayConfig,
    ViolationPolicy,
};
pub use pipeline::{RouteContext, route, route_sealed};
pub use prepared::PreparedServices;
pub use router::Router;
pub use verify::{Disagreement, Verified, verify};

pub use caio_rules::CompiledPolicies;
pub use caio_trace::SealedDecision;

/// Offline checks of the hash-chained logs a server keeps (its trace log and audit log), for
/// tools that link the gateway rather than the stores.
pub mod logs {
    pub use caio_trace::{ChainHead, StoreError, verify_audit_log, verify_log};
}

/// Compiles a policy set (CEL errors name the policy and position).
pub fn compile_policy_set(
    set: &caio_contracts::PolicySet,
) -> Result<CompiledPolicies, caio_rules::PolicyError> {
    caio_rules::compile(set).map_err(|mut errors| errors.remove(0))
}
