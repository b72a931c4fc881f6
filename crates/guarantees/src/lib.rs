//! caio-guarantees: guarantees composed over chains of services, and post-execution enforcement.
//!
//! Composition itself is pure math and lives in caio-calculus; this crate applies it to chains and
//! checks what a service actually did (`enforce`) against what the decision promised. The gateway
//! calls `enforce` after every execution.

use caio_contracts::decision::ComposedGuarantees;
use serde::{Deserialize, Serialize};

pub use caio_calculus::compose::{compose, compose_chain, compose_one};

/// What was measured or reported for an executed call (or chain).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Observed {
    /// Wall-clock latency measured by the gateway, in ms.
    pub latency_ms: Option<f64>,
    /// Accuracy (or confidence) reported by the service, in [0, 1].
    pub accuracy: Option<f64>,
    /// Cost reported by the service.
    pub cost: Option<f64>,
    /// Whether a repeated call gave the same answer, when checked.
    pub deterministic: Option<bool>,
}

/// One broken guarantee.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    /// `latency_ms`, `accuracy`, `cost`, `determinism`.
    pub property: String,
    /// The composed bound.
    pub bound: f64,
    /// What was observed.
    pub observed: f64,
    /// Explanation.
    pub detail: String,
}

/// Tolerance on cost, relative, for rounding in providers' billing.
pub const COST_TOLERANCE: f64 = 1e-9;

/// Checks observations against composed guarantees. Properties that were not observed, or that
/// the composition does not bound, are not checked.
pub fn enforce(observed: &Observed, composed: &ComposedGuarantees) -> Vec<Violation> {
    let mut out = Vec::new();
    if let (Some(o), Some(b)) = (observed.latency_ms, composed.latency_ms)
        && o > b
    {
        out.push(Violation {
            property: "latency_ms".into(),
            bound: b,
            observed: o,
            detail: format!("took {o} ms, guaranteed at most {b} ms"),
        });
    }
    if let (Some(o), Some(b)) = (observed.accuracy, composed.accuracy)
        && o < b
    {
        out.push(Violation {
            property: "accuracy".into(),
            bound: b,
            observed: o,
            detail: format!("reported accuracy {o}, guaranteed at least {b}"),
        });
    }
    if let Some(o) = observed.cost {
        let b = composed.cost;
        if o > b * (1.0 + COST_TOLERANCE) + f64::EPSILON {
            out.push(Violation {
                property: "cost".into(),
                bound: b,
                observed: o,
                detail: format!("cost {o}, estimated at most {b}"),
            });
        }
    }
    if observed.deterministic == Some(false) && composed.determinism {
        out.push(Violation {
            property: "determinism".into(),
            bound: 1.0,
            observed: 0.0,
            detail: "repeated call gave a different answer from a deterministic service".into(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use caio_contracts::model::DataLocality;
    use std::sync::Arc;

    fn composed() -> ComposedGuarantees {
        ComposedGuarantees {
            services: vec![Arc::from("a")],
            accuracy: Some(0.9),
            latency_ms: Some(100.0),
            cost: 0.002,
            determinism: true,
            data_locality: DataLocality::Local,
            encryption: true,
        }
    }

    #[test]
    fn kept_guarantees_give_no_violation() {
        let o = Observed {
            latency_ms: Some(80.0),
            accuracy: Some(0.95),
            cost: Some(0.002),
            deterministic: Some(true),
        };
        assert!(enforce(&o, &composed()).is_empty());
    }

    #[test]
    fn each_broken_guarantee_is_reported() {
        let o = Observed {
            latency_ms: Some(101.0),
            accuracy: Some(0.5),
            cost: Some(0.01),
            deterministic: Some(false),
        };
        let v: Vec<_> = enforce(&o, &composed())
            .into_iter()
            .map(|v| v.property)
            .collect();
        assert_eq!(v, ["latency_ms", "accuracy", "cost", "determinism"]);
    }

    #[test]
    fn unobserved_or_unbounded_properties_are_not_checked() {
        let mut c = composed();
        c.latency_ms = None;
        let o = Observed {
            latency_ms: Some(1e9),
            ..Default::default()
        };
        assert!(enforce(&o, &c).is_empty());
    }
}
