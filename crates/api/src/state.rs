//! The server's state and how it is built from a [`Config`]: stores, authentication, routing.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use caio_config::{Config, Mode, OnViolation, TraceBackend, TraceDurability};
use caio_gateway::exec::client::ClientConfig;
use caio_gateway::exec::guard::{AddressGuard, Cidr};
use caio_gateway::exec::health::BreakerConfig;
use caio_gateway::{Gateway, GatewayConfig, ViolationPolicy, loader};
use caio_registry::{MemoryRegistry, Registry};
use caio_rules::{FilePolicyStore, MemoryPolicyStore, PolicyStore};
use caio_security::approval::{ApprovalKey, UsedTokens};
use caio_security::{
    BootstrapKey, FileKeyStore, JwtConfig, JwtVerifier, KeyStore, MemoryKeyStore,
    MemoryRateLimiter, RateLimit, RateLimiter, ReplayGuard,
};
use caio_trace::{
    AuditLog, Durability, FileAuditLog, FileOptions, FileTraceStore, MemoryAuditLog,
    MemoryTraceStore, TraceStore,
};
use serde::Serialize;

use crate::auth::Authenticator;
use crate::idempotency::{IdempotencyStore, MemoryIdempotency};
use crate::metrics::Metrics;
use crate::secrets::{FileSecretStore, SecretStore};
use crate::tenancy::TenantRouters;
use crate::tracelog::TraceWriter;

/// Health a service reported through its webhook.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    /// `healthy`, `degraded` or `down`.
    pub status: String,
    /// When the last event arrived (unix ms).
    pub last_event_ms: u64,
    /// The event's own detail, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Build facts for `/api/v1/version`.
#[derive(Debug, Clone, Serialize)]
pub struct BuildInfo {
    /// Package version.
    pub version: &'static str,
    /// Git commit the binary was built from.
    pub git_commit: &'static str,
    /// Build date (UTC).
    pub build_date: &'static str,
}

/// The build facts of this binary.
pub const BUILD: BuildInfo = BuildInfo {
    version: env!("CARGO_PKG_VERSION"),
    git_commit: env!("CAIO_GIT_COMMIT"),
    build_date: env!("CAIO_BUILD_DATE"),
};

/// Everything handlers share.
#[derive(Debug)]
pub struct AppState {
    /// The configuration the server started with.
    pub config: Config,
    /// Routing per tenant over the shared registry.
    pub routers: TenantRouters,
    /// Versioned policy sets.
    pub policies: Arc<dyn PolicyStore>,
    /// Serializes policy changes (validate, store, activate).
    pub policy_lock: tokio::sync::Mutex<()>,
    /// Credentials.
    pub auth: Authenticator,
    /// Stored API keys.
    pub keys: Arc<dyn KeyStore>,
    /// Decision traces (group commit).
    pub traces: TraceWriter,
    /// Changes to services, policies and keys.
    pub audit: Arc<dyn AuditLog>,
    /// Per-principal limit.
    pub rate: Option<Arc<dyn RateLimiter>>,
    /// Webhook secrets.
    pub secrets: Arc<dyn SecretStore>,
    /// Webhook signatures seen within the replay window.
    pub replay: ReplayGuard,
    /// What services last reported through their webhooks.
    pub status: RwLock<HashMap<String, ServiceStatus>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Execution: the outbound client, circuit breakers, the emergency stop.
    pub gateway: Arc<Gateway>,
    /// Who turned the emergency stop on or off, when and why.
    pub stop: crate::handlers::execute::StopRecord,
    /// Signs and checks approval tokens.
    pub approval_key: ApprovalKey,
    /// Approval tokens already used.
    pub approvals_used: UsedTokens,
    /// `Idempotency-Key` outcomes.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// The license and its enforcement.
    pub licensing: crate::licensing::Licensing,
    /// Whether the last audit append succeeded (readiness reports it).
    pub audit_healthy: AtomicBool,
    /// Set when shutdown began: readiness turns 503.
    pub draining: AtomicBool,
    /// Process start.
    pub started: Instant,
}

/// What an operator should know once the server is built.
#[derive(Debug, Default)]
pub struct StartReport {
    /// A generated admin key (development mode without one configured): print it once.
    pub generated_admin_key: Option<String>,
    /// Services preloaded from `services_dir`.
    pub preloaded_services: usize,
    /// The active policy version.
    pub policy_version: String,
    /// Trace records found in the store.
    pub trace_records: u64,
    /// Bytes of a torn last trace record cut off at open.
    pub trace_truncated_bytes: u64,
    /// The newest sealed trace segment, when its torn tail was cut off at open (a power loss
    /// right after a seal).
    pub trace_truncated_segment: Option<std::path::PathBuf>,
    /// The seq of the oldest trace record kept (1 unless retention deleted segments).
    pub trace_first_seq: u64,
    /// Sealed trace segments kept.
    pub trace_segments: u64,
    /// Sealed trace segments deleted by retention at open.
    pub trace_removed_segments: usize,
    /// The version of `--policies` when the store already had a different active version (the
    /// store wins; use PUT /api/v1/policies to change it).
    pub policy_file_ignored: Option<String>,
}

/// What `caio-server --check` adds to the configuration's checks: the preload (`--services`,
/// `--policies`) loaded the way the server loads it at start (every contract parsed and
/// validated, the registry built, the policy set parsed and compiled), with the versions it would
/// serve. Reads only; no store is opened.
pub fn check_preload(config: &Config) -> Vec<caio_config::Check> {
    use caio_config::Check;
    let mut out = Vec::new();
    if let Some(dir) = &config.services_dir {
        let loaded = loader::load_services_dir(dir)
            .map_err(|e| e.to_string())
            .and_then(|contracts| {
                let n = contracts.len();
                let registry =
                    MemoryRegistry::with_contracts(contracts).map_err(|e| e.to_string())?;
                Ok((n, registry.snapshot().version().to_owned()))
            });
        out.push(match loaded {
            Ok((n, version)) => Check::pass(
                "preload.services",
                format!("{n} contract(s) from {}, registry {version}", dir.display()),
            ),
            // The loader's errors name the file (and line) themselves.
            Err(e) => Check::fail("preload.services", e),
        });
    }
    if let Some(file) = &config.policies_file {
        out.push(match loader::load_policies(file) {
            Ok((set, compiled)) => Check::pass(
                "preload.policies",
                format!(
                    "{} rule(s) from {}, version {}",
                    set.policies.len(),
                    file.display(),
                    compiled.version
                ),
            ),
            Err(e) => Check::fail("preload.policies", e.to_string()),
        });
    }
    out
}

/// The five stores, file-backed or in memory.
type Stores = (
    Arc<dyn TraceStore>,
    Arc<dyn AuditLog>,
    Arc<dyn PolicyStore>,
    Arc<dyn KeyStore>,
    Arc<dyn SecretStore>,
);

fn keys_config(config: &Config) -> anyhow::Result<Option<JwtVerifier>> {
    let jwt = &config.auth.jwt;
    if !jwt.configured() {
        return Ok(None);
    }
    let mut eddsa_keys = Vec::new();
    for file in &jwt.eddsa_public_key_files {
        let pem = std::fs::read_to_string(file)
            .with_context(|| format!("reading JWT public key {}", file.display()))?;
        let key = caio_security::parse_eddsa_public_key_pem(&pem)
            .map_err(|e| anyhow!("{}: {e}", file.display()))?;
        eddsa_keys.push(key);
    }
    let verifier = JwtVerifier::new(JwtConfig {
        hs256_secret: jwt
            .hs256_secret
            .as_ref()
            .map(|s| s.expose().as_bytes().to_vec()),
        eddsa_keys,
        issuer: jwt.issuer.clone(),
        audience: jwt.audience.clone(),
        leeway_s: jwt.leeway_s,
    })
    .map_err(|e| anyhow!("JWT configuration: {e}"))?;
    Ok(Some(verifier))
}

impl AppState {
    /// Builds the state: refuses a production configuration that fails a check, opens the stores
    /// under the data directory, preloads services and policies.
    pub fn build(config: Config) -> anyhow::Result<(Arc<AppState>, StartReport)> {
        let failures: Vec<String> = caio_config::check(&config)
            .into_iter()
            .filter(|c| !c.passed())
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect();
        if !failures.is_empty() {
            bail!(
                "the configuration is not usable ({} problem{}):\n  {}",
                failures.len(),
                if failures.len() == 1 { "" } else { "s" },
                failures.join("\n  ")
            );
        }
        if config.redis.required {
            // The Redis backends arrive with the cluster issue; refusing beats pretending.
            bail!("redis.required: this build has no Redis backend yet; unset CAIO_REDIS_REQUIRED");
        }
        let mut report = StartReport::default();
        let metrics = Arc::new(Metrics::new());
        let data = config.data_dir.clone();
        let file_backed = config.traces.backend == TraceBackend::File;
        if file_backed {
            std::fs::create_dir_all(&data)
                .with_context(|| format!("creating the data directory {}", data.display()))?;
        }

        // Stores: files under the data directory, or memory.
        let (traces, audit, policies, keys, secrets): Stores = {
            let fixed: BTreeMap<String, String> = config
                .webhooks
                .secrets
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_owned()))
                .collect();
            if file_backed {
                let durability = match config.traces.durability {
                    TraceDurability::Buffered => Durability::Buffered,
                    TraceDurability::Fsync => Durability::Fsync,
                };
                let (t, open) = FileTraceStore::open_with(
                    &data.join("traces"),
                    FileOptions {
                        durability,
                        index_max_records: Some(config.traces.index_max_records),
                        segment_bytes: config.traces.segment_bytes,
                        retain_segments: usize::try_from(config.traces.retain_segments)
                            .unwrap_or(usize::MAX),
                        writeback_bytes: config.traces.writeback_bytes,
                    },
                )
                .context("opening the trace store")?;
                report.trace_records = open.records;
                report.trace_truncated_bytes = open.truncated_bytes;
                report.trace_truncated_segment = open.truncated_segment;
                if let Some(disk) = t.disk_usage() {
                    report.trace_first_seq = disk.first_seq;
                    report.trace_segments = disk.segments;
                }
                report.trace_removed_segments = open.removed_segments;
                (
                    Arc::new(t),
                    Arc::new(
                        FileAuditLog::open(&data.join("audit")).context("opening the audit log")?,
                    ),
                    Arc::new(
                        FilePolicyStore::open(&data.join("policies"))
                            .context("opening the policy store")?,
                    ),
                    Arc::new(
                        FileKeyStore::open(data.join("keys.json"))
                            .context("opening the key store")?,
                    ),
                    Arc::new(
                        FileSecretStore::open(&data.join("webhook-secrets.json"), fixed)
                            .map_err(|e| anyhow!("opening the webhook secrets: {e}"))?,
                    ),
                )
            } else {
                (
                    Arc::new(MemoryTraceStore::new()),
                    Arc::new(MemoryAuditLog::new()),
                    Arc::new(MemoryPolicyStore::new()),
                    Arc::new(MemoryKeyStore::new()),
                    Arc::new(FileSecretStore::memory(fixed)),
                )
            }
        };

        // Registry, preloaded.
        let contracts = match &config.services_dir {
            Some(dir) => loader::load_services_dir(dir)
                .map_err(|e| anyhow!("loading services from {}: {e}", dir.display()))?,
            None => Vec::new(),
        };
        report.preloaded_services = contracts.len();
        let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::with_contracts(contracts)?);
        metrics.services.set(registry.snapshot().len() as i64);

        // Policies: the file (when given and different from the active version) becomes a new
        // version; otherwise the store's active version; otherwise the empty set.
        let now = caio_trace::now_ms();
        // The file seeds an empty store; after that the store (changed through the API) wins, and
        // a file that differs from the active version is reported, not silently re-activated.
        if let Some(file) = &config.policies_file {
            let (set, compiled) = loader::load_policies(file)
                .map_err(|e| anyhow!("loading policies from {}: {e}", file.display()))?;
            match policies
                .active()
                .map_err(|e| anyhow!("policy store: {e}"))?
            {
                None => {
                    let (version, _) = policies
                        .put(
                            &set,
                            "startup",
                            now,
                            Some(format!("loaded from {}", file.display())),
                        )
                        .map_err(|e| anyhow!("storing policies from {}: {e}", file.display()))?;
                    audit
                        .append(caio_trace::AuditEvent {
                            at_ms: now,
                            actor: "startup".to_owned(),
                            actor_role: "admin".to_owned(),
                            tenant: "public".to_owned(),
                            action: "policies.put".to_owned(),
                            target: version.version.clone(),
                            before: None,
                            after: Some(version.version),
                            request_id: None,
                        })
                        .map_err(|e| anyhow!("audit log: {e}"))?;
                }
                Some((active, _)) if active.version != compiled.version => {
                    report.policy_file_ignored = Some(compiled.version.clone());
                }
                Some(_) => {}
            }
        }
        let compiled = match policies
            .active()
            .map_err(|e| anyhow!("policy store: {e}"))?
        {
            Some((_, set)) => caio_rules::compile_recorded(&set).map_err(|errs| {
                anyhow!(
                    "the active policy version no longer compiles: {}",
                    errs.iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            })?,
            None => caio_rules::compile(&Default::default())
                .map_err(|_| anyhow!("the empty policy set does not compile"))?,
        };
        report.policy_version = compiled.version.clone();
        let gateway = Arc::new(gateway_from(&config)?);
        let licensing = crate::licensing::Licensing::new(&config.license)?;
        let (approval_key, approvals_used) = if file_backed {
            (
                approval_key_file(&data.join("approval.key"))?,
                UsedTokens::open(&data.join("approvals.used"), caio_trace::now_ms())
                    .map_err(|e| anyhow!("the used-approvals file: {e}"))?,
            )
        } else {
            (
                ApprovalKey::generate().map_err(|e| anyhow!(e))?,
                UsedTokens::new(),
            )
        };
        let idempotency: Arc<dyn IdempotencyStore> = Arc::new(MemoryIdempotency::new(
            config.gateway.idempotency_ttl_s.saturating_mul(1000),
            config
                .gateway
                .deadline_ms
                .max(config.limits.request_timeout_ms)
                .saturating_add(60_000),
            100_000,
        ));
        let routers = TenantRouters::new(registry, compiled, gateway.health().history());

        // Authentication.
        let mut bootstrap = match &config.auth.bootstrap_admin_key {
            Some(k) => Some(
                BootstrapKey::from_plaintext(k.expose())
                    .map_err(|e| anyhow!("CAIO_BOOTSTRAP_ADMIN_KEY: {e}"))?,
            ),
            None => None,
        };
        let jwt = keys_config(&config)?;
        let has_stored_admin = keys
            .list()
            .map(|l| {
                l.iter()
                    .any(|k| k.role == caio_security::Role::Admin && k.revoked_at_ms.is_none())
            })
            .unwrap_or(false);
        if config.auth.enabled
            && bootstrap.is_none()
            && jwt.is_none()
            && !has_stored_admin
            && config.mode == Mode::Development
        {
            let key = format!(
                "caio_dev_{}",
                crate::secrets::generate().map_err(|e| anyhow!(e))?
            );
            bootstrap = Some(
                BootstrapKey::from_plaintext(&key).map_err(|e| anyhow!("generated key: {e}"))?,
            );
            report.generated_admin_key = Some(key);
        }
        let auth = Authenticator {
            enabled: config.auth.enabled,
            strict: config.auth.is_strict(config.mode),
            bootstrap,
            jwt,
            keys: Arc::clone(&keys),
        };

        let rate: Option<Arc<dyn RateLimiter>> = if config.rate_limit.enabled {
            Some(Arc::new(
                MemoryRateLimiter::new(RateLimit {
                    per_second: config.rate_limit.per_second,
                    burst: config.rate_limit.burst,
                })
                .map_err(|e| anyhow!("rate_limit: {e}"))?,
            ))
        } else {
            None
        };
        let durability = match config.traces.durability {
            TraceDurability::Buffered => Durability::Buffered,
            TraceDurability::Fsync => Durability::Fsync,
        };
        let writer = TraceWriter::new(traces, durability, Arc::clone(&metrics));
        let state = AppState {
            replay: ReplayGuard::new(config.webhooks.replay_window_s),
            config,
            routers,
            policies,
            policy_lock: tokio::sync::Mutex::new(()),
            auth,
            keys,
            traces: writer,
            audit,
            rate,
            secrets,
            status: RwLock::new(HashMap::new()),
            metrics,
            stop: RwLock::new(crate::handlers::execute::StopState {
                stopped: gateway.stopped(),
                changed_by: gateway.stopped().then(|| "configuration".to_owned()),
                changed_at: None,
                reason: gateway
                    .stopped()
                    .then(|| "CAIO_EMERGENCY_STOP / gateway.emergency_stop is set".to_owned()),
            }),
            gateway,
            approval_key,
            approvals_used,
            idempotency,
            licensing,
            audit_healthy: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            started: Instant::now(),
        };
        Ok((Arc::new(state), report))
    }

    /// The registry.
    pub fn registry(&self) -> &Arc<dyn Registry> {
        self.routers.registry()
    }
}

/// The gateway the configuration describes.
fn gateway_from(config: &Config) -> anyhow::Result<Gateway> {
    let g = &config.gateway;
    let allowlist = g
        .allowed_private_ranges
        .iter()
        .map(|r| {
            r.parse::<Cidr>()
                .map_err(|e| anyhow!("gateway.allowed_private_ranges: {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let gateway = Gateway::new(GatewayConfig {
        client: ClientConfig {
            guard: AddressGuard::new(g.private_allowed(config.mode), allowlist),
            max_response_bytes: g.max_response_bytes,
            ..ClientConfig::default()
        },
        breaker: BreakerConfig {
            consecutive_failures: g.breaker.consecutive_failures,
            failure_rate: g.breaker.failure_rate,
            min_calls: g.breaker.min_calls,
            window: g.breaker.window,
            cooldown: Duration::from_secs(g.breaker.cooldown_s),
            ..BreakerConfig::default()
        },
        max_attempts: g.max_attempts,
        max_fallbacks: g.max_fallbacks,
        backoff_base: Duration::from_millis(g.backoff_base_ms),
        backoff_max: Duration::from_millis(g.backoff_max_ms),
        max_retry_after: Duration::from_secs(g.max_retry_after_s),
        default_deadline: Duration::from_millis(g.deadline_ms),
        on_violation: match g.on_violation {
            OnViolation::Warn => ViolationPolicy::Warn,
            OnViolation::Failover => ViolationPolicy::Failover,
        },
        credentials: {
            let settings = g.clone();
            caio_gateway::exec::Credentials::new(move |name| {
                if settings.credential_env_allowed(name) {
                    std::env::var(name).ok()
                } else {
                    tracing::warn!(
                        variable = name,
                        "credential_env not allowed by gateway.credential_envs"
                    );
                    None
                }
            })
        },
    });
    gateway.set_stopped(g.emergency_stop);
    Ok(gateway)
}

/// The approval key under the data directory: 32 random bytes, hex, mode 0600, made on first
/// start. A key that cannot be read is an error, never silently replaced (that would void every
/// approval issued).
fn approval_key_file(path: &std::path::Path) -> anyhow::Result<ApprovalKey> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let bytes = hex::decode(text.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| {
                    anyhow!(
                        "{}: not 64 hex digits (an approval key); remove it to make a new one",
                        path.display()
                    )
                })?;
            Ok(ApprovalKey::from_bytes(bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = ApprovalKey::generate().map_err(|e| anyhow!(e))?;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut f = options
                .open(path)
                .with_context(|| format!("creating {}", path.display()))?;
            std::io::Write::write_all(&mut f, hex::encode(key.bytes()).as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            f.sync_all()
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(key)
        }
        Err(e) => Err(anyhow!("{}: {e}", path.display())),
    }
}
