//! What the gateway has seen of each service: a circuit breaker, the recent success rate and an
//! EWMA of latency, published as the [`History`] routing reads (and every decision's proof
//! records, so a decision replays with the health it was made under).
//!
//! Breaker states:
//! - **closed**: calls flow. It opens after `consecutive_failures` failures in a row, or when at
//!   least `min_calls` of the last `window` calls were made and their failure rate reaches
//!   `failure_rate`.
//! - **open**: routing leaves the service out (`circuit_open`, step `health`) and the gateway
//!   refuses calls to it, until `cooldown` has passed.
//! - **half-open**: routing may choose the service again (the failures that opened the circuit
//!   leave the success-rate window); one call at a time is let through as a trial. Its success
//!   closes the circuit, its failure opens it for another cooldown.
//!
//! A service that reports itself `down` (a signed webhook, [`HealthBoard::report_status`]) has its
//! circuit opened at once and held open, past any cooldown, until it reports `healthy` or
//! `degraded`; the circuit is then half-open, and a trial call decides as above.
//!
//! Guarantee violations count as failures for the success rate (the service's reliability term)
//! but not toward the consecutive-failure trip: a slow answer is still an answer. Active probes
//! count when they fail; a passing probe adds a success to the window but neither clears a run of
//! failed calls nor closes a half-open circuit.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use caio_calculus::{History, ServiceHistory};
use serde::Serialize;

/// The history routers read, as the health board publishes it.
pub type SharedHistory = Arc<ArcSwap<History>>;

/// Breaker and history settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Failures in a row that open the circuit.
    pub consecutive_failures: u32,
    /// Failure rate over the window that opens the circuit.
    pub failure_rate: f64,
    /// Calls in the window before the failure rate counts.
    pub min_calls: u32,
    /// Calls the success rate is computed over.
    pub window: usize,
    /// How long an open circuit stays open.
    pub cooldown: Duration,
    /// Weight of the newest latency in the EWMA.
    pub ewma_alpha: f64,
}

impl Default for BreakerConfig {
    fn default() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 5,
            failure_rate: 0.5,
            min_calls: 20,
            window: 100,
            cooldown: Duration::from_secs(30),
            ewma_alpha: 0.2,
        }
    }
}

/// A breaker state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Calls flow.
    Closed,
    /// Calls are refused until the cooldown ends.
    Open,
    /// One trial call at a time.
    HalfOpen,
}

/// Whether a call may go to a service now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The circuit is closed.
    Allowed,
    /// The circuit is half-open and this call is its trial.
    Trial,
    /// The circuit is open, or half-open with a trial in flight.
    Refused,
}

/// What one call did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CallResult {
    /// The service answered and kept its guarantees.
    Success {
        /// Measured latency.
        latency_ms: f64,
    },
    /// The service answered but broke a guarantee.
    Violation {
        /// Measured latency.
        latency_ms: f64,
    },
    /// The call failed (connect error, timeout, 5xx, malformed answer).
    Failure,
    /// An active health probe passed: a success without a latency sample.
    Probe,
}

#[derive(Debug)]
struct ServiceHealth {
    state: CircuitState,
    opened_at: Option<Instant>,
    trial_in_flight: bool,
    consecutive_failures: u32,
    /// The last `window` outcomes, true = success.
    recent: VecDeque<bool>,
    ewma_latency_ms: Option<f64>,
    calls: u64,
    failures: u64,
    violations: u64,
    opened: u64,
    /// The service said it is down: the circuit stays open until it says otherwise.
    reported_down: bool,
}

impl ServiceHealth {
    fn new() -> ServiceHealth {
        ServiceHealth {
            state: CircuitState::Closed,
            opened_at: None,
            trial_in_flight: false,
            consecutive_failures: 0,
            recent: VecDeque::new(),
            ewma_latency_ms: None,
            calls: 0,
            failures: 0,
            violations: 0,
            opened: 0,
            reported_down: false,
        }
    }

    /// An open circuit whose cooldown has ended, and which its service does not hold down.
    fn cooled_down(&self, now: Instant, cooldown: Duration) -> bool {
        self.state == CircuitState::Open
            && !self.reported_down
            && self
                .opened_at
                .is_some_and(|t| now.saturating_duration_since(t) >= cooldown)
    }

    fn success_rate(&self) -> f64 {
        if self.recent.is_empty() {
            return 1.0;
        }
        self.recent.iter().filter(|ok| **ok).count() as f64 / self.recent.len() as f64
    }

    /// The cooldown is over. The failures that opened the circuit leave the window, so the
    /// service's reliability does not keep routing from ever choosing it for its trial.
    fn half_open(&mut self) {
        self.state = CircuitState::HalfOpen;
        self.trial_in_flight = false;
        self.recent.clear();
    }

    fn open(&mut self, now: Instant) {
        self.state = CircuitState::Open;
        self.opened_at = Some(now);
        self.trial_in_flight = false;
        self.opened += 1;
    }
}

/// One service's health, as reported by [`HealthBoard::report`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthReport {
    /// The service.
    pub service_id: String,
    /// The breaker state.
    pub circuit: CircuitState,
    /// Share of successes over the recent window.
    pub success_rate: f64,
    /// EWMA latency, once a call succeeded.
    pub ewma_latency_ms: Option<f64>,
    /// Calls recorded since start.
    pub calls: u64,
    /// Failed calls since start.
    pub failures: u64,
    /// Calls that broke a guarantee since start.
    pub violations: u64,
    /// Failures in a row now.
    pub consecutive_failures: u32,
    /// Times the circuit opened since start.
    pub times_opened: u64,
    /// The service reported itself down (its circuit stays open until it reports otherwise).
    pub reported_down: bool,
}

/// What a service says of itself (a signed status webhook).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportedStatus {
    /// It serves (`healthy`, or a heartbeat).
    Healthy,
    /// It serves, worse than usual: routing keeps it, the report is informational.
    Degraded,
    /// It does not serve: routing leaves it out until it reports otherwise.
    Down,
}

/// The health of every service the gateway has called.
#[derive(Debug)]
pub struct HealthBoard {
    config: BreakerConfig,
    services: Mutex<HashMap<String, ServiceHealth>>,
    published: Arc<ArcSwap<History>>,
    started: Instant,
    /// Milliseconds since `started` when the next open circuit's cooldown ends (u64::MAX: none).
    next_transition_ms: AtomicU64,
}

impl HealthBoard {
    /// An empty board.
    pub fn new(config: BreakerConfig) -> HealthBoard {
        HealthBoard {
            config,
            services: Mutex::new(HashMap::new()),
            published: Arc::new(ArcSwap::from_pointee(History::new())),
            started: Instant::now(),
            next_transition_ms: AtomicU64::new(u64::MAX),
        }
    }

    /// The settings.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The history routers read (see [`crate::Router::share_history`]).
    pub fn history(&self) -> SharedHistory {
        Arc::clone(&self.published)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, ServiceHealth>> {
        self.services.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn since_start_ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.started).as_millis()).unwrap_or(u64::MAX)
    }

    /// Moves open circuits whose cooldown has ended to half-open and publishes the change. Cheap
    /// when nothing is due (one atomic load); call it before routing.
    pub fn refresh(&self) {
        self.refresh_at(Instant::now());
    }

    fn refresh_at(&self, now: Instant) {
        if self.since_start_ms(now) < self.next_transition_ms.load(Ordering::Relaxed) {
            return;
        }
        let mut services = self.lock();
        for h in services.values_mut() {
            if h.cooled_down(now, self.config.cooldown) {
                h.half_open();
            }
        }
        self.publish(&services);
    }

    /// Takes what a service says of itself. `Down` opens its circuit now (routing leaves it out
    /// with `circuit_open`, the gateway refuses calls) and holds it open past the cooldown;
    /// `Healthy` or `Degraded` after `Down` makes it half-open, so one trial call decides.
    /// Otherwise a report changes nothing: a circuit the gateway opened on failures is not
    /// closed by the service's word.
    pub fn report_status(&self, service: &str, status: ReportedStatus) {
        self.report_status_at(service, status, Instant::now());
    }

    fn report_status_at(&self, service: &str, status: ReportedStatus, now: Instant) {
        let mut services = self.lock();
        if status == ReportedStatus::Down {
            let h = services
                .entry(service.to_owned())
                .or_insert_with(ServiceHealth::new);
            if h.state != CircuitState::Open {
                h.open(now);
                tracing::warn!(service, "circuit opened: the service reported itself down");
            }
            h.reported_down = true;
        } else {
            // Only a service held down changes; a heartbeat of one never called adds nothing.
            let Some(h) = services.get_mut(service).filter(|h| h.reported_down) else {
                return;
            };
            h.reported_down = false;
            if h.state == CircuitState::Open {
                h.half_open();
            }
        }
        self.publish(&services);
    }

    /// Whether a call to `service` may start now. A `Trial` admission must be followed by a
    /// [`record`](Self::record) (or [`cancel_trial`](Self::cancel_trial)).
    pub fn admit(&self, service: &str) -> Admission {
        self.admit_at(service, Instant::now())
    }

    fn admit_at(&self, service: &str, now: Instant) -> Admission {
        let mut services = self.lock();
        let Some(h) = services.get_mut(service) else {
            return Admission::Allowed;
        };
        if h.cooled_down(now, self.config.cooldown) {
            h.half_open();
        }
        match h.state {
            CircuitState::Closed => Admission::Allowed,
            CircuitState::Open => Admission::Refused,
            CircuitState::HalfOpen if h.trial_in_flight => Admission::Refused,
            CircuitState::HalfOpen => {
                h.trial_in_flight = true;
                Admission::Trial
            }
        }
    }

    /// Releases a trial admission whose call never started (the request ended first).
    pub fn cancel_trial(&self, service: &str) {
        if let Some(h) = self.lock().get_mut(service) {
            h.trial_in_flight = false;
        }
    }

    /// Records what a call did.
    pub fn record(&self, service: &str, result: CallResult) {
        self.record_at(service, result, Instant::now());
    }

    fn record_at(&self, service: &str, result: CallResult, now: Instant) {
        let mut services = self.lock();
        let h = services
            .entry(service.to_owned())
            .or_insert_with(ServiceHealth::new);
        let before = h.state;
        if result != CallResult::Probe {
            h.calls += 1;
        }
        let (ok, latency) = match result {
            CallResult::Success { latency_ms } => (true, Some(latency_ms)),
            CallResult::Violation { latency_ms } => {
                h.violations += 1;
                (false, Some(latency_ms))
            }
            CallResult::Failure => {
                h.failures += 1;
                (false, None)
            }
            CallResult::Probe => (true, None),
        };
        if let Some(l) = latency.filter(|l| l.is_finite() && *l >= 0.0) {
            let a = self.config.ewma_alpha;
            h.ewma_latency_ms = Some(h.ewma_latency_ms.map_or(l, |e| a * l + (1.0 - a) * e));
        }
        h.recent.push_back(ok);
        while h.recent.len() > self.config.window.max(1) {
            h.recent.pop_front();
        }
        let answered = !matches!(result, CallResult::Failure);
        if result == CallResult::Probe {
            // A passing health probe says the service is up, not that its real endpoint works:
            // it neither clears a run of failed calls nor closes a half-open circuit (only a
            // real call does); it releases a trial it was admitted as.
            h.trial_in_flight = false;
            self.publish(&services);
            return;
        }
        if answered {
            h.consecutive_failures = 0;
        } else {
            h.consecutive_failures = h.consecutive_failures.saturating_add(1);
        }
        match h.state {
            CircuitState::HalfOpen => {
                if answered {
                    h.state = CircuitState::Closed;
                    h.opened_at = None;
                    h.trial_in_flight = false;
                    h.consecutive_failures = 0;
                    h.recent.clear();
                    h.recent.push_back(ok);
                } else {
                    h.open(now);
                }
            }
            CircuitState::Closed => {
                let failed = h.recent.iter().filter(|ok| !**ok).count();
                let rate_trip = h.recent.len() >= self.config.min_calls as usize
                    && failed as f64 / h.recent.len() as f64 >= self.config.failure_rate;
                if h.consecutive_failures >= self.config.consecutive_failures || rate_trip {
                    h.open(now);
                }
            }
            // A call admitted before the circuit opened finishes while it is open.
            CircuitState::Open => {}
        }
        if h.state == CircuitState::Open && before != CircuitState::Open {
            tracing::warn!(service, "circuit breaker opened");
        } else if h.state == CircuitState::Closed && before != CircuitState::Closed {
            tracing::info!(service, "circuit breaker closed");
        }
        self.publish(&services);
    }

    /// Builds and publishes the history routing reads, and when the next cooldown ends.
    fn publish(&self, services: &HashMap<String, ServiceHealth>) {
        let mut next = u64::MAX;
        let history: History = services
            .iter()
            .map(|(id, h)| {
                if h.state == CircuitState::Open
                    && !h.reported_down
                    && let Some(t) = h.opened_at
                {
                    next = next.min(self.since_start_ms(t + self.config.cooldown));
                }
                (
                    id.clone(),
                    ServiceHistory {
                        success_rate: h.success_rate(),
                        ewma_latency_ms: h.ewma_latency_ms.unwrap_or(0.0),
                        samples: h.recent.len() as u64,
                        circuit_open: h.state == CircuitState::Open,
                    },
                )
            })
            .collect();
        self.next_transition_ms.store(next, Ordering::Relaxed);
        self.published.store(Arc::new(history));
    }

    /// Every service's health, by id.
    pub fn report(&self) -> Vec<HealthReport> {
        let services = self.lock();
        let mut out: Vec<HealthReport> = services
            .iter()
            .map(|(id, h)| HealthReport {
                service_id: id.clone(),
                circuit: h.state,
                success_rate: h.success_rate(),
                ewma_latency_ms: h.ewma_latency_ms,
                calls: h.calls,
                failures: h.failures,
                violations: h.violations,
                consecutive_failures: h.consecutive_failures,
                times_opened: h.opened,
                reported_down: h.reported_down,
            })
            .collect();
        out.sort_by(|a, b| a.service_id.cmp(&b.service_id));
        out
    }

    /// Forgets a service (it left the registry).
    pub fn forget(&self, service: &str) {
        let mut services = self.lock();
        if services.remove(service).is_some() {
            self.publish(&services);
        }
    }

    /// The breaker state of one service (closed when never called).
    pub fn state(&self, service: &str) -> CircuitState {
        self.lock()
            .get(service)
            .map_or(CircuitState::Closed, |h| h.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board() -> HealthBoard {
        HealthBoard::new(BreakerConfig {
            consecutive_failures: 3,
            failure_rate: 0.5,
            min_calls: 6,
            window: 10,
            cooldown: Duration::from_secs(10),
            ewma_alpha: 0.5,
        })
    }

    #[test]
    fn consecutive_failures_open_then_cooldown_half_opens_and_a_trial_decides() {
        let b = board();
        let t0 = Instant::now();
        for _ in 0..2 {
            b.record_at("s", CallResult::Failure, t0);
        }
        assert_eq!(b.state("s"), CircuitState::Closed);
        assert_eq!(b.admit_at("s", t0), Admission::Allowed);
        b.record_at("s", CallResult::Failure, t0);
        assert_eq!(b.state("s"), CircuitState::Open);
        assert!(b.history().load()["s"].circuit_open);
        assert_eq!(
            b.admit_at("s", t0 + Duration::from_secs(9)),
            Admission::Refused
        );

        // After the cooldown: one trial at a time.
        let t1 = t0 + Duration::from_secs(10);
        b.refresh_at(t1);
        assert_eq!(b.state("s"), CircuitState::HalfOpen);
        assert!(!b.history().load()["s"].circuit_open);
        assert_eq!(b.admit_at("s", t1), Admission::Trial);
        assert_eq!(b.admit_at("s", t1), Admission::Refused);
        // The trial fails: open again for another cooldown.
        b.record_at("s", CallResult::Failure, t1);
        assert_eq!(b.state("s"), CircuitState::Open);
        assert_eq!(
            b.admit_at("s", t1 + Duration::from_secs(5)),
            Admission::Refused
        );
        let t2 = t1 + Duration::from_secs(10);
        assert_eq!(b.admit_at("s", t2), Admission::Trial);
        b.record_at("s", CallResult::Success { latency_ms: 10.0 }, t2);
        assert_eq!(b.state("s"), CircuitState::Closed);
        assert_eq!(b.admit_at("s", t2), Admission::Allowed);
        let r = &b.report()[0];
        assert_eq!(r.times_opened, 2);
        assert_eq!(r.failures, 4);
    }

    #[test]
    fn a_service_reported_down_stays_out_until_it_reports_otherwise() {
        let b = board();
        let t0 = Instant::now();
        // A report about a healthy service changes nothing, and adds no entry.
        b.report_status_at("s", ReportedStatus::Healthy, t0);
        assert_eq!(b.state("s"), CircuitState::Closed);
        assert!(b.report().is_empty());
        b.report_status_at("s", ReportedStatus::Down, t0);
        assert_eq!(b.state("s"), CircuitState::Open);
        assert!(b.history().load()["s"].circuit_open);
        assert!(b.report()[0].reported_down);
        // Held open long past the cooldown.
        let later = t0 + Duration::from_secs(600);
        b.refresh_at(later);
        assert_eq!(b.state("s"), CircuitState::Open);
        assert_eq!(b.admit_at("s", later), Admission::Refused);
        // Degraded is still up: half-open, and one trial call decides.
        b.report_status_at("s", ReportedStatus::Degraded, later);
        assert_eq!(b.state("s"), CircuitState::HalfOpen);
        assert!(!b.history().load()["s"].circuit_open);
        assert!(!b.report()[0].reported_down);
        assert_eq!(b.admit_at("s", later), Admission::Trial);
        b.record_at("s", CallResult::Success { latency_ms: 5.0 }, later);
        assert_eq!(b.state("s"), CircuitState::Closed);
        // A circuit opened on failures is not closed by the service's word, and it cools down
        // as usual.
        for _ in 0..3 {
            b.record_at("s", CallResult::Failure, later);
        }
        assert_eq!(b.state("s"), CircuitState::Open);
        b.report_status_at("s", ReportedStatus::Healthy, later);
        assert_eq!(b.state("s"), CircuitState::Open);
        b.refresh_at(later + Duration::from_secs(10));
        assert_eq!(b.state("s"), CircuitState::HalfOpen);
        // Down while already open on failures: then held past the cooldown too.
        let t1 = later + Duration::from_secs(20);
        for _ in 0..3 {
            b.record_at("t", CallResult::Failure, t1);
        }
        b.report_status_at("t", ReportedStatus::Down, t1);
        b.refresh_at(t1 + Duration::from_secs(60));
        assert_eq!(b.state("t"), CircuitState::Open);
        assert_eq!(b.report()[1].times_opened, 1);
        b.report_status_at("t", ReportedStatus::Healthy, t1 + Duration::from_secs(60));
        assert_eq!(b.state("t"), CircuitState::HalfOpen);
    }

    #[test]
    fn the_failure_rate_opens_without_a_run_of_failures() {
        let b = board();
        let t = Instant::now();
        // fail, ok, fail, ok, fail, ok: 50 % over 6 calls, never 3 in a row.
        for i in 0..5 {
            let r = if i % 2 == 0 {
                CallResult::Failure
            } else {
                CallResult::Success { latency_ms: 5.0 }
            };
            b.record_at("s", r, t);
            assert_eq!(b.state("s"), CircuitState::Closed, "call {i}");
        }
        b.record_at("s", CallResult::Failure, t);
        assert_eq!(b.state("s"), CircuitState::Open);
    }

    #[test]
    fn violations_lower_the_success_rate_but_do_not_trip_by_themselves_in_a_row() {
        let b = board();
        let t = Instant::now();
        for _ in 0..5 {
            b.record_at("s", CallResult::Violation { latency_ms: 100.0 }, t);
        }
        // Five violations in a row are not five failures in a row…
        assert_eq!(b.report()[0].consecutive_failures, 0);
        let h = b.history().load()["s"];
        assert_eq!(h.success_rate, 0.0);
        assert_eq!(h.ewma_latency_ms, 100.0);
        // …but the window's failure rate does count them once enough calls were made.
        b.record_at("s", CallResult::Violation { latency_ms: 100.0 }, t);
        assert_eq!(b.state("s"), CircuitState::Open);
    }

    #[test]
    fn ewma_and_window_follow_the_calls() {
        let b = board();
        let t = Instant::now();
        b.record_at("s", CallResult::Success { latency_ms: 100.0 }, t);
        b.record_at("s", CallResult::Success { latency_ms: 50.0 }, t);
        let h = b.history().load()["s"];
        assert_eq!(h.ewma_latency_ms, 75.0);
        assert_eq!(h.samples, 2);
        assert_eq!(h.success_rate, 1.0);
        for _ in 0..20 {
            b.record_at("s", CallResult::Success { latency_ms: 50.0 }, t);
        }
        assert_eq!(b.history().load()["s"].samples, 10);
        // A service never called is admitted and reported nowhere.
        assert_eq!(b.admit("other"), Admission::Allowed);
        assert_eq!(b.report().len(), 1);
        // A service that left the registry is forgotten, in the report and the history.
        b.forget("s");
        assert!(b.report().is_empty());
        assert!(b.history().load().is_empty());
    }

    #[test]
    fn passing_probes_neither_clear_failed_calls_nor_close_a_half_open_circuit() {
        let b = board();
        let t = Instant::now();
        b.record_at("s", CallResult::Failure, t);
        b.record_at("s", CallResult::Failure, t);
        b.record_at("s", CallResult::Probe, t);
        // The run of failed calls continues: the third failure opens the circuit.
        b.record_at("s", CallResult::Failure, t);
        assert_eq!(b.state("s"), CircuitState::Open);
        let later = t + Duration::from_secs(11);
        assert_eq!(b.admit_at("s", later), Admission::Trial);
        b.record_at("s", CallResult::Probe, later);
        assert_eq!(
            b.state("s"),
            CircuitState::HalfOpen,
            "a probe closed the circuit"
        );
        // The probe released its trial: a real call gets it and decides.
        assert_eq!(b.admit_at("s", later), Admission::Trial);
        b.record_at("s", CallResult::Success { latency_ms: 3.0 }, later);
        assert_eq!(b.state("s"), CircuitState::Closed);
    }

    #[test]
    fn a_cancelled_trial_lets_the_next_one_through() {
        let b = board();
        let t = Instant::now();
        for _ in 0..3 {
            b.record_at("s", CallResult::Failure, t);
        }
        let later = t + Duration::from_secs(11);
        assert_eq!(b.admit_at("s", later), Admission::Trial);
        b.cancel_trial("s");
        assert_eq!(b.admit_at("s", later), Admission::Trial);
    }
}
