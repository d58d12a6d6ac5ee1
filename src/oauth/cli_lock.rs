//! The CLIs' own cross-process refresh locks, taken the same way each CLI takes them, so
//! Keyferry and the CLI never refresh or rewrite one login at once: Claude Code's `mkdir`
//! locks (this file) and Codex's `flock`s on `auth.lock` / `auth.json.lock`
//! (`cli_lock/codex.rs`). Which one a login needs is its provider's
//! (`LoginProvider::cli_lock`); where it lives is its source's (`LoginSource::cli_lock_dir`).
//! Keyferry holds it from the re-read before the token call until the write-back, and never
//! waits for it without a deadline.
//!
//! Claude Code 2.1.197 (`szr()`/`F6r()` in its bundle) wraps re-read → token call → store in two
//! proper-lockfile locks on its credentials directory `D` (`$CLAUDE_SECURESTORAGE_CONFIG_DIR`,
//! else `$CLAUDE_CONFIG_DIR`, else `~/.claude`): `D/.oauth_refresh.lock` and the legacy
//! `realpath(D).lock` (so `~/.claude.lock`). proper-lockfile locks by `mkdir`, refreshes the
//! directory's mtime every few seconds while held, and treats a lock whose mtime is older than
//! `stale` as abandoned (10 s in 2.1.197, 60 s in 2.1.214 per anaclumos/tokenmaxxing#27). On
//! contention the CLI retries 5 times 1–2 s apart, then gives up without refreshing. A legacy
//! lock that cannot be created for another reason than contention is ignored. Sandboxes that
//! block `mkdir ~/.claude.lock` break the CLI's refresh (nolabs-ai/nono#379); a lock dir left
//! behind by a killed CLI blocks it until stale (anthropics/claude-code#95236).
//!
//! Keyferry does the same, so it and the CLI never refresh one login at once: we hold both
//! locks from the re-read until the write-back, heartbeat them, and reclaim only locks older
//! than [`STALE`] (the longest stale time seen in any version, so we never steal a live one).

mod codex;

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub use codex::{AUTH_JSON_LOCK, AUTH_LOCK, WAIT as CODEX_WAIT};

pub const PRIMARY: &str = ".oauth_refresh.lock";
/// A lock not heartbeaten for this long is abandoned.
pub const STALE: Duration = Duration::from_secs(60);
const HEARTBEAT: Duration = Duration::from_secs(5);
const ATTEMPTS: u32 = 6;

/// Whose lock a login's CLI takes around its refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CliLockKind {
    /// Claude Code's `mkdir` locks on its credentials directory (this file).
    ClaudeCode,
    /// Codex's `flock`s on `auth.lock` and `auth.json.lock` in its home (`cli_lock/codex.rs`).
    Codex,
}

impl CliLockKind {
    fn cli(self) -> &'static str {
        match self {
            Self::ClaudeCode => "Claude Code",
            Self::Codex => "Codex",
        }
    }
}

/// Why a CLI's lock was not taken. Nothing was sent or written then: the refresh token is
/// unspent, a journaled login stays journaled, and the schedule tries again after a backoff.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("Claude Code is refreshing this login right now ({path} is held); trying again later")]
    Busy { path: String },
    #[error("{path} has been held by another process for over {secs} s, so Keyferry did not refresh (nothing was spent or lost) and tries again later; the holder is a `codex` logging in, refreshing or stuck, or another Keyferry refresh of the same CODEX_HOME (a second refresher entry for that login, or `keyferry` run without the agent while the agent refreshes): find it with `fuser -v {path}` (or `lsof {path}`) and end it, or keep one refresher per CODEX_HOME")]
    CodexHeld { path: String, secs: u64 },
    #[error("{path}: cannot take {cli}'s refresh lock: {source}")]
    Io {
        path: String,
        cli: &'static str,
        #[source]
        source: io::Error,
    },
}

/// A CLI's refresh lock, held until dropped.
pub struct CliLock {
    _guard: Guard,
}

/// Held only to be dropped: each releases its CLI's lock then (so nothing reads them).
#[allow(dead_code)]
enum Guard {
    ClaudeCode(ClaudeLock),
    Codex(codex::CodexLock),
}

impl CliLock {
    /// Takes `kind`'s lock in `dir` (Claude Code's credentials directory, Codex's home) the
    /// way that CLI takes it, waiting a bounded time.
    ///
    /// # Errors
    /// [`LockError::Busy`] / [`LockError::CodexHeld`] when the lock stays held; I/O errors.
    pub async fn acquire(kind: CliLockKind, dir: &Path) -> Result<Self, LockError> {
        let guard = match kind {
            CliLockKind::ClaudeCode => Guard::ClaudeCode(ClaudeLock::acquire(dir).await?),
            CliLockKind::Codex => Guard::Codex(codex::CodexLock::acquire(dir, CODEX_WAIT).await?),
        };
        Ok(Self { _guard: guard })
    }
}

/// Claude Code's two locks, held until dropped; a background task keeps their mtime fresh.
struct ClaudeLock {
    dirs: Vec<PathBuf>,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl ClaudeLock {
    /// Takes the CLI's refresh locks on credentials directory `dir`, waiting 1–2 s between
    /// tries as the CLI does.
    async fn acquire(dir: &Path) -> Result<Self, LockError> {
        let primary = dir.join(PRIMARY);
        let legacy = legacy_path(dir);
        let mut tries = 0;
        loop {
            tries += 1;
            match try_lock(&primary) {
                Ok(true) => {}
                Ok(false) if tries < ATTEMPTS => {
                    tokio::time::sleep(jitter()).await;
                    continue;
                }
                Ok(false) => return Err(busy(&primary)),
                Err(source) => return Err(io_err(&primary, source)),
            }
            let mut dirs = vec![primary.clone()];
            match try_lock(&legacy) {
                Ok(true) => dirs.push(legacy.clone()),
                Ok(false) => {
                    let _ = std::fs::remove_dir(&primary);
                    if tries < ATTEMPTS {
                        tokio::time::sleep(jitter()).await;
                        continue;
                    }
                    return Err(busy(&legacy));
                }
                Err(e) => {
                    tracing::debug!(path = %legacy.display(), error = %e, "legacy refresh lock not taken")
                }
            }
            let beat = dirs.clone();
            let heartbeat = tokio::spawn(async move {
                let mut tick = tokio::time::interval(HEARTBEAT);
                loop {
                    tick.tick().await;
                    for d in &beat {
                        touch(d);
                    }
                }
            });
            return Ok(Self { dirs, heartbeat });
        }
    }
}

impl Drop for ClaudeLock {
    fn drop(&mut self) {
        self.heartbeat.abort();
        for d in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn legacy_path(dir: &Path) -> PathBuf {
    let real = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut s = real.into_os_string();
    s.push(".lock");
    PathBuf::from(s)
}

/// `Ok(true)` when we now hold it, `Ok(false)` when someone live does.
fn try_lock(path: &Path) -> io::Result<bool> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let age = std::fs::symlink_metadata(path)
                .and_then(|m| m.modified())
                .map(|t| SystemTime::now().duration_since(t).unwrap_or_default());
            match age {
                Ok(age) if age > STALE => {
                    tracing::info!(path = %path.display(), "reclaiming an abandoned refresh lock");
                    match std::fs::remove_dir(path) {
                        Ok(()) => Ok(std::fs::create_dir(path).is_ok()),
                        Err(_) => Ok(false),
                    }
                }
                Ok(_) => Ok(false),
                // Vanished between mkdir and stat: the holder just released it.
                Err(_) => Ok(std::fs::create_dir(path).is_ok()),
            }
        }
        Err(e) => Err(e),
    }
}

fn touch(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.set_modified(SystemTime::now());
    }
}

fn jitter() -> Duration {
    Duration::from_millis(1000 + fastrand::u64(0..1000))
}

fn busy(path: &Path) -> LockError {
    LockError::Busy {
        path: crate::paths::display(path),
    }
}

fn io_err(path: &Path, source: io::Error) -> LockError {
    lock_io(CliLockKind::ClaudeCode, path, source)
}

fn lock_io(kind: CliLockKind, path: &Path, source: io::Error) -> LockError {
    LockError::Io {
        path: crate::paths::display(path),
        cli: kind.cli(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn takes_both_locks_and_releases_them() {
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join(".claude");
        std::fs::create_dir(&dir).unwrap();
        let lock = CliLock::acquire(CliLockKind::ClaudeCode, &dir)
            .await
            .unwrap();
        assert!(dir.join(PRIMARY).is_dir());
        assert!(home.path().join(".claude.lock").is_dir());
        drop(lock);
        assert!(!dir.join(PRIMARY).exists());
        assert!(!home.path().join(".claude.lock").exists());
    }

    #[tokio::test]
    async fn abandoned_lock_is_reclaimed_live_one_is_not() {
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join(".claude");
        std::fs::create_dir(&dir).unwrap();
        let held = dir.join(PRIMARY);
        std::fs::create_dir(&held).unwrap();
        assert!(!try_lock(&held).unwrap(), "a fresh lock is someone's");
        let old = SystemTime::now() - STALE - Duration::from_secs(5);
        std::fs::File::open(&held)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert!(try_lock(&held).unwrap(), "an abandoned lock is reclaimed");
    }
}
