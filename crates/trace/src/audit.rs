//! The audit log: every change to services, policies and keys (who, when, what, before/after),
//! hash-chained like the trace log and kept in memory for queries.
//!
//! Changes are rare and must not be lost, so the file log fsyncs every append; the whole log is
//! held in memory because admins filter it by actor, action prefix and target, and a few
//! thousand entries a year cost nothing.

use std::fmt;
use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

use crate::chain::{self, Chain, Line, Lines, Link, io_error};
use crate::error::StoreError;
use crate::store::ChainHead;

/// The audit log's file name inside its directory.
pub const AUDIT_FILE: &str = "audit.jsonl";
/// The largest string field of an event `append` accepts.
pub const MAX_AUDIT_FIELD_BYTES: usize = 64 * 1024;
const MAX_AUDIT_LINE_BYTES: usize = 16 * MAX_AUDIT_FIELD_BYTES;

/// One change, as the caller describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When, unix milliseconds.
    pub at_ms: u64,
    /// Who (principal id).
    pub actor: String,
    /// The role the actor acted in.
    pub actor_role: String,
    /// The tenant the change belongs to.
    pub tenant: String,
    /// What, e.g. `service.register`, `service.update`, `service.delete`, `policies.put`,
    /// `policies.rollback`, `key.create`, `key.revoke`. Not empty.
    pub action: String,
    /// What it was done to (a service id, a policy version, a key id).
    pub target: String,
    /// A hash (or version) of the target before the change.
    #[serde(default)]
    pub before: Option<String>,
    /// A hash (or version) of the target after the change.
    #[serde(default)]
    pub after: Option<String>,
    /// The HTTP request that made the change.
    #[serde(default)]
    pub request_id: Option<String>,
}

/// A recorded event with its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// 1-based, gapless.
    pub seq: u64,
    /// The previous entry's hash (64 zeros for the first), lowercase hex.
    pub prev: String,
    /// This entry's hash, lowercase hex.
    pub hash: String,
    /// The event.
    #[serde(flatten)]
    pub event: AuditEvent,
}

/// A filter over the audit log; every set field must match.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Exact actor.
    pub actor: Option<String>,
    /// Exact action, or a prefix ending in `.` (`service.` matches `service.register`, ...).
    pub action: Option<String>,
    /// Exact target.
    pub target: Option<String>,
    /// Exact tenant.
    pub tenant: Option<String>,
    /// At or after, unix milliseconds.
    pub since_ms: Option<u64>,
    /// Before, unix milliseconds.
    pub until_ms: Option<u64>,
    /// Page size, clamped to 1..=1000; 0 means 100.
    pub limit: usize,
    /// Only entries with a smaller seq (the previous page's `next_cursor`).
    pub before_seq: Option<u64>,
}

/// One page of entries, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct AuditPage {
    /// The matching entries, newest first.
    pub items: Vec<AuditEntry>,
    /// Pass as `before_seq` for the next page; `None` when no more entries match.
    pub next_cursor: Option<u64>,
}

/// Where changes are recorded.
pub trait AuditLog: Send + Sync + fmt::Debug {
    /// Records an event; returns only once it is durable (for the file log: fsync'ed).
    fn append(&self, event: AuditEvent) -> Result<AuditEntry, StoreError>;
    /// Matching entries, newest first.
    fn query(&self, q: &AuditQuery) -> Result<AuditPage, StoreError>;
    /// The end of the hash chain.
    fn head(&self) -> ChainHead;
}

fn hash_event(prev: &[u8; 32], seq: u64, e: &AuditEvent) -> [u8; 32] {
    Link::new(prev)
        .u64(seq)
        .u64(e.at_ms)
        .str(&e.actor)
        .str(&e.actor_role)
        .str(&e.tenant)
        .str(&e.action)
        .str(&e.target)
        .opt(e.before.as_deref())
        .opt(e.after.as_deref())
        .opt(e.request_id.as_deref())
        .finish()
}

fn check_event(e: &AuditEvent) -> Result<(), StoreError> {
    if e.action.is_empty() {
        return Err(StoreError::Invalid("audit event without an action".into()));
    }
    let fields = [
        ("actor", Some(&e.actor)),
        ("actor_role", Some(&e.actor_role)),
        ("tenant", Some(&e.tenant)),
        ("action", Some(&e.action)),
        ("target", Some(&e.target)),
        ("before", e.before.as_ref()),
        ("after", e.after.as_ref()),
        ("request_id", e.request_id.as_ref()),
    ];
    for (name, value) in fields {
        if value.is_some_and(|v| v.len() > MAX_AUDIT_FIELD_BYTES) {
            return Err(StoreError::Invalid(format!(
                "audit event field `{name}` is longer than {MAX_AUDIT_FIELD_BYTES} bytes"
            )));
        }
    }
    Ok(())
}

/// A line of `audit.jsonl`. Parsed strictly (every field, nothing else), so nothing in a line
/// escapes the hash.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditLine {
    seq: u64,
    at_ms: u64,
    actor: String,
    actor_role: String,
    tenant: String,
    action: String,
    target: String,
    before: Option<String>,
    after: Option<String>,
    request_id: Option<String>,
    prev: String,
    hash: String,
}

impl From<AuditEntry> for AuditLine {
    fn from(x: AuditEntry) -> Self {
        let e = x.event;
        Self {
            seq: x.seq,
            at_ms: e.at_ms,
            actor: e.actor,
            actor_role: e.actor_role,
            tenant: e.tenant,
            action: e.action,
            target: e.target,
            before: e.before,
            after: e.after,
            request_id: e.request_id,
            prev: x.prev,
            hash: x.hash,
        }
    }
}

impl From<AuditLine> for AuditEntry {
    fn from(l: AuditLine) -> Self {
        Self {
            seq: l.seq,
            prev: l.prev,
            hash: l.hash,
            event: AuditEvent {
                at_ms: l.at_ms,
                actor: l.actor,
                actor_role: l.actor_role,
                tenant: l.tenant,
                action: l.action,
                target: l.target,
                before: l.before,
                after: l.after,
                request_id: l.request_id,
            },
        }
    }
}

/// The entries and the chain; shared by both logs.
#[derive(Debug, Default)]
struct Entries {
    items: Vec<AuditEntry>,
    chain: Chain,
}

impl Entries {
    /// The entry `event` becomes when appended next (not yet added).
    fn next(&self, event: AuditEvent) -> (AuditEntry, Chain) {
        let seq = self.chain.seq + 1;
        let hash = hash_event(&self.chain.hash, seq, &event);
        (
            AuditEntry {
                seq,
                prev: hex::encode(self.chain.hash),
                hash: hex::encode(hash),
                event,
            },
            Chain { seq, hash },
        )
    }

    fn query(&self, q: &AuditQuery) -> AuditPage {
        let limit = match q.limit {
            0 => 100,
            n => n.clamp(1, 1000),
        };
        let action = |a: &str| match q.action.as_deref() {
            None => true,
            Some(p) if p.ends_with('.') => a.starts_with(p),
            Some(p) => a == p,
        };
        let matches = |e: &AuditEvent| {
            q.actor.as_ref().is_none_or(|x| &e.actor == x)
                && action(&e.action)
                && q.target.as_ref().is_none_or(|x| &e.target == x)
                && q.tenant.as_ref().is_none_or(|x| &e.tenant == x)
                && q.since_ms.is_none_or(|s| e.at_ms >= s)
                && q.until_ms.is_none_or(|u| e.at_ms < u)
        };
        let hi = q.before_seq.map_or(self.items.len(), |b| {
            usize::try_from(b.saturating_sub(1))
                .unwrap_or(usize::MAX)
                .min(self.items.len())
        });
        let mut items = Vec::new();
        let mut next_cursor = None;
        for x in self.items.get(..hi).unwrap_or(&[]).iter().rev() {
            if !matches(&x.event) {
                continue;
            }
            if items.len() == limit {
                next_cursor = items.last().map(|e: &AuditEntry| e.seq);
                break;
            }
            items.push(x.clone());
        }
        AuditPage { items, next_cursor }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The state is only changed after the write succeeded, so it is consistent even if a thread
    // panicked while holding the lock.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An audit log in memory (tests, embedded use without a data dir).
#[derive(Debug, Default)]
pub struct MemoryAuditLog {
    state: Mutex<Entries>,
}

impl MemoryAuditLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }
}

impl AuditLog for MemoryAuditLog {
    fn append(&self, event: AuditEvent) -> Result<AuditEntry, StoreError> {
        check_event(&event)?;
        let mut s = lock(&self.state);
        let (entry, chain) = s.next(event);
        s.items.push(entry.clone());
        s.chain = chain;
        Ok(entry)
    }

    fn query(&self, q: &AuditQuery) -> Result<AuditPage, StoreError> {
        Ok(lock(&self.state).query(q))
    }

    fn head(&self) -> ChainHead {
        ChainHead::of(&lock(&self.state).chain)
    }
}

/// An audit log in `DIR/audit.jsonl`.
pub struct FileAuditLog {
    path: PathBuf,
    file: File,
    truncated_bytes: u64,
    state: Mutex<FileState>,
}

struct FileState {
    entries: Entries,
    len: u64,
    failed: Option<String>,
}

impl fmt::Debug for FileAuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileAuditLog")
            .field("path", &self.path)
            .field("head", &self.head())
            .finish_non_exhaustive()
    }
}

struct ScanEnd {
    entries: Entries,
    good_len: u64,
    torn: u64,
}

fn scan(path: &Path, file: &File) -> Result<ScanEnd, StoreError> {
    let mut lines = Lines::new(BufReader::new(file), MAX_AUDIT_LINE_BYTES);
    let mut buf = Vec::new();
    let mut entries = Entries::default();
    let corrupt = |line: u64, reason: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        line,
        reason,
    };
    loop {
        let start = lines.offset;
        match lines.next_line(&mut buf).map_err(io_error(path))? {
            None => {
                return Ok(ScanEnd {
                    entries,
                    good_len: start,
                    torn: 0,
                });
            }
            Some((Line::Torn, n)) => {
                return Ok(ScanEnd {
                    entries,
                    good_len: start,
                    torn: n,
                });
            }
            Some((Line::TooLong, _)) => {
                return Err(corrupt(
                    lines.number,
                    format!("line longer than {MAX_AUDIT_LINE_BYTES} bytes"),
                ));
            }
            Some((Line::Complete, _)) => {
                let line: AuditLine = serde_json::from_slice(&buf)
                    .map_err(|e| corrupt(lines.number, format!("not an audit entry: {e}")))?;
                let found: AuditEntry = line.into();
                let expected = entries.chain.seq + 1;
                if found.seq != expected {
                    return Err(corrupt(
                        lines.number,
                        format!(
                            "seq {} where {expected} was expected (entries missing, duplicated or reordered)",
                            found.seq
                        ),
                    ));
                }
                if found.prev != hex::encode(entries.chain.hash) {
                    return Err(corrupt(
                        lines.number,
                        "prev does not match the hash of the entry before it (an entry was edited, removed or reordered)".into(),
                    ));
                }
                let (recomputed, chain) = entries.next(found.event.clone());
                if recomputed.hash != found.hash {
                    return Err(corrupt(
                        lines.number,
                        "hash does not match the entry's content (the entry was edited)".into(),
                    ));
                }
                entries.items.push(found);
                entries.chain = chain;
            }
        }
    }
}

impl FileAuditLog {
    /// Opens (or creates) `dir/audit.jsonl` and verifies its chain. A torn last line is cut off
    /// (see [`FileAuditLog::truncated_bytes`]); any other damage is [`StoreError::Corrupt`].
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let (path, file) = chain::open_locked(dir, AUDIT_FILE)?;
        let end = scan(&path, &file)?;
        if end.torn > 0 {
            chain::truncate(&path, &file, end.good_len)?;
        }
        Ok(Self {
            path,
            file,
            truncated_bytes: end.torn,
            state: Mutex::new(FileState {
                entries: end.entries,
                len: end.good_len,
                failed: None,
            }),
        })
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of a torn last line that opening cut off (0 normally).
    pub fn truncated_bytes(&self) -> u64 {
        self.truncated_bytes
    }
}

impl AuditLog for FileAuditLog {
    fn append(&self, event: AuditEvent) -> Result<AuditEntry, StoreError> {
        check_event(&event)?;
        let mut guard = lock(&self.state);
        let s = &mut *guard;
        if let Some(reason) = &s.failed {
            return Err(StoreError::Failed {
                path: self.path.clone(),
                reason: reason.clone(),
            });
        }
        let (entry, chain) = s.entries.next(event);
        let mut line = serde_json::to_vec(&AuditLine::from(entry.clone()))
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        line.push(b'\n');
        if let Err(e) = (&self.file).write_all(&line) {
            s.failed = chain::roll_back(&self.file, s.len, &e);
            return Err(io_error(&self.path)(e));
        }
        if let Err(e) = self.file.sync_data() {
            s.failed = Some(format!("fdatasync failed: {e}"));
            return Err(io_error(&self.path)(e));
        }
        s.len += line.len() as u64;
        s.entries.items.push(entry.clone());
        s.entries.chain = chain;
        Ok(entry)
    }

    fn query(&self, q: &AuditQuery) -> Result<AuditPage, StoreError> {
        Ok(lock(&self.state).entries.query(q))
    }

    fn head(&self) -> ChainHead {
        ChainHead::of(&lock(&self.state).entries.chain)
    }
}

/// Checks a whole audit log offline (read-only) and returns the end of its chain. The first bad
/// line is named; an incomplete last line is reported too.
pub fn verify_audit_log(path: &Path) -> Result<ChainHead, StoreError> {
    let file = File::open(path).map_err(io_error(path))?;
    let end = scan(path, &file)?;
    if end.torn > 0 {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            line: end.entries.chain.seq + 1,
            reason: format!(
                "the last line is incomplete ({} bytes without a newline): a write cut off by a crash; opening the log cuts it off",
                end.torn
            ),
        });
    }
    Ok(ChainHead::of(&end.entries.chain))
}

#[cfg(test)]
mod tests;
