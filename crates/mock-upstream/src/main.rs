//! `caio-mock-upstream [--listen 127.0.0.1:18090]`: serves the mock's default behaviours (OpenAI,
//! Anthropic, CAIO's service protocol, echo) until SIGTERM or Ctrl-C — the "direct" baseline of a
//! load test.

use std::net::SocketAddr;

use caio_mock_upstream::MockUpstream;
use clap::Parser;

/// A scripted AI-service upstream serving its default behaviours.
#[derive(Debug, Parser)]
#[command(name = "caio-mock-upstream", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:18090")]
    listen: SocketAddr,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let server = MockUpstream::start_on(args.listen).await?;
    // Nobody can ask a separate process for its recorded requests: keep memory flat under load.
    server.set_recording(false);
    // Before the address is printed: a script that reads it may send SIGTERM at once, and a
    // signal without a handler kills the process instead of stopping it cleanly.
    let stop = stop_signals()?;
    #[allow(
        clippy::print_stdout,
        reason = "the bound address is the binary's output, read by scripts"
    )]
    {
        println!("listening on {}", server.url());
    }
    stop.await;
    server.shutdown().await;
    Ok(())
}

/// Installs the SIGTERM and SIGINT (Ctrl-C) handlers now and returns a future that resolves on
/// either signal.
#[cfg(unix)]
fn stop_signals() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Resolves on Ctrl-C (the handler is installed at the first poll: no SIGTERM to race here).
#[cfg(not(unix))]
fn stop_signals() -> std::io::Result<impl Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
