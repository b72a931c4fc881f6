//! Chains: several capabilities in a row (speech to text, then translation, then summary), each
//! stage routed like a request of its own, the stages' guarantees composed (lowest accuracy,
//! summed latency and cost, weakest data locality, encryption and determinism only if every
//! stage has them) and checked against the chain's bounds before anything is called. Execution
//! then runs stage by stage, each stage's output becoming the next stage's payload.
//!
//! Stages after the first are routed on their own request's payload, or on the chain's input
//! when they carry none: the real input (the previous output) does not exist before execution.
//! Their PII scan and token estimate are therefore estimates; each stage still runs with
//! retries, fallbacks and guarantee enforcement like a single execution.

use std::time::{Duration, Instant};

use caio_contracts::decision::{ComposedGuarantees, Decision};
use caio_contracts::model::DataLocality;
use caio_contracts::request::{Principal, RouteRequest};
use std::sync::Arc;

use caio_guarantees::{Observed, compose_chain, compose_one, enforce};
use caio_registry::Snapshot;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    ExecuteOptions, Execution, ExecutionError, ExecutionStatus, Gateway, ServiceViolation, ms,
};
use crate::error::{NoRoute, RouteError};
use crate::router::Router;

/// Most stages in one chain.
pub const MAX_STAGES: usize = 8;

/// Bounds on the composed guarantees of a chain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainBounds {
    /// The summed latency bounds may not exceed this (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// The lowest accuracy may not fall below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// The summed estimated cost may not exceed this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
    /// The weakest data locality allowed (`local` < `on_device` < `region` < `external`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_locality: Option<DataLocality>,
}

/// One bound the composition breaks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BrokenBound {
    /// `latency_ms`, `accuracy`, `cost`, `data_locality`.
    pub property: String,
    /// Explanation with both values.
    pub detail: String,
}

/// Why a chain was not run.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The emergency stop is on.
    #[error("execution is stopped by the emergency stop")]
    Stopped,
    /// Fewer than 2 or more than [`MAX_STAGES`] stages.
    #[error("a chain has 2 to {MAX_STAGES} stages, not {0}")]
    Length(usize),
    /// A stage has no feasible service.
    #[error("stage {stage} has no feasible service")]
    NoRoute {
        /// 0-based stage.
        stage: usize,
        /// Why.
        no: Box<NoRoute>,
    },
    /// The composition breaks the chain's bounds; nothing was called.
    #[error("the chain's composed guarantees break its bounds")]
    Infeasible {
        /// The decisions made (each is recorded).
        decisions: Vec<Decision>,
        /// The composition.
        composed: Box<ComposedGuarantees>,
        /// The broken bounds.
        broken: Vec<BrokenBound>,
    },
    /// Routing failed.
    #[error("{0}")]
    Internal(String),
}

/// A planned chain: one decision per stage and their composition.
#[derive(Debug, Clone)]
pub struct ChainPlan {
    /// The stages' decisions, in order.
    pub decisions: Vec<Decision>,
    /// Their composed guarantees.
    pub composed: ComposedGuarantees,
    /// The bounds the composition was checked against (fallbacks must keep them too).
    pub bounds: ChainBounds,
}

/// One executed stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRun {
    /// The stage's decision id.
    pub decision_id: String,
    /// Its execution.
    pub execution: Execution,
}

/// What running a chain did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainRun {
    /// `succeeded` when every stage answered, `failed` at the first stage that did not,
    /// `dry_run`.
    pub status: ExecutionStatus,
    /// The composed guarantees the chain was checked against.
    pub composed: ComposedGuarantees,
    /// The stages run (a failed chain stops at the failing stage).
    pub stages: Vec<StageRun>,
    /// The last stage's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// Wall-clock time of the whole chain.
    pub latency_ms: f64,
    /// Composed guarantees the chain as a whole broke (its total latency against the summed
    /// bound), beside each stage's own violations in its execution.
    pub violations: Vec<ServiceViolation>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ExecutionError>,
}

fn locality_rank(l: DataLocality) -> u8 {
    match l {
        DataLocality::Local => 0,
        DataLocality::OnDevice => 1,
        DataLocality::Region => 2,
        DataLocality::External => 3,
    }
}

/// The bounds `composed` breaks.
pub fn check_bounds(composed: &ComposedGuarantees, bounds: &ChainBounds) -> Vec<BrokenBound> {
    let mut out = Vec::new();
    if let Some(max) = bounds.latency_ms {
        match composed.latency_ms {
            Some(l) if l <= max => {}
            Some(l) => out.push(BrokenBound {
                property: "latency_ms".into(),
                detail: format!("the stages' latency bounds sum to {l} ms, more than {max} ms"),
            }),
            None => out.push(BrokenBound {
                property: "latency_ms".into(),
                detail: format!(
                    "a stage's service guarantees no latency, so the chain cannot promise {max} ms"
                ),
            }),
        }
    }
    if let Some(min) = bounds.accuracy {
        match composed.accuracy {
            Some(a) if a >= min => {}
            Some(a) => out.push(BrokenBound {
                property: "accuracy".into(),
                detail: format!("the weakest stage guarantees accuracy {a}, less than {min}"),
            }),
            None => out.push(BrokenBound {
                property: "accuracy".into(),
                detail: format!(
                    "a stage's service guarantees no accuracy, so the chain cannot promise {min}"
                ),
            }),
        }
    }
    if let Some(max) = bounds.cost
        && composed.cost > max
    {
        out.push(BrokenBound {
            property: "cost".into(),
            detail: format!(
                "the stages' estimated costs sum to {}, more than {max}",
                composed.cost
            ),
        });
    }
    if let Some(weakest) = bounds.data_locality
        && locality_rank(composed.data_locality) > locality_rank(weakest)
    {
        out.push(BrokenBound {
            property: "data_locality".into(),
            detail: format!(
                "a stage sends data {:?}, beyond the {:?} allowed",
                composed.data_locality, weakest
            ),
        });
    }
    out
}

impl Gateway {
    /// Routes every stage and checks the composition against `bounds`. Nothing is called.
    pub fn plan_chain(
        &self,
        router: &Router,
        stages: &[RouteRequest],
        principal: &Principal,
        bounds: &ChainBounds,
    ) -> Result<ChainPlan, ChainError> {
        if self.stopped() {
            return Err(ChainError::Stopped);
        }
        if !(2..=MAX_STAGES).contains(&stages.len()) {
            return Err(ChainError::Length(stages.len()));
        }
        self.health.refresh();
        let mut decisions = Vec::with_capacity(stages.len());
        for (stage, request) in stages.iter().enumerate() {
            let d = router.route(request, principal).map_err(|e| match e {
                RouteError::NoMatchingService(no) => ChainError::NoRoute { stage, no },
                RouteError::Internal(m) => ChainError::Internal(m),
            })?;
            decisions.push(d);
        }
        let parts: Vec<ComposedGuarantees> =
            decisions.iter().map(|d| d.guarantees.clone()).collect();
        let composed = compose_chain(&parts)
            .ok_or_else(|| ChainError::Internal("an empty chain composes to nothing".into()))?;
        let broken = check_bounds(&composed, bounds);
        if !broken.is_empty() {
            return Err(ChainError::Infeasible {
                decisions,
                composed: Box::new(composed),
                broken,
            });
        }
        Ok(ChainPlan {
            decisions,
            composed,
            bounds: *bounds,
        })
    }

    /// Runs a planned chain: stage by stage, each output the next payload.
    pub async fn run_chain(
        &self,
        snapshot: &Snapshot,
        plan: &ChainPlan,
        stages: &[RouteRequest],
        options: &ExecuteOptions,
    ) -> ChainRun {
        let started = Instant::now();
        // A request may shorten the deadline, never lengthen it past the configured one.
        let budget = options
            .deadline_ms
            .map_or(self.config.default_deadline, |ms| {
                Duration::from_millis(ms).min(self.config.default_deadline)
            });
        let deadline = started + budget;
        let mut run = ChainRun {
            status: ExecutionStatus::Succeeded,
            composed: plan.composed.clone(),
            stages: Vec::new(),
            output: None,
            latency_ms: 0.0,
            violations: Vec::new(),
            error: None,
        };
        let mut input: Option<Value> = None;
        for (i, (decision, request)) in plan.decisions.iter().zip(stages).enumerate() {
            let mut request = request.clone();
            if let Some(prev) = input.take() {
                request.payload = prev;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let stage_options = ExecuteOptions {
                deadline_ms: Some(u64::try_from(left.as_millis()).unwrap_or(u64::MAX).max(1)),
                ..options.clone()
            };
            let stage_decision = match self.stage_candidates(snapshot, plan, i, &request.payload) {
                Ok(d) => d,
                Err(reason) => {
                    let mut ex = Execution::failed();
                    ex.error = Some(ExecutionError {
                        code: "chain_constraint".into(),
                        message: reason,
                    });
                    ex.warnings
                        .push("no candidate of this stage keeps the chain's bounds".into());
                    run.stages.push(StageRun {
                        decision_id: decision.decision_id.clone(),
                        execution: ex,
                    });
                    run.status = ExecutionStatus::Failed;
                    run.error = run.stages[i]
                        .execution
                        .error
                        .clone()
                        .map(|e| ExecutionError {
                            code: e.code,
                            message: format!(
                                "stage {} ({}): {}",
                                i + 1,
                                decision.service_id,
                                e.message
                            ),
                        });
                    run.latency_ms = ms(started.elapsed());
                    return run;
                }
            };
            let ex = self
                .run(snapshot, &stage_decision, &request, &stage_options)
                .await;
            let status = ex.status;
            let output = ex.output.clone();
            run.stages.push(StageRun {
                decision_id: decision.decision_id.clone(),
                execution: ex,
            });
            match status {
                ExecutionStatus::Succeeded => {
                    input = output;
                }
                ExecutionStatus::DryRun => {
                    run.status = ExecutionStatus::DryRun;
                    // A dry run cannot feed the next stage; later stages are prepared on the
                    // chain's input.
                    input = None;
                }
                ExecutionStatus::Failed => {
                    run.status = ExecutionStatus::Failed;
                    let cause = run.stages[i].execution.error.clone();
                    run.error = Some(ExecutionError {
                        code: cause
                            .as_ref()
                            .map_or_else(|| "stage_failed".to_owned(), |e| e.code.clone()),
                        message: format!(
                            "stage {} ({}) failed: {}",
                            i + 1,
                            decision.service_id,
                            cause.map_or_else(|| "no candidate answered".to_owned(), |e| e.message)
                        ),
                    });
                    run.latency_ms = ms(started.elapsed());
                    return run;
                }
            }
        }
        run.output = input;
        run.latency_ms = ms(started.elapsed());
        if run.status == ExecutionStatus::Succeeded {
            let observed = Observed {
                latency_ms: Some(run.latency_ms),
                ..Observed::default()
            };
            run.violations
                .extend(
                    enforce(&observed, &run.composed)
                        .into_iter()
                        .map(|v| ServiceViolation {
                            service_id: "chain".into(),
                            property: v.property,
                            bound: v.bound,
                            observed: v.observed,
                            detail: v.detail,
                        }),
                );
        }
        run
    }
}

impl Gateway {
    /// The candidates stage `i` may run: those of its ranking that keep the chain within its
    /// bounds when they stand in for the stage's chosen service, and, when the stage's actual
    /// input holds personal data (found only now: the previous stage produced it), those the
    /// security step admits for sensitive data. The decision comes back with that ranking and,
    /// when its first candidate is not the chosen one, that candidate's own guarantees.
    fn stage_candidates(
        &self,
        snapshot: &Snapshot,
        plan: &ChainPlan,
        i: usize,
        input: &Value,
    ) -> Result<Decision, String> {
        let decision = &plan.decisions[i];
        let sensitive = i > 0 && !caio_security::scan(input).is_empty();
        let mut allowed = Vec::new();
        for c in &decision.ranking {
            let Some(entry) = snapshot.get(&c.service_id) else {
                continue;
            };
            let spec = &entry.contract.service;
            if sensitive && caio_security::deny(&decision.principal, spec, true).is_some() {
                continue;
            }
            let own = compose_one(Arc::clone(&c.service_id), spec, c.terms.estimated_cost);
            let parts: Vec<ComposedGuarantees> = plan
                .decisions
                .iter()
                .enumerate()
                .map(|(j, d)| {
                    if j == i {
                        own.clone()
                    } else {
                        d.guarantees.clone()
                    }
                })
                .collect();
            let fits = compose_chain(&parts)
                .is_some_and(|all| check_bounds(&all, &plan.bounds).is_empty());
            if fits {
                allowed.push((c.clone(), own));
            }
        }
        let Some((first, first_guarantees)) = allowed.first().cloned() else {
            return Err(if sensitive {
                "the stage's input holds personal data and no candidate may receive it within the chain's bounds".into()
            } else {
                "no candidate keeps the chain within its bounds".into()
            });
        };
        let mut d = decision.clone();
        if first.service_id != decision.service_id {
            d.guarantees = first_guarantees;
        }
        d.ranking = allowed.into_iter().map(|(c, _)| c).collect();
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn composed(
        lat: Option<f64>,
        acc: Option<f64>,
        cost: f64,
        loc: DataLocality,
    ) -> ComposedGuarantees {
        ComposedGuarantees {
            services: vec![Arc::from("a"), Arc::from("b")],
            accuracy: acc,
            latency_ms: lat,
            cost,
            determinism: false,
            data_locality: loc,
            encryption: true,
        }
    }

    #[test]
    fn bounds_are_checked_property_by_property() {
        let c = composed(Some(300.0), Some(0.9), 0.02, DataLocality::Region);
        assert!(check_bounds(&c, &ChainBounds::default()).is_empty());
        let fits = ChainBounds {
            latency_ms: Some(300.0),
            accuracy: Some(0.9),
            cost: Some(0.02),
            data_locality: Some(DataLocality::Region),
        };
        assert!(check_bounds(&c, &fits).is_empty());
        let tight = ChainBounds {
            latency_ms: Some(299.0),
            accuracy: Some(0.95),
            cost: Some(0.01),
            data_locality: Some(DataLocality::Local),
        };
        let props: Vec<_> = check_bounds(&c, &tight)
            .into_iter()
            .map(|b| b.property)
            .collect();
        assert_eq!(props, ["latency_ms", "accuracy", "cost", "data_locality"]);
        // A stage without a latency or accuracy guarantee cannot meet a bound on it.
        let open = composed(None, None, 0.0, DataLocality::Local);
        assert_eq!(check_bounds(&open, &fits).len(), 2);
    }
}
