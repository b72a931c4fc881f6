//! `CAIO_*` environment overrides: one table, applied after the file.

use std::path::PathBuf;
use std::str::FromStr;

use crate::{
    Config, ConfigError, LicenseEnforcement, LogFormat, Mode, OnViolation, Secret, TraceBackend,
    TraceDurability,
};

/// One environment variable the server reads.
#[derive(Debug, Clone, Copy)]
pub struct EnvVar {
    /// Variable name.
    pub name: &'static str,
    /// The `caio.yaml` field it overrides.
    pub field: &'static str,
    /// Whether its value is a secret (never printed).
    pub secret: bool,
}

const fn var(name: &'static str, field: &'static str) -> EnvVar {
    EnvVar {
        name,
        field,
        secret: false,
    }
}

const fn secret(name: &'static str, field: &'static str) -> EnvVar {
    EnvVar {
        name,
        field,
        secret: true,
    }
}

/// Every variable, in the order docs/configuration.md lists them. `CAIO_CONFIG` names the file.
pub const ENV_VARS: &[EnvVar] = &[
    var("CAIO_MODE", "mode"),
    var("CAIO_LISTEN", "listen"),
    var("CAIO_DATA_DIR", "data_dir"),
    var("CAIO_SERVICES_DIR", "services_dir"),
    var("CAIO_POLICIES_FILE", "policies_file"),
    var("CAIO_AUTH_ENABLED", "auth.enabled"),
    var("CAIO_AUTH_STRICT", "auth.strict"),
    secret("CAIO_BOOTSTRAP_ADMIN_KEY", "auth.bootstrap_admin_key"),
    secret("CAIO_JWT_HS256_SECRET", "auth.jwt.hs256_secret"),
    var(
        "CAIO_JWT_EDDSA_PUBLIC_KEY_FILES",
        "auth.jwt.eddsa_public_key_files",
    ),
    var("CAIO_JWT_ISSUER", "auth.jwt.issuer"),
    var("CAIO_JWT_AUDIENCE", "auth.jwt.audience"),
    var("CAIO_JWT_LEEWAY_S", "auth.jwt.leeway_s"),
    var("CAIO_CORS_ALLOWED_ORIGINS", "cors.allowed_origins"),
    var("CAIO_MAX_BODY_BYTES", "limits.body_bytes"),
    var("CAIO_REQUEST_TIMEOUT_MS", "limits.request_timeout_ms"),
    var("CAIO_HEADER_TIMEOUT_MS", "limits.header_timeout_ms"),
    var("CAIO_MAX_CONNECTIONS", "limits.max_connections"),
    var("CAIO_RATE_LIMIT_ENABLED", "rate_limit.enabled"),
    var("CAIO_RATE_LIMIT_PER_SECOND", "rate_limit.per_second"),
    var("CAIO_RATE_LIMIT_BURST", "rate_limit.burst"),
    var("CAIO_TRACE_BACKEND", "traces.backend"),
    var("CAIO_EMERGENCY_STOP", "gateway.emergency_stop"),
    secret("CAIO_LICENSE_KEY", "license.key"),
    var("CAIO_LICENSE_PUBLIC_KEY", "license.public_key"),
    var("CAIO_LICENSE_REVOCATIONS", "license.revocations"),
    var("CAIO_LICENSE_ENFORCEMENT", "license.enforcement"),
    var("CAIO_LICENSE_GRACE_DAYS", "license.grace_days"),
    var("CAIO_GATEWAY_MAX_ATTEMPTS", "gateway.max_attempts"),
    var("CAIO_GATEWAY_MAX_FALLBACKS", "gateway.max_fallbacks"),
    var("CAIO_GATEWAY_DEADLINE_MS", "gateway.deadline_ms"),
    var("CAIO_GATEWAY_ON_VIOLATION", "gateway.on_violation"),
    var(
        "CAIO_GATEWAY_ALLOW_PRIVATE_ADDRESSES",
        "gateway.allow_private_addresses",
    ),
    var(
        "CAIO_GATEWAY_ALLOWED_PRIVATE_RANGES",
        "gateway.allowed_private_ranges",
    ),
    var("CAIO_TRACE_DURABILITY", "traces.durability"),
    var("CAIO_TRACE_INDEX_MAX_RECORDS", "traces.index_max_records"),
    var("CAIO_TRACE_SEGMENT_BYTES", "traces.segment_bytes"),
    var("CAIO_TRACE_RETAIN_SEGMENTS", "traces.retain_segments"),
    var("CAIO_TRACE_WRITEBACK_BYTES", "traces.writeback_bytes"),
    var(
        "CAIO_WEBHOOK_SIGNATURE_REQUIRED",
        "webhooks.signature_required",
    ),
    var("CAIO_WEBHOOK_REPLAY_WINDOW_S", "webhooks.replay_window_s"),
    secret("CAIO_REDIS_URL", "redis.url"),
    var("CAIO_REDIS_REQUIRED", "redis.required"),
    var("CAIO_LOG", "log.level"),
    var("CAIO_LOG_FORMAT", "log.format"),
    var("CAIO_ACCESS_LOG", "log.access"),
    var("CAIO_SHUTDOWN_GRACE_S", "shutdown_grace_s"),
];

fn parse<T: FromStr>(name: &str, value: &str, expected: &str) -> Result<T, ConfigError> {
    value.trim().parse().map_err(|_| ConfigError::Env {
        var: name.to_owned(),
        message: format!("expected {expected}"),
    })
}

fn boolean(name: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::Env {
            var: name.to_owned(),
            message: "expected true or false".to_owned(),
        }),
    }
}

fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn choice<T: serde::de::DeserializeOwned>(
    name: &str,
    value: &str,
    allowed: &str,
) -> Result<T, ConfigError> {
    serde_json::from_value(serde_json::Value::String(value.trim().to_ascii_lowercase())).map_err(
        |_| ConfigError::Env {
            var: name.to_owned(),
            message: format!("expected one of {allowed}"),
        },
    )
}

fn non_empty(value: &str) -> Option<String> {
    let v = value.trim();
    (!v.is_empty()).then(|| v.to_owned())
}

/// Applies every variable `env` knows to `config`.
pub(crate) fn apply(
    config: &mut Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    for v in ENV_VARS {
        let Some(value) = env(v.name) else { continue };
        let n = v.name;
        match n {
            "CAIO_MODE" => {
                config.mode = Mode::from_str(&value).map_err(|m| ConfigError::Env {
                    var: n.to_owned(),
                    message: m,
                })?
            }
            "CAIO_LISTEN" => config.listen = value.trim().to_owned(),
            "CAIO_DATA_DIR" => config.data_dir = PathBuf::from(value.trim()),
            "CAIO_SERVICES_DIR" => config.services_dir = non_empty(&value).map(PathBuf::from),
            "CAIO_POLICIES_FILE" => config.policies_file = non_empty(&value).map(PathBuf::from),
            "CAIO_AUTH_ENABLED" => config.auth.enabled = boolean(n, &value)?,
            "CAIO_AUTH_STRICT" => config.auth.strict = Some(boolean(n, &value)?),
            "CAIO_BOOTSTRAP_ADMIN_KEY" => {
                config.auth.bootstrap_admin_key = non_empty(&value).map(Secret::new)
            }
            "CAIO_JWT_HS256_SECRET" => {
                config.auth.jwt.hs256_secret = non_empty(&value).map(Secret::new)
            }
            "CAIO_JWT_EDDSA_PUBLIC_KEY_FILES" => {
                config.auth.jwt.eddsa_public_key_files =
                    list(&value).into_iter().map(PathBuf::from).collect()
            }
            "CAIO_JWT_ISSUER" => config.auth.jwt.issuer = non_empty(&value),
            "CAIO_JWT_AUDIENCE" => config.auth.jwt.audience = non_empty(&value),
            "CAIO_JWT_LEEWAY_S" => config.auth.jwt.leeway_s = parse(n, &value, "seconds")?,
            "CAIO_CORS_ALLOWED_ORIGINS" => config.cors.allowed_origins = list(&value),
            "CAIO_MAX_BODY_BYTES" => config.limits.body_bytes = parse(n, &value, "bytes")?,
            "CAIO_REQUEST_TIMEOUT_MS" => {
                config.limits.request_timeout_ms = parse(n, &value, "milliseconds")?
            }
            "CAIO_HEADER_TIMEOUT_MS" => {
                config.limits.header_timeout_ms = parse(n, &value, "milliseconds")?
            }
            "CAIO_MAX_CONNECTIONS" => {
                config.limits.max_connections = parse(n, &value, "a whole number of connections")?
            }
            "CAIO_RATE_LIMIT_ENABLED" => config.rate_limit.enabled = boolean(n, &value)?,
            "CAIO_RATE_LIMIT_PER_SECOND" => {
                config.rate_limit.per_second = parse(n, &value, "a number of requests")?
            }
            "CAIO_RATE_LIMIT_BURST" => {
                config.rate_limit.burst = parse(n, &value, "a whole number of requests")?
            }
            "CAIO_EMERGENCY_STOP" => config.gateway.emergency_stop = boolean(n, &value)?,
            "CAIO_LICENSE_KEY" => config.license.key = non_empty(&value).map(Secret::new),
            "CAIO_LICENSE_PUBLIC_KEY" => config.license.public_key = non_empty(&value),
            "CAIO_LICENSE_REVOCATIONS" => {
                config.license.revocations = non_empty(&value).map(PathBuf::from)
            }
            "CAIO_LICENSE_ENFORCEMENT" => {
                config.license.enforcement =
                    choice::<LicenseEnforcement>(n, &value, "off, permissive, enforced")?
            }
            "CAIO_LICENSE_GRACE_DAYS" => {
                config.license.grace_days = parse(n, &value, "a whole number of days")?
            }
            "CAIO_GATEWAY_MAX_ATTEMPTS" => {
                config.gateway.max_attempts = parse(n, &value, "a whole number of attempts")?
            }
            "CAIO_GATEWAY_MAX_FALLBACKS" => {
                config.gateway.max_fallbacks = parse(n, &value, "a whole number of candidates")?
            }
            "CAIO_GATEWAY_DEADLINE_MS" => {
                config.gateway.deadline_ms = parse(n, &value, "milliseconds")?
            }
            "CAIO_GATEWAY_ON_VIOLATION" => {
                config.gateway.on_violation = choice::<OnViolation>(n, &value, "warn, failover")?
            }
            "CAIO_GATEWAY_ALLOW_PRIVATE_ADDRESSES" => {
                config.gateway.allow_private_addresses = Some(boolean(n, &value)?)
            }
            "CAIO_GATEWAY_ALLOWED_PRIVATE_RANGES" => {
                config.gateway.allowed_private_ranges =
                    value.split(',').filter_map(non_empty).collect()
            }
            "CAIO_TRACE_BACKEND" => {
                config.traces.backend = choice::<TraceBackend>(n, &value, "file, memory")?
            }
            "CAIO_TRACE_INDEX_MAX_RECORDS" => {
                config.traces.index_max_records = parse(n, &value, "a whole number of records")?
            }
            "CAIO_TRACE_SEGMENT_BYTES" => {
                config.traces.segment_bytes = parse(n, &value, "a whole number of bytes")?
            }
            "CAIO_TRACE_RETAIN_SEGMENTS" => {
                config.traces.retain_segments = parse(n, &value, "a whole number of segments")?
            }
            "CAIO_TRACE_WRITEBACK_BYTES" => {
                config.traces.writeback_bytes = parse(n, &value, "a whole number of bytes")?
            }
            "CAIO_TRACE_DURABILITY" => {
                config.traces.durability = choice::<TraceDurability>(n, &value, "buffered, fsync")?
            }
            "CAIO_WEBHOOK_SIGNATURE_REQUIRED" => {
                config.webhooks.signature_required = boolean(n, &value)?
            }
            "CAIO_WEBHOOK_REPLAY_WINDOW_S" => {
                config.webhooks.replay_window_s = parse(n, &value, "seconds")?
            }
            "CAIO_REDIS_URL" => config.redis.url = non_empty(&value).map(Secret::new),
            "CAIO_REDIS_REQUIRED" => config.redis.required = boolean(n, &value)?,
            "CAIO_LOG" => config.log.level = value.trim().to_owned(),
            "CAIO_LOG_FORMAT" => config.log.format = choice::<LogFormat>(n, &value, "json, text")?,
            "CAIO_ACCESS_LOG" => config.log.access = boolean(n, &value)?,
            "CAIO_SHUTDOWN_GRACE_S" => config.shutdown_grace_s = parse(n, &value, "seconds")?,
            _ => {}
        }
    }
    Ok(())
}
