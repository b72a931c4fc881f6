//! Focused pipeline behaviour: each security check, trait constraints, matching through the
//! capability index, and decision ids.

use caio_contracts::Principal;
use caio_contracts::decision::Step;

use crate::support;

fn route(
    req: &str,
    p: &Principal,
) -> Result<caio_contracts::decision::Decision, caio_gateway::RouteError> {
    support::router().route(&support::request_from_yaml(req), p)
}

fn rejection(
    r: &Result<caio_contracts::decision::Decision, caio_gateway::RouteError>,
    id: &str,
) -> Option<(Step, String)> {
    let list = match r {
        Ok(d) => d.rejected.to_vec(),
        Err(caio_gateway::RouteError::NoMatchingService(n)) => n.rejected.clone(),
        Err(e) => panic!("{e}"),
    };
    list.iter()
        .find(|x| x.service_id.as_ref() == id)
        .map(|x| (x.step, x.reason.to_string()))
}

#[test]
fn unauthenticated_principals_get_no_route() {
    let mut p = support::principal("platform-admin");
    p.id = "   ".into();
    let r = route("requirements: {capabilities: [embeddings]}\n", &p);
    assert!(r.is_err());
    assert_eq!(
        rejection(&r, "embed-small-local"),
        Some((Step::Security, "unauthenticated".into()))
    );
}

#[test]
fn permissions_must_intersect() {
    let mut p = support::principal("platform-admin");
    p.permissions = vec!["embed".into()];
    let r = route("requirements: {capabilities: [chat_completion]}\n", &p);
    assert_eq!(
        rejection(&r, "chat-llama-local"),
        Some((Step::Security, "unauthorized".into()))
    );
    p.permissions = vec!["unrelated".into(), "chat".into()];
    let d = route("requirements: {capabilities: [chat_completion]}\n", &p)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        d.ranking
            .iter()
            .any(|r| r.service_id.as_ref() == "chat-llama-local")
    );
}

#[test]
fn sensitive_data_goes_only_local_or_encrypted() {
    // With no policies at all, the security step alone keeps PII away from unencrypted externals.
    let registry = caio_registry::MemoryRegistry::with_contracts(support::contracts())
        .unwrap_or_else(|e| panic!("{e}"));
    let none = caio_rules::compile(&caio_contracts::PolicySet::default())
        .unwrap_or_else(|e| panic!("{e:?}"));
    let router = caio_gateway::Router::new(std::sync::Arc::new(registry), none);
    let p = support::principal("platform-admin");
    let req = support::request_from_yaml(
        "requirements: {capabilities: [sentiment_analysis], constraints: {language: en}}\npayload: {note: 'SSN 123-45-6789'}\n",
    );
    let d = router.route(&req, &p).unwrap_or_else(|e| panic!("{e}"));
    assert!(d.proof.security.sensitive && !d.proof.security.declared_sensitive);
    assert_eq!(d.proof.security.pii[0].kind, "us_ssn");
    let fast = d
        .rejected
        .iter()
        .find(|r| r.service_id.as_ref() == "sentiment-fast")
        .map(|r| (r.step, r.reason.as_ref()));
    assert_eq!(fast, Some((Step::Security, "privacy")));
    assert!(
        !serde_json::to_string(&d)
            .unwrap_or_default()
            .contains("123-45-6789"),
        "the record never holds the PII"
    );
}

#[test]
fn other_tenants_services_are_never_chosen() {
    let r = route(
        "requirements: {capabilities: [document_search]}\n",
        &support::principal("acme-analyst"),
    );
    assert_eq!(
        r.as_ref().map(|d| d.service_id.to_string()).ok().as_deref(),
        Some("search-acme")
    );
    assert_eq!(
        rejection(&r, "search-globex"),
        Some((Step::Security, "tenant_boundary".into()))
    );
}

#[test]
fn trust_below_minimum_is_rejected() {
    let mut p = support::principal("platform-admin");
    p.trust_level = 1;
    let r = route("requirements: {capabilities: [sentiment_analysis]}\n", &p);
    assert_eq!(
        rejection(&r, "sentiment-eu"),
        Some((Step::Security, "insufficient_trust".into()))
    );
}

#[test]
fn trait_flags_exclude_services_that_do_not_supply_them() {
    let p = support::principal("platform-admin");
    let r = route(
        "requirements: {capabilities: [chat_completion], traits: [deterministic, private]}\n",
        &p,
    );
    let d = r.as_ref().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(d.service_id.as_ref(), "chat-llama-local");
    for id in ["chat-openai", "claude-messages"] {
        assert_eq!(
            rejection(&r, id),
            Some((Step::Traits, "trait_unmet".into()))
        );
    }
    assert_eq!(d.proof.traits.demands.len(), 2);
    assert!(d.proof.traits.constraints.values().all(|g| *g <= 0.0));
}

#[test]
fn matching_visits_only_index_candidates() {
    let d = route(
        "requirements: {capabilities: [speech_to_text]}\n",
        &support::principal("platform-admin"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(d.proof.matching.registry_services, 15);
    assert_eq!(d.proof.matching.index_candidates, 1);
    assert_eq!(
        d.proof.optimize.feasible, 1,
        "only services with the capability are examined"
    );
    assert_eq!(
        d.ranking.len() + d.rejected.len(),
        15,
        "every service is accounted for"
    );
}

#[test]
fn decision_id_is_the_hash_of_the_core() {
    let p = support::principal("platform-admin");
    let mut d =
        route("requirements: {capabilities: [embeddings]}\n", &p).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        caio_trace::decision_id(&d).ok(),
        Some(d.decision_id.clone())
    );
    let id = d.decision_id.clone();
    d.recorded_at = Some("2026-11-22T05:00:00Z".into());
    assert_eq!(
        caio_trace::decision_id(&d).ok(),
        Some(id),
        "timestamps live outside the hashed core"
    );
    let other = route("requirements: {capabilities: [embeddings]}\nseed: 1\n", &p)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(
        other.decision_id, d.decision_id,
        "the seed is part of the request digest"
    );
}

#[test]
fn failing_policy_expressions_fail_closed() {
    use caio_contracts::policy::{PolicyRule, PolicySet};
    let set = PolicySet {
        policies: vec![
            // `when` reads a key that is absent: the rule applies.
            PolicyRule {
                id: "absent-when".into(),
                description: None,
                when: "request.context.missing == 1".into(),
                require: "true".into(),
            },
            // `require` divides by zero for every service: every service violates it.
            PolicyRule {
                id: "broken-require".into(),
                description: None,
                when: "true".into(),
                require:
                    "1 / (service.security.min_trust_level - service.security.min_trust_level) == 1"
                        .into(),
            },
        ],
    };
    let compiled = caio_rules::compile(&set).unwrap_or_else(|e| panic!("{e:?}"));
    let registry = caio_registry::MemoryRegistry::with_contracts(support::contracts())
        .unwrap_or_else(|e| panic!("{e}"));
    let router = caio_gateway::Router::new(std::sync::Arc::new(registry), compiled);
    let r = router.route(
        &support::request_from_yaml("requirements: {capabilities: [embeddings]}\n"),
        &support::principal("platform-admin"),
    );
    let Err(caio_gateway::RouteError::NoMatchingService(n)) = r else {
        panic!("expected no route")
    };
    let small = n
        .rejected
        .iter()
        .find(|r| r.service_id.as_ref() == "embed-small-local")
        .unwrap_or_else(|| panic!("rejected"));
    assert_eq!(small.reason, "policy_violation");
    // The first rule applied despite its unevaluable `when` and held; the second failed closed.
    assert!(
        small.detail.contains("`broken-require`") && small.detail.contains("counted as violated"),
        "{}",
        small.detail
    );
}
