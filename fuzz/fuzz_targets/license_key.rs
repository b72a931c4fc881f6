//! Any bytes given to the license verifier (as a key, a revocation list or a PEM public key) are
//! refused or accepted, never a panic; any change to a valid key makes it refused.
#![no_main]
use std::sync::LazyLock;

use caio_licensing::{
    IssueRequest, Issuer, Limits, PublicKeySet, VerifiedRevocationList, decode_unverified,
    public_key_from_pem, verify,
};
use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_800_000_000;

static ISSUER: LazyLock<Issuer> = LazyLock::new(|| Issuer::new(SigningKey::from_bytes(&[7; 32])));
static KEYS: LazyLock<PublicKeySet> =
    LazyLock::new(|| PublicKeySet::from_keys([ISSUER.public_key()]));
static VALID: LazyLock<String> = LazyLock::new(|| {
    let request = IssueRequest {
        customer_id: "fuzz-customer".into(),
        tier: "enterprise".into(),
        not_before: NOW - 86_400,
        expires_at: NOW + 86_400,
        features: vec!["cluster".into(), "sso".into()],
        limits: Limits {
            max_instances: Some(3),
            max_services: None,
            max_requests_per_day: Some(10),
        },
    };
    ISSUER.issue(&request, NOW).expect("valid fuzz license").0
});

fuzz_target!(|data: &[u8]| {
    // Arbitrary bytes as a key (lossily decoded, as text read from a file or environment would be).
    let text = String::from_utf8_lossy(data);
    let _ = verify(&text, &KEYS, NOW, None);
    let _ = decode_unverified(&text);
    let _ = VerifiedRevocationList::verify(&text, &KEYS);
    let _ = public_key_from_pem(&text);

    // The valid key with the input XORed over it: unchanged verifies, changed never does.
    let mut key = VALID.as_bytes().to_vec();
    for (b, d) in key.iter_mut().zip(data) {
        *b ^= d;
    }
    let key = String::from_utf8_lossy(&key);
    let ok = verify(&key, &KEYS, NOW, None).is_ok();
    assert_eq!(
        ok,
        *key == **VALID,
        "a changed key verified, or the valid key was refused"
    );
});
