//! Rerolling a token: the revoke page, running `claude setup-token`, capturing what it prints.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use crate::credential::mask;
use crate::secret::Secret;

/// Where Claude tokens are revoked (cfauth: "revoke old token at claude.ai/settings").
pub const REVOKE_URL: &str = "https://claude.ai/settings/claude-code";

#[derive(Debug, thiserror::Error)]
pub enum RerollError {
    #[error("cannot run {program}: {reason}; install Claude Code (`npm install -g @anthropic-ai/claude-code`) or pass --claude PATH, or paste the token instead")]
    Spawn { program: String, reason: String },
    #[error(
        "{program} setup-token exited with {status} without printing a token; nothing was changed"
    )]
    Failed { program: String, status: String },
    #[error("{program} setup-token printed no sk-ant-oat01-… token; nothing was changed — paste it instead")]
    NoToken { program: String },
    #[error("cancelled; nothing was changed")]
    Cancelled,
}

/// Finds the last `sk-ant-oat01-…` token in a line of output.
#[must_use]
pub fn find_token(line: &str) -> Option<&str> {
    let start = line.rfind(crate::credential::SETUP_PREFIX)?;
    let rest = &line[start..];
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .unwrap_or(rest.len());
    (end > crate::credential::SETUP_PREFIX.len()).then(|| &rest[..end])
}

/// `claude` from `--claude`, `$KEYFERRY_CLAUDE`, or `PATH`.
#[must_use]
pub fn claude_program(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("KEYFERRY_CLAUDE").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("claude"))
}

/// Runs `claude setup-token` with the terminal's stdin/stderr, reading its stdout; each line
/// is passed to `echo` with any token masked, and the last token printed is returned.
///
/// # Errors
/// The program cannot start, fails, or prints no token.
pub fn run_setup_token(program: &Path, echo: impl FnMut(&str)) -> Result<Secret, RerollError> {
    run_setup_token_with(program, Stdio::inherit(), None, echo)
}

/// As [`run_setup_token`], with the child's stdin chosen by the caller (the tray has no
/// terminal) and a flag that kills the child when set (the wizard's Cancel).
///
/// # Errors
/// The program cannot start, fails, prints no token, or was cancelled.
pub fn run_setup_token_with(
    program: &Path,
    stdin: Stdio,
    cancel: Option<&AtomicBool>,
    mut echo: impl FnMut(&str),
) -> Result<Secret, RerollError> {
    let shown = program.display().to_string();
    let spawn_err = |e: std::io::Error| RerollError::Spawn {
        program: shown.clone(),
        reason: e.to_string(),
    };
    let mut child = Command::new(program)
        .arg("setup-token")
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(spawn_err)?;
    // Lines arrive on a thread, so the loop below can also watch the cancel flag.
    let (tx, rx) = mpsc::channel::<String>();
    if let Some(out) = child.stdout.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    let mut token: Option<Secret> = None;
    let mut take = |line: String| {
        let line = Secret::new(line);
        match find_token(line.expose()) {
            Some(t) => {
                echo(&line.expose().replace(t, &mask(t)));
                token = Some(Secret::new(t.to_owned()));
            }
            None => echo(line.expose()),
        }
    };
    loop {
        if cancel.is_some_and(|c| c.load(Ordering::SeqCst)) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(RerollError::Cancelled);
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => take(line),
            // Exited, but a grandchild may hold stdout open: stop waiting for lines.
            Err(mpsc::RecvTimeoutError::Timeout) if matches!(child.try_wait(), Ok(Some(_))) => {
                while let Ok(line) = rx.recv_timeout(Duration::from_millis(50)) {
                    take(line);
                }
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let status = child.wait().map_err(spawn_err)?;
    match token {
        Some(t) if status.success() => Ok(t),
        _ if !status.success() => Err(RerollError::Failed {
            program: shown,
            status: status.to_string(),
        }),
        _ => Err(RerollError::NoToken { program: shown }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_kills_a_hanging_setup_token() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("claude");
        std::fs::write(
            &fake,
            "#!/bin/sh\necho 'Open the browser…'\nexec sleep 60\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cancel = AtomicBool::new(false);
        let mut lines = Vec::new();
        let result = std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(300));
                cancel.store(true, Ordering::SeqCst);
            });
            run_setup_token_with(&fake, Stdio::null(), Some(&cancel), |l| {
                lines.push(l.to_owned())
            })
        });
        assert!(matches!(result, Err(RerollError::Cancelled)), "{result:?}");
        assert_eq!(lines, ["Open the browser…"]);
    }

    #[test]
    fn finds_the_token_in_setup_token_output() {
        assert_eq!(
            find_token("Your token: sk-ant-oat01-AbC_12-xyz. Store it safely"),
            Some("sk-ant-oat01-AbC_12-xyz")
        );
        assert_eq!(find_token("sk-ant-oat01-"), None);
        assert_eq!(find_token("nothing here"), None);
    }
}
