//! Streaming execution: like [`Gateway::run`](super::Gateway::run), but an `openai_chat`
//! service's answer is handed back as soon as its status and headers are in, so its server-sent
//! events can be passed through chunk by chunk. Retries and fallbacks happen only before that
//! point: once the first byte went to the client, a failure ends the stream.
//!
//! A candidate with another adapter is called normally and its complete answer is returned for
//! the caller to turn into events.

use std::sync::Arc;
use std::time::{Duration, Instant};

use caio_contracts::decision::Decision;
use caio_contracts::model::Adapter;
use caio_contracts::request::RouteRequest;
use caio_registry::Snapshot;
use http::Response;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::adapter::{self, CallContext};
use super::client::CallError;
use super::health::{Admission, CallResult};
use super::{
    Attempt, ExecuteOptions, Execution, ExecutionError, ExecutionStatus, Gateway, fallback, ms,
    whole_ms,
};

/// How a passed-through stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// The upstream finished its body.
    Complete,
    /// The client went away first.
    ClientLeft,
    /// The upstream body broke off.
    UpstreamBroke(String),
}

/// What a streaming run produced.
#[derive(Debug)]
pub enum Streamed {
    /// An `openai_chat` service answered 2xx: forward `response`'s body as it arrives, then
    /// report the end with [`Gateway::stream_finished`].
    Stream {
        /// The answering service.
        service_id: String,
        /// Its response; the body is still arriving.
        response: Response<Incoming>,
        /// The execution so far (attempts, fallbacks); `status` is `succeeded`.
        execution: Execution,
        /// When the run started, for the final latency.
        started: Instant,
    },
    /// A service of another adapter answered completely.
    Complete {
        /// The answering service's adapter.
        adapter: Adapter,
        /// The execution, with the output.
        execution: Execution,
    },
    /// Every candidate failed (or the options asked for a dry run).
    Done(Execution),
}

impl Gateway {
    /// Runs a decision, streaming an `openai_chat` answer.
    pub async fn run_stream(
        &self,
        snapshot: &Snapshot,
        decision: &Decision,
        request: &RouteRequest,
        options: &ExecuteOptions,
    ) -> Streamed {
        let first_adapter = decision
            .ranking
            .first()
            .and_then(|c| snapshot.get(&c.service_id))
            .map(|e| e.contract.service.api.adapter);
        if options.dry_run || first_adapter != Some(Adapter::OpenaiChat) {
            let ex = self.run(snapshot, decision, request, options).await;
            let answered_by = ex
                .service_id
                .as_deref()
                .and_then(|id| snapshot.get(id))
                .map(|e| e.contract.service.api.adapter);
            return match (ex.status, answered_by) {
                (ExecutionStatus::Succeeded, Some(adapter)) => Streamed::Complete {
                    adapter,
                    execution: ex,
                },
                _ => Streamed::Done(ex),
            };
        }
        let started = Instant::now();
        // A request may shorten the deadline, never lengthen it past the configured one.
        let budget = options
            .deadline_ms
            .map_or(self.config.default_deadline, |ms| {
                Duration::from_millis(ms).min(self.config.default_deadline)
            });
        let deadline = started + budget;
        let mut ex = Execution::failed();
        let capability = request
            .requirements
            .capabilities
            .first()
            .map_or("", String::as_str);
        let candidates: Vec<_> = decision
            .ranking
            .iter()
            .take(1 + self.config.max_fallbacks as usize)
            .collect();
        let mut last: Option<CallError> = None;
        'candidates: for (i, candidate) in candidates.iter().enumerate() {
            let id = candidate.service_id.as_ref();
            let next = candidates.get(i + 1).map(|c| c.service_id.to_string());
            let fall = |ex: &mut Execution, reason: &str| fallback(ex, id, next.as_deref(), reason);
            let Some(entry) = snapshot.get(id) else {
                fall(&mut ex, "service_gone");
                continue;
            };
            let api = &entry.contract.service.api;
            if api.adapter != Adapter::OpenaiChat {
                // A non-streaming fallback: its complete answer comes back as one event.
                let one = ExecuteOptions {
                    deadline_ms: Some(whole_ms(deadline.saturating_duration_since(Instant::now()))),
                    ..options.clone()
                };
                let mut sub = decision.clone();
                sub.ranking = vec![(*candidate).clone()];
                // Judged against its own guarantees, not the chosen service's.
                sub.guarantees = caio_guarantees::compose_one(
                    Arc::clone(&candidate.service_id),
                    &entry.contract.service,
                    candidate.terms.estimated_cost,
                );
                let rest = self.run(snapshot, &sub, request, &one).await;
                ex.attempts.extend(rest.attempts);
                ex.violations.extend(rest.violations);
                ex.warnings.extend(rest.warnings);
                if rest.status == ExecutionStatus::Succeeded {
                    ex.status = ExecutionStatus::Succeeded;
                    ex.service_id = rest.service_id;
                    ex.output = rest.output;
                    ex.latency_ms = ms(started.elapsed());
                    return Streamed::Complete {
                        adapter: api.adapter,
                        execution: ex,
                    };
                }
                let reason = rest.error.map_or_else(|| "failed".to_owned(), |e| e.code);
                fall(&mut ex, &reason);
                continue;
            }
            let credential = match self.credential(id, api) {
                Ok(c) => c,
                Err(e) => {
                    fall(&mut ex, e.code());
                    last = Some(e);
                    continue;
                }
            };
            let admission = self.health.admit(id);
            if admission == Admission::Refused {
                last = Some(CallError::Config(format!(
                    "`{id}`'s circuit breaker is open"
                )));
                fall(&mut ex, "circuit_open");
                continue;
            }
            // Released on every way out but a stream handed to the caller, whose end
            // (`stream_finished`) records or releases it.
            let mut trial = super::Trial {
                health: &self.health,
                service: id,
                armed: admission == Admission::Trial,
            };
            let max = self.config.max_attempts.max(1);
            let mut n = 0;
            loop {
                n += 1;
                let now = Instant::now();
                let left = deadline.saturating_duration_since(now);
                if left.is_zero() {
                    self.health.cancel_trial(id);
                    break 'candidates;
                }
                let timeout = Duration::from_millis(api.timeout_ms).min(left);
                let ctx = CallContext {
                    decision_id: &decision.decision_id,
                    service_id: id,
                    capability,
                    payload: &request.payload,
                    attempt_timeout: timeout,
                    attempt: n,
                    credential: credential.as_deref(),
                };
                let result = match adapter::build(api, &ctx, true) {
                    Ok(out) => self.client.send_streaming(out, timeout).await,
                    Err(e) => Err(e),
                };
                let result = match result {
                    Ok(resp) if resp.status().is_success() => Ok(resp),
                    Ok(resp) => {
                        // An error answer is small: read it for the record.
                        let status = resp.status().as_u16();
                        let headers = resp.headers().clone();
                        let body = tokio::time::timeout(
                            Duration::from_secs(1),
                            http_body_util::Limited::new(resp.into_body(), 64 * 1024).collect(),
                        )
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .map(|c| c.to_bytes())
                        .unwrap_or_default();
                        Err(adapter::status_error(status, &headers, &body))
                    }
                    Err(e) => Err(e),
                };
                let took = now.elapsed();
                match result {
                    Ok(response) => {
                        ex.attempts.push(Attempt {
                            service_id: id.to_owned(),
                            attempt: n,
                            outcome: "ok".into(),
                            status: Some(response.status().as_u16()),
                            latency_ms: ms(took),
                            error: None,
                            backoff_ms: None,
                            trial: admission == Admission::Trial,
                        });
                        ex.status = ExecutionStatus::Succeeded;
                        ex.service_id = Some(id.to_owned());
                        trial.armed = false;
                        ex.warnings.push(
                            "streamed: the output went to the client, not to the trace".into(),
                        );
                        return Streamed::Stream {
                            service_id: id.to_owned(),
                            response,
                            execution: ex,
                            started,
                        };
                    }
                    Err(e) => {
                        if e.counts_against_service() {
                            self.health.record(id, CallResult::Failure);
                        }
                        let wait = if e.retryable() && n < max {
                            self.backoff(n, &e, deadline)
                        } else {
                            None
                        };
                        ex.attempts.push(Attempt {
                            service_id: id.to_owned(),
                            attempt: n,
                            outcome: e.code().into(),
                            status: match &e {
                                CallError::Status { status, .. } => Some(*status),
                                _ => None,
                            },
                            latency_ms: ms(took),
                            error: Some(e.to_string()),
                            backoff_ms: wait.map(whole_ms),
                            trial: admission == Admission::Trial,
                        });
                        let code = e.code();
                        last = Some(e);
                        match wait {
                            Some(w) => {
                                tokio::time::sleep(w).await;
                                if self.health.admit(id) == Admission::Refused {
                                    fall(&mut ex, code);
                                    continue 'candidates;
                                }
                            }
                            None => {
                                fall(&mut ex, code);
                                continue 'candidates;
                            }
                        }
                    }
                }
            }
        }
        ex.latency_ms = ms(started.elapsed());
        ex.error = Some(match last {
            _ if Instant::now() >= deadline => ExecutionError {
                code: "deadline_exceeded".into(),
                message: format!("the {} ms deadline passed", whole_ms(budget)),
            },
            Some(e) => ExecutionError {
                code: e.code().into(),
                message: e.to_string(),
            },
            None => ExecutionError {
                code: "no_candidate".into(),
                message: "no candidate could be called".into(),
            },
        });
        Streamed::Done(ex)
    }

    /// Records how a stream handed out by [`run_stream`](Self::run_stream) ended: its latency
    /// (to the last byte) feeds the service's health and, against the decision's bound, the
    /// guarantee check. A client that left mid-stream says nothing about the service. Returns
    /// the final execution.
    pub fn stream_finished(
        &self,
        snapshot: &Snapshot,
        decision: &Decision,
        mut execution: Execution,
        started: Instant,
        end: StreamEnd,
    ) -> Execution {
        let Some(id) = execution.service_id.clone() else {
            return execution;
        };
        let latency = started.elapsed();
        execution.latency_ms = ms(latency);
        match end {
            StreamEnd::Complete => {}
            StreamEnd::ClientLeft => {
                // Nothing was learned about the service; a half-open trial is released.
                self.health.cancel_trial(&id);
                execution.warnings.push(
                    "the client disconnected before the stream ended; the service was not \
                     judged on it"
                        .into(),
                );
                return execution;
            }
            StreamEnd::UpstreamBroke(e) => {
                self.health.record(&id, CallResult::Failure);
                execution.status = ExecutionStatus::Failed;
                execution.error = Some(ExecutionError {
                    code: "stream_broken".into(),
                    message: e,
                });
                return execution;
            }
        }
        let composed = if decision.service_id.as_ref() == id {
            decision.guarantees.clone()
        } else {
            let (Some(c), Some(entry)) = (
                decision
                    .ranking
                    .iter()
                    .find(|c| c.service_id.as_ref() == id),
                snapshot.get(&id),
            ) else {
                return execution;
            };
            caio_guarantees::compose_one(
                Arc::clone(&c.service_id),
                &entry.contract.service,
                c.terms.estimated_cost,
            )
        };
        let latency_ms = ms(latency);
        let broken = caio_guarantees::enforce(
            &caio_guarantees::Observed {
                latency_ms: Some(latency_ms),
                ..Default::default()
            },
            &composed,
        );
        if broken.is_empty() {
            self.health.record(&id, CallResult::Success { latency_ms });
        } else {
            self.health
                .record(&id, CallResult::Violation { latency_ms });
            execution
                .violations
                .extend(broken.into_iter().map(|v| super::ServiceViolation {
                    service_id: id.clone(),
                    property: v.property,
                    bound: v.bound,
                    observed: v.observed,
                    detail: v.detail,
                }));
        }
        execution
    }
}
