//! The operator's policy set: CEL rules over `request`, `service` and `principal` (DESIGN.md §3).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A policy set file: `policies: [...]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "PolicySet")]
pub struct PolicySet {
    /// The rules, evaluated in order; every applicable rule must hold.
    #[serde(default)]
    #[schemars(length(max = 4096))]
    pub policies: Vec<PolicyRule>,
}

/// One rule: when `when` holds for a request, `require` must hold for the chosen service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyRule {
    /// What the rule is for, shown in proofs and rejections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1000))]
    pub description: Option<String>,
    /// Unique id, `^[a-z0-9][a-z0-9_-]{0,62}$`.
    #[schemars(pattern(r"^[a-z0-9][a-z0-9_-]{0,62}$"))]
    pub id: String,
    /// CEL condition every service must satisfy while the rule applies.
    #[schemars(length(min = 1, max = 4096))]
    pub require: String,
    /// CEL condition; the rule applies when it is true (or cannot be evaluated). Default `true`.
    #[serde(default = "always", skip_serializing_if = "is_always")]
    #[schemars(length(min = 1, max = 4096))]
    pub when: String,
}

fn always() -> String {
    "true".to_owned()
}

fn is_always(s: &str) -> bool {
    s == "true"
}
