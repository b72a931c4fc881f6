//! The invariant catalogue: every `invariants/INV-CAIO-*.yaml` names a test that exists.

use std::fs;

use serde::Deserialize;

use crate::support;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Invariant {
    id: String,
    name: String,
    statement: String,
    /// `path/to/file.rs::function_name`, relative to the repository root.
    verified_by: Vec<String>,
}

#[test]
fn every_invariant_names_existing_tests() {
    let dir = support::root().join("invariants");
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("INV-CAIO-") && n.ends_with(".yaml"))
        })
        .collect();
    files.sort();
    assert_eq!(files.len(), 14, "the 14 invariants of DESIGN.md §2");
    let mut missing = Vec::new();
    for f in &files {
        let inv: Invariant = serde_norway::from_str(&fs::read_to_string(f).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert!(
            f.to_string_lossy().contains(&inv.id),
            "{}: id matches file name",
            f.display()
        );
        assert!(!inv.name.is_empty() && !inv.statement.is_empty());
        assert!(!inv.verified_by.is_empty(), "{}: names a test", inv.id);
        for t in &inv.verified_by {
            let (file, func) = t
                .split_once("::")
                .unwrap_or_else(|| panic!("{}: `{t}` is not file::function", inv.id));
            let source = fs::read_to_string(support::root().join(file)).unwrap_or_default();
            if !source.contains(&format!("fn {func}(")) {
                missing.push(format!("{}: {t}", inv.id));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "tests named by invariants do not exist:\n{}",
        missing.join("\n")
    );
}
