//! JSON Schemas of the stable formats, generated with schemars and committed under `docs/schema/`
//! (a test fails when the committed files are stale), and the jsonschema validators built from them.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use schemars::JsonSchema;

use crate::model::ServiceContract;
use crate::policy::PolicySet;
use crate::request::{Principal, RouteRequest};

/// The documents CAIO parses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DocKind {
    /// A service contract.
    Contract,
    /// A route request.
    Request,
    /// A policy set.
    Policies,
    /// A principal.
    Principal,
}

impl DocKind {
    /// Every kind, in a fixed order.
    pub const ALL: [DocKind; 4] = [
        DocKind::Contract,
        DocKind::Request,
        DocKind::Policies,
        DocKind::Principal,
    ];

    /// File name of the committed schema under `docs/schema/`.
    pub fn file_name(self) -> &'static str {
        match self {
            DocKind::Contract => "service-contract.schema.json",
            DocKind::Request => "route-request.schema.json",
            DocKind::Policies => "policy-set.schema.json",
            DocKind::Principal => "principal.schema.json",
        }
    }

    /// A short human name.
    pub fn label(self) -> &'static str {
        match self {
            DocKind::Contract => "service contract",
            DocKind::Request => "route request",
            DocKind::Policies => "policy set",
            DocKind::Principal => "principal",
        }
    }
}

/// The generated JSON Schema of `kind`.
pub fn schema(kind: DocKind) -> serde_json::Value {
    fn of<T: JsonSchema>() -> serde_json::Value {
        schemars::schema_for!(T).to_value()
    }
    match kind {
        DocKind::Contract => of::<ServiceContract>(),
        DocKind::Request => of::<RouteRequest>(),
        DocKind::Policies => of::<PolicySet>(),
        DocKind::Principal => of::<Principal>(),
    }
}

/// The generated schema as pretty JSON text, exactly as committed.
pub fn schema_text(kind: DocKind) -> String {
    let mut text = serde_json::to_string_pretty(&schema(kind)).unwrap_or_default();
    text.push('\n');
    text
}

pub(crate) struct Compiled {
    pub validator: jsonschema::Validator,
    /// Every property name the schema knows, for "did you mean" suggestions.
    pub vocabulary: BTreeSet<String>,
}

/// The compiled validator of `kind`, built once per process.
pub(crate) fn compiled(kind: DocKind) -> Result<&'static Compiled, String> {
    static CELLS: [OnceLock<Result<Compiled, String>>; 4] = [
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
    ];
    let idx = match kind {
        DocKind::Contract => 0,
        DocKind::Request => 1,
        DocKind::Policies => 2,
        DocKind::Principal => 3,
    };
    CELLS[idx]
        .get_or_init(|| {
            let schema = schema(kind);
            let mut vocabulary = BTreeSet::new();
            collect_properties(&schema, &mut vocabulary);
            jsonschema::validator_for(&schema)
                .map(|validator| Compiled {
                    validator,
                    vocabulary,
                })
                .map_err(|e| {
                    format!(
                        "internal error: the {} schema does not compile: {e}",
                        kind.label()
                    )
                })
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn collect_properties(v: &serde_json::Value, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(serde_json::Value::Object(props)) = m.get("properties") {
                out.extend(props.keys().cloned());
            }
            for v in m.values() {
                collect_properties(v, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_properties(v, out)),
        _ => {}
    }
}

/// The closest known name to `unknown`, if it is a plausible typo (edit distance ≤ 2, or ≤ 3 for
/// long names).
pub(crate) fn suggest<'a>(
    unknown: &str,
    vocabulary: impl IntoIterator<Item = &'a String>,
) -> Option<&'a str> {
    let limit = if unknown.len() > 8 { 3 } else { 2 };
    vocabulary
        .into_iter()
        .map(|w| (levenshtein(unknown, w), w))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, w)| (*d, w.len()))
        .map(|(_, w)| w.as_str())
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_find_typos_only() {
        let vocab: Vec<String> = ["capabilities", "guarantees", "cost"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(suggest("capabilites", &vocab), Some("capabilities"));
        assert_eq!(suggest("garantees", &vocab), Some("guarantees"));
        assert_eq!(suggest("zebra", &vocab), None);
    }

    #[test]
    fn every_schema_compiles() {
        for kind in DocKind::ALL {
            assert!(compiled(kind).is_ok(), "{kind:?}");
        }
    }
}
