//! Validating any CAIO document (what `caio validate` runs): contracts, requests, principals and
//! policy sets, including the CEL compilation of every policy.

use caio_contracts::{
    DocKind, Format, LineIndex, Problem, ValidationReport, detect_kind, parse_contract,
    parse_policies, parse_principal, parse_request,
};

/// Validates one document of any kind and says which kind it was.
pub fn validate_document(source: &str, text: &str) -> Result<DocKind, ValidationReport> {
    let kind = detect_kind(source, text, Format::Auto)?;
    match kind {
        DocKind::Contract => parse_contract(source, text, Format::Auto).map(|_| kind),
        DocKind::Request => parse_request(source, text, Format::Auto).map(|_| kind),
        DocKind::Principal => parse_principal(source, text, Format::Auto).map(|_| kind),
        DocKind::Policies => {
            let set = parse_policies(source, text, Format::Auto)?;
            compile_policies(source, text, &set).map(|_| kind)
        }
    }
}

/// Compiles a parsed policy set, turning CEL errors into problems that point at the policy's
/// `when` or `require` line in the file.
pub fn compile_policies(
    source: &str,
    text: &str,
    set: &caio_contracts::PolicySet,
) -> Result<caio_rules::CompiledPolicies, ValidationReport> {
    caio_rules::compile(set).map_err(|errors| {
        let index = LineIndex::build(text);
        let problems = errors
            .into_iter()
            .map(|e| {
                let i = set
                    .policies
                    .iter()
                    .position(|p| p.id == e.policy_id)
                    .unwrap_or(0);
                let path = format!("/policies/{i}/{}", e.field);
                let line = index.line_of(&path).map(|l| l + e.line.saturating_sub(1));
                let mut problem = Problem::new(
                    &path,
                    format!(
                        "policy `{}`: {} (expression line {}, column {})",
                        e.policy_id, e.message, e.line, e.column
                    ),
                );
                problem.line = line;
                problem
            })
            .collect();
        ValidationReport {
            source: source.to_owned(),
            kind: "policy set",
            problems,
        }
    })
}
