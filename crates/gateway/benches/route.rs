//! Criterion benches of `route()` and `verify()` over synthetic registries.
//!
//! Workload (docs/benchmarks.md describes it in full): N services, each offering 1–3 capabilities
//! drawn from a vocabulary of max(5, N/20) capabilities (the `route_dense` group: 2), with varied guarantees, privacy, cost,
//! permissions and tenants; P policies cycling through four templates (a request-level `when` on a
//! context key the request does not carry, an always-applying `require` on cost, a
//! sensitive-data rule, a high-priority latency rule that applies). The request asks for one
//! capability with accuracy and latency bounds, at high priority, as a principal holding the
//! permissions.
//!
//! Run: `cargo bench -p caio-gateway --bench route` (or `just bench`).

#![allow(clippy::print_stderr, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;

use caio_contracts::model::{
    Adapter, ApiSpec, Bound, ConstraintValue, Cost, DataLocality, Endpoint, Privacy, Range,
    SecuritySpec, ServiceContract, ServiceSpec,
};
use caio_contracts::policy::{PolicyRule, PolicySet};
use caio_contracts::{Principal, RouteRequest};
use caio_gateway::Router;
use caio_registry::{MemoryRegistry, Registry};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

/// A small deterministic generator so every run builds the same registry.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn unit(&mut self) -> f64 {
        (self.next() % 1_000_000) as f64 / 1_000_000.0
    }
}

/// The typical shape: the capability vocabulary grows with the registry (a registry of 10,000
/// services offers hundreds of kinds of service, not ten), so a request's capability is offered by
/// a few percent of the services.
pub fn vocabulary(n: usize) -> usize {
    (n / 20).max(5)
}

/// The dense shape: two capabilities, so about half of the registry are candidates for every
/// request. A worst case for the per-candidate work.
pub const DENSE_VOCABULARY: usize = 2;

pub fn services(n: usize, vocab: usize) -> Vec<ServiceContract> {
    let mut rng = Lcg(n as u64 * 7919 + 1);
    (0..n)
        .map(|i| {
            let k = 1 + (rng.next() % 3) as usize;
            let mut caps: Vec<String> = (0..k)
                .map(|_| format!("cap-{}", rng.next() as usize % vocab))
                .collect();
            caps.sort();
            caps.dedup();
            if i % vocab == 0 {
                // Keep cap-0 well populated so the request always has candidates.
                if !caps.contains(&"cap-0".to_owned()) {
                    caps.push("cap-0".to_owned());
                }
            }
            let mut guarantees = BTreeMap::new();
            guarantees.insert(
                "accuracy".to_owned(),
                Bound::Range(Range {
                    min: Some(0.7 + 0.3 * rng.unit()),
                    max: None,
                }),
            );
            guarantees.insert(
                "latency_ms".to_owned(),
                Bound::Range(Range {
                    min: None,
                    max: Some(20.0 + 400.0 * rng.unit()),
                }),
            );
            guarantees.insert(
                "determinism".to_owned(),
                Bound::Flag(rng.next().is_multiple_of(2)),
            );
            let mut constraints = BTreeMap::new();
            constraints.insert(
                "languages".to_owned(),
                ConstraintValue::List(vec!["en".into(), "de".into()]),
            );
            constraints.insert(
                "max_input_tokens".to_owned(),
                ConstraintValue::Number(8192.0),
            );
            let locality = [
                DataLocality::Local,
                DataLocality::Region,
                DataLocality::External,
            ][rng.next() as usize % 3];
            ServiceContract {
                api_version: "caio/v1".into(),
                kind: "ServiceContract".into(),
                service: ServiceSpec {
                    id: format!("svc-{i:05}"),
                    name: format!("Service {i}"),
                    version: "1.0.0".into(),
                    tenant: if i % 10 == 7 {
                        "other".into()
                    } else {
                        "public".into()
                    },
                    capabilities: caps,
                    guarantees,
                    constraints,
                    cost: Cost {
                        per_request: 0.002 * rng.unit(),
                        per_1k_tokens: 0.0,
                        currency: "USD".into(),
                    },
                    privacy: Privacy {
                        data_locality: locality,
                        encryption: rng.next().is_multiple_of(2),
                        retention_days: 0,
                    },
                    security: SecuritySpec {
                        required_permissions: vec!["use".into()],
                        min_trust_level: (rng.next() % 3) as u8,
                    },
                    api: ApiSpec {
                        base_url: "http://127.0.0.1:9000".into(),
                        adapter: Adapter::HttpJson,
                        endpoints: [(
                            "execute".to_owned(),
                            Endpoint {
                                method: "POST".into(),
                                path: "/x".into(),
                            },
                        )]
                        .into(),
                        timeout_ms: 1000,
                        credential_env: None,
                        model: None,
                    },
                },
            }
        })
        .collect()
}

pub fn policies(p: usize) -> PolicySet {
    PolicySet {
        policies: (0..p)
            .map(|i| {
                let (when, require) = match i % 4 {
                    0 => (format!("has(request.context.k{i}) && request.context.k{i} == \"v\""), "service.privacy.encryption".to_owned()),
                    1 => ("true".to_owned(), format!("service.cost.per_request <= {}", 0.0015 + 0.0001 * (i % 5) as f64)),
                    2 => ("request.data.sensitive".to_owned(), "service.privacy.data_locality in [\"local\", \"on_device\"] || service.privacy.encryption".to_owned()),
                    _ => (
                        "has(request.context.priority) && request.context.priority == \"high\"".to_owned(),
                        format!("service.guarantees.latency_ms.max <= {}", 300 + i),
                    ),
                };
                PolicyRule { id: format!("policy-{i:03}"), description: None, when, require }
            })
            .collect(),
    }
}

pub fn request() -> RouteRequest {
    caio_contracts::parse_request(
        "bench",
        "requirements:\n  capabilities: [cap-0]\n  guarantees: { accuracy: { min: 0.75 }, latency_ms: { max: 400 } }\n  constraints: { language: en }\ncontext: { priority: high }\npayload: { text: \"How is the weather today?\" }\nseed: 7\n",
        caio_contracts::Format::Yaml,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

pub fn principal() -> Principal {
    Principal {
        id: "bench".into(),
        tenant: "public".into(),
        permissions: vec!["use".into()],
        trust_level: 2,
        roles: Vec::new(),
    }
}

fn router_with(n: usize, p: usize, vocab: usize) -> Router {
    let registry =
        MemoryRegistry::with_contracts(services(n, vocab)).unwrap_or_else(|e| panic!("{e}"));
    let compiled = caio_rules::compile(&policies(p)).unwrap_or_else(|e| panic!("{e:?}"));
    Router::new(Arc::new(registry), compiled)
}

fn bench_route(c: &mut Criterion) {
    let typical = [
        (10, 10),
        (100, 10),
        (100, 20),
        (100, 100),
        (1_000, 10),
        (1_000, 100),
        (10_000, 10),
        (10_000, 100),
    ];
    route_group(c, "route", &typical, None);
    route_group(
        c,
        "route_dense",
        &[(100, 20), (10_000, 100)],
        Some(DENSE_VOCABULARY),
    );
}

/// One criterion group routing the bench request over registries of each (services, policies)
/// size; `vocab` overrides the typical capability vocabulary.
fn route_group(c: &mut Criterion, name: &str, sizes: &[(usize, usize)], vocab: Option<usize>) {
    let mut group = c.benchmark_group(name);
    let req = request();
    let who = principal();
    for &(n, p) in sizes {
        let r = router_with(n, p, vocab.unwrap_or_else(|| vocabulary(n)));
        let d = r
            .route(&req, &who)
            .unwrap_or_else(|e| panic!("{n}/{p}: {e}"));
        eprintln!(
            "{name} n={n} p={p}: {} index candidates, {} feasible, {} rule outcomes",
            d.proof.matching.index_candidates,
            d.ranking.len(),
            d.proof.rules.outcomes.len()
        );
        group.bench_with_input(
            BenchmarkId::new(format!("services={n}"), format!("policies={p}")),
            &r,
            |b, r| b.iter(|| black_box(r.route(black_box(&req), black_box(&who)))),
        );
    }
    group.finish();
}

/// The repository's fixtures: 15 realistic contracts, 8 realistic policies, the quickstart request.
fn bench_fixtures(c: &mut Criterion) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
    let contracts = caio_gateway::loader::load_services_dir(&root.join("services"))
        .unwrap_or_else(|e| panic!("{e}"));
    let (_, compiled) = caio_gateway::loader::load_policies(&root.join("policies.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let req = caio_gateway::loader::load_request(&root.join("requests/sentiment-de.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let who = caio_gateway::loader::load_principal(&root.join("principals/acme-analyst.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let registry = MemoryRegistry::with_contracts(contracts).unwrap_or_else(|e| panic!("{e}"));
    let r = Router::new(Arc::new(registry), compiled);
    let mut group = c.benchmark_group("fixtures");
    group.bench_function("route/sentiment-de", |b| {
        b.iter(|| black_box(r.route(black_box(&req), black_box(&who))))
    });
    group.finish();
}

fn bench_verify(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify");
    let req = request();
    let who = principal();
    for &(n, p) in &[(100, 20), (1_000, 100)] {
        let contracts = services(n, vocabulary(n));
        let set = policies(p);
        let r = router_with(n, p, vocabulary(n));
        let d = r.route(&req, &who).unwrap_or_else(|e| panic!("{e}"));
        group.bench_function(
            BenchmarkId::new(format!("services={n}"), format!("policies={p}")),
            |b| b.iter(|| black_box(caio_gateway::verify(&d, contracts.clone(), &set)).is_ok()),
        );
    }
    group.finish();
}

fn bench_registry(c: &mut Criterion) {
    let mut group = c.benchmark_group("registry");
    for &n in &[100, 10_000] {
        let registry = MemoryRegistry::with_contracts(services(n, vocabulary(n)))
            .unwrap_or_else(|e| panic!("{e}"));
        let extra = services(n + 1, vocabulary(n))
            .pop()
            .unwrap_or_else(|| panic!("one more"));
        group.bench_function(BenchmarkId::new("upsert", format!("services={n}")), |b| {
            b.iter(|| registry.upsert(black_box(extra.clone())).is_ok())
        });
        group.bench_function(BenchmarkId::new("snapshot", format!("services={n}")), |b| {
            b.iter(|| black_box(registry.snapshot()))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(2));
    targets = bench_fixtures, bench_route, bench_verify, bench_registry
}
criterion_main!(benches);
