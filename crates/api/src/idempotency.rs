//! Idempotency keys for `POST /api/v1/execute`: a retried request with the same
//! `Idempotency-Key` gets the first outcome again instead of calling the service twice.
//!
//! Keys are scoped to the principal (tenant and id), so two callers cannot collide or read each
//! other's outcomes. The same key with a different body is refused (422), a key whose first
//! request is still running answers 409, and outcomes are kept for `ttl` (24 h by default) in a
//! bounded map (oldest evicted first). Only executed outcomes (200 and 502) are kept: a request
//! refused before it executed may be retried with the same key.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use caio_contracts::canonical::Sha256;

/// The first outcome of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: Bytes,
    /// The decision it executed.
    pub decision_id: String,
}

/// What `begin` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// First use: run the request, then `finish` (or drop the guard to forget it).
    Fresh,
    /// Seen and finished: answer this.
    Replay(Stored),
    /// The first request with this key is still running.
    InProgress,
    /// The key was used with a different request.
    Mismatch,
}

#[derive(Debug)]
enum Slot {
    Running {
        fingerprint: [u8; 32],
        since_ms: u64,
    },
    Done {
        fingerprint: [u8; 32],
        at_ms: u64,
        stored: Stored,
    },
}

/// Where idempotency keys live (memory now; shared through Redis in cluster mode).
pub trait IdempotencyStore: Send + Sync + std::fmt::Debug {
    /// Claims `key` for a request with `fingerprint`.
    fn begin(&self, key: &str, fingerprint: [u8; 32], now_ms: u64) -> Begin;
    /// Records the outcome of a claimed key.
    fn finish(&self, key: &str, stored: Stored, now_ms: u64);
    /// Releases a claimed key without an outcome.
    fn abandon(&self, key: &str);
}

/// Keys in memory.
#[derive(Debug)]
pub struct MemoryIdempotency {
    slots: Mutex<(HashMap<String, Slot>, VecDeque<String>)>,
    ttl_ms: u64,
    /// A running claim older than this is taken over (its request died without releasing it).
    stale_ms: u64,
    max_entries: usize,
}

impl MemoryIdempotency {
    /// A store keeping outcomes `ttl_ms`, at most `max_entries` of them.
    pub fn new(ttl_ms: u64, stale_ms: u64, max_entries: usize) -> MemoryIdempotency {
        MemoryIdempotency {
            slots: Mutex::new((HashMap::new(), VecDeque::new())),
            ttl_ms,
            stale_ms,
            max_entries: max_entries.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, (HashMap<String, Slot>, VecDeque<String>)> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl IdempotencyStore for MemoryIdempotency {
    fn begin(&self, key: &str, fingerprint: [u8; 32], now_ms: u64) -> Begin {
        let mut guard = self.lock();
        let (slots, order) = &mut *guard;
        match slots.get(key) {
            Some(Slot::Done {
                fingerprint: f,
                at_ms,
                stored,
            }) if now_ms.saturating_sub(*at_ms) < self.ttl_ms => {
                return if *f == fingerprint {
                    Begin::Replay(stored.clone())
                } else {
                    Begin::Mismatch
                };
            }
            Some(Slot::Running {
                fingerprint: f,
                since_ms,
            }) if now_ms.saturating_sub(*since_ms) < self.stale_ms => {
                return if *f == fingerprint {
                    Begin::InProgress
                } else {
                    Begin::Mismatch
                };
            }
            _ => {}
        }
        // New, expired or stale: claim it. When full, expired outcomes go first; then the
        // oldest finished ones. A running claim is never evicted (its request would run twice).
        if slots.len() >= self.max_entries {
            let (ttl, stale) = (self.ttl_ms, self.stale_ms);
            slots.retain(|_, slot| match slot {
                Slot::Done { at_ms, .. } => now_ms.saturating_sub(*at_ms) < ttl,
                Slot::Running { since_ms, .. } => now_ms.saturating_sub(*since_ms) < stale,
            });
            order.retain(|k| slots.contains_key(k));
        }
        let mut kept = VecDeque::new();
        while slots.len() >= self.max_entries {
            let Some(old) = order.pop_front() else { break };
            if matches!(slots.get(&old), Some(Slot::Running { .. })) {
                kept.push_back(old);
            } else {
                slots.remove(&old);
            }
        }
        while let Some(k) = kept.pop_back() {
            order.push_front(k);
        }
        if slots.len() >= self.max_entries {
            // Every entry is a running request: refuse to track more rather than forget one.
            return Begin::InProgress;
        }
        if slots
            .insert(
                key.to_owned(),
                Slot::Running {
                    fingerprint,
                    since_ms: now_ms,
                },
            )
            .is_none()
        {
            order.push_back(key.to_owned());
        }
        Begin::Fresh
    }

    fn finish(&self, key: &str, stored: Stored, now_ms: u64) {
        let mut guard = self.lock();
        if let Some(slot) = guard.0.get_mut(key) {
            let fingerprint = match slot {
                Slot::Running { fingerprint, .. } | Slot::Done { fingerprint, .. } => *fingerprint,
            };
            *slot = Slot::Done {
                fingerprint,
                at_ms: now_ms,
                stored,
            };
        }
    }

    fn abandon(&self, key: &str) {
        let mut guard = self.lock();
        if matches!(guard.0.get(key), Some(Slot::Running { .. })) {
            guard.0.remove(key);
            guard.1.retain(|k| k != key);
        }
    }
}

/// The store key of a principal's idempotency key.
pub fn scoped(tenant: &str, principal: &str, key: &str) -> String {
    format!("{tenant}\u{0}{principal}\u{0}{key}")
}

/// SHA-256 of what identifies a request.
pub fn fingerprint(path: &str, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(path.as_bytes());
    h.update(&[0]);
    h.update(body);
    h.finish()
}

/// An `Idempotency-Key` value: 1–255 visible ASCII characters.
pub fn valid_key(key: &str) -> bool {
    (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

/// Releases a claimed key unless the request finished (so a request dropped mid-way — a client
/// that left — does not hold its key until it goes stale).
#[derive(Debug)]
pub struct Claim {
    store: Arc<dyn IdempotencyStore>,
    key: Option<String>,
}

impl Claim {
    /// A claim on `key`.
    pub fn new(store: Arc<dyn IdempotencyStore>, key: String) -> Claim {
        Claim {
            store,
            key: Some(key),
        }
    }

    /// Records the outcome; the claim is done.
    pub fn finish(mut self, stored: Stored, now_ms: u64) {
        if let Some(k) = self.key.take() {
            self.store.finish(&k, stored, now_ms);
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            self.store.abandon(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(n: u8) -> Stored {
        Stored {
            status: 200,
            body: Bytes::from(vec![n]),
            decision_id: format!("d{n}"),
        }
    }

    #[test]
    fn first_use_then_replay_then_mismatch() {
        let s = MemoryIdempotency::new(1000, 100, 10);
        let f = fingerprint("/x", b"body");
        assert_eq!(s.begin("k", f, 0), Begin::Fresh);
        assert_eq!(s.begin("k", f, 1), Begin::InProgress);
        assert_eq!(
            s.begin("k", fingerprint("/x", b"other"), 1),
            Begin::Mismatch
        );
        s.finish("k", stored(1), 2);
        assert_eq!(s.begin("k", f, 3), Begin::Replay(stored(1)));
        assert_eq!(s.begin("k", fingerprint("/y", b"body"), 3), Begin::Mismatch);
        // After the TTL the key is new again.
        assert_eq!(s.begin("k", f, 1002), Begin::Fresh);
    }

    #[test]
    fn abandoned_and_stale_claims_free_the_key() {
        let store: Arc<dyn IdempotencyStore> = Arc::new(MemoryIdempotency::new(1000, 100, 10));
        let f = fingerprint("/x", b"b");
        assert_eq!(store.begin("k", f, 0), Begin::Fresh);
        drop(Claim::new(Arc::clone(&store), "k".into()));
        assert_eq!(store.begin("k", f, 1), Begin::Fresh);
        // A claim nobody finished nor dropped goes stale.
        assert_eq!(store.begin("k", f, 50), Begin::InProgress);
        assert_eq!(store.begin("k", f, 101), Begin::Fresh);
        // A finished claim is not abandoned by its guard.
        let c = Claim::new(Arc::clone(&store), "k".into());
        c.finish(stored(2), 102);
        assert_eq!(store.begin("k", f, 103), Begin::Replay(stored(2)));
    }

    #[test]
    fn running_claims_are_never_evicted_and_expired_ones_go_first() {
        let s = MemoryIdempotency::new(100, 1_000_000, 2);
        let f = fingerprint("/x", b"b");
        assert_eq!(s.begin("run", f, 0), Begin::Fresh);
        assert_eq!(s.begin("done", f, 0), Begin::Fresh);
        s.finish("done", stored(1), 0);
        // Full: the finished one goes, the running one stays.
        assert_eq!(s.begin("new", f, 1), Begin::Fresh);
        assert_eq!(s.begin("run", f, 2), Begin::InProgress);
        // Full of running claims: a new key is refused rather than evicting one.
        assert_eq!(s.begin("another", f, 3), Begin::InProgress);
        s.finish("new", stored(2), 4);
        // After the TTL the finished entry is purged first.
        assert_eq!(s.begin("later", f, 500), Begin::Fresh);
        assert_eq!(s.begin("run", f, 501), Begin::InProgress);
    }

    #[test]
    fn the_map_is_bounded_oldest_first() {
        let s = MemoryIdempotency::new(1_000_000, 1_000_000, 3);
        let f = fingerprint("/x", b"b");
        for k in ["a", "b", "c", "d"] {
            assert_eq!(s.begin(k, f, 0), Begin::Fresh);
            s.finish(k, stored(1), 0);
        }
        assert_eq!(s.begin("a", f, 1), Begin::Fresh, "the oldest was evicted");
        assert_eq!(s.begin("d", f, 1), Begin::Replay(stored(1)));
    }

    #[test]
    fn keys_are_checked_and_scoped() {
        assert!(valid_key("order-42"));
        for bad in ["", "has space", "tab\t", "é", &"k".repeat(256)] {
            assert!(!valid_key(bad), "{bad:?}");
        }
        assert_ne!(scoped("t", "p1", "k"), scoped("t", "p2", "k"));
        assert_ne!(scoped("t1", "p", "k"), scoped("t2", "p", "k"));
    }
}
