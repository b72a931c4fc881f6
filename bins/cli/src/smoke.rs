//! `caio smoke`: the authentication matrix of running servers. The list of protected endpoints
//! comes from each server's own `/openapi.json`, so the check follows the server it tests.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::blocking::Client;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::Outcome;

/// Placeholder for path parameters: no such service, key or version exists, so probes that get
/// past authentication change nothing (empty bodies are refused before any write).
const PROBE_ID: &str = "caio-smoke-probe";

/// A URL without user info, for printing.
fn display_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string().trim_end_matches('/').to_owned()
        }
        Err(_) => "<invalid URL>".to_owned(),
    }
}

struct Row {
    method: String,
    path: String,
    without: Option<u16>,
    with: Option<u16>,
    pass: bool,
}

fn status(client: &Client, method: &Method, url: &str, token: Option<&str>) -> Option<u16> {
    let mut r = client.request(method.clone(), url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if *method != Method::GET && *method != Method::DELETE {
        r = r.header("content-type", "application/json").body("");
    }
    r.send().ok().map(|resp| resp.status().as_u16())
}

fn environment(client: &Client, base: &str, token: &str) -> anyhow::Result<Vec<Row>> {
    let base = base.trim_end_matches('/');
    let doc: Value = client
        .get(format!("{base}/openapi.json"))
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.json())
        .with_context(|| format!("reading {}/openapi.json", display_url(base)))?;
    let Some(paths) = doc["paths"].as_object() else {
        bail!("{}/openapi.json has no paths", display_url(base));
    };
    let mut rows = Vec::new();
    let ready = status(client, &Method::GET, &format!("{base}/health/ready"), None);
    rows.push(Row {
        method: "GET".into(),
        path: "/health/ready".into(),
        without: ready,
        with: None,
        pass: ready == Some(200),
    });
    for (path, item) in paths {
        let Some(ops) = item.as_object() else {
            continue;
        };
        for (m, op) in ops {
            let protected = op["security"].as_array().is_some_and(|s| !s.is_empty());
            if !protected {
                continue;
            }
            let Ok(method) = Method::from_bytes(m.to_uppercase().as_bytes()) else {
                continue;
            };
            let concrete = path
                .split('/')
                .map(|seg| if seg.starts_with('{') { PROBE_ID } else { seg })
                .collect::<Vec<_>>()
                .join("/");
            let url = format!("{base}{concrete}");
            let without = status(client, &method, &url, None);
            let with = status(client, &method, &url, Some(token));
            let unauthorized = StatusCode::UNAUTHORIZED.as_u16();
            rows.push(Row {
                method: method.to_string(),
                path: path.clone(),
                pass: without == Some(unauthorized)
                    && with.is_some_and(|s| s != unauthorized && s < 500),
                without,
                with,
            });
        }
    }
    Ok(rows)
}

/// Runs the matrix for each (url, token) pair and prints one table per environment.
pub fn run(out: &mut impl Write, urls: &[String], tokens: &[String]) -> anyhow::Result<Outcome> {
    if urls.len() != tokens.len() {
        bail!(
            "give one --token per --url ({} URLs, {} tokens)",
            urls.len(),
            tokens.len()
        );
    }
    let client = Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("building the HTTP client")?;
    let mut all_pass = true;
    for (url, token) in urls.iter().zip(tokens) {
        writeln!(out, "== {}", display_url(url))?;
        let rows = match environment(&client, url, token) {
            Ok(r) => r,
            Err(e) => {
                writeln!(out, "FAIL  {e:#}")?;
                all_pass = false;
                continue;
            }
        };
        let show = |s: Option<u16>| s.map_or("-".to_owned(), |s| s.to_string());
        writeln!(
            out,
            "{:<6} {:<7} {:<45} {:>8} {:>10}",
            "RESULT", "METHOD", "PATH", "NO TOKEN", "WITH TOKEN"
        )?;
        for r in &rows {
            writeln!(
                out,
                "{:<6} {:<7} {:<45} {:>8} {:>10}",
                if r.pass { "PASS" } else { "FAIL" },
                r.method,
                r.path,
                show(r.without),
                show(r.with)
            )?;
        }
        let failed = rows.iter().filter(|r| !r.pass).count();
        writeln!(
            out,
            "{} checks, {} failed: {}",
            rows.len(),
            failed,
            if failed == 0 { "PASS" } else { "FAIL" }
        )?;
        all_pass &= failed == 0;
    }
    writeln!(out, "Result: {}", if all_pass { "PASS" } else { "FAIL" })?;
    Ok(if all_pass { Outcome::Yes } else { Outcome::No })
}
