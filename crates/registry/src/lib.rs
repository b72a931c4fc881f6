//! caio-registry: the service store.
//!
//! Every change produces a new immutable [`Snapshot`] with a content-addressed version (the digest
//! of the sorted `id → contract digest` map), published with an atomic pointer swap: readers load
//! the current snapshot without taking a lock and keep using it while writers build the next one.
//! A capability index (capability → sorted service positions) keeps matching proportional to the
//! services that offer a capability rather than to the registry size. This crate has the memory
//! backend; a Redis backend joins it behind the same [`Registry`] trait in the cluster issue.

mod memory;
mod snapshot;

pub use memory::MemoryRegistry;
pub use snapshot::{Entry, Snapshot};

use caio_contracts::ServiceContract;

/// Why a registry change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Registering an id that exists.
    #[error("service `{0}` is already registered")]
    AlreadyExists(String),
    /// Updating or removing an id that does not exist.
    #[error("service `{0}` is not registered")]
    NotFound(String),
    /// The contract has no canonical form.
    #[error("contract `{0}` cannot be hashed: {1}")]
    Canonical(String, String),
}

/// What a change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The registry version before.
    pub previous_version: String,
    /// The registry version after.
    pub version: String,
}

/// A service store with versioned snapshots.
pub trait Registry: Send + Sync {
    /// The current snapshot; never blocks on writers.
    fn snapshot(&self) -> std::sync::Arc<Snapshot>;
    /// Adds a new service.
    fn register(&self, contract: ServiceContract) -> Result<Change, RegistryError>;
    /// Replaces an existing service's contract.
    fn update(&self, contract: ServiceContract) -> Result<Change, RegistryError>;
    /// Adds or replaces.
    fn upsert(&self, contract: ServiceContract) -> Result<Change, RegistryError>;
    /// Removes a service.
    fn remove(&self, id: &str) -> Result<Change, RegistryError>;
}

#[cfg(test)]
mod tests;
