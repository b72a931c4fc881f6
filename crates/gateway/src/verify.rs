//! Offline verification of a recorded decision.
//!
//! `verify` checks, in order: the decision's integrity (its id and request digest match its
//! content), that the contracts and policies given are the ones it was made with (their content
//! addresses match the recorded registry and policy versions), and then recomputes every step of
//! the pipeline from the recorded request, principal and history and compares the result with the
//! record, section by section in pipeline order, reporting the first disagreement with its path.

use caio_calculus::{History, ServiceHistory};
use caio_contracts::ServiceContract;
use caio_contracts::decision::Decision;
use caio_contracts::policy::PolicySet;
use caio_registry::Snapshot;
use serde_json::Value;

use crate::pipeline::{Replay, RouteContext, is_redacted, route_inner};
use crate::prepared::PreparedServices;

/// A verified decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Its id.
    pub decision_id: String,
    /// The chosen service.
    pub service_id: String,
    /// How many predicates were recomputed (checks, rules, security checks, trait constraints,
    /// ranking entries and rejections).
    pub predicates: usize,
}

/// The first point where a recorded decision and its recomputation differ.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{step}: {message}")]
pub struct Disagreement {
    /// The pipeline step (`integrity`, `registry`, `policies`, `match`, `rules`, `security`,
    /// `traits`, `optimize`, `control`, `compose`, `decision`).
    pub step: &'static str,
    /// JSON path inside the decision.
    pub path: String,
    /// What differs.
    pub message: String,
}

fn disagree(
    step: &'static str,
    path: impl Into<String>,
    message: impl Into<String>,
) -> Disagreement {
    Disagreement {
        step,
        path: path.into(),
        message: message.into(),
    }
}

/// Relative tolerance for floating-point comparisons (recomputation on another CPU may differ in
/// the last bits of transcendental functions).
const TOLERANCE: f64 = 1e-9;

/// Verifies a decision against the contracts and policies it claims to have used.
pub fn verify(
    decision: &Decision,
    contracts: Vec<ServiceContract>,
    policies: &PolicySet,
) -> Result<Verified, Disagreement> {
    caio_trace::check_integrity(decision)
        .map_err(|e| disagree("integrity", "/decision_id", e.to_string()))?;

    let entries = contracts
        .into_iter()
        .map(|c| caio_registry::Entry::new(c).map(std::sync::Arc::new))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| disagree("registry", "/registry_version", e.to_string()))?;
    let snapshot = Snapshot::build(entries)
        .map_err(|e| disagree("registry", "/registry_version", e.to_string()))?;
    if snapshot.version() != decision.registry_version {
        return Err(disagree(
            "registry",
            "/registry_version",
            format!(
                "the contracts given hash to {}, the decision was made against {}",
                snapshot.version(),
                decision.registry_version
            ),
        ));
    }
    let compiled = caio_rules::compile_recorded(policies).map_err(|errors| {
        let first = errors.first().map(ToString::to_string).unwrap_or_default();
        disagree(
            "policies",
            "/policy_version",
            format!("the policies do not compile: {first}"),
        )
    })?;
    if compiled.version != decision.policy_version {
        return Err(disagree(
            "policies",
            "/policy_version",
            format!(
                "the policies given hash to {}, the decision applied {}",
                compiled.version, decision.policy_version
            ),
        ));
    }

    let history: History = decision
        .proof
        .optimize
        .history
        .iter()
        .map(|(id, h)| {
            (
                id.clone(),
                ServiceHistory {
                    success_rate: h.success_rate,
                    ewma_latency_ms: h.ewma_latency_ms,
                    samples: h.samples,
                    circuit_open: h.circuit_open,
                },
            )
        })
        .collect();
    let replay = is_redacted(&decision.request.payload).then(|| Replay {
        pii: decision.proof.security.pii.clone(),
        input_tokens: decision.proof.matching.input_tokens,
        input_tokens_source: decision.proof.matching.input_tokens_source.clone(),
    });
    let prepared = PreparedServices::build(&snapshot, &compiled, None);
    let ctx = RouteContext {
        snapshot: &snapshot,
        services: &prepared,
        policies: &compiled,
        history: &history,
    };
    let recomputed = route_inner(
        &ctx,
        &decision.request,
        &decision.principal,
        replay.as_ref(),
    )
    .map_err(|e| {
        disagree(
            "decision",
            "/service_id",
            format!(
                "the decision chose `{}` but recomputation finds no route: {e}",
                decision.service_id
            ),
        )
    })?
    .into_decision();

    let recorded =
        serde_json::to_value(decision).map_err(|e| disagree("decision", "", e.to_string()))?;
    let again =
        serde_json::to_value(&recomputed).map_err(|e| disagree("decision", "", e.to_string()))?;
    let sections: [(&'static str, &str); 13] = [
        ("match", "/request_digest"),
        ("match", "/proof/matching"),
        ("rules", "/proof/rules"),
        ("security", "/proof/security"),
        ("traits", "/proof/traits"),
        ("decision", "/rejected"),
        ("optimize", "/ranking"),
        ("optimize", "/proof/optimize"),
        ("optimize", "/service_id"),
        ("optimize", "/score"),
        ("control", "/control_signal"),
        ("compose", "/guarantees"),
        ("decision", "/decision_id"),
    ];
    for (step, pointer) in sections {
        let a = recorded.pointer(pointer).unwrap_or(&Value::Null);
        let b = again.pointer(pointer).unwrap_or(&Value::Null);
        if let Some((path, msg)) = first_difference(a, b, pointer.to_owned()) {
            return Err(disagree(step, path, msg));
        }
    }

    let p = &decision.proof;
    let predicates = p.matching.checks.len()
        + p.rules.outcomes.len()
        + 5
        + p.traits.constraints.len()
        + decision.ranking.len()
        + decision.rejected.len();
    Ok(Verified {
        decision_id: decision.decision_id.clone(),
        service_id: decision.service_id.to_string(),
        predicates,
    })
}

fn numbers_agree(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= TOLERANCE * a.abs().max(b.abs()).max(1.0)
}

/// The first JSON path where `recorded` and `recomputed` differ, with a description.
fn first_difference(
    recorded: &Value,
    recomputed: &Value,
    path: String,
) -> Option<(String, String)> {
    match (recorded, recomputed) {
        (Value::Number(a), Value::Number(b)) => {
            let (x, y) = (
                a.as_f64().unwrap_or(f64::NAN),
                b.as_f64().unwrap_or(f64::NAN),
            );
            (!numbers_agree(x, y)).then(|| (path, format!("recorded {a}, recomputed {b}")))
        }
        (Value::Object(a), Value::Object(b)) => {
            for (k, va) in a {
                let child = format!("{path}/{k}");
                match b.get(k) {
                    Some(vb) => {
                        if let Some(d) = first_difference(va, vb, child) {
                            return Some(d);
                        }
                    }
                    None => {
                        return Some((
                            child,
                            format!("recorded {va}, recomputation has no such field"),
                        ));
                    }
                }
            }
            b.keys().find(|k| !a.contains_key(*k)).map(|k| {
                (
                    format!("{path}/{k}"),
                    format!("missing from the record; recomputed {}", b[k]),
                )
            })
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (va, vb)) in a.iter().zip(b).enumerate() {
                if let Some(d) = first_difference(va, vb, format!("{path}/{i}")) {
                    return Some(d);
                }
            }
            (a.len() != b.len()).then(|| {
                (
                    path,
                    format!("recorded {} entries, recomputed {}", a.len(), b.len()),
                )
            })
        }
        (a, b) => (a != b).then(|| (path, format!("recorded {a}, recomputed {b}"))),
    }
}
