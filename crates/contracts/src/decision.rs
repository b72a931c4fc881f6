//! The decision format: what `caio route` prints and `POST /api/v1/route` returns (DESIGN.md §3).
//!
//! A decision carries its evidence: the request as routed (payload redacted when sensitive), the
//! principal, the registry and policy versions, and one proof section per pipeline step for the
//! chosen service, plus the ranking of every feasible candidate and the step and reason that
//! removed every other service. `verify` recomputes all of it offline from the decision plus the
//! contracts and policies.
//!
//! Field order: the structs in the hashed core declare their fields in the order RFC 8785 sorts
//! them, so the canonical serializer can stream them straight into the hash; the canonical module
//! checks that order at run time and falls back to a sorting serializer if it is ever broken.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::DataLocality;
use crate::request::{Principal, RouteRequest};

/// A routing decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// `sha256:<hex>` of the canonical JSON of the hashed core (see [`DecisionCore`]).
    pub decision_id: String,
    /// The chosen service.
    pub service_id: Arc<str>,
    /// The chosen service's score.
    pub score: f64,
    /// Every feasible candidate, best first, with its score terms.
    pub ranking: Vec<RankedCandidate>,
    /// Every other service in the registry, in id order, with the step and reason that removed it.
    pub rejected: Rejections,
    /// The guarantees the decision composes to.
    pub guarantees: ComposedGuarantees,
    /// The bounded control signal u.
    pub control_signal: ControlSignal,
    /// One proof section per pipeline step, for the chosen service.
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

/// The members of a [`Decision`]'s JSON, in the order serde writes them (the field order above).
pub const DECISION_MEMBERS: [&str; 14] = [
    "decision_id",
    "service_id",
    "score",
    "ranking",
    "rejected",
    "guarantees",
    "control_signal",
    "proof",
    "registry_version",
    "policy_version",
    "request_digest",
    "request",
    "principal",
    "recorded_at",
];

/// What the decision id commits to (DESIGN.md §2 step 9): the request digest, the registry and
/// policy versions, the principal, the decision (service, score, control signal), the proofs and
/// the composed guarantees. The ranking and the rejections are derived from these by recomputation
/// and are checked by `verify`, not hashed; the timestamp lives beside the core.
#[derive(Debug, Serialize)]
pub struct DecisionCore<'a> {
    /// The control signal.
    pub control_signal: &'a ControlSignal,
    /// The composed guarantees.
    pub guarantees: &'a ComposedGuarantees,
    /// The policy version.
    pub policy_version: &'a str,
    /// The principal.
    pub principal: &'a Principal,
    /// The proofs.
    pub proof: &'a Proof,
    /// The registry version.
    pub registry_version: &'a str,
    /// The request digest.
    pub request_digest: &'a str,
    /// The winner's score.
    pub score: f64,
    /// The winner.
    pub service_id: &'a str,
}

/// The members of [`DecisionCore`], in canonical (RFC 8785) order.
pub const CORE_MEMBERS: [&str; 9] = [
    "control_signal",
    "guarantees",
    "policy_version",
    "principal",
    "proof",
    "registry_version",
    "request_digest",
    "score",
    "service_id",
];

/// The canonical JSON of a decision core, as hashed for the decision id, with where each member's
/// value lies in it, so that a decision's JSON can reuse the bytes instead of serializing the
/// same values a second time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalCore {
    pub(crate) bytes: Vec<u8>,
    /// Byte range of each member's value, in [`CORE_MEMBERS`] order.
    pub(crate) spans: [(usize, usize); CORE_MEMBERS.len()],
    /// Every number reads back as the value written (see [`CanonicalCore::is_exact`]).
    pub(crate) exact: bool,
}

impl CanonicalCore {
    /// The canonical JSON (what the decision id hashes).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The canonical JSON of one member's value (`name` from [`CORE_MEMBERS`]).
    pub fn member(&self, name: &str) -> Option<&[u8]> {
        let i = CORE_MEMBERS.iter().position(|m| *m == name)?;
        let (start, end) = self.spans[i];
        self.bytes.get(start..end)
    }

    /// Whether every number in the core reads back as the same value. RFC 8785 writes numbers as
    /// doubles, so an integer beyond ±2^53 (possible in a request's context, which proofs quote)
    /// reads back rounded, and `-0` reads back as `0`; such a core is hashed as it is, but
    /// the decision's JSON should not quote it.
    pub fn is_exact(&self) -> bool {
        self.exact
    }
}

impl DecisionCore<'_> {
    /// The canonical JSON of the core, written directly (the fast path), or `None` when the core
    /// holds something only the generic canonical serializer handles.
    pub fn canonical_bytes(&self) -> Option<Vec<u8>> {
        self.canonical().map(|c| c.bytes)
    }

    /// The canonical JSON of the core with its members' positions (the fast path), or `None`
    /// when the core holds something only the generic canonical serializer handles.
    pub fn canonical(&self) -> Option<CanonicalCore> {
        crate::core_writer::write_core(self).ok()
    }

    /// `sha256:<hex>` of the core's canonical JSON: the decision id.
    pub fn digest(&self) -> Result<String, crate::canonical::CanonicalError> {
        match self.canonical() {
            Some(core) => Ok(crate::canonical::digest_bytes(&core.bytes)),
            None => crate::canonical::digest(self),
        }
    }
}

impl Decision {
    /// The hashed core of this decision.
    pub fn core(&self) -> DecisionCore<'_> {
        DecisionCore {
            control_signal: &self.control_signal,
            guarantees: &self.guarantees,
            policy_version: &self.policy_version,
            principal: &self.principal,
            proof: &self.proof,
            registry_version: &self.registry_version,
            request_digest: &self.request_digest,
            score: self.score,
            service_id: &self.service_id,
        }
    }
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
    /// Hex of the tie-break key `sha256(seed ‖ service_id)`, present when the candidate's score
    /// equals another's; lower wins among equal scores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiebreak: Option<String>,
}

/// The normalized terms of the objective, each in [0, 1] (raw figures are named so).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreTerms {
    /// Attention A.
    pub attention: f64,
    /// Normalized cost.
    pub cost: f64,
    /// Estimated cost of the call, in the contract's currency (raw).
    pub estimated_cost: f64,
    /// Intent energy I.
    pub intent: f64,
    /// Conductivity κ of the service.
    pub kappa: f64,
    /// Normalized latency.
    pub latency: f64,
    /// Latency bound used, in milliseconds (raw).
    pub latency_ms: f64,
    /// Contract quality Q (offered accuracy).
    pub quality: f64,
    /// Reliability R (history success rate, 1 without history).
    pub reliability: f64,
    /// Resonance W.
    pub resonance: f64,
    /// Risk.
    pub risk: f64,
    /// Best service-encoding correlation RL.
    pub rl: f64,
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
    pub reason: Cow<'static, str>,
    /// A human explanation naming the values compared.
    pub detail: Arc<str>,
}

/// Rejections shared between decisions (the services lacking a required capability, computed once
/// per registry snapshot and capability set), each with its compact JSON written once.
#[derive(Debug, Default)]
pub struct SharedRejections {
    list: Box<[Rejection]>,
    /// serde_json's compact JSON of each rejection, in the same order; `None` if one did not
    /// serialize (then every decision serializes them itself).
    json: Option<Box<[Box<[u8]>]>>,
}

impl SharedRejections {
    /// The list (in id order) and the JSON of each entry.
    pub fn new(list: Vec<Rejection>) -> SharedRejections {
        let json = list
            .iter()
            .map(|r| serde_json::to_vec(r).map(Vec::into_boxed_slice))
            .collect::<Result<Vec<_>, _>>()
            .ok()
            .map(Vec::into_boxed_slice);
        SharedRejections {
            list: list.into_boxed_slice(),
            json,
        }
    }

    /// The rejections.
    pub fn as_slice(&self) -> &[Rejection] {
        &self.list
    }
}

/// The rejected services, in id order: services that lack a required capability (a list shared
/// between decisions over the same registry snapshot and capabilities) merged with those removed
/// at a later step. Serializes as one JSON array.
#[derive(Debug, Clone, Default)]
pub struct Rejections {
    unmatched: Arc<SharedRejections>,
    others: Vec<Rejection>,
}

impl Rejections {
    /// Builds the list from the two id-ordered parts.
    pub fn new(unmatched: Arc<SharedRejections>, others: Vec<Rejection>) -> Rejections {
        Rejections { unmatched, others }
    }

    /// Every rejection, in id order, with its JSON when it is a shared one.
    fn merged<'a>(&'a self) -> impl Iterator<Item = (&'a Rejection, Option<&'a [u8]>)> {
        let json = self.unmatched.json.as_deref();
        let mut a = self.unmatched.list.iter().enumerate().peekable();
        let mut b = self.others.iter().peekable();
        let shared =
            move |(i, r): (usize, &'a Rejection)| (r, json.and_then(|j| j.get(i)).map(|b| &b[..]));
        std::iter::from_fn(move || match (a.peek(), b.peek()) {
            (Some((_, x)), Some(y)) => {
                if x.service_id <= y.service_id {
                    a.next().map(shared)
                } else {
                    b.next().map(|r| (r, None))
                }
            }
            (Some(_), None) => a.next().map(shared),
            (None, _) => b.next().map(|r| (r, None)),
        })
    }

    /// Every rejection, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Rejection> {
        self.merged().map(|(r, _)| r)
    }

    /// Appends the list's compact JSON to `out`: the bytes serde_json writes for it, with the
    /// shared rejections' JSON copied instead of serialized again.
    pub fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        out.push(b'[');
        for (i, (r, json)) in self.merged().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            match json {
                Some(bytes) => out.extend_from_slice(bytes),
                None => serde_json::to_writer(&mut *out, r)?,
            }
        }
        out.push(b']');
        Ok(())
    }

    /// How many services were rejected.
    pub fn len(&self) -> usize {
        self.unmatched.list.len() + self.others.len()
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rejection of one service.
    pub fn get(&self, service_id: &str) -> Option<&Rejection> {
        self.iter().find(|r| r.service_id.as_ref() == service_id)
    }

    /// The rejections as an owned list.
    pub fn to_vec(&self) -> Vec<Rejection> {
        self.iter().cloned().collect()
    }
}

impl PartialEq for Rejections {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Serialize for Rejections {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for r in self.iter() {
            seq.serialize_element(r)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Rejections {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut others = Vec::<Rejection>::deserialize(deserializer)?;
        others.sort_by(|a, b| a.service_id.cmp(&b.service_id));
        Ok(Rejections {
            unmatched: Arc::default(),
            others,
        })
    }
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
    /// The gateway's view of the service's health: its circuit breaker is open (checked before
    /// step 1, from the observed history the proof records).
    Health,
}

impl Step {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Match => "match",
            Step::Rules => "rules",
            Step::Security => "security",
            Step::Traits => "traits",
            Step::Health => "health",
        }
    }
}

/// Guarantees composed over the chosen service (or chain).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposedGuarantees {
    /// Minimum offered accuracy, when every stage declares one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Summed per-request cost estimate.
    pub cost: f64,
    /// The weakest data locality of the stages.
    pub data_locality: DataLocality,
    /// True only when every stage is deterministic.
    pub determinism: bool,
    /// True only when every stage encrypts.
    pub encryption: bool,
    /// Summed latency bound in ms, when every stage declares one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// The services composed, in order.
    pub services: Vec<Arc<str>>,
}

/// The bounded control signal u, one component per field band.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSignal {
    /// Score margin between the winner and the runner-up (the winner's score without one).
    pub margin: f64,
    /// The components; ‖u‖∞ ≤ `u_max`.
    pub u: Vec<f64>,
    /// The bound.
    pub u_max: f64,
}

/// One proof section per pipeline step, for the chosen service.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proof {
    /// Step 1 evidence.
    pub matching: MatchProof,
    /// Step 5 evidence.
    pub optimize: OptimizeProof,
    /// Step 2 evidence.
    pub rules: RulesProof,
    /// Step 3 evidence.
    pub security: SecurityProof,
    /// Step 4 evidence.
    pub traits: TraitsProof,
}

/// Evidence for matching.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchProof {
    /// Every check made for the chosen service, in order.
    pub checks: Vec<Check>,
    /// Services the capability index returned for every required capability.
    pub index_candidates: usize,
    /// Input tokens used for cost estimates.
    pub input_tokens: u64,
    /// `constraint` (the request said so) or `payload` (estimated as payload bytes / 4).
    pub input_tokens_source: String,
    /// Services in the registry snapshot.
    pub registry_services: usize,
}

/// One predicate with the values that decided it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// What was checked (`capability:x`, `guarantee:accuracy`, `constraint:language`, `budget`).
    pub name: String,
    /// The offered value (`null` when the contract does not declare it).
    pub offered: serde_json::Value,
    /// Whether the check passed.
    pub ok: bool,
    /// The required value.
    pub required: serde_json::Value,
}

/// Evidence for the rules step: one verdict per policy, in policy order, and the values of the
/// paths those policies read (shared: many policies read the same paths).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesProof {
    /// The value of every `request.*`, `service.*` and `principal.*` path read by the policies
    /// (`when` paths always, `require` paths where the rule applied); `null` for an absent path.
    pub operands: BTreeMap<Arc<str>, serde_json::Value>,
    /// One verdict per policy, in policy order.
    pub outcomes: Vec<RuleVerdict>,
}

/// The verdict of one policy for the chosen service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleVerdict {
    /// Whether the rule applied (its `when` was true or could not be evaluated).
    pub applied: bool,
    /// Why an expression could not be evaluated (fail-closed reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The policy.
    pub policy_id: Arc<str>,
    /// The `require` result when it applied (false when it could not be evaluated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<bool>,
}

/// The evaluation of one policy for one service, with the values it read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleOutcome {
    /// Whether the rule applied (its `when` was true or could not be evaluated).
    pub applied: bool,
    /// Why an expression could not be evaluated (fail-closed reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The values of every `request.*`, `service.*` and `principal.*` path the rule read.
    pub operands: BTreeMap<String, serde_json::Value>,
    /// The policy.
    pub policy_id: String,
    /// The `require` result when it applied (false when it could not be evaluated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<bool>,
}

/// Evidence for the security step.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityProof {
    /// Tenant access passed (service tenant is the principal's or `public`).
    pub access: bool,
    /// The principal passed authentication.
    pub authenticated: bool,
    /// Authorization passed.
    pub authorized: bool,
    /// Whether the caller declared the data sensitive.
    pub declared_sensitive: bool,
    /// Permissions held that the service requires (empty requirement: always authorized).
    pub granted_permissions: Vec<String>,
    /// PII found in the payload: kind and JSON pointer, never the value.
    pub pii: Vec<PiiFinding>,
    /// Privacy passed (not sensitive, or local/on-device, or encrypted).
    pub privacy: bool,
    /// The request was sensitive (declared or PII).
    pub sensitive: bool,
    /// Trust passed (principal trust ≥ service minimum).
    pub trust: bool,
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

/// Evidence for the traits step.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraitsProof {
    /// Trait name → G value for the chosen service; feasible when every G ≤ 0.
    pub constraints: BTreeMap<String, f64>,
    /// Trait name → demand in [0, 1] (flags give 1, the trait field its band energy).
    pub demands: BTreeMap<String, f64>,
}

/// Evidence for the optimization step.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizeProof {
    /// The coefficients the objective used.
    pub coefficients: BTreeMap<Cow<'static, str>, f64>,
    /// Number of feasible candidates ranked.
    pub feasible: usize,
    /// Whether field vectors were supplied.
    pub fields_used: bool,
    /// The observed history used for reliability and latency, per ranked service that had one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub history: BTreeMap<String, HistoryEvidence>,
    /// The second-best candidate, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_up: Option<RunnerUp>,
    /// The chosen service's terms.
    pub terms: ScoreTerms,
    /// Whether the winner was decided by the tie-break.
    pub tie_broken: bool,
}

/// The runner-up of the optimization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerUp {
    /// Its score.
    pub score: f64,
    /// The service.
    pub service_id: Arc<str>,
}

/// The history of one service as used by a decision.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryEvidence {
    /// The service's circuit breaker was open, so routing left it out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub circuit_open: bool,
    /// EWMA latency in ms.
    pub ewma_latency_ms: f64,
    /// Number of observations.
    pub samples: u64,
    /// Share of successful calls.
    pub success_rate: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejection(id: &str, detail: &str) -> Rejection {
        Rejection {
            service_id: Arc::from(id),
            step: Step::Match,
            reason: "missing_capability".into(),
            detail: Arc::from(detail),
        }
    }

    #[test]
    fn rejections_write_the_bytes_serde_writes() {
        let shared = vec![
            rejection("a", "does not offer capability `x`"),
            rejection("c", "quote \" backslash \\ newline \n tab \t nul \u{0}"),
            rejection("e", "ünïcødé \u{2028}"),
        ];
        let others = vec![
            rejection("b", "later step"),
            rejection("d", "later step"),
            rejection("f", "last"),
        ];
        let cases = [
            (shared.clone(), others.clone()),
            (shared.clone(), Vec::new()),
            (Vec::new(), others.clone()),
            (Vec::new(), Vec::new()),
            (others, shared),
        ];
        for (shared, others) in cases {
            let r = Rejections::new(Arc::new(SharedRejections::new(shared)), others);
            let mut out = Vec::new();
            r.write_json(&mut out).unwrap_or_else(|e| panic!("{e}"));
            let serde = serde_json::to_vec(&r).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&serde)
            );
            let ids: Vec<&str> = r.iter().map(|r| r.service_id.as_ref()).collect();
            let mut sorted = ids.clone();
            sorted.sort_unstable();
            assert_eq!(ids, sorted, "merged in id order");
        }
    }
}
