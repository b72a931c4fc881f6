//! Evaluating compiled policies, fail-closed, with the operands each rule read.
//!
//! Evaluation is staged by what an expression reads: request-level expressions run once per
//! request ([`CompiledPolicies::evaluate_request`]), service-only expressions once per service and
//! policy version ([`CompiledPolicies::service_table`], cached by the caller with its registry
//! snapshot), and only expressions that read both run per request and service.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use caio_contracts::decision::RuleOutcome;
use caio_contracts::limits::{MAX_EVALUATION_COST, MAX_ROUTE_EVALUATION_COST};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::{Context, Env, ExecutionError, IdedExpr, Value};
use serde_json::json;

use crate::compile::{CompiledPolicies, Expression, Level};
use crate::cost::{Spent, metered};
use crate::value::json_to_cel;

/// The request-level variables (`request`, `principal`), converted once per request.
#[derive(Debug)]
pub struct RequestScope {
    /// The CEL values, converted from the JSON views on first use: a request whose
    /// request-level verdicts all come from the memo never needs them.
    cel: std::sync::OnceLock<(Box<dyn Val>, Box<dyn Val>)>,
    request_json: serde_json::Value,
    principal_json: serde_json::Value,
    /// Cost units this request's policy evaluations may still spend
    /// (`MAX_ROUTE_EVALUATION_COST` at first).
    budget: AtomicU64,
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
            cel: std::sync::OnceLock::new(),
            request_json: request_view,
            principal_json: principal_view,
            budget: AtomicU64::new(MAX_ROUTE_EVALUATION_COST),
        }
    }

    /// Cost units this request's policy evaluations may still spend.
    pub fn budget_left(&self) -> u64 {
        self.budget.load(Ordering::Relaxed)
    }

    fn spend(&self, units: u64) {
        let left = self.budget_left();
        self.budget
            .store(left.saturating_sub(units), Ordering::Relaxed);
    }

    fn cel(&self) -> &(Box<dyn Val>, Box<dyn Val>) {
        self.cel
            .get_or_init(|| (to_val(&self.request_json), to_val(&self.principal_json)))
    }

    /// The memo key of a request-level expression: for every path it reads, the JSON of the
    /// value there — or, when the path stops early, how far it got and the JSON of the last value
    /// it reached (a missing key and a key under a string fail differently). Together these
    /// determine the expression's result.
    fn memo_key(&self, slot: usize, expr: &Expression, key: &mut Vec<u8>) {
        key.extend_from_slice(&slot.to_le_bytes());
        for path in &expr.paths {
            let mut v = if path[0] == "principal" {
                &self.principal_json
            } else {
                &self.request_json
            };
            key.push(0);
            let mut depth = 0;
            for seg in &path[1..] {
                match v.get(seg) {
                    Some(next) => {
                        v = next;
                        depth += 1;
                    }
                    None => break,
                }
            }
            if depth + 1 < path.len() {
                key.push(b'-');
                key.extend_from_slice(&depth.to_le_bytes());
            }
            let _ = serde_json::to_writer(&mut *key, v);
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
    request: Option<&'a RequestScope>,
    service: Option<&'a ServiceScope>,
}

impl VariableResolver for Vars<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        match variable {
            "request" => self.request.map(|r| CowVal::Borrowed(r.cel().0.as_ref())),
            "principal" => self.request.map(|r| CowVal::Borrowed(r.cel().1.as_ref())),
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
        request: Some(request),
        service: Some(service),
    };
    let mut ctx = Context::with_env(Arc::clone(env));
    ctx.set_variable_resolver(&vars);
    Value::resolve(e, &ctx)
}

/// The value of one boolean expression, or why it has none.
#[derive(Debug, Clone, PartialEq)]
pub enum Truth {
    /// It evaluated to this bool.
    Value(bool),
    /// It could not be evaluated (or was not a bool).
    Error(Arc<str>),
}

fn run(
    expr: &Expression,
    env: &Arc<Env>,
    request: Option<&RequestScope>,
    service: Option<&ServiceScope>,
) -> Truth {
    if expr.level == Level::True {
        return Truth::Value(true);
    }
    let vars = Vars { request, service };
    let mut ctx = Context::with_env(Arc::clone(env));
    ctx.set_variable_resolver(&vars);
    match request {
        // What reads the request spends the request's budget.
        Some(r) => run_charged(expr, &ctx, r),
        None => run_in(expr, &ctx, MAX_EVALUATION_COST).0,
    }
}

/// Evaluates an expression in a prepared context under the request's remaining budget, and
/// spends what it cost from it.
fn run_charged(expr: &Expression, ctx: &Context<'_, '_>, request: &RequestScope) -> Truth {
    let (truth, spent) = run_in(expr, ctx, request.budget_left().min(MAX_EVALUATION_COST));
    request.spend(spent.units);
    truth
}

/// Evaluates an expression in a prepared context (one context serves many expressions), under a
/// cost limit of `limit` units: an evaluation that reaches it could not be evaluated.
fn run_in(expr: &Expression, ctx: &Context<'_, '_>, limit: u64) -> (Truth, Spent) {
    if expr.level == Level::True {
        return (
            Truth::Value(true),
            Spent {
                units: 0,
                exhausted: false,
            },
        );
    }
    let (result, spent) = metered(limit, || Value::resolve(&expr.tree, ctx));
    let truth = if spent.exhausted {
        Truth::Error(Arc::from(over_limit(limit)))
    } else {
        match result {
            Ok(Value::Bool(b)) => Truth::Value(b),
            Ok(other) => Truth::Error(Arc::from(format!("evaluated to {other:?}, not a bool"))),
            Err(e) => Truth::Error(Arc::from(e.to_string())),
        }
    };
    (truth, spent)
}

/// Why an evaluation that ran out of its `limit` has no result.
fn over_limit(limit: u64) -> String {
    if limit < MAX_EVALUATION_COST {
        format!(
            "the request's policy evaluation budget of {MAX_ROUTE_EVALUATION_COST} cost units \
             is spent"
        )
    } else {
        format!(
            "evaluation stopped at the cost limit of {MAX_EVALUATION_COST} units: a \
             comprehension costs its list's length times the size of its body, a value that is \
             compared, joined or searched costs its size"
        )
    }
}

/// Most memoized request-level verdicts kept; the memo starts over beyond it.
const MEMO_ENTRIES: usize = 65_536;
/// Most key bytes the memo holds; it starts over beyond it.
const MEMO_BYTES: usize = 16 * 1024 * 1024;
/// Longest key memoized.
const MEMO_KEY_BYTES: usize = 4096;

/// Request-level verdicts by the values they read.
#[derive(Debug, Default)]
pub(crate) struct Memo {
    /// The verdict and what its evaluation cost (charged again on every hit, so a request spends
    /// the same whether its verdicts come from the memo or not).
    entries: std::collections::HashMap<Vec<u8>, (Truth, u64)>,
    bytes: usize,
}

/// The request-level results of one request.
#[derive(Debug, Clone)]
pub struct RequestEval {
    slots: Vec<Truth>,
}

impl RequestEval {
    #[cfg(test)]
    pub(crate) fn slots_for_tests(&self) -> Vec<Truth> {
        self.slots.clone()
    }
}

/// The service-only results of one service: per rule, `when` and `require` when they read only
/// the service.
#[derive(Debug, Clone)]
pub struct ServiceTable {
    rows: Vec<[Option<Truth>; 2]>,
    /// Per rule whose `require` reads only the service and fails for this one: the rejection
    /// sentence, built once.
    details: Vec<Option<Arc<str>>>,
}

/// The verdict of one rule for one service.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleCheck {
    /// The rule applied (its `when` held or could not be evaluated).
    pub applied: bool,
    /// The `require` result when applied (`false` when it could not be evaluated).
    pub result: Option<bool>,
    /// The fail-closed reason, when an expression could not be evaluated.
    pub error: Option<String>,
}

impl ServiceTable {
    /// Whether this service violates rule `i`'s service-only `require` (false when the `require`
    /// is not service-only).
    pub fn violated(&self, i: usize) -> bool {
        self.details.get(i).is_some_and(Option::is_some)
    }
}

impl RuleCheck {
    /// The rule applied and its `require` did not hold.
    pub fn violated(&self) -> bool {
        self.applied && self.result != Some(true)
    }
}

/// The verdict of a rule that applied, from its `require` truth (`when_error`: why the `when`
/// could not be evaluated, if it could not).
fn require_verdict(when_error: Option<String>, require: Truth) -> RuleCheck {
    match require {
        Truth::Value(b) => RuleCheck {
            applied: true,
            result: Some(b),
            error: when_error,
        },
        Truth::Error(e) => {
            let msg = format!(
                "`require` could not be evaluated ({e}); counted as violated (fail closed)"
            );
            RuleCheck {
                applied: true,
                result: Some(false),
                error: Some(match when_error {
                    Some(w) => format!("{w}; {msg}"),
                    None => msg,
                }),
            }
        }
    }
}

fn lookup<'a>(root: &'a serde_json::Value, path: &[String]) -> Option<&'a serde_json::Value> {
    path.iter().try_fold(root, |v, seg| v.get(seg))
}

impl CompiledPolicies {
    /// Evaluates every request-level expression once (identical texts once in all).
    pub fn evaluate_request(&self, request: &RequestScope) -> RequestEval {
        // A request-level expression is a pure function of the values at the paths it reads, so
        // its verdict is memoized on them: requests that share those values (the same priority,
        // the same tier, no residency) skip CEL entirely.
        let mut buf = Vec::with_capacity(64 * self.slots.len());
        let mut ranges = Vec::with_capacity(self.slots.len());
        for (slot, (i, is_when)) in self.slots.iter().enumerate() {
            let rule = &self.rules[*i];
            let start = buf.len();
            request.memo_key(
                slot,
                if *is_when { &rule.when } else { &rule.require },
                &mut buf,
            );
            ranges.push(start..buf.len());
        }
        let mut found: Vec<Option<(Truth, u64)>> = {
            let memo = self.memo.read().unwrap_or_else(|p| p.into_inner());
            ranges
                .iter()
                .map(|r| memo.entries.get(&buf[r.clone()]).cloned())
                .collect()
        };
        let vars = Vars {
            request: Some(request),
            service: None,
        };
        let mut ctx: Option<Context<'_, '_>> = None;
        let mut memo = None;
        // In slot order, whether a verdict comes from the memo or not: the budget a request has
        // left for each expression (and so every verdict) is the same either way.
        let mut slots = Vec::with_capacity(found.len());
        for ((slot, (i, is_when)), range) in self.slots.iter().enumerate().zip(&ranges) {
            let left = request.budget_left();
            let truth = match found[slot].take() {
                Some((truth, cost)) if cost <= left => {
                    request.spend(cost);
                    truth
                }
                // A fresh evaluation would run out of the request's budget.
                Some(_) => {
                    request.spend(left);
                    Truth::Error(Arc::from(over_limit(left)))
                }
                None => {
                    let ctx = ctx.get_or_insert_with(|| {
                        let mut ctx = Context::with_env(Arc::clone(&self.env));
                        ctx.set_variable_resolver(&vars);
                        ctx
                    });
                    let memo = memo.get_or_insert_with(|| {
                        let mut memo = self.memo.write().unwrap_or_else(|p| p.into_inner());
                        if memo.entries.len() + ranges.len() > MEMO_ENTRIES
                            || memo.bytes + buf.len() > MEMO_BYTES
                        {
                            memo.entries.clear();
                            memo.bytes = 0;
                        }
                        memo
                    });
                    let rule = &self.rules[*i];
                    let limit = left.min(MAX_EVALUATION_COST);
                    let (truth, spent) = run_in(
                        if *is_when { &rule.when } else { &rule.require },
                        ctx,
                        limit,
                    );
                    request.spend(spent.units);
                    // Keys over the size limit (an expression reading a large payload) are not
                    // worth keeping: such values rarely repeat. Nor is a verdict cut short by
                    // what this request had left, which another request may not share.
                    let cut_by_request = spent.exhausted && limit < MAX_EVALUATION_COST;
                    if range.len() <= MEMO_KEY_BYTES && !cut_by_request {
                        memo.bytes += range.len();
                        memo.entries
                            .insert(buf[range.clone()].to_vec(), (truth.clone(), spent.units));
                    }
                    truth
                }
            };
            slots.push(truth);
        }
        RequestEval { slots }
    }

    /// Evaluates every service-only expression for one service.
    pub fn service_table(&self, service: &ServiceScope) -> ServiceTable {
        let rows: Vec<[Option<Truth>; 2]> = self
            .rules
            .iter()
            .map(|r| {
                [&r.when, &r.require].map(|e| {
                    (e.level == Level::Service).then(|| run(e, &self.env, None, Some(service)))
                })
            })
            .collect();
        let details = rows
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let verdict = require_verdict(None, row[1].clone()?);
                verdict
                    .violated()
                    .then(|| Arc::from(self.describe_violation(i, None, service, &verdict)))
            })
            .collect();
        ServiceTable { rows, details }
    }

    /// The rejection sentence for a violated rule: built once per service when the rule's
    /// `require` reads only the service and its `when` evaluated cleanly, else built now.
    pub fn violation_detail(
        &self,
        i: usize,
        request: &RequestScope,
        service: &ServiceScope,
        table: &ServiceTable,
        check: &RuleCheck,
    ) -> Arc<str> {
        let when_clean = !check
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("`when`"));
        match table.details.get(i) {
            Some(Some(cached)) if when_clean => Arc::clone(cached),
            _ => Arc::from(self.describe_violation(i, Some(request), service, check)),
        }
    }

    fn truth(
        &self,
        expr: &Expression,
        cached: Option<&Truth>,
        request: &RequestScope,
        reval: &RequestEval,
        service: &ServiceScope,
    ) -> Truth {
        match expr.level {
            Level::True => Truth::Value(true),
            Level::Request(slot) => reval
                .slots
                .get(slot)
                .cloned()
                .unwrap_or_else(|| run(expr, &self.env, Some(request), None)),
            Level::Service => cached
                .cloned()
                .unwrap_or_else(|| run(expr, &self.env, None, Some(service))),
            Level::Mixed => run(expr, &self.env, Some(request), Some(service)),
        }
    }

    /// Whether rule `i`'s `when` is false for the whole request, without looking at any service.
    pub fn never_applies(&self, i: usize, reval: &RequestEval) -> bool {
        match self.rules.get(i).map(|r| r.when.level) {
            Some(Level::Request(slot)) => reval.slots.get(slot) == Some(&Truth::Value(false)),
            _ => false,
        }
    }

    /// Whether rule `i` applies to every service of this request (its `when` is `true` or a
    /// request-level expression that evaluated to true) and its `require` reads only the service:
    /// its verdict for a service is then the cached [`ServiceTable::violated`].
    pub fn decided_by_table(&self, i: usize, reval: &RequestEval) -> bool {
        let Some(rule) = self.rules.get(i) else {
            return false;
        };
        let when_true = match rule.when.level {
            Level::True => true,
            Level::Request(slot) => reval.slots.get(slot) == Some(&Truth::Value(true)),
            Level::Service | Level::Mixed => false,
        };
        when_true && rule.require.level == Level::Service
    }

    /// The verdict of rule `i` for one service.
    pub fn check(
        &self,
        i: usize,
        request: &RequestScope,
        reval: &RequestEval,
        service: &ServiceScope,
        table: &ServiceTable,
    ) -> RuleCheck {
        let Some(rule) = self.rules.get(i) else {
            return RuleCheck {
                applied: true,
                result: Some(false),
                error: Some("no such rule".into()),
            };
        };
        let row = table.rows.get(i);
        let when = self.truth(
            &rule.when,
            row.and_then(|r| r[0].as_ref()),
            request,
            reval,
            service,
        );
        let (applied, when_error) = match when {
            Truth::Value(b) => (b, None),
            Truth::Error(e) => (
                true,
                Some(format!(
                    "`when` could not be evaluated ({e}); the rule applies (fail closed)"
                )),
            ),
        };
        if !applied {
            return RuleCheck {
                applied,
                result: None,
                error: when_error,
            };
        }
        let require = self.truth(
            &rule.require,
            row.and_then(|r| r[1].as_ref()),
            request,
            reval,
            service,
        );
        require_verdict(when_error, require)
    }

    /// The proof record of a verdict: the verdict plus the value of every path the rule read
    /// (`when` paths always, `require` paths when it applied).
    pub fn outcome(
        &self,
        i: usize,
        request: &RequestScope,
        service: &ServiceScope,
        check: &RuleCheck,
    ) -> RuleOutcome {
        let mut shared = BTreeMap::new();
        self.collect_operands(i, request, service, check.applied, &mut shared);
        let operands = shared
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        RuleOutcome {
            applied: check.applied,
            error: check.error.clone(),
            operands,
            policy_id: self
                .rules
                .get(i)
                .map(|r| r.id.to_string())
                .unwrap_or_default(),
            result: check.result,
        }
    }

    /// A sentence explaining why rule `i` removed a service: the policy, its description, and the
    /// fail-closed reason or the `service.*` / `principal.*` values its `require` read.
    pub fn describe_violation(
        &self,
        i: usize,
        request: Option<&RequestScope>,
        service: &ServiceScope,
        check: &RuleCheck,
    ) -> String {
        use std::fmt::Write;
        let Some(rule) = self.rules.get(i) else {
            return String::new();
        };
        let mut out = String::with_capacity(160);
        let _ = write!(out, "policy `{}`", rule.id);
        if let Some(d) = &rule.description {
            let _ = write!(out, " ({d})");
        }
        out.push_str(" violated: ");
        if let Some(e) = &check.error {
            out.push_str(e);
            return out;
        }
        out.push_str("`require` is false");
        let mut first = true;
        for (path, key) in rule.require.paths.iter().zip(&rule.require.keys) {
            let root = match (path[0].as_str(), request) {
                ("service", _) => &service.json,
                ("principal", Some(r)) => &r.principal_json,
                _ => continue,
            };
            out.push_str(if first { " with " } else { ", " });
            first = false;
            let value = lookup(root, &path[1..]).unwrap_or(&serde_json::Value::Null);
            let _ = write!(out, "{key} = {value}");
        }
        out
    }

    /// Adds the value of every path rule `i` read to `operands` (`require` paths only when the
    /// rule applied).
    pub fn collect_operands(
        &self,
        i: usize,
        request: &RequestScope,
        service: &ServiceScope,
        applied: bool,
        operands: &mut BTreeMap<Arc<str>, serde_json::Value>,
    ) {
        if let Some(rule) = self.rules.get(i) {
            let exprs: &[&Expression] = if applied {
                &[&rule.when, &rule.require]
            } else {
                &[&rule.when]
            };
            for e in exprs {
                for (path, key) in e.paths.iter().zip(&e.keys) {
                    if operands.contains_key(key.as_ref()) {
                        continue;
                    }
                    let root = match path[0].as_str() {
                        "request" => &request.request_json,
                        "principal" => &request.principal_json,
                        _ => &service.json,
                    };
                    let value = lookup(root, &path[1..])
                        .cloned()
                        .unwrap_or(serde_json::Value::Null);
                    operands.insert(Arc::clone(key), value);
                }
            }
        }
    }
}
