//! caio-sdk: what a third-party service author needs to describe a service to CAIO.
//!
//! The SDK depends on caio-contracts (and caio-calculus) only, never on the registry, the gateway,
//! security internals or any binary, so a service can build its contract and check it exactly as
//! CAIO will, without pulling in the orchestrator. The service-side wire protocol
//! (`docs/service-protocol.md`) joins it with the gateway issue.
#![deny(missing_docs)]

pub use caio_contracts::{
    Adapter, ApiSpec, Bound, ConstraintValue, Cost, DataLocality, Endpoint, Format, Privacy,
    SecuritySpec, ServiceContract, ServiceSpec, ValidationReport, parse_contract,
};

/// Checks a contract the way CAIO's registry will, returning every problem with its field path
/// and line.
pub fn check_contract(source: &str, text: &str) -> Result<ServiceContract, ValidationReport> {
    parse_contract(source, text, Format::Auto)
}

/// Would a request demanding `required` be satisfied by a contract offering `offered`? The same
/// predicate CAIO's matcher applies.
pub fn bound_satisfied(required: &Bound, offered: Option<&Bound>) -> bool {
    caio_calculus::matching::bound_satisfied(required, offered)
}
