//! Policies as versioned configuration: put, validate, versions, history, diff, rollback.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::*;

const STRICT: &str = r#"policies:
  - id: only-eu
    description: Everything stays in the EU.
    when: "true"
    require: service.privacy.data_locality in ["local", "on_device"]
"#;

#[tokio::test]
async fn a_new_version_changes_routing_and_can_be_rolled_back() {
    let s = Server::start().await;
    let key = s
        .client_key("acme", &["classify", "search", "chat", "translate"], 2)
        .await;
    let original = s.get("/api/v1/policies", ADMIN_KEY).await;
    let v0 = original.json["version"].as_str().unwrap().to_owned();

    // Validate only: nothing changes.
    let r = s
        .yaml(Method::POST, "/api/v1/policies/validate", ADMIN_KEY, STRICT)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["is_active"], false);
    assert_eq!(
        s.get("/api/v1/policies", ADMIN_KEY).await.json["version"],
        v0.as_str()
    );

    let r = s
        .yaml(
            Method::PUT,
            "/api/v1/policies?note=eu-only",
            ADMIN_KEY,
            STRICT,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let v1 = r.json["version"].as_str().unwrap().to_owned();
    assert_eq!(r.json["previous"], v0.as_str());
    let d = s
        .post("/api/v1/route", &key, request("sentiment-de.yaml"))
        .await;
    assert_eq!(d.json["policy_version"], v1.as_str(), "{}", d.text);

    let h = s.get("/api/v1/policies/history", ADMIN_KEY).await;
    let acts = h.json["activations"].as_array().unwrap();
    assert_eq!(acts[0]["version"], v1.as_str());
    let vs = s.get("/api/v1/policies/versions", ADMIN_KEY).await;
    assert!(vs.json["versions"].as_array().unwrap().len() >= 2);
    let one = s
        .get(
            &format!(
                "/api/v1/policies/versions/{}",
                v1.trim_start_matches("sha256:")
            ),
            ADMIN_KEY,
        )
        .await;
    assert_eq!(one.json["policies"][0]["id"], "only-eu", "{}", one.text);

    let diff = s
        .get(
            &format!("/api/v1/policies/diff?from={v0}&to={v1}"),
            ADMIN_KEY,
        )
        .await;
    assert_eq!(diff.status, StatusCode::OK, "{}", diff.text);
    assert_eq!(diff.json["added"][0]["id"], "only-eu");
    assert!(!diff.json["removed"].as_array().unwrap().is_empty());

    let r = s
        .post(
            "/api/v1/policies/rollback",
            ADMIN_KEY,
            json!({"version": v0}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let d = s
        .post("/api/v1/route", &key, request("sentiment-de.yaml"))
        .await;
    assert_eq!(d.json["policy_version"], v0.as_str());
    let r = s
        .post(
            "/api/v1/policies/rollback",
            ADMIN_KEY,
            json!({"version": "sha256:00"}),
        )
        .await;
    assert_eq!(r.code(), "POLICY_VERSION_NOT_FOUND");

    let a = s.get("/api/v1/audit?action=policies.", ADMIN_KEY).await;
    let actions: Vec<&str> = a.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["action"].as_str().unwrap())
        .collect();
    // The last put is the one the server made at start from --policies.
    assert_eq!(
        actions,
        ["policies.rollback", "policies.put", "policies.put"]
    );
    assert_eq!(a.json["items"][2]["actor"], "startup");
}

#[tokio::test]
async fn invalid_policies_are_refused_with_position() {
    let s = Server::start().await;
    let before = s.get("/api/v1/policies", ADMIN_KEY).await.json["version"].clone();
    let bad = "policies:\n  - id: broken\n    when: \"request.data.sensitive &&\"\n    require: \"true\"\n";
    let r = s
        .yaml(Method::PUT, "/api/v1/policies", ADMIN_KEY, bad)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.code(), "INVALID_POLICY");
    assert!(r.text.contains("broken"), "{}", r.text);
    let undeclared =
        "policies:\n  - id: typo\n    when: \"true\"\n    require: servce.tenant == \"x\"\n";
    let r = s
        .yaml(
            Method::POST,
            "/api/v1/policies/validate",
            ADMIN_KEY,
            undeclared,
        )
        .await;
    assert_eq!(r.code(), "INVALID_POLICY", "{}", r.text);
    let r = s
        .yaml(Method::PUT, "/api/v1/policies", ADMIN_KEY, "policies: 7\n")
        .await;
    assert_eq!(r.code(), "INVALID_POLICY", "{}", r.text);
    // A regular expression that does not compile: refused by validation and by PUT, naming the
    // policy, the field and the problem, rather than failing every request the rule meets.
    let pattern = "policies:\n  - id: eu-only\n    when: \"true\"\n    require: service.id.matches(\"^eu-(\")\n";
    for (method, path) in [
        (Method::POST, "/api/v1/policies/validate"),
        (Method::PUT, "/api/v1/policies"),
    ] {
        let r = s.yaml(method, path, ADMIN_KEY, pattern).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.text);
        assert_eq!(r.code(), "INVALID_POLICY", "{path}: {}", r.text);
        assert!(
            r.text.contains("eu-only") && r.text.contains("invalid regular expression"),
            "{path}: {}",
            r.text
        );
    }
    assert_eq!(
        s.get("/api/v1/policies", ADMIN_KEY).await.json["version"],
        before
    );
}

/// A 4 KiB chain of `+` nests 2,000 levels deep: it used to overflow the stack of the thread
/// compiling it and abort the server. Now it is a 400 naming the policy, the server keeps
/// answering, and an expression at the depth limit is accepted and routes.
#[tokio::test]
async fn a_deeply_nested_expression_is_refused_and_the_server_stays_up() {
    let s = Server::start().await;
    let key = s
        .client_key("acme", &["classify", "search", "chat", "translate"], 2)
        .await;
    let deep = format!("{}1 > 0", "1 + ".repeat(1000));
    let policy = |require: &str| json!({ "policies": [{ "id": "deep", "when": "true", "require": require }] });
    for (method, path) in [
        (Method::POST, "/api/v1/policies/validate"),
        (Method::PUT, "/api/v1/policies"),
    ] {
        let r = s
            .call(method, path, Some(ADMIN_KEY), Body::Json(policy(&deep)))
            .await;
        assert_eq!(r.code(), "INVALID_POLICY", "{path}: {}", r.text);
        assert!(r.text.contains("levels deep"), "{}", r.text);
        assert!(r.text.contains("deep"), "{}", r.text);
    }
    assert_eq!(s.get("/health", ADMIN_KEY).await.status, StatusCode::OK);
    // `service.cost.per_request >= 0.0` is 4 levels (`>=`, two selects, `service`), and each
    // `+ 0.0` adds one: MAX_EXPRESSION_DEPTH levels in all.
    let levels = caio_contracts::limits::MAX_EXPRESSION_DEPTH;
    let at_limit = format!(
        "service.cost.per_request{} >= 0.0",
        " + 0.0".repeat(levels - 4)
    );
    let r = s
        .call(
            Method::PUT,
            "/api/v1/policies",
            Some(ADMIN_KEY),
            Body::Json(policy(&at_limit)),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = s
        .post("/api/v1/route", &key, request("sentiment-de.yaml"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

/// A policy whose cost grows with the request: pairwise over a list in the payload. 3,000 items
/// held a worker for 3.6 s, a 1 MB payload would have held it for hours. Now the evaluation stops
/// at the cost limit, the rule counts as violated (fail closed) with the reason in the answer,
/// and small payloads route as before.
#[tokio::test]
async fn a_policy_whose_cost_the_client_controls_is_cut_off() {
    let s = Server::start().await;
    let key = s
        .client_key("acme", &["classify", "search", "chat", "translate"], 2)
        .await;
    let policy = json!({ "policies": [{
        "id": "pairwise",
        "when": "true",
        "require": "request.payload.items.all(a, request.payload.items.all(b, a + b >= 0))"
    }] });
    let r = s
        .call(
            Method::PUT,
            "/api/v1/policies",
            Some(ADMIN_KEY),
            Body::Json(policy),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let with_items = |n: usize| {
        let mut req = request("sentiment-de.yaml");
        req["payload"]["items"] = json!((0..n).collect::<Vec<_>>());
        req
    };
    let r = s.post("/api/v1/route", &key, with_items(30)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = s.post("/api/v1/route", &key, with_items(100_000)).await;
    assert_eq!(r.code(), "NO_MATCHING_SERVICE", "{}", r.text);
    let rejected = r.json["error"]["details"]["rejected"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let by_policy: Vec<_> = rejected
        .iter()
        .filter(|x| x["reason"] == "policy_violation")
        .collect();
    assert!(!by_policy.is_empty(), "{}", r.text);
    for x in by_policy {
        let detail = x["detail"].as_str().unwrap_or("");
        assert!(detail.contains("policy `pairwise`"), "{detail}");
        assert!(
            detail.contains("cost limit of 1000000 units")
                || detail.contains("policy evaluation budget"),
            "{detail}"
        );
    }
    assert_eq!(s.get("/health", ADMIN_KEY).await.status, StatusCode::OK);
}
