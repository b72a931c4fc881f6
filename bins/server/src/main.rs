//! `caio-server`: CAIO over HTTP.
//!
//! This build loads and checks what the server would serve — the contracts of `--services` and
//! the policy set of `--policies` — and reports the registry and policy versions it would start
//! with. The HTTP API (DESIGN.md §5) arrives with the server issue; until then the binary refuses
//! to pretend it is serving and exits with code 2 unless `--check` was asked for.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use caio_gateway::loader;
use caio_registry::Registry;
use clap::Parser;

/// CAIO server.
#[derive(Debug, Parser)]
#[command(name = "caio-server", version, about)]
struct Args {
    /// Configuration file (caio.yaml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "CAIO_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Data directory (trace log, signing key).
    #[arg(long, env = "CAIO_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Directory of service contracts to preload.
    #[arg(long)]
    services: Option<PathBuf>,
    /// Policy set to preload.
    #[arg(long)]
    policies: Option<PathBuf>,
    /// Load and check the preload, print what would be served, and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let contracts = match &args.services {
        Some(dir) => loader::load_services_dir(dir)?,
        None => Vec::new(),
    };
    let compiled = match &args.policies {
        Some(p) => loader::load_policies(p)?.1,
        None => caio_rules_empty()?,
    };
    let registry = Arc::new(caio_registry::MemoryRegistry::with_contracts(contracts)?);
    let snapshot = registry.snapshot();
    println!(
        "registry {} ({} services)",
        snapshot.version(),
        snapshot.len()
    );
    println!(
        "policies {} ({} rules)",
        compiled.version,
        compiled.rules.len()
    );
    if args.check {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "caio-server: this build has no HTTP API yet (it arrives with the server issue); use `caio route` for offline routing, or --check to validate the preload"
    );
    Ok(ExitCode::from(2))
}

fn caio_rules_empty() -> anyhow::Result<caio_gateway::CompiledPolicies> {
    caio_gateway::compile_policy_set(&Default::default())
        .map_err(|e| anyhow::anyhow!("compiling the empty policy set: {e}"))
}
