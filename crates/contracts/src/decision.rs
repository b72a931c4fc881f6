//! The decision format: what `caio route` prints and `POST /api/v1/route` returns (DESIGN.md §3).
//!
//! A decision carries its own evidence: the request as routed (payload redacted when sensitive), the
//! principal, the registry and policy versions, and one proof section per pipeline step, so that
//! `verify` can recompute every predicate offline from the decision plus the contracts and policies.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::DataLocality;
use crate::request::{Principal, RouteRequest};

/// A routing decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// `sha256:<hex>` of the canonical JSON of the hashed core (everything but this field and
    /// `recorded_at`).
    pub decision_id: String,
    /// The chosen service.
    pub service_id: Arc<str>,
    /// The chosen service's score.
    pub score: f64,
    /// Every feasible candidate, best first, with its score terms.
    pub ranking: Vec<RankedCandidate>,
    /// Every other service in the registry, with the step and reason that removed it.
    pub rejected: Vec<Rejection>,
    /// The guarantees the decision composes to.
    pub guarantees: ComposedGuarantees,
    /// The bounded control signal u.
    pub control_signal: ControlSignal,
    /// One proof section per pipeline step.
    pub proof: Proof,
    /// Content address of the registry snapshot routed against.
    pub registry_version: String,
    /// Content address of the policy set applied.
    pub policy_version: String,
    /// `sha256:<hex>` of the canonical recorded request.
    pub request_digest: String,
    /// The request as routed; when the data was sensitive the payload is replaced by
    /// `{"$redacted": "sha256:<digest of the original payload>"}`.
    pub request: RouteRequest,
    /// The principal the request was routed for.
    pub principal: Principal,
    /// When the decision was recorded (RFC 3339). Outside the hashed core; set by callers that
    /// have a clock, absent from `route()`'s pure output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_at: Option<String>,
}

/// A feasible candidate and the terms of its score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RankedCandidate {
    /// The service.
    pub service_id: Arc<str>,
    /// The objective value.
    pub score: f64,
    /// Each normalized term.
    pub terms: ScoreTerms,
    /// Hex of the tie-break key `sha256(seed ‖ service_id)`; lower wins among equal scores.
    pub tiebreak: String,
}

/// The normalized terms of the objective, each in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreTerms {
    /// Intent energy I.
    pub intent: f64,
    /// Attention A.
    pub attention: f64,
    /// Best service-encoding correlation RL.
    pub rl: f64,
    /// Resonance W.
    pub resonance: f64,
    /// Contract quality Q (offered accuracy).
    pub quality: f64,
    /// Reliability R (history success rate, 1 without history).
    pub reliability: f64,
    /// Normalized cost.
    pub cost: f64,
    /// Risk.
    pub risk: f64,
    /// Normalized latency.
    pub latency: f64,
    /// Estimated cost of the call, in the contract's currency.
    pub estimated_cost: f64,
    /// Latency bound used, in milliseconds.
    pub latency_ms: f64,
    /// Conductivity κ of the service.
    pub kappa: f64,
}

/// A service that was not feasible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rejection {
    /// The service.
    pub service_id: Arc<str>,
    /// The pipeline step that removed it.
    pub step: Step,
    /// A stable reason code (`missing_capability`, `guarantee_unmet`, `policy_violation`, ...).
    pub reason: String,
    /// A human explanation naming the values compared.
    pub detail: String,
}

/// The pipeline steps that can remove a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Step 1: capabilities, guarantees, constraints, budget.
    Match,
    /// Step 2: policy rules.
    Rules,
    /// Step 3: authentication, authorization, privacy, trust, tenant access.
    Security,
    /// Step 4: trait constraints.
    Traits,
}

impl Step {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Match => "match",
            Step::Rules => "rules",
            Step::Security => "security",
            Step::Traits => "traits",
        }
    }
}

/// Guarantees composed over the chosen service (or chain).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposedGuarantees {
    /// The services composed, in order.
    pub services: Vec<Arc<str>>,
    /// Minimum offered accuracy, when every stage declares one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Summed latency bound in ms, when every stage declares one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// Summed per-request cost estimate.
    pub cost: f64,
    /// True only when every stage is deterministic.
    pub determinism: bool,
    /// The weakest data locality of the stages.
    pub data_locality: DataLocality,
    /// True only when every stage encrypts.
    pub encryption: bool,
}

/// The bounded control signal u, one component per field band.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSignal {
    /// The components; ‖u‖∞ ≤ `u_max`.
    pub u: Vec<f64>,
    /// The bound.
    pub u_max: f64,
    /// Score margin between the winner and the runner-up (the winner's score without one).
    pub margin: f64,
}

/// One proof section per pipeline step.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proof {
    /// Step 1 evidence.
    pub matching: MatchProof,
    /// Step 2 evidence.
    pub rules: Vec<RuleOutcome>,
    /// Step 3 evidence.
    pub security: SecurityProof,
    /// Step 4 evidence.
    pub traits: Vec<TraitEvidence>,
    /// Step 5 evidence.
    pub optimize: OptimizeProof,
}

/// Evidence for matching.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchProof {
    /// Services in the registry snapshot.
    pub registry_services: usize,
    /// Services the capability index returned for every required capability.
    pub index_candidates: usize,
    /// Input tokens used for cost estimates, and where the figure came from.
    pub input_tokens: u64,
    /// `constraint` (the request said so) or `payload` (estimated as payload bytes / 4).
    pub input_tokens_source: String,
    /// Per index candidate, every check made.
    pub candidates: Vec<MatchEvidence>,
}

/// The matching checks made for one service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchEvidence {
    /// The service.
    pub service_id: Arc<str>,
    /// Each check; matching stops at the first failed one.
    pub checks: Vec<Check>,
}

/// One predicate with the values that decided it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// What was checked (`guarantee:accuracy.min`, `constraint:language`, `budget`).
    pub name: String,
    /// The required value.
    pub required: serde_json::Value,
    /// The offered value (`null` when the contract does not declare it).
    pub offered: serde_json::Value,
    /// Whether the check passed.
    pub ok: bool,
}

/// The evaluation of one policy for one service (or for the request, when `when` is false).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleOutcome {
    /// The policy.
    pub policy_id: String,
    /// The service, or absent when the rule did not apply to the request at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_id: Option<Arc<str>>,
    /// Whether the rule applied (its `when` was true or could not be evaluated).
    pub applied: bool,
    /// The `require` result when it applied (false when it could not be evaluated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<bool>,
    /// Why an expression could not be evaluated (fail-closed reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The values of every `request.*`, `service.*` and `principal.*` path the rule reads.
    pub operands: BTreeMap<String, serde_json::Value>,
}

/// Evidence for the security step.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityProof {
    /// The principal passed authentication.
    pub authenticated: bool,
    /// The request was sensitive (declared or PII).
    pub sensitive: bool,
    /// Whether the caller declared it sensitive.
    pub declared_sensitive: bool,
    /// PII found in the payload: kind and JSON pointer, never the value.
    pub pii: Vec<PiiFinding>,
    /// Per service that reached the step.
    pub services: Vec<SecurityEvidence>,
}

/// One PII finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PiiFinding {
    /// `email`, `phone`, `card`, `iban`, `us_ssn`.
    pub kind: String,
    /// JSON pointer into the payload.
    pub path: String,
}

/// The security checks for one service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityEvidence {
    /// The service.
    pub service_id: Arc<str>,
    /// Permissions held that the service requires (empty requirement: always authorized).
    pub granted_permissions: Vec<String>,
    /// Authorization passed.
    pub authorized: bool,
    /// Privacy passed (not sensitive, or local/on-device, or encrypted).
    pub privacy: bool,
    /// Trust passed (principal trust ≥ service minimum).
    pub trust: bool,
    /// Tenant access passed (service tenant is the principal's or `public`).
    pub access: bool,
}

/// Trait constraint values for one service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraitEvidence {
    /// The service.
    pub service_id: Arc<str>,
    /// Trait name → G value; feasible when every G ≤ 0.
    pub constraints: BTreeMap<String, f64>,
}

/// Evidence for the optimization step.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizeProof {
    /// The coefficients the objective used.
    pub coefficients: BTreeMap<String, f64>,
    /// Whether field vectors were supplied.
    pub fields_used: bool,
    /// Whether the winner was decided by the tie-break.
    pub tie_broken: bool,
    /// The observed history used for reliability and latency, per service that had one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub history: BTreeMap<String, HistoryEvidence>,
}

/// The history of one service as used by a decision.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryEvidence {
    /// Share of successful calls.
    pub success_rate: f64,
    /// EWMA latency in ms.
    pub ewma_latency_ms: f64,
    /// Number of observations.
    pub samples: u64,
}
