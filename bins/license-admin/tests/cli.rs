//! Runs the `caio-license-admin` binary end to end in a temporary directory.
// Helpers outside #[test] functions unwrap too: a broken harness should fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

fn admin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_caio-license-admin"))
        .env_remove("CAIO_LICENSE_LEDGER")
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn keygen(dir: &Path) {
    let o = admin(&["keygen", "--out", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

fn issue(keys: &Path, extra: &[&str]) -> String {
    let private = keys.join("private.pem");
    let mut args = vec![
        "issue",
        "--private-key",
        private.to_str().unwrap(),
        "--customer",
        "acme",
        "--tier",
        "enterprise",
    ];
    args.extend_from_slice(extra);
    let o = admin(&args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let key = stdout(&o).trim().to_owned();
    assert!(key.starts_with("CAIO-v2-"), "{key}");
    key
}

#[test]
fn keygen_issue_verify() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("vendor");
    keygen(&keys);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(keys.join("private.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let key = issue(
        &keys,
        &[
            "--days",
            "30",
            "--features",
            "cluster,sso",
            "--max-services",
            "10",
        ],
    );
    let public = keys.join("public.pem");
    let o = admin(&["verify", &key, "--public-key", public.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("VALID") && out.contains("\"acme\"") && out.contains("\"sso\""),
        "{out}"
    );
    assert!(out.contains("\"max_services\": 10"), "{out}");

    // An explicit expiry date works too.
    let key = issue(&keys, &["--expires", "2999-12-31"]);
    let o = admin(&["verify", &key, "--public-key", public.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("3000-01-01T00:00:00Z"));

    // Keygen never overwrites a private key.
    let o = admin(&["keygen", "--out", keys.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn verify_with_another_public_key_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    keygen(&a);
    keygen(&b);
    let key = issue(&a, &["--days", "30"]);
    let o = admin(&[
        "verify",
        &key,
        "--public-key",
        b.join("public.pem").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("unknown signing key"), "{}", stderr(&o));
    // With both keys (rotation) it verifies.
    let o = admin(&[
        "verify",
        &key,
        "--public-key",
        b.join("public.pem").to_str().unwrap(),
        "--public-key",
        a.join("public.pem").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn expired_and_tampered_keys_fail() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("k");
    keygen(&keys);
    let public = keys.join("public.pem");
    let key = issue(
        &keys,
        &[
            "--expires",
            "2001-01-01T00:00:00Z",
            "--not-before",
            "2000-01-01",
        ],
    );
    let o = admin(&["verify", &key, "--public-key", public.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("expired"), "{}", stderr(&o));
    let o = admin(&[
        "verify",
        "CAIO-v1-abc.def",
        "--public-key",
        public.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("v2 key"), "{}", stderr(&o));
}

#[test]
fn inspect_is_marked_unverified() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("k");
    keygen(&keys);
    let key = issue(&keys, &["--days", "1", "--max-requests-per-day", "1000"]);
    let o = admin(&["inspect", &key]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("UNVERIFIED"), "{out}");
    assert!(
        out.contains("\"customer_id\": \"acme\"") && out.contains("\"max_requests_per_day\": 1000"),
        "{out}"
    );
    let o = admin(&["inspect", "garbage"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn revoke_then_verify_with_the_list_fails() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("k");
    keygen(&keys);
    let (private, public) = (keys.join("private.pem"), keys.join("public.pem"));
    let list = dir.path().join("revoked.json");
    let key = issue(&keys, &["--days", "30"]);
    let other = issue(&keys, &["--days", "30"]);
    let o = admin(&[
        "revoke",
        &key,
        "--reason",
        "contract ended",
        "--private-key",
        private.to_str().unwrap(),
        "--list",
        list.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let verify_args = |k: &str| {
        admin(&[
            "verify",
            k,
            "--public-key",
            public.to_str().unwrap(),
            "--revocation-list",
            list.to_str().unwrap(),
        ])
    };
    let o = verify_args(&key);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("revoked") && stderr(&o).contains("contract ended"),
        "{}",
        stderr(&o)
    );
    let o = verify_args(&other);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // Revoking by id adds to the same list.
    let inspect = stdout(&admin(&["inspect", &other]));
    let id = inspect
        .split("\"key_id\": \"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let o = admin(&[
        "revoke",
        &id,
        "--reason",
        "leaked",
        "--private-key",
        private.to_str().unwrap(),
        "--list",
        list.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(verify_args(&other).status.code(), Some(1));
    assert_eq!(verify_args(&key).status.code(), Some(1));

    // A tampered list is refused.
    let text = std::fs::read_to_string(&list)
        .unwrap()
        .replace("leaked", "Leaked");
    std::fs::write(&list, text).unwrap();
    let o = verify_args(&other);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("revocation list refused"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(admin(&[]).status.code(), Some(2));
    assert_eq!(admin(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(admin(&["verify", "CAIO-v2-x.y"]).status.code(), Some(2));
    assert_eq!(
        admin(&[
            "issue",
            "--private-key",
            "/nonexistent/p.pem",
            "--customer",
            "a",
            "--tier",
            "t",
            "--days",
            "1"
        ])
        .status
        .code(),
        Some(2)
    );
    let dir = tempfile::tempdir().unwrap();
    keygen(dir.path());
    let private = dir.path().join("private.pem");
    // Neither --days nor --expires; both; a bad date.
    for extra in [
        &[][..],
        &["--days", "1", "--expires", "2030-01-01"][..],
        &["--expires", "next week"][..],
    ] {
        let mut args = vec![
            "issue",
            "--private-key",
            private.to_str().unwrap(),
            "--customer",
            "a",
            "--tier",
            "t",
        ];
        args.extend_from_slice(extra);
        assert_eq!(admin(&args).status.code(), Some(2), "{extra:?}");
    }
    assert_eq!(admin(&["--help"]).status.code(), Some(0));
}

#[test]
fn ledger_records_issues_and_revocations() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("k");
    keygen(&keys);
    let private = keys.join("private.pem");
    let private = private.to_str().unwrap();
    let ledger = dir.path().join("ledger.json");
    let ledger = ledger.to_str().unwrap();
    let list = dir.path().join("revoked.json");
    let with_ledger = |args: &[&str]| {
        let mut all = vec!["--ledger", ledger];
        all.extend_from_slice(args);
        admin(&all)
    };
    let issue_for = |customer: &str, extra: &[&str]| {
        let mut args = vec![
            "issue",
            "--private-key",
            private,
            "--customer",
            customer,
            "--tier",
            "pro",
        ];
        args.extend_from_slice(extra);
        with_ledger(&args)
    };

    // Ledger commands need a ledger.
    assert_eq!(admin(&["stats"]).status.code(), Some(2));
    // Issuing to an unknown customer is refused, and nothing is signed or recorded.
    let o = issue_for("acme", &["--days", "10"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("unknown customer"), "{}", stderr(&o));
    assert!(stdout(&o).is_empty());

    let o = with_ledger(&[
        "customers",
        "add",
        "acme",
        "--name",
        "ACME GmbH",
        "--email",
        "ops@acme.test",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        with_ledger(&["customers", "add", "beta", "--name", "Beta"])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        with_ledger(&["customers", "add", "acme", "--name", "Again"])
            .status
            .code(),
        Some(1)
    );
    let out = stdout(&with_ledger(&["customers", "list"]));
    assert!(
        out.contains("ACME GmbH") && out.contains("ops@acme.test") && out.contains("beta"),
        "{out}"
    );

    let soon = issue_for("acme", &["--days", "10"]);
    assert_eq!(soon.status.code(), Some(0), "{}", stderr(&soon));
    let later = issue_for("beta", &["--days", "100"]);
    assert_eq!(later.status.code(), Some(0), "{}", stderr(&later));
    let old = issue_for(
        "beta",
        &["--expires", "2001-01-01", "--not-before", "2000-01-01"],
    );
    assert_eq!(old.status.code(), Some(0), "{}", stderr(&old));
    let gone = issue_for("acme", &["--days", "50"]);
    let gone_key = stdout(&gone).trim().to_owned();
    let o = with_ledger(&[
        "revoke",
        &gone_key,
        "--reason",
        "refund",
        "--private-key",
        private,
        "--list",
        list.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    let o = with_ledger(&["stats", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let stats: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(stats["customers"], 2);
    assert_eq!(stats["licenses"], 4);
    assert_eq!(stats["valid"], 2);
    assert_eq!(stats["active"], 1);
    assert_eq!(stats["expiring_soon"], 1);
    assert_eq!(stats["expired"], 1);
    assert_eq!(stats["revoked"], 1);
    assert!(stdout(&with_ledger(&["stats"])).contains("revoked:        1"));

    let out = stdout(&with_ledger(&["renewals", "--days", "30"]));
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.lines().nth(1).unwrap().contains("acme"), "{out}");

    let out = stdout(&with_ledger(&["list", "--customer", "beta"]));
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(out.contains("expired") && out.contains("active"), "{out}");
    assert!(stdout(&with_ledger(&["list"])).contains("revoked"));

    let csv = stdout(&with_ledger(&["export", "--format", "csv"]));
    assert_eq!(csv.lines().count(), 5, "{csv}");
    assert!(csv.starts_with("key_id,customer_id,customer_name,tier,status,"));
    assert!(csv.contains(",refund,"), "{csv}");
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&with_ledger(&["export", "--format", "json"]))).unwrap();
    let rows = json.as_array().unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[3]["status"], "revoked");
    assert_eq!(rows[3]["key"], gone_key.as_str());
    assert_eq!(
        with_ledger(&["export", "--format", "xml"]).status.code(),
        Some(2)
    );

    // The environment variable works as well as the flag.
    let o = Command::new(env!("CARGO_BIN_EXE_caio-license-admin"))
        .env("CAIO_LICENSE_LEDGER", ledger)
        .args(["stats"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // A corrupt ledger is a usage error, and is not overwritten.
    std::fs::write(ledger, "not json").unwrap();
    assert_eq!(with_ledger(&["stats"]).status.code(), Some(2));
    assert_eq!(issue_for("acme", &["--days", "1"]).status.code(), Some(2));
    assert_eq!(std::fs::read_to_string(ledger).unwrap(), "not json");
}
