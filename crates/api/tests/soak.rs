//! A bounded soak: 60 seconds (`CAIO_SOAK_SECS` to change) of executions through a real server
//! against a mock upstream that keeps failing in scripted ways (5xx bursts, resets, malformed
//! answers, timeouts), with retries, fallbacks and circuit breakers at work. It checks that memory
//! stays flat once warm (growth per execution far below one response), that connections to the
//! upstream stay pooled, that nothing stays in flight, and that every request got an answer.
//!
//! Its own test binary, so the process's memory is this test's alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "it/support.rs"]
#[allow(dead_code)]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use caio_mock_upstream::{Behavior, MockUpstream};
use reqwest::{Method, StatusCode};
use serde_json::json;

use support::{ADMIN_KEY, Server};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn contract(id: &str, url: &str, path: &str, accuracy: f64) -> String {
    support::contract_yaml(
        id,
        url,
        "openai_chat",
        "chat_completion",
        accuracy,
        &format!(
            "    endpoints: {{ execute: {{ method: POST, path: {path} }} }}\n    timeout_ms: 300\n"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_of_faults_leaves_memory_flat() {
    let secs: u64 = std::env::var("CAIO_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let mock = MockUpstream::start().await.unwrap();
    mock.set_recording(false);
    let paths = [
        "/a/v1/chat/completions",
        "/b/v1/chat/completions",
        "/c/v1/chat/completions",
    ];
    for p in paths {
        mock.set_default(p, Behavior::OpenAiChat);
    }
    let s = Server::start_with(|c| {
        c.services_dir = None;
        c.rate_limit.enabled = false;
        c.gateway.backoff_base_ms = 1;
        c.gateway.backoff_max_ms = 5;
        c.gateway.breaker.cooldown_s = 1;
    })
    .await;
    for (i, p) in paths.iter().enumerate() {
        let id = ["a", "b", "c"][i];
        let r = s
            .yaml(
                Method::POST,
                "/api/v1/services",
                ADMIN_KEY,
                &contract(id, &mock.url(), p, 0.99 - i as f64 * 0.02),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    let key = s.client_key("acme", &["chat"], 2).await;
    let body = json!({"request": {
        "requirements": {"capabilities": ["chat_completion"]},
        "payload": {"messages": [{"role": "user", "content": "soak"}]}
    }});

    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    // 422: every circuit was open at that moment, so routing found no feasible service.
    let no_route = Arc::new(AtomicU64::new(0));
    let other = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let end = started + Duration::from_secs(secs);
    let warm_at = started + Duration::from_secs(secs / 6);
    let mut warm: Option<(u64, u64)> = None;
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (http, url, key, body) = (
                s.http.clone(),
                s.url("/api/v1/execute"),
                key.clone(),
                body.clone(),
            );
            let (ok, failed, other) = (Arc::clone(&ok), Arc::clone(&failed), Arc::clone(&other));
            let no_route = Arc::clone(&no_route);
            tokio::spawn(async move {
                while Instant::now() < end {
                    let r = http.post(&url).bearer_auth(&key).json(&body).send().await;
                    match r.map(|r| r.status()) {
                        Ok(StatusCode::OK) => ok.fetch_add(1, Ordering::Relaxed),
                        Ok(StatusCode::BAD_GATEWAY) => failed.fetch_add(1, Ordering::Relaxed),
                        Ok(StatusCode::UNPROCESSABLE_ENTITY) => {
                            no_route.fetch_add(1, Ordering::Relaxed)
                        }
                        _ => other.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    // The fault driver: every 300 ms a burst of three faults on one of the services.
    let faults = [
        support::status(503),
        Behavior::Reset,
        Behavior::Malformed,
        Behavior::Delayed {
            delay: Duration::from_millis(400),
            then: Box::new(Behavior::OpenAiChat),
        },
        support::status(500),
        Behavior::Oversized { bytes: 9 << 20 },
    ];
    let mut n = 0usize;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let f = faults[n % faults.len()].clone();
        mock.script(paths[n % paths.len()], vec![f; 3]);
        n += 1;
        if warm.is_none() && Instant::now() >= warm_at {
            let so_far = ok.load(Ordering::Relaxed)
                + failed.load(Ordering::Relaxed)
                + no_route.load(Ordering::Relaxed);
            warm = Some((rss_kib(), so_far));
        }
    }
    for w in workers {
        w.await.unwrap();
    }
    let done = ok.load(Ordering::Relaxed)
        + failed.load(Ordering::Relaxed)
        + no_route.load(Ordering::Relaxed);
    let (warm_rss, warm_done) = warm.unwrap();
    let final_rss = rss_kib();
    let executions = done.saturating_sub(warm_done).max(1);
    let growth = final_rss.saturating_sub(warm_rss);
    let per_execution = growth as f64 * 1024.0 / executions as f64;
    eprintln!(
        "soak: {secs} s, {done} executions ({} ok, {} failed upstream, {} with every circuit \
         open, {} other), RSS {warm_rss} → {final_rss} KiB after warm-up, {per_execution:.0} B \
         per execution, {} upstream connections",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        no_route.load(Ordering::Relaxed),
        other.load(Ordering::Relaxed),
        mock.total_connections()
    );
    assert_eq!(
        other.load(Ordering::Relaxed),
        0,
        "answers other than 200/422/502"
    );
    assert!(
        ok.load(Ordering::Relaxed) * 4 > done,
        "fewer than a quarter of the executions succeeded"
    );
    // Each execution appends two trace records (about 5 KB each) to the file log; its index
    // keeps a few hundred bytes per record in memory. A leak of anything per request (a body, a
    // connection, a task) would cost kilobytes per execution.
    assert!(
        per_execution < 1024.0,
        "memory grew {growth} KiB over {executions} executions ({per_execution:.0} B each)"
    );
    // The pool reuses connections: resets and timeouts replace some, never one per request.
    assert!(
        (mock.total_connections() as u64) < done / 4,
        "{} connections for {done} executions",
        mock.total_connections()
    );
    let metrics = s
        .call(Method::GET, "/metrics", None, support::Body::None)
        .await
        .text;
    assert!(
        metrics.contains("caio_http_requests_in_flight 1"),
        "only the /metrics request itself"
    );
}
