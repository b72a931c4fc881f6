//! Golden decisions: every case under fixtures/golden/cases is routed and must reproduce, byte for
//! byte, the decision (or error) recorded under fixtures/golden/decisions, satisfy the case's
//! hand-written expectations, and verify. `CAIO_UPDATE_GOLDEN=1` rewrites the recorded files.

use std::collections::BTreeMap;
use std::fs;

use serde::Deserialize;

use crate::support;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    description: String,
    #[serde(default)]
    principal: Option<String>,
    request: serde_json::Value,
    expect: Expect,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    #[serde(default)]
    service_id: Option<String>,
    #[serde(default)]
    error: Option<String>,
    /// service id → `step/reason`.
    #[serde(default)]
    rejected: BTreeMap<String, String>,
}

#[test]
fn golden_decisions_replay_exactly() {
    let dir = support::fixtures().join("golden");
    let update = std::env::var_os("CAIO_UPDATE_GOLDEN").is_some();
    let router = support::router();
    let contracts = support::contracts();
    let policies = support::policy_set();
    let mut names: Vec<_> = fs::read_dir(dir.join("cases"))
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    names.sort();
    assert!(
        names.len() >= 20,
        "at least 20 golden cases, found {}",
        names.len()
    );
    let mut failures = Vec::new();
    for path in &names {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{e}"));
        let case: Case = serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{stem}: {e}"));
        assert!(
            !case.description.is_empty(),
            "{stem}: a case says what it shows"
        );
        let request_text = serde_json::to_string(&case.request).unwrap_or_default();
        let request =
            caio_contracts::parse_request(&stem, &request_text, caio_contracts::Format::Json)
                .unwrap_or_else(|e| panic!("{e}"));
        let principal = match &case.principal {
            Some(p) => support::principal(p),
            None => caio_contracts::Principal::cli_default(),
        };
        let outcome = router.route(&request, &principal);
        let (actual, chosen, error, rejected) = match &outcome {
            Ok(d) => (
                serde_json::to_value(d).unwrap_or_default(),
                Some(d.service_id.to_string()),
                None,
                d.rejected.to_vec(),
            ),
            Err(e) => {
                let rejected = match e {
                    caio_gateway::RouteError::NoMatchingService(n) => n.rejected.clone(),
                    caio_gateway::RouteError::Internal(m) => panic!("{stem}: {m}"),
                };
                (e.to_body(), None, Some(e.code().to_owned()), rejected)
            }
        };

        // The hand-written expectations.
        if case.expect.service_id != chosen {
            failures.push(format!(
                "{stem}: expected service {:?}, got {chosen:?}",
                case.expect.service_id
            ));
        }
        if case.expect.error != error {
            failures.push(format!(
                "{stem}: expected error {:?}, got {error:?}",
                case.expect.error
            ));
        }
        for (id, want) in &case.expect.rejected {
            let got = rejected
                .iter()
                .find(|r| r.service_id.as_ref() == id.as_str())
                .map(|r| format!("{}/{}", r.step.as_str(), r.reason));
            if got.as_deref() != Some(want.as_str()) {
                failures.push(format!(
                    "{stem}: expected {id} rejected as {want}, got {got:?}"
                ));
            }
        }

        // Byte-for-byte replay of the recorded decision.
        let file = dir.join("decisions").join(format!("{stem}.json"));
        let rendered = format!(
            "{}\n",
            serde_json::to_string_pretty(&actual).unwrap_or_default()
        );
        if update {
            fs::write(&file, &rendered).unwrap_or_else(|e| panic!("{e}"));
        } else {
            match fs::read_to_string(&file) {
                Ok(recorded) if recorded == rendered => {}
                Ok(_) => failures.push(format!("{stem}: decision differs from {} (CAIO_UPDATE_GOLDEN=1 rewrites it after review)", file.display())),
                Err(e) => failures.push(format!("{stem}: {}: {e}", file.display())),
            }
        }

        // Every golden decision verifies offline.
        if let Ok(d) = &outcome
            && let Err(e) = caio_gateway::verify(d, contracts.clone(), &policies)
        {
            failures.push(format!("{stem}: does not verify: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
