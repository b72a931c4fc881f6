//! Per-snapshot, per-policy-version state that routing reuses: each contract's CEL `service`
//! value, its service-only policy verdicts (filled on first use), and the "missing capability"
//! rejections per set of required capabilities.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use caio_contracts::decision::{Rejection, SharedRejections, Step};
use caio_registry::Snapshot;
use caio_rules::{CompiledPolicies, ServiceScope, ServiceTable};

/// Most capability sets whose rejections are kept; the cache starts over beyond it.
const UNMATCHED_CACHE_ENTRIES: usize = 4096;

#[derive(Debug)]
struct PreparedService {
    digest: String,
    statics: caio_calculus::objective::Statics,
    scope: Arc<ServiceScope>,
    table: OnceLock<Arc<ServiceTable>>,
}

/// Routing state for one registry snapshot under one policy set, aligned with
/// `Snapshot::entries()`.
#[derive(Debug)]
pub struct PreparedServices {
    version: String,
    policy_version: String,
    services: Vec<PreparedService>,
    unmatched: RwLock<HashMap<Vec<String>, Arc<SharedRejections>>>,
}

impl PreparedServices {
    /// Prepares a snapshot for a policy set, reusing what `previous` computed for unchanged
    /// contracts (scopes always, verdict tables when the policy set is the same).
    pub fn build(
        snapshot: &Snapshot,
        policies: &CompiledPolicies,
        previous: Option<&PreparedServices>,
    ) -> PreparedServices {
        let reuse: HashMap<&str, &PreparedService> = previous
            .map(|p| p.services.iter().map(|s| (s.digest.as_str(), s)).collect())
            .unwrap_or_default();
        let same_policies = previous.is_some_and(|p| p.policy_version == policies.version);
        let services = snapshot
            .entries()
            .iter()
            .map(|e| {
                let old = reuse
                    .get(e.digest.as_str())
                    .filter(|s| s.scope.id() == &e.id);
                let scope = old.map(|s| Arc::clone(&s.scope)).unwrap_or_else(|| {
                    let view = serde_json::to_value(&e.contract.service).unwrap_or_default();
                    Arc::new(ServiceScope::new(Arc::clone(&e.id), view))
                });
                let table = OnceLock::new();
                if same_policies && let Some(t) = old.and_then(|s| s.table.get()) {
                    let _ = table.set(Arc::clone(t));
                }
                PreparedService {
                    digest: e.digest.clone(),
                    statics: caio_calculus::objective::statics(&e.contract.service),
                    scope,
                    table,
                }
            })
            .collect();
        PreparedServices {
            version: snapshot.version().to_owned(),
            policy_version: policies.version.clone(),
            services,
            unmatched: RwLock::new(HashMap::new()),
        }
    }

    /// The snapshot version this was prepared for.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The policy version this was prepared for.
    pub fn policy_version(&self) -> &str {
        &self.policy_version
    }

    pub(crate) fn scope(&self, i: usize) -> Option<&Arc<ServiceScope>> {
        self.services.get(i).map(|s| &s.scope)
    }

    /// The contract-only terms of service `i`.
    pub(crate) fn statics(&self, i: usize) -> Option<&caio_calculus::objective::Statics> {
        self.services.get(i).map(|s| &s.statics)
    }

    /// The service-only verdicts of service `i`, computed on first use.
    pub(crate) fn table(
        &self,
        i: usize,
        policies: &CompiledPolicies,
    ) -> Option<&Arc<ServiceTable>> {
        let s = self.services.get(i)?;
        Some(
            s.table
                .get_or_init(|| Arc::new(policies.service_table(&s.scope))),
        )
    }

    /// The rejections of every service lacking one of `capabilities`, in id order, computed once
    /// per capability set.
    pub(crate) fn unmatched(
        &self,
        snapshot: &Snapshot,
        capabilities: &[String],
        candidates: &[usize],
    ) -> Arc<SharedRejections> {
        if let Some(hit) = self
            .unmatched
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(capabilities)
        {
            return Arc::clone(hit);
        }
        let mut next = candidates.iter().peekable();
        let mut out = Vec::with_capacity(snapshot.len().saturating_sub(candidates.len()));
        for (i, entry) in snapshot.entries().iter().enumerate() {
            if next.peek() == Some(&&i) {
                next.next();
                continue;
            }
            let caps = &entry.contract.service.capabilities;
            let missing = capabilities
                .iter()
                .find(|c| !caps.contains(c))
                .map_or("", String::as_str);
            out.push(Rejection {
                service_id: Arc::clone(&entry.id),
                step: Step::Match,
                reason: "missing_capability".into(),
                detail: Arc::from(format!("does not offer capability `{missing}`")),
            });
        }
        let list = Arc::new(SharedRejections::new(out));
        let mut cache = self.unmatched.write().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= UNMATCHED_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(capabilities.to_vec(), Arc::clone(&list));
        list
    }
}
