//! The checks a configuration must pass: the server runs them at start (production refuses to
//! start on any failure) and `caio doctor` prints them.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::{Config, LicenseEnforcement, Mode};

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum CheckStatus {
    /// Fine.
    Pass,
    /// The server would refuse this configuration (in production), or it cannot work.
    Fail,
}

/// One named check with a sentence saying what was found. Details never contain secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Short stable name (`auth.enabled`, `cors.allowed_origins`, ...).
    pub name: &'static str,
    /// Pass or fail.
    pub status: CheckStatus,
    /// What was found.
    pub detail: String,
}

impl Check {
    /// A passed check.
    pub fn pass(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            status: CheckStatus::Pass,
            detail: detail.into(),
        }
    }
    /// A failed check.
    pub fn fail(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            status: CheckStatus::Fail,
            detail: detail.into(),
        }
    }
    /// Fails in production; passes with a note in development.
    fn production_only(name: &'static str, mode: Mode, detail: impl Into<String>) -> Check {
        let detail = detail.into();
        match mode {
            Mode::Production => Check::fail(name, detail),
            Mode::Development => Check::pass(name, format!("{detail} (allowed in development)")),
        }
    }
    /// Whether it passed.
    pub fn passed(&self) -> bool {
        self.status == CheckStatus::Pass
    }
}

/// PASS with the value when it lies in `range`, else FAIL naming the range (`unit` follows the
/// range's end, e.g. `" ms"`).
fn within<T>(name: &'static str, value: T, range: RangeInclusive<T>, unit: &str) -> Check
where
    T: PartialOrd + std::fmt::Display,
{
    if range.contains(&value) {
        Check::pass(name, value.to_string())
    } else {
        Check::fail(
            name,
            format!(
                "{value} is outside {}..={}{unit}",
                range.start(),
                range.end()
            ),
        )
    }
}

/// Secrets people paste from examples; a production secret must not be one of them.
const KNOWN_DEFAULTS: &[&str] = &[
    "changeme",
    "change-me",
    "change_me",
    "secret",
    "password",
    "admin",
    "caio",
    "test",
    "example",
    "default",
    "development",
    "dev",
];

/// Minimum length of a shared secret (admin key, HS256 secret, webhook secret).
pub const MIN_SECRET_LEN: usize = 32;
/// The smallest `traces.segment_bytes` other than 0 (never seal).
pub const MIN_TRACE_SEGMENT_BYTES: u64 = 1 << 20;
/// The smallest `traces.writeback_bytes` other than 0 (off): a smaller window would ask the
/// kernel for a writeback every few hundred decisions for no gain.
pub const MIN_TRACE_WRITEBACK_BYTES: u64 = 1 << 20;

/// The check of a byte size that is 0 (`off.0` says what that does) or at least `min` (a whole
/// number of MiB); `on` describes an accepted size.
fn bytes_or_off(
    name: &'static str,
    value: u64,
    min: u64,
    off: (&str, &str),
    on: impl FnOnce() -> String,
) -> Check {
    if value == 0 {
        Check::pass(name, off.0)
    } else if value < min {
        Check::fail(
            name,
            format!(
                "{value} is under the minimum of {min} bytes ({} MiB); 0 {}",
                min >> 20,
                off.1
            ),
        )
    } else {
        Check::pass(name, on())
    }
}

/// Why a secret is weak, if it is.
fn weak_secret(s: &str) -> Option<String> {
    if s.len() < MIN_SECRET_LEN {
        return Some(format!(
            "is {} characters long; at least {MIN_SECRET_LEN} are required",
            s.len()
        ));
    }
    let lower = s.to_ascii_lowercase();
    if KNOWN_DEFAULTS
        .iter()
        .any(|d| lower.trim_matches(|c: char| !c.is_ascii_alphanumeric()) == *d)
        || lower.contains("changeme")
        || lower.contains("change-me")
        || lower.contains("replace-me")
        || lower.contains("example")
    {
        return Some("looks like a placeholder value".to_owned());
    }
    let mut distinct: Vec<char> = s.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 8 {
        return Some(format!(
            "uses only {} distinct characters; generate it randomly",
            distinct.len()
        ));
    }
    None
}

/// Whether `origin` is `scheme://host[:port]` with no path, query or wildcard.
fn origin_ok(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    if scheme != "http" && scheme != "https" {
        return false;
    }
    !rest.is_empty()
        && !rest.contains(['/', '?', '#', '*', ' ', '@'])
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
}

/// Every check of a configuration that needs no I/O beyond reading small key files.
pub fn check(config: &Config) -> Vec<Check> {
    let mode = config.mode;
    let mut out = vec![Check::pass("mode", mode.as_str())];

    out.push(match config.listen.parse::<SocketAddr>() {
        Ok(addr) => Check::pass("listen", addr.to_string()),
        Err(_) => Check::fail(
            "listen",
            format!(
                "`{}` is not a socket address such as 127.0.0.1:8080",
                config.listen
            ),
        ),
    });

    out.push(if config.data_dir.as_os_str().is_empty() {
        Check::fail("data_dir", "is empty")
    } else {
        Check::pass("data_dir", config.data_dir.display().to_string())
    });

    let auth = &config.auth;
    out.push(if auth.enabled {
        Check::pass("auth.enabled", "credentials are verified")
    } else {
        Check::production_only("auth.enabled", mode, "authentication is off")
    });
    let strict = auth.is_strict(mode);
    out.push(if strict {
        Check::pass(
            "auth.strict",
            "every protected endpoint requires a credential",
        )
    } else {
        Check::production_only(
            "auth.strict",
            mode,
            "requests without credentials act as anonymous clients",
        )
    });

    // A strict server needs a way for someone to authenticate.
    let keys_file = config.data_dir.join("keys.json");
    let has_keys = std::fs::metadata(&keys_file).is_ok_and(|m| m.len() > 2);
    let sources = [
        auth.bootstrap_admin_key
            .is_some()
            .then_some("bootstrap admin key"),
        auth.jwt.configured().then_some("JWT keys"),
        has_keys.then_some("stored API keys"),
    ];
    let sources: Vec<&str> = sources.into_iter().flatten().collect();
    out.push(if !auth.enabled || !sources.is_empty() {
        Check::pass(
            "auth.credentials",
            if sources.is_empty() {
                "none needed".to_owned()
            } else {
                sources.join(", ")
            },
        )
    } else if mode == Mode::Development {
        Check::pass(
            "auth.credentials",
            "an admin key will be generated and printed once at start",
        )
    } else {
        Check::fail(
            "auth.credentials",
            "CAIO_AUTH_STRICT needs a credential source: set CAIO_BOOTSTRAP_ADMIN_KEY or JWT keys",
        )
    });

    if let Some(key) = &auth.bootstrap_admin_key {
        out.push(match weak_secret(key.expose()) {
            None => Check::pass("auth.bootstrap_admin_key", "set, strong"),
            Some(why) if key.expose().len() < MIN_SECRET_LEN => {
                Check::fail("auth.bootstrap_admin_key", why)
            }
            Some(why) => Check::production_only("auth.bootstrap_admin_key", mode, why),
        });
    }
    if let Some(secret) = &auth.jwt.hs256_secret {
        out.push(match weak_secret(secret.expose()) {
            None => Check::pass("auth.jwt.hs256_secret", "set, strong"),
            Some(why) if secret.expose().len() < MIN_SECRET_LEN => {
                Check::fail("auth.jwt.hs256_secret", why)
            }
            Some(why) => Check::production_only("auth.jwt.hs256_secret", mode, why),
        });
    }
    for file in &auth.jwt.eddsa_public_key_files {
        out.push(check_pem(file));
    }
    if auth.jwt.configured() {
        let missing: Vec<&str> = [
            auth.jwt.issuer.is_none().then_some("CAIO_JWT_ISSUER"),
            auth.jwt.audience.is_none().then_some("CAIO_JWT_AUDIENCE"),
        ]
        .into_iter()
        .flatten()
        .collect();
        out.push(if missing.is_empty() {
            Check::pass("auth.jwt.claims", "iss and aud are required")
        } else {
            Check::production_only(
                "auth.jwt.claims",
                mode,
                format!(
                    "{} not set: tokens the identity provider issued for other applications would be accepted",
                    missing.join(" and ")
                ),
            )
        });
    }
    // Traces, audit log, keys and policy versions share the backend setting.
    out.push(match config.traces.backend {
        crate::TraceBackend::File => Check::pass("traces.backend", "file (under data_dir)"),
        crate::TraceBackend::Memory => Check::production_only(
            "traces.backend",
            mode,
            "memory: traces, the audit log, API keys and policy versions are lost on restart",
        ),
    });

    let cors = &config.cors.allowed_origins;
    let bad: Vec<&String> = cors
        .iter()
        .filter(|o| o.as_str() != "*" && !origin_ok(o))
        .collect();
    out.push(if cors.iter().any(|o| o == "*") {
        Check::production_only("cors.allowed_origins", mode, "allows any origin (`*`)")
    } else if !bad.is_empty() {
        Check::fail(
            "cors.allowed_origins",
            format!(
                "not an origin (scheme://host[:port]): {}",
                bad.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    } else if cors.is_empty() {
        Check::pass("cors.allowed_origins", "no cross-origin access")
    } else {
        Check::pass("cors.allowed_origins", cors.join(", "))
    });

    let limits = &config.limits;
    out.push(within(
        "limits.body_bytes",
        limits.body_bytes,
        1024..=64 * 1024 * 1024,
        " bytes",
    ));
    out.push(within(
        "limits.request_timeout_ms",
        limits.request_timeout_ms,
        1..=600_000,
        " ms",
    ));
    out.push(within(
        "limits.header_timeout_ms",
        limits.header_timeout_ms,
        100..=600_000,
        " ms",
    ));
    out.push(within(
        "limits.max_connections",
        limits.max_connections,
        1..=1_000_000,
        "",
    ));

    let rl = &config.rate_limit;
    out.push(if !rl.enabled {
        Check::production_only("rate_limit", mode, "rate limiting is off")
    } else if !(rl.per_second.is_finite() && rl.per_second > 0.0) || rl.burst == 0 {
        Check::fail(
            "rate_limit",
            format!(
                "per_second must be a positive number and burst at least 1 (got {} and {})",
                rl.per_second, rl.burst
            ),
        )
    } else {
        Check::pass(
            "rate_limit",
            format!("{}/s, burst {}", rl.per_second, rl.burst),
        )
    });

    let seg = config.traces.segment_bytes;
    out.push(bytes_or_off(
        "traces.segment_bytes",
        seg,
        MIN_TRACE_SEGMENT_BYTES,
        ("one trace file that is never sealed", "never seals"),
        || match config.traces.retain_segments {
            0 => format!("sealed every {seg} bytes, every segment kept"),
            n => format!("sealed every {seg} bytes, the newest {n} sealed segments kept"),
        },
    ));
    let wb = config.traces.writeback_bytes;
    out.push(bytes_or_off(
        "traces.writeback_bytes",
        wb,
        MIN_TRACE_WRITEBACK_BYTES,
        (
            "off: the trace log's pages stay cached until their segment is sealed",
            "turns drop-behind off",
        ),
        || format!("written back and dropped from the page cache in windows of {wb} bytes"),
    ));

    let wh = &config.webhooks;
    out.push(if wh.signature_required {
        Check::pass(
            "webhooks.signature_required",
            "unsigned webhook calls are refused",
        )
    } else {
        Check::production_only(
            "webhooks.signature_required",
            mode,
            "CAIO_WEBHOOK_SIGNATURE_REQUIRED is off: unsigned webhook calls are accepted",
        )
    });
    out.push(within(
        "webhooks.replay_window_s",
        wh.replay_window_s,
        1..=3600,
        " s",
    ));
    let weak: Vec<&str> = wh
        .secrets
        .iter()
        .filter(|(_, s)| s.expose().len() < MIN_SECRET_LEN)
        .map(|(id, _)| id.as_str())
        .collect();
    if !wh.secrets.is_empty() {
        out.push(if weak.is_empty() {
            Check::pass(
                "webhooks.secrets",
                format!("{} provisioned", wh.secrets.len()),
            )
        } else {
            Check::fail(
                "webhooks.secrets",
                format!(
                    "shorter than {MIN_SECRET_LEN} bytes for: {}",
                    weak.join(", ")
                ),
            )
        });
    }

    let redis = &config.redis;
    out.push(match (&redis.url, redis.required) {
        (None, true) => Check::fail(
            "redis",
            "CAIO_REDIS_REQUIRED is set but CAIO_REDIS_URL is not",
        ),
        (None, false) => Check::pass("redis", "not used (embedded default)"),
        (Some(url), _) => {
            let u = url.expose();
            if u.starts_with("redis://") || u.starts_with("rediss://") || u.starts_with("unix://") {
                Check::pass("redis", "URL set")
            } else {
                Check::fail(
                    "redis",
                    "CAIO_REDIS_URL must start with redis://, rediss:// or unix://",
                )
            }
        }
    });

    let gw = &config.gateway;
    out.push(
        if (1..=10).contains(&gw.max_attempts) && gw.max_fallbacks <= 10 {
            Check::pass(
                "gateway.retries",
                format!(
                    "{} attempt(s) per service, {} fallback(s)",
                    gw.max_attempts, gw.max_fallbacks
                ),
            )
        } else {
            Check::fail(
                "gateway.retries",
                format!(
                    "max_attempts must be 1–10 and max_fallbacks 0–10 (got {} and {})",
                    gw.max_attempts, gw.max_fallbacks
                ),
            )
        },
    );
    out.push(
        if (1..=600_000).contains(&gw.deadline_ms)
            && gw.breaker.consecutive_failures >= 1
            && gw.breaker.window >= 1
            && (0.0..=1.0).contains(&gw.breaker.failure_rate)
        {
            Check::pass(
                "gateway.limits",
                format!(
                    "deadline {} ms, breaker after {} failures in a row",
                    gw.deadline_ms, gw.breaker.consecutive_failures
                ),
            )
        } else {
            Check::fail(
                "gateway.limits",
                "deadline_ms must be 1–600000, breaker.consecutive_failures and breaker.window at \
                 least 1, breaker.failure_rate within 0–1",
            )
        },
    );
    out.push(
        if gw.deadline_ms.saturating_add(500) <= config.limits.request_timeout_ms {
            Check::pass(
                "gateway.deadline_ms",
                format!(
                    "{} ms, under the {} ms request timeout",
                    gw.deadline_ms, config.limits.request_timeout_ms
                ),
            )
        } else {
            Check::fail(
                "gateway.deadline_ms",
                format!(
                    "{} ms leaves less than 500 ms under limits.request_timeout_ms ({} ms): an \
                     execution would be cut off after calling the service, before it is recorded; \
                     raise the request timeout or lower the deadline",
                    gw.deadline_ms, config.limits.request_timeout_ms
                ),
            )
        },
    );
    if lic_grace_too_long(config) {
        out.push(Check::production_only(
            "license.grace_days",
            mode,
            format!("{} days is more than 30", config.license.grace_days),
        ));
    }
    let bad_ranges: Vec<&str> = gw
        .allowed_private_ranges
        .iter()
        .filter(|r| !is_ip_range(r))
        .map(String::as_str)
        .collect();
    out.push(if bad_ranges.is_empty() {
        Check::pass(
            "gateway.allowed_private_ranges",
            format!("{} range(s)", gw.allowed_private_ranges.len()),
        )
    } else {
        Check::fail(
            "gateway.allowed_private_ranges",
            format!(
                "not an address or ADDR/PREFIX range: {}",
                bad_ranges.join(", ")
            ),
        )
    });
    out.push(if gw.private_allowed(mode) {
        Check::production_only(
            "gateway.allow_private_addresses",
            mode,
            "services on loopback and private addresses may be called",
        )
    } else {
        Check::pass(
            "gateway.allow_private_addresses",
            "private addresses only through allowed_private_ranges",
        )
    });
    if gw.emergency_stop {
        out.push(Check::pass(
            "gateway.emergency_stop",
            "ON: every execute answers 503 EMERGENCY_STOP until an admin turns it off",
        ));
    }

    let lic = &config.license;
    out.push(match (lic.enforcement, &lic.public_key, &lic.key) {
        (LicenseEnforcement::Off, _, _) => Check::pass("license", "not enforced"),
        (_, None, _) => Check::fail(
            "license",
            "license enforcement needs the vendor's public key (CAIO_LICENSE_PUBLIC_KEY)",
        ),
        (_, Some(_), None) => Check::pass(
            "license",
            "no key yet: activate one with POST /api/v1/licensing/activate",
        ),
        (_, Some(_), Some(_)) => Check::pass("license", "key and public key set"),
    });

    out.push(if config.shutdown_grace_s <= 3600 {
        Check::pass("shutdown_grace_s", config.shutdown_grace_s.to_string())
    } else {
        Check::fail(
            "shutdown_grace_s",
            format!("{} is more than an hour", config.shutdown_grace_s),
        )
    });
    out
}

/// `ADDR` or `ADDR/PREFIX` with a prefix that fits the address family.
fn is_ip_range(s: &str) -> bool {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    match addr.trim().parse::<std::net::IpAddr>() {
        Ok(ip) => {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            prefix.is_none_or(|p| p.trim().parse::<u8>().is_ok_and(|p| p <= max))
        }
        Err(_) => false,
    }
}

fn check_pem(file: &Path) -> Check {
    match std::fs::read_to_string(file) {
        Ok(text) if text.contains("-----BEGIN PUBLIC KEY-----") => Check::pass(
            "auth.jwt.eddsa_public_key_files",
            file.display().to_string(),
        ),
        Ok(_) => Check::fail(
            "auth.jwt.eddsa_public_key_files",
            format!("{}: not a PEM public key", file.display()),
        ),
        Err(e) => Check::fail(
            "auth.jwt.eddsa_public_key_files",
            format!("{}: {e}", file.display()),
        ),
    }
}

/// Checks that need the outside world: the data directory is writable and Redis (when
/// configured) answers PING within two seconds.
pub fn check_connections(config: &Config) -> Vec<Check> {
    let mut out = Vec::new();
    out.push(match writable(&config.data_dir) {
        Ok(()) => Check::pass("data_dir.writable", config.data_dir.display().to_string()),
        Err(e) => Check::fail(
            "data_dir.writable",
            format!("{}: {e}", config.data_dir.display()),
        ),
    });
    out.push(crate::descriptors::check(config.limits.max_connections));
    if let Some(url) = &config.redis.url {
        out.push(match ping_redis(url.expose()) {
            Ok(latency) => Check::pass(
                "redis.reachable",
                format!("PONG in {:.1} ms", latency.as_secs_f64() * 1000.0),
            ),
            Err(e) => Check::fail("redis.reachable", e),
        });
    }
    out
}

fn writable(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(format!(".caio-doctor-{}", std::process::id()));
    std::fs::write(&probe, b"ok")?;
    std::fs::remove_file(&probe)
}

fn ping_redis(url: &str) -> Result<Duration, String> {
    // The error strings of the redis crate can contain the URL (and its password): say only
    // what kind of failure it was.
    let client = redis::Client::open(url).map_err(|e| format!("invalid URL ({:?})", e.kind()))?;
    let start = Instant::now();
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .map_err(|e| format!("cannot connect ({:?})", e.kind()))?;
    let pong: String = redis::cmd("PING")
        .query(&mut conn)
        .map_err(|e| format!("PING failed ({:?})", e.kind()))?;
    if pong != "PONG" {
        return Err("PING did not answer PONG".to_owned());
    }
    Ok(start.elapsed())
}

fn lic_grace_too_long(config: &Config) -> bool {
    config.license.grace_days > 30
}
