//! `POST /webhooks/services/{id}/events`: heartbeats and status from services, authenticated by
//! an HMAC-SHA256 signature over `timestamp.body` with the service's secret, inside a replay
//! window. A call that is unsigned, stale, replayed or wrongly signed gets 401 and changes
//! nothing.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use caio_gateway::exec::health::ReportedStatus;
use caio_security::webhook::{self, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use serde::Deserialize;
use serde_json::json;

use crate::error::{ApiError, ApiResult};
use crate::extract::{self, P};
use crate::metrics::ReasonLabels;
use crate::state::{AppState, ServiceStatus};

/// Largest webhook body.
const MAX_EVENT_BYTES: usize = 16 * 1024;

/// One event.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Event {
    /// `heartbeat` or `status`.
    #[serde(rename = "type")]
    kind: String,
    /// `healthy`, `degraded`, `down` (a heartbeat without one means healthy).
    status: Option<String>,
    /// Free text, at most 512 characters.
    detail: Option<String>,
}

fn refuse(state: &AppState, reason: &'static str, message: &str) -> ApiError {
    state
        .metrics
        .webhook_rejections
        .get_or_create(&ReasonLabels { reason })
        .inc();
    match reason {
        // The replay memory is full of signatures still inside the window: try again shortly.
        "busy" => {
            let mut e = ApiError::new("UNAVAILABLE", "too many webhook calls; retry shortly");
            e.retry_after_s = Some(1);
            e
        }
        // A provisioned secret shorter than 32 bytes is the operator's mistake, not the caller's.
        "weak_secret" => ApiError::internal(
            "webhook verification",
            "the service's webhook secret is shorter than 32 bytes",
        ),
        _ => ApiError::new("UNAUTHENTICATED", message.to_owned())
            .with_details(json!({ "reason": reason })),
    }
}

/// The secret unknown ids are checked against.
fn unknown_service_secret() -> &'static str {
    static SECRET: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SECRET.get_or_init(|| {
        crate::secrets::generate().unwrap_or_else(|_| {
            // Without randomness the dummy is still unknown to callers: the process start time.
            format!("{:064x}", caio_trace::now_ms())
        })
    })
}

/// POST /webhooks/services/{id}/events
pub async fn event(
    State(state): State<Arc<AppState>>,
    P(id): P<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let limit = MAX_EVENT_BYTES.min(state.config.limits.body_bytes);
    let raw = extract::bytes(&headers, body, limit).await?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (ts, sig) = (header(TIMESTAMP_HEADER), header(SIGNATURE_HEADER));
    let now_s = caio_trace::now_ms() / 1000;
    let unsigned = ts.is_none() && sig.is_none();
    if !unsigned || state.config.webhooks.signature_required {
        // An unknown service is verified against a random secret of this process: the same
        // checks run in the same order and fail as a bad signature, so neither the answer nor
        // its timing tells which ids exist.
        let secret = state
            .secrets
            .get(&id)
            .unwrap_or_else(|| unknown_service_secret().to_owned());
        let window = state.config.webhooks.replay_window_s;
        let verified = webhook::verify(secret.as_bytes(), ts, sig, &raw, now_s, window)
            .map_err(|e| refuse(&state, e.reason(), &e.to_string()))?;
        if let Some(sig) = sig {
            state
                .replay
                .check_and_remember(sig, verified, now_s)
                .map_err(|e| refuse(&state, e.reason(), &e.to_string()))?;
        }
    }
    let event: Event = serde_json::from_slice(&raw).map_err(|e| {
        ApiError::new(
            "INVALID_BODY",
            format!("line {} column {}: {e}", e.line(), e.column()),
        )
    })?;
    let status = match (event.kind.as_str(), event.status.as_deref()) {
        ("heartbeat", None) => "healthy",
        ("heartbeat" | "status", Some(s @ ("healthy" | "degraded" | "down"))) => s,
        ("heartbeat" | "status", Some(other)) => {
            return Err(ApiError::new(
                "INVALID_BODY",
                format!("status `{other}` is not one of healthy, degraded, down"),
            ));
        }
        ("status", None) => {
            return Err(ApiError::new(
                "INVALID_BODY",
                "a status event needs `status`",
            ));
        }
        (other, _) => {
            return Err(ApiError::new(
                "INVALID_BODY",
                format!("event type `{other}` is not one of heartbeat, status"),
            ));
        }
    };
    if event
        .detail
        .as_ref()
        .is_some_and(|d| d.chars().count() > 512)
    {
        return Err(ApiError::new(
            "INVALID_BODY",
            "`detail` is longer than 512 characters",
        ));
    }
    if state.registry().snapshot().get(&id).is_none() {
        return Err(ApiError::service_not_found(&id));
    }
    // `down` takes the service out of routing (its circuit opens and stays open) until it
    // reports again; see caio_gateway::exec::health.
    state.gateway.health().report_status(
        &id,
        match status {
            "down" => ReportedStatus::Down,
            "degraded" => ReportedStatus::Degraded,
            _ => ReportedStatus::Healthy,
        },
    );
    state
        .status
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            id.clone(),
            ServiceStatus {
                status: status.to_owned(),
                last_event_ms: caio_trace::now_ms(),
                detail: event.detail,
            },
        );
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({ "service_id": id, "status": status })),
    )
        .into_response())
}
