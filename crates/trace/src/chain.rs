//! The hash chain encoding and the bounded line reader shared by the trace store and the audit log.
//!
//! Both logs are JSON Lines files in which every record carries `prev` (the hash of the record
//! before it) and `hash`. The hash is taken over a length-prefixed binary encoding of the record's
//! values, not over its JSON text, so the check does not depend on how a JSON writer spells
//! numbers or escapes strings, and no two different records encode to the same bytes.

use std::fs::File;
use std::io::{self, BufRead};
use std::path::{Path, PathBuf};

use caio_contracts::canonical::Sha256;

use crate::error::StoreError;

/// The `prev` of the first record.
pub(crate) const GENESIS: [u8; 32] = [0; 32];

/// One step of the chain: SHA-256 over `prev ‖ encoded fields ‖ raw tail`.
pub(crate) struct Link(Sha256);

impl Link {
    pub(crate) fn new(prev: &[u8; 32]) -> Self {
        let mut h = Sha256::new();
        h.update(prev);
        Self(h)
    }

    /// A number: 8 bytes, big-endian.
    pub(crate) fn u64(mut self, v: u64) -> Self {
        self.0.update(&v.to_be_bytes());
        self
    }

    /// A string: its UTF-8 length as a number, then its bytes.
    pub(crate) fn str(self, s: &str) -> Self {
        let mut this = self.u64(s.len() as u64);
        this.0.update(s.as_bytes());
        this
    }

    /// An optional string: one byte 0 for none, or one byte 1 and the string.
    pub(crate) fn opt(mut self, s: Option<&str>) -> Self {
        match s {
            None => {
                self.0.update(&[0u8]);
                self
            }
            Some(s) => {
                self.0.update(&[1u8]);
                self.str(s)
            }
        }
    }

    /// Raw bytes without a length (only ever the last item, so the encoding stays unambiguous).
    pub(crate) fn raw(mut self, b: &[u8]) -> Self {
        self.0.update(b);
        self
    }

    pub(crate) fn finish(self) -> [u8; 32] {
        self.0.finish()
    }
}

/// The position of a chain: the last record's seq and hash (`GENESIS` before the first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Chain {
    pub seq: u64,
    pub hash: [u8; 32],
}

impl Default for Chain {
    fn default() -> Self {
        Self {
            seq: 0,
            hash: GENESIS,
        }
    }
}

/// How a line read from a log ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Line {
    /// Ended with a newline; the buffer holds it without the newline.
    Complete,
    /// The file ended before a newline: a write that was cut off.
    Torn,
    /// Ended with a newline but was longer than the limit; its bytes were skipped, not kept.
    TooLong,
}

/// Reads newline-terminated lines without ever holding more than `max` bytes of one line, so a
/// hostile file with a gigabyte-long line cannot exhaust memory.
pub(crate) struct Lines<R> {
    reader: R,
    max: usize,
    /// Byte offset of the start of the next line.
    pub offset: u64,
    /// 1-based number of the line last returned.
    pub number: u64,
}

impl<R: BufRead> Lines<R> {
    pub(crate) fn new(reader: R, max: usize) -> Self {
        Self {
            reader,
            max,
            offset: 0,
            number: 0,
        }
    }

    /// Reads the next line into `buf`. Returns the kind of line and the number of bytes it took in
    /// the file (newline included), or `None` at the end of the file.
    pub(crate) fn next_line(&mut self, buf: &mut Vec<u8>) -> io::Result<Option<(Line, u64)>> {
        buf.clear();
        let mut consumed = 0u64;
        let mut too_long = false;
        loop {
            let available = match self.reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                if consumed == 0 {
                    return Ok(None);
                }
                self.number += 1;
                self.offset += consumed;
                return Ok(Some((Line::Torn, consumed)));
            }
            let newline = available.iter().position(|&b| b == b'\n');
            let take = newline.map_or(available.len(), |i| i + 1);
            let chunk = &available[..take];
            if !too_long {
                if buf.len() + chunk.len() > self.max + 1 {
                    too_long = true;
                    buf.clear();
                    buf.shrink_to(self.max.min(1 << 20));
                } else {
                    buf.extend_from_slice(chunk);
                }
            }
            self.reader.consume(take);
            consumed += take as u64;
            if newline.is_some() {
                self.number += 1;
                self.offset += consumed;
                if too_long {
                    return Ok(Some((Line::TooLong, consumed)));
                }
                buf.pop();
                return Ok(Some((Line::Complete, consumed)));
            }
        }
    }
}

pub(crate) fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Opens (creating it if needed) a log file for reading and appending, and takes an exclusive
/// advisory lock on it so two processes never append to the same chain.
pub(crate) fn open_locked(dir: &Path, name: &str) -> Result<(PathBuf, File), StoreError> {
    open_locked_syncing(dir, name, true)
}

/// [`open_locked`], with the directory synced after creating the file only when `sync_dir`:
/// a directory sync is a journal commit (milliseconds), which a log that does not promise to
/// survive a power loss need not wait for.
pub(crate) fn open_locked_syncing(
    dir: &Path,
    name: &str,
    sync_dir: bool,
) -> Result<(PathBuf, File), StoreError> {
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let path = dir.join(name);
    let existed = path.exists();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(&path)
        .map_err(io_error(&path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Err(StoreError::Locked { path }),
        Err(std::fs::TryLockError::Error(e)) => return Err(io_error(&path)(e)),
    }
    if !existed && sync_dir {
        // A new file's directory entry is only durable once the directory itself is synced.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error(dir))?;
    }
    Ok((path, file))
}

/// Cuts a torn last line off a log and makes the cut durable before anything new is appended.
pub(crate) fn truncate(path: &Path, file: &File, len: u64) -> Result<(), StoreError> {
    file.set_len(len)
        .and_then(|()| file.sync_all())
        .map_err(io_error(path))
}

/// Undoes a failed append by cutting the file back to `len`. Returns why the log must stop
/// accepting writes when even that fails (its tail is then unknown).
pub(crate) fn roll_back(file: &File, len: u64, cause: &io::Error) -> Option<String> {
    match file.set_len(len) {
        Ok(()) => None,
        Err(e) => Some(format!(
            "an append failed ({cause}) and cutting the file back to {len} bytes failed too ({e})"
        )),
    }
}
