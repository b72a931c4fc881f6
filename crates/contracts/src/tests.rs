//! Parsing untrusted documents: every rejection names the file, the field path and the line.

use crate::{
    Format, MAX_PROBLEM_TEXT, MAX_PROBLEMS, ValidationReport, abbreviate, parse_contract,
    parse_principal, parse_request,
};

const VALID: &str = r#"apiVersion: caio/v1
kind: ServiceContract
service:
  id: sentiment-eu
  name: Sentiment EU
  version: 1.4.0
  tenant: public
  capabilities: [sentiment_analysis, text_classification]
  guarantees:
    accuracy:   { min: 0.95 }
    latency_ms: { max: 120 }
    determinism: true
  constraints: { max_input_tokens: 4096, languages: [en, de], regions: [eu-west-1] }
  cost:     { per_request: 0.0004, per_1k_tokens: 0.0, currency: USD }
  privacy:  { data_locality: local, encryption: true, retention_days: 0 }
  security: { required_permissions: [classify], min_trust_level: 2 }
  api:
    base_url: http://127.0.0.1:9101
    adapter: http_json
    endpoints: { execute: { method: POST, path: /v1/execute }, health: { method: GET, path: /health } }
    timeout_ms: 2000
"#;

fn contract_err(text: &str) -> ValidationReport {
    match parse_contract("svc.yaml", text, Format::Auto) {
        Ok(_) => panic!("expected rejection of:\n{text}"),
        Err(r) => r,
    }
}

/// Asserts one problem has this path, line and message fragment.
fn check(report: &ValidationReport, path: &str, line: Option<usize>, fragment: &str) {
    let found = report
        .problems
        .iter()
        .any(|p| p.path == path && p.line == line && p.message.contains(fragment));
    assert!(
        found,
        "no problem at {path} (line {line:?}) containing {fragment:?} in:\n{report}"
    );
}

#[test]
fn the_design_example_parses() {
    let c = parse_contract("svc.yaml", VALID, Format::Auto).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.service.id, "sentiment-eu");
    assert_eq!(c.service.capabilities.len(), 2);
    assert_eq!(c.service.security.min_trust_level, 2);
}

#[test]
fn a_typo_is_named_with_a_suggestion_and_its_line() {
    let r = contract_err(&VALID.replace("  capabilities:", "  capabilites:"));
    check(
        &r,
        "/service/capabilites",
        Some(8),
        "unknown field `capabilites`; did you mean `capabilities`?",
    );
    check(&r, "/service", Some(3), "capabilities");
    assert!(
        r.to_string().contains("svc.yaml:8: /service/capabilites"),
        "{r}"
    );
}

#[test]
fn non_finite_numbers_are_refused() {
    let r = contract_err(&VALID.replace("{ min: 0.95 }", "{ min: .nan }"));
    check(
        &r,
        "/service/guarantees/accuracy/min",
        Some(10),
        "not a finite number",
    );
    let r = contract_err(&VALID.replace("per_request: 0.0004", "per_request: .inf"));
    check(
        &r,
        "/service/cost/per_request",
        Some(14),
        "not a finite number",
    );
}

#[test]
fn bounds_out_of_order_or_range_are_refused() {
    let r = contract_err(&VALID.replace("{ min: 0.95 }", "{ min: 0.95, max: 0.9 }"));
    check(
        &r,
        "/service/guarantees/accuracy",
        Some(10),
        "min 0.95 is greater than max 0.9",
    );
    let r = contract_err(&VALID.replace("{ min: 0.95 }", "{ min: 1.5 }"));
    check(
        &r,
        "/service/guarantees/accuracy/min",
        Some(10),
        "outside [0, 1]",
    );
    let r = contract_err(&VALID.replace("determinism: true", "determinism: { min: 1 }"));
    check(&r, "/service/guarantees/determinism", Some(12), "is a flag");
}

#[test]
fn identifiers_versions_and_urls_are_checked() {
    let r = contract_err(&VALID.replace("id: sentiment-eu", "id: Sentiment_EU"));
    check(&r, "/service/id", Some(4), "does not match");
    let r = contract_err(&VALID.replace("version: 1.4.0", "version: \"1.4\""));
    check(&r, "/service/version", Some(6), "not a semantic version");
    let r = contract_err(&VALID.replace("http://127.0.0.1:9101", "ftp://files.example.com"));
    check(
        &r,
        "/service/api/base_url",
        Some(18),
        "scheme `ftp` is not allowed",
    );
    let r = contract_err(&VALID.replace(
        "http://127.0.0.1:9101",
        "https://user:secret@api.example.com",
    ));
    check(&r, "/service/api/base_url", Some(18), "carries credentials");
    let r = contract_err(&VALID.replace("http://127.0.0.1:9101", "not a url"));
    check(&r, "/service/api/base_url", Some(18), "is not a URL");
}

#[test]
fn capabilities_must_be_present_and_unique() {
    let r = contract_err(&VALID.replace("[sentiment_analysis, text_classification]", "[]"));
    check(&r, "/service/capabilities", Some(8), "");
    let r = contract_err(&VALID.replace(
        "[sentiment_analysis, text_classification]",
        "[sentiment_analysis, sentiment_analysis]",
    ));
    check(
        &r,
        "/service/capabilities/1",
        Some(8),
        "duplicate capability `sentiment_analysis`",
    );
}

#[test]
fn negative_costs_are_refused() {
    let r = contract_err(&VALID.replace("per_request: 0.0004", "per_request: -1"));
    check(&r, "/service/cost/per_request", Some(14), "minimum");
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = VALID
        .replace("version: 1.4.0", "version: banana")
        .replace("{ min: 0.95 }", "{ min: 0.99, max: 0.5 }")
        .replace("http://127.0.0.1:9101", "gopher://x");
    let r = contract_err(&text);
    assert_eq!(r.problems.len(), 3, "{r}");
    let lines: Vec<_> = r.problems.iter().map(|p| p.line).collect();
    assert_eq!(lines, [Some(6), Some(10), Some(18)], "sorted by line");
}

#[test]
fn alias_bombs_are_refused_quickly() {
    let mut bomb = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h"]
        .iter()
        .zip(["b", "c", "d", "e", "f", "g", "h", "i"])
    {
        bomb.push_str(&format!("{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
    }
    let started = std::time::Instant::now();
    let r = contract_err(&bomb);
    assert!(r.to_string().contains("invalid YAML"), "{r}");
    // Not a timing threshold on the machine's speed: a bomb expanded in full would take minutes
    // and gigabytes; this only asserts that it was refused rather than expanded.
    assert!(started.elapsed().as_secs() < 30);
}

#[test]
fn oversized_and_deep_documents_are_refused() {
    let big = format!("{VALID}# {}\n", "x".repeat(300 * 1024));
    check(
        &contract_err(&big),
        "",
        None,
        "limit for a service contract is 262144 bytes",
    );
    let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
    let r = contract_err(&deep);
    assert!(
        r.to_string().contains("nesting deeper than 16 levels"),
        "{r}"
    );
}

#[test]
fn json_contracts_get_lines_too() {
    let json = r#"{
  "apiVersion": "caio/v1",
  "kind": "ServiceContract",
  "service": {
    "id": "x",
    "name": "X",
    "version": "1.0.0",
    "capabilities": ["a"],
    "costs": {},
    "api": {"base_url": "http://h", "endpoints": {"execute": {"method": "POST", "path": "/e"}}}
  }
}"#;
    let r = match parse_contract("svc.json", json, Format::Auto) {
        Ok(_) => panic!("accepted"),
        Err(r) => r,
    };
    check(&r, "/service/costs", Some(9), "did you mean `cost`?");
    let broken = match parse_contract("svc.json", "{\"apiVersion\": ", Format::Auto) {
        Ok(_) => panic!("accepted"),
        Err(r) => r,
    };
    assert!(broken.to_string().contains("invalid JSON"), "{broken}");
}

#[test]
fn requests_and_principals_are_validated() {
    let r = parse_request(
        "req.yaml",
        "requirements: {capabilities: [x]}\nbudjet: {max_cost: 1}\n",
        Format::Yaml,
    )
    .err()
    .unwrap_or_else(|| panic!("accepted"));
    check(&r, "/budjet", Some(2), "did you mean `budget`?");
    let r = parse_request(
        "req.yaml",
        "requirements: {capabilities: [x]}\nfields: {intent: [[1,0],[0,1]], rfs: [[1,0]]}\n",
        Format::Yaml,
    )
    .err()
    .unwrap_or_else(|| panic!("accepted"));
    check(&r, "/fields/rfs", Some(2), "equal length");
    let r = parse_principal("p.yaml", "id: p\ntrust_level: 11\n", Format::Yaml)
        .err()
        .unwrap_or_else(|| panic!("accepted"));
    check(&r, "/trust_level", Some(2), "maximum");
    let ok = parse_request(
        "req.yaml",
        "requirements: {capabilities: [x]}\n",
        Format::Yaml,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok.payload, serde_json::json!({}), "sections default");
}

/// Duplicate capabilities are found by pairwise comparison in short lists and through a set in long
/// ones; both name the later copy's index. Bounds problems name the guarantee and the side.
#[test]
fn request_capabilities_and_bounds_are_checked_with_their_paths() {
    let request_err = |text: &str| {
        parse_request("req.json", text, Format::Json)
            .err()
            .unwrap_or_else(|| panic!("accepted {text}"))
    };
    let r = request_err(r#"{"requirements":{"capabilities":["a","b","a","b"]}}"#);
    check(
        &r,
        "/requirements/capabilities/2",
        Some(1),
        "duplicate capability `a`",
    );
    check(
        &r,
        "/requirements/capabilities/3",
        Some(1),
        "duplicate capability `b`",
    );
    assert_eq!(r.problems.len(), 2, "{r}");
    let mut long: Vec<String> = (0..40).map(|i| format!("cap{i}")).collect();
    long.push("cap7".into());
    long.push("cap39".into());
    let r =
        request_err(&serde_json::json!({ "requirements": { "capabilities": long } }).to_string());
    check(
        &r,
        "/requirements/capabilities/40",
        Some(1),
        "duplicate capability `cap7`",
    );
    check(
        &r,
        "/requirements/capabilities/41",
        Some(1),
        "duplicate capability `cap39`",
    );
    assert_eq!(r.problems.len(), 2, "{r}");
    let r = request_err(
        r#"{"requirements":{"capabilities":["a"],"guarantees":{"accuracy":{"min":0.9,"max":0.5},"latency_ms":{"min":-1},"determinism":{"min":1}}}}"#,
    );
    check(
        &r,
        "/requirements/guarantees/accuracy",
        Some(1),
        "min 0.9 is greater than max 0.5",
    );
    check(
        &r,
        "/requirements/guarantees/latency_ms/min",
        Some(1),
        "-1 is negative",
    );
    check(
        &r,
        "/requirements/guarantees/determinism",
        Some(1),
        "is a flag",
    );
    assert!(
        parse_request(
            "req.json",
            r#"{"requirements":{"capabilities":["a","b","c"],"guarantees":{"accuracy":{"min":0.9,"max":1},"latency_ms":{"max":200}}}}"#,
            Format::Json,
        )
        .is_ok()
    );
}

/// A report quotes the offending values, but never more than an excerpt of each, whatever the
/// document's size: an error is not a way to make the server send megabytes.
#[test]
fn problems_quote_an_excerpt_of_a_large_value() {
    let huge = "x".repeat(200_000);
    let r = parse_request(
        "req.json",
        &format!(r#"{{"requirements":{{"capabilities":"{huge}"}}}}"#),
        Format::Json,
    )
    .err()
    .unwrap_or_else(|| panic!("accepted"));
    check(&r, "/requirements/capabilities", Some(1), "is not of type");
    for p in &r.problems {
        assert!(
            p.message.len() <= MAX_PROBLEM_TEXT + 64,
            "{} bytes",
            p.message.len()
        );
    }
    let p = &r.problems[0];
    assert!(p.message.starts_with("\"xxx"), "{}", p.message);
    assert!(
        p.message.ends_with(r#"is not of type "array""#),
        "{}",
        p.message
    );
    assert!(p.message.contains("bytes left out"), "{}", p.message);
    // An unknown key of 100 KB: both its path and its message are cut.
    let key = "k".repeat(100_000);
    let r = parse_request(
        "req.json",
        &format!(r#"{{"requirements":{{"capabilities":["x"]}},"{key}":1}}"#),
        Format::Json,
    )
    .err()
    .unwrap_or_else(|| panic!("accepted"));
    assert_eq!(r.problems.len(), 1, "{r}");
    assert!(r.problems[0].path.len() <= MAX_PROBLEM_TEXT + 64);
    assert!(r.problems[0].message.starts_with("unknown field `kkk"));
}

#[test]
fn a_report_lists_at_most_max_problems_and_says_so() {
    // 5,000 capabilities of the wrong type: one problem each, and one for the count.
    let items = vec!["1"; 5000].join(",");
    let r = parse_request(
        "req.json",
        &format!(r#"{{"requirements":{{"capabilities":[{items}]}}}}"#),
        Format::Json,
    )
    .err()
    .unwrap_or_else(|| panic!("accepted"));
    assert_eq!(r.problems.len(), MAX_PROBLEMS + 1, "{r}");
    let last = &r.problems[MAX_PROBLEMS];
    assert!(last.message.starts_with("more problems not listed"), "{r}");
    assert_eq!(last.path, "");
    // The first problems are real ones, in source order, and the note stays last.
    assert!(
        r.problems[0].path.starts_with("/requirements/capabilities"),
        "{r}"
    );
    assert!(r.problems[..MAX_PROBLEMS].iter().all(|p| p.line == Some(1)));
    // A document with a few problems is not cut.
    let r = parse_request(
        "req.json",
        r#"{"requirements":{"capabilities":[1,2,3]}}"#,
        Format::Json,
    )
    .err()
    .unwrap_or_else(|| panic!("accepted"));
    assert_eq!(r.problems.len(), 3, "{r}");
}

#[test]
fn abbreviate_keeps_both_ends_on_character_boundaries() {
    assert_eq!(abbreviate("short".to_owned()), "short");
    let exact = "y".repeat(MAX_PROBLEM_TEXT);
    assert_eq!(abbreviate(exact.clone()), exact);
    // Four-byte characters, so that a cut at a byte count lands inside one unless it is moved.
    let text = format!("start{}end", "\u{1F4A5}".repeat(1000));
    let cut = abbreviate(text.clone());
    assert!(cut.len() <= MAX_PROBLEM_TEXT + 64, "{}", cut.len());
    assert!(cut.starts_with("start\u{1F4A5}"));
    assert!(cut.ends_with("\u{1F4A5}end"));
    // `head … (N bytes left out) … tail`, where head + N + tail is the whole text.
    let (head, rest) = cut.split_once(" … (").unwrap_or_else(|| panic!("{cut}"));
    let (count, tail) = rest
        .split_once(" bytes left out) … ")
        .unwrap_or_else(|| panic!("{cut}"));
    let left_out: usize = count.parse().unwrap_or_else(|_| panic!("{cut}"));
    assert!(text.starts_with(head) && text.ends_with(tail));
    assert_eq!(head.len() + left_out + tail.len(), text.len(), "{cut}");
}

proptest::proptest! {
    /// No input makes the parsers panic or hang; garbage gets problems, never a contract.
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        let _ = parse_contract("fuzz.yaml", &text, Format::Auto);
        let _ = parse_request("fuzz.yaml", &text, Format::Auto);
        let _ = parse_principal("fuzz.yaml", &text, Format::Auto);
    }

    /// Mutating the valid contract byte by byte never panics.
    #[test]
    fn mutated_contracts_never_panic(pos in 0usize..900, byte in proptest::prelude::any::<u8>()) {
        let mut bytes = VALID.as_bytes().to_vec();
        let pos = pos % bytes.len();
        bytes[pos] = byte;
        if let Ok(text) = String::from_utf8(bytes) {
            let _ = parse_contract("fuzz.yaml", &text, Format::Auto);
        }
    }
}

/// Every input format declares its fields in canonical (RFC 8785) order, so registry versions and
/// policy versions hash on the streaming path.
#[test]
fn formats_stream_canonically() {
    let c = parse_contract("svc.yaml", VALID, Format::Auto).unwrap_or_else(|e| panic!("{e}"));
    assert!(crate::canonical::streams(&c));
    let p = crate::parse_policies(
        "p.yaml",
        "policies:\n  - id: a\n    description: d\n    when: 'true'\n    require: 'true'\n",
        Format::Yaml,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(crate::canonical::streams(&p));
    let r = parse_request("r.yaml", "requirements: {capabilities: [x], guarantees: {accuracy: {min: 0.5, max: 1}}}\nfields: {intent: [[1, 0]], trait: [[1, 0]]}\nbudget: {max_cost: 1}\n", Format::Yaml).unwrap_or_else(|e| panic!("{e}"));
    assert!(crate::canonical::streams(&r));
    let who = parse_principal("p.yaml", "id: p\nroles: [client]\n", Format::Yaml)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(crate::canonical::streams(&who));
}

#[test]
fn a_request_value_is_checked_like_its_text() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/requests");
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.display().to_string();
        let from_text = parse_request(&name, &text, Format::Auto);
        let value = crate::yaml::to_json(&text, crate::yaml::Syntax::Yaml, 64).unwrap();
        let from_value = crate::parse_request_value(&name, value);
        match (from_text, from_value) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{name}"),
            (Err(a), Err(b)) => assert_eq!(
                a.problems.iter().map(|p| &p.path).collect::<Vec<_>>(),
                b.problems.iter().map(|p| &p.path).collect::<Vec<_>>(),
                "{name}"
            ),
            (a, b) => panic!("{name}: {a:?} vs {b:?}"),
        }
    }
    // Hostile values: wrong types, unknown fields, too deep — errors naming the path.
    let bad = serde_json::json!({"requirements": {"capabilities": "x"}, "extra": 1});
    let r = crate::parse_request_value("v", bad).unwrap_err();
    assert!(r.problems.iter().any(|p| p.path == "/extra"), "{r}");
    let mut deep = serde_json::json!(1);
    for _ in 0..100 {
        deep = serde_json::json!([deep]);
    }
    let r = crate::parse_request_value(
        "v",
        serde_json::json!({"requirements": {"capabilities": ["a"]}, "payload": {"x": deep}}),
    )
    .unwrap_err();
    assert!(r.problems[0].message.contains("nesting"), "{r}");
}

/// Aliases may repeat a node, but not blow a small document up: serde_norway expanded 5,000
/// aliases of a 1,000-item list (40 KB of text, 5 million nodes) before anything checked them.
#[test]
fn aliases_that_expand_a_document_far_past_its_size_are_refused() {
    let list = vec!["x"; 1000].join(", ");
    let mut text = format!("requirements: {{capabilities: [x]}}\ncontext:\n  a: &a [{list}]\n");
    for i in 0..5000 {
        text.push_str(&format!("  b{i}: *a\n"));
    }
    let r = parse_request("req.yaml", &text, Format::Yaml)
        .err()
        .unwrap_or_else(|| panic!("accepted"));
    assert_eq!(r.problems.len(), 1, "{r}");
    assert!(
        r.problems[0]
            .message
            .starts_with("invalid YAML: its aliases expand"),
        "{r}"
    );
    assert!(r.problems[0].line.is_some_and(|l| l > 3), "{r}");
    // Ordinary use of anchors still works, and the alias reads as its anchor's value.
    let ok = parse_request(
        "req.yaml",
        "requirements: {capabilities: [x]}\ncontext:\n  a: &langs [de, en, fr]\n  b: *langs\n  c: *langs\n",
        Format::Yaml,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok.context["b"], serde_json::json!(["de", "en", "fr"]));
    assert_eq!(ok.context["c"], ok.context["a"]);
}

/// libyaml (under serde_norway) rechecks every open flow collection at each token, so 200,000
/// nested `{a: ` took it minutes before it refused them; a route request in YAML could hold a
/// worker that long. The nesting is now refused from a linear pass before libyaml sees the text.
#[test]
fn deeply_nested_yaml_is_refused_before_the_yaml_parser_reads_it() {
    for (what, text) in [
        ("flow mappings", "{a: ".repeat(200_000)),
        ("flow sequences", "[".repeat(200_000)),
        (
            "closed flow mappings",
            format!("{}1{}", "{a: ".repeat(5_000), "}".repeat(5_000)),
        ),
    ] {
        let r = parse_request("req.yaml", &text, Format::Yaml)
            .err()
            .unwrap_or_else(|| panic!("{what}: accepted"));
        check(&r, "", Some(1), "nesting deeper than 32 levels");
    }
    // Exactly at the limit the usual walk decides, and names the path.
    let at = format!(
        "requirements: {{capabilities: [x]}}\ncontext: {}1{}\n",
        "{a: ".repeat(31),
        "}".repeat(31)
    );
    parse_request("req.yaml", &at, Format::Yaml).unwrap_or_else(|e| panic!("{e}"));
    let over = format!(
        "requirements: {{capabilities: [x]}}\ncontext: {}1{}\n",
        "{a: ".repeat(32),
        "}".repeat(32)
    );
    let r = parse_request("req.yaml", &over, Format::Yaml)
        .err()
        .unwrap_or_else(|| panic!("accepted"));
    assert!(r.problems[0].path.starts_with("/context/a/a"), "{r}");
}
