//! `security-cli`: generic passwords through macOS's `/usr/bin/security` tool, the way Claude
//! Code and cf read and write them, so their items keep the `apple-tool:` partition and nobody
//! is prompted after each token refresh (steipete/CodexBar #367, #2588; anthropics/claude-code
//! #87348). Ordinary process code: it runs anywhere a `security` (or the test stand-in) runs.
//!
//! The wire format (what is sent, how output is read, which statuses mean what) lives in
//! [`wire`]; this file runs the processes.

mod wire;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::{Backend, ItemId, Stamp, Store, StoreError};
use crate::secret::Secret;

pub use wire::{is_shared_with_cli, MAX_COMMAND_LINE};

/// Where macOS ships the tool.
pub const DEFAULT_SECURITY_PATH: &str = "/usr/bin/security";
const NAME: &str = "security-cli";
/// Time a `security` run may take beyond `prompt_timeout_secs`; a Keychain dialog the tool
/// opens waits for the user, and a hung tool must not hang the agent.
const BASE_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(5);

/// The keychain through the `security` command-line tool.
#[derive(Debug, Clone)]
pub struct SecurityCliStore {
    program: PathBuf,
    timeout: Duration,
}

/// What one `security` run gave back. `stdout` may hold a secret (`-w`), so it is zeroized.
struct Run {
    status: ExitStatus,
    stdout: Zeroizing<Vec<u8>>,
    stderr: String,
}

impl SecurityCliStore {
    /// A store running `program` (`[keychain] security_path`). Nothing is started yet.
    #[must_use]
    pub fn new(program: impl Into<PathBuf>, prompt_timeout_secs: u64) -> Self {
        Self {
            program: program.into(),
            timeout: BASE_TIMEOUT + Duration::from_secs(prompt_timeout_secs),
        }
    }

    /// Like [`SecurityCliStore::new`], but `Unavailable` (naming `security_path`) when the
    /// program is not an executable file, so a wrong path fails at open, not at first use.
    ///
    /// # Errors
    /// The program does not exist or is not executable.
    pub fn open(program: impl Into<PathBuf>, prompt_timeout_secs: u64) -> Result<Self, StoreError> {
        let store = Self::new(program, prompt_timeout_secs);
        if !is_executable(&store.program) {
            return Err(missing_tool(&store.program, "no executable file there"));
        }
        Ok(store)
    }

    /// Replaces the bound on one `security` run (tests use a short one).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    #[must_use]
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Runs `security ARGS` with `stdin` (then closed), bounded by the timeout.
    fn run(&self, args: &[&str], stdin: Option<&[u8]>, id: &ItemId) -> Result<Run, StoreError> {
        let mut child = Command::new(&self.program)
            .args(args)
            // The C locale: the tool's messages (and `isprint`) as documented.
            .env("LC_ALL", "C")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                    missing_tool(&self.program, &e.to_string())
                }
                _ => platform(
                    "start security",
                    id,
                    format!("{}: {e}", self.program.display()),
                ),
            })?;
        let out = child.stdout.take().map(drain);
        let err = child.stderr.take().map(drain);
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // One command line: far below the pipe buffer, so this never blocks on the child.
            // A child that exits early (EPIPE) is reported by its status below.
            let _ = pipe.write_all(input);
        }
        let status = self.wait(&mut child, id)?;
        let stdout = Zeroizing::new(out.map(join).unwrap_or_default());
        let stderr = String::from_utf8_lossy(&err.map(join).unwrap_or_default()).into_owned();
        Ok(Run {
            status,
            stdout,
            stderr,
        })
    }

    fn wait(&self, child: &mut Child, id: &ItemId) -> Result<ExitStatus, StoreError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(platform(
                        "wait for security",
                        id,
                        format!(
                            "{} gave no answer within {:?} (a Keychain dialog may be waiting; \
                             answer it, or raise [keychain] prompt_timeout_secs)",
                            self.program.display(),
                            self.timeout
                        ),
                    ));
                }
                Err(e) => return Err(platform("wait for security", id, e.to_string())),
            }
        }
    }

    /// `Ok(None)` for "no such item", the mapped error for any other failure.
    fn check(
        &self,
        run: &Run,
        operation: &'static str,
        id: &ItemId,
    ) -> Result<Option<()>, StoreError> {
        if run.status.success() {
            return Ok(Some(()));
        }
        match wire::classify(run.status.code(), &run.stderr) {
            wire::Failure::NotFound => Ok(None),
            failure => Err(failure.into_error(NAME, operation, id, &self.program)),
        }
    }
}

impl Store for SecurityCliStore {
    fn backend(&self) -> Backend {
        Backend::SecurityCli
    }

    fn get(&self, id: &ItemId) -> Result<Option<Secret>, StoreError> {
        let args = [
            "find-generic-password",
            "-s",
            &id.service,
            "-a",
            &id.account,
            "-w",
        ];
        let run = self.run(&args, None, id)?;
        if self.check(&run, "read", id)?.is_none() {
            return Ok(None);
        }
        let bytes = wire::decode_password_output(&run.stdout);
        super::utf8_secret(bytes.to_vec(), NAME, id).map(Some)
    }

    fn set(&self, id: &ItemId, secret: &Secret) -> Result<(), StoreError> {
        let line =
            wire::add_command(id, secret.expose()).map_err(|reason| StoreError::Unwritable {
                backend: NAME,
                item: id.to_string(),
                reason,
            })?;
        // Interactive mode reads commands from stdin: the secret is never in any argv.
        let run = self.run(&["-i"], Some(line.as_bytes()), id)?;
        match self.check(&run, "write", id)? {
            Some(()) => Ok(()),
            None => Err(platform("write", id, wire::first_line(&run.stderr))),
        }
    }

    fn delete(&self, id: &ItemId) -> Result<bool, StoreError> {
        let args = [
            "delete-generic-password",
            "-s",
            &id.service,
            "-a",
            &id.account,
        ];
        let run = self.run(&args, None, id)?;
        Ok(self.check(&run, "delete", id)?.is_some())
    }

    /// `find-generic-password` without `-w` prints attributes only; no data is read.
    fn stamp(&self, id: &ItemId) -> Result<Option<Stamp>, StoreError> {
        let args = [
            "find-generic-password",
            "-s",
            &id.service,
            "-a",
            &id.account,
        ];
        let run = self.run(&args, None, id)?;
        if self.check(&run, "poll", id)?.is_none() {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(&run.stdout);
        wire::mdat(&text).map(Some).ok_or_else(|| {
            platform(
                "poll",
                id,
                "security printed no \"mdat\" attribute for the item".into(),
            )
        })
    }
}

fn drain<R: Read + Send + 'static>(mut r: R) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

fn join(h: std::thread::JoinHandle<Vec<u8>>) -> Vec<u8> {
    h.join().unwrap_or_default()
}

fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}

fn missing_tool(program: &Path, why: &str) -> StoreError {
    StoreError::Unavailable {
        backend: NAME,
        reason: format!("cannot run {} ({why})", program.display()),
        fix: "set [keychain] security_path in config.toml to the `security` tool \
              (/usr/bin/security on macOS), or choose another [keychain] backend",
    }
}

fn platform(operation: &'static str, id: &ItemId, message: String) -> StoreError {
    StoreError::Platform {
        backend: NAME,
        operation,
        item: id.to_string(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_is_unavailable_and_names_the_setting() {
        let e = SecurityCliStore::open("/nonexistent/security", 0).unwrap_err();
        let msg = e.to_string();
        assert_eq!(e.code(), "keychain_unavailable");
        assert!(
            msg.contains("/nonexistent/security") && msg.contains("security_path"),
            "{msg}"
        );
        let store = SecurityCliStore::new("/nonexistent/security", 0);
        let e = store.get(&ItemId::new("s", "a")).unwrap_err();
        assert!(matches!(e, StoreError::Unavailable { .. }), "{e:?}");
        assert!(e.to_string().contains("security_path"), "{e}");
    }

    /// A tool that never answers (a dialog nobody answers) is killed at the deadline.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_hung_tool_is_killed_at_the_deadline() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("security");
        let pid_file = dir.path().join("pid");
        std::fs::write(
            &tool,
            format!(
                "#!/bin/sh\necho $$ > '{}'\nexec sleep 20\n",
                pid_file.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let store = SecurityCliStore::open(&tool, 0)
            .unwrap()
            .with_timeout(Duration::from_secs(2));
        let e = store.get(&ItemId::new("s", "a")).unwrap_err();
        assert_eq!(e.code(), "keychain_error", "{e}");
        assert!(e.to_string().contains("prompt_timeout_secs"), "{e}");
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim()));
        // Reaped: gone from /proc (the test is Linux-bound through /proc).
        assert!(
            status.is_err(),
            "the hung tool is still running: {status:?}"
        );
    }

    #[test]
    fn a_directory_is_not_a_tool() {
        let e = SecurityCliStore::open(std::env::temp_dir(), 0).unwrap_err();
        assert_eq!(e.code(), "keychain_unavailable");
    }
}
