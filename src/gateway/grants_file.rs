//! The grants file: `grants.json` (0600) in a given private directory, written
//! atomically, read with a size bound, expired grants dropped at load. Hashes only.

use std::io::Read;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use super::grants::Grants;
use crate::atomic;

/// The file's name inside the directory it is given.
pub const FILE_NAME: &str = "grants.json";
/// Thousands of grants fit; a file beyond this is not ours.
const MAX_FILE: u64 = 8 << 20;

/// The grants file cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum GrantsFileError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: larger than {MAX_FILE} bytes; not a grants file", path.display())]
    TooLarge { path: PathBuf },
    #[error("{}: not a grants file: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Write(#[from] atomic::WriteError),
}

/// A [`Grants`] table bound to its file.
#[derive(Debug)]
pub struct GrantsFile {
    path: PathBuf,
    pub table: Grants,
    dirty: bool,
}

impl GrantsFile {
    /// Loads `dir/grants.json` (an empty table when missing), creating `dir` 0700.
    /// Expired grants are dropped.
    ///
    /// # Errors
    /// The file is unreadable, too large or malformed; or the directory cannot be made.
    pub fn open(dir: &Path, now: OffsetDateTime) -> Result<Self, GrantsFileError> {
        atomic::private_dir(dir)?;
        let path = dir.join(FILE_NAME);
        let read_err = |source| GrantsFileError::Read {
            path: path.clone(),
            source,
        };
        // Never through a link, never a FIFO or someone else's file (see `safe_file`).
        let opened = crate::safe_file::open(&path, crate::safe_file::Access::Read, MAX_FILE);
        let mut table = match opened {
            Ok(Some(f)) => {
                let mut raw = Vec::new();
                f.take(MAX_FILE + 1)
                    .read_to_end(&mut raw)
                    .map_err(read_err)?;
                if raw.len() as u64 > MAX_FILE {
                    return Err(GrantsFileError::TooLarge { path });
                }
                serde_json::from_slice::<Grants>(&raw).map_err(|source| GrantsFileError::Parse {
                    path: path.clone(),
                    source,
                })?
            }
            Ok(None) => Grants::default(),
            Err(crate::safe_file::FileError::TooLarge { .. }) => {
                return Err(GrantsFileError::TooLarge { path })
            }
            Err(e) => return Err(read_err(std::io::Error::other(e.to_string()))),
        };
        let before = table.clone();
        table.prune(now);
        let dirty = table != before;
        Ok(Self { path, table, dirty })
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Marks the table changed (usage counters), to be written by the next [`Self::flush`].
    pub fn touch(&mut self) {
        self.dirty = true;
    }

    /// Writes the table now (after a create or revoke, which must survive a crash).
    ///
    /// # Errors
    /// The write failed; the old file is left intact.
    pub fn save(&mut self) -> Result<(), GrantsFileError> {
        let json =
            serde_json::to_vec_pretty(&self.table).map_err(|source| GrantsFileError::Parse {
                path: self.path.clone(),
                source,
            })?;
        atomic::write(&self.path, &json, 0o600)?;
        self.dirty = false;
        Ok(())
    }

    /// Writes the table if usage changed since the last write (call it on a timer, so
    /// metering costs no disk write per request).
    ///
    /// # Errors
    /// The write failed.
    pub fn flush(&mut self) -> Result<(), GrantsFileError> {
        if self.dirty {
            self.save()?;
        }
        Ok(())
    }
}
