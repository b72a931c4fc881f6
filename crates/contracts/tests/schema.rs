//! The JSON Schemas committed under docs/schema/ are the ones the code generates.
//! `CAIO_UPDATE_SCHEMA=1 cargo test -p caio-contracts --test schema` rewrites them.

use std::path::Path;

use caio_contracts::schema::{DocKind, schema_text};

#[test]
fn committed_schemas_are_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/schema");
    let update = std::env::var_os("CAIO_UPDATE_SCHEMA").is_some();
    let mut stale = Vec::new();
    for kind in DocKind::ALL {
        let path = dir.join(kind.file_name());
        let expected = schema_text(kind);
        if update {
            std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(&path, &expected).unwrap_or_else(|e| panic!("{e}"));
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(committed) if committed == expected => {}
            Ok(_) => stale.push(format!("{} is stale", path.display())),
            Err(e) => stale.push(format!("{}: {e}", path.display())),
        }
    }
    assert!(
        stale.is_empty(),
        "{}\nrun `CAIO_UPDATE_SCHEMA=1 cargo test -p caio-contracts --test schema` and commit the result",
        stale.join("\n")
    );
}
