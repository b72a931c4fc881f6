//! A decision's JSON as the server writes it (`TraceBody::decision`): the members of the hashed
//! core quoted from the canonical JSON the id was computed from, the others serialized.

use std::fmt;

use caio_contracts::Principal;
use caio_contracts::decision::{CORE_MEMBERS, DECISION_MEMBERS, Decision};
use caio_gateway::SealedDecision;
use caio_trace::TraceBody;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use crate::support;

/// The top-level member names of a JSON object, in document order.
pub fn member_names(json: &[u8]) -> Result<Vec<String>, String> {
    struct Names;
    impl<'de> Visitor<'de> for Names {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
            let mut names = Vec::new();
            while let Some(name) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                names.push(name);
            }
            Ok(names)
        }
    }
    serde_json::Deserializer::from_slice(json)
        .deserialize_map(Names)
        .map_err(|e| e.to_string())
}

/// What must hold of the spliced JSON of any sealed decision: it reads back as the same decision
/// (every number the same value), with serde's members in serde's order, each member of the core
/// quoted byte for byte from the canonical JSON (RFC 8785, as a reference serializer writes it).
/// Returns whether the core was quoted (false: the body is serde's, for a core that does not
/// read back exactly).
pub fn check_spliced(sealed: &SealedDecision) -> Result<bool, String> {
    let d = sealed.decision();
    let spliced = TraceBody::decision(sealed).map_err(|e| e.to_string())?;
    let plain = TraceBody::serialize(d).map_err(|e| e.to_string())?;
    // Typed, then as JSON values whose numbers are compared as numbers (`120` and `120.0` are the
    // same number; a `serde_json::Value` inside the decision keeps the form it was read in).
    let back: Decision = serde_json::from_slice(&spliced).map_err(|e| e.to_string())?;
    let (back, original) = (
        serde_json::to_value(&back).map_err(|e| e.to_string())?,
        serde_json::to_value(d).map_err(|e| e.to_string())?,
    );
    if let Some(path) = first_difference(&back, &original, String::new()) {
        return Err(format!("the spliced JSON reads back differently at {path}"));
    }
    let names = member_names(&spliced)?;
    if names != member_names(&plain)? {
        return Err(format!("members {names:?} are not serde's"));
    }
    let expected: Vec<&str> = DECISION_MEMBERS
        .iter()
        .copied()
        .filter(|m| *m != "recorded_at" || d.recorded_at.is_some())
        .collect();
    if names != expected {
        return Err(format!("members {names:?}, expected {expected:?}"));
    }
    if spliced == plain {
        return Ok(false);
    }
    let core = serde_json::to_value(d.core()).map_err(|e| e.to_string())?;
    for member in CORE_MEMBERS {
        let canonical =
            serde_json_canonicalizer::to_vec(&core[member]).map_err(|e| e.to_string())?;
        let mut quoted = format!("\"{member}\":").into_bytes();
        quoted.extend_from_slice(&canonical);
        if !spliced
            .windows(quoted.len())
            .any(|w| w == quoted.as_slice())
        {
            return Err(format!(
                "`{member}` is not quoted as its canonical JSON {}",
                String::from_utf8_lossy(&canonical)
            ));
        }
    }
    Ok(true)
}

/// Where two JSON values differ, numbers compared by value: integers exactly, others as doubles.
fn first_difference(a: &Value, b: &Value, path: String) -> Option<String> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let same = match (x.as_i128(), y.as_i128()) {
                (Some(i), Some(j)) => i == j,
                _ => x.as_f64() == y.as_f64(),
            };
            (!same).then(|| format!("{path}: {x} against {y}"))
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (x, y))| first_difference(x, y, format!("{path}/{i}"))),
        (Value::Object(x), Value::Object(y)) if x.len() == y.len() => {
            x.iter().find_map(|(k, v)| match y.get(k) {
                Some(w) => first_difference(v, w, format!("{path}/{k}")),
                None => Some(format!("{path}/{k}: missing")),
            })
        }
        _ => (a != b).then(|| format!("{path}: {a} against {b}")),
    }
}

fn sealed(request: &str, who: &Principal) -> SealedDecision {
    support::router()
        .route_sealed(&support::request_from_yaml(request), who)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(support::fixtures().join("requests").join(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn the_servers_decision_json_reads_back_as_the_decision() {
    let cases = [
        ("sentiment-de.yaml", "acme-analyst"),
        ("chat-with-pii.yaml", "acme-analyst"),
        ("chat-fields.yaml", "platform-admin"),
        ("translate-bulk.json", "platform-admin"),
    ];
    for (request, who) in cases {
        let mut s = sealed(&fixture(request), &support::principal(who));
        for at in [None, Some("2026-12-01T15:00:00.123Z".to_owned())] {
            s.set_recorded_at(at);
            let quoted = check_spliced(&s).unwrap_or_else(|e| panic!("{request}: {e}"));
            assert!(quoted, "{request}: the core was not quoted");
        }
        let body = TraceBody::decision(&s).unwrap_or_else(|e| panic!("{e}"));
        let back: Decision = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{e}"));
        // The id still matches the content, and the recorded decision verifies offline.
        assert_eq!(caio_trace::check_integrity(&back), Ok(()), "{request}");
        assert_eq!(
            caio_trace::decision_id(&back).ok().as_deref(),
            Some(back.decision_id.as_str())
        );
        caio_gateway::verify(&back, support::contracts(), &support::policy_set())
            .unwrap_or_else(|e| panic!("{request}: {e}"));
    }
}

#[test]
fn the_servers_decision_json_quotes_numbers_in_their_canonical_form() {
    let s = sealed(
        &fixture("sentiment-de.yaml"),
        &support::principal("acme-analyst"),
    );
    let body = TraceBody::decision(&s).unwrap_or_else(|e| panic!("{e}"));
    let text = std::str::from_utf8(&body).unwrap_or_else(|e| panic!("{e}"));
    // The winner's latency bound, 120 ms: quoted from the canonical core in the proof and the
    // composed guarantees, serialized by serde in the ranking's terms (not part of the core).
    assert!(text.contains(r#""guarantees":{"accuracy":0.95,"cost":0.0004,"data_locality":"local","determinism":true,"encryption":true,"latency_ms":120,"#), "{text}");
    assert!(text.contains(r#""latency_ms":120.0,"#), "{text}");
    // Everything up to the ranking is where serde puts it.
    assert!(text.starts_with(&format!(
        r#"{{"decision_id":"{}","service_id":"sentiment-eu","score":"#,
        s.decision().decision_id
    )));
}

#[test]
fn a_core_that_would_not_read_back_exactly_is_serialized_instead() {
    // Policies read `request.context.tier`, so the proof quotes it: an integer beyond 2^53 (which
    // RFC 8785 writes as the nearest double) and a negative zero (written `0`).
    for tier in ["9007199254740993", "-0.0"] {
        let request = format!(
            "requirements: {{capabilities: [sentiment_analysis]}}\ncontext: {{tier: {tier}}}\n"
        );
        let s = sealed(&request, &support::principal("acme-analyst"));
        let operands = &s.decision().proof.rules.operands;
        assert!(
            operands.contains_key("request.context.tier"),
            "the proof quotes the tier: {operands:?}"
        );
        assert_eq!(check_spliced(&s), Ok(false), "tier {tier}");
        let body = TraceBody::decision(&s).unwrap_or_else(|e| panic!("{e}"));
        let plain = TraceBody::serialize(s.decision()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(body, plain);
        let text = std::str::from_utf8(&body).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            text.contains(&format!(r#""request.context.tier":{tier}"#)),
            "{text}"
        );
    }
    // Within ±2^53 the core is quoted.
    let s = sealed(
        "requirements: {capabilities: [sentiment_analysis]}\ncontext: {tier: 9007199254740992}\n",
        &support::principal("acme-analyst"),
    );
    assert_eq!(check_spliced(&s), Ok(true));
}

#[test]
fn sealing_gives_the_id_route_gives() {
    let request = support::request_from_yaml(&fixture("chat-with-pii.yaml"));
    let who = support::principal("acme-analyst");
    let router = support::router();
    let plain = router
        .route(&request, &who)
        .unwrap_or_else(|e| panic!("{e}"));
    let sealed = router
        .route_sealed(&request, &who)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sealed.decision(), &plain);
    let resealed = SealedDecision::seal(plain.clone()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resealed.decision(), &plain);
}
