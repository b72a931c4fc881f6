//! The `caio-server` binary: production refuses a weak configuration; SIGTERM drains requests in
//! flight; the embedded default starts with nothing but a data directory.
// Helpers outside #[test] functions unwrap too: a broken harness should fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ADMIN: &str = "binary-admin-Zx8kq2Lw9pR4tY7uV1bN6mC3dF5gH0jQ";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn server() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_caio-server"));
    c.current_dir(root());
    // Start from a clean environment of CAIO_* variables.
    for (k, _) in std::env::vars() {
        if k.starts_with("CAIO_") {
            c.env_remove(k);
        }
    }
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_ready(port: u16, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("server exited early: {status}");
        }
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ =
                s.write_all(b"GET /health/ready HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            if out.starts_with("HTTP/1.1 200") {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("server not ready on {port}");
}

#[test]
fn production_refuses_to_start_and_lists_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let out = server()
        .env("CAIO_MODE", "production")
        .env("CAIO_DATA_DIR", dir.path())
        .env("CAIO_AUTH_ENABLED", "false")
        .env("CAIO_CORS_ALLOWED_ORIGINS", "*")
        .env("CAIO_JWT_HS256_SECRET", "short-secret")
        .env("CAIO_WEBHOOK_SIGNATURE_REQUIRED", "false")
        .env("CAIO_REDIS_REQUIRED", "true")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for name in [
        "auth.enabled",
        "cors.allowed_origins",
        "auth.jwt.hs256_secret",
        "webhooks.signature_required",
        "redis",
    ] {
        assert!(err.contains(name), "{name} not reported: {err}");
    }
    assert!(!err.contains("short-secret"), "secret printed: {err}");
}

#[test]
fn check_flag_reports_without_serving() {
    let out = server().args(["--check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("PASS mode"));
    let out = server()
        .args(["--check", "--listen", "not-an-address"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = server()
        .args(["--config", "/nonexistent/caio.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn check_flag_loads_the_preload_the_way_the_server_would() {
    let check = |args: &[&str]| {
        let out = server().arg("--check").args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let line = |text: &str, name: &str| {
        text.lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no {name} line: {text}"))
            .to_owned()
    };
    // The fixtures load: the versions the server would serve, the same as the CLI computes.
    let (code, text) = check(&[
        "--services",
        "fixtures/services",
        "--policies",
        "fixtures/policies.yaml",
    ]);
    assert_eq!(code, Some(0), "{text}");
    let services = line(&text, "preload.services");
    assert!(services.starts_with("PASS"), "{services}");
    let contracts = std::fs::read_dir(root().join("fixtures/services"))
        .unwrap()
        .count();
    assert!(
        services.contains(&format!("{contracts} contract(s)")),
        "{services}"
    );
    assert!(services.contains("registry sha256:"), "{services}");
    let policies = line(&text, "preload.policies");
    assert!(policies.starts_with("PASS"), "{policies}");
    assert!(policies.contains("version sha256:"), "{policies}");
    // A missing directory and a policy that does not compile fail the check, naming the file.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("policies.yaml");
    std::fs::write(
        &bad,
        "policies:\n  - id: x\n    require: \"service.cost <\"\n",
    )
    .unwrap();
    let (code, text) = check(&[
        "--services",
        "/nonexistent/services",
        "--policies",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{text}");
    let services = line(&text, "preload.services");
    assert!(services.starts_with("FAIL"), "{services}");
    assert!(services.contains("/nonexistent/services"), "{services}");
    let policies = line(&text, "preload.policies");
    assert!(policies.starts_with("FAIL"), "{policies}");
    // The problems follow on their own lines, each with file, line and field path.
    let problems = &text[text.find("preload.policies").unwrap()..];
    assert!(
        problems.contains("policies.yaml:3: /policies/0/require: policy `x`"),
        "{problems}"
    );
}

/// Reads a chunk of the response with a deadline.
fn read_response(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn sigterm_drains_requests_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = server()
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--services",
            "fixtures/services",
            "--policies",
            "fixtures/policies.yaml",
        ])
        .env("CAIO_DATA_DIR", dir.path())
        .env("CAIO_BOOTSTRAP_ADMIN_KEY", ADMIN)
        .env("CAIO_AUTH_STRICT", "true")
        .env("CAIO_LOG_FORMAT", "text")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_ready(port, &mut child);

    // A route request whose body is only half sent when SIGTERM arrives.
    let body = std::fs::read_to_string(root().join("fixtures/requests/sentiment-de.yaml")).unwrap();
    let (first, rest) = body.split_at(body.len() / 2);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST /api/v1/route HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ADMIN}\r\ncontent-type: application/yaml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{first}",
        body.len()
    )
    .unwrap();
    s.flush().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // Readiness turns 503 / new connections are refused while the old one finishes.
    std::thread::sleep(Duration::from_millis(300));
    let late = TcpStream::connect(("127.0.0.1", port));
    if let Ok(mut late) = late {
        let _ =
            late.write_all(b"GET /health/ready HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        let r = read_response(&mut late);
        assert!(
            !r.starts_with("HTTP/1.1 200"),
            "still ready while draining: {r}"
        );
    }
    s.write_all(rest.as_bytes()).unwrap();
    let resp = read_response(&mut s);
    // The admin principal has no permissions, so the answer may be a decision or a structured
    // no-route; either way the request in flight was served, not cut.
    assert!(
        resp.starts_with("HTTP/1.1 200") || resp.starts_with("HTTP/1.1 422"),
        "{resp}"
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let mut log = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .for_each(|l| {
            log.push_str(&l);
            log.push('\n');
        });
    assert!(log.contains("draining"), "{log}");
    assert!(!log.contains(ADMIN), "the admin key was logged");
}

#[test]
fn embedded_default_generates_an_admin_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = server()
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut key = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut line = String::new();
    while key.is_none() && Instant::now() < deadline {
        line.clear();
        if stdout.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(k) = line.trim().strip_prefix("caio_dev_") {
            key = Some(format!("caio_dev_{k}"));
        }
    }
    let key = key.expect("no generated key printed");
    wait_ready(port, &mut child);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET /api/v1/keys HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\nconnection: close\r\n\r\n").unwrap();
    let r = read_response(&mut s);
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    // Traces live under the data directory.
    assert!(dir.path().join("traces").is_dir());
}

/// A SIGTERM sent the moment the port accepts connections stops the server cleanly: the
/// handlers are installed before it binds, not when the accept loop first polls for a signal.
#[cfg(unix)]
#[test]
fn sigterm_as_soon_as_the_port_answers_stops_it_cleanly() {
    use rustix::process::{Pid, Signal, kill_process};
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut child = server()
            .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(dir.path())
            .env("CAIO_BOOTSTRAP_ADMIN_KEY", ADMIN)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the server never bound {port}");
            if let Ok(Some(status)) = child.try_wait() {
                panic!("server exited early: {status}");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
        kill_process(pid, Signal::TERM).unwrap();
        let exit = child.wait().unwrap();
        assert!(exit.success(), "a clean exit on SIGTERM: {exit:?}");
    }
}

/// The soft and hard "Max open files" of a process, from /proc.
fn open_file_limits(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut n = line.split_whitespace().filter_map(|w| {
        w.parse::<u64>()
            .ok()
            .or((w == "unlimited").then_some(u64::MAX))
    });
    (n.next().unwrap(), n.next().unwrap())
}

#[test]
fn the_server_raises_its_open_file_limit_for_max_connections() {
    let (_, hard) = open_file_limits(std::process::id());
    // A soft limit of 512 (a stingy default), and settings that need more than it: within the
    // hard limit, and beyond it (when the hard limit is one CAIO_MAX_CONNECTIONS can exceed).
    let mut cases = vec![(2_000u64, false)];
    if hard < 1_000_000 {
        cases.push((hard, true));
    }
    for (max_connections, starts_above_hard) in cases {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut child = Command::new("sh")
            .args([
                "-c",
                "ulimit -Sn 512 && exec \"$0\" \"$@\"",
                env!("CARGO_BIN_EXE_caio-server"),
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(dir.path())
            .current_dir(root())
            .env("CAIO_MAX_CONNECTIONS", max_connections.to_string())
            .env("CAIO_BOOTSTRAP_ADMIN_KEY", ADMIN)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_ready(port, &mut child);
        let (soft, _) = open_file_limits(child.id());
        let needed = max_connections + 256;
        assert_eq!(soft, needed.min(hard), "max_connections {max_connections}");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        child.wait().unwrap();
        // Beyond the hard limit the server still serves, and says what to change.
        assert_eq!(
            err.contains("LimitNOFILE"),
            starts_above_hard,
            "max_connections {max_connections}: {err}"
        );
    }
}
