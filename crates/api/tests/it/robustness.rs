//! No request body, header or path produces a 5xx (property test against a live server).

use proptest::prelude::*;
use reqwest::Method;

use crate::support::*;

const PATHS: &[&str] = &[
    "/api/v1/services",
    "/api/v1/services/sentiment-eu",
    "/api/v1/route",
    "/api/v1/discover",
    "/api/v1/policies",
    "/api/v1/policies/validate",
    "/api/v1/policies/rollback",
    "/api/v1/policies/diff",
    "/api/v1/traces",
    "/api/v1/keys",
    "/api/v1/audit",
    "/webhooks/services/sentiment-eu/events",
];

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        "[ -~\n]{0,400}".prop_map(String::into_bytes),
        Just(b"{\"requirements\":{\"capabilities\":[\"sentiment_analysis\"]},\"seed\":1e309}".to_vec()),
        Just(b"a: &a [*a, *a, *a]\nb: [*a, *a, *a]\n".to_vec()),
        Just("{\"policies\":[{\"id\":\"x\",\"when\":\"true\",\"require\":\"service.cost.per_request / 0.0 > 1.0\"}]}".as_bytes().to_vec()),
        Just(format!("{}1{}", "[".repeat(5000), "]".repeat(5000)).into_bytes()),
    ]
}

fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,80}",
        Just("Bearer ".to_owned() + &"A".repeat(9000)),
        Just("Bearer a.b.c".to_owned()),
        Just("Bearer eyJhbGciOiJub25lIn0.e30.".to_owned()),
        Just(format!("Bearer {ADMIN_KEY}")),
    ]
}

#[test]
fn no_input_produces_a_5xx() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(Server::start());
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(96);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        ..ProptestConfig::default()
    });
    let strategy = (
        0..PATHS.len(),
        prop_oneof![Just("GET"), Just("POST"), Just("PUT"), Just("DELETE")],
        header_value(),
        prop_oneof![
            Just("application/json".to_owned()),
            Just("application/yaml".to_owned()),
            Just("text/plain".to_owned()),
            Just("application/x-www-form-urlencoded".to_owned()),
            "[ -~]{0,30}"
        ],
        body(),
        "[a-z0-9=&%_.:-]{0,40}",
    );
    runner
        .run(&strategy, |(p, m, auth, ct, body, query)| {
            let status = rt.block_on(async {
                let url = format!("{}?{query}", s.url(PATHS[p]));
                let mut r = s
                    .http
                    .request(Method::from_bytes(m.as_bytes()).unwrap(), url)
                    .body(body.clone());
                if let Ok(v) = reqwest::header::HeaderValue::from_str(&auth) {
                    r = r.header("authorization", v);
                }
                if let Ok(v) = reqwest::header::HeaderValue::from_str(&ct) {
                    r = r.header("content-type", v);
                }
                let resp = r.send().await.unwrap();
                let status = resp.status();
                let text = resp.text().await.unwrap();
                (status, text)
            });
            prop_assert!(
                !status.0.is_server_error(),
                "{m} {} -> {}: {}",
                PATHS[p],
                status.0,
                status.1
            );
            if status.0.is_client_error() {
                let v: serde_json::Value = serde_json::from_str(&status.1)
                    .map_err(|e| TestCaseError::fail(format!("not JSON: {e}: {}", status.1)))?;
                prop_assert!(v["error"]["code"].is_string(), "{}", status.1);
            }
            Ok(())
        })
        .unwrap();
}

/// An error names what is wrong with an excerpt of the value, not the value: a request of most
/// of a megabyte gets an error of a few kilobytes, not one several times its own size.
#[tokio::test]
async fn errors_stay_small_whatever_the_request() {
    let s = Server::start().await;
    let caps = vec!["c".repeat(100); 9000];
    let big = serde_json::json!({ "requirements": { "capabilities": caps } });
    let sent = big.to_string().len();
    assert!(sent > 900_000);
    for path in ["/api/v1/route", "/api/v1/discover"] {
        let r = s.post(path, ADMIN_KEY, big.clone()).await;
        assert_eq!(r.status, reqwest::StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(r.code(), "INVALID_REQUEST");
        assert!(r.text.len() < 40_000, "{path}: {} bytes", r.text.len());
        let problems = r.json["error"]["details"]["problems"].as_array().unwrap();
        assert!(problems.len() <= caio_contracts::MAX_PROBLEMS + 1);
        // The headline names the first real problem, not the note that more were left out.
        let message = r.json["error"]["message"].as_str().unwrap();
        assert!(message.contains("/requirements/capabilities"), "{message}");
    }
    // A contract with a 200 KB value where a list belongs.
    let contract = contract_yaml(
        "big",
        "http://127.0.0.1:9",
        "http_json",
        "x",
        0.9,
        "    endpoints: { execute: { method: POST, path: /x } }\n",
    )
    .replace(
        "capabilities: [x]",
        &format!("capabilities: \"{}\"", "v".repeat(200_000)),
    );
    let r = s
        .yaml(Method::POST, "/api/v1/services", ADMIN_KEY, &contract)
        .await;
    assert_eq!(
        r.status,
        reqwest::StatusCode::BAD_REQUEST,
        "{}",
        &r.text[..200.min(r.text.len())]
    );
    assert_eq!(r.code(), "INVALID_CONTRACT");
    assert!(r.text.len() < 4_000, "{} bytes", r.text.len());
    // Other errors that quote what the client sent: an unknown field, a model name.
    let key = "k".repeat(500_000);
    let model = "m".repeat(500_000);
    for (path, body, code) in [
        (
            "/api/v1/keys",
            serde_json::json!({ "name": "n", "role": "client", key.as_str(): 1 }),
            "INVALID_BODY",
        ),
        (
            "/api/v1/execute",
            serde_json::json!({ "request": request("sentiment-de.yaml"), key.as_str(): 1 }),
            "INVALID_REQUEST",
        ),
        (
            "/v1/chat/completions",
            serde_json::json!({ "model": model, "messages": [] }),
            "MODEL_NOT_FOUND",
        ),
    ] {
        let r = s.post(path, ADMIN_KEY, body).await;
        assert_eq!(r.code(), code, "{path}");
        let message = r.json["error"]["message"].as_str().unwrap();
        assert!(
            message.len() <= caio_api::error::MAX_MESSAGE_BYTES + 64,
            "{path}: {} bytes",
            message.len()
        );
        assert!(message.contains("bytes left out"), "{path}: {message}");
        assert!(r.text.len() < 4_000, "{path}: {} bytes", r.text.len());
    }
}
