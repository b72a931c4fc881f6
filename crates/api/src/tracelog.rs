//! Trace persistence for handlers: every response leaves only after its trace is in the store.
//!
//! Buffered durability (the default): the handler writes its record itself, one `write` to the
//! page cache under the store's lock (about 5 µs for a 5.6 KB decision). Handing the record to
//! another task cost more than the write: the spawn and the reply wake a second worker, which put
//! about 70 µs on the 1-connection latency and nothing back on throughput (docs/benchmarks.md).
//!
//! Fsync durability: group commit. A handler queues its record and waits for it to be written;
//! whoever finds no write in progress starts one, and that write takes every record queued so far
//! in one batch, so one `fdatasync` carries many decisions. The write runs in a spawned task on
//! the blocking pool, never in the handler's own future: a client that disconnects mid-write
//! cannot cancel a batch that carries other clients' records.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use caio_trace::{Durability, TraceRecord, TraceStore};
use tokio::sync::oneshot;

use crate::metrics::Metrics;

type Reply = oneshot::Sender<Result<u64, String>>;

#[derive(Default)]
struct Queue {
    records: Vec<TraceRecord>,
    replies: Vec<Reply>,
    /// A drain task is running.
    writing: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    store: Arc<dyn TraceStore>,
    durability: Durability,
    healthy: AtomicBool,
    metrics: Arc<Metrics>,
}

/// The handle handlers share.
#[derive(Clone)]
pub struct TraceWriter {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TraceWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceWriter")
            .field("durability", &self.shared.durability)
            .field("healthy", &self.healthy())
            .finish_non_exhaustive()
    }
}

impl TraceWriter {
    /// A writer over `store`.
    pub fn new(
        store: Arc<dyn TraceStore>,
        durability: Durability,
        metrics: Arc<Metrics>,
    ) -> TraceWriter {
        TraceWriter {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue::default()),
                store,
                durability,
                healthy: AtomicBool::new(true),
                metrics,
            }),
        }
    }

    /// Writes one record and returns its sequence number once it is in the store.
    pub async fn append(&self, record: TraceRecord) -> Result<u64, String> {
        if self.shared.durability == Durability::Buffered {
            return self.append_now(record);
        }
        let (reply, wait) = oneshot::channel();
        let start = {
            let mut q = self
                .shared
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            q.records.push(record);
            q.replies.push(reply);
            !std::mem::replace(&mut q.writing, true)
        };
        if start {
            tokio::spawn(drain(Arc::clone(&self.shared)));
        }
        wait.await
            .map_err(|_| "the trace writer stopped before writing".to_owned())?
    }

    /// Buffered durability: one `write` to the page cache, on this worker, under the store's
    /// lock. No queue, no task, no wake-up: those cost more than the write they would batch.
    fn append_now(&self, record: TraceRecord) -> Result<u64, String> {
        let shared = &self.shared;
        shared.metrics.trace_batch_size.observe(1.0);
        match shared.store.append_batch(vec![record]) {
            Ok(seqs) => {
                shared.healthy.store(true, Ordering::Relaxed);
                shared.metrics.traces_persisted.inc();
                seqs.first()
                    .copied()
                    .ok_or_else(|| "the store returned no sequence number".to_owned())
            }
            Err(e) => {
                shared.healthy.store(false, Ordering::Relaxed);
                tracing::error!(error = %e, records = 1, "trace store write failed");
                Err(e.to_string())
            }
        }
    }

    /// Whether the last write succeeded.
    pub fn healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Relaxed)
    }

    /// The store, for reads.
    pub fn store(&self) -> &Arc<dyn TraceStore> {
        &self.shared.store
    }
}

/// Writes batches until the queue is empty.
async fn drain(shared: Arc<Shared>) {
    let mut first = true;
    loop {
        // Let other tasks on this worker run (and queue more records) between batches: a
        // buffered write never awaits, so without this a busy drain would hold the worker.
        if !first {
            tokio::task::yield_now().await;
        }
        first = false;
        let (records, replies) = {
            let mut q = shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
            if q.records.is_empty() {
                q.writing = false;
                return;
            }
            (
                std::mem::take(&mut q.records),
                std::mem::take(&mut q.replies),
            )
        };
        let n = records.len();
        shared.metrics.trace_batch_size.observe(n as f64);
        let result = match shared.durability {
            // Buffered appends do not come here (see `append`); the arm keeps a batch correct
            // if they ever do.
            Durability::Buffered => shared.store.append_batch(records),
            Durability::Fsync => {
                let store = Arc::clone(&shared.store);
                tokio::task::spawn_blocking(move || store.append_batch(records))
                    .await
                    .unwrap_or_else(|e| {
                        Err(caio_trace::StoreError::Invalid(format!(
                            "the write task failed: {e}"
                        )))
                    })
            }
        };
        match result {
            Ok(seqs) => {
                shared.healthy.store(true, Ordering::Relaxed);
                shared.metrics.traces_persisted.inc_by(n as u64);
                for (reply, seq) in replies.into_iter().zip(seqs) {
                    let _ = reply.send(Ok(seq));
                }
            }
            Err(e) => {
                shared.healthy.store(false, Ordering::Relaxed);
                tracing::error!(error = %e, records = n, "trace store write failed");
                let msg = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(msg.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use caio_trace::{FileTraceStore, Outcome, TraceBody};

    use super::*;

    fn record(n: usize) -> TraceRecord {
        TraceRecord {
            decision_id: format!("sha256:{n:064x}"),
            recorded_at_ms: n as u64,
            tenant: "t".into(),
            principal_id: "p".into(),
            service_id: Some("svc".into()),
            outcome: Outcome::Routed,
            body: TraceBody::serialize(&serde_json::json!({ "n": n })).unwrap(),
        }
    }

    /// 200 concurrent appends on two workers: every one gets its own sequence number, the numbers
    /// are 1..=200, and the file holds every record after a reopen.
    async fn concurrent(durability: Durability) -> (Arc<Metrics>, u64) {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = FileTraceStore::open(dir.path(), durability).unwrap();
        let metrics = Arc::new(Metrics::new());
        let writer = TraceWriter::new(Arc::new(store), durability, Arc::clone(&metrics));
        let tasks: Vec<_> = (0..200)
            .map(|n| {
                let w = writer.clone();
                tokio::spawn(async move { w.append(record(n)).await })
            })
            .collect();
        let mut seqs = BTreeSet::new();
        for t in tasks {
            assert!(seqs.insert(t.await.unwrap().unwrap()));
        }
        assert_eq!(seqs, (1..=200).collect());
        assert!(writer.healthy());
        assert_eq!(writer.store().len(), 200);
        drop(writer);
        // The drain task may still hold the store (and its file lock) for a moment after the
        // last reply: wait for it to end.
        let started = std::time::Instant::now();
        let (again, report) = loop {
            match FileTraceStore::open(dir.path(), durability) {
                Ok(opened) => break opened,
                Err(caio_trace::StoreError::Locked { .. })
                    if started.elapsed() < std::time::Duration::from_secs(10) =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(report.records, 200);
        assert!(again.get(&record(7).decision_id).unwrap().is_some());
        let text = metrics.encode().unwrap();
        let batches = text
            .lines()
            .find_map(|l| l.strip_prefix("caio_trace_batch_records_count "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no batch count in {text}"));
        (metrics, batches)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn buffered_appends_write_one_record_each() {
        let (_, batches) = concurrent(Durability::Buffered).await;
        assert_eq!(batches, 200);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fsync_appends_share_batches() {
        let (_, batches) = concurrent(Durability::Fsync).await;
        // Records queued while an fdatasync runs go together: fewer writes than records.
        assert!(batches < 200, "{batches} batches for 200 records");
        assert!(batches >= 1);
    }

    #[tokio::test]
    async fn a_refused_record_is_an_error_and_marks_the_writer_unhealthy() {
        for durability in [Durability::Buffered, Durability::Fsync] {
            let metrics = Arc::new(Metrics::new());
            let writer = TraceWriter::new(
                Arc::new(caio_trace::MemoryTraceStore::new()),
                durability,
                metrics,
            );
            let mut bad = record(1);
            bad.decision_id = String::new();
            let err = writer.append(bad).await.unwrap_err();
            assert!(err.contains("decision_id"), "{err}");
            assert!(!writer.healthy());
            // The next good write makes it healthy again.
            assert_eq!(writer.append(record(2)).await.unwrap(), 1);
            assert!(writer.healthy());
        }
    }
}
