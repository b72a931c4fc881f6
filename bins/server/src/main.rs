//! `caio-server`: CAIO over HTTP. Parses arguments, loads the configuration (`caio.yaml`, then
//! `CAIO_*` variables, then these flags), and runs caio-api until SIGTERM/SIGINT.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of the system allocator: under load the server allocates and frees small
/// buffers on two threads, and glibc's malloc/free took about 10 % of its CPU
/// (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// CAIO server. With no configuration it runs the embedded default: memory registry, file traces
/// under ./data, development mode.
#[derive(Debug, Parser)]
#[command(name = "caio-server", version, about)]
struct Args {
    /// Configuration file (caio.yaml); also CAIO_CONFIG.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on (overrides CAIO_LISTEN and the file).
    #[arg(long)]
    listen: Option<String>,
    /// Data directory (overrides CAIO_DATA_DIR and the file).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Directory of service contracts to register at start.
    #[arg(long)]
    services: Option<PathBuf>,
    /// Policy set to activate at start.
    #[arg(long)]
    policies: Option<PathBuf>,
    /// Check the configuration and the preload the way the server would, print the result, exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let env = |k: &str| std::env::var(k).ok();
    let mut config = match caio_config::load(args.config.as_deref(), &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("caio-server: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    if let Some(s) = args.services {
        config.services_dir = Some(s);
    }
    if let Some(p) = args.policies {
        config.policies_file = Some(p);
    }
    if args.check {
        let mut checks = caio_config::check(&config);
        checks.extend(caio_api::check_preload(&config));
        for c in &checks {
            println!(
                "{:<4} {:<32} {}",
                if c.passed() { "PASS" } else { "FAIL" },
                c.name,
                c.detail
            );
        }
        return if checks.iter().all(|c| c.passed()) {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        };
    }
    if let Err(e) = caio_api::init_logging(&config) {
        eprintln!("caio-server: {e:#}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("caio-worker")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("caio-server: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(caio_api::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("caio-server: {e:#}");
            ExitCode::from(1)
        }
    }
}
