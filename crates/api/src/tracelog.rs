//! Trace persistence for handlers: every response leaves only after its trace is in the store.
//!
//! Buffered durability (the default): the handler writes its record itself, one `write` to the
//! page cache (about 5–10 µs for a 5.6 KB decision). Handing every record to another task cost
//! more than the write: the spawn and the reply wake a second worker, which put about 70 µs on
//! the 1-connection latency and nothing back on throughput (docs/benchmarks.md). But a handler
//! that finds another one writing does not block its worker thread on the store's lock (the
//! thread would sleep on a futex and give its core away, which showed as tail latency): it
//! queues its record and waits asynchronously, and the writer takes everything queued in one more
//! `write` before it returns ("combining"). The writer's part is synchronous, so a client that
//! disconnects cannot cancel a write that carries other clients' records.
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
        if let Err(e) = record.validate() {
            self.shared.healthy.store(false, Ordering::Relaxed);
            tracing::error!(error = %e, "trace record refused");
            return Err(e.to_string());
        }
        let buffered = self.shared.durability == Durability::Buffered;
        let (wait, lead) = {
            let mut q = self
                .shared
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if buffered && !q.writing {
                q.writing = true;
                (None, Some(record))
            } else {
                let (reply, wait) = oneshot::channel();
                q.records.push(record);
                q.replies.push(reply);
                let start = !std::mem::replace(&mut q.writing, true);
                if start {
                    tokio::spawn(drain(Arc::clone(&self.shared)));
                }
                (Some(wait), None)
            }
        };
        if let Some(record) = lead {
            return lead_writes(&self.shared, record);
        }
        match wait {
            Some(wait) => wait
                .await
                .map_err(|_| "the trace writer stopped before writing".to_owned())?,
            None => Err("the trace writer lost a record".to_owned()),
        }
    }

    /// Whether the last write succeeded.
    pub fn healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Relaxed)
    }

    /// What readiness reports about the log: the store refuses every record from now on (said
    /// by the failure itself, e.g. a failed seal, before a request is refused), or the last
    /// write failed; `None` when neither.
    pub fn problem(&self) -> Option<String> {
        if let Some(why) = self.shared.store.refusal() {
            return Some(format!("refusing records: {why}"));
        }
        (!self.healthy()).then(|| "the last write failed".to_owned())
    }

    /// The store, for reads.
    pub fn store(&self) -> &Arc<dyn TraceStore> {
        &self.shared.store
    }
}

/// How many batches of other handlers' records a buffered writer takes on after its own before
/// it hands the rest to a drain task (which yields between batches), so one request never
/// carries an unbounded stream of others' writes.
const LEAD_ROUNDS: usize = 4;

/// Buffered durability, the handler that found no write in progress: writes its own record,
/// then whatever other handlers queued meanwhile, all on this thread and without awaiting.
fn lead_writes(shared: &Arc<Shared>, record: TraceRecord) -> Result<u64, String> {
    // If a write panics, the writer role must not stay taken (every later append would queue
    // forever): the guard gives it up and drops the queued replies, so their handlers get an
    // error instead of waiting.
    let mut guard = Leading {
        shared,
        handed_over: false,
    };
    let mine = match write_batch(shared, vec![record], Vec::new()) {
        Ok(seqs) => seqs
            .first()
            .copied()
            .ok_or_else(|| "the store returned no sequence number".to_owned()),
        Err(e) => Err(e),
    };
    for round in 0..=LEAD_ROUNDS {
        let (records, replies) = {
            let mut q = shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
            if q.records.is_empty() {
                q.writing = false;
                guard.handed_over = true;
                return mine;
            }
            if round == LEAD_ROUNDS {
                // Still busy: `writing` stays set and the drain task takes over.
                tokio::spawn(drain(Arc::clone(shared)));
                guard.handed_over = true;
                return mine;
            }
            (
                std::mem::take(&mut q.records),
                std::mem::take(&mut q.replies),
            )
        };
        // The replies carry the outcome; errors were logged.
        let _ = write_batch(shared, records, replies);
    }
    mine
}

/// Releases the writer role of a writer (a leading handler or the drain task) that did not finish
/// normally: a panic, or the drain task dropped with the runtime.
struct Leading<'a> {
    shared: &'a Shared,
    handed_over: bool,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        if self.handed_over {
            return;
        }
        let mut q = self
            .shared
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        q.writing = false;
        q.records.clear();
        // Dropping the senders wakes their handlers with "the trace writer stopped".
        q.replies.clear();
    }
}

/// Writes one batch synchronously and answers its waiters (`replies` may be empty: the caller
/// is the only one waiting). Every record was checked before it was queued, so a batch does not
/// fail for one caller's bad record.
fn write_batch(
    shared: &Shared,
    records: Vec<TraceRecord>,
    replies: Vec<Reply>,
) -> Result<Vec<u64>, String> {
    let n = records.len();
    shared.metrics.trace_batch_size.observe(n as f64);
    let result = shared.store.append_batch(records);
    finish_batch(shared, n, result, replies)
}

/// Records a batch's outcome in the health flag and metrics, and answers its waiters.
fn finish_batch(
    shared: &Shared,
    n: usize,
    result: Result<Vec<u64>, caio_trace::StoreError>,
    replies: Vec<Reply>,
) -> Result<Vec<u64>, String> {
    match result {
        Ok(seqs) => {
            shared.healthy.store(true, Ordering::Relaxed);
            shared.metrics.traces_persisted.inc_by(n as u64);
            for (reply, seq) in replies.into_iter().zip(seqs.iter()) {
                let _ = reply.send(Ok(*seq));
            }
            Ok(seqs)
        }
        Err(e) => {
            shared.healthy.store(false, Ordering::Relaxed);
            tracing::error!(error = %e, records = n, "trace store write failed");
            let msg = e.to_string();
            for reply in replies {
                let _ = reply.send(Err(msg.clone()));
            }
            Err(msg)
        }
    }
}

/// Writes batches until the queue is empty.
async fn drain(shared: Arc<Shared>) {
    // As for a leading handler: a panicking write (or the task being dropped at shutdown) must
    // not leave the writer role taken.
    let mut guard = Leading {
        shared: &shared,
        handed_over: false,
    };
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
                guard.handed_over = true;
                return;
            }
            (
                std::mem::take(&mut q.records),
                std::mem::take(&mut q.replies),
            )
        };
        match shared.durability {
            Durability::Buffered => {
                let _ = write_batch(&shared, records, replies);
            }
            Durability::Fsync => {
                let n = records.len();
                shared.metrics.trace_batch_size.observe(n as f64);
                let store = Arc::clone(&shared.store);
                let result = tokio::task::spawn_blocking(move || store.append_batch(records))
                    .await
                    .unwrap_or_else(|e| {
                        Err(caio_trace::StoreError::Invalid(format!(
                            "the write task failed: {e}"
                        )))
                    });
                let _ = finish_batch(&shared, n, result, replies);
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
    async fn buffered_appends_each_get_their_own_sequence_number() {
        let (_, batches) = concurrent(Durability::Buffered).await;
        assert!((1..=200).contains(&batches), "{batches} batches");
    }

    /// A store whose first write blocks until released, to hold a buffered writer mid-write.
    #[derive(Debug)]
    struct Gate {
        inner: caio_trace::MemoryTraceStore,
        first: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>,
        batches: std::sync::Mutex<Vec<usize>>,
        /// The gated first write panics once released.
        panic_first: bool,
    }

    impl TraceStore for Gate {
        fn append_batch(
            &self,
            records: Vec<TraceRecord>,
        ) -> Result<Vec<u64>, caio_trace::StoreError> {
            let wait = self.first.lock().unwrap().take();
            if let Some(rx) = wait {
                rx.recv().unwrap();
                assert!(!self.panic_first, "the store failed mid-write (test)");
            }
            self.batches.lock().unwrap().push(records.len());
            self.inner.append_batch(records)
        }
        fn get(&self, id: &str) -> Result<Option<caio_trace::StoredTrace>, caio_trace::StoreError> {
            self.inner.get(id)
        }
        fn query(
            &self,
            q: &caio_trace::TraceQuery,
        ) -> Result<caio_trace::TracePage, caio_trace::StoreError> {
            self.inner.query(q)
        }
        fn len(&self) -> u64 {
            self.inner.len()
        }
        fn head(&self) -> caio_trace::ChainHead {
            self.inner.head()
        }
    }

    /// A buffered writer over a [`Gate`] whose first append (record 0) has started and is held
    /// inside the store until `release` is sent.
    async fn gated(
        panic_first: bool,
    ) -> (
        Arc<Gate>,
        TraceWriter,
        tokio::task::JoinHandle<Result<u64, String>>,
        std::sync::mpsc::Sender<()>,
    ) {
        let (release, rx) = std::sync::mpsc::channel();
        let gate = Arc::new(Gate {
            inner: caio_trace::MemoryTraceStore::new(),
            first: std::sync::Mutex::new(Some(rx)),
            batches: std::sync::Mutex::new(Vec::new()),
            panic_first,
        });
        let writer = TraceWriter::new(
            Arc::clone(&gate) as Arc<dyn TraceStore>,
            Durability::Buffered,
            Arc::new(Metrics::new()),
        );
        let w = writer.clone();
        let leader = tokio::spawn(async move { w.append(record(0)).await });
        while !writer.shared.queue.lock().unwrap().writing {
            tokio::task::yield_now().await;
        }
        (gate, writer, leader, release)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn buffered_appends_arriving_during_a_write_join_one_batch_and_a_bad_one_fails_alone() {
        // The first append becomes the writer and blocks inside the store.
        let (gate, writer, leader, release) = gated(false).await;
        // Ten more arrive while it writes (one of them invalid): they queue, nothing blocks.
        let followers: Vec<_> = (1..=10)
            .map(|n| {
                let w = writer.clone();
                let mut r = record(n);
                if n == 5 {
                    r.tenant = "x".repeat(10_000);
                }
                tokio::spawn(async move { w.append(r).await })
            })
            .collect();
        let started = std::time::Instant::now();
        while writer.shared.queue.lock().unwrap().records.len() < 9
            && started.elapsed() < std::time::Duration::from_secs(10)
        {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(writer.shared.queue.lock().unwrap().records.len(), 9);
        release.send(()).unwrap();
        assert_eq!(leader.await.unwrap().unwrap(), 1);
        let mut seqs = BTreeSet::new();
        for (i, f) in followers.into_iter().enumerate() {
            match f.await.unwrap() {
                Ok(seq) => assert!(seqs.insert(seq)),
                Err(e) => {
                    assert_eq!(i + 1, 5, "{e}");
                    assert!(e.contains("tenant"), "{e}");
                }
            }
        }
        assert_eq!(seqs, (2..=10).collect());
        // The leader's own record, then the nine valid ones in one write.
        assert_eq!(*gate.batches.lock().unwrap(), vec![1, 9]);
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_that_panics_gives_up_the_role_and_its_waiters_get_errors() {
        let (_gate, writer, leader, release) = gated(true).await;
        let w = writer.clone();
        let follower = tokio::spawn(async move { w.append(record(1)).await });
        let started = std::time::Instant::now();
        while writer.shared.queue.lock().unwrap().records.is_empty()
            && started.elapsed() < std::time::Duration::from_secs(10)
        {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        release.send(()).unwrap();
        assert!(leader.await.unwrap_err().is_panic());
        let err = follower.await.unwrap().unwrap_err();
        assert!(err.contains("stopped"), "{err}");
        // The role is free again: the next append writes (it does not queue forever).
        let next =
            tokio::time::timeout(std::time::Duration::from_secs(5), writer.append(record(2)))
                .await
                .expect("an append after the panic hung");
        assert_eq!(next.unwrap(), 1);
    }
}
