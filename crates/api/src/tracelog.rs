//! Group commit for decision traces: handlers hand their record to one writer thread and wait
//! for it to be written; the thread writes every record that arrived meanwhile in one batch.
//!
//! With 64 concurrent clients, one `write` (and, under fsync durability, one `fdatasync`) carries
//! dozens of decisions, so persistence costs little per request while every response still
//! leaves only after its trace is in the store. The writer is a plain thread because the stores
//! do blocking I/O; the channel is bounded, so a slow disk slows clients down instead of growing
//! memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use caio_trace::{TraceRecord, TraceStore};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;

/// Most records written at once.
const MAX_BATCH: usize = 256;
/// Records waiting for the writer before senders wait.
const QUEUE: usize = 4096;

type Reply = oneshot::Sender<Result<u64, String>>;

/// The sending side, shared by handlers.
#[derive(Debug, Clone)]
pub struct TraceWriter {
    tx: mpsc::Sender<(TraceRecord, Reply)>,
    healthy: Arc<AtomicBool>,
    store: Arc<dyn TraceStore>,
}

impl TraceWriter {
    /// Starts the writer thread over `store`.
    pub fn start(
        store: Arc<dyn TraceStore>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<TraceWriter> {
        let (tx, mut rx) = mpsc::channel::<(TraceRecord, Reply)>(QUEUE);
        let healthy = Arc::new(AtomicBool::new(true));
        let thread_store = Arc::clone(&store);
        let thread_healthy = Arc::clone(&healthy);
        std::thread::Builder::new()
            .name("caio-trace-writer".to_owned())
            .spawn(move || {
                let mut records = Vec::with_capacity(MAX_BATCH);
                let mut replies = Vec::with_capacity(MAX_BATCH);
                // Ends when every sender is gone (server shut down).
                while let Some((rec, reply)) = rx.blocking_recv() {
                    records.push(rec);
                    replies.push(reply);
                    while records.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok((rec, reply)) => {
                                records.push(rec);
                                replies.push(reply);
                            }
                            Err(_) => break,
                        }
                    }
                    let n = records.len();
                    metrics.trace_batch_size.observe(n as f64);
                    match thread_store.append_batch(std::mem::take(&mut records)) {
                        Ok(seqs) => {
                            thread_healthy.store(true, Ordering::Relaxed);
                            metrics.traces_persisted.inc_by(n as u64);
                            for (reply, seq) in replies.drain(..).zip(seqs) {
                                let _ = reply.send(Ok(seq));
                            }
                        }
                        Err(e) => {
                            thread_healthy.store(false, Ordering::Relaxed);
                            tracing::error!(error = %e, records = n, "trace store write failed");
                            let msg = e.to_string();
                            for reply in replies.drain(..) {
                                let _ = reply.send(Err(msg.clone()));
                            }
                        }
                    }
                    records = Vec::with_capacity(MAX_BATCH);
                }
            })?;
        Ok(TraceWriter { tx, healthy, store })
    }

    /// Writes one record and returns its sequence number once it is in the store.
    pub async fn append(&self, record: TraceRecord) -> Result<u64, String> {
        let (reply, wait) = oneshot::channel();
        self.tx
            .send((record, reply))
            .await
            .map_err(|_| "the trace writer has stopped".to_owned())?;
        wait.await
            .map_err(|_| "the trace writer has stopped".to_owned())?
    }

    /// Whether the last write succeeded.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// The store, for reads.
    pub fn store(&self) -> &Arc<dyn TraceStore> {
        &self.store
    }
}
