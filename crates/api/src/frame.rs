//! What every request goes through: a request id, the timeout, the in-flight gauge, per-route
//! metrics and the access log.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::Subject;
use crate::error::{ApiError, ErrorCode};
use crate::metrics::{RequestLabels, RouteLabel};
use crate::state::AppState;

/// The request id header, accepted from clients when well formed and always returned.
pub const REQUEST_ID: &str = "x-request-id";

/// The id of the current request, in request extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

static NEXT_ID: AtomicU64 = AtomicU64::new(0);
static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// A process-unique id: a random per-process prefix and a counter (cheap, and distinct across
/// replicas).
fn new_id() -> String {
    let prefix = PREFIX.get_or_init(|| {
        let mut b = [0u8; 4];
        // Without randomness, the process id still separates replicas on one host.
        if getrandom::fill(&mut b).is_err() {
            b = std::process::id().to_be_bytes();
        }
        hex::encode(b)
    });
    format!("{prefix}-{:08x}", NEXT_ID.fetch_add(1, Ordering::Relaxed))
}

/// A client's id is kept when it is 1–128 characters of `[A-Za-z0-9._:-]`.
fn acceptable(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

struct InFlight(prometheus_client::metrics::gauge::Gauge);

impl InFlight {
    fn enter(state: &AppState) -> InFlight {
        state.metrics.in_flight.inc();
        InFlight(state.metrics.in_flight.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Outer middleware: request id, timeout, in-flight gauge, access log.
pub async fn frame(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id: Arc<str> = match req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
    {
        Some(v) => Arc::from(v),
        None => Arc::from(new_id().as_str()),
    };
    req.extensions_mut().insert(RequestId(Arc::clone(&id)));
    let method = req.method().clone();
    let path = state.config.log.access.then(|| req.uri().path().to_owned());
    // Decremented on drop, so a request whose client went away still leaves the gauge.
    let _in_flight = InFlight::enter(&state);
    let timeout = Duration::from_millis(state.config.limits.request_timeout_ms);
    let mut resp = match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            "TIMEOUT",
            format!(
                "the request took longer than {} ms",
                state.config.limits.request_timeout_ms
            ),
        )
        .into_response(),
    };
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    if let Some(path) = path {
        let subject = resp.extensions().get::<Subject>().map(|s| Arc::clone(&s.0));
        let code = resp.extensions().get::<ErrorCode>().map(|c| c.0);
        tracing::info!(
            target: "caio_api::access",
            request_id = %id,
            method = %method,
            path = %path,
            status = resp.status().as_u16(),
            micros = started.elapsed().as_micros() as u64,
            subject = subject.as_deref().unwrap_or("-"),
            error = code.unwrap_or("-"),
            "request"
        );
    }
    resp
}

/// Inner middleware on matched routes: counts and times requests by route template.
pub async fn measure(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_owned();
    let method = req.method().as_str().to_owned();
    let resp = next.run(req).await;
    state
        .metrics
        .request_seconds
        .get_or_create(&RouteLabel {
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            method,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}
