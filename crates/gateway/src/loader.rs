//! Loading documents from files and directories, with every problem reported and nothing read
//! past a size limit.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use caio_contracts::decision::Decision;
use caio_contracts::{
    Format, PolicySet, Principal, RouteRequest, ServiceContract, ValidationReport, parse_contract,
    parse_policies, parse_principal, parse_request,
};

/// The largest decision file `verify` reads.
pub const MAX_DECISION_BYTES: u64 = 64 * 1024 * 1024;
/// The largest file of any other kind read (the parsers apply tighter limits per kind).
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// Why documents could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file or directory could not be read.
    #[error("{path}: {message}")]
    Io {
        /// The path.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Documents were read but are invalid.
    #[error("{}", join(.0))]
    Invalid(Vec<ValidationReport>),
    /// Two contracts declare the same service id.
    #[error("service id `{id}` is declared by both {first} and {second}")]
    DuplicateId {
        /// The id.
        id: String,
        /// The first file.
        first: String,
        /// The second file.
        second: String,
    },
}

fn join(reports: &[ValidationReport]) -> String {
    reports
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads a text file of at most `limit` bytes.
pub fn read_text(path: &Path, limit: u64) -> Result<String, LoadError> {
    let io = |e: std::io::Error| LoadError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let file = fs::File::open(path).map_err(io)?;
    let mut text = String::new();
    file.take(limit + 1).read_to_string(&mut text).map_err(io)?;
    if text.len() as u64 > limit {
        return Err(LoadError::Io {
            path: path.display().to_string(),
            message: format!("file is larger than the {limit}-byte limit"),
        });
    }
    Ok(text)
}

/// The contract files of a directory: `*.yaml`, `*.yml` and `*.json`, sorted by name, not
/// recursive.
pub fn contract_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let io = |e: std::io::Error| LoadError::Io {
        path: dir.display().to_string(),
        message: e.to_string(),
    };
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(io)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml" | "json")
                )
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Loads and validates every contract of a directory; all invalid files are reported together.
pub fn load_services_dir(dir: &Path) -> Result<Vec<ServiceContract>, LoadError> {
    let mut contracts = Vec::new();
    let mut reports = Vec::new();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for path in contract_files(dir)? {
        let name = path.display().to_string();
        let text = read_text(&path, MAX_FILE_BYTES)?;
        match parse_contract(&name, &text, Format::Auto) {
            Ok(c) => {
                if let Some(first) = seen.insert(c.service.id.clone(), name.clone()) {
                    return Err(LoadError::DuplicateId {
                        id: c.service.id.clone(),
                        first,
                        second: name,
                    });
                }
                contracts.push(c);
            }
            Err(r) => reports.push(r),
        }
    }
    if reports.is_empty() {
        Ok(contracts)
    } else {
        Err(LoadError::Invalid(reports))
    }
}

/// Loads a policy set and compiles it.
pub fn load_policies(path: &Path) -> Result<(PolicySet, caio_rules::CompiledPolicies), LoadError> {
    let name = path.display().to_string();
    let text = read_text(path, MAX_FILE_BYTES)?;
    let set =
        parse_policies(&name, &text, Format::Auto).map_err(|r| LoadError::Invalid(vec![r]))?;
    let compiled = crate::documents::compile_policies(&name, &text, &set)
        .map_err(|r| LoadError::Invalid(vec![r]))?;
    Ok((set, compiled))
}

/// Loads a route request.
pub fn load_request(path: &Path) -> Result<RouteRequest, LoadError> {
    let name = path.display().to_string();
    let text = read_text(path, MAX_FILE_BYTES)?;
    parse_request(&name, &text, Format::Auto).map_err(|r| LoadError::Invalid(vec![r]))
}

/// Loads a principal.
pub fn load_principal(path: &Path) -> Result<Principal, LoadError> {
    let name = path.display().to_string();
    let text = read_text(path, MAX_FILE_BYTES)?;
    parse_principal(&name, &text, Format::Auto).map_err(|r| LoadError::Invalid(vec![r]))
}

/// Loads a recorded decision (JSON, as `caio route --json` prints it).
pub fn load_decision(path: &Path) -> Result<Decision, LoadError> {
    let name = path.display().to_string();
    let text = read_text(path, MAX_DECISION_BYTES)?;
    // An executed decision's trace (`{"decision": …, "execution": …}`) verifies as its decision.
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Recorded {
        Executed {
            decision: Box<Decision>,
            #[allow(dead_code)]
            execution: serde::de::IgnoredAny,
        },
        Decision(Box<Decision>),
    }
    let as_recorded = serde_json::from_str::<Recorded>(&text).ok();
    if let Some(r) = as_recorded {
        return Ok(match r {
            Recorded::Executed { decision, .. } | Recorded::Decision(decision) => *decision,
        });
    }
    serde_json::from_str(&text).map_err(|e| LoadError::Io {
        path: if e.line() > 0 {
            format!("{name}:{}", e.line())
        } else {
            name
        },
        message: format!("not a CAIO decision: {e}"),
    })
}
