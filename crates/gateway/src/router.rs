//! A registry and a policy set kept together with the per-snapshot state routing reuses.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use caio_calculus::History;
use caio_contracts::decision::Decision;
use caio_contracts::request::{Principal, RouteRequest};
use caio_registry::{Registry, Snapshot};
use caio_rules::CompiledPolicies;
use caio_trace::SealedDecision;

use crate::error::RouteError;
use crate::pipeline::{RouteContext, route_sealed};
use crate::prepared::PreparedServices;

/// Routes requests against a live registry and a replaceable policy set.
///
/// Routing is lock-free: it loads the registry snapshot, the policies, the history and the prepared
/// service scopes through atomic pointers. When the registry has moved on since the scopes were
/// prepared, the first request to notice prepares the new snapshot (reusing unchanged contracts'
/// scopes) and publishes it.
pub struct Router {
    registry: Arc<dyn Registry>,
    policies: ArcSwap<CompiledPolicies>,
    /// Shared with the gateway's health board (and other routers) when execution is on.
    history: Arc<ArcSwap<History>>,
    prepared: ArcSwap<PreparedServices>,
    prepare_lock: Mutex<()>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("registry_version", &self.registry.snapshot().version())
            .field("policy_version", &self.policies.load().version)
            .finish_non_exhaustive()
    }
}

impl Router {
    /// A router over `registry` applying `policies`.
    pub fn new(registry: Arc<dyn Registry>, policies: CompiledPolicies) -> Router {
        Router::with_shared_policies(registry, Arc::new(policies))
    }

    /// A router applying a policy set other routers share (one compiled set, one memo, for
    /// several registry views).
    pub fn with_shared_policies(
        registry: Arc<dyn Registry>,
        policies: Arc<CompiledPolicies>,
    ) -> Router {
        let prepared = PreparedServices::build(&registry.snapshot(), &policies, None);
        Router {
            registry,
            policies: ArcSwap::new(policies),
            history: Arc::new(ArcSwap::from_pointee(History::new())),
            prepared: ArcSwap::from_pointee(prepared),
            prepare_lock: Mutex::new(()),
        }
    }

    /// The registry.
    pub fn registry(&self) -> &Arc<dyn Registry> {
        &self.registry
    }

    /// The current policy set.
    pub fn policies(&self) -> Arc<CompiledPolicies> {
        self.policies.load_full()
    }

    /// Replaces the policy set; requests already routing keep the one they loaded.
    pub fn set_policies(&self, policies: CompiledPolicies) {
        self.policies.store(Arc::new(policies));
    }

    /// Replaces the policy set with one other routers share.
    pub fn set_shared_policies(&self, policies: Arc<CompiledPolicies>) {
        self.policies.store(policies);
    }

    /// Replaces the observed history.
    pub fn set_history(&self, history: History) {
        self.history.store(Arc::new(history));
    }

    /// Reads the observed history from `source` from now on: the gateway's health board
    /// publishes there, and every router given the same source routes on the same history.
    pub fn share_history(mut self, source: crate::exec::health::SharedHistory) -> Router {
        self.history = source;
        self
    }

    /// The history routing reads now.
    pub fn history(&self) -> Arc<History> {
        self.history.load_full()
    }

    fn prepared_for(
        &self,
        snapshot: &Snapshot,
        policies: &CompiledPolicies,
    ) -> Arc<PreparedServices> {
        let fits = |p: &PreparedServices| {
            p.version() == snapshot.version() && p.policy_version() == policies.version
        };
        let current = self.prepared.load_full();
        if fits(&current) {
            return current;
        }
        let _guard = self.prepare_lock.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.prepared.load_full();
        if fits(&current) {
            return current;
        }
        let next = Arc::new(PreparedServices::build(snapshot, policies, Some(&current)));
        // Publish only if the registry and the policies are still these; an older request must
        // not replace the state of a newer one.
        if self.registry.snapshot().version() == snapshot.version()
            && self.policies.load().version == policies.version
        {
            self.prepared.store(Arc::clone(&next));
        }
        next
    }

    /// Routes one request for one principal.
    pub fn route(
        &self,
        request: &RouteRequest,
        principal: &Principal,
    ) -> Result<Decision, RouteError> {
        self.route_sealed(request, principal)
            .map(SealedDecision::into_decision)
    }

    /// [`route`](Self::route), keeping the canonical JSON of the decision's hashed core for
    /// encoding it ([`caio_trace::TraceBody::decision`]): what the server uses.
    pub fn route_sealed(
        &self,
        request: &RouteRequest,
        principal: &Principal,
    ) -> Result<SealedDecision, RouteError> {
        let snapshot = self.registry.snapshot();
        let policies = self.policies.load();
        let prepared = self.prepared_for(&snapshot, &policies);
        let history = self.history.load();
        let ctx = RouteContext {
            snapshot: &snapshot,
            services: &prepared,
            policies: &policies,
            history: &history,
        };
        route_sealed(&ctx, request, principal)
    }
}
