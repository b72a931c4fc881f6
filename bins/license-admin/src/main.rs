//! `caio-license-admin`: the vendor's tool for issuing, inspecting, verifying and revoking CAIO
//! license keys, and for its ledger of customers and licenses (DESIGN.md §4, docs/licensing.md).
//! Thin: argument parsing, file reading and writing, output; the format, the cryptography and the
//! ledger live in `caio-licensing` (feature `issue`).
//!
//! Exit codes: 0 ok, 1 the operation said no (invalid key, revoked, unknown customer, ...), 2 usage
//! error (bad arguments, unreadable or malformed key or ledger files).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use caio_licensing::{
    ExportFormat, IssueRequest, Issuer, Ledger, LedgerError, License, Limits, PublicKeySet,
    RevocationList, VerifiedRevocationList, decode_unverified, private_key_from_pem,
    public_key_from_pem, verify, write_atomically, write_keypair,
};
use clap::{Parser, Subcommand, ValueEnum};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// CAIO license administration (keys are `CAIO-v2-...`, signed with Ed25519).
#[derive(Debug, Parser)]
#[command(name = "caio-license-admin", version, about)]
struct Args {
    /// The vendor's ledger of customers and issued licenses (JSON). With it, `issue` records the
    /// license (the customer must be in the ledger) and `revoke` marks it revoked.
    #[arg(long, global = true, value_name = "PATH", env = "CAIO_LICENSE_LEDGER")]
    ledger: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate a signing key pair: DIR/private.pem (PKCS#8, mode 0600) and DIR/public.pem (SPKI).
    Keygen {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Issue a license key (printed on stdout).
    Issue {
        #[arg(long, value_name = "FILE")]
        private_key: PathBuf,
        #[arg(long, value_name = "ID")]
        customer: String,
        #[arg(long, value_name = "TIER")]
        tier: String,
        /// Valid for N days from now.
        #[arg(
            long,
            value_name = "N",
            conflicts_with = "expires",
            required_unless_present = "expires"
        )]
        days: Option<u32>,
        /// Expiry: YYYY-MM-DD (valid through that day, UTC) or an RFC 3339 time.
        #[arg(long, value_name = "DATE")]
        expires: Option<String>,
        /// Valid from (YYYY-MM-DD or RFC 3339); default now.
        #[arg(long, value_name = "DATE")]
        not_before: Option<String>,
        /// Comma-separated feature names.
        #[arg(long, value_name = "A,B", value_delimiter = ',')]
        features: Vec<String>,
        #[arg(long, value_name = "N")]
        max_services: Option<u64>,
        #[arg(long, value_name = "N")]
        max_instances: Option<u64>,
        #[arg(long, value_name = "N")]
        max_requests_per_day: Option<u64>,
    },
    /// Decode a key WITHOUT checking its signature.
    Inspect { key: String },
    /// Verify a key: exit 0 if valid now, 1 with the reason otherwise.
    Verify {
        key: String,
        /// A trusted public key (SPKI PEM); repeat for several (key rotation).
        #[arg(long = "public-key", value_name = "FILE", required = true)]
        public_keys: Vec<PathBuf>,
        /// A signed revocation list to check against.
        #[arg(long, value_name = "FILE")]
        revocation_list: Option<PathBuf>,
    },
    /// Add a license (a key, or its 16-hex key id) to a signed revocation list file.
    Revoke {
        /// A `CAIO-v2-...` key or a license key id.
        key_or_id: String,
        #[arg(long, value_name = "TEXT")]
        reason: String,
        /// The private key that signs the list (its public key must verify the existing list).
        #[arg(long, value_name = "FILE")]
        private_key: PathBuf,
        /// The revocation list file (created if missing).
        #[arg(long, value_name = "FILE")]
        list: PathBuf,
    },
    /// Customers in the ledger.
    #[command(subcommand)]
    Customers(CustomersCommand),
    /// Licenses in the ledger, with their status now.
    List {
        /// Only this customer's licenses.
        #[arg(long, value_name = "ID")]
        customer: Option<String>,
        /// "Expiring soon" means within this many days.
        #[arg(long, value_name = "N", default_value_t = 30)]
        soon_days: u32,
    },
    /// Counts: valid (active + expiring soon), not yet valid, expired, revoked.
    Stats {
        #[arg(long, value_name = "N", default_value_t = 30)]
        soon_days: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Licenses expiring within N days that have not been renewed, soonest first.
    Renewals {
        #[arg(long, value_name = "N")]
        days: u32,
    },
    /// Every license in the ledger as CSV or JSON (stdout).
    Export {
        #[arg(long, value_enum)]
        format: Format,
        #[arg(long, value_name = "N", default_value_t = 30)]
        soon_days: u32,
    },
}

#[derive(Debug, Subcommand)]
enum CustomersCommand {
    /// Add a customer.
    Add {
        id: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        email: Option<String>,
    },
    /// List customers.
    List,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Csv,
    Json,
}

/// Why a command failed: a usage problem (exit 2) or a refusal (exit 1).
enum Failure {
    Usage(String),
    No(String),
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    match run(args.command, args.ledger.as_deref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::No(message)) => {
            eprintln!("caio-license-admin: {message}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(message)) => {
            eprintln!("caio-license-admin: {message}");
            ExitCode::from(2)
        }
    }
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn run(command: Command, ledger_path: Option<&Path>) -> Result<(), Failure> {
    match command {
        Command::Keygen { out } => {
            let (private, public, id) =
                write_keypair(&out).map_err(|e| Failure::Usage(e.to_string()))?;
            println!("key id:      {id}");
            println!(
                "private key: {} (mode 0600; keep it offline)",
                private.display()
            );
            println!("public key:  {}", public.display());
            Ok(())
        }
        Command::Issue {
            private_key,
            customer,
            tier,
            days,
            expires,
            not_before,
            features,
            max_services,
            max_instances,
            max_requests_per_day,
        } => {
            let issuer = load_issuer(&private_key)?;
            let mut ledger = match ledger_path {
                Some(path) => {
                    let ledger = Ledger::load(path).map_err(ledger_failure)?;
                    ledger.check_customer(&customer).map_err(ledger_failure)?;
                    Some((path, ledger))
                }
                None => None,
            };
            let now = now();
            let not_before = match not_before {
                Some(text) => parse_time(&text, false)?,
                None => now,
            };
            let expires_at = match (days, expires) {
                (Some(days), _) => now + i64::from(days) * 86_400,
                (None, Some(text)) => parse_time(&text, true)?,
                (None, None) => return Err(Failure::Usage("give --days or --expires".into())),
            };
            let request = IssueRequest {
                customer_id: customer,
                tier,
                not_before,
                expires_at,
                features: features
                    .into_iter()
                    .map(|f| f.trim().to_owned())
                    .filter(|f| !f.is_empty())
                    .collect(),
                limits: Limits {
                    max_instances,
                    max_services,
                    max_requests_per_day,
                },
            };
            let (key, license) = issuer
                .issue(&request, now)
                .map_err(|e| Failure::Usage(e.to_string()))?;
            if let Some((path, ledger)) = ledger.as_mut() {
                ledger
                    .record_issued(license, key.clone())
                    .map_err(ledger_failure)?;
                ledger.save(path).map_err(ledger_failure)?;
            }
            println!("{key}");
            Ok(())
        }
        Command::Inspect { key } => {
            let license = decode_unverified(key.trim()).map_err(|e| Failure::No(e.to_string()))?;
            println!("UNVERIFIED: the signature was not checked; use `verify` to trust this key.");
            println!("{}", describe(&license));
            Ok(())
        }
        Command::Verify {
            key,
            public_keys,
            revocation_list,
        } => {
            let mut keys = PublicKeySet::new();
            for path in &public_keys {
                let pem = read(path)?;
                keys.insert(public_key_from_pem(&pem).map_err(|e| usage_at(path, e))?);
            }
            let revocations = match &revocation_list {
                Some(path) => Some(VerifiedRevocationList::verify(&read(path)?, &keys).map_err(
                    |e| Failure::No(format!("{}: revocation list refused: {e}", path.display())),
                )?),
                None => None,
            };
            match verify(key.trim(), &keys, now(), revocations.as_ref()) {
                Ok(license) => {
                    println!("VALID");
                    println!("{}", describe(&license));
                    Ok(())
                }
                Err(e) => Err(Failure::No(format!("INVALID ({}): {e}", e.code()))),
            }
        }
        Command::Revoke {
            key_or_id,
            reason,
            private_key,
            list,
        } => {
            let issuer = load_issuer(&private_key)?;
            let key_or_id = key_or_id.trim();
            let key_id = if key_or_id.starts_with("CAIO-") {
                // Any key of ours can be revoked, even one that no longer verifies (say, expired).
                decode_unverified(key_or_id)
                    .map_err(|e| Failure::Usage(format!("cannot read the key: {e}")))?
                    .key_id
            } else {
                key_or_id.to_owned()
            };
            let keys = PublicKeySet::from_keys([issuer.public_key()]);
            let now = now();
            let mut current = if list.exists() {
                VerifiedRevocationList::verify(&read(&list)?, &keys)
                    .map_err(|e| {
                        Failure::No(format!("{}: existing list refused: {e}", list.display()))
                    })?
                    .into_list()
            } else {
                RevocationList::new(issuer.key_id(), now)
            };
            issuer
                .revoke(&mut current, &key_id, &reason, now)
                .map_err(|e| Failure::Usage(e.to_string()))?;
            let document = issuer
                .sign_revocation_list(&current, now)
                .map_err(|e| Failure::Usage(e.to_string()))?;
            write_atomically(&list, document.as_bytes())
                .map_err(|e| Failure::Usage(format!("{}: {e}", list.display())))?;
            println!(
                "revoked {key_id} ({} entries in {})",
                current.revoked.len(),
                list.display()
            );
            if let Some(path) = ledger_path {
                let mut ledger = Ledger::load(path).map_err(ledger_failure)?;
                if !ledger.record_revoked(&key_id, &reason, now) {
                    eprintln!(
                        "caio-license-admin: note: {key_id} is not in the ledger {}",
                        path.display()
                    );
                }
                ledger.save(path).map_err(ledger_failure)?;
            }
            Ok(())
        }
        Command::Customers(CustomersCommand::Add { id, name, email }) => {
            let path = need_ledger(ledger_path)?;
            let mut ledger = Ledger::load(path).map_err(ledger_failure)?;
            ledger
                .add_customer(&id, &name, email.as_deref(), now())
                .map_err(ledger_failure)?;
            ledger.save(path).map_err(ledger_failure)?;
            println!("added customer {id}");
            Ok(())
        }
        Command::Customers(CustomersCommand::List) => {
            let ledger = Ledger::load(need_ledger(ledger_path)?).map_err(ledger_failure)?;
            println!("{:<24} {:<32} {:<32} CREATED", "ID", "NAME", "EMAIL");
            for c in &ledger.customers {
                println!(
                    "{:<24} {:<32} {:<32} {}",
                    c.id,
                    c.name,
                    c.email.as_deref().unwrap_or("-"),
                    rfc3339(c.created_at)
                );
            }
            Ok(())
        }
        Command::List {
            customer,
            soon_days,
        } => {
            let ledger = Ledger::load(need_ledger(ledger_path)?).map_err(ledger_failure)?;
            let now = now();
            println!(
                "{:<16} {:<24} {:<16} {:<13} EXPIRES",
                "KEY ID", "CUSTOMER", "TIER", "STATUS"
            );
            for e in ledger.licenses.iter().filter(|e| {
                customer
                    .as_deref()
                    .is_none_or(|c| e.license.customer_id == c)
            }) {
                println!(
                    "{:<16} {:<24} {:<16} {:<13} {}",
                    e.license.key_id,
                    e.license.customer_id,
                    e.license.tier,
                    e.status_at(now, days(soon_days)).as_str(),
                    rfc3339(e.license.expires_at)
                );
            }
            Ok(())
        }
        Command::Stats { soon_days, json } => {
            let ledger = Ledger::load(need_ledger(ledger_path)?).map_err(ledger_failure)?;
            let s = ledger.stats(now(), days(soon_days));
            if json {
                println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
            } else {
                println!("customers:      {}", s.customers);
                println!("licenses:       {}", s.licenses);
                println!(
                    "valid:          {} (active {}, expiring within {soon_days} days {})",
                    s.valid, s.active, s.expiring_soon
                );
                println!("not yet valid:  {}", s.not_yet_valid);
                println!("expired:        {}", s.expired);
                println!("revoked:        {}", s.revoked);
            }
            Ok(())
        }
        Command::Renewals { days: within } => {
            let ledger = Ledger::load(need_ledger(ledger_path)?).map_err(ledger_failure)?;
            let now = now();
            println!(
                "{:<16} {:<24} {:<16} {:<22} DAYS LEFT",
                "KEY ID", "CUSTOMER", "TIER", "EXPIRES"
            );
            for e in ledger.renewals(now, days(within)) {
                println!(
                    "{:<16} {:<24} {:<16} {:<22} {}",
                    e.license.key_id,
                    e.license.customer_id,
                    e.license.tier,
                    rfc3339(e.license.expires_at),
                    (e.license.expires_at - now) / 86_400
                );
            }
            Ok(())
        }
        Command::Export { format, soon_days } => {
            let ledger = Ledger::load(need_ledger(ledger_path)?).map_err(ledger_failure)?;
            let format = match format {
                Format::Csv => ExportFormat::Csv,
                Format::Json => ExportFormat::Json,
            };
            print!("{}", ledger.export(format, now(), days(soon_days)));
            Ok(())
        }
    }
}

fn days(n: u32) -> i64 {
    i64::from(n) * 86_400
}

fn need_ledger(path: Option<&Path>) -> Result<&Path, Failure> {
    path.ok_or_else(|| {
        Failure::Usage("this command needs --ledger PATH (or CAIO_LICENSE_LEDGER)".into())
    })
}

/// Refusals of the ledger (duplicate or unknown customer) exit 1; unreadable or invalid input 2.
fn ledger_failure(e: LedgerError) -> Failure {
    match e {
        LedgerError::DuplicateCustomer(_) | LedgerError::UnknownCustomer(_) => {
            Failure::No(e.to_string())
        }
        _ => Failure::Usage(e.to_string()),
    }
}

fn read(path: &Path) -> Result<String, Failure> {
    fs::read_to_string(path).map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))
}

fn usage_at(path: &Path, e: impl std::fmt::Display) -> Failure {
    Failure::Usage(format!("{}: {e}", path.display()))
}

fn load_issuer(path: &Path) -> Result<Issuer, Failure> {
    let pem = read(path)?;
    Ok(Issuer::new(
        private_key_from_pem(&pem).map_err(|e| usage_at(path, e))?,
    ))
}

/// `YYYY-MM-DD` (the start of that day, UTC, or with `end_of_day` the start of the next) or RFC 3339.
fn parse_time(text: &str, end_of_day: bool) -> Result<i64, Failure> {
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(t.unix_timestamp());
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(text, &format)
        .map_err(|_| Failure::Usage(format!("`{text}` is not YYYY-MM-DD or an RFC 3339 time")))?;
    let start = date.midnight().assume_utc().unix_timestamp();
    Ok(if end_of_day { start + 86_400 } else { start })
}

fn rfc3339(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| t.to_string())
}

/// A license as pretty JSON, times as RFC 3339 beside the unix seconds.
fn describe(license: &License) -> String {
    let value = serde_json::json!({
        "key_id": license.key_id,
        "customer_id": license.customer_id,
        "tier": license.tier,
        "issued_at": rfc3339(license.issued_at),
        "not_before": rfc3339(license.not_before),
        "expires_at": rfc3339(license.expires_at),
        "features": license.features,
        "max_instances": license.limits.max_instances,
        "max_services": license.limits.max_services,
        "max_requests_per_day": license.limits.max_requests_per_day,
        "signing_key_id": license.signing_key_id,
    });
    serde_json::to_string_pretty(&value).unwrap_or_else(|_| format!("{license:?}"))
}
