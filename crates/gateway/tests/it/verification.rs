//! `verify` accepts honest decisions and names the first disagreement in tampered ones.

use caio_contracts::decision::Decision;
use caio_gateway::{Disagreement, verify};

use crate::support;

fn decision(request: &str, principal: &str) -> Decision {
    let req = support::request_from_yaml(request);
    support::router()
        .route(&req, &support::principal(principal))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn sentiment() -> Decision {
    decision(
        "requirements: {capabilities: [sentiment_analysis], constraints: {language: en}}\npayload: {text: fine}\nseed: 3\n",
        "platform-admin",
    )
}

fn check(d: &Decision) -> Result<(), Disagreement> {
    verify(d, support::contracts(), &support::policy_set()).map(|_| ())
}

/// Re-seals a tampered decision, as a forger who knows the hashing scheme would.
fn forged(mut d: Decision, edit: impl FnOnce(&mut Decision)) -> Decision {
    edit(&mut d);
    d.request_digest = caio_contracts::canonical::digest(&d.request).unwrap_or_default();
    caio_trace::seal(&mut d).unwrap_or_else(|e| panic!("{e}"));
    d
}

#[test]
fn honest_decisions_verify() {
    let d = sentiment();
    assert!(d.ranking.len() >= 2, "the fixture has competition");
    check(&d).unwrap_or_else(|e| panic!("{e}"));
    // A redacted, PII-carrying decision verifies from its recorded evidence.
    let pii = decision(
        "requirements: {capabilities: [chat_completion]}\npayload: {text: 'mail jane.doe@example.com'}\n",
        "platform-admin",
    );
    assert!(pii.request.payload.get("$redacted").is_some());
    check(&pii).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn unsealed_edits_fail_integrity() {
    let mut d = sentiment();
    d.score += 0.1;
    assert_eq!(check(&d).map_err(|e| e.step), Err("integrity"));
    let mut d = sentiment();
    d.request.seed += 1;
    assert_eq!(check(&d).map_err(|e| e.step), Err("integrity"));
    let mut d = sentiment();
    d.proof.security.pii.clear();
    d.principal.trust_level += 1;
    assert_eq!(check(&d).map_err(|e| e.step), Err("integrity"));
}

#[test]
fn resealed_forgeries_are_caught_by_recomputation() {
    // Swap the winner and the runner-up.
    let f = forged(sentiment(), |d| {
        d.ranking.swap(0, 1);
        d.service_id = d.ranking[0].service_id.clone();
        d.score = d.ranking[0].score;
    });
    let e = check(&f)
        .err()
        .unwrap_or_else(|| panic!("forgery verified"));
    assert_eq!(e.step, "optimize", "{e}");

    // Claim a rejected service failed a different check (the rejections are not hashed: verify
    // recomputes them).
    let mut f = sentiment();
    let mut list = f.rejected.to_vec();
    if let Some(r) = list.iter_mut().find(|r| r.reason == "missing_capability") {
        r.reason = "policy_violation".into();
    }
    f.rejected = caio_contracts::decision::Rejections::new(std::sync::Arc::default(), list);
    let e = check(&f)
        .err()
        .unwrap_or_else(|| panic!("forgery verified"));
    assert_eq!(e.step, "decision", "{e}");

    // Flip a recorded policy result.
    let f = forged(sentiment(), |d| {
        if let Some(o) = d.proof.rules.outcomes.first_mut() {
            o.applied = !o.applied;
        }
    });
    assert_eq!(check(&f).map_err(|e| e.step), Err("rules"));

    // Add a check the matcher never made.
    let f = forged(sentiment(), |d| {
        d.proof
            .matching
            .checks
            .push(caio_contracts::decision::Check {
                name: "guarantee:accuracy".into(),
                offered: serde_json::json!(1),
                ok: true,
                required: serde_json::json!(1),
            });
    });
    assert_eq!(check(&f).map_err(|e| e.step), Err("match"));

    // Claim the chosen service was not even authorized.
    let f = forged(sentiment(), |d| d.proof.security.authorized = false);
    assert_eq!(check(&f).map_err(|e| e.step), Err("security"));

    // Change the principal so the security evidence no longer fits.
    let f = forged(sentiment(), |d| d.principal.trust_level = 0);
    assert!(check(&f).is_err());
}

#[test]
fn other_contracts_or_policies_are_named() {
    let d = sentiment();
    let mut contracts = support::contracts();
    if let Some(c) = contracts
        .iter_mut()
        .find(|c| c.service.id == "sentiment-eu")
    {
        c.service.cost.per_request *= 2.0;
    }
    let e = verify(&d, contracts, &support::policy_set())
        .err()
        .unwrap_or_else(|| panic!("verified"));
    assert_eq!(e.step, "registry");
    let mut policies = support::policy_set();
    policies.policies.pop();
    let e = verify(&d, support::contracts(), &policies)
        .err()
        .unwrap_or_else(|| panic!("verified"));
    assert_eq!(e.step, "policies");
}

#[test]
fn decisions_survive_a_json_round_trip() {
    let d = sentiment();
    let text = serde_json::to_string(&d).unwrap_or_default();
    let back: Decision = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back, d);
    check(&back).unwrap_or_else(|e| panic!("{e}"));
}
