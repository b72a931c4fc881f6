//! `caio-license-admin`: the vendor's tool for issuing, inspecting, verifying and revoking CAIO
//! license keys (DESIGN.md §4). Its commands arrive with the licensing issue; this build only
//! answers `--help` and `--version` and exits with code 2 for anything else.
#![allow(clippy::print_stderr)]

use std::process::ExitCode;

use clap::Parser;

/// CAIO license administration.
#[derive(Debug, Parser)]
#[command(name = "caio-license-admin", version, about)]
struct Args {
    /// The command (keygen, issue, inspect, verify, revoke, list, stats, renewals, export).
    command: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    eprintln!(
        "caio-license-admin: `{}` is not available in this build; license commands arrive with the licensing issue",
        args.command.as_deref().unwrap_or("")
    );
    ExitCode::from(2)
}
