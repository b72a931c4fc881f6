//! The service contract: what a service can do, what it guarantees, what it costs, how it treats
//! data, who may use it and how to call it (DESIGN.md §3).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::limits::{MAX_CONSTRAINTS, MAX_GUARANTEES};

/// The identifier pattern shared by services, tenants, capabilities and policies.
pub const ID_PATTERN: &str = "^[a-z0-9][a-z0-9_-]{0,62}$";

/// A whole contract document: `apiVersion`, `kind` and the `service` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "ServiceContract")]
pub struct ServiceContract {
    /// Always `caio/v1` for this version of the format.
    #[serde(rename = "apiVersion")]
    #[schemars(pattern(r"^caio/v1$"))]
    pub api_version: String,
    /// Always `ServiceContract`.
    #[schemars(pattern(r"^ServiceContract$"))]
    pub kind: String,
    /// The service itself.
    pub service: ServiceSpec,
}

/// Everything CAIO knows about one service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// How to call the service.
    pub api: ApiSpec,
    /// What the service can do. Non-empty, no duplicates.
    #[schemars(
        length(min = 1, max = 64),
        inner(pattern(r"^[a-z0-9][a-z0-9_.-]{0,62}$"))
    )]
    pub capabilities: Vec<String>,
    /// What inputs the service admits (`languages: [en, de]`, `max_input_tokens: 4096`).
    #[serde(default)]
    #[schemars(extend("maxProperties" = MAX_CONSTRAINTS))]
    pub constraints: BTreeMap<String, ConstraintValue>,
    /// What a call costs.
    #[serde(default)]
    pub cost: Cost,
    /// Property → bound the service keeps (`accuracy: {min: 0.95}`, `determinism: true`).
    #[serde(default)]
    #[schemars(extend("maxProperties" = MAX_GUARANTEES))]
    pub guarantees: BTreeMap<String, Bound>,
    /// Stable identifier, `^[a-z0-9][a-z0-9_-]{0,62}$`.
    #[schemars(pattern(r"^[a-z0-9][a-z0-9_-]{0,62}$"))]
    pub id: String,
    /// Human-readable name.
    #[schemars(length(min = 1, max = 200))]
    pub name: String,
    /// How the service treats data.
    #[serde(default)]
    pub privacy: Privacy,
    /// Who may call the service.
    #[serde(default)]
    pub security: SecuritySpec,
    /// The owning tenant, or `public` for a service every tenant may use.
    #[serde(default = "public_tenant")]
    #[schemars(pattern(r"^[a-z0-9][a-z0-9_-]{0,62}$"))]
    pub tenant: String,
    /// Semantic version of the service (semver 2.0).
    #[schemars(length(min = 1, max = 64))]
    pub version: String,
}

fn public_tenant() -> String {
    "public".to_owned()
}

/// A bound on one guarantee property: a numeric range or a boolean flag.
// Deserialized by a visitor in untagged.rs, not by serde's untagged derive.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Bound {
    /// `determinism: true`.
    Flag(bool),
    /// `{min: 0.9}`, `{max: 120}` or both.
    Range(Range),
}

/// A numeric range; at least one side is present.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("minProperties" = 1))]
pub struct Range {
    /// Upper bound (the property is at most this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Lower bound (the property is at least this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
}

impl Bound {
    /// The numeric range, when this is one.
    pub fn range(&self) -> Option<&Range> {
        match self {
            Bound::Range(r) => Some(r),
            Bound::Flag(_) => None,
        }
    }
    /// The flag, when this is one.
    pub fn flag(&self) -> Option<bool> {
        match self {
            Bound::Flag(b) => Some(*b),
            Bound::Range(_) => None,
        }
    }
}

/// A contract constraint value: a list of admitted values, a number (usually a `max_*` limit), a
/// string or a boolean.
// Deserialized by a visitor in untagged.rs, not by serde's untagged derive.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum ConstraintValue {
    /// `true` / `false`.
    Bool(bool),
    /// A number, such as `max_input_tokens: 4096`.
    Number(f64),
    /// A single string value.
    Text(String),
    /// A list of admitted values, such as `languages: [en, de]`.
    List(#[schemars(length(max = 1024))] Vec<String>),
}

/// What a call costs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cost {
    /// ISO 4217 currency code.
    #[serde(default = "usd")]
    #[schemars(pattern(r"^[A-Z]{3}$"))]
    pub currency: String,
    /// Price per thousand input tokens.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub per_1k_tokens: f64,
    /// Fixed price of one request.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub per_request: f64,
}

fn usd() -> String {
    "USD".to_owned()
}

impl Default for Cost {
    fn default() -> Self {
        Cost {
            per_request: 0.0,
            per_1k_tokens: 0.0,
            currency: usd(),
        }
    }
}

/// Where data goes once it reaches the service.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DataLocality {
    /// Runs on the operator's own machines.
    #[default]
    Local,
    /// Runs on the caller's device.
    OnDevice,
    /// Runs with a provider inside a named region.
    Region,
    /// Runs with a third party anywhere.
    External,
}

impl DataLocality {
    /// The wire name (`local`, `on_device`, `region`, `external`).
    pub fn as_str(self) -> &'static str {
        match self {
            DataLocality::Local => "local",
            DataLocality::OnDevice => "on_device",
            DataLocality::Region => "region",
            DataLocality::External => "external",
        }
    }
}

/// How the service treats data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Privacy {
    /// Where data goes.
    #[serde(default = "external")]
    pub data_locality: DataLocality,
    /// Whether data is encrypted in transit and at rest.
    #[serde(default)]
    pub encryption: bool,
    /// How long the service keeps request data, in days.
    #[serde(default)]
    #[schemars(range(max = 36500))]
    pub retention_days: u32,
}

fn external() -> DataLocality {
    DataLocality::External
}

impl Default for Privacy {
    fn default() -> Self {
        Privacy {
            data_locality: DataLocality::External,
            encryption: false,
            retention_days: 0,
        }
    }
}

/// Who may call the service.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecuritySpec {
    /// Lowest principal trust level admitted (0–10).
    #[serde(default)]
    #[schemars(range(max = 10))]
    pub min_trust_level: u8,
    /// A caller needs at least one of these permissions (none listed: anyone authenticated).
    #[serde(default)]
    #[schemars(length(max = 256), inner(length(min = 1, max = 128)))]
    pub required_permissions: Vec<String>,
}

/// Which wire protocol the gateway speaks to the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Adapter {
    /// The contract's `execute` endpoint, JSON in and out.
    HttpJson,
    /// OpenAI chat completions.
    OpenaiChat,
    /// OpenAI embeddings.
    OpenaiEmbeddings,
    /// Anthropic messages.
    AnthropicMessages,
    /// The CAIO SDK's service protocol.
    CaioSdk,
}

/// How to call the service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiSpec {
    /// The wire protocol.
    #[serde(default = "http_json")]
    pub adapter: Adapter,
    /// `http://` or `https://` base URL.
    #[schemars(length(min = 1, max = 2048))]
    pub base_url: String,
    /// Name of the environment variable that holds the upstream credential, if any. The
    /// credential itself never appears in a contract.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[A-Z_][A-Z0-9_]{0,127}$"))]
    pub credential_env: Option<String>,
    /// Named endpoints (`execute`, `health`, ...).
    #[serde(default)]
    #[schemars(extend("maxProperties" = 32))]
    pub endpoints: BTreeMap<String, Endpoint>,
    /// The model name sent to `openai_*` and `anthropic_messages` services (for example
    /// `gpt-4o-mini`). It replaces any `model` in the caller's payload; without it the payload's
    /// `model` is sent, or the service id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub model: Option<String>,
    /// Per-attempt timeout in milliseconds.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 1, max = 600000))]
    pub timeout_ms: u64,
}

fn http_json() -> Adapter {
    Adapter::HttpJson
}

fn default_timeout() -> u64 {
    2000
}

/// One HTTP endpoint of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// HTTP method.
    #[schemars(pattern(r"^(GET|POST|PUT|PATCH|DELETE|HEAD)$"))]
    pub method: String,
    /// Absolute path, starting with `/`.
    #[schemars(pattern(r"^/"), length(max = 2048))]
    pub path: String,
}

impl ServiceContract {
    /// The service id.
    pub fn id(&self) -> &str {
        &self.service.id
    }
}
