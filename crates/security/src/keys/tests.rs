//! Tests of API keys, the key stores and the bootstrap key, including hostile presented keys and
//! damaged key files.

use super::*;

const NOW: u64 = 1_700_000_000_000;

fn new_key(role: Role) -> NewKey {
    NewKey {
        name: "batch jobs".into(),
        role,
        tenant: "acme".into(),
        permissions: vec!["classify".into()],
        trust_level: 3,
        service_id: (role == Role::Service).then(|| "sentiment-eu".to_owned()),
        expires_at_ms: None,
    }
}

fn make(store: &dyn KeyStore, new: NewKey, now: u64) -> (String, KeyRecord) {
    let (plain, record) = generate(new, "admin-1", now).unwrap();
    store.insert(record.clone()).unwrap();
    (plain, record)
}

#[test]
fn generated_key_has_the_documented_shape() {
    let (plain, record) = generate(new_key(Role::Client), "admin-1", NOW).unwrap();
    assert_eq!(plain.len(), KEY_LEN);
    assert_eq!(KEY_LEN, 65);
    assert!(plain.starts_with("caio_"));
    assert_eq!(&plain[5..21], record.id);
    assert_eq!(&plain[21..22], "_");
    assert!(
        record
            .id
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    assert_eq!(key_id(&plain), Ok(record.id.as_str()));
    assert_eq!(record.hash, hash_key(&plain));
    assert!(record.hash.starts_with("sha256:"));
    assert_eq!(record.hash.len(), 7 + 64);
    assert!(!record.hash.contains(&plain[22..]));
    assert_eq!(record.created_at_ms, NOW);
    assert_eq!(record.created_by, "admin-1");
    assert_eq!(record.revoked_at_ms, None);
    // Two keys never share an id or a secret.
    let (other, other_rec) = generate(new_key(Role::Client), "admin-1", NOW).unwrap();
    assert_ne!(other, plain);
    assert_ne!(other_rec.id, record.id);
}

#[test]
fn generate_reports_every_invalid_field() {
    let bad = NewKey {
        name: String::new(),
        role: Role::Service,
        tenant: "ACME".into(),
        permissions: vec![String::new()],
        trust_level: 11,
        service_id: None,
        expires_at_ms: Some(NOW),
    };
    let Err(KeyError::Invalid(msg)) = generate(bad, "admin", NOW) else {
        panic!("expected Invalid");
    };
    for field in [
        "name:",
        "tenant:",
        "trust_level:",
        "permissions[0]:",
        "service_id:",
        "expires_at_ms:",
    ] {
        assert!(msg.contains(field), "{field} missing in {msg}");
    }
}

#[test]
fn generate_field_limits() {
    let mut n = new_key(Role::Client);
    n.name = "x".repeat(128);
    n.permissions = vec!["p".repeat(128); 256];
    n.trust_level = 10;
    assert!(generate(n.clone(), "a", NOW).is_ok());
    n.permissions.push("one-too-many".into());
    assert!(
        matches!(generate(n, "a", NOW), Err(KeyError::Invalid(m)) if m.contains("permissions:"))
    );

    let mut n = new_key(Role::Client);
    n.name = "line\nbreak".into();
    assert!(matches!(generate(n, "a", NOW), Err(KeyError::Invalid(m)) if m.starts_with("name:")));

    let mut n = new_key(Role::Operator);
    n.service_id = Some("sentiment-eu".into());
    assert!(
        matches!(generate(n, "a", NOW), Err(KeyError::Invalid(m)) if m.contains("only allowed"))
    );

    let mut n = new_key(Role::Service);
    n.service_id = Some("Sentiment EU".into());
    assert!(matches!(generate(n, "a", NOW), Err(KeyError::Invalid(m)) if m.contains("service_id")));
}

#[test]
fn new_key_defaults_from_json() {
    let n: NewKey = serde_json::from_str(r#"{"name":"ci","role":"client"}"#).unwrap();
    assert_eq!(n.tenant, "public");
    assert!(n.permissions.is_empty());
    assert_eq!(n.trust_level, 0);
    assert_eq!(n.service_id, None);
    assert_eq!(n.expires_at_ms, None);
    assert!(serde_json::from_str::<NewKey>(r#"{"name":"ci","role":"root"}"#).is_err());
    let typo =
        serde_json::from_str::<NewKey>(r#"{"name":"ci","role":"client","permisions":["x"]}"#);
    assert!(typo.unwrap_err().to_string().contains("permisions"));
}

#[test]
fn authenticate_accepts_the_key_and_maps_the_identity() {
    let store = MemoryKeyStore::new();
    let (plain, record) = make(&store, new_key(Role::Service), NOW);
    let got = store.authenticate(&plain, NOW + 1).unwrap();
    assert_eq!(got, record);
    let id = got.identity();
    assert_eq!(id.subject, record.id);
    assert_eq!(id.method, AuthMethod::ApiKey);
    assert_eq!(id.role, Role::Service);
    assert_eq!(id.service_id.as_deref(), Some("sentiment-eu"));
    assert_eq!(id.principal.id, record.id);
    assert_eq!(id.principal.tenant, "acme");
    assert_eq!(id.principal.permissions, ["classify"]);
    assert_eq!(id.principal.trust_level, 3);
    assert_eq!(id.principal.roles, ["service"]);
}

#[test]
fn authenticate_failures_in_order() {
    let store = MemoryKeyStore::new();
    let mut n = new_key(Role::Client);
    n.expires_at_ms = Some(NOW + 1000);
    let (plain, record) = make(&store, n, NOW);

    // Unknown id with a well-formed shape.
    let (stranger, _) = generate(new_key(Role::Client), "a", NOW).unwrap();
    assert_eq!(
        store.authenticate(&stranger, NOW),
        Err(AuthError::UnknownKey)
    );

    // Known id, wrong secret.
    let wrong_secret = format!("{}{}", &plain[..22], &stranger[22..]);
    assert_eq!(
        store.authenticate(&wrong_secret, NOW),
        Err(AuthError::InvalidKey)
    );

    // Expiry is exclusive of the instant.
    assert!(store.authenticate(&plain, NOW + 999).is_ok());
    assert_eq!(
        store.authenticate(&plain, NOW + 1000),
        Err(AuthError::Expired)
    );
    assert!(!record.is_active(NOW + 1000));
    assert!(record.is_active(NOW + 999));

    // Revocation wins over expiry, and a wrong secret still says InvalidKey for a revoked key
    // (so revocation status is not revealed to someone without the secret).
    store.revoke(&record.id, NOW + 10).unwrap();
    assert_eq!(
        store.authenticate(&plain, NOW + 20),
        Err(AuthError::Revoked)
    );
    assert_eq!(
        store.authenticate(&plain, NOW + 5000),
        Err(AuthError::Revoked)
    );
    assert_eq!(
        store.authenticate(&wrong_secret, NOW + 20),
        Err(AuthError::InvalidKey)
    );
}

#[test]
fn hostile_presented_keys_are_malformed() {
    let store = MemoryKeyStore::new();
    let (plain, _) = make(&store, new_key(Role::Client), NOW);
    let secret = &plain[22..];
    let id = &plain[5..21];
    let cases: Vec<String> = vec![
        String::new(),
        "caio_".into(),
        " ".repeat(KEY_LEN),
        plain[..KEY_LEN - 1].to_owned(),
        format!("{plain}A"),
        format!("{plain}="),
        "x".repeat(1 << 20),
        format!("CAIO_{}", &plain[5..]),
        format!("caio-{}", &plain[5..]),
        // An upper-case hex digit (`id.to_uppercase()` is the id itself when it is all digits).
        format!("caio_{}F_{}", &id[..15], secret),
        format!("caio_{}g_{}", &id[..15], secret),
        format!("caio_{}-{}", id, secret),
        format!("caio_{}_{}=", id, &secret[..42]),
        format!("caio_{}_{}+", id, &secret[..42]),
        format!("caio_{}_{}/", id, &secret[..42]),
        // Two bytes of UTF-8 in place of two characters: same byte length, not ASCII.
        format!("caio_{}_{}é", id, &secret[..41]),
        format!("caio_{}é_{}", &id[..14], secret),
        // 43 base64url characters whose unused low bits are set: a non-canonical spelling.
        format!("caio_{}_{}B", id, &"A".repeat(42)),
        format!("\u{0}{}", &plain[1..]),
    ];
    for c in &cases {
        assert!(
            matches!(store.authenticate(c, NOW), Err(AuthError::Malformed(_))),
            "{:?}",
            &c[..c.len().min(80)]
        );
    }
    // The canonical all-zero secret is well-formed (and unknown).
    let zero = format!("caio_{}_{}", "0".repeat(16), "A".repeat(43));
    assert_eq!(store.authenticate(&zero, NOW), Err(AuthError::UnknownKey));
}

#[test]
fn store_shape_checks_on_insert() {
    let store = MemoryKeyStore::new();
    let (_, record) = generate(new_key(Role::Client), "a", NOW).unwrap();
    let mut bad = record.clone();
    bad.id = "not-hex".into();
    assert!(matches!(store.insert(bad), Err(KeyError::Invalid(m)) if m.starts_with("id:")));
    let mut bad = record.clone();
    bad.hash = record.hash.to_uppercase();
    assert!(matches!(store.insert(bad), Err(KeyError::Invalid(m)) if m.starts_with("hash:")));
    store.insert(record.clone()).unwrap();
    assert_eq!(store.insert(record), Err(KeyError::Duplicate));
}

fn exercise_store(store: &dyn KeyStore) {
    let (_, a) = make(store, new_key(Role::Client), NOW + 5);
    let (_, b) = make(store, new_key(Role::Operator), NOW);
    let (_, c) = make(store, new_key(Role::Admin), NOW);
    let listed: Vec<String> = store.list().unwrap().into_iter().map(|r| r.id).collect();
    let mut first_two = [b.id.clone(), c.id.clone()];
    first_two.sort();
    assert_eq!(
        listed,
        [first_two[0].clone(), first_two[1].clone(), a.id.clone()]
    );
    assert_eq!(store.get(&a.id).unwrap(), Some(a.clone()));
    assert_eq!(store.get("0000000000000000").unwrap(), None);
    assert_eq!(
        store.revoke("0000000000000000", NOW),
        Err(KeyError::NotFound)
    );
    let r1 = store.revoke(&a.id, NOW + 10).unwrap();
    assert_eq!(r1.revoked_at_ms, Some(NOW + 10));
    let r2 = store.revoke(&a.id, NOW + 99).unwrap();
    assert_eq!(
        r2.revoked_at_ms,
        Some(NOW + 10),
        "the first revocation time stays"
    );
    assert_eq!(store.insert(b), Err(KeyError::Duplicate));
}

#[test]
fn memory_store_semantics() {
    exercise_store(&MemoryKeyStore::new());
}

#[test]
fn file_store_semantics_and_persistence() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    let store = FileKeyStore::open(&path).unwrap();
    assert!(store.list().unwrap().is_empty());
    assert!(!path.exists(), "opening does not create the file");
    exercise_store(&store);
    let (plain, rec) = make(&store, new_key(Role::Service), NOW + 7);
    let before = store.list().unwrap();

    let reopened = FileKeyStore::open(&path).unwrap();
    assert_eq!(reopened.list().unwrap(), before);
    assert_eq!(reopened.authenticate(&plain, NOW + 8).unwrap(), rec);

    // The file holds hashes only, never a plaintext secret.
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains(&plain[22..]));
    assert!(text.contains(&rec.hash));

    // No temporary files are left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [std::ffi::OsString::from("keys.json")]);
}

#[cfg(unix)]
#[test]
fn file_store_writes_mode_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    // Even replacing a world-readable file leaves a private one.
    std::fs::write(&path, "[]").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = FileKeyStore::open(&path).unwrap();
    make(&store, new_key(Role::Client), NOW);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn file_store_failed_write_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing-dir").join("keys.json");
    let store = FileKeyStore::open(&path).unwrap();
    let (_, record) = generate(new_key(Role::Client), "a", NOW).unwrap();
    let err = store.insert(record.clone()).unwrap_err();
    assert!(
        matches!(&err, KeyError::Io { path: p, .. } if p.contains("missing-dir")),
        "{err:?}"
    );
    assert_eq!(
        store.get(&record.id).unwrap(),
        None,
        "memory follows the disk"
    );
}

#[test]
fn corrupt_files_are_errors_with_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    let (_, rec) = generate(new_key(Role::Client), "a", NOW).unwrap();
    let good = serde_json::to_string_pretty(&vec![rec.clone()]).unwrap();
    let check = |content: &[u8]| {
        std::fs::write(&path, content).unwrap();
        match FileKeyStore::open(&path) {
            Err(KeyError::Corrupt {
                path: p,
                line,
                column,
                message,
            }) => {
                assert!(p.ends_with("keys.json"));
                (line, column, message)
            }
            other => panic!("expected Corrupt for {content:?}, got {other:?}"),
        }
    };

    let (line, column, _) = check(b"[\n  {\"id\": 1}\n]");
    assert_eq!((line, column), (2, 10));
    let (line, _, msg) = check(b"");
    assert_eq!(line, 1);
    assert!(msg.contains("EOF"), "{msg}");
    check(b"{}");
    check(b"[\xff\xfe]");
    check(&b"[".repeat(10_000));
    check(good.replace("\"client\"", "\"root\"").as_bytes());
    check(&good.as_bytes()[..good.len() - 3]);
    // Shape and duplicate checks have no single position.
    let dup = serde_json::to_string(&vec![rec.clone(), rec.clone()]).unwrap();
    let (line, column, msg) = check(dup.as_bytes());
    assert_eq!((line, column), (0, 0));
    assert!(msg.contains("duplicate"), "{msg}");
    let mut bad = rec.clone();
    bad.hash = "md5:abc".into();
    let (_, _, msg) = check(serde_json::to_string(&vec![bad]).unwrap().as_bytes());
    assert!(msg.contains("hash"), "{msg}");

    // The message names the path and the position in Display.
    std::fs::write(&path, b"[1]").unwrap();
    let shown = FileKeyStore::open(&path).unwrap_err().to_string();
    assert!(
        shown.contains("keys.json") && shown.contains("line 1, column 2"),
        "{shown}"
    );

    // An empty array is a valid, empty store.
    std::fs::write(&path, b"[]").unwrap();
    assert!(
        FileKeyStore::open(&path)
            .unwrap()
            .list()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn unreadable_path_is_io_error() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the file should be.
    let err = FileKeyStore::open(dir.path()).unwrap_err();
    assert_eq!(err.reason(), "io");
}

#[test]
fn redacted_view_has_no_hash() {
    let (_, rec) = generate(new_key(Role::Service), "admin-1", NOW).unwrap();
    let v = rec.redacted();
    let obj = v.as_object().unwrap();
    assert!(!obj.contains_key("hash"));
    assert!(!v.to_string().contains(&rec.hash[7..]));
    assert_eq!(obj["id"], rec.id.as_str());
    assert_eq!(obj["role"], "service");
    assert_eq!(obj["service_id"], "sentiment-eu");
    assert_eq!(obj["revoked_at_ms"], serde_json::Value::Null);
    // Every serialized field except the hash is in the view.
    let full = serde_json::to_value(&rec).unwrap();
    for k in full.as_object().unwrap().keys() {
        assert_eq!(obj.contains_key(k), k != "hash", "{k}");
    }
}

#[test]
fn record_json_round_trip_skips_absent_options() {
    let (_, rec) = generate(new_key(Role::Client), "a", NOW).unwrap();
    let json = serde_json::to_string(&rec).unwrap();
    assert!(!json.contains("service_id") && !json.contains("revoked_at_ms"));
    assert_eq!(serde_json::from_str::<KeyRecord>(&json).unwrap(), rec);
}

#[test]
fn bootstrap_key() {
    let secret = "s3cr3t-bootstrap-key-0123456789-abcdef";
    let b = BootstrapKey::from_plaintext(secret).unwrap();
    assert!(b.matches(secret));
    assert!(!b.matches(&secret[..secret.len() - 1]));
    assert!(!b.matches(""));
    assert!(!b.matches(&format!("{secret} ")));
    assert!(!format!("{b:?}").contains(secret));
    let id = b.identity();
    assert_eq!(id.subject, "bootstrap-admin");
    assert_eq!(id.role, Role::Admin);
    assert_eq!(id.method, AuthMethod::Bootstrap);
    assert_eq!(id.principal.tenant, "public");
    assert_eq!(id.principal.trust_level, 10);
    assert!(id.principal.permissions.is_empty());
    assert_eq!(id.principal.roles, ["admin"]);
}

#[test]
fn bootstrap_key_rejections_do_not_echo() {
    let cases = [
        "short-secret-value".to_owned(),
        "has a space in the middle of it, long enough".to_owned(),
        "tab\tinside-a-long-enough-bootstrap-key-value".to_owned(),
        "ünïcödé-is-not-ascii-but-it-is-long-enough-x".to_owned(),
        "x".repeat(1025),
        String::new(),
    ];
    for c in &cases {
        let err = BootstrapKey::from_plaintext(c).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, KeyError::Invalid(_)));
        assert!(msg.starts_with("invalid key: bootstrap key: must"), "{msg}");
        let head: String = c.chars().take(10).collect();
        if !head.is_empty() {
            assert!(!msg.contains(&head), "{msg}");
        }
    }
    assert!(BootstrapKey::from_plaintext(&"x".repeat(32)).is_ok());
    assert!(BootstrapKey::from_plaintext(&"x".repeat(1024)).is_ok());
}

/// The example key of docs/reference/authentication.md has the documented shape.
#[test]
fn documented_example_key_is_well_formed() {
    let example = "caio_3f9a0c4d12e87b65_q8Zr0dJ1Pp4xkW2uN6bYhT9cVgLm3sAeRf7oQiXyHn0";
    assert_eq!(key_id(example), Ok("3f9a0c4d12e87b65"));
}

#[test]
fn key_error_reasons() {
    assert_eq!(KeyError::NotFound.reason(), "not_found");
    assert_eq!(
        KeyError::Duplicate.to_string(),
        "a key with this id already exists"
    );
}

/// Rough cost of `authenticate` with a store of 10,000 keys. Run with
/// `cargo test -p caio-security --release -- --ignored --nocapture authenticate_cost`.
#[test]
#[ignore = "timing, run by hand"]
fn authenticate_cost() {
    let store = MemoryKeyStore::new();
    let mut plain = String::new();
    for i in 0..10_000 {
        plain = make(&store, new_key(Role::Client), NOW + i).0;
    }
    let n = 200_000u32;
    let start = std::time::Instant::now();
    for _ in 0..n {
        assert!(store.authenticate(&plain, NOW).is_ok());
    }
    let per = start.elapsed() / n;
    eprintln!("authenticate: {per:?} per call");
    assert!(per < std::time::Duration::from_millis(1));
}
