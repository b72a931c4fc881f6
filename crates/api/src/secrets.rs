//! Per-service webhook secrets: generated when a service registers (shown once in the response),
//! kept server-side because HMAC verification needs the secret itself, never a hash.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

/// Where webhook secrets live.
pub trait SecretStore: Send + Sync + std::fmt::Debug {
    /// The secret of a service.
    fn get(&self, service_id: &str) -> Option<String>;
    /// Sets (or replaces) a service's secret.
    fn set(&self, service_id: &str, secret: &str) -> Result<(), String>;
    /// Forgets a service's secret.
    fn remove(&self, service_id: &str) -> Result<(), String>;
    /// Whether the operator provisioned this service's secret in the configuration (the API
    /// neither replaces nor rotates it).
    fn is_provisioned(&self, service_id: &str) -> bool;
}

/// A new random secret: 32 bytes, hex.
pub fn generate() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness: {e}"))?;
    Ok(hex::encode(bytes))
}

/// Secrets in memory, optionally mirrored to a JSON file (mode 0600, replaced atomically).
#[derive(Debug)]
pub struct FileSecretStore {
    path: Option<PathBuf>,
    /// Provisioned by the operator in the configuration; they win over generated ones.
    fixed: BTreeMap<String, String>,
    secrets: RwLock<BTreeMap<String, String>>,
}

impl FileSecretStore {
    /// A store that keeps nothing on disk.
    pub fn memory(fixed: BTreeMap<String, String>) -> FileSecretStore {
        FileSecretStore {
            path: None,
            fixed,
            secrets: RwLock::new(BTreeMap::new()),
        }
    }

    /// Opens (or creates on first write) `path`.
    pub fn open(path: &Path, fixed: BTreeMap<String, String>) -> Result<FileSecretStore, String> {
        let secrets = match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                format!(
                    "{}:{}:{}: not a JSON object of service id → secret: {e}",
                    path.display(),
                    e.line(),
                    e.column()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Ok(FileSecretStore {
            path: Some(path.to_path_buf()),
            fixed,
            secrets: RwLock::new(secrets),
        })
    }

    fn save(&self, secrets: &BTreeMap<String, String>) -> Result<(), String> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let io = |e: std::io::Error| format!("{}: {e}", path.display());
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = path.with_extension("json.tmp");
        {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut f = options.open(&tmp).map_err(io)?;
            let text = serde_json::to_vec_pretty(secrets).map_err(|e| e.to_string())?;
            f.write_all(&text).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)
    }
}

impl SecretStore for FileSecretStore {
    fn is_provisioned(&self, service_id: &str) -> bool {
        self.fixed.contains_key(service_id)
    }

    fn get(&self, service_id: &str) -> Option<String> {
        if let Some(s) = self.fixed.get(service_id) {
            return Some(s.clone());
        }
        self.secrets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(service_id)
            .cloned()
    }

    fn set(&self, service_id: &str, secret: &str) -> Result<(), String> {
        let mut secrets = self.secrets.write().unwrap_or_else(|p| p.into_inner());
        let mut next = secrets.clone();
        next.insert(service_id.to_owned(), secret.to_owned());
        self.save(&next)?;
        *secrets = next;
        Ok(())
    }

    fn remove(&self, service_id: &str) -> Result<(), String> {
        let mut secrets = self.secrets.write().unwrap_or_else(|p| p.into_inner());
        if !secrets.contains_key(service_id) {
            return Ok(());
        }
        let mut next = secrets.clone();
        next.remove(service_id);
        self.save(&next)?;
        *secrets = next;
        Ok(())
    }
}
