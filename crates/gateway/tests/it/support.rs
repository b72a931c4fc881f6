//! Shared fixtures: the repository's contracts, policies and principals.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use caio_contracts::{PolicySet, Principal, RouteRequest, ServiceContract};
use caio_gateway::Router;
use caio_gateway::loader;
use caio_registry::MemoryRegistry;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn fixtures() -> PathBuf {
    root().join("fixtures")
}

pub fn contracts() -> Vec<ServiceContract> {
    loader::load_services_dir(&fixtures().join("services")).unwrap_or_else(|e| panic!("{e}"))
}

pub fn policy_set() -> PolicySet {
    loader::load_policies(&fixtures().join("policies.yaml"))
        .unwrap_or_else(|e| panic!("{e}"))
        .0
}

pub fn compiled() -> caio_rules::CompiledPolicies {
    caio_rules::compile(&policy_set()).unwrap_or_else(|e| panic!("{e:?}"))
}

pub fn principal(name: &str) -> Principal {
    loader::load_principal(&fixtures().join("principals").join(format!("{name}.yaml")))
        .unwrap_or_else(|e| panic!("{e}"))
}

pub fn router_with(contracts: Vec<ServiceContract>) -> Router {
    let registry = MemoryRegistry::with_contracts(contracts).unwrap_or_else(|e| panic!("{e}"));
    Router::new(Arc::new(registry), compiled())
}

pub fn router() -> Router {
    router_with(contracts())
}

pub fn request_from_yaml(text: &str) -> RouteRequest {
    caio_contracts::parse_request("test", text, caio_contracts::Format::Yaml)
        .unwrap_or_else(|e| panic!("{e}"))
}
