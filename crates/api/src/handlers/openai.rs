//! The OpenAI-compatible front door: `POST /v1/chat/completions` (streaming and not),
//! `POST /v1/embeddings`, `GET /v1/models`.
//!
//! `model` is a configured alias (`gateway.model_aliases`: alias → capability), a capability name
//! (`chat_completion`, `embeddings`), or a service id the caller can see. An alias or capability
//! routes among every feasible service; a service id routes among that one service only, so the
//! decision still proves it was feasible. The request body (without `model`) is the payload the
//! service gets; the decision id comes back in `x-caio-decision-id`, and decision and execution
//! are recorded like `/api/v1/execute`'s.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use caio_contracts::decision::Decision;
use caio_contracts::model::Adapter;
use caio_contracts::request::RouteRequest;
use caio_gateway::exec::stream::{StreamEnd, Streamed};
use caio_gateway::{ExecuteOptions, ExecutionStatus, Router};
use caio_security::{Action, Identity};
use http_body_util::BodyExt;
use serde_json::{Map, Value, json};

use crate::auth::{Caller, require};
use crate::error::{ApiError, ApiResult};
use crate::extract;
use crate::handlers::execute::{record_metrics, route_and_record, stopped_error, upstream_failed};
use crate::state::AppState;
use crate::tenancy::visible;

/// The capability behind each endpoint.
const CHAT: &str = "chat_completion";
const EMBEDDINGS: &str = "embeddings";

/// The router and capability a `model` names.
fn resolve(
    state: &AppState,
    caller: &Identity,
    model: &str,
    capability: &str,
) -> ApiResult<(Arc<Router>, String)> {
    let tenant = &caller.principal.tenant;
    if let Some(cap) = state.config.gateway.model_aliases.get(model) {
        return Ok((state.routers.for_tenant(tenant), cap.clone()));
    }
    if model == capability {
        return Ok((state.routers.for_tenant(tenant), capability.to_owned()));
    }
    let snapshot = state.registry().snapshot();
    match snapshot.get(model) {
        Some(e) if visible(&e.contract.service.tenant, tenant) => Ok((
            state.routers.for_service(tenant, model),
            capability.to_owned(),
        )),
        _ => Err(ApiError::new(
            "MODEL_NOT_FOUND",
            format!("no model `{model}`; GET /v1/models lists the ones you can use"),
        )),
    }
}

/// Reads an OpenAI-style body: a JSON object with a string `model`.
async fn read(state: &AppState, headers: &HeaderMap, body: Body) -> ApiResult<Map<String, Value>> {
    let text = extract::text(headers, body, state.config.limits.body_bytes).await?;
    let value: Value = serde_json::from_str(&text.text)
        .map_err(|e| ApiError::new("INVALID_BODY", format!("the body is not JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(ApiError::new(
            "INVALID_BODY",
            "the body must be a JSON object",
        ));
    };
    if !obj.get("model").is_some_and(Value::is_string) {
        return Err(ApiError::new(
            "INVALID_REQUEST",
            "`model` is required: a model alias, a capability or a service id",
        ));
    }
    Ok(obj)
}

/// The route request for an OpenAI body: the capability, the body without `model` and `stream`
/// as the payload.
fn route_request(capability: &str, body: &Map<String, Value>) -> ApiResult<RouteRequest> {
    let mut payload = body.clone();
    payload.remove("model");
    payload.remove("stream");
    payload.remove("stream_options");
    let doc = json!({
        "requirements": {"capabilities": [capability]},
        "payload": payload,
    });
    caio_contracts::parse_request_value("body", doc)
        .map_err(|r| ApiError::invalid("INVALID_REQUEST", &r))
}

fn with_ids(
    mut resp: Response,
    decision: &Decision,
    service: Option<&str>,
    license_warning: &Option<HeaderValue>,
) -> Response {
    let h = resp.headers_mut();
    if let Some(w) = license_warning {
        h.insert("x-caio-license-warning", w.clone());
    }
    if let Ok(v) = HeaderValue::from_str(&decision.decision_id) {
        h.insert("x-caio-decision-id", v);
    }
    if let Some(v) = service.and_then(|s| HeaderValue::from_str(s).ok()) {
        h.insert("x-caio-service-id", v);
    }
    resp
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// A chat answer in OpenAI's shape, from whatever the answering service's adapter returned.
fn as_chat_completion(adapter: Adapter, output: &Value, decision: &Decision, model: &str) -> Value {
    if adapter == Adapter::OpenaiChat {
        return output.clone();
    }
    let (text, finish, usage) = if adapter == Adapter::AnthropicMessages {
        let text: String = output["content"]
            .as_array()
            .map(|blocks| {
                blocks
                    .iter()
                    .filter_map(|b| b["text"].as_str())
                    .collect::<Vec<_>>()
                    .join("")
            })
            .unwrap_or_default();
        let finish = match output["stop_reason"].as_str() {
            Some("max_tokens") => "length",
            _ => "stop",
        };
        let p = output["usage"]["input_tokens"].as_u64().unwrap_or(0);
        let c = output["usage"]["output_tokens"].as_u64().unwrap_or(0);
        (text, finish, (p, c))
    } else {
        let text = match output {
            Value::String(s) => s.clone(),
            v => ["content", "text", "output"]
                .iter()
                .find_map(|k| v[*k].as_str().map(str::to_owned))
                .unwrap_or_else(|| v.to_string()),
        };
        let c = words(&text);
        (text, "stop", (0, c))
    };
    json!({
        "id": format!("chatcmpl-{}", &decision.decision_id["sha256:".len().min(decision.decision_id.len())..].chars().take(24).collect::<String>()),
        "object": "chat.completion",
        "created": caio_trace::now_ms() / 1000,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finish,
        }],
        "usage": {"prompt_tokens": usage.0, "completion_tokens": usage.1, "total_tokens": usage.0 + usage.1},
    })
}

/// A complete chat answer as server-sent events: role, content, finish, `[DONE]`.
fn as_events(completion: &Value) -> Bytes {
    let id = completion["id"].clone();
    let created = completion["created"].clone();
    let model = completion["model"].clone();
    let content = completion["choices"][0]["message"]["content"].clone();
    let finish = completion["choices"][0]["finish_reason"].clone();
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    };
    let mut out = String::new();
    for event in [
        chunk(json!({"role": "assistant"}), Value::Null),
        chunk(json!({"content": content}), Value::Null),
        chunk(json!({}), finish),
    ] {
        out.push_str("data: ");
        out.push_str(&event.to_string());
        out.push_str("\n\n");
    }
    out.push_str("data: [DONE]\n\n");
    Bytes::from(out)
}

fn sse(resp_body: Body) -> Response {
    let mut resp = Response::new(resp_body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// What both calling endpoints check first: the role, the emergency stop, the body, then the
/// license (after the body, so an unreadable request does not use the daily quota).
async fn admit(
    state: &AppState,
    caller: &Identity,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<(Map<String, Value>, Option<HeaderValue>)> {
    require(state, caller, Action::Route)?;
    if state.gateway.stopped() {
        return Err(stopped_error(state));
    }
    let body = read(state, headers, body).await?;
    let warning = crate::handlers::licensing::gate(state)?;
    let warning = crate::handlers::licensing::gate_execution(state, warning)?;
    Ok((body, warning))
}

/// POST /v1/chat/completions
pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    Extension(Caller(caller)): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let (body, license_warning) = admit(&state, &caller, &headers, body).await?;
    if !body.get("messages").is_some_and(Value::is_array) {
        return Err(ApiError::new(
            "INVALID_REQUEST",
            "`messages` must be an array of chat messages",
        ));
    }
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let (router, capability) = resolve(&state, &caller, &model, CHAT)?;
    let request = route_request(&capability, &body)?;
    state.gateway.health().refresh();
    let snapshot = router.registry().snapshot();
    let decision = route_and_record(&state, &caller, &router, &request).await?;
    let options = ExecuteOptions::default();
    if !stream {
        let execution = state
            .gateway
            .run(&snapshot, &decision, &request, &options)
            .await;
        decision.record(&state, &caller, &execution).await?;
        record_metrics(&state, &execution);
        let Some(output) = execution
            .output
            .as_ref()
            .filter(|_| execution.status == ExecutionStatus::Succeeded)
        else {
            return Err(upstream_failed(&decision.decision_id, &execution));
        };
        let adapter = execution
            .service_id
            .as_deref()
            .and_then(|id| snapshot.get(id))
            .map_or(Adapter::HttpJson, |e| e.contract.service.api.adapter);
        let completion = as_chat_completion(adapter, output, &decision, &model);
        let resp = axum::Json(completion).into_response();
        return Ok(with_ids(
            resp,
            &decision,
            execution.service_id.as_deref(),
            &license_warning,
        ));
    }
    match state
        .gateway
        .run_stream(&snapshot, &decision, &request, &options)
        .await
    {
        Streamed::Done(execution) => {
            decision.record(&state, &caller, &execution).await?;
            record_metrics(&state, &execution);
            Err(upstream_failed(&decision.decision_id, &execution))
        }
        Streamed::Complete { adapter, execution } => {
            decision.record(&state, &caller, &execution).await?;
            record_metrics(&state, &execution);
            let output = execution.output.clone().unwrap_or(Value::Null);
            let completion = as_chat_completion(adapter, &output, &decision, &model);
            let resp = sse(Body::from(as_events(&completion)));
            Ok(with_ids(
                resp,
                &decision,
                execution.service_id.as_deref(),
                &license_warning,
            ))
        }
        Streamed::Stream {
            service_id,
            response,
            execution,
            started,
        } => {
            // Frames go from the upstream to the client as they arrive; the execution is
            // recorded when the stream ends (or the client leaves).
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
            let mut upstream = response.into_body();
            let st = Arc::clone(&state);
            let who = Arc::clone(&caller);
            let d = decision.clone();
            let snap = Arc::clone(&snapshot);
            // A stream that goes silent for the service's attempt time is broken off.
            let idle = std::time::Duration::from_millis(
                snapshot
                    .get(&service_id)
                    .map_or(30_000, |e| e.contract.service.api.timeout_ms),
            );
            tokio::spawn(async move {
                let end = loop {
                    let next = tokio::select! {
                        frame = tokio::time::timeout(idle, upstream.frame()) => frame,
                        () = tx.closed() => break StreamEnd::ClientLeft,
                    };
                    let Ok(next) = next else {
                        break StreamEnd::UpstreamBroke(format!(
                            "the upstream sent nothing for {} ms",
                            idle.as_millis()
                        ));
                    };
                    match next {
                        None => break StreamEnd::Complete,
                        Some(Ok(frame)) => {
                            if let Ok(data) = frame.into_data()
                                && tx.send(data).await.is_err()
                            {
                                break StreamEnd::ClientLeft;
                            }
                        }
                        Some(Err(e)) => {
                            break StreamEnd::UpstreamBroke(format!(
                                "the upstream stream broke: {e}"
                            ));
                        }
                    }
                };
                drop(tx);
                let execution = st
                    .gateway
                    .stream_finished(&snap, &d, execution, started, end);
                record_metrics(&st, &execution);
                if let Err(e) = d.record(&st, &who, &execution).await {
                    tracing::error!(error = %e.message, "streamed execution not recorded");
                }
            });
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
            });
            let resp = sse(Body::from_stream(stream));
            Ok(with_ids(
                resp,
                &decision,
                Some(&service_id),
                &license_warning,
            ))
        }
    }
}

/// POST /v1/embeddings
pub async fn embeddings(
    State(state): State<Arc<AppState>>,
    Extension(Caller(caller)): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let (body, license_warning) = admit(&state, &caller, &headers, body).await?;
    if !body
        .get("input")
        .is_some_and(|i| i.is_string() || i.is_array())
    {
        return Err(ApiError::new(
            "INVALID_REQUEST",
            "`input` must be a string or an array",
        ));
    }
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    let (router, capability) = resolve(&state, &caller, &model, EMBEDDINGS)?;
    let request = route_request(&capability, &body)?;
    state.gateway.health().refresh();
    let snapshot = router.registry().snapshot();
    let decision = route_and_record(&state, &caller, &router, &request).await?;
    let execution = state
        .gateway
        .run(&snapshot, &decision, &request, &ExecuteOptions::default())
        .await;
    decision.record(&state, &caller, &execution).await?;
    record_metrics(&state, &execution);
    match execution.output.as_ref() {
        Some(out)
            if execution.status == ExecutionStatus::Succeeded
                && out.get("data").is_some_and(Value::is_array) =>
        {
            let resp = axum::Json(out.clone()).into_response();
            Ok(with_ids(
                resp,
                &decision,
                execution.service_id.as_deref(),
                &license_warning,
            ))
        }
        Some(_) if execution.status == ExecutionStatus::Succeeded => Err(ApiError::new(
            "UPSTREAM_FAILED",
            "the service answered, but not with embeddings (`data` array)",
        )
        .with_details(json!({"decision_id": decision.decision_id}))),
        _ => Err(upstream_failed(&decision.decision_id, &execution)),
    }
}

/// GET /v1/models: aliases, capabilities and the visible chat and embedding services.
pub async fn models(
    State(state): State<Arc<AppState>>,
    Extension(Caller(caller)): Extension<Caller>,
) -> ApiResult<Response> {
    require(&state, &caller, Action::Discover)?;
    let tenant = &caller.principal.tenant;
    let mut data = Vec::new();
    let model = |id: &str, owner: &str| json!({"id": id, "object": "model", "created": 0, "owned_by": owner});
    for alias in state.config.gateway.model_aliases.keys() {
        data.push(model(alias, "caio"));
    }
    data.push(model(CHAT, "caio"));
    data.push(model(EMBEDDINGS, "caio"));
    let snapshot = state.registry().snapshot();
    for e in snapshot.entries() {
        let s = &e.contract.service;
        if visible(&s.tenant, tenant) && s.capabilities.iter().any(|c| c == CHAT || c == EMBEDDINGS)
        {
            data.push(model(&e.id, &s.tenant));
        }
    }
    Ok(axum::Json(json!({"object": "list", "data": data})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_the_whole_answer_and_end_with_done() {
        let completion = json!({
            "id": "chatcmpl-x", "created": 1, "model": "m",
            "choices": [{"message": {"content": "two words"}, "finish_reason": "stop"}],
        });
        let text = String::from_utf8(as_events(&completion).to_vec()).unwrap();
        let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(events.len(), 4);
        assert_eq!(events[3], "data: [DONE]");
        let content: Value = serde_json::from_str(&events[1]["data: ".len()..]).unwrap();
        assert_eq!(content["choices"][0]["delta"]["content"], "two words");
        let last: Value = serde_json::from_str(&events[2]["data: ".len()..]).unwrap();
        assert_eq!(last["choices"][0]["finish_reason"], "stop");
    }
}
