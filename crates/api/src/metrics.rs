//! Prometheus metrics (prometheus-client): request counts and latency, routing latency per stage,
//! decisions by outcome, rejections by step and reason, authentication failures, authorization
//! denials, rate-limited requests and trace persistence.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

mod sharded;
pub use sharded::ShardedHistogram;

/// Latency buckets in seconds: 50 µs to 5 s.
const LATENCY_BUCKETS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];

fn latency_histogram() -> ShardedHistogram {
    ShardedHistogram::new(LATENCY_BUCKETS)
}

/// Labels of an HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The matched route template (`/api/v1/services/{id}`), or `unmatched`.
    pub route: String,
    /// HTTP method.
    pub method: String,
    /// Status code.
    pub status: u16,
}

/// Labels of a timed routing stage.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    /// `authenticate`, `parse`, `pipeline`, `encode`, `persist`.
    pub stage: &'static str,
}

/// A label with one value.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// The outcome.
    pub outcome: &'static str,
}

/// Rejections by pipeline step and reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectionLabels {
    /// Pipeline step.
    pub step: String,
    /// Reason code.
    pub reason: String,
}

/// A failure reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Stable reason code.
    pub reason: &'static str,
}

/// An authorization action.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// What was denied.
    pub action: &'static str,
}

/// The stages of POST /api/v1/route.
const STAGES: [&str; 5] = ["authenticate", "parse", "pipeline", "encode", "persist"];

/// The (step, reason) pairs the routing pipeline gives (docs/reference/decision.md).
const KNOWN_REJECTIONS: [(&str, &str); 12] = [
    ("health", "circuit_open"),
    ("match", "missing_capability"),
    ("match", "guarantee_unmet"),
    ("match", "constraint_unadmitted"),
    ("match", "over_budget"),
    ("rules", "policy_violation"),
    ("security", "unauthenticated"),
    ("security", "unauthorized"),
    ("security", "privacy"),
    ("security", "insufficient_trust"),
    ("security", "tenant_boundary"),
    ("traits", "trait_unmet"),
];

/// Every metric the server exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Requests by route, method and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Request latency by route.
    pub request_seconds: Family<RouteLabel, ShardedHistogram>,
    /// Routing latency by stage.
    pub route_stage_seconds: Family<StageLabels, ShardedHistogram>,
    /// Route requests by outcome (`routed`, `no_route`, `invalid`, `error`).
    pub decisions: Family<OutcomeLabels, Counter>,
    /// Services removed from consideration, by step and reason.
    pub rejections: Family<RejectionLabels, Counter>,
    /// Policy rules that removed a service.
    pub policy_violations: Family<PolicyLabels, Counter>,
    /// Authentication failures by reason.
    pub authn_failures: Family<ReasonLabels, Counter>,
    /// Authorization denials by action.
    pub authz_denials: Family<ActionLabels, Counter>,
    /// Requests refused by the rate limit.
    pub rate_limited: Counter,
    /// Webhook calls refused, by reason.
    pub webhook_rejections: Family<ReasonLabels, Counter>,
    /// Traces written.
    pub traces_persisted: Counter,
    /// Records per trace-store write (group commit).
    pub trace_batch_size: ShardedHistogram,
    /// Buffered trace appends that found another write in progress and waited for it.
    pub trace_gate_waits: Counter,
    /// Of those, the ones that waited past the spin limit and blocked their thread.
    pub trace_gate_blocked: Counter,
    /// Requests being served.
    pub in_flight: Gauge,
    /// Services registered.
    pub services: Gauge,
    /// Bytes the file trace log keeps on disk (set when metrics are read).
    pub trace_log_bytes: Gauge,
    /// Sealed trace segments kept (set when metrics are read).
    pub trace_segments: Gauge,
    /// Executions by final status (`succeeded`, `failed`, `dry_run`).
    pub executions: Family<OutcomeLabels, Counter>,
    /// Calls made to services (every attempt).
    pub upstream_attempts: Counter,
    /// Moves to the next candidate.
    pub fallbacks: Counter,
    /// Guarantees broken by services that answered, by property.
    pub guarantee_violations: Family<PropertyLabels, Counter>,
    /// Time of whole executions (all attempts and fallbacks).
    pub execution_seconds: ShardedHistogram,
    /// Requests let through without a valid license (permissive mode, grace period, limits).
    pub license_warnings: Counter,
    stage_handles: Vec<ShardedHistogram>,
    /// The counters of [`KNOWN_REJECTIONS`], each taken from `rejections` on first use.
    known_rejections: Vec<OnceLock<Counter>>,
}

/// A route template label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// The matched route template.
    pub route: String,
}

/// A guarantee property label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PropertyLabels {
    /// `latency_ms`, `accuracy`, `cost`, `determinism`.
    pub property: String,
}

/// A policy id label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    /// The policy id.
    pub policy: String,
}

impl Metrics {
    /// Registers every metric under the `caio` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("caio");
        let requests = Family::<RequestLabels, Counter>::default();
        let request_seconds = Family::<RouteLabel, ShardedHistogram>::new_with_constructor(
            latency_histogram as fn() -> _,
        );
        let route_stage_seconds = Family::<StageLabels, ShardedHistogram>::new_with_constructor(
            latency_histogram as fn() -> _,
        );
        let decisions = Family::<OutcomeLabels, Counter>::default();
        let rejections = Family::<RejectionLabels, Counter>::default();
        let policy_violations = Family::<PolicyLabels, Counter>::default();
        let authn_failures = Family::<ReasonLabels, Counter>::default();
        let authz_denials = Family::<ActionLabels, Counter>::default();
        let rate_limited = Counter::default();
        let webhook_rejections = Family::<ReasonLabels, Counter>::default();
        let traces_persisted = Counter::default();
        let trace_batch_size =
            ShardedHistogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]);
        let trace_gate_waits = Counter::default();
        let trace_gate_blocked = Counter::default();
        let in_flight = Gauge::default();
        let services = Gauge::default();
        let trace_log_bytes = Gauge::default();
        let trace_segments = Gauge::default();
        registry.register(
            "http_requests",
            "HTTP requests by route template, method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route template",
            request_seconds.clone(),
        );
        registry.register(
            "route_stage_duration_seconds",
            "POST /api/v1/route latency by stage (authenticate, parse, pipeline, encode, persist)",
            route_stage_seconds.clone(),
        );
        registry.register(
            "decisions",
            "Route requests by outcome (routed, no_route, invalid, error)",
            decisions.clone(),
        );
        registry.register(
            "rejections",
            "Services removed from a decision, by pipeline step and reason",
            rejections.clone(),
        );
        registry.register(
            "policy_violations",
            "Services removed by a policy rule, by policy id",
            policy_violations.clone(),
        );
        registry.register(
            "authn_failures",
            "Authentication failures by reason",
            authn_failures.clone(),
        );
        registry.register(
            "authz_denials",
            "Requests refused by role, by action",
            authz_denials.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests refused by the per-principal rate limit",
            rate_limited.clone(),
        );
        registry.register(
            "webhook_rejections",
            "Webhook calls refused, by reason",
            webhook_rejections.clone(),
        );
        registry.register(
            "traces_persisted",
            "Decision traces written to the trace store",
            traces_persisted.clone(),
        );
        registry.register(
            "trace_batch_records",
            "Records per trace-store write (group commit)",
            trace_batch_size.clone(),
        );
        registry.register(
            "trace_gate_waits",
            "Buffered trace appends that found another write in progress and spun until it ended",
            trace_gate_waits.clone(),
        );
        registry.register(
            "trace_gate_blocked",
            "Buffered trace appends that waited past the spin limit and blocked their thread",
            trace_gate_blocked.clone(),
        );
        registry.register(
            "http_requests_in_flight",
            "Requests being served",
            in_flight.clone(),
        );
        registry.register(
            "registered_services",
            "Services in the registry",
            services.clone(),
        );
        registry.register(
            "trace_log_bytes",
            "Bytes the file trace log keeps on disk: sealed segments kept and the active file",
            trace_log_bytes.clone(),
        );
        registry.register(
            "trace_segments",
            "Sealed trace log segments kept on disk",
            trace_segments.clone(),
        );
        let executions = Family::<OutcomeLabels, Counter>::default();
        let upstream_attempts = Counter::default();
        let fallbacks = Counter::default();
        let guarantee_violations = Family::<PropertyLabels, Counter>::default();
        let execution_seconds = latency_histogram();
        registry.register(
            "executions",
            "Executions by final status",
            executions.clone(),
        );
        registry.register(
            "upstream_attempts",
            "Calls made to services, every attempt counted",
            upstream_attempts.clone(),
        );
        registry.register(
            "fallbacks",
            "Moves from a failed candidate to the next",
            fallbacks.clone(),
        );
        registry.register(
            "guarantee_violations",
            "Guarantees broken by services that answered, by property",
            guarantee_violations.clone(),
        );
        registry.register(
            "execution_seconds",
            "Time of whole executions, all attempts and fallbacks",
            execution_seconds.clone(),
        );
        let license_warnings = Counter::default();
        registry.register(
            "license_warnings",
            "Requests let through with a license warning",
            license_warnings.clone(),
        );
        let known_rejections = KNOWN_REJECTIONS.iter().map(|_| OnceLock::new()).collect();
        let stage_handles = STAGES
            .iter()
            .map(|stage| {
                route_stage_seconds
                    .get_or_create(&StageLabels { stage })
                    .clone()
            })
            .collect();
        Metrics {
            stage_handles,
            known_rejections,
            registry,
            requests,
            request_seconds,
            route_stage_seconds,
            decisions,
            rejections,
            policy_violations,
            authn_failures,
            authz_denials,
            rate_limited,
            webhook_rejections,
            traces_persisted,
            trace_batch_size,
            trace_gate_waits,
            trace_gate_blocked,
            in_flight,
            services,
            trace_log_bytes,
            trace_segments,
            executions,
            upstream_attempts,
            fallbacks,
            guarantee_violations,
            execution_seconds,
            license_warnings,
        }
    }

    /// Counts `n` rejections at `step` for `reason`. The counters of the pipeline's own reason
    /// codes are looked up in the family once and then reached without its lock, its hashing
    /// and two label strings per call (every decision counts its rejections).
    pub fn count_rejections(&self, step: &'static str, reason: &str, n: u64) {
        let known = KNOWN_REJECTIONS
            .iter()
            .position(|(s, r)| *s == step && *r == reason)
            .and_then(|i| self.known_rejections.get(i));
        let labels = || RejectionLabels {
            step: step.to_owned(),
            reason: reason.to_owned(),
        };
        match known {
            Some(cell) => cell
                .get_or_init(|| self.rejections.get_or_create(&labels()).clone())
                .inc_by(n),
            None => self.rejections.get_or_create(&labels()).inc_by(n),
        };
    }

    /// Records the time one routing stage took.
    pub fn stage(&self, stage: &'static str, seconds: f64) {
        // The five stages' histograms are created once; a family lookup (lock, hash) per
        // observation is only for a stage name outside the list.
        match STAGES.iter().position(|s| *s == stage) {
            Some(i) => self.stage_handles[i].observe(seconds),
            None => self
                .route_stage_seconds
                .get_or_create(&StageLabels { stage })
                .observe(seconds),
        }
    }

    /// The exposition text (OpenMetrics, which Prometheus reads).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_are_counted_through_the_cached_counters_and_the_family_alike() {
        let m = Metrics::new();
        m.count_rejections("match", "missing_capability", 3);
        m.count_rejections("match", "missing_capability", 2);
        m.count_rejections("rules", "policy_violation", 1);
        // A pair outside the pipeline's list goes through the family.
        m.count_rejections("match", "a_new_reason", 4);
        m.count_rejections("match", "a_new_reason", 1);
        let text = m.encode().unwrap_or_else(|e| panic!("{e}"));
        for line in [
            "caio_rejections_total{step=\"match\",reason=\"missing_capability\"} 5",
            "caio_rejections_total{step=\"rules\",reason=\"policy_violation\"} 1",
            "caio_rejections_total{step=\"match\",reason=\"a_new_reason\"} 5",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        // A known pair never seen is not listed.
        assert!(!text.contains("trait_unmet"), "{text}");
    }
}
