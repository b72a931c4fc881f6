//! A Prometheus histogram for the timings every request records.
//!
//! prometheus-client's `Histogram` takes a mutex for each observation, and a route records seven
//! (the request, five stages, the trace batch) from both worker threads, so the lock's cache line
//! moves between cores several times per request. Here each thread adds to one of a few shards,
//! each on its own cache lines, with relaxed atomic adds; reading the metric sums the shards.
//! The exposition is the same as prometheus-client's histogram (`_sum`, `_count`, cumulative
//! `_bucket`s ending in `+Inf`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Shards per histogram: the worker threads (one per core), the blocking pool's threads and the
/// tests' threads take them in turn.
const SHARDS: usize = 8;

/// Upper bounds per histogram, `+Inf` not counted.
pub const MAX_BOUNDS: usize = 16;

/// One thread's counts: the buckets (`bounds.len()` of them, then `+Inf`) and the sum's bits.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    buckets: [AtomicU64; MAX_BOUNDS + 1],
    sum: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    bounds: Vec<f64>,
    shards: [Shard; SHARDS],
}

/// A histogram with fixed upper bounds (at most [`MAX_BOUNDS`], ascending); cloning shares it.
#[derive(Debug, Clone)]
pub struct ShardedHistogram {
    inner: Arc<Inner>,
}

/// This thread's shard index.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|i| *i)
}

impl ShardedHistogram {
    /// A histogram over `bounds`: the first [`MAX_BOUNDS`] finite ones, in ascending order.
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> ShardedHistogram {
        let mut bounds: Vec<f64> = bounds.into_iter().filter(|b| b.is_finite()).collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        bounds.truncate(MAX_BOUNDS);
        ShardedHistogram {
            inner: Arc::new(Inner {
                bounds,
                shards: Default::default(),
            }),
        }
    }

    /// Records one value (a NaN counts in `+Inf`, as prometheus-client does).
    pub fn observe(&self, v: f64) {
        let inner = &*self.inner;
        let bucket = inner
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(inner.bounds.len());
        let shard = &inner.shards[shard_index()];
        if let Some(b) = shard.buckets.get(bucket) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        // Only this thread (and the rare other thread sharing its shard) writes here: the
        // exchange almost never retries.
        let mut bits = shard.sum.load(Ordering::Relaxed);
        loop {
            let next = (f64::from_bits(bits) + v).to_bits();
            match shard
                .sum
                .compare_exchange_weak(bits, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => bits = now,
            }
        }
    }

    /// The sum, the count and the per-bucket counts (not cumulative; the last bound is
    /// `f64::INFINITY`, which the encoders write as `+Inf`). The count is the buckets' total, so the
    /// two agree even while other threads observe.
    pub fn get(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let inner = &*self.inner;
        let mut buckets: Vec<(f64, u64)> = inner
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .map(|b| (b, 0))
            .collect();
        let mut sum = 0.0;
        for shard in &inner.shards {
            for (slot, count) in buckets.iter_mut().zip(&shard.buckets) {
                slot.1 += count.load(Ordering::Relaxed);
            }
            sum += f64::from_bits(shard.sum.load(Ordering::Relaxed));
        }
        let count = buckets.iter().map(|(_, n)| n).sum();
        (sum, count, buckets)
    }
}

impl TypedMetric for ShardedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for ShardedHistogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.get();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::histogram::Histogram;
    use prometheus_client::registry::Registry;

    use super::*;

    fn exposition(register: impl FnOnce(&mut Registry)) -> String {
        let mut registry = Registry::default();
        register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .unwrap_or_else(|e| panic!("{e}"));
        out
    }

    #[test]
    fn it_reads_as_prometheus_clients_histogram_for_the_same_observations() {
        let bounds = [0.001, 0.01, 0.1, 1.0];
        let ours = ShardedHistogram::new(bounds);
        let theirs = Histogram::new(bounds);
        // Values on the bounds, between them, beyond the last, and zero.
        let values = [0.0, 0.001, 0.0015, 0.01, 0.5, 1.0, 7.0, 0.00001];
        std::thread::scope(|s| {
            for t in 0..4 {
                let (ours, theirs) = (&ours, &theirs);
                s.spawn(move || {
                    for i in 0..1000 {
                        let v = values[(i + t) % values.len()];
                        ours.observe(v);
                        theirs.observe(v);
                    }
                });
            }
        });
        let a = exposition(|r| r.register("t", "timings", ours.clone()));
        let b = exposition(|r| r.register("t", "timings", theirs.clone()));
        // The sums are added in different orders: compare them as numbers, the rest as text.
        let split = |text: &str| -> (Vec<String>, f64) {
            let sum = text
                .lines()
                .find_map(|l| l.strip_prefix("t_sum "))
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN);
            let rest = text
                .lines()
                .filter(|l| !l.starts_with("t_sum "))
                .map(str::to_owned)
                .collect();
            (rest, sum)
        };
        let ((a_lines, a_sum), (b_lines, b_sum)) = (split(&a), split(&b));
        assert_eq!(a_lines, b_lines, "ours:\n{a}\ntheirs:\n{b}");
        assert!((a_sum - b_sum).abs() < 1e-9, "{a_sum} against {b_sum}");
        assert!(a.contains("t_count 4000"), "{a}");
        assert!(a.contains("t_bucket{le=\"+Inf\"} 4000"), "{a}");
    }

    #[test]
    fn bounds_are_sorted_finite_and_capped() {
        let h = ShardedHistogram::new([5.0, f64::NAN, 1.0, f64::INFINITY, 1.0]);
        h.observe(f64::NAN);
        h.observe(3.0);
        let (_, count, buckets) = h.get();
        assert_eq!(count, 2);
        assert_eq!(buckets, vec![(1.0, 0), (5.0, 1), (f64::INFINITY, 1)]);
        let many = ShardedHistogram::new((0..40).map(f64::from));
        assert_eq!(many.get().2.len(), MAX_BOUNDS + 1);
    }
}
