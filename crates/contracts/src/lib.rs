//! caio-contracts: the vocabulary every other CAIO crate speaks.
//!
//! It owns the stable formats of DESIGN.md §3 — service contracts, route requests, policy sets,
//! principals and decisions — their parsing from YAML or JSON, their JSON Schema (generated with
//! schemars, validated with jsonschema), the semantic checks a schema cannot express, and the
//! canonical JSON (RFC 8785) digests that make registry versions, policy versions and decision ids
//! content-addressed. It does no I/O beyond what its callers hand it as text.
#![deny(missing_docs)]

pub mod canonical;
mod core_writer;
pub mod decision;
pub mod limits;
pub mod model;
mod parse;
pub mod policy;
pub mod request;
pub mod schema;
mod semantic;
mod untagged;
pub mod yaml;

pub use limits::Limits;
pub use model::{
    Adapter, ApiSpec, Bound, ConstraintValue, Cost, DataLocality, Endpoint, Privacy, SecuritySpec,
    ServiceContract, ServiceSpec,
};
pub use parse::{
    Format, MAX_PROBLEM_TEXT, MAX_PROBLEMS, Problem, ValidationReport, abbreviate, abbreviate_to,
    detect_kind, parse_contract, parse_policies, parse_principal, parse_request,
    parse_request_value,
};
pub use policy::{PolicyRule, PolicySet};
pub use request::{Budget, DataSpec, Fields, Principal, Requirements, RouteRequest, Scalar};
pub use schema::DocKind;
pub use yaml::LineIndex;

#[cfg(test)]
mod tests;
