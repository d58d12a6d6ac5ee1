//! Rerolling a token: the revoke page, running `claude setup-token`, capturing what it prints.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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
pub fn run_setup_token(program: &Path, mut echo: impl FnMut(&str)) -> Result<Secret, RerollError> {
    let shown = program.display().to_string();
    let mut child = Command::new(program)
        .arg("setup-token")
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| RerollError::Spawn {
            program: shown.clone(),
            reason: e.to_string(),
        })?;
    let mut token: Option<Secret> = None;
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let line = Secret::new(line);
            match find_token(line.expose()) {
                Some(t) => {
                    echo(&line.expose().replace(t, &mask(t)));
                    token = Some(Secret::new(t.to_owned()));
                }
                None => echo(line.expose()),
            }
        }
    }
    let status = child.wait().map_err(|e| RerollError::Spawn {
        program: shown.clone(),
        reason: e.to_string(),
    })?;
    match token {
        Some(t) if status.success() => Ok(t),
        Some(_) | None if !status.success() => Err(RerollError::Failed {
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
    fn finds_the_token_in_setup_token_output() {
        assert_eq!(
            find_token("Your token: sk-ant-oat01-AbC_12-xyz. Store it safely"),
            Some("sk-ant-oat01-AbC_12-xyz")
        );
        assert_eq!(find_token("sk-ant-oat01-"), None);
        assert_eq!(find_token("nothing here"), None);
    }
}
