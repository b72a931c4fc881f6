//! Versioned policy sets: every accepted set is stored once under its content address, the active
//! version is the last entry of an append-only activation history, and any stored version can be
//! made active again (rollback) or compared with another (diff).
//!
//! The version of a set is `compile(&set)?.version`, the `sha256:` digest of its canonical JSON,
//! so the same rules always get the same version wherever they were written, and a version file
//! whose content does not hash to its name is detected when the store opens. See
//! docs/reference/stores.md for the file layout.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use caio_contracts::canonical;
use caio_contracts::policy::{PolicyRule, PolicySet};
use serde::{Deserialize, Serialize};

use crate::compile::{PolicyError, compile};

/// The directory of version files inside the store's directory.
pub const VERSIONS_DIR: &str = "versions";
/// The activation history inside the store's directory.
pub const HISTORY_FILE: &str = "history.jsonl";
/// The longest author `put` and `activate` accept.
pub const MAX_AUTHOR_BYTES: usize = 1024;
/// The longest note `put` accepts.
pub const MAX_NOTE_BYTES: usize = 4096;
/// History lines are small (an author and two versions); anything longer was not written here.
const MAX_HISTORY_LINE_BYTES: usize = 16 * 1024;
/// A version file larger than this is not read (4096 rules of 3 × 4 KiB fit well within it).
const MAX_VERSION_FILE_BYTES: u64 = 64 << 20;

/// A stored version of the policy set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyVersion {
    /// `sha256:<hex>` of the set's canonical JSON.
    pub version: String,
    /// When it was first stored, unix milliseconds.
    pub created_at_ms: u64,
    /// Who first stored it.
    pub author: String,
    /// Number of rules.
    pub rules: usize,
    /// Free text from the first `put`.
    #[serde(default)]
    pub note: Option<String>,
}

/// How a version became active.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyAction {
    /// A set was submitted.
    Put,
    /// A stored version was made active again.
    Rollback,
}

/// One change of the active version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyActivation {
    /// 1-based, gapless.
    pub seq: u64,
    /// When, unix milliseconds.
    pub at_ms: u64,
    /// Who.
    pub author: String,
    /// Put or rollback.
    pub action: PolicyAction,
    /// The version made active.
    pub version: String,
    /// The version active before (none for the first activation).
    pub previous: Option<String>,
}

/// Why a policy store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PolicyStoreError {
    /// The set does not compile (every error found).
    #[error("the policy set is invalid:\n{}", render(.0))]
    Invalid(Vec<PolicyError>),
    /// No stored version has this name.
    #[error("no stored policy version `{0}`")]
    NotFound(String),
    /// An argument other than the set is unacceptable (an overlong author or note).
    #[error("{0}")]
    BadArgument(String),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// A file of the store is damaged or was edited: the store refuses to open.
    #[error("{}: {reason}", at(path, *line))]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line of the first bad line, or 0 when the file as a whole is wrong.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// Another store (in this or another process) has the directory open.
    #[error("{}: in use by another store", path.display())]
    Locked {
        /// The history file.
        path: PathBuf,
    },
    /// An earlier failed write left the history's end unknown; reopen the store.
    #[error("{}: no longer accepting changes: {reason}", path.display())]
    Failed {
        /// The history file.
        path: PathBuf,
        /// The earlier failure.
        reason: String,
    },
}

fn render(errors: &[PolicyError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

fn at(path: &Path, line: u64) -> String {
    if line == 0 {
        path.display().to_string()
    } else {
        format!("{}:{line}", path.display())
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> PolicyStoreError + '_ {
    move |source| PolicyStoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where policy versions live.
pub trait PolicyStore: Send + Sync + fmt::Debug {
    /// Compiles `set` (errors: [`PolicyStoreError::Invalid`]), stores it once per version (a
    /// second put of the same rules keeps the first version's author, time and note), makes it
    /// active and appends an activation.
    fn put(
        &self,
        set: &PolicySet,
        author: &str,
        at_ms: u64,
        note: Option<String>,
    ) -> Result<(PolicyVersion, PolicyActivation), PolicyStoreError>;
    /// Makes a stored version active again (a rollback); unknown: [`PolicyStoreError::NotFound`].
    fn activate(
        &self,
        version: &str,
        author: &str,
        at_ms: u64,
    ) -> Result<PolicyActivation, PolicyStoreError>;
    /// The active version and its set, if any version was ever activated.
    fn active(&self) -> Result<Option<(PolicyVersion, PolicySet)>, PolicyStoreError>;
    /// A stored version and its set.
    fn get(&self, version: &str) -> Result<Option<(PolicyVersion, PolicySet)>, PolicyStoreError>;
    /// Every stored version, newest first (by creation time, then by version).
    fn versions(&self) -> Result<Vec<PolicyVersion>, PolicyStoreError>;
    /// Every activation, newest first.
    fn history(&self) -> Result<Vec<PolicyActivation>, PolicyStoreError>;
}

// ---------------------------------------------------------------------------------------------
// Diff.

/// What changed between two versions, by rule id.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyDiff {
    /// The older version.
    pub from: String,
    /// The newer version.
    pub to: String,
    /// Rules only in `to`, sorted by id.
    pub added: Vec<PolicyRule>,
    /// Rules only in `from`, sorted by id.
    pub removed: Vec<PolicyRule>,
    /// Rules in both whose content differs, sorted by id.
    pub changed: Vec<ChangedRule>,
    /// Whether the rules both sets share appear in a different order (the order of rules changes
    /// the version and the order of a proof's rule checks, not which services are feasible).
    pub reordered: bool,
}

/// A rule whose content changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangedRule {
    /// The rule id.
    pub id: String,
    /// In the older set.
    pub before: PolicyRule,
    /// In the newer set.
    pub after: PolicyRule,
}

/// Compares two sets rule by rule (ids are unique within a stored set).
pub fn diff(from_version: &str, from: &PolicySet, to_version: &str, to: &PolicySet) -> PolicyDiff {
    let by_id = |s: &PolicySet| -> BTreeMap<String, PolicyRule> {
        s.policies
            .iter()
            .map(|r| (r.id.clone(), r.clone()))
            .collect()
    };
    let (a, b) = (by_id(from), by_id(to));
    let added = b
        .iter()
        .filter(|(id, _)| !a.contains_key(*id))
        .map(|(_, r)| r.clone())
        .collect();
    let removed = a
        .iter()
        .filter(|(id, _)| !b.contains_key(*id))
        .map(|(_, r)| r.clone())
        .collect();
    let changed = a
        .iter()
        .filter_map(|(id, before)| {
            let after = b.get(id)?;
            (after != before).then(|| ChangedRule {
                id: id.clone(),
                before: before.clone(),
                after: after.clone(),
            })
        })
        .collect();
    let common = |s: &PolicySet, other: &BTreeMap<String, PolicyRule>| -> Vec<String> {
        s.policies
            .iter()
            .filter(|r| other.contains_key(&r.id))
            .map(|r| r.id.clone())
            .collect()
    };
    PolicyDiff {
        from: from_version.to_owned(),
        to: to_version.to_owned(),
        added,
        removed,
        changed,
        reordered: common(from, &b) != common(to, &a),
    }
}

// ---------------------------------------------------------------------------------------------
// State shared by both stores.

/// Checks a set and returns its version.
fn validate(set: &PolicySet) -> Result<String, PolicyStoreError> {
    // Diff and proofs name rules by id, so ids must be unique; the compiler does not check that
    // (caio-contracts' parser does, but a set may come from elsewhere).
    let mut seen = HashSet::new();
    let duplicates: Vec<PolicyError> = set
        .policies
        .iter()
        .filter(|r| !seen.insert(r.id.as_str()))
        .map(|r| PolicyError {
            policy_id: r.id.clone(),
            field: "id",
            line: 1,
            column: 1,
            message: format!("duplicate policy id `{}`", r.id),
            source_text: r.id.clone(),
        })
        .collect();
    let compiled = compile(set);
    match compiled {
        Ok(c) if duplicates.is_empty() => Ok(c.version),
        Ok(_) => Err(PolicyStoreError::Invalid(duplicates)),
        Err(mut errors) => {
            errors.extend(duplicates);
            Err(PolicyStoreError::Invalid(errors))
        }
    }
}

/// The limits `put` applies to its author and note, for callers that check before they act.
pub fn check_arguments(author: &str, note: Option<&str>) -> Result<(), PolicyStoreError> {
    if author.len() > MAX_AUTHOR_BYTES {
        return Err(PolicyStoreError::BadArgument(format!(
            "author is longer than {MAX_AUTHOR_BYTES} bytes"
        )));
    }
    if note.is_some_and(|n| n.len() > MAX_NOTE_BYTES) {
        return Err(PolicyStoreError::BadArgument(format!(
            "note is longer than {MAX_NOTE_BYTES} bytes"
        )));
    }
    Ok(())
}

#[derive(Debug, Default)]
struct State {
    versions: HashMap<String, (PolicyVersion, PolicySet)>,
    history: Vec<PolicyActivation>,
}

impl State {
    fn active_version(&self) -> Option<&str> {
        self.history.last().map(|a| a.version.as_str())
    }

    fn next_activation(
        &self,
        action: PolicyAction,
        version: &str,
        author: &str,
        at_ms: u64,
    ) -> PolicyActivation {
        PolicyActivation {
            seq: self.history.len() as u64 + 1,
            at_ms,
            author: author.to_owned(),
            action,
            version: version.to_owned(),
            previous: self.active_version().map(str::to_owned),
        }
    }

    /// The stored metadata of `version`, or new metadata when it is not stored yet (`true`).
    fn meta_for_put(
        &self,
        version: &str,
        set: &PolicySet,
        author: &str,
        at_ms: u64,
        note: Option<String>,
    ) -> (PolicyVersion, bool) {
        match self.versions.get(version) {
            Some((meta, _)) => (meta.clone(), false),
            None => (
                PolicyVersion {
                    version: version.to_owned(),
                    created_at_ms: at_ms,
                    author: author.to_owned(),
                    rules: set.policies.len(),
                    note,
                },
                true,
            ),
        }
    }

    fn get(&self, version: &str) -> Option<(PolicyVersion, PolicySet)> {
        self.versions.get(version).cloned()
    }

    fn active(&self) -> Option<(PolicyVersion, PolicySet)> {
        self.active_version().and_then(|v| self.get(v))
    }

    fn versions(&self) -> Vec<PolicyVersion> {
        let mut out: Vec<PolicyVersion> = self.versions.values().map(|(m, _)| m.clone()).collect();
        out.sort_by(|a, b| {
            b.created_at_ms
                .cmp(&a.created_at_ms)
                .then_with(|| a.version.cmp(&b.version))
        });
        out
    }

    fn history(&self) -> Vec<PolicyActivation> {
        self.history.iter().rev().cloned().collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The state changes only after the files were written, so it is consistent even if a thread
    // panicked while holding the lock.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------
// Memory store.

/// A policy store in memory (tests, embedded use without a data dir).
#[derive(Debug, Default)]
pub struct MemoryPolicyStore {
    state: Mutex<State>,
}

impl MemoryPolicyStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl PolicyStore for MemoryPolicyStore {
    fn put(
        &self,
        set: &PolicySet,
        author: &str,
        at_ms: u64,
        note: Option<String>,
    ) -> Result<(PolicyVersion, PolicyActivation), PolicyStoreError> {
        check_arguments(author, note.as_deref())?;
        let version = validate(set)?;
        let mut s = lock(&self.state);
        let (meta, new) = s.meta_for_put(&version, set, author, at_ms, note);
        let activation = s.next_activation(PolicyAction::Put, &version, author, at_ms);
        if new {
            s.versions.insert(version, (meta.clone(), set.clone()));
        }
        s.history.push(activation.clone());
        Ok((meta, activation))
    }

    fn activate(
        &self,
        version: &str,
        author: &str,
        at_ms: u64,
    ) -> Result<PolicyActivation, PolicyStoreError> {
        check_arguments(author, None)?;
        let mut s = lock(&self.state);
        if !s.versions.contains_key(version) {
            return Err(PolicyStoreError::NotFound(version.to_owned()));
        }
        let activation = s.next_activation(PolicyAction::Rollback, version, author, at_ms);
        s.history.push(activation.clone());
        Ok(activation)
    }

    fn active(&self) -> Result<Option<(PolicyVersion, PolicySet)>, PolicyStoreError> {
        Ok(lock(&self.state).active())
    }

    fn get(&self, version: &str) -> Result<Option<(PolicyVersion, PolicySet)>, PolicyStoreError> {
        Ok(lock(&self.state).get(version))
    }

    fn versions(&self) -> Result<Vec<PolicyVersion>, PolicyStoreError> {
        Ok(lock(&self.state).versions())
    }

    fn history(&self) -> Result<Vec<PolicyActivation>, PolicyStoreError> {
        Ok(lock(&self.state).history())
    }
}

// ---------------------------------------------------------------------------------------------
// File store.

/// A version file: the metadata and the set, written as canonical JSON on one line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionFile {
    author: String,
    created_at_ms: u64,
    note: Option<String>,
    rules: usize,
    set: PolicySet,
    version: String,
}

/// A policy store in a directory: `versions/<hex>.json` and `history.jsonl`.
pub struct FilePolicyStore {
    dir: PathBuf,
    history_path: PathBuf,
    history: File,
    truncated_bytes: u64,
    state: Mutex<FileState>,
}

struct FileState {
    state: State,
    /// Length of the history file: where the next activation lands.
    len: u64,
    failed: Option<String>,
}

impl fmt::Debug for FilePolicyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FilePolicyStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn is_digest_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn read_version_file(
    path: &Path,
    hex: &str,
) -> Result<(PolicyVersion, PolicySet), PolicyStoreError> {
    let corrupt = |line: u64, reason: String| PolicyStoreError::Corrupt {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let file = File::open(path).map_err(io_error(path))?;
    let mut bytes = Vec::new();
    file.take(MAX_VERSION_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error(path))?;
    if bytes.len() as u64 > MAX_VERSION_FILE_BYTES {
        return Err(corrupt(
            0,
            format!("larger than {MAX_VERSION_FILE_BYTES} bytes"),
        ));
    }
    let vf: VersionFile = serde_json::from_slice(&bytes)
        .map_err(|e| corrupt(e.line() as u64, format!("not a policy version file: {e}")))?;
    let name = format!("sha256:{hex}");
    let digest = canonical::digest(&vf.set)
        .map_err(|e| corrupt(0, format!("the set has no canonical form: {e}")))?;
    if digest != name {
        return Err(corrupt(
            0,
            format!("the set hashes to {digest}, not to the file's name (the file was edited)"),
        ));
    }
    if vf.version != name {
        return Err(corrupt(
            0,
            format!("`version` is {}, not the file's name", vf.version),
        ));
    }
    if vf.rules != vf.set.policies.len() {
        return Err(corrupt(
            0,
            format!(
                "`rules` is {} but the set has {} rules",
                vf.rules,
                vf.set.policies.len()
            ),
        ));
    }
    Ok((
        PolicyVersion {
            version: vf.version,
            created_at_ms: vf.created_at_ms,
            author: vf.author,
            rules: vf.rules,
            note: vf.note,
        },
        vf.set,
    ))
}

fn read_versions(
    dir: &Path,
) -> Result<HashMap<String, (PolicyVersion, PolicySet)>, PolicyStoreError> {
    let mut out = HashMap::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let path = entry.path();
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        // Only `*.json` files are versions; temporary files of an interrupted write end in `.tmp`.
        let Some(stem) = name.strip_suffix(".json") else {
            continue;
        };
        if !is_digest_hex(stem) {
            return Err(PolicyStoreError::Corrupt {
                path,
                line: 0,
                reason: "a version file's name must be 64 lowercase hex digits and `.json`".into(),
            });
        }
        let (meta, set) = read_version_file(&path, stem)?;
        out.insert(meta.version.clone(), (meta, set));
    }
    Ok(out)
}

/// How a history line ended.
enum Line {
    Complete,
    Torn,
    TooLong,
}

/// Reads one line of at most `max` bytes kept (longer lines are skipped, not held).
fn next_line<R: BufRead>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<Option<(Line, u64)>> {
    buf.clear();
    let mut consumed = 0u64;
    let mut too_long = false;
    loop {
        let available = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok((consumed > 0).then_some((Line::Torn, consumed)));
        }
        let newline = available.iter().position(|&b| b == b'\n');
        let take = newline.map_or(available.len(), |i| i + 1);
        if !too_long {
            if buf.len() + take > max + 1 {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(&available[..take]);
            }
        }
        r.consume(take);
        consumed += take as u64;
        if newline.is_some() {
            if too_long {
                return Ok(Some((Line::TooLong, consumed)));
            }
            buf.pop();
            return Ok(Some((Line::Complete, consumed)));
        }
    }
}

/// Reads the history, checking it against the stored versions. Returns the activations, the
/// length of the complete lines and the length of a torn last line.
fn read_history(
    path: &Path,
    file: &File,
    versions: &HashMap<String, (PolicyVersion, PolicySet)>,
) -> Result<(Vec<PolicyActivation>, u64, u64), PolicyStoreError> {
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    let mut history: Vec<PolicyActivation> = Vec::new();
    let mut good = 0u64;
    let corrupt = |line: usize, reason: String| PolicyStoreError::Corrupt {
        path: path.to_path_buf(),
        line: line as u64 + 1,
        reason,
    };
    loop {
        let line_no = history.len();
        match next_line(&mut reader, &mut buf, MAX_HISTORY_LINE_BYTES).map_err(io_error(path))? {
            None => return Ok((history, good, 0)),
            Some((Line::Torn, n)) => return Ok((history, good, n)),
            Some((Line::TooLong, _)) => {
                return Err(corrupt(
                    line_no,
                    format!("line longer than {MAX_HISTORY_LINE_BYTES} bytes"),
                ));
            }
            Some((Line::Complete, n)) => {
                let a: PolicyActivation = serde_json::from_slice(&buf)
                    .map_err(|e| corrupt(line_no, format!("not an activation: {e}")))?;
                let expected = line_no as u64 + 1;
                if a.seq != expected {
                    return Err(corrupt(
                        line_no,
                        format!(
                            "seq {} where {expected} was expected (activations missing, duplicated or reordered)",
                            a.seq
                        ),
                    ));
                }
                let before = history.last().map(|p| &p.version);
                if a.previous.as_ref() != before {
                    return Err(corrupt(
                        line_no,
                        format!(
                            "previous is {:?} but the activation before made {:?} active",
                            a.previous, before
                        ),
                    ));
                }
                if !versions.contains_key(&a.version) {
                    return Err(corrupt(
                        line_no,
                        format!("activates {} but versions/ has no file for it", a.version),
                    ));
                }
                good += n;
                history.push(a);
            }
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), PolicyStoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

impl FilePolicyStore {
    /// Opens (or creates) a policy store in `dir`: reads and checks every version file and the
    /// history. A torn last history line is cut off (see [`FilePolicyStore::truncated_bytes`]);
    /// any other damage is [`PolicyStoreError::Corrupt`].
    pub fn open(dir: &Path) -> Result<Self, PolicyStoreError> {
        let versions_dir = dir.join(VERSIONS_DIR);
        fs::create_dir_all(&versions_dir).map_err(io_error(&versions_dir))?;
        let history_path = dir.join(HISTORY_FILE);
        let existed = history_path.exists();
        let history = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&history_path)
            .map_err(io_error(&history_path))?;
        match history.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(PolicyStoreError::Locked { path: history_path });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_error(&history_path)(e)),
        }
        if !existed {
            sync_dir(dir)?;
        }
        let versions = read_versions(&versions_dir)?;
        let (activations, good, torn) = read_history(&history_path, &history, &versions)?;
        if torn > 0 {
            history
                .set_len(good)
                .and_then(|()| history.sync_all())
                .map_err(io_error(&history_path))?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            history_path,
            history,
            truncated_bytes: torn,
            state: Mutex::new(FileState {
                state: State {
                    versions,
                    history: activations,
                },
                len: good,
                failed: None,
            }),
        })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes of a torn last history line that opening cut off (0 normally).
    pub fn truncated_bytes(&self) -> u64 {
        self.truncated_bytes
    }

    /// Writes a version file atomically: a temporary file, synced, renamed into place, and the
    /// directory synced, so a crash leaves either no file or the whole file.
    fn write_version(&self, meta: &PolicyVersion, set: &PolicySet) -> Result<(), PolicyStoreError> {
        let versions_dir = self.dir.join(VERSIONS_DIR);
        let hex = meta
            .version
            .strip_prefix("sha256:")
            .filter(|h| is_digest_hex(h))
            .ok_or_else(|| {
                PolicyStoreError::BadArgument(format!("unexpected version `{}`", meta.version))
            })?;
        let path = versions_dir.join(format!("{hex}.json"));
        let tmp = versions_dir.join(format!(".{hex}.json.tmp"));
        let file = VersionFile {
            author: meta.author.clone(),
            created_at_ms: meta.created_at_ms,
            note: meta.note.clone(),
            rules: meta.rules,
            set: set.clone(),
            version: meta.version.clone(),
        };
        let mut bytes = canonical::to_vec(&file)
            .map_err(|e| io_error(&path)(io::Error::new(io::ErrorKind::InvalidData, e)))?;
        bytes.push(b'\n');
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            // Best effort: a leftover temporary file is ignored on open anyway.
            let _ = fs::remove_file(&tmp);
            return Err(io_error(&path)(e));
        }
        sync_dir(&versions_dir)
    }

    /// Appends an activation to the history and syncs it.
    fn append(&self, s: &mut FileState, a: &PolicyActivation) -> Result<(), PolicyStoreError> {
        if let Some(reason) = &s.failed {
            return Err(PolicyStoreError::Failed {
                path: self.history_path.clone(),
                reason: reason.clone(),
            });
        }
        let mut line = serde_json::to_vec(a).map_err(|e| {
            io_error(&self.history_path)(io::Error::new(io::ErrorKind::InvalidData, e))
        })?;
        line.push(b'\n');
        if let Err(e) = (&self.history).write_all(&line) {
            if let Err(e2) = self.history.set_len(s.len) {
                s.failed = Some(format!(
                    "an append failed ({e}) and cutting the file back failed too ({e2})"
                ));
            }
            return Err(io_error(&self.history_path)(e));
        }
        if let Err(e) = self.history.sync_data() {
            s.failed = Some(format!("fdatasync failed: {e}"));
            return Err(io_error(&self.history_path)(e));
        }
        s.len += line.len() as u64;
        s.state.history.push(a.clone());
        Ok(())
    }
}

impl PolicyStore for FilePolicyStore {
    fn put(
        &self,
        set: &PolicySet,
        author: &str,
        at_ms: u64,
        note: Option<String>,
    ) -> Result<(PolicyVersion, PolicyActivation), PolicyStoreError> {
        check_arguments(author, note.as_deref())?;
        let version = validate(set)?;
        let mut guard = lock(&self.state);
        let s = &mut *guard;
        if let Some(reason) = &s.failed {
            return Err(PolicyStoreError::Failed {
                path: self.history_path.clone(),
                reason: reason.clone(),
            });
        }
        let (meta, new) = s.state.meta_for_put(&version, set, author, at_ms, note);
        if new {
            // The version file goes first: a crash before the activation leaves an unused but
            // valid version, never an activation of a version that has no file.
            self.write_version(&meta, set)?;
            s.state
                .versions
                .insert(version.clone(), (meta.clone(), set.clone()));
        }
        let activation = s
            .state
            .next_activation(PolicyAction::Put, &version, author, at_ms);
        self.append(s, &activation)?;
        Ok((meta, activation))
    }

    fn activate(
        &self,
        version: &str,
        author: &str,
        at_ms: u64,
    ) -> Result<PolicyActivation, PolicyStoreError> {
        check_arguments(author, None)?;
        let mut guard = lock(&self.state);
        let s = &mut *guard;
        if !s.state.versions.contains_key(version) {
            return Err(PolicyStoreError::NotFound(version.to_owned()));
        }
        let activation = s
            .state
            .next_activation(PolicyAction::Rollback, version, author, at_ms);
        self.append(s, &activation)?;
        Ok(activation)
    }

    fn active(&self) -> Result<Option<(PolicyVersion, PolicySet)>, PolicyStoreError> {
        Ok(lock(&self.state).state.active())
    }

    fn get(&self, version: &str) -> Result<Option<(PolicyVersion, PolicySet)>, PolicyStoreError> {
        Ok(lock(&self.state).state.get(version))
    }

    fn versions(&self) -> Result<Vec<PolicyVersion>, PolicyStoreError> {
        Ok(lock(&self.state).state.versions())
    }

    fn history(&self) -> Result<Vec<PolicyActivation>, PolicyStoreError> {
        Ok(lock(&self.state).state.history())
    }
}

#[cfg(test)]
mod tests;
