//! Checks a JSON Schema cannot express: semver, bound order, duplicates, URL shape, field lengths.

use std::collections::{BTreeMap, HashSet};

use crate::model::{Adapter, Bound, ConstraintValue, ServiceContract};
use crate::parse::Problem;
use crate::policy::PolicySet;
use crate::request::RouteRequest;
use crate::yaml::escape;

/// Guarantee properties whose values are probabilities.
const UNIT_INTERVAL: &[&str] = &["accuracy", "availability", "precision", "recall", "f1"];
/// Guarantee properties that must be flags.
const FLAGS: &[&str] = &["determinism"];

pub(crate) fn contract(c: &ServiceContract) -> Vec<Problem> {
    let mut out = Vec::new();
    let s = &c.service;
    if let Err(e) = semver::Version::parse(&s.version) {
        out.push(Problem::new(
            "/service/version",
            format!(
                "`{}` is not a semantic version (MAJOR.MINOR.PATCH): {e}",
                s.version
            ),
        ));
    }
    duplicates(
        &s.capabilities,
        "/service/capabilities",
        "capability",
        &mut out,
    );
    guarantees(&s.guarantees, "/service/guarantees", &mut out);
    for (key, value) in &s.constraints {
        let path = format!("/service/constraints/{}", escape(key));
        match value {
            ConstraintValue::Number(n) if *n < 0.0 => {
                out.push(Problem::new(&path, format!("{n} is negative")));
            }
            ConstraintValue::List(items) => {
                if items.iter().any(|i| i.is_empty()) {
                    out.push(Problem::new(&path, "list contains an empty string"));
                }
                duplicates(items, &path, "value", &mut out);
            }
            ConstraintValue::Number(_) | ConstraintValue::Bool(_) | ConstraintValue::Text(_) => {}
        }
        if (key.starts_with("max_") || key.starts_with("min_"))
            && !matches!(value, ConstraintValue::Number(_))
        {
            out.push(Problem::new(
                &path,
                format!("`{key}` is a limit and must be a number"),
            ));
        }
    }
    base_url(&s.api.base_url, &mut out);
    if s.api.adapter == Adapter::HttpJson && !s.api.endpoints.contains_key("execute") {
        out.push(Problem::new(
            "/service/api/endpoints",
            "adapter `http_json` needs an `execute` endpoint",
        ));
    }
    out
}

fn base_url(raw: &str, out: &mut Vec<Problem>) {
    let path = "/service/api/base_url";
    match url::Url::parse(raw) {
        Err(e) => out.push(Problem::new(path, format!("`{raw}` is not a URL: {e}"))),
        Ok(u) => {
            if u.scheme() != "http" && u.scheme() != "https" {
                out.push(Problem::new(
                    path,
                    format!("scheme `{}` is not allowed; use http or https", u.scheme()),
                ));
            }
            if u.host_str().is_none_or(str::is_empty) {
                out.push(Problem::new(path, "URL has no host"));
            }
            if !u.username().is_empty() || u.password().is_some() {
                out.push(Problem::new(
                    path,
                    "URL carries credentials; name an environment variable in `credential_env` instead",
                ));
            }
            if u.query().is_some() || u.fragment().is_some() {
                out.push(Problem::new(
                    path,
                    "base URL may not have a query or fragment",
                ));
            }
        }
    }
}

fn guarantees(map: &BTreeMap<String, Bound>, base: &str, out: &mut Vec<Problem>) {
    for (key, bound) in map {
        // Paths are built only for a problem: a valid request (every routed one) builds none.
        let path = || format!("{base}/{}", escape(key));
        match bound {
            Bound::Flag(_) => {
                if !FLAGS.contains(&key.as_str()) && UNIT_INTERVAL.contains(&key.as_str()) {
                    out.push(Problem::new(
                        &path(),
                        format!("`{key}` takes a {{min, max}} bound, not a flag"),
                    ));
                }
            }
            Bound::Range(r) => {
                if FLAGS.contains(&key.as_str()) {
                    out.push(Problem::new(
                        &path(),
                        format!("`{key}` is a flag: write `{key}: true`"),
                    ));
                }
                if let (Some(min), Some(max)) = (r.min, r.max)
                    && min > max
                {
                    out.push(Problem::new(
                        &path(),
                        format!("min {min} is greater than max {max}"),
                    ));
                }
                for (side, v) in [("min", r.min), ("max", r.max)] {
                    let Some(v) = v else { continue };
                    let p = || format!("{}/{side}", path());
                    if UNIT_INTERVAL.contains(&key.as_str()) && !(0.0..=1.0).contains(&v) {
                        out.push(Problem::new(&p(), format!("{v} is outside [0, 1]")));
                    } else if v < 0.0 {
                        out.push(Problem::new(&p(), format!("{v} is negative")));
                    }
                }
            }
        }
    }
}

fn duplicates(items: &[String], path: &str, what: &str, out: &mut Vec<Problem>) {
    // A short list (a request names one to a few capabilities) is compared pairwise: cheaper than
    // hashing every item into a set.
    let short = items.len() <= 16;
    let mut seen = HashSet::new();
    for (i, item) in items.iter().enumerate() {
        let repeated = if short {
            items[..i].contains(item)
        } else {
            !seen.insert(item.as_str())
        };
        if repeated {
            out.push(Problem::new(
                &format!("{path}/{i}"),
                format!("duplicate {what} `{item}`"),
            ));
        }
    }
}

pub(crate) fn request(r: &RouteRequest) -> Vec<Problem> {
    let mut out = Vec::new();
    duplicates(
        &r.requirements.capabilities,
        "/requirements/capabilities",
        "capability",
        &mut out,
    );
    guarantees(
        &r.requirements.guarantees,
        "/requirements/guarantees",
        &mut out,
    );
    if let Some(fields) = &r.fields {
        let named = [
            ("intent", fields.intent.len()),
            ("trait", fields.trait_field.len()),
            ("rfs", fields.rfs.len()),
            ("context", fields.context.len()),
        ];
        let lens: Vec<_> = named.iter().filter(|(_, n)| *n > 0).collect();
        if let Some((first, n)) = lens.first() {
            for (name, m) in &lens[1..] {
                if m != n {
                    out.push(Problem::new(
                        &format!("/fields/{name}"),
                        format!("has {m} elements but `{first}` has {n}; field vectors must have equal length"),
                    ));
                }
            }
        }
    }
    out
}

pub(crate) fn policies(p: &PolicySet) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, rule) in p.policies.iter().enumerate() {
        if !seen.insert(rule.id.as_str()) {
            out.push(Problem::new(
                &format!("/policies/{i}/id"),
                format!("duplicate policy id `{}`", rule.id),
            ));
        }
    }
    out
}
