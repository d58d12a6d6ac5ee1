//! Atomic, locked file replacement: temp file + fsync + rename, never a torn or lost write.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::safe_file::{self, FileError};

/// A write failure naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{path}: cannot write: {source}")]
pub struct WriteError {
    pub path: String,
    #[source]
    pub source: io::Error,
}

impl From<WriteError> for FileError {
    fn from(e: WriteError) -> Self {
        Self::Io {
            path: e.path,
            source: e.source,
        }
    }
}

fn err(path: &Path, source: io::Error) -> WriteError {
    WriteError {
        path: crate::paths::display(path),
        source,
    }
}

/// An exclusive `flock` on the file currently at `path` (created empty, 0600, if missing).
/// The file is opened like [`crate::safe_file::open`]: never through a symlink, never a
/// FIFO or another user's file. Re-checks the inode after locking: a writer that renamed a
/// new file in meanwhile means our lock is on a dead inode, so we retry on the new one.
pub struct FileLock {
    file: File,
    path: PathBuf,
}

impl FileLock {
    /// # Errors
    /// The file is a symlink, FIFO, directory, device or another user's, or cannot be
    /// opened or locked.
    pub fn acquire(path: &Path) -> Result<Self, FileError> {
        loop {
            // Create it if missing (never through a dangling link: O_NOFOLLOW), then open it
            // the safe way and check what it is on the descriptor.
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
            {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(FileError::io(path, e)),
            }
            let Some(file) = safe_file::open(
                path,
                safe_file::Access::ReadWrite,
                safe_file::MAX_FILE_BYTES,
            )?
            else {
                continue;
            };
            crate::sys::flock(&file, crate::sys::Flock::Exclusive)
                .map_err(|e| FileError::io(path, e))?;
            let held = file.metadata().map_err(|e| FileError::io(path, e))?.ino();
            match fs::symlink_metadata(path) {
                Ok(m) if m.ino() == held => {
                    return Ok(Self {
                        file,
                        path: path.to_path_buf(),
                    })
                }
                Ok(_) | Err(_) => continue,
            }
        }
    }

    /// Refuses a locked file that has other names (see [`safe_file::single_link`]).
    ///
    /// # Errors
    /// [`FileError::HardLinked`].
    pub fn single_link(&self) -> Result<(), FileError> {
        safe_file::single_link(&self.file, &self.path)
    }

    /// Reads the locked file (bounded by [`crate::safe_file::MAX_FILE_BYTES`]).
    ///
    /// # Errors
    /// I/O, an oversized file, or invalid UTF-8.
    pub fn read_to_string(&mut self) -> Result<String, FileError> {
        use std::io::Seek;
        self.file
            .rewind()
            .map_err(|e| FileError::io(&self.path, e))?;
        let bytes = safe_file::read_all(&mut self.file, &self.path, safe_file::MAX_FILE_BYTES)?;
        String::from_utf8(bytes).map_err(|_| {
            FileError::io(
                &self.path,
                io::Error::new(io::ErrorKind::InvalidData, "not valid UTF-8"),
            )
        })
    }
}

/// Replaces `path` with `contents` atomically. The new file gets `mode`, or the existing
/// file's mode when that is stricter; it is fsynced before the rename and the directory after.
///
/// # Errors
/// Any I/O failure; the old file is then left untouched.
pub fn write(path: &Path, contents: &[u8], mode: u32) -> Result<(), WriteError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // lstat: a symlink's target must not lend its mode (the rename replaces the link itself).
    let mode = match fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.file_type().is_file())
    {
        Some(m) => (m.mode() & 0o777) & mode,
        None => mode,
    };
    sweep_stale(path);
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have cleared bits we asked for; the mode must be exact.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(contents)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| err(path, e))
}

/// Creates `dir` (and parents) with mode 0700 if missing.
///
/// # Errors
/// The directory cannot be created.
pub fn private_dir(dir: &Path) -> Result<(), WriteError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| err(dir, e))
}

/// Removes temp files that a writer killed mid-write left next to `path` (they may hold a
/// token): `.NAME.keyferry-PID-…tmp` whose PID is no longer running.
fn sweep_stale(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!(".{}.keyferry-", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(".tmp"))
        else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let alive = crate::sys::process_alive(pid);
        if !alive {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let unique = format!(
        ".{name}.keyferry-{}-{}.tmp",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    );
    path.with_file_name(unique)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_with_mode_and_keeps_stricter_existing_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write(&p, b"one", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o400)).unwrap();
        write(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o400);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn stale_temp_files_of_dead_writers_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".env");
        // PIDs above pid_max do not exist.
        let stale = dir.path().join("..env.keyferry-99999999-1.tmp");
        fs::write(&stale, "TOKEN=leftover").unwrap();
        write(&p, b"K=v", 0o600).unwrap();
        assert!(!stale.exists());
    }

    #[test]
    fn lock_serialises_read_modify_write() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("counter");
        write(&p, b"0", 0o600).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let p = p.clone();
                std::thread::spawn(move || {
                    for _ in 0..25 {
                        let _lock = FileLock::acquire(&p).unwrap();
                        let n: u32 = fs::read_to_string(&p).unwrap().parse().unwrap();
                        write(&p, (n + 1).to_string().as_bytes(), 0o600).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(fs::read_to_string(&p).unwrap(), "200");
    }
}
