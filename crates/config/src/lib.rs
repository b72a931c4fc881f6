//! caio-config: the server configuration — `caio.yaml`, `CAIO_*` environment overrides, and the
//! checks a configuration must pass before a server runs with it.
//!
//! One function builds a [`Config`] from a file and an environment ([`load`]); one function says
//! what is wrong with it ([`check`]). `caio-server` refuses to start in production mode when a
//! check fails, and `caio doctor` prints the same checks one line each, so an operator can test a
//! deployment's environment file before deploying it. The environment is passed in as a lookup
//! function rather than read from the process, so doctor can check a file that is not the
//! environment it runs in, and tests need no global state.

mod checks;
pub mod descriptors;
mod env;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use checks::{Check, CheckStatus, check, check_connections};
pub use env::{ENV_VARS, EnvVar};

/// Largest accepted configuration file.
const MAX_CONFIG_BYTES: u64 = 256 * 1024;

/// How strictly the server treats its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A laptop: generated admin key, anonymous clients allowed unless `auth.strict`.
    #[default]
    Development,
    /// A deployment: every check must pass before the server starts.
    Production,
}

impl Mode {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Development => "development",
            Mode::Production => "production",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "development" | "dev" => Ok(Mode::Development),
            "production" | "prod" => Ok(Mode::Production),
            other => Err(format!(
                "`{other}` is not a mode (expected development or production)"
            )),
        }
    }
}

/// Where decision traces are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceBackend {
    /// Append-only hash-chained file under `<data_dir>/traces`.
    #[default]
    File,
    /// Process memory (lost on restart; for tests and demos).
    Memory,
}

/// Whether a trace is on disk or only written to the OS when the response leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceDurability {
    /// Written to the OS (survives a process crash, not a power loss).
    #[default]
    Buffered,
    /// Also fdatasync'ed, once per group of concurrent requests.
    Fsync,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// Human-readable lines.
    Text,
}

/// The whole server configuration. Every field has a default; see docs/configuration.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// development or production.
    pub mode: Mode,
    /// Socket address to listen on.
    pub listen: String,
    /// Directory for traces, the audit log, policy versions, keys and secrets.
    pub data_dir: PathBuf,
    /// Contracts to register at start (a directory of YAML/JSON files).
    pub services_dir: Option<PathBuf>,
    /// A policy set to activate at start when the store has no active version.
    pub policies_file: Option<PathBuf>,
    /// Authentication.
    pub auth: AuthConfig,
    /// Cross-origin requests.
    pub cors: CorsConfig,
    /// Request size and time limits.
    pub limits: LimitsConfig,
    /// Per-principal rate limit.
    pub rate_limit: RateLimitConfig,
    /// Decision traces.
    pub traces: TracesConfig,
    /// Inbound service webhooks.
    pub webhooks: WebhooksConfig,
    /// Redis (cluster mode).
    pub redis: RedisConfig,
    /// Logging.
    pub log: LogConfig,
    /// Execution: retries, fallbacks, circuit breakers, the outbound address guard.
    pub gateway: GatewaySettings,
    /// The license key and how strictly it is enforced.
    pub license: LicenseSettings,
    /// Seconds to drain in-flight requests after SIGTERM/SIGINT.
    pub shutdown_grace_s: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            mode: Mode::Development,
            listen: "127.0.0.1:8080".to_owned(),
            data_dir: PathBuf::from("./data"),
            services_dir: None,
            policies_file: None,
            auth: AuthConfig::default(),
            cors: CorsConfig::default(),
            limits: LimitsConfig::default(),
            rate_limit: RateLimitConfig::default(),
            traces: TracesConfig::default(),
            webhooks: WebhooksConfig::default(),
            redis: RedisConfig::default(),
            log: LogConfig::default(),
            gateway: GatewaySettings::default(),
            license: LicenseSettings::default(),
            shutdown_grace_s: 30,
        }
    }
}

/// How a missing or invalid license is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LicenseEnforcement {
    /// No license checks.
    #[default]
    Off,
    /// Everything works; each request without a valid license carries a warning header, a log
    /// line and a metric.
    Permissive,
    /// Routing and execution answer 403 LICENSE_INVALID without a valid license.
    Enforced,
}

/// The license.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LicenseSettings {
    /// The key (`CAIO-v2-…`).
    pub key: Option<Secret>,
    /// The vendor's Ed25519 public key: SPKI PEM text, or a path to a PEM file.
    pub public_key: Option<String>,
    /// A path to the vendor's signed revocation list.
    pub revocations: Option<PathBuf>,
    /// off, permissive or enforced.
    pub enforcement: LicenseEnforcement,
    /// Days an expired license keeps working (with warnings) before enforcement.
    pub grace_days: u64,
}

impl Default for LicenseSettings {
    fn default() -> LicenseSettings {
        LicenseSettings {
            key: None,
            public_key: None,
            revocations: None,
            enforcement: LicenseEnforcement::Off,
            grace_days: 7,
        }
    }
}

/// What the gateway does with an answer that broke a guarantee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnViolation {
    /// Return the answer with a warning.
    #[default]
    Warn,
    /// Try the next candidate.
    Failover,
}

/// Circuit breaker settings (per service).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerSettings {
    /// Failures in a row that open the circuit.
    pub consecutive_failures: u32,
    /// Failure rate over the window that opens it.
    pub failure_rate: f64,
    /// Calls in the window before the rate counts.
    pub min_calls: u32,
    /// Calls in the window.
    pub window: usize,
    /// Seconds an open circuit stays open.
    pub cooldown_s: u64,
}

impl Default for BreakerSettings {
    fn default() -> BreakerSettings {
        BreakerSettings {
            consecutive_failures: 5,
            failure_rate: 0.5,
            min_calls: 20,
            window: 100,
            cooldown_s: 30,
        }
    }
}

/// Execution settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewaySettings {
    /// Attempts per service (1: no retry).
    pub max_attempts: u32,
    /// Candidates tried after the chosen one.
    pub max_fallbacks: u32,
    /// Time for a whole execution when the request names none, ms.
    pub deadline_ms: u64,
    /// First retry delay, ms (doubles per attempt, with jitter).
    pub backoff_base_ms: u64,
    /// Largest retry delay, ms.
    pub backoff_max_ms: u64,
    /// Longest `Retry-After` honoured, seconds.
    pub max_retry_after_s: u64,
    /// warn or failover.
    pub on_violation: OnViolation,
    /// Largest upstream response read, bytes.
    pub max_response_bytes: usize,
    /// Circuit breakers.
    pub breaker: BreakerSettings,
    /// Call loopback and private addresses (default: yes in development, no in production).
    pub allow_private_addresses: Option<bool>,
    /// Private ranges callable in production (`10.1.0.0/16`, `fd00:1::/64`, single addresses).
    pub allowed_private_ranges: Vec<String>,
    /// Start with execution stopped (every execute answers 503 EMERGENCY_STOP).
    pub emergency_stop: bool,
    /// Environment variables contracts may name as `credential_env` besides `CAIO_UPSTREAM_*`
    /// (for example `OPENAI_API_KEY`). Any other name is refused: whoever registers a contract
    /// must not be able to have the server send them an arbitrary variable.
    pub credential_envs: Vec<String>,
    /// Seconds between active probes of every contract's `health` endpoint (0: no probes).
    pub probe_interval_s: u64,
    /// How long an approval token from `POST /api/v1/route?approve=true` stays valid, seconds.
    pub approval_ttl_s: u64,
    /// How long the outcome of an `Idempotency-Key` is kept, seconds.
    pub idempotency_ttl_s: u64,
    /// `model` names the OpenAI-compatible endpoints accept besides service ids: alias →
    /// capability (`fast-chat: chat_completion`).
    pub model_aliases: BTreeMap<String, String>,
}

impl Default for GatewaySettings {
    fn default() -> GatewaySettings {
        GatewaySettings {
            max_attempts: 3,
            max_fallbacks: 2,
            deadline_ms: 9_000,
            backoff_base_ms: 50,
            backoff_max_ms: 2_000,
            max_retry_after_s: 10,
            on_violation: OnViolation::Warn,
            max_response_bytes: 8 << 20,
            breaker: BreakerSettings::default(),
            allow_private_addresses: None,
            allowed_private_ranges: Vec::new(),
            emergency_stop: false,
            credential_envs: Vec::new(),
            probe_interval_s: 10,
            approval_ttl_s: 900,
            idempotency_ttl_s: 86_400,
            model_aliases: BTreeMap::new(),
        }
    }
}

impl GatewaySettings {
    /// Whether a contract may name `name` as its `credential_env`: `CAIO_UPSTREAM_*`, or a name
    /// the operator listed that is not another `CAIO_*` setting.
    pub fn credential_env_allowed(&self, name: &str) -> bool {
        name.starts_with("CAIO_UPSTREAM_")
            || (!name.starts_with("CAIO_") && self.credential_envs.iter().any(|n| n == name))
    }

    /// Whether private addresses may be called in `mode`.
    pub fn private_allowed(&self, mode: Mode) -> bool {
        self.allow_private_addresses
            .unwrap_or(mode == Mode::Development)
    }
}

/// A secret string: never printed by `Debug` or serialized back in clear.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The secret itself; call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes>)", self.0.len())
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// Authentication settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Verify credentials at all (off only in development).
    pub enabled: bool,
    /// Require a credential on every endpoint but `/health*`, `/metrics` and `/api/v1/version`.
    /// When false (development only), a request without credentials acts as an anonymous
    /// client of tenant `public`. Production requires true.
    pub strict: Option<bool>,
    /// An admin API key accepted as `Authorization: Bearer <key>` (at least 32 characters).
    pub bootstrap_admin_key: Option<Secret>,
    /// JWT bearer tokens.
    pub jwt: JwtSettings,
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            enabled: true,
            strict: None,
            bootstrap_admin_key: None,
            jwt: JwtSettings::default(),
        }
    }
}

impl AuthConfig {
    /// Whether credentials are required, given the mode (production defaults to strict).
    pub fn is_strict(&self, mode: Mode) -> bool {
        self.strict.unwrap_or(mode == Mode::Production)
    }
}

/// JWT verification keys and expected claims.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtSettings {
    /// Shared secret for HS256 (at least 32 bytes).
    pub hs256_secret: Option<Secret>,
    /// Files holding Ed25519 public keys (SPKI PEM) for EdDSA.
    pub eddsa_public_key_files: Vec<PathBuf>,
    /// Required `iss`.
    pub issuer: Option<String>,
    /// Required `aud`.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, seconds.
    pub leeway_s: u64,
}

impl Default for JwtSettings {
    fn default() -> JwtSettings {
        JwtSettings {
            hs256_secret: None,
            eddsa_public_key_files: Vec::new(),
            issuer: None,
            audience: None,
            leeway_s: 30,
        }
    }
}

impl JwtSettings {
    /// Whether any JWT key is configured.
    pub fn configured(&self) -> bool {
        self.hs256_secret.is_some() || !self.eddsa_public_key_files.is_empty()
    }
}

/// CORS allowlist.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Exact origins (`https://console.example.com`); empty means no cross-origin access.
    pub allowed_origins: Vec<String>,
}

/// Size and time limits for one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request body, bytes.
    pub body_bytes: usize,
    /// Longest time to answer one request, milliseconds.
    pub request_timeout_ms: u64,
    /// Longest wait for a request's head (request line and headers), milliseconds, counted from
    /// the connection's start or the end of the previous response: a connection that does not
    /// deliver a complete head in time (a slow or idle client) is closed.
    pub header_timeout_ms: u64,
    /// Most client connections served at once; further connections wait in the listen backlog
    /// until one closes.
    pub max_connections: usize,
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        LimitsConfig {
            body_bytes: 1024 * 1024,
            request_timeout_ms: 10_000,
            header_timeout_ms: 30_000,
            max_connections: 10_000,
        }
    }
}

/// Token bucket per authenticated principal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Apply the limit.
    pub enabled: bool,
    /// Sustained requests per second.
    pub per_second: f64,
    /// Bucket size (requests allowed at once).
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> RateLimitConfig {
        RateLimitConfig {
            enabled: true,
            per_second: 1000.0,
            burst: 2000,
        }
    }
}

/// Where traces go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracesConfig {
    /// file or memory.
    pub backend: TraceBackend,
    /// buffered or fsync.
    pub durability: TraceDurability,
    /// Records the file store's in-memory index keeps (about 100 bytes each), newest first in
    /// whole chunks of 32,768; older records stay in the file. 0 keeps all.
    pub index_max_records: u64,
    /// Seal the active trace file as `traces-<first seq>.jsonl` and start a new one once it
    /// reaches this many bytes (at least 1 MiB); 0 never does.
    pub segment_bytes: u64,
    /// Sealed trace segments kept; the oldest beyond it are deleted. 0 keeps all.
    pub retain_segments: u64,
    /// Drop-behind window of the file store (at least 1 MiB; 0 is off): each time the active
    /// trace file grows by this many bytes, the writeback of the window before the last starts
    /// and the window before that leaves the page cache, so the log keeps about three windows
    /// cached instead of up to a whole segment.
    pub writeback_bytes: u64,
}

impl Default for TracesConfig {
    fn default() -> TracesConfig {
        TracesConfig {
            backend: TraceBackend::default(),
            durability: TraceDurability::default(),
            index_max_records: 10_000_000,
            segment_bytes: 1 << 30,
            retain_segments: 0,
            writeback_bytes: 4 << 20,
        }
    }
}

/// Inbound webhooks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Refuse unsigned webhook calls (development may turn this off; production may not).
    pub signature_required: bool,
    /// Accepted clock difference and replay memory, seconds.
    pub replay_window_s: u64,
    /// Per-service secrets provisioned by the operator (service id → secret, at least 32 bytes);
    /// secrets generated by the server live in the data directory.
    pub secrets: BTreeMap<String, Secret>,
}

impl Default for WebhooksConfig {
    fn default() -> WebhooksConfig {
        WebhooksConfig {
            signature_required: true,
            replay_window_s: 300,
            secrets: BTreeMap::new(),
        }
    }
}

/// Redis (cluster mode; the embedded default needs none).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db`.
    pub url: Option<Secret>,
    /// Refuse to start without a reachable Redis.
    pub required: bool,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter (`info`, `warn,caio_api=debug`).
    pub level: String,
    /// json or text.
    pub format: LogFormat,
    /// Log one line per request (at info).
    pub access: bool,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            level: "info".to_owned(),
            format: LogFormat::Json,
            access: true,
        }
    }
}

/// A configuration that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// The file is not a valid configuration.
    #[error("{path}:{line}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// 1-based line, 0 when unknown.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// An environment variable has a value of the wrong shape.
    #[error("{var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        message: String,
    },
}

/// Builds the configuration: defaults, then the file (`path`, or `CAIO_CONFIG` from `env`),
/// then every `CAIO_*` variable `env` returns.
pub fn load(
    path: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let from_env = env("CAIO_CONFIG").map(PathBuf::from);
    let path = path.map(Path::to_path_buf).or(from_env);
    let mut config = match &path {
        Some(p) => parse_file(p)?,
        None => Config::default(),
    };
    env::apply(&mut config, env)?;
    Ok(config)
}

/// Parses a configuration file (YAML; JSON is YAML too).
pub fn parse_file(path: &Path) -> Result<Config, ConfigError> {
    use std::io::Read;
    let display = path.display().to_string();
    let io = |e: std::io::Error| ConfigError::Io {
        path: display.clone(),
        message: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::Io {
            path: display,
            message: format!("file is larger than the {MAX_CONFIG_BYTES}-byte limit"),
        });
    }
    parse_str(&text, &display)
}

/// Parses configuration text; `origin` names it in errors.
pub fn parse_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
    if text.trim().is_empty() {
        return Ok(Config::default());
    }
    serde_norway::from_str(text).map_err(|e| ConfigError::Parse {
        path: origin.to_owned(),
        line: e.location().map_or(0, |l| l.line()),
        message: e.to_string(),
    })
}

/// Reads a `KEY=VALUE` environment file (dotenv syntax) into a map, for `caio doctor`.
pub fn read_env_file(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let display = path.display().to_string();
    let iter = dotenvy::from_path_iter(path).map_err(|e| ConfigError::Io {
        path: display.clone(),
        message: e.to_string(),
    })?;
    let mut map = BTreeMap::new();
    for item in iter {
        let (k, v) = item.map_err(|e| ConfigError::Parse {
            path: display.clone(),
            line: 0,
            message: e.to_string(),
        })?;
        map.insert(k, v);
    }
    Ok(map)
}

#[cfg(test)]
mod tests;
