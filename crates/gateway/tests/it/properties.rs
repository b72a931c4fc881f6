//! Properties the pipeline promises, over generated registries, requests and principals:
//! determinism, permutation invariance, correctness of the choice, finite scores and a bounded
//! control signal.

use std::collections::BTreeMap;
use std::sync::Arc;

use caio_calculus::matching::{admit, bound_satisfied};
use caio_contracts::model::{
    Adapter, ApiSpec, Bound, ConstraintValue, Cost, DataLocality, Endpoint, Privacy, Range,
    SecuritySpec, ServiceContract, ServiceSpec,
};
use caio_contracts::request::{DataSpec, Fields, Requirements, Scalar};
use caio_contracts::{Principal, RouteRequest};
use caio_gateway::{RouteError, Router};
use caio_registry::MemoryRegistry;
use proptest::prelude::*;

use crate::support;

const CAPS: [&str; 4] = ["alpha", "beta", "gamma", "delta"];
const LANGS: [&str; 3] = ["en", "de", "fr"];
const PERMS: [&str; 3] = ["p1", "p2", "p3"];

/// Accuracy (min) and latency (max) bounds, each when given.
fn bounds(accuracy: Option<f64>, latency_ms: Option<f64>) -> BTreeMap<String, Bound> {
    let mut g = BTreeMap::new();
    if let Some(a) = accuracy {
        g.insert(
            "accuracy".to_owned(),
            Bound::Range(Range {
                min: Some(a),
                max: None,
            }),
        );
    }
    if let Some(l) = latency_ms {
        g.insert(
            "latency_ms".to_owned(),
            Bound::Range(Range {
                min: None,
                max: Some(l),
            }),
        );
    }
    g
}

fn service(i: usize) -> impl Strategy<Value = ServiceContract> {
    (
        prop::sample::subsequence(CAPS.to_vec(), 1..=3),
        prop::option::of(0.5f64..1.0),
        prop::option::of(10.0f64..2000.0),
        any::<bool>(),
        prop::sample::subsequence(LANGS.to_vec(), 1..=3),
        (0.0f64..0.01, 0.0f64..0.01),
        prop::sample::select(vec![
            DataLocality::Local,
            DataLocality::OnDevice,
            DataLocality::Region,
            DataLocality::External,
        ]),
        any::<bool>(),
        prop::sample::subsequence(PERMS.to_vec(), 0..=2),
        0u8..4,
        prop::sample::select(vec!["public", "public", "acme"]),
    )
        .prop_map(
            move |(
                caps,
                acc,
                lat,
                det,
                langs,
                (per_req, per_1k),
                loc,
                enc,
                perms,
                trust,
                tenant,
            )| {
                let mut guarantees = bounds(acc, lat);
                guarantees.insert("determinism".to_owned(), Bound::Flag(det));
                let mut constraints = BTreeMap::new();
                constraints.insert(
                    "languages".to_owned(),
                    ConstraintValue::List(langs.iter().map(|s| s.to_string()).collect()),
                );
                constraints.insert(
                    "max_input_tokens".to_owned(),
                    ConstraintValue::Number(4096.0),
                );
                ServiceContract {
                    api_version: "caio/v1".into(),
                    kind: "ServiceContract".into(),
                    service: ServiceSpec {
                        id: format!("svc-{i:03}"),
                        name: format!("Service {i}"),
                        version: "1.0.0".into(),
                        tenant: tenant.into(),
                        capabilities: caps.iter().map(|s| s.to_string()).collect(),
                        guarantees,
                        constraints,
                        cost: Cost {
                            per_request: per_req,
                            per_1k_tokens: per_1k,
                            currency: "USD".into(),
                        },
                        privacy: Privacy {
                            data_locality: loc,
                            encryption: enc,
                            retention_days: 0,
                        },
                        security: SecuritySpec {
                            required_permissions: perms.iter().map(|s| s.to_string()).collect(),
                            min_trust_level: trust,
                        },
                        api: ApiSpec {
                            base_url: "http://127.0.0.1:1".into(),
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
            },
        )
}

fn registry() -> impl Strategy<Value = Vec<ServiceContract>> {
    (1usize..24).prop_flat_map(|n| (0..n).map(service).collect::<Vec<_>>())
}

fn vector(n: usize) -> impl Strategy<Value = Vec<[f64; 2]>> {
    prop::collection::vec(prop::array::uniform2(-1e3f64..1e3), n..=n)
}

fn request() -> impl Strategy<Value = RouteRequest> {
    (
        prop::sample::subsequence(CAPS.to_vec(), 1..=2),
        prop::option::of(0.5f64..1.0),
        prop::option::of(10.0f64..2000.0),
        prop::option::of(prop::sample::select(LANGS.to_vec())),
        any::<bool>(),
        any::<u64>(),
        prop::option::of((4usize..16).prop_flat_map(|n| (vector(n), vector(n), vector(n)))),
        prop::option::of(prop::sample::select(vec!["high", "low"])),
    )
        .prop_map(
            |(caps, acc, lat, lang, sensitive, seed, fields, priority)| {
                let guarantees = bounds(acc, lat);
                let mut constraints = BTreeMap::new();
                if let Some(l) = lang {
                    constraints.insert("language".to_owned(), Scalar::Text(l.to_owned()));
                }
                let mut context = serde_json::Map::new();
                if let Some(p) = priority {
                    context.insert("priority".to_owned(), serde_json::json!(p));
                }
                RouteRequest {
                    requirements: Requirements {
                        capabilities: caps.iter().map(|s| s.to_string()).collect(),
                        guarantees,
                        constraints,
                        traits: Vec::new(),
                    },
                    budget: Default::default(),
                    context,
                    data: DataSpec { sensitive },
                    payload: serde_json::json!({"text": "hello"}),
                    fields: fields.map(|(intent, trait_field, rfs)| Fields {
                        intent,
                        trait_field,
                        rfs,
                        context: Vec::new(),
                    }),
                    seed,
                }
            },
        )
}

fn principal() -> impl Strategy<Value = Principal> {
    (
        prop::sample::subsequence(PERMS.to_vec(), 0..=3),
        0u8..5,
        prop::sample::select(vec!["public", "acme", "globex"]),
    )
        .prop_map(|(perms, trust, tenant)| Principal {
            id: "prop".into(),
            tenant: tenant.into(),
            permissions: perms.iter().map(|s| s.to_string()).collect(),
            trust_level: trust,
            roles: Vec::new(),
        })
}

fn router(contracts: Vec<ServiceContract>) -> Router {
    let registry = MemoryRegistry::with_contracts(contracts).unwrap_or_else(|e| panic!("{e}"));
    Router::new(Arc::new(registry), support::compiled())
}

fn outcome_json(r: &Result<caio_contracts::decision::Decision, RouteError>) -> serde_json::Value {
    match r {
        Ok(d) => serde_json::to_value(d).unwrap_or_default(),
        Err(e) => e.to_body(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// The same inputs give the same decision, byte for byte.
    #[test]
    fn decisions_are_deterministic(contracts in registry(), req in request(), p in principal()) {
        let a = router(contracts.clone()).route(&req, &p);
        let b = router(contracts).route(&req, &p);
        prop_assert_eq!(outcome_json(&a), outcome_json(&b));
    }

    /// Registry order never changes the decision.
    #[test]
    fn registry_order_never_changes_the_decision(contracts in registry(), req in request(), p in principal(), rotate in 0usize..24) {
        let mut permuted = contracts.clone();
        permuted.reverse();
        let k = rotate % permuted.len().max(1);
        permuted.rotate_left(k);
        let a = router(contracts).route(&req, &p);
        let b = router(permuted).route(&req, &p);
        prop_assert_eq!(outcome_json(&a), outcome_json(&b));
    }

    /// The chosen service satisfies every requirement, every applicable policy and every security
    /// check; every score is finite; the control signal is bounded; the decision verifies.
    #[test]
    fn the_choice_is_correct_and_bounded(contracts in registry(), req in request(), p in principal()) {
        let policies = support::policy_set();
        match router(contracts.clone()).route(&req, &p) {
            Err(RouteError::NoMatchingService(n)) => {
                prop_assert_eq!(n.rejected.len(), contracts.len(), "every service is accounted for");
            }
            Err(e) => return Err(TestCaseError::fail(e.to_string())),
            Ok(d) => {
                let chosen = contracts.iter().find(|c| c.service.id == d.service_id.as_ref()).ok_or_else(|| TestCaseError::fail("unknown service"))?;
                let s = &chosen.service;
                for cap in &req.requirements.capabilities {
                    prop_assert!(s.capabilities.contains(cap));
                }
                for (k, b) in &req.requirements.guarantees {
                    prop_assert!(bound_satisfied(b, s.guarantees.get(k)), "guarantee {}", k);
                }
                for (k, v) in &req.requirements.constraints {
                    prop_assert!(admit(s, k, v).ok, "constraint {}", k);
                }
                prop_assert_eq!(d.proof.rules.outcomes.len(), policies.policies.len());
                for o in &d.proof.rules.outcomes {
                    prop_assert!(!o.applied || o.result == Some(true), "policy {}", o.policy_id);
                }
                let sec = &d.proof.security;
                prop_assert!(sec.authenticated && sec.authorized && sec.privacy && sec.trust && sec.access);
                prop_assert!(d.proof.matching.checks.iter().all(|c| c.ok));
                prop_assert!(d.proof.traits.constraints.values().all(|g| *g <= 0.0));
                prop_assert_eq!(d.ranking.len() + d.rejected.len(), contracts.len());
                for r in &d.ranking {
                    let t = &r.terms;
                    for v in [r.score, t.intent, t.attention, t.rl, t.resonance, t.quality, t.reliability, t.cost, t.risk, t.latency, t.kappa] {
                        prop_assert!(v.is_finite());
                    }
                    for v in [t.intent, t.attention, t.rl, t.resonance, t.quality, t.reliability, t.cost, t.risk, t.latency, t.kappa] {
                        prop_assert!((0.0..=1.0).contains(&v));
                    }
                }
                prop_assert!(d.ranking.windows(2).all(|w| w[0].score >= w[1].score));
                // The direct core writer and the reference canonical serializer agree byte for byte.
                prop_assert_eq!(d.core().canonical_bytes(), serde_json_canonicalizer::to_vec(&d.core()).ok());
                // The server's JSON of the decision (core members quoted from those bytes) reads
                // back as the decision.
                let mut sealed = caio_gateway::SealedDecision::seal(d.clone()).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(sealed.decision(), &d);
                sealed.set_recorded_at(Some("2026-12-01T15:00:00Z".into()));
                if let Err(e) = crate::encoding::check_spliced(&sealed) {
                    return Err(TestCaseError::fail(e));
                }
                prop_assert!(d.control_signal.u.iter().all(|u| u.is_finite() && u.abs() <= d.control_signal.u_max));
                if let Err(e) = caio_gateway::verify(&d, contracts, &policies) {
                    return Err(TestCaseError::fail(format!("does not verify: {e}")));
                }
            }
        }
    }
}

/// Equal scores are broken by the seed, not by registry order or ids alone: two identical
/// contracts under different ids swap places for some seed.
#[test]
fn ties_break_by_seed() {
    let base = support::contracts()
        .into_iter()
        .find(|c| c.service.id == "sentiment-fast")
        .unwrap_or_else(|| panic!("fixture"));
    let mut twin = base.clone();
    twin.service.id = "sentiment-fast-twin".into();
    let router = router(vec![base, twin]);
    let p = Principal::cli_default();
    let mut winners = std::collections::BTreeSet::new();
    for seed in 0..16 {
        let req = support::request_from_yaml(&format!(
            "requirements: {{capabilities: [sentiment_analysis]}}\nseed: {seed}\n"
        ));
        let d = router.route(&req, &p).unwrap_or_else(|e| panic!("{e}"));
        assert!(d.proof.optimize.tie_broken);
        assert_eq!(d.ranking[0].score, d.ranking[1].score);
        assert!(d.ranking[0].tiebreak.is_some() && d.ranking[0].tiebreak < d.ranking[1].tiebreak);
        winners.insert(d.service_id.to_string());
    }
    assert_eq!(winners.len(), 2, "both twins win for some seed");
}
