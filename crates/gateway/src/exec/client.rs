//! The one outbound HTTP client of a process: pooled keep-alive connections (hyper-util),
//! TCP_NODELAY, TLS through rustls with the system's root certificates, the address guard on
//! every resolved address, a cap on response sizes, and errors classified for retry decisions.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::guard::AddressGuard;

/// A request to a service.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// Method.
    pub method: Method,
    /// Absolute URL.
    pub uri: Uri,
    /// Headers (credentials included: never log them).
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

/// A service's complete answer.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// The address guard refused the service's address.
    #[error("the service's address is refused: {0}")]
    Refused(String),
    /// No connection could be made.
    #[error("could not connect: {0}")]
    Connect(String),
    /// The connection closed before a response arrived.
    #[error("the connection closed before a response: {0}")]
    Reset(String),
    /// No (complete) response within the attempt's time.
    #[error("no response within {0} ms")]
    Timeout(u64),
    /// A non-success status.
    #[error("the service answered {status}: {message}")]
    Status {
        /// The status.
        status: u16,
        /// `Retry-After`, when sent.
        retry_after: Option<Duration>,
        /// The start of the body, for the record.
        message: String,
    },
    /// The body exceeds the cap.
    #[error("the response is larger than the {0}-byte limit")]
    TooLarge(usize),
    /// The body broke off.
    #[error("the response body broke off: {0}")]
    Body(String),
    /// The answer does not follow the adapter's protocol.
    #[error("the answer does not follow the {adapter} protocol: {reason}")]
    Protocol {
        /// The adapter.
        adapter: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The call cannot be made as configured (missing credential, no endpoint, bad URL).
    #[error("{0}")]
    Config(String),
}

impl CallError {
    /// Whether the same service may be tried again: connect errors, resets before a response,
    /// 429, 502, 503, 504. Timeouts are not retried on the same service (it already had its
    /// whole attempt time) but do fall back to the next candidate.
    pub fn retryable(&self) -> bool {
        match self {
            CallError::Connect(_) | CallError::Reset(_) => true,
            CallError::Status { status, .. } => matches!(status, 429 | 502 | 503 | 504),
            _ => false,
        }
    }

    /// A stable code for traces and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            CallError::Refused(_) => "address_refused",
            CallError::Connect(_) => "connect_error",
            CallError::Reset(_) => "connection_reset",
            CallError::Timeout(_) => "timeout",
            CallError::Status { status: 429, .. } => "rate_limited",
            CallError::Status { status, .. } if *status >= 500 => "upstream_5xx",
            CallError::Status { .. } => "upstream_4xx",
            CallError::TooLarge(_) => "response_too_large",
            CallError::Body(_) => "body_error",
            CallError::Protocol { .. } => "protocol_error",
            CallError::Config(_) => "configuration_error",
        }
    }

    /// Whether the failure says something about the service's health. Not: a refused address
    /// or a missing credential (the operator's problem), a request the service rejected as
    /// invalid or a rejected credential (the caller's or the operator's) — or any client could
    /// open every candidate's circuit with a few bad payloads.
    pub fn counts_against_service(&self) -> bool {
        match self {
            CallError::Refused(_) | CallError::Config(_) => false,
            CallError::Status { status, .. } => {
                !(400..500).contains(status) || *status == 408 || *status == 429
            }
            _ => true,
        }
    }

    /// Whether the request itself was refused as invalid (400, 413, 415, 422): another candidate
    /// would refuse the same payload, so execution stops instead of falling back.
    pub fn is_caller_error(&self) -> bool {
        matches!(
            self,
            CallError::Status {
                status: 400 | 413 | 415 | 422,
                ..
            }
        )
    }
}

/// The address guard's refusal, carried through hyper's connect error.
#[derive(Debug)]
struct RefusedAddress(String);

impl std::fmt::Display for RefusedAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RefusedAddress {}

/// Resolves host names with the system resolver and drops addresses the guard refuses.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    guard: Arc<AddressGuard>,
}

impl tower::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let guard = Arc::clone(&self.guard);
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refusal = None;
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| match guard.check(a.ip()) {
                    Ok(()) => true,
                    Err(r) => {
                        refusal = Some(format!("`{host}` resolves to {}: {r}", a.ip()));
                        false
                    }
                })
                .collect();
            match (allowed.is_empty(), refusal) {
                (true, Some(r)) => Err(Box::new(RefusedAddress(r)) as Self::Error),
                (true, None) => Err(format!("`{host}` resolves to no address").into()),
                (false, _) => Ok(allowed.into_iter()),
            }
        })
    }
}

type Connector = HttpsConnector<HttpConnector<GuardedResolver>>;

/// The pooled client.
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    client: Client<Connector, Full<Bytes>>,
    guard: Arc<AddressGuard>,
    max_response_bytes: usize,
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Which addresses may be called.
    pub guard: AddressGuard,
    /// Largest response body read.
    pub max_response_bytes: usize,
    /// Time allowed to establish a TCP connection.
    pub connect_timeout: Duration,
    /// Idle keep-alive connections kept per host.
    pub max_idle_per_host: usize,
    /// How long an idle connection is kept.
    pub idle_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            guard: AddressGuard::default(),
            max_response_bytes: 8 << 20,
            connect_timeout: Duration::from_secs(5),
            max_idle_per_host: 256,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

impl UpstreamClient {
    /// Builds the client. TLS roots come from the system; a machine without any still gets a
    /// client (plain HTTP works, HTTPS calls fail certificate verification) and a warning.
    pub fn new(config: ClientConfig) -> UpstreamClient {
        let guard = Arc::new(config.guard);
        let mut http = HttpConnector::new_with_resolver(GuardedResolver {
            guard: Arc::clone(&guard),
        });
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.connect_timeout));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = match hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(Arc::clone(&provider))
        {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "no system root certificates: HTTPS services will fail verification");
                let tls = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map(|b| {
                        b.with_root_certificates(rustls::RootCertStore::empty())
                            .with_no_client_auth()
                    });
                match tls {
                    Ok(tls) => hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls),
                    Err(e) => {
                        tracing::error!(error = %e, "TLS unavailable");
                        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
                            rustls::ClientConfig::builder()
                                .with_root_certificates(rustls::RootCertStore::empty())
                                .with_no_client_auth(),
                        )
                    }
                }
            }
        };
        let connector = builder.https_or_http().enable_http1().wrap_connector(http);
        // Without a timer the pool only notices an expired connection when it next picks it:
        // an origin that is not called again would keep its sockets open for good.
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(config.idle_timeout)
            .pool_max_idle_per_host(config.max_idle_per_host)
            .build(connector);
        UpstreamClient {
            client,
            guard,
            max_response_bytes: config.max_response_bytes,
        }
    }

    /// The address guard.
    pub fn guard(&self) -> &AddressGuard {
        &self.guard
    }

    fn request(&self, out: Outbound) -> Result<Request<Full<Bytes>>, CallError> {
        if let Some(host) = out.uri.host() {
            self.guard
                .check_host(host)
                .map_err(|r| CallError::Refused(format!("{host}: {r}")))?;
        }
        let mut req = Request::builder()
            .method(out.method)
            .uri(out.uri)
            .body(Full::new(out.body))
            .map_err(|e| CallError::Config(format!("invalid request: {e}")))?;
        *req.headers_mut() = out.headers;
        Ok(req)
    }

    /// Sends `out` and reads the whole answer, all within `timeout`.
    pub async fn send(&self, out: Outbound, timeout: Duration) -> Result<Inbound, CallError> {
        let req = self.request(out)?;
        let limit = self.max_response_bytes;
        let call = async {
            let resp = self.client.request(req).await.map_err(classify)?;
            let (parts, body) = resp.into_parts();
            if content_length(&parts.headers).is_some_and(|n| n > limit as u64) {
                return Err(CallError::TooLarge(limit));
            }
            let body = Limited::new(body, limit)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        CallError::TooLarge(limit)
                    } else {
                        CallError::Body(chain(&*e))
                    }
                })?
                .to_bytes();
            Ok(Inbound {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| CallError::Timeout(millis(timeout)))?
    }

    /// Sends `out` and returns as soon as the status and headers are in (within `timeout`);
    /// the body streams afterwards.
    pub async fn send_streaming(
        &self,
        out: Outbound,
        timeout: Duration,
    ) -> Result<Response<Incoming>, CallError> {
        let req = self.request(out)?;
        tokio::time::timeout(timeout, self.client.request(req))
            .await
            .map_err(|_| CallError::Timeout(millis(timeout)))?
            .map_err(classify)
    }

    /// The response cap.
    pub fn max_response_bytes(&self) -> usize {
        self.max_response_bytes
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The messages of an error and its sources, joined.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

fn classify(e: hyper_util::client::legacy::Error) -> CallError {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(c) = cur {
        if let Some(r) = c.downcast_ref::<RefusedAddress>() {
            return CallError::Refused(r.0.clone());
        }
        cur = c.source();
    }
    if e.is_connect() {
        return CallError::Connect(chain(&e));
    }
    CallError::Reset(chain(&e))
}
