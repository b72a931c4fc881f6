//! Authentication failures, roles and tenant isolation.

use caio_api::openapi::ENDPOINTS;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::*;

fn now_s() -> u64 {
    caio_trace::now_ms() / 1000
}

fn concrete(path: &str) -> String {
    path.replace("{id}", "x").replace("{version}", "sha256:00")
}

fn method(m: &str) -> Method {
    Method::from_bytes(m.to_uppercase().as_bytes()).unwrap()
}

#[tokio::test]
async fn every_protected_endpoint_refuses_a_missing_credential() {
    let s = Server::start().await;
    for e in ENDPOINTS.iter().filter(|e| e.auth) {
        let r = s
            .call(method(e.method), &concrete(e.path), None, Body::None)
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "{} {}",
            e.method,
            e.path
        );
        assert_eq!(r.code(), "UNAUTHENTICATED");
        assert_eq!(r.json["error"]["details"]["reason"], "missing");
        assert!(r.header("www-authenticate").is_some());
    }
    // And with the admin key none of them says 401.
    for e in ENDPOINTS.iter().filter(|e| e.auth) {
        let r = s
            .call(
                method(e.method),
                &concrete(e.path),
                Some(ADMIN_KEY),
                Body::None,
            )
            .await;
        assert_ne!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "{} {}",
            e.method,
            e.path
        );
    }
}

#[tokio::test]
async fn public_endpoints_need_no_credential() {
    let s = Server::start().await;
    for path in [
        "/health",
        "/health/ready",
        "/metrics",
        "/api/v1/version",
        "/openapi.json",
    ] {
        let r = s.call(Method::GET, path, None, Body::None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn malformed_and_unknown_credentials_are_refused() {
    let s = Server::start().await;
    let cases: &[(&str, &str)] = &[
        ("Basic dXNlcjpwYXNz", "malformed"),
        ("Bearer", "malformed"),
        ("Bearer ", "malformed"),
        (
            "Bearer caio_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "unknown_key",
        ),
        ("Bearer caio_short", "malformed"),
        (
            "Bearer not-the-admin-key-but-long-enough-to-look-like-one",
            "invalid_key",
        ),
        ("Bearer a.b.c", "malformed"),
    ];
    for (header, reason) in cases {
        let r = s
            .http
            .get(s.url("/api/v1/services"))
            .header("authorization", *header)
            .send()
            .await
            .unwrap();
        let r = Reply::from(r).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{header}");
        assert_eq!(
            r.json["error"]["details"]["reason"], *reason,
            "{header}: {}",
            r.text
        );
        assert!(!r.text.contains("dXNlcjpwYXNz"), "the credential is echoed");
    }
}

#[tokio::test]
async fn api_keys_work_until_revoked() {
    let s = Server::start().await;
    let r = s
        .post(
            "/api/v1/keys",
            ADMIN_KEY,
            json!({"name": "ops", "role": "operator", "tenant": "acme"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let key = r.json["key"].as_str().unwrap().to_owned();
    let id = r.json["record"]["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("caio_"));
    // The key is never shown again: neither the list nor the record carries it or its hash.
    let list = s.get("/api/v1/keys", ADMIN_KEY).await;
    assert!(!list.text.contains(&key));
    assert!(!list.text.contains("sha256:"), "{}", list.text);
    assert_eq!(s.get("/api/v1/services", &key).await.status, StatusCode::OK);

    let r = s
        .call(
            Method::DELETE,
            &format!("/api/v1/keys/{id}"),
            Some(ADMIN_KEY),
            Body::None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = s.get("/api/v1/services", &key).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json["error"]["details"]["reason"], "revoked");
    // A key with one character changed is not the key.
    let mut tampered = key.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let r = s.get("/api/v1/services", &tampered).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

fn hs256(claims: serde_json::Value) -> String {
    caio_security::jwt::sign_hs256(&claims, HS256_SECRET.as_bytes())
}

#[tokio::test]
async fn jwts_are_checked() {
    let s = Server::start().await;
    let now = now_s();
    let good = hs256(
        json!({"sub": "bob", "exp": now + 600, "role": "client", "tenant": "acme",
                            "permissions": ["classify"], "trust_level": 2}),
    );
    let r = s
        .post("/api/v1/route", &good, request("sentiment-de.yaml"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["principal"]["id"], "jwt:bob");
    assert_eq!(r.json["principal"]["tenant"], "acme");

    let expired = hs256(json!({"sub": "bob", "exp": now - 3600}));
    let not_yet = hs256(json!({"sub": "bob", "exp": now + 7200, "nbf": now + 3600}));
    let wrong_secret = caio_security::jwt::sign_hs256(
        &json!({"sub": "bob", "exp": now + 600}),
        b"another-secret-of-sufficient-length-1234",
    );
    // alg none: header {"alg":"none","typ":"JWT"}, empty signature.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let none = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(json!({"sub": "mallory", "exp": now + 600, "role": "admin"}).to_string())
    );
    // A payload swapped under a valid signature.
    let parts: Vec<&str> = good.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(json!({"sub": "bob", "exp": now + 600, "role": "admin"}).to_string()),
        parts[2]
    );
    for (token, reason) in [
        (expired, "expired"),
        (not_yet, "not_yet_valid"),
        (wrong_secret, "bad_signature"),
        (none, "unsupported_algorithm"),
        (forged, "bad_signature"),
    ] {
        let r = s.get("/api/v1/services", &token).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{reason}: {}", r.text);
        assert_eq!(r.json["error"]["details"]["reason"], reason, "{}", r.text);
    }
}

#[tokio::test]
async fn eddsa_jwts_and_algorithm_confusion() {
    let dir = tempfile::tempdir().unwrap();
    let signing = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    use ed25519_dalek::pkcs8::EncodePublicKey;
    let pem = signing
        .verifying_key()
        .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .unwrap();
    let pem_path = dir.path().join("jwt.pem");
    std::fs::write(&pem_path, &pem).unwrap();
    let s = Server::start_with(|c| {
        c.auth.jwt.hs256_secret = None;
        c.auth.jwt.eddsa_public_key_files = vec![pem_path.clone()];
        c.auth.jwt.issuer = Some("https://issuer.example".into());
        c.auth.jwt.audience = Some("caio".into());
    })
    .await;
    let now = now_s();
    let claims = json!({"sub": "svc", "exp": now + 600, "iss": "https://issuer.example",
                        "aud": ["other", "caio"], "role": "operator", "tenant": "acme"});
    let good = caio_security::jwt::sign_eddsa(&claims, &signing);
    assert_eq!(
        s.get("/api/v1/services", &good).await.status,
        StatusCode::OK
    );

    // HS256 "signed" with the public key bytes: algorithm confusion must not work.
    let confused = caio_security::jwt::sign_hs256(&claims, pem.as_bytes());
    let r = s.get("/api/v1/services", &confused).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    let mut wrong_aud = claims.clone();
    wrong_aud["aud"] = json!("someone-else");
    let mut wrong_iss = claims.clone();
    wrong_iss["iss"] = json!("https://evil.example");
    for (c, reason) in [(wrong_aud, "wrong_audience"), (wrong_iss, "wrong_issuer")] {
        let t = caio_security::jwt::sign_eddsa(&c, &signing);
        let r = s.get("/api/v1/services", &t).await;
        assert_eq!(r.json["error"]["details"]["reason"], reason, "{}", r.text);
    }
    let other = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    let r = s
        .get(
            "/api/v1/services",
            &caio_security::jwt::sign_eddsa(&claims, &other),
        )
        .await;
    assert_eq!(r.json["error"]["details"]["reason"], "bad_signature");
}

#[tokio::test]
async fn roles_limit_what_a_credential_may_do() {
    let s = Server::start().await;
    let client = s.client_key("acme", &["classify"], 2).await;
    let operator = s
        .key(json!({"name": "op", "role": "operator", "tenant": "acme"}))
        .await;
    let service = s
        .key(json!({"name": "svc", "role": "service", "tenant": "acme", "service_id": "my-svc"}))
        .await;
    let contract = fixture("services/sentiment-eu.yaml");
    let mine = contract
        .replace("id: sentiment-eu", "id: my-svc")
        .replace("tenant: public", "tenant: acme");
    let theirs = contract
        .replace("id: sentiment-eu", "id: not-mine")
        .replace("tenant: public", "tenant: acme");

    // Clients discover and route; they do not register, read policies, or manage keys.
    let r = s
        .yaml(Method::POST, "/api/v1/services", &client, &mine)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(r.code(), "FORBIDDEN");
    assert_eq!(
        s.get("/api/v1/policies", &client).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        s.get("/api/v1/keys", &client).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        s.post("/api/v1/discover", &client, request("sentiment-de.yaml"))
            .await
            .status,
        StatusCode::OK
    );
    // A service credential registers and updates its own id only.
    let r = s
        .yaml(Method::POST, "/api/v1/services", &service, &mine)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = s
        .yaml(Method::POST, "/api/v1/services", &service, &theirs)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = s
        .yaml(Method::PUT, "/api/v1/services/my-svc", &service, &mine)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        s.post("/api/v1/route", &service, request("sentiment-de.yaml"))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    // Operators manage services and policies, not keys or the audit log.
    let r = s
        .yaml(Method::POST, "/api/v1/services", &operator, &theirs)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(
        s.get("/api/v1/policies", &operator).await.status,
        StatusCode::OK
    );
    assert_eq!(
        s.get("/api/v1/keys", &operator).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        s.get("/api/v1/audit", &operator).await.status,
        StatusCode::FORBIDDEN
    );
    // An operator of acme cannot register for globex.
    let globex = contract
        .replace("id: sentiment-eu", "id: globex-thing")
        .replace("tenant: public", "tenant: globex");
    let r = s
        .yaml(Method::POST, "/api/v1/services", &operator, &globex)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
}

#[tokio::test]
async fn another_tenants_service_is_invisible() {
    let s = Server::start().await;
    let acme = s.client_key("acme", &["classify", "chat"], 2).await;
    let globex_op = s
        .key(json!({"name": "gop", "role": "operator", "tenant": "globex"}))
        .await;
    let acme_op = s
        .key(json!({"name": "aop", "role": "operator", "tenant": "acme"}))
        .await;
    let snapshot = s.state.registry().snapshot();
    let acme_only: Vec<String> = snapshot
        .entries()
        .iter()
        .filter(|e| e.contract.service.tenant == "acme")
        .map(|e| e.id.to_string())
        .collect();
    assert!(!acme_only.is_empty());
    for id in &acme_only {
        // 404, not 403, for another tenant.
        let r = s.get(&format!("/api/v1/services/{id}"), &globex_op).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
        assert_eq!(r.code(), "SERVICE_NOT_FOUND");
        let r = s
            .call(
                Method::DELETE,
                &format!("/api/v1/services/{id}"),
                Some(&globex_op),
                Body::None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(
            s.get(&format!("/api/v1/services/{id}"), &acme_op)
                .await
                .status,
            StatusCode::OK
        );
    }
    let list = s.get("/api/v1/services?limit=1000", &globex_op).await;
    for id in &acme_only {
        assert!(
            !list.text.contains(&format!("\"{id}\"")),
            "{id} listed for globex"
        );
    }
    // Routing for globex never mentions acme's services, not even as rejected.
    let globex_client = s.client_key("globex", &["classify", "chat"], 2).await;
    let r = s
        .post(
            "/api/v1/route",
            &globex_client,
            request("sentiment-de.yaml"),
        )
        .await;
    for id in &acme_only {
        assert!(
            !r.text.contains(&format!("\"{id}\"")),
            "{id} leaked: {}",
            r.text
        );
    }
    // ... while acme's own decision can name them.
    let r = s
        .post("/api/v1/discover", &acme, request("sentiment-de.yaml"))
        .await;
    assert!(
        acme_only.iter().any(|id| r.text.contains(id.as_str())),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn traces_are_scoped_to_tenant_and_principal() {
    let s = Server::start().await;
    let alice = s.client_key("acme", &["classify"], 2).await;
    let carol = s.client_key("acme", &["classify"], 2).await;
    let globex_op = s
        .key(json!({"name": "gop", "role": "operator", "tenant": "globex"}))
        .await;
    let acme_op = s
        .key(json!({"name": "aop", "role": "operator", "tenant": "acme"}))
        .await;
    let r = s
        .post("/api/v1/route", &alice, request("sentiment-de.yaml"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let id = r.json["decision_id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/traces/{id}");
    assert_eq!(s.get(&path, &alice).await.status, StatusCode::OK);
    assert_eq!(s.get(&path, &acme_op).await.status, StatusCode::OK);
    assert_eq!(s.get(&path, ADMIN_KEY).await.status, StatusCode::OK);
    assert_eq!(s.get(&path, &carol).await.status, StatusCode::NOT_FOUND);
    assert_eq!(s.get(&path, &globex_op).await.status, StatusCode::NOT_FOUND);
    let page = s.get("/api/v1/traces", &globex_op).await;
    assert_eq!(
        page.json["items"].as_array().unwrap().len(),
        0,
        "{}",
        page.text
    );
    let page = s.get("/api/v1/traces", &carol).await;
    assert_eq!(page.json["items"].as_array().unwrap().len(), 0);
    let page = s.get("/api/v1/traces", &acme_op).await;
    assert_eq!(page.json["items"].as_array().unwrap().len(), 1);
    // A token whose `sub` is alice's key id, same tenant and role, is a different principal.
    let alice_key_id = &alice["caio_".len().."caio_".len() + 16];
    assert_eq!(
        page.json["items"][0]["principal_id"].as_str(),
        Some(alice_key_id),
        "{}",
        page.text
    );
    let impostor = hs256(
        json!({"sub": alice_key_id, "exp": now_s() + 600, "role": "client",
        "tenant": "acme", "permissions": ["classify"], "trust_level": 2}),
    );
    assert_eq!(s.get(&path, &impostor).await.status, StatusCode::NOT_FOUND);
    let page = s.get("/api/v1/traces", &impostor).await;
    assert_eq!(
        page.json["items"].as_array().unwrap().len(),
        0,
        "{}",
        page.text
    );
}
