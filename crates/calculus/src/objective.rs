//! Step 5: the objective `α·I + β·A + γ·RL + δ·W + μ·Q + ν·R − λ·Cost − ρ·Risk − η·Latency`, its
//! normalized terms, and the deterministic ranking with its seed-based tie-break.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use caio_contracts::canonical::Sha256;
use caio_contracts::decision::ScoreTerms;
use caio_contracts::model::{DataLocality, ServiceSpec};

use crate::fields::FieldTerms;

/// The fixed coefficients of the objective.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coefficients {
    /// α, intent energy I.
    pub alpha: f64,
    /// β, attention A.
    pub beta: f64,
    /// γ, RL.
    pub gamma: f64,
    /// δ, resonance W.
    pub delta: f64,
    /// μ, contract quality Q.
    pub mu: f64,
    /// ν, reliability R.
    pub nu: f64,
    /// λ, cost.
    pub lambda: f64,
    /// ρ, risk.
    pub rho: f64,
    /// η, latency.
    pub eta: f64,
}

/// The one set of coefficients CAIO uses (docs/math/calculus.md explains the choice).
pub const COEFFICIENTS: Coefficients = Coefficients {
    alpha: 0.20,
    beta: 0.10,
    gamma: 0.25,
    delta: 0.05,
    mu: 0.40,
    nu: 0.20,
    lambda: 0.25,
    rho: 0.20,
    eta: 0.15,
};

/// Cost at which the normalized cost term reaches 0.5: `c / (c + C0)`.
pub const COST_HALF: f64 = 0.001;
/// Latency (ms) at which the normalized latency term reaches 0.5: `L / (L + L0)`.
pub const LATENCY_HALF_MS: f64 = 500.0;
/// Quality assumed for a contract that declares no accuracy.
pub const UNKNOWN_QUALITY: f64 = 0.5;
/// The bound on the control signal.
pub const U_MAX: f64 = 1.0;

impl Coefficients {
    /// The coefficients as a name → value map, for proofs (static names: no allocation per key).
    pub fn as_map(&self) -> BTreeMap<std::borrow::Cow<'static, str>, f64> {
        [
            ("alpha", self.alpha),
            ("beta", self.beta),
            ("gamma", self.gamma),
            ("delta", self.delta),
            ("mu", self.mu),
            ("nu", self.nu),
            ("lambda", self.lambda),
            ("rho", self.rho),
            ("eta", self.eta),
        ]
        .into_iter()
        .map(|(k, v)| (std::borrow::Cow::Borrowed(k), v))
        .collect()
    }

    /// The objective value of a set of terms.
    pub fn score(&self, t: &ScoreTerms) -> f64 {
        let s = self.alpha * t.intent
            + self.beta * t.attention
            + self.gamma * t.rl
            + self.delta * t.resonance
            + self.mu * t.quality
            + self.nu * t.reliability
            - self.lambda * t.cost
            - self.rho * t.risk
            - self.eta * t.latency;
        if s.is_finite() { s } else { f64::MIN }
    }
}

/// Observed behaviour of one service (fed by the gateway; empty for offline routing).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServiceHistory {
    /// Share of successful calls, in [0, 1].
    pub success_rate: f64,
    /// Exponentially weighted mean latency in ms.
    pub ewma_latency_ms: f64,
    /// Number of observations.
    pub samples: u64,
    /// The gateway's circuit breaker for the service is open: routing leaves it out.
    pub circuit_open: bool,
}

/// History per service id.
pub type History = BTreeMap<String, ServiceHistory>;

fn unit(v: f64) -> f64 {
    if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) }
}

fn saturate(v: f64, half: f64) -> f64 {
    if v <= 0.0 || v.is_nan() {
        0.0
    } else if v.is_infinite() {
        1.0
    } else {
        unit(v / (v + half))
    }
}

/// The latency figure used for a service: its `latency_ms.max` bound, else its history's EWMA, else
/// its timeout (the worst it can take).
pub fn latency_ms(spec: &ServiceSpec, history: Option<&ServiceHistory>) -> f64 {
    spec.guarantees
        .get("latency_ms")
        .and_then(|b| b.range())
        .and_then(|r| r.max)
        .or_else(|| history.map(|h| h.ewma_latency_ms))
        .unwrap_or(spec.api.timeout_ms as f64)
}

/// Normalized latency `L / (L + L0)`.
pub fn latency_term(latency_ms: f64) -> f64 {
    saturate(latency_ms, LATENCY_HALF_MS)
}

/// Exposure of data sent to a service: local/on-device 0, region 0.4, external 1; halved by
/// encryption.
pub fn exposure(locality: DataLocality, encryption: bool) -> f64 {
    let base = match locality {
        DataLocality::Local | DataLocality::OnDevice => 0.0,
        DataLocality::Region => 0.4,
        DataLocality::External => 1.0,
    };
    if encryption { base / 2.0 } else { base }
}

/// Risk `0.6·exposure + 0.2·(1 − determinism) + 0.2·retention/(retention + 30)`.
pub fn risk(spec: &ServiceSpec) -> f64 {
    let deterministic = spec
        .guarantees
        .get("determinism")
        .and_then(|b| b.flag())
        .unwrap_or(false);
    let retention = saturate(f64::from(spec.privacy.retention_days), 30.0);
    unit(
        0.6 * exposure(spec.privacy.data_locality, spec.privacy.encryption)
            + 0.2 * if deterministic { 0.0 } else { 1.0 }
            + 0.2 * retention,
    )
}

/// The parts of a service's terms that depend on its contract alone, computed once per contract.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Statics {
    /// Quality Q.
    pub quality: f64,
    /// Risk.
    pub risk: f64,
    /// The `latency_ms.max` bound, if declared.
    pub latency_bound: Option<f64>,
    /// The timeout, the latency used when nothing better is known.
    pub timeout_ms: f64,
}

/// The contract-only parts of a service's terms.
pub fn statics(spec: &ServiceSpec) -> Statics {
    Statics {
        quality: spec
            .guarantees
            .get("accuracy")
            .and_then(|b| b.range())
            .and_then(|r| r.min.or(r.max))
            .map_or(UNKNOWN_QUALITY, unit),
        risk: risk(spec),
        latency_bound: spec
            .guarantees
            .get("latency_ms")
            .and_then(|b| b.range())
            .and_then(|r| r.max),
        timeout_ms: spec.api.timeout_ms as f64,
    }
}

/// All normalized terms of one service.
pub fn terms(
    spec: &ServiceSpec,
    estimated_cost: f64,
    history: Option<&ServiceHistory>,
    field: Option<&FieldTerms>,
    resonance: f64,
) -> ScoreTerms {
    terms_with(&statics(spec), estimated_cost, history, field, resonance)
}

/// [`terms`] from precomputed [`Statics`].
pub fn terms_with(
    statics: &Statics,
    estimated_cost: f64,
    history: Option<&ServiceHistory>,
    field: Option<&FieldTerms>,
    resonance: f64,
) -> ScoreTerms {
    let quality = statics.quality;
    let reliability = history.map_or(1.0, |h| unit(h.success_rate));
    let lat_ms = statics
        .latency_bound
        .or_else(|| history.map(|h| h.ewma_latency_ms))
        .unwrap_or(statics.timeout_ms);
    let latency = latency_term(lat_ms);
    let risk = statics.risk;
    let f = field.copied().unwrap_or_default();
    ScoreTerms {
        intent: unit(f.intent),
        attention: unit(f.attention),
        rl: unit(f.rl),
        resonance: if field.is_some() {
            unit(resonance)
        } else {
            0.0
        },
        quality,
        reliability,
        cost: saturate(estimated_cost, COST_HALF),
        risk,
        latency,
        estimated_cost,
        latency_ms: lat_ms,
        kappa: conductivity(reliability, risk, latency),
    }
}

/// Conductivity κ = R · (1 − Risk) · (1 − Latency), in [0, 1]: how readily a service carries the
/// request's field.
pub fn conductivity(reliability: f64, risk: f64, latency: f64) -> f64 {
    unit(reliability * (1.0 - risk) * (1.0 - latency))
}

/// The tie-break key: SHA-256 of the seed (8 bytes little-endian) followed by the service id.
pub fn tiebreak(seed: u64, service_id: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(&seed.to_le_bytes());
    h.update(service_id.as_bytes());
    h.finish()
}

/// The ranking order: higher score first; equal scores by lower tie-break key; then by id. Total,
/// and independent of input order.
pub fn rank_order(a: (f64, &[u8; 32], &str), b: (f64, &[u8; 32], &str)) -> Ordering {
    b.0.total_cmp(&a.0)
        .then_with(|| a.1.cmp(b.1))
        .then_with(|| a.2.cmp(b.2))
}
