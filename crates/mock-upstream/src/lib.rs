//! A scripted AI-service upstream for CAIO's tests and benchmarks.
//!
//! [`MockUpstream`] is a real HTTP/1.1 server on loopback (tokio + hyper, its own accept loop) that
//! plays OpenAI, Anthropic, a JSON service and CAIO's own service protocol, and can be scripted
//! per path to fail: error statuses, resets, hangs, malformed, oversized or slow bodies, delays.
//! The gateway's tests drive retries, fallbacks, circuit breakers and adapters against it over
//! real sockets; the `caio-mock-upstream` binary serves the defaults as the "direct" baseline of a
//! load test.
//!
//! Every path starts with a default [`Behavior`] (see [`MockUpstream::set_default`] for the
//! table); [`MockUpstream::script`] queues behaviours consumed one per request before the default
//! applies again. Every response carries its `content-type` and `x-mock-request: <n>`, the 1-based
//! number of the request on its path.
//!
//! This is a test-support crate: a dev-dependency only (deny.toml enforces it).

mod body;
mod protocols;
mod response;

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{CONNECTION, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use crate::body::MockBody;
use crate::response::{Ctx, mock_error};

/// Request bodies larger than this get 413.
pub const MAX_REQUEST_BODY: usize = 16 * 1024 * 1024;

/// What the mock does with one request.
#[derive(Debug, Clone)]
pub enum Behavior {
    /// Status, extra headers and a JSON body. A `content-type` among `headers` replaces
    /// `application/json`; other headers are added.
    Json {
        status: u16,
        body: Value,
        headers: Vec<(String, String)>,
    },
    /// 200 `{"echo": <the request body as JSON, or null if it is not JSON>}`.
    Echo,
    /// OpenAI chat completions, computed from the request, server-sent events when
    /// `"stream": true`. The reply is `echo: <content of the last message>`; usage counts
    /// whitespace-separated words.
    OpenAiChat,
    /// OpenAI embeddings, computed from the request: 8 floats in [-1, 1] per input, from SHA-256
    /// of the input string.
    OpenAiEmbeddings,
    /// Anthropic messages, computed from the request.
    AnthropicMessages,
    /// CAIO's service protocol: `{"output":{"echo":<payload>},"metrics":{"latency_ms":1.0}}`.
    CaioSdk,
    /// `status` with body `{"error":{"message":"mock failure","code":<status>}}` and, if set,
    /// `Retry-After: <s>`.
    Status {
        status: u16,
        retry_after_s: Option<u64>,
    },
    /// Read the request, then close the connection without answering (the client sees the
    /// connection end before a response: "connection closed before message completed").
    Reset,
    /// Never answer; the connection stays open until the client leaves (or shutdown).
    Hang,
    /// 200, `content-type: application/json`, body `{"truncated": ` (not JSON).
    Malformed,
    /// 200 with a valid JSON object body of exactly `bytes` bytes (`{"pad":"xxxx…"}`; below 10
    /// bytes `{` spaces `}`, and never below 2), sent with a Content-Length and generated as it is
    /// sent (a large body costs no memory).
    Oversized { bytes: usize },
    /// 200 whose JSON `body` is sent with chunked encoding in `chunks` pieces (at least one, at
    /// most one per byte), `interval` apart.
    SlowBody {
        body: Value,
        chunks: usize,
        interval: Duration,
    },
    /// Wait `delay`, then behave as `then`.
    Delayed {
        delay: Duration,
        then: Box<Behavior>,
    },
}

/// A request the mock received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// In arrival order; names lowercase.
    pub headers: Vec<(String, String)>,
    /// Empty for a request refused with 413.
    pub body: Bytes,
}

impl Recorded {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// A running mock upstream. Dropping it without [`MockUpstream::shutdown`] aborts its tasks.
pub struct MockUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for MockUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockUpstream")
            .field("addr", &self.addr)
            .field("open_connections", &self.open_connections())
            .field("total_connections", &self.total_connections())
            .finish_non_exhaustive()
    }
}

impl MockUpstream {
    /// Starts on 127.0.0.1:0 in the current tokio runtime.
    pub async fn start() -> std::io::Result<MockUpstream> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    /// Starts on `addr` in the current tokio runtime.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<MockUpstream> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            paths: Mutex::new(HashMap::new()),
            open: AtomicUsize::new(0),
            total: AtomicUsize::new(0),
            record: AtomicBool::new(true),
        });
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared), stopped));
        Ok(MockUpstream {
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// "http://127.0.0.1:PORT"
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests whose path equals `path` get the scripted behaviours first, one per request in
    /// order, then the path's default behaviour for every later request. A second call appends to
    /// what is left of the script.
    pub fn script(&self, path: &str, steps: impl IntoIterator<Item = Behavior>) {
        self.shared.path(path, |p| p.script.extend(steps));
    }

    /// Replaces the default behaviour for `path` (and drops its remaining script).
    ///
    /// Without one, a path's default is: `POST /v1/chat/completions` → [`Behavior::OpenAiChat`],
    /// `POST /v1/embeddings` → [`Behavior::OpenAiEmbeddings`], `POST /v1/messages` →
    /// [`Behavior::AnthropicMessages`], `POST /caio/v1/execute` → [`Behavior::CaioSdk`],
    /// `GET /health` → 200 `{"status":"ok"}`, any other GET or HEAD → 404
    /// `{"error":{"message":"no such path"}}`, any other method → [`Behavior::Echo`].
    pub fn set_default(&self, path: &str, behavior: Behavior) {
        self.shared.path(path, |p| {
            p.script.clear();
            p.default = Some(behavior);
        });
    }

    /// Requests received for `path` so far (faulted ones included).
    pub fn hits(&self, path: &str) -> usize {
        self.shared.paths().get(path).map_or(0, |p| p.hits)
    }

    /// The requests received for `path`, oldest first (those received while recording was on).
    pub fn requests(&self, path: &str) -> Vec<Recorded> {
        self.shared
            .paths()
            .get(path)
            .map_or_else(Vec::new, |p| p.requests.clone())
    }

    /// Whether to keep every request for [`MockUpstream::requests`] (on by default). A load test
    /// turns it off so that memory stays flat; [`MockUpstream::hits`] counts either way.
    pub fn set_recording(&self, on: bool) {
        self.shared.record.store(on, Ordering::Relaxed);
    }

    /// Connections currently open.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Connections accepted since start.
    pub fn total_connections(&self) -> usize {
        self.shared.total.load(Ordering::SeqCst)
    }

    /// Stops accepting, closes every connection, waits for the tasks to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            // The accept loop may be gone already (it ends only when told to, or on a panic).
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            // A JoinError here means the task panicked or was aborted: it has ended either way.
            let _ = task.await;
        }
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            // Dropping the accept loop drops its JoinSet, which aborts every connection task.
            task.abort();
        }
    }
}

/// State shared by the handle and the server's tasks.
struct Shared {
    paths: Mutex<HashMap<String, PathState>>,
    open: AtomicUsize,
    total: AtomicUsize,
    record: AtomicBool,
}

#[derive(Default)]
struct PathState {
    hits: usize,
    script: VecDeque<Behavior>,
    default: Option<Behavior>,
    requests: Vec<Recorded>,
}

impl Shared {
    fn paths(&self) -> MutexGuard<'_, HashMap<String, PathState>> {
        // Nothing panics while holding the lock; if something did, the map is still consistent.
        self.paths.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn path<R>(&self, path: &str, f: impl FnOnce(&mut PathState) -> R) -> R {
        let mut paths = self.paths();
        match paths.get_mut(path) {
            Some(p) => f(p),
            None => f(paths.entry(path.to_owned()).or_default()),
        }
    }

    /// Counts a request on `path` and records it if recording is on; returns its number on the
    /// path and what to do with it (`None` for a refused request: the script is not consumed).
    fn admit(
        &self,
        method: &Method,
        path: &str,
        recorded: impl FnOnce() -> Recorded,
        refused: bool,
    ) -> (usize, Option<Behavior>) {
        let record = self.record.load(Ordering::Relaxed);
        self.path(path, |p| {
            p.hits += 1;
            if record {
                p.requests.push(recorded());
            }
            let behavior = if refused {
                None
            } else {
                Some(
                    p.script
                        .pop_front()
                        .or_else(|| p.default.clone())
                        .unwrap_or_else(|| builtin_default(method, path)),
                )
            };
            (p.hits, behavior)
        })
    }
}

fn builtin_default(method: &Method, path: &str) -> Behavior {
    let json = |status, body| Behavior::Json {
        status,
        body,
        headers: Vec::new(),
    };
    match (method, path) {
        (&Method::POST, "/v1/chat/completions") => Behavior::OpenAiChat,
        (&Method::POST, "/v1/embeddings") => Behavior::OpenAiEmbeddings,
        (&Method::POST, "/v1/messages") => Behavior::AnthropicMessages,
        (&Method::POST, "/caio/v1/execute") => Behavior::CaioSdk,
        (&Method::GET, "/health") => json(200, json!({"status": "ok"})),
        (&Method::GET | &Method::HEAD, _) => {
            json(404, json!({"error": {"message": "no such path"}}))
        }
        _ => Behavior::Echo,
    }
}

/// Decrements the open-connection count when a connection task ends (or is aborted).
struct OpenConnection(Arc<Shared>);

impl OpenConnection {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.open.fetch_add(1, Ordering::SeqCst);
        shared.total.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(shared))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            // Told to stop, or the handle is gone.
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let open = OpenConnection::new(&shared);
                    connections.spawn(serve_connection(stream, open));
                }
                // Out of file descriptors and the like: let it pass rather than spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            // Reap finished connections so that the set does not grow with the load.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

async fn serve_connection(stream: TcpStream, open: OpenConnection) {
    // Latency matters more than packet count here (and SSE events must leave at once).
    let _ = stream.set_nodelay(true);
    let shared = Arc::clone(&open.0);
    let reset = Arc::new(Notify::new());
    let service = {
        let reset = Arc::clone(&reset);
        service_fn(move |req| handle(Arc::clone(&shared), Arc::clone(&reset), req))
    };
    let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        // Ends when the client leaves, on a protocol error, or when keep-alive ends.
        _ = connection => {}
        // Behavior::Reset: dropping the connection closes the socket with no answer.
        () = reset.notified() => {}
    }
    drop(open);
}

async fn handle(
    shared: Arc<Shared>,
    reset: Arc<Notify>,
    req: Request<Incoming>,
) -> Result<Response<MockBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let (body, too_large) = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(collected) => (collected.to_bytes(), false),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => (Bytes::new(), true),
        // The client left mid-body, or sent a broken one: most likely no one is there to read
        // the answer. Not counted as a request to the path (hence `x-mock-request: 0`).
        Err(_) => {
            let mut resp = mock_error(StatusCode::BAD_REQUEST, 0, "unreadable request body");
            resp.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            return Ok(resp);
        }
    };
    let recorded = || Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.clone(),
    };
    let (n, behavior) = shared.admit(&parts.method, parts.uri.path(), recorded, too_large);
    let Some(behavior) = behavior else {
        let mut resp = mock_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            n,
            "request body larger than 16 MiB",
        );
        // The rest of the body was not read: this connection cannot carry another request.
        resp.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        return Ok(resp);
    };
    let ctx = Ctx {
        n,
        body: &body,
        reset: &reset,
    };
    Ok(response::run(behavior, ctx).await)
}
