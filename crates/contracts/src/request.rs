//! The route request a client sends, and the principal it is sent as (DESIGN.md §3).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::Bound;

/// A request for a routing decision.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "RouteRequest")]
pub struct RouteRequest {
    /// Hard spending limits.
    #[serde(default)]
    pub budget: Budget,
    /// Free-form context (`priority`, `region`, ...) that policies may read.
    #[serde(default)]
    pub context: serde_json::Map<String, serde_json::Value>,
    /// What the caller says about its data.
    #[serde(default)]
    pub data: DataSpec,
    /// Optional complex field vectors for the field terms of the objective.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Fields>,
    /// The input for the service. Scanned for PII; never read by the routing math.
    #[serde(default = "empty_object")]
    pub payload: serde_json::Value,
    /// What the chosen service must offer.
    pub requirements: Requirements,
    /// Seed for the deterministic tie-break.
    #[serde(default)]
    pub seed: u64,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// What the chosen service must offer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Requirements {
    /// Every one of these capabilities.
    #[schemars(
        length(min = 1, max = 64),
        inner(pattern(r"^[a-z0-9][a-z0-9_.-]{0,62}$"))
    )]
    pub capabilities: Vec<String>,
    /// Key → value the contract's constraints must admit (`language: de` needs `de` in
    /// `languages`; `input_tokens: 3000` needs `max_input_tokens >= 3000`).
    #[serde(default)]
    #[schemars(extend("maxProperties" = 64))]
    pub constraints: BTreeMap<String, Scalar>,
    /// Property → bound the service must satisfy.
    #[serde(default)]
    #[schemars(extend("maxProperties" = 64))]
    pub guarantees: BTreeMap<String, Bound>,
    /// Trait flags the service must carry (`deterministic`, `private`, `low_latency`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub traits: Vec<TraitFlag>,
}

/// A named trait a request can demand outright.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TraitFlag {
    /// The service guarantees `determinism: true`.
    Deterministic,
    /// Data stays private: local, on-device or in-region.
    Private,
    /// The service's latency bound is short (latency supply ≥ 0.75, i.e. ≤ about 167 ms).
    LowLatency,
}

impl TraitFlag {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TraitFlag::Deterministic => "deterministic",
            TraitFlag::Private => "private",
            TraitFlag::LowLatency => "low_latency",
        }
    }
}

/// A scalar request constraint value.
// Deserialized by a visitor in untagged.rs, not by serde's untagged derive.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Scalar {
    /// A flag.
    Bool(bool),
    /// A number, compared against the contract's `max_<key>`.
    Number(f64),
    /// A value that must appear in the contract's `<key>s` list (or equal its `<key>`).
    Text(String),
}

/// Hard spending limits.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Highest acceptable estimated cost of the call, in the contract's currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_cost: Option<f64>,
}

/// What the caller says about its data.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// The caller declares the data sensitive. PII found in the payload also makes it so.
    #[serde(default)]
    pub sensitive: bool,
}

/// Complex field vectors, each element `[re, im]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fields {
    /// A context encoding c; when absent one is derived from `context`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4096))]
    pub context: Vec<[f64; 2]>,
    /// The intent field ψ.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4096))]
    pub intent: Vec<[f64; 2]>,
    /// The resonance (RFS) field ρ.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4096))]
    pub rfs: Vec<[f64; 2]>,
    /// The trait field τ (its band energies are trait demands).
    #[serde(default, rename = "trait", skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4096))]
    pub trait_field: Vec<[f64; 2]>,
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Principal")]
pub struct Principal {
    /// Stable principal id.
    #[schemars(length(min = 1, max = 128))]
    pub id: String,
    /// Permissions held.
    #[serde(default)]
    #[schemars(length(max = 256), inner(length(min = 1, max = 128)))]
    pub permissions: Vec<String>,
    /// Roles (`admin`, `operator`, `service`, `client`); used by the server, not by routing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub roles: Vec<String>,
    /// The principal's tenant (`public` for none).
    #[serde(default = "public")]
    #[schemars(pattern(r"^[a-z0-9][a-z0-9_-]{0,62}$"))]
    pub tenant: String,
    /// Trust level 0–10.
    #[serde(default)]
    #[schemars(range(max = 10))]
    pub trust_level: u8,
}

fn public() -> String {
    "public".to_owned()
}

impl Principal {
    /// The CLI's default principal: `{id: cli, tenant: public, permissions: [], trust_level: 0}`.
    pub fn cli_default() -> Principal {
        Principal {
            id: "cli".to_owned(),
            tenant: public(),
            permissions: Vec::new(),
            trust_level: 0,
            roles: Vec::new(),
        }
    }
}
