//! Routing over HTTP: decisions, traces persisted before the answer, verification, no-route.

use caio_contracts::decision::Decision;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::*;

fn fixture_contracts() -> Vec<caio_contracts::ServiceContract> {
    caio_gateway::loader::load_services_dir(&fixtures().join("services")).unwrap()
}

#[tokio::test]
async fn a_decision_is_recorded_and_verifies_offline() {
    let s = Server::start().await;
    let key = s
        .client_key("acme", &["classify", "search", "chat", "translate"], 2)
        .await;
    let r = s
        .post("/api/v1/route", &key, request("sentiment-de.yaml"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let id = r.json["decision_id"].as_str().unwrap().to_owned();
    assert_eq!(r.header("x-caio-decision-id"), Some(id.as_str()));
    assert!(r.json["recorded_at"].is_string());

    // The trace is the response, byte for byte.
    let t = s.get(&format!("/api/v1/traces/{id}"), &key).await;
    assert_eq!(t.status, StatusCode::OK);
    assert_eq!(t.text, r.text);
    assert_eq!(t.header("x-caio-trace-outcome"), Some("routed"));

    // `caio verify`'s check passes on it with the contracts this tenant can see.
    let decision: Decision = serde_json::from_str(&t.text).unwrap();
    let visible: Vec<_> = fixture_contracts()
        .into_iter()
        .filter(|c| c.service.tenant == "public" || c.service.tenant == "acme")
        .collect();
    let (set, _) = caio_gateway::loader::load_policies(&fixtures().join("policies.yaml")).unwrap();
    caio_gateway::verify(&decision, visible, &set).unwrap();

    // It was persisted before the response: it is in the file already.
    let log = std::fs::read_to_string(s.dir.path().join("traces/traces.jsonl")).unwrap();
    assert!(log.contains(&id));
}

#[tokio::test]
async fn the_same_decision_as_the_cli() {
    // The server and the offline pipeline agree on the choice and the id for the same inputs
    // (public tenant, same principal fields).
    let s = Server::start().await;
    let key = s
        .key(json!({"name": "alice", "role": "client", "tenant": "acme",
                    "permissions": ["classify", "search", "chat", "translate"], "trust_level": 2}))
        .await;
    let r = s
        .post("/api/v1/route", &key, request("sentiment-de.yaml"))
        .await;
    let served: Decision = serde_json::from_str(&r.text).unwrap();
    let visible: Vec<_> = fixture_contracts()
        .into_iter()
        .filter(|c| c.service.tenant == "public" || c.service.tenant == "acme")
        .collect();
    let registry: std::sync::Arc<dyn caio_registry::Registry> =
        std::sync::Arc::new(caio_registry::MemoryRegistry::with_contracts(visible).unwrap());
    let (_, compiled) =
        caio_gateway::loader::load_policies(&fixtures().join("policies.yaml")).unwrap();
    let router = caio_gateway::Router::new(registry, compiled);
    let req = caio_contracts::parse_request(
        "r",
        &fixture("requests/sentiment-de.yaml"),
        caio_contracts::Format::Yaml,
    )
    .unwrap();
    let offline = router.route(&req, &served.principal).unwrap();
    assert_eq!(offline.decision_id, served.decision_id);
    assert_eq!(offline.service_id, served.service_id);
}

#[tokio::test]
async fn no_route_is_a_structured_error_and_is_recorded() {
    let s = Server::start().await;
    let key = s.client_key("acme", &["classify"], 2).await;
    let r = s
        .post("/api/v1/route", &key, request("impossible.yaml"))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.code(), "NO_MATCHING_SERVICE");
    let rejected = r.json["error"]["details"]["rejected"].as_array().unwrap();
    assert!(!rejected.is_empty());
    for x in rejected {
        assert!(x["step"].is_string() && x["reason"].is_string() && x["detail"].is_string());
    }
    let trace_id = r.json["error"]["details"]["trace_id"].as_str().unwrap();
    let t = s.get(&format!("/api/v1/traces/{trace_id}"), &key).await;
    assert_eq!(t.status, StatusCode::OK);
    assert_eq!(t.header("x-caio-trace-outcome"), Some("no_route"));
    let page = s.get("/api/v1/traces?outcome=no_route", &key).await;
    assert_eq!(
        page.json["items"].as_array().unwrap().len(),
        1,
        "{}",
        page.text
    );
    let page = s.get("/api/v1/traces?outcome=routed", &key).await;
    assert_eq!(page.json["items"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn invalid_requests_name_the_problem() {
    let s = Server::start().await;
    let key = s.client_key("acme", &["classify"], 2).await;
    let r = s
        .call(
            Method::POST,
            "/api/v1/route",
            Some(&key),
            Body::Raw(
                "application/json",
                "{\"requirements\": {\"capabilities\": [}",
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.code(), "INVALID_REQUEST");
    assert!(
        r.json["error"]["details"]["problems"][0]["line"].is_number(),
        "{}",
        r.text
    );
    let r = s
        .post(
            "/api/v1/route",
            &key,
            json!({"requirements": {"capabilities": ["sentiment_analysis"]}, "seed": "x"}),
        )
        .await;
    assert_eq!(r.code(), "INVALID_REQUEST");
    assert_eq!(
        r.json["error"]["details"]["problems"][0]["path"], "/seed",
        "{}",
        r.text
    );
    // YAML works too.
    let r = s
        .yaml(
            Method::POST,
            "/api/v1/route",
            &key,
            &fixture("requests/sentiment-de.yaml"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // Neither JSON nor YAML.
    let r = s
        .call(
            Method::POST,
            "/api/v1/route",
            Some(&key),
            Body::Raw("image/png", "\u{1}PNG"),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn traces_query_by_time_service_and_pages() {
    let s = Server::start().await;
    let key = s
        .client_key("acme", &["classify", "search", "chat", "translate"], 2)
        .await;
    let before = caio_trace::now_ms();
    for i in 0..5 {
        let mut req = request("sentiment-de.yaml");
        req["seed"] = json!(i);
        let r = s.post("/api/v1/route", &key, req).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let r = s
        .post("/api/v1/route", &key, request("translate-bulk.json"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let translate_service = r.json["service_id"].as_str().unwrap().to_owned();

    let page = s.get("/api/v1/traces?limit=2", &key).await;
    let items = page.json["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    // Newest first.
    assert!(items[0]["seq"].as_u64() > items[1]["seq"].as_u64());
    let mut seen = items.len();
    let mut cursor = page.json["next_cursor"].as_u64();
    while let Some(c) = cursor {
        let p = s
            .get(&format!("/api/v1/traces?limit=2&cursor={c}"), &key)
            .await;
        seen += p.json["items"].as_array().unwrap().len();
        cursor = p.json["next_cursor"].as_u64();
    }
    assert_eq!(seen, 6);
    let p = s
        .get(&format!("/api/v1/traces?service={translate_service}"), &key)
        .await;
    assert_eq!(p.json["items"].as_array().unwrap().len(), 1, "{}", p.text);
    let p = s
        .get(&format!("/api/v1/traces?since={}", before), &key)
        .await;
    assert_eq!(p.json["items"].as_array().unwrap().len(), 6);
    let p = s
        .get("/api/v1/traces?until=2000-01-01T00:00:00Z", &key)
        .await;
    assert_eq!(p.json["items"].as_array().unwrap().len(), 0);
    let p = s.get("/api/v1/traces?since=yesterday", &key).await;
    assert_eq!(p.code(), "INVALID_QUERY");
}

#[tokio::test]
async fn traces_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let mut s = Server::start_config(config(&path), dir).await;
    let key = s.client_key("acme", &["classify"], 2).await;
    let r = s
        .post("/api/v1/route", &key, request("sentiment-de.yaml"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let id = r.json["decision_id"].as_str().unwrap().to_owned();
    s.stop().await;
    let dir = std::mem::replace(&mut s.dir, tempfile::tempdir().unwrap());
    drop(s);
    let s2 = Server::start_config(config(&path), dir).await;
    let t = s2.get(&format!("/api/v1/traces/{id}"), ADMIN_KEY).await;
    assert_eq!(t.status, StatusCode::OK);
    assert_eq!(t.text, r.text);
    // Keys live in the data directory too.
    assert_eq!(
        s2.get(&format!("/api/v1/traces/{id}"), &key).await.status,
        StatusCode::OK
    );
}

/// Names of the sealed trace segments in a server's trace directory, oldest first.
fn sealed_segments(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("traces"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("traces-"))
        .collect();
    names.sort();
    names
}

/// Every answer's trace is the answer, except those before seq `kept_from` (deleted): 404.
async fn check_traces(s: &Server, answers: &[(String, String)], kept_from: usize) {
    for (i, (id, text)) in answers.iter().enumerate() {
        let seq = i + 1;
        let t = s.get(&format!("/api/v1/traces/{id}"), ADMIN_KEY).await;
        if seq < kept_from {
            assert_eq!(t.status, StatusCode::NOT_FOUND, "seq {seq}");
        } else {
            assert_eq!(t.status, StatusCode::OK, "seq {seq}");
            assert_eq!(&t.text, text, "seq {seq}");
        }
    }
}

#[tokio::test]
async fn the_trace_log_is_sealed_into_segments_and_old_ones_are_deleted() {
    let mut s = Server::start_with(|c| {
        c.traces.segment_bytes = 1 << 20;
        c.traces.retain_segments = 1;
    })
    .await;
    let key = s
        .client_key("acme", &["classify", "search", "chat", "translate"], 2)
        .await;
    // Distinct decisions (the seed is part of the request) until the log was sealed twice: the
    // first segment is deleted then, the second kept.
    let mut answers: Vec<(String, String)> = Vec::new();
    let mut first_sealed: Option<String> = None;
    for seed in 0..5000 {
        let mut req = request("sentiment-de.yaml");
        req["seed"] = json!(seed);
        let r = s.post("/api/v1/route", &key, req).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        answers.push((r.json["decision_id"].as_str().unwrap().to_owned(), r.text));
        let sealed = sealed_segments(s.dir.path());
        assert!(
            sealed.len() <= 1,
            "retention keeps one sealed segment: {sealed:?}"
        );
        match (&first_sealed, sealed.first()) {
            (None, Some(n)) => first_sealed = Some(n.clone()),
            (Some(f), Some(n)) if f != n => break,
            _ => {}
        }
    }
    let kept = sealed_segments(s.dir.path());
    assert_eq!(kept.len(), 1);
    assert_ne!(
        Some(&kept[0]),
        first_sealed.as_ref(),
        "the log was sealed twice"
    );
    // The first segment started at seq 1; the kept one at the seq its name gives.
    let kept_from: usize = kept[0]["traces-".len()..kept[0].len() - ".jsonl".len()]
        .parse()
        .unwrap();
    assert!(kept_from > 1);
    check_traces(&s, &answers, kept_from).await;
    // The metrics report what is on disk: one sealed segment, and the bytes of both files.
    let on_disk: u64 = std::fs::read_dir(s.dir.path().join("traces"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let metrics = s.call(Method::GET, "/metrics", None, Body::None).await.text;
    assert!(metrics.contains("\ncaio_trace_segments 1\n"), "{metrics}");
    assert!(
        metrics.contains(&format!("\ncaio_trace_log_bytes {on_disk}\n")),
        "{on_disk}: {metrics}"
    );
    // The directory verifies offline as one chain, from the kept segment to the last record.
    let head = caio_trace::verify_log(&s.dir.path().join("traces")).unwrap();
    assert_eq!(head.seq, answers.len() as u64);
    // A restart indexes the kept segment and the active file again.
    s.stop().await;
    let dir = std::mem::replace(&mut s.dir, tempfile::tempdir().unwrap());
    drop(s);
    let mut c = config(dir.path());
    c.traces.segment_bytes = 1 << 20;
    c.traces.retain_segments = 1;
    let (state, report) = caio_api::AppState::build(c).unwrap();
    assert_eq!(report.trace_records, answers.len() as u64);
    assert_eq!(report.trace_first_seq, kept_from as u64);
    assert_eq!(report.trace_segments, 1);
    let mut s2 = Server::start_state(state, dir).await;
    check_traces(&s2, &answers, kept_from).await;
    // A power loss right after a seal: the kept segment lost half its last line, and the new
    // traces.jsonl nothing yet. The server cuts the line off, says so, and goes on from the
    // record before it.
    s2.stop().await;
    let dir = std::mem::replace(&mut s2.dir, tempfile::tempdir().unwrap());
    drop(s2);
    let traces = dir.path().join("traces");
    let segment = traces.join(&kept[0]);
    let bytes = std::fs::read(&segment).unwrap();
    let last_start = bytes[..bytes.len() - 1]
        .iter()
        .rposition(|b| *b == b'\n')
        .unwrap()
        + 1;
    std::fs::write(&segment, &bytes[..last_start + 10]).unwrap();
    std::fs::write(traces.join("traces.jsonl"), b"").unwrap();
    let last_kept = kept_from - 1 + bytes[..last_start].iter().filter(|b| **b == b'\n').count();
    let mut c = config(dir.path());
    c.traces.segment_bytes = 1 << 20;
    c.traces.retain_segments = 1;
    let (state, report) = caio_api::AppState::build(c).unwrap();
    assert_eq!(report.trace_truncated_segment, Some(segment));
    assert_eq!(report.trace_truncated_bytes, 10);
    assert_eq!(report.trace_records, last_kept as u64);
    let s3 = Server::start_state(state, dir).await;
    check_traces(&s3, &answers[..last_kept], kept_from).await;
    let lost = s3
        .get(
            &format!("/api/v1/traces/{}", answers[last_kept].0),
            ADMIN_KEY,
        )
        .await;
    assert_eq!(lost.status, StatusCode::NOT_FOUND);
    let r = s3
        .post("/api/v1/route", &key, request("sentiment-de.yaml"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let head = caio_trace::verify_log(&s3.dir.path().join("traces")).unwrap();
    assert_eq!(head.seq, last_kept as u64 + 1);
}

#[tokio::test]
async fn a_failed_seal_turns_readiness_red_before_any_request_is_refused() {
    let s = Server::start_with(|c| c.traces.segment_bytes = 1 << 20).await;
    let key = s
        .client_key("acme", &["classify", "search", "chat", "translate"], 2)
        .await;
    // Something already has the name the first segment will get (a read-only directory or
    // a full disk fail the same way): the seal fails.
    std::fs::create_dir(
        s.dir
            .path()
            .join("traces/traces-00000000000000000001.jsonl"),
    )
    .unwrap();
    let ready = || s.call(Method::GET, "/health/ready", None, Body::None);
    let mut routed = 0;
    let red = loop {
        let r = ready().await;
        if r.status != StatusCode::OK {
            break r;
        }
        assert!(routed < 2000, "the log never reached 1 MiB");
        let mut req = request("sentiment-de.yaml");
        req["seed"] = json!(routed);
        let r = s.post("/api/v1/route", &key, req).await;
        assert_eq!(r.status, StatusCode::OK, "request {routed}: {}", r.text);
        routed += 1;
    };
    // Every request so far was answered (the one whose batch crossed the size too), and
    // readiness already names the cause.
    assert_eq!(red.status, StatusCode::SERVICE_UNAVAILABLE);
    let reason = red.json["reasons"][0].as_str().unwrap();
    assert!(
        reason.starts_with("trace_store: refusing records"),
        "{reason}"
    );
    assert!(reason.contains("exists already"), "{reason}");
    let r = s
        .post("/api/v1/route", &key, request("sentiment-de.yaml"))
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(r.json["error"]["code"], "UNAVAILABLE");
    let deps = s.get("/api/v1/runtime/dependencies", ADMIN_KEY).await.json;
    let store = deps["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "trace_store")
        .unwrap()
        .clone();
    assert_eq!(store["state"], "down", "{store}");
    assert!(
        store["detail"]
            .as_str()
            .unwrap()
            .contains("refusing records"),
        "{store}"
    );
}
