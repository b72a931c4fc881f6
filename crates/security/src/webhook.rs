//! Signatures of inbound webhooks (services calling back into CAIO): HMAC-SHA256 over
//! `<timestamp>.<body>` with a per-service secret, a freshness window, and a replay guard.
//!
//! Headers: `X-CAIO-Timestamp: <unix seconds>` and `X-CAIO-Signature: sha256=<64 lowercase hex>`.
//! The timestamp is inside the MAC, so an attacker cannot refresh an old request; the window
//! bounds how long a captured request stays valid, and [`ReplayGuard`] refuses a second delivery
//! of the same signature inside that window.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Header carrying the unix timestamp (seconds) the sender signed.
pub const TIMESTAMP_HEADER: &str = "x-caio-timestamp";
/// Header carrying `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-caio-signature";
/// Shortest accepted per-service secret, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;
/// Most signatures a [`ReplayGuard`] remembers by default.
pub const DEFAULT_REPLAY_CAPACITY: usize = 100_000;
/// Longest accepted timestamp, in digits (enough until the year 33658).
const MAX_TIMESTAMP_DIGITS: usize = 12;
const SIGNATURE_PREFIX: &str = "sha256=";

/// Why a webhook was refused. Messages never contain the secret, the signature or the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// No `X-CAIO-Timestamp` header.
    #[error("missing X-CAIO-Timestamp header")]
    MissingTimestamp,
    /// No `X-CAIO-Signature` header.
    #[error("missing X-CAIO-Signature header")]
    MissingSignature,
    /// The timestamp is not 1–12 decimal digits without leading zeros.
    #[error("X-CAIO-Timestamp must be unix seconds: 1 to 12 decimal digits")]
    MalformedTimestamp,
    /// The signature is not `sha256=` and 64 lowercase hex digits.
    #[error("X-CAIO-Signature must be sha256= followed by 64 lowercase hex digits")]
    MalformedSignature,
    /// The timestamp is further from the server's clock than the window allows.
    #[error("webhook timestamp is outside the accepted window")]
    Stale,
    /// The signature does not match the body and timestamp.
    #[error("bad webhook signature")]
    BadSignature,
    /// This signature was already accepted inside the window.
    #[error("webhook already received")]
    Replayed,
    /// The replay guard is full of unexpired signatures; retry later.
    #[error("too many webhooks in the replay window; retry later")]
    Busy,
    /// The configured secret is shorter than 32 bytes (a configuration error, not the sender's).
    #[error("webhook secret must be at least {MIN_SECRET_BYTES} bytes")]
    WeakSecret,
}

impl WebhookError {
    /// Stable snake_case reason for metrics and error details.
    pub fn reason(&self) -> &'static str {
        match self {
            WebhookError::MissingTimestamp => "missing_timestamp",
            WebhookError::MissingSignature => "missing_signature",
            WebhookError::MalformedTimestamp => "malformed_timestamp",
            WebhookError::MalformedSignature => "malformed_signature",
            WebhookError::Stale => "stale",
            WebhookError::BadSignature => "bad_signature",
            WebhookError::Replayed => "replayed",
            WebhookError::Busy => "busy",
            WebhookError::WeakSecret => "weak_secret",
        }
    }
}

/// Checks a per-service secret when it is configured: at least 32 bytes.
pub fn check_secret(secret: &[u8]) -> Result<(), WebhookError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(WebhookError::WeakSecret);
    }
    Ok(())
}

/// HMAC-SHA256 over `<timestamp>.<body>`. `new_from_slice` cannot fail for HMAC; `None` makes
/// callers fail closed if it ever did.
fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> Option<Hmac<Sha256>> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).ok()?;
    m.update(timestamp.as_bytes());
    m.update(b".");
    m.update(body);
    Some(m)
}

/// The `X-CAIO-Signature` value for a body sent at `timestamp_s`: `sha256=<hex>`.
pub fn sign(secret: &[u8], timestamp_s: u64, body: &[u8]) -> String {
    let digest = mac(secret, &timestamp_s.to_string(), body)
        .map(|m| m.finalize().into_bytes().to_vec())
        .unwrap_or_default();
    format!("{SIGNATURE_PREFIX}{}", hex::encode(digest))
}

/// 1–12 ASCII digits, no sign, no spaces, no leading zero (so each instant has one spelling).
fn parse_timestamp(s: &str) -> Result<u64, WebhookError> {
    let b = s.as_bytes();
    if b.is_empty()
        || b.len() > MAX_TIMESTAMP_DIGITS
        || !b.iter().all(u8::is_ascii_digit)
        || (b.len() > 1 && b[0] == b'0')
    {
        return Err(WebhookError::MalformedTimestamp);
    }
    s.parse().map_err(|_| WebhookError::MalformedTimestamp)
}

/// `sha256=` and exactly 64 lowercase hex digits, decoded.
fn parse_signature(s: &str) -> Result<[u8; 32], WebhookError> {
    let hex_part = s
        .strip_prefix(SIGNATURE_PREFIX)
        .ok_or(WebhookError::MalformedSignature)?;
    if hex_part.len() != 64 || hex_part.bytes().any(|c| c.is_ascii_uppercase()) {
        return Err(WebhookError::MalformedSignature);
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut out).map_err(|_| WebhookError::MalformedSignature)?;
    Ok(out)
}

/// Verifies a webhook and returns its timestamp. `timestamp` and `signature` are the header
/// values (`None` when absent). The signature is checked first, in constant time, so `Stale`
/// means "authentic but outside the window" (usually clock skew at the sender) and says nothing
/// to someone without the secret. A secret shorter than 32 bytes is refused (`WeakSecret`)
/// rather than trusted.
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_s: u64,
    window_s: u64,
) -> Result<u64, WebhookError> {
    check_secret(secret)?;
    let ts_text = timestamp.ok_or(WebhookError::MissingTimestamp)?;
    let sig_text = signature.ok_or(WebhookError::MissingSignature)?;
    let ts = parse_timestamp(ts_text)?;
    let sig = parse_signature(sig_text)?;
    let m = mac(secret, ts_text, body).ok_or(WebhookError::BadSignature)?;
    // verify_slice compares in constant time.
    m.verify_slice(&sig)
        .map_err(|_| WebhookError::BadSignature)?;
    if now_s.abs_diff(ts) > window_s {
        return Err(WebhookError::Stale);
    }
    Ok(ts)
}

/// Remembers accepted signatures for the freshness window and refuses a second delivery.
///
/// Memory is bounded: at most `capacity` signatures (about 100 bytes each) are kept. When the
/// guard is full of unexpired signatures it answers [`WebhookError::Busy`] rather than forgetting
/// one, because forgetting would let that signature be replayed. The guard is per process: servers
/// behind a load balancer need a shared store to catch a replay sent to a different server.
#[derive(Debug)]
pub struct ReplayGuard {
    window_s: u64,
    capacity: usize,
    state: Mutex<ReplayState>,
}

#[derive(Debug, Default)]
struct ReplayState {
    /// Signature → the last second at which it could still be accepted.
    seen: HashMap<[u8; 32], u64>,
    /// The same entries ordered by expiry, for pruning.
    by_expiry: BTreeSet<(u64, [u8; 32])>,
    /// The latest `now` seen. Pruning and the staleness check use it, so a clock stepping back
    /// cannot make a forgotten signature acceptable again.
    high_water_s: u64,
}

impl ReplayGuard {
    /// A guard for signatures valid `window_s` seconds either side of their timestamp, with the
    /// default capacity.
    pub fn new(window_s: u64) -> Self {
        Self::with_capacity(window_s, DEFAULT_REPLAY_CAPACITY)
    }

    /// A guard that remembers at most `capacity` signatures.
    pub fn with_capacity(window_s: u64, capacity: usize) -> Self {
        ReplayGuard {
            window_s,
            capacity,
            state: Mutex::new(ReplayState::default()),
        }
    }

    /// Records a verified signature. The same signature inside the window is `Replayed`; a
    /// timestamp outside the window is `Stale` (and not remembered); a full guard is `Busy`.
    pub fn check_and_remember(
        &self,
        signature: &str,
        timestamp_s: u64,
        now_s: u64,
    ) -> Result<(), WebhookError> {
        let sig = parse_signature(signature)?;
        let expires = timestamp_s.saturating_add(self.window_s);
        // Nothing in the map panics midway, so a poisoned lock still guards consistent data.
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.high_water_s = st.high_water_s.max(now_s);
        if expires < st.high_water_s || timestamp_s > now_s.saturating_add(self.window_s) {
            return Err(WebhookError::Stale);
        }
        let horizon = st.high_water_s;
        while let Some(&(exp, old)) = st.by_expiry.first() {
            if exp >= horizon {
                break;
            }
            st.by_expiry.pop_first();
            st.seen.remove(&old);
        }
        if st.seen.contains_key(&sig) {
            return Err(WebhookError::Replayed);
        }
        if st.seen.len() >= self.capacity {
            return Err(WebhookError::Busy);
        }
        st.seen.insert(sig, expires);
        st.by_expiry.insert((expires, sig));
        Ok(())
    }

    /// How many signatures are remembered (including expired ones not yet pruned).
    pub fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .seen
            .len()
    }

    /// Whether no signature is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &[u8] = b"whsec-0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"type":"heartbeat"}"#;

    fn check(
        ts: Option<&str>,
        sig: Option<&str>,
        body: &[u8],
        now: u64,
    ) -> Result<u64, WebhookError> {
        verify(SECRET, ts, sig, body, now, 300)
    }

    /// The worked example of docs/reference/authentication.md (computed there with openssl).
    #[test]
    fn documented_example() {
        assert_eq!(
            sign(SECRET, NOW, BODY),
            "sha256=83b478f2357f06bf4acfb8ecf6c48e041590539a74384dfe50e4745cbd940fdd"
        );
    }

    #[test]
    fn round_trip() {
        let sig = sign(SECRET, NOW, BODY);
        assert_eq!(check(Some("1700000000"), Some(&sig), BODY, NOW), Ok(NOW));
        let empty = sign(SECRET, NOW, b"");
        assert_eq!(check(Some("1700000000"), Some(&empty), b"", NOW), Ok(NOW));
        let big = vec![0xffu8; 1 << 20];
        let sig = sign(SECRET, NOW, &big);
        assert_eq!(check(Some("1700000000"), Some(&sig), &big, NOW), Ok(NOW));
        assert_eq!(
            check(Some("0"), Some(&sign(SECRET, 0, BODY)), BODY, 0),
            Ok(0)
        );
    }

    #[test]
    fn missing_headers() {
        let sig = sign(SECRET, NOW, BODY);
        assert_eq!(
            check(None, Some(&sig), BODY, NOW),
            Err(WebhookError::MissingTimestamp)
        );
        assert_eq!(
            check(Some("1700000000"), None, BODY, NOW),
            Err(WebhookError::MissingSignature)
        );
        assert_eq!(
            check(None, None, BODY, NOW),
            Err(WebhookError::MissingTimestamp)
        );
    }

    #[test]
    fn malformed_timestamps() {
        let sig = sign(SECRET, NOW, BODY);
        for ts in [
            "",
            " ",
            "-1",
            "+1700000000",
            " 1700000000",
            "1700000000 ",
            "1700000000.0",
            "1.7e9",
            "0x6553f100",
            "01700000000",
            "00",
            "1234567890123",
            "١٧٠٠٠٠٠٠٠٠",
            "1700000000\n",
            "9999999999999999999999",
        ] {
            assert_eq!(
                check(Some(ts), Some(&sig), BODY, NOW),
                Err(WebhookError::MalformedTimestamp),
                "{ts:?}"
            );
        }
        // Twelve digits are accepted as a timestamp (and then judged stale).
        let far = 999_999_999_999;
        let sig = sign(SECRET, far, BODY);
        assert_eq!(
            check(Some("999999999999"), Some(&sig), BODY, NOW),
            Err(WebhookError::Stale)
        );
    }

    #[test]
    fn malformed_signatures() {
        let good = sign(SECRET, NOW, BODY);
        let hex_part = &good[7..];
        let cases = [
            String::new(),
            hex_part.to_owned(),
            format!("sha1={hex_part}"),
            format!("SHA256={hex_part}"),
            format!("sha256={}", hex_part.to_uppercase()),
            format!("sha256={}", &hex_part[..63]),
            format!("sha256={hex_part}0"),
            format!("sha256= {}", &hex_part[1..]),
            format!("sha256={}g", &hex_part[..63]),
            format!("sha256={}é", &hex_part[..62]),
            format!("{good},{good}"),
            format!("v1,{hex_part}"),
            "sha256=".into(),
            "x".repeat(100_000),
        ];
        for s in &cases {
            assert_eq!(
                check(Some("1700000000"), Some(s), BODY, NOW),
                Err(WebhookError::MalformedSignature),
                "{:?}",
                &s[..s.len().min(80)]
            );
        }
    }

    #[test]
    fn bad_signatures() {
        let sig = sign(SECRET, NOW, BODY);
        assert_eq!(
            check(Some("1700000000"), Some(&sig), b"{}", NOW),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            check(Some("1700000001"), Some(&sig), BODY, NOW),
            Err(WebhookError::BadSignature)
        );
        let other = sign(b"another-secret-of-at-least-32-bytes!!", NOW, BODY);
        assert_eq!(
            check(Some("1700000000"), Some(&other), BODY, NOW),
            Err(WebhookError::BadSignature)
        );
        let zeros = format!("sha256={}", "0".repeat(64));
        assert_eq!(
            check(Some("1700000000"), Some(&zeros), BODY, NOW),
            Err(WebhookError::BadSignature)
        );
        // A bad signature on a stale request reports the signature, not the clock.
        assert_eq!(
            check(Some("1"), Some(&zeros), BODY, NOW),
            Err(WebhookError::BadSignature)
        );
    }

    #[test]
    fn window_boundaries() {
        for (ts, ok) in [
            (NOW - 300, true),
            (NOW - 301, false),
            (NOW + 300, true),
            (NOW + 301, false),
        ] {
            let sig = sign(SECRET, ts, BODY);
            let r = check(Some(&ts.to_string()), Some(&sig), BODY, NOW);
            assert_eq!(r.is_ok(), ok, "{ts}");
            if !ok {
                assert_eq!(r, Err(WebhookError::Stale));
            }
        }
        // Extreme clocks do not overflow.
        let sig = sign(SECRET, 0, BODY);
        assert_eq!(
            verify(SECRET, Some("0"), Some(&sig), BODY, u64::MAX, u64::MAX),
            Ok(0)
        );
    }

    #[test]
    fn weak_secrets_are_refused() {
        assert_eq!(check_secret(&[7; 31]), Err(WebhookError::WeakSecret));
        assert_eq!(check_secret(&[7; 32]), Ok(()));
        let sig = sign(b"", NOW, BODY);
        assert_eq!(
            verify(b"", Some("1700000000"), Some(&sig), BODY, NOW, 300),
            Err(WebhookError::WeakSecret)
        );
        assert!(!WebhookError::WeakSecret.to_string().contains("whsec"));
    }

    #[test]
    fn reasons_are_distinct() {
        let all = [
            WebhookError::MissingTimestamp,
            WebhookError::MissingSignature,
            WebhookError::MalformedTimestamp,
            WebhookError::MalformedSignature,
            WebhookError::Stale,
            WebhookError::BadSignature,
            WebhookError::Replayed,
            WebhookError::Busy,
            WebhookError::WeakSecret,
        ];
        let mut r: Vec<_> = all.iter().map(WebhookError::reason).collect();
        r.sort_unstable();
        r.dedup();
        assert_eq!(r.len(), all.len());
    }

    #[test]
    fn replay_guard_refuses_second_delivery() {
        let g = ReplayGuard::new(300);
        let a = sign(SECRET, NOW, BODY);
        let b = sign(SECRET, NOW, b"other");
        assert_eq!(g.check_and_remember(&a, NOW, NOW), Ok(()));
        assert_eq!(
            g.check_and_remember(&a, NOW, NOW + 1),
            Err(WebhookError::Replayed)
        );
        assert_eq!(g.check_and_remember(&b, NOW, NOW + 1), Ok(()));
        assert_eq!(g.len(), 2);
        // Still remembered at the last second of the window, stale after it.
        assert_eq!(
            g.check_and_remember(&a, NOW, NOW + 300),
            Err(WebhookError::Replayed)
        );
        assert_eq!(
            g.check_and_remember(&a, NOW, NOW + 301),
            Err(WebhookError::Stale)
        );
        assert_eq!(
            g.check_and_remember("sha256=zz", NOW, NOW),
            Err(WebhookError::MalformedSignature)
        );
    }

    #[test]
    fn replay_guard_prunes_and_is_bounded() {
        let g = ReplayGuard::with_capacity(10, 3);
        for i in 0..3u64 {
            let s = sign(SECRET, NOW, &i.to_be_bytes());
            assert_eq!(g.check_and_remember(&s, NOW, NOW), Ok(()));
        }
        let extra = sign(SECRET, NOW, b"extra");
        assert_eq!(
            g.check_and_remember(&extra, NOW, NOW + 5),
            Err(WebhookError::Busy)
        );
        assert_eq!(g.len(), 3, "nothing inside the window is forgotten");
        // After the window the old entries are pruned and there is room again.
        let later = sign(SECRET, NOW + 11, b"extra");
        assert_eq!(g.check_and_remember(&later, NOW + 11, NOW + 11), Ok(()));
        assert_eq!(g.len(), 1);
        assert!(!g.is_empty());
    }

    #[test]
    fn replay_guard_clock_stepping_back_does_not_resurrect() {
        let g = ReplayGuard::new(100);
        let s = sign(SECRET, NOW, BODY);
        assert_eq!(g.check_and_remember(&s, NOW, NOW), Ok(()));
        // Time jumps forward (pruning the entry), then back.
        let t = sign(SECRET, NOW + 1000, BODY);
        assert_eq!(g.check_and_remember(&t, NOW + 1000, NOW + 1000), Ok(()));
        assert_eq!(
            g.check_and_remember(&s, NOW, NOW + 50),
            Err(WebhookError::Stale)
        );
    }

    proptest! {
        /// Arbitrary header text and bodies never panic and never verify.
        #[test]
        fn arbitrary_headers_never_verify(
            ts in proptest::option::of("\\PC{0,20}"),
            sig in proptest::option::of("(sha256=)?[0-9a-fA-F]{0,70}|\\PC{0,80}"),
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            prop_assert!(verify(SECRET, ts.as_deref(), sig.as_deref(), &body, NOW, 300).is_err());
        }
    }
}
