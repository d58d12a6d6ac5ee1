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
    #[error("{path}: the folder {folder} on its way is a symbolic link; refusing to write through it (something that can write to a folder above the sink may have replaced it: replace the link with a real folder)")]
    ParentSymlink { path: String, folder: String },
    #[error("{path}: the folder {folder} on its way is owned by uid {owner} with mode {mode:o}; a sink's folders must be yours (or root's) and not writable by others (chmod go-w, or pick another path)")]
    UnsafeFolder {
        path: String,
        folder: String,
        owner: u32,
        mode: u32,
    },
    #[error("{path}: has {links} hard links; refusing to read or write it (a sink must be the only name of its file: delete it and let Keyferry write it anew)")]
    HardLinked { path: String, links: u64 },
    #[error("{path}: holds a live login (a refresh token); a snapshot there would log it out for good — pick a path inside the sandbox's mount")]
    LiveLogin { path: String },
    #[error(
        "{path}: is where Keyferry reads {what} from; a sink there would overwrite its own source"
    )]
    IsSource { path: String, what: String },
    #[error("{path}: not a usable sink path: {why}")]
    BadPath { path: String, why: &'static str },
    #[error(
        "{path}: the folder {folder} does not exist; create it first (mkdir -p {folder}){}",
        create_with.map(|flag| format!(" or pass {flag}")).unwrap_or_default()
    )]
    MissingFolder {
        path: String,
        folder: String,
        /// The flag that would create it, where the command has one.
        create_with: Option<&'static str>,
    },
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
            | Self::TooLarge { .. }
            | Self::ParentSymlink { .. }
            | Self::UnsafeFolder { .. }
            | Self::HardLinked { .. }
            | Self::LiveLogin { .. }
            | Self::IsSource { .. }
            | Self::BadPath { .. } => ErrorCode::UnsafeFile,
            Self::MissingFolder { .. } | Self::Io { .. } => ErrorCode::Io,
        }
    }

    /// The same error naming `shown` (the path the user wrote) instead of the path it was
    /// reached by (`/proc/self/fd/N/…`).
    #[must_use]
    pub fn shown_as(mut self, shown: &str) -> Self {
        match &mut self {
            Self::Symlink { path }
            | Self::NotRegular { path, .. }
            | Self::ForeignOwner { path, .. }
            | Self::TooLarge { path, .. }
            | Self::ParentSymlink { path, .. }
            | Self::UnsafeFolder { path, .. }
            | Self::HardLinked { path, .. }
            | Self::LiveLogin { path }
            | Self::IsSource { path, .. }
            | Self::BadPath { path, .. }
            | Self::MissingFolder { path, .. }
            | Self::Io { path, .. } => shown.clone_into(path),
        }
        self
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

/// Refuses a file whose folder is missing, naming the first missing folder, so nothing is
/// created that the user did not ask for. `create_with` names the flag that would.
///
/// # Errors
/// [`FileError::MissingFolder`].
pub fn require_folder(path: &Path, create_with: Option<&'static str>) -> Result<(), FileError> {
    let Some(parent) = path.parent() else {
        return Ok(());
    };
    // As the user wrote it (a relative path stays relative), outermost first.
    let mut ancestors: Vec<&Path> = parent
        .ancestors()
        .filter(|a| !a.as_os_str().is_empty())
        .collect();
    ancestors.reverse();
    for folder in ancestors {
        if let Err(e) = std::fs::symlink_metadata(folder) {
            if e.kind() == io::ErrorKind::NotFound {
                return Err(FileError::MissingFolder {
                    path: crate::paths::display(path),
                    folder: crate::paths::display(folder),
                    create_with,
                });
            }
        }
    }
    Ok(())
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

/// Refuses a file with more than one name: written through, a hard link would change (or
/// leak into the sink) another file of the user's.
///
/// # Errors
/// [`FileError::HardLinked`], or the descriptor cannot be inspected.
pub fn single_link(file: &File, path: &Path) -> Result<(), FileError> {
    let links = file.metadata().map_err(|e| FileError::io(path, e))?.nlink();
    if links > 1 {
        return Err(FileError::HardLinked {
            path: crate::paths::display(path),
            links,
        });
    }
    Ok(())
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

    #[test]
    fn require_folder_names_the_outermost_missing_folder() {
        let t = tempfile::tempdir().unwrap();
        let deep = t.path().join("a/b/c/f.json");
        match require_folder(&deep, Some("--mkdir")).unwrap_err() {
            FileError::MissingFolder { folder, .. } => {
                assert_eq!(folder, crate::paths::display(&t.path().join("a")));
            }
            other => panic!("{other:?}"),
        }
        std::fs::create_dir_all(t.path().join("a/b/c")).unwrap();
        require_folder(&deep, None).unwrap();
        require_folder(Path::new("f.json"), None).unwrap();
    }
}
