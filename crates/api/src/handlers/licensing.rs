//! `/api/v1/licensing/*`: the license in force, and replacing it at run time.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use caio_security::{Action, Role};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{Caller, require};
use crate::error::{ApiError, ApiResult};
use crate::extract;
use crate::frame::RequestId;
use crate::handlers::services::audited;
use crate::licensing::Verdict;
use crate::state::AppState;

/// Runs the per-request license check of routing and execution; the warning, if any, goes on
/// the response as `x-caio-license-warning`.
pub(crate) fn gate(state: &AppState) -> ApiResult<Option<HeaderValue>> {
    match state.licensing.check_request()? {
        Verdict::Allow => Ok(None),
        Verdict::Warn(message) => {
            state.metrics.license_warnings.inc();
            Ok(HeaderValue::from_str(&message).ok())
        }
    }
}

/// The license's `execution` feature, for the endpoints that call services.
pub(crate) fn gate_execution(
    state: &AppState,
    warning: Option<HeaderValue>,
) -> ApiResult<Option<HeaderValue>> {
    match state.licensing.check_feature("execution")? {
        Verdict::Allow => Ok(warning),
        Verdict::Warn(message) => {
            state.metrics.license_warnings.inc();
            Ok(HeaderValue::from_str(&message).ok().or(warning))
        }
    }
}

/// The license's cap on registered services, before a registration.
pub(crate) fn gate_services(state: &AppState) -> ApiResult<Option<HeaderValue>> {
    match state
        .licensing
        .check_services(state.registry().snapshot().len())?
    {
        Verdict::Allow => Ok(None),
        Verdict::Warn(message) => {
            state.metrics.license_warnings.inc();
            Ok(HeaderValue::from_str(&message).ok())
        }
    }
}

/// Adds a license warning to a response.
pub(crate) fn warn(mut resp: Response, warning: Option<HeaderValue>) -> Response {
    if let Some(w) = warning {
        resp.headers_mut().insert("x-caio-license-warning", w);
    }
    resp
}

/// GET /api/v1/licensing/status (admins and operators)
pub async fn status(
    State(state): State<Arc<AppState>>,
    Extension(Caller(caller)): Extension<Caller>,
) -> ApiResult<Response> {
    if !matches!(caller.role, Role::Admin | Role::Operator) {
        return Err(ApiError::forbidden("read the license status")
            .with_details(json!({ "role": caller.role.as_str() })));
    }
    Ok(axum::Json(state.licensing.status()).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Activate {
    key: String,
}

/// POST /api/v1/licensing/activate (admins): `{"key": "CAIO-v2-…"}` replaces the license in
/// force without a restart; a refused key changes nothing.
pub async fn activate(
    State(state): State<Arc<AppState>>,
    Extension(Caller(caller)): Extension<Caller>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    require(&state, &caller, Action::KeysManage)?;
    let req: Activate =
        extract::small_json(&headers, body, 16 * 1024, r#"{"key": "CAIO-v2-…"}"#).await?;
    let before = state.licensing.usable().map(|l| l.key_id.clone());
    let refused = |e: crate::licensing::Refused| {
        ApiError::new("LICENSE_INVALID", format!("the key was refused: {e}"))
            .with_details(json!({ "reason": e.code() }))
    };
    let license = state.licensing.check(&req.key).map_err(refused)?;
    // Audited before it takes effect: no activation without its entry.
    let installed = Arc::clone(&license);
    audited(
        &state,
        &caller,
        &request_id,
        "license.activate",
        &license.key_id,
        before,
        Some(license.key_id.clone()),
        move |st| async move { st.licensing.install(&installed).map_err(refused) },
    )
    .await?;
    Ok(axum::Json(state.licensing.status()).into_response())
}
