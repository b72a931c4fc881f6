//! Tests of the JWT verifier: good tokens, every rejection rule, algorithm confusion and hostile
//! token text.

use super::*;
use ed25519_dalek::pkcs8::EncodePublicKey;
use proptest::prelude::*;
use serde_json::{Value, json};

const NOW: u64 = 1_700_000_000;
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-hs256";

fn ed_key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn claims() -> Value {
    json!({
        "sub": "alice",
        "exp": NOW + 600,
        "iat": NOW,
        "iss": "https://idp.example",
        "aud": "caio",
        "role": "operator",
        "tenant": "acme",
        "permissions": ["classify"],
        "trust_level": 4,
        "jti": "ignored-extra-claim"
    })
}

fn with(mut c: Value, key: &str, v: Value) -> Value {
    c[key] = v;
    c
}

fn without(mut c: Value, key: &str) -> Value {
    if let Some(o) = c.as_object_mut() {
        o.remove(key);
    }
    c
}

fn hs() -> JwtVerifier {
    JwtVerifier::new(JwtConfig {
        hs256_secret: Some(SECRET.to_vec()),
        ..JwtConfig::default()
    })
    .unwrap()
}

fn ed() -> JwtVerifier {
    JwtVerifier::new(JwtConfig {
        eddsa_keys: vec![ed_key(9).verifying_key(), ed_key(1).verifying_key()],
        ..JwtConfig::default()
    })
    .unwrap()
}

fn both() -> JwtVerifier {
    JwtVerifier::new(JwtConfig {
        hs256_secret: Some(SECRET.to_vec()),
        eddsa_keys: vec![ed_key(1).verifying_key()],
        issuer: Some("https://idp.example".into()),
        audience: Some("caio".into()),
        leeway_s: 30,
    })
    .unwrap()
}

fn enc(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with an arbitrary header, signed with HS256 over whatever the header says.
fn hs_token_with_header(header: &str, claims: &Value, secret: &[u8]) -> String {
    let input = format!("{}.{}", enc(header), enc(claims.to_string()));
    let mut mac = hmac(secret).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", enc(mac.finalize().into_bytes()))
}

/// A token whose payload bytes are arbitrary, correctly HS256-signed.
fn hs_token_raw_payload(payload: &[u8]) -> String {
    let input = format!("{}.{}", enc(r#"{"alg":"HS256","typ":"JWT"}"#), enc(payload));
    let mut mac = hmac(SECRET).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", enc(mac.finalize().into_bytes()))
}

fn malformed(r: Result<Claims, AuthError>) -> bool {
    matches!(r, Err(AuthError::Malformed(_)))
}

#[test]
fn good_hs256_token() {
    let token = sign_hs256(&claims(), SECRET);
    let c = hs().verify(&token, NOW).unwrap();
    assert_eq!(c.sub, "alice");
    assert_eq!(c.role, Role::Operator);
    assert_eq!(c.aud, Some(Audience::One("caio".into())));
    let id = c.identity();
    assert_eq!(id.subject, "jwt:alice");
    assert_eq!(id.method, AuthMethod::Jwt);
    assert_eq!(id.principal.id, "jwt:alice");
    assert_eq!(id.principal.tenant, "acme");
    assert_eq!(id.principal.permissions, ["classify"]);
    assert_eq!(id.principal.trust_level, 4);
    assert_eq!(id.principal.roles, ["operator"]);
    assert!(both().verify(&token, NOW).is_ok());
}

#[test]
fn good_eddsa_token_with_any_configured_key() {
    for seed in [9, 1] {
        let token = sign_eddsa(&claims(), &ed_key(seed));
        assert_eq!(ed().verify(&token, NOW).unwrap().sub, "alice");
    }
    assert!(
        both()
            .verify(&sign_eddsa(&claims(), &ed_key(1)), NOW)
            .is_ok()
    );
}

#[test]
fn claim_defaults() {
    let token = sign_hs256(&json!({"sub": "bob", "exp": NOW + 1}), SECRET);
    let c = hs().verify(&token, NOW).unwrap();
    assert_eq!(c.role, Role::Client);
    assert_eq!(c.tenant, "public");
    assert!(c.permissions.is_empty());
    assert_eq!(c.trust_level, 0);
    assert_eq!(c.service_id, None);
}

#[test]
fn unsupported_algorithms() {
    for alg in [
        "none", "None", "NONE", "HS512", "HS384", "RS256", "ES256", "PS256", "hs256", "EDDSA",
        "Ed25519", "",
    ] {
        let header = json!({"alg": alg, "typ": "JWT"}).to_string();
        let token = hs_token_with_header(&header, &claims(), SECRET);
        assert_eq!(
            both().verify(&token, NOW),
            Err(AuthError::UnsupportedAlgorithm(alg.to_owned())),
            "{alg}"
        );
    }
    // The name in the error is truncated and control characters are masked.
    let long = format!("X\n{}", "Y".repeat(100));
    let token = hs_token_with_header(&json!({ "alg": long }).to_string(), &claims(), SECRET);
    let Err(AuthError::UnsupportedAlgorithm(name)) = hs().verify(&token, NOW) else {
        panic!("expected UnsupportedAlgorithm");
    };
    assert_eq!(name.chars().count(), 32);
    assert!(name.starts_with("X?"));
}

#[test]
fn alg_none_with_empty_signature() {
    let token = format!(
        "{}.{}.",
        enc(r#"{"alg":"none","typ":"JWT"}"#),
        enc(claims().to_string())
    );
    for v in [hs(), ed(), both()] {
        assert_eq!(
            v.verify(&token, NOW),
            Err(AuthError::UnsupportedAlgorithm("none".into()))
        );
    }
}

#[test]
fn algorithm_confusion_public_key_as_hmac_secret() {
    // The classic attack: sign HS256 with the verifier's public key bytes as the HMAC secret.
    let public = ed_key(1).verifying_key();
    let forged = sign_hs256(&claims(), public.as_bytes());
    assert_eq!(
        ed().verify(&forged, NOW),
        Err(AuthError::UnsupportedAlgorithm("HS256".into()))
    );
    assert_eq!(both().verify(&forged, NOW), Err(AuthError::BadSignature));
    // Likewise with the PEM text as the secret.
    let pem = public
        .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .unwrap();
    let forged = sign_hs256(&claims(), pem.as_bytes());
    assert_eq!(both().verify(&forged, NOW), Err(AuthError::BadSignature));
}

#[test]
fn each_algorithm_needs_its_own_key_kind() {
    let hs_token = sign_hs256(&claims(), SECRET);
    let ed_token = sign_eddsa(&claims(), &ed_key(1));
    assert_eq!(
        ed().verify(&hs_token, NOW),
        Err(AuthError::UnsupportedAlgorithm("HS256".into()))
    );
    assert_eq!(
        hs().verify(&ed_token, NOW),
        Err(AuthError::UnsupportedAlgorithm("EdDSA".into()))
    );
    // An EdDSA header on an HMAC signature, and the reverse.
    let (h, p, s) = split3(&hs_token);
    let ed_header = enc(r#"{"alg":"EdDSA","typ":"JWT"}"#);
    let _ = h;
    assert_eq!(
        both().verify(&format!("{ed_header}.{p}.{s}"), NOW),
        Err(AuthError::BadSignature)
    );
    let (_, p2, s2) = split3(&ed_token);
    let hs_header = enc(r#"{"alg":"HS256","typ":"JWT"}"#);
    assert_eq!(
        both().verify(&format!("{hs_header}.{p2}.{s2}"), NOW),
        Err(AuthError::BadSignature)
    );
}

fn split3(t: &str) -> (String, String, String) {
    let v: Vec<&str> = t.split('.').collect();
    (v[0].to_owned(), v[1].to_owned(), v[2].to_owned())
}

#[test]
fn tampered_payload_and_wrong_keys() {
    let token = sign_hs256(&claims(), SECRET);
    let (h, _, s) = split3(&token);
    let evil = enc(with(claims(), "role", json!("admin")).to_string());
    assert_eq!(
        hs().verify(&format!("{h}.{evil}.{s}"), NOW),
        Err(AuthError::BadSignature)
    );
    let other = sign_hs256(&claims(), b"another-secret-that-is-32-bytes-long!!");
    assert_eq!(hs().verify(&other, NOW), Err(AuthError::BadSignature));
    let other = sign_eddsa(&claims(), &ed_key(2));
    assert_eq!(ed().verify(&other, NOW), Err(AuthError::BadSignature));
    // Truncated or extended signatures.
    let short = format!("{h}.{}.{}", split3(&token).1, enc([0u8; 31]));
    assert_eq!(hs().verify(&short, NOW), Err(AuthError::BadSignature));
    let ed_token = sign_eddsa(&claims(), &ed_key(1));
    let (eh, ep, _) = split3(&ed_token);
    for len in [0, 63, 65] {
        let t = format!("{eh}.{ep}.{}", enc(vec![7u8; len]));
        assert_eq!(ed().verify(&t, NOW), Err(AuthError::BadSignature), "{len}");
    }
    // Signature bits flipped.
    let mut sig = URL_SAFE_NO_PAD.decode(split3(&ed_token).2).unwrap();
    sig[10] ^= 1;
    let t = format!("{eh}.{ep}.{}", enc(&sig));
    assert_eq!(ed().verify(&t, NOW), Err(AuthError::BadSignature));
}

#[test]
fn segment_and_encoding_errors() {
    let token = sign_hs256(&claims(), SECRET);
    let (h, p, s) = split3(&token);
    let cases = [
        String::new(),
        ".".into(),
        "..".into(),
        "...".into(),
        h.clone(),
        format!("{h}.{p}"),
        format!("{token}."),
        format!(".{token}"),
        format!("{token}.{s}"),
        format!("{h}={}.{p}.{s}", ""),
        format!("{h}.{p}=.{s}"),
        format!("{token}="),
        format!("{token}=="),
        format!("{h}.{p}.{s} "),
        format!(" {token}"),
        format!("{h}.{p}.{}", s.replace('_', "/")),
        format!("{}.{p}.{s}", h.replace('J', "+")),
        format!("{h}.{p}.é{s}"),
        format!("{h}\n.{p}.{s}"),
        "a.b.c".into(),
        "\u{0}.\u{0}.\u{0}".into(),
    ];
    for c in &cases {
        let r = hs().verify(c, NOW);
        assert!(
            matches!(
                r,
                Err(AuthError::Malformed(_)) | Err(AuthError::BadSignature)
            ),
            "{c:?}: {r:?}"
        );
    }
    // The structural ones are Malformed specifically.
    for c in [
        "",
        ".",
        "...",
        &format!("{token}."),
        &format!("{token}.{s}"),
        &format!("{token}="),
        &format!("{h}.{p}=.{s}"),
    ] {
        assert!(malformed(hs().verify(c, NOW)), "{c:?}");
    }
}

#[test]
fn non_canonical_base64_is_rejected() {
    // A 32-byte signature is 43 characters with 2 unused bits; setting them gives a second
    // spelling of the same bytes, which must not verify.
    let token = sign_hs256(&claims(), SECRET);
    let (h, p, s) = split3(&token);
    let last = s.chars().last().unwrap();
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let idx = alphabet.find(last).unwrap();
    let twin = alphabet.chars().nth(idx | 1).unwrap();
    assert_ne!(twin, last);
    let t = format!("{h}.{p}.{}{twin}", &s[..s.len() - 1]);
    assert!(malformed(hs().verify(&t, NOW)));
}

#[test]
fn huge_tokens() {
    let big = with(claims(), "pad", json!("x".repeat(MAX_TOKEN_BYTES)));
    let token = sign_hs256(&big, SECRET);
    assert!(token.len() > MAX_TOKEN_BYTES);
    assert_eq!(
        hs().verify(&token, NOW),
        Err(AuthError::Malformed("token longer than 8 KiB"))
    );
    assert!(malformed(hs().verify(&".".repeat(1 << 20), NOW)));
    assert!(malformed(hs().verify(&"A".repeat(1 << 20), NOW)));
    // Just under the limit is accepted.
    let mut pad = 0;
    loop {
        let t = sign_hs256(&with(claims(), "pad", json!("x".repeat(pad))), SECRET);
        if t.len() > MAX_TOKEN_BYTES - 4 {
            assert!(t.len() <= MAX_TOKEN_BYTES);
            assert!(hs().verify(&t, NOW).is_ok());
            break;
        }
        pad += 1 + (MAX_TOKEN_BYTES - 4 - t.len()) * 3 / 4;
    }
}

#[test]
fn header_rules() {
    let c = claims();
    let ok = |h: &str| hs().verify(&hs_token_with_header(h, &c, SECRET), NOW);
    assert!(ok(r#"{"alg":"HS256"}"#).is_ok());
    assert!(ok(r#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#).is_ok());
    for bad in [
        r#"{"alg":"HS256","typ":"jwt"}"#,
        r#"{"alg":"HS256","typ":"at+jwt"}"#,
        r#"{"alg":"HS256","typ":null}"#,
        r#"{"alg":"HS256","crit":["exp"]}"#,
        r#"{"alg":"HS256","crit":[]}"#,
        r#"{"typ":"JWT"}"#,
        r#"{"alg":null}"#,
        r#"{"alg":256}"#,
        r#"{"alg":["HS256"]}"#,
        r#"["HS256"]"#,
        r#""HS256""#,
        "null",
        "",
        "{",
        r#"{"alg":"HS256"} trailing"#,
    ] {
        assert!(malformed(ok(bad)), "{bad}");
    }
    // Non-UTF-8 header bytes.
    let t = format!(
        "{}.{}.{}",
        enc([0xff, 0xfe, 0x7b]),
        enc("{}"),
        enc([0u8; 32])
    );
    assert!(malformed(hs().verify(&t, NOW)));
    // Deeply nested header.
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    assert!(malformed(ok(&deep)));
    let deep_obj = format!(
        r#"{{"alg":"HS256","x":{}1{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    assert!(malformed(ok(&deep_obj)));
}

#[test]
fn payload_must_be_a_claims_object() {
    for payload in [
        &b"[\"alice\", 1}"[..],
        b"[\"alice\", 99999999999]",
        b"null",
        b"",
        b"\xff\xfe{}",
        b"{\"sub\":\"a\",\"exp\":1,\"sub\":\"b\"}",
        b"{\"sub\":\"a\",\"exp\":1.5e9}",
        b"{\"sub\":\"a\",\"exp\":-1}",
        b"{\"sub\":\"a\",\"exp\":99999999999,\"trust_level\":300}",
        b"{\"sub\":\"a\",\"exp\":99999999999,\"role\":\"root\"}",
        b"{\"sub\":\"a\",\"exp\":99999999999,\"aud\":7}",
        b"{\"sub\":\"\xff\",\"exp\":99999999999}",
    ] {
        let t = hs_token_raw_payload(payload);
        assert!(
            matches!(hs().verify(&t, NOW), Err(AuthError::InvalidClaims(_))),
            "{}",
            String::from_utf8_lossy(payload)
        );
    }
    let deep = format!(
        r#"{{"sub":"a","exp":99999999999,"x":{}{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    // Over 8 KiB once encoded: refused before any parsing.
    assert!(malformed(
        hs().verify(&hs_token_raw_payload(deep.as_bytes()), NOW)
    ));
    // Deep nesting in an ignored claim is skipped without recursion (and accepted); in a claim
    // that is read, it hits serde_json's recursion limit.
    let deep = format!(
        r#"{{"sub":"a","exp":99999999999,"x":{}{}}}"#,
        "[".repeat(2000),
        "]".repeat(2000)
    );
    assert!(
        hs().verify(&hs_token_raw_payload(deep.as_bytes()), NOW)
            .is_ok()
    );
    let deep = format!(
        r#"{{"sub":"a","exp":99999999999,"aud":{}{}}}"#,
        "[".repeat(2000),
        "]".repeat(2000)
    );
    let r = hs().verify(&hs_token_raw_payload(deep.as_bytes()), NOW);
    assert!(
        matches!(&r, Err(AuthError::InvalidClaims(m)) if m.contains("recursion")),
        "{r:?}"
    );
}

#[test]
fn time_rules() {
    let v = both();
    let exp = NOW + 600;
    let t = sign_hs256(&claims(), SECRET);
    assert!(v.verify(&t, exp + 30).is_ok(), "within leeway");
    assert_eq!(v.verify(&t, exp + 31), Err(AuthError::Expired));
    assert_eq!(hs().verify(&t, exp), Ok(hs().verify(&t, NOW).unwrap()));
    assert_eq!(hs().verify(&t, exp + 1), Err(AuthError::Expired));

    let t = sign_hs256(&without(claims(), "exp"), SECRET);
    assert!(matches!(v.verify(&t, NOW), Err(AuthError::InvalidClaims(m)) if m.contains("exp")));

    let t = sign_hs256(&with(claims(), "nbf", json!(NOW + 100)), SECRET);
    assert_eq!(v.verify(&t, NOW), Err(AuthError::NotYetValid));
    assert!(v.verify(&t, NOW + 70).is_ok(), "within leeway");
    assert_eq!(v.verify(&t, NOW + 69), Err(AuthError::NotYetValid));

    // Extreme values saturate rather than overflow.
    let t = sign_hs256(&with(claims(), "exp", json!(u64::MAX)), SECRET);
    assert!(v.verify(&t, u64::MAX).is_ok());
    let t = sign_hs256(&with(claims(), "exp", json!(0)), SECRET);
    assert_eq!(v.verify(&t, NOW), Err(AuthError::Expired));
}

#[test]
fn issuer_and_audience() {
    let v = both();
    let t = sign_hs256(
        &with(claims(), "iss", json!("https://evil.example")),
        SECRET,
    );
    assert_eq!(v.verify(&t, NOW), Err(AuthError::WrongIssuer));
    let t = sign_hs256(&without(claims(), "iss"), SECRET);
    assert_eq!(v.verify(&t, NOW), Err(AuthError::WrongIssuer));
    let t = sign_hs256(&with(claims(), "aud", json!("other")), SECRET);
    assert_eq!(v.verify(&t, NOW), Err(AuthError::WrongAudience));
    let t = sign_hs256(&without(claims(), "aud"), SECRET);
    assert_eq!(v.verify(&t, NOW), Err(AuthError::WrongAudience));
    let t = sign_hs256(&with(claims(), "aud", json!(["other", "caio"])), SECRET);
    assert!(v.verify(&t, NOW).is_ok());
    let t = sign_hs256(&with(claims(), "aud", json!([])), SECRET);
    assert_eq!(v.verify(&t, NOW), Err(AuthError::WrongAudience));
    // Without configuration, neither is checked.
    let t = sign_hs256(&with(claims(), "aud", json!("other")), SECRET);
    assert!(hs().verify(&t, NOW).is_ok());
}

#[test]
fn claim_validation() {
    let bad = |c: Value, field: &str| {
        let t = sign_hs256(&c, SECRET);
        match hs().verify(&t, NOW) {
            Err(AuthError::InvalidClaims(m)) => assert!(m.contains(field), "{field}: {m}"),
            other => panic!("{field}: {other:?}"),
        }
    };
    bad(with(claims(), "sub", json!("")), "sub");
    bad(with(claims(), "sub", json!("x".repeat(129))), "sub");
    bad(with(claims(), "sub", json!("a\nb")), "sub");
    bad(with(claims(), "tenant", json!("ACME")), "tenant");
    bad(with(claims(), "trust_level", json!(11)), "trust_level");
    bad(with(claims(), "role", json!("service")), "service_id");
    bad(with(claims(), "service_id", json!("svc")), "service_id");
    bad(with(claims(), "permissions", json!([""])), "permissions[0]");
    bad(
        with(claims(), "permissions", json!(vec!["p"; 257])),
        "permissions",
    );
    let svc = with(
        with(claims(), "role", json!("service")),
        "service_id",
        json!("svc-1"),
    );
    let c = hs().verify(&sign_hs256(&svc, SECRET), NOW).unwrap();
    assert_eq!(c.identity().service_id.as_deref(), Some("svc-1"));
}

#[test]
fn config_rules() {
    let short = JwtConfig {
        hs256_secret: Some(vec![1; 31]),
        ..JwtConfig::default()
    };
    assert_eq!(
        JwtVerifier::new(short).unwrap_err(),
        JwtError::SecretTooShort(31)
    );
    assert_eq!(
        JwtVerifier::new(JwtConfig::default()).unwrap_err(),
        JwtError::NoKeys
    );
    let cfg = JwtConfig {
        hs256_secret: Some(SECRET.to_vec()),
        ..JwtConfig::default()
    };
    let shown = format!("{cfg:?} {:?}", JwtVerifier::new(cfg.clone()).unwrap());
    assert!(!shown.contains("0123456789abcdef"), "{shown}");
    assert!(!shown.contains("48, 49, 50"), "{shown}");
    assert!(shown.contains("<redacted>"));
}

#[test]
fn pem_public_keys() {
    use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
    let key = ed_key(5).verifying_key();
    let pem = key.to_public_key_pem(LineEnding::LF).unwrap();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
    assert_eq!(parse_eddsa_public_key_pem(&pem).unwrap(), key);
    assert_eq!(
        parse_eddsa_public_key_pem(&format!("\n  {pem}\n")).unwrap(),
        key
    );
    // An openssl-generated key (`openssl genpkey -algorithm ed25519 | openssl pkey -pubout`).
    let openssl = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA+rJVW3PDWqK4RZJDHvY9Dqd9Ym8EvIwZacsWPHHRwmM=\n-----END PUBLIC KEY-----\n";
    assert!(parse_eddsa_public_key_pem(openssl).is_ok());
    for bad in [
        "",
        "-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n",
        "-----BEGIN PUBLIC KEY-----\nnot base64!\n-----END PUBLIC KEY-----\n",
        &pem.replace("PUBLIC KEY", "PRIVATE KEY"),
        &pem.replace("PUBLIC KEY", "CERTIFICATE"),
        // An RSA key's SPKI (wrong algorithm OID).
        "-----BEGIN PUBLIC KEY-----\nMFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAN43mQF3S31J/I0/2MYlJJGq6e6NKRtg\nM/J5jvSglyLLEGIhlYKtF62EgziKfJwzphVNjh6kFY6vDJ1F3oGXEeECAwEAAQ==\n-----END PUBLIC KEY-----\n",
    ] {
        assert!(
            matches!(
                parse_eddsa_public_key_pem(bad),
                Err(JwtError::InvalidPublicKey(_))
            ),
            "{bad}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary text never panics and never verifies.
    #[test]
    fn arbitrary_text_never_verifies(s in "\\PC{0,300}") {
        prop_assert!(both().verify(&s, NOW).is_err());
    }

    /// Arbitrary three-segment base64url text never verifies.
    #[test]
    fn arbitrary_segments_never_verify(
        h in proptest::collection::vec(any::<u8>(), 0..64),
        p in proptest::collection::vec(any::<u8>(), 0..128),
        s in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        let t = format!("{}.{}.{}", enc(&h), enc(&p), enc(&s));
        prop_assert!(both().verify(&t, NOW).is_err());
    }

    /// Changing any one character of a good token makes it fail.
    #[test]
    fn any_single_character_change_fails(i in 0usize..400, c in proptest::char::range('-', 'z')) {
        let t = sign_hs256(&claims(), SECRET);
        let i = i % t.len();
        let mut b: Vec<char> = t.chars().collect();
        prop_assume!(b[i] != c);
        b[i] = c;
        let t2: String = b.into_iter().collect();
        prop_assert!(both().verify(&t2, NOW).is_err());
    }
}

/// Tokens made by openssl with the shell recipe of docs/reference/authentication.md: an
/// independent implementation agrees with ours on encoding and both signatures.
#[test]
fn tokens_made_with_openssl_verify() {
    let hs_token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMDYwMCwicm9sZSI6ImNsaWVudCIsInRlbmFudCI6ImFjbWUifQ.zeaH1vxnW0745FNpuTNz4XBMm_X-gamwFdqtyX_5ISE";
    let ed_token = "eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMDYwMCwicm9sZSI6ImNsaWVudCIsInRlbmFudCI6ImFjbWUifQ.05RFzMNG_2R4WeWQLX8_a25KSxpfJfplb1x9QkfFY1wcegFi9rDQjihcnz_b0CNzvzotm91ftcDYPbHCHaS8Ag";
    let public_pem = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAkR7CcO5sHDPPnlGj+VkC0YDOET6ylis8/1Fq/+07VBY=\n-----END PUBLIC KEY-----\n";
    let v = JwtVerifier::new(JwtConfig {
        hs256_secret: Some(b"jwt-hs256-secret-0123456789abcdef".to_vec()),
        eddsa_keys: vec![parse_eddsa_public_key_pem(public_pem).unwrap()],
        ..JwtConfig::default()
    })
    .unwrap();
    for token in [hs_token, ed_token] {
        let c = v.verify(token, NOW).unwrap();
        assert_eq!(
            (c.sub.as_str(), c.tenant.as_str(), c.role),
            ("alice", "acme", Role::Client)
        );
        assert_eq!(v.verify(token, NOW + 601), Err(AuthError::Expired));
    }
}

/// Rough cost of `verify`. Run with
/// `cargo test -p caio-security --release -- --ignored --nocapture verify_cost`.
#[test]
#[ignore = "timing, run by hand"]
fn verify_cost() {
    let v = both();
    for (name, token) in [
        ("HS256", sign_hs256(&claims(), SECRET)),
        ("EdDSA", sign_eddsa(&claims(), &ed_key(1))),
    ] {
        let n = 20_000u32;
        let start = std::time::Instant::now();
        for _ in 0..n {
            assert!(v.verify(&token, NOW).is_ok());
        }
        eprintln!("verify {name}: {:?} per call", start.elapsed() / n);
    }
}
