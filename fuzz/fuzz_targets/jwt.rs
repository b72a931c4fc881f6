//! Any bytes given to the JWT verifier as a token are refused or give claims, never a panic; any
//! JSON correctly signed is never refused for its encoding or signature.
#![no_main]
use std::sync::LazyLock;

use caio_security::AuthError;
use caio_security::jwt::{
    JwtConfig, JwtVerifier, MAX_TOKEN_BYTES, SigningKey, sign_eddsa, sign_hs256,
};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_700_000_000;
const SECRET: &[u8] = b"fuzz-hs256-secret-0123456789abcdef";

static KEY: LazyLock<SigningKey> = LazyLock::new(|| SigningKey::from_bytes(&[7; 32]));
static VERIFIER: LazyLock<JwtVerifier> = LazyLock::new(|| {
    JwtVerifier::new(JwtConfig {
        hs256_secret: Some(SECRET.to_vec()),
        eddsa_keys: vec![KEY.verifying_key()],
        issuer: None,
        audience: None,
        leeway_s: 60,
    })
    .expect("valid fuzz configuration")
});

fuzz_target!(|data: &[u8]| {
    // Arbitrary bytes as a token (lossily decoded, as a header value would be).
    let text = String::from_utf8_lossy(data);
    let _ = VERIFIER.verify(&text, NOW);

    // Arbitrary JSON, signed both ways: only the claims may be refused.
    if let Ok(claims) = serde_json::from_slice::<serde_json::Value>(data) {
        for token in [sign_hs256(&claims, SECRET), sign_eddsa(&claims, &KEY)] {
            if token.len() > MAX_TOKEN_BYTES {
                continue;
            }
            match VERIFIER.verify(&token, NOW) {
                Err(AuthError::Malformed(_))
                | Err(AuthError::BadSignature)
                | Err(AuthError::UnsupportedAlgorithm(_)) => {
                    panic!("a correctly signed token was refused for its form")
                }
                _ => {}
            }
        }
    }
});
