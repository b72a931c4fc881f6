//! `caio doctor` on environment files and `caio smoke` against live servers (started in-process
//! on ephemeral ports).
// Helpers outside #[test] functions unwrap too: a broken harness should fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

const ADMIN: &str = "smoke-admin-Zx8kq2Lw9pR4tY7uV1bN6mC3dF5gH0jQ";

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

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn env_file(dir: &Path, text: &str) -> String {
    let p = dir.join("test.env");
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_owned()
}

#[test]
fn doctor_passes_a_good_production_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = env_file(
        dir.path(),
        &format!(
            "CAIO_MODE=production\nCAIO_DATA_DIR={}\nCAIO_BOOTSTRAP_ADMIN_KEY=Qm7Zp3Lx9Vb2Nc8Kd4Rt6Yw1Ue5Io0Pa\nCAIO_CORS_ALLOWED_ORIGINS=https://console.example.com\n",
            dir.path().join("data").display()
        ),
    );
    let o = caio(&[
        "doctor",
        "--env-file",
        &f,
        "--mode",
        "production",
        "--check-connections",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.lines()
            .filter(|l| !l.starts_with("Result"))
            .all(|l| l.starts_with("PASS")),
        "{out}"
    );
    assert!(out.contains("data_dir.writable"));
    assert!(out.trim_end().ends_with("Result: PASS"));
    assert!(
        !out.contains("Qm7Zp3Lx9Vb2Nc8Kd4Rt6Yw1Ue5Io0Pa"),
        "secret printed"
    );
}

#[test]
fn doctor_fails_a_weak_production_file_and_names_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let f = env_file(
        dir.path(),
        "CAIO_AUTH_ENABLED=false\nCAIO_CORS_ALLOWED_ORIGINS=*\nCAIO_JWT_HS256_SECRET=changeme\nCAIO_REDIS_REQUIRED=true\nCAIO_RATE_LIMT_BURST=5\n",
    );
    let o = caio(&["doctor", "--env-file", &f, "--mode", "production"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    for name in [
        "auth.enabled",
        "cors.allowed_origins",
        "auth.jwt.hs256_secret",
        "redis",
        "CAIO_RATE_LIMT_BURST",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("FAIL") && l.contains(name)),
            "{name}: {out}"
        );
    }
    assert!(out.trim_end().ends_with("Result: FAIL"));
    assert!(!out.contains("changeme"), "secret printed: {out}");
    // The same file passes the checks that matter in development (but not the short secret).
    let o = caio(&["doctor", "--env-file", &f, "--mode", "development"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(!stdout(&o).contains("FAIL  auth.enabled"));
}

#[test]
fn doctor_checks_redis_connections() {
    let dir = tempfile::tempdir().unwrap();
    let url =
        std::env::var("CAIO_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let f = env_file(
        dir.path(),
        &format!(
            "CAIO_REDIS_URL={url}\nCAIO_DATA_DIR={}\n",
            dir.path().display()
        ),
    );
    let o = caio(&["doctor", "--env-file", &f, "--check-connections"]);
    let out = stdout(&o);
    if o.status.code() != Some(0) && std::env::var_os("CI").is_none() {
        eprintln!("skipping: Redis not reachable here\n{out}");
        return;
    }
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("PASS  redis.reachable"), "{out}");
    let f = env_file(dir.path(), "CAIO_REDIS_URL=redis://:hunter2@127.0.0.1:1\n");
    let o = caio(&["doctor", "--env-file", &f, "--check-connections"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(out.contains("FAIL  redis.reachable"), "{out}");
    assert!(!out.contains("hunter2"));
}

#[test]
fn doctor_checks_the_open_file_limit_for_max_connections() {
    let dir = tempfile::tempdir().unwrap();
    // Under a hard limit of 4096 open files (lowering it needs no privilege).
    let doctor = |max_connections: u32| {
        let f = env_file(
            dir.path(),
            &format!(
                "CAIO_MAX_CONNECTIONS={max_connections}\nCAIO_DATA_DIR={}\n",
                dir.path().display()
            ),
        );
        let o = Command::new("sh")
            .args([
                "-c",
                "ulimit -Sn 1024 && ulimit -Hn 4096 && exec \"$0\" \"$@\"",
                env!("CARGO_BIN_EXE_caio"),
                "doctor",
                "--env-file",
                &f,
                "--check-connections",
            ])
            .current_dir(root())
            .output()
            .unwrap();
        let line = stdout(&o)
            .lines()
            .find(|l| l.contains("limits.open_files"))
            .unwrap_or_else(|| panic!("no limits.open_files line: {}", stdout(&o)))
            .to_owned();
        (o.status.code(), line)
    };
    // Within the soft limit; above it but within the hard one (the server raises it).
    let (code, line) = doctor(500);
    assert_eq!(code, Some(0), "{line}");
    assert!(
        line.starts_with("PASS") && line.contains("needs 756"),
        "{line}"
    );
    let (code, line) = doctor(3000);
    assert_eq!(code, Some(0), "{line}");
    assert!(line.contains("raises it to 3256"), "{line}");
    // Beyond the hard limit: how many connections can be served, and what to change.
    let (code, line) = doctor(10_000);
    assert_eq!(code, Some(1), "{line}");
    assert!(line.starts_with("FAIL"), "{line}");
    assert!(line.contains("at most 3840 connections"), "{line}");
    assert!(line.contains("LimitNOFILE"), "{line}");
}

/// A server on an ephemeral port, in a thread with its own runtime.
struct Live {
    url: String,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Live {
    fn start(strict: bool) -> Live {
        let dir = tempfile::tempdir().unwrap();
        let mut c = caio_config::Config {
            data_dir: dir.path().to_path_buf(),
            services_dir: Some(root().join("fixtures/services")),
            policies_file: Some(root().join("fixtures/policies.yaml")),
            ..caio_config::Config::default()
        };
        c.auth.strict = Some(strict);
        c.auth.bootstrap_admin_key = Some(caio_config::Secret::new(ADMIN));
        c.log.access = false;
        let (state, _) = caio_api::AppState::build(c).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(l.local_addr().unwrap()).unwrap();
                caio_api::serve(l, Arc::clone(&state), async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
            });
        });
        let addr = rx.recv().unwrap();
        Live {
            url: format!("http://{addr}"),
            _dir: dir,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn smoke_passes_two_strict_environments() {
    let (a, b) = (Live::start(true), Live::start(true));
    let o = caio(&[
        "smoke", "--url", &a.url, "--token", ADMIN, "--url", &b.url, "--token", ADMIN,
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert_eq!(out.matches("== http://127.0.0.1:").count(), 2);
    assert!(out.contains("POST    /api/v1/route"), "{out}");
    assert!(out.contains("GET     /health/ready"));
    assert!(!out.contains(ADMIN), "token printed");
    assert!(out.trim_end().ends_with("Result: PASS"));
}

#[test]
fn smoke_fails_a_server_that_serves_without_credentials() {
    let lax = Live::start(false);
    let o = caio(&["smoke", "--url", &lax.url, "--token", ADMIN]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("FAIL") && l.contains("/api/v1/discover")),
        "{out}"
    );
    // A wrong token fails the "with token" column.
    let strict = Live::start(true);
    let o = caio(&[
        "smoke",
        "--url",
        &strict.url,
        "--token",
        "not-the-right-token-at-all-xxxxxxxx",
    ]);
    assert_eq!(o.status.code(), Some(1));
    // Nothing listening.
    let o = caio(&["smoke", "--url", "http://127.0.0.1:1", "--token", ADMIN]);
    assert_eq!(o.status.code(), Some(1));
}
