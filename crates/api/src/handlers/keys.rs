//! `/api/v1/keys` (create — the key is shown once —, list, get, revoke) and `/api/v1/audit`.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use caio_security::{Action, KeyError, NewKey};
use caio_trace::AuditQuery;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{Caller, require};
use crate::error::{ApiError, ApiResult};
use crate::extract::{self, P, Q};
use crate::frame::RequestId;
use crate::handlers::services::audited;
use crate::handlers::traces::parse_time;
use crate::state::AppState;

fn key_error(e: KeyError) -> ApiError {
    match e {
        KeyError::Invalid(m) => ApiError::new("INVALID_BODY", m),
        KeyError::NotFound => ApiError::new("KEY_NOT_FOUND", "no API key with this id exists"),
        e => ApiError::internal("the key store", e),
    }
}

/// The audit digest of a key: of its public record, never of the key (or its hash).
fn record_digest(redacted: &serde_json::Value) -> String {
    caio_contracts::canonical::digest(redacted).unwrap_or_else(|_| "unhashable".to_owned())
}

/// POST /api/v1/keys
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(Caller(caller)): Extension<Caller>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    require(&state, &caller, Action::KeysManage)?;
    let text = extract::text(&headers, body, state.config.limits.body_bytes).await?;
    let new: NewKey = extract::json(&text)?;
    let (plaintext, record) =
        caio_security::keys::generate(new, &caller.subject, caio_trace::now_ms())
            .map_err(key_error)?;
    let stored = record.clone();
    audited(
        &state,
        &caller,
        &rid,
        "key.create",
        &record.id,
        None,
        Some(record_digest(&record.redacted())),
        move |st| async move { st.keys.insert(stored).map_err(key_error) },
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({
            "key": plaintext,
            "note": "shown once: CAIO stores only its hash",
            "record": record.redacted(),
        })),
    )
        .into_response())
}

/// GET /api/v1/keys
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(Caller(caller)): Extension<Caller>,
) -> ApiResult<Response> {
    require(&state, &caller, Action::KeysManage)?;
    let keys = state.keys.list().map_err(key_error)?;
    let items: Vec<_> = keys.iter().map(|k| k.redacted()).collect();
    Ok(axum::Json(json!({ "items": items })).into_response())
}

/// GET /api/v1/keys/{id}
pub async fn get(
    State(state): State<Arc<AppState>>,
    Extension(Caller(caller)): Extension<Caller>,
    P(id): P<String>,
) -> ApiResult<Response> {
    require(&state, &caller, Action::KeysManage)?;
    let k = state
        .keys
        .get(&id)
        .map_err(key_error)?
        .ok_or_else(|| key_error(KeyError::NotFound))?;
    Ok(axum::Json(k.redacted()).into_response())
}

/// DELETE /api/v1/keys/{id}: revokes (the record stays, for the audit trail).
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    Extension(Caller(caller)): Extension<Caller>,
    Extension(rid): Extension<RequestId>,
    P(id): P<String>,
) -> ApiResult<Response> {
    require(&state, &caller, Action::KeysManage)?;
    let current = state
        .keys
        .get(&id)
        .map_err(key_error)?
        .ok_or_else(|| key_error(KeyError::NotFound))?;
    let before = record_digest(&current.redacted());
    // Revoking is idempotent: a revoked key keeps its first revocation time.
    let now = caio_trace::now_ms();
    let mut expected = current.clone();
    expected.revoked_at_ms = expected.revoked_at_ms.or(Some(now));
    let kid = id.clone();
    let k = audited(
        &state,
        &caller,
        &rid,
        "key.revoke",
        &id,
        Some(before),
        Some(record_digest(&expected.redacted())),
        move |st| async move {
            let store = Arc::clone(&st.keys);
            tokio::task::spawn_blocking(move || store.revoke(&kid, now))
                .await
                .map_err(|e| ApiError::internal("the key store", e))?
                .map_err(key_error)
        },
    )
    .await?;
    Ok(axum::Json(k.redacted()).into_response())
}

/// Filters of GET /api/v1/audit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditFilter {
    actor: Option<String>,
    action: Option<String>,
    target: Option<String>,
    tenant: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
    cursor: Option<u64>,
}

/// GET /api/v1/audit (admins)
pub async fn audit_log(
    State(state): State<Arc<AppState>>,
    Extension(Caller(caller)): Extension<Caller>,
    Q(q): Q<AuditFilter>,
) -> ApiResult<Response> {
    require(&state, &caller, Action::AuditRead)?;
    let query = AuditQuery {
        actor: q.actor,
        action: q.action,
        target: q.target,
        tenant: q.tenant,
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
    let page = state
        .audit
        .query(&query)
        .map_err(|e| ApiError::internal("querying the audit log", e))?;
    Ok(axum::Json(page).into_response())
}
