//! End to end: the vendor issues a key with the `caio-license-admin` binary; `caio-server`
//! starts with it (and with none, and with a revoked one) in each enforcement mode.
//!
//! `caio-license-admin` is the workspace's binary next to this package's (`cargo test
//! --workspace` builds both).
// Helpers outside #[test] functions unwrap too: a broken harness should fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ADMIN: &str = "license-admin-Zx8kq2Lw9pR4tY7uV1bN6mC3dF5gH0jQ";

fn admin_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_caio-server")).with_file_name("caio-license-admin");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p caio-license-admin` (cargo test --workspace does)",
        path.display()
    );
    path
}

fn admin(args: &[&str]) -> String {
    let out = Command::new(admin_binary())
        .env_remove("CAIO_LICENSE_LEDGER")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "caio-license-admin {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 request; (status, body).
fn http(port: u16, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\n{auth}content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

struct Running {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(env: &[(&str, &str)]) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut c = Command::new(env!("CARGO_BIN_EXE_caio-server"));
    c.current_dir(&root);
    for (k, _) in std::env::vars() {
        if k.starts_with("CAIO_") {
            c.env_remove(k);
        }
    }
    c.env("CAIO_DATA_DIR", dir.path())
        .env("CAIO_BOOTSTRAP_ADMIN_KEY", ADMIN)
        .env("CAIO_LOG", "warn")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--services",
            "fixtures/services",
            "--policies",
            "fixtures/policies.yaml",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("server exited early: {status}");
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok()
            && http(port, "GET", "/health/ready", None, "").0 == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "server not ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    Running {
        child,
        port,
        _dir: dir,
    }
}

fn route(s: &Running) -> (u16, String) {
    let request =
        r#"{"requirements":{"capabilities":["sentiment_analysis"]},"payload":{"text":"gut"}}"#;
    http(s.port, "POST", "/api/v1/route", Some(ADMIN), request)
}

#[test]
fn keys_issued_by_the_admin_tool_are_enforced_by_the_server() {
    let vendor = tempfile::tempdir().unwrap();
    let keys = vendor.path().join("keys");
    admin(&["keygen", "--out", keys.to_str().unwrap()]);
    let private = keys.join("private.pem");
    let public = keys.join("public.pem");
    let key = admin(&[
        "issue",
        "--private-key",
        private.to_str().unwrap(),
        "--customer",
        "acme",
        "--tier",
        "enterprise",
        "--days",
        "30",
        "--features",
        "execution",
    ]);
    assert!(key.starts_with("CAIO-v2-"));
    let public = public.to_str().unwrap();

    // Enforced, with the key: routing works; status names the customer.
    let s = start(&[
        ("CAIO_LICENSE_ENFORCEMENT", "enforced"),
        ("CAIO_LICENSE_PUBLIC_KEY", public),
        ("CAIO_LICENSE_KEY", &key),
    ]);
    let (code, body) = route(&s);
    assert_eq!(code, 200, "{body}");
    let (code, body) = http(s.port, "GET", "/api/v1/licensing/status", Some(ADMIN), "");
    assert_eq!(code, 200);
    assert!(
        body.contains(r#""valid":true"#) && body.contains(r#""customer_id":"acme""#),
        "{body}"
    );
    assert!(!body.contains(&key));
    drop(s);

    // Enforced, without a key: 403, while health keeps answering; activation fixes it live.
    let s = start(&[
        ("CAIO_LICENSE_ENFORCEMENT", "enforced"),
        ("CAIO_LICENSE_PUBLIC_KEY", public),
    ]);
    let (code, body) = route(&s);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("LICENSE_INVALID"));
    assert_eq!(http(s.port, "GET", "/health", None, "").0, 200);
    let (code, body) = http(
        s.port,
        "POST",
        "/api/v1/licensing/activate",
        Some(ADMIN),
        &format!(r#"{{"key":"{key}"}}"#),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(route(&s).0, 200);
    drop(s);

    // Permissive, without a key: works, with a warning.
    let s = start(&[
        ("CAIO_LICENSE_ENFORCEMENT", "permissive"),
        ("CAIO_LICENSE_PUBLIC_KEY", public),
    ]);
    assert_eq!(route(&s).0, 200);
    drop(s);

    // Off: nothing is checked, even with a key that is not a key.
    let s = start(&[("CAIO_LICENSE_KEY", "CAIO-v2-not.a-key")]);
    assert_eq!(route(&s).0, 200);
    drop(s);

    // Revoked by the vendor's signed list: refused.
    let list = vendor.path().join("revoked.json");
    admin(&[
        "revoke",
        &key,
        "--reason",
        "contract ended",
        "--private-key",
        private.to_str().unwrap(),
        "--list",
        list.to_str().unwrap(),
    ]);
    let s = start(&[
        ("CAIO_LICENSE_ENFORCEMENT", "enforced"),
        ("CAIO_LICENSE_PUBLIC_KEY", public),
        ("CAIO_LICENSE_KEY", &key),
        ("CAIO_LICENSE_REVOCATIONS", list.to_str().unwrap()),
    ]);
    let (code, body) = route(&s);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("revoked"), "{body}");
}
