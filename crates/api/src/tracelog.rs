//! Trace persistence for handlers: every response leaves only after its trace is in the store.
//!
//! Buffered durability (the default): the handler writes its record itself, in its own poll: one
//! `write` to the page cache plus the chain hash (about 10 – 40 µs for a 5.6 KB decision,
//! depending on the CPU). Writes are serialized by a gate. A handler that finds the gate taken
//! spins for it: the holder is a handler on the other worker thread, in the middle of a write
//! that ends in microseconds. Only after [`SPIN_LIMIT`] (the holder's thread lost its core)
//! does it block on the gate. It never yields to the scheduler: a handler that yields goes to
//! the back of its worker's run queue and waits a whole round of every other connection's
//! request (milliseconds at 64 connections) before it can answer, which was most of the
//! server's tail latency (docs/benchmarks.md, fifth sitting). Handing records to another task
//! costs the same round plus a wake-up. The write cannot be cancelled by a client that
//! disconnects, since nothing awaits.
//!
//! Fsync durability: group commit. A handler queues its record and waits for it to be written;
//! whoever finds no write in progress starts one, and that write takes every record queued so far
//! in one batch, so one `fdatasync` carries many decisions. The write runs in a spawned task on
//! the blocking pool, never in the handler's own future: a client that disconnects mid-write
//! cannot cancel a batch that carries other clients' records.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use caio_trace::{Durability, TraceRecord, TraceStore};
use tokio::sync::oneshot;

use crate::metrics::Metrics;

type Reply = oneshot::Sender<Result<u64, String>>;

/// How long a buffered handler spins for the write gate before it blocks on it. A write holds
/// the gate for tens of microseconds; waiting longer means the holder's thread was descheduled,
/// and spinning on would only keep it off the core.
const SPIN_LIMIT: Duration = Duration::from_micros(200);

/// The fsync writer's queue.
#[derive(Default)]
struct Queue {
    records: Vec<TraceRecord>,
    replies: Vec<Reply>,
    /// A drain task is running.
    writing: bool,
}

struct Shared {
    /// Serializes buffered writes (see the module docs).
    gate: Mutex<()>,
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
                gate: Mutex::new(()),
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
        if self.shared.durability == Durability::Buffered {
            return write_now(&self.shared, record);
        }
        let wait = {
            let mut q = self
                .shared
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let (reply, wait) = oneshot::channel();
            q.records.push(record);
            q.replies.push(reply);
            if !std::mem::replace(&mut q.writing, true) {
                tokio::spawn(drain(Arc::clone(&self.shared)));
            }
            wait
        };
        wait.await
            .map_err(|_| "the trace writer stopped before writing".to_owned())?
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

/// Buffered durability: takes the gate (spinning, then blocking) and writes `record`.
fn write_now(shared: &Shared, record: TraceRecord) -> Result<u64, String> {
    let _gate = acquire(&shared.gate, &shared.metrics);
    write_batch(shared, vec![record], Vec::new())?
        .first()
        .copied()
        .ok_or_else(|| "the store returned no sequence number".to_owned())
}

/// Locks `gate`, spinning up to [`SPIN_LIMIT`] before blocking. A poisoned gate (a write that
/// panicked) is taken all the same: it guards no data, and the store reports its own state.
fn acquire<'a>(gate: &'a Mutex<()>, metrics: &Metrics) -> MutexGuard<'a, ()> {
    let mut started: Option<Instant> = None;
    let mut spins = 0u32;
    loop {
        match gate.try_lock() {
            Ok(guard) => return guard,
            Err(TryLockError::Poisoned(p)) => return p.into_inner(),
            Err(TryLockError::WouldBlock) => {}
        }
        std::hint::spin_loop();
        spins = spins.wrapping_add(1);
        if spins % 32 == 1 {
            let since = *started.get_or_insert_with(|| {
                metrics.trace_gate_waits.inc();
                Instant::now()
            });
            if since.elapsed() >= SPIN_LIMIT {
                metrics.trace_gate_blocked.inc();
                return gate.lock().unwrap_or_else(PoisonError::into_inner);
            }
        }
    }
}

/// Releases the writer role of the drain task if it did not finish normally: a panic, or the
/// task dropped with the runtime.
struct Draining<'a> {
    shared: &'a Shared,
    done: bool,
}

impl Drop for Draining<'_> {
    fn drop(&mut self) {
        if self.done {
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

/// Fsync durability: writes batches on the blocking pool until the queue is empty.
async fn drain(shared: Arc<Shared>) {
    // A panicking write (or the task being dropped at shutdown) must not leave the writer role
    // taken.
    let mut guard = Draining {
        shared: &shared,
        done: false,
    };
    loop {
        let (records, replies) = {
            let mut q = shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
            if q.records.is_empty() {
                q.writing = false;
                guard.done = true;
                return;
            }
            (
                std::mem::take(&mut q.records),
                std::mem::take(&mut q.replies),
            )
        };
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
        // Each handler writes its own record: no batching, no hand-off.
        assert_eq!(batches, 200);
    }

    /// A store whose first write blocks until released, to hold a buffered writer mid-write.
    #[derive(Debug)]
    struct Gate {
        inner: caio_trace::MemoryTraceStore,
        first: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>,
        /// The first write has started (and is held).
        entered: AtomicBool,
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
                self.entered.store(true, Ordering::SeqCst);
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

    /// Polls `done` from the test's own thread (the workers may all be busy in blocking writes,
    /// so no tokio timer would fire) for up to 10 s.
    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let started = std::time::Instant::now();
        while !done() {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "timed out waiting until {what}"
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    fn counter(metrics: &Metrics, name: &str) -> u64 {
        let text = metrics.encode().unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    }

    /// A buffered writer over a [`Gate`] whose first append (record 0) has started and is held
    /// inside the store until `release` is sent.
    struct Gated {
        gate: Arc<Gate>,
        writer: TraceWriter,
        metrics: Arc<Metrics>,
        leader: tokio::task::JoinHandle<Result<u64, String>>,
        release: std::sync::mpsc::Sender<()>,
    }

    fn gated(panic_first: bool) -> Gated {
        let (release, rx) = std::sync::mpsc::channel();
        let gate = Arc::new(Gate {
            inner: caio_trace::MemoryTraceStore::new(),
            first: std::sync::Mutex::new(Some(rx)),
            entered: AtomicBool::new(false),
            batches: std::sync::Mutex::new(Vec::new()),
            panic_first,
        });
        let metrics = Arc::new(Metrics::new());
        let writer = TraceWriter::new(
            Arc::clone(&gate) as Arc<dyn TraceStore>,
            Durability::Buffered,
            Arc::clone(&metrics),
        );
        let w = writer.clone();
        let leader = tokio::spawn(async move { w.append(record(0)).await });
        wait_until("the first write started", || {
            gate.entered.load(Ordering::SeqCst)
        });
        Gated {
            gate,
            writer,
            metrics,
            leader,
            release,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 3)]
    async fn an_append_during_a_write_spins_then_blocks_and_a_bad_one_fails_at_once() {
        // The first append takes the gate and is held inside the store.
        let Gated {
            gate,
            writer,
            metrics,
            leader,
            release,
        } = gated(false);
        // A second one arrives: it spins, then (the write outlasts the spin limit) blocks.
        let w = writer.clone();
        let follower = tokio::spawn(async move { w.append(record(1)).await });
        wait_until("the second append blocked on the gate", || {
            counter(&metrics, "caio_trace_gate_blocked_total") == 1
        });
        assert_eq!(counter(&metrics, "caio_trace_gate_waits_total"), 1);
        // An invalid record is refused before the gate: it does not wait for the write.
        let mut bad = record(2);
        bad.tenant = "x".repeat(10_000);
        let err = writer.append(bad).await.unwrap_err();
        assert!(err.contains("tenant"), "{err}");
        assert!(!follower.is_finished());
        assert_eq!(gate.inner.len(), 0);
        release.send(()).unwrap();
        assert_eq!(leader.await.unwrap().unwrap(), 1);
        assert_eq!(follower.await.unwrap().unwrap(), 2);
        // One record per write, in the order the gate was taken.
        assert_eq!(*gate.batches.lock().unwrap(), vec![1, 1]);
        assert_eq!(counter(&metrics, "caio_trace_gate_waits_total"), 1);
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 3)]
    async fn a_buffered_write_that_panics_does_not_stop_the_next_ones() {
        let Gated {
            gate,
            writer,
            leader,
            release,
            ..
        } = gated(true);
        let w = writer.clone();
        let follower = tokio::spawn(async move { w.append(record(1)).await });
        release.send(()).unwrap();
        assert!(leader.await.unwrap_err().is_panic());
        // The waiting append takes the gate the panic left poisoned, and writes.
        let next = tokio::time::timeout(std::time::Duration::from_secs(10), follower)
            .await
            .expect("an append waiting on a panicked write hung");
        assert_eq!(next.unwrap().unwrap(), 1);
        assert_eq!(writer.append(record(2)).await.unwrap(), 2);
        assert_eq!(*gate.batches.lock().unwrap(), vec![1, 1]);
    }
}
