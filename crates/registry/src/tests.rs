//! Registry behaviour: versions, index, changes, concurrent readers.

use std::sync::Arc;

use caio_contracts::{Format, ServiceContract, parse_contract};

use crate::{MemoryRegistry, Registry, RegistryError};

fn contract(id: &str, caps: &[&str]) -> ServiceContract {
    let text = format!(
        "apiVersion: caio/v1\nkind: ServiceContract\nservice:\n  id: {id}\n  name: {id}\n  version: 1.0.0\n  capabilities: [{}]\n  api: {{ base_url: 'http://127.0.0.1:1', endpoints: {{ execute: {{ method: POST, path: /x }} }} }}\n",
        caps.join(", ")
    );
    match parse_contract(id, &text, Format::Yaml) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn versions_are_content_addressed() {
    let a = MemoryRegistry::with_contracts([contract("a", &["x"]), contract("b", &["y"])])
        .unwrap_or_default();
    let b = MemoryRegistry::with_contracts([contract("b", &["y"]), contract("a", &["x"])])
        .unwrap_or_default();
    assert_eq!(a.snapshot().version(), b.snapshot().version());
    let before = a.snapshot().version().to_owned();
    let change = a
        .register(contract("c", &["x"]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(change.previous_version, before);
    assert_ne!(change.version, before);
    a.remove("c").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        a.snapshot().version(),
        before,
        "removing the addition restores the version"
    );
}

#[test]
fn changes_are_checked() {
    let r = MemoryRegistry::with_contracts([contract("a", &["x"])]).unwrap_or_default();
    assert_eq!(
        r.register(contract("a", &["x"])),
        Err(RegistryError::AlreadyExists("a".into()))
    );
    assert_eq!(
        r.update(contract("zz", &["x"])),
        Err(RegistryError::NotFound("zz".into()))
    );
    assert_eq!(r.remove("zz"), Err(RegistryError::NotFound("zz".into())));
    r.update(contract("a", &["y"]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.snapshot().candidates(&["y".into()]), vec![0]);
    assert!(r.snapshot().candidates(&["x".into()]).is_empty());
}

#[test]
fn index_intersects_capabilities() {
    let r = MemoryRegistry::with_contracts([
        contract("a", &["x", "y"]),
        contract("b", &["x"]),
        contract("c", &["y", "x", "z"]),
        contract("d", &["z"]),
    ])
    .unwrap_or_default();
    let s = r.snapshot();
    let ids = |caps: &[&str]| -> Vec<String> {
        let caps: Vec<String> = caps.iter().map(|c| c.to_string()).collect();
        s.candidates(&caps)
            .into_iter()
            .map(|i| s.entries()[i].id.to_string())
            .collect()
    };
    assert_eq!(ids(&["x"]), ["a", "b", "c"]);
    assert_eq!(ids(&["x", "y"]), ["a", "c"]);
    assert_eq!(ids(&["z", "x"]), ["c"]);
    assert!(ids(&["nope"]).is_empty());
    assert!(ids(&["x", "nope"]).is_empty());
}

#[test]
fn readers_keep_their_snapshot_while_writers_publish() {
    let r = Arc::new(MemoryRegistry::new());
    let held = r.snapshot();
    let writer = {
        let r = Arc::clone(&r);
        std::thread::spawn(move || {
            for i in 0..200 {
                let _ = r.register(contract(&format!("s{i:03}"), &["x"]));
            }
        })
    };
    let mut last = 0;
    for _ in 0..2000 {
        let s = r.snapshot();
        assert!(s.len() >= last, "snapshots only grow here");
        assert_eq!(s.candidates(&["x".into()]).len(), s.len());
        last = s.len();
    }
    let _ = writer.join();
    assert!(held.is_empty(), "an old snapshot never changes");
    assert_eq!(r.snapshot().len(), 200);
}
