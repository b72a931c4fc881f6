//! The cost meter: runaway evaluations stop at the limit and fail closed, ordinary ones keep
//! their results, and a request's budget is spent the same whether verdicts come from the memo.

use std::sync::Arc;

use caio_contracts::limits::{
    MAX_EVALUATION_COST, MAX_EXPRESSION_DEPTH, MAX_ROUTE_EVALUATION_COST,
};
use cel::Env;
use serde_json::{Value as Json, json};

use super::*;
use crate::compile::compile;
use crate::compile::tests::set;
use crate::eval::{RequestScope, ServiceScope, Truth};

/// The request-level verdicts of `rules` for a request whose payload is `payload`, and the
/// budget the request has left afterwards.
fn request_verdicts(rules: &[(&str, &str, &str)], payload: Json) -> (Vec<Truth>, u64) {
    let compiled = compile(&set(rules)).unwrap_or_else(|e| panic!("{e:?}"));
    let scope = RequestScope::new(json!({"payload": payload, "context": {}}), json!({}));
    let eval = compiled.evaluate_request(&scope);
    (eval.slots_for_tests(), scope.budget_left())
}

fn is_over_limit(t: &Truth) -> bool {
    matches!(t, Truth::Error(e) if e.contains(&format!("cost limit of {MAX_EVALUATION_COST} units")))
}

fn is_budget_spent(t: &Truth) -> bool {
    matches!(t, Truth::Error(e) if e.contains("request's policy evaluation budget"))
}

fn literal_list(n: usize) -> String {
    format!(
        "[{}]",
        (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(",")
    )
}

/// Four nested `all` over a 60-element literal list visit 13 million elements (9 s in a release
/// build without the meter). They stop at the limit, the verdict is an error (fail closed), and
/// compiling them (whose type check evaluates the call on a sample request) returns at once.
#[test]
fn nested_comprehensions_stop_at_the_limit() {
    let l = literal_list(60);
    let heavy =
        format!("{l}.all(a, {l}.all(b, {l}.all(c, {l}.all(d, a + b + c + d >= 0)))) == true");
    let (verdicts, left) = request_verdicts(&[("heavy", "true", &heavy)], json!({}));
    assert!(is_over_limit(&verdicts[0]), "{verdicts:?}");
    assert_eq!(left, MAX_ROUTE_EVALUATION_COST - MAX_EVALUATION_COST);
    // Two levels (3,600 elements) are well within it, and evaluate to the same as without the
    // meter.
    let light = format!("{l}.all(a, {l}.all(b, a + b >= 0))");
    let (verdicts, left) = request_verdicts(&[("light", "true", &light)], json!({}));
    assert_eq!(verdicts, vec![Truth::Value(true)]);
    let spent = MAX_ROUTE_EVALUATION_COST - left;
    assert!(
        (3_600..100_000).contains(&spent),
        "two nested loops of 60 cost {spent}"
    );
}

/// A comprehension over a list the client sends is sized by the client: pairwise over 3,000
/// items took 3.6 s of a worker, and a 1 MB payload would have held it for hours.
#[test]
fn comprehensions_over_the_payload_are_bounded() {
    let pairwise = "request.payload.items.all(a, request.payload.items.all(b, a + b >= 0))";
    let items = |n: usize| json!({"items": (0..n).collect::<Vec<_>>()});
    let (big, _) = request_verdicts(&[("pairwise", "true", pairwise)], items(3_000));
    assert!(is_over_limit(&big[0]), "{big:?}");
    let (small, _) = request_verdicts(&[("pairwise", "true", pairwise)], items(30));
    assert_eq!(small, vec![Truth::Value(true)]);
}

/// Operations whose cost grows with their operands are charged their size, so a loop cannot
/// multiply them unseen: membership in a large list, equality of large values, copies made by
/// `map`, and string searches.
#[test]
fn operations_on_large_values_inside_loops_are_charged() {
    let n = 2_000;
    let payload = json!({
        "items": (0..n).collect::<Vec<_>>(),
        "other": (0..n).map(|i| i + n).collect::<Vec<_>>(),
        "nested": [(0..n).collect::<Vec<_>>()],
        "text": "ab".repeat(100_000),
    });
    let cases = [
        // 2,000 × 2,000 membership tests.
        "request.payload.items.exists(x, x in request.payload.other)",
        // 2,000 comparisons of one-element lists holding 2,000 elements.
        "request.payload.items.all(x, request.payload.nested == request.payload.nested)",
        // 2,000 copies of a 2,000-element list.
        "size(request.payload.items.map(x, request.payload.other)) > 0",
        // 2,000 searches of a 200 KB string.
        "request.payload.items.all(x, !request.payload.text.contains(\"zz\"))",
        // 2,000 character counts of it.
        "request.payload.items.all(x, size(request.payload.text) > 0)",
    ];
    for case in cases {
        let (verdicts, _) = request_verdicts(&[("op", "true", case)], payload.clone());
        assert!(is_over_limit(&verdicts[0]), "{case}: {verdicts:?}");
    }
    // Membership compares every element with the value, and values of different types are
    // converted to compare: a 2,000-element value against a 2,000-element list took 3.6 s in a
    // release build (found by a random-expression run), one membership test, no loop.
    let big_in = "request.payload.nested in request.payload.other";
    let (verdicts, _) = request_verdicts(&[("in", "true", big_in)], payload.clone());
    assert!(is_over_limit(&verdicts[0]), "{verdicts:?}");
    // The same operations once each (outside a loop) are cheap and keep their results.
    let once = [
        ("!(1 in request.payload.other)", true),
        ("request.payload.nested == request.payload.nested", true),
        ("size(request.payload.items.map(x, x * 2)) == 2000", true),
        ("request.payload.text.contains(\"zz\")", false),
        ("size(request.payload.text) == 200000", true),
    ];
    for (case, expected) in once {
        let (verdicts, _) = request_verdicts(&[("op", "true", case)], payload.clone());
        assert_eq!(verdicts, vec![Truth::Value(expected)], "{case}");
    }
}

/// The request's budget is shared by its expressions: once it is spent, the next one fails
/// closed with a reason that says so, and the outcome is the same whether the verdicts came from
/// the memo (a warm policy set) or not (a fresh one).
#[test]
fn the_request_budget_is_shared_and_memo_hits_spend_it_too() {
    // Each costs about 900,000 units (25,000 elements × a body of 30 nodes, 5 operands of one
    // unit per element, and the list's size): two fit in the request's 2,000,000, the third
    // does not.
    let expensive = |k: usize| {
        format!(
            "request.payload.items.all(x, x + {k} >= 0 && x + {k} >= 0 && x + {k} >= 0 && x + {k} >= 0 && x >= 0)"
        )
    };
    let texts: Vec<String> = (0..6).map(expensive).collect();
    let rules: Vec<(String, &str, &str)> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("r{i}"), "true", t.as_str()))
        .collect();
    let rules: Vec<(&str, &str, &str)> =
        rules.iter().map(|(a, b, c)| (a.as_str(), *b, *c)).collect();
    let payload = json!({"items": (0..25_000).collect::<Vec<_>>()});
    let warm = compile(&set(&rules)).unwrap_or_else(|e| panic!("{e:?}"));
    let scope = |p: &Json| RequestScope::new(json!({"payload": p, "context": {}}), json!({}));
    let first = scope(&payload);
    let verdicts = warm.evaluate_request(&first).slots_for_tests();
    let fitted = verdicts
        .iter()
        .take_while(|t| **t == Truth::Value(true))
        .count();
    assert_eq!(fitted, 2, "{verdicts:?}");
    assert!(
        verdicts[fitted..].iter().all(is_budget_spent),
        "{verdicts:?}"
    );
    assert_eq!(first.budget_left(), 0);
    // Small payloads are memoized (short keys); a large one is not, so compare on both.
    for p in [payload.clone(), json!({"items": [1, 2, 3]})] {
        let cold = compile(&set(&rules)).unwrap_or_else(|e| panic!("{e:?}"));
        let (w, c) = (scope(&p), scope(&p));
        // Twice on the warm set: the second round's verdicts come from its memo where they can.
        let _ = warm.evaluate_request(&w);
        let w2 = scope(&p);
        let warm_verdicts = warm.evaluate_request(&w2).slots_for_tests();
        let cold_verdicts = cold.evaluate_request(&c).slots_for_tests();
        assert_eq!(warm_verdicts, cold_verdicts);
        assert_eq!(w2.budget_left(), c.budget_left());
    }
}

/// Expressions that read the service are charged too: per request and service when they also
/// read the request (to the request's budget), once per service when they read only the service.
#[test]
fn service_expressions_are_metered() {
    let l = literal_list(200);
    let heavy_service = format!("{l}.all(a, {l}.all(b, {l}.all(c, service.id != \"\")))");
    let mixed = "request.payload.items.all(x, request.payload.items.all(y, service.id != \"\"))";
    let compiled = compile(&set(&[
        ("service-only", "true", heavy_service.as_str()),
        ("mixed", "true", mixed),
    ]))
    .unwrap_or_else(|e| panic!("{e:?}"));
    let service = ServiceScope::sample();
    let table = compiled.service_table(&service);
    let scope = RequestScope::new(
        json!({"payload": {"items": (0..3_000).collect::<Vec<_>>()}, "context": {}}),
        json!({}),
    );
    let reval = compiled.evaluate_request(&scope);
    for (i, name) in ["service-only", "mixed"].iter().enumerate() {
        let check = compiled.check(i, &scope, &reval, &service, &table);
        assert!(check.violated(), "{name}: {check:?}");
        assert!(
            check.error.as_deref().is_some_and(|e| e.contains("units")),
            "{name}: {check:?}"
        );
    }
    // The mixed one spent the request's budget; the service-only one, cached per service, not.
    assert_eq!(
        scope.budget_left(),
        MAX_ROUTE_EVALUATION_COST - MAX_EVALUATION_COST
    );
}

/// With the meter's calls added, expressions evaluate to what they did without them.
#[test]
fn instrumented_expressions_keep_their_results() {
    let request = RequestScope::new(
        json!({
            "payload": {"items": [3, 1, 2], "words": ["a", "bb", "ccc"], "text": "hello world",
                        "nested": {"a": [1, 2], "b": {"c": "d"}}},
            "context": {"priority": "high"},
            "requirements": {"capabilities": ["x", "y"]},
        }),
        json!({"tenant": "acme", "trust_level": 2}),
    );
    let service = ServiceScope::sample();
    let cases = [
        "request.payload.items.all(x, x > 0)",
        "request.payload.items.exists(x, x > 2)",
        "request.payload.items.exists_one(x, x == 2)",
        "request.payload.items.map(x, x * 2) == [6, 2, 4]",
        "request.payload.items.filter(x, x > 1) == [3, 2]",
        "request.payload.items.map(x, x > 1, x + 1) == [4, 3]",
        "request.payload.words.map(w, w + \"!\") == [\"a!\", \"bb!\", \"ccc!\"]",
        "size(request.payload.words.filter(w, size(w) > 1)) == 2",
        "request.payload.nested.all(k, k in [\"a\", \"b\"])",
        "request.payload.nested.a + [3] == [1, 2, 3]",
        "request.payload.nested.b.c == \"d\"",
        "request.payload.text.contains(\"world\") && request.payload.text.startsWith(\"he\")",
        "request.payload.text.matches(\"^h.*d$\")",
        "matches(request.payload.text, \"o w\")",
        "request.payload.text.matches(request.payload.words[1])",
        "request.payload.text.matches(\"(\")",
        "request.payload.text.matches(request.payload.text + \"(\")",
        "request.payload.items.matches(\"a\")",
        "request.payload.nested.b in [{\"c\": \"d\"}]",
        "request.payload.items in [request.payload.items]",
        "size(request.payload.text) == 11",
        "\"x\" in request.requirements.capabilities",
        "request.context.priority == \"high\" ? service.id == \"sample\" : false",
        "has(request.context.priority) && !has(request.context.tier) && request.context.priority != \"low\"",
        "request.payload.words.exists(w, w in service.capabilities) || true",
        "principal.trust_level >= 2 && principal.tenant == \"acme\"",
        "[request.payload.items, request.payload.words].all(l, size(l) == 3)",
        "{\"k\": request.payload.items}.k == [3, 1, 2]",
        "request.payload.items.all(x, request.payload.items.exists(y, y == x))",
        "request.payload.items.map(x, request.payload.words.map(w, w)).size() == 3",
        "request.payload.missing.all(x, true)",
        "request.payload.items.all(x, x / 0 > 1)",
        "request.payload.items.exists(x, x / 0 > 1 || true)",
    ];
    let plain = Arc::new(Env::stdlib());
    let mut metered_env = Env::stdlib();
    register(&mut metered_env).unwrap_or_else(|e| panic!("{e}"));
    let metered_env = Arc::new(metered_env);
    for case in cases {
        let program = plain
            .compile(case)
            .unwrap_or_else(|e| panic!("{case}: {e:?}"));
        let tree = instrument(program.expression());
        assert_ne!(&tree, program.expression(), "{case}: nothing instrumented");
        let expected = crate::eval::resolve(program.expression(), &plain, &request, &service);
        let (got, spent) = metered(MAX_EVALUATION_COST, || {
            crate::eval::resolve(&tree, &metered_env, &request, &service)
        });
        assert!(!spent.exhausted, "{case}");
        assert_eq!(
            format!("{got:?}"),
            format!("{expected:?}"),
            "{case}: instrumented {tree:?}"
        );
    }
}

/// The meter's calls add levels to the tree the evaluator recurses through: a level above an
/// operand that is a list literal or a comprehension, and above every comprehension's range. For
/// the shapes that gain most (calls alternating with list literals, chains of comprehensions),
/// the deepest that compiles evaluates on a 2 MiB thread, and one link more is refused with a
/// reason.
#[test]
fn instrumented_trees_at_the_depth_limit_fit_a_thread() {
    let lists = |n: usize| {
        let mut e = "request.payload.x".to_owned();
        for _ in 0..n {
            e = format!("size([{e}])");
        }
        format!("{e} == 1")
    };
    let maps = |n: usize| {
        let mut e = "request.payload.items".to_owned();
        for _ in 0..n {
            e = format!("[size({e}.map(x, x))]");
        }
        format!("{e} == [1]")
    };
    let chain = |n: usize| format!("request.payload.items{} == [1]", ".map(x, x)".repeat(n));
    let shapes: [&dyn Fn(usize) -> String; 3] = [&lists, &maps, &chain];
    for shape in shapes {
        let mut n = 1;
        while compile(&set(&[("deep", &shape(n + 1), "true")])).is_ok() {
            n += 1;
        }
        let refused = match compile(&set(&[("deep", &shape(n + 1), "true")])) {
            Err(e) => e[0].message.clone(),
            Ok(_) => unreachable!(),
        };
        assert!(refused.contains("levels deep"), "{refused}");
        let deepest = shape(n);
        // CEL's parser, in a debug build, needs more than a test thread's stack for some of
        // these (the policy compiler runs it on a thread of its own).
        let text = deepest.clone();
        let instrumented = std::thread::Builder::new()
            .stack_size(64 * 1024 * 1024)
            .spawn(move || {
                let parsed = Env::stdlib()
                    .compile(&text)
                    .unwrap_or_else(|e| panic!("{e:?}"));
                crate::compile::depth(&instrument(parsed.expression()))
            })
            .and_then(|h| h.join().map_err(|_| std::io::Error::other("panicked")))
            .unwrap_or_else(|e| panic!("{e}"));
        eprintln!("{instrumented} levels with the meter: {deepest}");
        assert!(
            instrumented > MAX_EXPRESSION_DEPTH + 8,
            "{instrumented}: {deepest}"
        );
        let compiled = Arc::new(
            compile(&set(&[("deep", &deepest, "true")])).unwrap_or_else(|e| panic!("{e:?}")),
        );
        let verdicts = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || {
                let scope = RequestScope::new(
                    json!({"payload": {"x": 1, "items": [1]}, "context": {}}),
                    json!({}),
                );
                compiled.evaluate_request(&scope).slots_for_tests()
            })
            .and_then(|h| h.join().map_err(|_| std::io::Error::other("panicked")))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(verdicts[0], Truth::Value(true), "{deepest}");
    }
}

/// Charges are counted as documented: a range costs its length times its body's weight, an
/// operand its deep size, a string one unit per 16 bytes.
#[test]
fn charges_follow_the_documented_units() {
    let (_, spent) = metered(100, || charge(40).and_then(|()| charge(60)));
    assert_eq!(
        spent,
        Spent {
            units: 100,
            exhausted: false
        }
    );
    let (r, spent) = metered(100, || charge(101));
    assert!(r.is_err());
    assert_eq!(
        spent,
        Spent {
            units: 100,
            exhausted: true
        }
    );
    // Outside a meter nothing can be charged, also after an evaluation that panicked.
    assert!(charge(1).is_err());
    let panicked = std::panic::catch_unwind(|| metered(100, || panic!("in an evaluation")));
    assert!(panicked.is_err());
    assert!(charge(1).is_err());
    // A meter inside another leaves the outer one as it was.
    let ((inner, after), outer) = metered(100, || {
        let _ = charge(10);
        let inner = metered(5, || charge(6));
        (inner, charge(90))
    });
    assert_eq!(
        inner.1,
        Spent {
            units: 5,
            exhausted: true
        }
    );
    assert!(after.is_ok());
    assert_eq!(
        outer,
        Spent {
            units: 100,
            exhausted: false
        }
    );
    let v = crate::value::json_to_cel(&json!({"a": [1, 2, [3, 4]], "bb": "x".repeat(33)}));
    let boxed: Box<dyn Val> = Box::<dyn Val>::try_from(v).unwrap_or_else(|_| panic!("converts"));
    // The map (1), key "a" (1) and its list (1) with 1, 2 and [3, 4] (3 + 2), key "bb" (1) and
    // its 33-byte string (1 + 3).
    assert_eq!(deep_size(boxed.as_ref(), u64::MAX), 13);
    assert_eq!(shallow_size(boxed.as_ref()), 2);
    // Past the cap, the walk stops with a number above it.
    for cap in 0..13 {
        assert!(deep_size(boxed.as_ref(), cap) > cap, "cap {cap}");
    }
}

/// `matches` compiles its pattern on every call in cel (a 7-byte `\\w{200}` takes 75 – 90 ms), so
/// a loop over a payload list multiplied it. Patterns written in the policy are compiled once
/// and loops over them are charged their matching only; patterns computed from what the
/// expression reads cost their compilation on every call.
#[test]
fn regular_expressions_are_compiled_once_or_charged() {
    let payload = json!({
        "items": (0..2_000).collect::<Vec<_>>(),
        "words": (0..20).map(|i| format!("w{i}")).collect::<Vec<_>>(),
        "pattern": "^a",
    });
    let literal_in_loop = "request.payload.items.all(x, !\"b\".matches(\"\\\\w{20}\"))";
    let (verdicts, left) = request_verdicts(&[("lit", "true", literal_in_loop)], payload.clone());
    assert_eq!(verdicts, vec![Truth::Value(true)]);
    assert!(
        MAX_ROUTE_EVALUATION_COST - left < 100_000,
        "spent {}",
        MAX_ROUTE_EVALUATION_COST - left
    );
    let computed_once = "\"abc\".matches(request.payload.pattern)";
    let (verdicts, left) = request_verdicts(&[("one", "true", computed_once)], payload.clone());
    assert_eq!(verdicts, vec![Truth::Value(true)]);
    assert!(MAX_ROUTE_EVALUATION_COST - left >= COMPUTED_PATTERN_UNITS);
    let computed_in_loop = "request.payload.words.all(w, !\"abc\".matches(w))";
    let (verdicts, _) = request_verdicts(&[("loop", "true", computed_in_loop)], payload);
    assert!(is_over_limit(&verdicts[0]), "{verdicts:?}");
}

/// Compiling a set checks its written patterns through evaluation's cache: an accepted pattern is
/// compiled there once, and its first evaluation finds it; a refused one is not kept. The operand
/// is a context key the sample request lacks, so the type check never calls `matches` here.
#[test]
fn written_patterns_are_compiled_once_when_the_set_is() {
    let cached = |pattern: &str| {
        LITERAL_CACHE
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|c| c.contains_key(pattern))
    };
    let good = "^compiled-with-the-set-[0-9]{3}$";
    assert!(!cached(good));
    crate::compile(&set(&[(
        "p",
        &format!("request.context.not_in_the_sample.matches(\"{good}\")"),
        "true",
    )]))
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(cached(good));
    let bad = "^refused-(";
    assert!(
        crate::compile(&set(&[(
            "p",
            "true",
            &format!("service.id.matches(\"{bad}\")")
        )]))
        .is_err()
    );
    assert!(!cached(bad));
}
