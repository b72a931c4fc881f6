//! Steps 1–9 of the routing pipeline as one pure function.

use std::collections::BTreeMap;
use std::sync::Arc;

use caio_calculus::fields::{self, BANDS, FieldContext};
use caio_calculus::matching;
use caio_calculus::objective::{self, COEFFICIENTS, History, U_MAX};
use caio_calculus::traits;
use caio_contracts::canonical;
use caio_contracts::decision::{
    ControlSignal, Decision, HistoryEvidence, MatchEvidence, MatchProof, OptimizeProof, PiiFinding,
    Proof, RankedCandidate, Rejection, RuleOutcome, SecurityProof, Step, TraitEvidence,
};
use caio_contracts::request::{Principal, RouteRequest};
use caio_registry::Snapshot;
use caio_rules::{CompiledPolicies, RequestScope};
use serde_json::json;

use crate::error::{NoRoute, RouteError};
use crate::prepared::PreparedServices;

/// Everything `route` reads besides the request and the principal.
#[derive(Debug, Clone, Copy)]
pub struct RouteContext<'a> {
    /// The registry snapshot.
    pub snapshot: &'a Snapshot,
    /// The snapshot's prepared CEL scopes (must be built from `snapshot`).
    pub services: &'a PreparedServices,
    /// The compiled policy set.
    pub policies: &'a CompiledPolicies,
    /// Observed history per service (empty offline).
    pub history: &'a History,
}

/// Evidence taken from a recorded decision instead of recomputed, when its payload was redacted.
#[derive(Debug, Clone)]
pub(crate) struct Replay {
    pub pii: Vec<PiiFinding>,
    pub input_tokens: u64,
    pub input_tokens_source: String,
}

/// Key of the marker that replaces a sensitive payload in a recorded request.
pub const REDACTED_KEY: &str = "$redacted";

pub(crate) fn is_redacted(payload: &serde_json::Value) -> bool {
    payload
        .as_object()
        .is_some_and(|o| o.len() == 1 && o.get(REDACTED_KEY).is_some_and(|v| v.is_string()))
}

fn internal(e: impl std::fmt::Display) -> RouteError {
    RouteError::Internal(e.to_string())
}

/// Routes a request: match, rules, security, traits, optimize, control signal, compose, proof,
/// trace hash. Deterministic: the same inputs give the same decision, byte for byte.
pub fn route(
    ctx: &RouteContext<'_>,
    request: &RouteRequest,
    principal: &Principal,
) -> Result<Decision, RouteError> {
    route_inner(ctx, request, principal, None)
}

struct Feasible {
    index: usize,
    id: Arc<str>,
    cost: f64,
}

#[allow(clippy::too_many_lines)]
pub(crate) fn route_inner(
    ctx: &RouteContext<'_>,
    request: &RouteRequest,
    principal: &Principal,
    replay: Option<&Replay>,
) -> Result<Decision, RouteError> {
    let snapshot = ctx.snapshot;
    if ctx.services.version() != snapshot.version() {
        return Err(internal("prepared services do not belong to this snapshot"));
    }

    // Normalize: PII, sensitivity, redaction, the digest and the CEL view of the request.
    let redacted_in = is_redacted(&request.payload);
    let (pii, input_tokens, tokens_source) = match replay {
        Some(r) => (r.pii.clone(), r.input_tokens, r.input_tokens_source.clone()),
        None => {
            let pii = if redacted_in {
                Vec::new()
            } else {
                caio_security::scan(&request.payload)
            };
            let bytes = serde_json::to_vec(&request.payload)
                .map_err(internal)?
                .len();
            let (t, src) = matching::input_tokens(request, bytes);
            (pii, t, src.to_owned())
        }
    };
    let sensitive = request.data.sensitive || !pii.is_empty();
    let mut recorded = request.clone();
    if sensitive && !redacted_in {
        let digest = canonical::digest(&request.payload).map_err(internal)?;
        recorded.payload = json!({ REDACTED_KEY: digest });
    }
    let request_digest = canonical::digest(&recorded).map_err(internal)?;
    let mut view = serde_json::to_value(&recorded).map_err(internal)?;
    if let Some(obj) = view.as_object_mut() {
        obj.remove("fields");
        obj.insert("data".to_owned(), json!({ "sensitive": sensitive }));
    }
    let principal_view = json!({
        "id": principal.id,
        "tenant": principal.tenant,
        "permissions": principal.permissions,
        "trust_level": principal.trust_level,
        "roles": principal.roles,
    });
    let scope = RequestScope::new(view, principal_view);
    let authenticated = caio_security::authenticate(principal);

    // Request-level decisions of every rule whose `when` does not read the service.
    let policies = ctx.policies;
    let whens: Vec<Option<(bool, Option<String>)>> = policies
        .rules
        .iter()
        .map(|r| policies.when_for_request(r, &scope))
        .collect();
    let mut rule_outcomes: Vec<RuleOutcome> = policies
        .rules
        .iter()
        .zip(&whens)
        .filter(|(_, w)| matches!(w, Some((false, _))))
        .map(|(r, _)| policies.not_applied(r, &scope))
        .collect();

    // Traits: demands from flags and the trait field.
    let context_pairs: Vec<String> = request
        .context
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mut field_ctx = FieldContext::prepare(request.fields.as_ref(), &context_pairs);
    let demands = traits::demands(
        &request.requirements.traits,
        field_ctx.as_ref().map(|f| &f.trait_modes),
    );
    let any_demand = demands.iter().any(|d| *d > 0.0);

    let required_caps = &request.requirements.capabilities;
    let candidates = snapshot.candidates(required_caps);
    let entries = snapshot.entries();
    let mut rejected: Vec<Rejection> = Vec::with_capacity(entries.len().saturating_sub(1));
    let mut match_evidence = Vec::with_capacity(candidates.len());
    let mut security = SecurityProof {
        authenticated: authenticated.is_ok(),
        sensitive,
        declared_sensitive: request.data.sensitive,
        pii,
        services: Vec::new(),
    };
    let mut trait_evidence = Vec::new();
    let mut feasible: Vec<Feasible> = Vec::with_capacity(candidates.len());
    let mut next_candidate = candidates.iter().peekable();

    for (i, entry) in entries.iter().enumerate() {
        let spec = &entry.contract.service;
        let reject = |step: Step, reason: &str, detail: String| Rejection {
            service_id: Arc::clone(&entry.id),
            step,
            reason: reason.to_owned(),
            detail,
        };
        if next_candidate.peek() != Some(&&i) {
            let missing = required_caps
                .iter()
                .find(|c| !spec.capabilities.contains(c))
                .map_or("", String::as_str);
            rejected.push(reject(
                Step::Match,
                "missing_capability",
                format!("does not offer capability `{missing}`"),
            ));
            continue;
        }
        next_candidate.next();

        // Step 1: guarantees, constraints, budget.
        let (checks, cost) = matching::match_service(spec, request, input_tokens);
        let failed = checks.iter().find(|c| !c.ok).map(|c| {
            let reason = if c.name.starts_with("guarantee:") {
                "guarantee_unmet"
            } else if c.name.starts_with("constraint:") {
                "constraint_unadmitted"
            } else {
                "over_budget"
            };
            (
                reason,
                format!("{}: required {}, offered {}", c.name, c.required, c.offered),
            )
        });
        match_evidence.push(MatchEvidence {
            service_id: Arc::clone(&entry.id),
            checks,
        });
        if let Some((reason, detail)) = failed {
            rejected.push(reject(Step::Match, reason, detail));
            continue;
        }

        // Step 2: policies.
        let Some(service_scope) = ctx.services.scope(i) else {
            return Err(internal("prepared services are shorter than the snapshot"));
        };
        let mut violation = None;
        for (rule, when) in policies.rules.iter().zip(&whens) {
            if matches!(when, Some((false, _))) {
                continue;
            }
            let outcome = policies.evaluate(rule, &scope, service_scope, when.clone());
            if outcome.applied && outcome.result != Some(true) {
                let why = outcome.error.clone().unwrap_or_else(|| {
                    let read: Vec<String> = outcome
                        .operands
                        .iter()
                        .filter(|(k, _)| k.starts_with("service.") || k.starts_with("principal."))
                        .map(|(k, v)| format!("{k} = {v}"))
                        .collect();
                    if read.is_empty() {
                        "`require` is false".to_owned()
                    } else {
                        format!("`require` is false with {}", read.join(", "))
                    }
                });
                let desc = rule
                    .description
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default();
                violation = Some(format!("policy `{}`{desc} violated: {why}", rule.id));
            }
            rule_outcomes.push(outcome);
            if violation.is_some() {
                break;
            }
        }
        if let Some(detail) = violation {
            rejected.push(reject(Step::Rules, "policy_violation", detail));
            continue;
        }

        // Step 3: security.
        let (evidence, denial) =
            caio_security::check_service(&entry.id, principal, spec, sensitive);
        security.services.push(evidence);
        let denial = match &authenticated {
            Err(d) => Some(d.clone()),
            Ok(()) => denial,
        };
        if let Some(d) = denial {
            rejected.push(reject(Step::Security, d.reason, d.detail));
            continue;
        }

        // Step 4: trait constraints.
        if any_demand {
            let history = ctx.history.get(entry.id.as_ref());
            let lat = objective::latency_ms(spec, history);
            let constraints = traits::constraints(&demands, spec, lat);
            let unmet: Vec<String> = constraints
                .iter()
                .filter(|(_, g)| **g > 0.0)
                .map(|(t, g)| format!("{t} (G = {g:.4} > 0)"))
                .collect();
            trait_evidence.push(TraitEvidence {
                service_id: Arc::clone(&entry.id),
                constraints,
            });
            if !unmet.is_empty() {
                rejected.push(reject(
                    Step::Traits,
                    "trait_unmet",
                    format!("trait constraints unmet: {}", unmet.join(", ")),
                ));
                continue;
            }
        }

        feasible.push(Feasible {
            index: i,
            id: Arc::clone(&entry.id),
            cost,
        });
    }

    let mut proof = Proof {
        matching: MatchProof {
            registry_services: entries.len(),
            index_candidates: candidates.len(),
            input_tokens,
            input_tokens_source: tokens_source,
            candidates: match_evidence,
        },
        rules: rule_outcomes,
        security,
        traits: trait_evidence,
        optimize: OptimizeProof {
            coefficients: COEFFICIENTS.as_map(),
            fields_used: field_ctx.is_some(),
            tie_broken: false,
            history: BTreeMap::new(),
        },
    };

    if feasible.is_empty() {
        return Err(RouteError::NoMatchingService(Box::new(NoRoute {
            rejected,
            proof,
            registry_version: snapshot.version().to_owned(),
            policy_version: policies.version.clone(),
            request_digest,
        })));
    }

    // Step 5: optimize.
    let resonance = field_ctx.as_ref().map_or(0.0, |f| f.resonance);
    let mut scored: Vec<(f64, [u8; 32], RankedCandidate, [f64; BANDS])> =
        Vec::with_capacity(feasible.len());
    for f in &feasible {
        let spec = &entries[f.index].contract.service;
        let history = ctx.history.get(f.id.as_ref());
        if let Some(h) = history {
            proof.optimize.history.insert(
                f.id.to_string(),
                HistoryEvidence {
                    success_rate: h.success_rate,
                    ewma_latency_ms: h.ewma_latency_ms,
                    samples: h.samples,
                },
            );
        }
        let field_terms = field_ctx.as_mut().map(|fc| fc.terms(&spec.capabilities));
        let terms = objective::terms(spec, f.cost, history, field_terms.as_ref(), resonance);
        let score = COEFFICIENTS.score(&terms);
        let key = objective::tiebreak(request.seed, &f.id);
        scored.push((
            score,
            key,
            RankedCandidate {
                service_id: Arc::clone(&f.id),
                score,
                terms,
                tiebreak: hex_of(&key),
            },
            field_terms.map_or([0.0; BANDS], |t| t.service_modes),
        ));
    }
    scored.sort_by(|a, b| {
        objective::rank_order((a.0, &a.1, &a.2.service_id), (b.0, &b.1, &b.2.service_id))
    });
    proof.optimize.tie_broken = scored.len() > 1 && scored[0].0 == scored[1].0;

    // Step 6: control signal.
    let winner = &scored[0];
    let margin = if scored.len() > 1 {
        winner.0 - scored[1].0
    } else {
        winner.0
    };
    let u = match &field_ctx {
        Some(fc) => {
            fields::control_signal(winner.2.terms.kappa, &fc.intent_modes, &winner.3, U_MAX)
        }
        None => vec![0.0; BANDS],
    };

    // Step 7: compose guarantees.
    let winner_feasible = feasible
        .iter()
        .find(|f| f.id == winner.2.service_id)
        .ok_or_else(|| internal("winner missing from the feasible set"))?;
    let guarantees = caio_calculus::compose_one(
        Arc::clone(&winner_feasible.id),
        &entries[winner_feasible.index].contract.service,
        winner_feasible.cost,
    );

    // Steps 8–9: proof and trace hash.
    let service_id = Arc::clone(&winner.2.service_id);
    let score = winner.0;
    let mut decision = Decision {
        decision_id: String::new(),
        service_id,
        score,
        ranking: scored.into_iter().map(|s| s.2).collect(),
        rejected,
        guarantees,
        control_signal: ControlSignal {
            u,
            u_max: U_MAX,
            margin,
        },
        proof,
        registry_version: snapshot.version().to_owned(),
        policy_version: policies.version.clone(),
        request_digest,
        request: recorded,
        principal: principal.clone(),
        recorded_at: None,
    };
    caio_trace::seal(&mut decision).map_err(internal)?;
    Ok(decision)
}

fn hex_of(bytes: &[u8; 32]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for b in bytes {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 0xf)] as char);
    }
    s
}
