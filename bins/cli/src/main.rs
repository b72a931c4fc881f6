//! `caio`: validate documents, route requests offline, and verify recorded decisions.
//!
//! Exit codes: 0 ok; 1 the answer is no (no route, invalid input, failed verification); 2 usage.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod doctor;
mod output;
mod smoke;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use caio_contracts::Principal;
use caio_gateway::loader::{self, LoadError};
use caio_gateway::{RouteError, Router};
use caio_registry::MemoryRegistry;
use clap::{Parser, Subcommand};

/// CAIO — route AI requests to the services whose contracts fit, and prove why.
#[derive(Debug, Parser)]
#[command(name = "caio", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate contracts, requests, principals and policy sets (kind detected per file).
    Validate {
        /// Files to validate.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Route a request against contracts and policies, offline.
    Route {
        /// Directory of service contracts (*.yaml, *.yml, *.json).
        #[arg(long)]
        services: PathBuf,
        /// Policy set file.
        #[arg(long)]
        policies: PathBuf,
        /// Route request file (YAML or JSON).
        #[arg(long)]
        request: PathBuf,
        /// Principal file; default `{id: cli, tenant: public, permissions: [], trust_level: 0}`.
        #[arg(long)]
        principal: Option<PathBuf>,
        /// Print the decision (or the error) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Verify a recorded decision against the contracts and policies it claims to have used.
    Verify {
        /// The decision, as printed by `caio route --json` or returned by the server.
        decision: PathBuf,
        /// Directory of service contracts.
        #[arg(long)]
        services: PathBuf,
        /// Policy set file.
        #[arg(long)]
        policies: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check the hash chain of a trace log (a `traces/` directory with its segments, or one
    /// file) or an audit log (`audit.jsonl` or its directory), offline.
    VerifyLog {
        /// The log: a directory or a file.
        path: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a server configuration (an environment file) the way caio-server would.
    Doctor {
        /// Environment file (KEY=VALUE lines, dotenv syntax) holding the CAIO_* variables.
        #[arg(long)]
        env_file: PathBuf,
        /// Mode to check for (overrides CAIO_MODE in the file).
        #[arg(long)]
        mode: Option<caio_config::Mode>,
        /// Also check that the data directory is writable and Redis (when set) answers.
        #[arg(long)]
        check_connections: bool,
    },
    /// The authentication matrix against running servers: every protected endpoint must answer
    /// 401 without a token and something else with it; /health/ready must answer 200.
    Smoke {
        /// Server base URL (repeat for several environments, each followed by its --token).
        #[arg(long = "url", required = true)]
        urls: Vec<String>,
        /// Bearer token for the --url at the same position.
        #[arg(long = "token", required = true)]
        tokens: Vec<String>,
    },
}

/// What a command concluded.
enum Outcome {
    Yes,
    No,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(Outcome::Yes) => ExitCode::SUCCESS,
        Ok(Outcome::No) => ExitCode::from(1),
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match cli.command {
        Command::Validate { files } => validate(&mut out, &files),
        Command::Route {
            services,
            policies,
            request,
            principal,
            json,
        } => route(
            &mut out,
            &services,
            &policies,
            &request,
            principal.as_deref(),
            json,
        ),
        Command::Doctor {
            env_file,
            mode,
            check_connections,
        } => doctor::run(&mut out, &env_file, mode, check_connections),
        Command::Smoke { urls, tokens } => smoke::run(&mut out, &urls, &tokens),
        Command::Verify {
            decision,
            services,
            policies,
            json,
        } => verify(&mut out, &decision, &services, &policies, json),
        Command::VerifyLog { path, json } => verify_log(&mut out, &path, json),
    }
}

/// `caio verify-log`: which log `path` is, checked; exit 1 when it does not verify.
fn verify_log(out: &mut impl Write, path: &Path, json: bool) -> anyhow::Result<Outcome> {
    use caio_gateway::logs::{self, StoreError};
    // An audit log is `audit.jsonl`, or a directory holding it and no trace log.
    let audit_file = if path.is_dir() {
        let file = path.join("audit.jsonl");
        (file.exists() && !path.join("traces.jsonl").exists()).then_some(file)
    } else {
        path.file_name()
            .is_some_and(|n| n == "audit.jsonl")
            .then(|| path.to_path_buf())
    };
    let (kind, label) = match audit_file {
        Some(_) => ("audit", "audit"),
        None => ("traces", "trace"),
    };
    let result = match &audit_file {
        Some(file) => logs::verify_audit_log(file),
        None => logs::verify_log(path),
    };
    let shown = path.display();
    match result {
        Ok(head) => {
            if json {
                let v = serde_json::json!({
                    "verified": true,
                    "path": shown.to_string(),
                    "kind": kind,
                    "head": {"seq": head.seq, "hash": head.hash},
                });
                writeln!(out, "{v}")?;
            } else {
                writeln!(
                    out,
                    "VERIFIED {shown} ({label} log): head seq {} hash {}",
                    head.seq, head.hash
                )?;
            }
            Ok(Outcome::Yes)
        }
        Err(e) => {
            let (code, details) = match &e {
                StoreError::Corrupt { path, line, .. } => (
                    "LOG_CORRUPT",
                    serde_json::json!({"path": path.display().to_string(), "line": line}),
                ),
                StoreError::Io { path, .. } => (
                    "LOG_UNREADABLE",
                    serde_json::json!({"path": path.display().to_string()}),
                ),
                _ => ("LOG_UNREADABLE", serde_json::json!({})),
            };
            if json {
                let v = serde_json::json!({
                    "verified": false,
                    "path": shown.to_string(),
                    "kind": kind,
                    "error": {"code": code, "message": e.to_string(), "details": details},
                });
                writeln!(out, "{v}")?;
            } else {
                writeln!(out, "NOT VERIFIED: {e}")?;
            }
            Ok(Outcome::No)
        }
    }
}

fn validate(out: &mut impl Write, files: &[PathBuf]) -> anyhow::Result<Outcome> {
    let mut ok = true;
    for path in files {
        let name = path.display().to_string();
        let result = loader::read_text(path, loader::MAX_FILE_BYTES)
            .map_err(|e| e.to_string())
            .and_then(|text| {
                caio_gateway::documents::validate_document(&name, &text).map_err(|r| r.to_string())
            });
        match result {
            Ok(kind) => writeln!(out, "ok       {name} ({})", kind.label())?,
            Err(report) => {
                ok = false;
                writeln!(out, "INVALID  {report}")?;
            }
        }
    }
    Ok(if ok { Outcome::Yes } else { Outcome::No })
}

/// Input problems end the command with exit 1 and every problem printed (JSON when asked).
fn load_failed(out: &mut impl Write, e: &LoadError, json: bool) -> anyhow::Result<Outcome> {
    if json {
        let body = serde_json::json!({"error": {"code": "INVALID_INPUT", "message": e.to_string(), "details": {}}});
        writeln!(out, "{}", serde_json::to_string_pretty(&body)?)?;
    } else {
        eprintln!("{e}");
    }
    Ok(Outcome::No)
}

fn route(
    out: &mut impl Write,
    services: &std::path::Path,
    policies: &std::path::Path,
    request: &std::path::Path,
    principal: Option<&std::path::Path>,
    json: bool,
) -> anyhow::Result<Outcome> {
    let loaded = (|| {
        let contracts = loader::load_services_dir(services)?;
        let (_, compiled) = loader::load_policies(policies)?;
        let request = loader::load_request(request)?;
        let principal = match principal {
            Some(p) => loader::load_principal(p)?,
            None => Principal::cli_default(),
        };
        Ok::<_, LoadError>((contracts, compiled, request, principal))
    })();
    let (contracts, compiled, request, principal) = match loaded {
        Ok(v) => v,
        Err(e) => return load_failed(out, &e, json),
    };
    let registry = MemoryRegistry::with_contracts(contracts).context("building the registry")?;
    let router = Router::new(Arc::new(registry), compiled);
    match router.route(&request, &principal) {
        Ok(decision) => {
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&decision)?)?;
            } else {
                output::decision(out, &decision)?;
            }
            Ok(Outcome::Yes)
        }
        Err(e @ RouteError::NoMatchingService(_)) => {
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&e.to_body())?)?;
            } else if let RouteError::NoMatchingService(n) = &e {
                output::no_route(out, n)?;
            }
            Ok(Outcome::No)
        }
        Err(e) => Err(e.into()),
    }
}

fn verify(
    out: &mut impl Write,
    decision: &std::path::Path,
    services: &std::path::Path,
    policies: &std::path::Path,
    json: bool,
) -> anyhow::Result<Outcome> {
    let loaded = (|| {
        let d = loader::load_decision(decision)?;
        let contracts = loader::load_services_dir(services)?;
        let (set, _) = loader::load_policies(policies)?;
        Ok::<_, LoadError>((d, contracts, set))
    })();
    let (d, contracts, set) = match loaded {
        Ok(v) => v,
        Err(e) => return load_failed(out, &e, json),
    };
    match caio_gateway::verify(&d, contracts, &set) {
        Ok(v) => {
            if json {
                let body = serde_json::json!({"verified": true, "decision_id": v.decision_id, "service_id": v.service_id, "predicates": v.predicates});
                writeln!(out, "{}", serde_json::to_string_pretty(&body)?)?;
            } else {
                writeln!(
                    out,
                    "VERIFIED {} → {} ({} predicates recomputed, all agree)",
                    v.decision_id, v.service_id, v.predicates
                )?;
            }
            Ok(Outcome::Yes)
        }
        Err(dis) => {
            if json {
                let body = serde_json::json!({"verified": false, "error": {"code": "VERIFICATION_FAILED", "message": dis.to_string(), "details": {"step": dis.step, "path": dis.path}}});
                writeln!(out, "{}", serde_json::to_string_pretty(&body)?)?;
            } else {
                writeln!(
                    out,
                    "NOT VERIFIED: step `{}` at {}: {}",
                    dis.step, dis.path, dis.message
                )?;
            }
            Ok(Outcome::No)
        }
    }
}
