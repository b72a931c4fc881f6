//! The `caio` binary end to end: output, JSON, exit codes (0 yes, 1 no, 2 usage).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn caio(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_caio"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("running caio: {e}"))
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

const SERVICES: &str = "fixtures/services";
const POLICIES: &str = "fixtures/policies.yaml";

fn route_json(request: &str, principal: &str) -> Output {
    caio(&[
        "route",
        "--services",
        SERVICES,
        "--policies",
        POLICIES,
        "--request",
        request,
        "--principal",
        principal,
        "--json",
    ])
}

#[test]
fn route_prints_a_readable_decision() {
    let o = caio(&[
        "route",
        "--services",
        SERVICES,
        "--policies",
        POLICIES,
        "--request",
        "fixtures/requests/sentiment-de.yaml",
        "--principal",
        "fixtures/principals/acme-analyst.yaml",
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(out.contains("chosen:   sentiment-eu"), "{out}");
    assert!(out.contains("RANK") && out.contains("REJECTED"), "{out}");
    assert!(
        out.contains("sentiment-fast           match     guarantee_unmet"),
        "{out}"
    );
    assert!(
        out.contains("Guarantees: accuracy ≥ 0.95 · latency ≤ 120 ms"),
        "{out}"
    );
}

#[test]
fn json_decisions_verify_and_tampering_is_caught() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let o = route_json(
        "fixtures/requests/chat-with-pii.yaml",
        "fixtures/principals/platform-admin.yaml",
    );
    assert_eq!(o.status.code(), Some(0));
    let (json, _) = text(&o);
    assert!(
        !json.contains("jane.doe@example.com"),
        "the PII never reaches the record"
    );
    let decision: serde_json::Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(decision["service_id"], "chat-llama-local");
    let file = dir.path().join("d.json");
    std::fs::write(&file, &json).unwrap_or_else(|e| panic!("{e}"));
    let f = file.to_string_lossy().into_owned();
    let v = caio(&["verify", &f, "--services", SERVICES, "--policies", POLICIES]);
    let (out, err) = text(&v);
    assert_eq!(v.status.code(), Some(0), "{out}{err}");
    assert!(out.starts_with("VERIFIED sha256:"), "{out}");

    let tampered = json.replacen("\"trust_level\": 5", "\"trust_level\": 9", 1);
    assert_ne!(tampered, json);
    std::fs::write(&file, &tampered).unwrap_or_else(|e| panic!("{e}"));
    let v = caio(&[
        "verify",
        &f,
        "--services",
        SERVICES,
        "--policies",
        POLICIES,
        "--json",
    ]);
    let (out, _) = text(&v);
    assert_eq!(v.status.code(), Some(1), "{out}");
    let body: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(body["verified"], false);
    assert_eq!(body["error"]["code"], "VERIFICATION_FAILED");
    assert_eq!(body["error"]["details"]["step"], "integrity");
}

#[test]
fn no_route_is_exit_1_with_a_structured_error() {
    let o = route_json(
        "fixtures/requests/impossible.yaml",
        "fixtures/principals/platform-admin.yaml",
    );
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    let body: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(body["error"]["code"], "NO_MATCHING_SERVICE");
    let rejected = body["error"]["details"]["rejected"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(rejected.len(), 15, "every service is accounted for");
    assert!(
        rejected
            .iter()
            .all(|r| r["step"].is_string() && r["reason"].is_string() && r["detail"].is_string())
    );
}

#[test]
fn default_principal_is_the_public_cli_principal() {
    let o = caio(&[
        "route",
        "--services",
        SERVICES,
        "--policies",
        POLICIES,
        "--request",
        "fixtures/requests/sentiment-de.yaml",
        "--json",
    ]);
    let (out, _) = text(&o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "the public principal holds no permission the EU service needs"
    );
    assert!(out.contains("\"unauthorized\""), "{out}");
}

#[test]
fn validate_names_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let good = root().join("fixtures/services/sentiment-eu.yaml");
    let text_in = std::fs::read_to_string(&good)
        .unwrap_or_default()
        .replace("  capabilities:", "  capabilites:");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, text_in).unwrap_or_else(|e| panic!("{e}"));
    let o = caio(&[
        "validate",
        &good.to_string_lossy(),
        &bad.to_string_lossy(),
        "fixtures/policies.yaml",
    ]);
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        out.contains("ok       ") && out.contains("(service contract)"),
        "{out}"
    );
    assert!(out.contains("bad.yaml:8: /service/capabilites: unknown field `capabilites`; did you mean `capabilities`?"), "{out}");
    assert!(
        out.contains("ok       fixtures/policies.yaml (policy set)"),
        "{out}"
    );
}

#[test]
fn policy_errors_point_into_the_file() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = dir.path().join("policies.yaml");
    std::fs::write(&p, "policies:\n  - id: ok\n    require: service.privacy.encryption\n  - id: broken\n    when: request.data.sensitive\n    require: servce.cost.per_request < 1\n").unwrap_or_else(|e| panic!("{e}"));
    let o = caio(&["validate", &p.to_string_lossy()]);
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        out.contains(
            "policies.yaml:6: /policies/1/require: policy `broken`: undeclared reference `servce`"
        ),
        "{out}"
    );
}

#[test]
fn usage_errors_exit_2_and_missing_files_exit_1() {
    let o = caio(&["route", "--policies", POLICIES]);
    assert_eq!(o.status.code(), Some(2));
    let o = caio(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
    let o = caio(&[
        "route",
        "--services",
        "no/such/dir",
        "--policies",
        POLICIES,
        "--request",
        "fixtures/requests/sentiment-de.yaml",
    ]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("no/such/dir"), "{err}");
}

#[test]
fn garbage_decisions_are_refused() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let f = dir.path().join("d.json");
    for garbage in [
        "",
        "{",
        "[1,2,3]",
        "{\"decision_id\": 5}",
        "\u{0}\u{1}binary",
    ] {
        std::fs::write(&f, garbage).unwrap_or_else(|e| panic!("{e}"));
        let o = caio(&[
            "verify",
            &f.to_string_lossy(),
            "--services",
            SERVICES,
            "--policies",
            POLICIES,
        ]);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{garbage:?}");
        assert!(err.contains("not a CAIO decision"), "{garbage:?}: {err}");
    }
}

/// A trace log line written from the format in docs/reference/stores.md, independently of
/// the store's code; returns the line and its hash.
fn trace_line(seq: u64, prev: &str, body: &str) -> (String, String) {
    use sha2::{Digest, Sha256};
    let id = format!("sha256:{}", hex::encode(Sha256::digest(seq.to_be_bytes())));
    let string = |s: &str| {
        let mut v = (s.len() as u64).to_be_bytes().to_vec();
        v.extend_from_slice(s.as_bytes());
        v
    };
    let mut h = Sha256::new();
    h.update(hex::decode(prev).unwrap_or_else(|e| panic!("prev {prev}: {e}")));
    h.update(seq.to_be_bytes());
    h.update((1000 + seq).to_be_bytes());
    h.update(string(&id));
    h.update(string("acme"));
    h.update(string("alice"));
    h.update([1u8]);
    h.update(string("svc"));
    h.update(string("routed"));
    h.update(body.as_bytes());
    let hash = hex::encode(h.finalize());
    let line = format!(
        "{{\"seq\":{seq},\"at\":{},\"id\":\"{id}\",\"tenant\":\"acme\",\"principal\":\"alice\",\"service\":\"svc\",\"outcome\":\"routed\",\"prev\":\"{prev}\",\"hash\":\"{hash}\",\"body\":{body}}}\n",
        1000 + seq
    );
    (line, hash)
}

#[test]
fn verify_log_checks_a_segmented_trace_directory_and_names_the_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    let traces = dir.path().join("traces");
    std::fs::create_dir(&traces).unwrap();
    // Records 1–3 in a sealed segment, 4–5 in the active file: one chain.
    let mut prev = "0".repeat(64);
    let mut files = [String::new(), String::new()];
    for seq in 1..=5u64 {
        let (line, hash) = trace_line(seq, &prev, &format!("{{\"n\":{seq}}}"));
        files[usize::from(seq > 3)].push_str(&line);
        prev = hash;
    }
    let segment = traces.join("traces-00000000000000000001.jsonl");
    std::fs::write(&segment, &files[0]).unwrap();
    std::fs::write(traces.join("traces.jsonl"), &files[1]).unwrap();
    let dir_arg = traces.to_str().unwrap();

    let o = caio(&["verify-log", dir_arg]);
    let (stdout, _) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stdout}");
    assert_eq!(
        stdout.trim(),
        format!("VERIFIED {dir_arg} (trace log): head seq 5 hash {prev}")
    );
    let o = caio(&["verify-log", "--json", dir_arg]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["verified"], true);
    assert_eq!(v["kind"], "traces");
    assert_eq!(v["head"]["seq"], 5);
    assert_eq!(v["head"]["hash"], prev.as_str());

    // The active file alone starts at seq 4: not a log by itself.
    let o = caio(&["verify-log", traces.join("traces.jsonl").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));

    // An edited body in the segment: named by file and line, exit 1.
    std::fs::write(&segment, files[0].replace("{\"n\":2}", "{\"n\":7}")).unwrap();
    let o = caio(&["verify-log", dir_arg]);
    let (stdout, _) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout.starts_with("NOT VERIFIED: "), "{stdout}");
    assert!(
        stdout.contains(&format!("{}:2: hash does not match", segment.display())),
        "{stdout}"
    );
    let o = caio(&["verify-log", "--json", dir_arg]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["verified"], false);
    assert_eq!(v["error"]["code"], "LOG_CORRUPT");
    assert_eq!(v["error"]["details"]["line"], 2);
    assert_eq!(
        v["error"]["details"]["path"],
        segment.display().to_string().as_str()
    );

    // Nothing there: unreadable, not a crash.
    let missing = dir.path().join("nowhere/traces.jsonl");
    let o = caio(&["verify-log", "--json", missing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["error"]["code"], "LOG_UNREADABLE");
}

#[test]
fn verify_log_takes_an_audit_directory_as_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit");
    std::fs::create_dir(&audit).unwrap();
    std::fs::write(audit.join("audit.jsonl"), "not a record\n").unwrap();
    let o = caio(&["verify-log", "--json", audit.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["kind"], "audit");
    assert_eq!(v["error"]["code"], "LOG_CORRUPT");
    assert_eq!(
        v["error"]["details"]["path"],
        audit.join("audit.jsonl").display().to_string().as_str()
    );
    // An empty audit log is a valid one.
    std::fs::write(audit.join("audit.jsonl"), "").unwrap();
    let o = caio(&["verify-log", audit.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).0);
    assert!(text(&o).0.contains("(audit log): head seq 0"));
}
