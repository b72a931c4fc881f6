//! Tests of the key format, verification, revocation lists and PEM handling.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer as _, SigningKey};
use proptest::prelude::*;

use crate::format::{LICENSE_DOMAIN, Payload, encode_key, signed_message};
use crate::issue::{IssueRequest, Issuer, private_key_from_pem, private_key_to_pem, write_keypair};
use crate::revocation::REVOCATION_DOMAIN;
use crate::*;

const NOW: i64 = 1_800_000_000;
const DAY: i64 = 86_400;

fn issuer(seed: u8) -> Issuer {
    Issuer::new(SigningKey::from_bytes(&[seed; 32]))
}

fn keys_of(issuer: &Issuer) -> PublicKeySet {
    PublicKeySet::from_keys([issuer.public_key()])
}

fn request() -> IssueRequest {
    IssueRequest {
        customer_id: "acme-gmbh".into(),
        tier: "professional".into(),
        not_before: NOW - DAY,
        expires_at: NOW + 30 * DAY,
        features: vec!["traces".into(), "cluster".into(), "traces".into()],
        limits: Limits {
            max_instances: Some(3),
            max_services: Some(50),
            max_requests_per_day: None,
        },
    }
}

fn issued(issuer: &Issuer) -> (String, License) {
    issuer.issue(&request(), NOW - DAY).unwrap()
}

fn parts(key: &str) -> (Vec<u8>, Vec<u8>) {
    let body = key.strip_prefix(KEY_PREFIX).unwrap();
    let (p, s) = body.split_once('.').unwrap();
    (
        URL_SAFE_NO_PAD.decode(p).unwrap(),
        URL_SAFE_NO_PAD.decode(s).unwrap(),
    )
}

fn assemble(payload: &[u8], signature: &[u8]) -> String {
    format!(
        "{KEY_PREFIX}{}.{}",
        URL_SAFE_NO_PAD.encode(payload),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

fn malformed_part(err: LicenseError) -> MalformedPart {
    match err {
        LicenseError::Malformed { part, .. } => part,
        other => panic!("expected malformed, got {other:?}"),
    }
}

#[test]
fn round_trip() {
    let iss = issuer(1);
    let (key, license) = issued(&iss);
    assert!(key.starts_with("CAIO-v2-"));
    assert!(!key.contains('='));
    let got = verify(&key, &keys_of(&iss), NOW, None).unwrap();
    assert_eq!(got, license);
    assert_eq!(got.customer_id, "acme-gmbh");
    assert_eq!(got.tier, "professional");
    assert_eq!(
        got.features,
        vec!["cluster".to_string(), "traces".to_string()]
    );
    assert!(got.has_feature("cluster") && !got.has_feature("sso"));
    assert_eq!(got.limits.max_requests_per_day, None);
    assert_eq!(got.signing_key_id, iss.key_id());
    assert_eq!(got.signing_key_id.len(), 16);
    assert_eq!(decode_unverified(&key).unwrap(), license);
    // The payload is canonical JSON with the documented field names.
    let (payload, signature) = parts(&key);
    let text = String::from_utf8(payload.clone()).unwrap();
    assert!(
        text.starts_with("{\"customer_id\":\"acme-gmbh\",\"expires_at\":"),
        "{text}"
    );
    assert!(text.contains("\"max_requests_per_day\":null"));
    assert!(text.ends_with(",\"version\":2}"));
    // A third party verifies with plain Ed25519 over the domain prefix and payload bytes.
    let sig = ed25519_dalek::Signature::from_slice(&signature).unwrap();
    let mut message = b"CAIO-LICENSE-v2\n".to_vec();
    message.extend_from_slice(&payload);
    iss.public_key().verify_strict(&message, &sig).unwrap();
}

#[test]
fn key_id_is_sha256_prefix_of_the_raw_public_key() {
    use sha2::Digest as _;
    let iss = issuer(1);
    let digest = sha2::Sha256::digest(iss.public_key().as_bytes());
    assert_eq!(key_id(&iss.public_key()), hex::encode(&digest[..8]));
}

#[test]
fn forged_signature_is_refused() {
    let iss = issuer(1);
    let (key, _) = issued(&iss);
    let (payload, mut signature) = parts(&key);
    signature[10] ^= 0x01;
    let forged = assemble(&payload, &signature);
    assert_eq!(
        verify(&forged, &keys_of(&iss), NOW, None),
        Err(LicenseError::BadSignature)
    );
    let zeros = assemble(&payload, &[0u8; 64]);
    assert_eq!(
        verify(&zeros, &keys_of(&iss), NOW, None),
        Err(LicenseError::BadSignature)
    );
}

#[test]
fn payload_edited_to_a_higher_tier_is_refused() {
    let iss = issuer(1);
    let (key, _) = issued(&iss);
    let (payload, signature) = parts(&key);
    let text = String::from_utf8(payload).unwrap();
    // Still canonical and well formed: only the signature can catch it.
    let edited = text.replace("\"tier\":\"professional\"", "\"tier\":\"enterprise\"");
    assert!(decode_unverified(&assemble(edited.as_bytes(), &signature)).is_ok());
    assert_ne!(edited, text);
    let forged = assemble(edited.as_bytes(), &signature);
    assert_eq!(
        verify(&forged, &keys_of(&iss), NOW, None),
        Err(LicenseError::BadSignature)
    );
    // And more features, unlimited instances.
    let edited = text.replace("\"max_instances\":3", "\"max_instances\":null");
    let forged = assemble(edited.as_bytes(), &signature);
    assert_eq!(
        verify(&forged, &keys_of(&iss), NOW, None),
        Err(LicenseError::BadSignature)
    );
}

#[test]
fn key_signed_by_another_private_key_is_refused() {
    let vendor = issuer(1);
    let attacker = issuer(2);
    // The attacker signs a payload that names the vendor's key id.
    let (_, mut license) = issued(&vendor);
    license.tier = "enterprise".into();
    let payload = serde_json_canonicalizer::to_vec(&Payload::from_license(&license)).unwrap();
    let signature = attacker
        .key_for_tests()
        .sign(&signed_message(LICENSE_DOMAIN, &payload));
    let forged = encode_key(&payload, &signature);
    assert_eq!(
        verify(&forged, &keys_of(&vendor), NOW, None),
        Err(LicenseError::BadSignature)
    );
    // A key honestly signed by the attacker names the attacker's key id: unknown to the verifier.
    let (theirs, _) = issued(&attacker);
    assert_eq!(
        verify(&theirs, &keys_of(&vendor), NOW, None),
        Err(LicenseError::UnknownSigningKey(
            attacker.key_id().to_owned()
        ))
    );
}

#[test]
fn wrong_public_key_gives_unknown_signing_key() {
    let iss = issuer(1);
    let (key, _) = issued(&iss);
    let other = issuer(3);
    assert!(matches!(
        verify(&key, &keys_of(&other), NOW, None),
        Err(LicenseError::UnknownSigningKey(id)) if id == iss.key_id()
    ));
    assert!(matches!(
        verify(&key, &PublicKeySet::new(), NOW, None),
        Err(LicenseError::UnknownSigningKey(_))
    ));
}

#[test]
fn rotation_picks_the_key_by_id() {
    let old = issuer(1);
    let new = issuer(4);
    let keys = PublicKeySet::from_keys([old.public_key(), new.public_key()]);
    let (a, _) = issued(&old);
    let (b, _) = issued(&new);
    assert_eq!(
        verify(&a, &keys, NOW, None).unwrap().signing_key_id,
        old.key_id()
    );
    assert_eq!(
        verify(&b, &keys, NOW, None).unwrap().signing_key_id,
        new.key_id()
    );
    assert_eq!(keys.ids().count(), 2);
}

#[test]
fn expired_and_not_yet_valid() {
    let iss = issuer(1);
    let (key, license) = issued(&iss);
    let keys = keys_of(&iss);
    assert_eq!(
        verify(&key, &keys, license.expires_at, None),
        Err(LicenseError::Expired {
            expires_at: license.expires_at
        })
    );
    assert!(verify(&key, &keys, license.expires_at - 1, None).is_ok());
    assert_eq!(
        verify(&key, &keys, license.not_before - 1, None),
        Err(LicenseError::NotYetValid {
            not_before: license.not_before
        })
    );
    assert!(verify(&key, &keys, license.not_before, None).is_ok());
    // decode_verified leaves the window to the caller.
    assert!(decode_verified(&key, &keys).is_ok());
}

#[test]
fn status_with_grace_period() {
    let iss = issuer(1);
    let (_, l) = issued(&iss);
    let grace = 7 * DAY as u64;
    assert_eq!(
        l.status_at(l.not_before - 1, grace),
        LicenseStatus::NotYetValid
    );
    assert_eq!(l.status_at(NOW, grace), LicenseStatus::Valid);
    assert_eq!(
        l.status_at(l.expires_at, grace),
        LicenseStatus::ExpiredInGrace {
            grace_ends_at: l.expires_at + 7 * DAY
        }
    );
    assert!(l.status_at(l.expires_at + DAY, grace).is_usable());
    assert_eq!(
        l.status_at(l.expires_at + 7 * DAY, grace),
        LicenseStatus::Expired
    );
    assert!(!l.status_at(l.expires_at + 7 * DAY, grace).is_usable());
    assert_eq!(l.status_at(l.expires_at, 0), LicenseStatus::Expired);
    assert_eq!(
        l.status_at(l.expires_at, u64::MAX),
        LicenseStatus::ExpiredInGrace {
            grace_ends_at: i64::MAX
        }
    );
    assert_eq!(l.seconds_left(NOW), 30 * DAY);
}

#[test]
fn revoked_key_is_refused() {
    let iss = issuer(1);
    let (key, license) = issued(&iss);
    let (other_key, _) = issued(&iss);
    let keys = keys_of(&iss);
    let mut list = RevocationList::new(iss.key_id(), NOW);
    iss.revoke(&mut list, &license.key_id, "contract terminated", NOW)
        .unwrap();
    let doc = iss.sign_revocation_list(&list, NOW).unwrap();
    let verified = VerifiedRevocationList::verify(&doc, &keys).unwrap();
    assert_eq!(
        verify(&key, &keys, NOW, Some(&verified)),
        Err(LicenseError::Revoked {
            key_id: license.key_id.clone(),
            reason: "contract terminated".into()
        })
    );
    assert!(verify(&other_key, &keys, NOW, Some(&verified)).is_ok());
    assert_eq!(verified.list().revoked.len(), 1);
}

#[test]
fn revocation_list_forgeries_are_refused() {
    let iss = issuer(1);
    let keys = keys_of(&iss);
    let mut list = RevocationList::new(iss.key_id(), NOW);
    iss.revoke(&mut list, "0123456789abcdef", "leaked", NOW)
        .unwrap();
    let doc = iss.sign_revocation_list(&list, NOW).unwrap();
    // Removing the entry (the signature kept) breaks the signature.
    let edited = doc.replace("0123456789abcdef", "fedcba9876543210");
    assert_eq!(
        VerifiedRevocationList::verify(&edited, &keys),
        Err(LicenseError::BadSignature)
    );
    // Another key's list is unknown.
    assert!(matches!(
        VerifiedRevocationList::verify(&doc, &keys_of(&issuer(2))),
        Err(LicenseError::UnknownSigningKey(_))
    ));
    assert!(VerifiedRevocationList::verify("{}", &keys).is_err());
    assert!(VerifiedRevocationList::verify("not json", &keys).is_err());
    let huge = " ".repeat(MAX_REVOCATION_LIST_BYTES + 1);
    assert!(matches!(
        VerifiedRevocationList::verify(&huge, &keys),
        Err(LicenseError::Oversized { .. })
    ));
}

#[test]
fn signatures_for_other_purposes_never_verify_as_a_license() {
    let iss = issuer(1);
    let (key, _) = issued(&iss);
    let (payload, _) = parts(&key);
    // The same payload signed under the revocation-list prefix.
    let sig = iss
        .key_for_tests()
        .sign(&signed_message(REVOCATION_DOMAIN, &payload));
    let cross = encode_key(&payload, &sig);
    assert_eq!(
        verify(&cross, &keys_of(&iss), NOW, None),
        Err(LicenseError::BadSignature)
    );
    // The bare payload (no prefix) signed.
    let sig = iss.key_for_tests().sign(&payload);
    let bare = encode_key(&payload, &sig);
    assert_eq!(
        verify(&bare, &keys_of(&iss), NOW, None),
        Err(LicenseError::BadSignature)
    );
    // A revocation list's signature and payload never form a license.
    let list = RevocationList::new(iss.key_id(), NOW);
    let doc = iss.sign_revocation_list(&list, NOW).unwrap();
    let v: serde_json::Value = serde_json::from_str(&doc).unwrap();
    let rl_payload = v["payload"].as_str().unwrap();
    let rl_sig = URL_SAFE_NO_PAD
        .decode(v["signature"].as_str().unwrap())
        .unwrap();
    let as_license = assemble(rl_payload.as_bytes(), &rl_sig);
    assert!(verify(&as_license, &keys_of(&iss), NOW, None).is_err());
}

#[test]
fn truncated_keys_are_refused() {
    let iss = issuer(1);
    let (key, _) = issued(&iss);
    let keys = keys_of(&iss);
    for len in 0..key.len() {
        assert!(
            verify(&key[..len], &keys, NOW, None).is_err(),
            "prefix of length {len} accepted"
        );
    }
    let dot = key.find('.').unwrap();
    assert_eq!(
        malformed_part(verify(&key[..dot], &keys, NOW, None).unwrap_err()),
        MalformedPart::Structure
    );
    assert_eq!(
        malformed_part(verify(&key[..dot + 13], &keys, NOW, None).unwrap_err()),
        MalformedPart::SignatureLength
    );
}

#[test]
fn garbage_is_refused_with_the_part_named() {
    let keys = keys_of(&issuer(1));
    let cases = [
        ("", MalformedPart::Prefix),
        ("hello", MalformedPart::Prefix),
        ("caio-v2-abc.def", MalformedPart::Prefix),
        ("CAIO-v2-", MalformedPart::Structure),
        ("CAIO-v2-abc.def.ghi", MalformedPart::Structure),
        ("CAIO-v2-!!!!.AAAA", MalformedPart::PayloadEncoding),
        ("CAIO-v2-e30=.AAAA", MalformedPart::PayloadEncoding),
        ("CAIO-v2-e30.@@@@", MalformedPart::SignatureEncoding),
        ("CAIO-v2-e30.AAAA", MalformedPart::SignatureLength),
    ];
    for (input, part) in cases {
        assert_eq!(
            malformed_part(verify(input, &keys, NOW, None).unwrap_err()),
            part,
            "{input}"
        );
    }
    // Valid encodings of a non-JSON payload.
    let junk = assemble(b"not json", &[0u8; 64]);
    assert_eq!(
        malformed_part(verify(&junk, &keys, NOW, None).unwrap_err()),
        MalformedPart::PayloadJson
    );
}

#[test]
fn unusual_payloads_are_named() {
    let iss = issuer(1);
    let keys = keys_of(&iss);
    let (_, license) = issued(&iss);
    // A correctly signed but non-canonical payload (whitespace) is malformed, not accepted.
    let payload = serde_json::to_vec_pretty(&Payload::from_license(&license)).unwrap();
    let sig = iss
        .key_for_tests()
        .sign(&signed_message(LICENSE_DOMAIN, &payload));
    let key = encode_key(&payload, &sig);
    assert_eq!(
        malformed_part(verify(&key, &keys, NOW, None).unwrap_err()),
        MalformedPart::PayloadNotCanonical
    );
    // A future version.
    let mut p = Payload::from_license(&license);
    p.version = 3;
    let key = iss.sign_payload(&p).unwrap();
    assert_eq!(
        malformed_part(decode_unverified(&key).unwrap_err()),
        MalformedPart::PayloadVersion
    );
    // A bad field, correctly signed.
    let mut p = Payload::from_license(&license);
    p.customer_id = "has space".into();
    let key = iss.sign_payload(&p).unwrap();
    assert_eq!(
        malformed_part(verify(&key, &keys, NOW, None).unwrap_err()),
        MalformedPart::PayloadField
    );
}

#[test]
fn oversized_input_is_refused_before_decoding() {
    let keys = keys_of(&issuer(1));
    let huge = format!("CAIO-v2-{}", "A".repeat(MAX_KEY_BYTES));
    assert_eq!(
        verify(&huge, &keys, NOW, None),
        Err(LicenseError::Oversized {
            len: huge.len(),
            max: MAX_KEY_BYTES
        })
    );
    assert!(matches!(
        decode_unverified(&huge),
        Err(LicenseError::Oversized { .. })
    ));
}

#[test]
fn v1_keys_are_refused_with_advice() {
    let keys = keys_of(&issuer(1));
    let err = verify(
        "CAIO-v1-eyJjdXN0b21lciI6ImFjbWUifQ.c2lnbmF0dXJl",
        &keys,
        NOW,
        None,
    )
    .unwrap_err();
    assert_eq!(err, LicenseError::V1Key);
    assert!(
        err.to_string()
            .contains("ask your CAIO vendor for a v2 key")
    );
    assert_eq!(err.code(), "v1_key");
}

#[test]
fn issue_refuses_bad_requests() {
    let iss = issuer(1);
    let mut r = request();
    r.expires_at = r.not_before;
    assert!(iss.issue(&r, NOW).is_err());
    let mut r = request();
    r.tier = String::new();
    assert!(iss.issue(&r, NOW).is_err());
    let mut r = request();
    r.features = vec!["bad feature".into()];
    assert!(iss.issue(&r, NOW).is_err());
    let mut list = RevocationList::new(iss.key_id(), NOW);
    assert!(
        iss.revoke(&mut list, "0123456789abcdef", "  ", NOW)
            .is_err()
    );
    iss.revoke(&mut list, "not-hex", "r", NOW).unwrap();
    assert!(iss.sign_revocation_list(&list, NOW).is_err());
}

#[test]
fn pem_round_trips() {
    let iss = issuer(9);
    let private = private_key_to_pem(iss.key_for_tests()).unwrap();
    assert!(private.starts_with("-----BEGIN PRIVATE KEY-----"));
    let back = private_key_from_pem(&private).unwrap();
    assert_eq!(back.to_bytes(), iss.key_for_tests().to_bytes());
    let public = public_key_to_pem(&iss.public_key()).unwrap();
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"));
    assert_eq!(public_key_from_pem(&public).unwrap(), iss.public_key());
    let set = PublicKeySet::from_pems([public.as_str()]).unwrap();
    assert!(set.get(iss.key_id()).is_some());
    // A private key is not a public key, and the other way round.
    assert!(public_key_from_pem(&private).is_err());
    assert!(private_key_from_pem(&public).is_err());
}

#[test]
fn keypair_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("keys");
    let (private, public, id) = write_keypair(&out).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&private).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let key = private_key_from_pem(&std::fs::read_to_string(&private).unwrap()).unwrap();
    let pubkey = public_key_from_pem(&std::fs::read_to_string(&public).unwrap()).unwrap();
    assert_eq!(key.verifying_key(), pubkey);
    assert_eq!(key_id(&pubkey), id);
    // Never overwrites an existing private key.
    assert!(write_keypair(&out).is_err());
}

#[test]
fn hostile_pem_errors() {
    let inputs: Vec<String> = vec![
        String::new(),
        "-----BEGIN PUBLIC KEY-----".into(),
        "-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n".into(),
        "-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n".into(),
        "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n".into(),
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI\n-----END PRIVATE KEY-----\n".into(),
        // An RSA-shaped SPKI header.
        "-----BEGIN PUBLIC KEY-----\nMFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAK\n-----END PUBLIC KEY-----\n".into(),
        format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", "A".repeat(MAX_PEM_BYTES)),
        "\u{0}\u{feff}-----BEGIN".into(),
    ];
    for input in &inputs {
        assert!(public_key_from_pem(input).is_err());
        assert!(private_key_from_pem(input).is_err());
    }
}

impl Issuer {
    fn key_for_tests(&self) -> &SigningKey {
        // Tests sign arbitrary messages to show they never verify as licenses.
        self.signing_key()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn changing_any_single_byte_breaks_the_key(index in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let iss = issuer(1);
        let (key, _) = issued(&iss);
        let mut bytes = key.clone().into_bytes();
        let i = index.index(bytes.len());
        prop_assume!(bytes[i] != byte);
        bytes[i] = byte;
        let changed = String::from_utf8_lossy(&bytes);
        prop_assert!(verify(&changed, &keys_of(&iss), NOW, None).is_err());
    }

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,300}") {
        let keys = keys_of(&issuer(1));
        let _ = verify(&text, &keys, NOW, None);
        let _ = verify(&format!("CAIO-v2-{text}"), &keys, NOW, None);
        let _ = public_key_from_pem(&text);
        let _ = private_key_from_pem(&text);
        let _ = VerifiedRevocationList::verify(&text, &keys);
    }

    #[test]
    fn arbitrary_pem_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..200)) {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&body);
        for label in ["PUBLIC KEY", "PRIVATE KEY"] {
            let pem = format!("-----BEGIN {label}-----\n{b64}\n-----END {label}-----\n");
            let _ = public_key_from_pem(&pem);
            let _ = private_key_from_pem(&pem);
        }
    }
}
