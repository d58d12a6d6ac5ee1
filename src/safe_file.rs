//! Opening files the user's tokens go into (sinks) or the agent's own state comes from
//! (config, registry, ledger, policy) without being turned against the user: the final path
//! component is never followed as a symlink, a FIFO never blocks, and only a regular file
//! owned by the user, of bounded size, is ever read, written or chmod'ed.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::domain::ErrorCode;

/// The largest file Keyferry reads or rewrites (a `.env`, a snapshot, its own state).
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// Why a file was refused. Each names the path and the fix; none carries file contents.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: is a symbolic link; refusing to read or write through it (replace the link with a regular file)")]
    Symlink { path: String },
    #[error("{path}: is a {what}, not a regular file; refusing to read or write it")]
    NotRegular { path: String, what: &'static str },
    #[error(
        "{path}: is owned by uid {owner}, not by you (uid {me}); refusing to read or write it"
    )]
    ForeignOwner { path: String, owner: u32, me: u32 },
    #[error("{path}: is {size} bytes, over the {limit}-byte limit; refusing to read it")]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl FileError {
    /// The stable error code for the socket and the UI.
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Symlink { .. }
            | Self::NotRegular { .. }
            | Self::ForeignOwner { .. }
            | Self::TooLarge { .. } => ErrorCode::UnsafeFile,
            Self::Io { .. } => ErrorCode::Io,
        }
    }

    /// An I/O failure on `path`.
    #[must_use]
    pub fn io(path: &Path, source: io::Error) -> Self {
        Self::Io {
            path: crate::paths::display(path),
            source,
        }
    }
}

/// How a file is opened.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    ReadWrite,
}

fn kind_name(ft: std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        "directory"
    } else if ft.is_fifo() {
        "FIFO"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_char_device() || ft.is_block_device() {
        "device"
    } else {
        "special file"
    }
}

/// Opens an existing file at `path` safely: `O_NOFOLLOW | O_NONBLOCK`, then checks on the
/// open descriptor that it is a regular file owned by us and at most `limit` bytes.
/// `Ok(None)` when nothing is there.
///
/// # Errors
/// A symlink, FIFO, device, directory, foreign owner or oversized file, each naming the path.
pub fn open(path: &Path, access: Access, limit: u64) -> Result<Option<File>, FileError> {
    let shown = || crate::paths::display(path);
    let mut opts = OpenOptions::new();
    opts.read(true)
        .write(access == Access::ReadWrite)
        // O_NONBLOCK: opening a FIFO with no writer (or reader) returns at once instead of
        // parking the thread; on a regular file it changes nothing.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC);
    let file = match opts.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(FileError::Symlink { path: shown() })
        }
        // A FIFO opened for writing without a reader; a directory opened for writing.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENXIO | libc::EISDIR)) => {
            return Err(match std::fs::symlink_metadata(path) {
                Ok(m) => FileError::NotRegular {
                    path: shown(),
                    what: kind_name(m.file_type()),
                },
                Err(_) => FileError::io(path, e),
            });
        }
        Err(e) => return Err(FileError::io(path, e)),
    };
    let meta = file.metadata().map_err(|e| FileError::io(path, e))?;
    if !meta.file_type().is_file() {
        return Err(FileError::NotRegular {
            path: shown(),
            what: kind_name(meta.file_type()),
        });
    }
    let me = crate::paths::current_uid();
    if meta.uid() != me {
        return Err(FileError::ForeignOwner {
            path: shown(),
            owner: meta.uid(),
            me,
        });
    }
    if meta.len() > limit {
        return Err(FileError::TooLarge {
            path: shown(),
            size: meta.len(),
            limit,
        });
    }
    Ok(Some(file))
}

/// Reads at most `limit` bytes from an open file; more is an error (the file grew).
///
/// # Errors
/// I/O, or the file holds more than `limit` bytes.
pub fn read_all(file: &mut File, path: &Path, limit: u64) -> Result<Vec<u8>, FileError> {
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| FileError::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(FileError::TooLarge {
            path: crate::paths::display(path),
            size: bytes.len() as u64,
            limit,
        });
    }
    Ok(bytes)
}

/// Reads a whole file safely (see [`open`]); `Ok(None)` when it does not exist.
///
/// # Errors
/// As [`open`], plus invalid UTF-8.
pub fn read_to_string(path: &Path, limit: u64) -> Result<Option<String>, FileError> {
    let Some(mut file) = open(path, Access::Read, limit)? else {
        return Ok(None);
    };
    let bytes = read_all(&mut file, path, limit)?;
    String::from_utf8(bytes).map(Some).map_err(|_| {
        FileError::io(
            path,
            io::Error::new(io::ErrorKind::InvalidData, "not valid UTF-8"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_symlink_is_refused_without_touching_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id_ed25519");
        std::fs::write(&key, "PRIVATE KEY").unwrap();
        let link = dir.path().join(".env");
        symlink(&key, &link).unwrap();
        let e = open(&link, Access::ReadWrite, MAX_FILE_BYTES).unwrap_err();
        assert!(matches!(e, FileError::Symlink { .. }), "{e}");
        assert!(e.to_string().contains(".env"), "{e}");
        assert!(!e.to_string().contains("PRIVATE"), "{e}");
    }

    #[test]
    fn a_fifo_is_refused_at_once_for_reading_and_writing() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("f");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        for access in [Access::Read, Access::ReadWrite] {
            let e = open(&fifo, access, MAX_FILE_BYTES).unwrap_err();
            assert!(
                matches!(e, FileError::NotRegular { what: "FIFO", .. }),
                "{e}"
            );
        }
    }

    #[test]
    fn directories_and_devices_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = open(dir.path(), Access::Read, MAX_FILE_BYTES).unwrap_err();
        assert!(
            matches!(
                e,
                FileError::NotRegular {
                    what: "directory",
                    ..
                }
            ),
            "{e}"
        );
        let e = open(Path::new("/dev/null"), Access::Read, MAX_FILE_BYTES).unwrap_err();
        assert!(
            matches!(e, FileError::NotRegular { what: "device", .. }),
            "{e}"
        );
    }

    #[test]
    fn oversized_files_are_refused_and_missing_ones_are_none() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        std::fs::write(&p, vec![b'x'; 100]).unwrap();
        let e = read_to_string(&p, 99).unwrap_err();
        assert!(matches!(e, FileError::TooLarge { size: 100, .. }), "{e}");
        assert_eq!(read_to_string(&p, 100).unwrap().unwrap().len(), 100);
        assert!(read_to_string(&dir.path().join("none"), 10)
            .unwrap()
            .is_none());
    }
}
