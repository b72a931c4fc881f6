//! `/api/v1/services`: register, list, get, update, delete, rotate the webhook secret.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use caio_contracts as parse;
use caio_contracts::ServiceContract;
use caio_contracts::canonical;
use caio_registry::RegistryError;
use caio_security::{Action, Identity, Role};
use caio_trace::AuditEvent;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{Caller, require};
use crate::error::{ApiError, ApiResult};
use crate::extract::{self, P, Q};
use crate::frame::RequestId;
use crate::state::AppState;
use crate::tenancy::visible;

/// Whether `caller` may see a service of `tenant` (admins see every tenant).
pub fn can_see(caller: &Identity, tenant: &str) -> bool {
    caller.role == Role::Admin || visible(tenant, &caller.principal.tenant)
}

/// An `INVALID_CONTRACT` error for one problem the server finds beyond the contract's own
/// checks, with the line of `path` in the submitted text.
fn contract_problem(text: &extract::Text, path: &str, message: String) -> ApiError {
    let line = caio_contracts::LineIndex::build(&text.text).line_of(path);
    ApiError::new("INVALID_CONTRACT", format!("{path}: {message}")).with_details(
        serde_json::json!({"problems": [{"path": path, "line": line, "message": message}]}),
    )
}

fn parse_contract(state: &AppState, text: &extract::Text) -> ApiResult<ServiceContract> {
    let contract = parse::parse_contract("body", &text.text, text.format)
        .map_err(|r| ApiError::invalid("INVALID_CONTRACT", &r))?;
    if let Some(var) = &contract.service.api.credential_env
        && !state.config.gateway.credential_env_allowed(var)
    {
        let message = format!(
            "`{var}` may not be used: credentials come from CAIO_UPSTREAM_* variables or the \
             names the operator lists in gateway.credential_envs"
        );
        return Err(contract_problem(
            text,
            "/service/api/credential_env",
            message,
        ));
    }
    // A base URL that is a literal forbidden address is refused now; host names are checked
    // each time they resolve, when the gateway connects.
    let url = &contract.service.api.base_url;
    if let Some(host) = url
        .parse::<axum::http::Uri>()
        .ok()
        .and_then(|u| u.host().map(str::to_owned))
        && let Err(refusal) = state.gateway.client().guard().check_host(&host)
    {
        return Err(contract_problem(
            text,
            "/service/api/base_url",
            format!("`{host}` is refused: {refusal}"),
        ));
    }
    Ok(contract)
}

/// Checks that `caller` may write `contract`: role, own service id, tenant.
fn may_write(state: &AppState, caller: &Identity, contract: &ServiceContract) -> ApiResult<()> {
    require(state, caller, Action::ServicesWrite)?;
    let id = &contract.service.id;
    if !caller.may_write_service(id) {
        return Err(
            ApiError::forbidden("write this service").with_details(json!({
                "service_id": id,
                "reason": "a service credential may only register and update its own service id",
            })),
        );
    }
    if caller.role != Role::Admin
        && contract.service.tenant != caller.principal.tenant
        && !(contract.service.tenant == "public" && caller.principal.tenant == "public")
    {
        return Err(
            ApiError::forbidden("register services for another tenant").with_details(json!({
                "service_tenant": contract.service.tenant,
                "caller_tenant": caller.principal.tenant,
            })),
        );
    }
    Ok(())
}

fn digest(c: &ServiceContract) -> ApiResult<String> {
    canonical::digest(c).map_err(|e| ApiError::internal("hashing a contract", e))
}

/// Appends to the audit log off the async workers (the file log fsyncs every entry). Changes
/// are audited before they are applied, so none takes effect without its entry; one that then
/// fails to apply gets a [`audit_failed`] entry after it.
pub(crate) async fn audit(
    state: &AppState,
    caller: &Identity,
    request_id: &RequestId,
    action: &str,
    target: &str,
    before: Option<String>,
    after: Option<String>,
) -> ApiResult<()> {
    let log = Arc::clone(&state.audit);
    let event = AuditEvent {
        at_ms: caio_trace::now_ms(),
        actor: caller.subject.clone(),
        actor_role: caller.role.as_str().to_owned(),
        tenant: caller.principal.tenant.clone(),
        action: action.to_owned(),
        target: target.to_owned(),
        before,
        after,
        request_id: Some(request_id.0.to_string()),
    };
    let result = tokio::task::spawn_blocking(move || log.append(event))
        .await
        .map_err(|e| ApiError::internal("writing the audit log", e))?
        .map(|_| ())
        .map_err(|e| ApiError::internal("writing the audit log", e));
    state
        .audit_healthy
        .store(result.is_ok(), std::sync::atomic::Ordering::Relaxed);
    result
}

/// One audited change: its entry (`action` on `target`, `before` → `after`), then `apply`, then,
/// if `apply` fails, a `<action>.failed` entry. The sequence runs in a task of its own, so a
/// request that times out or whose client leaves cannot stop it between the entry and the
/// change (or between a failed change and its `.failed` entry).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn audited<T, F, Fut>(
    state: &Arc<AppState>,
    caller: &Identity,
    request_id: &RequestId,
    action: &'static str,
    target: &str,
    before: Option<String>,
    after: Option<String>,
    apply: F,
) -> ApiResult<T>
where
    T: Send + 'static,
    F: FnOnce(Arc<AppState>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ApiResult<T>> + Send + 'static,
{
    let (state, caller, rid, target) = (
        Arc::clone(state),
        caller.clone(),
        request_id.clone(),
        target.to_owned(),
    );
    tokio::spawn(async move {
        audit(
            &state,
            &caller,
            &rid,
            action,
            &target,
            before.clone(),
            after,
        )
        .await?;
        match apply(Arc::clone(&state)).await {
            Ok(v) => Ok(v),
            Err(e) => {
                audit_failed(&state, &caller, &rid, action, &target, before).await;
                Err(e)
            }
        }
    })
    .await
    .map_err(|e| ApiError::internal("an audited change", e))?
}

/// After an audited change could not be applied: a `<action>.failed` entry whose after is its
/// before (nothing changed). Best effort: the change's own entry is already in the log, and the
/// caller answers with the error that stopped the change.
pub(crate) async fn audit_failed(
    state: &AppState,
    caller: &Identity,
    request_id: &RequestId,
    action: &str,
    target: &str,
    before: Option<String>,
) {
    let action = format!("{action}.failed");
    if let Err(e) = audit(
        state,
        caller,
        request_id,
        &action,
        target,
        before.clone(),
        before,
    )
    .await
    {
        tracing::error!(error = %e.message, action, "audit entry for a failed change not written");
    }
}

fn registry_error(e: RegistryError) -> ApiError {
    match e {
        RegistryError::AlreadyExists(id) => ApiError::new(
            "SERVICE_EXISTS",
            format!("service `{id}` is already registered; PUT /api/v1/services/{id} updates it"),
        ),
        RegistryError::NotFound(id) => ApiError::service_not_found(&id),
        e @ RegistryError::Canonical(..) => ApiError::internal("registering a service", e),
    }
}

fn summary(state: &AppState, c: &ServiceContract, digest: &str) -> Value {
    let status = state
        .status
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&c.service.id)
        .cloned();
    json!({
        "id": c.service.id,
        "name": c.service.name,
        "version": c.service.version,
        "tenant": c.service.tenant,
        "capabilities": c.service.capabilities,
        "digest": digest,
        "status": status.as_ref().map_or("unknown", |s| s.status.as_str()),
        "last_event_ms": status.map(|s| s.last_event_ms),
    })
}

/// POST /api/v1/services
pub async fn register(
    State(state): State<Arc<AppState>>,
    Extension(Caller(caller)): Extension<Caller>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    require(&state, &caller, Action::ServicesWrite)?;
    let text = extract::text(&headers, body, state.config.limits.body_bytes).await?;
    let contract = parse_contract(&state, &text)?;
    may_write(&state, &caller, &contract)?;
    let license_warning = crate::handlers::licensing::gate_services(&state)?;
    let id = contract.service.id.clone();
    let digest = digest(&contract)?;
    // Ids are global: a clash with another tenant's service is a 409 that does not say whose.
    if state.registry().snapshot().get(&id).is_some() {
        return Err(registry_error(RegistryError::AlreadyExists(id)));
    }
    let change = audited(
        &state,
        &caller,
        &rid,
        "service.register",
        &id,
        None,
        Some(digest.clone()),
        move |st| async move { st.registry().register(contract).map_err(registry_error) },
    )
    .await?;
    state
        .metrics
        .services
        .set(state.registry().snapshot().len() as i64);
    // A new registration gets a new secret, so whoever held the secret of an earlier service
    // with this id cannot speak for this one.
    let secret = if state.secrets.is_provisioned(&id) {
        None
    } else {
        let s = crate::secrets::generate().map_err(|e| ApiError::internal("randomness", e))?;
        let (store, sid, value) = (Arc::clone(&state.secrets), id.clone(), s.clone());
        tokio::task::spawn_blocking(move || store.set(&sid, &value))
            .await
            .map_err(|e| ApiError::internal("storing the webhook secret", e))?
            .map_err(|e| ApiError::internal("storing the webhook secret", e))?;
        Some(s)
    };
    let mut body = json!({
        "service_id": id,
        "digest": digest,
        "registry_version": change.version,
        "previous_registry_version": change.previous_version,
    });
    if let Some(s) = secret {
        body["webhook_secret"] = Value::String(s);
        body["webhook_secret_note"] =
            Value::String("shown once: sign webhook calls with it (docs/reference/api.md)".into());
    }
    Ok(crate::handlers::licensing::warn(
        (StatusCode::CREATED, axum::Json(body)).into_response(),
        license_warning,
    ))
}

/// Filters of GET /api/v1/services.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    capability: Option<String>,
    tenant: Option<String>,
    status: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
    /// The last id of the previous page.
    #[serde(default)]
    after: Option<String>,
}

/// GET /api/v1/services
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(Caller(caller)): Extension<Caller>,
    Q(q): Q<ListQuery>,
) -> ApiResult<Response> {
    require(&state, &caller, Action::ServicesRead)?;
    if let Some(s) = &q.status
        && !["healthy", "degraded", "down", "unknown"].contains(&s.as_str())
    {
        return Err(ApiError::new(
            "INVALID_QUERY",
            format!("status `{s}` is not one of healthy, degraded, down, unknown"),
        ));
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let snapshot = state.registry().snapshot();
    let mut items = Vec::new();
    let mut more = false;
    for e in snapshot.entries() {
        let c = &e.contract;
        if !can_see(&caller, &c.service.tenant) {
            continue;
        }
        if q.after.as_deref().is_some_and(|a| *e.id <= *a) {
            continue;
        }
        if q.tenant.as_deref().is_some_and(|t| c.service.tenant != t) {
            continue;
        }
        if q.capability
            .as_deref()
            .is_some_and(|cap| !c.service.capabilities.iter().any(|x| x == cap))
        {
            continue;
        }
        let item = summary(&state, c, &e.digest);
        if q.status
            .as_deref()
            .is_some_and(|s| item["status"].as_str() != Some(s))
        {
            continue;
        }
        if items.len() == limit {
            more = true;
            break;
        }
        items.push(item);
    }
    let next = if more {
        items
            .last()
            .and_then(|i| i["id"].as_str())
            .map(str::to_owned)
    } else {
        None
    };
    Ok(axum::Json(json!({
        "registry_version": snapshot.version(),
        "items": items,
        "next_after": next,
    }))
    .into_response())
}

/// GET /api/v1/services/{id}
pub async fn get(
    State(state): State<Arc<AppState>>,
    Extension(Caller(caller)): Extension<Caller>,
    P(id): P<String>,
) -> ApiResult<Response> {
    require(&state, &caller, Action::ServicesRead)?;
    let snapshot = state.registry().snapshot();
    let entry = snapshot
        .get(&id)
        .filter(|e| can_see(&caller, &e.contract.service.tenant))
        .ok_or_else(|| ApiError::service_not_found(&id))?;
    let mut body = summary(&state, &entry.contract, &entry.digest);
    body["contract"] = serde_json::to_value(&*entry.contract)
        .map_err(|e| ApiError::internal("encoding a contract", e))?;
    Ok(axum::Json(body).into_response())
}

/// PUT /api/v1/services/{id}
pub async fn update(
    State(state): State<Arc<AppState>>,
    Extension(Caller(caller)): Extension<Caller>,
    Extension(rid): Extension<RequestId>,
    P(id): P<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    require(&state, &caller, Action::ServicesWrite)?;
    let text = extract::text(&headers, body, state.config.limits.body_bytes).await?;
    let contract = parse_contract(&state, &text)?;
    if contract.service.id != id {
        return Err(ApiError::new(
            "ID_MISMATCH",
            format!(
                "the path names `{id}` but the contract's service.id is `{}`",
                contract.service.id
            ),
        ));
    }
    let before = {
        let snapshot = state.registry().snapshot();
        let e = snapshot
            .get(&id)
            .filter(|e| can_see(&caller, &e.contract.service.tenant))
            .ok_or_else(|| ApiError::service_not_found(&id))?;
        // Moving a service to another tenant is a write to both: check the old tenant too.
        may_write(&state, &caller, &e.contract)?;
        e.digest.clone()
    };
    may_write(&state, &caller, &contract)?;
    let after = digest(&contract)?;
    let change = audited(
        &state,
        &caller,
        &rid,
        "service.update",
        &id,
        Some(before),
        Some(after.clone()),
        move |st| async move { st.registry().update(contract).map_err(registry_error) },
    )
    .await?;
    Ok(axum::Json(json!({
        "service_id": id,
        "digest": after,
        "registry_version": change.version,
        "previous_registry_version": change.previous_version,
    }))
    .into_response())
}

/// DELETE /api/v1/services/{id}
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(Caller(caller)): Extension<Caller>,
    Extension(rid): Extension<RequestId>,
    P(id): P<String>,
) -> ApiResult<Response> {
    require(&state, &caller, Action::ServicesWrite)?;
    let before = {
        let snapshot = state.registry().snapshot();
        let e = snapshot
            .get(&id)
            .filter(|e| can_see(&caller, &e.contract.service.tenant))
            .ok_or_else(|| ApiError::service_not_found(&id))?;
        may_write(&state, &caller, &e.contract)?;
        e.digest.clone()
    };
    let sid = id.clone();
    audited(
        &state,
        &caller,
        &rid,
        "service.delete",
        &id,
        Some(before),
        None,
        move |st| async move {
            st.registry().remove(&sid).map_err(registry_error)?;
            // A service registered again under this id starts with a clean bill of health.
            st.gateway.health().forget(&sid);
            st.routers.forget_service(&sid);
            st.metrics
                .services
                .set(st.registry().snapshot().len() as i64);
            Ok(())
        },
    )
    .await?;
    let (store, sid) = (Arc::clone(&state.secrets), id.clone());
    tokio::task::spawn_blocking(move || store.remove(&sid))
        .await
        .map_err(|e| ApiError::internal("removing the webhook secret", e))?
        .map_err(|e| ApiError::internal("removing the webhook secret", e))?;
    state
        .status
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// POST /api/v1/services/{id}/webhook-secret: a new secret, shown once.
pub async fn rotate_secret(
    State(state): State<Arc<AppState>>,
    Extension(Caller(caller)): Extension<Caller>,
    Extension(rid): Extension<RequestId>,
    P(id): P<String>,
) -> ApiResult<Response> {
    require(&state, &caller, Action::ServicesWrite)?;
    {
        let snapshot = state.registry().snapshot();
        let e = snapshot
            .get(&id)
            .filter(|e| can_see(&caller, &e.contract.service.tenant))
            .ok_or_else(|| ApiError::service_not_found(&id))?;
        may_write(&state, &caller, &e.contract)?;
    }
    if state.secrets.is_provisioned(&id) {
        return Err(ApiError::forbidden("rotate this webhook secret").with_details(json!({
            "reason": "the secret is provisioned in the server configuration (webhooks.secrets)",
        })));
    }
    let s = crate::secrets::generate().map_err(|e| ApiError::internal("randomness", e))?;
    let (sid, value) = (id.clone(), s.clone());
    audited(
        &state,
        &caller,
        &rid,
        "service.webhook_secret",
        &id,
        None,
        None,
        move |st| async move {
            let store = Arc::clone(&st.secrets);
            tokio::task::spawn_blocking(move || store.set(&sid, &value))
                .await
                .map_err(|e| ApiError::internal("storing the webhook secret", e))?
                .map_err(|e| ApiError::internal("storing the webhook secret", e))
        },
    )
    .await?;
    Ok(axum::Json(json!({ "service_id": id, "webhook_secret": s })).into_response())
}

#[cfg(test)]
mod tests {
    use caio_security::AuthMethod;
    use caio_trace::AuditQuery;

    use super::*;

    #[tokio::test]
    async fn a_change_that_fails_to_apply_is_followed_by_a_failed_entry() {
        let dir = tempfile::tempdir().unwrap();
        let config = caio_config::Config {
            data_dir: dir.path().to_path_buf(),
            ..caio_config::Config::default()
        };
        let (state, _) = AppState::build(config).unwrap();
        let caller = Identity::new(
            "tester".into(),
            Role::Admin,
            "public".into(),
            Vec::new(),
            0,
            None,
            AuthMethod::ApiKey,
        );
        let rid = RequestId(Arc::from("req-1"));
        let r: ApiResult<()> = audited(
            &state,
            &caller,
            &rid,
            "service.update",
            "svc",
            Some("sha256:before".into()),
            Some("sha256:after".into()),
            |_| async { Err(ApiError::new("SERVICE_NOT_FOUND", "gone meanwhile")) },
        )
        .await;
        assert_eq!(r.unwrap_err().code, "SERVICE_NOT_FOUND");
        let ok: ApiResult<u8> = audited(
            &state,
            &caller,
            &rid,
            "service.update",
            "svc",
            Some("sha256:before".into()),
            Some("sha256:after".into()),
            |_| async { Ok(7) },
        )
        .await;
        assert_eq!(ok.unwrap(), 7);
        let page = state.audit.query(&AuditQuery::default()).unwrap();
        let got: Vec<(&str, Option<&str>, Option<&str>)> = page
            .items
            .iter()
            .rev()
            .map(|e| {
                (
                    e.event.action.as_str(),
                    e.event.before.as_deref(),
                    e.event.after.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "service.update",
                    Some("sha256:before"),
                    Some("sha256:after")
                ),
                (
                    "service.update.failed",
                    Some("sha256:before"),
                    Some("sha256:before")
                ),
                (
                    "service.update",
                    Some("sha256:before"),
                    Some("sha256:after")
                ),
            ]
        );
    }
}
