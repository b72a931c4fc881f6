//! Adapters: how a request is put to a service of each wire protocol (`api.adapter`), and how
//! its answer is read back. See docs/service-protocol.md for the `caio_sdk` and `http_json`
//! conventions and the service-reported metrics header.

use std::time::Duration;

use bytes::Bytes;
use caio_contracts::model::{Adapter, ApiSpec};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, header};
use serde_json::{Value, json};

use super::client::{CallError, Inbound, Outbound};

/// Header a service may answer with to report metrics: a JSON object with any of `accuracy`
/// (0–1), `cost` (in the contract's currency) and `latency_ms` (the service's own time).
pub const METRICS_HEADER: &str = "x-caio-metrics";
/// The decision a call belongs to.
pub const DECISION_HEADER: &str = "x-caio-decision-id";
/// Milliseconds the service has for this attempt.
pub const DEADLINE_HEADER: &str = "x-caio-deadline-ms";
/// The `anthropic-version` sent to Anthropic-compatible services.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// What one call is about.
#[derive(Debug, Clone, Copy)]
pub struct CallContext<'a> {
    /// The decision.
    pub decision_id: &'a str,
    /// The service called.
    pub service_id: &'a str,
    /// The first capability the request asked for.
    pub capability: &'a str,
    /// The request's payload.
    pub payload: &'a Value,
    /// Time this attempt has.
    pub attempt_timeout: Duration,
    /// 1-based attempt number on this service.
    pub attempt: u32,
    /// The upstream credential, read from the environment variable the contract names.
    pub credential: Option<&'a str>,
}

/// What a service reported about its own call.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reported {
    /// Accuracy or confidence in [0, 1].
    pub accuracy: Option<f64>,
    /// Cost of the call.
    pub cost: Option<f64>,
    /// The service's own processing time.
    pub latency_ms: Option<f64>,
}

/// A service's answer, read.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The output returned to the caller.
    pub output: Value,
    /// Metrics the service reported.
    pub reported: Reported,
}

/// The wire name of an adapter.
pub fn name(adapter: Adapter) -> &'static str {
    match adapter {
        Adapter::HttpJson => "http_json",
        Adapter::OpenaiChat => "openai_chat",
        Adapter::OpenaiEmbeddings => "openai_embeddings",
        Adapter::AnthropicMessages => "anthropic_messages",
        Adapter::CaioSdk => "caio_sdk",
    }
}

/// The path called when the contract names no `execute` endpoint.
fn default_path(adapter: Adapter) -> Option<&'static str> {
    match adapter {
        Adapter::HttpJson => None,
        Adapter::OpenaiChat => Some("/v1/chat/completions"),
        Adapter::OpenaiEmbeddings => Some("/v1/embeddings"),
        Adapter::AnthropicMessages => Some("/v1/messages"),
        Adapter::CaioSdk => Some("/caio/v1/execute"),
    }
}

/// The URL and method of a service's `execute` endpoint.
pub fn endpoint(api: &ApiSpec) -> Result<(Method, Uri), CallError> {
    let (method, path) = match api.endpoints.get("execute") {
        Some(e) => (
            Method::from_bytes(e.method.as_bytes())
                .map_err(|_| CallError::Config(format!("invalid method `{}`", e.method)))?,
            e.path.as_str(),
        ),
        None => (
            Method::POST,
            default_path(api.adapter).ok_or_else(|| {
                CallError::Config(format!(
                    "the contract names no `execute` endpoint for the {} adapter",
                    name(api.adapter)
                ))
            })?,
        ),
    };
    let base = api.base_url.trim_end_matches('/');
    let uri: Uri = format!("{base}{path}")
        .parse()
        .map_err(|e| CallError::Config(format!("invalid service URL `{base}{path}`: {e}")))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => Ok((method, uri)),
        _ => Err(CallError::Config(format!(
            "the service URL `{base}{path}` is not an http(s) URL with a host"
        ))),
    }
}

fn json_headers(ctx: &CallContext<'_>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(ctx.decision_id) {
        h.insert(HeaderName::from_static(DECISION_HEADER), v);
    }
    h.insert(
        HeaderName::from_static(DEADLINE_HEADER),
        HeaderValue::from(u64::try_from(ctx.attempt_timeout.as_millis()).unwrap_or(u64::MAX)),
    );
    h
}

fn bearer(h: &mut HeaderMap, credential: Option<&str>) -> Result<(), CallError> {
    if let Some(c) = credential {
        let mut v = HeaderValue::from_str(&format!("Bearer {c}")).map_err(|_| {
            CallError::Config("the upstream credential is not a valid header value".into())
        })?;
        v.set_sensitive(true);
        h.insert(header::AUTHORIZATION, v);
    }
    Ok(())
}

/// The payload as an object with its `model`: the contract's `api.model` when set, else the
/// caller's, else the service id.
fn with_model(
    payload: &Value,
    api: &ApiSpec,
    service_id: &str,
) -> Result<serde_json::Map<String, Value>, CallError> {
    let mut body = payload
        .as_object()
        .cloned()
        .ok_or_else(|| CallError::Config("the payload must be a JSON object".into()))?;
    match &api.model {
        Some(m) => {
            body.insert("model".into(), Value::String(m.clone()));
        }
        None => {
            body.entry("model")
                .or_insert_with(|| Value::String(service_id.to_owned()));
        }
    }
    Ok(body)
}

/// Builds the request for one attempt. `stream` asks an OpenAI chat service for SSE.
pub fn build(api: &ApiSpec, ctx: &CallContext<'_>, stream: bool) -> Result<Outbound, CallError> {
    let (method, uri) = endpoint(api)?;
    let mut headers = json_headers(ctx);
    let body: Value = match api.adapter {
        Adapter::HttpJson => {
            bearer(&mut headers, ctx.credential)?;
            ctx.payload.clone()
        }
        Adapter::CaioSdk => {
            bearer(&mut headers, ctx.credential)?;
            json!({
                "protocol": "caio/v1",
                "decision_id": ctx.decision_id,
                "service_id": ctx.service_id,
                "capability": ctx.capability,
                "payload": ctx.payload,
                "deadline_ms": u64::try_from(ctx.attempt_timeout.as_millis()).unwrap_or(u64::MAX),
                "attempt": ctx.attempt,
            })
        }
        Adapter::OpenaiChat | Adapter::OpenaiEmbeddings => {
            bearer(&mut headers, ctx.credential)?;
            let mut body = with_model(ctx.payload, api, ctx.service_id)?;
            if api.adapter == Adapter::OpenaiChat {
                if stream {
                    body.insert("stream".into(), Value::Bool(true));
                    headers.insert(
                        header::ACCEPT,
                        HeaderValue::from_static("text/event-stream"),
                    );
                } else {
                    body.remove("stream");
                }
            }
            Value::Object(body)
        }
        Adapter::AnthropicMessages => {
            if let Some(c) = ctx.credential {
                let mut v = HeaderValue::from_str(c).map_err(|_| {
                    CallError::Config("the upstream credential is not a valid header value".into())
                })?;
                v.set_sensitive(true);
                headers.insert(HeaderName::from_static("x-api-key"), v);
            }
            headers.insert(
                HeaderName::from_static("anthropic-version"),
                HeaderValue::from_static(ANTHROPIC_VERSION),
            );
            let mut body = with_model(ctx.payload, api, ctx.service_id)?;
            body.entry("max_tokens").or_insert_with(|| json!(1024));
            body.remove("stream");
            Value::Object(body)
        }
    };
    let body = serde_json::to_vec(&body)
        .map_err(|e| CallError::Config(format!("the payload does not serialize: {e}")))?;
    Ok(Outbound {
        method,
        uri,
        headers,
        body: Bytes::from(body),
    })
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    // An HTTP date (`Wed, 21 Oct 2015 07:28:00 GMT`): the time left until then, 0 if past.
    let at = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc2822).ok()?;
    let left = at - time::OffsetDateTime::now_utc();
    Some(Duration::try_from(left).unwrap_or(Duration::ZERO))
}

fn reported_header(headers: &HeaderMap) -> Reported {
    headers
        .get(METRICS_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| serde_json::from_str::<Value>(v).ok())
        .map(|v| reported_value(&v))
        .unwrap_or_default()
}

fn number(v: &Value, key: &str) -> Option<f64> {
    v.get(key)?.as_f64().filter(|f| f.is_finite())
}

fn reported_value(v: &Value) -> Reported {
    Reported {
        accuracy: number(v, "accuracy"),
        cost: number(v, "cost"),
        latency_ms: number(v, "latency_ms"),
    }
}

fn protocol(adapter: Adapter, reason: impl Into<String>) -> CallError {
    CallError::Protocol {
        adapter: name(adapter),
        reason: reason.into(),
    }
}

/// Turns a non-success status into its error. The body's free text is not kept — upstreams
/// echo request details (even masked keys) in error messages, and this error reaches callers and
/// traces — only the `error.type`/`error.code` of a JSON error body; the whole body goes to the
/// debug log.
pub fn status_error(status: u16, headers: &HeaderMap, body: &[u8]) -> CallError {
    tracing::debug!(status, body = %String::from_utf8_lossy(&body[..body.len().min(2048)]), "upstream error body");
    let kind = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        let e = v.get("error")?;
        ["type", "code"]
            .iter()
            .filter_map(|k| match e.get(*k)? {
                Value::String(s) if s.len() <= 64 => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .next()
    });
    CallError::Status {
        status,
        retry_after: retry_after(headers),
        message: match kind {
            Some(k) => format!("error type `{k}`"),
            None => "no error type given".to_owned(),
        },
    }
}

/// Reads a complete answer.
pub fn parse(adapter: Adapter, answer: &Inbound) -> Result<Reply, CallError> {
    let status = answer.status.as_u16();
    if !answer.status.is_success() {
        return Err(status_error(status, &answer.headers, &answer.body));
    }
    let value: Value = serde_json::from_slice(&answer.body)
        .map_err(|e| protocol(adapter, format!("the body is not JSON: {e}")))?;
    let mut reported = reported_header(&answer.headers);
    match adapter {
        Adapter::HttpJson => {}
        Adapter::CaioSdk => {
            let Some(output) = value.get("output") else {
                return Err(protocol(adapter, "the answer has no `output`"));
            };
            if let Some(m) = value.get("metrics") {
                let from_body = reported_value(m);
                reported = Reported {
                    accuracy: from_body.accuracy.or(reported.accuracy),
                    cost: from_body.cost.or(reported.cost),
                    latency_ms: from_body.latency_ms.or(reported.latency_ms),
                };
            }
            return Ok(Reply {
                output: output.clone(),
                reported,
            });
        }
        Adapter::OpenaiChat => {
            if !value.get("choices").is_some_and(Value::is_array) {
                return Err(protocol(adapter, "the answer has no `choices` array"));
            }
        }
        Adapter::OpenaiEmbeddings => {
            if !value.get("data").is_some_and(Value::is_array) {
                return Err(protocol(adapter, "the answer has no `data` array"));
            }
        }
        Adapter::AnthropicMessages => {
            if !value.get("content").is_some_and(Value::is_array) {
                return Err(protocol(adapter, "the answer has no `content` array"));
            }
        }
    }
    Ok(Reply {
        output: value,
        reported,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use caio_contracts::model::Endpoint;
    use http::StatusCode;

    use super::*;

    fn api(adapter: Adapter, execute: Option<&str>) -> ApiSpec {
        let mut endpoints = BTreeMap::new();
        if let Some(p) = execute {
            endpoints.insert(
                "execute".to_owned(),
                Endpoint {
                    method: "POST".into(),
                    path: p.into(),
                },
            );
        }
        ApiSpec {
            adapter,
            base_url: "http://127.0.0.1:9/".into(),
            credential_env: None,
            endpoints,
            model: None,
            timeout_ms: 1000,
        }
    }

    fn ctx<'a>(payload: &'a Value, credential: Option<&'a str>) -> CallContext<'a> {
        CallContext {
            decision_id: "sha256:abc",
            service_id: "svc",
            capability: "chat_completion",
            payload,
            attempt_timeout: Duration::from_millis(1500),
            attempt: 2,
            credential,
        }
    }

    fn body(o: &Outbound) -> Value {
        serde_json::from_slice(&o.body).unwrap()
    }

    #[test]
    fn each_adapter_builds_its_protocol() {
        let payload = json!({"messages": [{"role": "user", "content": "hi"}], "stream": true});
        let o = build(
            &api(Adapter::OpenaiChat, None),
            &ctx(&payload, Some("sk-1")),
            false,
        )
        .unwrap();
        assert_eq!(o.uri, "http://127.0.0.1:9/v1/chat/completions");
        assert_eq!(o.headers["authorization"], "Bearer sk-1");
        assert!(o.headers["authorization"].is_sensitive());
        assert_eq!(o.headers[DECISION_HEADER], "sha256:abc");
        assert_eq!(o.headers[DEADLINE_HEADER], "1500");
        let b = body(&o);
        assert_eq!(b["model"], "svc");
        assert!(b.get("stream").is_none());
        let s = build(&api(Adapter::OpenaiChat, None), &ctx(&payload, None), true).unwrap();
        assert_eq!(body(&s)["stream"], true);
        assert!(s.headers.get("authorization").is_none());

        let a = build(
            &api(Adapter::AnthropicMessages, None),
            &ctx(&json!({"model": "claude-x", "messages": []}), Some("ak")),
            false,
        )
        .unwrap();
        assert_eq!(a.uri.path(), "/v1/messages");
        assert_eq!(a.headers["x-api-key"], "ak");
        assert_eq!(a.headers["anthropic-version"], ANTHROPIC_VERSION);
        assert_eq!(body(&a)["model"], "claude-x");
        assert_eq!(body(&a)["max_tokens"], 1024);
        // The contract's model wins over the caller's.
        let pinned = ApiSpec {
            model: Some("gpt-4o-mini".into()),
            ..api(Adapter::OpenaiChat, None)
        };
        let o = build(
            &pinned,
            &ctx(&json!({"model": "alias", "messages": []}), None),
            false,
        )
        .unwrap();
        assert_eq!(body(&o)["model"], "gpt-4o-mini");

        let sdk = build(
            &api(Adapter::CaioSdk, None),
            &ctx(&json!({"text": "x"}), None),
            false,
        )
        .unwrap();
        assert_eq!(sdk.uri.path(), "/caio/v1/execute");
        let b = body(&sdk);
        assert_eq!(b["protocol"], "caio/v1");
        assert_eq!(b["payload"]["text"], "x");
        assert_eq!(b["attempt"], 2);
        assert_eq!(b["deadline_ms"], 1500);

        let hj = build(
            &api(Adapter::HttpJson, Some("/score")),
            &ctx(&json!([1, 2]), None),
            false,
        )
        .unwrap();
        assert_eq!(hj.uri, "http://127.0.0.1:9/score");
        assert_eq!(body(&hj), json!([1, 2]));
    }

    #[test]
    fn misconfigured_calls_are_configuration_errors() {
        let p = json!({});
        for (a, why) in [
            (api(Adapter::HttpJson, None), "no `execute` endpoint"),
            (
                ApiSpec {
                    base_url: "ftp://x".into(),
                    ..api(Adapter::OpenaiChat, None)
                },
                "not an http(s) URL",
            ),
        ] {
            match build(&a, &ctx(&p, None), false) {
                Err(CallError::Config(m)) => assert!(m.contains(why), "{m}"),
                other => panic!("{other:?}"),
            }
        }
        // Chat payloads must be objects; a credential with a newline is refused, not sent.
        assert!(matches!(
            build(
                &api(Adapter::OpenaiChat, None),
                &ctx(&json!("text"), None),
                false
            ),
            Err(CallError::Config(_))
        ));
        assert!(matches!(
            build(
                &api(Adapter::OpenaiChat, None),
                &ctx(&p, Some("a\nb")),
                false
            ),
            Err(CallError::Config(_))
        ));
    }

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Inbound {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        Inbound {
            status: StatusCode::from_u16(status).unwrap(),
            headers: h,
            body: Bytes::from(body.to_owned()),
        }
    }

    #[test]
    fn answers_are_read_per_protocol_with_reported_metrics() {
        let r = parse(
            Adapter::HttpJson,
            &answer(
                200,
                &[(METRICS_HEADER, r#"{"accuracy":0.97,"cost":0.001}"#)],
                r#"{"label":"pos"}"#,
            ),
        )
        .unwrap();
        assert_eq!(r.output, json!({"label": "pos"}));
        assert_eq!(r.reported.accuracy, Some(0.97));
        assert_eq!(r.reported.cost, Some(0.001));

        let r = parse(
            Adapter::CaioSdk,
            &answer(
                200,
                &[(METRICS_HEADER, r#"{"accuracy":0.5,"cost":0.2}"#)],
                r#"{"output":{"x":1},"metrics":{"accuracy":0.9}}"#,
            ),
        )
        .unwrap();
        assert_eq!(r.output, json!({"x": 1}));
        // The body's metrics win over the header's; the header fills the rest.
        assert_eq!(r.reported.accuracy, Some(0.9));
        assert_eq!(r.reported.cost, Some(0.2));

        for (adapter, body) in [
            (Adapter::CaioSdk, r#"{"result":1}"#),
            (Adapter::OpenaiChat, r#"{"id":"x"}"#),
            (Adapter::OpenaiEmbeddings, r#"{"data":{}}"#),
            (Adapter::AnthropicMessages, r#"{"content":"x"}"#),
            (Adapter::HttpJson, r#"{"truncated": "#),
        ] {
            assert!(
                matches!(
                    parse(adapter, &answer(200, &[], body)),
                    Err(CallError::Protocol { .. })
                ),
                "{body}"
            );
        }
    }

    #[test]
    fn statuses_carry_retry_after_and_classify() {
        let e = parse(
            Adapter::HttpJson,
            &answer(429, &[("retry-after", "3")], r#"{"error":"slow down"}"#),
        )
        .unwrap_err();
        assert_eq!(
            e,
            CallError::Status {
                status: 429,
                retry_after: Some(Duration::from_secs(3)),
                message: "no error type given".into()
            }
        );
        assert!(e.retryable());
        // Retry-After as an HTTP date.
        let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(30);
        let date = soon
            .format(&time::format_description::well_known::Rfc2822)
            .unwrap()
            .replace("+0000", "GMT");
        match parse(
            Adapter::HttpJson,
            &answer(503, &[("retry-after", &date)], ""),
        )
        .unwrap_err()
        {
            CallError::Status {
                retry_after: Some(d),
                ..
            } => {
                assert!(
                    d <= Duration::from_secs(30) && d >= Duration::from_secs(25),
                    "{d:?}"
                )
            }
            other => panic!("{date}: {other:?}"),
        }
        let past = parse(
            Adapter::HttpJson,
            &answer(503, &[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")], ""),
        )
        .unwrap_err();
        assert!(matches!(past, CallError::Status { retry_after: Some(d), .. } if d.is_zero()));
        // Free text of an error body never reaches the error (it could echo a key).
        let e401 = parse(
            Adapter::OpenaiChat,
            &answer(
                401,
                &[],
                r#"{"error":{"message":"Incorrect API key provided: sk-abc123","type":"invalid_request_error"}}"#,
            ),
        )
        .unwrap_err();
        assert!(!e401.to_string().contains("sk-abc123"), "{e401}");
        assert!(e401.to_string().contains("invalid_request_error"), "{e401}");
        assert!(!e401.counts_against_service());
        assert!(!e401.retryable());
        assert!(e.retryable());
        for (s, retry) in [
            (500, false),
            (502, true),
            (503, true),
            (504, true),
            (400, false),
        ] {
            let e = parse(Adapter::HttpJson, &answer(s, &[], "")).unwrap_err();
            assert_eq!(e.retryable(), retry, "{s}");
        }
        // Garbage in the metrics header is ignored, not fatal.
        let r = parse(
            Adapter::HttpJson,
            &answer(200, &[(METRICS_HEADER, "{{")], "{}"),
        )
        .unwrap();
        assert_eq!(r.reported, Reported::default());
    }
}
