//! The AI-service protocols: answers computed from the request, deterministically (the only clock
//! is OpenAI's `created`).

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::{Response, StatusCode};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::body::MockBody;
use crate::response::{EVENT_STREAM, json_response, response, to_bytes};

fn words(text: &str) -> usize {
    text.split_whitespace().count()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn request_object(body: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    }
}

fn model_of(request: &Map<String, Value>) -> String {
    request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("mock")
        .to_owned()
}

/// The text of a message's `content`: a string, or the `text` of its text blocks joined by spaces
/// (OpenAI content parts and Anthropic content blocks share that shape). Anything else: "".
fn content_text(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The non-empty `messages` array of a request, or the reason there is none.
fn messages(request: Option<&Map<String, Value>>) -> Result<&Vec<Value>, &'static str> {
    let request = request.ok_or("the request body is not a JSON object")?;
    match request.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => Ok(m),
        Some(Value::Array(_)) => Err("`messages` must not be empty"),
        _ => Err("`messages` must be an array"),
    }
}

/// Prompt words, and the reply `echo: <text of the last message>`.
fn prompt_and_reply(messages: &[Value]) -> (usize, String) {
    let prompt = messages.iter().map(|m| words(&content_text(m))).sum();
    let last = messages.last().map(content_text).unwrap_or_default();
    (prompt, format!("echo: {last}"))
}

fn openai_error(n: usize, message: &str) -> Response<MockBody> {
    json_response(
        StatusCode::BAD_REQUEST,
        n,
        &json!({"error": {"message": message, "type": "invalid_request_error"}}),
    )
}

/// OpenAI chat completions; server-sent events when the request has `"stream": true`.
pub(crate) fn openai_chat(n: usize, body: &[u8]) -> Response<MockBody> {
    let request = request_object(body);
    let messages = match messages(request.as_ref()) {
        Ok(m) => m,
        Err(why) => return openai_error(n, why),
    };
    let (prompt, reply) = prompt_and_reply(messages);
    let request = request.as_ref();
    let model = request.map(model_of).unwrap_or_else(|| "mock".to_owned());
    let stream = request.and_then(|r| r.get("stream")) == Some(&Value::Bool(true));
    let id = format!("chatcmpl-mock-{n}");
    let created = unix_now();
    if stream {
        return openai_chat_stream(n, &id, created, &model, &reply);
    }
    let completion = words(&reply);
    json_response(
        StatusCode::OK,
        n,
        &json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": reply},
                "finish_reason": "stop",
            }],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }),
    )
}

fn openai_chat_stream(
    n: usize,
    id: &str,
    created: u64,
    model: &str,
    reply: &str,
) -> Response<MockBody> {
    let event = |delta: Value, finish: Value| {
        let chunk = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        let mut line = b"data: ".to_vec();
        line.extend_from_slice(&to_bytes(&chunk));
        line.extend_from_slice(b"\n\n");
        Bytes::from(line)
    };
    let mut frames = vec![event(json!({"role": "assistant"}), Value::Null)];
    frames.extend(
        word_pieces(reply)
            .into_iter()
            .map(|piece| event(json!({ "content": piece }), Value::Null)),
    );
    frames.push(event(json!({}), json!("stop")));
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
    let mut resp = response(
        StatusCode::OK,
        n,
        EVENT_STREAM,
        MockBody::paced(frames, None),
    );
    resp.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-cache"),
    );
    resp
}

/// `text` cut into one piece per word, each with the whitespace that follows it (whitespace
/// before the first word stays with it), so the pieces concatenate back to `text` exactly:
/// "echo: hi there" → ["echo: ", "hi ", "there"].
pub(crate) fn word_pieces(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut in_word = false;
    let mut seen_word = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            in_word = false;
        } else {
            if !in_word && seen_word {
                pieces.push(&text[start..i]);
                start = i;
            }
            in_word = true;
            seen_word = true;
        }
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
}

/// A deterministic unit-range vector from SHA-256 of `input`: each 4 bytes, big-endian, scaled
/// to [-1, 1].
pub(crate) fn embedding(input: &str) -> Vec<f64> {
    Sha256::digest(input.as_bytes())
        .chunks_exact(4)
        .map(|c| {
            let u = u32::from_be_bytes(c.try_into().unwrap_or([0; 4]));
            f64::from(u) / f64::from(u32::MAX) * 2.0 - 1.0
        })
        .collect()
}

/// OpenAI embeddings: `input` is a string or a non-empty array of strings.
pub(crate) fn openai_embeddings(n: usize, body: &[u8]) -> Response<MockBody> {
    let Some(request) = request_object(body) else {
        return openai_error(n, "the request body is not a JSON object");
    };
    let inputs: Vec<&str> = match request.get("input") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) if !items.is_empty() => {
            match items.iter().map(Value::as_str).collect::<Option<Vec<_>>>() {
                Some(v) => v,
                None => return openai_error(n, "`input` must be a string or an array of strings"),
            }
        }
        _ => {
            return openai_error(
                n,
                "`input` must be a string or a non-empty array of strings",
            );
        }
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, s)| json!({"object": "embedding", "index": i, "embedding": embedding(s)}))
        .collect();
    let tokens: usize = inputs.iter().map(|s| words(s)).sum();
    json_response(
        StatusCode::OK,
        n,
        &json!({
            "object": "list",
            "data": data,
            "model": model_of(&request),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }),
    )
}

/// Anthropic messages; a bad request gets Anthropic's error shape.
pub(crate) fn anthropic_messages(n: usize, body: &[u8]) -> Response<MockBody> {
    let request = request_object(body);
    let messages = match messages(request.as_ref()) {
        Ok(m) => m,
        Err(why) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                n,
                &json!({"type": "error", "error": {"type": "invalid_request_error", "message": why}}),
            );
        }
    };
    let (prompt, reply) = prompt_and_reply(messages);
    let model = request
        .as_ref()
        .map(model_of)
        .unwrap_or_else(|| "mock".to_owned());
    let output = words(&reply);
    json_response(
        StatusCode::OK,
        n,
        &json!({
            "id": format!("msg_mock_{n}"),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": reply}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": prompt, "output_tokens": output},
        }),
    )
}

/// CAIO's service protocol: echoes `payload`.
pub(crate) fn caio_sdk(n: usize, body: &[u8]) -> Response<MockBody> {
    let payload = request_object(body).and_then(|mut r| r.remove("payload"));
    match payload {
        Some(payload) => json_response(
            StatusCode::OK,
            n,
            &json!({"output": {"echo": payload}, "metrics": {"latency_ms": 1.0}}),
        ),
        None => json_response(
            StatusCode::BAD_REQUEST,
            n,
            &json!({"error": {
                "code": "INVALID_REQUEST",
                "message": "the request must be a JSON object with a `payload`",
                "retryable": false,
            }}),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_pieces_concatenate_back() {
        for text in [
            "echo: hi there",
            "echo: ",
            "echo:  two  spaces ",
            "echo: été à",
        ] {
            let pieces = word_pieces(text);
            assert_eq!(pieces.concat(), text);
            assert_eq!(pieces.len(), words(text).max(1));
        }
        assert_eq!(word_pieces("echo: hi there"), ["echo: ", "hi ", "there"]);
    }

    #[test]
    fn embedding_is_deterministic_and_in_range() {
        let a = embedding("hello");
        assert_eq!(a.len(), 8);
        assert_eq!(a, embedding("hello"));
        assert_ne!(a, embedding("hello!"));
        assert!(a.iter().all(|x| (-1.0..=1.0).contains(x)));
    }
}
