//! Parsing untrusted documents: size limits, syntax, JSON Schema, typed decoding, semantic checks,
//! all problems of a document collected at once with their field path and line.

use std::fmt;

use serde::de::DeserializeOwned;

use crate::limits::Limits;
use crate::model::ServiceContract;
use crate::policy::PolicySet;
use crate::request::{Principal, RouteRequest};
use crate::schema::{self, DocKind};
use crate::semantic;
use crate::yaml::{self, LineIndex, Syntax};

/// Which syntax to read a document as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Decide from the source name (`.json`) or the first character (`{`).
    Auto,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// One thing wrong with a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// JSON pointer to the offending field (`/service/guarantees/accuracy/min`); empty for the
    /// whole document.
    pub path: String,
    /// 1-based line in the source, where known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    /// A problem at `path` whose line is looked up later. The path and the message are cut to
    /// [`MAX_PROBLEM_TEXT`] bytes (see [`abbreviate`]).
    pub fn new(path: &str, message: impl Into<String>) -> Problem {
        Problem {
            path: abbreviate(path.to_owned()),
            line: None,
            message: abbreviate(message.into()),
        }
    }

    /// A problem with a known line (0 = unknown).
    pub fn at_line(path: &str, line: usize, message: impl Into<String>) -> Problem {
        Problem {
            path: abbreviate(path.to_owned()),
            line: (line > 0).then_some(line),
            message: abbreviate(message.into()),
        }
    }
}

/// Longest path or message a [`Problem`] keeps, in bytes. Messages quote the offending value
/// (JSON Schema's and serde's do), and a value can be most of a megabyte: quoted in full, one
/// request could get an error several times its own size.
pub const MAX_PROBLEM_TEXT: usize = 480;

/// Most problems one document's report lists; past it, a last problem says that more were found.
pub const MAX_PROBLEMS: usize = 50;

/// `text` when it fits in [`MAX_PROBLEM_TEXT`] bytes; otherwise its beginning and its end (where
/// messages say what is wrong: `… is not of type "array"`) around a note of how much was left
/// out.
pub fn abbreviate(text: String) -> String {
    abbreviate_to(text, MAX_PROBLEM_TEXT)
}

/// [`abbreviate`] to `max` bytes of the text: about its first two thirds from the start and a
/// quarter from the end, cut on character boundaries.
pub fn abbreviate_to(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let head = text.floor_char_boundary(max * 2 / 3);
    let tail = text.ceil_char_boundary(text.len() - max / 4);
    format!(
        "{} … ({} bytes left out) … {}",
        &text[..head],
        tail - head,
        &text[tail..]
    )
}

/// Every problem found in one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationReport {
    /// The file name or other label of the document.
    pub source: String,
    /// What kind of document it was read as.
    pub kind: &'static str,
    /// The problems, in source order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ValidationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{}: invalid {} ({n} problem{})",
            self.source,
            self.kind,
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  {}", self.source)?;
            if let Some(line) = p.line {
                write!(f, ":{line}")?;
            }
            let path = if p.path.is_empty() { "/" } else { &p.path };
            write!(f, ": {path}: {}", p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationReport {}

/// Parses and validates a service contract.
pub fn parse_contract(
    source: &str,
    text: &str,
    format: Format,
) -> Result<ServiceContract, ValidationReport> {
    parse_doc(
        source,
        text,
        format,
        DocKind::Contract,
        Limits::CONTRACT,
        semantic::contract,
    )
}

/// Parses and validates a route request.
pub fn parse_request(
    source: &str,
    text: &str,
    format: Format,
) -> Result<RouteRequest, ValidationReport> {
    parse_doc(
        source,
        text,
        format,
        DocKind::Request,
        Limits::REQUEST,
        semantic::request,
    )
}

/// Validates a route request that is already a JSON value (a member of a larger document, such
/// as `/api/v1/execute`'s envelope): the same checks as [`parse_request`] without parsing text
/// again. Problems carry paths, not lines.
pub fn parse_request_value(
    source: &str,
    value: serde_json::Value,
) -> Result<RouteRequest, ValidationReport> {
    let report = |problems: Vec<Problem>| ValidationReport {
        source: source.to_owned(),
        kind: DocKind::Request.label(),
        problems,
    };
    let mut problems = yaml::depth_problems(&value, Limits::REQUEST.max_depth);
    if !problems.is_empty() {
        return Err(report(problems));
    }
    problems = schema_problems(DocKind::Request, &value);
    if !problems.is_empty() {
        return Err(report(problems));
    }
    let typed: RouteRequest =
        serde_json::from_value(value).map_err(|e| report(vec![Problem::new("", e.to_string())]))?;
    let problems = semantic::request(&typed);
    if problems.is_empty() {
        Ok(typed)
    } else {
        Err(report(problems))
    }
}

/// Parses and validates a policy set's structure. CEL syntax is checked when caio-rules compiles
/// the set.
pub fn parse_policies(
    source: &str,
    text: &str,
    format: Format,
) -> Result<PolicySet, ValidationReport> {
    parse_doc(
        source,
        text,
        format,
        DocKind::Policies,
        Limits::POLICIES,
        semantic::policies,
    )
}

/// Parses and validates a principal.
pub fn parse_principal(
    source: &str,
    text: &str,
    format: Format,
) -> Result<Principal, ValidationReport> {
    parse_doc(
        source,
        text,
        format,
        DocKind::Principal,
        Limits::PRINCIPAL,
        |_| Vec::new(),
    )
}

fn syntax_of(source: &str, text: &str, format: Format) -> Syntax {
    match format {
        Format::Json => Syntax::Json,
        Format::Yaml => Syntax::Yaml,
        Format::Auto => {
            if source.ends_with(".json") || text.trim_start().starts_with('{') {
                Syntax::Json
            } else {
                Syntax::Yaml
            }
        }
    }
}

fn parse_doc<T: DeserializeOwned>(
    source: &str,
    text: &str,
    format: Format,
    kind: DocKind,
    limits: Limits,
    semantic: fn(&T) -> Vec<Problem>,
) -> Result<T, ValidationReport> {
    let report = |problems: Vec<Problem>| ValidationReport {
        source: source.to_owned(),
        kind: kind.label(),
        problems,
    };
    if text.len() > limits.max_bytes {
        return Err(report(vec![Problem::new(
            "",
            format!(
                "document is {} bytes; the limit for a {} is {} bytes",
                text.len(),
                kind.label(),
                limits.max_bytes
            ),
        )]));
    }
    let syntax = syntax_of(source, text, format);
    let with_lines = |mut problems: Vec<Problem>| {
        let index = LineIndex::build(text);
        for p in &mut problems {
            if p.line.is_none() {
                p.line = index.line_of(&p.path);
            }
        }
        // In source order, and the note that more were not listed last.
        let overflow = overflow_message();
        problems.sort_by(|a, b| {
            (a.message == overflow, a.line, &a.path).cmp(&(b.message == overflow, b.line, &b.path))
        });
        problems.dedup();
        report(problems)
    };
    let value = yaml::to_json(text, syntax, limits.max_depth).map_err(with_lines)?;
    let mut problems = schema_problems(kind, &value);
    let typed = if problems.is_empty() {
        match serde_json::from_value::<T>(value) {
            Ok(t) => {
                problems.extend(semantic(&t));
                Some(t)
            }
            Err(e) => {
                problems.push(Problem::new("", e.to_string()));
                None
            }
        }
    } else {
        None
    };
    match typed {
        Some(t) if problems.is_empty() => Ok(t),
        _ => Err(with_lines(problems)),
    }
}

fn schema_problems(kind: DocKind, value: &serde_json::Value) -> Vec<Problem> {
    let compiled = match schema::compiled(kind) {
        Ok(c) => c,
        Err(e) => return vec![Problem::new("", e)],
    };
    // `is_valid` stops at the first failure and builds no error values; the full walk that
    // collects every problem runs only for documents that have one.
    if compiled.validator.is_valid(value) {
        return Vec::new();
    }
    let mut problems = Vec::new();
    for error in compiled.validator.iter_errors(value) {
        if problems.len() > MAX_PROBLEMS {
            break;
        }
        let path = error.instance_path().as_str().to_owned();
        match error.kind() {
            jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } => {
                for key in unexpected {
                    let mut message = format!("unknown field `{key}`");
                    if let Some(s) = schema::suggest(key, &compiled.vocabulary) {
                        message.push_str(&format!("; did you mean `{s}`?"));
                    }
                    problems.push(Problem::new(
                        &format!("{path}/{}", yaml::escape(key)),
                        message,
                    ));
                }
            }
            _ => problems.push(Problem::new(&path, error.to_string())),
        }
    }
    if problems.len() > MAX_PROBLEMS {
        problems.truncate(MAX_PROBLEMS);
        problems.push(Problem::new("", overflow_message()));
    }
    problems
}

/// The last problem of a report cut at [`MAX_PROBLEMS`].
fn overflow_message() -> String {
    format!("more problems not listed: a report lists the first {MAX_PROBLEMS}")
}

/// Tells what kind of document `text` is from its top-level keys: `kind: ServiceContract`, a
/// `policies` list, a `requirements` section, or a principal's `id` with `permissions` or
/// `trust_level`. Problems when the text does not parse or matches none.
pub fn detect_kind(source: &str, text: &str, format: Format) -> Result<DocKind, ValidationReport> {
    let report = |problems: Vec<Problem>| ValidationReport {
        source: source.to_owned(),
        kind: "document",
        problems,
    };
    let max = Limits::REQUEST.max_bytes.max(Limits::POLICIES.max_bytes);
    if text.len() > max {
        return Err(report(vec![Problem::new(
            "",
            format!(
                "document is {} bytes; no CAIO document may exceed {max} bytes",
                text.len()
            ),
        )]));
    }
    let value = yaml::to_json(
        text,
        syntax_of(source, text, format),
        Limits::REQUEST.max_depth,
    )
    .map_err(report)?;
    let obj = value.as_object();
    let has = |k: &str| obj.is_some_and(|o| o.contains_key(k));
    if obj.and_then(|o| o.get("kind")).and_then(|k| k.as_str()) == Some("ServiceContract")
        || has("service")
    {
        Ok(DocKind::Contract)
    } else if has("policies") {
        Ok(DocKind::Policies)
    } else if has("requirements") {
        Ok(DocKind::Request)
    } else if has("id") && (has("permissions") || has("trust_level") || has("tenant")) {
        Ok(DocKind::Principal)
    } else {
        Err(report(vec![Problem::at_line(
            "",
            1,
            "cannot tell what this document is: expected a service contract (`kind: ServiceContract`), a policy set (`policies:`), a route request (`requirements:`) or a principal (`id:` with `permissions:`)",
        )]))
    }
}
