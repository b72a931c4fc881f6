//! `/api/v1/execute` (route, call the chosen service with retries and fallbacks, check its
//! guarantees, record both) and the gateway's operations endpoints (health board, emergency
//! stop).

use std::sync::{Arc, RwLock};

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use caio_contracts as parse;
use caio_contracts::Format;
use caio_gateway::{ExecuteOptions, Execution, ExecutionStatus, RouteError};
use caio_security::Action;
use caio_trace::{Outcome, TraceBody, TraceRecord};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::auth::{Caller, require};
use crate::error::{ApiError, ApiResult};
use crate::extract;
use crate::frame::RequestId;
use crate::handlers::routing::{count_rejections, outcome, persist, rfc3339};
use crate::handlers::services::audit;
use crate::state::AppState;

/// The body of POST /api/v1/execute: the routing request and how to execute it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecuteBody {
    request: Value,
    #[serde(flatten)]
    options: ExecuteOptions,
}

/// What an executed decision's trace record holds, and what the endpoint answers.
#[derive(Debug, Serialize)]
struct Executed<'a> {
    decision: &'a caio_contracts::decision::Decision,
    execution: &'a Execution,
}

async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<(caio_contracts::request::RouteRequest, ExecuteOptions)> {
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
            format!("the execute body is `{{\"request\": {{...}}, \"dry_run\"?, \"deadline_ms\"?, \"on_violation\"?}}`: {e}"),
        )
    })?;
    let request_text = envelope.request.to_string();
    let request =
        parse::parse_request("body/request", &request_text, Format::Json).map_err(|r| {
            outcome(state, "invalid");
            ApiError::invalid("INVALID_REQUEST", &r)
        })?;
    Ok((request, envelope.options))
}

/// POST /api/v1/execute
pub async fn execute(
    State(state): State<Arc<AppState>>,
    Extension(Caller(caller)): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    require(&state, &caller, Action::Route)?;
    if state.gateway.stopped() {
        return Err(stopped_error(&state));
    }
    let (request, options) = read_body(&state, &headers, body).await?;
    state.gateway.health().refresh();
    let router = state.routers.for_tenant(&caller.principal.tenant);
    let snapshot = router.registry().snapshot();
    let now = caio_trace::now_ms();
    let mut decision = match router.route(&request, &caller.principal) {
        Ok(d) => d,
        Err(RouteError::NoMatchingService(no)) => {
            count_rejections(&state, no.rejected.iter());
            outcome(&state, "no_route");
            let err = RouteError::NoMatchingService(no);
            let body = err.to_body();
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
            outcome(&state, "error");
            return Err(ApiError::internal("routing", e));
        }
    };
    decision.recorded_at = Some(rfc3339(now));
    count_rejections(&state, decision.rejected.iter());
    let id = decision.decision_id.clone();
    // The decision is on record before any service is called.
    let routed = TraceBody::serialize(&decision)
        .map_err(|e| ApiError::internal("encoding a decision", e))?;
    persist(
        &state,
        TraceRecord {
            decision_id: id.clone(),
            recorded_at_ms: now,
            tenant: caller.principal.tenant.clone(),
            principal_id: caller.principal.id.clone(),
            service_id: Some(decision.service_id.to_string()),
            outcome: Outcome::Routed,
            body: routed,
        },
    )
    .await?;
    outcome(&state, "routed");

    let execution = state
        .gateway
        .run(&snapshot, &decision, &request, &options)
        .await;
    record_metrics(&state, &execution);
    let answered = execution.status != ExecutionStatus::Failed;
    let body = TraceBody::serialize(&Executed {
        decision: &decision,
        execution: &execution,
    })
    .map_err(|e| ApiError::internal("encoding an execution", e))?;
    persist(
        &state,
        TraceRecord {
            decision_id: id.clone(),
            recorded_at_ms: caio_trace::now_ms(),
            tenant: caller.principal.tenant.clone(),
            principal_id: caller.principal.id.clone(),
            service_id: execution.service_id.clone(),
            outcome: if answered {
                Outcome::Executed
            } else {
                Outcome::ExecutionFailed
            },
            body: body.clone(),
        },
    )
    .await?;
    let mut resp = if answered {
        (StatusCode::OK, body.bytes().clone()).into_response()
    } else {
        let error = execution.error.clone();
        let mut e = ApiError::new(
            "UPSTREAM_FAILED",
            error.as_ref().map_or_else(
                || "no candidate service answered".to_owned(),
                |e| e.message.clone(),
            ),
        )
        .with_details(json!({
            "decision_id": id,
            "reason": error.map(|e| e.code),
            "execution": execution,
        }))
        .into_response();
        e.headers_mut().remove(header::RETRY_AFTER);
        e
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&id) {
        h.insert("x-caio-decision-id", v);
    }
    if !execution.violations.is_empty() {
        h.insert(
            "x-caio-guarantee-violations",
            HeaderValue::from(execution.violations.len()),
        );
    }
    Ok(resp)
}

/// Counts attempts, fallbacks, violations and the final status.
fn record_metrics(state: &AppState, ex: &Execution) {
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

fn stopped_error(state: &AppState) -> ApiError {
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
    let bytes = extract::bytes(&headers, body, 16 * 1024).await?;
    let change: StopChange = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            "INVALID_BODY",
            format!("expected {{\"stopped\": true|false, \"reason\": \"...\"}}: {e}"),
        )
    })?;
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
    state.gateway.set_stopped(change.stopped);
    if change.stopped {
        tracing::warn!(by = %caller.subject, "emergency stop ON: executions refused");
    } else {
        tracing::warn!(by = %caller.subject, "emergency stop OFF: executions resume");
    }
    *state.stop.write().unwrap_or_else(|p| p.into_inner()) = next.clone();
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
