//! The router: every endpoint of [`crate::openapi::ENDPOINTS`], the authentication layer on the
//! protected ones, metrics, the request frame and CORS.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::auth::require_identity;
use crate::error::ApiError;
use crate::frame::{REQUEST_ID, frame, measure};
use crate::handlers::{
    execute, keys, licensing, openai, ops, policies, routing, services, traces, webhooks,
};
use crate::state::AppState;

async fn not_found() -> Response {
    ApiError::new("NOT_FOUND", "no such endpoint; /openapi.json lists them").into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::new(
        "METHOD_NOT_ALLOWED",
        "the endpoint exists but not with this method; /openapi.json lists them",
    )
    .into_response()
}

/// A panic in a handler becomes a JSON 500 instead of a dropped connection (the panic message
/// goes to the log, not to the client).
fn panic_response(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = err
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| err.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned());
    ApiError::internal("handling the request", what).into_response()
}

async fn openapi() -> Response {
    axum::Json(crate::openapi::document()).into_response()
}

/// Builds the application.
pub fn app(state: Arc<AppState>) -> Router {
    let protected = Router::new()
        .route(
            "/api/v1/services",
            post(services::register).get(services::list),
        )
        .route(
            "/api/v1/services/{id}",
            get(services::get)
                .put(services::update)
                .delete(services::delete),
        )
        .route(
            "/api/v1/services/{id}/webhook-secret",
            post(services::rotate_secret),
        )
        .route("/api/v1/discover", post(routing::discover))
        .route("/api/v1/route", post(routing::route))
        .route("/api/v1/execute", post(execute::execute))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/models", get(openai::models))
        .route("/api/v1/gateway/health", get(execute::health))
        .route("/api/v1/licensing/status", get(licensing::status))
        .route("/api/v1/licensing/activate", post(licensing::activate))
        .route(
            "/api/v1/gateway/emergency-stop",
            get(execute::stop_state).put(execute::set_stop),
        )
        .route("/api/v1/traces", get(traces::query))
        .route("/api/v1/traces/{id}", get(traces::get))
        .route("/api/v1/policies", get(policies::active).put(policies::put))
        .route("/api/v1/policies/validate", post(policies::validate))
        .route("/api/v1/policies/versions", get(policies::versions))
        .route(
            "/api/v1/policies/versions/{version}",
            get(policies::version),
        )
        .route("/api/v1/policies/history", get(policies::history))
        .route("/api/v1/policies/diff", get(policies::diff))
        .route("/api/v1/policies/rollback", post(policies::rollback))
        .route("/api/v1/keys", post(keys::create).get(keys::list))
        .route("/api/v1/keys/{id}", get(keys::get).delete(keys::revoke))
        .route("/api/v1/audit", get(keys::audit_log))
        .route(
            "/api/v1/runtime/dependencies",
            get(ops::runtime_dependencies),
        )
        .route_layer(from_fn_with_state(Arc::clone(&state), require_identity));
    let public = Router::new()
        .route("/health", get(ops::health))
        .route("/health/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .route("/api/v1/version", get(ops::version))
        .route("/openapi.json", get(openapi))
        .route("/webhooks/services/{id}/events", post(webhooks::event));
    let mut app = public
        .merge(protected)
        .route_layer(from_fn_with_state(Arc::clone(&state), measure))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(from_fn_with_state(Arc::clone(&state), frame));
    let origins: Vec<HeaderValue> = state
        .config
        .cors
        .allowed_origins
        .iter()
        .filter(|o| o.as_str() != "*")
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    let any = state.config.cors.allowed_origins.iter().any(|o| o == "*");
    if any || !origins.is_empty() {
        let allow = if any {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(origins)
        };
        app = app.layer(
            CorsLayer::new()
                .allow_origin(allow)
                .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    HeaderName::from_static(REQUEST_ID),
                ])
                .expose_headers([
                    HeaderName::from_static(REQUEST_ID),
                    HeaderName::from_static("x-caio-decision-id"),
                    header::RETRY_AFTER,
                ])
                .max_age(Duration::from_secs(600)),
        );
    }
    app.with_state(state)
}
