//! Tenant isolation for routing: each tenant routes against a view of the registry holding only
//! its own services and the public ones.
//!
//! Filtering before the pipeline (rather than letting the security step reject other tenants'
//! services) keeps another tenant's service ids out of a decision's `rejected` list, so a decision
//! never tells one tenant what another has registered. The view has its own content-addressed
//! version (the digest of the visible services), which is the `registry_version` the decision
//! records: a tenant can verify its decisions offline with exactly the contracts it can see.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwap;
use caio_contracts::ServiceContract;
use caio_gateway::exec::health::SharedHistory;
use caio_gateway::{CompiledPolicies, Router};
use caio_registry::{Change, Registry, RegistryError, Snapshot};

/// Whether a service of `service_tenant` is visible to a principal of `tenant`.
pub fn visible(service_tenant: &str, tenant: &str) -> bool {
    service_tenant == "public" || service_tenant == tenant
}

/// A read-only view of a registry restricted to one tenant and `public` (and, for a pinned view,
/// to one service).
struct TenantView {
    base: Arc<dyn Registry>,
    tenant: String,
    only: Option<String>,
    /// (base version, filtered snapshot), rebuilt when the base moves on.
    cache: ArcSwap<(String, Arc<Snapshot>)>,
}

impl TenantView {
    fn new(base: Arc<dyn Registry>, tenant: &str, only: Option<&str>) -> TenantView {
        let view = TenantView {
            base,
            tenant: tenant.to_owned(),
            only: only.map(str::to_owned),
            cache: ArcSwap::from_pointee((String::new(), Arc::new(Snapshot::empty()))),
        };
        view.refresh();
        view
    }

    fn refresh(&self) -> Arc<Snapshot> {
        let base = self.base.snapshot();
        let current = self.cache.load();
        if current.0 == base.version() {
            return Arc::clone(&current.1);
        }
        let entries = base
            .entries()
            .iter()
            .filter(|e| visible(&e.contract.service.tenant, &self.tenant))
            .filter(|e| self.only.as_deref().is_none_or(|id| *e.id == *id))
            .cloned();
        // Building from entries of a valid snapshot cannot fail (their digests exist); if it
        // ever did, routing against an empty view fails closed.
        let filtered = Arc::new(Snapshot::build(entries).unwrap_or_else(|_| Snapshot::empty()));
        self.cache
            .store(Arc::new((base.version().to_owned(), Arc::clone(&filtered))));
        filtered
    }
}

impl Registry for TenantView {
    fn snapshot(&self) -> Arc<Snapshot> {
        let current = self.cache.load();
        if current.0 == self.base.snapshot().version() {
            return Arc::clone(&current.1);
        }
        self.refresh()
    }
    // Writes go to the shared registry, never through a view.
    fn register(&self, c: ServiceContract) -> Result<Change, RegistryError> {
        self.base.register(c)
    }
    fn update(&self, c: ServiceContract) -> Result<Change, RegistryError> {
        self.base.update(c)
    }
    fn upsert(&self, c: ServiceContract) -> Result<Change, RegistryError> {
        self.base.upsert(c)
    }
    fn remove(&self, id: &str) -> Result<Change, RegistryError> {
        self.base.remove(id)
    }
}

/// One [`Router`] per tenant, created on first use, all sharing the registry and the policies.
pub struct TenantRouters {
    base: Arc<dyn Registry>,
    policies: ArcSwap<CompiledPolicies>,
    /// The gateway's health board publishes here; every tenant's router reads it.
    history: SharedHistory,
    routers: RwLock<HashMap<String, Arc<Router>>>,
    /// Routers over one service of a tenant's view (`model: <service id>` on the OpenAI
    /// endpoints), keyed by (tenant, service id).
    pinned: RwLock<HashMap<(String, String), Arc<Router>>>,
}

impl std::fmt::Debug for TenantRouters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantRouters")
            .field("policy_version", &self.policies.load().version)
            .finish_non_exhaustive()
    }
}

impl TenantRouters {
    /// Routers over `base` applying `policies`.
    pub fn new(
        base: Arc<dyn Registry>,
        policies: CompiledPolicies,
        history: SharedHistory,
    ) -> TenantRouters {
        TenantRouters {
            base,
            policies: ArcSwap::from_pointee(policies),
            history,
            routers: RwLock::new(HashMap::new()),
            pinned: RwLock::new(HashMap::new()),
        }
    }

    /// The shared registry.
    pub fn registry(&self) -> &Arc<dyn Registry> {
        &self.base
    }

    /// The active policies.
    pub fn policies(&self) -> Arc<CompiledPolicies> {
        self.policies.load_full()
    }

    /// The router of a tenant.
    pub fn for_tenant(&self, tenant: &str) -> Arc<Router> {
        if let Some(r) = self
            .routers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant)
        {
            return Arc::clone(r);
        }
        let mut routers = self.routers.write().unwrap_or_else(|p| p.into_inner());
        let policies = self.policies.load_full();
        Arc::clone(routers.entry(tenant.to_owned()).or_insert_with(|| {
            let view: Arc<dyn Registry> =
                Arc::new(TenantView::new(Arc::clone(&self.base), tenant, None));
            Arc::new(
                Router::with_shared_policies(view, Arc::clone(&policies))
                    .share_history(Arc::clone(&self.history)),
            )
        }))
    }

    /// The router of a tenant restricted to one service: a decision picks that service when it
    /// is visible and feasible, and is a no-route otherwise. Only for ids of registered services
    /// (the cache holds one router per tenant and service asked for).
    pub fn for_service(&self, tenant: &str, service_id: &str) -> Arc<Router> {
        let key = (tenant.to_owned(), service_id.to_owned());
        if let Some(r) = self
            .pinned
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Arc::clone(r);
        }
        // Lock order: routers, then pinned (as in set_policies).
        let _routers = self.routers.write().unwrap_or_else(|p| p.into_inner());
        let mut pinned = self.pinned.write().unwrap_or_else(|p| p.into_inner());
        let policies = self.policies.load_full();
        Arc::clone(pinned.entry(key).or_insert_with(|| {
            let view: Arc<dyn Registry> = Arc::new(TenantView::new(
                Arc::clone(&self.base),
                tenant,
                Some(service_id),
            ));
            Arc::new(
                Router::with_shared_policies(view, policies)
                    .share_history(Arc::clone(&self.history)),
            )
        }))
    }

    /// Drops the routers pinned to a service that left the registry.
    pub fn forget_service(&self, service_id: &str) {
        self.pinned
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(_, id), _| id != service_id);
    }

    /// Activates a new policy set for every tenant.
    pub fn set_policies(&self, policies: CompiledPolicies) {
        // Hold the write locks so a router created concurrently cannot miss the new set.
        let routers = self.routers.write().unwrap_or_else(|p| p.into_inner());
        let pinned = self.pinned.write().unwrap_or_else(|p| p.into_inner());
        let policies = Arc::new(policies);
        for r in routers.values().chain(pinned.values()) {
            r.set_shared_policies(Arc::clone(&policies));
        }
        self.policies.store(policies);
    }
}
