//! The in-memory backend: an atomically swapped snapshot pointer and a writer lock.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use caio_contracts::ServiceContract;

use crate::snapshot::{Entry, Snapshot};
use crate::{Change, Registry, RegistryError};

/// A registry held in memory.
///
/// Readers load the current `Arc<Snapshot>` from an `ArcSwap` (lock-free); writers serialize on a
/// mutex among themselves, build the next snapshot and publish it with an atomic pointer swap, so a
/// reader never waits for a writer.
#[derive(Debug)]
pub struct MemoryRegistry {
    current: ArcSwap<Snapshot>,
    writer: Mutex<()>,
}

impl Default for MemoryRegistry {
    fn default() -> Self {
        MemoryRegistry {
            current: ArcSwap::from_pointee(Snapshot::empty()),
            writer: Mutex::new(()),
        }
    }
}

impl MemoryRegistry {
    /// An empty registry.
    pub fn new() -> MemoryRegistry {
        MemoryRegistry::default()
    }

    /// A registry preloaded with contracts (a later contract with the same id replaces an
    /// earlier one).
    pub fn with_contracts(
        contracts: impl IntoIterator<Item = ServiceContract>,
    ) -> Result<MemoryRegistry, RegistryError> {
        let entries = contracts
            .into_iter()
            .map(|c| Entry::new(c).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MemoryRegistry {
            current: ArcSwap::from_pointee(Snapshot::build(entries)?),
            writer: Mutex::new(()),
        })
    }

    /// Adds or replaces a contract; with `must_exist`, only replaces.
    fn put(&self, contract: ServiceContract, must_exist: bool) -> Result<Change, RegistryError> {
        let entry = Arc::new(Entry::new(contract)?);
        self.change(|s| {
            if must_exist && s.get(&entry.id).is_none() {
                return Err(RegistryError::NotFound(entry.id.to_string()));
            }
            let mut v: Vec<_> = s
                .entries()
                .iter()
                .filter(|e| e.id != entry.id)
                .cloned()
                .collect();
            v.push(entry);
            Ok(v)
        })
    }

    fn change(
        &self,
        f: impl FnOnce(&Snapshot) -> Result<Vec<Arc<Entry>>, RegistryError>,
    ) -> Result<Change, RegistryError> {
        // A poisoned lock only means another writer panicked; the snapshot it guards is immutable
        // and still whole, so carry on with it.
        let _guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let before = self.snapshot();
        let next = Arc::new(Snapshot::build(f(&before)?)?);
        let change = Change {
            previous_version: before.version().to_owned(),
            version: next.version().to_owned(),
        };
        self.current.store(next);
        Ok(change)
    }
}

impl Registry for MemoryRegistry {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    fn register(&self, contract: ServiceContract) -> Result<Change, RegistryError> {
        let entry = Arc::new(Entry::new(contract)?);
        self.change(|s| {
            if s.get(&entry.id).is_some() {
                return Err(RegistryError::AlreadyExists(entry.id.to_string()));
            }
            let mut v = s.entries().to_vec();
            v.push(entry);
            Ok(v)
        })
    }

    fn update(&self, contract: ServiceContract) -> Result<Change, RegistryError> {
        self.put(contract, true)
    }

    fn upsert(&self, contract: ServiceContract) -> Result<Change, RegistryError> {
        self.put(contract, false)
    }

    fn remove(&self, id: &str) -> Result<Change, RegistryError> {
        self.change(|s| {
            if s.get(id).is_none() {
                return Err(RegistryError::NotFound(id.to_owned()));
            }
            Ok(s.entries()
                .iter()
                .filter(|e| e.id.as_ref() != id)
                .cloned()
                .collect())
        })
    }
}
