//! Per-principal rate limiting with token buckets: each key may spend `burst` requests at once
//! and regains `per_second` of them per second.
//!
//! Tokens are counted in fixed point (10^12 units per token) with the refill rate rounded down,
//! so arithmetic is exact and the limiter can only be stricter than configured, never looser —
//! which is what the property test below holds it to.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

/// Units per token: fine enough that any sensible `per_second` refills exactly per millisecond.
const UNIT: u128 = 1_000_000_000_000;
/// Shards, each its own lock, so requests for different keys rarely contend.
const SHARDS: usize = 16;
/// Default bound on the number of distinct keys held (about 100 bytes each).
pub const DEFAULT_MAX_KEYS: usize = 100_000;
/// How long a refused newcomer is asked to wait when the limiter is full of active keys.
const FULL_RETRY_MS: u64 = 1_000;

/// A token-bucket limit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Sustained requests per second (finite, > 0; fractions allowed, e.g. 0.5).
    pub per_second: f64,
    /// Requests that may be made at once after a quiet period (>= 1).
    pub burst: u32,
}

impl RateLimit {
    /// Checks the limit: `per_second` finite and at least 10⁻⁹ (one request per 31 years), and
    /// `burst` at least 1.
    pub fn validate(&self) -> Result<(), String> {
        if !self.per_second.is_finite() || self.per_second <= 0.0 {
            return Err(format!(
                "rate limit per_second must be a finite number > 0, got {}",
                self.per_second
            ));
        }
        if refill_per_ms(self.per_second) == 0 {
            return Err(format!(
                "rate limit per_second must be at least 0.000000001, got {}",
                self.per_second
            ));
        }
        if self.burst == 0 {
            return Err("rate limit burst must be at least 1".to_owned());
        }
        Ok(())
    }
}

/// Units regained per millisecond, rounded down (`as` saturates for huge rates).
fn refill_per_ms(per_second: f64) -> u128 {
    (per_second * (UNIT as f64) / 1000.0).floor() as u128
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// The burst size (for a `RateLimit-Limit`-style header).
    pub limit: u32,
    /// Whole tokens left after this request.
    pub remaining: u32,
    /// Milliseconds until one token is available; 0 when allowed. Round up to seconds for a
    /// `Retry-After` header.
    pub retry_after_ms: u64,
}

/// Decides whether a request under `key` may proceed at `now_ms`.
pub trait RateLimiter: Send + Sync + std::fmt::Debug {
    /// Takes one token from `key`'s bucket if there is one.
    fn check(&self, key: &str, now_ms: u64) -> RateDecision;
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    units: u128,
    last_ms: u64,
}

#[derive(Debug, Default)]
struct Shard {
    buckets: HashMap<String, Bucket>,
    /// The latest time seen in this shard; new buckets start there (see `check`).
    high_water_ms: u64,
}

/// An in-process token-bucket limiter.
///
/// Memory stays bounded under many distinct keys: when a shard reaches its share of `max_keys`,
/// buckets that have refilled completely are dropped (a full bucket and a missing one behave
/// the same). If every bucket is still active, a new key is refused (`retry_after_ms` = 1000)
/// rather than resetting someone's partly spent bucket, which would hand out free tokens.
#[derive(Debug)]
pub struct MemoryRateLimiter {
    limit: RateLimit,
    capacity: u128,
    refill_per_ms: u128,
    max_per_shard: usize,
    hasher: RandomState,
    shards: Vec<Mutex<Shard>>,
}

impl MemoryRateLimiter {
    /// A limiter holding up to [`DEFAULT_MAX_KEYS`] keys.
    pub fn new(limit: RateLimit) -> Result<Self, String> {
        Self::with_max_keys(limit, DEFAULT_MAX_KEYS)
    }

    /// A limiter holding up to about `max_keys` keys (at least one per shard).
    pub fn with_max_keys(limit: RateLimit, max_keys: usize) -> Result<Self, String> {
        limit.validate()?;
        Ok(MemoryRateLimiter {
            limit,
            capacity: u128::from(limit.burst) * UNIT,
            refill_per_ms: refill_per_ms(limit.per_second),
            max_per_shard: max_keys.div_ceil(SHARDS).max(1),
            // A random hasher so nobody can aim many keys at one shard.
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        })
    }

    /// The configured limit.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Keys currently held.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .buckets
                    .len()
            })
            .sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Brings a bucket up to `now_ms`. Time that goes backwards adds nothing and does not move
    /// `last_ms` back, so it cannot mint tokens when it goes forward again.
    fn refill(&self, b: &mut Bucket, now_ms: u64) {
        if now_ms > b.last_ms {
            let gained = u128::from(now_ms - b.last_ms).saturating_mul(self.refill_per_ms);
            b.units = b.units.saturating_add(gained).min(self.capacity);
            b.last_ms = now_ms;
        }
    }

    fn take(&self, b: &mut Bucket) -> RateDecision {
        if b.units >= UNIT {
            b.units -= UNIT;
            RateDecision {
                allowed: true,
                limit: self.limit.burst,
                remaining: u32::try_from(b.units / UNIT).unwrap_or(u32::MAX),
                retry_after_ms: 0,
            }
        } else {
            let missing = UNIT - b.units;
            let ms = missing.div_ceil(self.refill_per_ms);
            RateDecision {
                allowed: false,
                limit: self.limit.burst,
                remaining: 0,
                retry_after_ms: u64::try_from(ms).unwrap_or(u64::MAX),
            }
        }
    }
}

impl RateLimiter for MemoryRateLimiter {
    fn check(&self, key: &str, now_ms: u64) -> RateDecision {
        let idx = (self.hasher.hash_one(key) % SHARDS as u64) as usize;
        let Some(shard) = self.shards.get(idx) else {
            // Unreachable (idx < SHARDS); refusing is the safe answer.
            return RateDecision {
                allowed: false,
                limit: self.limit.burst,
                remaining: 0,
                retry_after_ms: FULL_RETRY_MS,
            };
        };
        // No code path panics while holding the lock with a half-updated bucket.
        let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        shard.high_water_ms = shard.high_water_ms.max(now_ms);
        if let Some(b) = shard.buckets.get_mut(key) {
            self.refill(b, now_ms);
            return self.take(b);
        }
        if shard.buckets.len() >= self.max_per_shard {
            let capacity = self.capacity;
            let rate = self.refill_per_ms;
            shard.buckets.retain(|_, b| {
                let gained = u128::from(now_ms.saturating_sub(b.last_ms)).saturating_mul(rate);
                b.units.saturating_add(gained) < capacity
            });
            if shard.buckets.len() >= self.max_per_shard {
                return RateDecision {
                    allowed: false,
                    limit: self.limit.burst,
                    remaining: 0,
                    retry_after_ms: FULL_RETRY_MS,
                };
            }
        }
        // A new bucket starts full at the shard's latest time, not at `now_ms`: if the clock
        // stepped back, starting earlier would let it refill twice over the same interval
        // (once as the dropped bucket, once as this one).
        let mut b = Bucket {
            units: self.capacity,
            last_ms: shard.high_water_ms,
        };
        let decision = self.take(&mut b);
        shard.buckets.insert(key.to_owned(), b);
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limiter(per_second: f64, burst: u32) -> MemoryRateLimiter {
        MemoryRateLimiter::new(RateLimit { per_second, burst }).unwrap()
    }

    #[test]
    fn invalid_limits() {
        for (per_second, burst) in [
            (0.0, 1),
            (-1.0, 1),
            (f64::NAN, 1),
            (f64::INFINITY, 1),
            (1e-12, 1),
            (1.0, 0),
        ] {
            assert!(
                MemoryRateLimiter::new(RateLimit { per_second, burst }).is_err(),
                "{per_second} {burst}"
            );
        }
        assert!(
            MemoryRateLimiter::new(RateLimit {
                per_second: 1e-9,
                burst: 1
            })
            .is_ok()
        );
        assert!(
            MemoryRateLimiter::new(RateLimit {
                per_second: 1e300,
                burst: u32::MAX
            })
            .is_ok()
        );
    }

    #[test]
    fn burst_then_refill() {
        let l = limiter(2.0, 3);
        let t = 1_000_000;
        let d: Vec<_> = (0..4).map(|_| l.check("alice", t)).collect();
        assert_eq!(
            d.iter()
                .map(|d| (d.allowed, d.remaining))
                .collect::<Vec<_>>(),
            [(true, 2), (true, 1), (true, 0), (false, 0)]
        );
        assert!(d.iter().all(|d| d.limit == 3));
        assert_eq!(d[3].retry_after_ms, 500);
        assert_eq!(d[0].retry_after_ms, 0);
        // 250 ms later: half a token, 250 ms to go.
        assert_eq!(l.check("alice", t + 250).retry_after_ms, 250);
        assert!(l.check("alice", t + 500).allowed);
        assert!(!l.check("alice", t + 500).allowed);
        // Other keys are independent.
        assert!(l.check("bob", t).allowed);
        // A long pause refills to the burst, not beyond.
        let after: Vec<_> = (0..4)
            .map(|_| l.check("alice", t + 3_600_000).allowed)
            .collect();
        assert_eq!(after, [true, true, true, false]);
    }

    #[test]
    fn fractional_rates() {
        let l = limiter(0.5, 1);
        assert!(l.check("k", 0).allowed);
        let d = l.check("k", 0);
        assert_eq!((d.allowed, d.retry_after_ms), (false, 2000));
        assert!(!l.check("k", 1999).allowed);
        assert!(l.check("k", 2000).allowed);
    }

    #[test]
    fn time_going_backwards_mints_nothing() {
        let l = limiter(1.0, 2);
        assert!(l.check("k", 10_000).allowed);
        assert!(l.check("k", 10_000).allowed);
        assert!(!l.check("k", 0).allowed, "no tokens from the past");
        assert!(!l.check("k", 5_000).allowed);
        // Going forward again counts from the latest time seen, once.
        assert!(!l.check("k", 10_999).allowed);
        assert!(l.check("k", 11_000).allowed);
        assert!(!l.check("k", 11_000).allowed);
        // Extremes do not panic.
        let _ = l.check("k", u64::MAX);
        let _ = l.check("k", 0);
        let _ = l.check("", u64::MAX);
    }

    #[test]
    fn memory_stays_bounded() {
        let l = MemoryRateLimiter::with_max_keys(
            RateLimit {
                per_second: 1.0,
                burst: 1,
            },
            64,
        )
        .unwrap();
        // Many keys over time: idle ones refill and are dropped.
        for i in 0..10_000u64 {
            let _ = l.check(&format!("k{i}"), i * 10_000);
            assert!(l.len() <= 64, "{} keys at step {i}", l.len());
        }
        // Many active keys at one instant: newcomers beyond the bound are refused, not let in
        // by resetting someone else's bucket.
        let l = MemoryRateLimiter::with_max_keys(
            RateLimit {
                per_second: 1.0,
                burst: 1,
            },
            16,
        )
        .unwrap();
        let mut refused = 0;
        for i in 0..1000 {
            let d = l.check(&format!("k{i}"), 0);
            if !d.allowed {
                refused += 1;
                assert_eq!(d.retry_after_ms, 1000);
            }
        }
        assert!(l.len() <= 16);
        assert_eq!(refused, 1000 - l.len());
        // Once they refill, room frees up.
        assert!(l.check("newcomer", 1000).allowed);
    }

    /// The property the limiter promises: for any key and any window [a, b] of a time-ordered
    /// call sequence, allowed calls ≤ burst + per_second · (b − a).
    fn assert_bound(calls: &[(usize, u64)], allowed: &[bool], limit: RateLimit) {
        for key in 0..4 {
            let times: Vec<u64> = calls
                .iter()
                .zip(allowed)
                .filter(|((k, _), ok)| *k == key && **ok)
                .map(|((_, t), _)| *t)
                .collect();
            for i in 0..times.len() {
                for j in i..times.len() {
                    let window_s = (times[j] - times[i]) as f64 / 1000.0;
                    let bound = f64::from(limit.burst) + limit.per_second * window_s;
                    assert!(
                        (j - i + 1) as f64 <= bound + 1e-9,
                        "key {key}: {} allowed in {window_s}s, bound {bound}",
                        j - i + 1
                    );
                }
            }
        }
    }

    proptest! {
        #[test]
        fn allowed_calls_never_exceed_the_bucket(
            per_second in 0.1f64..50.0,
            burst in 1u32..8,
            steps in proptest::collection::vec((0usize..4, 0u64..1500), 1..200),
            max_keys in prop_oneof![Just(16usize), Just(DEFAULT_MAX_KEYS)],
        ) {
            let limit = RateLimit { per_second, burst };
            let l = MemoryRateLimiter::with_max_keys(limit, max_keys).unwrap();
            let mut t = 0u64;
            let calls: Vec<(usize, u64)> = steps.iter().map(|&(k, dt)| { t += dt; (k, t) }).collect();
            let allowed: Vec<bool> = calls.iter().map(|&(k, t)| l.check(&format!("key-{k}"), t).allowed).collect();
            assert_bound(&calls, &allowed, limit);
        }

        /// With arbitrary (unordered) times, a key never gets more than burst plus the refill
        /// over the span of times it has seen.
        #[test]
        fn unordered_time_never_mints(
            per_second in 0.1f64..50.0,
            burst in 1u32..8,
            times in proptest::collection::vec(0u64..100_000, 1..200),
        ) {
            let limit = RateLimit { per_second, burst };
            let l = MemoryRateLimiter::new(limit).unwrap();
            let allowed = times.iter().filter(|&&t| l.check("k", t).allowed).count();
            let span = times.iter().max().unwrap_or(&0) - times.iter().min().unwrap_or(&0);
            let bound = f64::from(burst) + per_second * span as f64 / 1000.0;
            prop_assert!(allowed as f64 <= bound + 1e-9, "{allowed} > {bound}");
        }

        /// retry_after_ms is exact: one millisecond earlier is refused, at it one call passes.
        #[test]
        fn retry_after_is_honest(per_second in 0.1f64..50.0, burst in 1u32..4) {
            let l = limiter(per_second, burst);
            for _ in 0..burst { prop_assert!(l.check("k", 1_000).allowed); }
            let d = l.check("k", 1_000);
            prop_assert!(!d.allowed);
            prop_assert!(d.retry_after_ms > 0);
            if d.retry_after_ms > 1 {
                prop_assert!(!l.check("k", 1_000 + d.retry_after_ms - 1).allowed);
            }
            prop_assert!(l.check("k", 1_000 + d.retry_after_ms).allowed);
        }
    }
}
