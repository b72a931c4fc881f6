//! Execution: call the chosen service, survive its failures, check its guarantees.
//!
//! [`Gateway::execute`] routes a request and runs the decision; [`Gateway::run`] runs a decision
//! made earlier. A run walks the decision's ranking, best first: the chosen service, then up to
//! `max_fallbacks` next feasible candidates. Each service gets up to `max_attempts` attempts,
//! retried with exponential backoff and jitter only for retryable failures (connect errors,
//! resets before a response, 429 honouring `Retry-After`, 502, 503, 504); every attempt's time is
//! the contract's `timeout_ms` cut to what is left of the request's deadline. A service whose
//! circuit breaker refuses the call is skipped. After an answer, the measured latency and the
//! service-reported metrics are checked against the service's guarantees; a violation is
//! recorded, lowers the service's reliability and, by policy, either comes back as a warning
//! with the result or fails over to the next candidate.

pub mod adapter;
pub mod chain;
pub mod client;
pub mod guard;
pub mod health;
pub mod probe;
pub mod stream;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use caio_contracts::decision::Decision;
use caio_contracts::request::{Principal, RouteRequest};
use caio_guarantees::{Observed, compose_one, enforce};
use caio_registry::Snapshot;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{NoRoute, RouteError};
use crate::router::Router;
use adapter::{CallContext, Reply};
use client::{CallError, ClientConfig, UpstreamClient};
use health::{Admission, BreakerConfig, CallResult, HealthBoard};

/// What to do when a service answers but breaks a guarantee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolationPolicy {
    /// Return the answer with a warning.
    #[default]
    Warn,
    /// Discard the answer and try the next candidate (the answer is returned, with a warning,
    /// only when no candidate is left).
    Failover,
}

/// Where upstream credentials come from: the name a contract's `credential_env` gives, to the
/// secret. The default reads the process environment; an embedding program can read its own
/// secret store instead.
#[derive(Clone)]
pub struct Credentials(Arc<Lookup>);

type Lookup = dyn Fn(&str) -> Option<String> + Send + Sync;

impl Credentials {
    /// Credentials from `lookup`.
    pub fn new(lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Credentials {
        Credentials(Arc::new(lookup))
    }

    /// The process environment.
    pub fn environment() -> Credentials {
        Credentials::new(|name| std::env::var(name).ok())
    }

    /// The secret named `name`, if set and not empty.
    pub fn get(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|v| !v.is_empty())
    }
}

impl Default for Credentials {
    fn default() -> Credentials {
        Credentials::environment()
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(..)")
    }
}

/// Gateway settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The outbound client.
    pub client: ClientConfig,
    /// Circuit breakers and history.
    pub breaker: BreakerConfig,
    /// Attempts per service (1 = no retry).
    pub max_attempts: u32,
    /// Candidates tried after the chosen one.
    pub max_fallbacks: u32,
    /// First retry delay; doubles per attempt.
    pub backoff_base: Duration,
    /// Largest retry delay.
    pub backoff_max: Duration,
    /// Longest `Retry-After` honoured; a longer one moves on to the next candidate.
    pub max_retry_after: Duration,
    /// A request's deadline when it names none.
    pub default_deadline: Duration,
    /// The violation policy when a request names none.
    pub on_violation: ViolationPolicy,
    /// Upstream credentials.
    pub credentials: Credentials,
}

impl Default for GatewayConfig {
    fn default() -> GatewayConfig {
        GatewayConfig {
            client: ClientConfig::default(),
            breaker: BreakerConfig::default(),
            max_attempts: 3,
            max_fallbacks: 2,
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            max_retry_after: Duration::from_secs(10),
            default_deadline: Duration::from_secs(30),
            on_violation: ViolationPolicy::Warn,
            credentials: Credentials::environment(),
        }
    }
}

/// Per-request choices.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecuteOptions {
    /// Time for the whole execution (all attempts and fallbacks), in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// Do everything but the upstream call.
    #[serde(default)]
    pub dry_run: bool,
    /// Override of the gateway's violation policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_violation: Option<ViolationPolicy>,
}

/// How an execution ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStatus {
    /// A service answered.
    Succeeded,
    /// Every candidate failed, or the deadline passed.
    Failed,
    /// Dry run: the call was prepared, not sent.
    DryRun,
}

/// One attempt on one service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// The service.
    pub service_id: String,
    /// 1-based attempt number on that service.
    pub attempt: u32,
    /// `ok` or the failure code (`timeout`, `upstream_5xx`, `connect_error`, ...).
    pub outcome: String,
    /// HTTP status, when one arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Time the attempt took.
    pub latency_ms: f64,
    /// What went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Wait before the next attempt on this service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<u64>,
    /// Made as the single trial call of a half-open circuit breaker: its outcome closes the
    /// circuit or opens it again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub trial: bool,
}

/// Moving on from one candidate to the next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fallback {
    /// The candidate given up.
    pub from: String,
    /// The next one.
    pub to: String,
    /// Why (`circuit_open`, `timeout`, `upstream_5xx`, `guarantee_violated`, ...).
    pub reason: String,
}

/// A broken guarantee of one service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceViolation {
    /// The service.
    pub service_id: String,
    /// `latency_ms`, `accuracy`, `cost`, `determinism`.
    pub property: String,
    /// The guaranteed bound.
    pub bound: f64,
    /// What was observed.
    pub observed: f64,
    /// Explanation.
    pub detail: String,
}

/// The error of a failed execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionError {
    /// Stable code.
    pub code: String,
    /// Explanation.
    pub message: String,
}

/// What running a decision did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    /// How it ended.
    pub status: ExecutionStatus,
    /// The service that answered (or, in a dry run, would be called).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_id: Option<String>,
    /// The service's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// Every attempt, in order.
    pub attempts: Vec<Attempt>,
    /// Every move to the next candidate, in order.
    pub fallbacks: Vec<Fallback>,
    /// Wall-clock time of the whole execution.
    pub latency_ms: f64,
    /// Guarantees broken by the services that answered.
    pub violations: Vec<ServiceViolation>,
    /// Things the caller should know (a violation kept by policy, a dry run's request).
    pub warnings: Vec<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ExecutionError>,
}

impl Execution {
    /// An execution with nothing done yet (status `failed` until something answers).
    pub(crate) fn failed() -> Execution {
        Execution {
            status: ExecutionStatus::Failed,
            service_id: None,
            output: None,
            attempts: Vec::new(),
            fallbacks: Vec::new(),
            latency_ms: 0.0,
            violations: Vec::new(),
            warnings: Vec::new(),
            error: None,
        }
    }
}

/// Records a move from candidate `from` to the next one, when there is a next one.
pub(crate) fn fallback(ex: &mut Execution, from: &str, next: Option<&str>, reason: &str) {
    if let Some(to) = next {
        ex.fallbacks.push(Fallback {
            from: from.to_owned(),
            to: to.to_owned(),
            reason: reason.to_owned(),
        });
    }
}

/// Why `execute` produced no execution.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    /// The emergency stop is on.
    #[error("execution is stopped by the emergency stop")]
    Stopped,
    /// No service is feasible.
    #[error("no service satisfies the request")]
    NoRoute(Box<NoRoute>),
    /// Routing failed.
    #[error("{0}")]
    Internal(String),
}

/// The executor: one pooled client, the health board, the emergency stop.
#[derive(Debug)]
pub struct Gateway {
    client: UpstreamClient,
    health: Arc<HealthBoard>,
    config: GatewayConfig,
    stopped: AtomicBool,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn whole_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Releases a half-open trial whose call did not record an outcome (the request was dropped, the
/// deadline came first, the call could not be made). Releasing after an outcome was recorded is
/// harmless: recording already ended the trial.
struct Trial<'a> {
    health: &'a HealthBoard,
    service: &'a str,
    armed: bool,
}

impl Drop for Trial<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.health.cancel_trial(self.service);
        }
    }
}

enum ServiceOutcome {
    Answered { reply: Reply, latency: Duration },
    Failed(CallError),
    DeadlinePassed,
}

impl Gateway {
    /// A gateway with its own client and health board.
    pub fn new(config: GatewayConfig) -> Gateway {
        Gateway {
            client: UpstreamClient::new(config.client.clone()),
            health: Arc::new(HealthBoard::new(config.breaker)),
            config,
            stopped: AtomicBool::new(false),
        }
    }

    /// The health board (share its history with routers: [`Router::share_history`]).
    pub fn health(&self) -> &Arc<HealthBoard> {
        &self.health
    }

    /// The settings.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// The outbound client.
    pub fn client(&self) -> &UpstreamClient {
        &self.client
    }

    /// Turns the emergency stop on or off.
    pub fn set_stopped(&self, stopped: bool) {
        self.stopped.store(stopped, Ordering::SeqCst);
    }

    /// Whether the emergency stop is on.
    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Routes `request` with `router` and runs the decision.
    pub async fn execute(
        &self,
        router: &Router,
        request: &RouteRequest,
        principal: &Principal,
        options: &ExecuteOptions,
    ) -> Result<(Decision, Execution), ExecuteError> {
        if self.stopped() {
            return Err(ExecuteError::Stopped);
        }
        self.health.refresh();
        let snapshot = router.registry().snapshot();
        let decision = router.route(request, principal).map_err(|e| match e {
            RouteError::NoMatchingService(no) => ExecuteError::NoRoute(no),
            RouteError::Internal(m) => ExecuteError::Internal(m),
        })?;
        let execution = self.run(&snapshot, &decision, request, options).await;
        Ok((decision, execution))
    }

    /// Runs a decision: the chosen service, then the next candidates of its ranking.
    /// `request` is the request as received (its payload is what the service gets, even when the
    /// decision recorded it redacted).
    pub async fn run(
        &self,
        snapshot: &Snapshot,
        decision: &Decision,
        request: &RouteRequest,
        options: &ExecuteOptions,
    ) -> Execution {
        let started = Instant::now();
        // A request may shorten the deadline, never lengthen it past the configured one.
        let budget = options
            .deadline_ms
            .map_or(self.config.default_deadline, |ms| {
                Duration::from_millis(ms).min(self.config.default_deadline)
            });
        let deadline = started + budget;
        let policy = options.on_violation.unwrap_or(self.config.on_violation);
        let mut ex = Execution::failed();
        let limit = 1 + self.config.max_fallbacks as usize;
        let candidates: Vec<_> = decision.ranking.iter().take(limit).collect();
        let capability = request
            .requirements
            .capabilities
            .first()
            .map_or("", String::as_str);
        // An answer that broke a guarantee under the failover policy, kept in case no other
        // candidate answers.
        let mut kept: Option<(String, Value)> = None;
        let mut last_error: Option<(String, String)> = None;
        for (i, candidate) in candidates.iter().enumerate() {
            let id = candidate.service_id.as_ref();
            let next = candidates.get(i + 1).map(|c| c.service_id.to_string());
            let fall = |ex: &mut Execution, reason: &str| fallback(ex, id, next.as_deref(), reason);
            let Some(entry) = snapshot.get(id) else {
                last_error = Some(("service_gone".into(), format!("`{id}` left the registry")));
                fall(&mut ex, "service_gone");
                continue;
            };
            let api = &entry.contract.service.api;
            let credential = match self.credential(id, api) {
                Ok(c) => c,
                Err(e) => {
                    last_error = Some((e.code().into(), e.to_string()));
                    fall(&mut ex, e.code());
                    continue;
                }
            };
            if options.dry_run {
                let ctx = CallContext {
                    decision_id: &decision.decision_id,
                    service_id: id,
                    capability,
                    payload: &request.payload,
                    attempt_timeout: Duration::from_millis(api.timeout_ms).min(budget),
                    attempt: 1,
                    credential: credential.as_deref(),
                };
                match adapter::build(api, &ctx, false) {
                    Ok(out) => {
                        ex.status = ExecutionStatus::DryRun;
                        ex.service_id = Some(id.to_owned());
                        ex.warnings.push(format!(
                            "dry run: {} {} ({} adapter, {} bytes) was not sent",
                            out.method,
                            out.uri,
                            adapter::name(api.adapter),
                            out.body.len()
                        ));
                        ex.latency_ms = ms(started.elapsed());
                        return ex;
                    }
                    Err(e) => {
                        last_error = Some((e.code().into(), e.to_string()));
                        fall(&mut ex, e.code());
                        continue;
                    }
                }
            }
            let admission = self.health.admit(id);
            if admission == Admission::Refused {
                last_error = Some((
                    "circuit_open".into(),
                    format!("`{id}`'s circuit breaker is open"),
                ));
                fall(&mut ex, "circuit_open");
                continue;
            }
            // A half-open trial stays claimed until this candidate is done with; every way out
            // that did not record an outcome (deadline, configuration, refused address) releases
            // it when the guard drops at the end of the iteration.
            let _trial = Trial {
                health: &self.health,
                service: id,
                armed: admission == Admission::Trial,
            };
            let first_attempt = ex.attempts.len();
            let outcome = self
                .call_service(
                    id,
                    api,
                    decision,
                    capability,
                    &request.payload,
                    credential.as_deref(),
                    deadline,
                    &mut ex.attempts,
                )
                .await;
            if admission == Admission::Trial {
                for a in ex.attempts.iter_mut().skip(first_attempt) {
                    a.trial = true;
                }
            }
            match outcome {
                ServiceOutcome::Answered { reply, latency } => {
                    let composed = if i == 0 {
                        decision.guarantees.clone()
                    } else {
                        compose_one(
                            Arc::clone(&candidate.service_id),
                            &entry.contract.service,
                            candidate.terms.estimated_cost,
                        )
                    };
                    let observed = Observed {
                        latency_ms: Some(ms(latency)),
                        accuracy: reply.reported.accuracy,
                        cost: reply.reported.cost,
                        deterministic: None,
                    };
                    let broken = enforce(&observed, &composed);
                    let latency_ms = ms(latency);
                    if broken.is_empty() {
                        self.health.record(id, CallResult::Success { latency_ms });
                    } else {
                        self.health.record(id, CallResult::Violation { latency_ms });
                        for v in &broken {
                            tracing::warn!(service = id, property = %v.property, detail = %v.detail, "guarantee violated");
                        }
                        ex.violations
                            .extend(broken.into_iter().map(|v| ServiceViolation {
                                service_id: id.to_owned(),
                                property: v.property,
                                bound: v.bound,
                                observed: v.observed,
                                detail: v.detail,
                            }));
                        if policy == ViolationPolicy::Failover && next.is_some() {
                            if kept.is_none() {
                                kept = Some((id.to_owned(), reply.output));
                            }
                            last_error = Some((
                                "guarantee_violated".into(),
                                format!("`{id}` broke a guarantee"),
                            ));
                            fall(&mut ex, "guarantee_violated");
                            continue;
                        }
                        ex.warnings.push(format!(
                            "`{id}` answered but broke {} guarantee(s); see `violations`",
                            ex.violations.iter().filter(|v| v.service_id == id).count()
                        ));
                    }
                    ex.status = ExecutionStatus::Succeeded;
                    ex.service_id = Some(id.to_owned());
                    ex.output = Some(reply.output);
                    ex.latency_ms = ms(started.elapsed());
                    return ex;
                }
                ServiceOutcome::Failed(e) => {
                    last_error = Some((e.code().into(), format!("`{id}`: {e}")));
                    if e.is_caller_error() {
                        // The payload, not the service: the next candidate would refuse it too.
                        break;
                    }
                    fall(&mut ex, e.code());
                }
                ServiceOutcome::DeadlinePassed => {
                    last_error = Some((
                        "deadline_exceeded".into(),
                        format!("the {} ms deadline passed", whole_ms(budget)),
                    ));
                    break;
                }
            }
            if Instant::now() >= deadline {
                last_error = Some((
                    "deadline_exceeded".into(),
                    format!("the {} ms deadline passed", whole_ms(budget)),
                ));
                break;
            }
        }
        ex.latency_ms = ms(started.elapsed());
        if let Some((service, output)) = kept {
            ex.status = ExecutionStatus::Succeeded;
            ex.warnings.push(format!(
                "no candidate kept its guarantees; returning `{service}`'s answer, which broke them"
            ));
            ex.service_id = Some(service);
            ex.output = Some(output);
            return ex;
        }
        let (code, message) = last_error
            .unwrap_or_else(|| ("no_candidate".into(), "no candidate could be called".into()));
        ex.error = Some(ExecutionError { code, message });
        ex
    }

    /// The upstream credential a contract names, if it names one.
    pub(crate) fn credential(
        &self,
        id: &str,
        api: &caio_contracts::model::ApiSpec,
    ) -> Result<Option<String>, CallError> {
        let Some(var) = &api.credential_env else {
            return Ok(None);
        };
        match self.config.credentials.get(var) {
            Some(v) => Ok(Some(v)),
            None => {
                tracing::warn!(service = id, variable = %var, "upstream credential missing");
                Err(CallError::Config(format!(
                    "the credential variable `{var}` named by `{id}`'s contract is not set"
                )))
            }
        }
    }

    /// Attempts one service until it answers, fails for good, or the deadline comes.
    #[allow(clippy::too_many_arguments)]
    async fn call_service(
        &self,
        id: &str,
        api: &caio_contracts::model::ApiSpec,
        decision: &Decision,
        capability: &str,
        payload: &Value,
        credential: Option<&str>,
        deadline: Instant,
        attempts: &mut Vec<Attempt>,
    ) -> ServiceOutcome {
        let max = self.config.max_attempts.max(1);
        let mut n = 0;
        loop {
            n += 1;
            let now = Instant::now();
            let left = deadline.saturating_duration_since(now);
            if left.is_zero() {
                return ServiceOutcome::DeadlinePassed;
            }
            let timeout = Duration::from_millis(api.timeout_ms).min(left);
            let ctx = CallContext {
                decision_id: &decision.decision_id,
                service_id: id,
                capability,
                payload,
                attempt_timeout: timeout,
                attempt: n,
                credential,
            };
            let result = match adapter::build(api, &ctx, false) {
                Ok(out) => match self.client.send(out, timeout).await {
                    Ok(answer) => adapter::parse(api.adapter, &answer).map(|r| (r, answer.status)),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            let took = now.elapsed();
            match result {
                Ok((reply, status)) => {
                    attempts.push(Attempt {
                        service_id: id.to_owned(),
                        attempt: n,
                        outcome: "ok".into(),
                        status: Some(status.as_u16()),
                        latency_ms: ms(took),
                        error: None,
                        backoff_ms: None,
                        trial: false,
                    });
                    return ServiceOutcome::Answered {
                        reply,
                        latency: took,
                    };
                }
                Err(e) => {
                    if e.counts_against_service() {
                        self.health.record(id, CallResult::Failure);
                    }
                    let status = match &e {
                        CallError::Status { status, .. } => Some(*status),
                        _ => None,
                    };
                    let wait = if e.retryable() && n < max {
                        self.backoff(n, &e, deadline)
                    } else {
                        None
                    };
                    tracing::debug!(service = id, attempt = n, error = %e, "attempt failed");
                    attempts.push(Attempt {
                        service_id: id.to_owned(),
                        attempt: n,
                        outcome: e.code().into(),
                        status,
                        latency_ms: ms(took),
                        error: Some(e.to_string()),
                        backoff_ms: wait.map(whole_ms),
                        trial: false,
                    });
                    match wait {
                        Some(w) => tokio::time::sleep(w).await,
                        None => return ServiceOutcome::Failed(e),
                    }
                    // The breaker may have opened on this very failure.
                    if self.health.admit(id) == Admission::Refused {
                        return ServiceOutcome::Failed(e);
                    }
                }
            }
        }
    }

    /// The wait before attempt `n + 1`, or `None` when it would not fit before the deadline
    /// (or the service asks for longer than `max_retry_after`).
    fn backoff(&self, n: u32, e: &CallError, deadline: Instant) -> Option<Duration> {
        let wait = match e {
            CallError::Status {
                retry_after: Some(ra),
                ..
            } => {
                if *ra > self.config.max_retry_after {
                    return None;
                }
                *ra
            }
            _ => {
                let exp = self
                    .config
                    .backoff_base
                    .saturating_mul(1u32 << (n - 1).min(16))
                    .min(self.config.backoff_max);
                // "Equal jitter": half fixed, half random, so retries from many requests spread.
                exp / 2 + exp.mul_f64(rand::random::<f64>() / 2.0)
            }
        };
        (Instant::now() + wait < deadline).then_some(wait)
    }
}
