//! Tenant isolation for routing: each tenant routes against a view of the registry holding only
//! its own services and the public ones.
//!
//! Filtering before the pipeline (rather than letting the security step reject other tenants'
//! services) keeps another tenant's service ids out of a decision's `rejected` list, so a decision
//! never tells one tenant what another has registered. The view has its own content-addressed
//! version (the digest of the visible services), which is the `registry_version` the decision
//! records: a tenant can verify its decisions offline with exactly the contracts it can see.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// How many routers each cache keeps (tenants; tenant and pinned service pairs). Tenants come
/// from API keys and from JWT claims, so their number is not CAIO's to choose; past the cap the
/// least recently used router is dropped (and rebuilt, with its prepared state, if that tenant
/// comes back).
pub const MAX_CACHED_ROUTERS: usize = 10_000;

/// A cached router and when it was last handed out (milliseconds, see `TenantRouters::tick`).
struct Cached {
    router: Arc<Router>,
    used: AtomicU64,
}

/// One [`Router`] per tenant, created on first use, all sharing the registry and the policies.
pub struct TenantRouters {
    base: Arc<dyn Registry>,
    policies: ArcSwap<CompiledPolicies>,
    /// The gateway's health board publishes here; every tenant's router reads it.
    history: SharedHistory,
    routers: RwLock<HashMap<String, Cached>>,
    /// Routers over one service of a tenant's view (`model: <service id>` on the OpenAI
    /// endpoints), keyed by (tenant, service id).
    pinned: RwLock<HashMap<(String, String), Cached>>,
    /// Cache capacity (each of the two maps).
    capacity: usize,
    started: std::time::Instant,
}

/// Makes room for one more entry: when the map is full, drops the least recently used tenth
/// (at least one), so a stream of new tenants pays for one scan per tenth of the capacity
/// rather than one per new tenant.
fn make_room<K: Clone + Eq + std::hash::Hash>(map: &mut HashMap<K, Cached>, capacity: usize) {
    let capacity = capacity.max(1);
    if map.len() < capacity {
        return;
    }
    let mut by_use: Vec<(u64, K)> = map
        .iter()
        .map(|(k, c)| (c.used.load(Ordering::Relaxed), k.clone()))
        .collect();
    let drop = (capacity / 10)
        .max(1)
        .max(map.len() + 1 - capacity)
        .min(by_use.len());
    if drop == 0 {
        return;
    }
    by_use.select_nth_unstable_by_key(drop - 1, |(used, _)| *used);
    for (_, k) in by_use.into_iter().take(drop) {
        map.remove(&k);
    }
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
            capacity: MAX_CACHED_ROUTERS,
            started: std::time::Instant::now(),
        }
    }

    /// The same with a different cache capacity (tests).
    #[cfg(test)]
    fn with_capacity(mut self, capacity: usize) -> TenantRouters {
        self.capacity = capacity;
        self
    }

    /// Milliseconds since the caches were made: a use stamp that changes at most once a
    /// millisecond, so the hot path rarely writes to a cache line the other workers read.
    fn tick(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self, c: &Cached) {
        let now = self.tick();
        if c.used.load(Ordering::Relaxed) != now {
            c.used.store(now, Ordering::Relaxed);
        }
    }

    /// Routers cached (tenants, pinned pairs).
    pub fn cached(&self) -> (usize, usize) {
        (
            self.routers.read().unwrap_or_else(|p| p.into_inner()).len(),
            self.pinned.read().unwrap_or_else(|p| p.into_inner()).len(),
        )
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
        if let Some(c) = self
            .routers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant)
        {
            self.touch(c);
            return Arc::clone(&c.router);
        }
        let mut routers = self.routers.write().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = routers.get(tenant) {
            return Arc::clone(&c.router);
        }
        make_room(&mut routers, self.capacity);
        let policies = self.policies.load_full();
        let view: Arc<dyn Registry> =
            Arc::new(TenantView::new(Arc::clone(&self.base), tenant, None));
        let router = Arc::new(
            Router::with_shared_policies(view, Arc::clone(&policies))
                .share_history(Arc::clone(&self.history)),
        );
        routers.insert(
            tenant.to_owned(),
            Cached {
                router: Arc::clone(&router),
                used: AtomicU64::new(self.tick()),
            },
        );
        router
    }

    /// The router of a tenant restricted to one service: a decision picks that service when it
    /// is visible and feasible, and is a no-route otherwise. Only for ids of registered services
    /// (the cache holds one router per tenant and service asked for).
    pub fn for_service(&self, tenant: &str, service_id: &str) -> Arc<Router> {
        let key = (tenant.to_owned(), service_id.to_owned());
        if let Some(c) = self
            .pinned
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            self.touch(c);
            return Arc::clone(&c.router);
        }
        // Lock order: routers, then pinned (as in set_policies).
        let _routers = self.routers.write().unwrap_or_else(|p| p.into_inner());
        let mut pinned = self.pinned.write().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = pinned.get(&key) {
            return Arc::clone(&c.router);
        }
        make_room(&mut pinned, self.capacity);
        let policies = self.policies.load_full();
        let view: Arc<dyn Registry> = Arc::new(TenantView::new(
            Arc::clone(&self.base),
            tenant,
            Some(service_id),
        ));
        let router = Arc::new(
            Router::with_shared_policies(view, policies).share_history(Arc::clone(&self.history)),
        );
        pinned.insert(
            key,
            Cached {
                router: Arc::clone(&router),
                used: AtomicU64::new(self.tick()),
            },
        );
        router
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
        for c in routers.values().chain(pinned.values()) {
            c.router.set_shared_policies(Arc::clone(&policies));
        }
        self.policies.store(policies);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routers(capacity: usize) -> TenantRouters {
        let registry: Arc<dyn Registry> = Arc::new(caio_registry::MemoryRegistry::new());
        let policies = caio_rules::compile(&caio_contracts::policy::PolicySet::default())
            .unwrap_or_else(|e| panic!("{e:?}"));
        TenantRouters::new(registry, policies, SharedHistory::default()).with_capacity(capacity)
    }

    #[test]
    fn router_caches_keep_the_recently_used_and_stay_bounded() {
        let r = routers(3);
        // Use stamps have millisecond resolution.
        let step = || std::thread::sleep(std::time::Duration::from_millis(3));
        let a = r.for_tenant("a");
        step();
        let b = r.for_tenant("b");
        step();
        r.for_tenant("c");
        step();
        // `a` is used again, so `b` is the least recently used when `d` arrives.
        assert!(Arc::ptr_eq(&a, &r.for_tenant("a")));
        step();
        r.for_tenant("d");
        assert_eq!(r.cached().0, 3);
        assert!(Arc::ptr_eq(&a, &r.for_tenant("a")));
        step();
        let b_again = r.for_tenant("b");
        assert!(
            !Arc::ptr_eq(&b, &b_again),
            "b should have been dropped and rebuilt"
        );
        assert_eq!(r.cached().0, 3);
        assert!(Arc::ptr_eq(&b_again, &r.for_tenant("b")));
        assert!(Arc::ptr_eq(&a, &r.for_tenant("a")));
        for n in 0..50 {
            r.for_tenant(&format!("t{n}"));
            r.for_service(&format!("t{n}"), "svc");
        }
        assert_eq!(r.cached(), (3, 3));
        // A full cache drops its least recently used tenth at once.
        let big = routers(20);
        for n in 0..20 {
            big.for_tenant(&format!("t{n}"));
            step();
        }
        let newest = big.for_tenant("t19");
        big.for_tenant("one-more");
        assert_eq!(big.cached().0, 19);
        assert!(Arc::ptr_eq(&newest, &big.for_tenant("t19")));
        // A policy change reaches the cached routers and the ones made afterwards.
        let pinned = r.for_service("x", "svc");
        let one: caio_contracts::policy::PolicySet = serde_json::from_value(serde_json::json!({
            "policies": [{"id": "cheap", "require": "service.cost.per_request <= 1.0"}]
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let compiled = caio_rules::compile(&one).unwrap_or_else(|e| panic!("{e:?}"));
        let version = compiled.version.clone();
        assert_ne!(pinned.policies().version, version);
        r.set_policies(compiled);
        assert_eq!(pinned.policies().version, version);
        assert_eq!(r.for_tenant("a").policies().version, version);
        assert_eq!(r.for_tenant("new").policies().version, version);
        assert_eq!(r.cached(), (3, 3));
    }
}
