//! caio-api: CAIO over HTTP — the endpoints of DESIGN.md §5 on axum, with authentication (API
//! keys, JWTs), roles, tenant isolation, rate limits, signed webhooks, versioned policies, an
//! audit log, decision traces persisted before each answer, metrics and graceful shutdown.
//!
//! `caio-server` is a thin binary over [`run`]; tests start the same application on an
//! ephemeral port with [`serve`]. Only this crate serves HTTP.

mod app;
pub mod auth;
pub mod error;
pub mod extract;
pub mod frame;
pub mod handlers;
pub mod idempotency;
pub mod licensing;
pub mod metrics;
pub mod openapi;
pub mod secrets;
pub mod state;
pub mod tenancy;
pub mod tracelog;

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use caio_config::{Config, LogFormat};

pub use app::app;
pub use state::{AppState, StartReport, check_preload};

/// Serves `state` on `listener` until `shutdown` completes, then drains in-flight requests for
/// at most the configured grace period.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = app(Arc::clone(&state));
    let grace = Duration::from_secs(state.config.shutdown_grace_s);
    let (began, draining) = tokio::sync::oneshot::channel::<()>();
    let flag = Arc::clone(&state);
    let signal = async move {
        shutdown.await;
        flag.draining.store(true, Ordering::SeqCst);
        tracing::info!("shutdown requested: draining in-flight requests");
        let _ = began.send(());
    };
    // Responses leave in one write; without TCP_NODELAY a client's delayed ACK could still
    // hold back the tail of a large one.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
    });
    // Active health probes of every contract's health endpoint, until the server stops.
    let interval = state.config.gateway.probe_interval_s;
    let prober = (interval > 0).then(|| {
        let st = Arc::clone(&state);
        tokio::spawn(async move {
            let period = Duration::from_secs(interval);
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let snapshot = st.registry().snapshot();
                let results = st.gateway.probe_once(&snapshot).await;
                let failed = results
                    .iter()
                    .filter(|r| r.outcome != "ok" && r.outcome != "skipped")
                    .count();
                if failed > 0 {
                    tracing::warn!(probed = results.len(), failed, "health probes failed");
                }
            }
        })
    });
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(signal);
    let deadline = async move {
        match draining.await {
            Ok(()) => tokio::time::sleep(grace).await,
            // The server ended without a shutdown signal.
            Err(_) => std::future::pending::<()>().await,
        }
    };
    let _stop_prober = AbortOnDrop(prober);
    tokio::select! {
        r = server.into_future() => r,
        () = deadline => {
            tracing::warn!(grace_s = grace.as_secs(), "grace period over: closing with requests in flight");
            Ok(())
        }
    }
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Installs the log subscriber the configuration asks for (JSON or text, to stderr).
pub fn init_logging(config: &Config) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .with_context(|| format!("log.level `{}` is not a tracing filter", config.log.level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match config.log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("installing the logger: {e}"))
}

/// Builds the server from `config`, prints what an operator must see once (a generated admin
/// key) to stderr, binds and serves until SIGTERM/SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let listen = config.listen.clone();
    let (state, report) = AppState::build(config)?;
    if let Some(key) = &report.generated_admin_key {
        // Deliberately not through the logger (stderr, often shipped elsewhere): this is for the
        // person at the terminal, once, on stdout.
        #[allow(clippy::print_stdout)]
        {
            println!(
                "\ncaio-server (development): generated admin API key, shown once:\n\n    {key}\n\nuse it as `Authorization: Bearer <key>`; set CAIO_BOOTSTRAP_ADMIN_KEY to choose one.\n"
            );
        }
    }
    if let Some(v) = &report.policy_file_ignored {
        tracing::warn!(
            file_version = %v,
            active_version = %report.policy_version,
            "--policies differs from the active policy version, which was set through the API and stays active; PUT /api/v1/policies to change it"
        );
    }
    if let Some(segment) = &report.trace_truncated_segment {
        tracing::warn!(
            bytes = report.trace_truncated_bytes,
            segment = %segment.display(),
            "cut a torn last record off the newest sealed trace segment (a power loss right after a seal); the log goes on from its last complete record"
        );
    } else if report.trace_truncated_bytes > 0 {
        tracing::warn!(
            bytes = report.trace_truncated_bytes,
            "cut a torn last record off the trace log (a crash during a write)"
        );
    }
    if report.trace_removed_segments > 0 {
        tracing::info!(
            deleted = report.trace_removed_segments,
            "deleted the oldest sealed trace segments beyond traces.retain_segments"
        );
    }
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    tracing::info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or(listen),
        mode = state.config.mode.as_str(),
        services = report.preloaded_services,
        policy_version = %report.policy_version,
        traces = report.trace_records,
        trace_first_seq = report.trace_first_seq,
        trace_segments = report.trace_segments,
        "caio-server ready"
    );
    serve(listener, state, shutdown_signal()).await?;
    tracing::info!("caio-server stopped");
    Ok(())
}

/// Aborts a background task when the server stops.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            t.abort();
        }
    }
}
