//! API keys: generation, the stored record (hash only), the key stores (memory and file) and the
//! operator's bootstrap key.
//!
//! A key reads `caio_<id>_<secret>`: `id` is 16 lowercase hex characters (8 random bytes) and
//! names the record; `secret` is 32 random bytes in base64url without padding (43 characters).
//! The plaintext is returned once by [`generate`]; stores keep only `sha256:<hex>` of the whole
//! key string. A plain SHA-256 (not a password hash) is enough because the secret carries 256 bits
//! of entropy — there is nothing to brute-force — and it keeps [`KeyStore::authenticate`] at a
//! microsecond, which matters because it runs on every request.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use caio_contracts::canonical::sha256;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::error::AuthError;
use crate::roles::{AuthMethod, Identity, Role};
use crate::validate;

/// Every API key starts with this.
pub const KEY_PREFIX: &str = "caio_";
/// Hex characters of the key id.
const ID_LEN: usize = 16;
/// base64url characters of the 32-byte secret.
const SECRET_LEN: usize = 43;
/// Length of a whole key: `caio_` + id + `_` + secret.
pub const KEY_LEN: usize = KEY_PREFIX.len() + ID_LEN + 1 + SECRET_LEN;
/// Prefix of the stored hash.
const HASH_PREFIX: &str = "sha256:";
/// Longest accepted bootstrap key; anything longer is a configuration mistake.
const BOOTSTRAP_MAX: usize = 1024;
/// Shortest accepted bootstrap key.
const BOOTSTRAP_MIN: usize = 32;

/// Why a key could not be created, stored or loaded.
///
/// `Display` is written by hand rather than with thiserror: thiserror treats a field named
/// `source` as the error's cause and requires it to implement `Error`, and `Io::source` is a
/// `String` (so the error stays `Clone + Eq`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The request to create or store a key is invalid; the text names every bad field.
    Invalid(String),
    /// No key has this id.
    NotFound,
    /// A key with this id already exists.
    Duplicate,
    /// Reading or writing the key file failed.
    Io {
        /// The key file.
        path: String,
        /// What the operating system said.
        source: String,
    },
    /// The key file is not a valid JSON array of key records. `line` and `column` are 1-based
    /// (serde_json's position); both are 0 when the problem is not at one place (duplicate ids).
    Corrupt {
        /// The key file.
        path: String,
        /// 1-based line, or 0.
        line: usize,
        /// 1-based column, or 0.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// The operating system's random source failed, so no key could be generated.
    Entropy(String),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Invalid(m) => write!(f, "invalid key: {m}"),
            KeyError::NotFound => f.write_str("no key with this id"),
            KeyError::Duplicate => f.write_str("a key with this id already exists"),
            KeyError::Io { path, source } => write!(f, "key file {path}: {source}"),
            KeyError::Corrupt {
                path,
                line,
                column,
                message,
            } => write!(
                f,
                "key file {path} is corrupt at line {line}, column {column}: {message}"
            ),
            KeyError::Entropy(m) => write!(f, "no randomness available to generate a key: {m}"),
        }
    }
}

impl std::error::Error for KeyError {}

impl KeyError {
    /// Stable snake_case reason for error details.
    pub fn reason(&self) -> &'static str {
        match self {
            KeyError::Invalid(_) => "invalid",
            KeyError::NotFound => "not_found",
            KeyError::Duplicate => "duplicate",
            KeyError::Io { .. } => "io",
            KeyError::Corrupt { .. } => "corrupt",
            KeyError::Entropy(_) => "entropy",
        }
    }
}

/// A stored API key: everything but the secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// 16 lowercase hex characters, the middle part of the key.
    pub id: String,
    /// A human label.
    pub name: String,
    /// The role the key grants.
    pub role: Role,
    /// The principal's tenant.
    pub tenant: String,
    /// The principal's permissions.
    pub permissions: Vec<String>,
    /// The principal's trust level, 0–10.
    pub trust_level: u8,
    /// For role `service`: the service this key may write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_id: Option<String>,
    /// Creation time, unix milliseconds.
    pub created_at_ms: u64,
    /// The subject of the identity that created the key.
    pub created_by: String,
    /// The key stops working at this time (unix milliseconds), if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    /// When the key was revoked (unix milliseconds), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at_ms: Option<u64>,
    /// `sha256:<64 lowercase hex>` of the whole key string.
    pub hash: String,
}

fn public() -> String {
    "public".to_owned()
}

/// A request to create a key (the body of the server's create-key endpoint). Unknown fields are
/// refused, so a misspelt `permisions` is an error rather than a key without permissions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// A human label, 1–128 printable characters.
    pub name: String,
    /// The role to grant.
    pub role: Role,
    /// The tenant (default `public`).
    #[serde(default = "public")]
    pub tenant: String,
    /// Permissions (default none).
    #[serde(default)]
    pub permissions: Vec<String>,
    /// Trust level 0–10 (default 0).
    #[serde(default)]
    pub trust_level: u8,
    /// Required for role `service`, forbidden otherwise.
    #[serde(default)]
    pub service_id: Option<String>,
    /// Optional expiry, unix milliseconds; must lie after the creation time.
    #[serde(default)]
    pub expires_at_ms: Option<u64>,
}

/// Creates a key. Returns the plaintext (show it once; it is not stored anywhere) and the record
/// to insert into a [`KeyStore`]. Every invalid field is reported in one `KeyError::Invalid`.
pub fn generate(
    new: NewKey,
    created_by: &str,
    now_ms: u64,
) -> Result<(String, KeyRecord), KeyError> {
    let mut problems = Vec::new();
    if !validate::is_printable_text(&new.name) {
        problems.push("name: must be 1–128 printable characters".to_owned());
    }
    validate::principal_fields(
        new.role == Role::Service,
        &new.tenant,
        &new.permissions,
        new.trust_level,
        new.service_id.as_deref(),
        &mut problems,
    );
    if new.expires_at_ms.is_some_and(|t| t <= now_ms) {
        problems.push("expires_at_ms: must lie in the future".to_owned());
    }
    if !problems.is_empty() {
        return Err(KeyError::Invalid(problems.join("; ")));
    }

    let mut id_bytes = [0u8; ID_LEN / 2];
    let mut secret_bytes = [0u8; 32];
    getrandom::fill(&mut id_bytes).map_err(|e| KeyError::Entropy(e.to_string()))?;
    getrandom::fill(&mut secret_bytes).map_err(|e| KeyError::Entropy(e.to_string()))?;
    let id = hex::encode(id_bytes);
    let plaintext = format!("{KEY_PREFIX}{id}_{}", URL_SAFE_NO_PAD.encode(secret_bytes));
    let record = KeyRecord {
        id,
        name: new.name,
        role: new.role,
        tenant: new.tenant,
        permissions: new.permissions,
        trust_level: new.trust_level,
        service_id: new.service_id,
        created_at_ms: now_ms,
        created_by: created_by.to_owned(),
        expires_at_ms: new.expires_at_ms,
        revoked_at_ms: None,
        hash: hash_key(&plaintext),
    };
    Ok((plaintext, record))
}

/// `sha256:<hex>` of a key string, the form stores keep.
pub fn hash_key(plaintext: &str) -> String {
    format!("{HASH_PREFIX}{}", hex::encode(sha256(plaintext.as_bytes())))
}

/// The id part of a presented API key, after a strict check of the whole shape:
/// `caio_` + 16 lowercase hex + `_` + 43 canonical base64url characters (32 bytes). Useful to
/// name the key in an audit record of a failed attempt without logging the secret.
pub fn key_id(presented: &str) -> Result<&str, AuthError> {
    let b = presented.as_bytes();
    if b.len() != KEY_LEN {
        return Err(AuthError::Malformed("API key has the wrong length"));
    }
    if !presented.starts_with(KEY_PREFIX) {
        return Err(AuthError::Malformed("API key must start with caio_"));
    }
    let id_end = KEY_PREFIX.len() + ID_LEN;
    let id = &b[KEY_PREFIX.len()..id_end];
    if !id
        .iter()
        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    {
        return Err(AuthError::Malformed("API key id must be 16 lowercase hex"));
    }
    if b[id_end] != b'_' {
        return Err(AuthError::Malformed("API key id must be followed by _"));
    }
    // Decoding (rather than checking the alphabet) also rejects non-canonical encodings whose
    // unused low bits are set, so each secret has exactly one spelling.
    let mut secret = [0u8; 33];
    match URL_SAFE_NO_PAD.decode_slice(&b[id_end + 1..], &mut secret) {
        Ok(32) => {}
        _ => return Err(AuthError::Malformed("API key secret is not base64url")),
    }
    // The checks above proved that the id is ASCII, so this slice is on char boundaries.
    presented
        .get(KEY_PREFIX.len()..id_end)
        .ok_or(AuthError::Malformed("API key id"))
}

/// Decodes a stored `sha256:<hex>`; `None` for anything else.
fn stored_digest(hash: &str) -> Option<[u8; 32]> {
    let hex_part = hash.strip_prefix(HASH_PREFIX)?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut out).ok()?;
    Some(out)
}

/// The checks after the id lookup, in an order that reveals nothing to someone without the
/// secret: the hash first (constant time), then revocation and expiry.
fn check_record(record: &KeyRecord, digest: &[u8; 32], now_ms: u64) -> Result<(), AuthError> {
    // A record whose stored hash is unreadable matches nothing (fail closed).
    let Some(stored) = stored_digest(&record.hash) else {
        return Err(AuthError::InvalidKey);
    };
    if !bool::from(stored.ct_eq(digest)) {
        return Err(AuthError::InvalidKey);
    }
    if record.revoked_at_ms.is_some() {
        return Err(AuthError::Revoked);
    }
    if record.expires_at_ms.is_some_and(|t| now_ms >= t) {
        return Err(AuthError::Expired);
    }
    Ok(())
}

/// A record's id and hash must have the shapes [`generate`] gives them, or the record could
/// never authenticate (or could collide in odd ways in the file).
fn check_stored_shape(record: &KeyRecord) -> Result<(), String> {
    if record.id.len() != ID_LEN
        || !record
            .id
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    {
        return Err("id: must be 16 lowercase hex characters".to_owned());
    }
    if stored_digest(&record.hash).is_none()
        || record.hash.len() != HASH_PREFIX.len() + 64
        || record.hash.bytes().any(|c| c.is_ascii_uppercase())
    {
        return Err("hash: must be sha256:<64 lowercase hex>".to_owned());
    }
    Ok(())
}

impl KeyRecord {
    /// The identity this key authenticates as (method `ApiKey`, subject = key id).
    pub fn identity(&self) -> Identity {
        Identity::new(
            self.id.clone(),
            self.role,
            self.tenant.clone(),
            self.permissions.clone(),
            self.trust_level,
            self.service_id.clone(),
            AuthMethod::ApiKey,
        )
    }

    /// Not revoked and not expired at `now_ms` (a key expires at `expires_at_ms` exactly).
    pub fn is_active(&self, now_ms: u64) -> bool {
        self.revoked_at_ms.is_none() && self.expires_at_ms.is_none_or(|t| now_ms < t)
    }

    /// The public view for listings: every field except `hash`. Written as an allow-list so a
    /// field added later is not published by accident.
    pub fn redacted(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("id".into(), self.id.clone().into());
        m.insert("name".into(), self.name.clone().into());
        m.insert("role".into(), self.role.as_str().into());
        m.insert("tenant".into(), self.tenant.clone().into());
        m.insert("permissions".into(), self.permissions.clone().into());
        m.insert("trust_level".into(), self.trust_level.into());
        m.insert("service_id".into(), self.service_id.clone().into());
        m.insert("created_at_ms".into(), self.created_at_ms.into());
        m.insert("created_by".into(), self.created_by.clone().into());
        m.insert("expires_at_ms".into(), self.expires_at_ms.into());
        m.insert("revoked_at_ms".into(), self.revoked_at_ms.into());
        serde_json::Value::Object(m)
    }
}

/// Where API keys live. Implementations are shared by all request handlers.
pub trait KeyStore: Send + Sync + fmt::Debug {
    /// Adds a record; a record with the same id is [`KeyError::Duplicate`].
    fn insert(&self, record: KeyRecord) -> Result<(), KeyError>;
    /// The record with this id, if any.
    fn get(&self, id: &str) -> Result<Option<KeyRecord>, KeyError>;
    /// Every record, sorted by `created_at_ms`, then id.
    fn list(&self) -> Result<Vec<KeyRecord>, KeyError>;
    /// Marks a key revoked at `now_ms` and returns it; an unknown id is [`KeyError::NotFound`];
    /// revoking a revoked key keeps the first revocation time.
    fn revoke(&self, id: &str, now_ms: u64) -> Result<KeyRecord, KeyError>;
    /// Checks a presented key: shape ([`AuthError::Malformed`]), id ([`AuthError::UnknownKey`]),
    /// secret in constant time ([`AuthError::InvalidKey`]), then [`AuthError::Revoked`] and
    /// [`AuthError::Expired`].
    fn authenticate(&self, presented: &str, now_ms: u64) -> Result<KeyRecord, AuthError>;
}

type KeyMap = HashMap<String, KeyRecord>;

/// Shared by both stores: the lookup runs under a read lock, hashing before it is taken.
fn authenticate_in(
    keys: &RwLock<KeyMap>,
    presented: &str,
    now_ms: u64,
) -> Result<KeyRecord, AuthError> {
    let id = key_id(presented)?;
    let digest = sha256(presented.as_bytes());
    let map = keys.read().unwrap_or_else(PoisonError::into_inner);
    let record = map.get(id).ok_or(AuthError::UnknownKey)?;
    check_record(record, &digest, now_ms)?;
    Ok(record.clone())
}

fn sorted(map: &KeyMap) -> Vec<KeyRecord> {
    let mut v: Vec<KeyRecord> = map.values().cloned().collect();
    v.sort_by(|a, b| {
        a.created_at_ms
            .cmp(&b.created_at_ms)
            .then_with(|| a.id.cmp(&b.id))
    });
    v
}

fn insert_into(map: &mut KeyMap, record: KeyRecord) -> Result<(), KeyError> {
    check_stored_shape(&record).map_err(KeyError::Invalid)?;
    if map.contains_key(&record.id) {
        return Err(KeyError::Duplicate);
    }
    map.insert(record.id.clone(), record);
    Ok(())
}

/// Returns the revoked record and whether anything changed.
fn revoke_in(map: &mut KeyMap, id: &str, now_ms: u64) -> Result<(KeyRecord, bool), KeyError> {
    let record = map.get_mut(id).ok_or(KeyError::NotFound)?;
    let changed = record.revoked_at_ms.is_none();
    if changed {
        record.revoked_at_ms = Some(now_ms);
    }
    Ok((record.clone(), changed))
}

// Locks are taken with `unwrap_or_else(PoisonError::into_inner)`: no code path panics while
// holding them with a half-updated map, so a poisoned lock still guards consistent data.

/// Keys in memory (tests, embedded use, and the cache inside [`FileKeyStore`]).
#[derive(Debug, Default)]
pub struct MemoryKeyStore {
    keys: RwLock<KeyMap>,
}

impl MemoryKeyStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl KeyStore for MemoryKeyStore {
    fn insert(&self, record: KeyRecord) -> Result<(), KeyError> {
        let mut map = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        insert_into(&mut map, record)
    }

    fn get(&self, id: &str) -> Result<Option<KeyRecord>, KeyError> {
        let map = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        Ok(map.get(id).cloned())
    }

    fn list(&self) -> Result<Vec<KeyRecord>, KeyError> {
        let map = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        Ok(sorted(&map))
    }

    fn revoke(&self, id: &str, now_ms: u64) -> Result<KeyRecord, KeyError> {
        let mut map = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        revoke_in(&mut map, id, now_ms).map(|(r, _)| r)
    }

    fn authenticate(&self, presented: &str, now_ms: u64) -> Result<KeyRecord, AuthError> {
        authenticate_in(&self.keys, presented, now_ms)
    }
}

/// Keys in a JSON file (an array of [`KeyRecord`]), cached in memory.
///
/// Every change writes a new file beside the old one (mode 0600), fsyncs it and renames it over
/// the old one, so a crash leaves either the old or the new file, never a torn one. Writers are
/// serialized by a mutex and build the next map aside, so `authenticate` (a read lock on the
/// cache) never waits for the disk. One process owns the file: two servers sharing it would
/// overwrite each other's changes (a shared store belongs in Redis).
#[derive(Debug)]
pub struct FileKeyStore {
    path: PathBuf,
    keys: RwLock<KeyMap>,
    writer: Mutex<()>,
}

/// Makes temporary file names unique within the process.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn path_string(path: &Path) -> String {
    path.display().to_string()
}

impl FileKeyStore {
    /// Loads the key file. A missing file is an empty store (it is created on the first change);
    /// an unreadable or invalid file is an error naming the path and position, never a silent
    /// reset — starting with no keys would lock every client out.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        let path = path.as_ref().to_path_buf();
        let map = match fs::read(&path) {
            Ok(bytes) => Self::parse(&path, &bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => KeyMap::new(),
            Err(e) => {
                return Err(KeyError::Io {
                    path: path_string(&path),
                    source: e.to_string(),
                });
            }
        };
        Ok(FileKeyStore {
            path,
            keys: RwLock::new(map),
            writer: Mutex::new(()),
        })
    }

    /// The key file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn parse(path: &Path, bytes: &[u8]) -> Result<KeyMap, KeyError> {
        let corrupt = |line, column, message: String| KeyError::Corrupt {
            path: path_string(path),
            line,
            column,
            message,
        };
        let records: Vec<KeyRecord> = serde_json::from_slice(bytes).map_err(|e| {
            // serde_json's message ends with " at line L column C"; the position has its own
            // fields, so keep only the description.
            let full = e.to_string();
            let message = match full.rfind(" at line ") {
                Some(i) => full[..i].to_owned(),
                None => full,
            };
            corrupt(e.line(), e.column(), message)
        })?;
        let mut map = KeyMap::with_capacity(records.len());
        for (i, record) in records.into_iter().enumerate() {
            check_stored_shape(&record).map_err(|m| corrupt(0, 0, format!("record {i}: {m}")))?;
            if map.contains_key(&record.id) {
                return Err(corrupt(
                    0,
                    0,
                    format!("record {i}: duplicate key id {}", record.id),
                ));
            }
            map.insert(record.id.clone(), record);
        }
        Ok(map)
    }

    /// Applies a change to a copy of the keys, persists the copy if it changed, and only then
    /// publishes it, so memory never runs ahead of the disk.
    fn update<T>(
        &self,
        change: impl FnOnce(&mut KeyMap) -> Result<(T, bool), KeyError>,
    ) -> Result<T, KeyError> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = self
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let (out, changed) = change(&mut next)?;
        if changed {
            self.persist(&next)?;
            *self.keys.write().unwrap_or_else(PoisonError::into_inner) = next;
        }
        Ok(out)
    }

    fn persist(&self, map: &KeyMap) -> Result<(), KeyError> {
        let io = |e: std::io::Error| KeyError::Io {
            path: path_string(&self.path),
            source: e.to_string(),
        };
        let mut bytes = serde_json::to_vec_pretty(&sorted(map)).map_err(|e| io(e.into()))?;
        bytes.push(b'\n');
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = self
            .path
            .file_name()
            .ok_or_else(|| io(std::io::Error::other("the key file path has no file name")))?;
        let tmp = dir.join(format!(
            ".{}.tmp-{}-{}",
            file_name.to_string_lossy(),
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| {
            let mut opts = OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut file = opts.open(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            drop(file);
            fs::rename(&tmp, &self.path)
        })();
        if let Err(e) = written {
            // Best effort: the temporary file may not exist if creating it was what failed.
            let _ = fs::remove_file(&tmp);
            return Err(io(e));
        }
        // Make the rename itself durable. Best effort: some platforms cannot open or sync a
        // directory, and the data file is already complete either way.
        #[cfg(unix)]
        if let Ok(d) = fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl KeyStore for FileKeyStore {
    fn insert(&self, record: KeyRecord) -> Result<(), KeyError> {
        self.update(|map| insert_into(map, record).map(|()| ((), true)))
    }

    fn get(&self, id: &str) -> Result<Option<KeyRecord>, KeyError> {
        let map = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        Ok(map.get(id).cloned())
    }

    fn list(&self) -> Result<Vec<KeyRecord>, KeyError> {
        let map = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        Ok(sorted(&map))
    }

    fn revoke(&self, id: &str, now_ms: u64) -> Result<KeyRecord, KeyError> {
        self.update(|map| revoke_in(map, id, now_ms))
    }

    fn authenticate(&self, presented: &str, now_ms: u64) -> Result<KeyRecord, AuthError> {
        authenticate_in(&self.keys, presented, now_ms)
    }
}

/// The operator's bootstrap key from the server configuration: an admin credential that works
/// before any API key exists. Only its SHA-256 digest is kept.
#[derive(Clone)]
pub struct BootstrapKey {
    digest: [u8; 32],
}

impl fmt::Debug for BootstrapKey {
    // Even the digest stays out of logs: a weak bootstrap key could be brute-forced from it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BootstrapKey(<redacted>)")
    }
}

impl BootstrapKey {
    /// Accepts 32–1024 characters of printable ASCII without spaces (what fits in an
    /// `Authorization: Bearer` header). The error says what is wrong, never what was given.
    pub fn from_plaintext(s: &str) -> Result<Self, KeyError> {
        if s.len() < BOOTSTRAP_MIN {
            return Err(KeyError::Invalid(format!(
                "bootstrap key: must be at least {BOOTSTRAP_MIN} characters, got {}",
                s.chars().count()
            )));
        }
        if s.len() > BOOTSTRAP_MAX {
            return Err(KeyError::Invalid(format!(
                "bootstrap key: must be at most {BOOTSTRAP_MAX} characters"
            )));
        }
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(KeyError::Invalid(
                "bootstrap key: must be printable ASCII without spaces or control characters"
                    .to_owned(),
            ));
        }
        Ok(BootstrapKey {
            digest: sha256(s.as_bytes()),
        })
    }

    /// Whether `presented` is the bootstrap key, compared in constant time over SHA-256 digests
    /// (so the comparison's time depends neither on the key nor on its length).
    pub fn matches(&self, presented: &str) -> bool {
        let digest = sha256(presented.as_bytes());
        bool::from(digest.ct_eq(&self.digest))
    }

    /// `bootstrap-admin`, role admin, tenant `public`, trust 10, no permissions.
    pub fn identity(&self) -> Identity {
        Identity::new(
            "bootstrap-admin".to_owned(),
            Role::Admin,
            public(),
            Vec::new(),
            validate::MAX_TRUST,
            None,
            AuthMethod::Bootstrap,
        )
    }
}

#[cfg(test)]
mod tests;
