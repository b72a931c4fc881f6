//! Compiling a policy set: CEL parsing, name checks, a sample-based type check, and the list of
//! paths each expression reads (for the proof's operands).

use std::collections::BTreeSet;
use std::sync::Arc;

use caio_contracts::canonical;
use caio_contracts::limits::{MAX_EVALUATION_COST, MAX_EXPRESSION_DEPTH};
use caio_contracts::policy::PolicySet;
use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue};
use cel::{Env, ExecutionError};

use crate::eval::{RequestScope, ServiceScope};

/// The three variables a policy may read.
pub(crate) const ROOTS: [&str; 3] = ["request", "service", "principal"];

/// Why a policy does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "policy `{policy_id}`: `{field}` at line {line}, column {column}: {message}\n  {field}: {source_text}"
)]
pub struct PolicyError {
    /// The policy.
    pub policy_id: String,
    /// `when` or `require`.
    pub field: &'static str,
    /// 1-based line inside the expression.
    pub line: usize,
    /// 1-based column inside the expression.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// The expression.
    pub source_text: String,
}

/// When an expression can be evaluated, given what it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    /// The literal `true`.
    True,
    /// Reads `request` and/or `principal` only: once per request. The index is the request-level
    /// slot, shared by every expression with the same source text.
    Request(usize),
    /// Reads `service` only: once per service, cached with the registry snapshot.
    Service,
    /// Reads both: once per request and service.
    Mixed,
}

/// A compiled CEL expression and what it reads.
#[derive(Debug)]
pub(crate) struct Expression {
    /// The expression tree with the cost meter's charges (`crate::cost`).
    pub tree: IdedExpr,
    /// Dotted paths rooted at `request`, `service` or `principal`, sorted and unique.
    pub paths: Vec<Vec<String>>,
    /// The same paths joined with dots, as proofs name them.
    pub keys: Vec<Arc<str>>,
    /// Whether the expression reads `service`.
    pub uses_service: bool,
    /// When it is evaluated.
    pub level: Level,
}

/// One compiled policy.
#[derive(Debug)]
pub struct CompiledRule {
    /// The policy id.
    pub id: Arc<str>,
    /// Its description.
    pub description: Option<String>,
    pub(crate) when: Expression,
    pub(crate) require: Expression,
}

impl CompiledRule {
    /// Whether the rule's `when` reads the service (otherwise it is decided once per request).
    pub fn when_uses_service(&self) -> bool {
        self.when.uses_service
    }
    /// Whether the rule's `require` reads the service.
    pub fn require_uses_service(&self) -> bool {
        self.require.uses_service
    }
    /// Whether the rule's `require` reads only the service, so its verdict per service can be
    /// cached with the registry snapshot.
    pub fn require_is_service_only(&self) -> bool {
        self.require.level == Level::Service
    }
}

/// A compiled policy set.
pub struct CompiledPolicies {
    /// `sha256:` content address of the policy set (canonical JSON).
    pub version: String,
    pub(crate) env: Arc<Env>,
    /// The rules in file order.
    pub rules: Vec<CompiledRule>,
    /// The set it was compiled from.
    pub source: PolicySet,
    /// Per request-level slot, the (rule, is `when`) whose expression fills it.
    pub(crate) slots: Vec<(usize, bool)>,
    /// The request sections any policy reads (`None`: the whole request is read).
    request_sections: Option<BTreeSet<String>>,
    /// Whether any policy reads `principal`.
    reads_principal: bool,
    /// Request-level verdicts by the values they read (see `evaluate_request`).
    pub(crate) memo: std::sync::RwLock<crate::eval::Memo>,
}

/// Compiles every policy of a set, reporting every error found. For policy text being accepted
/// (a `PUT`, a validation, a policy file): a regular expression written in the policy (the pattern
/// of `matches`) that does not compile is an error here, with its position.
pub fn compile(set: &PolicySet) -> Result<CompiledPolicies, Vec<PolicyError>> {
    compile_with(set, Patterns::Check)
}

/// Compiles a set that was accepted before: the store's active version at start, a version rolled
/// back to, the policies a decision was made under (for `verify`). Such a set may predate the
/// check of written patterns ([`compile`]); a pattern that does not compile is left to fail at
/// evaluation, as it did when the set was in use, so a set in use still loads and its decisions
/// still verify.
pub fn compile_recorded(set: &PolicySet) -> Result<CompiledPolicies, Vec<PolicyError>> {
    compile_with(set, Patterns::AtEvaluation)
}

/// Whether compilation checks the patterns written in the policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Patterns {
    Check,
    AtEvaluation,
}

fn compile_with(set: &PolicySet, patterns: Patterns) -> Result<CompiledPolicies, Vec<PolicyError>> {
    // CEL's parser recurses once per level of the expression tree, and chains of operators
    // (`1 + 1 + … + 1`, `a.b.….z`) are as deep as they are long: a 4 KiB expression can be 2,000
    // levels deep, more than a routing thread's stack holds. Compilation runs on a thread whose
    // stack holds the deepest expression the byte limit allows; expressions deeper than
    // MAX_EXPRESSION_DEPTH are refused there (and their trees dropped there), so evaluation on
    // any thread only meets shallow ones.
    std::thread::scope(|scope| {
        let compiler = std::thread::Builder::new()
            .name("caio-cel-compile".to_owned())
            .stack_size(COMPILE_STACK_BYTES)
            .spawn_scoped(scope, || compile_here(set, patterns));
        match compiler {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(e) => Err(vec![PolicyError {
                policy_id: String::new(),
                field: "policies",
                line: 1,
                column: 1,
                message: format!("could not start the policy compiler's thread: {e}"),
                source_text: String::new(),
            }]),
        }
    })
}

/// The compiler thread's stack: enough for CEL's parser and the checks below on an expression of
/// `MAX_EXPRESSION_BYTES` nested as deep as its length allows (measured: about 20 MiB for 2,048
/// levels in a debug build). Only the pages it touches are allocated.
const COMPILE_STACK_BYTES: usize = 64 * 1024 * 1024;

/// The deepest tree evaluation may meet once the cost meter's charges are added (a level above
/// operands that are list literals or comprehensions, and above every comprehension's range):
/// measured, 48 levels of the evaluator fit a 2 MiB thread in a debug build, 64 do not.
pub(crate) const MAX_INSTRUMENTED_DEPTH: usize = 48;

fn compile_here(set: &PolicySet, patterns: Patterns) -> Result<CompiledPolicies, Vec<PolicyError>> {
    let mut env = Env::stdlib();
    crate::cost::register(&mut env).map_err(|e| {
        vec![PolicyError {
            policy_id: String::new(),
            field: "policies",
            line: 1,
            column: 1,
            message: format!("could not declare the evaluation cost meter: {e}"),
            source_text: String::new(),
        }]
    })?;
    let env = Arc::new(env);
    let mut errors = Vec::new();
    let mut rules = Vec::with_capacity(set.policies.len());
    let sample_request = RequestScope::sample();
    let sample_service = ServiceScope::sample();
    for p in &set.policies {
        let when = compile_expr(
            &env,
            &p.id,
            "when",
            &p.when,
            &sample_request,
            &sample_service,
            patterns,
        );
        let require = compile_expr(
            &env,
            &p.id,
            "require",
            &p.require,
            &sample_request,
            &sample_service,
            patterns,
        );
        match (when, require) {
            (Ok(when), Ok(require)) => rules.push(CompiledRule {
                id: Arc::from(p.id.as_str()),
                description: p.description.clone(),
                when,
                require,
            }),
            (w, r) => {
                errors.extend(w.err());
                errors.extend(r.err());
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    // Request-level expressions with the same text share one evaluation per request.
    let mut slots: Vec<(usize, bool)> = Vec::new();
    let mut by_text: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (i, (rule, p)) in rules.iter_mut().zip(&set.policies).enumerate() {
        for (expr, text, is_when) in [
            (&mut rule.when, &p.when, true),
            (&mut rule.require, &p.require, false),
        ] {
            if let Level::Request(_) = expr.level {
                let slot = *by_text.entry(text.trim().to_owned()).or_insert_with(|| {
                    slots.push((i, is_when));
                    slots.len() - 1
                });
                expr.level = Level::Request(slot);
            }
        }
    }
    let version = canonical::digest(set).map_err(|e| {
        vec![PolicyError {
            policy_id: String::new(),
            field: "when",
            line: 0,
            column: 0,
            message: e.to_string(),
            source_text: String::new(),
        }]
    })?;
    let mut request_sections = Some(BTreeSet::new());
    for rule in &rules {
        for path in rule.when.paths.iter().chain(&rule.require.paths) {
            if path[0] == "request" {
                match (path.get(1), request_sections.as_mut()) {
                    (Some(section), Some(set)) => {
                        set.insert(section.clone());
                    }
                    (None, _) => request_sections = None,
                    (Some(_), None) => {}
                }
            }
        }
    }
    let reads_principal = rules.iter().any(|r| {
        r.when
            .paths
            .iter()
            .chain(&r.require.paths)
            .any(|p| p[0] == "principal")
    });
    Ok(CompiledPolicies {
        version,
        env,
        rules,
        source: set.clone(),
        slots,
        request_sections,
        reads_principal,
        memo: std::sync::RwLock::new(crate::eval::Memo::default()),
    })
}

impl CompiledPolicies {
    /// Whether some policy reads this top-level section of `request` (so the CEL view of a
    /// request needs only these).
    pub fn reads_request_section(&self, section: &str) -> bool {
        self.request_sections
            .as_ref()
            .is_none_or(|s| s.contains(section))
    }

    /// Whether some policy reads `principal` (so its CEL view is needed).
    pub fn reads_principal(&self) -> bool {
        self.reads_principal
    }
}

impl std::fmt::Debug for CompiledPolicies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledPolicies")
            .field("version", &self.version)
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..offset.min(source.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.chars().count(), |i| before[i + 1..].chars().count())
        + 1;
    (line, col)
}

fn compile_expr(
    env: &Arc<Env>,
    policy_id: &str,
    field: &'static str,
    source: &str,
    sample_request: &RequestScope,
    sample_service: &ServiceScope,
    patterns: Patterns,
) -> Result<Expression, PolicyError> {
    let error = |line: usize, column: usize, message: String| PolicyError {
        policy_id: policy_id.to_owned(),
        field,
        line,
        column,
        message,
        source_text: source.to_owned(),
    };
    let program = env
        .compile(source)
        .map_err(|errs| match errs.errors.first() {
            Some(e) => error(
                usize::try_from(e.pos.0).unwrap_or(0).max(1),
                usize::try_from(e.pos.1).unwrap_or(0) + 1,
                format!("syntax error: {}", e.msg),
            ),
            None => error(1, 1, "syntax error".to_owned()),
        })?;
    let pos = |id: u64| {
        program
            .source_info()
            .offset_for(id)
            .map_or((1, 1), |(start, _)| line_col(source, start as usize))
    };
    let levels = depth(program.expression());
    if levels > MAX_EXPRESSION_DEPTH {
        return Err(error(
            1,
            1,
            format!(
                "the expression nests {levels} levels deep; the limit is {MAX_EXPRESSION_DEPTH} \
                 (a chain of `+`, `*`, `-`, field accesses or `?:` adds a level per link: \
                 shorten it, or split the rule into several policies)"
            ),
        ));
    }

    // Names: every free identifier must be one of the three roots.
    let mut walker = Walker::default();
    walker.walk(program.expression(), &mut Vec::new());
    if let Some((name, id)) = walker.undeclared.first() {
        let (line, column) = pos(*id);
        let hint = ROOTS
            .iter()
            .find(|r| similar(r, name))
            .map(|r| format!("; did you mean `{r}`?"))
            .unwrap_or_default();
        return Err(error(
            line,
            column,
            format!(
                "undeclared reference `{name}` (policies read `request`, `service` and `principal`){hint}"
            ),
        ));
    }

    // Patterns written in the policy: one that does not compile would fail every evaluation that
    // reaches it (a `when` that always applies, a `require` always violated), so it is refused
    // here, where the operator sees it.
    if patterns == Patterns::Check
        && let Some((id, message)) = invalid_literal_pattern(program.expression())
    {
        let (line, column) = pos(id);
        return Err(error(line, column, message));
    }

    // The cost meter's charges (crate::cost) add a level above some operands and above every
    // comprehension's range: usually one level in all, at most one per level as written (a
    // chain of comprehensions). The evaluator's stack use per level is what
    // MAX_EXPRESSION_DEPTH protects, so the instrumented tree is held to a bound too.
    let tree = crate::cost::instrument(program.expression());
    let instrumented = depth(&tree);
    if instrumented > MAX_INSTRUMENTED_DEPTH {
        return Err(error(
            1,
            1,
            format!(
                "the expression nests {instrumented} levels deep with its evaluation cost \
                 checks; the limit is {MAX_INSTRUMENTED_DEPTH} (split the rule into several \
                 policies)"
            ),
        ));
    }

    // Types: evaluate every call bottom-up on a representative request, service and principal.
    // A missing key is not a type error (free-form context keys are absent from the sample), but an
    // operator applied to the wrong types is. The evaluations share one cost limit: once it is
    // spent (comprehensions over large literal lists), the remaining checks end at once, without
    // a verdict, and evaluation on real requests stays metered and fail-closed.
    let (found, _) = crate::cost::metered(MAX_EVALUATION_COST, || {
        first_type_error(&tree, sample_request, sample_service, env)
    });
    if let Some((id, e)) = found {
        let (line, column) = pos(id);
        return Err(error(line, column, format!("type error: {e}")));
    }

    let reads = |root: &str| walker.paths.iter().any(|p| p[0] == root);
    let uses_service = reads("service");
    let uses_request = reads("request") || reads("principal");
    let level = if source.trim() == "true" {
        Level::True
    } else if !uses_service {
        Level::Request(0)
    } else if !uses_request {
        Level::Service
    } else {
        Level::Mixed
    };
    let paths: Vec<Vec<String>> = walker.paths.into_iter().collect();
    Ok(Expression {
        tree,
        keys: paths.iter().map(|p| Arc::from(p.join("."))).collect(),
        paths,
        uses_service,
        level,
    })
}

fn similar(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len().abs_diff(b.len()) > 2 {
        return false;
    }
    let common = a.iter().filter(|c| b.contains(c)).count();
    common + 2 >= a.len().max(b.len())
}

#[derive(Default)]
struct Walker {
    paths: BTreeSet<Vec<String>>,
    undeclared: Vec<(String, u64)>,
}

impl Walker {
    /// Walks `e`; `bound` holds comprehension variables in scope.
    fn walk(&mut self, e: &IdedExpr, bound: &mut Vec<String>) {
        if let Some(chain) = chain(e) {
            let root = &chain[0];
            if ROOTS.contains(&root.as_str()) {
                self.paths.insert(chain);
                return;
            }
            if bound.iter().any(|b| b == root) {
                return;
            }
            self.undeclared.push((root.clone(), root_id(e)));
            return;
        }
        // A comprehension's variables are in scope in its condition, step and result only.
        if let Expr::Comprehension(c) = &e.expr {
            self.walk(&c.iter_range, bound);
            self.walk(&c.accu_init, bound);
            let n = bound.len();
            bound.push(c.iter_var.clone());
            if let Some(v) = &c.iter_var2 {
                bound.push(v.clone());
            }
            bound.push(c.accu_var.clone());
            self.walk(&c.loop_cond, bound);
            self.walk(&c.loop_step, bound);
            self.walk(&c.result, bound);
            bound.truncate(n);
            return;
        }
        for child in children(e) {
            self.walk(child, bound);
        }
    }
}

/// The sub-expressions of `e`, in source order.
pub(crate) fn children(e: &IdedExpr) -> Vec<&IdedExpr> {
    match &e.expr {
        Expr::Call(c) => c.target.iter().map(|t| &**t).chain(&c.args).collect(),
        Expr::Comprehension(c) => vec![
            &c.iter_range,
            &c.accu_init,
            &c.loop_cond,
            &c.loop_step,
            &c.result,
        ],
        Expr::List(l) => l.elements.iter().collect(),
        Expr::Map(m) => m
            .entries
            .iter()
            .flat_map(|entry| match &entry.expr {
                EntryExpr::MapEntry(me) => vec![&me.key, &me.value],
                EntryExpr::StructField(_) => Vec::new(),
            })
            .collect(),
        Expr::Struct(s) => s
            .entries
            .iter()
            .filter_map(|entry| match &entry.expr {
                EntryExpr::StructField(f) => Some(&f.value),
                EntryExpr::MapEntry(_) => None,
            })
            .collect(),
        Expr::Select(s) => vec![&*s.operand],
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => Vec::new(),
    }
}

/// The number of levels of `e`'s tree (a literal is 1), counted without recursion.
pub(crate) fn depth(e: &IdedExpr) -> usize {
    let mut deepest = 0;
    let mut pending = vec![(e, 1)];
    while let Some((e, level)) = pending.pop() {
        deepest = deepest.max(level);
        pending.extend(children(e).into_iter().map(|c| (c, level + 1)));
    }
    deepest
}

/// The id of the identifier at the root of a select chain.
fn root_id(e: &IdedExpr) -> u64 {
    match &e.expr {
        Expr::Select(s) => root_id(&s.operand),
        _ => e.id,
    }
}

/// `a.b.c` (or `has(a.b.c)`) as `["a", "b", "c"]`; `None` for anything else.
pub(crate) fn chain(e: &IdedExpr) -> Option<Vec<String>> {
    let mut segments = Vec::new();
    let mut cur = e;
    loop {
        match &cur.expr {
            Expr::Ident(name) => {
                segments.push(name.clone());
                segments.reverse();
                return Some(segments);
            }
            Expr::Select(s) => {
                segments.push(s.field.clone());
                cur = &s.operand;
            }
            _ => return None,
        }
    }
}

fn is_type_error(e: &ExecutionError) -> bool {
    matches!(
        e,
        ExecutionError::NoSuchOverload(_)
            | ExecutionError::UnsupportedBinaryOperator(..)
            | ExecutionError::ValuesNotComparable(..)
            | ExecutionError::UnexpectedType { .. }
            | ExecutionError::UnsupportedTargetType { .. }
            | ExecutionError::NotSupportedAsMethod { .. }
    )
}

/// The first `matches` call (member or global form) whose pattern is a string literal that does not
/// compile as evaluation would compile it (the `regex` crate with its default limits): the
/// pattern's node id and the problem. Patterns that compile stay in evaluation's cache.
fn invalid_literal_pattern(e: &IdedExpr) -> Option<(u64, String)> {
    if let Expr::Call(c) = &e.expr
        && c.func_name == "matches"
    {
        let pattern = match (&c.target, c.args.as_slice()) {
            (Some(_), [pattern]) | (None, [_, pattern]) => Some(pattern),
            _ => None,
        };
        if let Some(pattern) = pattern
            && let Expr::Literal(LiteralValue::String(text)) = &pattern.expr
            && let Err(err) = crate::cost::literal_regex(text.inner())
        {
            return Some((
                pattern.id,
                format!("`matches` is given an invalid regular expression: {err}"),
            ));
        }
    }
    children(e).into_iter().find_map(invalid_literal_pattern)
}

/// The innermost call whose operands evaluate but which itself fails with a type error.
fn first_type_error(
    e: &IdedExpr,
    request: &RequestScope,
    service: &ServiceScope,
    env: &Arc<Env>,
) -> Option<(u64, ExecutionError)> {
    let Expr::Call(c) = &e.expr else {
        return None;
    };
    let children = c.target.iter().map(|t| t.as_ref()).chain(c.args.iter());
    for child in children {
        if let Some(found) = first_type_error(child, request, service, env) {
            return Some(found);
        }
    }
    match crate::eval::resolve(e, env, request, service) {
        Err(err) if is_type_error(&err) => Some((e.id, err)),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests;
