//! API errors: one type that owns its HTTP status, its stable code and its body
//! `{"error": {"code", "message", "details"}}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use caio_contracts::ValidationReport;
use serde_json::{Value, json};

/// Every error code the API returns, with its status. docs/reference/api.md lists them and
/// `/openapi.json` names them; a test checks the three agree.
pub const ERROR_CODES: &[(&str, u16, &str)] = &[
    (
        "INVALID_BODY",
        400,
        "The body is not valid JSON/YAML or not the expected shape.",
    ),
    (
        "INVALID_CONTRACT",
        400,
        "The service contract failed validation.",
    ),
    (
        "INVALID_REQUEST",
        400,
        "The route request failed validation.",
    ),
    (
        "INVALID_POLICY",
        400,
        "The policy set failed validation or compilation.",
    ),
    (
        "INVALID_QUERY",
        400,
        "A query or path parameter is malformed.",
    ),
    (
        "ID_MISMATCH",
        400,
        "The id in the path and the id in the body differ.",
    ),
    (
        "UNAUTHENTICATED",
        401,
        "No credential, or a credential that is missing, malformed, expired, revoked or wrongly signed.",
    ),
    (
        "FORBIDDEN",
        403,
        "The credential is valid but its role may not do this.",
    ),
    ("NOT_FOUND", 404, "No such endpoint."),
    (
        "SERVICE_NOT_FOUND",
        404,
        "No such service visible to the caller.",
    ),
    (
        "TRACE_NOT_FOUND",
        404,
        "No such decision trace visible to the caller.",
    ),
    ("POLICY_VERSION_NOT_FOUND", 404, "No such policy version."),
    ("KEY_NOT_FOUND", 404, "No such API key."),
    (
        "METHOD_NOT_ALLOWED",
        405,
        "The endpoint exists but not with this method.",
    ),
    (
        "SERVICE_EXISTS",
        409,
        "A service with this id is already registered.",
    ),
    (
        "PAYLOAD_TOO_LARGE",
        413,
        "The body is larger than the configured limit.",
    ),
    (
        "UNSUPPORTED_MEDIA_TYPE",
        415,
        "The Content-Type is not JSON or YAML.",
    ),
    (
        "NO_MATCHING_SERVICE",
        422,
        "No service satisfies the request; details.rejected says why for each.",
    ),
    (
        "RATE_LIMITED",
        429,
        "The principal's rate limit is exhausted; retry after Retry-After seconds.",
    ),
    (
        "INTERNAL",
        500,
        "A bug or a failed store; the request id identifies it in the logs.",
    ),
    (
        "UNAVAILABLE",
        503,
        "The server is draining or a required dependency is down.",
    ),
    (
        "TIMEOUT",
        504,
        "The request took longer than the configured timeout.",
    ),
    (
        "APPROVAL_INVALID",
        403,
        "The approval token is malformed, forged, expired, already used, another principal's, or \
         for a different request; details.reason says which.",
    ),
    (
        "IDEMPOTENCY_IN_PROGRESS",
        409,
        "A request with this Idempotency-Key is still running; retry after Retry-After seconds.",
    ),
    (
        "IDEMPOTENCY_KEY_REUSED",
        422,
        "The Idempotency-Key was used before with a different request.",
    ),
    (
        "CHAIN_INFEASIBLE",
        422,
        "The stages of a chain were routed, but their composed guarantees break the chain's \
         bounds; nothing was called. details.broken lists each bound.",
    ),
    (
        "LICENSE_INVALID",
        403,
        "License enforcement is on and there is no valid license (missing, malformed, forged, \
         expired past its grace period, not yet valid, revoked); details.reason says which.",
    ),
    (
        "LICENSE_LIMIT",
        403,
        "The license's limit is reached (max_services, max_requests_per_day); details.limit \
         names it.",
    ),
    (
        "MODEL_NOT_FOUND",
        404,
        "The `model` of an OpenAI-compatible request is no alias, capability or visible service \
         id; GET /v1/models lists them.",
    ),
    (
        "UPSTREAM_FAILED",
        502,
        "Every candidate service failed or the execution deadline passed; details.execution lists \
         each attempt and fallback.",
    ),
    (
        "EMERGENCY_STOP",
        503,
        "Execution is stopped by an administrator (routing still works); \
         GET /api/v1/gateway/emergency-stop says since when and why.",
    ),
];

/// An error response.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code from [`ERROR_CODES`].
    pub code: &'static str,
    /// One sentence for people.
    pub message: String,
    /// Structured details (problems, rejected services, ...).
    pub details: Value,
    /// Seconds for `Retry-After` (429, 503).
    pub retry_after_s: Option<u64>,
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

/// Longest error message, in bytes. Messages quote what the client sent (an unknown field, a
/// model or version name); a longer one keeps its start and its end
/// ([`caio_contracts::abbreviate_to`]), so an error is never a copy of a large request.
pub const MAX_MESSAGE_BYTES: usize = 2048;

impl ApiError {
    /// An error with a code from [`ERROR_CODES`]; its status comes from the table. The message is
    /// cut to [`MAX_MESSAGE_BYTES`].
    pub fn new(code: &'static str, message: impl Into<String>) -> ApiError {
        let status = ERROR_CODES
            .iter()
            .find(|(c, _, _)| *c == code)
            .and_then(|(_, s, _)| StatusCode::from_u16(*s).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError {
            status,
            code,
            message: caio_contracts::abbreviate_to(message.into(), MAX_MESSAGE_BYTES),
            details: json!({}),
            retry_after_s: None,
        }
    }

    /// Adds details.
    pub fn with_details(mut self, details: Value) -> ApiError {
        self.details = details;
        self
    }

    /// A 500 whose cause is logged, not sent (it may name files or internals).
    pub fn internal(context: &str, cause: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "{context}");
        ApiError::new("INTERNAL", format!("{context} failed; see the server log"))
    }

    /// A validation report as a 400 with one entry per problem.
    pub fn invalid(code: &'static str, report: &ValidationReport) -> ApiError {
        let problems: Vec<Value> = report
            .problems
            .iter()
            .map(|p| {
                json!({
                    "path": if p.path.is_empty() { "/" } else { p.path.as_str() },
                    "line": p.line,
                    "message": p.message,
                })
            })
            .collect();
        let first = report
            .problems
            .first()
            .map(|p| {
                let at = p.line.map(|l| format!("line {l}: ")).unwrap_or_default();
                let path = if p.path.is_empty() { "/" } else { &p.path };
                format!(": {at}{path}: {}", p.message)
            })
            .unwrap_or_default();
        ApiError::new(
            code,
            format!(
                "invalid {} ({} problem{}){first}",
                report.kind,
                report.problems.len(),
                if report.problems.len() == 1 { "" } else { "s" }
            ),
        )
        .with_details(json!({ "problems": problems }))
    }

    /// 404 for a service the caller cannot see (another tenant's service looks absent).
    pub fn service_not_found(id: &str) -> ApiError {
        ApiError::new(
            "SERVICE_NOT_FOUND",
            format!("service `{id}` is not registered"),
        )
    }

    /// 403.
    pub fn forbidden(what: &str) -> ApiError {
        ApiError::new("FORBIDDEN", format!("this credential may not {what}"))
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({"error": {"code": self.code, "message": self.message, "details": self.details}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body().to_string();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(s) = self.retry_after_s {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"caio\""),
            );
        }
        // Handlers and middleware read the code from here for metrics and the access log.
        response.extensions_mut().insert(ErrorCode(self.code));
        response
    }
}

/// The code of an error response, for middleware.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);
