//! Codex's own lock on its login, taken the way codex 0.171 takes it.
//!
//! Source: openai/codex `codex-rs/login/src/auth/storage_commit.rs`, the module the 0.171 binary
//! (npm `@openai/codex-linux-x64` 0.171.0, `vendor/x86_64-unknown-linux-musl/bin/codex`) names
//! in its panic and tracing metadata. That file is newer than every openai/codex revision the
//! reference index holds (there `storage.rs` at 0656615, `FileAuthStorage::save`, truncates and
//! rewrites auth.json with no lock, and a published inventory of the rust-v0.156.1 and
//! rust-v0.159.3 tags says the same of `storage.rs:205-224`), and the repository's snapshot is
//! too big to fetch here, so its line numbers could not be read. What follows is
//! the 0.171 binary's own strings (`auth.lock`, `json.lock`, "credential lock has no parent",
//! "Auth storage commit lock is unavailable.", "Credentials changed before refresh commit.")
//! and what `strace -f -e trace=%file,flock` shows it doing, re-checked per version:
//!
//! 1. It reads `$CODEX_HOME/auth.json` without a lock, decides to refresh and makes the token
//!    call (`refresh_reason: "proactive_expiry"` for an expired access JWT) — still without a
//!    lock: the lock guards the commit, not the call.
//! 2. `open(CODEX_HOME/auth.lock, O_RDWR|O_CREAT, 0666)` and `flock(LOCK_EX)`, blocking with
//!    no deadline (it waited 74 s for a test holding it, and went on the moment it was let go).
//! 3. It re-reads auth.json. If it no longer holds what it refreshed from, it drops its own
//!    answer ("Credentials changed before refresh commit."), reloads, and uses the stored login
//!    (refreshing again only if that one needs it) — so whatever Keyferry wrote wins.
//! 4. `open(CODEX_HOME/auth.json.lock, O_RDWR|O_CREAT, 0600)` and `flock(LOCK_EX|LOCK_NB)`
//!    every 10 ms for 5 s; past that it gives up ("Auth storage commit lock is unavailable."),
//!    lets go of `auth.lock` and loses the login it just got (it then refreshed again with the
//!    old refresh token). So that lock must never be held for long without `auth.lock`.
//! 5. It re-reads auth.json, writes a `.auth-XXXXXX` temp file (0600) and renames it over
//!    auth.json, then closes `auth.json.lock` and `auth.lock`. Neither file is ever removed.
//!
//! `codex login` and `codex logout` take the same two locks around their write or delete, and
//! with `cli_auth_credentials_store = "keyring"` so does the refresh around its keyring write
//! (the files still live in `CODEX_HOME`). Nothing takes a lock to read.
//!
//! Keyferry takes the two locks in Codex's order (`auth.lock`, then `auth.json.lock`: no
//! deadlock with it) and holds both from its re-read, through its token call, to the
//! write-back. So a codex committing makes Keyferry wait and then adopt what codex wrote, and
//! a codex finishing a refresh while Keyferry holds them waits in step 2 and then, in step 3,
//! adopts Keyferry's login. Holding `auth.json.lock` across the call is invisible to codex: it
//! asks for it only while it holds `auth.lock`. Unlike codex, Keyferry waits a bounded time
//! ([`WAIT`]): a stuck holder becomes [`LockError::CodexHeld`] before anything is spent.

use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{lock_io, CliLockKind, LockError};
use crate::sys::Flock;

/// The lock codex holds around every change of its login (refresh commit, login, logout).
pub const AUTH_LOCK: &str = "auth.lock";
/// The file store's write lock, taken inside [`AUTH_LOCK`].
pub const AUTH_JSON_LOCK: &str = "auth.json.lock";
/// How long Keyferry waits for [`AUTH_LOCK`]. Codex holds it for a few milliseconds (longer
/// only while a keyring write prompts), so this is only ever reached with a stuck holder.
pub const WAIT: Duration = Duration::from_secs(15);
/// How long codex itself tries for [`AUTH_JSON_LOCK`].
const INNER_WAIT: Duration = Duration::from_secs(5);
/// How often codex tries [`AUTH_JSON_LOCK`]; Keyferry polls both locks this often.
const POLL: Duration = Duration::from_millis(10);

/// Both locks, released when dropped (`auth.json.lock` first, as codex closes them).
pub(super) struct CodexLock {
    _inner: File,
    _outer: File,
}

impl CodexLock {
    /// Takes both locks in Codex's home `home`, waiting up to `wait` for `auth.lock`.
    pub(super) async fn acquire(home: &Path, wait: Duration) -> Result<Self, LockError> {
        let outer = hold(&home.join(AUTH_LOCK), wait).await?;
        let inner = hold(&home.join(AUTH_JSON_LOCK), INNER_WAIT.min(wait)).await?;
        Ok(Self {
            _inner: inner,
            _outer: outer,
        })
    }
}

/// An exclusive `flock` on `path` (created empty, 0600, if missing), tried every [`POLL`]
/// until `wait` has passed.
async fn hold(path: &Path, wait: Duration) -> Result<File, LockError> {
    let file = open(path)?;
    let started = Instant::now();
    let mut told = false;
    loop {
        match crate::sys::flock(&file, Flock::TryExclusive) {
            Ok(()) => {
                if told {
                    tracing::info!(path = %path.display(), "Codex let go of its auth lock");
                }
                return Ok(file);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(lock_io(CliLockKind::Codex, path, e)),
        }
        if started.elapsed() >= wait {
            return Err(LockError::CodexHeld {
                path: crate::paths::display(path),
                secs: wait.as_secs(),
            });
        }
        if !told {
            told = true;
            tracing::info!(path = %path.display(), "Codex holds its auth lock; waiting for it");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Opens (or creates) a lock file, never through a symlink, and only a regular one.
/// `O_NONBLOCK` keeps a FIFO planted at the path from blocking the open (where `O_RDWR`
/// on a FIFO may wait for a peer); it is then refused as not a regular file. On a regular
/// file the flag changes nothing.
fn open(path: &Path) -> Result<File, LockError> {
    let err = |e| lock_io(CliLockKind::Codex, path, e);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(err)?;
    if !file.metadata().map_err(err)?.is_file() {
        return Err(err(io::Error::other("not a regular file")));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_elsewhere(path: &Path) -> File {
        let other = open(path).unwrap();
        crate::sys::flock(&other, Flock::TryExclusive).unwrap();
        other
    }

    #[tokio::test]
    async fn takes_both_locks_and_lets_go_when_dropped() {
        let home = tempfile::tempdir().unwrap();
        let lock = CodexLock::acquire(home.path(), WAIT).await.unwrap();
        for name in [AUTH_LOCK, AUTH_JSON_LOCK] {
            let probe = open(&home.path().join(name)).unwrap();
            let e = crate::sys::flock(&probe, Flock::TryExclusive).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{name} is held");
        }
        drop(lock);
        for name in [AUTH_LOCK, AUTH_JSON_LOCK] {
            assert!(
                home.path().join(name).is_file(),
                "{name} stays, as codex leaves it"
            );
            held_elsewhere(&home.path().join(name));
        }
    }

    #[tokio::test]
    async fn waits_for_a_holder_that_lets_go() {
        let home = tempfile::tempdir().unwrap();
        let other = held_elsewhere(&home.path().join(AUTH_LOCK));
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(other);
        });
        let started = Instant::now();
        CodexLock::acquire(home.path(), WAIT).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(250));
        release.await.unwrap();
    }

    #[tokio::test]
    async fn a_stuck_holder_is_a_bounded_wait_naming_the_fix() {
        let home = tempfile::tempdir().unwrap();
        let path = home.path().join(AUTH_LOCK);
        let _other = held_elsewhere(&path);
        let started = Instant::now();
        let Err(e) = CodexLock::acquire(home.path(), Duration::from_millis(200)).await else {
            panic!("taken while held")
        };
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(matches!(e, LockError::CodexHeld { .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.contains(&crate::paths::display(&path)), "{text}");
        assert!(text.contains("fuser -v"), "{text}");
        // The holder may be Keyferry itself: a second refresh of the same CODEX_HOME.
        assert!(
            text.contains("another Keyferry refresh of the same CODEX_HOME"),
            "{text}"
        );
        // The inner lock held alone times out the same way.
        let home = tempfile::tempdir().unwrap();
        let _inner = held_elsewhere(&home.path().join(AUTH_JSON_LOCK));
        let e = CodexLock::acquire(home.path(), Duration::from_millis(100))
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains(AUTH_JSON_LOCK), "{e}");
    }

    #[tokio::test]
    async fn a_symlinked_lock_is_refused_and_its_target_untouched() {
        let home = tempfile::tempdir().unwrap();
        let target = home.path().join("elsewhere");
        std::os::unix::fs::symlink(&target, home.path().join(AUTH_LOCK)).unwrap();
        let e = CodexLock::acquire(home.path(), WAIT).await.err().unwrap();
        assert!(matches!(e, LockError::Io { cli: "Codex", .. }), "{e:?}");
        assert!(!target.exists());
    }

    #[test]
    fn a_fifo_at_the_lock_path_is_refused_without_blocking() {
        let home = tempfile::tempdir().unwrap();
        let path = home.path().join(AUTH_LOCK);
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(made.success());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(open(&path).map(drop));
        });
        let got = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("opening a FIFO lock path returned");
        let e = got.expect_err("a FIFO is not a lock file");
        assert!(matches!(e, LockError::Io { cli: "Codex", .. }), "{e:?}");
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }
}
