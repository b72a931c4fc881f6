//! Tests of the policy stores: shared behaviour, diff, the file layout, hostile files.

use std::fs;
use std::path::Path;

use proptest::prelude::*;

use super::*;

fn rule(id: &str, require: &str) -> PolicyRule {
    PolicyRule {
        description: None,
        id: id.into(),
        require: require.into(),
        when: "true".into(),
    }
}

fn set(rules: &[(&str, &str)]) -> PolicySet {
    PolicySet {
        policies: rules.iter().map(|(id, r)| rule(id, r)).collect(),
    }
}

fn v1() -> PolicySet {
    set(&[
        ("cheap", "service.cost.per_request <= 0.01"),
        ("local", "service.privacy.encryption"),
    ])
}

fn v2() -> PolicySet {
    set(&[
        ("cheap", "service.cost.per_request <= 0.001"),
        ("fast", "service.guarantees.latency_ms.max <= 200"),
    ])
}

fn shared_behaviour(s: &dyn PolicyStore) {
    assert!(s.active().unwrap().is_none());
    assert!(s.versions().unwrap().is_empty());
    assert!(s.history().unwrap().is_empty());

    let (m1, a1) = s.put(&v1(), "alice", 100, Some("first".into())).unwrap();
    assert_eq!(m1.version, compile(&v1()).unwrap().version);
    assert!(m1.version.starts_with("sha256:"));
    assert_eq!(
        m1,
        PolicyVersion {
            version: m1.version.clone(),
            created_at_ms: 100,
            author: "alice".into(),
            rules: 2,
            note: Some("first".into()),
        }
    );
    assert_eq!(
        a1,
        PolicyActivation {
            seq: 1,
            at_ms: 100,
            author: "alice".into(),
            action: PolicyAction::Put,
            version: m1.version.clone(),
            previous: None,
        }
    );
    assert_eq!(s.active().unwrap(), Some((m1.clone(), v1())));

    let (m2, a2) = s.put(&v2(), "bob", 200, None).unwrap();
    assert_ne!(m2.version, m1.version);
    assert_eq!((a2.seq, a2.previous.as_ref()), (2, Some(&m1.version)));
    assert_eq!(s.active().unwrap().unwrap().0, m2);

    // Putting the same rules again stores nothing new and keeps the first metadata.
    let (again, a3) = s.put(&v1(), "carol", 300, Some("again".into())).unwrap();
    assert_eq!(again, m1);
    assert_eq!((a3.seq, a3.action.clone()), (3, PolicyAction::Put));
    assert_eq!(a3.previous, Some(m2.version.clone()));
    assert_eq!(s.versions().unwrap(), vec![m2.clone(), m1.clone()]);

    // Rollback.
    let a4 = s.activate(&m2.version, "dave", 400).unwrap();
    assert_eq!(
        a4,
        PolicyActivation {
            seq: 4,
            at_ms: 400,
            author: "dave".into(),
            action: PolicyAction::Rollback,
            version: m2.version.clone(),
            previous: Some(m1.version.clone()),
        }
    );
    assert_eq!(s.active().unwrap(), Some((m2.clone(), v2())));
    assert!(matches!(
        s.activate("sha256:nope", "dave", 500),
        Err(PolicyStoreError::NotFound(v)) if v == "sha256:nope"
    ));
    assert_eq!(
        s.history()
            .unwrap()
            .iter()
            .map(|a| a.seq)
            .collect::<Vec<_>>(),
        vec![4, 3, 2, 1]
    );
    assert_eq!(s.get(&m1.version).unwrap(), Some((m1.clone(), v1())));
    assert_eq!(s.get("sha256:nope").unwrap(), None);

    // Invalid sets change nothing and report every error.
    let bad = set(&[
        ("a", "service.cost.per_request <="),
        ("b", "srvice.x == 1"),
        ("a", "true"),
    ]);
    match s.put(&bad, "eve", 600, None) {
        Err(PolicyStoreError::Invalid(errors)) => {
            let ids: Vec<_> = errors
                .iter()
                .map(|e| (e.policy_id.as_str(), e.field))
                .collect();
            assert_eq!(ids, vec![("a", "require"), ("b", "require"), ("a", "id")]);
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    let dup = set(&[("a", "true"), ("a", "true")]);
    assert!(matches!(
        s.put(&dup, "eve", 600, None),
        Err(PolicyStoreError::Invalid(e)) if e.len() == 1 && e[0].message.contains("duplicate")
    ));
    assert!(matches!(
        s.put(&v1(), &"x".repeat(MAX_AUTHOR_BYTES + 1), 600, None),
        Err(PolicyStoreError::BadArgument(_))
    ));
    assert!(matches!(
        s.put(&v1(), "eve", 600, Some("n".repeat(MAX_NOTE_BYTES + 1))),
        Err(PolicyStoreError::BadArgument(_))
    ));
    assert_eq!(s.history().unwrap().len(), 4);
    assert_eq!(s.versions().unwrap().len(), 2);

    // An empty set is a valid version (no rules: every service passes).
    let (empty, _) = s.put(&PolicySet::default(), "frank", 700, None).unwrap();
    assert_eq!(empty.rules, 0);
    assert_eq!(s.versions().unwrap()[0], empty);
}

#[test]
fn memory_store_behaviour() {
    shared_behaviour(&MemoryPolicyStore::new());
}

#[test]
fn file_store_behaviour_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("policies");
    let s = FilePolicyStore::open(&root).unwrap();
    shared_behaviour(&s);
    let (active, versions, history) = (
        s.active().unwrap(),
        s.versions().unwrap(),
        s.history().unwrap(),
    );
    drop(s);
    let s = FilePolicyStore::open(&root).unwrap();
    assert_eq!(s.truncated_bytes(), 0);
    assert_eq!(s.active().unwrap(), active);
    assert_eq!(s.versions().unwrap(), versions);
    assert_eq!(s.history().unwrap(), history);
    let next = s.activate(&versions[2].version, "gina", 800).unwrap();
    assert_eq!(next.seq, 6);
    drop(s);
    let s = FilePolicyStore::open(&root).unwrap();
    assert_eq!(s.active().unwrap().unwrap().0, versions[2]);
}

#[test]
fn the_file_layout_is_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let s = FilePolicyStore::open(dir.path()).unwrap();
    let (m, _) = s.put(&v1(), "alice", 100, None).unwrap();
    s.put(&v1(), "alice", 200, None).unwrap();
    let hex = m.version.strip_prefix("sha256:").unwrap();
    let files: Vec<String> = fs::read_dir(dir.path().join(VERSIONS_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files, vec![format!("{hex}.json")]);
    let text =
        fs::read_to_string(dir.path().join(VERSIONS_DIR).join(format!("{hex}.json"))).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    // The whole file is canonical JSON (sorted keys, no spaces) plus a newline.
    assert_eq!(text, format!("{}\n", canonical::to_string(&v).unwrap()));
    assert_eq!(v["version"], m.version);
    assert_eq!(
        canonical::digest(&v["set"]).unwrap(),
        m.version,
        "the version is the digest of the `set` member"
    );
    let history = fs::read_to_string(dir.path().join(HISTORY_FILE)).unwrap();
    let lines: Vec<serde_json::Value> = history
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["action"], "put");
    assert_eq!(lines[1]["previous"], m.version);
}

fn store_with_two() -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let s = FilePolicyStore::open(dir.path()).unwrap();
    let (a, _) = s.put(&v1(), "alice", 1, None).unwrap();
    let (b, _) = s.put(&v2(), "alice", 2, None).unwrap();
    s.activate(&a.version, "bob", 3).unwrap();
    (dir, a.version, b.version)
}

fn corrupt(dir: &Path) -> (PathBuf, u64, String) {
    match FilePolicyStore::open(dir) {
        Err(PolicyStoreError::Corrupt { path, line, reason }) => (path, line, reason),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

fn version_path(dir: &Path, version: &str) -> PathBuf {
    dir.join(VERSIONS_DIR)
        .join(format!("{}.json", version.strip_prefix("sha256:").unwrap()))
}

#[test]
fn an_edited_version_file_is_corrupt() {
    let (dir, a, _) = store_with_two();
    let path = version_path(dir.path(), &a);
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, text.replace("<= 0.01", "<= 0.99")).unwrap();
    let (p, line, reason) = corrupt(dir.path());
    assert_eq!((p, line), (path.clone(), 0));
    assert!(reason.contains("hashes to"), "{reason}");

    // Metadata is checked too.
    fs::write(&path, text.replace("\"rules\":2", "\"rules\":3")).unwrap();
    assert!(corrupt(dir.path()).2.contains("`rules`"));
    fs::write(&path, "").unwrap();
    assert!(corrupt(dir.path()).2.contains("not a policy version file"));
    fs::write(&path, "\u{0}garbage").unwrap();
    assert!(corrupt(dir.path()).2.contains("not a policy version file"));
    fs::write(&path, text.replace("\"author\"", "\"extra\":1,\"author\"")).unwrap();
    assert!(corrupt(dir.path()).2.contains("unknown field"));
}

#[test]
fn a_version_file_under_another_name_is_corrupt() {
    let (dir, a, b) = store_with_two();
    // The content of `a` under the name of `b`.
    fs::copy(version_path(dir.path(), &a), version_path(dir.path(), &b)).unwrap();
    assert!(corrupt(dir.path()).2.contains("not to the file's name"));
    fs::write(dir.path().join(VERSIONS_DIR).join("latest.json"), "{}").unwrap();
    assert!(corrupt(dir.path()).2.contains("64 lowercase hex"));
}

#[test]
fn leftover_temporary_files_and_other_files_are_ignored() {
    let (dir, a, _) = store_with_two();
    let versions = dir.path().join(VERSIONS_DIR);
    fs::write(versions.join(".abc.json.tmp"), "half a file").unwrap();
    fs::write(versions.join("README"), "notes").unwrap();
    let s = FilePolicyStore::open(dir.path()).unwrap();
    assert_eq!(s.active().unwrap().unwrap().0.version, a);
}

#[test]
fn a_missing_version_file_is_corrupt() {
    let (dir, _, b) = store_with_two();
    fs::remove_file(version_path(dir.path(), &b)).unwrap();
    let (_, line, reason) = corrupt(dir.path());
    assert_eq!(line, 2);
    assert!(reason.contains("no file"), "{reason}");
}

#[test]
fn hostile_history_files() {
    let (dir, _, _) = store_with_two();
    let path = dir.path().join(HISTORY_FILE);
    let text = fs::read_to_string(&path).unwrap();
    let l: Vec<&str> = text.lines().collect();
    let write = |lines: &[&str]| fs::write(&path, format!("{}\n", lines.join("\n"))).unwrap();
    let extra = l[1].replace("\"seq\":2", "\"seq\":2,\"x\":1");
    let wrong_previous = l[2].replace("\"previous\":\"sha256", "\"previous\":\"sha257");
    for (lines, bad) in [
        (vec![l[0], l[2]], 2),
        (vec![l[1], l[0], l[2]], 1),
        (vec![l[0], l[1], l[1]], 3),
        (vec![l[0], "garbage", l[2]], 2),
        (vec![l[0], "", l[2]], 2),
        (vec![l[0], &extra, l[2]], 2),
        (vec![l[0], l[1], &wrong_previous], 3),
    ] {
        write(&lines);
        let (p, line, reason) = corrupt(dir.path());
        assert_eq!((p, line), (path.clone(), bad), "{reason}");
    }
    let huge = "z".repeat(MAX_HISTORY_LINE_BYTES + 5);
    write(&[l[0], &huge, l[2]]);
    assert!(corrupt(dir.path()).2.contains("longer than"));

    // A torn last line is cut off; the activation before it is active again.
    fs::write(&path, format!("{}\n{}\n{}", l[0], l[1], &l[2][..10])).unwrap();
    let s = FilePolicyStore::open(dir.path()).unwrap();
    assert_eq!(s.truncated_bytes(), 10);
    assert_eq!(s.history().unwrap().len(), 2);
    assert_eq!(
        s.active().unwrap().unwrap().0.version,
        s.history().unwrap()[0].version
    );
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        format!("{}\n{}\n", l[0], l[1])
    );
    drop(s);

    // An empty history: versions are there, none is active.
    fs::write(&path, "").unwrap();
    let s = FilePolicyStore::open(dir.path()).unwrap();
    assert!(s.active().unwrap().is_none());
    assert_eq!(s.versions().unwrap().len(), 2);
    // And the directory is locked while open.
    assert!(matches!(
        FilePolicyStore::open(dir.path()),
        Err(PolicyStoreError::Locked { .. })
    ));
}

#[test]
fn diff_by_rule_id() {
    let mut to = v2();
    to.policies.push(rule("audit", "true"));
    let d = diff("sha256:a", &v1(), "sha256:b", &to);
    assert_eq!(d.from, "sha256:a");
    assert_eq!(d.to, "sha256:b");
    assert_eq!(
        d.added.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        vec!["audit", "fast"]
    );
    assert_eq!(d.removed, vec![rule("local", "service.privacy.encryption")]);
    assert_eq!(
        d.changed,
        vec![ChangedRule {
            id: "cheap".into(),
            before: rule("cheap", "service.cost.per_request <= 0.01"),
            after: rule("cheap", "service.cost.per_request <= 0.001"),
        }]
    );
    assert!(!d.reordered);
    let same = diff("x", &v1(), "x", &v1());
    assert!(same.added.is_empty() && same.removed.is_empty() && same.changed.is_empty());
    let mut swapped = v1();
    swapped.policies.reverse();
    let d = diff("x", &v1(), "y", &swapped);
    assert!(d.reordered && d.changed.is_empty());
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["reordered"], true);
}

#[test]
fn errors_name_the_file() {
    let (dir, a, _) = store_with_two();
    let path = version_path(dir.path(), &a);
    fs::write(&path, "{").unwrap();
    let err = FilePolicyStore::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    let invalid = MemoryPolicyStore::new()
        .put(&set(&[("a", "nope(")]), "x", 1, None)
        .unwrap_err()
        .to_string();
    assert!(invalid.contains("policy `a`"), "{invalid}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever sequence of puts and rollbacks, the file store reopens to the same state as the
    /// memory store that saw the same calls, and the active version is the last one activated.
    #[test]
    fn file_and_memory_agree(ops in proptest::collection::vec((0..4usize, any::<bool>()), 1..12)) {
        let sets = [v1(), v2(), PolicySet::default(), set(&[("only", "true")])];
        let dir = tempfile::tempdir().unwrap();
        let file = FilePolicyStore::open(dir.path()).unwrap();
        let mem = MemoryPolicyStore::new();
        let mut last = None;
        for (t, (i, rollback)) in ops.into_iter().enumerate() {
            let version = compile(&sets[i]).unwrap().version;
            let stored = mem.get(&version).unwrap().is_some();
            if rollback && stored {
                prop_assert_eq!(
                    file.activate(&version, "a", t as u64).unwrap(),
                    mem.activate(&version, "a", t as u64).unwrap()
                );
            } else {
                prop_assert_eq!(
                    file.put(&sets[i], "a", t as u64, None).unwrap(),
                    mem.put(&sets[i], "a", t as u64, None).unwrap()
                );
            }
            last = Some(version);
        }
        drop(file);
        let file = FilePolicyStore::open(dir.path()).unwrap();
        prop_assert_eq!(file.versions().unwrap(), mem.versions().unwrap());
        prop_assert_eq!(file.history().unwrap(), mem.history().unwrap());
        prop_assert_eq!(file.active().unwrap(), mem.active().unwrap());
        prop_assert_eq!(file.active().unwrap().map(|(m, _)| m.version), last);
    }
}
