//! Request inputs with API errors instead of axum's plain-text rejections: bodies (JSON or YAML,
//! size-limited), query strings and path parameters.

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use caio_contracts::Format;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ApiResult};

/// A request body as text, with the syntax its Content-Type names.
#[derive(Debug)]
pub struct Text {
    /// The body.
    pub text: String,
    /// JSON, YAML, or Auto when no Content-Type was sent.
    pub format: Format,
}

/// The syntax a Content-Type names; `None` for a type that is neither JSON nor YAML.
pub fn format_of(headers: &HeaderMap) -> Option<Format> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Some(Format::Auto);
    };
    let ct = value.to_str().ok()?;
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Some(Format::Json),
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => {
            Some(Format::Yaml)
        }
        // Not text/plain or form types: a web page may send those cross-origin without asking.
        "" => Some(Format::Auto),
        _ if essence.ends_with("+json") => Some(Format::Json),
        _ => None,
    }
}

/// Reads the whole body up to `limit` bytes.
pub async fn bytes(headers: &HeaderMap, body: Body, limit: usize) -> ApiResult<Bytes> {
    let too_large = || {
        ApiError::new(
            "PAYLOAD_TOO_LARGE",
            format!("the body is larger than the {limit}-byte limit"),
        )
        .with_details(serde_json::json!({ "limit_bytes": limit }))
    };
    // Refuse early when the client announces the size.
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(too_large());
    }
    match axum::body::to_bytes(body, limit).await {
        Ok(b) => Ok(b),
        Err(e) => {
            // The only error besides the limit is a broken connection; http-body-util's limit
            // error says "length limit exceeded" somewhere in the chain.
            let mut limit_hit = false;
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(c) = cause {
                limit_hit |= c.to_string().contains("length limit");
                cause = c.source();
            }
            if limit_hit {
                Err(too_large())
            } else {
                Err(ApiError::new(
                    "INVALID_BODY",
                    "the request body could not be read",
                ))
            }
        }
    }
}

/// Reads a JSON or YAML body as UTF-8 text.
pub async fn text(headers: &HeaderMap, body: Body, limit: usize) -> ApiResult<Text> {
    let format = format_of(headers).ok_or_else(|| {
        ApiError::new(
            "UNSUPPORTED_MEDIA_TYPE",
            "send application/json or application/yaml",
        )
    })?;
    let raw = bytes(headers, body, limit).await?;
    let text = String::from_utf8(raw.to_vec()).map_err(|e| {
        ApiError::new(
            "INVALID_BODY",
            format!(
                "the body is not UTF-8 (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    if text.trim().is_empty() {
        return Err(ApiError::new("INVALID_BODY", "the body is empty"));
    }
    Ok(Text { text, format })
}

/// Parses a small JSON body (keys, rollback requests) with the error naming line and column.
pub fn json<T: DeserializeOwned>(text: &Text) -> ApiResult<T> {
    serde_json::from_str(&text.text).map_err(|e| {
        ApiError::new(
            "INVALID_BODY",
            format!("line {} column {}: {e}", e.line(), e.column()),
        )
        .with_details(serde_json::json!({ "line": e.line(), "column": e.column() }))
    })
}

/// A query string, with INVALID_QUERY on error.
#[derive(Debug)]
pub struct Q<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(v)| Q(v))
            .map_err(|e| ApiError::new("INVALID_QUERY", e.body_text()))
    }
}

/// Path parameters, with INVALID_QUERY on error.
#[derive(Debug)]
pub struct P<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for P<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| P(v))
            .map_err(|e| ApiError::new("INVALID_QUERY", e.body_text()))
    }
}

/// A small JSON body (at most `limit` bytes) of type `T`; `expected` shows the shape in the
/// error (`400 INVALID_BODY`).
pub async fn small_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    expected: &str,
) -> ApiResult<T> {
    let bytes = bytes(headers, body, limit).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new("INVALID_BODY", format!("expected {expected}: {e}")))
}
