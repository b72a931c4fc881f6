//! The evaluation cost meter: a bound on the work one CEL evaluation may do.
//!
//! CEL has no loops of its own, but its macros (`all`, `exists`, `exists_one`, `map`, `filter`)
//! expand to comprehensions, and comprehensions nest: four nested `all` over a 60-element list
//! visit 13 million elements, and one over a list in the request's payload visits as many as the
//! client sends. cel's interpreter has no limit of its own, so compilation instruments every
//! expression (see [`instrument`]) with calls to two functions that CEL source cannot name (their
//! names start with `@`) and that charge a thread-local meter:
//!
//! - a comprehension's range is charged its length times the weight of the comprehension's body
//!   (the nodes it evaluates per element, plus the length of its string literals), and its size
//!   (cel copies every element, all the way down, into the loop variable), before the first
//!   element is visited;
//! - an operand that may be copied, compared or searched — of `==`, `!=`, `<`, `<=`, `>`, `>=`,
//!   `+`, `in`, a named function such as `contains` or `matches`, or an element a `map` copies
//!   into its result — is charged its size: one unit per element or entry, all the way down, and
//!   one per 16 bytes of string. Literals are charged with the body they sit in; operands that
//!   are themselves calls are charged through their own operands.
//!
//! - `x in list` is charged the list's size plus its length times the size of `x`: each
//!   element is compared with `x`, and a comparison of values of different types converts both;
//! - `matches` runs on CAIO's own implementation (the same `regex` crate and syntax; cel's
//!   compiles the pattern on every call, and a 7-byte `\w{200}` takes 75 – 90 ms): a pattern
//!   written in the policy is compiled once per process and not charged for it; a pattern
//!   computed at evaluation time is compiled on every call, within 1 MiB of compiled size, and
//!   costs 250,000 units for it. A match costs the pattern's size plus the text's size times the
//!   pattern's.
//!
//! Once a charge would pass the limit, it and every later charge of the evaluation fail, so what
//! is left of the evaluation ends quickly, and the caller reports the evaluation as one that
//! could not be completed (fail closed). Charges depend only on the values the expression reads,
//! so an evaluation's cost is as deterministic as its result.

use std::cell::Cell;

use cel::common::ast::{CallExpr, EntryExpr, Expr, IdedExpr, ListExpr, LiteralValue, operators};
use cel::common::types::{CelBytes, CelInt, CelList, CelMap, CelMapKey, CelString, DYN_TYPE};
use cel::common::value::{CowVal, Val};
use cel::{Env, ExecutionError};

/// Charges `size(range) × weight` plus the range's deep size (each element is copied into the
/// loop variable), then returns `range`.
pub(crate) const RANGE_FN: &str = "@caio_cost_range";
/// Charges the deep size of its operand, then returns it.
pub(crate) const OPERAND_FN: &str = "@caio_cost_operand";
/// Charges one unit per 16 bytes of a string or bytes operand (1 for anything else), then
/// returns it: for `size`, which is constant-time on lists and maps but counts a string's
/// characters.
pub(crate) const SHALLOW_FN: &str = "@caio_cost_shallow";

/// Replaces `matches` (global and member forms): charges, and keeps compiled patterns.
pub(crate) const MATCHES_FN: &str = "@caio_matches";
/// The same, for a pattern written in the policy.
pub(crate) const MATCHES_LITERAL_FN: &str = "@caio_matches_literal";
/// Charges the size of `x in list` (operands: the list, then `x`), then returns the list.
pub(crate) const MEMBER_FN: &str = "@caio_cost_member";

/// Bytes of string per unit of cost.
const BYTES_PER_UNIT: u64 = 16;

/// The state of the meter of the evaluation running on this thread.
#[derive(Debug, Clone, Copy)]
struct Meter {
    /// Units left.
    left: u64,
    /// Units charged so far.
    spent: u64,
    /// A charge did not fit: every later one fails too.
    exhausted: bool,
}

thread_local! {
    static METER: Cell<Option<Meter>> = const { Cell::new(None) };
}

/// What an evaluation cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spent {
    /// Units charged (the whole limit when it was exhausted).
    pub units: u64,
    /// The evaluation ran out of its limit, so its result is not to be trusted.
    pub exhausted: bool,
}

/// Runs `f` (one or more evaluations) under a meter holding `limit` units, and says what it cost.
/// The meter of an enclosing call, if any, is put back afterwards.
pub(crate) fn metered<T>(limit: u64, f: impl FnOnce() -> T) -> (T, Spent) {
    /// Puts the enclosing meter back however `f` ends, a panic included.
    struct Restore(Option<Option<Meter>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(outer) = self.0.take() {
                METER.with(|m| m.set(outer));
            }
        }
    }
    let mut restore = Restore(Some(METER.with(|m| {
        m.replace(Some(Meter {
            left: limit,
            spent: 0,
            exhausted: false,
        }))
    })));
    let out = f();
    let meter = METER.with(|m| m.replace(restore.0.take().flatten()));
    let spent = match meter {
        Some(m) if m.exhausted => Spent {
            units: limit,
            exhausted: true,
        },
        Some(m) => Spent {
            units: m.spent,
            exhausted: false,
        },
        None => Spent {
            units: limit,
            exhausted: true,
        },
    };
    (out, spent)
}

fn exhausted_error() -> ExecutionError {
    ExecutionError::function_error("cost", "the evaluation cost limit is reached")
}

/// Charges `units` to the running meter. Outside [`metered`] nothing may be evaluated: a charge
/// there fails, so an unmetered evaluation cannot run away either.
fn charge(units: u64) -> Result<(), ExecutionError> {
    METER.with(|m| match m.get() {
        Some(mut meter) if !meter.exhausted => {
            if units > meter.left {
                meter.exhausted = true;
                meter.spent += meter.left;
                meter.left = 0;
                m.set(Some(meter));
                Err(exhausted_error())
            } else {
                meter.left -= units;
                meter.spent += units;
                m.set(Some(meter));
                Ok(())
            }
        }
        _ => Err(exhausted_error()),
    })
}

/// Units left on the running meter (0 outside one).
fn left() -> u64 {
    METER.with(|m| match m.get() {
        Some(meter) if !meter.exhausted => meter.left,
        _ => 0,
    })
}

fn bytes_units(len: usize) -> u64 {
    (len as u64).div_ceil(BYTES_PER_UNIT).max(1)
}

/// The number of elements of a list or entries of a map, the units of a string, or 1.
fn shallow_size(v: &dyn Val) -> u64 {
    if let Some(l) = v.downcast_ref::<CelList>() {
        return l.inner().len() as u64;
    }
    if let Some(m) = v.downcast_ref::<CelMap>() {
        return m.inner().len() as u64;
    }
    if let Some(s) = v.downcast_ref::<CelString>() {
        return bytes_units(s.inner().len());
    }
    if let Some(b) = v.downcast_ref::<CelBytes>() {
        return bytes_units(b.inner().len());
    }
    match v.as_iterable() {
        Some(it) => {
            let mut n = 0u64;
            let mut items = it.iter();
            while items.next().is_some() {
                n += 1;
            }
            n
        }
        None => 1,
    }
}

/// One unit per value, element and entry, all the way down, and one per 16 bytes of string; the
/// walk stops once it passes `cap` (the result is then some number above `cap`), so its own work
/// is bounded by what it may charge.
fn deep_size(v: &dyn Val, cap: u64) -> u64 {
    let mut total = 0u64;
    let mut pending: Vec<&dyn Val> = vec![v];
    while let Some(v) = pending.pop() {
        if total > cap {
            break;
        }
        total += 1;
        if let Some(l) = v.downcast_ref::<CelList>() {
            // Each element counts at least one: past the cap without walking them.
            if total.saturating_add(l.inner().len() as u64) > cap {
                return total.saturating_add(l.inner().len() as u64);
            }
            pending.extend(l.inner().iter().map(|b| b.as_ref() as &dyn Val));
        } else if let Some(m) = v.downcast_ref::<CelMap>() {
            if total.saturating_add(m.inner().len() as u64) > cap {
                return total.saturating_add(m.inner().len() as u64);
            }
            for (k, value) in m.inner() {
                if let CelMapKey::String(s) = k {
                    total += bytes_units(s.inner().len());
                }
                pending.push(value.as_ref());
            }
        } else if let Some(s) = v.downcast_ref::<CelString>() {
            total += bytes_units(s.inner().len());
        } else if let Some(b) = v.downcast_ref::<CelBytes>() {
            total += bytes_units(b.inner().len());
        } else if v.as_iterable().is_some() {
            // Another list type (the interpreter's own, built by `map` and `filter`): its
            // elements are counted, not walked.
            total += shallow_size(v);
        }
    }
    total
}

fn one_arg<'b, 'v>(
    name: &str,
    mut args: Vec<CowVal<'b, 'v>>,
) -> Result<(CowVal<'b, 'v>, Vec<CowVal<'b, 'v>>), ExecutionError> {
    if args.is_empty() {
        return Err(ExecutionError::function_error(name, "no operand"));
    }
    let first = args.remove(0);
    Ok((first, args))
}

fn range_fn<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let (range, rest) = one_arg(RANGE_FN, args)?;
    let weight = rest
        .first()
        .and_then(|w| w.downcast_ref::<CelInt>())
        .map_or(1, |w| u64::try_from(*w.inner()).unwrap_or(1));
    // Every element is copied into the loop variable (cel clones it, all the way down).
    let copies = deep_size(range.as_ref(), left());
    charge(
        shallow_size(range.as_ref())
            .saturating_mul(weight.max(1))
            .saturating_add(copies),
    )?;
    Ok(range)
}

fn operand_fn<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let (v, _) = one_arg(OPERAND_FN, args)?;
    charge(deep_size(v.as_ref(), left()))?;
    Ok(v)
}

fn shallow_fn<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let (v, _) = one_arg(SHALLOW_FN, args)?;
    let units = if v.downcast_ref::<CelString>().is_some() || v.downcast_ref::<CelBytes>().is_some()
    {
        shallow_size(v.as_ref())
    } else {
        1
    };
    charge(units)?;
    Ok(v)
}

fn member_fn<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let (list, rest) = one_arg(MEMBER_FN, args)?;
    let each = rest.first().map_or(1, |x| deep_size(x.as_ref(), left()));
    let budget = left();
    let units = deep_size(list.as_ref(), budget)
        .saturating_add(shallow_size(list.as_ref()).saturating_mul(each));
    charge(units)?;
    Ok(list)
}

/// Compiled literal patterns (from policy texts, so as many as the policies hold), shared by
/// every thread. Cleared when it reaches `LITERAL_REGEXES`.
static LITERAL_CACHE: std::sync::RwLock<Option<std::collections::HashMap<String, regex::Regex>>> =
    std::sync::RwLock::new(None);
/// Most literal patterns kept compiled.
const LITERAL_REGEXES: usize = 4096;

fn invalid_pattern(pattern: &str, err: &regex::Error) -> ExecutionError {
    // cel's own message for an invalid pattern.
    ExecutionError::FunctionError {
        function: "matches".to_owned(),
        message: format!("'{pattern}' not a valid regex:\n{err}"),
    }
}

/// The operands of `matches` and what matching costs: the pattern's size, plus the text's size
/// times the pattern's.
fn match_operands<'a>(args: &'a [CowVal<'_, '_>]) -> Result<(&'a str, &'a str), ExecutionError> {
    let [text, pattern, member] = args else {
        return Err(ExecutionError::invalid_argument_count(3, args.len()));
    };
    let (Some(text), Some(pattern)) = (
        text.downcast_ref::<CelString>(),
        pattern.downcast_ref::<CelString>(),
    ) else {
        // cel's own error for operands of other types.
        let types = vec![
            text.get_type().name().to_owned(),
            pattern.get_type().name().to_owned(),
        ];
        let member = member
            .downcast_ref::<cel::common::types::CelBool>()
            .is_some_and(|b| *b.inner());
        return Err(if member {
            ExecutionError::no_such_member_overload("matches", types)
        } else {
            ExecutionError::no_such_overload("matches", types)
        });
    };
    let (text, pattern) = (text.inner(), pattern.inner());
    let pattern_units = bytes_units(pattern.len());
    charge(pattern_units.saturating_add(bytes_units(text.len()).saturating_mul(pattern_units)))?;
    Ok((text, pattern))
}

fn matched<'b, 'v>(regex: &regex::Regex, text: &str) -> CowVal<'b, 'v> {
    CowVal::owned(cel::common::types::CelBool::from(regex.is_match(text)))
}

/// `text.matches(pattern)` with a pattern written in the policy: as cel's own (the `regex`
/// crate, its default limits, a match anywhere in the text, the same error for an invalid
/// pattern), except that each pattern is compiled once per process, not on every call.
fn matches_literal_fn<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let (text, pattern) = match_operands(&args)?;
    let regex = literal_regex(pattern).map_err(|e| invalid_pattern(pattern, &e))?;
    Ok(matched(&regex, text))
}

/// A pattern written in a policy, compiled (the `regex` crate, its default limits) and kept in
/// the process's cache, or taken from it. Compilation checks written patterns through it too, so
/// an accepted pattern is compiled once, not again at its first evaluation.
pub(crate) fn literal_regex(pattern: &str) -> Result<regex::Regex, regex::Error> {
    let cached = LITERAL_CACHE
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .and_then(|c| c.get(pattern).cloned());
    if let Some(regex) = cached {
        return Ok(regex);
    }
    let regex = regex::Regex::new(pattern)?;
    let mut cache = LITERAL_CACHE.write().unwrap_or_else(|p| p.into_inner());
    let cache = cache.get_or_insert_with(std::collections::HashMap::new);
    if cache.len() >= LITERAL_REGEXES {
        cache.clear();
    }
    cache.insert(pattern.to_owned(), regex.clone());
    Ok(regex)
}

/// Compiled size allowed for a pattern computed at evaluation time (cel's default is 10 MiB:
/// a 7-byte `\w{200}` compiles to that in about 90 ms, and even a refused one runs until the
/// limit).
const COMPUTED_PATTERN_BYTES: usize = 1 << 20;
/// What compiling a computed pattern costs, in units: about its worst compile time (13 ms for
/// one that reaches `COMPUTED_PATTERN_BYTES`).
pub(crate) const COMPUTED_PATTERN_UNITS: u64 = 250_000;

/// `text.matches(pattern)` with a pattern computed from what the expression reads: compiled on
/// every call, with a 1 MiB compiled-size limit, and charged for it.
fn matches_computed_fn<'b, 'v>(
    args: Vec<CowVal<'b, 'v>>,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let (text, pattern) = match_operands(&args)?;
    charge(COMPUTED_PATTERN_UNITS)?;
    let regex = regex::RegexBuilder::new(pattern)
        .size_limit(COMPUTED_PATTERN_BYTES)
        .build()
        .map_err(|e| invalid_pattern(pattern, &e))?;
    Ok(matched(&regex, text))
}

/// One of the meter's functions: name, overload id, number of operands, implementation.
type Declared = (
    &'static str,
    &'static str,
    usize,
    cel::common::functions::Function,
);

/// Declares the meter's functions in `env` (every operand `dyn`).
pub(crate) fn register(env: &mut Env) -> Result<(), String> {
    let functions: [Declared; 6] = [
        (RANGE_FN, "caio_cost_range", 2, range_fn),
        (OPERAND_FN, "caio_cost_operand", 1, operand_fn),
        (SHALLOW_FN, "caio_cost_shallow", 1, shallow_fn),
        (MEMBER_FN, "caio_cost_member", 2, member_fn),
        (MATCHES_FN, "caio_matches", 3, matches_computed_fn),
        (
            MATCHES_LITERAL_FN,
            "caio_matches_literal",
            3,
            matches_literal_fn,
        ),
    ];
    for (name, id, operands, function) in functions {
        env.add_overload(
            name,
            id,
            (0..operands).map(|_| DYN_TYPE).collect(),
            function,
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The sub-expressions of `e` (mutable), in source order.
fn children_mut(e: &mut IdedExpr) -> Vec<&mut IdedExpr> {
    match &mut e.expr {
        Expr::Call(c) => c
            .target
            .iter_mut()
            .map(|t| &mut **t)
            .chain(c.args.iter_mut())
            .collect(),
        Expr::Comprehension(c) => {
            let c = &mut **c;
            vec![
                &mut c.iter_range,
                &mut c.accu_init,
                &mut c.loop_cond,
                &mut c.loop_step,
                &mut c.result,
            ]
        }
        Expr::List(l) => l.elements.iter_mut().collect(),
        Expr::Map(m) => m
            .entries
            .iter_mut()
            .flat_map(|entry| match &mut entry.expr {
                EntryExpr::MapEntry(me) => vec![&mut me.key, &mut me.value],
                EntryExpr::StructField(_) => Vec::new(),
            })
            .collect(),
        Expr::Struct(s) => s
            .entries
            .iter_mut()
            .filter_map(|entry| match &mut entry.expr {
                EntryExpr::StructField(f) => Some(&mut f.value),
                EntryExpr::MapEntry(_) => None,
            })
            .collect(),
        Expr::Select(s) => vec![&mut *s.operand],
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => Vec::new(),
    }
}

/// The weight of evaluating `e` once: one per node, plus the units of its string and bytes
/// literals. Counted without recursion.
pub(crate) fn weight(e: &IdedExpr) -> u64 {
    let mut total = 0u64;
    let mut pending = vec![e];
    while let Some(e) = pending.pop() {
        total += match &e.expr {
            Expr::Literal(LiteralValue::String(s)) => 1 + bytes_units(s.inner().len()),
            Expr::Literal(LiteralValue::Bytes(b)) => 1 + bytes_units(b.inner().len()),
            _ => 1,
        };
        pending.extend(crate::compile::children(e));
    }
    total
}

/// How a call's operands are charged.
enum Operands {
    /// Not at all: logic, indexing, arithmetic on numbers — constant time whatever the value.
    Free,
    /// By their deep size.
    Deep,
    /// By their string length (`size`).
    Shallow,
}

fn operands_of(call: &CallExpr) -> Operands {
    match call.func_name.as_str() {
        operators::LOGICAL_AND
        | operators::LOGICAL_OR
        | operators::LOGICAL_NOT
        | operators::CONDITIONAL
        | operators::NOT_STRICTLY_FALSE
        | operators::INDEX
        | operators::OPT_INDEX
        | operators::OPT_SELECT
        | operators::NEGATE
        | operators::SUBSTRACT
        | operators::MULTIPLY
        | operators::DIVIDE
        | operators::MODULO
        | RANGE_FN
        | OPERAND_FN
        | SHALLOW_FN
        | MEMBER_FN
        | MATCHES_FN
        | MATCHES_LITERAL_FN => Operands::Free,
        // A macro's own accumulation (`@result + [x]`, `@result + 1`): the appended element is
        // charged where the comprehension is instrumented.
        operators::ADD if is_accumulator(call.args.first()) => Operands::Free,
        "size" => Operands::Shallow,
        _ => Operands::Deep,
    }
}

fn is_accumulator(e: Option<&IdedExpr>) -> bool {
    matches!(e.map(|e| &e.expr), Some(Expr::Ident(name)) if name.starts_with('@'))
}

/// Whether an operand carries a size of its own that the meter must see: not a literal, nor a
/// list or map of literals (charged statically, with the body they sit in), and not a call
/// (charged through its own operands).
fn carries_data(e: &IdedExpr) -> bool {
    match &e.expr {
        Expr::Ident(_) | Expr::Select(_) | Expr::Comprehension(_) => true,
        Expr::List(_) | Expr::Map(_) => !is_constant(e),
        _ => false,
    }
}

/// A literal, or a list or map built of literals only.
fn is_constant(e: &IdedExpr) -> bool {
    let mut pending = vec![e];
    while let Some(e) = pending.pop() {
        match &e.expr {
            Expr::Literal(_) => {}
            Expr::List(_) | Expr::Map(_) => pending.extend(crate::compile::children(e)),
            _ => return false,
        }
    }
    true
}

/// Returns a copy of `e` with the meter's charges added (module docs). Node ids of the original
/// are kept, so positions still resolve; added nodes get ids above every original one.
pub(crate) fn instrument(e: &IdedExpr) -> IdedExpr {
    let mut out = e.clone();
    let mut next_id = max_id(e) + 1;
    rewrite(&mut out, &mut next_id);
    out
}

fn max_id(e: &IdedExpr) -> u64 {
    let mut max = 0;
    let mut pending = vec![e];
    while let Some(e) = pending.pop() {
        max = max.max(e.id);
        pending.extend(crate::compile::children(e));
    }
    max
}

fn wrap(e: &mut IdedExpr, func: &str, extra: Option<u64>, next_id: &mut u64) {
    let inner = std::mem::take(e);
    let mut args = vec![inner];
    if let Some(weight) = extra {
        args.push(IdedExpr {
            id: *next_id,
            expr: Expr::Literal(LiteralValue::Int(
                i64::try_from(weight).unwrap_or(i64::MAX).into(),
            )),
        });
        *next_id += 1;
    }
    *e = IdedExpr {
        id: *next_id,
        expr: Expr::Call(CallExpr {
            func_name: func.to_owned(),
            target: None,
            args,
        }),
    };
    *next_id += 1;
}

/// Instruments `e` in place. Recursion is bounded: compilation refuses expressions deeper than
/// `MAX_EXPRESSION_DEPTH` before instrumenting them, and runs on its own large stack.
fn rewrite(e: &mut IdedExpr, next_id: &mut u64) {
    match &mut e.expr {
        Expr::Comprehension(c) => {
            let c = &mut **c;
            let body = weight(&c.loop_cond) + weight(&c.loop_step);
            for child in [
                &mut c.iter_range,
                &mut c.accu_init,
                &mut c.loop_cond,
                &mut c.loop_step,
                &mut c.result,
            ] {
                rewrite(child, next_id);
            }
            // What `map` appends: `@result + [x]`, or `cond ? @result + [x] : @result` with
            // `filter`. The copy of `x` costs its size.
            if let Some(ListExpr { elements, .. }) = appended(&mut c.loop_step) {
                for element in elements.iter_mut().filter(|x| carries_data(x)) {
                    wrap(element, OPERAND_FN, None, next_id);
                }
            }
            wrap(&mut c.iter_range, RANGE_FN, Some(body), next_id);
        }
        Expr::Call(call) => {
            let mode = operands_of(call);
            for child in children_mut(e) {
                rewrite(child, next_id);
            }
            if let Expr::Call(call) = &mut e.expr {
                if call.func_name == "matches" && call.args.len() + call.target.iter().len() == 2 {
                    // `text.matches(pattern)` or `matches(text, pattern)`: CAIO's own, metered
                    // (the operands are charged there, by their size).
                    let member = call.target.is_some();
                    if let Some(target) = call.target.take() {
                        call.args.insert(0, *target);
                    }
                    call.args.push(IdedExpr {
                        id: *next_id,
                        expr: Expr::Literal(LiteralValue::Boolean(member.into())),
                    });
                    *next_id += 1;
                    let literal = matches!(
                        call.args.get(1).map(|p| &p.expr),
                        Some(Expr::Literal(LiteralValue::String(_)))
                    );
                    call.func_name = if literal {
                        MATCHES_LITERAL_FN
                    } else {
                        MATCHES_FN
                    }
                    .to_owned();
                    return;
                }
                if call.func_name == operators::IN && call.args.len() == 2 {
                    // `x in list`: every element is compared with `x`. The list's operand is
                    // charged for that, with a copy of `x` to size it (evaluated again: CEL
                    // expressions have no side effects, and its own cost is charged twice).
                    let x = call.args[0].clone();
                    if carries_data(&call.args[0]) {
                        wrap(&mut call.args[0], OPERAND_FN, None, next_id);
                    }
                    let list = &mut call.args[1];
                    let inner = std::mem::take(list);
                    *list = IdedExpr {
                        id: *next_id,
                        expr: Expr::Call(CallExpr {
                            func_name: MEMBER_FN.to_owned(),
                            target: None,
                            args: vec![inner, x],
                        }),
                    };
                    *next_id += 1;
                    return;
                }
            }
            let func = match mode {
                Operands::Free => return,
                Operands::Deep => OPERAND_FN,
                Operands::Shallow => SHALLOW_FN,
            };
            if let Expr::Call(call) = &mut e.expr {
                for operand in call
                    .target
                    .iter_mut()
                    .map(|t| &mut **t)
                    .chain(call.args.iter_mut())
                    .filter(|x| carries_data(x))
                {
                    wrap(operand, func, None, next_id);
                }
            }
        }
        _ => {
            for child in children_mut(e) {
                rewrite(child, next_id);
            }
        }
    }
}

/// The list a `map` or `filter` step appends, if `step` is one.
fn appended(step: &mut IdedExpr) -> Option<&mut ListExpr> {
    let Expr::Call(call) = &mut step.expr else {
        return None;
    };
    match call.func_name.as_str() {
        operators::ADD if is_accumulator(call.args.first()) => match call.args.get_mut(1) {
            Some(IdedExpr {
                expr: Expr::List(list),
                ..
            }) => Some(list),
            _ => None,
        },
        operators::CONDITIONAL => call.args.get_mut(1).and_then(appended),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
