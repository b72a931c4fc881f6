//! Group commit for decision traces: a handler queues its record and waits for it to be written;
//! whoever finds no write in progress starts one, and that write takes every record queued so
//! far in one batch.
//!
//! With 64 concurrent clients one `write` (and, under fsync durability, one `fdatasync`) carries
//! many decisions, so persistence costs little per request while every response still leaves
//! only after its trace is in the store. The write runs in a spawned task, never in the handler's
//! own future: a client that disconnects mid-write cannot cancel a batch that carries other
//! clients' records. Buffered writes (to the page cache, tens of microseconds) run on the async
//! worker; fsync'ed writes go to the blocking pool. An earlier version handed records to a
//! dedicated writer thread; the two thread wake-ups per batch cost more than the write itself
//! (docs/benchmarks.md).

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
