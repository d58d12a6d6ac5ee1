//! The agent's socket: a private directory (0700, ours), a 0600 socket, a lock against a
//! second agent, and cleanup of a stale socket left by a killed one.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::paths;

/// macOS `sun_path` is 104 bytes including the NUL; Linux allows 108. Use the smaller.
pub const MAX_SOCKET_PATH: usize = 103;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("{dir} is accessible to other users (mode {mode:o}); run `chmod 700 {dir}` or remove it, then start again")]
    UnsafeDir { dir: String, mode: u32 },
    #[error("{dir} belongs to uid {owner}, not to you (uid {uid}); another user may be impersonating the agent — remove it or choose another --socket")]
    WrongOwner { dir: String, owner: u32, uid: u32 },
    #[error("{dir} is not a directory (or is a symlink); remove it or choose another --socket")]
    NotDir { dir: String },
    #[error("another keyferry agent is already serving {socket}{}; stop it first (or use --socket for a second one)", pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    AlreadyRunning { socket: String, pid: Option<u32> },
    #[error("socket path {path} is {len} bytes; the limit is {MAX_SOCKET_PATH} (macOS): set a shorter --socket or KEYFERRY_SOCK")]
    TooLong { path: String, len: usize },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path, source: std::io::Error) -> SocketError {
    SocketError::Io {
        path: paths::display(path),
        source,
    }
}

/// `--socket` > `KEYFERRY_SOCK` > `[agent] socket` > `$XDG_RUNTIME_DIR/keyferry/agent.sock`
/// (Linux) or `$TMPDIR/keyferry/agent.sock` (macOS) > `/tmp/keyferry-UID/agent.sock`.
#[must_use]
pub fn path(flag: Option<&Path>, configured: Option<&str>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("KEYFERRY_SOCK").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = configured {
        return paths::expand(p);
    }
    let base = if cfg!(target_os = "macos") {
        "TMPDIR"
    } else {
        "XDG_RUNTIME_DIR"
    };
    if let Some(dir) = std::env::var_os(base).map(PathBuf::from) {
        let candidate = dir.join("keyferry").join("agent.sock");
        if dir.is_absolute() && dir.is_dir() && candidate.as_os_str().len() <= MAX_SOCKET_PATH {
            return candidate;
        }
    }
    PathBuf::from(format!("/tmp/keyferry-{}", paths::current_uid())).join("agent.sock")
}

/// Creates the socket's directory 0700, or checks an existing one is ours and private.
///
/// # Errors
/// Unsafe mode, foreign owner, not a directory, path too long.
pub fn prepare_dir(socket: &Path) -> Result<PathBuf, SocketError> {
    let len = socket.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(SocketError::TooLong {
            path: socket.display().to_string(),
            len,
        });
    }
    let dir = socket.parent().unwrap_or(Path::new("/")).to_path_buf();
    match fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Missing parents (a custom path): create them private too.
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| io(&dir, e))?;
        }
        Err(e) => return Err(io(&dir, e)),
    }
    check_private_dir(&dir)?;
    Ok(dir)
}

use std::os::unix::fs::DirBuilderExt as _;

/// The directory must be a real directory, owned by us, closed to group and others.
///
/// # Errors
/// As described.
pub fn check_private_dir(dir: &Path) -> Result<(), SocketError> {
    let meta = fs::symlink_metadata(dir).map_err(|e| io(dir, e))?;
    let shown = dir.display().to_string();
    if !meta.is_dir() {
        return Err(SocketError::NotDir { dir: shown });
    }
    let uid = paths::current_uid();
    if meta.uid() != uid {
        return Err(SocketError::WrongOwner {
            dir: shown,
            owner: meta.uid(),
            uid,
        });
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SocketError::UnsafeDir { dir: shown, mode });
    }
    Ok(())
}

/// Held for the agent's lifetime; a second agent fails to take it.
pub struct InstanceLock {
    _file: File,
}

impl InstanceLock {
    /// # Errors
    /// Another agent holds it, or the lock file cannot be opened.
    pub fn acquire(dir: &Path, socket: &Path) -> Result<Self, SocketError> {
        let path = dir.join(format!(
            "{}.lock",
            socket
                .file_name()
                .map_or("agent".into(), |n| n.to_string_lossy())
        ));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        if crate::sys::flock(&file, crate::sys::Flock::TryExclusive).is_err() {
            let pid = fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse().ok());
            return Err(SocketError::AlreadyRunning {
                socket: socket.display().to_string(),
                pid,
            });
        }
        file.set_len(0).map_err(|e| io(&path, e))?;
        write!(file, "{}", std::process::id()).map_err(|e| io(&path, e))?;
        Ok(Self { _file: file })
    }
}

/// Binds the socket (removing a stale one: we hold the instance lock, so no live agent
/// owns it) and makes it 0600.
///
/// # Errors
/// Bind or chmod failure.
pub fn bind(socket: &Path) -> Result<tokio::net::UnixListener, SocketError> {
    match fs::symlink_metadata(socket) {
        Ok(_) => {
            tracing::info!(socket = %socket.display(), "removing a stale socket");
            fs::remove_file(socket).map_err(|e| io(socket, e))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(socket, e)),
    }
    let listener = tokio::net::UnixListener::bind(socket).map_err(|e| io(socket, e))?;
    // The directory is already 0700, so the moment before this chmod exposes nothing.
    fs::set_permissions(socket, fs::Permissions::from_mode(0o600)).map_err(|e| io(socket, e))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_open_directories_and_long_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("kf");
        let sock = dir.join("agent.sock");
        assert_eq!(prepare_dir(&sock).unwrap(), dir);
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let err = prepare_dir(&sock).unwrap_err().to_string();
        assert!(err.contains("chmod 700"), "{err}");
        let long = tmp.path().join("x".repeat(120)).join("agent.sock");
        assert!(matches!(
            prepare_dir(&long),
            Err(SocketError::TooLong { .. })
        ));
    }

    #[test]
    fn second_lock_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let sock = tmp.path().join("agent.sock");
        let _first = InstanceLock::acquire(tmp.path(), &sock).unwrap();
        let err = InstanceLock::acquire(tmp.path(), &sock).err().unwrap();
        assert!(
            matches!(err, SocketError::AlreadyRunning { pid: Some(p), .. } if p == std::process::id()),
            "{err}"
        );
    }
}
