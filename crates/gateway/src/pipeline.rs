//! Steps 1–9 of the routing pipeline as one pure function.
//!
//! The hot loop over candidates only decides: predicates run without building evidence, and the
//! full evidence (every check, every policy outcome with its operands, every security check, the
//! trait constraints) is built once, for the chosen service. A rejected service gets its step, its
//! reason code and a sentence naming the values that removed it.

use std::collections::BTreeMap;
use std::sync::Arc;

use caio_calculus::fields::{self, BANDS, FieldContext};
use caio_calculus::matching;
use caio_calculus::objective::{self, COEFFICIENTS, History, U_MAX};
use caio_calculus::traits;
use caio_contracts::canonical;
use caio_contracts::decision::{
    ControlSignal, Decision, HistoryEvidence, MatchProof, OptimizeProof, PiiFinding, Proof,
    RankedCandidate, Rejection, Rejections, RuleVerdict, RulesProof, RunnerUp, ScoreTerms,
    SecurityProof, Step, TraitsProof,
};
use caio_contracts::request::{Principal, RouteRequest};
use caio_registry::Snapshot;
use caio_rules::{CompiledPolicies, RequestScope};
use caio_trace::SealedDecision;
use serde_json::json;

use crate::error::{NoRoute, RouteError};
use crate::prepared::PreparedServices;

/// Everything `route` reads besides the request and the principal.
#[derive(Debug, Clone, Copy)]
pub struct RouteContext<'a> {
    /// The registry snapshot.
    pub snapshot: &'a Snapshot,
    /// State prepared for this snapshot and policy set.
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

/// Counts the bytes of a serialization without keeping them.
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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
    route_sealed(ctx, request, principal).map(SealedDecision::into_decision)
}

/// [`route`], keeping the canonical JSON of the decision's hashed core for encoding the decision
/// ([`caio_trace::TraceBody::decision`]).
pub fn route_sealed(
    ctx: &RouteContext<'_>,
    request: &RouteRequest,
    principal: &Principal,
) -> Result<SealedDecision, RouteError> {
    route_inner(ctx, request, principal, None)
}

struct Feasible {
    index: usize,
    cost: f64,
    terms: ScoreTerms,
    score: f64,
    modes: [f64; BANDS],
}

/// The request after normalization: PII, sensitivity, redaction, digest, CEL scope.
struct Normalized {
    pii: Vec<PiiFinding>,
    sensitive: bool,
    input_tokens: u64,
    tokens_source: String,
    recorded: RouteRequest,
    digest: String,
    scope: RequestScope,
}

fn normalize(
    request: &RouteRequest,
    principal: &Principal,
    policies: &CompiledPolicies,
    replay: Option<&Replay>,
) -> Result<Normalized, RouteError> {
    let redacted_in = is_redacted(&request.payload);
    let (pii, input_tokens, tokens_source) = match replay {
        Some(r) => (r.pii.clone(), r.input_tokens, r.input_tokens_source.clone()),
        None => {
            let pii = if redacted_in {
                Vec::new()
            } else {
                caio_security::scan(&request.payload)
            };
            let mut counter = ByteCounter(0);
            serde_json::to_writer(&mut counter, &request.payload).map_err(internal)?;
            let bytes = counter.0;
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
    let digest = canonical::digest(&recorded).map_err(internal)?;
    // The CEL view: every section a policy reads (all present, with defaults), `data.sensitive`
    // the effective value, the (possibly redacted) payload, never the field vectors. Sections no
    // policy reads are left out: converting a large payload for nothing is the costliest part of
    // building the view.
    let mut view = serde_json::Map::new();
    let mut add = |name: &str, value: serde_json::Value| {
        if policies.reads_request_section(name) {
            view.insert(name.to_owned(), value);
        }
    };
    add(
        "budget",
        serde_json::to_value(&recorded.budget).map_err(internal)?,
    );
    add(
        "context",
        serde_json::Value::Object(recorded.context.clone()),
    );
    add("data", json!({ "sensitive": sensitive }));
    add("payload", recorded.payload.clone());
    add(
        "requirements",
        serde_json::to_value(&recorded.requirements).map_err(internal)?,
    );
    add("seed", json!(recorded.seed));
    let view = serde_json::Value::Object(view);
    let principal_view = if policies.reads_principal() {
        json!({
            "id": principal.id,
            "tenant": principal.tenant,
            "permissions": principal.permissions,
            "trust_level": principal.trust_level,
            "roles": principal.roles,
        })
    } else {
        json!({})
    };
    Ok(Normalized {
        pii,
        sensitive,
        input_tokens,
        tokens_source,
        recorded,
        digest,
        scope: RequestScope::new(view, principal_view),
    })
}

fn reject(
    id: &Arc<str>,
    step: Step,
    reason: &'static str,
    detail: impl Into<Arc<str>>,
) -> Rejection {
    Rejection {
        service_id: Arc::clone(id),
        step,
        reason: reason.into(),
        detail: detail.into(),
    }
}

#[allow(clippy::too_many_lines)]
pub(crate) fn route_inner(
    ctx: &RouteContext<'_>,
    request: &RouteRequest,
    principal: &Principal,
    replay: Option<&Replay>,
) -> Result<SealedDecision, RouteError> {
    let snapshot = ctx.snapshot;
    let policies = ctx.policies;
    if ctx.services.version() != snapshot.version()
        || ctx.services.policy_version() != policies.version
    {
        return Err(internal(
            "prepared state does not belong to this snapshot and policy set",
        ));
    }
    let n = normalize(request, principal, policies, replay)?;
    let authenticated = caio_security::authenticate(principal);
    let reval = policies.evaluate_request(&n.scope);
    // Rules whose `when` is false for this request are skipped for every service.
    let live_rules: Vec<(usize, bool)> = (0..policies.rules.len())
        .filter(|i| !policies.never_applies(*i, &reval))
        .map(|i| (i, policies.decided_by_table(i, &reval)))
        .collect();

    let context_pairs: Vec<String> = match &request.fields {
        Some(f) if f.context.is_empty() => request
            .context
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        _ => Vec::new(),
    };
    let mut field_ctx = FieldContext::prepare(request.fields.as_ref(), &context_pairs);
    let demands = traits::demands(
        &request.requirements.traits,
        field_ctx.as_ref().map(|f| &f.trait_modes),
    );
    let any_demand = demands.iter().any(|d| *d > 0.0);

    let required_caps = &request.requirements.capabilities;
    let candidates = snapshot.candidates(required_caps);
    let entries = snapshot.entries();
    let unmatched = ctx.services.unmatched(snapshot, required_caps, &candidates);
    let mut rejected: Vec<Rejection> = Vec::new();
    let mut feasible: Vec<Feasible> = Vec::with_capacity(candidates.len());
    let resonance = field_ctx.as_ref().map_or(0.0, |f| f.resonance);

    // Services left out because their circuit breaker is open; their history goes into the
    // proof so a replay leaves them out too.
    let mut circuit_open: Vec<usize> = Vec::new();
    'candidates: for &i in &candidates {
        let entry = &entries[i];
        let spec = &entry.contract.service;

        // Health: the gateway's circuit breaker for the service is open.
        if let Some(h) = ctx.history.get(entry.id.as_ref())
            && h.circuit_open
        {
            rejected.push(reject(
                &entry.id,
                Step::Health,
                "circuit_open",
                format!(
                    "the circuit breaker is open (success rate {:.2} over {} calls)",
                    h.success_rate, h.samples
                ),
            ));
            circuit_open.push(i);
            continue;
        }

        // Step 1: guarantees, constraints, budget.
        let (failure, cost) = matching::first_failure(spec, request, n.input_tokens);
        if let Some(f) = failure {
            rejected.push(reject(
                &entry.id,
                Step::Match,
                f.reason(),
                matching::describe_failure(spec, request, n.input_tokens),
            ));
            continue;
        }

        // Step 2: policies.
        let (Some(scope), Some(table)) = (ctx.services.scope(i), ctx.services.table(i, policies))
        else {
            return Err(internal("prepared state is shorter than the snapshot"));
        };
        for &(r, by_table) in &live_rules {
            // Most rules apply to the whole request and read only the service: their verdict is
            // the one cached with the service.
            if by_table && !table.violated(r) {
                continue;
            }
            let check = policies.check(r, &n.scope, &reval, scope, table);
            if check.violated() {
                rejected.push(reject(
                    &entry.id,
                    Step::Rules,
                    "policy_violation",
                    policies.violation_detail(r, &n.scope, scope, table, &check),
                ));
                continue 'candidates;
            }
        }

        // Step 3: security.
        let denial = match &authenticated {
            Err(d) => Some(d.clone()),
            Ok(()) => caio_security::deny(principal, spec, n.sensitive),
        };
        if let Some(d) = denial {
            rejected.push(reject(&entry.id, Step::Security, d.reason, d.detail));
            continue;
        }

        // Step 4: trait constraints.
        let history = ctx.history.get(entry.id.as_ref());
        if any_demand {
            let lat = objective::latency_ms(spec, history);
            let g = traits::values(&demands, spec, lat);
            if g.iter().any(|v| *v > 0.0) {
                let unmet: Vec<String> = traits::TRAITS
                    .iter()
                    .zip(g)
                    .filter(|(_, v)| *v > 0.0)
                    .map(|(t, v)| format!("{} (G = {v:.4} > 0)", t.as_str()))
                    .collect();
                rejected.push(reject(
                    &entry.id,
                    Step::Traits,
                    "trait_unmet",
                    format!("trait constraints unmet: {}", unmet.join(", ")),
                ));
                continue;
            }
        }

        // Step 5 (per candidate): terms and score.
        let field_terms = field_ctx.as_mut().map(|fc| fc.terms(&spec.capabilities));
        let terms = match ctx.services.statics(i) {
            Some(st) => objective::terms_with(st, cost, history, field_terms.as_ref(), resonance),
            None => objective::terms(spec, cost, history, field_terms.as_ref(), resonance),
        };
        feasible.push(Feasible {
            index: i,
            cost,
            score: COEFFICIENTS.score(&terms),
            terms,
            modes: field_terms.map_or([0.0; BANDS], |t| t.service_modes),
        });
    }

    let rejections = Rejections::new(unmatched, rejected);
    let mut proof = Proof {
        matching: MatchProof {
            checks: Vec::new(),
            index_candidates: candidates.len(),
            input_tokens: n.input_tokens,
            input_tokens_source: n.tokens_source.clone(),
            registry_services: entries.len(),
        },
        optimize: OptimizeProof {
            coefficients: COEFFICIENTS.as_map(),
            feasible: feasible.len(),
            fields_used: field_ctx.is_some(),
            ..OptimizeProof::default()
        },
        rules: RulesProof::default(),
        security: SecurityProof {
            authenticated: authenticated.is_ok(),
            declared_sensitive: request.data.sensitive,
            pii: n.pii.clone(),
            sensitive: n.sensitive,
            ..SecurityProof::default()
        },
        traits: TraitsProof {
            constraints: BTreeMap::new(),
            demands: traits::TRAITS
                .iter()
                .zip(demands)
                .filter(|(_, d)| *d > 0.0)
                .map(|(t, d)| (t.as_str().to_owned(), d))
                .collect(),
        },
    };

    if feasible.is_empty() {
        return Err(RouteError::NoMatchingService(Box::new(NoRoute {
            rejected: rejections.to_vec(),
            proof,
            registry_version: snapshot.version().to_owned(),
            policy_version: policies.version.clone(),
            request_digest: n.digest,
        })));
    }

    // Step 5: rank. Higher score first; equal scores by the seed's tie-break key, then by id.
    feasible.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| entries[a.index].id.cmp(&entries[b.index].id))
    });
    let mut keys: Vec<Option<[u8; 32]>> = vec![None; feasible.len()];
    let mut start = 0;
    while start < feasible.len() {
        let mut end = start + 1;
        while end < feasible.len() && feasible[end].score == feasible[start].score {
            end += 1;
        }
        if end - start > 1 {
            let mut group: Vec<(Feasible, [u8; 32])> = feasible
                .drain(start..end)
                .map(|f| {
                    let k = objective::tiebreak(request.seed, &entries[f.index].id);
                    (f, k)
                })
                .collect();
            group.sort_by(|a, b| {
                a.1.cmp(&b.1)
                    .then_with(|| entries[a.0.index].id.cmp(&entries[b.0.index].id))
            });
            for (offset, (f, k)) in group.into_iter().enumerate() {
                feasible.insert(start + offset, f);
                keys[start + offset] = Some(k);
            }
        }
        start = end;
    }
    let winner = &feasible[0];
    let winner_entry = &entries[winner.index];
    let spec = &winner_entry.contract.service;
    proof.optimize.tie_broken = keys[0].is_some();
    proof.optimize.terms = winner.terms;
    proof.optimize.runner_up = feasible.get(1).map(|f| RunnerUp {
        score: f.score,
        service_id: Arc::clone(&entries[f.index].id),
    });
    for index in feasible.iter().map(|f| f.index).chain(circuit_open) {
        let id = &entries[index].id;
        if let Some(h) = ctx.history.get(id.as_ref()) {
            proof.optimize.history.insert(
                id.to_string(),
                HistoryEvidence {
                    circuit_open: h.circuit_open,
                    ewma_latency_ms: h.ewma_latency_ms,
                    samples: h.samples,
                    success_rate: h.success_rate,
                },
            );
        }
    }

    // The winner's evidence for steps 1–4.
    proof.matching.checks = matching::match_service(spec, request, n.input_tokens).0;
    let (Some(scope), Some(table)) = (
        ctx.services.scope(winner.index),
        ctx.services.table(winner.index, policies),
    ) else {
        return Err(internal("prepared state is shorter than the snapshot"));
    };
    for r in 0..policies.rules.len() {
        let check = policies.check(r, &n.scope, &reval, scope, table);
        policies.collect_operands(r, &n.scope, scope, check.applied, &mut proof.rules.operands);
        proof.rules.outcomes.push(RuleVerdict {
            applied: check.applied,
            error: check.error,
            policy_id: policies.rules[r].id.clone(),
            result: check.result,
        });
    }
    let (sec, _) = caio_security::check_service(principal, spec, n.sensitive);
    proof.security.access = sec.access;
    proof.security.authorized = sec.authorized;
    proof.security.granted_permissions = sec.granted_permissions;
    proof.security.privacy = sec.privacy;
    proof.security.trust = sec.trust;
    if any_demand {
        let lat = objective::latency_ms(spec, ctx.history.get(winner_entry.id.as_ref()));
        proof.traits.constraints = traits::constraints(&demands, spec, lat);
    }

    // Step 6: control signal.
    let margin = feasible
        .get(1)
        .map_or(winner.score, |r| winner.score - r.score);
    let u = match &field_ctx {
        Some(fc) => {
            fields::control_signal(winner.terms.kappa, &fc.intent_modes, &winner.modes, U_MAX)
        }
        None => vec![0.0; BANDS],
    };

    // Step 7: compose guarantees.
    let guarantees = caio_calculus::compose_one(Arc::clone(&winner_entry.id), spec, winner.cost);

    // Steps 8–9: the decision and its id.
    let ranking = feasible
        .iter()
        .zip(&keys)
        .map(|(f, k)| RankedCandidate {
            service_id: Arc::clone(&entries[f.index].id),
            score: f.score,
            terms: f.terms,
            tiebreak: k.map(|k| hex_of(&k)),
        })
        .collect();
    let decision = Decision {
        decision_id: String::new(),
        service_id: Arc::clone(&winner_entry.id),
        score: winner.score,
        ranking,
        rejected: rejections,
        guarantees,
        control_signal: ControlSignal {
            margin,
            u,
            u_max: U_MAX,
        },
        proof,
        registry_version: snapshot.version().to_owned(),
        policy_version: policies.version.clone(),
        request_digest: n.digest,
        request: n.recorded,
        principal: principal.clone(),
        recorded_at: None,
    };
    SealedDecision::seal(decision).map_err(internal)
}

fn hex_of(bytes: &[u8; 32]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    s
}
