//! The real Codex CLI (npm `@openai/codex` 0.171) as a test party: its auth lock held the way
//! codex holds it ([`AuthLock`]), and `codex exec` run on a login against a TLS
//! [`FakeApi`] ([`exec_on`]), so a test sees which access token the CLI sends.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::FakeApi;

/// `$CODEX_HOME/auth.lock`, the lock codex 0.171 holds while it commits a refresh, a login or
/// a logout.
pub const AUTH_LOCK: &str = "auth.lock";

/// Codex's `auth.lock` in a home, held exactly as codex 0.171 holds it (strace:
/// `open(…/auth.lock, O_RDWR|O_CREAT|O_CLOEXEC, 0666)` then a blocking `flock(LOCK_EX)`)
/// until dropped.
pub struct AuthLock {
    file: File,
}

impl AuthLock {
    /// # Panics
    /// The file cannot be opened or locked.
    #[must_use]
    pub fn hold(codex_home: &Path) -> Self {
        let path = codex_home.join(AUTH_LOCK);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o666)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        // SAFETY: flock(2) on a descriptor this struct owns.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock {}", path.display());
        Self { file }
    }

    /// Whether anyone holds `codex_home`'s `auth.lock` now (a non-blocking try on a
    /// descriptor of its own, let go at once).
    ///
    /// # Panics
    /// The file cannot be opened.
    #[must_use]
    pub fn is_held(codex_home: &Path) -> bool {
        let path = codex_home.join(AUTH_LOCK);
        let Ok(probe) = File::open(&path) else {
            return false;
        };
        // SAFETY: flock(2) on a descriptor owned here; closing it lets go.
        let rc = unsafe { libc::flock(probe.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        rc != 0
    }

    /// How many `flock`s on `codex_home`'s `auth.lock` are waiting for its holder now (the
    /// `->` lines of `/proc/locks` for its inode): a real codex blocked in its commit.
    ///
    /// # Panics
    /// `/proc/locks` cannot be read.
    #[cfg(target_os = "linux")]
    #[must_use]
    pub fn waiters(codex_home: &Path) -> usize {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = std::fs::metadata(codex_home.join(AUTH_LOCK)) else {
            return 0;
        };
        let inode = format!(":{}", meta.ino());
        std::fs::read_to_string("/proc/locks")
            .expect("/proc/locks")
            .lines()
            .filter(|l| l.contains("-> FLOCK"))
            .filter(|l| l.split_whitespace().any(|f| f.ends_with(&inode)))
            .count()
    }

    /// Lets go now (as dropping does).
    pub fn release(self) {
        drop(self.file);
    }
}

/// The real `codex`: `$KEYFERRY_TEST_CODEX`, else the npm install `scripts/test.sh` makes in
/// `target/npm`.
///
/// # Panics
/// It is not installed.
#[must_use]
pub fn bin() -> PathBuf {
    let bin = std::env::var_os("KEYFERRY_TEST_CODEX").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/npm/node_modules/.bin/codex"),
        PathBuf::from,
    );
    assert!(
        bin.exists(),
        "the real codex CLI at {} (`bash scripts/test.sh` installs it, or `npm install \
         --prefix target/npm @openai/codex@0.171`)",
        bin.display()
    );
    bin
}

/// What one `codex exec` did: its exit and output (`log`), and the bearer tokens it sent to
/// the fake's ChatGPT backend.
pub struct Exec {
    pub output: Output,
    pub log: String,
    pub bearers: Vec<String>,
}

impl Exec {
    /// Codex called its backend, always with `access_token`.
    ///
    /// # Panics
    /// It called nothing, or sent another token.
    pub fn assert_sent_only(&self, access_token: &str) {
        let log = &self.log;
        assert!(!self.bearers.is_empty(), "codex called nothing: {log}");
        for b in &self.bearers {
            assert_eq!(b, access_token, "codex sent another token: {log}");
        }
    }
}

/// `codex ARGS` (60 s at most, through `timeout`) on the login in `codex_home` (its HOME the
/// folder above, also its working directory), in a clean environment, its OAuth endpoints
/// (refresh, and the revoke `codex logout` posts) on `token_url`'s host.
///
/// # Panics
/// `codex_home` has no parent, or codex is not installed.
#[must_use]
pub fn command(codex_home: &Path, token_url: &str, args: &[&str]) -> Command {
    let home = codex_home.parent().expect("CODEX_HOME has a parent");
    let mut cmd = Command::new("timeout");
    cmd.arg("60")
        .arg(bin())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("CODEX_HOME", codex_home)
        .env("CODEX_REFRESH_TOKEN_URL_OVERRIDE", token_url)
        .current_dir(home);
    crate::process::isolate(&mut cmd);
    cmd
}

/// Runs `codex exec --skip-git-repo-check hi` ([`command`]) with `chatgpt_base_url` at `api`
/// (a TLS fake, trusted through `CODEX_CA_CERTIFICATE`). Codex 0.171 first asks its backend for plugins and the account
/// (`ps/plugins/installed`, `wham/accounts/check`) with the login's bearer; the model call then
/// needs a workspace routing discovery the fake does not offer, so what a test checks is which
/// token it sends, not its answer.
///
/// # Panics
/// The fake is not TLS, or codex cannot be started.
#[must_use]
pub fn exec_on(codex_home: &Path, api: &FakeApi, token_url: &str) -> Exec {
    let home = codex_home.parent().expect("CODEX_HOME has a parent");
    let ca = home.join("api-ca.pem");
    std::fs::write(&ca, api.ca_pem.as_ref().expect("a TLS fake API")).unwrap();
    std::fs::write(
        codex_home.join("config.toml"),
        format!("chatgpt_base_url = \"{}/backend-api/\"\n", api.url),
    )
    .unwrap();
    let output = command(
        codex_home,
        token_url,
        &["exec", "--skip-git-repo-check", "hi"],
    )
    .env("CODEX_CA_CERTIFICATE", &ca)
    .output()
    .expect("run codex");
    let log = format!(
        "{:?}\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Over HTTP/2 the fake records the absolute URI.
    let bearers = api.bearers_at(&format!("{}/backend-api/", api.url));
    Exec {
        output,
        log,
        bearers,
    }
}
