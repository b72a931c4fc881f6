//! Building responses, and running a [`Behavior`] for one request.

use std::time::Duration;

use bytes::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use hyper::{Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::Behavior;
use crate::body::MockBody;
use crate::protocols;

pub(crate) const APPLICATION_JSON: &str = "application/json";
pub(crate) const EVENT_STREAM: &str = "text/event-stream";

/// The header carrying the 1-based count of requests to the path.
pub(crate) const X_MOCK_REQUEST: &str = "x-mock-request";

/// What a behaviour may look at: the request's number on its path and its body.
#[derive(Debug)]
pub(crate) struct Ctx<'a> {
    pub(crate) n: usize,
    pub(crate) body: &'a Bytes,
    /// Signalled to make the connection task drop the connection.
    pub(crate) reset: &'a Notify,
}

/// A response with `content_type` and `x-mock-request: n`.
pub(crate) fn response(
    status: StatusCode,
    n: usize,
    content_type: &'static str,
    body: MockBody,
) -> Response<MockBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(X_MOCK_REQUEST, HeaderValue::from(n));
    resp
}

/// A JSON response.
pub(crate) fn json_response(status: StatusCode, n: usize, value: &Value) -> Response<MockBody> {
    response(status, n, APPLICATION_JSON, MockBody::full(to_bytes(value)))
}

pub(crate) fn to_bytes(value: &Value) -> Bytes {
    // Serializing a `Value` cannot fail (its map keys are strings).
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

/// `{"error":{"message":…,"code":status}}`: the mock's own errors and [`Behavior::Status`].
pub(crate) fn mock_error(status: StatusCode, n: usize, message: &str) -> Response<MockBody> {
    json_response(
        status,
        n,
        &json!({"error": {"message": message, "code": status.as_u16()}}),
    )
}

/// Runs `behavior` for one request.
pub(crate) async fn run(mut behavior: Behavior, ctx: Ctx<'_>) -> Response<MockBody> {
    let n = ctx.n;
    loop {
        match behavior {
            Behavior::Delayed { delay, then } => {
                tokio::time::sleep(delay).await;
                behavior = *then;
            }
            Behavior::Json {
                status,
                body,
                headers,
            } => return scripted_json(status, &body, &headers, n),
            Behavior::Echo => {
                let echoed = serde_json::from_slice::<Value>(ctx.body).unwrap_or(Value::Null);
                return json_response(StatusCode::OK, n, &json!({ "echo": echoed }));
            }
            Behavior::OpenAiChat => return protocols::openai_chat(n, ctx.body),
            Behavior::OpenAiEmbeddings => return protocols::openai_embeddings(n, ctx.body),
            Behavior::AnthropicMessages => return protocols::anthropic_messages(n, ctx.body),
            Behavior::CaioSdk => return protocols::caio_sdk(n, ctx.body),
            Behavior::Status {
                status,
                retry_after_s,
            } => {
                let Ok(code) = StatusCode::from_u16(status) else {
                    return invalid_script(n, &format!("invalid status {status}"));
                };
                let mut resp = json_response(
                    code,
                    n,
                    &json!({"error": {"message": "mock failure", "code": status}}),
                );
                if let Some(s) = retry_after_s {
                    resp.headers_mut().insert(RETRY_AFTER, HeaderValue::from(s));
                }
                return resp;
            }
            Behavior::Reset => {
                ctx.reset.notify_one();
                return std::future::pending().await;
            }
            Behavior::Hang => return std::future::pending().await,
            Behavior::Malformed => {
                return response(
                    StatusCode::OK,
                    n,
                    APPLICATION_JSON,
                    MockBody::full(Bytes::from_static(b"{\"truncated\": ")),
                );
            }
            Behavior::Oversized { bytes } => return oversized(n, bytes),
            Behavior::SlowBody {
                body,
                chunks,
                interval,
            } => return slow_body(n, &body, chunks, interval),
        }
    }
}

fn scripted_json(
    status: u16,
    body: &Value,
    headers: &[(String, String)],
    n: usize,
) -> Response<MockBody> {
    let Ok(code) = StatusCode::from_u16(status) else {
        return invalid_script(n, &format!("invalid status {status}"));
    };
    let mut resp = json_response(code, n, body);
    for (name, value) in headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) else {
            return invalid_script(n, &format!("invalid header {name:?}: {value:?}"));
        };
        if name == CONTENT_TYPE {
            resp.headers_mut().insert(name, value);
        } else {
            resp.headers_mut().append(name, value);
        }
    }
    resp
}

fn invalid_script(n: usize, what: &str) -> Response<MockBody> {
    mock_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        n,
        &format!("mock upstream: {what} in a scripted behaviour"),
    )
}

/// A JSON object of exactly `bytes` bytes: `{"pad":"xxx…"}`, or `{` spaces `}` below 10 bytes
/// (`{}` below 2, the smallest JSON object).
fn oversized(n: usize, bytes: usize) -> Response<MockBody> {
    const HEAD: &[u8] = b"{\"pad\":\"";
    const TAIL: &[u8] = b"\"}";
    let body = if bytes >= HEAD.len() + TAIL.len() {
        MockBody::padded(HEAD, bytes - HEAD.len() - TAIL.len(), TAIL)
    } else {
        let mut small = vec![b'{'];
        small.resize(bytes.saturating_sub(1).max(1), b' ');
        small.push(b'}');
        MockBody::full(small)
    };
    response(StatusCode::OK, n, APPLICATION_JSON, body)
}

/// `body` serialized, cut into `chunks` non-empty pieces sent `interval` apart.
fn slow_body(n: usize, body: &Value, chunks: usize, interval: Duration) -> Response<MockBody> {
    let bytes = to_bytes(body);
    let len = bytes.len();
    let k = chunks.clamp(1, len.max(1));
    let frames = (0..k)
        .map(|i| bytes.slice(i * len / k..(i + 1) * len / k))
        .collect();
    response(
        StatusCode::OK,
        n,
        APPLICATION_JSON,
        MockBody::paced(frames, Some(interval)),
    )
}
