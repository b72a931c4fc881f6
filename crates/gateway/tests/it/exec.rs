//! Execution against a real HTTP upstream on loopback (caio-mock-upstream) with scripted faults:
//! every fault has an asserted outcome (retry, fallback, circuit opens, violation recorded).

use std::sync::Arc;
use std::time::{Duration, Instant};

use caio_contracts::ServiceContract;
use caio_contracts::decision::Step;
use caio_contracts::request::RouteRequest;
use caio_gateway::exec::client::ClientConfig;
use caio_gateway::exec::guard::AddressGuard;
use caio_gateway::exec::health::{BreakerConfig, CircuitState};
use caio_gateway::{
    ExecuteError, ExecuteOptions, ExecutionStatus, Gateway, GatewayConfig, Router, ViolationPolicy,
};
use caio_mock_upstream::{Behavior, MockUpstream};
use caio_registry::MemoryRegistry;
use serde_json::json;

use crate::support;

/// A contract for a service at `url`: `accuracy` orders the candidates (higher ranks first).
fn contract(
    id: &str,
    url: &str,
    adapter: &str,
    path: &str,
    accuracy: f64,
    latency_max: u64,
) -> ServiceContract {
    contract_with(id, url, adapter, path, accuracy, latency_max, 1000, "")
}

#[allow(clippy::too_many_arguments)]
fn contract_with(
    id: &str,
    url: &str,
    adapter: &str,
    path: &str,
    accuracy: f64,
    latency_max: u64,
    timeout_ms: u64,
    extra_api: &str,
) -> ServiceContract {
    let yaml = format!(
        r#"
apiVersion: caio/v1
kind: ServiceContract
service:
  id: {id}
  name: {id}
  version: 1.0.0
  capabilities: [chat_completion]
  guarantees:
    accuracy: {{ min: {accuracy} }}
    latency_ms: {{ max: {latency_max} }}
  cost: {{ per_request: 0.001, currency: USD }}
  privacy: {{ data_locality: local, encryption: true }}
  api:
    base_url: {url}
    adapter: {adapter}
    endpoints: {{ execute: {{ method: POST, path: {path} }} }}
    timeout_ms: {timeout_ms}
{extra_api}"#
    );
    caio_contracts::parse_contract(id, &yaml, caio_contracts::Format::Yaml)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn request() -> RouteRequest {
    support::request_from_yaml(
        r#"
requirements:
  capabilities: [chat_completion]
payload:
  messages: [{role: user, content: "hello there"}]
"#,
    )
}

fn config() -> GatewayConfig {
    GatewayConfig {
        client: ClientConfig {
            guard: AddressGuard::new(true, vec![]),
            max_response_bytes: 64 * 1024,
            ..ClientConfig::default()
        },
        breaker: BreakerConfig {
            consecutive_failures: 3,
            // Long enough that a loaded machine does not see an open circuit turn half-open
            // between two steps of a test; the tests that need half-open sleep past it.
            cooldown: Duration::from_secs(1),
            ..BreakerConfig::default()
        },
        max_attempts: 3,
        max_fallbacks: 2,
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(40),
        max_retry_after: Duration::from_secs(2),
        default_deadline: Duration::from_secs(10),
        on_violation: ViolationPolicy::Warn,
        credentials: caio_gateway::exec::Credentials::new(|_| None),
    }
}

fn setup(gw: &Gateway, contracts: Vec<ServiceContract>) -> Router {
    let registry = MemoryRegistry::with_contracts(contracts).unwrap_or_else(|e| panic!("{e}"));
    Router::new(Arc::new(registry), support::compiled()).share_history(gw.health().history())
}

async fn run(gw: &Gateway, router: &Router, opts: &ExecuteOptions) -> caio_gateway::Execution {
    let p = support::principal("acme-analyst");
    match gw.execute(router, &request(), &p, opts).await {
        Ok((_, ex)) => ex,
        Err(e) => panic!("{e}"),
    }
}

/// Three OpenAI-compatible services on one mock, ranked a > b > c.
async fn three(mock: &MockUpstream) -> Vec<ServiceContract> {
    let u = mock.url();
    vec![
        contract("a", &u, "openai_chat", "/a/v1/chat/completions", 0.99, 5000),
        contract("b", &u, "openai_chat", "/b/v1/chat/completions", 0.95, 5000),
        contract("c", &u, "openai_chat", "/c/v1/chat/completions", 0.91, 5000),
    ]
}

fn chat_on(mock: &MockUpstream, paths: &[&str]) {
    for p in paths {
        mock.set_default(p, Behavior::OpenAiChat);
    }
}

/// An error status without `Retry-After`.
fn status(code: u16) -> Behavior {
    Behavior::Status {
        status: code,
        retry_after_s: None,
    }
}

const A: &str = "/a/v1/chat/completions";
const B: &str = "/b/v1/chat/completions";
const C: &str = "/c/v1/chat/completions";

#[tokio::test]
async fn the_chosen_service_answers_through_its_adapter() {
    let mock = MockUpstream::start().await.unwrap();
    chat_on(&mock, &[A, B, C]);
    let gw = Gateway::new(config());
    let router = setup(&gw, three(&mock).await);
    let p = support::principal("acme-analyst");
    let (decision, ex) = gw
        .execute(&router, &request(), &p, &ExecuteOptions::default())
        .await
        .unwrap();
    assert_eq!(ex.status, ExecutionStatus::Succeeded);
    assert_eq!(ex.service_id.as_deref(), Some("a"));
    assert_eq!(decision.service_id.as_ref(), "a");
    let output = ex.output.unwrap();
    assert_eq!(
        output["choices"][0]["message"]["content"],
        "echo: hello there"
    );
    assert_eq!(ex.attempts.len(), 1);
    assert!(ex.fallbacks.is_empty());
    assert!(ex.violations.is_empty());
    // What the service received: the payload with the model filled in, the decision id.
    let got = &mock.requests(A)[0];
    assert_eq!(
        got.header("x-caio-decision-id"),
        Some(decision.decision_id.as_str())
    );
    let body = got.json().unwrap();
    assert_eq!(body["model"], "a");
    assert_eq!(body["messages"][0]["content"], "hello there");
    assert_eq!(mock.hits(B), 0);
    assert_eq!(gw.health().state("a"), CircuitState::Closed);
}

#[tokio::test]
async fn a_burst_of_503_is_retried_with_backoff_on_the_same_service() {
    let mock = MockUpstream::start().await.unwrap();
    chat_on(&mock, &[A, B, C]);
    let s503 = status(503);
    mock.script(A, [s503.clone(), s503]);
    let gw = Gateway::new(config());
    let router = setup(&gw, three(&mock).await);
    let ex = run(&gw, &router, &ExecuteOptions::default()).await;
    assert_eq!(ex.status, ExecutionStatus::Succeeded);
    assert_eq!(ex.service_id.as_deref(), Some("a"));
    let outcomes: Vec<_> = ex.attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["upstream_5xx", "upstream_5xx", "ok"]);
    assert!(ex.attempts[0].backoff_ms.is_some());
    assert_eq!(ex.attempts[0].status, Some(503));
    assert_eq!(mock.hits(A), 3);
    assert_eq!(mock.hits(B), 0);
}

#[tokio::test]
async fn a_429_waits_for_retry_after() {
    let mock = MockUpstream::start().await.unwrap();
    chat_on(&mock, &[A, B, C]);
    mock.script(
        A,
        [Behavior::Status {
            status: 429,
            retry_after_s: Some(1),
        }],
    );
    let gw = Gateway::new(config());
    let router = setup(&gw, three(&mock).await);
    let started = Instant::now();
    let ex = run(&gw, &router, &ExecuteOptions::default()).await;
    assert_eq!(ex.status, ExecutionStatus::Succeeded);
    assert_eq!(ex.service_id.as_deref(), Some("a"));
    assert_eq!(ex.attempts[0].outcome, "rate_limited");
    assert_eq!(ex.attempts[0].backoff_ms, Some(1000));
    assert!(started.elapsed() >= Duration::from_secs(1));
    // A Retry-After beyond the gateway's ceiling is not waited for: the next candidate answers.
    // (A fresh gateway: the first 429 lowered `a`'s reliability, which could change the ranking.)
    let gw = Gateway::new(config());
    let router = setup(&gw, three(&mock).await);
    mock.script(
        A,
        [Behavior::Status {
            status: 429,
            retry_after_s: Some(3600),
        }],
    );
    let ex = run(&gw, &router, &ExecuteOptions::default()).await;
    assert_eq!(ex.service_id.as_deref(), Some("b"));
    assert_eq!(ex.fallbacks[0].reason, "rate_limited");
}

#[tokio::test]
async fn non_retryable_failures_fall_back_to_the_next_candidate() {
    let mock = MockUpstream::start().await.unwrap();
    chat_on(&mock, &[A, B, C]);
    let u = mock.url();
    let contracts = vec![
        contract_with("a", &u, "openai_chat", A, 0.99, 5000, 300, ""),
        contract("b", &u, "openai_chat", B, 0.95, 5000),
        contract("c", &u, "openai_chat", C, 0.91, 5000),
    ];
    for (fault, reason) in [
        (Behavior::Hang, "timeout"),
        (Behavior::Malformed, "protocol_error"),
        (Behavior::Oversized { bytes: 100_000 }, "response_too_large"),
        (status(500), "upstream_5xx"),
        (
            Behavior::Json {
                status: 200,
                body: json!({"not": "openai"}),
                headers: vec![],
            },
            "protocol_error",
        ),
        (
            Behavior::SlowBody {
                body: json!({"choices": []}),
                chunks: 4,
                interval: Duration::from_millis(200),
            },
            "timeout",
        ),
    ] {
        // A fresh gateway per fault: each failure lowers `a`'s reliability, and routing reads it.
        let gw = Gateway::new(config());
        let router = setup(&gw, contracts.clone());
        let before = mock.hits(A);
        mock.script(A, [fault.clone()]);
        let ex = run(&gw, &router, &ExecuteOptions::default()).await;
        assert_eq!(ex.status, ExecutionStatus::Succeeded, "{fault:?}");
        assert_eq!(ex.service_id.as_deref(), Some("b"), "{fault:?}");
        assert_eq!(ex.attempts.len(), 2, "{fault:?}: {:?}", ex.attempts);
        assert_eq!(ex.attempts[0].outcome, reason, "{fault:?}");
        assert_eq!(mock.hits(A), before + 1, "{fault:?}: retried");
        assert_eq!(
            ex.fallbacks,
            vec![caio_gateway::exec::Fallback {
                from: "a".into(),
                to: "b".into(),
                reason: reason.into()
            }],
            "{fault:?}"
        );
    }
}

#[tokio::test]
async fn resets_are_retried_and_everything_failing_is_an_upstream_failure() {
    let mock = MockUpstream::start().await.unwrap();
    chat_on(&mock, &[A, B, C]);
    mock.script(A, [Behavior::Reset]);
    let gw = Gateway::new(GatewayConfig {
        breaker: BreakerConfig {
            consecutive_failures: 100,
            ..config().breaker
        },
        ..config()
    });
    let router = setup(&gw, three(&mock).await);
    let ex = run(&gw, &router, &ExecuteOptions::default()).await;
    assert_eq!(ex.service_id.as_deref(), Some("a"));
    assert_eq!(ex.attempts[0].outcome, "connection_reset");
    assert_eq!(ex.attempts[1].outcome, "ok");

    for p in [A, B, C] {
        mock.set_default(p, status(502));
    }
    let ex = run(&gw, &router, &ExecuteOptions::default()).await;
    assert_eq!(ex.status, ExecutionStatus::Failed);
    assert!(ex.output.is_none());
    // 3 attempts on each of the 3 candidates, 2 fallbacks.
    assert_eq!(ex.attempts.len(), 9);
    assert_eq!(ex.fallbacks.len(), 2);
    let err = ex.error.unwrap();
    assert_eq!(err.code, "upstream_5xx");
    let last = &ex.attempts[8].service_id;
    assert!(
        err.message.contains(&format!("`{last}`")),
        "{}",
        err.message
    );
    let tried: std::collections::BTreeSet<_> =
        ex.attempts.iter().map(|a| a.service_id.as_str()).collect();
    assert_eq!(tried.len(), 3);
}

#[tokio::test]
async fn consecutive_failures_open_the_circuit_and_routing_leaves_the_service_out() {
    let mock = MockUpstream::start().await.unwrap();
    chat_on(&mock, &[B, C]);
    mock.set_default(A, status(503));
    let gw = Gateway::new(config());
    let contracts = three(&mock).await;
    let router = setup(&gw, contracts.clone());
    // Three attempts, three failures in a row: the circuit opens during the first execution,
    // which falls back to `b`.
    let ex = run(&gw, &router, &ExecuteOptions::default()).await;
    assert_eq!(ex.service_id.as_deref(), Some("b"));
    assert_eq!(mock.hits(A), 3);
    assert_eq!(gw.health().state("a"), CircuitState::Open);
    let hits = mock.hits(A);

    // Open: routing rejects `a` at the health step and the proof records why; the decision
    // still verifies offline.
    let p = support::principal("acme-analyst");
    let (decision, ex) = gw
        .execute(&router, &request(), &p, &ExecuteOptions::default())
        .await
        .unwrap();
    assert_eq!(decision.service_id.as_ref(), "b");
    assert_eq!(ex.service_id.as_deref(), Some("b"));
    assert_eq!(mock.hits(A), hits, "an open circuit was called");
    let rejection = decision
        .rejected
        .iter()
        .find(|r| r.service_id.as_ref() == "a")
        .unwrap();
    assert_eq!(rejection.step, Step::Health);
    assert_eq!(rejection.reason, "circuit_open");
    assert!(decision.proof.optimize.history["a"].circuit_open);
    let verified = caio_gateway::verify(&decision, contracts, &support::policy_set());
    assert!(verified.is_ok(), "{verified:?}");

    // After the cooldown: half-open, one trial; the service recovered, the circuit closes.
    mock.set_default(A, Behavior::OpenAiChat);
    tokio::time::sleep(Duration::from_millis(1050)).await;
    let ex = run(&gw, &router, &ExecuteOptions::default()).await;
    assert_eq!(ex.service_id.as_deref(), Some("a"));
    assert_eq!(gw.health().state("a"), CircuitState::Closed);
    // The record names the call that was the trial; closed again, calls are ordinary.
    assert_eq!(ex.attempts.len(), 1);
    assert!(ex.attempts[0].trial, "{:?}", ex.attempts);
    let ex = run(&gw, &router, &ExecuteOptions::default()).await;
    assert!(ex.attempts.iter().all(|a| !a.trial), "{:?}", ex.attempts);
    let report = gw.health().report();
    let a = report.iter().find(|r| r.service_id == "a").unwrap();
    assert_eq!(a.times_opened, 1);
}

#[tokio::test]
async fn a_broken_guarantee_is_recorded_and_handled_by_policy() {
    let mock = MockUpstream::start().await.unwrap();
    let u = mock.url();
    // `a` promises 50 ms and takes 150; `b` reports an accuracy under its promise.
    let contracts = vec![
        contract("a", &u, "http_json", "/a", 0.99, 50),
        contract("b", &u, "http_json", "/b", 0.95, 5000),
        contract("c", &u, "http_json", "/c", 0.91, 5000),
    ];
    mock.set_default(
        "/a",
        Behavior::Delayed {
            delay: Duration::from_millis(150),
            then: Box::new(Behavior::Echo),
        },
    );
    mock.set_default(
        "/b",
        Behavior::Json {
            status: 200,
            body: json!({"label": "b"}),
            headers: vec![("x-caio-metrics".into(), r#"{"accuracy": 0.5}"#.into())],
        },
    );
    mock.set_default("/c", Behavior::Echo);
    let gw = Gateway::new(GatewayConfig {
        breaker: BreakerConfig {
            min_calls: 1000,
            ..config().breaker
        },
        ..config()
    });
    let router = setup(&gw, contracts);

    // warn: the answer comes back with the violation and a warning.
    let ex = run(&gw, &router, &ExecuteOptions::default()).await;
    assert_eq!(ex.status, ExecutionStatus::Succeeded);
    assert_eq!(ex.service_id.as_deref(), Some("a"));
    assert_eq!(ex.violations.len(), 1);
    assert_eq!(ex.violations[0].property, "latency_ms");
    assert_eq!(ex.violations[0].bound, 50.0);
    assert!(ex.violations[0].observed >= 150.0);
    assert_eq!(ex.warnings.len(), 1);
    let h = gw.health().history().load_full();
    assert!(h["a"].success_rate < 1.0, "a violation lowers reliability");

    // failover (a fresh gateway, so `a` still ranks first): a's and b's answers are discarded,
    // c answers.
    let gw = Gateway::new(GatewayConfig {
        breaker: BreakerConfig {
            min_calls: 1000,
            ..config().breaker
        },
        ..config()
    });
    let router = setup(
        &gw,
        vec![
            contract("a", &u, "http_json", "/a", 0.99, 50),
            contract("b", &u, "http_json", "/b", 0.95, 5000),
            contract("c", &u, "http_json", "/c", 0.91, 5000),
        ],
    );
    let ex = run(
        &gw,
        &router,
        &ExecuteOptions {
            on_violation: Some(ViolationPolicy::Failover),
            ..ExecuteOptions::default()
        },
    )
    .await;
    assert_eq!(ex.service_id.as_deref(), Some("c"));
    let props: Vec<_> = ex
        .violations
        .iter()
        .map(|v| (v.service_id.as_str(), v.property.as_str()))
        .collect();
    assert_eq!(props, [("a", "latency_ms"), ("b", "accuracy")]);
    let reasons: Vec<_> = ex.fallbacks.iter().map(|f| f.reason.as_str()).collect();
    assert_eq!(reasons, ["guarantee_violated", "guarantee_violated"]);
    assert!(ex.warnings.is_empty());
    assert_eq!(
        ex.output.unwrap()["echo"]["messages"][0]["content"],
        "hello there"
    );
}

#[tokio::test]
async fn a_dry_run_prepares_the_call_and_sends_nothing() {
    let mock = MockUpstream::start().await.unwrap();
    chat_on(&mock, &[A, B, C]);
    let gw = Gateway::new(config());
    let router = setup(&gw, three(&mock).await);
    let ex = run(
        &gw,
        &router,
        &ExecuteOptions {
            dry_run: true,
            ..ExecuteOptions::default()
        },
    )
    .await;
    assert_eq!(ex.status, ExecutionStatus::DryRun);
    assert_eq!(ex.service_id.as_deref(), Some("a"));
    assert!(ex.attempts.is_empty());
    assert!(
        ex.warnings[0].contains("/a/v1/chat/completions"),
        "{:?}",
        ex.warnings
    );
    assert_eq!(mock.hits(A) + mock.hits(B) + mock.hits(C), 0);
}

#[tokio::test]
async fn the_deadline_bounds_every_attempt_and_the_whole_run() {
    let mock = MockUpstream::start().await.unwrap();
    for p in [A, B, C] {
        mock.set_default(p, Behavior::Hang);
    }
    let gw = Gateway::new(config());
    let router = setup(&gw, three(&mock).await);
    let started = Instant::now();
    let ex = run(
        &gw,
        &router,
        &ExecuteOptions {
            deadline_ms: Some(400),
            ..ExecuteOptions::default()
        },
    )
    .await;
    let took = started.elapsed();
    assert_eq!(ex.status, ExecutionStatus::Failed);
    assert!(took >= Duration::from_millis(400), "{took:?}");
    // The contract's 1000 ms timeout was cut to the 400 ms deadline: one attempt, no more.
    assert_eq!(ex.attempts.len(), 1, "{:?}", ex.attempts);
    assert_eq!(ex.attempts[0].outcome, "timeout");
    assert_eq!(ex.error.unwrap().code, "deadline_exceeded");
}

#[tokio::test]
async fn every_adapter_speaks_its_protocol() {
    let mock = MockUpstream::start().await.unwrap();
    let u = mock.url();
    let cases = [
        (
            "openai_embeddings",
            "/v1/embeddings",
            json!({"input": "hello"}),
        ),
        (
            "anthropic_messages",
            "/v1/messages",
            json!({"messages": [{"role": "user", "content": "hi"}]}),
        ),
        ("caio_sdk", "/caio/v1/execute", json!({"text": "hi"})),
        ("http_json", "/score", json!({"text": "hi"})),
    ];
    for (adapter, path, payload) in cases {
        let gw = Gateway::new(config());
        let router = setup(&gw, vec![contract("svc", &u, adapter, path, 0.9, 5000)]);
        let mut req = request();
        req.payload = payload.clone();
        let p = support::principal("acme-analyst");
        let (_, ex) = gw
            .execute(&router, &req, &p, &ExecuteOptions::default())
            .await
            .unwrap();
        assert_eq!(ex.status, ExecutionStatus::Succeeded, "{adapter}: {ex:?}");
        let out = ex.output.unwrap();
        match adapter {
            "openai_embeddings" => {
                assert_eq!(out["data"][0]["embedding"].as_array().unwrap().len(), 8)
            }
            "anthropic_messages" => assert_eq!(out["content"][0]["text"], "echo: hi"),
            "caio_sdk" => {
                assert_eq!(out, json!({"echo": {"text": "hi"}}));
                let sent = mock.requests(path)[0].json().unwrap();
                assert_eq!(sent["protocol"], "caio/v1");
                assert_eq!(sent["capability"], "chat_completion");
            }
            _ => assert_eq!(out, json!({"echo": {"text": "hi"}})),
        }
    }
    let sent = mock.requests("/v1/messages")[0].clone();
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
}

#[tokio::test]
async fn credentials_come_from_the_environment_and_a_missing_one_falls_back() {
    let mock = MockUpstream::start().await.unwrap();
    chat_on(&mock, &[A, B]);
    let u = mock.url();
    let var = "CAIO_TEST_EXEC_CREDENTIAL_7F3A";
    let contracts = vec![
        contract_with(
            "a",
            &u,
            "openai_chat",
            A,
            0.99,
            5000,
            1000,
            &format!("    credential_env: {var}_MISSING\n"),
        ),
        contract_with(
            "b",
            &u,
            "openai_chat",
            B,
            0.95,
            5000,
            1000,
            &format!("    credential_env: {var}\n"),
        ),
    ];
    let gw = Gateway::new(GatewayConfig {
        credentials: caio_gateway::exec::Credentials::new(move |name| {
            (name == var).then(|| "sk-test-123".to_owned())
        }),
        ..config()
    });
    let router = setup(&gw, contracts);
    let ex = run(&gw, &router, &ExecuteOptions::default()).await;
    assert_eq!(ex.service_id.as_deref(), Some("b"));
    assert_eq!(ex.fallbacks[0].reason, "configuration_error");
    assert_eq!(mock.hits(A), 0);
    assert_eq!(
        mock.requests(B)[0].header("authorization"),
        Some("Bearer sk-test-123")
    );
    // A missing credential is the operator's problem: it does not count against `a`.
    assert!(gw.health().report().iter().all(|r| r.service_id != "a"));
    // The credential appears nowhere in what execution returns.
    assert!(!serde_json::to_string(&ex).unwrap().contains("sk-test-123"));
}

#[tokio::test]
async fn the_address_guard_refuses_loopback_in_production_without_blaming_the_service() {
    let mock = MockUpstream::start().await.unwrap();
    chat_on(&mock, &[A, B, C]);
    let gw = Gateway::new(GatewayConfig {
        client: ClientConfig {
            guard: AddressGuard::new(false, vec![]),
            ..config().client
        },
        ..config()
    });
    let router = setup(&gw, three(&mock).await);
    let ex = run(&gw, &router, &ExecuteOptions::default()).await;
    assert_eq!(ex.status, ExecutionStatus::Failed);
    assert!(ex.attempts.iter().all(|a| a.outcome == "address_refused"));
    assert_eq!(mock.hits(A) + mock.hits(B) + mock.hits(C), 0);
    assert!(gw.health().report().is_empty());
    // Metadata addresses are refused even when private ones are allowed.
    let gw = Gateway::new(config());
    let router = setup(
        &gw,
        vec![contract(
            "meta",
            "http://169.254.169.254",
            "http_json",
            "/latest",
            0.9,
            5000,
        )],
    );
    let ex = run(&gw, &router, &ExecuteOptions::default()).await;
    assert_eq!(ex.attempts[0].outcome, "address_refused");
}

#[tokio::test]
async fn the_emergency_stop_refuses_execution_and_connections_are_not_leaked() {
    let mock = MockUpstream::start().await.unwrap();
    chat_on(&mock, &[A, B, C]);
    let gw = Gateway::new(config());
    let router = setup(&gw, three(&mock).await);
    for _ in 0..20 {
        run(&gw, &router, &ExecuteOptions::default()).await;
    }
    // Keep-alive: twenty sequential calls share one pooled connection.
    assert_eq!(mock.total_connections(), 1);
    gw.set_stopped(true);
    let p = support::principal("acme-analyst");
    assert!(matches!(
        gw.execute(&router, &request(), &p, &ExecuteOptions::default())
            .await,
        Err(ExecuteError::Stopped)
    ));
    gw.set_stopped(false);
    run(&gw, &router, &ExecuteOptions::default()).await;
    drop(router);
    drop(gw);
    let waited = Instant::now();
    while mock.open_connections() > 0 && waited.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        mock.open_connections(),
        0,
        "connections outlived the gateway"
    );
}

fn stage_request(capability: &str) -> RouteRequest {
    support::request_from_yaml(&format!(
        "requirements:\n  capabilities: [{capability}]\npayload: {{text: \"hola\"}}\n"
    ))
}

/// A chain stage's service: `contract_with`'s shape offering `capability`, at 0.002 per request.
fn chain_contract(
    id: &str,
    capability: &str,
    url: &str,
    adapter: &str,
    path: &str,
    latency: u64,
    accuracy: f64,
) -> ServiceContract {
    let mut c = contract_with(id, url, adapter, path, accuracy, latency, 1000, "");
    c.service.capabilities = vec![capability.to_owned()];
    c.service.cost.per_request = 0.002;
    c
}

#[tokio::test]
async fn a_chain_is_planned_checked_and_run_stage_by_stage() {
    use caio_gateway::exec::chain::{ChainBounds, ChainError};
    let mock = MockUpstream::start().await.unwrap();
    mock.set_default("/stt", Behavior::CaioSdk);
    let u = mock.url();
    let gw = Gateway::new(config());
    // Latency bounds of seconds: the run below must not record a violation because a loaded
    // machine stalled a loopback call.
    let router = setup(
        &gw,
        vec![
            chain_contract("stt", "speech_to_text", &u, "caio_sdk", "/stt", 4000, 0.9),
            chain_contract("mt", "translation", &u, "http_json", "/mt", 6000, 0.85),
        ],
    );
    let stages = vec![
        stage_request("speech_to_text"),
        stage_request("translation"),
    ];
    let p = support::principal("acme-analyst");

    // Bounds the composition cannot meet: nothing is called.
    let tight = ChainBounds {
        latency_ms: Some(9000.0),
        accuracy: Some(0.88),
        ..ChainBounds::default()
    };
    match gw.plan_chain(&router, &stages, &p, &tight) {
        Err(ChainError::Infeasible {
            composed,
            broken,
            decisions,
        }) => {
            assert_eq!(composed.latency_ms, Some(10000.0));
            assert_eq!(composed.accuracy, Some(0.85));
            assert!((composed.cost - 0.004).abs() < 1e-12);
            let props: Vec<_> = broken.iter().map(|b| b.property.as_str()).collect();
            assert_eq!(props, ["latency_ms", "accuracy"]);
            assert_eq!(decisions.len(), 2);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(mock.hits("/stt") + mock.hits("/mt"), 0);

    // Bounds it meets: stage 1's output is stage 2's payload.
    let fits = ChainBounds {
        latency_ms: Some(10000.0),
        accuracy: Some(0.85),
        cost: Some(0.01),
        ..ChainBounds::default()
    };
    let plan = gw.plan_chain(&router, &stages, &p, &fits).unwrap();
    let snapshot = router.registry().snapshot();
    let run = gw
        .run_chain(&snapshot, &plan, &stages, &ExecuteOptions::default())
        .await;
    assert_eq!(run.status, ExecutionStatus::Succeeded, "{run:?}");
    assert_eq!(run.stages.len(), 2);
    assert_eq!(run.stages[0].execution.service_id.as_deref(), Some("stt"));
    assert_eq!(run.stages[1].execution.service_id.as_deref(), Some("mt"));
    // caio_sdk answers {"output": {"echo": payload}}; its output goes to /mt, which echoes it.
    assert_eq!(
        mock.requests("/mt")[0].json().unwrap(),
        json!({"echo": {"text": "hola"}})
    );
    assert_eq!(
        run.output,
        Some(json!({"echo": {"echo": {"text": "hola"}}}))
    );
    assert!(run.violations.is_empty());

    // A failing stage stops the chain there.
    mock.set_default("/stt", status(400));
    let run = gw
        .run_chain(&snapshot, &plan, &stages, &ExecuteOptions::default())
        .await;
    assert_eq!(run.status, ExecutionStatus::Failed);
    assert_eq!(run.stages.len(), 1);
    assert!(
        run.error
            .unwrap()
            .message
            .starts_with("stage 1 (stt) failed")
    );
    assert_eq!(mock.hits("/mt"), 1);

    // Length limits.
    assert!(matches!(
        gw.plan_chain(&router, &stages[..1], &p, &fits),
        Err(ChainError::Length(1))
    ));
}

#[tokio::test]
async fn health_probes_open_the_circuit_of_a_service_that_is_down() {
    let mock = MockUpstream::start().await.unwrap();
    chat_on(&mock, &[A, B]);
    let u = mock.url();
    let health = "    endpoints: { execute: { method: POST, path: PATH }, health: { method: GET, path: /HEALTH } }\n";
    let with_health = |id: &str, path: &str, hp: &str, acc: f64| {
        let yaml = format!(
            r#"
apiVersion: caio/v1
kind: ServiceContract
service:
  id: {id}
  name: {id}
  version: 1.0.0
  capabilities: [chat_completion]
  guarantees: {{ accuracy: {{ min: {acc} }}, latency_ms: {{ max: 5000 }} }}
  cost: {{ per_request: 0.001, currency: USD }}
  privacy: {{ data_locality: local, encryption: true }}
  api:
    base_url: {u}
    adapter: openai_chat
{}    timeout_ms: 1000
"#,
            health.replace("PATH", path).replace("/HEALTH", hp)
        );
        caio_contracts::parse_contract(id, &yaml, caio_contracts::Format::Yaml)
            .unwrap_or_else(|e| panic!("{e}"))
    };
    mock.set_default("/a/health", status(503));
    mock.set_default(
        "/b/health",
        Behavior::Json {
            status: 200,
            body: json!({"ok": true}),
            headers: vec![],
        },
    );
    let gw = Gateway::new(config());
    let router = setup(
        &gw,
        vec![
            with_health("a", A, "/a/health", 0.99),
            with_health("b", B, "/b/health", 0.95),
        ],
    );
    let snapshot = router.registry().snapshot();
    for round in 0..3 {
        let results = gw.probe_once(&snapshot).await;
        let a = results.iter().find(|r| r.service_id == "a").unwrap();
        assert_eq!(a.outcome, "upstream_5xx", "round {round}");
        let b = results.iter().find(|r| r.service_id == "b").unwrap();
        assert_eq!(b.outcome, "ok");
    }
    assert_eq!(gw.health().state("a"), CircuitState::Open);
    assert_eq!(gw.health().state("b"), CircuitState::Closed);
    // Probes carry no latency sample and are not counted as calls.
    let report = gw.health().report();
    let b = report.iter().find(|r| r.service_id == "b").unwrap();
    assert_eq!(b.calls, 0);
    assert_eq!(b.ewma_latency_ms, None);
    // An open circuit is not probed; routing leaves `a` out before anyone called it.
    let results = gw.probe_once(&snapshot).await;
    assert_eq!(
        results
            .iter()
            .find(|r| r.service_id == "a")
            .unwrap()
            .outcome,
        "skipped"
    );
    assert_eq!(mock.hits("/a/health"), 3);
    let ex = run(&gw, &router, &ExecuteOptions::default()).await;
    assert_eq!(ex.service_id.as_deref(), Some("b"));
    assert_eq!(mock.hits(A), 0);
}

#[tokio::test]
async fn a_half_open_trial_that_records_nothing_is_released() {
    let mock = MockUpstream::start().await.unwrap();
    chat_on(&mock, &[B, C]);
    mock.set_default(A, status(503));
    let gw = Gateway::new(config());
    let router = setup(&gw, three(&mock).await);
    run(&gw, &router, &ExecuteOptions::default()).await;
    assert_eq!(gw.health().state("a"), CircuitState::Open);
    tokio::time::sleep(Duration::from_millis(1050)).await;
    gw.health().refresh();
    // The trial's call cannot be made (a payload the openai adapter refuses): nothing is
    // recorded, and the trial must be free again afterwards.
    let mut req = request();
    req.payload = json!("not an object");
    let p = support::principal("acme-analyst");
    let (_, ex) = gw
        .execute(&router, &req, &p, &ExecuteOptions::default())
        .await
        .unwrap();
    assert!(
        ex.attempts
            .iter()
            .filter(|a| a.service_id == "a")
            .all(|a| a.outcome == "configuration_error"),
        "{:?}",
        ex.attempts
    );
    assert_eq!(
        gw.health().admit("a"),
        caio_gateway::exec::health::Admission::Trial,
        "the trial leaked"
    );
}

#[tokio::test]
async fn a_request_the_service_rejects_as_invalid_neither_falls_back_nor_trips_the_breaker() {
    let mock = MockUpstream::start().await.unwrap();
    chat_on(&mock, &[B, C]);
    mock.set_default(
        A,
        Behavior::Json {
            status: 400,
            body: json!({"error": {"type": "invalid_request_error", "message": "bad messages"}}),
            headers: vec![],
        },
    );
    let gw = Gateway::new(config());
    let router = setup(&gw, three(&mock).await);
    for _ in 0..5 {
        let ex = run(&gw, &router, &ExecuteOptions::default()).await;
        assert_eq!(ex.status, ExecutionStatus::Failed);
        assert!(ex.fallbacks.is_empty());
        assert_eq!(ex.error.unwrap().code, "upstream_4xx");
    }
    assert_eq!(mock.hits(B) + mock.hits(C), 0);
    assert_eq!(gw.health().state("a"), CircuitState::Closed);
}

fn external(c: ServiceContract) -> ServiceContract {
    let mut c = c;
    c.service.privacy.data_locality = caio_contracts::model::DataLocality::External;
    c.service.privacy.encryption = false;
    c
}

#[tokio::test]
async fn chain_fallbacks_keep_the_bounds_and_personal_data_found_midway_stays_local() {
    use caio_gateway::exec::chain::ChainBounds;
    let mock = MockUpstream::start().await.unwrap();
    let u = mock.url();
    mock.set_default("/ext", Behavior::Echo);
    mock.set_default("/loc", Behavior::Echo);
    mock.set_default("/src", Behavior::Echo);
    let gw = Gateway::new(config());
    let router = setup(
        &gw,
        vec![
            chain_contract("src", "speech_to_text", &u, "http_json", "/src", 100, 0.9),
            chain_contract(
                "mt-local",
                "translation",
                &u,
                "http_json",
                "/loc",
                100,
                0.95,
            ),
            external(chain_contract(
                "mt-ext",
                "translation",
                &u,
                "http_json",
                "/ext",
                100,
                0.9,
            )),
        ],
    );
    let stages = vec![
        stage_request("speech_to_text"),
        stage_request("translation"),
    ];
    let p = support::principal("acme-analyst");
    let snapshot = router.registry().snapshot();

    // Local only: the external fallback would break the bound, so a failing local service
    // fails the stage instead of sending the data out.
    let local_only = ChainBounds {
        data_locality: Some(caio_contracts::model::DataLocality::Local),
        ..ChainBounds::default()
    };
    let plan = gw.plan_chain(&router, &stages, &p, &local_only).unwrap();
    assert_eq!(plan.decisions[1].service_id.as_ref(), "mt-local");
    mock.script("/loc", [status(500)]);
    let run = gw
        .run_chain(&snapshot, &plan, &stages, &ExecuteOptions::default())
        .await;
    assert_eq!(run.status, ExecutionStatus::Failed, "{run:?}");
    assert_eq!(mock.hits("/ext"), 0, "data left for an external service");

    // No bound: the fallback is allowed…
    let plan = gw
        .plan_chain(&router, &stages, &p, &ChainBounds::default())
        .unwrap();
    mock.script("/loc", [status(500)]);
    let run = gw
        .run_chain(&snapshot, &plan, &stages, &ExecuteOptions::default())
        .await;
    assert_eq!(
        run.stages[1].execution.service_id.as_deref(),
        Some("mt-ext")
    );
    // …unless stage 1's output holds personal data: then only services admitted for sensitive
    // data may get it.
    mock.script(
        "/src",
        [Behavior::Json {
            status: 200,
            body: json!({"transcript": "call me at alice@example.com"}),
            headers: vec![],
        }],
    );
    mock.script("/loc", [status(500)]);
    let ext_before = mock.hits("/ext");
    let run = gw
        .run_chain(&snapshot, &plan, &stages, &ExecuteOptions::default())
        .await;
    assert_eq!(run.status, ExecutionStatus::Failed, "{run:?}");
    assert_eq!(
        mock.hits("/ext"),
        ext_before,
        "personal data went to an external service"
    );
}

// The outbound client's connection pool.

fn loopback_client(idle_timeout: Duration) -> caio_gateway::exec::client::UpstreamClient {
    caio_gateway::exec::client::UpstreamClient::new(ClientConfig {
        guard: AddressGuard::new(true, Vec::new()),
        idle_timeout,
        ..Default::default()
    })
}

fn echo_call(mock: &MockUpstream, n: usize) -> caio_gateway::exec::client::Outbound {
    caio_gateway::exec::client::Outbound {
        method: http::Method::POST,
        uri: format!("{}/echo?n={n}", mock.url())
            .parse()
            .unwrap_or_else(|e| panic!("{e}")),
        headers: http::HeaderMap::new(),
        body: bytes::Bytes::from(format!("{{\"n\":{n}}}")),
    }
}

#[tokio::test]
async fn pooled_connections_are_reused_sequentially_and_opened_for_concurrency() {
    let mock = MockUpstream::start().await.unwrap();
    mock.set_default("/echo", Behavior::Echo);
    let client = loopback_client(Duration::from_secs(60));
    for n in 0..10 {
        let got = client
            .send(echo_call(&mock, n), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(got.status, 200);
        let v: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
        assert_eq!(v["echo"]["n"], n);
    }
    assert_eq!(mock.total_connections(), 1);
    // Eight at once need eight connections; afterwards all eight are idle and reused.
    let calls: Vec<_> = (0..8)
        .map(|n| {
            let c = client.clone();
            let out = echo_call(&mock, n);
            tokio::spawn(async move { c.send(out, Duration::from_secs(5)).await })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap().unwrap().status, 200);
    }
    let opened = mock.total_connections();
    assert!((2..=8).contains(&opened), "{opened} connections");
    for n in 0..5 {
        client
            .send(echo_call(&mock, n), Duration::from_secs(5))
            .await
            .unwrap();
    }
    assert_eq!(mock.total_connections(), opened);
    // The request line is in origin form with the query, and the Host header names the origin.
    let seen = mock.requests("/echo");
    let last = seen.last().unwrap();
    assert_eq!(last.query.as_deref(), Some("n=4"));
    let host = last
        .headers
        .iter()
        .find(|(k, _)| k == "host")
        .map(|(_, v)| v.clone());
    assert_eq!(host.as_deref(), mock.url().strip_prefix("http://"));
}

#[tokio::test]
async fn connections_the_server_closes_are_not_reused_and_idle_ones_expire() {
    let mock = MockUpstream::start().await.unwrap();
    mock.set_default(
        "/echo",
        Behavior::Json {
            status: 200,
            body: serde_json::json!({"ok": true}),
            headers: vec![("connection".into(), "close".into())],
        },
    );
    let client = loopback_client(Duration::from_millis(300));
    // Every answer closes its connection: each call opens a new one and none fails.
    for n in 0..5 {
        let got = client
            .send(echo_call(&mock, n), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(got.status, 200);
    }
    assert_eq!(mock.total_connections(), 5);
    let waited = Instant::now();
    while mock.open_connections() > 0 && waited.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(mock.open_connections(), 0);
    // A kept-alive connection idle longer than the timeout is closed by the reaper.
    mock.set_default("/echo", Behavior::Echo);
    client
        .send(echo_call(&mock, 9), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(mock.open_connections(), 1);
    let waited = Instant::now();
    while mock.open_connections() > 0 && waited.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        mock.open_connections(),
        0,
        "an idle connection outlived its timeout"
    );
    client
        .send(echo_call(&mock, 10), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(mock.total_connections(), 7);
}
