//! `caio doctor`: the checks caio-server runs at start, on an environment file, one line each.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use caio_config::Mode;

use crate::Outcome;

/// Prints `PASS|FAIL <check> <detail>` per check and `Result: PASS|FAIL`.
pub fn run(
    out: &mut impl Write,
    env_file: &Path,
    mode: Option<Mode>,
    connections: bool,
) -> anyhow::Result<Outcome> {
    let mut env = caio_config::read_env_file(env_file)
        .with_context(|| format!("reading {}", env_file.display()))?;
    if let Some(m) = mode {
        env.insert("CAIO_MODE".to_owned(), m.as_str().to_owned());
    }
    // Unknown CAIO_* names are probably typos of real ones: say so instead of ignoring them.
    let known: Vec<&str> = caio_config::ENV_VARS.iter().map(|v| v.name).collect();
    let mut checks = Vec::new();
    for name in env.keys().filter(|k| k.starts_with("CAIO_")) {
        if name != "CAIO_CONFIG" && !known.contains(&name.as_str()) {
            checks.push((
                false,
                "env".to_owned(),
                format!("{name} is not a CAIO variable"),
            ));
        }
    }
    let config = match caio_config::load(None, &|k: &str| env.get(k).cloned()) {
        Ok(c) => c,
        Err(e) => {
            writeln!(out, "FAIL  {:<32} {e}", "config")?;
            writeln!(out, "Result: FAIL")?;
            return Ok(Outcome::No);
        }
    };
    let mut all = caio_config::check(&config);
    if connections {
        all.extend(caio_config::check_connections(&config));
    }
    for c in all {
        checks.push((c.passed(), c.name.to_owned(), c.detail));
    }
    for (ok, name, detail) in &checks {
        writeln!(
            out,
            "{}  {name:<32} {detail}",
            if *ok { "PASS" } else { "FAIL" }
        )?;
    }
    let pass = checks.iter().all(|(ok, _, _)| *ok);
    writeln!(out, "Result: {}", if pass { "PASS" } else { "FAIL" })?;
    Ok(if pass { Outcome::Yes } else { Outcome::No })
}
