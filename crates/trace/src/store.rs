//! The decision trace store: every routing decision, hash-chained, in memory or in a JSON Lines
//! file, with an in-memory index for lookups by decision id and filtered, paged queries.
//!
//! The file store is built for a high append rate: a batch is validated, hashed and formatted into
//! one buffer and written with one `write` call to a file opened in append mode; the index is a
//! `Vec` of fixed-size entries plus a hash map from decision id to the latest position, so an
//! append never reads the file and updates the index in O(1) per record. Bodies stay on disk and
//! are read back with positioned reads. See docs/reference/stores.md for the file format.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Write};
use std::num::NonZeroU32;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use caio_contracts::decision::DECISION_MEMBERS;
use serde::{Deserialize, Serialize};

use crate::chain::{self, Chain, GENESIS, Line, Lines, Link, io_error};
pub use crate::error::StoreError;

/// The trace log's file name inside the store's directory.
pub const TRACE_FILE: &str = "traces.jsonl";
/// The largest body `append_batch` accepts.
pub const MAX_BODY_BYTES: usize = 32 << 20;
/// The largest decision id, tenant, principal or service id `append_batch` accepts.
pub const MAX_FIELD_BYTES: usize = 4096;
/// Longer lines cannot have been written by this store; reading stops holding bytes beyond it.
const MAX_LINE_BYTES: usize = MAX_BODY_BYTES + 64 * 1024;
/// Where a body starts inside a line (the body is always the last member).
const BODY_KEY: &[u8] = b",\"body\":";

/// What happened to a request. Its string form is stored in every trace line, so variants are
/// only ever added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A service was chosen.
    Routed,
    /// No service was feasible (the body is the `NO_MATCHING_SERVICE` error).
    NoRoute,
    /// The decision was executed and a service answered (the body holds the decision and the
    /// execution).
    Executed,
    /// The decision was executed and no candidate answered.
    ExecutionFailed,
}

impl Outcome {
    /// Every outcome, for parsing and tests.
    pub const ALL: [Outcome; 4] = [
        Outcome::Routed,
        Outcome::NoRoute,
        Outcome::Executed,
        Outcome::ExecutionFailed,
    ];

    /// The stored spelling (the same as its JSON form).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Routed => "routed",
            Outcome::NoRoute => "no_route",
            Outcome::Executed => "executed",
            Outcome::ExecutionFailed => "execution_failed",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no [`Outcome`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown outcome `{0}` (expected one of: routed, no_route, executed, execution_failed)")]
pub struct UnknownOutcome(pub String);

impl FromStr for Outcome {
    type Err = UnknownOutcome;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| UnknownOutcome(s.to_owned()))
    }
}

/// A decision to record.
#[derive(Debug, Clone)]
pub struct TraceRecord {
    /// The decision id (`sha256:<hex>`); the same id recurs when the same request is routed again.
    pub decision_id: String,
    /// When it was recorded, unix milliseconds.
    pub recorded_at_ms: u64,
    /// The principal's tenant.
    pub tenant: String,
    /// Who asked.
    pub principal_id: String,
    /// The chosen service, if any.
    pub service_id: Option<String>,
    /// What happened.
    pub outcome: Outcome,
    /// The exact JSON the client received (a JSON object without raw newlines), stored verbatim.
    pub body: TraceBody,
}

/// A record's body: a compact JSON object, stored verbatim.
///
/// Bytes from anywhere (`TraceBody::from(bytes)`) are checked when appended: a JSON object, UTF-8,
/// no raw newline, no lone surrogate escape. A body made by [`TraceBody::serialize`] is serde_json's
/// compact output of a typed value, which has all of these properties by construction, so only
/// its size is checked: the full scan was 4 % of the server's CPU under load
/// (docs/benchmarks.md).
#[derive(Debug, Clone)]
pub struct TraceBody {
    bytes: Bytes,
    /// Made by `serialize`: known to be a compact JSON object.
    serialized: bool,
}

impl TraceBody {
    /// The compact JSON of `value`, which must serialize to a JSON object.
    pub fn serialize<T: Serialize + ?Sized>(value: &T) -> Result<TraceBody, StoreError> {
        // Bodies of one kind come in similar sizes: start from the last one's, so a body is
        // written without growing (and copying) its buffer several times.
        static LAST_LEN: AtomicUsize = AtomicUsize::new(1024);
        let mut bytes = Vec::with_capacity(LAST_LEN.load(Ordering::Relaxed).min(1 << 20) + 256);
        serde_json::to_writer(&mut bytes, value)
            .map_err(|e| StoreError::Invalid(format!("the body does not serialize: {e}")))?;
        LAST_LEN.store(bytes.len(), Ordering::Relaxed);
        if bytes.first() != Some(&b'{') {
            return Err(StoreError::Invalid(
                "the body does not serialize to a JSON object".into(),
            ));
        }
        Ok(TraceBody {
            bytes: Bytes::from(bytes),
            serialized: true,
        })
    }

    /// A sealed decision's JSON: the same members, in the same order, as
    /// [`serialize`](Self::serialize) writes for the [`Decision`], with the members of the hashed
    /// core copied from the canonical JSON its id was computed from instead of serialized again
    /// (the proof is most of the encoding work). Numbers in those members are in RFC 8785's form
    /// (`120` where serde_json writes `120.0`): the same values, since the kept core reads back
    /// exactly. Without kept bytes, this is `serialize`.
    pub fn decision(sealed: &crate::SealedDecision) -> Result<TraceBody, StoreError> {
        let d = sealed.decision();
        let Some(core) = sealed.core() else {
            return Self::serialize(d);
        };
        static LAST_LEN: AtomicUsize = AtomicUsize::new(4096);
        let mut out = Vec::with_capacity(LAST_LEN.load(Ordering::Relaxed).min(1 << 20) + 256);
        out.push(b'{');
        for member in DECISION_MEMBERS {
            if member == "recorded_at" && d.recorded_at.is_none() {
                continue;
            }
            if out.len() > 1 {
                out.push(b',');
            }
            out.push(b'"');
            out.extend_from_slice(member.as_bytes());
            out.extend_from_slice(b"\":");
            let written = match member {
                "decision_id" => serde_json::to_writer(&mut out, &d.decision_id),
                "ranking" => serde_json::to_writer(&mut out, &d.ranking),
                "rejected" => d.rejected.write_json(&mut out),
                "request" => serde_json::to_writer(&mut out, &d.request),
                "recorded_at" => serde_json::to_writer(&mut out, &d.recorded_at),
                name => match core.member(name) {
                    Some(bytes) => {
                        out.extend_from_slice(bytes);
                        Ok(())
                    }
                    None => {
                        return Err(StoreError::Invalid(format!(
                            "`{name}` is neither a member of the decision's core nor written here"
                        )));
                    }
                },
            };
            written.map_err(|e| {
                StoreError::Invalid(format!("the decision does not serialize: {e}"))
            })?;
        }
        out.push(b'}');
        LAST_LEN.store(out.len(), Ordering::Relaxed);
        Ok(TraceBody {
            bytes: Bytes::from(out),
            serialized: true,
        })
    }

    /// `{"<name>":<body>,...}` from bodies that [`serialize`](Self::serialize) made: the same
    /// bytes as serializing a struct with those fields, without serializing the parts again (a
    /// decision recorded before its execution is reused in the execution's record). Names must be
    /// plain identifiers (`[a-z_]+`), which need no escaping.
    pub fn join(members: &[(&str, &TraceBody)]) -> Result<TraceBody, StoreError> {
        let len = members
            .iter()
            .map(|(name, body)| name.len() + body.bytes.len() + 4)
            .sum::<usize>();
        let mut bytes = Vec::with_capacity(len + 2);
        bytes.push(b'{');
        for (i, (name, body)) in members.iter().enumerate() {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                return Err(StoreError::Invalid(format!(
                    "`{name}` is not a plain member name"
                )));
            }
            if !body.serialized {
                return Err(StoreError::Invalid(format!(
                    "member `{name}` was not made by TraceBody::serialize"
                )));
            }
            if i > 0 {
                bytes.push(b',');
            }
            bytes.push(b'"');
            bytes.extend_from_slice(name.as_bytes());
            bytes.extend_from_slice(b"\":");
            bytes.extend_from_slice(&body.bytes);
        }
        bytes.push(b'}');
        Ok(TraceBody {
            bytes: Bytes::from(bytes),
            serialized: true,
        })
    }

    /// The bytes (cheap to clone).
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
}

impl From<Bytes> for TraceBody {
    fn from(bytes: Bytes) -> TraceBody {
        TraceBody {
            bytes,
            serialized: false,
        }
    }
}

impl std::ops::Deref for TraceBody {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl PartialEq for TraceBody {
    fn eq(&self, other: &TraceBody) -> bool {
        self.bytes == other.bytes
    }
}

impl PartialEq<Bytes> for TraceBody {
    fn eq(&self, other: &Bytes) -> bool {
        self.bytes == *other
    }
}

impl PartialEq<TraceBody> for Bytes {
    fn eq(&self, other: &TraceBody) -> bool {
        *self == other.bytes
    }
}

impl TraceRecord {
    /// The check `append_batch` applies to every record (the body is a compact JSON object, the
    /// strings are within [`MAX_FIELD_BYTES`], the decision id is not empty). A batching caller
    /// can run it on each record before queueing it, so one bad record cannot fail a batch of
    /// good ones, and the JSON scan runs on the caller's thread instead of the single writer's.
    pub fn validate(&self) -> Result<(), StoreError> {
        check_record(None, self)
    }
}

/// A recorded decision without its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TraceSummary {
    /// Position in the log, 1-based and gapless.
    pub seq: u64,
    /// The decision id.
    pub decision_id: String,
    /// When it was recorded, unix milliseconds.
    pub recorded_at_ms: u64,
    /// The principal's tenant.
    pub tenant: String,
    /// Who asked.
    pub principal_id: String,
    /// The chosen service, if any.
    pub service_id: Option<String>,
    /// What happened.
    pub outcome: Outcome,
}

/// A recorded decision with its body.
#[derive(Debug, Clone)]
pub struct StoredTrace {
    /// Where and what.
    pub summary: TraceSummary,
    /// The bytes the client received.
    pub body: Bytes,
}

/// A filter over recorded decisions; every set field must match.
#[derive(Debug, Clone, Default)]
pub struct TraceQuery {
    /// Exact tenant.
    pub tenant: Option<String>,
    /// Exact principal.
    pub principal_id: Option<String>,
    /// Exact chosen service.
    pub service_id: Option<String>,
    /// Exact outcome.
    pub outcome: Option<Outcome>,
    /// Recorded at or after, unix milliseconds.
    pub since_ms: Option<u64>,
    /// Recorded before, unix milliseconds.
    pub until_ms: Option<u64>,
    /// Page size, clamped to 1..=1000; 0 means 100.
    pub limit: usize,
    /// Only records with a smaller seq (the previous page's `next_cursor`).
    pub before_seq: Option<u64>,
}

/// One page of summaries, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct TracePage {
    /// The matching records, newest first.
    pub items: Vec<TraceSummary>,
    /// Pass as `before_seq` for the next page; `None` when no more records match.
    pub next_cursor: Option<u64>,
}

/// The end of a hash chain: the last record's seq and hash (seq 0 and 64 zeros when empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainHead {
    /// The last record's seq.
    pub seq: u64,
    /// Its hash, lowercase hex.
    pub hash: String,
}

impl ChainHead {
    pub(crate) fn of(chain: &Chain) -> Self {
        Self {
            seq: chain.seq,
            hash: hex::encode(chain.hash),
        }
    }
}

/// Where decisions are recorded. Safe to call from many threads; appends are serialized inside.
pub trait TraceStore: Send + Sync + fmt::Debug {
    /// Appends records in order and returns their seqs (1-based, gapless). Returns only after the
    /// batch is written to the file (and, under [`Durability::Fsync`], on disk). All or nothing:
    /// an invalid record rejects the whole batch before anything is written.
    fn append_batch(&self, records: Vec<TraceRecord>) -> Result<Vec<u64>, StoreError>;
    /// The latest record with this decision id.
    fn get(&self, decision_id: &str) -> Result<Option<StoredTrace>, StoreError>;
    /// Matching summaries, newest first. O(records scanned).
    fn query(&self, q: &TraceQuery) -> Result<TracePage, StoreError>;
    /// Number of records.
    fn len(&self) -> u64;
    /// Whether no record was appended yet.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The end of the hash chain.
    fn head(&self) -> ChainHead;
    /// What the log keeps on disk; `None` for a store without files.
    fn disk_usage(&self) -> Option<DiskUsage> {
        None
    }
    /// Why the store refuses every append from now on, if it does: a failed write it could not
    /// undo, a failed `fdatasync`, a failed seal. Set by the failure itself, so readiness can
    /// report it before the next append is refused.
    fn refusal(&self) -> Option<String> {
        None
    }
}

/// What a file trace log keeps on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUsage {
    /// Sealed segments kept.
    pub segments: u64,
    /// Bytes of the sealed segments kept and the active file.
    pub bytes: u64,
    /// The seq of the oldest record kept (1 unless segments were deleted).
    pub first_seq: u64,
}

/// When an append returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// After the batch is handed to the operating system: survives a crash of the process, not
    /// a power loss.
    #[default]
    Buffered,
    /// After `fdatasync`: survives a power loss too.
    Fsync,
}

/// What opening a file store found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// The head's seq: records ever appended to the log (with deleted segments, more than
    /// the ones kept; [`TraceStore::disk_usage`] says where they start).
    pub records: u64,
    /// Bytes of a torn last line (a write cut off by a crash) that were cut off the log.
    pub truncated_bytes: u64,
    /// The newest sealed segment, when its torn last line was cut off (a power loss right after
    /// a seal; `traces.jsonl` held no record yet). `None` when only the active file was cut,
    /// or nothing.
    pub truncated_segment: Option<PathBuf>,
    /// Sealed segments deleted by retention while opening.
    pub removed_segments: usize,
}

// ---------------------------------------------------------------------------------------------
// The index.

/// An interned string: tenants, principals and services repeat across millions of records, so
/// each entry holds a 4-byte symbol instead of a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Sym(NonZeroU32);

#[derive(Debug, Default)]
struct Interner {
    strings: Vec<Arc<str>>,
    ids: HashMap<Arc<str>, Sym>,
}

impl Interner {
    fn intern(&mut self, s: &str) -> Result<Sym, StoreError> {
        if let Some(sym) = self.ids.get(s) {
            return Ok(*sym);
        }
        let n = u32::try_from(self.strings.len() + 1)
            .ok()
            .and_then(NonZeroU32::new)
            .ok_or_else(|| StoreError::Invalid("too many distinct strings in one store".into()))?;
        let s: Arc<str> = Arc::from(s);
        self.strings.push(Arc::clone(&s));
        self.ids.insert(s, Sym(n));
        Ok(Sym(n))
    }

    fn lookup(&self, s: &str) -> Option<Sym> {
        self.ids.get(s).copied()
    }

    fn resolve(&self, sym: Sym) -> &str {
        // Symbols only come from `intern`, so the index is always in range.
        self.strings.get(sym.0.get() as usize - 1).map_or("", |s| s)
    }
}

/// A decision id: the 32 digest bytes when it has the usual `sha256:<64 lowercase hex>` form,
/// otherwise an interned string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum IdKey {
    Sha256([u8; 32]),
    Other(Sym),
}

fn parse_digest_id(id: &str) -> Option<[u8; 32]> {
    let hex_part = id.strip_prefix("sha256:")?;
    if hex_part.len() != 64
        || !hex_part
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut out).ok()?;
    Some(out)
}

/// One record in the index: 72 bytes (checked by a test).
#[derive(Debug, Clone, Copy)]
struct Entry {
    at: u64,
    body_offset: u64,
    body_len: u32,
    tenant: Sym,
    principal: Sym,
    service: Option<Sym>,
    outcome: Outcome,
    id: IdKey,
}

/// Index entries in fixed-size chunks, each with its own map from id fingerprint to the latest
/// entry with it in that chunk. A single `Vec` and `HashMap` would double by copying or
/// rehashing everything under the store's lock (at millions of records a pause of 100 ms and
/// more for every request waiting to append); chunks never move, and a chunk's map is sized for
/// the chunk up front. Dropping the oldest chunk (retention) forgets its entries and ids at once.
#[derive(Debug, Default)]
struct Entries {
    /// Kept chunks, oldest first. Chunk `k` holds positions from `(dropped + k) * CHUNK`.
    chunks: VecDeque<Chunk>,
    /// Whole chunks dropped from the front.
    dropped: usize,
    /// Positions ever pushed (dropped ones included): the next position.
    len: usize,
    /// Positions below this are gone (a log that starts after seq 1, or records whose segment
    /// retention deleted), even where their chunk is still kept.
    floor: usize,
}

#[derive(Debug)]
struct Chunk {
    entries: Vec<Entry>,
    /// Fingerprint of a decision id → offset of the latest entry with it in this chunk.
    ids: HashMap<u64, u32>,
}

/// Entries per chunk (72 bytes each, plus about 20 in the id map: about 3 MiB per chunk).
const CHUNK: usize = 32 * 1024;

/// What pushing an entry found in its chunk's id map.
enum Pushed {
    /// The fingerprint now points at the new entry.
    Indexed,
    /// Another id in this chunk already has the fingerprint (practically never): the entry is
    /// found through the index's collision map instead.
    Collided,
}

impl Entries {
    fn len(&self) -> usize {
        self.len
    }

    /// The oldest position still kept.
    fn first(&self) -> usize {
        (self.dropped * CHUNK).max(self.floor)
    }

    fn get(&self, i: usize) -> Option<&Entry> {
        if i < self.floor {
            return None;
        }
        let k = (i / CHUNK).checked_sub(self.dropped)?;
        self.chunks.get(k)?.entries.get(i % CHUNK)
    }

    fn last(&self) -> Option<&Entry> {
        self.len.checked_sub(1).and_then(|i| self.get(i))
    }

    fn push(&mut self, e: Entry, fp: u64) -> Pushed {
        let full = self.chunks.back().is_none_or(|c| c.entries.len() >= CHUNK);
        if full {
            self.chunks.push_back(Chunk {
                entries: Vec::with_capacity(CHUNK),
                ids: HashMap::with_capacity(CHUNK),
            });
        }
        self.len += 1;
        let Some(c) = self.chunks.back_mut() else {
            return Pushed::Collided;
        };
        let offset = c.entries.len() as u32;
        let taken = c
            .ids
            .get(&fp)
            .and_then(|&o| c.entries.get(o as usize))
            .is_some_and(|x| x.id != e.id);
        c.entries.push(e);
        if taken {
            return Pushed::Collided;
        }
        c.ids.insert(fp, offset);
        Pushed::Indexed
    }

    /// The latest position whose entry has `key`, found through the chunks' id maps (newest
    /// chunk first).
    fn find(&self, key: &IdKey, fp: u64) -> Option<usize> {
        for (k, c) in self.chunks.iter().enumerate().rev() {
            if let Some(&o) = c.ids.get(&fp)
                && c.entries.get(o as usize).is_some_and(|x| x.id == *key)
            {
                let pos = (self.dropped + k) * CHUNK + o as usize;
                // The latest entry with this id is gone: so are its older ones.
                return (pos >= self.floor).then_some(pos);
            }
        }
        None
    }

    /// Makes an empty index start at position `pos`: a log whose records before seq `pos + 1`
    /// are not here. The part of the first chunk before `pos` is padded with `filler`, which
    /// is never found or returned.
    fn start_at(&mut self, pos: usize, filler: Entry) {
        self.chunks.clear();
        self.dropped = pos / CHUNK;
        self.len = pos;
        self.floor = pos;
        let pad = pos % CHUNK;
        if pad > 0 {
            let mut entries = Vec::with_capacity(CHUNK);
            entries.resize(pad, filler);
            self.chunks.push_back(Chunk {
                entries,
                ids: HashMap::with_capacity(CHUNK),
            });
        }
    }

    /// Forgets every position below `pos` (at most the length): whole chunks below it are
    /// dropped, the rest is hidden.
    fn forget_before(&mut self, pos: usize) {
        self.floor = self.floor.max(pos.min(self.len));
        while !self.chunks.is_empty() && (self.dropped + 1) * CHUNK <= self.floor {
            self.chunks.pop_front();
            self.dropped += 1;
        }
    }

    /// Drops the oldest chunks until at most `keep` remain.
    fn retain_chunks(&mut self, keep: usize) {
        while self.chunks.len() > keep.max(1) {
            self.chunks.pop_front();
            self.dropped += 1;
        }
    }

    /// The first position in `lo..hi` whose entry does not satisfy `pred`, which must hold for
    /// a prefix of the range (as `slice::partition_point`).
    fn partition_point(
        &self,
        mut lo: usize,
        mut hi: usize,
        pred: impl Fn(&Entry) -> bool,
    ) -> usize {
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.get(mid).is_some_and(&pred) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

/// The record index. Positions are `seq - 1`.
#[derive(Debug)]
struct Index {
    entries: Entries,
    strings: Interner,
    /// Ids whose fingerprint another id took in the same chunk (practically never) → their
    /// latest position. Keeping fingerprints at 8 bytes (rather than the 36-byte id) is most of
    /// what keeps the index near 100 bytes per record; an entry holds the full id, so a lookup
    /// confirms it.
    collided: HashMap<IdKey, u64>,
    /// Whether `at` never decreased so far; then time filters use binary search.
    time_ordered: bool,
    /// Chunks kept (retention); `usize::MAX` keeps everything.
    max_chunks: usize,
}

fn fingerprint(key: &IdKey) -> u64 {
    match key {
        IdKey::Sha256(b) => u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
        IdKey::Other(sym) => (1 << 63) | u64::from(sym.0.get()),
    }
}

impl Index {
    fn new() -> Self {
        Self::keeping(None)
    }

    /// An index that keeps about the newest `max_records` records (whole chunks: between
    /// `max_records` and `max_records + CHUNK`), or all of them.
    fn keeping(max_records: Option<u64>) -> Self {
        let max_chunks = match max_records {
            None | Some(0) => usize::MAX,
            Some(n) => usize::try_from(n.div_ceil(CHUNK as u64))
                .unwrap_or(usize::MAX)
                .saturating_add(1),
        };
        Self {
            entries: Entries::default(),
            strings: Interner::default(),
            collided: HashMap::new(),
            time_ordered: true,
            max_chunks,
        }
    }

    fn key_for_insert(&mut self, id: &str) -> Result<IdKey, StoreError> {
        Ok(match parse_digest_id(id) {
            Some(d) => IdKey::Sha256(d),
            None => IdKey::Other(self.strings.intern(id)?),
        })
    }

    fn key_for_lookup(&self, id: &str) -> Option<IdKey> {
        match parse_digest_id(id) {
            Some(d) => Some(IdKey::Sha256(d)),
            None => self.strings.lookup(id).map(IdKey::Other),
        }
    }

    fn entry(
        &mut self,
        r: &Header<'_>,
        body_offset: u64,
        body_len: usize,
    ) -> Result<Entry, StoreError> {
        Ok(Entry {
            at: r.at,
            body_offset,
            body_len: u32::try_from(body_len)
                .map_err(|_| StoreError::Invalid("body too large".into()))?,
            tenant: self.strings.intern(r.tenant)?,
            principal: self.strings.intern(r.principal)?,
            service: r.service.map(|s| self.strings.intern(s)).transpose()?,
            outcome: r.outcome,
            id: self.key_for_insert(r.id)?,
        })
    }

    fn push(&mut self, e: Entry) {
        let pos = self.entries.len() as u64;
        if self.entries.last().is_some_and(|last| last.at > e.at) {
            self.time_ordered = false;
        }
        let fp = fingerprint(&e.id);
        let id = e.id;
        if let Pushed::Collided = self.entries.push(e, fp) {
            self.collided.insert(id, pos);
        }
        if self.entries.chunks.len() > self.max_chunks {
            self.entries.retain_chunks(self.max_chunks);
            let first = self.entries.first() as u64;
            self.collided.retain(|_, p| *p >= first);
        }
    }

    /// Makes an empty index start at position `pos` (see [`Entries::start_at`]).
    fn start_at(&mut self, pos: usize) -> Result<(), StoreError> {
        let none = self.strings.intern("")?;
        let filler = Entry {
            at: 0,
            body_offset: 0,
            body_len: 0,
            tenant: none,
            principal: none,
            service: None,
            outcome: Outcome::Routed,
            id: IdKey::Sha256([0; 32]),
        };
        self.entries.start_at(pos, filler);
        Ok(())
    }

    /// Forgets the records before position `pos` (their segment was deleted).
    fn forget_before(&mut self, pos: usize) {
        self.entries.forget_before(pos);
        let first = self.entries.first() as u64;
        self.collided.retain(|_, p| *p >= first);
    }

    fn find(&self, id: &str) -> Option<usize> {
        let key = self.key_for_lookup(id)?;
        let in_chunks = self.entries.find(&key, fingerprint(&key));
        let collided = self
            .collided
            .get(&key)
            .and_then(|p| usize::try_from(*p).ok())
            .filter(|p| self.entries.get(*p).is_some());
        // The latest of the two: an id can collide in one chunk and be indexed in another.
        match (in_chunks, collided) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    fn summary(&self, pos: usize, e: &Entry) -> TraceSummary {
        TraceSummary {
            seq: pos as u64 + 1,
            decision_id: match e.id {
                IdKey::Sha256(d) => format!("sha256:{}", hex::encode(d)),
                IdKey::Other(sym) => self.strings.resolve(sym).to_owned(),
            },
            recorded_at_ms: e.at,
            tenant: self.strings.resolve(e.tenant).to_owned(),
            principal_id: self.strings.resolve(e.principal).to_owned(),
            service_id: e.service.map(|s| self.strings.resolve(s).to_owned()),
            outcome: e.outcome,
        }
    }

    /// What a query looks for and the positions it covers (`lo..hi`); `None` when nothing can
    /// match (a filter names a string no record carries).
    fn plan(&self, q: &TraceQuery) -> Option<Plan> {
        let limit = match q.limit {
            0 => 100,
            n => n.clamp(1, 1000),
        };
        let sym = |s: &Option<String>| match s {
            None => Ok(None),
            Some(s) => self.strings.lookup(s).map(Some).ok_or(()),
        };
        let (Ok(tenant), Ok(principal), Ok(service)) =
            (sym(&q.tenant), sym(&q.principal_id), sym(&q.service_id))
        else {
            return None;
        };
        let mut hi = self.entries.len();
        if let Some(b) = q.before_seq {
            hi = hi.min(usize::try_from(b.saturating_sub(1)).unwrap_or(usize::MAX));
        }
        let first = self.entries.first().min(hi);
        let mut lo = first;
        if self.time_ordered {
            if let Some(u) = q.until_ms {
                hi = hi.min(self.entries.partition_point(first, hi, |e| e.at < u));
            }
            if let Some(s) = q.since_ms {
                lo = self
                    .entries
                    .partition_point(first, hi, |e| e.at < s)
                    .min(hi);
            }
        }
        Some(Plan {
            tenant,
            principal,
            service,
            outcome: q.outcome,
            since_ms: q.since_ms,
            until_ms: q.until_ms,
            limit,
            lo,
            hi,
        })
    }

    /// Scans positions `lo..hi` newest first, adding matches to `page`. Returns `true` when the
    /// page is complete (full, with the cursor set if one more match exists).
    fn scan(&self, plan: &Plan, lo: usize, hi: usize, page: &mut TracePage) -> bool {
        let matches = |e: &Entry| {
            plan.tenant.is_none_or(|t| e.tenant == t)
                && plan.principal.is_none_or(|p| e.principal == p)
                && plan.service.is_none_or(|s| e.service == Some(s))
                && plan.outcome.is_none_or(|o| e.outcome == o)
                && plan.since_ms.is_none_or(|s| e.at >= s)
                && plan.until_ms.is_none_or(|u| e.at < u)
        };
        for i in (lo..hi).rev() {
            let Some(e) = self.entries.get(i) else {
                continue;
            };
            if !matches(e) {
                continue;
            }
            if page.items.len() == plan.limit {
                // One more match exists, so there is a next page.
                page.next_cursor = page.items.last().map(|s: &TraceSummary| s.seq);
                return true;
            }
            page.items.push(self.summary(i, e));
        }
        false
    }
}

/// A planned query (see [`Index::plan`]).
#[derive(Debug)]
struct Plan {
    tenant: Option<Sym>,
    principal: Option<Sym>,
    service: Option<Sym>,
    outcome: Option<Outcome>,
    since_ms: Option<u64>,
    until_ms: Option<u64>,
    limit: usize,
    lo: usize,
    hi: usize,
}

/// Index positions a query scans per hold of the store's lock: a query over millions of
/// records with a rare match lets appends in between slices instead of holding every request
/// for the whole scan.
const SCAN_SLICE: usize = 16 * 1024;

/// Runs a query over an index behind `state`'s lock, a slice at a time. Positions below the
/// length at the start never change, so the slices see one consistent set of records.
fn sliced_query<S>(state: &Mutex<S>, index: impl Fn(&S) -> &Index, q: &TraceQuery) -> TracePage {
    let mut page = TracePage {
        items: Vec::new(),
        next_cursor: None,
    };
    let Some(plan) = index(&lock(state)).plan(q) else {
        return page;
    };
    let mut hi = plan.hi;
    while hi > plan.lo {
        let lo = hi.saturating_sub(SCAN_SLICE).max(plan.lo);
        if index(&lock(state)).scan(&plan, lo, hi, &mut page) {
            break;
        }
        hi = lo;
    }
    page
}

// ---------------------------------------------------------------------------------------------
// Records: validation, hashing, the line format.

/// A record's values as the hash and the line see them.
#[derive(Debug, Clone, Copy)]
struct Header<'a> {
    seq: u64,
    at: u64,
    id: &'a str,
    tenant: &'a str,
    principal: &'a str,
    service: Option<&'a str>,
    outcome: Outcome,
}

impl<'a> Header<'a> {
    fn of(seq: u64, r: &'a TraceRecord) -> Self {
        Self {
            seq,
            at: r.recorded_at_ms,
            id: &r.decision_id,
            tenant: &r.tenant,
            principal: &r.principal_id,
            service: r.service_id.as_deref(),
            outcome: r.outcome,
        }
    }

    fn hash(&self, prev: &[u8; 32], body: &[u8]) -> [u8; 32] {
        Link::new(prev)
            .u64(self.seq)
            .u64(self.at)
            .str(self.id)
            .str(self.tenant)
            .str(self.principal)
            .opt(self.service)
            .str(self.outcome.as_str())
            .raw(body)
            .finish()
    }
}

/// The line's members before the body, in file order.
#[derive(Serialize)]
struct LineHeadOut<'a> {
    seq: u64,
    at: u64,
    id: &'a str,
    tenant: &'a str,
    principal: &'a str,
    service: Option<&'a str>,
    outcome: Outcome,
    prev: &'a str,
    hash: &'a str,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LineHeadIn {
    seq: u64,
    at: u64,
    id: String,
    tenant: String,
    principal: String,
    service: Option<String>,
    outcome: Outcome,
    prev: String,
    hash: String,
}

/// Why a body cannot be stored (or, read back, why a line is not one this store wrote).
fn check_body(body: &[u8]) -> Result<(), String> {
    if body.len() > MAX_BODY_BYTES {
        return Err(format!(
            "body is {} bytes, more than the {MAX_BODY_BYTES} allowed",
            body.len()
        ));
    }
    if body.contains(&b'\n') {
        // The body is written verbatim into one line of the log.
        return Err("body contains a raw newline (send compact JSON)".into());
    }
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err("body is not a JSON object".into());
    }
    // serde_json skips over strings it ignores without checking their UTF-8, so check it first.
    std::str::from_utf8(body).map_err(|e| format!("body is not UTF-8: {e}"))?;
    serde_json::from_slice::<serde::de::IgnoredAny>(body)
        .map_err(|e| format!("body is not valid JSON: {e}"))?;
    // Skipping a string does not check that `\uD800`-style escapes come in surrogate pairs; a
    // lone one makes the line unreadable to strict parsers (serde_json among them). Such escapes
    // are rare, so only bodies that might hold one pay for a full parse.
    if might_hold_surrogate_escape(body) {
        serde_json::from_slice::<serde_json::Value>(body)
            .map_err(|e| format!("body is not valid JSON: {e}"))?;
    }
    Ok(())
}

/// Whether `body` contains `\u` followed by `d8`..`df` in either case (a superset of the
/// surrogate escapes: an escaped backslash before `u` also matches, which only costs a parse).
fn might_hold_surrogate_escape(body: &[u8]) -> bool {
    // memmem finds `\u` with SIMD; a byte-window scan was 4 % of the server's CPU under load.
    memchr::memmem::find_iter(body, b"\\u").any(|i| {
        matches!(body.get(i + 2..i + 4), Some(&[a, b])
            if (a | 0x20) == b'd' && matches!(b | 0x20, b'8' | b'9' | b'a'..=b'f'))
    })
}

/// Checks one record; `i` is its index in a batch, for the message.
fn check_record(i: Option<usize>, r: &TraceRecord) -> Result<(), StoreError> {
    let fail = |what: String| {
        let place = i.map(|i| format!("record {i} ")).unwrap_or_default();
        StoreError::Invalid(format!(
            "{place}(decision `{}`): {what}",
            truncate_for_message(&r.decision_id)
        ))
    };
    if r.decision_id.is_empty() {
        return Err(fail("decision_id is empty".into()));
    }
    for (name, value) in [
        ("decision_id", Some(r.decision_id.as_str())),
        ("tenant", Some(r.tenant.as_str())),
        ("principal_id", Some(r.principal_id.as_str())),
        ("service_id", r.service_id.as_deref()),
    ] {
        if value.is_some_and(|v| v.len() > MAX_FIELD_BYTES) {
            return Err(fail(format!(
                "{name} is longer than {MAX_FIELD_BYTES} bytes"
            )));
        }
    }
    if r.body.serialized {
        if r.body.len() > MAX_BODY_BYTES {
            return Err(fail(format!(
                "body is {} bytes, more than the {MAX_BODY_BYTES} allowed",
                r.body.len()
            )));
        }
        return Ok(());
    }
    check_body(&r.body).map_err(fail)
}

fn truncate_for_message(s: &str) -> &str {
    let mut end = s.len().min(80);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Lower-case hex of a hash, in `out` (`hex::encode` builds a String a char at a time).
fn hex32<'a>(bytes: &[u8; 32], out: &'a mut [u8; 64]) -> Result<&'a str, StoreError> {
    hex::encode_to_slice(bytes, out).map_err(|e| StoreError::Invalid(e.to_string()))?;
    std::str::from_utf8(out).map_err(|e| StoreError::Invalid(e.to_string()))
}

/// Appends one line to `out` and returns the offset of the body within `out`.
fn write_line(
    out: &mut Vec<u8>,
    h: &Header<'_>,
    prev: &[u8; 32],
    hash: &[u8; 32],
    body: &[u8],
) -> Result<usize, StoreError> {
    let (mut prev_hex, mut hash_hex) = ([0u8; 64], [0u8; 64]);
    let (prev, hash) = (hex32(prev, &mut prev_hex)?, hex32(hash, &mut hash_hex)?);
    let head = LineHeadOut {
        seq: h.seq,
        at: h.at,
        id: h.id,
        tenant: h.tenant,
        principal: h.principal,
        service: h.service,
        outcome: h.outcome,
        prev,
        hash,
    };
    serde_json::to_writer(&mut *out, &head).map_err(|e| StoreError::Invalid(e.to_string()))?;
    // Replace the object's closing brace with the body member, so the body bytes go in verbatim.
    out.pop();
    out.extend_from_slice(BODY_KEY);
    let at = out.len();
    out.extend_from_slice(body);
    out.extend_from_slice(b"}\n");
    Ok(at)
}

/// Records hashed and formatted but not yet in the index.
struct Staged {
    entries: Vec<Entry>,
    seqs: Vec<u64>,
    chain: Chain,
}

/// Hashes `records` onto `chain`, building index entries and, when `out` is given, the lines.
/// `base` is the file offset `out` will be written at.
fn stage(
    index: &mut Index,
    chain: Chain,
    records: &[TraceRecord],
    base: u64,
    mut out: Option<&mut Vec<u8>>,
) -> Result<Staged, StoreError> {
    let mut staged = Staged {
        entries: Vec::with_capacity(records.len()),
        seqs: Vec::with_capacity(records.len()),
        chain,
    };
    for r in records {
        let seq = staged.chain.seq + 1;
        let h = Header::of(seq, r);
        let hash = h.hash(&staged.chain.hash, &r.body);
        let body_offset = match out.as_deref_mut() {
            Some(out) => base + write_line(out, &h, &staged.chain.hash, &hash, &r.body)? as u64,
            None => 0,
        };
        staged
            .entries
            .push(index.entry(&h, body_offset, r.body.len())?);
        staged.seqs.push(seq);
        staged.chain = Chain { seq, hash };
    }
    Ok(staged)
}

fn validate(records: &[TraceRecord]) -> Result<(), StoreError> {
    records
        .iter()
        .enumerate()
        .try_for_each(|(i, r)| check_record(Some(i), r))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Readers may go on after a panic elsewhere: every write path leaves the state consistent or
    // marks the store failed before it can panic.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------
// Memory store.

/// A trace store that keeps everything in memory (tests, embedded use without a data dir).
pub struct MemoryTraceStore {
    state: Mutex<MemoryState>,
}

struct MemoryState {
    index: Index,
    chain: Chain,
    bodies: Vec<Bytes>,
}

impl MemoryTraceStore {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            state: Mutex::new(MemoryState {
                index: Index::new(),
                chain: Chain::default(),
                bodies: Vec::new(),
            }),
        }
    }
}

impl Default for MemoryTraceStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryTraceStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryTraceStore")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl TraceStore for MemoryTraceStore {
    fn append_batch(&self, records: Vec<TraceRecord>) -> Result<Vec<u64>, StoreError> {
        validate(&records)?;
        let mut s = lock(&self.state);
        let chain = s.chain;
        let staged = stage(&mut s.index, chain, &records, 0, None)?;
        for (e, r) in staged.entries.into_iter().zip(records) {
            s.index.push(e);
            s.bodies.push(r.body.bytes);
        }
        s.chain = staged.chain;
        Ok(staged.seqs)
    }

    fn get(&self, decision_id: &str) -> Result<Option<StoredTrace>, StoreError> {
        let s = lock(&self.state);
        Ok(s.index.find(decision_id).and_then(|pos| {
            let e = s.index.entries.get(pos)?;
            Some(StoredTrace {
                summary: s.index.summary(pos, e),
                body: s.bodies.get(pos)?.clone(),
            })
        }))
    }

    fn query(&self, q: &TraceQuery) -> Result<TracePage, StoreError> {
        Ok(sliced_query(&self.state, |s| &s.index, q))
    }

    fn len(&self) -> u64 {
        lock(&self.state).chain.seq
    }

    fn head(&self) -> ChainHead {
        ChainHead::of(&lock(&self.state).chain)
    }
}

// ---------------------------------------------------------------------------------------------
// File store.

/// How a file store opens, appends and cuts its log into segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileOptions {
    /// When an append returns.
    pub durability: Durability,
    /// Records the in-memory index keeps (see [`FileTraceStore::open_keeping`]); `None` or 0
    /// keeps all.
    pub index_max_records: Option<u64>,
    /// Seal the active file `traces.jsonl` as `traces-<first seq>.jsonl` and start a new one
    /// once it holds at least this many bytes; 0 never does.
    pub segment_bytes: u64,
    /// Sealed segments kept, newest first; older ones are deleted when a segment is sealed and
    /// when the store opens. 0 keeps all.
    pub retain_segments: usize,
    /// Drop-behind window: each time the active file grows by this many bytes (rounded down to
    /// whole 4 KiB pages), a background thread starts the writeback of the window before the
    /// last full one and drops the windows before that (written back by then) from the page
    /// cache. The log then keeps about three windows cached instead of everything since the
    /// last seal: memory the rest of the machine can use, and pages the kernel recycles
    /// instead of taking new ones, which on a VM cost more than the write itself
    /// (docs/benchmarks.md, eleventh sitting). It never touches the last full window or the
    /// partial one being appended to. 0 leaves the pages to the kernel (cached until the segment
    /// is sealed). Durability is unchanged: an append returns once its bytes are in the page
    /// cache (buffered) or on disk (fsync), as without it.
    pub writeback_bytes: u64,
}

impl FileOptions {
    /// One growing file, every record indexed.
    pub fn new(durability: Durability) -> FileOptions {
        FileOptions {
            durability,
            index_max_records: None,
            segment_bytes: 0,
            retain_segments: 0,
            writeback_bytes: 0,
        }
    }
}

/// A trace store in `DIR/traces.jsonl` (and, with segments, the sealed `DIR/traces-<seq>.jsonl`
/// before it), indexed in memory.
pub struct FileTraceStore {
    dir: PathBuf,
    path: PathBuf,
    options: FileOptions,
    state: Mutex<FileState>,
}

struct FileState {
    index: Index,
    chain: Chain,
    /// The active file.
    file: Arc<File>,
    /// Where the active file starts in the log's byte offsets (the sealed segments kept come
    /// first); index entries hold these offsets.
    base: u64,
    /// The active file's length: where the next batch lands.
    len: u64,
    /// The seq of the active file's first record (the next one while it is empty).
    first_seq: u64,
    /// Sealed segments kept, oldest first.
    sealed: VecDeque<Segment>,
    /// Set when a failed write left the file's end unknown; appends are refused from then on.
    failed: Option<String>,
    /// Reused across batches so a steady stream of appends does not allocate.
    buf: Vec<u8>,
    /// Drop-behind of the active file's pages, when on.
    writeback: Option<Writeback>,
}

/// The append side of drop-behind ([`FileOptions::writeback_bytes`]): hands the writeback thread
/// the active file's end of finished windows.
struct Writeback {
    /// The window, a whole number of pages.
    window: u64,
    /// The end last handed to the thread (0 for a new active file).
    sent: u64,
    jobs: std::sync::mpsc::Sender<WritebackJob>,
}

/// The active file's bytes before `to` may be written back and dropped.
struct WritebackJob {
    file: Arc<File>,
    to: u64,
}

impl Writeback {
    /// Starts the writeback thread; `None` (drop-behind off) when `window` is under a page or the
    /// thread cannot be started. Drop-behind only spares memory and page allocations, so a
    /// store without it works the same.
    fn start(window: u64) -> Option<Writeback> {
        let window = window - window % PAGE;
        if window == 0 {
            return None;
        }
        let (jobs, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("caio-trace-writeback".into())
            .spawn(move || writeback_thread(&rx))
            .ok()?;
        Some(Writeback {
            window,
            sent: 0,
            jobs,
        })
    }

    /// After an append that left the active file `len` bytes long: hands over the end of the
    /// last full window but one, when that moved.
    fn appended(&mut self, file: &Arc<File>, len: u64) {
        let to = (len / self.window).saturating_sub(1) * self.window;
        if to > self.sent {
            // A send fails only when the thread is gone (it panicked): drop-behind stops.
            let _ = self.jobs.send(WritebackJob {
                file: Arc::clone(file),
                to,
            });
            self.sent = to;
        }
    }
}

/// The page size drop-behind rounds to (the smallest on the platforms served; the kernel
/// rounds the advice to its own pages).
const PAGE: u64 = 4096;

/// The writeback thread: for each job, one `posix_fadvise(DONTNEED)` over the file's bytes
/// before `to`. On the window handed over last (dirty) it starts the asynchronous writeback
/// and drops nothing; the windows before it, whose writeback started one window ago or
/// earlier, are clean now and leave the page cache. A page whose writeback had not finished
/// is dropped by a later pass (each starts at the file's beginning; the ranges already dropped
/// cost the kernel next to nothing), or when its segment is sealed. Ends when the store is
/// dropped.
fn writeback_thread(jobs: &std::sync::mpsc::Receiver<WritebackJob>) {
    while let Ok(mut job) = jobs.recv() {
        // Behind by several windows (a slow disk): only the newest end of each file matters.
        while let Ok(next) = jobs.try_recv() {
            if !Arc::ptr_eq(&next.file, &job.file) {
                advise_dont_need(&job.file, 0, job.to);
            }
            job = next;
        }
        advise_dont_need(&job.file, 0, job.to);
    }
}

/// `posix_fadvise(DONTNEED)` over `len` bytes at `offset` of `file` (a hint: errors are ignored,
/// the kernel may keep pages); `len` 0 means to the end of the file.
fn advise_dont_need(file: &File, offset: u64, len: u64) {
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    {
        let _ = rustix::fs::fadvise(
            file,
            offset,
            std::num::NonZeroU64::new(len),
            rustix::fs::Advice::DontNeed,
        );
    }
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    let _ = (file, offset, len);
}

/// A sealed segment: complete, never written again. No handle is kept open (a long-running
/// server seals thousands of them); a lookup in one opens it by name.
struct Segment {
    path: PathBuf,
    /// Its first byte in the log's offsets.
    base: u64,
    len: u64,
    first_seq: u64,
}

/// Where a body is: the active file (held open) or a sealed segment (opened by name).
enum Located {
    Active(Arc<File>),
    Sealed(PathBuf),
}

impl FileState {
    /// The file holding log offset `offset` and the offset within it.
    fn locate(&self, offset: u64) -> Option<(Located, u64)> {
        if offset >= self.base {
            return Some((Located::Active(Arc::clone(&self.file)), offset - self.base));
        }
        let i = self.sealed.partition_point(|s| s.base + s.len <= offset);
        let s = self.sealed.get(i).filter(|s| s.base <= offset)?;
        Some((Located::Sealed(s.path.clone()), offset - s.base))
    }
}

impl fmt::Debug for FileTraceStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileTraceStore")
            .field("path", &self.path)
            .field("options", &self.options)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

/// One verified line of a trace log.
struct Scanned<'a> {
    head: LineHeadIn,
    body: &'a [u8],
    /// Offset of the body within the line.
    body_at: usize,
}

/// The members before a line's body, closed into an object of their own.
fn line_head(line: &[u8]) -> Result<(LineHeadIn, usize), String> {
    let Some(key) = line.windows(BODY_KEY.len()).position(|w| w == BODY_KEY) else {
        return Err("not a trace record: no `body` member".into());
    };
    if line.last() != Some(&b'}') {
        return Err("not a trace record: the line does not end with `}`".into());
    }
    let mut head_json = Vec::with_capacity(key + 1);
    head_json.extend_from_slice(&line[..key]);
    head_json.push(b'}');
    let head: LineHeadIn =
        serde_json::from_slice(&head_json).map_err(|e| format!("not a trace record: {e}"))?;
    Ok((head, key + BODY_KEY.len()))
}

/// Parses and checks one complete line (without its newline) against the chain so far.
fn check_line<'a>(line: &'a [u8], chain: &Chain) -> Result<(Scanned<'a>, [u8; 32]), String> {
    let (head, body_at) = line_head(line)?;
    let body = line.get(body_at..line.len() - 1).unwrap_or(&[]);
    let expected = chain.seq + 1;
    if head.seq != expected {
        return Err(format!(
            "seq {} where {expected} was expected (records missing, duplicated or reordered)",
            head.seq
        ));
    }
    if head.prev != hex::encode(chain.hash) {
        return Err(
            "prev does not match the hash of the record before it (a record was edited, removed or reordered)"
                .into(),
        );
    }
    check_body(body)?;
    let h = Header {
        seq: head.seq,
        at: head.at,
        id: &head.id,
        tenant: &head.tenant,
        principal: &head.principal,
        service: head.service.as_deref(),
        outcome: head.outcome,
    };
    let hash = h.hash(&chain.hash, body);
    if head.hash != hex::encode(hash) {
        return Err("hash does not match the record's content (the record was edited)".into());
    }
    Ok((
        Scanned {
            head,
            body,
            body_at,
        },
        hash,
    ))
}

/// Where a scanned file's chain starts.
#[derive(Debug, Clone, Copy)]
enum Start {
    /// After this point of the chain (the genesis, or the end of the segment before).
    After(Chain),
    /// The oldest segment kept, whose name says it starts at `first_seq` (> 1): the records
    /// before it were deleted, so its first `prev` is taken as given.
    Anchored { first_seq: u64 },
}

/// What a scan of a whole file found.
struct ScanEnd {
    chain: Chain,
    /// Bytes of complete, verified lines.
    good_len: u64,
    /// Bytes after them without a final newline.
    torn: u64,
}

/// Reads and verifies every line of a trace log file, calling `each` with every record and the
/// file offset of its body.
fn scan(
    path: &Path,
    file: &File,
    start: Start,
    mut each: impl FnMut(&Scanned<'_>, u64) -> Result<(), StoreError>,
) -> Result<ScanEnd, StoreError> {
    let mut lines = Lines::new(BufReader::with_capacity(1 << 20, file), MAX_LINE_BYTES);
    let mut buf = Vec::with_capacity(64 * 1024);
    let corrupt = |line: u64, offset: u64, reason: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        line,
        reason: format!("{reason} (the line starts at byte {offset})"),
    };
    let (mut chain, mut anchor) = match start {
        Start::After(c) => (c, None),
        Start::Anchored { first_seq } => (Chain::default(), Some(first_seq)),
    };
    loop {
        let start = lines.offset;
        match lines.next_line(&mut buf).map_err(io_error(path))? {
            None => {
                return Ok(ScanEnd {
                    chain,
                    good_len: start,
                    torn: 0,
                });
            }
            Some((Line::Torn, n)) => {
                return Ok(ScanEnd {
                    chain,
                    good_len: start,
                    torn: n,
                });
            }
            Some((Line::TooLong, _)) => {
                return Err(corrupt(
                    lines.number,
                    start,
                    format!("line longer than {MAX_LINE_BYTES} bytes"),
                ));
            }
            Some((Line::Complete, _)) => {
                if let Some(first_seq) = anchor.take() {
                    // The chain before this segment is gone: start from its first `prev`.
                    let (head, _) = line_head(&buf).map_err(|r| corrupt(lines.number, start, r))?;
                    let mut prev = [0u8; 32];
                    hex::decode_to_slice(&head.prev, &mut prev).map_err(|e| {
                        corrupt(
                            lines.number,
                            start,
                            format!("prev is not 64 hex digits: {e}"),
                        )
                    })?;
                    chain = Chain {
                        seq: first_seq - 1,
                        hash: prev,
                    };
                }
                let (rec, hash) =
                    check_line(&buf, &chain).map_err(|r| corrupt(lines.number, start, r))?;
                each(&rec, start + rec.body_at as u64)?;
                chain = Chain {
                    seq: rec.head.seq,
                    hash,
                };
            }
        }
    }
}

/// The line number of a scanned file's torn last line; `after` is the seq before the file's
/// first record.
fn torn_line(end: &ScanEnd, after: u64) -> u64 {
    // A file without a complete line never moved its chain: saturating, that is line 1.
    end.chain.seq.saturating_sub(after) + 1
}

/// The sealed segment file name for a segment starting at `first_seq`.
fn segment_name(first_seq: u64) -> String {
    format!("traces-{first_seq:020}.jsonl")
}

/// The first seq a sealed segment's file name gives, if it is one.
fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("traces-")?.strip_suffix(".jsonl")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits
        .parse()
        .ok()
        .filter(|&n| n > 0 && n <= MAX_SEGMENT_SEQ)
}

/// The largest first seq a segment name may give: far beyond any real log, and far enough
/// from `u64::MAX` that seq arithmetic cannot overflow on a hostile name.
const MAX_SEGMENT_SEQ: u64 = 1 << 62;

/// The sealed segments in `dir`, oldest first.
fn sealed_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        if let Some(n) = entry.file_name().to_str().and_then(parse_segment_name) {
            found.push((n, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// The newest sealed segment ending in an incomplete line: what a power loss right after a seal
/// can leave under `buffered` durability. Opening cuts the line off when no record follows the
/// segment (see [`FileTraceStore::open_with`]); anywhere else it is corruption.
struct TornSegment {
    path: PathBuf,
    /// Bytes of complete lines, which stay.
    good_len: u64,
    /// The error to give when the segment cannot be cut.
    error: StoreError,
}

/// What [`scan_sealed`] found.
struct SealedScan {
    segments: VecDeque<Segment>,
    /// The chain after the last segment.
    chain: Option<Chain>,
    /// The newest segment's torn tail, when `allow_torn_last` let it through.
    torn: Option<TornSegment>,
}

/// Scans sealed segments in order, each continuing the chain of the one before (the first is
/// anchored unless it starts at seq 1). Calls `each` with every record and its body's offset
/// in the log (the segments' lengths summed). A segment ending in an incomplete line is
/// corruption, except the newest one when `allow_torn_last` is set and it holds at least one
/// complete record: it is then reported, with its complete lines counted as its length.
fn scan_sealed(
    segments: Vec<(u64, PathBuf)>,
    allow_torn_last: bool,
    mut each: impl FnMut(&Scanned<'_>, u64) -> Result<(), StoreError>,
) -> Result<SealedScan, StoreError> {
    let mut out = VecDeque::with_capacity(segments.len());
    let mut chain: Option<Chain> = None;
    let mut base = 0u64;
    let mut torn = None;
    let count = segments.len();
    for (i, (first_seq, path)) in segments.into_iter().enumerate() {
        let corrupt = |reason: String| StoreError::Corrupt {
            path: path.clone(),
            line: 1,
            reason,
        };
        let start = match chain {
            Some(c) if c.seq + 1 != first_seq => {
                return Err(corrupt(format!(
                    "the segment starts at seq {first_seq} but the one before it ends at seq {}: a segment is missing or was renamed",
                    c.seq
                )));
            }
            Some(c) => Start::After(c),
            None if first_seq == 1 => Start::After(Chain::default()),
            None => Start::Anchored { first_seq },
        };
        let file = File::open(&path).map_err(io_error(&path))?;
        let end = scan(&path, &file, start, |rec, at| each(rec, base + at))?;
        // The scan read the whole segment through the page cache; a sealed segment is read
        // again only by lookups, so its pages go (a restart over many gigabytes of segments
        // would otherwise fill memory with them, docs/reference/stores.md).
        drop_cached(&file);
        if end.torn > 0 {
            let error = StoreError::Corrupt {
                path: path.clone(),
                line: torn_line(&end, first_seq - 1),
                reason: format!(
                    "a sealed segment ends in an incomplete line ({} bytes without a newline); opening the store cuts it off only from the newest segment, and only when no record follows it",
                    end.torn
                ),
            };
            if !(allow_torn_last && i + 1 == count && end.good_len > 0) {
                return Err(error);
            }
            torn = Some(TornSegment {
                path: path.clone(),
                good_len: end.good_len,
                error,
            });
        }
        if end.good_len == 0 {
            return Err(corrupt("a sealed segment is empty".into()));
        }
        out.push_back(Segment {
            path,
            base,
            len: end.good_len,
            first_seq,
        });
        base += end.good_len;
        chain = Some(end.chain);
    }
    Ok(SealedScan {
        segments: out,
        chain,
        torn,
    })
}

/// Drops the oldest sealed segments beyond `keep` (0 keeps all) from `s`, forgetting their
/// records first so no lookup looks for them; returns their paths, for the caller to delete.
fn retire(s: &mut FileState, keep: usize) -> Vec<PathBuf> {
    let mut gone = Vec::new();
    while keep > 0 && s.sealed.len() > keep {
        let Some(old) = s.sealed.pop_front() else {
            break;
        };
        let next = s.sealed.front().map_or(s.first_seq, |n| n.first_seq);
        s.index
            .forget_before(usize::try_from(next.saturating_sub(1)).unwrap_or(usize::MAX));
        gone.push(old.path);
    }
    gone
}

impl FileTraceStore {
    /// Opens (or creates) `dir/traces.jsonl`, verifies its hash chain and builds the index. A torn
    /// last line is cut off and reported; any other damage is [`StoreError::Corrupt`]. The file is
    /// locked for as long as the store is open.
    pub fn open(dir: &Path, durability: Durability) -> Result<(Self, OpenReport), StoreError> {
        Self::open_with(dir, FileOptions::new(durability))
    }

    /// [`open`](Self::open) with retention in the in-memory index: it keeps about the newest
    /// `index_max_records` records (whole chunks of 32,768, so between that many and one chunk
    /// more; `None` or 0 keeps all). Older records stay in the file, where the chain covers them
    /// and `verify_log` checks them, but lookups and queries no longer find them.
    pub fn open_keeping(
        dir: &Path,
        durability: Durability,
        index_max_records: Option<u64>,
    ) -> Result<(Self, OpenReport), StoreError> {
        Self::open_with(
            dir,
            FileOptions {
                index_max_records,
                ..FileOptions::new(durability)
            },
        )
    }

    /// Opens the log in `dir` as `options` say: the sealed segments `traces-<seq>.jsonl`, then
    /// the active `traces.jsonl`, all checked as one chain; then the oldest segments beyond
    /// `retain_segments` are deleted. The oldest segment kept may start after seq 1 (its predecessors
    /// were deleted); the active file may not unless a sealed segment precedes it.
    pub fn open_with(dir: &Path, options: FileOptions) -> Result<(Self, OpenReport), StoreError> {
        let (path, file) = chain::open_locked(dir, TRACE_FILE)?;
        let segments = sealed_segments(dir)?;
        let mut index = Index::keeping(options.index_max_records);
        if let Some((first_seq, _)) = segments.first() {
            index.start_at(usize::try_from(first_seq - 1).unwrap_or(usize::MAX))?;
        }
        let mut push = |rec: &Scanned<'_>, body_offset: u64| {
            let h = Header {
                seq: rec.head.seq,
                at: rec.head.at,
                id: &rec.head.id,
                tenant: &rec.head.tenant,
                principal: &rec.head.principal,
                service: rec.head.service.as_deref(),
                outcome: rec.head.outcome,
            };
            let e = index.entry(&h, body_offset, rec.body.len())?;
            index.push(e);
            Ok(())
        };
        let SealedScan {
            segments: sealed,
            chain: before,
            torn: torn_seal,
        } = scan_sealed(segments, true, &mut push)?;
        let base = sealed.back().map_or(0, |s| s.base + s.len);
        let start = before.unwrap_or_default();
        let end = scan(&path, &file, Start::After(start), |rec, at| {
            push(rec, base + at)
        });
        let mut truncated_bytes = 0;
        let mut truncated_segment = None;
        if let Some(t) = torn_seal {
            // The newest segment lost its tail (a power loss right after a seal). Cutting it
            // is safe only at the very end of the log: a record after it would chain from
            // records that are gone.
            match &end {
                Ok(e) if e.chain.seq == start.seq => {}
                _ => return Err(t.error),
            }
            let sealed_file = OpenOptions::new()
                .write(true)
                .open(&t.path)
                .map_err(io_error(&t.path))?;
            let len = sealed_file.metadata().map_err(io_error(&t.path))?.len();
            chain::truncate(&t.path, &sealed_file, t.good_len)?;
            truncated_bytes += len.saturating_sub(t.good_len);
            truncated_segment = Some(t.path);
        }
        let end = end?;
        if end.torn > 0 {
            chain::truncate(&path, &file, end.good_len)?;
            truncated_bytes += end.torn;
        }
        let mut state = FileState {
            index,
            chain: end.chain,
            file: Arc::new(file),
            base,
            len: end.good_len,
            first_seq: start.seq + 1,
            sealed,
            failed: None,
            buf: Vec::new(),
            writeback: Writeback::start(options.writeback_bytes),
        };
        // Retention after the whole log checked out: nothing is deleted from a log that does
        // not open.
        let retired = retire(&mut state, options.retain_segments);
        for old in &retired {
            std::fs::remove_file(old).map_err(io_error(old))?;
        }
        let report = OpenReport {
            records: end.chain.seq,
            truncated_bytes,
            truncated_segment,
            removed_segments: retired.len(),
        };
        let store = Self {
            dir: dir.to_path_buf(),
            path,
            options,
            state: Mutex::new(state),
        };
        Ok((store, report))
    }

    /// The active log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// When appends return.
    pub fn durability(&self) -> Durability {
        self.options.durability
    }

    /// The sealed segments kept, oldest first.
    pub fn segments(&self) -> Vec<PathBuf> {
        lock(&self.state)
            .sealed
            .iter()
            .map(|s| s.path.clone())
            .collect()
    }

    /// Seals the active file as `traces-<first seq>.jsonl`, starts a new one, and deletes the
    /// sealed segments beyond `retain_segments` (forgetting their records). On an error the
    /// store stops accepting appends: the log's end on disk is no longer what it expects.
    fn rotate(&self, s: &mut FileState) -> Result<Vec<PathBuf>, String> {
        let sealed_path = self.dir.join(segment_name(s.first_seq));
        if sealed_path.exists() {
            return Err(format!(
                "cannot seal the trace log: {} exists already",
                sealed_path.display()
            ));
        }
        std::fs::rename(&self.path, &sealed_path).map_err(|e| {
            format!(
                "sealing {} as {}: {e}",
                self.path.display(),
                sealed_path.display()
            )
        })?;
        // Under fsync durability, creating the new file also syncs the directory, which makes
        // the rename durable; buffered durability does not promise that (a power loss may
        // undo the rename, which leaves a valid log either way) and does not wait the
        // milliseconds of a journal commit with every request queued behind it.
        let sync_dir = self.options.durability == Durability::Fsync;
        let (_, file) = chain::open_locked_syncing(&self.dir, TRACE_FILE, sync_dir)
            .map_err(|e| format!("starting a new trace log after sealing one: {e}"))?;
        let old = std::mem::replace(&mut s.file, Arc::new(file));
        let sync = self.options.durability == Durability::Buffered;
        // Off the store's lock and off the request path:
        // - Buffered durability flushes the sealed file now. It does not promise durability,
        //   but a power loss should not take a sealed segment's tail while the next file
        //   survives (the chain would break between them, not just lose its end). Fsync
        //   durability synced every batch already.
        // - Then the segment's pages leave the page cache. Only lookups of old decisions read
        //   a sealed segment; left cached, the log's pages would fill the memory (165 MB/s at
        //   30,000 routes/s) and every new page would be one the host had not used yet, which
        //   on a VM costs more than the write itself (docs/benchmarks.md, sixth sitting).
        let _ = std::thread::Builder::new()
            .name("caio-trace-seal".into())
            .spawn(move || {
                if !sync || old.sync_data().is_ok() {
                    drop_cached(&old);
                }
            });
        s.sealed.push_back(Segment {
            path: sealed_path,
            base: s.base,
            len: s.len,
            first_seq: s.first_seq,
        });
        s.base += s.len;
        s.len = 0;
        s.first_seq = s.chain.seq + 1;
        if let Some(wb) = &mut s.writeback {
            wb.sent = 0;
        }
        Ok(retire(s, self.options.retain_segments))
    }
}

/// Asks the kernel to drop `file`'s clean pages from the page cache (a hint: it may keep some).
fn drop_cached(file: &File) {
    advise_dont_need(file, 0, 0);
}

impl TraceStore for FileTraceStore {
    fn append_batch(&self, records: Vec<TraceRecord>) -> Result<Vec<u64>, StoreError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        validate(&records)?;
        let mut guard = self.state.lock().map_err(|_| StoreError::Failed {
            path: self.path.clone(),
            reason: "an earlier append panicked".into(),
        })?;
        let s = &mut *guard;
        if let Some(reason) = &s.failed {
            return Err(StoreError::Failed {
                path: self.path.clone(),
                reason: reason.clone(),
            });
        }
        let mut buf = std::mem::take(&mut s.buf);
        buf.clear();
        let staged = stage(
            &mut s.index,
            s.chain,
            &records,
            s.base + s.len,
            Some(&mut buf),
        );
        let result = staged.and_then(|staged| {
            // One write call for the whole batch; the file is in append mode.
            if let Err(e) = (&*s.file).write_all(&buf) {
                s.failed = chain::roll_back(&s.file, s.len, &e);
                return Err(io_error(&self.path)(e));
            }
            if self.options.durability == Durability::Fsync
                && let Err(e) = s.file.sync_data()
            {
                // After a failed fdatasync the kernel may have dropped the dirty pages, so what
                // is on disk is unknown: stop rather than build on it.
                s.failed = Some(format!("fdatasync failed: {e}"));
                return Err(io_error(&self.path)(e));
            }
            s.len += buf.len() as u64;
            if let Some(wb) = &mut s.writeback {
                wb.appended(&s.file, s.len);
            }
            for e in staged.entries {
                s.index.push(e);
            }
            s.chain = staged.chain;
            Ok(staged.seqs)
        });
        // Keep the buffer for the next batch unless one huge batch made it huge.
        if buf.capacity() <= 8 << 20 {
            s.buf = buf;
        }
        // The batch is written either way; a failed rotation stops the appends after it.
        let mut retired = Vec::new();
        if result.is_ok() && self.options.segment_bytes > 0 && s.len >= self.options.segment_bytes {
            match self.rotate(s) {
                Ok(paths) => retired = paths,
                Err(reason) => s.failed = Some(reason),
            }
        }
        drop(guard);
        // Unlinking a large file can take milliseconds: not while every append waits. A file
        // that cannot be deleted now is deleted by the next open.
        for path in retired {
            let _ = std::fs::remove_file(path);
        }
        result
    }

    fn get(&self, decision_id: &str) -> Result<Option<StoredTrace>, StoreError> {
        let (summary, file, offset, len) = {
            let s = lock(&self.state);
            let Some(pos) = s.index.find(decision_id) else {
                return Ok(None);
            };
            let Some(e) = s.index.entries.get(pos) else {
                return Ok(None);
            };
            let Some((file, offset)) = s.locate(e.body_offset) else {
                return Ok(None);
            };
            (s.index.summary(pos, e), file, offset, e.body_len)
        };
        // The lock is released: a positioned read of bytes already written needs no coordination
        // with appends, which only ever add bytes after them.
        let mut body = vec![0u8; len as usize];
        match file {
            Located::Active(file) => file
                .read_exact_at(&mut body, offset)
                .map_err(io_error(&self.path))?,
            Located::Sealed(path) => match File::open(&path) {
                Ok(file) => file
                    .read_exact_at(&mut body, offset)
                    .map_err(io_error(&path))?,
                // Deleted by retention since the lookup, or moved away by the operator: the
                // record is gone, as it would be a moment later.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io_error(&path)(e)),
            },
        }
        Ok(Some(StoredTrace {
            summary,
            body: Bytes::from(body),
        }))
    }

    fn query(&self, q: &TraceQuery) -> Result<TracePage, StoreError> {
        Ok(sliced_query(&self.state, |s| &s.index, q))
    }

    fn len(&self) -> u64 {
        lock(&self.state).chain.seq
    }

    fn head(&self) -> ChainHead {
        ChainHead::of(&lock(&self.state).chain)
    }

    fn refusal(&self) -> Option<String> {
        lock(&self.state).failed.clone()
    }

    fn disk_usage(&self) -> Option<DiskUsage> {
        let s = lock(&self.state);
        let oldest = s.sealed.front();
        Some(DiskUsage {
            segments: s.sealed.len() as u64,
            bytes: s.base + s.len - oldest.map_or(0, |o| o.base),
            first_seq: oldest.map_or(s.first_seq, |o| o.first_seq),
        })
    }
}

/// Checks a trace log offline (read-only, without taking the store's lock) and returns the end
/// of its chain. The first bad line is named. A last line without a newline is reported as
/// corrupt too, although opening the store would simply cut it off: a clean check means every
/// byte of the file is part of the chain.
///
/// `path` is a log file, or a store's directory: then its sealed segments and `traces.jsonl`
/// are checked in order as one chain. A sealed segment (`traces-<seq>.jsonl`), alone or the
/// oldest in a directory, starts at the seq its name gives and its first `prev` is taken as
/// given (the records before it were deleted or are elsewhere); any other file starts at seq 1.
pub fn verify_log(path: &Path) -> Result<ChainHead, StoreError> {
    // `after`: the seq before the file's first record.
    let torn = |path: &Path, end: &ScanEnd, after: u64| StoreError::Corrupt {
        path: path.to_path_buf(),
        line: torn_line(end, after),
        reason: format!(
            "the last line is incomplete ({} bytes without a newline): a write cut off by a crash; opening the store cuts it off",
            end.torn
        ),
    };
    if path.is_dir() {
        let before = scan_sealed(sealed_segments(path)?, false, |_, _| Ok(()))?.chain;
        let active = path.join(TRACE_FILE);
        if !active.exists() && before.is_some() {
            // Sealed just now, before the new file was created: nothing after them yet.
            return Ok(ChainHead::of(&before.unwrap_or_default()));
        }
        let file = File::open(&active).map_err(io_error(&active))?;
        let before = before.unwrap_or_default();
        let end = scan(&active, &file, Start::After(before), |_, _| Ok(()))?;
        if end.torn > 0 {
            return Err(torn(&active, &end, before.seq));
        }
        return Ok(ChainHead::of(&end.chain));
    }
    let file = File::open(path).map_err(io_error(path))?;
    let start = match path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(parse_segment_name)
    {
        Some(first_seq) if first_seq > 1 => Start::Anchored { first_seq },
        _ => Start::After(Chain::default()),
    };
    let end = scan(path, &file, start, |_, _| Ok(()))?;
    if end.torn > 0 {
        let after = match start {
            Start::Anchored { first_seq } => first_seq - 1,
            Start::After(c) => c.seq,
        };
        return Err(torn(path, &end, after));
    }
    Ok(ChainHead::of(&end.chain))
}

/// The `prev` of a log's first record, lowercase hex (64 zeros).
pub fn genesis_hash() -> String {
    hex::encode(GENESIS)
}

#[cfg(test)]
mod tests;
