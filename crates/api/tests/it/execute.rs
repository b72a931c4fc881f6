//! POST /api/v1/execute against a real upstream on loopback (caio-mock-upstream): the answer,
//! the trace (decision + execution, accepted by `caio verify`), failures as 502, the emergency
//! stop, the gateway health board.

use std::time::Duration;

use caio_mock_upstream::{Behavior, MockUpstream};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{ADMIN_KEY, Body, Server};

const PATH_A: &str = "/a/v1/chat/completions";
const PATH_B: &str = "/b/v1/chat/completions";

fn contract(id: &str, url: &str, path: &str, accuracy: f64) -> String {
    crate::support::contract_yaml(
        id,
        url,
        "openai_chat",
        "chat_completion",
        accuracy,
        &format!(
            "    endpoints: {{ execute: {{ method: POST, path: {path} }} }}\n    timeout_ms: 2000\n"
        ),
    )
}

fn body() -> Value {
    json!({
        "request": {
            "requirements": {"capabilities": ["chat_completion"]},
            "payload": {"messages": [{"role": "user", "content": "good morning"}]}
        }
    })
}

/// A server with only two acme chat services, both on `mock`.
async fn setup(mock: &MockUpstream) -> (Server, String) {
    mock.set_default(PATH_A, Behavior::OpenAiChat);
    mock.set_default(PATH_B, Behavior::OpenAiChat);
    let s = Server::start_with(|c| {
        c.services_dir = None;
        c.gateway.backoff_base_ms = 5;
        c.gateway.backoff_max_ms = 20;
    })
    .await;
    for (id, path, acc) in [("chat-a", PATH_A, 0.99), ("chat-b", PATH_B, 0.95)] {
        let r = s
            .yaml(
                Method::POST,
                "/api/v1/services",
                ADMIN_KEY,
                &contract(id, &mock.url(), path, acc),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    let key = s.client_key("acme", &["chat"], 2).await;
    (s, key)
}

#[tokio::test]
async fn execute_answers_records_and_verifies() {
    let mock = MockUpstream::start().await.unwrap();
    let (s, key) = setup(&mock).await;
    let r = s.post("/api/v1/execute", &key, body()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let id = r.json["decision"]["decision_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(r.header("x-caio-decision-id"), Some(id.as_str()));
    let ex = &r.json["execution"];
    assert_eq!(ex["status"], "succeeded");
    assert_eq!(ex["service_id"], "chat-a");
    assert_eq!(
        ex["output"]["choices"][0]["message"]["content"],
        "echo: good morning"
    );
    assert_eq!(
        mock.requests(PATH_A)[0].header("x-caio-decision-id"),
        Some(id.as_str())
    );

    // The trace now holds decision and execution; it verifies offline as the decision.
    let t = s.get(&format!("/api/v1/traces/{id}"), &key).await;
    assert_eq!(t.status, StatusCode::OK);
    assert_eq!(t.header("x-caio-trace-outcome"), Some("executed"));
    assert_eq!(t.json, r.json);
    let services = tempfile::tempdir().unwrap();
    for (id, path, acc) in [("chat-a", PATH_A, 0.99), ("chat-b", PATH_B, 0.95)] {
        std::fs::write(
            services.path().join(format!("{id}.yaml")),
            contract(id, &mock.url(), path, acc),
        )
        .unwrap();
    }
    let elsewhere = tempfile::tempdir().unwrap();
    let record = elsewhere.path().join("trace.json");
    std::fs::write(&record, &t.text).unwrap();
    let policies = crate::support::fixtures().join("policies.yaml");
    let d = caio_gateway::loader::load_decision(&record).unwrap();
    let contracts = caio_gateway::loader::load_services_dir(services.path()).unwrap();
    let (set, _) = caio_gateway::loader::load_policies(&policies).unwrap();
    let v = caio_gateway::verify(&d, contracts, &set);
    assert!(v.is_ok(), "{v:?}");

    // Both records are in the log: the routed one first, then the executed one.
    let page = s.get("/api/v1/traces?service=chat-a", ADMIN_KEY).await;
    let outcomes: Vec<_> = page.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["decision_id"] == id)
        .map(|i| i["outcome"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(outcomes, ["executed", "routed"]);
    let metrics = s.call(Method::GET, "/metrics", None, Body::None).await.text;
    assert!(
        metrics.contains(r#"caio_executions_total{outcome="succeeded"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("caio_upstream_attempts_total 1"));
}

#[tokio::test]
async fn failures_fall_back_and_total_failure_is_a_502_with_the_attempts() {
    let mock = MockUpstream::start().await.unwrap();
    let (s, key) = setup(&mock).await;
    mock.script(PATH_A, [crate::support::status(500)]);
    let r = s.post("/api/v1/execute", &key, body()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["execution"]["service_id"], "chat-b");
    assert_eq!(
        r.json["execution"]["fallbacks"][0]["reason"],
        "upstream_5xx"
    );

    for p in [PATH_A, PATH_B] {
        mock.set_default(p, crate::support::status(503));
    }
    let r = s.post("/api/v1/execute", &key, body()).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text);
    assert_eq!(r.code(), "UPSTREAM_FAILED");
    let details = &r.json["error"]["details"];
    assert_eq!(details["reason"], "upstream_5xx");
    assert_eq!(details["execution"]["status"], "failed");
    assert!(details["execution"]["attempts"].as_array().unwrap().len() >= 2);
    let id = details["decision_id"].as_str().unwrap();
    let t = s.get(&format!("/api/v1/traces/{id}"), &key).await;
    assert_eq!(t.header("x-caio-trace-outcome"), Some("execution_failed"));

    // The board shows what the gateway saw.
    let h = s.get("/api/v1/gateway/health", ADMIN_KEY).await;
    assert_eq!(h.status, StatusCode::OK);
    let a = h.json["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["service_id"] == "chat-a")
        .unwrap()
        .clone();
    assert!(a["failures"].as_u64().unwrap() >= 2, "{a}");
    // Clients may not read it.
    assert_eq!(
        s.get("/api/v1/gateway/health", &key).await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn dry_runs_and_bad_bodies() {
    let mock = MockUpstream::start().await.unwrap();
    let (s, key) = setup(&mock).await;
    let mut b = body();
    b["dry_run"] = json!(true);
    let r = s.post("/api/v1/execute", &key, b).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["execution"]["status"], "dry_run");
    assert_eq!(mock.hits(PATH_A), 0);

    for (bad, code) in [
        (json!({"requirements": {}}), "INVALID_REQUEST"),
        (
            json!({"request": {"requirements": {"capabilities": "x"}}}),
            "INVALID_REQUEST",
        ),
        (
            json!({"request": body()["request"], "dry_run": "yes"}),
            "INVALID_REQUEST",
        ),
        (
            json!({"request": body()["request"], "retries": 9}),
            "INVALID_REQUEST",
        ),
    ] {
        let r = s.post("/api/v1/execute", &key, bad.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text);
        assert_eq!(r.code(), code, "{bad}");
    }
    let r = s
        .call(
            Method::POST,
            "/api/v1/execute",
            Some(&key),
            Body::Raw("application/json", "{\"request\": "),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    // Unauthenticated: 401 before anything else.
    let r = s
        .call(Method::POST, "/api/v1/execute", None, Body::Json(body()))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // No feasible service: the routing error, nothing called.
    let mut b = body();
    b["request"]["requirements"]["capabilities"] = json!(["image_generation"]);
    let r = s.post("/api/v1/execute", &key, b).await;
    assert_eq!(r.code(), "NO_MATCHING_SERVICE");
    assert_eq!(mock.hits(PATH_A) + mock.hits(PATH_B), 0);
}

#[tokio::test]
async fn the_emergency_stop_is_admin_only_audited_and_leaves_routing_on() {
    let mock = MockUpstream::start().await.unwrap();
    let (s, key) = setup(&mock).await;
    let stop = |on: bool| json!({"stopped": on, "reason": "incident 42"});
    let r = s
        .call(
            Method::PUT,
            "/api/v1/gateway/emergency-stop",
            Some(&key),
            Body::Json(stop(true)),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = s
        .call(
            Method::PUT,
            "/api/v1/gateway/emergency-stop",
            Some(ADMIN_KEY),
            Body::Json(stop(true)),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["stopped"], true);

    let r = s.post("/api/v1/execute", &key, body()).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.code(), "EMERGENCY_STOP");
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("incident 42")
    );
    assert_eq!(mock.hits(PATH_A), 0);
    // Routing keeps working.
    let r = s
        .post("/api/v1/route", &key, body()["request"].clone())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    let g = s.get("/api/v1/gateway/emergency-stop", ADMIN_KEY).await;
    assert_eq!(g.json["stopped"], true);
    assert_eq!(g.json["reason"], "incident 42");
    let r = s
        .call(
            Method::PUT,
            "/api/v1/gateway/emergency-stop",
            Some(ADMIN_KEY),
            Body::Json(stop(false)),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = s.post("/api/v1/execute", &key, body()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // Both changes are in the audit log.
    let audit = s.get("/api/v1/audit", ADMIN_KEY).await;
    let actions: Vec<_> = audit.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .filter(|a| a.starts_with("gateway."))
        .collect();
    assert_eq!(
        actions.len(),
        2,
        "{}",
        serde_json::to_string(&audit.json).unwrap()
    );
    for bad in [json!({"stopped": "yes"}), json!({"stop": true}), json!([])] {
        let r = s
            .call(
                Method::PUT,
                "/api/v1/gateway/emergency-stop",
                Some(ADMIN_KEY),
                Body::Json(bad),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
    }
}

#[tokio::test]
async fn the_emergency_stop_can_start_on_from_configuration() {
    let s = Server::start_with(|c| c.gateway.emergency_stop = true).await;
    let key = s.client_key("acme", &["chat"], 2).await;
    let r = s.post("/api/v1/execute", &key, body()).await;
    assert_eq!(r.code(), "EMERGENCY_STOP");
    let g = s.get("/api/v1/gateway/emergency-stop", ADMIN_KEY).await;
    assert_eq!(g.json["changed_by"], "configuration");
}

#[tokio::test]
async fn an_approved_decision_runs_exactly_once_and_only_as_approved() {
    let mock = MockUpstream::start().await.unwrap();
    let (s, key) = setup(&mock).await;
    let request = body()["request"].clone();
    let r = s
        .post("/api/v1/route?approve=true", &key, request.clone())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let token = r.header("x-caio-approval-token").unwrap().to_owned();
    assert!(r.header("x-caio-approval-expires-at").is_some());
    let approved = r.json["decision_id"].as_str().unwrap().to_owned();
    // The decision body itself is unchanged by the approval.
    assert!(r.json.get("approval").is_none());

    let exec = approved_execute;
    let r = s
        .post("/api/v1/execute", &key, exec(&token, &request))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["decision"]["decision_id"], approved.as_str());
    assert_eq!(r.json["execution"]["status"], "succeeded");
    assert_eq!(mock.hits(PATH_A), 1);

    // Once only.
    let r = s
        .post("/api/v1/execute", &key, exec(&token, &request))
        .await;
    assert_eq!(r.code(), "APPROVAL_INVALID");
    assert_eq!(r.json["error"]["details"]["reason"], "already_used");

    // A changed request, another principal, a forged token: refused, and none of them burns a
    // fresh token.
    let r = s
        .post("/api/v1/route", &key, json!({"approve": true, "requirements": request["requirements"], "payload": request["payload"]}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let fresh = r.header("x-caio-approval-token").unwrap().to_owned();
    let mut changed = request.clone();
    changed["payload"]["messages"][0]["content"] = json!("something else");
    let r = s
        .post("/api/v1/execute", &key, exec(&fresh, &changed))
        .await;
    assert_eq!(
        r.json["error"]["details"]["reason"], "request_changed",
        "{}",
        r.text
    );
    let other = s.client_key("acme", &["chat"], 2).await;
    let r = s
        .post("/api/v1/execute", &other, exec(&fresh, &request))
        .await;
    assert_eq!(r.json["error"]["details"]["reason"], "wrong_principal");
    let mut forged = fresh.clone();
    forged.pop();
    forged.push(if fresh.ends_with('A') { 'B' } else { 'A' });
    let r = s
        .post("/api/v1/execute", &key, exec(&forged, &request))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    for junk in ["", "caio_approval_", "not-a-token", &"x".repeat(5000)] {
        let r = s.post("/api/v1/execute", &key, exec(junk, &request)).await;
        assert_eq!(r.code(), "APPROVAL_INVALID", "{junk:.20}");
    }
    let r = s
        .post("/api/v1/execute", &key, exec(&fresh, &request))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(mock.hits(PATH_A), 2);

    // Issuing and using approvals are audited.
    let audit = s
        .get("/api/v1/audit?action=decision.approve", ADMIN_KEY)
        .await;
    assert_eq!(audit.json["items"].as_array().unwrap().len(), 2);
    let audit = s
        .get("/api/v1/audit?action=execute.approved", ADMIN_KEY)
        .await;
    assert_eq!(audit.json["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn approvals_expire() {
    let mock = MockUpstream::start().await.unwrap();
    mock.set_default(PATH_A, Behavior::OpenAiChat);
    let s = Server::start_with(|c| {
        c.services_dir = None;
        c.gateway.approval_ttl_s = 0;
    })
    .await;
    let r = s
        .yaml(
            Method::POST,
            "/api/v1/services",
            ADMIN_KEY,
            &contract("chat-a", &mock.url(), PATH_A, 0.99),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let key = s.client_key("acme", &["chat"], 2).await;
    let request = body()["request"].clone();
    let r = s.post("/api/v1/route?approve", &key, request.clone()).await;
    let token = r.header("x-caio-approval-token").unwrap().to_owned();
    let r = s
        .post("/api/v1/execute", &key, approved_execute(&token, &request))
        .await;
    assert_eq!(
        r.json["error"]["details"]["reason"], "expired",
        "{}",
        r.text
    );
    assert_eq!(mock.hits(PATH_A), 0);
}

#[tokio::test]
async fn an_idempotency_key_returns_the_first_outcome_without_a_second_call() {
    let mock = MockUpstream::start().await.unwrap();
    let (s, key) = setup(&mock).await;
    let send = |k: &str, token: &str, b: Value| {
        s.http
            .post(s.url("/api/v1/execute"))
            .bearer_auth(token)
            .header("idempotency-key", k)
            .json(&b)
    };
    let first = send("order-1", &key, body()).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first_body = first.text().await.unwrap();
    let again = send("order-1", &key, body()).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.text().await.unwrap(), first_body);
    assert_eq!(mock.hits(PATH_A), 1, "the service was called twice");

    // Same key, another body: refused. Another principal's same key: its own.
    let mut other_body = body();
    other_body["request"]["payload"]["messages"][0]["content"] = json!("bye");
    let r = send("order-1", &key, other_body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let other = s.client_key("acme", &["chat"], 2).await;
    let r = send("order-1", &other, body()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get("idempotent-replayed").is_none());
    assert_eq!(mock.hits(PATH_A), 2);

    // A failed execution is an outcome too; a refused request is not.
    for p in [PATH_A, PATH_B] {
        mock.set_default(p, crate::support::status(503));
    }
    let r = send("order-2", &key, body()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    let hits = mock.hits(PATH_A);
    let r = send("order-2", &key, body()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    assert_eq!(mock.hits(PATH_A), hits);
    let mut bad = body();
    bad["request"]["requirements"]["capabilities"] = json!(["image_generation"]);
    let r = send("order-3", &key, bad).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    mock.set_default(PATH_A, Behavior::OpenAiChat);
    let r = send("order-3", &key, body()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "a refused request kept its key");

    for bad_key in ["has space", ""] {
        let r = send(bad_key, &key, body()).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad_key:?}");
    }
    let audit = s
        .get("/api/v1/audit?action=execute.idempotent_replay", ADMIN_KEY)
        .await;
    assert_eq!(audit.json["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn contracts_pointing_at_metadata_addresses_are_refused_at_registration() {
    let s = Server::start_with(|c| c.services_dir = None).await;
    for url in [
        "http://169.254.169.254",
        "http://[fe80::1]:8080",
        "http://[::ffff:169.254.169.254]",
    ] {
        let r = s
            .yaml(
                Method::POST,
                "/api/v1/services",
                ADMIN_KEY,
                &contract("meta", url, PATH_A, 0.9),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{url}: {}", r.text);
        assert_eq!(r.code(), "INVALID_CONTRACT");
        assert_eq!(
            r.json["error"]["details"]["problems"][0]["path"],
            "/service/api/base_url"
        );
    }
    // Loopback is fine in development (and refused in production unless allow-listed).
    let r = s
        .yaml(
            Method::POST,
            "/api/v1/services",
            ADMIN_KEY,
            &contract("local", "http://127.0.0.1:9", PATH_A, 0.9),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let prod = Server::start_with(|c| {
        c.services_dir = None;
        c.gateway.allow_private_addresses = Some(false);
        c.gateway.allowed_private_ranges = vec!["10.9.0.0/16".into()];
    })
    .await;
    let r = prod
        .yaml(
            Method::POST,
            "/api/v1/services",
            ADMIN_KEY,
            &contract("local", "http://127.0.0.1:9", PATH_A, 0.9),
        )
        .await;
    assert_eq!(r.code(), "INVALID_CONTRACT", "{}", r.text);
    let r = prod
        .yaml(
            Method::POST,
            "/api/v1/services",
            ADMIN_KEY,
            &contract("listed", "http://10.9.1.2:80", PATH_A, 0.9),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

#[tokio::test]
async fn chains_route_every_stage_check_the_composition_and_feed_outputs_forward() {
    let mock = MockUpstream::start().await.unwrap();
    mock.set_default(PATH_A, Behavior::OpenAiChat);
    let s = Server::start_with(|c| c.services_dir = None).await;
    let stage_contract = |id: &str, cap: &str, path: &str, latency: u64| {
        format!(
            r#"apiVersion: caio/v1
kind: ServiceContract
service:
  id: {id}
  name: {id}
  version: 1.0.0
  tenant: acme
  capabilities: [{cap}]
  guarantees: {{ accuracy: {{ min: 0.9 }}, latency_ms: {{ max: {latency} }} }}
  cost: {{ per_request: 0.001, currency: USD }}
  privacy: {{ data_locality: local, encryption: true }}
  api:
    base_url: {url}
    adapter: http_json
    endpoints: {{ execute: {{ method: POST, path: {path} }} }}
    timeout_ms: 2000
"#,
            url = mock.url()
        )
    };
    for (id, cap, path, lat) in [
        ("ocr", "ocr", "/ocr", 300),
        ("sum", "summarization", "/sum", 500),
    ] {
        let r = s
            .yaml(
                Method::POST,
                "/api/v1/services",
                ADMIN_KEY,
                &stage_contract(id, cap, path, lat),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    let key = s.client_key("acme", &["chat"], 2).await;
    let chain = |max_latency: f64| {
        json!({"chain": {
            "stages": [
                {"requirements": {"capabilities": ["ocr"]}, "payload": {"image": "scan-1"}},
                {"requirements": {"capabilities": ["summarization"]}}
            ],
            "bounds": {"latency_ms": max_latency, "accuracy": 0.9}
        }})
    };
    let r = s.post("/api/v1/execute", &key, chain(800.0)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let c = &r.json["chain"];
    assert_eq!(c["run"]["status"], "succeeded");
    assert_eq!(c["run"]["composed"]["latency_ms"], 800.0);
    assert_eq!(c["decisions"].as_array().unwrap().len(), 2);
    assert_eq!(
        c["run"]["output"],
        json!({"echo": {"echo": {"image": "scan-1"}}})
    );
    // Each stage's decision and execution are in the trace log.
    for d in c["decisions"].as_array().unwrap() {
        let id = d["decision_id"].as_str().unwrap();
        let t = s.get(&format!("/api/v1/traces/{id}"), &key).await;
        assert_eq!(t.header("x-caio-trace-outcome"), Some("executed"), "{id}");
    }

    // Tighter than the stages can promise: 422, nothing called.
    let before = mock.hits("/ocr");
    let r = s.post("/api/v1/execute", &key, chain(799.0)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.code(), "CHAIN_INFEASIBLE");
    assert_eq!(
        r.json["error"]["details"]["broken"][0]["property"],
        "latency_ms"
    );
    assert_eq!(mock.hits("/ocr"), before);

    // A stage nobody offers names the stage; bad shapes are 400s.
    let mut bad = chain(800.0);
    bad["chain"]["stages"][1]["requirements"]["capabilities"] = json!(["telepathy"]);
    let r = s.post("/api/v1/execute", &key, bad).await;
    assert_eq!(r.code(), "NO_MATCHING_SERVICE");
    assert_eq!(r.json["error"]["details"]["stage"], 1);
    for bad in [
        json!({"chain": {"stages": [{"requirements": {"capabilities": ["ocr"]}}]}}),
        json!({"chain": {"stages": []}}),
        json!({"request": body()["request"], "chain": chain(1.0)["chain"]}),
        json!({"chain": {"stages": [1, 2]}}),
        json!({"chain": {"stages": chain(1.0)["chain"]["stages"], "bounds": {"speed": 1}}}),
    ] {
        let r = s.post("/api/v1/execute", &key, bad.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text);
    }
}

#[tokio::test]
async fn the_server_probes_health_endpoints_in_the_background() {
    let mock = MockUpstream::start().await.unwrap();
    mock.set_default("/down/health", crate::support::status(503));
    let s = Server::start_with(|c| {
        c.services_dir = None;
        c.gateway.probe_interval_s = 1;
    })
    .await;
    let contract = contract("down", &mock.url(), PATH_A, 0.9).replace(
        &format!("endpoints: {{ execute: {{ method: POST, path: {PATH_A} }} }}"),
        &format!(
            "endpoints: {{ execute: {{ method: POST, path: {PATH_A} }}, health: {{ method: GET, path: /down/health }} }}"
        ),
    );
    let r = s
        .yaml(Method::POST, "/api/v1/services", ADMIN_KEY, &contract)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let mut seen = None;
    for _ in 0..100 {
        let h = s.get("/api/v1/gateway/health", ADMIN_KEY).await;
        if let Some(d) = h.json["services"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["service_id"] == "down"))
        {
            seen = Some(d.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let d = seen.expect("no probe reached the service within 10 s");
    assert!(d["failures"].as_u64().unwrap() >= 1, "{d}");
    assert!(mock.hits("/down/health") >= 1);
}

#[tokio::test]
async fn contracts_may_only_name_allowed_credential_variables() {
    let s = Server::start_with(|c| {
        c.services_dir = None;
        c.gateway.credential_envs =
            vec!["OPENAI_API_KEY".into(), "CAIO_BOOTSTRAP_ADMIN_KEY".into()];
    })
    .await;
    let with_cred = |id: &str, var: &str| {
        contract(id, "http://127.0.0.1:9", PATH_A, 0.9).replace(
            "    timeout_ms: 2000\n",
            &format!("    timeout_ms: 2000\n    credential_env: {var}\n"),
        )
    };
    for (var, ok) in [
        ("CAIO_UPSTREAM_OPENAI", true),
        ("OPENAI_API_KEY", true),
        // Listed, but a CAIO setting: never.
        ("CAIO_BOOTSTRAP_ADMIN_KEY", false),
        ("AWS_SECRET_ACCESS_KEY", false),
        ("CAIO_LICENSE_KEY", false),
    ] {
        let id = format!("svc-{}", var.to_lowercase().replace('_', "-"));
        let r = s
            .yaml(
                Method::POST,
                "/api/v1/services",
                ADMIN_KEY,
                &with_cred(&id, var),
            )
            .await;
        if ok {
            assert_eq!(r.status, StatusCode::CREATED, "{var}: {}", r.text);
        } else {
            assert_eq!(r.code(), "INVALID_CONTRACT", "{var}: {}", r.text);
            assert_eq!(
                r.json["error"]["details"]["problems"][0]["path"],
                "/service/api/credential_env"
            );
        }
    }
}

#[tokio::test]
async fn an_approval_is_void_once_the_registry_changed_and_deadlines_only_shorten() {
    let mock = MockUpstream::start().await.unwrap();
    let (s, key) = setup(&mock).await;
    let request = body()["request"].clone();
    let r = s
        .post("/api/v1/route?approve=true", &key, request.clone())
        .await;
    let token = r.header("x-caio-approval-token").unwrap().to_owned();
    // A dry run with the token does not use it.
    let r = s
        .post(
            "/api/v1/execute",
            &key,
            json!({"request": request, "approval_token": token, "dry_run": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // The registry changes: the approval is void.
    let r = s
        .yaml(
            Method::POST,
            "/api/v1/services",
            ADMIN_KEY,
            &contract("chat-c", &mock.url(), PATH_B, 0.9),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = s
        .post("/api/v1/execute", &key, approved_execute(&token, &request))
        .await;
    assert_eq!(
        r.json["error"]["details"]["reason"], "registry_changed",
        "{}",
        r.text
    );
    assert_eq!(mock.hits(PATH_A), 0);
    let r = s
        .post(
            "/api/v1/execute",
            &key,
            json!({"request": request, "deadline_ms": 0}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

/// The body of `POST /api/v1/execute` running an approved decision.
fn approved_execute(token: &str, request: &Value) -> Value {
    json!({"request": request, "approval_token": token})
}
