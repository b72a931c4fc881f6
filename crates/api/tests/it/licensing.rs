//! License enforcement: keys issued with caio-licensing's issuer (what caio-license-admin runs),
//! verified by the server with the public key only, in each enforcement mode.

use caio_config::{LicenseEnforcement, Secret};
use caio_licensing::{IssueRequest, Issuer, Limits, RevocationList, public_key_to_pem};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{ADMIN_KEY, Body, Server, request};

fn now() -> i64 {
    (caio_trace::now_ms() / 1000) as i64
}

fn issuer() -> Issuer {
    Issuer::new(caio_licensing::generate_signing_key().unwrap())
}

fn key(issuer: &Issuer, not_before: i64, expires_at: i64, limits: Limits) -> String {
    issuer
        .issue(
            &IssueRequest {
                customer_id: "acme-corp".into(),
                tier: "enterprise".into(),
                not_before,
                expires_at,
                features: vec!["execution".into()],
                limits,
            },
            now(),
        )
        .unwrap()
        .0
}

async fn server(
    issuer: &Issuer,
    mode: LicenseEnforcement,
    license: Option<String>,
    tweak: impl FnOnce(&mut caio_config::Config),
) -> Server {
    let pem = public_key_to_pem(&issuer.public_key()).unwrap();
    Server::start_with(|c| {
        c.license.enforcement = mode;
        c.license.public_key = Some(pem);
        c.license.key = license.map(|k| Secret::new(&k));
        tweak(c);
    })
    .await
}

/// An enforcing server with `license` and a client key of tenant acme.
async fn enforced(vendor: &Issuer, license: String) -> (Server, String) {
    let s = server(vendor, LicenseEnforcement::Enforced, Some(license), |_| {}).await;
    let client = s.client_key("acme", &["classify"], 2).await;
    (s, client)
}

async fn route(s: &Server, key: &str) -> crate::support::Reply {
    s.post("/api/v1/route", key, request("sentiment-de.yaml"))
        .await
}

#[tokio::test]
async fn enforced_without_a_valid_license_refuses_routing_but_not_operations() {
    let vendor = issuer();
    let s = server(&vendor, LicenseEnforcement::Enforced, None, |_| {}).await;
    let client = s.client_key("acme", &["classify"], 2).await;
    let r = route(&s, &client).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.code(), "LICENSE_INVALID");
    assert_eq!(r.json["error"]["details"]["reason"], "missing");
    let r = s
        .post(
            "/api/v1/execute",
            &client,
            json!({"request": request("sentiment-de.yaml")}),
        )
        .await;
    assert_eq!(r.code(), "LICENSE_INVALID");
    for path in ["/health", "/health/ready", "/metrics", "/api/v1/version"] {
        let r = s.call(Method::GET, path, None, Body::None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
    }
    let st = s.get("/api/v1/licensing/status", ADMIN_KEY).await;
    assert_eq!(st.status, StatusCode::OK);
    assert_eq!(st.json["valid"], false);
    assert_eq!(st.json["enforcement"], "enforced");

    // Activation at run time, without a restart; a refused key changes nothing.
    let bad = s
        .post(
            "/api/v1/licensing/activate",
            ADMIN_KEY,
            json!({"key": "CAIO-v1-abc.def"}),
        )
        .await;
    assert_eq!(bad.code(), "LICENSE_INVALID");
    assert_eq!(bad.json["error"]["details"]["reason"], "v1_key");
    let foreign = key(&issuer(), now() - 10, now() + 86_400, Limits::default());
    let bad = s
        .post(
            "/api/v1/licensing/activate",
            ADMIN_KEY,
            json!({"key": foreign}),
        )
        .await;
    assert_eq!(
        bad.json["error"]["details"]["reason"],
        "unknown_signing_key"
    );
    let r = s
        .post("/api/v1/licensing/activate", &client, json!({"key": "x"}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let good = key(&vendor, now() - 10, now() + 86_400, Limits::default());
    let r = s
        .post(
            "/api/v1/licensing/activate",
            ADMIN_KEY,
            json!({"key": good}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["valid"], true);
    assert_eq!(r.json["license"]["customer_id"], "acme-corp");
    assert_eq!(r.json["license"]["usage"]["instances"], 1);
    assert!(!r.text.contains(&good), "the key itself is never shown");
    let r = route(&s, &client).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.header("x-caio-license-warning").is_none());
    let audit = s
        .get("/api/v1/audit?action=license.activate", ADMIN_KEY)
        .await;
    assert_eq!(audit.json["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn permissive_mode_warns_and_counts() {
    let vendor = issuer();
    let s = server(&vendor, LicenseEnforcement::Permissive, None, |_| {}).await;
    let client = s.client_key("acme", &["classify"], 2).await;
    let r = route(&s, &client).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(
        r.header("x-caio-license-warning")
            .unwrap()
            .contains("no valid license")
    );
    let m = s.call(Method::GET, "/metrics", None, Body::None).await;
    assert!(
        m.text.contains("caio_license_warnings_total 1"),
        "{}",
        m.text
    );
}

#[tokio::test]
async fn expiry_grace_and_revocation() {
    let vendor = issuer();
    // Expired a day ago, 7-day grace: works with a warning.
    let in_grace = key(
        &vendor,
        now() - 10 * 86_400,
        now() - 86_400,
        Limits::default(),
    );
    let (s, client) = enforced(&vendor, in_grace).await;
    let r = route(&s, &client).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(
        r.header("x-caio-license-warning")
            .unwrap()
            .contains("expired")
    );
    let st = s.get("/api/v1/licensing/status", ADMIN_KEY).await;
    assert_eq!(st.json["license"]["state"], "expired_in_grace");

    // Expired beyond its grace: refused.
    let long_gone = key(
        &vendor,
        now() - 30 * 86_400,
        now() - 20 * 86_400,
        Limits::default(),
    );
    let (s, client) = enforced(&vendor, long_gone).await;
    let r = route(&s, &client).await;
    assert_eq!(
        r.json["error"]["details"]["reason"], "expired",
        "{}",
        r.text
    );

    // Not yet valid.
    let future = key(
        &vendor,
        now() + 86_400,
        now() + 2 * 86_400,
        Limits::default(),
    );
    let (s, client) = enforced(&vendor, future).await;
    assert_eq!(
        route(&s, &client).await.json["error"]["details"]["reason"],
        "not_yet_valid"
    );

    // Revoked in the vendor's signed list.
    let revoked = key(&vendor, now() - 10, now() + 86_400, Limits::default());
    let id = caio_licensing::decode_unverified(&revoked).unwrap().key_id;
    let mut list = RevocationList::new(vendor.key_id(), now());
    vendor
        .revoke(&mut list, &id, "contract ended", now())
        .unwrap();
    let doc = vendor.sign_revocation_list(&list, now()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revoked.json");
    std::fs::write(&path, doc).unwrap();
    let s = server(&vendor, LicenseEnforcement::Enforced, Some(revoked), |c| {
        c.license.revocations = Some(path.clone());
    })
    .await;
    let client = s.client_key("acme", &["classify"], 2).await;
    assert_eq!(
        route(&s, &client).await.json["error"]["details"]["reason"],
        "revoked"
    );
}

#[tokio::test]
async fn entitlements_cap_services_and_daily_requests() {
    let vendor = issuer();
    let limits = Limits {
        max_instances: Some(2),
        max_services: Some(16),
        max_requests_per_day: Some(2),
    };
    let k = key(&vendor, now() - 10, now() + 86_400, limits);
    let (s, client) = enforced(&vendor, k).await;
    assert_eq!(route(&s, &client).await.status, StatusCode::OK);
    assert_eq!(route(&s, &client).await.status, StatusCode::OK);
    let r = route(&s, &client).await;
    assert_eq!(r.code(), "LICENSE_LIMIT");
    assert_eq!(r.json["error"]["details"]["limit"], "max_requests_per_day");

    // 15 fixture services: one more fits, the next does not.
    let contract = |id: &str| {
        crate::support::fixture("services/sentiment-fast.yaml").replace("sentiment-fast", id)
    };
    let r = s
        .yaml(
            Method::POST,
            "/api/v1/services",
            ADMIN_KEY,
            &contract("extra-1"),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = s
        .yaml(
            Method::POST,
            "/api/v1/services",
            ADMIN_KEY,
            &contract("extra-2"),
        )
        .await;
    assert_eq!(r.code(), "LICENSE_LIMIT", "{}", r.text);
    assert_eq!(r.json["error"]["details"]["limit"], "max_services");
}

#[tokio::test]
async fn off_checks_nothing_and_a_bad_public_key_refuses_to_start() {
    let s = Server::start().await;
    let client = s.client_key("acme", &["classify"], 2).await;
    let r = route(&s, &client).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.header("x-caio-license-warning").is_none());
    let dir = tempfile::tempdir().unwrap();
    let mut c = crate::support::config(dir.path());
    c.license.enforcement = LicenseEnforcement::Enforced;
    c.license.public_key =
        Some("-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n".into());
    let err = caio_api::AppState::build(c).unwrap_err().to_string();
    assert!(err.contains("license.public_key"), "{err}");
    let mut c = crate::support::config(dir.path());
    c.license.enforcement = LicenseEnforcement::Enforced;
    let err = caio_api::AppState::build(c).unwrap_err().to_string();
    assert!(err.contains("CAIO_LICENSE_PUBLIC_KEY"), "{err}");
}

#[tokio::test]
async fn features_switch_execution_on_and_instances_are_counted() {
    let vendor = issuer();
    let routing_only = vendor
        .issue(
            &IssueRequest {
                customer_id: "small-co".into(),
                tier: "routing".into(),
                not_before: now() - 10,
                expires_at: now() + 86_400,
                features: vec![],
                limits: Limits::default(),
            },
            now(),
        )
        .unwrap()
        .0;
    let (s, client) = enforced(&vendor, routing_only).await;
    assert_eq!(route(&s, &client).await.status, StatusCode::OK);
    let r = s
        .post(
            "/api/v1/execute",
            &client,
            json!({"request": request("sentiment-de.yaml")}),
        )
        .await;
    assert_eq!(r.code(), "LICENSE_LIMIT", "{}", r.text);
    assert_eq!(r.json["error"]["details"]["feature"], "execution");
    let r = s
        .post(
            "/v1/chat/completions",
            &client,
            json!({"model": "chat_completion", "messages": []}),
        )
        .await;
    assert_eq!(r.code(), "LICENSE_LIMIT");

    // A key allowing no instance at all cannot be activated here.
    let none = key(
        &vendor,
        now() - 10,
        now() + 86_400,
        Limits {
            max_instances: Some(0),
            ..Limits::default()
        },
    );
    let r = s
        .post(
            "/api/v1/licensing/activate",
            ADMIN_KEY,
            json!({"key": none}),
        )
        .await;
    assert_eq!(
        r.json["error"]["details"]["reason"], "max_instances",
        "{}",
        r.text
    );
    // The license in force is unchanged.
    let st = s.get("/api/v1/licensing/status", ADMIN_KEY).await;
    assert_eq!(st.json["license"]["tier"], "routing");
}
