//! Compile-time checks: syntax, names and types, each naming the policy and the position.

use super::*;
use caio_contracts::policy::PolicyRule;

pub(crate) fn set(rules: &[(&str, &str, &str)]) -> PolicySet {
    PolicySet {
        policies: rules
            .iter()
            .map(|(id, when, require)| PolicyRule {
                id: (*id).to_owned(),
                description: None,
                when: (*when).to_owned(),
                require: (*require).to_owned(),
            })
            .collect(),
    }
}

fn first_error(rules: &[(&str, &str, &str)]) -> PolicyError {
    match compile(&set(rules)) {
        Ok(_) => panic!("expected a compile error"),
        Err(e) => e[0].clone(),
    }
}

#[test]
fn valid_policies_compile_and_know_what_they_read() {
    let c = compile(&set(&[
        ("a", "has(request.context.priority) && request.context.priority == \"high\"", "service.guarantees.latency_ms.max <= 200"),
        ("b", "request.data.sensitive", "service.privacy.data_locality in [\"local\", \"on_device\"] || service.privacy.encryption"),
        ("c", "true", "service.capabilities.exists(c, c == \"x\")"),
    ]))
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(c.rules.len(), 3);
    assert!(!c.rules[0].when_uses_service());
    assert!(c.rules[0].require_uses_service());
    assert_eq!(
        c.rules[0].when.paths,
        vec![vec![
            "request".to_owned(),
            "context".to_owned(),
            "priority".to_owned()
        ]]
    );
    assert!(c.version.starts_with("sha256:"));
}

#[test]
fn syntax_error_names_policy_and_position() {
    let e = first_error(&[("bad-syntax", "true", "service.cost.per_request <")]);
    assert_eq!(e.policy_id, "bad-syntax");
    assert_eq!(e.field, "require");
    assert!(e.message.starts_with("syntax error"), "{e}");
    assert_eq!(e.line, 1);
}

#[test]
fn undeclared_name_is_reported_with_suggestion() {
    let e = first_error(&[("typo", "true", "servce.cost.per_request < 1.0")]);
    assert_eq!(
        (e.policy_id.as_str(), e.field, e.line, e.column),
        ("typo", "require", 1, 1)
    );
    assert!(
        e.message.contains("`servce`") && e.message.contains("did you mean `service`"),
        "{e}"
    );
}

#[test]
fn type_error_is_reported_at_the_operator() {
    let e = first_error(&[(
        "types",
        "true",
        "service.privacy.encryption && service.cost.per_request > \"cheap\"",
    )]);
    assert_eq!(e.policy_id, "types");
    assert!(e.message.starts_with("type error"), "{e}");
    assert!(e.column > 1, "{e}");
}

#[test]
fn mixed_int_and_double_comparisons_are_not_type_errors() {
    assert!(
        compile(&set(&[(
            "mix",
            "request.budget.max_cost > 0",
            "service.guarantees.latency_ms.max <= 200 && service.security.min_trust_level >= 0.0"
        )]))
        .is_ok()
    );
}

#[test]
fn comprehension_variables_are_declared() {
    assert!(
        compile(&set(&[(
            "comp",
            "true",
            "service.capabilities.all(x, x != \"forbidden\")"
        )]))
        .is_ok()
    );
}

#[test]
fn every_error_is_reported() {
    let errors = compile(&set(&[("one", "nope", "true"), ("two", "true", "1 +")]))
        .err()
        .unwrap_or_default();
    assert_eq!(errors.len(), 2);
}

/// Memoized request-level verdicts equal fresh evaluation, whatever the request looks like —
/// including missing keys and keys under non-objects, whose errors differ.
#[test]
fn memoized_verdicts_equal_fresh_ones() {
    use crate::eval::RequestScope;
    use serde_json::json;
    let rules = [
        (
            "a",
            "has(request.context.priority) && request.context.priority == \"high\"",
            "true",
        ),
        ("b", "request.context.priority.level > 2", "true"),
        ("c", "request.data.sensitive", "true"),
        ("d", "size(request.context) > 1", "true"),
        (
            "e",
            "principal.trust_level >= 2 || \"x\" in request.requirements.capabilities",
            "true",
        ),
    ];
    let contexts = [
        json!({}),
        json!({"priority": "high"}),
        json!({"priority": "low"}),
        json!({"priority": {"level": 3}}),
        json!({"priority": {"level": "3"}}),
        json!({"priority": null, "x": 1}),
        json!({"priority": 7}),
    ];
    let warm = compile(&set(&rules)).unwrap_or_else(|e| panic!("{e:?}"));
    for round in 0..2 {
        for (n, ctx) in contexts.iter().enumerate() {
            let view = json!({
                "context": ctx,
                "data": {"sensitive": n % 2 == 0},
                "requirements": {"capabilities": if n % 3 == 0 { json!(["x"]) } else { json!(["y"]) }},
            });
            let principal = json!({"trust_level": n % 4});
            let cold = compile(&set(&rules)).unwrap_or_else(|e| panic!("{e:?}"));
            let a = warm.evaluate_request(&RequestScope::new(view.clone(), principal.clone()));
            let b = cold.evaluate_request(&RequestScope::new(view, principal));
            assert_eq!(
                format!("{a:?}"),
                format!("{b:?}"),
                "round {round}, context {ctx}"
            );
        }
    }
}

/// Chains of operators are as deep as they are long, and CEL's parser limits only parentheses:
/// a 4 KiB `1 + 1 + … + 1` overflowed the stack and aborted the server. Every such expression is
/// refused with a problem naming the policy, and compiling it does not crash the test thread
/// (whose stack is the default 2 MiB).
#[test]
fn expressions_nested_past_the_limit_are_refused_not_a_crash() {
    let fits = |unit: &str, head: &str, tail: &str| {
        let n =
            (caio_contracts::limits::MAX_EXPRESSION_BYTES - head.len() - tail.len()) / unit.len();
        format!("{head}{}{tail}", unit.repeat(n))
    };
    let cases = [
        fits("1 + ", "", "1 > 0"),
        fits("1.0 * ", "", "1.0 > 0.0"),
        fits(".a", "request.context", " == 1"),
        fits("[0]", "request.context.x", " == 1"),
        fits("-1 - ", "", "1 < 0"),
        fits(" ? true : true", "true", ""),
    ];
    for (i, expr) in cases.iter().enumerate() {
        assert!(expr.len() <= caio_contracts::limits::MAX_EXPRESSION_BYTES);
        for field in ["when", "require"] {
            let (when, require) = if field == "when" {
                (expr.as_str(), "true")
            } else {
                ("true", expr.as_str())
            };
            let e = first_error(&[("deep", when, require)]);
            assert_eq!((e.policy_id.as_str(), e.field), ("deep", field), "case {i}");
            assert!(
                e.message.contains("levels deep") || e.message.contains("Recursion limit"),
                "case {i}: {e}"
            );
        }
    }
}

/// The limit is on the tree's depth, not its length: `&&` and `||` chains are balanced by the
/// parser and pass at any length the byte limit allows; a `+` chain exactly
/// MAX_EXPRESSION_DEPTH deep compiles and evaluates on a thread with a 2 MiB stack, one level
/// more is refused.
#[test]
fn an_expression_at_the_depth_limit_compiles_and_evaluates() {
    use crate::eval::RequestScope;
    use serde_json::json;
    let max = caio_contracts::limits::MAX_EXPRESSION_DEPTH;
    let long_or = vec!["request.data.sensitive"; 170].join(" || ");
    assert!(compile(&set(&[("or", long_or.as_str(), "true")])).is_ok());
    // `request.data.n > 100` is 4 levels (`>`, two selects, `request`); each `+ 1` adds one.
    let sum = |levels: usize| format!("request.data.n{} > 100", " + 1".repeat(levels - 4));
    let at_limit = sum(max);
    let parsed = Env::stdlib()
        .compile(&at_limit)
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(depth(parsed.expression()), max);
    let compiled = Arc::new(
        compile(&set(&[("sum", at_limit.as_str(), "true")])).unwrap_or_else(|e| panic!("{e:?}")),
    );
    // n + (max - 4) > 100 holds for n = 100, not for n = 5.
    for (n, holds) in [(100, true), (5, false)] {
        let policies = Arc::clone(&compiled);
        let verdicts = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || {
                let scope = RequestScope::new(json!({"data": {"n": n}}), json!({}));
                format!("{:?}", policies.evaluate_request(&scope))
            })
            .and_then(|h| h.join().map_err(|_| std::io::Error::other("panicked")))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            verdicts.contains(&format!("Value({holds})")),
            "n = {n}: {verdicts}"
        );
    }
    let e = first_error(&[("sum", sum(max + 1).as_str(), "true")]);
    assert!(
        e.message
            .contains(&format!("nests {} levels deep", max + 1)),
        "{e}"
    );
}

/// A regular expression written in a policy that does not compile is refused with the position of
/// the pattern, in both forms of `matches`; patterns computed at evaluation cannot be checked here.
#[test]
fn invalid_written_patterns_are_refused_where_they_are() {
    let e = first_error(&[(
        "member",
        "true",
        "service.id.matches(\"^ok$\") &&\n  service.id.matches(\"([a-z]+\")",
    )]);
    assert_eq!((e.policy_id.as_str(), e.field), ("member", "require"));
    assert_eq!((e.line, e.column), (2, 22), "{e}");
    assert!(
        e.message
            .starts_with("`matches` is given an invalid regular expression:")
            && e.message.contains("unclosed group"),
        "{e}"
    );
    let e = first_error(&[(
        "global",
        "matches(request.context.region, \"eu-[\")",
        "true",
    )]);
    assert_eq!((e.policy_id.as_str(), e.field), ("global", "when"));
    assert_eq!((e.line, e.column), (1, 33), "{e}");
    // Inside a comprehension, and past the regex crate's default compiled-size limit.
    let e = first_error(&[(
        "nested",
        "true",
        "service.capabilities.all(c, c.matches(\"\\\\w{1000}\\\\w{1000}\"))",
    )]);
    assert!(e.message.contains("size limit"), "{e}");
    compile(&set(&[
        (
            "ok",
            "request.context.region.matches(\"^eu-(west|central)-[0-9]$\")",
            "true",
        ),
        (
            "computed",
            "true",
            "service.id.matches(request.context.pattern + \"(\")",
        ),
    ]))
    .unwrap_or_else(|e| panic!("{e:?}"));
}

/// A set accepted before patterns were checked still compiles as a recorded set (the store's
/// active version, a rollback, verification), and the rule fails at evaluation as it did: a `when`
/// that cannot be evaluated applies.
#[test]
fn recorded_sets_with_invalid_patterns_still_load_and_fail_closed() {
    let rules = [("broken", "request.context.region.matches(\"(\")", "false")];
    assert!(compile(&set(&rules)).is_err());
    let c = compile_recorded(&set(&rules)).unwrap_or_else(|e| panic!("{e:?}"));
    let eval = c.evaluate_request(&RequestScope::new(
        serde_json::json!({"context": {"region": "eu"}}),
        serde_json::json!({}),
    ));
    let slots = eval.slots_for_tests();
    assert!(
        matches!(&slots[0], crate::Truth::Error(m) if m.contains("not a valid regex")),
        "{slots:?}"
    );
    assert_eq!(
        c.version,
        compile_recorded(&set(&rules))
            .map(|c| c.version)
            .unwrap_or_default()
    );
}
