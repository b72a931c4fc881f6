//! Evaluating compiled policies, fail-closed, with the operands each rule read.

use std::collections::BTreeMap;
use std::sync::Arc;

use caio_contracts::decision::RuleOutcome;
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::{Context, Env, ExecutionError, IdedExpr, Value};
use serde_json::json;

use crate::compile::{CompiledPolicies, CompiledRule, Expression};
use crate::value::json_to_cel;

/// The request-level variables (`request`, `principal`), converted once per request.
#[derive(Debug)]
pub struct RequestScope {
    request: Box<dyn Val>,
    principal: Box<dyn Val>,
    request_json: serde_json::Value,
    principal_json: serde_json::Value,
}

fn to_val(v: &serde_json::Value) -> Box<dyn Val> {
    let cel = json_to_cel(v);
    match Box::<dyn Val>::try_from(cel) {
        Ok(b) => b,
        // Every value json_to_cel builds converts; null is the harmless fallback.
        Err(_) => Box::new(cel::common::types::CelNull),
    }
}

impl RequestScope {
    /// Builds the scope from the CEL views of the request and the principal (JSON objects).
    pub fn new(request_view: serde_json::Value, principal_view: serde_json::Value) -> RequestScope {
        RequestScope {
            request: to_val(&request_view),
            principal: to_val(&principal_view),
            request_json: request_view,
            principal_json: principal_view,
        }
    }

    /// A representative request for compile-time type checks.
    pub(crate) fn sample() -> RequestScope {
        RequestScope::new(
            json!({
                "requirements": {"capabilities": ["x"], "guarantees": {"accuracy": {"min": 0.5}, "latency_ms": {"max": 100.0}}, "constraints": {}},
                "budget": {"max_cost": 0.5},
                "context": {},
                "data": {"sensitive": false},
                "payload": {},
                "seed": 0
            }),
            json!({"id": "p", "tenant": "public", "permissions": ["x"], "trust_level": 1, "roles": []}),
        )
    }
}

/// The `service` variable for one contract, converted once per registry snapshot.
#[derive(Debug)]
pub struct ServiceScope {
    id: Arc<str>,
    val: Box<dyn Val>,
    json: serde_json::Value,
}

impl ServiceScope {
    /// Builds the scope from the contract's `service` section as JSON.
    pub fn new(id: Arc<str>, service_view: serde_json::Value) -> ServiceScope {
        ServiceScope {
            id,
            val: to_val(&service_view),
            json: service_view,
        }
    }

    /// The service id.
    pub fn id(&self) -> &Arc<str> {
        &self.id
    }

    pub(crate) fn sample() -> ServiceScope {
        ServiceScope::new(
            Arc::from("sample"),
            json!({
                "id": "sample", "name": "Sample", "version": "1.0.0", "tenant": "public",
                "capabilities": ["x"],
                "guarantees": {"accuracy": {"min": 0.9, "max": 1.0}, "latency_ms": {"min": 1.0, "max": 100.0}, "determinism": true},
                "constraints": {"languages": ["en"], "regions": ["eu-west-1"], "max_input_tokens": 1000.0},
                "cost": {"per_request": 0.001, "per_1k_tokens": 0.0, "currency": "USD"},
                "privacy": {"data_locality": "local", "encryption": true, "retention_days": 0},
                "security": {"required_permissions": ["x"], "min_trust_level": 0},
                "api": {"base_url": "http://127.0.0.1:1", "adapter": "http_json", "endpoints": {}, "timeout_ms": 1000}
            }),
        )
    }
}

struct Vars<'a> {
    request: &'a RequestScope,
    service: Option<&'a ServiceScope>,
}

impl VariableResolver for Vars<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        match variable {
            "request" => Some(CowVal::Borrowed(self.request.request.as_ref())),
            "principal" => Some(CowVal::Borrowed(self.request.principal.as_ref())),
            "service" => self.service.map(|s| CowVal::Borrowed(s.val.as_ref())),
            _ => None,
        }
    }
}

/// Evaluates one expression node against the scopes.
pub(crate) fn resolve(
    e: &IdedExpr,
    env: &Arc<Env>,
    request: &RequestScope,
    service: &ServiceScope,
) -> Result<Value, ExecutionError> {
    let vars = Vars {
        request,
        service: Some(service),
    };
    let mut ctx = Context::with_env(Arc::clone(env));
    ctx.set_variable_resolver(&vars);
    Value::resolve(e, &ctx)
}

/// The outcome of evaluating one expression.
#[derive(Debug, Clone, PartialEq)]
enum Truth {
    Value(bool),
    Error(String),
}

fn run(
    expr: &Expression,
    env: &Arc<Env>,
    request: &RequestScope,
    service: Option<&ServiceScope>,
) -> Truth {
    if expr.is_true {
        return Truth::Value(true);
    }
    let vars = Vars { request, service };
    let mut ctx = Context::with_env(Arc::clone(env));
    ctx.set_variable_resolver(&vars);
    match expr.program.execute(&ctx) {
        Ok(Value::Bool(b)) => Truth::Value(b),
        Ok(other) => Truth::Error(format!("evaluated to {other:?}, not a bool")),
        Err(e) => Truth::Error(e.to_string()),
    }
}

fn lookup<'a>(root: &'a serde_json::Value, path: &[String]) -> Option<&'a serde_json::Value> {
    path.iter().try_fold(root, |v, seg| v.get(seg))
}

impl CompiledPolicies {
    fn operands(
        &self,
        exprs: &[&Expression],
        request: &RequestScope,
        service: Option<&ServiceScope>,
    ) -> BTreeMap<String, serde_json::Value> {
        let mut out = BTreeMap::new();
        for e in exprs {
            for path in &e.paths {
                let root = match path[0].as_str() {
                    "request" => Some(&request.request_json),
                    "principal" => Some(&request.principal_json),
                    "service" => service.map(|s| &s.json),
                    _ => None,
                };
                let Some(root) = root else { continue };
                let value = lookup(root, &path[1..])
                    .cloned()
                    .unwrap_or(serde_json::Value::Null);
                out.insert(path.join("."), value);
            }
        }
        out
    }

    /// Decides a rule's `when` without a service. `None` when the `when` reads the service and so
    /// must be decided per service. `Some((applies, error))` otherwise; an error means it applies.
    pub fn when_for_request(
        &self,
        rule: &CompiledRule,
        request: &RequestScope,
    ) -> Option<(bool, Option<String>)> {
        if rule.when.uses_service {
            return None;
        }
        Some(match run(&rule.when, &self.env, request, None) {
            Truth::Value(b) => (b, None),
            Truth::Error(e) => (
                true,
                Some(format!(
                    "`when` could not be evaluated ({e}); the rule applies (fail closed)"
                )),
            ),
        })
    }

    /// The outcome recorded for a rule whose `when` is false for the whole request.
    pub fn not_applied(&self, rule: &CompiledRule, request: &RequestScope) -> RuleOutcome {
        RuleOutcome {
            policy_id: rule.id.clone(),
            service_id: None,
            applied: false,
            result: None,
            error: None,
            operands: self.operands(&[&rule.when], request, None),
        }
    }

    /// Evaluates a rule for one service. `when` is the request-level decision when there was one.
    pub fn evaluate(
        &self,
        rule: &CompiledRule,
        request: &RequestScope,
        service: &ServiceScope,
        when: Option<(bool, Option<String>)>,
    ) -> RuleOutcome {
        let (applied, when_error) = match when {
            Some(w) => w,
            None => match run(&rule.when, &self.env, request, Some(service)) {
                Truth::Value(b) => (b, None),
                Truth::Error(e) => (
                    true,
                    Some(format!(
                        "`when` could not be evaluated ({e}); the rule applies (fail closed)"
                    )),
                ),
            },
        };
        let (result, error) = if applied {
            match run(&rule.require, &self.env, request, Some(service)) {
                Truth::Value(b) => (Some(b), when_error),
                Truth::Error(e) => {
                    let msg = format!(
                        "`require` could not be evaluated ({e}); counted as violated (fail closed)"
                    );
                    (
                        Some(false),
                        Some(match when_error {
                            Some(w) => format!("{w}; {msg}"),
                            None => msg,
                        }),
                    )
                }
            }
        } else {
            (None, when_error)
        };
        let exprs: Vec<&Expression> = if applied {
            vec![&rule.when, &rule.require]
        } else {
            vec![&rule.when]
        };
        RuleOutcome {
            policy_id: rule.id.clone(),
            service_id: Some(Arc::clone(&service.id)),
            applied,
            result,
            error,
            operands: self.operands(&exprs, request, Some(service)),
        }
    }
}
