//! `/api/v1/traces`: a recorded decision by id (exactly the bytes the client received, which
//! `caio verify` accepts) and queries over the trace log, scoped to what the caller may see.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use caio_security::{Action, Identity, Role};
use caio_trace::{Outcome, TraceQuery, TraceSummary};
use serde::Deserialize;

use crate::auth::require;
use crate::error::{ApiError, ApiResult};
use crate::extract::{P, Q};
use crate::state::AppState;

/// The scope a caller's trace reads are limited to: (tenant, principal).
fn scope(state: &AppState, caller: &Identity) -> ApiResult<(Option<String>, Option<String>)> {
    if caller.role == Role::Admin {
        return Ok((None, None));
    }
    if caller.may(Action::TracesReadAll) {
        return Ok((Some(caller.principal.tenant.clone()), None));
    }
    require(state, caller, Action::TracesReadOwn)?;
    Ok((
        Some(caller.principal.tenant.clone()),
        Some(caller.principal.id.clone()),
    ))
}

fn in_scope(s: &TraceSummary, tenant: &Option<String>, principal: &Option<String>) -> bool {
    tenant.as_deref().is_none_or(|t| s.tenant == t)
        && principal.as_deref().is_none_or(|p| s.principal_id == p)
}

/// GET /api/v1/traces/{id}
pub async fn get(
    State(state): State<Arc<AppState>>,
    axum::Extension(crate::auth::Caller(caller)): Extension<crate::auth::Caller>,
    P(id): P<String>,
) -> ApiResult<Response> {
    let (tenant, principal) = scope(&state, &caller)?;
    let store = Arc::clone(state.traces.store());
    let lookup = id.clone();
    let found = tokio::task::spawn_blocking(move || store.get(&lookup))
        .await
        .map_err(|e| ApiError::internal("reading a trace", e))?
        .map_err(|e| ApiError::internal("reading a trace", e))?;
    let not_found = || {
        ApiError::new(
            "TRACE_NOT_FOUND",
            format!("no decision `{id}` is recorded for you"),
        )
    };
    let trace = found
        .filter(|t| in_scope(&t.summary, &tenant, &principal))
        .ok_or_else(not_found)?;
    let mut resp = (StatusCode::OK, trace.body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        "x-caio-trace-outcome",
        HeaderValue::from_static(trace.summary.outcome.as_str()),
    );
    h.insert("x-caio-trace-seq", HeaderValue::from(trace.summary.seq));
    Ok(resp)
}

/// Filters of GET /api/v1/traces.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    /// Inclusive start: RFC 3339 or unix milliseconds.
    since: Option<String>,
    /// Exclusive end: RFC 3339 or unix milliseconds.
    until: Option<String>,
    service: Option<String>,
    principal: Option<String>,
    outcome: Option<String>,
    tenant: Option<String>,
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<u64>,
}

/// Parses an RFC 3339 time or unix milliseconds.
pub fn parse_time(field: &str, v: &str) -> ApiResult<u64> {
    if let Ok(ms) = v.parse::<u64>() {
        return Ok(ms);
    }
    let t = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
        .map_err(|_| {
            ApiError::new(
                "INVALID_QUERY",
                format!("`{field}` must be RFC 3339 (2026-11-22T08:00:00Z) or unix milliseconds"),
            )
        })?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| ApiError::new("INVALID_QUERY", format!("`{field}` is before 1970")))
}

/// GET /api/v1/traces
pub async fn query(
    State(state): State<Arc<AppState>>,
    axum::Extension(crate::auth::Caller(caller)): Extension<crate::auth::Caller>,
    Q(q): Q<Query>,
) -> ApiResult<Response> {
    let (tenant, principal) = scope(&state, &caller)?;
    let outcome = match q.outcome.as_deref() {
        None => None,
        Some(o) => Some(o.parse::<Outcome>().map_err(|_| {
            ApiError::new(
                "INVALID_QUERY",
                format!("outcome `{o}` is not one of routed, no_route"),
            )
        })?),
    };
    // A scoped caller asking for another tenant or principal simply sees nothing of it.
    let narrow = |mine: Option<String>, asked: Option<String>| match (mine, asked) {
        (Some(m), Some(a)) if m != a => Err(()),
        (Some(m), _) => Ok(Some(m)),
        (None, a) => Ok(a),
    };
    let (Ok(tenant), Ok(principal)) = (narrow(tenant, q.tenant), narrow(principal, q.principal))
    else {
        return Ok(
            axum::Json(serde_json::json!({"items": [], "next_cursor": null})).into_response(),
        );
    };
    let tq = TraceQuery {
        tenant,
        principal_id: principal,
        service_id: q.service,
        outcome,
        since_ms: q
            .since
            .as_deref()
            .map(|v| parse_time("since", v))
            .transpose()?,
        until_ms: q
            .until
            .as_deref()
            .map(|v| parse_time("until", v))
            .transpose()?,
        limit: q.limit.unwrap_or(100).clamp(1, 1000),
        before_seq: q.cursor,
    };
    let store = Arc::clone(state.traces.store());
    let page = tokio::task::spawn_blocking(move || store.query(&tq))
        .await
        .map_err(|e| ApiError::internal("querying traces", e))?
        .map_err(|e| ApiError::internal("querying traces", e))?;
    Ok(axum::Json(page).into_response())
}
