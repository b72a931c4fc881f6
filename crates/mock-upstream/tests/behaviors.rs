//! What a client sees from each behaviour of the mock upstream, over real sockets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use caio_mock_upstream::{Behavior, MAX_REQUEST_BODY, MockUpstream};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{SendRequest, handshake};
use hyper_util::rt::TokioIo;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpStream;

/// A guard against a broken mock hanging the test suite; never a pass/fail threshold.
const SAFETY: Duration = Duration::from_secs(30);

async fn mock() -> MockUpstream {
    MockUpstream::start().await.unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(SAFETY).build().unwrap()
}

async fn post(m: &MockUpstream, path: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}{path}", m.url()))
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn post_json(m: &MockUpstream, path: &str, body: &Value) -> (StatusCode, Value) {
    let resp = post(m, path, body).await;
    let status = resp.status();
    assert_eq!(content_type(&resp), "application/json");
    (status, resp.json().await.unwrap())
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).map(|v| v.to_str().unwrap())
}

fn content_type(resp: &reqwest::Response) -> &str {
    header(resp, "content-type").unwrap()
}

async fn safely<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(SAFETY, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no result after {SAFETY:?}"))
}

/// Waits (bounded) until `cond` holds.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < SAFETY,
            "{what}: still false after {SAFETY:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A client connection whose lifetime the test controls.
async fn connection(addr: SocketAddr) -> (SendRequest<Full<Bytes>>, tokio::task::JoinHandle<()>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = handshake(TokioIo::new(stream)).await.unwrap();
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (sender, task)
}

fn request(method: &str, path: &str, body: &'static str) -> hyper::Request<Full<Bytes>> {
    hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "mock")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

fn chat_request(stream: bool) -> Value {
    json!({
        "model": "gpt-test",
        "stream": stream,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello there  world"},
        ],
    })
}

#[tokio::test]
async fn json_sends_status_headers_and_body() {
    let m = mock().await;
    m.set_default(
        "/x",
        Behavior::Json {
            status: 201,
            body: json!({"a": [1, 2]}),
            headers: vec![("x-extra".into(), "yes".into())],
        },
    );
    let resp = client().get(format!("{}/x", m.url())).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(header(&resp, "x-extra"), Some("yes"));
    assert_eq!(content_type(&resp), "application/json");
    assert_eq!(header(&resp, "x-mock-request"), Some("1"));
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"a": [1, 2]}));

    // A scripted content-type replaces application/json.
    m.set_default(
        "/problem",
        Behavior::Json {
            status: 400,
            body: json!({"title": "bad"}),
            headers: vec![("Content-Type".into(), "application/problem+json".into())],
        },
    );
    let resp = post(&m, "/problem", &json!({})).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(content_type(&resp), "application/problem+json");
}

#[tokio::test]
async fn defaults_health_not_found_echo_and_request_numbers() {
    let m = mock().await;
    let resp = client()
        .get(format!("{}/health", m.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"status": "ok"}));

    let resp = client()
        .get(format!("{}/nope", m.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(content_type(&resp), "application/json");
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"error": {"message": "no such path"}})
    );

    for n in 1..=3 {
        let resp = post(&m, "/anything", &json!({"n": n})).await;
        assert_eq!(
            header(&resp, "x-mock-request"),
            Some(n.to_string().as_str())
        );
    }
    assert_eq!(m.hits("/anything"), 3);
    assert_eq!(m.hits("/health"), 1);
}

#[tokio::test]
async fn echo_returns_the_json_body_or_null() {
    let m = mock().await;
    m.set_default("/v1/chat/completions", Behavior::Echo);
    let (status, body) = post_json(&m, "/v1/chat/completions", &json!({"k": [1, "two"]})).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"echo": {"k": [1, "two"]}}));

    let resp = client()
        .post(format!("{}/v1/chat/completions", m.url()))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"echo": null}));
}

#[tokio::test]
async fn openai_chat_answers_with_usage() {
    let m = mock().await;
    let (status, body) = post_json(&m, "/v1/chat/completions", &chat_request(false)).await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], "chatcmpl-mock-1");
    assert_eq!(body["object"], "chat.completion");
    assert!(body["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(body["model"], "gpt-test");
    let choice = &body["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "echo: hello there  world");
    assert_eq!(choice["finish_reason"], "stop");
    // Prompt: "be brief" (2) + "hello there  world" (3); reply: 4 words.
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9})
    );

    // Content parts, and no model.
    let (_, body) = post_json(
        &m,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}),
    )
    .await;
    assert_eq!(body["id"], "chatcmpl-mock-2");
    assert_eq!(body["model"], "mock");
    assert_eq!(body["choices"][0]["message"]["content"], "echo: hi");
    assert_eq!(body["usage"]["total_tokens"], 3);
}

#[tokio::test]
async fn openai_chat_rejects_bad_requests() {
    let m = mock().await;
    for bad in [
        json!("text"),
        json!({"model": "x"}),
        json!({"messages": "hi"}),
    ] {
        let (status, body) = post_json(&m, "/v1/chat/completions", &bad).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert!(body["error"]["message"].is_string());
    }
    let resp = client()
        .post(format!("{}/v1/chat/completions", m.url()))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn openai_chat_streams_events_matching_the_plain_answer() {
    let m = mock().await;
    let (_, plain) = post_json(&m, "/v1/chat/completions", &chat_request(false)).await;
    let expected = plain["choices"][0]["message"]["content"].as_str().unwrap();

    let mut resp = post(&m, "/v1/chat/completions", &chat_request(true)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(content_type(&resp), "text/event-stream");
    assert_eq!(
        resp.content_length(),
        None,
        "streamed with chunked encoding"
    );
    let mut text = String::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(text.ends_with("\n\n"));
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .expect("every event is one data line")
        })
        .collect();
    assert!(events.len() >= 3, "{events:?}");
    assert_eq!(events.last(), Some(&"[DONE]"));

    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], "chatcmpl-mock-2");
        assert_eq!(c["model"], "gpt-test");
        assert_eq!(c["choices"][0]["index"], 0);
    }
    let first = &chunks[0]["choices"][0];
    assert_eq!(first["delta"], json!({"role": "assistant"}));
    assert_eq!(first["finish_reason"], Value::Null);
    let last = &chunks[chunks.len() - 1]["choices"][0];
    assert_eq!(last["delta"], json!({}));
    assert_eq!(last["finish_reason"], "stop");

    let deltas = &chunks[1..chunks.len() - 1];
    assert_eq!(deltas.len(), 4, "one chunk per word of the reply");
    let content: String = deltas
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(content, expected);
    assert_eq!(
        deltas[0]["choices"][0]["delta"]["content"], "echo: ",
        "a word and the space after it"
    );
}

#[tokio::test]
async fn openai_embeddings_are_deterministic() {
    let m = mock().await;
    let (status, one) = post_json(
        &m,
        "/v1/embeddings",
        &json!({"model": "emb-test", "input": "hello world"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(one["object"], "list");
    assert_eq!(one["model"], "emb-test");
    assert_eq!(one["usage"], json!({"prompt_tokens": 2, "total_tokens": 2}));
    let data = one["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["object"], "embedding");
    assert_eq!(data[0]["index"], 0);
    let vector = data[0]["embedding"].as_array().unwrap();
    assert_eq!(vector.len(), 8);
    assert!(
        vector
            .iter()
            .all(|x| (-1.0..=1.0).contains(&x.as_f64().unwrap()))
    );

    let (_, again) = post_json(&m, "/v1/embeddings", &json!({"input": "hello world"})).await;
    assert_eq!(again["data"][0]["embedding"], one["data"][0]["embedding"]);
    assert_eq!(again["model"], "mock");

    let (status, many) = post_json(
        &m,
        "/v1/embeddings",
        &json!({"input": ["other text", "hello world"]}),
    )
    .await;
    assert_eq!(status, 200);
    let data = many["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(
        (data[0]["index"].clone(), data[1]["index"].clone()),
        (json!(0), json!(1))
    );
    assert_eq!(data[1]["embedding"], one["data"][0]["embedding"]);
    assert_ne!(data[0]["embedding"], data[1]["embedding"]);
    assert_eq!(many["usage"]["prompt_tokens"], 4);

    for bad in [
        json!({"input": 3}),
        json!({"input": []}),
        json!({"input": ["a", 1]}),
        json!({}),
    ] {
        let (status, body) = post_json(&m, "/v1/embeddings", &bad).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(body["error"]["type"], "invalid_request_error");
    }
}

#[tokio::test]
async fn anthropic_messages_with_string_and_block_content() {
    let m = mock().await;
    let (status, body) = post_json(
        &m,
        "/v1/messages",
        &json!({"model": "claude-test", "max_tokens": 10,
                "messages": [{"role": "user", "content": "hi there"}]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({
            "id": "msg_mock_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-test",
            "content": [{"type": "text", "text": "echo: hi there"}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 2, "output_tokens": 3},
        })
    );

    let (status, body) = post_json(
        &m,
        "/v1/messages",
        &json!({"model": "claude-test", "messages": [
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "an answer"},
            {"role": "user", "content": [
                {"type": "text", "text": "one two"},
                {"type": "image", "source": {}},
                {"type": "text", "text": "three"},
            ]},
        ]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], "msg_mock_2");
    assert_eq!(body["content"][0]["text"], "echo: one two three");
    assert_eq!(
        body["usage"],
        json!({"input_tokens": 7, "output_tokens": 4})
    );

    let (status, body) = post_json(&m, "/v1/messages", &json!({"model": "claude-test"})).await;
    assert_eq!(status, 400);
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn caio_sdk_echoes_the_payload_or_rejects() {
    let m = mock().await;
    let payload = json!({"text": "classify me", "n": [1, 2]});
    let (status, body) = post_json(
        &m,
        "/caio/v1/execute",
        &json!({"protocol": "caio/v1", "decision_id": "d-1", "service_id": "svc",
                "capability": "classify", "payload": payload, "deadline_ms": 500, "attempt": 1}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"output": {"echo": payload}, "metrics": {"latency_ms": 1.0}})
    );

    let (status, body) = post_json(
        &m,
        "/caio/v1/execute",
        &json!({"protocol": "caio/v1", "decision_id": "d-2"}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "INVALID_REQUEST");
    assert_eq!(body["error"]["retryable"], false);
    assert!(body["error"]["message"].is_string());
}

#[tokio::test]
async fn status_with_and_without_retry_after() {
    let m = mock().await;
    m.script(
        "/v1/chat/completions",
        [
            Behavior::Status {
                status: 429,
                retry_after_s: Some(7),
            },
            Behavior::Status {
                status: 503,
                retry_after_s: None,
            },
        ],
    );
    let resp = post(&m, "/v1/chat/completions", &chat_request(false)).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(header(&resp, "retry-after"), Some("7"));
    assert_eq!(content_type(&resp), "application/json");
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"error": {"message": "mock failure", "code": 429}})
    );
    let resp = post(&m, "/v1/chat/completions", &chat_request(false)).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(header(&resp, "retry-after"), None);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], 503);
}

#[tokio::test]
async fn reset_closes_the_connection_unanswered() {
    let m = mock().await;
    m.set_default("/v1/chat/completions", Behavior::Reset);
    let err = client()
        .post(format!("{}/v1/chat/completions", m.url()))
        .json(&chat_request(false))
        .send()
        .await
        .expect_err("no response");
    assert!(!err.is_timeout(), "{err:?}");
    assert!(err.status().is_none());
    assert_eq!(m.hits("/v1/chat/completions"), 1);
    assert_eq!(
        m.requests("/v1/chat/completions")[0].json(),
        Some(chat_request(false))
    );
    eventually("the reset connection is closed", || {
        m.open_connections() == 0
    })
    .await;
}

#[tokio::test]
async fn hang_never_answers_and_the_connection_closes_when_the_client_leaves() {
    let m = mock().await;
    m.set_default("/slow", Behavior::Hang);
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let err = impatient
        .post(format!("{}/slow", m.url()))
        .body("{}")
        .send()
        .await
        .expect_err("no response");
    assert!(err.is_timeout(), "{err:?}");
    // The request is counted when the mock's task reads it, which a loaded machine may delay
    // past the client's 200 ms.
    eventually("the request is recorded", || m.hits("/slow") == 1).await;
    assert_eq!(m.hits("/slow"), 1);
    drop(impatient);
    eventually("the server closes the abandoned connection", || {
        m.open_connections() == 0
    })
    .await;
    assert_eq!(m.total_connections(), 1);
}

#[tokio::test]
async fn malformed_is_announced_as_json_but_is_not() {
    let m = mock().await;
    m.set_default("/v1/embeddings", Behavior::Malformed);
    let resp = post(&m, "/v1/embeddings", &json!({"input": "x"})).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(content_type(&resp), "application/json");
    let body = resp.bytes().await.unwrap();
    assert_eq!(&body[..], b"{\"truncated\": ");
    assert!(serde_json::from_slice::<Value>(&body).is_err());
}

#[tokio::test]
async fn oversized_has_the_exact_length_and_is_json() {
    let m = mock().await;
    for bytes in [0, 1, 2, 5, 9, 10, 11, 1000, 300_000] {
        m.set_default("/big", Behavior::Oversized { bytes });
        let resp = post(&m, "/big", &json!({})).await;
        let expected = bytes.max(2);
        assert_eq!(resp.status(), 200);
        assert_eq!(content_type(&resp), "application/json");
        assert_eq!(resp.content_length(), Some(expected as u64), "{bytes}");
        let body = resp.bytes().await.unwrap();
        assert_eq!(body.len(), expected, "{bytes}");
        let value: Value = serde_json::from_slice(&body).unwrap();
        assert!(value.is_object());
        if bytes >= 10 {
            assert_eq!(value["pad"].as_str().unwrap().len(), bytes - 10);
        }
    }
}

#[tokio::test]
async fn slow_body_arrives_whole_and_paced() {
    let m = mock().await;
    let body = json!({"message": "a".repeat(200), "n": 1});
    let interval = Duration::from_millis(40);
    m.set_default(
        "/slow",
        Behavior::SlowBody {
            body: body.clone(),
            chunks: 5,
            interval,
        },
    );
    let start = Instant::now();
    let resp = post(&m, "/slow", &json!({})).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(content_type(&resp), "application/json");
    assert_eq!(resp.content_length(), None, "chunked");
    assert_eq!(resp.json::<Value>().await.unwrap(), body);
    assert!(start.elapsed() >= interval * 4, "{:?}", start.elapsed());
}

#[tokio::test]
async fn delayed_waits_then_behaves() {
    let m = mock().await;
    let delay = Duration::from_millis(150);
    m.script(
        "/v1/chat/completions",
        [Behavior::Delayed {
            delay,
            then: Box::new(Behavior::Status {
                status: 502,
                retry_after_s: None,
            }),
        }],
    );
    let start = Instant::now();
    let resp = post(&m, "/v1/chat/completions", &chat_request(false)).await;
    assert!(start.elapsed() >= delay);
    assert_eq!(resp.status(), 502);
    assert_eq!(m.hits("/v1/chat/completions"), 1);
}

#[tokio::test]
async fn scripts_run_in_order_then_the_default() {
    let m = mock().await;
    let fail = |status| Behavior::Status {
        status,
        retry_after_s: None,
    };
    m.script("/v1/chat/completions", [fail(503), fail(500)]);
    let mut seen = Vec::new();
    for _ in 0..4 {
        let resp = post(&m, "/v1/chat/completions", &chat_request(false)).await;
        seen.push((
            resp.status().as_u16(),
            header(&resp, "x-mock-request").unwrap().to_owned(),
        ));
    }
    let expected: Vec<(u16, String)> = [(503, "1"), (500, "2"), (200, "3"), (200, "4")]
        .into_iter()
        .map(|(s, n)| (s, n.to_owned()))
        .collect();
    assert_eq!(seen, expected);
    assert_eq!(m.hits("/v1/chat/completions"), 4);

    // Scripts are per path; set_default drops what is left of one.
    m.script("/v1/messages", [fail(529), fail(529)]);
    m.script("/v1/embeddings", [fail(500)]);
    let (status, _) = post_json(&m, "/v1/embeddings", &json!({"input": "x"})).await;
    assert_eq!(status, 500);
    m.set_default("/v1/messages", fail(418));
    let (status, _) = post_json(&m, "/v1/messages", &json!({})).await;
    assert_eq!(status, 418);
}

#[tokio::test]
async fn requests_are_recorded() {
    let m = mock().await;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
    let resp = client()
        .post(format!("{}/rec?x=1&y=2", m.url()))
        .header("X-Custom", "Value")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = client()
        .get(format!("{}/rec", m.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    let recorded = m.requests("/rec");
    assert_eq!(recorded.len(), 2);
    assert_eq!(m.hits("/rec"), 2);
    let first = &recorded[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.path, "/rec");
    assert_eq!(first.query.as_deref(), Some("x=1&y=2"));
    assert_eq!(first.header("x-custom"), Some("Value"));
    assert_eq!(first.header("X-CUSTOM"), Some("Value"));
    assert_eq!(first.header("content-type"), Some("application/json"));
    assert!(first.headers.iter().all(|(n, _)| *n == n.to_lowercase()));
    assert_eq!(first.json(), Some(body));
    let second = &recorded[1];
    assert_eq!(second.method, "GET");
    assert_eq!(second.query, None);
    assert!(second.body.is_empty());
    assert_eq!(second.json(), None);

    assert!(m.requests("/never").is_empty());
    assert_eq!(m.hits("/never"), 0);

    m.set_recording(false);
    let _ = post(&m, "/rec", &json!({})).await;
    assert_eq!(m.hits("/rec"), 3);
    assert_eq!(m.requests("/rec").len(), 2);
}

#[tokio::test]
async fn request_bodies_over_16_mib_get_413() {
    let m = mock().await;
    let resp = client()
        .post(format!("{}/v1/chat/completions", m.url()))
        .body(vec![b' '; MAX_REQUEST_BODY + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(content_type(&resp), "application/json");
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], 413);
    assert_eq!(m.hits("/v1/chat/completions"), 1);

    // Exactly the limit is fine (and the script was not consumed by the refusal).
    m.script("/v1/chat/completions", [Behavior::Echo]);
    let resp = client()
        .post(format!("{}/v1/chat/completions", m.url()))
        .body(vec![b' '; MAX_REQUEST_BODY])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"echo": null}));
}

#[tokio::test]
async fn connections_are_counted() {
    let m = mock().await;
    let (mut a, a_task) = connection(m.addr()).await;
    for _ in 0..3 {
        let resp = a.send_request(request("GET", "/health", "")).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
    }
    assert_eq!(m.total_connections(), 1, "keep-alive reuses the connection");
    assert_eq!(m.open_connections(), 1);

    let (mut b, _b_task) = connection(m.addr()).await;
    let resp = b.send_request(request("POST", "/e", "{}")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(m.total_connections(), 2);
    assert_eq!(m.open_connections(), 2);

    drop(a);
    safely("client connection a ends", a_task).await.unwrap();
    eventually("a is closed", || m.open_connections() == 1).await;
    assert_eq!(m.total_connections(), 2);
}

#[tokio::test]
async fn shutdown_closes_open_connections() {
    let m = mock().await;
    m.set_default("/hang", Behavior::Hang);
    let addr = m.addr();
    let (mut sender, conn_task) = connection(addr).await;
    let pending =
        tokio::spawn(async move { sender.send_request(request("POST", "/hang", "{}")).await });
    let (mut idle, idle_task) = connection(addr).await;
    let resp = idle
        .send_request(request("GET", "/health", ""))
        .await
        .unwrap();
    resp.into_body().collect().await.unwrap();
    eventually("the hanging request arrives", || m.hits("/hang") == 1).await;
    assert_eq!(m.open_connections(), 2);

    safely("shutdown", m.shutdown()).await;

    let result = safely("the hanging request ends", pending).await.unwrap();
    assert!(result.is_err(), "closed without an answer: {result:?}");
    safely("the hanging connection ends", conn_task)
        .await
        .unwrap();
    safely("the idle connection ends", idle_task).await.unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}
