//! `/api/v1/execute` (route, call the chosen service with retries and fallbacks, check its
//! guarantees, record both) and the gateway's operations endpoints (health board, emergency
//! stop).

use std::sync::{Arc, RwLock};

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use caio_contracts as parse;
use caio_contracts::Format;
use caio_contracts::canonical;
use caio_contracts::decision::Decision;
use caio_contracts::request::RouteRequest;
use caio_gateway::exec::chain::{ChainBounds, ChainError, ChainRun, MAX_STAGES};
use caio_gateway::{ExecuteOptions, Execution, ExecutionStatus, RouteError};
use caio_security::approval::ApprovalError;
use caio_security::{Action, Identity};
use caio_trace::{Outcome, TraceBody, TraceRecord};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::auth::{Caller, require};
use crate::error::{ApiError, ApiResult};
use crate::extract;
use crate::frame::RequestId;
use crate::handlers::routing::{count_rejections, outcome, persist, record_encoded, rfc3339};
use crate::handlers::services::audit;
use crate::idempotency::{Begin, Claim, Stored};
use crate::state::AppState;

/// The body of POST /api/v1/execute: the routing request and how to execute it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecuteBody {
    /// One request; or `chain`.
    #[serde(default)]
    request: Option<Value>,
    /// Several capabilities in a row.
    #[serde(default)]
    chain: Option<ChainBody>,
    /// A token from `POST /api/v1/route?approve=true`: run exactly that decision.
    #[serde(default)]
    approval_token: Option<String>,
    #[serde(flatten)]
    options: ExecuteOptions,
}

/// `{"stages": [<route request>, ...], "bounds": {...}}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChainBody {
    stages: Vec<Value>,
    #[serde(default)]
    bounds: ChainBounds,
}

/// What an executed decision's trace record holds, and what the endpoint answers.
#[derive(Debug, Serialize)]
struct Executed<'a> {
    decision: &'a caio_contracts::decision::Decision,
    execution: &'a Execution,
}

/// One request, or a chain of them.
enum Job {
    Single(Box<RouteRequest>),
    Chain(Vec<RouteRequest>, ChainBounds),
}

struct ExecuteInput {
    request: Job,
    options: ExecuteOptions,
    approval_token: Option<String>,
    /// The body as received, for the idempotency fingerprint.
    raw: String,
}

async fn read_body(state: &AppState, headers: &HeaderMap, body: Body) -> ApiResult<ExecuteInput> {
    let text = extract::text(headers, body, state.config.limits.body_bytes).await?;
    let syntax = match text.format {
        Format::Yaml => parse::yaml::Syntax::Yaml,
        Format::Json => parse::yaml::Syntax::Json,
        Format::Auto if text.text.trim_start().starts_with('{') => parse::yaml::Syntax::Json,
        Format::Auto => parse::yaml::Syntax::Yaml,
    };
    let value = parse::yaml::to_json(&text.text, syntax, 64).map_err(|problems| {
        ApiError::invalid(
            "INVALID_REQUEST",
            &parse::ValidationReport {
                source: "body".into(),
                kind: "execute request",
                problems,
            },
        )
    })?;
    let envelope: ExecuteBody = serde_json::from_value(value).map_err(|e| {
        ApiError::new(
            "INVALID_REQUEST",
            format!(
                "the execute body is `{{\"request\": {{...}}, \"approval_token\"?, \"dry_run\"?, \"deadline_ms\"?, \"on_violation\"?}}`: {e}"
            ),
        )
    })?;
    if envelope.options.deadline_ms == Some(0) {
        return Err(ApiError::new(
            "INVALID_REQUEST",
            "`deadline_ms` must be at least 1 (it can only shorten gateway.deadline_ms)",
        ));
    }
    // The envelope is parsed already: its requests are checked as values, not printed and
    // parsed again.
    let parse_one = |source: &str, v: Value| {
        parse::parse_request_value(source, v).map_err(|r| {
            outcome(state, "invalid");
            ApiError::invalid("INVALID_REQUEST", &r)
        })
    };
    let request = match (envelope.request, envelope.chain) {
        (Some(r), None) => Job::Single(Box::new(parse_one("body/request", r)?)),
        (None, Some(chain)) => {
            if !(2..=MAX_STAGES).contains(&chain.stages.len()) {
                return Err(ApiError::new(
                    "INVALID_REQUEST",
                    format!(
                        "a chain has 2 to {MAX_STAGES} stages, not {}",
                        chain.stages.len()
                    ),
                ));
            }
            if envelope.approval_token.is_some() {
                return Err(ApiError::new(
                    "INVALID_REQUEST",
                    "approval tokens name one decision; a chain cannot carry one",
                ));
            }
            let stages = chain
                .stages
                .into_iter()
                .enumerate()
                .map(|(i, v)| parse_one(&format!("body/chain/stages/{i}"), v))
                .collect::<ApiResult<Vec<_>>>()?;
            Job::Chain(stages, chain.bounds)
        }
        _ => {
            return Err(ApiError::new(
                "INVALID_REQUEST",
                "the execute body needs exactly one of `request` and `chain`",
            ));
        }
    };
    Ok(ExecuteInput {
        request,
        options: envelope.options,
        approval_token: envelope.approval_token,
        raw: text.text,
    })
}

/// The recorded decision an approval token names, after every check the token implies.
async fn approved_decision(
    state: &AppState,
    caller: &Identity,
    token: &str,
    request: &RouteRequest,
    dry_run: bool,
) -> ApiResult<Decision> {
    let now = caio_trace::now_ms();
    let refuse = |e: ApprovalError| {
        ApiError::new("APPROVAL_INVALID", format!("{e}"))
            .with_details(json!({ "reason": e.reason() }))
    };
    let claims = state.approval_key.verify(token, now).map_err(refuse)?;
    if claims.principal_id != caller.principal.id || claims.tenant != caller.principal.tenant {
        return Err(refuse(ApprovalError::WrongPrincipal));
    }
    let digest =
        canonical::digest(request).map_err(|e| ApiError::internal("hashing a request", e))?;
    if digest != claims.request_digest {
        return Err(refuse(ApprovalError::RequestChanged));
    }
    let store = Arc::clone(state.traces.store());
    let id = claims.decision_id.clone();
    let found = tokio::task::spawn_blocking(move || store.get(&id))
        .await
        .map_err(|e| ApiError::internal("reading a trace", e))?
        .map_err(|e| ApiError::internal("reading a trace", e))?
        .ok_or_else(|| {
            ApiError::new(
                "APPROVAL_INVALID",
                "the approved decision is no longer in the trace store",
            )
            .with_details(json!({ "reason": "decision_missing" }))
        })?;
    let mut value: Value = serde_json::from_slice(&found.body)
        .map_err(|e| ApiError::internal("reading a recorded decision", e))?;
    if let Some(d) = value.get_mut("decision") {
        value = d.take();
    }
    let decision: Decision = serde_json::from_value(value)
        .map_err(|e| ApiError::internal("reading a recorded decision", e))?;
    // The services approved are the services called: a registry that changed since (a contract
    // updated, added or removed in the caller's view) voids the approval.
    let current = state
        .routers
        .for_tenant(&caller.principal.tenant)
        .registry()
        .snapshot();
    if current.version() != decision.registry_version {
        return Err(ApiError::new(
            "APPROVAL_INVALID",
            "the registry changed since the decision was approved; route and approve again",
        )
        .with_details(json!({ "reason": "registry_changed" })));
    }
    // Single use, checked last so a refused attempt does not burn the token; a dry run does not
    // use it either.
    if !dry_run {
        state
            .approvals_used
            .use_once(&claims, now)
            .map_err(refuse)?;
    }
    Ok(decision)
}

/// What an idempotency key says to do.
enum Idem {
    /// No key.
    None,
    /// Run, then record the outcome under the claim.
    Run(Claim),
    /// Answer the first outcome again.
    Replay(Stored),
}

fn idempotency(
    state: &AppState,
    caller: &Identity,
    headers: &HeaderMap,
    raw: &str,
) -> ApiResult<Idem> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(Idem::None);
    };
    let key = v
        .to_str()
        .ok()
        .filter(|k| crate::idempotency::valid_key(k))
        .ok_or_else(|| {
            ApiError::new(
                "INVALID_REQUEST",
                "Idempotency-Key must be 1–255 visible ASCII characters",
            )
        })?;
    let scoped = crate::idempotency::scoped(&caller.principal.tenant, &caller.principal.id, key);
    let fp = crate::idempotency::fingerprint("/api/v1/execute", raw.as_bytes());
    match state.idempotency.begin(&scoped, fp, caio_trace::now_ms()) {
        Begin::Fresh => Ok(Idem::Run(Claim::new(
            Arc::clone(&state.idempotency),
            scoped,
        ))),
        Begin::Replay(stored) => Ok(Idem::Replay(stored)),
        Begin::InProgress => {
            let mut e = ApiError::new(
                "IDEMPOTENCY_IN_PROGRESS",
                "a request with this Idempotency-Key is still running; retry shortly",
            );
            e.retry_after_s = Some(1);
            Err(e)
        }
        Begin::Mismatch => Err(ApiError::new(
            "IDEMPOTENCY_KEY_REUSED",
            "this Idempotency-Key was used with a different request",
        )),
    }
}

fn json_response(status: StatusCode, body: Bytes, decision_id: &str) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(decision_id) {
        h.insert("x-caio-decision-id", v);
    }
    resp
}

/// POST /api/v1/execute
pub async fn execute(
    State(state): State<Arc<AppState>>,
    Extension(Caller(caller)): Extension<Caller>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    require(&state, &caller, Action::Route)?;
    if state.gateway.stopped() {
        return Err(stopped_error(&state));
    }
    let input = read_body(&state, &headers, body).await?;
    // After reading: an invalid request does not use the license's daily quota.
    let license_warning = crate::handlers::licensing::gate(&state)?;
    let license_warning = crate::handlers::licensing::gate_execution(&state, license_warning)?;
    let claim = match idempotency(&state, &caller, &headers, &input.raw)? {
        Idem::Replay(stored) => {
            audit(
                &state,
                &caller,
                &request_id,
                "execute.idempotent_replay",
                &stored.decision_id,
                None,
                None,
            )
            .await?;
            let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
            let mut resp = json_response(status, stored.body, &stored.decision_id);
            resp.headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            return Ok(resp);
        }
        Idem::Run(c) => Some(c),
        Idem::None => None,
    };
    let ExecuteInput {
        request,
        options,
        approval_token,
        ..
    } = input;
    let request = match request {
        Job::Single(r) => *r,
        Job::Chain(stages, bounds) => {
            return execute_chain(&state, &caller, &request_id, stages, bounds, options, claim)
                .await
                .map(|r| crate::handlers::licensing::warn(r, license_warning));
        }
    };
    state.gateway.health().refresh();
    let router = state.routers.for_tenant(&caller.principal.tenant);
    let snapshot = router.registry().snapshot();
    let decision = match &approval_token {
        Some(token) => Recorded {
            decision: approved_decision(&state, &caller, token, &request, options.dry_run).await?,
            body: None,
        },
        None => route_and_record(&state, &caller, &router, &request).await?,
    };
    let id = decision.decision_id.clone();

    let execution = state
        .gateway
        .run(&snapshot, &decision, &request, &options)
        .await;
    record_metrics(&state, &execution);
    let answered = execution.status != ExecutionStatus::Failed;
    let record_body = decision.record(&state, &caller, &execution).await?;
    if approval_token.is_some() {
        audit(
            &state,
            &caller,
            &request_id,
            "execute.approved",
            &id,
            None,
            None,
        )
        .await?;
    }
    if options.dry_run {
        audit(
            &state,
            &caller,
            &request_id,
            "execute.dry_run",
            &id,
            None,
            None,
        )
        .await?;
    }
    let (status, body) = if answered {
        (StatusCode::OK, record_body.bytes().clone())
    } else {
        let err = upstream_failed(&id, &execution);
        (err.status, Bytes::from(err.body().to_string()))
    };
    if let Some(claim) = claim {
        claim.finish(
            Stored {
                status: status.as_u16(),
                body: body.clone(),
                decision_id: id.clone(),
            },
            caio_trace::now_ms(),
        );
    }
    let mut resp = json_response(status, body, &id);
    if !answered {
        resp.extensions_mut()
            .insert(crate::error::ErrorCode("UPSTREAM_FAILED"));
    }
    if !execution.violations.is_empty() {
        resp.headers_mut().insert(
            "x-caio-guarantee-violations",
            HeaderValue::from(execution.violations.len()),
        );
    }
    Ok(crate::handlers::licensing::warn(resp, license_warning))
}

/// A decision and, when this process recorded it, its recorded JSON.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub decision: Decision,
    pub body: Option<TraceBody>,
}

impl Recorded {
    /// Appends an execution of this decision to its trace (see [`record_execution`]).
    pub(crate) async fn record(
        &self,
        state: &AppState,
        caller: &Identity,
        execution: &Execution,
    ) -> ApiResult<TraceBody> {
        record_execution(state, caller, &self.decision, self.body.as_ref(), execution).await
    }
}

impl std::ops::Deref for Recorded {
    type Target = Decision;
    fn deref(&self) -> &Decision {
        &self.decision
    }
}

/// Routes `request` and records the decision before anything is called.
pub(crate) async fn route_and_record(
    state: &AppState,
    caller: &Identity,
    router: &caio_gateway::Router,
    request: &RouteRequest,
) -> ApiResult<Recorded> {
    let mut sealed = match router.route_sealed(request, &caller.principal) {
        Ok(d) => d,
        Err(RouteError::NoMatchingService(no)) => {
            count_rejections(state, no.rejected.iter());
            outcome(state, "no_route");
            let body = RouteError::NoMatchingService(no).to_body();
            return Err(ApiError::new(
                "NO_MATCHING_SERVICE",
                body["error"]["message"]
                    .as_str()
                    .unwrap_or("no service satisfies the request")
                    .to_owned(),
            )
            .with_details(body["error"]["details"].clone()));
        }
        Err(e @ RouteError::Internal(_)) => {
            outcome(state, "error");
            return Err(ApiError::internal("routing", e));
        }
    };
    let now = caio_trace::now_ms();
    sealed.set_recorded_at(Some(rfc3339(now)));
    let body =
        TraceBody::decision(&sealed).map_err(|e| ApiError::internal("encoding a decision", e))?;
    record_encoded(state, caller, sealed.decision(), body.clone(), now).await?;
    Ok(Recorded {
        decision: sealed.into_decision(),
        body: Some(body),
    })
}

/// Appends an execution to its decision's trace: `{"decision", "execution"}`, outcome
/// `executed` or `execution_failed`. Returns the record's body (the answer of a single execute).
/// The decision's JSON is reused from its own record when the caller has it.
pub(crate) async fn record_execution(
    state: &AppState,
    caller: &Identity,
    decision: &Decision,
    decision_body: Option<&TraceBody>,
    execution: &Execution,
) -> ApiResult<TraceBody> {
    let body = match decision_body {
        Some(d) => TraceBody::serialize(execution)
            .and_then(|e| TraceBody::join(&[("decision", d), ("execution", &e)])),
        None => TraceBody::serialize(&Executed {
            decision,
            execution,
        }),
    }
    .map_err(|e| ApiError::internal("encoding an execution", e))?;
    persist(
        state,
        TraceRecord {
            decision_id: decision.decision_id.clone(),
            recorded_at_ms: caio_trace::now_ms(),
            tenant: caller.principal.tenant.clone(),
            principal_id: caller.principal.id.clone(),
            service_id: execution.service_id.clone(),
            outcome: if execution.status == ExecutionStatus::Failed {
                Outcome::ExecutionFailed
            } else {
                Outcome::Executed
            },
            body: body.clone(),
        },
    )
    .await?;
    Ok(body)
}

/// `502 UPSTREAM_FAILED` for an execution no candidate answered.
pub(crate) fn upstream_failed(decision_id: &str, execution: &Execution) -> ApiError {
    let error = execution.error.clone();
    ApiError::new(
        "UPSTREAM_FAILED",
        error.as_ref().map_or_else(
            || "no candidate service answered".to_owned(),
            |e| e.message.clone(),
        ),
    )
    .with_details(json!({
        "decision_id": decision_id,
        "reason": error.map(|e| e.code),
        "execution": execution,
    }))
}

/// Counts attempts, fallbacks, violations and the final status.
pub(crate) fn record_metrics(state: &AppState, ex: &Execution) {
    let m = &state.metrics;
    m.executions
        .get_or_create(&crate::metrics::OutcomeLabels {
            outcome: match ex.status {
                ExecutionStatus::Succeeded => "succeeded",
                ExecutionStatus::Failed => "failed",
                ExecutionStatus::DryRun => "dry_run",
            },
        })
        .inc();
    m.upstream_attempts.inc_by(ex.attempts.len() as u64);
    m.fallbacks.inc_by(ex.fallbacks.len() as u64);
    for v in &ex.violations {
        m.guarantee_violations
            .get_or_create(&crate::metrics::PropertyLabels {
                property: v.property.clone(),
            })
            .inc();
    }
    if ex.status != ExecutionStatus::DryRun {
        m.execution_seconds.observe(ex.latency_ms / 1000.0);
    }
}

/// Who stopped execution, when and why.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StopState {
    /// Stopped now.
    pub stopped: bool,
    /// Who changed it last (`configuration` when set by CAIO_EMERGENCY_STOP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_by: Option<String>,
    /// When (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_at: Option<String>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The emergency stop's record, shared by the endpoints.
pub type StopRecord = RwLock<StopState>;

pub(crate) fn stopped_error(state: &AppState) -> ApiError {
    let s = state.stop.read().unwrap_or_else(|p| p.into_inner()).clone();
    ApiError::new(
        "EMERGENCY_STOP",
        format!(
            "execution is stopped{}; routing still works",
            s.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
    )
    .with_details(json!({ "stop": s }))
}

/// GET /api/v1/gateway/emergency-stop
pub async fn stop_state(
    State(state): State<Arc<AppState>>,
    Extension(Caller(caller)): Extension<Caller>,
) -> ApiResult<Response> {
    require(&state, &caller, Action::GatewayControl)?;
    let s = state.stop.read().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(axum::Json(s).into_response())
}

/// The body of PUT /api/v1/gateway/emergency-stop.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StopChange {
    stopped: bool,
    #[serde(default)]
    reason: Option<String>,
}

/// PUT /api/v1/gateway/emergency-stop: `{"stopped": true, "reason": "..."}`.
pub async fn set_stop(
    State(state): State<Arc<AppState>>,
    Extension(Caller(caller)): Extension<Caller>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    require(&state, &caller, Action::GatewayControl)?;
    let change: StopChange = extract::small_json(
        &headers,
        body,
        16 * 1024,
        r#"{"stopped": true|false, "reason": "..."}"#,
    )
    .await?;
    if change.reason.as_ref().is_some_and(|r| r.len() > 1024) {
        return Err(ApiError::new(
            "INVALID_BODY",
            "the reason is longer than 1024 bytes",
        ));
    }
    let before = state.gateway.stopped();
    let next = StopState {
        stopped: change.stopped,
        changed_by: Some(caller.subject.clone()),
        changed_at: Some(rfc3339(caio_trace::now_ms())),
        reason: change.reason,
    };
    audit(
        &state,
        &caller,
        &request_id,
        if change.stopped {
            "gateway.emergency_stop.on"
        } else {
            "gateway.emergency_stop.off"
        },
        "gateway",
        Some(format!("stopped={before}")),
        Some(format!("stopped={}", change.stopped)),
    )
    .await?;
    {
        // The flag and its record change together.
        let mut record = state.stop.write().unwrap_or_else(|p| p.into_inner());
        state.gateway.set_stopped(change.stopped);
        *record = next.clone();
    }
    if change.stopped {
        tracing::warn!(by = %caller.subject, "emergency stop ON: executions refused");
    } else {
        tracing::warn!(by = %caller.subject, "emergency stop OFF: executions resume");
    }
    Ok(axum::Json(next).into_response())
}

/// GET /api/v1/gateway/health: every called service's breaker state, success rate, latency.
pub async fn health(
    State(state): State<Arc<AppState>>,
    Extension(Caller(caller)): Extension<Caller>,
) -> ApiResult<Response> {
    require(&state, &caller, Action::ServicesRead)?;
    state.gateway.health().refresh();
    Ok(axum::Json(json!({ "services": state.gateway.health().report() })).into_response())
}

/// The answer and trace record of a chain.
#[derive(Debug, Serialize)]
struct ChainExecuted<'a> {
    decisions: &'a [Decision],
    run: &'a ChainRun,
}

pub(crate) async fn record_decision(
    state: &AppState,
    caller: &Identity,
    decision: &mut Decision,
) -> ApiResult<TraceBody> {
    let now = caio_trace::now_ms();
    decision.recorded_at = Some(rfc3339(now));
    let body = TraceBody::serialize(&*decision)
        .map_err(|e| ApiError::internal("encoding a decision", e))?;
    record_encoded(state, caller, decision, body.clone(), now).await?;
    Ok(body)
}

/// POST /api/v1/execute with `chain`: plan (route every stage, compose, check the bounds), record
/// the decisions, run stage by stage, record each stage's execution.
async fn execute_chain(
    state: &AppState,
    caller: &Identity,
    request_id: &RequestId,
    stages: Vec<RouteRequest>,
    bounds: ChainBounds,
    options: ExecuteOptions,
    claim: Option<Claim>,
) -> ApiResult<Response> {
    let router = state.routers.for_tenant(&caller.principal.tenant);
    let snapshot = router.registry().snapshot();
    let plan = match state
        .gateway
        .plan_chain(&router, &stages, &caller.principal, &bounds)
    {
        Ok(p) => p,
        Err(ChainError::NoRoute { stage, no }) => {
            count_rejections(state, no.rejected.iter());
            outcome(state, "no_route");
            let body = RouteError::NoMatchingService(no).to_body();
            let mut details = body["error"]["details"].clone();
            details["stage"] = json!(stage);
            return Err(ApiError::new(
                "NO_MATCHING_SERVICE",
                format!(
                    "stage {}: {}",
                    stage + 1,
                    body["error"]["message"]
                        .as_str()
                        .unwrap_or("no feasible service")
                ),
            )
            .with_details(details));
        }
        Err(ChainError::Infeasible {
            mut decisions,
            composed,
            broken,
        }) => {
            for d in &mut decisions {
                record_decision(state, caller, d).await?;
            }
            return Err(ApiError::new(
                "CHAIN_INFEASIBLE",
                format!(
                    "the chain's composed guarantees break its bounds: {}",
                    broken
                        .iter()
                        .map(|b| b.detail.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            )
            .with_details(json!({
                "composed": composed,
                "broken": broken,
                "decision_ids": decisions.iter().map(|d| &d.decision_id).collect::<Vec<_>>(),
            })));
        }
        Err(ChainError::Stopped) => return Err(stopped_error(state)),
        Err(e @ ChainError::Length(_)) => {
            return Err(ApiError::new("INVALID_REQUEST", e.to_string()));
        }
        Err(ChainError::Internal(m)) => return Err(ApiError::internal("routing a chain", m)),
    };
    let mut plan = plan;
    let mut bodies = Vec::with_capacity(plan.decisions.len());
    for d in &mut plan.decisions {
        bodies.push(record_decision(state, caller, d).await?);
    }
    let run = state
        .gateway
        .run_chain(&snapshot, &plan, &stages, &options)
        .await;
    for ((stage, decision), body) in run.stages.iter().zip(&plan.decisions).zip(&bodies) {
        record_metrics(state, &stage.execution);
        record_execution(state, caller, decision, Some(body), &stage.execution).await?;
    }
    let first = plan
        .decisions
        .first()
        .map(|d| d.decision_id.clone())
        .unwrap_or_default();
    if options.dry_run {
        audit(
            state,
            caller,
            request_id,
            "execute.dry_run",
            &first,
            None,
            None,
        )
        .await?;
    }
    let (status, body) = if run.status == ExecutionStatus::Failed {
        let err = ApiError::new(
            "UPSTREAM_FAILED",
            run.error
                .as_ref()
                .map_or_else(|| "a stage failed".to_owned(), |e| e.message.clone()),
        )
        .with_details(json!({
            "decision_id": first,
            "reason": run.error.as_ref().map(|e| e.code.clone()),
            "chain": {"decisions": plan.decisions.iter().map(|d| &d.decision_id).collect::<Vec<_>>(), "run": run},
        }));
        (err.status, Bytes::from(err.body().to_string()))
    } else {
        let body = serde_json::to_vec(&json!({
            "chain": ChainExecuted {
                decisions: &plan.decisions,
                run: &run,
            }
        }))
        .map_err(|e| ApiError::internal("encoding a chain", e))?;
        (StatusCode::OK, Bytes::from(body))
    };
    if let Some(claim) = claim {
        claim.finish(
            Stored {
                status: status.as_u16(),
                body: body.clone(),
                decision_id: first.clone(),
            },
            caio_trace::now_ms(),
        );
    }
    Ok(json_response(status, body, &first))
}
