//! `/openapi.json`: the OpenAPI 3.1 document, generated from the endpoint table below and the
//! JSON Schemas caio-contracts derives (schemars) for contracts, requests, policies and principals.
//!
//! The table is the one list of endpoints: the router test walks it to check that every endpoint
//! it names exists and is protected as it says, so the document cannot drift from the server.

use caio_contracts::schema::{self, DocKind};
use serde_json::{Map, Value, json};

use crate::error::ERROR_CODES;

/// One endpoint.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    /// HTTP method, lowercase.
    pub method: &'static str,
    /// Path template (`{id}` parameters).
    pub path: &'static str,
    /// One line.
    pub summary: &'static str,
    /// Needs a bearer credential.
    pub auth: bool,
    /// Roles allowed (documentation).
    pub roles: &'static str,
    /// Request body schema (component name), if any.
    pub body: Option<&'static str>,
    /// Success status and response schema (component name) or description.
    pub ok: (u16, &'static str),
    /// Error codes beyond the ones every protected endpoint can return.
    pub errors: &'static [&'static str],
}

const fn ep(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    roles: &'static str,
    body: Option<&'static str>,
    ok: (u16, &'static str),
    errors: &'static [&'static str],
) -> Endpoint {
    Endpoint {
        method,
        path,
        summary,
        auth: true,
        roles,
        body,
        ok,
        errors,
    }
}

const fn public(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    ok: (u16, &'static str),
    errors: &'static [&'static str],
) -> Endpoint {
    Endpoint {
        method,
        path,
        summary,
        auth: false,
        roles: "anyone",
        body: None,
        ok,
        errors,
    }
}

const BODY: &[&str] = &[
    "INVALID_BODY",
    "PAYLOAD_TOO_LARGE",
    "UNSUPPORTED_MEDIA_TYPE",
];

/// Every endpoint the server serves.
pub const ENDPOINTS: &[Endpoint] = &[
    public(
        "get",
        "/health",
        "Liveness: the process answers.",
        (200, "Status"),
        &[],
    ),
    public(
        "get",
        "/health/ready",
        "Readiness: 200, or 503 with reasons (draining, failed trace store).",
        (200, "Status"),
        &["UNAVAILABLE"],
    ),
    public(
        "get",
        "/metrics",
        "Prometheus metrics (OpenMetrics text).",
        (200, "text"),
        &[],
    ),
    public(
        "get",
        "/api/v1/version",
        "Version, git commit and build date.",
        (200, "Version"),
        &[],
    ),
    public(
        "get",
        "/openapi.json",
        "This document.",
        (200, "object"),
        &[],
    ),
    Endpoint {
        method: "post",
        path: "/webhooks/services/{id}/events",
        summary: "A service's heartbeat or status, signed with HMAC-SHA256 over `timestamp.body` \
                  (X-CAIO-Timestamp, X-CAIO-Signature: sha256=<hex>).",
        auth: false,
        roles: "the service, by signature",
        body: Some("WebhookEvent"),
        ok: (202, "object"),
        errors: &[
            "UNAUTHENTICATED",
            "SERVICE_NOT_FOUND",
            "INVALID_BODY",
            "PAYLOAD_TOO_LARGE",
        ],
    },
    ep(
        "post",
        "/api/v1/services",
        "Register a service contract (YAML or JSON). The response carries the service's webhook secret, once.",
        "admin, operator, service (own id)",
        Some("ServiceContract"),
        (201, "Registered"),
        &[
            "INVALID_CONTRACT",
            "SERVICE_EXISTS",
            "INVALID_BODY",
            "PAYLOAD_TOO_LARGE",
            "UNSUPPORTED_MEDIA_TYPE",
        ],
    ),
    ep(
        "get",
        "/api/v1/services",
        "List visible services; filters: capability, tenant, status, limit, after.",
        "admin, operator, service",
        None,
        (200, "ServiceList"),
        &["INVALID_QUERY"],
    ),
    ep(
        "get",
        "/api/v1/services/{id}",
        "One service: contract, digest, status. Another tenant's service is a 404.",
        "admin, operator, service",
        None,
        (200, "object"),
        &["SERVICE_NOT_FOUND"],
    ),
    ep(
        "put",
        "/api/v1/services/{id}",
        "Replace a service's contract.",
        "admin, operator, service (own id)",
        Some("ServiceContract"),
        (200, "Registered"),
        &[
            "INVALID_CONTRACT",
            "ID_MISMATCH",
            "SERVICE_NOT_FOUND",
            "INVALID_BODY",
            "PAYLOAD_TOO_LARGE",
            "UNSUPPORTED_MEDIA_TYPE",
        ],
    ),
    ep(
        "delete",
        "/api/v1/services/{id}",
        "Remove a service.",
        "admin, operator, service (own id)",
        None,
        (204, "empty"),
        &["SERVICE_NOT_FOUND"],
    ),
    ep(
        "post",
        "/api/v1/services/{id}/webhook-secret",
        "Rotate the service's webhook secret (shown once).",
        "admin, operator, service (own id)",
        None,
        (200, "object"),
        &["SERVICE_NOT_FOUND"],
    ),
    ep(
        "post",
        "/api/v1/discover",
        "Feasible services for a request, best first, and why the others are out. Records nothing.",
        "admin, operator, service, client",
        Some("RouteRequest"),
        (200, "Discovery"),
        &[
            "INVALID_REQUEST",
            "INVALID_BODY",
            "PAYLOAD_TOO_LARGE",
            "UNSUPPORTED_MEDIA_TYPE",
        ],
    ),
    ep(
        "post",
        "/api/v1/route",
        "Route a request: the decision with its proof, recorded in the trace log before it is returned.",
        "admin, operator, client",
        Some("RouteRequest"),
        (200, "Decision"),
        &[
            "INVALID_REQUEST",
            "NO_MATCHING_SERVICE",
            "INVALID_BODY",
            "PAYLOAD_TOO_LARGE",
            "UNSUPPORTED_MEDIA_TYPE",
            "UNAVAILABLE",
        ],
    ),
    ep(
        "post",
        "/api/v1/execute",
        "Route and execute: call the chosen service (retries, fallbacks, circuit breakers), check its guarantees, record decision and execution.",
        "admin, operator, client",
        Some("ExecuteRequest"),
        (200, "Executed"),
        &[
            "INVALID_REQUEST",
            "NO_MATCHING_SERVICE",
            "INVALID_BODY",
            "PAYLOAD_TOO_LARGE",
            "UNSUPPORTED_MEDIA_TYPE",
            "UPSTREAM_FAILED",
            "EMERGENCY_STOP",
            "UNAVAILABLE",
            "APPROVAL_INVALID",
            "IDEMPOTENCY_IN_PROGRESS",
            "IDEMPOTENCY_KEY_REUSED",
            "CHAIN_INFEASIBLE",
        ],
    ),
    ep(
        "post",
        "/v1/chat/completions",
        "OpenAI-compatible chat completions (`stream: true` for server-sent events): `model` is an alias, a capability or a service id; CAIO routes, executes and records.",
        "admin, operator, client",
        Some("object"),
        (200, "object"),
        &[
            "INVALID_REQUEST",
            "INVALID_BODY",
            "MODEL_NOT_FOUND",
            "NO_MATCHING_SERVICE",
            "UPSTREAM_FAILED",
            "EMERGENCY_STOP",
            "PAYLOAD_TOO_LARGE",
        ],
    ),
    ep(
        "post",
        "/v1/embeddings",
        "OpenAI-compatible embeddings.",
        "admin, operator, client",
        Some("object"),
        (200, "object"),
        &[
            "INVALID_REQUEST",
            "INVALID_BODY",
            "MODEL_NOT_FOUND",
            "NO_MATCHING_SERVICE",
            "UPSTREAM_FAILED",
            "EMERGENCY_STOP",
        ],
    ),
    ep(
        "get",
        "/v1/models",
        "OpenAI-compatible model list: aliases, capabilities, visible chat and embedding services.",
        "every role",
        None,
        (200, "object"),
        &[],
    ),
    ep(
        "get",
        "/api/v1/licensing/status",
        "The license in force: validity, customer, tier, expiry, features, limits, usage (never the key).",
        "admin, operator",
        None,
        (200, "object"),
        &[],
    ),
    ep(
        "post",
        "/api/v1/licensing/activate",
        "Verify a license key and make it the one in force, without a restart; audited.",
        "admin",
        Some("object"),
        (200, "object"),
        &["LICENSE_INVALID", "INVALID_BODY"],
    ),
    ep(
        "get",
        "/api/v1/gateway/health",
        "Every called service's circuit breaker state, success rate and latency.",
        "admin, operator, service",
        None,
        (200, "GatewayHealth"),
        &[],
    ),
    ep(
        "get",
        "/api/v1/gateway/emergency-stop",
        "Whether execution is stopped, by whom, since when and why.",
        "admin",
        None,
        (200, "EmergencyStop"),
        &[],
    ),
    ep(
        "put",
        "/api/v1/gateway/emergency-stop",
        "Stop or resume every execution (routing keeps working); audited.",
        "admin",
        Some("EmergencyStopChange"),
        (200, "EmergencyStop"),
        &["INVALID_BODY"],
    ),
    ep(
        "get",
        "/api/v1/traces/{id}",
        "A recorded decision, byte for byte as returned (accepted by `caio verify`).",
        "admin; operator (tenant); client (own)",
        None,
        (200, "Decision"),
        &["TRACE_NOT_FOUND"],
    ),
    ep(
        "get",
        "/api/v1/traces",
        "Query traces: since, until (RFC 3339 or unix ms), service, principal, outcome, tenant, limit, cursor. Newest first.",
        "admin; operator (tenant); client (own)",
        None,
        (200, "TracePage"),
        &["INVALID_QUERY"],
    ),
    ep(
        "get",
        "/api/v1/policies",
        "The active policy set and its version.",
        "admin, operator",
        None,
        (200, "object"),
        &[],
    ),
    ep(
        "put",
        "/api/v1/policies",
        "Validate, store and activate a new policy version (content-addressed). Query: note.",
        "admin, operator",
        Some("PolicySet"),
        (200, "object"),
        &[
            "INVALID_POLICY",
            "INVALID_BODY",
            "PAYLOAD_TOO_LARGE",
            "UNSUPPORTED_MEDIA_TYPE",
        ],
    ),
    ep(
        "post",
        "/api/v1/policies/validate",
        "Validate a policy set without storing it.",
        "admin, operator",
        Some("PolicySet"),
        (200, "object"),
        &[
            "INVALID_POLICY",
            "INVALID_BODY",
            "PAYLOAD_TOO_LARGE",
            "UNSUPPORTED_MEDIA_TYPE",
        ],
    ),
    ep(
        "get",
        "/api/v1/policies/versions",
        "Every stored version, newest first.",
        "admin, operator",
        None,
        (200, "object"),
        &[],
    ),
    ep(
        "get",
        "/api/v1/policies/versions/{version}",
        "One stored version (`sha256:<hex>` or the bare hex).",
        "admin, operator",
        None,
        (200, "object"),
        &["POLICY_VERSION_NOT_FOUND"],
    ),
    ep(
        "get",
        "/api/v1/policies/history",
        "Activations (put, rollback), newest first.",
        "admin, operator",
        None,
        (200, "object"),
        &[],
    ),
    ep(
        "get",
        "/api/v1/policies/diff",
        "Rules added, removed and changed between two versions (from, to = active).",
        "admin, operator",
        None,
        (200, "object"),
        &["POLICY_VERSION_NOT_FOUND", "INVALID_QUERY"],
    ),
    ep(
        "post",
        "/api/v1/policies/rollback",
        "Activate a stored version: {\"version\": \"sha256:…\"}.",
        "admin, operator",
        Some("object"),
        (200, "object"),
        &["POLICY_VERSION_NOT_FOUND", "INVALID_POLICY", "INVALID_BODY"],
    ),
    ep(
        "post",
        "/api/v1/keys",
        "Create an API key: {name, role, tenant, permissions, trust_level, service_id, expires_at_ms}. The key is shown once.",
        "admin",
        Some("object"),
        (201, "object"),
        BODY,
    ),
    ep(
        "get",
        "/api/v1/keys",
        "List API keys (never their secrets).",
        "admin",
        None,
        (200, "object"),
        &[],
    ),
    ep(
        "get",
        "/api/v1/keys/{id}",
        "One API key's record.",
        "admin",
        None,
        (200, "object"),
        &["KEY_NOT_FOUND"],
    ),
    ep(
        "delete",
        "/api/v1/keys/{id}",
        "Revoke an API key.",
        "admin",
        None,
        (200, "object"),
        &["KEY_NOT_FOUND"],
    ),
    ep(
        "get",
        "/api/v1/audit",
        "The audit log of changes to services, policies and keys: actor, action (or prefix `service.`), target, tenant, since, until, limit, cursor.",
        "admin",
        None,
        (200, "object"),
        &["INVALID_QUERY"],
    ),
    ep(
        "get",
        "/api/v1/runtime/dependencies",
        "Each dependency: required?, state, probe latency.",
        "admin, operator",
        None,
        (200, "object"),
        &[],
    ),
];

/// Errors every protected endpoint can return.
const PROTECTED: &[&str] = &[
    "UNAUTHENTICATED",
    "FORBIDDEN",
    "RATE_LIMITED",
    "INTERNAL",
    "TIMEOUT",
];

/// Rewrites `#/$defs/X` references of a schemars document to `#/components/schemas/<prefix>X`.
fn rewrite_refs(v: &mut Value, prefix: &str) {
    match v {
        Value::Object(o) => {
            if let Some(Value::String(r)) = o.get_mut("$ref")
                && let Some(name) = r.strip_prefix("#/$defs/")
            {
                *r = format!("#/components/schemas/{prefix}{name}");
            }
            for x in o.values_mut() {
                rewrite_refs(x, prefix);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| rewrite_refs(x, prefix)),
        _ => {}
    }
}

fn components() -> Map<String, Value> {
    let mut out = Map::new();
    for (kind, name) in [
        (DocKind::Contract, "ServiceContract"),
        (DocKind::Request, "RouteRequest"),
        (DocKind::Policies, "PolicySet"),
        (DocKind::Principal, "Principal"),
    ] {
        let mut s = schema::schema(kind);
        let prefix = format!("{name}.");
        rewrite_refs(&mut s, &prefix);
        if let Some(Value::Object(defs)) = s.as_object_mut().and_then(|o| o.remove("$defs")) {
            for (k, v) in defs {
                out.insert(format!("{prefix}{k}"), v);
            }
        }
        if let Some(o) = s.as_object_mut() {
            o.remove("$schema");
        }
        out.insert(name.to_owned(), s);
    }
    let codes: Vec<&str> = ERROR_CODES.iter().map(|(c, _, _)| *c).collect();
    out.insert(
        "Error".into(),
        json!({
            "type": "object",
            "required": ["error"],
            "properties": {"error": {
                "type": "object",
                "required": ["code", "message", "details"],
                "properties": {
                    "code": {"type": "string", "enum": codes},
                    "message": {"type": "string"},
                    "details": {"type": "object"}
                }
            }}
        }),
    );
    out.insert(
        "Decision".into(),
        json!({
            "type": "object",
            "description": "A routing decision; docs/reference/decision.md describes every field.",
            "required": ["decision_id", "service_id", "score", "ranking", "rejected", "guarantees",
                         "control_signal", "proof", "registry_version", "policy_version",
                         "request_digest", "request", "principal"],
            "properties": {
                "decision_id": {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"},
                "service_id": {"type": "string"},
                "score": {"type": "number"},
                "ranking": {"type": "array", "items": {"type": "object"}},
                "rejected": {"type": "array", "items": {"$ref": "#/components/schemas/Rejection"}},
                "guarantees": {"type": "object"},
                "control_signal": {"type": "object"},
                "proof": {"type": "object"},
                "registry_version": {"type": "string"},
                "policy_version": {"type": "string"},
                "request_digest": {"type": "string"},
                "request": {"$ref": "#/components/schemas/RouteRequest"},
                "principal": {"$ref": "#/components/schemas/Principal"},
                "recorded_at": {"type": "string", "format": "date-time"}
            }
        }),
    );
    out.insert(
        "Rejection".into(),
        json!({
            "type": "object",
            "required": ["service_id", "step", "reason", "detail"],
            "properties": {
                "service_id": {"type": "string"},
                "step": {"type": "string", "enum": ["match", "rules", "security", "traits", "health"]},
                "reason": {"type": "string"},
                "detail": {"type": "string"}
            }
        }),
    );
    out.insert(
        "Discovery".into(),
        json!({"type": "object", "required": ["candidates", "rejected"], "properties": {
            "candidates": {"type": "array", "items": {"type": "object"}},
            "rejected": {"type": "array", "items": {"$ref": "#/components/schemas/Rejection"}},
            "registry_version": {"type": "string"},
            "policy_version": {"type": "string"}
        }}),
    );
    out.insert(
        "Registered".into(),
        json!({"type": "object", "required": ["service_id", "digest", "registry_version"], "properties": {
            "service_id": {"type": "string"},
            "digest": {"type": "string"},
            "registry_version": {"type": "string"},
            "previous_registry_version": {"type": "string"},
            "webhook_secret": {"type": "string", "description": "Only when the service has no secret yet; shown once."}
        }}),
    );
    out.insert(
        "ServiceList".into(),
        json!({"type": "object", "required": ["items"], "properties": {
            "registry_version": {"type": "string"},
            "items": {"type": "array", "items": {"type": "object"}},
            "next_after": {"type": ["string", "null"]}
        }}),
    );
    out.insert(
        "TracePage".into(),
        json!({"type": "object", "required": ["items"], "properties": {
            "items": {"type": "array", "items": {"type": "object", "properties": {
                "seq": {"type": "integer"}, "decision_id": {"type": "string"},
                "recorded_at_ms": {"type": "integer"}, "tenant": {"type": "string"},
                "principal_id": {"type": "string"}, "service_id": {"type": ["string", "null"]},
                "outcome": {"type": "string", "enum": ["routed", "no_route", "executed", "execution_failed"]}
            }}},
            "next_cursor": {"type": ["integer", "null"]}
        }}),
    );
    out.insert(
        "WebhookEvent".into(),
        json!({"type": "object", "required": ["type"], "additionalProperties": false, "properties": {
            "type": {"type": "string", "enum": ["heartbeat", "status"]},
            "status": {"type": "string", "enum": ["healthy", "degraded", "down"]},
            "detail": {"type": "string", "maxLength": 512}
        }}),
    );
    out.insert(
        "ExecuteRequest".into(),
        json!({"type": "object", "additionalProperties": false, "properties": {
            "request": {"$ref": "#/components/schemas/RouteRequest"},
            "chain": {"type": "object", "required": ["stages"], "additionalProperties": false, "properties": {
                "stages": {"type": "array", "minItems": 2, "maxItems": 8, "items": {"$ref": "#/components/schemas/RouteRequest"}},
                "bounds": {"type": "object", "additionalProperties": false, "properties": {
                    "latency_ms": {"type": "number"}, "accuracy": {"type": "number"},
                    "cost": {"type": "number"},
                    "data_locality": {"type": "string", "enum": ["local", "on_device", "region", "external"]}
                }}
            }},
            "dry_run": {"type": "boolean", "description": "Do everything but the upstream call."},
            "approval_token": {"type": "string", "description": "From POST /api/v1/route?approve=true: run exactly that recorded decision."},
            "deadline_ms": {"type": "integer", "minimum": 1, "description": "Time for all attempts and fallbacks."},
            "on_violation": {"type": "string", "enum": ["warn", "failover"]}
        }}),
    );
    out.insert(
        "Execution".into(),
        json!({"type": "object", "required": ["status", "attempts", "fallbacks", "latency_ms", "violations", "warnings"], "properties": {
            "status": {"type": "string", "enum": ["succeeded", "failed", "dry_run"]},
            "service_id": {"type": "string"},
            "output": {"description": "The answering service's output."},
            "attempts": {"type": "array", "items": {"type": "object", "required": ["service_id", "attempt", "outcome", "latency_ms"], "properties": {
                "service_id": {"type": "string"}, "attempt": {"type": "integer"},
                "outcome": {"type": "string"}, "status": {"type": "integer"},
                "latency_ms": {"type": "number"}, "error": {"type": "string"},
                "backoff_ms": {"type": "integer"}
            }}},
            "fallbacks": {"type": "array", "items": {"type": "object", "properties": {
                "from": {"type": "string"}, "to": {"type": "string"}, "reason": {"type": "string"}
            }}},
            "latency_ms": {"type": "number"},
            "violations": {"type": "array", "items": {"type": "object", "properties": {
                "service_id": {"type": "string"}, "property": {"type": "string"},
                "bound": {"type": "number"}, "observed": {"type": "number"}, "detail": {"type": "string"}
            }}},
            "warnings": {"type": "array", "items": {"type": "string"}},
            "error": {"type": "object", "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}
        }}),
    );
    out.insert(
        "Executed".into(),
        json!({"type": "object", "required": ["decision", "execution"], "properties": {
            "decision": {"$ref": "#/components/schemas/Decision"},
            "execution": {"$ref": "#/components/schemas/Execution"}
        }}),
    );
    out.insert(
        "GatewayHealth".into(),
        json!({"type": "object", "required": ["services"], "properties": {
            "services": {"type": "array", "items": {"type": "object", "properties": {
                "service_id": {"type": "string"},
                "circuit": {"type": "string", "enum": ["closed", "open", "half_open"]},
                "success_rate": {"type": "number"}, "ewma_latency_ms": {"type": ["number", "null"]},
                "calls": {"type": "integer"}, "failures": {"type": "integer"},
                "violations": {"type": "integer"}, "consecutive_failures": {"type": "integer"},
                "times_opened": {"type": "integer"}, "reported_down": {"type": "boolean"}
            }}}
        }}),
    );
    out.insert(
        "EmergencyStop".into(),
        json!({"type": "object", "required": ["stopped"], "properties": {
            "stopped": {"type": "boolean"}, "changed_by": {"type": "string"},
            "changed_at": {"type": "string", "format": "date-time"}, "reason": {"type": "string"}
        }}),
    );
    out.insert(
        "EmergencyStopChange".into(),
        json!({"type": "object", "required": ["stopped"], "additionalProperties": false, "properties": {
            "stopped": {"type": "boolean"}, "reason": {"type": "string", "maxLength": 1024}
        }}),
    );
    out.insert(
        "Status".into(),
        json!({"type": "object", "properties": {"status": {"type": "string"}, "reasons": {"type": "array", "items": {"type": "string"}}}}),
    );
    out.insert(
        "Version".into(),
        json!({"type": "object", "properties": {
            "version": {"type": "string"}, "git_commit": {"type": "string"},
            "build_date": {"type": "string"}, "mode": {"type": "string"}, "uptime_s": {"type": "integer"}
        }}),
    );
    out
}

fn schema_ref(name: &str) -> Value {
    match name {
        "object" => json!({"type": "object"}),
        "text" | "empty" => json!({"type": "string"}),
        n => json!({"$ref": format!("#/components/schemas/{n}")}),
    }
}

fn operation(e: &Endpoint) -> Value {
    let mut responses = Map::new();
    let (status, schema) = e.ok;
    let content = match schema {
        "empty" => None,
        "text" => Some(json!({"application/openmetrics-text": {"schema": {"type": "string"}}})),
        s => Some(json!({"application/json": {"schema": schema_ref(s)}})),
    };
    let mut ok = json!({"description": "Success"});
    if let Some(c) = content {
        ok["content"] = c;
    }
    responses.insert(status.to_string(), ok);
    let mut codes: Vec<&str> = e.errors.to_vec();
    if e.auth {
        codes.extend_from_slice(PROTECTED);
    }
    // Group codes by status.
    let mut by_status: std::collections::BTreeMap<u16, Vec<&str>> = Default::default();
    for code in codes {
        if let Some((_, s, _)) = ERROR_CODES.iter().find(|(c, _, _)| *c == code) {
            by_status.entry(*s).or_default().push(code);
        }
    }
    for (s, mut codes) in by_status {
        codes.sort_unstable();
        codes.dedup();
        responses.insert(
            s.to_string(),
            json!({
                "description": format!("Error: {}", codes.join(", ")),
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
            }),
        );
    }
    let mut op = json!({
        "summary": e.summary,
        "description": format!("Roles: {}.", e.roles),
        "operationId": format!("{}{}", e.method, e.path.replace(['/', '{', '}', '.', '-'], "_")),
        "responses": responses,
    });
    let params: Vec<Value> = e
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    if !params.is_empty() {
        op["parameters"] = Value::Array(params);
    }
    if let Some(body) = e.body {
        let schema = schema_ref(body);
        op["requestBody"] = json!({
            "required": true,
            "content": {
                "application/json": {"schema": schema},
                "application/yaml": {"schema": schema}
            }
        });
    }
    if e.auth {
        op["security"] = json!([{"bearer": []}]);
    } else {
        op["security"] = json!([]);
    }
    op
}

/// The OpenAPI document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for e in ENDPOINTS {
        let item = paths
            .entry(e.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(o) = item.as_object_mut() {
            o.insert(e.method.to_owned(), operation(e));
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "CAIO API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Route requests to AI services with a proof of every decision. \
                            Errors are {\"error\": {\"code\", \"message\", \"details\"}}.",
        },
        "paths": paths,
        "components": {
            "schemas": components(),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (caio_<id>_<secret>), a JWT (HS256 or EdDSA), or the bootstrap admin key."
                }
            }
        }
    })
}
