//! Any header values and body given to webhook verification are refused, never a panic; a body
//! signed with the secret always verifies, and the replay guard refuses its second delivery.
#![no_main]
use caio_security::webhook::{ReplayGuard, WebhookError, sign, verify};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_700_000_000;
const SECRET: &[u8] = b"fuzz-webhook-secret-0123456789abcdef";

fuzz_target!(|data: &[u8]| {
    // Input layout: <timestamp header>\n<signature header>\n<body>.
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let ts = parts.next().and_then(|p| std::str::from_utf8(p).ok());
    let sig = parts.next().and_then(|p| std::str::from_utf8(p).ok());
    let body = parts.next().unwrap_or_default();
    let r = verify(SECRET, ts, sig, body, NOW, 300);
    // Forging a signature by chance is not a realistic fuzzer outcome.
    assert!(r.is_err(), "unsigned input verified");

    let guard = ReplayGuard::with_capacity(300, 16);
    if let Some(sig) = sig {
        let _ = guard.check_and_remember(sig, NOW, NOW);
    }

    let good = sign(SECRET, NOW, body);
    assert_eq!(
        verify(SECRET, Some(&NOW.to_string()), Some(&good), body, NOW, 300),
        Ok(NOW)
    );
    if guard.check_and_remember(&good, NOW, NOW).is_ok() {
        assert_eq!(
            guard.check_and_remember(&good, NOW, NOW + 1),
            Err(WebhookError::Replayed)
        );
    }
});
