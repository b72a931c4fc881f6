//! Immutable registry snapshots with their capability index.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use caio_contracts::ServiceContract;
use caio_contracts::canonical;

use crate::RegistryError;

/// One registered service.
#[derive(Debug)]
pub struct Entry {
    /// The service id.
    pub id: Arc<str>,
    /// The contract.
    pub contract: Arc<ServiceContract>,
    /// `sha256:` digest of the contract's canonical JSON.
    pub digest: String,
}

impl Entry {
    /// Wraps a contract, computing its digest.
    pub fn new(contract: ServiceContract) -> Result<Entry, RegistryError> {
        let digest = canonical::digest(&contract)
            .map_err(|e| RegistryError::Canonical(contract.service.id.clone(), e.to_string()))?;
        Ok(Entry {
            id: Arc::from(contract.service.id.as_str()),
            contract: Arc::new(contract),
            digest,
        })
    }
}

/// An immutable view of the registry.
#[derive(Debug)]
pub struct Snapshot {
    version: String,
    /// Entries sorted by id.
    entries: Vec<Arc<Entry>>,
    by_id: HashMap<Arc<str>, usize>,
    /// Capability → positions in `entries`, ascending.
    by_capability: HashMap<String, Vec<u32>>,
}

impl Snapshot {
    /// Builds a snapshot from entries (any order; duplicates keep the last).
    pub fn build(entries: impl IntoIterator<Item = Arc<Entry>>) -> Result<Snapshot, RegistryError> {
        let mut sorted: BTreeMap<Arc<str>, Arc<Entry>> = BTreeMap::new();
        for e in entries {
            sorted.insert(Arc::clone(&e.id), e);
        }
        let versions: BTreeMap<&str, &str> = sorted
            .iter()
            .map(|(k, e)| (k.as_ref(), e.digest.as_str()))
            .collect();
        let version = canonical::digest(&versions)
            .map_err(|e| RegistryError::Canonical(String::new(), e.to_string()))?;
        let entries: Vec<Arc<Entry>> = sorted.into_values().collect();
        let mut by_id = HashMap::with_capacity(entries.len());
        let mut by_capability: HashMap<String, Vec<u32>> = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            by_id.insert(Arc::clone(&e.id), i);
            for cap in &e.contract.service.capabilities {
                // Positions fit in u32: a registry is limited far below 4 billion services.
                by_capability.entry(cap.clone()).or_default().push(i as u32);
            }
        }
        Ok(Snapshot {
            version,
            entries,
            by_id,
            by_capability,
        })
    }

    /// An empty snapshot.
    pub fn empty() -> Snapshot {
        Snapshot::build(Vec::new()).unwrap_or_else(|_| Snapshot {
            version: String::new(),
            entries: Vec::new(),
            by_id: HashMap::new(),
            by_capability: HashMap::new(),
        })
    }

    /// The content-addressed version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// All entries, sorted by id.
    pub fn entries(&self) -> &[Arc<Entry>] {
        &self.entries
    }

    /// Number of services.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the registry is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry of a service.
    pub fn get(&self, id: &str) -> Option<&Arc<Entry>> {
        self.by_id.get(id).map(|i| &self.entries[*i])
    }

    /// Positions (into [`Snapshot::entries`], ascending) of the services that offer every one of
    /// `capabilities`: the shortest posting list filtered by the others.
    pub fn candidates(&self, capabilities: &[String]) -> Vec<usize> {
        let mut lists: Vec<&Vec<u32>> = Vec::with_capacity(capabilities.len());
        for cap in capabilities {
            match self.by_capability.get(cap) {
                Some(l) => lists.push(l),
                None => return Vec::new(),
            }
        }
        lists.sort_by_key(|l| l.len());
        let Some((first, rest)) = lists.split_first() else {
            return Vec::new();
        };
        first
            .iter()
            .filter(|i| rest.iter().all(|l| l.binary_search(i).is_ok()))
            .map(|i| *i as usize)
            .collect()
    }

    /// Services per capability.
    pub fn capability_counts(&self) -> BTreeMap<&str, usize> {
        self.by_capability
            .iter()
            .map(|(k, v)| (k.as_str(), v.len()))
            .collect()
    }
}
