//! The test harness: a real server on an ephemeral loopback port, a real HTTP client, fixtures.

use std::path::PathBuf;
use std::sync::Arc;

use caio_api::AppState;
use caio_config::{Config, Mode, Secret, TraceBackend};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

pub const ADMIN_KEY: &str = "test-admin-Zx8kq2Lw9pR4tY7uV1bN6mC3dF5gH0jQ";
pub const HS256_SECRET: &str = "hs256-secret-for-tests-Qm7Zp3Lx9Vb2Nc8Kd4";

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

pub fn fixture(rel: &str) -> String {
    std::fs::read_to_string(fixtures().join(rel)).unwrap()
}

/// A strict server with the fixture services and policies, file traces in a temp dir.
pub fn config(dir: &std::path::Path) -> Config {
    let mut c = Config {
        mode: Mode::Development,
        listen: "127.0.0.1:0".to_owned(),
        data_dir: dir.to_path_buf(),
        services_dir: Some(fixtures().join("services")),
        policies_file: Some(fixtures().join("policies.yaml")),
        ..Config::default()
    };
    c.auth.strict = Some(true);
    c.auth.bootstrap_admin_key = Some(Secret::new(ADMIN_KEY));
    c.auth.jwt.hs256_secret = Some(Secret::new(HS256_SECRET));
    c.traces.backend = TraceBackend::File;
    c.log.access = false;
    // The fixture contracts name ports nobody listens on: probes would mark them down.
    c.gateway.probe_interval_s = 0;
    c
}

pub struct Server {
    pub base: String,
    pub state: Arc<AppState>,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub handle: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    pub async fn start() -> Server {
        Server::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        tweak(&mut c);
        Server::start_config(c, dir).await
    }

    pub async fn start_config(c: Config, dir: tempfile::TempDir) -> Server {
        let (state, _report) = AppState::build(c).unwrap();
        Server::start_state(state, dir).await
    }

    /// A server over a state built (and possibly adjusted) by the test.
    pub async fn start_state(state: Arc<AppState>, dir: tempfile::TempDir) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(caio_api::serve(listener, Arc::clone(&state), async move {
            let _ = stopped.await;
        }));
        Server {
            base: format!("http://{addr}"),
            state,
            http: reqwest::Client::new(),
            dir,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    pub async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.unwrap().unwrap();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with an optional bearer token and body (JSON value, or raw text with a type).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Body<'_>,
    ) -> Reply {
        let mut r = self.http.request(method, self.url(path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r = match body {
            Body::None => r,
            Body::Json(v) => r.json(&v),
            Body::Raw(ct, text) => r.header("content-type", ct).body(text.to_owned()),
        };
        let resp = r.send().await.unwrap();
        Reply::from(resp).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call(Method::GET, path, Some(token), Body::None).await
    }

    pub async fn post(&self, path: &str, token: &str, v: Value) -> Reply {
        self.call(Method::POST, path, Some(token), Body::Json(v))
            .await
    }

    pub async fn yaml(&self, method: Method, path: &str, token: &str, text: &str) -> Reply {
        self.call(
            method,
            path,
            Some(token),
            Body::Raw("application/yaml", text),
        )
        .await
    }

    /// Creates an API key and returns it.
    pub async fn key(&self, spec: Value) -> String {
        let r = self.post("/api/v1/keys", ADMIN_KEY, spec).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.json["key"].as_str().unwrap().to_owned()
    }

    pub async fn client_key(&self, tenant: &str, permissions: &[&str], trust: u8) -> String {
        self.key(json!({
            "name": format!("client of {tenant}"),
            "role": "client",
            "tenant": tenant,
            "permissions": permissions,
            "trust_level": trust,
        }))
        .await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub enum Body<'a> {
    None,
    Json(Value),
    Raw(&'a str, &'a str),
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Reply {
    pub async fn from(resp: reqwest::Response) -> Reply {
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            text,
            json,
        }
    }

    /// The error code of an error body.
    pub fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The fixture request of `name` as JSON.
pub fn request(name: &str) -> Value {
    let text = fixture(&format!("requests/{name}"));
    if name.ends_with(".json") {
        serde_json::from_str(&text).unwrap()
    } else {
        serde_norway::from_str(&text).unwrap()
    }
}

/// A contract of tenant `acme` for a service at `url` (accuracy orders candidates; latency bound
/// 5000 ms, cost 0.001, local and encrypted). `api` holds the `api:` lines after `adapter`
/// (endpoints, model, timeout), each indented four spaces and ending in a newline.
pub fn contract_yaml(
    id: &str,
    url: &str,
    adapter: &str,
    capability: &str,
    accuracy: f64,
    api: &str,
) -> String {
    format!(
        r#"apiVersion: caio/v1
kind: ServiceContract
service:
  id: {id}
  name: {id}
  version: 1.0.0
  tenant: acme
  capabilities: [{capability}]
  guarantees:
    accuracy: {{ min: {accuracy} }}
    latency_ms: {{ max: 5000 }}
  cost: {{ per_request: 0.001, currency: USD }}
  privacy: {{ data_locality: local, encryption: true }}
  api:
    base_url: {url}
    adapter: {adapter}
{api}"#
    )
}

/// A mock upstream answer: an error status without `Retry-After`.
pub fn status(code: u16) -> caio_mock_upstream::Behavior {
    caio_mock_upstream::Behavior::Status {
        status: code,
        retry_after_s: None,
    }
}
