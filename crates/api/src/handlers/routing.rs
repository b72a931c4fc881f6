//! `/api/v1/route` (decide, persist the trace, answer) and `/api/v1/discover` (what would be
//! feasible, without deciding or recording).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Extension;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use caio_contracts as parse;
use caio_contracts::canonical;
use caio_contracts::decision::{Rejection, Step};
use caio_contracts::request::RouteRequest;
use caio_gateway::RouteError;
use caio_security::Action;
use caio_security::approval::ApprovalClaims;
use caio_trace::{Outcome, TraceBody, TraceRecord};
use serde_json::json;

use crate::auth::{Caller, require};
use crate::error::{ApiError, ApiResult};
use crate::extract;
use crate::metrics::{OutcomeLabels, PolicyLabels};
use crate::state::AppState;

pub(crate) fn outcome(state: &AppState, outcome: &'static str) {
    state
        .metrics
        .decisions
        .get_or_create(&OutcomeLabels { outcome })
        .inc();
}

/// Counts rejections by (step, reason) and policy violations by policy id.
pub(crate) fn count_rejections<'a>(
    state: &AppState,
    rejected: impl Iterator<Item = &'a Rejection>,
) {
    // A handful of distinct (step, reason) pairs per decision: a short list, no hashing.
    let mut by_reason: Vec<(Step, &str, u64)> = Vec::new();
    let mut by_policy: HashMap<&str, u64> = HashMap::new();
    for r in rejected {
        match by_reason
            .iter_mut()
            .find(|(step, reason, _)| *step == r.step && *reason == r.reason)
        {
            Some((_, _, n)) => *n += 1,
            None => by_reason.push((r.step, &r.reason, 1)),
        }
        if r.step == Step::Rules
            && let Some(id) = r
                .detail
                .strip_prefix("policy `")
                .and_then(|rest| rest.split_once('`'))
                .map(|(id, _)| id)
        {
            *by_policy.entry(id).or_default() += 1;
        }
    }
    for (step, reason, n) in by_reason {
        state.metrics.count_rejections(step.as_str(), reason, n);
    }
    for (policy, n) in by_policy {
        state
            .metrics
            .policy_violations
            .get_or_create(&PolicyLabels {
                policy: policy.to_owned(),
            })
            .inc_by(n);
    }
}

/// Reads a route request; also returns whether its body carried `approve: true` (a member that
/// is not part of the request itself, removed before validation).
async fn read_request(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<(RouteRequest, bool)> {
    let text = extract::text(headers, body, state.config.limits.body_bytes).await?;
    let invalid = |r: parse::ValidationReport| {
        outcome(state, "invalid");
        ApiError::invalid("INVALID_REQUEST", &r)
    };
    // Most requests never mention it: only those pay for the extra parse.
    if memchr::memmem::find(text.text.as_bytes(), b"approve").is_some() {
        let syntax = match text.format {
            caio_contracts::Format::Yaml => parse::yaml::Syntax::Yaml,
            caio_contracts::Format::Json => parse::yaml::Syntax::Json,
            caio_contracts::Format::Auto if text.text.trim_start().starts_with('{') => {
                parse::yaml::Syntax::Json
            }
            caio_contracts::Format::Auto => parse::yaml::Syntax::Yaml,
        };
        if let Ok(serde_json::Value::Object(mut doc)) = parse::yaml::to_json(&text.text, syntax, 64)
            && let Some(flag) = doc.remove("approve")
        {
            let approve = flag.as_bool().ok_or_else(|| {
                ApiError::new("INVALID_REQUEST", "`approve` must be true or false")
            })?;
            let rest = serde_json::Value::Object(doc).to_string();
            let request = parse::parse_request("body", &rest, caio_contracts::Format::Json)
                .map_err(invalid)?;
            return Ok((request, approve));
        }
    }
    parse::parse_request("body", &text.text, text.format)
        .map(|r| (r, false))
        .map_err(invalid)
}

pub(crate) fn rfc3339(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

pub(crate) async fn persist(state: &AppState, record: TraceRecord) -> ApiResult<()> {
    // The body is a `TraceBody::serialize` output, which the store does not scan again.
    let started = Instant::now();
    let r = state.traces.append(record).await;
    state
        .metrics
        .stage("persist", started.elapsed().as_secs_f64());
    r.map(|_| ()).map_err(|e| {
        outcome(state, "error");
        tracing::error!(error = %e, "trace not persisted; decision withheld");
        ApiError::new(
            "UNAVAILABLE",
            "the decision could not be recorded, so it is not returned; retry later",
        )
    })
}

/// Records a decision already encoded as `body` (recorded at `now`) and counts its rejections
/// and outcome.
pub(crate) async fn record_encoded(
    state: &AppState,
    caller: &caio_security::Identity,
    decision: &caio_contracts::decision::Decision,
    body: TraceBody,
    now: u64,
) -> ApiResult<()> {
    count_rejections(state, decision.rejected.iter());
    persist(
        state,
        TraceRecord {
            decision_id: decision.decision_id.clone(),
            recorded_at_ms: now,
            tenant: caller.principal.tenant.clone(),
            principal_id: caller.principal.id.clone(),
            service_id: Some(decision.service_id.to_string()),
            outcome: Outcome::Routed,
            body,
        },
    )
    .await?;
    outcome(state, "routed");
    Ok(())
}

/// An approval token for a decision just recorded (`?approve=true` or `approve: true`).
async fn approve(
    state: &AppState,
    caller: &caio_security::Identity,
    request_id: &crate::frame::RequestId,
    request: &RouteRequest,
    decision_id: &str,
    now: u64,
) -> ApiResult<(String, u64)> {
    let expires = now.saturating_add(state.config.gateway.approval_ttl_s.saturating_mul(1000));
    let claims = ApprovalClaims {
        decision_id: decision_id.to_owned(),
        request_digest: canonical::digest(request)
            .map_err(|e| ApiError::internal("hashing a request", e))?,
        principal_id: caller.principal.id.clone(),
        tenant: caller.principal.tenant.clone(),
        issued_at_ms: now,
        expires_at_ms: expires,
        nonce: crate::secrets::generate().map_err(|e| ApiError::internal("an approval", e))?,
    };
    let token = state
        .approval_key
        .issue(&claims)
        .map_err(|e| ApiError::internal("signing an approval", e))?;
    crate::handlers::services::audit(
        state,
        caller,
        request_id,
        "decision.approve",
        decision_id,
        None,
        Some(format!("expires {}", rfc3339(expires))),
    )
    .await?;
    Ok((token, expires))
}

/// POST /api/v1/route
pub async fn route(
    State(state): State<Arc<AppState>>,
    Extension(Caller(caller)): Extension<Caller>,
    Extension(request_id): Extension<crate::frame::RequestId>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    require(&state, &caller, Action::Route)?;
    let started = Instant::now();
    let (request, approve_in_body) = read_request(&state, &headers, body).await?;
    // After reading: an invalid request does not use the license's daily quota.
    let license_warning = crate::handlers::licensing::gate(&state)?;
    let wants_approval = approve_in_body
        || query.as_deref().is_some_and(|q| {
            q.split('&')
                .any(|p| matches!(p, "approve=true" | "approve=1" | "approve"))
        });
    let parsed = Instant::now();
    state
        .metrics
        .stage("parse", (parsed - started).as_secs_f64());
    let router = state.routers.for_tenant(&caller.principal.tenant);
    let result = router.route_sealed(&request, &caller.principal);
    let routed = Instant::now();
    state
        .metrics
        .stage("pipeline", (routed - parsed).as_secs_f64());
    let now = caio_trace::now_ms();
    match result {
        Ok(mut sealed) => {
            sealed.set_recorded_at(Some(rfc3339(now)));
            let body = TraceBody::decision(&sealed)
                .map_err(|e| ApiError::internal("encoding a decision", e))?;
            state
                .metrics
                .stage("encode", routed.elapsed().as_secs_f64());
            let decision = sealed.decision();
            let id = decision.decision_id.clone();
            record_encoded(&state, &caller, decision, body.clone(), now).await?;
            let approval = if wants_approval {
                Some(approve(&state, &caller, &request_id, &request, &id, now).await?)
            } else {
                None
            };
            let mut resp = (StatusCode::OK, body.bytes().clone()).into_response();
            let h = resp.headers_mut();
            if let Some((token, expires)) = approval {
                if let Ok(v) = HeaderValue::from_str(&token) {
                    h.insert("x-caio-approval-token", v);
                }
                if let Ok(v) = HeaderValue::from_str(&rfc3339(expires)) {
                    h.insert("x-caio-approval-expires-at", v);
                }
            }
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if let Ok(v) = HeaderValue::from_str(&id) {
                h.insert("x-caio-decision-id", v);
            }
            Ok(crate::handlers::licensing::warn(resp, license_warning))
        }
        Err(RouteError::NoMatchingService(no)) => {
            count_rejections(&state, no.rejected.iter());
            let err = RouteError::NoMatchingService(no);
            let mut body = err.to_body();
            // A no-route outcome is recorded too, under the digest of what it says (request,
            // versions, principal, rejections): the same request gives the same id.
            let core = json!({
                "details": body["error"]["details"],
                "principal": caller.principal,
            });
            let id = canonical::digest(&core)
                .map_err(|e| ApiError::internal("hashing a no-route outcome", e))?;
            body["error"]["details"]["trace_id"] = json!(id);
            body["error"]["details"]["recorded_at"] = json!(rfc3339(now));
            let message = body["error"]["message"]
                .as_str()
                .unwrap_or("no service satisfies the request")
                .to_owned();
            let bytes = TraceBody::serialize(&body)
                .map_err(|e| ApiError::internal("encoding a no-route outcome", e))?;
            persist(
                &state,
                TraceRecord {
                    decision_id: id,
                    recorded_at_ms: now,
                    tenant: caller.principal.tenant.clone(),
                    principal_id: caller.principal.id.clone(),
                    service_id: None,
                    outcome: Outcome::NoRoute,
                    body: bytes,
                },
            )
            .await?;
            outcome(&state, "no_route");
            Err(ApiError::new("NO_MATCHING_SERVICE", message)
                .with_details(body["error"]["details"].clone()))
        }
        Err(e @ RouteError::Internal(_)) => {
            outcome(&state, "error");
            Err(ApiError::internal("routing", e))
        }
    }
}

/// POST /api/v1/discover: the feasible services for a request, best first, with their score
/// terms, and why every other visible service is out. Nothing is recorded.
pub async fn discover(
    State(state): State<Arc<AppState>>,
    Extension(Caller(caller)): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    require(&state, &caller, Action::Discover)?;
    let (request, _) = read_request(&state, &headers, body).await?;
    let router = state.routers.for_tenant(&caller.principal.tenant);
    match router.route(&request, &caller.principal) {
        Ok(d) => Ok(axum::Json(json!({
            "candidates": d.ranking,
            "rejected": d.rejected,
            "registry_version": d.registry_version,
            "policy_version": d.policy_version,
        }))
        .into_response()),
        Err(RouteError::NoMatchingService(no)) => Ok(axum::Json(json!({
            "candidates": [],
            "rejected": no.rejected,
            "registry_version": no.registry_version,
            "policy_version": no.policy_version,
        }))
        .into_response()),
        Err(e @ RouteError::Internal(_)) => Err(ApiError::internal("routing", e)),
    }
}
