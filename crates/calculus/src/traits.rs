//! Step 4: trait constraints `G_t(s) = θ·d_t − σ_t(s) ≤ 0`.
//!
//! A trait demand `d_t ∈ [0, 1]` comes from a request flag (1) or from the trait field's mode
//! energy in band t, whichever is larger. A service's supply `σ_t(s) ∈ [0, 1]` is read from its
//! contract. The constraint is feasible when the supply covers θ = 0.75 of the demand.

use std::collections::BTreeMap;

use caio_contracts::model::{DataLocality, ServiceSpec};
use caio_contracts::request::TraitFlag;

use crate::fields::BANDS;
use crate::objective::latency_term;

/// The share of a demand a service must supply.
pub const THETA: f64 = 0.75;

/// The traits, in band order: band 0 determinism, band 1 privacy, band 2 low latency.
pub const TRAITS: [TraitFlag; 3] = [
    TraitFlag::Deterministic,
    TraitFlag::Private,
    TraitFlag::LowLatency,
];

/// A service's supply of a trait.
pub fn supply(t: TraitFlag, spec: &ServiceSpec, latency_ms: f64) -> f64 {
    match t {
        TraitFlag::Deterministic => {
            let det = spec
                .guarantees
                .get("determinism")
                .and_then(|b| b.flag())
                .unwrap_or(false);
            if det { 1.0 } else { 0.0 }
        }
        TraitFlag::Private => match (spec.privacy.data_locality, spec.privacy.encryption) {
            (DataLocality::Local | DataLocality::OnDevice, _) => 1.0,
            (DataLocality::Region, _) => 0.75,
            (DataLocality::External, true) => 0.5,
            (DataLocality::External, false) => 0.0,
        },
        TraitFlag::LowLatency => 1.0 - latency_term(latency_ms),
    }
}

/// The demand per trait: flags give 1, the trait field's band energies give the rest.
pub fn demands(flags: &[TraitFlag], trait_modes: Option<&[f64; BANDS]>) -> [f64; 3] {
    let mut d = [0.0; 3];
    for (i, t) in TRAITS.iter().enumerate() {
        let field = trait_modes.map_or(0.0, |m| m[i]);
        let flag = if flags.contains(t) { 1.0 } else { 0.0 };
        d[i] = f64::max(field, flag);
    }
    d
}

/// The constraint values for every demanded trait (demand > 0), by trait name.
pub fn constraints(
    demands: &[f64; 3],
    spec: &ServiceSpec,
    latency_ms: f64,
) -> BTreeMap<String, f64> {
    TRAITS
        .iter()
        .zip(demands)
        .filter(|(_, d)| **d > 0.0)
        .map(|(t, d)| {
            (
                t.as_str().to_owned(),
                THETA * d - supply(*t, spec, latency_ms),
            )
        })
        .collect()
}

/// The constraint values `G_t = θ·d_t − σ_t` per trait, in [`TRAITS`] order (0 where there is no
/// demand), without allocating.
pub fn values(demands: &[f64; 3], spec: &ServiceSpec, latency_ms: f64) -> [f64; 3] {
    let mut g = [0.0; 3];
    for (i, t) in TRAITS.iter().enumerate() {
        if demands[i] > 0.0 {
            g[i] = THETA * demands[i] - supply(*t, spec, latency_ms);
        }
    }
    g
}
