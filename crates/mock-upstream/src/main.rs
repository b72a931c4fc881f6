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
    #[allow(
        clippy::print_stdout,
        reason = "the bound address is the binary's output, read by scripts"
    )]
    {
        println!("listening on {}", server.url());
    }
    stopped().await?;
    server.shutdown().await;
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
async fn stopped() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
