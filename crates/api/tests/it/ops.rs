//! Operations endpoints and the request frame: health, readiness, metrics, version, OpenAPI,
//! dependencies, CORS, body limit, rate limit, request ids, unknown routes.

use std::collections::BTreeSet;
use std::sync::Arc;

use caio_api::error::ERROR_CODES;
use caio_api::openapi::ENDPOINTS;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn health_ready_version_dependencies() {
    let s = Server::start().await;
    let r = s.call(Method::GET, "/health", None, Body::None).await;
    assert_eq!(r.json["status"], "ok");
    let r = s.call(Method::GET, "/health/ready", None, Body::None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = s
        .call(Method::GET, "/api/v1/version", None, Body::None)
        .await;
    assert_eq!(r.json["version"], env!("CARGO_PKG_VERSION"));
    assert!(r.json["git_commit"].is_string() && r.json["build_date"].is_string());
    let r = s.get("/api/v1/runtime/dependencies", ADMIN_KEY).await;
    assert_eq!(r.json["status"], "ok", "{}", r.text);
    let deps = r.json["dependencies"].as_array().unwrap();
    let names: BTreeSet<&str> = deps.iter().map(|d| d["name"].as_str().unwrap()).collect();
    for n in [
        "trace_store",
        "audit_log",
        "policy_store",
        "key_store",
        "data_dir",
        "redis",
    ] {
        assert!(names.contains(n), "{n} missing");
    }
    let redis = deps.iter().find(|d| d["name"] == "redis").unwrap();
    assert_eq!(redis["state"], "not_configured");
    assert!(
        deps.iter()
            .all(|d| d["latency_ms"].is_number() && d["required"].is_boolean())
    );
}

#[tokio::test]
async fn readiness_turns_503_while_draining() {
    let s = Server::start().await;
    s.state
        .draining
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let r = s.call(Method::GET, "/health/ready", None, Body::None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.json["reasons"][0].as_str().unwrap().contains("draining"));
}

#[tokio::test]
async fn readiness_reports_a_failed_audit_write_until_one_succeeds() {
    let s = Server::start().await;
    s.state
        .audit_healthy
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let r = s.call(Method::GET, "/health/ready", None, Body::None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.text.contains("audit_log"), "{}", r.text);
    // The next audited change that is written clears it.
    s.client_key("acme", &["classify"], 2).await;
    let r = s.call(Method::GET, "/health/ready", None, Body::None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test]
async fn metrics_count_what_happened() {
    let s = Server::start().await;
    let key = s.client_key("acme", &["classify"], 2).await;
    s.post("/api/v1/route", &key, request("sentiment-de.yaml"))
        .await;
    s.post("/api/v1/route", &key, request("impossible.yaml"))
        .await;
    s.get("/api/v1/services", "bogus-token-that-is-not-any-key-at-all")
        .await;
    s.get("/api/v1/keys", &key).await;
    let m = s.call(Method::GET, "/metrics", None, Body::None).await;
    let t = &m.text;
    for needle in [
        "caio_decisions_total{outcome=\"routed\"} 1",
        "caio_decisions_total{outcome=\"no_route\"} 1",
        "caio_authn_failures_total{reason=\"invalid_key\"} 1",
        "caio_authz_denials_total{action=\"keys.manage\"} 1",
        "caio_route_stage_duration_seconds_count{stage=\"pipeline\"} 2",
        "caio_route_stage_duration_seconds_count{stage=\"persist\"} 2",
        "caio_traces_persisted_total 2",
        "caio_http_requests_total{route=\"/api/v1/route\",method=\"POST\",status=\"200\"} 1",
        "caio_rejections_total{step=\"match\"",
    ] {
        assert!(t.contains(needle), "{needle} missing from\n{t}");
    }
    // A policy that removes every service shows up by its id.
    let deny = "policies:\n  - id: deny-all\n    when: \"true\"\n    require: \"false\"\n";
    let r = s
        .yaml(Method::PUT, "/api/v1/policies", ADMIN_KEY, deny)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    s.post("/api/v1/route", &key, request("sentiment-de.yaml"))
        .await;
    let m = s.call(Method::GET, "/metrics", None, Body::None).await;
    assert!(
        m.text
            .contains("caio_policy_violations_total{policy=\"deny-all\"}"),
        "{}",
        m.text
    );
}

#[tokio::test]
async fn openapi_covers_every_endpoint_and_error_code() {
    let s = Server::start().await;
    let doc = s
        .call(Method::GET, "/openapi.json", None, Body::None)
        .await
        .json;
    assert_eq!(doc["openapi"], "3.1.0");
    for e in ENDPOINTS {
        let op = &doc["paths"][e.path][e.method];
        assert!(op.is_object(), "{} {} missing", e.method, e.path);
        assert_eq!(op["security"].as_array().unwrap().is_empty(), !e.auth);
    }
    let codes: Vec<&str> =
        doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
    assert_eq!(codes.len(), ERROR_CODES.len());
    // Every $ref resolves.
    fn refs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(o) => {
                if let Some(serde_json::Value::String(r)) = o.get("$ref") {
                    out.push(r.clone());
                }
                o.values().for_each(|x| refs(x, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{r}"));
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "{r} dangles"
        );
    }
    // And the reference doc lists every code.
    let api_md = std::fs::read_to_string(fixtures().join("../docs/reference/api.md")).unwrap();
    for (code, _, _) in ERROR_CODES {
        assert!(api_md.contains(code), "docs/reference/api.md lacks {code}");
    }
    for e in ENDPOINTS {
        assert!(
            api_md.contains(e.path),
            "docs/reference/api.md lacks {}",
            e.path
        );
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json_errors() {
    let s = Server::start().await;
    let r = s.get("/api/v1/nothing-here", ADMIN_KEY).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "NOT_FOUND");
    let r = s
        .call(Method::PATCH, "/api/v1/route", Some(ADMIN_KEY), Body::None)
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.code(), "METHOD_NOT_ALLOWED");
}

#[tokio::test]
async fn body_limit_is_413_with_the_error_body() {
    let s = Server::start_with(|c| c.limits.body_bytes = 4096).await;
    let big =
        json!({"requirements": {"capabilities": ["x"]}, "payload": {"text": "a".repeat(10_000)}});
    let r = s.post("/api/v1/route", ADMIN_KEY, big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.code(), "PAYLOAD_TOO_LARGE");
    assert_eq!(r.json["error"]["details"]["limit_bytes"], 4096);
    // Without Content-Length (chunked), the limit holds as well.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(s.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "POST /api/v1/route HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ADMIN_KEY}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..12 {
        let chunk = format!("3e8\r\n{}\r\n", " ".repeat(1000));
        if sock.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = sock.write_all(b"0\r\n\r\n").await;
    let mut out = Vec::new();
    let _ = sock.read_to_end(&mut out).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(out.contains("PAYLOAD_TOO_LARGE"));
}

#[tokio::test]
async fn cors_allows_only_the_allowlist() {
    let s =
        Server::start_with(|c| c.cors.allowed_origins = vec!["https://console.example.com".into()])
            .await;
    let preflight = |origin: &'static str| {
        s.http
            .request(Method::OPTIONS, s.url("/api/v1/route"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    let ok = preflight("https://console.example.com").await.unwrap();
    assert!(ok.status().is_success());
    assert_eq!(
        ok.headers().get("access-control-allow-origin").unwrap(),
        "https://console.example.com"
    );
    let bad = preflight("https://evil.example").await.unwrap();
    assert!(bad.headers().get("access-control-allow-origin").is_none());
    // A simple cross-origin GET carries the header only for the allowed origin.
    let r = s
        .http
        .get(s.url("/health"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let s = Server::start_with(|c| {
        c.rate_limit.per_second = 0.5;
        c.rate_limit.burst = 3;
    })
    .await;
    let key = s.client_key("acme", &["classify"], 2).await;
    let other = s.client_key("acme", &["classify"], 2).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(s.get("/api/v1/traces", &key).await);
    }
    assert!(statuses[..3].iter().all(|r| r.status == StatusCode::OK));
    let last = statuses.last().unwrap();
    assert_eq!(last.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(last.code(), "RATE_LIMITED");
    let retry: u64 = last.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    // Per principal: another key is not limited by the first one's use.
    assert_eq!(s.get("/api/v1/traces", &other).await.status, StatusCode::OK);
    let m = s.call(Method::GET, "/metrics", None, Body::None).await;
    assert!(m.text.contains("caio_rate_limited_total 2"), "{}", m.text);
}

#[tokio::test]
async fn request_ids_are_kept_or_made() {
    let s = Server::start().await;
    let r = s
        .http
        .get(s.url("/health"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    let r = s
        .http
        .get(s.url("/health"))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(id, "bad id with spaces");
    let r2 = s.http.get(s.url("/health")).send().await.unwrap();
    assert_ne!(r2.headers()["x-request-id"].to_str().unwrap(), id);
}

#[tokio::test]
async fn a_development_server_without_credentials_serves_anonymous_clients() {
    let s = Server::start_with(|c| c.auth.strict = Some(false)).await;
    let r = s
        .call(
            Method::POST,
            "/api/v1/discover",
            None,
            Body::Json(request("sentiment-de.yaml")),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // Anonymous is a client: no keys, no registration.
    let r = s.call(Method::GET, "/api/v1/keys", None, Body::None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // A presented credential is still checked.
    let r = s
        .get("/api/v1/keys", "wrong-key-wrong-key-wrong-key-wrong")
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

/// An audit log that refuses writes while `failing` is set.
#[derive(Debug, Default)]
struct FlakyAudit {
    inner: caio_trace::MemoryAuditLog,
    failing: std::sync::atomic::AtomicBool,
}

impl caio_trace::AuditLog for FlakyAudit {
    fn append(
        &self,
        event: caio_trace::AuditEvent,
    ) -> Result<caio_trace::AuditEntry, caio_trace::StoreError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(caio_trace::StoreError::Invalid("disk full (test)".into()));
        }
        self.inner.append(event)
    }
    fn query(
        &self,
        q: &caio_trace::AuditQuery,
    ) -> Result<caio_trace::AuditPage, caio_trace::StoreError> {
        self.inner.query(q)
    }
    fn head(&self) -> caio_trace::ChainHead {
        self.inner.head()
    }
}

#[tokio::test]
async fn no_change_takes_effect_without_its_audit_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (mut state, _) = caio_api::AppState::build(config(dir.path())).unwrap();
    let audit = Arc::new(FlakyAudit::default());
    Arc::get_mut(&mut state)
        .unwrap_or_else(|| panic!("the state is shared before the server starts"))
        .audit = Arc::clone(&audit) as Arc<dyn caio_trace::AuditLog>;
    let s = Server::start_state(state, dir).await;
    let yaml = contract_yaml(
        "audited-svc",
        "http://127.0.0.1:9",
        "http_json",
        "classify",
        0.9,
        "    endpoints: { execute: { method: POST, path: /x } }\n",
    );
    audit
        .failing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    // Register, policy change and key creation all refuse, and none of them happened.
    let r = s
        .yaml(Method::POST, "/api/v1/services", ADMIN_KEY, &yaml)
        .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.text);
    assert!(s.state.registry().snapshot().get("audited-svc").is_none());
    let before = s.state.routers.policies().version.clone();
    let deny = "policies:\n  - id: deny-all\n    when: \"true\"\n    require: \"false\"\n";
    let r = s
        .yaml(Method::PUT, "/api/v1/policies", ADMIN_KEY, deny)
        .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.text);
    assert_eq!(s.state.routers.policies().version, before);
    let key_count = || async {
        let r = s.get("/api/v1/keys", ADMIN_KEY).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.json["items"].as_array().unwrap().len()
    };
    let keys_before = key_count().await;
    let r = s
        .post(
            "/api/v1/keys",
            ADMIN_KEY,
            json!({"name": "k", "role": "client", "tenant": "acme"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.text);
    let keys_after = key_count().await;
    assert_eq!(keys_after, keys_before);
    // With the log back, the same register works and its entry is in the log.
    audit
        .failing
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let r = s
        .yaml(Method::POST, "/api/v1/services", ADMIN_KEY, &yaml)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let log = s.get("/api/v1/audit", ADMIN_KEY).await.json;
    let actions: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(actions, ["service.register"], "{log}");
}

/// Reads from `sock` until the server closes it (or answers, for `answered`); `None` when neither
/// happens within `patience`.
async fn outcome_within(
    sock: &mut tokio::net::TcpStream,
    patience: std::time::Duration,
) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    if out.windows(4).any(|w| w == b"\r\n\r\n") {
                        return;
                    }
                }
            }
        }
    };
    tokio::time::timeout(patience, read).await.ok()?;
    Some(String::from_utf8_lossy(&out).into_owned())
}

async fn connect(s: &Server) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(s.base.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// A client that sends its headers a byte at a time, or opens a connection and sends nothing, or
/// keeps a connection open after its answer, held a connection (and a file descriptor) forever:
/// a few thousand such clients could take every descriptor the server has, including the ones its
/// trace log needs. Now each is closed once `limits.header_timeout_ms` passes without a complete
/// request head, while a request whose headers arrived may send its body slowly.
#[tokio::test]
async fn slow_and_idle_connections_are_closed() {
    use tokio::io::AsyncWriteExt;
    let s = Server::start_with(|c| c.limits.header_timeout_ms = 500).await;
    let patience = std::time::Duration::from_secs(15);
    let mut partial = connect(&s).await;
    partial
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nx-slow: ")
        .await
        .unwrap();
    let mut silent = connect(&s).await;
    let mut kept = connect(&s).await;
    kept.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = outcome_within(&mut kept, patience)
        .await
        .unwrap_or_default();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A head trickling in: closed even though bytes keep coming.
    let trickle = tokio::spawn({
        let mut sock = connect(&s).await;
        async move {
            sock.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n")
                .await
                .unwrap();
            for _ in 0..40 {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                if sock.write_all(b"x-a: b\r\n").await.is_err() {
                    return true;
                }
            }
            // Still open after 4 s of headers: read whatever comes.
            outcome_within(&mut sock, std::time::Duration::from_millis(1)).await
                == Some(String::new())
        }
    });
    for (name, sock) in [
        ("partial head", &mut partial),
        ("nothing sent", &mut silent),
        ("idle after an answer", &mut kept),
    ] {
        let rest = outcome_within(sock, patience).await;
        assert_eq!(rest.as_deref(), Some(""), "{name}: not closed");
    }
    assert!(trickle.await.unwrap(), "a trickled head was not cut off");

    // The deadline covers the head only: a body may arrive later than it.
    let mut slow_body = connect(&s).await;
    let body = br#"{"requirements":{"capabilities":["sentiment_analysis"]}}"#;
    let head = format!(
        "POST /api/v1/discover HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ADMIN_KEY}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    slow_body.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    slow_body.write_all(body).await.unwrap();
    let answer = outcome_within(&mut slow_body, patience)
        .await
        .unwrap_or_default();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Beyond `limits.max_connections`, new connections wait in the listen backlog and are served as
/// soon as an open one closes.
#[tokio::test]
async fn connections_beyond_the_limit_wait_for_a_free_one() {
    use tokio::io::AsyncWriteExt;
    let s = Server::start_with(|c| c.limits.max_connections = 2).await;
    let mut held = vec![connect(&s).await, connect(&s).await];
    for sock in &mut held {
        sock.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let answer = outcome_within(sock, std::time::Duration::from_secs(15))
            .await
            .unwrap_or_default();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let mut third = connect(&s).await;
    third
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let early = outcome_within(&mut third, std::time::Duration::from_millis(500)).await;
    assert_eq!(early, None, "served past the limit");
    drop(held.pop());
    let answer = outcome_within(&mut third, std::time::Duration::from_secs(15))
        .await
        .unwrap_or_default();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
