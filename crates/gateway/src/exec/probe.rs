//! Active health probes: `GET` each contract's `health` endpoint and feed the answer to the
//! health board, beside the passive outcomes of real calls. A failing probe counts as a failed
//! call (so a service that is down opens its circuit before a client's request finds out); a
//! passing one counts as a success without a latency sample (a health endpoint's speed says
//! little about the real endpoint's). Probes go through the breaker like calls: an open circuit
//! is not probed, and a half-open one's trial may be a probe.

use std::time::{Duration, Instant};

use bytes::Bytes;
use caio_registry::Snapshot;
use http::{HeaderMap, Method, Uri};
use serde::Serialize;

use super::client::{CallError, Outbound};
use super::health::{Admission, CallResult};
use super::{Gateway, ms};

/// Longest a probe waits.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeResult {
    /// The service.
    pub service_id: String,
    /// `ok`, `skipped` (circuit open) or a failure code.
    pub outcome: String,
    /// Time the probe took.
    pub latency_ms: f64,
}

impl Gateway {
    /// Probes every service of `snapshot` that declares a `health` endpoint, all at once.
    pub async fn probe_once(&self, snapshot: &Snapshot) -> Vec<ProbeResult> {
        let probes = snapshot.entries().iter().filter_map(|e| {
            let api = &e.contract.service.api;
            let health = api.endpoints.get("health")?;
            let url = format!("{}{}", api.base_url.trim_end_matches('/'), health.path);
            Some((e.id.to_string(), health.method.clone(), url, api.timeout_ms))
        });
        let tasks = probes.map(|(id, method, url, timeout_ms)| async move {
            let started = Instant::now();
            let outcome = match self.health.admit(&id) {
                Admission::Refused => "skipped".to_owned(),
                _ => {
                    let result = self.probe(&method, &url, timeout_ms).await;
                    match result {
                        Ok(()) => {
                            self.health.record(&id, CallResult::Probe);
                            "ok".to_owned()
                        }
                        Err(e) => {
                            if e.counts_against_service() {
                                self.health.record(&id, CallResult::Failure);
                            } else {
                                self.health.cancel_trial(&id);
                            }
                            e.code().to_owned()
                        }
                    }
                }
            };
            ProbeResult {
                service_id: id,
                outcome,
                latency_ms: ms(started.elapsed()),
            }
        });
        futures_util::future::join_all(tasks).await
    }

    async fn probe(&self, method: &str, url: &str, timeout_ms: u64) -> Result<(), CallError> {
        let uri: Uri = url
            .parse()
            .map_err(|e| CallError::Config(format!("invalid health URL `{url}`: {e}")))?;
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| CallError::Config(format!("invalid method `{method}`")))?;
        let timeout = Duration::from_millis(timeout_ms).min(PROBE_TIMEOUT);
        let answer = self
            .client
            .send(
                Outbound {
                    method,
                    uri,
                    headers: HeaderMap::new(),
                    body: Bytes::new(),
                },
                timeout,
            )
            .await?;
        if answer.status.is_success() {
            Ok(())
        } else {
            Err(super::adapter::status_error(
                answer.status.as_u16(),
                &answer.headers,
                &answer.body,
            ))
        }
    }
}
