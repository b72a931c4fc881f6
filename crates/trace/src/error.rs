//! The error type of the trace store and the audit log.

use std::path::{Path, PathBuf};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A log file is damaged or was edited: the store refuses to open it.
    #[error("{}: {reason}", at(path, *line))]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line number of the first bad line.
        line: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A record or event the caller passed cannot be stored.
    #[error("invalid record: {0}")]
    Invalid(String),
    /// Another process (or another open store in this one) holds the file.
    #[error("{}: in use by another store (one process at a time may open a log)", path.display())]
    Locked {
        /// The file.
        path: PathBuf,
    },
    /// An earlier write failed in a way that left the end of the file unknown, so the store
    /// accepts no more writes; reopening it checks the file again.
    #[error("{}: no longer accepting writes: {reason}", path.display())]
    Failed {
        /// The file.
        path: PathBuf,
        /// The earlier failure.
        reason: String,
    },
}

fn at(path: &Path, line: u64) -> String {
    format!("{}:{line}", path.display())
}
