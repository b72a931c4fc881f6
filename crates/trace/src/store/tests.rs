//! Tests of the trace stores: behaviour shared by both backends, the file format, hostile files.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;

use super::*;

fn id(n: u64) -> String {
    format!("sha256:{}", hex::encode(sha2_of(n)))
}

fn sha2_of(n: u64) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(n.to_be_bytes()).into()
}

fn body(n: u64, pad: usize) -> Bytes {
    Bytes::from(format!(
        "{{\"decision_id\":\"{}\",\"n\":{n},\"pad\":\"{}\"}}",
        id(n),
        "x".repeat(pad)
    ))
}

fn rec(n: u64, at: u64, tenant: &str, principal: &str, service: Option<&str>) -> TraceRecord {
    TraceRecord {
        decision_id: id(n),
        recorded_at_ms: at,
        tenant: tenant.into(),
        principal_id: principal.into(),
        service_id: service.map(str::to_owned),
        outcome: if service.is_some() {
            Outcome::Routed
        } else {
            Outcome::NoRoute
        },
        body: body(n, 10).into(),
    }
}

fn open(dir: &Path) -> (FileTraceStore, OpenReport) {
    FileTraceStore::open(dir, Durability::Buffered).unwrap()
}

fn corrupt_line(r: Result<(FileTraceStore, OpenReport), StoreError>) -> (u64, String) {
    match r {
        Err(StoreError::Corrupt { line, reason, .. }) => (line, reason),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    fs::write(path, text).unwrap();
}

/// Three records in a fresh file store; returns the dir.
fn three() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path());
    s.append_batch(vec![
        rec(1, 10, "acme", "alice", Some("svc-a")),
        rec(2, 20, "acme", "bob", None),
        rec(3, 30, "beta", "carol", Some("svc-b")),
    ])
    .unwrap();
    dir
}

#[test]
fn outcome_spellings_agree_with_serde() {
    for o in Outcome::ALL {
        let json = serde_json::to_string(&o).unwrap();
        assert_eq!(json, format!("\"{}\"", o.as_str()));
        assert_eq!(o.as_str().parse::<Outcome>().unwrap(), o);
        assert_eq!(o.to_string(), o.as_str());
    }
    assert_eq!(
        "execute".parse::<Outcome>(),
        Err(UnknownOutcome("execute".into()))
    );
}

/// Behaviour both backends share.
fn shared_behaviour(s: &dyn TraceStore) {
    assert_eq!(s.len(), 0);
    assert!(s.is_empty());
    assert_eq!(
        s.head(),
        ChainHead {
            seq: 0,
            hash: "0".repeat(64)
        }
    );
    assert_eq!(s.append_batch(vec![]).unwrap(), Vec::<u64>::new());
    let seqs = s
        .append_batch(vec![
            rec(1, 100, "acme", "alice", Some("svc-a")),
            rec(2, 110, "acme", "bob", None),
        ])
        .unwrap();
    assert_eq!(seqs, vec![1, 2]);
    let head2 = s.head();
    assert_eq!(head2.seq, 2);
    assert_ne!(head2.hash, "0".repeat(64));
    // The same decision routed again: `get` returns the latest.
    let mut again = rec(1, 120, "acme", "alice", Some("svc-a"));
    again.body = Bytes::from_static(br#"{"again":true}"#).into();
    let seqs = s
        .append_batch(vec![again, rec(3, 130, "beta", "carol", Some("svc-b"))])
        .unwrap();
    assert_eq!(seqs, vec![3, 4]);
    assert_eq!(s.len(), 4);

    let got = s.get(&id(1)).unwrap().unwrap();
    assert_eq!(got.summary.seq, 3);
    assert_eq!(got.summary.recorded_at_ms, 120);
    assert_eq!(&got.body[..], br#"{"again":true}"#);
    let got = s.get(&id(2)).unwrap().unwrap();
    assert_eq!(
        got.summary,
        TraceSummary {
            seq: 2,
            decision_id: id(2),
            recorded_at_ms: 110,
            tenant: "acme".into(),
            principal_id: "bob".into(),
            service_id: None,
            outcome: Outcome::NoRoute,
        }
    );
    assert_eq!(got.body, body(2, 10));
    assert!(s.get(&id(99)).unwrap().is_none());
    assert!(s.get("not-an-id").unwrap().is_none());

    let all = s.query(&TraceQuery::default()).unwrap();
    assert_eq!(
        all.items.iter().map(|i| i.seq).collect::<Vec<_>>(),
        vec![4, 3, 2, 1]
    );
    assert_eq!(all.next_cursor, None);

    let acme = s
        .query(&TraceQuery {
            tenant: Some("acme".into()),
            limit: 2,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        acme.items.iter().map(|i| i.seq).collect::<Vec<_>>(),
        vec![3, 2]
    );
    assert_eq!(acme.next_cursor, Some(2));
    let rest = s
        .query(&TraceQuery {
            tenant: Some("acme".into()),
            limit: 2,
            before_seq: acme.next_cursor,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        rest.items.iter().map(|i| i.seq).collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(rest.next_cursor, None);

    let q = |f: fn(&mut TraceQuery)| {
        let mut q = TraceQuery::default();
        f(&mut q);
        s.query(&q)
            .unwrap()
            .items
            .iter()
            .map(|i| i.seq)
            .collect::<Vec<_>>()
    };
    assert_eq!(q(|q| q.outcome = Some(Outcome::NoRoute)), vec![2]);
    assert_eq!(q(|q| q.service_id = Some("svc-a".into())), vec![3, 1]);
    assert_eq!(q(|q| q.principal_id = Some("carol".into())), vec![4]);
    assert_eq!(q(|q| q.tenant = Some("nobody".into())), Vec::<u64>::new());
    assert_eq!(q(|q| q.since_ms = Some(110)), vec![4, 3, 2]);
    assert_eq!(q(|q| q.until_ms = Some(110)), vec![1]);
    assert_eq!(
        q(|q| {
            q.since_ms = Some(110);
            q.until_ms = Some(130);
        }),
        vec![3, 2]
    );
    assert_eq!(q(|q| q.before_seq = Some(1)), Vec::<u64>::new());
    assert_eq!(q(|q| q.before_seq = Some(0)), Vec::<u64>::new());
    assert_eq!(q(|q| q.before_seq = Some(1000)), vec![4, 3, 2, 1]);
    assert_eq!(q(|q| q.limit = 100_000), vec![4, 3, 2, 1]);
    assert_eq!(q(|q| q.limit = 1), vec![4]);
}

#[test]
fn memory_store_behaviour() {
    shared_behaviour(&MemoryTraceStore::new());
}

#[test]
fn file_store_behaviour() {
    let dir = tempfile::tempdir().unwrap();
    let (s, report) = open(&dir.path().join("nested/traces"));
    assert_eq!(report, OpenReport::default());
    shared_behaviour(&s);
}

#[test]
fn both_backends_compute_the_same_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (f, _) = open(dir.path());
    let m = MemoryTraceStore::new();
    for batch in [
        vec![rec(1, 1, "t", "p", Some("s"))],
        vec![rec(2, 2, "t", "p", None), rec(3, 3, "u", "q", Some("s"))],
    ] {
        f.append_batch(batch.clone()).unwrap();
        m.append_batch(batch).unwrap();
        assert_eq!(f.head(), m.head());
    }
}

#[test]
fn reopen_restores_index_bodies_and_head() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path());
    let mut records = Vec::new();
    for n in 0..50u64 {
        let service = format!("svc-{}", n % 3);
        records.push(rec(
            n % 40,
            1000 + n,
            ["a", "b"][(n % 2) as usize],
            "p",
            (n % 5 != 0).then_some(service.as_str()),
        ));
    }
    for chunk in records.chunks(7) {
        s.append_batch(chunk.to_vec()).unwrap();
    }
    let head = s.head();
    let page = s.query(&TraceQuery::default()).unwrap();
    drop(s);
    let (s, report) = open(dir.path());
    assert_eq!(
        report,
        OpenReport {
            records: 50,
            truncated_bytes: 0,
            truncated_segment: None,
            removed_segments: 0
        }
    );
    assert_eq!(s.head(), head);
    assert_eq!(s.query(&TraceQuery::default()).unwrap().items, page.items);
    for n in 0..40 {
        let got = s.get(&id(n)).unwrap().unwrap();
        // The latest record for id n is record n + 40 when that exists.
        let expect = if n + 40 < 50 { n + 40 } else { n };
        assert_eq!(got.summary.seq, expect + 1);
        assert_eq!(got.body, body(n, 10));
    }
    assert_eq!(verify_log(s.path()).unwrap(), head);
    // Appending after a reopen continues the chain.
    assert_eq!(
        s.append_batch(vec![rec(7, 5000, "a", "p", None)]).unwrap(),
        vec![51]
    );
    drop(s);
    let (s, _) = open(dir.path());
    assert_eq!(s.len(), 51);
    assert_eq!(s.get(&id(7)).unwrap().unwrap().summary.seq, 51);
}

#[test]
fn the_line_format_is_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path());
    // A body with whitespace, escapes and non-ASCII text is stored byte for byte.
    let raw = "{ \"b\" : [1, 2.50, \"\\u00e9 é\"] , \"c\":{} }";
    let mut r = rec(1, 1_700_000_000_000, "acme", "alice", Some("svc-a"));
    r.body = Bytes::from(raw).into();
    s.append_batch(vec![r, rec(2, 1_700_000_000_001, "acme", "bob", None)])
        .unwrap();
    let l = lines(s.path());
    assert_eq!(l.len(), 2);
    let first: serde_json::Value = serde_json::from_str(&l[0]).unwrap();
    let prefix = format!(
        "{{\"seq\":1,\"at\":1700000000000,\"id\":\"{}\",\"tenant\":\"acme\",\"principal\":\"alice\",\"service\":\"svc-a\",\"outcome\":\"routed\",\"prev\":\"{}\",\"hash\":\"{}\",\"body\":",
        id(1),
        "0".repeat(64),
        first["hash"].as_str().unwrap()
    );
    assert_eq!(l[0], format!("{prefix}{raw}}}"));
    let second: serde_json::Value = serde_json::from_str(&l[1]).unwrap();
    assert_eq!(second["prev"], first["hash"]);
    assert_eq!(second["service"], serde_json::Value::Null);
    assert_eq!(second["outcome"], "no_route");
    assert_eq!(&s.get(&id(1)).unwrap().unwrap().body[..], raw.as_bytes());

    // The hash is SHA-256 over prev, the length-prefixed fields and the body, as documented.
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update([0u8; 32]);
    h.update(1u64.to_be_bytes());
    h.update(1_700_000_000_000u64.to_be_bytes());
    for s in [id(1).as_str(), "acme", "alice"] {
        h.update((s.len() as u64).to_be_bytes());
        h.update(s.as_bytes());
    }
    h.update([1u8]);
    h.update(5u64.to_be_bytes());
    h.update(b"svc-a");
    h.update(6u64.to_be_bytes());
    h.update(b"routed");
    h.update(raw.as_bytes());
    assert_eq!(first["hash"], hex::encode(h.finalize()));
}

#[test]
fn invalid_records_are_rejected_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path());
    s.append_batch(vec![rec(1, 1, "t", "p", None)]).unwrap();
    let size = fs::metadata(s.path()).unwrap().len();
    let bad_bodies: &[&[u8]] = &[
        b"",
        b"   ",
        b"[1,2]",
        b"\"text\"",
        b"42",
        b"{",
        b"{\"a\":1} trailing",
        b"{\"a\":\n1}",
        b"{\"a\":\"\xff\"}",
        b"not json",
        b"{\"a\":\"\x01\"}",
        b"{\"a\":\"\\q\"}",
        b"{\"a\":\"\\u12\"}",
        b"{\"a\":\"\\ud800\"}",
        b"{\"a\":01}",
        b"{\"a\":1,}",
        b"{} {}",
        b"{\"a\":\"\\uDFFF\"}",
        b"{\"a\":\"\\ud83d\\u0041\"}",
    ];
    for bad in bad_bodies {
        let mut r = rec(2, 2, "t", "p", None);
        r.body = Bytes::copy_from_slice(bad).into();
        // A valid record first: the batch is all or nothing.
        let err = match s.append_batch(vec![rec(3, 3, "t", "p", None), r]) {
            Err(e) => e,
            Ok(_) => panic!("accepted {:?}", String::from_utf8_lossy(bad)),
        };
        assert!(
            matches!(&err, StoreError::Invalid(m) if m.contains("record 1")),
            "{bad:?}: {err}"
        );
    }
    let mut r = rec(2, 2, "t", "p", None);
    r.body = Bytes::from_static(b"[]").into();
    assert!(matches!(r.validate(), Err(StoreError::Invalid(_))));
    assert!(rec(2, 2, "t", "p", None).validate().is_ok());
    let mut r = rec(2, 2, "t", "p", None);
    r.decision_id = String::new();
    assert!(matches!(
        s.append_batch(vec![r]),
        Err(StoreError::Invalid(_))
    ));
    let mut r = rec(2, 2, "t", "p", None);
    r.tenant = "t".repeat(MAX_FIELD_BYTES + 1);
    assert!(matches!(
        s.append_batch(vec![r]),
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(s.len(), 1);
    assert_eq!(fs::metadata(s.path()).unwrap().len(), size);
    // Surrogate pairs and escaped backslashes before `u` are fine.
    let mut r = rec(2, 2, "t", "p", None);
    r.body = Bytes::from_static(br#"{"a":"\ud83d\ude00 \\ud800"}"#).into();
    assert_eq!(s.append_batch(vec![r]).unwrap(), vec![2]);
    // Leading whitespace is fine: the body is still an object.
    let mut r = rec(2, 2, "t", "p", None);
    r.body = Bytes::from_static(b" \t{}").into();
    assert_eq!(s.append_batch(vec![r]).unwrap(), vec![3]);
    drop(s);
    assert_eq!(open(dir.path()).1.records, 3);
}

#[test]
fn strings_that_look_like_syntax_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path());
    let mut r = rec(
        1,
        1,
        "a\",\"body\":{}",
        "line\nbreak \u{1F600}",
        Some("\\\""),
    );
    r.decision_id = "custom id ,\"body\":".into();
    s.append_batch(vec![r.clone()]).unwrap();
    drop(s);
    let (s, _) = open(dir.path());
    let got = s.get("custom id ,\"body\":").unwrap().unwrap();
    assert_eq!(got.summary.tenant, r.tenant);
    assert_eq!(got.summary.principal_id, r.principal_id);
    assert_eq!(got.summary.service_id, r.service_id);
    assert_eq!(got.body, r.body);
    assert_eq!(lines(s.path()).len(), 1);
}

#[test]
fn empty_file_opens_as_empty_store() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(TRACE_FILE), b"").unwrap();
    let (s, report) = open(dir.path());
    assert_eq!(report, OpenReport::default());
    assert_eq!(s.head().hash, genesis_hash());
    assert_eq!(
        verify_log(s.path()).unwrap(),
        ChainHead {
            seq: 0,
            hash: genesis_hash()
        }
    );
}

#[test]
fn torn_last_line_is_cut_off_and_reported() {
    let dir = three();
    let path = dir.path().join(TRACE_FILE);
    let full = fs::read(&path).unwrap();
    let l = lines(&path);
    // Cut the third line in the middle, as a crash during the write would.
    let cut = full.len() - l[2].len() / 2;
    fs::write(&path, &full[..cut]).unwrap();
    let err = verify_log(&path).unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { line: 3, reason, .. } if reason.contains("incomplete")),
        "{err}"
    );
    let (s, report) = open(dir.path());
    let torn = (cut - (l[0].len() + l[1].len() + 2)) as u64;
    assert_eq!(
        report,
        OpenReport {
            records: 2,
            truncated_bytes: torn,
            truncated_segment: None,
            removed_segments: 0
        }
    );
    assert_eq!(
        fs::metadata(&path).unwrap().len() as usize,
        l[0].len() + l[1].len() + 2
    );
    assert!(s.get(&id(3)).unwrap().is_none());
    assert_eq!(
        s.append_batch(vec![rec(4, 40, "t", "p", None)]).unwrap(),
        vec![3]
    );
    drop(s);
    let (s, report) = open(dir.path());
    assert_eq!(
        report,
        OpenReport {
            records: 3,
            truncated_bytes: 0,
            truncated_segment: None,
            removed_segments: 0
        }
    );
    verify_log(s.path()).unwrap();
}

#[test]
fn a_last_line_missing_only_its_newline_is_cut_too() {
    // Append returns only after the whole line is written, so such a record was never
    // acknowledged and dropping it loses nothing a client was told about.
    let dir = three();
    let path = dir.path().join(TRACE_FILE);
    let full = fs::read(&path).unwrap();
    fs::write(&path, &full[..full.len() - 1]).unwrap();
    let (s, report) = open(dir.path());
    assert_eq!(report.records, 2);
    let third = full.split(|b| *b == b'\n').nth(2).unwrap();
    assert_eq!(report.truncated_bytes, third.len() as u64);
    assert_eq!(s.len(), 2);
}

#[test]
fn edited_middle_record_is_corrupt() {
    let dir = three();
    let path = dir.path().join(TRACE_FILE);
    let mut l = lines(&path);
    l[1] = l[1].replace("\"tenant\":\"acme\"", "\"tenant\":\"acmf\"");
    write_lines(&path, &l);
    let (line, reason) = corrupt_line(FileTraceStore::open(dir.path(), Durability::Buffered));
    assert_eq!(line, 2);
    assert!(reason.contains("hash does not match"), "{reason}");
    assert!(matches!(
        verify_log(&path),
        Err(StoreError::Corrupt { line: 2, .. })
    ));
}

#[test]
fn edited_body_is_corrupt() {
    let dir = three();
    let path = dir.path().join(TRACE_FILE);
    let mut l = lines(&path);
    l[0] = l[0].replace("\"n\":1,", "\"n\":7,");
    write_lines(&path, &l);
    let (line, reason) = corrupt_line(FileTraceStore::open(dir.path(), Durability::Buffered));
    assert_eq!((line, reason.contains("hash does not match")), (1, true));
}

#[test]
fn forged_record_with_recomputed_hash_breaks_the_next_link() {
    // Whoever edits a record and recomputes its hash must also rewrite every later record.
    let dir = three();
    let path = dir.path().join(TRACE_FILE);
    let mut l = lines(&path);
    let v: serde_json::Value = serde_json::from_str(&l[0]).unwrap();
    let prev = [0u8; 32];
    let forged_body = br#"{"forged":true}"#;
    let h = Header {
        seq: 1,
        at: 10,
        id: v["id"].as_str().unwrap(),
        tenant: "acme",
        principal: "alice",
        service: Some("svc-a"),
        outcome: Outcome::Routed,
    };
    let hash = h.hash(&prev, forged_body);
    let mut out = Vec::new();
    write_line(&mut out, &h, &prev, &hash, forged_body).unwrap();
    l[0] = String::from_utf8(out).unwrap().trim_end().to_owned();
    write_lines(&path, &l);
    let (line, reason) = corrupt_line(FileTraceStore::open(dir.path(), Durability::Buffered));
    assert_eq!(line, 2);
    assert!(reason.contains("prev does not match"), "{reason}");
}

#[test]
fn removed_duplicated_and_swapped_lines_are_corrupt() {
    let dir = three();
    let path = dir.path().join(TRACE_FILE);
    let l = lines(&path);
    for (edit, bad_line) in [
        (vec![l[0].clone(), l[2].clone()], 2),
        (
            vec![l[0].clone(), l[1].clone(), l[1].clone(), l[2].clone()],
            3,
        ),
        (vec![l[1].clone(), l[0].clone(), l[2].clone()], 1),
        (vec![l[0].clone(), l[2].clone(), l[1].clone()], 2),
        (vec![l[1].clone(), l[2].clone()], 1),
    ] {
        write_lines(&path, &edit);
        let (line, reason) = corrupt_line(FileTraceStore::open(dir.path(), Durability::Buffered));
        assert_eq!(line, bad_line, "{reason}");
        assert!(reason.contains("seq"), "{reason}");
    }
}

#[test]
fn garbage_is_corrupt_wherever_it_is_complete() {
    let dir = three();
    let path = dir.path().join(TRACE_FILE);
    let l = lines(&path);
    for (edit, bad_line) in [
        (vec![l[0].clone(), "garbage".into(), l[1].clone()], 2),
        (vec![l[0].clone(), String::new(), l[1].clone()], 2),
        (vec![l[0].clone(), l[1].clone(), "{}".into()], 3),
        (
            vec![l[0].clone(), l[1].clone(), "{\"seq\":3,\"body\":{}}".into()],
            3,
        ),
        (vec!["\u{0}\u{0}\u{0}".into()], 1),
        (vec![l[0].clone(), l[1].replace("\"body\":", "\"bod\":")], 2),
        (
            vec![
                l[0].clone(),
                l[1].replace("\"seq\":2", "\"seq\":2,\"extra\":1"),
            ],
            2,
        ),
        (vec![format!("{}x", l[0])], 1),
    ] {
        write_lines(&path, &edit);
        let (line, reason) = corrupt_line(FileTraceStore::open(dir.path(), Durability::Buffered));
        assert_eq!(line, bad_line, "{reason}");
        assert!(matches!(verify_log(&path), Err(StoreError::Corrupt { .. })));
    }
    // Binary garbage without any newline at the end of the file is a torn write.
    let mut bytes = fs::read(&path).unwrap();
    bytes.truncate(0);
    bytes.extend_from_slice(l[0].as_bytes());
    bytes.push(b'\n');
    bytes.extend_from_slice(&[0u8, 159, 146, 150, 0xff, b'{']);
    fs::write(&path, &bytes).unwrap();
    let (_, report) = open(dir.path());
    assert_eq!(
        report,
        OpenReport {
            records: 1,
            truncated_bytes: 6,
            truncated_segment: None,
            removed_segments: 0
        }
    );
}

#[test]
fn a_huge_line_is_corrupt_without_being_held_in_memory() {
    let dir = three();
    let path = dir.path().join(TRACE_FILE);
    let l = lines(&path);
    let huge = "x".repeat(MAX_LINE_BYTES + 10);
    write_lines(&path, &[l[0].clone(), huge.clone(), l[1].clone()]);
    let (line, reason) = corrupt_line(FileTraceStore::open(dir.path(), Durability::Buffered));
    assert_eq!(line, 2);
    assert!(reason.contains("longer than"), "{reason}");
    // The same line at the end without a newline is a torn write.
    fs::write(&path, format!("{}\n{huge}", l[0])).unwrap();
    let (s, report) = open(dir.path());
    assert_eq!(report.records, 1);
    assert_eq!(report.truncated_bytes, huge.len() as u64);
    assert_eq!(s.len(), 1);
}

#[test]
fn a_second_store_on_the_same_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = open(dir.path());
    assert!(matches!(
        FileTraceStore::open(dir.path(), Durability::Buffered),
        Err(StoreError::Locked { .. })
    ));
    drop(first);
    open(dir.path());
}

#[test]
fn fsync_mode_appends_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = FileTraceStore::open(dir.path(), Durability::Fsync).unwrap();
    assert_eq!(s.durability(), Durability::Fsync);
    s.append_batch(vec![rec(1, 1, "t", "p", None), rec(2, 2, "t", "p", None)])
        .unwrap();
    drop(s);
    assert_eq!(open(dir.path()).1.records, 2);
}

#[test]
fn concurrent_appends_get_gapless_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path());
    let s = Arc::new(s);
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                let mut seqs = Vec::new();
                for b in 0..25u64 {
                    let batch = (0..(b % 4 + 1))
                        .map(|i| rec(t * 1000 + b * 10 + i, b, "t", "p", None))
                        .collect();
                    let got = s.append_batch(batch).unwrap();
                    // Seqs within a batch are consecutive.
                    assert!(got.windows(2).all(|w| w[1] == w[0] + 1));
                    seqs.extend(got);
                }
                seqs
            })
        })
        .collect();
    let mut all: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort_unstable();
    let n = all.len() as u64;
    assert_eq!(all, (1..=n).collect::<Vec<_>>());
    assert_eq!(s.len(), n);
    let head = s.head();
    drop(s);
    assert_eq!(verify_log(&dir.path().join(TRACE_FILE)).unwrap(), head);
}

#[test]
fn index_entries_stay_small() {
    // The documented memory cost (~100 bytes per record) rests on this size.
    assert!(std::mem::size_of::<Entry>() <= 72);
}

#[test]
fn ids_sharing_a_fingerprint_are_both_found() {
    let s = MemoryTraceStore::new();
    let a = format!("sha256:{}{}", "11".repeat(8), "aa".repeat(24));
    let b = format!("sha256:{}{}", "11".repeat(8), "bb".repeat(24));
    let mut records = Vec::new();
    for (n, i) in [&a, &b, &a, &b, &b].into_iter().enumerate() {
        let mut r = rec(n as u64, n as u64, "t", "p", None);
        r.decision_id = i.clone();
        records.push(r);
    }
    s.append_batch(records).unwrap();
    assert_eq!(s.get(&a).unwrap().unwrap().summary.seq, 3);
    assert_eq!(s.get(&b).unwrap().unwrap().summary.seq, 5);
    let upper = a.to_uppercase().replace("SHA256", "sha256");
    assert!(s.get(&upper).unwrap().is_none());
}

/// Quick throughput check (no timing assertion): 20,000 records of 4 KiB in batches of 32.
/// `cargo test -p caio-trace --release -- --nocapture append_throughput` prints the rate.
#[test]
fn append_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path());
    // Unoptimized SHA-256 and JSON scanning make the full run take ~20 s in a debug build, for no
    // extra coverage, so debug builds check a fifth of it.
    let n = if cfg!(debug_assertions) {
        4_000
    } else {
        20_000u64
    };
    let records: Vec<TraceRecord> = (0..n)
        .map(|i| {
            let mut r = rec(i, 1_700_000_000_000 + i, "acme", "alice", Some("svc-a"));
            r.body = body(i, 4096 - 130).into();
            r
        })
        .collect();
    let bytes: usize = records.iter().map(|r| r.body.len()).sum();
    let start = std::time::Instant::now();
    for r in &records {
        r.validate().unwrap();
    }
    println!(
        "append_throughput: validating the bodies alone: {:.3} s",
        start.elapsed().as_secs_f64()
    );
    let start = std::time::Instant::now();
    for chunk in records.chunks(32) {
        s.append_batch(chunk.to_vec()).unwrap();
    }
    let elapsed = start.elapsed();
    println!(
        "append_throughput: {n} records ({} MiB of bodies) in batches of 32: {:.3} s, {:.0} records/s",
        bytes >> 20,
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(s.len(), n);
    for i in [0, 1, n / 2, n - 1] {
        let got = s.get(&id(i)).unwrap().unwrap();
        assert_eq!(got.summary.seq, i + 1);
        assert_eq!(got.body, records[i as usize].body);
    }
    // A filter nothing matches scans the whole index.
    let start = std::time::Instant::now();
    let page = s
        .query(&TraceQuery {
            tenant: Some("acme".into()),
            outcome: Some(Outcome::NoRoute),
            ..Default::default()
        })
        .unwrap();
    println!(
        "append_throughput: a query scanning all {n} records took {:.6} s",
        start.elapsed().as_secs_f64()
    );
    assert!(page.items.is_empty());
    let head = s.head();
    drop(s);
    let start = std::time::Instant::now();
    let (s, report) = open(dir.path());
    println!(
        "append_throughput: reopening and verifying took {:.3} s",
        start.elapsed().as_secs_f64()
    );
    assert_eq!(report.records, n);
    assert_eq!(s.head(), head);
}

// ---------------------------------------------------------------------------------------------
// Properties.

#[derive(Debug, Clone)]
struct Gen {
    n: u64,
    at: u64,
    tenant: usize,
    principal: usize,
    service: Option<usize>,
}

fn gen_record() -> impl Strategy<Value = Gen> {
    (
        0..30u64,
        0..50u64,
        0..3usize,
        0..3usize,
        proptest::option::of(0..3usize),
    )
        .prop_map(|(n, at, tenant, principal, service)| Gen {
            n,
            at,
            tenant,
            principal,
            service,
        })
}

fn to_record(g: &Gen) -> TraceRecord {
    let service = g.service.map(|s| format!("svc-{s}"));
    rec(
        g.n,
        g.at,
        ["t0", "t1", "t2"][g.tenant],
        ["p0", "p1", "p2"][g.principal],
        service.as_deref(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Paging through a query visits exactly the matching records, newest first, whether the
    /// times are ordered (binary search) or not (scan).
    #[test]
    fn paging_matches_a_naive_filter(
        gens in proptest::collection::vec(gen_record(), 0..60),
        ordered in any::<bool>(),
        tenant in proptest::option::of(0..4usize),
        service in proptest::option::of(0..4usize),
        outcome in proptest::option::of(any::<bool>()),
        since in proptest::option::of(0..50u64),
        until in proptest::option::of(0..50u64),
        limit in 0..7usize,
    ) {
        let mut gens = gens;
        if ordered {
            gens.sort_by_key(|g| g.at);
        }
        let records: Vec<TraceRecord> = gens.iter().map(to_record).collect();
        let s = MemoryTraceStore::new();
        for chunk in records.chunks(5) {
            s.append_batch(chunk.to_vec()).unwrap();
        }
        let q = TraceQuery {
            tenant: tenant.map(|t| format!("t{t}")),
            service_id: service.map(|x| format!("svc-{x}")),
            outcome: outcome.map(|b| if b { Outcome::Routed } else { Outcome::NoRoute }),
            since_ms: since,
            until_ms: until,
            limit,
            ..Default::default()
        };
        let expect: Vec<u64> = records
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, r)| {
                q.tenant.as_ref().is_none_or(|t| &r.tenant == t)
                    && q.service_id.as_ref().is_none_or(|x| r.service_id.as_ref() == Some(x))
                    && q.outcome.is_none_or(|o| r.outcome == o)
                    && since.is_none_or(|s| r.recorded_at_ms >= s)
                    && until.is_none_or(|u| r.recorded_at_ms < u)
            })
            .map(|(i, _)| i as u64 + 1)
            .collect();
        let mut got = Vec::new();
        let mut q = q;
        loop {
            let page = s.query(&q).unwrap();
            let size = if limit == 0 { 100 } else { limit };
            prop_assert!(page.items.len() <= size);
            got.extend(page.items.iter().map(|i| i.seq));
            match page.next_cursor {
                Some(c) => {
                    prop_assert_eq!(page.items.len(), size);
                    prop_assert_eq!(Some(c), page.items.last().map(|i| i.seq));
                    q.before_seq = Some(c);
                }
                None => break,
            }
        }
        prop_assert_eq!(got, expect);
    }

    /// Changing any one byte of a log, except its final newline, makes it fail to open as
    /// corrupt: nothing in a line escapes the hash or the syntax checks.
    #[test]
    fn any_single_byte_edit_is_detected(pos in any::<proptest::sample::Index>(), byte in any::<u8>()) {
        let dir = three();
        let path = dir.path().join(TRACE_FILE);
        let mut bytes = fs::read(&path).unwrap();
        let i = pos.index(bytes.len() - 1);
        prop_assume!(bytes[i] != byte);
        bytes[i] = byte;
        fs::write(&path, &bytes).unwrap();
        let r = FileTraceStore::open(dir.path(), Durability::Buffered);
        prop_assert!(matches!(r, Err(StoreError::Corrupt { .. })), "byte {} -> {:?}: {:?}", i, byte, r.map(|x| x.1));
        let verified = matches!(verify_log(&path), Err(StoreError::Corrupt { .. }));
        prop_assert!(verified);
    }
}

#[test]
fn serialized_bodies_skip_the_scan_and_stay_readable() {
    // Strings that a byte-level check would have to inspect: newlines, quotes, non-ASCII, the
    // body key, a lone surrogate written as text (Rust strings cannot hold one, so serde_json
    // writes the characters themselves, escaped).
    let value = serde_json::json!({
        "text": "line\nbreak \"quoted\" \u{1F600} ,\"body\": \\ud800",
        "n": [1, 2.5, null],
    });
    let body = TraceBody::serialize(&value).unwrap();
    assert!(!body.contains(&b'\n'));
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path());
    let mut r = rec(1, 1, "t", "p", Some("svc"));
    r.body = body.clone();
    assert_eq!(s.append_batch(vec![r]).unwrap(), vec![1]);
    drop(s);
    let (s, report) = open(dir.path());
    assert_eq!(report.records, 1);
    let got = s.get(&id(1)).unwrap().unwrap();
    assert_eq!(got.body, body);
    let back: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(back, value);
    verify_log(s.path()).unwrap();

    // Only objects are bodies.
    assert!(matches!(
        TraceBody::serialize(&[1, 2]),
        Err(StoreError::Invalid(m)) if m.contains("JSON object")
    ));
    assert!(TraceBody::serialize("text").is_err());
    // A map whose keys are not strings does not serialize.
    let mut odd = std::collections::BTreeMap::new();
    odd.insert(vec![1u8], 1);
    assert!(TraceBody::serialize(&odd).is_err());
}

#[test]
fn joined_bodies_are_the_bytes_of_serializing_the_whole() {
    #[derive(serde::Serialize)]
    struct Whole<'a> {
        decision: &'a serde_json::Value,
        execution: &'a serde_json::Value,
    }
    let decision = serde_json::json!({"id": "d\"1\n", "score": 0.1, "nested": {"a": [1, null]}});
    let execution = serde_json::json!({"status": "succeeded", "latency_ms": 1.5});
    let joined = TraceBody::join(&[
        ("decision", &TraceBody::serialize(&decision).unwrap()),
        ("execution", &TraceBody::serialize(&execution).unwrap()),
    ])
    .unwrap();
    let whole = TraceBody::serialize(&Whole {
        decision: &decision,
        execution: &execution,
    })
    .unwrap();
    assert_eq!(joined, whole);
    // A joined body is a serialized one: it joins again and is stored without a scan.
    let again = TraceBody::join(&[("outer", &joined)]).unwrap();
    let back: serde_json::Value = serde_json::from_slice(&again).unwrap();
    assert_eq!(back["outer"]["decision"], decision);
    // Raw bytes and names that would need escaping are refused.
    let raw = TraceBody::from(Bytes::from_static(b"{\"x\":1}"));
    assert!(matches!(
        TraceBody::join(&[("raw", &raw)]),
        Err(StoreError::Invalid(m)) if m.contains("raw")
    ));
    let ok = TraceBody::serialize(&execution).unwrap();
    for name in ["", "a\"b", "Upper", "sp ace"] {
        assert!(TraceBody::join(&[(name, &ok)]).is_err(), "{name:?}");
    }
}

#[test]
fn the_index_reads_across_chunk_boundaries() {
    // Two full chunks and a bit: lookups, time ranges and pages that span the boundaries give
    // what a scan of the records gives.
    let n = (2 * CHUNK + 10) as u64;
    let s = MemoryTraceStore::new();
    // A principal with a record every 20,000: a query for it scans several lock slices.
    let records: Vec<_> = (1..=n)
        .map(|i| {
            let who = if i % 20_000 == 7 { "rare" } else { "p" };
            rec(i, i * 10, "t", who, (i % 3 == 0).then_some("svc"))
        })
        .collect();
    for batch in records.chunks(4096) {
        s.append_batch(batch.to_vec()).unwrap();
    }
    assert_eq!(s.len(), n);
    for i in [1, CHUNK as u64, CHUNK as u64 + 1, 2 * CHUNK as u64 + 1, n] {
        let got = s.get(&id(i)).unwrap().unwrap();
        assert_eq!(got.summary.seq, i);
        assert_eq!(got.summary.recorded_at_ms, i * 10);
    }
    // A time window straddling the first boundary, service filter on: newest first.
    let (lo, hi) = (CHUNK as u64 - 20, CHUNK as u64 + 20);
    let page = s
        .query(&TraceQuery {
            service_id: Some("svc".into()),
            since_ms: Some(lo * 10),
            until_ms: Some(hi * 10),
            limit: 1000,
            ..TraceQuery::default()
        })
        .unwrap();
    let want: Vec<u64> = (lo..hi).rev().filter(|i| i % 3 == 0).collect();
    let got: Vec<u64> = page.items.iter().map(|t| t.seq).collect();
    assert_eq!(got, want);
    assert_eq!(page.next_cursor, None);
    // Paging backwards over the second boundary with the cursor.
    let mut cursor = Some(2 * CHUNK as u64 + 3);
    let mut seen = Vec::new();
    while seen.len() < 8 {
        let page = s
            .query(&TraceQuery {
                limit: 3,
                before_seq: cursor,
                ..TraceQuery::default()
            })
            .unwrap();
        seen.extend(page.items.iter().map(|t| t.seq));
        cursor = page.next_cursor;
    }
    let want: Vec<u64> = (2 * CHUNK as u64 - 6..2 * CHUNK as u64 + 3).rev().collect();
    assert_eq!(seen[..8], want[..8]);
    // Rare matches across slices, then a page boundary among them.
    let rare = |limit, before_seq| {
        s.query(&TraceQuery {
            principal_id: Some("rare".into()),
            limit,
            before_seq,
            ..TraceQuery::default()
        })
        .unwrap()
    };
    let all = rare(1000, None);
    let got: Vec<u64> = all.items.iter().map(|t| t.seq).collect();
    let want: Vec<u64> = (1..=n).rev().filter(|i| i % 20_000 == 7).collect();
    assert_eq!(got, want);
    assert_eq!(all.next_cursor, None);
    let first = rare(2, None);
    assert_eq!(first.items.len(), 2);
    assert_eq!(first.next_cursor, Some(want[1]));
    let rest = rare(2, first.next_cursor);
    let got: Vec<u64> = rest.items.iter().map(|t| t.seq).collect();
    assert_eq!(got, want[2..].to_vec());
}

#[test]
fn ids_sharing_a_fingerprint_across_chunks_resolve_to_their_latest_record() {
    // `b` collides with `a` in the first chunk, then is indexed on its own in the second, then
    // collides again in the second: every lookup returns the latest record of the id asked for.
    let s = MemoryTraceStore::new();
    let a = format!("sha256:{}{}", "22".repeat(8), "aa".repeat(24));
    let b = format!("sha256:{}{}", "22".repeat(8), "bb".repeat(24));
    let n = CHUNK as u64 + 10;
    let mut records: Vec<_> = (1..=n).map(|i| rec(i, i, "t", "p", None)).collect();
    let mut set = |seq: u64, id: &str| records[seq as usize - 1].decision_id = id.to_owned();
    set(1, &a);
    set(2, &b); // collides with `a` in chunk 0
    set(CHUNK as u64 + 1, &b); // indexed in chunk 1
    set(CHUNK as u64 + 2, &a); // collides with `b` in chunk 1
    for batch in records.chunks(4096) {
        s.append_batch(batch.to_vec()).unwrap();
    }
    assert_eq!(s.get(&a).unwrap().unwrap().summary.seq, CHUNK as u64 + 2);
    assert_eq!(s.get(&b).unwrap().unwrap().summary.seq, CHUNK as u64 + 1);
}

#[test]
fn the_file_index_keeps_its_newest_records_and_the_file_keeps_all() {
    let dir = tempfile::tempdir().unwrap();
    let keep = CHUNK as u64; // two chunks kept: the full one and the one being filled
    let total = 3 * CHUNK as u64 + 5;
    {
        let (s, _) =
            FileTraceStore::open_keeping(dir.path(), Durability::Buffered, Some(keep)).unwrap();
        let records: Vec<_> = (1..=total)
            .map(|i| rec(i, i * 10, "t", "p", Some("svc")))
            .collect();
        for batch in records.chunks(8192) {
            s.append_batch(batch.to_vec()).unwrap();
        }
        assert_eq!(s.len(), total);
        // The oldest chunks are gone from the index, the newest are there.
        let first_kept = 2 * CHUNK as u64 + 1;
        assert!(s.get(&id(1)).unwrap().is_none());
        assert!(s.get(&id(first_kept - 1)).unwrap().is_none());
        assert_eq!(
            s.get(&id(first_kept)).unwrap().unwrap().summary.seq,
            first_kept
        );
        assert_eq!(s.get(&id(total)).unwrap().unwrap().summary.seq, total);
        // Queries see only kept records, time windows included.
        let page = s
            .query(&TraceQuery {
                since_ms: Some(0),
                limit: 1000,
                before_seq: Some(first_kept + 3),
                ..TraceQuery::default()
            })
            .unwrap();
        let got: Vec<u64> = page.items.iter().map(|t| t.seq).collect();
        assert_eq!(got, vec![first_kept + 2, first_kept + 1, first_kept]);
        assert_eq!(page.next_cursor, None);
    }
    // The file holds every record, chained; reopening without a limit indexes them all.
    verify_log(&dir.path().join(TRACE_FILE)).unwrap();
    let (all, report) = open(dir.path());
    assert_eq!(report.records, total);
    assert_eq!(all.get(&id(1)).unwrap().unwrap().summary.seq, 1);
    // Reopening with the limit keeps the same newest records.
    drop(all);
    let (again, _) =
        FileTraceStore::open_keeping(dir.path(), Durability::Buffered, Some(keep)).unwrap();
    assert!(again.get(&id(1)).unwrap().is_none());
    assert!(again.get(&id(total)).unwrap().is_some());
}

// Segments: rotation, retention, opening and verifying across files.

fn segmented(
    dir: &Path,
    segment_bytes: u64,
    retain_segments: usize,
) -> (FileTraceStore, OpenReport) {
    FileTraceStore::open_with(
        dir,
        FileOptions {
            segment_bytes,
            retain_segments,
            ..FileOptions::new(Durability::Buffered)
        },
    )
    .unwrap()
}

/// Appends records `from..=to`, one batch each (each record is about 400 bytes).
fn append_range(s: &FileTraceStore, from: u64, to: u64) {
    for i in from..=to {
        s.append_batch(vec![rec(i, i * 10, "acme", "p", Some("svc"))])
            .unwrap();
    }
}

/// A closed log of records `1..=n` in 1000-byte segments: its directory and sealed segments.
fn closed_segmented_log(n: u64) -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = segmented(dir.path(), 1000, 0);
    append_range(&s, 1, n);
    let segments = s.segments();
    (dir, segments)
}

fn first_seq_of(segment: &Path) -> u64 {
    parse_segment_name(segment.file_name().unwrap().to_str().unwrap()).unwrap()
}

fn all_seqs(s: &FileTraceStore) -> Vec<u64> {
    let page = s
        .query(&TraceQuery {
            limit: 1000,
            ..TraceQuery::default()
        })
        .unwrap();
    page.items.iter().map(|t| t.seq).collect()
}

fn segment_first_seqs(s: &FileTraceStore) -> Vec<u64> {
    s.segments().iter().map(|p| first_seq_of(p)).collect()
}

#[test]
fn segment_names_parse_only_in_their_own_form() {
    assert_eq!(segment_name(42), "traces-00000000000000000042.jsonl");
    assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
    assert_eq!(parse_segment_name(&segment_name(1 << 62)), Some(1 << 62));
    for bad in [
        // Seqs that would let arithmetic on them overflow are not segment names.
        &segment_name((1 << 62) + 1),
        &segment_name(u64::MAX),
        "traces-99999999999999999999.jsonl",
        "traces.jsonl",
        "traces-42.jsonl",
        "traces-0000000000000000004x.jsonl",
        "traces-00000000000000000000.jsonl",
        "traces-00000000000000000042.jsonl.tmp",
        "traces-+0000000000000000042.jsonl",
        "audit-00000000000000000042.jsonl",
    ] {
        assert_eq!(parse_segment_name(bad), None, "{bad}");
    }
}

#[test]
fn the_log_is_sealed_into_segments_and_one_chain_runs_across_them() {
    let dir = tempfile::tempdir().unwrap();
    let head = {
        let (s, _) = segmented(dir.path(), 1000, 0);
        append_range(&s, 1, 20);
        // About three records per segment: several sealed, each starting where the last ended.
        let firsts = segment_first_seqs(&s);
        assert!(firsts.len() >= 4, "{firsts:?}");
        assert_eq!(firsts[0], 1);
        assert!(firsts.windows(2).all(|w| w[0] < w[1]));
        // Every body is readable, whichever file holds it.
        for i in 1..=20 {
            let got = s.get(&id(i)).unwrap().unwrap();
            assert_eq!(got.summary.seq, i);
            assert_eq!(got.body, body(i, 10));
        }
        assert_eq!(all_seqs(&s), (1..=20).rev().collect::<Vec<_>>());
        // The directory verifies as one chain ending at the store's head.
        assert_eq!(verify_log(dir.path()).unwrap(), s.head());
        // A sealed segment alone verifies from the seq its name gives.
        let second = &s.segments()[1];
        let end = first_seq_of(&s.segments()[2]) - 1;
        assert_eq!(verify_log(second).unwrap().seq, end);
        // The active file alone does not start at seq 1: it needs the segments before it.
        assert!(matches!(
            verify_log(s.path()),
            Err(StoreError::Corrupt { line: 1, .. })
        ));
        s.head()
    };
    // Reopened: the same records, head and segments, and appends continue the chain.
    let (s, report) = segmented(dir.path(), 1000, 0);
    assert_eq!(report.records, 20);
    assert_eq!(s.disk_usage().unwrap().first_seq, 1);
    assert_eq!(s.disk_usage().unwrap().segments, s.segments().len() as u64);
    assert_eq!(s.head(), head);
    for i in 1..=20 {
        assert_eq!(s.get(&id(i)).unwrap().unwrap().body, body(i, 10));
    }
    append_range(&s, 21, 25);
    assert_eq!(all_seqs(&s), (1..=25).rev().collect::<Vec<_>>());
    assert_eq!(verify_log(dir.path()).unwrap(), s.head());
}

#[test]
fn retention_deletes_the_oldest_segments_and_forgets_their_records() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = segmented(dir.path(), 1000, 2);
    append_range(&s, 1, 30);
    let firsts = segment_first_seqs(&s);
    assert_eq!(firsts.len(), 2);
    let oldest = firsts[0];
    assert!(oldest > 1);
    // Only the two kept segments and the active file are on disk.
    let mut names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut want: Vec<String> = firsts.iter().map(|&n| segment_name(n)).collect();
    want.push(TRACE_FILE.into());
    assert_eq!(names, want);
    // Records of deleted segments are gone from lookups and queries alike; the rest are there.
    assert!(s.get(&id(1)).unwrap().is_none());
    assert!(s.get(&id(oldest - 1)).unwrap().is_none());
    assert_eq!(s.get(&id(oldest)).unwrap().unwrap().body, body(oldest, 10));
    assert_eq!(all_seqs(&s), (oldest..=30).rev().collect::<Vec<_>>());
    assert_eq!(s.len(), 30);
    // The directory verifies from the oldest segment kept.
    assert_eq!(verify_log(dir.path()).unwrap(), s.head());
    // Disk usage counts the files that are there.
    let on_disk: u64 = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(
        s.disk_usage(),
        Some(DiskUsage {
            segments: 2,
            bytes: on_disk,
            first_seq: oldest
        })
    );
    assert_eq!(MemoryTraceStore::new().disk_usage(), None);
    let head = s.head();
    drop(s);
    let (s, report) = segmented(dir.path(), 1000, 2);
    assert_eq!(s.disk_usage().unwrap().first_seq, oldest);
    assert_eq!(report.records, 30);
    assert_eq!(report.removed_segments, 0);
    assert_eq!(s.head(), head);
    assert!(s.get(&id(oldest - 1)).unwrap().is_none());
    assert_eq!(all_seqs(&s), (oldest..=30).rev().collect::<Vec<_>>());
    append_range(&s, 31, 33);
    assert_eq!(s.get(&id(33)).unwrap().unwrap().summary.seq, 33);
}

#[test]
fn opening_with_a_smaller_retention_deletes_the_oldest_segments() {
    let (dir, segments) = closed_segmented_log(20);
    let before: Vec<u64> = segments.iter().map(|p| first_seq_of(p)).collect();
    let (s, report) = segmented(dir.path(), 1000, 1);
    assert_eq!(report.removed_segments, before.len() - 1);
    assert_eq!(s.disk_usage().unwrap().segments, 1);
    assert_eq!(s.disk_usage().unwrap().first_seq, *before.last().unwrap());
    assert_eq!(segment_first_seqs(&s), vec![*before.last().unwrap()]);
    assert!(s.get(&id(1)).unwrap().is_none());
    assert_eq!(s.get(&id(20)).unwrap().unwrap().summary.seq, 20);
}

#[test]
fn a_missing_middle_segment_is_corrupt() {
    let (dir, segments) = closed_segmented_log(20);
    fs::remove_file(&segments[1]).unwrap();
    let r = FileTraceStore::open_with(dir.path(), FileOptions::new(Durability::Buffered));
    let (line, reason) = corrupt_line(r);
    assert_eq!(line, 1);
    assert!(reason.contains("a segment is missing"), "{reason}");
    assert!(matches!(
        verify_log(dir.path()),
        Err(StoreError::Corrupt { .. })
    ));
}

#[test]
fn an_edited_or_torn_sealed_segment_is_corrupt() {
    let (dir, segments) = closed_segmented_log(12);
    let first = segments[0].clone();
    let original = fs::read(&first).unwrap();
    // An edited body in the oldest segment.
    let mut l = lines(&first);
    l[1] = l[1].replace("\"n\":2", "\"n\":9");
    write_lines(&first, &l);
    let r = FileTraceStore::open_with(dir.path(), FileOptions::new(Durability::Buffered));
    match r {
        Err(StoreError::Corrupt { path, line, reason }) => {
            assert_eq!(path, first);
            assert_eq!(line, 2);
            assert!(reason.contains("hash does not match"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // A sealed segment is never cut like the active file: a torn end is damage.
    let mut torn = original.clone();
    torn.extend_from_slice(b"{\"seq\":");
    fs::write(&first, &torn).unwrap();
    let r = FileTraceStore::open_with(dir.path(), FileOptions::new(Durability::Buffered));
    let (_, reason) = corrupt_line(r);
    assert!(reason.contains("incomplete line"), "{reason}");
    assert_eq!(fs::read(&first).unwrap(), torn, "nothing was cut");
    // Restored, it opens again.
    fs::write(&first, &original).unwrap();
    let (s, report) = segmented(dir.path(), 1000, 0);
    assert_eq!(report.records, 12);
    assert_eq!(s.get(&id(2)).unwrap().unwrap().body, body(2, 10));
}

/// Cuts the newest of `segments` in the middle of its last line, as a power loss right
/// after a seal can (buffered durability); returns the segment, its bytes before the cut, and the
/// number of bytes of the incomplete line left.
fn tear_newest_segment(segments: &[PathBuf]) -> (PathBuf, Vec<u8>, u64) {
    let newest = segments.last().unwrap().clone();
    let original = fs::read(&newest).unwrap();
    let last_start = original[..original.len() - 1]
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let keep = last_start + (original.len() - last_start) / 2;
    fs::write(&newest, &original[..keep]).unwrap();
    (
        newest,
        original[..keep].to_vec(),
        (keep - last_start) as u64,
    )
}

#[test]
fn a_newest_sealed_segment_torn_by_a_power_loss_is_cut_when_no_record_follows_it() {
    // 12 records of about 400 bytes in 1000-byte segments: the 12th sealed the fourth segment,
    // so traces.jsonl holds nothing yet.
    let (dir, segments) = closed_segmented_log(12);
    let active = dir.path().join(TRACE_FILE);
    assert_eq!(fs::metadata(&active).unwrap().len(), 0, "the setup");
    let (newest, _, torn) = tear_newest_segment(&segments);
    let last_kept = first_seq_of(&newest) + lines(&newest).len() as u64 - 2;
    // An offline check still calls it damage: a clean check means every byte is in the chain.
    let (line, reason) = match verify_log(dir.path()) {
        Err(StoreError::Corrupt { line, reason, .. }) => (line, reason),
        other => panic!("expected Corrupt, got {other:?}"),
    };
    assert!(reason.contains("incomplete line"), "{reason}");
    assert_eq!(line, last_kept - first_seq_of(&newest) + 2);
    // The half-written new file is cut too.
    fs::write(&active, b"{\"seq\":13,\"at").unwrap();
    let (s, report) = segmented(dir.path(), 1000, 0);
    assert_eq!(
        report,
        OpenReport {
            records: last_kept,
            truncated_bytes: torn + 13,
            truncated_segment: Some(newest.clone()),
            removed_segments: 0,
        }
    );
    assert_eq!(s.len(), last_kept);
    assert_eq!(fs::metadata(&active).unwrap().len(), 0);
    assert!(fs::read(&newest).unwrap().ends_with(b"\n"));
    assert_eq!(
        s.get(&id(last_kept)).unwrap().unwrap().body,
        body(last_kept, 10)
    );
    assert!(s.get(&id(last_kept + 1)).unwrap().is_none());
    // The log goes on from the last complete record, and checks out as one chain.
    append_range(&s, last_kept + 1, last_kept + 4);
    assert_eq!(s.len(), last_kept + 4);
    assert_eq!(verify_log(dir.path()).unwrap(), s.head());
    let head = s.head();
    drop(s);
    let (s, report) = segmented(dir.path(), 1000, 0);
    assert_eq!(report.truncated_segment, None);
    assert_eq!(s.head(), head);
}

#[test]
fn a_torn_sealed_segment_is_corruption_when_records_follow_it_or_none_is_left() {
    // Record 13 is in traces.jsonl after the torn segment: it chains from records that are
    // gone, so nothing is cut.
    let (dir, segments) = closed_segmented_log(13);
    let active = dir.path().join(TRACE_FILE);
    assert!(!lines(&active).is_empty(), "the setup");
    let (newest, torn_bytes, _) = tear_newest_segment(&segments);
    let r = FileTraceStore::open_with(dir.path(), FileOptions::new(Durability::Buffered));
    match r {
        Err(StoreError::Corrupt { path, reason, .. }) => {
            assert_eq!(path, newest);
            assert!(
                reason.contains("only when no record follows it"),
                "{reason}"
            );
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(fs::read(&newest).unwrap(), torn_bytes, "nothing was cut");
    // A segment left without one complete line is not cut to nothing.
    let (dir, segments) = closed_segmented_log(12);
    let newest = segments.last().unwrap();
    fs::write(newest, b"{\"seq\":10,\"at\":1").unwrap();
    let r = FileTraceStore::open_with(dir.path(), FileOptions::new(Durability::Buffered));
    let (line, reason) = corrupt_line(r);
    assert_eq!(line, 1);
    assert!(reason.contains("incomplete line"), "{reason}");
    assert_eq!(fs::read(newest).unwrap(), b"{\"seq\":10,\"at\":1");
}

#[test]
fn the_index_can_start_and_forget_in_the_middle_of_a_chunk() {
    let entry = |index: &mut Index, i: u64| {
        let r = rec(i, i, "t", "p", None);
        let e = index.entry(&Header::of(i, &r), i * 100, 10).unwrap();
        index.push(e);
    };
    // Starting just before a chunk boundary and growing across it.
    let mut index = Index::new();
    let start = CHUNK - 2;
    index.start_at(start).unwrap();
    assert_eq!(index.entries.first(), start);
    for seq in (start as u64 + 1)..=(start as u64 + 5) {
        entry(&mut index, seq);
    }
    assert_eq!(index.entries.len(), start + 5);
    assert!(index.entries.get(start - 1).is_none());
    for seq in (start as u64 + 1)..=(start as u64 + 5) {
        let pos = index.find(&id(seq)).unwrap();
        assert_eq!(pos as u64, seq - 1);
        assert_eq!(index.entries.get(pos).unwrap().body_offset, seq * 100);
    }
    // The padding is never found: not by id, not by a query.
    assert!(index.find(&format!("sha256:{}", "00".repeat(32))).is_none());
    let plan = index.plan(&TraceQuery::default()).unwrap();
    assert_eq!(plan.lo, start);
    // Forgetting across the boundary drops the first chunk and hides the rest.
    index.forget_before(CHUNK + 1);
    assert_eq!(index.entries.first(), CHUNK + 1);
    assert_eq!(index.entries.chunks.len(), 1);
    assert!(index.find(&id(CHUNK as u64)).is_none());
    assert!(index.find(&id(CHUNK as u64 + 1)).is_none());
    assert_eq!(index.find(&id(CHUNK as u64 + 2)), Some(CHUNK + 1));
    // Forgetting everything leaves an index that goes on at the right position.
    index.forget_before(usize::MAX);
    assert_eq!(index.entries.first(), start + 5);
    entry(&mut index, start as u64 + 6);
    assert_eq!(index.find(&id(start as u64 + 6)), Some(start + 5));
}

#[test]
fn a_crash_between_sealing_and_the_new_file_loses_nothing() {
    // Sealing renames the active file, then creates a new one: a crash in between leaves only
    // sealed segments, which open (and verify) as the whole log.
    let dir = tempfile::tempdir().unwrap();
    let n = {
        let (s, _) = segmented(dir.path(), 1000, 0);
        let mut n = 0;
        loop {
            n += 1;
            append_range(&s, n, n);
            if fs::metadata(s.path()).unwrap().len() == 0 {
                break n;
            }
            assert!(n < 100, "never sealed");
        }
    };
    fs::remove_file(dir.path().join(TRACE_FILE)).unwrap();
    assert_eq!(verify_log(dir.path()).unwrap().seq, n);
    let (s, report) = segmented(dir.path(), 1000, 0);
    assert_eq!(report.records, n);
    for i in 1..=n {
        assert_eq!(s.get(&id(i)).unwrap().unwrap().summary.seq, i);
    }
    append_range(&s, n + 1, n + 2);
    assert_eq!(verify_log(dir.path()).unwrap(), s.head());
}

#[test]
fn a_segment_whose_name_disagrees_with_its_records_is_corrupt() {
    let (dir, segments) = closed_segmented_log(12);
    let second = segments[1].clone();
    let from = first_seq_of(&second);
    // The oldest segment deleted, the next one renamed to claim it starts one record later.
    fs::remove_file(dir.path().join(segment_name(1))).unwrap();
    fs::rename(&second, dir.path().join(segment_name(from + 1))).unwrap();
    let r = FileTraceStore::open_with(dir.path(), FileOptions::new(Durability::Buffered));
    let (line, reason) = corrupt_line(r);
    assert_eq!(line, 1);
    assert!(
        reason.contains(&format!("seq {from} where {} was expected", from + 1)),
        "{reason}"
    );
    // Files that only look like segments are not read at all.
    fs::rename(dir.path().join(segment_name(from + 1)), &second).unwrap();
    fs::write(dir.path().join("traces-1.jsonl"), b"junk").unwrap();
    fs::write(
        dir.path().join("traces-00000000000000000001.jsonl.bak"),
        b"junk",
    )
    .unwrap();
    let (s, _) = segmented(dir.path(), 1000, 0);
    assert_eq!(s.disk_usage().unwrap().first_seq, from);
    assert_eq!(s.len(), 12);
}

#[test]
fn a_failed_seal_stops_the_appends_after_it_and_keeps_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = segmented(dir.path(), 1000, 0);
    // Something already has the name the first segment will get.
    fs::create_dir(dir.path().join(segment_name(1))).unwrap();
    let mut written = 0;
    let (why, err) = loop {
        assert_eq!(s.refusal(), None, "record {written}");
        written += 1;
        match s.append_batch(vec![rec(written, written, "t", "p", None)]) {
            // The batch that crossed the size is answered, and the store says at once that it
            // refuses the next one.
            Ok(_) => match s.refusal() {
                Some(why) => {
                    let next = rec(written + 1, written + 1, "t", "p", None);
                    break (why, s.append_batch(vec![next]).unwrap_err());
                }
                None => assert!(written < 100, "never sealed"),
            },
            Err(e) => panic!("refused without saying so first: {e}"),
        }
    };
    written += 1;
    assert!(why.contains("exists already"), "{why}");
    assert_eq!(s.refusal(), Some(why));
    match err {
        StoreError::Failed { reason, .. } => {
            assert!(reason.contains(&segment_name(1)), "{reason}");
            assert!(reason.contains("exists already"), "{reason}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    // The batch that crossed the size was written; the refused one was not.
    assert_eq!(s.len(), written - 1);
    for i in 1..written {
        assert_eq!(s.get(&id(i)).unwrap().unwrap().summary.seq, i);
    }
    assert_eq!(verify_log(s.path()).unwrap(), s.head());
}

#[test]
fn verify_names_the_torn_line_of_the_file_it_is_in() {
    let dir = tempfile::tempdir().unwrap();
    let (in_active, segment) = {
        let (s, _) = segmented(dir.path(), 1000, 0);
        append_range(&s, 1, 10);
        (
            fs::read_to_string(s.path()).unwrap().lines().count() as u64,
            s.segments()[1].clone(),
        )
    };
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join(TRACE_FILE))
        .unwrap();
    f.write_all(b"{\"seq\":").unwrap();
    match verify_log(dir.path()) {
        Err(StoreError::Corrupt { path, line, .. }) => {
            assert_eq!(path, dir.path().join(TRACE_FILE));
            assert_eq!(line, in_active + 1);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let in_segment = fs::read_to_string(&segment).unwrap().lines().count() as u64;
    let mut f = fs::OpenOptions::new().append(true).open(&segment).unwrap();
    f.write_all(b"{\"seq\":").unwrap();
    match verify_log(&segment) {
        Err(StoreError::Corrupt { line, reason, .. }) => {
            assert_eq!(line, in_segment + 1);
            assert!(reason.contains("incomplete"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn segments_and_index_retention_work_together() {
    // 3 chunks of records in 64 KiB segments, the index keeping about one chunk, the disk
    // keeping four segments: whichever bound is tighter decides what is found.
    let dir = tempfile::tempdir().unwrap();
    let total = 3 * CHUNK as u64;
    let (s, _) = FileTraceStore::open_with(
        dir.path(),
        FileOptions {
            index_max_records: Some(CHUNK as u64),
            segment_bytes: 64 << 10,
            retain_segments: 4,
            ..FileOptions::new(Durability::Buffered)
        },
    )
    .unwrap();
    let records: Vec<_> = (1..=total).map(|i| rec(i, i, "t", "p", None)).collect();
    for batch in records.chunks(64) {
        s.append_batch(batch.to_vec()).unwrap();
    }
    let firsts = segment_first_seqs(&s);
    assert_eq!(firsts.len(), 4);
    // The segments bound it here (four of 64 KiB hold far fewer records than a chunk).
    let oldest = firsts[0];
    assert!(total - oldest < CHUNK as u64);
    assert!(s.get(&id(oldest - 1)).unwrap().is_none());
    assert_eq!(s.get(&id(oldest)).unwrap().unwrap().summary.seq, oldest);
    let page = s
        .query(&TraceQuery {
            limit: 1000,
            before_seq: Some(oldest + 2),
            ..TraceQuery::default()
        })
        .unwrap();
    let got: Vec<u64> = page.items.iter().map(|t| t.seq).collect();
    assert_eq!(got, vec![oldest + 1, oldest]);
    assert_eq!(page.next_cursor, None);
    assert_eq!(verify_log(dir.path()).unwrap(), s.head());
}

/// Bytes of `path` in the page cache, from util-linux's `fincore`; `None` without it (outside CI).
fn cached_bytes(path: &Path) -> Option<u64> {
    match std::process::Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output", "RES"])
        .arg(path)
        .output()
    {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            Some(
                text.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("fincore said {text:?}")),
            )
        }
        Ok(out) => panic!("fincore failed: {}", String::from_utf8_lossy(&out.stderr)),
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "fincore (util-linux) is needed in CI: {e}"
            );
            eprintln!("skipped: fincore (util-linux) is not installed: {e}");
            None
        }
    }
}

/// Whether the filesystem of `dir` drops a synced file's pages when asked (tmpfs cannot: its
/// pages are the file).
fn drops_pages(dir: &Path) -> Option<bool> {
    let path = dir.join("probe");
    fs::write(&path, vec![7u8; 256 << 10]).unwrap();
    let file = File::open(&path).unwrap();
    file.sync_data().unwrap();
    drop_cached(&file);
    let dropped = cached_bytes(&path)? == 0;
    fs::remove_file(&path).unwrap();
    Some(dropped)
}

#[test]
fn a_sealed_segment_leaves_the_page_cache() {
    for durability in [Durability::Buffered, Durability::Fsync] {
        let dir = tempfile::tempdir().unwrap();
        let Some(dropping) = drops_pages(dir.path()) else {
            return;
        };
        if !dropping {
            eprintln!(
                "skipped: the filesystem of {:?} keeps every page",
                dir.path()
            );
            return;
        }
        let (s, _) = FileTraceStore::open_with(
            dir.path(),
            FileOptions {
                segment_bytes: 512 << 10,
                ..FileOptions::new(durability)
            },
        )
        .unwrap();
        let mut n = 0;
        while s.segments().is_empty() {
            n += 1;
            let mut r = rec(n, n, "t", "p", Some("svc"));
            r.body = body(n, 4000).into();
            s.append_batch(vec![r]).unwrap();
        }
        let sealed = &s.segments()[0];
        let active = dir.path().join(TRACE_FILE);
        // The seal thread drops the pages once the segment is on disk.
        let started = std::time::Instant::now();
        while cached_bytes(sealed) != Some(0) {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "{durability:?}: {:?} bytes of the sealed segment still cached",
                cached_bytes(sealed)
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // The active file is left alone (and fincore does see cached pages).
        let mut r = rec(n + 1, n + 1, "t", "p", Some("svc"));
        r.body = body(n + 1, 4000).into();
        s.append_batch(vec![r]).unwrap();
        assert!(cached_bytes(&active).unwrap() > 0);
        // A lookup in the dropped segment reads it back from disk.
        assert_eq!(s.get(&id(1)).unwrap().unwrap().summary.seq, 1);
    }
}

#[test]
fn sealed_segments_read_at_open_leave_the_page_cache() {
    let dir = tempfile::tempdir().unwrap();
    let Some(true) = drops_pages(dir.path()) else {
        eprintln!(
            "skipped: the page cache of {:?} cannot be observed or dropped",
            dir.path()
        );
        return;
    };
    let options = FileOptions {
        segment_bytes: 512 << 10,
        ..FileOptions::new(Durability::Buffered)
    };
    let (s, _) = FileTraceStore::open_with(dir.path(), options).unwrap();
    let mut n = 0;
    while s.segments().len() < 2 {
        n += 1;
        let mut r = rec(n, n, "t", "p", Some("svc"));
        r.body = body(n, 4000).into();
        s.append_batch(vec![r]).unwrap();
    }
    let head = s.head();
    let sealed = s.segments();
    drop(s);
    // Read every segment back into the page cache, as a backup job or a grep would: after the
    // seal thread has dropped it (it runs in the background and would drop what we read).
    for path in &sealed {
        let started = std::time::Instant::now();
        while cached_bytes(path) != Some(0) {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "{path:?} never left the page cache after its seal"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = fs::read(path).unwrap();
        assert!(cached_bytes(path).unwrap() > 0, "{path:?} not cached");
    }
    let (s, _) = FileTraceStore::open_with(dir.path(), options).unwrap();
    assert_eq!(s.head(), head);
    for path in &sealed {
        assert_eq!(
            cached_bytes(path),
            Some(0),
            "{path:?} still cached after open"
        );
    }
    // Their records are still found.
    assert_eq!(s.get(&id(1)).unwrap().unwrap().summary.seq, 1);
}

// Drop-behind.

/// Bytes of `path` in the page cache, from util-linux's `fincore`. Outside CI, `None` (with a
/// notice) when it is not installed.
fn resident_bytes(path: &Path) -> Option<u64> {
    let out = std::process::Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output", "RES"])
        .arg(path)
        .output();
    match out {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            Some(
                text.trim()
                    .parse()
                    .unwrap_or_else(|e| panic!("fincore printed {text:?}: {e}")),
            )
        }
        _ if std::env::var_os("CI").is_some() => {
            panic!("fincore (util-linux) is needed to check the page cache: {out:?}")
        }
        _ => {
            eprintln!("skipping the page-cache check: fincore (util-linux) is not installed");
            None
        }
    }
}

/// A scratch directory on a disk-backed filesystem: the tests look at the page cache, and the
/// pages of a tmpfs file never leave memory.
fn disk_tempdir() -> tempfile::TempDir {
    const TMPFS_MAGIC: u64 = 0x0102_1994;
    let tmp = std::env::temp_dir();
    let on_tmpfs = rustix::fs::statfs(&tmp)
        .is_ok_and(|s| u64::try_from(s.f_type).is_ok_and(|t| t == TMPFS_MAGIC));
    if on_tmpfs {
        tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

/// Appends records `from..=to` with 4 KB bodies, one batch each.
fn append_large(s: &FileTraceStore, from: u64, to: u64) {
    for n in from..=to {
        let r = TraceRecord {
            body: body(n, 4000).into(),
            ..rec(n, n, "acme", "p", Some("svc"))
        };
        s.append_batch(vec![r]).unwrap();
    }
}

#[test]
fn drop_behind_keeps_a_few_windows_of_the_active_file_cached() {
    const WINDOW: u64 = 64 << 10;
    // The same appends with drop-behind off and on, in 1 MiB segments: the active file at the
    // end is the third (so the window count restarts with each file). Returns the active file's
    // resident bytes and length.
    let run = |writeback_bytes: u64| -> Option<(u64, u64)> {
        let dir = disk_tempdir();
        let options = FileOptions {
            segment_bytes: 1 << 20,
            writeback_bytes,
            ..FileOptions::new(Durability::Buffered)
        };
        let (s, _) = FileTraceStore::open_with(dir.path(), options).unwrap();
        // About 2.6 MiB.
        append_large(&s, 1, 620);
        assert_eq!(s.segments().len(), 2);
        // Stands in for the time a real writeback takes: everything so far is clean.
        File::open(s.path()).unwrap().sync_data().unwrap();
        // Two windows more: the next pass drops what is clean.
        append_large(&s, 621, 650);
        let len = fs::metadata(s.path()).unwrap().len();
        // The pass runs on the writeback thread: wait for it (a failure is pages that stay,
        // not a slow wait).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let resident = loop {
            let resident = resident_bytes(s.path())?;
            if writeback_bytes == 0
                || resident <= 4 * WINDOW
                || std::time::Instant::now() > deadline
            {
                break resident;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        // Nothing is lost: early records of the active file read back from the disk, and the
        // log reopens and verifies whole.
        let first_active = s.query(&TraceQuery::default()).unwrap();
        assert!(!first_active.items.is_empty());
        let early = s.get(&id(600)).unwrap().expect("record 600");
        assert_eq!(early.body, body(600, 4000));
        drop(s);
        let head = verify_log(dir.path()).unwrap();
        assert_eq!(head.seq, 650);
        let (s, report) = FileTraceStore::open_with(dir.path(), options).unwrap();
        assert_eq!(report.records, 650);
        assert_eq!(report.truncated_bytes, 0);
        assert!(s.get(&id(1)).unwrap().is_some());
        Some((resident, len))
    };
    let Some((kept_off, len)) = run(0) else {
        return;
    };
    let Some((kept_on, _)) = run(WINDOW) else {
        return;
    };
    assert!(len > 8 * WINDOW, "the active file is {len} bytes");
    // Without drop-behind the active file stays cached (all of it, unless memory pressure took
    // some), so the check below can fail.
    assert!(kept_off >= len / 2, "off: {kept_off} of {len} bytes cached");
    assert!(
        kept_on <= 4 * WINDOW,
        "on: {kept_on} of {len} bytes cached, more than four windows of {WINDOW}"
    );
}

#[test]
fn a_window_under_a_page_is_off() {
    assert!(Writeback::start(0).is_none());
    assert!(Writeback::start(PAGE - 1).is_none());
    let wb = Writeback::start(PAGE + 100).expect("a one-page window");
    assert_eq!(wb.window, PAGE);
}
