//! Who is asking: bearer credentials (API keys, JWTs, the bootstrap admin key) resolved to an
//! [`Identity`], then the per-principal rate limit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use caio_contracts::request::Principal;
use caio_security::{
    Action, AuthError, AuthMethod, BootstrapKey, Identity, JwtVerifier, KeyStore, Role,
};
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;

/// Resolves credentials to identities.
#[derive(Debug)]
pub struct Authenticator {
    /// Verify credentials at all.
    pub enabled: bool,
    /// Require a credential.
    pub strict: bool,
    /// The admin key from the environment (or generated in development).
    pub bootstrap: Option<BootstrapKey>,
    /// JWT verification, when keys are configured.
    pub jwt: Option<JwtVerifier>,
    /// Stored API keys.
    pub keys: Arc<dyn KeyStore>,
}

/// The identity of requests without credentials when auth is not strict.
pub fn anonymous() -> Identity {
    Identity {
        subject: "anonymous".to_owned(),
        role: Role::Client,
        principal: Principal {
            id: "anonymous".to_owned(),
            permissions: Vec::new(),
            roles: vec!["client".to_owned()],
            tenant: "public".to_owned(),
            trust_level: 0,
        },
        service_id: None,
        method: AuthMethod::Bootstrap,
    }
}

/// The identity of every request when authentication is off (development only).
fn unauthenticated_admin() -> Identity {
    Identity {
        subject: "development".to_owned(),
        role: Role::Admin,
        principal: Principal {
            id: "development".to_owned(),
            permissions: Vec::new(),
            roles: vec!["admin".to_owned()],
            tenant: "public".to_owned(),
            trust_level: 10,
        },
        service_id: None,
        method: AuthMethod::Bootstrap,
    }
}

impl Authenticator {
    /// The identity behind an `Authorization` header.
    pub fn authenticate(&self, headers: &HeaderMap, now_ms: u64) -> Result<Identity, AuthError> {
        if !self.enabled {
            return Ok(unauthenticated_admin());
        }
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return if self.strict {
                Err(AuthError::Missing)
            } else {
                Ok(anonymous())
            };
        };
        let value = value
            .to_str()
            .map_err(|_| AuthError::Malformed("the Authorization header is not ASCII"))?;
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => {
                return Err(AuthError::Malformed(
                    "expected `Authorization: Bearer <API key or JWT>`",
                ));
            }
        };
        if token.is_empty() {
            return Err(AuthError::Malformed("the bearer token is empty"));
        }
        // The bootstrap key first: an operator-chosen key may look like either other kind.
        if let Some(b) = &self.bootstrap
            && b.matches(token)
        {
            return Ok(b.identity());
        }
        if token.starts_with("caio_") {
            return self.keys.authenticate(token, now_ms).map(|r| r.identity());
        }
        if token.bytes().filter(|b| *b == b'.').count() == 2 {
            let Some(jwt) = &self.jwt else {
                return Err(AuthError::Malformed(
                    "JWTs are not accepted: no JWT keys are configured",
                ));
            };
            return jwt.verify(token, now_ms / 1000).map(|c| c.identity());
        }
        Err(AuthError::InvalidKey)
    }
}

/// The authenticated identity, in request extensions.
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<Identity>);

/// The subject of a response's request, for the access log.
#[derive(Debug, Clone)]
pub struct Subject(pub Arc<str>);

/// Middleware: authenticate, rate-limit, then run the handler with a [`Caller`].
pub async fn require_identity(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let now = caio_trace::now_ms();
    let identity = match state.auth.authenticate(req.headers(), now) {
        Ok(i) => Arc::new(i),
        Err(e) => {
            state
                .metrics
                .authn_failures
                .get_or_create(&crate::metrics::ReasonLabels { reason: e.reason() })
                .inc();
            return ApiError::new("UNAUTHENTICATED", e.to_string())
                .with_details(json!({ "reason": e.reason() }))
                .into_response();
        }
    };
    if let Some(limiter) = &state.rate {
        let key = if identity.subject == "anonymous" {
            let peer = req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip().to_string())
                .unwrap_or_default();
            format!("anon:{peer}")
        } else {
            // Namespaced by credential kind, so a JWT `sub` cannot share an API key's bucket.
            format!("{:?}:{}", identity.method, identity.subject)
        };
        let d = limiter.check(&key, now);
        if !d.allowed {
            state.metrics.rate_limited.inc();
            let retry_s = d.retry_after_ms.div_ceil(1000).max(1);
            let mut e = ApiError::new(
                "RATE_LIMITED",
                format!(
                    "rate limit of {} requests exceeded; retry in {retry_s} s",
                    d.limit
                ),
            )
            .with_details(json!({ "limit": d.limit, "retry_after_ms": d.retry_after_ms }));
            e.retry_after_s = Some(retry_s);
            let mut resp = e.into_response();
            resp.headers_mut()
                .insert("x-ratelimit-limit", HeaderValue::from(d.limit));
            resp.headers_mut()
                .insert("x-ratelimit-remaining", HeaderValue::from(0u32));
            return resp;
        }
    }
    if req.uri().path() == "/api/v1/route" {
        state
            .metrics
            .stage("authenticate", started.elapsed().as_secs_f64());
    }
    let subject: Arc<str> = Arc::from(identity.subject.as_str());
    req.extensions_mut().insert(Caller(identity));
    let mut resp = next.run(req).await;
    resp.extensions_mut().insert(Subject(subject));
    resp
}

/// Refuses an identity whose role may not do `action`, counting the denial.
pub fn require(state: &AppState, caller: &Identity, action: Action) -> Result<(), ApiError> {
    if caller.may(action) {
        return Ok(());
    }
    let name = action_name(action);
    state
        .metrics
        .authz_denials
        .get_or_create(&crate::metrics::ActionLabels { action: name })
        .inc();
    Err(ApiError::forbidden(name).with_details(json!({
        "role": caller.role.as_str(),
        "action": name,
    })))
}

/// The wire name of an action.
pub fn action_name(a: Action) -> &'static str {
    match a {
        Action::ServicesRead => "services.read",
        Action::ServicesWrite => "services.write",
        Action::PoliciesRead => "policies.read",
        Action::PoliciesWrite => "policies.write",
        Action::TracesReadAll => "traces.read_all",
        Action::TracesReadOwn => "traces.read_own",
        Action::Route => "route",
        Action::Discover => "discover",
        Action::KeysManage => "keys.manage",
        Action::AuditRead => "audit.read",
        Action::GatewayControl => "gateway.control",
    }
}
