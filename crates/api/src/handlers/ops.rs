//! Operations endpoints: liveness, readiness, runtime dependencies, metrics, version.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use crate::error::ApiError;
use crate::state::{AppState, BUILD};

/// GET /health: the process answers.
pub async fn health() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

/// One runtime dependency.
#[derive(Debug, Serialize)]
pub struct Dependency {
    /// Name.
    pub name: &'static str,
    /// Whether the server cannot serve without it.
    pub required: bool,
    /// `up`, `down`, `not_configured`.
    pub state: &'static str,
    /// How long the probe took.
    pub latency_ms: f64,
    /// What was found.
    pub detail: String,
}

fn probe(
    name: &'static str,
    required: bool,
    f: impl FnOnce() -> Result<String, String>,
) -> Dependency {
    let started = Instant::now();
    let (state, detail) = match f() {
        Ok(d) => ("up", d),
        Err(d) => ("down", d),
    };
    Dependency {
        name,
        required,
        state,
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        detail,
    }
}

/// Probes every dependency (blocking: run off the async workers).
pub fn dependencies(state: &AppState) -> Vec<Dependency> {
    let mut out = vec![
        probe("trace_store", true, || match state.traces.problem() {
            None => Ok(format!("{} records", state.traces.store().len())),
            Some(problem) => Err(problem),
        }),
        probe("audit_log", true, || {
            Ok(format!("head seq {}", state.audit.head().seq))
        }),
        probe("policy_store", true, || {
            state
                .policies
                .active()
                .map(|a| {
                    a.map_or("no active version (empty set)".to_owned(), |(v, _)| {
                        v.version
                    })
                })
                .map_err(|e| e.to_string())
        }),
        probe("key_store", true, || {
            state
                .keys
                .list()
                .map(|k| format!("{} keys", k.len()))
                .map_err(|e| e.to_string())
        }),
    ];
    if state.config.traces.backend == caio_config::TraceBackend::File {
        let dir = state.config.data_dir.clone();
        out.push(probe("data_dir", true, move || {
            let probe = dir.join(format!(".caio-probe-{}", std::process::id()));
            std::fs::write(&probe, b"ok")
                .and_then(|()| std::fs::remove_file(&probe))
                .map(|()| "writable".to_owned())
                .map_err(|e| format!("not writable: {e}"))
        }));
    }
    out.push(match &state.config.redis.url {
        None => Dependency {
            name: "redis",
            required: state.config.redis.required,
            state: "not_configured",
            latency_ms: 0.0,
            detail: "embedded default: no Redis".to_owned(),
        },
        Some(_) => {
            let checks = caio_config::check_connections(&state.config);
            let redis = checks.iter().find(|c| c.name == "redis.reachable");
            Dependency {
                name: "redis",
                required: state.config.redis.required,
                state: if redis.is_some_and(|c| c.passed()) {
                    "up"
                } else {
                    "down"
                },
                latency_ms: 0.0,
                detail: redis.map(|c| c.detail.clone()).unwrap_or_default(),
            }
        }
    });
    out
}

/// GET /health/ready: 200 when every required dependency is up and the server is not draining,
/// else 503 with the reasons.
pub async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let mut reasons = Vec::new();
    if state.draining.load(Ordering::Relaxed) {
        reasons.push("draining: shutdown in progress".to_owned());
    }
    if let Some(problem) = state.traces.problem() {
        reasons.push(format!("trace_store: {problem}"));
    }
    if !state.audit_healthy.load(Ordering::Relaxed) {
        reasons.push("audit_log: the last write failed".to_owned());
    }
    if reasons.is_empty() {
        axum::Json(json!({ "status": "ready" })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "not_ready", "reasons": reasons })),
        )
            .into_response()
    }
}

/// GET /api/v1/runtime/dependencies (admins and operators: it names stores and their state)
pub async fn runtime_dependencies(
    State(state): State<Arc<AppState>>,
    axum::Extension(crate::auth::Caller(caller)): axum::Extension<crate::auth::Caller>,
) -> Response {
    if !matches!(
        caller.role,
        caio_security::Role::Admin | caio_security::Role::Operator
    ) {
        return ApiError::forbidden("read runtime dependencies")
            .with_details(json!({ "role": caller.role.as_str() }))
            .into_response();
    }
    let s = Arc::clone(&state);
    match tokio::task::spawn_blocking(move || dependencies(&s)).await {
        Ok(deps) => {
            let ok = deps.iter().all(|d| !d.required || d.state == "up");
            axum::Json(json!({
                "status": if ok { "ok" } else { "degraded" },
                "dependencies": deps,
            }))
            .into_response()
        }
        Err(e) => ApiError::internal("probing dependencies", e).into_response(),
    }
}

/// GET /metrics
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    if let Some(disk) = state.traces.store().disk_usage() {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        state.metrics.trace_log_bytes.set(gauge(disk.bytes));
        state.metrics.trace_segments.set(gauge(disk.segments));
    }
    match state.metrics.encode() {
        Ok(text) => {
            let mut r = text.into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        Err(e) => ApiError::internal("encoding metrics", e).into_response(),
    }
}

/// GET /api/v1/version
pub async fn version(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(json!({
        "version": BUILD.version,
        "git_commit": BUILD.git_commit,
        "build_date": BUILD.build_date,
        "mode": state.config.mode.as_str(),
        "uptime_s": state.started.elapsed().as_secs(),
    }))
    .into_response()
}
