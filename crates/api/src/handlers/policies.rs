//! `/api/v1/policies`: the active set, new versions (validated, content-addressed), a
//! validate-only call, versions, history, diff and rollback.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use caio_contracts as parse;
use caio_contracts::PolicySet;
use caio_rules::{PolicyError, PolicyStoreError};
use caio_security::Action;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{Caller, require};
use crate::error::{ApiError, ApiResult};
use crate::extract::{self, P, Q};
use crate::frame::RequestId;
use crate::handlers::services::{audit, audit_failed};
use crate::state::AppState;

/// Policies apply to every tenant, so only admins and platform operators (tenant `public`) may
/// change them; a tenant's operator reads them.
fn require_policy_write(state: &AppState, caller: &caio_security::Identity) -> ApiResult<()> {
    require(state, caller, Action::PoliciesWrite)?;
    if caller.role != caio_security::Role::Admin && caller.principal.tenant != "public" {
        return Err(
            ApiError::forbidden("change the policies every tenant routes under").with_details(
                json!({
                    "reason": "policy sets are global: only admins and operators of tenant `public` change them",
                    "caller_tenant": caller.principal.tenant,
                }),
            ),
        );
    }
    Ok(())
}

fn policy_problems(errors: &[PolicyError]) -> ApiError {
    let problems: Vec<Value> = errors
        .iter()
        .map(|e| json!({ "message": e.to_string() }))
        .collect();
    ApiError::new(
        "INVALID_POLICY",
        format!(
            "the policy set does not compile ({} problem{}): {}",
            errors.len(),
            if errors.len() == 1 { "" } else { "s" },
            errors.first().map(|e| e.to_string()).unwrap_or_default()
        ),
    )
    .with_details(json!({ "problems": problems }))
}

fn store_error(e: PolicyStoreError) -> ApiError {
    match e {
        PolicyStoreError::Invalid(errors) => policy_problems(&errors),
        PolicyStoreError::NotFound(v) => ApiError::new(
            "POLICY_VERSION_NOT_FOUND",
            format!("no policy version `{v}` is stored"),
        ),
        PolicyStoreError::BadArgument(m) => ApiError::new("INVALID_QUERY", m),
        e => ApiError::internal("the policy store", e),
    }
}

/// Accepts `sha256:<hex>` or the bare hex.
fn version_of(v: &str) -> String {
    if v.starts_with("sha256:") {
        v.to_owned()
    } else {
        format!("sha256:{v}")
    }
}

async fn read_set(state: &AppState, headers: &HeaderMap, body: Body) -> ApiResult<PolicySet> {
    let text = extract::text(headers, body, state.config.limits.body_bytes).await?;
    parse::parse_policies("body", &text.text, text.format)
        .map_err(|r| ApiError::invalid("INVALID_POLICY", &r))
}

/// GET /api/v1/policies: the active version and its rules.
pub async fn active(
    State(state): State<Arc<AppState>>,
    Extension(Caller(caller)): Extension<Caller>,
) -> ApiResult<Response> {
    require(&state, &caller, Action::PoliciesRead)?;
    let compiled = state.routers.policies();
    let meta = state
        .policies
        .active()
        .map_err(store_error)?
        .map(|(m, _)| m);
    Ok(axum::Json(json!({
        "version": compiled.version,
        "meta": meta,
        "policies": compiled.source.policies,
    }))
    .into_response())
}

/// Optional note on a new version.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutQuery {
    note: Option<String>,
}

/// PUT /api/v1/policies: validate, store a new version and activate it.
pub async fn put(
    State(state): State<Arc<AppState>>,
    Extension(Caller(caller)): Extension<Caller>,
    Extension(rid): Extension<RequestId>,
    Q(q): Q<PutQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    require_policy_write(&state, &caller)?;
    let set = read_set(&state, &headers, body).await?;
    let compiled = caio_rules::compile(&set).map_err(|e| policy_problems(&e))?;
    caio_rules::store::check_arguments(&caller.subject, q.note.as_deref()).map_err(store_error)?;
    // Audit, store and activate in a task of their own (under the policy lock), so a request
    // that times out or loses its client cannot stop between the entry, the stored version and
    // the routers' active set.
    let (st, who) = (Arc::clone(&state), caller.clone());
    let (version, previous, activation) = tokio::spawn(async move {
        let _guard = st.policy_lock.lock().await;
        let previous = st.routers.policies().version.clone();
        // Versions are content-addressed: the compiled set's version is the one the store
        // assigns.
        let next = compiled.version.clone();
        audit(
            &st,
            &who,
            &rid,
            "policies.put",
            &next,
            Some(previous.clone()),
            Some(next.clone()),
        )
        .await?;
        let (store, author) = (Arc::clone(&st.policies), who.subject.clone());
        let stored = tokio::task::spawn_blocking(move || {
            store.put(&set, &author, caio_trace::now_ms(), q.note)
        })
        .await
        .map_err(|e| ApiError::internal("the policy store", e))
        .and_then(|r| r.map_err(store_error));
        match stored {
            Ok((version, activation)) => {
                st.routers.set_policies(compiled);
                Ok((version, previous, activation))
            }
            Err(e) => {
                audit_failed(&st, &who, &rid, "policies.put", &next, Some(previous)).await;
                Err(e)
            }
        }
    })
    .await
    .map_err(|e| ApiError::internal("a policy change", e))??;
    Ok(axum::Json(json!({
        "version": version.version,
        "previous": previous,
        "rules": version.rules,
        "activation": activation,
    }))
    .into_response())
}

/// POST /api/v1/policies/validate: what PUT would say, without storing.
pub async fn validate(
    State(state): State<Arc<AppState>>,
    Extension(Caller(caller)): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    require(&state, &caller, Action::PoliciesRead)?;
    let set = read_set(&state, &headers, body).await?;
    let compiled = caio_rules::compile(&set).map_err(|e| policy_problems(&e))?;
    let active = state.routers.policies().version.clone();
    Ok(axum::Json(json!({
        "valid": true,
        "version": compiled.version,
        "rules": compiled.rules.len(),
        "is_active": compiled.version == active,
    }))
    .into_response())
}

/// GET /api/v1/policies/versions
pub async fn versions(
    State(state): State<Arc<AppState>>,
    Extension(Caller(caller)): Extension<Caller>,
) -> ApiResult<Response> {
    require(&state, &caller, Action::PoliciesRead)?;
    let versions = state.policies.versions().map_err(store_error)?;
    Ok(axum::Json(json!({
        "active": state.routers.policies().version,
        "versions": versions,
    }))
    .into_response())
}

/// GET /api/v1/policies/versions/{version}
pub async fn version(
    State(state): State<Arc<AppState>>,
    Extension(Caller(caller)): Extension<Caller>,
    P(v): P<String>,
) -> ApiResult<Response> {
    require(&state, &caller, Action::PoliciesRead)?;
    let v = version_of(&v);
    let (meta, set) = state
        .policies
        .get(&v)
        .map_err(store_error)?
        .ok_or_else(|| store_error(PolicyStoreError::NotFound(v.clone())))?;
    Ok(axum::Json(json!({ "meta": meta, "policies": set.policies })).into_response())
}

/// GET /api/v1/policies/history
pub async fn history(
    State(state): State<Arc<AppState>>,
    Extension(Caller(caller)): Extension<Caller>,
) -> ApiResult<Response> {
    require(&state, &caller, Action::PoliciesRead)?;
    let history = state.policies.history().map_err(store_error)?;
    Ok(axum::Json(json!({ "activations": history })).into_response())
}

/// The two versions to compare.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffQuery {
    from: String,
    /// Defaults to the active version.
    to: Option<String>,
}

/// GET /api/v1/policies/diff?from=&to=
pub async fn diff(
    State(state): State<Arc<AppState>>,
    Extension(Caller(caller)): Extension<Caller>,
    Q(q): Q<DiffQuery>,
) -> ApiResult<Response> {
    require(&state, &caller, Action::PoliciesRead)?;
    let from = version_of(&q.from);
    let to =
        q.to.map(|t| version_of(&t))
            .unwrap_or_else(|| state.routers.policies().version.clone());
    let load = |v: &str| {
        state
            .policies
            .get(v)
            .map_err(store_error)?
            .map(|(_, s)| s)
            .ok_or_else(|| store_error(PolicyStoreError::NotFound(v.to_owned())))
    };
    let (a, b) = (load(&from)?, load(&to)?);
    Ok(axum::Json(caio_rules::diff(&from, &a, &to, &b)).into_response())
}

/// Body of a rollback.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    version: String,
}

/// POST /api/v1/policies/rollback `{"version": "sha256:…"}`: activates a stored version.
pub async fn rollback(
    State(state): State<Arc<AppState>>,
    Extension(Caller(caller)): Extension<Caller>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    require_policy_write(&state, &caller)?;
    let text = extract::text(&headers, body, state.config.limits.body_bytes).await?;
    let r: Rollback = extract::json(&text)?;
    let v = version_of(&r.version);
    let (st, who, target) = (Arc::clone(&state), caller.clone(), v.clone());
    let (previous, activation) = tokio::spawn(async move {
        let v = target;
        let _guard = st.policy_lock.lock().await;
        let (_, set) = st
            .policies
            .get(&v)
            .map_err(store_error)?
            .ok_or_else(|| store_error(PolicyStoreError::NotFound(v.clone())))?;
        let compiled = caio_rules::compile_recorded(&set).map_err(|e| policy_problems(&e))?;
        let previous = st.routers.policies().version.clone();
        audit(
            &st,
            &who,
            &rid,
            "policies.rollback",
            &v,
            Some(previous.clone()),
            Some(v.clone()),
        )
        .await?;
        let (store, author, version) = (Arc::clone(&st.policies), who.subject.clone(), v.clone());
        let activated = tokio::task::spawn_blocking(move || {
            store.activate(&version, &author, caio_trace::now_ms())
        })
        .await
        .map_err(|e| ApiError::internal("the policy store", e))
        .and_then(|r| r.map_err(store_error));
        match activated {
            Ok(activation) => {
                st.routers.set_policies(compiled);
                Ok((previous, activation))
            }
            Err(e) => {
                audit_failed(&st, &who, &rid, "policies.rollback", &v, Some(previous)).await;
                Err(e)
            }
        }
    })
    .await
    .map_err(|e| ApiError::internal("a policy change", e))??;
    Ok(
        axum::Json(json!({ "version": v, "previous": previous, "activation": activation }))
            .into_response(),
    )
}
