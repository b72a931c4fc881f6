//! Signed webhooks: valid, unsigned, stale, wrongly signed, replayed, unknown service.

use caio_security::webhook;
use reqwest::{Method, StatusCode};

use crate::support::*;

async fn send(s: &Server, id: &str, ts: Option<u64>, sig: Option<String>, body: &str) -> Reply {
    let mut r = s
        .http
        .post(s.url(&format!("/webhooks/services/{id}/events")))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(ts) = ts {
        r = r.header(webhook::TIMESTAMP_HEADER, ts.to_string());
    }
    if let Some(sig) = sig {
        r = r.header(webhook::SIGNATURE_HEADER, sig);
    }
    Reply::from(r.send().await.unwrap()).await
}

#[tokio::test]
async fn signed_events_update_status_and_everything_else_is_refused() {
    let s = Server::start().await;
    let contract =
        fixture("services/sentiment-eu.yaml").replace("id: sentiment-eu", "id: hook-svc");
    let r = s
        .yaml(Method::POST, "/api/v1/services", ADMIN_KEY, &contract)
        .await;
    let secret = r.json["webhook_secret"].as_str().unwrap().to_owned();
    let now = caio_trace::now_ms() / 1000;
    let body = r#"{"type":"status","status":"degraded","detail":"GPU queue long"}"#;
    let sign = |ts: u64, b: &str| webhook::sign(secret.as_bytes(), ts, b.as_bytes());

    // Unsigned, stale, wrongly signed, tampered: 401 and nothing changes.
    let cases = [
        (None, None, body, "missing_timestamp"),
        (Some(now), None, body, "missing_signature"),
        (
            Some(now - 3600),
            Some(sign(now - 3600, body)),
            body,
            "stale",
        ),
        (
            Some(now),
            Some(webhook::sign(
                b"wrong-secret-wrong-secret-wrong-secret",
                now,
                body.as_bytes(),
            )),
            body,
            "bad_signature",
        ),
        (
            Some(now),
            Some(sign(now, body)),
            r#"{"type":"status","status":"down"}"#,
            "bad_signature",
        ),
    ];
    for (ts, sig, b, reason) in cases {
        let r = send(&s, "hook-svc", ts, sig, b).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{reason}: {}", r.text);
        assert_eq!(r.json["error"]["details"]["reason"], reason, "{}", r.text);
    }
    let st = s.get("/api/v1/services/hook-svc", ADMIN_KEY).await;
    assert_eq!(st.json["status"], "unknown");

    let sig = sign(now, body);
    let r = send(&s, "hook-svc", Some(now), Some(sig.clone()), body).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let st = s.get("/api/v1/services/hook-svc", ADMIN_KEY).await;
    assert_eq!(st.json["status"], "degraded");
    let l = s.get("/api/v1/services?status=degraded", ADMIN_KEY).await;
    assert_eq!(l.json["items"].as_array().unwrap().len(), 1);

    // The same call again is a replay.
    let r = send(&s, "hook-svc", Some(now), Some(sig), body).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json["error"]["details"]["reason"], "replayed");

    // An unknown service looks exactly like a bad signature.
    let r = send(&s, "no-such-svc", Some(now), Some(sign(now, body)), body).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json["error"]["details"]["reason"], "bad_signature");

    // Without headers, a known and an unknown id answer the same.
    let known = send(&s, "hook-svc", None, None, body).await;
    let unknown = send(&s, "no-such-svc", None, None, body).await;
    assert_eq!(known.status, unknown.status);
    assert_eq!(known.json["error"], unknown.json["error"]);
    let known = send(&s, "hook-svc", Some(now), Some("sha256=zz".into()), body).await;
    let unknown = send(&s, "no-such-svc", Some(now), Some("sha256=zz".into()), body).await;
    assert_eq!(known.json["error"], unknown.json["error"]);

    // A signed but malformed event is a 400.
    let bad = r#"{"type":"status","status":"sleepy"}"#;
    let r = send(&s, "hook-svc", Some(now), Some(sign(now, bad)), bad).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);

    // Rotating the secret invalidates the old one.
    let rot = s
        .call(
            Method::POST,
            "/api/v1/services/hook-svc/webhook-secret",
            Some(ADMIN_KEY),
            Body::None,
        )
        .await;
    assert_eq!(rot.status, StatusCode::OK);
    let hb = r#"{"type":"heartbeat"}"#;
    let r = send(&s, "hook-svc", Some(now), Some(sign(now, hb)), hb).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let new = rot.json["webhook_secret"].as_str().unwrap();
    let r = send(
        &s,
        "hook-svc",
        Some(now),
        Some(webhook::sign(new.as_bytes(), now, hb.as_bytes())),
        hb,
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
}

#[tokio::test]
async fn a_service_that_reports_itself_down_is_not_routed_to_until_it_reports_again() {
    let s = Server::start().await;
    let key = s
        .client_key("acme", &["classify", "search", "chat", "translate"], 2)
        .await;
    let route = || s.post("/api/v1/route", &key, request("sentiment-de.yaml"));
    let r = route().await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["service_id"], "sentiment-eu");
    let rot = s
        .call(
            Method::POST,
            "/api/v1/services/sentiment-eu/webhook-secret",
            Some(ADMIN_KEY),
            Body::None,
        )
        .await;
    assert_eq!(rot.status, StatusCode::OK, "{}", rot.text);
    let secret = rot.json["webhook_secret"].as_str().unwrap().to_owned();
    let event = |body: &'static str| {
        let now = caio_trace::now_ms() / 1000;
        let sig = webhook::sign(secret.as_bytes(), now, body.as_bytes());
        send(&s, "sentiment-eu", Some(now), Some(sig), body)
    };

    let r = event(r#"{"type":"status","status":"down","detail":"maintenance"}"#).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    // The only service that met the request is out: no route, and the proof says why.
    let r = route().await;
    assert_eq!(r.json["error"]["code"], "NO_MATCHING_SERVICE", "{}", r.text);
    let rejected = r.json["error"]["details"]["rejected"].as_array().unwrap();
    let eu = rejected
        .iter()
        .find(|x| x["service_id"] == "sentiment-eu")
        .unwrap();
    assert_eq!(eu["reason"], "circuit_open", "{eu}");
    assert_eq!(eu["step"], "health", "{eu}");
    let health = s.get("/api/v1/gateway/health", ADMIN_KEY).await;
    let board = health.json["services"].as_array().unwrap();
    let eu = board
        .iter()
        .find(|x| x["service_id"] == "sentiment-eu")
        .unwrap();
    assert_eq!(eu["circuit"], "open", "{eu}");
    assert_eq!(eu["reported_down"], true, "{eu}");
    // Degraded is informational while the service is up; a heartbeat after `down` lets it back
    // in (half-open: the next call is its trial).
    let r = event(r#"{"type":"heartbeat"}"#).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let r = route().await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["service_id"], "sentiment-eu");
    let r = event(r#"{"type":"status","status":"degraded"}"#).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let r = route().await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}
