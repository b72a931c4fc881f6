//! Tests of the audit logs: shared behaviour, the file format, hostile files.

use std::fs;

use proptest::prelude::*;

use super::*;

fn event(at: u64, actor: &str, action: &str, target: &str) -> AuditEvent {
    AuditEvent {
        at_ms: at,
        actor: actor.into(),
        actor_role: "admin".into(),
        tenant: "acme".into(),
        action: action.into(),
        target: target.into(),
        before: None,
        after: Some(format!("sha256:{}", "ab".repeat(32))),
        request_id: Some(format!("req-{at}")),
    }
}

fn seqs(p: &AuditPage) -> Vec<u64> {
    p.items.iter().map(|e| e.seq).collect()
}

fn shared_behaviour(log: &dyn AuditLog) {
    assert_eq!(log.head().seq, 0);
    let first = log
        .append(event(1, "alice", "service.register", "svc-a"))
        .unwrap();
    assert_eq!(first.seq, 1);
    assert_eq!(first.prev, "0".repeat(64));
    assert_eq!(log.head().hash, first.hash);
    let second = log
        .append(event(2, "bob", "service.update", "svc-a"))
        .unwrap();
    assert_eq!(second.prev, first.hash);
    log.append(event(3, "alice", "policies.put", "sha256:1"))
        .unwrap();
    log.append(event(4, "alice", "service.delete", "svc-b"))
        .unwrap();
    log.append(event(5, "carol", "key.create", "key-1"))
        .unwrap();
    assert_eq!(log.head().seq, 5);

    let q = |f: fn(&mut AuditQuery)| {
        let mut q = AuditQuery::default();
        f(&mut q);
        seqs(&log.query(&q).unwrap())
    };
    assert_eq!(q(|_| {}), vec![5, 4, 3, 2, 1]);
    assert_eq!(q(|q| q.actor = Some("alice".into())), vec![4, 3, 1]);
    assert_eq!(q(|q| q.action = Some("service.".into())), vec![4, 2, 1]);
    assert_eq!(q(|q| q.action = Some("service".into())), Vec::<u64>::new());
    assert_eq!(q(|q| q.action = Some("service.update".into())), vec![2]);
    assert_eq!(q(|q| q.target = Some("svc-a".into())), vec![2, 1]);
    assert_eq!(q(|q| q.tenant = Some("other".into())), Vec::<u64>::new());
    assert_eq!(
        q(|q| {
            q.since_ms = Some(2);
            q.until_ms = Some(4);
        }),
        vec![3, 2]
    );
    let page = log
        .query(&AuditQuery {
            limit: 2,
            ..Default::default()
        })
        .unwrap();
    assert_eq!((seqs(&page), page.next_cursor), (vec![5, 4], Some(4)));
    let page = log
        .query(&AuditQuery {
            limit: 2,
            before_seq: Some(4),
            ..Default::default()
        })
        .unwrap();
    assert_eq!((seqs(&page), page.next_cursor), (vec![3, 2], Some(2)));
    let page = log
        .query(&AuditQuery {
            limit: 2,
            before_seq: Some(2),
            ..Default::default()
        })
        .unwrap();
    assert_eq!((seqs(&page), page.next_cursor), (vec![1], None));

    assert!(matches!(
        log.append(event(6, "alice", "", "x")),
        Err(StoreError::Invalid(_))
    ));
    let mut long = event(6, "alice", "service.update", "x");
    long.before = Some("x".repeat(MAX_AUDIT_FIELD_BYTES + 1));
    assert!(matches!(log.append(long), Err(StoreError::Invalid(_))));
    assert_eq!(log.head().seq, 5);
}

#[test]
fn memory_log_behaviour() {
    shared_behaviour(&MemoryAuditLog::new());
}

#[test]
fn file_log_behaviour_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = FileAuditLog::open(dir.path()).unwrap();
    shared_behaviour(&log);
    let head = log.head();
    let all = log.query(&AuditQuery::default()).unwrap().items;
    drop(log);
    let log = FileAuditLog::open(dir.path()).unwrap();
    assert_eq!(log.truncated_bytes(), 0);
    assert_eq!(log.head(), head);
    assert_eq!(log.query(&AuditQuery::default()).unwrap().items, all);
    assert_eq!(verify_audit_log(log.path()).unwrap(), head);
    let next = log.append(event(9, "dave", "key.revoke", "key-1")).unwrap();
    assert_eq!((next.seq, next.prev), (6, head.hash));
}

#[test]
fn memory_and_file_logs_compute_the_same_chain() {
    let dir = tempfile::tempdir().unwrap();
    let f = FileAuditLog::open(dir.path()).unwrap();
    let m = MemoryAuditLog::new();
    for n in 0..5 {
        let e = event(n, "a", "service.update", "s");
        assert_eq!(f.append(e.clone()).unwrap(), m.append(e).unwrap());
    }
}

#[test]
fn entry_json_is_flat() {
    let log = MemoryAuditLog::new();
    let e = log
        .append(event(7, "alice", "policies.rollback", "sha256:x"))
        .unwrap();
    let v = serde_json::to_value(&e).unwrap();
    assert_eq!(v["seq"], 1);
    assert_eq!(v["action"], "policies.rollback");
    assert_eq!(v["before"], serde_json::Value::Null);
    let back: AuditEntry = serde_json::from_value(v).unwrap();
    assert_eq!(back, e);
    // Optional fields may be left out by clients.
    let minimal: AuditEvent = serde_json::from_str(
        r#"{"at_ms":1,"actor":"a","actor_role":"admin","tenant":"t","action":"key.create","target":"k"}"#,
    )
    .unwrap();
    assert_eq!(minimal.before, None);
}

fn three() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let log = FileAuditLog::open(dir.path()).unwrap();
    for n in 1..=3 {
        log.append(event(n, "alice", "service.update", "svc"))
            .unwrap();
    }
    dir
}

fn corrupt_line(dir: &std::path::Path) -> (u64, String) {
    match FileAuditLog::open(dir) {
        Err(StoreError::Corrupt { line, reason, .. }) => (line, reason),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn hostile_files() {
    let dir = three();
    let path = dir.path().join(AUDIT_FILE);
    let text = fs::read_to_string(&path).unwrap();
    let l: Vec<&str> = text.lines().collect();
    let write = |lines: &[&str]| fs::write(&path, format!("{}\n", lines.join("\n"))).unwrap();

    // An edited middle entry.
    let edited = l[1].replace("\"actor\":\"alice\"", "\"actor\":\"mallory\"");
    write(&[l[0], &edited, l[2]]);
    let (line, reason) = corrupt_line(dir.path());
    assert_eq!(line, 2);
    assert!(reason.contains("hash does not match"), "{reason}");
    assert!(matches!(
        verify_audit_log(&path),
        Err(StoreError::Corrupt { line: 2, .. })
    ));

    // A removed entry, garbage, an empty line, an unknown field.
    let extra = l[1].replace("\"seq\":2", "\"seq\":2,\"note\":\"x\"");
    for (lines, bad) in [
        (vec![l[0], l[2]], 2),
        (vec![l[0], "garbage", l[2]], 2),
        (vec![l[0], "", l[2]], 2),
        (vec![l[0], &extra, l[2]], 2),
        (vec![l[0], l[1], l[2], "{}"], 4),
    ] {
        write(&lines);
        assert_eq!(corrupt_line(dir.path()).0, bad);
    }

    // A huge line.
    let huge = "y".repeat(MAX_AUDIT_LINE_BYTES + 1);
    write(&[l[0], &huge]);
    let (line, reason) = corrupt_line(dir.path());
    assert_eq!(line, 2);
    assert!(reason.contains("longer than"), "{reason}");

    // A torn last line is cut off.
    fs::write(&path, format!("{}\n{}\n{}", l[0], l[1], &l[2][..20])).unwrap();
    assert!(matches!(
        verify_audit_log(&path),
        Err(StoreError::Corrupt { line: 3, .. })
    ));
    let log = FileAuditLog::open(dir.path()).unwrap();
    assert_eq!(log.truncated_bytes(), 20);
    assert_eq!(log.head().seq, 2);
    assert_eq!(log.append(event(9, "a", "key.create", "k")).unwrap().seq, 3);
    drop(log);
    verify_audit_log(&path).unwrap();

    // An empty file.
    fs::write(&path, "").unwrap();
    let log = FileAuditLog::open(dir.path()).unwrap();
    assert_eq!(log.head().seq, 0);
    // And a second open of the same file is refused while the first is open.
    assert!(matches!(
        FileAuditLog::open(dir.path()),
        Err(StoreError::Locked { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Changing any one byte of the log, except its final newline, is detected on open.
    #[test]
    fn any_single_byte_edit_is_detected(pos in any::<proptest::sample::Index>(), byte in any::<u8>()) {
        let dir = three();
        let path = dir.path().join(AUDIT_FILE);
        let mut bytes = fs::read(&path).unwrap();
        let i = pos.index(bytes.len() - 1);
        prop_assume!(bytes[i] != byte);
        bytes[i] = byte;
        fs::write(&path, &bytes).unwrap();
        let r = FileAuditLog::open(dir.path());
        prop_assert!(matches!(r, Err(StoreError::Corrupt { .. })), "byte {} -> {:?}: {:?}", i, byte, r);
    }
}
