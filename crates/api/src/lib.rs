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

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
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
    let server = accept(
        listener,
        app,
        Duration::from_millis(state.config.limits.header_timeout_ms),
        state.config.limits.max_connections,
        signal,
    );
    let deadline = async move {
        match draining.await {
            Ok(()) => tokio::time::sleep(grace).await,
            // The server ended without a shutdown signal.
            Err(_) => std::future::pending::<()>().await,
        }
    };
    let _stop_prober = AbortOnDrop(prober);
    tokio::select! {
        r = server => r,
        () = deadline => {
            tracing::warn!(grace_s = grace.as_secs(), "grace period over: closing with requests in flight");
            Ok(())
        }
    }
}

/// Raises the soft open-file limit to what `max_connections` needs (up to the hard limit), and
/// warns when the hard limit is too low (docs/configuration.md, `limits.max_connections`).
fn open_file_limit(max_connections: usize) {
    use caio_config::descriptors;
    let plan = descriptors::descriptor_plan(max_connections, descriptors::file_limits());
    match descriptors::apply(&plan) {
        Ok(soft) if plan.raise_soft_to.is_some() => tracing::info!(
            soft_limit = soft,
            needed = plan.needed,
            "raised the open-file limit for limits.max_connections"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "open-file limit"),
    }
    if let Some(problem) = &plan.problem {
        tracing::warn!("{problem}");
    }
}

/// Serves HTTP/1.1 connections from `listener` with `app` until `shutdown` completes, then lets
/// every open connection finish the request it is on (idle ones close at once) and returns when
/// all are closed.
///
/// Per connection: TCP_NODELAY (responses leave in one write; a client's delayed ACK could hold
/// back the tail of a large one), the peer's address as `ConnectInfo`, and a deadline for every
/// request head, counted from the connection's start or the end of the previous response: a
/// client that sends its headers too slowly, or keeps a connection open without sending a
/// request, is disconnected instead of holding a connection (and a file descriptor) forever.
/// At most `max_connections` are served at once; further ones wait in the listen backlog.
async fn accept(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    header_timeout: Duration,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    use axum::extract::ConnectInfo;
    use tower::ServiceExt;

    let max = u32::try_from(max_connections.clamp(1, tokio::sync::Semaphore::MAX_PERMITS))
        .unwrap_or(u32::MAX);
    let slots = Arc::new(tokio::sync::Semaphore::new(max as usize));
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut full_since: Option<std::time::Instant> = None;
    loop {
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if full_since.is_none() {
                    full_since = Some(std::time::Instant::now());
                    tracing::warn!(
                        max_connections,
                        "connection limit reached: new connections wait in the backlog"
                    );
                }
                tokio::select! {
                    slot = Arc::clone(&slots).acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        if let Some(since) = full_since.take() {
            tracing::info!(
                waited_ms = since.elapsed().as_millis() as u64,
                "below the connection limit again"
            );
        }
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors, most likely: wait instead of spinning.
                    tracing::error!(error = %e, "accepting a connection failed");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        () = &mut shutdown => break,
                    }
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let service = hyper_util::service::TowerToHyperService::new(app.clone().map_request(
            move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(remote));
                req
            },
        ));
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout);
            let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
            let mut conn = std::pin::pin!(conn);
            let mut draining = false;
            loop {
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, peer = %remote, "connection ended");
                        }
                        break;
                    }
                    changed = stopping.changed(), if !draining => {
                        draining = true;
                        if changed.is_ok() {
                            conn.as_mut().graceful_shutdown();
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a slot until it ends.
    let _all = slots.acquire_many(max).await;
    Ok(())
}

/// Errors of one connection (the peer gave up before it was accepted), not of the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Completes on SIGTERM or SIGINT (Ctrl-C). The handlers are installed by this call, not at the
/// future's first poll: a signal sent as soon as the server answers (by a script that waited for
/// its readiness) must find them, or it kills the process instead of draining it. A handler that
/// cannot be installed leaves that signal to its default action.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        let wait = |s: Option<tokio::signal::unix::Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        async move {
            tokio::select! {
                () = wait(term) => {}
                () = wait(int) => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
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
    open_file_limit(config.limits.max_connections);
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
    // Before binding: once the port answers, SIGTERM must drain the server.
    let shutdown = shutdown_signal();
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
    serve(listener, state, shutdown).await?;
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
