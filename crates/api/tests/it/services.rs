//! Service registration over HTTP: YAML and JSON, validation errors, conflicts, filters, audit.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

fn contract(id: &str) -> String {
    fixture("services/sentiment-eu.yaml").replace("id: sentiment-eu", &format!("id: {id}"))
}

#[tokio::test]
async fn register_get_update_delete() {
    let s = Server::start().await;
    let r = s
        .yaml(
            Method::POST,
            "/api/v1/services",
            ADMIN_KEY,
            &contract("new-svc"),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert!(r.json["webhook_secret"].as_str().unwrap().len() >= 64);
    let v1 = r.json["registry_version"].as_str().unwrap().to_owned();

    let r = s.get("/api/v1/services/new-svc", ADMIN_KEY).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["contract"]["service"]["id"], "new-svc");
    assert_eq!(r.json["status"], "unknown");
    assert!(!r.text.contains("webhook_secret"));

    // The same contract as JSON, registered twice: 409.
    let as_json: Value = serde_norway::from_str(&contract("new-svc")).unwrap();
    let r = s.post("/api/v1/services", ADMIN_KEY, as_json.clone()).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(r.code(), "SERVICE_EXISTS");

    let mut changed = as_json.clone();
    changed["service"]["version"] = json!("2.0.0");
    let r = s
        .call(
            Method::PUT,
            "/api/v1/services/new-svc",
            Some(ADMIN_KEY),
            Body::Json(changed.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_ne!(r.json["registry_version"].as_str().unwrap(), v1);
    let r = s
        .call(
            Method::PUT,
            "/api/v1/services/other-id",
            Some(ADMIN_KEY),
            Body::Json(changed),
        )
        .await;
    assert_eq!(r.code(), "ID_MISMATCH");

    let r = s
        .call(
            Method::DELETE,
            "/api/v1/services/new-svc",
            Some(ADMIN_KEY),
            Body::None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = s.get("/api/v1/services/new-svc", ADMIN_KEY).await;
    assert_eq!(r.code(), "SERVICE_NOT_FOUND");
    let r = s
        .call(
            Method::DELETE,
            "/api/v1/services/new-svc",
            Some(ADMIN_KEY),
            Body::None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // Every change is in the audit log with before/after digests.
    let a = s.get("/api/v1/audit?target=new-svc", ADMIN_KEY).await;
    let items = a.json["items"].as_array().unwrap();
    let actions: Vec<&str> = items
        .iter()
        .map(|i| i["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["service.delete", "service.update", "service.register"],
        "{}",
        a.text
    );
    assert!(items[1]["before"].as_str().unwrap().starts_with("sha256:"));
    assert!(items[1]["after"].as_str().unwrap().starts_with("sha256:"));
    assert_ne!(items[1]["before"], items[1]["after"]);
    assert_eq!(items[0]["actor"], "bootstrap-admin");
    let a = s.get("/api/v1/audit?action=service.", ADMIN_KEY).await;
    assert_eq!(a.json["items"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn invalid_contracts_name_field_and_line() {
    let s = Server::start().await;
    let bad = contract("bad-svc").replace("version: 1.4.0", "version: one");
    let r = s
        .yaml(Method::POST, "/api/v1/services", ADMIN_KEY, &bad)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.code(), "INVALID_CONTRACT");
    let p = &r.json["error"]["details"]["problems"][0];
    assert_eq!(p["path"], "/service/version", "{}", r.text);
    assert!(p["line"].as_u64().unwrap() > 1);

    let r = s
        .call(
            Method::POST,
            "/api/v1/services",
            Some(ADMIN_KEY),
            Body::Raw("application/json", "{\"apiVersion\": "),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = s
        .call(
            Method::POST,
            "/api/v1/services",
            Some(ADMIN_KEY),
            Body::Raw("application/yaml", "a: &a [*a, *a]\nb: *a\n"),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = s
        .call(
            Method::POST,
            "/api/v1/services",
            Some(ADMIN_KEY),
            Body::Raw("application/json", ""),
        )
        .await;
    assert_eq!(r.code(), "INVALID_BODY");
}

#[tokio::test]
async fn list_filters_and_pages() {
    let s = Server::start().await;
    let all = s.get("/api/v1/services?limit=1000", ADMIN_KEY).await;
    let n = all.json["items"].as_array().unwrap().len();
    assert_eq!(n, s.state.registry().snapshot().len());
    let r = s
        .get("/api/v1/services?capability=sentiment_analysis", ADMIN_KEY)
        .await;
    let items = r.json["items"].as_array().unwrap();
    assert!(!items.is_empty());
    assert!(items.iter().all(|i| {
        i["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("sentiment_analysis"))
    }));
    let r = s.get("/api/v1/services?tenant=acme", ADMIN_KEY).await;
    assert!(
        r.json["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["tenant"] == "acme")
    );
    let mut seen = 0;
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/api/v1/services?limit=4&after={a}"),
            None => "/api/v1/services?limit=4".to_owned(),
        };
        let p = s.get(&path, ADMIN_KEY).await;
        seen += p.json["items"].as_array().unwrap().len();
        match p.json["next_after"].as_str() {
            Some(a) => after = Some(a.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, n);
    let r = s.get("/api/v1/services?status=sleeping", ADMIN_KEY).await;
    assert_eq!(r.code(), "INVALID_QUERY");
    let r = s.get("/api/v1/services?bogus=1", ADMIN_KEY).await;
    assert_eq!(r.code(), "INVALID_QUERY");
}
