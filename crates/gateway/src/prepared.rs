//! Per-snapshot state that routing reuses: each contract's CEL `service` value, built once.

use std::collections::HashMap;
use std::sync::Arc;

use caio_registry::Snapshot;
use caio_rules::ServiceScope;

/// The CEL scope of every service in one snapshot, aligned with `Snapshot::entries()`.
#[derive(Debug)]
pub struct PreparedServices {
    version: String,
    scopes: Vec<Arc<ServiceScope>>,
    by_digest: HashMap<String, Arc<ServiceScope>>,
}

impl PreparedServices {
    /// Prepares every service of a snapshot, reusing scopes of unchanged contracts from
    /// `previous`.
    pub fn build(snapshot: &Snapshot, previous: Option<&PreparedServices>) -> PreparedServices {
        let mut by_digest = HashMap::with_capacity(snapshot.len());
        let scopes = snapshot
            .entries()
            .iter()
            .map(|e| {
                let scope = previous
                    .and_then(|p| p.by_digest.get(&e.digest))
                    .filter(|s| s.id() == &e.id)
                    .cloned()
                    .unwrap_or_else(|| {
                        let view = serde_json::to_value(&e.contract.service).unwrap_or_default();
                        Arc::new(ServiceScope::new(Arc::clone(&e.id), view))
                    });
                by_digest.insert(e.digest.clone(), Arc::clone(&scope));
                scope
            })
            .collect();
        PreparedServices {
            version: snapshot.version().to_owned(),
            scopes,
            by_digest,
        }
    }

    /// The snapshot version this was prepared for.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub(crate) fn scope(&self, i: usize) -> Option<&Arc<ServiceScope>> {
        self.scopes.get(i)
    }
}
